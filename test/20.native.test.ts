import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants, existsSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import native, { WaitResult, type NativeWaiter } from '../src/native';

// ─── helpers ────────────────────────────────────────────────────────────────

const ADDON = resolve(__dirname, '..', 'build', 'Release', 'shmbus.node');
const DEADLINE_MS = 5000;

const DIR = (() => {
  try {
    accessSync('/dev/shm', fsConstants.W_OK);
    return '/dev/shm';
  } catch {
    return tmpdir();
  }
})();

let counter = 0;
const paths: string[] = [];
const buffers: ArrayBuffer[] = [];
const waiters: NativeWaiter[] = [];

/** A fresh path, removed again after each test. */
function tmpPath(): string {
  const path = join(DIR, `shmbus-test-native-${process.pid}-${counter++}`);
  paths.push(path);
  return path;
}

function track(buffer: ArrayBuffer): ArrayBuffer {
  buffers.push(buffer);
  return buffer;
}

function createSegment(size = 4096, mode = 0o600): { path: string; buffer: ArrayBuffer } {
  const path = tmpPath();
  return { path, buffer: track(native.create(path, size, mode)) };
}

/** A waiter whose results arrive through next(). */
function waiterOn(buffer: ArrayBuffer, byteOffset: number) {
  const results: WaitResult[] = [];
  let notify: (() => void) | undefined;
  const waiter = native.createWaiter(buffer, byteOffset, (result) => {
    results.push(result);
    notify?.();
  });
  waiters.push(waiter);
  const next = (label: string): Promise<WaitResult> =>
    withDeadline(
      new Promise<WaitResult>((resolvePromise) => {
        const check = () => {
          if (results.length > 0) {
            notify = undefined;
            resolvePromise(results.shift()!);
          }
        };
        notify = check;
        check();
      }),
      label,
    );
  return { waiter, results, next };
}

/** Rejects if `promise` does not settle within `ms`. */
function withDeadline<T>(promise: Promise<T>, label: string, ms = DEADLINE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`deadline of ${ms} ms passed: ${label}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Calls futexWake until it reports a woken waiter (the waiter thread needs a moment to enter FUTEX_WAIT). */
async function wakeUntilWoken(buffer: ArrayBuffer, byteOffset: number): Promise<number> {
  return withDeadline(
    (async () => {
      for (;;) {
        const n = native.futexWake(buffer, byteOffset, 1);
        if (n > 0) return n;
        await sleep(1);
      }
    })(),
    'futexWake found no waiter',
  );
}

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  pid: number;
  elapsedMs: number;
}

/** Runs `node [...nodeArgs] -e script` with the addon path in SHMBUS_ADDON; killed and rejected after the deadline. */
function runNode(script: string, env: Record<string, string> = {}, nodeArgs: string[] = [], ms = DEADLINE_MS): Promise<ChildResult> {
  const started = Date.now();
  const child = spawn(process.execPath, [...nodeArgs, '-e', script], {
    env: { ...process.env, SHMBUS_ADDON: ADDON, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<ChildResult>((resolvePromise, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) =>
      resolvePromise({ code, signal, stdout, stderr, pid: child.pid ?? -1, elapsedMs: Date.now() - started }),
    );
  });
  return withDeadline(done, `child process: ${script.slice(0, 80)}`, ms).catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });
}

function assertSystemError(fn: () => unknown, code: string, syscall: string, path?: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof Error, `expected an Error with code ${code}`);
  const err = caught as NodeJS.ErrnoException;
  assert.is(err.code, code);
  assert.is(err.syscall, syscall);
  assert.is(err.errno, (osConstants.errno as Record<string, number>)[code]);
  if (path === undefined) {
    assert.is(err.path, undefined);
    assert.ok(err.message.startsWith(`${syscall} ${code}`), err.message);
  } else {
    assert.is(err.path, path);
    assert.ok(err.message.startsWith(`${syscall} ${code} ${path}`), err.message);
  }
}

test.after.each(() => {
  for (const waiter of waiters.splice(0)) {
    try {
      waiter.close();
    } catch {
      /* a test callback may throw on Closed; cleanup goes on */
    }
  }
  for (const buffer of buffers.splice(0)) {
    try {
      native.unmap(buffer);
    } catch {
      /* ignore */
    }
  }
  for (const path of paths.splice(0)) {
    try {
      unlinkSync(path);
    } catch {
      /* already gone */
    }
  }
});

// ─── segments ───────────────────────────────────────────────────────────────

test('pageSize is a positive power of two', () => {
  assert.type(native.pageSize, 'number');
  assert.ok(native.pageSize >= 4096);
  assert.is(native.pageSize & (native.pageSize - 1), 0);
});

test('create → write → open: two mappings of one file share the bytes', () => {
  const { path, buffer } = createSegment(8192);
  assert.is(buffer.byteLength, 8192);
  const a = new Uint8Array(buffer);
  assert.ok(a.every((b) => b === 0), 'zero-filled');
  a[0] = 0x5a;
  a[8191] = 0xa5;
  const other = track(native.open(path));
  assert.is(other.byteLength, 8192);
  const b = new Uint8Array(other);
  assert.is(b[0], 0x5a);
  assert.is(b[8191], 0xa5);
  b[100] = 42; // and back
  assert.is(a[100], 42);
  assert.is(statSync(path).size, 8192);
});

test('create sets the mode exactly, whatever the umask', () => {
  const previous = process.umask(0o077); // would strip 0640 down to 0600
  try {
    for (const mode of [0o600, 0o640]) {
      const { path } = createSegment(4096, mode);
      assert.is(statSync(path).mode & 0o7777, mode, `mode ${mode.toString(8)}`);
    }
  } finally {
    process.umask(previous);
  }
});

test('create on an existing path throws EEXIST (open) and leaves the file alone', () => {
  const { path } = createSegment();
  assertSystemError(() => native.create(path, 4096, 0o600), 'EEXIST', 'open', path);
  assert.ok(existsSync(path), 'the existing file was not removed');
});

test('create with a bad size throws EINVAL (ftruncate) and leaves no file', () => {
  for (const size of [0, -1, 1.5]) {
    const path = tmpPath();
    assertSystemError(() => native.create(path, size, 0o600), 'EINVAL', 'ftruncate', path);
    assert.not.ok(existsSync(path));
  }
});

test('open of a missing path throws ENOENT', () => {
  const path = tmpPath();
  assertSystemError(() => native.open(path), 'ENOENT', 'open', path);
});

test('open of an empty file throws ENODATA (mmap)', () => {
  const path = tmpPath();
  writeFileSync(path, '');
  assertSystemError(() => native.open(path), 'ENODATA', 'mmap', path);
});

test('unmap detaches the buffer and is idempotent', () => {
  const { path, buffer } = createSegment();
  const view = new Uint32Array(buffer);
  view[0] = 1;
  native.unmap(buffer);
  assert.is(buffer.byteLength, 0);
  assert.is(view.length, 0);
  assert.is(view[0], undefined);
  native.unmap(buffer); // no-op
  native.unmap(buffer);
  // the file is intact: mapping it again shows the data
  const again = track(native.open(path));
  assert.is(new Uint32Array(again)[0], 1);
});

test('unmap rejects what is not a mapping', () => {
  assert.throws(() => native.unmap(new ArrayBuffer(16)), TypeError);
  assert.throws(() => native.unmap({} as ArrayBuffer), TypeError);
  assert.throws(() => native.unmap(new Uint8Array(4) as unknown as ArrayBuffer), TypeError);
});

test('unlink removes the file; a missing path throws ENOENT', () => {
  const { path } = createSegment();
  native.unlink(path);
  assert.not.ok(existsSync(path));
  assertSystemError(() => native.unlink(path), 'ENOENT', 'unlink', path);
});

test('wrong argument types throw TypeError', () => {
  assert.throws(() => native.create(42 as unknown as string, 4096, 0o600), TypeError);
  assert.throws(() => native.create(tmpPath(), '4096' as unknown as number, 0o600), TypeError);
  assert.throws(() => native.create(tmpPath(), 4096, 0o10000), TypeError);
  assert.throws(() => native.create(tmpPath() + '\0x', 4096, 0o600), TypeError);
  assert.throws(() => native.open(undefined as unknown as string), TypeError);
  assert.throws(() => native.unlink(null as unknown as string), TypeError);
});

// ─── futex ──────────────────────────────────────────────────────────────────

test('futexWake on a word without waiters returns 0', () => {
  const { buffer } = createSegment();
  assert.is(native.futexWake(buffer, 0, 1), 0);
  assert.is(native.futexWake(buffer, 4092, 0x7fffffff), 0);
});

test('futexWake validates the offset', () => {
  const { buffer } = createSegment();
  assert.throws(() => native.futexWake(buffer, 2, 1), RangeError);
  assert.throws(() => native.futexWake(buffer, 4096, 1), RangeError);
  assert.throws(() => native.futexWake(buffer, -4, 1), RangeError);
  assert.throws(() => native.futexWake(buffer, '0' as unknown as number, 1), TypeError);
  assert.throws(() => native.futexWake({} as ArrayBuffer, 0, 1), TypeError);
  native.unmap(buffer);
  assert.throws(() => native.futexWake(buffer, 0, 1), RangeError); // detached: byteLength 0
});

test('createWaiter validates its arguments', () => {
  const { buffer } = createSegment();
  const noop = () => {};
  assert.throws(() => native.createWaiter(new ArrayBuffer(64), 0, noop), TypeError);
  assert.throws(() => native.createWaiter(buffer, 6, noop), RangeError);
  assert.throws(() => native.createWaiter(buffer, 4096, noop), RangeError);
  assert.throws(() => native.createWaiter(buffer, 0, 'nope' as unknown as () => void), TypeError);
  const { waiter } = waiterOn(buffer, 0);
  assert.throws(() => waiter.wait('0' as unknown as number, 10), TypeError);
  assert.throws(() => waiter.wait(0, NaN), TypeError);
  assert.is(waiter.armed, false);
});

test('a waiter is woken by futexWake from the same process', async () => {
  const { buffer } = createSegment();
  const word = new Int32Array(buffer);
  word[4] = 7;
  const { waiter, next } = waiterOn(buffer, 16);
  assert.is(waiter.armed, false);
  waiter.wait(7, -1);
  assert.is(waiter.armed, true);
  assert.is(await wakeUntilWoken(buffer, 16), 1);
  assert.is(await next('Woken'), WaitResult.Woken);
  assert.is(waiter.armed, false);
  // and can be armed again
  waiter.wait(7, -1);
  await wakeUntilWoken(buffer, 16);
  assert.is(await next('Woken again'), WaitResult.Woken);
});

test('a waiter is woken by futexWake from another process', async () => {
  const { path, buffer } = createSegment();
  const { waiter, next } = waiterOn(buffer, 64);
  waiter.wait(0, 10_000);
  const child = runNode(
    `const b = require(process.env.SHMBUS_ADDON);
     const buf = b.open(process.env.SEGMENT);
     const until = Date.now() + 4000;
     let n = 0;
     while ((n = b.futexWake(buf, 64, 1)) === 0 && Date.now() < until) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
     process.stdout.write(String(n));
     b.unmap(buf);`,
    { SEGMENT: path },
  );
  const [result, out] = await Promise.all([next('Woken from another process'), child]);
  assert.is(out.code, 0, out.stderr);
  assert.is(out.stdout, '1');
  assert.is(result, WaitResult.Woken);
});

test('NotEqual when the word does not hold the expected value', async () => {
  const { buffer } = createSegment();
  new Uint32Array(buffer)[0] = 0xffffffff;
  const { waiter, next } = waiterOn(buffer, 0);
  waiter.wait(5, -1);
  assert.is(await next('NotEqual'), WaitResult.NotEqual);
  // -1 and 0xffffffff name the same 32-bit value
  waiter.wait(-1, 20);
  assert.is(await next('TimedOut with -1'), WaitResult.TimedOut);
});

test('TimedOut after a short timeout', async () => {
  const { buffer } = createSegment();
  const { waiter, next } = waiterOn(buffer, 0);
  const started = process.hrtime.bigint();
  waiter.wait(0, 20);
  assert.is(await next('TimedOut'), WaitResult.TimedOut);
  const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
  assert.ok(elapsedMs >= 19, `elapsed ${elapsedMs} ms`);
  assert.is(waiter.armed, false);
  // a zero timeout returns at once
  waiter.wait(0, 0);
  assert.is(await next('TimedOut(0)'), WaitResult.TimedOut);
});

test('a timeout longer than one internal slice (200 ms) is kept', async () => {
  const { buffer } = createSegment();
  const { waiter, next } = waiterOn(buffer, 0);
  const started = Date.now();
  waiter.wait(0, 450);
  assert.is(await next('TimedOut 450'), WaitResult.TimedOut);
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 445 && elapsed < 2000, `elapsed ${elapsed} ms`);
});

test('wait() while armed throws EBUSY; unmap() while armed throws EBUSY', async () => {
  const { buffer } = createSegment();
  const { waiter, next } = waiterOn(buffer, 0);
  waiter.wait(0, -1);
  assertSystemError(() => waiter.wait(0, -1), 'EBUSY', 'futex');
  assertSystemError(() => native.unmap(buffer), 'EBUSY', 'munmap');
  assert.is(buffer.byteLength, 4096, 'still mapped');
  await wakeUntilWoken(buffer, 0);
  assert.is(await next('Woken'), WaitResult.Woken);
  waiter.close();
  native.unmap(buffer);
  assert.is(buffer.byteLength, 0);
});

test('the callback can re-arm the waiter', async () => {
  const { buffer } = createSegment();
  const seen: WaitResult[] = [];
  const done = new Promise<void>((resolvePromise) => {
    const waiter = native.createWaiter(buffer, 0, (result) => {
      seen.push(result);
      if (seen.length < 3) waiter.wait(0, 5);
      else resolvePromise();
    });
    waiters.push(waiter);
    waiter.wait(0, 5);
  });
  await withDeadline(done, 'three timeouts');
  assert.equal(seen, [WaitResult.TimedOut, WaitResult.TimedOut, WaitResult.TimedOut]);
});

test('close() while armed delivers Closed synchronously (never later) and does not hang', async () => {
  const { buffer } = createSegment();
  const { waiter, results } = waiterOn(buffer, 0);
  waiter.wait(0, -1);
  await sleep(20); // let the thread enter FUTEX_WAIT
  const started = Date.now();
  waiter.close();
  assert.ok(Date.now() - started < 1000, 'close() returned promptly');
  assert.equal(results, [WaitResult.Closed]);
  assert.is(waiter.armed, false);
  waiter.close(); // idempotent
  assertSystemError(() => waiter.wait(0, -1), 'EBADF', 'futex');
  await sleep(50);
  assert.equal(results, [WaitResult.Closed], 'nothing after close()');
  native.unmap(buffer); // allowed once closed
});

test('close() of an idle waiter calls nothing', async () => {
  const { buffer } = createSegment();
  const { waiter, results } = waiterOn(buffer, 0);
  waiter.close();
  await sleep(10);
  assert.equal(results, []);
});

test('close() racing the thread entering FUTEX_WAIT never hangs (5000 rounds, in a child)', async () => {
  // close() is synchronous: a hang could not be caught by a deadline in this
  // process, so the stress runs in a child that is killed after the deadline.
  const { path } = createSegment();
  const out = await runNode(
    `const b = require(process.env.SHMBUS_ADDON);
     const buf = b.open(process.env.SEGMENT);
     (async () => {
       let worst = 0;
       for (let i = 0; i < 5000; i++) {
         const results = [];
         const w = b.createWaiter(buf, 0, (r) => results.push(r));
         w.wait(0, -1);
         if (i % 3 === 1) await new Promise((r) => setImmediate(r));
         const t = process.hrtime.bigint();
         w.close();
         worst = Math.max(worst, Number(process.hrtime.bigint() - t) / 1e6);
         if (results.length !== 1 || results[0] !== ${WaitResult.Closed}) throw new Error('round ' + i + ': ' + results);
       }
       process.stdout.write(String(worst));
     })();`,
    { SEGMENT: path },
    [],
    20_000,
  );
  assert.is(out.code, 0, out.stderr);
  const worst = Number(out.stdout);
  assert.ok(worst < 1000, `worst close() took ${worst} ms`);
});

test('an armed waiter keeps the process alive; an idle one does not', async () => {
  const { path } = createSegment();
  const armed = await runNode(
    `const b = require(process.env.SHMBUS_ADDON);
     const buf = b.open(process.env.SEGMENT);
     const w = b.createWaiter(buf, 0, (r) => { process.stdout.write('result ' + r); w.close(); });
     w.wait(0, 150);`,
    { SEGMENT: path },
  );
  assert.is(armed.code, 0, armed.stderr);
  assert.is(armed.stdout, `result ${WaitResult.TimedOut}`);
  assert.ok(armed.elapsedMs >= 150, `exited after ${armed.elapsedMs} ms`);

  const idle = await runNode(
    `const b = require(process.env.SHMBUS_ADDON);
     const buf = b.open(process.env.SEGMENT);
     globalThis.keep = b.createWaiter(buf, 0, () => process.stdout.write('unexpected'));
     process.stdout.write('idle');`,
    { SEGMENT: path },
  );
  assert.is(idle.code, 0, idle.stderr);
  assert.is(idle.stdout, 'idle');

  const closedWhileArmed = await runNode(
    `const b = require(process.env.SHMBUS_ADDON);
     const buf = b.open(process.env.SEGMENT);
     const w = b.createWaiter(buf, 0, (r) => process.stdout.write('result ' + r));
     w.wait(0, -1);
     setTimeout(() => w.close(), 20);`,
    { SEGMENT: path },
  );
  assert.is(closedWhileArmed.code, 0, closedWhileArmed.stderr);
  assert.is(closedWhileArmed.stdout, `result ${WaitResult.Closed}`);
});

test('waiters collected without close() do not crash', async () => {
  const { path } = createSegment();
  const out = await runNode(
    `const b = require(process.env.SHMBUS_ADDON);
     (async () => {
       let buf = b.open(process.env.SEGMENT);
       for (let i = 0; i < 50; i++) b.createWaiter(buf, 4 * (i % 8), () => {});
       // armed and dropped: stays alive until its callback ran
       await new Promise((resolve) => b.createWaiter(buf, 0, resolve).wait(0, 30));
       buf = null;
       for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)); }
       process.stdout.write('ok');
     })();`,
    { SEGMENT: path },
    ['--expose-gc'],
  );
  assert.is(out.code, 0, out.stderr);
  assert.is(out.signal, null);
  assert.is(out.stdout, 'ok');
});

test('process.exit() with an armed waiter exits cleanly', async () => {
  const { path } = createSegment();
  const out = await runNode(
    `const b = require(process.env.SHMBUS_ADDON);
     const buf = b.open(process.env.SEGMENT);
     b.createWaiter(buf, 0, () => {}).wait(0, -1);
     setTimeout(() => process.exit(3), 20);`,
    { SEGMENT: path },
  );
  assert.is(out.code, 3, out.stderr);
  assert.is(out.signal, null);
});

test('worker.terminate() with armed waiters is prompt and leaves no thread behind', async () => {
  const { path } = createSegment();
  const out = await runNode(
    `const { Worker } = require('node:worker_threads');
     const b = require(process.env.SHMBUS_ADDON);
     const code = \`
       const { parentPort, workerData } = require('node:worker_threads');
       const b = require(workerData.addon);
       const buf = b.open(workerData.path);
       for (let i = 0; i < 4; i++) b.createWaiter(buf, 4 * i, () => {}).wait(0, -1);
       parentPort.postMessage('armed');\`;
     (async () => {
       const threadsBefore = require('node:fs').readdirSync('/proc/self/task').length;
       let worst = 0;
       for (let i = 0; i < 5; i++) {
         const w = new Worker(code, { eval: true, workerData: { addon: process.env.SHMBUS_ADDON, path: process.env.SEGMENT } });
         await new Promise((resolve) => w.once('message', resolve));
         const t = Date.now();
         await w.terminate();
         worst = Math.max(worst, Date.now() - t);
       }
       const threadsAfter = require('node:fs').readdirSync('/proc/self/task').length;
       const buf = b.open(process.env.SEGMENT);
       // no waiter thread is left parked on the words
       process.stdout.write(JSON.stringify({ worst, threadsBefore, threadsAfter, parked: b.futexWake(buf, 0, 100) + b.futexWake(buf, 12, 100) }));
     })();`,
    { SEGMENT: path },
    [],
    20_000,
  );
  assert.is(out.code, 0, out.stderr);
  const result = JSON.parse(out.stdout) as { worst: number; threadsBefore: number; threadsAfter: number; parked: number };
  assert.is(result.parked, 0);
  assert.ok(result.threadsAfter <= result.threadsBefore + 1, out.stdout);
  assert.ok(result.worst < 1000, out.stdout);
});

test('an exception thrown by a callback reaches uncaughtException; the waiter stays usable', async () => {
  const { path } = createSegment();
  const out = await runNode(
    `const b = require(process.env.SHMBUS_ADDON);
     const buf = b.open(process.env.SEGMENT);
     const seen = [];
     const w = b.createWaiter(buf, 0, (r) => { throw new Error('boom ' + r); });
     process.on('uncaughtException', (err) => {
       seen.push(err.message + ' armed=' + w.armed);
       if (seen.length < 2) return w.wait(0, 5);
       w.close();
       const w2 = b.createWaiter(buf, 4, (r) => { throw new Error('from close ' + r); });
       w2.wait(0, -1);
       try { w2.close(); } catch (e) { seen.push(e.message + ' armed=' + w2.armed); }
       process.stdout.write(JSON.stringify(seen));
     });
     w.wait(0, 5);`,
    { SEGMENT: path },
  );
  assert.is(out.code, 0, out.stderr);
  assert.not.match(out.stderr, /DEP0168/);
  assert.equal(JSON.parse(out.stdout), [
    `boom ${WaitResult.TimedOut} armed=false`,
    `boom ${WaitResult.TimedOut} armed=false`,
    `from close ${WaitResult.Closed} armed=false`,
  ]);
});

// ─── processStartTime ───────────────────────────────────────────────────────

test('processStartTime of this process is positive and stable', () => {
  const first = native.processStartTime(process.pid);
  assert.ok(Number.isInteger(first) && first > 0, String(first));
  assert.is(native.processStartTime(process.pid), first);
  assert.ok(native.processStartTime(1) >= 0); // init exists
});

test('processStartTime of an exited and reaped process is -1', async () => {
  const out = await runNode('');
  assert.is(out.code, 0);
  // 'close' follows 'exit', which libuv emits after waitpid() reaped the child
  assert.is(native.processStartTime(out.pid), -1);
});

test('processStartTime rejects what is not a positive integer', () => {
  for (const pid of [0, -1, 1.5, NaN, Infinity, 2 ** 40, '1', undefined]) {
    assert.throws(() => native.processStartTime(pid as number), TypeError, String(pid));
  }
});

test('udpDoorbell sends one datagram to the loopback port now, before the caller yields', async () => {
  const { createSocket } = await import('node:dgram');
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  try {
    const port = socket.address().port;
    const got = new Promise<Buffer>((resolve) => socket.once('message', (msg) => resolve(msg)));
    assert.is(native.udpDoorbell(port, 0x44), true);
    // Busy for 50 ms without yielding: a dgram send would still be waiting in its next tick.
    const until = Date.now() + 50;
    while (Date.now() < until);
    const msg = await Promise.race([got, new Promise<Buffer>((_, reject) => setTimeout(() => reject(new Error('no datagram within 5 s')), 5000))]);
    assert.equal([...msg], [0x44]);
    assert.throws(() => native.udpDoorbell(0, 1), RangeError);
    assert.throws(() => native.udpDoorbell(70000, 1), RangeError);
    assert.throws(() => native.udpDoorbell(port, 256), RangeError);
  } finally {
    socket.close();
  }
});

test.run();
