/**
 * Clean exits and no stale state (issue 8, section 2): an open reclaims the
 * directory entries of dead owners before it reports the directory full, and
 * a Bus closes itself on SIGTERM / SIGINT when the application does not
 * handle them, then dies of the signal as the process would have.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Bus, isBusError, type BusOptions } from '../src/index';
import { Directory } from '../src/directory';
import { listensToSignals } from '../src/lifecycle';
import { DOORBELL_FUTEX, ENTRY_FLAG_RELAY, ENTRY_OWNER_PID_OFFSET, ENTRY_OWNER_START_TIME_OFFSET, SEGMENT_KIND_DIRECTORY, directoryFileName, entryOffset, inboxFileName } from '../src/layout';
import { Segment, processStartTime } from '../src/segment';
import { inspectNamespace } from '../src/stat';
import { cleanupAll, registerCleanup, shmDir, spawnChild, uniqueNamespace, type Child } from './_helpers';

/** A namespace whose directory has `entries` entries (created here, before any endpoint). */
function context(entries = 4) {
  const dir = shmDir();
  const ns = uniqueNamespace();
  const directory = Directory.open({ dir, namespace: ns, entryCount: entries, mode: 0o600, lockTimeoutMs: 2000 });
  registerCleanup(() => directory.close());
  const openSync = (name: string, extra: Partial<BusOptions> = {}): Bus => {
    const bus = Bus.openSync({ name, namespace: ns, dir, ...extra });
    registerCleanup(() => bus.closeSync());
    return bus;
  };
  return { dir, ns, openSync, directory };
}

async function owners(dir: string, ns: string, names: readonly string[]): Promise<Child[]> {
  const children = names.map((name) => spawnChild('owner', { dir, ns, name }));
  for (const c of children) await c.line(/^ready$/);
  return children;
}

async function killAll(children: readonly Child[]): Promise<void> {
  for (const c of children) c.process.kill('SIGKILL');
  for (const c of children) await c.exited();
}

/** Rewrite the start time recorded for `pid`'s entry: its pid now looks reused by another process. */
function forgeReusedPid(dir: string, ns: string, pid: number): void {
  const segment = Segment.attach(join(dir, directoryFileName(ns)), SEGMENT_KIND_DIRECTORY);
  try {
    const index = [...Array(4).keys()].find((i) => segment.i32[(entryOffset(i) + ENTRY_OWNER_PID_OFFSET) / 4] === pid);
    assert.ok(index !== undefined, `pid ${pid} owns an entry`);
    segment.u32[(entryOffset(index) + ENTRY_OWNER_START_TIME_OFFSET) / 4] = (processStartTime(pid) + 1) >>> 0;
  } finally {
    segment.unmap();
  }
}

function expectFull(open: () => unknown): void {
  try {
    open();
    assert.unreachable('expected ERR_SHMBUS_DIRECTORY_FULL');
  } catch (err) {
    assert.ok(isBusError(err, 'ERR_SHMBUS_DIRECTORY_FULL'), String(err));
  }
}

// ---------------------------------------------------------------------------

const reclaim = suite('exits: an open reclaims the entries of dead owners');
reclaim.after.each(cleanupAll);

reclaim('4 entries, 4 owners killed with SIGKILL: the next opens succeed, one reclaimed entry each, their inboxes removed', async () => {
  const { dir, ns, openSync } = context();
  const names = ['d0', 'd1', 'd2', 'd3'];
  await killAll(await owners(dir, ns, names));
  const report = inspectNamespace(dir, ns)!;
  assert.equal(report.endpoints.map((e) => [e.name, e.alive]).sort(), names.map((n) => [n, false]), 'four DEAD entries');
  const fifth = await Bus.open({ name: 'fifth', namespace: ns, dir });
  registerCleanup(() => fifth.closeSync());
  assert.is(inspectNamespace(dir, ns)!.endpoints.filter((e) => !e.alive).length, 3, 'one entry reclaimed, no more');
  for (const name of ['sixth', 'seventh', 'eighth']) openSync(name);
  for (const name of names) assert.not.ok(existsSync(join(dir, inboxFileName(ns, name))), `${name}'s inbox removed`);
  assert.equal(inspectNamespace(dir, ns)!.endpoints.map((e) => e.alive), [true, true, true, true]);
  expectFull(() => openSync('ninth'));
});

reclaim('a live owner is never reclaimed; an owner whose pid was reused (start time differs) is', async () => {
  const { dir, ns, openSync } = context();
  const [live, reused, killed, kept] = await owners(dir, ns, ['live', 'reused', 'killed', 'kept']);
  registerCleanup(() => {
    for (const c of [live, reused, kept]) c!.process.kill('SIGKILL');
  });
  live!.process.kill('SIGSTOP');
  reused!.process.kill('SIGSTOP');
  forgeReusedPid(dir, ns, reused!.process.pid!);
  await killAll([killed!]);
  openSync('new1');
  openSync('new2');
  expectFull(() => openSync('new3'));
  const alive = inspectNamespace(dir, ns)!.endpoints.map((e) => e.name).sort();
  assert.equal(alive, ['kept', 'live', 'new1', 'new2']);
  assert.ok(existsSync(join(dir, inboxFileName(ns, 'live'))), 'the live owner keeps its inbox');
});

reclaim("the relay's entry is not reclaimed even when its owner is dead (its inbox holds frames in transit)", async () => {
  const { dir, ns, openSync, directory } = context();
  const [victim] = await owners(dir, ns, ['victim']);
  const deadPid = victim!.process.pid!;
  await killAll([victim!]);
  // Two entries taken: the dead victim's, and a relay's that this test forges as dead.
  const relay = directory.register({ name: '@relay', flags: ENTRY_FLAG_RELAY, doorbellKind: DOORBELL_FUTEX, doorbellPort: 0, slotSize: 256, capacity: 16 }, () => {});
  const segment = Segment.attach(directory.path, SEGMENT_KIND_DIRECTORY);
  segment.i32[(entryOffset(relay.index) + ENTRY_OWNER_PID_OFFSET) / 4] = deadPid;
  segment.unmap();
  openSync('a');
  openSync('b');
  openSync('c');
  expectFull(() => openSync('d'));
  const names = inspectNamespace(dir, ns)!.endpoints.map((e) => e.name).sort();
  assert.equal(names, ['@relay', 'a', 'b', 'c']);
});

// ---------------------------------------------------------------------------

const signals = suite('exits: SIGTERM and SIGINT');
signals.after.each(cleanupAll);

/** A namespace the test keeps alive with its own bus, and a child `target` in it. */
async function target(extra: Record<string, unknown> = {}): Promise<{ dir: string; ns: string; child: Child }> {
  const { dir, ns, openSync } = context();
  openSync('observer');
  const child = spawnChild('signal-target', { dir, ns, name: 'target', ...extra });
  await child.line(/^ready$/);
  assert.ok(existsSync(join(dir, inboxFileName(ns, 'target'))));
  return { dir, ns, child };
}

function endpoints(dir: string, ns: string): Array<[string, boolean]> {
  return inspectNamespace(dir, ns)!.endpoints.map((e) => [e.name, e.alive]);
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  signals(`${signal} with no handler of the application: the bus closes, and the process still dies of ${signal}`, async () => {
    const { dir, ns, child } = await target();
    child.process.kill(signal);
    assert.equal(await child.exited(5000), { code: null, signal }, child.stderr());
    assert.ok(child.lines.includes('close event unread 0'), child.lines.join('|'));
    assert.equal(endpoints(dir, ns), [['observer', true]], 'no DEAD entry left');
    assert.not.ok(existsSync(join(dir, inboxFileName(ns, 'target'))), 'no inbox file left');
  });
}

for (const ownHandler of ['before', 'after', 'once-after', 'prepend-once-after'] as const) {
  signals(`an application with its own SIGTERM listener (added ${ownHandler.replace(/-/g, ' ')} Bus.open) keeps control`, async () => {
    const { dir, ns, child } = await target({ ownHandler });
    child.process.kill('SIGTERM');
    await child.line(/^handled 1$/);
    await new Promise((r) => setTimeout(r, 300));
    assert.is(child.process.exitCode, null, 'still running');
    assert.is(child.process.signalCode, null, 'not killed');
    assert.not.ok(child.lines.some((l) => l.startsWith('close event')), 'the bus did not close');
    assert.equal(endpoints(dir, ns), [['observer', true], ['target', true]]);
    child.process.kill('SIGKILL');
    await child.exited();
  });
}

signals('handleSignals: false leaves SIGTERM alone: the process dies of it without closing (a DEAD entry, reclaimable)', async () => {
  const { dir, ns, child } = await target({ handleSignals: false });
  child.process.kill('SIGTERM');
  assert.equal(await child.exited(5000), { code: null, signal: 'SIGTERM' });
  assert.equal(endpoints(dir, ns), [['observer', true], ['target', false]]);
  assert.ok(existsSync(join(dir, inboxFileName(ns, 'target'))));
});

signals('the signal listeners exist only while a bus that handles signals is open', async () => {
  const { openSync } = context();
  const before = { term: process.listenerCount('SIGTERM'), int: process.listenerCount('SIGINT') };
  assert.not.ok(listensToSignals());
  const quiet = openSync('quiet', { handleSignals: false });
  assert.not.ok(listensToSignals(), 'handleSignals: false installs nothing');
  assert.is(process.listenerCount('SIGTERM'), before.term);
  const a = openSync('a');
  const b = openSync('b');
  assert.ok(listensToSignals());
  assert.is(process.listenerCount('SIGTERM'), before.term + 1);
  assert.is(process.listenerCount('SIGINT'), before.int + 1);
  a.closeSync();
  assert.ok(listensToSignals(), 'b still open');
  b.closeSync();
  assert.not.ok(listensToSignals());
  assert.equal({ term: process.listenerCount('SIGTERM'), int: process.listenerCount('SIGINT') }, before);
  quiet.closeSync();
});

reclaim.run();
signals.run();
