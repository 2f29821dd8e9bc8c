/**
 * relay/connection.ts StageDeadline: the connect and handshake deadlines of
 * relay connections. Node runs due timers before it reads sockets, so after
 * an event-loop stall a plain timer fires although the peer's answer already
 * waits in the socket — at 36 relays on two cores that turned into handshake
 * timeouts and reconnects (issue 9). Each case blocks the loop on purpose
 * while bytes arrive on a real loopback TCP connection.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { StageDeadline } from '../relay/connection';

const deadline = suite('relay: stage deadlines survive a stalled event loop');

/** Block the event loop for `ms` (as a loaded machine or a long GC would). */
function stall(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

/** A connected loopback pair: `received()` counts the chunks the server side has read. */
async function pair(): Promise<{ client: Socket; chunks: () => number; close(): void }> {
  let chunks = 0;
  let accepted: Socket | null = null;
  const server: Server = createServer((s) => {
    accepted = s;
    s.on('data', () => chunks++);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
  await new Promise<void>((resolve) => client.once('connect', resolve));
  while (accepted === null) await new Promise((r) => setImmediate(r));
  return {
    client,
    chunks: () => chunks,
    close() {
      client.destroy();
      (accepted as Socket | null)?.destroy();
      server.close();
    },
  };
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

deadline('a plain timer fires before bytes that arrived during a stall are read (the failure this guards against)', async () => {
  const p = await pair();
  try {
    let chunksWhenFired = -1;
    setTimeout(() => (chunksWhenFired = p.chunks()), 30);
    p.client.write('step');
    stall(120);
    await settle(50);
    assert.is(p.chunks(), 1, 'the bytes were read');
    assert.is(chunksWhenFired, 0, 'the timer ran first, although the bytes had arrived before it was due');
  } finally {
    p.close();
  }
});

deadline('a step that arrived during the stall counts: the deadline is armed again, not expired', async () => {
  const p = await pair();
  try {
    let expired = 0;
    const d = new StageDeadline(30, p.chunks, () => expired++);
    p.client.write('step');
    stall(120);
    await settle(10);
    assert.is(p.chunks(), 1);
    assert.is(expired, 0, 'not expired: the step was seen first');
    // No further step: it expires one period later, once.
    await settle(120);
    assert.is(expired, 1, 'expired once the stage stopped making progress');
    d.cancel();
  } finally {
    p.close();
  }
});

deadline('without progress it expires (once), and a cancelled deadline never does', async () => {
  let expired = 0;
  new StageDeadline(20, () => 0, () => expired++);
  await settle(100);
  assert.is(expired, 1);
  let cancelledExpired = 0;
  const c = new StageDeadline(20, () => 0, () => cancelledExpired++);
  c.cancel();
  await settle(60);
  assert.is(cancelledExpired, 0);
  // Cancelled after its timer fired but before the deferred expiry ran (both timers due in one timers phase).
  let late = 0;
  const l = new StageDeadline(10, () => 0, () => late++);
  setTimeout(() => l.cancel(), 15); // due after the deadline's own timer: runs after it, before the check phase
  stall(40);
  await settle(40);
  assert.is(late, 0, 'a stage completed in the same turn as its timer fired does not expire');
});

deadline('progress is counted in steps: a stage that keeps making steps ends only when they stop, within (steps + 1) periods', async () => {
  let step = 0;
  let expiredAt = 0;
  const t0 = performance.now();
  new StageDeadline(30, () => step, () => (expiredAt = performance.now() - t0));
  // Two steps, each inside the period after the previous one.
  await settle(20);
  step++;
  await settle(35);
  step++;
  await settle(200);
  assert.ok(expiredAt > 0, 'expired after the steps stopped');
  assert.ok(expiredAt < 3 * 30 + 100, `within about (steps + 1) periods: ${expiredAt.toFixed(0)} ms`);
});

deadline.run();
