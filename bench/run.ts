/**
 * The benchmark runner: shmbus vs Node Unix-domain sockets vs a minimal C
 * shared-memory SPSC ring, between two processes pinned to separate cores;
 * and the relay path (app -> transit-server -> TCP -> transit-server -> app,
 * two "hosts" as namespaces) vs a direct Node TCP connection carrying the
 * same frames with the same batching, plus the relays' memory under a
 * 1 M-frame backlog.
 *
 *   npm run build && npm run bench                 print the table
 *   npm run build && npm run bench -- --write      ... and write BENCHMARKS.md
 *   node --import tsx bench/run.ts                 from source (tsx makes shmbus several times slower: checking only)
 *
 * Options: --write, --rounds N (env BENCH_ROUNDS, default 5), --seconds S
 * (BENCH_SECONDS, measured time per throughput/RTT row, default 0.4),
 * --only REGEX (rows whose id matches, e.g. 'uds|c:'), --json (raw results
 * on stdout as one JSON line after the table), --cpus A,B (BENCH_CPUS,
 * default 0,1: the sender/client side runs on A, the receiver/server on B),
 * --quiet-wait S (BENCH_QUIET_WAIT, default 0): before each round wait up to S
 * seconds for a second in which other processes use < 10 % of the machine.
 * The share of CPU time other processes used is reported per round and for
 * the run: on a shared 2-vCPU machine it is the first thing to look at.
 *
 * Relay rows (ids tcp:*, relay:*, and relay:backlog:64, which runs once after
 * the rounds): --relay-idle spin|park (BENCH_RELAY_IDLE, default spin: the
 * receiving app busy-polls; park: it waits on its doorbell when empty),
 * --backlog-frames N (BENCH_BACKLOG_FRAMES, default 1000000),
 * --backlog-stall-ms MS (BENCH_BACKLOG_STALL_MS, default 3000: how long the
 * backlog receiver reads nothing). The relays are started once per round,
 * before its rows, and stopped at its end (bench/cluster.ts).
 *
 * Every row runs once per round, rows in round-robin order (the start rotates
 * from round to round); each cell is the median over the rounds, and each
 * ratio is the median of the per-round ratios (numerator and denominator from
 * the same round, so they saw the same vCPU placement).
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { dirname, extname, join, relative } from 'node:path';
import { median, type RttResult, type RoleArgs, type ThroughputResult } from './common';
import { BenchCluster, type Host, type MemorySample } from './cluster';
// layout.ts is pure constants (it does not load the addon), so the C and UDS rows run without it.
import * as layout from '../src/layout';

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

function findRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'bench', 'c', 'spsc.c'))) return dir;
    dir = dirname(dir);
  }
  throw new Error(`cannot find the project root (with bench/c/spsc.c) above ${__dirname}`);
}

const ROOT = findRoot();
const argv = process.argv.slice(2);

function option(name: string, env: string, fallback: string): string {
  const i = argv.indexOf(`--${name}`);
  if (i >= 0 && argv[i + 1] !== undefined) return argv[i + 1]!;
  return process.env[env] ?? fallback;
}

const WRITE = argv.includes('--write');
const JSON_OUT = argv.includes('--json');
const ROUNDS = Math.max(1, Number.parseInt(option('rounds', 'BENCH_ROUNDS', '5'), 10) || 5);
const SECONDS = Math.max(0.05, Number.parseFloat(option('seconds', 'BENCH_SECONDS', '0.4')) || 0.4);
const ONLY = new RegExp(option('only', 'BENCH_ONLY', '.'));
const [CPU_SEND, CPU_RECV] = option('cpus', 'BENCH_CPUS', '0,1')
  .split(',')
  .map((s) => Number.parseInt(s, 10)) as [number, number];
const WARMUP_MS = 150;
/** Before each round, wait up to this long for a quiet machine (0: do not wait). */
const QUIET_WAIT_S = Math.max(0, Number.parseFloat(option('quiet-wait', 'BENCH_QUIET_WAIT', '0')) || 0);
/** Count bounds of the measured part (the time bound usually ends a row first). */
const MAX_FRAMES = 50_000_000;
const MAX_ROUND_TRIPS = 200_000;
const ROW_TIMEOUT_MS = 30_000 + SECONDS * 4000;
const SIZES = [64, 1024];
/** Inbox geometry: slots of 64 B multiples holding the 32-byte frame header + payload. */
const SLOT_SIZE: Record<number, number> = { 64: 128, 1024: 1088 };
const CAPACITY = 4096;
const PRODUCERS = 4;

const EXT = extname(__filename); // '.ts' from source (tsx), '.js' compiled
const UDS_FILE = join(__dirname, `uds${EXT}`);
const SHMBUS_FILE = join(__dirname, `shmbus${EXT}`);
const RELAY_FILE = join(__dirname, `relay${EXT}`);
const RELAY_CLI = join(__dirname, '..', 'relay', `cli${EXT}`);
/**
 * Limits of the relay clusters of the throughput/RTT rows (one cluster per
 * batching): `batchFrames` is the most frames alpha's relay puts in one DATA
 * message (one socket.write), compared with the direct TCP rows at the same
 * frames per write. Connections are kept (idleTimeoutMs) across the round.
 */
const RELAY_LIMITS = (batchFrames: number): Record<string, number> => ({ batchFrames, idleTimeoutMs: 3_600_000 });
/** Backlog row: frames pushed, receiver's inbox, how long it does not read. */
const BACKLOG_ID = 'relay:backlog:64';
const BACKLOG_FRAMES = Math.max(1, Number.parseInt(option('backlog-frames', 'BENCH_BACKLOG_FRAMES', '1000000'), 10) || 1_000_000);
const BACKLOG_SIZE = 64;
const BACKLOG_CAPACITY = 256;
const BACKLOG_STALL_MS = Math.max(0, Number.parseInt(option('backlog-stall-ms', 'BENCH_BACKLOG_STALL_MS', '3000'), 10) || 0);
/** limits.pendingFrames: the shipped default (src/config.ts), and a bound below the outbound ring's capacity. */
const BACKLOG_DEFAULT_PENDING = 10_000;
const BACKLOG_SMALL_PENDING = 1000;
const BACKLOG_TIMEOUT_MS = 180_000;
/** Relay receivers: 'spin' (busy recvBatch) or 'park' (recvBatch; on an empty inbox, wait on the doorbell). */
const RELAY_IDLE = option('relay-idle', 'BENCH_RELAY_IDLE', 'spin') === 'park' ? 'park' : 'spin';
const SHM_DIR = '/dev/shm';
const RUN_ID = `bench-${process.pid}`;

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

const live = new Set<ChildProcess>();
let pinning = true;

function killAll(): void {
  for (const proc of live) {
    try {
      proc.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Relay clusters running now: their segments and config folders are kept by cleanupFiles. */
const clusters = new Set<BenchCluster>();

/**
 * Remove everything this run may have left: shmbus segments of our
 * namespaces, sockets, cluster folders — except those of running clusters.
 */
function cleanupFiles(): void {
  const keepShm = [...clusters].flatMap((c) => [`shmbus.${c.ns('alpha')}.`, `shmbus.${c.ns('beta')}.`]);
  const keepTmp = [...clusters].map((c) => c.folder);
  try {
    for (const name of readdirSync(SHM_DIR)) {
      if (name.startsWith(`shmbus.${RUN_ID}-`) && !keepShm.some((k) => name.startsWith(k))) rmSync(join(SHM_DIR, name), { force: true });
    }
  } catch {
    // no /dev/shm
  }
  try {
    for (const name of readdirSync(tmpdir())) {
      const path = join(tmpdir(), name);
      if (name.startsWith(`shmbus-${RUN_ID}-`) && !keepTmp.includes(path)) rmSync(path, { recursive: true, force: true });
    }
  } catch {
    // ignore
  }
}

process.on('exit', () => {
  killAll();
  for (const cluster of clusters) cluster.killNow();
  clusters.clear();
  cleanupFiles();
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    console.error(`\nbench: ${signal}, stopping`);
    killAll();
    // Let the killed children go before removing their files (the exit hook cleans up again).
    const giveUp = Date.now() + 1000;
    const wait = () => (live.size > 0 && Date.now() < giveUp ? setTimeout(wait, 20) : process.exit(130));
    wait();
  });
}

function pinned(cpu: number, command: string, args: string[]): [string, string[]] {
  return pinning ? ['taskset', ['-c', String(cpu), command, ...args]] : [command, args];
}

type Message = { type: string; [key: string]: unknown };

/** The telling lines of a child's stderr (the error and where it was thrown), not the whole trace. */
function condense(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const i = lines.findIndex((l) => /^(\w*Error|Error)\b|^\w+Error:/.test(l));
  return (i >= 0 ? lines.slice(i, i + 3) : lines.slice(-3)).join(' | ');
}

/** One Node child of a row, speaking the IPC protocol of common.ts. */
class NodeChild {
  readonly proc: ChildProcess;
  private readonly messages: Message[] = [];
  private wake: (() => void) | null = null;
  private stderr = '';
  private exitInfo: string | null = null;
  readonly exited: Promise<void>;

  constructor(
    readonly label: string,
    file: string,
    role: string,
    args: RoleArgs,
    cpu: number,
  ) {
    const [command, commandArgs] = pinned(cpu, process.execPath, [...process.execArgv, file, role, JSON.stringify(args)]);
    this.proc = spawn(command, commandArgs, { stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
    live.add(this.proc);
    this.proc.stderr!.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-4000);
    });
    this.proc.on('message', (message: Message) => {
      this.messages.push(message);
      this.wake?.();
    });
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => {
        live.delete(this.proc);
        this.exitInfo = signal ? `signal ${signal}` : `code ${code}`;
        this.wake?.();
        resolve();
      });
      this.proc.on('error', (err) => {
        live.delete(this.proc);
        this.exitInfo = `spawn error ${err.message}`;
        this.wake?.();
        resolve();
      });
    });
  }

  /** The next message of `type`; rejects on an error message, an early exit, or the deadline. */
  async next(type: string, deadline: number): Promise<Message> {
    for (;;) {
      const i = this.messages.findIndex((m) => m.type === type || m.type === 'error');
      if (i >= 0) {
        const [message] = this.messages.splice(i, 1) as [Message];
        if (message.type === 'error') throw new Error(`${this.label}: ${String(message.message)}`);
        return message;
      }
      if (this.exitInfo !== null) throw new Error(`${this.label} exited (${this.exitInfo}) before "${type}"${this.stderr ? `; stderr: ${condense(this.stderr)}` : ''}`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`${this.label}: timed out waiting for "${type}"`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  send(message: Message): void {
    this.proc.send(message);
  }
}

interface PairSpec {
  file: string;
  /** Receiver/server role (one process, on CPU_RECV). */
  receiver: string;
  /** Sender/client role (`senders` processes, on CPU_SEND). */
  sender: string;
  senders: number;
  args: RoleArgs;
  /** Arguments only the receiver / only the senders get (over `args`). */
  receiverArgs?: Partial<RoleArgs>;
  senderArgs?: Partial<RoleArgs>;
  /** Which side reports the result. */
  measuring: 'receiver' | 'sender';
  /** Namespaces whose inboxes to describe if the row fails (default: args.namespace). */
  namespaces?: string[];
}

/**
 * Run one Node row: receiver first (it must exist before anyone sends), then
 * the senders, then go. Checks that what was sent is what was received. All
 * children are gone when this returns or throws.
 */
async function runPair(spec: PairSpec): Promise<Message> {
  const deadline = Date.now() + ROW_TIMEOUT_MS;
  const children: NodeChild[] = [];
  try {
    const receiver = new NodeChild(`${spec.receiver}`, spec.file, spec.receiver, { ...spec.args, ...spec.receiverArgs }, CPU_RECV);
    children.push(receiver);
    const ready = await receiver.next('ready', deadline);
    // A TCP server reports the port it listens on.
    const port = typeof ready.port === 'number' ? { port: ready.port } : {};
    const senders: NodeChild[] = [];
    for (let id = 0; id < spec.senders; id++) {
      const child = new NodeChild(`${spec.sender}#${id}`, spec.file, spec.sender, { ...spec.args, ...spec.senderArgs, ...port, id }, CPU_SEND);
      children.push(child);
      senders.push(child);
    }
    for (const child of senders) await child.next('ready', deadline);
    // One start time for all senders: their warm-up and measured phases are counted from it.
    const at = Date.now();
    for (const child of senders) child.send({ type: 'go', at });
    let result: Message;
    if (spec.measuring === 'receiver') {
      const done = await Promise.all(senders.map((child) => child.next('done', deadline)));
      result = await receiver.next('result', deadline);
      const sent = done.reduce((sum, m) => sum + Number(m.sent), 0);
      if (Number(result.received) !== sent) throw new Error(`sent ${sent} frames but the receiver got ${String(result.received)}`);
    } else {
      result = await senders[0]!.next('result', deadline);
      const done = await receiver.next('done', deadline);
      if (Number(done.errors) !== 0) throw new Error(`${spec.receiver}: ${String(done.errors)} bad frames`);
    }
    if (Number(result.errors) !== 0) throw new Error(`${String(result.errors)} bad frames`);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(children.map((c) => c.exited)), new Promise((r) => (timer = setTimeout(r, Math.max(0, deadline - Date.now()))))]);
    clearTimeout(timer);
    return result;
  } catch (err) {
    // For a bug report: the state of the inboxes while the children are still there.
    const namespaces = spec.namespaces ?? (spec.args.namespace !== undefined ? [spec.args.namespace] : []);
    if (err instanceof Error) for (const ns of namespaces) err.message += inboxStates(ns);
    throw err;
  } finally {
    for (const child of children) if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
    await Promise.all(children.map((c) => c.exited));
  }
}

/** Head, tail, parked word and doorbell counters of every inbox of a namespace (see src/layout.ts). */
function inboxStates(namespace: string): string {
  const states: string[] = [];
  try {
    for (const name of readdirSync(SHM_DIR)) {
      if (!name.startsWith(`shmbus.${namespace}.`) || !name.endsWith('.inbox')) continue;
      const bytes = readFileSync(join(SHM_DIR, name));
      if (bytes.length < layout.INBOX_HEADER_LENGTH) continue;
      const u32 = (offset: number) => bytes.readUInt32LE(offset);
      states.push(
        `${name.slice(`shmbus.${namespace}.`.length)}: tail ${u32(layout.INBOX_TAIL_OFFSET)} head ${u32(layout.INBOX_HEAD_OFFSET)} parked ${u32(layout.INBOX_PARKED_OFFSET)}` +
          ` wakeups ${u32(layout.INBOX_WAKEUPS_OFFSET)} parks ${u32(layout.INBOX_PARKS_OFFSET)} received ${u32(layout.INBOX_RECEIVED_OFFSET)} sent ${u32(layout.INBOX_SENT_OFFSET)}`,
      );
    }
  } catch {
    // best effort
  }
  return states.length ? ` [inboxes of ${namespace}: ${states.join('; ')}]` : '';
}

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

type Impl = 'c' | 'uds' | 'shmbus' | 'tcp' | 'relay';
type Measure = 'oneway1' | 'oneway32' | 'rttBusy' | 'rttParked' | 'fanin';

interface Metric {
  rate?: number;
  p50?: number;
  p99?: number;
  /** Relay rows: frames per DATA message alpha's relay sent during the row (warm-up included). */
  perMessage?: number;
  /** Relay rows: CPU time of each relay per frame carried (µs; warm-up included). */
  alphaCpuUs?: number;
  betaCpuUs?: number;
}

interface Row {
  id: string;
  impl: Impl;
  measure: Measure;
  size: number;
  /** Relay rows: the batchFrames of their cluster. */
  relayBatch?: number;
  run(): Promise<Metric>;
}

let spsc: string | null = null;
let rowCounter = 0;

function buildSpsc(): string | null {
  const out = join(ROOT, 'bench', 'out');
  mkdirSync(out, { recursive: true });
  const binary = join(out, 'spsc');
  const result = spawnSync('cc', ['-O2', '-Wall', '-o', binary, join(ROOT, 'bench', 'c', 'spsc.c')], { encoding: 'utf8' });
  if (result.error || result.status !== 0) {
    console.error(`bench: cannot compile bench/c/spsc.c, skipping the C rows: ${result.error?.message ?? result.stderr}`);
    return null;
  }
  return binary;
}

function runSpsc(mode: string, size: number, maxCount: number): Promise<Record<string, number>> {
  const cpuArgs = pinning ? [String(CPU_SEND), String(CPU_RECV)] : ['-1', '-1'];
  return new Promise((resolve, reject) => {
    const child = execFile(spsc!, [mode, String(size), ...cpuArgs, String(SECONDS), String(maxCount)], { timeout: ROW_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      live.delete(child);
      if (err) {
        reject(new Error(`spsc ${mode} ${size}: ${err.message} ${stderr}`));
        return;
      }
      try {
        const result = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, number>;
        if (result.errors !== 0) throw new Error(`${result.errors} bad frames`);
        resolve(result);
      } catch (e) {
        reject(new Error(`spsc ${mode} ${size}: ${String(e)}; output ${stdout}`));
      }
    });
    live.add(child);
  });
}

function udsPath(): string {
  return join(tmpdir(), `shmbus-${RUN_ID}-${++rowCounter}.sock`);
}

function baseArgs(size: number, rtt: boolean): RoleArgs {
  return { size, seconds: SECONDS, maxCount: rtt ? MAX_ROUND_TRIPS : MAX_FRAMES, warmupMs: WARMUP_MS, limitMs: ROW_TIMEOUT_MS };
}

function shmArgs(size: number, rtt: boolean): RoleArgs {
  return { ...baseArgs(size, rtt), namespace: `${RUN_ID}-${++rowCounter}`, slotSize: SLOT_SIZE[size]!, capacity: CAPACITY };
}

function tcpArgs(size: number, rtt: boolean): RoleArgs {
  return { ...baseArgs(size, rtt), transport: 'tcp' };
}

// ---------------------------------------------------------------------------
// Relay clusters (bench/cluster.ts): started per round, before its rows
// ---------------------------------------------------------------------------

let clusterCounter = 0;
/** This round's cluster per relay batching. */
const roundClusters = new Map<number, BenchCluster>();
/** Relays that did not stop cleanly, restarts: reported with the results. */
const relayProblems: string[] = [];

function newCluster(prefix: string, limits: Record<string, number>): BenchCluster {
  const cluster = new BenchCluster({
    prefix,
    limits,
    command: process.execPath,
    args: [...process.execArgv, RELAY_CLI],
    cpus: pinning ? { alpha: CPU_SEND, beta: CPU_RECV } : null,
    track: (proc) => live.add(proc),
    untrack: (proc) => live.delete(proc),
  });
  clusters.add(cluster);
  return cluster;
}

async function startCluster(prefix: string, limits: Record<string, number>): Promise<BenchCluster> {
  const cluster = newCluster(prefix, limits);
  try {
    await cluster.start();
    return cluster;
  } catch (err) {
    await stopCluster(cluster);
    throw err;
  }
}

async function stopCluster(cluster: BenchCluster): Promise<string | null> {
  let problem: string | null;
  try {
    problem = await cluster.stop();
  } finally {
    clusters.delete(cluster);
    cleanupFiles();
  }
  return problem;
}

/** The cluster of this round for `batchFrames`, (re)started if missing or broken. */
async function relayCluster(batchFrames: number): Promise<BenchCluster> {
  const existing = roundClusters.get(batchFrames);
  if (existing !== undefined && existing.healthy) return existing;
  if (existing !== undefined) {
    roundClusters.delete(batchFrames);
    const problem = await stopCluster(existing);
    relayProblems.push(`cluster batchFrames ${batchFrames} restarted${problem ? `: ${problem}` : ''}`);
  }
  const cluster = await startCluster(`${RUN_ID}-c${++clusterCounter}b${batchFrames}`, RELAY_LIMITS(batchFrames));
  roundClusters.set(batchFrames, cluster);
  // Warm up the relays (JIT, connections both ways), unmeasured.
  for (const size of SIZES) {
    await runRelayPair(cluster, size, 'sink', 'source', 'receiver', false, 0.3);
    await runRelayPair(cluster, size, 'echoParked', 'pingParked', 'sender', true, 0.1);
  }
  return cluster;
}

async function stopRoundClusters(): Promise<void> {
  for (const [batch, cluster] of roundClusters) {
    const problem = await stopCluster(cluster);
    if (problem) relayProblems.push(`cluster batchFrames ${batch}: ${problem}`);
  }
  roundClusters.clear();
}

/** CPU time (utime + stime) of a process, in seconds. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

/**
 * One app pair across the relays: the receiver (or echo) on beta, pinned with
 * beta's relay; the sender (or ping) on alpha, pinned with alpha's relay.
 */
async function runRelayPair(cluster: BenchCluster, size: number, receiver: string, sender: string, measuring: PairSpec['measuring'], isRtt: boolean, seconds = SECONDS): Promise<{ message: Message; perMessage: number; alphaCpu: number; betaCpu: number }> {
  const k = ++rowCounter;
  const rx = `rx${k}`;
  const tx = `tx${k}`;
  const alpha = cluster.relay('alpha');
  const beta = cluster.relay('beta');
  const before = (await alpha.metrics()).peers.beta!;
  const cpu0 = [cpuSeconds(alpha.pid), cpuSeconds(beta.pid)];
  const message = await runPair({
    file: RELAY_FILE,
    receiver,
    sender,
    senders: 1,
    measuring,
    args: { ...baseArgs(size, isRtt), seconds, producers: 1, slotSize: SLOT_SIZE[size]!, capacity: CAPACITY, idle: RELAY_IDLE },
    receiverArgs: { namespace: cluster.ns('beta'), name: rx, to: `${tx}@alpha` },
    senderArgs: { namespace: cluster.ns('alpha'), name: tx, to: `${rx}@beta` },
    namespaces: [cluster.ns('alpha'), cluster.ns('beta')],
  });
  const cpu1 = [cpuSeconds(alpha.pid), cpuSeconds(beta.pid)];
  if (!cluster.healthy) throw new Error(`a relay died during the row: alpha ${alpha.describe()}; beta ${beta.describe()}`);
  const after = (await alpha.metrics()).peers.beta!;
  const frames = after.framesOut! - before.framesOut!;
  return { message, perMessage: frames / (after.batchesOut! - before.batchesOut!), alphaCpu: (cpu1[0]! - cpu0[0]!) / frames, betaCpu: (cpu1[1]! - cpu0[1]!) / frames };
}

// ---------------------------------------------------------------------------
// Relay memory under a backlog (once per run, after the rounds)
// ---------------------------------------------------------------------------

type Peaks = Record<Host, MemorySample>;

/** A backlog run: the relays' limits (over the shipped defaults) and what they mean. */
interface BacklogVariant {
  name: string;
  limits: Record<string, number>;
}

const BACKLOG_VARIANTS: BacklogVariant[] = [
  { name: 'shipped defaults', limits: {} },
  { name: `pendingFrames ${BACKLOG_SMALL_PENDING}`, limits: { pendingFrames: BACKLOG_SMALL_PENDING } },
];

interface BacklogResult {
  variant: string;
  frames: number;
  pendingFrames: number;
  outboundCapacity: number;
  /** Memory of each relay with both apps connected, before the first frame (kB). */
  idle: Peaks;
  /** Largest value of each field over the samples of a phase (kB); `all` also takes VmHWM read at the end. */
  stall: Peaks;
  drain1: Peaks;
  drain2: Peaks;
  all: Peaks;
  samples: number;
  /** At the end of the stall (the receiver has read nothing yet). */
  atStall: { sinkInbox: number; betaPending: number; betaDelivered: number; betaPausedReads: number; alphaOutboundDepth: number; alphaUnacked: number; alphaQueued: number; alphaFramesOut: number };
  peakBetaPending: number;
  peakAlphaOutboundDepth: number;
  betaBackpressureOn: number;
  alphaRelayRefusedFull: number;
  refused: number;
  longestRefusalMs: number;
  sendSeconds: number;
  drainSeconds: number;
  received: number;
  extra: number;
  errors: number;
  source: string;
  duplicates: number;
  resends: number;
  undeliverable: number;
  ackTimeouts: number;
  stopProblem: string | null;
}

function maxSample(a: MemorySample | undefined, b: MemorySample): MemorySample {
  if (a === undefined) return { ...b };
  return { rss: Math.max(a.rss, b.rss), hwm: Math.max(a.hwm, b.hwm), anon: Math.max(a.anon, b.anon), file: Math.max(a.file, b.file), shmem: Math.max(a.shmem, b.shmem) };
}

/** The relay's own inbox (the host's outbound ring): sends refused because it was full, and its capacity, from its segment header. */
function relayInbox(namespace: string): { refused: number; capacity: number } {
  try {
    const bytes = readFileSync(join(SHM_DIR, `shmbus.${namespace}.@relay.inbox`));
    return { refused: bytes.readUInt32LE(layout.INBOX_REFUSED_FULL_OFFSET) + bytes.readUInt32LE(layout.INBOX_REFUSED_FULL_OFFSET + 4) * 2 ** 32, capacity: bytes.readUInt32LE(layout.INBOX_CAPACITY_OFFSET) };
  } catch {
    return { refused: NaN, capacity: NaN };
  }
}

/** Frames waiting in the backlog receiver's inbox (tail - head), read from its segment. */
function sinkDepth(namespace: string): number {
  try {
    const bytes = readFileSync(join(SHM_DIR, `shmbus.${namespace}.sink.inbox`));
    return (bytes.readUInt32LE(layout.INBOX_TAIL_OFFSET) - bytes.readUInt32LE(layout.INBOX_HEAD_OFFSET)) | 0;
  } catch {
    return NaN;
  }
}

/**
 * A sender on alpha pushes BACKLOG_FRAMES frames to a receiver on beta whose
 * inbox is small and which reads nothing for BACKLOG_STALL_MS, then drains
 * everything. Both relays' memory is sampled from /proc every 20 ms, their
 * metrics every 100 ms. Throws unless every frame arrived exactly once, in order.
 */
async function runBacklog(variant: BacklogVariant): Promise<BacklogResult> {
  const cluster = await startCluster(`${RUN_ID}-c${++clusterCounter}backlog`, variant.limits);
  const deadline = Date.now() + BACKLOG_TIMEOUT_MS;
  const children: NodeChild[] = [];
  const alpha = cluster.relay('alpha');
  const beta = cluster.relay('beta');
  let sampler: NodeJS.Timeout | undefined;
  try {
    const common: RoleArgs = { size: BACKLOG_SIZE, seconds: 0, maxCount: 0, warmupMs: 0, limitMs: BACKLOG_TIMEOUT_MS, frames: BACKLOG_FRAMES, slotSize: SLOT_SIZE[BACKLOG_SIZE]!, capacity: CAPACITY };
    const sink = new NodeChild('backlogSink', RELAY_FILE, 'backlogSink', { ...common, capacity: BACKLOG_CAPACITY, namespace: cluster.ns('beta'), name: 'sink', stallMs: BACKLOG_STALL_MS + 30_000 }, CPU_RECV);
    children.push(sink);
    await sink.next('ready', deadline);
    const source = new NodeChild('backlogSource', RELAY_FILE, 'backlogSource', { ...common, namespace: cluster.ns('alpha'), name: 'source', to: 'sink@beta' }, CPU_SEND);
    children.push(source);
    await source.next('ready', deadline);

    const idle = { alpha: alpha.memory()!, beta: beta.memory()! };
    const phases: Record<'stall' | 'drain', Array<{ at: number; m: Partial<Peaks> }>> = { stall: [], drain: [] };
    let phase: 'stall' | 'drain' = 'stall';
    let peakBetaPending = 0;
    let peakAlphaOutboundDepth = 0;
    let metricsBusy = false;
    let tick = 0;
    const sample = () => {
      const m: Partial<Peaks> = {};
      for (const relay of [alpha, beta]) {
        const s = relay.memory();
        if (s !== null) m[relay.host] = s;
      }
      phases[phase].push({ at: performance.now(), m });
      if (tick++ % 5 !== 0 || metricsBusy) return;
      metricsBusy = true;
      Promise.all([alpha.metrics(), beta.metrics()])
        .then(([a, b]) => {
          peakAlphaOutboundDepth = Math.max(peakAlphaOutboundDepth, a.global.outboundDepth!);
          peakBetaPending = Math.max(peakBetaPending, b.global.pendingFrames!);
        })
        .catch(() => undefined)
        .finally(() => (metricsBusy = false));
    };
    sampler = setInterval(sample, 20);
    source.send({ type: 'go', at: Date.now() });
    await new Promise((resolve) => setTimeout(resolve, BACKLOG_STALL_MS));
    const [a0, b0] = await Promise.all([alpha.metrics(), beta.metrics()]);
    const sinkInbox = sinkDepth(cluster.ns('beta'));
    phase = 'drain';
    sink.send({ type: 'read' });
    await sink.next('reading', deadline);
    const done = await source.next('done', deadline);
    const result = await sink.next('result', deadline);
    clearInterval(sampler);
    sample();
    const hwm = { alpha: alpha.memory()?.hwm ?? NaN, beta: beta.memory()?.hwm ?? NaN };
    const [a1, b1] = await Promise.all([alpha.metrics(), beta.metrics()]);
    const outbound = relayInbox(cluster.ns('alpha'));
    await Promise.all(children.map((c) => c.exited));
    const stopProblem = await stopCluster(cluster);

    const peaksOf = (list: Array<{ m: Partial<Peaks> }>): Peaks => {
      const p: Partial<Peaks> = {};
      for (const { m } of list) for (const h of ['alpha', 'beta'] as const) if (m[h]) p[h] = maxSample(p[h], m[h]!);
      const none = { rss: NaN, hwm: NaN, anon: NaN, file: NaN, shmem: NaN };
      return { alpha: p.alpha ?? none, beta: p.beta ?? none };
    };
    const drainStart = phases.drain[0]?.at ?? 0;
    const drainMid = drainStart + (Number(result.drainSeconds) * 1000) / 2;
    const all = peaksOf([...phases.stall, ...phases.drain]);
    all.alpha.hwm = Math.max(all.alpha.hwm, hwm.alpha);
    all.beta.hwm = Math.max(all.beta.hwm, hwm.beta);
    const r: BacklogResult = {
      variant: variant.name,
      frames: BACKLOG_FRAMES,
      pendingFrames: variant.limits.pendingFrames ?? BACKLOG_DEFAULT_PENDING,
      outboundCapacity: outbound.capacity,
      idle,
      stall: peaksOf(phases.stall),
      drain1: peaksOf(phases.drain.filter((x) => x.at < drainMid)),
      drain2: peaksOf(phases.drain.filter((x) => x.at >= drainMid)),
      all,
      samples: phases.stall.length + phases.drain.length,
      atStall: {
        sinkInbox,
        betaPending: b0.global.pendingFrames!,
        betaDelivered: b0.global.delivered!,
        betaPausedReads: b0.global.pausedReads!,
        alphaOutboundDepth: a0.global.outboundDepth!,
        alphaUnacked: a0.peers.beta!.unacked!,
        alphaQueued: a0.peers.beta!.queued!,
        alphaFramesOut: a0.peers.beta!.framesOut!,
      },
      peakBetaPending,
      peakAlphaOutboundDepth,
      betaBackpressureOn: beta.events('backpressure_on'),
      alphaRelayRefusedFull: outbound.refused,
      refused: Number(done.sendRefused),
      longestRefusalMs: Number(done.longestRefusalMs),
      sendSeconds: Number(done.seconds),
      drainSeconds: Number(result.drainSeconds),
      received: Number(result.received),
      extra: Number(result.extra),
      errors: Number(result.errors),
      source: String(result.source),
      duplicates: b1.global.duplicates!,
      resends: a1.peers.beta!.resends!,
      undeliverable: b1.global.undeliverable! + a1.peers.beta!.undeliverable!,
      ackTimeouts: a1.peers.beta!.ackTimeouts!,
      stopProblem,
    };
    if (r.received !== r.frames || r.extra !== 0 || r.errors !== 0) {
      throw new Error(`backlog (${variant.name}): received ${r.received} of ${r.frames} frames, ${r.extra} after the last, ${r.errors} out of order or damaged (first: ${String(result.firstError)})`);
    }
    return r;
  } catch (err) {
    if (err instanceof Error) for (const ns of [cluster.ns('alpha'), cluster.ns('beta')]) err.message += inboxStates(ns);
    throw err;
  } finally {
    clearInterval(sampler);
    for (const child of children) if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
    await Promise.all(children.map((c) => c.exited));
    if (clusters.has(cluster)) await stopCluster(cluster);
  }
}

const rate = (m: Message): Metric => ({ rate: (m as unknown as ThroughputResult).rate });
const rtt = (m: Message): Metric => ({ p50: (m as unknown as RttResult).p50Us, p99: (m as unknown as RttResult).p99Us });

function defineRows(): Row[] {
  const rows: Row[] = [];
  const add = (impl: Impl, measure: Measure, size: number, run: () => Promise<Metric>, relayBatch?: number) => rows.push({ id: `${impl}:${measure}:${size}`, impl, measure, size, run, relayBatch });
  for (const size of SIZES) {
    if (spsc !== null) {
      add('c', 'oneway1', size, async () => ({ rate: (await runSpsc('tput1', size, MAX_FRAMES)).rate! }));
      add('c', 'oneway32', size, async () => ({ rate: (await runSpsc('tput32', size, MAX_FRAMES)).rate! }));
      add('c', 'rttBusy', size, async () => {
        const r = await runSpsc('rtt', size, MAX_ROUND_TRIPS);
        return { p50: r.p50Us!, p99: r.p99Us! };
      });
    }
    const uds = (receiver: string, sender: string, senders: number, measuring: PairSpec['measuring'], extra: Partial<RoleArgs>, isRtt: boolean) => async () => {
      const path = udsPath();
      try {
        const m = await runPair({ file: UDS_FILE, receiver, sender, senders, measuring, args: { ...baseArgs(size, isRtt), path, producers: senders, ...extra } });
        return isRtt ? rtt(m) : rate(m);
      } finally {
        rmSync(path, { force: true });
      }
    };
    add('uds', 'oneway1', size, uds('sink', 'source', 1, 'receiver', { batch: 1 }, false));
    add('uds', 'oneway32', size, uds('sink', 'source', 1, 'receiver', { batch: 32 }, false));
    add('uds', 'rttParked', size, uds('echo', 'ping', 1, 'sender', {}, true));
    add('uds', 'fanin', size, uds('sink', 'source', PRODUCERS, 'receiver', { batch: 1 }, false));
    const shm = (receiver: string, sender: string, senders: number, measuring: PairSpec['measuring'], extra: Partial<RoleArgs>, isRtt: boolean) => async () => {
      const m = await runPair({ file: SHMBUS_FILE, receiver, sender, senders, measuring, args: { ...shmArgs(size, isRtt), producers: senders, ...extra } });
      return isRtt ? rtt(m) : rate(m);
    };
    add('shmbus', 'oneway1', size, shm('sink', 'source', 1, 'receiver', { batch: 1 }, false));
    add('shmbus', 'oneway32', size, shm('sink', 'source', 1, 'receiver', { batch: 32 }, false));
    add('shmbus', 'rttBusy', size, shm('echo', 'ping', 1, 'sender', {}, true));
    add('shmbus', 'rttParked', size, shm('echoParked', 'pingParked', 1, 'sender', {}, true));
    add('shmbus', 'fanin', size, shm('sink', 'source', PRODUCERS, 'receiver', { batch: 1 }, false));
    // Direct TCP: the UDS code over a loopback TCP connection (same framing, same batching).
    const tcp = (receiver: string, sender: string, measuring: PairSpec['measuring'], extra: Partial<RoleArgs>, isRtt: boolean) => async () => {
      const m = await runPair({ file: UDS_FILE, receiver, sender, senders: 1, measuring, args: { ...tcpArgs(size, isRtt), producers: 1, ...extra } });
      return isRtt ? rtt(m) : rate(m);
    };
    add('tcp', 'oneway1', size, tcp('sink', 'source', 'receiver', { batch: 1 }, false));
    add('tcp', 'oneway32', size, tcp('sink', 'source', 'receiver', { batch: 32 }, false));
    add('tcp', 'rttParked', size, tcp('echo', 'ping', 'sender', {}, true));
    // The relay path: one bus.send per frame; the relay's batchFrames is the batching compared.
    const relay = (batchFrames: number, receiver: string, sender: string, measuring: PairSpec['measuring'], isRtt: boolean) => async () => {
      const { message, perMessage, alphaCpu, betaCpu } = await runRelayPair(await relayCluster(batchFrames), size, receiver, sender, measuring, isRtt);
      return { ...(isRtt ? rtt(message) : rate(message)), perMessage, alphaCpuUs: alphaCpu * 1e6, betaCpuUs: betaCpu * 1e6 };
    };
    add('relay', 'oneway1', size, relay(1, 'sink', 'source', 'receiver', false), 1);
    add('relay', 'oneway32', size, relay(32, 'sink', 'source', 'receiver', false), 32);
    add('relay', 'rttParked', size, relay(32, 'echoParked', 'pingParked', 'sender', true), 32);
  }
  return rows.filter((row) => ONLY.test(row.id));
}

// ---------------------------------------------------------------------------
// Machine and interference
// ---------------------------------------------------------------------------

/** Jiffies: all CPUs busy (non-idle), and this process + its reaped children. */
function cpuSnapshot(): { busy: number; steal: number; ours: number; at: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]!;
  const steal = f[7] ?? 0;
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[11..14] = utime stime cutime cstime (fields 14..17 of stat)
  const ours = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
  return { busy, steal, ours, at: Date.now() };
}

type Snapshot = ReturnType<typeof cpuSnapshot>;

/** Share of the machine's CPU time that processes other than this benchmark used between two snapshots. */
function foreignShare(a: Snapshot, b: Snapshot): number {
  const wallJiffies = ((b.at - a.at) / 1000) * 100 * cpus().length; // USER_HZ is 100 on Linux
  return wallJiffies > 0 ? Math.max(0, b.busy - a.busy - (b.ours - a.ours)) / wallJiffies : 0;
}

/** Wait (up to maxSeconds) for a second in which other processes use less than 10 % of the machine. Returns the share last seen. */
async function waitQuiet(maxSeconds: number): Promise<number> {
  const giveUp = Date.now() + maxSeconds * 1000;
  for (;;) {
    const a = cpuSnapshot();
    await new Promise((r) => setTimeout(r, 1000));
    const share = foreignShare(a, cpuSnapshot());
    if (share < 0.1 || Date.now() >= giveUp) return share;
  }
}

function machine(): { cpuModel: string; nproc: number; node: string; kernel: string } {
  let cpuModel = 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpuModel = m[1]!.trim();
  } catch {
    // not Linux
  }
  return { cpuModel, nproc: cpus().length, node: process.version, kernel: release() };
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

interface Line {
  label: string;
  unit: 'M/s' | 'µs';
  metric: keyof Metric;
  c?: Measure;
  uds?: Measure;
  shmbus: Measure;
  /** Target for 64 B (shmbus), with its direction. */
  target?: { value: number | 'uds'; text: string };
  note?: string;
}

const LINES: Line[] = [
  { label: 'One-way, one frame per send', unit: 'M/s', metric: 'rate', c: 'oneway1', uds: 'oneway1', shmbus: 'oneway1', target: { value: 15e6, text: '≥ 15 M/s' } },
  { label: 'One-way, 32 frames per send', unit: 'M/s', metric: 'rate', c: 'oneway32', uds: 'oneway32', shmbus: 'oneway32', target: { value: 25e6, text: '≥ 25 M/s' } },
  { label: 'RTT p50, busy-poll', unit: 'µs', metric: 'p50', c: 'rttBusy', uds: 'rttParked', shmbus: 'rttBusy', target: { value: 0.6, text: '≤ 0.6 µs' }, note: 'a' },
  { label: 'RTT p99, busy-poll', unit: 'µs', metric: 'p99', c: 'rttBusy', uds: 'rttParked', shmbus: 'rttBusy', note: 'a' },
  { label: 'RTT p50, parked (doorbell)', unit: 'µs', metric: 'p50', uds: 'rttParked', shmbus: 'rttParked', target: { value: 'uds', text: '≤ UDS' } },
  { label: 'RTT p99, parked (doorbell)', unit: 'µs', metric: 'p99', uds: 'rttParked', shmbus: 'rttParked' },
  { label: `${PRODUCERS} producers → 1 inbox, aggregate`, unit: 'M/s', metric: 'rate', uds: 'fanin', shmbus: 'fanin', target: { value: 10e6, text: '≥ 10 M/s' }, note: 'b' },
];

type Results = Map<string, Array<Metric | null>>;

function valuesOf(results: Results, id: string, metric: keyof Metric): number[] {
  return (results.get(id) ?? []).map((m) => (m && m[metric] !== undefined ? m[metric]! : NaN));
}

function cell(results: Results, impl: Impl, measure: Measure | undefined, size: number, metric: keyof Metric): number {
  if (measure === undefined) return NaN;
  return median(valuesOf(results, `${impl}:${measure}:${size}`, metric));
}

/** Median of per-round "how much better is shmbus" ratios (>1: shmbus better). */
function ratio(results: Results, other: 'c' | 'uds', line: Line, size: number): number {
  const measure = line[other];
  if (measure === undefined) return NaN;
  const a = valuesOf(results, `shmbus:${line.shmbus}:${size}`, line.metric);
  const b = valuesOf(results, `${other}:${measure}:${size}`, line.metric);
  const r: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) r.push(line.unit === 'M/s' ? a[i]! / b[i]! : b[i]! / a[i]!);
  return median(r);
}

function fmt(value: number, unit: Line['unit']): string {
  if (!Number.isFinite(value)) return '—';
  if (unit === 'M/s') {
    const m = value / 1e6;
    return m >= 100 ? m.toFixed(0) : m >= 10 ? m.toFixed(1) : m >= 1 ? m.toFixed(2) : m.toFixed(3);
  }
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

function fmtRatio(r: number): string {
  if (!Number.isFinite(r)) return '—';
  return r >= 10 ? `${r.toFixed(0)}×` : `${r.toFixed(2)}×`;
}

function fmtShare(r: number): string {
  return Number.isFinite(r) ? `${(r * 100).toFixed(r < 0.1 ? 1 : 0)} %` : '—';
}

function table(results: Results): string {
  const out: string[] = [];
  out.push('| Measurement | Frame | C SPSC ring (limit) | Node UDS | shmbus | shmbus vs UDS | shmbus vs C limit | 64 B target |');
  out.push('|---|---|--:|--:|--:|--:|--:|---|');
  for (const size of SIZES) {
    for (const line of LINES) {
      const c = cell(results, 'c', line.c, size, line.metric);
      const u = cell(results, 'uds', line.uds, size, line.metric);
      const s = cell(results, 'shmbus', line.shmbus, size, line.metric);
      if (!Number.isFinite(c) && !Number.isFinite(u) && !Number.isFinite(s)) continue;
      let target = '';
      if (size === 64 && line.target && Number.isFinite(s)) {
        const t = line.target.value === 'uds' ? u : line.target.value;
        const met = line.unit === 'M/s' ? s >= t : s <= t;
        target = `${line.target.text} ${Number.isFinite(t) ? (met ? '✅' : '❌') : ''}`.trim();
      }
      const note = line.note ? ` (${line.note})` : '';
      const udsText = line.uds === 'rttParked' && line.shmbus === 'rttBusy' ? `${fmt(u, line.unit)}*` : fmt(u, line.unit);
      out.push(
        `| ${line.label} (${line.unit})${note} | ${size === 1024 ? '1 KiB' : `${size} B`} | ${fmt(c, line.unit)} | ${udsText} | **${fmt(s, line.unit)}** | ${fmtRatio(ratio(results, 'uds', line, size))} | ${fmtShare(ratio(results, 'c', line, size))} | ${target} |`,
      );
    }
  }
  return out.join('\n');
}

// ---------------------------------------------------------------------------
// Report: the relay path
// ---------------------------------------------------------------------------

interface RelayLine {
  label: string;
  unit: 'M/s' | 'µs';
  metric: 'rate' | 'p50' | 'p99';
  measure: Measure;
  /** Target on the per-round ratio relay ÷ TCP. */
  target?: { atLeast?: number; atMost?: number; text: string };
}

const RELAY_LINES: RelayLine[] = [
  { label: 'One-way, 1 frame per write', unit: 'M/s', metric: 'rate', measure: 'oneway1', target: { atLeast: 0.7, text: '≥ 70 % of TCP' } },
  { label: 'One-way, 32 frames per write', unit: 'M/s', metric: 'rate', measure: 'oneway32', target: { atLeast: 0.7, text: '≥ 70 % of TCP' } },
  { label: 'RTT p50, parked', unit: 'µs', metric: 'p50', measure: 'rttParked', target: { atMost: 2, text: '≤ 2 × TCP' } },
  { label: 'RTT p99, parked', unit: 'µs', metric: 'p99', measure: 'rttParked' },
];

/** Median of per-round relay ÷ TCP (both from the same round). */
function relayRatio(results: Results, line: RelayLine, size: number): number {
  const a = valuesOf(results, `relay:${line.measure}:${size}`, line.metric);
  const b = valuesOf(results, `tcp:${line.measure}:${size}`, line.metric);
  const r: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) r.push(a[i]! / b[i]!);
  return median(r);
}

function fmtMB(framesPerSecond: number, size: number): string {
  if (!Number.isFinite(framesPerSecond)) return '—';
  const mb = (framesPerSecond * size) / 1e6;
  return mb >= 100 ? mb.toFixed(0) : mb >= 10 ? mb.toFixed(1) : mb.toFixed(2);
}

function relayTable(results: Results): string {
  const out: string[] = [];
  out.push('| Measurement | Frame | Direct TCP | TCP MB/s | Relay path | Relay MB/s | Relay ÷ TCP | Target (relay ÷ TCP) |');
  out.push('|---|---|--:|--:|--:|--:|--:|---|');
  for (const size of SIZES) {
    for (const line of RELAY_LINES) {
      const t = cell(results, 'tcp', line.measure, size, line.metric);
      const r = cell(results, 'relay', line.measure, size, line.metric);
      if (!Number.isFinite(t) && !Number.isFinite(r)) continue;
      const q = relayRatio(results, line, size);
      let target = '';
      if (line.target) {
        const met = line.target.atLeast !== undefined ? q >= line.target.atLeast : q <= line.target.atMost!;
        target = `${line.target.text} ${Number.isFinite(q) ? (met ? '✅' : '❌') : ''}`.trim();
      }
      const isRate = line.unit === 'M/s';
      out.push(
        `| ${line.label} (${isRate ? 'M frames/s' : 'µs'}) | ${size === 1024 ? '1 KiB' : `${size} B`} | ${fmt(t, line.unit)} | ${isRate ? fmtMB(t, size) : ''} | **${fmt(r, line.unit)}** | ${isRate ? fmtMB(r, size) : ''} | ${isRate ? fmtShare(q) : fmtRatio(q)} | ${target} |`,
      );
    }
  }
  return out.join('\n');
}

/** Per relay row: frames per DATA message and CPU per frame of each relay (medians over rounds). */
function relayCostTable(results: Results, rows: Row[]): string {
  const out = ['| Relay row | frames per DATA message | alpha relay CPU per frame (µs) | beta relay CPU per frame (µs) |', '|---|--:|--:|--:|'];
  for (const row of rows) {
    if (row.impl !== 'relay') continue;
    const m = (k: keyof Metric) => median(valuesOf(results, row.id, k));
    const f = (v: number) => (Number.isFinite(v) ? (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) : '—');
    out.push(`| ${row.id} (batchFrames ${row.relayBatch}) | ${f(m('perMessage'))} | ${f(m('alphaCpuUs'))} | ${f(m('betaCpuUs'))} |`);
  }
  return out.length > 2 ? out.join('\n') : '';
}

function mib(kb: number): string {
  return Number.isFinite(kb) ? `${(kb / 1024).toFixed(1)} MiB` : '—';
}

function backlogTable(list: BacklogResult[]): string {
  const head = `| Relay memory (/proc/<pid>/status) | ${list.map((b) => `${b.variant}: alpha | ${b.variant}: beta`).join(' | ')} |`;
  const rule = `|---|${list.map(() => '--:|--:').join('|')}|`;
  const row = (label: string, pick: (b: BacklogResult) => Peaks, field: keyof MemorySample) => `| ${label} | ${list.map((b) => `${mib(pick(b).alpha[field])} | ${mib(pick(b).beta[field])}`).join(' | ')} |`;
  return [
    head,
    rule,
    row('VmRSS before the first frame (both apps connected)', (b) => b.idle, 'rss'),
    row(`VmRSS peak while the receiver reads nothing (${BACKLOG_STALL_MS / 1000} s)`, (b) => b.stall, 'rss'),
    row('VmRSS peak, first half of the drain', (b) => b.drain1, 'rss'),
    row('VmRSS peak, second half of the drain', (b) => b.drain2, 'rss'),
    row('**VmRSS peak, whole run**', (b) => b.all, 'rss'),
    row('… RssAnon peak (JS heap, buffers)', (b) => b.all, 'anon'),
    row('… RssShmem peak (mapped segments)', (b) => b.all, 'shmem'),
    row('VmHWM at the end', (b) => b.all, 'hwm'),
  ].join('\n');
}

function backlogPressureTable(list: BacklogResult[]): string {
  const n = (x: number) => (Number.isFinite(x) ? x.toLocaleString('en-US') : '—');
  const row = (label: string, f: (b: BacklogResult) => string) => `| ${label} | ${list.map(f).join(' | ')} |`;
  return [
    `| Back-pressure, at the end of the ${BACKLOG_STALL_MS / 1000} s stall | ${list.map((b) => b.variant).join(' | ')} |`,
    `|---|${list.map(() => '--:').join('|')}|`,
    row(`receiver's inbox (capacity ${BACKLOG_CAPACITY})`, (b) => n(b.atStall.sinkInbox)),
    row("beta's relay: frames delivered into it", (b) => n(b.atStall.betaDelivered)),
    row("beta's relay: frames pending (its bound `pendingFrames`)", (b) => `${n(b.atStall.betaPending)} (${n(b.pendingFrames)})`),
    row("beta's relay: reads from alpha paused (`backpressure_on` lines, whole run)", (b) => `${b.atStall.betaPausedReads > 0 ? 'yes' : 'no'} (${n(b.betaBackpressureOn)})`),
    row("alpha's relay: outbound ring depth (capacity)", (b) => `${n(b.atStall.alphaOutboundDepth)} (${n(b.outboundCapacity)})`),
    row("alpha's relay: sent and unacked / queued", (b) => `${n(b.atStall.alphaUnacked)} / ${n(b.atStall.alphaQueued)}`),
    row('between the relays, in socket buffers (sent by alpha − delivered − pending at beta)', (b) => n(b.atStall.alphaFramesOut - b.atStall.betaDelivered - b.atStall.betaPending)),
    row('sender: `bus.send` returned false (whole run)', (b) => n(b.refused)),
    row('sender: longest wait for one frame', (b) => `${(b.longestRefusalMs / 1000).toFixed(2)} s`),
    row('**receiver got every frame exactly once, in order**', (b) => (b.received === b.frames && b.extra === 0 && b.errors === 0 ? `✅ ${n(b.received)}` : `❌ ${n(b.received)}, ${n(b.errors)} bad, ${n(b.extra)} extra`)),
    row('drain: time from the first read to the last frame', (b) => `${b.drainSeconds.toFixed(2)} s (${n(Math.round(b.received / b.drainSeconds))} frames/s)`),
    row('relay counters: duplicates / resends / undeliverable / ack timeouts', (b) => `${n(b.duplicates)} / ${n(b.resends)} / ${n(b.undeliverable)} / ${n(b.ackTimeouts)}`),
    row('relays stopped cleanly afterwards', (b) => (b.stopProblem === null ? 'yes' : `no: ${b.stopProblem}`)),
  ].join('\n');
}

function spreadTable(results: Results, rows: Row[]): string {
  const out = ['| Row | metric | median | min | max | max/min | rounds ok |', '|---|---|--:|--:|--:|--:|--:|'];
  for (const row of rows) {
    const metrics: Array<keyof Metric> = row.measure === 'rttBusy' || row.measure === 'rttParked' ? ['p50', 'p99'] : ['rate'];
    for (const metric of metrics) {
      const v = valuesOf(results, row.id, metric).filter(Number.isFinite);
      const unit = metric === 'rate' ? 'M/s' : 'µs';
      const min = v.length ? Math.min(...v) : NaN;
      const max = v.length ? Math.max(...v) : NaN;
      out.push(`| ${row.id} | ${metric === 'rate' ? 'M frames/s' : `${metric} µs`} | ${fmt(median(v), unit)} | ${fmt(min, unit)} | ${fmt(max, unit)} | ${Number.isFinite(min) ? (max / min).toFixed(2) : '—'} | ${v.length}/${(results.get(row.id) ?? []).length} |`);
    }
  }
  return out.join('\n');
}

const NOTES = `Ratios: "shmbus vs UDS" is how many times better shmbus is (throughput: shmbus ÷ UDS; latency: UDS ÷ shmbus), "shmbus vs C limit" is the share of the C ring's figure shmbus reaches (throughput: shmbus ÷ C; latency: C ÷ shmbus). Both are medians of per-round ratios.

(a) Node sockets have no busy-poll mode (the event loop always sleeps in epoll between reads), so the UDS figure marked * is its ordinary, parked round trip, repeated for reference.
(b) ${PRODUCERS} producer processes share the sender core and the consumer has the other: on this 2-core machine the row oversubscribes, the producers take turns on one core rather than running in parallel.`;

// ---------------------------------------------------------------------------
// BENCHMARKS.md sections
// ---------------------------------------------------------------------------

function localSection(tableText: string): string {
  return `## On one host: shmbus, Node UDS, C ring

Frames are 64 B and 1 KiB payloads between two processes, the sender pinned to CPU ${pinning ? CPU_SEND : '(unpinned)'} and the receiver to CPU ${pinning ? CPU_RECV : '(unpinned)'}.

${tableText}

${NOTES}`;
}

function relaySection(results: Results, relayText: string, costText: string): string {
  const m = (id: string, k: keyof Metric) => median(valuesOf(results, id, k));
  const us = (v: number) => (Number.isFinite(v) ? `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} µs` : '—');
  const tcpRtt = m('tcp:rttParked:64', 'p50');
  const relayRtt = m('relay:rttParked:64', 'p50');
  const udsRtt = m('uds:rttParked:64', 'p50');
  const shmRtt = m('shmbus:rttParked:64', 'p50');
  const localRtts = [Number.isFinite(udsRtt) ? `UDS ${us(udsRtt)}` : '', Number.isFinite(shmRtt) ? `shmbus with its futex doorbell ${us(shmRtt)}` : ''].filter(Boolean).join(', ');
  const cpuA = m('relay:oneway32:64', 'alphaCpuUs');
  const cpuB = m('relay:oneway32:64', 'betaCpuUs');
  const r32 = m('relay:oneway32:64', 'rate');
  const t32 = m('tcp:oneway32:64', 'rate');
  const cpuRttA = m('relay:rttParked:64', 'alphaCpuUs');
  const cpuRttB = m('relay:rttParked:64', 'betaCpuUs');
  return `## Between two hosts: the relay path vs direct TCP

Two "hosts", alpha and beta, are two shmbus namespaces on this machine, each with its own transit-server (\`node dist/relay/cli.js --config cluster.json --host alpha|beta\`, plain TCP between the relays on 127.0.0.1, no TLS). **Each host has its own core**: alpha's relay and the sending app (or the ping) are pinned to CPU ${pinning ? CPU_SEND : '(unpinned)'}, beta's relay and the receiving app (or the echo) to CPU ${pinning ? CPU_RECV : '(unpinned)'} — 4 processes on 2 cores. The direct-TCP baseline is two processes pinned the same way (sender CPU ${pinning ? CPU_SEND : '-'}, receiver CPU ${pinning ? CPU_RECV : '-'}) on one loopback TCP connection with TCP_NODELAY (as the relays set on theirs), carrying the same payloads with the same u32 length-prefix framing as the UDS rows (\`bench/uds.ts\` with \`transport: 'tcp'\`).

What is compared:

- **1 frame per write**: TCP does one \`socket.write\` per frame. On the relay path the app calls \`bus.send('rx<k>@beta', payload)\` once per frame, and the relays run with \`limits.batchFrames: 1\`, so alpha's relay sends every frame as its own DATA message, one \`socket.write\` each.
- **32 frames per write**: TCP does one \`socket.write\` of 32 frames. On the relay path the app still calls \`bus.send\` once per frame (there is no batch send to another host: batching is the relay's), and the relays run with \`batchFrames: 32\`: alpha's relay packs up to 32 waiting frames into one DATA message, one \`socket.write\`. The frames per DATA message it actually sent are in the second table.
- **RTT, parked**: TCP ping/echo are event-driven (epoll). On the relay path the ping (\`tx<k>\` on alpha) sends to \`rx<k>@beta\` and the echo (\`rx<k>\` on beta) replies to the frame's source, \`tx<k>@alpha\`; both receive with \`for await (const f of bus.frames())\`, i.e. they **park** on their futex doorbells between frames (the relays park on their UDP doorbell and sockets). Relays with \`batchFrames: 32\` (a lone frame leaves at once).
- The receiver on the relay path ${RELAY_IDLE === 'spin' ? '**busy-polls** \`recvBatch\` (zero-copy), as the shmbus rows do' : 'receives with \`recvBatch\` (zero-copy) and, when its inbox is empty, **parks** on its doorbell (\`--relay-idle park\`)'}; it shares CPU ${pinning ? CPU_RECV : '-'} with beta's relay. MB/s is payload bytes (frames/s × payload size, 10⁶ B).
- "Relay ÷ TCP" is the median of per-round ratios (relay and TCP rows of the same round); the targets are judged on it.

${relayText}

${costText}

"Frames per DATA message" is alpha's \`framesOut ÷ batchesOut\` for beta over the row (from \`/metrics.json\`); "CPU per frame" is the relay process's CPU time (utime + stime from /proc, all its threads; the kernel accounts it by ticks, so it is approximate) during the row divided by the frames it carried; both include the row's warm-up, and for the RTT rows there is one frame per round trip each way.

**Where the time goes.** Throughput on the relay path is bounded by the relays' CPU per frame, not by TCP: at \`batchFrames: 32\` with 64 B frames alpha's relay used ${us(cpuA)} and beta's ${us(cpuB)} of CPU per frame, i.e. at ${fmt(r32, 'M/s')} M frames/s they kept their cores about ${Number.isFinite(cpuA * r32) ? `${((cpuA * r32) / 1e4).toFixed(0)} %` : '—'} and ${Number.isFinite(cpuB * r32) ? `${((cpuB * r32) / 1e4).toFixed(0)} %` : '—'} busy, next to the sending app and the ${RELAY_IDLE === 'spin' ? 'busy' : 'parking'} receiver on the same cores; the direct-TCP pair moves ${fmt(t32, 'M/s')} M frames/s with the same batching, its whole per-frame cost being a share of one \`write\`/\`read\` and a length prefix. Per frame the relays do, in JavaScript: read the slot and decode the frame's \`name@host\` address (hashed and matched against addresses seen before, so no string is built per frame), look up the sender's name, encode a DATA frame header carrying both names, keep the ring position in a per-connection map until its ACK; on beta decode it, check the dedup table, write the frame into the receiver's inbox and queue an ACK entry; back on alpha apply the ACK, release the slot and advance the ring's head. Going from one frame per DATA message to 32 saves the per-message costs (one \`write\` and one wake-up of the peer per frame), which is all the direct-TCP pair has to save, but not the per-frame work above.

The RTT difference is the number of process hops. Direct TCP: one hop each way (the peer wakes in epoll). Relay path: three hops each way — app → its relay (the frame goes into shared memory and the relay's UDP doorbell datagram wakes its event loop), relay → relay (TCP), relay → app (shared memory and a futex wake of the app's doorbell thread, which then wakes the app's event loop) — and each DATA message is answered by an ACK message on the same link, one more wake-up of the sending relay per frame. A wake-up of a parked process costs tens of µs on this VM: the two-hop parked round trips of the local table took ${localRtts || '(not measured in this run)'}, direct TCP ${us(tcpRtt)}; with six hops (plus the two ACKs) the relay path took ${us(relayRtt)}. The relays also spent ${us(cpuRttA)} (alpha) and ${us(cpuRttB)} (beta) of CPU per round trip in this ping-pong (each handles two DATA messages and two ACKs per round trip, each a \`read\` or \`write\` plus wake-ups).`;
}

function backlogSection(list: BacklogResult[], foreignShareOfMachine: number): string {
  const d = list[0]!;
  return `## Relay memory under a ${(BACKLOG_FRAMES / 1e6).toLocaleString('en-US')} M-frame backlog

A sender on alpha pushes ${BACKLOG_FRAMES.toLocaleString('en-US')} frames of ${BACKLOG_SIZE} B with \`bus.send('sink@beta', payload)\`, retrying every \`false\`; the receiver on beta has an inbox of ${BACKLOG_CAPACITY} slots and reads nothing for the first ${BACKLOG_STALL_MS / 1000} s, then drains everything (recvBatch; parked on its doorbell when the inbox is empty) and checks that every frame came exactly once, in order. Pinning as above (alpha's relay and the sender on CPU ${pinning ? CPU_SEND : '-'}, beta's relay and the receiver on CPU ${pinning ? CPU_RECV : '-'}). Both relays' /proc/<pid>/status is read every 20 ms (VmRSS, RssAnon, RssShmem; VmHWM at the end), their metrics every 100 ms. Run once per benchmark run, after the rounds, in two configurations: the shipped default limits, and \`pendingFrames: ${BACKLOG_SMALL_PENDING}\` (below the outbound ring's capacity, so that beta's pending bound is reached). Other processes used ${(foreignShareOfMachine * 100).toFixed(1)} % of the machine meanwhile.

${backlogTable(list)}

${backlogPressureTable(list)}

What holds the backlog, and why memory stays bounded: alpha's outbound ring (shared memory of fixed size, in RssShmem) keeps every frame until beta acks it, so at most its capacity (${d.outboundCapacity.toLocaleString('en-US')}) frames are in flight from alpha at any time; when it is full \`bus.send\` returns \`false\` and the rest of the ${(BACKLOG_FRAMES / 1e6).toLocaleString('en-US')} M frames wait in the sender, not in a relay. Beta holds what the full inbox refuses as copies in its pending queue (JS heap), up to \`pendingFrames\`; at that bound it stops reading alpha's connection and the remainder sits in the socket buffers (mostly kernel memory, not RSS). With the default limits (\`pendingFrames\` ${BACKLOG_DEFAULT_PENDING.toLocaleString('en-US')} > ring capacity ${d.outboundCapacity.toLocaleString('en-US')}) one peer host does not fill beta's pending queue: the ring is the window, and beta does not pause. The RSS peaks come during the drain, not during the backlog: they follow the rate of short-lived allocations (frames decoded into new objects, messages encoded into new buffers), i.e. V8's heap sizing, not the number of frames held.

Two things to know when reading the drain: it is slower than the throughput rows because, while frames are pending for a full inbox, beta's relay retries them on a timer (1 ms, doubling up to 50 ms while no progress is made: \`relay/inbound.ts\`) rather than on a signal from the receiver, so a ${BACKLOG_CAPACITY}-slot inbox is refilled about once per tick; and \`ackTimeoutMs\` must be longer than \`ttlMs\` (40 s and 30 s by default), so even a receiver that reads nothing for a long time gets its frames reported EXPIRED by beta within the TTL instead of making alpha's relay take the link for a dead one and resend its window (the \`ack timeouts\` and \`resends\` counters above).`;
}

function methodText(hasLocal: boolean, hasRelay: boolean, hasBacklog: boolean): string {
  const lines: string[] = [
    `- **Rows** run round-robin: every round runs every row once (fresh processes each time), the starting row rotating from round to round, so slow phases of the VM hit all rows alike (where the hypervisor places the 2 vCPUs changes how fast a cache line crosses between them, and with it every figure here by several times: see the spread table at the end). Cells are medians over rounds; ratios are medians of per-round ratios.`,
    `- **Pinning**: \`taskset -c ${CPU_SEND}\` for the sender/client, \`taskset -c ${CPU_RECV}\` for the receiver/server${hasRelay ? `; on the relay path also alpha's relay on ${CPU_SEND} and beta's relay on ${CPU_RECV}` : ''}${hasLocal ? ' (the C program pins its two forked sides with sched_setaffinity)' : ''}.`,
    `- **Every frame is checked**: payloads carry a per-producer sequence number, a kind byte (warm-up, measured, end) and the sequence's low byte in their last byte; receivers check length, order and the tail byte of every frame, and the runner checks that the receiver got exactly as many frames as the senders sent. A row with any bad frame fails.`,
    `- **Throughput**: the sender warms up for ${WARMUP_MS} ms, then sends for ${SECONDS} s (or ${MAX_FRAMES / 1e6} M frames) and ends with an end frame; the receiver counts the frames that arrive between the first measured frame (of every producer) and the first end frame. Senders retry when the receiver is full (shmbus: at once, the inbox has ${CAPACITY} slots of ${SLOT_SIZE[64]} B for 64 B payloads and ${SLOT_SIZE[1024]} B for 1 KiB; C: at once, a ${CAPACITY}-slot ring; sockets: socket.write until it returns false, then wait for 'drain'; relay path: see below).`,
    `- **RTT**: the client sends one frame, waits for it to come back and records the time; ${WARMUP_MS} ms of warm-up, then ${SECONDS} s (or ${MAX_ROUND_TRIPS / 1000}k round trips); p50 and p99 of the measured round trips.`,
  ];
  if (hasLocal) {
    lines.push(
      `- **C SPSC ring** (\`bench/c/spsc.c\`, compiled with \`cc -O2\` by the runner into bench/out/): one producer, one consumer, cache-line-separated head and tail, ${CAPACITY} slots of exactly the payload size, the consumer checks frames in place and publishes its head every 32 frames; "one frame per send" publishes the tail after every frame, "32 frames per send" after every 32; RTT uses two rings, both sides spinning. Timestamps: clock_gettime in C, performance.now() in Node (~50 ns per call here, which the Node RTT figures include once per round trip). Its file in /dev/shm is unlinked right after mapping.`,
      `- **Node UDS** (\`bench/uds.ts\`): a stream socket under os.tmpdir(), frames length-prefixed (u32), parsed by the receiver including frames split across reads; the sender allocates a new buffer per write (the socket may still hold the previous one). "One frame per send" is one socket.write per frame, "32" is one write of 32 frames. Both sides are event-driven (epoll).`,
      `- **shmbus** (\`bench/shmbus.ts\`, public API only): per-frame \`sendToLocal\` with one reused payload, batched \`sendToLocalBatch\` of 32 reused payloads; the receiver busy-polls \`recvBatch\` (zero-copy FrameView). Busy-poll RTT: both sides spin on \`recvBatch\`, the echo sends \`view.payload\` back. Parked RTT: both sides receive with \`for await (const f of bus.frames())\`, so they park on the futex doorbell between frames. Fan-in: ${PRODUCERS} producer processes each \`sendToLocal\` into one inbox.`,
    );
  }
  if (hasRelay) {
    lines.push(
      `- **Direct TCP** (\`bench/uds.ts\`, \`transport: 'tcp'\`): the UDS code over 127.0.0.1 (the server listens on port 0 and reports its port to the runner), TCP_NODELAY on both ends; otherwise identical to the UDS rows.`,
      `- **Relays** (\`bench/cluster.ts\`): for every round the runner writes a fresh cluster: a 32-byte random secret in a file of mode 0600 and a cluster.json in a temp folder, hosts alpha and beta on free 127.0.0.1 ports with namespaces \`bench-<pid>-c<n>b<batch>-alpha|beta\` in /dev/shm, metrics on 127.0.0.1:0 (the port is read from the relay's \`start\` log line); limits are the defaults except \`batchFrames\` (1 or 32, one cluster each) and \`idleTimeoutMs\` (1 h, so connections stay up for the round). It starts \`node dist/relay/cli.js --config … --host …\` for both hosts, waits for their JSON \`start\` lines, and warms them up with an unmeasured throughput and RTT run per frame size (JIT, connections both ways) before the round's first row — relay start-up is never inside a measured window. At the end of the round the relays get SIGTERM; exit code 0 and a clean \`stop\` line are checked (a problem is reported above). Each row uses fresh app endpoints (\`tx<k>\`/\`rx<k>\`); after each row the runner checks both relays are still alive.`,
      `- **Relay path apps** (\`bench/relay.ts\`, public API only): the sender calls \`bus.send('rx<k>@beta', payload)\` once per frame. On \`false\` (the relay's inbox is full) it yields to its event loop once and retries, then sleeps 1 ms in the event loop per retry while still refused; it also yields every 256 frames. Why: the relay's doorbell is a UDP datagram that Node's \`dgram\` sends from a \`process.nextTick\` callback, so it leaves only when the sending app returns to its event loop (a sender that spins synchronously would leave its relay asleep until the relay's own 1 s park timeout); and the sender shares its core with its relay, so spinning on a full ring would take CPU from the relay that frees it. The receiver ${RELAY_IDLE === 'spin' ? 'busy-polls \`recvBatch\`' : 'drains with \`recvBatch\` and parks on its doorbell (the \`frames()\` iterator) when empty'} and also checks that every frame's source is \`tx<k>@alpha\`; the echo checks that frames come from \`tx<k>@alpha\` and the ping that replies come from \`rx<k>@beta\`.`,
    );
  }
  if (hasBacklog) {
    lines.push(`- **Backlog** (\`bench/relay.ts\` backlogSource/backlogSink, run once after the rounds per configuration, bounded to ${BACKLOG_TIMEOUT_MS / 1000} s): as described in its section; a fresh cluster per configuration, stopped (and checked) afterwards. It fails unless the receiver got exactly ${BACKLOG_FRAMES.toLocaleString('en-US')} frames, in order, and nothing after the last one within 300 ms.`);
  }
  lines.push(`- **Cleanup**: every child process (apps and relays) is killed and every file this run made (/dev/shm segments of its namespaces, sockets, cluster folders) is removed when a row ends, when the run ends, and on SIGINT/SIGTERM/SIGHUP.`);
  return lines.join('\n');
}

/** The commit measured, and whether the shipped code (src/, relay/, native/) differs from it (the runner runs dist/: build first). */
function codeVersion(): string {
  const git = (args: string[]) => spawnSync('git', ['-C', ROOT, ...args], { encoding: 'utf8' });
  const head = git(['rev-parse', '--short', 'HEAD']);
  if (head.error || head.status !== 0) return 'not a git checkout';
  const dirty = git(['status', '--porcelain', '--', 'src', 'relay', 'native']).stdout.trim();
  return `git ${head.stdout.trim()}${dirty ? ' with uncommitted changes in src/, relay/ or native/' : ' (src/, relay/ and native/ as committed)'}`;
}

function commandLine(): string {
  const env = ['BENCH_ROUNDS', 'BENCH_SECONDS', 'BENCH_ONLY', 'BENCH_CPUS', 'BENCH_QUIET_WAIT', 'BENCH_RELAY_IDLE', 'BENCH_BACKLOG_FRAMES', 'BENCH_BACKLOG_STALL_MS'].filter((k) => process.env[k] !== undefined).map((k) => `${k}=${process.env[k]} `).join('');
  if (process.env.npm_lifecycle_event === 'bench') return `${env}npm run bench${argv.length ? ` -- ${argv.join(' ')}` : ''}`;
  return `${env}node ${[...process.execArgv, relative(ROOT, process.argv[1]!), ...argv].join(' ')}`;
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = Date.now();
  const codeAtStart = codeVersion();
  const before = cpuSnapshot();
  const load0 = loadavg();
  const info = machine();

  if (EXT === '.ts') {
    console.error('bench: WARNING: running from source through tsx, which turns module constants into getters: shmbus figures come out several times too low. Use `npm run build && npm run bench` for real figures.');
  }
  const taskset = spawnSync('taskset', ['-c', String(CPU_SEND), 'true']);
  if (taskset.error || taskset.status !== 0) {
    pinning = false;
    console.error('bench: WARNING: taskset is missing or cannot pin; running UNPINNED (figures will be noisier)');
  }
  if (info.nproc < 2) console.error(`bench: WARNING: only ${info.nproc} CPU; both sides share it`);
  spsc = buildSpsc();

  const rows = defineRows();
  const runBacklogRow = ONLY.test(BACKLOG_ID);
  if (rows.length === 0 && !runBacklogRow) throw new Error(`no rows match ${ONLY}`);
  const results: Results = new Map(rows.map((row) => [row.id, []]));
  const failures: string[] = [];
  console.error(`bench: ${rows.length} rows × ${ROUNDS} rounds, ${SECONDS}s per measurement, sender on CPU ${pinning ? CPU_SEND : '-'}, receiver on CPU ${pinning ? CPU_RECV : '-'}`);

  const step = Math.max(1, Math.floor(rows.length / ROUNDS));
  const roundForeign: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    if (QUIET_WAIT_S > 0) {
      const share = await waitQuiet(QUIET_WAIT_S);
      if (share >= 0.1) console.error(`bench: machine still busy (${(share * 100).toFixed(0)} % used by others) after ${QUIET_WAIT_S}s; running round ${round + 1} anyway`);
    }
    const t0 = Date.now();
    const snap0 = cpuSnapshot();
    const progress: string[] = [];
    // The relays of this round, started (and warmed up) before any row is measured.
    for (const batch of new Set(rows.flatMap((r) => (r.relayBatch !== undefined ? [r.relayBatch] : [])))) {
      try {
        await relayCluster(batch);
      } catch (err) {
        // The rows will try again and report the failure.
        console.error(`bench: cannot start the relays (batchFrames ${batch}): ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    for (let k = 0; k < rows.length; k++) {
      const row = rows[(k + round * step) % rows.length]!;
      try {
        const metric = await row.run();
        results.get(row.id)!.push(metric);
        progress.push(`${row.id}=${metric.rate !== undefined ? fmt(metric.rate, 'M/s') : `${fmt(metric.p50!, 'µs')}/${fmt(metric.p99!, 'µs')}`}`);
      } catch (err) {
        results.get(row.id)!.push(null);
        const message = `round ${round + 1}, ${row.id}: ${err instanceof Error ? err.message : String(err)}`;
        failures.push(message);
        console.error(`bench: FAILED ${message}`);
      } finally {
        cleanupFiles();
      }
    }
    // Stopped (and reaped) before the CPU snapshot, so their time counts as ours.
    await stopRoundClusters();
    const foreignRound = foreignShare(snap0, cpuSnapshot());
    roundForeign.push(foreignRound);
    console.error(`bench: round ${round + 1}/${ROUNDS} (${((Date.now() - t0) / 1000).toFixed(1)}s, others used ${(foreignRound * 100).toFixed(0)} %): ${progress.join(' ')}`);
  }

  const backlogs: BacklogResult[] = [];
  let backlogForeign = NaN;
  if (runBacklogRow) {
    if (QUIET_WAIT_S > 0) await waitQuiet(QUIET_WAIT_S);
    const snap0 = cpuSnapshot();
    for (const variant of BACKLOG_VARIANTS) {
      try {
        const b = await runBacklog(variant);
        backlogs.push(b);
        console.error(`bench: ${BACKLOG_ID} (${variant.name}): relay peak VmRSS alpha ${mib(b.all.alpha.rss)}, beta ${mib(b.all.beta.rss)}; ${b.received} frames in order`);
      } catch (err) {
        const message = `${BACKLOG_ID} (${variant.name}): ${err instanceof Error ? err.message : String(err)}`;
        failures.push(message);
        console.error(`bench: FAILED ${message}`);
      } finally {
        cleanupFiles();
      }
    }
    backlogForeign = foreignShare(snap0, cpuSnapshot());
  }

  const after = cpuSnapshot();
  const codeAtEnd = codeVersion();
  const wallJiffies = ((after.at - before.at) / 1000) * 100 * info.nproc; // USER_HZ is 100 on Linux
  const foreign = foreignShare(before, after);
  const steal = (after.steal - before.steal) / wallJiffies;
  const elapsed = (Date.now() - started) / 1000;
  const load1 = loadavg();

  const hasLocal = rows.some((r) => r.impl === 'c' || r.impl === 'uds' || r.impl === 'shmbus');
  const hasRelay = rows.some((r) => r.impl === 'tcp' || r.impl === 'relay');
  const tableText = table(results);
  const relayText = relayTable(results);
  const costText = relayCostTable(results, rows);
  if (hasLocal) console.log(`${tableText}\n\n${NOTES}\n`);
  if (hasRelay) console.log(`Relay path:\n\n${relayText}\n\n${costText}\n`);
  if (backlogs.length) console.log(`Relay memory under a backlog (other processes used ${(backlogForeign * 100).toFixed(1)} % of the machine meanwhile):\n\n${backlogTable(backlogs)}\n\n${backlogPressureTable(backlogs)}\n`);
  if (relayProblems.length) console.error(`bench: relay problems: ${relayProblems.join('; ')}`);
  console.log(`${ROUNDS} rounds, ${elapsed.toFixed(0)} s; CPU time used by other processes during the run: ${(foreign * 100).toFixed(1)} % of the machine; steal ${(steal * 100).toFixed(1)} %`);
  if (foreign > 0.05) console.error(`bench: WARNING: other processes used ${(foreign * 100).toFixed(0)} % of the machine during the run; figures are disturbed`);
  if (failures.length) console.error(`bench: ${failures.length} row runs failed`);
  if (JSON_OUT) console.log(JSON.stringify({ machine: info, rounds: ROUNDS, seconds: SECONDS, results: Object.fromEntries(results), failures }));

  if (WRITE) {
    const sections: string[] = [];
    if (hasLocal) sections.push(localSection(tableText));
    if (hasRelay) sections.push(relaySection(results, relayText, costText));
    if (backlogs.length) sections.push(backlogSection(backlogs, backlogForeign));
    const md = `# Benchmarks

Measured ${new Date(started).toISOString().replace(/\.\d+Z$/, 'Z')} on ${info.nproc} vCPUs (${info.cpuModel}), Linux ${info.kernel}, Node ${info.node}; code: ${codeAtStart}${codeAtEnd !== codeAtStart ? ` (at the end of the run: ${codeAtEnd})` : ''}.

Command (after \`npm run build\`; \`npm run bench\` runs the compiled \`dist/bench/run.js\`):

\`\`\`sh
${commandLine()}
\`\`\`

${ROUNDS} rounds, ${elapsed.toFixed(0)} s in all; load average ${load0.map((x) => x.toFixed(2)).join(' ')} before, ${load1.map((x) => x.toFixed(2)).join(' ')} after; CPU time used by processes other than the benchmark during the run: ${(foreign * 100).toFixed(1)} % of the machine (per round: ${roundForeign.map((x) => `${(x * 100).toFixed(0)} %`).join(', ')}; hypervisor steal: ${(steal * 100).toFixed(1)} %).${failures.length ? ` ${failures.length} row runs failed (excluded from the medians): ${failures.join('; ')}.` : ''}${relayProblems.length ? ` Relay problems: ${relayProblems.join('; ')}.` : ''}

Throughput in millions of frames per second (and MB/s of payload where shown), latency in microseconds; every figure is the median over the rounds.

${sections.join('\n\n')}

## Method

${methodText(hasLocal, hasRelay, backlogs.length > 0)}

## Spread over rounds

${spreadTable(results, rows)}
`;
    writeFileSync(join(ROOT, 'BENCHMARKS.md'), md);
    console.error(`bench: wrote ${join(ROOT, 'BENCHMARKS.md')}`);
  }
  if (failures.length > 0 && failures.length === rows.length * ROUNDS + (runBacklogRow ? BACKLOG_VARIANTS.length : 0)) process.exitCode = 1;
}

main().catch((err) => {
  console.error(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
});
