/**
 * What the Bus hands to an application that receives with copies: the
 * {@link Frame} (payload, source, sequence, and `text()` / `json()`), and the
 * async iterator of `bus.frames()`, which can be ended at once (`return()`,
 * `break`) or by an AbortSignal even while it is parked on the doorbell.
 */
import { BusError, abortError, type BusAbortError } from './errors';

/** A received frame that owns its payload (a copy taken from the slot). */
export interface Frame {
  /** Name of the sending endpoint (`name` locally; `name@host` for frames that came through a relay). */
  readonly source: string;
  /** Per-source sequence number (u32, wraps). */
  readonly sequence: number;
  /** Frame flags (see FRAME_FLAG_* in layout). */
  readonly flags: number;
  readonly payload: Uint8Array;
  /** The payload decoded as UTF-8 (malformed sequences become U+FFFD). */
  text(): string;
  /** The payload parsed as JSON (UTF-8). Throws ERR_SHMBUS_INVALID_JSON if it is not JSON. */
  json<T = unknown>(): T;
}

export class ReceivedFrame implements Frame {
  constructor(
    readonly source: string,
    readonly sequence: number,
    readonly flags: number,
    readonly payload: Uint8Array,
  ) {}

  text(): string {
    const p = this.payload;
    return Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString('utf8');
  }

  json<T = unknown>(): T {
    try {
      return JSON.parse(this.text()) as T;
    } catch (err) {
      throw new BusError('ERR_SHMBUS_INVALID_JSON', `frame ${this.sequence} from "${this.source}" (${this.payload.length} bytes) is not JSON: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** Options of `bus.frames()`. */
export interface FramesOptions {
  /** Ends the iteration: the pending (or next) `next()` rejects with ERR_SHMBUS_ABORTED (a BusAbortError), later ones are done. */
  signal?: AbortSignal;
}

/** What a {@link FrameIterator} reads from (the Bus). */
export interface FrameSource {
  isClosed(): boolean;
  /** The next frame, or null when the inbox is empty. */
  recvFromLocal(): Frame | null;
  /** Resolves when the inbox may hold a frame, or the wait was interrupted. */
  waitReadable(): Promise<void>;
  /** Cut every wait of waitReadable short now (it releases the event loop). */
  interruptWait(): void;
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

/**
 * The iterator of `bus.frames()`: one frame per `next()` (the inbox, not
 * memory, absorbs a slow consumer), parked on the doorbell while the inbox is
 * empty. Done when the bus closes. `return()` (what `break` calls) settles at
 * once, even while parked, and leaves nothing holding the event loop.
 */
export class FrameIterator implements AsyncIterableIterator<Frame, undefined, undefined> {
  private finished = false;
  private failure: BusAbortError | null = null;
  /** next() calls queue behind each other (a frame goes to the first caller). */
  private queue: Promise<unknown> = Promise.resolve();
  private waiting = false;
  private readonly onAbort: (() => void) | null = null;

  constructor(
    private readonly source: FrameSource,
    private readonly signal: AbortSignal | undefined,
  ) {
    if (signal === undefined) return;
    if (signal.aborted) {
      this.failure = abortError(signal, 'frames()');
    } else {
      this.onAbort = () => {
        this.failure = abortError(signal, 'frames()');
        this.finish();
      };
      signal.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  next(): Promise<IteratorResult<Frame, undefined>> {
    const result = this.queue.then(() => this.pull());
    this.queue = result.catch(() => undefined);
    return result;
  }

  private async pull(): Promise<IteratorResult<Frame, undefined>> {
    for (;;) {
      const failure = this.failure;
      if (failure !== null) {
        this.failure = null;
        this.finish();
        throw failure;
      }
      if (this.finished || this.source.isClosed()) {
        this.finish();
        return DONE;
      }
      const frame = this.source.recvFromLocal();
      if (frame !== null) return { done: false, value: frame };
      this.waiting = true;
      try {
        await this.source.waitReadable();
      } finally {
        this.waiting = false;
      }
    }
  }

  /** End the iteration now: resolves at once; a parked `next()` resolves done. */
  return(_value?: unknown): Promise<IteratorReturnResult<undefined>> {
    this.failure = null;
    this.finish();
    return Promise.resolve(DONE);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.return();
  }

  private finish(): void {
    this.finished = true;
    if (this.onAbort !== null) this.signal!.removeEventListener('abort', this.onAbort);
    if (this.waiting) this.source.interruptWait();
  }
}
