/**
 * Builds DATA messages (docs/PROTOCOL.md, "DATA") frame by frame, without
 * allocating per frame: consecutive frames of one stream share one run
 * header, so a frame costs 8 header bytes and the copy of its payload.
 *
 * Batches are written one after another into a slab the writer allocates (a
 * new one when the rest is too small), so the message `finish` returns — a
 * view, not a copy — is never written again and can go straight to
 * `socket.write`.
 */
import { copyBytes, dataViewOf } from '../src/internal';
import {
  DATA_FRAME_COUNT_OFFSET,
  DATA_RUNS_OFFSET,
  DEFAULT_MAX_MESSAGE_BYTES,
  FRAME_HEADER_LENGTH,
  MAX_FRAMES_PER_MESSAGE,
  MAX_MAX_MESSAGE_BYTES,
  MAX_STREAMS,
  MESSAGE_LENGTH_FIELD_LENGTH,
  MIN_MAX_MESSAGE_BYTES,
  MSG_DATA,
  RUN_FRAME_COUNT_OFFSET,
  RUN_HEADER_LENGTH,
  checkRange,
  invalid,
} from './codec';

const DEFAULT_SLAB_BYTES = 256 * 1024;
/** A slab holds about this many batches of the largest size seen (capped by MAX_SLAB_BYTES). */
const SLAB_BATCHES = 4;
const MAX_SLAB_BYTES = 16 * 1024 * 1024;

export interface DataBatchWriterOptions {
  /** Largest bodyLength a batch may reach (the peer's limit). */
  maxMessageBytes?: number;
  /** Most frames per batch (the acceptor's WELCOME maxFramesPerBatch). */
  maxFrames?: number;
  /** Least size of each slab (bytes). */
  initialCapacity?: number;
}

export class DataBatchWriter {
  private buf: Buffer;
  private bufView: DataView;
  /** The last source appended from and its DataView (frames come from one mapping). */
  private source: Uint8Array | null = null;
  private sourceView: DataView = new DataView(new ArrayBuffer(0));
  private readonly slabBytes: number;
  private maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES;
  private maxFrames = MAX_FRAMES_PER_MESSAGE;
  private frames = 0;
  /** Where the current batch starts in `buf`. */
  private base = 0;
  /** Where the next byte goes. */
  private end = DATA_RUNS_OFFSET;
  /** The open run: its header's offset, stream id and frames so far (-1: none). */
  private runAt = -1;
  private runStream = -1;
  private runFrames = 0;
  private largestBatch = 0;

  constructor(options: DataBatchWriterOptions = {}) {
    this.setLimits(options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES, options.maxFrames ?? MAX_FRAMES_PER_MESSAGE);
    const slab = options.initialCapacity ?? DEFAULT_SLAB_BYTES;
    checkRange(slab, DATA_RUNS_OFFSET, MAX_MAX_MESSAGE_BYTES, 'initialCapacity');
    this.slabBytes = slab;
    this.buf = Buffer.allocUnsafe(slab);
    this.bufView = dataViewOf(this.buf);
  }

  /** Frames in the current batch. */
  get count(): number {
    return this.frames;
  }

  /** Bytes the current batch takes (0 when empty). */
  get byteLength(): number {
    return this.frames === 0 ? 0 : this.end - this.base;
  }

  /** Limits for the following batches; only between batches. */
  setLimits(maxMessageBytes: number, maxFrames: number): void {
    if (this.frames !== 0) throw invalid('setLimits', 'called between batches', `${this.frames} frames pending`);
    checkRange(maxMessageBytes, MIN_MAX_MESSAGE_BYTES, MAX_MAX_MESSAGE_BYTES, 'maxMessageBytes');
    checkRange(maxFrames, 1, MAX_FRAMES_PER_MESSAGE, 'maxFrames');
    this.maxMessageBytes = maxMessageBytes;
    this.maxFrames = maxFrames;
  }

  /** Can a frame of `payloadLength` bytes of stream `streamId` join this batch? */
  fits(streamId: number, payloadLength: number): boolean {
    if (this.frames >= this.maxFrames) return false;
    const extra = (streamId === this.runStream ? 0 : RUN_HEADER_LENGTH) + FRAME_HEADER_LENGTH + payloadLength;
    return this.end - this.base + extra - MESSAGE_LENGTH_FIELD_LENGTH <= this.maxMessageBytes;
  }

  /**
   * Append one frame of stream `streamId`: `source[offset, offset + length)`
   * (straight out of a shared-memory mapping). Returns false, writing
   * nothing, when it does not fit this batch (false on an empty batch: it can
   * never be sent).
   */
  append(streamId: number, sequence: number, source: Uint8Array, offset: number, length: number): boolean {
    if (streamId >>> 0 !== streamId || streamId >= MAX_STREAMS) throw invalid('streamId', `an integer in [0, ${MAX_STREAMS - 1}]`, streamId);
    if (offset >>> 0 !== offset || length >>> 0 !== length || offset + length > source.length) {
      throw invalid('offset/length', `a range inside the source's ${source.length} bytes`, `${offset}+${length}`);
    }
    if (!this.fits(streamId, length)) return false;
    const newRun = streamId !== this.runStream;
    const needed = this.end - this.base + (newRun ? RUN_HEADER_LENGTH : 0) + FRAME_HEADER_LENGTH + length;
    if (this.base + needed > this.buf.length) this.moveBatch(needed);
    else if (this.frames === 0 && this.buf.length - this.base < this.largestBatch) this.moveBatch(needed);
    const buf = this.buf;
    const view = this.bufView;
    if (newRun) {
      this.closeRun();
      this.runAt = this.end;
      this.runStream = streamId;
      this.runFrames = 0;
      view.setUint32(this.end, streamId, true);
      this.end += RUN_HEADER_LENGTH;
    }
    const at = this.end;
    view.setUint32(at, sequence >>> 0, true);
    view.setUint32(at + 4, length, true);
    const to = at + FRAME_HEADER_LENGTH;
    if (source !== this.source) {
      this.source = source;
      this.sourceView = dataViewOf(source);
    }
    copyBytes(source, this.sourceView, offset, buf, this.bufView, to, length);
    this.end = to + length;
    this.runFrames++;
    this.frames++;
    return true;
  }

  private closeRun(): void {
    if (this.runAt >= 0) this.buf.writeUInt32LE(this.runFrames, this.runAt + RUN_FRAME_COUNT_OFFSET);
  }

  /** The DATA message of the frames appended since the last finish (a view), or null when there are none. */
  finish(): Buffer | null {
    if (this.frames === 0) return null;
    this.closeRun();
    const buf = this.buf;
    const base = this.base;
    const length = this.end - base;
    buf.writeUInt32LE(length - MESSAGE_LENGTH_FIELD_LENGTH, base);
    buf[base + 4] = MSG_DATA;
    buf.writeUInt32LE(this.frames, base + DATA_FRAME_COUNT_OFFSET);
    const message = buf.subarray(base, this.end);
    if (length > this.largestBatch) this.largestBatch = length;
    this.base = this.end;
    this.reset();
    return message;
  }

  /** Drop the frames of the current batch. */
  reset(): void {
    this.frames = 0;
    this.end = this.base + DATA_RUNS_OFFSET;
    this.runAt = -1;
    this.runStream = -1;
    this.runFrames = 0;
  }

  /** Continue the current batch at the start of a new slab where `needed` bytes fit. */
  private moveBatch(needed: number): void {
    const slab = Math.max(needed, this.slabBytes, Math.min(SLAB_BATCHES * this.largestBatch, MAX_SLAB_BYTES));
    const next = Buffer.allocUnsafe(slab);
    this.buf.copy(next, 0, this.base, this.end);
    this.end -= this.base;
    if (this.runAt >= 0) this.runAt -= this.base;
    this.base = 0;
    this.buf = next;
    this.bufView = dataViewOf(next);
  }
}
