/**
 * Hostile and hand-driven peers for relay security tests: a raw TCP client
 * that speaks (or breaks) the relay wire protocol byte by byte, and a relay
 * process started from the CLI with any arguments (config errors, a second
 * relay, another secret). Sockets and processes are closed by `cleanupAll`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { MSG_CHALLENGE, MSG_WELCOME, encodeHello, encodeProof, type ChallengeMessage, type Message, type WelcomeMessage } from '../../relay/codec';
import { connectorProof, newNonce } from '../../relay/handshake';
import { MessageDecoder } from '../../relay/stream-decoder';
import { deadline, jsonLines, registerCleanup } from './index';

const RELAY_CLI = join(__dirname, '..', '..', 'relay', 'cli.ts');

/** A raw connection to or from a relay. */
export interface Rogue {
  readonly socket: Socket;
  /** Every chunk written, in order (to replay a recorded session). */
  readonly written: Buffer[];
  /** Every byte received so far. */
  received(): Buffer;
  write(bytes: Uint8Array): void;
  /** The next message the relay sent; rejects if the connection closes first. */
  next(ms?: number): Promise<Message>;
  /** Resolves when the relay has closed the connection (end or reset). */
  closed(ms?: number): Promise<void>;
  /** True once the relay closed the connection. */
  readonly isClosed: boolean;
  destroy(): void;
}

/** Connect to 127.0.0.1:`port`, behind a deadline. */
export async function rogueConnect(port: number, ms = 5000): Promise<Rogue> {
  const socket = connect({ host: '127.0.0.1', port });
  const rogue = wrapSocket(socket);
  await deadline(new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject)), ms, `TCP connect to 127.0.0.1:${port}`);
  return rogue;
}

/** A fake relay listening on 127.0.0.1 (ephemeral port): hands out the connections it accepts. */
export interface RogueAcceptor {
  readonly port: number;
  /** The next connection a relay opened to us. */
  next(ms?: number): Promise<Rogue>;
}

export async function rogueAcceptor(): Promise<RogueAcceptor> {
  const accepted: Rogue[] = [];
  let wake: (() => void) | null = null;
  const all = new Set<Socket>();
  const server = createServer((socket) => {
    all.add(socket);
    accepted.push(wrapSocket(socket));
    const w = wake;
    wake = null;
    w?.();
  });
  registerCleanup(() => {
    server.close();
    for (const s of all) s.destroy();
  });
  await deadline(new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve)), 5000, 'fake relay listening');
  return {
    port: (server.address() as AddressInfo).port,
    next(ms = 10_000) {
      return deadline(
        new Promise<Rogue>((resolve) => {
          const check = () => {
            if (accepted.length > 0) resolve(accepted.shift()!);
            else wake = check;
          };
          check();
        }),
        ms,
        'a relay connecting to the fake relay',
      );
    },
  };
}

/** Decode what arrives on `socket`, record what is written; closed by cleanupAll. */
function wrapSocket(socket: Socket): Rogue {
  registerCleanup(() => socket.destroy());
  const decoder = new MessageDecoder();
  const messages: Message[] = [];
  const written: Buffer[] = [];
  const received: Buffer[] = [];
  let closed = false;
  let decodeError: Error | null = null;
  let wake: (() => void) | null = null;
  const notify = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  socket.on('data', (chunk: Buffer) => {
    received.push(chunk);
    if (decodeError === null) {
      try {
        decoder.feed(chunk, (m) => messages.push(m));
      } catch (err) {
        decodeError = err as Error;
      }
    }
    notify();
  });
  // A reset after an ERROR is expected: tests look at messages and closing only.
  socket.on('error', () => {});
  const closedPromise = new Promise<void>((resolve) =>
    socket.on('close', () => {
      closed = true;
      notify();
      resolve();
    }),
  );
  return {
    socket,
    written,
    received: () => Buffer.concat(received),
    write(bytes) {
      const b = Buffer.from(bytes);
      written.push(b);
      socket.write(b);
    },
    next(wait = 5000) {
      return deadline(
        new Promise<Message>((resolve, reject) => {
          const check = () => {
            if (messages.length > 0) resolve(messages.shift()!);
            else if (decodeError !== null) reject(decodeError);
            else if (closed) reject(new Error('connection closed before a message arrived'));
            else wake = check;
          };
          check();
        }),
        wait,
        'a message from the relay',
      );
    },
    closed: (wait = 5000) => deadline(closedPromise, wait, 'the relay closing the connection'),
    get isClosed() {
      return closed;
    },
    destroy: () => socket.destroy(),
  };
}

/** What a completed (or attempted) connector handshake sent and received. */
export interface Handshake {
  readonly rogue: Rogue;
  readonly hello: Buffer;
  readonly challenge: ChallengeMessage;
  readonly proof: Buffer;
}

/**
 * Run the connector side as host `self` toward `acceptor`: HELLO, read the
 * CHALLENGE, send PROOF computed with `secret` — without checking the
 * acceptor's proof (a rogue does not care). The caller reads what comes next
 * (WELCOME or ERROR).
 */
export async function rogueHandshake(port: number, self: string, acceptor: string, secret: Uint8Array | string): Promise<Handshake> {
  const rogue = await rogueConnect(port);
  const nonceC = newNonce();
  const hello = encodeHello(nonceC, self);
  rogue.write(hello);
  const challenge = await rogue.next();
  if (challenge.type !== MSG_CHALLENGE) throw new Error(`expected CHALLENGE, got message type ${challenge.type}`);
  const proof = encodeProof(connectorProof(secret, nonceC, challenge.nonce, self, acceptor));
  rogue.write(proof);
  return { rogue, hello, challenge, proof };
}

/** A full, correct connector handshake; resolves after WELCOME. */
export async function rogueOpen(port: number, self: string, acceptor: string, secret: Uint8Array | string): Promise<Handshake & { welcome: WelcomeMessage }> {
  const h = await rogueHandshake(port, self, acceptor, secret);
  const welcome = await h.rogue.next();
  if (welcome.type !== MSG_WELCOME) throw new Error(`expected WELCOME, got message type ${welcome.type}`);
  return { ...h, welcome };
}

/** A transit-server process started with arbitrary arguments. */
export interface RelayRun {
  readonly process: ChildProcess;
  readonly lines: string[];
  events(name?: string): Array<Record<string, unknown>>;
  event(name: string, ms?: number, predicate?: (e: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  /** Resolves once the process has exited and its output has been read. */
  exited(ms?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
}

/** Run `transit-server <args>` (relay/cli.ts through tsx). Killed by cleanupAll if still running. */
export function runRelay(args: string[]): RelayRun {
  const proc = spawn(process.execPath, ['--import', 'tsx', RELAY_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  registerCleanup(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  const lines: string[] = [];
  let err = '';
  const waiters: Array<() => void> = [];
  const poke = () => {
    for (const w of waiters.splice(0)) w();
  };
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    lines.push(line);
    poke();
  });
  // 'close', not 'exit': every line the relay printed has been read by then.
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('close', (code, signal) => {
      resolve({ code, signal });
      poke();
    }),
  );
  const parsed = () => jsonLines(lines);
  return {
    process: proc,
    lines,
    events: (name) => parsed().filter((e) => name === undefined || e.event === name),
    event(name, ms = 10_000, predicate = () => true) {
      return deadline(
        new Promise((resolve, reject) => {
          const check = () => {
            const found = parsed().find((e) => e.event === name && predicate(e));
            if (found !== undefined) resolve(found);
            else if (proc.exitCode !== null || proc.signalCode !== null) reject(new Error(`relay exited before "${name}": ${lines.join('\n')} ${err}`));
            else waiters.push(check);
          };
          check();
        }),
        ms,
        `relay logging "${name}" (log: ${lines.slice(-5).join(' | ')} ${err.slice(-300)})`,
      );
    },
    exited: (ms = 15_000) => deadline(exit, ms, 'relay exiting'),
    stderr: () => err,
  };
}
