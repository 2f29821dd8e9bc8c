/**
 * Delivery: frames arriving from peer relays (and frames of this host's own
 * apps addressed to this host) written into local inboxes, exactly once.
 *
 * Frames come in runs: consecutive frames of one stream (one source endpoint
 * to one destination, in the source's order), laid out as on the wire — per
 * frame a u32 sequence, a u32 payload length, the payload. A run is written
 * into the relay's lane of the target inbox frame after frame without
 * publishing, then published by one store, bracketed by one delivery intent
 * in the dedup table (dedup.ts, docs/LAYOUT.md §7.18): all of the batch or
 * none of it is delivered, and the dedup entry says which, across a SIGKILL
 * at any instruction.
 *
 * A frame whose sequence is not after the entry's is a duplicate (a resend):
 * settled DUPLICATE, not written. Frames that cannot be written now (target
 * full, or not registered but seen within the grace) are held — the rest of
 * the run copied as it is, FIFO per stream — and retried when the target's
 * consumer frees room (a futex wake) or on a timer; held frames are bounded
 * in count and bytes (back-pressure: the server stops reading peers).
 * Every frame is settled exactly once, in stream order, to the stream's owner
 * (inbound.ts answers the peer with ACKs; outbound.ts releases local frames).
 */
import { MAX_ADDRESS_LENGTH, OUTCOME_DELIVERED, OUTCOME_DUPLICATE, OUTCOME_EXPIRED, OUTCOME_TOO_LARGE, OUTCOME_UNKNOWN_DESTINATION, type Route } from '../src/internal';
import { FRAME_HEADER_LENGTH, FRAME_PAYLOAD_LENGTH_OFFSET, FRAME_SEQUENCE_OFFSET, isSequenceAfter } from './codec';
import type { DedupTable } from './dedup';
import type { RelayEndpoint } from './endpoint';
import { InboundStream, readU32, writeU32, type HeldChunk, type StreamOwner } from './stream';

export interface DeliveryLimits {
  readonly pendingFrames: number;
  readonly pendingBytes: number;
  readonly ttlMs: number;
  /** A frame for a name not registered now nor within this long is answered UNKNOWN_DESTINATION at once; else it waits this long. */
  readonly unknownGraceMs: number;
  /** A full target is polled (once per event-loop turn) this long (µs) before the relay sleeps until its consumer frees room. */
  readonly idleSpinUs?: number;
}

export interface DeliveryCounters {
  delivered: number;
  duplicates: number;
  undeliverable: number;
  tooLarge: number;
  retries: number;
  /** Undeliverable at once: the name was not registered, nor within the grace. */
  unknownAtOnce: number;
}

const RETRY_MIN_MS = 1;
const RETRY_MAX_MS = 50;
const PREFIX_ROOM = 1 + MAX_ADDRESS_LENGTH;

export class Delivery {
  readonly counters: DeliveryCounters = { delivered: 0, duplicates: 0, undeliverable: 0, tooLarge: 0, retries: 0, unknownAtOnce: 0 };
  private readonly waiting = new Set<InboundStream>();
  private pendingFrames = 0;
  private pendingBytes = 0;
  private readonly pendingByHost = new Map<number, number>();
  /** When each destination was last seen registered (ms, performance.now). */
  private readonly lastSeen = new Map<string, number>();
  private readonly startedAt = performance.now();
  private timer: NodeJS.Timeout | null = null;
  private immediate: NodeJS.Immediate | null = null;
  /** How long a full target is polled before the relay sleeps on it (ms), and whether one is polled now. */
  private readonly spinMs: number;
  private spinning = false;
  private retryMs = RETRY_MIN_MS;
  private closed = false;
  /** Where {@link run} stopped: the offset of the first frame it did not settle. */
  private cursor = 0;
  /** Owners that settled frames in the current pass. */
  private readonly touched = new Set<StreamOwner>();

  constructor(
    private readonly endpoint: RelayEndpoint,
    private readonly dedup: DedupTable,
    private readonly limits: DeliveryLimits,
    /** Called with true when a pending bound is reached (stop reading peers), false when pending has halved. */
    private readonly onPressure: (full: boolean) => void,
  ) {
    this.spinMs = (limits.idleSpinUs ?? 0) / 1000;
  }

  get pending(): { frames: number; bytes: number } {
    return { frames: this.pendingFrames, bytes: this.pendingBytes };
  }

  pendingFrom(hostId: number): number {
    return this.pendingByHost.get(hostId) ?? 0;
  }

  get full(): boolean {
    return this.pendingFrames >= this.limits.pendingFrames || this.pendingBytes >= this.limits.pendingBytes;
  }

  /**
   * Deliver the `n` frames of a run of `stream` at `bytes[at ...)` (wire
   * layout), or hold them. Returns the offset just past the run.
   */
  deliverRun(stream: InboundStream, bytes: Uint8Array, at: number, n: number): number {
    let done = 0;
    if (stream.heldFrames === 0) {
      done = this.run(stream, bytes, at, n, 0, true);
    } else {
      this.cursor = at;
    }
    const from = this.cursor;
    let end = from;
    for (let k = done; k < n; k++) end += FRAME_HEADER_LENGTH + readU32(bytes, end + FRAME_PAYLOAD_LENGTH_OFFSET);
    if (done < n) this.hold(stream, bytes, from, end, n - done, 0);
    return end;
  }

  /** Deliver one frame (sequence, payload) of a local stream; `tag` comes back in its settlement. */
  deliverOne(stream: InboundStream, sequence: number, payload: Uint8Array, offset: number, length: number, tag: number): void {
    const frame = new Uint8Array(FRAME_HEADER_LENGTH + length);
    writeU32(frame, FRAME_SEQUENCE_OFFSET, sequence);
    writeU32(frame, FRAME_PAYLOAD_LENGTH_OFFSET, length);
    frame.set(payload.subarray(offset, offset + length), FRAME_HEADER_LENGTH);
    if (stream.heldFrames === 0 && this.run(stream, frame, 0, 1, tag, true) === 1) return;
    this.hold(stream, frame, 0, frame.length, 1, tag);
  }

  /** Forget a stream's held frames without settling them (its connection closed: the sender resends them). */
  dropStream(stream: InboundStream): void {
    if (stream.heldFrames === 0) return;
    for (const chunk of stream.held) this.unpend(stream.sourceHost, chunk.left, chunk.bytes.length - chunk.at);
    stream.held.length = 0;
    stream.heldFrames = 0;
    this.waiting.delete(stream);
    this.relieved();
  }

  /** Send what the settlements of a pass queued. */
  endPass(): void {
    for (const owner of this.touched) owner.flush();
    this.touched.clear();
  }

  /** The stream's route if its target is registered now (cached, checked by one load). */
  private routeOf(stream: InboundStream): Route | null {
    if (stream.destination.charCodeAt(0) === 64) return null;
    const cached = stream.route;
    if (cached !== null && this.endpoint.isCurrent(cached)) return cached;
    stream.route = this.endpoint.routeFor(stream.destination);
    if (stream.route !== null) this.lastSeen.set(stream.destination, performance.now());
    return stream.route;
  }

  private dedupSlot(stream: InboundStream, firstSequence: number): number {
    if (stream.dedupEpoch !== this.dedup.epoch) {
      stream.dedupSlot = this.dedup.slotFor(stream.sourceHost, stream.stamp.sourceIndex, stream.stamp.sourceGeneration, stream.destination, firstSequence);
      stream.dedupEpoch = this.dedup.epoch;
    }
    return stream.dedupSlot;
  }

  private settle(stream: InboundStream, count: number, outcome: number, tag: number): void {
    stream.settledCount += count;
    this.touched.add(stream.owner);
    stream.owner.settled(stream, count, outcome, tag);
  }

  /**
   * Settle as many of the `n` frames at `bytes[at ...)` as can be now, in
   * order, and return how many; {@link cursor} is left at the first frame
   * not settled.
   */
  private run(stream: InboundStream, bytes: Uint8Array, at: number, n: number, tag: number, arriving = false): number {
    const route = this.routeOf(stream);
    if (route === null) return this.runMissing(stream, bytes, at, n, tag, arriving);
    const lane = route.lane;
    const slot = this.dedupSlot(stream, readU32(bytes, at + FRAME_SEQUENCE_OFFSET));
    let last = this.dedup.last(slot);
    const prefix = stream.prefix;
    const destinationIndex = route.entry.index;
    let batched = 0;
    let batchLast = last;
    let tail = lane.publishedTail;
    let settled = 0;
    let offset = at;
    for (; settled + batched < n; ) {
      const sequence = readU32(bytes, offset + FRAME_SEQUENCE_OFFSET);
      const length = readU32(bytes, offset + FRAME_PAYLOAD_LENGTH_OFFSET);
      if (!isSequenceAfter(sequence, last)) {
        settled += this.commit(stream, route, slot, batched, batchLast, tail, tag);
        batched = 0;
        this.counters.duplicates++;
        this.settle(stream, 1, OUTCOME_DUPLICATE, tag);
        settled++;
        offset += FRAME_HEADER_LENGTH + length;
        continue;
      }
      if (prefix.length + length > lane.maxMessage) {
        settled += this.commit(stream, route, slot, batched, batchLast, tail, tag);
        batched = 0;
        this.counters.tooLarge++;
        this.counters.undeliverable++;
        this.settle(stream, 1, OUTCOME_TOO_LARGE, tag);
        settled++;
        offset += FRAME_HEADER_LENGTH + length;
        continue;
      }
      let next: number;
      try {
        next = lane.prepareFrom(stream.stamp, destinationIndex, sequence, prefix, bytes, offset + FRAME_HEADER_LENGTH, length);
      } catch (err) {
        lane.dropPrepared(); // a corrupt lane (set aside): nothing of this batch is published, nothing recorded
        throw err;
      }
      if (next < 0) break; // full: what is batched is published below, the rest is held
      tail = next;
      batched++;
      batchLast = sequence;
      last = sequence;
      offset += FRAME_HEADER_LENGTH + length;
    }
    settled += this.commit(stream, route, slot, batched, batchLast, tail, tag);
    this.cursor = offset;
    this.lastSeen.set(stream.destination, performance.now());
    if (settled < n) this.whenFull(stream, bytes, offset);
    else stream.fullSince = 0;
    return settled;
  }

  /**
   * Frames for a target that is not registered: those delivered before it
   * went (resends) are DUPLICATE; the rest wait while the name was seen within
   * the grace (or the relay is younger than it), else are UNKNOWN_DESTINATION
   * at once. ("@relay" and other reserved names are never application
   * endpoints: no grace.)
   */
  private runMissing(stream: InboundStream, bytes: Uint8Array, at: number, n: number, tag: number, arriving: boolean): number {
    const slot = this.dedup.find(stream.sourceHost, stream.stamp.sourceIndex, stream.stamp.sourceGeneration, stream.destination);
    const last = slot < 0 ? -1 : this.dedup.last(slot);
    const reserved = stream.destination.charCodeAt(0) === 64;
    const seen = Math.max(this.startedAt, this.lastSeen.get(stream.destination) ?? -Infinity);
    const unknown = reserved || performance.now() - seen >= this.limits.unknownGraceMs;
    let settled = 0;
    let offset = at;
    while (settled < n) {
      const sequence = readU32(bytes, offset + FRAME_SEQUENCE_OFFSET);
      if (slot >= 0 && !isSequenceAfter(sequence, last)) {
        this.counters.duplicates++;
        this.settle(stream, 1, OUTCOME_DUPLICATE, tag);
      } else if (unknown) {
        this.counters.undeliverable++;
        if (arriving) this.counters.unknownAtOnce++;
        this.settle(stream, 1, OUTCOME_UNKNOWN_DESTINATION, tag);
      } else {
        break;
      }
      settled++;
      offset += FRAME_HEADER_LENGTH + readU32(bytes, offset + FRAME_PAYLOAD_LENGTH_OFFSET);
    }
    this.cursor = offset;
    return settled;
  }

  /**
   * Publish the `count` frames prepared in the target lane (up to position
   * `tail`): intent, one store, dedup entry, intent closed; then settle them.
   */
  private commit(stream: InboundStream, route: Route, slot: number, count: number, lastSequence: number, tail: number, tag: number): number {
    if (count === 0) return 0;
    const lane = route.lane;
    const slots = (tail - lane.publishedTail) >>> 0;
    this.dedup.openIntent(slot, lastSequence, route.entry.index, route.entry.generation, route.segment.epoch, lane.lane, tail, slots);
    const mustRing = lane.publishPrepared();
    this.dedup.closeIntent(slot, lastSequence);
    if (mustRing) this.endpoint.ring(route);
    this.counters.delivered += count;
    this.settle(stream, count, OUTCOME_DELIVERED, tag);
    return count;
  }

  /**
   * The target is full: poll it on the next event-loop turns while the
   * spin lasts (its consumer usually frees room within microseconds), then
   * sleep on the lane's head until the consumer wakes us.
   */
  private whenFull(stream: InboundStream, bytes: Uint8Array, offset: number): void {
    const now = performance.now();
    if (stream.fullSince === 0) stream.fullSince = now;
    if (now - stream.fullSince < this.spinMs) {
      this.spinning = true;
      return;
    }
    if (!stream.waitingForRoom) this.waitForRoom(stream, bytes, offset);
  }

  private waitForRoom(stream: InboundStream, bytes: Uint8Array, offset: number): void {
    const length = readU32(bytes, offset + FRAME_PAYLOAD_LENGTH_OFFSET) + PREFIX_ROOM;
    stream.waitingForRoom = true;
    const armed = this.endpoint.waitForRoom(stream.destination, length, RETRY_MAX_MS, () => {
      stream.waitingForRoom = false;
      this.retrySoon();
    });
    if (!armed) stream.waitingForRoom = false;
  }

  private hold(stream: InboundStream, bytes: Uint8Array, from: number, end: number, frames: number, tag: number): void {
    const copy = Uint8Array.prototype.slice.call(bytes, from, end) as Uint8Array;
    stream.held.push({ bytes: copy, at: 0, left: frames, tag, since: performance.now() });
    stream.heldFrames += frames;
    this.pendingFrames += frames;
    this.pendingBytes += copy.length;
    this.pendingByHost.set(stream.sourceHost, (this.pendingByHost.get(stream.sourceHost) ?? 0) + frames);
    this.waiting.add(stream);
    if (this.full) this.onPressure(true);
    if (this.spinning) this.retrySoon();
    else this.schedule(RETRY_MIN_MS);
  }

  private unpend(host: number, frames: number, bytes: number): void {
    this.pendingFrames -= frames;
    this.pendingBytes -= bytes;
    this.pendingByHost.set(host, (this.pendingByHost.get(host) ?? frames) - frames);
  }

  private relieved(): void {
    if (this.pendingFrames * 2 <= this.limits.pendingFrames && this.pendingBytes * 2 <= this.limits.pendingBytes) this.onPressure(false);
  }

  /** Retry on the next turn of the event loop (a consumer freed room): not a timer, whose least delay is 1 ms. */
  private retrySoon(): void {
    if (this.closed || this.waiting.size === 0 || this.immediate !== null) return;
    this.immediate = setImmediate(() => {
      this.immediate = null;
      this.retry();
    });
  }

  private schedule(ms: number): void {
    if (this.timer !== null || this.closed) return;
    this.retryMs = ms;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.retry();
    }, ms);
  }

  /** Retry every held stream in order; past the TTL (or the grace, for a target still missing) a frame is undeliverable. */
  retry(): void {
    let progressed = false;
    this.spinning = false;
    for (const stream of this.waiting) {
      while (stream.held.length > 0) {
        const chunk = stream.held[0]!;
        this.counters.retries++;
        const start = chunk.at;
        const done = this.run(stream, chunk.bytes, chunk.at, chunk.left, chunk.tag);
        chunk.at = this.cursor;
        if (done > 0) {
          progressed = true;
          this.release(stream, chunk, done, chunk.at - start);
          if (chunk.left > 0) continue;
          stream.held.shift();
          continue;
        }
        // Nothing could be written. A missing target is answered by run() once its grace is over;
        // a full one: has the head frame waited for the TTL?
        if (stream.route === null || performance.now() - chunk.since < this.limits.ttlMs) break;
        const length = FRAME_HEADER_LENGTH + readU32(chunk.bytes, chunk.at + FRAME_PAYLOAD_LENGTH_OFFSET);
        chunk.at += length;
        this.counters.undeliverable++;
        this.release(stream, chunk, 1, length);
        this.settle(stream, 1, OUTCOME_EXPIRED, chunk.tag);
        progressed = true;
        if (chunk.left === 0) stream.held.shift();
      }
      if (stream.held.length === 0) this.waiting.delete(stream);
    }
    this.endPass();
    this.relieved();
    if (this.waiting.size === 0) return;
    if (this.spinning) this.retrySoon();
    else this.schedule(progressed ? RETRY_MIN_MS : Math.min(Math.max(this.retryMs, RETRY_MIN_MS) * 2, RETRY_MAX_MS));
  }

  private release(stream: InboundStream, chunk: HeldChunk, frames: number, bytes: number): void {
    chunk.left -= frames;
    stream.heldFrames -= frames;
    this.unpend(stream.sourceHost, frames, bytes);
  }

  /** Stop retrying. Held frames are not settled: their senders keep them and resend after a restart. */
  close(): number {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.immediate !== null) clearImmediate(this.immediate);
    this.immediate = null;
    return this.pendingFrames;
  }
}
