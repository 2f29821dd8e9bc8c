/**
 * What a relay reports about itself, as data: its counters per peer, its
 * connections, the whole snapshot (`/metrics.json`) and its readiness
 * (`/readyz`). metrics.ts serves them; metrics-prometheus.ts renders them.
 */

/** Counters of one peer host (both directions). */
export interface PeerCounters {
  framesOut: number;
  bytesOut: number;
  batchesOut: number;
  acksIn: number;
  resends: number;
  undeliverable: number;
  framesIn: number;
  bytesIn: number;
  batchesIn: number;
  acksOut: number;
  duplicates: number;
  connects: number;
  reconnects: number;
  connectFailures: number;
  /** The peer failed to prove the secret, or answered as another host. */
  authFailures: number;
  /** Connections closed because their frames went unacked for ackTimeoutMs. */
  ackTimeouts: number;
  disconnects: number;
}

export function newPeerCounters(): PeerCounters {
  return { framesOut: 0, bytesOut: 0, batchesOut: 0, acksIn: 0, resends: 0, undeliverable: 0, framesIn: 0, bytesIn: 0, batchesIn: 0, acksOut: 0, duplicates: 0, connects: 0, reconnects: 0, connectFailures: 0, authFailures: 0, ackTimeouts: 0, disconnects: 0 };
}

/** One connection as shown by metrics. */
export interface ConnectionSnapshot {
  readonly id: number;
  readonly peer: string;
  readonly direction: 'out' | 'in';
  readonly slot: number;
  readonly state: string;
  readonly framesOut: number;
  readonly framesIn: number;
  readonly bytesOut: number;
  readonly bytesIn: number;
  readonly unacked: number;
  readonly queued: number;
  readonly idleMs: number;
}

/** Everything the relay reports. */
export interface RelaySnapshot {
  readonly host: string;
  readonly pid: number;
  /** Where the relay listens for peers (`host:port`; the port the kernel picked when the config says 0). */
  readonly listen: string;
  /** The UDP doorbell port on 127.0.0.1. */
  readonly doorbellPort: number;
  readonly uptimeSec: number;
  readonly global: Readonly<Record<string, number>>;
  readonly peers: Readonly<Record<string, PeerCounters & { pending: number; unacked: number; queued: number; connections: number }>>;
  /** Each peer's state, as in GET /readyz. */
  readonly peerStates: Readonly<Record<string, PeerState>>;
  readonly connections: readonly ConnectionSnapshot[];
}

/**
 * What this relay knows of a peer from its own connections (GET /readyz,
 * /metrics.json `peerStates`, `shmbus stat`): `up` a link is open; `connecting`
 * a first connection is being made; `down` the last connection attempt failed
 * or the last link broke (and no link is open since); `idle` the last link was
 * closed for want of traffic (the peer was fine then); `unknown` never connected.
 * The server turns any state into `up` while the peer has a link open to it.
 */
export const PEER_STATES = ['up', 'connecting', 'down', 'idle', 'unknown'] as const;
export type PeerState = (typeof PEER_STATES)[number];

/** One peer in GET /readyz. */
export interface PeerReadiness {
  /** A link is up: an outgoing connection in state ready, or an authenticated incoming one. */
  readonly up: boolean;
  /** `up`, or what the last outgoing connection showed: `connecting`, `down`, `idle` or `unknown` ({@link PeerState}). */
  readonly state: PeerState;
  /** Outgoing connections (pool slots) in state ready. */
  readonly outgoing: number;
  /** Authenticated incoming connections from the peer. */
  readonly incoming: number;
}

/** GET /readyz: 200 when `ready`, 503 otherwise, with this JSON either way. */
export interface Readiness {
  /** Listening for peers, config loaded, started and not shutting down. */
  readonly ready: boolean;
  readonly status: 'starting' | 'ready' | 'stopping';
  readonly host: string;
  /** The peer listener is bound. */
  readonly listening: boolean;
  /** The cluster config was read and validated (always true once the relay runs: an invalid config exits 78). */
  readonly configLoaded: boolean;
  /** Peers with a link up, out of `peersTotal` (the other hosts of the config). */
  readonly peersUp: number;
  /** Peers whose state is `down`: the last connection attempt failed or the last link broke. */
  readonly peersDown: number;
  readonly peersTotal: number;
  readonly peers: Readonly<Record<string, PeerReadiness>>;
}
