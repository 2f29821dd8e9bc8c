#!/usr/bin/env node
/**
 * Run by the install script (`node-gyp-build "node scripts/source-build-notice.js"`)
 * only when no prebuilt binary loads here — node-gyp-build runs it just before
 * it falls back to `node-gyp rebuild` — to say why a compiler is needed now.
 */
'use strict';
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const here = `${process.platform}-${process.arch}, Node ${process.versions.node}`;
const why =
  process.env.npm_config_build_from_source === 'true'
    ? 'a source build was asked for (--build-from-source)'
    : existsSync(join(__dirname, '..', 'prebuilds'))
      ? 'no prebuilt addon loads here'
      : 'no prebuilt addon in this folder (a checkout: prebuilds/ is made by npm pack)';
process.stderr.write(
  `shmbus: ${why} (${here}); building it from source with node-gyp.\n` +
    'shmbus: a source build needs python3, make, a C++17 compiler (g++ or clang++) and Node\'s headers (node-gyp downloads them, or takes --nodedir / npm_config_nodedir).\n' +
    'shmbus: node-gyp itself comes from npm (which puts its own node-gyp on the PATH of install scripts) or a global install; shmbus does not depend on it.\n',
);
