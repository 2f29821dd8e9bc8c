/**
 * Sender: a handle for sending to one destination, so a hot loop does no map
 * lookup per frame. It holds the route (the destination's inbox and this
 * process's lane in it), revalidates it with one plain load per send, and
 * hands each frame forward: Bus -> Sender -> LaneProducer (lane.ts).
 *
 * Payloads are bytes or refused: any ArrayBufferView (its bytes, whatever its
 * element type), an ArrayBuffer, or a string (sent as UTF-8). Anything else
 * throws ERR_SHMBUS_INVALID_PAYLOAD before a byte is written.
 */
import { BusError, describeValue, isBusError, throwIfAborted } from './errors';
import { FutexSleeper } from './doorbell';
import { addU64, OFFER_FULL, OFFER_OK_RING, type ProducerStamp } from './frame';
import { INBOX_SEND_REFUSED_OFFSET, INBOX_SENT_OFFSET, RELAY_ENDPOINT_NAME } from './layout';
import { ringRoute, type Route, type Routes } from './routes';
import { isProcessAlive } from './segment';

/** What a send accepts. */
export type Payload = ArrayBufferView | ArrayBuffer | string;

/** Options of the async sends. */
export interface SendAsyncOptions {
  /** Give up (resolve false) after this long. Default 1000 ms. */
  timeoutMs?: number;
  /** Abort the wait: the promise rejects with a BusAbortError (code ERR_SHMBUS_ABORTED, `cause` = the signal's reason); nothing is sent. */
  signal?: AbortSignal;
}

/** The sending endpoint: its stamp, its per-source sequence and its own inbox's counters. Owned by the Bus. */
export interface Origin {
  readonly stamp: ProducerStamp;
  /** Next per-source sequence number (u32, wraps); shared by every destination of the endpoint. */
  sequence: number;
  /** The sender's own inbox header words (sent / refused counters). */
  readonly counters: Uint32Array;
  /** Throws ERR_SHMBUS_CLOSED once the endpoint is closed. */
  assertOpen(): void;
}

const LIVENESS_RECHECK_MS = 100;
/** A producer waiting for room re-checks at least this often (a safety net; the consumer wakes it). */
const SPACE_RECHECK_MS = 100;

/** The bytes of a payload, or ERR_SHMBUS_INVALID_PAYLOAD. */
export function toBytes(payload: unknown): Uint8Array {
  if (payload instanceof Uint8Array) return payload;
  if (ArrayBuffer.isView(payload)) return new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
  if (payload instanceof ArrayBuffer || payload instanceof SharedArrayBuffer) return new Uint8Array(payload);
  if (typeof payload === 'string') return Buffer.from(payload, 'utf8');
  throw new BusError('ERR_SHMBUS_INVALID_PAYLOAD', `payload must be bytes (a Uint8Array, a Buffer, any other ArrayBufferView, an ArrayBuffer) or a string (sent as UTF-8); received ${payload === null ? 'null' : typeof payload === 'object' ? (payload.constructor?.name ?? 'object') : `${typeof payload} ${describeValue(payload)}`}`);
}

export class Sender {
  /** `name` (this host) or `name@host` (through the relay). */
  readonly destination: string;
  private route: Route | null = null;

  /**
   * @param target the inbox written into: `destination` itself, or the relay's for a remote one
   * @param prefix the encoded destination address written before each payload (remote sends)
   */
  constructor(
    destination: string,
    private readonly target: string,
    private readonly origin: Origin,
    private readonly routes: Routes,
    private readonly stamp: ProducerStamp,
    private readonly prefix: Uint8Array | undefined,
  ) {
    this.destination = destination;
  }

  /** The current route, re-resolved if the destination was closed or replaced. */
  private current(): Route {
    const route = this.route;
    if (route !== null && this.routes.isCurrent(route)) return route;
    this.origin.assertOpen();
    return (this.route = this.resolve());
  }

  private resolve(): Route {
    const cached = this.routes.get(this.target);
    if (cached !== null) return cached;
    try {
      return this.routes.resolve(this.target);
    } catch (err) {
      if (this.target === RELAY_ENDPOINT_NAME && isBusError(err, 'ERR_SHMBUS_UNKNOWN_DESTINATION')) {
        throw new BusError('ERR_SHMBUS_RELAY_UNAVAILABLE', `no transit relay is running (start transit-server for this host) to send to ${this.destination}`, { cause: err });
      }
      throw err;
    }
  }

  private checkSize(route: Route, length: number): void {
    const prefixLength = this.prefix === undefined ? 0 : this.prefix.length;
    if (length + prefixLength > route.lane.maxMessage) {
      throw new BusError('ERR_SHMBUS_FRAME_TOO_LARGE', `payload of ${length} bytes to ${this.destination} is larger than its inbox accepts (at most ${route.lane.maxMessage - prefixLength} bytes)`);
    }
  }

  /**
   * Write one frame (or one message spanning several slots) and publish it.
   * True when published; false when the lane is full (nothing written; the
   * refusal is counted on both sides).
   */
  send(payload: Payload): boolean {
    const bytes = toBytes(payload);
    const route = this.current();
    this.checkSize(route, bytes.length);
    const result = this.offer(route, bytes);
    if (result === OFFER_FULL) return this.refused(route, 1);
    this.sent(route, 1, result === OFFER_OK_RING);
    return true;
  }

  private offer(route: Route, bytes: Uint8Array) {
    try {
      return route.lane.offer(this.stamp, route.entry.index, this.origin.sequence, bytes, this.prefix);
    } catch (err) {
      // A lane set aside as corrupt: give it up, so the next send takes another.
      if (isBusError(err, 'ERR_SHMBUS_CORRUPT_SEGMENT')) this.routes.drop(route);
      throw err;
    }
  }

  /**
   * Write `payloads[start .. start+count)` and publish them with one store.
   * Returns how many were written, in order, from the first (fewer when the
   * lane had less room; the rest are counted as refused). Every payload is
   * checked before anything is written. A payload longer than one slot is sent
   * as a message of its own, in order.
   */
  sendBatch(payloads: readonly Payload[], start = 0, count = payloads.length - start): number {
    // Payloads that are Uint8Arrays already (the common case) are used as given: no array is built per call.
    let bytes: Uint8Array[] | null = null;
    let maxLength = 0;
    for (let k = 0; k < count; k++) {
      const payload = payloads[start + k];
      let b: Uint8Array;
      if (payload instanceof Uint8Array && bytes === null) {
        b = payload;
      } else {
        if (bytes === null) bytes = (payloads.slice(start, start + k) as Uint8Array[]);
        b = toBytes(payload);
        bytes.push(b);
      }
      if (b.length > maxLength) maxLength = b.length;
    }
    const route = this.current();
    const lane = route.lane;
    this.checkSize(route, maxLength);
    const source = bytes ?? (payloads as readonly Uint8Array[]);
    const first = bytes === null ? start : 0;
    if (this.prefix !== undefined || maxLength > lane.maxPayload) return this.sendEach(route, source, first, count);
    let written: number;
    try {
      written = lane.offerBatch(this.stamp, route.entry.index, this.origin.sequence, source, first, count);
    } catch (err) {
      if (isBusError(err, 'ERR_SHMBUS_CORRUPT_SEGMENT')) this.routes.drop(route);
      throw err;
    }
    if (written > 0) this.sent(route, written, lane.mustRing);
    if (written < count) this.refused(route, count - written);
    return written;
  }

  /** A batch with long messages or an address prefix: one offer each, stopping at the first refusal. */
  private sendEach(route: Route, bytes: readonly Uint8Array[], first: number, count: number): number {
    let ring = false;
    let written = 0;
    for (; written < count; written++) {
      const result = this.offer(route, bytes[first + written]!);
      if (result === OFFER_FULL) break;
      if (result === OFFER_OK_RING) ring = true;
      this.origin.sequence = (this.origin.sequence + 1) >>> 0;
    }
    if (written > 0) {
      addU64(this.origin.counters, INBOX_SENT_OFFSET, written);
      if (ring) ringRoute(route);
    }
    if (written < count) this.refused(route, count - written);
    return written;
  }

  /**
   * Like {@link send}, but when the lane is full wait for room (the consumer
   * wakes this sender when it frees slots of its lane), up to `timeoutMs`.
   * Resolves true when sent, false on timeout (the refusal is counted);
   * rejects with ERR_SHMBUS_ABORTED (a BusAbortError) when `signal` aborts.
   */
  async sendAsync(payload: Payload, options: SendAsyncOptions = {}): Promise<boolean> {
    const timeoutMs = options.timeoutMs ?? 1000;
    if (typeof timeoutMs !== 'number' || !(timeoutMs >= 0)) {
      throw new BusError('ERR_SHMBUS_INVALID_OPTION', `option "timeoutMs" must be a number >= 0; received ${describeValue(timeoutMs)}`);
    }
    const signal = options.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new BusError('ERR_SHMBUS_INVALID_OPTION', `option "signal" must be an AbortSignal; received ${describeValue(signal)}`);
    }
    throwIfAborted(signal, 'send to', this.destination);
    const bytes = toBytes(payload);
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const route = this.current();
      this.checkSize(route, bytes.length);
      const result = this.offer(route, bytes);
      if (result !== OFFER_FULL) {
        route.lane.endSpaceWait();
        this.sent(route, 1, result === OFFER_OK_RING);
        return true;
      }
      const remaining = deadline - performance.now();
      if (remaining <= 0 || signal?.aborted === true) route.lane.endSpaceWait();
      throwIfAborted(signal, 'send to', this.destination);
      if (remaining <= 0) return this.refused(route, 1);
      const prefixLength = this.prefix === undefined ? 0 : this.prefix.length;
      const head = route.lane.prepareSpaceWait(route.lane.slotsFor(bytes.length + prefixLength));
      if (head < 0) continue;
      route.space ??= new FutexSleeper(route.segment.buffer, route.lane.headByteOffset);
      await sleepOrAbort(route.space, Math.min(remaining, SPACE_RECHECK_MS), head, signal);
    }
  }

  /** After publishing `n` frames: advance the sequence, count them, ring the doorbell if we took the bell. */
  private sent(route: Route, n: number, mustRing: boolean): void {
    this.origin.sequence = (this.origin.sequence + n) >>> 0;
    addU64(this.origin.counters, INBOX_SENT_OFFSET, n);
    if (mustRing) ringRoute(route);
  }

  /** Count `n` refused frames on both sides; throw instead if the destination's owner died. */
  private refused(route: Route, n: number): false {
    addU64(this.origin.counters, INBOX_SEND_REFUSED_OFFSET, n);
    route.lane.countRefused(n);
    const now = performance.now();
    if (now - route.lastLivenessCheck > LIVENESS_RECHECK_MS) {
      route.lastLivenessCheck = now;
      if (!isProcessAlive(route.entry.ownerPid, route.entry.ownerStartTime)) {
        if (route.name === RELAY_ENDPOINT_NAME) {
          throw new BusError('ERR_SHMBUS_RELAY_UNAVAILABLE', `the transit relay (pid ${route.entry.ownerPid}) has died and this sender's lane of its inbox is full`);
        }
        throw new BusError('ERR_SHMBUS_DESTINATION_DEAD', `endpoint "${route.name}" (pid ${route.entry.ownerPid}) has died; its full inbox waits for a successor`);
      }
    }
    return false;
  }

  /** Forget the route (the Bus drops every route when it closes). */
  reset(): void {
    this.route = null;
  }
}

/** Sleep on `sleeper` while its word holds `expected`, up to `ms`; resolves early when `signal` aborts. */
function sleepOrAbort(sleeper: FutexSleeper, ms: number, expected: number, signal: AbortSignal | undefined): Promise<void> {
  const slept = sleeper.sleep(ms, expected);
  if (signal === undefined) return slept;
  return new Promise<void>((resolve) => {
    const onAbort = () => resolve();
    signal.addEventListener('abort', onAbort, { once: true });
    void slept.then(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}
