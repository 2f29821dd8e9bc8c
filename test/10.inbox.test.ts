/**
 * The inbox of single-producer lanes on a plain ArrayBuffer: LaneProducer
 * (lane.ts) on one side, InboxConsumer (inbox.ts) on the other, with an
 * injected process table instead of /proc. No segment file is created.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { InboxConsumer } from '../src/inbox';
import { ScanningConsumer } from '../src/scan';
import { LaneProducer, type LaneOwner, type LivenessCheck } from '../src/lane';
import { OFFER_FULL, OFFER_OK, OFFER_OK_RING, readInboxCounters, type FrameView, type ProducerStamp } from '../src/frame';
import {
  FRAME_FLAG_CONTINUATION,
  FRAME_FLAG_OUTBOUND,
  INBOX_CAPACITY_OFFSET,
  INBOX_LANE_COUNT_OFFSET,
  INBOX_LANES_IN_USE_OFFSET,
  INBOX_SLOT_SIZE_OFFSET,
  INBOX_PARKED_OFFSET,
  LANE_HEAD_OFFSET,
  LANE_OWNER_OFFSET,
  LANE_SPACE_WANTED_OFFSET,
  LANE_STATE_CORRUPT,
  LANE_STATE_OFFSET,
  LANE_TAIL_OFFSET,
  MAX_PID,
  SLOT_FLAGS_OFFSET,
  SLOT_HEADER_LENGTH,
  SLOT_LENGTH_OFFSET,
  SLOT_MESSAGE_LENGTH_OFFSET,
  inboxSegmentLength,
  laneOffset,
  slotOffset,
} from '../src/layout';

const WORD = 4;

interface Geometry {
  slotSize?: number;
  capacity?: number;
  lanes?: number;
  /** Default: one lane full of one message. */
  maxMessage?: number;
  /** Head and tail of every lane before anyone attaches (to test the wrap of positions). */
  start?: number;
}

/** A formatted inbox on a plain ArrayBuffer. */
function makeInbox(g: Geometry = {}): ArrayBuffer {
  const slotSize = g.slotSize ?? 64;
  const capacity = g.capacity ?? 8;
  const lanes = g.lanes ?? 1;
  const buffer = new ArrayBuffer(inboxSegmentLength(slotSize, capacity, lanes));
  InboxConsumer.format(buffer, slotSize, capacity, lanes, g.maxMessage ?? capacity * (slotSize - SLOT_HEADER_LENGTH));
  if (g.start !== undefined) for (let lane = 0; lane < lanes; lane++) setPositions(buffer, lane, g.start);
  return buffer;
}

function setPositions(buffer: ArrayBuffer, lane: number, position: number): void {
  setWord(buffer, laneOffset(lane) + LANE_HEAD_OFFSET, position);
  setWord(buffer, laneOffset(lane) + LANE_TAIL_OFFSET, position);
}

const word = (buffer: ArrayBuffer, byteOffset: number) => new Uint32Array(buffer)[byteOffset / WORD]!;
const setWord = (buffer: ArrayBuffer, byteOffset: number, value: number) => {
  new Uint32Array(buffer)[byteOffset / WORD] = value >>> 0;
};
const laneField = (buffer: ArrayBuffer, lane: number, field: number) => word(buffer, laneOffset(lane) + field);
const ownerWord = (buffer: ArrayBuffer, lane: number) => new Int32Array(buffer)[(laneOffset(lane) + LANE_OWNER_OFFSET) / WORD]!;
const setOwnerWord = (buffer: ArrayBuffer, lane: number, value: number) => {
  new Int32Array(buffer)[(laneOffset(lane) + LANE_OWNER_OFFSET) / WORD] = value;
};
const counters = (buffer: ArrayBuffer) => readInboxCounters(new Uint32Array(buffer));

/** Byte offset of the slot holding `position` of `lane`. */
function slotAt(buffer: ArrayBuffer, lane: number, position: number): number {
  const u32 = new Uint32Array(buffer);
  const slotSize = u32[INBOX_SLOT_SIZE_OFFSET / WORD]!;
  const capacity = u32[INBOX_CAPACITY_OFFSET / WORD]!;
  const lanes = u32[INBOX_LANE_COUNT_OFFSET / WORD]!;
  return slotOffset(lane, position & (capacity - 1), slotSize, capacity, lanes);
}

/**
 * A little process table: which (pid, start time) pairs run. Its liveness
 * check has the semantics of segment.isProcessAlive: start time 0 means "the
 * pid alone decides".
 */
class Processes {
  private readonly running = new Map<number, number>();
  private last = 1000;
  readonly isAlive: LivenessCheck = (pid, startTime) => {
    const now = this.running.get(pid);
    return now !== undefined && (startTime === 0 || now === startTime);
  };

  spawn(pid = ++this.last, startTime = pid * 10 + 7): LaneOwner {
    this.running.set(pid, startTime);
    return { pid, startTime, isAlive: this.isAlive };
  }

  kill(owner: LaneOwner): void {
    this.running.delete(owner.pid);
  }
}

const stampOf = (source: number): ProducerStamp => ({ sourceIndex: source, sourceGeneration: source + 100, sourceHost: 0, flags: 0 });
const DESTINATION = 9;

/** Deterministic payload bytes, different for each (seed, length). */
const payload = (seed: number, length = 4) => Uint8Array.from({ length }, (_, k) => (seed * 31 + k * 7 + length) & 0xff);

interface Got {
  source: number;
  generation: number;
  destination: number;
  sequence: number;
  slots: number;
  bytes: number[];
}

function record(v: FrameView): Got {
  return {
    source: v.sourceIndex,
    generation: v.sourceGeneration,
    destination: v.destinationIndex,
    sequence: v.sequence,
    slots: v.slots,
    bytes: [...v.bytes.subarray(v.payloadOffset, v.payloadOffset + v.length)],
  };
}

function drain(consumer: InboxConsumer, limit = 1 << 30): Got[] {
  const out: Got[] = [];
  consumer.poll((v) => out.push(record(v)), limit);
  return out;
}

/** A producer with its own stamp and sequence counter. */
class Source {
  sequence = 0;
  readonly stamp: ProducerStamp;
  constructor(
    readonly lane: LaneProducer,
    readonly id: number,
  ) {
    this.stamp = stampOf(id);
  }

  /** Offer the next frame (payload derived from its sequence); the sequence advances only when published. */
  offer(length = 4): number {
    const r = this.lane.offer(this.stamp, DESTINATION, this.sequence, payload(this.sequence, length));
    if (r !== OFFER_FULL) this.sequence++;
    return r;
  }
}

function take(buffer: ArrayBuffer, owner: LaneOwner): Source {
  return new Source(LaneProducer.take(buffer, owner), owner.pid);
}

/** The error `fn` throws (fails the test if it returns). */
function thrown(fn: () => unknown): { code?: string } {
  try {
    fn();
  } catch (err) {
    return err as { code?: string };
  }
  assert.unreachable('expected a throw');
  return {};
}

/**
 * A payload whose bytes cannot be read (its length can): writing it throws.
 * With `afterPieces`, only the piece asked for by the `afterPieces + 1`-th
 * subarray() call is unreadable (a long message fails half-way).
 */
function unreadable(bytes: Uint8Array, afterPieces = 0): Uint8Array {
  let pieces = 0;
  return new Proxy(bytes, {
    get(target, key) {
      if (key === 'length') return target.length;
      if (key === 'subarray' && afterPieces > 0) {
        return (begin: number, end: number) => {
          if (++pieces > afterPieces) throw new Error('unreadable payload');
          return target.subarray(begin, end);
        };
      }
      throw new Error('unreadable payload');
    },
  });
}

// ---------------------------------------------------------------------------

const oneLane = suite('inbox: one lane');

oneLane('delivers frames in order, with their headers and exact bytes', () => {
  const buffer = makeInbox({ slotSize: 128 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  const lengths = [0, 1, 16, 17, a.lane.maxPayload];
  for (const n of lengths) assert.is(a.offer(n), OFFER_OK);
  const got = drain(consumer);
  assert.equal(got.map((f) => f.sequence), lengths.map((_, i) => i));
  got.forEach((f, i) => {
    assert.equal(f.bytes, [...payload(i, lengths[i])]);
    assert.is(f.source, a.stamp.sourceIndex);
    assert.is(f.generation, a.stamp.sourceGeneration);
    assert.is(f.destination, DESTINATION);
    assert.is(f.slots, 1);
  });
  assert.is(counters(buffer).received, lengths.length);
  assert.equal(drain(consumer), []);
});

oneLane('refuses when full, writing nothing; room comes back after a poll', () => {
  const buffer = makeInbox({ capacity: 4 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  for (let i = 0; i < a.lane.capacity; i++) assert.is(a.offer(), OFFER_OK);
  const tail = laneField(buffer, 0, LANE_TAIL_OFFSET);
  const before = new Uint8Array(buffer).slice();
  assert.is(a.lane.offer(a.stamp, DESTINATION, 99, payload(99)), OFFER_FULL);
  assert.is(a.lane.offer(a.stamp, DESTINATION, 99, payload(99)), OFFER_FULL);
  assert.is(laneField(buffer, 0, LANE_TAIL_OFFSET), tail);
  assert.equal(new Uint8Array(buffer), before, 'a refused offer writes no byte');
  assert.equal(drain(consumer, 1).map((f) => f.sequence), [0]);
  assert.is(a.offer(), OFFER_OK, 'the slot released by the poll is free again');
  assert.is(a.offer(), OFFER_FULL);
  assert.equal(drain(consumer).map((f) => f.sequence), [1, 2, 3, 4]);
});

oneLane('keeps FIFO order across the 2^32 wrap of positions', () => {
  const start = 0xfffffff0;
  const buffer = makeInbox({ capacity: 8, start });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  let expected = 0;
  const rounds = 10;
  const perRound = 5;
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < perRound; i++) assert.is(a.offer(), OFFER_OK);
    for (const f of drain(consumer)) {
      assert.is(f.sequence, expected);
      assert.equal(f.bytes, [...payload(expected)]);
      expected++;
    }
  }
  assert.is(expected, rounds * perRound);
  const head = laneField(buffer, 0, LANE_HEAD_OFFSET);
  assert.is(head, (start + rounds * perRound) >>> 0);
  assert.ok(head < start, 'the positions wrapped past 2^32');
  assert.is(laneField(buffer, 0, LANE_TAIL_OFFSET), head);
});

oneLane('hands over at most the limit per poll and reports the depth', () => {
  const buffer = makeInbox({ capacity: 16 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  for (let i = 0; i < 10; i++) a.offer();
  assert.is(consumer.depth(), 10);
  assert.equal(drain(consumer, 3).map((f) => f.sequence), [0, 1, 2]);
  assert.is(consumer.depth(), 7);
  assert.equal(drain(consumer).map((f) => f.sequence), [3, 4, 5, 6, 7, 8, 9]);
  assert.is(consumer.depth(), 0);
});

oneLane('a throwing handler consumes its frame and the error propagates', () => {
  const buffer = makeInbox();
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  for (let i = 0; i < 4; i++) a.offer();
  let calls = 0;
  assert.throws(
    () =>
      consumer.poll(() => {
        if (++calls === 2) throw new Error('boom');
      }, 10),
    /boom/,
  );
  assert.is(laneField(buffer, 0, LANE_HEAD_OFFSET), 2, 'the head passed the frame that threw');
  assert.equal(drain(consumer).map((f) => f.sequence), [2, 3]);
});

// ---------------------------------------------------------------------------

const batches = suite('inbox: batches');

batches('offerBatch publishes N frames with one store of the tail, after the last is written', () => {
  const buffer = makeInbox({ capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  const payloads = Array.from({ length: 7 }, (_, i) => payload(i, i + 1));
  // A batch whose fourth payload cannot be read fails while writing: nothing of it may be visible.
  const broken: Uint8Array[] = [...payloads];
  broken[5] = unreadable(payloads[5]!);
  assert.throws(() => a.lane.offerBatch(a.stamp, DESTINATION, 40, broken, 2, 5), /unreadable/);
  assert.is(laneField(buffer, 0, LANE_TAIL_OFFSET), 0, 'no frame of the batch was published');
  assert.equal(drain(consumer), []);

  assert.is(a.lane.offerBatch(a.stamp, DESTINATION, 40, payloads, 2, 5), 5);
  assert.is(laneField(buffer, 0, LANE_TAIL_OFFSET), 5);
  const got = drain(consumer);
  assert.equal(got.map((f) => f.sequence), [40, 41, 42, 43, 44]);
  assert.equal(got.map((f) => f.bytes), payloads.slice(2, 7).map((p) => [...p]));
});

batches('a batch larger than the room writes what fits, in order, and says how many', () => {
  const buffer = makeInbox({ capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  for (let i = 0; i < 5; i++) a.offer();
  const payloads = Array.from({ length: 6 }, (_, i) => payload(100 + i));
  const room = a.lane.capacity - 5;
  assert.is(a.lane.offerBatch(a.stamp, DESTINATION, 5, payloads, 0, payloads.length), room);
  assert.is(laneField(buffer, 0, LANE_TAIL_OFFSET), a.lane.capacity);
  const before = new Uint8Array(buffer).slice();
  assert.is(a.lane.offerBatch(a.stamp, DESTINATION, 5 + room, payloads, room, payloads.length - room), 0);
  assert.equal(new Uint8Array(buffer), before, 'a batch with no room writes nothing');
  const got = drain(consumer);
  assert.equal(got.map((f) => f.sequence), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.equal(got.slice(5).map((f) => f.bytes), payloads.slice(0, room).map((p) => [...p]));
  assert.is(a.lane.offerBatch(a.stamp, DESTINATION, 5 + room, payloads, room, payloads.length - room), payloads.length - room);
  assert.equal(drain(consumer).map((f) => f.bytes), payloads.slice(room).map((p) => [...p]));
});

batches('a message over several slots is published with one store, after its last slot', () => {
  const buffer = makeInbox();
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  const message = payload(5, a.lane.maxPayload * 4);
  assert.throws(() => a.lane.offer(a.stamp, DESTINATION, 0, unreadable(message, 2)), /unreadable/);
  assert.is(laneField(buffer, 0, LANE_TAIL_OFFSET), 0, 'no slot of the message was published');
  assert.equal(drain(consumer), []);
  assert.is(a.lane.offer(a.stamp, DESTINATION, 0, message), OFFER_OK);
  assert.is(laneField(buffer, 0, LANE_TAIL_OFFSET), 4);
  assert.equal(drain(consumer).map((f) => f.bytes), [[...message]]);
});

// ---------------------------------------------------------------------------

const long = suite('inbox: messages longer than a slot');

long('a message spanning k slots arrives whole and byte-exact, as k slots', () => {
  const buffer = makeInbox({ slotSize: 64, capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  const max = a.lane.maxPayload;
  for (const length of [max + 1, 2 * max, 2 * max + 1, 4 * max - 3, 5 * max]) {
    const bytes = payload(length, length);
    const slots = Math.ceil(length / max);
    const tail = laneField(buffer, 0, LANE_TAIL_OFFSET);
    assert.is(a.lane.offer(a.stamp, DESTINATION, length, bytes), OFFER_OK, `offer ${length}`);
    assert.is((laneField(buffer, 0, LANE_TAIL_OFFSET) - tail) >>> 0, slots);
    const got: Got[] = [];
    assert.is(consumer.poll((v) => got.push(record(v)), 10), 1);
    assert.is(got.length, 1);
    assert.is(got[0]!.slots, slots, `slots of ${length} bytes`);
    assert.is(got[0]!.sequence, length);
    assert.equal(got[0]!.bytes, [...bytes], `bytes of ${length}`);
    assert.is(laneField(buffer, 0, LANE_HEAD_OFFSET), laneField(buffer, 0, LANE_TAIL_OFFSET));
  }
  assert.is(counters(buffer).corrupt, 0);
});

long('a one-slot frame is a view into the inbox itself (zero-copy)', () => {
  const buffer = makeInbox();
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  a.offer(a.lane.maxPayload);
  let seen: FrameView | null = null;
  let zeroCopy = false;
  consumer.poll((v) => {
    seen = v;
    zeroCopy = v.bytes.buffer === buffer && v.payloadOffset === slotAt(buffer, 0, 0) + SLOT_HEADER_LENGTH;
  }, 1);
  assert.ok(seen !== null);
  assert.ok(zeroCopy, 'the payload lies in the inbox slot');
});

long('a message wraps around the end of the lane', () => {
  const buffer = makeInbox({ slotSize: 64, capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  for (let i = 0; i < a.lane.capacity - 2; i++) a.offer();
  drain(consumer);
  const length = 4 * a.lane.maxPayload - 1; // slots 6, 7, 0, 1
  const bytes = payload(7, length);
  assert.is(a.lane.offer(a.stamp, DESTINATION, 77, bytes), OFFER_OK);
  const got = drain(consumer);
  assert.is(got.length, 1);
  assert.equal(got[0]!.bytes, [...bytes]);
  assert.is(got[0]!.slots, 4);
});

long('a message needing more slots than are free is refused, writing nothing', () => {
  const buffer = makeInbox({ slotSize: 64, capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  for (let i = 0; i < a.lane.capacity - 2; i++) a.offer();
  const before = new Uint8Array(buffer).slice();
  assert.is(a.lane.offer(a.stamp, DESTINATION, 50, payload(50, 2 * a.lane.maxPayload + 1)), OFFER_FULL);
  assert.equal(new Uint8Array(buffer), before);
  assert.is(a.lane.offer(a.stamp, DESTINATION, 51, payload(51, 2 * a.lane.maxPayload)), OFFER_OK);
  const got = drain(consumer);
  assert.equal(got.map((f) => f.sequence), [0, 1, 2, 3, 4, 5, 51]);
});

long('the largest message the inbox accepts fills a whole lane, and arrives', () => {
  const buffer = makeInbox({ slotSize: 64, capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  assert.is(a.lane.maxMessage, a.lane.capacity * a.lane.maxPayload);
  const bytes = payload(3, a.lane.maxMessage);
  a.offer();
  assert.is(a.lane.offer(a.stamp, DESTINATION, 1, bytes), OFFER_FULL, 'one slot is taken');
  drain(consumer);
  assert.is(a.lane.offer(a.stamp, DESTINATION, 1, bytes), OFFER_OK);
  const got = drain(consumer);
  assert.is(got.length, 1);
  assert.is(got[0]!.slots, a.lane.capacity);
  assert.equal(got[0]!.bytes, [...bytes]);
});

long('long and short frames keep their order', () => {
  const buffer = makeInbox({ slotSize: 64, capacity: 16 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  const lengths = [3, 100, 5, 70, 32, 33];
  for (const n of lengths) assert.is(a.offer(n), OFFER_OK);
  const got = drain(consumer);
  assert.equal(got.map((f) => f.bytes), lengths.map((n, i) => [...payload(i, n)]));
});

// ---------------------------------------------------------------------------

const lanes = suite('inbox: several lanes');

lanes('keeps FIFO per lane', () => {
  const buffer = makeInbox({ lanes: 3, capacity: 16 });
  const procs = new Processes();
  const sources = [take(buffer, procs.spawn()), take(buffer, procs.spawn()), take(buffer, procs.spawn())];
  const consumer = new InboxConsumer(buffer);
  for (let i = 0; i < 30; i++) sources[(i * 7) % 3]!.offer();
  const got = drain(consumer);
  assert.is(got.length, 30);
  for (const s of sources) {
    const mine = got.filter((f) => f.source === s.id);
    assert.equal(mine.map((f) => f.sequence), Array.from({ length: s.sequence }, (_, i) => i));
    assert.equal(mine.map((f) => f.bytes), mine.map((f) => [...payload(f.sequence)]));
  }
});

lanes('serves every busy lane: a poll with a limit reaches the next lane, and no lane starves', () => {
  const buffer = makeInbox({ lanes: 2, capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const b = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  const fill = (s: Source) => {
    while (s.offer() !== OFFER_FULL);
  };
  fill(a);
  fill(b);
  const once = drain(consumer, a.lane.capacity + 2);
  assert.ok(once.some((f) => f.source === a.id) && once.some((f) => f.source === b.id), 'both lanes served in one poll');

  const limit = 3;
  const served = new Map<number, number>([
    [a.id, 0],
    [b.id, 0],
  ]);
  for (let poll = 0; poll < 40; poll++) {
    fill(a);
    fill(b);
    for (const f of drain(consumer, limit)) served.set(f.source, served.get(f.source)! + 1);
  }
  const na = served.get(a.id)!;
  const nb = served.get(b.id)!;
  assert.ok(na > 0 && nb > 0, `both lanes served (${na}, ${nb})`);
  assert.ok(Math.abs(na - nb) <= limit, `fair shares (${na}, ${nb})`);
});

lanes('lanes in use grow as producers take lanes, and the consumer visits each', () => {
  const buffer = makeInbox({ lanes: 4 });
  const procs = new Processes();
  const consumer = new InboxConsumer(buffer);
  assert.is(consumer.lanes().length, 0);
  const sources: Source[] = [];
  for (let n = 1; n <= 3; n++) {
    sources.push(take(buffer, procs.spawn()));
    assert.is(sources[n - 1]!.lane.lane, n - 1);
    assert.is(word(buffer, INBOX_LANES_IN_USE_OFFSET), n);
    assert.is(consumer.lanes().length, n);
  }
  sources[2]!.offer();
  assert.equal(drain(consumer).map((f) => f.source), [sources[2]!.id]);
});

// ---------------------------------------------------------------------------

const taking = suite('inbox: taking lanes');

taking('takes free lanes first, before a dead owner\'s', () => {
  const buffer = makeInbox({ lanes: 3 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  take(buffer, procs.spawn());
  procs.kill({ pid: a.id, startTime: 0, isAlive: procs.isAlive });
  const c = take(buffer, procs.spawn());
  assert.is(c.lane.lane, 2);
  assert.is(ownerWord(buffer, 0), a.id, 'the dead owner\'s lane is left alone while a free one exists');
  const n = counters(buffer);
  assert.is(n.laneTakes, 3);
  assert.is(n.laneReuses, 0);
});

taking('refuses with ERR_SHMBUS_NO_LANE when every lane is held by a live owner, and counts it', () => {
  const buffer = makeInbox({ lanes: 2 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const b = take(buffer, procs.spawn());
  const c = procs.spawn();
  assert.is(thrown(() => LaneProducer.take(buffer, c)).code, 'ERR_SHMBUS_NO_LANE');
  assert.is(counters(buffer).laneRefused, 1);
  assert.is(thrown(() => LaneProducer.take(buffer, c)).code, 'ERR_SHMBUS_NO_LANE');
  assert.is(counters(buffer).laneRefused, 2);
  assert.equal([ownerWord(buffer, 0), ownerWord(buffer, 1)], [a.id, b.id]);
  assert.is(counters(buffer).laneTakes, 2);
});

taking('takes over a dead owner\'s lane; the frames it published are received first, in order', () => {
  const buffer = makeInbox({ lanes: 1, capacity: 8 });
  const procs = new Processes();
  const deadOwner = procs.spawn();
  const a = take(buffer, deadOwner);
  for (let i = 0; i < 3; i++) a.offer();
  procs.kill(deadOwner);
  const successor = procs.spawn();
  const b = take(buffer, successor);
  assert.is(b.lane.lane, 0);
  assert.is(ownerWord(buffer, 0), successor.pid);
  assert.is(counters(buffer).laneReuses, 1);
  assert.is(counters(buffer).laneTakes, 2);
  for (let i = 0; i < 2; i++) assert.is(b.offer(), OFFER_OK);
  const consumer = new InboxConsumer(buffer);
  assert.equal(
    drain(consumer).map((f) => [f.source, f.sequence]),
    [
      [a.id, 0],
      [a.id, 1],
      [a.id, 2],
      [b.id, 0],
      [b.id, 1],
    ],
  );
});

taking('a lane being taken (-pid) by a dead process is taken; by a live one it is not', () => {
  const procs = new Processes();
  const dead = procs.spawn();
  procs.kill(dead);
  const live = procs.spawn();

  const stale = makeInbox({ lanes: 1 });
  setOwnerWord(stale, 0, -dead.pid);
  const me = procs.spawn();
  const s = take(stale, me);
  assert.is(s.lane.lane, 0);
  assert.is(ownerWord(stale, 0), me.pid);

  const busy = makeInbox({ lanes: 1 });
  setOwnerWord(busy, 0, -live.pid);
  assert.is(thrown(() => LaneProducer.take(busy, procs.spawn())).code, 'ERR_SHMBUS_NO_LANE');
  assert.is(ownerWord(busy, 0), -live.pid);
});

taking('judges an owner by pid and start time: a pid now running another process is dead', () => {
  const procs = new Processes();
  const buffer = makeInbox({ lanes: 1 });
  const first = procs.spawn(4242, 111);
  take(buffer, first);
  // Same pid, same start time: the owner lives.
  assert.is(thrown(() => LaneProducer.take(buffer, procs.spawn())).code, 'ERR_SHMBUS_NO_LANE');
  // The owner died and the kernel gave pid 4242 to another process (another start time).
  procs.spawn(4242, 222);
  const taker = procs.spawn();
  const s = take(buffer, taker);
  assert.is(s.lane.lane, 0);
  assert.is(ownerWord(buffer, 0), taker.pid);
  assert.is(counters(buffer).laneReuses, 1);
});

taking('release gives the lane back (owner word 0), once', () => {
  const buffer = makeInbox({ lanes: 1 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  a.offer();
  a.lane.release();
  assert.is(ownerWord(buffer, 0), 0);
  assert.ok(a.lane.isReleased);
  const b = take(buffer, procs.spawn());
  assert.is(b.lane.lane, 0);
  assert.is(counters(buffer).laneReuses, 0, 'a released lane is free, not reused from the dead');
  a.lane.release();
  assert.is(ownerWord(buffer, 0), b.id, 'a second release does not free the next owner\'s lane');
  b.offer();
  assert.equal(drain(new InboxConsumer(buffer)).map((f) => [f.source, f.sequence]), [
    [a.id, 0],
    [b.id, 0],
  ]);
});

taking('a producer whose lane was taken over cannot free it by releasing', () => {
  const buffer = makeInbox({ lanes: 1 });
  const procs = new Processes();
  const stale = procs.spawn();
  const a = take(buffer, stale);
  procs.kill(stale);
  const b = take(buffer, procs.spawn());
  a.lane.release();
  assert.is(ownerWord(buffer, 0), b.id);
});

taking('an owner word no producer writes is left alone', () => {
  const buffer = makeInbox({ lanes: 1 });
  const procs = new Processes();
  setOwnerWord(buffer, 0, MAX_PID + 1);
  assert.is(thrown(() => LaneProducer.take(buffer, procs.spawn())).code, 'ERR_SHMBUS_NO_LANE');
  assert.is(ownerWord(buffer, 0), MAX_PID + 1);
});

// ---------------------------------------------------------------------------

const corrupt = suite('inbox: corrupt frames and lanes');

/** A lane with three frames 0, 1, 2 whose middle one is then edited by `edit(slotByteOffset)`. */
function middleEdited(edit: (buffer: ArrayBuffer, slot: number, maxPayload: number) => void, geometry: Geometry = {}) {
  const buffer = makeInbox(geometry);
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  for (let i = 0; i < 3; i++) a.offer();
  edit(buffer, slotAt(buffer, 0, 1), a.lane.maxPayload);
  return { buffer, consumer: new InboxConsumer(buffer), a };
}

corrupt('delivers a slot length of exactly maxPayload', () => {
  const { buffer, consumer } = middleEdited((b, slot, max) => {
    setWord(b, slot + SLOT_LENGTH_OFFSET, max);
    setWord(b, slot + SLOT_MESSAGE_LENGTH_OFFSET, max);
  });
  const got = drain(consumer);
  assert.equal(got.map((f) => f.sequence), [0, 1, 2]);
  assert.is(got[1]!.bytes.length, consumer.maxPayload);
  assert.is(counters(buffer).corrupt, 0);
});

corrupt('skips and counts a slot length of maxPayload + 1 (inside the slot, past its payload); the next frame arrives', () => {
  const { buffer, consumer } = middleEdited((b, slot, max) => {
    setWord(b, slot + SLOT_LENGTH_OFFSET, max + 1);
    setWord(b, slot + SLOT_MESSAGE_LENGTH_OFFSET, max + 1);
  });
  assert.equal(drain(consumer).map((f) => f.sequence), [0, 2]);
  assert.is(counters(buffer).corrupt, 1);
  assert.is(counters(buffer).received, 2);
});

corrupt('skips a length of 0xffffffff', () => {
  const { buffer, consumer } = middleEdited((b, slot) => {
    setWord(b, slot + SLOT_LENGTH_OFFSET, 0xffffffff);
  });
  assert.equal(drain(consumer).map((f) => f.sequence), [0, 2]);
  assert.is(counters(buffer).corrupt, 1);
});

corrupt('skips a continuation slot where a message should start', () => {
  const { buffer, consumer } = middleEdited((b, slot) => {
    setWord(b, slot + SLOT_FLAGS_OFFSET, word(b, slot + SLOT_FLAGS_OFFSET) | FRAME_FLAG_CONTINUATION);
  });
  assert.equal(drain(consumer).map((f) => f.sequence), [0, 2]);
  assert.is(counters(buffer).corrupt, 1);
});

corrupt('skips a message longer than maxMessage, and delivers one of exactly maxMessage', () => {
  const slotSize = 64;
  const maxPayload = slotSize - SLOT_HEADER_LENGTH;
  const maxMessage = 2 * maxPayload + 8; // three slots
  const buffer = makeInbox({ slotSize, capacity: 16, maxMessage });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  const exact = payload(1, maxMessage);
  // The producer writes what its caller checked; the consumer must not trust it.
  assert.is(a.lane.offer(a.stamp, DESTINATION, 0, payload(0)), OFFER_OK);
  assert.is(a.lane.offer(a.stamp, DESTINATION, 1, exact), OFFER_OK);
  assert.is(a.lane.offer(a.stamp, DESTINATION, 2, payload(2, maxMessage + 1)), OFFER_OK);
  assert.is(a.lane.offer(a.stamp, DESTINATION, 3, payload(3)), OFFER_OK);
  const got = drain(consumer);
  assert.equal(got.map((f) => f.sequence), [0, 1, 3]);
  assert.equal(got[1]!.bytes, [...exact]);
  assert.ok(counters(buffer).corrupt > 0);
});

corrupt('sets aside a lane whose tail is head + capacity + 1; the other lane keeps flowing; its producer learns it', () => {
  const buffer = makeInbox({ lanes: 2, capacity: 4 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const b = take(buffer, procs.spawn());
  const woken: number[] = [];
  const consumer = new InboxConsumer(buffer, { wakeSpace: (offset) => woken.push(offset) });
  a.offer();
  const head = laneField(buffer, 0, LANE_HEAD_OFFSET);
  setWord(buffer, laneOffset(0) + LANE_TAIL_OFFSET, head + a.lane.capacity + 1);
  b.offer();
  b.offer();
  assert.equal(drain(consumer).map((f) => [f.source, f.sequence]), [
    [b.id, 0],
    [b.id, 1],
  ]);
  assert.is(counters(buffer).corruptLanes, 1);
  assert.is(laneField(buffer, 0, LANE_STATE_OFFSET), LANE_STATE_CORRUPT);
  assert.is(laneField(buffer, 1, LANE_STATE_OFFSET), 0);
  assert.equal(consumer.lanes().map((l) => l.corrupt), [true, false]);
  assert.equal(woken, [a.lane.headByteOffset], 'a producer waiting for room on the lane is woken to learn it');
  assert.is(laneField(buffer, 0, LANE_HEAD_OFFSET), head, 'nothing was read from the lane');

  // Lane 1 keeps flowing, polls later do not count the lane again.
  for (let i = 0; i < 3; i++) b.offer();
  assert.equal(drain(consumer).map((f) => f.sequence), [2, 3, 4]);
  assert.is(counters(buffer).corruptLanes, 1);

  // Its producer fills its cached room, and the refill throws.
  let error: { code?: string } | null = null;
  for (let i = 0; i <= a.lane.capacity && error === null; i++) {
    try {
      assert.is(a.offer(), OFFER_OK);
    } catch (err) {
      error = err as { code?: string };
    }
  }
  assert.is(error?.code, 'ERR_SHMBUS_CORRUPT_SEGMENT');
  assert.equal(drain(consumer), [], 'nothing is read from a lane set aside');

  // A lane set aside is never taken again.
  a.lane.release();
  assert.is(thrown(() => LaneProducer.take(buffer, procs.spawn())).code, 'ERR_SHMBUS_NO_LANE');
  // And a consumer restarted on the inbox leaves it aside too.
  const restarted = new InboxConsumer(buffer);
  b.offer();
  assert.equal(drain(restarted).map((f) => f.source), [b.id]);
});

// ---------------------------------------------------------------------------

const parking = suite('inbox: parking');

parking('does not park while any lane holds a frame', () => {
  const buffer = makeInbox({ lanes: 3 });
  const procs = new Processes();
  const sources = [take(buffer, procs.spawn()), take(buffer, procs.spawn()), take(buffer, procs.spawn())];
  const consumer = new InboxConsumer(buffer);
  for (const s of sources) {
    s.offer();
    assert.is(consumer.prepareToPark(), false, `a frame on lane ${s.lane.lane}`);
    assert.is(consumer.isParked(), false);
    assert.is(drain(consumer).length, 1);
  }
  assert.is(counters(buffer).parks, 0);
  assert.is(consumer.prepareToPark(), true);
  assert.is(consumer.isParked(), true);
  assert.is(counters(buffer).parks, 1);
});

parking('the first publish after parking takes the bell, once; wakeups counts it', () => {
  const buffer = makeInbox({ lanes: 2 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const b = take(buffer, procs.spawn());
  const consumer = new InboxConsumer(buffer);
  assert.is(consumer.prepareToPark(), true);
  assert.is(a.offer(), OFFER_OK_RING);
  assert.is(word(buffer, INBOX_PARKED_OFFSET), 0, 'the ringer took the bell');
  assert.is(a.offer(), OFFER_OK);
  assert.is(b.offer(), OFFER_OK);
  assert.is(counters(buffer).wakeups, 1);
  consumer.unpark();
  drain(consumer);

  assert.is(consumer.prepareToPark(), true);
  assert.is(a.lane.offerBatch(a.stamp, DESTINATION, 10, [payload(1), payload(2)], 0, 2), 2);
  assert.is(a.lane.mustRing, true);
  assert.is(b.lane.offerBatch(b.stamp, DESTINATION, 10, [payload(1)], 0, 1), 1);
  assert.is(b.lane.mustRing, false);
  assert.is(counters(buffer).wakeups, 2);
});

parking('a lane taken after the consumer parked rings on its first publish', () => {
  const buffer = makeInbox({ lanes: 2 });
  const procs = new Processes();
  const consumer = new InboxConsumer(buffer);
  take(buffer, procs.spawn());
  assert.is(consumer.prepareToPark(), true);
  const late = take(buffer, procs.spawn());
  assert.is(late.lane.lane, 1);
  assert.is(late.offer(), OFFER_OK_RING);
  consumer.unpark();
  assert.equal(drain(consumer).map((f) => f.source), [late.id]);
});

// ---------------------------------------------------------------------------

const space = suite('inbox: waiting for room');

space('prepareSpaceWait returns -1 while there is room for what is needed', () => {
  const buffer = makeInbox({ capacity: 4 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  a.offer();
  a.offer();
  assert.is(a.lane.prepareSpaceWait(2), -1);
  assert.is(a.lane.prepareSpaceWait(3), laneField(buffer, 0, LANE_HEAD_OFFSET), 'a three-slot message does not fit');
});

space('on a full lane it returns the head, and the next poll wakes exactly that lane\'s head', () => {
  const start = 0x7654321;
  const buffer = makeInbox({ lanes: 2, capacity: 4, start });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const b = take(buffer, procs.spawn());
  const woken: number[] = [];
  const consumer = new InboxConsumer(buffer, { wakeSpace: (offset) => woken.push(offset) });
  while (a.offer() !== OFFER_FULL);
  while (b.offer() !== OFFER_FULL);
  assert.is(b.lane.prepareSpaceWait(1), start);
  assert.is(laneField(buffer, 1, LANE_SPACE_WANTED_OFFSET), 1);
  assert.is(b.lane.headByteOffset, laneOffset(1) + LANE_HEAD_OFFSET);
  assert.is(drain(consumer).length, 2 * a.lane.capacity);
  assert.equal(woken, [b.lane.headByteOffset], 'only the lane whose producer waits is woken');
  assert.is(laneField(buffer, 1, LANE_SPACE_WANTED_OFFSET), 1, 'the flag is the waiting producer\'s to clear');
  // The producer finds room and ends its wait: its flag goes.
  assert.is(b.lane.prepareSpaceWait(1), -1);
  assert.is(laneField(buffer, 1, LANE_SPACE_WANTED_OFFSET), 0, 'the producer cleared its flag');

  // Without the flag, no wake.
  while (a.offer() !== OFFER_FULL);
  while (b.offer() !== OFFER_FULL);
  drain(consumer);
  assert.is(woken.length, 1);
});

// ---------------------------------------------------------------------------

const relay = suite('inbox: scan, release and advanceHead (the relay)');

interface Scanned {
  id: number;
  sequence: number;
  source: number;
}

function scanAll(consumer: ScanningConsumer, limit = 1 << 30): Scanned[] {
  const out: Scanned[] = [];
  consumer.scan((v, id) => out.push({ id, sequence: v.sequence, source: v.sourceIndex }), limit);
  return out;
}

relay('scan hands frames over without releasing them', () => {
  const buffer = makeInbox({ capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new ScanningConsumer(buffer);
  for (let i = 0; i < 4; i++) a.offer();
  assert.equal(scanAll(consumer).map((f) => f.sequence), [0, 1, 2, 3]);
  assert.is(laneField(buffer, 0, LANE_HEAD_OFFSET), 0);
  assert.is(consumer.depth(), 4);
  assert.equal(scanAll(consumer), [], 'a second scan starts past what was read');
  assert.is(counters(buffer).received, 0);
  for (let i = 0; i < 4; i++) a.offer();
  assert.is(a.offer(), OFFER_FULL, 'unreleased frames hold their slots');
});

relay('release in any order; advanceHead moves only over a finished prefix', () => {
  const buffer = makeInbox({ capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new ScanningConsumer(buffer);
  for (let i = 0; i < 5; i++) a.offer();
  const ids = scanAll(consumer).map((f) => f.id);
  const head = () => laneField(buffer, 0, LANE_HEAD_OFFSET);
  consumer.release(ids[2]!);
  consumer.release(ids[4]!);
  consumer.advanceHead();
  assert.is(head(), 0, 'frame 0 is not finished');
  consumer.release(ids[0]!);
  consumer.advanceHead();
  assert.is(head(), 1);
  consumer.release(ids[1]!);
  consumer.advanceHead();
  assert.is(head(), 3, 'passes 1 and the already finished 2');
  assert.is(counters(buffer).received, 3);
  consumer.release(ids[3]!);
  consumer.advanceHead();
  assert.is(head(), 5);
  assert.is(counters(buffer).received, 5);
  assert.is(consumer.depth(), 0);
});

relay('a restarted consumer re-delivers exactly the unfinished frames', () => {
  const buffer = makeInbox({ capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const first = new ScanningConsumer(buffer);
  for (let i = 0; i < 6; i++) a.offer();
  const scanned = scanAll(first);
  for (const k of [0, 1, 3, 4]) first.release(scanned[k]!.id);
  first.advanceHead();
  assert.is(laneField(buffer, 0, LANE_HEAD_OFFSET), 2);
  // The relay dies; another starts on the same inbox.
  const second = new ScanningConsumer(buffer);
  const again = scanAll(second);
  assert.equal(again.map((f) => f.sequence), [2, 5], 'finished frames past the head are skipped by their mark');
  assert.equal(again.map((f) => f.id), [scanned[2]!.id, scanned[5]!.id]);
  second.release(again[0]!.id);
  second.advanceHead();
  assert.is(laneField(buffer, 0, LANE_HEAD_OFFSET), 5, 'the head passes 2 and the finished 3 and 4');
  second.release(again[1]!.id);
  second.advanceHead();
  assert.is(laneField(buffer, 0, LANE_HEAD_OFFSET), 6);
  assert.is(counters(buffer).received, 6, 'each frame counted once across both consumers');
});

relay('rewind scans the unfinished frames again', () => {
  const buffer = makeInbox({ capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new ScanningConsumer(buffer);
  for (let i = 0; i < 4; i++) a.offer();
  const ids = scanAll(consumer).map((f) => f.id);
  consumer.release(ids[1]!);
  consumer.rewind();
  assert.equal(scanAll(consumer).map((f) => f.sequence), [0, 2, 3]);
});

relay('viewAt decodes a scanned frame again; null once released and passed, or for an id never scanned', () => {
  const buffer = makeInbox({ capacity: 8, lanes: 2 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new ScanningConsumer(buffer);
  for (let i = 0; i < 3; i++) a.offer(i + 5);
  const ids = scanAll(consumer).map((f) => f.id);
  const v = consumer.viewAt(ids[1]!);
  assert.ok(v !== null);
  assert.is(v.sequence, 1);
  assert.equal([...v.payload], [...payload(1, 6)]);
  consumer.release(ids[0]!);
  consumer.advanceHead();
  assert.is(consumer.viewAt(ids[0]!), null, 'released and passed by the head');
  assert.is(consumer.viewAt(ids[2]! + 1), null, 'a slot not scanned yet');
  assert.is(consumer.viewAt(a.lane.capacity), null, 'a lane with nothing scanned');
  assert.is(consumer.viewAt(2 * a.lane.capacity), null, 'past the last lane');
});

relay('viewAt of a frame released out of order (not yet passed by the head) is null', () => {
  const buffer = makeInbox({ capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new ScanningConsumer(buffer);
  for (let i = 0; i < 3; i++) a.offer();
  const ids = scanAll(consumer).map((f) => f.id);
  consumer.release(ids[1]!);
  consumer.advanceHead();
  assert.is(laneField(buffer, 0, LANE_HEAD_OFFSET), 0, 'frame 0 holds the head');
  assert.ok(consumer.viewAt(ids[0]!) !== null, 'frame 0 is still open');
  assert.ok(consumer.viewAt(ids[1]!) === null, 'frame 1 was released: viewAt must not hand it out again');
});

relay('scan finishes an invalid frame at once: the head passes it without a release', () => {
  const buffer = makeInbox({ capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new ScanningConsumer(buffer);
  a.offer();
  a.offer();
  setWord(buffer, slotAt(buffer, 0, 0) + SLOT_LENGTH_OFFSET, consumer.maxPayload + 1);
  assert.equal(scanAll(consumer).map((f) => f.sequence), [1]);
  assert.is(counters(buffer).corrupt, 1);
  assert.is(laneField(buffer, 0, LANE_HEAD_OFFSET), 1, 'the invalid frame does not hold the lane');
});

relay('a frame skipped as invalid is counted as corrupt, not as received', () => {
  const buffer = makeInbox({ capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const consumer = new ScanningConsumer(buffer);
  a.offer();
  a.offer();
  setWord(buffer, slotAt(buffer, 0, 0) + SLOT_LENGTH_OFFSET, consumer.maxPayload + 1);
  const ids = scanAll(consumer).map((f) => f.id);
  consumer.release(ids[0]!);
  consumer.advanceHead();
  assert.equal([counters(buffer).corrupt, counters(buffer).received], [1, 1], 'as poll() counts them');
});

relay('ids name lane and slot: lane * capacity + slot', () => {
  const start = 0xfffffffe;
  const buffer = makeInbox({ capacity: 8, lanes: 2 });
  setPositions(buffer, 1, start);
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const b = take(buffer, procs.spawn());
  const consumer = new ScanningConsumer(buffer);
  const capacity = b.lane.capacity;
  a.offer();
  for (let i = 0; i < 4; i++) b.offer();
  const scanned = scanAll(consumer);
  const ofB = scanned.filter((f) => f.source === b.id);
  assert.equal(
    ofB.map((f) => f.id),
    [0, 1, 2, 3].map((k) => capacity + (((start + k) >>> 0) & (capacity - 1))),
  );
  assert.equal(scanned.filter((f) => f.source === a.id).map((f) => f.id), [0]);
  for (const f of ofB) consumer.release(f.id);
  consumer.advanceHead();
  assert.is(laneField(buffer, 1, LANE_HEAD_OFFSET), (start + 4) >>> 0);
  assert.is(laneField(buffer, 0, LANE_HEAD_OFFSET), 0, 'lane 0 untouched');
});

long('an address prefix longer than a slot: the message is the prefix then the payload, whatever the slot boundaries', () => {
  const buffer = makeInbox({ slotSize: 64, capacity: 16 });
  const procs = new Processes();
  const lane = LaneProducer.take(buffer, procs.spawn());
  const consumer = new ScanningConsumer(buffer);
  const address = 'a-long-endpoint-name-for-this-test@some-host-name';
  const prefix = new Uint8Array(address.length + 1);
  prefix[0] = address.length;
  for (let k = 0; k < address.length; k++) prefix[k + 1] = address.charCodeAt(k);
  assert.ok(prefix.length > 64 - SLOT_HEADER_LENGTH, 'the prefix alone spans two slots');
  const body = payload(5, 70);
  const stamp = { ...stampOf(3), flags: FRAME_FLAG_OUTBOUND };
  assert.is.not(lane.offer(stamp, DESTINATION, 0, body, prefix), OFFER_FULL);
  const got: Array<{ address: string; bytes: number[]; slots: number }> = [];
  consumer.poll((v) => got.push({ address: v.address, bytes: [...v.payload], slots: v.slots }), 10);
  assert.equal(got, [{ address, bytes: [...body], slots: Math.ceil((prefix.length + body.length) / (64 - SLOT_HEADER_LENGTH)) }]);
});

relay('a tail moved behind what scan has read sets the lane aside (never hands out unpublished slots)', () => {
  const buffer = makeInbox({ lanes: 2, capacity: 8 });
  const procs = new Processes();
  const a = take(buffer, procs.spawn());
  const b = take(buffer, procs.spawn());
  const consumer = new ScanningConsumer(buffer);
  for (let k = 0; k < 4; k++) a.offer();
  b.offer();
  assert.is(scanAll(consumer).length, 5);
  // Lane 0's tail goes back to 2 while scan has read up to 4.
  setWord(buffer, laneOffset(0) + LANE_TAIL_OFFSET, 2);
  b.offer();
  const again = scanAll(consumer);
  assert.equal(again.map((f) => f.source), [b.id], 'only the healthy lane delivers');
  assert.is(counters(buffer).corruptLanes, 1);
  assert.ok(consumer.lanes()[0]!.corrupt);
});

oneLane.run();
batches.run();
long.run();
lanes.run();
taking.run();
corrupt.run();
parking.run();
space.run();
relay.run();
