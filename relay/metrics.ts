/**
 * Relay counters and their loopback HTTP endpoint.
 *
 *   GET /metrics        Prometheus text format (version 0.0.4)
 *   GET /metrics.json   the same snapshot as JSON (read by `shmbus stat`)
 *
 * Counters are plain numbers incremented on the relay's one thread; the
 * endpoint renders a snapshot on request. It listens on a loopback address only.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

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
  readonly connections: readonly ConnectionSnapshot[];
}

const HELP: Record<string, string> = {
  framesOut: 'Frames sent to the peer relay (resends included).',
  bytesOut: 'Payload bytes sent to the peer relay.',
  batchesOut: 'DATA messages sent to the peer relay.',
  acksIn: 'Frame acks received from the peer relay.',
  resends: 'Frames sent again after a connection was lost before their ack.',
  undeliverable: 'Frames the peer reported undeliverable (a notice went to the sender).',
  framesIn: 'Frames received from the peer relay.',
  bytesIn: 'Payload bytes received from the peer relay.',
  batchesIn: 'DATA messages received from the peer relay.',
  acksOut: 'Frame acks sent to the peer relay.',
  duplicates: 'Frames from the peer that were already delivered (acked as duplicates, not delivered again).',
  connects: 'Outgoing connections that completed the handshake.',
  reconnects: 'Outgoing connections made again after a previous one was lost.',
  connectFailures: 'Outgoing connection attempts that failed (refused, timed out, or handshake failed).',
  authFailures: 'Outgoing handshakes in which the peer did not prove the secret or answered as another host.',
  ackTimeouts: 'Connections closed because frames sent on them went unacked for ackTimeoutMs (their frames were resent).',
  disconnects: 'Connections to or from the peer that closed.',
  pending: 'Frames from the peer waiting for a missing or full target.',
  unacked: 'Frames sent to the peer and not yet acked.',
  queued: 'Frames waiting to be sent to the peer.',
  connections: 'Open connections with the peer.',
};

function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

const GAUGES = new Set(['pending', 'unacked', 'queued', 'connections', 'pendingFrames', 'pendingBytes', 'outboundDepth', 'dedupEntries', 'uptimeSec']);

/** Render a snapshot in the Prometheus text exposition format. */
export function renderPrometheus(s: RelaySnapshot): string {
  const lines: string[] = [];
  const host = escapeLabel(s.host);
  for (const [name, value] of Object.entries(s.global)) {
    const metric = `shmbus_relay_${snake(name)}${GAUGES.has(name) ? '' : '_total'}`;
    lines.push(`# TYPE ${metric} ${GAUGES.has(name) ? 'gauge' : 'counter'}`, `${metric}{host="${host}"} ${value}`);
  }
  const peerNames = Object.keys(s.peers);
  if (peerNames.length > 0) {
    for (const field of Object.keys(s.peers[peerNames[0]!]!)) {
      const gauge = GAUGES.has(field);
      const metric = `shmbus_relay_peer_${snake(field)}${gauge ? '' : '_total'}`;
      if (HELP[field]) lines.push(`# HELP ${metric} ${HELP[field]}`);
      lines.push(`# TYPE ${metric} ${gauge ? 'gauge' : 'counter'}`);
      for (const peer of peerNames) {
        const value = (s.peers[peer] as unknown as Record<string, number>)[field];
        lines.push(`${metric}{host="${host}",peer="${escapeLabel(peer)}"} ${value}`);
      }
    }
  }
  // Per-connection figures stay in /metrics.json (and `shmbus stat`): a label per connection id
  // would give Prometheus a new series at every reconnect, without bound.
  return `${lines.join('\n')}\n`;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** True for addresses that stay on this machine. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** Serve snapshots over HTTP on a loopback address. Resolves with the bound port. */
export async function serveMetrics(host: string, port: number, snapshot: () => RelaySnapshot): Promise<{ server: Server; port: number }> {
  if (!isLoopback(host)) throw new Error(`metrics address ${host} is not a loopback address`);
  const server = createServer((req, res) => {
    if (req.method !== 'GET') {
      res.writeHead(405).end();
      return;
    }
    if (req.url === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(renderPrometheus(snapshot()));
    } else if (req.url === '/metrics.json') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(snapshot()));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.unref();
  return { server, port: (server.address() as AddressInfo).port };
}
