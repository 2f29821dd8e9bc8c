/**
 * Inbound: one connection a peer relay opened to us. The acceptor's half of
 * the handshake (handshake.ts), then STREAM messages bind stream ids and DATA
 * runs go to delivery.ts; as delivery settles frames this link answers with
 * cumulative ACK entries — one per stream per pass while frames are
 * delivered, one more for each undeliverable frame — in one ACK message per
 * chunk read from the socket (or per retry pass).
 */
import type { Socket } from 'node:net';
import { OUTCOME_DUPLICATE, isUndeliverable } from '../src/internal';
import {
  ACK_COUNT_OFFSET,
  ACK_ENTRIES_OFFSET,
  ACK_ENTRY_LENGTH,
  ACK_ENTRY_STATUS_OFFSET,
  ACK_ENTRY_THROUGH_OFFSET,
  DATA_RUNS_OFFSET,
  ERR_AUTH_FAILED,
  ERR_UNEXPECTED,
  ERR_UNKNOWN_HOST,
  MAX_ACK_ENTRIES,
  MESSAGE_LENGTH_FIELD_LENGTH,
  MSG_ACK,
  MSG_DATA,
  MSG_ERROR,
  MSG_STREAM,
  ProtocolError,
  RUN_FRAME_COUNT_OFFSET,
  RUN_HEADER_LENGTH,
  type DataMessage,
  type Message,
  type StreamMessage,
} from './codec';
import type { ClusterConfig } from './config';
import { Connection, StageDeadline } from './connection';
import type { Delivery } from './delivery';
import { InboundStream, type StreamOwner } from './stream';
import { AcceptorHandshake } from './handshake';
import type { PeerCounters } from './metrics';
import type { Logger } from './pool';

/** Counters of accepted connections that belong to no peer (yet). */
export interface AcceptorCounters {
  malformed: number;
  authFailures: number;
  handshakeTimeouts: number;
  unknownPeers: number;
}

/** A stream of an inbound link: its id there and how far it has been acked. */
class LinkStream extends InboundStream {
  streamId = 0;
  acked = 0;
  lastOutcome = 0;
  dirty = false;
}

export class InboundLink implements StreamOwner {
  readonly conn: Connection;
  private readonly handshake: AcceptorHandshake;
  private readonly streams: LinkStream[] = [];
  /** Until the handshake completes. */
  private readonly deadline: StageDeadline;
  private counters: PeerCounters | null = null;
  private hostId = 0;
  private dirty: LinkStream[] = [];
  private ack = Buffer.allocUnsafe(ACK_ENTRIES_OFFSET + 64 * ACK_ENTRY_LENGTH);
  private ackEntries = 0;
  /** Most entries in one ACK: it must fit the peer's maxMessageBytes (the relays of a cluster share limits). */
  private readonly maxAckEntries: number;
  /** Stream by (source index, generation, destination): one stream per pair on a connection. */
  private readonly pairs = new Set<string>();

  constructor(
    socket: Socket,
    private readonly config: ClusterConfig,
    bootId: number,
    private readonly delivery: Delivery,
    private readonly peerCounters: (peer: string) => PeerCounters,
    private readonly acceptor: AcceptorCounters,
    private readonly log: Logger,
    /** The link is over (closed, for whatever reason). */
    private readonly onClose: (link: InboundLink, wasOpen: boolean) => void,
  ) {
    this.maxAckEntries = Math.min(MAX_ACK_ENTRIES, Math.floor((config.limits.maxMessageBytes + MESSAGE_LENGTH_FIELD_LENGTH - ACK_ENTRIES_OFFSET) / ACK_ENTRY_LENGTH));
    this.handshake = new AcceptorHandshake({
      secret: config.secret,
      selfName: config.self.name,
      isPeer: (name) => config.hosts.has(name) && name !== config.self.name,
      bootId,
      maxFramesPerBatch: config.limits.batchFrames,
    });
    this.conn = new Connection(socket, 'in', config.limits.maxMessageBytes, {
      message: (_c, msg) => this.onMessage(msg),
      closed: (_c, err) => this.closed(err),
      chunkDone: () => this.delivery.endPass(),
    });
    this.conn.state = 'handshake';
    this.deadline = new StageDeadline(
      config.limits.handshakeTimeoutMs,
      () => this.handshake.progress,
      () => {
        // docs/PROTOCOL.md: a handshake that does not complete in time is closed without an ERROR.
        this.acceptor.handshakeTimeouts++;
        this.log('peer_refused', { conn: this.conn.id, claimed: this.handshake.peer, reason: 'handshake timeout', remote: socket.remoteAddress });
        this.conn.destroy(new Error('handshake timeout'));
      },
    );
  }

  get open(): boolean {
    return this.handshake.done && !this.conn.isClosed;
  }

  get peer(): string | null {
    return this.handshake.peer;
  }

  private onMessage(msg: Message): void {
    if (msg.type === MSG_ERROR) {
      if (!this.handshake.done && (msg.code === ERR_AUTH_FAILED || msg.code === ERR_UNKNOWN_HOST)) this.acceptor.authFailures++;
      this.log('peer_error', { peer: this.handshake.peer, conn: this.conn.id, code: msg.code, message: msg.message });
      this.conn.destroy();
      return;
    }
    if (!this.handshake.done) {
      this.handshakeStep(msg);
      return;
    }
    if (msg.type === MSG_DATA) this.onData(msg);
    else if (msg.type === MSG_STREAM) this.onStream(msg);
    else throw new ProtocolError(ERR_UNEXPECTED, `a ${msg.type === MSG_ACK ? 'ACK' : `type ${msg.type}`} message is not allowed on an incoming connection (only STREAM and DATA)`);
  }

  private handshakeStep(msg: Message): void {
    let reply: Buffer;
    try {
      reply = this.handshake.onMessage(msg);
    } catch (err) {
      if (err instanceof ProtocolError && (err.wireCode === ERR_UNKNOWN_HOST || err.wireCode === ERR_AUTH_FAILED)) {
        if (err.wireCode === ERR_UNKNOWN_HOST) this.acceptor.unknownPeers++;
        else this.acceptor.authFailures++;
        this.log('peer_refused', { conn: this.conn.id, claimed: this.handshake.peer ?? (msg as { hostName?: string }).hostName, reason: err.wireCode === ERR_UNKNOWN_HOST ? 'unknown host' : 'authentication failed', remote: this.conn.socket.remoteAddress });
        this.conn.refuse(err.wireCode, err.message);
        return;
      }
      throw err;
    }
    this.conn.peer = this.handshake.peer;
    this.conn.send(reply);
    if (!this.handshake.done) return;
    this.deadline.cancel();
    // DATA with more frames than WELCOME announced is TOO_LARGE.
    this.conn.authenticated(this.config.limits.batchFrames);
    this.counters = this.peerCounters(this.handshake.peer!);
    this.hostId = this.config.hostId(this.handshake.peer!);
    if (this.delivery.full) this.conn.pause();
    this.log('peer_accepted', { peer: this.handshake.peer, conn: this.conn.id });
  }

  private onStream(msg: StreamMessage): void {
    if (msg.streamId !== this.streams.length) {
      throw new ProtocolError(ERR_UNEXPECTED, `STREAM binds id ${msg.streamId}; the next unused id is ${this.streams.length}`);
    }
    const pair = `${msg.sourceIndex}:${msg.sourceGeneration}\u0000${msg.destinationName}`;
    if (this.pairs.has(pair)) {
      // Two streams of one pair could interleave out of sequence order: refused (docs/PROTOCOL.md, STREAM).
      throw new ProtocolError(ERR_UNEXPECTED, `STREAM ${msg.streamId} binds source ${msg.sourceIndex}:${msg.sourceGeneration} -> ${msg.destinationName}, already bound on this connection`);
    }
    this.pairs.add(pair);
    const stream = new LinkStream(this, this.hostId, msg.sourceIndex, msg.sourceGeneration, msg.destinationName, `${msg.sourceName}@${this.handshake.peer}`);
    stream.streamId = msg.streamId;
    this.streams.push(stream);
  }

  private onData(msg: DataMessage): void {
    const bytes = msg.bytes;
    const counters = this.counters!;
    counters.batchesIn++;
    counters.framesIn += msg.frameCount;
    counters.bytesIn += bytes.length;
    this.conn.framesIn += msg.frameCount;
    let at = DATA_RUNS_OFFSET;
    while (at < bytes.length) {
      const streamId = bytes.readUInt32LE(at);
      const n = bytes.readUInt32LE(at + RUN_FRAME_COUNT_OFFSET);
      const stream = this.streams[streamId];
      if (stream === undefined) throw new ProtocolError(ERR_UNEXPECTED, `DATA names stream ${streamId}, not bound by a STREAM message`);
      at = this.delivery.deliverRun(stream, bytes, at + RUN_HEADER_LENGTH, n);
    }
  }

  /** Delivery settled frames of one of our streams. */
  settled(s: InboundStream, count: number, outcome: number, _tag: number): void {
    const stream = s as LinkStream;
    const counters = this.counters!;
    counters.acksOut += count;
    if (outcome === OUTCOME_DUPLICATE) counters.duplicates += count;
    if (isUndeliverable(outcome)) {
      this.entry(stream.streamId, stream.settledCount, outcome);
      stream.acked = stream.settledCount;
      return;
    }
    stream.lastOutcome = outcome;
    if (!stream.dirty) {
      stream.dirty = true;
      this.dirty.push(stream);
    }
  }

  /** Send one ACK with an entry for every stream settled since the last one. */
  flush(): void {
    for (const stream of this.dirty) {
      stream.dirty = false;
      if (stream.settledCount > stream.acked) {
        this.entry(stream.streamId, stream.settledCount, stream.lastOutcome);
        stream.acked = stream.settledCount;
      }
    }
    this.dirty.length = 0;
    this.sendAck();
  }

  private entry(streamId: number, through: number, status: number): void {
    if (this.ackEntries === this.maxAckEntries) this.sendAck();
    const at = ACK_ENTRIES_OFFSET + this.ackEntries * ACK_ENTRY_LENGTH;
    if (at + ACK_ENTRY_LENGTH > this.ack.length) {
      const bigger = Buffer.allocUnsafe(this.ack.length * 2);
      this.ack.copy(bigger, 0, 0, at);
      this.ack = bigger;
    }
    this.ack.writeUInt32LE(streamId, at);
    this.ack.writeUInt32LE(through >>> 0, at + ACK_ENTRY_THROUGH_OFFSET);
    this.ack[at + ACK_ENTRY_STATUS_OFFSET] = status;
    this.ackEntries++;
  }

  private sendAck(): void {
    const n = this.ackEntries;
    if (n === 0) return;
    this.ackEntries = 0;
    if (this.conn.isClosed) return;
    const length = ACK_ENTRIES_OFFSET + n * ACK_ENTRY_LENGTH;
    const message = Buffer.from(this.ack.subarray(0, length));
    message.writeUInt32LE(length - MESSAGE_LENGTH_FIELD_LENGTH, 0);
    message[4] = MSG_ACK;
    message.writeUInt32LE(n, ACK_COUNT_OFFSET);
    this.conn.send(message);
  }

  pause(): void {
    if (this.handshake.done) this.conn.pause();
  }

  resume(): void {
    this.conn.resume();
  }

  /** Send the pending ACK entries now (shutdown). */
  flushAcks(): void {
    this.flush();
  }

  private closed(err: Error | null): void {
    this.deadline.cancel();
    // Frames held for our streams are not ours to settle any more: the sender resends them.
    for (const stream of this.streams) this.delivery.dropStream(stream);
    if (this.conn.malformed) this.acceptor.malformed++;
    const wasOpen = this.handshake.done;
    if (wasOpen && this.counters !== null) {
      this.counters.disconnects++;
      this.log('peer_disconnected', { peer: this.handshake.peer, conn: this.conn.id, reason: err?.message ?? 'closed' });
    }
    this.onClose(this, wasOpen);
  }
}
