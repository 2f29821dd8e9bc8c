/**
 * The relay path of a round: its relay clusters (bench/cluster.ts), one per
 * relay batching, started and warmed up before the round's rows and stopped
 * at its end; and one app pair across them (bench/relay.ts), with the relays'
 * frames per DATA message and CPU time per frame over the row.
 */
import { readFileSync } from 'node:fs';
import { BenchCluster } from './cluster';
import { cleanupFiles, isPinned, live, runPair, runningClusters, type Message, type PairSpec } from './children';
import { CAPACITY, RELAY_CLI, RELAY_FILE, RUN_ID, SIZES, SLOT_SIZE, measuredArgs, relayLimits, type Settings } from './settings';

let clusterCounter = 0;
/** This round's cluster per relay batching. */
const roundClusters = new Map<number, BenchCluster>();
/** Relays that did not stop cleanly, restarts: reported with the results. */
export const relayProblems: string[] = [];
/** Endpoint names of the relay rows (`tx<k>`, `rx<k>`): fresh for every row. */
let endpointCounter = 0;

/** A new cluster prefix (namespaces `<prefix>-alpha|beta`, removed by cleanupFiles). */
export function clusterPrefix(what: string): string {
  return `${RUN_ID}-c${++clusterCounter}${what}`;
}

export async function startCluster(settings: Settings, prefix: string, limits: Record<string, number>, inboxCapacity?: number): Promise<BenchCluster> {
  const cluster = new BenchCluster({
    prefix,
    limits,
    command: process.execPath,
    args: [...process.execArgv, RELAY_CLI],
    cpus: isPinned() ? { alpha: settings.cpuSend, beta: settings.cpuRecv } : null,
    ...(inboxCapacity === undefined ? {} : { inboxCapacity }),
    track: (proc) => live.add(proc),
    untrack: (proc) => live.delete(proc),
  });
  runningClusters.add(cluster);
  try {
    await cluster.start();
    return cluster;
  } catch (err) {
    await stopCluster(cluster);
    throw err;
  }
}

/** Stop a cluster and remove its files; its problem (null when it stopped cleanly). */
export async function stopCluster(cluster: BenchCluster): Promise<string | null> {
  try {
    return await cluster.stop();
  } finally {
    runningClusters.delete(cluster);
    cleanupFiles();
  }
}

/** The cluster of this round for `batchFrames`, (re)started and warmed up if missing or broken. */
export async function relayCluster(settings: Settings, batchFrames: number): Promise<BenchCluster> {
  const existing = roundClusters.get(batchFrames);
  if (existing !== undefined && existing.healthy) return existing;
  if (existing !== undefined) {
    roundClusters.delete(batchFrames);
    const problem = await stopCluster(existing);
    relayProblems.push(`cluster batchFrames ${batchFrames} restarted${problem ? `: ${problem}` : ''}`);
  }
  const cluster = await startCluster(settings, clusterPrefix(`b${batchFrames}`), relayLimits(batchFrames), CAPACITY);
  roundClusters.set(batchFrames, cluster);
  // Warm up the relays (JIT, connections both ways), unmeasured.
  for (const size of SIZES) {
    await runRelayPair(settings, cluster, size, 'sink', 'source', 'receiver', false, 0.3);
    await runRelayPair(settings, cluster, size, 'echoParked', 'pingParked', 'sender', true, 0.1);
  }
  return cluster;
}

/** Stop this round's clusters (at the end of the round). */
export async function stopRoundClusters(): Promise<void> {
  for (const [batch, cluster] of roundClusters) {
    const problem = await stopCluster(cluster);
    if (problem) relayProblems.push(`cluster batchFrames ${batch}: ${problem}`);
  }
  roundClusters.clear();
}

/** CPU time (utime + stime) of a process, in seconds. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

export interface RelayPairResult {
  message: Message;
  /** Frames per DATA message alpha's relay sent to beta during the row. */
  perMessage: number;
  /** CPU time of each relay per frame carried, seconds. */
  alphaCpu: number;
  betaCpu: number;
}

/**
 * One app pair across the relays: the receiver (or echo) on beta, pinned with
 * beta's relay; the sender (or ping) on alpha, pinned with alpha's relay.
 */
export async function runRelayPair(settings: Settings, cluster: BenchCluster, size: number, receiver: string, sender: string, measuring: PairSpec['measuring'], isRtt: boolean, seconds = settings.seconds): Promise<RelayPairResult> {
  const k = ++endpointCounter;
  const rx = `rx${k}`;
  const tx = `tx${k}`;
  const alpha = cluster.relay('alpha');
  const beta = cluster.relay('beta');
  const before = (await alpha.metrics()).peers.beta!;
  const cpu0 = [cpuSeconds(alpha.pid), cpuSeconds(beta.pid)];
  const message = await runPair(settings, {
    file: RELAY_FILE,
    receiver,
    sender,
    senders: 1,
    measuring,
    args: { ...measuredArgs(settings, size, isRtt), seconds, producers: 1, slotSize: SLOT_SIZE[size]!, capacity: CAPACITY, idle: settings.relayIdle },
    receiverArgs: { namespace: cluster.ns('beta'), name: rx, to: `${tx}@alpha` },
    senderArgs: { namespace: cluster.ns('alpha'), name: tx, to: `${rx}@beta` },
    namespaces: [cluster.ns('alpha'), cluster.ns('beta')],
  });
  const cpu1 = [cpuSeconds(alpha.pid), cpuSeconds(beta.pid)];
  if (!cluster.healthy) throw new Error(`a relay died during the row: alpha ${alpha.describe()}; beta ${beta.describe()}`);
  const after = (await alpha.metrics()).peers.beta!;
  const frames = after.framesOut! - before.framesOut!;
  return { message, perMessage: frames / (after.batchesOut! - before.batchesOut!), alphaCpu: (cpu1[0]! - cpu0[0]!) / frames, betaCpu: (cpu1[1]! - cpu0[1]!) / frames };
}
