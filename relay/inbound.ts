/**
 * Inbound delivery: frames from peer relays (and from this host's own apps
 * addressed to this host) into local inboxes.
 *
 * Per (source, destination) FIFO is kept by one queue per pair: while a pair
 * has frames waiting (target missing or full), newer frames of that pair wait
 * behind them. Waiting frames are copies, bounded in count and bytes; when a
 * bound is reached the server stops reading from peers (TCP flow control
 * carries the back-pressure to the sending relay, and from its ring to the
 * sending apps). A frame that waits longer than the TTL is reported
 * undeliverable to its sender — never dropped silently.
 *
 * Duplicates (frames resent after a lost ack) are recognised by the dedup
 * table at delivery time and acked as DUPLICATE.
 */
import { DELIVERED, TARGET_FULL, TARGET_TOO_SMALL, TARGET_UNKNOWN, type RelayEndpoint } from './endpoint';
import type { DedupTable } from './dedup';
import { ACK_DELIVERED, ACK_DUPLICATE, ACK_EXPIRED, ACK_TOO_LARGE, ACK_UNKNOWN_DESTINATION } from './protocol';
import { MAX_ADDRESS_LENGTH } from '../src/layout';

/** Called once per frame with its final ACK status. */
export type AckCallback = (status: number) => void;

export interface InboundFrame {
  readonly sourceHost: number;
  /** `name@host` of the source endpoint. */
  readonly sourceAddress: string;
  readonly sourceIndex: number;
  readonly sourceGeneration: number;
  readonly sequence: number;
  /** Local endpoint name. */
  readonly destination: string;
  readonly payload: Uint8Array;
}

interface Waiting {
  readonly frame: InboundFrame;
  readonly ack: AckCallback;
  readonly since: number;
  /** Why it waits: the target was missing (true) or full (false) at the last try. */
  unknown: boolean;
}

export interface InboundLimits {
  readonly pendingFrames: number;
  readonly pendingBytes: number;
  readonly ttlMs: number;
  /** A frame for an endpoint that is not registered is reported UNKNOWN_DESTINATION after this (ms). */
  readonly unknownTargetMs: number;
}

export interface InboundCounters {
  delivered: number;
  duplicates: number;
  undeliverable: number;
  tooLarge: number;
  retries: number;
}

const RETRY_MIN_MS = 1;
const RETRY_MAX_MS = 50;
/** Room for a frame's address prefix, at most (a u8 length and up to MAX_ADDRESS_LENGTH characters). */
const PREFIX_ROOM = 1 + MAX_ADDRESS_LENGTH;

export class Inbound {
  readonly counters: InboundCounters = { delivered: 0, duplicates: 0, undeliverable: 0, tooLarge: 0, retries: 0 };
  private readonly queues = new Map<string, Waiting[]>();
  private pendingFrames = 0;
  private pendingBytes = 0;
  /** Frames pending per source host id. */
  private readonly pendingByHost = new Map<number, number>();
  private timer: NodeJS.Timeout | null = null;
  /** Targets whose lane this relay waits on for room (the consumer's wake calls retrySoon). */
  private readonly waitingForRoom = new Set<string>();
  private retryMs = RETRY_MIN_MS;
  private closed = false;

  /**
   * @param onPressure called with true when a pending bound is reached (stop
   *   reading peers) and false when pending has fallen to half (read again).
   */
  constructor(
    private readonly endpoint: RelayEndpoint,
    private readonly dedup: DedupTable,
    private readonly limits: InboundLimits,
    private readonly onPressure: (full: boolean) => void,
  ) {}

  get pending(): { frames: number; bytes: number } {
    return { frames: this.pendingFrames, bytes: this.pendingBytes };
  }

  /** Frames pending from source host `hostId`. */
  pendingFrom(hostId: number): number {
    return this.pendingByHost.get(hostId) ?? 0;
  }

  /** True while pending is at a bound: callers should stop accepting more. */
  get full(): boolean {
    return this.pendingFrames >= this.limits.pendingFrames || this.pendingBytes >= this.limits.pendingBytes;
  }

  /**
   * Deliver `frame` or hold it. `payloadIsTransient`: the payload is a view
   * into a buffer that will be reused, so a held frame must copy it.
   */
  submit(frame: InboundFrame, ack: AckCallback, payloadIsTransient: boolean): void {
    if (frame.destination.startsWith('@')) {
      // "@relay" and other reserved names are not application endpoints: never deliver to them.
      this.counters.undeliverable++;
      ack(ACK_UNKNOWN_DESTINATION);
      return;
    }
    const key = `${frame.sourceHost}:${frame.sourceIndex}:${frame.sourceGeneration}>${frame.destination}`;
    const queue = this.queues.get(key);
    if (queue === undefined) {
      const result = this.tryDeliver(key, frame);
      if (result >= 0) {
        ack(result);
        return;
      }
    }
    const held: InboundFrame = payloadIsTransient ? { ...frame, payload: Uint8Array.prototype.slice.call(frame.payload) } : frame;
    const waiting: Waiting = { frame: held, ack, since: performance.now(), unknown: !this.endpoint.hasTarget(frame.destination) };
    if (queue === undefined) this.queues.set(key, [waiting]);
    else queue.push(waiting);
    this.pendingFrames++;
    this.pendingBytes += held.payload.length;
    this.pendingByHost.set(held.sourceHost, (this.pendingByHost.get(held.sourceHost) ?? 0) + 1);
    if (this.full) this.onPressure(true);
    this.schedule(RETRY_MIN_MS);
  }

  /** Returns the ACK status if the frame is done with, or -1 if it must wait. */
  private tryDeliver(key: string, frame: InboundFrame): number {
    const slot = this.dedup.check(key, frame.sourceHost, frame.sourceIndex, frame.sourceGeneration, frame.destination, frame.sequence);
    if (slot < 0) {
      this.counters.duplicates++;
      return ACK_DUPLICATE;
    }
    // The delivery is recorded in the dedup table around its publish (an intent, see dedup.ts).
    const result = this.endpoint.deliver(frame.destination, frame.sourceAddress, frame.sourceHost, frame.sourceIndex, frame.sourceGeneration, frame.sequence, frame.payload, { dedup: this.dedup, entry: slot });
    switch (result) {
      case DELIVERED:
        this.counters.delivered++;
        return ACK_DELIVERED;
      case TARGET_TOO_SMALL:
        this.counters.tooLarge++;
        return ACK_TOO_LARGE;
      case TARGET_FULL:
      case TARGET_UNKNOWN:
        return -1;
    }
    return -1;
  }

  /** Retry at once (a full target's consumer made room). */
  private retrySoon(): void {
    if (this.closed || this.queues.size === 0) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.timer !== null || this.closed) return;
    this.retryMs = ms;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.retry();
    }, ms);
  }

  /** Retry every waiting queue in order; expire frames past the TTL. */
  retry(): void {
    const now = performance.now();
    let progressed = false;
    for (const [key, queue] of this.queues) {
      while (queue.length > 0) {
        const head = queue[0]!;
        this.counters.retries++;
        const result = this.tryDeliver(key, head.frame);
        if (result < 0) {
          head.unknown = !this.endpoint.hasTarget(head.frame.destination);
          // A full target waits up to the TTL; one that is not registered only for the (shorter) grace.
          if (now - head.since < (head.unknown ? this.limits.unknownTargetMs : this.limits.ttlMs)) {
            // A full target: its consumer wakes us when it frees slots of our lane (no polling timer).
            if (!head.unknown && !this.waitingForRoom.has(head.frame.destination)) {
              const target = head.frame.destination;
              this.waitingForRoom.add(target);
              const armed = this.endpoint.waitForRoom(target, head.frame.payload.length + PREFIX_ROOM, RETRY_MAX_MS, () => {
                this.waitingForRoom.delete(target);
                this.retrySoon();
              });
              if (!armed) this.waitingForRoom.delete(target);
            }
            break;
          }
          this.counters.undeliverable++;
          this.take(queue);
          head.ack(this.endpoint.hasTarget(head.frame.destination) ? ACK_EXPIRED : ACK_UNKNOWN_DESTINATION);
          progressed = true;
          continue;
        }
        this.take(queue);
        head.ack(result);
        progressed = true;
      }
      if (queue.length === 0) this.queues.delete(key);
    }
    if (this.pendingFrames * 2 <= this.limits.pendingFrames && this.pendingBytes * 2 <= this.limits.pendingBytes) this.onPressure(false);
    if (this.queues.size > 0) this.schedule(progressed ? RETRY_MIN_MS : Math.min(this.retryMs * 2, RETRY_MAX_MS));
  }

  private take(queue: Waiting[]): void {
    const w = queue.shift()!;
    this.pendingFrames--;
    this.pendingBytes -= w.frame.payload.length;
    this.pendingByHost.set(w.frame.sourceHost, (this.pendingByHost.get(w.frame.sourceHost) ?? 1) - 1);
  }

  /** Stop retrying. Waiting frames are not acked: their senders keep them and resend after a restart. */
  close(): number {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    return this.pendingFrames;
  }
}
