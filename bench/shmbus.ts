/**
 * shmbus between processes, through the public API only.
 *
 * Roles (spawned by run.ts, one process each):
 *   sink        owns inbox "rx" (of `lanes` lanes when the row sets it); busy-polls recvBatch (zero-copy FrameView), checks every frame
 *   source      owns "tx<id>"; sends to "rx": sendToLocal per frame (batch 1) or
 *               sendToLocalBatch of `batch` reused payloads; spins while the inbox is full
 *   echo        owns "srv"; busy-polls recvBatch and sends each frame back to "cli"
 *   ping        owns "cli"; sends to "srv", busy-polls recvBatch for the reply
 *   echoParked  like echo, but receives with `for await (const f of bus.frames())` (parks on the doorbell)
 *   pingParked  like ping, but waits for the reply with the same iterator (parks on the doorbell)
 *
 * Every send goes through {@link senderTo}, the one place that names the send
 * calls of the Bus API.
 */
import { Bus, type FrameView } from '../src/index';
import { KIND_END, KIND_MEASURED, Phases, ThroughputChecker, Watchdog, childMain, filler, readSeq, rttResult, stamp, tell, waitForGo, type RoleArgs } from './common';

function open(args: RoleArgs, name: string): Bus {
  return Bus.openSync({ name, namespace: args.namespace!, slotSize: args.slotSize!, capacity: args.capacity!, ...(args.lanes !== undefined ? { lanes: args.lanes } : {}) });
}

/** What a row sends through: one destination; a frame, or `count` frames of `payloads` from `start`. */
interface Sender {
  send(payload: Uint8Array): boolean;
  sendBatch(payloads: readonly Uint8Array[], start: number, count: number): number;
}

/**
 * THE SEND CALL: the only place the shmbus rows get the Bus's send API — the
 * per-destination handle, as an application's hot loop would hold it.
 */
function senderTo(bus: Bus, to: string): Sender {
  return bus.sender(to);
}

/** Throughput receiver: busy-polls its inbox until every producer has sent its end frame. */
async function sink(args: RoleArgs): Promise<void> {
  const bus = open(args, 'rx');
  const checker = new ThroughputChecker(args.size, args.producers ?? 1);
  const handler = (view: FrameView) => checker.frame(view.bytes, view.payloadOffset, view.length);
  const dog = new Watchdog(args, 'sink');
  await tell({ type: 'ready' });
  while (!checker.done) if (bus.recvBatch(handler, 256) === 0) dog.check();
  const result = checker.result();
  await bus.close();
  if (checker.errors > 0) throw new Error(`sink: ${checker.errors} error(s); first: ${checker.firstError}`);
  await tell(result);
}

/** Throughput sender. A full inbox is retried at once (busy), as a producer that must not drop would. */
async function source(args: RoleArgs): Promise<void> {
  const id = args.id ?? 0;
  const bus = open(args, `tx${id}`);
  const rx = senderTo(bus, 'rx');
  const size = args.size;
  const batch = args.batch ?? 1;
  const payloads: Uint8Array[] = [];
  for (let k = 0; k < batch; k++) payloads.push(filler(size));
  await tell({ type: 'ready' });
  const phases = new Phases(args, await waitForGo());
  const dog = new Watchdog(args, 'source');
  let seq = 0;
  let refused = 0;
  if (batch === 1) {
    const payload = payloads[0]!;
    for (;;) {
      const kind = phases.kind(seq);
      stamp(payload, 0, size, seq, kind, id);
      while (!rx.send(payload)) {
        refused++;
        dog.check();
      }
      seq++;
      if (kind === KIND_END) break;
    }
  } else {
    let last = false;
    while (!last) {
      let n = 0;
      while (n < batch) {
        const kind = phases.kind(seq);
        stamp(payloads[n]!, 0, size, seq, kind, id);
        seq++;
        n++;
        if (kind === KIND_END) {
          last = true;
          break;
        }
      }
      let sent = 0;
      while (sent < n) {
        const k = rx.sendBatch(payloads, sent, n - sent);
        if (k === 0) {
          refused++;
          dog.check();
        }
        sent += k;
      }
    }
  }
  await bus.close();
  await tell({ type: 'done', sent: seq, errors: 0, refused });
}

/** Busy-poll ping-pong server. */
async function echo(args: RoleArgs): Promise<void> {
  const bus = open(args, 'srv');
  const cli = senderTo(bus, 'cli');
  let expected = 0;
  let errors = 0;
  let echoed = 0;
  let end = false;
  const handler = (view: FrameView) => {
    const bytes = view.bytes;
    const offset = view.payloadOffset;
    const seq = readSeq(bytes, offset);
    if (seq !== expected || view.length !== args.size || bytes[offset + view.length - 1] !== (seq & 0xff)) errors++;
    expected = (seq + 1) >>> 0;
    while (!cli.send(view.payload)) dog.check();
    echoed++;
    if (bytes[offset + 4] === KIND_END) end = true;
  };
  const dog = new Watchdog(args, 'echo');
  await tell({ type: 'ready' });
  while (!end) if (bus.recvBatch(handler, 256) === 0) dog.check();
  await bus.close();
  await tell({ type: 'done', sent: echoed, errors });
}

/** Busy-poll ping-pong client. */
async function ping(args: RoleArgs): Promise<void> {
  const bus = open(args, 'cli');
  const srv = senderTo(bus, 'srv');
  const size = args.size;
  const payload = filler(size);
  const samples = new Float64Array(args.maxCount + 1);
  let seq = 0;
  let errors = 0;
  const onReply = (view: FrameView) => {
    const bytes = view.bytes;
    const offset = view.payloadOffset;
    if (readSeq(bytes, offset) !== seq || view.length !== size || bytes[offset + size - 1] !== (seq & 0xff)) errors++;
  };
  await tell({ type: 'ready' });
  const phases = new Phases(args, await waitForGo());
  const dog = new Watchdog(args, 'ping');
  let count = 0;
  let measureStart = 0;
  for (;;) {
    const kind = phases.kind(seq);
    if (kind !== 0 && measureStart === 0) measureStart = performance.now();
    stamp(payload, 0, size, seq, kind, 0);
    const t0 = performance.now();
    while (!srv.send(payload)) dog.check();
    while (bus.recvBatch(onReply, 1) === 0) dog.check();
    const t1 = performance.now();
    if (kind === KIND_MEASURED || kind === KIND_END) samples[count++] = t1 - t0;
    seq++;
    if (kind === KIND_END) break;
  }
  const seconds = (performance.now() - measureStart) / 1000;
  await bus.close();
  if (errors > 0) throw new Error(`ping: ${errors} bad replies`);
  await tell(rttResult(samples, count, seconds, errors));
}

/** Parked ping-pong server: the event-driven receive (async iterator over the doorbell). */
async function echoParked(args: RoleArgs): Promise<void> {
  const bus = open(args, 'srv');
  const cli = senderTo(bus, 'cli');
  let expected = 0;
  let errors = 0;
  let echoed = 0;
  await tell({ type: 'ready' });
  for await (const frame of bus.frames()) {
    const p = frame.payload;
    const seq = readSeq(p, 0);
    if (seq !== expected || p.length !== args.size || p[p.length - 1] !== (seq & 0xff)) errors++;
    expected = (seq + 1) >>> 0;
    while (!cli.send(p)) {}
    echoed++;
    if (p[4] === KIND_END) break;
  }
  await bus.close();
  await tell({ type: 'done', sent: echoed, errors });
}

/** Parked ping-pong client: sends, then awaits the reply from the same async iterator. */
async function pingParked(args: RoleArgs): Promise<void> {
  const bus = open(args, 'cli');
  const srv = senderTo(bus, 'srv');
  const size = args.size;
  const payload = filler(size);
  const samples = new Float64Array(args.maxCount + 1);
  const replies = bus.frames();
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
    while (!srv.send(payload)) {}
    const next = await replies.next();
    const t1 = performance.now();
    if (next.done) throw new Error('pingParked: bus closed');
    const p = next.value.payload;
    if (readSeq(p, 0) !== seq || p.length !== size || p[size - 1] !== (seq & 0xff)) errors++;
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

if (require.main === module) childMain({ sink, source, echo, ping, echoParked, pingParked });
