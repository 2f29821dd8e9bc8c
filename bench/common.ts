/**
 * Shared pieces of the benchmark: the frame layout every measurement uses,
 * statistics, and the child side of the runner <-> child IPC protocol.
 *
 * Payload layout (every transport, every size):
 *   [0..4)   u32 LE sequence number (per producer)
 *   [4]      kind: KIND_WARMUP, KIND_MEASURED or KIND_END
 *   [5]      producer id (0..3)
 *   [len-1]  sequence & 0xff (catches torn or misplaced copies)
 * The rest is a fixed filler pattern the producer copies into every frame.
 *
 * Protocol: the runner spawns a child with `<file> <role> '<json args>'` and an
 * IPC channel. The child sets up, sends {type:'ready'}, waits for {type:'go'}
 * if it is a sender, runs, and sends {type:'result', ...} (the measuring side)
 * or {type:'done', ...} (the other side), then disconnects and exits. Any
 * failure is sent as {type:'error', message}.
 */

export const KIND_WARMUP = 0;
export const KIND_MEASURED = 1;
export const KIND_END = 2;

/** Arguments of every child role (JSON on the command line). */
export interface RoleArgs {
  /** Payload bytes per frame. */
  size: number;
  /** Time bound of the measured part, seconds. */
  seconds: number;
  /** Count bound of the measured part (frames or round trips). */
  maxCount: number;
  /** Warm-up before measuring (JIT, caches, CPU clocks), ms. */
  warmupMs: number;
  /** Producer id (0..producers-1). */
  id?: number;
  /** Producers feeding the consumer. */
  producers?: number;
  /** Frames per send call (1 = one frame per send). */
  batch?: number;
  /** Stream sockets (uds.ts): 'uds' (default, at `path`) or 'tcp' (127.0.0.1; the server picks the port and reports it in its ready message). */
  transport?: 'uds' | 'tcp';
  /** UDS: socket path; plain JS ring (jsring.ts): its segment file in /dev/shm. */
  path?: string;
  /** TCP: the server's port (set by the runner from the server's ready message). */
  port?: number;
  /** shmbus: namespace, inbox geometry (plain JS ring: `capacity` only). */
  namespace?: string;
  slotSize?: number;
  capacity?: number;
  /** shmbus: lanes of the inbox (the receiver's, where a row sets it; else the default). Lane rows: the lane count measured. */
  lanes?: number;
  /** Relay rows (relay.ts): own endpoint name, the address to send to (`name@host`). */
  name?: string;
  to?: string;
  /** Relay rows: what the receiver does when its inbox is empty: 'spin' (busy recvBatch) or 'park' (wait on its doorbell). */
  idle?: 'spin' | 'park';
  /** Backlog row: frames the sender pushes, ms the receiver waits before it starts reading. */
  frames?: number;
  stallMs?: number;
  /** Give up after this many ms from start (busy loops cannot hear the runner go away). */
  limitMs?: number;
}

/**
 * Bounds a busy loop in time: call `check()` on every spin; every 65536 calls
 * it looks at the clock and throws once the child's time limit has passed, so
 * a child whose peer died (or whose runner was killed) never spins forever.
 */
export class Watchdog {
  private spins = 0;
  private readonly limit: number;

  constructor(args: RoleArgs, private readonly what: string) {
    this.limit = performance.now() + (args.limitMs ?? 60_000);
  }

  check(): void {
    if ((++this.spins & 0xffff) === 0 && performance.now() > this.limit) throw new Error(`${this.what}: time limit passed (peer gone?)`);
  }
}

/** What a throughput consumer reports. */
export interface ThroughputResult {
  type: 'result';
  /** Frames received in the window where every producer was in its measured phase. */
  frames: number;
  seconds: number;
  /** frames / seconds */
  rate: number;
  /** All frames received (warm-up and end frames included), to check against what was sent. */
  received: number;
  errors: number;
}

/** What a ping-pong client reports. */
export interface RttResult {
  type: 'result';
  samples: number;
  seconds: number;
  p50Us: number;
  p99Us: number;
  meanUs: number;
  errors: number;
}

/** What the non-measuring side reports. */
export interface DoneMessage {
  type: 'done';
  /** Frames sent (senders) or echoed (servers). */
  sent: number;
  errors: number;
}

/** Fill a payload with the filler pattern (once; frames then only change their stamp). */
export function filler(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 7) & 0xff;
  return bytes;
}

/** Stamp sequence, kind and producer id into the payload at `offset`. */
export function stamp(bytes: Uint8Array, offset: number, size: number, seq: number, kind: number, id: number): void {
  bytes[offset] = seq & 0xff;
  bytes[offset + 1] = (seq >>> 8) & 0xff;
  bytes[offset + 2] = (seq >>> 16) & 0xff;
  bytes[offset + 3] = seq >>> 24;
  bytes[offset + 4] = kind;
  bytes[offset + 5] = id;
  bytes[offset + size - 1] = seq & 0xff;
}

export function readSeq(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! | (bytes[offset + 1]! << 8) | (bytes[offset + 2]! << 16) | (bytes[offset + 3]! << 24)) >>> 0;
}

/**
 * The consumer side of a throughput run: checks every frame (length, per
 * producer sequence, tail byte), and measures the window from the moment every
 * producer has sent its first measured frame to the first end frame (so all
 * producers are active for the whole window).
 */
export class ThroughputChecker {
  private readonly expected: Uint32Array;
  private readonly measuring: Uint8Array;
  private measuringCount = 0;
  private ended = 0;
  private startReceived = 0;
  private startTime = 0;
  private stopReceived = -1;
  private stopTime = 0;
  received = 0;
  errors = 0;
  firstError = '';

  constructor(
    private readonly size: number,
    private readonly producers: number,
  ) {
    this.expected = new Uint32Array(producers);
    this.measuring = new Uint8Array(producers);
  }

  /** True once every producer has sent its end frame. */
  get done(): boolean {
    return this.ended === this.producers;
  }

  /** Check one frame; call for every frame received, in arrival order. */
  frame(bytes: Uint8Array, offset: number, length: number): void {
    this.received++;
    const seq = readSeq(bytes, offset);
    const kind = bytes[offset + 4]!;
    const id = bytes[offset + 5]!;
    if (length !== this.size || id >= this.producers || seq !== this.expected[id] || bytes[offset + length - 1] !== (seq & 0xff) || kind > KIND_END) {
      this.error(`bad frame: length ${length}, id ${id}, seq ${seq} (expected ${id < this.producers ? this.expected[id] : '?'}), kind ${kind}`);
      if (id >= this.producers) return;
    }
    this.expected[id] = (seq + 1) >>> 0;
    if (kind !== KIND_WARMUP && this.measuring[id] === 0) {
      this.measuring[id] = 1;
      if (++this.measuringCount === this.producers) {
        this.startTime = performance.now();
        this.startReceived = this.received;
      }
    }
    if (kind === KIND_END) {
      if (this.stopReceived < 0) {
        this.stopTime = performance.now();
        this.stopReceived = this.received;
      }
      this.ended++;
    }
  }

  private error(message: string): void {
    if (this.errors++ === 0) this.firstError = message;
  }

  result(): ThroughputResult {
    if (this.measuringCount < this.producers || this.stopReceived < 0) this.error('a producer never reached its measured phase');
    const frames = this.stopReceived - this.startReceived;
    const seconds = (this.stopTime - this.startTime) / 1000;
    // A producer starved so long that another one finished before it began measuring: no common window.
    if (frames <= 0 || seconds <= 0) this.error(`no window in which all ${this.producers} producers were measuring`);
    return { type: 'result', frames, seconds, rate: seconds > 0 ? frames / seconds : 0, received: this.received, errors: this.errors };
  }
}

/**
 * The sender's clock: warm up until `warmupMs` after the go, then measure
 * until `seconds` later (or `maxCount` frames), then send the end frame. The
 * phases are fixed in wall-clock time from the runner's go (`at`, epoch ms),
 * so the producers of a fan-in row measure over the same interval even when
 * one of them was scheduled late. `kind(sent)` is polled with the number of
 * frames sent so far and says what the next frame is.
 */
export class Phases {
  private phase = KIND_WARMUP;
  private measuredFrom = 0;
  private readonly measureAt: number;
  private readonly endAt: number;
  private nextCheck = 0;

  constructor(
    private readonly args: RoleArgs,
    at: number = Date.now(),
  ) {
    // On the performance.now() timeline of this process.
    const origin = at - performance.timeOrigin;
    this.measureAt = origin + args.warmupMs;
    this.endAt = this.measureAt + args.seconds * 1000;
  }

  /** The kind of the frame about to be sent as number `sent` (0-based); checks the clock every 256 frames. */
  kind(sent: number): number {
    if (this.phase === KIND_MEASURED && sent - this.measuredFrom >= this.args.maxCount) this.phase = KIND_END;
    if (sent >= this.nextCheck && this.phase !== KIND_END) {
      this.nextCheck = sent + 256;
      const now = performance.now();
      if (this.phase === KIND_WARMUP && now >= this.measureAt) {
        this.phase = KIND_MEASURED;
        this.measuredFrom = sent;
      }
      if (now >= this.endAt) this.phase = KIND_END;
    }
    return this.phase;
  }
}

/** Percentile (nearest rank on the sorted copy). */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[rank]!;
}

/** Summarise round-trip samples (ms) into an RttResult in µs. */
export function rttResult(samples: Float64Array, count: number, seconds: number, errors: number): RttResult {
  const sorted = samples.slice(0, count).sort();
  let sum = 0;
  for (let i = 0; i < count; i++) sum += sorted[i]!;
  return { type: 'result', samples: count, seconds, p50Us: percentile(sorted, 0.5) * 1000, p99Us: percentile(sorted, 0.99) * 1000, meanUs: (sum / Math.max(1, count)) * 1000, errors };
}

export function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 === 1 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

// ---------------------------------------------------------------------------
// Child side of the IPC protocol
// ---------------------------------------------------------------------------

/** Send a message to the runner and wait until it is written. */
export function tell(message: object): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!process.send) {
      // Run by hand without a runner: print instead.
      console.log(JSON.stringify(message));
      resolve();
      return;
    }
    process.send(message, undefined, {}, (err) => (err ? reject(err) : resolve()));
  });
}

/** Wait for the runner's go; resolves with its time (epoch ms), which {@link Phases} counts from. */
export function waitForGo(): Promise<number> {
  if (!process.send) return Promise.resolve(Date.now());
  return new Promise((resolve) => {
    const onMessage = (message: { type?: string; at?: number }) => {
      if (message && message.type === 'go') {
        process.off('message', onMessage);
        resolve(typeof message.at === 'number' ? message.at : Date.now());
      }
    };
    process.on('message', onMessage);
  });
}

/**
 * Run a child's role function with the IPC protocol around it: parse the
 * arguments, report errors, disconnect at the end.
 */
export function childMain(roles: Record<string, (args: RoleArgs) => Promise<void>>): void {
  const [role, json] = process.argv.slice(2);
  const run = role !== undefined ? roles[role] : undefined;
  if (run === undefined) {
    console.error(`usage: ${process.argv[1]} <${Object.keys(roles).join('|')}> '<json args>'`);
    process.exit(2);
  }
  // The runner kills us if it goes away; if the IPC channel closes early, stop too.
  process.on('disconnect', () => process.exit(1));
  let args: RoleArgs;
  try {
    args = JSON.parse(json ?? '{}') as RoleArgs;
  } catch (err) {
    console.error(`bad arguments: ${String(err)}`);
    process.exit(2);
  }
  run(args).then(
    () => {
      process.removeAllListeners('disconnect');
      if (process.connected) process.disconnect();
    },
    async (err: unknown) => {
      const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
      try {
        await tell({ type: 'error', message });
      } catch {
        console.error(message);
      }
      process.exit(1);
    },
  );
}
