/**
 * What operations tools read from a relay: the Prometheus text (checked by
 * `promtool check metrics` when it is installed, and by the naming rules here
 * either way), /healthz and /readyz on the metrics port, the log lines' level
 * and string reasons, and a metrics port bound to a non-loopback address.
 * Real relay processes (test/_helpers/cluster.ts).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Bus } from '../src/index';
import { encodeHello, NONCE_LENGTH } from '../relay/codec';
import { loadConfig } from '../relay/config';
import { TransitServer } from '../relay/server';
import { cleanupAll, deadline, jsonLines, nextFrame, registerCleanup, until } from './_helpers';
import { makeCluster, type Relay } from './_helpers/cluster';

const bytes = (s: string) => new TextEncoder().encode(s);
const RELAY_CLI = join(__dirname, '..', 'relay', 'cli.ts');
const SHMBUS_CLI = join(__dirname, '..', 'src', 'cli.ts');

/** GET a path on a loopback port: status and body. */
function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return deadline(
    new Promise((resolve, reject) => {
      httpGet({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      }).on('error', reject);
    }),
    5000,
    `GET ${path}`,
  );
}

interface ReadyBody {
  ready: boolean;
  status: string;
  host: string;
  listening: boolean;
  configLoaded: boolean;
  peersUp: number;
  peersDown: number;
  peersTotal: number;
  peers: Record<string, { up: boolean; state: string; outgoing: number; incoming: number }>;
}

async function readyz(relay: Relay): Promise<{ status: number; body: ReadyBody }> {
  const r = await get(relay.metricsPort(), '/readyz');
  return { status: r.status, body: JSON.parse(r.body) as ReadyBody };
}

/** GET /readyz until `done(body)` (every 20 ms, at most `ms`); the last answer. */
async function readyzUntil(relay: Relay, done: (body: ReadyBody) => boolean, ms = 10_000): Promise<{ status: number; body: ReadyBody }> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await readyz(relay);
    if (done(r.body) || Date.now() > end) return r;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Two hosts, relays up, a1@alpha and b1@beta open, `n` frames a1 -> b1 delivered. */
async function twoHostsWithTraffic(n: number) {
  const cluster = await makeCluster(['alpha', 'beta']);
  const [ra, rb] = await Promise.all([cluster.start('alpha'), cluster.start('beta')]);
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
  const b1 = await Bus.open({ name: 'b1', namespace: cluster.ns('beta'), dir: cluster.dir });
  for (let i = 0; i < n; i++) assert.ok(a1.send('b1@beta', bytes(`m${i}`)));
  for (let i = 0; i < n; i++) await nextFrame(b1);
  return { cluster, ra, rb, a1, b1 };
}

interface Family {
  type?: string;
  help?: string;
  samples: Array<{ name: string; labels: Record<string, string>; value: number }>;
}

/** Parse the Prometheus text format (0.0.4) strictly enough to check the naming rules. */
function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const family = (name: string) => {
    let f = families.get(name);
    if (f === undefined) families.set(name, (f = { samples: [] }));
    return f;
  };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta) {
      const f = family(meta[2]!);
      if (meta[1] === 'HELP') {
        assert.is(f.help, undefined, `# HELP ${meta[2]} given twice`);
        assert.ok(meta[3]!.trim().length > 0, `empty HELP for ${meta[2]}`);
        f.help = meta[3];
      } else {
        assert.is(f.type, undefined, `# TYPE ${meta[2]} given twice`);
        assert.match(meta[3]!, /^(counter|gauge|histogram|summary|untyped)$/);
        f.type = meta[3];
      }
      continue;
    }
    assert.not.ok(line.startsWith('#'), `unknown comment line: ${line}`);
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const l of (m![2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g)) labels[l[1]!] = l[2]!;
    const value = Number(m![3]);
    assert.ok(!Number.isNaN(value), `not a number: ${line}`);
    // Counters and gauges only here: the sample's name is its family's.
    const f = families.get(m![1]!);
    assert.ok(f?.type !== undefined, `sample before its # TYPE: ${line}`);
    f!.samples.push({ name: m![1]!, labels, value });
  }
  return families;
}

/** The rules promtool's linter and the Prometheus naming guide set, asserted without promtool. */
function assertNamingRules(families: Map<string, Family>): void {
  for (const [name, f] of families) {
    assert.ok(f.help !== undefined, `${name} has no HELP`);
    assert.ok(f.type !== undefined, `${name} has no TYPE`);
    assert.match(name, /^[a-z_:][a-z0-9_:]*$/, `${name} is not snake_case`);
    if (f.type === 'counter') assert.ok(name.endsWith('_total'), `counter ${name} does not end in _total`);
    else assert.not.ok(name.endsWith('_total'), `${f.type} ${name} ends in _total`);
    // Base units, spelled out: seconds and bytes, never sec/ms/msec/kb.
    assert.not.match(name, /_(sec|secs|ms|msec|millis|milliseconds|us|usec|kb|mb|kib|mib|minutes|hours)(_|$)/, `${name} uses an abbreviated or non-base unit`);
    assert.not.match(name, /_bytes_(?!total$)/, `${name}: the unit goes last (before _total)`);
    for (const s of f.samples) for (const label of Object.keys(s.labels)) assert.match(label, /^[a-z_][a-z0-9_]*$/, `label ${label} of ${name}`);
  }
}

const ops = suite('relay ops: metrics, health, readiness, logs');
ops.after.each(cleanupAll);

ops('GET /metrics: HELP and TYPE for every metric, _total only on counters, base units, build info, process metrics', async () => {
  const { ra, a1, b1 } = await twoHostsWithTraffic(5);
  const text = await ra.prometheus();
  const families = parseExposition(text);
  assertNamingRules(families);
  const one = (name: string, labels: Record<string, string> = {}) => {
    const f = families.get(name);
    assert.ok(f, `${name} is exported`);
    const s = f!.samples.find((x) => Object.entries(labels).every(([k, v]) => x.labels[k] === v));
    assert.ok(s, `${name}${JSON.stringify(labels)} has a sample`);
    return s!.value;
  };
  assert.is(families.get('shmbus_relay_uptime_seconds')?.type, 'gauge');
  assert.not.ok(families.has('shmbus_relay_uptime_sec'));
  assert.ok(one('shmbus_relay_uptime_seconds', { host: 'alpha' }) >= 0);
  assert.is(one('shmbus_relay_peer_frames_out_total', { host: 'alpha', peer: 'beta' }), 5);
  // 'm0'..'m4': 2 payload bytes each, with their headers.
  const sent = one('shmbus_relay_peer_sent_bytes_total', { host: 'alpha', peer: 'beta' });
  assert.ok(sent > 10, `${sent} bytes sent`);
  assert.is(sent, ((await ra.metrics()).peers.beta as Record<string, number>).bytesOut, 'the same figure as bytesOut in /metrics.json');
  assert.is(families.get('shmbus_relay_pending_bytes')?.type, 'gauge');
  // Build info: a gauge = 1 with version, node and protocol labels.
  const build = families.get('shmbus_build_info');
  assert.is(build?.type, 'gauge');
  assert.is(build!.samples.length, 1);
  const pkg = JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string };
  assert.equal(build!.samples[0]!.labels, { version: pkg.version, node: process.versions.node, protocol: '2' });
  assert.is(build!.samples[0]!.value, 1);
  // Process metrics, the standard names.
  assert.is(families.get('process_cpu_seconds_total')?.type, 'counter');
  assert.ok(one('process_cpu_seconds_total') > 0);
  assert.ok(one('process_resident_memory_bytes') > 1 << 20);
  const start = one('process_start_time_seconds');
  assert.ok(Math.abs(start - Date.now() / 1000) < 600, `process_start_time_seconds ${start} is a recent unix time`);
  assert.ok(one('process_open_fds') > 3);
  assert.ok(one('process_max_fds') >= one('process_open_fds'));
  // Readiness, as metrics too.
  assert.is(one('shmbus_relay_ready', { host: 'alpha' }), 1);
  assert.is(one('shmbus_relay_peer_up', { host: 'alpha', peer: 'beta' }), 1);
  // The JSON snapshot is unchanged (shmbus stat reads it).
  const json = (await ra.metrics()) as unknown as { uptimeSec: number; global: Record<string, number> };
  assert.type(json.uptimeSec, 'number');
  assert.type(json.global.uptimeSec, 'number');
  await a1.close();
  await b1.close();
});

ops('promtool check metrics accepts GET /metrics', async () => {
  const probe = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  if (probe.error !== undefined) {
    console.log('\nSKIPPED: promtool not installed (apt-get install prometheus); the naming rules are still checked by the test above');
    return;
  }
  const { ra, rb, a1, b1 } = await twoHostsWithTraffic(3);
  for (const relay of [ra, rb]) {
    const text = await relay.prometheus();
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 });
    assert.is(check.status, 0, `promtool check metrics on ${relay.host}: ${check.stdout}${check.stderr}`);
    assert.is(`${check.stdout}${check.stderr}`.trim(), '', 'no lint findings');
  }
  await a1.close();
  await b1.close();
});

ops('/healthz answers 200; /readyz is 200 with each peer unknown, then up once a link is (outgoing on the sender, incoming on the receiver), down when it breaks or cannot be made; shmbus stat shows it', async () => {
  const cluster = await makeCluster(['alpha', 'beta', 'gamma']);
  const [ra, rb] = await Promise.all([cluster.start('alpha'), cluster.start('beta')]);
  const health = await get(ra.metricsPort(), '/healthz');
  assert.is(health.status, 200);
  assert.equal(JSON.parse(health.body), { status: 'ok' });
  const before = await readyz(ra);
  assert.is(before.status, 200);
  assert.equal(before.body, {
    ready: true,
    status: 'ready',
    host: 'alpha',
    listening: true,
    configLoaded: true,
    peersUp: 0,
    peersDown: 0,
    peersTotal: 2,
    peers: { beta: { up: false, state: 'unknown', outgoing: 0, incoming: 0 }, gamma: { up: false, state: 'unknown', outgoing: 0, incoming: 0 } },
  });
  // Links are made when there is something to send.
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
  const b1 = await Bus.open({ name: 'b1', namespace: cluster.ns('beta'), dir: cluster.dir });
  assert.ok(a1.send('b1@beta', bytes('hi')));
  await nextFrame(b1);
  const after = await readyz(ra);
  assert.is(after.status, 200);
  assert.is(after.body.peersUp, 1);
  assert.equal(after.body.peers.beta, { up: true, state: 'up', outgoing: 1, incoming: 0 });
  assert.equal(after.body.peers.gamma, { up: false, state: 'unknown', outgoing: 0, incoming: 0 });
  // beta sees alpha's connection as an incoming link (it has sent nothing itself).
  let seen: ReadyBody | undefined;
  for (let i = 0; i < 100; i++) {
    seen = (await readyz(rb)).body;
    if (seen.peers.alpha?.up) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(seen!.peers.alpha, { up: true, state: 'up', outgoing: 0, incoming: 1 });
  assert.is(seen!.peersUp, 1);
  // gamma's relay is not running: a frame for it makes alpha try, and fail.
  assert.ok(a1.send('g1@gamma', bytes('waits')));
  await ra.event('connect_failed', 10_000, (e) => e.peer === 'gamma');
  const gammaDown = await readyz(ra);
  assert.equal(gammaDown.body.peers.gamma, { up: false, state: 'down', outgoing: 0, incoming: 0 });
  assert.is(gammaDown.body.peersDown, 1);
  // shmbus stat on alpha's namespace: the relay's peers with their states, and who is down.
  const stat = spawnSync(process.execPath, ['--import', 'tsx', SHMBUS_CLI, 'stat', '--namespace', cluster.ns('alpha'), '--dir', cluster.dir], { encoding: 'utf8', timeout: 30_000 });
  assert.is(stat.status, 0, stat.stderr);
  assert.match(stat.stdout, /peers up 1 of 2, down: gamma/);
  assert.match(stat.stdout, /^beta\s+up\s+1\s/m);
  assert.match(stat.stdout, /^gamma\s+down\s+\d+\s/m);
  const statJson = spawnSync(process.execPath, ['--import', 'tsx', SHMBUS_CLI, 'stat', '--namespace', cluster.ns('alpha'), '--dir', cluster.dir, '--json'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(JSON.parse(statJson.stdout)[0].relay.peerStates, { beta: 'up', gamma: 'down' });
  // The peer's relay stops: alpha's link goes down.
  assert.is(await rb.stop(), 0);
  await ra.event('peer_down', 10_000, (e) => e.peer === 'beta');
  const down = await readyz(ra);
  assert.is(down.status, 200, 'a peer down does not make the relay unready');
  assert.is(down.body.peersUp, 0);
  assert.is(down.body.peersDown, 2);
  assert.equal(down.body.peers.beta, { up: false, state: 'down', outgoing: 0, incoming: 0 });
  await a1.close();
  await b1.close();
});

ops('connect_failed is logged for failures 1, 2, 4, 8, ... of a streak (each counted), and the streak starts again once the peer was up', async () => {
  const cluster = await makeCluster(['alpha', 'beta'], { limits: { backoffInitialMs: 5, backoffMaxMs: 20, connectTimeoutMs: 500 } });
  const ra = await cluster.start('alpha');
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
  assert.ok(a1.send('b1@beta', bytes('waits')));
  let failures = 0;
  const end = Date.now() + 20_000;
  while ((failures = (await ra.metrics()).peers.beta!.connectFailures ?? 0) < 40) {
    assert.ok(Date.now() < end, `40 failed attempts to reach beta within 20 s (${failures})`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const lines = () => ra.events('connect_failed').filter((e) => e.peer === 'beta');
  const streak = lines().map((e) => e.failures);
  streak.forEach((n, i) => assert.is(n, 2 ** i, `line ${i} is failure ${2 ** i} of the streak: ${JSON.stringify(streak)}`));
  assert.ok(streak.length <= Math.floor(Math.log2(failures)) + 1 && streak.length >= 5, `${streak.length} lines for ${failures} failures`);
  // beta comes up: the frame arrives, the link is up; beta goes away again: a new streak, logged from 1.
  const rb = await cluster.start('beta');
  const b1 = await Bus.open({ name: 'b1', namespace: cluster.ns('beta'), dir: cluster.dir });
  assert.is(new TextDecoder().decode((await nextFrame(b1, 20_000)).payload), 'waits');
  await ra.event('peer_up', 10_000, (e) => e.peer === 'beta');
  const before = lines().length;
  await b1.close();
  assert.is(await rb.stop(), 0);
  assert.ok(a1.send('b1@beta', bytes('again')));
  await until(() => lines().length > before, 10_000, 'a failure after the peer went away');
  assert.is(lines()[before]!.failures, 1, 'a new streak');
  await a1.close();
});

ops('minLinks: 1 opens a link to every peer at start, without traffic, keeps it through the idle timeout, and reopens it when the peer comes back', async () => {
  const cluster = await makeCluster(['alpha', 'beta', 'gamma'], { limits: { minLinks: 1, idleTimeoutMs: 200, backoffInitialMs: 10, backoffMaxMs: 100 } });
  const [ra, rb] = await Promise.all([cluster.start('alpha'), cluster.start('beta')]);
  // No endpoint, no frame: the links are there anyway.
  const up = await readyzUntil(ra, (b) => b.peers.beta!.outgoing === 1 && b.peers.beta!.incoming === 1);
  assert.equal(up.body.peers.beta, { up: true, state: 'up', outgoing: 1, incoming: 1 }, "alpha's own link, and beta's kept link to alpha");
  assert.is(up.body.peers.gamma!.state, 'down', 'gamma is not running: its kept link keeps failing');
  // Several idle timeouts later the links are still up.
  await new Promise((r) => setTimeout(r, 800));
  assert.equal(ra.events('peer_idle_close'), [], 'a kept link is never closed for idleness');
  assert.is((await readyz(ra)).body.peers.beta!.outgoing, 1);
  // beta goes away and comes back: alpha reopens its link with nothing to send.
  assert.is(await rb.stop(), 0);
  await ra.event('peer_down', 10_000, (e) => e.peer === 'beta');
  const downs = ra.events('peer_up').filter((e) => e.peer === 'beta').length;
  await cluster.start('beta');
  await until(() => ra.events('peer_up').filter((e) => e.peer === 'beta').length > downs, 10_000, 'alpha reconnecting to the restarted beta');
  assert.is((await readyz(ra)).body.peers.beta!.state, 'up');
});

ops('/readyz: a link closed by the idle timeout leaves its peer idle (it was fine), not down', async () => {
  const cluster = await makeCluster(['alpha', 'beta'], { limits: { idleTimeoutMs: 300 } });
  const [ra] = await Promise.all([cluster.start('alpha'), cluster.start('beta')]);
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
  const b1 = await Bus.open({ name: 'b1', namespace: cluster.ns('beta'), dir: cluster.dir });
  assert.ok(a1.send('b1@beta', bytes('hi')));
  await nextFrame(b1);
  assert.is((await readyz(ra)).body.peers.beta!.state, 'up');
  await ra.event('peer_idle_close', 10_000, (e) => e.peer === 'beta');
  // The log line comes as the close begins; the socket's close follows.
  const idle = await readyzUntil(ra, (b) => b.peers.beta!.outgoing === 0);
  assert.equal(idle.body.peers.beta, { up: false, state: 'idle', outgoing: 0, incoming: 0 });
  assert.is(idle.body.peersDown, 0);
  // Traffic again: the link is made again, and the peer is up.
  assert.ok(a1.send('b1@beta', bytes('again')));
  assert.is(new TextDecoder().decode((await nextFrame(b1)).payload), 'again');
  assert.is((await readyz(ra)).body.peers.beta!.state, 'up');
  await a1.close();
  await b1.close();
});

ops('/readyz is 503 while the relay drains at shutdown (/healthz stays 200), and before start() completes', async () => {
  const cluster = await makeCluster(['alpha', 'beta']);
  // Before start: not ready (in-process: the window is too short to catch on a real process).
  const server = new TransitServer(loadConfig(cluster.configPath, 'alpha'), () => {});
  const early = server.readiness();
  assert.is(early.ready, false);
  assert.is(early.status, 'starting');
  assert.is(early.listening, false);
  const [ra, rb] = await Promise.all([cluster.start('alpha'), cluster.start('beta')]);
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
  // beta is gone: frames for it stay unacked, so SIGTERM drains for --drain-timeout-ms (2000 in the helper).
  assert.is(await rb.stop(), 0, `beta stopped cleanly: ${rb.lines.slice(-4).join(' | ')}`);
  for (let i = 0; i < 3; i++) assert.ok(a1.send('b1@beta', bytes(`w${i}`)));
  await until(() => ra.events('connect_failed').length > 0, 10_000, 'alpha trying to reach beta');
  const port = ra.metricsPort();
  assert.is((await get(port, '/readyz')).status, 200);
  ra.process.kill('SIGTERM');
  await ra.event('signal', 5000);
  let stopping: { status: number; body: string } | undefined;
  for (let i = 0; i < 100 && stopping === undefined; i++) {
    const r = await get(port, '/readyz');
    if (r.status === 503) stopping = r;
    else await new Promise((r) => setTimeout(r, 10));
  }
  assert.ok(stopping, '/readyz answered 503 during the drain');
  const body = JSON.parse(stopping!.body) as ReadyBody;
  assert.is(body.ready, false);
  assert.is(body.status, 'stopping');
  assert.is(body.listening, false);
  assert.is((await get(port, '/healthz')).status, 200, 'the process is still up');
  const exit = await ra.exited();
  assert.equal(exit, { code: 0, signal: null }, `alpha stopped cleanly: ${ra.lines.slice(-4).join(' | ')}`);
  await a1.close();
});

ops('every log line has a level (info, warn, error) and reasons are names, as in the API', async () => {
  const cluster = await makeCluster(['alpha', 'beta'], { limits: { ttlMs: 300, unknownGraceMs: 100 } });
  const [ra, rb] = await Promise.all([cluster.start('alpha'), cluster.start('beta')]);
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
  assert.ok(a1.send('nobody@beta', bytes('?')));
  assert.ok(a1.send('x@gamma', bytes('?')));
  await nextFrame(a1);
  await nextFrame(a1);
  // An unknown host knocking at beta: refused (warn).
  const sock = connect(cluster.port('beta'), '127.0.0.1');
  sock.on('error', () => {});
  sock.write(encodeHello(randomBytes(NONCE_LENGTH), 'mallory'));
  const refused = await rb.event('peer_refused');
  sock.destroy();
  assert.is(refused.level, 'warn');
  assert.is(refused.reason, 'unknown host');
  const undeliverable = await ra.event('undeliverable', 10_000, (e) => e.to === 'nobody@beta');
  assert.is(undeliverable.level, 'warn');
  assert.is(undeliverable.reason, 'UNKNOWN_DESTINATION');
  assert.is((await ra.event('undeliverable', 10_000, (e) => e.to === 'x@gamma')).reason, 'UNKNOWN_HOST');
  await a1.close();
  assert.is(await ra.stop(), 0);
  assert.is(await rb.stop(), 0);
  assert.is(ra.events('start')[0]!.level, 'info');
  assert.is(ra.events('stop')[0]!.level, 'info');
  for (const relay of [ra, rb]) {
    const events = jsonLines(relay.lines);
    assert.is(events.length, relay.lines.length, 'every stdout line is one JSON object');
    for (const e of events) {
      assert.ok(['info', 'warn', 'error'].includes(e.level as string), `level of ${JSON.stringify(e)}`);
      for (const key of ['reason', 'code', 'outcome']) {
        if (key in e && e[key] !== null) assert.type(e[key], 'string', `${key} of ${JSON.stringify(e)}`);
      }
    }
  }
  // A config error: level error.
  const bad = join(cluster.folder, 'bad.json');
  writeFileSync(bad, '{"hosts": 1}');
  const run = spawnSync(process.execPath, ['--import', 'tsx', RELAY_CLI, '--config', bad, '--host', 'alpha'], { encoding: 'utf8', timeout: 30_000 });
  assert.is(run.status, 78);
  const [line] = jsonLines(run.stdout.trim().split('\n'));
  assert.is(line!.event, 'config_error');
  assert.is(line!.level, 'error');
});

ops('a non-loopback metrics address given explicitly (0.0.0.0:0) is accepted and served', async () => {
  const cluster = await makeCluster(['alpha', 'beta']);
  const config = JSON.parse(readFileSync(cluster.configPath, 'utf8')) as { hosts: Record<string, { relay: string; metrics: string }> };
  config.hosts.alpha!.relay = '127.0.0.1:0';
  config.hosts.alpha!.metrics = '0.0.0.0:0';
  const path = join(cluster.folder, 'any-address.json');
  writeFileSync(path, JSON.stringify(config));
  const proc = spawn(process.execPath, ['--import', 'tsx', RELAY_CLI, '--config', path, '--host', 'alpha'], { stdio: ['ignore', 'pipe', 'pipe'] });
  registerCleanup(() => proc.kill('SIGKILL'));
  const exited = new Promise<number | null>((resolve) => proc.on('close', (code) => resolve(code)));
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await until(() => out.includes('"event":"start"') || proc.exitCode !== null, 15_000, 'the relay starting');
  const start = jsonLines(out.trim().split('\n')).find((e) => e.event === 'start');
  assert.ok(start, `started (exit ${proc.exitCode}): ${out} ${err}`);
  assert.match(String(start!.metrics), /^0\.0\.0\.0:\d+$/);
  // Bound on every address: reached here through loopback only (no traffic leaves the machine).
  const port = Number(String(start!.metrics).split(':')[1]);
  assert.is((await get(port, '/healthz')).status, 200);
  assert.is((await get(port, '/readyz')).status, 200);
  proc.kill('SIGTERM');
  assert.is(await deadline(exited, 10_000, 'the relay stopping'), 0);
});

ops.run();
