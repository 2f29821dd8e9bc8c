/**
 * The layering of docs/ARCHITECTURE: layout.ts and errors.ts are leaves,
 * native.ts is the only loader of the addon, relay/ and demo/ never touch the
 * addon, and demo/ uses the public API only.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(__dirname, '..');

function sources(folder: string): string[] {
  return readdirSync(join(ROOT, folder))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => `${folder}/${f}`);
}

function imports(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  return [...text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s+'([^']+)'/g), ...text.matchAll(/require\(([^)]+)\)/g)].map((m) => m[1]!.replace(/['"]/g, ''));
}

const layers = suite('layering');

layers('layout.ts and errors.ts import nothing of the project', () => {
  for (const leaf of ['src/layout.ts', 'src/errors.ts']) {
    assert.equal(imports(leaf).filter((i) => i.startsWith('.')), [], leaf);
  }
});

layers('only src/native.ts loads the addon', () => {
  const loaders = [...sources('src'), ...sources('relay'), ...sources('demo'), ...sources('bench')].filter((f) => /shmbus\.node|build\/Release/.test(readFileSync(join(ROOT, f), 'utf8')));
  assert.equal(loaders, ['src/native.ts']);
});

layers('relay/ and demo/ never import the addon wrapper directly', () => {
  for (const file of [...sources('relay'), ...sources('demo')]) {
    assert.not.ok(imports(file).some((i) => /\/native$/.test(i)), `${file} imports src/native`);
  }
});

layers('demo/ uses the public API only', () => {
  for (const file of sources('demo')) {
    const project = imports(file).filter((i) => i.startsWith('.') && !i.startsWith('./'));
    assert.ok(project.every((i) => i === '../src/index'), `${file} imports ${project.join(', ')}`);
  }
});

layers('src/ never imports relay/, demo/, bench/ or test/', () => {
  for (const file of sources('src')) {
    assert.not.ok(imports(file).some((i) => /^\.\.\/(relay|demo|bench|test)\//.test(i)), file);
  }
});

layers('relay/ reaches the library only through its internal entry (src/internal.ts) or the public one', () => {
  for (const file of sources('relay')) {
    const reached = imports(file).filter((i) => i.startsWith('../src/') && i !== '../src/internal' && i !== '../src/index');
    assert.equal(reached, [], `${file} imports ${reached.join(', ')}`);
  }
});

layers('no module of relay/ imports, directly or through others, a module that imports it (no call climbs back)', () => {
  const graph = new Map(sources('relay').map((f) => [f, imports(f).filter((i) => i.startsWith('./')).map((i) => `relay/${i.slice(2)}.ts`)]));
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const visit = (file: string): void => {
    if (state.get(file) === 'done') return;
    if (state.get(file) === 'open') assert.unreachable(`import cycle: ${[...path.slice(path.indexOf(file)), file].join(' -> ')}`);
    state.set(file, 'open');
    path.push(file);
    for (const next of graph.get(file) ?? []) visit(next);
    path.pop();
    state.set(file, 'done');
  };
  for (const file of graph.keys()) visit(file);
  assert.ok(graph.size >= 10, `relay/ has its modules (${graph.size})`);
});

layers('one job per file: no module of src/ or relay/ is much over 400 lines', () => {
  const long = [...sources('src'), ...sources('relay')]
    .map((f) => [f, readFileSync(join(ROOT, f), 'utf8').split('\n').length] as const)
    .filter(([, n]) => n > 440)
    .map(([f, n]) => `${f} (${n} lines)`);
  assert.equal(long, []);
});

layers.run();
