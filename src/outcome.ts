/**
 * Delivery outcomes: the one table of what became of a frame sent through the
 * relay. The same codes are the relay's ACK statuses (docs/PROTOCOL.md), the
 * reasons of an undeliverable notice (docs/LAYOUT.md §5.4) and what the
 * receiving relay's delivery returns. Codes are append-only.
 */

/** Committed into the target inbox. */
export const OUTCOME_DELIVERED = 0;
/** Delivered earlier (a resend): not delivered again. */
export const OUTCOME_DUPLICATE = 1;
/** No endpoint of that name on the receiving host (not registered within the grace). */
export const OUTCOME_UNKNOWN_DESTINATION = 2;
/** The target existed but stayed full for the TTL. */
export const OUTCOME_EXPIRED = 3;
/** The frame does not fit the target inbox (its maxMessageSize). */
export const OUTCOME_TOO_LARGE = 4;
/** The destination host is not in the sending relay's cluster config (notices only, never on the wire). */
export const OUTCOME_UNKNOWN_HOST = 5;

export interface OutcomeInfo {
  /** Name used in logs, metrics, notices and docs. */
  readonly name: string;
  readonly meaning: string;
  /** Sent as an ACK status on the wire. */
  readonly ack: boolean;
  /** Reported to the sender by a notice frame (undeliverable). */
  readonly notice: boolean;
}

export const OUTCOME_TABLE: Readonly<Record<number, OutcomeInfo>> = Object.freeze({
  [OUTCOME_DELIVERED]: { name: 'DELIVERED', meaning: 'Committed into the target inbox.', ack: true, notice: false },
  [OUTCOME_DUPLICATE]: { name: 'DUPLICATE', meaning: 'Delivered earlier (a resend): not delivered again; the sender releases it.', ack: true, notice: false },
  [OUTCOME_UNKNOWN_DESTINATION]: { name: 'UNKNOWN_DESTINATION', meaning: 'No endpoint of that name on the receiving host, and none registered within the grace (limit `unknownGraceMs`).', ack: true, notice: true },
  [OUTCOME_EXPIRED]: { name: 'EXPIRED', meaning: 'The target existed but stayed full for the TTL.', ack: true, notice: true },
  [OUTCOME_TOO_LARGE]: { name: 'TOO_LARGE', meaning: 'The frame does not fit the target inbox (its maxMessageSize).', ack: true, notice: true },
  [OUTCOME_UNKNOWN_HOST]: { name: 'UNKNOWN_HOST', meaning: "The destination host is not in the sending relay's cluster config.", ack: false, notice: true },
});

/** True for the outcomes after which the sender is told by a notice. */
export function isUndeliverable(outcome: number): boolean {
  return OUTCOME_TABLE[outcome]?.notice === true;
}

/** The outcome's name ('REASON_<n>' for a code this version does not know). */
export function outcomeName(outcome: number): string {
  return OUTCOME_TABLE[outcome]?.name ?? `REASON_${outcome}`;
}
