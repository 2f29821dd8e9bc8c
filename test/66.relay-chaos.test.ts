/**
 * Relay chaos: both directions at once through two relays, while a driver
 * SIGKILLs and restarts a random relay at random instants and cuts the TCP
 * links through proxies. Every frame must arrive exactly once, in order per
 * (source, destination): the receivers count every frame and keep reading
 * after the last expected one, so a frame delivered twice is seen.
 *
 * Sizes: SHMBUS_CHAOS_FRAMES (frames per producer, default 34000: 3 producers
 * per host, both directions, 204 000 frames), SHMBUS_CHAOS_KILLS (relay kills,
 * default 10), SHMBUS_CHAOS_SEED (the driver's random seed; printed on failure).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cleanupAll, until, deadline, seededRandom, spawnChild } from './_helpers';
import { makeCluster, tcpProxy, type Cluster } from './_helpers/cluster';

const FRAMES = Number(process.env.SHMBUS_CHAOS_FRAMES ?? 34_000);
const KILLS = Number(process.env.SHMBUS_CHAOS_KILLS ?? 10);
/**
 * Producers spread their frames over KILLS × this, so that every kill lands mid-stream: a kill-and-restart
 * cycle takes 0.1-0.9 s of driver waits plus a relay start (over 1 s through tsx on a loaded 2-core machine;
 * at 1500 ms per kill, 2 of 20 loaded runs ended their stream after 8-9 kills).
 */
const PACE_PER_KILL_MS = 2000;
const SEED = Number(process.env.SHMBUS_CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const PRODUCERS = 3;

const chaos = suite('relay chaos');
chaos.after.each(cleanupAll);

chaos(`${PRODUCERS * 2 * FRAMES} frames both ways while relays are SIGKILLed ${KILLS} times and links cut: each exactly once, in order (seed ${SEED})`, async () => {
  const rand = seededRandom(SEED);
  let cluster: Cluster | null = null;
  const proxies = { alpha: await tcpProxy(() => cluster!.port('alpha')), beta: await tcpProxy(() => cluster!.port('beta')) };
  try {
    cluster = await makeCluster(['alpha', 'beta'], {
      limits: { ttlMs: 120_000, ackTimeoutMs: 130_000 },
      specs: { alpha: { dialPort: proxies.alpha.port }, beta: { dialPort: proxies.beta.port } },
    });
    const relays = { alpha: await cluster.start('alpha'), beta: await cluster.start('beta') };
    const total = PRODUCERS * FRAMES;
    const sinks = {
      alpha: spawnChild('sink', { dir: cluster.dir, ns: cluster.ns('alpha'), name: 'sink', count: total, lingerMs: 1500 }),
      beta: spawnChild('sink', { dir: cluster.dir, ns: cluster.ns('beta'), name: 'sink', count: total, lingerMs: 1500 }),
    };
    await Promise.all([sinks.alpha.line(/^ready$/), sinks.beta.line(/^ready$/)]);
    const producers = [];
    for (const [from, to] of [['alpha', 'beta'], ['beta', 'alpha']] as const) {
      for (let id = 1; id <= PRODUCERS; id++) {
        producers.push(spawnChild('producer', { dir: cluster.dir, ns: cluster.ns(from), name: `p${id}`, dest: `sink@${to}`, count: FRAMES, id, paceMs: KILLS * PACE_PER_KILL_MS }));
      }
    }
    const finished = Promise.all(producers.map((p) => p.exited(300_000)));
    let producersDone = false;
    void finished.then(() => (producersDone = true));

    // The driver: kill a random relay at a random instant, restart it; now and then cut both links.
    let kills = 0;
    let cuts = 0;
    const log: string[] = [];
    while (kills < KILLS) {
      await new Promise((r) => setTimeout(r, 100 + rand() * 500));
      if (producersDone) break;
      const host = rand() < 0.5 ? 'alpha' : 'beta';
      await relays[host].kill();
      kills++;
      log.push(`kill ${host}`);
      // Sometimes the relay stays down a while (frames pile up in its lanes), sometimes it is back at once.
      if (rand() < 0.3) await new Promise((r) => setTimeout(r, rand() * 300));
      relays[host] = await cluster.start(host);
      if (kills % 3 === 0) {
        // Cut when the links are up again (a restarted relay's peers reconnect on demand, after a backoff).
        await until(() => proxies.alpha.open() + proxies.beta.open() > 0 || producersDone, 10_000, 'a link up to cut');
        const sockets = proxies.alpha.cut() + proxies.beta.cut();
        cuts += sockets > 0 ? 1 : 0;
        log.push(`cut ${sockets} sockets`);
      }
    }
    const exits = await deadline(finished, 300_000, 'producers done');
    for (const [k, e] of exits.entries()) assert.equal(e.code, 0, `producer ${k}: ${producers[k]!.stderr()}`);
    const expect = Array.from({ length: PRODUCERS }, (_, k) => `${k + 1}:${FRAMES}`).join(' ');
    for (const host of ['alpha', 'beta'] as const) {
      const line = await sinks[host].line(/^received /, 300_000);
      assert.is(line, `received ${total} errors 0 ${expect}`, `sink on ${host} (seed ${SEED}, ${log.join(', ')}):\n${sinks[host].lines.join('\n')}`);
    }
    assert.ok(kills >= KILLS, `the driver killed a relay ${kills} times mid-stream (seed ${SEED}); raise SHMBUS_CHAOS_FRAMES if the stream ended first`);
    const metrics = await Promise.all([relays.alpha.metrics(), relays.beta.metrics()]);
    assert.ok(cuts >= 1 || kills < 3, `links were cut (${log.join(', ')})`);
    for (const m of metrics) assert.is(m.global.intentsUnknown ?? 0, 0, 'no delivery intent left unsettled');
    for (const host of ['alpha', 'beta'] as const) assert.is(await relays[host].stop(), 0);
  } finally {
    proxies.alpha.close();
    proxies.beta.close();
  }
});

chaos.run();
