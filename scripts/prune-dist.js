#!/usr/bin/env node
/**
 * Run by `prepack` (before `prepare` compiles): remove compiled files in the
 * shipped folders (dist/src, dist/relay) whose TypeScript source no longer
 * exists, so that a file renamed or deleted in src/ is not packed from an old
 * build. Only such orphans are removed: dist/ stays usable meanwhile.
 */
'use strict';
const { existsSync, readdirSync, rmSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
for (const folder of ['src', 'relay']) {
  const out = join(root, 'dist', folder);
  if (!existsSync(out)) continue;
  for (const file of readdirSync(out)) {
    const base = file.replace(/(\.d)?\.(js|ts)(\.map)?$/, '');
    if (base === file) continue;
    if (!existsSync(join(root, folder, `${base}.ts`))) {
      rmSync(join(out, file), { force: true });
      console.log(`shmbus prune-dist: removed dist/${folder}/${file} (no ${folder}/${base}.ts)`);
    }
  }
}
