import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, openSync, readFileSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Bus, BusAbortError, isBusError, type BusOptions } from '../src/index';
import type { FrameView } from '../src/frame';
import {
  CREATOR_PID_OFFSET,
  HEADER_LENGTH_OFFSET,
  INBOX_CAPACITY_OFFSET,
  INBOX_SLOT_SIZE_OFFSET,
  KIND_OFFSET,
  MAGIC_OFFSET,
  SEGMENT_KIND_INBOX,
  SEGMENT_LENGTH_OFFSET,
  SEGMENT_MAGIC,
  SLOT_HEADER_LENGTH,
  VERSION_OFFSET,
  ENTRY_OWNER_PID_OFFSET,
  ENTRY_OWNER_START_TIME_OFFSET,
  SEGMENT_KIND_DIRECTORY,
  directoryFileName,
  entryOffset,
  inboxFileName,
} from '../src/layout';
import { cleanupAll, deadline, filesIn, registerCleanup, shmDir, spawnChild, uniqueNamespace } from './_helpers';
import { Segment, processStartTime } from '../src/segment';

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
  // A test that fails half-way still closes its buses (unregisters, stops waiter threads).
  registerCleanup(() => {
    for (const bus of buses) bus.closeSync();
  });
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

lifecycle('a name whose owner pid runs with another start time (its pid reused) is taken over; the true owner is not', async () => {
  const { dir, namespace, open } = context();
  const owner = spawnChild('owner', { dir, ns: namespace, name: 'x' });
  await owner.line(/^ready$/);
  owner.process.kill('SIGSTOP'); // alive, and not going to close
  const pid = owner.process.pid!;
  const probe = await open('probe');
  await rejects(() => open('x'), 'ERR_SHMBUS_NAME_IN_USE');
  // Make the entry say "pid <live pid>, started at another time": the process that registered is gone, its pid reused.
  const directory = Segment.attach(join(dir, directoryFileName(namespace)), SEGMENT_KIND_DIRECTORY);
  try {
    const index = [...Array(256).keys()].find((i) => {
      const base = entryOffset(i) / 4;
      return directory.i32[base + ENTRY_OWNER_PID_OFFSET / 4] === pid;
    });
    assert.ok(index !== undefined, 'the child owns an entry');
    const word = (entryOffset(index) + ENTRY_OWNER_START_TIME_OFFSET) / 4;
    assert.is(directory.u32[word], processStartTime(pid) >>> 0);
    directory.u32[word] = (processStartTime(pid) + 1) >>> 0;
  } finally {
    directory.unmap();
  }
  const x = await open('x');
  assert.ok(probe.sendToLocal('x', bytes('after takeover')));
  assert.is(text(x.recvFromLocal()!.payload), 'after takeover');
  owner.process.kill('SIGKILL');
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
  ['an unknown option', { colour: 'red' }, 'colour'],
  ['reclaimTimeoutMs (layout 1 only, now unknown)', { reclaimTimeoutMs: 100 }, 'reclaimTimeoutMs'],
  ['0 lanes', { lanes: 0 }, 'lanes'],
  ['4097 lanes', { lanes: 4097 }, 'lanes'],
  ['a fractional lane count', { lanes: 2.5 }, 'lanes'],
  ['a lane count given as a string', { lanes: '2' }, 'lanes'],
  ['a maxMessageSize of 0', { maxMessageSize: 0 }, 'maxMessageSize'],
  ['a fractional maxMessageSize', { maxMessageSize: 100.5 }, 'maxMessageSize'],
  ['a maxMessageSize longer than a whole lane', { slotSize: 64, capacity: 4, maxMessageSize: 4 * (64 - SLOT_HEADER_LENGTH) + 1 }, 'maxMessageSize'],
  ['handleSignals given as a string', { handleSignals: 'yes' }, 'handleSignals'],
  ['a negative idleSpinUs', { idleSpinUs: -1 }, 'idleSpinUs'],
  ['a fractional idleSpinUs', { idleSpinUs: 1.5 }, 'idleSpinUs'],
  ['an idleSpinUs over one second', { idleSpinUs: 1_000_001 }, 'idleSpinUs'],
] as const) {
  options(`refuses ${label}, naming the option`, async () => {
    const dir = shmDir();
    const err = await rejects(() => Bus.open({ name: 'ok', namespace: uniqueNamespace(), dir, ...extra } as BusOptions), 'ERR_SHMBUS_INVALID_OPTION');
    assert.ok(err.message.includes(`"${option}"`), err.message);
    assert.equal(filesIn(dir), []);
  });
}

options('accepts the edges: 1 and 4096 lanes, a maxMessageSize of a whole lane', async () => {
  const { open, closeAll } = context();
  const one = await open('one', { lanes: 1 });
  assert.is(one.stats().lanes, 1);
  const many = await open('many', { lanes: 4096, slotSize: 64, capacity: 2 });
  assert.is(many.stats().lanes, 4096);
  const whole = 4 * (64 - SLOT_HEADER_LENGTH);
  const full = await open('full', { slotSize: 64, capacity: 4, maxMessageSize: whole });
  assert.is(full.maxMessageSize, whole);
  assert.is(full.stats().maxMessageSize, whole);
  await closeAll();
});

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

sending('refuses a payload longer than the destination\'s maxMessageSize, writing nothing', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b', { slotSize: 128, maxMessageSize: 300 });
  assert.ok(a.sendToLocal('b', new Uint8Array(300)));
  const depth = b.stats().depth;
  await rejects(() => a.sendToLocal('b', new Uint8Array(301)), 'ERR_SHMBUS_FRAME_TOO_LARGE');
  await rejects(() => a.sendToLocalBatch('b', [new Uint8Array(1), new Uint8Array(301)]), 'ERR_SHMBUS_FRAME_TOO_LARGE');
  await rejects(() => a.sendToLocalAsync('b', new Uint8Array(301)), 'ERR_SHMBUS_FRAME_TOO_LARGE');
  assert.is(b.stats().depth, depth);
  assert.is(a.stats().sent, 1);
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

sending('a batch keeps order and stops at the room there is', async () => {
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

hostile('a version-1 inbox is refused by a sender with ERR_SHMBUS_LAYOUT_MISMATCH', async () => {
  const { dir, namespace, open, closeAll } = context();
  const a = await open('a');
  await open('old');
  // Put a layout-1 inbox file where the endpoint's inbox is (a new file: the owner keeps its own mapping).
  const path = join(dir, inboxFileName(namespace, 'old'));
  unlinkSync(path);
  writeFileSync(path, versionOneInbox());
  await rejects(() => a.sendToLocal('old', bytes('x')), 'ERR_SHMBUS_LAYOUT_MISMATCH');
  await rejects(() => a.sender('old').sendBatch([bytes('x')]), 'ERR_SHMBUS_LAYOUT_MISMATCH');
  assert.is(a.stats().sent, 0);
  await closeAll();
});

/** A whole inbox file as layout 1 wrote it: common header (version 1), slot size, capacity, slots after a 448-byte header. */
function versionOneInbox(): Buffer {
  const V1_INBOX_HEADER_LENGTH = 448;
  const slotSize = 256;
  const capacity = 8;
  const length = V1_INBOX_HEADER_LENGTH + slotSize * capacity;
  const file = Buffer.alloc(length);
  file.writeUInt32LE(SEGMENT_MAGIC, MAGIC_OFFSET);
  file.writeUInt32LE(SEGMENT_KIND_INBOX, KIND_OFFSET);
  file.writeUInt32LE(1, VERSION_OFFSET);
  file.writeUInt32LE(V1_INBOX_HEADER_LENGTH, HEADER_LENGTH_OFFSET);
  file.writeUInt32LE(length, SEGMENT_LENGTH_OFFSET);
  file.writeInt32LE(process.pid, CREATOR_PID_OFFSET);
  file.writeUInt32LE(slotSize, INBOX_SLOT_SIZE_OFFSET);
  file.writeUInt32LE(capacity, INBOX_CAPACITY_OFFSET);
  return file;
}

// ---------------------------------------------------------------------------

const payloads = suite('bus: payloads are bytes, or refused');
payloads.after.each(cleanupAll);

/** A send path, normalised: resolves with the number of frames written. */
type SendPath = (a: Bus, destination: string, payload: unknown) => Promise<number>;

const LOCAL_PATHS: Array<[string, SendPath]> = [
  ['sendToLocal', async (a, d, p) => Number(a.sendToLocal(d, p as Uint8Array))],
  ['sendToLocalBatch', async (a, d, p) => a.sendToLocalBatch(d, [p as Uint8Array])],
  ['sendToLocalAsync', async (a, d, p) => Number(await a.sendToLocalAsync(d, p as Uint8Array))],
  ['send', async (a, d, p) => Number(a.send(d, p as Uint8Array))],
  ['sender().send', async (a, d, p) => Number(a.sender(d).send(p as Uint8Array))],
  ['sender().sendBatch', async (a, d, p) => a.sender(d).sendBatch([p as Uint8Array])],
  ['sender().sendAsync', async (a, d, p) => Number(await a.sender(d).sendAsync(p as Uint8Array))],
];

/** Payloads that are bytes, and the bytes each must arrive as. */
function bytePayloads(): Array<[string, unknown, number[]]> {
  const pattern = Uint8Array.from({ length: 24 }, (_, k) => (k * 37 + 11) & 0xff);
  const floats = new Float64Array([1.5, 2.25]);
  const pooled = Buffer.from('pooled'); // a Buffer from Node's pool: byteOffset is not 0
  const words = new Uint16Array(pattern.buffer.slice(0));
  return [
    ['a string, as UTF-8', 'h\u00e9llo \u2713', [...new TextEncoder().encode('h\u00e9llo \u2713')]],
    ['a Float64Array, as its 16 bytes', floats, [...new Uint8Array(floats.buffer)]],
    ['a DataView, as its window', new DataView(pattern.buffer, 3, 7), [...pattern.subarray(3, 10)]],
    ['an ArrayBuffer, whole', pattern.buffer.slice(0), [...pattern]],
    ['a Uint8Array subarray, only its window', pattern.subarray(5, 17), [...pattern.subarray(5, 17)]],
    ['a Uint16Array subarray, only its window', words.subarray(2, 5), [...pattern.subarray(4, 10)]],
    ['a pooled Buffer, only its bytes', pooled, [...new TextEncoder().encode('pooled')]],
  ];
}

const NOT_BYTES: Array<[string, unknown]> = [
  ['undefined', undefined],
  ['null', null],
  ['a number', 42],
  ['a plain object', { length: 3, 0: 1, 1: 2, 2: 3 }],
  ['an array of numbers', [1, 2, 3]],
];

for (const [label, path] of LOCAL_PATHS) {
  payloads(`${label} sends the bytes of any view, an ArrayBuffer or a string`, async () => {
    const { open, closeAll } = context();
    const a = await open('a');
    const b = await open('b');
    for (const [what, payload, expected] of bytePayloads()) {
      assert.is(await path(a, 'b', payload), 1, what);
      const f = b.recvFromLocal();
      assert.ok(f !== null, what);
      assert.equal([...f.payload], expected, what);
    }
    await closeAll();
  });

  payloads(`${label} refuses anything else with ERR_SHMBUS_INVALID_PAYLOAD, writing nothing`, async () => {
    const { open, closeAll } = context();
    const a = await open('a');
    const b = await open('b');
    for (const [what, payload] of NOT_BYTES) {
      await rejects(() => path(a, 'b', payload), 'ERR_SHMBUS_INVALID_PAYLOAD');
      assert.is(b.recvFromLocal(), null, what);
      assert.is(b.stats().depth, 0, what);
      assert.is(a.stats().sent, 0, what);
    }
    await closeAll();
  });
}

payloads('a batch with one payload that is not bytes writes none of them', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b');
  await rejects(() => a.sendToLocalBatch('b', [bytes('ok'), bytes('fine'), 7 as unknown as Uint8Array]), 'ERR_SHMBUS_INVALID_PAYLOAD');
  await rejects(() => a.sender('b').sendBatch([bytes('ok'), new Uint8Array(600), null as unknown as Uint8Array]), 'ERR_SHMBUS_INVALID_PAYLOAD');
  assert.is(b.recvFromLocal(), null);
  assert.is(a.stats().sent, 0);
  await closeAll();
});

const REMOTE_PATHS: Array<[string, SendPath]> = [
  ['sendToRemote', async (a, d, p) => Number(a.sendToRemote('elsewhere', d, p as Uint8Array))],
  ['send to name@host', async (a, d, p) => Number(a.send(`${d}@elsewhere`, p as Uint8Array))],
  ['sender(name@host).send', async (a, d, p) => Number(a.sender(`${d}@elsewhere`).send(p as Uint8Array))],
  ['sender(name@host).sendBatch', async (a, d, p) => a.sender(`${d}@elsewhere`).sendBatch([p as Uint8Array])],
  ['sender(name@host).sendAsync', async (a, d, p) => Number(await a.sender(`${d}@elsewhere`).sendAsync(p as Uint8Array))],
];

for (const [label, path] of REMOTE_PATHS) {
  payloads(`${label} checks the payload before looking for a relay`, async () => {
    const { open, closeAll } = context();
    const a = await open('a');
    for (const [, payload] of NOT_BYTES) await rejects(() => path(a, 'b', payload), 'ERR_SHMBUS_INVALID_PAYLOAD');
    await rejects(() => path(a, 'b', bytes('bytes')), 'ERR_SHMBUS_RELAY_UNAVAILABLE');
    assert.is(a.stats().sent, 0);
    await closeAll();
  });
}

// ---------------------------------------------------------------------------

const long = suite('bus: messages longer than a slot');
long.after.each(cleanupAll);

long('a 10 000-byte message over 256-byte slots arrives whole, by recvFromLocal and by recvBatch', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b', { slotSize: 256 });
  const message = Uint8Array.from({ length: 10_000 }, (_, k) => (k * 13 + (k >> 8)) & 0xff);
  assert.ok(message.length > b.maxPayload);
  assert.ok(a.sendToLocal('b', message));
  const f = b.recvFromLocal()!;
  assert.equal(f.payload, message);
  assert.is(f.source, 'a');

  assert.ok(a.sendToLocal('b', message));
  let seen: Uint8Array | null = null;
  let slots = 0;
  assert.is(
    b.recvBatch((v) => {
      seen = v.copyPayload();
      slots = v.slots;
    }),
    1,
  );
  assert.equal(seen, message);
  assert.is(slots, Math.ceil(message.length / b.maxPayload));
  assert.is(b.stats().depth, 0);
  await closeAll();
});

long('a batch mixing long and short payloads keeps its order', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b', { slotSize: 64 });
  const batch = [bytes('first'), new Uint8Array(200).fill(7), bytes('third'), new Uint8Array(65).fill(9)];
  assert.is(a.sendToLocalBatch('b', batch), batch.length);
  const got: Uint8Array[] = [];
  b.recvBatch((v) => got.push(v.copyPayload()));
  assert.equal(got, batch);
  await closeAll();
});

// ---------------------------------------------------------------------------

const lanes = suite('bus: lanes and sender handles');
lanes.after.each(cleanupAll);

lanes('stats show the geometry and the lanes taken', async () => {
  const { open, closeAll } = context();
  const b = await open('b', { slotSize: 128, capacity: 8, lanes: 3, maxMessageSize: 500 });
  const s = b.stats();
  assert.equal([s.slotSize, s.capacity, s.lanes, s.maxPayload, s.maxMessageSize], [128, 8, 3, 128 - SLOT_HEADER_LENGTH, 500]);
  assert.equal([s.lanesInUse, s.laneTakes], [0, 0]);
  assert.not.ok('reclaimed' in s);
  const a = await open('a');
  a.sendToLocal('b', bytes('1'));
  a.sendToLocal('b', bytes('2'));
  assert.equal([b.stats().lanesInUse, b.stats().laneTakes], [1, 1], 'one lane per sender, taken once');
  const c = await open('c');
  c.sendToLocal('b', bytes('3'));
  assert.equal([b.stats().lanesInUse, b.stats().laneTakes], [2, 2]);
  await closeAll();
});

lanes('every lane taken: the next sender gets ERR_SHMBUS_NO_LANE until a lane is given back on close', async () => {
  const { open, closeAll } = context();
  const dest = await open('dest', { lanes: 2 });
  const s1 = await open('s1');
  const s2 = await open('s2');
  const s3 = await open('s3');
  assert.ok(s1.sendToLocal('dest', bytes('from s1')));
  assert.ok(s2.sendToLocal('dest', bytes('from s2')));
  await rejects(() => s3.sendToLocal('dest', bytes('from s3')), 'ERR_SHMBUS_NO_LANE');
  assert.is(dest.stats().laneRefused, 1);
  await s1.close();
  assert.ok(s3.sendToLocal('dest', bytes('from s3')));
  const got = [dest.recvFromLocal(), dest.recvFromLocal(), dest.recvFromLocal()].map((f) => `${f!.source}:${text(f!.payload)}`);
  assert.equal(got.sort(), ['s1:from s1', 's2:from s2', 's3:from s3']);
  assert.is(dest.stats().laneTakes, 3);
  await closeAll();
});

lanes('a sender handle is one object per destination and follows the destination to its next incarnation', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b1 = await open('b');
  const handle = a.sender('b');
  assert.is(a.sender('b'), handle);
  assert.is(handle.destination, 'b');
  assert.ok(handle.send(bytes('one')));
  assert.is(text(b1.recvFromLocal()!.payload), 'one');
  await b1.close();
  await rejects(() => handle.send(bytes('nobody')), 'ERR_SHMBUS_UNKNOWN_DESTINATION');
  const b2 = await open('b');
  assert.ok(handle.send(bytes('two')));
  assert.is(handle.sendBatch([bytes('three'), bytes('four')]), 2);
  assert.equal([1, 2, 3].map(() => text(b2.recvFromLocal()!.payload)), ['two', 'three', 'four']);
  assert.equal([b2.stats().lanesInUse, b2.stats().laneTakes], [1, 1], 'took a lane in the new inbox');
  assert.is(a.sender('b'), handle);
  await closeAll();
});

// ---------------------------------------------------------------------------

const waiting = suite('bus: async sends wait for room');
waiting.after.each(cleanupAll);

/** Fill a's lane of b's inbox (capacity slots) with frames '0', '1', ... */
function fill(a: Bus, b: Bus): number {
  const n = b.stats().capacity;
  for (let i = 0; i < n; i++) assert.ok(a.sendToLocal('b', bytes(String(i))));
  return n;
}

waiting('sendToLocalAsync waits for room and is woken by the receiver, long before its timeout', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b', { capacity: 2 });
  const n = fill(a, b);
  const timeoutMs = 5000;
  const started = performance.now();
  let resolvedAt = -1;
  const pending = a.sendToLocalAsync('b', bytes('late'), { timeoutMs }).then((ok) => {
    resolvedAt = performance.now();
    return ok;
  });
  // The receiver drains a moment later, while the sender sleeps on its lane's head.
  let drainedAt = -1;
  const got: string[] = [];
  setTimeout(() => {
    drainedAt = performance.now();
    b.recvBatch((v) => got.push(text(v.payload)));
  }, 20);
  assert.is(await deadline(pending, timeoutMs, 'async send'), true);
  assert.ok(drainedAt >= started && resolvedAt >= drainedAt);
  // Woken by the receiver, not by the sender's own periodic re-check (100 ms).
  assert.ok(resolvedAt - drainedAt < 50, `resolved ${(resolvedAt - drainedAt).toFixed(1)} ms after the drain`);
  b.recvBatch((v) => got.push(text(v.payload)));
  assert.equal(got, [...Array.from({ length: n }, (_, i) => String(i)), 'late']);
  assert.is(a.stats().sent, n + 1);
  assert.is(a.stats().sendRefused, 0);
  await closeAll();
});

waiting('sendToLocalAsync resolves false at its timeout, counted as refused, writing nothing', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b', { capacity: 2 });
  const n = fill(a, b);
  assert.is(await deadline(a.sendToLocalAsync('b', bytes('late'), { timeoutMs: 30 }), 5000, 'async timeout'), false);
  assert.is(a.stats().sendRefused, 1);
  assert.is(b.stats().refusedFull, 1);
  assert.is(a.stats().sent, n);
  const got: string[] = [];
  b.recvBatch((v) => got.push(text(v.payload)));
  assert.equal(got, Array.from({ length: n }, (_, i) => String(i)));
  await closeAll();
});

waiting('sendToLocalAsync rejects with ERR_SHMBUS_ABORTED (an AbortError whose cause is the reason) when its signal aborts, writing nothing', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b', { capacity: 2 });

  const early = new AbortController();
  const earlyReason = new Error('aborted before the call');
  early.abort(earlyReason);
  const e1 = await deadline(a.sendToLocalAsync('b', bytes('x'), { signal: early.signal }).then(() => null, (err: unknown) => err), 5000, 'early abort');
  assert.instance(e1, BusAbortError, 'an aborted signal refuses even when there is room');
  assert.is((e1 as BusAbortError).code, 'ERR_SHMBUS_ABORTED');
  assert.is((e1 as BusAbortError).name, 'AbortError');
  assert.is((e1 as BusAbortError).cause, earlyReason);
  assert.is(b.recvFromLocal(), null);

  const n = fill(a, b);
  const late = new AbortController();
  const lateReason = new Error('aborted while waiting');
  const started = performance.now();
  const pending = a.sendToLocalAsync('b', bytes('late'), { timeoutMs: 5000, signal: late.signal }).then(() => null, (err: unknown) => err);
  setTimeout(() => late.abort(lateReason), 20);
  const e2 = await deadline(pending, 2000, 'abort while waiting');
  assert.ok(isBusError(e2, 'ERR_SHMBUS_ABORTED'), String(e2));
  assert.is((e2 as Error).cause, lateReason);
  assert.ok(performance.now() - started < 1000, 'settled at the abort, not at the timeout');
  const got: string[] = [];
  b.recvBatch((v) => got.push(text(v.payload)));
  assert.equal(got, Array.from({ length: n }, (_, i) => String(i)), 'the aborted frame was never written');
  assert.is(a.stats().sent, n);
  await closeAll();
});

waiting('a sender handle\'s sendAsync takes the same signal', async () => {
  const { open, closeAll } = context();
  const a = await open('a');
  const b = await open('b', { capacity: 2 });
  fill(a, b);
  const controller = new AbortController();
  const pending = a.sender('b').sendAsync(bytes('late'), { timeoutMs: 5000, signal: controller.signal }).then(() => null, (err: unknown) => err);
  controller.abort();
  const err = await deadline(pending, 2000, 'abort');
  assert.ok(isBusError(err, 'ERR_SHMBUS_ABORTED'), String(err));
  assert.instance((err as Error).cause, DOMException, 'the default reason of abort()');
  await closeAll();
});

lifecycle.run();
options.run();
sending.run();
events.run();
hostile.run();
payloads.run();
long.run();
lanes.run();
waiting.run();
