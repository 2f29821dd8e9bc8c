/**
 * Adding a host to a running cluster, as docs/OPERATIONS.md says to: start
 * the new host's relay with the new config, then restart the others one at a
 * time with SIGTERM — while a stream flows between the old hosts. Nothing of
 * the stream is lost or delivered twice, and the new host's frames, refused
 * by peers that do not know it yet, wait in its outbound inbox and arrive
 * once they do, in order.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Bus } from '../src/index';
import { cleanupAll, nextFrame, spawnChild } from './_helpers';
import { makeCluster } from './_helpers/cluster';

const FRAMES = 20_000;

const add = suite('relay: adding a host with a rolling restart');
add.after.each(cleanupAll);

add(`gamma joins alpha and beta while ${FRAMES} frames flow from alpha to beta: all arrive once, in order; gamma's frames wait and arrive`, async () => {
  const cluster = await makeCluster(['alpha', 'beta', 'gamma'], { limits: { ttlMs: 60_000, ackTimeoutMs: 70_000 } });
  // The cluster as it was: alpha and beta only.
  let ra = await cluster.start('alpha', [], { without: ['gamma'] });
  let rb = await cluster.start('beta', [], { without: ['gamma'] });
  const sink = spawnChild('sink', { dir: cluster.dir, ns: cluster.ns('beta'), name: 'sink', count: FRAMES, lingerMs: 1000 });
  await sink.line(/^ready$/);
  const producer = spawnChild('producer', { dir: cluster.dir, ns: cluster.ns('alpha'), name: 'p1', dest: 'sink@beta', count: FRAMES, id: 1, paceMs: 6000 });
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });

  // 1. gamma starts with the new config; its peers do not know it yet and refuse it.
  const rg = await cluster.start('gamma');
  const c1 = await Bus.open({ name: 'c1', namespace: cluster.ns('gamma'), dir: cluster.dir });
  for (let i = 0; i < 5; i++) assert.ok(c1.send('a1@alpha', `from gamma ${i}`));
  await ra.event('peer_refused', 15_000, (e) => e.claimed === 'gamma');
  assert.is(a1.recvFromLocal(), null, 'alpha does not accept gamma yet');

  // 2. Rolling restart with the new config: beta, then alpha, each drained with SIGTERM.
  assert.is(await rb.stop(), 0);
  rb = await cluster.start('beta');
  assert.is(await ra.stop(), 0);
  ra = await cluster.start('alpha');

  // 3. gamma's frames arrive, once, in order; the stream between the old hosts is whole.
  const got: string[] = [];
  for (let i = 0; i < 5; i++) {
    const f = await nextFrame(a1, 30_000, `gamma's frame ${i}`);
    assert.is(f.source, 'c1@gamma');
    got.push(new TextDecoder().decode(f.payload));
  }
  assert.equal(got, [0, 1, 2, 3, 4].map((i) => `from gamma ${i}`));
  assert.equal((await producer.exited(60_000)).code, 0, producer.stderr());
  assert.is(await sink.line(/^received /, 60_000), `received ${FRAMES} errors 0 1:${FRAMES}`);
  await new Promise((r) => setTimeout(r, 300));
  assert.is(a1.recvFromLocal(), null, "nothing more for a1: none of gamma's frames twice");
  const mg = await rg.metrics();
  assert.ok(mg.peers.alpha!.connects >= 1, 'gamma connected to alpha once alpha knew it');
  assert.ok(mg.peers.alpha!.connectFailures >= 1, 'and was refused before');
  await a1.close();
  await c1.close();
  for (const r of [ra, rb, rg]) assert.is(await r.stop(), 0);
});

add.run();
