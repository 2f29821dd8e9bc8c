/**
 * The runner's settings: every command-line option in one table (its value,
 * environment variable, default, validator and help line), parsed once with
 * node:util parseArgs into a frozen, fully-defaulted object; the fixed
 * parameters of the measurements; and where the runner's files are.
 *
 * A value comes from the option, else from its environment variable, else
 * from the default. An unknown option, a stray argument or a value that does
 * not validate is a {@link UsageError}: the runner prints its message and
 * exits with {@link EXIT_USAGE}. `--help` is printed from the same table.
 */
import { existsSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { parseArgs } from 'node:util';
import type { RoleArgs } from './common';

/** Exit code of a command-line mistake (EX_USAGE of sysexits.h). */
export const EXIT_USAGE = 64;

/** A command-line mistake: the message names the option, what it expects and what it got. */
export class UsageError extends Error {
  readonly code = 'ERR_BENCH_USAGE';
}

// ---------------------------------------------------------------------------
// Validators: one per kind of value; each names the option and the value refused
// ---------------------------------------------------------------------------

type Parse<T> = (text: string, source: string) => T;

function refuse(source: string, expected: string, text: string): never {
  throw new UsageError(`${source} expects ${expected}, got ${JSON.stringify(text)}`);
}

function integer(min: number, max: number): Parse<number> {
  return (text, source) => {
    const n = Number(text);
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min || n > max) refuse(source, `an integer from ${min} to ${max}`, text);
    return n;
  };
}

function decimal(min: number, max: number): Parse<number> {
  return (text, source) => {
    const n = Number(text);
    if (text.trim() === '' || !Number.isFinite(n) || n < min || n > max) refuse(source, `a number from ${min} to ${max}`, text);
    return n;
  };
}

function pattern(text: string, source: string): RegExp {
  try {
    return new RegExp(text);
  } catch {
    return refuse(source, 'a regular expression', text);
  }
}

function cpuPair(text: string, source: string): readonly [number, number] {
  const m = /^\s*(\d{1,4})\s*,\s*(\d{1,4})\s*$/.exec(text);
  if (m === null || m[1] === m[2]) refuse(source, 'two different CPU numbers "A,B"', text);
  return Object.freeze([Number(m[1]), Number(m[2])] as const);
}

function oneOf<T extends string>(choices: readonly T[]): Parse<T> {
  return (text, source) => (choices.includes(text as T) ? (text as T) : refuse(source, `one of ${choices.join(', ')}`, text));
}

// ---------------------------------------------------------------------------
// The options
// ---------------------------------------------------------------------------

interface FlagOption {
  kind: 'boolean';
  short?: string;
  help: string;
}

interface ValueOption<T> {
  kind: 'string';
  /** How the value is shown in --help. */
  placeholder: string;
  env: string;
  fallback: string;
  parse: Parse<T>;
  help: string;
}

const flag = (help: string, short?: string): FlagOption => ({ kind: 'boolean', help, ...(short ? { short } : {}) });
const value = <T>(placeholder: string, env: string, fallback: string, parse: Parse<T>, help: string): ValueOption<T> => ({ kind: 'string', placeholder, env, fallback, parse, help });

/** Every option of the runner; the key is the option's name in camelCase (`quietWait` is `--quiet-wait`). */
const OPTIONS = {
  help: flag('print this help and exit (nothing is run)', 'h'),
  list: flag('print the row ids (what --only matches) and exit'),
  write: flag('also write BENCHMARKS.md (from bench/BENCHMARKS.template.md)'),
  json: flag('print the raw per-round results as one JSON line after the tables'),
  rounds: value('N', 'BENCH_ROUNDS', '5', integer(1, 1000), 'rounds; every row runs once per round'),
  seconds: value('S', 'BENCH_SECONDS', '0.4', decimal(0.05, 600), 'measured time of each throughput or RTT row'),
  only: value('REGEX', 'BENCH_ONLY', '.', pattern, "run only the rows whose id matches, e.g. 'jsring', '^c:', 'oneway1:64$' (see --list)"),
  cpus: value('A,B', 'BENCH_CPUS', '0,1', cpuPair, 'the sender/client side runs on CPU A, the receiver/server side on CPU B'),
  quietWait: value('S', 'BENCH_QUIET_WAIT', '0', decimal(0, 3600), 'before each round wait up to S seconds for a second in which other processes use < 10 % of the machine'),
  relayIdle: value('spin|park', 'BENCH_RELAY_IDLE', 'spin', oneOf(['spin', 'park'] as const), 'relay rows: the receiving app busy-polls (spin) or waits on its doorbell when empty (park)'),
  backlogFrames: value('N', 'BENCH_BACKLOG_FRAMES', '1000000', integer(1, 100_000_000), 'relay:backlog:64: frames the sender pushes'),
  backlogStallMs: value('MS', 'BENCH_BACKLOG_STALL_MS', '3000', integer(0, 600_000), 'relay:backlog:64: how long the receiver reads nothing'),
} as const;

type Options = typeof OPTIONS;
type Values = { readonly [K in keyof Options]: Options[K] extends ValueOption<infer T> ? T : boolean };

/** The runner's settings: the options' values, plus what follows from them. */
export type Settings = Values & {
  /** The command line as given (for the report). */
  readonly argv: readonly string[];
  /** The sender/client CPU and the receiver/server CPU (`cpus`). */
  readonly cpuSend: number;
  readonly cpuRecv: number;
  /** A row that takes longer than this is killed and counted as failed. */
  readonly rowTimeoutMs: number;
};

function optionName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Parse the command line (and the environment) into frozen settings; throws {@link UsageError}. */
export function parseSettings(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Settings {
  const config: Record<string, { type: 'boolean' | 'string'; short?: string }> = {};
  for (const [key, spec] of Object.entries(OPTIONS) as Array<[string, FlagOption | ValueOption<unknown>]>) {
    config[optionName(key)] = spec.kind === 'boolean' && spec.short ? { type: 'boolean', short: spec.short } : { type: spec.kind };
  }
  let parsed: Record<string, string | boolean | undefined>;
  try {
    parsed = parseArgs({ args: [...argv], options: config, strict: true, allowPositionals: false }).values as Record<string, string | boolean | undefined>;
  } catch (err) {
    const code = (err as { code?: string }).code;
    const message = err instanceof Error ? err.message : String(err);
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      const unknown = /'([^']+)'/.exec(message)?.[1] ?? message;
      throw new UsageError(`unknown option ${unknown} (see --help for the options)`);
    }
    if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') throw new UsageError(`unexpected argument ${/'([^']+)'/.exec(message)?.[1] ?? ''}: every setting is an option (see --help)`);
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      const name = /'(-[^' ]+)/.exec(message)?.[1] ?? 'an option';
      const spec = (OPTIONS as Record<string, FlagOption | ValueOption<unknown>>)[name.replace(/^-+/, '').replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())];
      throw new UsageError(spec?.kind === 'string' ? `${name} expects a value (${spec.placeholder}), got none` : `${name} takes no value`);
    }
    throw new UsageError(message);
  }
  const values: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(OPTIONS) as Array<[string, FlagOption | ValueOption<unknown>]>) {
    const name = optionName(key);
    const given = parsed[name];
    if (spec.kind === 'boolean') {
      values[key] = given === true;
    } else if (typeof given === 'string') {
      values[key] = spec.parse(given, `--${name}`);
    } else if (env[spec.env] !== undefined && env[spec.env] !== '') {
      values[key] = spec.parse(env[spec.env]!, spec.env);
    } else {
      values[key] = spec.parse(spec.fallback, `the default of --${name}`);
    }
  }
  const v = values as Values;
  return Object.freeze({ ...v, argv: Object.freeze([...argv]), cpuSend: v.cpus[0], cpuRecv: v.cpus[1], rowTimeoutMs: 30_000 + v.seconds * 4000 });
}

/** The text of --help. */
export function helpText(): string {
  const lines = [
    'usage: node dist/bench/run.js [options]      (or: npm run build && npm run bench -- [options])',
    '',
    'Measures shmbus against a C shared-memory SPSC ring, a plain JS SPSC ring over an addon',
    'mapping, Node Unix-domain sockets, and (between two "hosts" on this machine) the relay path',
    'against direct TCP; each row runs once per round, in rotating order, and every figure is a',
    'median over the rounds (ratios: medians of same-round ratios). Row ids are <impl>:<measure>:<size>,',
    'except the lane rows (what the number of lanes per inbox costs): lanes:<measure>:<lane count>.',
    '',
    'The full mesh in network namespaces (root) is its own command: node dist/bench/run.js mesh --help',
    '',
    'Options (the environment variable is used when the option is not given):',
  ];
  const rows = (Object.entries(OPTIONS) as Array<[string, FlagOption | ValueOption<unknown>]>).map(([key, spec]) => {
    const name = optionName(key);
    if (spec.kind === 'boolean') return [`${spec.short ? `-${spec.short}, ` : ''}--${name}`, spec.help];
    return [`--${name} ${spec.placeholder}`, `${spec.help} [${spec.env}; default ${spec.fallback}]`];
  });
  const width = Math.max(...rows.map(([left]) => left!.length)) + 2;
  for (const [left, right] of rows) lines.push(`  ${left!.padEnd(width)}${right}`);
  lines.push('', `Exit codes: 0 done (some rows may have failed: see stderr), 1 every row failed or the run broke, ${EXIT_USAGE} a command-line mistake.`);
  return lines.join('\n');
}

// ---------------------------------------------------------------------------
// Fixed parameters of the measurements
// ---------------------------------------------------------------------------

/** Payload sizes measured, bytes. */
export const SIZES = [64, 1024] as const;
/** Sender warm-up before the measured part (JIT, caches, CPU clocks), ms. */
export const WARMUP_MS = 150;
/** Count bounds of the measured part (the time bound usually ends a row first). */
export const MAX_FRAMES = 50_000_000;
export const MAX_ROUND_TRIPS = 200_000;
/** Frames per send of the batched rows. */
export const BATCH = 32;
/** Slots of every ring and inbox measured (C ring, plain JS ring, shmbus inboxes). */
export const CAPACITY = 4096;
/** Inbox slot size per payload size: a 64-byte multiple holding the 32-byte frame header and the payload. */
export const SLOT_SIZE: Readonly<Record<number, number>> = { 64: 128, 1024: 1088 };
/** Producer processes of the fan-in rows. */
export const PRODUCERS = 4;

/**
 * The lane rows (`lanes:<measure>:<lane count>`, bench/lanes.ts): the lane
 * counts whose consumer cost is measured (each with that many producers, one
 * lane each, so that every lane is in use) and whose memory is measured.
 * Their inboxes have the shipped default slot size and capacity.
 */
export const LANE_COUNTS_COST = [1, 4, 16, 64, 256] as const;
export const LANE_COUNTS_MEMORY = [1, 16, 64, 256] as const;
/** Payload bytes of the lane rows' frames. */
export const LANES_SIZE = 64;
/** The wide fan-in row: this many producer processes into an inbox of as many lanes (the default). */
export const WIDE_FANIN = 16;
/**
 * Its warm-up: WARMUP_MS scaled by WIDE_FANIN / PRODUCERS, so that each of its
 * producers (taking turns on one core) gets as much warm-up CPU as those of
 * the PRODUCERS-wide row; and its shortest measured window, s (a shorter one
 * can end before every producer has been scheduled in it).
 */
export const WIDE_FANIN_WARMUP_MS = (WARMUP_MS * WIDE_FANIN) / PRODUCERS;
export const WIDE_FANIN_MIN_SECONDS = 0.5;

/** The arguments every measured child gets (throughput or RTT); rows add their own. */
export function measuredArgs(settings: Settings, size: number, rtt: boolean): RoleArgs {
  return { size, seconds: settings.seconds, maxCount: rtt ? MAX_ROUND_TRIPS : MAX_FRAMES, warmupMs: WARMUP_MS, limitMs: settings.rowTimeoutMs };
}

/**
 * Limits of the relay clusters of the throughput/RTT rows (one cluster per
 * batching): `batchFrames` is the most frames alpha's relay puts in one DATA
 * message (one socket.write), compared with the direct TCP rows at the same
 * frames per write. Connections are kept (idleTimeoutMs) across the round.
 */
export const relayLimits = (batchFrames: number): Record<string, number> => ({
  batchFrames,
  idleTimeoutMs: 3_600_000,
  ...(process.env.BENCH_RELAY_SPIN_US === undefined ? {} : { idleSpinUs: Number(process.env.BENCH_RELAY_SPIN_US) }),
});

/** The backlog row: its id, payload size, the receiver's inbox, and its time bound. */
export const BACKLOG_ID = 'relay:backlog:64';
export const BACKLOG_SIZE = 64;
export const BACKLOG_CAPACITY = 256;
export const BACKLOG_TIMEOUT_MS = 180_000;
/** limits.pendingFrames: the shipped default (relay/config.ts), and a bound below the outbound ring's capacity. */
export const BACKLOG_DEFAULT_PENDING = 10_000;
export const BACKLOG_SMALL_PENDING = 1000;

// ---------------------------------------------------------------------------
// Where things are
// ---------------------------------------------------------------------------

function findRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'bench', 'c', 'spsc.c'))) return dir;
    dir = dirname(dir);
  }
  throw new Error(`cannot find the project root (with bench/c/spsc.c) above ${__dirname}`);
}

/** The project root (BENCHMARKS.md, bench/c, bench/out, the template). */
export const ROOT = findRoot();
/** '.ts' when run from source (tsx), '.js' when compiled. */
export const EXT = extname(__filename);
/** The child programs: one file per transport, each a set of roles (common.ts). */
export const UDS_FILE = join(__dirname, `uds${EXT}`);
export const SHMBUS_FILE = join(__dirname, `shmbus${EXT}`);
export const JSRING_FILE = join(__dirname, `jsring${EXT}`);
export const RELAY_FILE = join(__dirname, `relay${EXT}`);
export const LANES_FILE = join(__dirname, `lanes${EXT}`);
export const RELAY_CLI = join(__dirname, '..', 'relay', `cli${EXT}`);
export const SPSC_SOURCE = join(ROOT, 'bench', 'c', 'spsc.c');
export const SPSC_BINARY = join(ROOT, 'bench', 'out', 'spsc');
export const TEMPLATE_FILE = join(ROOT, 'bench', 'BENCHMARKS.template.md');
export const BENCHMARKS_FILE = join(ROOT, 'BENCHMARKS.md');
export const SHM_DIR = '/dev/shm';
/** Prefix of every name this run makes: shmbus namespaces, /dev/shm files, sockets, cluster folders. */
export const RUN_ID = `bench-${process.pid}`;
