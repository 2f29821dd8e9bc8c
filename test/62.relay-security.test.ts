/**
 * The transit relay against hostile and broken peers, bad configs and
 * operators: real relay processes, real TCP and UDP sockets, a rogue client
 * written here with the wire codec. Assertions are on wire codes, exit codes,
 * log event names and counters — never on message text.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { join } from 'node:path';
import { Bus } from '../src/index';
import {
  DATA_FRAME_COUNT_OFFSET,
  DATA_RUNS_OFFSET,
  FRAME_PAYLOAD_LENGTH_OFFSET,
  RUN_HEADER_LENGTH,
  ackEntries,
  encodeStream,
  ERR_AUTH_FAILED,
  ERR_BAD_MAGIC,
  ERR_MALFORMED,
  ERR_TOO_LARGE,
  ERR_UNEXPECTED,
  ERR_UNKNOWN_HOST,
  HELLO_MAGIC_OFFSET,
  HELLO_NONCE_OFFSET,
  ACK_UNKNOWN_DESTINATION,
  MSG_ACK,
  MSG_CHALLENGE,
  MSG_ERROR,
  MSG_HELLO,
  NONCE_LENGTH,
  PROOF_LENGTH,
  WIRE_ERROR_TABLE,
  encodeChallenge,
  encodeError,
  encodeHello,
  type Message,
} from '../relay/codec';
import { DataBatchWriter } from '../relay/batch-writer';
import { acceptorProof, newNonce, verifyProof } from '../relay/handshake';
import { cleanupAll, deadline, filesIn, nextFrame, until } from './_helpers';
import { makeCluster, type Cluster, type Relay } from './_helpers/cluster';
import { rogueAcceptor, rogueConnect, rogueHandshake, rogueOpen, runRelay, type Rogue } from './_helpers/rogue';

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const bytes = (s: string) => new TextEncoder().encode(s);
const SHMBUS_CLI = join(__dirname, '..', 'src', 'cli.ts');
/** transit-server exit codes (relay/cli.ts; importing it would start a relay). */
const EXIT_USAGE = 64;
const EXIT_UNAVAILABLE = 69;
const EXIT_CONFIG = 78;
/** How much the relay's resident memory may grow while it refuses oversized input from a peer. */
const RSS_GROWTH_LIMIT_KB = 50 * 1024;

/** Timers may fire up to a millisecond early (rounding); allow a little more. */
const TIMER_SLACK_MS = 5;

/** A fresh cluster secret (the relay reads the file's bytes as the HMAC key). */
const newSecret = () => randomBytes(32).toString('hex');


type Metrics = Awaited<ReturnType<Relay['metrics']>>;

/** Wait until `predicate(metrics of relay)` holds. */
async function untilMetrics(relay: Relay, predicate: (m: Metrics) => boolean, what: string, ms = 20_000): Promise<Metrics> {
  return deadline(
    (async () => {
      for (;;) {
        const m = await relay.metrics();
        if (predicate(m)) return m;
        await new Promise((r) => setTimeout(r, 5));
      }
    })(),
    ms,
    what,
  );
}

/** The relay's next message must be ERROR `code`, and then the relay must close the connection. */
async function expectRefusal(rogue: Rogue, code: number): Promise<void> {
  const msg = await rogue.next();
  assert.is(msg.type, MSG_ERROR, `expected ERROR ${WIRE_ERROR_TABLE[code as keyof typeof WIRE_ERROR_TABLE]?.name}, got message type ${msg.type}`);
  assert.is((msg as Extract<Message, { type: typeof MSG_ERROR }>).code, code);
  await rogue.closed();
}

/** One frame `payload` from a fresh a1@alpha to b1@beta arrives with the right source: the relays still serve. */
async function stillServes(a1: Bus, b1: Bus, payload: string): Promise<void> {
  assert.ok(a1.send('b1@beta', bytes(payload)));
  const f = await nextFrame(b1, 10_000, `"${payload}" at b1@beta`);
  assert.is(f.source, 'a1@alpha');
  assert.is(text(f.payload), payload);
}

/** Two hosts with relays running and a1@alpha, b1@beta open. */
async function twoHosts(options: Parameters<typeof makeCluster>[1] = {}) {
  const secret = options.secret ?? newSecret();
  const cluster = await makeCluster(['alpha', 'beta'], { ...options, secret });
  const [ra, rb] = await Promise.all([cluster.start('alpha'), cluster.start('beta')]);
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
  const b1 = await Bus.open({ name: 'b1', namespace: cluster.ns('beta'), dir: cluster.dir });
  return { cluster, secret, ra, rb, a1, b1 };
}

/** One DATA message of stream 0 (a1 to b1), sequence 0, as a fresh Buffer. */
function dataMessage(payload: string): Buffer {
  const writer = new DataBatchWriter();
  const p = bytes(payload);
  assert.ok(writer.append(0, 0, p, 0, p.length));
  return Buffer.from(writer.finish()!);
}

/** The STREAM message binding stream 0 to a1 (index 1, generation 0) -> b1. */
const streamMessage = () => encodeStream(0, 1, 0, 'a1', 'b1');

/** VmRSS of a process, in kB. */
function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

/** GET a JSON document from a loopback HTTP port. */
function getJson(port: number, path: string): Promise<unknown> {
  return deadline(
    new Promise((resolve, reject) => {
      httpGet({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(JSON.parse(body)));
      }).on('error', reject);
    }),
    5000,
    `GET ${path}`,
  );
}

/** Write a config file next to the cluster's, from the cluster's own JSON. */
interface ConfigJson {
  secret: unknown;
  hosts: Record<string, Record<string, unknown>>;
}

function deriveConfig(cluster: Cluster, file: string, mutate: (config: ConfigJson) => void): string {
  const config = JSON.parse(readFileSync(cluster.configPath, 'utf8')) as ConfigJson;
  mutate(config);
  const path = join(cluster.folder, file);
  writeFileSync(path, JSON.stringify(config, null, 2));
  return path;
}

// ---------------------------------------------------------------------------

const auth = suite('relay security: authentication');
auth.after.each(cleanupAll);

auth('refuses a PROOF made with another secret with AUTH_FAILED, closes, and counts it', async () => {
  const secret = newSecret();
  const cluster = await makeCluster(['alpha', 'beta'], { secret });
  const rb = await cluster.start('beta');
  const wrong = newSecret();
  const h = await rogueHandshake(cluster.port('beta'), 'alpha', 'beta', wrong);
  // An honest connector with the wrong secret stops before PROOF: the acceptor's proof only verifies with the real one.
  const nonceC = h.hello.subarray(HELLO_NONCE_OFFSET, HELLO_NONCE_OFFSET + NONCE_LENGTH);
  assert.not.ok(verifyProof(acceptorProof(wrong, nonceC, h.challenge.nonce, 'alpha', 'beta'), h.challenge.proof));
  assert.ok(verifyProof(acceptorProof(secret, nonceC, h.challenge.nonce, 'alpha', 'beta'), h.challenge.proof));
  // The rogue sent its PROOF anyway.
  await expectRefusal(h.rogue, ERR_AUTH_FAILED);
  const m = await rb.metrics();
  assert.is(m.global.authFailures, 1);
  assert.is(m.global.malformed, 0);
  assert.is(m.peers.alpha!.framesIn, 0);
  await rb.event('peer_refused', 5000, (e) => e.claimed === 'alpha');
  assert.is(rb.events('peer_refused').length, 1);
  assert.is(rb.events('peer_accepted').length, 0);
});

auth('refuses DATA before the handshake completes with UNEXPECTED; nothing reaches the target', async () => {
  const cluster = await makeCluster(['alpha', 'beta'], { secret: newSecret() });
  const rb = await cluster.start('beta');
  const b1 = await Bus.open({ name: 'b1', namespace: cluster.ns('beta'), dir: cluster.dir });
  // DATA right after HELLO, without waiting for CHALLENGE.
  const early = await rogueConnect(cluster.port('beta'));
  early.write(encodeHello(newNonce(), 'alpha'));
  early.write(dataMessage('forged after HELLO'));
  assert.is((await early.next()).type, MSG_CHALLENGE);
  await expectRefusal(early, ERR_UNEXPECTED);
  // DATA as the very first message.
  const first = await rogueConnect(cluster.port('beta'));
  first.write(dataMessage('forged first'));
  await expectRefusal(first, ERR_UNEXPECTED);
  // Delivery is synchronous with decoding: had a frame been accepted, it would be in b1's inbox before the ERROR left.
  assert.is(b1.recvFromLocal(), null);
  const m = await rb.metrics();
  assert.is(m.peers.alpha!.framesIn, 0);
  assert.is(m.global.delivered, 0);
  assert.is(m.global.pendingFrames, 0);
  assert.is(m.global.malformed, 2);
  // A real frame afterwards is the first and only one b1 sees.
  await cluster.start('alpha');
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
  await stillServes(a1, b1, 'real');
  assert.is(b1.recvFromLocal(), null);
  await a1.close();
  await b1.close();
});

auth('a relay with another secret delivers nothing; restarted with the right one, the waiting frame arrives', async () => {
  const cluster = await makeCluster(['alpha', 'beta'], { secret: newSecret(), limits: { ttlMs: 60_000, ackTimeoutMs: 70_000 } });
  const rb = await cluster.start('beta');
  const b1 = await Bus.open({ name: 'b1', namespace: cluster.ns('beta'), dir: cluster.dir });
  const otherSecret = join(cluster.folder, 'other.secret');
  writeFileSync(otherSecret, newSecret());
  chmodSync(otherSecret, 0o600);
  const otherConfig = deriveConfig(cluster, 'other.json', (c) => {
    c.secret = { file: './other.secret' };
    c.hosts.alpha!.relay = '127.0.0.1:0'; // its own listen address (peers dial alpha's front)
  });
  const impostor = runRelay(['--config', otherConfig, '--host', 'alpha', '--drain-timeout-ms', '200']);
  await impostor.event('start', 15_000);
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
  assert.ok(a1.send('b1@beta', bytes('kept')));
  // Several attempts, each refused (the impostor checks beta's proof first and refuses it).
  await impostor.event('connect_failed', 15_000, (e) => e.peer === 'beta');
  await rb.event('peer_error', 15_000, (e) => e.code === 'AUTH_FAILED' && e.wireCode === ERR_AUTH_FAILED);
  await until(() => impostor.events('connect_failed').length >= 2, 15_000, 'a second refused attempt');
  assert.is(rb.events('peer_accepted').length, 0);
  assert.is(b1.recvFromLocal(), null);
  const mb = await rb.metrics();
  assert.is(mb.peers.alpha!.framesIn, 0);
  assert.is(mb.global.delivered, 0);
  const mi = (await getJson(Number(String(impostor.events('start')[0]!.metrics).split(':')[1]), '/metrics.json')) as Metrics;
  assert.ok(mi.peers.beta!.connectFailures >= 2);
  assert.is(mi.peers.beta!.connects, 0);
  assert.is(mi.peers.beta!.framesOut, 0);
  // Stopped, the impostor leaves the frame in alpha's outbound ring.
  impostor.process.kill('SIGTERM');
  assert.is((await impostor.exited()).code, 0);
  const stop = impostor.events('stop')[0]!;
  assert.is(stop.clean, false);
  assert.is(stop.unacked, 1);
  const ra = await cluster.start('alpha');
  assert.is(ra.events('start')[0]!.outboundWaiting, 1);
  const f = await nextFrame(b1, 15_000, 'the frame kept in the ring');
  assert.is(f.source, 'a1@alpha');
  assert.is(text(f.payload), 'kept');
  assert.is(b1.recvFromLocal(), null);
  await a1.close();
  await b1.close();
});

auth('gives neither a proof nor a frame to an acceptor that cannot prove the secret', async () => {
  const fake = await rogueAcceptor();
  const cluster = await makeCluster(['alpha', 'beta'], { secret: newSecret(), specs: { beta: { dialPort: fake.port } } });
  const ra = await cluster.start('alpha');
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
  const payload = 'for the real beta only';
  assert.ok(a1.send('b1@beta', bytes(payload)));
  for (let attempt = 1; attempt <= 2; attempt++) {
    const conn = await fake.next(15_000);
    const hello = await conn.next();
    assert.is(hello.type, MSG_HELLO);
    assert.is((hello as { hostName: string }).hostName, 'alpha');
    conn.write(encodeChallenge(newNonce(), 'beta', randomBytes(PROOF_LENGTH)));
    await expectRefusal(conn, ERR_AUTH_FAILED);
    assert.not.ok(conn.received().includes(Buffer.from(payload)), 'the payload never went out');
  }
  const m = await ra.metrics();
  assert.is(m.peers.beta!.connects, 0);
  assert.ok(m.peers.beta!.connectFailures >= 2);
  assert.is(m.peers.beta!.framesOut, 0);
  assert.is(m.global.outboundDepth, 1, 'the frame waits in the ring');
  await a1.close();
});

auth('refuses a HELLO naming a host not in the config (or the acceptor itself) with UNKNOWN_HOST', async () => {
  const cluster = await makeCluster(['alpha', 'beta'], { secret: newSecret() });
  const rb = await cluster.start('beta');
  for (const claimed of ['mallory', 'beta']) {
    const rogue = await rogueConnect(cluster.port('beta'));
    rogue.write(encodeHello(newNonce(), claimed));
    await expectRefusal(rogue, ERR_UNKNOWN_HOST);
  }
  const m = await rb.metrics();
  assert.is(m.global.unknownPeers, 2);
  assert.is(m.global.authFailures, 0);
  assert.is(m.global.malformed, 0);
});

auth('refuses a replayed HELLO and PROOF with AUTH_FAILED: the fresh nonceA makes the old proof wrong', async () => {
  const secret = newSecret();
  const cluster = await makeCluster(['alpha', 'beta'], { secret });
  const rb = await cluster.start('beta');
  const recorded = await rogueOpen(cluster.port('beta'), 'alpha', 'beta', secret);
  assert.is(recorded.welcome.bootId >>> 0, recorded.welcome.bootId);
  recorded.rogue.destroy();
  await recorded.rogue.closed();
  const replay = await rogueConnect(cluster.port('beta'));
  replay.write(recorded.hello);
  const challenge = await replay.next();
  assert.is(challenge.type, MSG_CHALLENGE);
  assert.not.equal(Buffer.from((challenge as { nonce: Buffer }).nonce), Buffer.from(recorded.challenge.nonce));
  replay.write(recorded.proof);
  await expectRefusal(replay, ERR_AUTH_FAILED);
  const m = await rb.metrics();
  assert.is(m.global.authFailures, 1);
  await rb.event('peer_refused', 5000);
  assert.is(rb.events('peer_accepted').length, 1, 'only the recorded session was accepted');
});

// ---------------------------------------------------------------------------

const bad = suite('relay security: malformed input');
bad.after.each(cleanupAll);

bad('answers garbage with a documented wire code, closes, counts it, and keeps serving', async () => {
  const { cluster, rb, a1, b1 } = await twoHosts({ limits: { maxMessageBytes: 64 * 1024 } });
  const port = cluster.port('beta');
  // Random bytes: more than one largest message, so the relay always has a whole first message to judge.
  const random = await rogueConnect(port);
  random.write(randomBytes(2 * 64 * 1024 + 16));
  const msg = await random.next();
  assert.is(msg.type, MSG_ERROR);
  const code = (msg as { code: number }).code;
  assert.ok(Object.hasOwn(WIRE_ERROR_TABLE, code), `code ${code} is a documented wire code`);
  await random.closed();
  // An HTTP request: "GET " read as a length is far above the limit.
  const http = await rogueConnect(port);
  http.write(bytes('GET /metrics HTTP/1.1\r\nHost: beta\r\n\r\n'));
  await expectRefusal(http, ERR_TOO_LARGE);
  // A plausible length with an unknown type.
  const unknownType = await rogueConnect(port);
  unknownType.write(Buffer.from([5, 0, 0, 0, 0xee, 1, 2, 3, 4]));
  await expectRefusal(unknownType, ERR_MALFORMED);
  // A HELLO of another protocol.
  const magic = await rogueConnect(port);
  const hello = encodeHello(newNonce(), 'alpha');
  hello.writeUInt32LE(0x50545448, HELLO_MAGIC_OFFSET);
  magic.write(hello);
  await expectRefusal(magic, ERR_BAD_MAGIC);
  await stillServes(a1, b1, 'after garbage');
  const m = await rb.metrics();
  assert.is(m.global.malformed, 4);
  assert.is(m.global.authFailures, 0);
  await a1.close();
  await b1.close();
});

bad('refuses a length prefix of 2^31 with TOO_LARGE before any body byte, without allocating it', async () => {
  const { cluster, rb, a1, b1 } = await twoHosts();
  const pid = Number(rb.events('start')[0]!.pid);
  const before = rssKb(pid);
  const rogue = await rogueConnect(cluster.port('beta'));
  const prefix = Buffer.alloc(4);
  prefix.writeUInt32LE(2 ** 31, 0);
  // The length field alone: the refusal cannot wait for a body.
  rogue.write(prefix);
  await expectRefusal(rogue, ERR_TOO_LARGE);
  await stillServes(a1, b1, 'after 2^31');
  const grown = rssKb(pid) - before;
  assert.ok(grown < RSS_GROWTH_LIMIT_KB, `relay RSS grew by ${grown} kB`);
  const m = await rb.metrics();
  assert.is(m.global.malformed, 1);
  await a1.close();
  await b1.close();
});

bad('refuses DATA whose frames overrun the message with MALFORMED, delivering none of it', async () => {
  const { cluster, secret, rb, a1, b1 } = await twoHosts();
  // frameCount 3, one frame present.
  const short = await rogueOpen(cluster.port('beta'), 'alpha', 'beta', secret);
  short.rogue.write(streamMessage());
  const data = dataMessage('first of three');
  data.writeUInt32LE(3, DATA_FRAME_COUNT_OFFSET);
  short.rogue.write(data);
  await expectRefusal(short.rogue, ERR_MALFORMED);
  // payloadLength beyond the end of the message.
  const overrun = await rogueOpen(cluster.port('beta'), 'alpha', 'beta', secret);
  overrun.rogue.write(streamMessage());
  const long = dataMessage('payload');
  long.writeUInt32LE(1000, DATA_RUNS_OFFSET + RUN_HEADER_LENGTH + FRAME_PAYLOAD_LENGTH_OFFSET);
  overrun.rogue.write(long);
  await expectRefusal(overrun.rogue, ERR_MALFORMED);
  assert.is(b1.recvFromLocal(), null, 'the well-formed first frame of a malformed message is not delivered');
  const m = await rb.metrics();
  assert.is(m.global.malformed, 2);
  assert.is(m.global.delivered, 0);
  await stillServes(a1, b1, 'after malformed DATA');
  assert.is(b1.recvFromLocal(), null);
  await a1.close();
  await b1.close();
});

bad('counts and ignores garbage datagrams on the UDP doorbell; traffic keeps flowing', async () => {
  const { ra, rb, a1, b1 } = await twoHosts();
  const doorbell = Number(ra.events('start')[0]!.doorbell);
  assert.ok(doorbell > 0);
  const ringsBefore = (await ra.metrics()).global.doorbellRings;
  const udp = createSocket('udp4');
  try {
    for (const datagram of [bytes('garbage'), Uint8Array.of(0), new Uint8Array(0), randomBytes(1400)]) {
      await deadline(new Promise<void>((resolve, reject) => udp.send(datagram, doorbell, '127.0.0.1', (err) => (err ? reject(err) : resolve()))), 5000, 'UDP send');
    }
  } finally {
    udp.close();
  }
  const m = await untilMetrics(ra, (x) => x.global.doorbellGarbage === 4, 'four garbage datagrams counted');
  assert.is(m.global.doorbellRings, ringsBefore);
  await stillServes(a1, b1, 'after doorbell garbage');
  assert.ok(b1.send('a1@alpha', bytes('back')));
  assert.is(text((await nextFrame(a1)).payload), 'back');
  assert.is((await rb.metrics()).global.doorbellGarbage, 0);
  await a1.close();
  await b1.close();
});

bad('closes a peer that does not complete the handshake within handshakeTimeoutMs, and counts it', async () => {
  const handshakeTimeoutMs = 300;
  const cluster = await makeCluster(['alpha', 'beta'], { secret: newSecret(), limits: { handshakeTimeoutMs } });
  const rb = await cluster.start('beta');
  // Clocks start before connecting: the relay's timer starts at accept, later, so the close is never early.
  // Silent after connecting.
  const t0 = performance.now();
  const silent = await rogueConnect(cluster.port('beta'));
  await silent.closed(10_000);
  const silentMs = performance.now() - t0;
  // Silent after CHALLENGE.
  const t1 = performance.now();
  const stalled = await rogueConnect(cluster.port('beta'));
  stalled.write(encodeHello(newNonce(), 'alpha'));
  assert.is((await stalled.next()).type, MSG_CHALLENGE);
  await stalled.closed(10_000);
  const stalledMs = performance.now() - t1;
  assert.ok(silentMs >= handshakeTimeoutMs - TIMER_SLACK_MS, `closed after ${silentMs} ms`);
  assert.ok(stalledMs >= handshakeTimeoutMs - TIMER_SLACK_MS, `closed after ${stalledMs} ms`);
  const m = await rb.metrics();
  assert.is(m.global.handshakeTimeouts, 2);
  assert.is(m.global.malformed, 0, 'a silent peer sent nothing malformed');
  assert.is(rb.events('peer_accepted').length, 0);
});

// ---------------------------------------------------------------------------

const three = suite('relay: three hosts');
three.after.each(cleanupAll);

three('frames between three hosts arrive with name@host sources; each relay counts the right peers', async () => {
  const cluster = await makeCluster(['alpha', 'beta', 'gamma'], { secret: newSecret() });
  const [ra, rb, rc] = await Promise.all([cluster.start('alpha'), cluster.start('beta'), cluster.start('gamma')]);
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
  const b1 = await Bus.open({ name: 'b1', namespace: cluster.ns('beta'), dir: cluster.dir });
  const c1 = await Bus.open({ name: 'c1', namespace: cluster.ns('gamma'), dir: cluster.dir });
  assert.ok(a1.send('b1@beta', bytes('a->b')));
  assert.ok(a1.send('c1@gamma', bytes('a->c')));
  assert.ok(c1.send('b1@beta', bytes('c->b')));
  const atB = [await nextFrame(b1), await nextFrame(b1)].map((f) => `${f.source} ${text(f.payload)}`).sort();
  assert.equal(atB, ['a1@alpha a->b', 'c1@gamma c->b']);
  const atC = await nextFrame(c1);
  assert.is(atC.source, 'a1@alpha');
  assert.is(text(atC.payload), 'a->c');
  assert.is(b1.recvFromLocal(), null);
  assert.is(c1.recvFromLocal(), null);
  const [ma, mb, mc] = await Promise.all([ra, rb, rc].map((r) => r.metrics()));
  assert.equal(Object.keys(ma!.peers).sort(), ['beta', 'gamma']);
  assert.equal(Object.keys(mb!.peers).sort(), ['alpha', 'gamma']);
  assert.equal(Object.keys(mc!.peers).sort(), ['alpha', 'beta']);
  const pick = (m: Metrics, peer: string) => [m.peers[peer]!.framesOut, m.peers[peer]!.framesIn];
  assert.equal(pick(ma!, 'beta'), [1, 0]);
  assert.equal(pick(ma!, 'gamma'), [1, 0]);
  assert.equal(pick(mb!, 'alpha'), [0, 1]);
  assert.equal(pick(mb!, 'gamma'), [0, 1]);
  assert.equal(pick(mc!, 'alpha'), [0, 1]);
  assert.equal(pick(mc!, 'beta'), [1, 0]);
  for (const b of [a1, b1, c1]) await b.close();
});

three('a peer frame addressed to "@relay" is refused as UNKNOWN_DESTINATION, never forwarded (no open proxy)', async () => {
  const secret = newSecret();
  const cluster = await makeCluster(['alpha', 'beta', 'gamma'], { secret });
  const [rb, rc] = await Promise.all([cluster.start('beta'), cluster.start('gamma')]);
  const c1 = await Bus.open({ name: 'c1', namespace: cluster.ns('gamma'), dir: cluster.dir });
  const peer = await rogueOpen(cluster.port('beta'), 'alpha', 'beta', secret);
  const writer = new DataBatchWriter();
  // A source name that looks like an address on gamma.
  peer.rogue.write(encodeStream(0, 1, 0, 'c1@gamma', '@relay'));
  const payload = bytes('forward me');
  assert.ok(writer.append(0, 0, payload, 0, payload.length));
  peer.rogue.write(Buffer.from(writer.finish()!));
  const ack = await peer.rogue.next();
  assert.is(ack.type, MSG_ACK);
  assert.equal(ackEntries(ack), [{ streamId: 0, through: 1, status: ACK_UNKNOWN_DESTINATION }]);
  const mb = await untilMetrics(rb, (m) => m.global.undeliverable === 1, 'the frame refused');
  assert.is(mb.global.strayFrames, 0);
  assert.is(mb.global.delivered, 0);
  assert.is(mb.global.outboundDepth, 0);
  assert.is(mb.peers.gamma!.framesOut, 0);
  assert.is(mb.peers.alpha!.framesOut, 0);
  assert.is(mb.global.noticesWritten, 0);
  assert.is((await rc.metrics()).peers.beta!.framesIn, 0);
  assert.is(c1.recvFromLocal(), null);
  await c1.close();
});

// ---------------------------------------------------------------------------

const config = suite('relay: config errors and exit codes');
config.after.each(cleanupAll);

config('transit-server --help explains the options, signals, output and exit codes in 80 columns; --version prints the version', async () => {
  const help = runRelay(['--help']);
  assert.is((await help.exited(30_000)).code, 0);
  const text = help.lines.join('\n');
  for (const needle of ['--config <file>', '--host <name>', '--drain-timeout-ms', 'SIGTERM', 'Exit codes:', '78', '/readyz']) assert.ok(text.includes(needle), `--help mentions ${needle}`);
  assert.equal(help.lines.filter((l) => l.length > 80), [], 'every line fits 80 columns');
  const version = runRelay(['--version']);
  assert.is((await version.exited(30_000)).code, 0);
  assert.match(version.lines.join(''), /^\d+\.\d+\.\d+/);
  const bad = runRelay(['--bogus']);
  assert.is((await bad.exited(30_000)).code, 64);
  assert.match(bad.stderr(), /usage: transit-server/);
});

config('a bad config exits 78 naming the field, never the secret; no --config exits 64', async () => {
  const secret = newSecret();
  const cluster = await makeCluster(['alpha', 'beta'], { secret });
  const missingRelay = deriveConfig(cluster, 'no-relay.json', (c) => {
    delete c.hosts.beta!.relay;
  });
  const inlineSecret = deriveConfig(cluster, 'inline.json', (c) => {
    c.secret = secret;
  });
  const openSecret = deriveConfig(cluster, 'open.json', (c) => {
    c.secret = { file: './open.secret' };
  });
  writeFileSync(join(cluster.folder, 'open.secret'), secret);
  chmodSync(join(cluster.folder, 'open.secret'), 0o644);
  const cases: Array<{ args: string[]; code: number; field?: string }> = [
    { args: ['--config', missingRelay, '--host', 'alpha'], code: EXIT_CONFIG, field: 'hosts.beta.relay' },
    { args: ['--config', openSecret, '--host', 'alpha'], code: EXIT_CONFIG, field: 'secret.file' },
    { args: ['--config', inlineSecret, '--host', 'alpha'], code: EXIT_CONFIG, field: 'secret' },
    { args: ['--config', cluster.configPath, '--host', 'delta'], code: EXIT_CONFIG, field: 'hosts.delta' },
    { args: ['--config', join(cluster.folder, 'missing.json'), '--host', 'alpha'], code: EXIT_CONFIG, field: '' },
    { args: ['--host', 'alpha'], code: EXIT_USAGE },
    { args: ['--config', cluster.configPath, '--host', 'alpha', '--drain-timeout-ms', 'soon'], code: EXIT_USAGE },
    { args: ['--config', cluster.configPath, '--host', 'alpha', '--bogus'], code: EXIT_USAGE },
  ];
  const runs = cases.map((c) => runRelay(c.args));
  for (const [i, c] of cases.entries()) {
    const run = runs[i]!;
    const { code } = await run.exited(60_000);
    assert.is(code, c.code, `${c.args.join(' ')}: ${run.lines.join('\n')} ${run.stderr()}`);
    if (c.field !== undefined) {
      const errors = run.events('config_error');
      assert.is(errors.length, 1);
      assert.is(errors[0]!.field, c.field);
    } else {
      assert.is(run.events('config_error').length, 0);
    }
    assert.is(run.events('start').length, 0);
    const everything = `${run.lines.join('\n')}\n${run.stderr()}`;
    assert.not.ok(everything.includes(secret), `the secret appears in the output of ${c.args.join(' ')}`);
  }
});

config('a second relay for a host that is already served exits 69, and the first keeps serving', async () => {
  const { cluster, rb, a1, b1 } = await twoHosts();
  // The port the first relay listens on: taken.
  const samePort = runRelay([
    '--config',
    deriveConfig(cluster, 'beta-same-port.json', (c) => {
      c.hosts.beta!.relay = `127.0.0.1:${cluster.port('beta')}`;
    }),
    '--host',
    'beta',
  ]);
  // Any other port, same namespace: the "@relay" name is taken by a live relay.
  const sameName = runRelay([
    '--config',
    deriveConfig(cluster, 'beta-other-port.json', (c) => {
      c.hosts.beta!.relay = '127.0.0.1:0';
    }),
    '--host',
    'beta',
  ]);
  assert.is((await samePort.exited(30_000)).code, EXIT_UNAVAILABLE, samePort.lines.join('\n') + samePort.stderr());
  assert.is(samePort.events('start_failed')[0]!.code, 'EADDRINUSE');
  assert.is((await sameName.exited(30_000)).code, EXIT_UNAVAILABLE, sameName.lines.join('\n') + sameName.stderr());
  assert.is(sameName.events('start_failed')[0]!.code, 'ERR_SHMBUS_NAME_IN_USE');
  await stillServes(a1, b1, 'first relay unharmed');
  assert.ok(b1.send('a1@alpha', bytes('reply')));
  assert.is(text((await nextFrame(a1)).payload), 'reply');
  assert.is(rb.process.exitCode, null);
  await a1.close();
  await b1.close();
});

// ---------------------------------------------------------------------------

const observe = suite('relay: observability');
observe.after.each(cleanupAll);

/** Run `shmbus <args>` and parse its JSON output. */
function shmbusJson(args: string[]): Promise<unknown> {
  return deadline(
    new Promise((resolve, reject) => {
      execFile(process.execPath, ['--import', 'tsx', SHMBUS_CLI, ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
        if (err) reject(new Error(`shmbus ${args.join(' ')}: ${err.message} ${stderr}`));
        else resolve(JSON.parse(stdout));
      });
    }),
    30_000,
    `shmbus ${args.join(' ')}`,
  );
}

observe('GET /metrics is valid Prometheus text with per-peer frame counts; shmbus stat shows the relay', async () => {
  const { cluster, ra, rb, a1, b1 } = await twoHosts();
  const N = 5;
  for (let i = 0; i < N; i++) assert.ok(a1.send('b1@beta', bytes(`m${i}`)));
  for (let i = 0; i < N; i++) assert.is(text((await nextFrame(b1)).payload), `m${i}`);
  const prom = await ra.prometheus();
  const samples = new Map<string, number>();
  const typed = new Set<string>();
  for (const line of prom.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const t = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
      if (t) {
        assert.not.ok(typed.has(t[1]!), `# TYPE ${t[1]} given twice`);
        typed.add(t[1]!);
      }
      else assert.match(line, /^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* /);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${JSON.stringify(line)}`);
    assert.ok(Number.isFinite(Number(m![3])), `not a number: ${line}`);
    assert.ok(typed.has(m![1]!), `sample before its # TYPE: ${line}`);
    samples.set(`${m![1]}{${m![2] ?? ''}}`, Number(m![3]));
  }
  assert.is(samples.get('shmbus_relay_peer_frames_out_total{host="alpha",peer="beta"}'), N);
  assert.is(samples.get('shmbus_relay_peer_frames_in_total{host="alpha",peer="beta"}'), 0);
  assert.ok(typed.has('shmbus_relay_auth_failures_total'));
  // Labels come from bounded sets (host, peer): no series per connection id, which would grow at every reconnect.
  for (const key of samples.keys()) assert.not.match(key, /\bid="/, `unbounded label in ${key}`);
  // Frames waiting for a stopped peer sit in alpha's outbound ring: stat shows them as the relay's inbox depth.
  assert.is(await rb.stop(), 0);
  await ra.event('peer_down', 10_000, (e) => e.peer === 'beta');
  const M = 3;
  for (let i = 0; i < M; i++) assert.ok(a1.send('b1@beta', bytes(`w${i}`)));
  await untilMetrics(ra, (m) => m.global.outboundDepth === M, 'frames waiting in the outbound ring');
  const [report] = (await shmbusJson(['stat', '--namespace', cluster.ns('alpha'), '--dir', cluster.dir, '--json'])) as Array<{
    namespace: string;
    endpoints: Array<Record<string, unknown>>;
    relay: { global: Record<string, number>; peers: Record<string, Record<string, number>> } | null;
  }>;
  assert.is(report!.namespace, cluster.ns('alpha'));
  const relay = report!.endpoints.find((e) => e.name === '@relay')!;
  assert.ok(relay, 'the @relay endpoint is listed');
  assert.is(relay.relay, true);
  assert.is(relay.alive, true);
  assert.is(relay.depth, M);
  assert.is(relay.metricsPort, ra.metricsPort());
  assert.is(report!.endpoints.find((e) => e.name === 'a1')!.relay, false);
  assert.ok(report!.relay !== null, 'stat fetched the relay report');
  assert.is(report!.relay!.peers.beta!.framesOut, N);
  assert.is(report!.relay!.global.outboundDepth, M);
  await a1.close();
  await b1.close();
});

// ---------------------------------------------------------------------------

const shutdown = suite('relay: shutdown');
shutdown.after.each(cleanupAll);

shutdown('SIGTERM drains frames in flight, exits 0 with a clean stop, and leaves no relay files', async () => {
  const cluster = await makeCluster(['alpha', 'beta'], { secret: newSecret(), limits: { ttlMs: 60_000, ackTimeoutMs: 70_000 } });
  const [ra, rb] = await Promise.all([cluster.start('alpha', ['--drain-timeout-ms', '30000']), cluster.start('beta')]);
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
  const b1 = await Bus.open({ name: 'b1', namespace: cluster.ns('beta'), dir: cluster.dir, capacity: 4 });
  const count = 20;
  for (let i = 0; i < count; i++) assert.ok(a1.send('b1@beta', bytes(`${i}`)));
  // b1 is full: beta holds the rest, unacked by alpha.
  await untilMetrics(rb, (m) => m.global.pendingFrames === count - 4, 'frames held on beta');
  assert.ok((await ra.metrics()).peers.beta!.unacked > 0);
  ra.process.kill('SIGTERM');
  await ra.event('signal', 10_000);
  const got: string[] = [];
  while (got.length < count) got.push(text((await nextFrame(b1, 20_000)).payload));
  assert.equal(got, Array.from({ length: count }, (_, i) => `${i}`));
  assert.is((await ra.exited(40_000)).code, 0);
  await until(() => ra.events('stop').length === 1, 5000, 'alpha\'s stop line read');
  const stop = ra.events('stop')[0]!;
  assert.is(stop.clean, true);
  assert.is(stop.unacked, 0);
  await a1.close();
  const alphaFiles = filesIn(cluster.dir).filter((f) => f.includes(`.${cluster.ns('alpha')}.`));
  assert.equal(alphaFiles, [], 'alpha namespace left empty');
  await b1.close();
  assert.is(await rb.stop(), 0);
  await until(() => rb.events('stop').length === 1, 5000, 'beta\'s stop line read');
  assert.is(rb.events('stop')[0]!.clean, true);
  assert.equal(filesIn(cluster.dir), []);
});

// ---------------------------------------------------------------------------
// Defects found while writing this file: each test states the behaviour the
// relay should have and fails until relay/ is fixed (see the report).

const defects = suite('relay security: defects found in review, fixed');
defects.after.each(cleanupAll);

defects('the acceptor counts a handshake its connector refused for another secret in authFailures', async () => {
  const cluster = await makeCluster(['alpha', 'beta'], { secret: newSecret() });
  const rb = await cluster.start('beta');
  // Exactly what relay/pool.ts does when beta's proof does not verify with its (other) secret.
  const rogue = await rogueConnect(cluster.port('beta'));
  rogue.write(encodeHello(newNonce(), 'alpha'));
  assert.is((await rogue.next()).type, MSG_CHALLENGE);
  rogue.write(encodeError(ERR_AUTH_FAILED, 'proof does not verify'));
  await rogue.closed();
  await rb.event('peer_error', 5000, (e) => e.code === 'AUTH_FAILED' && e.wireCode === ERR_AUTH_FAILED);
  const m = await rb.metrics();
  assert.is(m.global.authFailures, 1, 'a peer with another secret leaves a trace in beta\'s counters, not only in its log');
});

defects('holds no more than a handshake message for a peer that has not authenticated', async () => {
  const cluster = await makeCluster(['alpha', 'beta'], { secret: newSecret(), limits: { handshakeTimeoutMs: 20_000 } });
  const rb = await cluster.start('beta');
  const pid = Number(rb.events('start')[0]!.pid);
  const before = rssKb(pid);
  const length = 16 * 1024 * 1024; // the default maxMessageBytes
  const rogues: Rogue[] = [];
  for (let i = 0; i < 6; i++) {
    const rogue = await rogueConnect(cluster.port('beta'));
    const head = Buffer.alloc(5);
    head.writeUInt32LE(length, 0);
    head[4] = MSG_HELLO;
    rogue.write(head);
    rogue.write(Buffer.alloc(length - 2, 0x41)); // one byte short of a whole "HELLO"
    rogues.push(rogue);
  }
  // Until the relay has refused each connection or read all it was sent.
  const sent = rogues.length * (length + 3);
  await deadline(
    (async () => {
      for (;;) {
        const m = (await getJson(rb.metricsPort(), '/metrics.json')) as { connections: Array<{ state: string; bytesIn: number }> };
        const read = m.connections.filter((c) => c.state === 'handshake').reduce((n, c) => n + c.bytesIn, 0);
        if (rogues.every((r) => r.isClosed) || read >= sent) return;
        await new Promise((r) => setTimeout(r, 10));
      }
    })(),
    30_000,
    'the relay reading or refusing the oversized HELLOs',
  );
  const grown = rssKb(pid) - before;
  assert.ok(grown < RSS_GROWTH_LIMIT_KB, `relay RSS grew by ${Math.round(grown / 1024)} MB buffering bytes from ${rogues.length} unauthenticated peers`);
  assert.ok(rogues.every((r) => r.isClosed), 'a HELLO longer than any handshake message is refused at once');
});

defects('a handshake timeout is counted once (handshakeTimeouts), not also as malformed or an auth failure', async () => {
  const cluster = await makeCluster(['alpha', 'beta'], { secret: newSecret(), limits: { handshakeTimeoutMs: 300 } });
  const rb = await cluster.start('beta');
  const silent = await rogueConnect(cluster.port('beta'));
  await silent.closed(10_000);
  const m = await rb.metrics();
  assert.is(m.global.handshakeTimeouts, 1);
  assert.is(m.global.authFailures, 0);
  assert.is(m.global.malformed, 0, 'a silent peer sent nothing malformed');
});

defects('the connector answers a CHALLENGE from another host than the one it dialled with UNKNOWN_HOST', async () => {
  const secret = newSecret();
  const fake = await rogueAcceptor();
  const cluster = await makeCluster(['alpha', 'beta', 'gamma'], { secret, specs: { beta: { dialPort: fake.port } } });
  await cluster.start('alpha');
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
  assert.ok(a1.send('b1@beta', bytes('x')));
  const conn = await fake.next(15_000);
  const hello = await conn.next();
  assert.is(hello.type, MSG_HELLO);
  // gamma (a real cluster member, knowing the secret) answers where beta was dialled.
  const nonceA = newNonce();
  const nonceC = (hello as { nonce: Buffer }).nonce;
  conn.write(encodeChallenge(nonceA, 'gamma', acceptorProof(secret, nonceC, nonceA, 'alpha', 'gamma')));
  await expectRefusal(conn, ERR_UNKNOWN_HOST); // docs/PROTOCOL.md, "Refusals"
  await a1.close();
});

auth.run();
bad.run();
three.run();
config.run();
observe.run();
shutdown.run();
defects.run();
