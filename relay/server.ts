/**
 * TransitServer: one per host. Drains the host's outbound inbox (the "@relay"
 * inbox in shared memory) into pooled, authenticated TCP connections to peer
 * relays, and delivers frames arriving from peers into local inboxes.
 *
 * Nothing is lost or delivered twice across broken connections and restarts:
 * an outbound frame stays in shared memory until the peer acks it (or reports
 * it undeliverable, which becomes a notice to the sender); a restarted relay
 * resends every unacked frame; the receiving relay's dedup table (also in
 * shared memory) recognises frames it had already delivered.
 */
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import type { Server as HttpServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { ClusterConfig } from '../src/config';
import { FRAME_FLAG_OUTBOUND, DEFAULT_DEDUP_ENTRY_COUNT, NOTICE_REASON_UNKNOWN_HOST } from '../src/layout';
import { defaultMaxMessageSize } from '../src/options';
import { DEFAULT_MODE } from '../src/options';
import type { FrameView } from '../src/frame';
import { Connection } from './connection';
import { DedupTable } from './dedup';
import { RelayEndpoint } from './endpoint';
import { AddressCache } from './addresses';
import { Inbound, type InboundFrame } from './inbound';
import { newPeerCounters, serveMetrics, type ConnectionSnapshot, type PeerCounters, type RelaySnapshot } from './metrics';
import { PeerLink } from './pool';
import {
  ACK_DELIVERED,
  ACK_DUPLICATE,
  DataBatchWriter,
  ERR_AUTH_FAILED,
  ERR_SHUTTING_DOWN,
  ERR_UNEXPECTED,
  ERR_UNKNOWN_HOST,
  MSG_ACK,
  MSG_DATA,
  MSG_ERROR,
  MSG_HELLO,
  MSG_PROOF,
  ProtocolError,
  acceptorProof,
  connectorProof,
  encodeChallenge,
  encodeWelcome,
  newNonce,
  verifyProof,
  type Message,
} from './protocol';


const SCAN_BUDGET = 1024;
const PARK_TIMEOUT_MS = 1000;

export type Logger = (event: string, fields: Record<string, unknown>) => void;

interface InboundState {
  nonceC: Buffer;
  nonceA: Buffer;
  step: 'await-hello' | 'await-proof' | 'ready';
  timer: NodeJS.Timeout | null;
}

export class TransitServer {
  readonly bootId = randomBytes(4).readUInt32LE(0);
  private endpoint!: RelayEndpoint;
  private dedup!: DedupTable;
  private inbound!: Inbound;
  private tcp!: TcpServer;
  private metrics: HttpServer | null = null;
  private readonly links = new Map<string, PeerLink>();
  private readonly peerCounters = new Map<string, PeerCounters>();
  private readonly connections = new Set<Connection>();
  private readonly inboundStates = new Map<Connection, InboundState>();
  private readonly writer: DataBatchWriter;
  private readonly names = new Map<number, { generation: number; name: string }>();
  private readonly addresses = new AddressCache();
  /** Per outbound frame id (lane x capacity + slot): the destination endpoint name and the source name of the frame in it. */
  private destinations: string[] = [];
  private sources: string[] = [];
  /** `name@peer` strings of remote sources, per peer, so a frame does not build one. */
  private readonly sourceAddresses = new Map<string, Map<string, string>>();
  private readonly global = {
    outboundFrames: 0,
    localDeliveries: 0,
    unknownHost: 0,
    strayFrames: 0,
    malformed: 0,
    authFailures: 0,
    handshakeTimeouts: 0,
    unknownPeers: 0,
    acksLost: 0,
    acksIgnored: 0,
    noticesWritten: 0,
    noticesLost: 0,
    pausedReads: 0,
    /** Delivery intents a killed predecessor left open, settled at start. */
    intentsSettled: 0,
    /** Of those, intents whose target inbox had been replaced meanwhile (recorded as delivered). */
    intentsUnknown: 0,
  };
  private pumpScheduled = false;
  private paused = false;
  private stopping = false;
  private readonly startedAt = Date.now();
  listenPort = 0;
  metricsPort = 0;

  constructor(
    readonly config: ClusterConfig,
    private readonly log: Logger,
  ) {
    this.writer = new DataBatchWriter({ maxMessageBytes: config.limits.maxMessageBytes, maxFrames: config.limits.batchFrames });
    for (const peer of config.peers) this.peerCounters.set(peer.name, newPeerCounters());
  }

  /** Bind the peer listener, the metrics endpoint and the doorbell; register in shared memory; start draining. */
  async start(): Promise<void> {
    const { self, limits } = this.config;
    this.tcp = this.config.tls !== undefined
      ? createTlsServer({ key: this.config.tls.key, cert: this.config.tls.cert, ca: this.config.tls.ca, requestCert: true, rejectUnauthorized: true }, (s) => this.accept(s))
      : createTcpServer((s) => this.accept(s));
    this.tcp.on('error', (err) => this.log('listener_error', { error: err.message }));
    await new Promise<void>((resolve, reject) => {
      this.tcp.once('error', reject);
      this.tcp.listen(self.relay.port, self.relay.host, () => {
        this.tcp.off('error', reject);
        resolve();
      });
    });
    this.listenPort = (this.tcp.address() as { port: number }).port;
    if (self.metrics !== undefined) {
      const served = await serveMetrics(self.metrics.host, self.metrics.port, () => this.snapshot());
      this.metrics = served.server;
      this.metricsPort = served.port;
    }
    // Register first: only the namespace's one live relay may touch its dedup table.
    this.endpoint = await RelayEndpoint.open(
      { dir: self.dir, namespace: self.namespace, slotSize: self.inboxSlotSize, capacity: self.inboxCapacity, lanes: self.inboxLanes, maxMessageSize: defaultMaxMessageSize(self.inboxSlotSize, self.inboxCapacity), doorbellPort: self.doorbellPort },
      this.metricsPort,
    );
    this.dedup = DedupTable.open(self.dir, self.namespace, DEFAULT_DEDUP_ENTRY_COUNT, DEFAULT_MODE);
    // A predecessor killed between recording a delivery and closing it left one intent open: settle it
    // from the target lane's published position before anything is delivered.
    const settled = this.dedup.settleIntent((intent) => this.endpoint.publishedTail(intent));
    if (settled !== null) {
      this.global.intentsSettled++;
      if (settled.outcome === 'unknown') this.global.intentsUnknown++;
      this.log('intent_settled', { outcome: settled.outcome, sequence: settled.intent.sequence, lane: settled.intent.lane });
    }
    this.inbound = new Inbound(this.endpoint, this.dedup, limits, (full) => this.pressure(full));
    const frameIds = this.endpoint.inbox.capacity * this.endpoint.inbox.laneCount;
    this.destinations = new Array<string>(frameIds).fill('');
    this.sources = new Array<string>(frameIds).fill('');
    for (const peer of this.config.peers) {
      this.links.set(
        peer.name,
        new PeerLink(
          peer,
          {
            config: this.config,
            writer: this.writer,
            appendFrame: (position, writer) => this.appendFrame(position, writer),
            acked: (position, status, peerName) => this.onAck(position, status, peerName),
            ackBatchDone: () => this.endpoint.inbox.advanceHead(),
            log: this.log,
            track: (c) => this.connections.add(c),
            untrack: (c) => this.connections.delete(c),
          },
          this.peerCounters.get(peer.name)!,
        ),
      );
    }
    const resend = this.endpoint.inbox.depth();
    this.log('start', {
      host: self.name,
      pid: process.pid,
      listen: `${self.relay.host}:${this.listenPort}`,
      doorbell: this.endpoint.doorbellPort,
      metrics: this.metrics !== null ? `${self.metrics!.host}:${this.metricsPort}` : null,
      namespace: self.namespace,
      dir: self.dir,
      peers: this.config.peers.map((p) => p.name),
      tls: this.config.tls !== undefined,
      outboundWaiting: resend,
      dedupEntries: this.dedup.size,
    });
    this.pump();
  }

  // ---------------------------------------------------------------------------
  // Outbound: ring -> peers
  // ---------------------------------------------------------------------------

  private readonly pumpSoon = (): void => {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(this.pump);
  };

  private readonly pump = (): void => {
    this.pumpScheduled = false;
    if (this.stopping) return;
    const n = this.endpoint.scan(this.onOutbound, SCAN_BUDGET);
    for (const link of this.links.values()) link.flush();
    if (n === SCAN_BUDGET) {
      this.pumpSoon();
      return;
    }
    if (!this.endpoint.park(this.pumpSoon, PARK_TIMEOUT_MS)) this.pumpSoon();
  };

  /** One frame from the outbound inbox, not yet released. */
  private readonly onOutbound = (view: FrameView, position: number): void => {
    this.global.outboundFrames++;
    if ((view.flags & FRAME_FLAG_OUTBOUND) === 0 || view.addressLength === 0) {
      // Someone wrote to "@relay" directly: not a frame for another host.
      this.global.strayFrames++;
      this.endpoint.inbox.release(position);
      return;
    }
    const address = this.addresses.decode(view.bytes, view.addressOffset, view.addressLength);
    if (address.host === this.config.self.name) {
      this.deliverLocally(view, position, address.name);
      return;
    }
    const link = this.links.get(address.host);
    if (link === undefined || address.name.length === 0) {
      this.global.unknownHost++;
      this.undeliverable(view.sourceIndex, view.sourceGeneration, NOTICE_REASON_UNKNOWN_HOST, view.sequence, address.address);
      this.endpoint.inbox.release(position);
      return;
    }
    // Remember the decoded destination and source names for when the frame is sent (and resent).
    const slot = position;
    this.destinations[slot] = address.name;
    this.sources[slot] = this.localName(view.sourceIndex, view.sourceGeneration);
    link.enqueue(position, view.sourceIndex);
  };

  /** A frame from a local app to an endpoint of this same host, through the relay. */
  private deliverLocally(view: FrameView, position: number, name: string): void {
    const source = this.localName(view.sourceIndex, view.sourceGeneration);
    const frame: InboundFrame = {
      sourceHost: this.config.self.id,
      sourceAddress: `${source}@${this.config.self.name}`,
      sourceIndex: view.sourceIndex,
      sourceGeneration: view.sourceGeneration,
      sequence: view.sequence,
      destination: name,
      payload: view.bytes.subarray(view.payloadOffset, view.payloadOffset + view.length),
    };
    const { sourceIndex, sourceGeneration, sequence } = view;
    const address = this.addresses.decode(view.bytes, view.addressOffset, view.addressLength).address;
    this.global.localDeliveries++;
    this.inbound.submit(
      frame,
      (status) => {
        if (status !== ACK_DELIVERED && status !== ACK_DUPLICATE) this.undeliverable(sourceIndex, sourceGeneration, status, sequence, address);
        this.endpoint.inbox.release(position);
        this.endpoint.inbox.advanceHead();
      },
      true,
    );
  }

  /** Name of a local sender, cached by (index, generation). */
  private localName(index: number, generation: number): string {
    const known = this.names.get(index);
    if (known !== undefined && known.generation === generation) return known.name;
    const name = this.endpoint.localName(index, generation) ?? `gone.${index}.${generation}`;
    this.names.set(index, { generation, name });
    return name;
  }

  /** Append the frame at `position` to a DATA batch. */
  private appendFrame(position: number, writer: DataBatchWriter): 'ok' | 'full' | 'gone' {
    const view = this.endpoint.inbox.viewAt(position);
    if (view === null) return 'gone';
    const slot = position;
    const ok = writer.append(position >>> 0, view.sourceIndex, view.sourceGeneration, view.sequence, 0, this.sources[slot]!, this.destinations[slot]!, view.bytes, view.payloadOffset, view.length);
    return ok ? 'ok' : 'full';
  }

  private onAck(position: number, status: number, peer: string): void {
    if (status !== ACK_DELIVERED && status !== ACK_DUPLICATE) {
      const view = this.endpoint.inbox.viewAt(position);
      this.peerCounters.get(peer)!.undeliverable++;
      if (view !== null) this.undeliverable(view.sourceIndex, view.sourceGeneration, status, view.sequence, view.address);
    }
    this.endpoint.inbox.release(position);
  }

  private undeliverable(senderIndex: number, senderGeneration: number, reason: number, sequence: number, address: string): void {
    if (this.endpoint.notice(senderIndex, senderGeneration, reason, sequence, address)) this.global.noticesWritten++;
    else this.global.noticesLost++;
    this.log('undeliverable', { to: address, sequence, reason, sender: this.localName(senderIndex, senderGeneration) });
  }

  // ---------------------------------------------------------------------------
  // Inbound: peers -> local inboxes
  // ---------------------------------------------------------------------------

  private accept(socket: Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    const conn = new Connection(socket, 'in', this.config.limits.maxMessageBytes, {
      message: (c, msg) => this.onInboundMessage(c, msg),
      closed: (c, err) => this.onInboundClosed(c, err),
    });
    conn.state = 'handshake';
    this.connections.add(conn);
    const state: InboundState = { nonceC: Buffer.alloc(0), nonceA: Buffer.alloc(0), step: 'await-hello', timer: null };
    state.timer = setTimeout(() => {
      // docs/PROTOCOL.md: a handshake that does not complete in time is closed without an ERROR.
      this.global.handshakeTimeouts++;
      this.log('peer_refused', { conn: conn.id, claimed: conn.peer, reason: 'handshake timeout', remote: conn.socket.remoteAddress });
      conn.destroy(new Error('handshake timeout'));
    }, this.config.limits.handshakeTimeoutMs);
    this.inboundStates.set(conn, state);
  }

  private onInboundMessage(conn: Connection, msg: Message): void {
    const state = this.inboundStates.get(conn)!;
    const { secret, self } = this.config;
    if (msg.type === MSG_ERROR) {
      // A connector that rejects our proof (wrong secret, or it dialled another host) says so before closing.
      if (state.step !== 'ready' && (msg.code === ERR_AUTH_FAILED || msg.code === ERR_UNKNOWN_HOST)) this.global.authFailures++;
      this.log('peer_error', { peer: conn.peer, conn: conn.id, code: msg.code, message: msg.message });
      conn.destroy();
      return;
    }
    if (state.step === 'await-hello' && msg.type === MSG_HELLO) {
      if (!this.config.hosts.has(msg.hostName) || msg.hostName === self.name) {
        this.global.unknownPeers++;
        this.log('peer_refused', { conn: conn.id, claimed: msg.hostName, reason: 'unknown host', remote: conn.socket.remoteAddress });
        conn.refuse(ERR_UNKNOWN_HOST, `host "${msg.hostName}" is not a peer in this cluster`);
        return;
      }
      conn.peer = msg.hostName;
      state.nonceC = Buffer.from(msg.nonce);
      state.nonceA = newNonce();
      conn.send(encodeChallenge(state.nonceA, self.name, acceptorProof(secret, state.nonceC, state.nonceA, msg.hostName, self.name)));
      state.step = 'await-proof';
      return;
    }
    if (state.step === 'await-proof' && msg.type === MSG_PROOF) {
      if (!verifyProof(connectorProof(secret, state.nonceC, state.nonceA, conn.peer!, self.name), msg.proof)) {
        this.global.authFailures++;
        this.log('peer_refused', { conn: conn.id, claimed: conn.peer, reason: 'authentication failed', remote: conn.socket.remoteAddress });
        conn.refuse(ERR_AUTH_FAILED, 'the proof does not match the cluster secret');
        return;
      }
      if (state.timer !== null) clearTimeout(state.timer);
      state.timer = null;
      state.step = 'ready';
      conn.authenticated();
      conn.send(encodeWelcome(this.bootId, this.config.limits.batchFrames));
      // Back-pressure applies to authenticated peers' DATA; handshakes go on regardless.
      if (this.paused) conn.pause();
      this.log('peer_accepted', { peer: conn.peer, conn: conn.id });
      return;
    }
    if (state.step === 'ready' && msg.type === MSG_DATA) {
      this.onData(conn, msg.frames);
      return;
    }
    if (state.step === 'ready' && msg.type === MSG_ACK) {
      // docs/PROTOCOL.md: an open connection accepts ACK both ways; we never send DATA on an incoming one, so none is ours.
      this.global.acksIgnored++;
      return;
    }
    throw new ProtocolError(ERR_UNEXPECTED, `message type ${msg.type} not allowed ${state.step === 'ready' ? 'on an incoming connection' : 'before the handshake completed'}`, 0, 0);
  }

  private onData(conn: Connection, frames: Extract<Message, { type: typeof MSG_DATA }>['frames']): void {
    const peer = conn.peer!;
    const counters = this.peerCounters.get(peer)!;
    const hostId = this.config.hostId(peer);
    let addresses = this.sourceAddresses.get(peer);
    if (addresses === undefined) {
      addresses = new Map();
      this.sourceAddresses.set(peer, addresses);
    }
    counters.batchesIn++;
    for (const f of frames) {
      counters.framesIn++;
      counters.bytesIn += f.payload.length;
      conn.framesIn++;
      const frameId = f.frameId;
      let sourceAddress = addresses.get(f.sourceName);
      if (sourceAddress === undefined) {
        sourceAddress = `${f.sourceName}@${peer}`;
        if (addresses.size > 65536) addresses.clear();
        addresses.set(f.sourceName, sourceAddress);
      }
      this.inbound.submit(
        {
          sourceHost: hostId,
          sourceAddress,
          sourceIndex: f.sourceIndex,
          sourceGeneration: f.sourceGeneration,
          sequence: f.sequence,
          destination: f.destinationName,
          payload: f.payload,
        },
        (status) => {
          if (status === ACK_DUPLICATE) counters.duplicates++;
          if (conn.queueAck(frameId, status)) counters.acksOut++;
          else this.global.acksLost++;
        },
        true,
      );
    }
  }

  private onInboundClosed(conn: Connection, err: Error | null): void {
    const state = this.inboundStates.get(conn);
    if (state?.timer) clearTimeout(state.timer);
    this.inboundStates.delete(conn);
    this.connections.delete(conn);
    if (conn.malformed) this.global.malformed++;
    if (conn.peer !== null && state?.step === 'ready') {
      this.peerCounters.get(conn.peer)!.disconnects++;
      this.log('peer_disconnected', { peer: conn.peer, conn: conn.id, reason: err?.message ?? 'closed' });
    }
  }

  /** Pending delivery hit its bound: stop reading peers until it halves. */
  private pressure(full: boolean): void {
    if (full === this.paused) return;
    this.paused = full;
    if (full) this.global.pausedReads++;
    this.log(full ? 'backpressure_on' : 'backpressure_off', { pending: this.inbound.pending });
    for (const conn of this.connections) {
      if (conn.direction !== 'in' || conn.state !== 'ready') continue;
      if (full) conn.pause();
      else conn.resume();
    }
  }

  // ---------------------------------------------------------------------------
  // Observability and shutdown
  // ---------------------------------------------------------------------------

  snapshot(): RelaySnapshot {
    const now = performance.now();
    const peers: Record<string, PeerCounters & { pending: number; unacked: number; queued: number; connections: number }> = {};
    for (const [name, counters] of this.peerCounters) {
      const link = this.links.get(name);
      const out = link?.outstanding ?? { queued: 0, unacked: 0, connections: 0 };
      let inbound = 0;
      for (const c of this.connections) if (c.direction === 'in' && c.peer === name) inbound++;
      const pending = this.inbound?.pendingFrom(this.config.hostId(name)) ?? 0;
      peers[name] = { ...counters, pending, unacked: out.unacked, queued: out.queued, connections: out.connections + inbound };
    }
    const connections: ConnectionSnapshot[] = [];
    for (const c of this.connections) {
      connections.push({
        id: c.id,
        peer: c.peer ?? '?',
        direction: c.direction,
        slot: -1,
        state: c.state,
        framesOut: c.framesOut,
        framesIn: c.framesIn,
        bytesOut: c.bytesOut,
        bytesIn: c.socket.bytesRead,
        unacked: 0,
        queued: 0,
        idleMs: Math.round(now - c.lastActivity),
      });
    }
    const inb = this.inbound?.counters;
    return {
      host: this.config.self.name,
      pid: process.pid,
      uptimeSec: Math.round((Date.now() - this.startedAt) / 1000),
      global: {
        ...this.global,
        delivered: inb?.delivered ?? 0,
        duplicates: inb?.duplicates ?? 0,
        undeliverable: inb?.undeliverable ?? 0,
        tooLarge: inb?.tooLarge ?? 0,
        pendingFrames: this.inbound?.pending.frames ?? 0,
        pendingBytes: this.inbound?.pending.bytes ?? 0,
        outboundDepth: this.endpoint?.inbox.depth() ?? 0,
        doorbellRings: this.endpoint?.doorbellRings ?? 0,
        doorbellGarbage: this.endpoint?.doorbellGarbage ?? 0,
        dedupEntries: this.dedup?.size ?? 0,
        dedupEvictions: this.dedup?.evictions ?? 0,
        uptimeSec: Math.round((Date.now() - this.startedAt) / 1000),
      },
      peers,
      connections,
    };
  }

  /**
   * Drain and stop: stop reading the ring, send what is queued, wait (up to
   * `drainTimeoutMs`) for the acks, tell peers we are going, and unregister.
   * Frames still unacked then stay in shared memory for the next start; the
   * inbox and dedup table are removed only when nothing is left in flight.
   */
  async stop(drainTimeoutMs: number): Promise<{ unacked: number; pending: number }> {
    if (this.stopping) return { unacked: 0, pending: 0 };
    this.stopping = true;
    this.tcp.close();
    for (const link of this.links.values()) link.flush();
    const deadline = Date.now() + drainTimeoutMs;
    const outstanding = () => {
      let n = 0;
      for (const link of this.links.values()) {
        const o = link.outstanding;
        n += o.unacked + o.queued;
      }
      return n;
    };
    while (outstanding() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    for (const conn of this.connections) {
      if (conn.direction === 'in') {
        conn.flushAcks();
        conn.refuse(ERR_SHUTTING_DOWN, 'relay shutting down');
      }
    }
    const pending = this.inbound.close();
    for (const link of this.links.values()) link.close();
    this.metrics?.close();
    const unacked = this.endpoint.inbox.depth();
    const clean = unacked === 0 && pending === 0;
    this.endpoint.close(clean);
    this.dedup.close(clean);
    this.log('stop', { host: this.config.self.name, clean, unacked, pending });
    return { unacked, pending };
  }
}
