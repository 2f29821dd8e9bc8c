/**
 * The payload of an ordered-delivery frame, written by producers and checked
 * by receivers — the tests' children (test/_helpers/child.ts) and the mesh's
 * (./mesh-child.ts). Little-endian:
 *
 *    0               4               8                                length
 *   +---------------+---------------+----------------------------------+
 *   | producer id   | sequence      | filler: byte k = fill(id, seq, k) |
 *   +---------------+---------------+----------------------------------+
 *
 * The filler depends on every byte's position, so a frame that arrives torn,
 * shifted or half-written (a long message missing a piece) is seen.
 */
import type { FrameView } from '../src/frame';

/** Bytes before the filler: u32 id, u32 sequence. */
export const PAYLOAD_HEADER_LENGTH = 8;

function fill(id: number, seq: number, k: number): number {
  return (id * 7 + seq * 13 + k) & 0xff;
}

/** Write frame `seq` of producer `id` into `buf` (its whole length). */
export function encodePayload(buf: Uint8Array, id: number, seq: number): void {
  buf[0] = id & 0xff;
  buf[1] = (id >>> 8) & 0xff;
  buf[2] = (id >>> 16) & 0xff;
  buf[3] = id >>> 24;
  buf[4] = seq & 0xff;
  buf[5] = (seq >>> 8) & 0xff;
  buf[6] = (seq >>> 16) & 0xff;
  buf[7] = seq >>> 24;
  for (let k = PAYLOAD_HEADER_LENGTH; k < buf.length; k++) buf[k] = fill(id, seq, k);
}

export function u32At(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

/**
 * The receiving half: per producer id, the next sequence expected. Every frame
 * must be the next one of its producer (no gap, no duplicate, no reordering),
 * of the length that producer sends (when known), with an intact filler.
 */
export class FrameChecker {
  /** Next expected sequence per producer id = frames received from it. */
  readonly next = new Map<number, number>();
  /** Expected payload length per producer id (unchecked for ids not in it). */
  readonly sizes = new Map<number, number>();
  /** The first few errors, for the assertion message. */
  readonly errors: string[] = [];
  errorCount = 0;
  total = 0;

  /** A FrameHandler for Bus.recvBatch. */
  readonly handler = (v: FrameView): void => {
    this.check(v.bytes, v.payloadOffset, v.length);
  };

  private error(message: string): void {
    if (this.errorCount++ < 10) this.errors.push(message);
  }

  check(bytes: Uint8Array, offset: number, length: number): void {
    this.total++;
    if (length < PAYLOAD_HEADER_LENGTH) return this.error(`a frame of ${length} bytes`);
    const id = u32At(bytes, offset);
    const seq = u32At(bytes, offset + 4);
    const expected = this.next.get(id) ?? 0;
    if (seq !== expected) this.error(`producer ${id}: got seq ${seq}, expected ${expected} (${seq < expected ? 'duplicate or reordered' : 'gap'})`);
    this.next.set(id, seq + 1);
    const size = this.sizes.get(id);
    if (size !== undefined && size !== length) return this.error(`producer ${id} seq ${seq}: ${length} bytes, expected ${size}`);
    for (let k = PAYLOAD_HEADER_LENGTH; k < length; k++) {
      if (bytes[offset + k] !== fill(id, seq, k)) return this.error(`producer ${id} seq ${seq}: byte ${k} is ${bytes[offset + k]}, expected ${fill(id, seq, k)} (torn frame)`);
    }
  }

  /** Frames received from producer `id`. */
  count(id: number): number {
    return this.next.get(id) ?? 0;
  }

  summary(): string {
    return `${this.total} frames, ${this.errorCount} errors${this.errors.length > 0 ? `: ${this.errors.join('; ')}` : ''}`;
  }
}
