/**
 * Bus: the public API. One Bus is one named endpoint with its own inbox.
 *
 * Sending resolves the destination's inbox by name through the namespace
 * directory once, then writes straight into it (no system call unless the
 * receiver is parked). Receiving reads the own inbox; the event-driven forms
 * park on a futex doorbell when the inbox is empty.
 *
 * This file opens and closes the endpoint and holds the API; the send handles
 * are in bus-senders.ts, the receive side (source names, parking, the 'frame'
 * loop) in bus-receiver.ts.
 */
import { EventEmitter } from 'node:events';
import { BusError } from './errors';
import { DRAIN_BATCH, Receiver } from './bus-receiver';
import { SenderTable } from './bus-senders';
import { pollUntil, validateSignal, type BusEvents, type BusListener, type BusStats, type WaitForOptions } from './bus-support';
import { Directory, type EntryInfo, type Registration } from './directory';
import { udpDoorbellErrors, wakeAll } from './doorbell';
import { FrameView, readInboxCounters, type FrameHandler } from './frame';
import { InboxConsumer } from './inbox';
import { DOORBELL_FUTEX } from './layout';
import { resolveBusOptions, validateName, type BusOptions, type ResolvedBusOptions } from './options';
import { Routes } from './routes';
import { isProcessAlive, type Segment } from './segment';
import { openInbox } from './inbox-file';
import { track, untrack } from './lifecycle';
import { FrameIterator, type Frame, type FramesOptions } from './received';
import type { Sender, Payload, SendAsyncOptions } from './sender';

export type { Payload, SendAsyncOptions } from './sender';
export { Sender } from './sender';
export { parseNotice, NOTICE_REASONS, type Notice } from './notice';
export { FrameIterator, type Frame, type FramesOptions } from './received';
export type { BusEvents, BusListener, BusStats, WaitForOptions } from './bus-support';

/** The typed forms of EventEmitter's methods (see {@link BusEvents}). */
export interface Bus {
  on<E extends keyof BusEvents>(event: E, listener: BusListener<E>): this;
  once<E extends keyof BusEvents>(event: E, listener: BusListener<E>): this;
  off<E extends keyof BusEvents>(event: E, listener: BusListener<E>): this;
  addListener<E extends keyof BusEvents>(event: E, listener: BusListener<E>): this;
  prependListener<E extends keyof BusEvents>(event: E, listener: BusListener<E>): this;
  prependOnceListener<E extends keyof BusEvents>(event: E, listener: BusListener<E>): this;
  removeListener<E extends keyof BusEvents>(event: E, listener: BusListener<E>): this;
  removeAllListeners(event?: keyof BusEvents): this;
  emit<E extends keyof BusEvents>(event: E, ...args: BusEvents[E]): boolean;
  listenerCount(event: keyof BusEvents): number;
  listeners<E extends keyof BusEvents>(event: E): Array<BusListener<E>>;
  rawListeners<E extends keyof BusEvents>(event: E): Array<BusListener<E>>;
}

export class Bus extends EventEmitter implements AsyncDisposable, Disposable {
  readonly options: ResolvedBusOptions;
  private readonly directory: Directory;
  private readonly entry: EntryInfo;
  private readonly segment: Segment;
  private readonly inbox: InboxConsumer;
  private readonly routes: Routes;
  private readonly senders: SenderTable;
  private readonly receiver: Receiver;
  private closed = false;
  /** Ends the pending waitFor() calls (close rejects them with ERR_SHMBUS_CLOSED). */
  private readonly pendingWaits = new Set<(err: Error) => void>();

  private constructor(options: ResolvedBusOptions, directory: Directory, entry: EntryInfo, segment: Segment) {
    super();
    this.options = options;
    this.directory = directory;
    this.entry = entry;
    this.segment = segment;
    const buffer = segment.buffer;
    this.inbox = new InboxConsumer(buffer, { wakeSpace: (byteOffset) => wakeAll(buffer, byteOffset) });
    this.receiver = new Receiver(this, this.inbox, directory, buffer, options.idleSpinUs / 1000);
    this.routes = new Routes(directory, options.dir, options.namespace);
    this.senders = new SenderTable(entry, segment.u32, this.routes, () => this.assertOpen());
    this.on('newListener', (event) => {
      if (event === 'frame') queueMicrotask(() => this.receiver.start());
    });
    // The last 'frame' listener gone: the parked receiver stops at once, so it does not hold the event loop.
    this.on('removeListener', (event) => {
      if (event === 'frame' && this.receiver.receiving && this.listenerCount('frame') === 0) this.receiver.interruptWait();
    });
  }

  /**
   * Register endpoint `name` in its namespace and create (or take over) its
   * inbox. While another process holds the namespace's directory lock it
   * waits on timers (the event loop keeps running), up to `lockTimeoutMs`.
   * When every directory entry is taken, an entry whose owner has died is
   * reclaimed (its inbox removed) before the directory counts as full.
   * Rejects with BusError: ERR_SHMBUS_INVALID_OPTION, ERR_SHMBUS_NAME_IN_USE,
   * ERR_SHMBUS_DIRECTORY_FULL, ERR_SHMBUS_LOCK_TIMEOUT, ERR_SHMBUS_NOT_A_SEGMENT,
   * ERR_SHMBUS_LAYOUT_MISMATCH, ERR_SHMBUS_CORRUPT_SEGMENT, ERR_SHMBUS_SYSTEM.
   * The Bus is `AsyncDisposable`: `await using bus = await Bus.open(...)`.
   */
  static async open(options: BusOptions): Promise<Bus> {
    const opening = Bus.opening(options);
    try {
      return opening.opened(await opening.directory.registerAsync(opening.registration, opening.prepare));
    } catch (err) {
      throw opening.failed(err);
    }
  }

  /** Synchronous form of {@link open}: it blocks the thread while it waits for the directory lock. */
  static openSync(options: BusOptions): Bus {
    const opening = Bus.opening(options);
    try {
      return opening.opened(opening.directory.register(opening.registration, opening.prepare));
    } catch (err) {
      throw opening.failed(err);
    }
  }

  /** What open and openSync share: all but the wait for the directory lock. */
  private static opening(options: BusOptions) {
    const resolved = resolveBusOptions(options);
    const { dir, namespace, directoryEntries: entryCount, mode, lockTimeoutMs } = resolved;
    const directory = Directory.open({ dir, namespace, entryCount, mode, lockTimeoutMs });
    let segment: Segment | null = null;
    const registration: Registration = { name: resolved.name, flags: 0, doorbellKind: DOORBELL_FUTEX, doorbellPort: 0, slotSize: resolved.slotSize, capacity: resolved.capacity };
    return {
      directory,
      registration,
      /** Runs under the directory lock: create (or take over) the inbox. */
      prepare: () => {
        segment = openInbox(resolved);
      },
      opened: (entry: EntryInfo): Bus => {
        const bus = new Bus(resolved, directory, entry, segment!);
        track(bus);
        return bus;
      },
      failed: (err: unknown): unknown => {
        segment?.unmap();
        directory.close();
        return err;
      },
    };
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

  /** Whether this Bus closes itself on SIGTERM / SIGINT when the application has no listener of its own (option `handleSignals`). */
  get handlesSignals(): boolean {
    return this.options.handleSignals;
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
    return this.senders.get(destination);
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
    return this.senders.local(destination).send(payload);
  }

  /**
   * Write `payloads[start .. start+count)` and publish them with one store.
   * Returns how many were written, in order, from the first (fewer than asked
   * when the lane had less room; the rest are counted as refused).
   */
  sendToLocalBatch(destination: string, payloads: readonly Payload[], start = 0, count = payloads.length - start): number {
    return this.senders.local(destination).sendBatch(payloads, start, count);
  }

  /**
   * Like {@link sendToLocal}, but when the lane is full wait for room (the
   * receiver wakes this sender when it frees slots), up to `timeoutMs`
   * (default 1000). Resolves true when sent, false on timeout (counted);
   * rejects with the signal's reason when `signal` aborts.
   */
  sendToLocalAsync(destination: string, payload: Payload, options: SendAsyncOptions = {}): Promise<boolean> {
    try {
      return this.senders.local(destination).sendAsync(payload, options);
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
    return this.senders.send(address, payload);
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
    return this.receiver.take();
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
    return this.receiver.sourceName(view);
  }

  /**
   * Frames as an async iterator, parked on the doorbell while the inbox is
   * empty. Ends when the bus closes. Pulls one frame per `next()`, so the
   * inbox (not memory) absorbs a slow consumer. `return()` (what `break`
   * calls) settles at once even while parked, and releases the event loop;
   * `signal` ends it with ERR_SHMBUS_ABORTED. Throws ERR_SHMBUS_INVALID_OPTION
   * for a `signal` that is not an AbortSignal.
   */
  frames(options: FramesOptions = {}): FrameIterator {
    const signal = validateSignal(options?.signal);
    return new FrameIterator(
      {
        isClosed: () => this.closed,
        recvFromLocal: () => this.recvFromLocal(),
        waitReadable: () => this.receiver.waitReadable(),
        interruptWait: () => this.receiver.interruptWait(),
      },
      signal,
    );
  }

  /**
   * Resolve once a live process has endpoint `name` registered in this
   * namespace (at once if it is there already): a sender that starts before
   * its receiver waits for it instead of retrying on
   * ERR_SHMBUS_UNKNOWN_DESTINATION. Rejects with ERR_SHMBUS_WAIT_TIMEOUT after
   * `timeoutMs` (default 5000), ERR_SHMBUS_ABORTED when `signal` aborts,
   * ERR_SHMBUS_CLOSED if this bus closes, ERR_SHMBUS_INVALID_OPTION for a
   * malformed name or option. Local names only (not `name@host`).
   */
  waitFor(name: string, options: WaitForOptions = {}): Promise<void> {
    try {
      this.assertOpen();
      validateName(name, 'name');
      const ready = () => {
        const entry = this.directory.lookup(name);
        return entry !== null && isProcessAlive(entry.ownerPid, entry.ownerStartTime);
      };
      return pollUntil(ready, options, this.pendingWaits, {
        what: 'waiting for endpoint',
        target: `"${name}"`,
        timedOut: (ms) => `endpoint "${name}" was not registered in namespace "${this.options.namespace}" within ${ms} ms`,
      });
    } catch (err) {
      return Promise.reject(err);
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
   * Calling it again resolves with 0. Emits 'close' once.
   */
  async close(): Promise<{ unread: number }> {
    return this.closeSync();
  }

  /** `await using bus = await Bus.open(...)`: {@link close} when the scope ends. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** `using bus = Bus.openSync(...)`: {@link closeSync} when the scope ends. */
  [Symbol.dispose](): void {
    this.closeSync();
  }

  /** Synchronous form of {@link close}. */
  closeSync(): { unread: number } {
    if (this.closed) return { unread: 0 };
    this.closed = true;
    untrack(this);
    const unread = this.inbox.depth();
    this.receiver.close();
    this.senders.reset();
    try {
      this.directory.unregister(this.entry.index, this.entry.generation, () => this.segment.unlink());
    } finally {
      this.routes.close();
      this.segment.unmap();
      this.directory.close();
      if (this.pendingWaits.size > 0) {
        const closedWhileWaiting = new BusError('ERR_SHMBUS_CLOSED', `bus "${this.options.name}" closed while waiting`);
        for (const settle of [...this.pendingWaits]) settle(closedWhileWaiting);
      }
    }
    this.emit('close', { unread });
    return { unread };
  }
}
