/**
 * The mesh's processes (./mesh.ts starts them inside a host's namespace):
 *
 *   mesh-producer '<MeshProducerArgs>'  one Bus that sends K frames to each of
 *       several destinations, interleaved: frame 0 to every destination, then
 *       frame 1, ... (all streams at once). A full outbound lane is waited on
 *       (sendAsync, woken as acks free it); a relay that is not running is
 *       waited for. Prints `ready`, `start <epoch ms>`, `done sent <n> waits <w> <epoch ms>`.
 *   mesh-sink '<MeshSinkArgs>'  receives `count` frames, checking each (./payload:
 *       per producer id the next sequence, intact filler), lingers to see
 *       extra frames, prints `ready`, `progress <n>` (optional), `complete <epoch ms>`
 *       when the last expected frame arrived, then
 *       `received <total> errors <e> <id>:<n> ...` (ids ascending) and the first
 *       errors as `error <text>` lines. Exits 1 at its deadline (after printing
 *       what it had).
 *
 * Usage: node [--import tsx] mesh-child.(ts|js) <role> '<json args>'.
 */
import { setImmediate as yieldToLoop, setTimeout as sleep } from 'node:timers/promises';
import { Bus, type Sender } from '../src/index';
import type { MeshProducerArgs, MeshSinkArgs } from './mesh';
import { FrameChecker, encodePayload } from './payload';

async function meshProducer(args: MeshProducerArgs): Promise<void> {
  const bus = Bus.openSync({ name: args.name, namespace: args.ns, dir: args.dir });
  console.log('ready');
  const end = Date.now() + args.deadlineMs;
  const payload = new Uint8Array(args.payloadSize ?? 32);
  const senders: Sender[] = [];
  let sent = 0;
  let waits = 0;
  const started = Date.now();
  console.log(`start ${started}`);
  for (let seq = 0; seq < args.count; seq++) {
    for (let d = 0; d < args.dests.length; d++) {
      encodePayload(payload, args.id, seq);
      for (;;) {
        if (Date.now() > end) throw new Error(`deadline: sent ${sent} of ${args.count * args.dests.length} within ${args.deadlineMs} ms`);
        try {
          const sender = (senders[d] ??= bus.sender(args.dests[d]!));
          if (sender.send(payload)) break;
          waits++;
          if (await sender.sendAsync(payload, { timeoutMs: 1000 })) break;
        } catch (err) {
          if ((err as { code?: string }).code !== 'ERR_SHMBUS_RELAY_UNAVAILABLE') throw err;
          waits++;
          await sleep(5);
        }
      }
      sent++;
    }
    if (args.paceMs !== undefined) {
      const due = started + (args.paceMs * (seq + 1)) / args.count;
      if (Date.now() < due) await sleep(due - Date.now());
    } else if ((seq & 0x3f) === 0x3f) await yieldToLoop();
  }
  console.log(`done sent ${sent} waits ${waits} ${Date.now()}`);
  await bus.close();
}

async function meshSink(args: MeshSinkArgs): Promise<void> {
  const bus = Bus.openSync({ name: args.name, namespace: args.ns, dir: args.dir });
  const checker = new FrameChecker();
  const report = () => {
    const counts = [...checker.next.entries()].sort((x, y) => x[0] - y[0]).map(([id, n]) => `${id}:${n}`);
    console.log(`received ${checker.total} errors ${checker.errorCount} ${counts.join(' ')}`);
    for (const e of checker.errors) console.log(`error ${e}`);
  };
  const giveUp = setTimeout(() => {
    console.log(`deadline: ${checker.total} of ${args.count} frames within ${args.deadlineMs} ms`);
    report();
    process.exit(1);
  }, args.deadlineMs);
  console.log('ready');
  for await (const frame of bus.frames()) {
    checker.check(frame.payload, 0, frame.payload.length);
    if (checker.total === args.count) {
      console.log(`complete ${Date.now()}`);
      break;
    }
    if (args.progressEvery !== undefined && checker.total % args.progressEvery === 0) console.log(`progress ${checker.total}`);
  }
  // Anything after the expected count is a frame delivered twice (or one nobody sent).
  const until = performance.now() + args.lingerMs;
  while (performance.now() < until) {
    const extra = bus.recvFromLocal();
    if (extra === null) await sleep(5);
    else checker.check(extra.payload, 0, extra.payload.length);
  }
  clearTimeout(giveUp);
  report();
  await bus.close();
}

const [role, json] = process.argv.slice(2);
const run = role === 'mesh-producer' ? meshProducer(JSON.parse(json ?? '{}') as MeshProducerArgs) : role === 'mesh-sink' ? meshSink(JSON.parse(json ?? '{}') as MeshSinkArgs) : Promise.reject(new Error(`unknown role ${role}`));
run.catch((err: unknown) => {
  console.error(err);
  process.exit(70);
});
