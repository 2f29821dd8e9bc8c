/**
 * The field validators of the cluster config (config.ts) and the error they
 * throw: integers, `host:port` addresses, folder paths, options.ts validators
 * run under a JSON path, unknown-field refusal, and the wording of "must be
 * ...; received ..." messages (which never echo more than a truncated string).
 */
import { isIPv4, isIPv6 } from 'node:net';
import { normalize } from 'node:path';
import { BusError } from '../src/internal';

/** The highest TCP/UDP port number. */
export const MAX_PORT = 65535;

/** A parsed `host:port`. */
export interface Address {
  /** Host as given to `net.connect` / `server.listen`: IPv4, IPv6 (no brackets, canonical form) or a lower-cased host name. */
  readonly host: string;
  readonly port: number;
  /** Normalised `host:port` (`[host]:port` for IPv6), for logs and comparison. */
  readonly text: string;
}

/** The cluster config is missing, unreadable or invalid. */
export class ConfigError extends BusError {
  /** JSON path at fault, e.g. `hosts.beta.relay`; `''` for the whole file. */
  readonly field: string;
  /** The config file, when the error comes from `loadConfig` (config.ts). */
  readonly file: string | undefined;

  constructor(field: string, message: string, options?: { cause?: unknown; file?: string }) {
    super('ERR_SHMBUS_INVALID_CONFIG', message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.field = field;
    this.file = options?.file;
  }
}

/**
 * Validate a relay address: `ipv4:port`, `[ipv6]:port` or `hostname:port`,
 * port 1..65535 — or 0 for the relay's own listen address (`own`): the kernel
 * picks a free port, reported in the `start` log line and the metrics.
 */
export function validateRelayAddress(value: unknown, field: string, own = false): Address {
  return parseAddress(value, field, own ? 0 : 1);
}

/**
 * Validate a metrics address: `host:port` (IPv4, [IPv6] or a host name), port 0..65535.
 * Any address given explicitly is accepted, 0.0.0.0 and [::] included (the metrics port
 * has no authentication: docs/OPERATIONS.md, "Metrics"); the examples use loopback.
 */
export function validateMetricsAddress(value: unknown, field: string): Address {
  return parseAddress(value, field, 0);
}

/** Relay addresses that can only be this machine. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** A folder path normalised, without a trailing slash. */
export function trimDir(dir: string): string {
  const n = normalize(dir);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}

/** Only a missing field takes the default: `null` is a value, and refused. */
export function orDefault(value: unknown, fallback: unknown): unknown {
  return value === undefined ? fallback : value;
}

export function validateInteger(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw fail(field, field, `an integer in [${min}, ${max}]`, value);
  }
  return value;
}

function parseAddress(value: unknown, field: string, minPort: 0 | 1): Address {
  const expected = `a "host:port" address (IPv4, [IPv6] or a host name; port in [${minPort}, ${MAX_PORT}])`;
  if (typeof value !== 'string') throw fail(field, field, expected, value);
  let host: string;
  let portText: string;
  const bracketed = /^\[([^\]]+)\]:(\d{1,5})$/.exec(value);
  const plain = /^([^:[\]]+):(\d{1,5})$/.exec(value);
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2]!;
    if (!isIPv6(host)) throw fail(field, field, expected, value, `${JSON.stringify(host)} is not an IPv6 address`);
    host = canonicalIPv6(host);
  } else if (plain) {
    host = plain[1]!;
    portText = plain[2]!;
    if (!isIPv4(host)) {
      if (!validHostName(host)) throw fail(field, field, expected, value, `${JSON.stringify(host)} is neither an IPv4 address nor a host name`);
      host = host.toLowerCase();
    }
  } else {
    const bareIPv6 = isIPv6(value) || (value.split(':').length > 2 && !value.startsWith('['));
    throw fail(field, field, expected, value, bareIPv6 ? 'an IPv6 address goes in brackets: [::1]:7001' : undefined);
  }
  const port = Number(portText);
  if (port < minPort || port > MAX_PORT) throw fail(field, field, expected, value, `port ${port} is out of range`);
  return Object.freeze({ host, port, text: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}` });
}

function canonicalIPv6(host: string): string {
  try {
    return new URL(`http://[${host}]/`).hostname.slice(1, -1);
  } catch {
    return host.toLowerCase(); // a zone id (fe80::1%eth0), which URL refuses
  }
}

/** RFC 1123 host name; the last label is not all digits (so `1.2.3.400` is not a host name). */
function validHostName(host: string): boolean {
  if (host.length > 253) return false;
  const labels = host.split('.');
  if (!labels.every((l) => /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l))) return false;
  return !/^\d+$/.test(labels[labels.length - 1]!);
}

/** Run an options.ts validator with the JSON path as the option name, as a ConfigError. */
export function viaOption<T>(validate: (value: unknown, option: string) => T, value: unknown, field: string): T {
  try {
    return validate(value, field);
  } catch (err) {
    if (err instanceof BusError && err.code === 'ERR_SHMBUS_INVALID_OPTION') {
      throw new ConfigError(field, err.message.replace(/^option "([^"]*)"/, '$1'), { cause: err });
    }
    throw err;
  }
}

export function object(value: unknown, field: string, label: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw fail(field, label, 'an object', value);
  return value as Record<string, unknown>;
}

/** Refuse fields not in `known`, naming every one (and the likely intended name). */
export function onlyFields(o: Record<string, unknown>, field: string, known: readonly string[]): void {
  const unknown = Object.keys(o).filter((k) => !known.includes(k));
  if (unknown.length === 0) return;
  const named = unknown.map((k) => {
    const guess = known.find((c) => c.toLowerCase() === k.toLowerCase()) ?? known.find((c) => editDistance(c, k) <= 2);
    return `${JSON.stringify(truncate(k))}${guess === undefined ? '' : ` (did you mean "${guess}"?)`}`;
  });
  const where = field === '' ? 'the config' : field;
  throw new ConfigError(
    pathOf(field, unknown[0]!),
    `${where} must have only the fields ${known.join(', ')}; received unknown field${unknown.length > 1 ? 's' : ''} ${named.join(', ')}`,
  );
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length]!;
}

/** `hosts` + `beta` → `hosts.beta`; keys that are not plain names → `hosts["a b"]`. */
export function pathOf(parent: string, key: string): string {
  if (/^[A-Za-z0-9_-]+$/.test(key)) return parent === '' ? key : `${parent}.${key}`;
  return `${parent}[${JSON.stringify(truncate(key))}]`;
}

export function fail(field: string, label: string, expected: string, received: unknown, note?: string): ConfigError {
  return new ConfigError(field, `${label} must be ${expected}; received ${show(received)}${note === undefined ? '' : ` (${note})`}`);
}

export function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(truncate(value));
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (value === undefined) return 'nothing (the field is missing)';
  return kindOf(value);
}

export function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (value === undefined) return 'nothing';
  return `a ${typeof value}`;
}

function truncate(text: string, max = 80): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

export function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function errnoOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : String((err as Error | null)?.message ?? err);
}

/** A Map whose mutators throw: `Object.freeze` alone does not stop `Map.prototype.set`. */
export class FrozenMap<K, V> extends Map<K, V> {
  constructor(entries: Iterable<readonly [K, V]>) {
    super();
    for (const [k, v] of entries) super.set(k, v);
    Object.freeze(this);
  }

  override set(_key: K, _value: V): this {
    throw new TypeError('the hosts of a cluster config are read-only');
  }

  override delete(_key: K): boolean {
    throw new TypeError('the hosts of a cluster config are read-only');
  }

  override clear(): void {
    throw new TypeError('the hosts of a cluster config are read-only');
  }
}
