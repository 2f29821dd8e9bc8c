/**
 * The one typed door to the C++ addon (`build/Release/shmbus.node`).
 *
 * Nothing else in the project loads the addon: everything above this file sees
 * only the {@link NativeBinding} interface. The addon does what JavaScript
 * cannot: map shared memory, wait on and wake a futex across processes, and
 * ask the kernel whether a pid is alive. Ring logic stays in TypeScript.
 *
 * Errors thrown by the addon are plain `Error`s carrying `code` (the errno
 * name, e.g. `ENOENT`), `errno` (the positive number), `syscall` and, where a
 * file is involved, `path` — the shape of Node's own system errors. The layers
 * above wrap them into `BusError`s with the original as `cause`.
 */

/** Result of one armed futex wait, delivered to the waiter's callback. */
export enum WaitResult {
  /** `FUTEX_WAKE` woke the waiter (or a spurious wake-up; callers re-check). */
  Woken = 0,
  /** The timeout passed first. */
  TimedOut = 1,
  /** The word did not hold the expected value when the wait began (`EAGAIN`). */
  NotEqual = 2,
  /** The waiter was closed while armed. */
  Closed = 3,
}

/**
 * A native thread that parks on one 32-bit futex word inside a mapping and
 * reports to the JS thread (through a thread-safe function) when it returns.
 * Armed = the thread is waiting, and the waiter holds the event loop open.
 */
export interface NativeWaiter {
  /**
   * Arm the waiter: the thread calls `futex(FUTEX_WAIT, expected, timeout)` on
   * the word and then invokes the callback given at construction once, on the
   * JS thread, with a {@link WaitResult}. `timeoutMs < 0` waits without limit.
   * Throws `EBUSY` if already armed.
   */
  wait(expected: number, timeoutMs: number): void;
  /** True while a wait is armed and its callback has not run yet. */
  readonly armed: boolean;
  /**
   * Stop the thread and release the event loop. Wakes an armed wait (its
   * callback then runs with {@link WaitResult.Closed}). Idempotent. Must be
   * called before the mapping is unmapped.
   */
  close(): void;
}

export interface NativeBinding {
  /** Page size in bytes (sysconf(_SC_PAGESIZE)). */
  readonly pageSize: number;
  /**
   * `open(path, O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, mode)`, `ftruncate(size)`,
   * `mmap(PROT_READ|PROT_WRITE, MAP_SHARED)`, `close(fd)`. On any failure after
   * the file exists it is unlinked again. The mapping is returned as an external
   * ArrayBuffer of exactly `size` bytes, zero-filled.
   */
  create(path: string, size: number, mode: number): ArrayBuffer;
  /**
   * `open(path, O_RDWR|O_CLOEXEC)`, `fstat`, `mmap` of the whole file as it is
   * now, `close(fd)`. A file of zero length throws `ENODATA` (syscall `mmap`):
   * it is being created, or is not a segment.
   */
  open(path: string): ArrayBuffer;
  /**
   * `munmap` now and detach the ArrayBuffer (its byteLength becomes 0, so every
   * typed array over it becomes empty instead of pointing at freed pages).
   * Idempotent; mappings never unmapped explicitly are unmapped when collected.
   */
  unmap(buffer: ArrayBuffer): void;
  /** `unlink(path)`. */
  unlink(path: string): void;
  /**
   * `futex(FUTEX_WAKE)` (shared, not private) on the 32-bit word at
   * `byteOffset` (multiple of 4) of a mapping. Returns the number woken.
   */
  futexWake(buffer: ArrayBuffer, byteOffset: number, count: number): number;
  /** Creates a {@link NativeWaiter} on the word at `byteOffset` of `buffer`. */
  createWaiter(buffer: ArrayBuffer, byteOffset: number, callback: (result: WaitResult) => void): NativeWaiter;
  /**
   * Start time of process `pid` in clock ticks since boot (field 22 of
   * `/proc/<pid>/stat`), or -1 if no such process exists or it has exited and
   * waits to be reaped (state `Z` or `X`: a zombie writes no memory). Together with the pid
   * it names one process for the life of the machine (pids are reused, start
   * times of a reused pid differ).
   */
  processStartTime(pid: number): number;
  /**
   * `sendto()` one datagram holding `byte` to 127.0.0.1:`port`, now (not from
   * a later tick as node:dgram does), from a per-process non-blocking UDP
   * socket. False if the kernel refused it for now (EAGAIN, ENOBUFS,
   * ECONNREFUSED); other errors throw (syscall `sendto` or `socket`).
   */
  udpDoorbell(port: number, byte: number): boolean;
  /**
   * `membarrier(MEMBARRIER_CMD_QUERY)` then `REGISTER_GLOBAL_EXPEDITED`: true
   * when this process now takes part in every process's global expedited
   * barrier; false when the kernel or a seccomp filter does not offer it.
   */
  membarrierRegister(): boolean;
  /**
   * `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`: on return every running
   * thread of every registered process has executed a full memory barrier.
   */
  membarrierGlobal(): void;
}

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BusError } from './errors';

/** node-gyp-build's loader: `resolve(root)` names the binary it would load, or throws "No native build was found ...". */
interface NodeGypBuild {
  resolve(root: string): string;
}

/**
 * The package root: this file runs from src/ (tsx, a checkout) or from
 * dist/src/ (compiled, an installed package). The root is the folder that
 * holds binding.gyp (shipped in the package for the source-build fallback).
 */
export function packageRoot(): string {
  const up = join(__dirname, '..');
  return existsSync(join(up, 'binding.gyp')) ? up : join(up, '..');
}

/** What fixes a missing or unloadable addon, in every message that reports one. */
export const ADDON_FIX =
  'run `npm rebuild shmbus` in the project that depends on shmbus (it uses the prebuilt binary, or builds the addon from source: python3, make and a C++17 compiler), or `npm install` in a checkout of shmbus';

/**
 * Load the addon the way node-gyp-build does: build/Release/shmbus.node (a
 * source build: `npm install` in a checkout, or the fallback when no prebuild
 * matched), else the matching prebuilds/<platform>-<arch>/ binary shipped in
 * the package (`npm run prebuild`). `SHMBUS_PREBUILD=<dir>` makes it look in
 * <dir> instead of the package root (node-gyp-build's own override).
 *
 * Throws a BusError `ERR_SHMBUS_ADDON_MISSING` naming what was looked for and
 * the command that fixes it, when there is no binary for this platform (e.g.
 * installed with `--ignore-scripts` where no prebuild matches) or the one found
 * cannot be loaded; the original error is the `cause`.
 */
export function loadAddon(root: string = packageRoot()): NativeBinding {
  const loader = require('node-gyp-build') as NodeGypBuild;
  const where = `${process.platform}-${process.arch}, Node ${process.versions.node}`;
  let file: string;
  try {
    file = loader.resolve(root);
  } catch (err) {
    const dir = process.env.SHMBUS_PREBUILD || root;
    throw new BusError(
      'ERR_SHMBUS_ADDON_MISSING',
      `shmbus: the native addon is missing for ${where} (looked for ${join(dir, 'build', 'Release', 'shmbus.node')} and a matching binary in ${join(dir, 'prebuilds')}); to fix it, ${ADDON_FIX}`,
      { cause: err },
    );
  }
  try {
    return require(file) as NativeBinding;
  } catch (err) {
    throw new BusError('ERR_SHMBUS_ADDON_MISSING', `shmbus: the native addon ${file} cannot be loaded on ${where}: ${(err as Error).message}; to fix it, ${ADDON_FIX}`, { cause: err });
  }
}

const binding = loadAddon();

export default binding;
