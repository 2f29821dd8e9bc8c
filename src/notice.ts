/**
 * Relay notices: what a transit relay writes into a sender's inbox about a
 * frame it could not deliver (payload format in docs/LAYOUT.md §5.4).
 */
import {
  FRAME_FLAG_NOTICE,
  MAX_ADDRESS_LENGTH,
  NOTICE_ADDRESS_OFFSET,
  NOTICE_KIND_OFFSET,
  NOTICE_REASON_OFFSET,
  NOTICE_SEQUENCE_OFFSET,
  NOTICE_UNDELIVERABLE,
} from './layout';
import { OUTCOME_TABLE, outcomeName } from './outcome';

/** What a notice is read from: a received frame (the Bus's copy). */
interface NoticeFrame {
  readonly flags: number;
  readonly payload: Uint8Array;
}

/** Reasons in an undeliverable notice: the undeliverable outcomes of src/outcome.ts (the relay's ACK statuses, plus UNKNOWN_HOST). */
export const NOTICE_REASONS: Readonly<Record<number, string>> = Object.freeze(
  Object.fromEntries(Object.entries(OUTCOME_TABLE).filter(([, o]) => o.notice).map(([code, o]) => [Number(code), o.name])),
);

/** What a relay notice frame says. */
export interface Notice {
  readonly kind: 'undeliverable';
  /** Why: UNKNOWN_DESTINATION, EXPIRED (target stayed full past the TTL), TOO_LARGE, UNKNOWN_HOST. */
  readonly reason: string;
  /** Per-source sequence number of the frame that was not delivered. */
  readonly sequence: number;
  /** The address it was sent to (`name@host`). */
  readonly destination: string;
}

/** Decode a notice frame (flag FRAME_FLAG_NOTICE); null for any other frame or a malformed notice. */
export function parseNotice(frame: NoticeFrame): Notice | null {
  if ((frame.flags & FRAME_FLAG_NOTICE) === 0) return null;
  const p = frame.payload;
  if (p.length < NOTICE_ADDRESS_OFFSET + 2 || p[NOTICE_KIND_OFFSET] !== NOTICE_UNDELIVERABLE) return null;
  const n = p[NOTICE_ADDRESS_OFFSET]!;
  if (n === 0 || n > MAX_ADDRESS_LENGTH || NOTICE_ADDRESS_OFFSET + 1 + n > p.length) return null;
  const view = new DataView(p.buffer, p.byteOffset, p.byteLength);
  return {
    kind: 'undeliverable',
    reason: outcomeName(p[NOTICE_REASON_OFFSET]!),
    sequence: view.getUint32(NOTICE_SEQUENCE_OFFSET, true),
    destination: String.fromCharCode(...p.subarray(NOTICE_ADDRESS_OFFSET + 1, NOTICE_ADDRESS_OFFSET + 1 + n)),
  };
}

