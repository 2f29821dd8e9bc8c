/**
 * The namespace directory's writer lock: a word holding the holder's pid,
 * taken by compare-and-swap, taken over from a holder that died (the entries
 * it left mid-update are repaired), with a timeout per live holder.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { repairEntries } from './directory-entry';
import { BusError } from './errors';
import { DIR_LOCK_OFFSET } from './layout';
import { isProcessAlive, sleepSync, type Segment } from './segment';

const WORD = 4;
/** Tries at the lock (compare-and-swap) before a waiter starts to sleep between tries. */
const LOCK_SPINS = 100;

/** The state of one wait for the directory lock (see tryLock). */
interface LockWait {
  /** When the current holder has held it too long: the timeout is per holder. */
  deadline: number;
  lastHolder: number;
}

/** Take the lock of the directory `segment`, taking it over from a dead holder (blocks the thread while a live process holds it). */
export function lockDirectory(segment: Segment, lockTimeoutMs: number): void {
  const wait: LockWait = { deadline: 0, lastHolder: 0 };
  for (let spins = 0; !tryLock(segment, lockTimeoutMs, wait); spins++) {
    if (spins > LOCK_SPINS) sleepSync(1);
  }
}

/**
 * {@link lockDirectory} without blocking the event loop: between tries it
 * waits on a timer. `current` gives the directory's mapping at each try (the
 * Directory may map a new one while this waits).
 */
export async function lockDirectoryAsync(current: () => Segment, lockTimeoutMs: number): Promise<void> {
  const wait: LockWait = { deadline: 0, lastHolder: 0 };
  for (let spins = 0; !tryLock(current(), lockTimeoutMs, wait); spins++) {
    if (spins > LOCK_SPINS) await sleep(1);
  }
}

export function unlockDirectory(segment: Segment): void {
  Atomics.store(segment.i32, DIR_LOCK_OFFSET / WORD, 0);
}

/**
 * One try at the lock: true once taken (from nobody, or from a holder that
 * died: then the entries it left mid-update are repaired). False while a
 * live process holds it; throws ERR_SHMBUS_LOCK_TIMEOUT when one holder has
 * kept it longer than the lock timeout (queued behind many short holders, a
 * burst of registrations, is not a stuck lock).
 */
function tryLock(segment: Segment, lockTimeoutMs: number, wait: LockWait): boolean {
  const i32 = segment.i32;
  const word = DIR_LOCK_OFFSET / WORD;
  const me = process.pid;
  const holder = Atomics.compareExchange(i32, word, 0, me);
  if (holder === 0) return true;
  const now = performance.now();
  if (holder !== wait.lastHolder) {
    wait.lastHolder = holder;
    wait.deadline = now + lockTimeoutMs;
  }
  // A holder with our own pid is another thread of this process (a worker): wait for it like any live holder.
  if (holder !== me && !isProcessAlive(holder) && Atomics.compareExchange(i32, word, holder, me) === holder) {
    repairEntries(segment);
    return true;
  }
  if (now > wait.deadline) {
    throw new BusError('ERR_SHMBUS_LOCK_TIMEOUT', `${segment.path}: directory lock held by live pid ${holder} for more than ${lockTimeoutMs} ms`);
  }
  return false;
}
