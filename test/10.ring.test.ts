import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FrameRing, OFFER_FULL, OFFER_OK, OFFER_OK_RING, readU64, type FrameView } from '../src/ring';
import {
  INBOX_CORRUPT_OFFSET,
  INBOX_HEAD_OFFSET,
  INBOX_RECEIVED_OFFSET,
  INBOX_RECLAIMED_OFFSET,
  INBOX_REFUSED_FULL_OFFSET,
  INBOX_TAIL_OFFSET,
  SLOT_LENGTH_OFFSET,
  SLOT_SEQ_OFFSET,
  inboxSegmentLength,
  slotOffset,
} from '../src/layout';

const stamp = { sourceIndex: 3, sourceGeneration: 8, sourceHost: 0, flags: 0 };

/** A formatted inbox on a plain ArrayBuffer, optionally starting at position `start` (to test wrap-around). */
function makeInbox(slotSize: number, capacity: number, start = 0): ArrayBuffer {
  const buffer = new ArrayBuffer(inboxSegmentLength(slotSize, capacity));
  FrameRing.format(buffer, slotSize, capacity);
  if (start !== 0) {
    const i32 = new Int32Array(buffer);
    for (let p = start; p !== ((start + capacity) | 0); p = (p + 1) | 0) {
      i32[(slotOffset(p & (capacity - 1), slotSize) + SLOT_SEQ_OFFSET) / 4] = p;
    }
    i32[INBOX_TAIL_OFFSET / 4] = start;
    i32[INBOX_HEAD_OFFSET / 4] = start;
  }
  return buffer;
}

function consumer(buffer: ArrayBuffer, opts: { alive?: boolean; timeoutMs?: number; clock?: { t: number } } = {}): FrameRing {
  const ring = new FrameRing(buffer, 1000);
  const clock = opts.clock ?? { t: 0 };
  ring.attachConsumer({ reclaimTimeoutMs: opts.timeoutMs ?? 50, isAlive: () => opts.alive ?? true, now: () => clock.t, stuckCheckEvery: 1 });
  return ring;
}

function drain(ring: FrameRing, limit = 1 << 30): Array<{ seq: number; payload: number[]; src: number; gen: number }> {
  const out: Array<{ seq: number; payload: number[]; src: number; gen: number }> = [];
  ring.poll((v: FrameView) => {
    out.push({ seq: v.sequence, payload: [...v.payload], src: v.sourceIndex, gen: v.sourceGeneration });
  }, limit);
  return out;
}

const payload = (n: number, len = 4) => Uint8Array.from({ length: len }, (_, k) => (n + k) & 0xff);

const basic = suite('ring: basic');

basic('delivers frames in order with their headers', () => {
  const buffer = makeInbox(64, 8);
  const producer = new FrameRing(buffer, 2000);
  const ring = consumer(buffer);
  for (let i = 0; i < 5; i++) assert.is(producer.offer(stamp, 1, i, payload(i, i + 1)), OFFER_OK);
  const got = drain(ring);
  assert.equal(got.map((f) => f.seq), [0, 1, 2, 3, 4]);
  assert.equal(got[3]!.payload, [...payload(3, 4)]);
  assert.is(got[0]!.src, 3);
  assert.is(got[0]!.gen, 8);
  assert.is(readU64(new Uint32Array(buffer), INBOX_RECEIVED_OFFSET), 5);
  assert.equal(drain(ring), []);
});

basic('copies payloads of every length up to the slot size', () => {
  const buffer = makeInbox(128, 4);
  const producer = new FrameRing(buffer, 2000);
  const ring = consumer(buffer);
  for (const len of [0, 1, 15, 16, 17, 95, 96]) {
    assert.is(producer.offer(stamp, 1, len, payload(len, len)), OFFER_OK);
    const [frame] = drain(ring);
    assert.equal(frame!.payload, [...payload(len, len)]);
  }
  assert.is(producer.maxPayload, 96);
});

basic('refuses when full and writes nothing; refusals are counted by whoever reports them', () => {
  const buffer = makeInbox(64, 4);
  const producer = new FrameRing(buffer, 2000);
  const ring = consumer(buffer);
  for (let i = 0; i < 4; i++) assert.is(producer.offer(stamp, 1, i, payload(i)), OFFER_OK);
  const tail = new Int32Array(buffer)[INBOX_TAIL_OFFSET / 4];
  assert.is(producer.offer(stamp, 1, 99, payload(99)), OFFER_FULL);
  assert.is(producer.offer(stamp, 1, 99, payload(99)), OFFER_FULL);
  assert.is(new Int32Array(buffer)[INBOX_TAIL_OFFSET / 4], tail);
  assert.is(readU64(new Uint32Array(buffer), INBOX_REFUSED_FULL_OFFSET), 0);
  producer.countRefused(2);
  assert.is(readU64(new Uint32Array(buffer), INBOX_REFUSED_FULL_OFFSET), 2);
  assert.equal(drain(ring).map((f) => f.seq), [0, 1, 2, 3]);
  assert.is(producer.offer(stamp, 1, 4, payload(4)), OFFER_OK);
  assert.equal(drain(ring).map((f) => f.seq), [4]);
});

basic('keeps order across the 32-bit wrap of positions', () => {
  const buffer = makeInbox(64, 8, 0x7ffffffa);
  const producer = new FrameRing(buffer, 2000);
  const ring = consumer(buffer);
  let next = 0;
  let expect = 0;
  for (let round = 0; round < 10; round++) {
    for (let i = 0; i < 5; i++) assert.is(producer.offer(stamp, 1, next++, payload(next)), OFFER_OK);
    for (const f of drain(ring)) assert.is(f.seq, expect++);
  }
  assert.is(expect, 50);
  const position = new Int32Array(buffer)[INBOX_HEAD_OFFSET / 4]!;
  assert.ok(position < 0, 'positions wrapped past 2^31');
});

basic('hands over at most the limit per poll', () => {
  const buffer = makeInbox(64, 16);
  const producer = new FrameRing(buffer, 2000);
  const ring = consumer(buffer);
  for (let i = 0; i < 10; i++) producer.offer(stamp, 1, i, payload(i));
  assert.is(drain(ring, 3).length, 3);
  assert.is(ring.depth(), 7);
  assert.is(drain(ring).length, 7);
});

basic('a throwing handler consumes its frame and the error propagates', () => {
  const buffer = makeInbox(64, 8);
  const producer = new FrameRing(buffer, 2000);
  const ring = consumer(buffer);
  for (let i = 0; i < 3; i++) producer.offer(stamp, 1, i, payload(i));
  assert.throws(() => ring.poll(() => {
    throw new Error('boom');
  }, 10), /boom/);
  assert.equal(drain(ring).map((f) => f.seq), [1, 2]);
});

const corrupt = suite('ring: corrupt input');

corrupt('skips and counts a frame whose length exceeds the slot, reading nothing out of bounds', () => {
  const buffer = makeInbox(64, 4);
  const producer = new FrameRing(buffer, 2000);
  const ring = consumer(buffer);
  producer.offer(stamp, 1, 0, payload(0));
  producer.offer(stamp, 1, 1, payload(1));
  const u32 = new Uint32Array(buffer);
  u32[(slotOffset(0, 64) + SLOT_LENGTH_OFFSET) / 4] = 0xffffffff;
  const got = drain(ring);
  assert.equal(got.map((f) => f.seq), [1]);
  assert.is(readU64(u32, INBOX_CORRUPT_OFFSET), 1);
});

const batch = suite('ring: batches');

batch('claims a batch with one CAS and commits it in order', () => {
  const buffer = makeInbox(64, 8);
  const producer = new FrameRing(buffer, 2000);
  const ring = consumer(buffer);
  const n = producer.claimBatch(5);
  assert.is(n, 5);
  for (let k = 0; k < n; k++) {
    producer.write(producer.batchPosition + k, stamp, 1, k, payload(k));
    producer.commit(producer.batchPosition + k);
  }
  assert.equal(drain(ring).map((f) => f.seq), [0, 1, 2, 3, 4]);
});

batch('claims only the room there is', () => {
  const buffer = makeInbox(64, 8);
  const producer = new FrameRing(buffer, 2000);
  for (let i = 0; i < 6; i++) producer.offer(stamp, 1, i, payload(i));
  assert.is(producer.claimBatch(5), 2);
  assert.is(producer.claimBatch(5), 0);
});

const reclaim = suite('ring: dead and stalled producers');

reclaim('reclaims a slot claimed by a dead producer after a millisecond, not the timeout, and keeps later frames', () => {
  const buffer = makeInbox(64, 8);
  const dead = new FrameRing(buffer, 4242);
  const live = new FrameRing(buffer, 2000);
  const clock = { t: 0 };
  const ring = consumer(buffer, { alive: false, timeoutMs: 60_000, clock });
  live.offer(stamp, 1, 0, payload(0));
  const position = dead.claim();
  assert.ok(position >= 0);
  live.offer(stamp, 1, 1, payload(1));
  assert.equal(drain(ring).map((f) => f.seq), [0], 'a claim just made is not judged yet');
  clock.t = 1;
  assert.equal(drain(ring).map((f) => f.seq), [1]);
  assert.is(readU64(new Uint32Array(buffer), INBOX_RECLAIMED_OFFSET), 1);
});

reclaim('waits for the timeout while the claimant lives, then reclaims; the late commit fails', () => {
  const buffer = makeInbox(64, 8);
  const stalled = new FrameRing(buffer, 4242);
  const live = new FrameRing(buffer, 2000);
  const clock = { t: 0 };
  const ring = consumer(buffer, { alive: true, timeoutMs: 50, clock });
  const position = stalled.claim();
  live.offer(stamp, 1, 7, payload(7));
  assert.equal(drain(ring), [], 'head is blocked by the claim');
  assert.ok(ring.stuckDeadlineMs() > 0);
  clock.t = 49;
  assert.equal(drain(ring), []);
  clock.t = 50;
  assert.equal(drain(ring).map((f) => f.seq), [7]);
  assert.is(readU64(new Uint32Array(buffer), INBOX_RECLAIMED_OFFSET), 1);
  stalled.write(position, stamp, 1, 99, payload(99));
  try {
    stalled.commit(position);
    assert.unreachable('commit of a reclaimed slot must throw');
  } catch (err) {
    assert.is((err as { code?: string }).code, 'ERR_SHMBUS_CLAIM_RECLAIMED');
  }
  assert.equal(drain(ring), []);
});

reclaim('a commit racing the timeout wins when it lands first', () => {
  const buffer = makeInbox(64, 8);
  const slow = new FrameRing(buffer, 4242);
  const clock = { t: 0 };
  const ring = consumer(buffer, { alive: true, timeoutMs: 10, clock });
  const position = slow.claim();
  assert.equal(drain(ring), []);
  slow.write(position, stamp, 1, 5, payload(5));
  slow.commit(position);
  clock.t = 100;
  assert.equal(drain(ring).map((f) => f.seq), [5]);
  assert.is(readU64(new Uint32Array(buffer), INBOX_RECLAIMED_OFFSET), 0);
});

reclaim('a new consumer recovers a head its dead predecessor released but never published', () => {
  const buffer = makeInbox(64, 8);
  const producer = new FrameRing(buffer, 2000);
  for (let i = 0; i < 6; i++) producer.offer(stamp, 1, i, payload(i));
  // Simulate a consumer that released slots 0..2 and died before storing head.
  const i32 = new Int32Array(buffer);
  for (let p = 0; p < 3; p++) i32[(slotOffset(p, 64) + SLOT_SEQ_OFFSET) / 4] = p + 8;
  assert.is(i32[INBOX_HEAD_OFFSET / 4], 0);
  const ring = consumer(buffer);
  assert.equal(drain(ring).map((f) => f.seq), [3, 4, 5]);
});

const relayMode = suite('ring: scan without release (the relay)');

relayMode('frames stay until released, in any order; the head follows the released prefix', () => {
  const buffer = makeInbox(64, 8);
  const producer = new FrameRing(buffer, 2000);
  const ring = consumer(buffer);
  for (let i = 0; i < 5; i++) producer.offer(stamp, 1, i, payload(i));
  const seen: number[] = [];
  assert.is(ring.scan((v, position) => seen.push(position + v.sequence * 100), 100), 5);
  assert.equal(seen, [0, 101, 202, 303, 404]);
  ring.release(2);
  ring.release(1);
  ring.advanceHead();
  assert.is(ring.depth(), 5, 'position 0 still unreleased');
  ring.release(0);
  ring.advanceHead();
  assert.is(ring.depth(), 2);
});

relayMode('a slot producers reused right after its release does not stop the head', () => {
  const buffer = makeInbox(64, 4);
  const producer = new FrameRing(buffer, 2000);
  const ring = consumer(buffer);
  for (let i = 0; i < 4; i++) producer.offer(stamp, 1, i, payload(i));
  assert.is(ring.scan(() => {}, 100), 4);
  ring.release(0);
  // Before the relay advances its head, a producer takes slot 0 for position 4.
  assert.is(producer.offer(stamp, 1, 4, payload(4)), OFFER_OK);
  ring.advanceHead();
  assert.is(ring.depth(), 4, 'head moved past position 0');
  const later: number[] = [];
  assert.is(ring.scan((v) => later.push(v.sequence), 100), 1);
  assert.equal(later, [4]);
});

relayMode('a restarted relay resends only what was not released, even where slots were reused', () => {
  const buffer = makeInbox(64, 4);
  const producer = new FrameRing(buffer, 2000);
  const first = consumer(buffer);
  for (let i = 0; i < 4; i++) producer.offer(stamp, 1, i, payload(i));
  first.scan(() => {}, 100);
  first.release(0);
  first.release(2);
  producer.offer(stamp, 1, 4, payload(4)); // reuses slot 0 for position 4
  // The relay dies here, before advanceHead: the published head is still 0.
  const restarted = consumer(buffer);
  const resent: number[] = [];
  restarted.scan((v) => resent.push(v.sequence), 100);
  assert.equal(resent, [1, 3, 4]);
});

const parking = suite('ring: parking');

parking('refuses to park while a committed frame waits', () => {
  const buffer = makeInbox(64, 8);
  const producer = new FrameRing(buffer, 2000);
  const ring = consumer(buffer);
  producer.offer(stamp, 1, 0, payload(0));
  assert.is(ring.prepareToPark(), false);
  assert.is(ring.isParked(), false);
});

parking('the first commit after parking takes the bell, the next does not', () => {
  const buffer = makeInbox(64, 8);
  const producer = new FrameRing(buffer, 2000);
  const ring = consumer(buffer);
  assert.is(ring.prepareToPark(), true);
  assert.is(ring.isParked(), true);
  assert.is(producer.offer(stamp, 1, 0, payload(0)), OFFER_OK_RING);
  assert.is(producer.offer(stamp, 1, 1, payload(1)), OFFER_OK);
  assert.is(ring.isParked(), false);
});

parking('parks with a claimed, uncommitted slot and reports it in flight', () => {
  const buffer = makeInbox(64, 8);
  const producer = new FrameRing(buffer, 2000);
  const ring = consumer(buffer);
  const position = producer.claim();
  assert.is(ring.prepareToPark(), true);
  assert.is(ring.inFlight(), true);
  producer.write(position, stamp, 1, 0, payload(0));
  assert.is(producer.commit(position), OFFER_OK_RING);
  ring.unpark();
});

basic.run();
corrupt.run();
batch.run();
reclaim.run();
relayMode.run();
parking.run();
