/**
 * A test's helper process, and both halves of the conversation it has with
 * the test: what a producer child writes into each payload, and how the
 * receiving side checks it.
 *
 * Usage: node --import tsx child.ts <role> '<json args>'. The child prints one
 * line per milestone on stdout (a pipe: each line is written before the next
 * statement runs, so a line is a fact the test may rely on); the test waits
 * for those lines. Imported (not run), this file only exports the payload
 * codec and the receiver-side checks.
 *
 * Payload of an ordered-delivery frame (little-endian):
 *
 *    0               4               8                                length
 *   +---------------+---------------+----------------------------------+
 *   | producer id   | sequence      | filler: byte k = fill(id, seq, k) |
 *   +---------------+---------------+----------------------------------+
 *
 * The filler depends on every byte's position, so a frame that arrives torn,
 * shifted or half-written (a long message missing a piece) is seen.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as yieldToLoop, setTimeout as sleep } from 'node:timers/promises';
import { Bus, type Sender } from '../../src/index';
import { InboxConsumer } from '../../src/inbox';
import { FRAME_FLAG_CONTINUATION, SEGMENT_KIND_INBOX, SLOT_FLAGS_OFFSET, SLOT_HEADER_LENGTH, SLOT_LENGTH_OFFSET, SLOT_MESSAGE_LENGTH_OFFSET, inboxFileName, slotOffset } from '../../src/layout';
import { Segment, sleepSync } from '../../src/segment';
import { Directory } from '../../src/directory';
import { inspectNamespace, type EndpointReport } from '../../src/stat';

// ---------------------------------------------------------------------------
// The payload codec (writer: producer children; reader: the tests) lives in
// harness/payload.ts, shared with the mesh harness.
// ---------------------------------------------------------------------------

const WORD = 4;

/** This file, to run as a child process (test/_helpers/index.ts spawnChild does). */
export const CHILD_SCRIPT = __filename;

import { FrameChecker, encodePayload } from '../../harness/payload';

export { FrameChecker, PAYLOAD_HEADER_LENGTH, encodePayload } from '../../harness/payload';

/**
 * Busy-poll `bus` with recvBatch (yielding to the event loop when the inbox is
 * empty, so children are reaped and their output read) until `done()`;
 * throws after `ms`.
 */
export async function drainUntil(bus: Bus, checker: FrameChecker, done: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  let batches = 0;
  let idle = 0;
  while (!done()) {
    if (bus.recvBatch(checker.handler, 4096) > 0) {
      idle = 0;
      if (++batches % 16 === 0) await yieldToLoop();
    } else if (++idle < 256) {
      await yieldToLoop();
    } else {
      // Empty for a while: stop spinning, so producers starting on a small machine get the CPU.
      await sleep(1);
    }
    if (Date.now() > end) throw new Error(`deadline: ${what} within ${ms} ms (${checker.summary()})`);
  }
}

/** A process's state letter from /proc (R, S, T stopped, Z zombie; '?' once it is gone). */
export function processState(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]!;
  } catch {
    return '?';
  }
}

/** Endpoint `name` of a namespace as `shmbus stat` sees it (lanes with owners, counters). */
export function endpointReport(dir: string, ns: string, name: string): EndpointReport {
  const report = inspectNamespace(dir, ns)?.endpoints.find((e) => e.name === name);
  if (report === undefined) throw new Error(`no endpoint ${name} in namespace ${ns}`);
  return report;
}

/** What a producer child printed about its lane: `lane <index> base <tail before its first frame> slots <per frame>`. */
export interface LaneReport {
  readonly lane: number;
  readonly base: number;
  readonly slots: number;
}

export function parseLaneLine(line: string): LaneReport {
  const m = /^lane (\d+) base (\d+) slots (\d+)$/.exec(line);
  if (m === null) throw new Error(`not a lane line: ${line}`);
  return { lane: Number(m[1]), base: Number(m[2]), slots: Number(m[3]) };
}

/** `done sent <n> last <seq> refusals <r> lanewaits <w>`: the producer's own count of frames whose send returned true. */
export function parseDoneLine(line: string): { sent: number; last: number; refusals: number; laneWaits: number } {
  const m = /^done sent (\d+) last (-?\d+) refusals (\d+) lanewaits (\d+)$/.exec(line);
  if (m === null) throw new Error(`not a done line: ${line}`);
  return { sent: Number(m[1]), last: Number(m[2]), refusals: Number(m[3]), laneWaits: Number(m[4]) };
}

// ---------------------------------------------------------------------------
// The child process.
// ---------------------------------------------------------------------------

interface Args {
  dir: string;
  ns: string;
  name: string;
  dest?: string;
  count?: number;
  id?: number;
  payloadSize?: number;
  /** sink: print `progress <total>` every this many frames (off when absent). */
  progressEvery?: number;
  /** sink: after `count` frames, keep reading this long and count anything more as an error (a duplicate). */
  lingerMs?: number;
  /** producer: frames per send (sendBatch when > 1; default 1). */
  batch?: number;
  /** producer, when its lane is full: 'spin' (retry, yielding now and then; default) or 'wait' (sendAsync: sleep until the consumer makes room). */
  onFull?: 'spin' | 'wait';
  /** producer: on ERR_SHMBUS_NO_LANE, retry every few ms instead of failing (counted as lanewaits). */
  laneWait?: boolean;
  /** producer: after the first frame, print `lane <index> base <tail before it> slots <slots per frame>` (local destinations). */
  reportLane?: boolean;
  /** producer: print `committed <n>` whenever n, the frames whose send returned true, passes a multiple of this. */
  checkpointEvery?: number;
  /** producer: after `done`, keep the lane until SIGTERM, then close and print `closed`. */
  hold?: boolean;
  /** Spread the frames over about this long (ms): a test's driver can act mid-stream however fast the path is. */
  paceMs?: number;
  /** latency-sink: receive with 'frames' (the async iterator, default) or 'event' (on('frame')). */
  mode?: 'frames' | 'event';
  /** Bus option lockTimeoutMs (many processes starting at once on few cores hold the directory lock for a while). */
  lockTimeoutMs?: number;
  /** scribble-and-die: slots to scribble past the tail. */
  slots?: number;
  /** lock-holder: how long to hold the namespace's directory lock (ms). */
  holdMs?: number;
  /** frames-return: end the parked iterator with it.return() ('return', default) or an AbortSignal ('abort'). */
  end?: 'return' | 'abort';
  /** signal-target: the application's own SIGTERM listener, added before or after Bus.open (absent: none). */
  ownHandler?: 'before' | 'after' | 'once-after' | 'prepend-once-after';
  /** signal-target: Bus option handleSignals. */
  handleSignals?: boolean;
}

function openOwn(args: Args): Bus {
  return Bus.openSync({ name: args.name, namespace: args.ns, dir: args.dir, ...(args.lockTimeoutMs === undefined ? {} : { lockTimeoutMs: args.lockTimeoutMs }) });
}

function codeOf(err: unknown): string {
  return (err as { code?: string }).code ?? String(err);
}

/** Find this process's lane in inbox `dest` (after a first send), with its tail. */
function ownLane(args: Args): { lane: number; tail: number; slotSize: number } {
  const report = endpointReport(args.dir, args.ns, args.dest!);
  const mine = report.lanesInUse.find((l) => l.owner.state === 'owned' && l.owner.pid === process.pid);
  if (mine === undefined) throw new Error(`pid ${process.pid} owns no lane of ${args.dest}: ${JSON.stringify(report.lanesInUse)}`);
  return { lane: mine.lane, tail: mine.tail, slotSize: report.slotSize };
}

/** Wait for SIGTERM (the test's "exit cleanly now"), keeping the process alive until then. */
function terminated(): Promise<void> {
  const alive = setInterval(() => {}, 1 << 30);
  return new Promise((resolve) =>
    process.once('SIGTERM', () => {
      clearInterval(alive);
      resolve();
    }),
  );
}

async function produce(args: Args): Promise<void> {
  const bus = openOwn(args);
  const stop = args.hold === true ? terminated() : null;
  console.log('ready');
  const count = args.count ?? 1000;
  const id = args.id ?? 0;
  const batch = Math.max(1, args.batch ?? 1);
  const size = args.payloadSize ?? 16;
  const pool = Array.from({ length: batch }, () => new Uint8Array(size));
  const every = args.checkpointEvery ?? 0;
  let sender: Sender | null = null;
  let sent = 0;
  let refusals = 0;
  let laneWaits = 0;
  let spins = 0;
  const started = Date.now();
  const committed = (n: number) => {
    const before = sent;
    sent += n;
    if (before === 0 && args.reportLane === true) {
      const { lane, tail, slotSize } = ownLane(args);
      const slots = Math.ceil(size / (slotSize - SLOT_HEADER_LENGTH));
      console.log(`lane ${lane} base ${(tail - n * slots) >>> 0} slots ${slots}`);
    }
    if (every > 0 && Math.floor(before / every) !== Math.floor(sent / every)) console.log(`committed ${sent}`);
  };
  while (sent < count) {
    const n = Math.min(batch, count - sent);
    for (let k = 0; k < n; k++) encodePayload(pool[k]!, id, sent + k);
    let written: number;
    try {
      sender ??= bus.sender(args.dest!);
      written = n === 1 ? (sender.send(pool[0]!) ? 1 : 0) : sender.sendBatch(pool, 0, n);
    } catch (err) {
      const code = codeOf(err);
      if (code === 'ERR_SHMBUS_NO_LANE' && args.laneWait === true) {
        laneWaits++;
        await sleep(2 + Math.random() * 3);
        continue;
      }
      // A dead relay with a full inbox: wait for its restart, as an application would.
      if (code !== 'ERR_SHMBUS_RELAY_UNAVAILABLE') throw err;
      await sleep(5);
      continue;
    }
    if (written > 0) committed(written);
    if (args.paceMs !== undefined && (sent & 0xff) < written) {
      const due = started + (args.paceMs * sent) / count;
      if (Date.now() < due) await sleep(due - Date.now());
    }
    if (written === n) {
      if ((sent & 0xffff) < n) await yieldToLoop();
      continue;
    }
    refusals++;
    if (args.onFull === 'wait') {
      // pool[written] holds frame `sent`: send it as soon as the consumer makes room.
      if (await sender!.sendAsync(pool[written]!, { timeoutMs: 1000 })) committed(1);
    } else if (++spins % 64 === 0) {
      await yieldToLoop();
    }
  }
  console.log(`done sent ${sent} last ${sent - 1} refusals ${refusals} lanewaits ${laneWaits}`);
  if (stop !== null) await stop;
  await bus.close();
  if (stop !== null) console.log('closed');
}

async function main(role: string | undefined, args: Args): Promise<void> {
  switch (role) {
    case 'producer':
      return produce(args);
    case 'sink': {
      // Receive `count` frames; print one line per producer id with the count and any order error.
      const bus = openOwn(args);
      console.log('ready');
      const next = new Map<number, number>();
      let errors = 0;
      let total = 0;
      for await (const frame of bus.frames()) {
        const view = new DataView(frame.payload.buffer, frame.payload.byteOffset, frame.payload.byteLength);
        const id = view.getUint32(0, true);
        const seq = view.getUint32(4, true);
        if (seq !== (next.get(id) ?? 0)) {
          if (errors++ < 5) console.log(`order error: producer ${id} seq ${seq} expected ${next.get(id) ?? 0} from ${frame.source}`);
        }
        next.set(id, seq + 1);
        if (++total === args.count) break;
        if (args.progressEvery !== undefined && total % args.progressEvery === 0) console.log(`progress ${total}`);
      }
      if (args.lingerMs !== undefined) {
        // Anything after the expected count is a frame delivered twice (or one nobody sent).
        const until = performance.now() + args.lingerMs;
        while (performance.now() < until) {
          const extra = bus.recvFromLocal();
          if (extra === null) {
            await sleep(5);
            continue;
          }
          const view = new DataView(extra.payload.buffer, extra.payload.byteOffset, extra.payload.byteLength);
          if (errors++ < 5) console.log(`extra frame: producer ${view.getUint32(0, true)} seq ${view.getUint32(4, true)} from ${extra.source}`);
        }
      }
      const counts = [...next.entries()].sort((x, y) => x[0] - y[0]).map(([id, n]) => `${id}:${n}`);
      console.log(`received ${total} errors ${errors} ${counts.join(' ')}`);
      await bus.close();
      return;
    }
    case 'owner': {
      openOwn(args);
      console.log('ready');
      setInterval(() => {}, 1 << 30);
      return;
    }
    case 'echo': {
      const bus = openOwn(args);
      console.log('ready');
      let n = 0;
      for await (const frame of bus.frames()) {
        if (frame.payload.length === 0) break;
        bus.sendToLocal(frame.source, frame.payload);
        if (++n === (args.count ?? Infinity)) break;
      }
      console.log(`echoed ${n} wakeups ${bus.stats().wakeups}`);
      await bus.close();
      return;
    }
    case 'lane-probe': {
      // Send one frame to `dest`; print `sent` or `refused <code>`; on SIGUSR2 try again; exit on SIGTERM.
      const bus = openOwn(args);
      const payload = new Uint8Array(16);
      encodePayload(payload, args.id ?? 0, 0);
      const attempt = () => {
        try {
          console.log(bus.sendToLocal(args.dest!, payload) ? 'sent' : 'full');
        } catch (err) {
          console.log(`refused ${codeOf(err)}`);
        }
      };
      process.on('SIGUSR2', attempt);
      const stop = terminated();
      console.log('ready');
      attempt();
      await stop;
      await bus.close();
      console.log('closed');
      return;
    }
    case 'scribble-and-die': {
      // Send `count` frames, then write `slots` slots past the lane's tail
      // without publishing them (a producer killed in the middle of writing
      // a long message), and die.
      const bus = openOwn(args);
      const id = args.id ?? 0;
      const payload = new Uint8Array(args.payloadSize ?? 16);
      for (let seq = 0; seq < (args.count ?? 1); seq++) {
        encodePayload(payload, id, seq);
        if (!bus.sendToLocal(args.dest!, payload)) throw new Error(`lane full at ${seq}`);
      }
      const { lane, tail } = ownLane(args);
      const segment = Segment.attach(join(args.dir, inboxFileName(args.ns, args.dest!)), SEGMENT_KIND_INBOX);
      const inbox = new InboxConsumer(segment.buffer);
      const slots = args.slots ?? 3;
      const bytes = new Uint8Array(segment.buffer);
      for (let k = 0; k < slots; k++) {
        // The pieces of a well-formed message of `slots` slots, full of 0xee: only the tail store is missing.
        const at = slotOffset(lane, (tail + k) & (inbox.capacity - 1), inbox.slotSize, inbox.capacity, inbox.laneCount);
        bytes.fill(0xee, at, at + inbox.slotSize);
        segment.u32[(at + SLOT_LENGTH_OFFSET) / WORD] = inbox.maxPayload;
        segment.u32[(at + SLOT_FLAGS_OFFSET) / WORD] = k === 0 ? 0 : FRAME_FLAG_CONTINUATION;
        segment.u32[(at + SLOT_MESSAGE_LENGTH_OFFSET) / WORD] = inbox.maxPayload * slots;
      }
      console.log(`scribbled lane ${lane} tail ${tail} slots ${slots}`);
      process.kill(process.pid, 'SIGKILL');
      return;
    }
    case 'latency-sink': {
      // Receive `count` frames stamped with the sender's clock; print `latency <ms>` for each, then the inbox's counters.
      const bus = openOwn(args);
      const count = args.count ?? 20;
      const latency = (payload: Uint8Array) => {
        const sentAt = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getFloat64(0, true);
        console.log(`latency ${(performance.timeOrigin + performance.now() - sentAt).toFixed(3)}`);
      };
      console.log('ready');
      let n = 0;
      if (args.mode === 'event') {
        await new Promise<void>((resolve) => {
          const onFrame = (frame: { payload: Uint8Array }) => {
            latency(frame.payload);
            if (++n === count) {
              bus.off('frame', onFrame);
              resolve();
            }
          };
          bus.on('frame', onFrame);
        });
      } else {
        for await (const frame of bus.frames()) {
          latency(frame.payload);
          if (++n === count) break;
        }
      }
      const { wakeups, parks } = bus.stats();
      console.log(`stats wakeups ${wakeups} parks ${parks}`);
      await bus.close();
      return;
    }
    case 'latency-source': {
      // `count` rounds: wait until `dest` is parked, then send one frame stamped with this process's clock.
      const bus = openOwn(args);
      const segment = Segment.attach(join(args.dir, inboxFileName(args.ns, args.dest!)), SEGMENT_KIND_INBOX);
      const observer = new InboxConsumer(segment.buffer);
      const sender = bus.sender(args.dest!);
      const payload = new Uint8Array(16);
      const stamp = new DataView(payload.buffer);
      console.log('ready');
      for (let round = 0; round < (args.count ?? 20); round++) {
        const end = Date.now() + 5000;
        while (!observer.isParked()) {
          if (Date.now() > end) throw new Error(`round ${round}: ${args.dest} did not park within 5000 ms`);
          await sleep(1);
        }
        // Parked means "about to sleep": give its waiter thread time to enter FUTEX_WAIT, so the
        // frame must be rung in (this delay is part of what is measured against, not a handshake).
        await sleep(5);
        stamp.setFloat64(0, performance.timeOrigin + performance.now(), true);
        if (!sender.send(payload)) throw new Error(`round ${round}: lane full`);
        console.log(`sent ${round}`);
        // The send took the bell (parked 1 -> 0); the next round waits for the receiver to park again.
      }
      segment.unmap();
      await bus.close();
      return;
    }
    case 'lock-holder': {
      // Hold the namespace's directory lock for `holdMs` (the thread sleeps), print `locked` before and `released` after.
      const directory = Directory.open({ dir: args.dir, namespace: args.ns, entryCount: 256, mode: 0o600, lockTimeoutMs: 2000 });
      directory.withLock(() => {
        console.log('locked');
        sleepSync(args.holdMs ?? 300);
      });
      console.log('released');
      directory.close();
      return;
    }
    case 'frames-return': {
      // Park a frames() iterator, end it (return() or abort), print how long that took, and leave
      // the bus open: the process must then exit by itself (the exit hook closes the bus).
      const bus = openOwn(args);
      const controller = new AbortController();
      const it = bus.frames(args.end === 'abort' ? { signal: controller.signal } : {});
      const pending = it.next().then(
        (r) => `done ${r.done}`,
        (err: unknown) => `rejected ${codeOf(err)}`,
      );
      const end = Date.now() + 5000;
      while (!bus.stats().parked) {
        if (Date.now() > end) throw new Error('the iterator did not park within 5000 ms');
        await sleep(1);
      }
      console.log('parked');
      const started = performance.now();
      if (args.end === 'abort') controller.abort();
      else await it.return();
      const settled = await pending;
      console.log(`ended ${(performance.now() - started).toFixed(1)} ms ${settled}`);
      const after = await it.next();
      console.log(`then done ${after.done}`);
      return;
    }
    case 'signal-target': {
      // Open a bus, maybe with the application's own SIGTERM listener; print `ready`; live until killed.
      let handled = 0;
      const own = () => console.log(`handled ${++handled}`);
      if (args.ownHandler === 'before') process.on('SIGTERM', own);
      const bus = Bus.openSync({ name: args.name, namespace: args.ns, dir: args.dir, ...(args.handleSignals === undefined ? {} : { handleSignals: args.handleSignals }) });
      bus.on('close', ({ unread }) => console.log(`close event unread ${unread}`));
      if (args.ownHandler === 'after') process.on('SIGTERM', own);
      if (args.ownHandler === 'once-after') process.once('SIGTERM', own);
      if (args.ownHandler === 'prepend-once-after') process.prependOnceListener('SIGTERM', own);
      setInterval(() => {}, 1 << 30);
      console.log('ready');
      return;
    }
    default:
      throw new Error(`unknown role ${role}`);
  }
}

if (require.main === module) {
  const [role, json] = process.argv.slice(2);
  main(role, JSON.parse(json ?? '{}') as Args).catch((err: unknown) => {
    console.error(err);
    process.exit(70);
  });
}
