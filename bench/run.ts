/**
 * The benchmark runner: shmbus against a C shared-memory SPSC ring, a plain
 * JS SPSC ring over an addon mapping and Node Unix-domain sockets, between
 * two processes pinned to separate cores; the relay path (app -> relay ->
 * TCP -> relay -> app, two "hosts" as namespaces) against a direct Node TCP
 * connection; the relays' memory under a 1 M-frame backlog; and what the
 * number of lanes per inbox costs (the lane rows, `--only lanes`).
 *
 *   npm run build && npm run bench                  print the tables
 *   npm run build && npm run bench -- --write       ... and write BENCHMARKS.md
 *   node dist/bench/run.js --help                   the options
 *   node dist/bench/run.js --only jsring --rounds 1 --seconds 0.1    a few rows, briefly
 *   npm run bench -- mesh --hosts 8,16,36 [--write]  the full mesh in network namespaces (bench/mesh.ts)
 *
 * Every row runs once per round, rows in round-robin order (the start rotates
 * from round to round); each cell is the median over the rounds, and each
 * ratio is the median of per-round ratios (numerator and denominator from the
 * same round, so they saw the same vCPU placement).
 *
 * The walk: settings.ts (options) -> rows.ts (what each row runs, through
 * children.ts, relaypath.ts and backlog.ts) -> report.ts / report-relay.ts /
 * report-lanes.ts (tables) -> document.ts (BENCHMARKS.md from
 * BENCHMARKS.template.md).
 */
import { loadavg } from 'node:os';
import { BACKLOG_VARIANTS, runBacklog, type BacklogResult } from './backlog';
import { buildSpsc, checkPinning, cleanupFiles, installCleanup } from './children';
import { writeDocument } from './document';
import { codeVersion, cpuSnapshot, foreignShare, machine, QUIET_SHARE, stealShare, waitQuiet } from './machine';
import { relayCluster, relayProblems, stopRoundClusters } from './relaypath';
import { backlogMemoryTable, backlogPressureTable, mib, relayCostTable, relayTable } from './report-relay';
import { describeMetric, fmtPercent, localTable, targetsTable, type Results } from './report';
import { lanesCostTable, lanesFaninTable, lanesMemoryTable } from './report-lanes';
import { meshMain } from './mesh';
import { defineRows } from './rows';
import { BACKLOG_ID, EXIT_USAGE, EXT, SPSC_BINARY, UsageError, helpText, parseSettings, type Settings } from './settings';

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** Parse the command line; null (with the exit code set) when there is nothing to run. */
function settingsOrExit(): Settings | null {
  let settings: Settings;
  try {
    settings = parseSettings(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`bench: ${err.message}`);
    process.exitCode = EXIT_USAGE;
    return null;
  }
  if (settings.help) {
    console.log(helpText());
    return null;
  }
  if (settings.list) {
    for (const row of defineRows(settings, SPSC_BINARY)) console.log(row.id);
    if (settings.only.test(BACKLOG_ID)) console.log(BACKLOG_ID);
    return null;
  }
  return settings;
}

async function main(): Promise<void> {
  if (process.argv[2] === 'mesh') return meshMain(process.argv.slice(3));
  const settings = settingsOrExit();
  if (settings === null) return;
  installCleanup();
  const started = Date.now();
  const codeAtStart = codeVersion();
  const before = cpuSnapshot();
  const load0 = loadavg();
  const info = machine();

  if (EXT === '.ts') {
    console.error('bench: WARNING: running from source through tsx, which turns module constants into getters: shmbus figures come out several times too low. Use `npm run build && npm run bench` for real figures.');
  }
  const pinned = checkPinning(settings);
  if (!pinned) console.error('bench: WARNING: taskset is missing or cannot pin; running UNPINNED (figures will be noisier)');
  if (info.nproc < 2) console.error(`bench: WARNING: only ${info.nproc} CPU; both sides share it`);

  // The C ring is compiled only when one of its rows is selected.
  const wantC = defineRows(settings, SPSC_BINARY).some((r) => r.impl === 'c');
  const rows = defineRows(settings, wantC ? buildSpsc() : null);
  const runBacklogRow = settings.only.test(BACKLOG_ID);
  if (rows.length === 0 && !runBacklogRow) {
    console.error(`bench: no rows match ${settings.only} (see --list)`);
    process.exitCode = EXIT_USAGE;
    return;
  }
  const results: Results = new Map(rows.map((row) => [row.id, []]));
  const failures: string[] = [];
  console.error(`bench: ${rows.length} rows × ${settings.rounds} rounds, ${settings.seconds}s per measurement, sender on CPU ${pinned ? settings.cpuSend : '-'}, receiver on CPU ${pinned ? settings.cpuRecv : '-'}`);

  const step = Math.max(1, Math.floor(rows.length / settings.rounds));
  const roundForeign: number[] = [];
  for (let round = 0; round < settings.rounds; round++) {
    if (settings.quietWait > 0) {
      const share = await waitQuiet(settings.quietWait);
      if (share >= QUIET_SHARE) console.error(`bench: machine still busy (${(share * 100).toFixed(0)} % used by others) after ${settings.quietWait}s; running round ${round + 1} anyway`);
    }
    const t0 = Date.now();
    const snap0 = cpuSnapshot();
    const progress: string[] = [];
    // The relays of this round, started (and warmed up) before any row is measured.
    for (const batch of new Set(rows.flatMap((r) => (r.relayBatch !== undefined ? [r.relayBatch] : [])))) {
      try {
        await relayCluster(settings, batch);
      } catch (err) {
        // The rows will try again and report the failure.
        console.error(`bench: cannot start the relays (batchFrames ${batch}): ${message(err)}`);
      }
    }
    for (let k = 0; k < rows.length; k++) {
      const row = rows[(k + round * step) % rows.length]!;
      try {
        const metric = await row.run();
        results.get(row.id)!.push(metric);
        progress.push(`${row.id}=${describeMetric(metric)}`);
      } catch (err) {
        results.get(row.id)!.push(null);
        const failure = `round ${round + 1}, ${row.id}: ${message(err)}`;
        failures.push(failure);
        console.error(`bench: FAILED ${failure}`);
      } finally {
        cleanupFiles();
      }
    }
    // Stopped (and reaped) before the CPU snapshot, so their time counts as ours.
    await stopRoundClusters();
    const foreignRound = foreignShare(snap0, cpuSnapshot());
    roundForeign.push(foreignRound);
    console.error(`bench: round ${round + 1}/${settings.rounds} (${((Date.now() - t0) / 1000).toFixed(1)}s, others used ${(foreignRound * 100).toFixed(0)} %): ${progress.join(' ')}`);
  }

  const backlogs: BacklogResult[] = [];
  let backlogForeign = NaN;
  if (runBacklogRow) {
    if (settings.quietWait > 0) await waitQuiet(settings.quietWait);
    const snap0 = cpuSnapshot();
    for (const variant of BACKLOG_VARIANTS) {
      try {
        const b = await runBacklog(settings, variant);
        backlogs.push(b);
        console.error(`bench: ${BACKLOG_ID} (${variant.name}): relay peak VmRSS alpha ${mib(b.all.alpha.rss)}, beta ${mib(b.all.beta.rss)}; ${b.received} frames in order`);
      } catch (err) {
        const failure = `${BACKLOG_ID} (${variant.name}): ${message(err)}`;
        failures.push(failure);
        console.error(`bench: FAILED ${failure}`);
      } finally {
        cleanupFiles();
      }
    }
    backlogForeign = foreignShare(snap0, cpuSnapshot());
  }

  const after = cpuSnapshot();
  const foreign = foreignShare(before, after);
  const record = {
    settings,
    rows,
    results,
    failures,
    relayProblems,
    backlogs,
    backlogForeign,
    started,
    elapsedSeconds: (Date.now() - started) / 1000,
    load0,
    load1: loadavg(),
    foreign,
    roundForeign,
    steal: stealShare(before, after),
    machine: info,
    codeAtStart,
    codeAtEnd: codeVersion(),
    pinned,
  };

  const hasLocal = rows.some((r) => r.impl === 'c' || r.impl === 'jsring' || r.impl === 'uds' || r.impl === 'shmbus');
  const hasRelay = rows.some((r) => r.impl === 'tcp' || r.impl === 'relay');
  if (hasLocal) console.log(`${localTable(results)}\n\nTargets (64 B):\n\n${targetsTable(results)}\n`);
  if (hasRelay) console.log(`Relay path:\n\n${relayTable(results)}\n\n${relayCostTable(results, rows)}\n`);
  if (rows.some((r) => r.impl === 'lanes')) console.log(`Lanes per inbox:\n\n${[lanesCostTable(results), lanesMemoryTable(results), lanesFaninTable(results)].filter(Boolean).join('\n\n')}\n`);
  if (backlogs.length) console.log(`Relay memory under a backlog (other processes used ${fmtPercent(backlogForeign)} of the machine meanwhile):\n\n${backlogMemoryTable(backlogs, settings.backlogStallMs)}\n\n${backlogPressureTable(backlogs, settings.backlogStallMs)}\n`);
  if (relayProblems.length) console.error(`bench: relay problems: ${relayProblems.join('; ')}`);
  console.log(`${settings.rounds} round${settings.rounds === 1 ? '' : 's'}, ${record.elapsedSeconds.toFixed(0)} s; CPU time used by other processes during the run: ${fmtPercent(foreign)} of the machine; steal ${fmtPercent(record.steal)}`);
  if (foreign > 0.05) console.error(`bench: WARNING: other processes used ${(foreign * 100).toFixed(0)} % of the machine during the run; figures are disturbed`);
  if (failures.length) console.error(`bench: ${failures.length} row runs failed`);
  if (settings.json) console.log(JSON.stringify({ machine: info, rounds: settings.rounds, seconds: settings.seconds, results: Object.fromEntries(results), failures }));

  if (settings.write) console.error(`bench: wrote ${writeDocument(record)}`);
  if (failures.length > 0 && failures.length === rows.length * settings.rounds + (runBacklogRow ? BACKLOG_VARIANTS.length : 0)) process.exitCode = 1;
}

main().catch((err) => {
  console.error(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
});
