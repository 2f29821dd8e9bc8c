/**
 * The report of the lane rows: the consumer's cost against the lanes in use,
 * an inbox's memory against its lane count, and the wide fan-in (tables for
 * the console and BENCHMARKS.md, and the figures its prose quotes).
 *
 * Every cell is the median over the rounds; every ratio the median of
 * per-round ratios (both rows of one round).
 */
import * as layout from '../src/layout';
import { fmt, fmtRatio, medianOf, roundRatio, type Results } from './report';
import { laneRowId, rowId } from './rows';
import { LANE_COUNTS_COST, LANE_COUNTS_MEMORY, LANES_SIZE, PRODUCERS, WIDE_FANIN } from './settings';

/** ns with three significant figures or so. */
function ns(v: number): string {
  return Number.isFinite(v) ? (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) : '—';
}

/** Bytes as KiB or MiB (binary). */
export function bytes(v: number): string {
  if (!Number.isFinite(v)) return '—';
  if (v >= 1 << 20) return `${(v / (1 << 20)).toFixed(v >= 10 << 20 ? 0 : 1)} MiB`;
  if (v >= 1 << 10) return `${(v / (1 << 10)).toFixed(v >= 10 << 10 ? 0 : 1)} KiB`;
  return `${v} B`;
}

/** A lane count as the tables show it: the shipped defaults are marked. */
function laneLabel(lanes: number): string {
  const marks = [lanes === layout.DEFAULT_LANES ? 'default' : '', lanes === layout.DEFAULT_RELAY_LANES ? "relay's default" : ''].filter(Boolean);
  return marks.length ? `**${lanes}** (${marks.join(', ')})` : String(lanes);
}

/** Consumer cost per lane count: the three figures, and the empty poll and one-busy-lane figures as multiples of one lane's. '' when none of its rows ran. */
export function lanesCostTable(results: Results): string {
  const out = [
    '| Lanes in use | empty `recvBatch` (ns per call) | one lane busy (ns per frame) | every lane busy, one frame each (ns per frame) | empty poll, × 1 lane | one lane busy, × 1 lane |',
    '|---|--:|--:|--:|--:|--:|',
  ];
  const one = laneRowId('consumer', 1);
  for (const lanes of LANE_COUNTS_COST) {
    const id = laneRowId('consumer', lanes);
    if (!results.has(id)) continue;
    const m = (k: 'emptyNs' | 'oneLaneNs' | 'allLanesNs') => medianOf(results, id, k);
    out.push(`| ${laneLabel(lanes)} | ${ns(m('emptyNs'))} | ${ns(m('oneLaneNs'))} | ${ns(m('allLanesNs'))} | ${fmtRatio(roundRatio(results, id, one, 'emptyNs'))} | ${fmtRatio(roundRatio(results, id, one, 'oneLaneNs'))} |`);
  }
  return out.length > 2 ? out.join('\n') : '';
}

/** Memory per lane count: file size (address space, and the most the inbox can ever hold) and allocated bytes. '' when none of its rows ran. */
export function lanesMemoryTable(results: Results): string {
  const out = ['| Lanes | file size (address space; all of it allocated only if every lane fills) | allocated, fresh | allocated, one lane full (capacity frames) |', '|---|--:|--:|--:|'];
  for (const lanes of LANE_COUNTS_MEMORY) {
    const id = laneRowId('memory', lanes);
    if (!results.has(id)) continue;
    const m = (k: 'fileBytes' | 'freshBytes' | 'filledBytes') => medianOf(results, id, k);
    out.push(`| ${laneLabel(lanes)} | ${bytes(m('fileBytes'))} | ${bytes(m('freshBytes'))} | ${bytes(m('filledBytes'))} |`);
  }
  return out.length > 2 ? out.join('\n') : '';
}

/** The wide fan-in against the PRODUCERS-wide one of the local table (same inbox geometry, same round; — where not run). '' when the wide row did not run. */
export function lanesFaninTable(results: Results): string {
  const wide = laneRowId('fanin', WIDE_FANIN);
  const narrow = rowId('shmbus', 'fanin', LANES_SIZE);
  if (!results.has(wide)) return '';
  const w = medianOf(results, wide, 'rate');
  const n = medianOf(results, narrow, 'rate');
  return [
    `| Fan-in, ${LANES_SIZE} B, one frame per send, inbox of ${layout.DEFAULT_LANES} lanes | row | aggregate (M frames/s) |`,
    '|---|---|--:|',
    `| ${PRODUCERS} producers → 1 | \`${narrow}\` | ${fmt(n, 'M/s')} |`,
    `| **${WIDE_FANIN} producers → 1** | \`${wide}\` | **${fmt(w, 'M/s')}** |`,
    `| ${WIDE_FANIN} ÷ ${PRODUCERS} producers, same round | | ${fmtRatio(roundRatio(results, wide, narrow, 'rate'))} |`,
  ].join('\n');
}

/** The figures the lanes prose quotes. */
export function lanesFigures(results: Results): Record<string, string> {
  const cost = (lanes: number, k: 'emptyNs' | 'oneLaneNs' | 'allLanesNs' | 'timerNs') => ns(medianOf(results, laneRowId('consumer', lanes), k));
  const top = LANE_COUNTS_COST[LANE_COUNTS_COST.length - 1]!;
  return {
    'figure:lanesEmptyOne': cost(1, 'emptyNs'),
    'figure:lanesEmptyDefault': cost(layout.DEFAULT_LANES, 'emptyNs'),
    'figure:lanesEmptyTop': cost(top, 'emptyNs'),
    'figure:lanesAllDefault': cost(layout.DEFAULT_LANES, 'allLanesNs'),
    'figure:lanesAllTop': cost(top, 'allLanesNs'),
    'figure:lanesTimerNs': cost(layout.DEFAULT_LANES, 'timerNs'),
  };
}
