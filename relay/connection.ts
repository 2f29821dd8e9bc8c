/**
 * One TCP (or TLS) connection between two relays: framing, decoding, writes
 * with back-pressure, activity and byte counters, and a clean way to refuse
 * (an ERROR message, then close). The handshake and what messages mean belong
 * to the caller (pool.ts for connections we open, inbound.ts for ones we accept).
 */
import type { Socket } from 'node:net';
import { HANDSHAKE_MAX_MESSAGE_BYTES, ProtocolError, encodeError, type Message } from './codec';
import { MessageDecoder } from './stream-decoder';

let nextId = 1;

export type ConnectionState = 'connecting' | 'handshake' | 'ready' | 'closed';

export interface ConnectionEvents {
  /** A complete message arrived. Throwing a ProtocolError refuses the peer. */
  message(conn: Connection, msg: Message): void;
  /** The connection closed (once). `error` says why, if it was not a clean end. */
  closed(conn: Connection, error: Error | null): void;
  /** Writes may continue after back-pressure. */
  drained?(conn: Connection): void;
  /** Every message of a chunk read from the socket has been handled. */
  chunkDone?(conn: Connection): void;
}

export class Connection {
  readonly id = nextId++;
  state: ConnectionState = 'connecting';
  /** The authenticated peer host, once the handshake says who it is. */
  peer: string | null = null;
  framesIn = 0;
  framesOut = 0;
  bytesIn = 0;
  bytesOut = 0;
  lastActivity = performance.now();
  /** Set when we refused the peer (the wire code we sent). */
  refusedWith = 0;
  /** Set when the peer's bytes could not be decoded (a ProtocolError from the decoder). */
  malformed = false;
  private readonly decoder: MessageDecoder;
  private closeError: Error | null = null;
  private readonly maxMessageBytes: number;

  constructor(
    readonly socket: Socket,
    readonly direction: 'out' | 'in',
    maxMessageBytes: number,
    private readonly events: ConnectionEvents,
  ) {
    // Until the handshake is done, only handshake-sized messages are accepted.
    this.decoder = new MessageDecoder({ maxMessageBytes: HANDSHAKE_MAX_MESSAGE_BYTES });
    this.maxMessageBytes = maxMessageBytes;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.events.drained?.(this));
    socket.on('error', (err) => {
      this.closeError ??= err;
    });
    socket.on('close', () => this.onClose());
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    this.lastActivity = performance.now();
    let msg: Message | null;
    try {
      this.decoder.push(chunk);
      msg = this.decoder.next();
    } catch (err) {
      this.failed(err);
      return;
    }
    while (msg !== null) {
      try {
        // A ProtocolError thrown by the handler is a message not allowed here: a violation, refused like bad bytes.
        this.events.message(this, msg);
        if (this.isClosed) return;
        msg = this.decoder.next();
      } catch (err) {
        this.failed(err);
        return;
      }
    }
    this.events.chunkDone?.(this);
  }

  /** The peer sent bytes that are malformed or not allowed: refuse it (counted by the owner through `malformed`). */
  private failed(err: unknown): void {
    if (err instanceof ProtocolError) {
      this.malformed = true;
      this.refuse(err.wireCode, err.message);
    } else {
      this.destroy(err as Error);
    }
  }

  private onClose(): void {
    this.report();
  }

  private reported = false;

  /** Tell the owner, once, that this connection is over. */
  private report(): void {
    if (this.reported) return;
    this.reported = true;
    this.state = 'closed';
    this.events.closed(this, this.closeError);
  }

  /** Write an encoded message. Returns false when the socket buffers (wait for `drained`). */
  send(message: Buffer): boolean {
    if (this.state === 'closed') return false;
    this.bytesOut += message.length;
    this.lastActivity = performance.now();
    return this.socket.write(message);
  }

  /** The handshake completed: accept messages up to the configured limit. */
  authenticated(maxFramesPerBatch?: number): void {
    this.state = 'ready';
    this.decoder.setMaxMessageBytes(this.maxMessageBytes);
    if (maxFramesPerBatch !== undefined) this.decoder.setMaxFramesPerBatch(maxFramesPerBatch);
  }

  get isClosed(): boolean {
    return this.state === 'closed';
  }

  /** True while writes are buffered beyond the socket's high-water mark. */
  get congested(): boolean {
    return this.socket.writableNeedDrain;
  }

  /** Refuse the peer: send ERROR `code` and close. */
  refuse(code: number, message: string): void {
    if (this.state === 'closed') return;
    this.refusedWith = code;
    this.closeError = new Error(`refused peer: ${message}`);
    try {
      this.socket.end(encodeError(code, message));
    } catch {
      // the socket is already gone
    }
    setTimeout(() => this.socket.destroy(), 1000).unref();
    this.report();
  }

  /** Close at once. */
  destroy(error: Error | null = null): void {
    if (error !== null) this.closeError ??= error;
    this.socket.destroy();
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }
}

/**
 * The deadline of one stage of a connection (connect, handshake) that an event
 * loop running late cannot turn into a spurious timeout. Node runs due timers
 * before it reads sockets, so after a stall (a loaded machine, a long GC, a
 * SIGSTOP) a plain timer fires although the peer's answer is already waiting
 * in the socket. Here the expiry is put off to the check phase
 * (setImmediate), after the poll phase has read what the socket holds; then
 * the stage expires only if it made no progress since the deadline was armed
 * (`progress()` unchanged), else the deadline is armed again. Progress counts
 * protocol steps (a handshake has two per side), not bytes, so a peer cannot
 * keep a stage alive by trickling bytes: a stage whose last step completes it
 * ends — completed or expired — within (its steps) × ms.
 */
export class StageDeadline {
  private timer: NodeJS.Timeout | null;
  private seen: number;
  private cancelled = false;

  constructor(
    private readonly ms: number,
    private readonly progress: () => number,
    private readonly expire: () => void,
  ) {
    this.seen = progress();
    this.timer = setTimeout(this.fire, ms);
  }

  private readonly fire = (): void => {
    this.timer = null;
    setImmediate(() => {
      if (this.cancelled) return;
      const now = this.progress();
      if (now !== this.seen) {
        this.seen = now;
        this.timer = setTimeout(this.fire, this.ms);
        return;
      }
      this.cancelled = true;
      this.expire();
    });
  };

  /** The stage completed (or the connection closed): never expire. */
  cancel(): void {
    this.cancelled = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
