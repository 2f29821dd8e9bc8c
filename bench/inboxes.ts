/**
 * The runner's only reader of shmbus segment bytes: what a failed row's
 * inboxes looked like (for its error message), and the counters the backlog
 * row reports. Every offset comes from src/layout.ts (pure constants: it does
 * not load the addon, so the C, plain-JS-ring and UDS rows run without it);
 * when the layout changes, this is the one bench file to follow it.
 *
 * Racy observer: it reads files another process is writing, with plain
 * reads, for a report. A figure may be torn or stale; nothing depends on it.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import * as layout from '../src/layout';
import { SHM_DIR } from './settings';

function u32(bytes: Buffer, offset: number): number {
  return offset + 4 <= bytes.length ? bytes.readUInt32LE(offset) : NaN;
}

function u64(bytes: Buffer, offset: number): number {
  return u32(bytes, offset) + u32(bytes, offset + 4) * 2 ** 32;
}

/** Frames published and not yet consumed, summed over the lanes in use. */
function depth(bytes: Buffer): number {
  const lanes = u32(bytes, layout.INBOX_LANES_IN_USE_OFFSET);
  let sum = 0;
  for (let lane = 0; lane < lanes; lane++) {
    const at = layout.laneOffset(lane);
    sum += (u32(bytes, at + layout.LANE_TAIL_OFFSET) - u32(bytes, at + layout.LANE_HEAD_OFFSET)) | 0;
  }
  return sum;
}

/** Per inbox of a namespace (or only the endpoints in `names`): depth, lanes in use, parked word and counters; '' if there is none. */
export function inboxStates(namespace: string, names?: readonly string[]): string {
  const states: string[] = [];
  try {
    for (const name of readdirSync(SHM_DIR)) {
      if (!name.startsWith(`shmbus.${namespace}.`) || !name.endsWith('.inbox')) continue;
      if (names !== undefined && !names.includes(name.slice(`shmbus.${namespace}.`.length, -'.inbox'.length))) continue;
      const bytes = readFileSync(join(SHM_DIR, name));
      if (bytes.length < layout.INBOX_HEADER_LENGTH) continue;
      states.push(
        `${name.slice(`shmbus.${namespace}.`.length)}: depth ${depth(bytes)} lanes in use ${u32(bytes, layout.INBOX_LANES_IN_USE_OFFSET)} parked ${u32(bytes, layout.INBOX_PARKED_OFFSET)}` +
          ` wakeups ${u64(bytes, layout.INBOX_WAKEUPS_OFFSET)} parks ${u64(bytes, layout.INBOX_PARKS_OFFSET)} received ${u64(bytes, layout.INBOX_RECEIVED_OFFSET)} sent ${u64(bytes, layout.INBOX_SENT_OFFSET)}`,
      );
    }
  } catch {
    // best effort
  }
  return states.length ? ` [inboxes of ${namespace}: ${states.join('; ')}]` : '';
}

/** Frames waiting in inbox `name` of `namespace` (NaN if it cannot be read). */
export function inboxDepth(namespace: string, name: string): number {
  try {
    return depth(readFileSync(join(SHM_DIR, `shmbus.${namespace}.${name}.inbox`)));
  } catch {
    return NaN;
  }
}

/** The relay's own inbox (the host's outbound ring): sends refused because it was full, and its slots per lane. */
export function relayInbox(namespace: string): { refused: number; capacity: number } {
  try {
    const bytes = readFileSync(join(SHM_DIR, `shmbus.${namespace}.${layout.RELAY_ENDPOINT_NAME}.inbox`));
    return { refused: u64(bytes, layout.INBOX_REFUSED_FULL_OFFSET), capacity: u32(bytes, layout.INBOX_CAPACITY_OFFSET) };
  } catch {
    return { refused: NaN, capacity: NaN };
  }
}
