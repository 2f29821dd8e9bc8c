#!/usr/bin/env node
/**
 * transit-server --config cluster.json --host <name> [--drain-timeout-ms N]
 *
 * Exit codes:
 *   0   stopped cleanly (SIGTERM or SIGINT)
 *   64  usage error (EX_USAGE)
 *   69  cannot serve: a port is taken, or a live relay already serves this namespace (EX_UNAVAILABLE)
 *   70  internal error (EX_SOFTWARE)
 *   78  the config is missing or invalid (EX_CONFIG)
 *
 * Logs: one JSON object per line on stdout, one per lifecycle event (start,
 * peer up/down, refusals, undeliverable frames, stop) — never one per frame.
 * Each has `time`, `level` (info, warn, error) and `event`; codes are names.
 */
import { HELP, USAGE } from './cli-help';
import { parseArgs } from 'node:util';
import { loadConfig, ConfigError, describeConfigError } from './config';
import { isBusError } from '../src/internal';
import { TransitServer } from './server';
import { packageVersion } from './metrics';
import { WIRE_ERROR_TABLE } from './codec';
import { outcomeName } from '../src/internal';

export const EXIT_OK = 0;
export const EXIT_USAGE = 64;
export const EXIT_UNAVAILABLE = 69;
export const EXIT_SOFTWARE = 70;
export const EXIT_CONFIG = 78;


/** Events logged at `error` (the relay cannot run or crashed) and `warn` (something refused, failed or lost); the rest are `info`. */
const ERROR_EVENTS = new Set(['crash', 'config_error', 'start_failed', 'stop_failed', 'listener_error']);
const WARN_EVENTS = new Set(['peer_refused', 'peer_error', 'connect_failed', 'undeliverable', 'peer_stalled', 'backpressure_on', 'intent_settled']);

export type LogLevel = 'info' | 'warn' | 'error';

export function logLevel(event: string, fields: Record<string, unknown>): LogLevel {
  if (ERROR_EVENTS.has(event)) return 'error';
  if (WARN_EVENTS.has(event)) return 'warn';
  // A stop that leaves frames behind (a peer down at shutdown) is worth a look.
  if (event === 'stop' && fields.clean === false) return 'warn';
  return 'info';
}

/**
 * Codes as the API names them: an outcome (`reason`) by its OUTCOME_TABLE name, e.g.
 * 'EXPIRED' (src/outcome.ts), and a wire error (`code`) by its WIRE_ERROR_TABLE name, e.g.
 * 'AUTH_FAILED', with the number kept as `wireCode` (as ProtocolError has it).
 */
function named(fields: Record<string, unknown>): Record<string, unknown> {
  const out = { ...fields };
  if (typeof out.reason === 'number') out.reason = outcomeName(out.reason);
  if (typeof out.code === 'number') {
    out.wireCode = out.code;
    out.code = (WIRE_ERROR_TABLE as Record<number, { name: string } | undefined>)[out.code]?.name ?? `WIRE_ERROR_${out.code}`;
  }
  return out;
}

function log(event: string, fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), level: logLevel(event, fields), event, ...named(fields) })}\n`);
}

async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { config: { type: 'string' }, host: { type: 'string' }, 'drain-timeout-ms': { type: 'string' }, help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'V' } },
    }));
  } catch (err) {
    process.stderr.write(`transit-server: ${(err as Error).message}\n${USAGE}\n`);
    return EXIT_USAGE;
  }
  if (values.help) {
    process.stdout.write(HELP);
    return EXIT_OK;
  }
  if (values.version) {
    process.stdout.write(`${packageVersion()}\n`);
    return EXIT_OK;
  }
  if (values.config === undefined || values.host === undefined) {
    process.stderr.write(`transit-server: --config and --host are required\n${USAGE}\n`);
    return EXIT_USAGE;
  }
  const drainTimeoutMs = values['drain-timeout-ms'] === undefined ? 5000 : Number(values['drain-timeout-ms']);
  if (!Number.isFinite(drainTimeoutMs) || drainTimeoutMs < 0) {
    process.stderr.write(`transit-server: --drain-timeout-ms must be a number of milliseconds >= 0; received ${values['drain-timeout-ms']}\n`);
    return EXIT_USAGE;
  }
  let config;
  try {
    config = loadConfig(values.config, values.host);
  } catch (err) {
    if (err instanceof ConfigError || isBusError(err, 'ERR_SHMBUS_INVALID_CONFIG')) {
      log('config_error', { error: describeConfigError(err), field: (err as ConfigError).field });
      return EXIT_CONFIG;
    }
    throw err;
  }
  const server = new TransitServer(config, log);
  // Handle SIGTERM/SIGINT from before the start line: a signal that arrived between that line and a
  // handler installed after start() would take the default action and kill the relay mid-start.
  let requested: string | null = null;
  let onSignal = (signal: string): void => {
    requested ??= signal;
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
  try {
    await server.start();
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL' || isBusError(err, 'ERR_SHMBUS_NAME_IN_USE')) {
      log('start_failed', { error: (err as Error).message, code });
      return EXIT_UNAVAILABLE;
    }
    throw err;
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log('signal', { signal });
      server.stop(drainTimeoutMs).then(
        () => resolve(EXIT_OK),
        (err: unknown) => {
          log('stop_failed', { error: (err as Error).message });
          resolve(EXIT_SOFTWARE);
        },
      );
    };
    onSignal = stop;
    if (requested !== null) stop(requested);
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Timers of closed sockets may linger briefly; nothing else keeps the process.
    setTimeout(() => process.exit(code), 100).unref();
  },
  (err: unknown) => {
    log('crash', { error: (err as Error).stack ?? String(err) });
    process.exit(EXIT_SOFTWARE);
  },
);
