/**
 * The receiving relay's memory of what it delivered, kept in shared memory so
 * that it survives the relay's own death: after a restart, frames the sending
 * relay resends (because their acks were lost with the connection) are
 * recognised and acked as DUPLICATE instead of being delivered twice.
 *
 * One entry per (source host, source index, source generation, destination
 * name): frames of one source to one destination arrive in sequence order, so
 * the highest sequence delivered is all that needs remembering. The table is
 * written by its relay only (single writer).
 *
 * Exact across a SIGKILL at any instruction: before a batch of frames (a run
 * of one stream, written into the relay's lane of the target inbox) is
 * published, the relay records a delivery intent (entry, the batch's last
 * sequence, target, its lane there and the lane's tail once published); then
 * it publishes the whole batch (one store: the commit point), updates the
 * entry to the batch's last sequence, and closes the intent. A successor finds
 * at most one intent open and settles it from the lane's published position,
 * which nobody has moved since (a relay's lane is taken over by a relay only):
 * published => the entry records the batch; not => no frame of the batch was
 * delivered. docs/LAYOUT.md §7.18 has the argument.
 *
 * Layout (segment kind 3, file `shmbus.<namespace>.@relay.dedup`): the common
 * header, u32 entry count at 40, the delivery intent at 64, entries of 32 bytes from offset 128 — see
 * docs/LAYOUT.md.
 */
import { join } from 'node:path';
import { isBusError } from '../src/internal';
import {
  DEDUP_DESTINATION_HASH_OFFSET,
  DEDUP_ENTRY_COUNT_OFFSET,
  DEDUP_ENTRY_LENGTH,
  DEDUP_SOURCE_GENERATION_OFFSET,
  DEDUP_SOURCE_HOST_OFFSET,
  DEDUP_SOURCE_INDEX_OFFSET,
  DEDUP_HEADER_LENGTH,
  DEDUP_INTENT_ENTRY_OFFSET,
  DEDUP_INTENT_LANE_OFFSET,
  DEDUP_INTENT_OPEN,
  DEDUP_INTENT_SEQUENCE_OFFSET,
  DEDUP_INTENT_SLOTS_OFFSET,
  DEDUP_INTENT_STATE_OFFSET,
  DEDUP_INTENT_TAIL_OFFSET,
  DEDUP_INTENT_TARGET_EPOCH_OFFSET,
  DEDUP_INTENT_TARGET_GENERATION_OFFSET,
  DEDUP_INTENT_TARGET_INDEX_OFFSET,
  DEDUP_LAST_SEQUENCE_OFFSET,
  DEDUP_TOUCHED_OFFSET,
  DEDUP_USED_OFFSET,
  SEGMENT_KIND_DEDUP,
  dedupFileName,
  dedupSegmentLength,
} from '../src/internal';
import { Segment, unlinkQuiet } from '../src/internal';

const WORD = 4;
const MAX_PROBE = 32;

/** FNV-1a over a string's char codes, with two seeds: a 64-bit fingerprint as two u32. */
function fingerprint(text: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995) ^ (b >>> 15);
  }
  return [a >>> 0, b >>> 0];
}

/** A delivery recorded before its publish (see the file comment): `sequence` is the last frame of the batch. */
export interface DeliveryIntent {
  readonly entry: number;
  readonly sequence: number;
  readonly targetIndex: number;
  readonly targetGeneration: number;
  readonly targetEpoch: number;
  readonly lane: number;
  /** The lane's tail once the batch is published. */
  readonly tail: number;
  /** The batch's slots: before its publish the tail was `tail - slots`. */
  readonly slots: number;
}

/** How an intent found open at start was settled. */
export type IntentOutcome = 'published' | 'not-published' | 'unknown';

/** Serial-number comparison of u32 sequences: is `a` at or before `b`? */
export function sequenceAtOrBefore(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}

export class DedupTable {
  private readonly u32: Uint32Array;
  /** Table slot by fingerprint key (what survives a restart). */
  private readonly index = new Map<string, number>();
  /** Bumped by every eviction: a slot kept by a caller is still its key's while this is unchanged. */
  epoch = 0;
  /** Seconds since this process started (+1), refreshed by a timer rather than read per frame. */
  private nowSec = 1;
  private readonly clock: NodeJS.Timeout;
  private readonly entryCount: number;
  private readonly startedSec = Math.floor(Date.now() / 1000);
  evictions = 0;

  private constructor(private readonly segment: Segment) {
    this.u32 = segment.u32;
    this.entryCount = this.u32[DEDUP_ENTRY_COUNT_OFFSET / WORD]!;
    this.clock = setInterval(() => {
      this.nowSec = Math.floor(Date.now() / 1000) - this.startedSec + 1;
    }, 1000);
    this.clock.unref();
    for (let i = 0; i < this.entryCount; i++) {
      const base = this.base(i);
      if (this.u32[base + DEDUP_USED_OFFSET / WORD] === 0) continue;
      this.index.set(this.keyAt(base), i);
    }
  }

  /** Attach the namespace's table (a predecessor's, after a crash) or create it. */
  static open(dir: string, namespace: string, entryCount: number, mode: number): DedupTable {
    const path = join(dir, dedupFileName(namespace));
    try {
      return new DedupTable(Segment.attach(path, SEGMENT_KIND_DEDUP, 0));
    } catch (err) {
      if (!(isBusError(err) && (err as { errno?: string }).errno === 'ENOENT')) {
        if (!isBusError(err, 'ERR_SHMBUS_NOT_A_SEGMENT') && !isBusError(err, 'ERR_SHMBUS_CORRUPT_SEGMENT') && !isBusError(err, 'ERR_SHMBUS_LAYOUT_MISMATCH')) throw err;
        // A broken table only costs duplicate detection for frames in flight: start afresh.
        unlinkQuiet(path);
      }
    }
    return new DedupTable(
      Segment.create(path, SEGMENT_KIND_DEDUP, dedupSegmentLength(entryCount), mode, DEDUP_HEADER_LENGTH, (buffer) => {
        new Uint32Array(buffer)[DEDUP_ENTRY_COUNT_OFFSET / WORD] = entryCount;
      }),
    );
  }

  get size(): number {
    return this.index.size;
  }

  private base(i: number): number {
    return (DEDUP_HEADER_LENGTH + i * DEDUP_ENTRY_LENGTH) / WORD;
  }

  private keyAt(base: number): string {
    const u = this.u32;
    const fp: [number, number] = [u[base + DEDUP_DESTINATION_HASH_OFFSET / WORD]!, u[base + DEDUP_DESTINATION_HASH_OFFSET / WORD + 1]!];
    return DedupTable.key(u[base + DEDUP_SOURCE_HOST_OFFSET / WORD]!, u[base + DEDUP_SOURCE_INDEX_OFFSET / WORD]!, u[base + DEDUP_SOURCE_GENERATION_OFFSET / WORD]!, fp);
  }

  private static key(sourceHost: number, sourceIndex: number, sourceGeneration: number, fp: [number, number]): string {
    return `${sourceHost}:${sourceIndex}:${sourceGeneration}:${fp[0]}:${fp[1]}`;
  }

  /**
   * The table slot of (source host, index, generation, destination), made if
   * new (its last sequence set just before `firstSequence`, so that frame is
   * delivered). A slot stays this key's until an eviction: callers that keep
   * it also keep {@link epoch} and look again when it has changed.
   */
  slotFor(sourceHost: number, sourceIndex: number, sourceGeneration: number, destination: string, firstSequence: number): number {
    const fp = fingerprint(destination);
    const key = DedupTable.key(sourceHost, sourceIndex, sourceGeneration, fp);
    return this.index.get(key) ?? this.insert(key, sourceHost, sourceIndex, sourceGeneration, fp, (firstSequence - 1) >>> 0);
  }

  /** The table slot of that key if it has one, else -1 (nothing inserted). */
  find(sourceHost: number, sourceIndex: number, sourceGeneration: number, destination: string): number {
    return this.index.get(DedupTable.key(sourceHost, sourceIndex, sourceGeneration, fingerprint(destination))) ?? -1;
  }

  /** The last sequence delivered through slot `slot`. */
  last(slot: number): number {
    return this.u32[this.base(slot) + DEDUP_LAST_SEQUENCE_OFFSET / WORD]!;
  }

  /** Record that `sequence` was committed into the target inbox. */
  delivered(slot: number, sequence: number): void {
    const base = this.base(slot);
    this.u32[base + DEDUP_LAST_SEQUENCE_OFFSET / WORD] = sequence;
    this.u32[base + DEDUP_TOUCHED_OFFSET / WORD] = this.nowSec;
  }

  /**
   * Record the intent to publish frames (before the publish): slot `entry`
   * will say `sequence` (the last of them) once lane `lane` of the target
   * inbox has published position `tail`, which is `slots` past its position now.
   */
  openIntent(entry: number, sequence: number, targetIndex: number, targetGeneration: number, targetEpoch: number, lane: number, tail: number, slots: number): void {
    const u = this.u32;
    u[DEDUP_INTENT_ENTRY_OFFSET / WORD] = entry;
    u[DEDUP_INTENT_SEQUENCE_OFFSET / WORD] = sequence;
    u[DEDUP_INTENT_TARGET_INDEX_OFFSET / WORD] = targetIndex;
    u[DEDUP_INTENT_TARGET_GENERATION_OFFSET / WORD] = targetGeneration;
    u[DEDUP_INTENT_TARGET_EPOCH_OFFSET / WORD] = targetEpoch;
    u[DEDUP_INTENT_LANE_OFFSET / WORD] = lane;
    u[DEDUP_INTENT_TAIL_OFFSET / WORD] = tail;
    u[DEDUP_INTENT_SLOTS_OFFSET / WORD] = slots;
    // SYNC POINT: delivery intent (the fields above are visible before the state, the state before the publish).
    Atomics.store(u, DEDUP_INTENT_STATE_OFFSET / WORD, DEDUP_INTENT_OPEN);
  }

  /** After the publish: update the entry, then close the intent. */
  closeIntent(entry: number, sequence: number): void {
    this.delivered(entry, sequence);
    // SYNC POINT: delivery intent (closed only after the entry says the frames are delivered).
    Atomics.store(this.u32, DEDUP_INTENT_STATE_OFFSET / WORD, 0);
  }

  /** Close an intent whose publish did not happen. */
  abandonIntent(): void {
    Atomics.store(this.u32, DEDUP_INTENT_STATE_OFFSET / WORD, 0);
  }

  /** The intent a dead predecessor left open, if any. */
  openIntentLeft(): DeliveryIntent | null {
    const u = this.u32;
    if (Atomics.load(u, DEDUP_INTENT_STATE_OFFSET / WORD) !== DEDUP_INTENT_OPEN) return null;
    return {
      entry: u[DEDUP_INTENT_ENTRY_OFFSET / WORD]!,
      sequence: u[DEDUP_INTENT_SEQUENCE_OFFSET / WORD]!,
      targetIndex: u[DEDUP_INTENT_TARGET_INDEX_OFFSET / WORD]!,
      targetGeneration: u[DEDUP_INTENT_TARGET_GENERATION_OFFSET / WORD]!,
      targetEpoch: u[DEDUP_INTENT_TARGET_EPOCH_OFFSET / WORD]!,
      lane: u[DEDUP_INTENT_LANE_OFFSET / WORD]!,
      tail: u[DEDUP_INTENT_TAIL_OFFSET / WORD]!,
      slots: u[DEDUP_INTENT_SLOTS_OFFSET / WORD]!,
    };
  }

  /**
   * Settle the intent a dead predecessor left open (at start, before any
   * delivery): `publishedTail` reads the target lane's tail now, or null when
   * that inbox is gone. Published (tail = intent tail) => the entry records
   * the batch's last sequence; not published (tail = intent tail - slots) =>
   * no frame of the batch was delivered; anything else ('unknown': the target's inbox was replaced
   * meanwhile) => recorded as delivered, since the inbox it went to is gone.
   */
  settleIntent(publishedTail: (intent: DeliveryIntent) => number | null): { intent: DeliveryIntent; outcome: IntentOutcome } | null {
    const intent = this.openIntentLeft();
    if (intent === null) return null;
    const tail = publishedTail(intent);
    let outcome: IntentOutcome;
    if (tail === intent.tail) outcome = 'published';
    else if (tail === ((intent.tail - intent.slots) >>> 0)) outcome = 'not-published';
    else outcome = 'unknown';
    const validEntry = intent.entry < this.entryCount && this.u32[this.base(intent.entry) + DEDUP_USED_OFFSET / WORD] === 1;
    if (outcome !== 'not-published' && validEntry) {
      const last = this.u32[this.base(intent.entry) + DEDUP_LAST_SEQUENCE_OFFSET / WORD]!;
      if (!sequenceAtOrBefore(intent.sequence, last)) this.delivered(intent.entry, intent.sequence);
    }
    this.abandonIntent();
    return { intent, outcome };
  }

  private insert(key: string, sourceHost: number, sourceIndex: number, sourceGeneration: number, fp: [number, number], last: number): number {
    const home = (Math.imul(fp[0] ^ sourceIndex ^ (sourceGeneration << 7) ^ (sourceHost << 21), 0x9e3779b1) >>> 0) % this.entryCount;
    let victim = -1;
    let oldest = Infinity;
    for (let k = 0; k < MAX_PROBE; k++) {
      const i = (home + k) % this.entryCount;
      const base = this.base(i);
      if (this.u32[base + DEDUP_USED_OFFSET / WORD] === 0) {
        victim = i;
        oldest = -1;
        break;
      }
      const touched = this.u32[base + DEDUP_TOUCHED_OFFSET / WORD]!;
      if (touched < oldest) {
        oldest = touched;
        victim = i;
      }
    }
    const base = this.base(victim);
    const u = this.u32;
    if (u[base + DEDUP_USED_OFFSET / WORD] !== 0) {
      // Evict the least recently used entry of the probe window: only frames still unacked could need it.
      this.index.delete(this.keyAt(base));
      this.epoch++;
      this.evictions++;
      u[base + DEDUP_USED_OFFSET / WORD] = 0;
    }
    u[base + DEDUP_SOURCE_HOST_OFFSET / WORD] = sourceHost;
    u[base + DEDUP_SOURCE_INDEX_OFFSET / WORD] = sourceIndex;
    u[base + DEDUP_SOURCE_GENERATION_OFFSET / WORD] = sourceGeneration;
    u[base + DEDUP_DESTINATION_HASH_OFFSET / WORD] = fp[0];
    u[base + DEDUP_DESTINATION_HASH_OFFSET / WORD + 1] = fp[1];
    u[base + DEDUP_LAST_SEQUENCE_OFFSET / WORD] = last;
    u[base + DEDUP_TOUCHED_OFFSET / WORD] = this.nowSec;
    u[base + DEDUP_USED_OFFSET / WORD] = 1;
    this.index.set(key, victim);
    return victim;
  }

  /** Unmap; with `remove`, delete the file (a clean shutdown with nothing in flight). */
  close(remove: boolean): void {
    clearInterval(this.clock);
    if (remove) this.segment.unlink();
    this.segment.unmap();
  }
}
