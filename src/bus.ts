/**
 * Bus: the public API. One Bus is one named endpoint with its own inbox.
 *
 * Sending resolves the destination's inbox by name through the namespace
 * directory once, then writes straight into it (no system call unless the
 * receiver is parked). Receiving reads the own inbox; the event-driven forms
 * park on a futex doorbell when the inbox is empty.
 */
import { EventEmitter } from 'node:events';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { BusError } from './errors';
import { Directory, type EntryInfo } from './directory';
import { FutexSleeper, udpDoorbellErrors, wakeAll } from './doorbell';
import { FrameView, readInboxCounters, type FrameHandler, type InboxCounters, type ProducerStamp } from './frame';
import { InboxConsumer } from './inbox';
import { DOORBELL_FUTEX, FRAME_FLAG_OUTBOUND, NO_INDEX, RELAY_ENDPOINT_NAME } from './layout';
import { resolveBusOptions, validateName, validateNamespace, type BusOptions, type ResolvedBusOptions } from './options';
import { encodeAddressPrefix } from './frame';
import { Routes } from './routes';
import type { Segment } from './segment';
import { openInbox } from './inbox-file';
import { Sender, type Origin, type Payload, type SendAsyncOptions } from './sender';

export type { Payload, SendAsyncOptions } from './sender';
export { Sender } from './sender';
export { parseNotice, NOTICE_REASONS, type Notice } from './notice';

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

/** Frames handled per turn of the event loop by the event-driven receivers. */
const DRAIN_BATCH = 256;

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
  private readonly inbox: InboxConsumer;
  private readonly origin: Origin;
  private readonly outboundStamp: ProducerStamp;
  private readonly routes: Routes;
  private readonly senders = new Map<string, Sender>();
  /** The sender of the last sendToLocal/send call: a loop to one destination skips the map. */
  private lastSender: Sender | null = null;
  private readonly names = new Map<number, { generation: number; name: string }>();
  private readonly sleeper: FutexSleeper;
  private closed = false;
  private receiving = false;

  private constructor(options: ResolvedBusOptions, directory: Directory, entry: EntryInfo, segment: Segment) {
    super();
    this.options = options;
    this.directory = directory;
    this.entry = entry;
    this.segment = segment;
    const buffer = segment.buffer;
    this.inbox = new InboxConsumer(buffer, { wakeSpace: (byteOffset) => wakeAll(buffer, byteOffset) });
    const stamp: ProducerStamp = { sourceIndex: entry.index, sourceGeneration: entry.generation, sourceHost: 0, flags: 0 };
    this.outboundStamp = { ...stamp, flags: FRAME_FLAG_OUTBOUND };
    this.origin = {
      stamp,
      sequence: 0,
      counters: segment.u32,
      assertOpen: () => this.assertOpen(),
    };
    this.sleeper = new FutexSleeper(buffer);
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

  /** Largest payload one slot of the own inbox holds (slotSize - 32): frames up to this size are received zero-copy. */
  get maxPayload(): number {
    return this.inbox.maxPayload;
  }

  /** Largest message the own inbox accepts (longer than a slot: it spans several slots of one lane). */
  get maxMessageSize(): number {
    return this.inbox.maxMessage;
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
   * A handle for sending to `destination`: `name` (this host) or `name@host`
   * (through the transit relay). Hot loops should hold one: it skips the
   * lookup by name. The same handle is returned for the same destination.
   * Throws ERR_SHMBUS_INVALID_OPTION for a malformed address, ERR_SHMBUS_CLOSED.
   */
  sender(destination: string): Sender {
    const known = this.senders.get(destination);
    if (known !== undefined) return known;
    this.assertOpen();
    if (typeof destination !== 'string') throw new BusError('ERR_SHMBUS_INVALID_OPTION', `destination must be a string; received ${typeof destination}`);
    const at = destination.indexOf('@');
    let sender: Sender;
    if (at < 0) {
      sender = new Sender(destination, destination, this.origin, this.routes, this.origin.stamp, undefined);
    } else {
      const name = destination.slice(0, at);
      const host = destination.slice(at + 1);
      validateName(name, 'name');
      validateNamespace(host, 'host');
      sender = new Sender(destination, RELAY_ENDPOINT_NAME, this.origin, this.routes, this.outboundStamp, encodeAddressPrefix(destination));
    }
    this.senders.set(destination, sender);
    return sender;
  }

  private localSender(destination: string): Sender {
    const last = this.lastSender;
    if (last !== null && last.destination === destination) return last;
    if (typeof destination === 'string' && destination.includes('@')) validateName(destination, 'destination');
    return (this.lastSender = this.sender(destination));
  }

  /**
   * Write one frame into the inbox of local endpoint `destination` (a payload
   * longer than one slot becomes a message over several slots of one lane).
   * Returns true when it is published, false when this sender's lane of that
   * inbox is full (nothing written; the refusal is counted on both sides).
   * Throws ERR_SHMBUS_INVALID_PAYLOAD (not bytes), ERR_SHMBUS_UNKNOWN_DESTINATION,
   * ERR_SHMBUS_FRAME_TOO_LARGE, ERR_SHMBUS_NO_LANE (every lane of the
   * destination is held by a live producer), ERR_SHMBUS_CLOSED, and
   * ERR_SHMBUS_DESTINATION_DEAD when the lane is full and the owner has died.
   * (Frames sent to a dead owner's inbox while there is room wait there for a
   * successor that takes the name over; `shmbus stat` shows it as DEAD.)
   */
  sendToLocal(destination: string, payload: Payload): boolean {
    return this.localSender(destination).send(payload);
  }

  /**
   * Write `payloads[start .. start+count)` and publish them with one store.
   * Returns how many were written, in order, from the first (fewer than asked
   * when the lane had less room; the rest are counted as refused).
   */
  sendToLocalBatch(destination: string, payloads: readonly Payload[], start = 0, count = payloads.length - start): number {
    return this.localSender(destination).sendBatch(payloads, start, count);
  }

  /**
   * Like {@link sendToLocal}, but when the lane is full wait for room (the
   * receiver wakes this sender when it frees slots), up to `timeoutMs`
   * (default 1000). Resolves true when sent, false on timeout (counted);
   * rejects with the signal's reason when `signal` aborts.
   */
  sendToLocalAsync(destination: string, payload: Payload, options: SendAsyncOptions = {}): Promise<boolean> {
    try {
      return this.localSender(destination).sendAsync(payload, options);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Send to `address`: `name` (this host, same as {@link sendToLocal}) or
   * `name@host` (another host, through the transit relay, same as
   * {@link sendToRemote}). Same back-pressure contract: false = not sent.
   */
  send(address: string, payload: Payload): boolean {
    const last = this.lastSender;
    if (last !== null && last.destination === address) return last.send(payload);
    return (this.lastSender = this.sender(address)).send(payload);
  }

  /**
   * Send to endpoint `name` on `host` through this namespace's transit relay:
   * the frame goes into this process's lane of the relay's inbox (shared
   * memory) and the relay's UDP doorbell is rung if it sleeps. Returns false
   * when that lane is full (nothing written; counted). Throws
   * ERR_SHMBUS_RELAY_UNAVAILABLE (no relay, or a dead one whose inbox is
   * full), ERR_SHMBUS_FRAME_TOO_LARGE, ERR_SHMBUS_INVALID_OPTION (malformed
   * name or host), ERR_SHMBUS_INVALID_PAYLOAD, ERR_SHMBUS_CLOSED. Frames
   * written while the relay is down wait in its inbox for its restart.
   * Delivery failures on the far side come back as notice frames
   * ({@link parseNotice}).
   */
  sendToRemote(host: string, name: string, payload: Payload): boolean {
    return this.send(`${name}@${host}`, payload);
  }

  // -------------------------------------------------------------------------
  // Receiving
  // -------------------------------------------------------------------------

  /** Take the next frame from the own inbox (a copy), or null if it is empty. Never blocks. */
  recvFromLocal(): Frame | null {
    this.assertOpen();
    let frame: Frame | null = null;
    this.inbox.poll((view) => {
      frame = this.toFrame(view);
    }, 1);
    return frame;
  }

  /**
   * Zero-copy receive: hand up to `limit` frames to `handler` as a reused
   * {@link FrameView}, valid only during the call (the slots are released
   * after the handler returns). Frames up to {@link maxPayload} bytes are
   * views into shared memory; a longer message is assembled into a buffer
   * reused by the next one. Returns how many frames were handled.
   */
  recvBatch(handler: FrameHandler, limit = DRAIN_BATCH): number {
    this.assertOpen();
    return this.inbox.poll(handler, limit);
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
   * after parking until a producer rings (or the bus closes). No timed
   * re-check: a producer that publishes while we are parked always rings.
   */
  private async waitReadable(): Promise<void> {
    const inbox = this.inbox;
    if (this.closed || inbox.hasFrame()) return;
    if (!inbox.prepareToPark()) return;
    try {
      await this.sleeper.sleep(-1);
    } finally {
      if (!this.closed) inbox.unpark();
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
        const n = this.inbox.poll(emit, DRAIN_BATCH);
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
      slotSize: this.inbox.slotSize,
      capacity: this.inbox.capacity,
      lanes: this.inbox.laneCount,
      lanesInUse: this.inbox.lanes().length,
      maxPayload: this.inbox.maxPayload,
      maxMessageSize: this.inbox.maxMessage,
      depth: this.inbox.depth(),
      ...readInboxCounters(this.segment.u32),
      parked: this.inbox.isParked(),
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
    const unread = this.inbox.depth();
    this.sleeper.close();
    for (const sender of this.senders.values()) sender.reset();
    this.lastSender = null;
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
