import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Bus, type BusOptions } from '../src/index';
import { FrameView } from '../src/ring';
import { VERSION_OFFSET, INBOX_CAPACITY_OFFSET, directoryFileName, inboxFileName } from '../src/layout';
import { cleanupAll, deadline, filesIn, shmDir, uniqueNamespace } from './_helpers';

/** Assert that `fn` throws (or rejects with) a BusError of `code`. */
async function rejects(fn: () => unknown, code: string): Promise<Error> {
  try {
    await fn();
  } catch (err) {
    assert.is((err as { code?: string }).code, code, `expected ${code}, got ${String(err)}`);
    return err as Error;
  }
  assert.unreachable(`expected ${code}`);
  throw new Error('unreachable');
}

function context() {
  const dir = shmDir();
  const namespace = uniqueNamespace();
  const buses: Bus[] = [];
  const open = async (name: string, extra: Partial<BusOptions> = {}) => {
    const bus = await Bus.open({ name, namespace, dir, ...extra });
    buses.push(bus);
    return bus;
  };
  const closeAll = async () => {
    for (const bus of buses) await bus.close();
  };
  return { dir, namespace, open, closeAll };
}

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

const lifecycle = suite('bus: lifecycle');
lifecycle.after.each(cleanupAll);

lifecycle('creates the directory and an inbox, and removes both on the last close', async () => {
  const { dir, namespace, open } = context();
  const a = await open('a');
  const b = await open('b');
  assert.equal(filesIn(dir), [inboxFileName(namespace, 'a'), inboxFileName(namespace, 'b'), directoryFileName(namespace)].sort());
  await a.close();
  assert.equal(filesIn(dir), [inboxFileName(namespace, 'b'), directoryFileName(namespace)].sort());
  await b.close();
  assert.equal(filesIn(dir), []);
});

lifecycle('close is idempotent and later calls fail with ERR_SHMBUS_CLOSED', async () => {
  const { open } = context();
  const a = await open('a');
  assert.equal(await a.close(), { unread: 0 });
  assert.equal(await a.close(), { unread: 0 });
  await rejects(() => a.sendToLocal('a', bytes('x')), 'ERR_SHMBUS_CLOSED');
  await rejects(() => a.recvFromLocal(), 'ERR_SHMBUS_CLOSED');
});

lifecycle('close reports the frames left unread', async () => {
  const { open } = context();
  const a = await open('a');
  const b = await open('b');
  a.sendToLocal('b', bytes('1'));
  a.sendToLocal('b', bytes('2'));
  assert.equal(await b.close(), { unread: 2 });
  await a.close();
});

lifecycle('a name is unique while its owner lives, and free again after close', async () => {
  const { open } = context();
  const a = await open('svc');
  await rejects(() => open('svc'), 'ERR_SHMBUS_NAME_IN_USE');
  await a.close();
  const again = await open('svc');
  assert.is(again.name, 'svc');
  await again.close();
});

lifecycle('refuses to register past the directory size', async () => {
  const { open, closeAll } = context();
  await open('a', { directoryEntries: 2 });
  await open('b');
  await rejects(() => open('c'), 'ERR_SHMBUS_DIRECTORY_FULL');
  await closeAll();
});

lifecycle('two namespaces in one folder never see each other', async () => {
  const dir = shmDir();
  const one = await Bus.open({ name: 'x', namespace: uniqueNamespace('one'), dir });
  const two = await Bus.open({ name: 'x', namespace: uniqueNamespace('two'), dir });
  const other = await Bus.open({ name: 'y', namespace: two.namespace, dir });
  await rejects(() => one.sendToLocal('y', bytes('?')), 'ERR_SHMBUS_UNKNOWN_DESTINATION');
  assert.ok(other.sendToLocal('x', bytes('hi')));
  assert.is(one.recvFromLocal(), null);
  assert.is(text(two.recvFromLocal()!.payload), 'hi');
  for (const b of [one, two, other]) await b.close();
});

const options = suite('bus: options');
options.after.each(cleanupAll);

for (const [label, extra, option] of [
  ['a name with a slash', { name: 'a/b' }, 'name'],
  ['an empty name', { name: '' }, 'name'],
  ['a name starting with a dot', { name: '..' }, 'name'],
  ['a namespace with a dot', { namespace: 'a.b' }, 'namespace'],
  ['a relative dir', { dir: 'tmp' }, 'dir'],
  ['a slot size not a multiple of 64', { slotSize: 100 }, 'slotSize'],
  ['a slot size too large', { slotSize: 131072 }, 'slotSize'],
  ['a capacity not a power of two', { capacity: 1000 }, 'capacity'],
  ['a capacity of 1', { capacity: 1 }, 'capacity'],
  ['a mode the owner cannot write', { mode: 0o444 }, 'mode'],
  ['a negative reclaim timeout', { reclaimTimeoutMs: -1 }, 'reclaimTimeoutMs'],
  ['an unknown option', { colour: 'red' }, 'colour'],
] as const) {
  options(`refuses ${label}, naming the option`, async () => {
    const dir = shmDir();
    const err = await rejects(() => Bus.open({ name: 'ok', namespace: uniqueNamespace(), dir, ...extra } as BusOptions), 'ERR_SHMBUS_INVALID_OPTION');
    assert.ok(err.message.includes(`"${option}"`), err.message);
    assert.equal(filesIn(dir), []);
  });
}

const sending = suite('bus: sending and receiving');
sending.after.each(cleanupAll);

sending('delivers payload, source and per-source sequence', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b');
  for (let i = 0; i < 3; i++) assert.ok(a.sendToLocal('b', bytes(`m${i}`)));
  for (let i = 0; i < 3; i++) {
    const f = b.recvFromLocal()!;
    assert.is(f.source, 'a');
    assert.is(f.sequence, i);
    assert.is(text(f.payload), `m${i}`);
  }
  assert.is(b.recvFromLocal(), null);
  assert.is(a.stats().sent, 3);
  assert.is(b.stats().received, 3);
  await closeAll();
});

sending('a frame still names its source after the source has closed', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b');
  a.sendToLocal('b', bytes('bye'));
  await a.close();
  assert.is(b.recvFromLocal()!.source, 'a');
  await closeAll();
});

sending('an endpoint can send to itself', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  assert.ok(a.sendToLocal('a', bytes('me')));
  assert.is(a.recvFromLocal()!.source, 'a');
  await closeAll();
});

sending('refuses an unknown destination and a malformed name', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  await rejects(() => a.sendToLocal('nobody', bytes('x')), 'ERR_SHMBUS_UNKNOWN_DESTINATION');
  await rejects(() => a.sendToLocal('../etc', bytes('x')), 'ERR_SHMBUS_INVALID_OPTION');
  await closeAll();
});

sending('refuses a payload longer than the destination slot, writing nothing', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b', { slotSize: 128 });
  assert.ok(a.sendToLocal('b', new Uint8Array(96)));
  await rejects(() => a.sendToLocal('b', new Uint8Array(97)), 'ERR_SHMBUS_FRAME_TOO_LARGE');
  await rejects(() => a.sendToLocalBatch('b', [new Uint8Array(1), new Uint8Array(97)]), 'ERR_SHMBUS_FRAME_TOO_LARGE');
  assert.is(b.stats().depth, 1);
  await closeAll();
});

sending('a full inbox refuses with false, counts it on both sides, and accepts again once read', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b', { capacity: 4 });
  for (let i = 0; i < 4; i++) assert.ok(a.sendToLocal('b', bytes(`${i}`)));
  assert.is(a.sendToLocal('b', bytes('x')), false);
  assert.is(a.stats().sendRefused, 1);
  assert.is(b.stats().refusedFull, 1);
  assert.is(b.stats().depth, 4);
  assert.is(text(b.recvFromLocal()!.payload), '0');
  assert.ok(a.sendToLocal('b', bytes('4')));
  const rest = [1, 2, 3, 4].map(() => text(b.recvFromLocal()!.payload));
  assert.equal(rest, ['1', '2', '3', '4']);
  await closeAll();
});

sending('sendToLocalAsync waits for room, and resolves false at its timeout', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b', { capacity: 2 });
  a.sendToLocal('b', bytes('0'));
  a.sendToLocal('b', bytes('1'));
  assert.is(await a.sendToLocalAsync('b', bytes('late'), { timeoutMs: 30 }), false);
  assert.is(a.stats().sendRefused, 1);
  const pending = a.sendToLocalAsync('b', bytes('2'), { timeoutMs: 5000 });
  setTimeout(() => b.recvFromLocal(), 20);
  assert.is(await deadline(pending, 5000, 'async send'), true);
  assert.equal([b.recvFromLocal(), b.recvFromLocal()].map((f) => text(f!.payload)), ['1', '2']);
  await closeAll();
});

sending('batch send claims once, keeps order, and stops at the room there is', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b', { capacity: 8 });
  const payloads = Array.from({ length: 10 }, (_, i) => bytes(`b${i}`));
  assert.is(a.sendToLocalBatch('b', payloads), 8);
  assert.is(b.stats().refusedFull, 2);
  const seen: string[] = [];
  const view = b.recvBatch((v: FrameView) => seen.push(text(v.payload)), 100);
  assert.is(view, 8);
  assert.equal(seen, payloads.slice(0, 8).map(text));
  assert.is(a.sendToLocalBatch('b', payloads, 8), 2);
  assert.is(b.recvFromLocal()!.sequence, 8);
  await closeAll();
});

sending('zero-copy receive exposes the slot bytes and the source name', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b');
  a.sendToLocal('b', bytes('zero'));
  let source = '';
  let got = '';
  b.recvBatch((v) => {
    source = b.sourceName(v);
    got = text(v.bytes.subarray(v.payloadOffset, v.payloadOffset + v.length));
  });
  assert.is(source, 'a');
  assert.is(got, 'zero');
  await closeAll();
});

sending('a sender notices its destination closed and reopened', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b1 = await open('b');
  assert.ok(a.sendToLocal('b', bytes('one')));
  await b1.close();
  await rejects(() => a.sendToLocal('b', bytes('lost?')), 'ERR_SHMBUS_UNKNOWN_DESTINATION');
  const b2 = await open('b');
  assert.ok(a.sendToLocal('b', bytes('two')));
  assert.is(text(b2.recvFromLocal()!.payload), 'two');
  await closeAll();
});

sending('a sender finds a namespace recreated after its directory was removed', async () => {
  const { open } = context();
  const a = await open('a');
  const b = await open('b');
  await a.close();
  await b.close(); // the last endpoint removes the directory; b's mapping of it is stale now
  const c = await open('c');
  const d = await open('d');
  assert.ok(c.sendToLocal('d', bytes('fresh')));
  assert.is(text(d.recvFromLocal()!.payload), 'fresh');
  await c.close();
  await d.close();
});

const events = suite('bus: event-driven receive');
events.after.each(cleanupAll);

events("on('frame') delivers frames sent before and after the listener, parking in between", async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b');
  a.sendToLocal('b', bytes('early'));
  const got: string[] = [];
  const done = new Promise<void>((resolve) =>
    b.on('frame', (f) => {
      got.push(text(f.payload));
      if (got.length === 3) resolve();
    }),
  );
  await deadline(
    (async () => {
      while (!b.stats().parked) await new Promise((r) => setTimeout(r, 1));
    })(),
    5000,
    'receiver parking',
  );
  a.sendToLocal('b', bytes('late1'));
  a.sendToLocal('b', bytes('late2'));
  await deadline(done, 5000, 'three frames');
  assert.equal(got, ['early', 'late1', 'late2']);
  assert.ok(b.stats().wakeups >= 1);
  b.removeAllListeners('frame');
  await closeAll();
});

events('frames() yields in order and ends when the bus closes', async () => {
  const { open } = context();
  const a = await open('a');
  const b = await open('b');
  const got: string[] = [];
  const consumer = (async () => {
    for await (const f of b.frames()) got.push(text(f.payload));
  })();
  for (let i = 0; i < 5; i++) {
    a.sendToLocal('b', bytes(`f${i}`));
    await new Promise((r) => setTimeout(r, 2));
  }
  await deadline(
    (async () => {
      while (got.length < 5) await new Promise((r) => setTimeout(r, 1));
    })(),
    5000,
    'five frames',
  );
  await b.close();
  await deadline(consumer, 5000, 'iterator ending');
  assert.equal(got, ['f0', 'f1', 'f2', 'f3', 'f4']);
  await a.close();
});

const hostile = suite('bus: corrupt, truncated and foreign files');
hostile.after.each(cleanupAll);

hostile('a foreign file where the directory should be is ERR_SHMBUS_NOT_A_SEGMENT and left alone', async () => {
  const dir = shmDir();
  const namespace = uniqueNamespace();
  const path = join(dir, directoryFileName(namespace));
  writeFileSync(path, 'this is somebody else\'s file, not a segment at all........................');
  await rejects(() => Bus.open({ name: 'a', namespace, dir }), 'ERR_SHMBUS_NOT_A_SEGMENT');
  assert.ok(readFileSync(path, 'utf8').startsWith('this is somebody'));
});

hostile('an empty file is ERR_SHMBUS_NOT_A_SEGMENT', async () => {
  const dir = shmDir();
  const namespace = uniqueNamespace();
  closeSync(openSync(join(dir, directoryFileName(namespace)), 'w'));
  await rejects(() => Bus.open({ name: 'a', namespace, dir }), 'ERR_SHMBUS_NOT_A_SEGMENT');
});

hostile('a truncated directory is ERR_SHMBUS_CORRUPT_SEGMENT', async () => {
  const { dir, namespace, open } = context();
  const a = await open('a');
  const copy = uniqueNamespace('trunc');
  writeFileSync(join(dir, directoryFileName(copy)), readFileSync(join(dir, directoryFileName(namespace))).subarray(0, 200));
  await rejects(() => Bus.open({ name: 'b', namespace: copy, dir }), 'ERR_SHMBUS_CORRUPT_SEGMENT');
  await a.close();
});

hostile('another layout version is ERR_SHMBUS_LAYOUT_MISMATCH', async () => {
  const { dir, namespace, open } = context();
  const a = await open('a');
  const copy = uniqueNamespace('ver');
  const data = readFileSync(join(dir, directoryFileName(namespace)));
  data.writeUInt32LE(99, VERSION_OFFSET);
  writeFileSync(join(dir, directoryFileName(copy)), data);
  await rejects(() => Bus.open({ name: 'b', namespace: copy, dir }), 'ERR_SHMBUS_LAYOUT_MISMATCH');
  await a.close();
});

hostile('a destination inbox with an impossible capacity is ERR_SHMBUS_CORRUPT_SEGMENT for the sender', async () => {
  const { dir, namespace, open, closeAll } = context();
  const a = await open('a');
  await open('b');
  const fd = openSync(join(dir, inboxFileName(namespace, 'b')), 'r+');
  const word = Buffer.alloc(4);
  word.writeUInt32LE(1000, 0);
  writeSync(fd, word, 0, 4, INBOX_CAPACITY_OFFSET);
  closeSync(fd);
  await rejects(() => a.sendToLocal('b', bytes('x')), 'ERR_SHMBUS_CORRUPT_SEGMENT');
  await closeAll();
});

lifecycle.run();
options.run();
sending.run();
events.run();
hostile.run();
