/**
 * Outbound: the host's outbound inbox ("@relay") -> peer relays.
 *
 * The pump scans the outbound inbox without releasing (src/scan.ts), sorts
 * each frame into its flow — one source endpoint to one destination on one
 * peer — and sends flows as streams of DATA runs on the pool slot of their
 * source (pool.ts). A flow keeps its frames' ids in send order (typed-array
 * rings, no object or Map operation per frame); a peer's ACK entry settles a
 * flow's frames up to a point, each is marked done in the inbox, and each lane's
 * head moves once per ACK message. A frame stays in the inbox until settled:
 * a broken connection sends the flow's unacked frames again on the next one,
 * a restarted relay rescans them (docs/PROTOCOL.md, "Exactly once").
 *
 * Frames for this same host are handed to delivery.ts as local streams.
 */
import type { FrameView } from '../src/internal';
import { FRAME_FLAG_OUTBOUND } from '../src/internal';
import { OUTCOME_TOO_LARGE, OUTCOME_UNKNOWN_HOST, isUndeliverable } from '../src/internal';
import { AddressCache } from './addresses';
import { DataBatchWriter } from './batch-writer';
import { ACK_ENTRIES_OFFSET, ACK_ENTRY_LENGTH, ACK_ENTRY_STATUS_OFFSET, ACK_ENTRY_THROUGH_OFFSET, DATA_RUNS_OFFSET, ERR_UNEXPECTED, FRAME_HEADER_LENGTH, MAX_STREAMS, MESSAGE_LENGTH_FIELD_LENGTH, ProtocolError, RUN_HEADER_LENGTH, encodeStream, type AckMessage } from './codec';
import type { ClusterConfig } from './config';
import type { Delivery } from './delivery';
import { InboundStream, type StreamOwner } from './stream';
import type { RelayEndpoint } from './endpoint';
import { Flow, SlotFlows } from './flow';
import type { Logger } from './pool';
import type { LinkEvents, PeerTransport, Slot } from './transport';

/** Frames of this host's apps to endpoints of this same host: released when delivery settles them. */
class LocalOwner implements StreamOwner {
  constructor(private readonly outbound: Outbound) {}

  settled(stream: InboundStream, _count: number, outcome: number, tag: number): void {
    this.outbound.settleLocal(stream, outcome, tag);
  }

  flush(): void {
    this.outbound.advance();
  }
}

export interface OutboundCounters {
  outboundFrames: number;
  localDeliveries: number;
  unknownHost: number;
  strayFrames: number;
  noticesWritten: number;
  noticesLost: number;
}

const SCAN_BUDGET = 1024;
const PARK_TIMEOUT_MS = 1000;

export class Outbound implements LinkEvents {
  readonly counters: OutboundCounters = { outboundFrames: 0, localDeliveries: 0, unknownHost: 0, strayFrames: 0, noticesWritten: 0, noticesLost: 0 };
  private readonly links = new Map<string, PeerTransport>();
  private readonly slotFlows = new Map<Slot, SlotFlows>();
  private readonly flows = new Map<string, Flow>();
  private readonly localStreams = new Map<string, InboundStream>();
  private readonly localOwner = new LocalOwner(this);
  private readonly addresses = new AddressCache();
  private readonly names = new Map<number, { generation: number; name: string }>();
  private readonly writer: DataBatchWriter;
  /** Per lane of the outbound inbox: the flow of its last frame and that frame's address bytes. */
  private readonly laneFlow: (Flow | null)[];
  private readonly laneAddress: Uint8Array[];
  private readonly laneAddressLength: Int32Array;
  private readonly mapping: Uint8Array;
  private readonly capacity: number;
  /** Largest payload a DATA message can carry alone. */
  private readonly maxPayload: number;
  private scheduled = false;
  private stopped = false;
  /** When the last scan found frames (ms), and how long after it the pump polls before parking. */
  private lastBusy = 0;
  private readonly spinMs: number;

  constructor(
    private readonly endpoint: RelayEndpoint,
    private readonly config: ClusterConfig,
    private readonly delivery: Delivery,
    private readonly log: Logger,
  ) {
    const inbox = endpoint.inbox;
    this.capacity = inbox.capacity;
    this.mapping = inbox.bytes;
    this.laneFlow = new Array<Flow | null>(inbox.laneCount).fill(null);
    this.laneAddress = Array.from({ length: inbox.laneCount }, () => new Uint8Array(256));
    this.laneAddressLength = new Int32Array(inbox.laneCount);
    this.writer = new DataBatchWriter({ maxMessageBytes: config.limits.maxMessageBytes, maxFrames: config.limits.batchFrames });
    this.maxPayload = config.limits.maxMessageBytes + MESSAGE_LENGTH_FIELD_LENGTH - DATA_RUNS_OFFSET - RUN_HEADER_LENGTH - FRAME_HEADER_LENGTH;
    this.spinMs = config.limits.idleSpinUs / 1000;
    const sweep = setInterval(() => this.sweep(), 10_000);
    sweep.unref();
  }

  /** Send through `link` (one per peer host). */
  addLink(link: PeerTransport): void {
    this.links.set(link.name, link);
    for (const slot of link.slots) this.slotFlows.set(slot, new SlotFlows());
  }

  /** Frames queued and unacked on all links. */
  get outstanding(): number {
    let n = 0;
    for (const slot of this.slotFlows.keys()) n += slot.queued + slot.unacked;
    return n;
  }

  // ---------------------------------------------------------------------------
  // The pump: scan, sort into flows, send.
  // ---------------------------------------------------------------------------

  readonly pumpSoon = (): void => {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.pump);
  };

  /**
   * One turn: scan, send. Then the idle strategy: while the inbox was busy
   * within `idleSpinUs`, poll again on the next turn of the event loop (which
   * also reads the sockets); after that, park until a producer rings the
   * doorbell (or PARK_TIMEOUT_MS: the park is sliced, never unbounded).
   */
  readonly pump = (): void => {
    this.scheduled = false;
    if (this.stopped) return;
    const n = this.endpoint.scan(this.onFrame, SCAN_BUDGET);
    this.flush();
    const now = performance.now();
    if (n > 0) this.lastBusy = now;
    if (n === SCAN_BUDGET || now - this.lastBusy < this.spinMs) {
      this.pumpSoon();
      return;
    }
    if (!this.endpoint.park(this.pumpSoon, PARK_TIMEOUT_MS)) this.pumpSoon();
  };

  /** Stop scanning (shutdown); what is queued can still be flushed. */
  stop(): void {
    this.stopped = true;
  }

  private readonly onFrame = (view: FrameView, id: number): void => {
    this.counters.outboundFrames++;
    const addressLength = view.addressLength;
    if ((view.flags & FRAME_FLAG_OUTBOUND) === 0 || addressLength === 0) {
      this.counters.strayFrames++; // written to "@relay" directly: not a frame for another host
      this.endpoint.inbox.release(id);
      return;
    }
    const lane = (id / this.capacity) | 0;
    let flow: Flow | null = this.laneFlow[lane]!;
    if (flow === null || flow.sourceIndex !== view.sourceIndex || flow.sourceGeneration !== view.sourceGeneration || !this.sameAddress(lane, view)) {
      flow = this.flowOf(view, id, lane);
      if (flow === null) return;
    }
    if (view.length > this.maxPayload) {
      this.undeliverable(flow.sourceIndex, flow.sourceGeneration, OUTCOME_TOO_LARGE, view.sequence, flow.address);
      this.endpoint.inbox.release(id);
      return;
    }
    flow.push(id, view.sequence, view.bytes === this.mapping ? view.payloadOffset : -1, view.length);
    const slot = flow.slot;
    slot.queued++;
    if (!flow.inReady) {
      flow.inReady = true;
      this.slotFlows.get(slot)!.ready.push(flow);
      slot.link.want(slot);
    }
  };

  private sameAddress(lane: number, view: FrameView): boolean {
    const n = view.addressLength;
    if (this.laneAddressLength[lane] !== n) return false;
    const cached = this.laneAddress[lane]!;
    const bytes = view.bytes;
    const at = view.addressOffset;
    for (let i = 0; i < n; i++) if (cached[i] !== bytes[at + i]) return false;
    return true;
  }

  /** The flow of a frame whose address this lane did not just see; null when the frame was dealt with here. */
  private flowOf(view: FrameView, id: number, lane: number): Flow | null {
    const address = this.addresses.decode(view.bytes, view.addressOffset, view.addressLength);
    const source = this.localName(view.sourceIndex, view.sourceGeneration);
    if (address.host === this.config.self.name) {
      this.deliverLocally(view, id, source, address.name);
      return null;
    }
    const link = this.links.get(address.host);
    if (link === undefined || address.name.length === 0) {
      this.counters.unknownHost++;
      this.undeliverable(view.sourceIndex, view.sourceGeneration, OUTCOME_UNKNOWN_HOST, view.sequence, address.address);
      this.endpoint.inbox.release(id);
      return null;
    }
    const key = `${address.host}\u0000${view.sourceIndex}:${view.sourceGeneration}\u0000${address.name}`;
    let flow = this.flows.get(key);
    if (flow === undefined) {
      const slot = link.slots[view.sourceIndex % link.slots.length]!;
      flow = new Flow(slot, view.sourceIndex, view.sourceGeneration, source, address.name, address.address);
      this.flows.set(key, flow);
    }
    this.laneFlow[lane] = flow;
    this.laneAddress[lane]!.set(view.bytes.subarray(view.addressOffset, view.addressOffset + view.addressLength));
    this.laneAddressLength[lane] = view.addressLength;
    return flow;
  }

  /** Send what the ready slots have queued. */
  flush(): void {
    for (const [slot, flows] of this.slotFlows) if (slot.state === 'ready' && flows.readyHead < flows.ready.length) this.flushSlot(slot, flows);
  }

  private flushSlot(slot: Slot, flows: SlotFlows): void {
    const conn = slot.conn!;
    const writer = this.writer;
    const counters = slot.link.counters;
    writer.setLimits(this.config.limits.maxMessageBytes, Math.min(slot.maxFrames, this.config.limits.batchFrames));
    const send = (): boolean => {
      const frames = writer.count;
      const message = writer.finish();
      if (message === null) return true;
      counters.batchesOut++;
      counters.framesOut += frames;
      counters.bytesOut += message.length;
      conn.framesOut += frames;
      conn.send(message);
      return !conn.congested;
    };
    while (flows.readyHead < flows.ready.length) {
      const flow = flows.ready[flows.readyHead]!;
      if (flow.epoch !== slot.epoch && !this.bind(slot, flows, flow)) return;
      const full = !this.append(slot, flow);
      if (flow.sent === flow.tail) {
        flow.inReady = false;
        flows.readyHead++;
      }
      if (full && !send()) break;
    }
    send();
    if (flows.readyHead > 1024 && flows.readyHead * 2 > flows.ready.length) {
      flows.ready = flows.ready.slice(flows.readyHead);
      flows.readyHead = 0;
    }
  }

  /** Bind `flow` to the next stream id of the slot's connection (a STREAM message). False when the ids are used up. */
  private bind(slot: Slot, flows: SlotFlows, flow: Flow): boolean {
    const streamId = flows.bound.length;
    if (streamId >= MAX_STREAMS) {
      // Every stream id of this connection is used: a new connection starts again at 0.
      this.writer.reset();
      slot.conn!.destroy(new Error(`all ${MAX_STREAMS} stream ids of the connection used`));
      return false;
    }
    if (this.writer.count > 0) {
      // The STREAM message must precede the DATA that uses it.
      const frames = this.writer.count;
      const message = this.writer.finish()!;
      slot.link.counters.batchesOut++;
      slot.link.counters.framesOut += frames;
      slot.link.counters.bytesOut += message.length;
      slot.conn!.send(message);
    }
    flows.bound.push(flow);
    flow.streamId = streamId;
    flow.epoch = slot.epoch;
    flow.streamBase = flow.sent;
    slot.conn!.send(encodeStream(streamId, flow.sourceIndex, flow.sourceGeneration, flow.sourceName, flow.destination));
    return true;
  }

  /** Append the flow's unsent frames to the batch; false when the batch is full. */
  private append(slot: Slot, flow: Flow): boolean {
    const writer = this.writer;
    const mapping = this.mapping;
    while (flow.sent < flow.tail) {
      const i = flow.sent & flow.mask;
      let offset = flow.offs[i]!;
      let source = mapping;
      let length = flow.lens[i]!;
      if (offset < 0) {
        const view = this.endpoint.inbox.viewAt(flow.ids[i]!);
        if (view === null) throw new Error(`outbound frame ${flow.ids[i]} vanished while unsettled`);
        source = view.bytes;
        offset = view.payloadOffset;
        length = view.length;
      }
      if (!writer.append(flow.streamId, flow.seqs[i]!, source, offset, length)) return false;
      if (slot.unacked === 0) slot.ackClock = performance.now();
      flow.sent++;
      slot.unacked++;
      slot.queued--;
    }
    return true;
  }

  // ---------------------------------------------------------------------------
  // Link events.
  // ---------------------------------------------------------------------------

  opened(slot: Slot): void {
    this.slotFlows.get(slot)!.bound = [];
    this.flush();
  }

  writable(slot: Slot): void {
    const flows = this.slotFlows.get(slot)!;
    if (slot.state === 'ready') this.flushSlot(slot, flows);
  }

  /** The connection closed: every flow sends its unacked frames again, in order, on the next one. */
  closed(slot: Slot): void {
    const flows = this.slotFlows.get(slot)!;
    for (const flow of flows.bound) {
      if (flow.epoch !== slot.epoch) continue;
      slot.queued += flow.sent - flow.head;
      flow.sent = flow.head;
      flow.epoch = -1;
      flow.streamId = -1;
      if (flow.head < flow.tail && !flow.inReady) {
        flow.inReady = true;
        flows.ready.push(flow);
      }
    }
    flows.bound = [];
    slot.unacked = 0;
  }

  acked(slot: Slot, ack: AckMessage): void {
    const flows = this.slotFlows.get(slot)!;
    const bytes = ack.bytes;
    const inbox = this.endpoint.inbox;
    const counters = slot.link.counters;
    for (let e = 0, at = ACK_ENTRIES_OFFSET; e < ack.count; e++, at += ACK_ENTRY_LENGTH) {
      const streamId = bytes.readUInt32LE(at);
      const through = bytes.readUInt32LE(at + ACK_ENTRY_THROUGH_OFFSET);
      const status = bytes[at + ACK_ENTRY_STATUS_OFFSET]!;
      const flow = flows.bound[streamId];
      if (flow === undefined) throw new ProtocolError(ERR_UNEXPECTED, `ACK entry ${e} names stream ${streamId}, never bound on this connection`);
      const target = flow.streamBase + through;
      if (target <= flow.head || target > flow.sent) {
        throw new ProtocolError(ERR_UNEXPECTED, `ACK entry ${e}: stream ${streamId} through ${through}, but ${flow.head - flow.streamBase} were settled and ${flow.sent - flow.streamBase} sent`);
      }
      const n = target - flow.head;
      for (let k = flow.head; k < target; k++) inbox.release(flow.ids[k & flow.mask]!);
      if (isUndeliverable(status)) {
        counters.undeliverable++;
        this.undeliverable(flow.sourceIndex, flow.sourceGeneration, status, flow.seqs[(target - 1) & flow.mask]!, flow.address);
      }
      flow.head = target;
      slot.unacked -= n;
      counters.acksIn += n;
      slot.conn!.framesIn += n;
    }
    inbox.advanceHead();
  }

  // ---------------------------------------------------------------------------
  // Frames for this host, notices, names.
  // ---------------------------------------------------------------------------

  private deliverLocally(view: FrameView, id: number, source: string, name: string): void {
    this.counters.localDeliveries++;
    const key = `${view.sourceIndex}:${view.sourceGeneration}\u0000${name}`;
    let stream = this.localStreams.get(key);
    if (stream === undefined) {
      stream = new InboundStream(this.localOwner, this.config.self.id, view.sourceIndex, view.sourceGeneration, name, `${source}@${this.config.self.name}`);
      this.localStreams.set(key, stream);
    }
    this.delivery.deliverOne(stream, view.sequence, view.bytes, view.payloadOffset, view.length, id);
    this.delivery.endPass();
  }

  /** Delivery settled a local frame (its id is `tag`). */
  settleLocal(stream: InboundStream, outcome: number, tag: number): void {
    if (isUndeliverable(outcome)) {
      const view = this.endpoint.inbox.viewAt(tag);
      if (view !== null) this.undeliverable(view.sourceIndex, view.sourceGeneration, outcome, view.sequence, `${stream.destination}@${this.config.self.name}`);
    }
    this.endpoint.inbox.release(tag);
  }

  /** Move the outbound lanes' heads over settled frames. */
  advance(): void {
    this.endpoint.inbox.advanceHead();
  }

  private undeliverable(senderIndex: number, senderGeneration: number, reason: number, sequence: number, address: string): void {
    if (this.endpoint.notice(senderIndex, senderGeneration, reason, sequence, address)) this.counters.noticesWritten++;
    else this.counters.noticesLost++;
    this.log('undeliverable', { to: address, sequence, reason, sender: this.localName(senderIndex, senderGeneration) });
  }

  /** Name of a local sender, cached by (index, generation); `gone.<index>.<generation>` when it has unregistered. */
  private localName(index: number, generation: number): string {
    const known = this.names.get(index);
    if (known !== undefined && known.generation === generation) return known.name;
    const name = this.endpoint.localName(index, generation) ?? `gone.${index}.${generation}`;
    this.names.set(index, { generation, name });
    return name;
  }

  /** Forget flows with nothing in them, and local streams with nothing held. */
  private sweep(): void {
    let removed = false;
    for (const [key, flow] of this.flows) {
      // (A flow bound on the slot's open connection stays: a second stream of one pair is refused.)
      if (flow.head !== flow.tail || flow.inReady || (flow.epoch === flow.slot.epoch && flow.slot.state === 'ready')) continue;
      this.flows.delete(key);
      removed = true;
    }
    if (removed) this.laneFlow.fill(null);
    for (const [key, stream] of this.localStreams) if (stream.heldFrames === 0) this.localStreams.delete(key);
  }
}
