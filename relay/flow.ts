/**
 * A flow: one source endpoint's frames to one destination on one peer host,
 * in the order the source wrote them, from the moment outbound.ts reads them
 * until the peer settles them. Frame ids, sequences and payload places are
 * kept in typed-array rings (no object per frame); three positions say what
 * is settled, sent and queued. On each connection of its pool slot a flow is
 * one stream (a STREAM message binds it).
 */
import type { Slot } from './transport';

/** One source endpoint's frames to one destination on one peer: a stream on each connection of its slot. */
export class Flow {
  ids: Uint32Array;
  seqs: Uint32Array;
  /** Payload offset in the inbox mapping, or -1 for a message assembled from several slots (read again to send). */
  offs: Int32Array;
  lens: Int32Array;
  mask: number;
  /** First frame not settled, next frame to send, next free entry (flow indexes; entry = index & mask). */
  head = 0;
  sent = 0;
  tail = 0;
  /** Stream id on the slot's connection of epoch `epoch` (-1 before it is bound). */
  streamId = -1;
  epoch = -1;
  /** Flow index of the stream's frame 0. */
  streamBase = 0;
  inReady = false;

  constructor(
    readonly slot: Slot,
    readonly sourceIndex: number,
    readonly sourceGeneration: number,
    readonly sourceName: string,
    readonly destination: string,
    /** `name@host`, for notices. */
    readonly address: string,
  ) {
    this.ids = new Uint32Array(64);
    this.seqs = new Uint32Array(64);
    this.offs = new Int32Array(64);
    this.lens = new Int32Array(64);
    this.mask = 63;
  }

  push(id: number, sequence: number, offset: number, length: number): void {
    if (this.tail - this.head > this.mask) this.grow();
    const i = this.tail & this.mask;
    this.ids[i] = id;
    this.seqs[i] = sequence;
    this.offs[i] = offset;
    this.lens[i] = length;
    this.tail++;
  }

  private grow(): void {
    const size = (this.mask + 1) * 2;
    const ids = new Uint32Array(size);
    const seqs = new Uint32Array(size);
    const offs = new Int32Array(size);
    const lens = new Int32Array(size);
    for (let k = this.head; k < this.tail; k++) {
      const from = k & this.mask;
      const to = k & (size - 1);
      ids[to] = this.ids[from]!;
      seqs[to] = this.seqs[from]!;
      offs[to] = this.offs[from]!;
      lens[to] = this.lens[from]!;
    }
    this.ids = ids;
    this.seqs = seqs;
    this.offs = offs;
    this.lens = lens;
    this.mask = size - 1;
  }
}

/** Outbound state of one pool slot. */
export class SlotFlows {
  ready: Flow[] = [];
  readyHead = 0;
  /** Flows by stream id on the current connection. */
  bound: Flow[] = [];
}
