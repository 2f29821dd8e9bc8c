/**
 * LaneProducer: the sending side of one lane of an inbox.
 *
 * A lane is a single-producer / single-consumer ring of `capacity` slots:
 *
 *   tail   written by the lane's owner only: the position of the next frame
 *   head   written by the inbox's owner only: the position of the next frame to read
 *   0 <= tail - head <= capacity (u32 arithmetic); slot of position p = p & (capacity - 1)
 *
 * Producer: while tail - cachedHead < need, re-read head (acquire); write the
 *   slots at tail .. tail + n - 1 with plain stores; store tail + n (release).
 *   A frame is visible when the lane's tail passes it. One store publishes a
 *   whole batch, or a message that spans several slots.
 * A producer killed mid-write never published the frame: there is nothing to
 * reclaim and no timeout, and the next owner of the lane writes over the slot.
 *
 * Taking a lane (slow path, first send to an inbox) is lane-owner.ts: a live
 * owner's lane is never taken, so no two producers ever write one lane; a dead
 * owner's lane is taken over with its published frames, which are read first.
 *
 * Doorbell: after the tail store the producer loads the inbox's parked word; if
 * the consumer is parked it CASes it 1 -> 0 and rings (see inbox.ts for the
 * other half of the handshake).
 */
import { BusError } from './errors';
import { heavyBarrier, LIGHT_FENCES } from './barrier';
import { copyBytes, dataViewOf } from './copy';
import { claimLane, setLaneAside, type LaneOwner } from './lane-owner';
import { addSharedU64, OFFER_FULL, OFFER_OK, OFFER_OK_RING, type OfferResult, type ProducerStamp } from './frame';
import {
  FRAME_FLAG_CONTINUATION,
  INBOX_CAPACITY_OFFSET,
  INBOX_LANE_COUNT_OFFSET,
  INBOX_MAX_MESSAGE_OFFSET,
  INBOX_PARKED_OFFSET,
  INBOX_REFUSED_FULL_OFFSET,
  INBOX_SLOT_SIZE_OFFSET,
  INBOX_WAKEUPS_OFFSET,
  LANE_HEAD_OFFSET,
  LANE_OWNER_FLAGS_OFFSET,
  LANE_OWNER_OFFSET,
  LANE_SPACE_WANTED_OFFSET,
  LANE_STATE_CORRUPT,
  LANE_STATE_OFFSET,
  LANE_TAIL_OFFSET,
  SLOT_DESTINATION_INDEX_OFFSET,
  SLOT_FLAGS_OFFSET,
  SLOT_HEADER_LENGTH,
  SLOT_LENGTH_OFFSET,
  SLOT_MARK_OFFSET,
  SLOT_MESSAGE_LENGTH_OFFSET,
  SLOT_SEQUENCE_OFFSET,
  SLOT_SOURCE_GENERATION_OFFSET,
  SLOT_SOURCE_INDEX_OFFSET,
  laneOffset,
  slotOffset,
} from './layout';

const WORD = 4;
const PARKED = INBOX_PARKED_OFFSET / WORD;

export { readLaneOwner, type LaneOwner, type LaneOwnerInfo, type LivenessCheck } from './lane-owner';

export class LaneProducer {
  readonly lane: number;
  readonly capacity: number;
  readonly slotSize: number;
  /** Largest payload one slot holds. */
  readonly maxPayload: number;
  /** Largest message the inbox's owner accepts (may span several slots). */
  readonly maxMessage: number;
  /** Set by {@link offerBatch}: the consumer was parked and this producer took the bell. */
  mustRing = false;
  private readonly i32: Int32Array;
  private readonly u32: Uint32Array;
  private readonly bytes: Uint8Array;
  private readonly bytesView: DataView;
  /** The last source written from and its DataView (the relay writes many frames from one message). */
  private source: Uint8Array | null = null;
  private sourceView: DataView = new DataView(new ArrayBuffer(0));
  private readonly mask: number;
  private readonly slotWords: number;
  /** Word index of slot 0 of this lane. */
  private readonly slot0: number;
  private readonly ownerWord: number;
  private readonly tailWord: number;
  private readonly headWord: number;
  private readonly stateWord: number;
  private readonly spaceWord: number;
  private readonly pid: number;
  /** Our copy of the lane's tail (we are its only writer). */
  private tail: number;
  /** The consumer's head as last read: there is room for at least capacity - (tail - cachedHead) slots. */
  private cachedHead: number;
  private released = false;
  /** The tail once what {@link prepare} wrote is published (= tail when nothing is prepared). */
  private prepared = 0;

  private constructor(buffer: ArrayBuffer, lane: number, pid: number) {
    this.i32 = new Int32Array(buffer);
    this.u32 = new Uint32Array(buffer);
    this.bytes = new Uint8Array(buffer);
    this.bytesView = dataViewOf(this.bytes);
    const u32 = this.u32;
    this.slotSize = u32[INBOX_SLOT_SIZE_OFFSET / WORD]!;
    this.capacity = u32[INBOX_CAPACITY_OFFSET / WORD]!;
    this.maxPayload = this.slotSize - SLOT_HEADER_LENGTH;
    this.maxMessage = u32[INBOX_MAX_MESSAGE_OFFSET / WORD]!;
    this.mask = this.capacity - 1;
    this.slotWords = this.slotSize / WORD;
    this.lane = lane;
    this.pid = pid;
    const laneCount = u32[INBOX_LANE_COUNT_OFFSET / WORD]!;
    this.slot0 = slotOffset(lane, 0, this.slotSize, this.capacity, laneCount) / WORD;
    const base = laneOffset(lane) / WORD;
    this.ownerWord = base + LANE_OWNER_OFFSET / WORD;
    this.tailWord = base + LANE_TAIL_OFFSET / WORD;
    this.headWord = base + LANE_HEAD_OFFSET / WORD;
    this.stateWord = base + LANE_STATE_OFFSET / WORD;
    this.spaceWord = base + LANE_SPACE_WANTED_OFFSET / WORD;
    this.tail = Atomics.load(u32, this.tailWord);
    this.prepared = this.tail;
    this.cachedHead = Atomics.load(u32, this.headWord);
  }

  /**
   * Take a lane of the inbox mapped at `buffer`: a free one if there is one,
   * else one whose owner is dead. Throws ERR_SHMBUS_NO_LANE (counted in the
   * inbox) when every lane is held by a live process, and
   * ERR_SHMBUS_CORRUPT_SEGMENT if the lane taken holds impossible positions.
   */
  static take(buffer: ArrayBuffer, owner: LaneOwner): LaneProducer {
    const lane = claimLane(buffer, owner);
    const producer = new LaneProducer(buffer, lane, owner.pid);
    if (((producer.tail - producer.cachedHead) >>> 0) > producer.capacity) {
      // Set it aside (the consumer counts it at its next visit) so that no one takes it again.
      setLaneAside(producer.u32, lane);
      producer.release();
      throw corruptLane(lane, producer.tail, producer.cachedHead);
    }
    return producer;
  }

  /** Give the lane back (its published frames stay and are read). Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    if (Atomics.load(this.i32, this.ownerWord) !== this.pid) return; // not ours any more (set aside)
    Atomics.store(this.u32, this.ownerWord + LANE_OWNER_FLAGS_OFFSET / WORD, 0);
    // SYNC POINT: lane owner (CAS pid -> 0; fails only if the word is not ours any more).
    Atomics.compareExchange(this.i32, this.ownerWord, this.pid, 0);
  }

  get isReleased(): boolean {
    return this.released;
  }

  /** Word index of slot `position`. */
  private slotBase(position: number): number {
    return this.slot0 + (position & this.mask) * this.slotWords;
  }

  /** Is there room for `need` slots? Re-reads the head only when the cached one says no. */
  private hasRoom(need: number): boolean {
    if (((this.tail - this.cachedHead) >>> 0) + need <= this.capacity) return true;
    this.refreshHead();
    return ((this.tail - this.cachedHead) >>> 0) + need <= this.capacity;
  }

  private refreshHead(): void {
    // SYNC POINT: lane release (acquire: the consumer is done with every slot before head).
    const head = Atomics.load(this.u32, this.headWord);
    if (((this.tail - head) >>> 0) > this.capacity || this.u32[this.stateWord] === LANE_STATE_CORRUPT) throw corruptLane(this.lane, this.tail, head);
    this.cachedHead = head;
  }

  /** Free slots as far as this producer knows (re-reads the head). */
  room(): number {
    this.refreshHead();
    return this.capacity - ((this.tail - this.cachedHead) >>> 0);
  }

  /** Slots a message of `length` bytes occupies. */
  slotsFor(length: number): number {
    return length <= this.maxPayload ? 1 : Math.ceil(length / this.maxPayload);
  }

  /**
   * Write one frame or message (`prefix` + `payload`, the caller has checked
   * that it fits {@link maxMessage}) and publish it. {@link OFFER_FULL}: not
   * enough room, nothing written (the caller reports and counts the refusal).
   */
  offer(stamp: ProducerStamp, destinationIndex: number, sequence: number, payload: Uint8Array, prefix?: Uint8Array): OfferResult {
    const length = payload.length + (prefix === undefined ? 0 : prefix.length);
    if (length <= this.maxPayload) {
      if (!this.hasRoom(1)) return OFFER_FULL;
      this.writeSlot(this.tail, stamp, destinationIndex, sequence, prefix, payload, 0, payload.length);
      this.tail = (this.tail + 1) >>> 0;
    } else {
      const slots = this.slotsFor(length);
      if (!this.hasRoom(slots)) return OFFER_FULL;
      this.writeMessage(this.tail, stamp, destinationIndex, sequence, prefix, payload, 0, payload.length, slots);
      this.tail = (this.tail + slots) >>> 0;
    }
    this.prepared = this.tail;
    return this.publish() ? OFFER_OK_RING : OFFER_OK;
  }

  /**
   * Write a frame or message like {@link offer} but do not publish it: returns
   * the tail it will have once published ({@link publishPrepared}), or -1 when
   * there is no room (nothing written). The relay records its delivery intent
   * between the two (§7.18).
   */
  prepare(stamp: ProducerStamp, destinationIndex: number, sequence: number, payload: Uint8Array, prefix?: Uint8Array): number {
    return this.prepareFrom(stamp, destinationIndex, sequence, prefix, payload, 0, payload.length);
  }

  /**
   * Like {@link prepare} for the payload `source[offset, offset + length)`
   * (a received message, no view made). Several frames may be prepared one
   * after another and published by one {@link publishPrepared}.
   */
  prepareFrom(stamp: ProducerStamp, destinationIndex: number, sequence: number, prefix: Uint8Array | undefined, source: Uint8Array, offset: number, length: number): number {
    const total = length + (prefix === undefined ? 0 : prefix.length);
    const slots = this.slotsFor(total);
    const used = ((this.prepared - this.cachedHead) >>> 0) + slots;
    if (used > this.capacity) {
      this.refreshHead();
      if (((this.prepared - this.cachedHead) >>> 0) + slots > this.capacity) return -1;
    }
    if (slots === 1) this.writeSlot(this.prepared, stamp, destinationIndex, sequence, prefix, source, offset, length);
    else this.writeMessage(this.prepared, stamp, destinationIndex, sequence, prefix, source, offset, length, slots);
    this.prepared = (this.prepared + slots) >>> 0;
    return this.prepared;
  }

  /** Publish what {@link prepare} wrote. Returns true when this producer took the bell (it must ring). */
  publishPrepared(): boolean {
    this.tail = this.prepared;
    return this.publish();
  }

  /** Frames prepared and not yet published: none after this (their slots are written over later). */
  dropPrepared(): void {
    this.prepared = this.tail;
  }

  /** The lane's published position as this producer knows it (its only writer). */
  get publishedTail(): number {
    return this.tail;
  }

  /**
   * Write `payloads[start .. start+count)` (each fits one slot; the caller has
   * checked) with consecutive sequences from `sequence`, as many as there is
   * room for, and publish them with one store. Returns how many were written;
   * {@link mustRing} says whether the caller must ring the doorbell.
   */
  offerBatch(stamp: ProducerStamp, destinationIndex: number, sequence: number, payloads: readonly Uint8Array[], start: number, count: number): number {
    this.mustRing = false;
    let room = this.capacity - ((this.tail - this.cachedHead) >>> 0);
    if (room < count) {
      this.refreshHead();
      room = this.capacity - ((this.tail - this.cachedHead) >>> 0);
    }
    const n = room < count ? room : count;
    if (n <= 0) return 0;
    let tail = this.tail;
    for (let k = 0; k < n; k++) {
      const payload = payloads[start + k]!;
      this.writeSlot(tail, stamp, destinationIndex, (sequence + k) >>> 0, undefined, payload, 0, payload.length);
      tail = (tail + 1) >>> 0;
    }
    this.tail = tail;
    this.prepared = tail;
    this.mustRing = this.publish();
    return n;
  }

  /** Count a refused frame in the inbox (the producer that reports the refusal). */
  countRefused(n = 1): void {
    addSharedU64(this.u32, INBOX_REFUSED_FULL_OFFSET, n);
  }

  /** Write one slot header (the consumer mark is reset to 0 with it). */
  private writeHeader(base: number, flags: number, stamp: ProducerStamp, destinationIndex: number, sequence: number, length: number, messageLength: number): void {
    const u32 = this.u32;
    u32[base + SLOT_LENGTH_OFFSET / WORD] = length;
    u32[base + SLOT_FLAGS_OFFSET / WORD] = (flags & 0xffff) | (stamp.sourceHost << 16);
    u32[base + SLOT_SOURCE_INDEX_OFFSET / WORD] = stamp.sourceIndex;
    u32[base + SLOT_SOURCE_GENERATION_OFFSET / WORD] = stamp.sourceGeneration;
    u32[base + SLOT_DESTINATION_INDEX_OFFSET / WORD] = destinationIndex;
    u32[base + SLOT_SEQUENCE_OFFSET / WORD] = sequence;
    u32[base + SLOT_MESSAGE_LENGTH_OFFSET / WORD] = messageLength;
    u32[base + SLOT_MARK_OFFSET / WORD] = 0;
  }

  private writeSlot(position: number, stamp: ProducerStamp, destinationIndex: number, sequence: number, prefix: Uint8Array | undefined, source: Uint8Array, offset: number, n: number): void {
    const base = this.slotBase(position);
    const bytes = this.bytes;
    let at = base * WORD + SLOT_HEADER_LENGTH;
    const length = n + (prefix === undefined ? 0 : prefix.length);
    this.writeHeader(base, stamp.flags, stamp, destinationIndex, sequence, length, length);
    if (prefix !== undefined) {
      const p = prefix.length;
      for (let k = 0; k < p; k++) bytes[at + k] = prefix[k]!;
      at += p;
    }
    if (n <= 16) {
      for (let k = 0; k < n; k++) bytes[at + k] = source[offset + k]!;
    } else if (offset === 0 && n === source.length) {
      bytes.set(source, at); // a whole payload (the Bus): no view to make
    } else {
      if (source !== this.source) {
        this.source = source;
        this.sourceView = dataViewOf(source);
      }
      copyBytes(source, this.sourceView, offset, bytes, this.bytesView, at, n);
    }
  }

  /**
   * Write a message — the prefix then `source[offset, offset + n)`, one byte
   * stream of `length` bytes — over `slots` consecutive slots from
   * `position` (not published). Each slot but the last holds maxPayload bytes.
   */
  private writeMessage(position: number, stamp: ProducerStamp, destinationIndex: number, sequence: number, prefix: Uint8Array | undefined, source: Uint8Array, offset: number, n: number, slots: number): void {
    const bytes = this.bytes;
    const max = this.maxPayload;
    const prefixLength = prefix === undefined ? 0 : prefix.length;
    const length = prefixLength + n;
    for (let k = 0; k < slots; k++) {
      const base = this.slotBase((position + k) >>> 0);
      const from = k * max; // offset of this slot's first byte in the stream
      const here = k === slots - 1 ? length - from : max;
      this.writeHeader(base, k === 0 ? stamp.flags : stamp.flags | FRAME_FLAG_CONTINUATION, stamp, destinationIndex, sequence, here, length);
      const at = base * WORD + SLOT_HEADER_LENGTH;
      // The part of the prefix in this slot, then the part of the payload.
      let written = 0;
      if (from < prefixLength) {
        const end = Math.min(prefixLength, from + here);
        bytes.set(prefix!.subarray(from, end), at);
        written = end - from;
      }
      if (written < here) {
        const payloadFrom = offset + from + written - prefixLength;
        bytes.set(source.subarray(payloadFrom, payloadFrom + here - written), at + written);
      }
    }
  }

  /**
   * Publish everything written up to our tail. Returns true when the consumer
   * was parked and this producer took the bell (it must ring).
   */
  private publish(): boolean {
    const i32 = this.i32;
    let parked: number;
    if (LIGHT_FENCES) {
      // SYNC POINT: lane publish (release: a plain store on x86-64, after the slot stores).
      this.u32[this.tailWord] = this.tail;
      // SYNC POINT: parked (producer, light side: the parking consumer's membarrier orders this load after our store).
      parked = i32[PARKED]!;
    } else {
      // SYNC POINT: lane publish (sequentially consistent: also the fence of the parked handshake).
      Atomics.store(this.u32, this.tailWord, this.tail);
      // SYNC POINT: parked (producer side: load after the publish).
      parked = Atomics.load(i32, PARKED);
    }
    if (parked !== 0 && Atomics.compareExchange(i32, PARKED, 1, 0) === 1) {
      addSharedU64(this.u32, INBOX_WAKEUPS_OFFSET);
      return true;
    }
    return false;
  }

  /**
   * Before waiting for room: announce it (the consumer clears the flag and
   * wakes the head futex when it next releases slots of this lane). Returns the
   * head to wait on (FUTEX_WAIT while head still equals it), or -1 when there
   * is room for `need` slots after all.
   */
  prepareSpaceWait(need: number): number {
    // SYNC POINT: space wanted (producer, heavy side: store the flag, barrier, then load the head).
    Atomics.store(this.u32, this.spaceWord, 1);
    heavyBarrier();
    this.refreshHead();
    if (((this.tail - this.cachedHead) >>> 0) + need <= this.capacity) {
      this.endSpaceWait();
      return -1;
    }
    return this.cachedHead;
  }

  /** The wait for room is over (room found, timed out or aborted): clear our flag. */
  endSpaceWait(): void {
    if (this.u32[this.spaceWord] !== 0) Atomics.store(this.u32, this.spaceWord, 0);
  }

  /** Byte offset of this lane's head word (the futex a producer waiting for room sleeps on). */
  get headByteOffset(): number {
    return this.headWord * WORD;
  }
}

function corruptLane(lane: number, tail: number, head: number): BusError {
  return new BusError('ERR_SHMBUS_CORRUPT_SEGMENT', `lane ${lane} of the destination inbox is corrupt (tail ${tail}, head ${head}): it has been set aside; send again to take another lane`);
}
