/**
 * The relay wire format, version 2: every number of docs/PROTOCOL.md, the
 * small encoders, and the decoder of one complete message. No sockets.
 *
 * Hot-path messages are not turned into objects per frame: a decoded DATA or
 * ACK is the validated message bytes plus counts, and inbound.ts / outbound.ts
 * walk them with the offsets below. batch-writer.ts builds DATA; the stream
 * decoder (stream-decoder.ts) cuts a byte stream into messages; handshake.ts
 * computes and checks the proofs.
 *
 * All integers are little-endian, fields are packed. Offsets named `*_OFFSET`
 * count from the first byte of the message (its length field) unless the
 * name says otherwise (`RUN_*`, `FRAME_*`, `ACK_ENTRY_*`). A change to any wire
 * value is a protocol change: bump {@link PROTOCOL_VERSION}. decode.ts reads
 * one complete message back. Error codes and
 * ACK statuses are append-only.
 */
import { BusError, describeValue } from '../src/internal';
import { OUTCOME_TABLE } from '../src/internal';

export {
  OUTCOME_DELIVERED as ACK_DELIVERED,
  OUTCOME_DUPLICATE as ACK_DUPLICATE,
  OUTCOME_UNKNOWN_DESTINATION as ACK_UNKNOWN_DESTINATION,
  OUTCOME_EXPIRED as ACK_EXPIRED,
  OUTCOME_TOO_LARGE as ACK_TOO_LARGE,
} from '../src/internal';

// ---------------------------------------------------------------------------
// Identity and limits.
// ---------------------------------------------------------------------------

/** ASCII "SHBR" read as a little-endian u32 (bytes 53 48 42 52): the first body field of HELLO. */
export const MAGIC = 0x52424853;
/** Version of the wire format described here, sent in HELLO. */
export const PROTOCOL_VERSION = 2;
/** Default limit on a message's bodyLength (16 MiB). */
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
/** Smallest accepted `maxMessageBytes`. */
export const MIN_MAX_MESSAGE_BYTES = 1024;
/** Largest accepted `maxMessageBytes` (1 GiB). */
export const MAX_MAX_MESSAGE_BYTES = 1 << 30;
/** Message size limit (bodyLength) before the handshake completes. */
export const HANDSHAKE_MAX_MESSAGE_BYTES = 1024;
/** Length of nonceC and nonceA. */
export const NONCE_LENGTH = 32;
/** Length of proofA and proofC (an HMAC-SHA256 digest). */
export const PROOF_LENGTH = 32;
/** Longest host name. */
export const MAX_HOST_NAME_LENGTH = 64;
/** Longest endpoint name. */
export const MAX_ENDPOINT_NAME_LENGTH = 64;
/** Host and endpoint names on the wire: 1-64 of `A-Z a-z 0-9 _ . @ -`. */
export const WIRE_NAME_PATTERN = /^[A-Za-z0-9_.@-]{1,64}$/;
/** Most frames in one DATA message. */
export const MAX_FRAMES_PER_MESSAGE = 65535;
/** Most entries in one ACK message. */
export const MAX_ACK_ENTRIES = 65535;
/** Streams one connection can carry: stream ids 0 .. MAX_STREAMS - 1. */
export const MAX_STREAMS = 65536;
/** Longest ERROR text on the wire. */
export const MAX_ERROR_TEXT_LENGTH = 65535;
/** Longest ERROR text {@link encodeError} writes (bytes of UTF-8). */
export const MAX_ERROR_TEXT_SENT_LENGTH = 256;
/** HMAC input prefix of proofA (ASCII, no terminator; unchanged since version 1). */
export const ACCEPTOR_PROOF_LABEL = 'shmbus-relay-v1 acceptor';
/** HMAC input prefix of proofC (ASCII, no terminator; unchanged since version 1). */
export const CONNECTOR_PROOF_LABEL = 'shmbus-relay-v1 connector';

// ---------------------------------------------------------------------------
// Message framing: u32 bodyLength, u8 type, body.
// ---------------------------------------------------------------------------

export const MESSAGE_LENGTH_OFFSET = 0;
export const MESSAGE_LENGTH_FIELD_LENGTH = 4;
export const MESSAGE_TYPE_OFFSET = 4;
export const MESSAGE_HEADER_LENGTH = 5;

export const MSG_HELLO = 1;
export const MSG_CHALLENGE = 2;
export const MSG_PROOF = 3;
export const MSG_WELCOME = 4;
export const MSG_DATA = 5;
export const MSG_ACK = 6;
export const MSG_ERROR = 7;
export const MSG_STREAM = 8;

export const MESSAGE_TYPE_NAMES: Readonly<Record<number, string>> = Object.freeze({
  [MSG_HELLO]: 'HELLO',
  [MSG_CHALLENGE]: 'CHALLENGE',
  [MSG_PROOF]: 'PROOF',
  [MSG_WELCOME]: 'WELCOME',
  [MSG_DATA]: 'DATA',
  [MSG_ACK]: 'ACK',
  [MSG_ERROR]: 'ERROR',
  [MSG_STREAM]: 'STREAM',
});

// HELLO: magic, version, flags, nonceC, host name. Magic and version keep their offsets in every version.
export const HELLO_MAGIC_OFFSET = 5;
export const HELLO_VERSION_OFFSET = 9;
export const HELLO_FLAGS_OFFSET = 11;
export const HELLO_NONCE_OFFSET = 13;
export const HELLO_HOST_NAME_LENGTH_OFFSET = 45;
export const HELLO_HOST_NAME_OFFSET = 46;
// CHALLENGE: nonceA, host name, proofA.
export const CHALLENGE_NONCE_OFFSET = 5;
export const CHALLENGE_HOST_NAME_LENGTH_OFFSET = 37;
export const CHALLENGE_HOST_NAME_OFFSET = 38;
// PROOF.
export const PROOF_PROOF_OFFSET = 5;
export const PROOF_MESSAGE_LENGTH = 37;
// WELCOME.
export const WELCOME_BOOT_ID_OFFSET = 5;
export const WELCOME_MAX_FRAMES_OFFSET = 9;
export const WELCOME_MESSAGE_LENGTH = 13;

// STREAM: binds a stream id of this connection to (source, destination).
export const STREAM_ID_OFFSET = 5;
export const STREAM_SOURCE_INDEX_OFFSET = 9;
export const STREAM_SOURCE_GENERATION_OFFSET = 13;
export const STREAM_SOURCE_NAME_LENGTH_OFFSET = 17;
export const STREAM_DESTINATION_NAME_LENGTH_OFFSET = 18;
/** The source name starts here, the destination name at 19 + s; the message is 19 + s + d bytes. */
export const STREAM_NAMES_OFFSET = 19;

// DATA: frameCount, then runs; a run is the frames of one stream.
export const DATA_FRAME_COUNT_OFFSET = 5;
export const DATA_RUNS_OFFSET = 9;
/** u32 stream id (offsets from the run's start). */
export const RUN_STREAM_OFFSET = 0;
/** u32 frames in the run, >= 1. */
export const RUN_FRAME_COUNT_OFFSET = 4;
export const RUN_HEADER_LENGTH = 8;
/** u32 the source's sequence number of the frame (offsets from the frame's start). */
export const FRAME_SEQUENCE_OFFSET = 0;
/** u32 payload length p; the payload follows the header, the frame is 8 + p bytes. */
export const FRAME_PAYLOAD_LENGTH_OFFSET = 4;
export const FRAME_HEADER_LENGTH = 8;

// ACK: count, then entries of stream id, through, status.
export const ACK_COUNT_OFFSET = 5;
export const ACK_ENTRIES_OFFSET = 9;
export const ACK_ENTRY_STREAM_OFFSET = 0;
/** u32: the stream's frames numbered below this are settled. */
export const ACK_ENTRY_THROUGH_OFFSET = 4;
/** u8: the outcome of frame through - 1 (the frames before it since the previous entry: DELIVERED or DUPLICATE). */
export const ACK_ENTRY_STATUS_OFFSET = 8;
export const ACK_ENTRY_LENGTH = 9;

// ERROR: u16 code, u16 text length, UTF-8 text.
export const ERROR_CODE_OFFSET = 5;
export const ERROR_TEXT_LENGTH_OFFSET = 7;
export const ERROR_TEXT_OFFSET = 9;

/** One of the ACK status codes (the wire outcomes of src/outcome.ts). */
export type AckStatus = 0 | 1 | 2 | 3 | 4;

/** True if `value` is an ACK status (an outcome that travels on the wire). */
export function isAckStatus(value: unknown): value is AckStatus {
  return typeof value === 'number' && OUTCOME_TABLE[value]?.ack === true;
}

export const ERR_BAD_MAGIC = 1;
export const ERR_BAD_VERSION = 2;
export const ERR_UNKNOWN_HOST = 3;
export const ERR_AUTH_FAILED = 4;
export const ERR_MALFORMED = 5;
export const ERR_TOO_LARGE = 6;
export const ERR_UNEXPECTED = 7;
export const ERR_SHUTTING_DOWN = 8;

/** Every wire error code: the single source of name and meaning. Append-only, never reused. */
export const WIRE_ERROR_TABLE = Object.freeze({
  [ERR_BAD_MAGIC]: { name: 'BAD_MAGIC', meaning: 'HELLO does not start with the magic: the peer does not speak this protocol.' },
  [ERR_BAD_VERSION]: { name: 'BAD_VERSION', meaning: 'HELLO names a protocol version the acceptor does not speak.' },
  [ERR_UNKNOWN_HOST]: { name: 'UNKNOWN_HOST', meaning: 'The peer host name is not in the config, or is not the host that was dialled.' },
  [ERR_AUTH_FAILED]: { name: 'AUTH_FAILED', meaning: 'A handshake proof did not verify (different secret, or a replay).' },
  [ERR_MALFORMED]: { name: 'MALFORMED', meaning: 'A message breaks the format: length, type, name, count, stream id or status.' },
  [ERR_TOO_LARGE]: { name: 'TOO_LARGE', meaning: "A message exceeds the receiver's limit: bodyLength above maxMessageBytes, or more frames than maxFramesPerBatch." },
  [ERR_UNEXPECTED]: { name: 'UNEXPECTED', meaning: "A message that is not allowed in the connection's state or direction, or that names a stream or frame the receiver does not have." },
  [ERR_SHUTTING_DOWN]: { name: 'SHUTTING_DOWN', meaning: 'The sender is shutting down.' },
} as const);

export type WireErrorCode = keyof typeof WIRE_ERROR_TABLE;

/**
 * The peer broke the protocol: a {@link BusError} (ERR_SHMBUS_PROTOCOL) with
 * the wire code to send back in an ERROR before closing. `offset` is where in
 * the message the fault lies and `streamOffset` where that message began in
 * the byte stream, when the fault is in the bytes; both are -1 for a
 * well-formed message that the state does not allow.
 */
export class ProtocolError extends BusError {
  readonly wireCode: WireErrorCode;
  readonly offset: number;
  readonly streamOffset: number;

  constructor(wireCode: WireErrorCode, message: string, offset = -1, streamOffset = -1) {
    super('ERR_SHMBUS_PROTOCOL', message);
    this.wireCode = wireCode;
    this.offset = offset;
    this.streamOffset = streamOffset;
  }

  override get name(): string {
    return `ProtocolError [${WIRE_ERROR_TABLE[this.wireCode].name}]`;
  }
}

// ---------------------------------------------------------------------------
// Decoded messages. DATA and ACK stay bytes: walk them with the offsets above.
// ---------------------------------------------------------------------------

export interface HelloMessage { readonly type: typeof MSG_HELLO; readonly flags: number; readonly nonce: Buffer; readonly hostName: string }
export interface ChallengeMessage { readonly type: typeof MSG_CHALLENGE; readonly nonce: Buffer; readonly hostName: string; readonly proof: Buffer }
export interface ProofMessage { readonly type: typeof MSG_PROOF; readonly proof: Buffer }
export interface WelcomeMessage { readonly type: typeof MSG_WELCOME; readonly bootId: number; readonly maxFramesPerBatch: number }
export interface StreamMessage {
  readonly type: typeof MSG_STREAM;
  readonly streamId: number;
  readonly sourceIndex: number;
  readonly sourceGeneration: number;
  readonly sourceName: string;
  readonly destinationName: string;
}
/** DATA: `bytes` is the whole message, checked: runs and frames lie exactly inside it and add up to `frameCount`. */
export interface DataMessage { readonly type: typeof MSG_DATA; readonly bytes: Buffer; readonly frameCount: number }
/** ACK: `bytes` is the whole message, checked: `count` entries with known statuses. */
export interface AckMessage { readonly type: typeof MSG_ACK; readonly bytes: Buffer; readonly count: number }
export interface ErrorMessage { readonly type: typeof MSG_ERROR; readonly code: number; readonly message: string }
export type Message = HelloMessage | ChallengeMessage | ProofMessage | WelcomeMessage | StreamMessage | DataMessage | AckMessage | ErrorMessage;

// ---------------------------------------------------------------------------
// Argument checks and names.
// ---------------------------------------------------------------------------

export function invalid(option: string, expected: string, received: unknown): BusError {
  return new BusError('ERR_SHMBUS_INVALID_OPTION', `argument "${option}" must be ${expected}; received ${describeValue(received)}`);
}

export function checkU32(value: number, option: string): void {
  if (value >>> 0 !== value) throw invalid(option, 'an integer in [0, 4294967295]', value);
}

export function checkRange(value: number, min: number, max: number, option: string): void {
  if (!Number.isInteger(value) || value < min || value > max) throw invalid(option, `an integer in [${min}, ${max}]`, value);
}

export function checkBytes(value: Uint8Array, length: number, option: string): void {
  if (!(value instanceof Uint8Array) || value.length !== length) {
    throw invalid(option, `${length} bytes`, value instanceof Uint8Array ? `${value.length} bytes` : value);
  }
}

export function checkName(value: string, option: string): void {
  if (typeof value !== 'string' || !WIRE_NAME_PATTERN.test(value)) throw invalid(option, '1-64 characters of A-Z a-z 0-9 _ . @ -', value);
}

function messageBuffer(type: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  buf.writeUInt32LE(length - MESSAGE_LENGTH_FIELD_LENGTH, MESSAGE_LENGTH_OFFSET);
  buf[MESSAGE_TYPE_OFFSET] = type;
  return buf;
}

// ---------------------------------------------------------------------------
// Encoders (handshake messages: handshake.ts builds them with these).
// ---------------------------------------------------------------------------

export function encodeHello(nonce: Uint8Array, hostName: string, version: number = PROTOCOL_VERSION): Buffer {
  checkBytes(nonce, NONCE_LENGTH, 'nonce');
  checkName(hostName, 'hostName');
  checkRange(version, 0, 0xffff, 'version');
  const buf = messageBuffer(MSG_HELLO, HELLO_HOST_NAME_OFFSET + hostName.length);
  buf.writeUInt32LE(MAGIC, HELLO_MAGIC_OFFSET);
  buf.writeUInt16LE(version, HELLO_VERSION_OFFSET);
  buf.set(nonce, HELLO_NONCE_OFFSET);
  buf[HELLO_HOST_NAME_LENGTH_OFFSET] = hostName.length;
  buf.write(hostName, HELLO_HOST_NAME_OFFSET, 'latin1');
  return buf;
}

export function encodeChallenge(nonce: Uint8Array, hostName: string, proof: Uint8Array): Buffer {
  checkBytes(nonce, NONCE_LENGTH, 'nonce');
  checkName(hostName, 'hostName');
  checkBytes(proof, PROOF_LENGTH, 'proof');
  const proofOffset = CHALLENGE_HOST_NAME_OFFSET + hostName.length;
  const buf = messageBuffer(MSG_CHALLENGE, proofOffset + PROOF_LENGTH);
  buf.set(nonce, CHALLENGE_NONCE_OFFSET);
  buf[CHALLENGE_HOST_NAME_LENGTH_OFFSET] = hostName.length;
  buf.write(hostName, CHALLENGE_HOST_NAME_OFFSET, 'latin1');
  buf.set(proof, proofOffset);
  return buf;
}

export function encodeProof(proof: Uint8Array): Buffer {
  checkBytes(proof, PROOF_LENGTH, 'proof');
  const buf = messageBuffer(MSG_PROOF, PROOF_MESSAGE_LENGTH);
  buf.set(proof, PROOF_PROOF_OFFSET);
  return buf;
}

export function encodeWelcome(bootId: number, maxFramesPerBatch: number): Buffer {
  checkU32(bootId, 'bootId');
  checkRange(maxFramesPerBatch, 1, MAX_FRAMES_PER_MESSAGE, 'maxFramesPerBatch');
  const buf = messageBuffer(MSG_WELCOME, WELCOME_MESSAGE_LENGTH);
  buf.writeUInt32LE(bootId, WELCOME_BOOT_ID_OFFSET);
  buf.writeUInt32LE(maxFramesPerBatch, WELCOME_MAX_FRAMES_OFFSET);
  return buf;
}

/** Encode STREAM: bind `streamId` (the next unused id of the connection) to a source endpoint and a destination name. */
export function encodeStream(streamId: number, sourceIndex: number, sourceGeneration: number, sourceName: string, destinationName: string): Buffer {
  checkRange(streamId, 0, MAX_STREAMS - 1, 'streamId');
  checkU32(sourceIndex, 'sourceIndex');
  checkU32(sourceGeneration, 'sourceGeneration');
  checkName(sourceName, 'sourceName');
  checkName(destinationName, 'destinationName');
  const buf = messageBuffer(MSG_STREAM, STREAM_NAMES_OFFSET + sourceName.length + destinationName.length);
  buf.writeUInt32LE(streamId, STREAM_ID_OFFSET);
  buf.writeUInt32LE(sourceIndex, STREAM_SOURCE_INDEX_OFFSET);
  buf.writeUInt32LE(sourceGeneration, STREAM_SOURCE_GENERATION_OFFSET);
  buf[STREAM_SOURCE_NAME_LENGTH_OFFSET] = sourceName.length;
  buf[STREAM_DESTINATION_NAME_LENGTH_OFFSET] = destinationName.length;
  buf.write(sourceName, STREAM_NAMES_OFFSET, 'latin1');
  buf.write(destinationName, STREAM_NAMES_OFFSET + sourceName.length, 'latin1');
  return buf;
}

/** One ACK entry, for {@link encodeAck} (tests and tools; the relay writes entries in place). */
export interface AckEntry { readonly streamId: number; readonly through: number; readonly status: AckStatus }

export function encodeAck(entries: readonly AckEntry[]): Buffer {
  if (!Array.isArray(entries)) throw invalid('entries', 'an array', entries);
  checkRange(entries.length, 1, MAX_ACK_ENTRIES, 'entries.length');
  const buf = messageBuffer(MSG_ACK, ACK_ENTRIES_OFFSET + entries.length * ACK_ENTRY_LENGTH);
  buf.writeUInt32LE(entries.length, ACK_COUNT_OFFSET);
  let at = ACK_ENTRIES_OFFSET;
  for (let i = 0; i < entries.length; i++) {
    const { streamId, through, status } = entries[i]!;
    checkRange(streamId, 0, MAX_STREAMS - 1, `entries[${i}].streamId`);
    checkU32(through, `entries[${i}].through`);
    if (!isAckStatus(status)) throw invalid(`entries[${i}].status`, 'an ACK status code', status);
    buf.writeUInt32LE(streamId, at + ACK_ENTRY_STREAM_OFFSET);
    buf.writeUInt32LE(through, at + ACK_ENTRY_THROUGH_OFFSET);
    buf[at + ACK_ENTRY_STATUS_OFFSET] = status;
    at += ACK_ENTRY_LENGTH;
  }
  return buf;
}

/** Encode ERROR: a wire `code` and a text for people, cut to {@link MAX_ERROR_TEXT_SENT_LENGTH} bytes at a character boundary. */
export function encodeError(code: number, message: string): Buffer {
  checkRange(code, 1, 0xffff, 'code');
  if (typeof message !== 'string') throw invalid('message', 'a string', message);
  let text = Buffer.from(message, 'utf8');
  if (text.length > MAX_ERROR_TEXT_SENT_LENGTH) {
    let end = MAX_ERROR_TEXT_SENT_LENGTH;
    while (end > 0 && (text[end]! & 0xc0) === 0x80) end--;
    text = text.subarray(0, end);
  }
  const buf = messageBuffer(MSG_ERROR, ERROR_TEXT_OFFSET + text.length);
  buf.writeUInt16LE(code, ERROR_CODE_OFFSET);
  buf.writeUInt16LE(text.length, ERROR_TEXT_LENGTH_OFFSET);
  buf.set(text, ERROR_TEXT_OFFSET);
  return buf;
}

/**
 * Serial-number order of u32 sequence numbers (RFC 1982): true if `a` comes
 * after `b`, i.e. (a - b) mod 2^32 is in [1, 2^31).
 */
export function isSequenceAfter(a: number, b: number): boolean {
  const d = (a - b) >>> 0;
  return d !== 0 && d < 0x80000000;
}

/** The entries of a decoded ACK as objects (tests and tools; the relay walks the bytes). */
export function ackEntries(msg: Message): AckEntry[] {
  if (msg.type !== MSG_ACK) throw invalid('msg', 'an ACK message', MESSAGE_TYPE_NAMES[msg.type]);
  const out: AckEntry[] = [];
  for (let i = 0, at = ACK_ENTRIES_OFFSET; i < msg.count; i++, at += ACK_ENTRY_LENGTH) {
    out.push({ streamId: msg.bytes.readUInt32LE(at + ACK_ENTRY_STREAM_OFFSET), through: msg.bytes.readUInt32LE(at + ACK_ENTRY_THROUGH_OFFSET), status: msg.bytes[at + ACK_ENTRY_STATUS_OFFSET] as AckStatus });
  }
  return out;
}
