/**
 * The addon loader (src/native.ts) when the addon is not there or cannot be
 * loaded: a BusError with the stable code ERR_SHMBUS_ADDON_MISSING and a
 * message that names where it looked and the command that fixes it — in
 * process (loadAddon on a folder), and in a child process whose import of
 * shmbus is pointed at an empty folder by node-gyp-build's own override
 * (SHMBUS_PREBUILD). test/90.pack.test.ts does the same on an installed copy
 * of the package with its prebuilds/ removed.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADDON_FIX, loadAddon, packageRoot } from '../src/native';
import { BusError, ERROR_TABLE, isBusError } from '../src/errors';

const ROOT = join(__dirname, '..');
const dirs: string[] = [];
const emptyDir = (): string => {
  const dir = mkdtempSync(join(tmpdir(), 'shmbus-addon-'));
  dirs.push(dir);
  return dir;
};

const addon = suite('addon loader: a missing or unloadable addon');
addon.after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

addon('the code is in the error table, and the fix names npm rebuild', () => {
  assert.ok('ERR_SHMBUS_ADDON_MISSING' in ERROR_TABLE);
  assert.match(ADDON_FIX, 'npm rebuild shmbus');
});

addon('the package root is found from src/ (and the addon loads from it)', () => {
  assert.is(packageRoot(), ROOT);
  assert.is(typeof loadAddon(ROOT).pageSize, 'number');
});

addon('a folder with neither build/Release nor prebuilds/: ERR_SHMBUS_ADDON_MISSING naming both places and the fix', () => {
  const dir = emptyDir();
  let caught: unknown;
  try {
    loadAddon(dir);
  } catch (err) {
    caught = err;
  }
  assert.instance(caught, BusError);
  assert.ok(isBusError(caught, 'ERR_SHMBUS_ADDON_MISSING'));
  const err = caught as BusError;
  assert.is(err.name, 'BusError [ERR_SHMBUS_ADDON_MISSING]');
  assert.match(err.message, join(dir, 'build', 'Release', 'shmbus.node'));
  assert.match(err.message, join(dir, 'prebuilds'));
  assert.match(err.message, `${process.platform}-${process.arch}, Node ${process.versions.node}`);
  assert.match(err.message, ADDON_FIX);
  assert.match(String((err.cause as Error).message), /No native build was found/, 'the cause is node-gyp-build\'s own error');
});

addon('a binary that cannot be loaded: ERR_SHMBUS_ADDON_MISSING naming the file and the loader\'s reason', () => {
  const dir = emptyDir();
  mkdirSync(join(dir, 'build', 'Release'), { recursive: true });
  writeFileSync(join(dir, 'build', 'Release', 'shmbus.node'), 'not an ELF file');
  let caught: unknown;
  try {
    loadAddon(dir);
  } catch (err) {
    caught = err;
  }
  assert.ok(isBusError(caught, 'ERR_SHMBUS_ADDON_MISSING'), String(caught));
  const err = caught as BusError;
  assert.match(err.message, `the native addon ${join(dir, 'build', 'Release', 'shmbus.node')} cannot be loaded`);
  assert.match(err.message, /invalid ELF header|file too short/);
  assert.match(err.message, ADDON_FIX);
});

addon('importing shmbus in a process that finds no addon throws it at import (SHMBUS_PREBUILD=<empty folder>)', () => {
  const dir = emptyDir();
  const probe = `try { require('./src/index'); console.log('loaded'); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
  const child = spawnSync(process.execPath, ['--require', 'tsx/cjs', '-e', probe], { cwd: ROOT, env: { ...process.env, SHMBUS_PREBUILD: dir }, encoding: 'utf8', timeout: 30_000 });
  assert.is(child.status, 0, child.stderr);
  const out = JSON.parse(child.stdout.trim().split('\n').pop()!) as { code: string; message: string };
  assert.is(out.code, 'ERR_SHMBUS_ADDON_MISSING');
  assert.match(out.message, join(dir, 'prebuilds'));
  assert.match(out.message, 'npm rebuild shmbus');
});

addon.run();
