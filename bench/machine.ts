/**
 * The machine the benchmark runs on, and how much of it other processes took:
 * on a shared 2-vCPU machine that share is the first thing to look at. Also
 * which code was measured.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { ROOT } from './settings';

/** Linux accounts CPU time in USER_HZ ticks, 100 per second. */
const TICKS_PER_SECOND = 100;
/** A second in which other processes use less than this share of the machine counts as quiet. */
export const QUIET_SHARE = 0.1;

/** Ticks: all CPUs busy (non-idle), stolen by the hypervisor, and used by this process and its reaped children. */
export interface Snapshot {
  busy: number;
  steal: number;
  ours: number;
  at: number;
}

export function cpuSnapshot(): Snapshot {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]!;
  const steal = f[7] ?? 0;
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[11..14] = utime stime cutime cstime (fields 14..17 of stat)
  const ours = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
  return { busy, steal, ours, at: Date.now() };
}

function wallTicks(a: Snapshot, b: Snapshot): number {
  return ((b.at - a.at) / 1000) * TICKS_PER_SECOND * cpus().length;
}

/** Share of the machine's CPU time that processes other than this benchmark used between two snapshots. */
export function foreignShare(a: Snapshot, b: Snapshot): number {
  const wall = wallTicks(a, b);
  return wall > 0 ? Math.max(0, b.busy - a.busy - (b.ours - a.ours)) / wall : 0;
}

/** Share of the machine's CPU time the hypervisor stole between two snapshots. */
export function stealShare(a: Snapshot, b: Snapshot): number {
  const wall = wallTicks(a, b);
  return wall > 0 ? (b.steal - a.steal) / wall : 0;
}

/** Wait (up to maxSeconds) for a second in which other processes use less than {@link QUIET_SHARE} of the machine. Returns the share last seen. */
export async function waitQuiet(maxSeconds: number): Promise<number> {
  const giveUp = Date.now() + maxSeconds * 1000;
  for (;;) {
    const a = cpuSnapshot();
    await new Promise((r) => setTimeout(r, 1000));
    const share = foreignShare(a, cpuSnapshot());
    if (share < QUIET_SHARE || Date.now() >= giveUp) return share;
  }
}

export interface MachineInfo {
  cpuModel: string;
  nproc: number;
  node: string;
  kernel: string;
}

export function machine(): MachineInfo {
  let cpuModel = 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpuModel = m[1]!.trim();
  } catch {
    // not Linux
  }
  return { cpuModel, nproc: cpus().length, node: process.version, kernel: release() };
}

/** The commit measured, and whether the shipped code (src/, relay/, native/) differs from it (the runner runs dist/: build first). */
export function codeVersion(): string {
  const git = (args: string[]) => spawnSync('git', ['-C', ROOT, ...args], { encoding: 'utf8' });
  const head = git(['rev-parse', '--short', 'HEAD']);
  if (head.error || head.status !== 0) return 'not a git checkout';
  const dirty = git(['status', '--porcelain', '--', 'src', 'relay', 'native']).stdout.trim();
  return `git ${head.stdout.trim()}${dirty ? ' with uncommitted changes in src/, relay/ or native/' : ' (src/, relay/ and native/ as committed)'}`;
}
