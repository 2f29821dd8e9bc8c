/**
 * Test helpers: private segment folders, deadlines, child processes — and the
 * cleanup that runs even when a test fails (call `cleanupAll` in an `after`
 * hook; the process 'exit' hook is the last resort).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Bus, type BusOptions, type Frame } from '../../src/index';

const dirs = new Set<string>();
const children = new Set<ChildProcess>();
let counter = 0;

/** A fresh folder under /dev/shm for one test's segments. */
export function shmDir(): string {
  const dir = mkdtempSync('/dev/shm/shmbus-test-');
  dirs.add(dir);
  return dir;
}

/** A namespace name no other test uses. */
export function uniqueNamespace(tag = 'ns'): string {
  return `${tag}-${process.pid}-${++counter}`;
}

/** Files left in a folder (to assert a test cleaned up). */
export function filesIn(dir: string): string[] {
  return readdirSync(dir).sort();
}

/** Reject if `promise` has not settled within `ms`. */
export function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`deadline: ${what} did not happen within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Poll `condition` every few ms until true, behind a deadline. */
export async function until(condition: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`deadline: ${what} did not become true within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** The JSON objects among a process's output lines (a relay logs one per lifecycle event). */
export function jsonLines(lines: readonly string[]): Array<Record<string, unknown>> {
  return lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

/** The next frame in `bus`'s inbox, polling, behind a deadline. */
export async function nextFrame(bus: { recvFromLocal(): Frame | null }, ms = 10_000, what = 'a frame'): Promise<Frame> {
  return deadline(
    (async () => {
      for (;;) {
        const f = bus.recvFromLocal();
        if (f !== null) return f;
        await new Promise((r) => setTimeout(r, 1));
      }
    })(),
    ms,
    what,
  );
}

export interface Child {
  readonly process: ChildProcess;
  /** Lines the child printed on stdout so far. */
  readonly lines: string[];
  /** Resolves with the first stdout line matching `pattern`. */
  line(pattern: RegExp, ms?: number): Promise<string>;
  /** Resolves with the exit code / signal. */
  exited(ms?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
}

const CHILD_SCRIPT = join(__dirname, 'child.ts');

/** Run test/_helpers/child.ts with a role and JSON arguments, as a real process. */
export function spawnChild(role: string, args: Record<string, unknown>): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', CHILD_SCRIPT, role, JSON.stringify(args)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  const lines: string[] = [];
  const waiters: Array<{ pattern: RegExp; resolve: (line: string) => void }> = [];
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    lines.push(line);
    for (const w of [...waiters]) {
      if (w.pattern.test(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('exit', (code, signal) => {
      children.delete(proc);
      resolve({ code, signal });
    });
  });
  return {
    process: proc,
    lines,
    line(pattern, ms = 10_000) {
      const seen = lines.find((l) => pattern.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      const p = new Promise<string>((resolve) => waiters.push({ pattern, resolve }));
      return deadline(p, ms, `child ${role} printing ${pattern} (stderr: ${err.slice(-500)})`);
    },
    exited(ms = 10_000) {
      return deadline(exit, ms, `child ${role} exiting`);
    },
    stderr: () => err,
  };
}

const cleanups: Array<() => void> = [];
/** Cleanups run by every cleanupAll (not only the next). */
const standing: Array<() => void> = [];

/** A small seeded generator (mulberry32) in [0, 1): a failing random run can be repeated with its seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 0x1_0000_0000;
  };
}

/** A fresh folder and namespace, and `open` for Buses in this process that are closed even if the test fails. */
export function busContext(): { dir: string; ns: string; open: (name: string, extra?: Partial<BusOptions>) => Bus } {
  const dir = shmDir();
  const ns = uniqueNamespace();
  const open = (name: string, extra: Partial<BusOptions> = {}): Bus => {
    const bus = Bus.openSync({ name, namespace: ns, dir, ...extra });
    registerCleanup(() => bus.closeSync());
    return bus;
  };
  return { dir, ns, open };
}

/** Run `fn` in the next cleanupAll (kill a process, remove a folder, close a Bus...). */
export function registerCleanup(fn: () => void): void {
  cleanups.push(fn);
}

/** Run `fn` in every cleanupAll, after the one-off cleanups (the network-namespace harness: it removes what it made since). */
export function registerStandingCleanup(fn: () => void): void {
  if (!standing.includes(fn)) standing.push(fn);
}

/** Kill every child still running and remove every folder made by shmDir; run registered cleanups. */
export function cleanupAll(): void {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
  for (const fn of [...cleanups.splice(0).reverse(), ...standing]) {
    try {
      fn();
    } catch {
      // keep cleaning
    }
  }
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  dirs.clear();
}

process.on('exit', cleanupAll);
