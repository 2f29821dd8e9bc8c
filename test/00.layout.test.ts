/**
 * Layout drift: src/layout.ts (the numbers), native/layout.h (the C mirror) and
 * docs/LAYOUT.md (the spec) must say the same thing, and the layout itself
 * must keep the properties the algorithms rely on.
 *
 * Naming: layout.ts export NAME <-> macro SHMBUS_NAME (numbers and strings;
 * a RegExp export is compared by its source). Functions are mirrored as
 * function-like macros and checked by the compiled program.
 *
 * The C part compiles a small program with `cc` (and the header alone with
 * `c++`); both are required, as CI has gcc. The compile runs inside the first
 * test that needs it (not in a `before` hook: uvu 0.5 ignores errors thrown by
 * hooks), and its temp folder is removed in `after`.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as layout from '../src/layout';

const ROOT = join(__dirname, '..');
const HEADER_PATH = join(ROOT, 'native', 'layout.h');
const DOC_PATH = join(ROOT, 'docs', 'LAYOUT.md');

// ─── the fields: one row per *_OFFSET export ─────────────────────────────────

type Area = 'common' | 'directory' | 'entry' | 'inbox' | 'slot' | 'notice' | 'dedup' | 'dedupEntry';

/** Longest notice payload: its fixed part and the longest address prefix. */
const MAX_NOTICE_LENGTH = layout.NOTICE_ADDRESS_OFFSET + layout.ADDRESS_PREFIX_HEADER_LENGTH + layout.MAX_ADDRESS_LENGTH;

/**
 * The C struct of each area; `length` is the layout.ts length of that struct
 * (null: variable, the C struct is padded), `extent` the bytes its fields may use.
 */
const AREAS: Record<Area, { struct: string; length: number | null; extent: number }> = {
  common: { struct: 'shmbus_common_header', length: layout.COMMON_HEADER_LENGTH, extent: layout.COMMON_HEADER_LENGTH },
  directory: { struct: 'shmbus_directory_header', length: layout.DIR_HEADER_LENGTH, extent: layout.DIR_HEADER_LENGTH },
  entry: { struct: 'shmbus_dir_entry', length: layout.DIR_ENTRY_LENGTH, extent: layout.DIR_ENTRY_LENGTH },
  inbox: { struct: 'shmbus_inbox_header', length: layout.INBOX_HEADER_LENGTH, extent: layout.INBOX_HEADER_LENGTH },
  slot: { struct: 'shmbus_slot_header', length: layout.SLOT_HEADER_LENGTH, extent: layout.SLOT_HEADER_LENGTH },
  notice: { struct: 'shmbus_notice', length: null, extent: MAX_NOTICE_LENGTH },
  dedup: { struct: 'shmbus_dedup_header', length: layout.DEDUP_HEADER_LENGTH, extent: layout.DEDUP_HEADER_LENGTH },
  dedupEntry: { struct: 'shmbus_dedup_entry', length: layout.DEDUP_ENTRY_LENGTH, extent: layout.DEDUP_ENTRY_LENGTH },
};

interface Field {
  readonly constant: string;
  readonly area: Area;
  /** Member of the area's C struct. */
  readonly member: string;
  /** Size in bytes (u8 1, u16 2, u32/i32 4, u64 8, name 64, address prefix 130). */
  readonly size: number;
}

const f = (constant: string, area: Area, member: string, size: number): Field => ({ constant, area, member, size });

const FIELDS: readonly Field[] = [
  f('MAGIC_OFFSET', 'common', 'magic', 4),
  f('KIND_OFFSET', 'common', 'kind', 4),
  f('VERSION_OFFSET', 'common', 'version', 4),
  f('HEADER_LENGTH_OFFSET', 'common', 'header_length', 4),
  f('SEGMENT_LENGTH_OFFSET', 'common', 'segment_length', 4),
  f('CREATOR_PID_OFFSET', 'common', 'creator_pid', 4),
  f('CREATOR_START_TIME_OFFSET', 'common', 'creator_start_time', 8),
  f('EPOCH_OFFSET', 'common', 'epoch', 4),

  f('DIR_ENTRY_COUNT_OFFSET', 'directory', 'entry_count', 4),
  f('DIR_ENTRY_LENGTH_OFFSET', 'directory', 'entry_length', 4),
  f('DIR_LOCK_OFFSET', 'directory', 'lock', 4),
  f('DIR_REMOVED_OFFSET', 'directory', 'removed', 4),
  f('DIR_REGISTRATIONS_OFFSET', 'directory', 'registrations', 4),
  f('DIR_TAKEOVERS_OFFSET', 'directory', 'takeovers', 4),

  f('ENTRY_GENERATION_OFFSET', 'entry', 'generation', 4),
  f('ENTRY_STATE_OFFSET', 'entry', 'state', 4),
  f('ENTRY_OWNER_PID_OFFSET', 'entry', 'owner_pid', 4),
  f('ENTRY_OWNER_START_TIME_OFFSET', 'entry', 'owner_start_time', 8),
  f('ENTRY_FLAGS_OFFSET', 'entry', 'flags', 4),
  f('ENTRY_DOORBELL_KIND_OFFSET', 'entry', 'doorbell_kind', 4),
  f('ENTRY_DOORBELL_PORT_OFFSET', 'entry', 'doorbell_port', 4),
  f('ENTRY_SLOT_SIZE_OFFSET', 'entry', 'slot_size', 4),
  f('ENTRY_CAPACITY_OFFSET', 'entry', 'capacity', 4),
  f('ENTRY_NAME_LENGTH_OFFSET', 'entry', 'name_length', 4),
  f('ENTRY_METRICS_PORT_OFFSET', 'entry', 'metrics_port', 4),
  f('ENTRY_NAME_OFFSET', 'entry', 'name', layout.MAX_NAME_LENGTH),

  f('INBOX_SLOT_SIZE_OFFSET', 'inbox', 'slot_size', 4),
  f('INBOX_CAPACITY_OFFSET', 'inbox', 'capacity', 4),
  f('INBOX_TAIL_OFFSET', 'inbox', 'tail', 4),
  f('INBOX_HEAD_OFFSET', 'inbox', 'head', 4),
  f('INBOX_PARKED_OFFSET', 'inbox', 'parked', 4),
  f('INBOX_REFUSED_FULL_OFFSET', 'inbox', 'refused_full', 8),
  f('INBOX_WAKEUPS_OFFSET', 'inbox', 'wakeups', 8),
  f('INBOX_RECEIVED_OFFSET', 'inbox', 'received', 8),
  f('INBOX_RECLAIMED_OFFSET', 'inbox', 'reclaimed', 8),
  f('INBOX_CORRUPT_OFFSET', 'inbox', 'corrupt', 8),
  f('INBOX_SENT_OFFSET', 'inbox', 'sent', 8),
  f('INBOX_SEND_REFUSED_OFFSET', 'inbox', 'send_refused', 8),
  f('INBOX_PARKS_OFFSET', 'inbox', 'parks', 8),
  f('INBOX_DISCARDED_OFFSET', 'inbox', 'discarded', 8),

  f('SLOT_SEQ_OFFSET', 'slot', 'seq', 4),
  f('SLOT_CLAIM_PID_OFFSET', 'slot', 'claim_pid', 4),
  f('SLOT_LENGTH_OFFSET', 'slot', 'length', 4),
  f('SLOT_FLAGS_OFFSET', 'slot', 'flags', 2),
  f('SLOT_SOURCE_HOST_OFFSET', 'slot', 'source_host', 2),
  f('SLOT_SOURCE_INDEX_OFFSET', 'slot', 'source_index', 4),
  f('SLOT_SOURCE_GENERATION_OFFSET', 'slot', 'source_generation', 4),
  f('SLOT_DESTINATION_INDEX_OFFSET', 'slot', 'destination_index', 4),
  f('SLOT_SEQUENCE_OFFSET', 'slot', 'sequence', 4),

  f('NOTICE_KIND_OFFSET', 'notice', 'kind', 1),
  f('NOTICE_REASON_OFFSET', 'notice', 'reason', 1),
  f('NOTICE_SEQUENCE_OFFSET', 'notice', 'sequence', 4),
  f('NOTICE_ADDRESS_OFFSET', 'notice', 'address', layout.ADDRESS_PREFIX_HEADER_LENGTH + layout.MAX_ADDRESS_LENGTH),

  f('DEDUP_ENTRY_COUNT_OFFSET', 'dedup', 'entry_count', 4),

  f('DEDUP_USED_OFFSET', 'dedupEntry', 'used', 4),
  f('DEDUP_SOURCE_HOST_OFFSET', 'dedupEntry', 'source_host', 4),
  f('DEDUP_SOURCE_INDEX_OFFSET', 'dedupEntry', 'source_index', 4),
  f('DEDUP_SOURCE_GENERATION_OFFSET', 'dedupEntry', 'source_generation', 4),
  f('DEDUP_DESTINATION_HASH_OFFSET', 'dedupEntry', 'destination_hash', 8),
  f('DEDUP_LAST_SEQUENCE_OFFSET', 'dedupEntry', 'last_sequence', 4),
  f('DEDUP_TOUCHED_OFFSET', 'dedupEntry', 'touched', 4),
];

/** Inbox u64 counters, in the order of the header. */
const INBOX_COUNTERS = FIELDS.filter((x) => x.area === 'inbox' && x.size === 8);
const PRODUCER_COUNTERS = ['INBOX_REFUSED_FULL_OFFSET', 'INBOX_WAKEUPS_OFFSET'];

// ─── helpers ────────────────────────────────────────────────────────────────

type LayoutValue = number | string | RegExp;

/** Every non-function export of layout.ts. */
function layoutExports(): Map<string, LayoutValue> {
  const result = new Map<string, LayoutValue>();
  for (const [name, value] of Object.entries(layout)) {
    if (typeof value === 'function') continue;
    if (typeof value !== 'number' && typeof value !== 'string' && !(value instanceof RegExp)) {
      throw new Error(`layout.ts export ${name} has a kind this test does not know (${typeof value}); teach test/00.layout.test.ts about it`);
    }
    result.set(name, value);
  }
  return result;
}

function valueOf(name: string): number {
  const value = (layout as Record<string, unknown>)[name];
  if (typeof value !== 'number') throw new Error(`layout.ts has no numeric export ${name}`);
  return value;
}

const offsetNames = () => [...layoutExports()].filter(([name, v]) => name.endsWith('_OFFSET') && typeof v === 'number').map(([name]) => name);

/** Object-like SHMBUS_ macros of native/layout.h: name without prefix -> number or string. */
function headerMacros(): Map<string, number | string> {
  const text = readFileSync(HEADER_PATH, 'utf8').replace(/\\\r?\n/g, ' ');
  const macros = new Map<string, number | string>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*#\s*define\s+SHMBUS_([A-Za-z0-9_]+)(\(?)(.*)$/.exec(line);
    if (!m || m[2] === '(') continue; // function-like
    const name = m[1]!;
    const raw = m[3]!.replace(/\/\*.*?\*\//g, '').replace(/\/\/.*$/, '').trim();
    if (raw === '') continue; // include guard
    const num = /^(0[xX][0-9a-fA-F]+|[0-9]+)[uUlL]*$/.exec(raw);
    const str = /^"((?:[^"\\]|\\.)*)"$/.exec(raw);
    if (macros.has(name)) throw new Error(`native/layout.h defines SHMBUS_${name} twice`);
    if (num) macros.set(name, Number(num[1]));
    else if (str) macros.set(name, JSON.parse(`"${str[1]}"`) as string);
    else throw new Error(`native/layout.h: SHMBUS_${name} = ${raw} is not a plain number or string literal; keep macro values literal so this test can read them`);
  }
  return macros;
}

interface DocRow {
  readonly line: number;
  readonly cells: Record<string, string>;
}

/** Rows of every Markdown table outside code fences, keyed by lower-cased header. */
function docTables(): DocRow[][] {
  const lines = readFileSync(DOC_PATH, 'utf8').split(/\r?\n/);
  const tables: DocRow[][] = [];
  let inFence = false;
  let header: string[] | null = null;
  let rows: DocRow[] = [];
  const split = (line: string) => line.trim().replace(/^\|/, '').replace(/\|$/, '').split('|').map((c) => c.trim());
  const flush = () => {
    if (header !== null) tables.push(rows);
    header = null;
    rows = [];
  };
  lines.forEach((line, i) => {
    if (/^\s*```/.test(line)) {
      flush();
      inFence = !inFence;
      return;
    }
    if (inFence || !line.trim().startsWith('|')) {
      flush();
      return;
    }
    const cells = split(line);
    if (header === null) {
      header = cells.map((c) => c.toLowerCase());
      return;
    }
    if (cells.every((c) => /^:?-+:?$/.test(c))) return; // separator
    const record: Record<string, string> = {};
    header.forEach((h, k) => {
      record[h] = cells[k] ?? '';
    });
    rows.push({ line: i + 1, cells: record });
  });
  flush();
  return tables;
}

/** Table rows whose `constant` cell names `name` (in backticks). */
function rowsNaming(name: string): DocRow[] {
  return docTables()
    .flat()
    .filter((row) => (row.cells.constant ?? '').replace(/`/g, '').trim() === name);
}

/** The number a cell starts with (`64`, `0x424D4853`, `130 at most`); NaN if none. */
const parseNumber = (cell: string | undefined): number => {
  const m = /^`?(0[xX][0-9a-fA-F]+|[0-9]+)`?(?:\s.*)?$/.exec((cell ?? '').trim());
  return m ? Number(m[1]) : NaN;
};

// ─── compiling the C mirror (once, lazily) ──────────────────────────────────

let tmp: string | null = null;
let compiled: { values: Map<string, number> } | { error: Error } | null = null;

function cExpressions(macros: Map<string, number | string>): Array<[string, string]> {
  const exprs: Array<[string, string]> = [];
  for (const field of FIELDS) {
    const struct = AREAS[field.area].struct;
    exprs.push([`offset:${field.constant}`, `offsetof(${struct}, ${field.member})`]);
    exprs.push([`size:${field.constant}`, `sizeof(((${struct} *)0)->${field.member})`]);
  }
  for (const [area, { struct }] of Object.entries(AREAS)) exprs.push([`sizeof:${area}`, `sizeof(${struct})`]);
  exprs.push(['embedded:directory', 'offsetof(shmbus_directory_header, common)']);
  exprs.push(['embedded:inbox', 'offsetof(shmbus_inbox_header, common)']);
  exprs.push(['embedded:dedup', 'offsetof(shmbus_dedup_header, common)']);
  exprs.push(['sizeof:address_prefix', 'sizeof(shmbus_address_prefix)']);
  for (const [name, value] of macros) if (typeof value === 'number') exprs.push([`macro:${name}`, `SHMBUS_${name}`]);
  exprs.push(['fn:slotOffset(3,256)', 'SHMBUS_SLOT_OFFSET(3, 256)']);
  exprs.push(['fn:slotOffset(1048575,65536)', 'SHMBUS_SLOT_OFFSET(1048575, 65536)']);
  exprs.push(['fn:entryOffset(5)', 'SHMBUS_ENTRY_OFFSET(5)']);
  exprs.push(['fn:entryOffset(65535)', 'SHMBUS_ENTRY_OFFSET(65535)']);
  exprs.push(['fn:inboxSegmentLength(256,1024)', 'SHMBUS_INBOX_SEGMENT_LENGTH(256, 1024)']);
  exprs.push(['fn:inboxSegmentLength(65536,1048576)', 'SHMBUS_INBOX_SEGMENT_LENGTH(65536, 1048576)']);
  exprs.push(['fn:directorySegmentLength(256)', 'SHMBUS_DIRECTORY_SEGMENT_LENGTH(256)']);
  exprs.push(['fn:directorySegmentLength(65536)', 'SHMBUS_DIRECTORY_SEGMENT_LENGTH(65536)']);
  exprs.push(['fn:dedupSegmentLength(65536)', 'SHMBUS_DEDUP_SEGMENT_LENGTH(65536)']);
  exprs.push(['fn:dedupSegmentLength(4194304)', 'SHMBUS_DEDUP_SEGMENT_LENGTH(4194304)']);
  return exprs;
}

function run(tool: string, args: string[]): string {
  try {
    return execFileSync(tool, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string; stdout?: string };
    if (e.code === 'ENOENT') {
      throw new Error(`\`${tool}\` was not found on PATH: this test compiles native/layout.h and needs a C and C++ compiler (install gcc and g++; CI has them)`);
    }
    throw new Error(`${tool} ${args.join(' ')} failed:\n${e.stderr ?? ''}${e.stdout ?? ''}`);
  }
}

/** Compile and run the probe program; the values it prints, by key. */
function probe(): Map<string, number> {
  if (compiled === null) {
    try {
      tmp = mkdtempSync(join(tmpdir(), 'shmbus-layout-'));
      const exprs = cExpressions(headerMacros());
      const source = [
        '#include <stddef.h>',
        '#include <stdio.h>',
        `#include "${HEADER_PATH}"`,
        'int main(void) {',
        ...exprs.map(([key, expr]) => `  printf("%s %llu\\n", "${key}", (unsigned long long)(${expr}));`),
        '  return 0;',
        '}',
        '',
      ].join('\n');
      const cFile = join(tmp, 'probe.c');
      const exe = join(tmp, 'probe');
      writeFileSync(cFile, source);
      run('cc', ['-std=c11', '-pedantic', '-Wall', '-Wextra', '-Werror', '-o', exe, cFile]);
      run('c++', ['-std=c++11', '-pedantic', '-Wall', '-Wextra', '-Werror', '-fsyntax-only', '-x', 'c++', cFile]);
      const values = new Map<string, number>();
      for (const line of run(exe, []).trim().split('\n')) {
        const [key, value] = line.split(' ');
        values.set(key!, Number(value));
      }
      compiled = { values };
    } catch (err) {
      compiled = { error: err as Error };
    }
  }
  if ('error' in compiled) throw compiled.error;
  return compiled.values;
}

function mismatches(pairs: Array<[string, unknown, unknown]>): string[] {
  return pairs.filter(([, a, b]) => a !== b).map(([what, a, b]) => `${what}: ${String(a)} != ${String(b)}`);
}

// ─── (a) macros of native/layout.h ──────────────────────────────────────────

const macros = suite('layout: native/layout.h macros');

macros('has a SHMBUS_ macro for every layout.ts constant, and no other', () => {
  const exported = layoutExports();
  const defined = headerMacros();
  const missing = [...exported.keys()].filter((name) => !defined.has(name)).map((name) => `SHMBUS_${name}`);
  const extra = [...defined.keys()].filter((name) => !exported.has(name)).map((name) => `SHMBUS_${name}`);
  assert.equal(missing, [], `native/layout.h lacks: ${missing.join(', ')}`);
  assert.equal(extra, [], `native/layout.h defines macros layout.ts does not export: ${extra.join(', ')}`);
});

macros('gives every macro the value of its layout.ts constant', () => {
  const exported = layoutExports();
  const pairs: Array<[string, unknown, unknown]> = [];
  for (const [name, value] of headerMacros()) {
    const expected = exported.get(name);
    if (expected === undefined) continue; // reported by the test above
    pairs.push([`SHMBUS_${name}`, value, expected instanceof RegExp ? expected.source : expected]);
  }
  assert.equal(mismatches(pairs), []);
});

macros.run();

// ─── (b) structs compiled by cc ─────────────────────────────────────────────

const structs = suite('layout: native/layout.h structs (compiled)');

structs.after(() => {
  if (tmp !== null) rmSync(tmp, { recursive: true, force: true });
  tmp = null;
});

structs('covers every *_OFFSET constant with a struct member', () => {
  const covered = new Set(FIELDS.map((x) => x.constant));
  const missing = offsetNames().filter((name) => !covered.has(name));
  const stale = [...covered].filter((name) => typeof (layout as Record<string, unknown>)[name] !== 'number');
  assert.equal(missing, [], `add these to FIELDS (and to the structs of native/layout.h): ${missing.join(', ')}`);
  assert.equal(stale, [], `FIELDS names constants layout.ts no longer exports: ${stale.join(', ')}`);
});

structs('places every struct member at its layout.ts offset', () => {
  const values = probe();
  assert.equal(mismatches(FIELDS.map((x) => [`offsetof(${AREAS[x.area].struct}, ${x.member})`, values.get(`offset:${x.constant}`), valueOf(x.constant)])), []);
});

structs('gives every struct member its field size', () => {
  const values = probe();
  assert.equal(mismatches(FIELDS.map((x) => [`sizeof ${AREAS[x.area].struct}.${x.member}`, values.get(`size:${x.constant}`), x.size])), []);
});

structs('sizes every struct as its layout.ts length', () => {
  const values = probe();
  const pairs = Object.entries(AREAS)
    .filter(([, { length }]) => length !== null)
    .map(([area, { struct, length }]): [string, unknown, unknown] => [`sizeof(${struct})`, values.get(`sizeof:${area}`), length]);
  pairs.push(['offsetof(shmbus_directory_header, common)', values.get('embedded:directory'), 0]);
  pairs.push(['offsetof(shmbus_inbox_header, common)', values.get('embedded:inbox'), 0]);
  pairs.push(['offsetof(shmbus_dedup_header, common)', values.get('embedded:dedup'), 0]);
  pairs.push(['sizeof(shmbus_address_prefix)', values.get('sizeof:address_prefix'), layout.ADDRESS_PREFIX_HEADER_LENGTH + layout.MAX_ADDRESS_LENGTH]);
  assert.equal(mismatches(pairs), []);
});

structs('reads every numeric macro as the compiler does', () => {
  const values = probe();
  const pairs: Array<[string, unknown, unknown]> = [];
  for (const [name, value] of headerMacros()) if (typeof value === 'number') pairs.push([`SHMBUS_${name}`, values.get(`macro:${name}`), value]);
  assert.ok(pairs.length > 0);
  assert.equal(mismatches(pairs), []);
});

structs('computes addresses and lengths like the layout.ts functions', () => {
  const values = probe();
  assert.equal(
    mismatches([
      ['SHMBUS_SLOT_OFFSET(3, 256)', values.get('fn:slotOffset(3,256)'), layout.slotOffset(3, 256)],
      ['SHMBUS_SLOT_OFFSET(1048575, 65536)', values.get('fn:slotOffset(1048575,65536)'), layout.slotOffset(1048575, 65536)],
      ['SHMBUS_ENTRY_OFFSET(5)', values.get('fn:entryOffset(5)'), layout.entryOffset(5)],
      ['SHMBUS_ENTRY_OFFSET(65535)', values.get('fn:entryOffset(65535)'), layout.entryOffset(65535)],
      ['SHMBUS_INBOX_SEGMENT_LENGTH(256, 1024)', values.get('fn:inboxSegmentLength(256,1024)'), layout.inboxSegmentLength(256, 1024)],
      ['SHMBUS_INBOX_SEGMENT_LENGTH(65536, 1048576)', values.get('fn:inboxSegmentLength(65536,1048576)'), layout.inboxSegmentLength(65536, 1048576)],
      ['SHMBUS_DIRECTORY_SEGMENT_LENGTH(256)', values.get('fn:directorySegmentLength(256)'), layout.directorySegmentLength(256)],
      ['SHMBUS_DIRECTORY_SEGMENT_LENGTH(65536)', values.get('fn:directorySegmentLength(65536)'), layout.directorySegmentLength(65536)],
      ['SHMBUS_DEDUP_SEGMENT_LENGTH(65536)', values.get('fn:dedupSegmentLength(65536)'), layout.dedupSegmentLength(65536)],
      ['SHMBUS_DEDUP_SEGMENT_LENGTH(4194304)', values.get('fn:dedupSegmentLength(4194304)'), layout.dedupSegmentLength(4194304)],
    ]),
    [],
  );
});

structs.run();

// ─── (c) docs/LAYOUT.md tables ──────────────────────────────────────────────

const doc = suite('layout: docs/LAYOUT.md');

doc('lists every *_OFFSET constant in a table row with its offset and size', () => {
  const sizes = new Map(FIELDS.map((x) => [x.constant, x.size]));
  const problems: string[] = [];
  for (const name of offsetNames()) {
    const rows = rowsNaming(name);
    if (rows.length === 0) {
      problems.push(`${name}: no table row with \`${name}\` in its constant column`);
      continue;
    }
    for (const row of rows) {
      const offset = parseNumber(row.cells.offset);
      const size = parseNumber(row.cells.size);
      if (offset !== valueOf(name)) problems.push(`${name} (line ${row.line}): offset column says ${row.cells.offset}, layout.ts says ${valueOf(name)}`);
      if (size !== sizes.get(name)) problems.push(`${name} (line ${row.line}): size column says ${row.cells.size}, the field is ${sizes.get(name)} bytes`);
    }
  }
  assert.equal(problems, []);
});

doc('lists every other constant in a table row with its value', () => {
  const problems: string[] = [];
  for (const [name, value] of layoutExports()) {
    if (name.endsWith('_OFFSET')) continue;
    const rows = rowsNaming(name);
    if (rows.length === 0) {
      problems.push(`${name}: no table row with \`${name}\` in its constant column`);
      continue;
    }
    for (const row of rows) {
      const cell = row.cells.value;
      if (cell === undefined) {
        problems.push(`${name} (line ${row.line}): the table has no value column`);
        continue;
      }
      const ok = typeof value === 'number' ? parseNumber(cell) === value : cell.replace(/^`|`$/g, '') === (value instanceof RegExp ? value.source : value);
      if (!ok) problems.push(`${name} (line ${row.line}): value column says ${cell}, layout.ts says ${value instanceof RegExp ? value.source : String(value)}`);
    }
  }
  assert.equal(problems, []);
});

doc('names no constant that layout.ts does not export', () => {
  const exported = layoutExports();
  const unknown = docTables()
    .flat()
    .map((row) => (row.cells.constant ?? '').replace(/`/g, '').trim())
    .filter((name) => name !== '' && !exported.has(name));
  assert.equal(unknown, []);
});

doc('has a version history row for the current LAYOUT_VERSION', () => {
  const history = docTables().find((rows) => rows.length > 0 && 'version' in rows[0]!.cells && 'change' in rows[0]!.cells);
  assert.ok(history, 'no table with columns version | change');
  assert.ok(
    history!.some((row) => parseNumber(row.cells.version) === layout.LAYOUT_VERSION),
    `no version history row for version ${layout.LAYOUT_VERSION}`,
  );
});

doc.run();

// ─── (d) properties of layout.ts itself ─────────────────────────────────────

const shape = suite('layout: structure of layout.ts');

const line = (offset: number) => Math.floor(offset / layout.CACHE_LINE_LENGTH);
const fieldsOf = (area: Area) => FIELDS.filter((x) => x.area === area).map((x) => ({ ...x, offset: valueOf(x.constant) }));

shape('puts tail, head and parked on three distinct cache lines that hold nothing else', () => {
  const own = ['INBOX_TAIL_OFFSET', 'INBOX_HEAD_OFFSET', 'INBOX_PARKED_OFFSET'];
  const lines = own.map((name) => line(valueOf(name)));
  assert.is(new Set(lines).size, 3, `tail, head and parked share a line: lines ${lines.join(', ')}`);
  const sharing = [...fieldsOf('common'), ...fieldsOf('inbox')]
    .filter((x) => !own.includes(x.constant))
    .filter((x) => lines.includes(line(x.offset)) || lines.includes(line(x.offset + x.size - 1)))
    .map((x) => x.constant);
  assert.equal(sharing, []);
});

shape('keeps the slot header fields inside SLOT_HEADER_LENGTH, naturally aligned and within one 32-bit word each', () => {
  const problems: string[] = [];
  for (const x of fieldsOf('slot')) {
    if (x.offset + x.size > layout.SLOT_HEADER_LENGTH) problems.push(`${x.constant} ends at ${x.offset + x.size} > ${layout.SLOT_HEADER_LENGTH}`);
    if (x.offset % x.size !== 0) problems.push(`${x.constant} at ${x.offset} is not aligned to its size ${x.size}`);
    if (Math.floor(x.offset / 4) !== Math.floor((x.offset + x.size - 1) / 4)) problems.push(`${x.constant} straddles a 32-bit word`);
  }
  assert.equal(problems, []);
  assert.is(layout.SLOT_SEQ_OFFSET % 4, 0);
  assert.is(layout.SLOT_HEADER_LENGTH % 4, 0);
  assert.ok(layout.MIN_SLOT_SIZE > layout.SLOT_HEADER_LENGTH, 'a slot of MIN_SLOT_SIZE must hold a payload');
});

shape('aligns words, u64 halves and byte arrays to 4 bytes and smaller fields to their size', () => {
  const unaligned = FIELDS.filter((x) => valueOf(x.constant) % Math.min(x.size, 4) !== 0).map((x) => x.constant);
  assert.equal(unaligned, []);
  assert.is(layout.SLOT_SOURCE_HOST_OFFSET, layout.SLOT_FLAGS_OFFSET + 2, 'flags and source host share the word at 12');
});

shape('starts entries and slots on cache lines', () => {
  assert.is(layout.INBOX_HEADER_LENGTH % layout.CACHE_LINE_LENGTH, 0, 'INBOX_HEADER_LENGTH');
  assert.is(layout.DIR_HEADER_LENGTH % layout.CACHE_LINE_LENGTH, 0, 'DIR_HEADER_LENGTH');
  assert.is(layout.DIR_ENTRY_LENGTH % layout.CACHE_LINE_LENGTH, 0, 'DIR_ENTRY_LENGTH');
  assert.is(layout.DEDUP_HEADER_LENGTH % layout.CACHE_LINE_LENGTH, 0, 'DEDUP_HEADER_LENGTH');
  assert.is(layout.CACHE_LINE_LENGTH % layout.DEDUP_ENTRY_LENGTH, 0, 'a dedup entry never straddles a cache line');
  assert.is(layout.MIN_SLOT_SIZE % layout.CACHE_LINE_LENGTH, 0, 'MIN_SLOT_SIZE');
  assert.is(layout.MAX_SLOT_SIZE % layout.CACHE_LINE_LENGTH, 0, 'MAX_SLOT_SIZE');
});

shape('keeps every structure free of overlaps and inside its length', () => {
  const problems: string[] = [];
  const areas: Array<[Area, Area[]]> = [
    ['common', ['common']],
    ['directory', ['common', 'directory']],
    ['entry', ['entry']],
    ['inbox', ['common', 'inbox']],
    ['slot', ['slot']],
    ['notice', ['notice']],
    ['dedup', ['common', 'dedup']],
    ['dedupEntry', ['dedupEntry']],
  ];
  for (const [area, parts] of areas) {
    const fields = parts.flatMap(fieldsOf).sort((a, b) => a.offset - b.offset);
    const length = AREAS[area].extent;
    for (const x of fields) if (x.offset < 0 || x.offset + x.size > length) problems.push(`${area}: ${x.constant} [${x.offset}, ${x.offset + x.size}) outside [0, ${length})`);
    for (let k = 1; k < fields.length; k++) {
      const a = fields[k - 1]!;
      const b = fields[k]!;
      if (a.offset + a.size > b.offset) problems.push(`${area}: ${a.constant} overlaps ${b.constant}`);
    }
  }
  for (const x of [...fieldsOf('directory'), ...fieldsOf('inbox'), ...fieldsOf('dedup')]) {
    if (x.offset < layout.COMMON_HEADER_LENGTH) problems.push(`${x.constant} lies inside the common header`);
  }
  assert.equal(problems, []);
  assert.is(layout.ENTRY_NAME_OFFSET + layout.MAX_NAME_LENGTH, layout.DIR_ENTRY_LENGTH, 'the name fills the end of the entry');
});

shape('keeps the inbox counters inside the header, apart from each other and off the tail, head and parked lines', () => {
  const counters = INBOX_COUNTERS.map((x) => ({ ...x, offset: valueOf(x.constant) }));
  assert.is(counters.length, 9, 'expected nine u64 counters in the inbox header');
  const hot = ['INBOX_TAIL_OFFSET', 'INBOX_HEAD_OFFSET', 'INBOX_PARKED_OFFSET'].map((name) => line(valueOf(name)));
  const problems: string[] = [];
  for (const c of counters) {
    if (c.offset < layout.COMMON_HEADER_LENGTH || c.offset + 8 > layout.INBOX_HEADER_LENGTH) problems.push(`${c.constant} is outside the inbox header`);
    if (hot.includes(line(c.offset)) || hot.includes(line(c.offset + 7))) problems.push(`${c.constant} shares a cache line with tail, head or parked`);
    for (const d of counters) {
      if (d !== c && c.offset < d.offset + 8 && d.offset < c.offset + 8) problems.push(`${c.constant} overlaps ${d.constant}`);
    }
  }
  const producerLines = new Set(counters.filter((c) => PRODUCER_COUNTERS.includes(c.constant)).map((c) => line(c.offset)));
  for (const c of counters) {
    if (!PRODUCER_COUNTERS.includes(c.constant) && producerLines.has(line(c.offset))) problems.push(`owner-only ${c.constant} shares a cache line with the producer-written counters`);
  }
  assert.equal(problems, []);
});

shape('keeps every frame flag a bit of its own, and the address flags their union', () => {
  const flags = [layout.FRAME_FLAG_REMOTE, layout.FRAME_FLAG_NOTICE, layout.FRAME_FLAG_OUTBOUND];
  for (const flag of flags) assert.is(flag & (flag - 1), 0, `flag ${flag} is one bit`);
  assert.is(flags.reduce((a, b) => a | b, 0), flags.reduce((a, b) => a + b, 0), 'flags are distinct bits');
  assert.ok(flags.every((flag) => flag <= 0xffff), 'flags fit the u16 flags field');
  assert.is(layout.FRAME_FLAGS_WITH_ADDRESS, layout.FRAME_FLAG_REMOTE | layout.FRAME_FLAG_OUTBOUND);
  assert.is(layout.FRAME_FLAGS_WITH_ADDRESS & layout.FRAME_FLAG_NOTICE, 0, 'a notice has no address prefix in front');
  assert.ok(layout.MAX_ADDRESS_LENGTH < 256, 'the address length fits its u8');
  assert.is(layout.MAX_ADDRESS_LENGTH, 2 * layout.MAX_NAME_LENGTH + 1, 'name "@" host');
});

shape('builds names that fit the file-name patterns', () => {
  assert.is(layout.directoryFileName('ns-1'), `${layout.FILE_PREFIX}ns-1.dir`);
  assert.is(layout.inboxFileName('ns-1', 'a.b'), `${layout.FILE_PREFIX}ns-1.a.b.inbox`);
  assert.is(layout.dedupFileName('ns-1'), `${layout.FILE_PREFIX}ns-1.${layout.RELAY_ENDPOINT_NAME}.dedup`);
  assert.not.ok(layout.NAME_PATTERN.test(layout.RELAY_ENDPOINT_NAME), 'no application can register the relay name');
  assert.ok(layout.NAME_PATTERN.test('x'.repeat(layout.MAX_NAME_LENGTH)));
  assert.not.ok(layout.NAME_PATTERN.test('x'.repeat(layout.MAX_NAME_LENGTH + 1)));
  assert.not.ok(layout.NAME_PATTERN.test('.hidden'));
  assert.not.ok(layout.NAMESPACE_PATTERN.test('a.b'), 'a namespace never contains "."');
});

shape.run();
