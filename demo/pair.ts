/**
 * One side of a demo pair, run as its own process by demo/run.ts:
 *   pair.ts receiver <namespace> <count>
 *   pair.ts sender   <namespace> <count> <destination>   (destination: "receiver" or "receiver@host")
 * Uses the public API only.
 */
import { Bus } from '../src/index';

const [role, namespace, countArg, destination = 'receiver'] = process.argv.slice(2);
const count = Number(countArg ?? 5);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** `bus.send`, waiting for room when the destination (or the relay) is full. */
async function send(bus: Bus, to: string, text: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!bus.send(to, encoder.encode(text))) {
    if (Date.now() > deadline) throw new Error(`${to} stayed full for 5 s`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

async function receiver(): Promise<void> {
  const bus = await Bus.open({ name: 'receiver', namespace });
  console.log('ready');
  let received = 0;
  for await (const frame of bus.frames()) {
    console.log(`got "${decoder.decode(frame.payload)}" from ${frame.source} (seq ${frame.sequence})`);
    if (++received === count) {
      await send(bus, frame.source, `received all ${count}`);
      break;
    }
  }
  const s = bus.stats();
  console.log(`inbox: received ${s.received}, parked ${s.parks} time(s), woken ${s.wakeups} time(s) by the doorbell`);
  await bus.close();
}

async function sender(): Promise<void> {
  const bus = await Bus.open({ name: 'sender', namespace });
  for (let i = 1; i <= count; i++) {
    const text = `hello #${i} from pid ${process.pid}`;
    await send(bus, destination, text);
    console.log(`sent "${text}" to ${destination}`);
  }
  for await (const reply of bus.frames()) {
    console.log(`reply "${decoder.decode(reply.payload)}" from ${reply.source}`);
    break;
  }
  await bus.close();
}

(role === 'receiver' ? receiver() : sender()).catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
