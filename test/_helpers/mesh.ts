/**
 * N hosts in Linux network namespaces joined by one bridge: the full-mesh
 * harness of issue 9 (test/67.mesh.test.ts).
 *
 *   shmbus-<pid>-<r>-h1 ... -hN   one namespace per host: lo, and `<tag>h<i>`
 *                                  with 169.254.<k>.<i>/16 (k derived from the pid)
 *   shmbus-<pid>-<r>-br           the bridge `<tag>br`, and the other end of every
 *                                  host's veth (`<tag>p<i>`) attached to it
 *
 * Every link is created directly inside its namespace: nothing of a run ever
 * exists in the machine's own network namespace, and deleting the namespaces
 * deletes every veth and the bridge. Namespaces are adopted by ./netns
 * (`adoptNetns`), so they and every process in them are removed by
 * `cleanupAll`, the 'exit' hook and SIGINT/SIGTERM/SIGHUP, and a run killed by
 * SIGKILL is cleaned up by the next one (`removeStaleNetns`).
 *
 * One cluster config for all hosts (./netns `writeNetnsCluster`): each host its
 * own shm namespace in one private /dev/shm folder, metrics on 127.0.0.1:0
 * inside its network namespace, the relay on `<address>:<port>`.
 *
 * Run as a script, this file is the `mesh-producer` child: one Bus that sends
 * K frames to each of several destinations, interleaved (the payload codec of
 * ./child, so the `sink` child checks order and count per producer id).
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as yieldToLoop, setTimeout as sleep } from 'node:timers/promises';
import { Bus, type Sender } from '../../src/index';
import { encodePayload } from './child';
import { adoptNetns, findTool, netnsList, removeStaleNetns, spawnIn, startRelayIn, writeNetnsCluster, type NetnsCluster, type NetnsPair, type NsProcess, type NsRelay } from './netns';

const MESH_SCRIPT = __filename;

export interface MeshHost {
  /** Host name in the cluster config: h1 ... hN. */
  readonly name: string;
  /** 1-based index (also the host's producer id and last address octet). */
  readonly index: number;
  /** Its network namespace. */
  readonly netns: string;
  /** Its veth end (inside `netns`) and the other end (inside the bridge namespace). */
  readonly veth: string;
  readonly port: string;
  /** Its IPv4 address (no prefix length). */
  readonly addr: string;
  /** A NetnsPair view ([host namespace, bridge namespace]) for ./netns helpers such as startRelayIn. */
  readonly pair: NetnsPair;
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

function runIp(ip: string, args: string[]): string {
  return execFileSync(ip, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
}

/** N namespaces (N ≤ 250) on a bridge in its own namespace; lo, veths and bridge up. */
export async function makeMesh(n: number): Promise<Mesh> {
  if (!Number.isInteger(n) || n < 2 || n > 250) throw new Error(`mesh size must be an integer in 2..250, not ${n}`);
  const ip = findTool('ip');
  if (ip === null) throw new Error('the ip command (iproute2) is not installed');
  const stale = removeStaleNetns(ip);
  if (stale.length > 0) console.log(`  removed network namespaces left by a killed run: ${stale.join(', ')}`);
  const run = (args: string[]) => runIp(ip, args);
  const prefix = `shmbus-${process.pid}-${randomInt(1e6)}`;
  // Link names: at most 15 characters. pid < 2^22 is at most 5 base-36 digits.
  const tag = `m${process.pid.toString(36)}${randomInt(36 * 36).toString(36).padStart(2, '0')}`;
  const k = 1 + (process.pid % 254);
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
    const addr = `169.254.${k}.${i}`;
    adoptNetns(netns);
    run(['netns', 'add', netns]);
    run(['link', 'add', 'name', veth, 'netns', netns, 'type', 'veth', 'peer', 'name', port, 'netns', bridgeNetns]);
    run(['-n', bridgeNetns, 'link', 'set', port, 'master', bridge]);
    run(['-n', bridgeNetns, 'link', 'set', port, 'up']);
    run(['-n', netns, 'addr', 'add', `${addr}/16`, 'dev', veth]);
    run(['-n', netns, 'link', 'set', 'lo', 'up']);
    run(['-n', netns, 'link', 'set', veth, 'up']);
    hosts.push({ name: `h${i}`, index: i, netns, veth, port, addr, pair: hostPair(ip, netns, bridgeNetns, veth, addr) });
  }
  for (const h of hosts) await h.pair.linkUp(h.netns);
  return { prefix, tag, bridgeNetns, bridge, hosts, ip: run };
}

function hostPair(ip: string, netns: string, bridgeNetns: string, veth: string, addr: string): NetnsPair {
  const run = (args: string[]) => runIp(ip, args);
  return {
    ns: [netns, bridgeNetns],
    veth,
    addr: [addr, ''],
    ip: (ns, args) => run(['-n', ns, ...args]),
    exec: (ns, file, args, ms = 10_000) =>
      new Promise((resolve, reject) => {
        // execFile (async): a slow command in one namespace does not stall the others' event loop work.
        execFile(ip, ['netns', 'exec', ns, file, ...args], { encoding: 'utf8', timeout: ms, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
          if (err !== null) reject(new Error(`${file} ${args.join(' ')} in ${ns}: ${err.message} ${stderr}`));
          else resolve(stdout);
        });
      }),
    async linkUp(ns, ms = 5000) {
      const end = Date.now() + ms;
      for (;;) {
        const state = run(['-n', ns, '-o', 'link', 'show', veth]);
        if (/\bstate UP\b/.test(state) && /LOWER_UP/.test(state)) return;
        if (Date.now() > end) throw new Error(`deadline: ${veth} in ${ns} not up within ${ms} ms: ${state}`);
        await sleep(10);
      }
    },
  };
}

/** The cluster config of the mesh: every host `<addr>:<port>`. */
export function writeMeshCluster(mesh: Mesh, port: number, limits: Record<string, number>): NetnsCluster {
  return writeNetnsCluster(Object.fromEntries(mesh.hosts.map((h) => [h.name, { relay: `${h.addr}:${port}` }])), limits);
}

/** One transit-server per host, inside its namespace, all started at once. */
export function startMeshRelays(mesh: Mesh, cluster: NetnsCluster, ms = 60_000): Promise<NsRelay[]> {
  return Promise.all(mesh.hosts.map((h) => startRelayIn(h.pair, h.netns, h.name, cluster.configPath, ms)));
}

/**
 * Plain node (no tsx: cheap to start) inside a namespace: polls the relay's
 * /readyz every 20 ms, prints `up <peersUp> <epoch ms>` at each change and
 * `full <epoch ms>` once peersUp reaches the target, then exits 0; exits 1
 * with `timeout <peersUp>` at the deadline. argv: port, target, deadline ms, a tag.
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

/** The `mesh-producer` child inside a namespace. */
export function spawnMeshProducer(host: MeshHost, args: MeshProducerArgs): NsProcess {
  return spawnIn(host.netns, `mesh-producer ${host.name}`, process.execPath, ['--import', 'tsx', MESH_SCRIPT, 'mesh-producer', JSON.stringify(args)]);
}

/**
 * Sends frame 0 to every destination, then frame 1 to every destination, ...:
 * all streams at once. A full outbound ring waits (sendAsync); a relay that is
 * down is waited for. Prints `ready`, `start <epoch ms>`, `done sent <n> waits <w> <epoch ms>`.
 */
async function meshProducer(args: MeshProducerArgs): Promise<void> {
  const bus = Bus.openSync({ name: args.name, namespace: args.ns, dir: args.dir });
  console.log('ready');
  const end = Date.now() + args.deadlineMs;
  const payload = new Uint8Array(args.payloadSize ?? 32);
  const senders: Sender[] = [];
  let sent = 0;
  let waits = 0;
  const started = Date.now();
  console.log(`start ${started}`);
  for (let seq = 0; seq < args.count; seq++) {
    for (let d = 0; d < args.dests.length; d++) {
      encodePayload(payload, args.id, seq);
      for (;;) {
        if (Date.now() > end) throw new Error(`deadline: sent ${sent} of ${args.count * args.dests.length} within ${args.deadlineMs} ms`);
        try {
          const sender = (senders[d] ??= bus.sender(args.dests[d]!));
          if (sender.send(payload)) break;
          waits++;
          if (await sender.sendAsync(payload, { timeoutMs: 1000 })) break;
        } catch (err) {
          if ((err as { code?: string }).code !== 'ERR_SHMBUS_RELAY_UNAVAILABLE') throw err;
          waits++;
          await sleep(5);
        }
      }
      sent++;
    }
    if (args.paceMs !== undefined) {
      const due = started + (args.paceMs * (seq + 1)) / args.count;
      if (Date.now() < due) await sleep(due - Date.now());
    } else if ((seq & 0x3f) === 0x3f) await yieldToLoop();
  }
  console.log(`done sent ${sent} waits ${waits} ${Date.now()}`);
  await bus.close();
}

/** VmRSS (bytes) and CPU time (ms, user + system) of a process, from /proc. */
export function procUsage(pid: number): { rss: number; cpuMs: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN) * 1024;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15 of proc(5))
  return { rss, cpuMs: (ticks * 1000) / 100 };
}

/** Established TCP connections in the host's namespace with the relay port at either end (the relay's peer links). */
export async function relayConnections(host: MeshHost, port: number): Promise<number> {
  const out = await host.pair.exec(host.netns, findTool('ss') ?? 'ss', ['-Htn', 'state', 'established']);
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
    if (existsSync(cluster.dir)) left.push(`segment folder ${cluster.dir}: ${readdirSync(cluster.dir).join(' ')}`);
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

if (require.main === module) {
  const [role, json] = process.argv.slice(2);
  (role === 'mesh-producer' ? meshProducer(JSON.parse(json ?? '{}') as MeshProducerArgs) : Promise.reject(new Error(`unknown role ${role}`))).catch((err: unknown) => {
    console.error(err);
    process.exit(70);
  });
}
