/**
 * TransitServer: one per host. Wiring, start and stop; the work is done by
 *
 *   outbound.ts   the "@relay" inbox -> flows -> DATA on pool.ts connections; ACKs -> release
 *   inbound.ts    connections peers open -> STREAM/DATA -> delivery.ts; ACKs back
 *   delivery.ts   frames -> local inboxes, exactly once (dedup.ts), held when a target is full
 *   endpoint.ts   the relay's side of shared memory (its inbox, routes, notices, doorbell)
 *
 * Nothing is lost or delivered twice across broken connections and restarts:
 * an outbound frame stays in shared memory until the peer settles it; a
 * restarted relay resends every unsettled frame; the receiving relay's dedup
 * table (also in shared memory) recognises frames it had delivered.
 */
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import type { Server as HttpServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { ClusterConfig, HostConfig } from './config';
import { DEFAULT_DEDUP_ENTRY_COUNT } from '../src/internal';
import { DEFAULT_MODE, defaultMaxMessageSize } from '../src/internal';
import type { Connection } from './connection';
import { DedupTable } from './dedup';
import { Delivery } from './delivery';
import { RelayEndpoint } from './endpoint';
import { InboundLink, type AcceptorCounters } from './inbound';
import { newPeerCounters, serveMetrics, type ConnectionSnapshot, type PeerCounters, type PeerReadiness, type Readiness, type RelaySnapshot } from './metrics';
import { Outbound } from './outbound';
import { PeerLink, type Logger } from './pool';
import type { LinkEvents, PeerTransport } from './transport';
import { ERR_SHUTTING_DOWN } from './codec';

export type { Logger } from './pool';

export class TransitServer {
  readonly bootId = randomBytes(4).readUInt32LE(0);
  private endpoint!: RelayEndpoint;
  private dedup!: DedupTable;
  private delivery!: Delivery;
  private outbound!: Outbound;
  private tcp!: TcpServer;
  private metrics: HttpServer | null = null;
  /** The transport to each peer (./transport: the data path's seam; TCP/TLS pools today). */
  private readonly links = new Map<string, PeerTransport>();
  private readonly inbound = new Set<InboundLink>();
  private readonly outgoing = new Set<Connection>();
  private readonly peerCounters = new Map<string, PeerCounters>();
  private readonly acceptor: AcceptorCounters = { malformed: 0, authFailures: 0, handshakeTimeouts: 0, unknownPeers: 0 };
  private readonly global = { pausedReads: 0, intentsSettled: 0, intentsUnknown: 0 };
  private paused = false;
  private stopping = false;
  /** start() completed: listening, registered, links made. */
  private started = false;
  private readonly startedAt = Date.now();
  listenPort = 0;
  metricsPort = 0;

  constructor(
    readonly config: ClusterConfig,
    private readonly log: Logger,
  ) {
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
      const served = await serveMetrics(self.metrics.host, self.metrics.port, { snapshot: () => this.snapshot(), readiness: () => this.readiness() });
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
    this.delivery = new Delivery(this.endpoint, this.dedup, limits, (full) => this.pressure(full));
    this.outbound = new Outbound(this.endpoint, this.config, this.delivery, this.log);
    for (const peer of this.config.peers) {
      const link = this.transportTo(peer, this.outbound);
      this.links.set(peer.name, link);
      this.outbound.addLink(link);
      link.start();
    }
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
      outboundWaiting: this.endpoint.inbox.depth(),
      dedupEntries: this.dedup.size,
    });
    this.outbound.pump();
    this.started = true;
  }

  private accept(socket: Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    const link = new InboundLink(socket, this.config, this.bootId, this.delivery, (peer) => this.peerCounters.get(peer)!, this.acceptor, this.log, (l) => this.inbound.delete(l));
    this.inbound.add(link);
  }

  /** Delivery hit a pending bound: stop reading peers until it halves. */
  private pressure(full: boolean): void {
    if (full === this.paused) return;
    this.paused = full;
    if (full) this.global.pausedReads++;
    this.log(full ? 'backpressure_on' : 'backpressure_off', { pending: this.delivery.pending });
    for (const link of this.inbound) {
      if (full) link.pause();
      else link.resume();
    }
  }

  /** The transport to one peer: a pool of TCP (or TLS) connections. A second transport would be chosen here, per peer. */
  private transportTo(peer: HostConfig, events: LinkEvents): PeerTransport {
    const link = new PeerLink(peer, this.config, events, this.peerCounters.get(peer.name)!, this.log);
    link.onConnection = (conn, open) => {
      if (open) this.outgoing.add(conn);
      else this.outgoing.delete(conn);
    };
    return link;
  }

  snapshot(): RelaySnapshot {
    const now = performance.now();
    const peers: Record<string, PeerCounters & { pending: number; unacked: number; queued: number; connections: number }> = {};
    for (const [name, counters] of this.peerCounters) {
      const link = this.links.get(name);
      let unacked = 0;
      let queued = 0;
      for (const slot of link?.slots ?? []) {
        unacked += slot.unacked;
        queued += slot.queued;
      }
      let inbound = 0;
      for (const l of this.inbound) if (l.open && l.peer === name) inbound++;
      const pending = this.delivery?.pendingFrom(this.config.hostId(name)) ?? 0;
      peers[name] = { ...counters, pending, unacked, queued, connections: (link?.connections ?? 0) + inbound };
    }
    const connections: ConnectionSnapshot[] = [];
    const show = (c: Connection) =>
      connections.push({ id: c.id, peer: c.peer ?? '?', direction: c.direction, slot: -1, state: c.state, framesOut: c.framesOut, framesIn: c.framesIn, bytesOut: c.bytesOut, bytesIn: c.socket.bytesRead, unacked: 0, queued: 0, idleMs: Math.round(now - c.lastActivity) });
    for (const c of this.outgoing) show(c);
    for (const l of this.inbound) show(l.conn);
    const d = this.delivery?.counters;
    const o = this.outbound?.counters;
    return {
      host: this.config.self.name,
      pid: process.pid,
      listen: `${this.config.self.relay.host}:${this.listenPort}`,
      doorbellPort: this.endpoint?.doorbellPort ?? 0,
      uptimeSec: Math.round((Date.now() - this.startedAt) / 1000),
      global: {
        outboundFrames: o?.outboundFrames ?? 0,
        localDeliveries: o?.localDeliveries ?? 0,
        unknownHost: o?.unknownHost ?? 0,
        strayFrames: o?.strayFrames ?? 0,
        noticesWritten: o?.noticesWritten ?? 0,
        noticesLost: o?.noticesLost ?? 0,
        ...this.acceptor,
        ...this.global,
        delivered: d?.delivered ?? 0,
        duplicates: d?.duplicates ?? 0,
        undeliverable: d?.undeliverable ?? 0,
        unknownAtOnce: d?.unknownAtOnce ?? 0,
        tooLarge: d?.tooLarge ?? 0,
        pendingFrames: this.delivery?.pending.frames ?? 0,
        pendingBytes: this.delivery?.pending.bytes ?? 0,
        outboundDepth: this.endpoint?.inbox.depth() ?? 0,
        doorbellRings: this.endpoint?.doorbellRings ?? 0,
        doorbellGarbage: this.endpoint?.doorbellGarbage ?? 0,
        dedupEntries: this.dedup?.size ?? 0,
        dedupEvictions: this.dedup?.evictions ?? 0,
        uptimeSec: Math.round((Date.now() - this.startedAt) / 1000),
      },
      peers,
      peerStates: Object.fromEntries(this.config.peers.map((p) => [p.name, this.peerView(p.name).state])),
      connections,
    };
  }

  /** A peer's links now: outgoing connections ready, authenticated incoming ones, and its state (up while either is open). */
  private peerView(name: string): PeerReadiness {
    let outgoing = 0;
    const link = this.links.get(name);
    for (const slot of link?.slots ?? []) if (slot.state === 'ready') outgoing++;
    let incoming = 0;
    for (const l of this.inbound) if (l.open && l.peer === name) incoming++;
    const up = outgoing + incoming > 0;
    return { up, state: up ? 'up' : (link?.state ?? 'unknown'), outgoing, incoming };
  }

  /** GET /readyz: ready once start() completed and until stop() begins; per peer, whether a link is up and what the last one showed. */
  readiness(): Readiness {
    const peers: Record<string, PeerReadiness> = {};
    let peersUp = 0;
    let peersDown = 0;
    for (const peer of this.config.peers) {
      const view = this.peerView(peer.name);
      if (view.up) peersUp++;
      if (view.state === 'down') peersDown++;
      peers[peer.name] = view;
    }
    const ready = this.started && !this.stopping;
    return {
      ready,
      status: this.stopping ? 'stopping' : ready ? 'ready' : 'starting',
      host: this.config.self.name,
      listening: this.tcp?.listening === true && !this.stopping,
      configLoaded: true,
      peersUp,
      peersDown,
      peersTotal: this.config.peers.length,
      peers,
    };
  }

  /**
   * Drain and stop: stop reading the outbound inbox, send what is queued,
   * wait (up to `drainTimeoutMs`) for the acks, tell peers we are going, and
   * unregister. Frames still unsettled then stay in shared memory for the
   * next start; the inbox and dedup table are removed only when nothing is
   * left in flight.
   */
  async stop(drainTimeoutMs: number): Promise<{ unacked: number; pending: number }> {
    if (this.stopping) return { unacked: 0, pending: 0 };
    this.stopping = true;
    this.tcp.close();
    this.outbound.stop();
    this.outbound.flush();
    const deadline = Date.now() + drainTimeoutMs;
    while (this.outbound.outstanding > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    for (const link of this.inbound) {
      link.flushAcks();
      link.conn.refuse(ERR_SHUTTING_DOWN, 'relay shutting down');
    }
    const pending = this.delivery.close();
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
