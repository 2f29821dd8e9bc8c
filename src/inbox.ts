/**
 * InboxConsumer: the receiving side of an inbox of single-producer lanes.
 *
 * The consumer visits the lanes in use round robin, starting one lane further
 * at each poll. Per visit it reads the lane's tail once (acquire), takes
 * every frame published (up to the poll's limit), and stores the lane's head
 * once (release). Counters are added once per poll.
 *
 * Parking (no lost wake-up): the consumer stores parked = 1, then loads the
 * lanes-in-use count and every lane's tail; a producer stores its tail, then
 * loads parked. All four are sequentially consistent, so either the consumer
 * sees the new tail (and does not sleep) or the producer sees parked = 1 (and
 * rings). A lane taken after the consumer read lanes-in-use was counted in
 * before its first publish, so its publish sees parked = 1. See LAYOUT.md §7.11.
 *
 * poll() hands frames over and releases them as it goes (applications); the
 * relay reads ahead without releasing and finishes frames in any order: see
 * scan.ts (ScanningConsumer).
 *
 * Every position and length read from shared memory is checked before use: a
 * frame that cannot be valid is skipped and counted; a lane whose positions
 * cannot be valid is set aside (marked corrupt, counted) and the other lanes
 * keep flowing.
 */
import { heavyBarrier, LIGHT_FENCES } from './barrier';
import { addU64, FrameView, type FrameHandler } from './frame';
import {
  FRAME_FLAG_CONTINUATION,
  FRAME_FLAGS_WITH_ADDRESS,
  INBOX_CAPACITY_OFFSET,
  INBOX_CORRUPT_LANES_OFFSET,
  INBOX_CORRUPT_OFFSET,
  INBOX_LANE_COUNT_OFFSET,
  INBOX_LANES_IN_USE_OFFSET,
  INBOX_MAX_MESSAGE_OFFSET,
  INBOX_PARKED_OFFSET,
  INBOX_PARKS_OFFSET,
  INBOX_RECEIVED_OFFSET,
  INBOX_SLOT_SIZE_OFFSET,
  LANE_HEAD_OFFSET,
  LANE_LENGTH,
  LANE_SPACE_WANTED_OFFSET,
  LANE_STATE_CORRUPT,
  LANE_STATE_OFFSET,
  LANE_TAIL_OFFSET,
  MAX_ADDRESS_LENGTH,
  SLOT_DESTINATION_INDEX_OFFSET,
  SLOT_FLAGS_OFFSET,
  SLOT_HEADER_LENGTH,
  SLOT_LENGTH_OFFSET,
  SLOT_MESSAGE_LENGTH_OFFSET,
  SLOT_SEQUENCE_OFFSET,
  SLOT_SOURCE_GENERATION_OFFSET,
  SLOT_SOURCE_INDEX_OFFSET,
  laneOffset,
  slotOffset,
} from './layout';

const WORD = 4;
const PARKED = INBOX_PARKED_OFFSET / WORD;
const LANES_IN_USE = INBOX_LANES_IN_USE_OFFSET / WORD;
/** Word index of lane 0's descriptor, and words per descriptor. */
const LANE0_WORD = laneOffset(0) / WORD;
const LANE_WORDS = LANE_LENGTH / WORD;
const LANE_TAIL_WORD = LANE_TAIL_OFFSET / WORD;
/** decode(): the slot does not hold a valid frame. */
export const INVALID = 0;

export interface ConsumerOptions {
  /** Wake producers sleeping on the futex at `byteOffset` (a lane's head) for room. Default: nothing to wake. */
  wakeSpace?: (byteOffset: number) => void;
}

/** One lane as the consumer sees it (for `shmbus stat`). Racy observer. */
export interface LaneSnapshot {
  readonly lane: number;
  readonly head: number;
  readonly tail: number;
  readonly depth: number;
  readonly corrupt: boolean;
}

export class InboxConsumer {
  readonly slotSize: number;
  /** Slots per lane. */
  readonly capacity: number;
  readonly laneCount: number;
  /** Largest payload one slot holds. */
  readonly maxPayload: number;
  /** Largest message (bytes, address prefix included). */
  readonly maxMessage: number;
  readonly bytes: Uint8Array;
  private readonly i32: Int32Array;
  protected readonly u32: Uint32Array;
  protected readonly mask: number;
  private readonly slotWords: number;
  /** Word index of lane 0's slot 0. */
  private readonly slots0: number;
  /** Released position per lane (our copy of each lane's head word). */
  protected readonly heads: Uint32Array;
  /** Next position to read per lane: equal to the head for poll(); ahead of it for scan(). */
  protected readonly cursors: Uint32Array;
  /** Lanes set aside as corrupt (1). */
  protected readonly corrupt: Uint8Array;
  /** The lane the next poll or scan starts at (round robin). */
  protected nextLane = 0;
  protected readonly view = new FrameView();
  private assembly: Uint8Array = new Uint8Array(0);
  private readonly wakeSpace: (byteOffset: number) => void;

  /** Wrap an inbox segment whose header has been validated (segment.ts). */
  constructor(buffer: ArrayBuffer, options: ConsumerOptions = {}) {
    this.i32 = new Int32Array(buffer);
    this.u32 = new Uint32Array(buffer);
    this.bytes = new Uint8Array(buffer);
    const u32 = this.u32;
    this.slotSize = u32[INBOX_SLOT_SIZE_OFFSET / WORD]!;
    this.capacity = u32[INBOX_CAPACITY_OFFSET / WORD]!;
    this.laneCount = u32[INBOX_LANE_COUNT_OFFSET / WORD]!;
    this.maxMessage = u32[INBOX_MAX_MESSAGE_OFFSET / WORD]!;
    this.maxPayload = this.slotSize - SLOT_HEADER_LENGTH;
    this.mask = this.capacity - 1;
    this.slotWords = this.slotSize / WORD;
    this.slots0 = slotOffset(0, 0, this.slotSize, this.capacity, this.laneCount) / WORD;
    this.heads = new Uint32Array(this.laneCount);
    this.cursors = new Uint32Array(this.laneCount);
    this.corrupt = new Uint8Array(this.laneCount);
    this.wakeSpace = options.wakeSpace ?? (() => {});
    for (let lane = 0; lane < this.laneCount; lane++) {
      const base = laneOffset(lane) / WORD;
      this.heads[lane] = Atomics.load(u32, base + LANE_HEAD_OFFSET / WORD);
      this.cursors[lane] = this.heads[lane]!;
      if (Atomics.load(u32, base + LANE_STATE_OFFSET / WORD) === LANE_STATE_CORRUPT) this.corrupt[lane] = 1;
    }
    this.view.bytes = this.bytes;
  }

  /**
   * Write the lane part of a fresh inbox header. Lanes start free at position
   * 0 (the file is zero-filled, so nothing else is written: untouched lanes
   * cost no memory). The caller publishes the layout version afterwards.
   */
  static format(buffer: ArrayBuffer, slotSize: number, capacity: number, laneCount: number, maxMessage: number): void {
    const u32 = new Uint32Array(buffer);
    u32[INBOX_SLOT_SIZE_OFFSET / WORD] = slotSize;
    u32[INBOX_CAPACITY_OFFSET / WORD] = capacity;
    u32[INBOX_LANE_COUNT_OFFSET / WORD] = laneCount;
    u32[INBOX_MAX_MESSAGE_OFFSET / WORD] = maxMessage;
  }

  /** Word index of a lane descriptor's field (integer arithmetic: this runs once per lane per poll). */
  protected laneWord(lane: number, fieldOffset: number): number {
    return LANE0_WORD + lane * LANE_WORDS + (fieldOffset >> 2);
  }

  protected slotBase(lane: number, position: number): number {
    return this.slots0 + (lane * this.capacity + (position & this.mask)) * this.slotWords;
  }

  /** Lanes to visit: [0, lanes in use), bounded by the lane count (a corrupt header word cannot send us out of bounds). */
  protected lanesInUse(load: boolean): number {
    const n = load ? Atomics.load(this.u32, LANES_IN_USE) : this.u32[LANES_IN_USE]!;
    return n < this.laneCount ? n : this.laneCount;
  }

  /**
   * Read lane `lane`'s tail (acquire) and check it against our position:
   * returns how many slots are published past `from`, or -1 after setting the
   * lane aside as corrupt.
   */
  protected available(lane: number, from: number): number {
    const tailWord = this.laneWord(lane, LANE_TAIL_OFFSET);
    // SYNC POINT: lane publish (acquire: the slots before tail are written; a plain load is an acquire load on x86-64).
    const tail = LIGHT_FENCES ? this.u32[tailWord]! : Atomics.load(this.u32, tailWord);
    const head = this.heads[lane]!;
    const ahead = (tail - head) >>> 0;
    const read = (from - head) >>> 0;
    // A tail beyond the lane's capacity, or behind what we have read, cannot be valid; nor can a
    // state word that a producer (or a predecessor) set to corrupt (our own line: a cheap read).
    if (ahead > this.capacity || read > ahead || this.u32[this.laneWord(lane, LANE_STATE_OFFSET)] === LANE_STATE_CORRUPT) {
      this.setAside(lane);
      return -1;
    }
    return ahead - read;
  }

  /** Mark a lane corrupt: never read again; its producer learns it at its next refill or wait. */
  private setAside(lane: number): void {
    this.corrupt[lane] = 1;
    Atomics.store(this.u32, this.laneWord(lane, LANE_STATE_OFFSET), LANE_STATE_CORRUPT);
    addU64(this.u32, INBOX_CORRUPT_LANES_OFFSET, 1);
    this.wakeSpace(this.laneWord(lane, LANE_HEAD_OFFSET) * WORD);
  }

  /** Publish a lane's head (release) and wake its producer if it waits for room. */
  protected storeHead(lane: number, head: number): void {
    this.heads[lane] = head;
    const headWord = this.laneWord(lane, LANE_HEAD_OFFSET);
    const spaceWord = this.laneWord(lane, LANE_SPACE_WANTED_OFFSET);
    let wanted: number;
    if (LIGHT_FENCES) {
      // SYNC POINT: lane release (release: a plain store on x86-64, after our reads of the slots).
      this.u32[headWord] = head;
      // SYNC POINT: space wanted (consumer, light side: a waiting producer's membarrier orders this load after our store).
      wanted = this.u32[spaceWord]!;
    } else {
      // SYNC POINT: lane release (sequentially consistent: also the fence of the space handshake).
      Atomics.store(this.u32, headWord, head);
      // SYNC POINT: space wanted (consumer side: load after the head store).
      wanted = Atomics.load(this.u32, spaceWord);
    }
    // The waiting producer clears its own flag once it has room; until then each release wakes it
    // (clearing it here could erase a flag the producer has just set again for its next wait).
    if (wanted !== 0) this.wakeSpace(headWord * WORD);
  }

  /**
   * Hand up to `limit` frames to `handler`, lane by lane, releasing each
   * lane's slots once per visit (if the handler throws, its frame counts as
   * consumed and the error propagates). Returns the number handed over.
   */
  poll(handler: FrameHandler, limit: number): number {
    const lanes = this.lanesInUse(false);
    if (lanes === 0) return 0;
    const view = this.view;
    let delivered = 0;
    let corrupt = 0;
    let lane = this.nextLane < lanes ? this.nextLane : 0;
    const u32 = this.u32;
    const heads = this.heads;
    try {
      for (let visited = 0; visited < lanes && delivered < limit; visited++, lane = lane + 1 === lanes ? 0 : lane + 1) {
        const head0 = heads[lane]!;
        // Cheap emptiness hint, the whole cost of an idle lane (a stale value only delays the frame to the next poll).
        if (u32[LANE0_WORD + lane * LANE_WORDS + LANE_TAIL_WORD] === head0 || this.corrupt[lane] !== 0) continue;
        let avail = this.available(lane, head0);
        if (avail <= 0) continue;
        let head = head0;
        try {
          while (avail > 0 && delivered < limit) {
            const slots = this.decode(lane, head, avail);
            if (slots === INVALID) {
              corrupt++;
              head = (head + 1) >>> 0;
              avail--;
              continue;
            }
            head = (head + slots) >>> 0;
            avail -= slots;
            delivered++;
            handler(view);
          }
        } finally {
          this.cursors[lane] = head;
          this.storeHead(lane, head);
        }
      }
    } finally {
      this.nextLane = lane;
      if (delivered > 0) addU64(this.u32, INBOX_RECEIVED_OFFSET, delivered);
      if (corrupt > 0) addU64(this.u32, INBOX_CORRUPT_OFFSET, corrupt);
    }
    return delivered;
  }

  /**
   * Fill the view from the frame at `position` of `lane`, with `avail` slots
   * published from there. Returns the slots it occupies, or INVALID (0) if
   * its header cannot be valid (a length or address prefix out of range, a
   * message longer than allowed or than what was published, a continuation
   * slot out of place).
   */
  protected decode(lane: number, position: number, avail: number): number {
    const u32 = this.u32;
    const view = this.view;
    const base = this.slotBase(lane, position);
    const length = u32[base + SLOT_LENGTH_OFFSET / WORD]!;
    const flagsWord = u32[base + SLOT_FLAGS_OFFSET / WORD]!;
    const message = u32[base + SLOT_MESSAGE_LENGTH_OFFSET / WORD]!;
    // Every length read from shared memory is checked before it is used.
    if (length > this.maxPayload || message > this.maxMessage || (flagsWord & FRAME_FLAG_CONTINUATION) !== 0) return INVALID;
    let slots = 1;
    let bytes = this.bytes;
    let offset = base * WORD + SLOT_HEADER_LENGTH;
    if (message !== length) {
      if (message < length || length !== this.maxPayload) return INVALID;
      slots = Math.ceil(message / this.maxPayload);
      if (slots > avail) return INVALID;
      bytes = this.assemble(lane, position, slots, message);
      if (bytes.length === 0) return INVALID;
      offset = 0;
    }
    let payloadLength = message;
    view.bytes = bytes;
    view.addressOffset = 0;
    view.addressLength = 0;
    if ((flagsWord & FRAME_FLAGS_WITH_ADDRESS) !== 0) {
      const n = payloadLength === 0 ? 0 : bytes[offset]!;
      if (n === 0 || n > MAX_ADDRESS_LENGTH || n + 1 > payloadLength) return INVALID;
      view.addressOffset = offset + 1;
      view.addressLength = n;
      offset += n + 1;
      payloadLength -= n + 1;
    }
    view.payloadOffset = offset;
    view.length = payloadLength;
    view.slots = slots;
    view.flags = flagsWord & 0xffff;
    view.sourceHost = flagsWord >>> 16;
    view.sourceIndex = u32[base + SLOT_SOURCE_INDEX_OFFSET / WORD]!;
    view.sourceGeneration = u32[base + SLOT_SOURCE_GENERATION_OFFSET / WORD]!;
    view.destinationIndex = u32[base + SLOT_DESTINATION_INDEX_OFFSET / WORD]!;
    view.sequence = u32[base + SLOT_SEQUENCE_OFFSET / WORD]!;
    return slots;
  }

  /** Copy a message's `slots` pieces into the assembly buffer; an empty array if a piece is out of place. */
  private assemble(lane: number, position: number, slots: number, message: number): Uint8Array {
    if (this.assembly.length < message) this.assembly = new Uint8Array(Math.max(message, this.assembly.length * 2));
    const out = this.assembly;
    const u32 = this.u32;
    const max = this.maxPayload;
    for (let k = 0; k < slots; k++) {
      const base = this.slotBase(lane, (position + k) >>> 0);
      const expected = k === slots - 1 ? message - k * max : max;
      if (u32[base + SLOT_LENGTH_OFFSET / WORD] !== expected) return new Uint8Array(0);
      if (k > 0 && (u32[base + SLOT_FLAGS_OFFSET / WORD]! & FRAME_FLAG_CONTINUATION) === 0) return new Uint8Array(0);
      const start = base * WORD + SLOT_HEADER_LENGTH;
      out.set(this.bytes.subarray(start, start + expected), k * max);
    }
    return out;
  }

  /** True if some lane has a published frame past its cursor. Racy observer. */
  hasFrame(): boolean {
    const lanes = this.lanesInUse(true);
    for (let lane = 0; lane < lanes; lane++) {
      if (this.corrupt[lane] === 0 && Atomics.load(this.u32, this.laneWord(lane, LANE_TAIL_OFFSET)) !== this.cursors[lane]) return true;
    }
    return false;
  }

  /** Frames published but not yet released, summed over lanes (slots, racy observer). */
  depth(): number {
    let depth = 0;
    for (const lane of this.lanes()) if (!lane.corrupt) depth += lane.depth;
    return depth;
  }

  /** Every lane in use, as positions (racy observer). */
  lanes(): LaneSnapshot[] {
    const out: LaneSnapshot[] = [];
    const lanes = this.lanesInUse(true);
    for (let lane = 0; lane < lanes; lane++) {
      const tail = Atomics.load(this.u32, this.laneWord(lane, LANE_TAIL_OFFSET));
      const head = Atomics.load(this.u32, this.laneWord(lane, LANE_HEAD_OFFSET));
      const depth = (tail - head) >>> 0;
      const corrupt = Atomics.load(this.u32, this.laneWord(lane, LANE_STATE_OFFSET)) === LANE_STATE_CORRUPT || depth > this.capacity;
      out.push({ lane, head, tail, depth: corrupt ? 0 : depth, corrupt });
    }
    return out;
  }

  /**
   * Announce that the consumer is about to sleep. Returns false (and clears
   * the flag) if a frame waits, so it must not sleep.
   */
  prepareToPark(): boolean {
    const i32 = this.i32;
    // SYNC POINT: parked (consumer, heavy side: store, barrier, then load lanes in use and every tail).
    Atomics.store(i32, PARKED, 1);
    heavyBarrier();
    if (this.hasFrame()) {
      Atomics.store(i32, PARKED, 0);
      return false;
    }
    addU64(this.u32, INBOX_PARKS_OFFSET, 1);
    return true;
  }

  /** The consumer is awake again (after a wake-up, a timeout, or giving up on sleeping). */
  unpark(): void {
    Atomics.store(this.i32, PARKED, 0);
  }

  /** Is the consumer parked? Racy observer. */
  isParked(): boolean {
    return Atomics.load(this.i32, PARKED) !== 0;
  }
}
