/**
 * What producers and consumers of an inbox share besides the bytes: the frame
 * flyweight a consumer hands out, the stamp a producer writes, the result codes
 * of an offer, the u64 counter helpers and the address-prefix encoder.
 *
 * Nothing here touches a lane's positions: see lane.ts (producer) and
 * inbox.ts (consumer).
 */
import {
  INBOX_CORRUPT_LANES_OFFSET,
  INBOX_CORRUPT_OFFSET,
  INBOX_DISCARDED_OFFSET,
  INBOX_LANE_REFUSED_OFFSET,
  INBOX_LANE_REUSES_OFFSET,
  INBOX_LANE_TAKES_OFFSET,
  INBOX_PARKS_OFFSET,
  INBOX_RECEIVED_OFFSET,
  INBOX_REFUSED_FULL_OFFSET,
  INBOX_SEND_REFUSED_OFFSET,
  INBOX_SENT_OFFSET,
  INBOX_WAKEUPS_OFFSET,
  MAX_ADDRESS_LENGTH,
} from './layout';

/** Results of an offer. */
export const OFFER_FULL = 0;
export const OFFER_OK = 1;
/** Published, and the consumer was parked: this producer took the bell and must ring it. */
export const OFFER_OK_RING = 2;
export type OfferResult = typeof OFFER_FULL | typeof OFFER_OK | typeof OFFER_OK_RING;

/**
 * One frame as seen by a consumer, valid only inside the handler call that
 * received it (the slot is released when the handler returns). A flyweight:
 * the same object is reused for every frame of a poll. A message that spans
 * several slots is assembled into a buffer of the consumer's (then `bytes` is
 * that buffer, not the mapping).
 */
export class FrameView {
  /** The bytes the payload lies in: `bytes[payloadOffset .. payloadOffset + length)`. */
  bytes: Uint8Array = new Uint8Array(0);
  payloadOffset = 0;
  length = 0;
  flags = 0;
  sourceHost = 0;
  sourceIndex = 0;
  sourceGeneration = 0;
  destinationIndex = 0;
  sequence = 0;
  /** Slots the frame occupies in its lane (1 unless it is a long message). */
  slots = 1;
  /** Where the address prefix's text starts (frames flagged REMOTE or OUTBOUND); 0 when there is none. */
  addressOffset = 0;
  /** Length of the address text (`name@host`); 0 when there is none. */
  addressLength = 0;

  /** The address of a REMOTE (source) or OUTBOUND (destination) frame; '' when there is none. */
  get address(): string {
    if (this.addressLength === 0) return '';
    return String.fromCharCode(...this.bytes.subarray(this.addressOffset, this.addressOffset + this.addressLength));
  }

  /** A view of the payload (allocates a Uint8Array header, not a copy). */
  get payload(): Uint8Array {
    return this.bytes.subarray(this.payloadOffset, this.payloadOffset + this.length);
  }

  /** A copy of the payload that outlives the handler call. */
  copyPayload(): Uint8Array {
    return this.bytes.slice(this.payloadOffset, this.payloadOffset + this.length);
  }
}

export type FrameHandler = (frame: FrameView) => void;

/** Producer-side identity stamped into each slot header. */
export interface ProducerStamp {
  sourceIndex: number;
  sourceGeneration: number;
  sourceHost: number;
  flags: number;
}

/**
 * Encode an address prefix: u8 length, then the ASCII address. Callers cache
 * the result per address (one allocation per destination, not per frame).
 */
export function encodeAddressPrefix(address: string): Uint8Array {
  const n = address.length;
  if (n === 0 || n > MAX_ADDRESS_LENGTH) throw new RangeError(`address "${address}" must be 1..${MAX_ADDRESS_LENGTH} characters`);
  const prefix = new Uint8Array(n + 1);
  prefix[0] = n;
  for (let k = 0; k < n; k++) prefix[k + 1] = address.charCodeAt(k) & 0x7f;
  return prefix;
}

/** Reads a u64 counter stored as two u32 words (low first). Racy observer. */
export function readU64(u32: Uint32Array, byteOffset: number): number {
  const i = byteOffset >>> 2;
  return u32[i + 1]! * 0x1_0000_0000 + u32[i]!;
}

/** Adds to a u64 counter written by one writer only (plain stores). */
export function addU64(u32: Uint32Array, byteOffset: number, n: number): void {
  const i = byteOffset >>> 2;
  const sum = u32[i]! + n;
  u32[i] = sum >>> 0;
  if (sum > 0xffffffff) u32[i + 1] = (u32[i + 1]! + Math.floor(sum / 0x1_0000_0000)) >>> 0;
}

/** Adds `n` (< 2^32) to a u64 counter shared by many writers: atomic add on the low word, the adder that wraps it carries. */
export function addSharedU64(u32: Uint32Array, byteOffset: number, n = 1): void {
  const i = byteOffset >>> 2;
  const before = Atomics.add(u32, i, n);
  if (before + n > 0xffffffff) Atomics.add(u32, i + 1, 1);
}

/** The counters in an inbox header (racy observer: each is read without stopping anyone). */
export interface InboxCounters {
  /** Frames consumed from this inbox. */
  readonly received: number;
  /** Frames the owner sent (to any inbox). */
  readonly sent: number;
  /** The owner's sends refused because their destination lane was full. */
  readonly sendRefused: number;
  /** Sends by anyone refused because their lane of this inbox was full. */
  readonly refusedFull: number;
  /** Frames skipped because their header could not be valid. */
  readonly corrupt: number;
  /** Lanes set aside because their positions could not be valid. */
  readonly corruptLanes: number;
  /** Frames discarded when this inbox replaced a dead predecessor's of another geometry. */
  readonly discarded: number;
  readonly parks: number;
  /** Doorbells rung. */
  readonly wakeups: number;
  /** Lanes taken by producers. */
  readonly laneTakes: number;
  /** Lanes taken over from a dead owner. */
  readonly laneReuses: number;
  /** Producers refused because every lane was held by a live owner. */
  readonly laneRefused: number;
}

/** Read every counter of an inbox header. */
export function readInboxCounters(u32: Uint32Array): InboxCounters {
  return {
    received: readU64(u32, INBOX_RECEIVED_OFFSET),
    sent: readU64(u32, INBOX_SENT_OFFSET),
    sendRefused: readU64(u32, INBOX_SEND_REFUSED_OFFSET),
    refusedFull: readU64(u32, INBOX_REFUSED_FULL_OFFSET),
    corrupt: readU64(u32, INBOX_CORRUPT_OFFSET),
    corruptLanes: readU64(u32, INBOX_CORRUPT_LANES_OFFSET),
    discarded: readU64(u32, INBOX_DISCARDED_OFFSET),
    parks: readU64(u32, INBOX_PARKS_OFFSET),
    wakeups: readU64(u32, INBOX_WAKEUPS_OFFSET),
    laneTakes: readU64(u32, INBOX_LANE_TAKES_OFFSET),
    laneReuses: readU64(u32, INBOX_LANE_REUSES_OFFSET),
    laneRefused: readU64(u32, INBOX_LANE_REFUSED_OFFSET),
  };
}
