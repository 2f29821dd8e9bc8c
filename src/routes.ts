/**
 * Routes: a sender's cache of destination inboxes, by name, each with the lane
 * this sender took in it.
 *
 * A route is resolved through the directory once (attach the inbox, take a
 * lane) and then validated on every use with one plain load (the entry's
 * generation changes whenever its endpoint registers or unregisters), so a
 * closed or replaced destination is noticed at the next send. A dropped route
 * gives its lane back.
 */
import { join } from 'node:path';
import { BusError } from './errors';
import { generationWord, type Directory, type EntryInfo } from './directory';
import { FutexSleeper, ring } from './doorbell';
import { LaneProducer, type LaneOwner } from './lane';
import { RELAY_ENDPOINT_NAME, SEGMENT_KIND_INBOX, inboxFileName } from './layout';
import { validateName } from './options';
import { Segment, isProcessAlive, processStartTime } from './segment';

/** A cached route to one destination inbox. */
export interface Route {
  readonly name: string;
  readonly entry: EntryInfo;
  /** Word index of the entry's generation in the directory (checked at every send). */
  readonly generationWord: number;
  readonly segment: Segment;
  readonly lane: LaneProducer;
  /** Sleeps on the lane's head while an async send waits for room (created on first need). */
  space: FutexSleeper | null;
  /** Last time the owner was checked for liveness after a refusal (ms, performance.now). */
  lastLivenessCheck: number;
  /** False once the route has been dropped (its lane given back, its inbox unmapped). */
  live: boolean;
}

/** This process as a lane owner. */
export function selfAsLaneOwner(): LaneOwner {
  return { pid: process.pid, startTime: processStartTime(process.pid), isAlive: isProcessAlive };
}

export class Routes {
  private readonly cache = new Map<string, Route>();

  /** @param owner who takes lanes (this process; the relay says so, see LANE_OWNER_FLAG_RELAY) */
  constructor(
    private readonly directory: Directory,
    private readonly dir: string,
    private readonly namespace: string,
    private readonly owner: LaneOwner = selfAsLaneOwner(),
  ) {}

  /** Is this route still the destination's current incarnation? One plain load. */
  isCurrent(route: Route): boolean {
    return route.live && this.directory.generationAt(route.generationWord) === route.entry.generation;
  }

  /** The cached route to `name` if it is still valid; else null (a stale one is kept until {@link resolve} decides). */
  get(name: string): Route | null {
    const cached = this.cache.get(name);
    if (cached === undefined || !this.isCurrent(cached)) return null;
    return cached;
  }

  /**
   * Look `name` up in the directory, attach its inbox and take a lane in it.
   * Throws ERR_SHMBUS_UNKNOWN_DESTINATION (or ERR_SHMBUS_INVALID_OPTION for a
   * name that cannot exist), ERR_SHMBUS_NO_LANE, and the segment errors of a
   * corrupt inbox.
   */
  resolve(name: string): Route {
    if (typeof name !== 'string') throw new BusError('ERR_SHMBUS_INVALID_OPTION', `destination must be a string; received ${typeof name}`);
    const stale = this.cache.get(name);
    let entry = this.directory.lookup(name);
    if (entry === null && this.directory.removed) {
      this.directory.refresh();
      entry = this.directory.lookup(name);
    }
    if (entry === null) {
      if (stale !== undefined) this.drop(stale);
      if (name !== RELAY_ENDPOINT_NAME) validateName(name, 'destination');
      throw new BusError('ERR_SHMBUS_UNKNOWN_DESTINATION', `no endpoint "${name}" in namespace "${this.namespace}"`);
    }
    let segment: Segment;
    try {
      segment = Segment.attach(join(this.dir, inboxFileName(this.namespace, name)), SEGMENT_KIND_INBOX);
    } catch (err) {
      if (stale !== undefined) this.drop(stale);
      throw err;
    }
    if (stale !== undefined) {
      if (stale.live && stale.segment.epoch === segment.epoch) {
        // A successor took the name over and kept the inbox (same file): keep our lane in it, so
        // this source's frames stay in one lane, in order.
        segment.unmap();
        const route: Route = { ...stale, entry, generationWord: generationWord(entry.index) };
        stale.live = false;
        this.cache.set(name, route);
        return route;
      }
      this.drop(stale);
    }
    let lane: LaneProducer;
    try {
      lane = LaneProducer.take(segment.buffer, this.owner);
    } catch (err) {
      segment.unmap();
      throw err;
    }
    const route: Route = { name, entry, generationWord: generationWord(entry.index), segment, lane, space: null, lastLivenessCheck: -Infinity, live: true };
    this.cache.set(name, route);
    return route;
  }

  /** Forget a route: give its lane back, stop its waiter, unmap its inbox. */
  drop(route: Route): void {
    if (!route.live) return;
    route.live = false;
    if (this.cache.get(route.name) === route) this.cache.delete(route.name);
    route.space?.close();
    route.space = null;
    try {
      route.lane.release();
    } finally {
      route.segment.unmap();
    }
  }

  /** Drop every route. */
  close(): void {
    for (const route of [...this.cache.values()]) this.drop(route);
  }
}

/**
 * Ring the consumer of `route`'s inbox: call after a publish that returned
 * "must ring" (OFFER_OK_RING, or publishPrepared() true). The Bus and the
 * relay both write as offer (or prepare + publish), then ring with this.
 */
export function ringRoute(route: Route): void {
  ring(route.entry.doorbellKind, route.segment.buffer, route.entry.doorbellPort);
}
