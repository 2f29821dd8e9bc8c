#!/usr/bin/env node
/**
 * `shmbus` — look at and clean up namespaces.
 *
 *   shmbus stat [--namespace N] [--dir D] [--json] [--wide] [--watch [--interval S] [--count N]]
 *   shmbus gc   [--namespace N] [--dir D] [--json]
 *   shmbus help [command] | --help | --version
 *
 * Exit codes: 0 done, 1 a shmbus error (printed with its code), 2 usage error
 * (ERR_SHMBUS_USAGE). With --json an error is one JSON object on stderr. The
 * full text is in cli-help.ts (`shmbus --help`).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_WIDTH, formatRelay, formatReport, type FormatOptions } from './cli-format';
import { COMMANDS, EXIT_ERROR, EXIT_OK, EXIT_USAGE, INTERNAL_CODE, USAGE_CODE, USAGE_LINE, helpText, type Command } from './cli-help';
import { watchStat, type Snapshot } from './cli-watch';
import { SystemError, isBusError } from './errors';
import type { NamespaceReport } from './stat';

export { EXIT_ERROR, EXIT_OK, EXIT_USAGE } from './cli-help';
export { formatRelay, formatReport } from './cli-format';

/** This package's version: package.json at its root, one folder up from src/, two from dist/src/. */
function packageVersion(): string {
  for (const root of [join(__dirname, '..'), join(__dirname, '..', '..')]) {
    try {
      return (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      // Not this one.
    }
  }
  return 'unknown';
}

/** A command-line mistake: exit 2, code ERR_SHMBUS_USAGE. */
class UsageError extends Error {}

const OPTIONS = {
  namespace: { type: 'string', short: 'n' },
  dir: { type: 'string' },
  json: { type: 'boolean' },
  wide: { type: 'boolean' },
  watch: { type: 'boolean' },
  interval: { type: 'string' },
  count: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
} as const;

/** Options only `stat` takes. */
const STAT_ONLY = ['wide', 'watch', 'interval', 'count'] as const;

const MIN_INTERVAL_S = 0.05;
const MAX_INTERVAL_S = 86_400;
const DEFAULT_INTERVAL_S = 2;

/** Node's parseArgs errors in our words. */
function parseError(e: unknown): UsageError {
  const { code, message } = e as { code?: string; message: string };
  const option = /'(-[^' ]+)/.exec(message)?.[1];
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && option !== undefined) return new UsageError(`unknown option ${option}`);
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && option !== undefined) {
    return new UsageError(/argument missing|ambiguous/.test(message) ? `option ${option} needs a value` : `option ${option} takes no value`);
  }
  return new UsageError(message.split('. ')[0]!);
}

function seconds(text: string): number {
  const s = /^\s*\d+(\.\d+)?\s*$|^\s*\.\d+\s*$/.test(text) ? Number(text) : NaN;
  if (!(s >= MIN_INTERVAL_S && s <= MAX_INTERVAL_S)) throw new UsageError(`--interval takes seconds from ${MIN_INTERVAL_S} to ${MAX_INTERVAL_S} (like 0.5 or 2), not ${JSON.stringify(text)}`);
  return s;
}

function positiveInteger(text: string): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(Number.isSafeInteger(n) && n >= 1)) throw new UsageError(`--count takes a positive integer, not ${JSON.stringify(text)}`);
  return n;
}

function isCommand(word: string | undefined): word is Command {
  return (COMMANDS as readonly string[]).includes(word ?? '');
}

/** An error as printed: its code, message, exit status and (system errors) what failed. */
function describe(e: unknown): { code: string; message: string; exitCode: number; extra: Record<string, string> } {
  if (e instanceof UsageError) return { code: USAGE_CODE, message: e.message, exitCode: EXIT_USAGE, extra: {} };
  if (e instanceof SystemError) return { code: e.code, message: e.message, exitCode: EXIT_ERROR, extra: { errno: e.errno, syscall: e.syscall, ...(e.path === undefined ? {} : { path: e.path }) } };
  if (isBusError(e)) return { code: e.code, message: e.message, exitCode: EXIT_ERROR, extra: {} };
  return { code: INTERNAL_CODE, message: `unexpected error (a bug in shmbus; NODE_DEBUG=shmbus prints its stack): ${String((e as Error)?.message ?? e).split('\n')[0]}`, exitCode: EXIT_ERROR, extra: {} };
}

export interface Terminal {
  /** stdout is a terminal (the watch view clears the screen). */
  readonly isTTY: boolean;
  /** Its width in columns, if known. */
  readonly columns: number | undefined;
}

const processTerminal = (): Terminal => ({ isTTY: process.stdout.isTTY === true, columns: process.stdout.columns });

export async function main(
  argv: string[],
  out: (s: string) => void = (s) => process.stdout.write(`${s}\n`),
  err: (s: string) => void = (s) => process.stderr.write(`${s}\n`),
  terminal: Terminal = processTerminal(),
): Promise<number> {
  const end = argv.indexOf('--');
  const json = (end === -1 ? argv : argv.slice(0, end)).includes('--json');
  try {
    return await run(argv, out, terminal);
  } catch (e) {
    const { code, message, exitCode, extra } = describe(e);
    if (json) err(JSON.stringify({ code, message, exitCode, ...extra }));
    else err(`shmbus: ${code}: ${message}${exitCode === EXIT_USAGE ? `\n${USAGE_LINE}` : ''}`);
    if (code === INTERNAL_CODE && /\bshmbus\b/.test(process.env.NODE_DEBUG ?? '')) err(String((e as Error)?.stack ?? e));
    return exitCode;
  }
}

async function run(argv: string[], out: (s: string) => void, terminal: Terminal): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, strict: true, options: OPTIONS });
  } catch (e) {
    throw parseError(e);
  }
  const { values, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (values.version) {
    out(packageVersion());
    return EXIT_OK;
  }
  if (command !== undefined && !isCommand(command)) throw new UsageError(`unknown command ${JSON.stringify(command)} (commands: ${COMMANDS.join(', ')})`);
  if (command === 'help' || values.help) {
    const topic = command === 'help' ? rest.shift() : command;
    if (topic !== undefined && !isCommand(topic)) throw new UsageError(`no help on ${JSON.stringify(topic)} (commands: ${COMMANDS.join(', ')})`);
    if (rest.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])}`);
    out(helpText(topic));
    return EXIT_OK;
  }
  if (command === undefined) throw new UsageError('no command given');
  if (rest.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])} after ${command}`);
  if (command === 'gc') {
    const misplaced = STAT_ONLY.find((o) => values[o] !== undefined);
    if (misplaced !== undefined) throw new UsageError(`option --${misplaced} is for stat, not gc`);
  }
  if (!values.watch) {
    const misplaced = (['interval', 'count'] as const).find((o) => values[o] !== undefined);
    if (misplaced !== undefined) throw new UsageError(`option --${misplaced} needs --watch`);
  }
  const intervalS = values.interval === undefined ? DEFAULT_INTERVAL_S : seconds(values.interval);
  const count = values.count === undefined ? undefined : positiveInteger(values.count);

  // Loaded here, not on import: they load the native addon, and `--help` or
  // `--version` work without it; a missing addon is then one line
  // (ERR_SHMBUS_ADDON_MISSING, exit 1), not a stack trace.
  const { DEFAULT_DIR } = require('./options') as typeof import('./options');
  const { checkDir, fetchRelayReport, gc, inspectNamespace, listNamespaces } = require('./stat') as typeof import('./stat');
  const dir = values.dir ?? process.env.SHMBUS_DIR ?? DEFAULT_DIR;
  checkDir(dir);
  if (command === 'gc') {
    const report = gc(dir, values.namespace);
    if (values.json) out(JSON.stringify(report, null, 2));
    else {
      for (const r of report.reaped) out(`reaped ${r.namespace}/${r.name} (dead pid ${r.pid}, ${r.unread} unread frame(s) discarded)`);
      for (const path of report.removed) out(`removed ${path}`);
      out(`gc: ${report.reaped.length} endpoint(s) reaped, ${report.removed.length} file(s) removed, ${report.kept.length} kept`);
    }
    return EXIT_OK;
  }

  const collect = async (): Promise<Snapshot[]> => {
    const namespaces = values.namespace !== undefined ? [values.namespace] : listNamespaces(dir);
    const reports = namespaces.map((ns) => inspectNamespace(dir, ns)).filter((r): r is NamespaceReport => r !== null);
    // Relays keep per-peer counters in their process; ask each live relay over its loopback metrics port.
    const relays = await Promise.all(
      reports.map((r) => {
        const relay = r.endpoints.find((e) => e.relay && e.alive && e.metricsPort > 0);
        return relay === undefined ? Promise.resolve(undefined) : fetchRelayReport(relay.metricsPort);
      }),
    );
    return reports.map((report, i) => ({ report, relay: relays[i] }));
  };
  const emptyText = `no shmbus namespace${values.namespace !== undefined ? ` "${values.namespace}"` : ''} in ${dir}`;
  const width = terminal.isTTY && terminal.columns !== undefined && terminal.columns > 0 ? terminal.columns : DEFAULT_WIDTH;
  const wide = values.wide === true;
  if (values.watch) {
    await watchStat({ collect, emptyText, intervalMs: intervalS * 1000, count, json: values.json === true, wide, width, tty: terminal.isTTY, out });
    return EXIT_OK;
  }
  const snapshots = await collect();
  if (values.json) out(JSON.stringify(snapshots.map(({ report, relay }) => ({ ...report, relay: relay ?? null })), null, 2));
  else if (snapshots.length === 0) out(emptyText);
  else {
    const fmt: FormatOptions = { wide, width };
    out(snapshots.map(({ report, relay }) => (relay === undefined ? formatReport(report, fmt) : `${formatReport(report, fmt)}\n${formatRelay(report.namespace, relay, fmt)}`)).join('\n\n'));
  }
  return EXIT_OK;
}

if (require.main === module) {
  // A closed pipe (`shmbus stat --watch | head`) ends the program quietly, as for any Unix tool.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(EXIT_OK);
    throw e;
  });
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
