/**
 * Many processes, one inbox: ordering and exactly-once under real
 * concurrency, producers killed mid-stream or in the middle of writing a
 * message, parking across processes, takeover of a dead owner's name.
 *
 * "Loses nothing it committed" is checked against the producer's own count:
 * a producer that exits reports how many sends returned true; a producer
 * that is killed is first stopped, and its lane's published position (which
 * only it writes) is read before the kill: exactly that many frames must
 * arrive, nothing after them.
 *
 * SHMBUS_STRESS_FRAMES sets the frames per producer of the first test (default 250000).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Bus } from '../src/index';
import { gc, inspectNamespace } from '../src/stat';
import { busContext, cleanupAll, deadline, filesIn, spawnChild, until, type Child } from './_helpers';
import { FrameChecker, drainUntil, endpointReport, parseDoneLine, parseLaneLine, processState } from './_helpers/child';

const FRAMES = Number(process.env.SHMBUS_STRESS_FRAMES ?? 250_000);

const context = busContext;

/**
 * Stop `child`, read the published position of its lane (only its owner
 * writes it, and the owner is stopped), then SIGKILL it. Returns that tail.
 */
async function stopReadKill(child: Child, dir: string, ns: string, dest: string, lane: number): Promise<number> {
  const pid = child.process.pid!;
  child.process.kill('SIGSTOP');
  await until(() => processState(pid) === 'T', 5000, `pid ${pid} stopped`);
  const snapshot = endpointReport(dir, ns, dest).lanesInUse[lane]!;
  assert.is(snapshot.owner.pid, pid, `lane ${lane} is the stopped producer's`);
  child.process.kill('SIGKILL');
  assert.is((await child.exited()).signal, 'SIGKILL');
  return snapshot.tail;
}

const stress = suite('cross-process: many producers, one inbox');
stress.after.each(cleanupAll);

stress(`4 producers x ${FRAMES} frames: each producer's sent count arrives exactly once and in order`, async () => {
  const { dir, ns, open } = context();
  const sink = open('sink', { capacity: 1024, slotSize: 64 });
  const producers = [0, 1, 2, 3].map((id) => spawnChild('producer', { dir, ns, name: `p${id}`, dest: 'sink', count: FRAMES, id, onFull: 'wait' }));
  const checker = new FrameChecker();
  await drainUntil(sink, checker, () => checker.total >= 4 * FRAMES, 150_000, 'all frames');
  for (const [id, p] of producers.entries()) {
    assert.equal(await p.exited(30_000), { code: 0, signal: null }, p.stderr());
    assert.equal(parseDoneLine(await p.line(/^done /)).sent, FRAMES, `producer ${id}'s own count`);
  }
  assert.is(checker.errorCount, 0, checker.summary());
  assert.is(checker.total, 4 * FRAMES);
  for (let id = 0; id < 4; id++) assert.is(checker.count(id), FRAMES, `producer ${id}`);
  assert.is(sink.recvFromLocal(), null, 'nothing extra');
  const stats = sink.stats();
  assert.is(stats.received, 4 * FRAMES);
  assert.is(stats.corrupt, 0);
  assert.is(stats.corruptLanes, 0);
  assert.is(stats.laneTakes, 4, 'one lane per producer');
  assert.is(stats.laneReuses, 0);
  assert.is(stats.depth, 0);
  await sink.close();
  assert.equal(filesIn(dir), []);
});

const crashes = suite('cross-process: crashes');
crashes.after.each(cleanupAll);

crashes('a producer SIGKILLed mid-stream loses nothing it published; a new process takes its lane over', async () => {
  const { dir, ns, open } = context();
  // One lane: the successor can only send through the dead producer's lane.
  const sink = open('sink', { capacity: 1024, slotSize: 64, lanes: 1 });
  const victim = spawnChild('producer', { dir, ns, name: 'victim', dest: 'sink', count: 50_000_000, id: 1, reportLane: true, checkpointEvery: 1000 });
  const checker = new FrameChecker();
  await drainUntil(sink, checker, () => checker.total >= 20_000, 30_000, 'first 20000 frames');
  const { lane, base, slots } = parseLaneLine(await victim.line(/^lane /));
  assert.equal([lane, base, slots], [0, 0, 1]);
  const tail = await stopReadKill(victim, dir, ns, 'sink', lane);
  const published = (tail - base) >>> 0;
  const lastReported = Math.max(...victim.lines.filter((l) => l.startsWith('committed ')).map((l) => Number(l.slice(10))));
  assert.ok(published >= lastReported && lastReported >= 20_000, `published ${published}, last committed line ${lastReported}`);
  await drainUntil(sink, checker, () => checker.count(1) >= published, 30_000, `the victim's ${published} published frames`);
  assert.is(sink.stats().laneTakes, 1);
  const successor = spawnChild('producer', { dir, ns, name: 'successor', dest: 'sink', count: 1000, id: 2, reportLane: true });
  await drainUntil(sink, checker, () => checker.count(2) === 1000, 30_000, "the successor's frames");
  assert.equal(await successor.exited(), { code: 0, signal: null }, successor.stderr());
  // The successor wrote on from the victim's published position, over whatever it left unpublished.
  assert.equal(parseLaneLine(await successor.line(/^lane /)), { lane: 0, base: tail, slots: 1 });
  assert.is(checker.errorCount, 0, checker.summary());
  assert.is(checker.count(1), published, 'exactly what the victim published: nothing lost, nothing after');
  assert.is(checker.total, published + 1000);
  assert.is(sink.recvFromLocal(), null);
  const stats = sink.stats();
  assert.equal([stats.laneTakes, stats.laneReuses, stats.corrupt, stats.corruptLanes], [2, 1, 0, 0]);
  assert.is(endpointReport(dir, ns, 'sink').lanesInUse[0]!.owner.state, 'free', 'the successor gave the lane back when it closed');
});

crashes('a producer killed while writing a long message publishes none of it; the next owner writes over it', async () => {
  const { dir, ns, open } = context();
  const sink = open('sink', { capacity: 64, slotSize: 64, lanes: 1 });
  const dead = spawnChild('scribble-and-die', { dir, ns, name: 'dead', dest: 'sink', count: 10, id: 1, slots: 3 });
  assert.is((await dead.exited()).signal, 'SIGKILL');
  assert.match(dead.lines.join('\n'), /^scribbled lane 0 tail 10 slots 3$/m, dead.stderr());
  const checker = new FrameChecker();
  await drainUntil(sink, checker, () => checker.count(1) === 10, 10_000, 'the ten published frames');
  assert.is(sink.recvFromLocal(), null, 'the unpublished message is not read');
  const next = spawnChild('producer', { dir, ns, name: 'next', dest: 'sink', count: 500, id: 7, payloadSize: 100 });
  checker.sizes.set(7, 100);
  await drainUntil(sink, checker, () => checker.count(7) === 500, 20_000, 'frames written over the dead producer');
  assert.equal(await next.exited(), { code: 0, signal: null }, next.stderr());
  assert.is(checker.errorCount, 0, checker.summary());
  assert.is(checker.total, 510);
  const stats = sink.stats();
  assert.equal([stats.laneReuses, stats.corrupt, stats.corruptLanes], [1, 0, 0]);
});

crashes("a dead owner's name is taken over, with the frames that waited in its inbox", async () => {
  const { dir, ns, open } = context();
  const owner = spawnChild('owner', { dir, ns, name: 'svc' });
  await owner.line(/^ready$/);
  const client = open('client');
  assert.ok(client.sendToLocal('svc', new TextEncoder().encode('queued-1')));
  assert.ok(client.sendToLocal('svc', new TextEncoder().encode('queued-2')));
  try {
    await Bus.open({ name: 'svc', namespace: ns, dir });
    assert.unreachable('the name is in use while its owner lives');
  } catch (err) {
    assert.is((err as { code?: string }).code, 'ERR_SHMBUS_NAME_IN_USE');
  }
  owner.process.kill('SIGKILL');
  await owner.exited();
  // While the dead owner's inbox has room, frames wait there for a successor.
  assert.ok(client.sendToLocal('svc', new TextEncoder().encode('queued-3')));
  const successor = open('svc');
  const texts = [1, 2, 3].map(() => new TextDecoder().decode(successor.recvFromLocal()!.payload));
  assert.equal(texts, ['queued-1', 'queued-2', 'queued-3']);
  assert.ok(client.sendToLocal('svc', new TextEncoder().encode('to the successor')));
  assert.is(new TextDecoder().decode(successor.recvFromLocal()!.payload), 'to the successor');
  await successor.close();
  await client.close();
  assert.equal(filesIn(dir), []);
});

crashes('a full lane whose inbox owner died is ERR_SHMBUS_DESTINATION_DEAD, not a silent false forever', async () => {
  const { dir, ns, open } = context();
  const owner = spawnChild('owner', { dir, ns, name: 'svc' });
  await owner.line(/^ready$/);
  const client = open('client');
  let sent = 0;
  while (client.sendToLocal('svc', Uint8Array.of(1))) sent++;
  assert.is(sent, 1024, "filled the lane (default capacity); the owner is alive so the refusal was a plain false");
  owner.process.kill('SIGKILL');
  await owner.exited();
  // Liveness is re-checked at most every 100 ms per destination (refusals stay cheap), so retry until it is.
  let code = '';
  await until(() => {
    try {
      assert.is(client.sendToLocal('svc', Uint8Array.of(2)), false);
      return false;
    } catch (err) {
      code = (err as { code?: string }).code ?? String(err);
      return true;
    }
  }, 5000, 'the refusal naming the dead owner');
  assert.is(code, 'ERR_SHMBUS_DESTINATION_DEAD');
  await client.close();
  const report = gc(dir, ns);
  assert.equal(report.reaped.map((r) => [r.name, r.unread]), [['svc', 1024]]);
  assert.equal(filesIn(dir), []);
});

const wake = suite('cross-process: doorbell');
wake.after.each(cleanupAll);

wake('a parked receiver in another process is woken by the futex doorbell, round after round', async () => {
  const { dir, ns, open } = context();
  const echo = spawnChild('echo', { dir, ns, name: 'echo', count: 20 });
  await echo.line(/^ready$/);
  const me = open('me');
  const echoReport = () => inspectNamespace(dir, ns)!.endpoints.find((e) => e.name === 'echo')!;
  for (let round = 0; round < 20; round++) {
    await until(() => echoReport().parked, 5000, `echo parked before round ${round}`);
    assert.ok(me.sendToLocal('echo', Uint8Array.of(round, 1, 2, 3)));
    const reply = await deadline(
      (async () => {
        for (;;) {
          const f = me.recvFromLocal();
          if (f !== null) return f;
          await new Promise((r) => setTimeout(r, 1));
        }
      })(),
      5000,
      `echo of round ${round}`,
    );
    assert.equal([...reply.payload], [round, 1, 2, 3]);
    assert.is(reply.source, 'echo');
  }
  // Each round rang the parked echo once (the echo counts the rings in its inbox).
  assert.is(await echo.line(/^echoed /), 'echoed 20 wakeups 20');
  await echo.exited();
  assert.is(me.stats().received, 20);
  await me.close();
});

stress.run();
crashes.run();
wake.run();
