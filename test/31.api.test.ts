/**
 * The API as a TypeScript/Node user meets it (issue 8, section 1): typed
 * events, cancellation with AbortSignal, disposal (`await using`), an open
 * that never blocks the event loop, frame.text() / frame.json(), and
 * bus.waitFor(name).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus, BusAbortError, isBusError, type BusOptions, type Frame } from '../src/index';
import { inboxFileName } from '../src/layout';
import { cleanupAll, deadline, registerCleanup, shmDir, spawnChild, uniqueNamespace } from './_helpers';

const ROOT = join(__dirname, '..');

function context() {
  const dir = shmDir();
  const ns = uniqueNamespace();
  const open = async (name: string, extra: Partial<BusOptions> = {}): Promise<Bus> => {
    const bus = await Bus.open({ name, namespace: ns, dir, ...extra });
    registerCleanup(() => bus.closeSync());
    return bus;
  };
  return { dir, ns, open };
}

/** The error `promise` rejects with (fails if it resolves). */
async function rejection(promise: Promise<unknown>, what: string, ms = 5000): Promise<Error> {
  const outcome = await deadline(
    promise.then(
      (value) => ({ value }),
      (err: unknown) => ({ err }),
    ),
    ms,
    what,
  );
  if (!('err' in outcome)) assert.unreachable(`${what}: resolved with ${String(outcome.value)}`);
  return (outcome as { err: Error }).err;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function parked(bus: Bus): Promise<void> {
  await deadline(
    (async () => {
      while (!bus.stats().parked) await sleep(1);
    })(),
    5000,
    'the receiver parking',
  );
}

// ---------------------------------------------------------------------------

const types = suite('api: types');
types.after.each(cleanupAll);

types('the typed events and options compile as documented, and a misspelt event does not (tsc --noEmit)', async () => {
  const file = join(ROOT, 'test', '_types', 'bus-api.ts');
  const source = readFileSync(file, 'utf8');
  assert.match(source, /@ts-expect-error[^\n]*\n\s*bus\.on\('fram',/, 'the misspelt-event line is there, under @ts-expect-error');
  const tmp = mkdtempSync(join(tmpdir(), 'shmbus-types-'));
  registerCleanup(() => rmSync(tmp, { recursive: true, force: true }));
  const config = join(tmp, 'tsconfig.json');
  writeFileSync(config, JSON.stringify({ extends: join(ROOT, 'tsconfig.json'), compilerOptions: { noEmit: true, typeRoots: [join(ROOT, 'node_modules', '@types')] }, files: [file], include: [] }));
  const result = await new Promise<{ code: number | null; out: string }>((resolve) => {
    execFile(join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', config], { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, out: stdout + stderr });
    });
  });
  assert.is(result.code, 0, result.out);
  assert.is(result.out.trim(), '');
});

// ---------------------------------------------------------------------------

const events = suite('api: events');
events.after.each(cleanupAll);

events("'close' is emitted once, with the unread count; frame listeners get Frames with text()", async () => {
  const { open } = context();
  const a = await open('a');
  const b = await open('b');
  const closes: number[] = [];
  b.on('close', ({ unread }) => closes.push(unread));
  const got = new Promise<Frame>((resolve) => b.once('frame', resolve));
  a.sendToLocal('b', 'héllo');
  const frame = await deadline(got, 5000, 'a frame event');
  assert.is(frame.text(), 'héllo');
  a.sendToLocal('b', 'unread');
  await deadline(
    (async () => {
      while (b.stats().depth === 0) await sleep(1);
    })(),
    5000,
    'the second frame waiting',
  );
  await b.close();
  await b.close();
  assert.equal(closes, [1]);
});

events("removing the last 'frame' listener stops the parked receiver at once", async () => {
  const { open } = context();
  const a = await open('a');
  const b = await open('b');
  const listener = () => {};
  b.on('frame', listener);
  await parked(b);
  b.off('frame', listener);
  await deadline(
    (async () => {
      while (b.stats().parked) await sleep(1);
    })(),
    1000,
    'the receiver unparking',
  );
  a.sendToLocal('b', 'kept');
  await sleep(10);
  assert.is(b.recvFromLocal()!.text(), 'kept', 'no receiver took it');
});

// ---------------------------------------------------------------------------

events('idleSpinUs: a receiver polls that long after the inbox empties before it parks; 0 parks at once', async () => {
  const { open } = context();
  const a = await open('a');
  const spinning = await open('spinning', { idleSpinUs: 400_000 });
  const parking = await open('parking');
  const received: Record<string, string[]> = { spinning: [], parking: [] };
  const drain = async (bus: Bus, into: string[]) => {
    for await (const f of bus.frames()) into.push(f.text());
  };
  void drain(spinning, received.spinning!);
  void drain(parking, received.parking!);
  const sendAndWait = async (to: 'spinning' | 'parking', text: string) => {
    a.sendToLocal(to, text);
    await deadline(
      (async () => {
        while (!received[to]!.includes(text)) await sleep(1);
      })(),
      5000,
      `${text} received by ${to}`,
    );
  };
  await sendAndWait('spinning', 's1');
  await sendAndWait('parking', 'p1');
  const before = { spinning: spinning.stats().parks, parking: parking.stats().parks };
  await sleep(100); // within the spin
  assert.is(spinning.stats().parks, before.spinning, 'no park while it polls');
  assert.ok(parking.stats().parks > before.parking || parking.stats().parked, 'idleSpinUs 0: parked as soon as the inbox emptied');
  await sendAndWait('spinning', 's2'); // picked up by polling, no wake-up needed
  await sleep(700); // past the spin
  assert.ok(spinning.stats().parks > before.spinning, 'parked once the spin was over');
  assert.ok(spinning.stats().parked, 'parked now');
  await sendAndWait('spinning', 's3'); // and the doorbell still wakes it
  assert.equal(received.spinning, ['s1', 's2', 's3']);
});

const frames = suite('api: frames() ends at once');
frames.after.each(cleanupAll);

frames('return() on a parked iterator settles at once; its pending next() is done, and frames after it stay in the inbox', async () => {
  const { open } = context();
  const a = await open('a');
  const b = await open('b');
  const it = b.frames();
  const pending = it.next();
  await parked(b);
  const started = performance.now();
  assert.equal(await deadline(it.return(), 50, 'return()'), { done: true, value: undefined });
  assert.equal(await deadline(pending, 50, 'the parked next()'), { done: true, value: undefined });
  assert.ok(performance.now() - started < 50);
  assert.not.ok(b.stats().parked, 'no longer parked');
  a.sendToLocal('b', 'after');
  assert.equal(await it.next(), { done: true, value: undefined });
  assert.is(b.recvFromLocal()!.text(), 'after', 'an ended iterator takes nothing');
});

frames('break out of for-await while parked ends the loop; another iterator still receives', async () => {
  const { open } = context();
  const a = await open('a');
  const b = await open('b');
  a.sendToLocal('b', 'first');
  const got: string[] = [];
  const controller = new AbortController();
  const loop = (async () => {
    for await (const f of b.frames({ signal: controller.signal })) got.push(f.text());
  })();
  await parked(b);
  controller.abort(new Error('stop'));
  const err = await rejection(loop, 'the loop ending', 1000);
  assert.instance(err, BusAbortError);
  assert.is(err.name, 'AbortError');
  assert.is((err as BusAbortError).code, 'ERR_SHMBUS_ABORTED');
  assert.is((err.cause as Error).message, 'stop');
  assert.equal(got, ['first']);
  const again = (async () => {
    for await (const f of b.frames()) return f.text();
    return null;
  })();
  await parked(b);
  a.sendToLocal('b', 'second');
  assert.is(await deadline(again, 5000, 'a second iterator'), 'second');
});

frames('an already aborted signal rejects the first next(); later ones are done; a non-signal is refused', async () => {
  const { open } = context();
  const b = await open('b');
  b.sendToLocal('b', 'waiting');
  const it = b.frames({ signal: AbortSignal.abort() });
  const err = await rejection(it.next(), 'next()');
  assert.ok(isBusError(err, 'ERR_SHMBUS_ABORTED'), String(err));
  assert.equal(await it.next(), { done: true, value: undefined });
  assert.is(b.recvFromLocal()!.text(), 'waiting');
  try {
    b.frames({ signal: 'soon' as unknown as AbortSignal });
    assert.unreachable('a string is not a signal');
  } catch (e) {
    assert.ok(isBusError(e, 'ERR_SHMBUS_INVALID_OPTION'), String(e));
  }
});

for (const end of ['return', 'abort'] as const) {
  frames(`a process whose parked iterator ends by ${end === 'return' ? 'return()' : 'its signal'} exits by itself, and its exit unregisters the bus`, async () => {
    const dir = shmDir();
    const ns = uniqueNamespace();
    const child = spawnChild('frames-return', { dir, ns, name: 'parker', end });
    await child.line(/^parked$/);
    const ended = await child.line(/^ended /);
    const m = /^ended ([\d.]+) ms (.*)$/.exec(ended)!;
    // Settled at once: the old generator settled only when a frame came (never, here). Generous for a loaded machine.
    assert.ok(Number(m[1]) < 1000, ended);
    assert.is(m[2], end === 'return' ? 'done true' : 'rejected ERR_SHMBUS_ABORTED');
    await child.line(/^then done true$/);
    assert.equal(await child.exited(3000), { code: 0, signal: null }, child.stderr());
    assert.not.ok(existsSync(join(dir, inboxFileName(ns, 'parker'))), 'the exit hook removed the inbox');
  });
}

// ---------------------------------------------------------------------------

const disposal = suite('api: disposal');
disposal.after.each(cleanupAll);

disposal('await using closes the bus at the end of the scope, also when it throws', async () => {
  const { dir, ns } = context();
  let seen: Bus | null = null;
  {
    await using bus = await Bus.open({ name: 'scoped', namespace: ns, dir });
    seen = bus;
    assert.ok(existsSync(join(dir, inboxFileName(ns, 'scoped'))));
  }
  assert.ok(seen.isClosed);
  assert.not.ok(existsSync(join(dir, inboxFileName(ns, 'scoped'))));
  let inner: Bus | null = null;
  try {
    using bus = Bus.openSync({ name: 'sync', namespace: ns, dir });
    inner = bus;
    throw new Error('boom');
  } catch (err) {
    assert.is((err as Error).message, 'boom');
  }
  assert.ok(inner!.isClosed, 'using + openSync closes on the way out of a throw');
  assert.is(typeof Bus.prototype[Symbol.asyncDispose], 'function');
});

disposal('await using on a frames() iterator ends it at the end of the scope, even while parked', async () => {
  const { open } = context();
  const b = await open('b');
  let pending: Promise<IteratorResult<Frame, undefined>> | null = null;
  {
    await using it = b.frames();
    pending = it.next();
    await parked(b);
  }
  assert.equal(await deadline(pending, 1000, 'the parked next()'), { done: true, value: undefined });
  assert.not.ok(b.isClosed, 'ending an iterator does not close the bus');
});

// ---------------------------------------------------------------------------

const opening = suite('api: Bus.open waits without blocking');
opening.after.each(cleanupAll);

/** Count timer ticks (every 5 ms) while `work` runs. */
async function ticksDuring<T>(work: () => Promise<T>): Promise<{ ticks: number; ms: number; outcome: { value: T } | { err: unknown } }> {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const started = performance.now();
  try {
    const outcome = await work().then(
      (value) => ({ value }),
      (err: unknown) => ({ err }),
    );
    return { ticks, ms: performance.now() - started, outcome };
  } finally {
    clearInterval(timer);
  }
}

opening('while another process holds the directory lock for 400 ms, timers keep firing during await Bus.open', async () => {
  const { dir, ns, open } = context();
  await open('first');
  const holder = spawnChild('lock-holder', { dir, ns, name: 'holder', holdMs: 400 });
  await holder.line(/^locked$/);
  const { ticks, ms, outcome } = await ticksDuring(() => open('second'));
  assert.ok('value' in outcome, String((outcome as { err: unknown }).err));
  assert.ok(ms > 100, `open waited for the lock (${ms.toFixed(0)} ms)`);
  // A blocking wait lets no timer fire at all (0 ticks); a 5 ms timer fires ~60 times in 300 ms.
  assert.ok(ticks >= 5, `${ticks} ticks of a 5 ms timer in ${ms.toFixed(0)} ms`);
  await holder.line(/^released$/);
  assert.is((outcome as { value: Bus }).value.name, 'second');
});

opening('a lock held past lockTimeoutMs rejects with ERR_SHMBUS_LOCK_TIMEOUT, also without blocking; openSync still waits in place', async () => {
  const { dir, ns, open } = context();
  await open('first');
  const holder = spawnChild('lock-holder', { dir, ns, name: 'holder', holdMs: 600 });
  await holder.line(/^locked$/);
  const { ticks, outcome } = await ticksDuring(() => open('late', { lockTimeoutMs: 100 }));
  assert.ok('err' in outcome && isBusError(outcome.err, 'ERR_SHMBUS_LOCK_TIMEOUT'), String((outcome as { err?: unknown }).err));
  assert.ok(ticks >= 3, `${ticks} ticks`);
  await holder.line(/^released$/);
  const again = spawnChild('lock-holder', { dir, ns, name: 'holder', holdMs: 500 });
  await again.line(/^locked$/);
  const started = performance.now();
  const sync = Bus.openSync({ name: 'sync', namespace: ns, dir });
  registerCleanup(() => sync.closeSync());
  assert.ok(performance.now() - started > 50, 'openSync blocked until the lock was free');
  assert.not.ok(sync.isClosed);
});

// ---------------------------------------------------------------------------

const convenience = suite('api: frame.text(), frame.json(), waitFor');
convenience.after.each(cleanupAll);

convenience('text() decodes UTF-8 and json() parses it; a payload that is not JSON is ERR_SHMBUS_INVALID_JSON', async () => {
  const { open } = context();
  const a = await open('a');
  const b = await open('b');
  const value = { price: 101.25, tags: ['é', '€', '𝄞'], nested: { ok: true } };
  a.sendToLocal('b', JSON.stringify(value));
  a.sendToLocal('b', new TextEncoder().encode('{"half": '));
  const it = b.frames();
  const first = (await it.next()).value as Frame;
  assert.equal(first.json(), value);
  assert.is(first.text(), JSON.stringify(value));
  const second = (await it.next()).value as Frame;
  assert.is(second.text(), '{"half": ');
  try {
    second.json();
    assert.unreachable('not JSON');
  } catch (err) {
    assert.ok(isBusError(err, 'ERR_SHMBUS_INVALID_JSON'), String(err));
    assert.instance((err as Error).cause, SyntaxError);
  }
  await it.return();
});

convenience('waitFor resolves at once for a registered name, and as soon as a late one registers', async () => {
  const { open } = context();
  const a = await open('a');
  await deadline(a.waitFor('a'), 50, 'waitFor of a registered name');
  let registeredAt = 0;
  const waiting = a.waitFor('late', { timeoutMs: 5000 }).then(() => performance.now());
  setTimeout(() => {
    void open('late').then(() => {
      registeredAt = performance.now();
    });
  }, 100);
  const resolvedAt = await deadline(waiting, 5000, 'waitFor');
  assert.ok(registeredAt > 0 && resolvedAt >= registeredAt, 'not before the registration');
  assert.ok(resolvedAt - registeredAt < 500, `resolved ${(resolvedAt - registeredAt).toFixed(0)} ms after it`);
  assert.ok(a.sendToLocal('late', 'now it is there'));
});

convenience('waitFor waits for another process, and a dead owner does not count', async () => {
  const { dir, ns, open } = context();
  const a = await open('a');
  const ghost = spawnChild('owner', { dir, ns, name: 'ghost' });
  await ghost.line(/^ready$/);
  ghost.process.kill('SIGKILL');
  await ghost.exited();
  const err = await rejection(a.waitFor('ghost', { timeoutMs: 100 }), 'waitFor a dead owner');
  assert.ok(isBusError(err, 'ERR_SHMBUS_WAIT_TIMEOUT'), String(err));
  const waiting = a.waitFor('svc', { timeoutMs: 10_000 });
  const svc = spawnChild('owner', { dir, ns, name: 'svc' });
  await deadline(waiting, 10_000, 'waitFor a child registering');
  await svc.line(/^ready$/);
});

convenience('waitFor rejects with stable codes: timeout, abort, close, bad arguments', async () => {
  const { open } = context();
  const a = await open('a');
  const started = performance.now();
  const timeout = await rejection(a.waitFor('never', { timeoutMs: 80 }), 'timeout');
  const elapsed = performance.now() - started;
  assert.ok(isBusError(timeout, 'ERR_SHMBUS_WAIT_TIMEOUT'), String(timeout));
  assert.ok(elapsed >= 75 && elapsed < 1000, `${elapsed.toFixed(0)} ms`);
  const controller = new AbortController();
  const aborted = a.waitFor('never', { timeoutMs: 10_000, signal: controller.signal });
  setTimeout(() => controller.abort('changed my mind'), 20);
  const abortErr = await rejection(aborted, 'abort', 1000);
  assert.ok(isBusError(abortErr, 'ERR_SHMBUS_ABORTED'), String(abortErr));
  assert.is(abortErr.cause, 'changed my mind');
  assert.ok(isBusError(await rejection(a.waitFor('never', { signal: AbortSignal.abort() }), 'pre-aborted'), 'ERR_SHMBUS_ABORTED'));
  assert.ok(isBusError(await rejection(a.waitFor('bad/name'), 'bad name'), 'ERR_SHMBUS_INVALID_OPTION'));
  assert.ok(isBusError(await rejection(a.waitFor('x', { timeoutMs: -1 }), 'bad timeout'), 'ERR_SHMBUS_INVALID_OPTION'));
  const closing = a.waitFor('never', { timeoutMs: 10_000 });
  setTimeout(() => a.closeSync(), 20);
  assert.ok(isBusError(await rejection(closing, 'close', 1000), 'ERR_SHMBUS_CLOSED'));
  assert.ok(isBusError(await rejection(a.waitFor('a'), 'closed bus'), 'ERR_SHMBUS_CLOSED'));
});

types.run();
events.run();
frames.run();
disposal.run();
opening.run();
convenience.run();
