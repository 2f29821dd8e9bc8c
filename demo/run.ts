/**
 * `npm run demo`: send/receive pairs of processes.
 *   1. local: two processes on one host, through shared memory only;
 *   2. cross-host: two "hosts" (two namespaces) each with its own transit-server
 *      on loopback; the sender's frames go shared memory -> relay -> TCP -> relay
 *      -> shared memory, and the reply comes back the same way.
 * Prints what each side sent and received; exits non-zero if anything failed,
 * and leaves nothing behind in /dev/shm.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const children = new Set<ChildProcess>();
const folders: string[] = [];
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
  for (const folder of folders) rmSync(folder, { recursive: true, force: true });
});

interface Started {
  readonly child: ChildProcess;
  readonly exited: Promise<number>;
  /** Resolves when the process prints a line matching `pattern`. */
  line(pattern: RegExp): Promise<string>;
}

/** Start `node <script> ...args` as its own process, printing its lines with a label. */
function start(label: string, script: string, args: string[], show: (line: string) => string | null = (l) => l): Started {
  const child = spawn(process.execPath, [...process.execArgv, script, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  const seen: string[] = [];
  const waiting: Array<{ pattern: RegExp; resolve: (l: string) => void }> = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    seen.push(line);
    const shown = show(line);
    if (shown !== null) console.log(`[${label}] ${shown}`);
    for (const w of waiting.filter((w) => w.pattern.test(line))) {
      waiting.splice(waiting.indexOf(w), 1);
      w.resolve(line);
    }
  });
  const exited = new Promise<number>((resolve) =>
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve(code ?? (signal ? 128 : 1));
    }),
  );
  return {
    child,
    exited,
    line: (pattern) => {
      const found = seen.find((l) => pattern.test(l));
      return found !== undefined ? Promise.resolve(found) : new Promise((resolve) => waiting.push({ pattern, resolve }));
    },
  };
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const PAIR = join(__dirname, 'pair.js');
const RELAY = join(__dirname, '..', 'relay', 'cli.js');

async function runPair(namespaces: { receiver: string; sender: string }, destination: string): Promise<void> {
  const receiver = start('receiver', PAIR, ['receiver', namespaces.receiver, '5']);
  await withTimeout(receiver.line(/^ready$/), 10_000, 'receiver start');
  const sender = start('sender', PAIR, ['sender', namespaces.sender, '5', destination]);
  const codes = await withTimeout(Promise.all([receiver.exited, sender.exited]), 30_000, 'the pair');
  if (codes.some((c) => c !== 0)) throw new Error(`pair failed (exit codes ${codes.join(', ')})`);
}

function leftovers(prefix: string): string[] {
  return readdirSync('/dev/shm').filter((f) => f.startsWith(prefix));
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function localPair(): Promise<void> {
  const namespace = `demo-${process.pid}`;
  console.log(`\n== 1. local pair: two processes, namespace "${namespace}" in /dev/shm ==`);
  await runPair({ receiver: namespace, sender: namespace }, 'receiver');
  const left = leftovers(`shmbus.${namespace}.`);
  if (left.length > 0) throw new Error(`segments left behind: ${left.join(', ')}`);
  console.log('== local pair done ==');
}

async function crossHostPair(): Promise<void> {
  const folder = mkdtempSync(join(tmpdir(), 'shmbus-demo-'));
  folders.push(folder);
  const alpha = `demo-${process.pid}-alpha`;
  const beta = `demo-${process.pid}-beta`;
  writeFileSync(join(folder, 'cluster.secret'), randomBytes(32).toString('hex'), { mode: 0o600 });
  const config = {
    secret: { file: './cluster.secret' },
    hosts: {
      alpha: { relay: `127.0.0.1:${await freePort()}`, namespace: alpha, metrics: '127.0.0.1:0' },
      beta: { relay: `127.0.0.1:${await freePort()}`, namespace: beta, metrics: '127.0.0.1:0' },
    },
  };
  const configPath = join(folder, 'cluster.json');
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  console.log(`\n== 2. cross-host pair: hosts alpha ("${alpha}") and beta ("${beta}"), one transit-server each ==`);
  const showEvent = (line: string) => {
    try {
      const e = JSON.parse(line) as Record<string, unknown>;
      const { time: _time, event, ...rest } = e;
      return `${String(event)} ${JSON.stringify(rest)}`;
    } catch {
      return line;
    }
  };
  const relays = ['alpha', 'beta'].map((host) => start(`relay ${host}`, RELAY, ['--config', configPath, '--host', host], showEvent));
  await withTimeout(Promise.all(relays.map((r) => r.line(/"event":"start"/))), 15_000, 'relay start');
  await runPair({ receiver: beta, sender: alpha }, 'receiver@beta');
  for (const relay of relays) relay.child.kill('SIGTERM');
  const codes = await withTimeout(Promise.all(relays.map((r) => r.exited)), 15_000, 'relay stop');
  if (codes.some((c) => c !== 0)) throw new Error(`relays exited with ${codes.join(', ')}`);
  const left = [...leftovers(`shmbus.${alpha}.`), ...leftovers(`shmbus.${beta}.`)];
  if (left.length > 0) throw new Error(`segments left behind: ${left.join(', ')}`);
  console.log('== cross-host pair done: both relays stopped cleanly, nothing left in /dev/shm ==');
}

(async () => {
  await localPair();
  await crossHostPair();
})().catch((err: unknown) => {
  console.error(`demo failed: ${(err as Error).message}`);
  process.exitCode = 1;
});
