/**
 * The seam between the relay's data path and the transport that carries it
 * to a peer host. The data path (outbound.ts: the `@relay` inbox → flows →
 * STREAM/DATA messages; ACK → release) knows a peer only as a
 * {@link PeerTransport}: a fixed set of {@link Slot}s, each of which is, while
 * `ready`, one ordered channel that takes whole protocol messages (docs/PROTOCOL.md)
 * and answers with ACK messages for what it delivered. Frames of one source go
 * through one slot, so they stay in order.
 *
 * pool.ts (PeerLink: a pool of TCP or TLS connections with the relay
 * handshake, backoff, idle and ack timeouts) is the transport today. A second
 * one (a NATS JetStream subject per slot, say) implements the same two
 * interfaces and tells the data path the same four {@link LinkEvents}: the
 * messages, the sequence/ack model and the exactly-once argument do not
 * change, and nothing of the data path is copied.
 */
import type { AckMessage } from './codec';
import type { PeerCounters, PeerState } from './snapshot';

/** One ordered channel to the peer, as the data path uses it (relay/connection.ts Connection for TCP). */
export interface Channel {
  /** Queue one whole protocol message (STREAM or DATA) for the peer; false once it is past its buffer (see `congested`). */
  send(message: Buffer): boolean;
  /** The channel wants no more until it tells `writable`. */
  readonly congested: boolean;
  /** Close it (`closed` follows); what it carried unacked goes again on the next channel. */
  destroy(error?: Error): void;
  /** Frames sent on it, and frames acked on it (for per-connection figures). */
  framesOut: number;
  framesIn: number;
}

/** What a slot's owner (outbound.ts) is told by the transport. */
export interface LinkEvents {
  /** The slot's channel is open (authenticated): send on it. New stream ids start at 0 (epoch + 1). */
  opened(slot: Slot): void;
  /** The slot's channel closed: whatever it carried unacked must go again on the next one. */
  closed(slot: Slot): void;
  /** An ACK arrived on the slot's channel (throw ProtocolError to refuse it). */
  acked(slot: Slot, ack: AckMessage): void;
  /** The slot's channel can take more after being congested. */
  writable(slot: Slot): void;
}

/** A transport may use only some of these; the data path sends only on `ready`. */
export type SlotState = 'idle' | 'connecting' | 'handshake' | 'ready' | 'backoff';

/** One slot of a peer's transport: the data path's view (the transport keeps its own fields in a subclass). */
export class Slot<C extends Channel = Channel> {
  state: SlotState = 'idle';
  conn: C | null = null;
  /** Frames sent on the current channel and not yet acked (kept by outbound.ts). */
  unacked = 0;
  /** Frames waiting to be sent (kept by outbound.ts). */
  queued = 0;
  /** When the oldest unacked frame was sent or the last ACK arrived, whichever is later (ms). */
  ackClock = 0;
  /** The acceptor's maxFramesPerBatch on the current channel. */
  maxFrames = 1;
  /** Channels opened so far (a new one is a new set of stream ids). */
  epoch = 0;

  constructor(
    readonly link: PeerTransport,
    readonly index: number,
  ) {}
}

/** The transport to one peer host. */
export interface PeerTransport {
  /** The peer's host name. */
  readonly name: string;
  readonly slots: readonly Slot[];
  readonly counters: PeerCounters;
  /** What this side knows of the peer (GET /readyz). */
  readonly state: PeerState;
  /** Channels open or opening. */
  readonly connections: number;
  /** Open what the transport keeps open at all times (limits.minLinks); called once the data path knows its slots. */
  start(): void;
  /** The slot has frames to send: open its channel if it has none. */
  want(slot: Slot): void;
  /** Close every channel; unacked frames stay in the outbound inbox for the next start. */
  close(): void;
}
