/**
 * Lane reuse under churn: producer processes come and go for a while into an
 * inbox with fewer lanes than producers alive at once. Some finish and give
 * their lane back; some are killed mid-stream and their lane is taken over by
 * a later producer. Every frame a producer published arrives exactly once,
 * in order, intact — checked against each producer's own count (its `done`
 * line, or for a killed one its lane's published position read while it was
 * stopped just before the kill).
 *
 * SHMBUS_CHURN_SECONDS sets how long producers keep coming (default 30);
 * SHMBUS_CHURN_SEED makes a run's choices repeatable (printed on failure).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { setImmediate as yieldToLoop, setTimeout as sleep } from 'node:timers/promises';
import { Bus } from '../src/index';
import { cleanupAll, registerCleanup, seededRandom, shmDir, spawnChild, uniqueNamespace, until, type Child } from './_helpers';
import { FrameChecker, drainUntil, endpointReport, parseDoneLine, parseLaneLine, processState, type LaneReport } from './_helpers/child';

const SECONDS = Number(process.env.SHMBUS_CHURN_SECONDS ?? 30);
const SEED = Number(process.env.SHMBUS_CHURN_SEED ?? Date.now() % 1_000_000);
const LANES = 4;
/** Producers alive at once: more than there are lanes, so some wait for one. */
const ALIVE = 6;
const CHECKPOINT = 500;

/** A small deterministic PRNG (mulberry32), so a failing run can be repeated with its seed. */
interface Producer {
  readonly id: number;
  readonly child: Child;
  readonly count: number;
  /** Kill it once it has reported this many committed frames (never when undefined). */
  readonly killAt: number | undefined;
  /** Frames it published, once known (its done line, or read from its lane before the kill). */
  expected: number | undefined;
  fate: 'running' | 'finished' | 'killed';
}

function lastCommitted(child: Child): number {
  let last = 0;
  for (const line of child.lines) if (line.startsWith('committed ')) last = Number(line.slice(10));
  return last;
}

const churn = suite('churn: producers come and go');
churn.after.each(cleanupAll);

churn(`for ${SECONDS} s, through ${LANES} lanes, ${ALIVE} producers at a time: every published frame arrives once, in order`, async () => {
  const dir = shmDir();
  const ns = uniqueNamespace();
  const random = seededRandom(SEED);
  const sink = Bus.openSync({ name: 'sink', namespace: ns, dir, lanes: LANES, capacity: 256, slotSize: 64 });
  registerCleanup(() => sink.closeSync());
  const checker = new FrameChecker();
  const producers: Producer[] = [];
  const context = () => `seed ${SEED}; ${checker.summary()}`;

  const spawnProducer = (extra: Record<string, unknown> = {}): Producer => {
    const id = producers.length;
    // Even ids send messages of four slots (a kill may land between their pieces); every fourth sends batches;
    // every third is killed mid-stream.
    const payloadSize = id % 2 === 0 ? 100 : 16 + (id % 9);
    const count = typeof extra.count === 'number' ? extra.count : 2000 + Math.floor(random() * 28_000);
    const killAt = id % 3 === 0 && extra.hold === undefined ? CHECKPOINT * (1 + Math.floor((random() * 0.8 * count) / CHECKPOINT)) : undefined;
    checker.sizes.set(id, payloadSize);
    const child = spawnChild('producer', {
      dir, ns, name: `p${id}`, dest: 'sink', id, count, payloadSize,
      batch: id % 4 === 1 ? 8 : 1,
      onFull: 'wait', laneWait: true, reportLane: true, checkpointEvery: CHECKPOINT, lockTimeoutMs: 30_000,
      ...extra,
    });
    const producer: Producer = { id, child, count, killAt, expected: undefined, fate: 'running' };
    producers.push(producer);
    return producer;
  };

  /** Stop it, read its lane's published position, kill it. */
  const kill = async (p: Producer, lane: LaneReport) => {
    const pid = p.child.process.pid!;
    p.child.process.kill('SIGSTOP');
    await until(() => processState(pid) === 'T' || p.child.process.exitCode !== null, 5000, `producer ${p.id} stopped`);
    const owner = endpointReport(dir, ns, 'sink').lanesInUse[lane.lane]!;
    p.child.process.kill('SIGKILL');
    const exit = await p.child.exited();
    if (exit.code === 0) return finish(p); // it finished before the signal landed
    if (owner.owner.pid !== pid) {
      // Stopped after it gave its lane back: it had printed its count.
      await finish(p);
      p.fate = 'killed';
      return;
    }
    const published = (owner.tail - lane.base) >>> 0;
    assert.is(published % lane.slots, 0, `producer ${p.id}: ${published} slots published, ${lane.slots} per frame (${context()})`);
    p.expected = published / lane.slots;
    assert.ok(p.expected >= lastCommitted(p.child), `producer ${p.id}: published ${p.expected} < its last committed line ${lastCommitted(p.child)}`);
    p.fate = 'killed';
  };

  const finish = async (p: Producer) => {
    const done = parseDoneLine(await p.child.line(/^done /));
    assert.is(done.sent, p.count, `producer ${p.id} sent all it was asked to`);
    assert.is(done.last, p.count - 1);
    p.expected = done.sent;
    p.fate = 'finished';
  };

  const step = async () => {
    for (const p of producers) {
      if (p.fate !== 'running') continue;
      if (p.child.process.exitCode !== null || p.child.process.signalCode !== null) {
        assert.equal(await p.child.exited(), { code: 0, signal: null }, `producer ${p.id}: ${p.child.stderr()}`);
        await finish(p);
      } else if (p.killAt !== undefined && lastCommitted(p.child) >= p.killAt && !p.child.lines.some((l) => l.startsWith('done '))) {
        const laneLine = p.child.lines.find((l) => l.startsWith('lane '));
        if (laneLine !== undefined) await kill(p, parseLaneLine(laneLine));
      }
    }
  };

  const running = () => producers.filter((p) => p.fate === 'running');
  /** Receive what is there; every few ms, look after the producers. */
  let lastStep = 0;
  const pump = async () => {
    const n = sink.recvBatch(checker.handler, 4096);
    if (Date.now() - lastStep >= 5) {
      lastStep = Date.now();
      await step();
    }
    if (n === 0) await sleep(1);
    else await yieldToLoop();
  };
  const printed = (h: Producer, prefix: string) => h.child.lines.some((l) => l.startsWith(prefix));
  // First every lane is held by a live producer, so the next one surely waits for a lane (on a busy
  // machine the churn alone may never have more than LANES producers sending at the same instant).
  const first = Array.from({ length: LANES }, () => spawnProducer({ count: 100, hold: true }));
  await drainUntil(sink, checker, () => first.every((h) => printed(h, 'done ')), 30_000, 'the first producers holding every lane');
  spawnProducer();
  await until(() => sink.stats().laneRefused > 0, 30_000, 'a producer refused a lane while every lane was held');
  for (const h of first) h.child.process.kill('SIGTERM');
  const end = Date.now() + SECONDS * 1000;
  while (Date.now() < end) {
    while (running().length < ALIVE) spawnProducer();
    await pump();
  }
  // No new producers: the running ones finish (their counts are bounded) or meet their fate.
  const ending = Date.now() + 60_000;
  while (running().length > 0) {
    if (Date.now() > ending) throw new Error(`deadline: ${running().length} producers still running 60 s after the churn (${context()})`);
    await pump();
  }
  const expected = (id: number) => producers[id]!.expected!;
  await drainUntil(sink, checker, () => producers.every((p) => checker.count(p.id) >= expected(p.id)), 30_000, 'every published frame');
  assert.is(sink.recvFromLocal(), null, 'nothing beyond what producers published');
  assert.is(checker.errorCount, 0, context());
  for (const p of producers) assert.is(checker.count(p.id), expected(p.id), `producer ${p.id} (${p.fate}): ${context()}`);
  const killed = producers.filter((p) => p.fate === 'killed');
  const finished = producers.filter((p) => p.fate === 'finished');
  assert.ok(killed.length > 0 && finished.length > 0, `${killed.length} killed and ${finished.length} finished (${context()})`);

  // Every producer is gone: each lane is free or owned by a dead one. New producers take all of them.
  for (const lane of endpointReport(dir, ns, 'sink').lanesInUse) {
    assert.ok(lane.owner.state === 'free' || processState(lane.owner.pid) === '?', `lane ${lane.lane}: ${JSON.stringify(lane.owner)}`);
  }
  const holders = Array.from({ length: LANES }, () => spawnProducer({ count: 100, hold: true }));
  await drainUntil(sink, checker, () => holders.every((h) => printed(h, 'done ')), 30_000, 'the last producers holding every lane').catch((err: Error) => {
    throw new Error(`${err.message}; lanes ${JSON.stringify(endpointReport(dir, ns, 'sink').lanesInUse)}`);
  });
  const owners = endpointReport(dir, ns, 'sink').lanesInUse.map((l) => l.owner);
  assert.equal(owners.map((o) => o.pid).sort(), holders.map((h) => h.child.process.pid!).sort(), 'every lane is held by a live process');
  for (const h of holders) h.child.process.kill('SIGTERM');
  for (const h of holders) {
    await h.child.line(/^closed$/);
    assert.equal(await h.child.exited(), { code: 0, signal: null }, h.child.stderr());
    h.expected = 100;
    h.fate = 'finished';
  }
  await drainUntil(sink, checker, () => holders.every((h) => checker.count(h.id) === 100), 10_000, "the last producers' frames");
  assert.is(checker.errorCount, 0, context());
  assert.equal(endpointReport(dir, ns, 'sink').lanesInUse.map((l) => l.owner.state), new Array(LANES).fill('free'), 'every lane given back');

  const stats = sink.stats();
  const total = producers.reduce((sum, p) => sum + p.expected!, 0);
  assert.is(checker.total, total);
  assert.is(stats.received, total);
  assert.ok(stats.laneReuses > 0, `lanes of killed producers were taken over (${JSON.stringify(stats)})`);
  assert.ok(stats.laneTakes > LANES, `lanes were taken again and again (${stats.laneTakes} takes)`);
  assert.ok(stats.laneRefused > 0, 'producers waited for a lane');
  assert.equal([stats.corrupt, stats.corruptLanes], [0, 0]);
  assert.ok(producers.length > 2 * ALIVE, `producers came and went (${producers.length})`);
});

churn.run();
