import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Bus } from '../src/index';
import { DEFAULT_DIR } from '../src/options';
import { Segment } from '../src/segment';
import { LANE_TAIL_OFFSET, SEGMENT_KIND_INBOX, inboxFileName, laneOffset } from '../src/layout';
import { cleanupAll, deadline, filesIn, registerCleanup, shmDir, spawnChild, uniqueNamespace, until } from './_helpers';

const CLI = join(__dirname, '..', 'src', 'cli.ts');

function shmbusWith(env: NodeJS.ProcessEnv, ...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const shmbus = (...args: string[]) => shmbusWith({}, ...args);

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
  assert.match(line('alpha'), new RegExp(`\\b${process.pid}\\b\\s+running\\b`));
  // depth 8, then lanes: 1 of 16 taken.
  assert.match(line('beta'), /\b8\s+1\/16\s/);
  assert.match(line('ghost'), /DEAD/);
  // --wide: liveness and state apart, lanes with their slots (8 each).
  const wide = shmbus('stat', '--namespace', ns, '--dir', dir, '--wide');
  assert.is(wide.code, 0, wide.stderr);
  const wideLine = (name: string) => wide.stdout.split('\n').find((l) => l.startsWith(`${name} `)) ?? '';
  assert.match(wideLine('alpha'), new RegExp(`\\b${process.pid}\\b\\s+yes\\s+running`));
  assert.match(wideLine('beta'), /\b8\s+1\/16x8\b/);
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

cli('usage errors exit 2 with ERR_SHMBUS_USAGE and a usage hint; a bad namespace exits 1 with its code', () => {
  const cases: Array<[string[], RegExp]> = [
    [['frobnicate'], /unknown command "frobnicate"/],
    [['stat', '--bogus'], /unknown option --bogus/],
    [[], /no command given/],
    [['stat', '--dir'], /option --dir needs a value/],
    [['stat', 'extra'], /unexpected argument "extra"/],
    [['stat', '--interval', '1'], /--interval needs --watch/],
    [['stat', '--watch', '--interval', '0'], /--interval takes seconds/],
    [['stat', '--watch', '--interval', 'soon'], /--interval takes seconds/],
    [['stat', '--watch', '--count', '0'], /--count takes a positive integer/],
    [['stat', '--watch', '--count', '1.5'], /--count takes a positive integer/],
    [['gc', '--wide'], /--wide is for stat, not gc/],
    [['gc', '--watch'], /--watch is for stat, not gc/],
    [['help', 'bogus'], /no help on "bogus"/],
  ];
  for (const [args, why] of cases) {
    const r = shmbus(...args);
    const what = `shmbus ${args.join(' ')}: ${r.stderr}`;
    assert.is(r.code, 2, what);
    assert.is(r.stdout, '', what);
    assert.match(r.stderr, /^shmbus: ERR_SHMBUS_USAGE: /, what);
    assert.match(r.stderr, why, what);
    assert.match(r.stderr, /Run 'shmbus --help'/, what);
    assert.not.match(r.stderr, /\n\s+at /, `${what} (no stack)`);
  }
  const bad = shmbus('stat', '--namespace', 'no.dots', '--dir', '/dev/shm');
  assert.is(bad.code, 1);
  assert.match(bad.stderr, /^shmbus: ERR_SHMBUS_INVALID_OPTION: /);
});

cli('--help and help print usage, commands, options, exit codes and examples in 80 columns', () => {
  const help = shmbus('--help');
  assert.is(help.code, 0, help.stderr);
  assert.is(help.stderr, '');
  for (const part of [/^Usage:$/m, /shmbus stat \[options\]/, /shmbus gc {3}\[options\]/, /shmbus help \[command\]/, /--version/, /--namespace N/, /--dir D/, /--json/, /--wide/, /--watch/, /--interval S/, /--count N/, /^Exit codes:$/m, /^ {2}0 {2}done/m, /^ {2}1 {2}a shmbus error/m, /^ {2}2 {2}a usage error \(ERR_SHMBUS_USAGE\)/m, /one JSON object on one line on stderr/, /^Examples:$/m]) {
    assert.match(help.stdout, part);
  }
  assert.is(shmbus('help').stdout, help.stdout, 'shmbus help = shmbus --help');
  assert.is(shmbus('-h').stdout, help.stdout);
  const stat = shmbus('help', 'stat');
  assert.is(stat.code, 0);
  assert.is(shmbus('stat', '--help').stdout, stat.stdout, 'shmbus stat --help = shmbus help stat');
  assert.match(stat.stdout, /^Usage: shmbus stat /);
  assert.match(stat.stdout, /rates per second/);
  const gcHelp = shmbus('gc', '--help');
  assert.is(gcHelp.code, 0);
  assert.match(gcHelp.stdout, /^Usage: shmbus gc /);
  assert.not.match(gcHelp.stdout, /--watch/);
  for (const text of [help.stdout, stat.stdout, gcHelp.stdout]) {
    for (const line of text.split('\n')) assert.ok(line.length <= 80, `help line over 80 columns: ${line}`);
  }
});

cli('without the native addon: --help and --version still work; stat fails in one line with ERR_SHMBUS_ADDON_MISSING', () => {
  // node-gyp-build's own override, pointed at an empty folder (as test 91 does).
  const env = { SHMBUS_PREBUILD: shmDir() };
  const help = shmbusWith(env, '--help');
  assert.is(help.code, 0, help.stderr);
  assert.match(help.stdout, /^Usage:$/m);
  assert.match(help.stdout, new RegExp(`else\\s+${DEFAULT_DIR}\\)`), 'the default folder in the help is options.ts DEFAULT_DIR');
  assert.is(shmbusWith(env, '--version').code, 0);
  const stat = shmbusWith(env, 'stat', '--dir', shmDir());
  assert.is(stat.code, 1);
  assert.is(stat.stderr.trimEnd().split('\n').length, 1, stat.stderr);
  assert.match(stat.stderr, /^shmbus: ERR_SHMBUS_ADDON_MISSING: .*npm rebuild shmbus/);
});

cli('--version prints the package version', () => {
  const { version } = JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string };
  for (const flag of ['--version', '-V']) {
    const r = shmbus(flag);
    assert.is(r.code, 0);
    assert.is(r.stdout, `${version}\n`);
  }
});

cli('stat on a missing folder: one line with ERR_SHMBUS_SYSTEM, exit 1, no stack; --json gives one JSON object on stderr', () => {
  const missing = join(shmDir(), 'not-here');
  for (const command of ['stat', 'gc']) {
    const r = shmbus(command, '--dir', missing);
    assert.is(r.code, 1, r.stderr);
    assert.is(r.stdout, '');
    assert.is(r.stderr, `shmbus: ERR_SHMBUS_SYSTEM: folder ${missing} does not exist (scandir ENOENT)\n`);
  }
  const withNamespace = shmbus('stat', '--dir', missing, '--namespace', 'x');
  assert.is(withNamespace.code, 1, 'a named namespace in a missing folder is an error too, not "no namespace"');
  const json = shmbus('stat', '--dir', missing, '--json');
  assert.is(json.code, 1);
  assert.is(json.stdout, '', 'stdout stays empty');
  const lines = json.stderr.trimEnd().split('\n');
  assert.is(lines.length, 1, json.stderr);
  assert.equal(JSON.parse(lines[0]!), { code: 'ERR_SHMBUS_SYSTEM', message: `folder ${missing} does not exist (scandir ENOENT)`, exitCode: 1, errno: 'ENOENT', syscall: 'scandir', path: missing });
  const usage = shmbus('stat', '--bogus', '--json');
  assert.is(usage.code, 2);
  assert.equal(JSON.parse(usage.stderr), { code: 'ERR_SHMBUS_USAGE', message: 'unknown option --bogus', exitCode: 2 });
  const file = join(shmDir(), 'a-file');
  writeFileSync(file, '');
  const notDir = shmbus('stat', '--dir', file, '--json');
  assert.is(notDir.code, 1);
  assert.is((JSON.parse(notDir.stderr) as { errno: string }).errno, 'ENOTDIR');
});

cli('the default stat table fits 80 columns; --wide shows every column and whole names', async () => {
  const dir = shmDir();
  const ns = uniqueNamespace('eighty-columns');
  const names = ['orders-ingest-worker-eu-west-1', 'orders-ingest-worker-eu-west-2', 'billing-reconciliation-service-primary', 'notifications-fanout', 'sink'];
  const buses: Bus[] = [];
  for (const name of names) buses.push(await Bus.open({ name, namespace: ns, dir, capacity: 1024, lanes: 64 }));
  registerCleanup(() => buses.forEach((b) => b.closeSync()));
  for (let i = 0; i < 20_000; i++) {
    buses[0]!.sendToLocal('sink', Uint8Array.of(1));
    buses[4]!.recvFromLocal();
  }
  const r = shmbus('stat', '--dir', dir, '--namespace', ns);
  assert.is(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  for (const line of lines) assert.ok(line.length <= 80, `over 80 columns (${line.length}): ${line}`);
  assert.match(r.stdout, /^endpoint\s+pid\s+state\s+depth\s+lanes\s+sent\s+recv\s+full\s+refused$/m);
  // One row per endpoint, told apart by their ends even when shortened; counts compact.
  for (const name of names) assert.is(lines.filter((l) => l.includes(name.slice(-9))).length, 1, `one row for ${name}:\n${r.stdout}`);
  assert.match(lines.find((l) => l.includes('eu-west-1'))!, /\s20\.0k\s/);
  assert.match(lines.find((l) => l.startsWith('sink'))!, /\s20\.0k\s/);
  const wide = shmbus('stat', '--dir', dir, '--namespace', ns, '--wide');
  assert.is(wide.code, 0, wide.stderr);
  const header = wide.stdout.split('\n').find((l) => l.startsWith('endpoint'))!;
  assert.ok(header.trim().split(/\s+/).length > lines.find((l) => l.startsWith('endpoint'))!.trim().split(/\s+/).length, 'more columns');
  for (const column of ['alive', 'slot', 'corrupt', 'wakeups', 'doorbell']) assert.match(header, new RegExp(`\\b${column}\\b`));
  for (const name of names) assert.match(wide.stdout, new RegExp(`^${name}\\s`, 'm'));
  assert.match(wide.stdout, /^orders-ingest-worker-eu-west-1\s.*\s20000\s/m);
  assert.ok(wide.stdout.split('\n').some((l) => l.length > 80));
  for (const b of buses) await b.close();
});

/** The CLI as a running child (for --watch): its output so far, and its end. */
function shmbusChild(...args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  registerCleanup(() => child.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  return { child, done: () => deadline(done, 20_000, `shmbus ${args.join(' ')} to exit`), stdout: () => stdout, stderr: () => stderr };
}

/** A compact count back to a number (12.3k = 12300); NaN for "-". */
function count(cell: string): number {
  const m = /^([\d.]+)([kMGTP]?)$/.exec(cell);
  return m === null ? NaN : Number(m[1]) * 10 ** (3 * ' kMGTP'.indexOf(m[2] || ' '));
}

cli('stat --watch --count 2 prints two snapshots, the second with rates per second; --json one line per frame', async () => {
  const dir = shmDir();
  const ns = uniqueNamespace('watch');
  const src = await Bus.open({ name: 'pump-source', namespace: ns, dir });
  const sink = await Bus.open({ name: 'pump-sink', namespace: ns, dir, capacity: 1024 });
  const pump = setInterval(() => {
    for (let i = 0; i < 20; i++) src.sendToLocal('pump-sink', Uint8Array.of(i));
    while (sink.recvFromLocal() !== null);
  }, 2);
  registerCleanup(() => clearInterval(pump));
  try {
    const text = shmbusChild('stat', '--dir', dir, '--namespace', ns, '--watch', '--count', '2', '--interval', '0.2');
    const json = shmbusChild('stat', '--dir', dir, '--namespace', ns, '--watch', '--count', '2', '--interval', '0.2', '--json');
    const [t, j] = await Promise.all([text.done(), json.done()]);
    assert.equal(t, { code: 0, signal: null }, text.stderr());
    assert.is(text.stderr(), '');
    assert.not.match(text.stdout(), /\x1b\[/, 'no screen clearing when stdout is not a terminal');
    const frames = text.stdout().split(/^(?=shmbus stat --watch )/m);
    assert.is(frames.length, 2, text.stdout());
    assert.match(frames[0]!, /frame 1\/2/);
    assert.match(frames[1]!, /frame 2\/2/);
    const row = (frame: string, name: string) => frame.split('\n').find((l) => l.startsWith(`${name} `))!.trim().split(/\s+/);
    for (const frame of frames) {
      assert.match(frame, /^endpoint\s+pid\s+state\s+depth\s+lanes\s+sent\/s\s+recv\/s\s+full\/s$/m);
      for (const line of frame.split('\n')) assert.ok(line.length <= 80, line);
    }
    // endpoint pid state depth lanes sent/s recv/s full/s
    assert.equal(row(frames[0]!, 'pump-source').slice(5), ['-', '-', '-'], 'no rates in the first frame');
    const sent = count(row(frames[1]!, 'pump-source')[5]!);
    const received = count(row(frames[1]!, 'pump-sink')[6]!);
    assert.ok(sent > 100, `sent/s ${sent}:\n${frames[1]}`);
    assert.ok(received > 100, `recv/s ${received}:\n${frames[1]}`);
    assert.equal(j, { code: 0, signal: null }, json.stderr());
    const lines = json.stdout().trimEnd().split('\n').map((l) => JSON.parse(l) as { frame: number; intervalSeconds: number; namespaces: Array<{ endpoints: Array<{ name: string; rates: { sent: number } | null }> }> });
    assert.equal(lines.map((l) => [l.frame, l.intervalSeconds]), [[1, 0.2], [2, 0.2]]);
    const rates = (l: (typeof lines)[number]) => l.namespaces[0]!.endpoints.find((e) => e.name === 'pump-source')!.rates;
    assert.is(rates(lines[0]!), null);
    assert.ok(rates(lines[1]!)!.sent > 100, JSON.stringify(rates(lines[1]!)));
  } finally {
    clearInterval(pump);
    await src.close();
    await sink.close();
  }
});

cli('stat --watch stops cleanly on SIGINT (exit 0, nothing on stderr)', async () => {
  const dir = shmDir();
  const w = shmbusChild('stat', '--dir', dir, '--watch', '--interval', '0.1');
  await until(() => /frame 2\b/.test(w.stdout()), 15_000, 'two frames');
  assert.match(w.stdout(), /no shmbus namespace in /);
  w.child.kill('SIGINT');
  assert.equal(await w.done(), { code: 0, signal: null });
  assert.is(w.stderr(), '');
});

cli('stat on an empty folder says there is nothing', () => {
  const dir = shmDir();
  const r = shmbus('stat', '--dir', dir);
  assert.is(r.code, 0);
  assert.match(r.stdout, /no shmbus namespace/);
});

cli.run();
