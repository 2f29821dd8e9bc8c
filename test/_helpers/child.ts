/**
 * A test's helper process. Usage: node --import tsx child.ts <role> '<json args>'.
 * Prints one line per milestone on stdout; the test waits for those lines.
 */
import { join } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { Bus } from '../../src/index';
import { FrameRing } from '../../src/ring';
import { Segment } from '../../src/segment';
import { SEGMENT_KIND_INBOX, inboxFileName } from '../../src/layout';

interface Args {
  dir: string;
  ns: string;
  name: string;
  dest?: string;
  count?: number;
  id?: number;
  payloadSize?: number;
  /** sink: print `progress <total>` every this many frames (off when absent). */
  progressEvery?: number;
}

const [role, json] = process.argv.slice(2);
const args = JSON.parse(json ?? '{}') as Args;

function openOwn(): Bus {
  return Bus.openSync({ name: args.name, namespace: args.ns, dir: args.dir });
}

/** Payload layout for ordered-delivery checks: u32 producer id, u32 sequence, then filler. */
function encode(buf: Uint8Array, id: number, seq: number): void {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  view.setUint32(0, id, true);
  view.setUint32(4, seq, true);
}

async function produce(): Promise<void> {
  const bus = openOwn();
  console.log('ready');
  const count = args.count ?? 1000;
  const payload = new Uint8Array(args.payloadSize ?? 16);
  let refusals = 0;
  for (let seq = 0; seq < count; seq++) {
    encode(payload, args.id ?? 0, seq);
    let spins = 0;
    for (;;) {
      try {
        if (bus.send(args.dest!, payload)) break;
      } catch (err) {
        // A dead relay with a full inbox: wait for its restart, as an application would.
        if ((err as { code?: string }).code !== 'ERR_SHMBUS_RELAY_UNAVAILABLE') throw err;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      refusals++;
      if (++spins % 64 === 0) await yieldToLoop();
    }
    if ((seq & 0xffff) === 0xffff) await yieldToLoop();
  }
  console.log(`done ${count} refusals ${refusals}`);
  await bus.close();
}

function claimInDestination(): { ring: FrameRing; position: number } {
  const segment = Segment.attach(join(args.dir, inboxFileName(args.ns, args.dest!)), SEGMENT_KIND_INBOX);
  const ring = new FrameRing(segment.buffer);
  return { ring, position: ring.claim() };
}

async function main(): Promise<void> {
  switch (role) {
    case 'producer':
      return produce();
    case 'claim-and-die': {
      openOwn();
      const { position } = claimInDestination();
      console.log(`claimed ${position}`);
      process.kill(process.pid, 'SIGKILL');
      return;
    }
    case 'claim-and-stall': {
      const bus = openOwn();
      const { ring, position } = claimInDestination();
      console.log(`claimed ${position}`);
      process.kill(process.pid, 'SIGSTOP');
      // Continued after the consumer's reclaim timeout: the late commit must fail.
      ring.write(position, { sourceIndex: 0, sourceGeneration: 0, sourceHost: 0, flags: 0 }, 0, 0, new Uint8Array(8));
      try {
        ring.commit(position);
        console.log('commit ok');
      } catch (err) {
        console.log(`commit ${(err as { code?: string }).code}`);
      }
      await bus.close();
      return;
    }
    case 'sink': {
      // Receive `count` frames; print one line per producer id with the count and any order error.
      const bus = openOwn();
      console.log('ready');
      const next = new Map<number, number>();
      let errors = 0;
      let total = 0;
      for await (const frame of bus.frames()) {
        const view = new DataView(frame.payload.buffer, frame.payload.byteOffset, frame.payload.byteLength);
        const id = view.getUint32(0, true);
        const seq = view.getUint32(4, true);
        if (seq !== (next.get(id) ?? 0)) {
          if (errors++ < 5) console.log(`order error: producer ${id} seq ${seq} expected ${next.get(id) ?? 0} from ${frame.source}`);
        }
        next.set(id, seq + 1);
        if (++total === args.count) break;
        if (args.progressEvery !== undefined && total % args.progressEvery === 0) console.log(`progress ${total}`);
      }
      const counts = [...next.entries()].sort((x, y) => x[0] - y[0]).map(([id, n]) => `${id}:${n}`);
      console.log(`received ${total} errors ${errors} ${counts.join(' ')}`);
      await bus.close();
      return;
    }
    case 'owner': {
      openOwn();
      console.log('ready');
      setInterval(() => {}, 1 << 30);
      return;
    }
    case 'echo': {
      const bus = openOwn();
      console.log('ready');
      let n = 0;
      for await (const frame of bus.frames()) {
        if (frame.payload.length === 0) break;
        bus.sendToLocal(frame.source, frame.payload);
        if (++n === (args.count ?? Infinity)) break;
      }
      console.log(`echoed ${n}`);
      await bus.close();
      return;
    }
    default:
      throw new Error(`unknown role ${role}`);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(70);
});
