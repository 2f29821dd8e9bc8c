/**
 * Runner side of the relay rows: a two-host cluster ("alpha", "beta") on this
 * machine, each host a shmbus namespace in /dev/shm with its own transit-server
 * process on a loopback port, the relays pinned to the cores of their hosts.
 *
 * This module never loads the addon (the runner does not either): it writes
 * the config and the secret, starts and stops the relay processes, reads their
 * JSON log lines, their metrics (GET /metrics.json) and their memory
 * (/proc/<pid>/status).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export const HOSTS = ['alpha', 'beta'] as const;
export type Host = (typeof HOSTS)[number];

export interface ClusterOptions {
  /** Namespaces are `${prefix}-alpha` and `${prefix}-beta`; the temp folder starts with `shmbus-${prefix}-`. */
  prefix: string;
  /** `limits` of the config (fields of relay/config.ts LIMIT_RANGES). */
  limits: Record<string, number>;
  /** `node` + args to run relay/cli (compiled or through tsx). */
  command: string;
  args: string[];
  /** CPU of each host's relay, or null for no pinning. */
  cpus: Record<Host, number> | null;
  /** Register/unregister child processes with the runner (killed on exit). */
  track(proc: ChildProcess): void;
  untrack(proc: ChildProcess): void;
  /** Segment folder (default /dev/shm). */
  dir?: string;
  /** Slots per lane of each relay's outbound inbox (default: the relay's default). */
  inboxCapacity?: number;
}

export interface MemorySample {
  /** kB, from /proc/<pid>/status. */
  rss: number;
  hwm: number;
  anon: number;
  file: number;
  shmem: number;
}

export type Metrics = { global: Record<string, number>; peers: Record<string, Record<string, number>> };

/** One transit-server process. */
export class RelayProcess {
  readonly proc: ChildProcess;
  readonly started: Promise<Record<string, unknown>>;
  private readonly eventCounts = new Map<string, number>();
  private readonly lastLines: string[] = [];
  private stderr = '';
  private startEvent: Record<string, unknown> | null = null;
  stopEvent: Record<string, unknown> | null = null;
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  readonly exited: Promise<void>;

  constructor(
    readonly host: Host,
    command: string,
    args: string[],
    untrack: (proc: ChildProcess) => void,
  ) {
    this.proc = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stderr!.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    let resolveStart!: (e: Record<string, unknown>) => void;
    let rejectStart!: (err: Error) => void;
    this.started = new Promise((resolve, reject) => {
      resolveStart = resolve;
      rejectStart = reject;
    });
    this.started.catch(() => undefined);
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      this.lastLines.push(line);
      if (this.lastLines.length > 20) this.lastLines.shift();
      let event: Record<string, unknown>;
      try {
        event = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      const name = String(event.event);
      this.eventCounts.set(name, (this.eventCounts.get(name) ?? 0) + 1);
      if (name === 'start') {
        this.startEvent = event;
        resolveStart(event);
      } else if (name === 'stop') {
        this.stopEvent = event;
      }
    });
    this.exited = new Promise((resolve) => {
      // 'close': stdout has been read to the end (the stop line is in).
      this.proc.on('close', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        untrack(this.proc);
        rejectStart(new Error(`relay ${host} exited (${signal ?? `code ${code}`}) before its start line: ${this.describe()}`));
        resolve();
      });
      this.proc.on('error', (err) => {
        untrack(this.proc);
        rejectStart(new Error(`relay ${host}: spawn error ${err.message}`));
        resolve();
      });
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get alive(): boolean {
    return this.exitCode === null && this.exitSignal === null;
  }

  /** How many log lines of this event the relay printed so far. */
  events(name: string): number {
    return this.eventCounts.get(name) ?? 0;
  }

  metricsPort(): number {
    const metrics = String(this.startEvent?.metrics ?? '');
    const port = Number(metrics.slice(metrics.lastIndexOf(':') + 1));
    if (!Number.isInteger(port) || port <= 0) throw new Error(`relay ${this.host}: no metrics port in its start line`);
    return port;
  }

  metrics(timeoutMs = 2000): Promise<Metrics> {
    return httpGet(this.metricsPort(), '/metrics.json', timeoutMs).then((text) => JSON.parse(text) as Metrics);
  }

  /** VmRSS, VmHWM, RssAnon, RssFile, RssShmem (kB); null once the process is gone. */
  memory(): MemorySample | null {
    return readMemory(this.pid);
  }

  describe(): string {
    return `${this.lastLines.slice(-5).join(' | ')}${this.stderr ? ` stderr: ${this.stderr.slice(-600)}` : ''}`;
  }

  /** SIGTERM (the relay drains and stops), SIGKILL after `ms`. Resolves with the exit code. */
  async stop(ms: number): Promise<number | null> {
    if (this.alive) this.proc.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        if (this.alive) this.proc.kill('SIGKILL');
        resolve();
      }, ms);
    });
    await Promise.race([this.exited, killed]);
    clearTimeout(timer);
    await this.exited;
    return this.exitCode;
  }

  kill(): void {
    if (this.alive) this.proc.kill('SIGKILL');
  }
}

/** Read a process's memory lines from /proc/<pid>/status (kB). */
export function readMemory(pid: number): MemorySample | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s*(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) : NaN;
  };
  const rss = field('VmRSS');
  if (!Number.isFinite(rss)) return null; // a zombie
  return { rss, hwm: field('VmHWM'), anon: field('RssAnon'), file: field('RssFile'), shmem: field('RssShmem') };
}

export function httpGet(port: number, path: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, timeout: timeoutMs }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${path}: HTTP ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** A free TCP port on 127.0.0.1 (bound, then released for the relay to bind). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * Two hosts, two relays. `start()` writes the config (fresh secret, mode
 * 0600), starts both relays and waits for their `start` lines; `stop()` stops
 * them (SIGTERM: drain, unregister) and removes the folder. The namespaces'
 * segments are the runner's to remove (it knows the /dev/shm prefix).
 */
export class BenchCluster {
  readonly folder: string;
  readonly dir: string;
  readonly relays = new Map<Host, RelayProcess>();
  private stopped = false;

  constructor(readonly options: ClusterOptions) {
    this.dir = options.dir ?? '/dev/shm';
    this.folder = mkdtempSync(join(tmpdir(), `shmbus-${options.prefix}-`));
  }

  ns(host: Host): string {
    return `${this.options.prefix}-${host}`;
  }

  relay(host: Host): RelayProcess {
    const relay = this.relays.get(host);
    if (relay === undefined) throw new Error(`relay ${host} not started`);
    return relay;
  }

  get healthy(): boolean {
    return !this.stopped && HOSTS.every((h) => this.relays.get(h)?.alive === true);
  }

  /** Start both relays; rejects (after killing whatever started) if one does not log `start` within `timeoutMs`. */
  async start(timeoutMs = 15_000): Promise<void> {
    const ports = { alpha: await freePort(), beta: await freePort() };
    const secretPath = join(this.folder, 'cluster.secret');
    writeFileSync(secretPath, randomBytes(32).toString('hex'), { mode: 0o600 });
    chmodSync(secretPath, 0o600);
    const config = {
      secret: { file: './cluster.secret' },
      limits: this.options.limits,
      hosts: Object.fromEntries(HOSTS.map((h) => [h, { relay: `127.0.0.1:${ports[h]}`, namespace: this.ns(h), dir: this.dir, metrics: '127.0.0.1:0', ...(this.options.inboxCapacity === undefined ? {} : { inboxCapacity: this.options.inboxCapacity }) }])),
    };
    const configPath = join(this.folder, 'cluster.json');
    writeFileSync(configPath, `${JSON.stringify(config, null, 2)}\n`);
    for (const host of HOSTS) {
      const args = [...this.options.args, '--config', configPath, '--host', host, '--drain-timeout-ms', '2000'];
      const cpu = this.options.cpus?.[host];
      const [command, commandArgs] = cpu === undefined ? [this.options.command, args] : ['taskset', ['-c', String(cpu), this.options.command, ...args]];
      const relay = new RelayProcess(host, command, commandArgs, this.options.untrack);
      this.options.track(relay.proc);
      this.relays.set(host, relay);
    }
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        Promise.all(HOSTS.map((h) => this.relay(h).started)),
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`relays did not log "start" within ${timeoutMs} ms: ${HOSTS.map((h) => `${h}: ${this.relay(h).describe()}`).join('; ')}`)), timeoutMs))),
      ]);
    } catch (err) {
      for (const relay of this.relays.values()) relay.kill();
      await Promise.all([...this.relays.values()].map((r) => r.exited));
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Stop both relays (SIGTERM, SIGKILL after `ms`) and remove the config
   * folder. Returns a problem description, or null if both stopped cleanly
   * (exit 0, `stop` line with clean: true).
   */
  async stop(ms = 5000): Promise<string | null> {
    if (this.stopped) return null;
    this.stopped = true;
    const problems: string[] = [];
    await Promise.all(
      [...this.relays.values()].map(async (relay) => {
        const wasAlive = relay.alive;
        const code = await relay.stop(ms);
        if (!wasAlive) problems.push(`relay ${relay.host} had already exited (${relay.exitSignal ?? `code ${relay.exitCode}`}): ${relay.describe()}`);
        else if (code !== 0) problems.push(`relay ${relay.host} exited with ${relay.exitSignal ?? `code ${code}`}: ${relay.describe()}`);
        else if (relay.stopEvent?.clean !== true) problems.push(`relay ${relay.host} stopped unclean: ${JSON.stringify(relay.stopEvent)}`);
      }),
    );
    this.removeFolder();
    return problems.length ? problems.join('; ') : null;
  }

  /** Last resort (exit hook, signals): kill without waiting, remove the folder. */
  killNow(): void {
    for (const relay of this.relays.values()) relay.kill();
    this.removeFolder();
  }

  private removeFolder(): void {
    rmSync(this.folder, { recursive: true, force: true });
  }
}
