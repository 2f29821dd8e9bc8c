/**
 * BENCHMARKS.md: the values and flags of bench/BENCHMARKS.template.md, made
 * from one run's record, and the file written from them. The prose lives in
 * the template; this file only says what each placeholder holds.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { relative } from 'node:path';
import * as layout from '../src/layout';
import type { BacklogResult } from './backlog';
import type { MachineInfo } from './machine';
import { backlogMemoryTable, backlogPressureTable, relayCostTable, relayTable } from './report-relay';
import { fmt, fmtPercent, fmtRatio, fmtShare, localTable, medianOf, roundRatio, spreadTable, targetsTable, type Results } from './report';
import { bytes, lanesCostTable, lanesFaninTable, lanesFigures, lanesMemoryTable } from './report-lanes';
import type { Row } from './rows';
import {
  BACKLOG_CAPACITY,
  BACKLOG_DEFAULT_PENDING,
  BACKLOG_SIZE,
  BACKLOG_SMALL_PENDING,
  BACKLOG_TIMEOUT_MS,
  BENCHMARKS_FILE,
  CAPACITY,
  LANE_COUNTS_COST,
  LANE_COUNTS_MEMORY,
  LANES_SIZE,
  MAX_FRAMES,
  MAX_ROUND_TRIPS,
  PRODUCERS,
  ROOT,
  SLOT_SIZE,
  TEMPLATE_FILE,
  WARMUP_MS,
  WIDE_FANIN,
  WIDE_FANIN_MIN_SECONDS,
  WIDE_FANIN_WARMUP_MS,
  type Settings,
} from './settings';
import { fill } from './template';

/** Everything one run produced that the report shows. */
export interface RunRecord {
  settings: Settings;
  rows: readonly Row[];
  results: Results;
  failures: readonly string[];
  relayProblems: readonly string[];
  backlogs: readonly BacklogResult[];
  /** Share of the machine other processes used during the backlog runs. */
  backlogForeign: number;
  /** Epoch ms at the start, and the run's length in seconds. */
  started: number;
  elapsedSeconds: number;
  load0: readonly number[];
  load1: readonly number[];
  /** Shares of the machine: used by other processes (whole run, per round), stolen by the hypervisor. */
  foreign: number;
  roundForeign: readonly number[];
  steal: number;
  machine: MachineInfo;
  codeAtStart: string;
  codeAtEnd: string;
  pinned: boolean;
}

/** The environment variables of the settings (shown in the command line when set). */
const ENV_NAMES = ['BENCH_ROUNDS', 'BENCH_SECONDS', 'BENCH_ONLY', 'BENCH_CPUS', 'BENCH_QUIET_WAIT', 'BENCH_RELAY_IDLE', 'BENCH_BACKLOG_FRAMES', 'BENCH_BACKLOG_STALL_MS'];

/** The command that made this run, as the reader would type it. */
export function commandLine(settings: Settings): string {
  const env = ENV_NAMES.filter((k) => process.env[k] !== undefined).map((k) => `${k}=${process.env[k]} `).join('');
  const argv = settings.argv;
  if (process.env.npm_lifecycle_event === 'bench') return `${env}npm run bench${argv.length ? ` -- ${argv.join(' ')}` : ''}`;
  return `${env}node ${[...process.execArgv, relative(ROOT, process.argv[1]!), ...argv].join(' ')}`;
}

function us(v: number): string {
  return Number.isFinite(v) ? `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} µs` : '—';
}

function count(n: number): string {
  return Number.isFinite(n) ? n.toLocaleString('en-US') : '—';
}

/** The figures the relay prose quotes. */
function relayFigures(results: Results): Record<string, string> {
  const m = (id: string, k: Parameters<typeof medianOf>[2]) => medianOf(results, id, k);
  const cpuA = m('relay:oneway32:64', 'alphaCpuUs');
  const cpuB = m('relay:oneway32:64', 'betaCpuUs');
  const r32 = m('relay:oneway32:64', 'rate');
  // CPU µs per frame × frames per second = µs of CPU per second: ÷ 10⁶ is the share of a core.
  const busy = (cpu: number) => (Number.isFinite(cpu * r32) ? `${((cpu * r32) / 1e4).toFixed(0)} %` : '—');
  return {
    'figure:relayCpuAlpha32': us(cpuA),
    'figure:relayCpuBeta32': us(cpuB),
    'figure:relayRate32': fmt(r32, 'M/s'),
    'figure:relayBusyAlpha32': busy(cpuA),
    'figure:relayBusyBeta32': busy(cpuB),
    'figure:tcpRate32': fmt(m('tcp:oneway32:64', 'rate'), 'M/s'),
    'figure:udsRttParked': us(m('uds:rttParked:64', 'p50')),
    'figure:shmbusRttParked': us(m('shmbus:rttParked:64', 'p50')),
    'figure:tcpRttParked': us(m('tcp:rttParked:64', 'p50')),
    'figure:relayRttParked': us(m('relay:rttParked:64', 'p50')),
    'figure:relayRttCpuAlpha': us(m('relay:rttParked:64', 'alphaCpuUs')),
    'figure:relayRttCpuBeta': us(m('relay:rttParked:64', 'betaCpuUs')),
  };
}

/** The figures the local prose quotes (same-round ratios, medians). */
function localFigures(results: Results): Record<string, string> {
  const m = (id: string) => medianOf(results, id, 'rate');
  const r = (a: string, b: string) => roundRatio(results, a, b, 'rate');
  return {
    'figure:c1': fmt(m('c:oneway1:64'), 'M/s'),
    'figure:shmbus1': fmt(m('shmbus:oneway1:64'), 'M/s'),
    'figure:uds32': fmt(m('uds:oneway32:64'), 'M/s'),
    'figure:jsringShareC1': fmtShare(r('jsring:oneway1:64', 'c:oneway1:64')),
    'figure:jsringShareC32': fmtShare(r('jsring:oneway32:64', 'c:oneway32:64')),
    'figure:shmbusShareJs1': fmtShare(r('shmbus:oneway1:64', 'jsring:oneway1:64')),
    'figure:shmbusShareJs32': fmtShare(r('shmbus:oneway32:64', 'jsring:oneway32:64')),
    'figure:shmbusVsUds32': fmtRatio(r('shmbus:oneway32:64', 'uds:oneway32:64')),
    'figure:jsringVsUds32': fmtRatio(r('jsring:oneway32:64', 'uds:oneway32:64')),
  };
}

/** Every value and flag of the template, from one run. */
export function templateInputs(run: RunRecord): { values: Record<string, string>; flags: Record<string, boolean> } {
  const { settings, results, rows, backlogs } = run;
  const hasImpl = (...impls: string[]) => rows.some((r) => impls.includes(r.impl));
  const hasLanes = (measure: string) => rows.some((r) => r.impl === 'lanes' && r.measure === measure);
  const flags = {
    local: hasImpl('c', 'jsring', 'uds', 'shmbus'),
    relay: hasImpl('tcp', 'relay'),
    backlog: backlogs.length > 0,
    lanes: hasImpl('lanes'),
    lanesCost: hasLanes('consumer'),
    lanesMemory: hasLanes('memory'),
    lanesFanin: hasLanes('fanin'),
    pinned: run.pinned,
    relayIdleSpin: settings.relayIdle === 'spin',
    codeChanged: run.codeAtEnd !== run.codeAtStart,
    failures: run.failures.length > 0,
    relayProblems: run.relayProblems.length > 0,
  };
  const values: Record<string, string> = {
    'run:date': new Date(run.started).toISOString().replace(/\.\d+Z$/, 'Z'),
    'run:nproc': String(run.machine.nproc),
    'run:cpuModel': run.machine.cpuModel,
    'run:kernel': run.machine.kernel,
    'run:node': run.machine.node,
    'run:code': run.codeAtStart,
    'run:codeAtEnd': run.codeAtEnd,
    'run:command': commandLine(settings),
    'run:rounds': String(settings.rounds),
    'run:elapsed': run.elapsedSeconds.toFixed(0),
    'run:load0': run.load0.map((x) => x.toFixed(2)).join(' '),
    'run:load1': run.load1.map((x) => x.toFixed(2)).join(' '),
    'run:foreign': fmtPercent(run.foreign),
    'run:roundForeign': run.roundForeign.map((x) => `${(x * 100).toFixed(0)} %`).join(', '),
    'run:steal': fmtPercent(run.steal),
    'run:failureCount': String(run.failures.length),
    'run:failures': run.failures.join('; '),
    'run:relayProblems': run.relayProblems.join('; '),
    'setting:cpuSend': String(settings.cpuSend),
    'setting:cpuRecv': String(settings.cpuRecv),
    'setting:seconds': String(settings.seconds),
    'setting:warmupMs': String(WARMUP_MS),
    'setting:maxFramesM': String(MAX_FRAMES / 1e6),
    'setting:maxRoundTripsK': String(MAX_ROUND_TRIPS / 1000),
    'setting:capacity': String(CAPACITY),
    'setting:slot64': String(SLOT_SIZE[64]),
    'setting:slot1024': String(SLOT_SIZE[1024]),
    'setting:producers': String(PRODUCERS),
    'setting:defaultLanes': String(layout.DEFAULT_LANES),
    'setting:relayLanes': String(layout.DEFAULT_RELAY_LANES),
    'setting:maxLanes': String(layout.MAX_LANES),
    'setting:defaultSlotSize': String(layout.DEFAULT_SLOT_SIZE),
    'setting:defaultCapacity': String(layout.DEFAULT_CAPACITY),
    'setting:laneLength': String(layout.LANE_LENGTH),
    'setting:laneBytes': bytes(layout.DEFAULT_CAPACITY * layout.DEFAULT_SLOT_SIZE),
    'setting:lanesCost': LANE_COUNTS_COST.join(', '),
    'setting:lanesMemory': LANE_COUNTS_MEMORY.join(', '),
    'setting:lanesSize': String(LANES_SIZE),
    'setting:wideFanin': String(WIDE_FANIN),
    'setting:wideFaninWarmupMs': String(WIDE_FANIN_WARMUP_MS),
    'setting:wideFaninSeconds': String(Math.max(settings.seconds, WIDE_FANIN_MIN_SECONDS)),
    'setting:backlogFrames': count(settings.backlogFrames),
    'setting:backlogFramesM': (settings.backlogFrames / 1e6).toLocaleString('en-US'),
    'setting:backlogSize': String(BACKLOG_SIZE),
    'setting:backlogCapacity': String(BACKLOG_CAPACITY),
    'setting:backlogStallS': String(settings.backlogStallMs / 1000),
    'setting:backlogSmallPending': String(BACKLOG_SMALL_PENDING),
    'setting:backlogDefaultPending': count(BACKLOG_DEFAULT_PENDING),
    'setting:backlogTimeoutS': String(BACKLOG_TIMEOUT_MS / 1000),
    'figure:backlogForeign': fmtPercent(run.backlogForeign),
    'figure:outboundCapacity': count(backlogs[0]?.outboundCapacity ?? NaN),
    ...relayFigures(results),
    ...localFigures(results),
    ...lanesFigures(results),
    'table:local': localTable(results),
    'table:targets': targetsTable(results),
    'table:relay': relayTable(results),
    'table:relayCost': relayCostTable(results, rows),
    'table:backlogMemory': backlogMemoryTable(backlogs, settings.backlogStallMs),
    'table:backlogPressure': backlogPressureTable(backlogs, settings.backlogStallMs),
    'table:lanesCost': lanesCostTable(results),
    'table:lanesMemory': lanesMemoryTable(results),
    'table:lanesFanin': lanesFaninTable(results),
    'table:spread': spreadTable(results, rows),
  };
  return { values, flags };
}

/** BENCHMARKS.md of one run, from the template. */
export function renderDocument(run: RunRecord): string {
  const { values, flags } = templateInputs(run);
  return fill(relative(ROOT, TEMPLATE_FILE), readFileSync(TEMPLATE_FILE, 'utf8'), values, flags);
}

/** Write BENCHMARKS.md; returns its path. */
export function writeDocument(run: RunRecord): string {
  writeFileSync(BENCHMARKS_FILE, keepMeshSection(renderDocument(run)));
  return BENCHMARKS_FILE;
}

const MESH_BEGIN = '<!-- mesh:begin -->';
const MESH_END = '<!-- mesh:end -->';

/** The mesh section of BENCHMARKS.md now (written by `bench mesh --write`, bench/mesh.ts), markers included; null if none. */
function meshSection(text: string): string | null {
  const a = text.indexOf(MESH_BEGIN);
  const b = text.indexOf(MESH_END, a);
  return a < 0 || b < 0 ? null : text.slice(a, b + MESH_END.length);
}

/** `document` with its (empty) mesh section replaced by `section`; appended at the end when it has no markers. */
export function withMeshSection(document: string, section: string): string {
  const old = meshSection(document);
  return old === null ? `${document.trimEnd()}\n\n${section}\n` : document.replace(old, () => section);
}

/** A rendered document keeps the mesh section the file has: the main run does not measure the mesh. */
function keepMeshSection(rendered: string): string {
  let current = '';
  try {
    current = readFileSync(BENCHMARKS_FILE, 'utf8');
  } catch {
    return rendered; // no file yet
  }
  const section = meshSection(current);
  return section === null ? rendered : withMeshSection(rendered, section);
}

/** Write the mesh section into BENCHMARKS.md (between its markers), leaving the rest as it is. */
export function writeMeshSection(body: string): string {
  let current = '';
  try {
    current = readFileSync(BENCHMARKS_FILE, 'utf8');
  } catch {
    // no file yet: the section alone
  }
  writeFileSync(BENCHMARKS_FILE, withMeshSection(current, `${MESH_BEGIN}\n${body.trim()}\n${MESH_END}`));
  return BENCHMARKS_FILE;
}
