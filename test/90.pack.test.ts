/**
 * The package as its users get it: `npm pack` (its prepack builds the
 * prebuilt addon, prepare compiles dist/), then the tarball installed into a
 * fresh temporary project — with no compiler step: the prebuild is used — and
 * from there: require (CJS), import (ESM, named exports), a TypeScript
 * type-check of a consumer file against the shipped types, one frame sent and
 * received, both binaries, deep imports refused, and a missing addon reported
 * as ERR_SHMBUS_ADDON_MISSING until the command it names (`npm rebuild
 * shmbus`) builds the addon from source.
 *
 * Runs on the Node that runs the tests (.ci/run runs it on 20, 22 and 24); npm
 * and npx run on that Node too. The install takes the runtime dependencies
 * from npm's cache (`--prefer-offline`: `npm ci` in this checkout put them
 * there). Every temporary folder is removed, even on failure.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, lastJson, removeTemps, run, runOk, tempDir } from './_helpers/pack';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const PREBUILD = 'prebuilds/linux-x64/shmbus.glibc.node';

interface State {
  tarball: string;
  entries: string[];
  consumer: string;
  shm: string;
}
let state: State | undefined;
const need = (): State => {
  if (state === undefined) throw new Error('the package was not packed and installed (see the first failure)');
  return state;
};

const pack = suite(`pack: the npm tarball installed into a fresh project (Node ${process.version})`);
pack.after(() => {
  if (state !== undefined) rmSync(state.shm, { recursive: true, force: true });
  removeTemps();
});

pack('npm pack holds the runtime, the prebuilt addon and the sources of the fallback build, and nothing else', async () => {
  const out = tempDir('pack');
  await runOk('npm', ['pack', '--pack-destination', out], { cwd: ROOT, timeoutMs: 120_000 });
  const tarball = join(out, `shmbus-${VERSION}.tgz`);
  assert.ok(existsSync(tarball), `npm pack made ${tarball}`);
  const listed = await runOk('tar', ['-tzf', tarball], { cwd: out, timeoutMs: 10_000 });
  const entries = listed.stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.replace(/^package\//, ''));
  for (const file of ['package.json', 'README.md', 'binding.gyp', 'native/addon.cc', 'native/layout.h', PREBUILD, 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli.js', 'dist/relay/cli.js', 'docs/LAYOUT.md']) {
    assert.ok(entries.includes(file), `the tarball holds ${file}`);
  }
  const unwanted = entries.filter((e) => /^(test|bench|demo|\.ci|build|src|relay|node_modules)\//.test(e) || /^dist\/(test|bench|demo)\//.test(e) || /\.(key|crt|map|ts)$/.test(e.replace(/\.d\.ts$/, '')));
  assert.equal(unwanted, [], 'no tests, benches, demos, CI, build output, TypeScript sources, source maps or keys');
  // Every compiled file has its source: nothing stale from an older build is shipped.
  const stale = entries.filter((e) => /^dist\/(src|relay)\/.*\.js$/.test(e) && !existsSync(join(ROOT, e.replace(/^dist\//, '').replace(/\.js$/, '.ts'))));
  assert.equal(stale, [], 'no compiled file without its source');
  state = { tarball, entries, consumer: '', shm: '' };
});

pack('installed into a fresh project, it uses the prebuild: no compiler runs', async () => {
  const s = need();
  const consumer = tempDir('consumer');
  writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'shmbus-consumer', version: '1.0.0', private: true }, null, 2));
  const installed = await runOk('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', s.tarball], { cwd: consumer, timeoutMs: 60_000 });
  const pkg = join(consumer, 'node_modules', 'shmbus');
  assert.ok(existsSync(join(pkg, PREBUILD)), 'the prebuild was installed');
  assert.not.ok(existsSync(join(pkg, 'build')), 'nothing was built from source');
  assert.not.ok(/building it from source/.test(installed.stdout + installed.stderr), 'the source-build notice was not printed');
  const deps = Object.keys((JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies).sort();
  assert.ok(deps.includes('node-gyp-build') && deps.includes('node-addon-api'), `runtime dependencies: the loader, and the headers of the fallback build: ${deps.join(', ')}`);
  assert.not.ok(deps.includes('node-gyp'), 'node-gyp is not a runtime dependency');
  assert.not.ok(existsSync(join(consumer, 'node_modules', 'node-gyp')), 'node-gyp is not installed into a consumer');
  s.consumer = consumer;
  s.shm = join('/dev/shm', `shmbus-pack-${process.pid}`);
  mkdirSync(s.shm, { recursive: true });
});

/** A script of the consumer project sending one frame from "<tag>-a" to "<tag>-b" and printing what it saw. */
const roundTrip = (tag: string) => `
  const a = await Bus.open({ name: '${tag}-a', namespace: 'pack', dir });
  const b = await Bus.open({ name: '${tag}-b', namespace: 'pack', dir });
  const sent = a.sendToLocal('${tag}-b', 'hello from ${tag}');
  const f = b.recvFromLocal();
  await a.close();
  await b.close();
  const frame = f === null ? null : { source: f.source, text: Buffer.from(f.payload).toString('utf8') };
`;

pack('require (CJS): the public API, one frame sent and received, deep imports refused', async () => {
  const s = need();
  writeFileSync(
    join(s.consumer, 'cjs.cjs'),
    `'use strict';
const { dirname } = require('node:path');
const shmbus = require('shmbus');
const { Bus, BusError } = shmbus;
const addon = require('node-gyp-build').resolve(dirname(require.resolve('shmbus/package.json')));
let deep;
try { require('shmbus/dist/src/bus'); deep = 'resolved'; } catch (e) { deep = e.code; }
(async () => {
  const dir = process.argv[2];
  ${roundTrip('cjs')}
  console.log(JSON.stringify({ bus: typeof Bus, busError: typeof BusError, version: require('shmbus/package.json').version, addon, deep, sent, frame }));
})().catch((e) => { console.error(e); process.exit(1); });
`,
  );
  const out = lastJson<Record<string, unknown>>((await runOk(process.execPath, ['cjs.cjs', s.shm], { cwd: s.consumer, timeoutMs: 20_000 })).stdout);
  assert.is(out.bus, 'function');
  assert.is(out.busError, 'function');
  assert.is(out.version, VERSION);
  assert.ok(String(out.addon).endsWith(`node_modules/shmbus/${PREBUILD}`), `the addon is the prebuild: ${String(out.addon)}`);
  assert.is(out.deep, 'ERR_PACKAGE_PATH_NOT_EXPORTED', 'shmbus/dist/src/bus does not resolve');
  assert.is(out.sent, true);
  assert.equal(out.frame, { source: 'cjs-a', text: 'hello from cjs' });
});

pack('import (ESM): named exports, the same module as require, one frame sent and received', async () => {
  const s = need();
  writeFileSync(
    join(s.consumer, 'esm.mjs'),
    `import { Bus, BusError, ERROR_TABLE, isBusError, layout } from 'shmbus';
import * as namespace from 'shmbus';
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const cjs = require('shmbus');
const missing = Object.keys(cjs).filter((k) => k !== '__esModule' && !(k in namespace));
let deep;
try { await import('shmbus/dist/src/ring.js'); deep = 'resolved'; } catch (e) { deep = e.code; }
const dir = process.argv[2];
${roundTrip('esm')}
console.log(JSON.stringify({ missing, same: Bus === cjs.Bus && BusError === cjs.BusError, codes: Object.keys(ERROR_TABLE).length, guard: typeof isBusError, layout: typeof layout, deep, sent, frame }));
`,
  );
  const out = lastJson<Record<string, unknown>>((await runOk(process.execPath, ['esm.mjs', s.shm], { cwd: s.consumer, timeoutMs: 20_000 })).stdout);
  assert.equal(out.missing, [], 'every CommonJS export is a named ESM export');
  assert.is(out.same, true, 'ESM and CJS get the same classes (no dual-package hazard)');
  assert.ok((out.codes as number) > 10);
  assert.is(out.guard, 'function');
  assert.is(out.layout, 'object');
  assert.is(out.deep, 'ERR_PACKAGE_PATH_NOT_EXPORTED', 'shmbus/dist/src/ring.js does not resolve');
  assert.is(out.sent, true);
  assert.equal(out.frame, { source: 'esm-a', text: 'hello from esm' });
});

pack('TypeScript: a consumer file type-checks against the shipped declarations (and wrong uses do not)', async () => {
  const s = need();
  writeFileSync(
    join(s.consumer, 'consumer.mts'),
    `import { Bus, BusError, isBusError, type BusOptions, type Frame } from 'shmbus';

const options: BusOptions = { name: 'typed', namespace: 'pack' };

export async function roundTrip(): Promise<string> {
  const bus: Bus = await Bus.open(options);
  const sent: boolean = bus.sendToLocal('typed', new Uint8Array(4));
  const frame: Frame | null = bus.recvFromLocal();
  await bus.close();
  return \`\${sent} \${frame?.source ?? ''} \${frame?.payload.byteLength ?? 0}\`;
}

export function codeOf(err: unknown): string | undefined {
  return isBusError(err) ? err.code : err instanceof BusError ? 'never' : undefined;
}

// The declarations are real types, not \`any\`: each line below must be an error.
// @ts-expect-error an endpoint name is a string
export const wrongName: BusOptions = { name: 42 };
// @ts-expect-error no such error code
export const wrongCode = isBusError(new Error('x'), 'ERR_NOT_A_CODE');
// @ts-expect-error deep imports are not part of the package's exports
export type Deep = typeof import('shmbus/dist/src/bus');
`,
  );
  writeFileSync(
    join(s.consumer, 'tsconfig.json'),
    JSON.stringify(
      {
        compilerOptions: { target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, noEmit: true, skipLibCheck: false, types: ['node'], typeRoots: [join(ROOT, 'node_modules', '@types')] },
        files: ['consumer.mts'],
      },
      null,
      2,
    ),
  );
  const tsc = await run(join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.json'], { cwd: s.consumer, timeoutMs: 60_000 });
  assert.is(tsc.code, 0, `tsc: ${tsc.stdout}${tsc.stderr}`);
});

// childEnv sets npm_config_yes=false: npx never fetches a package of that name from the registry instead.
pack('both binaries run through npx: shmbus --version, transit-server --help', async () => {
  const s = need();
  const version = await runOk('npx', ['shmbus', '--version'], { cwd: s.consumer, timeoutMs: 20_000 });
  assert.is(version.stdout.trim(), VERSION);
  const help = await runOk('npx', ['transit-server', '--help'], { cwd: s.consumer, timeoutMs: 20_000 });
  assert.match(help.stdout, /^usage: transit-server --config/m);
  assert.match(help.stdout, /Exit codes:/);
  const relayVersion = await runOk('npx', ['transit-server', '--version'], { cwd: s.consumer, timeoutMs: 20_000 });
  assert.is(relayVersion.stdout.trim(), VERSION);
});

pack('no addon: importing shmbus throws ERR_SHMBUS_ADDON_MISSING naming the fix, and the fix (npm rebuild shmbus) builds it from source', async () => {
  const s = need();
  const pkg = join(s.consumer, 'node_modules', 'shmbus');
  rmSync(join(pkg, 'prebuilds'), { recursive: true, force: true });
  const probe = `try { const { Bus } = require('shmbus'); console.log(JSON.stringify({ loaded: typeof Bus })); } catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message, isBusError: e instanceof Error && e.constructor.name === 'BusError' })); }`;
  const missing = lastJson<Record<string, unknown>>((await runOk(process.execPath, ['-e', probe], { cwd: s.consumer, timeoutMs: 20_000 })).stdout);
  assert.is(missing.code, 'ERR_SHMBUS_ADDON_MISSING');
  assert.is(missing.name, 'BusError [ERR_SHMBUS_ADDON_MISSING]');
  assert.is(missing.isBusError, true);
  assert.match(String(missing.message), 'npm rebuild shmbus');
  assert.match(String(missing.message), join(pkg, 'prebuilds'), 'the message names where it looked');

  const rebuilt = await runOk('npm', ['rebuild', 'shmbus', '--foreground-scripts'], { cwd: s.consumer, timeoutMs: 120_000 });
  assert.match(rebuilt.stdout + rebuilt.stderr, /building it from source/, 'the fallback says why it compiles');
  assert.ok(existsSync(join(pkg, 'build', 'Release', 'shmbus.node')), 'the source build is in place');
  const loaded = lastJson<Record<string, unknown>>((await runOk(process.execPath, ['-e', probe], { cwd: s.consumer, timeoutMs: 20_000 })).stdout);
  assert.equal(loaded, { loaded: 'function' });
  const again = lastJson<Record<string, unknown>>((await runOk(process.execPath, ['cjs.cjs', s.shm], { cwd: s.consumer, timeoutMs: 20_000 })).stdout);
  assert.ok(String(again.addon).endsWith('node_modules/shmbus/build/Release/shmbus.node'), `the addon is the source build: ${String(again.addon)}`);
  assert.equal(again.frame, { source: 'cjs-a', text: 'hello from cjs' });
});

pack('nothing is left in the shared-memory folder', () => {
  const s = need();
  assert.equal(readdirSync(s.shm), [], 'every bus closed and removed its segments');
});

pack.run();
