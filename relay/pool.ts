/**
 * PeerLink: the pool of outgoing connections from this relay to one peer host.
 *
 * The pool has `poolSize` slots. Every frame of one source goes through the
 * same slot (chosen by the source's directory index), so frames of one source
 * leave in order on one TCP stream: per (source, destination) FIFO holds.
 * A slot holds the outbound frame ids of its frames: `queued` (not yet sent) and
 * `unacked` (sent, in send order). When its connection breaks, the unacked
 * positions go back to the front of the queue and are sent again after the
 * reconnect; the receiving relay drops the ones it had delivered.
 *
 * Connections are opened on demand with a timeout, retried with exponential
 * backoff and jitter, and closed after `idleTimeoutMs` without activity (never
 * while they hold frames).
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { ClusterConfig, HostConfig } from '../src/config';
import { Connection } from './connection';
import type { PeerCounters } from './metrics';
import {
  DataBatchWriter,
  MSG_ACK,
  MSG_CHALLENGE,
  MSG_ERROR,
  MSG_WELCOME,
  ERR_AUTH_FAILED,
  ERR_UNEXPECTED,
  ERR_UNKNOWN_HOST,
  ProtocolError,
  acceptorProof,
  connectorProof,
  encodeHello,
  encodeProof,
  newNonce,
  verifyProof,
  type Message,
} from './protocol';

/** What a PeerLink needs from the server. */
export interface LinkContext {
  readonly config: ClusterConfig;
  readonly writer: DataBatchWriter;
  /** Append the frame at ring `position` to the writer; false if it did not fit (or is gone: then `gone` is called). */
  appendFrame(position: number, writer: DataBatchWriter): 'ok' | 'full' | 'gone';
  /** The peer acked frame `position` with `status`. */
  acked(position: number, status: number, peer: string): void;
  /** Called after a batch of acks was applied. */
  ackBatchDone(): void;
  log(event: string, fields: Record<string, unknown>): void;
  track(conn: Connection): void;
  untrack(conn: Connection): void;
}

type SlotState = 'idle' | 'connecting' | 'handshake' | 'ready' | 'backoff';

class Slot {
  state: SlotState = 'idle';
  conn: Connection | null = null;
  /** Positions waiting to be sent, oldest first (`head` indexes the next one). */
  queued: number[] = [];
  head = 0;
  /** Positions sent and not yet acked, in send order. */
  readonly unacked = new Map<number, true>();
  failures = 0;
  everConnected = false;
  timer: NodeJS.Timeout | null = null;
  maxFrames = 65535;
  nonce: Buffer = Buffer.alloc(0);
  /** When the oldest unacked frame was sent, or the last ACK arrived, whichever is later (ms). */
  ackClock = 0;
  /** Handshake progress of the current connection. */
  step: 'hello-sent' | 'proof-sent' = 'hello-sent';
  /** The current connection is being closed by the idle timeout (a disconnect, not a failure). */
  idleClosing = false;

  constructor(readonly index: number) {}

  get queuedCount(): number {
    return this.queued.length - this.head;
  }
}

export class PeerLink {
  readonly slots: Slot[];
  private idleTimer: NodeJS.Timeout;
  private closed = false;

  constructor(
    readonly host: HostConfig,
    private readonly ctx: LinkContext,
    readonly counters: PeerCounters,
  ) {
    this.slots = Array.from({ length: ctx.config.limits.poolSize }, (_, i) => new Slot(i));
    const { idleTimeoutMs, ackTimeoutMs } = ctx.config.limits;
    this.idleTimer = setInterval(() => this.evictIdle(), Math.max(10, Math.min(idleTimeoutMs / 2, ackTimeoutMs / 4, 1000)));
    this.idleTimer.unref();
  }

  get name(): string {
    return this.host.name;
  }

  /** Frames queued or unacked on this link. */
  get outstanding(): { queued: number; unacked: number; connections: number } {
    let queued = 0;
    let unacked = 0;
    let connections = 0;
    for (const s of this.slots) {
      queued += s.queuedCount;
      unacked += s.unacked.size;
      if (s.conn !== null) connections++;
    }
    return { queued, unacked, connections };
  }

  /** Queue the frame at ring `position`, sent by local endpoint `sourceIndex`. */
  enqueue(position: number, sourceIndex: number): void {
    const slot = this.slots[sourceIndex % this.slots.length]!;
    slot.queued.push(position);
    if (slot.state === 'idle') this.connect(slot);
  }

  /** Send what the ready slots have queued, in batches. */
  flush(): void {
    for (const slot of this.slots) if (slot.state === 'ready') this.flushSlot(slot);
  }

  private flushSlot(slot: Slot): void {
    const conn = slot.conn!;
    const writer = this.ctx.writer;
    const limits = this.ctx.config.limits;
    while (slot.queuedCount > 0 && !conn.congested) {
      writer.setLimits(limits.maxMessageBytes, Math.min(slot.maxFrames, limits.batchFrames));
      let sent = 0;
      while (slot.queuedCount > 0) {
        const position = slot.queued[slot.head]!;
        const result = this.ctx.appendFrame(position, writer);
        if (result === 'full') break;
        slot.head++;
        if (result === 'gone') continue;
        if (slot.unacked.size === 0) slot.ackClock = performance.now();
        slot.unacked.set(position, true);
        sent++;
      }
      const message = writer.finish();
      if (message === null) break;
      this.counters.batchesOut++;
      this.counters.framesOut += sent;
      this.counters.bytesOut += message.length;
      conn.framesOut += sent;
      conn.send(message);
    }
    if (slot.head > 4096 && slot.head * 2 > slot.queued.length) {
      slot.queued = slot.queued.slice(slot.head);
      slot.head = 0;
    }
  }

  private connect(slot: Slot): void {
    if (this.closed) return;
    const { limits, tls, self } = this.ctx.config;
    slot.state = 'connecting';
    const address = this.host.relay;
    let socket: Socket;
    if (tls !== undefined) {
      socket = tlsConnect({
        host: address.host,
        port: address.port,
        key: tls.key,
        cert: tls.cert,
        ca: tls.ca,
        // Peers are identified by the HMAC handshake; TLS adds encryption and CA-checked certificates.
        checkServerIdentity: () => undefined,
      });
    } else {
      socket = netConnect({ host: address.host, port: address.port });
    }
    const conn = new Connection(socket, 'out', limits.maxMessageBytes, {
      message: (c, msg) => this.onMessage(slot, c, msg),
      closed: (c, err) => this.onClosed(slot, c, err),
      drained: () => this.flushSlot(slot),
    });
    conn.peer = this.host.name;
    slot.conn = conn;
    this.ctx.track(conn);
    const timeout = setTimeout(() => conn.destroy(new Error(`connect to ${address.host}:${address.port} timed out after ${limits.connectTimeoutMs} ms`)), limits.connectTimeoutMs);
    socket.once(tls !== undefined ? 'secureConnect' : 'connect', () => {
      clearTimeout(timeout);
      conn.state = 'handshake';
      slot.state = 'handshake';
      slot.nonce = newNonce();
      slot.step = 'hello-sent';
      conn.send(encodeHello(slot.nonce, self.name));
      const handshake = setTimeout(() => conn.destroy(new Error(`handshake with ${this.host.name} timed out after ${limits.handshakeTimeoutMs} ms`)), limits.handshakeTimeoutMs);
      socket.once('close', () => clearTimeout(handshake));
      slot.timer = handshake;
    });
    socket.once('close', () => clearTimeout(timeout));
  }

  private onMessage(slot: Slot, conn: Connection, msg: Message): void {
    const { secret, self } = this.ctx.config;
    if (msg.type === MSG_ERROR) {
      this.ctx.log('peer_error', { peer: this.host.name, conn: conn.id, code: msg.code, message: msg.message });
      conn.destroy(new Error(`peer ${this.host.name} refused: ${msg.message}`));
      return;
    }
    if (conn.state === 'handshake' && slot.state === 'handshake') {
      if (msg.type === MSG_CHALLENGE && slot.step === 'hello-sent') {
        if (msg.hostName !== this.host.name) {
          this.counters.authFailures++;
          throw new ProtocolError(ERR_UNKNOWN_HOST, `dialled ${this.host.name} but the acceptor says it is ${msg.hostName}`, 0, 0);
        }
        if (!verifyProof(acceptorProof(secret, slot.nonce, msg.nonce, self.name, this.host.name), msg.proof)) {
          this.counters.authFailures++;
          throw new ProtocolError(ERR_AUTH_FAILED, `${this.host.name} did not prove knowledge of the cluster secret`, 0, 0);
        }
        conn.send(encodeProof(connectorProof(secret, slot.nonce, msg.nonce, self.name, this.host.name)));
        slot.step = 'proof-sent';
        return;
      }
      if (msg.type === MSG_WELCOME && slot.step === 'proof-sent') {
        if (slot.timer !== null) clearTimeout(slot.timer);
        slot.timer = null;
        conn.authenticated();
        slot.state = 'ready';
        slot.maxFrames = msg.maxFramesPerBatch;
        this.counters.connects++;
        if (slot.everConnected) this.counters.reconnects++;
        slot.everConnected = true;
        slot.failures = 0;
        this.ctx.log('peer_up', { peer: this.host.name, conn: conn.id, slot: slot.index, requeued: slot.queuedCount });
        this.flushSlot(slot);
        return;
      }
      throw new ProtocolError(ERR_UNEXPECTED, `message type ${msg.type} during the handshake`, 0, 0);
    }
    if (msg.type === MSG_ACK && conn.state === 'ready') {
      slot.ackClock = performance.now();
      for (const entry of msg.entries) {
        const position = entry.frameId >>> 0;
        if (!slot.unacked.delete(position)) continue; // an ack for a frame we already resent elsewhere
        this.counters.acksIn++;
        conn.framesIn++;
        this.ctx.acked(position, entry.status, this.host.name);
      }
      this.ctx.ackBatchDone();
      return;
    }
    throw new ProtocolError(ERR_UNEXPECTED, `message type ${msg.type} is not allowed on an outgoing connection`, 0, 0);
  }

  private onClosed(slot: Slot, conn: Connection, err: Error | null): void {
    this.ctx.untrack(conn);
    if (slot.timer !== null) clearTimeout(slot.timer);
    slot.timer = null;
    slot.conn = null;
    const wasReady = slot.state === 'ready';
    const idleClose = slot.idleClosing;
    slot.idleClosing = false;
    this.counters.disconnects += wasReady ? 1 : 0;
    if (!wasReady) {
      slot.failures++;
      this.counters.connectFailures++;
    }
    if (idleClose && wasReady && slot.unacked.size === 0) {
      // Closed by us for want of traffic: already logged as peer_idle_close; nothing to resend.
      slot.state = slot.queuedCount > 0 && !this.closed ? 'backoff' : 'idle';
      if (slot.state === 'backoff') this.backoff(slot);
      return;
    }
    // Frames sent but not acked go back to the front, in the order they were sent.
    if (slot.unacked.size > 0) {
      this.counters.resends += slot.unacked.size;
      slot.queued = [...slot.unacked.keys(), ...slot.queued.slice(slot.head)];
      slot.head = 0;
      slot.unacked.clear();
    }
    this.ctx.log(wasReady ? 'peer_down' : 'connect_failed', { peer: this.host.name, conn: conn.id, slot: slot.index, reason: err?.message ?? 'closed', queued: slot.queuedCount });
    if (this.closed) {
      slot.state = 'idle';
      return;
    }
    if (slot.queuedCount > 0) this.backoff(slot);
    else slot.state = 'idle';
  }

  private backoff(slot: Slot): void {
    const { backoffInitialMs, backoffMaxMs } = this.ctx.config.limits;
    const base = Math.min(backoffMaxMs, backoffInitialMs * 2 ** Math.min(slot.failures, 30));
    const delay = base / 2 + Math.random() * (base / 2);
    slot.state = 'backoff';
    slot.timer = setTimeout(() => {
      slot.timer = null;
      if (slot.state === 'backoff') this.connect(slot);
    }, delay);
  }

  /**
   * Close connections without frames whose last activity is older than the
   * idle timeout, and connections whose frames go unacked for longer than the
   * ack timeout (a silent partition: TCP alone would take many minutes to give
   * up); their frames are resent on a new connection.
   */
  private evictIdle(): void {
    const now = performance.now();
    for (const slot of this.slots) {
      const conn = slot.conn;
      if (conn !== null && slot.state === 'ready' && slot.unacked.size > 0 && now - slot.ackClock > this.ctx.config.limits.ackTimeoutMs) {
        this.counters.ackTimeouts++;
        this.ctx.log('peer_stalled', { peer: this.host.name, conn: conn.id, slot: slot.index, unacked: slot.unacked.size, ms: Math.round(now - slot.ackClock) });
        conn.destroy(new Error(`no ack for ${Math.round(now - slot.ackClock)} ms`));
        continue;
      }
      if (conn === null || slot.state !== 'ready' || slot.unacked.size > 0 || slot.queuedCount > 0) continue;
      if (now - conn.lastActivity >= this.ctx.config.limits.idleTimeoutMs) {
        this.ctx.log('peer_idle_close', { peer: this.host.name, conn: conn.id, slot: slot.index });
        slot.idleClosing = true;
        conn.destroy();
      }
    }
  }

  /** Close every connection; queued and unacked frames stay in the outbound inbox for the next start. */
  close(): void {
    this.closed = true;
    clearInterval(this.idleTimer);
    for (const slot of this.slots) {
      if (slot.timer !== null) clearTimeout(slot.timer);
      slot.timer = null;
      slot.conn?.destroy();
    }
  }
}
