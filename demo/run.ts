/**
 * `npm run demo`: a send/receive pair of processes on one host, through shared memory.
 * Prints what each side sent and received; exits non-zero if anything failed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** Start `script role ...args` as its own process, prefixing its output lines. */
function start(label: string, script: string, args: string[], onLine: (line: string) => void = () => {}): Promise<number> {
  const child = spawn(process.execPath, [...process.execArgv, join(__dirname, script), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  createInterface({ input: child.stdout! }).on('line', (line) => {
    console.log(`[${label}] ${line}`);
    onLine(line);
  });
  return new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve(code ?? (signal ? 128 : 1));
    }),
  );
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

async function localPair(): Promise<void> {
  const namespace = `demo-${process.pid}`;
  console.log(`== local pair: two processes, namespace "${namespace}" in /dev/shm ==`);
  let ready!: () => void;
  const receiverReady = new Promise<void>((resolve) => (ready = resolve));
  const receiver = start('receiver', 'local-pair.js', ['receiver', namespace, '5'], (line) => line === 'ready' && ready());
  await withTimeout(receiverReady, 10_000, 'receiver start');
  const sender = start('sender', 'local-pair.js', ['sender', namespace, '5']);
  const codes = await withTimeout(Promise.all([receiver, sender]), 20_000, 'local pair');
  if (codes.some((c) => c !== 0)) throw new Error(`local pair failed (exit codes ${codes.join(', ')})`);
  const left = readdirSync('/dev/shm').filter((f) => f.startsWith(`shmbus.${namespace}.`));
  if (left.length > 0) throw new Error(`segments left behind: ${left.join(', ')}`);
  console.log('== local pair done: nothing left in /dev/shm ==');
}

localPair().catch((err: unknown) => {
  console.error(`demo failed: ${(err as Error).message}`);
  process.exitCode = 1;
});
