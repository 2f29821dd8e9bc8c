/**
 * The benchmark runner: shmbus vs Node Unix-domain sockets vs a minimal C
 * shared-memory SPSC ring, between two processes pinned to separate cores.
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

/** Remove everything this run may have left: shmbus segments of our namespaces, sockets. */
function cleanupFiles(): void {
  try {
    for (const name of readdirSync(SHM_DIR)) {
      if (name.startsWith(`shmbus.${RUN_ID}-`)) rmSync(join(SHM_DIR, name), { force: true });
    }
  } catch {
    // no /dev/shm
  }
  try {
    for (const name of readdirSync(tmpdir())) {
      if (name.startsWith(`shmbus-${RUN_ID}-`)) rmSync(join(tmpdir(), name), { force: true });
    }
  } catch {
    // ignore
  }
}

process.on('exit', () => {
  killAll();
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
  /** Which side reports the result. */
  measuring: 'receiver' | 'sender';
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
    const receiver = new NodeChild(`${spec.receiver}`, spec.file, spec.receiver, spec.args, CPU_RECV);
    children.push(receiver);
    await receiver.next('ready', deadline);
    const senders: NodeChild[] = [];
    for (let id = 0; id < spec.senders; id++) {
      const child = new NodeChild(`${spec.sender}#${id}`, spec.file, spec.sender, { ...spec.args, id }, CPU_SEND);
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
    if (spec.args.namespace !== undefined && err instanceof Error) err.message += inboxStates(spec.args.namespace);
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
  return states.length ? ` [inboxes: ${states.join('; ')}]` : '';
}

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

type Impl = 'c' | 'uds' | 'shmbus';
type Measure = 'oneway1' | 'oneway32' | 'rttBusy' | 'rttParked' | 'fanin';

interface Metric {
  rate?: number;
  p50?: number;
  p99?: number;
}

interface Row {
  id: string;
  impl: Impl;
  measure: Measure;
  size: number;
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

const rate = (m: Message): Metric => ({ rate: (m as unknown as ThroughputResult).rate });
const rtt = (m: Message): Metric => ({ p50: (m as unknown as RttResult).p50Us, p99: (m as unknown as RttResult).p99Us });

function defineRows(): Row[] {
  const rows: Row[] = [];
  const add = (impl: Impl, measure: Measure, size: number, run: () => Promise<Metric>) => rows.push({ id: `${impl}:${measure}:${size}`, impl, measure, size, run });
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
function ratio(results: Results, other: Impl, line: Line, size: number): number {
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

function commandLine(): string {
  const env = ['BENCH_ROUNDS', 'BENCH_SECONDS', 'BENCH_ONLY', 'BENCH_CPUS', 'BENCH_QUIET_WAIT'].filter((k) => process.env[k] !== undefined).map((k) => `${k}=${process.env[k]} `).join('');
  if (process.env.npm_lifecycle_event === 'bench') return `${env}npm run bench${argv.length ? ` -- ${argv.join(' ')}` : ''}`;
  return `${env}node ${[...process.execArgv, relative(ROOT, process.argv[1]!), ...argv].join(' ')}`;
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = Date.now();
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
  if (rows.length === 0) throw new Error(`no rows match ${ONLY}`);
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
    const foreignRound = foreignShare(snap0, cpuSnapshot());
    roundForeign.push(foreignRound);
    console.error(`bench: round ${round + 1}/${ROUNDS} (${((Date.now() - t0) / 1000).toFixed(1)}s, others used ${(foreignRound * 100).toFixed(0)} %): ${progress.join(' ')}`);
  }

  const after = cpuSnapshot();
  const wallJiffies = ((after.at - before.at) / 1000) * 100 * info.nproc; // USER_HZ is 100 on Linux
  const foreign = foreignShare(before, after);
  const steal = (after.steal - before.steal) / wallJiffies;
  const elapsed = (Date.now() - started) / 1000;
  const load1 = loadavg();

  const tableText = table(results);
  console.log(tableText);
  console.log('');
  console.log(NOTES);
  console.log('');
  console.log(`${ROUNDS} rounds, ${elapsed.toFixed(0)} s; CPU time used by other processes during the run: ${(foreign * 100).toFixed(1)} % of the machine; steal ${(steal * 100).toFixed(1)} %`);
  if (foreign > 0.05) console.error(`bench: WARNING: other processes used ${(foreign * 100).toFixed(0)} % of the machine during the run; figures are disturbed`);
  if (failures.length) console.error(`bench: ${failures.length} row runs failed`);
  if (JSON_OUT) console.log(JSON.stringify({ machine: info, rounds: ROUNDS, seconds: SECONDS, results: Object.fromEntries(results), failures }));

  if (WRITE) {
    const md = `# Benchmarks

Measured ${new Date(started).toISOString().replace(/\.\d+Z$/, 'Z')} on ${info.nproc} vCPUs (${info.cpuModel}), Linux ${info.kernel}, Node ${info.node}.

Command (after \`npm run build\`; \`npm run bench\` runs the compiled \`dist/bench/run.js\`):

\`\`\`sh
${commandLine()}
\`\`\`

${ROUNDS} rounds, ${elapsed.toFixed(0)} s in all; load average ${load0.map((x) => x.toFixed(2)).join(' ')} before, ${load1.map((x) => x.toFixed(2)).join(' ')} after; CPU time used by processes other than the benchmark during the run: ${(foreign * 100).toFixed(1)} % of the machine (per round: ${roundForeign.map((x) => `${(x * 100).toFixed(0)} %`).join(', ')}; hypervisor steal: ${(steal * 100).toFixed(1)} %).${failures.length ? ` ${failures.length} row runs failed (excluded from the medians): ${failures.join('; ')}.` : ''}

Frames are 64 B and 1 KiB payloads between two processes, the sender pinned to CPU ${pinning ? CPU_SEND : '(unpinned)'} and the receiver to CPU ${pinning ? CPU_RECV : '(unpinned)'}. Throughput in millions of frames per second, latency in microseconds; every figure is the median over the rounds.

${tableText}

${NOTES}

## Method

- **Rows** run round-robin: every round runs every row once (fresh processes each time), the starting row rotating from round to round, so slow phases of the VM hit all rows alike (where the hypervisor places the 2 vCPUs changes how fast a cache line crosses between them, and with it every figure here by several times: see the spread table at the end). Cells are medians over rounds; ratios are medians of per-round ratios.
- **Pinning**: \`taskset -c ${CPU_SEND}\` for the sender/client, \`taskset -c ${CPU_RECV}\` for the receiver/server (the C program pins its two forked sides with sched_setaffinity).
- **Every frame is checked**: payloads carry a per-producer sequence number, a kind byte (warm-up, measured, end) and the sequence's low byte in their last byte; receivers check length, order and the tail byte of every frame, and the runner checks that the receiver got exactly as many frames as the senders sent. A row with any bad frame fails.
- **Throughput**: the sender warms up for ${WARMUP_MS} ms, then sends for ${SECONDS} s (or ${MAX_FRAMES / 1e6} M frames) and ends with an end frame; the receiver counts the frames that arrive between the first measured frame (of every producer) and the first end frame. Senders retry at once when the receiver is full (shmbus: the inbox, ${CAPACITY} slots of ${SLOT_SIZE[64]} B for 64 B payloads and ${SLOT_SIZE[1024]} B for 1 KiB; C: a ${CAPACITY}-slot ring; UDS: socket.write until it returns false, then wait for 'drain').
- **RTT**: the client sends one frame, waits for it to come back and records the time; ${WARMUP_MS} ms of warm-up, then ${SECONDS} s (or ${MAX_ROUND_TRIPS / 1000}k round trips); p50 and p99 of the measured round trips.
- **C SPSC ring** (\`bench/c/spsc.c\`, compiled with \`cc -O2\` by the runner into bench/out/): one producer, one consumer, cache-line-separated head and tail, ${CAPACITY} slots of exactly the payload size, the consumer checks frames in place and publishes its head every 32 frames; "one frame per send" publishes the tail after every frame, "32 frames per send" after every 32; RTT uses two rings, both sides spinning. Timestamps: clock_gettime in C, performance.now() in Node (~50 ns per call here, which the Node RTT figures include once per round trip). Its file in /dev/shm is unlinked right after mapping.
- **Node UDS** (\`bench/uds.ts\`): a stream socket under os.tmpdir(), frames length-prefixed (u32), parsed by the receiver including frames split across reads; the sender allocates a new buffer per write (the socket may still hold the previous one). "One frame per send" is one socket.write per frame, "32" is one write of 32 frames. Both sides are event-driven (epoll).
- **shmbus** (\`bench/shmbus.ts\`, public API only): per-frame \`sendToLocal\` with one reused payload, batched \`sendToLocalBatch\` of 32 reused payloads; the receiver busy-polls \`recvBatch\` (zero-copy FrameView). Busy-poll RTT: both sides spin on \`recvBatch\`, the echo sends \`view.payload\` back. Parked RTT: both sides receive with \`for await (const f of bus.frames())\`, so they park on the futex doorbell between frames. Fan-in: ${PRODUCERS} producer processes each \`sendToLocal\` into one inbox.

## Spread over rounds

${spreadTable(results, rows)}
`;
    writeFileSync(join(ROOT, 'BENCHMARKS.md'), md);
    console.error(`bench: wrote ${join(ROOT, 'BENCHMARKS.md')}`);
  }
  if (failures.length === rows.length * ROUNDS) process.exitCode = 1;
}

main().catch((err) => {
  console.error(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
});
