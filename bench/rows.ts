/**
 * The benchmark's rows: what each one runs and what it yields. A row is one
 * implementation × one measurement × one payload size, with the id
 * `<impl>:<measure>:<size>` that --only matches and the report looks up.
 *
 *   c       the C SPSC ring (bench/c/spsc.c), the hardware limit
 *   jsring  the plain JS SPSC ring over an addon mapping (bench/jsring.ts), the JavaScript limit
 *   uds     Node Unix-domain stream sockets (bench/uds.ts)
 *   shmbus  the Bus, public API only (bench/shmbus.ts)
 *   tcp     the UDS code over loopback TCP (bench/uds.ts), the relay path's baseline
 *   relay   app -> relay -> TCP -> relay -> app (bench/relay.ts, bench/relaypath.ts)
 *   lanes   what the number of lanes per inbox costs (bench/lanes.ts; the wide
 *           fan-in through bench/shmbus.ts); the id's last field is the lane count
 *
 * Every row's processes are fresh, and its files are gone when it returns.
 */
import { rmSync } from 'node:fs';
import type { RoleArgs, RttResult, ThroughputResult } from './common';
import { rowFile, rowNamespace, runPair, runSolo, runSpsc, type Message, type PairSpec } from './children';
import { relayCluster, runRelayPair } from './relaypath';
import {
  BATCH,
  CAPACITY,
  JSRING_FILE,
  LANE_COUNTS_COST,
  LANE_COUNTS_MEMORY,
  LANES_FILE,
  LANES_SIZE,
  MAX_FRAMES,
  MAX_ROUND_TRIPS,
  PRODUCERS,
  SHMBUS_FILE,
  SIZES,
  SLOT_SIZE,
  UDS_FILE,
  WIDE_FANIN,
  WIDE_FANIN_MIN_SECONDS,
  WIDE_FANIN_WARMUP_MS,
  measuredArgs,
  type Settings,
} from './settings';

export const IMPLS = ['c', 'jsring', 'uds', 'shmbus', 'tcp', 'relay', 'lanes'] as const;
export type Impl = (typeof IMPLS)[number];
/**
 * oneway1/oneway32: one-way throughput, 1 or 32 frames per send; rttBusy/rttParked: round trip, spinning or parked;
 * fanin: PRODUCERS → 1 (lane rows: WIDE_FANIN → 1); consumer, memory: the lane rows' consumer cost and inbox memory.
 */
export type Measure = 'oneway1' | 'oneway32' | 'rttBusy' | 'rttParked' | 'fanin' | 'consumer' | 'memory';

/** What one run of a row yields. */
export interface Metric {
  /** Frames per second. */
  rate?: number;
  /** Round-trip percentiles, µs. */
  p50?: number;
  p99?: number;
  /** Relay rows: frames per DATA message alpha's relay sent during the row (warm-up included). */
  perMessage?: number;
  /** Relay rows: CPU time of each relay per frame carried (µs; warm-up included). */
  alphaCpuUs?: number;
  betaCpuUs?: number;
  /** Lane rows (consumer): ns per empty recvBatch call; per frame with one lane busy, with every lane busy; of an empty timed section (subtracted). */
  emptyNs?: number;
  oneLaneNs?: number;
  allLanesNs?: number;
  timerNs?: number;
  /** Lane rows (memory): the inbox's file size; its allocated bytes fresh, and with one lane full. */
  fileBytes?: number;
  freshBytes?: number;
  filledBytes?: number;
}

export interface Row {
  id: string;
  impl: Impl;
  measure: Measure;
  size: number;
  /** Relay rows: the batchFrames of their cluster. */
  relayBatch?: number;
  /** Lane rows: the inbox's lane count. */
  lanes?: number;
  run(): Promise<Metric>;
}

export function rowId(impl: Impl, measure: Measure, size: number): string {
  return `${impl}:${measure}:${size}`;
}

/** A lane row's id: `lanes:<measure>:<lane count>` (its payloads are LANES_SIZE bytes). */
export function laneRowId(measure: Measure, lanes: number): string {
  return `lanes:${measure}:${lanes}`;
}

const rate = (m: Message): Metric => ({ rate: (m as unknown as ThroughputResult).rate });
const rtt = (m: Message): Metric => ({ p50: (m as unknown as RttResult).p50Us, p99: (m as unknown as RttResult).p99Us });

/**
 * Every row, in a fixed order (the rounds rotate where they start). `spsc` is
 * the compiled C ring, or null to leave its rows out.
 */
export function defineRows(settings: Settings, spsc: string | null): Row[] {
  const rows: Row[] = [];
  const add = (impl: Impl, measure: Measure, size: number, run: () => Promise<Metric>, relayBatch?: number) => rows.push({ id: rowId(impl, measure, size), impl, measure, size, run, ...(relayBatch !== undefined ? { relayBatch } : {}) });
  /** A Node pair of `file`'s roles; `prepare` makes the row's files and returns their cleanup. */
  const pair = (file: string, size: number, receiver: string, sender: string, senders: number, measuring: PairSpec['measuring'], prepare: () => { args: Partial<RoleArgs>; cleanup?: () => void }, isRtt: boolean) => async () => {
    const { args, cleanup } = prepare();
    try {
      const m = await runPair(settings, { file, receiver, sender, senders, measuring, args: { ...measuredArgs(settings, size, isRtt), producers: senders, ...args } });
      return isRtt ? rtt(m) : rate(m);
    } finally {
      cleanup?.();
    }
  };
  // The row's own files and names: `batch` is the frames per send (1, BATCH; none for RTT).
  const socketFile = (batch?: number) => () => {
    const path = rowFile('tmp', 'sock');
    return { args: { path, batch }, cleanup: () => rmSync(path, { force: true }) };
  };
  const ringFile = (batch?: number) => () => {
    const path = rowFile('shm', 'jsring');
    return { args: { path, capacity: CAPACITY, batch }, cleanup: () => rmSync(path, { force: true }) };
  };
  const inbox = (size: number, batch?: number) => () => ({ args: { namespace: rowNamespace(), slotSize: SLOT_SIZE[size]!, capacity: CAPACITY, batch } });
  const tcp = (batch?: number) => () => ({ args: { transport: 'tcp' as const, batch } });

  for (const size of SIZES) {
    if (spsc !== null) {
      add('c', 'oneway1', size, async () => ({ rate: (await runSpsc(settings, spsc, 'tput1', size, MAX_FRAMES)).rate! }));
      add('c', 'oneway32', size, async () => ({ rate: (await runSpsc(settings, spsc, 'tput32', size, MAX_FRAMES)).rate! }));
      add('c', 'rttBusy', size, async () => {
        const r = await runSpsc(settings, spsc, 'rtt', size, MAX_ROUND_TRIPS);
        return { p50: r.p50Us!, p99: r.p99Us! };
      });
    }
    add('jsring', 'oneway1', size, pair(JSRING_FILE, size, 'sink', 'source', 1, 'receiver', ringFile(1), false));
    add('jsring', 'oneway32', size, pair(JSRING_FILE, size, 'sink', 'source', 1, 'receiver', ringFile(BATCH), false));
    add('jsring', 'rttBusy', size, pair(JSRING_FILE, size, 'echo', 'ping', 1, 'sender', ringFile(), true));
    add('uds', 'oneway1', size, pair(UDS_FILE, size, 'sink', 'source', 1, 'receiver', socketFile(1), false));
    add('uds', 'oneway32', size, pair(UDS_FILE, size, 'sink', 'source', 1, 'receiver', socketFile(BATCH), false));
    add('uds', 'rttParked', size, pair(UDS_FILE, size, 'echo', 'ping', 1, 'sender', socketFile(), true));
    add('uds', 'fanin', size, pair(UDS_FILE, size, 'sink', 'source', PRODUCERS, 'receiver', socketFile(1), false));
    add('shmbus', 'oneway1', size, pair(SHMBUS_FILE, size, 'sink', 'source', 1, 'receiver', inbox(size, 1), false));
    add('shmbus', 'oneway32', size, pair(SHMBUS_FILE, size, 'sink', 'source', 1, 'receiver', inbox(size, BATCH), false));
    add('shmbus', 'rttBusy', size, pair(SHMBUS_FILE, size, 'echo', 'ping', 1, 'sender', inbox(size), true));
    add('shmbus', 'rttParked', size, pair(SHMBUS_FILE, size, 'echoParked', 'pingParked', 1, 'sender', inbox(size), true));
    add('shmbus', 'fanin', size, pair(SHMBUS_FILE, size, 'sink', 'source', PRODUCERS, 'receiver', inbox(size, 1), false));
    // Direct TCP: the UDS code over a loopback TCP connection (same framing, same batching).
    add('tcp', 'oneway1', size, pair(UDS_FILE, size, 'sink', 'source', 1, 'receiver', tcp(1), false));
    add('tcp', 'oneway32', size, pair(UDS_FILE, size, 'sink', 'source', 1, 'receiver', tcp(BATCH), false));
    add('tcp', 'rttParked', size, pair(UDS_FILE, size, 'echo', 'ping', 1, 'sender', tcp(), true));
    // The relay path: one bus.send per frame; the relay's batchFrames is the batching compared.
    const relay = (batchFrames: number, receiver: string, sender: string, measuring: PairSpec['measuring'], isRtt: boolean) => async () => {
      const { message, perMessage, alphaCpu, betaCpu } = await runRelayPair(settings, await relayCluster(settings, batchFrames), size, receiver, sender, measuring, isRtt);
      return { ...(isRtt ? rtt(message) : rate(message)), perMessage, alphaCpuUs: alphaCpu * 1e6, betaCpuUs: betaCpu * 1e6 };
    };
    add('relay', 'oneway1', size, relay(1, 'sink', 'source', 'receiver', false), 1);
    add('relay', 'oneway32', size, relay(BATCH, 'sink', 'source', 'receiver', false), BATCH);
    add('relay', 'rttParked', size, relay(BATCH, 'echoParked', 'pingParked', 'sender', true), BATCH);
  }

  // What the number of lanes per inbox costs: one process per row (bench/lanes.ts), and a wide fan-in.
  const addLanes = (measure: Measure, lanes: number, run: () => Promise<Metric>) => rows.push({ id: laneRowId(measure, lanes), impl: 'lanes', measure, size: LANES_SIZE, lanes, run });
  const solo = (role: string, lanes: number, pick: readonly (keyof Metric)[]) => async () => {
    const m = await runSolo(settings, LANES_FILE, role, { ...measuredArgs(settings, LANES_SIZE, false), namespace: rowNamespace(), lanes }, ['rx']);
    return Object.fromEntries(pick.map((k) => [k, Number(m[k])])) as Metric;
  };
  for (const lanes of LANE_COUNTS_COST) addLanes('consumer', lanes, solo('consumerCost', lanes, ['emptyNs', 'oneLaneNs', 'allLanesNs', 'timerNs']));
  for (const lanes of LANE_COUNTS_MEMORY) addLanes('memory', lanes, solo('memory', lanes, ['fileBytes', 'freshBytes', 'filledBytes']));
  // WIDE_FANIN producer processes into an inbox of as many lanes; otherwise the shmbus fan-in row at LANES_SIZE,
  // with a longer warm-up and window (settings.ts).
  const wideArgs = { ...measuredArgs(settings, LANES_SIZE, false), warmupMs: WIDE_FANIN_WARMUP_MS, seconds: Math.max(settings.seconds, WIDE_FANIN_MIN_SECONDS) };
  addLanes('fanin', WIDE_FANIN, async () =>
    rate(
      await runPair(settings, {
        file: SHMBUS_FILE,
        receiver: 'sink',
        sender: 'source',
        senders: WIDE_FANIN,
        measuring: 'receiver',
        args: { ...wideArgs, producers: WIDE_FANIN, ...inbox(LANES_SIZE, 1)().args },
        receiverArgs: { lanes: WIDE_FANIN },
      }),
    ),
  );
  return rows.filter((row) => settings.only.test(row.id));
}
