#!/usr/bin/env node
/**
 * Part of `prepare` (runs in a checkout on `npm install` / `npm ci`, and before
 * `npm pack`; never in a project that installs the package): rebuild
 * build/Release/shmbus.node with node-gyp when binding.gyp or a file of native/
 * is newer than it. The install script (node-gyp-build) keeps any addon that
 * loads, so without this a checkout would go on running an addon older than
 * its sources after a pull. Does nothing when there is no build/Release addon
 * (the install script built it just before, or a prebuild serves).
 */
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync, readdirSync, statSync } = require('node:fs');
const { dirname, join } = require('node:path');

const root = join(__dirname, '..');
const addon = join(root, 'build', 'Release', 'shmbus.node');
if (existsSync(addon)) {
  const built = statSync(addon).mtimeMs;
  const sources = ['binding.gyp', ...readdirSync(join(root, 'native')).map((f) => join('native', f))];
  const newer = sources.filter((f) => statSync(join(root, f)).mtimeMs > built);
  if (newer.length > 0) {
    console.log(`shmbus: ${newer.join(', ')} newer than build/Release/shmbus.node: node-gyp rebuild`);
    const env = { ...process.env };
    // Offline, as scripts/prebuilds.js: Node's headers from npm's nodedir, else from the running Node's include/.
    const prefix = dirname(dirname(process.execPath));
    if (!env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix;
    const gyp = spawnSync(process.execPath, [require.resolve('node-gyp/bin/node-gyp.js'), 'rebuild'], { cwd: root, env, stdio: 'inherit' });
    process.exitCode = gyp.status ?? 1;
  }
}
