/**
 * The namespace directory: a segment of fixed entries mapping endpoint names to
 * their owner, inbox geometry and doorbell.
 *
 * Writers (register / unregister) serialise on a lock word holding the holder's
 * pid; a lock whose holder died is taken over. Readers never lock: each entry
 * is a seqlock (generation odd while written), so a lookup retries rather than
 * read a half-written entry. A generation also names one incarnation of an
 * endpoint: senders cache (index, generation) and notice a change with one load.
 *
 * This file maps the directory and registers, unregisters and reclaims
 * entries; one entry's format and seqlock are in directory-entry.ts, the lock
 * in directory-lock.ts.
 */
import { join } from 'node:path';
import { debuglog } from 'node:util';
import { freeEntry, generationWord, readEntry, readNameAt, writeEntry, type EntryInfo, type Registration } from './directory-entry';
import { lockDirectory, lockDirectoryAsync, unlockDirectory } from './directory-lock';
import { BusError } from './errors';
import {
  DIR_ENTRY_COUNT_OFFSET,
  DIR_ENTRY_LENGTH,
  DIR_ENTRY_LENGTH_OFFSET,
  DIR_HEADER_LENGTH,
  DIR_REGISTRATIONS_OFFSET,
  DIR_REMOVED_OFFSET,
  DIR_TAKEOVERS_OFFSET,
  ENTRY_FLAG_RELAY,
  ENTRY_GENERATION_OFFSET,
  SEGMENT_KIND_DIRECTORY,
  directoryFileName,
  directorySegmentLength,
  entryOffset,
  inboxFileName,
} from './layout';
import { Segment, isProcessAlive, unlinkQuiet } from './segment';

export { generationWord, type EntryInfo, type Registration } from './directory-entry';

const WORD = 4;
const debug = debuglog('shmbus');

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
    return readEntry(this.segment, index, this.options.lockTimeoutMs);
  }

  /**
   * Name of the endpoint that held entry `index` at `generation`: the current
   * one, or the one that just unregistered (its name stays in the entry until
   * the entry is reused). Null once the entry has moved on further.
   */
  nameAt(index: number, generation: number): string | null {
    if (index >= this.entryCount) return null;
    return readNameAt(this.segment, index, generation, this.options.lockTimeoutMs);
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

  /**
   * {@link register} for the event loop: while a live process holds the lock,
   * it waits with timers instead of sleeping the thread. Same errors.
   */
  async registerAsync(registration: Registration, prepare: (previous: EntryInfo | null) => void): Promise<EntryInfo> {
    for (;;) {
      await this.lockAsync();
      if (this.removed) {
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
    const index = previous !== null ? previous.index : free >= 0 ? free : this.reclaimDeadLocked();
    if (index < 0) {
      throw new BusError('ERR_SHMBUS_DIRECTORY_FULL', `namespace "${this.options.namespace}" has all ${count} directory entries in use by live processes`);
    }
    prepare(previous);
    writeEntry(this.segment, index, registration);
    const u32 = this.segment.u32;
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
      freeEntry(this.segment, index, generation);
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
        freeEntry(this.segment, entry.index, entry.generation);
        cleanup(entry);
        reaped.push(entry);
      }
      this.removeIfEmptyLocked();
      return reaped;
    } finally {
      this.unlock();
    }
  }

  /**
   * Every entry is taken: free the first one whose owner has died (its pid is
   * gone, or runs another process: the start time differs) and remove its
   * inbox file, so that an open never fails for entries only dead processes
   * hold. The relay's entry is kept: its inbox holds frames in transit, for
   * its restart. Returns the freed index, or -1 if every owner is alive.
   */
  private reclaimDeadLocked(): number {
    const count = this.entryCount;
    for (let i = 0; i < count; i++) {
      const info = this.read(i);
      if (info === null) return i;
      if ((info.flags & ENTRY_FLAG_RELAY) !== 0 || isProcessAlive(info.ownerPid, info.ownerStartTime)) continue;
      // Free first (generation + 2), so frames of the dead endpoint are not named after the next owner.
      freeEntry(this.segment, i, info.generation);
      unlinkQuiet(join(this.options.dir, inboxFileName(this.options.namespace, info.name)));
      debug('directory full: reclaimed entry %d of "%s" (dead pid %d)', i, info.name, info.ownerPid);
      return i;
    }
    return -1;
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

  /** Take the registry lock, taking it over from a dead holder (blocks the thread while a live process holds it). */
  private lock(): void {
    lockDirectory(this.segment, this.options.lockTimeoutMs);
  }

  /** {@link lock} without blocking the event loop: between tries it waits on a timer. */
  private async lockAsync(): Promise<void> {
    await lockDirectoryAsync(() => this.segment, this.options.lockTimeoutMs);
  }

  private unlock(): void {
    unlockDirectory(this.segment);
  }

  /** Unmap (idempotent). */
  close(): void {
    this.segment.unmap();
  }
}
