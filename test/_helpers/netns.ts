/**
 * The tests' side of the network-namespace harness (../../harness/netns.ts,
 * shared with the mesh benchmark): can this machine make namespaces, the skip
 * report when it cannot, two hosts joined by one veth pair (test/65), and the
 * test child (./child.ts) inside a namespace. Everything the harness makes is
 * removed by `cleanupAll` (./index), even when a test fails.
 *
 * Traffic stays inside the namespaces: the pair's addresses come from a /30 of
 * 10.213.0.0/16 that exists only on the veth pair, and metrics/doorbells are on
 * each namespace's own loopback.
 */
import { execFileSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { adoptNetns, execIn, findTool, removeAllNetns, removeStaleNetns, runIp, spawnIn, waitLinkUp, type NetnsPair, type NsProcess } from '../../harness/netns';
import { registerStandingCleanup } from './index';

export { findTool, netnsList, removeAllNetns, spawnIn, startRelayIn, writeNetnsCluster } from '../../harness/netns';
export type { NetnsCluster, NetnsPair, NsProcess, NsRelay, RelayMetrics } from '../../harness/netns';

registerStandingCleanup(removeAllNetns);

const CHILD_SCRIPT = join(__dirname, 'child.ts');

export type Availability =
  | { ok: true; ip: string; iptables: string | null }
  | { ok: false; kind: 'not-root' | 'no-ip' | 'no-permission' | 'other'; reason: string };

function errorText(err: unknown): string {
  const e = err as { stderr?: Buffer | string; message?: string };
  const stderr = e.stderr === undefined ? '' : String(e.stderr).trim();
  return stderr !== '' ? stderr : String(e.message ?? err);
}

/**
 * The body of a network-namespace suite's one test when namespaces are not
 * available: prints the `SKIPPED: <reason>` line that .ci/run counts, and
 * asserts the skip is legitimate (not root; or root without the capability,
 * and not in CI, which must run these tests).
 */
export function reportSkipped(availability: Extract<Availability, { ok: false }>): void {
  console.log(`\nSKIPPED: ${availability.reason}`);
  const uid = process.getuid?.() ?? -1;
  if (availability.kind === 'not-root') {
    assert.is.not(uid, 0, 'skipped only when not root');
  } else {
    assert.is(process.env.CI === undefined || process.env.CI === '' || process.env.CI === 'false', true, `CI runs as root and must run the network namespace tests: ${availability.reason}`);
    assert.is(availability.kind, 'no-permission', availability.reason);
  }
}

/** Can this process make network namespaces? Tries to add (and deletes) a probe namespace. */
export function netnsAvailability(): Availability {
  const uid = process.getuid?.() ?? -1;
  if (uid !== 0) return { ok: false, kind: 'not-root', reason: `network namespaces need root (uid ${uid})` };
  const ip = findTool('ip');
  if (ip === null) return { ok: false, kind: 'no-ip', reason: 'network namespaces need the ip command (iproute2), which is not installed' };
  const probe = `shmbus-probe-${process.pid}-${randomInt(1e6)}`;
  try {
    execFileSync(ip, ['netns', 'add', probe], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  } catch (err) {
    const text = errorText(err);
    const kind = /not permitted|permission denied/i.test(text) ? 'no-permission' : 'other';
    return { ok: false, kind, reason: `\`ip netns add\` failed as root: ${text}` };
  }
  try {
    execFileSync(ip, ['netns', 'del', probe], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  } catch (err) {
    return { ok: false, kind: 'other', reason: `\`ip netns del ${probe}\` failed: ${errorText(err)}` };
  }
  return { ok: true, ip, iptables: findTool('iptables') };
}

/** Two fresh namespaces `shmbus-<pid>-<rand>-<tag>`, a veth pair between them, addresses 10.213.<rand>.1/30 and .2/30; lo and veth up. */
export async function makeNetnsPair(tags: readonly [string, string]): Promise<NetnsPair> {
  const ip = findTool('ip');
  if (ip === null) throw new Error('the ip command (iproute2) is not installed');
  const stale = removeStaleNetns(ip);
  if (stale.length > 0) console.log(`  removed network namespaces left by a killed run: ${stale.join(', ')}`);
  const run = (args: string[]): string => runIp(ip, args);
  const id = `${process.pid}-${randomInt(1e6)}`;
  const ns = [`shmbus-${id}-${tags[0]}`, `shmbus-${id}-${tags[1]}`] as const;
  const octet = randomInt(256);
  const addr = [`10.213.${octet}.1`, `10.213.${octet}.2`] as const;
  const veth = 'veth0';
  for (const n of ns) {
    adoptNetns(n); // before creating it: a failure half-way is still cleaned up
    run(['netns', 'add', n]);
  }
  // Created directly inside the namespaces: the names never exist in the machine's own namespace.
  run(['link', 'add', 'name', veth, 'netns', ns[0], 'type', 'veth', 'peer', 'name', veth, 'netns', ns[1]]);
  ns.forEach((n, i) => {
    run(['-n', n, 'addr', 'add', `${addr[i]}/30`, 'dev', veth]);
    run(['-n', n, 'link', 'set', 'lo', 'up']);
    run(['-n', n, 'link', 'set', veth, 'up']);
  });
  const pair: NetnsPair = {
    ns,
    veth,
    addr,
    ip: (n, args) => run(['-n', n, ...args]),
    exec: execIn,
    linkUp: (n, ms) => waitLinkUp(ip, n, veth, ms),
  };
  for (const n of ns) await pair.linkUp(n);
  return pair;
}

/** test/_helpers/child.ts with a role, inside a namespace. */
export function spawnChildIn(ns: string, role: string, args: Record<string, unknown>): NsProcess {
  return spawnIn(ns, `child ${role}`, process.execPath, ['--import', 'tsx', CHILD_SCRIPT, role, JSON.stringify(args)]);
}
