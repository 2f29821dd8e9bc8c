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
 *   "tls": { "key": "./alpha.key",             optional; if present, all three paths,
 *            "cert": "./alpha.crt",            each a readable, non-empty file
 *            "ca": "./ca.crt" },
 *   "limits": {                                optional; each field optional (LIMIT_RANGES)
 *     "poolSize": 2,                           TCP connections per peer host, 1..64
 *     "pendingFrames": 10000,                  frames held for missing or full targets, 1..10_000_000
 *     "pendingBytes": 67108864,                payload bytes held pending, 1 KiB..4 GiB
 *     "ttlMs": 30000,                          a held frame is reported undeliverable after this, 1..86_400_000
 *     "unknownTargetMs": 1000,                 a frame for an endpoint not registered waits this long for it, 1..86_400_000, at most ttlMs
 *     "connectTimeoutMs": 2000,                1..3_600_000
 *     "handshakeTimeoutMs": 2000,              1..3_600_000
 *     "idleTimeoutMs": 30000,                  idle pooled connections close after this, 1..3_600_000
 *     "backoffInitialMs": 50,                  1..3_600_000, at most backoffMaxMs
 *     "backoffMaxMs": 5000,                    1..3_600_000
 *     "batchFrames": 256,                      frames per DATA message, 1..65535
 *     "maxMessageBytes": 16777216              64 KiB..256 MiB
 *   },
 *   "hosts": {                                 required; at least one; names match HOST_NAME_PATTERN
 *     "alpha": {
 *       "relay": "127.0.0.1:7001",             required; where the relay listens for peers:
 *                                              "ipv4:port", "[ipv6]:port" or "hostname:port",
 *                                              port 1..65535; unique among hosts
 *       "namespace": "alpha",                  shmbus namespace (default "default")
 *       "dir": "/dev/shm",                     segment folder (default "/dev/shm");
 *                                              namespace + dir unique among hosts
 *       "metrics": "127.0.0.1:9101",           optional HTTP metrics address; loopback only
 *                                              (127.0.0.0/8, [::1], localhost); port 0..65535
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
import { closeSync, constants as fsConstants, fstatSync, openSync, readFileSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { dirname, normalize, resolve } from 'node:path';
import { inspect } from 'node:util';
import { BusError } from './errors';
import {
  DEFAULT_DIR,
  DEFAULT_NAMESPACE,
  validateCapacity,
  validateDir,
  validateDurationMs,
  validateLanes,
  validateNamespace,
  validateSlotSize,
} from './options';
import { DEFAULT_RELAY_LANES } from './layout';

/** Host names: the keys of `hosts`, and the `--host` argument. */
export const HOST_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** The shortest cluster secret accepted, in bytes. */
export const MIN_SECRET_LENGTH = 16;
/** Most hosts a cluster may have: host ids 1..65535 fit the frame header's u16 source-host field. */
export const MAX_HOSTS = 65535;
/** Default slot size of the relay's own inbox (1 KiB of payload plus header room). */
export const DEFAULT_RELAY_INBOX_SLOT_SIZE = 1088;
/** Default slots per lane of the relay's own inbox. */
export const DEFAULT_RELAY_INBOX_CAPACITY = 1024;
/** Default UDP doorbell port: 0, an ephemeral port. */
export const DEFAULT_DOORBELL_PORT = 0;
/** The highest TCP/UDP port number. */
export const MAX_PORT = 65535;

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;

/** Relay limits, every field defaulted (see {@link LIMIT_RANGES}). */
export interface Limits {
  /** TCP connections per peer host. */
  readonly poolSize: number;
  /** Frames the relay holds for targets that are missing or full. */
  readonly pendingFrames: number;
  /** Payload bytes held pending (bounds memory). */
  readonly pendingBytes: number;
  /** After this long a held frame is reported undeliverable (ms). */
  readonly ttlMs: number;
  /** A frame for an endpoint that is not registered waits this long for it to appear, then is reported UNKNOWN_DESTINATION (ms); at most ttlMs. */
  readonly unknownTargetMs: number;
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
  pendingFrames: Object.freeze({ kind: 'integer', min: 1, max: 10_000_000, default: 10_000 }),
  pendingBytes: Object.freeze({ kind: 'integer', min: KIB, max: 4 * GIB, default: 64 * MIB }),
  ttlMs: Object.freeze({ kind: 'durationMs', min: 1, max: 86_400_000, default: 30_000 }),
  unknownTargetMs: Object.freeze({ kind: 'durationMs', min: 1, max: 86_400_000, default: 1000 }),
  connectTimeoutMs: Object.freeze({ kind: 'durationMs', min: 1, max: 3_600_000, default: 2000 }),
  handshakeTimeoutMs: Object.freeze({ kind: 'durationMs', min: 1, max: 3_600_000, default: 2000 }),
  idleTimeoutMs: Object.freeze({ kind: 'durationMs', min: 1, max: 3_600_000, default: 30_000 }),
  backoffInitialMs: Object.freeze({ kind: 'durationMs', min: 1, max: 3_600_000, default: 50 }),
  backoffMaxMs: Object.freeze({ kind: 'durationMs', min: 1, max: 3_600_000, default: 5000 }),
  batchFrames: Object.freeze({ kind: 'integer', min: 1, max: 65535, default: 256 }),
  ackTimeoutMs: Object.freeze({ kind: 'durationMs', min: 2, max: 172_800_000, default: 40_000 }),
  maxMessageBytes: Object.freeze({ kind: 'integer', min: 64 * KIB, max: 256 * MIB, default: 16 * MIB }),
} satisfies Record<keyof Limits, LimitRange>);

/** Every limit at its default. */
export const DEFAULT_LIMITS: Limits = Object.freeze(
  Object.fromEntries(Object.entries(LIMIT_RANGES).map(([key, range]) => [key, range.default])) as unknown as Limits,
);

/** A parsed `host:port`. */
export interface Address {
  /** Host as given to `net.connect` / `server.listen`: IPv4, IPv6 (no brackets, canonical form) or a lower-cased host name. */
  readonly host: string;
  readonly port: number;
  /** Normalised `host:port` (`[host]:port` for IPv6), for logs and comparison. */
  readonly text: string;
}

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
  /** Loopback HTTP metrics address, if configured (port 0 = ephemeral). */
  readonly metrics: Address | undefined;
  /** UDP doorbell port on 127.0.0.1 (0 = ephemeral). */
  readonly doorbellPort: number;
  readonly inboxSlotSize: number;
  /** Slots per lane of the relay's inbox. */
  readonly inboxCapacity: number;
  /** Lanes of the relay's inbox. */
  readonly inboxLanes: number;
}

/** TLS material, read from the files named in `tls`. */
export interface TlsMaterial {
  readonly key: Buffer;
  readonly cert: Buffer;
  readonly ca: Buffer;
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

/** Environment to read `secret.env` from. */
export type ConfigEnv = Readonly<Record<string, string | undefined>>;

/** The cluster config is missing, unreadable or invalid. */
export class ConfigError extends BusError {
  /** JSON path at fault, e.g. `hosts.beta.relay`; `''` for the whole file. */
  readonly field: string;
  /** The config file, when the error comes from {@link loadConfig}. */
  readonly file: string | undefined;

  constructor(field: string, message: string, options?: { cause?: unknown; file?: string }) {
    super('ERR_SHMBUS_INVALID_CONFIG', message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.field = field;
    this.file = options?.file;
  }
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
  const inFile = (err: ConfigError): ConfigError =>
    new ConfigError(err.field, `${file}: ${err.message}`, { cause: err.cause, file });
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('', `${file}: cannot read the config file: ${errnoOf(err)}`, { cause: err, file });
  }
  const bom = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  let raw: unknown;
  try {
    raw = JSON.parse(bom ? text.slice(1) : text);
  } catch (err) {
    // No `cause`: V8's SyntaxError quotes the text around the error, which could
    // hold a secret someone pasted inline.
    throw new ConfigError('', `${file}: ${describeJsonError(text, bom, err)}`, { file });
  }
  try {
    return build(raw, dirname(file), hostName, env, file);
  } catch (err) {
    throw err instanceof ConfigError ? inFile(err) : err;
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

/** Validate a relay address: `ipv4:port`, `[ipv6]:port` or `hostname:port`, port 1..65535. */
export function validateRelayAddress(value: unknown, field: string): Address {
  return parseAddress(value, field, 1);
}

/** Validate a metrics address: a loopback `host:port` (127.0.0.0/8, [::1], localhost), port 0..65535. */
export function validateMetricsAddress(value: unknown, field: string): Address {
  const address = parseAddress(value, field, 0);
  const loopback = isIPv4(address.host)
    ? address.host.startsWith('127.')
    : address.host === '::1' || address.host === 'localhost';
  if (!loopback) throw fail(field, field, 'a loopback address (127.0.0.0/8, [::1] or localhost) with a port', value);
  return address;
}

// ---------------------------------------------------------------------------
// Building the config

const TOP_FIELDS = ['secret', 'tls', 'limits', 'hosts'] as const;
const SECRET_FIELDS = ['file', 'env'] as const;
const TLS_FIELDS = ['key', 'cert', 'ca'] as const;
const HOST_FIELDS = ['relay', 'namespace', 'dir', 'metrics', 'doorbellPort', 'inboxSlotSize', 'inboxCapacity', 'inboxLanes'] as const;
const ENV_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;

type SecretSource = { readonly kind: 'file'; readonly path: string } | { readonly kind: 'env'; readonly name: string };

function build(raw: unknown, baseDir: string, hostName: string, env: ConfigEnv, path: string | undefined): ClusterConfig {
  const top = object(raw, '', 'the config');
  onlyFields(top, '', TOP_FIELDS);
  // Shape first, then the files: a typo is reported before any I/O.
  const secretSource = secretShape(top.secret, baseDir);
  const tlsFiles = top.tls === undefined ? undefined : tlsShape(top.tls, baseDir);
  const limits = limitsOf(top.limits);
  const hosts = hostsOf(top.hosts);
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

function secretShape(value: unknown, baseDir: string): SecretSource {
  if (value === undefined) throw fail('secret', 'secret', 'an object with "file" or "env"', value);
  // Anything written inline here may be the secret itself: describe, never show.
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError('secret', `secret must be an object with "file" or "env"; received ${kindOf(value)} (not shown)`);
  }
  const s = value as Record<string, unknown>;
  onlyFields(s, 'secret', SECRET_FIELDS);
  if ((s.file === undefined) === (s.env === undefined)) {
    const received = s.file === undefined ? 'neither' : 'both';
    throw new ConfigError('secret', `secret must have exactly one of "file" or "env"; received ${received}`);
  }
  if (s.file !== undefined) {
    if (typeof s.file !== 'string' || s.file === '' || !plausiblePath(s.file)) {
      throw new ConfigError('secret.file', `secret.file must be a non-empty file path; received ${kindOf(s.file)} (not shown)`);
    }
    return { kind: 'file', path: resolve(baseDir, s.file) };
  }
  if (typeof s.env !== 'string' || !ENV_NAME_PATTERN.test(s.env)) {
    const length = typeof s.env === 'string' ? ` of ${s.env.length} characters` : '';
    throw new ConfigError(
      'secret.env',
      `secret.env must be the name of an environment variable (A-Z a-z 0-9 _, not starting with a digit); received ${kindOf(s.env)}${length} (not shown)`,
    );
  }
  return { kind: 'env', name: s.env };
}

function readSecret(source: SecretSource, env: ConfigEnv): Buffer {
  let secret: Buffer;
  let field: string;
  if (source.kind === 'file') {
    field = 'secret.file';
    secret = readPrivateFile(source.path, field);
    const end = secret.length > 0 && secret[secret.length - 1] === 0x0a ? (secret[secret.length - 2] === 0x0d ? 2 : 1) : 0;
    if (end > 0) secret = secret.subarray(0, secret.length - end);
  } else {
    field = 'secret.env';
    const value = Object.prototype.hasOwnProperty.call(env, source.name) ? env[source.name] : undefined;
    if (typeof value !== 'string') throw new ConfigError(field, `secret.env: environment variable ${source.name} must be set; it is not`);
    if (value === '') throw new ConfigError(field, `secret.env: environment variable ${source.name} must not be empty; it is`);
    secret = Buffer.from(value, 'utf8');
  }
  if (secret.length < MIN_SECRET_LENGTH) {
    secret.fill(0);
    throw new ConfigError(field, `${field}: the secret must be at least ${MIN_SECRET_LENGTH} bytes; it is ${secret.length} bytes`);
  }
  return secret;
}

/** Read a file that must be a regular file private to its owner (mode & 0o077 == 0), as ssh requires of keys. */
function readPrivateFile(path: string, field: string): Buffer {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (err) {
    throw new ConfigError(field, `${field}: cannot open ${path}: ${errnoOf(err)}`, { cause: err });
  }
  try {
    const stat = fstatSync(fd);
    if (stat.isDirectory()) throw new ConfigError(field, `${field}: ${path} must be a file; it is a folder (EISDIR)`);
    if (!stat.isFile()) throw new ConfigError(field, `${field}: ${path} must be a regular file; it is not`);
    if ((stat.mode & 0o077) !== 0) {
      const mode = `0${(stat.mode & 0o777).toString(8).padStart(3, '0')}`;
      throw new ConfigError(field, `${field}: ${path} must not be accessible by group or others (mode 0600 or 0400); its mode is ${mode}`);
    }
    return readFileSync(fd);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(field, `${field}: cannot read ${path}: ${errnoOf(err)}`, { cause: err });
  } finally {
    closeSync(fd);
  }
}

function tlsShape(value: unknown, baseDir: string): Record<keyof TlsMaterial, string> {
  const t = object(value, 'tls', 'tls');
  onlyFields(t, 'tls', TLS_FIELDS);
  const files = {} as Record<keyof TlsMaterial, string>;
  for (const key of TLS_FIELDS) {
    const field = `tls.${key}`;
    const file = t[key];
    if (typeof file !== 'string' || file === '') throw fail(field, field, 'a non-empty file path (key, cert and ca are all required)', file);
    if (!plausiblePath(file)) {
      throw new ConfigError(field, `${field} must be a file path, not PEM text; received a string of ${file.length} characters (not shown)`);
    }
    files[key] = resolve(baseDir, file);
  }
  return files;
}

function readTls(files: Record<keyof TlsMaterial, string>): TlsMaterial {
  const material = {} as Record<keyof TlsMaterial, Buffer>;
  for (const key of TLS_FIELDS) {
    const field = `tls.${key}`;
    let data: Buffer;
    try {
      data = readFileSync(files[key]);
    } catch (err) {
      throw new ConfigError(field, `${field}: cannot read ${files[key]}: ${errnoOf(err)}`, { cause: err });
    }
    if (data.length === 0) throw new ConfigError(field, `${field}: ${files[key]} must not be empty; it is`);
    material[key] = data;
  }
  return Object.freeze(material);
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
  if (l.unknownTargetMs === undefined && limits.unknownTargetMs > limits.ttlMs) {
    // A TTL shorter than the default grace: the grace follows it.
    limits.unknownTargetMs = limits.ttlMs;
  }
  if (limits.unknownTargetMs > limits.ttlMs) {
    throw fail('limits.unknownTargetMs', 'limits.unknownTargetMs', `at most limits.ttlMs (${limits.ttlMs})`, limits.unknownTargetMs);
  }
  if (limits.backoffInitialMs > limits.backoffMaxMs) {
    throw fail('limits.backoffInitialMs', 'limits.backoffInitialMs', `at most limits.backoffMaxMs (${limits.backoffMaxMs})`, limits.backoffInitialMs);
  }
  return Object.freeze(limits);
}

/** Relay addresses that can only be this machine. */
function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

function hostsOf(value: unknown): Map<string, HostConfig> {
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
    const host = hostOf(h[name], name, index + 1, field);
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

function hostOf(value: unknown, name: string, id: number, field: string): HostConfig {
  const o = object(value, field, field);
  onlyFields(o, field, HOST_FIELDS);
  if (o.relay === undefined) throw fail(`${field}.relay`, `${field}.relay`, 'a "host:port" address', o.relay);
  return Object.freeze({
    name,
    id,
    relay: validateRelayAddress(o.relay, `${field}.relay`),
    namespace: viaOption(validateNamespace, orDefault(o.namespace, DEFAULT_NAMESPACE), `${field}.namespace`),
    dir: trimDir(viaOption(validateDir, orDefault(o.dir, DEFAULT_DIR), `${field}.dir`)),
    metrics: o.metrics === undefined ? undefined : validateMetricsAddress(o.metrics, `${field}.metrics`),
    doorbellPort: validateInteger(orDefault(o.doorbellPort, DEFAULT_DOORBELL_PORT), `${field}.doorbellPort`, 0, MAX_PORT),
    inboxSlotSize: viaOption(validateSlotSize, orDefault(o.inboxSlotSize, DEFAULT_RELAY_INBOX_SLOT_SIZE), `${field}.inboxSlotSize`),
    inboxCapacity: viaOption(validateCapacity, orDefault(o.inboxCapacity, DEFAULT_RELAY_INBOX_CAPACITY), `${field}.inboxCapacity`),
    inboxLanes: viaOption(validateLanes, orDefault(o.inboxLanes, DEFAULT_RELAY_LANES), `${field}.inboxLanes`),
  });
}

/** False for text that is surely not a path (PEM, anything with a control character): such text is never echoed. */
function plausiblePath(text: string): boolean {
  return !/[\x00-\x1f]/.test(text) && !text.includes('-----BEGIN');
}

function trimDir(dir: string): string {
  const n = normalize(dir);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
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

// ---------------------------------------------------------------------------
// Validators and helpers

/** Only a missing field takes the default: `null` is a value, and refused. */
function orDefault(value: unknown, fallback: unknown): unknown {
  return value === undefined ? fallback : value;
}

function validateInteger(value: unknown, field: string, min: number, max: number): number {
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
function viaOption<T>(validate: (value: unknown, option: string) => T, value: unknown, field: string): T {
  try {
    return validate(value, field);
  } catch (err) {
    if (err instanceof BusError && err.code === 'ERR_SHMBUS_INVALID_OPTION') {
      throw new ConfigError(field, err.message.replace(/^option "([^"]*)"/, '$1'), { cause: err });
    }
    throw err;
  }
}

function object(value: unknown, field: string, label: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw fail(field, label, 'an object', value);
  return value as Record<string, unknown>;
}

/** Refuse fields not in `known`, naming every one (and the likely intended name). */
function onlyFields(o: Record<string, unknown>, field: string, known: readonly string[]): void {
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
function pathOf(parent: string, key: string): string {
  if (/^[A-Za-z0-9_-]+$/.test(key)) return parent === '' ? key : `${parent}.${key}`;
  return `${parent}[${JSON.stringify(truncate(key))}]`;
}

function fail(field: string, label: string, expected: string, received: unknown, note?: string): ConfigError {
  return new ConfigError(field, `${label} must be ${expected}; received ${show(received)}${note === undefined ? '' : ` (${note})`}`);
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(truncate(value));
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (value === undefined) return 'nothing (the field is missing)';
  return kindOf(value);
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (value === undefined) return 'nothing';
  return `a ${typeof value}`;
}

function truncate(text: string, max = 80): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function errnoOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : String((err as Error | null)?.message ?? err);
}

/** A Map whose mutators throw: `Object.freeze` alone does not stop `Map.prototype.set`. */
class FrozenMap<K, V> extends Map<K, V> {
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

// ---------------------------------------------------------------------------
// JSON syntax errors

/** `not valid JSON at line L, column C (position P): problem`, positions in the file as read (BOM included). */
function describeJsonError(text: string, bom: number, err: unknown): string {
  const body = bom ? text.slice(1) : text;
  let found = locateJsonError(body);
  if (found === undefined) {
    // The scanner disagrees with V8 (it should not): use V8's words without the quoted text.
    const message = String((err as Error | null)?.message ?? err);
    const at = /at position (\d+)/.exec(message);
    const problem = message.replace(/, ".*" is not valid JSON$/s, '').replace(/ in JSON at position \d+.*$/s, '');
    found = { position: at ? Number(at[1]) : body.length, problem };
  }
  const position = found.position + bom;
  const before = text.slice(0, position);
  const line = before.split('\n').length;
  const column = position - (before.lastIndexOf('\n') + 1) + 1;
  return `not valid JSON at line ${line}, column ${column} (position ${position}): ${found.problem}`;
}

/** The first syntax error in `text` per RFC 8259, or `undefined` if there is none. */
function locateJsonError(text: string): { position: number; problem: string } | undefined {
  let i = 0;
  const stop = (problem: string): Error & { position: number; problem: string } =>
    Object.assign(new Error(problem), { position: i, problem: i >= text.length ? 'unexpected end of input' : problem });
  const unexpected = (): Error => stop(`unexpected ${JSON.stringify(text[i])}`);
  const space = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const string = (): void => {
    i++;
    for (;;) {
      const c = text[i];
      if (c === undefined) throw stop('unterminated string');
      if (c === '"') {
        i++;
        return;
      }
      if (c === '\\') {
        i++;
        const e = text[i];
        if (e !== undefined && '"\\/bfnrt'.includes(e)) i++;
        else if (e === 'u' && /^[0-9A-Fa-f]{4}$/.test(text.slice(i + 1, i + 5))) i += 5;
        else throw stop('bad escape in string');
      } else if (c < ' ') {
        throw stop('control character in string');
      } else {
        i++;
      }
    }
  };
  const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  const value = (): void => {
    space();
    const c = text[i];
    if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']';
      i++;
      space();
      if (text[i] === close) {
        i++;
        return;
      }
      for (;;) {
        if (c === '{') {
          space();
          if (text[i] !== '"') throw stop('expected a double-quoted property name');
          string();
          space();
          if (text[i] !== ':') throw stop("expected ':' after a property name");
          i++;
        }
        value();
        space();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === close) {
          i++;
          return;
        }
        throw stop(`expected ',' or '${close}'`);
      }
    }
    if (c === '"') return string();
    NUMBER.lastIndex = i;
    const n = NUMBER.exec(text);
    if (n !== null && n[0] !== '-') {
      i += n[0].length;
      return;
    }
    for (const literal of ['true', 'false', 'null']) {
      if (text.startsWith(literal, i)) {
        i += literal.length;
        return;
      }
    }
    throw unexpected();
  };
  try {
    value();
    space();
    if (i < text.length) throw stop('unexpected text after the JSON value');
    return undefined;
  } catch (err) {
    const e = err as { position?: unknown; problem?: unknown };
    if (typeof e.position === 'number' && typeof e.problem === 'string') return { position: e.position, problem: e.problem };
    return undefined; // e.g. RangeError from very deep nesting
  }
}
