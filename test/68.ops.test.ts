/**
 * The ops kit of docs/OPERATIONS.md, exercised as written: the systemd unit
 * (checked by `systemd-analyze verify`, its stop timeout against the drain
 * timeout), and the TLS recipe (its shell block run as it stands, then two
 * relays started from one shared config whose `{host}` paths pick each host's
 * files, and a frame sent between them over mutual TLS).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus } from '../src/index';
import { cleanupAll, nextFrame, registerCleanup } from './_helpers';
import { makeCluster } from './_helpers/cluster';

const ROOT = join(__dirname, '..');
const OPERATIONS = readFileSync(join(ROOT, 'docs', 'OPERATIONS.md'), 'utf8');

/** The fenced block right after `<!-- marker -->` in docs/OPERATIONS.md. */
function block(marker: string): string {
  const at = OPERATIONS.indexOf(`<!-- ${marker} -->`);
  assert.ok(at >= 0, `docs/OPERATIONS.md has <!-- ${marker} -->`);
  const m = /```[a-z]*\n([\s\S]*?)```/.exec(OPERATIONS.slice(at));
  assert.ok(m !== null, `a code block follows <!-- ${marker} -->`);
  return m![1]!;
}

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  registerCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const ops = suite('ops kit: as docs/OPERATIONS.md writes it');
ops.after.each(cleanupAll);

ops('the systemd unit verifies, stops with SIGTERM and waits longer than the drain', () => {
  const unit = block('unit:transit-server');
  const setting = (key: string) => new RegExp(`^${key}=(.*)$`, 'm').exec(unit)?.[1];
  assert.is(setting('KillSignal'), 'SIGTERM');
  assert.is(setting('Restart'), 'on-failure');
  assert.equal(setting('RestartPreventExitStatus')?.split(/\s+/).sort(), ['64', '78'], 'usage and config errors are not restarted');
  const drainMs = Number(/--drain-timeout-ms (\d+)/.exec(setting('ExecStart') ?? '')?.[1]);
  assert.ok(drainMs > 0, 'ExecStart sets the drain timeout');
  assert.ok(Number(setting('TimeoutStopSec')) * 1000 > drainMs, `TimeoutStopSec ${setting('TimeoutStopSec')} s exceeds the drain (${drainMs} ms)`);
  const verify = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  if (verify.status !== 0) {
    console.log('\nSKIPPED: systemd-analyze is not installed: the unit was checked for its settings only');
    return;
  }
  // The documented paths, replaced by this checkout's (verify checks that ExecStart's program exists).
  const dir = tempDir('shmbus-unit-');
  const cli = join(ROOT, 'relay', 'cli.ts');
  const text = unit.replace('/usr/bin/node', process.execPath).replace('/opt/shmbus/node_modules/shmbus/dist/relay/cli.js', cli).replace(/^User=.*$/m, 'User=root').replace(/^Group=.*$/m, 'Group=root');
  const path = join(dir, 'transit-server.service');
  writeFileSync(path, text);
  const result = spawnSync('systemd-analyze', ['verify', path], { encoding: 'utf8' });
  const complaints = `${result.stdout}${result.stderr}`.split('\n').filter((l) => l.includes('transit-server.service'));
  assert.equal(complaints, [], `systemd-analyze verify: ${result.stdout}${result.stderr}`);
});

ops('the TLS recipe makes a CA and per-host certificates that two relays accept, from one shared config', async () => {
  const block_ = block('recipe:tls');
  assert.match(block_, /openssl req -x509/);
  const dir = tempDir('shmbus-tls-recipe-');
  execFileSync('bash', ['-c', block_], { cwd: dir, stdio: 'pipe' });
  for (const f of ['ca.crt', 'ca.key', 'alpha.key', 'alpha.crt', 'beta.key', 'beta.crt']) assert.ok(existsSync(join(dir, f)), `${f} made`);
  for (const host of ['alpha', 'beta']) {
    assert.is(statSync(join(dir, `${host}.key`)).mode & 0o777, 0o600, `${host}.key is private`);
    // Each certificate verifies against the CA.
    const check = spawnSync('openssl', ['verify', '-CAfile', join(dir, 'ca.crt'), join(dir, `${host}.crt`)], { encoding: 'utf8' });
    assert.is(check.status, 0, check.stdout + check.stderr);
  }
  // One config for both hosts: "{host}" picks each relay's own key and certificate.
  const tls = { key: join(dir, '{host}.key'), cert: join(dir, '{host}.crt'), ca: join(dir, 'ca.crt') };
  const cluster = await makeCluster(['alpha', 'beta'], { tls });
  const [ra, rb] = await Promise.all([cluster.start('alpha'), cluster.start('beta')]);
  assert.is((ra.events('start')[0] as { tls?: boolean }).tls, true);
  const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
  const b1 = await Bus.open({ name: 'b1', namespace: cluster.ns('beta'), dir: cluster.dir });
  assert.ok(a1.send('b1@beta', 'over mutual TLS'));
  const frame = await nextFrame(b1, 15_000, 'the frame over TLS');
  assert.is(new TextDecoder().decode(frame.payload), 'over mutual TLS');
  assert.is(frame.source, 'a1@alpha');
  assert.ok((await rb.metrics()).peers.alpha!.framesIn >= 1);
  await a1.close();
  await b1.close();
});

ops.run();
