/**
 * Baselines: Node.js stream sockets between processes, Unix-domain (the
 * default) or TCP on loopback (`transport: 'tcp'`), with the same code, the
 * same framing and the same batching for both.
 *
 * Framing: u32 LE payload length, then the payload (see common.ts for the
 * payload layout). The receiver parses every frame, including frames split
 * across reads, and checks each one.
 *
 * TCP: the server listens on 127.0.0.1 port 0 and reports the port in its
 * ready message (the runner passes it to the clients); both ends set
 * TCP_NODELAY, as the transit relay does on its peer connections, so one
 * socket.write is one segment on the wire.
 *
 * Roles (spawned by run.ts, one process each):
 *   sink      listens; counts and checks frames from `producers` connections
 *   source    connects; sends frames, `batch` frames per socket.write
 *   echo      listens; writes every frame back
 *   ping      connects; one frame out, waits for it to come back, repeat
 */
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import {
  KIND_END,
  KIND_MEASURED,
  Phases,
  ThroughputChecker,
  childMain,
  filler,
  readSeq,
  rttResult,
  stamp,
  tell,
  waitForGo,
  type RoleArgs,
} from './common';

const HEADER = 4;

/** Splits a byte stream into length-prefixed frames. */
class FrameParser {
  private readonly partial: Buffer;
  private have = 0;

  constructor(
    private readonly maxPayload: number,
    private readonly onFrame: (bytes: Uint8Array, offset: number, length: number) => void,
  ) {
    this.partial = Buffer.alloc(HEADER + maxPayload);
  }

  push(chunk: Buffer): void {
    let offset = 0;
    const end = chunk.length;
    if (this.have > 0) {
      // Complete the frame split across the previous read.
      const partial = this.partial;
      while (this.have < HEADER && offset < end) partial[this.have++] = chunk[offset++]!;
      if (this.have < HEADER) return;
      const length = partial.readUInt32LE(0);
      if (length > this.maxPayload) throw new Error(`frame length ${length} > ${this.maxPayload}`);
      const take = Math.min(HEADER + length - this.have, end - offset);
      chunk.copy(partial, this.have, offset, offset + take);
      this.have += take;
      offset += take;
      if (this.have < HEADER + length) return;
      this.have = 0;
      this.onFrame(partial, HEADER, length);
    }
    while (offset + HEADER <= end) {
      const length = chunk.readUInt32LE(offset);
      if (length > this.maxPayload) throw new Error(`frame length ${length} > ${this.maxPayload}`);
      if (offset + HEADER + length > end) break;
      this.onFrame(chunk, offset + HEADER, length);
      offset += HEADER + length;
    }
    if (offset < end) {
      chunk.copy(this.partial, 0, offset, end);
      this.have = end - offset;
    }
  }
}

const LOOPBACK = '127.0.0.1';

function isTcp(args: RoleArgs): boolean {
  return args.transport === 'tcp';
}

/** Listen on the UDS path or on a TCP loopback port; resolves with the server and the ready message to send. */
function listen(args: RoleArgs, onConnection: (socket: Socket) => void): Promise<{ server: ReturnType<typeof createServer>; ready: object }> {
  const tcp = isTcp(args);
  if (!tcp) rmSync(args.path!, { force: true });
  const server = createServer((socket) => {
    if (tcp) socket.setNoDelay(true);
    onConnection(socket);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = () => resolve({ server, ready: tcp ? { type: 'ready', port: (server.address() as AddressInfo).port } : { type: 'ready' } });
    if (tcp) server.listen(0, LOOPBACK, done);
    else server.listen(args.path!, done);
  });
}

function connect(args: RoleArgs): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = isTcp(args) ? createConnection({ host: LOOPBACK, port: args.port! }, () => resolve(socket)) : createConnection(args.path!, () => resolve(socket));
    if (isTcp(args)) socket.setNoDelay(true);
    socket.once('error', reject);
  });
}

function removeSocketFile(args: RoleArgs): void {
  if (!isTcp(args)) rmSync(args.path!, { force: true });
}

/** Throughput receiver: `producers` connections into one process. */
async function sink(args: RoleArgs): Promise<void> {
  const producers = args.producers ?? 1;
  const checker = new ThroughputChecker(args.size, producers);
  let finish!: () => void;
  let fail!: (err: unknown) => void;
  const finished = new Promise<void>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  const { server, ready } = await listen(args, (socket) => {
    const parser = new FrameParser(args.size, (bytes, offset, length) => checker.frame(bytes, offset, length));
    socket.on('data', (chunk: Buffer) => {
      try {
        parser.push(chunk);
      } catch (err) {
        fail(err);
      }
      if (checker.done) finish();
    });
    socket.on('error', fail);
  });
  await tell(ready);
  await finished;
  server.close();
  const result = checker.result();
  if (checker.errors > 0) throw new Error(`sink: ${checker.errors} error(s); first: ${checker.firstError}`);
  await tell(result);
  removeSocketFile(args);
}

/** Throughput sender: `batch` frames per write, a new buffer per write (the socket may still hold the last one). */
async function source(args: RoleArgs): Promise<void> {
  const socket = await connect(args);
  const size = args.size;
  const batch = args.batch ?? 1;
  const id = args.id ?? 0;
  const frameBytes = HEADER + size;
  const template = Buffer.alloc(frameBytes * batch);
  const payload = filler(size);
  for (let k = 0; k < batch; k++) {
    template.writeUInt32LE(size, k * frameBytes);
    template.set(payload, k * frameBytes + HEADER);
  }
  await tell({ type: 'ready' });
  const phases = new Phases(args, await waitForGo());
  let seq = 0;
  let last = false;
  await new Promise<void>((resolve, reject) => {
    socket.on('error', reject);
    const pump = () => {
      while (!last) {
        const buffer = Buffer.allocUnsafe(frameBytes * batch);
        template.copy(buffer);
        for (let k = 0; k < batch; k++) {
          const kind = phases.kind(seq);
          stamp(buffer, k * frameBytes + HEADER, size, seq, kind, id);
          seq++;
          if (kind === KIND_END) {
            last = true;
            socket.end(buffer.subarray(0, (k + 1) * frameBytes), resolve);
            return;
          }
        }
        if (!socket.write(buffer)) {
          socket.once('drain', pump);
          return;
        }
      }
    };
    pump();
  });
  await tell({ type: 'done', sent: seq, errors: 0 });
}

/** Ping-pong server: write every frame back as it came. */
async function echo(args: RoleArgs): Promise<void> {
  let echoed = 0;
  let errors = 0;
  let finish!: () => void;
  let fail!: (err: unknown) => void;
  const finished = new Promise<void>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  const { server, ready } = await listen(args, (socket) => {
    let expected = 0;
    const parser = new FrameParser(args.size, (bytes, offset, length) => {
      const seq = readSeq(bytes, offset);
      if (seq !== expected || length !== args.size || bytes[offset + length - 1] !== (seq & 0xff)) errors++;
      expected = (seq + 1) >>> 0;
      // The frame as received (a copy: the parser may reuse its partial buffer).
      socket.write(Buffer.from(bytes.subarray(offset - HEADER, offset + length)));
      echoed++;
      if (bytes[offset + 4] === KIND_END) finish();
    });
    socket.on('data', (chunk: Buffer) => {
      try {
        parser.push(chunk);
      } catch (err) {
        fail(err);
      }
    });
    socket.on('error', fail);
    socket.on('end', () => socket.end());
  });
  await tell(ready);
  await finished;
  server.close();
  await tell({ type: 'done', sent: echoed, errors });
  removeSocketFile(args);
}

/** Ping-pong client: measures each round trip. */
async function ping(args: RoleArgs): Promise<void> {
  const socket = await connect(args);
  const size = args.size;
  const template = Buffer.alloc(HEADER + size);
  template.writeUInt32LE(size, 0);
  template.set(filler(size), HEADER);
  const samples = new Float64Array(args.maxCount + 1);
  await tell({ type: 'ready' });
  const phases = new Phases(args, await waitForGo());
  let seq = 0;
  let count = 0;
  let errors = 0;
  let kind = 0;
  let sentAt = 0;
  let measureStart = 0;
  let measureEnd = 0;
  await new Promise<void>((resolve, reject) => {
    const sendNext = () => {
      kind = phases.kind(seq);
      if (kind !== 0 && measureStart === 0) measureStart = performance.now();
      const buffer = Buffer.allocUnsafe(HEADER + size);
      template.copy(buffer);
      stamp(buffer, HEADER, size, seq, kind, 0);
      sentAt = performance.now();
      socket.write(buffer);
    };
    const parser = new FrameParser(size, (bytes, offset, length) => {
      const now = performance.now();
      const got = readSeq(bytes, offset);
      if (got !== seq || length !== size || bytes[offset + length - 1] !== (seq & 0xff)) errors++;
      if (kind === KIND_MEASURED || kind === KIND_END) samples[count++] = now - sentAt;
      seq++;
      if (kind === KIND_END) {
        measureEnd = now;
        socket.end();
        resolve();
      } else {
        sendNext();
      }
    });
    socket.on('data', (chunk: Buffer) => {
      try {
        parser.push(chunk);
      } catch (err) {
        reject(err);
      }
    });
    socket.on('error', reject);
    sendNext();
  });
  if (errors > 0) throw new Error(`ping: ${errors} bad replies`);
  await tell(rttResult(samples, count, (measureEnd - measureStart) / 1000, errors));
}

if (require.main === module) childMain({ sink, source, echo, ping });
