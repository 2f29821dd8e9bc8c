/**
 * The Prometheus side of the relay's metrics: a prom-client registry whose
 * metrics are filled when scraped (collect-on-scrape) from the relay's own
 * snapshot. The relay's counters stay plain numbers incremented on its one
 * thread; nothing here runs per frame, and nothing runs between scrapes.
 *
 * Process metrics come from /proc and `process` at scrape time. prom-client's
 * collectDefaultMetrics() is not used: its event-loop-lag monitor wakes an
 * idle process about 100 times a second (measured: 295 voluntary context
 * switches in 3 s idle, against 1 without it), and an idle relay is meant to
 * sleep on its doorbell.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { Counter, Gauge, Registry } from 'prom-client';
import { PEER_STATES, type Readiness, type RelaySnapshot } from './snapshot';

type Kind = 'counter' | 'gauge';

/** A metric family: its Prometheus name, type and HELP text. */
export interface Family {
  readonly name: string;
  readonly type: Kind;
  readonly help: string;
}

const c = (name: string, help: string): Family => ({ name: `${name}_total`, type: 'counter', help });
const g = (name: string, help: string): Family => ({ name, type: 'gauge', help });

/** `snapshot.global` key -> metric (labels: host). */
export const GLOBAL_FAMILIES: Readonly<Record<string, Family>> = {
  outboundFrames: c('shmbus_relay_outbound_frames', 'Frames read from the outbound ring (the local "@relay" inbox).'),
  localDeliveries: c('shmbus_relay_local_deliveries', 'Frames from the outbound ring addressed to an endpoint of this host, delivered locally.'),
  unknownHost: c('shmbus_relay_unknown_host', 'Frames addressed to a host that is not in the cluster config (the sender got an UNKNOWN_HOST notice).'),
  strayFrames: c('shmbus_relay_stray_frames', 'Frames in the outbound ring without a remote address (released unsent).'),
  noticesWritten: c('shmbus_relay_notices_written', 'Undeliverable notices written to local senders.'),
  noticesLost: c('shmbus_relay_notices_lost', 'Undeliverable notices that could not be written (sender gone or its inbox full).'),
  malformed: c('shmbus_relay_malformed', 'Incoming connections closed for malformed bytes or a protocol violation.'),
  authFailures: c('shmbus_relay_auth_failures', 'Incoming handshakes whose proof did not verify (different secret or a replay).'),
  handshakeTimeouts: c('shmbus_relay_handshake_timeouts', 'Incoming connections closed because the handshake did not complete in time.'),
  unknownPeers: c('shmbus_relay_unknown_peers', 'Incoming HELLOs from a host that is not in the cluster config.'),
  pausedReads: c('shmbus_relay_paused_reads', 'Times the relay stopped reading peers because frames waiting for local targets reached their bound.'),
  intentsSettled: c('shmbus_relay_intents_settled', "Deliveries a killed predecessor had begun, settled at this relay's start."),
  intentsUnknown: c('shmbus_relay_intents_unknown', 'Settled intents whose target inbox had been replaced or removed (delivered at most once).'),
  delivered: c('shmbus_relay_delivered', 'Frames from peers committed into local inboxes.'),
  duplicates: c('shmbus_relay_duplicates', 'Frames from peers that had been delivered before (acked as duplicates, not delivered again).'),
  undeliverable: c('shmbus_relay_undeliverable', 'Frames from peers answered undeliverable (unknown destination, expired, too large).'),
  unknownAtOnce: c('shmbus_relay_unknown_at_once', 'Frames for a name not registered now nor within unknownGraceMs, answered UNKNOWN_DESTINATION on arrival.'),
  tooLarge: c('shmbus_relay_too_large', 'Frames from peers larger than the target inbox takes (answered TOO_LARGE).'),
  pendingFrames: g('shmbus_relay_pending_frames', 'Frames from peers waiting for a missing or full local target.'),
  pendingBytes: g('shmbus_relay_pending_bytes', 'Payload bytes of the frames waiting for a missing or full local target.'),
  outboundDepth: g('shmbus_relay_outbound_depth', 'Frames in the outbound ring not yet settled by the peer (queued, in flight or waiting for a peer).'),
  doorbellRings: c('shmbus_relay_doorbell_rings', 'UDP doorbell datagrams received.'),
  doorbellGarbage: c('shmbus_relay_doorbell_garbage', 'UDP datagrams on the doorbell port that were not a doorbell ring.'),
  dedupEntries: g('shmbus_relay_dedup_entries', 'Entries in the dedup table (streams whose delivered frames are remembered).'),
  dedupEvictions: c('shmbus_relay_dedup_evictions', 'Dedup entries evicted to make room (least recently used).'),
  uptimeSec: g('shmbus_relay_uptime_seconds', 'Seconds since the relay process started serving.'),
};

/** `snapshot.peers[peer]` key -> metric (labels: host, peer). */
export const PEER_FAMILIES: Readonly<Record<string, Family>> = {
  framesOut: c('shmbus_relay_peer_frames_out', 'Frames sent to the peer relay (resends included).'),
  bytesOut: c('shmbus_relay_peer_sent_bytes', 'Bytes of the DATA messages sent to the peer relay (payloads with their frame and message headers).'),
  batchesOut: c('shmbus_relay_peer_batches_out', 'DATA messages sent to the peer relay.'),
  acksIn: c('shmbus_relay_peer_acks_in', 'Frame acks received from the peer relay.'),
  resends: c('shmbus_relay_peer_resends', 'Frames sent again after a connection was lost before their ack.'),
  undeliverable: c('shmbus_relay_peer_undeliverable', 'Frames the peer reported undeliverable (a notice went to the sender).'),
  framesIn: c('shmbus_relay_peer_frames_in', 'Frames received from the peer relay.'),
  bytesIn: c('shmbus_relay_peer_received_bytes', 'Bytes of the DATA messages received from the peer relay (payloads with their frame and message headers).'),
  batchesIn: c('shmbus_relay_peer_batches_in', 'DATA messages received from the peer relay.'),
  acksOut: c('shmbus_relay_peer_acks_out', 'Frame acks sent to the peer relay.'),
  duplicates: c('shmbus_relay_peer_duplicates', 'Frames from the peer that were already delivered (acked as duplicates, not delivered again).'),
  connects: c('shmbus_relay_peer_connects', 'Outgoing connections that completed the handshake.'),
  reconnects: c('shmbus_relay_peer_reconnects', 'Outgoing connections made again after a previous one was lost.'),
  connectFailures: c('shmbus_relay_peer_connect_failures', 'Outgoing connection attempts that failed (refused, timed out, or handshake failed).'),
  authFailures: c('shmbus_relay_peer_auth_failures', 'Outgoing handshakes in which the peer did not prove the secret or answered as another host.'),
  ackTimeouts: c('shmbus_relay_peer_ack_timeouts', 'Connections closed because frames sent on them went unacked for ackTimeoutMs (their frames were resent).'),
  disconnects: c('shmbus_relay_peer_disconnects', 'Connections to or from the peer that closed.'),
  pending: g('shmbus_relay_peer_pending', 'Frames from the peer waiting for a missing or full target.'),
  unacked: g('shmbus_relay_peer_unacked', 'Frames sent to the peer and not yet acked.'),
  queued: g('shmbus_relay_peer_queued', 'Frames waiting to be sent to the peer.'),
  connections: g('shmbus_relay_peer_connections', 'Open connections with the peer.'),
};

/** A snapshot field without an entry above still gets a HELP line (and a name by the same rules). */
function fallback(prefix: string, key: string, value: number, gauges: boolean): Family {
  const base = `${prefix}${key.replace(/[A-Z]/g, (ch) => `_${ch.toLowerCase()}`)}`;
  return gauges || !Number.isInteger(value) ? g(base, `Relay figure "${key}" (see /metrics.json).`) : c(base, `Relay count "${key}" (see /metrics.json).`);
}

/** What a scrape reads: taken once per scrape, so one scrape shows one consistent snapshot. */
export interface ScrapeSource {
  snapshot(): RelaySnapshot;
  readiness(): Readiness;
}

export interface BuildInfo {
  readonly version: string;
  readonly protocol: number;
}

/** The relay's registry: relay metrics, readiness, build info and process metrics. */
export function relayRegistry(source: ScrapeSource, build: BuildInfo): { registry: Registry; scrape(): Promise<string> } {
  const registry = new Registry();
  let snap: RelaySnapshot | null = null;
  let ready: Readiness | null = null;
  const families = new Map<string, Counter | Gauge>();

  /** Register a family once; values are set per scrape by `fill`. */
  const family = (f: Family, labelNames: string[]): Counter | Gauge => {
    let m = families.get(f.name);
    if (m === undefined) {
      m = f.type === 'counter'
        ? new Counter({ name: f.name, help: f.help, labelNames, registers: [registry] })
        : new Gauge({ name: f.name, help: f.help, labelNames, registers: [registry] });
      families.set(f.name, m);
    }
    return m;
  };
  const set = (m: Counter | Gauge, labels: Record<string, string>, value: number) => {
    if (m instanceof Gauge) m.set(labels, value);
    else if (value >= 0) m.inc(labels, value); // after reset(): the counter's current value
  };

  // Families known up front exist even before the first sample (e.g. no peers yet).
  for (const f of Object.values(GLOBAL_FAMILIES)) family(f, ['host']);
  for (const f of Object.values(PEER_FAMILIES)) family(f, ['host', 'peer']);
  const readyGauge = new Gauge({ name: 'shmbus_relay_ready', help: 'Whether the relay is ready (GET /readyz answers 200): 1 or 0.', labelNames: ['host'], registers: [registry] });
  const peerUp = new Gauge({ name: 'shmbus_relay_peer_up', help: 'Whether a link with the peer is up (an outgoing connection ready, or an authenticated incoming one): 1 or 0.', labelNames: ['host', 'peer'], registers: [registry] });
  const peerState = new Gauge({ name: 'shmbus_relay_peer_state', help: 'The peer\'s state as GET /readyz reports it: 1 for the current state (up, connecting, down, idle, unknown), 0 for the others.', labelNames: ['host', 'peer', 'state'], registers: [registry] });
  const buildInfo = new Gauge({ name: 'shmbus_build_info', help: 'Build of the running relay: shmbus version, Node.js version and wire protocol version.', labelNames: ['version', 'node', 'protocol'], registers: [registry] });
  buildInfo.set({ version: build.version, node: process.versions.node, protocol: String(build.protocol) }, 1);
  registerProcessMetrics(registry);

  const fill = () => {
    const s = snap!;
    for (const m of families.values()) m.reset();
    readyGauge.reset();
    peerUp.reset();
    for (const [key, value] of Object.entries(s.global)) {
      const f = GLOBAL_FAMILIES[key] ?? fallback('shmbus_relay_', key, value, false);
      set(family(f, ['host']), { host: s.host }, value);
    }
    for (const [peer, fields] of Object.entries(s.peers)) {
      for (const [key, value] of Object.entries(fields as unknown as Record<string, number>)) {
        const f = PEER_FAMILIES[key] ?? fallback('shmbus_relay_peer_', key, value, false);
        set(family(f, ['host', 'peer']), { host: s.host, peer }, value);
      }
    }
    const r = ready!;
    readyGauge.set({ host: s.host }, r.ready ? 1 : 0);
    peerState.reset();
    for (const [peer, p] of Object.entries(r.peers)) {
      peerUp.set({ host: s.host, peer }, p.up ? 1 : 0);
      for (const state of PEER_STATES) peerState.set({ host: s.host, peer, state }, p.state === state ? 1 : 0);
    }
  };

  return {
    registry,
    async scrape() {
      snap = source.snapshot();
      ready = source.readiness();
      fill();
      return registry.metrics();
    },
  };
}

/** /proc/self/stat after the command name, or null off Linux. */
function procStat(): string[] | null {
  try {
    const text = readFileSync('/proc/self/stat', 'utf8');
    // Field 2 (comm) is in parentheses and may hold spaces: split after its closing one.
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

function maxFds(): number | null {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** The standard process_* metrics (and a few nodejs_* memory gauges), read at scrape time. */
function registerProcessMetrics(registry: Registry): void {
  const startTime = Date.now() / 1000 - process.uptime();
  const registers = [registry];
  const cpu = (name: string, help: string, pick: (u: NodeJS.CpuUsage) => number) =>
    new Counter({ name, help, registers, collect() {
      this.reset();
      this.inc(pick(process.cpuUsage()) / 1e6);
    } });
  cpu('process_cpu_user_seconds_total', 'Total user CPU time spent in seconds.', (u) => u.user);
  cpu('process_cpu_system_seconds_total', 'Total system CPU time spent in seconds.', (u) => u.system);
  cpu('process_cpu_seconds_total', 'Total user and system CPU time spent in seconds.', (u) => u.user + u.system);
  new Gauge({ name: 'process_start_time_seconds', help: 'Start time of the process since unix epoch in seconds.', registers }).set(startTime);
  new Gauge({ name: 'process_resident_memory_bytes', help: 'Resident memory size in bytes.', registers, collect() {
    this.set(process.memoryUsage.rss());
  } });
  new Gauge({ name: 'process_virtual_memory_bytes', help: 'Virtual memory size in bytes.', registers, collect() {
    const f = procStat();
    // After comm: field 23 (vsize, bytes) is index 20.
    if (f !== null) this.set(Number(f[20]));
  } });
  new Gauge({ name: 'process_open_fds', help: 'Number of open file descriptors.', registers, collect() {
    try {
      // readdir itself holds one descriptor on the folder while it reads.
      this.set(readdirSync('/proc/self/fd').length - 1);
    } catch {
      // Not Linux: no figure.
    }
  } });
  const limit = maxFds();
  if (limit !== null) new Gauge({ name: 'process_max_fds', help: 'Maximum number of open file descriptors.', registers }).set(limit);
  const heap = (name: string, help: string, pick: (m: NodeJS.MemoryUsage) => number) =>
    new Gauge({ name, help, registers, collect() {
      this.set(pick(process.memoryUsage()));
    } });
  heap('nodejs_heap_size_total_bytes', 'Process heap size from Node.js in bytes.', (m) => m.heapTotal);
  heap('nodejs_heap_size_used_bytes', 'Process heap size used from Node.js in bytes.', (m) => m.heapUsed);
  heap('nodejs_external_memory_bytes', 'Node.js external memory size in bytes.', (m) => m.external);
}
