/**
 * FrameRing: a bounded many-producer / one-consumer queue of fixed-size slots
 * in one inbox segment.
 *
 * The algorithm is Vyukov's bounded queue with a per-slot sequence word,
 * specialised to one consumer and hardened against producers that die:
 *
 *   slot.seq == p        slot is free for position p (p's lap)
 *   slot.seq == p + 1    the frame at position p is committed
 *
 * Producer: read `tail` = p; if slot(p).seq == p, CAS tail p -> p+1 (the claim);
 *   write the slot header and payload; CAS slot(p).seq p -> p+1 (the commit).
 *   A frame is visible when its slot's sequence becomes position + 1.
 * Consumer: at `head` = p, if slot(p).seq == p+1 read the frame, clear the claim
 *   pid, store slot(p).seq = p + capacity (the release: free for the next lap),
 *   head = p+1.
 * Reclaim: if head's slot stays claimed but uncommitted (tail > head,
 *   slot.seq == head) because its producer died (pid gone) or stalled longer than
 *   `reclaimTimeoutMs`, the consumer CASes slot.seq head -> head + capacity and
 *   moves on, counting it. A stalled producer that wakes up later finds its
 *   commit CAS failing and reports the frame as not delivered.
 *
 * Positions are 32-bit and wrap; every comparison uses the signed difference.
 * All cross-process words are accessed with Atomics (sequentially consistent),
 * which also gives the doorbell its Dekker-style guarantee: the consumer stores
 * parked=1 then re-checks the head slot; a producer commits then loads parked;
 * at least one of them sees the other, so no wake-up is lost.
 *
 * The ring knows nothing of files, names or doorbells: it works on any
 * ArrayBuffer laid out as an inbox segment (see layout.ts), which is how the
 * unit tests drive it.
 */
import {
  FRAME_FLAGS_WITH_ADDRESS,
  MAX_ADDRESS_LENGTH,
  INBOX_CAPACITY_OFFSET,
  INBOX_CORRUPT_OFFSET,
  INBOX_DISCARDED_OFFSET,
  INBOX_HEAD_OFFSET,
  INBOX_HEADER_LENGTH,
  INBOX_PARKED_OFFSET,
  INBOX_PARKS_OFFSET,
  INBOX_RECEIVED_OFFSET,
  INBOX_RECLAIMED_OFFSET,
  INBOX_REFUSED_FULL_OFFSET,
  INBOX_SEND_REFUSED_OFFSET,
  INBOX_SENT_OFFSET,
  INBOX_SLOT_SIZE_OFFSET,
  INBOX_TAIL_OFFSET,
  INBOX_WAKEUPS_OFFSET,
  SLOT_CLAIM_PID_OFFSET,
  SLOT_DESTINATION_INDEX_OFFSET,
  SLOT_FLAGS_OFFSET,
  SLOT_HEADER_LENGTH,
  SLOT_LENGTH_OFFSET,
  SLOT_SEQ_OFFSET,
  SLOT_SEQUENCE_OFFSET,
  SLOT_SOURCE_GENERATION_OFFSET,
  SLOT_SOURCE_INDEX_OFFSET,
  slotOffset,
} from './layout';
import { BusError } from './errors';

/** Results of {@link FrameRing.offer}. */
export const OFFER_FULL = 0;
export const OFFER_OK = 1;
/** Committed, and the consumer was parked: this producer took the bell and must ring it. */
export const OFFER_OK_RING = 2;
export type OfferResult = typeof OFFER_FULL | typeof OFFER_OK | typeof OFFER_OK_RING;

const WORD = 4;

/**
 * One frame as seen by a consumer, valid only inside the handler call that
 * received it (the slot is released when the handler returns). A flyweight:
 * the same object is reused for every frame of a poll.
 */
export class FrameView {
  /** The whole mapping; the payload is `bytes[payloadOffset .. payloadOffset + length)`. */
  bytes: Uint8Array = new Uint8Array(0);
  payloadOffset = 0;
  length = 0;
  flags = 0;
  sourceHost = 0;
  sourceIndex = 0;
  sourceGeneration = 0;
  destinationIndex = 0;
  sequence = 0;
  /** Where the address prefix's text starts (frames flagged REMOTE or OUTBOUND); 0 when there is none. */
  addressOffset = 0;
  /** Length of the address text (`name@host`); 0 when there is none. */
  addressLength = 0;

  /** The address of a REMOTE (source) or OUTBOUND (destination) frame; '' when there is none. */
  get address(): string {
    if (this.addressLength === 0) return '';
    return String.fromCharCode(...this.bytes.subarray(this.addressOffset, this.addressOffset + this.addressLength));
  }

  /** A view of the payload (allocates a Uint8Array header, not a copy). */
  get payload(): Uint8Array {
    return this.bytes.subarray(this.payloadOffset, this.payloadOffset + this.length);
  }

  /** A copy of the payload that outlives the handler call. */
  copyPayload(): Uint8Array {
    return this.bytes.slice(this.payloadOffset, this.payloadOffset + this.length);
  }
}

export type FrameHandler = (frame: FrameView) => void;

/** Producer-side identity stamped into each slot header. */
export interface ProducerStamp {
  sourceIndex: number;
  sourceGeneration: number;
  sourceHost: number;
  flags: number;
}

/** How a consumer decides whether a claiming producer is gone. */
export type LivenessCheck = (pid: number) => boolean;

export interface ConsumerOptions {
  /** How long a claimed-but-uncommitted slot may block the head while its producer is alive. */
  reclaimTimeoutMs: number;
  /** Is this pid alive? Called only on the slow path (a stuck head). */
  isAlive: LivenessCheck;
  /** Monotonic clock in ms (performance.now by default; tests inject their own). */
  now?: () => number;
  /** Look for a stuck slot every this many empty polls (default 16; tests use 1). */
  stuckCheckEvery?: number;
}

const DEFAULT_STUCK_CHECK_EVERY = 16;
/** poll() publishes its head every 64 positions as well as at its end. */
const HEAD_PUBLISH_MASK = 63;
/** A claimed slot must stay uncommitted this long before its claimant's liveness is checked. */
const LIVENESS_CHECK_AFTER_MS = 1;

/**
 * Encode an address prefix: u8 length, then the ASCII address. Callers cache
 * the result per address (one allocation per destination, not per frame).
 */
export function encodeAddressPrefix(address: string): Uint8Array {
  const n = address.length;
  if (n === 0 || n > MAX_ADDRESS_LENGTH) throw new RangeError(`address "${address}" must be 1..${MAX_ADDRESS_LENGTH} characters`);
  const prefix = new Uint8Array(n + 1);
  prefix[0] = n;
  for (let k = 0; k < n; k++) prefix[k + 1] = address.charCodeAt(k) & 0x7f;
  return prefix;
}

/** Reads a u64 counter stored as two u32 words (low first). Racy observer. */
export function readU64(u32: Uint32Array, byteOffset: number): number {
  const i = byteOffset >>> 2;
  return u32[i + 1]! * 0x1_0000_0000 + u32[i]!;
}

/** Adds to a u64 counter written by one writer only (plain stores). */
export function addU64(u32: Uint32Array, byteOffset: number, n: number): void {
  const i = byteOffset >>> 2;
  const sum = u32[i]! + n;
  u32[i] = sum >>> 0;
  if (sum > 0xffffffff) u32[i + 1] = (u32[i + 1]! + Math.floor(sum / 0x1_0000_0000)) >>> 0;
}

/** The counters in an inbox header (racy observer: each is read without stopping anyone). */
export interface InboxCounters {
  /** Frames consumed from this inbox. */
  readonly received: number;
  /** Frames the owner sent (to any inbox). */
  readonly sent: number;
  /** The owner's sends refused because their destination was full. */
  readonly sendRefused: number;
  /** Sends by anyone refused because this inbox was full. */
  readonly refusedFull: number;
  /** Claimed slots reclaimed after their producer died or stalled. */
  readonly reclaimed: number;
  /** Frames skipped because their header could not be valid. */
  readonly corrupt: number;
  /** Frames discarded when this inbox replaced a dead predecessor's of another geometry. */
  readonly discarded: number;
  readonly parks: number;
  /** Doorbells rung. */
  readonly wakeups: number;
}

/** Read every counter of an inbox header. */
export function readInboxCounters(u32: Uint32Array): InboxCounters {
  return {
    received: readU64(u32, INBOX_RECEIVED_OFFSET),
    sent: readU64(u32, INBOX_SENT_OFFSET),
    sendRefused: readU64(u32, INBOX_SEND_REFUSED_OFFSET),
    refusedFull: readU64(u32, INBOX_REFUSED_FULL_OFFSET),
    reclaimed: readU64(u32, INBOX_RECLAIMED_OFFSET),
    corrupt: readU64(u32, INBOX_CORRUPT_OFFSET),
    discarded: readU64(u32, INBOX_DISCARDED_OFFSET),
    parks: readU64(u32, INBOX_PARKS_OFFSET),
    wakeups: readU64(u32, INBOX_WAKEUPS_OFFSET),
  };
}

/** Increments a u64 counter shared by many writers: atomic add on the low word, the wrapper carries. */
export function incrementSharedU64(u32: Uint32Array, byteOffset: number): void {
  const i = byteOffset >>> 2;
  if (Atomics.add(u32, i, 1) === 0xffffffff) Atomics.add(u32, i + 1, 1);
}

export class FrameRing {
  readonly capacity: number;
  readonly slotSize: number;
  /** Largest payload one slot holds. */
  readonly maxPayload: number;
  readonly mask: number;
  readonly bytes: Uint8Array;
  private readonly i32: Int32Array;
  private readonly u32: Uint32Array;
  private readonly slotWords: number;
  private readonly pid: number;

  // Consumer state (only meaningful in the owner's instance).
  /** First position not yet released. */
  private head: number;
  /** Next position to read: equal to head for poll(); ahead of it for scan(), which reads without releasing. */
  private cursor: number;
  private readonly view = new FrameView();
  private stuckPosition = 0;
  private stuckSince = -1;
  /** Polls that found the next slot uncommitted since the last stuck check. */
  private idlePolls = 0;
  private stuckCheckEvery = DEFAULT_STUCK_CHECK_EVERY;
  private consumer: ConsumerOptions | null = null;
  private now: () => number = () => performance.now();

  /** Position claimed by the last successful {@link claimBatch}. */
  batchPosition = 0;

  /**
   * Wrap an inbox segment whose header has already been validated (segment.ts
   * checks magic, version, sizes and that the buffer is long enough).
   */
  constructor(buffer: ArrayBuffer, pid: number = process.pid) {
    this.i32 = new Int32Array(buffer);
    this.u32 = new Uint32Array(buffer);
    this.bytes = new Uint8Array(buffer);
    this.slotSize = this.u32[INBOX_SLOT_SIZE_OFFSET / WORD]!;
    this.capacity = this.u32[INBOX_CAPACITY_OFFSET / WORD]!;
    this.mask = this.capacity - 1;
    this.maxPayload = this.slotSize - SLOT_HEADER_LENGTH;
    this.slotWords = this.slotSize / WORD;
    this.pid = pid;
    this.head = Atomics.load(this.i32, INBOX_HEAD_OFFSET / WORD);
    this.cursor = this.head;
    this.view.bytes = this.bytes;
  }

  /**
   * Write the ring part of a fresh inbox header and every slot's initial
   * sequence (slot i free for position i). The caller (segment creation) owns
   * the common header and publishes the version afterwards.
   */
  static format(buffer: ArrayBuffer, slotSize: number, capacity: number): void {
    const u32 = new Uint32Array(buffer);
    const i32 = new Int32Array(buffer);
    u32[INBOX_SLOT_SIZE_OFFSET / WORD] = slotSize;
    u32[INBOX_CAPACITY_OFFSET / WORD] = capacity;
    for (let i = 0; i < capacity; i++) i32[(slotOffset(i, slotSize) + SLOT_SEQ_OFFSET) / WORD] = i;
    Atomics.store(i32, INBOX_TAIL_OFFSET / WORD, 0);
    Atomics.store(i32, INBOX_HEAD_OFFSET / WORD, 0);
  }

  private seqIndex(position: number): number {
    return (INBOX_HEADER_LENGTH / WORD) + (position & this.mask) * this.slotWords;
  }

  // -------------------------------------------------------------------------
  // Producer side
  // -------------------------------------------------------------------------

  /**
   * Claim, fill and commit one slot. Returns {@link OFFER_FULL} (nothing
   * written; the caller counts the refusal with {@link countRefused} when it
   * reports it), {@link OFFER_OK}, or
   * {@link OFFER_OK_RING} when the consumer is parked and this caller must ring
   * its doorbell. The payload must already be checked against maxPayload.
   */
  offer(stamp: ProducerStamp, destinationIndex: number, sequence: number, payload: Uint8Array): OfferResult {
    const position = this.claim();
    if (position === -1) return OFFER_FULL;
    this.write(position, stamp, destinationIndex, sequence, payload);
    return this.commit(position);
  }

  /**
   * Claim one slot: returns its position, or -1 if the ring is full. The slot
   * must then be written and committed; until then it blocks the consumer
   * (and is reclaimed if this process dies or stalls).
   */
  claim(): number {
    const i32 = this.i32;
    const tailIndex = INBOX_TAIL_OFFSET / WORD;
    for (;;) {
      // A plain read: a stale tail only makes the CAS below fail and retry.
      const position = i32[tailIndex]!;
      const seqIndex = this.seqIndex(position);
      // SYNC POINT: slot release (acquire side: the consumer is done with this slot).
      const dif = (Atomics.load(i32, seqIndex) - position) | 0;
      if (dif === 0) {
        if (Atomics.compareExchange(i32, tailIndex, position, (position + 1) | 0) === position) {
          i32[seqIndex + SLOT_CLAIM_PID_OFFSET / WORD] = this.pid;
          return position;
        }
      } else if (dif < 0) {
        return -1;
      }
      // dif > 0: another producer claimed this position first; reload tail.
    }
  }

  /**
   * Claim up to `max` consecutive slots with one CAS. Returns how many were
   * claimed (0 = full); the first position is left in {@link batchPosition}.
   * Uses the published head, so it may see less room than there is, never more.
   */
  claimBatch(max: number): number {
    const i32 = this.i32;
    const tailIndex = INBOX_TAIL_OFFSET / WORD;
    for (;;) {
      const position = Atomics.load(i32, tailIndex);
      // SYNC POINT: head published (acquire): every position before head + capacity is released.
      const head = Atomics.load(i32, INBOX_HEAD_OFFSET / WORD);
      const room = this.capacity - ((position - head) | 0);
      const count = room < max ? room : max;
      if (count <= 0) return 0;
      if (Atomics.compareExchange(i32, tailIndex, position, (position + count) | 0) === position) {
        for (let k = 0; k < count; k++) {
          i32[this.seqIndex(position + k) + SLOT_CLAIM_PID_OFFSET / WORD] = this.pid;
        }
        this.batchPosition = position;
        return count;
      }
    }
  }

  /**
   * Fill a claimed slot's header and payload. `prefix`, when given, is an
   * encoded address prefix (length byte included, see {@link encodeAddressPrefix})
   * written before the payload; the caller has checked that both fit.
   */
  write(position: number, stamp: ProducerStamp, destinationIndex: number, sequence: number, payload: Uint8Array, prefix?: Uint8Array): void {
    const base = this.seqIndex(position);
    const u32 = this.u32;
    const bytes = this.bytes;
    let start = base * WORD + SLOT_HEADER_LENGTH;
    let length = payload.length;
    if (prefix !== undefined) {
      bytes.set(prefix, start);
      start += prefix.length;
      length += prefix.length;
    }
    u32[base + SLOT_LENGTH_OFFSET / WORD] = length;
    u32[base + SLOT_FLAGS_OFFSET / WORD] = (stamp.flags & 0xffff) | (stamp.sourceHost << 16);
    u32[base + SLOT_SOURCE_INDEX_OFFSET / WORD] = stamp.sourceIndex;
    u32[base + SLOT_SOURCE_GENERATION_OFFSET / WORD] = stamp.sourceGeneration;
    u32[base + SLOT_DESTINATION_INDEX_OFFSET / WORD] = destinationIndex;
    u32[base + SLOT_SEQUENCE_OFFSET / WORD] = sequence;
    const n = payload.length;
    if (n <= 16) {
      for (let k = 0; k < n; k++) bytes[start + k] = payload[k]!;
    } else {
      bytes.set(payload, start);
    }
  }

  /** Byte offset of a claimed slot's payload, for producers that write in place. */
  payloadOffset(position: number): number {
    return this.seqIndex(position) * WORD + SLOT_HEADER_LENGTH;
  }

  /**
   * Publish a claimed, written slot. Returns {@link OFFER_OK_RING} when the
   * consumer is parked and the caller must ring its doorbell. Throws
   * ERR_SHMBUS_CLAIM_RECLAIMED if the consumer reclaimed the slot meanwhile.
   */
  commit(position: number): OfferResult {
    this.commitQuiet(position);
    return this.takeBell() ? OFFER_OK_RING : OFFER_OK;
  }

  /**
   * Publish a claimed, written slot without looking at the doorbell: for
   * batches, which call {@link takeBell} once after their last commit.
   */
  commitQuiet(position: number): void {
    // SYNC POINT: slot commit (release: header and payload are visible before the sequence).
    if (Atomics.compareExchange(this.i32, this.seqIndex(position), position, (position + 1) | 0) !== position) {
      throw new BusError('ERR_SHMBUS_CLAIM_RECLAIMED', `slot for position ${position} was reclaimed before this producer committed it (stalled longer than the reclaim timeout)`);
    }
  }

  /**
   * After a commit: if the consumer is parked, take the bell (CAS parked 1 -> 0)
   * and return true: the caller must ring the doorbell.
   */
  takeBell(): boolean {
    const i32 = this.i32;
    // SYNC POINT: parked (producer side: load after the commit).
    if (Atomics.load(i32, INBOX_PARKED_OFFSET / WORD) !== 0 && Atomics.compareExchange(i32, INBOX_PARKED_OFFSET / WORD, 1, 0) === 1) {
      incrementSharedU64(this.u32, INBOX_WAKEUPS_OFFSET);
      return true;
    }
    return false;
  }

  /** Count frames refused because this inbox was full (by the producer that reports the refusal). */
  countRefused(n = 1): void {
    for (let k = 0; k < n; k++) incrementSharedU64(this.u32, INBOX_REFUSED_FULL_OFFSET);
  }

  // -------------------------------------------------------------------------
  // Consumer side (the owner only)
  // -------------------------------------------------------------------------

  /** Make this instance the consumer. */
  attachConsumer(options: ConsumerOptions): void {
    this.consumer = options;
    if (options.now) this.now = options.now;
    if (options.stuckCheckEvery !== undefined) this.stuckCheckEvery = options.stuckCheckEvery;
    const i32 = this.i32;
    const published = Atomics.load(i32, INBOX_HEAD_OFFSET / WORD);
    // A consumer that died inside poll() (or a relay between release and
    // advanceHead) may have released slots without publishing head. A released
    // slot's sequence is at least position + capacity (more once producers have
    // reused it for a later lap). Skip them.
    let head = published;
    for (let k = 0; k < this.capacity; k++) {
      if (((Atomics.load(i32, this.seqIndex(head)) - head) | 0) < this.capacity) break;
      head = (head + 1) | 0;
    }
    this.head = head;
    this.cursor = head;
    if (head !== published) Atomics.store(i32, INBOX_HEAD_OFFSET / WORD, head);
  }

  /**
   * Read up to `limit` committed frames from the cursor on WITHOUT releasing
   * them (the relay's mode: a frame stays in the ring until the peer acks it).
   * The handler receives each frame's ring position as its second argument
   * (the relay uses it as the frame's id on the wire). Slots already released out of order are skipped;
   * corrupt frames are released and counted. Returns the number handed over.
   */
  scan(handler: (frame: FrameView, position: number) => void, limit: number): number {
    const i32 = this.i32;
    const capacity = this.capacity;
    let cursor = this.cursor;
    let delivered = 0;
    let corrupt = 0;
    const tail = Atomics.load(i32, INBOX_TAIL_OFFSET / WORD);
    while (delivered < limit && cursor !== tail) {
      const base = this.seqIndex(cursor);
      const dif = (Atomics.load(i32, base) - ((cursor + 1) | 0)) | 0;
      if (dif >= capacity - 1) {
        // Released already (acked before a restart re-read it, and perhaps reused
        // by producers for a later lap): nothing to do for this position.
        cursor = (cursor + 1) | 0;
        continue;
      }
      if (dif !== 0) {
        if (dif < 0 && this.shouldCheckStuck() && this.reclaimIfStuck(cursor, base)) {
          cursor = (cursor + 1) | 0;
          continue;
        }
        break;
      }
      if (!this.decode(base)) {
        corrupt++;
        this.release(cursor);
        cursor = (cursor + 1) | 0;
        continue;
      }
      delivered++;
      const position = cursor;
      cursor = (cursor + 1) | 0;
      this.cursor = cursor;
      handler(this.view, position);
    }
    this.cursor = cursor;
    if (corrupt > 0) addU64(this.u32, INBOX_CORRUPT_OFFSET, corrupt);
    this.advanceHead();
    return delivered;
  }

  /**
   * Release the committed slot at `position` (read earlier by {@link scan}),
   * in any order. The head advances past it once every earlier slot is
   * released too; producers never overtake an unreleased slot.
   */
  release(position: number): void {
    const base = this.seqIndex(position);
    this.i32[base + SLOT_CLAIM_PID_OFFSET / WORD] = 0;
    // SYNC POINT: slot release.
    Atomics.store(this.i32, base, (position + this.capacity) | 0);
  }

  /**
   * Move the head over released slots and publish it; counts them as received.
   * A slot released out of order can be claimed again by producers at once
   * (its sequence then moves past position + capacity), so "released" is any
   * sequence at least position + capacity.
   */
  advanceHead(): void {
    const i32 = this.i32;
    let head = this.head;
    let released = 0;
    while (head !== this.cursor) {
      const dif = (Atomics.load(i32, this.seqIndex(head)) - head) | 0;
      if (dif < this.capacity) break;
      head = (head + 1) | 0;
      released++;
    }
    if (released > 0) {
      this.head = head;
      // SYNC POINT: head published (release).
      Atomics.store(i32, INBOX_HEAD_OFFSET / WORD, head);
      addU64(this.u32, INBOX_RECEIVED_OFFSET, released);
    }
  }

  /**
   * Decode the committed, unreleased slot at `position` (read earlier by
   * {@link scan}) into the shared view again; null if it is no longer a
   * committed frame of that position or its header is invalid.
   */
  viewAt(position: number): FrameView | null {
    const base = this.seqIndex(position);
    if (Atomics.load(this.i32, base) !== ((position + 1) | 0)) return null;
    return this.decode(base) ? this.view : null;
  }

  /** Restart reading at the head: every frame not yet released will be scanned again. */
  rewind(): void {
    this.cursor = this.head;
  }

  /**
   * Hand up to `limit` committed frames to `handler`, in order, releasing each
   * slot after the handler returns (if the handler throws, that frame counts as
   * consumed and the error propagates). Returns the number handed over.
   */
  poll(handler: FrameHandler, limit: number): number {
    const i32 = this.i32;
    const u32 = this.u32;
    const view = this.view;
    const capacity = this.capacity;
    let head = this.head;
    let delivered = 0;
    let corrupt = 0;
    try {
      while (delivered < limit) {
        const base = this.seqIndex(head);
        // SYNC POINT: slot commit (acquire side).
        const dif = (Atomics.load(i32, base) - ((head + 1) | 0)) | 0;
        if (dif !== 0) {
          if (dif < 0 && this.shouldCheckStuck() && this.reclaimIfStuck(head, base)) {
            head = (head + 1) | 0;
            continue;
          }
          break;
        }
        const valid = this.decode(base);
        if (valid) delivered++;
        else corrupt++;
        try {
          if (valid) handler(view);
        } finally {
          i32[base + SLOT_CLAIM_PID_OFFSET / WORD] = 0;
          // SYNC POINT: slot release (free for the position one lap ahead).
          Atomics.store(i32, base, (head + capacity) | 0);
          head = (head + 1) | 0;
          // Batch claimers size their claims from the published head: keep it
          // close behind during a long poll instead of only at its end.
          // SYNC POINT: head published (release).
          if ((head & HEAD_PUBLISH_MASK) === 0) Atomics.store(i32, INBOX_HEAD_OFFSET / WORD, head);
        }
      }
    } finally {
      if (head !== this.head) {
        this.head = head;
        this.cursor = head;
        // SYNC POINT: head published (release).
        Atomics.store(i32, INBOX_HEAD_OFFSET / WORD, head);
        if (delivered > 0) addU64(u32, INBOX_RECEIVED_OFFSET, delivered);
        if (corrupt > 0) addU64(u32, INBOX_CORRUPT_OFFSET, corrupt);
      }
    }
    return delivered;
  }

  /**
   * Fill the view from the committed slot whose sequence word is at `base`.
   * Returns false if its header cannot be valid (a length or address prefix
   * out of range): such a frame is skipped and counted, never read.
   */
  private decode(base: number): boolean {
    const u32 = this.u32;
    const view = this.view;
    let length = u32[base + SLOT_LENGTH_OFFSET / WORD]!;
    // Every length read from shared memory is checked before it is used.
    if (length > this.maxPayload) return false;
    const flagsWord = u32[base + SLOT_FLAGS_OFFSET / WORD]!;
    let offset = base * WORD + SLOT_HEADER_LENGTH;
    view.addressOffset = 0;
    view.addressLength = 0;
    if ((flagsWord & FRAME_FLAGS_WITH_ADDRESS) !== 0) {
      const n = length === 0 ? 0 : this.bytes[offset]!;
      if (n === 0 || n > MAX_ADDRESS_LENGTH || n + 1 > length) return false;
      view.addressOffset = offset + 1;
      view.addressLength = n;
      offset += n + 1;
      length -= n + 1;
    }
    view.payloadOffset = offset;
    view.length = length;
    view.flags = flagsWord & 0xffff;
    view.sourceHost = flagsWord >>> 16;
    view.sourceIndex = u32[base + SLOT_SOURCE_INDEX_OFFSET / WORD]!;
    view.sourceGeneration = u32[base + SLOT_SOURCE_GENERATION_OFFSET / WORD]!;
    view.destinationIndex = u32[base + SLOT_DESTINATION_INDEX_OFFSET / WORD]!;
    view.sequence = u32[base + SLOT_SEQUENCE_OFFSET / WORD]!;
    return true;
  }

  /**
   * Whether this empty poll should look for a stuck slot. Looking costs a read
   * of the producers' tail line and a clock read, so a busy consumer does it
   * only every `stuckCheckEvery` empty polls (a parked one is made to, see
   * {@link checkStuckNext}).
   */
  private shouldCheckStuck(): boolean {
    if (++this.idlePolls < this.stuckCheckEvery) return false;
    this.idlePolls = 0;
    return true;
  }

  /** Make the next empty poll look for a stuck slot (after a timed wake-up). */
  checkStuckNext(): void {
    this.idlePolls = this.stuckCheckEvery;
  }

  /**
   * The head slot is not committed. If a producer holds it (tail is past head)
   * and is dead, or has held it past the reclaim timeout, reclaim it.
   */
  private reclaimIfStuck(head: number, base: number): boolean {
    const consumer = this.consumer;
    if (consumer === null) return false;
    const i32 = this.i32;
    if (Atomics.load(i32, INBOX_TAIL_OFFSET / WORD) === head) {
      this.stuckSince = -1;
      return false; // empty
    }
    const now = this.now();
    if (this.stuckSince < 0 || this.stuckPosition !== head) {
      this.stuckPosition = head;
      this.stuckSince = now;
    }
    // Asking the kernel whether the claimant lives costs microseconds: only once the slot
    // has stayed claimed for a while (a live producer commits within nanoseconds).
    const pid = Atomics.load(i32, base + SLOT_CLAIM_PID_OFFSET / WORD);
    const dead = pid !== 0 && pid !== this.pid && now - this.stuckSince >= LIVENESS_CHECK_AFTER_MS && !consumer.isAlive(pid);
    if (!dead && now - this.stuckSince < consumer.reclaimTimeoutMs) return false;
    // The producer is gone or too slow: free the slot for the next lap. If it
    // committed in the meantime the CAS fails and the frame is read normally.
    // The claim pid is cleared first: once the slot is free, a new producer may write its own.
    Atomics.store(i32, base + SLOT_CLAIM_PID_OFFSET / WORD, 0);
    if (Atomics.compareExchange(i32, base, head, (head + this.capacity) | 0) !== head) return false;
    addU64(this.u32, INBOX_RECLAIMED_OFFSET, 1);
    this.stuckSince = -1;
    return true;
  }

  /**
   * If the head is blocked by a claimed slot, milliseconds until it may be
   * reclaimed by timeout (the consumer should poll again by then); else -1.
   */
  stuckDeadlineMs(): number {
    if (this.stuckSince < 0 || this.consumer === null) return -1;
    if (this.stuckPosition !== this.head) return -1;
    return Math.max(0, this.stuckSince + this.consumer.reclaimTimeoutMs - this.now());
  }

  /** True if a committed frame waits at the head. */
  hasFrame(): boolean {
    const cursor = this.cursor;
    return Atomics.load(this.i32, this.seqIndex(cursor)) === ((cursor + 1) | 0);
  }

  /**
   * True if a producer has claimed the head slot without committing it yet. A
   * parked consumer must then sleep with a timeout: if that producer died, no
   * commit will ring the bell and only a poll can reclaim the slot.
   */
  inFlight(): boolean {
    return Atomics.load(this.i32, INBOX_TAIL_OFFSET / WORD) !== this.cursor;
  }

  /** Frames claimed but not yet consumed (tail - head). Racy observer. */
  depth(): number {
    return (Atomics.load(this.i32, INBOX_TAIL_OFFSET / WORD) - Atomics.load(this.i32, INBOX_HEAD_OFFSET / WORD)) | 0;
  }

  /**
   * Announce that the consumer is about to sleep. Returns false (and clears
   * the flag) if a committed frame waits, so it must not sleep. A slot that is
   * claimed but not yet committed does not prevent sleeping: its commit will
   * see the flag and ring; but see {@link inFlight}.
   */
  prepareToPark(): boolean {
    const i32 = this.i32;
    // SYNC POINT: parked (consumer side: store before re-checking the head slot).
    Atomics.store(i32, INBOX_PARKED_OFFSET / WORD, 1);
    const cursor = this.cursor;
    if (Atomics.load(i32, this.seqIndex(cursor)) === ((cursor + 1) | 0)) {
      Atomics.store(i32, INBOX_PARKED_OFFSET / WORD, 0);
      return false;
    }
    addU64(this.u32, INBOX_PARKS_OFFSET, 1);
    return true;
  }

  /** The consumer is awake again (after a wake-up, a timeout, or giving up on sleeping). */
  unpark(): void {
    Atomics.store(this.i32, INBOX_PARKED_OFFSET / WORD, 0);
  }

  /** Is the consumer parked? Racy observer. */
  isParked(): boolean {
    return Atomics.load(this.i32, INBOX_PARKED_OFFSET / WORD) !== 0;
  }
}
