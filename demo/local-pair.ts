/**
 * One side of the local demo pair: `receiver` or `sender`, run as separate
 * processes by demo/run.ts. Uses the public API only.
 */
import { Bus } from '../src/index';

const [role, namespace, countArg] = process.argv.slice(2);
const count = Number(countArg ?? 5);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function receiver(): Promise<void> {
  const bus = await Bus.open({ name: 'receiver', namespace });
  console.log('ready');
  let received = 0;
  for await (const frame of bus.frames()) {
    console.log(`got "${decoder.decode(frame.payload)}" from ${frame.source} (seq ${frame.sequence})`);
    if (++received === count) {
      await bus.sendToLocalAsync(frame.source, encoder.encode(`received all ${count}`), { timeoutMs: 5000 });
      break;
    }
  }
  console.log(`stats: ${JSON.stringify(bus.stats())}`);
  await bus.close();
}

async function sender(): Promise<void> {
  const bus = await Bus.open({ name: 'sender', namespace });
  for (let i = 1; i <= count; i++) {
    const text = `hello #${i} from pid ${process.pid}`;
    if (!(await bus.sendToLocalAsync('receiver', encoder.encode(text), { timeoutMs: 5000 }))) throw new Error('receiver inbox stayed full');
    console.log(`sent "${text}"`);
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
