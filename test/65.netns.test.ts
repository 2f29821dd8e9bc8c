/**
 * The transit relay over a real link: hosts alpha and beta in their own Linux
 * network namespaces, joined by a veth pair, each relay (and its apps) inside
 * its namespace. The link is cut mid-stream — link down, then an iptables DROP
 * on beta, then the TCP connections reset (`ss -K`) while frames are unacked —
 * and after each, every frame has arrived exactly once, in order; the reset
 * must show as a reconnect with resends.
 *
 * Needs root (CI runs as root, and must run these). Otherwise the suite has one
 * test that passes after printing `skipped: <reason>`, and asserts that reason.
 *
 * Traffic goes only to the hosts' addresses on the veth pair (a /30 of
 * 10.213.0.0/16 that exists only inside the two namespaces) and to each
 * namespace's loopback. The namespaces, and every process in them, are removed
 * afterwards, even on failure.
 *
 * SHMBUS_NETNS_FRAMES sets the frames per sender (default 20000, at least about 4200);
 * SHMBUS_NETNS_IPTABLES=0 makes the second cut a link down, as where iptables
 * is not installed.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DEFAULT_CAPACITY } from '../src/layout';
import { cleanupAll, deadline, filesIn } from './_helpers';
import { makeNetnsPair, netnsAvailability,
  reportSkipped, netnsList, spawnChildIn, startRelayIn, writeNetnsCluster, type NetnsPair, type NsProcess } from './_helpers/netns';

const FRAMES = Number(process.env.SHMBUS_NETNS_FRAMES ?? 20_000);
const TOTAL = 2 * FRAMES;
/** Relay port on each host's veth address (the namespaces are private: any port is free). */
const PORT = 7411;
/** Slots of alpha's relay inbox: at most this many frames are unacked (in flight) at once. */
const ALPHA_RING = 1024;
/** The sink prints `progress <n>` every STEP frames. */
const STEP = Math.max(1, Math.floor(TOTAL / 200));
/**
 * Frames the sink can still read while the link is cut: those unacked by beta
 * (at most alpha's ring) plus those already in the sink's inbox, plus one
 * progress step of measuring slack. More than this means the cut did not cut.
 */
const IN_FLIGHT = ALPHA_RING + DEFAULT_CAPACITY + STEP;
const LINK_DOWN_MS = 1000;
/**
 * Producers spread their frames over this long, so that the stream is still
 * going at each cut however fast the path is (cut 3 needs frames left to send
 * beyond what the stopped sink's inbox can take).
 */
const PACE_MS = 8000;
const DROP_MS = 1500;

const availability = netnsAvailability();
const ours = (name: string) => name.startsWith(`shmbus-${process.pid}-`) || name.startsWith(`shmbus-probe-${process.pid}-`);

const netns = suite('relay: two hosts in network namespaces, the link cut mid-stream');
netns.after.each(cleanupAll);

if (!availability.ok) {
  netns('skipped: network namespaces are not available here', () => reportSkipped(availability));
} else {
  // SHMBUS_NETNS_IPTABLES=0 runs the fallback (a second link-down cut) even where iptables is installed.
  const iptables = process.env.SHMBUS_NETNS_IPTABLES === '0' ? null : availability.iptables;

  /** Sink progress: the last `progress <n>` line (or the final count). */
  const progressOf = (sink: NsProcess): number => {
    for (let i = sink.lines.length - 1; i >= 0; i--) {
      const m = /^(?:progress|received) (\d+)/.exec(sink.lines[i]!);
      if (m) return Number(m[1]);
    }
    return 0;
  };

  /** Wait until the sink has read at least `n` frames; returns how long it took. */
  async function untilProgress(sink: NsProcess, n: number, ms: number, what: string): Promise<number> {
    const start = Date.now();
    await deadline(
      (async () => {
        while (progressOf(sink) < n) {
          if (sink.process.exitCode !== null || sink.process.signalCode !== null) throw new Error(`sink exited before ${what}: ${sink.lines.slice(-5).join(' | ')} ${sink.stderr().slice(-500)}`);
          await new Promise((r) => setTimeout(r, 2));
        }
      })(),
      ms,
      `${what} (sink at ${progressOf(sink)} of ${TOTAL})`,
    );
    return Date.now() - start;
  }

  interface Cut {
    what: string;
    /** Sink progress when the link was cut and when it came back. */
    atCut: number;
    atHeal: number;
    /** ms from the heal until the sink had read IN_FLIGHT frames more than at the heal (so new frames crossed the link). */
    recoveryMs?: number;
    dropped?: number;
  }

  /** One cut: `down()`, hold for `ms`, `up()`; checks that the link really carried nothing meanwhile. */
  async function cut(sink: NsProcess, what: string, ms: number, down: () => void, up: () => Promise<void>, during?: () => Partial<Cut>): Promise<Cut> {
    const atCut = progressOf(sink);
    let atHeal = atCut;
    let atMidCut = atCut;
    let extra: Partial<Cut> = {};
    try {
      down();
      // Frames already in rings and socket buffers still arrive early in the cut; by its
      // second half nothing may move if the link is really cut.
      await new Promise((r) => setTimeout(r, ms / 2));
      atMidCut = progressOf(sink);
      await new Promise((r) => setTimeout(r, ms / 2));
      extra = during?.() ?? {};
    } finally {
      atHeal = progressOf(sink);
      await up();
    }
    const result: Cut = { ...extra, what, atCut, atHeal };
    assert.is(atHeal, atMidCut, `${what}: the sink kept receiving in the second half of the cut (${atMidCut} -> ${atHeal}): the cut did not cut`);
    assert.ok(result.atHeal < TOTAL, `${what}: the stream had ended before the link came back (${result.atHeal} of ${TOTAL}): raise SHMBUS_NETNS_FRAMES`);
    return result;
  }

  netns(`${FRAMES} frames x 2 senders over a veth pair, link down ${LINK_DOWN_MS} ms then ${iptables !== null ? `an iptables DROP for ${DROP_MS} ms` : `link down again`}: nothing lost, nothing twice`, async () => {
    if (!Number.isInteger(FRAMES) || TOTAL < 4 * IN_FLIGHT) throw new Error(`SHMBUS_NETNS_FRAMES must be an integer of at least ${Math.ceil((4 * IN_FLIGHT) / 2)} so that both cuts fall mid-stream; it is ${process.env.SHMBUS_NETNS_FRAMES}`);
    if (iptables === null) console.log('\n  note: iptables is not installed (or SHMBUS_NETNS_IPTABLES=0): the second cut is a link down on beta\'s side instead of an iptables DROP');
    const began = Date.now();
    const pair: NetnsPair = await makeNetnsPair(['alpha', 'beta']);
    const [nsAlpha, nsBeta] = pair.ns;
    const [ipAlpha, ipBeta] = pair.addr;
    const cluster = writeNetnsCluster(
      { alpha: { relay: `${ipAlpha}:${PORT}`, inboxCapacity: ALPHA_RING }, beta: { relay: `${ipBeta}:${PORT}` } },
      { ttlMs: 60_000, ackTimeoutMs: 70_000, connectTimeoutMs: 1000, handshakeTimeoutMs: 1000, backoffInitialMs: 20, backoffMaxMs: 200 },
    );
    const [alpha, beta] = await Promise.all([startRelayIn(nsAlpha, 'alpha', cluster.configPath), startRelayIn(nsBeta, 'beta', cluster.configPath)]);
    assert.is(alpha.events('start')[0]!.listen, `${ipAlpha}:${PORT}`);
    assert.is(beta.events('start')[0]!.listen, `${ipBeta}:${PORT}`);

    const sink = spawnChildIn(nsBeta, 'sink', { dir: cluster.dir, ns: cluster.ns('beta'), name: 'sink', count: TOTAL, progressEvery: STEP });
    await sink.line(/^ready$/, 20_000);
    const producers = [1, 2].map((id) => spawnChildIn(nsAlpha, 'producer', { dir: cluster.dir, ns: cluster.ns('alpha'), name: `p${id}`, dest: 'sink@beta', count: FRAMES, id, paceMs: PACE_MS }));
    const streamStart = Date.now();

    // Cut 1: alpha's end of the veth down (routes go with it: sends fail locally), then up.
    await untilProgress(sink, Math.floor(TOTAL * 0.15), 60_000, 'the stream under way before cut 1');
    const cuts: Cut[] = [];
    const link = (ns: string, state: 'up' | 'down') => pair.ip(ns, ['link', 'set', pair.veth, state]);
    const linkDownCut = (ns: string, what: string) =>
      cut(
        sink,
        what,
        LINK_DOWN_MS,
        () => link(ns, 'down'),
        async () => {
          link(ns, 'up');
          await Promise.all(pair.ns.map((n) => pair.linkUp(n)));
        },
        () => {
          // Both ends see the link down (no carrier on the other end).
          for (const n of pair.ns) assert.match(pair.ip(n, ['-o', 'link', 'show', pair.veth]), /state DOWN/, `veth in ${n} down during the cut`);
          return {};
        },
      );
    cuts.push(await linkDownCut(nsAlpha, `cut 1: link down in ${nsAlpha} for ${LINK_DOWN_MS} ms`));

    // Cut 2 once the stream has clearly recovered (more frames than could have been in flight at the heal).
    const second = Math.max(Math.floor(TOTAL * 0.5), cuts[0]!.atHeal + IN_FLIGHT);
    cuts[0]!.recoveryMs = await untilProgress(sink, cuts[0]!.atHeal + IN_FLIGHT, 30_000, 'the stream recovering after cut 1');
    await untilProgress(sink, second, 60_000, 'the stream under way before cut 2');
    if (iptables !== null) {
      // Cut 2: beta silently drops every packet from alpha (alpha sees no reset, no error: only silence).
      const rule = ['INPUT', '-s', ipAlpha, '-j', 'DROP'];
      const ipt = (args: string[]) => pair.exec(nsBeta, iptables, ['-w', '5', ...args]);
      await ipt(['-A', ...rule]);
      let dropped = 0;
      try {
        cuts.push(
          await cut(
            sink,
            `cut 2: iptables DROP from ${ipAlpha} in ${nsBeta} for ${DROP_MS} ms`,
            DROP_MS,
            () => {},
            async () => {
              const listing = await ipt(['-L', 'INPUT', '-v', '-n', '-x']);
              const line = listing.split('\n').find((l) => /\bDROP\b/.test(l) && l.includes(ipAlpha));
              dropped = Number(line?.trim().split(/\s+/)[0] ?? 0);
              await ipt(['-D', ...rule]);
            },
          ),
        );
      } catch (err) {
        await ipt(['-D', ...rule]).catch(() => {});
        throw err;
      }
      cuts[1]!.dropped = dropped;
      assert.ok(dropped > 0, `the DROP rule dropped packets (${dropped})`);
    } else {
      cuts.push(await linkDownCut(nsBeta, `cut 2: link down in ${nsBeta} for ${LINK_DOWN_MS} ms (iptables missing)`));
    }
    cuts[1]!.recoveryMs = await untilProgress(sink, Math.min(TOTAL, cuts[1]!.atHeal + IN_FLIGHT), 30_000, 'the stream recovering after cut 2');

    // Cut 3: the TCP connections themselves break (reset by `ss -K` in alpha's namespace) while frames
    // are surely unacked: the sink is stopped first, so beta holds frames it cannot deliver and acks none.
    // Alpha must reconnect and resend; beta must drop what it had delivered (duplicates) and deliver the rest.
    const third = Math.max(Math.floor(TOTAL * 0.7), cuts[1]!.atHeal + IN_FLIGHT);
    await untilProgress(sink, Math.min(third, TOTAL - IN_FLIGHT), 60_000, 'the stream under way before cut 3');
    const before = (await alpha.metrics()).peers.beta!;
    sink.process.kill('SIGSTOP');
    let reset = '';
    try {
      await deadline(
        (async () => {
          while (((await alpha.metrics()).peers.beta!.unacked ?? 0) === 0) await new Promise((r) => setTimeout(r, 20));
        })(),
        20_000,
        'alpha holding unacked frames while the sink is stopped',
      );
      reset = await pair.exec(nsAlpha, 'ss', ['-K', 'dst', ipBeta]);
    } finally {
      sink.process.kill('SIGCONT');
    }
    assert.match(reset, new RegExp(`${ipBeta.replace(/\./g, '\\.')}:${PORT}`), `ss -K closed alpha's connections to beta: ${reset}`);

    for (const p of producers) assert.equal((await p.exited(60_000)).code, 0, p.stderr());
    const result = await sink.line(/^received /, 60_000);
    assert.is(result, `received ${TOTAL} errors 0 1:${FRAMES} 2:${FRAMES}`, sink.lines.filter((l) => !l.startsWith('progress')).join('\n'));
    assert.is(sink.lines.filter((l) => l.startsWith('received')).length, 1);
    assert.is((await sink.exited(10_000)).code, 0, sink.stderr());
    const streamMs = Date.now() - streamStart;

    const ma = await alpha.metrics();
    const mb = await beta.metrics();
    const out = ma.peers.beta!;
    console.log(
      [
        '',
        ...cuts.map(
          (c) =>
            `  ${c.what}: sink at ${c.atCut} -> ${c.atHeal} of ${TOTAL} during the cut, recovered (+${IN_FLIGHT} frames) ${c.recoveryMs} ms after the heal${c.dropped !== undefined ? `, ${c.dropped} packets dropped` : ''}`,
        ),
        `  stream ${streamMs} ms; alpha->beta: framesOut ${out.framesOut} resends ${out.resends} reconnects ${out.reconnects} disconnects ${out.disconnects} connectFailures ${out.connectFailures}; beta: delivered ${mb.global.delivered} duplicates ${mb.global.duplicates}`,
      ].join('\n'),
    );
    assert.is(mb.global.delivered, TOTAL, 'beta delivered every frame once');
    assert.is(out.framesOut - out.resends, TOTAL, 'alpha sent every frame once, plus resends');
    // Cut 3 broke TCP: the link came back through a new connection, and unacked frames were sent again.
    assert.ok(out.reconnects > before.reconnects, `alpha reconnected after the reset (${before.reconnects} -> ${out.reconnects})`);
    assert.ok(out.disconnects > before.disconnects, 'the reset was counted as a disconnect');
    assert.ok(out.resends > before.resends, `unacked frames were resent (${before.resends} -> ${out.resends})`);
    assert.is(out.connectFailures, 0, 'no connect failure: the peer was up all along');

    // Both relays stop on SIGTERM with exit code 0.
    assert.is(await alpha.stop(), 0, alpha.proc.lines.slice(-5).join('\n'));
    assert.is(await beta.stop(), 0, beta.proc.lines.slice(-5).join('\n'));
    // A clean stop (nothing unacked, nothing pending) removes the relays' segments; the apps have exited: nothing is left.
    for (const r of [alpha, beta]) assert.equal(r.events('stop')[0], { ...r.events('stop')[0], clean: true, unacked: 0, pending: 0 }, `${String(r.events('stop')[0]?.host)} stopped clean`);
    assert.equal(filesIn(cluster.dir), [], 'no segment left');
    console.log(`  test ${Date.now() - began} ms`);
  });

  netns('the namespaces (and every process in them) are gone afterwards', () => {
    // cleanupAll ran after the test above, whether it passed or failed.
    const left = netnsList().filter(ours);
    assert.equal(left, [], 'no network namespace of this test is left');
  });
}

netns.run();
