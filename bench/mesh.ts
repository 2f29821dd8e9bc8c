/**
 * `npm run bench -- mesh [--hosts 8,16,36] [--write]`: the full mesh of issue 9
 * at benchmark size, through the same driver as test/67 (harness/mesh-run.ts):
 * N hosts in network namespaces on one bridge, a transit-server per host, and
 * every host's producer sending K frames to every other host's sink, all
 * N × (N−1) streams at once. Every frame is checked (once, in order, per
 * source) and every run must end clean, or no figure is reported for it.
 *
 * One run per size, sizes in the order given; K defaults to what makes about
 * --total frames per size (a steady state of several seconds at every size).
 * Needs root (network namespaces). With --write the table replaces the mesh
 * section of BENCHMARKS.md (between its markers); the rest of the file stays.
 */
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { MAX_MESH_HOSTS } from '../harness/mesh';
import { coldStartMesh, describeMeshRun, runMesh, type ColdStartResult, type MeshRunResult } from '../harness/mesh-run';
import { writeMeshSection } from './document';
import { codeVersion, cpuSnapshot, foreignShare, machine, QUIET_SHARE, stealShare, waitQuiet } from './machine';

const USAGE = `Usage: node dist/bench/run.js mesh [options]   (npm run bench -- mesh [options])

  --hosts LIST     mesh sizes, comma-separated, each 2..${MAX_MESH_HOSTS} (default 36)
  --frames K       frames per stream (default: about --total frames per size)
  --total F        frames per size when --frames is not given (default 2000000)
  --payload B      payload bytes per frame, 8..1024 (default 32)
  --idle-ms MS     the relays' limits.idleTimeoutMs; after the stream the run
                   waits MS + 2 s and counts the TCP links again (default 5000)
  --quiet-wait S   before each size, wait up to S s for a quiet machine (default 5)
  --logs DIR       keep each relay's log as DIR/<hosts>/<host>.log
  --relay-cpu-prof DIR   run the relays with node --cpu-prof, profiles in DIR/<hosts>/
  --write          write the table into BENCHMARKS.md (its mesh section)
  --help`;

interface MeshSettings {
  sizes: number[];
  frames: number | null;
  total: number;
  payload: number;
  idleMs: number;
  quietWait: number;
  write: boolean;
  logs: string | null;
  relayProf: string | null;
}

function intIn(text: string, name: string, min: number, max: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in ${min}..${max}, not ${JSON.stringify(text)}`);
  return n;
}

function parseMeshArgs(argv: string[]): MeshSettings | null {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      hosts: { type: 'string', default: '36' },
      frames: { type: 'string' },
      total: { type: 'string', default: '2000000' },
      payload: { type: 'string', default: '32' },
      'idle-ms': { type: 'string', default: '5000' },
      'quiet-wait': { type: 'string', default: '5' },
      write: { type: 'boolean', default: false },
      logs: { type: 'string' },
      'relay-cpu-prof': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return null;
  return {
    sizes: values.hosts.split(',').map((h) => intIn(h.trim(), 'hosts', 2, MAX_MESH_HOSTS)),
    frames: values.frames === undefined ? null : intIn(values.frames, 'frames', 1, 10_000_000),
    total: intIn(values.total, 'total', 1000, 100_000_000),
    payload: intIn(values.payload, 'payload', 8, 1024),
    idleMs: intIn(values['idle-ms'], 'idle-ms', 100, 600_000),
    quietWait: intIn(values['quiet-wait'], 'quiet-wait', 0, 600),
    write: values.write,
    logs: values.logs ?? null,
    relayProf: values['relay-cpu-prof'] ?? null,
  };
}

const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

/** The BENCHMARKS.md section: what was run, the table, and the per-size details. */
function section(s: MeshSettings, runs: Array<{ result: MeshRunResult; cold: ColdStartResult; foreign: number }>, meta: { date: string; code: string; load0: string; load1: string; foreign: number; steal: number; command: string }): string {
  const info = machine();
  const avg = (r: MeshRunResult, f: (x: MeshRunResult['rows'][number]) => number) => r.rows.reduce((a, x) => a + f(x), 0) / r.rows.length;
  const max = (r: MeshRunResult, f: (x: MeshRunResult['rows'][number]) => number) => Math.max(...r.rows.map(f));
  const sum = (r: MeshRunResult, f: (x: MeshRunResult['rows'][number]) => number) => r.rows.reduce((a, x) => a + f(x), 0);
  const cols = runs.map(({ result: r }) => r);
  const row = (label: string, f: (r: MeshRunResult) => string) => `| ${label} | ${cols.map(f).join(' | ')} |`;
  const coldRow = (label: string, f: (c: ColdStartResult) => string) => `| ${label} | ${runs.map(({ cold }) => f(cold)).join(' | ')} |`;
  return [
    '## A full mesh in network namespaces',
    '',
    `Measured ${meta.date} on ${info.nproc} vCPUs (${info.cpuModel}), Linux ${info.kernel}, Node ${info.node}; code: ${meta.code}. Command:`,
    '',
    '```',
    meta.command,
    '```',
    '',
    `Each size is two runs of the drivers test/67 runs at N = 8 (harness/mesh-run.ts). First a cold start with \`limits.minLinks: 1\` and no application (\`coldStartMesh\`): N relays spawned at once, each opening one link to every peer at start; full mesh is when the last relay has an authenticated link to each of its peers (its \`peer_up\`/\`peer_accepted\` log events). Then the traffic run (\`runMesh\`): N Linux network namespaces joined by a bridge (a veth each, 169.254.x.y/16), one cluster config, one transit-server per host (\`node dist/relay/cli.js\`, default limits but \`idleTimeoutMs: ${s.idleMs}\`, so \`poolSize\` 2), started at once (a cold start); then one sink and one producer per host, each producer sending K frames of ${s.payload} B to every other host's sink, frame 0 to every destination, then frame 1, ... — all N × (N−1) streams at once. Every sink checked every frame (exactly once, in order, per source); every relay stopped clean with SIGTERM; nothing was left. Nothing is pinned: N relays, N sinks and N producers share the machine's ${info.nproc} cores, so frames/s is what the whole mesh moves through this one machine, not what one link can carry. Load average ${meta.load0} before, ${meta.load1} after; CPU used by processes other than the benchmark during the run: ${(meta.foreign * 100).toFixed(1)} % of the machine (per size: ${runs.map((r) => `${(r.foreign * 100).toFixed(1)} %`).join(', ')}; steal ${(meta.steal * 100).toFixed(1)} %).`,
    '',
    `| hosts | ${cols.map((r) => String(r.hosts)).join(' | ')} |`,
    `|---|${cols.map(() => '--:').join('|')}|`,
    coldRow('**cold start, \`minLinks: 1\`, no application: full mesh, ms after spawning the relays**', (c) => `**${c.fullMeshMs ?? '—'}**`),
    coldRow('… relays started (all `start` lines), ms; connect failures on the way; TCP links per relay; relay RSS, MiB', (c) => `${c.relaysStartMs}; ${c.connectFailures}; ${c.tcpPerRelay.toFixed(1)}; ${mb(c.rss)}`),
    row('streams × frames each (K)', (r) => `${r.streams} × ${r.frames}`),
    row('relays started (all `start` lines), ms', (r) => String(r.relaysStartMs)),
    row('traffic run (links opened on demand): full mesh, ms after relay start / after first send', (r) => `${r.fullMeshMs ?? '—'} / ${r.fullMeshAfterSendMs ?? '—'}`),
    row('frames in all; first send → last sink done, ms', (r) => `${r.total} in ${r.streamMs}`),
    row('**frames/s across the mesh**', (r) => `**${r.framesPerSec}**`),
    row('relay RSS at the end, mean / max peak (VmHWM), MiB', (r) => `${mb(avg(r, (x) => x.rss))} / ${mb(max(r, (x) => x.hwm))}`),
    row('relay CPU per relay, mean: from start, s; during the stream, s', (r) => `${(avg(r, (x) => x.cpuMs) / 1000).toFixed(1)}; ${(avg(r, (x) => x.streamCpuMs) / 1000).toFixed(1)}`),
    row('frames per DATA message, mean', (r) => (sum(r, (x) => x.framesOut) / Math.max(1, sum(r, (x) => x.batchesOut))).toFixed(1)),
    row('relay CPU per frame during the stream (both relays), µs', (r) => ((sum(r, (x) => x.streamCpuMs) * 1000) / r.total).toFixed(2)),
    row('relay open fds, max', (r) => String(max(r, (x) => x.fds))),
    row('TCP links per relay (ss, both directions), mean; per peer', (r) => `${avg(r, (x) => x.tcp).toFixed(1)}; ${(avg(r, (x) => x.tcp) / (r.hosts - 1)).toFixed(2)}`),
    row(`TCP links left ${s.idleMs + 2000} ms after the stream (idle timeout ${s.idleMs} ms), all relays`, (r) => String(sum(r, (x) => x.tcpAfterIdle ?? NaN))),
    row('log lines per relay, max', (r) => String(max(r, (x) => x.logLines))),
    row('resends / duplicates dropped / reconnects / connect failures (all relays)', (r) => `${sum(r, (x) => x.resends)} / ${sum(r, (x) => x.duplicates)} / ${sum(r, (x) => x.reconnects)} / ${sum(r, (x) => x.connectFailures)}`),
    '',
    reading(cols, runs.map((r) => r.cold)),
    '',
  ].join('\n');
}

/** The prose under the table: what grows with N and why, with this run's figures. */
function reading(cols: MeshRunResult[], colds: ColdStartResult[]): string {
  const first = cols[0]!;
  const last = cols[cols.length - 1]!;
  const perMessage = (r: MeshRunResult) => (r.rows.reduce((a, x) => a + x.framesOut, 0) / Math.max(1, r.rows.reduce((a, x) => a + x.batchesOut, 0))).toFixed(1);
  // Each frame crosses two relays: CPU per relay per frame it handled.
  const perHandled = (r: MeshRunResult) => ((r.rows.reduce((a, x) => a + x.streamCpuMs, 0) * 1000) / (2 * r.total)).toFixed(2);
  const span = cols.length > 1 ? `from ${first.hosts} to ${last.hosts} hosts` : `at ${last.hosts} hosts`;
  return [
    `**Reading it.** The cold start is the relays' own time to a full mesh: ${cols.length > 1 ? `it grows with N × (N − 1) handshakes (each an HMAC each way) made by N processes on 2 cores` : 'N × (N − 1) handshakes made by N processes on 2 cores'}, and it ends soon after the last relay is up (${colds.map((c) => `${c.relaysStartMs} → ${c.fullMeshMs ?? '—'} ms`).join(', ')}: last \`start\` line → full mesh). Its connect failures are relays dialling peers whose relay has not started listening yet (connection refused; a 36-host cold start with \`--logs\`, 2026-11-29: every logged \`connect_failed\` was ECONNREFUSED), retried with backoff — the readiness story of a mesh that starts all at once: nothing is lost or stuck, each link is made once its peer listens. In the traffic run links are opened when a first frame for a peer arrives (the default, \`minLinks: 0\`), so its time to full mesh includes the ${last.hosts} producers' start-up (the first sends), and so does "first send → last sink done". Each relay holds one link per peer per direction here (${last.rows[0] === undefined ? '' : `${(last.rows.reduce((a, x) => a + x.tcp, 0) / last.rows.length / (last.hosts - 1)).toFixed(2)} per peer at ${last.hosts} hosts: `}one producer per host uses one pool slot each way), ${last.hosts - 1} × 2 sockets at ${last.hosts} hosts, and every one of them was closed by the idle timeout after the stream.`,
    '',
    `Frames/s fall ${span} while the work per frame stays the same because the batches shrink: each producer interleaves its ${last.hosts - 1} destinations, a relay's pump turn takes what its outbound lanes hold (at most 1024 unacknowledged frames per producer) and splits it over the peers, so a DATA message carried ${cols.map(perMessage).join(' → ')} frames. Per-message costs — a \`write\`, the peer's read and wake-up, an ACK back, a futex wake of the parked sink — are spread over fewer frames: CPU per frame each relay handled went ${cols.map(perHandled).join(' → ')} µs (two relays per frame; the two-host relay rows above carry 32-frame messages). A profile of a 16-host run (\`npm run bench -- mesh --hosts 16 --total 800000 --relay-cpu-prof DIR\`, measured 2026-11-29, self time of the 16 relays' non-idle samples) puts the doorbell calls on top, 16.7 % together: \`ring\` (a futex wake of a parked sink after a publish) 8.9 % and \`wakeAll\` (a futex wake of a producer waiting for room in its lane) 7.8 %; then the socket writes (\`writeBuffer\`) 11.4 % and the frame copy into DATA (\`append\`) 2.5 % — wake-ups of processes that park between small batches, where the two-host rows' busy processes seldom park. And ${last.hosts * 3} processes (relay, sink, producer per host) share the 2 cores, so wake-ups wait for a core.`,
    '',
    'At one machine for all hosts, the kernel is shared too: all network namespaces use one neighbour (ARP) table, whose dynamic entries are capped at `net.ipv4.neigh.default.gc_thresh3` (1024); a 36-host mesh needs 36 × 35 = 1260, and past the cap connects time out ("neighbor table overflow" in dmesg). The harness therefore writes permanent neighbour entries (harness/mesh.ts `staticNeighbours`) and fails a run whose kernel log shows an overflow. Real hosts each have their own table; containers on one large machine do not — see docs/OPERATIONS.md.',
  ].join('\n');
}

export async function meshMain(argv: string[]): Promise<void> {
  let s: MeshSettings | null;
  try {
    s = parseMeshArgs(argv);
  } catch (err) {
    console.error(`bench mesh: ${err instanceof Error ? err.message : String(err)}\n\n${USAGE}`);
    process.exitCode = 64;
    return;
  }
  if (s === null) {
    console.log(USAGE);
    return;
  }
  if (process.getuid?.() !== 0) {
    console.error('bench mesh: network namespaces need root');
    process.exitCode = 77;
    return;
  }
  const load0 = loadavg();
  const code = codeVersion();
  const date = new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  const before = cpuSnapshot();
  const runs: Array<{ result: MeshRunResult; cold: ColdStartResult; foreign: number }> = [];
  let failed = false;
  for (const n of s.sizes) {
    if (s.quietWait > 0) {
      const share = await waitQuiet(s.quietWait);
      if (share >= QUIET_SHARE) console.error(`bench mesh: machine still busy (${(share * 100).toFixed(0)} % used by others) after ${s.quietWait} s; running anyway`);
    }
    const cold = await coldStartMesh({ hosts: n, log: (line) => console.error(`bench mesh:   ${line}`), ...(s.logs === null ? {} : { logDir: join(s.logs, `${n}-cold`) }) });
    if (cold.problems.length > 0) {
      failed = true;
      console.error(`bench mesh: ${n} hosts, cold start: ${cold.problems.length} problem(s); no figures reported for this size:\n  ${cold.problems.slice(0, 40).join('\n  ')}`);
      continue;
    }
    const frames = s.frames ?? Math.max(1, Math.round(s.total / (n * (n - 1))));
    console.error(`bench mesh: ${n} hosts, ${n * (n - 1)} streams × ${frames} frames of ${s.payload} B`);
    const snap = cpuSnapshot();
    const t0 = Date.now();
    const result = await runMesh({
      hosts: n,
      frames,
      payloadSize: s.payload,
      limits: { idleTimeoutMs: s.idleMs },
      streamMs: 600_000,
      idleCloseMs: s.idleMs + 2000,
      ...(s.logs === null ? {} : { logDir: join(s.logs, String(n)) }),
      ...(s.relayProf === null ? {} : { relayNodeArgs: ['--cpu-prof', `--cpu-prof-dir=${join(s.relayProf, String(n))}`] }),
      log: (line) => console.error(`bench mesh:   ${((Date.now() - t0) / 1000).toFixed(1)} s  ${line}`),
    });
    const foreign = foreignShare(snap, cpuSnapshot());
    for (const line of describeMeshRun(result)) console.log(`  ${line}`);
    if (result.problems.length > 0) {
      failed = true;
      console.error(`bench mesh: ${n} hosts: ${result.problems.length} problem(s); no figures reported for this size:\n  ${result.problems.slice(0, 40).join('\n  ')}`);
      continue;
    }
    runs.push({ result, cold, foreign });
  }
  const after = cpuSnapshot();
  if (runs.length === 0) {
    process.exitCode = 1;
    return;
  }
  const fmtLoad = (l: number[]) => l.map((x) => x.toFixed(2)).join(' ');
  const command = `npm run bench -- mesh ${argv.join(' ')}`.trim();
  const text = section(s, runs, { date, code, load0: fmtLoad(load0), load1: fmtLoad(loadavg()), foreign: foreignShare(before, after), steal: stealShare(before, after), command });
  console.log(`\n${text}`);
  if (s.write && !failed) console.error(`bench mesh: wrote ${writeMeshSection(text)}`);
  else if (s.write) console.error('bench mesh: not writing BENCHMARKS.md: a size had problems');
  if (failed) process.exitCode = 1;
}
