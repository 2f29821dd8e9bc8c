/**
 * What happens to the open Buses of a process when it ends (README, "Exits
 * and signals"):
 *
 *  - a normal exit (the event loop runs dry, `process.exit()`, an uncaught
 *    exception) closes them in the 'exit' hook;
 *  - SIGTERM / SIGINT, while the application has no listener of its own for
 *    that signal: they are closed, then the signal is raised again with its
 *    default action, so the process still dies of it (exit status 128 + n);
 *  - with a listener of the application's, the application keeps control
 *    (and its exit runs the 'exit' hook);
 *  - SIGKILL (and the kernel's OOM killer, which sends it), or a crash
 *    (SIGABRT, SIGSEGV): no code runs. The entries stay, as DEAD, until a
 *    successor takes the name over, an open finds the directory full and
 *    reclaims them, or `shmbus gc`.
 *
 * The signal listener exists only while a Bus with `handleSignals` (the
 * default) is open, only on the main thread, and it stays first among the
 * signal's listeners so it sees the application's `once` listeners that the
 * same signal is about to run.
 */
import { isMainThread } from 'node:worker_threads';

/** A Bus as this file sees it. */
export interface Closable {
  readonly handlesSignals: boolean;
  closeSync(): unknown;
}

const SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];

const open = new Set<Closable>();
let exitHookInstalled = false;
let signalsInstalled = false;

/** A Bus opened: close it at exit, and on SIGTERM / SIGINT if nobody else handles them. */
export function track(bus: Closable): void {
  open.add(bus);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', closeAll);
  }
  updateSignalListeners();
}

/** A Bus closed. */
export function untrack(bus: Closable): void {
  open.delete(bus);
  updateSignalListeners();
}

/** True while this file listens to SIGTERM and SIGINT (for tests). */
export function listensToSignals(): boolean {
  return signalsInstalled;
}

function closeAll(): void {
  for (const bus of [...open]) {
    try {
      bus.closeSync();
    } catch {
      // Close the others all the same: the process is ending.
    }
  }
}

function updateSignalListeners(): void {
  let wanted = false;
  if (isMainThread) for (const bus of open) if (bus.handlesSignals) wanted = true;
  if (wanted === signalsInstalled) return;
  signalsInstalled = wanted;
  if (wanted) {
    for (const signal of SIGNALS) process.prependListener(signal, onSignal);
    process.on('newListener', onNewListener);
  } else {
    process.removeListener('newListener', onNewListener);
    for (const signal of SIGNALS) process.removeListener(signal, onSignal);
  }
}

/** Another listener of a signal is being added: move ours back in front once it is there. */
function onNewListener(event: string | symbol): void {
  if (typeof event !== 'string' || !SIGNALS.includes(event as NodeJS.Signals)) return;
  queueMicrotask(() => {
    const signal = event as NodeJS.Signals;
    if (!signalsInstalled || process.rawListeners(signal)[0] === onSignal) return;
    // The application's listener is there now, so removing ours never leaves the signal without one.
    process.removeListener(signal, onSignal);
    process.prependListener(signal, onSignal);
  });
}

function onSignal(signal: NodeJS.Signals): void {
  // The application listens too: it decides what the signal means.
  if (process.listenerCount(signal) > 1) return;
  closeAll();
  // No listener left: Node restores the default action, and the signal ends the process as it would have.
  signalsInstalled = false;
  process.removeListener('newListener', onNewListener);
  for (const s of SIGNALS) process.removeListener(s, onSignal);
  process.kill(process.pid, signal);
}
