/**
 * Observing and cleaning namespaces from outside: what `shmbus stat` and
 * `shmbus gc` do. Readers here are racy observers: counters are read without
 * stopping anyone, so a snapshot may be a few frames stale.
 */
import { existsSync, readdirSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { join } from 'node:path';
import { Directory, type EntryInfo } from './directory';
import { SystemError, isBusError } from './errors';
import {
  DOORBELL_UDP,
  ENTRY_FLAG_RELAY,
  FILE_PREFIX,
  RELAY_ENDPOINT_NAME,
  SEGMENT_KIND_INBOX,
  dedupFileName,
  inboxFileName,
} from './layout';
import { DEFAULT_LOCK_TIMEOUT_MS, DEFAULT_MODE, validateDir, validateNamespace } from './options';
import { readInboxCounters, type InboxCounters } from './frame';
import { InboxConsumer, type LaneSnapshot } from './inbox';
import { readLaneOwner, type LaneOwnerInfo } from './lane';
import { Segment, isProcessAlive, unlinkQuiet } from './segment';

export interface EndpointReport extends InboxCounters {
  readonly name: string;
  readonly index: number;
  readonly generation: number;
  readonly pid: number;
  readonly alive: boolean;
  readonly relay: boolean;
  readonly doorbell: string;
  readonly slotSize: number;
  /** Slots per lane. */
  readonly capacity: number;
  /** Lanes of the inbox. */
  readonly lanes: number;
  /** Each lane producers have taken so far: positions, depth, corrupt, and its owner (racy observer). */
  readonly lanesInUse: ReadonlyArray<LaneSnapshot & { readonly owner: LaneOwnerInfo }>;
  readonly depth: number;
  readonly parked: boolean;
  /** Loopback port of the endpoint's metrics (relays); 0 = none. */
  readonly metricsPort: number;
  /** Set when the inbox could not be read (missing, corrupt). */
  readonly error?: string;
}

export interface NamespaceReport {
  readonly namespace: string;
  readonly dir: string;
  readonly registrations: number;
  readonly takeovers: number;
  readonly endpoints: EndpointReport[];
}

function directoryOptions(dir: string, namespace: string) {
  return { dir, namespace, entryCount: 1, mode: DEFAULT_MODE, lockTimeoutMs: DEFAULT_LOCK_TIMEOUT_MS };
}

/** A Node fs error as a {@link SystemError} (ERR_SHMBUS_SYSTEM) naming the folder; other errors unchanged. */
function folderError(err: unknown, dir: string): unknown {
  const e = err as { code?: unknown; syscall?: unknown; message?: unknown };
  if (e === null || typeof e !== 'object' || typeof e.code !== 'string' || typeof e.syscall !== 'string') return err;
  const why: Record<string, string> = { ENOENT: 'does not exist', ENOTDIR: 'is not a folder', EACCES: 'cannot be read (permission denied)', EPERM: 'cannot be read (operation not permitted)' };
  return new SystemError(`folder ${dir} ${why[e.code] ?? 'cannot be read'} (${e.syscall} ${e.code})`, e.syscall, e.code, dir, err);
}

/**
 * Check that `dir` is an absolute path to an existing folder: throws
 * ERR_SHMBUS_INVALID_OPTION (not absolute) or ERR_SHMBUS_SYSTEM (missing, not
 * a folder, unreadable; `errno` says which) instead of Node's raw fs error.
 */
export function checkDir(dir: string): void {
  validateDir(dir);
  listFolder(dir);
}

/** The names in `dir`; fs errors as ERR_SHMBUS_SYSTEM. */
function listFolder(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (err) {
    throw folderError(err, dir);
  }
}

/** Namespaces that have a directory file in `dir`. */
export function listNamespaces(dir: string): string[] {
  validateDir(dir);
  const names: string[] = [];
  for (const file of listFolder(dir)) {
    const m = /^shmbus\.([A-Za-z0-9_-]{1,64})\.dir$/.exec(file);
    if (m) names.push(m[1]!);
  }
  return names.sort();
}

/** A snapshot of one namespace; null if it has no directory. */
export function inspectNamespace(dir: string, namespace: string): NamespaceReport | null {
  validateDir(dir);
  validateNamespace(namespace);
  const directory = Directory.attachExisting(directoryOptions(dir, namespace));
  if (directory === null) return null;
  try {
    const endpoints = directory.entries().map((entry) => inspectEndpoint(dir, namespace, entry));
    return { namespace, dir, ...directory.counters, endpoints };
  } finally {
    directory.close();
  }
}

function inspectEndpoint(dir: string, namespace: string, entry: EntryInfo): EndpointReport {
  const base = {
    name: entry.name,
    index: entry.index,
    generation: entry.generation,
    pid: entry.ownerPid,
    alive: isProcessAlive(entry.ownerPid, entry.ownerStartTime),
    relay: (entry.flags & ENTRY_FLAG_RELAY) !== 0,
    doorbell: entry.doorbellKind === DOORBELL_UDP ? `udp:${entry.doorbellPort}` : 'futex',
    slotSize: entry.slotSize,
    capacity: entry.capacity,
    metricsPort: entry.metricsPort,
  };
  let segment: Segment;
  try {
    segment = Segment.attach(join(dir, inboxFileName(namespace, entry.name)), SEGMENT_KIND_INBOX, 0);
  } catch (err) {
    const zero = { depth: 0, lanes: 0, lanesInUse: [], received: 0, sent: 0, sendRefused: 0, refusedFull: 0, corrupt: 0, corruptLanes: 0, discarded: 0, parks: 0, wakeups: 0, laneTakes: 0, laneReuses: 0, laneRefused: 0, parked: false };
    return { ...base, ...zero, error: (err as Error).message };
  }
  try {
    const inbox = new InboxConsumer(segment.buffer);
    const lanesInUse = inbox.lanes().map((lane) => ({ ...lane, owner: readLaneOwner(segment.i32, segment.u32, lane.lane) }));
    return { ...base, depth: inbox.depth(), lanes: inbox.laneCount, lanesInUse, ...readInboxCounters(segment.u32), parked: inbox.isParked() };
  } finally {
    segment.unmap();
  }
}

/** A relay's own report (its /metrics.json), fetched from the loopback metrics port it registered. */
export interface RelayReport {
  readonly global: Readonly<Record<string, number>>;
  readonly peers: Readonly<Record<string, Readonly<Record<string, number>>>>;
  /** Each peer's state (`up`, `connecting`, `down`, `idle`, `unknown`: docs/OPERATIONS.md); absent from relays older than this field. */
  readonly peerStates?: Readonly<Record<string, string>>;
  readonly connections: ReadonlyArray<Readonly<Record<string, string | number>>>;
}

/** Fetch a relay's counters; null if it does not answer within `timeoutMs`. */
export function fetchRelayReport(port: number, timeoutMs = 1000): Promise<RelayReport | null> {
  return new Promise((resolve) => {
    const req = httpGet({ host: '127.0.0.1', port, path: '/metrics.json', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        try {
          resolve(JSON.parse(body) as RelayReport);
        } catch {
          resolve(null);
        }
      });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
  });
}

export interface GcReport {
  /** Endpoints whose owner was dead, freed from their directory. */
  readonly reaped: Array<{ namespace: string; name: string; pid: number; unread: number }>;
  /** Files removed: inboxes of reaped endpoints, orphan inboxes, empty or broken directories. */
  readonly removed: string[];
  /** Files left alone because they belong to a live endpoint or could not be judged. */
  readonly kept: string[];
}

/**
 * Remove what dead processes left behind in `dir` (one namespace, or all):
 * entries whose owner died (their unread frames are reported, then discarded),
 * inbox files no live entry owns, directories with no live entry, and shmbus
 * files that are not valid segments.
 */
export function gc(dir: string, namespace?: string): GcReport {
  validateDir(dir);
  if (namespace !== undefined) validateNamespace(namespace);
  const reaped: GcReport['reaped'] = [];
  const removed: string[] = [];
  const kept: string[] = [];
  // Inbox files per namespace, listed before the directory is looked at: an inbox
  // is created (under the lock) only while its namespace's directory exists.
  const inboxes = new Map<string, string[]>();
  for (const file of listFolder(dir)) {
    const m = /^shmbus\.([A-Za-z0-9_-]{1,64})\.(.+)\.inbox$/.exec(file);
    if (!m || (namespace !== undefined && m[1] !== namespace)) continue;
    const list = inboxes.get(m[1]!) ?? [];
    list.push(file);
    inboxes.set(m[1]!, list);
  }
  const namespaces = new Set(namespace !== undefined ? [namespace] : [...listNamespaces(dir), ...inboxes.keys()]);
  const remove = (path: string) => {
    unlinkQuiet(path);
    removed.push(path);
  };
  for (const ns of namespaces) {
    const files = inboxes.get(ns) ?? [];
    let directory: Directory | null;
    try {
      directory = Directory.attachExisting(directoryOptions(dir, ns));
    } catch (err) {
      if (!isBusError(err, 'ERR_SHMBUS_NOT_A_SEGMENT') && !isBusError(err, 'ERR_SHMBUS_CORRUPT_SEGMENT') && !isBusError(err, 'ERR_SHMBUS_LAYOUT_MISMATCH')) throw err;
      remove(join(dir, `${FILE_PREFIX}${ns}.dir`));
      directory = null;
    }
    if (directory === null) {
      for (const file of files) remove(join(dir, file));
      if (existsSync(join(dir, dedupFileName(ns)))) remove(join(dir, dedupFileName(ns)));
      continue;
    }
    try {
      directory.reapDead((dead) => {
        const path = join(dir, inboxFileName(ns, dead.name));
        let unread = 0;
        try {
          const segment = Segment.attach(path, SEGMENT_KIND_INBOX, 0);
          unread = new InboxConsumer(segment.buffer).depth();
          segment.unmap();
        } catch {
          // A broken inbox of a dead owner is removed all the same.
        }
        remove(path);
        reaped.push({ namespace: ns, name: dead.name, pid: dead.ownerPid, unread });
      });
      directory.withLock(() => {
        const relayAlive = directory.entries().some((e) => e.name === RELAY_ENDPOINT_NAME);
        const dedup = join(dir, dedupFileName(ns));
        if (!relayAlive && existsSync(dedup)) remove(dedup);
        const owned = new Set(directory.entries().map((e) => inboxFileName(ns, e.name)));
        for (const file of files) {
          const path = join(dir, file);
          if (owned.has(file)) kept.push(path);
          else if (!removed.includes(path)) remove(path);
        }
      });
      if (directory.removed) removed.push(directory.path);
      else kept.push(directory.path);
    } finally {
      directory.close();
    }
  }
  return { reaped, removed, kept };
}
