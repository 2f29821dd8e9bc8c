/**
 * The namespace directory: a segment of fixed entries mapping endpoint names to
 * their owner, inbox geometry and doorbell.
 *
 * Writers (register / unregister) serialise on a lock word holding the holder's
 * pid; a lock whose holder died is taken over. Readers never lock: each entry
 * is a seqlock (generation odd while written), so a lookup retries rather than
 * read a half-written entry. A generation also names one incarnation of an
 * endpoint: senders cache (index, generation) and notice a change with one load.
 */
import { join } from 'node:path';
import { BusError } from './errors';
import {
  DIR_ENTRY_COUNT_OFFSET,
  DIR_ENTRY_LENGTH,
  DIR_ENTRY_LENGTH_OFFSET,
  DIR_HEADER_LENGTH,
  DIR_LOCK_OFFSET,
  DIR_REGISTRATIONS_OFFSET,
  DIR_REMOVED_OFFSET,
  DIR_TAKEOVERS_OFFSET,
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
  SEGMENT_KIND_DIRECTORY,
  directoryFileName,
  directorySegmentLength,
  entryOffset,
} from './layout';
import { Segment, isProcessAlive, processStartTime, sleepSync, unlinkQuiet } from './segment';

const WORD = 4;
/** What a snapshot returns for an entry whose name length cannot be valid. */
const CORRUPT = Symbol('corrupt entry');

/** Word index of entry `index`'s generation (for {@link Directory.generationAt}). */
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

export interface DirectoryOptions {
  /** Folder holding the namespace's files. */
  readonly dir: string;
  readonly namespace: string;
  /** Entries in a directory this call creates. */
  readonly entryCount: number;
  /** File mode of segments this namespace creates. */
  readonly mode: number;
  /** How long to wait for a live lock holder. */
  readonly lockTimeoutMs: number;
}

export class Directory {
  readonly path: string;
  readonly options: DirectoryOptions;
  private segment: Segment;

  private constructor(options: DirectoryOptions, segment: Segment) {
    this.options = options;
    this.path = segment.path;
    this.segment = segment;
  }

  /** Attach the namespace's directory, creating it if it does not exist. */
  static open(options: DirectoryOptions): Directory {
    return new Directory(options, Directory.map(options));
  }

  /** Attach an existing directory only (for observers such as `shmbus stat`); null if there is none. */
  static attachExisting(options: DirectoryOptions): Directory | null {
    const path = join(options.dir, directoryFileName(options.namespace));
    try {
      return new Directory(options, Segment.attach(path, SEGMENT_KIND_DIRECTORY));
    } catch (err) {
      if ((err as { errno?: string }).errno === 'ENOENT') return null;
      throw err;
    }
  }

  private static map(options: DirectoryOptions): Segment {
    const path = join(options.dir, directoryFileName(options.namespace));
    for (let attempt = 0; ; attempt++) {
      try {
        const segment = Segment.attach(path, SEGMENT_KIND_DIRECTORY);
        if (Atomics.load(segment.u32, DIR_REMOVED_OFFSET / WORD) === 0 || attempt > 100) return segment;
        // Marked removed, but its remover died before unlinking it: finish the removal.
        segment.unmap();
        unlinkQuiet(path);
        continue;
      } catch (err) {
        if ((err as { errno?: string }).errno !== 'ENOENT' || attempt > 100) throw err;
      }
      try {
        return Segment.create(path, SEGMENT_KIND_DIRECTORY, directorySegmentLength(options.entryCount), options.mode, DIR_HEADER_LENGTH, (buffer) => {
          const u32 = new Uint32Array(buffer);
          u32[DIR_ENTRY_COUNT_OFFSET / WORD] = options.entryCount;
          u32[DIR_ENTRY_LENGTH_OFFSET / WORD] = DIR_ENTRY_LENGTH;
        });
      } catch (err) {
        // Another process created it between our attach and create: attach theirs.
        if ((err as { errno?: string }).errno !== 'EEXIST') throw err;
      }
    }
  }

  get entryCount(): number {
    return this.segment.u32[DIR_ENTRY_COUNT_OFFSET / WORD]!;
  }

  /** Registrations and takeovers since the directory was created. */
  get counters(): { registrations: number; takeovers: number } {
    const u32 = this.segment.u32;
    return { registrations: u32[DIR_REGISTRATIONS_OFFSET / WORD]!, takeovers: u32[DIR_TAKEOVERS_OFFSET / WORD]! };
  }

  /** True once the last endpoint removed this directory's file: reopen the namespace. */
  get removed(): boolean {
    return Atomics.load(this.segment.u32, DIR_REMOVED_OFFSET / WORD) !== 0;
  }

  /** If this mapping's file was removed, map the namespace's current directory instead. */
  refresh(): void {
    if (!this.removed) return;
    const old = this.segment;
    this.segment = Directory.map(this.options);
    old.unmap();
  }

  /**
   * Current generation of entry `index`, for a sender's per-frame check that
   * its cached route is still valid. A plain read, not an atomic one: it is a
   * hint (a change is seen at this send or the next), on the hot path.
   * Racy observer.
   */
  generationOf(index: number): number {
    return this.segment.u32[generationWord(index)]!;
  }

  /** Same as {@link generationOf}, by the word index {@link generationWord} gives (no arithmetic per call). */
  generationAt(word: number): number {
    return this.segment.u32[word]!;
  }

  /** Read entry `index` consistently; null if it is free. */
  read(index: number): EntryInfo | null {
    const u32 = this.segment.u32;
    const info = this.consistent(index, (base, generation): EntryInfo | null | typeof CORRUPT => {
      if (Atomics.load(u32, base + ENTRY_STATE_OFFSET / WORD) !== ENTRY_STATE_ACTIVE) return null;
      const nameLength = Atomics.load(u32, base + ENTRY_NAME_LENGTH_OFFSET / WORD);
      if (nameLength === 0 || nameLength > MAX_NAME_LENGTH) return CORRUPT;
      return {
        index,
        generation,
        name: this.readName(index, nameLength),
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
      throw new BusError('ERR_SHMBUS_CORRUPT_SEGMENT', `${this.path}: entry ${index} has name length ${nameLength}, expected 1..${MAX_NAME_LENGTH}`);
    }
    return info;
  }

  /**
   * Name of the endpoint that held entry `index` at `generation`: the current
   * one, or the one that just unregistered (its name stays in the entry until
   * the entry is reused). Null once the entry has moved on further.
   */
  nameAt(index: number, generation: number): string | null {
    if (index >= this.entryCount) return null;
    const u32 = this.segment.u32;
    return this.consistent(index, (base, current) => {
      if (current !== generation && current !== ((generation + 2) >>> 0)) return null;
      const nameLength = Atomics.load(u32, base + ENTRY_NAME_LENGTH_OFFSET / WORD);
      return nameLength === 0 || nameLength > MAX_NAME_LENGTH ? null : this.readName(index, nameLength);
    });
  }

  /**
   * Read entry `index` under its seqlock: `snapshot` gets the word index of
   * the entry and its (even) generation, and its result is returned once the
   * generation is the same after it as before (else it runs again). Null if a
   * writer died leaving the entry mid-update.
   */
  private consistent<T>(index: number, snapshot: (base: number, generation: number) => T): T | null {
    const u32 = this.segment.u32;
    const base = entryOffset(index) / WORD;
    const wait = this.midUpdateWaiter(index);
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
  private midUpdateWaiter(index: number): () => boolean {
    let spins = 0;
    let deadline = 0;
    return () => {
      if (++spins < SEQLOCK_SPINS) return true;
      const now = performance.now();
      if (deadline === 0) deadline = now + this.options.lockTimeoutMs;
      const holder = Atomics.load(this.segment.i32, DIR_LOCK_OFFSET / WORD);
      if (holder === 0 || (holder !== process.pid && !isProcessAlive(holder))) {
        // No live writer: the entry was left mid-update by one that died; the next registration repairs it.
        if (spins > SEQLOCK_SPINS * 2) return false;
      } else if (now > deadline) {
        throw new BusError('ERR_SHMBUS_LOCK_TIMEOUT', `${this.path}: entry ${index} stayed mid-update for ${this.options.lockTimeoutMs} ms while pid ${holder} held the lock`);
      }
      sleepSync(1);
      return true;
    };
  }



  private readName(index: number, length: number): string {
    const u8 = new Uint8Array(this.segment.buffer, entryOffset(index) + ENTRY_NAME_OFFSET, length);
    return String.fromCharCode(...u8);
  }

  /** Find the live entry named `name`; null if there is none. Lock-free. */
  lookup(name: string): EntryInfo | null {
    const count = this.entryCount;
    for (let i = 0; i < count; i++) {
      const info = this.read(i);
      if (info !== null && info.name === name) return info;
    }
    return null;
  }

  /** Every active entry (snapshot, racy across entries). */
  entries(): EntryInfo[] {
    const result: EntryInfo[] = [];
    const count = this.entryCount;
    for (let i = 0; i < count; i++) {
      const info = this.read(i);
      if (info !== null) result.push(info);
    }
    return result;
  }

  /**
   * Register an endpoint. Under the lock: a live owner of the name is
   * ERR_SHMBUS_NAME_IN_USE; a dead owner's entry is taken over (`prepare`
   * receives it so the caller can reclaim its inbox); otherwise the first free
   * entry is used. `prepare` runs under the lock before the entry is
   * published, so the inbox exists before anyone can look the name up.
   */
  register(registration: Registration, prepare: (previous: EntryInfo | null) => void): EntryInfo {
    for (;;) {
      this.lock();
      if (this.removed) {
        // The last endpoint removed this directory while we were attaching: use the new one.
        this.unlock();
        this.refresh();
        continue;
      }
      try {
        return this.registerLocked(registration, prepare);
      } finally {
        this.unlock();
      }
    }
  }

  private registerLocked(registration: Registration, prepare: (previous: EntryInfo | null) => void): EntryInfo {
    const count = this.entryCount;
    let free = -1;
    let previous: EntryInfo | null = null;
    for (let i = 0; i < count; i++) {
      const info = this.read(i);
      if (info === null) {
        if (free < 0) free = i;
        continue;
      }
      if (info.name !== registration.name) continue;
      if (isProcessAlive(info.ownerPid, info.ownerStartTime)) {
        throw new BusError('ERR_SHMBUS_NAME_IN_USE', `endpoint "${registration.name}" in namespace "${this.options.namespace}" is owned by live pid ${info.ownerPid}`);
      }
      previous = info;
      break;
    }
    const index = previous !== null ? previous.index : free;
    if (index < 0) {
      throw new BusError('ERR_SHMBUS_DIRECTORY_FULL', `namespace "${this.options.namespace}" has all ${count} directory entries in use`);
    }
    prepare(previous);
    const u32 = this.segment.u32;
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
    const nameBytes = new Uint8Array(this.segment.buffer, entryOffset(index) + ENTRY_NAME_OFFSET, MAX_NAME_LENGTH);
    nameBytes.fill(0);
    for (let k = 0; k < name.length; k++) nameBytes[k] = name.charCodeAt(k);
    Atomics.store(u32, base + ENTRY_NAME_LENGTH_OFFSET / WORD, name.length);
    Atomics.store(u32, base + ENTRY_STATE_OFFSET / WORD, ENTRY_STATE_ACTIVE);
    // SYNC POINT: entry published (writer: even generation last).
    Atomics.store(u32, base + ENTRY_GENERATION_OFFSET / WORD, (g + 2) >>> 0);
    Atomics.add(u32, DIR_REGISTRATIONS_OFFSET / WORD, 1);
    if (previous !== null) Atomics.add(u32, DIR_TAKEOVERS_OFFSET / WORD, 1);
    return this.read(index)!;
  }

  /**
   * Free entry `index` if it still holds `generation`. `cleanup` runs under the
   * lock (the caller removes its inbox there). When no active entry remains the
   * directory file itself is removed. Returns false if the entry had already
   * changed hands.
   */
  unregister(index: number, generation: number, cleanup: () => void): boolean {
    this.lock();
    try {
      const u32 = this.segment.u32;
      const base = entryOffset(index) / WORD;
      if (Atomics.load(u32, base + ENTRY_GENERATION_OFFSET / WORD) !== generation) return false;
      this.freeLocked(index, generation);
      cleanup();
      this.removeIfEmptyLocked();
      return true;
    } finally {
      this.unlock();
    }
  }

  /**
   * Free every entry whose owner is dead (`cleanup` runs under the lock for
   * each, to remove its inbox), then remove the directory file if no entry is
   * left. Returns the entries freed.
   */
  reapDead(cleanup: (entry: EntryInfo) => void): EntryInfo[] {
    this.lock();
    try {
      const reaped: EntryInfo[] = [];
      for (const entry of this.entries()) {
        if (isProcessAlive(entry.ownerPid, entry.ownerStartTime)) continue;
        this.freeLocked(entry.index, entry.generation);
        cleanup(entry);
        reaped.push(entry);
      }
      this.removeIfEmptyLocked();
      return reaped;
    } finally {
      this.unlock();
    }
  }

  private freeLocked(index: number, generation: number): void {
    const u32 = this.segment.u32;
    const base = entryOffset(index) / WORD;
    Atomics.store(u32, base + ENTRY_GENERATION_OFFSET / WORD, (generation + 1) >>> 0);
    Atomics.store(u32, base + ENTRY_STATE_OFFSET / WORD, ENTRY_STATE_FREE);
    Atomics.store(u32, base + ENTRY_OWNER_PID_OFFSET / WORD, 0);
    Atomics.store(u32, base + ENTRY_GENERATION_OFFSET / WORD, (generation + 2) >>> 0);
  }

  private removeIfEmptyLocked(): void {
    if (this.removed || this.entries().length > 0) return;
    Atomics.store(this.segment.u32, DIR_REMOVED_OFFSET / WORD, 1);
    unlinkQuiet(this.path);
  }

  /** Run `fn` holding the registry lock (for maintenance such as `shmbus gc`). */
  withLock<T>(fn: () => T): T {
    this.lock();
    try {
      return fn();
    } finally {
      this.unlock();
    }
  }

  /** Take the registry lock, taking it over from a dead holder. */
  private lock(): void {
    const i32 = this.segment.i32;
    const word = DIR_LOCK_OFFSET / WORD;
    const me = process.pid;
    // The timeout is per holder: queued behind many short holders (a burst of registrations) is not a stuck lock.
    let deadline = performance.now() + this.options.lockTimeoutMs;
    let lastHolder = 0;
    for (let spins = 0; ; spins++) {
      const holder = Atomics.compareExchange(i32, word, 0, me);
      if (holder === 0) return;
      if (holder !== lastHolder) {
        lastHolder = holder;
        deadline = performance.now() + this.options.lockTimeoutMs;
      }
      // A holder with our own pid is another thread of this process (a worker): wait for it like any live holder.
      if (holder !== me && !isProcessAlive(holder) && Atomics.compareExchange(i32, word, holder, me) === holder) {
        this.repairLocked();
        return;
      }
      if (performance.now() > deadline) {
        throw new BusError('ERR_SHMBUS_LOCK_TIMEOUT', `${this.path}: directory lock held by live pid ${holder} for more than ${this.options.lockTimeoutMs} ms`);
      }
      if (spins > 100) sleepSync(1);
    }
  }

  private unlock(): void {
    Atomics.store(this.segment.i32, DIR_LOCK_OFFSET / WORD, 0);
  }

  /** After taking the lock from a dead holder: free any entry it left mid-update. */
  private repairLocked(): void {
    const u32 = this.segment.u32;
    const count = this.entryCount;
    for (let i = 0; i < count; i++) {
      const base = entryOffset(i) / WORD;
      const g = Atomics.load(u32, base + ENTRY_GENERATION_OFFSET / WORD);
      if ((g & 1) === 0) continue;
      Atomics.store(u32, base + ENTRY_STATE_OFFSET / WORD, ENTRY_STATE_FREE);
      Atomics.store(u32, base + ENTRY_GENERATION_OFFSET / WORD, (g + 1) >>> 0);
    }
  }

  /** Unmap (idempotent). */
  close(): void {
    this.segment.unmap();
  }
}
