/**
 * The runner's child processes: spawning them pinned to a CPU (taskset),
 * talking to the Node ones over the IPC protocol of common.ts (pairs, and
 * single children without a peer), running the C ring, collecting results, and making sure nothing outlives the run — every
 * child is killed and every file the run made is removed when a row ends,
 * when the run ends, and on SIGINT/SIGTERM/SIGHUP.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { RoleArgs } from './common';
import type { BenchCluster } from './cluster';
import { inboxStates } from './inboxes';
import { RUN_ID, SHM_DIR, SPSC_BINARY, SPSC_SOURCE, type Settings } from './settings';

/** Every child process alive now (apps, relays, the C ring). */
export const live = new Set<ChildProcess>();
/** Relay clusters running now: cleanupFiles keeps their segments and config folders. */
export const runningClusters = new Set<BenchCluster>();
let pinning = true;

/** Can taskset pin? Checked once at start; without it every child runs unpinned. */
export function checkPinning(settings: Settings): boolean {
  const taskset = spawnSync('taskset', ['-c', String(settings.cpuSend), 'true']);
  pinning = !taskset.error && taskset.status === 0;
  return pinning;
}

export function isPinned(): boolean {
  return pinning;
}

export function killAll(): void {
  for (const proc of live) {
    try {
      proc.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * Remove everything this run may have left: /dev/shm files of its names
 * (shmbus segments of its namespaces, plain JS ring segments), sockets,
 * cluster folders — except those of running clusters.
 */
export function cleanupFiles(): void {
  const keepShm = [...runningClusters].flatMap((c) => [`shmbus.${c.ns('alpha')}.`, `shmbus.${c.ns('beta')}.`]);
  const keepTmp = [...runningClusters].map((c) => c.folder);
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

/** Kill every child and remove every file at exit and on SIGINT/SIGTERM/SIGHUP. Call once, before the first child. */
export function installCleanup(): void {
  process.on('exit', () => {
    killAll();
    for (const cluster of runningClusters) cluster.killNow();
    runningClusters.clear();
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
}

let fileCounter = 0;
let namespaceCounter = 0;

/** A fresh name for a per-row file: `shmbus.<run>-f<n>.<suffix>` in /dev/shm, `shmbus-<run>-f<n>.<suffix>` in the temp folder (both removed by cleanupFiles). */
export function rowFile(where: 'shm' | 'tmp', suffix: string): string {
  return where === 'shm' ? join(SHM_DIR, `shmbus.${RUN_ID}-f${++fileCounter}.${suffix}`) : join(tmpdir(), `shmbus-${RUN_ID}-f${++fileCounter}.${suffix}`);
}

/** A fresh shmbus namespace for one row (its segments are `shmbus.<namespace>.*`, removed by cleanupFiles). */
export function rowNamespace(): string {
  return `${RUN_ID}-${++namespaceCounter}`;
}

export function pinned(cpu: number, command: string, args: string[]): [string, string[]] {
  return pinning ? ['taskset', ['-c', String(cpu), command, ...args]] : [command, args];
}

export type Message = { type: string; [key: string]: unknown };

/** The telling lines of a child's stderr (the error and where it was thrown), not the whole trace. */
function condense(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const i = lines.findIndex((l) => /^(\w*Error|Error)\b|^\w+Error:/.test(l));
  return (i >= 0 ? lines.slice(i, i + 3) : lines.slice(-3)).join(' | ');
}

/** One Node child of a row, speaking the IPC protocol of common.ts. */
export class NodeChild {
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

  /** SIGKILL it if it is still running. */
  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

export interface PairSpec {
  file: string;
  /** Receiver/server role (one process, on the receiver CPU). */
  receiver: string;
  /** Sender/client role (`senders` processes, on the sender CPU). */
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
export async function runPair(settings: Settings, spec: PairSpec): Promise<Message> {
  const deadline = Date.now() + settings.rowTimeoutMs;
  const children: NodeChild[] = [];
  try {
    const receiver = new NodeChild(spec.receiver, spec.file, spec.receiver, { ...spec.args, ...spec.receiverArgs }, settings.cpuRecv);
    children.push(receiver);
    const ready = await receiver.next('ready', deadline);
    // A TCP server reports the port it listens on.
    const port = typeof ready.port === 'number' ? { port: ready.port } : {};
    const senders: NodeChild[] = [];
    for (let id = 0; id < spec.senders; id++) {
      const child = new NodeChild(`${spec.sender}#${id}`, spec.file, spec.sender, { ...spec.args, ...spec.senderArgs, ...port, id }, settings.cpuSend);
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
    for (const child of children) child.kill();
    await Promise.all(children.map((c) => c.exited));
  }
}

/**
 * Run one Node child with no peer (the lane rows), pinned to the receiver
 * CPU: its result, checked for bad frames. If it fails, the error describes
 * the inboxes named `describe` of its namespace. The child is gone when this
 * returns or throws.
 */
export async function runSolo(settings: Settings, file: string, role: string, args: RoleArgs, describe: readonly string[]): Promise<Message> {
  const deadline = Date.now() + settings.rowTimeoutMs;
  const child = new NodeChild(role, file, role, args, settings.cpuRecv);
  try {
    const result = await child.next('result', deadline);
    if (Number(result.errors) !== 0) throw new Error(`${role}: ${String(result.errors)} bad frames`);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([child.exited, new Promise((r) => (timer = setTimeout(r, Math.max(0, deadline - Date.now()))))]);
    clearTimeout(timer);
    return result;
  } catch (err) {
    if (err instanceof Error && args.namespace !== undefined) err.message += inboxStates(args.namespace, describe);
    throw err;
  } finally {
    child.kill();
    await child.exited;
  }
}

// ---------------------------------------------------------------------------
// The C ring (bench/c/spsc.c): one program that forks its two pinned sides
// ---------------------------------------------------------------------------

/** Compile bench/c/spsc.c into bench/out/; null (and a warning) if there is no working cc. */
export function buildSpsc(): string | null {
  mkdirSync(dirname(SPSC_BINARY), { recursive: true });
  const result = spawnSync('cc', ['-O2', '-Wall', '-o', SPSC_BINARY, SPSC_SOURCE], { encoding: 'utf8' });
  if (result.error || result.status !== 0) {
    console.error(`bench: cannot compile bench/c/spsc.c, skipping the C rows: ${result.error?.message ?? result.stderr}`);
    return null;
  }
  return SPSC_BINARY;
}

/** One run of the C ring: `mode` tput1, tput32 or rtt; its JSON line, checked for bad frames. */
export function runSpsc(settings: Settings, binary: string, mode: string, size: number, maxCount: number): Promise<Record<string, number>> {
  const cpuArgs = pinning ? [String(settings.cpuSend), String(settings.cpuRecv)] : ['-1', '-1'];
  return new Promise((resolve, reject) => {
    const child = execFile(binary, [mode, String(size), ...cpuArgs, String(settings.seconds), String(maxCount)], { timeout: settings.rowTimeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
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
