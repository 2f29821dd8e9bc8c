/**
 * What bus.ts declares and uses besides the Bus class itself: the event map
 * and the option and stats types of its API, the dispose-symbol polyfill, and
 * the timed poll behind `bus.waitFor()`.
 */
import { BusError, abortError, describeValue, throwIfAborted } from './errors';
import type { InboxCounters } from './frame';
import type { Frame } from './received';

// Node 20.0-20.3 predate Symbol.dispose / Symbol.asyncDispose: define them as later Node versions do,
// so that `using` / `await using` (and TypeScript's helpers for them) find the Bus's methods.
if (typeof Symbol.asyncDispose !== 'symbol') Object.defineProperty(Symbol, 'asyncDispose', { value: Symbol.for('nodejs.asyncDispose') });
if (typeof Symbol.dispose !== 'symbol') Object.defineProperty(Symbol, 'dispose', { value: Symbol.for('nodejs.dispose') });

/**
 * The events of a Bus and their arguments: `bus.on('frame', (f) => ...)`
 * gives `f` the type Frame, and an event not listed here does not compile.
 */
export interface BusEvents {
  /** A frame arrived. The first listener starts the event-driven receiver (parked on the doorbell when idle). */
  frame: [frame: Frame];
  /** The event-driven receiver failed (a BusError), or a 'frame' listener threw (its error). */
  error: [error: Error];
  /** The bus closed: by close(), closeSync(), disposal, the exit hook, or a SIGTERM/SIGINT it handled. */
  close: [info: { unread: number }];
  newListener: [event: keyof BusEvents, listener: (...args: never[]) => void];
  removeListener: [event: keyof BusEvents, listener: (...args: never[]) => void];
}

/** A listener of Bus event `E`. */
export type BusListener<E extends keyof BusEvents> = (...args: BusEvents[E]) => void;

/** Options of `bus.waitFor()`. */
export interface WaitForOptions {
  /** Give up after this long: rejects with ERR_SHMBUS_WAIT_TIMEOUT. Default 5000 ms; `Infinity` waits without limit. */
  timeoutMs?: number;
  /** Abort the wait: rejects with ERR_SHMBUS_ABORTED (a BusAbortError). */
  signal?: AbortSignal;
}

/** Counters of one endpoint (monotonic since the inbox was created) and its inbox's state. */
export interface BusStats extends InboxCounters {
  readonly name: string;
  readonly namespace: string;
  readonly slotSize: number;
  /** Slots per lane. */
  readonly capacity: number;
  readonly lanes: number;
  /** Lanes producers have taken (one more than the highest taken). */
  readonly lanesInUse: number;
  readonly maxPayload: number;
  readonly maxMessageSize: number;
  /** Slots published and not yet consumed, over every lane. */
  readonly depth: number;
  readonly parked: boolean;
  /** UDP doorbell datagrams this process could not send. */
  readonly doorbellErrors: number;
}

/** `signal` if it is absent or an AbortSignal; ERR_SHMBUS_INVALID_OPTION otherwise. */
export function validateSignal(signal: unknown): AbortSignal | undefined {
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new BusError('ERR_SHMBUS_INVALID_OPTION', `option "signal" must be an AbortSignal; received ${describeValue(signal)}`);
  }
  return signal;
}

const DEFAULT_WAIT_TIMEOUT_MS = 5000;
/** The poll re-checks after 1 ms, then less and less often, up to every this many ms. */
const MAX_POLL_MS = 20;

/** How a poll names what it waits for in its errors. */
export interface PollMessages {
  /** "waiting for endpoint" */
  readonly what: string;
  /** '"name"' */
  readonly target: string;
  /** The message of ERR_SHMBUS_WAIT_TIMEOUT. */
  timedOut(timeoutMs: number): string;
}

/**
 * Resolve when `ready()` (checked now, then on timers: the event loop keeps
 * running) is true. Rejects with ERR_SHMBUS_WAIT_TIMEOUT after
 * `options.timeoutMs`, ERR_SHMBUS_ABORTED when `options.signal` aborts, the
 * error `ready` throws, or the error handed to the function it adds to
 * `pending` for as long as it waits (the Bus ends its waits when it closes).
 * Validates the options first (ERR_SHMBUS_INVALID_OPTION).
 */
export function pollUntil(ready: () => boolean, options: WaitForOptions, pending: Set<(err: Error) => void>, messages: PollMessages): Promise<void> {
  const timeoutMs = options?.timeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS;
  if (typeof timeoutMs !== 'number' || !(timeoutMs >= 0)) {
    throw new BusError('ERR_SHMBUS_INVALID_OPTION', `option "timeoutMs" must be a number >= 0 (Infinity: no limit); received ${describeValue(timeoutMs)}`);
  }
  const signal = validateSignal(options?.signal);
  throwIfAborted(signal, messages.what, messages.target);
  if (ready()) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const deadline = performance.now() + timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    let interval = 1;
    const settle = (err: Error | null) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      pending.delete(settle);
      if (err === null) resolve();
      else reject(err);
    };
    const onAbort = () => settle(abortError(signal!, messages.what, messages.target));
    const poll = () => {
      try {
        if (ready()) return settle(null);
        const left = deadline - performance.now();
        if (left <= 0) return settle(new BusError('ERR_SHMBUS_WAIT_TIMEOUT', messages.timedOut(timeoutMs)));
        timer = setTimeout(poll, Math.min(interval, left));
        interval = Math.min(interval * 2, MAX_POLL_MS);
      } catch (err) {
        settle(err as Error);
      }
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    pending.add(settle);
    timer = setTimeout(poll, 1);
  });
}
