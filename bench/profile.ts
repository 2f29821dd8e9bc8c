/**
 * Where a pinned shmbus pair spends its time: a receiver (CPU 1) busy-polls
 * `recvBatch`, a sender (CPU 0) sends 64 B frames through `bus.sender()` one
 * per call or in batches, both under `node --cpu-prof`; then the top
 * functions by self time of each side are printed. The profile behind the
 * "where the time goes" paragraph of BENCHMARKS.md.
 *
 *   npm run build && node dist/bench/profile.js [--batch 1|32] [--seconds 3] [--slot 128]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Bus, type FrameView } from '../src/index';

const INDEX = join(__dirname, '..', 'src', 'index.js');

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number } }>;
  samples: number[];
}

/** The `top` functions of a profile by self time, as "share  name file:line". */
function topFunctions(file: string, top: number): string[] {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const counts = new Map<number, number>();
  for (const id of profile.samples) counts.set(id, (counts.get(id) ?? 0) + 1);
  const self = new Map<string, number>();
  for (const node of profile.nodes) {
    const f = node.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${f.url.split('/').pop()}:${f.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + (counts.get(node.id) ?? 0));
  }
  const total = profile.samples.length;
  return [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([key, n]) => `${((100 * n) / total).toFixed(1).padStart(5)} %  ${key}`);
}

async function receiver(ns: string, seconds: number, slotSize: number): Promise<void> {
  const bus = Bus.openSync({ name: 'rx', namespace: ns, slotSize });
  let frames = 0;
  let bad = 0;
  const handler = (v: FrameView) => {
    frames++;
    if (v.length !== 64 || v.bytes[v.payloadOffset] !== 7) bad++;
  };
  process.stdout.write('ready\n');
  const end = performance.now() + seconds * 1000 + 500;
  while (performance.now() < end) bus.recvBatch(handler, 256);
  process.stdout.write(`received ${frames} bad ${bad}\n`);
  bus.closeSync();
}

async function sender(ns: string, seconds: number, batch: number): Promise<void> {
  const bus = Bus.openSync({ name: 'tx', namespace: ns });
  const to = bus.sender('rx');
  const payload = new Uint8Array(64).fill(7);
  const payloads = new Array<Uint8Array>(batch).fill(payload);
  let sent = 0;
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    for (let k = 0; k < 1000; k++) sent += batch === 1 ? (to.send(payload) ? 1 : 0) : to.sendBatch(payloads);
  }
  process.stdout.write(`sent ${sent}\n`);
  bus.closeSync();
}

function run(cpu: number, role: string, args: string[], dir: string): { lines: Promise<string[]>; ready: Promise<void> } {
  const child = spawn('taskset', ['-c', String(cpu), process.execPath, '--cpu-prof', `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${role}.cpuprofile`, __filename, role, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  let readyResolve!: () => void;
  const ready = new Promise<void>((resolve) => (readyResolve = resolve));
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    for (const line of d.split('\n').filter(Boolean)) {
      lines.push(line);
      if (line === 'ready') readyResolve();
    }
  });
  const done = new Promise<string[]>((resolve, reject) => {
    child.on('exit', (code) => (code === 0 ? resolve(lines) : reject(new Error(`${role} exited with ${code}`))));
  });
  return { lines: done, ready };
}

async function main(): Promise<void> {
  const [role, ...rest] = process.argv.slice(2);
  if (role === 'rx') return receiver(rest[0]!, Number(rest[1]), Number(rest[2]));
  if (role === 'tx') return sender(rest[0]!, Number(rest[1]), Number(rest[2]));
  const { values } = parseArgs({ options: { batch: { type: 'string', default: '1' }, seconds: { type: 'string', default: '3' }, slot: { type: 'string', default: '128' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write('usage: node dist/bench/profile.js [--batch 1|32] [--seconds 3] [--slot 128]\n');
    return;
  }
  const batch = Number(values.batch);
  const seconds = Math.min(30, Math.max(0.5, Number(values.seconds)));
  const dir = mkdtempSync(join(tmpdir(), 'shmbus-profile-'));
  const ns = `profile${process.pid}`;
  try {
    const rx = run(1, 'rx', [ns, String(seconds), String(values.slot)], dir);
    await rx.ready;
    const tx = run(0, 'tx', [ns, String(seconds), String(batch)], dir);
    const [sent, received] = await Promise.all([tx.lines, rx.lines]);
    process.stdout.write(`${sent.join(' ')}; ${received.filter((l) => l !== 'ready').join(' ')}; ${(Number(sent[0]!.split(' ')[1]) / seconds / 1e6).toFixed(2)} M frames/s, ${batch} per send (${INDEX})\n`);
    for (const side of ['tx', 'rx']) {
      process.stdout.write(`\n${side === 'tx' ? 'sender (CPU 0)' : 'receiver (CPU 1)'}, self time:\n`);
      for (const line of topFunctions(join(dir, `${side}.cpuprofile`), 8)) process.stdout.write(`  ${line}\n`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`profile: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
