/**
 * One shared-memory segment: a file under the namespace directory, mapped.
 *
 * Creation writes the common header, lets the caller format the rest, and
 * publishes the layout version last (the "ready" flag). Attaching validates
 * magic, kind, version, lengths and the kind-specific geometry before anything
 * else reads the segment, so a corrupt, truncated or foreign file is a clear
 * BusError and never an out-of-bounds access.
 */
import native from './native';
import { BusError, fromNative } from './errors';
import {
  COMMON_HEADER_LENGTH,
  CREATOR_PID_OFFSET,
  CREATOR_START_TIME_OFFSET,
  DIR_ENTRY_COUNT_OFFSET,
  DIR_ENTRY_LENGTH,
  DIR_ENTRY_LENGTH_OFFSET,
  DIR_HEADER_LENGTH,
  EPOCH_OFFSET,
  HEADER_LENGTH_OFFSET,
  INBOX_CAPACITY_OFFSET,
  INBOX_HEADER_LENGTH,
  INBOX_LANE_COUNT_OFFSET,
  INBOX_MAX_MESSAGE_OFFSET,
  INBOX_SLOT_SIZE_OFFSET,
  MAX_LANES,
  MAX_MESSAGE_LENGTH,
  MIN_LANES,
  SLOT_HEADER_LENGTH,
  KIND_OFFSET,
  LAYOUT_VERSION,
  MAGIC_OFFSET,
  MAX_CAPACITY,
  MAX_DIR_ENTRY_COUNT,
  MAX_SEGMENT_LENGTH,
  MAX_SLOT_SIZE,
  MIN_CAPACITY,
  MIN_SLOT_SIZE,
  DEDUP_ENTRY_COUNT_OFFSET,
  DEDUP_HEADER_LENGTH,
  MAX_DEDUP_ENTRY_COUNT,
  SEGMENT_KIND_DEDUP,
  SEGMENT_KIND_DIRECTORY,
  SEGMENT_KIND_INBOX,
  SEGMENT_LENGTH_OFFSET,
  SEGMENT_MAGIC,
  VERSION_OFFSET,
  dedupSegmentLength,
  directorySegmentLength,
  inboxSegmentLength,
} from './layout';

const WORD = 4;

export type SegmentKind = typeof SEGMENT_KIND_DIRECTORY | typeof SEGMENT_KIND_INBOX | typeof SEGMENT_KIND_DEDUP;

const KIND_NAMES: Record<SegmentKind, string> = {
  [SEGMENT_KIND_DIRECTORY]: 'directory',
  [SEGMENT_KIND_INBOX]: 'inbox',
  [SEGMENT_KIND_DEDUP]: 'relay dedup',
};

/** Start time of this process (cached: it never changes). */
let ownStartTime = -1;
export function processStartTime(pid: number): number {
  if (pid === process.pid) {
    if (ownStartTime < 0) ownStartTime = native.processStartTime(pid);
    return ownStartTime;
  }
  return native.processStartTime(pid);
}

/**
 * Is the process that recorded (pid, startTime) still the one running under
 * that pid? startTime 0 means "not recorded": the pid alone decides.
 */
export function isProcessAlive(pid: number, startTime = 0): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  const now = processStartTime(pid);
  if (now < 0) return false;
  return startTime === 0 || now === startTime;
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** Block this thread for `ms` (slow paths only: waiting for a creator or a lock holder). */
export function sleepSync(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

export class Segment {
  readonly path: string;
  readonly kind: SegmentKind;
  readonly buffer: ArrayBuffer;
  readonly u32: Uint32Array;
  readonly i32: Int32Array;
  private mapped = true;

  private constructor(path: string, kind: SegmentKind, buffer: ArrayBuffer) {
    this.path = path;
    this.kind = kind;
    this.buffer = buffer;
    // Whole words only: a foreign file's length need not be a multiple of 4 (validate() refuses it).
    this.u32 = new Uint32Array(buffer, 0, buffer.byteLength >>> 2);
    this.i32 = new Int32Array(buffer, 0, buffer.byteLength >>> 2);
  }

  /**
   * Create the file exclusively (EEXIST if it is there), write the common
   * header, run `format` for the kind-specific part, then publish the version.
   */
  static create(path: string, kind: SegmentKind, length: number, mode: number, headerLength: number, format: (buffer: ArrayBuffer) => void): Segment {
    if (length > MAX_SEGMENT_LENGTH) {
      throw new BusError('ERR_SHMBUS_INVALID_OPTION', `segment ${path} would be ${length} bytes; the limit is ${MAX_SEGMENT_LENGTH}`);
    }
    let buffer: ArrayBuffer;
    try {
      buffer = native.create(path, length, mode);
    } catch (err) {
      throw fromNative(err, `cannot create ${KIND_NAMES[kind]} segment`);
    }
    const segment = new Segment(path, kind, buffer);
    const u32 = segment.u32;
    u32[MAGIC_OFFSET / WORD] = SEGMENT_MAGIC;
    u32[KIND_OFFSET / WORD] = kind;
    u32[HEADER_LENGTH_OFFSET / WORD] = headerLength;
    u32[SEGMENT_LENGTH_OFFSET / WORD] = length;
    segment.i32[CREATOR_PID_OFFSET / WORD] = process.pid;
    const start = processStartTime(process.pid);
    u32[CREATOR_START_TIME_OFFSET / WORD] = start >>> 0;
    u32[CREATOR_START_TIME_OFFSET / WORD + 1] = Math.floor(start / 0x1_0000_0000);
    u32[EPOCH_OFFSET / WORD] = (Math.random() * 0x1_0000_0000) >>> 0;
    try {
      format(buffer);
    } catch (err) {
      segment.unmap();
      segment.unlink();
      throw err;
    }
    // SYNC POINT: segment ready (release): everything above is visible before the version.
    Atomics.store(u32, VERSION_OFFSET / WORD, LAYOUT_VERSION);
    return segment;
  }

  /**
   * Map an existing segment and validate it. A segment still being created
   * (zero length, or version 0) is waited for up to `readyTimeoutMs`.
   */
  static attach(path: string, kind: SegmentKind, readyTimeoutMs = 1000): Segment {
    const deadline = performance.now() + readyTimeoutMs;
    for (;;) {
      let buffer: ArrayBuffer;
      try {
        buffer = native.open(path);
      } catch (err) {
        const e = err as { code?: string };
        if (e.code === 'ENODATA' && performance.now() < deadline) {
          sleepSync(1);
          continue;
        }
        if (e.code === 'ENODATA') {
          throw new BusError('ERR_SHMBUS_NOT_A_SEGMENT', `${path} is empty: not a shmbus segment, or its creator died before sizing it (remove it with \`shmbus gc\`)`, { cause: err });
        }
        throw fromNative(err, `cannot open ${KIND_NAMES[kind]} segment`);
      }
      const segment = new Segment(path, kind, buffer);
      try {
        if (segment.validate(kind)) return segment;
      } catch (err) {
        segment.unmap();
        throw err;
      }
      const creator = segment.creatorPid;
      segment.unmap();
      if (performance.now() >= deadline) {
        throw new BusError('ERR_SHMBUS_NOT_A_SEGMENT', `${path}: its creator (pid ${creator}) never finished writing it (version still 0); remove it with \`shmbus gc\``);
      }
      sleepSync(1);
    }
  }

  /**
   * Check the header. Returns false if the segment is not ready yet (version
   * 0, magic and kind right); throws on anything that cannot be valid.
   */
  private validate(kind: SegmentKind): boolean {
    const length = this.buffer.byteLength;
    const u32 = this.u32;
    const where = this.path;
    if (length < COMMON_HEADER_LENGTH + 8) {
      throw new BusError('ERR_SHMBUS_NOT_A_SEGMENT', `${where} is ${length} bytes, too short to be a shmbus segment`);
    }
    if (length % WORD !== 0) {
      throw new BusError('ERR_SHMBUS_NOT_A_SEGMENT', `${where} is ${length} bytes, not a whole number of 32-bit words: not a shmbus segment`);
    }
    // A creator between its ftruncate and its version store: magic and kind are each either still
    // zero or already right (two plain stores, seen in any order). Not ready yet, not foreign.
    const magic = u32[MAGIC_OFFSET / WORD];
    const foundKindEarly = u32[KIND_OFFSET / WORD];
    if (Atomics.load(u32, VERSION_OFFSET / WORD) === 0 && (magic === 0 || magic === SEGMENT_MAGIC) && (foundKindEarly === 0 || foundKindEarly === kind) && (magic === 0 || foundKindEarly === 0)) return false;
    if (length > MAX_SEGMENT_LENGTH) {
      throw new BusError('ERR_SHMBUS_CORRUPT_SEGMENT', `${where} is ${length} bytes; segments are at most ${MAX_SEGMENT_LENGTH}`);
    }
    if (u32[MAGIC_OFFSET / WORD] !== SEGMENT_MAGIC) {
      throw new BusError('ERR_SHMBUS_NOT_A_SEGMENT', `${where} is not a shmbus segment (magic 0x${u32[MAGIC_OFFSET / WORD]!.toString(16)}, expected 0x${SEGMENT_MAGIC.toString(16)})`);
    }
    const foundKind = u32[KIND_OFFSET / WORD]!;
    if (foundKind !== kind) {
      throw new BusError('ERR_SHMBUS_NOT_A_SEGMENT', `${where} is a shmbus segment of kind ${foundKind}, expected ${kind} (${KIND_NAMES[kind]})`);
    }
    // SYNC POINT: segment ready (acquire).
    const version = Atomics.load(u32, VERSION_OFFSET / WORD);
    if (version === 0) return false;
    if (version !== LAYOUT_VERSION) {
      throw new BusError('ERR_SHMBUS_LAYOUT_MISMATCH', `${where} has layout version ${version}; this shmbus reads version ${LAYOUT_VERSION}`);
    }
    const declared = u32[SEGMENT_LENGTH_OFFSET / WORD]!;
    if (declared !== length) {
      throw new BusError('ERR_SHMBUS_CORRUPT_SEGMENT', `${where} declares ${declared} bytes but the file has ${length} (truncated or corrupt)`);
    }
    const headerLength = u32[HEADER_LENGTH_OFFSET / WORD]!;
    if (kind === SEGMENT_KIND_INBOX) {
      const slotSize = u32[INBOX_SLOT_SIZE_OFFSET / WORD]!;
      const capacity = u32[INBOX_CAPACITY_OFFSET / WORD]!;
      if (headerLength !== INBOX_HEADER_LENGTH) throw corrupt(where, 'header length', headerLength, INBOX_HEADER_LENGTH);
      if (!validSlotSize(slotSize)) throw corrupt(where, 'slot size', slotSize, `a multiple of 64 in [${MIN_SLOT_SIZE}, ${MAX_SLOT_SIZE}]`);
      if (!validCapacity(capacity)) throw corrupt(where, 'capacity', capacity, `a power of two in [${MIN_CAPACITY}, ${MAX_CAPACITY}]`);
      const lanes = u32[INBOX_LANE_COUNT_OFFSET / WORD]!;
      if (!(lanes >= MIN_LANES && lanes <= MAX_LANES)) throw corrupt(where, 'lane count', lanes, `${MIN_LANES}..${MAX_LANES}`);
      // Frame ids (lane * capacity + slot) are u32: the relay puts them on the wire.
      if (lanes * capacity > 0x1_0000_0000) throw corrupt(where, 'lanes x capacity', lanes * capacity, 'at most 2^32');
      const maxMessage = u32[INBOX_MAX_MESSAGE_OFFSET / WORD]!;
      const messageLimit = Math.min(MAX_MESSAGE_LENGTH, capacity * (slotSize - SLOT_HEADER_LENGTH));
      if (!(maxMessage >= 1 && maxMessage <= messageLimit)) throw corrupt(where, 'max message size', maxMessage, `1..${messageLimit}`);
      const expected = inboxSegmentLength(slotSize, capacity, lanes);
      if (expected !== length) throw corrupt(where, 'length for its geometry', length, expected);
    } else if (kind === SEGMENT_KIND_DEDUP) {
      const count = u32[DEDUP_ENTRY_COUNT_OFFSET / WORD]!;
      if (headerLength !== DEDUP_HEADER_LENGTH) throw corrupt(where, 'header length', headerLength, DEDUP_HEADER_LENGTH);
      if (count < 1 || count > MAX_DEDUP_ENTRY_COUNT) throw corrupt(where, 'entry count', count, `1..${MAX_DEDUP_ENTRY_COUNT}`);
      const expected = dedupSegmentLength(count);
      if (expected !== length) throw corrupt(where, 'length for its entry count', length, expected);
    } else {
      const count = u32[DIR_ENTRY_COUNT_OFFSET / WORD]!;
      const entryLength = u32[DIR_ENTRY_LENGTH_OFFSET / WORD]!;
      if (headerLength !== DIR_HEADER_LENGTH) throw corrupt(where, 'header length', headerLength, DIR_HEADER_LENGTH);
      if (entryLength !== DIR_ENTRY_LENGTH) throw corrupt(where, 'entry length', entryLength, DIR_ENTRY_LENGTH);
      if (count < 1 || count > MAX_DIR_ENTRY_COUNT) throw corrupt(where, 'entry count', count, `1..${MAX_DIR_ENTRY_COUNT}`);
      const expected = directorySegmentLength(count);
      if (expected !== length) throw corrupt(where, 'length for its entry count', length, expected);
    }
    return true;
  }

  get creatorPid(): number {
    return this.i32[CREATOR_PID_OFFSET / WORD] ?? 0;
  }

  get creatorStartTime(): number {
    const i = CREATOR_START_TIME_OFFSET / WORD;
    return (this.u32[i + 1] ?? 0) * 0x1_0000_0000 + (this.u32[i] ?? 0);
  }

  get epoch(): number {
    return this.u32[EPOCH_OFFSET / WORD] ?? 0;
  }

  get isMapped(): boolean {
    return this.mapped;
  }

  /** Unmap (idempotent). Typed arrays over the buffer become empty. */
  unmap(): void {
    if (!this.mapped) return;
    this.mapped = false;
    native.unmap(this.buffer);
  }

  /** Remove the file (the mapping stays valid until unmapped). Missing file is not an error. */
  unlink(): void {
    unlinkQuiet(this.path);
  }
}

/** unlink, ignoring ENOENT. */
export function unlinkQuiet(path: string): void {
  try {
    native.unlink(path);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return;
    throw fromNative(err, 'cannot remove segment');
  }
}

export function validSlotSize(slotSize: number): boolean {
  return Number.isInteger(slotSize) && slotSize >= MIN_SLOT_SIZE && slotSize <= MAX_SLOT_SIZE && slotSize % 64 === 0;
}

export function validCapacity(capacity: number): boolean {
  return Number.isInteger(capacity) && capacity >= MIN_CAPACITY && capacity <= MAX_CAPACITY && (capacity & (capacity - 1)) === 0;
}

function corrupt(where: string, field: string, found: number, expected: number | string): BusError {
  return new BusError('ERR_SHMBUS_CORRUPT_SEGMENT', `${where}: ${field} is ${found}, expected ${expected}`);
}
