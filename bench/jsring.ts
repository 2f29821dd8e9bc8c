/**
 * The plain JS ring: a single-producer / single-consumer ring of fixed-size
 * slots in a mapping made by the addon (the same kind of mapping shmbus
 * uses), between two processes, with nothing but the ring. It is the limit
 * shmbus is compared to: what JavaScript reaches over shared memory when no
 * bus stands in the way. It mirrors bench/c/spsc.c (the other limit).
 *
 * One ring, offsets from its start (byte order: little-endian, as the host):
 *
 *   0                 128                256                    256 + CAPACITY × size
 *   +-----------------+------------------+---------+---------+--    --+
 *   | tail (i32)      | head (i32)       | slot 0  | slot 1  |  ...    |
 *   | producer writes | consumer writes  |  size B |  size B |         |
 *   +-----------------+------------------+---------+---------+--    --+
 *
 * tail and head each have a 128-byte pair of cache lines to themselves (as in
 * spsc.c: the adjacent-line prefetcher fetches lines in pairs). A slot is
 * exactly the payload size; the frame at position p is in slot p & (CAPACITY-1).
 * Positions are i32 and wrap; compare them by difference.
 *
 * Invariant: 0 <= tail - head <= CAPACITY, and the slots of positions
 * [head, tail) hold frames the consumer has not read: a frame is visible when
 * tail passes it, and its slot is free again when head passes it.
 *
 * Producer: keeps a cached copy of head and re-reads head (Atomics.load) only
 * when the cache says full; copies each payload into its slot, then publishes
 * with one Atomics.store of tail per frame (per batch when batched).
 * Consumer: reads tail once per poll (Atomics.load), takes every frame up to
 * it, then stores head once.
 *
 * The RTT rows use two rings in one mapping: ring A (ping -> echo) at 0,
 * ring B (echo -> ping) right after it, both sides spinning.
 *
 * The file: the receiving side (sink, echo) creates it (native.create, zero
 * filled) before it reports ready; the sending side (source, ping) maps it
 * (native.open) and unlinks it at once (native.unlink: the mappings live on,
 * so nothing is left even if a process is killed later); the runner removes
 * it too if the row fails before that. Both unmap at the end.
 *
 * Roles (spawned by the runner, one process each):
 *   sink    creates one ring; busy-polls it, checks every frame in place
 *   source  sends frames, `batch` per publish (1 or 32), copying one reused payload per frame
 *   echo    creates two rings; copies every frame from ring A into ring B
 *   ping    one frame out on ring A, waits for it on ring B, repeat
 */
import native from '../src/native';
import { KIND_END, KIND_MEASURED, Phases, ThroughputChecker, Watchdog, childMain, filler, readSeq, rttResult, stamp, tell, waitForGo, type RoleArgs } from './common';

/** i32 index of tail in a ring's words (byte offset 0). */
const TAIL_INDEX = 0;
/** i32 index of head (byte offset 128). */
const HEAD_INDEX = 128 / 4;
/** Byte offset of slot 0 from the ring's start. */
const SLOTS_OFFSET = 256;
/** Mode of the segment file. */
const FILE_MODE = 0o600;

/** One ring's place in the mapping. */
interface Ring {
  tail: number;
  head: number;
  slots: number;
}

function ringLength(args: RoleArgs): number {
  return SLOTS_OFFSET + capacityOf(args) * args.size;
}

function ringAt(args: RoleArgs, index: number): Ring {
  const start = index * ringLength(args);
  return { tail: start / 4 + TAIL_INDEX, head: start / 4 + HEAD_INDEX, slots: start + SLOTS_OFFSET };
}

function capacityOf(args: RoleArgs): number {
  const capacity = args.capacity ?? 0;
  if (capacity < 2 || (capacity & (capacity - 1)) !== 0) throw new Error(`jsring: capacity must be a power of two, got ${capacity}`);
  if (args.size < 8 || args.size % 64 !== 0) throw new Error(`jsring: size must be a multiple of 64, got ${args.size}`);
  return capacity;
}

function create(args: RoleArgs, rings: number): ArrayBuffer {
  return native.create(args.path!, rings * ringLength(args), FILE_MODE);
}

function attach(args: RoleArgs): ArrayBuffer {
  const buffer = native.open(args.path!);
  native.unlink(args.path!);
  return buffer;
}

/** Throughput receiver: polls tail, takes everything published, stores head once per poll. */
async function sink(args: RoleArgs): Promise<void> {
  const buffer = create(args, 1);
  try {
    const words = new Int32Array(buffer);
    const bytes = new Uint8Array(buffer);
    const { tail: tailIndex, head: headIndex, slots } = ringAt(args, 0);
    const size = args.size;
    const mask = capacityOf(args) - 1;
    const checker = new ThroughputChecker(size, 1);
    const dog = new Watchdog(args, 'jsring sink');
    await tell({ type: 'ready' });
    let head = 0;
    while (!checker.done) {
      // SYNC POINT: publish (acquire side): the slots up to tail are written.
      const tail = Atomics.load(words, tailIndex);
      if (tail === head) {
        dog.check();
        continue;
      }
      do {
        checker.frame(bytes, slots + (head & mask) * size, size);
        head = (head + 1) | 0;
      } while (head !== tail);
      // SYNC POINT: release (release side): the slots before head are read.
      Atomics.store(words, headIndex, head);
    }
    const result = checker.result();
    if (checker.errors > 0) throw new Error(`jsring sink: ${checker.errors} error(s); first: ${checker.firstError}`);
    await tell(result);
  } finally {
    native.unmap(buffer);
  }
}

/** Throughput sender: one Atomics.store of tail per frame (batch 1) or per `batch` frames. */
async function source(args: RoleArgs): Promise<void> {
  const buffer = attach(args);
  try {
    const words = new Int32Array(buffer);
    const bytes = new Uint8Array(buffer);
    const { tail: tailIndex, head: headIndex, slots } = ringAt(args, 0);
    const size = args.size;
    const capacity = capacityOf(args);
    const mask = capacity - 1;
    const id = args.id ?? 0;
    const batch = args.batch ?? 1;
    const payloads: Uint8Array[] = [];
    for (let k = 0; k < batch; k++) payloads.push(filler(size));
    await tell({ type: 'ready' });
    const phases = new Phases(args, await waitForGo());
    const dog = new Watchdog(args, 'jsring source');
    let tail = 0;
    let cachedHead = 0;
    let refused = 0;
    let last = false;
    while (!last) {
      let n = 0;
      while (n < batch) {
        const kind = phases.kind(tail + n);
        stamp(payloads[n]!, 0, size, tail + n, kind, id);
        n++;
        if (kind === KIND_END) {
          last = true;
          break;
        }
      }
      if (((tail - cachedHead) | 0) > capacity - n) {
        // SYNC POINT: release (acquire side): slots before head may be overwritten.
        cachedHead = Atomics.load(words, headIndex);
        while (((tail - cachedHead) | 0) > capacity - n) {
          refused++;
          dog.check();
          cachedHead = Atomics.load(words, headIndex);
        }
      }
      for (let k = 0; k < n; k++) {
        bytes.set(payloads[k]!, slots + (tail & mask) * size);
        tail = (tail + 1) | 0;
      }
      // SYNC POINT: publish (release side): the slots before tail are written.
      Atomics.store(words, tailIndex, tail);
    }
    await tell({ type: 'done', sent: tail, errors: 0, refused });
  } finally {
    native.unmap(buffer);
  }
}

/** Busy-poll ping-pong server: every frame of ring A is copied into ring B. */
async function echo(args: RoleArgs): Promise<void> {
  const buffer = create(args, 2);
  try {
    const words = new Int32Array(buffer);
    const bytes = new Uint8Array(buffer);
    const a = ringAt(args, 0);
    const b = ringAt(args, 1);
    const size = args.size;
    const capacity = capacityOf(args);
    const mask = capacity - 1;
    const dog = new Watchdog(args, 'jsring echo');
    await tell({ type: 'ready' });
    let headA = 0;
    let tailB = 0;
    let cachedHeadB = 0;
    let errors = 0;
    let end = false;
    while (!end) {
      const tailA = Atomics.load(words, a.tail);
      if (tailA === headA) {
        dog.check();
        continue;
      }
      do {
        const from = a.slots + (headA & mask) * size;
        const seq = readSeq(bytes, from);
        if (seq !== headA >>> 0 || bytes[from + size - 1] !== (seq & 0xff)) errors++;
        if (bytes[from + 4] === KIND_END) end = true;
        while (((tailB - cachedHeadB) | 0) >= capacity) {
          dog.check();
          cachedHeadB = Atomics.load(words, b.head);
        }
        const to = b.slots + (tailB & mask) * size;
        bytes.copyWithin(to, from, from + size);
        headA = (headA + 1) | 0;
        tailB = (tailB + 1) | 0;
      } while (headA !== tailA);
      Atomics.store(words, a.head, headA);
      Atomics.store(words, b.tail, tailB);
    }
    await tell({ type: 'done', sent: tailB, errors });
  } finally {
    native.unmap(buffer);
  }
}

/** Busy-poll ping-pong client: records each round trip from before the send to after the reply is checked. */
async function ping(args: RoleArgs): Promise<void> {
  const buffer = attach(args);
  try {
    const words = new Int32Array(buffer);
    const bytes = new Uint8Array(buffer);
    const a = ringAt(args, 0);
    const b = ringAt(args, 1);
    const size = args.size;
    const capacity = capacityOf(args);
    const mask = capacity - 1;
    const payload = filler(size);
    const samples = new Float64Array(args.maxCount + 1);
    await tell({ type: 'ready' });
    const phases = new Phases(args, await waitForGo());
    const dog = new Watchdog(args, 'jsring ping');
    let tailA = 0;
    let cachedHeadA = 0;
    let headB = 0;
    let count = 0;
    let errors = 0;
    let measureStart = 0;
    for (;;) {
      const seq = tailA;
      const kind = phases.kind(seq);
      if (kind !== 0 && measureStart === 0) measureStart = performance.now();
      stamp(payload, 0, size, seq, kind, 0);
      const t0 = performance.now();
      while (((tailA - cachedHeadA) | 0) >= capacity) {
        dog.check();
        cachedHeadA = Atomics.load(words, a.head);
      }
      bytes.set(payload, a.slots + (tailA & mask) * size);
      tailA = (tailA + 1) | 0;
      Atomics.store(words, a.tail, tailA);
      while (Atomics.load(words, b.tail) === headB) dog.check();
      const at = b.slots + (headB & mask) * size;
      if (readSeq(bytes, at) !== seq >>> 0 || bytes[at + size - 1] !== (seq & 0xff)) errors++;
      headB = (headB + 1) | 0;
      Atomics.store(words, b.head, headB);
      const t1 = performance.now();
      if (kind === KIND_MEASURED || kind === KIND_END) samples[count++] = t1 - t0;
      if (kind === KIND_END) break;
    }
    const seconds = (performance.now() - measureStart) / 1000;
    if (errors > 0) throw new Error(`jsring ping: ${errors} bad replies`);
    await tell(rttResult(samples, count, seconds, errors));
  } finally {
    native.unmap(buffer);
  }
}

if (require.main === module) childMain({ sink, source, echo, ping });
