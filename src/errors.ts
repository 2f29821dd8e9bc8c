/**
 * Errors with stable codes.
 *
 * {@link ERROR_TABLE} is the single source of every code and its meaning (as
 * libuv's error table is): the README lists every code, and a test checks it does.
 * Codes are API: they are appended, never renamed or reused.
 *
 * Back-pressure (a full inbox) is not an error: sends return `false`.
 */

export const ERROR_TABLE = {
  ERR_SHMBUS_INVALID_OPTION: 'An option or argument is missing, of the wrong type or out of range.',
  ERR_SHMBUS_UNKNOWN_DESTINATION: 'No live endpoint of that name is registered in the namespace.',
  ERR_SHMBUS_FRAME_TOO_LARGE: 'The payload is larger than the destination inbox accepts (its maxMessageSize).',
  ERR_SHMBUS_NAME_IN_USE: 'A live process already owns an endpoint of that name.',
  ERR_SHMBUS_DIRECTORY_FULL: 'Every entry of the namespace directory is taken by a live process (entries of dead owners are reclaimed first).',
  ERR_SHMBUS_NOT_A_SEGMENT: 'The file is not a shmbus segment (wrong magic or kind, truncated, or never finished).',
  ERR_SHMBUS_LAYOUT_MISMATCH: 'The segment was written by another layout version of shmbus.',
  ERR_SHMBUS_CORRUPT_SEGMENT: 'A shmbus segment holds values that cannot be valid (sizes, counts, lengths).',
  ERR_SHMBUS_CLOSED: 'The bus was closed.',
  ERR_SHMBUS_SYSTEM: 'A system call failed; `syscall`, `errno` and `path` say which.',
  ERR_SHMBUS_UNSUPPORTED_RUNTIME: 'This runtime refuses external ArrayBuffers (V8 sandbox), so shared memory cannot be mapped.',
  ERR_SHMBUS_LOCK_TIMEOUT: 'The namespace directory lock was held by a live process for longer than the timeout.',
  ERR_SHMBUS_DESTINATION_DEAD: 'The endpoint is registered but its owner process has died; frames wait for a successor that takes the name over.',
  ERR_SHMBUS_INVALID_CONFIG: 'The cluster config file is missing, unreadable or invalid; `field` names the JSON path at fault.',
  ERR_SHMBUS_RELAY_UNAVAILABLE: 'No transit relay is registered in the namespace, or it has died and its inbox is full.',
  ERR_SHMBUS_CLAIM_RECLAIMED: 'Layout 1 only (no longer raised): a producer stalled between claim and commit past the reclaim timeout lost its slot.',
  ERR_SHMBUS_INVALID_PAYLOAD: 'The payload is not bytes (an ArrayBufferView or ArrayBuffer) or a string; nothing was sent.',
  ERR_SHMBUS_NO_LANE: 'Every lane of the destination inbox is held by a live producer (the destination should open with more lanes).',
  ERR_SHMBUS_ADDON_MISSING: 'The native addon was not found (no source build, no prebuilt binary for this platform) or could not be loaded; the message names the command that fixes it.',
  ERR_SHMBUS_PROTOCOL: 'A peer relay broke the wire protocol (docs/PROTOCOL.md); `wireCode` is the ERROR code sent back before closing.',
  ERR_SHMBUS_ABORTED: 'The operation was aborted by its AbortSignal; nothing was sent. `cause` holds the signal\'s reason; `name` is "AbortError".',
  ERR_SHMBUS_WAIT_TIMEOUT: 'The awaited endpoint was not registered (by a live process) within `timeoutMs`.',
  ERR_SHMBUS_INVALID_JSON: 'The payload of the frame is not valid JSON (as UTF-8 text); `cause` holds the parser\'s error.',
} as const;

export type ErrorCode = keyof typeof ERROR_TABLE;

/** Every shmbus error. `code` is stable; `message` is for people. */
export class BusError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  override get name(): string {
    return `BusError [${this.code}]`;
  }
}

/**
 * An operation aborted by its AbortSignal (code ERR_SHMBUS_ABORTED). Its
 * `name` is "AbortError", as for the web platform's and Node's own aborted
 * operations, and `cause` is the signal's reason.
 */
export class BusAbortError extends BusError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_SHMBUS_ABORTED', message, options);
  }

  override get name(): string {
    return 'AbortError';
  }
}

/** Throw a {@link BusAbortError} ("<what> <target> was aborted") if `signal` has aborted. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string, target = ''): void {
  if (signal?.aborted === true) throw abortError(signal, what, target);
}

/** The {@link BusAbortError} of an aborted `signal`. */
export function abortError(signal: AbortSignal, what: string, target = ''): BusAbortError {
  return new BusAbortError(`${what}${target === '' ? '' : ` ${target}`} was aborted`, { cause: signal.reason });
}

/** A system call failed in the addon. */
export class SystemError extends BusError {
  readonly syscall: string;
  readonly errno: string;
  readonly path: string | undefined;

  constructor(message: string, syscall: string, errno: string, path: string | undefined, cause: unknown) {
    super('ERR_SHMBUS_SYSTEM', message, { cause });
    this.syscall = syscall;
    this.errno = errno;
    this.path = path;
  }
}

/** The shape of errors thrown by the addon (Node system-error style). */
interface NativeErrorShape {
  code?: unknown;
  syscall?: unknown;
  path?: unknown;
  message?: unknown;
}

/**
 * Convert an error thrown by the addon into a BusError, naming what was being
 * done (`what`). Errors of other shapes are rethrown unchanged.
 */
export function fromNative(err: unknown, what: string): BusError {
  const e = err as NativeErrorShape;
  if (e !== null && typeof e === 'object' && typeof e.code === 'string' && typeof e.syscall === 'string') {
    const path = typeof e.path === 'string' ? e.path : undefined;
    if (e.code === 'ENOTSUP' && e.syscall === 'napi_create_external_arraybuffer') {
      return new BusError('ERR_SHMBUS_UNSUPPORTED_RUNTIME', `${what}: ${String(e.message)}`, { cause: err });
    }
    return new SystemError(`${what}: ${e.syscall} ${e.code}${path === undefined ? '' : ` ${path}`}`, e.syscall, e.code, path, err);
  }
  throw err;
}

/** How an error message shows a value it refused: strings quoted, anything unprintable by its type. */
export function describeValue(value: unknown): string {
  try {
    return typeof value === 'string' ? JSON.stringify(value) : String(value);
  } catch {
    return typeof value;
  }
}

/** True if `err` is a BusError with the given code. */
export function isBusError(err: unknown, code?: ErrorCode): err is BusError {
  return err instanceof BusError && (code === undefined || err.code === code);
}
