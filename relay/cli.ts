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
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, ConfigError, describeConfigError } from './config';
import { isBusError } from '../src/internal';
import { TransitServer } from './server';

export const EXIT_OK = 0;
export const EXIT_USAGE = 64;
export const EXIT_UNAVAILABLE = 69;
export const EXIT_SOFTWARE = 70;
export const EXIT_CONFIG = 78;

const USAGE = 'usage: transit-server --config <cluster.json> --host <name> [--drain-timeout-ms <ms>] | --version';

/** This package's version: package.json at its root, one folder up from relay/, two from dist/relay/. */
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

function log(event: string, fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), event, ...fields })}\n`);
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
    process.stdout.write(`${USAGE}\n`);
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
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
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
