/**
 * The transit relay as a full mesh (issue 9): N hosts (8 by default) in Linux
 * network namespaces joined by one bridge, one transit-server per host; every
 * host runs one sink and one producer, and each producer sends K frames to the
 * sink of every other host, all streams at once (N × (N−1) streams). Every
 * sink must read every frame exactly once and in order per producer (= per
 * source host); nothing twice (the sink lingers to see extra frames).
 *
 * The first test is the driver the mesh benchmark runs too
 * (harness/mesh-run.ts; `npm run bench -- mesh --hosts 36`): it reports time to
 * full mesh (links open on demand, so this is from relay start until traffic
 * has crossed every pair), frames/s across the mesh, per-relay RSS, CPU, fds,
 * TCP links and log lines, and the relay counters; it checks /readyz, that
 * the idle timeout closes every link after the stream, clean stops, and that
 * nothing of the run is left: no namespace, no link, no process, no shm file.
 *
 * Needs root (CI runs as root, and must run it). Otherwise one test passes
 * after printing `SKIPPED: <reason>`.
 *
 * Traffic goes only to the hosts' addresses (169.254.<k>.<i>/16, which exist
 * only inside the run's namespaces) and to each namespace's loopback. Every
 * load loop is bounded in frames (K per stream) and time (deadlines).
 *
 * A second test runs the same mesh with faults while producers are paced
 * (SHMBUS_MESH_FAULT_FRAMES per stream over SHMBUS_MESH_PACE_MS): one host's
 * veth down for 2 s and back, one relay SIGKILLed and restarted, one host
 * whose relay starts only once the others are streaming (their frames to it
 * wait; its /readyz and theirs report the full mesh once it is up). Every
 * frame still once and in order at every sink.
 *
 * SHMBUS_MESH_HOSTS sets N (default 8), SHMBUS_MESH_FRAMES sets K (default 500).
 */
import { suite } from 'uvu';
import { setTimeout as sleep } from 'node:timers/promises';
import * as assert from 'uvu/assert';
import { cleanupAll, deadline } from './_helpers';
import { MAX_MESH_HOSTS, makeMesh, meshLeftovers, spawnMeshProducer, spawnMeshSink, watchReadyz, writeMeshCluster, type Mesh, type MeshHost } from '../harness/mesh';
import { coldStartMesh, describeMeshRun, runMesh } from '../harness/mesh-run';
import { nodeScript } from '../harness/netns';
import { netnsAvailability, reportSkipped, netnsList, startRelayIn, type NetnsCluster, type NsProcess, type NsRelay } from './_helpers/netns';

const N = Number(process.env.SHMBUS_MESH_HOSTS ?? 8);
const K = Number(process.env.SHMBUS_MESH_FRAMES ?? 500);
/** Relay port on every host's address (each namespace has its own ports). */
const PORT = 7411;
const POOL = 2;
const FAULT_K = Number(process.env.SHMBUS_MESH_FAULT_FRAMES ?? 600);
const PACE_MS = Number(process.env.SHMBUS_MESH_PACE_MS ?? 7000);
const CUT_MS = 2000;
/**
 * limits.idleTimeoutMs of the first test: its links must all be closed this
 * long after the stream, and none before the last sink is done (sinks finish
 * seconds apart at larger N, so it grows with N).
 */
const IDLE_MS = Math.max(3000, N * 500);
const LIMITS = { poolSize: POOL, ttlMs: 60_000, ackTimeoutMs: 70_000, connectTimeoutMs: 2000, handshakeTimeoutMs: 2000, backoffInitialMs: 20, backoffMaxMs: 500 };

const availability = netnsAvailability();

const mesh = suite(`relay: ${N} hosts in network namespaces on a bridge, a full mesh`);
mesh.after.each(cleanupAll);

if (!availability.ok) {
  mesh('skipped: network namespaces are not available here', () => reportSkipped(availability));
} else {
  /** Every mesh made (and its cluster), for the leftovers check at the end. */
  const runs: Array<{ mesh: Mesh; cluster: NetnsCluster | null }> = [];
  const track = (m: Mesh) => (runs.push({ mesh: m, cluster: null }), m);
  const tracked = (c: NetnsCluster) => ((runs.at(-1)!.cluster = c), c);

  const lastNumber = (line: string) => Number(line.trim().split(/\s+/).at(-1));

  mesh(`${N} hosts, ${K} frames on each of the ${N * (N - 1)} streams, all at once: every frame once, in order`, async () => {
    if (!Number.isInteger(N) || N < 2 || N > MAX_MESH_HOSTS) throw new Error(`SHMBUS_MESH_HOSTS must be an integer in 2..${MAX_MESH_HOSTS}; it is ${process.env.SHMBUS_MESH_HOSTS}`);
    if (!Number.isInteger(K) || K < 1 || K > 1_000_000) throw new Error(`SHMBUS_MESH_FRAMES must be an integer in 1..1000000; it is ${process.env.SHMBUS_MESH_FRAMES}`);
    const began = Date.now();
    // Idle links close after IDLE_MS: checked after the stream.
    const result = await runMesh({ hosts: N, frames: K, port: PORT, limits: { ...LIMITS, idleTimeoutMs: IDLE_MS }, streamMs: 120_000, idleCloseMs: IDLE_MS + 1500 });
    console.log(['', ...describeMeshRun(result), `test ${Date.now() - began} ms`].map((l) => `  ${l}`).join('\n'));
    // Every frame once and in order at every sink, every relay's counters agreeing, /readyz full, clean stops, nothing left.
    assert.equal(result.problems, [], 'the mesh run had no problem');
    for (const row of result.rows) {
      // At least one link per peer (outgoing or incoming); at most a full pool each way.
      assert.ok(row.tcp >= N - 1 && row.tcp <= 2 * POOL * (N - 1), `${row.host}: ${row.tcp} relay connections, expected ${N - 1}..${2 * POOL * (N - 1)}`);
      assert.is(row.tcpAfterIdle, 0, `${row.host}: the idle timeout closed every link`);
      assert.ok(row.fullAtMs !== null && row.peersReached === N - 1, `${row.host} reached every peer`);
    }
  });

  mesh(`${N} hosts, ${FAULT_K} frames per stream paced over ${PACE_MS} ms, with faults: a link down ${CUT_MS} ms, a relay SIGKILLed and restarted, a host started late`, async () => {
    if (!Number.isInteger(FAULT_K) || FAULT_K < 50 || !Number.isInteger(PACE_MS) || PACE_MS < 4000) throw new Error('SHMBUS_MESH_FAULT_FRAMES must be ≥ 50 and SHMBUS_MESH_PACE_MS ≥ 4000: the faults need a stream that lasts');
    if (N < 4) throw new Error('the fault test needs SHMBUS_MESH_HOSTS ≥ 4');
    const began = Date.now();
    const m = track(await makeMesh(N));
    const c = tracked(writeMeshCluster(m, PORT, LIMITS));
    const hosts = m.hosts;
    // The host whose link is cut, the one whose relay is killed, the one started late (the last).
    const [cutH, killH, lateH] = [hosts[1]!, hosts[2]!, hosts[N - 1]!];
    const early = hosts.filter((h) => h !== lateH);
    const perSink = (N - 1) * FAULT_K;
    const STEP = 25;
    const progressOf = (s: NsProcess) => Math.max(0, ...s.lines.filter((l) => l.startsWith('progress ')).map(lastNumber));
    const metricsOf = async (rs: Array<NsRelay | undefined>) => Promise.all(rs.map((r) => (r === undefined ? null : r.metrics())));
    /** Sum of a peer counter over relays: of every peer link (peer undefined) or of the links to one peer. */
    const total = (ms: Array<Awaited<ReturnType<NsRelay['metrics']>> | null>, key: string, peer?: string) =>
      ms.reduce((a, x) => a + (x === null ? 0 : Object.entries(x.peers).reduce((b, [name, p]) => b + (peer === undefined || name === peer ? (p[key] ?? 0) : 0), 0)), 0);
    const producer = (h: MeshHost) => spawnMeshProducer(h, { dir: c.dirOf(h.name), ns: c.ns(h.name), name: 'src', id: h.index, dests: hosts.filter((o) => o !== h).map((o) => `sink@${o.name}`), count: FAULT_K, deadlineMs: 90_000, paceMs: PACE_MS });

    // Every relay but the late host's; every sink (the late host's too: its relay finds it registered when it starts).
    const relays: Array<NsRelay | undefined> = [...(await Promise.all(early.map((h) => startRelayIn(h.netns, h.name, c.configPath, 60_000)))), undefined];
    const relayStart = Date.now();
    const watchers = early.map((h, i) => watchReadyz(h, relays[i]!, N - 1, 90_000, m.prefix));
    const sinks = hosts.map((h) => spawnMeshSink(h, { dir: c.dirOf(h.name), ns: c.ns(h.name), name: 'sink', count: perSink, lingerMs: 300, progressEvery: STEP, deadlineMs: 150_000 }));
    await Promise.all(sinks.map((s) => s.line(/^ready$/, 60_000)));
    const producers: NsProcess[] = early.map(producer);
    // Streaming: every early sink has read its first frames.
    await Promise.all(early.map((_, i) => sinks[i]!.line(/^progress /, 30_000)));
    const streaming = Date.now();

    // Fault 1: the cut host's veth down for CUT_MS, then up. In the second half nothing may reach its sink.
    const sinkCut = sinks[cutH.index - 1]!;
    const atCut = progressOf(sinkCut);
    let atMid = atCut;
    let atHeal = atCut;
    try {
      m.ip(['-n', cutH.netns, 'link', 'set', cutH.veth, 'down']);
      assert.match(m.ip(['-n', cutH.netns, '-o', 'link', 'show', cutH.veth]), /state DOWN/, `${cutH.veth} down during the cut`);
      await sleep(CUT_MS / 2);
      atMid = progressOf(sinkCut);
      await sleep(CUT_MS / 2);
      atHeal = progressOf(sinkCut);
    } finally {
      m.ip(['-n', cutH.netns, 'link', 'set', cutH.veth, 'up']);
    }
    await cutH.linkUp();
    const healed = Date.now();
    assert.is(atHeal, atMid, `${cutH.name}'s sink kept receiving in the second half of the cut (${atMid} -> ${atHeal}): the cut did not cut`);
    assert.ok(atHeal < perSink - STEP, `the stream to ${cutH.name} had ended before the link came back (${atHeal} of ${perSink}): raise SHMBUS_MESH_PACE_MS`);
    await sinkCut.line(new RegExp(`^progress ${atHeal + 2 * STEP}$`), 30_000);
    const afterCut = await metricsOf(relays);

    // Fault 2: the kill host's relay SIGKILLed mid-stream and restarted in its namespace.
    const ki = killH.index - 1;
    const killed = relays[ki]!;
    const beforeKill = await metricsOf(relays);
    const atKill = progressOf(sinks[ki]!);
    process.kill(killed.pid, 'SIGKILL');
    const died = await killed.proc.exited(10_000);
    assert.ok(died.signal === 'SIGKILL' || died.code === 128 + 9, `${killH.name}'s relay died of SIGKILL (${JSON.stringify(died)})`);
    await sleep(300);
    const restartAt = Date.now();
    relays[ki] = await startRelayIn(killH.netns, killH.name, c.configPath, 30_000);
    watchers[ki] = watchReadyz(killH, relays[ki]!, N - 1, 90_000, m.prefix);
    assert.ok(atKill < perSink - STEP, `the stream to ${killH.name} had ended before the kill (${atKill} of ${perSink}): raise SHMBUS_MESH_PACE_MS`);

    // Fault 3: the late host. Nothing reached its sink meanwhile; nobody's /readyz reported the full mesh.
    assert.is(sinks[N - 1]!.lines.filter((l) => l.startsWith('progress ')).length, 0, `${lateH.name}'s sink received frames before its relay ran`);
    for (const [i, w] of watchers.entries()) assert.is(w.lines.find((l) => l.startsWith('full ')), undefined, `${hosts[i]!.name}'s /readyz reported ${N - 1} peers up before ${lateH.name} ran`);
    // The first host's view of the late one, as an operator sees it: /readyz and `shmbus stat` (run inside its namespace, where its relay's metrics port is).
    const first = hosts[0]!;
    const firstReady = (await relays[0]!.get('/readyz')) as { peersDown: number; peers: Record<string, { state: string }> };
    assert.is(firstReady.peers[lateH.name]!.state, 'down', `${first.name}'s /readyz shows ${lateH.name} down`);
    assert.ok(firstReady.peersDown >= 1);
    const stat = await first.exec(process.execPath, [...nodeScript('src/cli'), 'stat', '--namespace', c.ns(first.name), '--dir', c.dirOf(first.name), '--wide'], 30_000);
    assert.match(stat, new RegExp(`down: (\\S+ )*${lateH.name}\\b`), `shmbus stat names ${lateH.name} down:\n${stat}`);
    assert.match(stat, new RegExp(`^${lateH.name}\\s+down\\s`, 'm'), `shmbus stat's row for ${lateH.name}:\n${stat}`);
    const lateStart = Date.now();
    relays[N - 1] = await startRelayIn(lateH.netns, lateH.name, c.configPath, 30_000);
    watchers.push(watchReadyz(lateH, relays[N - 1]!, N - 1, 90_000, m.prefix));
    producers.push(producer(lateH));

    const received = await deadline(Promise.all(sinks.map((s) => s.line(/^received /, 90_000).then((line) => ({ line, at: Date.now() })))), 95_000, 'every sink receiving all its frames');
    for (const [i, p] of producers.entries()) assert.equal((await p.exited(30_000)).code, 0, `producer of ${hosts[i]!.name}: ${p.lines.join(' | ')} ${p.stderr().slice(-800)}`);
    hosts.forEach((h, i) => {
      const expected = `received ${perSink} errors 0 ${hosts
        .filter((o) => o !== h)
        .map((o) => `${o.index}:${FAULT_K}`)
        .join(' ')}`;
      assert.is(received[i]!.line, expected, `sink of ${h.name}: ${sinks[i]!.lines.filter((l) => !l.startsWith('progress ')).join('\n')}`);
    });
    for (const [i, s] of sinks.entries()) assert.is((await s.exited(10_000)).code, 0, `sink of ${hosts[i]!.name}: ${s.stderr().slice(-800)}`);
    const full = await Promise.all(watchers.map((w, i) => w.line(/^full /, 30_000).then(lastNumber, (err: Error) => Promise.reject(new Error(`${hosts[i]!.name}: ${w.lines.join(' | ')}: ${err.message}`)))));
    const producerStarts = (await Promise.all(producers.map((p) => p.line(/^start /)))).map(lastNumber);
    const end = await metricsOf(relays);

    // Each fault happened and was recovered from.
    assert.ok(lateStart > Math.max(...producerStarts.slice(0, N - 1)) && lateStart > streaming, `${lateH.name}'s relay started after the others were streaming`);
    full.forEach((at, i) => assert.ok(at >= lateStart, `${hosts[i]!.name}'s /readyz reported the full mesh only after ${lateH.name} started`));
    const lateReady = end[N - 1]!;
    const lateFull = full[N - 1]! - lateStart;
    assert.ok(total(end.slice(0, N - 1), 'connectFailures', lateH.name) > 0, `the others failed to connect to ${lateH.name} before it ran (their frames waited)`);
    assert.ok(total(end, 'reconnects', killH.name) > total(beforeKill, 'reconnects', killH.name), `the others reconnected to the restarted ${killH.name}`);
    const cutActivity = (x: typeof end) => total(x, 'reconnects', cutH.name) + total(x, 'resends', cutH.name) + total(x, 'connectFailures', cutH.name) + total([x[cutH.index - 1]!], 'reconnects') + total([x[cutH.index - 1]!], 'resends');
    for (const [i, x] of end.entries()) {
      const h = hosts[i]!;
      if (i !== ki) assert.is(x!.global.delivered, perSink, `${h.name} delivered each of its sink's frames once`);
      else assert.ok(x!.global.delivered <= perSink, `${h.name} (restarted) delivered at most its sink's frames`);
      if (i !== ki) assert.is(total([x], 'framesOut') - total([x], 'resends'), perSink, `${h.name} sent each of its producer's frames once, plus resends`);
    }
    console.log(
      [
        '',
        `  faults: ${N} relays, ${N * (N - 1)} streams of ${FAULT_K} frames paced over ${PACE_MS} ms; streaming ${streaming - relayStart} ms after relay start`,
        `  link cut: ${cutH.name} down ${CUT_MS} ms (its sink at ${atCut} -> ${atMid} -> ${atHeal} of ${perSink}), healed ${healed - streaming} ms into the stream; reconnects+resends+connectFailures around ${cutH.name}: ${cutActivity(afterCut)}`,
        `  kill: ${killH.name}'s relay SIGKILLed with its sink at ${atKill} of ${perSink}, restarted, its /readyz full ${full[ki]! - restartAt} ms after the restart; others' reconnects to it ${total(beforeKill, 'reconnects', killH.name)} -> ${total(end, 'reconnects', killH.name)}, resends to it ${total(beforeKill, 'resends', killH.name)} -> ${total(end, 'resends', killH.name)}; its duplicates dropped ${end[ki]!.global.duplicates ?? 0}`,
        `  late: ${lateH.name}'s relay started ${lateStart - streaming} ms after streaming began; its /readyz reported ${N - 1} peers up ${lateFull} ms later (delivered ${lateReady.global.delivered}); connect failures to it meanwhile ${total(end.slice(0, N - 1), 'connectFailures', lateH.name)}`,
        `  last sink done ${Math.max(...received.map((r) => r.at)) - Math.min(...producerStarts)} ms after the first send; test ${Date.now() - began} ms`,
      ].join('\n'),
    );

    const codes = await Promise.all(relays.map((r) => r!.stop(30_000)));
    relays.forEach((r, i) => assert.is(codes[i], 0, `${r!.host}: ${r!.proc.lines.slice(-5).join('\n')} ${r!.proc.stderr().slice(-500)}`));
    for (const r of relays) assert.equal(r!.events('stop')[0], { ...r!.events('stop')[0], clean: true, unacked: 0, pending: 0 }, `${r!.host} stopped clean`);
    assert.equal(c.segments(), [], 'no segment left');
  });

  mesh(`${N} relays with minLinks 1 and no application: a cold start reaches the full mesh (every relay linked to every peer), two links per pair`, async () => {
    const cold = await coldStartMesh({ hosts: N, port: PORT, limits: { connectTimeoutMs: 2000, handshakeTimeoutMs: 2000, backoffInitialMs: 20, backoffMaxMs: 500 }, deadlineMs: 60_000 });
    console.log(`\n  cold start: ${N} relays started in ${cold.relaysStartMs} ms, full mesh ${cold.fullMeshMs} ms after spawning them; ${cold.connectFailures} connect failures; ${cold.tcpPerRelay.toFixed(1)} TCP links per relay`);
    assert.equal(cold.problems, [], 'the cold start had no problem');
    assert.ok(cold.fullMeshMs !== null, 'full mesh reached');
    // Each relay keeps one link to each peer, and each peer one to it.
    assert.is(cold.tcpPerRelay, 2 * (N - 1), 'two links per pair, one each way');
  });

  mesh('nothing of the run is left: no namespace, link, process or shm file', () => {
    // cleanupAll ran after the tests above, whether they passed or failed.
    if (runs.length === 0) {
      assert.equal(
        netnsList().filter((n) => n.startsWith(`shmbus-${process.pid}-`)),
        [],
        'no network namespace of this run is left',
      );
      return;
    }
    for (const r of runs) assert.equal(meshLeftovers(r.mesh, r.cluster), [], `nothing of the run ${r.mesh.prefix} is left`);
  });
}

mesh.run();
