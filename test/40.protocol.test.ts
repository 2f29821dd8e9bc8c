import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHmac } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as P from '../relay/codec';
import {
  ACK_DELIVERED,
  ACK_DUPLICATE,
  ACK_EXPIRED,
  ACK_TOO_LARGE,
  ACK_UNKNOWN_DESTINATION,
  ACK_COUNT_OFFSET,
  ACK_ENTRIES_OFFSET,
  ACK_ENTRY_LENGTH,
  ACK_ENTRY_STATUS_OFFSET,
  ACK_ENTRY_STREAM_OFFSET,
  ACK_ENTRY_THROUGH_OFFSET,
  DATA_FRAME_COUNT_OFFSET,
  DATA_RUNS_OFFSET,
  DEFAULT_MAX_MESSAGE_BYTES,
  ERR_AUTH_FAILED,
  ERR_BAD_MAGIC,
  ERR_BAD_VERSION,
  ERR_MALFORMED,
  ERR_SHUTTING_DOWN,
  ERR_TOO_LARGE,
  ERR_UNEXPECTED,
  ERR_UNKNOWN_HOST,
  FRAME_HEADER_LENGTH,
  FRAME_PAYLOAD_LENGTH_OFFSET,
  FRAME_SEQUENCE_OFFSET,
  HANDSHAKE_MAX_MESSAGE_BYTES,
  HELLO_MAGIC_OFFSET,
  HELLO_VERSION_OFFSET,
  MAX_ACK_ENTRIES,
  MAX_ERROR_TEXT_SENT_LENGTH,
  MAX_FRAMES_PER_MESSAGE,
  MAX_STREAMS,
  MESSAGE_HEADER_LENGTH,
  MESSAGE_TYPE_NAMES,
  MSG_ACK,
  MSG_CHALLENGE,
  MSG_DATA,
  MSG_ERROR,
  MSG_HELLO,
  MSG_PROOF,
  MSG_STREAM,
  MSG_WELCOME,
  PROTOCOL_VERSION,
  ProtocolError,
  RUN_FRAME_COUNT_OFFSET,
  RUN_HEADER_LENGTH,
  RUN_STREAM_OFFSET,
  STREAM_DESTINATION_NAME_LENGTH_OFFSET,
  STREAM_ID_OFFSET,
  STREAM_NAMES_OFFSET,
  STREAM_SOURCE_NAME_LENGTH_OFFSET,
  WIRE_ERROR_TABLE,
  ackEntries,
  encodeAck,
  encodeChallenge,
  encodeError,
  encodeHello,
  encodeProof,
  encodeStream,
  encodeWelcome,
  isAckStatus,
  isSequenceAfter,
  type AckEntry,
  type AckStatus,
  type DataMessage,
  type Message,
  type WireErrorCode,
} from '../relay/codec';
import { decodeMessage } from '../relay/decode';
import { MessageDecoder, type MessageDecoderOptions } from '../relay/stream-decoder';
import { DataBatchWriter } from '../relay/batch-writer';
import { AcceptorHandshake, ConnectorHandshake, acceptorProof, connectorProof, newNonce, verifyProof } from '../relay/handshake';
import { MIN_SECRET_LENGTH, validateConfig } from '../relay/config';
import { OUTCOME_TABLE, OUTCOME_UNKNOWN_HOST } from '../src/outcome';
import { BusError, isBusError } from '../src/errors';
import { seededRandom } from './_helpers';

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

const nonceC = Buffer.alloc(32, 0xc1);
const nonceA = Buffer.alloc(32, 0xa7);
const proof32 = Buffer.alloc(32, 0x5e);

/** One frame to write: its stream, sequence and payload. */
interface FrameSpec {
  streamId: number;
  sequence: number;
  payload: Buffer;
}

function frame(streamId: number, sequence: number, payload: Buffer | string = `payload ${sequence}`): FrameSpec {
  return { streamId, sequence: sequence >>> 0, payload: Buffer.isBuffer(payload) ? payload : Buffer.from(payload) };
}

/** A DATA message of `frames` (a copy, so later batches cannot touch it). */
function encodeData(frames: FrameSpec[], writer = new DataBatchWriter()): Buffer {
  for (const f of frames) assert.ok(writer.append(f.streamId, f.sequence, f.payload, 0, f.payload.length), `append stream ${f.streamId} seq ${f.sequence}`);
  return Buffer.from(writer.finish()!);
}

interface Run {
  streamId: number;
  frames: { sequence: number; payload: string }[];
}

/** Walk a decoded DATA with the codec's offsets: its runs, payloads as hex. */
function runsOf(m: Message): Run[] {
  assert.is(m.type, MSG_DATA);
  const bytes = (m as DataMessage).bytes;
  const runs: Run[] = [];
  let at = DATA_RUNS_OFFSET;
  let total = 0;
  while (at < bytes.length) {
    const run: Run = { streamId: bytes.readUInt32LE(at + RUN_STREAM_OFFSET), frames: [] };
    const n = bytes.readUInt32LE(at + RUN_FRAME_COUNT_OFFSET);
    at += RUN_HEADER_LENGTH;
    for (let i = 0; i < n; i++) {
      const p = bytes.readUInt32LE(at + FRAME_PAYLOAD_LENGTH_OFFSET);
      run.frames.push({ sequence: bytes.readUInt32LE(at + FRAME_SEQUENCE_OFFSET), payload: bytes.toString('hex', at + FRAME_HEADER_LENGTH, at + FRAME_HEADER_LENGTH + p) });
      at += FRAME_HEADER_LENGTH + p;
    }
    total += n;
    runs.push(run);
  }
  assert.is(at, bytes.length);
  assert.is(total, (m as DataMessage).frameCount);
  return runs;
}

/** The frames of a decoded DATA in order, as specs with hex payloads. */
function framesOf(m: Message): { streamId: number; sequence: number; payload: string }[] {
  return runsOf(m).flatMap((r) => r.frames.map((f) => ({ streamId: r.streamId, ...f })));
}

function specs(frames: FrameSpec[]): { streamId: number; sequence: number; payload: string }[] {
  return frames.map((f) => ({ streamId: f.streamId, sequence: f.sequence, payload: f.payload.toString('hex') }));
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

function decodeOne(bytes: Buffer, options?: MessageDecoderOptions): Message {
  const messages = decodeChunks([bytes], new MessageDecoder(options));
  assert.is(messages.length, 1);
  return messages[0]!;
}

/** Assert that decoding `bytes` throws a ProtocolError with `wireCode` (and at `offset`, if given); returns it. */
function rejects(bytes: Buffer, wireCode: WireErrorCode, offset?: number, options?: MessageDecoderOptions): ProtocolError {
  const decoder = new MessageDecoder(options);
  let caught: unknown;
  try {
    decoder.feed(bytes, () => undefined);
  } catch (err) {
    caught = err;
  }
  assert.instance(caught, ProtocolError, `no ProtocolError for ${bytes.toString('hex').slice(0, 120)}`);
  const e = caught as ProtocolError;
  assert.is(e.wireCode, wireCode, `wireCode ${e.wireCode} (${e.message}), expected ${wireCode}`);
  if (offset !== undefined) assert.is(e.offset, offset, `offset of: ${e.message}`);
  // decodeMessage on the complete message agrees with the stream decoder (maxMessageBytes is the stream decoder's alone).
  const lengthLimit = e.wireCode === ERR_TOO_LARGE && e.offset === 0;
  if (!lengthLimit && bytes.length >= 5 && bytes.readUInt32LE(0) + 4 === bytes.length) {
    try {
      decodeMessage(bytes, options?.maxFramesPerBatch);
      assert.unreachable('decodeMessage accepted it');
    } catch (err) {
      assert.instance(err, ProtocolError);
      assert.is((err as ProtocolError).wireCode, wireCode);
      assert.is((err as ProtocolError).offset, e.offset);
    }
  }
  return e;
}

/** A copy of `msg` with `bytes` written at `offset`. */
function patch(msg: Buffer, offset: number, bytes: number[]): Buffer {
  const copy = Buffer.from(msg);
  Buffer.from(bytes).copy(copy, offset);
  return copy;
}

/** `msg` with its body grown (zeros) or cut to `bodyLength`, the length field updated to match. */
function resize(msg: Buffer, bodyLength: number): Buffer {
  const copy = Buffer.alloc(4 + bodyLength);
  msg.copy(copy, 0, 0, Math.min(msg.length, copy.length));
  copy.writeUInt32LE(bodyLength, 0);
  return copy;
}

function u32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24];
}

function throwsInvalid(call: () => unknown, what: string): void {
  assert.throws(call, (e: unknown) => isBusError(e, 'ERR_SHMBUS_INVALID_OPTION'), what);
}

/** Call `fn`, which must throw a ProtocolError with `wireCode`; returns it. */
function protocolError(fn: () => unknown, wireCode: WireErrorCode): ProtocolError {
  try {
    fn();
  } catch (err) {
    assert.instance(err, ProtocolError);
    assert.is((err as ProtocolError).wireCode, wireCode, (err as Error).message);
    return err as ProtocolError;
  }
  assert.unreachable(`no ProtocolError ${WIRE_ERROR_TABLE[wireCode].name}`);
  throw new Error('unreachable');
}

/** One message of every type, in handshake order, then STREAM, DATA, ACK, ERROR. */
function everyMessage(): Buffer[] {
  return [
    encodeHello(nonceC, 'alpha'),
    encodeChallenge(nonceA, 'beta', proof32),
    encodeProof(proof32),
    encodeWelcome(0xdeadbeef, 512),
    encodeStream(0, 3, 7, 'src-3', 'dst.0'),
    encodeStream(1, 4, 1, 'src-4', '@relay'),
    encodeData([frame(0, 1), frame(0, 2, Buffer.alloc(0)), frame(1, 0xffffffff, Buffer.alloc(300, 7)), frame(0, 3)]),
    encodeAck([
      { streamId: 0, through: 3, status: ACK_DELIVERED },
      { streamId: 1, through: 1, status: ACK_TOO_LARGE },
    ]),
    encodeError(ERR_SHUTTING_DOWN, 'bye'),
  ];
}

// ---------------------------------------------------------------------------

const constants = suite('protocol constants');

constants('the magic reads "SHBR" as little-endian bytes; this is version 2', () => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(P.MAGIC);
  assert.is(b.toString('latin1'), 'SHBR');
  assert.is(PROTOCOL_VERSION, 2);
});

constants('types, statuses and codes have the numbers of the design', () => {
  assert.equal([MSG_HELLO, MSG_CHALLENGE, MSG_PROOF, MSG_WELCOME, MSG_DATA, MSG_ACK, MSG_ERROR, MSG_STREAM], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(Object.values(MESSAGE_TYPE_NAMES), ['HELLO', 'CHALLENGE', 'PROOF', 'WELCOME', 'DATA', 'ACK', 'ERROR', 'STREAM']);
  assert.equal([ACK_DELIVERED, ACK_DUPLICATE, ACK_UNKNOWN_DESTINATION, ACK_EXPIRED, ACK_TOO_LARGE], [0, 1, 2, 3, 4]);
  assert.equal(Object.keys(WIRE_ERROR_TABLE).map(Number), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(Object.values(WIRE_ERROR_TABLE).map((e) => e.name), ['BAD_MAGIC', 'BAD_VERSION', 'UNKNOWN_HOST', 'AUTH_FAILED', 'MALFORMED', 'TOO_LARGE', 'UNEXPECTED', 'SHUTTING_DOWN']);
  assert.is(P.NONCE_LENGTH, 32);
  assert.is(P.PROOF_LENGTH, 32);
  assert.is(P.MAX_HOST_NAME_LENGTH, 64);
  assert.is(P.MAX_ENDPOINT_NAME_LENGTH, 64);
  assert.is(MAX_STREAMS, 65536);
  assert.is(MAX_FRAMES_PER_MESSAGE, 65535);
  assert.is(MAX_ACK_ENTRIES, 65535);
  assert.is(DEFAULT_MAX_MESSAGE_BYTES, 16 * 1024 * 1024);
  assert.is(RUN_HEADER_LENGTH, 8);
  assert.is(FRAME_HEADER_LENGTH, 8);
  assert.is(ACK_ENTRY_LENGTH, 9);
});

constants('the proof labels did not change with the version', () => {
  assert.is(P.ACCEPTOR_PROOF_LABEL, 'shmbus-relay-v1 acceptor');
  assert.is(P.CONNECTOR_PROOF_LABEL, 'shmbus-relay-v1 connector');
});

constants('ACK statuses are exactly the outcomes that travel on the wire', () => {
  const wire = Object.entries(OUTCOME_TABLE).filter(([, o]) => o.ack).map(([code]) => Number(code));
  assert.equal(wire, [0, 1, 2, 3, 4]);
  for (const code of wire) assert.ok(isAckStatus(code), String(code));
  assert.is(OUTCOME_UNKNOWN_HOST, 5);
  assert.not.ok(isAckStatus(OUTCOME_UNKNOWN_HOST), 'UNKNOWN_HOST is notice-only');
  for (const bad of [-1, 6, 255, 1.5, '0', null]) assert.not.ok(isAckStatus(bad), String(bad));
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
  assert.is(P.STREAM_ID_OFFSET, MESSAGE_HEADER_LENGTH);
  assert.is(P.STREAM_SOURCE_INDEX_OFFSET, P.STREAM_ID_OFFSET + 4);
  assert.is(P.STREAM_SOURCE_GENERATION_OFFSET, P.STREAM_SOURCE_INDEX_OFFSET + 4);
  assert.is(P.STREAM_SOURCE_NAME_LENGTH_OFFSET, P.STREAM_SOURCE_GENERATION_OFFSET + 4);
  assert.is(P.STREAM_DESTINATION_NAME_LENGTH_OFFSET, P.STREAM_SOURCE_NAME_LENGTH_OFFSET + 1);
  assert.is(P.STREAM_NAMES_OFFSET, P.STREAM_DESTINATION_NAME_LENGTH_OFFSET + 1);
  assert.is(DATA_FRAME_COUNT_OFFSET, MESSAGE_HEADER_LENGTH);
  assert.is(DATA_RUNS_OFFSET, DATA_FRAME_COUNT_OFFSET + 4);
  assert.is(RUN_STREAM_OFFSET, 0);
  assert.is(RUN_FRAME_COUNT_OFFSET, RUN_STREAM_OFFSET + 4);
  assert.is(RUN_HEADER_LENGTH, RUN_FRAME_COUNT_OFFSET + 4);
  assert.is(FRAME_SEQUENCE_OFFSET, 0);
  assert.is(FRAME_PAYLOAD_LENGTH_OFFSET, FRAME_SEQUENCE_OFFSET + 4);
  assert.is(FRAME_HEADER_LENGTH, FRAME_PAYLOAD_LENGTH_OFFSET + 4);
  assert.is(ACK_ENTRIES_OFFSET, ACK_COUNT_OFFSET + 4);
  assert.is(ACK_ENTRY_STREAM_OFFSET, 0);
  assert.is(ACK_ENTRY_THROUGH_OFFSET, ACK_ENTRY_STREAM_OFFSET + 4);
  assert.is(ACK_ENTRY_STATUS_OFFSET, ACK_ENTRY_THROUGH_OFFSET + 4);
  assert.is(ACK_ENTRY_LENGTH, ACK_ENTRY_STATUS_OFFSET + 1);
  assert.is(P.ERROR_TEXT_LENGTH_OFFSET, P.ERROR_CODE_OFFSET + 2);
  assert.is(P.ERROR_TEXT_OFFSET, P.ERROR_TEXT_LENGTH_OFFSET + 2);
});

constants('the wire name pattern is the byte set the decoder accepts', () => {
  for (let c = 0; c < 256; c++) {
    const ch = String.fromCharCode(c);
    const ok = P.WIRE_NAME_PATTERN.test(ch);
    const msg = patch(encodeStream(0, 0, 0, 'a', 'b'), STREAM_NAMES_OFFSET, [c]);
    let decoded = true;
    try {
      decodeMessage(msg);
    } catch (err) {
      assert.instance(err, ProtocolError);
      decoded = false;
    }
    assert.is(decoded, ok, `byte 0x${c.toString(16)}`);
  }
});

constants.run();

// ---------------------------------------------------------------------------

const roundTrip = suite('protocol round trip');

roundTrip('HELLO, and a HELLO of another version for tests', () => {
  const m = decodeOne(encodeHello(nonceC, 'alpha'));
  assert.equal(plain(m), { type: MSG_HELLO, flags: 0, nonce: nonceC.toString('hex'), hostName: 'alpha' });
  const v1 = encodeHello(nonceC, 'alpha', 1);
  assert.is(v1.readUInt16LE(HELLO_VERSION_OFFSET), 1);
  assert.is(encodeHello(nonceC, 'alpha').readUInt16LE(HELLO_VERSION_OFFSET), PROTOCOL_VERSION);
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

roundTrip('STREAM, at the limits of every field', () => {
  const m = decodeOne(encodeStream(MAX_STREAMS - 1, 0xffffffff, 0xfffffffe, 's'.repeat(64), '@relay'));
  assert.equal(m, { type: MSG_STREAM, streamId: 65535, sourceIndex: 0xffffffff, sourceGeneration: 0xfffffffe, sourceName: 's'.repeat(64), destinationName: '@relay' });
  assert.equal(decodeOne(encodeStream(0, 0, 0, 'gone.3.1', 'd'.repeat(64))), { type: MSG_STREAM, streamId: 0, sourceIndex: 0, sourceGeneration: 0, sourceName: 'gone.3.1', destinationName: 'd'.repeat(64) });
  assert.is(encodeStream(0, 0, 0, 'ab', 'cde').length, STREAM_NAMES_OFFSET + 5);
});

roundTrip('ACK with every status; ackEntries reads them back', () => {
  const entries: AckEntry[] = [0, 1, 2, 3, 4].map((s, i) => ({ streamId: i * 1000, through: (i * 0x33333333) >>> 0, status: s as AckStatus }));
  entries.push({ streamId: MAX_STREAMS - 1, through: 0xffffffff, status: ACK_DELIVERED });
  const m = decodeOne(encodeAck(entries));
  assert.is(m.type, MSG_ACK);
  assert.is((m as P.AckMessage).count, entries.length);
  assert.is((m as P.AckMessage).bytes.length, ACK_ENTRIES_OFFSET + entries.length * ACK_ENTRY_LENGTH);
  assert.equal(ackEntries(m), entries);
  throwsInvalid(() => ackEntries(decodeOne(encodeProof(proof32))), 'not an ACK');
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

roundTrip('DATA with 0-byte and small payloads, in runs of several streams', () => {
  const frames = [frame(0, 1, Buffer.alloc(0)), frame(0, 2), frame(3, 0xfffffff0, Buffer.alloc(49, 0xab)), frame(3, 0xfffffff1), frame(0, 3)];
  const m = decodeOne(encodeData(frames));
  assert.is((m as DataMessage).frameCount, 5);
  assert.equal(framesOf(m), specs(frames));
  assert.equal(runsOf(m).map((r) => [r.streamId, r.frames.length]), [[0, 2], [3, 2], [0, 1]]);
});

roundTrip('DATA with the largest payload the limit allows', () => {
  const max = DEFAULT_MAX_MESSAGE_BYTES - 1 - 4 - RUN_HEADER_LENGTH - FRAME_HEADER_LENGTH;
  assert.is(max, DEFAULT_MAX_MESSAGE_BYTES - 21);
  const payload = Buffer.alloc(max);
  payload.writeUInt32LE(0x01020304, 0);
  payload.writeUInt32LE(0x05060708, max - 4);
  const writer = new DataBatchWriter();
  assert.not.ok(writer.append(0, 0, Buffer.alloc(max + 1), 0, max + 1), 'one byte more never fits');
  assert.is(writer.count, 0);
  assert.ok(writer.append(0, 0, payload, 0, max));
  const msg = writer.finish()!;
  assert.is(msg.readUInt32LE(0), DEFAULT_MAX_MESSAGE_BYTES);
  const m = decodeOne(msg) as DataMessage;
  const at = DATA_RUNS_OFFSET + RUN_HEADER_LENGTH + FRAME_HEADER_LENGTH;
  assert.is(m.bytes.readUInt32LE(at - 4), max);
  assert.ok(m.bytes.subarray(at).equals(payload));
});

roundTrip('DATA with 65535 frames in one run', () => {
  const writer = new DataBatchWriter();
  for (let i = 0; i < MAX_FRAMES_PER_MESSAGE; i++) assert.ok(writer.append(7, i, Buffer.from([i & 0xff]), 0, 1));
  assert.not.ok(writer.append(7, 65535, Buffer.alloc(1), 0, 1), 'frame 65536 is refused');
  const msg = writer.finish()!;
  assert.is(msg.length, DATA_RUNS_OFFSET + RUN_HEADER_LENGTH + MAX_FRAMES_PER_MESSAGE * (FRAME_HEADER_LENGTH + 1));
  const runs = runsOf(decodeOne(msg));
  assert.is(runs.length, 1);
  assert.is(runs[0]!.streamId, 7);
  for (const i of [0, 1, 255, 256, 40000, 65534]) {
    const f = runs[0]!.frames[i]!;
    assert.equal([f.sequence, f.payload], [i, (i & 0xff).toString(16).padStart(2, '0')]);
  }
});

roundTrip('DATA copies a payload range out of a shared buffer', () => {
  const shared = new Uint8Array(new SharedArrayBuffer(4096));
  for (let i = 0; i < shared.length; i++) shared[i] = i & 0xff;
  const writer = new DataBatchWriter();
  assert.ok(writer.append(0, 1, shared, 100, 20)); // copied by the byte loop
  assert.ok(writer.append(0, 2, shared, 1000, 2000)); // copied by set()
  assert.ok(writer.append(1, 3, shared, 0, shared.length)); // the whole array
  const f = framesOf(decodeOne(Buffer.from(writer.finish()!)));
  assert.is(f[0]!.payload, Buffer.from(shared.slice(100, 120)).toString('hex'));
  assert.is(f[1]!.payload, Buffer.from(shared.slice(1000, 3000)).toString('hex'));
  assert.is(f[2]!.payload, Buffer.from(shared).toString('hex'));
});

roundTrip('names with equal hashes decode as themselves', () => {
  // "Aa" and "BB" collide in a 31-multiplier hash, like Java's String.hashCode.
  const got = [encodeStream(0, 0, 0, 'Aa', 'BB'), encodeStream(1, 0, 0, 'BB', 'Aa'), encodeStream(2, 0, 0, 'Aa', 'Aa')].map((b) => decodeOne(b) as P.StreamMessage);
  assert.equal(got.map((m) => [m.sourceName, m.destinationName]), [['Aa', 'BB'], ['BB', 'Aa'], ['Aa', 'Aa']]);
});

roundTrip('a message inside one chunk is decoded in place (DATA bytes and nonces are views)', () => {
  const msg = encodeData([frame(1, 1, 'zero-copy')]);
  const m = decodeOne(msg) as DataMessage;
  assert.is(m.bytes.buffer, msg.buffer);
  assert.is(m.bytes.byteOffset, msg.byteOffset);
  const hello = encodeHello(nonceC, 'alpha');
  assert.is((decodeOne(hello) as P.HelloMessage).nonce.buffer, hello.buffer);
});

roundTrip.run();

// ---------------------------------------------------------------------------

const stream = suite('protocol stream decoding');

stream('a message sequence split at every byte boundary decodes identically', () => {
  const all = Buffer.concat(everyMessage());
  const expected = decodeChunks([all]).map(plain);
  assert.equal(expected.map((m) => (m as { type: number }).type), [1, 2, 3, 4, 8, 8, 5, 6, 7]);
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

stream('a DATA split across chunks is reassembled into the same runs', () => {
  const frames = [frame(0, 10, Buffer.alloc(70, 1)), frame(0, 11, Buffer.alloc(3, 2)), frame(2, 5, Buffer.alloc(200, 3))];
  const msg = encodeData(frames);
  for (const cut of [1, 4, 5, 9, 13, 17, 20, 25, 60, msg.length - 1]) {
    const got = decodeChunks([msg.subarray(0, cut), msg.subarray(cut)]);
    assert.is(got.length, 1);
    assert.equal(framesOf(got[0]!), specs(frames), `cut ${cut}`);
  }
});

stream('many messages in one chunk', () => {
  const msgs: Buffer[] = [];
  for (let i = 0; i < 1000; i++) msgs.push(encodeAck([{ streamId: i % MAX_STREAMS, through: i + 1, status: ACK_DELIVERED }]));
  const got = decodeChunks([Buffer.concat(msgs)]);
  assert.is(got.length, 1000);
  assert.equal(ackEntries(got[999]!), [{ streamId: 999, through: 1000, status: ACK_DELIVERED }]);
});

stream('an oversize length is refused as soon as its 4 bytes arrive', () => {
  const decoder = new MessageDecoder({ maxMessageBytes: 2048 });
  decoder.push(Buffer.from([0x01, 0x08]));
  let err: unknown;
  try {
    decoder.push(Buffer.from([0x00, 0x00])); // bodyLength 2049, no body byte sent
  } catch (e) {
    err = e;
  }
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
  assert.ok(writer.append(0, 0, Buffer.alloc(2048 - 21), 0, 2048 - 21));
  const msg = writer.finish()!;
  assert.is(msg.readUInt32LE(0), 2048);
  assert.is(decodeOne(msg, { maxMessageBytes: 2048 }).type, MSG_DATA);
  rejects(msg, ERR_TOO_LARGE, 0, { maxMessageBytes: 2047 });
});

stream('the handshake limit, then a raised one', () => {
  const big = encodeData([frame(0, 1, Buffer.alloc(2000))]);
  rejects(big, ERR_TOO_LARGE, 0, { maxMessageBytes: HANDSHAKE_MAX_MESSAGE_BYTES });
  const decoder = new MessageDecoder({ maxMessageBytes: HANDSHAKE_MAX_MESSAGE_BYTES });
  assert.is(decodeChunks([encodeWelcome(1, 2)], decoder)[0]!.type, MSG_WELCOME);
  decoder.setMaxMessageBytes(DEFAULT_MAX_MESSAGE_BYTES);
  assert.is(decodeChunks([big], decoder)[0]!.type, MSG_DATA);
  throwsInvalid(() => decoder.setMaxMessageBytes(100), 'below MIN_MAX_MESSAGE_BYTES');
  throwsInvalid(() => new MessageDecoder({ maxMessageBytes: 2 ** 31 }), 'above MAX_MAX_MESSAGE_BYTES');
});

stream('maxFramesPerBatch is what this side announced, and can change', () => {
  const three = encodeData([frame(0, 1), frame(0, 2), frame(1, 3)]);
  rejects(three, ERR_TOO_LARGE, DATA_FRAME_COUNT_OFFSET, { maxFramesPerBatch: 2 });
  assert.is(decodeOne(three, { maxFramesPerBatch: 3 }).type, MSG_DATA);
  const decoder = new MessageDecoder();
  decoder.setMaxFramesPerBatch(2);
  assert.throws(() => decodeChunks([three], decoder), (e: unknown) => e instanceof ProtocolError && e.wireCode === ERR_TOO_LARGE);
  throwsInvalid(() => new MessageDecoder().setMaxFramesPerBatch(0), '0 frames');
  throwsInvalid(() => new MessageDecoder().setMaxFramesPerBatch(65536), '65536 frames');
});

stream('memory stays bounded: no push while a complete message waits', () => {
  const max = 4096;
  const decoder = new MessageDecoder({ maxMessageBytes: max });
  const big = encodeData([frame(0, 1, Buffer.alloc(max - 21, 1))]);
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
  assert.is(decoder.bufferedBytes, 0);
});

stream.run();

// ---------------------------------------------------------------------------

const malformed = suite('protocol malformed input');

const hello = encodeHello(nonceC, 'alpha');
const challenge = encodeChallenge(nonceA, 'beta', proof32);
const streamMsg = encodeStream(3, 1, 2, 'src-1', 'dst.1'); // s = 5, d = 5
/** Stream 0: sequences 1 ("hi") and 2 (""); then stream 4: sequence 9 ("xyz"). */
const data3 = encodeData([frame(0, 1, 'hi'), frame(0, 2, ''), frame(4, 9, 'xyz')]);
const RUN0 = DATA_RUNS_OFFSET;
const RUN0_FRAME0 = RUN0 + RUN_HEADER_LENGTH;
const RUN0_FRAME1 = RUN0_FRAME0 + FRAME_HEADER_LENGTH + 2;
const RUN1 = RUN0_FRAME1 + FRAME_HEADER_LENGTH;
const ack2 = encodeAck([
  { streamId: 0, through: 2, status: ACK_DELIVERED },
  { streamId: 1, through: 5, status: ACK_EXPIRED },
]);
const ENTRY1 = ACK_ENTRIES_OFFSET + ACK_ENTRY_LENGTH;

malformed('the fixtures are what the offsets say', () => {
  assert.is(data3.readUInt32LE(RUN1 + RUN_STREAM_OFFSET), 4);
  assert.is(data3.readUInt32LE(RUN0_FRAME1 + FRAME_SEQUENCE_OFFSET), 2);
  assert.is(data3.length, RUN1 + RUN_HEADER_LENGTH + FRAME_HEADER_LENGTH + 3);
  assert.is(ack2.readUInt32LE(ENTRY1 + ACK_ENTRY_THROUGH_OFFSET), 5);
});

malformed('bodyLength 0', () => {
  rejects(Buffer.from([0, 0, 0, 0, 1]), ERR_MALFORMED, 0);
  assert.is(protocolError(() => decodeMessage(Buffer.from([0, 0, 0])), ERR_MALFORMED).offset, 0);
});

malformed('bodyLength above maxMessageBytes, or not the bytes given', () => {
  rejects(Buffer.from(u32(DEFAULT_MAX_MESSAGE_BYTES + 1)), ERR_TOO_LARGE, 0);
  rejects(Buffer.from([0xff, 0xff, 0xff, 0xff]), ERR_TOO_LARGE, 0);
  rejects(Buffer.from('GET / HTTP/1.1\r\n'), ERR_TOO_LARGE, 0);
  // decodeMessage takes one complete message: a length field that disagrees is MALFORMED.
  assert.is(protocolError(() => decodeMessage(hello.subarray(0, hello.length - 1)), ERR_MALFORMED).offset, 0);
});

malformed('unknown message types', () => {
  for (const type of [0, 9, 255]) rejects(Buffer.from([1, 0, 0, 0, type]), ERR_MALFORMED, 4);
});

malformed('HELLO with bad magic, checked before anything else', () => {
  rejects(patch(hello, HELLO_MAGIC_OFFSET, [0x53, 0x48, 0x42, 0x53]), ERR_BAD_MAGIC, HELLO_MAGIC_OFFSET);
  rejects(resize(patch(hello, HELLO_MAGIC_OFFSET, [0, 0, 0, 0]), 200), ERR_BAD_MAGIC, HELLO_MAGIC_OFFSET);
});

malformed('HELLO of version 1 (or 3), whatever its length, names both versions', () => {
  const e = rejects(encodeHello(nonceC, 'alpha', 1), ERR_BAD_VERSION, HELLO_VERSION_OFFSET);
  assert.match(e.message, /^protocolVersion 1; this side speaks 2 /);
  rejects(resize(patch(hello, HELLO_VERSION_OFFSET, [1, 0]), 500), ERR_BAD_VERSION, HELLO_VERSION_OFFSET);
  rejects(resize(patch(hello, HELLO_VERSION_OFFSET, [3, 0]), 8), ERR_BAD_VERSION, HELLO_VERSION_OFFSET);
  assert.match(rejects(patch(hello, HELLO_VERSION_OFFSET, [0, 1]), ERR_BAD_VERSION).message, /protocolVersion 256; this side speaks 2/);
});

malformed('HELLO too short for magic, version or host name; or with trailing bytes', () => {
  rejects(resize(hello, 3), ERR_MALFORMED);
  rejects(resize(hello, 6), ERR_MALFORMED);
  rejects(resize(hello, 40), ERR_MALFORMED);
  rejects(resize(hello, hello.length - 5), ERR_MALFORMED, hello.length - 1); // one name byte missing
  rejects(resize(hello, hello.length - 3), ERR_MALFORMED, hello.length); // one byte after the name
});

malformed('HELLO host name length 0 or above 64', () => {
  rejects(resize(patch(hello, P.HELLO_HOST_NAME_LENGTH_OFFSET, [0]), 42), ERR_MALFORMED, P.HELLO_HOST_NAME_LENGTH_OFFSET);
  rejects(resize(patch(hello, P.HELLO_HOST_NAME_LENGTH_OFFSET, [65]), 42 + 65), ERR_MALFORMED, P.HELLO_HOST_NAME_LENGTH_OFFSET);
});

malformed('host names with bytes outside A-Z a-z 0-9 _ . @ -', () => {
  for (const bad of [0xc3, 0x20, 0x2f, 0x00, 0x7f, 0x3a]) rejects(patch(hello, P.HELLO_HOST_NAME_OFFSET + 2, [bad]), ERR_MALFORMED, P.HELLO_HOST_NAME_OFFSET + 2);
  rejects(patch(challenge, P.CHALLENGE_HOST_NAME_OFFSET, [0xe9]), ERR_MALFORMED, P.CHALLENGE_HOST_NAME_OFFSET);
});

malformed('CHALLENGE with a name length 0, a short proof or trailing bytes', () => {
  rejects(patch(challenge, P.CHALLENGE_HOST_NAME_LENGTH_OFFSET, [0]), ERR_MALFORMED, P.CHALLENGE_HOST_NAME_LENGTH_OFFSET);
  rejects(patch(challenge, P.CHALLENGE_HOST_NAME_LENGTH_OFFSET, [65]), ERR_MALFORMED, P.CHALLENGE_HOST_NAME_LENGTH_OFFSET);
  rejects(resize(challenge, challenge.length - 5), ERR_MALFORMED);
  rejects(resize(challenge, challenge.length - 3), ERR_MALFORMED, challenge.length);
  rejects(resize(challenge, 10), ERR_MALFORMED);
});

malformed('PROOF and WELCOME of the wrong length', () => {
  const proof = encodeProof(proof32);
  rejects(resize(proof, 32), ERR_MALFORMED, 36);
  rejects(resize(proof, 34), ERR_MALFORMED, 37);
  const welcome = encodeWelcome(1, 1);
  rejects(resize(welcome, 8), ERR_MALFORMED, 12);
  rejects(resize(welcome, 10), ERR_MALFORMED, 13);
});

malformed('WELCOME with maxFramesPerBatch 0 or above 65535', () => {
  const welcome = encodeWelcome(1, 1);
  rejects(patch(welcome, P.WELCOME_MAX_FRAMES_OFFSET, u32(0)), ERR_MALFORMED, P.WELCOME_MAX_FRAMES_OFFSET);
  rejects(patch(welcome, P.WELCOME_MAX_FRAMES_OFFSET, u32(65536)), ERR_MALFORMED, P.WELCOME_MAX_FRAMES_OFFSET);
});

malformed('STREAM with a stream id of MAX_STREAMS or more', () => {
  rejects(patch(streamMsg, STREAM_ID_OFFSET, u32(MAX_STREAMS)), ERR_MALFORMED, STREAM_ID_OFFSET);
  rejects(patch(streamMsg, STREAM_ID_OFFSET, u32(0xffffffff)), ERR_MALFORMED, STREAM_ID_OFFSET);
  assert.is((decodeOne(patch(streamMsg, STREAM_ID_OFFSET, u32(MAX_STREAMS - 1))) as P.StreamMessage).streamId, 65535);
});

malformed('STREAM name lengths 0 or above 64, names with bytes outside the set', () => {
  for (const at of [STREAM_SOURCE_NAME_LENGTH_OFFSET, STREAM_DESTINATION_NAME_LENGTH_OFFSET]) {
    rejects(patch(streamMsg, at, [0]), ERR_MALFORMED, at);
    rejects(patch(streamMsg, at, [65]), ERR_MALFORMED, at);
  }
  rejects(patch(streamMsg, STREAM_NAMES_OFFSET, [0x80]), ERR_MALFORMED, STREAM_NAMES_OFFSET);
  rejects(patch(streamMsg, STREAM_NAMES_OFFSET + 5 + 4, [0x2f]), ERR_MALFORMED, STREAM_NAMES_OFFSET + 9);
});

malformed('STREAM cut short or with trailing bytes', () => {
  rejects(resize(streamMsg, 10), ERR_MALFORMED, 14); // before the name lengths
  rejects(resize(streamMsg, streamMsg.length - 4 - 1), ERR_MALFORMED, streamMsg.length - 1);
  rejects(resize(streamMsg, streamMsg.length - 4 + 1), ERR_MALFORMED, streamMsg.length);
  // Lengths that claim more than the message holds.
  rejects(patch(streamMsg, STREAM_DESTINATION_NAME_LENGTH_OFFSET, [6]), ERR_MALFORMED, streamMsg.length);
});

malformed('STREAM ids out of order or bound twice are the receiver\'s to refuse, not the decoder\'s', () => {
  // decodeMessage has no connection state: any id below MAX_STREAMS decodes.
  for (const id of [0, 7, 65535]) assert.is((decodeMessage(patch(streamMsg, STREAM_ID_OFFSET, u32(id))) as P.StreamMessage).streamId, id);
});

malformed('DATA with frameCount 0 or above 65535', () => {
  rejects(patch(data3, DATA_FRAME_COUNT_OFFSET, u32(0)), ERR_MALFORMED, DATA_FRAME_COUNT_OFFSET);
  rejects(patch(data3, DATA_FRAME_COUNT_OFFSET, u32(65536)), ERR_MALFORMED, DATA_FRAME_COUNT_OFFSET);
  rejects(patch(data3, DATA_FRAME_COUNT_OFFSET, u32(0xffffffff)), ERR_MALFORMED, DATA_FRAME_COUNT_OFFSET);
  rejects(resize(data3, 4), ERR_MALFORMED, 8);
});

malformed('DATA with more frames than this side announced: TOO_LARGE before anything else', () => {
  rejects(data3, ERR_TOO_LARGE, DATA_FRAME_COUNT_OFFSET, { maxFramesPerBatch: 2 });
  // Even when the runs are broken too.
  rejects(patch(data3, RUN0 + RUN_FRAME_COUNT_OFFSET, u32(0)), ERR_TOO_LARGE, DATA_FRAME_COUNT_OFFSET, { maxFramesPerBatch: 2 });
  assert.is(protocolError(() => decodeMessage(data3, 2), ERR_TOO_LARGE).offset, DATA_FRAME_COUNT_OFFSET);
  assert.is((decodeMessage(data3, 3) as DataMessage).frameCount, 3);
});

malformed('DATA run naming a stream id of MAX_STREAMS or more', () => {
  rejects(patch(data3, RUN0 + RUN_STREAM_OFFSET, u32(MAX_STREAMS)), ERR_MALFORMED, RUN0 + RUN_STREAM_OFFSET);
  rejects(patch(data3, RUN1 + RUN_STREAM_OFFSET, u32(0x80000000)), ERR_MALFORMED, RUN1 + RUN_STREAM_OFFSET);
});

malformed('DATA run naming an unbound stream is the receiver\'s to refuse (UNEXPECTED), not the decoder\'s', () => {
  const m = decodeMessage(patch(data3, RUN1 + RUN_STREAM_OFFSET, u32(65535)));
  assert.equal(runsOf(m).map((r) => r.streamId), [0, 65535]);
});

malformed('DATA run with runFrameCount 0, or more than frameCount leaves', () => {
  rejects(patch(data3, RUN0 + RUN_FRAME_COUNT_OFFSET, u32(0)), ERR_MALFORMED, RUN0 + RUN_FRAME_COUNT_OFFSET);
  rejects(patch(data3, RUN0 + RUN_FRAME_COUNT_OFFSET, u32(4)), ERR_MALFORMED, RUN0 + RUN_FRAME_COUNT_OFFSET);
  rejects(patch(data3, RUN1 + RUN_FRAME_COUNT_OFFSET, u32(2)), ERR_MALFORMED, RUN1 + RUN_FRAME_COUNT_OFFSET);
  rejects(patch(data3, RUN1 + RUN_FRAME_COUNT_OFFSET, u32(0xffffffff)), ERR_MALFORMED, RUN1 + RUN_FRAME_COUNT_OFFSET);
});

malformed('DATA runs that hold fewer frames than frameCount', () => {
  // frameCount 4, runs of 2 + 1 that end exactly at the message's end.
  rejects(patch(data3, DATA_FRAME_COUNT_OFFSET, u32(4)), ERR_MALFORMED, DATA_FRAME_COUNT_OFFSET);
});

malformed('DATA frames that overrun the message, or leave bytes after the last', () => {
  rejects(patch(data3, RUN1 + RUN_HEADER_LENGTH + FRAME_PAYLOAD_LENGTH_OFFSET, u32(4)), ERR_MALFORMED, RUN1 + RUN_HEADER_LENGTH + FRAME_PAYLOAD_LENGTH_OFFSET);
  rejects(patch(data3, RUN0_FRAME0 + FRAME_PAYLOAD_LENGTH_OFFSET, u32(0xffffffff)), ERR_MALFORMED, RUN0_FRAME0 + FRAME_PAYLOAD_LENGTH_OFFSET);
  // One byte too few for the last payload: the decoder sees a frame that overruns.
  rejects(resize(data3, data3.length - 4 - 1), ERR_MALFORMED, RUN1 + RUN_HEADER_LENGTH + FRAME_PAYLOAD_LENGTH_OFFSET);
  // Bytes after the last frame: too few for a run header, or a run header with no frames left.
  rejects(resize(data3, data3.length - 4 + 3), ERR_MALFORMED, data3.length);
  rejects(resize(data3, data3.length - 4 + 8), ERR_MALFORMED, data3.length + RUN_FRAME_COUNT_OFFSET);
  // A frame header cut short: frame 0's payload grown to leave 2 bytes, too few for frame 1's header.
  const p0 = data3.length - RUN0_FRAME0 - FRAME_HEADER_LENGTH - 2;
  rejects(patch(data3, RUN0_FRAME0 + FRAME_PAYLOAD_LENGTH_OFFSET, u32(p0)), ERR_MALFORMED, RUN0_FRAME0 + FRAME_HEADER_LENGTH + p0);
  rejects(resize(data3, RUN0_FRAME0 + 4 - 4), ERR_MALFORMED, RUN0_FRAME0);
});

malformed('ACK with count 0 or above 65535, or not matching the entries', () => {
  rejects(patch(ack2, ACK_COUNT_OFFSET, u32(0)), ERR_MALFORMED, ACK_COUNT_OFFSET);
  rejects(patch(ack2, ACK_COUNT_OFFSET, u32(65536)), ERR_MALFORMED, ACK_COUNT_OFFSET);
  rejects(patch(ack2, ACK_COUNT_OFFSET, u32(3)), ERR_MALFORMED, ack2.length);
  rejects(patch(ack2, ACK_COUNT_OFFSET, u32(1)), ERR_MALFORMED, ENTRY1);
  rejects(resize(ack2, ack2.length - 4 + 1), ERR_MALFORMED, ack2.length);
  rejects(resize(ack2, 6), ERR_MALFORMED, 10);
});

malformed('ACK entry with a stream id of MAX_STREAMS or more', () => {
  rejects(patch(ack2, ENTRY1 + ACK_ENTRY_STREAM_OFFSET, u32(MAX_STREAMS)), ERR_MALFORMED, ENTRY1 + ACK_ENTRY_STREAM_OFFSET);
});

malformed('ACK entry with an unknown status, UNKNOWN_HOST (5) included', () => {
  for (const status of [5, 6, 255]) rejects(patch(ack2, ENTRY1 + ACK_ENTRY_STATUS_OFFSET, [status]), ERR_MALFORMED, ENTRY1 + ACK_ENTRY_STATUS_OFFSET);
});

malformed('ACK `through` is the receiver\'s to check, not the decoder\'s', () => {
  for (const through of [0, 0xffffffff]) {
    assert.equal(ackEntries(decodeMessage(patch(ack2, ACK_ENTRIES_OFFSET + ACK_ENTRY_THROUGH_OFFSET, u32(through))))[0], { streamId: 0, through, status: ACK_DELIVERED });
  }
});

malformed('ERROR whose messageLength does not match', () => {
  const err = encodeError(ERR_SHUTTING_DOWN, 'bye');
  rejects(patch(err, P.ERROR_TEXT_LENGTH_OFFSET, [4, 0]), ERR_MALFORMED, err.length);
  rejects(patch(err, P.ERROR_TEXT_LENGTH_OFFSET, [2, 0]), ERR_MALFORMED, err.length - 1);
  rejects(resize(err, 3), ERR_MALFORMED, 7);
});

malformed('a fault in a later message is reported at its stream offset', () => {
  const bad = patch(data3, RUN1 + RUN_STREAM_OFFSET, u32(MAX_STREAMS));
  const decoder = new MessageDecoder();
  decoder.push(Buffer.concat([encodeProof(proof32), streamMsg, bad]));
  assert.is(decoder.next()!.type, MSG_PROOF);
  assert.is(decoder.next()!.type, MSG_STREAM);
  const e = protocolError(() => decoder.next(), ERR_MALFORMED);
  assert.is(e.streamOffset, P.PROOF_MESSAGE_LENGTH + streamMsg.length);
  assert.is(e.offset, RUN1);
  assert.match(e.message, new RegExp(`at offset ${RUN1} of a DATA message \\(stream byte ${P.PROOF_MESSAGE_LENGTH + streamMsg.length + RUN1}\\)`));
});

malformed('1000 random inputs give messages or a ProtocolError, never another exception', () => {
  const rnd = seededRandom(0x5eed);
  const byte = () => Math.floor(rnd() * 256);
  const outcomes = { messages: 0, protocolErrors: 0, incomplete: 0 };
  const codes = new Set<number>();
  const valid = everyMessage();
  for (let round = 0; round < 1000; round++) {
    const length = Math.floor(rnd() * 600);
    const buf = Buffer.alloc(length);
    for (let i = 0; i < length; i++) buf[i] = byte();
    const style = round % 4;
    if (style === 1 && length >= 5) {
      // A plausible header so that the body parsers run on random bytes.
      buf.writeUInt32LE(Math.floor(rnd() * (length - 3)), 0);
      buf[4] = 1 + Math.floor(rnd() * 8);
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
        buf[at + 4] = 1 + Math.floor(rnd() * 8);
        at += 4 + n;
      }
    }
    const decoder = new MessageDecoder({ maxMessageBytes: 1024, maxFramesPerBatch: 1 + Math.floor(rnd() * 4) });
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
      assert.ok(err.offset >= 0, 'a fault in the bytes has an offset');
      codes.add(err.wireCode);
      outcomes.protocolErrors++;
    }
    // decodeMessage alone on the same bytes, as one message: same rule.
    if (buf.length >= 5) {
      const one = Buffer.from(buf);
      one.writeUInt32LE(one.length - 4, 0);
      try {
        decodeMessage(one);
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
      }
    }
  }
  assert.ok(outcomes.protocolErrors > 100, JSON.stringify(outcomes));
  assert.ok(outcomes.messages > 0, JSON.stringify(outcomes));
  assert.ok(codes.has(ERR_MALFORMED) && codes.has(ERR_TOO_LARGE), [...codes].join());
});

malformed.run();

// ---------------------------------------------------------------------------

const writer = suite('DataBatchWriter');

writer('consecutive frames of one stream share one run header', () => {
  const w = new DataBatchWriter();
  for (let i = 0; i < 3; i++) assert.ok(w.append(5, 100 + i, Buffer.alloc(10, i), 0, 10));
  assert.is(w.count, 3);
  assert.is(w.byteLength, DATA_RUNS_OFFSET + RUN_HEADER_LENGTH + 3 * (FRAME_HEADER_LENGTH + 10));
  const msg = Buffer.from(w.finish()!);
  assert.is(msg.length, DATA_RUNS_OFFSET + RUN_HEADER_LENGTH + 3 * (FRAME_HEADER_LENGTH + 10));
  assert.is(msg.readUInt32LE(0), msg.length - 4);
  assert.is(msg[4], MSG_DATA);
  assert.is(msg.readUInt32LE(DATA_FRAME_COUNT_OFFSET), 3);
  assert.is(msg.readUInt32LE(DATA_RUNS_OFFSET + RUN_STREAM_OFFSET), 5);
  assert.is(msg.readUInt32LE(DATA_RUNS_OFFSET + RUN_FRAME_COUNT_OFFSET), 3);
  assert.equal(runsOf(decodeOne(msg)).map((r) => [r.streamId, r.frames.map((f) => f.sequence)]), [[5, [100, 101, 102]]]);
});

writer('a new stream starts a new run; coming back to a stream starts another', () => {
  const frames = [frame(1, 1), frame(1, 2), frame(2, 1), frame(1, 3), frame(1, 4), frame(0, 7)];
  const w = new DataBatchWriter();
  const msg = encodeData(frames, w);
  const runs = runsOf(decodeOne(msg));
  assert.equal(runs.map((r) => [r.streamId, r.frames.length]), [[1, 2], [2, 1], [1, 2], [0, 1]]);
  const payloads = frames.reduce((n, f) => n + FRAME_HEADER_LENGTH + f.payload.length, 0);
  assert.is(msg.length, DATA_RUNS_OFFSET + 4 * RUN_HEADER_LENGTH + payloads);
});

writer('fits counts a run header only for a new stream', () => {
  const w = new DataBatchWriter({ maxMessageBytes: 1024 });
  assert.ok(w.append(0, 0, Buffer.alloc(500), 0, 500)); // bodyLength 21 + 500 = 521, 503 left
  assert.ok(w.fits(0, 503 - FRAME_HEADER_LENGTH));
  assert.not.ok(w.fits(0, 503 - FRAME_HEADER_LENGTH + 1));
  assert.ok(w.fits(1, 503 - FRAME_HEADER_LENGTH - RUN_HEADER_LENGTH));
  assert.not.ok(w.fits(1, 503 - FRAME_HEADER_LENGTH - RUN_HEADER_LENGTH + 1));
  assert.not.ok(w.append(1, 1, Buffer.alloc(490), 0, 490), 'a new stream needs 8 more bytes');
  assert.ok(w.append(0, 1, Buffer.alloc(490), 0, 490), 'the same stream fits');
  const msg = w.finish()!;
  assert.is(msg.readUInt32LE(0), 521 + 8 + 490);
  assert.ok(msg.readUInt32LE(0) <= 1024);
});

writer('refuses a frame that would exceed maxMessageBytes, and takes it in the next batch', () => {
  const w = new DataBatchWriter({ maxMessageBytes: 1024 });
  const payload = Buffer.alloc(400);
  assert.ok(w.append(0, 1, payload, 0, 400));
  assert.ok(w.append(0, 2, payload, 0, 400));
  const before = w.byteLength;
  assert.not.ok(w.append(0, 3, payload, 0, 400));
  assert.is(w.count, 2);
  assert.is(w.byteLength, before);
  const first = decodeOne(Buffer.from(w.finish()!), { maxMessageBytes: 1024 });
  assert.equal(framesOf(first).map((f) => f.sequence), [1, 2]);
  assert.ok(w.append(0, 3, payload, 0, 400));
  assert.equal(framesOf(decodeOne(Buffer.from(w.finish()!))).map((f) => f.sequence), [3]);
});

writer('refuses a frame past maxFrames', () => {
  const w = new DataBatchWriter({ maxFrames: 2 });
  assert.ok(w.append(0, 1, Buffer.alloc(0), 0, 0));
  assert.ok(w.append(1, 2, Buffer.alloc(0), 0, 0));
  assert.not.ok(w.append(1, 3, Buffer.alloc(0), 0, 0));
  assert.not.ok(w.fits(1, 0));
  assert.is(w.count, 2);
  assert.is((decodeOne(Buffer.from(w.finish()!), { maxFramesPerBatch: 2 }) as DataMessage).frameCount, 2);
});

writer('false on an empty batch means the frame can never be sent', () => {
  const w = new DataBatchWriter({ maxMessageBytes: 1024 });
  assert.not.ok(w.append(0, 1, Buffer.alloc(1024 - 20), 0, 1024 - 20));
  assert.is(w.count, 0);
  assert.is(w.finish(), null);
  assert.ok(w.append(0, 1, Buffer.alloc(1024 - 21), 0, 1024 - 21));
  assert.is(w.finish()!.readUInt32LE(0), 1024);
});

writer('a finished message is never written again by later batches', () => {
  const w = new DataBatchWriter({ initialCapacity: 256 });
  const rnd = seededRandom(3);
  const kept: [Buffer, Buffer][] = [];
  for (let batch = 0; batch < 300; batch++) {
    const frames = 1 + Math.floor(rnd() * 5);
    for (let i = 0; i < frames; i++) {
      const n = Math.floor(rnd() * 200);
      assert.ok(w.append(i % 2, batch, Buffer.alloc(n, batch & 0xff), 0, n));
    }
    const view = w.finish()!;
    kept.push([view, Buffer.from(view)]);
  }
  for (const [view, copy] of kept) assert.ok(view.equals(copy));
  assert.is(framesOf(decodeOne(kept[0]![0]))[0]!.sequence, 0);
  assert.is(framesOf(decodeOne(kept[299]![0]))[0]!.sequence, 299);
});

writer('a batch larger than the slab moves to a new one, keeping its frames', () => {
  const w = new DataBatchWriter({ initialCapacity: 64 });
  const frames = [frame(0, 1, Buffer.alloc(10, 1)), frame(0, 2, Buffer.alloc(100, 2)), frame(1, 3, Buffer.alloc(1000, 3)), frame(1, 4, Buffer.alloc(5, 4))];
  assert.equal(framesOf(decodeOne(encodeData(frames, w))), specs(frames));
  throwsInvalid(() => new DataBatchWriter({ initialCapacity: 8 }), 'below DATA_RUNS_OFFSET');
});

writer('finish returns null when empty and starts a new batch; reset drops the batch', () => {
  const w = new DataBatchWriter();
  assert.is(w.finish(), null);
  assert.is(w.byteLength, 0);
  w.append(0, 1, Buffer.alloc(1), 0, 1);
  assert.is(w.count, 1);
  assert.ok(w.finish());
  assert.is(w.count, 0);
  assert.is(w.byteLength, 0);
  assert.is(w.finish(), null);
  w.append(3, 1, Buffer.alloc(1), 0, 1);
  w.reset();
  assert.is(w.count, 0);
  assert.is(w.finish(), null);
  w.append(4, 2, Buffer.alloc(1), 0, 1);
  assert.equal(runsOf(decodeOne(Buffer.from(w.finish()!))).map((r) => r.streamId), [4], 'the reset run is gone');
});

writer('rejects a stream id outside 0..65535 without touching the batch', () => {
  const w = new DataBatchWriter();
  w.append(0, 1, Buffer.alloc(1), 0, 1);
  for (const bad of [MAX_STREAMS, -1, 1.5, 2 ** 32]) throwsInvalid(() => w.append(bad, 2, Buffer.alloc(1), 0, 1), `streamId ${bad}`);
  assert.is(w.count, 1);
  assert.is((decodeOne(Buffer.from(w.finish()!)) as DataMessage).frameCount, 1);
});

writer('limits change only between batches', () => {
  const w = new DataBatchWriter();
  w.append(0, 1, Buffer.alloc(1), 0, 1);
  throwsInvalid(() => w.setLimits(2048, 10), 'during a batch');
  w.finish();
  w.setLimits(2048, 1);
  assert.ok(w.append(0, 1, Buffer.alloc(1), 0, 1));
  assert.not.ok(w.append(0, 2, Buffer.alloc(1), 0, 1));
  w.finish();
  throwsInvalid(() => w.setLimits(100, 1), 'maxMessageBytes below 1024');
  throwsInvalid(() => w.setLimits(2048, 0), 'maxFrames 0');
  throwsInvalid(() => w.setLimits(2048, 65536), 'maxFrames 65536');
});

writer.run();

// ---------------------------------------------------------------------------

const encoders = suite('protocol encoders');

encoders('refuse arguments that would make an invalid message', () => {
  throwsInvalid(() => encodeHello(Buffer.alloc(31), 'alpha'), 'short nonce');
  throwsInvalid(() => encodeHello(nonceC, ''), 'empty name');
  throwsInvalid(() => encodeHello(nonceC, 'h'.repeat(65)), 'long name');
  throwsInvalid(() => encodeHello(nonceC, 'al pha'), 'space');
  throwsInvalid(() => encodeHello(nonceC, 'alpha', 65536), 'version');
  throwsInvalid(() => encodeChallenge(nonceA, 'beta', Buffer.alloc(33)), 'long proof');
  throwsInvalid(() => encodeProof(Buffer.alloc(0)), 'empty proof');
  throwsInvalid(() => encodeWelcome(1, 0), 'maxFrames 0');
  throwsInvalid(() => encodeWelcome(1, 65536), 'maxFrames 65536');
  throwsInvalid(() => encodeWelcome(-1, 1), 'bootId');
  throwsInvalid(() => encodeStream(MAX_STREAMS, 0, 0, 'a', 'b'), 'streamId 65536');
  throwsInvalid(() => encodeStream(-1, 0, 0, 'a', 'b'), 'streamId -1');
  throwsInvalid(() => encodeStream(0, 2 ** 32, 0, 'a', 'b'), 'sourceIndex');
  throwsInvalid(() => encodeStream(0, 0, -1, 'a', 'b'), 'sourceGeneration');
  throwsInvalid(() => encodeStream(0, 0, 0, '', 'b'), 'empty source');
  throwsInvalid(() => encodeStream(0, 0, 0, 'a', 'b'.repeat(65)), 'long destination');
  throwsInvalid(() => encodeStream(0, 0, 0, 'a/b', 'b'), 'slash');
  throwsInvalid(() => encodeStream(0, 0, 0, 'a', 'bé'), 'non-ASCII');
  throwsInvalid(() => encodeAck([]), 'no entries');
  throwsInvalid(() => encodeAck([{ streamId: 1, through: 1, status: 5 as AckStatus }]), 'status 5');
  throwsInvalid(() => encodeAck([{ streamId: MAX_STREAMS, through: 1, status: 0 }]), 'streamId 65536');
  throwsInvalid(() => encodeAck([{ streamId: 0, through: -1, status: 0 }]), 'through');
  throwsInvalid(() => encodeError(0, 'x'), 'code 0');
  throwsInvalid(() => encodeError(65536, 'x'), 'code 65536');
});

encoders.run();

// ---------------------------------------------------------------------------

const proofs = suite('protocol handshake proofs');

const secret = 'correct horse battery staple';

proofs('acceptor and connector proofs differ', () => {
  const a = acceptorProof(secret, nonceC, nonceA, 'alpha', 'beta');
  const c = connectorProof(secret, nonceC, nonceA, 'alpha', 'beta');
  assert.is(a.length, 32);
  assert.is(c.length, 32);
  assert.not.ok(verifyProof(a, c));
});

proofs('verify accepts the right proof and rejects another nonce, name or secret', () => {
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
  throwsInvalid(() => acceptorProof('', nonceC, nonceA, 'alpha', 'beta'), 'empty secret');
  throwsInvalid(() => connectorProof(Buffer.alloc(0), nonceC, nonceA, 'alpha', 'beta'), 'empty secret bytes');
});

proofs('verify rejects proofs of the wrong length without throwing', () => {
  const good = acceptorProof(secret, nonceC, nonceA, 'alpha', 'beta');
  assert.not.ok(verifyProof(good, good.subarray(0, 31)));
  assert.not.ok(verifyProof(good, Buffer.concat([good, Buffer.alloc(1)])));
  assert.not.ok(verifyProof(good.subarray(0, 31), good.subarray(0, 31)));
  assert.not.ok(verifyProof(good, 'not bytes' as unknown as Uint8Array));
});

proofs('nonces are fresh 32-byte values', () => {
  const a = newNonce();
  const b = newNonce();
  assert.is(a.length, 32);
  assert.not.ok(a.equals(b));
});

proofs.run();

// ---------------------------------------------------------------------------

const machines = suite('protocol handshake state machines');

const clusterSecret = Buffer.from('0123456789abcdef-cluster');

function acceptorFor(secretBytes: Uint8Array | string = clusterSecret, peers = ['alpha', 'gamma']): AcceptorHandshake {
  return new AcceptorHandshake({ secret: secretBytes, selfName: 'beta', isPeer: (name) => peers.includes(name) && name !== 'beta', bootId: 0xb007, maxFramesPerBatch: 256 });
}

/** Bytes -> the one message they hold, through a stream decoder at the handshake limit. */
function wire(bytes: Buffer): Message {
  assert.ok(bytes.length - 4 <= HANDSHAKE_MAX_MESSAGE_BYTES, 'handshake messages fit the handshake limit');
  return decodeOne(bytes, { maxMessageBytes: HANDSHAKE_MAX_MESSAGE_BYTES });
}

machines('a full handshake: HELLO, CHALLENGE, PROOF, WELCOME', () => {
  const connector = new ConnectorHandshake(clusterSecret, 'alpha', 'beta');
  const acceptor = acceptorFor();
  const hello = wire(connector.hello()) as P.HelloMessage;
  assert.is(hello.type, MSG_HELLO);
  assert.is(hello.hostName, 'alpha');
  assert.is(acceptor.peer, null);
  const challenge = wire(acceptor.onMessage(hello));
  assert.is(challenge.type, MSG_CHALLENGE);
  assert.is((challenge as P.ChallengeMessage).hostName, 'beta');
  assert.is(acceptor.peer, 'alpha');
  assert.not.ok(acceptor.done);
  const proof = connector.onMessage(challenge);
  assert.ok(Buffer.isBuffer(proof));
  const welcome = wire(acceptor.onMessage(wire(proof as Buffer)));
  assert.ok(acceptor.done);
  assert.equal(connector.onMessage(welcome), { bootId: 0xb007, maxFramesPerBatch: 256 });
});

machines('a string secret and its bytes are the same key', () => {
  const connector = new ConnectorHandshake(clusterSecret.toString('utf8'), 'alpha', 'beta');
  const acceptor = acceptorFor(clusterSecret);
  const proof = connector.onMessage(wire(acceptor.onMessage(wire(connector.hello()))));
  assert.is(wire(acceptor.onMessage(wire(proof as Buffer))).type, MSG_WELCOME);
});

machines('a wrong secret: the connector refuses the CHALLENGE with AUTH_FAILED', () => {
  const connector = new ConnectorHandshake(Buffer.from('another-secret-of-16+'), 'alpha', 'beta');
  const acceptor = acceptorFor();
  const challenge = wire(acceptor.onMessage(wire(connector.hello())));
  const e = protocolError(() => connector.onMessage(challenge), ERR_AUTH_FAILED);
  assert.is(e.offset, -1);
  assert.is(e.streamOffset, -1);
});

machines('a wrong proof: the acceptor refuses the PROOF with AUTH_FAILED, and a replay fails', () => {
  const acceptor = acceptorFor();
  const connector = new ConnectorHandshake(clusterSecret, 'alpha', 'beta');
  acceptor.onMessage(wire(connector.hello()));
  protocolError(() => acceptor.onMessage(wire(encodeProof(proof32))), ERR_AUTH_FAILED);
  assert.not.ok(acceptor.done);
  // A PROOF recorded from a good handshake, replayed against a fresh nonceA.
  const a1 = acceptorFor();
  const c1 = new ConnectorHandshake(clusterSecret, 'alpha', 'beta');
  const hello1 = wire(c1.hello());
  const recorded = c1.onMessage(wire(a1.onMessage(hello1))) as Buffer;
  const a2 = acceptorFor();
  a2.onMessage(hello1);
  protocolError(() => a2.onMessage(wire(recorded)), ERR_AUTH_FAILED);
});

machines('an unknown host: HELLO from a host not in the config, or from itself', () => {
  for (const name of ['delta', 'beta']) {
    const acceptor = acceptorFor();
    const e = protocolError(() => acceptor.onMessage(wire(encodeHello(nonceC, name))), ERR_UNKNOWN_HOST);
    assert.match(e.message, name);
    assert.is(acceptor.peer, null);
  }
});

machines('an unknown host: a CHALLENGE from a host other than the one dialled', () => {
  const connector = new ConnectorHandshake(clusterSecret, 'alpha', 'beta');
  const impostor = new AcceptorHandshake({ secret: clusterSecret, selfName: 'gamma', isPeer: () => true, bootId: 1, maxFramesPerBatch: 1 });
  const challenge = wire(impostor.onMessage(wire(connector.hello())));
  protocolError(() => connector.onMessage(challenge), ERR_UNKNOWN_HOST);
});

machines('out-of-order messages are UNEXPECTED', () => {
  const acceptor = acceptorFor();
  protocolError(() => acceptor.onMessage(wire(encodeProof(proof32))), ERR_UNEXPECTED);
  protocolError(() => acceptor.onMessage(wire(encodeStream(0, 0, 0, 'a', 'b'))), ERR_UNEXPECTED);
  protocolError(() => acceptor.onMessage(wire(encodeData([frame(0, 1)]))), ERR_UNEXPECTED);
  const connector = new ConnectorHandshake(clusterSecret, 'alpha', 'beta');
  protocolError(() => connector.onMessage(wire(encodeWelcome(1, 1))), ERR_UNEXPECTED);
  protocolError(() => connector.onMessage(wire(encodeAck([{ streamId: 0, through: 1, status: 0 }]))), ERR_UNEXPECTED);
  // A second HELLO after the first; a second CHALLENGE after PROOF was sent.
  const a = acceptorFor();
  const c = new ConnectorHandshake(clusterSecret, 'alpha', 'beta');
  const hello = wire(c.hello());
  const challenge = wire(a.onMessage(hello));
  protocolError(() => a.onMessage(hello), ERR_UNEXPECTED);
  c.onMessage(challenge);
  protocolError(() => c.onMessage(challenge), ERR_UNEXPECTED);
});

machines('after WELCOME the acceptor\'s handshake takes nothing more', () => {
  const a = acceptorFor();
  const c = new ConnectorHandshake(clusterSecret, 'alpha', 'beta');
  const hello = wire(c.hello());
  const proof = c.onMessage(wire(a.onMessage(hello))) as Buffer;
  const welcome = wire(a.onMessage(wire(proof)));
  assert.ok(a.done);
  const e = protocolError(() => a.onMessage(hello), ERR_UNEXPECTED);
  assert.match(e.message, 'after the handshake');
  c.onMessage(welcome);
  protocolError(() => c.onMessage(welcome), ERR_UNEXPECTED);
});

machines.run();

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
  assert.not.ok(isSequenceAfter(0xfffffff0, 5));
});

serial.run();

// ---------------------------------------------------------------------------

const errors = suite('ProtocolError');

errors('is a BusError with code ERR_SHMBUS_PROTOCOL and the wire code', () => {
  const e = new ProtocolError(ERR_MALFORMED, 'bad', 12, 100);
  assert.instance(e, BusError);
  assert.instance(e, Error);
  assert.is(e.code, 'ERR_SHMBUS_PROTOCOL');
  assert.ok(isBusError(e, 'ERR_SHMBUS_PROTOCOL'));
  assert.is(e.wireCode, ERR_MALFORMED);
  assert.is(e.name, 'ProtocolError [MALFORMED]');
  assert.equal([e.offset, e.streamOffset], [12, 100]);
  const state = new ProtocolError(ERR_UNEXPECTED, 'not now');
  assert.equal([state.offset, state.streamOffset], [-1, -1]);
  assert.is(state.name, 'ProtocolError [UNEXPECTED]');
});

errors('the decoder throws them', () => {
  const e = protocolError(() => decodeMessage(Buffer.from([1, 0, 0, 0, 0])), ERR_MALFORMED);
  assert.ok(isBusError(e, 'ERR_SHMBUS_PROTOCOL'));
});

errors.run();

// ---------------------------------------------------------------------------

const doc = suite('docs/PROTOCOL.md');

const root = join(__dirname, '..');
const text = readFileSync(join(root, 'docs', 'PROTOCOL.md'), 'utf8');
const codecSource = readFileSync(join(root, 'relay', 'codec.ts'), 'utf8');

function example(name: string): Buffer {
  const m = new RegExp(`<!-- example:${name} -->\\n\`\`\`text\\n([\\s\\S]*?)\\n\`\`\``).exec(text);
  assert.ok(m, `example ${name} is in the document`);
  assert.match(m![1]!, /^([0-9a-f]{2}( [0-9a-f]{2}){0,15}\n)*[0-9a-f]{2}( [0-9a-f]{2}){0,15}$/, `example ${name}: 16 hex bytes a line`);
  return Buffer.from(m![1]!.replace(/\s+/g, ''), 'hex');
}

/** Rows (cells trimmed) of every table whose header starts with `header`, grouped by table. */
function tableGroups(header: string): string[][][] {
  const groups: string[][][] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]!.startsWith(header)) continue;
    const rows: string[][] = [];
    for (let j = i + 2; j < lines.length && lines[j]!.startsWith('|'); j++) rows.push(lines[j]!.split('|').slice(1, -1).map((c) => c.trim()));
    groups.push(rows);
  }
  return groups;
}

function tables(header: string): string[][] {
  return tableGroups(header).flat();
}

/** The section from heading `heading` to the next heading of the same or a higher level. */
function section(heading: string): string {
  const start = text.indexOf(`\n${heading}\n`);
  assert.ok(start >= 0, `${heading} is in the document`);
  const level = heading.indexOf(' ');
  const rest = text.slice(start + heading.length + 2);
  const end = rest.search(new RegExp(`\\n#{1,${level}} `));
  return end < 0 ? rest : rest.slice(0, end);
}

const exportsOf = P as unknown as Record<string, unknown>;

/** The constants of codec.ts in the order of the file: re-exports `X as NAME` and `export const NAME =`, numbers and strings. */
function declaredConstants(): string[] {
  const names: { at: number; name: string }[] = [];
  for (const m of codecSource.matchAll(/^export const ([A-Z0-9_]+) = /gm)) names.push({ at: m.index!, name: m[1]! });
  for (const block of codecSource.matchAll(/^export \{([^}]*)\} from /gm)) {
    for (const m of block[1]!.matchAll(/\bas ([A-Z0-9_]+)/g)) names.push({ at: block.index! + m.index!, name: m[1]! });
  }
  return names
    .sort((a, b) => a.at - b.at)
    .map((n) => n.name)
    .filter((n) => typeof exportsOf[n] === 'number' || typeof exportsOf[n] === 'string');
}

doc('it is the document of this version, and names the new modules', () => {
  assert.match(text.split('\n')[0]!, new RegExp(`^# shmbus relay wire protocol, version ${PROTOCOL_VERSION}$`));
  for (const file of ['relay/codec.ts', 'relay/stream-decoder.ts', 'relay/batch-writer.ts', 'relay/handshake.ts']) assert.ok(text.includes(file), file);
  assert.not.ok(text.includes('protocol.ts'), 'the old relay/protocol.ts is gone');
  const data = section('### DATA (5)');
  assert.not.ok(/^\| (frameId|flags|sourceName|destinationName) \|/m.test(data), 'no per-frame id, flags or names in the DATA tables');
  assert.ok(data.includes('**No flags field.**'));
});

doc('the hex examples are what the encoders write', () => {
  assert.is(example('hello').toString('hex'), encodeHello(Buffer.alloc(32), 'alpha').toString('hex'));
  assert.is(example('stream').toString('hex'), encodeStream(0, 1, 2, 'a1', 'b1').toString('hex'));
  const w = new DataBatchWriter();
  assert.ok(w.append(0, 3, Buffer.from('hi'), 0, 2));
  assert.ok(w.append(0, 4, Buffer.from('yo!'), 0, 3));
  assert.is(example('data').toString('hex'), w.finish()!.toString('hex'));
  const ack = encodeAck([
    { streamId: 0, through: 2, status: ACK_DELIVERED },
    { streamId: 1, through: 5, status: ACK_EXPIRED },
  ]);
  assert.is(example('ack').toString('hex'), ack.toString('hex'));
});

doc('the ERROR example is what a version-2 acceptor answers a version-1 HELLO', () => {
  const e = rejects(encodeHello(Buffer.alloc(32), 'alpha', 1), ERR_BAD_VERSION, HELLO_VERSION_OFFSET);
  assert.is(example('error').toString('hex'), encodeError(e.wireCode, e.message).toString('hex'));
  const shown = decodeMessage(example('error')) as P.ErrorMessage;
  assert.ok(text.includes(`"${shown.message}"`), 'the text is quoted in the example table');
  // The mixed-versions section quotes both directions' texts.
  const mixed = section('### Mixed versions').replace(/\s+/g, ' ');
  assert.ok(mixed.includes(shown.message), 'v1 -> v2 text');
  assert.ok(mixed.includes(shown.message.replace('protocolVersion 1; this side speaks 2', 'protocolVersion 2; this side speaks 1')), 'v2 -> v1 text');
});

doc('the examples decode to the fields their tables show', () => {
  assert.equal(plain(decodeMessage(example('hello'))), { type: MSG_HELLO, flags: 0, nonce: '00'.repeat(32), hostName: 'alpha' });
  assert.equal(decodeMessage(example('stream')), { type: MSG_STREAM, streamId: 0, sourceIndex: 1, sourceGeneration: 2, sourceName: 'a1', destinationName: 'b1' });
  assert.equal(runsOf(decodeMessage(example('data'))), [{ streamId: 0, frames: [{ sequence: 3, payload: Buffer.from('hi').toString('hex') }, { sequence: 4, payload: Buffer.from('yo!').toString('hex') }] }]);
  assert.equal(ackEntries(decodeMessage(example('ack'))), [
    { streamId: 0, through: 2, status: 0 },
    { streamId: 1, through: 5, status: 3 },
  ]);
  // Every "| offset | bytes | field |" row: the bytes shown are at that offset of its example.
  const names = ['hello', 'stream', 'data', 'ack', 'error'];
  const groups = tableGroups('| offset | bytes | field |');
  assert.is(groups.length, names.length);
  groups.forEach((rows, g) => {
    const bytes = example(names[g]!);
    for (const [offset, shown] of rows) {
      const hex = /^`([0-9a-f ]+?)(?: …)?`(?: × (\d+))?$/.exec(shown!);
      assert.ok(hex, `${names[g]} row ${offset}: ${shown}`);
      let want = hex![1]!.replace(/ /g, '');
      if (hex![2] !== undefined) want = want.repeat(Number(hex![2]));
      assert.is(bytes.toString('hex', Number(offset), Number(offset) + want.length / 2), want, `${names[g]} at ${offset}`);
    }
  });
});

doc('the proof example is HMAC-SHA256 of the inputs shown, and what handshake.ts computes', () => {
  const key = example('secret');
  const zeros = Buffer.alloc(32);
  const ones = Buffer.alloc(32, 1);
  const a = example('proof-a');
  const c = example('proof-c');
  assert.is(createHmac('sha256', key).update(example('a-input')).digest('hex'), a.toString('hex'));
  assert.is(createHmac('sha256', key).update(example('c-input')).digest('hex'), c.toString('hex'));
  assert.is(acceptorProof(key.toString('utf8'), zeros, ones, 'alpha', 'beta').toString('hex'), a.toString('hex'));
  assert.is(connectorProof(key, zeros, ones, 'alpha', 'beta').toString('hex'), c.toString('hex'));
  assert.ok(example('a-input').toString('latin1').startsWith(P.ACCEPTOR_PROOF_LABEL));
  assert.ok(example('c-input').toString('latin1').startsWith(P.CONNECTOR_PROOF_LABEL));
});

doc('every field table names existing constants at the offsets it gives, and its fields follow each other', () => {
  const groups = tableGroups('| field | offset | size | type | constant | meaning |');
  assert.is(groups.length, 12, 'framing, 8 messages, run, frame, ACK entry');
  let checked = 0;
  for (const rows of groups) {
    let next = -1;
    for (const [field, offset, size, , constant] of rows) {
      if (/^\d+$/.test(offset!)) {
        if (next >= 0 && field !== 'body') assert.is(Number(offset), next, `${field} starts where the previous field ends`);
        next = /^\d+$/.test(size!) ? Number(offset) + Number(size) : -1;
      } else {
        next = -1;
      }
      if (constant === '') continue;
      const m = /^`([A-Z0-9_]+)`$/.exec(constant!);
      assert.ok(m, `constant cell of ${field}: ${constant}`);
      const value = exportsOf[m![1]!];
      assert.type(value, 'number', `${m![1]} is a codec.ts constant`);
      if (/^\d+$/.test(offset!)) {
        assert.is(value, Number(offset), `${field}: ${m![1]} = ${String(value)}, table says ${offset}`);
        checked++;
      }
    }
  }
  assert.ok(checked > 50, String(checked));
});

doc('each message section\'s table gives the layout the encoder writes', () => {
  const layouts: [string, Buffer, Record<string, number>][] = [
    ['### HELLO (1)', encodeHello(nonceC, 'alpha'), { hostName: P.HELLO_HOST_NAME_OFFSET }],
    ['### STREAM (8)', encodeStream(9, 1, 2, 'src', 'dst'), { streamId: STREAM_ID_OFFSET, sourceName: STREAM_NAMES_OFFSET }],
    ['### DATA (5)', encodeData([frame(0, 1)]), { frameCount: DATA_FRAME_COUNT_OFFSET, runs: DATA_RUNS_OFFSET }],
    ['### ACK (6)', ack2, { count: ACK_COUNT_OFFSET, entries: ACK_ENTRIES_OFFSET }],
  ];
  for (const [heading, , fields] of layouts) {
    const body = section(heading);
    for (const [field, offset] of Object.entries(fields)) assert.match(body, new RegExp(`\\| ${field} \\| ${offset} \\|`), `${heading}: ${field} at ${offset}`);
  }
  // The stated message lengths.
  assert.match(section('### STREAM (8)'), /u32 = 15 \+ s \+ d/);
  assert.is(encodeStream(0, 0, 0, 'abc', 'de').readUInt32LE(0), 15 + 3 + 2);
  assert.match(section('### ACK (6)'), /u32 = 5 \+ 9k/);
  assert.is(ack2.readUInt32LE(0), 5 + 9 * 2);
  assert.match(section('### HELLO (1)'), /u16 = 2 /);
});

doc('the constants appendix lists every constant of codec.ts with its value, in the order of the file', () => {
  const appendix = section('## All constants');
  const listed = new Map([...appendix.matchAll(/^\| `([A-Z0-9_]+)` \| (.+?) \|$/gm)].map((m) => [m[1]!, m[2]!]));
  const declared = declaredConstants();
  assert.ok(declared.includes('MAX_STREAMS') && declared.includes('MSG_STREAM') && declared[0] === 'ACK_DELIVERED', declared.slice(0, 3).join());
  assert.equal([...listed.keys()], declared);
  for (const name of declared) {
    const value = exportsOf[name];
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
  for (const [code, , constant] of rows) assert.is(exportsOf[constant!.slice(1, -1)], Number(code));
});

doc('the fault table gives every fault a known code; the version row says this version', () => {
  const rows = tables('| fault | code |');
  assert.ok(rows.length >= 12);
  const names = new Set(Object.values(WIRE_ERROR_TABLE).map((e) => e.name));
  for (const [fault, code] of rows) assert.ok(names.has(code as never), `${fault}: ${code}`);
  assert.ok(rows.some(([fault, code]) => fault === `HELLO protocolVersion ≠ ${PROTOCOL_VERSION}` && code === 'BAD_VERSION'));
  assert.ok(rows.some(([fault, code]) => /STREAM whose id is not the next unused one/.test(fault!) && code === 'UNEXPECTED'));
  assert.ok(rows.some(([fault, code]) => /stream id of 65536 or more/.test(fault!) && code === 'MALFORMED'));
});

doc('the ACK status table is the wire part of OUTCOME_TABLE', () => {
  const rows = tables('| status | name | constant | meaning |');
  const wire = Object.entries(OUTCOME_TABLE).filter(([, o]) => o.ack);
  assert.equal(
    rows.map(([status, name, constant, meaning]) => [Number(status), name, constant, meaning]),
    wire.map(([status, o]) => [Number(status), o.name, `\`ACK_${o.name}\``, o.meaning]),
  );
  for (const [status, , constant] of rows) assert.is(exportsOf[constant!.slice(1, -1)], Number(status));
  assert.ok(section('### ACK (6)').includes(`The value ${OUTCOME_UNKNOWN_HOST} (\`OUTCOME_UNKNOWN_HOST\``));
});

doc('the message type table is MESSAGE_TYPE_NAMES, with the direction of each', () => {
  const rows = tables('| type | name | constant |');
  assert.equal(
    rows.map(([type, name, constant]) => [Number(type), name, constant]),
    Object.entries(MESSAGE_TYPE_NAMES).map(([type, name]) => [Number(type), name, `\`MSG_${name}\``]),
  );
  for (const [type, , constant] of rows) assert.is(exportsOf[constant!.slice(1, -1)], Number(type));
  const sentBy = Object.fromEntries(rows.map(([, name, , by]) => [name, by]));
  assert.equal(sentBy, { HELLO: 'connector', CHALLENGE: 'acceptor', PROOF: 'connector', WELCOME: 'acceptor', DATA: 'connector', ACK: 'acceptor', ERROR: 'either', STREAM: 'connector' });
  // Every message type has a section.
  for (const [type, name] of Object.entries(MESSAGE_TYPE_NAMES)) section(`### ${name} (${type})`);
});

doc('the connection state tables say which side sends what when OPEN', () => {
  const [acceptorRows, connectorRows] = tableGroups('| state | entered when | may receive | on it | sends |');
  const open = (rows: string[][] | undefined) => rows!.find(([state]) => state === 'OPEN')!;
  assert.equal([open(acceptorRows)[2], open(acceptorRows)[4]], ['STREAM, DATA', 'ACK']);
  assert.equal([open(connectorRows)[2], open(connectorRows)[4]], ['ACK', 'STREAM, DATA']);
});

doc('the version history has a row for every version up to this one', () => {
  const rows = tables('| version | change |');
  assert.equal(rows.map(([v]) => Number(v)), Array.from({ length: PROTOCOL_VERSION }, (_, i) => i + 1));
  assert.match(rows[PROTOCOL_VERSION - 1]![1]!, /STREAM \(8\)/);
});

doc('the numbers quoted from the relay are the relay\'s', () => {
  const outbound = readFileSync(join(root, 'relay', 'outbound.ts'), 'utf8');
  const delivery = readFileSync(join(root, 'relay', 'delivery.ts'), 'utf8');
  const park = /const PARK_TIMEOUT_MS = (\d+);/.exec(outbound);
  const retry = /const RETRY_MAX_MS = (\d+);/.exec(delivery);
  assert.ok(park && retry);
  assert.ok(text.includes(`\`PARK_TIMEOUT_MS\` =\n${park![1]} ms`) || text.includes(`\`PARK_TIMEOUT_MS\` = ${park![1]} ms`), 'PARK_TIMEOUT_MS');
  assert.ok(text.includes(`at most ${retry![1]} ms`), 'RETRY_MAX_MS');
  assert.ok(outbound.includes('`gone.${index}.${generation}`') && text.includes('`gone.<sourceIndex>.<sourceGeneration>`'), 'gone name');
  assert.ok(text.includes(`\`MIN_SECRET_LENGTH\` = ${MIN_SECRET_LENGTH} bytes`), 'MIN_SECRET_LENGTH');
  assert.match(text, /\(default 2000 ms, at most `ttlMs`\)/);
});

doc('the shared secret is read as the document says', () => {
  const dir = mkdtempSync(join(tmpdir(), 'shmbus-protocol-'));
  try {
    const hosts = { alpha: { relay: '127.0.0.1:7001', namespace: 'alpha' }, beta: { relay: '127.0.0.1:7002', namespace: 'beta' } };
    const key = (content: string | Buffer): Buffer => {
      const file = join(dir, 'cluster.secret');
      writeFileSync(file, content);
      chmodSync(file, 0o600);
      // A relative path: resolved against the config's folder (baseDir), not the working directory.
      return validateConfig({ secret: { file: 'cluster.secret' }, hosts }, dir, 'alpha', {}).secret;
    };
    const s = '0123456789abcdef';
    assert.is(key(s).toString(), s);
    assert.is(key(`${s}\n`).toString(), s, 'one LF dropped');
    assert.is(key(`${s}\r\n`).toString(), s, 'one CRLF dropped');
    assert.is(key(`${s}\n\n`).toString(), `${s}\n`, 'only one line end dropped');
    assert.is(key(`${s} \t`).toString(), `${s} \t`, 'other whitespace kept');
    assert.is(key(`${s}\r`).toString(), `${s}\r`, 'a lone CR kept');
    assert.is(key(Buffer.from([0xff, 0x00, ...Buffer.from(s)])).toString('hex'), Buffer.from([0xff, 0x00, ...Buffer.from(s)]).toString('hex'), 'raw bytes, no decoding');
    assert.throws(() => key(`${s.slice(1)}\n`), (e: unknown) => isBusError(e, 'ERR_SHMBUS_INVALID_CONFIG') && /at least 16 bytes; it is 15 bytes/.test((e as Error).message), '15 bytes after the newline');
    const env = validateConfig({ secret: { env: 'K' }, hosts }, dir, 'alpha', { K: `${s}\n` }).secret;
    assert.is(env.toString(), `${s}\n`, 'an environment secret keeps its newline');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

doc.run();
