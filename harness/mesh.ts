/**
 * N hosts in Linux network namespaces joined by one bridge: the full-mesh
 * harness of issue 9, shared by test/67.mesh.test.ts and the mesh benchmark
 * (`npm run bench -- mesh`, bench/mesh.ts) through ./mesh-run.ts.
 *
 *   shmbus-<pid>-<r>-h1 ... -hN   one namespace per host: lo, and `<tag>h<i>`
 *                                  with 169.254.<k>.<i>/16 (k derived from the pid;
 *                                  hosts 1..250 take .1 .. .250, beyond that
 *                                  169.254.<k+1>.<i - 250>)
 *   shmbus-<pid>-<r>-br           the bridge `<tag>br`, and the other end of every
 *                                  host's veth (`<tag>p<i>`) attached to it
 *
 * Every link is created directly inside its namespace: nothing of a run ever
 * exists in the machine's own network namespace, and deleting the namespaces
 * deletes every veth and the bridge. Namespaces are adopted by ./netns, so
 * they and every process in them are removed by `removeAllNetns`, the 'exit'
 * hook and SIGINT/SIGTERM/SIGHUP, and a run killed by SIGKILL is cleaned up by
 * the next one (`removeStaleNetns`).
 *
 * One cluster config for all hosts (./netns `writeNetnsCluster`): each host its
 * own segment folder (and shm namespace) under one private /dev/shm folder,
 * metrics on 127.0.0.1:0 inside its network namespace, the relay on
 * `<address>:<port>`.
 */
import { execFileSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { adoptNetns, execIn, findTool, netnsList, nodeScript, removeStaleNetns, runIp, spawnIn, startRelayIn, waitLinkUp, writeNetnsCluster, type NetnsCluster, type NsProcess, type NsRelay } from './netns';

export interface MeshHost {
  /** Host name in the cluster config: h1 ... hN. */
  readonly name: string;
  /** 1-based index (also the host's producer id). */
  readonly index: number;
  /** Its network namespace. */
  readonly netns: string;
  /** Its veth end (inside `netns`) and the other end (inside the bridge namespace). */
  readonly veth: string;
  readonly port: string;
  /** Its IPv4 address (no prefix length). */
  readonly addr: string;
  /** Wait until its veth has carrier (after `ip link set up`). */
  linkUp(ms?: number): Promise<void>;
  /** Run a command inside its namespace; stdout. */
  exec(file: string, args: string[], ms?: number): Promise<string>;
}

export interface Mesh {
  /** `shmbus-<pid>-<r>`: every namespace name of the run starts with it. */
  readonly prefix: string;
  /** Short tag (pid in base 36 and a random part) in every link name of the run. */
  readonly tag: string;
  readonly bridgeNetns: string;
  readonly bridge: string;
  readonly hosts: readonly MeshHost[];
  /** `ip <args>` (synchronously; stdout). */
  ip(args: string[]): string;
}

/** The most hosts a mesh can have (addresses: two /24s of the /16). */
export const MAX_MESH_HOSTS = 500;

/** N namespaces (2 ≤ N ≤ 500) on a bridge in its own namespace; lo, veths and bridge up. */
export async function makeMesh(n: number): Promise<Mesh> {
  if (!Number.isInteger(n) || n < 2 || n > MAX_MESH_HOSTS) throw new Error(`mesh size must be an integer in 2..${MAX_MESH_HOSTS}, not ${n}`);
  const ip = findTool('ip');
  if (ip === null) throw new Error('the ip command (iproute2) is not installed');
  const stale = removeStaleNetns(ip);
  if (stale.length > 0) console.log(`  removed network namespaces left by a killed run: ${stale.join(', ')}`);
  const run = (args: string[]) => runIp(ip, args);
  const prefix = `shmbus-${process.pid}-${randomInt(1e6)}`;
  // Link names: at most 15 characters. pid < 2^22 is at most 5 base-36 digits.
  const tag = `m${process.pid.toString(36)}${randomInt(36 * 36).toString(36).padStart(2, '0')}`;
  const k = 1 + (process.pid % 253);
  const bridgeNetns = `${prefix}-br`;
  const bridge = `${tag}br`;
  adoptNetns(bridgeNetns);
  run(['netns', 'add', bridgeNetns]);
  run(['-n', bridgeNetns, 'link', 'add', 'name', bridge, 'type', 'bridge']);
  run(['-n', bridgeNetns, 'link', 'set', bridge, 'up']);
  const hosts: MeshHost[] = [];
  for (let i = 1; i <= n; i++) {
    const netns = `${prefix}-h${i}`;
    const veth = `${tag}h${i}`;
    const port = `${tag}p${i}`;
    const addr = i <= 250 ? `169.254.${k}.${i}` : `169.254.${k + 1}.${i - 250}`;
    adoptNetns(netns);
    run(['netns', 'add', netns]);
    run(['link', 'add', 'name', veth, 'netns', netns, 'type', 'veth', 'peer', 'name', port, 'netns', bridgeNetns]);
    run(['-n', bridgeNetns, 'link', 'set', port, 'master', bridge]);
    run(['-n', bridgeNetns, 'link', 'set', port, 'up']);
    run(['-n', netns, 'addr', 'add', `${addr}/16`, 'dev', veth]);
    run(['-n', netns, 'link', 'set', 'lo', 'up']);
    run(['-n', netns, 'link', 'set', veth, 'up']);
    hosts.push({
      name: `h${i}`,
      index: i,
      netns,
      veth,
      port,
      addr,
      linkUp: (ms) => waitLinkUp(ip, netns, veth, ms),
      exec: (file, args, ms) => execIn(netns, file, args, ms),
    });
  }
  for (const h of hosts) await h.linkUp();
  staticNeighbours(ip, hosts);
  return { prefix, tag, bridgeNetns, bridge, hosts, ip: run };
}

/**
 * Permanent ARP entries in every host for every other host. All network
 * namespaces of one kernel share one neighbour table, and its dynamic entries
 * are capped at net.ipv4.neigh.default.gc_thresh3 (1024 by default) for the
 * whole machine; a full mesh needs N × (N−1) of them (1260 at N = 36). Past the
 * cap the kernel logs "neighbor table overflow" and a host cannot resolve its
 * peer's MAC address: its connects time out — an artefact of packing every host
 * into one kernel, which real hosts (one table each) do not have. Permanent
 * entries are not counted against the cap, and need no global sysctl change.
 */
function staticNeighbours(ip: string, hosts: readonly MeshHost[]): void {
  const macs = hosts.map((h) => {
    const out = runIp(ip, ['-n', h.netns, '-o', 'link', 'show', h.veth]);
    const mac = /link\/ether ([0-9a-f:]{17})/.exec(out)?.[1];
    if (mac === undefined) throw new Error(`no MAC address for ${h.veth} in ${h.netns}: ${out}`);
    return mac;
  });
  for (const h of hosts) {
    const lines = hosts.filter((o) => o !== h).map((o) => `neigh replace ${o.addr} lladdr ${macs[o.index - 1]} dev ${h.veth} nud permanent`);
    execFileSync(ip, ['-n', h.netns, '-batch', '-'], { input: `${lines.join('\n')}\n`, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], timeout: 10_000 });
  }
}

/** The cluster config of the mesh: every host `<addr>:<port>`, its own segment folder. */
export function writeMeshCluster(mesh: Mesh, port: number, limits: Record<string, number>): NetnsCluster {
  return writeNetnsCluster(Object.fromEntries(mesh.hosts.map((h) => [h.name, { relay: `${h.addr}:${port}` }])), limits, { hostDirs: true });
}

/** One transit-server per host, inside its namespace, all started at once. */
export function startMeshRelays(mesh: Mesh, cluster: NetnsCluster, ms = 60_000, extra: string[] = [], nodeArgs: string[] = []): Promise<NsRelay[]> {
  return Promise.all(mesh.hosts.map((h) => startRelayIn(h.netns, h.name, cluster.configPath, ms, extra, nodeArgs)));
}

/**
 * Plain node (cheap to start) inside a namespace: polls the relay's /readyz
 * every 20 ms, prints `up <peersUp> <epoch ms>` at each change and `full
 * <epoch ms>` once peersUp reaches the target, then exits 0; exits 1 with
 * `timeout <peersUp>` at the deadline. argv: port, target, deadline ms, a tag.
 */
const READYZ_WATCH_SCRIPT = `
const [port, target, ms] = process.argv.slice(1, 4).map(Number);
const end = Date.now() + ms;
let last = -1;
const poll = () => {
  const req = require('node:http').get({ host: '127.0.0.1', port, path: '/readyz', timeout: 2000 }, (res) => {
    let body = '';
    res.on('data', (d) => (body += d));
    res.on('end', () => {
      let up = -1;
      try { up = JSON.parse(body).peersUp; } catch {}
      if (up !== last) { last = up; console.log('up ' + up + ' ' + Date.now()); }
      if (up >= target) { console.log('full ' + Date.now()); process.exit(0); }
      next();
    });
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', () => next());
};
const next = () => {
  if (Date.now() > end) { console.log('timeout ' + last); process.exit(1); }
  setTimeout(poll, 20);
};
poll();
`;

/** Watch one relay's /readyz until it reports `target` peers up (see READYZ_WATCH_SCRIPT). */
export function watchReadyz(host: MeshHost, relay: NsRelay, target: number, ms: number, tag: string): NsProcess {
  return spawnIn(host.netns, `readyz watch ${host.name}`, process.execPath, ['-e', READYZ_WATCH_SCRIPT, String(relay.metricsPort), String(target), String(ms), tag]);
}

export interface MeshProducerArgs {
  dir: string;
  ns: string;
  name: string;
  /** Producer id written in every payload. */
  id: number;
  /** Destination addresses (`sink@h3`...). */
  dests: string[];
  /** Frames per destination. */
  count: number;
  payloadSize?: number;
  /** Give up (exit 1) after this long. */
  deadlineMs: number;
  /** Spread the frames over about this long (frame `seq` to every destination not before start + paceMs × seq / count). */
  paceMs?: number;
}

export interface MeshSinkArgs {
  dir: string;
  ns: string;
  name: string;
  /** Frames to receive in all. */
  count: number;
  /** After `count` frames, keep reading this long: anything more is an error (a duplicate). */
  lingerMs: number;
  /** Print `progress <total>` every this many frames (off when absent). */
  progressEvery?: number;
  /** Give up (print what was received, exit 1) after this long. */
  deadlineMs: number;
}

/** The `mesh-producer` child (./mesh-child) inside a host's namespace. */
export function spawnMeshProducer(host: MeshHost, args: MeshProducerArgs): NsProcess {
  return spawnIn(host.netns, `mesh-producer ${host.name}`, process.execPath, [...nodeScript('harness/mesh-child'), 'mesh-producer', JSON.stringify(args)]);
}

/** The `mesh-sink` child (./mesh-child) inside a host's namespace. */
export function spawnMeshSink(host: MeshHost, args: MeshSinkArgs): NsProcess {
  return spawnIn(host.netns, `mesh-sink ${host.name}`, process.execPath, [...nodeScript('harness/mesh-child'), 'mesh-sink', JSON.stringify(args)]);
}

/** VmRSS and VmHWM (bytes) and CPU time (ms, user + system) of a process, from /proc. */
export function procUsage(pid: number): { rss: number; hwm: number; cpuMs: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15 of proc(5))
  return { rss: kb('VmRSS'), hwm: kb('VmHWM'), cpuMs: (ticks * 1000) / 100 };
}

/** Open file descriptors of a process. */
export function openFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}

/** Established TCP connections in the host's namespace with the relay port at either end (the relay's peer links). */
export async function relayConnections(host: MeshHost, port: number): Promise<number> {
  const out = await host.exec(findTool('ss') ?? 'ss', ['-Htn', 'state', 'established']);
  return out.split('\n').filter((l) => new RegExp(`:${port}\\s`).test(`${l} `)).length;
}

/**
 * What of a run is left: namespaces named with its prefix, links in the
 * machine's namespace named with its tag, processes whose command line names
 * one of its namespaces, its config folder or segment folder, and the segment
 * folder itself / segment files of its shm namespaces. Empty when all is gone.
 */
export function meshLeftovers(mesh: Mesh, cluster: NetnsCluster | null): string[] {
  const left: string[] = [];
  for (const n of netnsList()) if (n.startsWith(`${mesh.prefix}-`)) left.push(`network namespace ${n}`);
  for (const l of mesh.ip(['-o', 'link', 'show']).split('\n')) if (l.includes(mesh.tag)) left.push(`link ${l.trim()}`);
  const marks = [mesh.prefix, ...(cluster === null ? [] : [cluster.folder, cluster.dir, cluster.ns('')])];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    if (Number(pid) === process.pid) continue;
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue; // gone meanwhile
    }
    if (marks.some((m) => cmdline.includes(m))) left.push(`process ${pid}: ${cmdline.slice(0, 200)}`);
  }
  if (cluster !== null) {
    if (existsSync(cluster.dir)) left.push(`segment folder ${cluster.dir}: ${readdirSync(cluster.dir, { recursive: true }).join(' ')}`);
    if (existsSync(cluster.folder)) left.push(`config folder ${cluster.folder}`);
    const nsTag = cluster.ns('');
    for (const d of readdirSync('/dev/shm')) {
      if (d.includes(nsTag)) left.push(`/dev/shm/${d}`);
      else if (d.startsWith('shmbus-test-')) {
        try {
          for (const f of readdirSync(join('/dev/shm', d))) if (f.includes(nsTag)) left.push(`/dev/shm/${d}/${f}`);
        } catch {
          // not a folder, or gone
        }
      }
    }
  }
  return left;
}
