/**
 * Option validation at the public boundary: one validator per option, each
 * message naming the option, what was expected and what was received. The
 * result is frozen and fully defaulted, so nothing below re-validates.
 */
import { BusError, describeValue } from './errors';
import {
  DEFAULT_CAPACITY,
  DEFAULT_DIR_ENTRY_COUNT,
  DEFAULT_LANES,
  DEFAULT_SLOT_SIZE,
  MAX_LANES,
  MAX_MESSAGE_LENGTH,
  MIN_LANES,
  MAX_CAPACITY,
  MAX_DIR_ENTRY_COUNT,
  MAX_SLOT_SIZE,
  MIN_CAPACITY,
  MIN_SLOT_SIZE,
  NAME_PATTERN,
  NAMESPACE_PATTERN,
  SLOT_HEADER_LENGTH,
} from './layout';
import { validCapacity, validSlotSize } from './segment';

export const DEFAULT_NAMESPACE = 'default';
export const DEFAULT_DIR = '/dev/shm';
export const DEFAULT_MODE = 0o600;
export const DEFAULT_LOCK_TIMEOUT_MS = 2000;

/** Options of {@link Bus.open}. */
export interface BusOptions {
  /** Endpoint name, unique in the namespace while its owner lives: 1-64 of `A-Z a-z 0-9 _ - .`, not starting with `.`. */
  name: string;
  /** Namespace (default `default`, or `SHMBUS_NAMESPACE`): 1-64 of `A-Z a-z 0-9 _ -`. Two namespaces never see each other. */
  namespace?: string;
  /** Folder for the segment files (default `/dev/shm`, or `SHMBUS_DIR`). */
  dir?: string;
  /** Bytes per inbox slot, frame header (32 B) included: a multiple of 64 in [64, 65536]. Default 256. */
  slotSize?: number;
  /** Slots per lane of the inbox, a power of two in [2, 1048576]. Default 1024. */
  capacity?: number;
  /** Lanes of the inbox: how many producers may send to it at once (each takes one lane on its first send). 1-4096, default 16. */
  lanes?: number;
  /** Largest message the inbox accepts, in bytes: longer than one slot's payload, it spans consecutive slots of one lane. Default min(65536, capacity x (slotSize - 32)); at most that product and 16 MiB. */
  maxMessageSize?: number;
  /** File mode of created segments (default 0o600; 0o660 to share with a group). */
  mode?: number;
  /** Entries of the namespace directory, if this open creates it (default 256). */
  directoryEntries?: number;
  /** How long to wait for the directory lock held by a live process (ms, default 2000). */
  lockTimeoutMs?: number;
  /**
   * Close on SIGTERM / SIGINT when the application has no listener of its own
   * for that signal, then let the signal end the process as it would have
   * (default true; see README, "Exits and signals").
   */
  handleSignals?: boolean;
  /**
   * Idle strategy of the receivers (`frames()`, `on('frame')`): after the
   * inbox is found empty, poll it once per turn of the event loop for this
   * long (µs) before parking on the doorbell. 0 (default) parks at once: no
   * CPU while idle, a futex wake-up per burst. A few hundred µs keep a busy
   * stream's latency at polling cost (Aeron's spin-then-park).
   */
  idleSpinUs?: number;
}

export interface ResolvedBusOptions {
  readonly name: string;
  readonly namespace: string;
  readonly dir: string;
  readonly slotSize: number;
  readonly capacity: number;
  readonly lanes: number;
  readonly maxMessageSize: number;
  readonly mode: number;
  readonly directoryEntries: number;
  readonly lockTimeoutMs: number;
  readonly handleSignals: boolean;
  readonly idleSpinUs: number;
}

function invalid(option: string, expected: string, received: unknown): BusError {
  return new BusError('ERR_SHMBUS_INVALID_OPTION', `option "${option}" must be ${expected}; received ${describeValue(received)}`);
}

export function validateName(value: unknown, option = 'name'): string {
  if (typeof value !== 'string' || !NAME_PATTERN.test(value)) {
    throw invalid(option, '1-64 characters of A-Z a-z 0-9 _ - . not starting with "."', value);
  }
  return value;
}

export function validateNamespace(value: unknown, option = 'namespace'): string {
  if (typeof value !== 'string' || !NAMESPACE_PATTERN.test(value)) throw invalid(option, '1-64 characters of A-Z a-z 0-9 _ -', value);
  return value;
}

export function validateDir(value: unknown, option = 'dir'): string {
  if (typeof value !== 'string' || !value.startsWith('/')) throw invalid(option, 'an absolute folder path', value);
  return value;
}

export function validateSlotSize(value: unknown, option = 'slotSize'): number {
  if (typeof value !== 'number' || !validSlotSize(value)) throw invalid(option, `a multiple of 64 in [${MIN_SLOT_SIZE}, ${MAX_SLOT_SIZE}] (frame header of ${SLOT_HEADER_LENGTH} B included)`, value);
  return value;
}

export function validateCapacity(value: unknown, option = 'capacity'): number {
  if (typeof value !== 'number' || !validCapacity(value)) throw invalid(option, `a power of two in [${MIN_CAPACITY}, ${MAX_CAPACITY}]`, value);
  return value;
}

export function validateMode(value: unknown, option = 'mode'): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0o777 || (value & 0o600) !== 0o600) {
    throw invalid(option, 'a file mode in [0, 0o777] that lets the owner read and write (e.g. 0o600, 0o660)', value);
  }
  return value;
}

export function validateDurationMs(value: unknown, option: string, min = 1, max = 3_600_000): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) throw invalid(option, `a number of milliseconds in [${min}, ${max}]`, value);
  return value;
}

export function validateEntryCount(value: unknown, option = 'directoryEntries'): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_DIR_ENTRY_COUNT) throw invalid(option, `an integer in [1, ${MAX_DIR_ENTRY_COUNT}]`, value);
  return value;
}

export function validateIdleSpinUs(value: unknown, option = 'idleSpinUs'): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 1_000_000) throw invalid(option, 'an integer number of microseconds in [0, 1000000]', value);
  return value;
}

export function validateBoolean(value: unknown, option: string): boolean {
  if (typeof value !== 'boolean') throw invalid(option, 'true or false', value);
  return value;
}

export function validateLanes(value: unknown, option = 'lanes'): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < MIN_LANES || value > MAX_LANES) throw invalid(option, `an integer in [${MIN_LANES}, ${MAX_LANES}]`, value);
  return value;
}

/** Largest maxMessageSize an inbox of this geometry can hold: one lane full of one message. */
export function maxMessageLimit(slotSize: number, capacity: number): number {
  return Math.min(MAX_MESSAGE_LENGTH, capacity * (slotSize - SLOT_HEADER_LENGTH));
}

/** The default maxMessageSize of an inbox of this geometry. */
export function defaultMaxMessageSize(slotSize: number, capacity: number): number {
  return Math.min(65536, maxMessageLimit(slotSize, capacity));
}

export function validateMaxMessageSize(value: unknown, slotSize: number, capacity: number, option = 'maxMessageSize'): number {
  const limit = maxMessageLimit(slotSize, capacity);
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > limit) {
    throw invalid(option, `an integer in [1, ${limit}] (at most capacity x (slotSize - ${SLOT_HEADER_LENGTH}), and 16 MiB)`, value);
  }
  return value;
}

/** Validate and default the options of Bus.open. */
export function resolveBusOptions(options: unknown): ResolvedBusOptions {
  if (options === null || typeof options !== 'object') throw invalid('options', 'an object', options);
  const o = options as Record<string, unknown>;
  const known = new Set(['name', 'namespace', 'dir', 'slotSize', 'capacity', 'lanes', 'maxMessageSize', 'mode', 'directoryEntries', 'lockTimeoutMs', 'handleSignals', 'idleSpinUs']);
  for (const key of Object.keys(o)) {
    if (!known.has(key)) throw invalid(key, `absent (unknown option; known: ${[...known].join(', ')})`, o[key]);
  }
  const env = process.env;
  const slotSize = validateSlotSize(o.slotSize ?? DEFAULT_SLOT_SIZE);
  const capacity = validateCapacity(o.capacity ?? DEFAULT_CAPACITY);
  return Object.freeze({
    name: validateName(o.name),
    namespace: validateNamespace(o.namespace ?? env.SHMBUS_NAMESPACE ?? DEFAULT_NAMESPACE),
    dir: validateDir(o.dir ?? env.SHMBUS_DIR ?? DEFAULT_DIR),
    slotSize,
    capacity,
    lanes: validateLanes(o.lanes ?? DEFAULT_LANES),
    maxMessageSize: validateMaxMessageSize(o.maxMessageSize ?? defaultMaxMessageSize(slotSize, capacity), slotSize, capacity),
    mode: validateMode(o.mode ?? DEFAULT_MODE),
    directoryEntries: validateEntryCount(o.directoryEntries ?? DEFAULT_DIR_ENTRY_COUNT),
    lockTimeoutMs: validateDurationMs(o.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS, 'lockTimeoutMs'),
    handleSignals: validateBoolean(o.handleSignals ?? true, 'handleSignals'),
    idleSpinUs: validateIdleSpinUs(o.idleSpinUs ?? 0),
  });
}
