/**
 * Relay counters and their HTTP endpoint.
 *
 *   GET /metrics        Prometheus text format (version 0.0.4; metrics-prometheus.ts)
 *   GET /metrics.json   the snapshot as JSON (read by `shmbus stat`)
 *   GET /healthz        200 while the process is up
 *   GET /readyz         200 when ready, 503 when not (starting, shutting down); JSON {@link Readiness}
 *
 * Counters are plain numbers incremented on the relay's one thread; the
 * endpoint renders a snapshot on request. It listens on the configured
 * address (loopback in the examples; no authentication).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROTOCOL_VERSION } from './codec';
import { relayRegistry, type BuildInfo, type ScrapeSource } from './metrics-prometheus';

export type { BuildInfo } from './metrics-prometheus';
export { PEER_STATES, newPeerCounters, type ConnectionSnapshot, type PeerState, type PeerCounters, type PeerReadiness, type Readiness, type RelaySnapshot } from './snapshot';
import type { Readiness } from './snapshot';


/** What the HTTP endpoint serves. */
export type MetricsSource = ScrapeSource;

/** This package's version: package.json at its root, one folder up from relay/, two from dist/relay/. */
export function packageVersion(): string {
  for (const root of [join(__dirname, '..'), join(__dirname, '..', '..')]) {
    try {
      return (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      // Not this one.
    }
  }
  return 'unknown';
}

/** What `shmbus_build_info` reports. */
export function buildInfo(): BuildInfo {
  return { version: packageVersion(), protocol: PROTOCOL_VERSION };
}

const JSON_TYPE = { 'content-type': 'application/json' };

/**
 * Serve the endpoints over HTTP on `host:port` (any address given in the config:
 * there is no authentication, see docs/OPERATIONS.md). Resolves with the bound port.
 */
export async function serveMetrics(host: string, port: number, source: MetricsSource): Promise<{ server: Server; port: number }> {
  const prometheus = relayRegistry(source, buildInfo());
  const server = createServer((req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      prometheus.scrape().then(
        (text) => res.writeHead(200, { 'content-type': prometheus.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`),
      );
    } else if (path === '/metrics.json') {
      res.writeHead(200, JSON_TYPE).end(JSON.stringify(source.snapshot()));
    } else if (path === '/healthz') {
      res.writeHead(200, JSON_TYPE).end('{"status":"ok"}');
    } else if (path === '/readyz') {
      const r = source.readiness();
      res.writeHead(r.ready ? 200 : 503, JSON_TYPE).end(JSON.stringify(r));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.unref();
  return { server, port: (server.address() as AddressInfo).port };
}
