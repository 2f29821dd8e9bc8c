#!/usr/bin/env node
/**
 * `shmbus` — look at and clean up namespaces.
 *
 *   shmbus stat [--namespace N] [--dir D] [--json]
 *   shmbus gc   [--namespace N] [--dir D] [--json]
 *
 * Exit codes: 0 done, 1 a shmbus error (printed with its code), 2 usage error.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { isBusError } from './errors';
import { DEFAULT_DIR } from './options';
import { fetchRelayReport, gc, inspectNamespace, listNamespaces, type NamespaceReport, type RelayReport } from './stat';

const USAGE = `usage:
  shmbus stat [--namespace N] [--dir D] [--json]   endpoints, inboxes and counters
  shmbus gc   [--namespace N] [--dir D] [--json]   remove what dead processes left behind
  shmbus --version                                 print the version
  (--dir defaults to $SHMBUS_DIR or ${DEFAULT_DIR}; without --namespace, every namespace in --dir)`;

/** This package's version: package.json at its root, one folder up from src/, two from dist/src/. */
function packageVersion(): string {
  for (const root of [join(__dirname, '..'), join(__dirname, '..', '..')]) {
    try {
      return (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      // Not this one.
    }
  }
  return 'unknown';
}

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ')).join('\n');
}

export function formatRelay(name: string, relay: RelayReport | null): string {
  if (relay === null) return `relay ${name}: metrics endpoint did not answer`;
  const g = relay.global;
  const head = `relay: outbound depth ${g.outboundDepth ?? 0}, pending ${g.pendingFrames ?? 0} frame(s), delivered ${g.delivered ?? 0}, duplicates dropped ${g.duplicates ?? 0}, undeliverable ${g.undeliverable ?? 0}, auth failures ${g.authFailures ?? 0}, unknown peers ${g.unknownPeers ?? 0}, malformed ${g.malformed ?? 0}`;
  const peers = Object.entries(relay.peers);
  if (peers.length === 0) return head;
  const rows = [['peer', 'conns', 'frames out', 'bytes out', 'batches', 'acks in', 'resends', 'unacked', 'queued', 'frames in', 'acks out', 'dups', 'undeliv.', 'reconnects', 'failures']];
  for (const [peer, c] of peers) {
    rows.push([peer, c.connections, c.framesOut, c.bytesOut, c.batchesOut, c.acksIn, c.resends, c.unacked, c.queued, c.framesIn, c.acksOut, c.duplicates, c.undeliverable, c.reconnects, c.connectFailures].map((v) => String(v ?? 0)));
  }
  return `${head}\n${table(rows)}`;
}

export function formatReport(report: NamespaceReport): string {
  const head = `namespace ${report.namespace} (${report.dir}): ${report.endpoints.length} endpoint(s), ${report.registrations} registration(s), ${report.takeovers} takeover(s)`;
  if (report.endpoints.length === 0) return head;
  const rows = [['endpoint', 'pid', 'alive', 'state', 'depth', 'lanes', 'slot', 'sent', 'received', 'refused', 'full', 'corrupt', 'wakeups', 'doorbell']];
  for (const e of report.endpoints) {
    rows.push([
      e.relay ? `${e.name} (relay)` : e.name,
      String(e.pid),
      e.alive ? 'yes' : 'DEAD',
      e.error !== undefined ? 'ERROR' : e.parked ? 'parked' : 'running',
      String(e.depth),
      `${e.lanesInUse.length}/${e.lanes}x${e.capacity}`,
      String(e.slotSize),
      String(e.sent),
      String(e.received),
      String(e.sendRefused),
      String(e.refusedFull),
      e.corruptLanes > 0 ? `${e.corrupt} (${e.corruptLanes} lane${e.corruptLanes === 1 ? '' : 's'})` : String(e.corrupt),
      String(e.wakeups),
      e.doorbell,
    ]);
  }
  const errors = report.endpoints.filter((e) => e.error !== undefined).map((e) => `  ${e.name}: ${e.error}`);
  const corrupt = report.endpoints.flatMap((e) => e.lanesInUse.filter((l) => l.corrupt).map((l) => `  ${e.name}: lane ${l.lane} CORRUPT (head ${l.head}, tail ${l.tail}) set aside`));
  const refused = report.endpoints.filter((e) => e.laneRefused > 0).map((e) => `  ${e.name}: ${e.laneRefused} producer(s) refused: every lane taken (open it with more lanes)`);
  return [head, table(rows), ...errors, ...corrupt, ...refused].join('\n');
}

export async function main(argv: string[], out: (s: string) => void = (s) => process.stdout.write(`${s}\n`), err: (s: string) => void = (s) => process.stderr.write(`${s}\n`)): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { namespace: { type: 'string', short: 'n' }, dir: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'V' } },
    });
  } catch (e) {
    err(`shmbus: ${(e as Error).message}\n${USAGE}`);
    return EXIT_USAGE;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    out(USAGE);
    return EXIT_OK;
  }
  if (values.version) {
    out(packageVersion());
    return EXIT_OK;
  }
  const command = positionals[0];
  if (positionals.length !== 1 || (command !== 'stat' && command !== 'gc')) {
    err(`shmbus: expected one command, stat or gc\n${USAGE}`);
    return EXIT_USAGE;
  }
  const dir = values.dir ?? process.env.SHMBUS_DIR ?? DEFAULT_DIR;
  try {
    if (command === 'stat') {
      const namespaces = values.namespace !== undefined ? [values.namespace] : listNamespaces(dir);
      const reports = namespaces.map((ns) => inspectNamespace(dir, ns)).filter((r): r is NamespaceReport => r !== null);
      // Relays keep per-peer counters in their process; ask each live relay over its loopback metrics port.
      const relays = await Promise.all(
        reports.map((r) => {
          const relay = r.endpoints.find((e) => e.relay && e.alive && e.metricsPort > 0);
          return relay === undefined ? Promise.resolve(undefined) : fetchRelayReport(relay.metricsPort);
        }),
      );
      if (values.json) out(JSON.stringify(reports.map((r, i) => ({ ...r, relay: relays[i] ?? null })), null, 2));
      else if (reports.length === 0) out(`no shmbus namespace${values.namespace !== undefined ? ` "${values.namespace}"` : ''} in ${dir}`);
      else out(reports.map((r, i) => (relays[i] === undefined ? formatReport(r) : `${formatReport(r)}\n${formatRelay(r.namespace, relays[i]!)}`)).join('\n\n'));
    } else {
      const report = gc(dir, values.namespace);
      if (values.json) out(JSON.stringify(report, null, 2));
      else {
        for (const r of report.reaped) out(`reaped ${r.namespace}/${r.name} (dead pid ${r.pid}, ${r.unread} unread frame(s) discarded)`);
        for (const path of report.removed) out(`removed ${path}`);
        out(`gc: ${report.reaped.length} endpoint(s) reaped, ${report.removed.length} file(s) removed, ${report.kept.length} kept`);
      }
    }
    return EXIT_OK;
  } catch (e) {
    if (isBusError(e)) {
      err(`shmbus: ${e.code}: ${e.message}`);
      return EXIT_ERROR;
    }
    throw e;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
