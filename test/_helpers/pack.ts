/**
 * Helpers of the pack test (test/90.pack.test.ts): run npm, npx and node as a
 * user of the published package would, on the Node that runs the tests (its
 * folder first on PATH, so `npm` and `npx` — `#!/usr/bin/env node` scripts —
 * run on it too), with a deadline, and make temporary projects that are
 * removed even when the test fails.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';

export const ROOT = join(__dirname, '..', '..');

const temps = new Set<string>();

/** A fresh temporary folder, removed by {@link removeTemps}. */
export function tempDir(tag: string): string {
  const dir = mkdtempSync(join(tmpdir(), `shmbus-${tag}-`));
  temps.add(dir);
  return dir;
}

/** Remove every folder made by {@link tempDir} (call in an `after` hook; the exit hook is the last resort). */
export function removeTemps(): void {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
  temps.clear();
}
process.on('exit', removeTemps);

export interface Ran {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

const LIFECYCLE = new Set(['INIT_CWD', 'NODE', 'npm_command', 'npm_execpath', 'npm_node_execpath', 'npm_config_local_prefix', 'npm_config_call', 'npm_config_user_agent', 'npm_config_npm_version']);

/** The environment of a child: this Node's folder first on PATH; npm quiet and never asking. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  env.PATH = [dirname(process.execPath), process.env.PATH ?? ''].join(delimiter);
  env.npm_config_audit = 'false';
  env.npm_config_fund = 'false';
  env.npm_config_update_notifier = 'false';
  env.npm_config_yes = 'false';
  // Set when this test itself runs under `npm test`: they would point a nested npm at this package.
  for (const key of Object.keys(env)) {
    if (/^npm_(package|lifecycle)_/.test(key) || LIFECYCLE.has(key)) delete env[key];
  }
  return env;
}

/** Run a command to its end (killed at `timeoutMs`), collecting its output. */
export function run(command: string, args: readonly string[], options: { cwd: string; timeoutMs: number; env?: NodeJS.ProcessEnv }): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} did not finish within ${options.timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, options.timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Like {@link run}, but throw (with its output) unless it exits 0. */
export async function runOk(command: string, args: readonly string[], options: { cwd: string; timeoutMs: number; env?: NodeJS.ProcessEnv }): Promise<Ran> {
  const ran = await run(command, args, options);
  if (ran.code !== 0) {
    throw new Error(`${command} ${args.join(' ')} (in ${options.cwd}) exited ${ran.code ?? ran.signal}\nstdout: ${ran.stdout.slice(-4000)}\nstderr: ${ran.stderr.slice(-4000)}`);
  }
  return ran;
}

/** The last JSON line a script printed (the consumer scripts report one object on their last line). */
export function lastJson<T>(stdout: string): T {
  const lines = stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!) as T;
}
