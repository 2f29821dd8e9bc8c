/**
 * ScanningConsumer: the relay's way to consume its outbound inbox. It reads
 * ahead of each lane's head without releasing (scan), and finishes frames in
 * any order as their acks arrive (release(id)): a finished frame is marked in
 * its slot (a plain store), and each lane's head moves over its finished
 * prefix once per advanceHead() — one store per lane per ACK message, not one
 * per frame. A consumer restarted on the same inbox (rewind, or a new
 * instance) passes marked frames and scans every unfinished one again.
 * docs/LAYOUT.md §7.13.
 */
import type { FrameView } from './frame';
import { addU64 } from './frame';
import { INBOX_CORRUPT_OFFSET, INBOX_RECEIVED_OFFSET, LANE_TAIL_OFFSET, SLOT_LENGTH_OFFSET, SLOT_MARK_DONE, SLOT_MARK_OFFSET, SLOT_MARK_SKIPPED, SLOT_MESSAGE_LENGTH_OFFSET } from './layout';
import { INVALID, InboxConsumer, type ConsumerOptions } from './inbox';

const WORD = 4;

export class ScanningConsumer extends InboxConsumer {
  /** Lanes with frames finished out of order since the last advanceHead(). */
  private readonly dirty: Uint8Array;
  private anyDirty = false;

  constructor(buffer: ArrayBuffer, options: ConsumerOptions = {}) {
    super(buffer, options);
    this.dirty = new Uint8Array(this.laneCount);
  }

  /**
   * Read up to `limit` frames past each lane's cursor WITHOUT releasing them
   * (the relay). The handler gets each frame's id (see {@link idOf}). Frames
   * already finished (marked) are passed over; invalid ones are finished and
   * counted. Returns the number handed over.
   */
  scan(handler: (frame: FrameView, id: number) => void, limit: number): number {
    const lanes = this.lanesInUse(false);
    let delivered = 0;
    let corrupt = 0;
    let lane = this.nextLane < lanes ? this.nextLane : 0;
    for (let visited = 0; visited < lanes && delivered < limit; visited++, lane = lane + 1 === lanes ? 0 : lane + 1) {
      if (this.corrupt[lane] !== 0) continue;
      let cursor = this.cursors[lane]!;
      if (this.u32[this.laneWord(lane, LANE_TAIL_OFFSET)] === cursor) continue;
      let avail = this.available(lane, cursor);
      while (avail > 0 && delivered < limit) {
        const base = this.slotBase(lane, cursor);
        if (this.u32[base + SLOT_MARK_OFFSET / WORD] === SLOT_MARK_SKIPPED) {
          // Skipped (and counted) before a restart: pass it again without counting it again.
          this.markDirty(lane);
          cursor = (cursor + 1) >>> 0;
          avail--;
          continue;
        }
        const slots = this.decode(lane, cursor, avail);
        if (slots === INVALID) {
          corrupt++;
          this.u32[base + SLOT_MARK_OFFSET / WORD] = SLOT_MARK_SKIPPED;
          this.markDirty(lane);
          cursor = (cursor + 1) >>> 0;
          avail--;
          continue;
        }
        const position = cursor;
        cursor = (cursor + slots) >>> 0;
        avail -= slots;
        this.cursors[lane] = cursor;
        if (this.u32[base + SLOT_MARK_OFFSET / WORD] === SLOT_MARK_DONE) {
          this.markDirty(lane);
          continue;
        }
        delivered++;
        handler(this.view, this.idOf(lane, position));
      }
      this.cursors[lane] = cursor;
    }
    this.nextLane = lane;
    if (corrupt > 0) addU64(this.u32, INBOX_CORRUPT_OFFSET, corrupt);
    this.advanceHead();
    return delivered;
  }

  /** A frame's id: lane * capacity + slot index (a u32: lanes * capacity <= 2^32). */
  idOf(lane: number, position: number): number {
    return lane * this.capacity + (position & this.mask);
  }

  /**
   * The position of frame `id` if it lies between its lane's head and cursor
   * (read by scan, not yet passed by the head); else -1.
   */
  private positionOf(id: number): number {
    const lane = Math.floor(id / this.capacity);
    if (!(lane >= 0 && lane < this.laneCount)) return -1;
    const head = this.heads[lane]!;
    const position = (head + (((id & this.mask) - (head & this.mask)) & this.mask)) >>> 0;
    if (((position - head) >>> 0) >= ((this.cursors[lane]! - head) >>> 0)) return -1;
    return position;
  }

  /** Finish frame `id` (read by scan) in any order; the head passes it at the next advanceHead(). */
  release(id: number): void {
    const position = this.positionOf(id);
    if (position < 0) return;
    const lane = Math.floor(id / this.capacity);
    this.u32[this.slotBase(lane, position) + SLOT_MARK_OFFSET / WORD] = SLOT_MARK_DONE;
    this.markDirty(lane);
  }

  private markDirty(lane: number): void {
    this.dirty[lane] = 1;
    this.anyDirty = true;
  }

  /** Move each lane's head over finished frames and publish it (once per lane); counts them as received. */
  advanceHead(): void {
    if (!this.anyDirty) return;
    this.anyDirty = false;
    let released = 0;
    for (let lane = 0; lane < this.laneCount; lane++) {
      if (this.dirty[lane] === 0) continue;
      this.dirty[lane] = 0;
      const cursor = this.cursors[lane]!;
      let head = this.heads[lane]!;
      while (head !== cursor) {
        const base = this.slotBase(lane, head);
        const mark = this.u32[base + SLOT_MARK_OFFSET / WORD];
        if (mark === SLOT_MARK_SKIPPED) {
          head = (head + 1) >>> 0;
          continue;
        }
        if (mark !== SLOT_MARK_DONE) break;
        // A finished frame's header was checked when it was read; a long message passes as one.
        const length = this.u32[base + SLOT_LENGTH_OFFSET / WORD]!;
        const message = this.u32[base + SLOT_MESSAGE_LENGTH_OFFSET / WORD]!;
        const slots = message > length && length === this.maxPayload && message <= this.maxMessage ? Math.ceil(message / this.maxPayload) : 1;
        head = (head + (((cursor - head) >>> 0) < slots ? 1 : slots)) >>> 0;
        released++;
      }
      if (head !== this.heads[lane]) this.storeHead(lane, head);
    }
    if (released > 0) addU64(this.u32, INBOX_RECEIVED_OFFSET, released);
  }

  /** Decode frame `id` (read by scan, not yet released) again; null if it is not such a frame any more. */
  viewAt(id: number): FrameView | null {
    const position = this.positionOf(id);
    if (position < 0) return null;
    const lane = Math.floor(id / this.capacity);
    if (this.u32[this.slotBase(lane, position) + SLOT_MARK_OFFSET / WORD] !== 0) return null; // finished already
    const avail = (this.cursors[lane]! - position) >>> 0;
    return this.decode(lane, position, avail) === INVALID ? null : this.view;
  }

  /** Read again from each lane's head: every frame not yet finished will be scanned again. */
  rewind(): void {
    this.cursors.set(this.heads);
  }
}
