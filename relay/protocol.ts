/**
 * The transit relay's wire codec: every number of the relay protocol, the
 * message encoders, a streaming decoder and the handshake proofs. No sockets.
 *
 * This module is the code half of docs/PROTOCOL.md (the prose, diagrams and
 * state machines); test/40.protocol.test.ts checks the document's offsets and
 * hex examples against this file. All integers are little-endian and fields
 * are packed (no alignment padding). Offsets named `*_OFFSET` are counted from
 * the first byte of the message (its length field) unless the name says
 * otherwise (`DATA_FRAME_*` from the start of a frame, `ACK_ENTRY_*` from the
 * start of an entry).
 *
 * A change to any wire value below is a protocol change: bump
 * {@link PROTOCOL_VERSION}. Error and ACK status codes are append-only.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { BusError, describeValue } from '../src/errors';

// ---------------------------------------------------------------------------
// Identity and limits.
// ---------------------------------------------------------------------------

/** ASCII "SHBR" read as a little-endian u32 (bytes 53 48 42 52): the first body field of HELLO. */
export const MAGIC = 0x52424853;
/** Version of the wire format described here, sent in HELLO. */
export const PROTOCOL_VERSION = 1;

/** Default limit on a message's bodyLength (16 MiB). */
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
/** Smallest accepted `maxMessageBytes`: every handshake message, an ERROR and a DATA frame with 64-byte names fit. */
export const MIN_MAX_MESSAGE_BYTES = 1024;
/** Largest accepted `maxMessageBytes` (1 GiB). */
export const MAX_MAX_MESSAGE_BYTES = 1 << 30;

/** Message size limit (bodyLength) before the handshake completes: every handshake message is far smaller. */
export const HANDSHAKE_MAX_MESSAGE_BYTES = 1024;

/** Length of nonceC and nonceA. */
export const NONCE_LENGTH = 32;
/** Length of proofA and proofC (an HMAC-SHA256 digest). */
export const PROOF_LENGTH = 32;
/** Longest host name (HELLO, CHALLENGE). */
export const MAX_HOST_NAME_LENGTH = 64;
/** Longest endpoint name (DATA source and destination). */
export const MAX_ENDPOINT_NAME_LENGTH = 64;
/**
 * Host and endpoint names on the wire: 1-64 of `A-Z a-z 0-9 _ . @ -`. ("@" is
 * allowed because relays address each other as the endpoint "@relay".)
 */
export const WIRE_NAME_PATTERN = /^[A-Za-z0-9_.@-]{1,64}$/;
/** Most frames in one DATA message (frameCount is a u32 on the wire, limited to this). */
export const MAX_FRAMES_PER_MESSAGE = 65535;
/** Most entries in one ACK message. */
export const MAX_ACK_ENTRIES = 65535;
/** Longest ERROR text on the wire (messageLength is a u16). */
export const MAX_ERROR_TEXT_LENGTH = 65535;
/** Longest ERROR text {@link encodeError} writes (bytes of UTF-8); longer text is cut at a character boundary. */
export const MAX_ERROR_TEXT_SENT_LENGTH = 256;

/** HMAC input prefix of proofA (ASCII, no terminator). */
export const ACCEPTOR_PROOF_LABEL = 'shmbus-relay-v1 acceptor';
/** HMAC input prefix of proofC (ASCII, no terminator). */
export const CONNECTOR_PROOF_LABEL = 'shmbus-relay-v1 connector';

// ---------------------------------------------------------------------------
// Message framing: u32 bodyLength, u8 type, body.
// ---------------------------------------------------------------------------

/** u32 bodyLength: the bytes after this field (the type byte and the body). Never 0, never above maxMessageBytes. */
export const MESSAGE_LENGTH_OFFSET = 0;
/** Length of the bodyLength field. */
export const MESSAGE_LENGTH_FIELD_LENGTH = 4;
/** u8 message type ({@link MSG_HELLO} ...). */
export const MESSAGE_TYPE_OFFSET = 4;
/** Where the body begins: bodyLength + type. */
export const MESSAGE_HEADER_LENGTH = 5;

/** Connector → acceptor, first message. */
export const MSG_HELLO = 1;
/** Acceptor → connector, answer to HELLO. */
export const MSG_CHALLENGE = 2;
/** Connector → acceptor, answer to CHALLENGE. */
export const MSG_PROOF = 3;
/** Acceptor → connector: the handshake is complete. */
export const MSG_WELCOME = 4;
/** Either side once open: a batch of frames. */
export const MSG_DATA = 5;
/** Either side once open: the fate of frames received in DATA. */
export const MSG_ACK = 6;
/** Either side, any time: why the sender is about to close. */
export const MSG_ERROR = 7;

/** Message type names, for logs and error messages. */
export const MESSAGE_TYPE_NAMES: Readonly<Record<number, string>> = Object.freeze({
  [MSG_HELLO]: 'HELLO',
  [MSG_CHALLENGE]: 'CHALLENGE',
  [MSG_PROOF]: 'PROOF',
  [MSG_WELCOME]: 'WELCOME',
  [MSG_DATA]: 'DATA',
  [MSG_ACK]: 'ACK',
  [MSG_ERROR]: 'ERROR',
});

// ---------------------------------------------------------------------------
// HELLO: magic, version, flags, nonceC, host name.
// ---------------------------------------------------------------------------

/** u32 {@link MAGIC}. Stays at this offset in every version. */
export const HELLO_MAGIC_OFFSET = 5;
/** u16 {@link PROTOCOL_VERSION}. Stays at this offset in every version. */
export const HELLO_VERSION_OFFSET = 9;
/** u16 flags: sent as 0, ignored by version-1 receivers. */
export const HELLO_FLAGS_OFFSET = 11;
/** {@link NONCE_LENGTH} random bytes, nonceC. */
export const HELLO_NONCE_OFFSET = 13;
/** u8 length n of the connector's host name, 1..{@link MAX_HOST_NAME_LENGTH}. */
export const HELLO_HOST_NAME_LENGTH_OFFSET = 45;
/** n ASCII bytes: the connector's host name. The message ends after it (length 46 + n). */
export const HELLO_HOST_NAME_OFFSET = 46;

// ---------------------------------------------------------------------------
// CHALLENGE: nonceA, host name, proofA.
// ---------------------------------------------------------------------------

/** {@link NONCE_LENGTH} random bytes, nonceA. */
export const CHALLENGE_NONCE_OFFSET = 5;
/** u8 length n of the acceptor's host name. */
export const CHALLENGE_HOST_NAME_LENGTH_OFFSET = 37;
/** n ASCII bytes: the acceptor's host name; proofA ({@link PROOF_LENGTH} bytes) follows at 38 + n. Length 70 + n. */
export const CHALLENGE_HOST_NAME_OFFSET = 38;

// ---------------------------------------------------------------------------
// PROOF and WELCOME: fixed length.
// ---------------------------------------------------------------------------

/** {@link PROOF_LENGTH} bytes, proofC. */
export const PROOF_PROOF_OFFSET = 5;
/** Length of a PROOF message. */
export const PROOF_MESSAGE_LENGTH = 37;

/** u32 acceptorBootId: random, chosen once per relay process start. */
export const WELCOME_BOOT_ID_OFFSET = 5;
/** u32 maxFramesPerBatch: most frames the acceptor takes in one DATA, 1..{@link MAX_FRAMES_PER_MESSAGE}. */
export const WELCOME_MAX_FRAMES_OFFSET = 9;
/** Length of a WELCOME message. */
export const WELCOME_MESSAGE_LENGTH = 13;

// ---------------------------------------------------------------------------
// DATA: frameCount, then frames; each frame a 24-byte header, names, payload.
// ---------------------------------------------------------------------------

/** u32 frameCount, 1..{@link MAX_FRAMES_PER_MESSAGE}. */
export const DATA_FRAME_COUNT_OFFSET = 5;
/** Where frame 0 begins; each frame follows the previous one without padding. */
export const DATA_FRAMES_OFFSET = 9;

/** u32 frameId: the sender's handle for this frame, echoed in the ACK. (Offsets from the frame start.) */
export const DATA_FRAME_ID_OFFSET = 0;
/** u32 directory index of the source endpoint on its host. */
export const DATA_FRAME_SOURCE_INDEX_OFFSET = 4;
/** u32 directory generation of the source endpoint when it sent. */
export const DATA_FRAME_SOURCE_GENERATION_OFFSET = 8;
/** u32 per-source sequence number (wraps; serial-number comparison). */
export const DATA_FRAME_SEQUENCE_OFFSET = 12;
/** u16 frame flags, carried unchanged (the codec does not interpret them). */
export const DATA_FRAME_FLAGS_OFFSET = 16;
/** u8 length s of the source endpoint name, 1..{@link MAX_ENDPOINT_NAME_LENGTH}. */
export const DATA_FRAME_SOURCE_NAME_LENGTH_OFFSET = 18;
/** u8 length d of the destination endpoint name, 1..{@link MAX_ENDPOINT_NAME_LENGTH}. */
export const DATA_FRAME_DESTINATION_NAME_LENGTH_OFFSET = 19;
/** u32 length p of the payload. */
export const DATA_FRAME_PAYLOAD_LENGTH_OFFSET = 20;
/** Frame header length: the source name starts here, then the destination name at 24 + s, the payload at 24 + s + d; the frame is 24 + s + d + p bytes. */
export const DATA_FRAME_HEADER_LENGTH = 24;

// ---------------------------------------------------------------------------
// ACK: count, then entries of u32 frameId + u8 status.
// ---------------------------------------------------------------------------

/** u32 count of entries, 1..{@link MAX_ACK_ENTRIES}. */
export const ACK_COUNT_OFFSET = 5;
/** Where entry 0 begins; the message is 9 + 5 × count bytes. */
export const ACK_ENTRIES_OFFSET = 9;
/** u32 frameId of the acknowledged frame. (Offsets from the entry start.) */
export const ACK_ENTRY_FRAME_ID_OFFSET = 0;
/** u8 status ({@link ACK_DELIVERED} ...). */
export const ACK_ENTRY_STATUS_OFFSET = 4;
/** Length of one entry. */
export const ACK_ENTRY_LENGTH = 5;

/** Committed into the target inbox. The sender releases the frame. */
export const ACK_DELIVERED = 0;
/** Delivered earlier (a resend after reconnect). The sender releases the frame. */
export const ACK_DUPLICATE = 1;
/** No endpoint of that name on the receiving host, still none after the TTL. Undeliverable. */
export const ACK_UNKNOWN_DESTINATION = 2;
/** The target existed but stayed full for the TTL. Undeliverable. */
export const ACK_EXPIRED = 3;
/** The payload does not fit the target inbox's slot. Undeliverable. */
export const ACK_TOO_LARGE = 4;

/** Every ACK status: the single source of name and meaning (docs/PROTOCOL.md lists the same). Append-only. */
export const ACK_STATUS_TABLE = Object.freeze({
  [ACK_DELIVERED]: { name: 'DELIVERED', meaning: 'Committed into the target inbox.' },
  [ACK_DUPLICATE]: { name: 'DUPLICATE', meaning: 'Already delivered earlier; the sender releases it.' },
  [ACK_UNKNOWN_DESTINATION]: { name: 'UNKNOWN_DESTINATION', meaning: 'No such endpoint on the receiving host after its grace (limit `unknownTargetMs`).' },
  [ACK_EXPIRED]: { name: 'EXPIRED', meaning: 'The target existed but stayed full for the TTL.' },
  [ACK_TOO_LARGE]: { name: 'TOO_LARGE', meaning: "The frame does not fit the target's slot." },
} as const);

/** One of the ACK_* status codes. */
export type AckStatus = keyof typeof ACK_STATUS_TABLE;

/** True if `value` is a status code of {@link ACK_STATUS_TABLE}. */
export function isAckStatus(value: unknown): value is AckStatus {
  return typeof value === 'number' && Object.hasOwn(ACK_STATUS_TABLE, value);
}

// ---------------------------------------------------------------------------
// ERROR: u16 code, u16 text length, UTF-8 text.
// ---------------------------------------------------------------------------

/** u16 code ({@link ERR_BAD_MAGIC} ...). */
export const ERROR_CODE_OFFSET = 5;
/** u16 length t of the text in bytes. */
export const ERROR_TEXT_LENGTH_OFFSET = 7;
/** t bytes of UTF-8 text, for people. The message is 9 + t bytes. */
export const ERROR_TEXT_OFFSET = 9;

/** HELLO's magic is not {@link MAGIC}. */
export const ERR_BAD_MAGIC = 1;
/** HELLO's protocolVersion is not one the acceptor speaks. */
export const ERR_BAD_VERSION = 2;
/** The peer's host name is not one this side accepts (not in the config, or not the host dialled). */
export const ERR_UNKNOWN_HOST = 3;
/** A handshake proof did not verify. */
export const ERR_AUTH_FAILED = 4;
/** A message breaks the format (length, type, name, count, status). */
export const ERR_MALFORMED = 5;
/** A message is larger than the receiver's limit (bytes or frames). */
export const ERR_TOO_LARGE = 6;
/** A well-formed message that is not allowed in the connection's state. */
export const ERR_UNEXPECTED = 7;
/** The sender is shutting down. */
export const ERR_SHUTTING_DOWN = 8;

/** Every wire error code: the single source of name and meaning (docs/PROTOCOL.md lists the same). Append-only, never reused. */
export const WIRE_ERROR_TABLE = Object.freeze({
  [ERR_BAD_MAGIC]: { name: 'BAD_MAGIC', meaning: 'HELLO does not start with the magic: the peer does not speak this protocol.' },
  [ERR_BAD_VERSION]: { name: 'BAD_VERSION', meaning: 'HELLO names a protocol version the acceptor does not speak.' },
  [ERR_UNKNOWN_HOST]: { name: 'UNKNOWN_HOST', meaning: 'The peer host name is not in the config, or is not the host that was dialled.' },
  [ERR_AUTH_FAILED]: { name: 'AUTH_FAILED', meaning: 'A handshake proof did not verify (different secret, or a replay).' },
  [ERR_MALFORMED]: { name: 'MALFORMED', meaning: 'A message breaks the format: length, type, name, count or status.' },
  [ERR_TOO_LARGE]: { name: 'TOO_LARGE', meaning: "A message exceeds the receiver's limit: bodyLength above maxMessageBytes, or more frames than maxFramesPerBatch." },
  [ERR_UNEXPECTED]: { name: 'UNEXPECTED', meaning: "A message that is not allowed in the connection's state." },
  [ERR_SHUTTING_DOWN]: { name: 'SHUTTING_DOWN', meaning: 'The sender is shutting down.' },
} as const);

/** One of the ERR_* wire codes this version defines. */
export type WireErrorCode = keyof typeof WIRE_ERROR_TABLE;

// ---------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------

/**
 * The peer broke the protocol. `wireCode` is the ERR_* code to send back in
 * an ERROR message before closing; `offset` is where in the message the fault
 * lies (0 = the length field), `streamOffset` where that message began in the
 * byte stream. The message text is for people.
 */
export class ProtocolError extends Error {
  readonly wireCode: WireErrorCode;
  readonly offset: number;
  readonly streamOffset: number;

  constructor(wireCode: WireErrorCode, message: string, offset: number, streamOffset: number) {
    super(message);
    this.wireCode = wireCode;
    this.offset = offset;
    this.streamOffset = streamOffset;
  }

  override get name(): string {
    return `ProtocolError [${WIRE_ERROR_TABLE[this.wireCode].name}]`;
  }
}

// ---------------------------------------------------------------------------
// Decoded messages.
// ---------------------------------------------------------------------------

/** HELLO. `nonce` is a view into the received bytes. */
export interface HelloMessage {
  readonly type: typeof MSG_HELLO;
  readonly flags: number;
  readonly nonce: Buffer;
  readonly hostName: string;
}

/** CHALLENGE. `nonce` and `proof` are views into the received bytes. */
export interface ChallengeMessage {
  readonly type: typeof MSG_CHALLENGE;
  readonly nonce: Buffer;
  readonly hostName: string;
  readonly proof: Buffer;
}

/** PROOF. `proof` is a view into the received bytes. */
export interface ProofMessage {
  readonly type: typeof MSG_PROOF;
  readonly proof: Buffer;
}

/** WELCOME. */
export interface WelcomeMessage {
  readonly type: typeof MSG_WELCOME;
  readonly bootId: number;
  readonly maxFramesPerBatch: number;
}

/** One frame of a DATA message. `payload` is a view into the received bytes (no copy); names that repeat are shared strings. */
export interface DataFrame {
  readonly frameId: number;
  readonly sourceIndex: number;
  readonly sourceGeneration: number;
  readonly sequence: number;
  readonly flags: number;
  readonly sourceName: string;
  readonly destinationName: string;
  readonly payload: Buffer;
}

/** DATA. */
export interface DataMessage {
  readonly type: typeof MSG_DATA;
  readonly frames: DataFrame[];
}

/** One ACK entry. */
export interface AckEntry {
  readonly frameId: number;
  readonly status: AckStatus;
}

/** ACK. */
export interface AckMessage {
  readonly type: typeof MSG_ACK;
  readonly entries: AckEntry[];
}

/** ERROR. `code` may be one this version does not know (codes are append-only); `message` is decoded as UTF-8 with replacement. */
export interface ErrorMessage {
  readonly type: typeof MSG_ERROR;
  readonly code: number;
  readonly message: string;
}

/** Any decoded message; switch on `type`. */
export type Message = HelloMessage | ChallengeMessage | ProofMessage | WelcomeMessage | DataMessage | AckMessage | ErrorMessage;

// ---------------------------------------------------------------------------
// Argument checks (encoders): BusError ERR_SHMBUS_INVALID_OPTION, naming the argument.
// ---------------------------------------------------------------------------

function invalid(option: string, expected: string, received: unknown): BusError {
  return new BusError('ERR_SHMBUS_INVALID_OPTION', `argument "${option}" must be ${expected}; received ${describeValue(received)}`);
}

function checkU32(value: number, option: string): void {
  if (value >>> 0 !== value) throw invalid(option, 'an integer in [0, 4294967295]', value);
}

function checkU16(value: number, option: string): void {
  if ((value & 0xffff) !== value) throw invalid(option, 'an integer in [0, 65535]', value);
}

function checkRange(value: number, min: number, max: number, option: string): void {
  if (!Number.isInteger(value) || value < min || value > max) throw invalid(option, `an integer in [${min}, ${max}]`, value);
}

function checkBytes(value: Uint8Array, length: number, option: string): void {
  if (!(value instanceof Uint8Array) || value.length !== length) {
    throw invalid(option, `${length} bytes`, value instanceof Uint8Array ? `${value.length} bytes` : value);
  }
}

/** 1 for each byte allowed in a wire name ({@link WIRE_NAME_PATTERN}), 0 otherwise. */
const NAME_BYTE_ALLOWED = (() => {
  const table = new Uint8Array(256);
  for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.@-') table[c.charCodeAt(0)] = 1;
  return table;
})();

const NAME_EXPECTED = '1-64 characters of A-Z a-z 0-9 _ . @ -';

function checkName(value: string, option: string): void {
  if (typeof value !== 'string' || !WIRE_NAME_PATTERN.test(value)) throw invalid(option, NAME_EXPECTED, value);
}

/** Write an already length-checked name as ASCII, checking each character; no allocation. */
function writeName(target: Buffer, offset: number, name: string, option: string): void {
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c > 0x7f || NAME_BYTE_ALLOWED[c] === 0) throw invalid(option, NAME_EXPECTED, name);
    target[offset + i] = c;
  }
}

function messageBuffer(type: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  buf.writeUInt32LE(length - MESSAGE_LENGTH_FIELD_LENGTH, MESSAGE_LENGTH_OFFSET);
  buf[MESSAGE_TYPE_OFFSET] = type;
  return buf;
}

// ---------------------------------------------------------------------------
// Encoders.
// ---------------------------------------------------------------------------

/**
 * Encode HELLO (connector → acceptor, first message): {@link MAGIC},
 * {@link PROTOCOL_VERSION}, flags 0, `nonce` (nonceC, {@link NONCE_LENGTH}
 * bytes, from {@link newNonce}) and the connector's `hostName`.
 */
export function encodeHello(nonce: Uint8Array, hostName: string): Buffer {
  checkBytes(nonce, NONCE_LENGTH, 'nonce');
  checkName(hostName, 'hostName');
  const buf = messageBuffer(MSG_HELLO, HELLO_HOST_NAME_OFFSET + hostName.length);
  buf.writeUInt32LE(MAGIC, HELLO_MAGIC_OFFSET);
  buf.writeUInt16LE(PROTOCOL_VERSION, HELLO_VERSION_OFFSET);
  buf.writeUInt16LE(0, HELLO_FLAGS_OFFSET);
  buf.set(nonce, HELLO_NONCE_OFFSET);
  buf[HELLO_HOST_NAME_LENGTH_OFFSET] = hostName.length;
  writeName(buf, HELLO_HOST_NAME_OFFSET, hostName, 'hostName');
  return buf;
}

/**
 * Encode CHALLENGE (acceptor → connector): `nonce` (nonceA), the acceptor's
 * `hostName` and `proof` (proofA, from {@link acceptorProof}).
 */
export function encodeChallenge(nonce: Uint8Array, hostName: string, proof: Uint8Array): Buffer {
  checkBytes(nonce, NONCE_LENGTH, 'nonce');
  checkName(hostName, 'hostName');
  checkBytes(proof, PROOF_LENGTH, 'proof');
  const proofOffset = CHALLENGE_HOST_NAME_OFFSET + hostName.length;
  const buf = messageBuffer(MSG_CHALLENGE, proofOffset + PROOF_LENGTH);
  buf.set(nonce, CHALLENGE_NONCE_OFFSET);
  buf[CHALLENGE_HOST_NAME_LENGTH_OFFSET] = hostName.length;
  writeName(buf, CHALLENGE_HOST_NAME_OFFSET, hostName, 'hostName');
  buf.set(proof, proofOffset);
  return buf;
}

/** Encode PROOF (connector → acceptor): `proof` (proofC, from {@link connectorProof}). */
export function encodeProof(proof: Uint8Array): Buffer {
  checkBytes(proof, PROOF_LENGTH, 'proof');
  const buf = messageBuffer(MSG_PROOF, PROOF_MESSAGE_LENGTH);
  buf.set(proof, PROOF_PROOF_OFFSET);
  return buf;
}

/**
 * Encode WELCOME (acceptor → connector): the acceptor's `bootId` (random per
 * relay process start) and the most frames it takes in one DATA.
 */
export function encodeWelcome(bootId: number, maxFramesPerBatch: number): Buffer {
  checkU32(bootId, 'bootId');
  checkRange(maxFramesPerBatch, 1, MAX_FRAMES_PER_MESSAGE, 'maxFramesPerBatch');
  const buf = messageBuffer(MSG_WELCOME, WELCOME_MESSAGE_LENGTH);
  buf.writeUInt32LE(bootId, WELCOME_BOOT_ID_OFFSET);
  buf.writeUInt32LE(maxFramesPerBatch, WELCOME_MAX_FRAMES_OFFSET);
  return buf;
}

/**
 * Encode ACK: 1..{@link MAX_ACK_ENTRIES} entries of frameId and status. An ACK
 * covering the frames of one DATA message is always smaller than that message.
 */
export function encodeAck(entries: readonly AckEntry[]): Buffer {
  if (!Array.isArray(entries)) throw invalid('entries', 'an array', entries);
  checkRange(entries.length, 1, MAX_ACK_ENTRIES, 'entries.length');
  const buf = messageBuffer(MSG_ACK, ACK_ENTRIES_OFFSET + entries.length * ACK_ENTRY_LENGTH);
  buf.writeUInt32LE(entries.length, ACK_COUNT_OFFSET);
  let at = ACK_ENTRIES_OFFSET;
  for (let i = 0; i < entries.length; i++) {
    const { frameId, status } = entries[i]!;
    checkU32(frameId, `entries[${i}].frameId`);
    if (!isAckStatus(status)) throw invalid(`entries[${i}].status`, 'an ACK_* status code', status);
    buf.writeUInt32LE(frameId, at + ACK_ENTRY_FRAME_ID_OFFSET);
    buf[at + ACK_ENTRY_STATUS_OFFSET] = status;
    at += ACK_ENTRY_LENGTH;
  }
  return buf;
}

/**
 * Encode ERROR: a wire `code` (ERR_*, or any u16 a later version defines) and
 * a text for people, cut to {@link MAX_ERROR_TEXT_SENT_LENGTH} bytes of UTF-8
 * at a character boundary so that an ERROR always fits the peer's limit.
 */
export function encodeError(code: number, message: string): Buffer {
  checkRange(code, 1, 0xffff, 'code');
  if (typeof message !== 'string') throw invalid('message', 'a string', message);
  let text = Buffer.from(message, 'utf8');
  if (text.length > MAX_ERROR_TEXT_SENT_LENGTH) {
    let end = MAX_ERROR_TEXT_SENT_LENGTH;
    while (end > 0 && (text[end]! & 0xc0) === 0x80) end--; // do not split a UTF-8 sequence
    text = text.subarray(0, end);
  }
  const buf = messageBuffer(MSG_ERROR, ERROR_TEXT_OFFSET + text.length);
  buf.writeUInt16LE(code, ERROR_CODE_OFFSET);
  buf.writeUInt16LE(text.length, ERROR_TEXT_LENGTH_OFFSET);
  buf.set(text, ERROR_TEXT_OFFSET);
  return buf;
}

/** Bytes one DATA frame takes: header, both names, payload. */
export function dataFrameLength(sourceNameLength: number, destinationNameLength: number, payloadLength: number): number {
  return DATA_FRAME_HEADER_LENGTH + sourceNameLength + destinationNameLength + payloadLength;
}

// ---------------------------------------------------------------------------
// DATA batch writer (hot path).
// ---------------------------------------------------------------------------

/** Options of {@link DataBatchWriter}. */
export interface DataBatchWriterOptions {
  /** Largest bodyLength a batch may reach (the peer's limit), default {@link DEFAULT_MAX_MESSAGE_BYTES}. */
  maxMessageBytes?: number;
  /** Most frames per batch (the acceptor's WELCOME maxFramesPerBatch), default {@link MAX_FRAMES_PER_MESSAGE}. */
  maxFrames?: number;
  /**
   * Write every batch into this buffer, from its start, and never grow it (its
   * length is one more limit). The caller then owns the reuse: a message from
   * {@link DataBatchWriter.finish} is overwritten by the next batch.
   */
  buffer?: Buffer;
  /** Least size of each buffer the writer allocates for itself (bytes), default 64 KiB. */
  initialCapacity?: number;
}

/** Payloads up to this many bytes are copied by a loop (no temporary view); larger ones by one `set` of a subarray. */
const COPY_LOOP_MAX_BYTES = 48;
/** Default least size of a writer-allocated buffer. */
const DEFAULT_SLAB_BYTES = 64 * 1024;
/** A writer-allocated buffer holds about this many batches of the largest size seen... */
const SLAB_BATCHES = 4;
/** ...but is not made larger than this for that reason (a single batch may still need more). */
const MAX_SLAB_BYTES = 16 * 1024 * 1024;

/**
 * Builds DATA messages frame by frame, without allocating per frame.
 *
 * `append` writes a frame (no allocation for the header and names; payloads
 * above 48 bytes cost one temporary view object, no extra copy) and returns
 * `false` when the frame does not fit the current batch (message bytes, frame
 * count, or a given buffer's length): send the batch with {@link finish} and
 * append the frame to the next one. `false` on an empty batch means the frame
 * can never be sent in one message.
 *
 * Batches are written one after another into a buffer the writer allocates
 * (a slab, a new one when the rest of the current one is too small), so the
 * message that `finish` returns — a view, not a copy — is never written
 * again: it can go straight to `socket.write`, which may hold it until the
 * kernel takes it. With a caller-provided `buffer` every batch starts at its
 * beginning instead, and the caller waits for each message to be written.
 */
export class DataBatchWriter {
  private buf: Buffer;
  private readonly fixed: boolean;
  private readonly slabBytes: number;
  private maxMessageBytes: number;
  private maxFrames: number;
  private frames = 0;
  /** Where the current batch starts in `buf`. */
  private base = 0;
  /** Where the next frame goes in `buf`. */
  private end = DATA_FRAMES_OFFSET;
  /** Longest message finished so far (sizes the next slab). */
  private largestBatch = 0;

  constructor(options: DataBatchWriterOptions = {}) {
    this.maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES;
    this.maxFrames = MAX_FRAMES_PER_MESSAGE;
    this.setLimits(options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES, options.maxFrames ?? MAX_FRAMES_PER_MESSAGE);
    if (options.buffer !== undefined) {
      if (!Buffer.isBuffer(options.buffer) || options.buffer.length < DATA_FRAMES_OFFSET) {
        throw invalid('buffer', `a Buffer of at least ${DATA_FRAMES_OFFSET} bytes`, options.buffer);
      }
      this.buf = options.buffer;
      this.fixed = true;
      this.slabBytes = options.buffer.length;
    } else {
      const slab = options.initialCapacity ?? DEFAULT_SLAB_BYTES;
      checkRange(slab, DATA_FRAMES_OFFSET, MAX_MAX_MESSAGE_BYTES, 'initialCapacity');
      this.slabBytes = slab;
      this.buf = Buffer.allocUnsafe(slab);
      this.fixed = false;
    }
  }

  /** Frames in the current batch. */
  get count(): number {
    return this.frames;
  }

  /** Bytes the current batch would take on the wire (0 when empty). */
  get byteLength(): number {
    return this.frames === 0 ? 0 : this.end - this.base;
  }

  /** Bytes the current batch can reach before the writer needs another buffer (or, for a given buffer, refuses). */
  get capacity(): number {
    return this.buf.length - this.base;
  }

  /**
   * Set the limits for the following batches: `maxMessageBytes` (the peer's
   * bodyLength limit) and `maxFrames` (the acceptor's maxFramesPerBatch).
   * Only between batches.
   */
  setLimits(maxMessageBytes: number, maxFrames: number): void {
    if (this.frames !== 0) throw invalid('setLimits', 'called between batches', `${this.frames} frames pending`);
    checkRange(maxMessageBytes, MIN_MAX_MESSAGE_BYTES, MAX_MAX_MESSAGE_BYTES, 'maxMessageBytes');
    checkRange(maxFrames, 1, MAX_FRAMES_PER_MESSAGE, 'maxFrames');
    this.maxMessageBytes = maxMessageBytes;
    this.maxFrames = maxFrames;
  }

  /** Make room now so that the current batch can reach `byteLength` bytes (capped at the limit) without moving. No-op for a given buffer. */
  reserve(byteLength: number): void {
    checkRange(byteLength, 0, MAX_MAX_MESSAGE_BYTES + MESSAGE_LENGTH_FIELD_LENGTH, 'byteLength');
    const wanted = Math.min(byteLength, this.maxMessageBytes + MESSAGE_LENGTH_FIELD_LENGTH);
    if (!this.fixed && this.capacity < wanted) this.moveBatch(wanted);
  }

  /**
   * Append one frame. The payload is `payload[payloadOffset, payloadOffset +
   * payloadLength)`, so a frame can be copied straight out of a shared-memory
   * mapping. Returns false (and writes nothing) when the frame does not fit
   * this batch. Names must match {@link WIRE_NAME_PATTERN}.
   */
  append(
    frameId: number,
    sourceIndex: number,
    sourceGeneration: number,
    sequence: number,
    flags: number,
    sourceName: string,
    destinationName: string,
    payload: Uint8Array,
    payloadOffset = 0,
    payloadLength: number = payload.length - payloadOffset,
  ): boolean {
    checkU32(frameId, 'frameId');
    checkU32(sourceIndex, 'sourceIndex');
    checkU32(sourceGeneration, 'sourceGeneration');
    checkU32(sequence, 'sequence');
    checkU16(flags, 'flags');
    if (!(payload instanceof Uint8Array)) throw invalid('payload', 'a Uint8Array', payload);
    const s = typeof sourceName === 'string' ? sourceName.length : 0;
    const d = typeof destinationName === 'string' ? destinationName.length : 0;
    if (s === 0 || s > MAX_ENDPOINT_NAME_LENGTH) throw invalid('sourceName', NAME_EXPECTED, sourceName);
    if (d === 0 || d > MAX_ENDPOINT_NAME_LENGTH) throw invalid('destinationName', NAME_EXPECTED, destinationName);
    if (
      payloadOffset >>> 0 !== payloadOffset ||
      payloadLength >>> 0 !== payloadLength ||
      payloadOffset + payloadLength > payload.length
    ) {
      throw invalid('payloadOffset/payloadLength', `a range inside the payload's ${payload.length} bytes`, `${payloadOffset}+${payloadLength}`);
    }
    if (this.frames >= this.maxFrames) return false;
    const frameLength = DATA_FRAME_HEADER_LENGTH + s + d + payloadLength;
    const batchLength = this.end - this.base + frameLength;
    if (batchLength - MESSAGE_LENGTH_FIELD_LENGTH > this.maxMessageBytes) return false;
    if (this.base + batchLength > this.buf.length) {
      if (this.fixed) return false;
      this.moveBatch(batchLength);
    } else if (this.frames === 0 && !this.fixed && this.capacity < this.largestBatch) {
      this.moveBatch(batchLength); // start a batch where one as large as the largest so far fits
    }
    const buf = this.buf;
    const start = this.end;
    const names = start + DATA_FRAME_HEADER_LENGTH;
    writeName(buf, names, sourceName, 'sourceName');
    writeName(buf, names + s, destinationName, 'destinationName');
    buf.writeUInt32LE(frameId, start + DATA_FRAME_ID_OFFSET);
    buf.writeUInt32LE(sourceIndex, start + DATA_FRAME_SOURCE_INDEX_OFFSET);
    buf.writeUInt32LE(sourceGeneration, start + DATA_FRAME_SOURCE_GENERATION_OFFSET);
    buf.writeUInt32LE(sequence, start + DATA_FRAME_SEQUENCE_OFFSET);
    buf.writeUInt16LE(flags, start + DATA_FRAME_FLAGS_OFFSET);
    buf[start + DATA_FRAME_SOURCE_NAME_LENGTH_OFFSET] = s;
    buf[start + DATA_FRAME_DESTINATION_NAME_LENGTH_OFFSET] = d;
    buf.writeUInt32LE(payloadLength, start + DATA_FRAME_PAYLOAD_LENGTH_OFFSET);
    const at = names + s + d;
    if (payloadLength <= COPY_LOOP_MAX_BYTES) {
      for (let i = 0; i < payloadLength; i++) buf[at + i] = payload[payloadOffset + i]!;
    } else if (payloadOffset === 0 && payloadLength === payload.length) {
      buf.set(payload, at);
    } else {
      buf.set(payload.subarray(payloadOffset, payloadOffset + payloadLength), at);
    }
    this.frames++;
    this.end = start + frameLength;
    return true;
  }

  /**
   * The encoded DATA message of the frames appended since the last finish
   * (a view, not a copy), or null when there are none. Starts a new batch,
   * after this one in the writer's own buffer, at the start of a given one.
   */
  finish(): Buffer | null {
    if (this.frames === 0) return null;
    const buf = this.buf;
    const base = this.base;
    const length = this.end - base;
    buf.writeUInt32LE(length - MESSAGE_LENGTH_FIELD_LENGTH, base + MESSAGE_LENGTH_OFFSET);
    buf[base + MESSAGE_TYPE_OFFSET] = MSG_DATA;
    buf.writeUInt32LE(this.frames, base + DATA_FRAME_COUNT_OFFSET);
    const message = buf.subarray(base, this.end);
    if (length > this.largestBatch) this.largestBatch = length;
    if (!this.fixed) this.base = this.end;
    this.reset();
    return message;
  }

  /** Drop the frames of the current batch. */
  reset(): void {
    this.frames = 0;
    this.end = this.base + DATA_FRAMES_OFFSET;
  }

  /** Continue the current batch at the start of a new buffer where `needed` bytes fit (the finished messages stay in the old one). */
  private moveBatch(needed: number): void {
    const slab = Math.max(needed, this.slabBytes, Math.min(SLAB_BATCHES * this.largestBatch, MAX_SLAB_BYTES));
    const next = Buffer.allocUnsafe(slab);
    this.buf.copy(next, 0, this.base, Math.min(this.end, this.buf.length));
    this.end -= this.base;
    this.base = 0;
    this.buf = next;
  }
}

// ---------------------------------------------------------------------------
// Streaming decoder.
// ---------------------------------------------------------------------------

/** Options of {@link MessageDecoder}. */
export interface MessageDecoderOptions {
  /** Largest bodyLength accepted, default {@link DEFAULT_MAX_MESSAGE_BYTES}; larger is ERR_TOO_LARGE before any body byte is buffered. */
  maxMessageBytes?: number;
  /** Most frames accepted in one DATA (what this side announced in WELCOME), default {@link MAX_FRAMES_PER_MESSAGE}; more is ERR_TOO_LARGE. */
  maxFramesPerBatch?: number;
}

/**
 * Decodes a byte stream (socket chunks) into messages.
 *
 * `push` a chunk, then call `next` until it returns null (or use `feed`).
 * Messages split across chunks are reassembled with one copy; a message that
 * lies inside one chunk is decoded in place, so payloads, nonces and proofs
 * are views into the pushed chunks (do not modify a chunk after pushing it).
 *
 * Memory stays bounded: bodyLength is checked as soon as its 4 bytes arrive,
 * and `push` refuses a chunk while a complete message is still waiting, so
 * the decoder never holds more than one largest message plus one chunk.
 *
 * A protocol violation throws {@link ProtocolError} from `push` or `next`;
 * the decoder then stays failed and throws the same error on every call.
 */
export class MessageDecoder {
  private maxMessageBytes: number;
  private maxFramesPerBatch: number;
  /** Chunks not yet fully consumed: chunks[first] from `headOffset`, then the rest whole. */
  private chunks: (Buffer | undefined)[] = [];
  private first = 0;
  private headOffset = 0;
  private buffered = 0;
  /** bodyLength of the message at the head, or -1 while its length field is incomplete. */
  private bodyLength = -1;
  /** Stream offset of the message at the head. */
  private consumed = 0;
  private failure: ProtocolError | null = null;

  constructor(options: MessageDecoderOptions = {}) {
    const max = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    checkRange(max, MIN_MAX_MESSAGE_BYTES, MAX_MAX_MESSAGE_BYTES, 'maxMessageBytes');
    this.maxMessageBytes = max;
    this.maxFramesPerBatch = MAX_FRAMES_PER_MESSAGE;
    this.setMaxFramesPerBatch(options.maxFramesPerBatch ?? MAX_FRAMES_PER_MESSAGE);
  }

  /** Bytes held and not yet returned as messages. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Bytes consumed from the stream so far (the stream offset of the next message). */
  get streamOffset(): number {
    return this.consumed;
  }

  /**
   * Change the message size limit for messages whose length field has not
   * been read yet. Relays start a connection at {@link HANDSHAKE_MAX_MESSAGE_BYTES}
   * and raise it once the handshake is done, so an unauthenticated peer can
   * never make them buffer a large message.
   */
  setMaxMessageBytes(maxMessageBytes: number): void {
    checkRange(maxMessageBytes, MIN_MAX_MESSAGE_BYTES, MAX_MAX_MESSAGE_BYTES, 'maxMessageBytes');
    this.maxMessageBytes = maxMessageBytes;
  }

  /** Change the DATA frame limit (the acceptor sets what it announces in WELCOME). */
  setMaxFramesPerBatch(maxFramesPerBatch: number): void {
    checkRange(maxFramesPerBatch, 1, MAX_FRAMES_PER_MESSAGE, 'maxFramesPerBatch');
    this.maxFramesPerBatch = maxFramesPerBatch;
  }

  /** Add a chunk of the stream. Throws ProtocolError if a length field it completes is invalid. */
  push(chunk: Uint8Array): void {
    if (this.failure !== null) throw this.failure;
    if (!(chunk instanceof Uint8Array)) throw invalid('chunk', 'a Buffer', chunk);
    this.readLength();
    if (this.bodyLength >= 0 && this.buffered >= MESSAGE_LENGTH_FIELD_LENGTH + this.bodyLength) {
      throw new BusError('ERR_SHMBUS_INVALID_OPTION', 'MessageDecoder.push: a complete message is waiting; call next() until it returns null before pushing more');
    }
    if (chunk.length === 0) return;
    this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
    this.buffered += chunk.length;
    this.readLength();
  }

  /** The next complete message, or null when more bytes are needed. */
  next(): Message | null {
    if (this.failure !== null) throw this.failure;
    this.readLength();
    const total = MESSAGE_LENGTH_FIELD_LENGTH + this.bodyLength;
    if (this.bodyLength < 0 || this.buffered < total) return null;
    const message = this.take(total);
    const at = this.consumed;
    this.consumed += total;
    this.bodyLength = -1;
    try {
      return decodeMessage(message, this.maxFramesPerBatch, at);
    } catch (err) {
      if (err instanceof ProtocolError) this.failure = err;
      throw err;
    }
  }

  /** Push a chunk and hand every message it completes to `onMessage`. */
  feed(chunk: Uint8Array, onMessage: (message: Message) => void): void {
    this.push(chunk);
    for (let m = this.next(); m !== null; m = this.next()) onMessage(m);
  }

  /** Parse the head message's length field once its 4 bytes are buffered; reject 0 and oversize at once. */
  private readLength(): void {
    if (this.bodyLength >= 0 || this.buffered < MESSAGE_LENGTH_FIELD_LENGTH) return;
    const head = this.chunks[this.first]!;
    let length: number;
    if (head.length - this.headOffset >= MESSAGE_LENGTH_FIELD_LENGTH) {
      length = head.readUInt32LE(this.headOffset);
    } else {
      length = 0;
      let chunk = this.first;
      let offset = this.headOffset;
      for (let i = 0; i < MESSAGE_LENGTH_FIELD_LENGTH; i++) {
        while (offset >= this.chunks[chunk]!.length) {
          chunk++;
          offset = 0;
        }
        length += this.chunks[chunk]![offset++]! * 2 ** (8 * i);
      }
    }
    if (length === 0) {
      this.fail(ERR_MALFORMED, 'bodyLength 0 (a message has at least its type byte)', MESSAGE_LENGTH_OFFSET);
    }
    if (length > this.maxMessageBytes) {
      this.fail(ERR_TOO_LARGE, `bodyLength ${length} exceeds maxMessageBytes ${this.maxMessageBytes}`, MESSAGE_LENGTH_OFFSET);
    }
    this.bodyLength = length;
  }

  private fail(code: WireErrorCode, what: string, offset: number): never {
    this.failure = new ProtocolError(code, `${what} at offset ${offset} of the message at stream byte ${this.consumed}`, offset, this.consumed);
    throw this.failure;
  }

  /** Remove `n` buffered bytes from the head: a view when they lie in one chunk, else one copy. */
  private take(n: number): Buffer {
    const head = this.chunks[this.first]!;
    let out: Buffer;
    if (head.length - this.headOffset >= n) {
      out = head.subarray(this.headOffset, this.headOffset + n);
      this.headOffset += n;
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this.chunks[this.first]!;
        const count = Math.min(n - filled, chunk.length - this.headOffset);
        chunk.copy(out, filled, this.headOffset, this.headOffset + count);
        filled += count;
        this.headOffset += count;
        if (this.headOffset === chunk.length && filled < n) this.dropHead();
      }
    }
    if (this.headOffset === this.chunks[this.first]!.length) this.dropHead();
    this.buffered -= n;
    return out;
  }

  private dropHead(): void {
    this.chunks[this.first] = undefined;
    this.first++;
    this.headOffset = 0;
    if (this.first === this.chunks.length) {
      this.chunks.length = 0;
      this.first = 0;
    } else if (this.first >= 64 && this.first * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.first);
      this.first = 0;
    }
  }
}

/** Names seen recently, by hash: relays see the same few names over and over, so most decoded names are not new strings. */
const NAME_CACHE = new Map<number, string>();
/** Entries of {@link NAME_CACHE} before it is cleared. */
const NAME_CACHE_MAX_ENTRIES = 4096;

/** The string of the (validated, ASCII) name bytes `msg[offset, offset + n)` whose hash is `hash`. */
function internName(msg: Buffer, offset: number, n: number, hash: number): string {
  const cached = NAME_CACHE.get(hash);
  if (cached !== undefined && cached.length === n) {
    let i = 0;
    while (i < n && cached.charCodeAt(i) === msg[offset + i]) i++;
    if (i === n) return cached;
  }
  const name = msg.toString('latin1', offset, offset + n);
  if (NAME_CACHE.size >= NAME_CACHE_MAX_ENTRIES) NAME_CACHE.clear();
  NAME_CACHE.set(hash, name);
  return name;
}

/**
 * Decode one complete message (length field included, as the stream carries
 * it). `streamOffset` only labels errors. Throws {@link ProtocolError}.
 */
export function decodeMessage(msg: Buffer, maxFramesPerBatch: number = MAX_FRAMES_PER_MESSAGE, streamOffset = 0): Message {
  let typeName = 'a message';
  const fail = (code: WireErrorCode, what: string, offset: number): never => {
    throw new ProtocolError(code, `${what} at offset ${offset} of ${typeName} (stream byte ${streamOffset + offset})`, offset, streamOffset);
  };
  if (msg.length < MESSAGE_HEADER_LENGTH) fail(ERR_MALFORMED, `message of ${msg.length} bytes has no type`, MESSAGE_LENGTH_OFFSET);
  if (msg.readUInt32LE(MESSAGE_LENGTH_OFFSET) !== msg.length - MESSAGE_LENGTH_FIELD_LENGTH) {
    fail(ERR_MALFORMED, `bodyLength ${msg.readUInt32LE(MESSAGE_LENGTH_OFFSET)} does not match the ${msg.length - MESSAGE_LENGTH_FIELD_LENGTH} bytes given`, MESSAGE_LENGTH_OFFSET);
  }
  const type = msg[MESSAGE_TYPE_OFFSET]!;
  if (MESSAGE_TYPE_NAMES[type] === undefined) fail(ERR_MALFORMED, `unknown message type ${type}`, MESSAGE_TYPE_OFFSET);
  typeName = `a ${MESSAGE_TYPE_NAMES[type]} message`;
  const end = msg.length;

  /** Require the message to be at least `length` bytes (to read a field ending there). */
  const need = (length: number, field: string): void => {
    if (end < length) fail(ERR_MALFORMED, `message ends (${end} bytes) before ${field} (needs ${length})`, end);
  };
  const exact = (length: number): void => {
    if (end !== length) fail(ERR_MALFORMED, end < length ? `message ends (${end} bytes) before its last field (needs ${length})` : `${end - length} trailing bytes after the last field`, Math.min(end, length));
  };
  const name = (lengthOffset: number, max: number, field: string): number => {
    const n = msg[lengthOffset]!;
    if (n === 0 || n > max) fail(ERR_MALFORMED, `${field} length ${n} outside 1..${max}`, lengthOffset);
    return n;
  };
  const text = (offset: number, n: number, field: string): string => {
    let hash = n;
    for (let i = 0; i < n; i++) {
      const c = msg[offset + i]!;
      if (NAME_BYTE_ALLOWED[c] === 0) fail(ERR_MALFORMED, `${field} byte 0x${c.toString(16).padStart(2, '0')} outside A-Z a-z 0-9 _ . @ -`, offset + i);
      hash = (Math.imul(hash, 31) + c) | 0;
    }
    return internName(msg, offset, n, hash);
  };

  switch (type) {
    case MSG_HELLO: {
      need(HELLO_MAGIC_OFFSET + 4, 'magic');
      const magic = msg.readUInt32LE(HELLO_MAGIC_OFFSET);
      if (magic !== MAGIC) fail(ERR_BAD_MAGIC, `magic 0x${magic.toString(16).padStart(8, '0')} is not 0x${MAGIC.toString(16)}`, HELLO_MAGIC_OFFSET);
      need(HELLO_VERSION_OFFSET + 2, 'protocolVersion');
      const version = msg.readUInt16LE(HELLO_VERSION_OFFSET);
      if (version !== PROTOCOL_VERSION) fail(ERR_BAD_VERSION, `protocolVersion ${version}; this side speaks ${PROTOCOL_VERSION}`, HELLO_VERSION_OFFSET);
      need(HELLO_HOST_NAME_OFFSET, 'hostNameLength');
      const n = name(HELLO_HOST_NAME_LENGTH_OFFSET, MAX_HOST_NAME_LENGTH, 'hostName');
      exact(HELLO_HOST_NAME_OFFSET + n);
      return {
        type: MSG_HELLO,
        flags: msg.readUInt16LE(HELLO_FLAGS_OFFSET),
        nonce: msg.subarray(HELLO_NONCE_OFFSET, HELLO_NONCE_OFFSET + NONCE_LENGTH),
        hostName: text(HELLO_HOST_NAME_OFFSET, n, 'hostName'),
      };
    }
    case MSG_CHALLENGE: {
      need(CHALLENGE_HOST_NAME_OFFSET, 'hostNameLength');
      const n = name(CHALLENGE_HOST_NAME_LENGTH_OFFSET, MAX_HOST_NAME_LENGTH, 'hostName');
      const proofOffset = CHALLENGE_HOST_NAME_OFFSET + n;
      exact(proofOffset + PROOF_LENGTH);
      return {
        type: MSG_CHALLENGE,
        nonce: msg.subarray(CHALLENGE_NONCE_OFFSET, CHALLENGE_NONCE_OFFSET + NONCE_LENGTH),
        hostName: text(CHALLENGE_HOST_NAME_OFFSET, n, 'hostName'),
        proof: msg.subarray(proofOffset, proofOffset + PROOF_LENGTH),
      };
    }
    case MSG_PROOF:
      exact(PROOF_MESSAGE_LENGTH);
      return { type: MSG_PROOF, proof: msg.subarray(PROOF_PROOF_OFFSET, PROOF_PROOF_OFFSET + PROOF_LENGTH) };
    case MSG_WELCOME: {
      exact(WELCOME_MESSAGE_LENGTH);
      const maxFrames = msg.readUInt32LE(WELCOME_MAX_FRAMES_OFFSET);
      if (maxFrames === 0 || maxFrames > MAX_FRAMES_PER_MESSAGE) fail(ERR_MALFORMED, `maxFramesPerBatch ${maxFrames} outside 1..${MAX_FRAMES_PER_MESSAGE}`, WELCOME_MAX_FRAMES_OFFSET);
      return { type: MSG_WELCOME, bootId: msg.readUInt32LE(WELCOME_BOOT_ID_OFFSET), maxFramesPerBatch: maxFrames };
    }
    case MSG_DATA: {
      need(DATA_FRAMES_OFFSET, 'frameCount');
      const count = msg.readUInt32LE(DATA_FRAME_COUNT_OFFSET);
      if (count === 0 || count > MAX_FRAMES_PER_MESSAGE) fail(ERR_MALFORMED, `frameCount ${count} outside 1..${MAX_FRAMES_PER_MESSAGE}`, DATA_FRAME_COUNT_OFFSET);
      if (count > maxFramesPerBatch) fail(ERR_TOO_LARGE, `frameCount ${count} exceeds maxFramesPerBatch ${maxFramesPerBatch}`, DATA_FRAME_COUNT_OFFSET);
      const frames: DataFrame[] = [];
      let at = DATA_FRAMES_OFFSET;
      for (let i = 0; i < count; i++) {
        if (at + DATA_FRAME_HEADER_LENGTH > end) fail(ERR_MALFORMED, `frame ${i} of ${count}: header overruns the message (${end} bytes)`, at);
        const s = name(at + DATA_FRAME_SOURCE_NAME_LENGTH_OFFSET, MAX_ENDPOINT_NAME_LENGTH, `frame ${i}: sourceName`);
        const d = name(at + DATA_FRAME_DESTINATION_NAME_LENGTH_OFFSET, MAX_ENDPOINT_NAME_LENGTH, `frame ${i}: destinationName`);
        const p = msg.readUInt32LE(at + DATA_FRAME_PAYLOAD_LENGTH_OFFSET);
        const names = at + DATA_FRAME_HEADER_LENGTH;
        const payload = names + s + d;
        if (payload + p > end) fail(ERR_MALFORMED, `frame ${i} of ${count}: names and payloadLength ${p} overrun the message (${end} bytes)`, at + DATA_FRAME_PAYLOAD_LENGTH_OFFSET);
        frames.push({
          frameId: msg.readUInt32LE(at + DATA_FRAME_ID_OFFSET),
          sourceIndex: msg.readUInt32LE(at + DATA_FRAME_SOURCE_INDEX_OFFSET),
          sourceGeneration: msg.readUInt32LE(at + DATA_FRAME_SOURCE_GENERATION_OFFSET),
          sequence: msg.readUInt32LE(at + DATA_FRAME_SEQUENCE_OFFSET),
          flags: msg.readUInt16LE(at + DATA_FRAME_FLAGS_OFFSET),
          sourceName: text(names, s, `frame ${i}: sourceName`),
          destinationName: text(names + s, d, `frame ${i}: destinationName`),
          payload: msg.subarray(payload, payload + p),
        });
        at = payload + p;
      }
      if (at !== end) fail(ERR_MALFORMED, `${end - at} trailing bytes after frame ${count - 1}`, at);
      return { type: MSG_DATA, frames };
    }
    case MSG_ACK: {
      need(ACK_ENTRIES_OFFSET, 'count');
      const count = msg.readUInt32LE(ACK_COUNT_OFFSET);
      if (count === 0 || count > MAX_ACK_ENTRIES) fail(ERR_MALFORMED, `count ${count} outside 1..${MAX_ACK_ENTRIES}`, ACK_COUNT_OFFSET);
      exact(ACK_ENTRIES_OFFSET + count * ACK_ENTRY_LENGTH);
      const entries: AckEntry[] = [];
      for (let i = 0, at = ACK_ENTRIES_OFFSET; i < count; i++, at += ACK_ENTRY_LENGTH) {
        const status = msg[at + ACK_ENTRY_STATUS_OFFSET]!;
        if (!isAckStatus(status)) fail(ERR_MALFORMED, `entry ${i}: unknown status ${status}`, at + ACK_ENTRY_STATUS_OFFSET);
        entries.push({ frameId: msg.readUInt32LE(at + ACK_ENTRY_FRAME_ID_OFFSET), status: status as AckStatus });
      }
      return { type: MSG_ACK, entries };
    }
    default: {
      // MSG_ERROR (the type was checked above).
      need(ERROR_TEXT_OFFSET, 'messageLength');
      const t = msg.readUInt16LE(ERROR_TEXT_LENGTH_OFFSET);
      exact(ERROR_TEXT_OFFSET + t);
      return { type: MSG_ERROR, code: msg.readUInt16LE(ERROR_CODE_OFFSET), message: msg.toString('utf8', ERROR_TEXT_OFFSET, ERROR_TEXT_OFFSET + t) };
    }
  }
}

// ---------------------------------------------------------------------------
// Handshake.
// ---------------------------------------------------------------------------

/** The HMAC input of a proof: label || first nonce || second nonce || u8 len || connectorName || u8 len || acceptorName. */
function proofInput(label: string, first: Uint8Array, second: Uint8Array, connectorName: string, acceptorName: string): Buffer {
  checkBytes(first, NONCE_LENGTH, 'nonce');
  checkBytes(second, NONCE_LENGTH, 'nonce');
  checkName(connectorName, 'connectorName');
  checkName(acceptorName, 'acceptorName');
  const input = Buffer.alloc(label.length + 2 * NONCE_LENGTH + 2 + connectorName.length + acceptorName.length);
  let at = input.write(label, 0, 'latin1');
  input.set(first, at);
  at += NONCE_LENGTH;
  input.set(second, at);
  at += NONCE_LENGTH;
  input[at++] = connectorName.length;
  at += input.write(connectorName, at, 'latin1');
  input[at++] = acceptorName.length;
  input.write(acceptorName, at, 'latin1');
  return input;
}

function hmac(secret: Uint8Array | string, input: Buffer): Buffer {
  if (typeof secret === 'string' ? secret.length === 0 : !(secret instanceof Uint8Array) || secret.length === 0) {
    throw invalid('secret', 'a non-empty string or Uint8Array', typeof secret === 'string' ? '""' : secret);
  }
  return createHmac('sha256', secret).update(input).digest();
}

/**
 * proofA = HMAC-SHA256(secret, "shmbus-relay-v1 acceptor" || nonceC || nonceA
 * || u8 len || connectorName || u8 len || acceptorName). A string secret is
 * used as its UTF-8 bytes.
 */
export function acceptorProof(secret: Uint8Array | string, nonceC: Uint8Array, nonceA: Uint8Array, connectorName: string, acceptorName: string): Buffer {
  return hmac(secret, proofInput(ACCEPTOR_PROOF_LABEL, nonceC, nonceA, connectorName, acceptorName));
}

/**
 * proofC = HMAC-SHA256(secret, "shmbus-relay-v1 connector" || nonceA || nonceC
 * || u8 len || connectorName || u8 len || acceptorName). Note the nonce order
 * is the reverse of {@link acceptorProof}'s.
 */
export function connectorProof(secret: Uint8Array | string, nonceC: Uint8Array, nonceA: Uint8Array, connectorName: string, acceptorName: string): Buffer {
  return hmac(secret, proofInput(CONNECTOR_PROOF_LABEL, nonceA, nonceC, connectorName, acceptorName));
}

/** True if `got` equals `expected`: both {@link PROOF_LENGTH} bytes, compared in constant time. */
export function verifyProof(expected: Uint8Array, got: Uint8Array): boolean {
  if (!(expected instanceof Uint8Array) || !(got instanceof Uint8Array)) return false;
  if (expected.length !== PROOF_LENGTH || got.length !== PROOF_LENGTH) return false;
  return timingSafeEqual(expected, got);
}

/** A fresh random nonce ({@link NONCE_LENGTH} bytes) for HELLO or CHALLENGE. */
export function newNonce(): Buffer {
  return randomBytes(NONCE_LENGTH);
}

/**
 * Serial-number order of u32 sequence numbers (RFC 1982): true if `a` comes
 * after `b`, i.e. (a - b) mod 2^32 is in [1, 2^31). Used by the receiving
 * relay's duplicate check.
 */
export function isSequenceAfter(a: number, b: number): boolean {
  const d = (a - b) >>> 0;
  return d !== 0 && d < 0x80000000;
}
