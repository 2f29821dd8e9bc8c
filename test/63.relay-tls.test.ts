/**
 * The relay over TLS: frames flow, the bytes on the wire are encrypted, and a
 * client whose certificate another CA signed never gets to the handshake.
 * Certificates: test/fixtures/tls (test-only material, see its README).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Bus } from '../src/index';
import { encodeHello } from '../relay/codec';
import { newNonce } from '../relay/handshake';
import { cleanupAll, deadline, nextFrame } from './_helpers';
import { makeCluster, tcpProxy } from './_helpers/cluster';

const FIXTURES = join(__dirname, 'fixtures', 'tls');
const TLS = { key: join(FIXTURES, 'relay.key'), cert: join(FIXTURES, 'relay.crt'), ca: join(FIXTURES, 'ca.crt') };
const bytes = (s: string) => new TextEncoder().encode(s);


/** A TCP proxy that records every byte it forwards from the client side. */
async function recordingProxy(targetPort: () => number): Promise<{ port: number; captured: () => Buffer; close: () => void }> {
  const chunks: Buffer[] = [];
  const proxy = await tcpProxy(targetPort, { onClientData: (d) => chunks.push(d) });
  return { port: proxy.port, captured: () => Buffer.concat(chunks), close: () => proxy.close() };
}

const tls = suite('relay: TLS');
tls.after.each(cleanupAll);

for (const encrypted of [true, false]) {
  tls(`frames flow ${encrypted ? 'over TLS, and the payload never appears on the wire' : 'without TLS, and the payload is visible on the wire (the control case)'}`, async () => {
    let cluster: Awaited<ReturnType<typeof makeCluster>> | null = null;
    const proxy = await recordingProxy(() => cluster!.port('beta'));
    try {
      cluster = await makeCluster(['alpha', 'beta'], { specs: { beta: { dialPort: proxy.port } }, ...(encrypted ? { tls: TLS } : {}) });
      const [ra, rb] = await Promise.all([cluster.start('alpha'), cluster.start('beta')]);
      assert.is((ra.events('start')[0] as { tls?: boolean }).tls, encrypted);
      const a1 = await Bus.open({ name: 'a1', namespace: cluster.ns('alpha'), dir: cluster.dir });
      const b1 = await Bus.open({ name: 'b1', namespace: cluster.ns('beta'), dir: cluster.dir });
      const secretText = 'MARKER-7f3a9c-plaintext-payload';
      assert.ok(a1.send('b1@beta', bytes(secretText)));
      const f = await nextFrame(b1);
      assert.is(new TextDecoder().decode(f.payload), secretText);
      assert.is(f.source, 'a1@alpha');
      assert.ok(b1.send('a1@alpha', bytes('back')));
      assert.is(new TextDecoder().decode((await nextFrame(a1)).payload), 'back');
      const wire = proxy.captured();
      assert.ok(wire.length > 0, 'the proxy saw the connection');
      assert.is(wire.includes(secretText), !encrypted);
      await a1.close();
      await b1.close();
      assert.is(await ra.stop(), 0);
      assert.is(await rb.stop(), 0);
    } finally {
      proxy.close();
    }
  });
}

tls('a client with a certificate from another CA, or without TLS, never reaches the handshake', async () => {
  const cluster = await makeCluster(['alpha', 'beta'], { tls: TLS });
  const rb = await cluster.start('beta');
  const port = cluster.port('beta');
  // A certificate signed by another CA: the TLS handshake fails.
  const stranger = tlsConnect({
    host: '127.0.0.1',
    port,
    key: readFileSync(join(FIXTURES, 'stranger.key')),
    cert: readFileSync(join(FIXTURES, 'stranger.crt')),
    ca: readFileSync(TLS.ca),
    checkServerIdentity: () => undefined,
  });
  const strangerOutcome = await deadline(
    new Promise<string>((resolve) => {
      stranger.on('secureConnect', () => stranger.write(encodeHello(newNonce(), 'alpha')));
      stranger.on('data', () => resolve('data'));
      stranger.on('error', () => resolve('error'));
      stranger.on('close', () => resolve('closed'));
    }),
    10_000,
    'the stranger being refused',
  );
  assert.is.not(strangerOutcome, 'data', 'a relay answered a client whose certificate it cannot trust');
  stranger.destroy();
  // Plain TCP to a TLS relay: the HELLO bytes are not a TLS record; nothing comes back but a close.
  const plain = netConnect(port, '127.0.0.1');
  const plainOutcome = await deadline(
    new Promise<string>((resolve) => {
      plain.on('connect', () => plain.write(encodeHello(newNonce(), 'alpha')));
      let got = Buffer.alloc(0);
      plain.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
      plain.on('close', () => resolve(got.includes(Buffer.from('beta')) ? 'challenge' : 'closed'));
      plain.on('error', () => resolve('error'));
    }),
    10_000,
    'the plain client being closed',
  );
  assert.is.not(plainOutcome, 'challenge');
  const m = await rb.metrics();
  assert.is(rb.events('peer_accepted').length, 0);
  assert.is(m.global.unknownPeers + m.global.authFailures, 0, 'refused by TLS before our handshake saw anything');
});

tls.run();
