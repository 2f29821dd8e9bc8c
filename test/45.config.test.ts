import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { inspect } from 'node:util';
import { isBusError } from '../src/errors';
import { ConfigError, describeConfigError, loadConfig, validateConfig, type ClusterConfig, type ConfigEnv } from '../relay/config';

// A JSON document under test; `any` so cases can break it in any way.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Raw = Record<string, any>;

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;
const SECRET = 'shmbus-test-secret-0123456789abcdef';

let tmp = '';

function withTempDir(s: ReturnType<typeof suite>): void {
  s.before.each(() => {
    tmp = mkdtempSync(tmpdir() + '/shmbus-config-');
  });
  s.after.each(() => {
    rmSync(tmp, { recursive: true, force: true });
    tmp = '';
  });
}

function write(name: string, content: string | Buffer, mode = 0o600): string {
  const file = join(tmp, name);
  mkdirSync(join(file, '..'), { recursive: true });
  writeFileSync(file, content);
  chmodSync(file, mode);
  return file;
}

/** A valid two-host config using ./cluster.secret (written by the caller). */
function minimal(): Raw {
  return {
    secret: { file: './cluster.secret' },
    hosts: {
      alpha: { relay: '127.0.0.1:7001', namespace: 'alpha' },
      beta: { relay: '127.0.0.1:7002', namespace: 'beta' },
    },
  };
}

function writeConfig(raw: Raw | string, name = 'cluster.json'): string {
  return write(name, typeof raw === 'string' ? raw : JSON.stringify(raw, null, 2), 0o644);
}

/** Run `fn`, which must throw a ConfigError; return it. */
function refused(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.instance(err, ConfigError);
    const e = err as ConfigError;
    assert.is(e.code, 'ERR_SHMBUS_INVALID_CONFIG');
    assert.ok(isBusError(e, 'ERR_SHMBUS_INVALID_CONFIG'));
    return e;
  }
  assert.unreachable('expected a ConfigError');
  throw new Error('unreachable');
}

function validate(raw: unknown, host = 'alpha', env: ConfigEnv = {}): ClusterConfig {
  return validateConfig(raw, tmp, host, env);
}

// ---------------------------------------------------------------------------
const valid = suite('config: a valid file');
withTempDir(valid);

valid('loads a minimal file, fills every default and resolves the secret path against its folder', () => {
  write('secrets/cluster.secret', `${SECRET}\n`);
  const raw = minimal();
  raw.secret.file = './secrets/cluster.secret';
  const path = writeConfig(raw);
  const config = loadConfig(relative(process.cwd(), path), 'alpha');
  assert.is(config.path, path);
  assert.equal(config.secret, Buffer.from(SECRET));
  assert.is(config.tls, undefined);
  assert.equal({ ...config.limits }, {
    poolSize: 2,
    minLinks: 0,
    pendingFrames: 10_000,
    pendingBytes: 64 * MIB,
    ttlMs: 30_000,
    unknownGraceMs: 2000,
    connectTimeoutMs: 2000,
    handshakeTimeoutMs: 2000,
    idleTimeoutMs: 30_000,
    backoffInitialMs: 50,
    backoffMaxMs: 5000,
    batchFrames: 256,
    idleSpinUs: 200,
    ackTimeoutMs: 40000,
    maxMessageBytes: 16 * MIB,
  });
  assert.equal({ ...config.self, relay: { ...config.self.relay } }, {
    name: 'alpha',
    id: 1,
    relay: { host: '127.0.0.1', port: 7001, text: '127.0.0.1:7001' },
    namespace: 'alpha',
    dir: '/dev/shm',
    metrics: undefined,
    doorbellPort: 0,
    inboxSlotSize: 1088,
    inboxCapacity: 1024,
    inboxLanes: 64,
  });
  assert.equal([...config.hosts.keys()], ['alpha', 'beta']);
  assert.is(config.hosts.get('alpha'), config.self);
  assert.equal(config.peers.map((p) => p.name), ['beta']);
});

valid('hosts on different machines may all use the default namespace', () => {
  write('cluster.secret', SECRET);
  const raw = minimal();
  raw.hosts = { alpha: { relay: '10.0.0.1:7001' }, beta: { relay: '10.0.0.2:7001' } };
  const config = validate(raw);
  assert.is(config.hosts.get('alpha')!.namespace, 'default');
  assert.is(config.hosts.get('beta')!.namespace, 'default');
});

valid('defaults namespace and dir of a single host', () => {
  write('cluster.secret', SECRET);
  const config = validate({ secret: { file: 'cluster.secret' }, hosts: { solo: { relay: 'localhost:7001' } } }, 'solo');
  assert.is(config.self.namespace, 'default');
  assert.is(config.self.dir, '/dev/shm');
  assert.equal(config.peers, []);
});

valid('is deeply frozen and its host map refuses changes', () => {
  write('cluster.secret', SECRET);
  write('k.pem', 'key');
  write('c.pem', 'cert');
  write('ca.pem', 'ca');
  const raw = minimal();
  raw.tls = { key: 'k.pem', cert: 'c.pem', ca: 'ca.pem' };
  raw.hosts.alpha.metrics = '127.0.0.1:0';
  const config = validate(raw);
  for (const o of [config, config.self, config.self.relay, config.self.metrics, config.limits, config.peers, config.peers[0], config.tls, config.hosts]) {
    assert.ok(Object.isFrozen(o));
  }
  assert.throws(() => (config.hosts as Map<string, unknown>).set('gamma', config.self), TypeError);
  assert.throws(() => (config.hosts as Map<string, unknown>).delete('alpha'), TypeError);
  assert.throws(() => (config.hosts as Map<string, unknown>).clear(), TypeError);
  assert.is(config.hosts.size, 2);
});

valid('gives every relay the same host ids: 1 + index among the names sorted by code unit', () => {
  write('cluster.secret', SECRET);
  const hosts: Raw = {};
  ['beta', 'alpha', 'Alpha', '_x', '0z'].forEach((name, i) => {
    hosts[name] = { relay: `127.0.0.1:${7001 + i}`, namespace: `ns${i}` };
  });
  const expected = { '0z': 1, Alpha: 2, _x: 3, alpha: 4, beta: 5 };
  const reversed: Raw = Object.fromEntries(Object.entries(hosts).reverse());
  for (const self of Object.keys(hosts)) {
    for (const h of [hosts, reversed]) {
      const config = validate({ secret: { file: 'cluster.secret' }, hosts: h }, self);
      for (const [name, id] of Object.entries(expected)) {
        assert.is(config.hostId(name), id);
        assert.is(config.hosts.get(name)!.id, id);
      }
      assert.is(config.self.id, expected[self as keyof typeof expected]);
      assert.equal(config.peers.map((p) => p.name), Object.keys(expected).filter((n) => n !== self));
    }
  }
  const config = validate({ secret: { file: 'cluster.secret' }, hosts }, 'alpha');
  assert.throws(() => config.hostId('gamma'), (e: unknown) => isBusError(e, 'ERR_SHMBUS_INVALID_OPTION'));
});

valid('resolves relative TLS paths against the config folder and reads them', () => {
  write('cluster.secret', SECRET);
  write('tls/alpha.key', 'KEY');
  write('tls/alpha.crt', 'CERT');
  write('/ca.crt', 'CA');
  const raw = minimal();
  raw.tls = { key: './tls/alpha.key', cert: 'tls/alpha.crt', ca: join(tmp, 'ca.crt') };
  const config = loadConfig(writeConfig(raw), 'beta');
  assert.equal(config.tls!.key, Buffer.from('KEY'));
  assert.equal(config.tls!.cert, Buffer.from('CERT'));
  assert.equal(config.tls!.ca, Buffer.from('CA'));
});

valid('one shared config names each host\'s own TLS files: {host} in a path is the host the relay runs as', () => {
  write('cluster.secret', SECRET);
  write('tls/alpha.key', 'ALPHA KEY');
  write('tls/alpha.crt', 'ALPHA CERT');
  write('tls/beta.key', 'BETA KEY');
  write('tls/beta.crt', 'BETA CERT');
  write('tls/ca.crt', 'CA');
  const raw = minimal();
  raw.tls = { key: './tls/{host}.key', cert: './tls/{host}.crt', ca: './tls/ca.crt' };
  const path = writeConfig(raw);
  assert.equal([loadConfig(path, 'alpha').tls!.key, loadConfig(path, 'alpha').tls!.cert], [Buffer.from('ALPHA KEY'), Buffer.from('ALPHA CERT')]);
  assert.equal([loadConfig(path, 'beta').tls!.key, loadConfig(path, 'beta').tls!.cert], [Buffer.from('BETA KEY'), Buffer.from('BETA CERT')]);
  assert.equal(loadConfig(path, 'beta').tls!.ca, Buffer.from('CA'));
});

valid('reads the secret from an environment variable, verbatim', () => {
  const raw = minimal();
  raw.secret = { env: 'SHMBUS_CLUSTER_SECRET' };
  const config = validate(raw, 'alpha', { SHMBUS_CLUSTER_SECRET: `${SECRET}\n` });
  assert.equal(config.secret, Buffer.from(`${SECRET}\n`));
});

valid('drops exactly one trailing newline of a secret file', () => {
  for (const [content, secret] of [
    [`${SECRET}\n`, SECRET],
    [`${SECRET}\r\n`, SECRET],
    [`${SECRET}\n\n`, `${SECRET}\n`],
    [SECRET, SECRET],
  ]) {
    write('cluster.secret', content!);
    assert.equal(validate(minimal()).secret, Buffer.from(secret!));
  }
});

valid('accepts IPv6 and host-name relays, normalised', () => {
  write('cluster.secret', SECRET);
  const raw = minimal();
  raw.hosts.alpha.relay = '[0:0:0:0:0:0:0:1]:7001';
  raw.hosts.beta.relay = 'Relay-2.Example.COM:65535';
  const config = validate(raw);
  assert.equal({ ...config.self.relay }, { host: '::1', port: 7001, text: '[::1]:7001' });
  assert.equal({ ...config.peers[0]!.relay }, { host: 'relay-2.example.com', port: 65535, text: 'relay-2.example.com:65535' });
});

valid('accepts any metrics address given explicitly (loopback or not), port 0 included', () => {
  write('cluster.secret', SECRET);
  for (const [metrics, host, port] of [
    ['127.0.0.1:0', '127.0.0.1', 0],
    ['127.1.2.3:9101', '127.1.2.3', 9101],
    ['[::1]:9101', '::1', 9101],
    ['LocalHost:9101', 'localhost', 9101],
    ['0.0.0.0:9101', '0.0.0.0', 9101],
    ['[::]:0', '::', 0],
    ['10.0.0.1:9101', '10.0.0.1', 9101],
    ['Metrics.Example.com:9101', 'metrics.example.com', 9101],
  ] as const) {
    const raw = minimal();
    raw.hosts.alpha.metrics = metrics;
    const config = validate(raw);
    assert.is(config.self.metrics!.host, host);
    assert.is(config.self.metrics!.port, port);
  }
});

valid('accepts every limit at both ends of its range', () => {
  write('cluster.secret', SECRET);
  const bounds: Array<[string, number, number]> = [
    ['poolSize', 1, 64],
    ['minLinks', 0, 1],
    ['pendingFrames', 1, 10_000_000],
    ['pendingBytes', KIB, 4 * GIB],
    ['ttlMs', 1, 86_400_000],
    ['connectTimeoutMs', 1, 3_600_000],
    ['handshakeTimeoutMs', 1, 3_600_000],
    ['idleTimeoutMs', 1, 3_600_000],
    ['batchFrames', 1, 65535],
    ['idleSpinUs', 0, 1_000_000],
    ['ackTimeoutMs', 2, 172_800_000],
    ['maxMessageBytes', 64 * KIB, 256 * MIB],
  ];
  for (const [key, min, max] of bounds) {
    for (const value of [min, max]) {
      const raw = minimal();
      // ackTimeoutMs must exceed ttlMs: move the other one out of the way.
      raw.limits = { ...(key === 'ttlMs' ? { ackTimeoutMs: 172_800_000 } : key === 'ackTimeoutMs' ? { ttlMs: 1 } : {}), [key]: value };
      assert.is((validate(raw).limits as unknown as Record<string, number>)[key], value);
    }
  }
  const raw = minimal();
  raw.limits = { backoffInitialMs: 1000, backoffMaxMs: 1000 };
  assert.is(validate(raw).limits.backoffMaxMs, 1000);
});

valid('port 0 (any free port) is accepted for this host\'s own listen address only', () => {
  write('cluster.secret', SECRET);
  const raw = minimal();
  (raw.hosts as Record<string, { relay: string }>).alpha!.relay = '127.0.0.1:0';
  assert.is(validate(raw, 'alpha').self.relay.port, 0, 'alpha listens on a port the kernel picks');
  const e = refused(() => validate(raw, 'beta'));
  assert.is(e.field, 'hosts.alpha.relay', 'beta must dial alpha at a real port');
  assert.match(e.message, /port 0 is out of range/);
});

valid('the unknown-target grace is at most the TTL, and follows a TTL shorter than its default', () => {
  write('cluster.secret', SECRET);
  const raw = minimal();
  raw.limits = { ttlMs: 5000, unknownGraceMs: 6000 };
  assert.is(refused(() => validate(raw)).field, 'limits.unknownGraceMs');
  raw.limits = { ttlMs: 300 };
  assert.is(validate(raw).limits.unknownGraceMs, 300);
  raw.limits = { ttlMs: 5000, unknownGraceMs: 5000 };
  assert.is(validate(raw).limits.unknownGraceMs, 5000);
});

valid('refuses an ack timeout not longer than the TTL (a live peer may hold a frame that long)', () => {
  write('cluster.secret', SECRET);
  const raw = minimal();
  raw.limits = { ttlMs: 5000, ackTimeoutMs: 5000 };
  assert.is(refused(() => validate(raw)).field, 'limits.ackTimeoutMs');
});

valid('shows the secret and the TLS key redacted in JSON and inspect output', () => {
  write('cluster.secret', SECRET);
  write('k.pem', 'PRIVATE-KEY-BYTES');
  write('c.pem', 'cert');
  write('ca.pem', 'ca');
  const raw = minimal();
  raw.tls = { key: 'k.pem', cert: 'c.pem', ca: 'ca.pem' };
  const config = validate(raw);
  const bytes = [...Buffer.from(SECRET)].slice(0, 6).join(',');
  for (const text of [JSON.stringify(config), inspect(config, { depth: 10 }), inspect({ config }, { depth: 10 })]) {
    assert.not.ok(text.includes(SECRET));
    assert.not.ok(text.includes(bytes));
    assert.not.ok(text.includes(Buffer.from(SECRET).subarray(0, 6).toString('hex')));
    assert.not.ok(text.includes('PRIVATE-KEY-BYTES'));
    assert.ok(text.includes('alpha'));
  }
});

valid.run();

// ---------------------------------------------------------------------------
const refusals = suite('config: refusals');
withTempDir(refusals);
refusals.before.each(() => {
  write('cluster.secret', SECRET);
  write('k.pem', 'key');
  write('c.pem', 'cert');
  write('ca.pem', 'ca');
});

const CASES: Array<[string, (c: Raw) => void, string, string?]> = [
  ['an unknown top-level field', (c) => (c.secrets = c.secret), 'secrets'],
  ['an unknown field in limits', (c) => (c.limits = { poolsize: 2 }), 'limits.poolsize'],
  ['an unknown field in a host', (c) => (c.hosts.alpha.relays = '127.0.0.1:7009'), 'hosts.alpha.relays'],
  ['an unknown field in secret', (c) => (c.secret.path = 'x'), 'secret.path'],
  ['an unknown field in tls', (c) => (c.tls = { key: 'k.pem', cert: 'c.pem', ca: 'ca.pem', pass: 'x' }), 'tls.pass'],
  ['hosts that are missing', (c) => delete c.hosts, 'hosts'],
  ['hosts that are empty', (c) => (c.hosts = {}), 'hosts'],
  ['hosts that are an array', (c) => (c.hosts = [c.hosts.alpha]), 'hosts'],
  ['a host name with a dot', (c) => (c.hosts['al.pha'] = { relay: '127.0.0.1:7003', namespace: 'x' }), 'hosts["al.pha"]'],
  ['a host name of 65 characters', (c) => (c.hosts['h'.repeat(65)] = { relay: '127.0.0.1:7003', namespace: 'x' }), `hosts.${'h'.repeat(65)}`],
  ['a host that is not an object', (c) => (c.hosts.beta = '127.0.0.1:7002'), 'hosts.beta'],
  ['a --host that is not one of the hosts', () => undefined, 'hosts.gamma', 'gamma'],
  ['a missing relay', (c) => delete c.hosts.beta.relay, 'hosts.beta.relay'],
  ['a relay without a port', (c) => (c.hosts.beta.relay = '127.0.0.1'), 'hosts.beta.relay'],
  ['a relay on port 0', (c) => (c.hosts.beta.relay = '127.0.0.1:0'), 'hosts.beta.relay'],
  ['a relay on port 65536', (c) => (c.hosts.beta.relay = '127.0.0.1:65536'), 'hosts.beta.relay'],
  ['a relay with a bare IPv6 address', (c) => (c.hosts.beta.relay = '::1:7002'), 'hosts.beta.relay'],
  ['a relay with a bracketed non-IPv6 host', (c) => (c.hosts.beta.relay = '[example.com]:7002'), 'hosts.beta.relay'],
  ['a relay with a bad host name', (c) => (c.hosts.beta.relay = 'bad_host:7002'), 'hosts.beta.relay'],
  ['a relay with an IPv4 octet above 255', (c) => (c.hosts.beta.relay = '10.0.0.256:7002'), 'hosts.beta.relay'],
  ['a relay that is a number', (c) => (c.hosts.beta.relay = 7002), 'hosts.beta.relay'],
  ['two hosts with the same relay', (c) => (c.hosts.beta.relay = '127.0.0.1:7001'), 'hosts.beta.relay'],
  ['two hosts with the same IPv6 relay written differently', (c) => {
    c.hosts.alpha.relay = '[::1]:7001';
    c.hosts.beta.relay = '[0:0::1]:7001';
  }, 'hosts.beta.relay'],
  ['two hosts with the same relay host name in another case', (c) => {
    c.hosts.alpha.relay = 'node1.example:7001';
    c.hosts.beta.relay = 'NODE1.example:7001';
  }, 'hosts.beta.relay'],
  ['two hosts with the same namespace and dir', (c) => (c.hosts.beta.namespace = 'alpha'), 'hosts.beta.namespace'],
  ['two hosts both defaulting namespace and dir', (c) => {
    delete c.hosts.alpha.namespace;
    delete c.hosts.beta.namespace;
  }, 'hosts.beta.namespace'],
  ['two hosts with the same namespace and dir spelt differently', (c) => {
    c.hosts.alpha.dir = '/dev/shm/';
    c.hosts.beta.namespace = 'alpha';
  }, 'hosts.beta.namespace'],
  ['an invalid namespace', (c) => (c.hosts.alpha.namespace = 'a b'), 'hosts.alpha.namespace'],
  ['a relative dir', (c) => (c.hosts.alpha.dir = 'shm'), 'hosts.alpha.dir'],
  ['an inbox slot size that is not a multiple of 64', (c) => (c.hosts.alpha.inboxSlotSize = 1000), 'hosts.alpha.inboxSlotSize'],
  ['an inbox capacity that is not a power of two', (c) => (c.hosts.alpha.inboxCapacity = 1000), 'hosts.alpha.inboxCapacity'],
  ['no lanes in the relay inbox', (c) => (c.hosts.alpha.inboxLanes = 0), 'hosts.alpha.inboxLanes'],
  ['more lanes than an inbox has', (c) => (c.hosts.alpha.inboxLanes = 4097), 'hosts.alpha.inboxLanes'],
  ['a doorbell port above 65535', (c) => (c.hosts.alpha.doorbellPort = 65536), 'hosts.alpha.doorbellPort'],
  ['a negative doorbell port', (c) => (c.hosts.alpha.doorbellPort = -1), 'hosts.alpha.doorbellPort'],
  ['a fractional doorbell port', (c) => (c.hosts.alpha.doorbellPort = 1.5), 'hosts.alpha.doorbellPort'],
  ['a metrics address without a port', (c) => (c.hosts.alpha.metrics = '0.0.0.0'), 'hosts.alpha.metrics'],
  ['a bare IPv6 metrics address', (c) => (c.hosts.alpha.metrics = ':::9101'), 'hosts.alpha.metrics'],
  ['a metrics port above 65535', (c) => (c.hosts.alpha.metrics = '127.0.0.1:65536'), 'hosts.alpha.metrics'],
  ['null for an optional field', (c) => (c.hosts.alpha.metrics = null), 'hosts.alpha.metrics'],
  ['a missing secret', (c) => delete c.secret, 'secret'],
  ['a secret with both file and env', (c) => (c.secret.env = 'SHMBUS_CLUSTER_SECRET'), 'secret'],
  ['a secret with neither file nor env', (c) => (c.secret = {}), 'secret'],
  ['a secret written inline', (c) => (c.secret = SECRET), 'secret'],
  ['a secret file that is not a string', (c) => (c.secret.file = 7), 'secret.file'],
  ['a secret env that is not a variable name', (c) => (c.secret = { env: '1SECRET' }), 'secret.env'],
  ['tls that is not an object', (c) => (c.tls = 'k.pem'), 'tls'],
  ['tls without ca', (c) => (c.tls = { key: 'k.pem', cert: 'c.pem' }), 'tls.ca'],
  ['tls without key', (c) => (c.tls = { cert: 'c.pem', ca: 'ca.pem' }), 'tls.key'],
  ['tls with PEM text instead of a path', (c) => (c.tls = { key: '-----BEGIN PRIVATE KEY-----\nMII', cert: 'c.pem', ca: 'ca.pem' }), 'tls.key'],
  ['limits that are not an object', (c) => (c.limits = 5), 'limits'],
  ['backoffInitialMs above backoffMaxMs', (c) => (c.limits = { backoffInitialMs: 6000 }), 'limits.backoffInitialMs'],
  ['minLinks above poolSize', (c) => (c.limits = { poolSize: 2, minLinks: 3 }), 'limits.minLinks'],
];

const LIMIT_OUT_OF_RANGE: Array<[string, unknown]> = [
  ['poolSize', 0], ['poolSize', 65], ['poolSize', 1.5], ['poolSize', '2'],
  ['minLinks', -1], ['minLinks', 65], ['minLinks', true],
  ['pendingFrames', 0], ['pendingFrames', 10_000_001],
  ['pendingBytes', KIB - 1], ['pendingBytes', 4 * GIB + 1],
  ['ttlMs', 0], ['ttlMs', 86_400_001], ['ttlMs', null],
  ['connectTimeoutMs', 0], ['connectTimeoutMs', Infinity],
  ['handshakeTimeoutMs', 0], ['handshakeTimeoutMs', 3_600_001],
  ['idleTimeoutMs', 0], ['idleTimeoutMs', -5],
  ['backoffInitialMs', 0],
  ['backoffMaxMs', 0], ['backoffMaxMs', 3_600_001],
  ['batchFrames', 0], ['batchFrames', 65536], ['idleSpinUs', -1], ['idleSpinUs', 1_000_001],
  ['ackTimeoutMs', 1], ['ackTimeoutMs', 172_800_001],
  ['maxMessageBytes', 64 * KIB - 1], ['maxMessageBytes', 256 * MIB + 1],
];
for (const [key, value] of LIMIT_OUT_OF_RANGE) {
  CASES.push([`limits.${key} = ${String(value)}`, (c) => (c.limits = { [key]: value }), `limits.${key}`]);
}

for (const [what, change, field, host] of CASES) {
  refusals(`refuses ${what}`, () => {
    const raw = minimal();
    change(raw);
    const err = refused(() => validate(raw, host ?? 'alpha'));
    assert.is(err.field, field, err.message);
    assert.is(err.file, undefined);
  });
}

refusals.run();

// ---------------------------------------------------------------------------
const secret = suite('config: reading the secret and TLS files');
withTempDir(secret);

secret('refuses a secret file that does not exist, naming the path and errno', () => {
  const err = refused(() => validate(minimal()));
  assert.is(err.field, 'secret.file');
  assert.ok(err.message.includes(join(tmp, 'cluster.secret')), err.message);
  assert.ok(err.message.includes('ENOENT'), err.message);
});

secret('refuses a folder as the secret file', () => {
  mkdirSync(join(tmp, 'cluster.secret'), { mode: 0o700 });
  const err = refused(() => validate(minimal()));
  assert.is(err.field, 'secret.file');
  assert.ok(err.message.includes('EISDIR'), err.message);
});

secret('refuses a secret file that group or others may access', () => {
  for (const mode of [0o640, 0o604, 0o610, 0o620, 0o660, 0o644]) {
    write('cluster.secret', SECRET, mode);
    const err = refused(() => validate(minimal()));
    assert.is(err.field, 'secret.file');
    assert.ok(err.message.includes(`0${mode.toString(8)}`), err.message);
  }
  write('cluster.secret', SECRET, 0o400);
  assert.equal(validate(minimal()).secret, Buffer.from(SECRET));
});

secret('refuses a secret shorter than 16 bytes, the trailing newline not counted', () => {
  write('cluster.secret', `${'x'.repeat(15)}\n`);
  assert.is(refused(() => validate(minimal())).field, 'secret.file');
  write('cluster.secret', `${'x'.repeat(16)}\n`);
  assert.is(validate(minimal()).secret.length, 16);
});

secret('refuses an unset, empty or short environment secret', () => {
  const raw = minimal();
  raw.secret = { env: 'SHMBUS_CLUSTER_SECRET' };
  for (const env of [{}, { SHMBUS_CLUSTER_SECRET: '' }, { SHMBUS_CLUSTER_SECRET: 'x'.repeat(15) }, { OTHER: SECRET }]) {
    assert.is(refused(() => validate(raw, 'alpha', env)).field, 'secret.env');
  }
  raw.secret = { env: 'constructor' };
  assert.is(refused(() => validate(raw, 'alpha', {})).field, 'secret.env');
});

secret('refuses TLS files that are missing, folders or empty', () => {
  write('cluster.secret', SECRET);
  write('k.pem', 'key');
  write('c.pem', '');
  mkdirSync(join(tmp, 'ca-folder'));
  const cases: Array<[Raw, string, string]> = [
    [{ key: 'missing.pem', cert: 'c.pem', ca: 'ca.pem' }, 'tls.key', 'ENOENT'],
    [{ key: 'k.pem', cert: 'c.pem', ca: 'ca.pem' }, 'tls.cert', ''],
    [{ key: 'k.pem', cert: 'k.pem', ca: 'ca-folder' }, 'tls.ca', 'EISDIR'],
  ];
  for (const [tls, field, errno] of cases) {
    const raw = minimal();
    raw.tls = tls;
    const err = refused(() => validate(raw));
    assert.is(err.field, field);
    assert.ok(err.message.includes(errno), err.message);
  }
});

secret.run();

// ---------------------------------------------------------------------------
const files = suite('config: the file itself');
withTempDir(files);

files('refuses a config file that does not exist, naming the path', () => {
  const path = join(tmp, 'nope.json');
  const err = refused(() => loadConfig(path, 'alpha'));
  assert.is(err.field, '');
  assert.is(err.file, path);
  assert.ok(err.message.includes(path) && err.message.includes('ENOENT'), err.message);
});

files('refuses bad JSON, giving the position V8 reports', () => {
  const texts = ['{a:1}', '{"a":1,}', '{"a":1', '{"a":"x', '[1 2]', '{"a":1}x', '{"a":"\\q"}', '{\n  "hosts": {\n    "a": 1,\n  }\n}'];
  for (const text of texts) {
    let v8: number | undefined;
    try {
      JSON.parse(text);
    } catch (e) {
      const m = /at position (\d+)/.exec((e as Error).message);
      v8 = m ? Number(m[1]) : undefined;
    }
    const err = refused(() => loadConfig(writeConfig(text), 'alpha'));
    assert.is(err.field, '');
    assert.ok(/position \d+/.test(err.message), err.message);
    if (v8 !== undefined) assert.ok(err.message.includes(`(position ${v8})`), `${text}: ${err.message}`);
  }
});

files('gives a position for errors V8 reports without one', () => {
  for (const [text, position] of [['{"a":}', 5], ['{"a": tru}', 6], ['', 0]] as const) {
    const err = refused(() => loadConfig(writeConfig(text), 'alpha'));
    assert.ok(err.message.includes(`(position ${position})`), `${JSON.stringify(text)}: ${err.message}`);
  }
  const err = refused(() => loadConfig(writeConfig('{\n  "hosts": {\n    "a": 1,\n  }\n}'), 'alpha'));
  assert.ok(err.message.includes('line 4, column 3'), err.message);
});

files('accepts a byte order mark', () => {
  write('cluster.secret', SECRET);
  const config = loadConfig(writeConfig(`\ufeff${JSON.stringify(minimal())}`), 'beta');
  assert.is(config.self.name, 'beta');
});

files('names the file in errors found after parsing', () => {
  write('cluster.secret', SECRET);
  const raw = minimal();
  raw.hosts.beta.relay = 'nowhere';
  const path = writeConfig(raw);
  const err = refused(() => loadConfig(path, 'alpha'));
  assert.is(err.field, 'hosts.beta.relay');
  assert.is(err.file, path);
  assert.ok(err.message.startsWith(`${path}: `), err.message);
});

files('describes an error on one line with its code', () => {
  const err = refused(() => loadConfig(join(tmp, 'nope.json'), 'alpha'));
  const line = describeConfigError(err);
  assert.ok(line.startsWith('ERR_SHMBUS_INVALID_CONFIG: '), line);
  assert.ok(line.includes(err.message));
  assert.not.ok(/\n/.test(describeConfigError(new Error('two\nlines'))));
  assert.is(describeConfigError('plain'), 'plain');
});

files.run();

// ---------------------------------------------------------------------------
const secrecy = suite('config: the secret never appears in an error');
withTempDir(secrecy);

secrecy('keeps a distinctive secret out of every message of a bunch of bad configs', () => {
  const distinct = `Zq${randomBytes(16).toString('hex')}-x`;
  const short = `Yw${randomBytes(6).toString('hex')}-`; // 15 bytes
  const cases: Array<[string, () => void]> = [];
  const configWith = (change: (c: Raw) => void, secretContent = distinct, mode = 0o600): string => {
    write('cluster.secret', secretContent, mode);
    const raw = minimal();
    change(raw);
    return writeConfig(raw);
  };
  cases.push(['inline secret', () => loadConfig(configWith((c) => (c.secret = distinct)), 'alpha')]);
  cases.push(['inline secret in an object', () => loadConfig(configWith((c) => (c.secret = [distinct])), 'alpha')]);
  cases.push(['secret under an unknown field', () => loadConfig(configWith((c) => (c.secret = { value: distinct })), 'alpha')]);
  cases.push(['secret as env name', () => loadConfig(configWith((c) => (c.secret = { env: distinct })), 'alpha')]);
  cases.push(['secret as file path with a newline', () => loadConfig(configWith((c) => (c.secret = { file: `${distinct}\n` })), 'alpha')]);
  cases.push(['both file and env', () => loadConfig(configWith((c) => (c.secret.env = 'S')), 'alpha', { S: distinct })]);
  cases.push(['group-readable file', () => loadConfig(configWith(() => undefined, distinct, 0o640), 'alpha')]);
  cases.push(['short file secret', () => loadConfig(configWith(() => undefined, `${short}\n`), 'alpha')]);
  cases.push(['short env secret', () => loadConfig(configWith((c) => (c.secret = { env: 'S' })), 'alpha', { S: short })]);
  cases.push(['missing TLS after the secret is read', () => loadConfig(configWith((c) => (c.tls = { key: 'no.pem', cert: 'no.pem', ca: 'no.pem' })), 'alpha')]);
  cases.push(['TLS key as PEM text', () => loadConfig(configWith((c) => (c.tls = { key: `-----BEGIN KEY-----\n${distinct}`, cert: 'c', ca: 'c' })), 'alpha')]);
  cases.push(['unknown --host', () => loadConfig(configWith(() => undefined), 'gamma')]);
  cases.push(['duplicate relay', () => loadConfig(configWith((c) => (c.hosts.beta.relay = c.hosts.alpha.relay)), 'alpha')]);
  cases.push(['bad limit', () => loadConfig(configWith((c) => (c.limits = { poolSize: 0 })), 'alpha')]);
  cases.push(['bad JSON around an inline secret', () => loadConfig(writeConfig(`{"secret": "${distinct}", }`), 'alpha')]);
  cases.push(['bad JSON inside an inline secret', () => loadConfig(writeConfig(`{"secret": "${distinct.slice(0, 10)}\\q${distinct}"}`), 'alpha')]);
  cases.push(['bad JSON token after an inline secret', () => loadConfig(writeConfig(`{"secret": "${distinct}" x}`), 'alpha')]);
  for (const [what, run] of cases) {
    const err = refused(run);
    const texts = [err.message, describeConfigError(err), String(err), err.stack ?? ''];
    for (let cause: unknown = err.cause; cause instanceof Error; cause = cause.cause) texts.push(cause.message, String(cause.stack));
    for (const text of texts) {
      assert.not.ok(text.includes(distinct), `${what}: ${text}`);
      assert.not.ok(text.includes(distinct.slice(2, 18)), `${what}: ${text}`);
      assert.not.ok(text.includes(short), `${what}: ${text}`);
    }
  }
});

secrecy.run();
