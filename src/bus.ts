/**
 * Bus: the public API. One Bus is one named endpoint with its own inbox.
 *
 * Sending resolves the destination's inbox by name through the namespace
 * directory once, then writes straight into it (no system call unless the
 * receiver is parked). Receiving reads the own inbox; the event-driven forms
 * park on a futex doorbell when the inbox is empty.
 */
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { BusError, isBusError } from './errors';
import { Directory, type EntryInfo } from './directory';
import { FutexSleeper, ring as ringDoorbell, udpDoorbellErrors } from './doorbell';
import {
  DOORBELL_FUTEX,
  FRAME_FLAG_NOTICE,
  FRAME_FLAG_OUTBOUND,
  MAX_ADDRESS_LENGTH,
  NOTICE_ADDRESS_OFFSET,
  NOTICE_KIND_OFFSET,
  NOTICE_REASON_EXPIRED,
  NOTICE_REASON_TOO_LARGE,
  NOTICE_REASON_UNKNOWN_DESTINATION,
  NOTICE_REASON_UNKNOWN_HOST,
  NOTICE_REASON_OFFSET,
  NOTICE_SEQUENCE_OFFSET,
  NOTICE_UNDELIVERABLE,
  RELAY_ENDPOINT_NAME,
  INBOX_DISCARDED_OFFSET,
  INBOX_HEADER_LENGTH,
  INBOX_SEND_REFUSED_OFFSET,
  INBOX_SENT_OFFSET,
  NO_INDEX,
  SEGMENT_KIND_INBOX,
  inboxFileName,
  inboxSegmentLength,
} from './layout';
import { resolveBusOptions, validateName, validateNamespace, type BusOptions, type ResolvedBusOptions } from './options';
import { FrameRing, FrameView, OFFER_FULL, OFFER_OK, OFFER_OK_RING, addU64, encodeAddressPrefix, readInboxCounters, type FrameHandler, type InboxCounters, type OfferResult, type ProducerStamp } from './ring';
import { Routes, type Route } from './routes';
import { Segment, isProcessAlive, unlinkQuiet } from './segment';

/** A received frame that owns its payload (a copy taken from the slot). */
export interface Frame {
  /** Name of the sending endpoint (`name` locally; `name@host` for frames that came through a relay). */
  readonly source: string;
  /** Per-source sequence number (u32, wraps). */
  readonly sequence: number;
  /** Frame flags (see FRAME_FLAG_* in layout). */
  readonly flags: number;
  readonly payload: Uint8Array;
}

/** Counters of one endpoint (monotonic since the inbox was created) and its inbox's state. */
export interface BusStats extends InboxCounters {
  readonly name: string;
  readonly namespace: string;
  readonly slotSize: number;
  readonly capacity: number;
  readonly maxPayload: number;
  /** Frames waiting in the inbox (claimed, not yet consumed). */
  readonly depth: number;
  readonly parked: boolean;
  /** UDP doorbell datagrams this process could not send. */
  readonly doorbellErrors: number;
}

/** Options of {@link Bus.sendToLocalAsync}. */
export interface SendAsyncOptions {
  /** Give up (resolve false) after this long. Default 1000 ms. */
  timeoutMs?: number;
}

/** While the inbox holds a claimed, uncommitted slot, a parked consumer re-polls this often. */
const IN_FLIGHT_RECHECK_MS = 10;
/** Frames handled per turn of the event loop by the event-driven receivers. */
const DRAIN_BATCH = 256;
const LIVENESS_RECHECK_MS = 100;

const openBuses = new Set<Bus>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A process that exits without closing its buses still unregisters them (not on SIGKILL:
  // that is what takeover and `shmbus gc` are for).
  process.on('exit', () => {
    for (const bus of [...openBuses]) bus.closeSync();
  });
}

export class Bus extends EventEmitter {
  readonly options: ResolvedBusOptions;
  private readonly directory: Directory;
  private readonly entry: EntryInfo;
  private readonly segment: Segment;
  private readonly ring: FrameRing;
  private readonly stamp: ProducerStamp;
  private readonly routes: Routes;
  private readonly names = new Map<number, { generation: number; name: string }>();
  private readonly outboundStamp: ProducerStamp;
  private readonly prefixes = new Map<string, Uint8Array>();
  private readonly sleeper: FutexSleeper;
  private sequence = 0;
  private closed = false;
  private receiving = false;

  private constructor(options: ResolvedBusOptions, directory: Directory, entry: EntryInfo, segment: Segment) {
    super();
    this.options = options;
    this.directory = directory;
    this.entry = entry;
    this.segment = segment;
    this.ring = new FrameRing(segment.buffer);
    this.ring.attachConsumer({ reclaimTimeoutMs: options.reclaimTimeoutMs, isAlive: (pid) => isProcessAlive(pid) });
    this.stamp = { sourceIndex: entry.index, sourceGeneration: entry.generation, sourceHost: 0, flags: 0 };
    this.outboundStamp = { ...this.stamp, flags: FRAME_FLAG_OUTBOUND };
    this.sleeper = new FutexSleeper(segment.buffer);
    this.routes = new Routes(directory, options.dir, options.namespace);
    this.on('newListener', (event) => {
      if (event === 'frame') queueMicrotask(() => this.startReceiving());
    });
  }

  /**
   * Register endpoint `name` in its namespace and create (or take over) its
   * inbox. Throws BusError: ERR_SHMBUS_INVALID_OPTION, ERR_SHMBUS_NAME_IN_USE,
   * ERR_SHMBUS_DIRECTORY_FULL, ERR_SHMBUS_NOT_A_SEGMENT,
   * ERR_SHMBUS_LAYOUT_MISMATCH, ERR_SHMBUS_CORRUPT_SEGMENT, ERR_SHMBUS_SYSTEM.
   */
  static async open(options: BusOptions): Promise<Bus> {
    return Bus.openSync(options);
  }

  /** Synchronous form of {@link open}. */
  static openSync(options: BusOptions): Bus {
    const resolved = resolveBusOptions(options);
    const directory = Directory.open({
      dir: resolved.dir,
      namespace: resolved.namespace,
      entryCount: resolved.directoryEntries,
      mode: resolved.mode,
      lockTimeoutMs: resolved.lockTimeoutMs,
    });
    let segment: Segment | null = null;
    try {
      const entry = directory.register(
        { name: resolved.name, flags: 0, doorbellKind: DOORBELL_FUTEX, doorbellPort: 0, slotSize: resolved.slotSize, capacity: resolved.capacity },
        () => {
          segment = openInbox(resolved);
        },
      );
      const bus = new Bus(resolved, directory, entry, segment!);
      openBuses.add(bus);
      installExitHook();
      return bus;
    } catch (err) {
      (segment as Segment | null)?.unmap();
      directory.close();
      throw err;
    }
  }

  get name(): string {
    return this.options.name;
  }

  get namespace(): string {
    return this.options.namespace;
  }

  /** Largest payload the own inbox accepts (slotSize - 32). */
  get maxPayload(): number {
    return this.ring.maxPayload;
  }

  /** This endpoint's directory index and generation (its identity in frame headers). */
  get identity(): { index: number; generation: number } {
    return { index: this.entry.index, generation: this.entry.generation };
  }

  get isClosed(): boolean {
    return this.closed;
  }

  // -------------------------------------------------------------------------
  // Sending
  // -------------------------------------------------------------------------

  /**
   * Write one frame into the inbox of local endpoint `destination`. Returns
   * true when it is committed, false when the inbox is full (nothing written;
   * the refusal is counted on both sides). Throws ERR_SHMBUS_UNKNOWN_DESTINATION,
   * ERR_SHMBUS_FRAME_TOO_LARGE, ERR_SHMBUS_CLOSED, and ERR_SHMBUS_DESTINATION_DEAD
   * when the inbox is full and its owner has died. (Frames sent to a dead
   * owner's inbox while it has room wait there for a successor that takes the
   * name over; `shmbus stat` shows such an endpoint as DEAD.)
   */
  sendToLocal(destination: string, payload: Uint8Array): boolean {
    const route = this.route(destination);
    if (payload.length > route.ring.maxPayload) throw this.tooLarge(route, payload.length);
    const result = route.ring.offer(this.stamp, route.entry.index, this.sequence, payload);
    if (result === OFFER_FULL) return this.refused(route, 1);
    return this.sent(route, result, 1);
  }

  /**
   * Write `payloads[start .. start+count)` with one claim. Returns how many
   * were written, in order, from the first (fewer than asked when the inbox
   * had less room; the rest are counted as refused).
   */
  sendToLocalBatch(destination: string, payloads: readonly Uint8Array[], start = 0, count = payloads.length - start): number {
    const route = this.route(destination);
    const ring = route.ring;
    for (let k = 0; k < count; k++) {
      const length = payloads[start + k]!.length;
      if (length > ring.maxPayload) throw this.tooLarge(route, length);
    }
    const claimed = ring.claimBatch(count);
    if (claimed === 0) {
      this.refused(route, count);
      return 0;
    }
    const first = ring.batchPosition;
    for (let k = 0; k < claimed; k++) {
      ring.write((first + k) | 0, this.stamp, route.entry.index, (this.sequence + k) >>> 0, payloads[start + k]!);
      ring.commitQuiet((first + k) | 0);
    }
    this.sent(route, ring.takeBell() ? OFFER_OK_RING : OFFER_OK, claimed);
    if (claimed < count) this.refused(route, count - claimed);
    return claimed;
  }

  /**
   * Like {@link sendToLocal}, but when the inbox is full wait for room, up to
   * `timeoutMs` (default 1000). Resolves true when sent, false on timeout (the
   * refusal is counted). Room is polled with a backoff from one event-loop
   * turn up to 5 ms.
   */
  async sendToLocalAsync(destination: string, payload: Uint8Array, options: SendAsyncOptions = {}): Promise<boolean> {
    const timeoutMs = options.timeoutMs ?? 1000;
    if (typeof timeoutMs !== 'number' || !(timeoutMs >= 0)) {
      throw new BusError('ERR_SHMBUS_INVALID_OPTION', `option "timeoutMs" must be a number >= 0; received ${String(timeoutMs)}`);
    }
    const route = this.route(destination);
    if (payload.length > route.ring.maxPayload) throw this.tooLarge(route, payload.length);
    const deadline = performance.now() + timeoutMs;
    let delayMs = 0;
    for (;;) {
      const result = route.ring.offer(this.stamp, route.entry.index, this.sequence, payload);
      if (result !== OFFER_FULL) return this.sent(route, result, 1);
      const remaining = deadline - performance.now();
      if (remaining <= 0) return this.refused(route, 1);
      if (delayMs === 0) await yieldToLoop();
      else await new Promise((resolve) => setTimeout(resolve, Math.min(delayMs, remaining)));
      delayMs = delayMs === 0 ? 1 : Math.min(delayMs * 2, 5);
      this.assertOpen();
      // The destination may have gone (or been replaced) while we waited.
      if (this.route(destination) !== route) return this.sendToLocalAsync(destination, payload, { timeoutMs: Math.max(0, deadline - performance.now()) });
    }
  }

  /** Count `n` refused frames on both sides; throw instead if the destination's owner died. */
  /**
   * Send to `address`: `name` (this host, same as {@link sendToLocal}) or
   * `name@host` (another host, through the transit relay, same as
   * {@link sendToRemote}). Same back-pressure contract: false = not sent.
   */
  send(address: string, payload: Uint8Array): boolean {
    if (typeof address === 'string') {
      // A remote address sent to before: its encoded prefix is cached under the whole address.
      const prefix = this.prefixes.get(address);
      if (prefix !== undefined) return this.sendThroughRelay(address, prefix, payload);
      const at = address.indexOf('@');
      if (at >= 0) return this.sendToRemote(address.slice(at + 1), address.slice(0, at), payload);
    }
    return this.sendToLocal(address, payload);
  }

  /**
   * Send to endpoint `name` on `host` through this namespace's transit relay:
   * the frame goes into the relay's inbox (shared memory) and the relay's UDP
   * doorbell is rung if it sleeps. Returns false when the relay's inbox is full
   * (nothing written; counted). Throws ERR_SHMBUS_RELAY_UNAVAILABLE (no relay,
   * or a dead one whose inbox is full), ERR_SHMBUS_FRAME_TOO_LARGE,
   * ERR_SHMBUS_INVALID_OPTION (malformed name or host), ERR_SHMBUS_CLOSED.
   * Frames written while the relay is down wait in its inbox for its restart.
   * Delivery failures on the far side come back as notice frames
   * ({@link parseNotice}).
   */
  sendToRemote(host: string, name: string, payload: Uint8Array): boolean {
    const address = `${name}@${host}`;
    let prefix = this.prefixes.get(address);
    if (prefix === undefined) {
      validateName(name, 'name');
      validateNamespace(host, 'host');
      prefix = encodeAddressPrefix(address);
      this.prefixes.set(address, prefix);
    }
    return this.sendThroughRelay(address, prefix, payload);
  }

  /** Write one outbound frame (address prefix + payload) into the relay's inbox. */
  private sendThroughRelay(address: string, prefix: Uint8Array, payload: Uint8Array): boolean {
    const route = this.relayRoute();
    const ring = route.ring;
    if (payload.length + prefix.length > ring.maxPayload) {
      throw new BusError('ERR_SHMBUS_FRAME_TOO_LARGE', `payload of ${payload.length} bytes to ${address} does not fit the relay's inbox (at most ${ring.maxPayload - prefix.length} for this address)`);
    }
    const position = ring.claim();
    if (position === -1) return this.refused(route, 1);
    ring.write(position, this.outboundStamp, route.entry.index, this.sequence, payload, prefix);
    return this.sent(route, ring.commit(position), 1);
  }

  /** After a successful commit of `n` frames: advance the sequence, count them, ring the doorbell if we took it. */
  private sent(route: Route, result: OfferResult, n: number): true {
    this.sequence = (this.sequence + n) >>> 0;
    addU64(this.segment.u32, INBOX_SENT_OFFSET, n);
    if (result === OFFER_OK_RING) ringDoorbell(route.entry.doorbellKind, route.segment.buffer, route.entry.doorbellPort);
    return true;
  }

  private relayRoute(): Route {
    try {
      return this.route(RELAY_ENDPOINT_NAME);
    } catch (err) {
      if (isBusError(err, 'ERR_SHMBUS_UNKNOWN_DESTINATION')) {
        throw new BusError('ERR_SHMBUS_RELAY_UNAVAILABLE', `no transit relay is running for namespace "${this.options.namespace}" (start transit-server for this host)`, { cause: err });
      }
      throw err;
    }
  }

  /** Count `n` refused frames on both sides; throw instead if the destination's owner died. */
  private refused(route: Route, n: number): false {
    addU64(this.segment.u32, INBOX_SEND_REFUSED_OFFSET, n);
    route.ring.countRefused(n);
    const now = performance.now();
    if (now - route.lastLivenessCheck > LIVENESS_RECHECK_MS) {
      route.lastLivenessCheck = now;
      if (!isProcessAlive(route.entry.ownerPid, route.entry.ownerStartTime)) {
        if (route.name === RELAY_ENDPOINT_NAME) {
          throw new BusError('ERR_SHMBUS_RELAY_UNAVAILABLE', `the transit relay of namespace "${this.options.namespace}" (pid ${route.entry.ownerPid}) has died and its inbox is full`);
        }
        throw new BusError('ERR_SHMBUS_DESTINATION_DEAD', `endpoint "${route.name}" (pid ${route.entry.ownerPid}) has died; its full inbox waits for a successor`);
      }
    }
    return false;
  }

  private tooLarge(route: Route, length: number): BusError {
    return new BusError('ERR_SHMBUS_FRAME_TOO_LARGE', `payload of ${length} bytes does not fit the inbox of "${route.name}" (at most ${route.ring.maxPayload})`);
  }

  /** The route to `destination`, re-resolved if its directory entry changed. */
  private route(destination: string): Route {
    const route = this.routes.get(destination);
    if (route !== null) return route;
    this.assertOpen();
    return this.routes.resolve(destination);
  }

  // -------------------------------------------------------------------------
  // Receiving
  // -------------------------------------------------------------------------

  /** Take the next frame from the own inbox (a copy), or null if it is empty. Never blocks. */
  recvFromLocal(): Frame | null {
    this.assertOpen();
    let frame: Frame | null = null;
    this.ring.poll((view) => {
      frame = this.toFrame(view);
    }, 1);
    return frame;
  }

  /**
   * Zero-copy receive: hand up to `limit` frames to `handler` as a reused
   * {@link FrameView}, valid only during the call (the slot is released when the
   * handler returns). Returns how many frames were handled.
   */
  recvBatch(handler: FrameHandler, limit = DRAIN_BATCH): number {
    this.assertOpen();
    return this.ring.poll(handler, limit);
  }

  /** The source endpoint's name of a frame seen through {@link recvBatch}. */
  sourceName(view: FrameView): string {
    if (view.addressLength !== 0) return view.address;
    return this.nameOf(view.sourceIndex, view.sourceGeneration);
  }

  private nameOf(index: number, generation: number): string {
    if (index === NO_INDEX) return '';
    const known = this.names.get(index);
    if (known !== undefined && known.generation === generation) return known.name;
    const name = this.directory.nameAt(index, generation);
    if (name !== null) {
      this.names.set(index, { generation, name });
      return name;
    }
    // The source closed and its directory entry has been reused since it sent.
    return `#${index}.${generation}`;
  }

  private toFrame(view: FrameView): Frame {
    return { source: this.sourceName(view), sequence: view.sequence, flags: view.flags, payload: view.copyPayload() };
  }

  /**
   * Resolve when the inbox may hold a frame: at once if one is there, else
   * after parking until a producer rings (or a claimed slot needs a re-poll,
   * or the bus closes).
   */
  private async waitReadable(): Promise<void> {
    const ring = this.ring;
    if (this.closed || ring.hasFrame()) return;
    if (!ring.prepareToPark()) return;
    const inFlight = ring.inFlight();
    try {
      await this.sleeper.sleep(inFlight ? IN_FLIGHT_RECHECK_MS : -1);
    } finally {
      if (!this.closed) {
        ring.unpark();
        // Woken by the timeout while a slot was claimed: the next poll must check whether it is stuck.
        if (inFlight) ring.checkStuckNext();
      }
    }
  }

  private startReceiving(): void {
    if (this.receiving || this.closed || this.listenerCount('frame') === 0) return;
    this.receiving = true;
    void this.receiveLoop();
  }

  private async receiveLoop(): Promise<void> {
    const emit = (view: FrameView) => {
      this.emit('frame', this.toFrame(view));
    };
    try {
      while (!this.closed && this.listenerCount('frame') > 0) {
        const n = this.ring.poll(emit, DRAIN_BATCH);
        if (n === DRAIN_BATCH) await yieldToLoop();
        else if (n === 0) await this.waitReadable();
      }
    } catch (err) {
      if (!this.closed) this.emit('error', err);
    } finally {
      this.receiving = false;
    }
  }

  /**
   * Frames as an async iterator, parked on the doorbell while the inbox is
   * empty. Ends when the bus closes. Pulls one frame per `next()`, so the
   * inbox (not memory) absorbs a slow consumer.
   */
  async *frames(): AsyncGenerator<Frame, void, undefined> {
    while (!this.closed) {
      const frame = this.recvFromLocal();
      if (frame !== null) yield frame;
      else await this.waitReadable();
    }
  }

  // -------------------------------------------------------------------------
  // Observability and lifecycle
  // -------------------------------------------------------------------------

  stats(): BusStats {
    this.assertOpen();
    return {
      name: this.options.name,
      namespace: this.options.namespace,
      slotSize: this.ring.slotSize,
      capacity: this.ring.capacity,
      maxPayload: this.ring.maxPayload,
      depth: this.ring.depth(),
      ...readInboxCounters(this.segment.u32),
      parked: this.ring.isParked(),
      doorbellErrors: udpDoorbellErrors(),
    };
  }

  private assertOpen(): void {
    if (this.closed) throw new BusError('ERR_SHMBUS_CLOSED', `bus "${this.options.name}" is closed`);
  }

  /**
   * Unregister, remove the inbox and unmap everything. Resolves with the
   * number of frames that were still unread in the inbox (they are discarded).
   * Calling it again resolves with 0.
   */
  async close(): Promise<{ unread: number }> {
    return this.closeSync();
  }

  /** Synchronous form of {@link close}. */
  closeSync(): { unread: number } {
    if (this.closed) return { unread: 0 };
    this.closed = true;
    openBuses.delete(this);
    const unread = this.ring.depth();
    this.sleeper.close();
    try {
      this.directory.unregister(this.entry.index, this.entry.generation, () => this.segment.unlink());
    } finally {
      this.routes.close();
      this.segment.unmap();
      this.directory.close();
    }
    return { unread };
  }
}

/** Reasons in an undeliverable notice (the relay's ACK status codes, docs/PROTOCOL.md). */
export const NOTICE_REASONS: Readonly<Record<number, string>> = Object.freeze({
  [NOTICE_REASON_UNKNOWN_DESTINATION]: 'UNKNOWN_DESTINATION',
  [NOTICE_REASON_EXPIRED]: 'EXPIRED',
  [NOTICE_REASON_TOO_LARGE]: 'TOO_LARGE',
  [NOTICE_REASON_UNKNOWN_HOST]: 'UNKNOWN_HOST',
});

/** What a relay notice frame says. */
export interface Notice {
  readonly kind: 'undeliverable';
  /** Why: UNKNOWN_DESTINATION, EXPIRED (target stayed full past the TTL), TOO_LARGE, UNKNOWN_HOST. */
  readonly reason: string;
  /** Per-source sequence number of the frame that was not delivered. */
  readonly sequence: number;
  /** The address it was sent to (`name@host`). */
  readonly destination: string;
}

/** Decode a notice frame (flag FRAME_FLAG_NOTICE); null for any other frame or a malformed notice. */
export function parseNotice(frame: Frame): Notice | null {
  if ((frame.flags & FRAME_FLAG_NOTICE) === 0) return null;
  const p = frame.payload;
  if (p.length < NOTICE_ADDRESS_OFFSET + 2 || p[NOTICE_KIND_OFFSET] !== NOTICE_UNDELIVERABLE) return null;
  const n = p[NOTICE_ADDRESS_OFFSET]!;
  if (n === 0 || n > MAX_ADDRESS_LENGTH || NOTICE_ADDRESS_OFFSET + 1 + n > p.length) return null;
  const view = new DataView(p.buffer, p.byteOffset, p.byteLength);
  return {
    kind: 'undeliverable',
    reason: NOTICE_REASONS[p[NOTICE_REASON_OFFSET]!] ?? `REASON_${p[NOTICE_REASON_OFFSET]}`,
    sequence: view.getUint32(NOTICE_SEQUENCE_OFFSET, true),
    destination: String.fromCharCode(...p.subarray(NOTICE_ADDRESS_OFFSET + 1, NOTICE_ADDRESS_OFFSET + 1 + n)),
  };
}

/**
 * Create the inbox of an endpoint being registered, or take over the inbox a
 * dead owner left (runs under the directory lock). A predecessor's inbox of the
 * same geometry is kept, frames and all; one of another geometry is replaced
 * and its unread frames are counted as discarded in the new inbox.
 */
export function openInbox(options: Pick<ResolvedBusOptions, 'dir' | 'namespace' | 'name' | 'slotSize' | 'capacity' | 'mode'>): Segment {
  const path = join(options.dir, inboxFileName(options.namespace, options.name));
  const length = inboxSegmentLength(options.slotSize, options.capacity);
  const create = (discarded: number) =>
    Segment.create(path, SEGMENT_KIND_INBOX, length, options.mode, INBOX_HEADER_LENGTH, (buffer) => {
      FrameRing.format(buffer, options.slotSize, options.capacity);
      addU64(new Uint32Array(buffer), INBOX_DISCARDED_OFFSET, discarded);
    });
  let previous: Segment;
  try {
    previous = Segment.attach(path, SEGMENT_KIND_INBOX, 0);
  } catch (err) {
    const code = (err as { errno?: string; code?: string }).errno;
    if (code === 'ENOENT') return create(0);
    // A corrupt or foreign leftover under our name (we hold the directory lock, and no live owner claims it).
    unlinkQuiet(path);
    return create(0);
  }
  const ring = new FrameRing(previous.buffer);
  if (ring.slotSize === options.slotSize && ring.capacity === options.capacity) {
    ring.unpark();
    return previous;
  }
  const unread = Math.max(0, ring.depth());
  previous.unmap();
  unlinkQuiet(path);
  return create(unread);
}
