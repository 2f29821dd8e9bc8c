/**
 * How `shmbus stat` prints: the default view fits a width (80 columns unless
 * stdout is a wider terminal) with compact numbers and the endpoint name
 * shortened in its middle when needed; `--wide` prints every column with exact
 * numbers and shortens nothing. `--watch` adds rates per second.
 */
import type { EndpointReport, NamespaceReport, RelayReport } from './stat';

/** Per-second rates of an endpoint's counters between two watch frames. */
export interface Rates {
  readonly sent: number;
  readonly received: number;
  readonly refusedFull: number;
  readonly sendRefused: number;
}

export interface FormatOptions {
  /** Every column, exact numbers, nothing shortened or wrapped. */
  readonly wide: boolean;
  /** Columns the default view fits in (ignored with `wide`). */
  readonly width: number;
  /**
   * Watching: the rates of an endpoint (null in the first frame, or when its
   * counters went back: a new owner). Undefined when not watching.
   */
  readonly rates?: (e: EndpointReport) => Rates | null;
}

/** The width of the default view. */
export const DEFAULT_WIDTH = 80;

/** The narrowest an endpoint or peer name is shortened to. */
const MIN_NAME_WIDTH = 12;

/**
 * A count in at most 5 characters: exact below 10 000, then 3 significant
 * digits with k, M, G, T, P (12.3k, 456k, 1.23M). Fractions (rates) keep one
 * decimal below 10.
 */
export function compact(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '-';
  if (n < 10_000) return Number.isInteger(n) ? String(n) : n < 9.95 ? n.toFixed(1) : String(Math.round(n));
  for (const [div, suffix] of [[1e3, 'k'], [1e6, 'M'], [1e9, 'G'], [1e12, 'T'], [1e15, 'P']] as const) {
    const v = n / div;
    const s = v < 9.995 ? v.toFixed(2) : v < 99.95 ? v.toFixed(1) : String(Math.round(v));
    if (Number(s) < 1000) return `${s}${suffix}`;
  }
  return n.toExponential(0);
}

/** `text` cut in its middle to `width` characters ("orders-in…eu-west-1"), so names that differ at the end stay apart. */
export function shorten(text: string, width: number): string {
  if (text.length <= width) return text;
  if (width <= 1) return text.slice(0, width);
  const tail = Math.floor((width - 1) / 2);
  return `${text.slice(0, width - 1 - tail)}…${text.slice(text.length - tail)}`;
}

/**
 * `text` on lines of at most `width` columns, broken where `separator` is (a
 * space: between words; ", ": between items, the comma kept at the line's
 * end); continuation lines indented 2 more than the first. A piece longer than
 * a line stays whole.
 */
export function wrap(text: string, width: number, separator = ' '): string[] {
  const indent = /^ */.exec(text)![0];
  const lines: string[] = [];
  let line = indent;
  for (const piece of text.slice(indent.length).split(separator)) {
    const fresh = line.trim() === '';
    const candidate = fresh ? `${line}${piece}` : `${line}${separator}${piece}`;
    if (fresh || candidate.length <= width) line = candidate;
    else {
      lines.push(`${line}${separator.trimEnd()}`);
      line = `${indent}  ${piece}`;
    }
  }
  lines.push(line);
  return lines;
}

/**
 * Rows as aligned columns (two spaces apart; the first left-aligned, the rest
 * right-aligned). With `fit`, the first column is shortened (in its middle) so
 * that lines fit `fit` columns, down to {@link MIN_NAME_WIDTH}.
 */
export function table(rows: string[][], fit?: number): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  if (fit !== undefined) {
    const rest = widths.slice(1).reduce((a, w) => a + w + 2, 0);
    widths[0] = Math.min(widths[0]!, Math.max(MIN_NAME_WIDTH, fit - rest));
  }
  return rows.map((r) => r.map((cell, c) => (c === 0 ? shorten(cell, widths[0]!).padEnd(widths[0]!) : cell.padStart(widths[c]!))).join('  ').trimEnd());
}

function lines(text: string, options: FormatOptions, separator = ' '): string[] {
  return options.wide ? [text] : wrap(text, options.width, separator);
}

function state(e: EndpointReport): string {
  if (!e.alive) return 'DEAD';
  return e.error !== undefined ? 'ERROR' : e.parked ? 'parked' : 'running';
}

function rate(r: Rates | null, key: keyof Rates): string {
  return r === null ? '-' : compact(r[key]);
}

/** One namespace: a head line, the endpoint table, and notes on what needs attention. */
export function formatReport(report: NamespaceReport, options: FormatOptions): string {
  const where = `namespace ${report.namespace} (${report.dir})`;
  const counts = `${report.endpoints.length} endpoint(s), ${report.registrations} registration(s), ${report.takeovers} takeover(s)`;
  // One line if it fits, else the counts on a line of their own.
  const headLines = options.wide || where.length + counts.length + 2 <= options.width ? [`${where}: ${counts}`] : [...lines(`${where}:`, options), ...lines(`  ${counts}`, options)];
  if (report.endpoints.length === 0) return headLines.join('\n');
  const watching = options.rates !== undefined;
  const rows: string[][] = [];
  if (options.wide) {
    rows.push(['endpoint', 'pid', 'alive', 'state', 'depth', 'lanes', 'slot', 'sent', 'received', 'refused', 'full', 'corrupt', 'wakeups', 'doorbell']);
    if (watching) rows[0]!.push('sent/s', 'recv/s', 'refused/s', 'full/s');
  } else {
    rows.push(['endpoint', 'pid', 'state', 'depth', 'lanes', ...(watching ? ['sent/s', 'recv/s', 'full/s'] : ['sent', 'recv', 'full', 'refused'])]);
  }
  for (const e of report.endpoints) {
    const name = e.relay ? `${e.name} (relay)` : e.name;
    const r = options.rates?.(e) ?? null;
    if (options.wide) {
      const row = [
        name,
        String(e.pid),
        e.alive ? 'yes' : 'DEAD',
        e.error !== undefined ? 'ERROR' : e.parked ? 'parked' : 'running',
        String(e.depth),
        `${e.lanesInUse.length}/${e.lanes}x${e.capacity}`,
        String(e.slotSize),
        String(e.sent),
        String(e.received),
        String(e.sendRefused),
        String(e.refusedFull),
        e.corruptLanes > 0 ? `${e.corrupt} (${e.corruptLanes} lane${e.corruptLanes === 1 ? '' : 's'})` : String(e.corrupt),
        String(e.wakeups),
        e.doorbell,
      ];
      if (watching) row.push(rate(r, 'sent'), rate(r, 'received'), rate(r, 'sendRefused'), rate(r, 'refusedFull'));
      rows.push(row);
    } else {
      const counts = watching ? [rate(r, 'sent'), rate(r, 'received'), rate(r, 'refusedFull')] : [compact(e.sent), compact(e.received), compact(e.refusedFull), compact(e.sendRefused)];
      rows.push([name, String(e.pid), state(e), compact(e.depth), `${e.lanesInUse.length}/${e.lanes}`, ...counts]);
    }
  }
  const notes: string[] = [];
  for (const e of report.endpoints) {
    if (e.error !== undefined) notes.push(`  ${e.name}: ${e.error}`);
    for (const l of e.lanesInUse.filter((lane) => lane.corrupt)) notes.push(`  ${e.name}: lane ${l.lane} CORRUPT (head ${l.head}, tail ${l.tail}) set aside`);
    if (e.laneRefused > 0) notes.push(`  ${e.name}: ${e.laneRefused} producer(s) refused: every lane taken (open it with more lanes)`);
    if (!options.wide && e.corrupt > 0) notes.push(`  ${e.name}: ${e.corrupt} corrupt frame(s) skipped`);
  }
  return [...headLines, ...table(rows, options.wide ? undefined : options.width), ...notes.flatMap((n) => lines(n, options))].join('\n');
}

/** A relay's counters (fetched from its metrics port): a summary line and one row per peer. */
export function formatRelay(name: string, relay: RelayReport | null, options: FormatOptions): string {
  if (relay === null) return lines(`relay ${name}: metrics endpoint did not answer`, options).join('\n');
  const g = relay.global;
  const head = `relay: outbound depth ${g.outboundDepth ?? 0}, pending ${g.pendingFrames ?? 0} frame(s), delivered ${g.delivered ?? 0}, duplicates dropped ${g.duplicates ?? 0}, undeliverable ${g.undeliverable ?? 0}, auth failures ${g.authFailures ?? 0}, unknown peers ${g.unknownPeers ?? 0}, malformed ${g.malformed ?? 0}`;
  const peers = Object.entries(relay.peers);
  const states = relay.peerStates ?? {};
  const stateOf = (peer: string) => states[peer] ?? '?';
  const count = (state: string) => peers.filter(([p]) => stateOf(p) === state).length;
  const down = peers.filter(([p]) => stateOf(p) === 'down').map(([p]) => p);
  const readiness = relay.peerStates === undefined ? '' : `, peers up ${count('up')} of ${peers.length}${down.length > 0 ? `, down: ${down.join(' ')}` : ''}`;
  const headLines = lines(head + readiness, options, ', ');
  if (peers.length === 0) return headLines.join('\n');
  const rows: string[][] = [];
  if (options.wide) {
    rows.push(['peer', 'state', 'conns', 'frames out', 'bytes out', 'batches', 'acks in', 'resends', 'unacked', 'queued', 'frames in', 'acks out', 'dups', 'undeliv.', 'reconnects', 'failures']);
    for (const [peer, c] of peers) {
      rows.push([peer, stateOf(peer), ...[c.connections, c.framesOut, c.bytesOut, c.batchesOut, c.acksIn, c.resends, c.unacked, c.queued, c.framesIn, c.acksOut, c.duplicates, c.undeliverable, c.reconnects, c.connectFailures].map((v) => String(v ?? 0))]);
    }
  } else {
    rows.push(['peer', 'state', 'conns', 'out', 'in', 'unacked', 'queued', 'resends', 'fails']);
    for (const [peer, c] of peers) {
      rows.push([peer, stateOf(peer), ...[c.connections, c.framesOut, c.framesIn, c.unacked, c.queued, c.resends, c.connectFailures].map((v) => compact(v ?? 0))]);
    }
  }
  return [...headLines, ...table(rows, options.wide ? undefined : options.width)].join('\n');
}

/** Rates per second between two reports of the same endpoint; null if there is no earlier one or a counter went back. */
export function ratesBetween(before: EndpointReport | undefined, after: EndpointReport, seconds: number): Rates | null {
  if (before === undefined || seconds <= 0) return null;
  const keys = ['sent', 'received', 'refusedFull', 'sendRefused'] as const;
  if (keys.some((k) => after[k] < before[k])) return null;
  return { sent: (after.sent - before.sent) / seconds, received: (after.received - before.received) / seconds, refusedFull: (after.refusedFull - before.refusedFull) / seconds, sendRefused: (after.sendRefused - before.sendRefused) / seconds };
}
