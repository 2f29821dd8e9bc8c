/**
 * The report of the relay rows: the relay path against direct TCP (same-round
 * ratios, with its targets), the relays' cost per frame, and the relays'
 * memory and back-pressure under the backlog.
 */
import type { BacklogResult, Peaks } from './backlog';
import type { MemorySample } from './cluster';
import { fmt, fmtRatio, fmtShare, fmtSize, medianOf, roundRatio, type Results, type Unit } from './report';
import { rowId, type Measure, type Metric, type Row } from './rows';
import { BACKLOG_CAPACITY, SIZES } from './settings';

interface RelayLine {
  label: string;
  unit: Unit;
  metric: 'rate' | 'p50' | 'p99';
  measure: Measure;
  /** Target on the per-round ratio relay ÷ TCP. */
  target?: { atLeast?: number; atMost?: number; text: string };
}

const RELAY_LINES: readonly RelayLine[] = [
  { label: 'One-way, 1 frame per write', unit: 'M/s', metric: 'rate', measure: 'oneway1', target: { atLeast: 0.9, text: '≥ 90 % of TCP' } },
  { label: 'One-way, 32 frames per write', unit: 'M/s', metric: 'rate', measure: 'oneway32', target: { atLeast: 0.7, text: '≥ 70 % of TCP' } },
  { label: 'RTT p50, parked', unit: 'µs', metric: 'p50', measure: 'rttParked', target: { atMost: 2, text: '≤ 2 × TCP' } },
  { label: 'RTT p99, parked', unit: 'µs', metric: 'p99', measure: 'rttParked' },
];

/** Payload MB/s (10⁶ B) at a frame rate. */
function fmtMB(framesPerSecond: number, size: number): string {
  if (!Number.isFinite(framesPerSecond)) return '—';
  const mb = (framesPerSecond * size) / 1e6;
  return mb >= 100 ? mb.toFixed(0) : mb >= 10 ? mb.toFixed(1) : mb.toFixed(2);
}

/** Three significant figures, or '—'. */
function plain(v: number): string {
  return Number.isFinite(v) ? (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) : '—';
}

export function relayTable(results: Results): string {
  const out: string[] = [];
  out.push('| Measurement | Frame | Direct TCP | TCP MB/s | Relay path | Relay MB/s | Relay ÷ TCP | Target (relay ÷ TCP) |');
  out.push('|---|---|--:|--:|--:|--:|--:|---|');
  for (const size of SIZES) {
    for (const line of RELAY_LINES) {
      const tcpId = rowId('tcp', line.measure, size);
      const relayId = rowId('relay', line.measure, size);
      const t = medianOf(results, tcpId, line.metric);
      const r = medianOf(results, relayId, line.metric);
      if (!Number.isFinite(t) && !Number.isFinite(r)) continue;
      // Relay ÷ TCP as it is: a share for throughput, a multiple for latency.
      const q = roundRatio(results, relayId, tcpId, line.metric);
      let target = '';
      if (line.target) {
        const met = line.target.atLeast !== undefined ? q >= line.target.atLeast : q <= line.target.atMost!;
        target = `${line.target.text} ${Number.isFinite(q) ? (met ? '✅' : '❌') : ''}`.trim();
      }
      const isRate = line.unit === 'M/s';
      out.push(
        `| ${line.label} (${isRate ? 'M frames/s' : 'µs'}) | ${fmtSize(size)} | ${fmt(t, line.unit)} | ${isRate ? fmtMB(t, size) : ''} | **${fmt(r, line.unit)}** | ${isRate ? fmtMB(r, size) : ''} | ${isRate ? fmtShare(q) : fmtRatio(q)} | ${target} |`,
      );
    }
  }
  return out.join('\n');
}

/** Per relay row: frames per DATA message and CPU per frame of each relay (medians over rounds); '' without relay rows. */
export function relayCostTable(results: Results, rows: readonly Row[]): string {
  const out = ['| Relay row | frames per DATA message | alpha relay CPU per frame (µs) | beta relay CPU per frame (µs) |', '|---|--:|--:|--:|'];
  for (const row of rows) {
    if (row.impl !== 'relay') continue;
    const m = (k: keyof Metric) => medianOf(results, row.id, k);
    out.push(`| ${row.id} (batchFrames ${row.relayBatch}) | ${plain(m('perMessage'))} | ${plain(m('alphaCpuUs'))} | ${plain(m('betaCpuUs'))} |`);
  }
  return out.length > 2 ? out.join('\n') : '';
}

export function mib(kb: number): string {
  return Number.isFinite(kb) ? `${(kb / 1024).toFixed(1)} MiB` : '—';
}

export function backlogMemoryTable(list: readonly BacklogResult[], stallMs: number): string {
  const head = `| Relay memory (/proc/<pid>/status) | ${list.map((b) => `${b.variant}: alpha | ${b.variant}: beta`).join(' | ')} |`;
  const rule = `|---|${list.map(() => '--:|--:').join('|')}|`;
  const row = (label: string, pick: (b: BacklogResult) => Peaks, field: keyof MemorySample) => `| ${label} | ${list.map((b) => `${mib(pick(b).alpha[field])} | ${mib(pick(b).beta[field])}`).join(' | ')} |`;
  return [
    head,
    rule,
    row('VmRSS before the first frame (both apps connected)', (b) => b.idle, 'rss'),
    row(`VmRSS peak while the receiver reads nothing (${stallMs / 1000} s)`, (b) => b.stall, 'rss'),
    row('VmRSS peak, first half of the drain', (b) => b.drain1, 'rss'),
    row('VmRSS peak, second half of the drain', (b) => b.drain2, 'rss'),
    row('**VmRSS peak, whole run**', (b) => b.all, 'rss'),
    row('… RssAnon peak (JS heap, buffers)', (b) => b.all, 'anon'),
    row('… RssShmem peak (mapped segments)', (b) => b.all, 'shmem'),
    row('VmHWM at the end', (b) => b.all, 'hwm'),
  ].join('\n');
}

export function backlogPressureTable(list: readonly BacklogResult[], stallMs: number): string {
  const n = (x: number) => (Number.isFinite(x) ? x.toLocaleString('en-US') : '—');
  const row = (label: string, f: (b: BacklogResult) => string) => `| ${label} | ${list.map(f).join(' | ')} |`;
  return [
    `| Back-pressure, at the end of the ${stallMs / 1000} s stall | ${list.map((b) => b.variant).join(' | ')} |`,
    `|---|${list.map(() => '--:').join('|')}|`,
    row(`receiver's inbox (capacity ${BACKLOG_CAPACITY})`, (b) => n(b.atStall.sinkInbox)),
    row("beta's relay: frames delivered into it", (b) => n(b.atStall.betaDelivered)),
    row("beta's relay: frames pending (its bound `pendingFrames`)", (b) => `${n(b.atStall.betaPending)} (${n(b.pendingFrames)})`),
    row("beta's relay: reads from alpha paused (`backpressure_on` lines, whole run)", (b) => `${b.atStall.betaPausedReads > 0 ? 'yes' : 'no'} (${n(b.betaBackpressureOn)})`),
    row("alpha's relay: outbound ring depth (capacity)", (b) => `${n(b.atStall.alphaOutboundDepth)} (${n(b.outboundCapacity)})`),
    row("alpha's relay: sent and unacked / queued", (b) => `${n(b.atStall.alphaUnacked)} / ${n(b.atStall.alphaQueued)}`),
    row('between the relays, in socket buffers (sent by alpha − delivered − pending at beta)', (b) => n(b.atStall.alphaFramesOut - b.atStall.betaDelivered - b.atStall.betaPending)),
    row('sender: `bus.send` returned false (whole run)', (b) => n(b.refused)),
    row('sender: longest wait for one frame', (b) => `${(b.longestRefusalMs / 1000).toFixed(2)} s`),
    row('**receiver got every frame exactly once, in order**', (b) => (b.received === b.frames && b.extra === 0 && b.errors === 0 ? `✅ ${n(b.received)}` : `❌ ${n(b.received)}, ${n(b.errors)} bad, ${n(b.extra)} extra`)),
    row('drain: time from the first read to the last frame', (b) => `${b.drainSeconds.toFixed(2)} s (${n(Math.round(b.received / b.drainSeconds))} frames/s)`),
    row('relay counters: duplicates / resends / undeliverable / ack timeouts', (b) => `${n(b.duplicates)} / ${n(b.resends)} / ${n(b.undeliverable)} / ${n(b.ackTimeouts)}`),
    row('relays stopped cleanly afterwards', (b) => (b.stopProblem === null ? 'yes' : `no: ${b.stopProblem}`)),
  ].join('\n');
}
