/**
 * The cluster config file of the transit relay:
 * `transit-server --config cluster.json --host <name>`.
 *
 * Every relay of a cluster reads the same file; `--host` says which entry of
 * `hosts` it is. The file is JSON (no comments); relative paths in it are
 * resolved against the folder that holds the file. `null` never means "absent":
 * leave a field out to get its default.
 *
 * ```
 * {
 *   "secret": { "file": "./cluster.secret" },  required; exactly one of
 *                                              "file" (path; the file must be private
 *                                              to its owner, mode & 0o077 == 0; one
 *                                              trailing newline is dropped) or
 *   "secret": { "env": "SHMBUS_CLUSTER_SECRET" },   "env" (an environment variable name);
 *                                              at least MIN_SECRET_LENGTH (16) bytes
 *   "tls": { "key": "./tls/{host}.key",        optional; if present, all three paths ("{host}" is replaced
 *                                              by the host the relay runs as: one shared config, per-host files),
 *            "cert": "./tls/{host}.crt",       each a readable, non-empty file
 *            "ca": "./ca.crt" },
 *   "limits": {                                optional; each field optional (LIMIT_RANGES)
 *     "poolSize": 2,                           TCP connections per peer host, 1..64
 *     "minLinks": 0,                           of those, kept open at all times (opened at start, reopened, never idle-closed), 0..64, at most poolSize
 *     "pendingFrames": 10000,                  frames held for missing or full targets, 1..10_000_000
 *     "pendingBytes": 67108864,                payload bytes held pending, 1 KiB..4 GiB
 *     "ttlMs": 30000,                          a held frame is reported undeliverable after this, 1..86_400_000
 *     "unknownGraceMs": 2000,                  a frame for an endpoint not registered now nor within this long is answered UNKNOWN_DESTINATION at once; else it waits this long for it, 1..86_400_000, at most ttlMs
 *     "connectTimeoutMs": 2000,                1..3_600_000
 *     "handshakeTimeoutMs": 2000,              1..3_600_000
 *     "idleTimeoutMs": 30000,                  idle pooled connections close after this, 1..3_600_000
 *     "backoffInitialMs": 50,                  1..3_600_000, at most backoffMaxMs
 *     "backoffMaxMs": 5000,                    1..3_600_000
 *     "batchFrames": 256,                      frames per DATA message, 1..65535
 *     "idleSpinUs": 200,                       after the outbound inbox was last busy, poll it for this long (µs) before parking on the doorbell, 0..1_000_000
 *     "maxMessageBytes": 16777216              64 KiB..256 MiB
 *   },
 *   "hosts": {                                 required; at least one; names match HOST_NAME_PATTERN
 *     "alpha": {
 *       "relay": "127.0.0.1:7001",             required; where the relay listens for peers:
 *                                              "ipv4:port", "[ipv6]:port" or "hostname:port",
 *                                              port 1..65535 (0 for this host only: any free
 *                                              port, reported in the start log and metrics); unique among hosts
 *       "namespace": "alpha",                  shmbus namespace (default "default")
 *       "dir": "/dev/shm",                     segment folder (default "/dev/shm");
 *                                              namespace + dir unique among hosts
 *       "metrics": "127.0.0.1:9101",           optional HTTP metrics address, port 0..65535; any address
 *                                              given (0.0.0.0 to be scraped from elsewhere: no auth)
 *       "doorbellPort": 0,                     UDP doorbell port on 127.0.0.1, 0..65535, 0 = ephemeral (default)
 *       "inboxSlotSize": 1088,                 the relay's own inbox: slot size (validateSlotSize)
 *       "inboxCapacity": 1024,                 slots per lane (validateCapacity)
 *       "inboxLanes": 64                       and lanes: one per local process sending to other hosts (validateLanes)
 *     },
 *     "beta": { ... }
 *   }
 * }
 * ```
 *
 * Unknown fields are refused at every level (a typo must not silently fall
 * back to a default). Defaults are fixed: unlike `resolveBusOptions` (options.ts),
 * nothing is taken from `SHMBUS_NAMESPACE` / `SHMBUS_DIR`, so every relay that
 * reads the file sees the same cluster.
 *
 * Host ids: 1 + the index of the host's name in the list of all names sorted
 * by UTF-16 code unit (names are ASCII, so byte order; not locale order). Every
 * relay sharing the file agrees on them; 0 is left to mean "local".
 *
 * Every failure is a {@link ConfigError} (`ERR_SHMBUS_INVALID_CONFIG`) whose
 * `field` is the JSON path at fault and whose message names that path, what was
 * expected and what was received. The secret's bytes never appear in a
 * message, and neither does anything written inline under `secret`.
 */
import { dirname, resolve } from 'node:path';
import { inspect } from 'node:util';
import { BusError } from '../src/internal';
import { DEFAULT_DIR, DEFAULT_NAMESPACE, validateCapacity, validateDir, validateDurationMs, validateLanes, validateNamespace, validateSlotSize } from '../src/internal';
import { DEFAULT_RELAY_LANES } from '../src/internal';
import { ConfigError, FrozenMap, byCodeUnit, fail, object, onlyFields, orDefault, pathOf, show, validateInteger, viaOption } from './config-fields';
import { MAX_PORT, isLoopbackHost, trimDir, validateMetricsAddress, validateRelayAddress, type Address } from './config-fields';
import { readConfigJson, readSecret, readTls, secretShape, tlsShape, type ConfigEnv, type SecretSource, type TlsMaterial } from './config-files';

export { ConfigError, MAX_PORT, validateMetricsAddress, validateRelayAddress, type Address } from './config-fields';
export { MIN_SECRET_LENGTH, type ConfigEnv, type TlsMaterial } from './config-files';

/** Host names: the keys of `hosts`, and the `--host` argument. */
export const HOST_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** Most hosts a cluster may have: host ids 1..65535 fit the frame header's u16 source-host field. */
export const MAX_HOSTS = 65535;
/** Default slot size of the relay's own inbox (1 KiB of payload plus header room). */
export const DEFAULT_RELAY_INBOX_SLOT_SIZE = 1088;
/** Default slots per lane of the relay's own inbox. */
export const DEFAULT_RELAY_INBOX_CAPACITY = 1024;
/** Default UDP doorbell port: 0, an ephemeral port. */
export const DEFAULT_DOORBELL_PORT = 0;

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;

/** Relay limits, every field defaulted (see {@link LIMIT_RANGES}). */
export interface Limits {
  /** TCP connections per peer host. */
  readonly poolSize: number;
  /** Of those, how many are kept open at all times: opened at start, reopened when they close, never closed for idleness (1: the full mesh stays up without traffic). At most poolSize. */
  readonly minLinks: number;
  /** Frames the relay holds for targets that are missing or full. */
  readonly pendingFrames: number;
  /** Payload bytes held pending (bounds memory). */
  readonly pendingBytes: number;
  /** After this long a held frame is reported undeliverable (ms). */
  readonly ttlMs: number;
  /** A frame for an endpoint that is not registered waits this long for it to appear, then is reported UNKNOWN_DESTINATION (ms); at most ttlMs. */
  readonly unknownGraceMs: number;
  /** TCP connect timeout (ms). */
  readonly connectTimeoutMs: number;
  /** Relay handshake timeout (ms). */
  readonly handshakeTimeoutMs: number;
  /** Idle pooled connections are closed after this much inactivity (ms). */
  readonly idleTimeoutMs: number;
  /** First reconnect delay (ms); at most `backoffMaxMs`. */
  readonly backoffInitialMs: number;
  /** Longest reconnect delay (ms). */
  readonly backoffMaxMs: number;
  /** Frames per DATA message. */
  readonly batchFrames: number;
  /** After activity, the outbound pump polls for this long (µs) before it parks (Aeron's BackoffIdleStrategy: spin, then park). 0 parks at once. */
  readonly idleSpinUs: number;
  /** A connection holding unacked frames that receives no ACK for this long is closed and its frames resent (ms); more than ttlMs. */
  readonly ackTimeoutMs: number;
  /** Largest relay message (bytes). */
  readonly maxMessageBytes: number;
}

/** How one limit is checked: an integer count, or a duration in ms (validateDurationMs). */
export interface LimitRange {
  readonly kind: 'integer' | 'durationMs';
  readonly min: number;
  readonly max: number;
  readonly default: number;
}

/** Range and default of every field of `limits`. */
export const LIMIT_RANGES: Readonly<Record<keyof Limits, LimitRange>> = Object.freeze({
  poolSize: Object.freeze({ kind: 'integer', min: 1, max: 64, default: 2 }),
  minLinks: Object.freeze({ kind: 'integer', min: 0, max: 64, default: 0 }),
  pendingFrames: Object.freeze({ kind: 'integer', min: 1, max: 10_000_000, default: 10_000 }),
  pendingBytes: Object.freeze({ kind: 'integer', min: KIB, max: 4 * GIB, default: 64 * MIB }),
  ttlMs: Object.freeze({ kind: 'durationMs', min: 1, max: 86_400_000, default: 30_000 }),
  unknownGraceMs: Object.freeze({ kind: 'durationMs', min: 1, max: 86_400_000, default: 2000 }),
  connectTimeoutMs: Object.freeze({ kind: 'durationMs', min: 1, max: 3_600_000, default: 2000 }),
  handshakeTimeoutMs: Object.freeze({ kind: 'durationMs', min: 1, max: 3_600_000, default: 2000 }),
  idleTimeoutMs: Object.freeze({ kind: 'durationMs', min: 1, max: 3_600_000, default: 30_000 }),
  backoffInitialMs: Object.freeze({ kind: 'durationMs', min: 1, max: 3_600_000, default: 50 }),
  backoffMaxMs: Object.freeze({ kind: 'durationMs', min: 1, max: 3_600_000, default: 5000 }),
  batchFrames: Object.freeze({ kind: 'integer', min: 1, max: 65535, default: 256 }),
  idleSpinUs: Object.freeze({ kind: 'integer', min: 0, max: 1_000_000, default: 200 }),
  ackTimeoutMs: Object.freeze({ kind: 'durationMs', min: 2, max: 172_800_000, default: 40_000 }),
  maxMessageBytes: Object.freeze({ kind: 'integer', min: 64 * KIB, max: 256 * MIB, default: 16 * MIB }),
} satisfies Record<keyof Limits, LimitRange>);

/** Every limit at its default. */
export const DEFAULT_LIMITS: Limits = Object.freeze(
  Object.fromEntries(Object.entries(LIMIT_RANGES).map(([key, range]) => [key, range.default])) as unknown as Limits,
);

/** One entry of `hosts`, fully defaulted. */
export interface HostConfig {
  /** The key in `hosts`. */
  readonly name: string;
  /** 1 + index of `name` among the sorted host names; the same on every relay. */
  readonly id: number;
  /** Where this host's relay listens for peers. */
  readonly relay: Address;
  readonly namespace: string;
  /** Absolute, normalised, without a trailing slash. */
  readonly dir: string;
  /** HTTP metrics address, if configured (port 0 = ephemeral; any address given explicitly). */
  readonly metrics: Address | undefined;
  /** UDP doorbell port on 127.0.0.1 (0 = ephemeral). */
  readonly doorbellPort: number;
  readonly inboxSlotSize: number;
  /** Slots per lane of the relay's inbox. */
  readonly inboxCapacity: number;
  /** Lanes of the relay's inbox. */
  readonly inboxLanes: number;
}

/**
 * A validated cluster config. Deeply frozen, except the bytes of the Buffers
 * (a non-empty Buffer cannot be frozen). `JSON.stringify` and `util.inspect`
 * show a summary with the secret and the TLS key redacted.
 */
export interface ClusterConfig {
  /** Absolute path of the config file; `undefined` when built by {@link validateConfig}. */
  readonly path: string | undefined;
  /** The host named by `--host`. */
  readonly self: HostConfig;
  /** Every host, `self` included, in id order. `set`, `delete` and `clear` throw. */
  readonly hosts: ReadonlyMap<string, HostConfig>;
  /** Every host but `self`, sorted by name (so in id order). */
  readonly peers: readonly HostConfig[];
  /** The id of the named host; throws ERR_SHMBUS_INVALID_OPTION for a name not in `hosts`. */
  hostId(name: string): number;
  /** The cluster secret. Never log it. */
  readonly secret: Buffer;
  readonly tls: TlsMaterial | undefined;
  readonly limits: Limits;
}

/**
 * Format any error from {@link loadConfig} for a one-line log:
 * `ERR_SHMBUS_INVALID_CONFIG: /etc/shmbus/cluster.json: hosts.beta.relay must be ...`.
 * Never throws.
 */
export function describeConfigError(err: unknown): string {
  let text: string;
  try {
    if (err instanceof BusError) text = `${err.code}: ${err.message}`;
    else if (err instanceof Error) text = `${err.name}: ${err.message}`;
    else text = String(err);
  } catch {
    text = 'unprintable error';
  }
  return text.replace(/\s*[\r\n]+\s*/g, ' ').trim();
}

/**
 * Read, parse and validate the cluster config file at `path` for the host
 * `hostName`, then read the secret and the TLS files. Relative paths in the
 * file are resolved against its folder. Throws {@link ConfigError}, whose
 * message starts with the file's absolute path.
 */
export function loadConfig(path: string, hostName: string, env: ConfigEnv = process.env): ClusterConfig {
  if (typeof path !== 'string' || path === '') throw fail('', 'the config file path', 'a non-empty string', path);
  const file = resolve(path);
  const raw = readConfigJson(file);
  try {
    return build(raw, dirname(file), hostName, env, file);
  } catch (err) {
    throw err instanceof ConfigError ? new ConfigError(err.field, `${file}: ${err.message}`, { cause: err.cause, file }) : err;
  }
}

/**
 * Everything {@link loadConfig} does except reading the config file: validate
 * the parsed JSON `raw`, resolve relative paths against `baseDir`, read the
 * secret and the TLS files. The result's `path` is `undefined`.
 */
export function validateConfig(raw: unknown, baseDir: string, hostName: string, env: ConfigEnv = process.env): ClusterConfig {
  if (typeof baseDir !== 'string' || baseDir === '') throw fail('', 'baseDir', 'a non-empty folder path', baseDir);
  return build(raw, resolve(baseDir), hostName, env, undefined);
}

/** Validate a host name (a key of `hosts`, or `--host`). */
export function validateHostName(value: unknown, field: string): string {
  if (typeof value !== 'string' || !HOST_NAME_PATTERN.test(value)) {
    throw fail(field, `host name ${field}`, '1-64 characters of A-Z a-z 0-9 _ -', value);
  }
  return value;
}

// ---------------------------------------------------------------------------
// Building the config

const TOP_FIELDS = ['secret', 'tls', 'limits', 'hosts'] as const;
const HOST_FIELDS = ['relay', 'namespace', 'dir', 'metrics', 'doorbellPort', 'inboxSlotSize', 'inboxCapacity', 'inboxLanes'] as const;

function build(raw: unknown, baseDir: string, hostName: string, env: ConfigEnv, path: string | undefined): ClusterConfig {
  const top = object(raw, '', 'the config');
  onlyFields(top, '', TOP_FIELDS);
  // Shape first, then the files: a typo is reported before any I/O.
  const secretSource = secretShape(top.secret, baseDir);
  const tlsFiles = top.tls === undefined ? undefined : tlsShape(top.tls, baseDir, typeof hostName === 'string' ? hostName : '');
  const limits = limitsOf(top.limits);
  const hosts = hostsOf(top.hosts, hostName);
  const self = hosts.get(typeof hostName === 'string' ? hostName : '');
  if (self === undefined) {
    const names = [...hosts.keys()];
    const shown = names.length > 50 ? `${names.slice(0, 50).join(', ')} and ${names.length - 50} more` : names.join(', ');
    throw fail(pathOf('hosts', String(hostName)), '--host', `one of the hosts in the config (${shown})`, hostName);
  }
  const secret = readSecret(secretSource, env);
  const tls = tlsFiles === undefined ? undefined : readTls(tlsFiles);
  const peers = Object.freeze([...hosts.values()].filter((h) => h !== self));
  const hostMap = new FrozenMap(hosts);
  const config: ClusterConfig = {
    path,
    self,
    hosts: hostMap,
    peers,
    hostId(name: string): number {
      const host = hostMap.get(name);
      if (host === undefined) {
        throw new BusError('ERR_SHMBUS_INVALID_OPTION', `option "name" must be one of the hosts in the config; received ${show(name)}`);
      }
      return host.id;
    },
    secret,
    tls,
    limits,
  };
  const summary = (): object => summarize(config, secretSource);
  Object.defineProperty(config, 'toJSON', { value: summary, enumerable: false });
  Object.defineProperty(config, inspect.custom, { value: summary, enumerable: false });
  return Object.freeze(config);
}

function limitsOf(value: unknown): Limits {
  const l = value === undefined ? {} : object(value, 'limits', 'limits');
  onlyFields(l, 'limits', Object.keys(LIMIT_RANGES));
  const limits = {} as Record<keyof Limits, number>;
  for (const [key, range] of Object.entries(LIMIT_RANGES) as Array<[keyof Limits, LimitRange]>) {
    const field = `limits.${key}`;
    const v = orDefault(l[key], range.default);
    limits[key] =
      range.kind === 'durationMs'
        ? viaOption((x, option) => validateDurationMs(x, option, range.min, range.max), v, field)
        : validateInteger(v, field, range.min, range.max);
  }
  // Every frame a live peer holds is acked by the TTL at the latest (delivered or expired), so an
  // ack timeout longer than the TTL only ever fires on a link that is really gone.
  if (limits.ackTimeoutMs <= limits.ttlMs) {
    throw fail('limits.ackTimeoutMs', 'limits.ackTimeoutMs', `more than limits.ttlMs (${limits.ttlMs}): a live peer may hold a frame unacked for the whole TTL`, limits.ackTimeoutMs);
  }
  if (l.unknownGraceMs === undefined && limits.unknownGraceMs > limits.ttlMs) {
    // A TTL shorter than the default grace: the grace follows it.
    limits.unknownGraceMs = limits.ttlMs;
  }
  if (limits.unknownGraceMs > limits.ttlMs) {
    throw fail('limits.unknownGraceMs', 'limits.unknownGraceMs', `at most limits.ttlMs (${limits.ttlMs})`, limits.unknownGraceMs);
  }
  if (limits.minLinks > limits.poolSize) {
    throw fail('limits.minLinks', 'limits.minLinks', `at most limits.poolSize (${limits.poolSize})`, limits.minLinks);
  }
  if (limits.backoffInitialMs > limits.backoffMaxMs) {
    throw fail('limits.backoffInitialMs', 'limits.backoffInitialMs', `at most limits.backoffMaxMs (${limits.backoffMaxMs})`, limits.backoffInitialMs);
  }
  return Object.freeze(limits);
}

function hostsOf(value: unknown, self: string): Map<string, HostConfig> {
  const h = object(value, 'hosts', 'hosts');
  const names = Object.keys(h).sort(byCodeUnit);
  if (names.length === 0) throw new ConfigError('hosts', 'hosts must be an object with at least one host; received an empty object');
  // Host ids travel in the u16 source-host field of a frame header (docs/LAYOUT.md); 0 means "this host".
  if (names.length > MAX_HOSTS) throw new ConfigError('hosts', `hosts must name at most ${MAX_HOSTS} hosts (ids are 16-bit); received ${names.length}`);
  const hosts = new Map<string, HostConfig>();
  const byRelay = new Map<string, string>();
  const byNamespace = new Map<string, string>();
  names.forEach((name, index) => {
    const field = pathOf('hosts', name);
    validateHostName(name, field);
    const host = hostOf(h[name], name, index + 1, field, name === self);
    const sameRelay = byRelay.get(host.relay.text);
    if (sameRelay !== undefined) {
      throw fail(`${field}.relay`, `${field}.relay`, `an address no other host uses (${pathOf('hosts', sameRelay)}.relay is the same)`, host.relay.text);
    }
    byRelay.set(host.relay.text, name);
    // Hosts on one machine (relays on loopback) must not share a namespace: the
    // two relays would share one directory. Hosts on different machines may.
    const place = `${host.namespace}\0${host.dir}`;
    const sameNamespace = isLoopbackHost(host.relay.host) ? byNamespace.get(place) : undefined;
    if (sameNamespace !== undefined) {
      throw new ConfigError(
        `${field}.namespace`,
        `${field}.namespace must differ from ${pathOf('hosts', sameNamespace)}.namespace when both use dir ${host.dir} (the two relays would share one shmbus namespace); received ${show(host.namespace)}`,
      );
    }
    if (isLoopbackHost(host.relay.host)) byNamespace.set(place, name);
    hosts.set(name, host);
  });
  return hosts;
}

function hostOf(value: unknown, name: string, id: number, field: string, own: boolean): HostConfig {
  const o = object(value, field, field);
  onlyFields(o, field, HOST_FIELDS);
  if (o.relay === undefined) throw fail(`${field}.relay`, `${field}.relay`, 'a "host:port" address', o.relay);
  return Object.freeze({
    name,
    id,
    relay: validateRelayAddress(o.relay, `${field}.relay`, own),
    namespace: viaOption(validateNamespace, orDefault(o.namespace, DEFAULT_NAMESPACE), `${field}.namespace`),
    dir: trimDir(viaOption(validateDir, orDefault(o.dir, DEFAULT_DIR), `${field}.dir`)),
    metrics: o.metrics === undefined ? undefined : validateMetricsAddress(o.metrics, `${field}.metrics`),
    doorbellPort: validateInteger(orDefault(o.doorbellPort, DEFAULT_DOORBELL_PORT), `${field}.doorbellPort`, 0, MAX_PORT),
    inboxSlotSize: viaOption(validateSlotSize, orDefault(o.inboxSlotSize, DEFAULT_RELAY_INBOX_SLOT_SIZE), `${field}.inboxSlotSize`),
    inboxCapacity: viaOption(validateCapacity, orDefault(o.inboxCapacity, DEFAULT_RELAY_INBOX_CAPACITY), `${field}.inboxCapacity`),
    inboxLanes: viaOption(validateLanes, orDefault(o.inboxLanes, DEFAULT_RELAY_LANES), `${field}.inboxLanes`),
  });
}

function summarize(config: ClusterConfig, secret: SecretSource): object {
  return {
    path: config.path,
    self: config.self.name,
    hosts: [...config.hosts.values()].map((h) => ({
      ...h,
      relay: h.relay.text,
      metrics: h.metrics?.text,
    })),
    secret: `${secret.kind === 'file' ? `file ${secret.path}` : `env ${secret.name}`} (${config.secret.length} bytes, redacted)`,
    tls: config.tls === undefined ? undefined : 'key, cert and ca loaded (redacted)',
    limits: config.limits,
  };
}
