/**
 * PeerLink: the pool of outgoing connections from this relay to one peer
 * host — connecting, the connector's half of the handshake, backoff with
 * jitter, ack timeouts and idle eviction. Nothing about frames: outbound.ts
 * decides what each connection carries and is told, through {@link LinkEvents},
 * when a slot's connection opens, closes, acks or can take more.
 *
 * The pool has `poolSize` slots; every frame of one source goes through the
 * same slot (outbound.ts picks it by the source's directory index), so frames
 * of one source leave in order on one TCP stream.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { ClusterConfig, HostConfig } from './config';
import { Connection, StageDeadline } from './connection';
import type { PeerCounters } from './metrics';
import type { PeerState } from './snapshot';
import { Slot, type LinkEvents, type PeerTransport } from './transport';
import { ERR_AUTH_FAILED, ERR_UNEXPECTED, ERR_UNKNOWN_HOST, MSG_ACK, MSG_ERROR, ProtocolError, type Message } from './codec';
import { ConnectorHandshake } from './handshake';

export type Logger = (event: string, fields: Record<string, unknown>) => void;

/** A pool slot: the data path's Slot (./transport) and what the pool keeps per connection attempt. */
export class PoolSlot extends Slot<Connection> {
  failures = 0;
  everConnected = false;
  /** Backoff before the next attempt. */
  timer: NodeJS.Timeout | null = null;
  /** The current connection's connect or handshake deadline. */
  deadline: StageDeadline | null = null;
  /** The current connection is being closed for want of traffic (a disconnect, not a failure). */
  idleClosing = false;
}

/** The TCP (or TLS) transport to one peer: ./transport PeerTransport. */
export class PeerLink implements PeerTransport {
  readonly slots: PoolSlot[];
  private idleTimer: NodeJS.Timeout;
  private closed = false;
  /** Called for every connection made or ended (the server's set of live connections). */
  onConnection: (conn: Connection, open: boolean) => void = () => {};
  /** How the last of this pool's connections went: opened (`up`), closed idle, broke or failed (`down`); null before any. */
  private lastOutcome: 'up' | 'idle' | 'down' | null = null;
  /** Connection attempts that failed since the peer was last up (over all slots). */
  private failStreak = 0;

  constructor(
    readonly host: HostConfig,
    private readonly config: ClusterConfig,
    private readonly events: LinkEvents,
    readonly counters: PeerCounters,
    private readonly log: Logger,
  ) {
    this.slots = Array.from({ length: config.limits.poolSize }, (_, i) => new PoolSlot(this, i));
    const { idleTimeoutMs, ackTimeoutMs } = config.limits;
    this.idleTimer = setInterval(() => this.evictIdle(), Math.max(10, Math.min(idleTimeoutMs / 2, ackTimeoutMs / 4, 1000)));
    this.idleTimer.unref();
  }

  get name(): string {
    return this.host.name;
  }

  /** Connections open (or opening) to this peer. */
  get connections(): number {
    let n = 0;
    for (const s of this.slots) if (s.conn !== null) n++;
    return n;
  }

  /** The peer's state as this pool sees it (see {@link PeerState}). */
  get state(): PeerState {
    let trying = false;
    for (const s of this.slots) {
      if (s.state === 'ready') return 'up';
      if (s.state !== 'idle') trying = true;
    }
    if (this.lastOutcome === 'down') return 'down';
    if (trying) return 'connecting';
    return this.lastOutcome === null ? 'unknown' : this.lastOutcome === 'up' ? 'idle' : this.lastOutcome;
  }

  /** Open the slots kept open at all times (limits.minLinks: the first ones). */
  start(): void {
    for (let i = 0; i < this.config.limits.minLinks; i++) if (this.slots[i]!.state === 'idle') this.connect(this.slots[i]!);
  }

  /** A slot kept open at all times: reopened when it closes, never closed for idleness. */
  private kept(slot: PoolSlot): boolean {
    return slot.index < this.config.limits.minLinks;
  }

  /** The slot has frames to send: connect it if it is idle. */
  want(slot: Slot): void {
    const own = this.slots[slot.index]!;
    if (own.state === 'idle') this.connect(own);
  }

  private connect(slot: PoolSlot): void {
    if (this.closed) return;
    const { limits, tls, self, secret } = this.config;
    slot.state = 'connecting';
    const address = this.host.relay;
    const socket: Socket = tls !== undefined
      ? tlsConnect({ host: address.host, port: address.port, key: tls.key, cert: tls.cert, ca: tls.ca, checkServerIdentity: () => undefined })
      : netConnect({ host: address.host, port: address.port });
    const handshake = new ConnectorHandshake(secret, self.name, this.host.name);
    const conn = new Connection(socket, 'out', limits.maxMessageBytes, {
      message: (c, msg) => this.onMessage(slot, c, msg, handshake),
      closed: (c, err) => this.onClosed(slot, c, err),
      drained: () => {
        if (slot.state === 'ready') this.events.writable(slot);
      },
    });
    conn.peer = this.host.name;
    slot.conn = conn;
    this.onConnection(conn, true);
    slot.deadline = new StageDeadline(
      limits.connectTimeoutMs,
      () => (conn.state === 'connecting' ? 0 : 1),
      () => conn.destroy(new Error(`connect to ${address.host}:${address.port} timed out after ${limits.connectTimeoutMs} ms`)),
    );
    socket.once(tls !== undefined ? 'secureConnect' : 'connect', () => {
      slot.deadline?.cancel();
      conn.state = 'handshake';
      slot.state = 'handshake';
      conn.send(handshake.hello());
      slot.deadline = new StageDeadline(
        limits.handshakeTimeoutMs,
        () => handshake.progress,
        () => conn.destroy(new Error(`handshake with ${this.host.name} timed out after ${limits.handshakeTimeoutMs} ms`)),
      );
    });
  }

  private onMessage(slot: PoolSlot, conn: Connection, msg: Message, handshake: ConnectorHandshake): void {
    if (msg.type === MSG_ERROR) {
      this.log('peer_error', { peer: this.host.name, conn: conn.id, code: msg.code, message: msg.message });
      conn.destroy(new Error(`peer ${this.host.name} refused: ${msg.message}`));
      return;
    }
    if (slot.state === 'handshake') {
      let answer: ReturnType<ConnectorHandshake['onMessage']>;
      try {
        answer = handshake.onMessage(msg);
      } catch (err) {
        if (err instanceof ProtocolError && (err.wireCode === ERR_AUTH_FAILED || err.wireCode === ERR_UNKNOWN_HOST)) this.counters.authFailures++;
        throw err;
      }
      if (Buffer.isBuffer(answer)) {
        conn.send(answer);
        return;
      }
      slot.deadline?.cancel();
      slot.deadline = null;
      conn.authenticated();
      slot.state = 'ready';
      slot.maxFrames = answer.maxFramesPerBatch;
      slot.epoch++;
      slot.unacked = 0;
      this.counters.connects++;
      if (slot.everConnected) this.counters.reconnects++;
      slot.everConnected = true;
      slot.failures = 0;
      this.failStreak = 0;
      this.lastOutcome = 'up';
      this.log('peer_up', { peer: this.host.name, conn: conn.id, slot: slot.index, queued: slot.queued });
      this.events.opened(slot);
      return;
    }
    if (msg.type === MSG_ACK && slot.state === 'ready') {
      slot.ackClock = performance.now();
      this.events.acked(slot, msg);
      return;
    }
    throw new ProtocolError(ERR_UNEXPECTED, `a ${msg.type === MSG_ACK ? 'ACK' : `type ${msg.type}`} message is not allowed on an outgoing connection`);
  }

  private onClosed(slot: PoolSlot, conn: Connection, err: Error | null): void {
    this.onConnection(conn, false);
    slot.deadline?.cancel();
    slot.deadline = null;
    slot.conn = null;
    const wasReady = slot.state === 'ready';
    const idleClose = slot.idleClosing;
    slot.idleClosing = false;
    // A pool closing at the relay's stop says nothing about the peer.
    if (!this.closed) this.lastOutcome = idleClose && wasReady ? 'idle' : 'down';
    if (wasReady) {
      this.counters.disconnects++;
      if (slot.unacked > 0) this.counters.resends += slot.unacked;
      this.events.closed(slot);
    } else {
      slot.failures++;
      this.counters.connectFailures++;
      this.failStreak++;
    }
    if (wasReady && !idleClose) {
      this.log('peer_down', { peer: this.host.name, conn: conn.id, slot: slot.index, reason: err?.message ?? 'closed', queued: slot.queued });
    } else if (!wasReady && (this.failStreak & (this.failStreak - 1)) === 0) {
      // Failures 1, 2, 4, 8, ... of a streak: a peer down for hours logs a few dozen lines, not one per attempt
      // (every attempt is counted in connect_failures_total). `failures` is the streak so far.
      this.log('connect_failed', { peer: this.host.name, conn: conn.id, slot: slot.index, reason: err?.message ?? 'closed', queued: slot.queued, failures: this.failStreak });
    }
    if (!this.closed && (slot.queued > 0 || this.kept(slot))) this.backoff(slot, wasReady);
    else slot.state = 'idle';
  }

  /** Reconnect after a delay: at once after a connection that worked, with growing backoff after failures. */
  private backoff(slot: PoolSlot, afterUp: boolean): void {
    const { backoffInitialMs, backoffMaxMs } = this.config.limits;
    const base = afterUp ? backoffInitialMs : Math.min(backoffMaxMs, backoffInitialMs * 2 ** Math.min(slot.failures, 30));
    const delay = base / 2 + Math.random() * (base / 2);
    slot.state = 'backoff';
    slot.timer = setTimeout(() => {
      slot.timer = null;
      if (slot.state === 'backoff') this.connect(slot);
    }, delay);
  }

  /**
   * Close connections whose frames go unacked for longer than the ack timeout
   * (a silent partition: their frames are sent again on a new connection), and
   * connections without frames idle for longer than the idle timeout.
   */
  private evictIdle(): void {
    const now = performance.now();
    const { ackTimeoutMs, idleTimeoutMs } = this.config.limits;
    for (const slot of this.slots) {
      const conn = slot.conn;
      if (conn === null || slot.state !== 'ready') continue;
      if (slot.unacked > 0 && now - slot.ackClock > ackTimeoutMs) {
        this.counters.ackTimeouts++;
        this.log('peer_stalled', { peer: this.host.name, conn: conn.id, slot: slot.index, unacked: slot.unacked, ms: Math.round(now - slot.ackClock) });
        conn.destroy(new Error(`no ack for ${Math.round(now - slot.ackClock)} ms`));
        continue;
      }
      if (slot.unacked === 0 && slot.queued === 0 && now - conn.lastActivity >= idleTimeoutMs && !this.kept(slot)) {
        this.log('peer_idle_close', { peer: this.host.name, conn: conn.id, slot: slot.index });
        slot.idleClosing = true;
        conn.destroy();
      }
    }
  }

  /** Close every connection; unacked frames stay in the outbound inbox for the next start. */
  close(): void {
    this.closed = true;
    clearInterval(this.idleTimer);
    for (const slot of this.slots) {
      if (slot.timer !== null) clearTimeout(slot.timer);
      slot.timer = null;
      slot.deadline?.cancel();
      slot.deadline = null;
      slot.conn?.destroy();
    }
  }
}
