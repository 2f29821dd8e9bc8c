/**
 * Routes: a sender's cache of destination inboxes, by name.
 *
 * A route is resolved through the directory once and then validated on every
 * use with one atomic load (the entry's generation changes whenever its
 * endpoint registers or unregisters), so a closed or replaced destination is
 * noticed at the next send.
 */
import { join } from 'node:path';
import { BusError } from './errors';
import type { Directory, EntryInfo } from './directory';
import { RELAY_ENDPOINT_NAME, SEGMENT_KIND_INBOX, inboxFileName } from './layout';
import { validateName } from './options';
import { FrameRing } from './ring';
import { Segment } from './segment';

/** A cached route to one destination inbox. */
export interface Route {
  readonly name: string;
  readonly entry: EntryInfo;
  readonly segment: Segment;
  readonly ring: FrameRing;
  /** Last time the owner was checked for liveness after a refusal (ms, performance.now). */
  lastLivenessCheck: number;
}

export class Routes {
  private readonly cache = new Map<string, Route>();

  constructor(
    private readonly directory: Directory,
    private readonly dir: string,
    private readonly namespace: string,
  ) {}

  /** The cached route to `name` if it is still valid; else null (and the stale one is dropped). */
  get(name: string): Route | null {
    const cached = this.cache.get(name);
    if (cached === undefined) return null;
    if (this.directory.generationOf(cached.entry.index) === cached.entry.generation) return cached;
    this.cache.delete(name);
    cached.segment.unmap();
    return null;
  }

  /**
   * Look `name` up in the directory and attach its inbox. Throws
   * ERR_SHMBUS_UNKNOWN_DESTINATION (or ERR_SHMBUS_INVALID_OPTION for a name
   * that cannot exist) and the segment errors of a corrupt inbox.
   */
  resolve(name: string): Route {
    if (typeof name !== 'string') throw new BusError('ERR_SHMBUS_INVALID_OPTION', `destination must be a string; received ${typeof name}`);
    let entry = this.directory.lookup(name);
    if (entry === null && this.directory.removed) {
      this.directory.refresh();
      entry = this.directory.lookup(name);
    }
    if (entry === null) {
      if (name !== RELAY_ENDPOINT_NAME) validateName(name, 'destination');
      throw new BusError('ERR_SHMBUS_UNKNOWN_DESTINATION', `no endpoint "${name}" in namespace "${this.namespace}"`);
    }
    const segment = Segment.attach(join(this.dir, inboxFileName(this.namespace, name)), SEGMENT_KIND_INBOX);
    const route: Route = { name, entry, segment, ring: new FrameRing(segment.buffer), lastLivenessCheck: -Infinity };
    this.cache.set(name, route);
    return route;
  }

  /** Unmap every cached inbox. */
  close(): void {
    for (const route of this.cache.values()) route.segment.unmap();
    this.cache.clear();
  }
}
