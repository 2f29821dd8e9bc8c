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
 *
 * Suite (e) checks the relay's two algorithms on these words against the spec
 * (LAYOUT.md §7.8 relay lanes, §7.18 settling an intent), in process.
 *
 * The last suite checks the algorithms of the spec, not only its numbers: a C
 * producer written from docs/LAYOUT.md and native/layout.h alone
 * (test/c/lane_producer.c) takes a lane of a JavaScript Bus's inbox and sends
 * through it; JavaScript receives. Its size knob: SHMBUS_LAYOUT_C_FRAMES
 * (default 20000 frames).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Bus, type Frame } from '../src/index';
import { InboxConsumer } from '../src/inbox';
import { ScanningConsumer } from '../src/scan';
import { LaneProducer, type LaneOwner } from '../src/lane';
import * as layout from '../src/layout';
import { processStartTime, Segment } from '../src/segment';
import { DedupTable } from '../relay/dedup';
import { isSequenceAfter } from '../relay/codec';
import { cleanupAll, deadline, registerCleanup, shmDir, uniqueNamespace } from './_helpers';

const ROOT = join(__dirname, '..');
const HEADER_PATH = join(ROOT, 'native', 'layout.h');
const DOC_PATH = join(ROOT, 'docs', 'LAYOUT.md');
const PRODUCER_SOURCE = join(ROOT, 'test', 'c', 'lane_producer.c');

// ─── the fields: one row per *_OFFSET export ─────────────────────────────────

type Area = 'common' | 'directory' | 'entry' | 'inbox' | 'lane' | 'slot' | 'notice' | 'dedup' | 'dedupEntry';

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
  lane: { struct: 'shmbus_lane', length: layout.LANE_LENGTH, extent: layout.LANE_LENGTH },
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
  f('INBOX_LANE_COUNT_OFFSET', 'inbox', 'lane_count', 4),
  f('INBOX_MAX_MESSAGE_OFFSET', 'inbox', 'max_message', 4),
  f('INBOX_LANES_IN_USE_OFFSET', 'inbox', 'lanes_in_use', 4),
  f('INBOX_PARKED_OFFSET', 'inbox', 'parked', 4),
  f('INBOX_REFUSED_FULL_OFFSET', 'inbox', 'refused_full', 8),
  f('INBOX_WAKEUPS_OFFSET', 'inbox', 'wakeups', 8),
  f('INBOX_LANE_TAKES_OFFSET', 'inbox', 'lane_takes', 8),
  f('INBOX_LANE_REUSES_OFFSET', 'inbox', 'lane_reuses', 8),
  f('INBOX_LANE_REFUSED_OFFSET', 'inbox', 'lane_refused', 8),
  f('INBOX_RECEIVED_OFFSET', 'inbox', 'received', 8),
  f('INBOX_CORRUPT_OFFSET', 'inbox', 'corrupt', 8),
  f('INBOX_SENT_OFFSET', 'inbox', 'sent', 8),
  f('INBOX_SEND_REFUSED_OFFSET', 'inbox', 'send_refused', 8),
  f('INBOX_PARKS_OFFSET', 'inbox', 'parks', 8),
  f('INBOX_DISCARDED_OFFSET', 'inbox', 'discarded', 8),
  f('INBOX_CORRUPT_LANES_OFFSET', 'inbox', 'corrupt_lanes', 8),

  f('LANE_OWNER_OFFSET', 'lane', 'owner', 4),
  f('LANE_OWNER_FLAGS_OFFSET', 'lane', 'owner_flags', 4),
  f('LANE_OWNER_START_TIME_OFFSET', 'lane', 'owner_start_time', 8),
  f('LANE_TAIL_OFFSET', 'lane', 'tail', 4),
  f('LANE_SPACE_WANTED_OFFSET', 'lane', 'space_wanted', 4),
  f('LANE_HEAD_OFFSET', 'lane', 'head', 4),
  f('LANE_STATE_OFFSET', 'lane', 'state', 4),

  f('SLOT_LENGTH_OFFSET', 'slot', 'length', 4),
  f('SLOT_FLAGS_OFFSET', 'slot', 'flags', 2),
  f('SLOT_SOURCE_HOST_OFFSET', 'slot', 'source_host', 2),
  f('SLOT_SOURCE_INDEX_OFFSET', 'slot', 'source_index', 4),
  f('SLOT_SOURCE_GENERATION_OFFSET', 'slot', 'source_generation', 4),
  f('SLOT_DESTINATION_INDEX_OFFSET', 'slot', 'destination_index', 4),
  f('SLOT_SEQUENCE_OFFSET', 'slot', 'sequence', 4),
  f('SLOT_MESSAGE_LENGTH_OFFSET', 'slot', 'message_length', 4),
  f('SLOT_MARK_OFFSET', 'slot', 'mark', 4),

  f('NOTICE_KIND_OFFSET', 'notice', 'kind', 1),
  f('NOTICE_REASON_OFFSET', 'notice', 'reason', 1),
  f('NOTICE_SEQUENCE_OFFSET', 'notice', 'sequence', 4),
  f('NOTICE_ADDRESS_OFFSET', 'notice', 'address', layout.ADDRESS_PREFIX_HEADER_LENGTH + layout.MAX_ADDRESS_LENGTH),

  f('DEDUP_ENTRY_COUNT_OFFSET', 'dedup', 'entry_count', 4),
  f('DEDUP_INTENT_STATE_OFFSET', 'dedup', 'intent_state', 4),
  f('DEDUP_INTENT_ENTRY_OFFSET', 'dedup', 'intent_entry', 4),
  f('DEDUP_INTENT_SEQUENCE_OFFSET', 'dedup', 'intent_sequence', 4),
  f('DEDUP_INTENT_TARGET_INDEX_OFFSET', 'dedup', 'intent_target_index', 4),
  f('DEDUP_INTENT_TARGET_GENERATION_OFFSET', 'dedup', 'intent_target_generation', 4),
  f('DEDUP_INTENT_TARGET_EPOCH_OFFSET', 'dedup', 'intent_target_epoch', 4),
  f('DEDUP_INTENT_LANE_OFFSET', 'dedup', 'intent_lane', 4),
  f('DEDUP_INTENT_TAIL_OFFSET', 'dedup', 'intent_tail', 4),
  f('DEDUP_INTENT_SLOTS_OFFSET', 'dedup', 'intent_slots', 4),

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
/** Counters any producer adds to (the rest are the owner's). */
const PRODUCER_COUNTERS = ['INBOX_REFUSED_FULL_OFFSET', 'INBOX_WAKEUPS_OFFSET', 'INBOX_LANE_TAKES_OFFSET', 'INBOX_LANE_REUSES_OFFSET', 'INBOX_LANE_REFUSED_OFFSET'];
/** Inbox header words every producer and the consumer touch: each needs a cache line of its own. */
const HOT_INBOX_WORDS = ['INBOX_LANES_IN_USE_OFFSET', 'INBOX_PARKED_OFFSET'];
/** Lane words written by the lane's producer (its line) and by the consumer (the other line). */
const LANE_PRODUCER_WORDS = ['LANE_OWNER_OFFSET', 'LANE_OWNER_FLAGS_OFFSET', 'LANE_OWNER_START_TIME_OFFSET', 'LANE_TAIL_OFFSET', 'LANE_SPACE_WANTED_OFFSET'];
const LANE_CONSUMER_WORDS = ['LANE_HEAD_OFFSET', 'LANE_STATE_OFFSET'];

/** A lane producer and a consumer on a plain ArrayBuffer formatted as an inbox (the code, not layout.ts, answers). */
function codeOn(slotSize: number, capacity: number, lanes: number): { producer: LaneProducer; consumer: ScanningConsumer } {
  const buffer = new ArrayBuffer(layout.inboxSegmentLength(slotSize, capacity, lanes));
  InboxConsumer.format(buffer, slotSize, capacity, lanes, capacity * (slotSize - layout.SLOT_HEADER_LENGTH));
  const producer = LaneProducer.take(buffer, { pid: 1, startTime: 1, isAlive: () => true });
  return { producer, consumer: new ScanningConsumer(buffer) };
}

/** Function-like macros of native/layout.h and what the TypeScript side computes for the same arguments. */
const FUNCTION_CHECKS: ReadonlyArray<readonly [string, () => number]> = [
  ['SHMBUS_LANE_OFFSET(0)', () => layout.laneOffset(0)],
  ['SHMBUS_LANE_OFFSET(4095)', () => layout.laneOffset(4095)],
  ['SHMBUS_SLOTS_OFFSET(16)', () => layout.slotsOffset(16)],
  ['SHMBUS_SLOTS_OFFSET(4096)', () => layout.slotsOffset(4096)],
  ['SHMBUS_SLOT_OFFSET(0, 0, 256, 1024, 16)', () => layout.slotOffset(0, 0, 256, 1024, 16)],
  ['SHMBUS_SLOT_OFFSET(3, 5, 256, 1024, 16)', () => layout.slotOffset(3, 5, 256, 1024, 16)],
  ['SHMBUS_SLOT_OFFSET(4095, 255, 65536, 256, 4096)', () => layout.slotOffset(4095, 255, 65536, 256, 4096)],
  ['SHMBUS_SLOT_OFFSET(1, 1048575, 65536, 1048576, 2)', () => layout.slotOffset(1, 1048575, 65536, 1048576, 2)],
  ['SHMBUS_ENTRY_OFFSET(5)', () => layout.entryOffset(5)],
  ['SHMBUS_ENTRY_OFFSET(65535)', () => layout.entryOffset(65535)],
  ['SHMBUS_INBOX_SEGMENT_LENGTH(256, 1024, 16)', () => layout.inboxSegmentLength(256, 1024, 16)],
  ['SHMBUS_INBOX_SEGMENT_LENGTH(65536, 1048576, 4096)', () => layout.inboxSegmentLength(65536, 1048576, 4096)],
  ['SHMBUS_DIRECTORY_SEGMENT_LENGTH(256)', () => layout.directorySegmentLength(256)],
  ['SHMBUS_DIRECTORY_SEGMENT_LENGTH(65536)', () => layout.directorySegmentLength(65536)],
  ['SHMBUS_DEDUP_SEGMENT_LENGTH(65536)', () => layout.dedupSegmentLength(65536)],
  ['SHMBUS_DEDUP_SEGMENT_LENGTH(4194304)', () => layout.dedupSegmentLength(4194304)],
  ['SHMBUS_MAX_PAYLOAD(64)', () => codeOn(64, 4, 1).producer.maxPayload],
  ['SHMBUS_MAX_PAYLOAD(65536)', () => codeOn(65536, 2, 1).producer.maxPayload],
  ...[0, 1, 96, 97, 192, 193, 1000, 1536].map((m): readonly [string, () => number] => [`SHMBUS_SLOTS_FOR(${m}, 128)`, () => codeOn(128, 16, 1).producer.slotsFor(m)]),
  ['SHMBUS_FRAME_ID(0, 0, 1024)', () => codeOn(64, 1024, 16).consumer.idOf(0, 0)],
  ['SHMBUS_FRAME_ID(3, 1029, 1024)', () => codeOn(64, 1024, 16).consumer.idOf(3, 1029)],
  ['SHMBUS_FRAME_ID(15, 4294967295u, 1024)', () => codeOn(64, 1024, 16).consumer.idOf(15, 0xffffffff)],
];

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
  FUNCTION_CHECKS.forEach(([expr], i) => exprs.push([`fn:${i}`, expr]));
  exprs.push(['embedded:lane-in-inbox', 'SHMBUS_LANE_OFFSET(0) - sizeof(shmbus_inbox_header)']);
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

structs('computes addresses, lengths, slot counts and frame ids like the TypeScript side', () => {
  const values = probe();
  assert.equal(
    mismatches(FUNCTION_CHECKS.map(([expr, js], i): [string, unknown, unknown] => [expr, values.get(`fn:${i}`), js()])),
    [],
  );
  assert.is(values.get('embedded:lane-in-inbox'), 0, 'lane descriptor 0 starts right after the inbox header struct');
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

doc('gives the current LAYOUT_VERSION in its title', () => {
  const title = readFileSync(DOC_PATH, 'utf8').split(/\r?\n/, 1)[0] ?? '';
  assert.match(title, new RegExp(`version ${layout.LAYOUT_VERSION}$`), `title: ${title}`);
});

/** `SYNC POINT: <name>` comments in src/ and relay/, by name. */
function codeSyncPoints(): Set<string> {
  const names = new Set<string>();
  for (const folder of ['src', 'relay']) {
    for (const file of readdirSync(join(ROOT, folder)).filter((x) => x.endsWith('.ts'))) {
      const text = readFileSync(join(ROOT, folder, file), 'utf8');
      for (const m of text.matchAll(/SYNC POINT: ([a-z][a-z ]*[a-z])/g)) names.add(m[1]!);
    }
  }
  return names;
}

doc('names every SYNC POINT of the code in its SYNC POINT table, and only those', () => {
  const table = docTables().find((rows) => rows.length > 0 && 'sync point' in rows[0]!.cells);
  assert.ok(table, 'no table with a "SYNC POINT" column');
  const documented = new Map(table!.map((row) => [row.cells['sync point']!.replace(/\s*\(.*\)$/, ''), row.cells['sync point']!]));
  const code = codeSyncPoints();
  assert.ok(code.size > 0, 'no SYNC POINT comments found in src/');
  const missing = [...code].filter((name) => !documented.has(name));
  const stale = [...documented].filter(([name, cell]) => !code.has(name) && !cell.includes('no comment in the code')).map(([name]) => name);
  assert.equal(missing, [], `SYNC POINTs of the code missing from LAYOUT.md section 3: ${missing.join(', ')}`);
  assert.equal(stale, [], `LAYOUT.md names SYNC POINTs the code does not: ${stale.join(', ')}`);
});

doc('has every section that the code refers to as LAYOUT.md §n', () => {
  const headings = new Set([...readFileSync(DOC_PATH, 'utf8').matchAll(/^#{2,3} (\d+(?:\.\d+)?)[. ]/gm)].map((m) => m[1]!));
  const missing: string[] = [];
  for (const folder of ['src', 'relay', 'native']) {
    for (const file of readdirSync(join(ROOT, folder))) {
      const text = readFileSync(join(ROOT, folder, file), 'utf8');
      for (const m of text.matchAll(/LAYOUT\.md §(\d+(?:\.\d+)?)/g)) if (!headings.has(m[1]!)) missing.push(`${folder}/${file}: §${m[1]}`);
    }
  }
  assert.equal(missing, []);
});

doc.run();

// ─── (d) properties of layout.ts itself ─────────────────────────────────────

const shape = suite('layout: structure of layout.ts');

const line = (offset: number) => Math.floor(offset / layout.CACHE_LINE_LENGTH);
const fieldsOf = (area: Area) => FIELDS.filter((x) => x.area === area).map((x) => ({ ...x, offset: valueOf(x.constant) }));

shape('gives lanes in use and parked a cache line each that holds nothing else', () => {
  const lines = HOT_INBOX_WORDS.map((name) => line(valueOf(name)));
  assert.is(new Set(lines).size, HOT_INBOX_WORDS.length, `lanes in use and parked share a line: lines ${lines.join(', ')}`);
  const sharing = [...fieldsOf('common'), ...fieldsOf('inbox')]
    .filter((x) => !HOT_INBOX_WORDS.includes(x.constant))
    .filter((x) => lines.includes(line(x.offset)) || lines.includes(line(x.offset + x.size - 1)))
    .map((x) => x.constant);
  assert.equal(sharing, []);
});

shape('splits a lane descriptor into a producer line and a consumer line', () => {
  const lanes = fieldsOf('lane');
  const covered = new Set([...LANE_PRODUCER_WORDS, ...LANE_CONSUMER_WORDS]);
  assert.equal(lanes.filter((x) => !covered.has(x.constant)).map((x) => x.constant), [], 'every lane field is on one side');
  const linesOf = (names: string[]) => new Set(lanes.filter((x) => names.includes(x.constant)).flatMap((x) => [line(x.offset), line(x.offset + x.size - 1)]));
  const producer = linesOf(LANE_PRODUCER_WORDS);
  const consumer = linesOf(LANE_CONSUMER_WORDS);
  assert.is(producer.size, 1, 'the producer words share one line');
  assert.is(consumer.size, 1, 'the consumer words share one line');
  assert.not.equal([...producer], [...consumer]);
  assert.is(layout.LANE_LENGTH, 2 * layout.CACHE_LINE_LENGTH);
  assert.is(layout.INBOX_HEADER_LENGTH % layout.CACHE_LINE_LENGTH, 0, 'lane 0 starts on a cache line');
  assert.is(layout.slotsOffset(1) % layout.CACHE_LINE_LENGTH, 0, 'slots start on a cache line');
});

shape('keeps frame ids (lane * capacity + slot) within a u32 and pids within an i32 owner word', () => {
  assert.ok(layout.MAX_LANES * layout.MAX_CAPACITY <= 2 ** 32);
  assert.ok(layout.MAX_PID < 2 ** 31);
  assert.ok(layout.MAX_MESSAGE_LENGTH <= layout.MAX_SEGMENT_LENGTH);
  assert.ok(layout.MAX_CAPACITY * (layout.MIN_SLOT_SIZE - layout.SLOT_HEADER_LENGTH) >= 1, 'a message fits an empty lane');
});

shape('keeps the slot header fields inside SLOT_HEADER_LENGTH, naturally aligned and within one 32-bit word each', () => {
  const problems: string[] = [];
  for (const x of fieldsOf('slot')) {
    if (x.offset + x.size > layout.SLOT_HEADER_LENGTH) problems.push(`${x.constant} ends at ${x.offset + x.size} > ${layout.SLOT_HEADER_LENGTH}`);
    if (x.offset % x.size !== 0) problems.push(`${x.constant} at ${x.offset} is not aligned to its size ${x.size}`);
    if (Math.floor(x.offset / 4) !== Math.floor((x.offset + x.size - 1) / 4)) problems.push(`${x.constant} straddles a 32-bit word`);
  }
  assert.equal(problems, []);
  assert.is(layout.SLOT_HEADER_LENGTH % 4, 0);
  assert.ok(layout.MIN_SLOT_SIZE > layout.SLOT_HEADER_LENGTH, 'a slot of MIN_SLOT_SIZE must hold a payload');
});

shape('aligns words, u64 halves and byte arrays to 4 bytes and smaller fields to their size', () => {
  const unaligned = FIELDS.filter((x) => valueOf(x.constant) % Math.min(x.size, 4) !== 0).map((x) => x.constant);
  assert.equal(unaligned, []);
  assert.is(layout.SLOT_SOURCE_HOST_OFFSET, layout.SLOT_FLAGS_OFFSET + 2, 'flags and source host share one word');
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
    ['lane', ['lane']],
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

shape('keeps the inbox counters inside the header, apart from each other and off the lanes-in-use and parked lines', () => {
  const counters = INBOX_COUNTERS.map((x) => ({ ...x, offset: valueOf(x.constant) }));
  assert.is(counters.length, 12, 'expected twelve u64 counters in the inbox header');
  const hot = HOT_INBOX_WORDS.map((name) => line(valueOf(name)));
  const problems: string[] = [];
  for (const c of counters) {
    if (c.offset < layout.COMMON_HEADER_LENGTH || c.offset + 8 > layout.INBOX_HEADER_LENGTH) problems.push(`${c.constant} is outside the inbox header`);
    if (hot.includes(line(c.offset)) || hot.includes(line(c.offset + 7))) problems.push(`${c.constant} shares a cache line with lanes in use or parked`);
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
  const flags = [layout.FRAME_FLAG_REMOTE, layout.FRAME_FLAG_NOTICE, layout.FRAME_FLAG_OUTBOUND, layout.FRAME_FLAG_CONTINUATION];
  for (const flag of flags) assert.is(flag & (flag - 1), 0, `flag ${flag} is one bit`);
  assert.is(flags.reduce((a, b) => a | b, 0), flags.reduce((a, b) => a + b, 0), 'flags are distinct bits');
  assert.ok(flags.every((flag) => flag <= 0xffff), 'flags fit the u16 flags field');
  assert.is(layout.FRAME_FLAGS_WITH_ADDRESS, layout.FRAME_FLAG_REMOTE | layout.FRAME_FLAG_OUTBOUND);
  assert.is(layout.FRAME_FLAGS_WITH_ADDRESS & layout.FRAME_FLAG_NOTICE, 0, 'a notice has no address prefix in front');
  assert.is(layout.FRAME_FLAGS_WITH_ADDRESS & layout.FRAME_FLAG_CONTINUATION, 0, 'continuation is not an address flag');
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

// ─── (e) the relay's lanes (§7.8) and delivery intent (§7.18), the code against the spec ──

const relay = suite('layout: relay lanes (§7.8) and delivery intents (§7.18)');
relay.after.each(cleanupAll);

const DEAD_RELAY = 4001;
const DEAD_APP = 4002;
const LIVE_APP = 4003;
const RELAY = 4004;
/** The 4001 .. 4002 pids are dead; everyone else (these live owners, the takers from 5001) alive. */
const isAlive = (pid: number) => pid !== DEAD_RELAY && pid !== DEAD_APP;
const app = (pid: number): LaneOwner => ({ pid, startTime: 7, isAlive });
const relayOwner: LaneOwner = { pid: RELAY, startTime: 9, isAlive, relay: true };

/** An inbox of `lanes` lanes on a plain ArrayBuffer, with accessors for the lane words of §5.3. */
function laneInbox(lanes: number) {
  const buffer = new ArrayBuffer(layout.inboxSegmentLength(64, 4, lanes));
  InboxConsumer.format(buffer, 64, 4, lanes, 4 * (64 - layout.SLOT_HEADER_LENGTH));
  const i32 = new Int32Array(buffer);
  const u32 = new Uint32Array(buffer);
  const word = (lane: number, field: number) => (layout.laneOffset(lane) + field) / 4;
  return {
    buffer,
    owner: (lane: number) => Atomics.load(i32, word(lane, layout.LANE_OWNER_OFFSET)),
    flags: (lane: number) => Atomics.load(u32, word(lane, layout.LANE_OWNER_FLAGS_OFFSET)),
    tail: (lane: number) => Atomics.load(u32, word(lane, layout.LANE_TAIL_OFFSET)),
    /** What finish_take leaves: start time, flags, then the owner word. */
    set(lane: number, owner: number, flags: number, tail = 0) {
      Atomics.store(u32, word(lane, layout.LANE_OWNER_START_TIME_OFFSET), 5);
      Atomics.store(u32, word(lane, layout.LANE_OWNER_FLAGS_OFFSET), flags);
      Atomics.store(u32, word(lane, layout.LANE_TAIL_OFFSET), tail);
      Atomics.store(u32, word(lane, layout.LANE_HEAD_OFFSET), tail);
      Atomics.store(i32, word(lane, layout.LANE_OWNER_OFFSET), owner);
    },
  };
}

relay('an application never takes a dead relay\'s flagged lane; it takes dead applications\' lanes and stores flags 0', () => {
  const x = laneInbox(4);
  x.set(0, DEAD_RELAY, layout.LANE_OWNER_FLAG_RELAY, 3);
  x.set(1, DEAD_APP, 0);
  x.set(2, -DEAD_RELAY, layout.LANE_OWNER_FLAG_RELAY); // died while taking: judged by pid alone, flag or not
  x.set(3, LIVE_APP, 0);
  const taken = [LaneProducer.take(x.buffer, app(5001)), LaneProducer.take(x.buffer, app(5002))].map((p) => p.lane).sort();
  assert.equal(taken, [1, 2]);
  assert.is(x.flags(2), 0, 'finish_take stores the flags word, clearing a stale flag');
  try {
    LaneProducer.take(x.buffer, app(5003));
    assert.unreachable('took a dead relay\'s lane, or a live owner\'s');
  } catch (err) {
    assert.is((err as { code?: string }).code, 'ERR_SHMBUS_NO_LANE');
  }
  assert.is(x.owner(0), DEAD_RELAY, 'the dead relay\'s lane waits for a relay');
  assert.is(x.tail(0), 3, 'its tail has not moved');
});

relay('a relay takes a dead relay\'s flagged lane before a free one, flags its lanes, and clears the flag on release', () => {
  const x = laneInbox(3);
  x.set(0, LIVE_APP, 0);
  x.set(2, DEAD_RELAY, layout.LANE_OWNER_FLAG_RELAY, 3); // lane 1 stays free
  const lane = LaneProducer.take(x.buffer, relayOwner);
  assert.is(lane.lane, 2, 'pass 0: the dead relay\'s lane first');
  assert.is(lane.publishedTail, 3, 'continuing at the tail it finds');
  assert.is(x.owner(2), RELAY);
  assert.is(x.flags(2), layout.LANE_OWNER_FLAG_RELAY);
  lane.release();
  assert.is(x.owner(2), 0);
  assert.is(x.flags(2), 0, 'a released lane is never flagged');
  const again = LaneProducer.take(x.buffer, relayOwner);
  assert.is(again.lane, 1, 'no dead relay lane: pass 1, a free lane');
  assert.is(x.flags(1), layout.LANE_OWNER_FLAG_RELAY);
});

relay('settles an open intent from the lane\'s tail: published, not published, unknown', () => {
  const dir = shmDir();
  const namespace = uniqueNamespace('intent');
  const path = join(dir, layout.dedupFileName(namespace));
  const open = () => {
    const table = DedupTable.open(dir, namespace, 64, 0o600);
    registerCleanup(() => table.close(false));
    return table;
  };
  let table = open();
  const segment = Segment.attach(path, layout.SEGMENT_KIND_DEDUP);
  registerCleanup(() => segment.unmap());
  assert.is(segment.u32[layout.HEADER_LENGTH_OFFSET / 4], layout.DEDUP_HEADER_LENGTH);
  const word = (offset: number) => Atomics.load(segment.u32, offset / 4);
  const entry = table.slotFor(1, 2, 3, 'target', 10);
  assert.ok(entry >= 0);
  /** Would frame `sequence` be delivered (true) or is it a duplicate? */
  const fresh = (sequence: number) => {
    const slot = table.slotFor(1, 2, 3, 'target', sequence);
    assert.is(slot, entry, 'the same entry for the same key');
    return isSequenceAfter(sequence, table.last(slot));
  };
  const openIntent = (sequence: number, tail: number, slots: number) => table.openIntent(entry, sequence, 4, 6, 0xabcd, 2, tail, slots);

  // Killed with the intent open: the fields are at the offsets of §5.5, the state OPEN.
  openIntent(10, 12, 2);
  assert.equal(
    [layout.DEDUP_INTENT_STATE_OFFSET, layout.DEDUP_INTENT_ENTRY_OFFSET, layout.DEDUP_INTENT_SEQUENCE_OFFSET, layout.DEDUP_INTENT_TARGET_INDEX_OFFSET, layout.DEDUP_INTENT_TARGET_GENERATION_OFFSET, layout.DEDUP_INTENT_TARGET_EPOCH_OFFSET, layout.DEDUP_INTENT_LANE_OFFSET, layout.DEDUP_INTENT_TAIL_OFFSET, layout.DEDUP_INTENT_SLOTS_OFFSET].map(word),
    [layout.DEDUP_INTENT_OPEN, entry, 10, 4, 6, 0xabcd, 2, 12, 2],
  );
  table.close(false);
  table = open();
  // tail == intent tail - slots: not published; the entry is left alone and the frame is delivered from the resend.
  assert.equal(table.settleIntent(() => 10)?.outcome, 'not-published');
  assert.is(word(layout.DEDUP_INTENT_STATE_OFFSET), 0, 'closed');
  assert.ok(fresh(10), 'not a duplicate');

  // tail == intent tail: published; the entry records it and the resend is a duplicate.
  openIntent(10, 12, 2);
  table.close(false);
  table = open();
  assert.equal(table.settleIntent((i) => i.tail)?.outcome, 'published');
  assert.not.ok(fresh(10), 'a duplicate');
  assert.is(table.settleIntent(() => 0), null, 'nothing left open');

  // Entry updated, intent not closed: published, nothing more to do.
  openIntent(11, 13, 1);
  table.delivered(entry, 11);
  table.close(false);
  table = open();
  assert.equal(table.settleIntent(() => 13)?.outcome, 'published');
  assert.not.ok(fresh(11));

  // The inbox is gone (or replaced): unknown, recorded as delivered.
  openIntent(12, 14, 1);
  table.close(false);
  table = open();
  assert.equal(table.settleIntent(() => null)?.outcome, 'unknown');
  assert.not.ok(fresh(12));
  assert.is(word(layout.DEDUP_INTENT_STATE_OFFSET), 0);
});

relay.run();

// ─── (f) the algorithms: a C producer written from docs/LAYOUT.md ───────────

const c = suite('layout: a C producer written from docs/LAYOUT.md, a JavaScript consumer');
c.after.each(cleanupAll);

let producerTmp: string | null = null;
let producerExe: { path: string } | { error: Error } | null = null;

c.after(() => {
  if (producerTmp !== null) rmSync(producerTmp, { recursive: true, force: true });
  producerTmp = null;
});

/** Compile test/c/lane_producer.c once (lazily, inside the first test that needs it). */
function producerProgram(): string {
  if (producerExe === null) {
    try {
      producerTmp = mkdtempSync(join(tmpdir(), 'shmbus-lane-producer-'));
      const path = join(producerTmp, 'lane_producer');
      run('cc', ['-std=c11', '-O2', '-pedantic', '-Wall', '-Wextra', '-Werror', '-o', path, PRODUCER_SOURCE]);
      producerExe = { path };
    } catch (err) {
      producerExe = { error: err as Error };
    }
  }
  if ('error' in producerExe) throw producerExe.error;
  return producerExe.path;
}

/** Frames the first test sends (the long messages come on top). */
const C_FRAMES = Number(process.env.SHMBUS_LAYOUT_C_FRAMES ?? 20000);
/** Times the producer waits for the consumer to park and rings it. */
const PARK_PHASES = 4;
/** A small inbox: 16 slots of 96 payload bytes per lane, so the producer waits for room often. */
const GEOMETRY = { slotSize: 128, capacity: 16 } as const;
const P = GEOMETRY.slotSize - layout.SLOT_HEADER_LENGTH;
/** Long messages: 10 full slots, 11 slots with a short last one, and a whole lane. */
const LONG_MESSAGES = [10 * P, 1000, GEOMETRY.capacity * P];

interface Producer {
  readonly lines: string[];
  /** Resolves with the exit code (null: killed by a signal). */
  readonly exited: Promise<number | null>;
  stderr(): string;
}

function startProducer(args: Array<string | number>): Producer {
  const child: ChildProcess = spawn(producerProgram(), args.map(String), { stdio: ['ignore', 'pipe', 'pipe'] });
  registerCleanup(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const lines: string[] = [];
  let err = '';
  createInterface({ input: child.stdout! }).on('line', (l) => lines.push(l));
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code));
  });
  return { lines, exited, stderr: () => err };
}

/** A Bus (the consumer) and a second mapping of its inbox, for the test to read and write lane words. */
function consumer(lanes: number, extra: { maxMessageSize?: number } = {}) {
  const dir = shmDir();
  const namespace = uniqueNamespace('c-producer');
  const name = 'sink';
  const bus = Bus.openSync({ name, namespace, dir, ...GEOMETRY, lanes, ...extra });
  registerCleanup(() => bus.closeSync());
  const path = join(dir, layout.inboxFileName(namespace, name));
  const segment = Segment.attach(path, layout.SEGMENT_KIND_INBOX);
  registerCleanup(() => segment.unmap());
  const i32 = segment.i32;
  const laneWord = (lane: number, field: number) => (layout.laneOffset(lane) + field) / 4;
  return {
    bus,
    path,
    owner: (lane: number) => Atomics.load(i32, laneWord(lane, layout.LANE_OWNER_OFFSET)),
    setOwner(lane: number, pid: number, startTime: number) {
      Atomics.store(segment.u32, laneWord(lane, layout.LANE_OWNER_START_TIME_OFFSET), startTime >>> 0);
      Atomics.store(segment.u32, laneWord(lane, layout.LANE_OWNER_START_TIME_OFFSET) + 1, Math.floor(startTime / 2 ** 32));
      Atomics.store(i32, laneWord(lane, layout.LANE_OWNER_OFFSET), pid);
    },
  };
}

/** Collect `count` frames through the parking receive path (Bus.frames), behind a deadline. */
function receive(bus: Bus, count: number, ms: number): Promise<Frame[]> {
  return deadline(
    (async () => {
      const frames: Frame[] = [];
      if (count === 0) return frames;
      for await (const frame of bus.frames()) {
        frames.push(frame);
        if (frames.length === count) break;
      }
      return frames;
    })(),
    ms,
    `${count} frames from the C producer`,
  );
}

/** The payload of frame k: 4 + k % (P - 3) bytes, k little-endian, then (k * 31 + i) & 255. */
function expectedFrame(k: number): Uint8Array {
  const out = new Uint8Array(4 + (k % (P - 3)));
  new DataView(out.buffer).setUint32(0, k, true);
  for (let i = 4; i < out.length; i++) out[i] = (k * 31 + i) & 0xff;
  return out;
}

/** Long message j of `length` bytes: (i * 7 + j * 13 + 1) & 255. */
function expectedMessage(j: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 7 + j * 13 + 1) & 0xff;
  return out;
}

/** First index where two byte arrays differ (-1 when equal, the shorter length when one is a prefix). */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Check frames 0 .. n-1 (sequences 0 .. n-1): each exactly once, in order, byte for byte. */
function checkFrames(frames: readonly Frame[], n: number): void {
  const problems: string[] = [];
  for (let k = 0; k < n && problems.length < 5; k++) {
    const frame = frames[k];
    if (frame === undefined) {
      problems.push(`frame ${k} missing`);
      continue;
    }
    if (frame.sequence !== k) problems.push(`position ${k}: sequence ${frame.sequence}`);
    if (frame.flags !== 0 || frame.source !== '') problems.push(`frame ${k}: flags ${frame.flags}, source "${frame.source}"`);
    const at = firstDifference(frame.payload, expectedFrame(k));
    if (at >= 0) problems.push(`frame ${k}: ${frame.payload.length} bytes, differs at byte ${at}`);
  }
  assert.equal(problems, []);
}

c('delivers every frame exactly once and in order, long messages byte for byte, with a ring per park', async () => {
  const { bus, path, owner } = consumer(4, { maxMessageSize: GEOMETRY.capacity * P });
  const total = C_FRAMES + LONG_MESSAGES.length;
  const producer = startProducer([path, bus.identity.index, C_FRAMES, PARK_PHASES, 1, ...LONG_MESSAGES]);
  const frames = await receive(bus, total, 60_000).catch((err: Error) => {
    throw new Error(`${err.message}; producer said: ${producer.lines.slice(-5).join(' | ')} ${producer.stderr()}`);
  });
  const code = await deadline(producer.exited, 10_000, 'the C producer exiting');
  assert.is(code, 0, `exit code ${code}: ${producer.stderr()}`);

  assert.is(frames.length, total);
  checkFrames(frames, C_FRAMES);
  // The frame of length P + 1 (sequence C_FRAMES) was skipped; the long messages follow it.
  LONG_MESSAGES.forEach((length, j) => {
    const frame = frames[C_FRAMES + j]!;
    assert.is(frame.sequence, C_FRAMES + 1 + j, `long message ${j}: sequence`);
    assert.is(frame.payload.length, length, `long message ${j}: length`);
    assert.is(firstDifference(frame.payload, expectedMessage(j, length)), -1, `long message ${j}: bytes`);
  });
  assert.is(bus.recvFromLocal(), null, 'nothing more');

  assert.equal(producer.lines[0], 'lane 0 reused 0');
  const done = /^done frames (\d+) messages (\d+) rings (\d+) waits (\d+)$/.exec(producer.lines.find((l) => l.startsWith('done')) ?? '');
  assert.ok(done, `no "done" line: ${producer.lines.join(' | ')}`);
  const rings = Number(done![3]);
  const latencies = producer.lines.flatMap((l) => /^phase \d+ latency_us (\d+)$/.exec(l)?.slice(1) ?? []).map(Number);
  assert.is(latencies.length, PARK_PHASES, 'one line per park phase');
  assert.is(producer.lines.at(-1), 'released');

  const stats = bus.stats();
  assert.is(stats.received, total, 'received counts frames, a long message as one');
  assert.is(stats.corrupt, 1, 'the frame one byte longer than the payload area was skipped and counted');
  assert.is(stats.corruptLanes, 0);
  assert.is(stats.laneTakes, 1);
  assert.is(stats.laneReuses, 0);
  assert.is(stats.lanesInUse, 1);
  assert.ok(rings >= PARK_PHASES, `the producer rang ${rings} times`);
  assert.is(stats.wakeups, rings, 'every bell taken was rung, and counted once');
  assert.ok(stats.parks >= PARK_PHASES, `the consumer parked ${stats.parks} times`);
  // A ring wakes the parked consumer at once; without the FUTEX_WAKE it would wait for the native
  // waiter's 200 ms re-check. The median keeps one slow wake-up on a loaded machine from failing this.
  const median = [...latencies].sort((a, b) => a - b)[Math.floor(latencies.length / 2)]!;
  assert.ok(median < 100_000, `median wake-up latency ${median} us (all: ${latencies.join(', ')})`);
  assert.is(owner(0), 0, 'the lane is free again');
});

c('takes a lane whose owner is dead by its start time, never a live owner\'s or a live taker\'s', async () => {
  const { bus, path, owner, setOwner } = consumer(3);
  const me = process.pid;
  const start = processStartTime(me);
  setOwner(0, me, start); // a live owner: this process
  setOwner(1, -me, 0); // being taken by a live process: judged by pid alone
  setOwner(2, me, start + 1); // this pid, but another start time: an earlier process, dead
  const n = 200;
  const producer = startProducer([path, bus.identity.index, n, 0, 0]);
  const frames = await receive(bus, n, 30_000);
  assert.is(await deadline(producer.exited, 10_000, 'the C producer exiting'), 0, producer.stderr());
  assert.equal(producer.lines[0], 'lane 2 reused 1');
  checkFrames(frames, n);
  assert.is(owner(0), me, 'the live owner keeps its lane');
  assert.is(owner(1), -me, 'the live taker keeps its lane');
  assert.is(owner(2), 0, 'the taken lane is released');
  const stats = bus.stats();
  assert.is(stats.laneTakes, 1);
  assert.is(stats.laneReuses, 1);
});

c('takes a lane left in the "being taken" state by a dead process', async () => {
  const { bus, path, owner, setOwner } = consumer(2);
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!; // exited and reaped: its pid names nobody
  setOwner(0, process.pid, processStartTime(process.pid));
  setOwner(1, -dead, 0);
  const producer = startProducer([path, bus.identity.index, 10, 0, 0]);
  const frames = await receive(bus, 10, 30_000);
  assert.is(await deadline(producer.exited, 10_000, 'the C producer exiting'), 0, producer.stderr());
  assert.equal(producer.lines[0], 'lane 1 reused 1');
  checkFrames(frames, 10);
  assert.is(owner(1), 0);
});

c('is refused with ERR_SHMBUS_NO_LANE when every lane is held by a live process', async () => {
  const { bus, path, owner, setOwner } = consumer(1);
  setOwner(0, process.pid, processStartTime(process.pid));
  const producer = startProducer([path, bus.identity.index, 10, 0, 0]);
  assert.is(await deadline(producer.exited, 10_000, 'the C producer exiting'), 3, producer.stderr());
  assert.match(producer.stderr(), /ERR_SHMBUS_NO_LANE/);
  assert.is(owner(0), process.pid);
  assert.is(bus.stats().laneRefused, 1);
  assert.is(bus.stats().laneTakes, 0);
});

c('sees a version-1 segment refused with ERR_SHMBUS_LAYOUT_MISMATCH', () => {
  const dir = shmDir();
  const path = join(dir, layout.inboxFileName(uniqueNamespace('v1'), 'old'));
  // A version-1 inbox (LAYOUT.md §9): its header was 448 bytes, slot size and capacity at the same offsets.
  const V1_INBOX_HEADER_LENGTH = 448;
  const v1 = new Uint32Array((V1_INBOX_HEADER_LENGTH + 2 * layout.MIN_SLOT_SIZE) / 4);
  v1[layout.MAGIC_OFFSET / 4] = layout.SEGMENT_MAGIC;
  v1[layout.KIND_OFFSET / 4] = layout.SEGMENT_KIND_INBOX;
  v1[layout.VERSION_OFFSET / 4] = 1;
  v1[layout.HEADER_LENGTH_OFFSET / 4] = V1_INBOX_HEADER_LENGTH;
  v1[layout.SEGMENT_LENGTH_OFFSET / 4] = v1.byteLength;
  v1[layout.INBOX_SLOT_SIZE_OFFSET / 4] = layout.MIN_SLOT_SIZE;
  v1[layout.INBOX_CAPACITY_OFFSET / 4] = 2;
  writeFileSync(path, v1);
  try {
    Segment.attach(path, layout.SEGMENT_KIND_INBOX).unmap();
    assert.unreachable('attached a version-1 inbox');
  } catch (err) {
    assert.is((err as { code?: string }).code, 'ERR_SHMBUS_LAYOUT_MISMATCH', String(err));
  }
});

c.run();
