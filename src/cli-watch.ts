/**
 * `shmbus stat --watch`: a view refreshed every interval, like top. On a
 * terminal the screen is cleared before each frame; otherwise (a pipe, a file,
 * a test) frames follow one another, a blank line apart. Counters become rates
 * per second between frames. Stops after `count` frames, or cleanly on
 * SIGINT / SIGTERM (between or during frames).
 */
import { formatRelay, formatReport, ratesBetween, type Rates } from './cli-format';
import type { EndpointReport, NamespaceReport, RelayReport } from './stat';

/** One namespace as stat shows it: its report and its relay's (undefined: no live relay; null: it did not answer). */
export interface Snapshot {
  readonly report: NamespaceReport;
  readonly relay: RelayReport | null | undefined;
}

export interface WatchOptions {
  /** Read every namespace now. */
  readonly collect: () => Promise<Snapshot[]>;
  /** Printed when there is no namespace. */
  readonly emptyText: string;
  readonly intervalMs: number;
  /** Frames to print; undefined = until a signal. */
  readonly count: number | undefined;
  readonly json: boolean;
  readonly wide: boolean;
  readonly width: number;
  /** Clear the screen before each frame (stdout is a terminal). */
  readonly tty: boolean;
  readonly out: (s: string) => void;
}

const CLEAR_SCREEN = '\x1b[H\x1b[2J';

function key(ns: string, e: EndpointReport): string {
  return `${ns}\0${e.name}\0${e.pid}\0${e.generation}`;
}

function clock(d: Date): string {
  return d.toTimeString().slice(0, 8);
}

/** Run the view; resolves when done (count reached or signalled). */
export async function watchStat(options: WatchOptions): Promise<void> {
  let stopped = false;
  let wake: (() => void) | undefined;
  const stop = () => {
    stopped = true;
    wake?.();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  try {
    let previous = new Map<string, EndpointReport>();
    let previousAt = 0;
    const start = performance.now();
    for (let frame = 1; !stopped && (options.count === undefined || frame <= options.count); frame++) {
      const snapshots = await options.collect();
      if (stopped) break;
      const at = performance.now();
      const seconds = (at - previousAt) / 1000;
      const current = new Map<string, EndpointReport>();
      const rates = new Map<EndpointReport, Rates | null>();
      for (const { report } of snapshots) {
        for (const e of report.endpoints) {
          current.set(key(report.namespace, e), e);
          rates.set(e, frame === 1 ? null : ratesBetween(previous.get(key(report.namespace, e)), e, seconds));
        }
      }
      previous = current;
      previousAt = at;
      const now = new Date();
      if (options.json) {
        const namespaces = snapshots.map(({ report, relay }) => ({ ...report, endpoints: report.endpoints.map((e) => ({ ...e, rates: rates.get(e) ?? null })), relay: relay ?? null }));
        options.out(JSON.stringify({ frame, time: now.toISOString(), intervalSeconds: options.intervalMs / 1000, namespaces }));
      } else {
        const fmt = { wide: options.wide, width: options.width, rates: (e: EndpointReport) => rates.get(e) ?? null };
        const of = options.count === undefined ? '' : `/${options.count}`;
        const head = `shmbus stat --watch  ${clock(now)}  every ${options.intervalMs / 1000} s  frame ${frame}${of}${options.tty ? '  (Ctrl-C quits)' : ''}`;
        const body = snapshots.length === 0 ? options.emptyText : snapshots.map(({ report, relay }) => (relay === undefined ? formatReport(report, fmt) : `${formatReport(report, fmt)}\n${formatRelay(report.namespace, relay, fmt)}`)).join('\n\n');
        const prefix = options.tty ? CLEAR_SCREEN : frame > 1 ? '\n' : '';
        options.out(`${prefix}${head}\n\n${body}`);
      }
      if (options.count !== undefined && frame >= options.count) break;
      // Frames on a fixed cadence from the start, however long a frame took.
      const delay = Math.max(0, start + frame * options.intervalMs - performance.now());
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
