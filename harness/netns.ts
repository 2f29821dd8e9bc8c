/**
 * Hosts in Linux network namespaces, for the relay's multi-host tests
 * (test/65, test/67) and the mesh benchmark (`npm run bench -- mesh`): run a
 * command inside a namespace, start a transit-server there, write a cluster
 * config, and remove everything afterwards, even on failure or SIGINT.
 *
 * Runs from source (through tsx: the tests) or compiled (dist/harness: the
 * benchmark); the relay and the harness's children are started the same way
 * this module was loaded (`nodeScript`).
 *
 * Needs root (and `ip` from iproute2). Everything made here is removed by
 * `removeAllNetns` (the tests' `cleanupAll` calls it), by the process 'exit'
 * hook and on SIGINT/SIGTERM/SIGHUP: every process inside a namespace is
 * killed first (`ip netns pids`), then the namespace is deleted (which deletes
 * its veths and its iptables rules), then the run's folders. A run killed by
 * SIGKILL is cleaned up by the next one (`removeStaleNetns`).
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, chmodSync, constants as fsConstants, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes, randomInt } from 'node:crypto';
import { tmpdir } from 'node:os';
import { delimiter, extname, join } from 'node:path';
import { createInterface } from 'node:readline';

/** '.ts' when loaded through tsx, '.js' when compiled. */
const EXT = extname(__filename);
/** The tree this module runs from: the repository (source) or dist/ (compiled). */
const TREE = join(__dirname, '..');
/** The repository (the working folder of every process started here: tsx resolves from it). */
export const REPO = EXT === '.ts' ? TREE : join(TREE, '..');

/** `node` arguments that run `<tree>/<path>` (no extension) the way this module runs: compiled, or through tsx. */
export function nodeScript(path: string): string[] {
  const file = join(TREE, `${path}${EXT}`);
  return EXT === '.ts' ? ['--import', 'tsx', file] : [file];
}

/** Reject if `promise` has not settled within `ms`. */
export function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`deadline: ${what} did not happen within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Absolute path of a command on PATH or in the sbin folders (root's tools are often only there), or null. */
export function findTool(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    const path = join(dir, name);
    try {
      accessSync(path, fsConstants.X_OK);
      return path;
    } catch {
      // next
    }
  }
  return null;
}

/** Names of the network namespaces that exist now (`ip netns list`). */
export function netnsList(): string[] {
  const ip = findTool('ip') ?? 'ip';
  // stderr kept quiet: listing while a namespace is being torn down can print "Peer netns reference is invalid".
  const out = execFileSync(ip, ['netns', 'list'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Pids of the processes inside `ns`; null when the namespace does not exist. */
function pidsIn(ip: string, ns: string): number[] | null {
  try {
    const out = execFileSync(ip, ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
    return out
      .split('\n')
      .map((l) => Number(l.trim()))
      .filter((n) => Number.isInteger(n) && n > 0);
  } catch {
    return null;
  }
}

/** SIGKILL every process in `ns` (they are this run's), then delete it. Synchronous: safe in an 'exit' hook. */
function removeNetns(ip: string, ns: string): void {
  for (let round = 0; round < 100; round++) {
    const pids = pidsIn(ip, ns);
    if (pids === null || pids.length === 0) break;
    for (const pid of pids) {
      if (pid === process.pid) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    sleepSync(20);
  }
  try {
    execFileSync(ip, ['netns', 'del', ns], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  } catch {
    // not there (already deleted)
  }
}

const liveNamespaces = new Set<string>();
const liveProcesses = new Set<ChildProcess>();
const liveFolders = new Set<string>();
let hooksInstalled = false;

/** Kill every process this module started, delete every namespace it made or adopted, remove its folders. Idempotent. */
export function removeAllNetns(): void {
  for (const p of liveProcesses) p.kill('SIGKILL');
  liveProcesses.clear();
  const ip = findTool('ip') ?? 'ip';
  for (const ns of [...liveNamespaces]) {
    removeNetns(ip, ns);
    liveNamespaces.delete(ns);
  }
  for (const f of liveFolders) rmSync(f, { recursive: true, force: true });
  liveFolders.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', removeAllNetns);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      removeAllNetns();
      process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1));
    });
  }
}

/**
 * Have a namespace removed with this module's own: by `removeAllNetns`, the
 * 'exit' hook and SIGINT/SIGTERM/SIGHUP. Call it before `ip netns add`, so
 * that a failure half-way is cleaned up too.
 */
export function adoptNetns(name: string): void {
  installHooks();
  liveNamespaces.add(name);
}

/** A folder removed with the namespaces (after their processes are gone). */
function adoptFolder(path: string): string {
  installHooks();
  liveFolders.add(path);
  return path;
}

/** `ip` or `ip -n`, synchronously; stdout. */
export function runIp(ip: string, args: string[]): string {
  return execFileSync(ip, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
}

/** Run a command inside `ns` (`ip netns exec`) and return stdout; rejects on a non-zero exit. Async: a slow command does not stall the caller. */
export function execIn(ns: string, file: string, args: string[], ms = 10_000): Promise<string> {
  const ip = findTool('ip') ?? 'ip';
  return new Promise((resolve, reject) => {
    execFile(ip, ['netns', 'exec', ns, file, ...args], { encoding: 'utf8', timeout: ms, killSignal: 'SIGKILL', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${file} ${args.join(' ')} in ${ns}: ${err.message} ${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Wait until the link `dev` in `ns` has carrier (operstate UP). */
export async function waitLinkUp(ip: string, ns: string, dev: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const state = runIp(ip, ['-n', ns, '-o', 'link', 'show', dev]);
    if (/\bstate UP\b/.test(state) && /LOWER_UP/.test(state)) return;
    if (Date.now() > end) throw new Error(`deadline: ${dev} in ${ns} not up within ${ms} ms: ${state}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface NetnsPair {
  /** Network namespace names of the two hosts. */
  readonly ns: readonly [string, string];
  /** Name of the veth end inside each namespace (the same name in both). */
  readonly veth: string;
  /** IPv4 address of each host on the veth pair. */
  readonly addr: readonly [string, string];
  /** `ip -n <ns> ...`, synchronously; returns stdout. */
  ip(ns: string, args: string[]): string;
  /** Run a command inside `ns` (`ip netns exec`) and return stdout (rejects on a non-zero exit). */
  exec(ns: string, file: string, args: string[], ms?: number): Promise<string>;
  /** Wait until the veth end in `ns` has carrier again (operstate UP). */
  linkUp(ns: string, ms?: number): Promise<void>;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}

/**
 * Remove what a killed run (SIGKILL: no hook ran) left: the namespaces named
 * `shmbus-<pid>-<n>-<tag>` or `shmbus-probe-<pid>-<n>` whose pid is gone, the
 * processes in them, and their segment and config folders. Returns the
 * namespaces' names.
 */
export function removeStaleNetns(ip: string): string[] {
  const stale = netnsList().filter((n) => {
    const m = /^shmbus-(?:probe-)?(\d+)-\d+(?:-[A-Za-z0-9]+)?$/.exec(n);
    return m !== null && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]));
  });
  for (const n of stale) removeNetns(ip, n);
  // And their files: segment folders holding only `shmbus.n<pid>x...` segments, config folders whose hosts use `n<pid>x...`.
  const deadTag = (name: string) => {
    const m = /^n(\d+)x\d+-/.exec(name);
    return m !== null && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]));
  };
  const quietly = (fn: () => void) => {
    try {
      fn();
    } catch {
      // gone meanwhile, or not ours
    }
  };
  quietly(() => {
    for (const d of readdirSync('/dev/shm').filter((n) => n.startsWith('shmbus-test-'))) {
      quietly(() => {
        // Segment files, also in per-host subfolders (writeNetnsCluster hostDirs).
        const files = readdirSync(join('/dev/shm', d), { recursive: true, withFileTypes: true })
          .filter((e) => e.isFile())
          .map((e) => e.name);
        if (files.length > 0 && files.every((f) => f.startsWith('shmbus.') && deadTag(f.slice('shmbus.'.length)))) rmSync(join('/dev/shm', d), { recursive: true, force: true });
      });
    }
  });
  quietly(() => {
    for (const d of readdirSync(tmpdir()).filter((n) => n.startsWith('shmbus-netns-'))) {
      quietly(() => {
        const config = JSON.parse(readFileSync(join(tmpdir(), d, 'cluster.json'), 'utf8')) as { hosts: Record<string, { namespace: string }> };
        const namespaces = Object.values(config.hosts).map((h) => h.namespace);
        if (namespaces.length > 0 && namespaces.every(deadTag)) rmSync(join(tmpdir(), d), { recursive: true, force: true });
      });
    }
  });
  return stale;
}

/** A process started inside a namespace, its stdout split in lines. */
export interface NsProcess {
  readonly process: ChildProcess;
  readonly lines: string[];
  /** Resolves with the first stdout line matching `pattern`; rejects at the deadline or when the process exits without it. */
  line(pattern: RegExp, ms?: number): Promise<string>;
  exited(ms?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
}

/** `ip netns exec <ns> <file> <args>`, from the repository root, stdout/stderr piped. Killed by cleanup. */
export function spawnIn(ns: string, label: string, file: string, args: string[]): NsProcess {
  installHooks();
  const ip = findTool('ip') ?? 'ip';
  const proc = spawn(ip, ['netns', 'exec', ns, file, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  liveProcesses.add(proc);
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  let err = '';
  let done = false;
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    if (err.length > 1 << 20) err = err.slice(-(1 << 19));
  });
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    lines.push(line);
    for (const w of waiters.splice(0)) w();
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('exit', (code, signal) => {
      liveProcesses.delete(proc);
      resolve({ code, signal });
    });
  });
  // 'close' comes after the last stdout line: then a waiter can give up.
  proc.on('close', () => {
    done = true;
    for (const w of waiters.splice(0)) w();
  });
  return {
    process: proc,
    lines,
    line(pattern, ms = 10_000) {
      return deadline(
        new Promise<string>((resolve, reject) => {
          const check = () => {
            const found = lines.find((l) => pattern.test(l));
            if (found !== undefined) resolve(found);
            else if (done) reject(new Error(`${label} in ${ns} exited (code ${proc.exitCode}, signal ${proc.signalCode}) before printing ${pattern}; stdout: ${lines.slice(-5).join(' | ')}; stderr: ${err.slice(-800)}`));
            else waiters.push(check);
          };
          check();
        }),
        ms,
        `${label} in ${ns} printing ${pattern} (stdout: ${lines.slice(-3).join(' | ')}; stderr: ${err.slice(-500)})`,
      );
    },
    exited: (ms = 10_000) => deadline(exit, ms, `${label} in ${ns} exiting (stderr: ${err.slice(-500)})`),
    stderr: () => err,
  };
}

export type RelayMetrics = { global: Record<string, number>; peers: Record<string, Record<string, number>> };

export interface NsRelay {
  readonly host: string;
  readonly proc: NsProcess;
  /** The relay's own pid (from its start event: `ip netns exec` may or may not fork). */
  readonly pid: number;
  readonly metricsPort: number;
  /** JSON log events so far. */
  events(name?: string): Array<Record<string, unknown>>;
  /** GET /metrics.json on the namespace's loopback (through a short node process inside the namespace). */
  metrics(): Promise<RelayMetrics>;
  /** GET a path of the metrics port (/readyz, /metrics.json), parsed. */
  get(path: string): Promise<Record<string, unknown>>;
  /** SIGTERM the relay and wait for its exit code. */
  stop(ms?: number): Promise<number | null>;
}

const GET_SCRIPT = `
const [port, path] = process.argv.slice(1, 3);
const req = require('node:http').get({ host: '127.0.0.1', port: Number(port), path, timeout: 4000 }, (res) => {
  let body = '';
  res.on('data', (d) => (body += d));
  res.on('end', () => process.stdout.write(body));
});
req.on('timeout', () => req.destroy(new Error('timeout')));
req.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

/** Start transit-server for `host` inside `ns` and wait for its start event. `extra` arguments go to the relay's command line, `nodeArgs` to node's (e.g. --cpu-prof). */
export async function startRelayIn(ns: string, host: string, configPath: string, ms = 20_000, extra: string[] = [], nodeArgs: string[] = []): Promise<NsRelay> {
  const proc = spawnIn(ns, `relay ${host}`, process.execPath, [...nodeArgs, ...nodeScript('relay/cli'), '--config', configPath, '--host', host, '--drain-timeout-ms', '2000', ...extra]);
  const events = (name?: string) =>
    proc.lines.flatMap((l) => {
      try {
        const e = JSON.parse(l) as Record<string, unknown>;
        return name === undefined || e.event === name ? [e] : [];
      } catch {
        return [];
      }
    });
  await proc.line(/"event":"start"/, ms);
  const start = events('start')[0]!;
  const pid = Number(start.pid);
  const metricsPort = Number(String(start.metrics).split(':')[1]);
  const get = async (path: string) => JSON.parse(await execIn(ns, process.execPath, ['-e', GET_SCRIPT, String(metricsPort), path], 15_000)) as Record<string, unknown>;
  return {
    host,
    proc,
    pid,
    metricsPort,
    events,
    get,
    metrics: async () => (await get('/metrics.json')) as unknown as RelayMetrics,
    async stop(stopMs = 15_000) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // already gone: exited() tells how
      }
      return (await proc.exited(stopMs)).code;
    },
  };
}

export interface NetnsCluster {
  readonly configPath: string;
  readonly folder: string;
  /** The run's segment folder: the hosts' segment folder, or the parent of one folder per host (`hostDirs`). */
  readonly dir: string;
  /** A host's segment folder (its `dir` in the config). */
  dirOf(host: string): string;
  /** shmbus namespace of a host. */
  ns(host: string): string;
  /** Segment files left in the run's folder(s), as paths relative to `dir`. */
  segments(): string[];
}

/**
 * A cluster config whose hosts listen on addresses inside the network
 * namespaces; a fresh secret (mode 0600) in a temp folder; a fresh segment
 * folder under /dev/shm — shared by the hosts (each its own shmbus namespace
 * in it), or with `hostDirs` one subfolder per host, as separate machines
 * would have (network namespaces do not isolate files). Both folders are
 * removed with the namespaces.
 */
export function writeNetnsCluster(hosts: Record<string, { relay: string; inboxCapacity?: number }>, limits: Record<string, number>, options: { hostDirs?: boolean } = {}): NetnsCluster {
  const folder = adoptFolder(mkdtempSync(join(tmpdir(), 'shmbus-netns-')));
  const dir = adoptFolder(mkdtempSync('/dev/shm/shmbus-test-'));
  const dirOf = (h: string) => (options.hostDirs === true ? join(dir, h) : dir);
  if (options.hostDirs === true) for (const h of Object.keys(hosts)) mkdirSync(dirOf(h));
  const tag = `n${process.pid}x${randomInt(1e6)}`;
  const secretPath = join(folder, 'cluster.secret');
  writeFileSync(secretPath, randomBytes(32).toString('hex'), { mode: 0o600 });
  chmodSync(secretPath, 0o600);
  const configPath = join(folder, 'cluster.json');
  const config = {
    secret: { file: './cluster.secret' },
    limits,
    hosts: Object.fromEntries(
      Object.entries(hosts).map(([h, spec]) => [
        h,
        {
          relay: spec.relay,
          namespace: `${tag}-${h}`,
          dir: dirOf(h),
          metrics: '127.0.0.1:0',
          ...(spec.inboxCapacity !== undefined ? { inboxCapacity: spec.inboxCapacity } : {}),
        },
      ]),
    ),
  };
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  const segments = () =>
    options.hostDirs === true
      ? Object.keys(hosts).flatMap((h) => {
          try {
            return readdirSync(dirOf(h)).map((f) => `${h}/${f}`);
          } catch {
            return [];
          }
        })
      : readdirSync(dir);
  return { configPath, folder, dir, dirOf, ns: (h) => `${tag}-${h}`, segments };
}
