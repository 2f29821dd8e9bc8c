/**
 * A stream as the receiving side sees it: one source endpoint's frames to one
 * local destination, settled in order to its owner (inbound.ts for a peer's
 * connection, outbound.ts for this host's own frames), with the frames that
 * wait for their target held as they arrived (wire layout: per frame a u32
 * sequence, a u32 payload length, the payload).
 */
import { FRAME_FLAG_REMOTE, encodeAddressPrefix, type ProducerStamp, type Route } from '../src/internal';

/** Who a stream's frames are settled to. */
export interface StreamOwner {
  /** `count` more frames of `stream` are settled, the last with `outcome` (the others DELIVERED or DUPLICATE); `tag` is the frame's when count is 1. */
  settled(stream: InboundStream, count: number, outcome: number, tag: number): void;
  /** The pass that settled frames is over: send what it queued. */
  flush(): void;
}

/** Frames of a stream waiting for their target, as they arrived (wire layout). */
export interface HeldChunk {
  readonly bytes: Uint8Array;
  /** Offset of the next frame in `bytes`. */
  at: number;
  /** Frames left. */
  left: number;
  readonly tag: number;
  readonly since: number;
}

/** One source endpoint's frames to one local destination, from one owner. */
export class InboundStream {
  readonly stamp: ProducerStamp;
  /** The source address `name@host` as the prefix written before each payload. */
  readonly prefix: Uint8Array;
  route: Route | null = null;
  dedupSlot = -1;
  dedupEpoch = -1;
  readonly held: HeldChunk[] = [];
  heldFrames = 0;
  waitingForRoom = false;
  /** When the target was first found full in the current episode (ms; 0 when it is not full). */
  fullSince = 0;
  /** Settled frames (the owner's count). */
  settledCount = 0;

  constructor(
    readonly owner: StreamOwner,
    readonly sourceHost: number,
    sourceIndex: number,
    sourceGeneration: number,
    readonly destination: string,
    sourceAddress: string,
  ) {
    this.stamp = { sourceHost, sourceIndex, sourceGeneration, flags: FRAME_FLAG_REMOTE };
    this.prefix = encodeAddressPrefix(sourceAddress);
  }
}

export function readU32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

export function writeU32(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value & 0xff;
  bytes[at + 1] = (value >>> 8) & 0xff;
  bytes[at + 2] = (value >>> 16) & 0xff;
  bytes[at + 3] = (value >>> 24) & 0xff;
}
