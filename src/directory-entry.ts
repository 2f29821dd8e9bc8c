/**
 * One entry of the namespace directory in shared memory: reading it under its
 * seqlock (generation odd while written, so a reader retries rather than see
 * a half-written entry), and writing, freeing and repairing it (writers hold
 * the directory lock, directory-lock.ts).
 */
import { BusError } from './errors';
import {
  DIR_ENTRY_COUNT_OFFSET,
  DIR_LOCK_OFFSET,
  ENTRY_CAPACITY_OFFSET,
  ENTRY_DOORBELL_KIND_OFFSET,
  ENTRY_DOORBELL_PORT_OFFSET,
  ENTRY_FLAGS_OFFSET,
  ENTRY_GENERATION_OFFSET,
  ENTRY_METRICS_PORT_OFFSET,
  ENTRY_NAME_LENGTH_OFFSET,
  ENTRY_NAME_OFFSET,
  ENTRY_OWNER_PID_OFFSET,
  ENTRY_OWNER_START_TIME_OFFSET,
  ENTRY_SLOT_SIZE_OFFSET,
  ENTRY_STATE_ACTIVE,
  ENTRY_STATE_FREE,
  ENTRY_STATE_OFFSET,
  MAX_NAME_LENGTH,
  entryOffset,
} from './layout';
import { isProcessAlive, processStartTime, sleepSync, type Segment } from './segment';

const WORD = 4;
/** What a snapshot returns for an entry whose name length cannot be valid. */
const CORRUPT = Symbol('corrupt entry');

/** Word index of entry `index`'s generation (for `Directory.generationAt`, directory.ts). */
export function generationWord(index: number): number {
  return (entryOffset(index) + ENTRY_GENERATION_OFFSET) / WORD;
}

/** Spins before a reader of an entry being written starts to check the clock and sleep. */
const SEQLOCK_SPINS = 256;

/** What a directory entry says about an endpoint (a snapshot). */
export interface EntryInfo {
  readonly index: number;
  /** Even; changes on every register and unregister of this entry. */
  readonly generation: number;
  readonly name: string;
  readonly ownerPid: number;
  readonly ownerStartTime: number;
  readonly flags: number;
  readonly doorbellKind: number;
  readonly doorbellPort: number;
  readonly slotSize: number;
  readonly capacity: number;
  /** TCP port of the endpoint's loopback HTTP metrics (relays); 0 = none. */
  readonly metricsPort: number;
}

/** What an endpoint declares when it registers. */
export interface Registration {
  readonly name: string;
  readonly flags: number;
  readonly doorbellKind: number;
  readonly doorbellPort: number;
  readonly slotSize: number;
  readonly capacity: number;
  readonly metricsPort?: number;
}

// ---------------------------------------------------------------------------
// Reading (lock-free)

/** Read entry `index` of the directory `segment` consistently; null if it is free. */
export function readEntry(segment: Segment, index: number, lockTimeoutMs: number): EntryInfo | null {
  const u32 = segment.u32;
  const info = consistent(segment, index, lockTimeoutMs, (base, generation): EntryInfo | null | typeof CORRUPT => {
    if (Atomics.load(u32, base + ENTRY_STATE_OFFSET / WORD) !== ENTRY_STATE_ACTIVE) return null;
    const nameLength = Atomics.load(u32, base + ENTRY_NAME_LENGTH_OFFSET / WORD);
    if (nameLength === 0 || nameLength > MAX_NAME_LENGTH) return CORRUPT;
    return {
      index,
      generation,
      name: readName(segment, index, nameLength),
      ownerPid: Atomics.load(u32, base + ENTRY_OWNER_PID_OFFSET / WORD) | 0,
      ownerStartTime: Atomics.load(u32, base + ENTRY_OWNER_START_TIME_OFFSET / WORD + 1) * 0x1_0000_0000 + Atomics.load(u32, base + ENTRY_OWNER_START_TIME_OFFSET / WORD),
      flags: Atomics.load(u32, base + ENTRY_FLAGS_OFFSET / WORD),
      doorbellKind: Atomics.load(u32, base + ENTRY_DOORBELL_KIND_OFFSET / WORD),
      doorbellPort: Atomics.load(u32, base + ENTRY_DOORBELL_PORT_OFFSET / WORD),
      slotSize: Atomics.load(u32, base + ENTRY_SLOT_SIZE_OFFSET / WORD),
      capacity: Atomics.load(u32, base + ENTRY_CAPACITY_OFFSET / WORD),
      metricsPort: Atomics.load(u32, base + ENTRY_METRICS_PORT_OFFSET / WORD),
    };
  });
  if (info === CORRUPT) {
    const nameLength = Atomics.load(u32, entryOffset(index) / WORD + ENTRY_NAME_LENGTH_OFFSET / WORD);
    throw new BusError('ERR_SHMBUS_CORRUPT_SEGMENT', `${segment.path}: entry ${index} has name length ${nameLength}, expected 1..${MAX_NAME_LENGTH}`);
  }
  return info;
}

/**
 * Name of the endpoint that held entry `index` at `generation`: the current
 * one, or the one that just unregistered (its name stays in the entry until
 * the entry is reused). Null once the entry has moved on further.
 */
export function readNameAt(segment: Segment, index: number, generation: number, lockTimeoutMs: number): string | null {
  const u32 = segment.u32;
  return consistent(segment, index, lockTimeoutMs, (base, current) => {
    if (current !== generation && current !== ((generation + 2) >>> 0)) return null;
    const nameLength = Atomics.load(u32, base + ENTRY_NAME_LENGTH_OFFSET / WORD);
    return nameLength === 0 || nameLength > MAX_NAME_LENGTH ? null : readName(segment, index, nameLength);
  });
}

/**
 * Read entry `index` under its seqlock: `snapshot` gets the word index of
 * the entry and its (even) generation, and its result is returned once the
 * generation is the same after it as before (else it runs again). Null if a
 * writer died leaving the entry mid-update.
 */
function consistent<T>(segment: Segment, index: number, lockTimeoutMs: number, snapshot: (base: number, generation: number) => T): T | null {
  const u32 = segment.u32;
  const base = entryOffset(index) / WORD;
  const wait = midUpdateWaiter(segment, index, lockTimeoutMs);
  for (;;) {
    // SYNC POINT: entry published (acquire, seqlock begin).
    const g1 = Atomics.load(u32, base + ENTRY_GENERATION_OFFSET / WORD);
    if ((g1 & 1) !== 0) {
      if (!wait()) return null;
      continue;
    }
    const value = snapshot(base, g1);
    // SYNC POINT: entry published (seqlock end: nothing changed while we read).
    if (Atomics.load(u32, base + ENTRY_GENERATION_OFFSET / WORD) === g1) return value;
  }
}

/**
 * For a reader that found entry `index` mid-update: returns a function to
 * call on each retry. It spins a little, then sleeps 1 ms per retry; it
 * returns false (treat the entry as absent) if the writer died holding the
 * lock, and throws ERR_SHMBUS_LOCK_TIMEOUT if a live writer takes longer than
 * the lock timeout (a preempted writer on a busy machine takes milliseconds).
 */
function midUpdateWaiter(segment: Segment, index: number, lockTimeoutMs: number): () => boolean {
  let spins = 0;
  let deadline = 0;
  return () => {
    if (++spins < SEQLOCK_SPINS) return true;
    const now = performance.now();
    if (deadline === 0) deadline = now + lockTimeoutMs;
    const holder = Atomics.load(segment.i32, DIR_LOCK_OFFSET / WORD);
    if (holder === 0 || (holder !== process.pid && !isProcessAlive(holder))) {
      // No live writer: the entry was left mid-update by one that died; the next registration repairs it.
      if (spins > SEQLOCK_SPINS * 2) return false;
    } else if (now > deadline) {
      throw new BusError('ERR_SHMBUS_LOCK_TIMEOUT', `${segment.path}: entry ${index} stayed mid-update for ${lockTimeoutMs} ms while pid ${holder} held the lock`);
    }
    sleepSync(1);
    return true;
  };
}

function readName(segment: Segment, index: number, length: number): string {
  const u8 = new Uint8Array(segment.buffer, entryOffset(index) + ENTRY_NAME_OFFSET, length);
  return String.fromCharCode(...u8);
}

// ---------------------------------------------------------------------------
// Writing (under the directory lock)

/** Publish `registration` in entry `index`, owned by this process: odd generation first, even last. */
export function writeEntry(segment: Segment, index: number, registration: Registration): void {
  const u32 = segment.u32;
  const base = entryOffset(index) / WORD;
  const g = Atomics.load(u32, base + ENTRY_GENERATION_OFFSET / WORD);
  // SYNC POINT: entry published (writer: odd generation first).
  Atomics.store(u32, base + ENTRY_GENERATION_OFFSET / WORD, (g + 1) >>> 0);
  const startTime = processStartTime(process.pid);
  Atomics.store(u32, base + ENTRY_OWNER_PID_OFFSET / WORD, process.pid);
  Atomics.store(u32, base + ENTRY_OWNER_START_TIME_OFFSET / WORD, startTime >>> 0);
  Atomics.store(u32, base + ENTRY_OWNER_START_TIME_OFFSET / WORD + 1, Math.floor(startTime / 0x1_0000_0000));
  Atomics.store(u32, base + ENTRY_FLAGS_OFFSET / WORD, registration.flags);
  Atomics.store(u32, base + ENTRY_DOORBELL_KIND_OFFSET / WORD, registration.doorbellKind);
  Atomics.store(u32, base + ENTRY_DOORBELL_PORT_OFFSET / WORD, registration.doorbellPort);
  Atomics.store(u32, base + ENTRY_SLOT_SIZE_OFFSET / WORD, registration.slotSize);
  Atomics.store(u32, base + ENTRY_CAPACITY_OFFSET / WORD, registration.capacity);
  Atomics.store(u32, base + ENTRY_METRICS_PORT_OFFSET / WORD, registration.metricsPort ?? 0);
  const name = registration.name;
  const nameBytes = new Uint8Array(segment.buffer, entryOffset(index) + ENTRY_NAME_OFFSET, MAX_NAME_LENGTH);
  nameBytes.fill(0);
  for (let k = 0; k < name.length; k++) nameBytes[k] = name.charCodeAt(k);
  Atomics.store(u32, base + ENTRY_NAME_LENGTH_OFFSET / WORD, name.length);
  Atomics.store(u32, base + ENTRY_STATE_OFFSET / WORD, ENTRY_STATE_ACTIVE);
  // SYNC POINT: entry published (writer: even generation last).
  Atomics.store(u32, base + ENTRY_GENERATION_OFFSET / WORD, (g + 2) >>> 0);
}

/** Free entry `index`, which holds `generation` (its name stays until the entry is reused). */
export function freeEntry(segment: Segment, index: number, generation: number): void {
  const u32 = segment.u32;
  const base = entryOffset(index) / WORD;
  Atomics.store(u32, base + ENTRY_GENERATION_OFFSET / WORD, (generation + 1) >>> 0);
  Atomics.store(u32, base + ENTRY_STATE_OFFSET / WORD, ENTRY_STATE_FREE);
  Atomics.store(u32, base + ENTRY_OWNER_PID_OFFSET / WORD, 0);
  Atomics.store(u32, base + ENTRY_GENERATION_OFFSET / WORD, (generation + 2) >>> 0);
}

/** After taking the lock from a dead holder: free any entry it left mid-update. */
export function repairEntries(segment: Segment): void {
  const u32 = segment.u32;
  const count = u32[DIR_ENTRY_COUNT_OFFSET / WORD]!;
  for (let i = 0; i < count; i++) {
    const base = entryOffset(i) / WORD;
    const g = Atomics.load(u32, base + ENTRY_GENERATION_OFFSET / WORD);
    if ((g & 1) === 0) continue;
    Atomics.store(u32, base + ENTRY_STATE_OFFSET / WORD, ENTRY_STATE_FREE);
    Atomics.store(u32, base + ENTRY_GENERATION_OFFSET / WORD, (g + 1) >>> 0);
  }
}
