/**
 * The full-mesh run (issue 9), one driver for the test (test/67, N = 8) and the
 * benchmark (`npm run bench -- mesh --hosts 36`, bench/mesh.ts):
 *
 *   1. N hosts in network namespaces on a bridge (./mesh), one cluster config;
 *   2. one transit-server per host, all started at once (a cold start);
 *   3. one sink per host, then one producer per host sending K frames to the
 *      sink of every other host, all N × (N−1) streams at once;
 *   4. every sink must read each source's K frames exactly once and in order
 *      (and nothing more while it lingers);
 *   5. figures while the relays still run: time to full mesh (the latest,
 *      over relays, of the moment every peer had an authenticated link — from
 *      the relays' `peer_up` / `peer_accepted` log events), frames/s across the
 *      mesh, per relay RSS (now and peak), CPU, open fds, established TCP
 *      links (ss), log lines, counters (resends, duplicates dropped,
 *      reconnects, connect failures), and /readyz (every peer up, or idle:
 *      reached, its link since closed by the idle timeout);
 *   6. optionally, after `idleCloseMs` without traffic, the TCP links again
 *      (the idle timeout must have closed them);
 *   7. every relay stopped with SIGTERM: exit 0, clean (nothing unacked or
 *      pending), no segment left; then everything removed and checked gone.
 *
 * Whatever is wrong is collected in `problems` (empty for a good run); the
 * test asserts it is empty, the benchmark refuses to report figures otherwise.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { deadline, removeAllNetns, type NetnsCluster, type NsProcess, type NsRelay, type RelayMetrics } from './netns';
import { makeMesh, meshLeftovers, openFds, procUsage, relayConnections, spawnMeshProducer, spawnMeshSink, startMeshRelays, writeMeshCluster, type Mesh } from './mesh';

export interface MeshRunOptions {
  /** N: hosts. */
  hosts: number;
  /** K: frames per stream (each host to each other host). */
  frames: number;
  payloadSize?: number;
  /** Relay port on every host's address (each namespace has its own ports). */
  port?: number;
  /** The cluster config's `limits`. */
  limits: Record<string, number>;
  /** Deadline for the stream: from the producers' start to the last sink done. */
  streamMs: number;
  /** After the stream, wait this long and count the relays' TCP links again (set it above limits.idleTimeoutMs); 0: do not. */
  idleCloseMs?: number;
  /** Progress lines (phases), for a benchmark's console. */
  log?: (line: string) => void;
  /** Write each relay's log (stdout lines, then stderr) to `<logDir>/<host>.log` when it has stopped. */
  logDir?: string;
  /** Arguments for the relays' node (e.g. ['--cpu-prof', '--cpu-prof-dir=/tmp/p']). */
  relayNodeArgs?: string[];
}

export interface MeshRelayRow {
  host: string;
  /** VmRSS at the end of the stream, and VmHWM (peak), bytes. */
  rss: number;
  hwm: number;
  /** CPU (user + system) from start to the end of the stream, ms. */
  cpuMs: number;
  /** CPU (user + system) from just before the producers were spawned to the end of the stream, ms. */
  streamCpuMs: number;
  fds: number;
  /** Established TCP links with the relay port at either end (ss), at the end of the stream and after idleCloseMs. */
  tcp: number;
  tcpAfterIdle: number | null;
  /** Log lines written (JSON events) by the end of the stream. */
  logLines: number;
  /** /readyz at the end of the stream: peers with a link up, and peers up or idle (reached; the link since closed by the idle timeout). */
  peersUp: number;
  peersReached: number;
  /** Per relay: when every peer had a link, ms after the relays were started; null if never. */
  fullAtMs: number | null;
  framesOut: number;
  /** DATA messages sent (framesOut / batchesOut: frames per message). */
  batchesOut: number;
  resends: number;
  reconnects: number;
  connectFailures: number;
  /** Duplicates dropped (frames a peer sent again that were already delivered). */
  duplicates: number;
  delivered: number;
}

export interface MeshRunResult {
  hosts: number;
  frames: number;
  streams: number;
  /** Frames sent in all: N × (N−1) × K. */
  total: number;
  /** Namespaces, bridge and veths made, ms. */
  setupMs: number;
  /** From spawning the relays until all printed their start event, ms. */
  relaysStartMs: number;
  /** From spawning the relays until every relay had an authenticated link to every peer (max over relays), ms; null if never. */
  fullMeshMs: number | null;
  /** From the first producer's first send until then, ms. */
  fullMeshAfterSendMs: number | null;
  /** From the first producer's first send to the last sink done, ms. */
  streamMs: number;
  framesPerSec: number;
  rows: MeshRelayRow[];
  problems: string[];
}

const lastNumber = (line: string) => Number(line.trim().split(/\s+/).at(-1));

/** "neighbor table overflow" lines in the kernel log so far (-1 when dmesg cannot be read): the mesh's ARP entries must fit (./mesh staticNeighbours). */
function neighbourOverflows(): number {
  try {
    return execFileSync('dmesg', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000, maxBuffer: 64 << 20 }).split('\n').filter((l) => l.includes('neighbor table overflow')).length;
  } catch {
    return -1;
  }
}

/** When (epoch ms) every one of `peers` had an authenticated link, from the relay's log; null if not yet. */
function fullAt(relay: NsRelay, peers: readonly string[]): number | null {
  const first = new Map<string, number>();
  for (const e of relay.events()) {
    if ((e.event === 'peer_up' || e.event === 'peer_accepted') && typeof e.peer === 'string' && !first.has(e.peer)) first.set(e.peer, Date.parse(String(e.time)));
  }
  if (!peers.every((p) => first.has(p))) return null;
  return Math.max(...peers.map((p) => first.get(p)!));
}

/** Remove everything of the run (processes, namespaces, folders), then record in `problems` whatever is still there. */
function teardown(mesh: Mesh | null, cluster: NetnsCluster | null, problems: string[]): void {
  removeAllNetns();
  if (mesh === null) return;
  const left = meshLeftovers(mesh, cluster);
  if (left.length > 0) problems.push(...left.map((l) => `left behind: ${l}`));
}

/** Each relay's log (stdout lines, then stderr) as `<dir>/<host>.log`. */
function keepLogs(relays: readonly NsRelay[], dir: string): void {
  mkdirSync(dir, { recursive: true });
  for (const r of relays) writeFileSync(join(dir, `${r.host}.log`), `${r.proc.lines.join('\n')}\n${r.proc.stderr()}`);
}

function sumPeers(m: RelayMetrics, key: string): number {
  return Object.values(m.peers).reduce((a, p) => a + (p[key] ?? 0), 0);
}

export async function runMesh(o: MeshRunOptions): Promise<MeshRunResult> {
  const log = o.log ?? (() => {});
  const N = o.hosts;
  const K = o.frames;
  const port = o.port ?? 7411;
  const problems: string[] = [];
  const t0 = Date.now();
  const overflows0 = neighbourOverflows();
  let mesh: Mesh | null = null;
  let cluster: NetnsCluster | null = null;
  try {
    mesh = await makeMesh(N);
    const m = mesh;
    const setupMs = Date.now() - t0;
    log(`${N} namespaces + bridge + veths in ${setupMs} ms`);
    const c = (cluster = writeMeshCluster(m, port, o.limits));

    const relayStart = Date.now();
    const relays = await startMeshRelays(m, c, 120_000, [], o.relayNodeArgs ?? []);
    const relaysStartMs = Date.now() - relayStart;
    log(`${N} relays started in ${relaysStartMs} ms`);
    m.hosts.forEach((h, i) => {
      const listen = relays[i]!.events('start')[0]!.listen;
      if (listen !== `${h.addr}:${port}`) problems.push(`${h.name} listens on ${String(listen)}, not ${h.addr}:${port}`);
    });

    const perSink = (N - 1) * K;
    const sinks: NsProcess[] = m.hosts.map((h) => spawnMeshSink(h, { dir: c.dirOf(h.name), ns: c.ns(h.name), name: 'sink', count: perSink, lingerMs: 300, deadlineMs: o.streamMs + 120_000 }));
    await deadline(Promise.all(sinks.map((s) => s.line(/^ready$/, 120_000))), 125_000, 'every sink ready');
    log(`${N} sinks ready ${Date.now() - relayStart} ms after relay start`);
    // Relay CPU from here on is the traffic's: links, frames, acks (not the relays' own start).
    const cpuAtStart = relays.map((r) => procUsage(r.pid).cpuMs);
    const producers = m.hosts.map((h) =>
      spawnMeshProducer(h, { dir: c.dirOf(h.name), ns: c.ns(h.name), name: 'src', id: h.index, dests: m.hosts.filter((x) => x !== h).map((x) => `sink@${x.name}`), count: K, payloadSize: o.payloadSize ?? 32, deadlineMs: o.streamMs + 60_000 }),
    );
    const starts = await deadline(Promise.all(producers.map((p) => p.line(/^start /, 120_000).then(lastNumber))), 125_000, 'every producer started');
    const streamStart = Math.min(...starts);
    log(`${N} producers sending (${N * (N - 1)} streams of ${K} frames)`);

    const received = await Promise.all(
      sinks.map((s, i) =>
        s.line(/^received /, o.streamMs + 5_000).then(
          // The sink's `complete <epoch ms>` line: when its last expected frame arrived (before it lingers).
          (line) => ({ line, at: lastNumber(s.lines.find((l) => l.startsWith('complete ')) ?? `complete ${Date.now()}`) }),
          (err: Error) => {
            problems.push(`sink of ${m.hosts[i]!.name}: ${err.message}`);
            return { line: '', at: Date.now() };
          },
        ),
      ),
    );
    const streamEnd = Math.max(...received.map((r) => r.at));
    log(`stream done: ${streamEnd - streamStart} ms`);
    for (const [i, p] of producers.entries()) {
      const exit = await p.exited(30_000).catch((err: Error) => ({ code: null, signal: null, err }));
      if (exit.code !== 0) problems.push(`producer of ${m.hosts[i]!.name} exit ${JSON.stringify(exit)}: ${p.lines.slice(-3).join(' | ')} ${p.stderr().slice(-600)}`);
    }
    m.hosts.forEach((h, i) => {
      const expected = `received ${perSink} errors 0 ${m.hosts
        .filter((x) => x !== h)
        .map((x) => `${x.index}:${K}`)
        .join(' ')}`;
      if (received[i]!.line !== expected) problems.push(`sink of ${h.name}: ${received[i]!.line || '(no result)'} (expected ${expected}) ${sinks[i]!.lines.filter((l) => l.startsWith('error ')).join(' | ')}`);
    });
    for (const [i, s] of sinks.entries()) {
      const exit = await s.exited(10_000).catch((err: Error) => ({ code: null, signal: null, err }));
      if (exit.code !== 0) problems.push(`sink of ${m.hosts[i]!.name} exit ${JSON.stringify(exit)}: ${s.stderr().slice(-600)}`);
    }

    // Figures per relay, while they still run.
    const peersOf = (host: string) => m.hosts.filter((x) => x.name !== host).map((x) => x.name);
    const rows: MeshRelayRow[] = await Promise.all(
      m.hosts.map(async (h, i) => {
        const r = relays[i]!;
        const [metrics, ready] = await Promise.all([r.metrics(), r.get('/readyz')]);
        const usage = procUsage(r.pid);
        const at = fullAt(r, peersOf(h.name));
        return {
          host: h.name,
          ...usage,
          streamCpuMs: usage.cpuMs - cpuAtStart[i]!,
          fds: openFds(r.pid),
          tcp: await relayConnections(h, port),
          tcpAfterIdle: null,
          logLines: r.proc.lines.length,
          peersUp: Number(ready.peersUp),
          peersReached: Object.values(ready.peers as Record<string, { state: string }>).filter((p) => p.state === 'up' || p.state === 'idle').length,
          fullAtMs: at === null ? null : at - relayStart,
          framesOut: sumPeers(metrics, 'framesOut'),
          batchesOut: sumPeers(metrics, 'batchesOut'),
          resends: sumPeers(metrics, 'resends'),
          reconnects: sumPeers(metrics, 'reconnects'),
          connectFailures: sumPeers(metrics, 'connectFailures'),
          duplicates: metrics.global.duplicates ?? 0,
          delivered: metrics.global.delivered ?? 0,
        };
      }),
    );
    for (const row of rows) {
      if (row.delivered !== perSink) problems.push(`${row.host} delivered ${row.delivered} frames, expected ${perSink}`);
      if (row.framesOut - row.resends !== perSink) problems.push(`${row.host} sent ${row.framesOut} frames with ${row.resends} resends, expected ${perSink} + resends`);
      if (row.peersReached !== N - 1) problems.push(`${row.host}: /readyz shows ${row.peersReached} peers up or idle, expected ${N - 1}`);
      if (row.fullAtMs === null) problems.push(`${row.host}: no authenticated link to some peer in its log`);
    }
    const fulls = rows.map((r) => r.fullAtMs);
    const fullMeshMs = fulls.some((f) => f === null) ? null : Math.max(...(fulls as number[]));

    if ((o.idleCloseMs ?? 0) > 0) {
      log(`waiting ${o.idleCloseMs} ms for the idle timeout to close the links`);
      await sleep(o.idleCloseMs!);
      await Promise.all(m.hosts.map(async (h, i) => (rows[i]!.tcpAfterIdle = await relayConnections(h, port))));
    }

    // Every relay stops on SIGTERM with exit code 0, clean (nothing unacked or pending), leaving no segment.
    const codes = await Promise.all(relays.map((r) => r.stop(60_000).catch((err: Error) => err.message)));
    relays.forEach((r, i) => {
      if (codes[i] !== 0) problems.push(`${r.host} stop: exit ${String(codes[i])}: ${r.proc.lines.slice(-3).join(' | ')} ${r.proc.stderr().slice(-400)}`);
      const stop = r.events('stop')[0];
      if (stop === undefined || stop.clean !== true || stop.unacked !== 0 || stop.pending !== 0) problems.push(`${r.host} did not stop clean: ${JSON.stringify(stop)}`);
    });
    if (o.logDir !== undefined) keepLogs(relays, o.logDir);
    const overflows = neighbourOverflows() - overflows0;
    if (overflows0 >= 0 && overflows > 0) problems.push(`the kernel's neighbour (ARP) table overflowed ${overflows} time(s) during the run (dmesg): connects timed out for want of a MAC address`);
    const left = c.segments();
    if (left.length > 0) problems.push(`segments left after the relays stopped: ${left.join(' ')}`);

    const streamMs = streamEnd - streamStart;
    return {
      hosts: N,
      frames: K,
      streams: N * (N - 1),
      total: N * perSink,
      setupMs,
      relaysStartMs,
      fullMeshMs,
      fullMeshAfterSendMs: fullMeshMs === null ? null : fullMeshMs + relayStart - streamStart,
      streamMs,
      framesPerSec: Math.round((N * perSink * 1000) / Math.max(1, streamMs)),
      rows,
      problems,
    };
  } finally {
    teardown(mesh, cluster, problems);
  }
}

export interface ColdStartResult {
  hosts: number;
  /** From spawning the relays until all printed their start event, ms. */
  relaysStartMs: number;
  /** From spawning the relays until every relay had an authenticated link to every peer, ms; null if not within the deadline. */
  fullMeshMs: number | null;
  /** Connect failures and handshake timeouts on the way (all relays). */
  connectFailures: number;
  /** Established TCP links per relay at full mesh (mean): 2 per peer (its own kept link, and the peer's). */
  tcpPerRelay: number;
  /** Relay VmRSS at full mesh, mean, bytes. */
  rss: number;
  problems: string[];
}

/**
 * A cold start of N relays with `limits.minLinks: 1` and no application at
 * all: how long until every relay has an authenticated link to each of its
 * peers (the full mesh from the relays alone, as /readyz reports it). Then
 * every relay stopped clean and everything removed.
 */
export async function coldStartMesh(o: { hosts: number; port?: number; limits?: Record<string, number>; deadlineMs?: number; log?: (line: string) => void; logDir?: string }): Promise<ColdStartResult> {
  const N = o.hosts;
  const port = o.port ?? 7411;
  const problems: string[] = [];
  let mesh: Mesh | null = null;
  let cluster: NetnsCluster | null = null;
  try {
    mesh = await makeMesh(N);
    const m = mesh;
    const c = (cluster = writeMeshCluster(m, port, { ...o.limits, minLinks: 1 }));
    const t0 = Date.now();
    const relays = await startMeshRelays(m, c, 120_000);
    const relaysStartMs = Date.now() - t0;
    const peersOf = (host: string) => m.hosts.filter((x) => x.name !== host).map((x) => x.name);
    const end = Date.now() + (o.deadlineMs ?? 120_000);
    let fulls: Array<number | null> = [];
    for (;;) {
      fulls = relays.map((r) => fullAt(r, peersOf(r.host)));
      if (fulls.every((f) => f !== null) || Date.now() > end) break;
      await sleep(50);
    }
    const fullMeshMs = fulls.every((f) => f !== null) ? Math.max(...(fulls as number[])) - t0 : null;
    if (fullMeshMs === null) problems.push(`no full mesh within ${o.deadlineMs ?? 120_000} ms: ${fulls.filter((f) => f === null).length} relays still missing a peer`);
    o.log?.(`${N} relays (minLinks 1, no traffic): full mesh ${fullMeshMs ?? 'never'} ms after spawning them`);
    // Both ends' sockets of every pair are up by now or in a moment: the acceptor logs peer_accepted before the connector reads WELCOME.
    await sleep(500);
    const tcp = await Promise.all(m.hosts.map((h) => relayConnections(h, port)));
    const metrics = await Promise.all(relays.map((r) => r.metrics()));
    const rss = relays.reduce((a, r) => a + procUsage(r.pid).rss, 0) / N;
    const codes = await Promise.all(relays.map((r) => r.stop(60_000).catch((err: Error) => err.message)));
    relays.forEach((r, i) => {
      if (codes[i] !== 0) problems.push(`${r.host} stop: exit ${String(codes[i])}`);
    });
    if (o.logDir !== undefined) keepLogs(relays, o.logDir);
    return {
      hosts: N,
      relaysStartMs,
      fullMeshMs,
      connectFailures: metrics.reduce((a, x) => a + sumPeers(x, 'connectFailures'), 0),
      tcpPerRelay: tcp.reduce((a, x) => a + x, 0) / N,
      rss,
      problems,
    };
  } finally {
    teardown(mesh, cluster, problems);
  }
}

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;

/** A run's figures as console lines: the summary, then one line per relay. */
export function describeMeshRun(r: MeshRunResult): string[] {
  const avg = (f: (x: MeshRelayRow) => number) => r.rows.reduce((a, x) => a + f(x), 0) / Math.max(1, r.rows.length);
  const max = (f: (x: MeshRelayRow) => number) => Math.max(...r.rows.map(f));
  const sum = (f: (x: MeshRelayRow) => number) => r.rows.reduce((a, x) => a + f(x), 0);
  const idle = r.rows.every((x) => x.tcpAfterIdle !== null) ? `; after the idle timeout ${sum((x) => x.tcpAfterIdle!)} links in all` : '';
  return [
    `${r.hosts} hosts: namespaces made in ${r.setupMs} ms; ${r.hosts} relays started in ${r.relaysStartMs} ms`,
    `full mesh (every relay with an authenticated link to each of its ${r.hosts - 1} peers, ${r.streams} links): ${r.fullMeshMs ?? 'never'} ms after relay start, ${r.fullMeshAfterSendMs ?? '-'} ms after the first send`,
    `${r.total} frames (${r.frames} x ${r.streams} streams) in ${r.streamMs} ms from first send to last sink done: ${r.framesPerSec} frames/s across the mesh`,
    `per relay: RSS mean ${mb(avg((x) => x.rss))} (peak max ${mb(max((x) => x.hwm))}), CPU mean ${Math.round(avg((x) => x.cpuMs))} ms, fds max ${max((x) => x.fds)}, TCP links mean ${avg((x) => x.tcp).toFixed(1)} (${(avg((x) => x.tcp) / (r.hosts - 1)).toFixed(2)} per peer)${idle}, log lines max ${max((x) => x.logLines)}`,
    `frames per DATA message ${(sum((x) => x.framesOut) / Math.max(1, sum((x) => x.batchesOut))).toFixed(1)}; counters (sum): resends ${sum((x) => x.resends)}, duplicates dropped ${sum((x) => x.duplicates)}, reconnects ${sum((x) => x.reconnects)}, connect failures ${sum((x) => x.connectFailures)}`,
    `host       RSS      peak    CPU  fds  tcp  log  fullAt  framesOut resends reconn connFail dups`,
    ...r.rows.map((x) =>
      [x.host.padEnd(5), mb(x.rss).padStart(8), mb(x.hwm).padStart(8), `${Math.round(x.cpuMs)}`.padStart(6), String(x.fds).padStart(4), String(x.tcp).padStart(4), String(x.logLines).padStart(4), String(x.fullAtMs ?? '-').padStart(7), String(x.framesOut).padStart(10), String(x.resends).padStart(7), String(x.reconnects).padStart(6), String(x.connectFailures).padStart(8), String(x.duplicates).padStart(4)].join(' '),
    ),
  ];
}
