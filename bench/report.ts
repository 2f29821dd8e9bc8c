/**
 * The report of the local rows: medians over rounds, same-round ratios, the
 * targets, and the tables (markdown, printed and written into BENCHMARKS.md).
 *
 * Every cell is the median of a row's figure over the rounds; every ratio is
 * the median of per-round ratios (numerator and denominator from the same
 * round, so they saw the same vCPU placement — the VM's speed moves several
 * times with it, so only same-round ratios mean anything).
 */
import { median } from './common';
import { rowId, type Impl, type Measure, type Metric, type Row } from './rows';
import { PRODUCERS, SIZES } from './settings';

/** Per row id, one metric per round (null: the row failed that round). */
export type Results = Map<string, Array<Metric | null>>;
export type Unit = 'M/s' | 'µs';
type Figure = 'rate' | 'p50' | 'p99';

export function valuesOf(results: Results, id: string, metric: keyof Metric): number[] {
  return (results.get(id) ?? []).map((m) => (m && m[metric] !== undefined ? m[metric]! : NaN));
}

/** Median over the rounds of one row's metric. */
export function medianOf(results: Results, id: string, metric: keyof Metric): number {
  return median(valuesOf(results, id, metric));
}

/** Median of the per-round ratios row a ÷ row b (both figures from the same round). */
export function roundRatio(results: Results, a: string, b: string, metric: keyof Metric): number {
  const x = valuesOf(results, a, metric);
  const y = valuesOf(results, b, metric);
  const r: number[] = [];
  for (let i = 0; i < Math.min(x.length, y.length); i++) r.push(x[i]! / y[i]!);
  return median(r);
}

/** How many times better row a is than row b, per round, median (> 1: a is better; throughput a ÷ b, latency b ÷ a). */
export function betterRatio(results: Results, a: string, b: string, metric: Figure): number {
  return metric === 'rate' ? roundRatio(results, a, b, metric) : roundRatio(results, b, a, metric);
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

/** Three significant figures or so: frames/s shown in millions, latency in µs. */
export function fmt(value: number, unit: Unit): string {
  if (!Number.isFinite(value)) return '—';
  if (unit === 'M/s') {
    const m = value / 1e6;
    return m >= 100 ? m.toFixed(0) : m >= 10 ? m.toFixed(1) : m >= 1 ? m.toFixed(2) : m.toFixed(3);
  }
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

export function fmtRatio(r: number): string {
  if (!Number.isFinite(r)) return '—';
  return r >= 10 ? `${r.toFixed(0)}×` : `${r.toFixed(2)}×`;
}

export function fmtShare(r: number): string {
  return Number.isFinite(r) ? `${(r * 100).toFixed(r < 0.1 ? 1 : 0)} %` : '—';
}

/** A share of the machine (0..1) as a percentage with one decimal. */
export function fmtPercent(share: number): string {
  return Number.isFinite(share) ? `${(share * 100).toFixed(1)} %` : '—';
}

export function fmtSize(size: number): string {
  return size === 1024 ? '1 KiB' : `${size} B`;
}

/** One run of a row, for the progress line. */
export function describeMetric(metric: Metric): string {
  if (metric.rate !== undefined) return fmt(metric.rate, 'M/s');
  if (metric.emptyNs !== undefined) return `${metric.emptyNs.toFixed(0)}/${metric.oneLaneNs!.toFixed(0)}/${metric.allLanesNs!.toFixed(0)}ns`;
  if (metric.fileBytes !== undefined) return `${metric.freshBytes! >>> 10}/${metric.filledBytes! >>> 10}/${metric.fileBytes >>> 10}KiB`;
  return `${fmt(metric.p50!, 'µs')}/${fmt(metric.p99!, 'µs')}`;
}

// ---------------------------------------------------------------------------
// The local table and its targets
// ---------------------------------------------------------------------------

/** A target for shmbus at 64 B: met when the figure is at least `atLeast`. */
interface Target {
  text: string;
  /** What the figure is: shmbus over another column's row of the same round (the "better" ratio), or shmbus's own median. */
  against: 'c' | 'uds' | 'own';
  atLeast: number;
}

interface Line {
  label: string;
  unit: Unit;
  metric: Figure;
  /** The measure of each column's row; none: the column is empty. */
  c?: Measure;
  jsring?: Measure;
  uds?: Measure;
  shmbus: Measure;
  targets?: Target[];
  note?: string;
}

/** One table of the local comparisons, with the targets of issue 6 (64 B). */
const LINES: readonly Line[] = [
  { label: 'One-way, one frame per send', unit: 'M/s', metric: 'rate', c: 'oneway1', jsring: 'oneway1', uds: 'oneway1', shmbus: 'oneway1', targets: [{ text: '≥ 55 % of C', against: 'c', atLeast: 0.55 }] },
  {
    label: 'One-way, 32 frames per send',
    unit: 'M/s',
    metric: 'rate',
    c: 'oneway32',
    jsring: 'oneway32',
    uds: 'oneway32',
    shmbus: 'oneway32',
    targets: [
      { text: '≥ 35 % of C', against: 'c', atLeast: 0.35 },
      { text: '≥ 3× UDS with 32 frames per write', against: 'uds', atLeast: 3 },
    ],
  },
  { label: 'RTT p50, busy-poll', unit: 'µs', metric: 'p50', c: 'rttBusy', jsring: 'rttBusy', uds: 'rttParked', shmbus: 'rttBusy', targets: [{ text: '≥ 45 % of C', against: 'c', atLeast: 0.45 }], note: 'a' },
  { label: 'RTT p99, busy-poll', unit: 'µs', metric: 'p99', c: 'rttBusy', jsring: 'rttBusy', uds: 'rttParked', shmbus: 'rttBusy', note: 'a' },
  { label: 'RTT p50, parked (doorbell)', unit: 'µs', metric: 'p50', uds: 'rttParked', shmbus: 'rttParked', targets: [{ text: '≤ UDS', against: 'uds', atLeast: 1 }] },
  { label: 'RTT p99, parked (doorbell)', unit: 'µs', metric: 'p99', uds: 'rttParked', shmbus: 'rttParked' },
  { label: `${PRODUCERS} producers → 1 inbox, aggregate`, unit: 'M/s', metric: 'rate', uds: 'fanin', shmbus: 'fanin', targets: [{ text: '≥ 10 M/s', against: 'own', atLeast: 10e6 }], note: 'b' },
];

/** The size the targets are set for. */
const TARGET_SIZE = 64;

function id(line: Line, impl: Impl & keyof Line, size: number): string | null {
  const measure = line[impl] as Measure | undefined;
  return measure === undefined ? null : rowId(impl, measure, size);
}

/** The median of `impl`'s row of a line (NaN when the line has no such column or row). */
function cell(results: Results, line: Line, impl: 'c' | 'jsring' | 'uds' | 'shmbus', size: number): number {
  const row = id(line, impl, size);
  return row === null ? NaN : medianOf(results, row, line.metric);
}

/** Same-round "better" ratio of `subject`'s row over `other`'s row of a line. */
function lineRatio(results: Results, line: Line, subject: 'jsring' | 'shmbus', other: 'c' | 'jsring' | 'uds', size: number): number {
  const a = id(line, subject, size);
  const b = id(line, other, size);
  return a === null || b === null ? NaN : betterRatio(results, a, b, line.metric);
}

/** A target's figure for `subject` (shmbus, or the plain JS ring for reference), its text, and whether it is met. */
function judge(results: Results, line: Line, target: Target, subject: 'jsring' | 'shmbus'): { value: number; shown: string; mark: string } {
  const value = target.against === 'own' ? cell(results, line, subject, TARGET_SIZE) : lineRatio(results, line, subject, target.against, TARGET_SIZE);
  const shown = !Number.isFinite(value) ? '—' : target.against === 'own' ? `${fmt(value, line.unit)} ${line.unit}` : target.against === 'c' ? fmtShare(value) : fmtRatio(value);
  const mark = Number.isFinite(value) ? (value >= target.atLeast ? '✅ met' : '❌ not met') : '— not measured';
  return { value, shown, mark };
}

/** How a target's figure is made, for the targets table. */
function judgedOn(line: Line, target: Target): string {
  if (target.against === 'own') return `shmbus, ${line.unit === 'M/s' ? 'M frames/s' : 'µs'}`;
  const other = target.against === 'c' ? 'C' : 'UDS';
  return line.unit === 'M/s' ? `shmbus ÷ ${other}` : `${other} ÷ shmbus`;
}

/** The main local table: every implementation side by side, shmbus's ratios to each limit, and the 64 B targets. */
export function localTable(results: Results): string {
  const out: string[] = [];
  out.push('| Measurement | Frame | C ring (limit) | plain JS ring (limit) | Node UDS | shmbus | shmbus, share of C | shmbus, share of JS ring | shmbus vs UDS | 64 B target |');
  out.push('|---|---|--:|--:|--:|--:|--:|--:|--:|---|');
  for (const size of SIZES) {
    for (const line of LINES) {
      const c = cell(results, line, 'c', size);
      const j = cell(results, line, 'jsring', size);
      const u = cell(results, line, 'uds', size);
      const s = cell(results, line, 'shmbus', size);
      if (![c, j, u, s].some(Number.isFinite)) continue;
      const targets = size === TARGET_SIZE ? (line.targets ?? []).map((t) => {
        const { value, shown, mark } = judge(results, line, t, 'shmbus');
        return Number.isFinite(value) ? `${t.text}: ${shown} ${mark.split(' ')[0]}` : `${t.text}: not measured`;
      }) : [];
      const note = line.note ? ` (${line.note})` : '';
      const udsText = line.uds === 'rttParked' && line.shmbus === 'rttBusy' ? `${fmt(u, line.unit)}*` : fmt(u, line.unit);
      out.push(
        `| ${line.label} (${line.unit})${note} | ${fmtSize(size)} | ${fmt(c, line.unit)} | ${fmt(j, line.unit)} | ${udsText} | **${fmt(s, line.unit)}** | ${fmtShare(lineRatio(results, line, 'shmbus', 'c', size))} | ${fmtShare(lineRatio(results, line, 'shmbus', 'jsring', size))} | ${fmtRatio(lineRatio(results, line, 'shmbus', 'uds', size))} | ${targets.join('; ')} |`,
      );
    }
  }
  return out.join('\n');
}

/** One line per target: the figure it is judged on, for shmbus and (for reference) the plain JS ring, and met / not met. */
export function targetsTable(results: Results): string {
  const out = ['| Target (64 B) | judged on | shmbus | plain JS ring, same figure | met? |', '|---|---|--:|--:|---|'];
  for (const line of LINES) {
    for (const target of line.targets ?? []) {
      const shmbus = judge(results, line, target, 'shmbus');
      const jsring = line.jsring !== undefined ? judge(results, line, target, 'jsring').shown : '—';
      out.push(`| ${line.label}: ${target.text} | ${judgedOn(line, target)} | **${shmbus.shown}** | ${jsring} | ${shmbus.mark} |`);
    }
  }
  return out.join('\n');
}

/** The timed figures of a row, with how the spread table names and formats each (memory rows have none: they do not vary). */
function spreadMetrics(row: Row): Array<{ metric: keyof Metric; label: string; show: (v: number) => string }> {
  const us = (v: number) => fmt(v, 'µs');
  if (row.measure === 'rttBusy' || row.measure === 'rttParked') return (['p50', 'p99'] as const).map((metric) => ({ metric, label: `${metric} µs`, show: us }));
  if (row.measure === 'consumer') {
    const ns = (v: number) => (Number.isFinite(v) ? v.toFixed(v >= 10 ? 0 : 1) : '—');
    return [
      { metric: 'emptyNs', label: 'empty poll ns', show: ns },
      { metric: 'oneLaneNs', label: 'one lane busy ns/frame', show: ns },
      { metric: 'allLanesNs', label: 'every lane busy ns/frame', show: ns },
    ];
  }
  if (row.measure === 'memory') return [];
  return [{ metric: 'rate', label: 'M frames/s', show: (v) => fmt(v, 'M/s') }];
}

/** Every row: median, min, max and spread over the rounds. */
export function spreadTable(results: Results, rows: readonly Row[]): string {
  const out = ['| Row | metric | median | min | max | max/min | rounds ok |', '|---|---|--:|--:|--:|--:|--:|'];
  for (const row of rows) {
    for (const { metric, label, show } of spreadMetrics(row)) {
      const v = valuesOf(results, row.id, metric).filter(Number.isFinite);
      const min = v.length ? Math.min(...v) : NaN;
      const max = v.length ? Math.max(...v) : NaN;
      out.push(`| ${row.id} | ${label} | ${show(median(v))} | ${show(min)} | ${show(max)} | ${Number.isFinite(min) ? (max / min).toFixed(2) : '—'} | ${v.length}/${(results.get(row.id) ?? []).length} |`);
    }
  }
  return out.join('\n');
}
