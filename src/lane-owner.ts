/**
 * Lane ownership: who may write a lane, and how a lane changes hands.
 *
 *   owner word   0 free; pid owned by that process; -pid being taken by it
 *   owner flags  LANE_OWNER_FLAG_RELAY: held (or left) by the namespace's relay
 *
 * Taking (slow path, first send to an inbox): CAS the owner word 0 -> -pid
 * (or from a dead owner's exact word), store the start time and flags, store
 * pid. A judge reads the owner word, then its start time: a live owner's lane
 * is never taken, because the start time it reads belongs to that owner or to
 * a later one (and then the CAS from the word it read fails). A relay's lane
 * is taken over only by a relay (its published position must stay put until
 * the successor has settled its delivery intent). docs/LAYOUT.md §7.8, §7.18.
 */
import { BusError } from './errors';
import { addSharedU64 } from './frame';
import {
  INBOX_LANE_COUNT_OFFSET,
  INBOX_LANE_REFUSED_OFFSET,
  INBOX_LANE_REUSES_OFFSET,
  INBOX_LANE_TAKES_OFFSET,
  INBOX_LANES_IN_USE_OFFSET,
  LANE_OWNER_FLAG_RELAY,
  LANE_OWNER_FLAGS_OFFSET,
  LANE_OWNER_OFFSET,
  LANE_OWNER_START_TIME_OFFSET,
  LANE_STATE_CORRUPT,
  LANE_STATE_OFFSET,
  MAX_PID,
  laneOffset,
} from './layout';

const WORD = 4;

/** Is (pid, start time) still a running process? startTime 0: the pid alone decides. */
export type LivenessCheck = (pid: number, startTime: number) => boolean;

/** Who is taking a lane. */
export interface LaneOwner {
  readonly pid: number;
  readonly startTime: number;
  readonly isAlive: LivenessCheck;
  /** The namespace's relay: its lanes are flagged, and after its death only a relay takes them over. */
  readonly relay?: boolean;
}

/** A lane's owner word, decoded (racy observer). */
export interface LaneOwnerInfo {
  /** 'free', 'owned', 'taking' (between the CAS and the start-time store) or 'corrupt' (a word no producer writes). */
  readonly state: 'free' | 'owned' | 'taking' | 'corrupt';
  readonly pid: number;
  readonly startTime: number;
  /** Held (or left, if its owner died) by the namespace's relay. */
  readonly relay: boolean;
}

/** Decode lane `lane`'s owner word. */
export function readLaneOwner(i32: Int32Array, u32: Uint32Array, lane: number): LaneOwnerInfo {
  const base = laneOffset(lane) / WORD;
  const owner = Atomics.load(i32, base + LANE_OWNER_OFFSET / WORD);
  const startTime = Atomics.load(u32, base + LANE_OWNER_START_TIME_OFFSET / WORD + 1) * 0x1_0000_0000 + Atomics.load(u32, base + LANE_OWNER_START_TIME_OFFSET / WORD);
  const relay = (Atomics.load(u32, base + LANE_OWNER_FLAGS_OFFSET / WORD) & LANE_OWNER_FLAG_RELAY) !== 0;
  if (owner === 0) return { state: 'free', pid: 0, startTime: 0, relay: false };
  if (owner > MAX_PID || owner < -MAX_PID) return { state: 'corrupt', pid: owner, startTime, relay };
  if (owner < 0) return { state: 'taking', pid: -owner, startTime: 0, relay: false };
  return { state: 'owned', pid: owner, startTime, relay };
}

/** Has lane `lane` been set aside as corrupt? */
function laneCorrupt(u32: Uint32Array, lane: number): boolean {
  return Atomics.load(u32, (laneOffset(lane) + LANE_STATE_OFFSET) / WORD) === LANE_STATE_CORRUPT;
}

/** Set lane `lane` aside: never read, never taken again (the consumer counts it at its next visit). */
export function setLaneAside(u32: Uint32Array, lane: number): void {
  Atomics.store(u32, (laneOffset(lane) + LANE_STATE_OFFSET) / WORD, LANE_STATE_CORRUPT);
}

/**
 * Take a lane of the inbox mapped at `buffer` for `owner` and return its
 * index: a relay first takes back a dead relay's lane, then anyone takes a
 * free lane, then one whose owner is dead. Throws ERR_SHMBUS_NO_LANE (counted
 * in the inbox) when every lane is held by a live process.
 */
export function claimLane(buffer: ArrayBuffer, owner: LaneOwner): number {
  const i32 = new Int32Array(buffer);
  const u32 = new Uint32Array(buffer);
  const laneCount = u32[INBOX_LANE_COUNT_OFFSET / WORD]!;
  const me = owner.pid;
  if (owner.relay === true) {
    // A relay takes its dead predecessor's lane back first: its published position settled the
    // predecessor's open intent, and a lane left flagged would otherwise stay reserved.
    for (let lane = 0; lane < laneCount; lane++) {
      if (laneCorrupt(u32, lane)) continue;
      const info = readLaneOwner(i32, u32, lane);
      if (info.state !== 'owned' || !info.relay || info.pid === me || owner.isAlive(info.pid, info.startTime)) continue;
      const word = (laneOffset(lane) + LANE_OWNER_OFFSET) / WORD;
      if (Atomics.compareExchange(i32, word, info.pid, -me) === info.pid) return finishTake(i32, u32, lane, owner, true);
    }
  }
  // Free lanes first (no liveness checks: the common case costs one CAS).
  for (let lane = 0; lane < laneCount; lane++) {
    const word = (laneOffset(lane) + LANE_OWNER_OFFSET) / WORD;
    if (laneCorrupt(u32, lane)) continue;
    // SYNC POINT: lane owner (CAS 0 -> -pid).
    if (Atomics.load(i32, word) === 0 && Atomics.compareExchange(i32, word, 0, -me) === 0) return finishTake(i32, u32, lane, owner, false);
  }
  // Then lanes whose owner has died.
  for (let lane = 0; lane < laneCount; lane++) {
    if (laneCorrupt(u32, lane)) continue;
    const word = (laneOffset(lane) + LANE_OWNER_OFFSET) / WORD;
    const info = readLaneOwner(i32, u32, lane);
    let dead: boolean;
    if (info.state === 'free') dead = true;
    else if (info.state === 'owned' && info.relay && owner.relay !== true) dead = false; // a relay's lane waits for a relay
    else if (info.state === 'owned') dead = info.pid !== me && !owner.isAlive(info.pid, info.startTime);
    else if (info.state === 'taking') dead = info.pid !== me && !owner.isAlive(info.pid, 0);
    else {
      // An owner word no producer writes: set the lane aside (the consumer counts it, stat shows it).
      setLaneAside(u32, lane);
      continue;
    }
    if (!dead) continue;
    const expected = info.state === 'free' ? 0 : info.state === 'owned' ? info.pid : -info.pid;
    if (Atomics.compareExchange(i32, word, expected, -me) === expected) return finishTake(i32, u32, lane, owner, info.state !== 'free');
  }
  addSharedU64(u32, INBOX_LANE_REFUSED_OFFSET);
  throw new BusError('ERR_SHMBUS_NO_LANE', `every one of the ${laneCount} lanes of this inbox is held by a live producer (open the destination with more lanes)`);
}

/** After the CAS to -pid: store the start time and flags, then the pid; count lanes in use and the take. */
function finishTake(i32: Int32Array, u32: Uint32Array, lane: number, owner: LaneOwner, reused: boolean): number {
  const base = laneOffset(lane) / WORD;
  Atomics.store(u32, base + LANE_OWNER_START_TIME_OFFSET / WORD, owner.startTime >>> 0);
  Atomics.store(u32, base + LANE_OWNER_START_TIME_OFFSET / WORD + 1, Math.floor(owner.startTime / 0x1_0000_0000));
  Atomics.store(u32, base + LANE_OWNER_FLAGS_OFFSET / WORD, owner.relay === true ? LANE_OWNER_FLAG_RELAY : 0);
  // SYNC POINT: lane owner (the start time and flags are visible before the pid).
  Atomics.store(i32, base + LANE_OWNER_OFFSET / WORD, owner.pid);
  // SYNC POINT: lanes in use (before the first publish, so a parking consumer that misses it is seen parked by that publish).
  for (;;) {
    const inUse = Atomics.load(u32, INBOX_LANES_IN_USE_OFFSET / WORD);
    if (inUse >= lane + 1 || Atomics.compareExchange(u32, INBOX_LANES_IN_USE_OFFSET / WORD, inUse, lane + 1) === inUse) break;
  }
  addSharedU64(u32, INBOX_LANE_TAKES_OFFSET);
  if (reused) addSharedU64(u32, INBOX_LANE_REUSES_OFFSET);
  return lane;
}
