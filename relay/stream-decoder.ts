/**
 * Cuts a relay connection's byte stream into messages (docs/PROTOCOL.md,
 * "Message framing") and decodes each with codec.ts. Memory stays bounded:
 * a length field is judged as soon as its 4 bytes arrive.
 */
import { BusError } from '../src/internal';
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  ERR_MALFORMED,
  ERR_TOO_LARGE,
  MAX_FRAMES_PER_MESSAGE,
  MAX_MAX_MESSAGE_BYTES,
  MESSAGE_LENGTH_FIELD_LENGTH,
  MESSAGE_LENGTH_OFFSET,
  MIN_MAX_MESSAGE_BYTES,
  ProtocolError,
  checkRange,
  invalid,
  type Message,
  type WireErrorCode,
} from './codec';
import { decodeMessage } from './decode';

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
