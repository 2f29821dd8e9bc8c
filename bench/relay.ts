/**
 * The relay path between two "hosts" (namespaces), through the public API only:
 * an app on alpha sends with `bus.send('<name>@beta', payload)`, alpha's
 * transit-server drains its outbound ring into TCP, beta's writes the frames
 * into the receiving app's inbox. Spawned by run.ts, one process each, after
 * the runner has started both relays (bench/cluster.ts).
 *
 * Roles:
 *   sink          owns `name` on beta; receives with recvBatch (zero-copy), checks every frame
 *                 (length, per-producer sequence, tail byte, source address); `idle` says what it
 *                 does when the inbox is empty: 'spin' (busy poll) or 'park' (wait on the doorbell
 *                 through the frames() iterator, then recvBatch again)
 *   source        owns `name` on alpha; bus.send(to, payload) per frame (there is no batch send to
 *                 another host: batching is the relay's); a refusal (false: the relay's inbox is
 *                 full) is retried, see `retry`
 *   echoParked    owns `name` on beta; `for await (const f of bus.frames())`, sends each frame back
 *                 to f.source (which must be `to`, the ping's address)
 *   pingParked    owns `name` on alpha; sends to `to`, awaits the reply from the same iterator
 *   backlogSink   owns `name` on beta with a small inbox; reads nothing until the runner says
 *                 {type:'read'}, then drains everything (parking when empty), checking order and count
 *   backlogSource owns `name` on alpha; pushes `frames` frames as fast as the relay takes them
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { Bus, FrameView } from '../src/index';
import { KIND_END, KIND_MEASURED, Phases, ThroughputChecker, Watchdog, childMain, filler, readSeq, rttResult, stamp, tell, waitForGo, type RoleArgs } from './common';

const DIR = '/dev/shm';

function open(args: RoleArgs): Bus {
  return Bus.openSync({ name: args.name!, namespace: args.namespace!, dir: DIR, slotSize: args.slotSize!, capacity: args.capacity! });
}

/**
 * What a sender does when send() returns false. Two things matter on the
 * relay path: (1) the relay's doorbell is a UDP datagram that Node's dgram
 * sends from a process.nextTick callback (it resolves the address first), so
 * it leaves only when the sending app returns to its event loop; (2) the
 * sender shares its core with its relay, so spinning takes CPU from the relay
 * that would make room. So: yield to the event loop at once (the doorbell
 * goes out), then, while still refused, sleep 1 ms in the event loop (epoll:
 * the core is the relay's).
 */
class Retry {
  refused = 0;
  private streak = 0;

  constructor(private readonly dog: Watchdog) {}

  async wait(): Promise<void> {
    this.refused++;
    this.dog.check();
    if (this.streak++ === 0) await yieldToLoop();
    else await new Promise((resolve) => setTimeout(resolve, 1));
  }

  ok(): void {
    this.streak = 0;
  }
}

/** Frames a sender writes between two turns of its event loop (so a doorbell it took goes out). */
const YIELD_EVERY = 256;

/** Throughput receiver on beta. */
async function sink(args: RoleArgs): Promise<void> {
  const bus = open(args);
  const checker = new ThroughputChecker(args.size, args.producers ?? 1);
  let firstSource = '';
  const handler = (view: FrameView) => {
    if (firstSource === '') firstSource = bus.sourceName(view);
    checker.frame(view.bytes, view.payloadOffset, view.length);
  };
  const dog = new Watchdog(args, 'sink');
  await tell({ type: 'ready' });
  if (args.idle === 'park') {
    // Zero-copy while frames are there; when the inbox is empty, wait on the doorbell
    // (the iterator parks on the futex and hands over the next frame as a copy).
    const frames = bus.frames();
    while (!checker.done) {
      if (bus.recvBatch(handler, 256) !== 0) continue;
      const next = await frames.next();
      if (next.done) throw new Error('sink: bus closed');
      const p = next.value.payload;
      if (firstSource === '') firstSource = next.value.source;
      checker.frame(p, 0, p.length);
    }
    await frames.return(undefined);
  } else {
    while (!checker.done) if (bus.recvBatch(handler, 256) === 0) dog.check();
  }
  const result = checker.result();
  const stats = bus.stats();
  await bus.close();
  if (checker.errors > 0) throw new Error(`sink: ${checker.errors} error(s); first: ${checker.firstError}`);
  if (args.to !== undefined && firstSource !== args.to) throw new Error(`sink: frames came from "${firstSource}", expected "${args.to}"`);
  await tell({ ...result, parks: stats.parks });
}

/** Throughput sender on alpha: one bus.send per frame, refusals retried (see Retry). */
async function source(args: RoleArgs): Promise<void> {
  const bus = open(args);
  const size = args.size;
  const to = args.to!;
  const id = args.id ?? 0;
  const payload = filler(size);
  await tell({ type: 'ready' });
  const phases = new Phases(args, await waitForGo());
  const retry = new Retry(new Watchdog(args, 'source'));
  let seq = 0;
  for (;;) {
    const kind = phases.kind(seq);
    stamp(payload, 0, size, seq, kind, id);
    while (!bus.send(to, payload)) await retry.wait();
    retry.ok();
    seq++;
    if (kind === KIND_END) break;
    if (seq % YIELD_EVERY === 0) await yieldToLoop();
  }
  // Let the last doorbell go out before closing.
  await yieldToLoop();
  await bus.close();
  await tell({ type: 'done', sent: seq, errors: 0, refused: retry.refused });
}

/** Parked ping-pong server on beta: replies to the frame's source address. */
async function echoParked(args: RoleArgs): Promise<void> {
  const bus = open(args);
  let expected = 0;
  let errors = 0;
  let echoed = 0;
  const dog = new Watchdog(args, 'echoParked');
  await tell({ type: 'ready' });
  for await (const frame of bus.frames()) {
    const p = frame.payload;
    const seq = readSeq(p, 0);
    if (seq !== expected || p.length !== args.size || p[p.length - 1] !== (seq & 0xff) || frame.source !== args.to) errors++;
    expected = (seq + 1) >>> 0;
    while (!bus.send(frame.source, p)) {
      dog.check();
      await yieldToLoop();
    }
    echoed++;
    if (p[4] === KIND_END) break;
  }
  await yieldToLoop();
  await bus.close();
  await tell({ type: 'done', sent: echoed, errors });
}

/** Parked ping-pong client on alpha. */
async function pingParked(args: RoleArgs): Promise<void> {
  const bus = open(args);
  const size = args.size;
  const to = args.to!;
  const payload = filler(size);
  const samples = new Float64Array(args.maxCount + 1);
  const replies = bus.frames();
  const dog = new Watchdog(args, 'pingParked');
  await tell({ type: 'ready' });
  const phases = new Phases(args, await waitForGo());
  let seq = 0;
  let count = 0;
  let errors = 0;
  let measureStart = 0;
  for (;;) {
    const kind = phases.kind(seq);
    if (kind !== 0 && measureStart === 0) measureStart = performance.now();
    stamp(payload, 0, size, seq, kind, 0);
    const t0 = performance.now();
    while (!bus.send(to, payload)) {
      dog.check();
      await yieldToLoop();
    }
    const next = await replies.next();
    const t1 = performance.now();
    if (next.done) throw new Error('pingParked: bus closed');
    const p = next.value.payload;
    if (readSeq(p, 0) !== seq || p.length !== size || p[size - 1] !== (seq & 0xff) || next.value.source !== to) errors++;
    if (kind === KIND_MEASURED || kind === KIND_END) samples[count++] = t1 - t0;
    seq++;
    if (kind === KIND_END) break;
  }
  const seconds = (performance.now() - measureStart) / 1000;
  await replies.return(undefined);
  await bus.close();
  if (errors > 0) throw new Error(`pingParked: ${errors} bad replies`);
  await tell(rttResult(samples, count, seconds, errors));
}

/** Wait for the runner's {type:'read'} (or the stall to pass, if the runner said nothing). */
function waitForRead(stallMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, stallMs);
    function done(): void {
      clearTimeout(timer);
      process.off('message', onMessage);
      resolve();
    }
    function onMessage(message: { type?: string }): void {
      if (message && message.type === 'read') done();
    }
    process.on('message', onMessage);
  });
}

/**
 * Backlog receiver: reads nothing until told (its small inbox fills, then
 * beta's relay holds frames pending, then stops reading from alpha), then
 * drains. Every frame must come exactly once, in order: a sequence number
 * other than the next expected one is an error; the count must be `frames`,
 * and nothing may follow the last one.
 */
async function backlogSink(args: RoleArgs): Promise<void> {
  const bus = open(args);
  const total = args.frames!;
  let expected = 0;
  let received = 0;
  let errors = 0;
  let firstError = '';
  let firstSource = '';
  const handler = (view: FrameView) => {
    const bytes = view.bytes;
    const offset = view.payloadOffset;
    const seq = readSeq(bytes, offset);
    if (firstSource === '' && view instanceof FrameView) firstSource = bus.sourceName(view);
    if (seq !== expected || view.length !== args.size || bytes[offset + view.length - 1] !== (seq & 0xff)) {
      if (errors++ === 0) firstError = `frame #${expected}: seq ${seq}, length ${view.length}`;
    }
    expected = (seq + 1) >>> 0;
    received++;
  };
  await tell({ type: 'ready' });
  await waitForRead(args.stallMs!);
  const t0 = performance.now();
  await tell({ type: 'reading' });
  // Zero-copy while frames are there; on an empty inbox, park on the doorbell (the core is shared with beta's relay).
  const frames = bus.frames();
  while (received < total) {
    if (bus.recvBatch(handler, 256) !== 0) continue;
    const next = await frames.next();
    if (next.done) throw new Error('backlogSink: bus closed');
    const p = next.value.payload;
    handler({ bytes: p, payloadOffset: 0, length: p.length } as FrameView);
  }
  await frames.return(undefined);
  const seconds = (performance.now() - t0) / 1000;
  // Nothing more may come (a duplicate would arrive after the last frame).
  await new Promise((resolve) => setTimeout(resolve, 300));
  let extra = 0;
  bus.recvBatch(() => extra++, 1 << 20);
  await bus.close();
  await tell({ type: 'result', received, extra, errors, firstError, source: firstSource, drainSeconds: seconds });
}

/** Backlog sender: `frames` frames, each bus.send retried until the relay takes it (see Retry). */
async function backlogSource(args: RoleArgs): Promise<void> {
  const bus = open(args);
  const size = args.size;
  const to = args.to!;
  const total = args.frames!;
  const payload = filler(size);
  await tell({ type: 'ready' });
  await waitForGo();
  const dog = new Watchdog(args, 'backlogSource');
  const sender = bus.sender(to);
  const t0 = performance.now();
  let longestRefusalMs = 0;
  let refused = 0;
  for (let seq = 0; seq < total; seq++) {
    stamp(payload, 0, size, seq, KIND_MEASURED, 0);
    if (!sender.send(payload)) {
      // The lane of the relay's inbox is full of unacked frames: sleep until the relay frees room
      // (it wakes the lane's head futex as acks release frames), as an application would.
      const since = performance.now();
      do {
        refused++;
        dog.check();
      } while (!(await sender.sendAsync(payload, { timeoutMs: 1000 })));
      longestRefusalMs = Math.max(longestRefusalMs, performance.now() - since);
    }
    if ((seq + 1) % YIELD_EVERY === 0) await yieldToLoop();
  }
  const seconds = (performance.now() - t0) / 1000;
  await yieldToLoop();
  const stats = bus.stats();
  await bus.close();
  await tell({ type: 'done', sent: total, errors: 0, refused, sendRefused: stats.sendRefused, longestRefusalMs, seconds });
}

if (require.main === module) childMain({ sink, source, echoParked, pingParked, backlogSink, backlogSource });
