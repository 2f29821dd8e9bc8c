/**
 * Several "hosts" on one machine for relay tests: one namespace per host in a
 * private /dev/shm folder, one transit-server process per host on loopback
 * ports, a cluster config with a fresh secret. Everything is removed by
 * `cleanupAll` (from ./index), even when a test fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { connect as connectNet, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { deadline, jsonLines, registerCleanup, shmDir } from './index';

const RELAY_CLI = join(__dirname, '..', '..', 'relay', 'cli.ts');

export interface HostSpec {
  /** Override the port peers dial for this host (e.g. a test's own proxy, forwarding to `cluster.port(host)`). */
  dialPort?: number;
  inboxCapacity?: number;
  inboxSlotSize?: number;
}

export interface Relay {
  readonly host: string;
  readonly process: ChildProcess;
  readonly lines: string[];
  /** JSON log events so far. */
  events(name?: string): Array<Record<string, unknown>>;
  /** Wait for a log event. */
  event(name: string, ms?: number, predicate?: (e: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  metricsPort(): number;
  /** GET /metrics.json. */
  metrics(): Promise<{ global: Record<string, number>; peers: Record<string, Record<string, number>> }>;
  prometheus(): Promise<string>;
  /** SIGTERM and wait for the exit code. */
  stop(ms?: number): Promise<number | null>;
  /** SIGKILL and wait. */
  kill(): Promise<void>;
  exited(ms?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface Cluster {
  readonly configPath: string;
  readonly folder: string;
  readonly dir: string;
  /** Namespace of a host. */
  ns(host: string): string;
  /**
   * Port the host's running relay listens on: relays listen on port 0 and
   * report the port the kernel picked in their start line (no free-port race).
   * Throws before the host's relay has started.
   */
  port(host: string): number;
  /** The proxy peers dial to reach the host (a stable port across restarts; cut() breaks its connections). */
  front(host: string): TcpProxy;
  /** Start a host's relay; `without` leaves hosts out of its config (a host the cluster adds later). */
  start(host: string, extraArgs?: string[], options?: { without?: readonly string[] }): Promise<Relay>;
  /** Rewrite the config (e.g. to point a host at a proxy). */
  writeConfig(mutate?: (config: Record<string, unknown>) => void): void;
}

const relays = new Set<ChildProcess>();

function killRelays(): void {
  for (const p of relays) p.kill('SIGKILL');
  relays.clear();
}

export async function makeCluster(
  hosts: string[],
  options: { limits?: Record<string, number>; specs?: Record<string, HostSpec>; secret?: string; tls?: { key: string; cert: string; ca: string } } = {},
): Promise<Cluster> {
  const folder = mkdtempSync(join(tmpdir(), 'shmbus-cluster-'));
  registerCleanup(() => rmSync(folder, { recursive: true, force: true }));
  registerCleanup(killRelays);
  const dir = shmDir();
  const tag = `c${process.pid}x${Math.floor(Math.random() * 1e6)}`;
  // Each relay listens on port 0; peers dial a front proxy (itself on port 0) that forwards to the
  // port the host's running relay reported. Nothing binds a port it was told is free.
  const relayPorts = new Map<string, number>();
  const fronts = new Map<string, TcpProxy>();
  for (const h of hosts) {
    const front = await tcpProxy(() => relayPorts.get(h) ?? 0);
    registerCleanup(() => front.close());
    fronts.set(h, front);
  }
  const secretPath = join(folder, 'cluster.secret');
  writeFileSync(secretPath, options.secret ?? randomBytes(32).toString('hex'));
  chmodSync(secretPath, 0o600);
  const configPath = join(folder, 'cluster.json');
  const base = () => ({
    secret: { file: './cluster.secret' },
    ...(options.tls !== undefined ? { tls: options.tls } : {}),
    limits: { ttlMs: 5000, connectTimeoutMs: 1000, handshakeTimeoutMs: 1000, backoffInitialMs: 20, backoffMaxMs: 200, ...options.limits },
    hosts: Object.fromEntries(
      hosts.map((h) => [
        h,
        {
          relay: `127.0.0.1:${options.specs?.[h]?.dialPort ?? fronts.get(h)!.port}`,
          namespace: `${tag}-${h}`,
          dir,
          metrics: '127.0.0.1:0',
          ...(options.specs?.[h]?.inboxCapacity !== undefined ? { inboxCapacity: options.specs[h]!.inboxCapacity } : {}),
          ...(options.specs?.[h]?.inboxSlotSize !== undefined ? { inboxSlotSize: options.specs[h]!.inboxSlotSize } : {}),
        },
      ]),
    ),
  });
  const cluster: Cluster = {
    configPath,
    folder,
    dir,
    ns: (h) => `${tag}-${h}`,
    port(h) {
      const port = relayPorts.get(h);
      if (port === undefined) throw new Error(`the relay of ${h} has not started: its port is not known yet`);
      return port;
    },
    front: (h) => fronts.get(h)!,
    writeConfig(mutate) {
      const config = base() as Record<string, unknown>;
      mutate?.(config);
      writeFileSync(configPath, JSON.stringify(config, null, 2));
    },
    async start(host, extraArgs = [], startOptions = {}) {
      // A relay's own listen address: port 0, the kernel picks; the start line says which.
      const config = base() as { hosts: Record<string, { relay: string }> };
      config.hosts[host]!.relay = '127.0.0.1:0';
      for (const h of startOptions.without ?? []) delete config.hosts[h];
      const own = join(folder, `cluster.${host}.json`);
      writeFileSync(own, JSON.stringify(config, null, 2));
      const relay = await startRelay(host, own, extraArgs);
      const listen = String(relay.events('start')[0]!.listen);
      const port = Number(listen.slice(listen.lastIndexOf(':') + 1));
      if (!(port > 0)) throw new Error(`relay ${host} reported no listen port: ${listen}`);
      relayPorts.set(host, port);
      return relay;
    },
  };
  cluster.writeConfig();
  return cluster;
}

function startRelay(host: string, configPath: string, extraArgs: string[]): Promise<Relay> {
  const proc = spawn(process.execPath, ['--import', 'tsx', RELAY_CLI, '--config', configPath, '--host', host, '--drain-timeout-ms', '2000', ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  relays.add(proc);
  const lines: string[] = [];
  let stderr = '';
  const waiters: Array<() => void> = [];
  proc.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    lines.push(line);
    for (const w of waiters.splice(0)) w();
  });
  // 'close' (not 'exit'): stdout is fully read by then, so the last log lines (e.g. "stop") are in `lines`.
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('close', (code, signal) => {
      relays.delete(proc);
      for (const w of waiters.splice(0)) w();
      resolve({ code, signal });
    }),
  );
  const parsed = () => jsonLines(lines);
  const relay: Relay = {
    host,
    process: proc,
    lines,
    events: (name) => parsed().filter((e) => name === undefined || e.event === name),
    event(name, ms = 10_000, predicate = () => true) {
      const find = () => parsed().find((e) => e.event === name && predicate(e));
      return deadline(
        new Promise((resolve, reject) => {
          const check = () => {
            const found = find();
            if (found !== undefined) resolve(found);
            else if (proc.exitCode !== null || proc.signalCode !== null) reject(new Error(`relay ${host} exited before "${name}": ${lines.join('\n')} ${stderr}`));
            else waiters.push(check);
          };
          check();
        }),
        ms,
        `relay ${host} logging "${name}" (log: ${lines.slice(-5).join(' | ')} ${stderr.slice(-300)})`,
      );
    },
    metricsPort() {
      const start = parsed().find((e) => e.event === 'start');
      return Number(String(start?.metrics).split(':')[1]);
    },
    metrics: () => httpGet(relay.metricsPort(), '/metrics.json').then((t) => JSON.parse(t)),
    prometheus: () => httpGet(relay.metricsPort(), '/metrics'),
    async stop(ms = 10_000) {
      proc.kill('SIGTERM');
      return (await deadline(exit, ms, `relay ${host} stopping`)).code;
    },
    async kill() {
      proc.kill('SIGKILL');
      await deadline(exit, 10_000, `relay ${host} dying`);
    },
    exited: (ms = 10_000) => deadline(exit, ms, `relay ${host} exiting`),
  };
  return relay.event('start', 15_000).then(() => relay);
}

function httpGet(port: number, path: string): Promise<string> {
  return deadline(
    new Promise((resolve, reject) => {
      get({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(body));
      }).on('error', reject);
    }),
    5000,
    `GET ${path}`,
  );
}


/** A TCP proxy on loopback (to the port `target()` gives at each connection; a throw or 0 refuses it) whose connections can be cut at once; `onClientData` sees every chunk the client side sends. */
export interface TcpProxy {
  readonly port: number;
  /** Destroy every connection through it; returns how many sockets were open. */
  cut(): number;
  /** Sockets open through it now (both ends of each connection). */
  open(): number;
  close(): void;
}

export async function tcpProxy(target: () => number, options: { onClientData?: (chunk: Buffer) => void } = {}): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  const server = createNetServer((client) => {
    let port = 0;
    try {
      port = target();
    } catch {
      // The target is not up (e.g. its relay has not started): refuse, as a closed port would.
    }
    const upstream = connectNet(port, '127.0.0.1');
    if (options.onClientData !== undefined) client.on('data', options.onClientData);
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  // Port 0: the kernel picks a free port and we read it back (no window in which another process takes it).
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    cut() {
      const n = sockets.size;
      for (const s of sockets) s.destroy();
      return n;
    },
    open: () => sockets.size,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
