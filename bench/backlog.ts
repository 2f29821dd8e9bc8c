/**
 * The relays' memory under a backlog (row relay:backlog:64, once per run,
 * after the rounds): a sender on alpha pushes many frames to a receiver on
 * beta whose inbox is small and which reads nothing for a while, then drains
 * everything. Both relays' memory is sampled from /proc every 20 ms, their
 * metrics every 100 ms. A run fails unless every frame arrived exactly once,
 * in order.
 */
import type { Host, MemorySample } from './cluster';
import type { RoleArgs } from './common';
import { NodeChild, runningClusters } from './children';
import { inboxDepth, inboxStates, relayInbox } from './inboxes';
import { clusterPrefix, startCluster, stopCluster } from './relaypath';
import { BACKLOG_CAPACITY, BACKLOG_DEFAULT_PENDING, BACKLOG_SIZE, BACKLOG_SMALL_PENDING, BACKLOG_TIMEOUT_MS, CAPACITY, RELAY_FILE, SLOT_SIZE, type Settings } from './settings';

export type Peaks = Record<Host, MemorySample>;

/** A backlog run: the relays' limits (over the shipped defaults) and its name in the report. */
export interface BacklogVariant {
  name: string;
  limits: Record<string, number>;
}

export const BACKLOG_VARIANTS: readonly BacklogVariant[] = [
  { name: 'shipped defaults', limits: {} },
  { name: `pendingFrames ${BACKLOG_SMALL_PENDING}`, limits: { pendingFrames: BACKLOG_SMALL_PENDING } },
];

export interface BacklogResult {
  variant: string;
  frames: number;
  pendingFrames: number;
  outboundCapacity: number;
  /** Memory of each relay with both apps connected, before the first frame (kB). */
  idle: Peaks;
  /** Largest value of each field over the samples of a phase (kB); `all` also takes VmHWM read at the end. */
  stall: Peaks;
  drain1: Peaks;
  drain2: Peaks;
  all: Peaks;
  samples: number;
  /** At the end of the stall (the receiver has read nothing yet). */
  atStall: { sinkInbox: number; betaPending: number; betaDelivered: number; betaPausedReads: number; alphaOutboundDepth: number; alphaUnacked: number; alphaQueued: number; alphaFramesOut: number };
  peakBetaPending: number;
  peakAlphaOutboundDepth: number;
  betaBackpressureOn: number;
  alphaRelayRefusedFull: number;
  refused: number;
  longestRefusalMs: number;
  sendSeconds: number;
  drainSeconds: number;
  received: number;
  extra: number;
  errors: number;
  source: string;
  duplicates: number;
  resends: number;
  undeliverable: number;
  ackTimeouts: number;
  stopProblem: string | null;
}

function maxSample(a: MemorySample | undefined, b: MemorySample): MemorySample {
  if (a === undefined) return { ...b };
  return { rss: Math.max(a.rss, b.rss), hwm: Math.max(a.hwm, b.hwm), anon: Math.max(a.anon, b.anon), file: Math.max(a.file, b.file), shmem: Math.max(a.shmem, b.shmem) };
}

function peaksOf(list: Array<{ m: Partial<Peaks> }>): Peaks {
  const p: Partial<Peaks> = {};
  for (const { m } of list) for (const h of ['alpha', 'beta'] as const) if (m[h]) p[h] = maxSample(p[h], m[h]!);
  const none = { rss: NaN, hwm: NaN, anon: NaN, file: NaN, shmem: NaN };
  return { alpha: p.alpha ?? none, beta: p.beta ?? none };
}

/** One backlog run on a fresh cluster, stopped (and checked) afterwards. */
export async function runBacklog(settings: Settings, variant: BacklogVariant): Promise<BacklogResult> {
  const cluster = await startCluster(settings, clusterPrefix('backlog'), variant.limits);
  const deadline = Date.now() + BACKLOG_TIMEOUT_MS;
  const children: NodeChild[] = [];
  const alpha = cluster.relay('alpha');
  const beta = cluster.relay('beta');
  let sampler: NodeJS.Timeout | undefined;
  try {
    const common: RoleArgs = { size: BACKLOG_SIZE, seconds: 0, maxCount: 0, warmupMs: 0, limitMs: BACKLOG_TIMEOUT_MS, frames: settings.backlogFrames, slotSize: SLOT_SIZE[BACKLOG_SIZE]!, capacity: CAPACITY };
    const sink = new NodeChild('backlogSink', RELAY_FILE, 'backlogSink', { ...common, capacity: BACKLOG_CAPACITY, namespace: cluster.ns('beta'), name: 'sink', stallMs: settings.backlogStallMs + 30_000 }, settings.cpuRecv);
    children.push(sink);
    await sink.next('ready', deadline);
    const source = new NodeChild('backlogSource', RELAY_FILE, 'backlogSource', { ...common, namespace: cluster.ns('alpha'), name: 'source', to: 'sink@beta' }, settings.cpuSend);
    children.push(source);
    await source.next('ready', deadline);

    const idle = { alpha: alpha.memory()!, beta: beta.memory()! };
    const phases: Record<'stall' | 'drain', Array<{ at: number; m: Partial<Peaks> }>> = { stall: [], drain: [] };
    let phase: 'stall' | 'drain' = 'stall';
    let peakBetaPending = 0;
    let peakAlphaOutboundDepth = 0;
    let metricsBusy = false;
    let tick = 0;
    const sample = () => {
      const m: Partial<Peaks> = {};
      for (const relay of [alpha, beta]) {
        const s = relay.memory();
        if (s !== null) m[relay.host] = s;
      }
      phases[phase].push({ at: performance.now(), m });
      if (tick++ % 5 !== 0 || metricsBusy) return;
      metricsBusy = true;
      Promise.all([alpha.metrics(), beta.metrics()])
        .then(([a, b]) => {
          peakAlphaOutboundDepth = Math.max(peakAlphaOutboundDepth, a.global.outboundDepth!);
          peakBetaPending = Math.max(peakBetaPending, b.global.pendingFrames!);
        })
        .catch(() => undefined)
        .finally(() => (metricsBusy = false));
    };
    sampler = setInterval(sample, 20);
    source.send({ type: 'go', at: Date.now() });
    await new Promise((resolve) => setTimeout(resolve, settings.backlogStallMs));
    const [a0, b0] = await Promise.all([alpha.metrics(), beta.metrics()]);
    const sinkInbox = inboxDepth(cluster.ns('beta'), 'sink');
    phase = 'drain';
    sink.send({ type: 'read' });
    await sink.next('reading', deadline);
    const done = await source.next('done', deadline);
    const result = await sink.next('result', deadline);
    clearInterval(sampler);
    sample();
    const hwm = { alpha: alpha.memory()?.hwm ?? NaN, beta: beta.memory()?.hwm ?? NaN };
    const [a1, b1] = await Promise.all([alpha.metrics(), beta.metrics()]);
    const outbound = relayInbox(cluster.ns('alpha'));
    await Promise.all(children.map((c) => c.exited));
    const stopProblem = await stopCluster(cluster);

    const drainStart = phases.drain[0]?.at ?? 0;
    const drainMid = drainStart + (Number(result.drainSeconds) * 1000) / 2;
    const all = peaksOf([...phases.stall, ...phases.drain]);
    all.alpha.hwm = Math.max(all.alpha.hwm, hwm.alpha);
    all.beta.hwm = Math.max(all.beta.hwm, hwm.beta);
    const r: BacklogResult = {
      variant: variant.name,
      frames: settings.backlogFrames,
      pendingFrames: variant.limits.pendingFrames ?? BACKLOG_DEFAULT_PENDING,
      outboundCapacity: outbound.capacity,
      idle,
      stall: peaksOf(phases.stall),
      drain1: peaksOf(phases.drain.filter((x) => x.at < drainMid)),
      drain2: peaksOf(phases.drain.filter((x) => x.at >= drainMid)),
      all,
      samples: phases.stall.length + phases.drain.length,
      atStall: {
        sinkInbox,
        betaPending: b0.global.pendingFrames!,
        betaDelivered: b0.global.delivered!,
        betaPausedReads: b0.global.pausedReads!,
        alphaOutboundDepth: a0.global.outboundDepth!,
        alphaUnacked: a0.peers.beta!.unacked!,
        alphaQueued: a0.peers.beta!.queued!,
        alphaFramesOut: a0.peers.beta!.framesOut!,
      },
      peakBetaPending,
      peakAlphaOutboundDepth,
      betaBackpressureOn: beta.events('backpressure_on'),
      alphaRelayRefusedFull: outbound.refused,
      refused: Number(done.sendRefused),
      longestRefusalMs: Number(done.longestRefusalMs),
      sendSeconds: Number(done.seconds),
      drainSeconds: Number(result.drainSeconds),
      received: Number(result.received),
      extra: Number(result.extra),
      errors: Number(result.errors),
      source: String(result.source),
      duplicates: b1.global.duplicates!,
      resends: a1.peers.beta!.resends!,
      undeliverable: b1.global.undeliverable! + a1.peers.beta!.undeliverable!,
      ackTimeouts: a1.peers.beta!.ackTimeouts!,
      stopProblem,
    };
    if (r.received !== r.frames || r.extra !== 0 || r.errors !== 0) {
      throw new Error(`backlog (${variant.name}): received ${r.received} of ${r.frames} frames, ${r.extra} after the last, ${r.errors} out of order or damaged (first: ${String(result.firstError)})`);
    }
    return r;
  } catch (err) {
    if (err instanceof Error) for (const ns of [cluster.ns('alpha'), cluster.ns('beta')]) err.message += inboxStates(ns);
    throw err;
  } finally {
    clearInterval(sampler);
    for (const child of children) child.kill();
    await Promise.all(children.map((c) => c.exited));
    if (runningClusters.has(cluster)) await stopCluster(cluster);
  }
}
