/**
 * What the number of lanes per inbox costs, in one process (public API only).
 *
 * Roles (spawned by run.ts, one process each, no peer):
 *   consumerCost  an inbox "rx" of `lanes` lanes (default slot size and
 *                 capacity) and `lanes` producer endpoints in this process,
 *                 each holding one lane of it (each sends once, so every lane
 *                 is in use); then, each for `seconds` (or `maxCount`):
 *                   empty    ns per recvBatch call on the drained inbox
 *                   oneLane  ns per frame when one producer sends a frame and
 *                            recvBatch(.., 1) takes it, repeated
 *                   allLanes ns per frame when every producer sends one frame
 *                            and one recvBatch drains them all, repeated
 *                 oneLane and allLanes time the receive calls only (the sends
 *                 are outside the timed sections), minus the mean cost of an
 *                 empty timed section (`timerNs`, measured the same way).
 *   memory        an inbox "rx" of `lanes` lanes (default slot size and
 *                 capacity): its file size and allocated bytes (st_blocks x
 *                 512) fresh, and after one producer has filled its lane
 *                 (capacity frames, none read).
 *
 * Every frame is checked (length, per-producer sequence, tail byte); a row
 * with a bad or missing frame fails. Every endpoint is closed (its files
 * removed) when the role ends, whether it succeeded or not; the runner removes
 * the namespace's files again after the row.
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { Bus, layout, type BusOptions, type FrameView, type Sender } from '../src/index';
import { KIND_MEASURED, childMain, filler, readSeq, stamp, tell, type RoleArgs } from './common';

/** The producers' own inboxes: they receive nothing, so the smallest geometry. */
const PRODUCER_INBOX = { slotSize: layout.MIN_SLOT_SIZE, capacity: layout.MIN_CAPACITY, lanes: 1 } as const;
/** Directory entries beyond the producers: the inbox's own endpoint and some room. */
const DIRECTORY_SPARE = 16;
/** A producer id is one byte of the payload (common.ts). */
const MAX_PRODUCERS = 256;
/** Empty polls between two looks at the clock. */
const POLLS_PER_CHECK = 1024;

/** The endpoints of one role, closed (files removed) in reverse order of opening. */
class Endpoints {
  private readonly buses: Bus[] = [];

  open(options: BusOptions): Bus {
    const bus = Bus.openSync(options);
    this.buses.push(bus);
    return bus;
  }

  closeAll(): void {
    let first: unknown = null;
    for (const bus of this.buses.reverse()) {
      try {
        bus.closeSync();
      } catch (err) {
        first ??= err;
      }
    }
    this.buses.length = 0;
    if (first !== null) throw first;
  }
}

/** `lanes` producers sending stamped frames to "rx", and the check of what "rx" receives. */
class Traffic {
  errors = 0;
  firstError = '';
  received = 0;
  private readonly sent: Uint32Array;
  private readonly expected: Uint32Array;
  private readonly payload: Uint8Array;
  /** The receive handler: checks one frame. */
  readonly check: (view: FrameView) => void;

  constructor(
    private readonly senders: readonly Sender[],
    private readonly size: number,
  ) {
    this.sent = new Uint32Array(senders.length);
    this.expected = new Uint32Array(senders.length);
    this.payload = filler(size);
    const producers = senders.length;
    this.check = (view) => {
      this.received++;
      const bytes = view.bytes;
      const at = view.payloadOffset;
      const seq = readSeq(bytes, at);
      const id = bytes[at + 5]!;
      if (view.length !== size || id >= producers || seq !== this.expected[id] || bytes[at + size - 1] !== (seq & 0xff)) {
        this.error(`bad frame: length ${view.length}, producer ${id}, seq ${seq} (expected ${id < producers ? this.expected[id] : '?'})`);
      }
      if (id < producers) this.expected[id] = (seq + 1) >>> 0;
    };
  }

  /** Producer `id` sends one frame; its lane never fills (every round is drained), so a refusal is an error. */
  send(id: number): void {
    const seq = this.sent[id]!;
    stamp(this.payload, 0, this.size, seq, KIND_MEASURED, id);
    if (!this.senders[id]!.send(this.payload)) throw new Error(`producer ${id}: lane full after ${seq} frames`);
    this.sent[id] = (seq + 1) >>> 0;
  }

  error(message: string): void {
    if (this.errors++ === 0) this.firstError = message;
  }

  /** Throw if a frame was bad, or if what was received is not what was sent. */
  verify(what: string): void {
    let sent = 0;
    for (const n of this.sent) sent += n;
    if (this.received !== sent) this.error(`sent ${sent} frames, received ${this.received}`);
    if (this.errors > 0) throw new Error(`${what}: ${this.errors} error(s); first: ${this.firstError}`);
  }
}

/** A time and count bound of one measurement, on the performance.now() clock. */
interface Bound {
  endAt: number;
  maxCount: number;
}

const bound = (seconds: number, maxCount: number): Bound => ({ endAt: performance.now() + seconds * 1000, maxCount });

/** Mean ms of an empty timed section (two clock reads), the way the receive calls are timed. */
function timerCost(b: Bound): number {
  let total = 0;
  let n = 0;
  for (;;) {
    const t0 = performance.now();
    const t1 = performance.now();
    total += t1 - t0;
    if (++n >= b.maxCount || t1 >= b.endAt) break;
  }
  return total / n;
}

/** Mean ms per recvBatch call on an inbox that stays empty. */
function emptyPolls(rx: Bus, traffic: Traffic, b: Bound): number {
  const t0 = performance.now();
  let t1 = t0;
  let calls = 0;
  while (calls < b.maxCount) {
    for (let k = 0; k < POLLS_PER_CHECK; k++) if (rx.recvBatch(traffic.check) !== 0) traffic.error('a frame in an inbox nobody sends to');
    calls += POLLS_PER_CHECK;
    t1 = performance.now();
    if (t1 >= b.endAt) break;
  }
  return (t1 - t0) / calls;
}

/** Mean ms per frame of recvBatch(.., 1) when producer `id` sends one frame before each call (the send untimed). */
function oneLane(rx: Bus, traffic: Traffic, id: number, b: Bound, timer: number): number {
  let timed = 0;
  let frames = 0;
  for (;;) {
    traffic.send(id);
    const t0 = performance.now();
    const n = rx.recvBatch(traffic.check, 1);
    const t1 = performance.now();
    timed += t1 - t0;
    if (n !== 1) throw new Error(`oneLane: recvBatch took ${n} frames, expected 1`);
    if (++frames >= b.maxCount || t1 >= b.endAt) break;
  }
  return (timed - frames * timer) / frames;
}

/** Mean ms per frame of draining one frame from every lane (the sends untimed). */
function allLanes(rx: Bus, traffic: Traffic, lanes: number, b: Bound, timer: number): number {
  let timed = 0;
  let frames = 0;
  let drains = 0;
  for (;;) {
    for (let id = 0; id < lanes; id++) traffic.send(id);
    const t0 = performance.now();
    let n = rx.recvBatch(traffic.check, lanes);
    // One call takes them all (limit = lanes); the loop only guards against a short one, bounded.
    for (let k = 0; n < lanes && k < lanes; k++) n += rx.recvBatch(traffic.check, lanes - n);
    const t1 = performance.now();
    timed += t1 - t0;
    drains++;
    if (n !== lanes) throw new Error(`allLanes: drained ${n} frames, expected ${lanes}`);
    frames += n;
    if (frames >= b.maxCount || t1 >= b.endAt) break;
  }
  return (timed - drains * timer) / frames;
}

/** The consumer's cost per call and per frame with `lanes` lanes in use. */
async function consumerCost(args: RoleArgs): Promise<void> {
  const lanes = args.lanes!;
  const namespace = args.namespace!;
  if (!(lanes >= 1 && lanes <= MAX_PRODUCERS)) throw new Error(`consumerCost: lanes must be 1..${MAX_PRODUCERS}, got ${lanes}`);
  const endpoints = new Endpoints();
  try {
    // The first open creates the namespace's directory: room for every producer.
    const rx = endpoints.open({ name: 'rx', namespace, lanes, directoryEntries: lanes + DIRECTORY_SPARE });
    const senders: Sender[] = [];
    for (let id = 0; id < lanes; id++) senders.push(endpoints.open({ name: `p${id}`, namespace, ...PRODUCER_INBOX }).sender('rx'));
    const traffic = new Traffic(senders, args.size);
    // Every producer takes its lane with its first send.
    for (let id = 0; id < lanes; id++) traffic.send(id);
    rx.recvBatch(traffic.check, lanes);
    const stats = rx.stats();
    if (stats.lanesInUse !== lanes || stats.depth !== 0) throw new Error(`consumerCost: ${stats.lanesInUse} lanes in use and ${stats.depth} frames left after ${lanes} producers sent once each`);

    const measure = (seconds: number, maxCount: number) => {
      const timer = timerCost(bound(seconds / 4, maxCount));
      return {
        timer,
        empty: emptyPolls(rx, traffic, bound(seconds, maxCount)),
        one: oneLane(rx, traffic, 0, bound(seconds, maxCount), timer),
        all: allLanes(rx, traffic, lanes, bound(seconds, maxCount), timer),
      };
    };
    measure(args.warmupMs / 1000 / 4, args.maxCount); // warm-up, about warmupMs in all: JIT, caches, CPU clocks
    const m = measure(args.seconds, args.maxCount);
    traffic.verify('consumerCost');
    const ns = (ms: number) => ms * 1e6;
    await tell({ type: 'result', emptyNs: ns(m.empty), oneLaneNs: ns(m.one), allLanesNs: ns(m.all), timerNs: ns(m.timer), errors: 0 });
  } finally {
    endpoints.closeAll();
  }
}

/** Allocated bytes of a file (what it costs in memory on tmpfs), and its size. */
function usage(path: string): { size: number; allocated: number } {
  const st = statSync(path);
  return { size: st.size, allocated: st.blocks * 512 };
}

/** File size and allocated bytes of an inbox of `lanes` lanes, fresh and with one lane full. */
async function memory(args: RoleArgs): Promise<void> {
  const lanes = args.lanes!;
  const namespace = args.namespace!;
  const endpoints = new Endpoints();
  try {
    const rx = endpoints.open({ name: 'rx', namespace, lanes });
    const path = join(rx.options.dir, layout.inboxFileName(namespace, 'rx'));
    const fresh = usage(path);
    const traffic = new Traffic([endpoints.open({ name: 'p0', namespace, ...PRODUCER_INBOX }).sender('rx')], args.size);
    const capacity = rx.stats().capacity;
    for (let k = 0; k < capacity; k++) traffic.send(0);
    const filled = usage(path);
    if (rx.stats().depth !== capacity) throw new Error(`memory: ${rx.stats().depth} frames in the inbox after ${capacity} sends`);
    // Read them back (checked), bounded: each call takes up to 256.
    for (let k = 0; k <= capacity && traffic.received < capacity; k++) rx.recvBatch(traffic.check);
    traffic.verify('memory');
    await tell({ type: 'result', fileBytes: fresh.size, freshBytes: fresh.allocated, filledBytes: filled.allocated, errors: 0 });
  } finally {
    endpoints.closeAll();
  }
}

if (require.main === module) childMain({ consumerCost, memory });
