import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as P from '../relay/protocol';
import {
  ACK_DELIVERED,
  ACK_DUPLICATE,
  ACK_EXPIRED,
  ACK_STATUS_TABLE,
  ACK_TOO_LARGE,
  ACK_UNKNOWN_DESTINATION,
  DATA_FRAMES_OFFSET,
  DATA_FRAME_HEADER_LENGTH,
  DataBatchWriter,
  DEFAULT_MAX_MESSAGE_BYTES,
  ERR_BAD_MAGIC,
  ERR_BAD_VERSION,
  ERR_MALFORMED,
  ERR_SHUTTING_DOWN,
  ERR_TOO_LARGE,
  ERR_UNEXPECTED,
  HELLO_MAGIC_OFFSET,
  HELLO_VERSION_OFFSET,
  MAX_FRAMES_PER_MESSAGE,
  MAX_ERROR_TEXT_SENT_LENGTH,
  MESSAGE_HEADER_LENGTH,
  MESSAGE_TYPE_NAMES,
  MSG_ACK,
  MSG_CHALLENGE,
  MSG_DATA,
  MSG_ERROR,
  MSG_HELLO,
  MSG_PROOF,
  MSG_WELCOME,
  MessageDecoder,
  ProtocolError,
  WIRE_ERROR_TABLE,
  acceptorProof,
  connectorProof,
  decodeMessage,
  encodeAck,
  encodeChallenge,
  encodeError,
  encodeHello,
  encodeProof,
  encodeWelcome,
  isSequenceAfter,
  newNonce,
  verifyProof,
  type DataMessage,
  type Message,
  type WireErrorCode,
} from '../relay/protocol';
import { isBusError } from '../src/errors';
import { seededRandom } from './_helpers';

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

const nonceC = Buffer.alloc(32, 0xc1);
const nonceA = Buffer.alloc(32, 0xa7);
const proof32 = Buffer.alloc(32, 0x5e);

interface FrameSpec {
  frameId: number;
  sourceIndex: number;
  sourceGeneration: number;
  sequence: number;
  flags: number;
  sourceName: string;
  destinationName: string;
  payload: Buffer;
}

function frame(i: number, payload: Buffer = Buffer.from(`payload ${i}`)): FrameSpec {
  return {
    frameId: (i * 2654435761) >>> 0,
    sourceIndex: i,
    sourceGeneration: i + 1,
    sequence: (0xfffffff0 + i) >>> 0,
    flags: i & 0xffff,
    sourceName: `src-${i}`,
    destinationName: i % 2 === 0 ? '@relay' : `dst.${i}`,
    payload,
  };
}

function encodeData(frames: FrameSpec[], writer = new DataBatchWriter()): Buffer {
  for (const f of frames) {
    assert.ok(writer.append(f.frameId, f.sourceIndex, f.sourceGeneration, f.sequence, f.flags, f.sourceName, f.destinationName, f.payload));
  }
  return Buffer.from(writer.finish()!);
}

/** Normalise a decoded message for deep comparison (Buffers as hex). */
function plain(m: Message): unknown {
  return JSON.parse(JSON.stringify(m, (_k, v: unknown) => (v !== null && typeof v === 'object' && (v as { type?: string }).type === 'Buffer' ? Buffer.from((v as { data: number[] }).data).toString('hex') : v)));
}

/** Push `chunks` one by one, draining after each; returns the messages. */
function decodeChunks(chunks: Buffer[], decoder = new MessageDecoder()): Message[] {
  const out: Message[] = [];
  for (const c of chunks) decoder.feed(c, (m) => out.push(m));
  return out;
}

function decodeOne(bytes: Buffer, options?: P.MessageDecoderOptions): Message {
  const messages = decodeChunks([bytes], new MessageDecoder(options));
  assert.is(messages.length, 1);
  return messages[0]!;
}

/** Assert that decoding `bytes` throws a ProtocolError with `wireCode`; returns it. */
function rejects(bytes: Buffer, wireCode: WireErrorCode, options?: P.MessageDecoderOptions): ProtocolError {
  const decoder = new MessageDecoder(options);
  try {
    decoder.feed(bytes, () => undefined);
  } catch (err) {
    assert.instance(err, ProtocolError);
    const e = err as ProtocolError;
    assert.is(e.wireCode, wireCode, `wireCode ${e.wireCode} (${e.message}), expected ${wireCode}`);
    return e;
  }
  assert.unreachable(`no ProtocolError for ${bytes.toString('hex')}`);
  throw new Error('unreachable');
}

/** A copy of `msg` with `bytes` written at `offset`. */
function patch(msg: Buffer, offset: number, bytes: number[]): Buffer {
  const copy = Buffer.from(msg);
  Buffer.from(bytes).copy(copy, offset);
  return copy;
}

/** `msg` with its body grown or cut to `bodyLength`, the length field updated to match. */
function resize(msg: Buffer, bodyLength: number): Buffer {
  const copy = Buffer.alloc(4 + bodyLength);
  msg.copy(copy, 0, 0, Math.min(msg.length, copy.length));
  copy.writeUInt32LE(bodyLength, 0);
  return copy;
}

function u32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24];
}

/** One message of every type, in handshake order, then DATA, ACK, ERROR. */
function everyMessage(): Buffer[] {
  return [
    encodeHello(nonceC, 'alpha'),
    encodeChallenge(nonceA, 'beta', proof32),
    encodeProof(proof32),
    encodeWelcome(0xdeadbeef, 512),
    encodeData([frame(0), frame(1, Buffer.alloc(0)), frame(2, Buffer.alloc(300, 7))]),
    encodeAck([
      { frameId: 1, status: ACK_DELIVERED },
      { frameId: 0xffffffff, status: ACK_TOO_LARGE },
    ]),
    encodeError(ERR_SHUTTING_DOWN, 'bye'),
  ];
}

// ---------------------------------------------------------------------------

const constants = suite('protocol constants');

constants('the magic reads "SHBR" as little-endian bytes', () => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(P.MAGIC);
  assert.is(b.toString('latin1'), 'SHBR');
  assert.is(P.PROTOCOL_VERSION, 1);
});

constants('types, statuses and codes have the numbers of the design', () => {
  assert.equal([MSG_HELLO, MSG_CHALLENGE, MSG_PROOF, MSG_WELCOME, MSG_DATA, MSG_ACK, MSG_ERROR], [1, 2, 3, 4, 5, 6, 7]);
  assert.equal([ACK_DELIVERED, ACK_DUPLICATE, ACK_UNKNOWN_DESTINATION, ACK_EXPIRED, ACK_TOO_LARGE], [0, 1, 2, 3, 4]);
  assert.equal(Object.keys(WIRE_ERROR_TABLE).map(Number), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(Object.values(WIRE_ERROR_TABLE).map((e) => e.name), ['BAD_MAGIC', 'BAD_VERSION', 'UNKNOWN_HOST', 'AUTH_FAILED', 'MALFORMED', 'TOO_LARGE', 'UNEXPECTED', 'SHUTTING_DOWN']);
  assert.is(DATA_FRAME_HEADER_LENGTH, 24);
  assert.is(P.NONCE_LENGTH, 32);
  assert.is(P.PROOF_LENGTH, 32);
  assert.is(P.MAX_HOST_NAME_LENGTH, 64);
  assert.is(P.MAX_ENDPOINT_NAME_LENGTH, 64);
  assert.is(DEFAULT_MAX_MESSAGE_BYTES, 16 * 1024 * 1024);
});

constants('offsets follow each other field by field', () => {
  assert.is(P.MESSAGE_HEADER_LENGTH, P.MESSAGE_LENGTH_FIELD_LENGTH + 1);
  assert.is(P.HELLO_MAGIC_OFFSET, MESSAGE_HEADER_LENGTH);
  assert.is(P.HELLO_VERSION_OFFSET, P.HELLO_MAGIC_OFFSET + 4);
  assert.is(P.HELLO_FLAGS_OFFSET, P.HELLO_VERSION_OFFSET + 2);
  assert.is(P.HELLO_NONCE_OFFSET, P.HELLO_FLAGS_OFFSET + 2);
  assert.is(P.HELLO_HOST_NAME_LENGTH_OFFSET, P.HELLO_NONCE_OFFSET + P.NONCE_LENGTH);
  assert.is(P.HELLO_HOST_NAME_OFFSET, P.HELLO_HOST_NAME_LENGTH_OFFSET + 1);
  assert.is(P.CHALLENGE_HOST_NAME_LENGTH_OFFSET, P.CHALLENGE_NONCE_OFFSET + P.NONCE_LENGTH);
  assert.is(P.CHALLENGE_HOST_NAME_OFFSET, P.CHALLENGE_HOST_NAME_LENGTH_OFFSET + 1);
  assert.is(P.PROOF_MESSAGE_LENGTH, P.PROOF_PROOF_OFFSET + P.PROOF_LENGTH);
  assert.is(P.WELCOME_MAX_FRAMES_OFFSET, P.WELCOME_BOOT_ID_OFFSET + 4);
  assert.is(P.WELCOME_MESSAGE_LENGTH, P.WELCOME_MAX_FRAMES_OFFSET + 4);
  assert.is(P.DATA_FRAMES_OFFSET, P.DATA_FRAME_COUNT_OFFSET + 4);
  assert.is(P.DATA_FRAME_HEADER_LENGTH, P.DATA_FRAME_PAYLOAD_LENGTH_OFFSET + 4);
  assert.is(P.ACK_ENTRY_LENGTH, P.ACK_ENTRY_STATUS_OFFSET + 1);
  assert.is(P.ERROR_TEXT_OFFSET, P.ERROR_TEXT_LENGTH_OFFSET + 2);
});

constants.run();

// ---------------------------------------------------------------------------

const roundTrip = suite('protocol round trip');

roundTrip('HELLO', () => {
  const m = decodeOne(encodeHello(nonceC, 'alpha'));
  assert.equal(plain(m), { type: MSG_HELLO, flags: 0, nonce: nonceC.toString('hex'), hostName: 'alpha' });
});

roundTrip('CHALLENGE, with a 64-character host name', () => {
  const name = 'h'.repeat(64);
  const m = decodeOne(encodeChallenge(nonceA, name, proof32));
  assert.equal(plain(m), { type: MSG_CHALLENGE, nonce: nonceA.toString('hex'), hostName: name, proof: proof32.toString('hex') });
});

roundTrip('PROOF', () => {
  assert.equal(plain(decodeOne(encodeProof(proof32))), { type: MSG_PROOF, proof: proof32.toString('hex') });
});

roundTrip('WELCOME', () => {
  assert.equal(decodeOne(encodeWelcome(0xffffffff, MAX_FRAMES_PER_MESSAGE)), { type: MSG_WELCOME, bootId: 0xffffffff, maxFramesPerBatch: 65535 });
  assert.equal(decodeOne(encodeWelcome(0, 1)), { type: MSG_WELCOME, bootId: 0, maxFramesPerBatch: 1 });
});

roundTrip('ACK with every status', () => {
  const entries = Object.keys(ACK_STATUS_TABLE).map((s, i) => ({ frameId: i * 1000, status: Number(s) as P.AckStatus }));
  assert.equal(decodeOne(encodeAck(entries)), { type: MSG_ACK, entries });
});

roundTrip('ERROR, with a code this version does not know', () => {
  assert.equal(decodeOne(encodeError(ERR_UNEXPECTED, 'HELLO in state OPEN — ünïcode')), { type: MSG_ERROR, code: 7, message: 'HELLO in state OPEN — ünïcode' });
  assert.equal(decodeOne(encodeError(999, '')), { type: MSG_ERROR, code: 999, message: '' });
});

roundTrip('ERROR text is cut at a character boundary', () => {
  const long = '€'.repeat(200); // 3 bytes each: 600 bytes
  const m = decodeOne(encodeError(ERR_MALFORMED, long)) as P.ErrorMessage;
  assert.ok(Buffer.byteLength(m.message) <= MAX_ERROR_TEXT_SENT_LENGTH);
  assert.is(m.message, '€'.repeat(Math.floor(MAX_ERROR_TEXT_SENT_LENGTH / 3)));
});

roundTrip('DATA with 0-byte and small payloads, every field', () => {
  const frames = [frame(0, Buffer.alloc(0)), frame(1), frame(2, Buffer.alloc(49, 0xab))];
  const m = decodeOne(encodeData(frames)) as DataMessage;
  assert.is(m.type, MSG_DATA);
  assert.equal(
    m.frames.map((f) => ({ ...f, payload: f.payload.toString('hex') })),
    frames.map((f) => ({ ...f, payload: f.payload.toString('hex') })),
  );
});

roundTrip('DATA with the largest payload the limit allows', () => {
  const max = DEFAULT_MAX_MESSAGE_BYTES - 1 - 4 - DATA_FRAME_HEADER_LENGTH - 2 - 2;
  const payload = Buffer.alloc(max);
  payload.writeUInt32LE(0x01020304, 0);
  payload.writeUInt32LE(0x05060708, max - 4);
  const writer = new DataBatchWriter();
  assert.not.ok(writer.append(1, 0, 0, 0, 0, 'a1', 'b1', Buffer.alloc(max + 1)), 'one byte more never fits');
  assert.is(writer.count, 0);
  assert.ok(writer.append(1, 0, 0, 0, 0, 'a1', 'b1', payload));
  const msg = writer.finish()!;
  assert.is(msg.readUInt32LE(0), DEFAULT_MAX_MESSAGE_BYTES);
  const m = decodeOne(msg) as DataMessage;
  assert.is(m.frames[0]!.payload.length, max);
  assert.ok(m.frames[0]!.payload.equals(payload));
});

roundTrip('DATA with 65535 frames', () => {
  const writer = new DataBatchWriter();
  for (let i = 0; i < MAX_FRAMES_PER_MESSAGE; i++) assert.ok(writer.append(i, i, 1, i, 0, 'a', 'b', Buffer.from([i & 0xff])));
  assert.not.ok(writer.append(65535, 0, 1, 0, 0, 'a', 'b', Buffer.alloc(1)), 'frame 65536 is refused');
  const m = decodeOne(writer.finish()!) as DataMessage;
  assert.is(m.frames.length, MAX_FRAMES_PER_MESSAGE);
  for (const i of [0, 1, 255, 256, 40000, 65534]) {
    const f = m.frames[i]!;
    assert.equal([f.frameId, f.sourceIndex, f.sequence, f.payload[0]], [i, i, i, i & 0xff]);
  }
});

roundTrip('DATA copies a payload range out of a shared buffer', () => {
  const shared = new Uint8Array(new SharedArrayBuffer(4096));
  for (let i = 0; i < shared.length; i++) shared[i] = i & 0xff;
  const writer = new DataBatchWriter();
  assert.ok(writer.append(1, 0, 0, 0, 0, 'a', 'b', shared, 100, 20)); // copied by the byte loop
  assert.ok(writer.append(2, 0, 0, 0, 0, 'a', 'b', shared, 1000, 2000)); // copied by set()
  assert.ok(writer.append(3, 0, 0, 0, 0, 'a', 'b', shared)); // the whole array
  const m = decodeOne(writer.finish()!) as DataMessage;
  assert.ok(m.frames[0]!.payload.equals(Buffer.from(shared.slice(100, 120))));
  assert.ok(m.frames[1]!.payload.equals(Buffer.from(shared.slice(1000, 3000))));
  assert.ok(m.frames[2]!.payload.equals(Buffer.from(shared)));
});

roundTrip('names with equal hashes decode as themselves', () => {
  // "Aa" and "BB" collide in a 31-multiplier hash, like Java's String.hashCode.
  const w = new DataBatchWriter();
  w.append(1, 0, 0, 0, 0, 'Aa', 'BB', Buffer.alloc(0));
  w.append(2, 0, 0, 0, 0, 'BB', 'Aa', Buffer.alloc(0));
  w.append(3, 0, 0, 0, 0, 'Aa', 'Aa', Buffer.alloc(0));
  const m = decodeOne(Buffer.from(w.finish()!)) as DataMessage;
  assert.equal(m.frames.map((f) => [f.sourceName, f.destinationName]), [['Aa', 'BB'], ['BB', 'Aa'], ['Aa', 'Aa']]);
});

roundTrip('a message inside one chunk is decoded in place (payload is a view)', () => {
  const msg = encodeData([frame(1, Buffer.from('zero-copy'))]);
  const m = decodeOne(msg) as DataMessage;
  assert.is(m.frames[0]!.payload.buffer, msg.buffer);
});

roundTrip.run();

// ---------------------------------------------------------------------------

const stream = suite('protocol stream decoding');

stream('a message sequence split at every byte boundary decodes identically', () => {
  const all = Buffer.concat(everyMessage());
  const expected = decodeChunks([all]).map(plain);
  assert.is(expected.length, 7);
  assert.equal(expected.map((m) => (m as { type: number }).type), [1, 2, 3, 4, 5, 6, 7]);
  for (let cut = 0; cut <= all.length; cut++) {
    const got = decodeChunks([all.subarray(0, cut), all.subarray(cut)]).map(plain);
    assert.equal(got, expected, `split at ${cut}`);
  }
});

stream('the same sequence fed one byte at a time, and in three random cuts', () => {
  const all = Buffer.concat(everyMessage());
  const expected = decodeChunks([all]).map(plain);
  const bytes: Buffer[] = [];
  for (let i = 0; i < all.length; i++) bytes.push(all.subarray(i, i + 1));
  assert.equal(decodeChunks(bytes).map(plain), expected);
  const rnd = seededRandom(7);
  for (let round = 0; round < 200; round++) {
    const cuts = [0, ...[1, 2, 3].map(() => Math.floor(rnd() * (all.length + 1))).sort((a, b) => a - b), all.length];
    const chunks = cuts.slice(1).map((c, i) => all.subarray(cuts[i]!, c));
    assert.equal(decodeChunks(chunks).map(plain), expected);
  }
});

stream('many messages in one chunk', () => {
  const msgs: Buffer[] = [];
  for (let i = 0; i < 1000; i++) msgs.push(encodeAck([{ frameId: i, status: ACK_DELIVERED }]));
  const got = decodeChunks([Buffer.concat(msgs)]);
  assert.is(got.length, 1000);
  assert.equal((got[999] as P.AckMessage).entries, [{ frameId: 999, status: ACK_DELIVERED }]);
});

stream('an oversize length is refused as soon as its 4 bytes arrive', () => {
  const decoder = new MessageDecoder({ maxMessageBytes: 2048 });
  decoder.push(Buffer.from([0x01, 0x08]));
  const err = (() => {
    try {
      decoder.push(Buffer.from([0x00, 0x00])); // bodyLength 2049, no body byte sent
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  assert.instance(err, ProtocolError);
  assert.is((err as ProtocolError).wireCode, ERR_TOO_LARGE);
  assert.is((err as ProtocolError).offset, 0);
  assert.is(decoder.bufferedBytes, 4);
  // The decoder stays failed: the same error again, nothing more buffered.
  assert.throws(() => decoder.push(Buffer.alloc(100)), (e: unknown) => e === err);
  assert.throws(() => decoder.next(), (e: unknown) => e === err);
  assert.is(decoder.bufferedBytes, 4);
});

stream('a length exactly at maxMessageBytes is accepted', () => {
  const writer = new DataBatchWriter({ maxMessageBytes: 2048 });
  assert.ok(writer.append(1, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(2048 - 5 - 26)));
  const msg = writer.finish()!;
  assert.is(msg.readUInt32LE(0), 2048);
  assert.is(decodeOne(msg, { maxMessageBytes: 2048 }).type, MSG_DATA);
  rejects(msg, ERR_TOO_LARGE, { maxMessageBytes: 2047 });
});

stream('memory stays bounded: no push while a complete message waits', () => {
  const max = 4096;
  const decoder = new MessageDecoder({ maxMessageBytes: max });
  const big = encodeData([frame(1, Buffer.alloc(max - 5 - 24 - 5 - 5, 1))]);
  assert.is(big.length, max + 4);
  let peak = 0;
  for (let i = 0; i < big.length; i += 100) {
    decoder.push(big.subarray(i, i + 100));
    peak = Math.max(peak, decoder.bufferedBytes);
  }
  assert.ok(peak <= max + 4 + 100);
  try {
    decoder.push(Buffer.alloc(10));
    assert.unreachable('push must refuse while a message waits');
  } catch (err) {
    assert.ok(isBusError(err, 'ERR_SHMBUS_INVALID_OPTION'));
  }
  assert.is(decoder.next()!.type, MSG_DATA);
  assert.is(decoder.next(), null);
  assert.is(decoder.bufferedBytes, 0);
  decoder.push(encodeProof(proof32)); // accepted again once drained
  assert.is(decoder.next()!.type, MSG_PROOF);
});

stream('streamOffset counts the bytes of returned messages', () => {
  const msgs = everyMessage();
  const decoder = new MessageDecoder();
  decodeChunks([Buffer.concat(msgs)], decoder);
  assert.is(decoder.streamOffset, msgs.reduce((n, m) => n + m.length, 0));
});

stream.run();

// ---------------------------------------------------------------------------

const malformed = suite('protocol malformed input');

const hello = encodeHello(nonceC, 'alpha');
const challenge = encodeChallenge(nonceA, 'beta', proof32);
const data1 = encodeData([frame(1, Buffer.from('hi'))]); // source "src-1" (5), destination "dst.1" (5)
const FRAME0 = DATA_FRAMES_OFFSET;

malformed('bodyLength 0', () => {
  const e = rejects(Buffer.from([0, 0, 0, 0, 1]), ERR_MALFORMED);
  assert.is(e.offset, 0);
});

malformed('bodyLength above maxMessageBytes', () => {
  rejects(Buffer.from(u32(DEFAULT_MAX_MESSAGE_BYTES + 1)), ERR_TOO_LARGE);
  rejects(Buffer.from([0xff, 0xff, 0xff, 0xff]), ERR_TOO_LARGE);
  rejects(Buffer.from('GET / HTTP/1.1\r\n'), ERR_TOO_LARGE);
});

malformed('unknown message types', () => {
  for (const type of [0, 8, 255]) assert.is(rejects(Buffer.from([1, 0, 0, 0, type]), ERR_MALFORMED).offset, 4);
});

malformed('HELLO with bad magic, checked before anything else', () => {
  assert.is(rejects(patch(hello, HELLO_MAGIC_OFFSET, [0x53, 0x48, 0x42, 0x53]), ERR_BAD_MAGIC).offset, HELLO_MAGIC_OFFSET);
  rejects(resize(patch(hello, HELLO_MAGIC_OFFSET, [0, 0, 0, 0]), 200), ERR_BAD_MAGIC);
});

malformed('HELLO with another version, whatever its length', () => {
  assert.is(rejects(patch(hello, HELLO_VERSION_OFFSET, [2, 0]), ERR_BAD_VERSION).offset, HELLO_VERSION_OFFSET);
  rejects(resize(patch(hello, HELLO_VERSION_OFFSET, [0, 1]), 500), ERR_BAD_VERSION);
  rejects(resize(patch(hello, HELLO_VERSION_OFFSET, [2, 0]), 8), ERR_BAD_VERSION);
});

malformed('HELLO too short for magic, version or host name; or with trailing bytes', () => {
  rejects(resize(hello, 3), ERR_MALFORMED);
  rejects(resize(hello, 6), ERR_MALFORMED);
  rejects(resize(hello, 40), ERR_MALFORMED);
  rejects(resize(hello, hello.length - 5), ERR_MALFORMED); // one name byte missing
  rejects(resize(hello, hello.length - 3), ERR_MALFORMED); // one byte after the name
});

malformed('HELLO host name length 0 or above 64', () => {
  rejects(resize(patch(hello, P.HELLO_HOST_NAME_LENGTH_OFFSET, [0]), 42), ERR_MALFORMED);
  rejects(resize(patch(hello, P.HELLO_HOST_NAME_LENGTH_OFFSET, [65]), 42 + 65), ERR_MALFORMED);
});

malformed('host names with bytes outside A-Z a-z 0-9 _ . @ -', () => {
  for (const bad of [0xc3, 0x20, 0x2f, 0x00, 0x7f, 0x3a]) {
    const e = rejects(patch(hello, P.HELLO_HOST_NAME_OFFSET + 2, [bad]), ERR_MALFORMED);
    assert.is(e.offset, P.HELLO_HOST_NAME_OFFSET + 2);
  }
  rejects(patch(challenge, P.CHALLENGE_HOST_NAME_OFFSET, [0xe9]), ERR_MALFORMED);
});

malformed('CHALLENGE with a name length 0, a short proof or trailing bytes', () => {
  rejects(patch(challenge, P.CHALLENGE_HOST_NAME_LENGTH_OFFSET, [0]), ERR_MALFORMED);
  rejects(patch(challenge, P.CHALLENGE_HOST_NAME_LENGTH_OFFSET, [65]), ERR_MALFORMED);
  rejects(resize(challenge, challenge.length - 5), ERR_MALFORMED);
  rejects(resize(challenge, challenge.length - 3), ERR_MALFORMED);
  rejects(resize(challenge, 10), ERR_MALFORMED);
});

malformed('PROOF and WELCOME of the wrong length', () => {
  const proof = encodeProof(proof32);
  rejects(resize(proof, 32), ERR_MALFORMED);
  rejects(resize(proof, 34), ERR_MALFORMED);
  const welcome = encodeWelcome(1, 1);
  rejects(resize(welcome, 8), ERR_MALFORMED);
  rejects(resize(welcome, 10), ERR_MALFORMED);
});

malformed('WELCOME with maxFramesPerBatch 0 or above 65535', () => {
  const welcome = encodeWelcome(1, 1);
  rejects(patch(welcome, P.WELCOME_MAX_FRAMES_OFFSET, u32(0)), ERR_MALFORMED);
  rejects(patch(welcome, P.WELCOME_MAX_FRAMES_OFFSET, u32(65536)), ERR_MALFORMED);
});

malformed('DATA with frameCount 0 or above 65535', () => {
  assert.is(rejects(patch(data1, P.DATA_FRAME_COUNT_OFFSET, u32(0)), ERR_MALFORMED).offset, P.DATA_FRAME_COUNT_OFFSET);
  rejects(patch(data1, P.DATA_FRAME_COUNT_OFFSET, u32(65536)), ERR_MALFORMED);
  rejects(patch(data1, P.DATA_FRAME_COUNT_OFFSET, u32(0xffffffff)), ERR_MALFORMED);
  rejects(resize(data1, 4), ERR_MALFORMED);
});

malformed('DATA with more frames than this side announced', () => {
  const three = encodeData([frame(1), frame(2), frame(3)]);
  rejects(three, ERR_TOO_LARGE, { maxFramesPerBatch: 2 });
  assert.is(decodeOne(three, { maxFramesPerBatch: 3 }).type, MSG_DATA);
});

malformed('DATA name lengths 0 or above 64', () => {
  for (const at of [P.DATA_FRAME_SOURCE_NAME_LENGTH_OFFSET, P.DATA_FRAME_DESTINATION_NAME_LENGTH_OFFSET]) {
    assert.is(rejects(patch(data1, FRAME0 + at, [0]), ERR_MALFORMED).offset, FRAME0 + at);
    rejects(patch(data1, FRAME0 + at, [65]), ERR_MALFORMED);
  }
});

malformed('DATA names with bytes outside the set', () => {
  rejects(patch(data1, FRAME0 + DATA_FRAME_HEADER_LENGTH, [0x80]), ERR_MALFORMED);
  rejects(patch(data1, FRAME0 + DATA_FRAME_HEADER_LENGTH + 5, [0x2f]), ERR_MALFORMED);
});

malformed('DATA frames that overrun the message, or leave bytes after the last', () => {
  rejects(patch(data1, FRAME0 + P.DATA_FRAME_PAYLOAD_LENGTH_OFFSET, u32(3)), ERR_MALFORMED);
  rejects(patch(data1, FRAME0 + P.DATA_FRAME_PAYLOAD_LENGTH_OFFSET, u32(0xffffffff)), ERR_MALFORMED);
  const e = rejects(patch(data1, FRAME0 + P.DATA_FRAME_PAYLOAD_LENGTH_OFFSET, u32(1)), ERR_MALFORMED);
  assert.is(e.offset, data1.length - 1);
  rejects(resize(data1, data1.length - 4 + 1), ERR_MALFORMED);
  rejects(patch(data1, P.DATA_FRAME_COUNT_OFFSET, u32(2)), ERR_MALFORMED); // header of frame 1 missing
  rejects(resize(data1, 5 + 20), ERR_MALFORMED); // frame header cut short
});

malformed('ACK with count 0 or above 65535, wrong length, unknown status', () => {
  const ack = encodeAck([
    { frameId: 1, status: ACK_DELIVERED },
    { frameId: 2, status: ACK_EXPIRED },
  ]);
  rejects(patch(ack, P.ACK_COUNT_OFFSET, u32(0)), ERR_MALFORMED);
  rejects(patch(ack, P.ACK_COUNT_OFFSET, u32(65536)), ERR_MALFORMED);
  rejects(patch(ack, P.ACK_COUNT_OFFSET, u32(3)), ERR_MALFORMED);
  rejects(resize(ack, ack.length - 4 + 1), ERR_MALFORMED);
  for (const status of [5, 6, 255]) {
    const e = rejects(patch(ack, P.ACK_ENTRIES_OFFSET + P.ACK_ENTRY_LENGTH + P.ACK_ENTRY_STATUS_OFFSET, [status]), ERR_MALFORMED);
    assert.is(e.offset, P.ACK_ENTRIES_OFFSET + P.ACK_ENTRY_LENGTH + P.ACK_ENTRY_STATUS_OFFSET);
  }
});

malformed('ERROR whose messageLength does not match', () => {
  const err = encodeError(ERR_SHUTTING_DOWN, 'bye');
  rejects(patch(err, P.ERROR_TEXT_LENGTH_OFFSET, [4, 0]), ERR_MALFORMED);
  rejects(patch(err, P.ERROR_TEXT_LENGTH_OFFSET, [2, 0]), ERR_MALFORMED);
  rejects(resize(err, 3), ERR_MALFORMED);
});

malformed('a fault in the second message is reported at its stream offset', () => {
  const bad = patch(hello, HELLO_MAGIC_OFFSET, [0, 0, 0, 0]);
  const decoder = new MessageDecoder();
  decoder.push(Buffer.concat([encodeProof(proof32), bad]));
  assert.is(decoder.next()!.type, MSG_PROOF);
  try {
    decoder.next();
    assert.unreachable();
  } catch (err) {
    assert.instance(err, ProtocolError);
    assert.is((err as ProtocolError).wireCode, ERR_BAD_MAGIC);
    assert.is((err as ProtocolError).streamOffset, P.PROOF_MESSAGE_LENGTH);
    assert.is((err as ProtocolError).offset, HELLO_MAGIC_OFFSET);
  }
});

malformed('1000 random inputs give messages or a ProtocolError, never another exception', () => {
  const rnd = seededRandom(0x5eed);
  const byte = () => Math.floor(rnd() * 256);
  const outcomes = { messages: 0, protocolErrors: 0, incomplete: 0 };
  const valid = everyMessage();
  for (let round = 0; round < 1000; round++) {
    const length = Math.floor(rnd() * 600);
    const buf = Buffer.alloc(length);
    for (let i = 0; i < length; i++) buf[i] = byte();
    const style = round % 4;
    if (style === 1 && length >= 5) {
      // A plausible header so that the body parsers run on random bytes.
      buf.writeUInt32LE(Math.floor(rnd() * (length - 3)), 0);
      buf[4] = 1 + Math.floor(rnd() * 7);
    } else if (style === 2) {
      // A valid message with a few bytes flipped.
      const base = Buffer.from(valid[round % valid.length]!);
      for (let k = 0; k < 3; k++) base[Math.floor(rnd() * base.length)] = byte();
      buf.set(base.subarray(0, Math.min(base.length, length)));
    } else if (style === 3 && length >= 5) {
      // Small plausible lengths, many messages per buffer.
      for (let at = 0; at + 5 <= length; ) {
        const n = 1 + Math.floor(rnd() * 40);
        buf.writeUInt32LE(n, at);
        buf[at + 4] = 1 + Math.floor(rnd() * 7);
        at += 4 + n;
      }
    }
    const decoder = new MessageDecoder({ maxMessageBytes: 1024 });
    try {
      let at = 0;
      while (at < buf.length) {
        const step = 1 + Math.floor(rnd() * 64);
        decoder.feed(buf.subarray(at, at + step), () => outcomes.messages++);
        at += step;
      }
      if (decoder.bufferedBytes > 0) outcomes.incomplete++;
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      assert.ok(Object.hasOwn(WIRE_ERROR_TABLE, err.wireCode));
      outcomes.protocolErrors++;
    }
  }
  assert.ok(outcomes.protocolErrors > 100, JSON.stringify(outcomes));
  assert.ok(outcomes.messages > 0, JSON.stringify(outcomes));
});

malformed.run();

// ---------------------------------------------------------------------------

const writer = suite('DataBatchWriter');

writer('refuses a frame that would exceed maxMessageBytes, and takes it in the next batch', () => {
  const w = new DataBatchWriter({ maxMessageBytes: 1024 });
  const payload = Buffer.alloc(400);
  assert.ok(w.append(1, 0, 0, 0, 0, 'a', 'b', payload));
  assert.ok(w.append(2, 0, 0, 0, 0, 'a', 'b', payload));
  const before = w.byteLength;
  assert.not.ok(w.append(3, 0, 0, 0, 0, 'a', 'b', payload));
  assert.is(w.count, 2);
  assert.is(w.byteLength, before);
  const first = decodeOne(Buffer.from(w.finish()!), { maxMessageBytes: 1024 }) as DataMessage;
  assert.equal(first.frames.map((f) => f.frameId), [1, 2]);
  assert.ok(w.append(3, 0, 0, 0, 0, 'a', 'b', payload));
  assert.equal((decodeOne(Buffer.from(w.finish()!)) as DataMessage).frames.map((f) => f.frameId), [3]);
});

writer('refuses a frame past maxFrames', () => {
  const w = new DataBatchWriter({ maxFrames: 2 });
  assert.ok(w.append(1, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(0)));
  assert.ok(w.append(2, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(0)));
  assert.not.ok(w.append(3, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(0)));
  assert.is(w.count, 2);
});

writer('false on an empty batch means the frame can never be sent', () => {
  const w = new DataBatchWriter({ maxMessageBytes: 1024 });
  assert.not.ok(w.append(1, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(1024)));
  assert.is(w.count, 0);
  assert.is(w.finish(), null);
});

writer('writes into a given buffer, reuses it, never grows it', () => {
  const buffer = Buffer.alloc(100);
  const w = new DataBatchWriter({ buffer });
  assert.ok(w.append(1, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(40)));
  assert.not.ok(w.append(2, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(40)), '9 + 66 + 66 > 100');
  const out = w.finish()!;
  assert.is(out.buffer, buffer.buffer);
  assert.is(out.byteOffset, buffer.byteOffset);
  assert.ok(w.append(2, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(40)));
  assert.is(w.finish()!.buffer, buffer.buffer);
  assert.is(w.capacity, 100);
});

writer('grows from a small buffer, keeping the frames already written', () => {
  const w = new DataBatchWriter({ initialCapacity: 16 });
  const frames = [frame(1, Buffer.alloc(10, 1)), frame(2, Buffer.alloc(100, 2)), frame(3, Buffer.alloc(1000, 3))];
  const msg = encodeData(frames, w);
  assert.equal(
    (decodeOne(msg) as DataMessage).frames.map((f) => f.payload.toString('hex')),
    frames.map((f) => f.payload.toString('hex')),
  );
  w.reserve(1 << 20);
  assert.ok(w.capacity >= 1 << 20);
});

writer('a finished message is never written again by later batches', () => {
  const w = new DataBatchWriter({ initialCapacity: 256 });
  const rnd = seededRandom(3);
  const kept: [Buffer, Buffer][] = [];
  for (let batch = 0; batch < 300; batch++) {
    const frames = 1 + Math.floor(rnd() * 5);
    for (let i = 0; i < frames; i++) {
      const payload = Buffer.alloc(Math.floor(rnd() * 200), batch & 0xff);
      assert.ok(w.append(batch, i, 0, 0, 0, 'a', 'b', payload));
    }
    const view = w.finish()!;
    kept.push([view, Buffer.from(view)]);
  }
  for (const [view, copy] of kept) assert.ok(view.equals(copy));
  assert.equal((decodeOne(kept[0]![0]) as DataMessage).frames[0]!.frameId, 0);
});

writer('finish returns null when empty and starts a new batch', () => {
  const w = new DataBatchWriter();
  assert.is(w.finish(), null);
  w.append(1, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(1));
  assert.is(w.count, 1);
  assert.ok(w.finish());
  assert.is(w.count, 0);
  assert.is(w.byteLength, 0);
  assert.is(w.finish(), null);
});

writer('rejects invalid names and numbers without touching the batch', () => {
  const w = new DataBatchWriter();
  w.append(1, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(1));
  const bad: [string, () => boolean][] = [
    ['empty source', () => w.append(2, 0, 0, 0, 0, '', 'b', Buffer.alloc(1))],
    ['long destination', () => w.append(2, 0, 0, 0, 0, 'a', 'b'.repeat(65), Buffer.alloc(1))],
    ['slash', () => w.append(2, 0, 0, 0, 0, 'a/b', 'b', Buffer.alloc(1))],
    ['non-ASCII', () => w.append(2, 0, 0, 0, 0, 'a', 'bé', Buffer.alloc(1))],
    ['frameId', () => w.append(-1, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(1))],
    ['sequence', () => w.append(2, 0, 0, 2 ** 32, 0, 'a', 'b', Buffer.alloc(1))],
    ['flags', () => w.append(2, 0, 0, 0, 0x10000, 'a', 'b', Buffer.alloc(1))],
    ['range', () => w.append(2, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(4), 2, 3)],
  ];
  for (const [what, call] of bad) {
    assert.throws(call, (e: unknown) => isBusError(e, 'ERR_SHMBUS_INVALID_OPTION'), what);
  }
  assert.is(w.count, 1);
  assert.is((decodeOne(Buffer.from(w.finish()!)) as DataMessage).frames.length, 1);
});

writer('limits change only between batches', () => {
  const w = new DataBatchWriter();
  w.append(1, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(1));
  assert.throws(() => w.setLimits(2048, 10), (e: unknown) => isBusError(e, 'ERR_SHMBUS_INVALID_OPTION'));
  w.finish();
  w.setLimits(2048, 1);
  assert.ok(w.append(1, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(1)));
  assert.not.ok(w.append(2, 0, 0, 0, 0, 'a', 'b', Buffer.alloc(1)));
  assert.throws(() => w.setLimits(100, 1), (e: unknown) => isBusError(e, 'ERR_SHMBUS_INVALID_OPTION'));
});

writer.run();

// ---------------------------------------------------------------------------

const encoders = suite('protocol encoders');

encoders('refuse arguments that would make an invalid message', () => {
  const invalid = (e: unknown) => isBusError(e, 'ERR_SHMBUS_INVALID_OPTION');
  assert.throws(() => encodeHello(Buffer.alloc(31), 'alpha'), invalid);
  assert.throws(() => encodeHello(nonceC, ''), invalid);
  assert.throws(() => encodeHello(nonceC, 'h'.repeat(65)), invalid);
  assert.throws(() => encodeHello(nonceC, 'al pha'), invalid);
  assert.throws(() => encodeChallenge(nonceA, 'beta', Buffer.alloc(33)), invalid);
  assert.throws(() => encodeProof(Buffer.alloc(0)), invalid);
  assert.throws(() => encodeWelcome(1, 0), invalid);
  assert.throws(() => encodeWelcome(1, 65536), invalid);
  assert.throws(() => encodeWelcome(-1, 1), invalid);
  assert.throws(() => encodeAck([]), invalid);
  assert.throws(() => encodeAck([{ frameId: 1, status: 5 as P.AckStatus }]), invalid);
  assert.throws(() => encodeError(0, 'x'), invalid);
  assert.throws(() => encodeError(65536, 'x'), invalid);
});

encoders.run();

// ---------------------------------------------------------------------------

const handshake = suite('protocol handshake proofs');

const secret = 'correct horse battery staple';

handshake('acceptor and connector proofs differ', () => {
  const a = acceptorProof(secret, nonceC, nonceA, 'alpha', 'beta');
  const c = connectorProof(secret, nonceC, nonceA, 'alpha', 'beta');
  assert.is(a.length, 32);
  assert.is(c.length, 32);
  assert.not.ok(verifyProof(a, c));
});

handshake('verify accepts the right proof and rejects another nonce, name or secret', () => {
  for (const make of [acceptorProof, connectorProof]) {
    const good = make(secret, nonceC, nonceA, 'alpha', 'beta');
    assert.ok(verifyProof(make(secret, nonceC, nonceA, 'alpha', 'beta'), good));
    assert.not.ok(verifyProof(make(secret, Buffer.alloc(32, 1), nonceA, 'alpha', 'beta'), good), 'another nonceC');
    assert.not.ok(verifyProof(make(secret, nonceC, Buffer.alloc(32, 1), 'alpha', 'beta'), good), 'another nonceA');
    assert.not.ok(verifyProof(make(secret, nonceC, nonceA, 'gamma', 'beta'), good), 'another connector');
    assert.not.ok(verifyProof(make(secret, nonceC, nonceA, 'alpha', 'gamma'), good), 'another acceptor');
    assert.not.ok(verifyProof(make(secret, nonceC, nonceA, 'beta', 'alpha'), good), 'roles swapped');
    assert.not.ok(verifyProof(make(secret, nonceA, nonceC, 'alpha', 'beta'), good), 'nonces swapped');
    assert.not.ok(verifyProof(make('another secret', nonceC, nonceA, 'alpha', 'beta'), good), 'another secret');
    assert.not.ok(verifyProof(make(Buffer.from(secret), nonceC, nonceA, 'alpha', 'beta'), Buffer.alloc(32)), 'zeros');
    assert.ok(verifyProof(make(Buffer.from(secret), nonceC, nonceA, 'alpha', 'beta'), good), 'a string secret is its UTF-8 bytes');
  }
});

handshake('verify rejects proofs of the wrong length without throwing', () => {
  const good = acceptorProof(secret, nonceC, nonceA, 'alpha', 'beta');
  assert.not.ok(verifyProof(good, good.subarray(0, 31)));
  assert.not.ok(verifyProof(good, Buffer.concat([good, Buffer.alloc(1)])));
  assert.not.ok(verifyProof(good.subarray(0, 31), good.subarray(0, 31)));
});

handshake('nonces are fresh 32-byte values', () => {
  const a = newNonce();
  const b = newNonce();
  assert.is(a.length, 32);
  assert.not.ok(a.equals(b));
});

handshake('a full handshake through the codec', () => {
  const toAcceptor = new MessageDecoder();
  const toConnector = new MessageDecoder();
  const recv = (d: MessageDecoder, bytes: Buffer): Message => {
    const got = decodeChunks([bytes], d);
    assert.is(got.length, 1);
    return got[0]!;
  };
  // Connector.
  const nC = newNonce();
  const h = recv(toAcceptor, encodeHello(nC, 'alpha')) as P.HelloMessage;
  assert.is(h.hostName, 'alpha');
  // Acceptor.
  const nA = newNonce();
  const pA = acceptorProof(secret, h.nonce, nA, h.hostName, 'beta');
  const c = recv(toConnector, encodeChallenge(nA, 'beta', pA)) as P.ChallengeMessage;
  // Connector checks the acceptor, then proves itself.
  assert.is(c.hostName, 'beta');
  assert.ok(verifyProof(acceptorProof(secret, nC, c.nonce, 'alpha', c.hostName), c.proof));
  const p = recv(toAcceptor, encodeProof(connectorProof(secret, nC, c.nonce, 'alpha', c.hostName))) as P.ProofMessage;
  // Acceptor checks; a replayed PROOF against a fresh nonceA fails.
  assert.ok(verifyProof(connectorProof(secret, h.nonce, nA, h.hostName, 'beta'), p.proof));
  assert.not.ok(verifyProof(connectorProof(secret, h.nonce, newNonce(), h.hostName, 'beta'), p.proof));
  const w = recv(toConnector, encodeWelcome(42, 1000)) as P.WelcomeMessage;
  assert.is(w.maxFramesPerBatch, 1000);
});

handshake.run();

// ---------------------------------------------------------------------------

const serial = suite('protocol sequence order');

serial('serial-number comparison on u32 wraps', () => {
  assert.ok(isSequenceAfter(1, 0));
  assert.ok(isSequenceAfter(0, 0xffffffff));
  assert.ok(isSequenceAfter(5, 0xfffffff0));
  assert.not.ok(isSequenceAfter(0, 0));
  assert.not.ok(isSequenceAfter(0xffffffff, 0));
  assert.ok(isSequenceAfter(0x7fffffff, 0));
  assert.not.ok(isSequenceAfter(0x80000000, 0));
});

serial.run();

// ---------------------------------------------------------------------------

const doc = suite('docs/PROTOCOL.md');

const text = readFileSync(join(__dirname, '..', 'docs', 'PROTOCOL.md'), 'utf8');

function example(name: string): Buffer {
  const m = new RegExp(`<!-- example:${name} -->\\n\`\`\`text\\n([\\s\\S]*?)\\n\`\`\``).exec(text);
  assert.ok(m, `example ${name} is in the document`);
  return Buffer.from(m![1]!.replace(/\s+/g, ''), 'hex');
}

/** Rows (cells trimmed) of every table whose header starts with `header`. */
function tables(header: string): string[][] {
  const rows: string[][] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]!.startsWith(header)) continue;
    for (let j = i + 2; j < lines.length && lines[j]!.startsWith('|'); j++) {
      rows.push(lines[j]!.split('|').slice(1, -1).map((c) => c.trim()));
    }
  }
  return rows;
}

const exports = P as unknown as Record<string, unknown>;

doc('the hex examples are what the encoders write', () => {
  assert.is(example('hello').toString('hex'), encodeHello(Buffer.alloc(32), 'alpha').toString('hex'));
  const w = new DataBatchWriter();
  w.append(7, 1, 2, 3, 0, 'a1', 'b1', Buffer.from('hi'));
  assert.is(example('data').toString('hex'), w.finish()!.toString('hex'));
});

doc('the proof example is HMAC-SHA256 of the inputs shown, and what protocol.ts computes', () => {
  const key = example('secret');
  const zeros = Buffer.alloc(32);
  const ones = Buffer.alloc(32, 1);
  const a = example('proof-a');
  const c = example('proof-c');
  assert.is(createHmac('sha256', key).update(example('a-input')).digest('hex'), a.toString('hex'));
  assert.is(createHmac('sha256', key).update(example('c-input')).digest('hex'), c.toString('hex'));
  assert.is(acceptorProof(key.toString('utf8'), zeros, ones, 'alpha', 'beta').toString('hex'), a.toString('hex'));
  assert.is(connectorProof(key, zeros, ones, 'alpha', 'beta').toString('hex'), c.toString('hex'));
});

doc('every field table names existing constants at the offsets it gives', () => {
  const rows = tables('| field | offset | size | type | constant | meaning |');
  assert.ok(rows.length > 40);
  let checked = 0;
  for (const [field, offset, , , constant] of rows) {
    if (constant === '') continue;
    const m = /^`([A-Z0-9_]+)`$/.exec(constant!);
    assert.ok(m, `constant cell of ${field}: ${constant}`);
    const value = exports[m![1]!];
    assert.type(value, 'number', `${m![1]} is a protocol.ts constant`);
    if (/^\d+$/.test(offset!)) {
      assert.is(value, Number(offset), `${field}: ${m![1]} = ${String(value)}, table says ${offset}`);
      checked++;
    }
  }
  assert.ok(checked > 40);
});

doc('the constants appendix lists every constant of protocol.ts with its value', () => {
  const start = text.indexOf('## All constants');
  const section = text.slice(start, text.indexOf('\n## ', start + 1));
  const listed = new Map([...section.matchAll(/^\| `([A-Z0-9_]+)` \| (.+?) \|$/gm)].map((m) => [m[1]!, m[2]!]));
  const source = readFileSync(join(__dirname, '..', 'relay', 'protocol.ts'), 'utf8');
  const declared = [...source.matchAll(/^export const ([A-Z0-9_]+) = /gm)]
    .map((m) => m[1]!)
    .filter((n) => typeof exports[n] === 'number' || typeof exports[n] === 'string');
  assert.equal([...listed.keys()], declared);
  for (const name of declared) {
    const value = exports[name];
    const shown = listed.get(name)!;
    if (typeof value === 'string') assert.is(shown, `\`${value}\``, name);
    else assert.is(Number(shown), value, name);
  }
});

doc('the error code table is WIRE_ERROR_TABLE', () => {
  const rows = tables('| code | name | constant | meaning |');
  assert.equal(
    rows.map(([code, name, constant, meaning]) => [Number(code), name, constant, meaning]),
    Object.entries(WIRE_ERROR_TABLE).map(([code, e]) => [Number(code), e.name, `\`ERR_${e.name}\``, e.meaning]),
  );
  for (const [code, , constant] of rows) assert.is(exports[constant!.slice(1, -1)], Number(code));
});

doc('the ACK status table is ACK_STATUS_TABLE', () => {
  const rows = tables('| status | name | constant | meaning |');
  assert.equal(
    rows.map(([status, name, constant, meaning]) => [Number(status), name, constant, meaning]),
    Object.entries(ACK_STATUS_TABLE).map(([status, s]) => [Number(status), s.name, `\`ACK_${s.name}\``, s.meaning]),
  );
  for (const [status, , constant] of rows) assert.is(exports[constant!.slice(1, -1)], Number(status));
});

doc('the message type table is MESSAGE_TYPE_NAMES', () => {
  const rows = tables('| type | name | constant |');
  assert.equal(
    rows.map(([type, name, constant]) => [Number(type), name, constant]),
    Object.entries(MESSAGE_TYPE_NAMES).map(([type, name]) => [Number(type), name, `\`MSG_${name}\``]),
  );
  for (const [type, , constant] of rows) assert.is(exports[constant!.slice(1, -1)], Number(type));
});

doc('decodeMessage decodes the DATA example', () => {
  const m = decodeMessage(example('data')) as DataMessage;
  const f = m.frames[0]!;
  assert.equal([f.frameId, f.sourceIndex, f.sourceGeneration, f.sequence, f.flags, f.sourceName, f.destinationName, f.payload.toString()], [7, 1, 2, 3, 0, 'a1', 'b1', 'hi']);
});

doc.run();
