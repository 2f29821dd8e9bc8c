/**
 * The relay's side of shared memory: its own endpoint ("@relay") whose inbox
 * is the host's outbound inbox (a lane per sending process), and the producer side that writes frames from
 * other hosts into local inboxes.
 *
 * The outbound inbox is a set of lanes, one per local process sending to
 * other hosts. Frames are read with InboxConsumer.scan (no release): each
 * stays in its lane until the peer relay acks it; acks finish frames in any
 * order (a mark in the slot, plain store) and each lane's head moves over its
 * finished prefix once per ACK message (one store per lane, not per frame). A
 * relay killed and restarted (it takes its dead predecessor's inbox over)
 * sends every frame not yet finished again. Frames from other hosts are
 * written into local inboxes through the one lane this relay holds in each.
 * The doorbell is a UDP datagram on loopback, rung by a producer only when the
 * relay has parked.
 */
import { createSocket, type Socket } from 'node:dgram';
import { debuglog } from 'node:util';
import { BusError, isBusError } from '../src/internal';
import { Directory, type EntryInfo } from '../src/internal';
import { FutexSleeper, UDP_DOORBELL_DATAGRAM } from '../src/internal';
import {
  DOORBELL_UDP,
  ENTRY_FLAG_RELAY,
  FRAME_FLAG_NOTICE,
  NOTICE_ADDRESS_OFFSET,
  NOTICE_KIND_OFFSET,
  NOTICE_REASON_OFFSET,
  NOTICE_SEQUENCE_OFFSET,
  NOTICE_UNDELIVERABLE,
  RELAY_ENDPOINT_NAME,
} from '../src/internal';
import { openInbox } from '../src/internal';
import { DEFAULT_LOCK_TIMEOUT_MS, DEFAULT_MODE } from '../src/internal';
import { OFFER_FULL, OFFER_OK_RING, encodeAddressPrefix, type FrameView, type ProducerStamp } from '../src/internal';
import { ScanningConsumer } from '../src/internal';
import { wakeAll } from '../src/internal';
import { Routes, ringRoute, type Route } from '../src/internal';
import { Segment, isProcessAlive, processStartTime } from '../src/internal';
import { join } from 'node:path';
import { LANE_TAIL_OFFSET, SEGMENT_KIND_INBOX, inboxFileName, laneOffset } from '../src/internal';
import type { DeliveryIntent } from './dedup';

const debug = debuglog('shmbus');

export interface RelayEndpointOptions {
  readonly dir: string;
  readonly namespace: string;
  readonly slotSize: number;
  /** Slots per lane. */
  readonly capacity: number;
  readonly lanes: number;
  readonly maxMessageSize: number;
  /** UDP doorbell port on 127.0.0.1 (0 = ephemeral). */
  readonly doorbellPort: number;
}

export class RelayEndpoint {
  readonly entry: EntryInfo;
  readonly inbox: ScanningConsumer;
  readonly doorbellPort: number;
  /** Datagrams on the doorbell port that were not a doorbell (ignored). */
  doorbellGarbage = 0;
  doorbellRings = 0;
  noticesWritten = 0;
  noticesLost = 0;
  private readonly routes: Routes;
  private readonly noticeStamp: ProducerStamp;
  private onWake: (() => void) | null = null;
  private closed = false;

  private constructor(
    readonly options: RelayEndpointOptions,
    private readonly directory: Directory,
    private readonly segment: Segment,
    entry: EntryInfo,
    private readonly udp: Socket,
  ) {
    this.entry = entry;
    this.inbox = new ScanningConsumer(segment.buffer, { wakeSpace: (byteOffset) => wakeAll(segment.buffer, byteOffset) });
    this.doorbellPort = udp.address().port;
    // The relay's lanes are flagged: after its death only a relay takes them over (docs/LAYOUT.md §7.18).
    this.routes = new Routes(directory, options.dir, options.namespace, { pid: process.pid, startTime: processStartTime(process.pid), isAlive: isProcessAlive, relay: true });
    this.noticeStamp = { sourceIndex: entry.index, sourceGeneration: entry.generation, sourceHost: 0, flags: FRAME_FLAG_NOTICE };
    udp.on('message', (msg) => this.onDatagram(msg));
  }

  /**
   * Bind the doorbell, register "@relay" in the namespace (taking over a dead
   * predecessor's entry and inbox, frames included) and map the inbox.
   * ERR_SHMBUS_NAME_IN_USE if a live relay already serves the namespace.
   */
  static async open(options: RelayEndpointOptions, metricsPort: number): Promise<RelayEndpoint> {
    const udp = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(options.doorbellPort, '127.0.0.1', () => {
        udp.off('error', reject);
        resolve();
      });
    });
    udp.on('error', (err) => debug('relay doorbell socket error: %s', err.message));
    const directory = Directory.open({ dir: options.dir, namespace: options.namespace, entryCount: 256, mode: DEFAULT_MODE, lockTimeoutMs: DEFAULT_LOCK_TIMEOUT_MS });
    let segment: Segment | null = null;
    try {
      const entry = directory.register(
        { name: RELAY_ENDPOINT_NAME, flags: ENTRY_FLAG_RELAY, doorbellKind: DOORBELL_UDP, doorbellPort: udp.address().port, slotSize: options.slotSize, capacity: options.capacity, metricsPort },
        () => {
          segment = openInbox({ dir: options.dir, namespace: options.namespace, name: RELAY_ENDPOINT_NAME, slotSize: options.slotSize, capacity: options.capacity, lanes: options.lanes, maxMessageSize: options.maxMessageSize, mode: DEFAULT_MODE });
        },
      );
      return new RelayEndpoint(options, directory, segment!, entry, udp);
    } catch (err) {
      (segment as Segment | null)?.unmap();
      directory.close();
      udp.close();
      throw err;
    }
  }

  private onDatagram(msg: Buffer): void {
    if (msg.length !== UDP_DOORBELL_DATAGRAM.length || msg[0] !== UDP_DOORBELL_DATAGRAM[0]) {
      this.doorbellGarbage++;
      return;
    }
    this.doorbellRings++;
    this.wake();
  }

  private wake(): void {
    const cb = this.onWake;
    if (cb === null) return;
    this.onWake = null;
    this.inbox.unpark();
    cb();
  }

  /**
   * Park until a producer rings (or `timeoutMs` passes, if >= 0). Returns
   * false without parking if a frame is already waiting.
   */
  park(onWake: () => void, timeoutMs: number): boolean {
    if (this.closed || !this.inbox.prepareToPark()) return false;
    this.onWake = onWake;
    if (timeoutMs >= 0) setTimeout(() => this.wake(), timeoutMs).unref();
    return true;
  }

  /** Read unacked outbound frames (see ScanningConsumer.scan); `id` names the frame until it is released. */
  scan(handler: (frame: FrameView, id: number) => void, limit: number): number {
    return this.inbox.scan(handler, limit);
  }

  /** Name of the local endpoint that sent an outbound frame; null if it has gone. */
  localName(index: number, generation: number): string | null {
    return this.directory.nameAt(index, generation);
  }

  /** The route to local endpoint `name` with this relay's lane in its inbox; null when it is not registered. */
  routeFor(name: string): Route | null {
    const cached = this.routes.get(name);
    if (cached !== null) return cached;
    try {
      return this.routes.resolve(name);
    } catch (err) {
      if (isBusError(err, 'ERR_SHMBUS_UNKNOWN_DESTINATION') || isBusError(err, 'ERR_SHMBUS_INVALID_OPTION')) return null;
      throw err;
    }
  }

  /** Is `route` still its destination's current incarnation? One plain load. */
  isCurrent(route: Route): boolean {
    return this.routes.isCurrent(route);
  }

  /** Ring the consumer of `route`'s inbox (after a publish that took the bell). */
  ring(route: Route): void {
    ringRoute(route);
  }

  /**
   * The published position now of lane `intent.lane` of the inbox an intent
   * names (found by its directory entry, checked by its epoch); null when that
   * inbox is gone. For settling a dead predecessor's intent, at start.
   */
  publishedTail(intent: DeliveryIntent): number | null {
    const name = this.directory.nameAt(intent.targetIndex, intent.targetGeneration) ?? this.directory.read(intent.targetIndex)?.name ?? null;
    if (name === null) return null;
    let segment: Segment;
    try {
      segment = Segment.attach(join(this.options.dir, inboxFileName(this.options.namespace, name)), SEGMENT_KIND_INBOX, 0);
    } catch {
      return null;
    }
    try {
      if (segment.epoch !== intent.targetEpoch) return null;
      const word = (laneOffset(intent.lane) + LANE_TAIL_OFFSET) / 4;
      if (word >= segment.u32.length) return null;
      return Atomics.load(segment.u32, word);
    } finally {
      segment.unmap();
    }
  }

  /**
   * `target`'s inbox is full for us: sleep on our lane's head until its
   * consumer frees slots (it wakes the futex because we set the lane's space
   * flag) or `maxMs` passes, then call `onRoom`. Returns false, without
   * waiting, when there is room for `length` bytes already or the target is
   * gone (the caller retries at once).
   */
  waitForRoom(target: string, length: number, maxMs: number, onRoom: () => void): boolean {
    const route = this.routeFor(target);
    if (route === null) return false;
    const lane = route.lane;
    const head = lane.prepareSpaceWait(lane.slotsFor(length));
    if (head < 0) return false;
    route.space ??= new FutexSleeper(route.segment.buffer, lane.headByteOffset);
    void route.space.sleep(maxMs, head).then(() => {
      if (route.live) lane.endSpaceWait(); // a dropped route's inbox is unmapped
      onRoom();
    });
    return true;
  }

  /** Is local endpoint `target` registered right now? */
  hasTarget(target: string): boolean {
    return this.routeFor(target) !== null;
  }

  /**
   * Tell a local sender that its frame to `destination` was not delivered:
   * a NOTICE frame in its inbox. A sender that has gone, or whose inbox is
   * full, cannot be told: counted in noticesLost.
   */
  notice(senderIndex: number, senderGeneration: number, reason: number, sequence: number, destination: string): boolean {
    const name = this.localName(senderIndex, senderGeneration);
    const route = name === null ? null : this.routeFor(name);
    if (route === null) {
      this.noticesLost++;
      return false;
    }
    const address = encodeAddressPrefix(destination);
    const body = new Uint8Array(NOTICE_ADDRESS_OFFSET + address.length);
    body[NOTICE_KIND_OFFSET] = NOTICE_UNDELIVERABLE;
    body[NOTICE_REASON_OFFSET] = reason;
    new DataView(body.buffer).setUint32(NOTICE_SEQUENCE_OFFSET, sequence, true);
    body.set(address, NOTICE_ADDRESS_OFFSET);
    const lane = route.lane;
    if (body.length > lane.maxMessage) {
      this.noticesLost++;
      return false;
    }
    const result = lane.offer(this.noticeStamp, route.entry.index, sequence, body);
    if (result === OFFER_FULL) {
      this.noticesLost++;
      return false;
    }
    if (result === OFFER_OK_RING) ringRoute(route);
    this.noticesWritten++;
    return true;
  }

  /** Unregister (removing the inbox: only on a clean shutdown with nothing unacked), unmap, close the doorbell. */
  close(removeInbox: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.onWake = null;
    this.udp.close();
    this.routes.close();
    try {
      if (removeInbox) this.directory.unregister(this.entry.index, this.entry.generation, () => this.segment.unlink());
    } finally {
      this.segment.unmap();
      this.directory.close();
    }
  }
}

export { BusError };
