/**
 * Decoding one complete relay message (docs/PROTOCOL.md): every rule of the
 * format checked, a violation thrown as ProtocolError with the offset of the
 * fault. DATA and ACK are checked but not turned into objects per frame:
 * inbound.ts and outbound.ts walk their bytes with codec.ts's offsets.
 */
import {
  ACK_COUNT_OFFSET,
  ACK_ENTRIES_OFFSET,
  ACK_ENTRY_LENGTH,
  ACK_ENTRY_STATUS_OFFSET,
  ACK_ENTRY_STREAM_OFFSET,
  CHALLENGE_HOST_NAME_LENGTH_OFFSET,
  CHALLENGE_HOST_NAME_OFFSET,
  CHALLENGE_NONCE_OFFSET,
  DATA_FRAME_COUNT_OFFSET,
  DATA_RUNS_OFFSET,
  ERROR_CODE_OFFSET,
  ERROR_TEXT_LENGTH_OFFSET,
  ERROR_TEXT_OFFSET,
  ERR_BAD_MAGIC,
  ERR_BAD_VERSION,
  ERR_MALFORMED,
  ERR_TOO_LARGE,
  FRAME_HEADER_LENGTH,
  FRAME_PAYLOAD_LENGTH_OFFSET,
  HELLO_FLAGS_OFFSET,
  HELLO_HOST_NAME_LENGTH_OFFSET,
  HELLO_HOST_NAME_OFFSET,
  HELLO_MAGIC_OFFSET,
  HELLO_NONCE_OFFSET,
  HELLO_VERSION_OFFSET,
  MAGIC,
  MAX_ACK_ENTRIES,
  MAX_ENDPOINT_NAME_LENGTH,
  MAX_FRAMES_PER_MESSAGE,
  MAX_HOST_NAME_LENGTH,
  MAX_STREAMS,
  MESSAGE_HEADER_LENGTH,
  MESSAGE_LENGTH_FIELD_LENGTH,
  MESSAGE_LENGTH_OFFSET,
  MESSAGE_TYPE_NAMES,
  MESSAGE_TYPE_OFFSET,
  MSG_ACK,
  MSG_CHALLENGE,
  MSG_DATA,
  MSG_ERROR,
  MSG_HELLO,
  MSG_PROOF,
  MSG_STREAM,
  MSG_WELCOME,
  NONCE_LENGTH,
  PROOF_LENGTH,
  PROOF_MESSAGE_LENGTH,
  PROOF_PROOF_OFFSET,
  PROTOCOL_VERSION,
  ProtocolError,
  RUN_FRAME_COUNT_OFFSET,
  RUN_HEADER_LENGTH,
  RUN_STREAM_OFFSET,
  STREAM_DESTINATION_NAME_LENGTH_OFFSET,
  STREAM_ID_OFFSET,
  STREAM_NAMES_OFFSET,
  STREAM_SOURCE_GENERATION_OFFSET,
  STREAM_SOURCE_INDEX_OFFSET,
  STREAM_SOURCE_NAME_LENGTH_OFFSET,
  WELCOME_BOOT_ID_OFFSET,
  WELCOME_MAX_FRAMES_OFFSET,
  WELCOME_MESSAGE_LENGTH,
  isAckStatus,
  type Message,
  type WireErrorCode,
} from './codec';

/** 1 for each byte allowed in a wire name, 0 otherwise. */
const NAME_BYTE_ALLOWED = (() => {
  const table = new Uint8Array(256);
  for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.@-') table[c.charCodeAt(0)] = 1;
  return table;
})();

/** Names seen recently, by hash (relays see the same few names over and over). */
const NAME_CACHE = new Map<number, string>();
const NAME_CACHE_MAX_ENTRIES = 4096;

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
 * Decode one complete message (length field included). `streamOffset` only
 * labels errors. Throws {@link ProtocolError} (with the offset of the fault).
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
  const need = (length: number, field: string): void => {
    if (end < length) fail(ERR_MALFORMED, `message ends (${end} bytes) before ${field} (needs ${length})`, end);
  };
  const exact = (length: number): void => {
    if (end !== length) fail(ERR_MALFORMED, end < length ? `message ends (${end} bytes) before its last field (needs ${length})` : `${end - length} trailing bytes after the last field`, Math.min(end, length));
  };
  const nameLength = (lengthOffset: number, max: number, field: string): number => {
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
      const n = nameLength(HELLO_HOST_NAME_LENGTH_OFFSET, MAX_HOST_NAME_LENGTH, 'hostName');
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
      const n = nameLength(CHALLENGE_HOST_NAME_LENGTH_OFFSET, MAX_HOST_NAME_LENGTH, 'hostName');
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
    case MSG_STREAM: {
      need(STREAM_NAMES_OFFSET, 'destinationNameLength');
      const streamId = msg.readUInt32LE(STREAM_ID_OFFSET);
      if (streamId >= MAX_STREAMS) fail(ERR_MALFORMED, `streamId ${streamId} outside 0..${MAX_STREAMS - 1}`, STREAM_ID_OFFSET);
      const s = nameLength(STREAM_SOURCE_NAME_LENGTH_OFFSET, MAX_ENDPOINT_NAME_LENGTH, 'sourceName');
      const d = nameLength(STREAM_DESTINATION_NAME_LENGTH_OFFSET, MAX_ENDPOINT_NAME_LENGTH, 'destinationName');
      exact(STREAM_NAMES_OFFSET + s + d);
      return {
        type: MSG_STREAM,
        streamId,
        sourceIndex: msg.readUInt32LE(STREAM_SOURCE_INDEX_OFFSET),
        sourceGeneration: msg.readUInt32LE(STREAM_SOURCE_GENERATION_OFFSET),
        sourceName: text(STREAM_NAMES_OFFSET, s, 'sourceName'),
        destinationName: text(STREAM_NAMES_OFFSET + s, d, 'destinationName'),
      };
    }
    case MSG_DATA: {
      need(DATA_RUNS_OFFSET, 'frameCount');
      const count = msg.readUInt32LE(DATA_FRAME_COUNT_OFFSET);
      if (count === 0 || count > MAX_FRAMES_PER_MESSAGE) fail(ERR_MALFORMED, `frameCount ${count} outside 1..${MAX_FRAMES_PER_MESSAGE}`, DATA_FRAME_COUNT_OFFSET);
      if (count > maxFramesPerBatch) fail(ERR_TOO_LARGE, `frameCount ${count} exceeds maxFramesPerBatch ${maxFramesPerBatch}`, DATA_FRAME_COUNT_OFFSET);
      let at = DATA_RUNS_OFFSET;
      let frames = 0;
      while (at < end) {
        if (at + RUN_HEADER_LENGTH > end) fail(ERR_MALFORMED, `run header overruns the message (${end} bytes)`, at);
        const streamId = msg.readUInt32LE(at + RUN_STREAM_OFFSET);
        if (streamId >= MAX_STREAMS) fail(ERR_MALFORMED, `run streamId ${streamId} outside 0..${MAX_STREAMS - 1}`, at + RUN_STREAM_OFFSET);
        const n = msg.readUInt32LE(at + RUN_FRAME_COUNT_OFFSET);
        if (n === 0 || n > count - frames) fail(ERR_MALFORMED, `run of ${n} frames (${count - frames} of frameCount ${count} left)`, at + RUN_FRAME_COUNT_OFFSET);
        at += RUN_HEADER_LENGTH;
        for (let i = 0; i < n; i++) {
          if (at + FRAME_HEADER_LENGTH > end) fail(ERR_MALFORMED, `frame ${frames + i} of ${count}: header overruns the message (${end} bytes)`, at);
          const p = msg.readUInt32LE(at + FRAME_PAYLOAD_LENGTH_OFFSET);
          if (at + FRAME_HEADER_LENGTH + p > end) fail(ERR_MALFORMED, `frame ${frames + i} of ${count}: payloadLength ${p} overruns the message (${end} bytes)`, at + FRAME_PAYLOAD_LENGTH_OFFSET);
          at += FRAME_HEADER_LENGTH + p;
        }
        frames += n;
      }
      if (frames !== count) fail(ERR_MALFORMED, `runs hold ${frames} frames, frameCount says ${count}`, DATA_FRAME_COUNT_OFFSET);
      return { type: MSG_DATA, bytes: msg, frameCount: count };
    }
    case MSG_ACK: {
      need(ACK_ENTRIES_OFFSET, 'count');
      const count = msg.readUInt32LE(ACK_COUNT_OFFSET);
      if (count === 0 || count > MAX_ACK_ENTRIES) fail(ERR_MALFORMED, `count ${count} outside 1..${MAX_ACK_ENTRIES}`, ACK_COUNT_OFFSET);
      exact(ACK_ENTRIES_OFFSET + count * ACK_ENTRY_LENGTH);
      for (let i = 0, at = ACK_ENTRIES_OFFSET; i < count; i++, at += ACK_ENTRY_LENGTH) {
        if (msg.readUInt32LE(at + ACK_ENTRY_STREAM_OFFSET) >= MAX_STREAMS) fail(ERR_MALFORMED, `entry ${i}: streamId outside 0..${MAX_STREAMS - 1}`, at + ACK_ENTRY_STREAM_OFFSET);
        if (!isAckStatus(msg[at + ACK_ENTRY_STATUS_OFFSET])) fail(ERR_MALFORMED, `entry ${i}: unknown status ${msg[at + ACK_ENTRY_STATUS_OFFSET]}`, at + ACK_ENTRY_STATUS_OFFSET);
      }
      return { type: MSG_ACK, bytes: msg, count };
    }
    default: {
      need(ERROR_TEXT_OFFSET, 'messageLength');
      const t = msg.readUInt16LE(ERROR_TEXT_LENGTH_OFFSET);
      exact(ERROR_TEXT_OFFSET + t);
      return { type: MSG_ERROR, code: msg.readUInt16LE(ERROR_CODE_OFFSET), message: msg.toString('utf8', ERROR_TEXT_OFFSET, ERROR_TEXT_OFFSET + t) };
    }
  }
}

