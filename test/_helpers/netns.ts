/**
 * Two "hosts" in Linux network namespaces joined by a veth pair, for relay
 * tests over a real link that can be cut (link down, iptables DROP).
 *
 * Needs root (and `ip` from iproute2). Everything made here is removed by
 * `cleanupAll` (./index), by the process 'exit' hook, and on SIGINT/SIGTERM,
 * even when a test fails: every process inside a namespace is killed first
 * (`ip netns pids`), then the namespace is deleted (which deletes its veth end
 * and its iptables rules).
 *
 * Traffic stays inside the namespaces: the hosts' addresses come from a /30 of
 * 10.213.0.0/16 that exists only on the veth pair, and metrics/doorbells are on
 * each namespace's own loopback.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, chmodSync, constants as fsConstants, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes, randomInt } from 'node:crypto';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import * as assert from 'uvu/assert';
import { deadline, registerCleanup, shmDir } from './index';

const REPO = join(__dirname, '..', '..');
const RELAY_CLI = join(REPO, 'relay', 'cli.ts');
const CHILD_SCRIPT = join(__dirname, 'child.ts');

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

export type Availability =
  | { ok: true; ip: string; iptables: string | null }
  | { ok: false; kind: 'not-root' | 'no-ip' | 'no-permission' | 'other'; reason: string };

function errorText(err: unknown): string {
  const e = err as { stderr?: Buffer | string; message?: string };
  const stderr = e.stderr === undefined ? '' : String(e.stderr).trim();
  return stderr !== '' ? stderr : String(e.message ?? err);
}

/** Can this process make network namespaces? Tries to add (and deletes) a probe namespace. */
/**
 * The body of a network-namespace suite's one test when namespaces are not
 * available: prints the `SKIPPED: <reason>` line that .ci/run counts, and
 * asserts the skip is legitimate (not root; or root without the capability,
 * and not in CI, which must run these tests).
 */
export function reportSkipped(availability: Extract<Availability, { ok: false }>): void {
  console.log(`\nSKIPPED: ${availability.reason}`);
  const uid = process.getuid?.() ?? -1;
  if (availability.kind === 'not-root') {
    assert.is.not(uid, 0, 'skipped only when not root');
  } else {
    assert.is(process.env.CI === undefined || process.env.CI === '' || process.env.CI === 'false', true, `CI runs as root and must run the network namespace tests: ${availability.reason}`);
    assert.is(availability.kind, 'no-permission', availability.reason);
  }
}

export function netnsAvailability(): Availability {
  const uid = process.getuid?.() ?? -1;
  if (uid !== 0) return { ok: false, kind: 'not-root', reason: `network namespaces need root (uid ${uid})` };
  const ip = findTool('ip');
  if (ip === null) return { ok: false, kind: 'no-ip', reason: 'network namespaces need the ip command (iproute2), which is not installed' };
  const probe = `shmbus-probe-${process.pid}-${randomInt(1e6)}`;
  try {
    execFileSync(ip, ['netns', 'add', probe], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  } catch (err) {
    const text = errorText(err);
    const kind = /not permitted|permission denied/i.test(text) ? 'no-permission' : 'other';
    return { ok: false, kind, reason: `\`ip netns add\` failed as root: ${text}` };
  }
  try {
    execFileSync(ip, ['netns', 'del', probe], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  } catch (err) {
    return { ok: false, kind: 'other', reason: `\`ip netns del ${probe}\` failed: ${errorText(err)}` };
  }
  return { ok: true, ip, iptables: findTool('iptables') };
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

/** SIGKILL every process in `ns` (they are this test's), then delete it. Synchronous: safe in an 'exit' hook. */
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
let hooksInstalled = false;

/** Kill every process this module started and delete every namespace it made. Idempotent. */
export function removeAllNetns(): void {
  for (const p of liveProcesses) p.kill('SIGKILL');
  liveProcesses.clear();
  const ip = findTool('ip') ?? 'ip';
  for (const ns of [...liveNamespaces]) {
    removeNetns(ip, ns);
    liveNamespaces.delete(ns);
  }
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
 * Have a namespace that another harness (./mesh) creates removed like this
 * module's own: by `removeAllNetns`, the next `cleanupAll`, the 'exit' hook and
 * SIGINT/SIGTERM/SIGHUP. Call it before `ip netns add`, so that a failure half-way
 * is cleaned up too.
 */
export function adoptNetns(name: string): void {
  installHooks();
  registerCleanup(removeAllNetns);
  liveNamespaces.add(name);
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
 * Remove what a killed run (SIGKILL: no hook ran) of these tests left: the
 * namespaces this module named `shmbus-<pid>-<n>-<tag>` or `shmbus-probe-<pid>-<n>`
 * whose pid is gone, the processes in them, and their segment and config
 * folders. Returns the namespaces' names.
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
        const files = readdirSync(join('/dev/shm', d));
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

/** Two fresh namespaces `shmbus-<pid>-<rand>-<tag>`, a veth pair between them, addresses 10.213.<rand>.1/30 and .2/30; lo and veth up. */
export async function makeNetnsPair(tags: readonly [string, string]): Promise<NetnsPair> {
  const ip = findTool('ip');
  if (ip === null) throw new Error('the ip command (iproute2) is not installed');
  installHooks();
  registerCleanup(removeAllNetns);
  const stale = removeStaleNetns(ip);
  if (stale.length > 0) console.log(`  removed network namespaces left by a killed run: ${stale.join(', ')}`);
  const run = (args: string[]): string => execFileSync(ip, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  const id = `${process.pid}-${randomInt(1e6)}`;
  const ns = [`shmbus-${id}-${tags[0]}`, `shmbus-${id}-${tags[1]}`] as const;
  const octet = randomInt(256);
  const addr = [`10.213.${octet}.1`, `10.213.${octet}.2`] as const;
  const veth = 'veth0';
  for (const n of ns) {
    liveNamespaces.add(n); // before creating it: a failure half-way is still cleaned up
    run(['netns', 'add', n]);
  }
  // Created directly inside the namespaces: the names never exist in the machine's own namespace.
  run(['link', 'add', 'name', veth, 'netns', ns[0], 'type', 'veth', 'peer', 'name', veth, 'netns', ns[1]]);
  ns.forEach((n, i) => {
    run(['-n', n, 'addr', 'add', `${addr[i]}/30`, 'dev', veth]);
    run(['-n', n, 'link', 'set', 'lo', 'up']);
    run(['-n', n, 'link', 'set', veth, 'up']);
  });
  const pair: NetnsPair = {
    ns,
    veth,
    addr,
    ip: (n, args) => run(['-n', n, ...args]),
    exec: (n, file, args, ms = 10_000) =>
      new Promise((resolve, reject) => {
        execFile(ip, ['netns', 'exec', n, file, ...args], { encoding: 'utf8', timeout: ms, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
          if (err !== null) reject(new Error(`${file} ${args.join(' ')} in ${n}: ${err.message} ${stderr}`));
          else resolve(stdout);
        });
      }),
    async linkUp(n, ms = 5000) {
      const end = Date.now() + ms;
      for (;;) {
        const state = run(['-n', n, '-o', 'link', 'show', veth]);
        if (/\bstate UP\b/.test(state) && /LOWER_UP/.test(state)) return;
        if (Date.now() > end) throw new Error(`deadline: ${veth} in ${n} not up within ${ms} ms: ${state}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
  };
  for (const n of ns) await pair.linkUp(n);
  return pair;
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

/** test/_helpers/child.ts with a role, inside a namespace. */
export function spawnChildIn(ns: string, role: string, args: Record<string, unknown>): NsProcess {
  return spawnIn(ns, `child ${role}`, process.execPath, ['--import', 'tsx', CHILD_SCRIPT, role, JSON.stringify(args)]);
}

export interface NsRelay {
  readonly host: string;
  readonly proc: NsProcess;
  /** The relay's own pid (from its start event: `ip netns exec` may or may not fork). */
  readonly pid: number;
  readonly metricsPort: number;
  /** JSON log events so far. */
  events(name?: string): Array<Record<string, unknown>>;
  /** GET /metrics.json on the namespace's loopback (through a short node process inside the namespace). */
  metrics(): Promise<{ global: Record<string, number>; peers: Record<string, Record<string, number>> }>;
  /** SIGTERM the relay and wait for its exit code. */
  stop(ms?: number): Promise<number | null>;
}

const METRICS_SCRIPT = `
const port = Number(process.argv[1]);
const req = require('node:http').get({ host: '127.0.0.1', port, path: '/metrics.json', timeout: 4000 }, (res) => {
  let body = '';
  res.on('data', (d) => (body += d));
  res.on('end', () => process.stdout.write(body));
});
req.on('timeout', () => req.destroy(new Error('timeout')));
req.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

/** Start transit-server for `host` inside `ns` and wait for its start event. */
export async function startRelayIn(pair: NetnsPair, ns: string, host: string, configPath: string, ms = 20_000): Promise<NsRelay> {
  const proc = spawnIn(ns, `relay ${host}`, process.execPath, ['--import', 'tsx', RELAY_CLI, '--config', configPath, '--host', host, '--drain-timeout-ms', '2000']);
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
  return {
    host,
    proc,
    pid,
    metricsPort,
    events,
    metrics: async () => JSON.parse(await pair.exec(ns, process.execPath, ['-e', METRICS_SCRIPT, String(metricsPort)], 15_000)),
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
  /** Segment folder shared by both hosts (network namespaces do not isolate files). */
  readonly dir: string;
  /** shmbus namespace of a host. */
  ns(host: string): string;
}

/**
 * A cluster config whose hosts listen on addresses inside the network
 * namespaces; a fresh secret (mode 0600) in a temp folder removed by cleanupAll.
 */
export function writeNetnsCluster(hosts: Record<string, { relay: string; inboxCapacity?: number }>, limits: Record<string, number>): NetnsCluster {
  const folder = mkdtempSync(join(tmpdir(), 'shmbus-netns-'));
  registerCleanup(() => rmSync(folder, { recursive: true, force: true }));
  const dir = shmDir();
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
          dir,
          metrics: '127.0.0.1:0',
          ...(spec.inboxCapacity !== undefined ? { inboxCapacity: spec.inboxCapacity } : {}),
        },
      ]),
    ),
  };
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  return { configPath, folder, dir, ns: (h) => `${tag}-${h}` };
}
