import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Bus } from '../src/index';
import { Segment } from '../src/segment';
import { LANE_TAIL_OFFSET, SEGMENT_KIND_INBOX, inboxFileName, laneOffset } from '../src/layout';
import { cleanupAll, filesIn, shmDir, spawnChild, uniqueNamespace } from './_helpers';

const CLI = join(__dirname, '..', 'src', 'cli.ts');

function shmbus(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const cli = suite('shmbus CLI');
cli.after.each(cleanupAll);

cli('stat lists every endpoint with pid, liveness, depth and counters', async () => {
  const dir = shmDir();
  const ns = uniqueNamespace();
  const a = await Bus.open({ name: 'alpha', namespace: ns, dir, capacity: 64 });
  const b = await Bus.open({ name: 'beta', namespace: ns, dir, capacity: 8 });
  const ghost = spawnChild('owner', { dir, ns, name: 'ghost' });
  await ghost.line(/^ready$/);
  ghost.process.kill('SIGKILL');
  await ghost.exited();
  for (let i = 0; i < 9; i++) a.sendToLocal('beta', Uint8Array.of(i));
  const text = shmbus('stat', '--namespace', ns, '--dir', dir);
  assert.is(text.code, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`namespace ${ns}`));
  const line = (name: string) => text.stdout.split('\n').find((l) => l.startsWith(`${name} `)) ?? '';
  assert.match(line('alpha'), new RegExp(`\\b${process.pid}\\b.*yes`));
  // depth 8, then lanes: 1 of 16 taken, 8 slots each.
  assert.match(line('beta'), /\b8\s+1\/16x8\b/);
  assert.match(line('ghost'), /DEAD/);
  const json = shmbus('stat', '--namespace', ns, '--dir', dir, '--json');
  const [report] = JSON.parse(json.stdout) as Array<{ endpoints: Array<Record<string, unknown>> }>;
  const beta = report!.endpoints.find((e) => e.name === 'beta')!;
  assert.is(beta.depth, 8);
  assert.is(beta.capacity, 8);
  assert.is(beta.refusedFull, 1);
  assert.is(beta.lanes, 16);
  const lanes = beta.lanesInUse as Array<{ lane: number; depth: number; corrupt: boolean; owner: { state: string; pid: number } }>;
  assert.is(lanes.length, 1);
  assert.equal([lanes[0]!.lane, lanes[0]!.depth, lanes[0]!.corrupt, lanes[0]!.owner.state, lanes[0]!.owner.pid], [0, 8, false, 'owned', process.pid]);
  assert.is(report!.endpoints.find((e) => e.name === 'alpha')!.sent, 8);
  assert.is(report!.endpoints.find((e) => e.name === 'alpha')!.sendRefused, 1);
  assert.is(report!.endpoints.find((e) => e.name === 'ghost')!.alive, false);
  await a.close();
  await b.close();
  const after = shmbus('gc', '--namespace', ns, '--dir', dir);
  assert.is(after.code, 0, after.stderr);
  assert.match(after.stdout, /reaped .*ghost/);
  assert.equal(filesIn(dir), []);
});

cli('gc keeps live endpoints and removes orphan inboxes', async () => {
  const dir = shmDir();
  const ns = uniqueNamespace();
  const live = await Bus.open({ name: 'live', namespace: ns, dir });
  writeFileSync(join(dir, `shmbus.${ns}.orphan.inbox`), 'left behind');
  const r = shmbus('gc', '--namespace', ns, '--dir', dir, '--json');
  assert.is(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout) as { removed: string[]; kept: string[] };
  assert.ok(report.removed.some((p) => p.endsWith('.orphan.inbox')));
  assert.ok(report.kept.some((p) => p.endsWith('.live.inbox')));
  assert.ok(live.sendToLocal('live', Uint8Array.of(1)), 'the live endpoint still works');
  await live.close();
  assert.equal(filesIn(dir), []);
});

cli('stat shows a lane set aside as corrupt and producers refused for want of a lane', async () => {
  const dir = shmDir();
  const ns = uniqueNamespace();
  const sink = await Bus.open({ name: 'sink', namespace: ns, dir, capacity: 8, lanes: 2 });
  const p1 = await Bus.open({ name: 'p1', namespace: ns, dir });
  const p2 = await Bus.open({ name: 'p2', namespace: ns, dir });
  const p3 = await Bus.open({ name: 'p3', namespace: ns, dir });
  assert.ok(p1.sendToLocal('sink', Uint8Array.of(1)));
  assert.ok(p2.sendToLocal('sink', Uint8Array.of(2)));
  try {
    p3.sendToLocal('sink', Uint8Array.of(3));
    assert.unreachable('both lanes are held by live producers');
  } catch (err) {
    assert.is((err as { code?: string }).code, 'ERR_SHMBUS_NO_LANE');
  }
  // Corrupt lane 0's tail (as a stray write would): out of bounds for its head.
  const segment = Segment.attach(join(dir, inboxFileName(ns, 'sink')), SEGMENT_KIND_INBOX);
  Atomics.store(segment.u32, (laneOffset(0) + LANE_TAIL_OFFSET) / 4, 1000);
  segment.unmap();
  const got: number[] = [];
  let frame;
  while ((frame = sink.recvFromLocal()) !== null) got.push(frame.payload[0]!);
  assert.equal(got, [2], 'the other lane keeps flowing');
  assert.is(sink.stats().corruptLanes, 1);
  const text = shmbus('stat', '--namespace', ns, '--dir', dir);
  assert.is(text.code, 0, text.stderr);
  assert.match(text.stdout, /sink: lane 0 CORRUPT/);
  assert.match(text.stdout, /sink: 1 producer\(s\) refused: every lane taken/);
  // Its producer learns it at its next refill, and a new lane serves it afterwards... none is free here: p2 holds lane 1.
  for (const b of [p1, p2, p3, sink]) await b.close();
  assert.equal(filesIn(dir), []);
});

cli('usage errors exit 2; a bad namespace exits 1 with its code', () => {
  assert.is(shmbus('frobnicate').code, 2);
  assert.is(shmbus('stat', '--bogus').code, 2);
  const bad = shmbus('stat', '--namespace', 'no.dots', '--dir', '/dev/shm');
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /ERR_SHMBUS_INVALID_OPTION/);
});

cli('stat on an empty folder says there is nothing', () => {
  const dir = shmDir();
  const r = shmbus('stat', '--dir', dir);
  assert.is(r.code, 0);
  assert.match(r.stdout, /no shmbus namespace/);
});

cli.run();
