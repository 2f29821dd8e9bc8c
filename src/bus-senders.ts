/**
 * The send handles of a Bus: one {@link Sender} per destination, made on
 * first use (a local name, or `name@host` through the relay's inbox), the
 * last one used kept at hand for loops to one destination, and the origin
 * (stamp, sequence, counters) they all share.
 */
import type { EntryInfo } from './directory';
import { BusError } from './errors';
import { encodeAddressPrefix, type ProducerStamp } from './frame';
import { FRAME_FLAG_OUTBOUND, RELAY_ENDPOINT_NAME } from './layout';
import { validateName, validateNamespace } from './options';
import type { Routes } from './routes';
import { Sender, type Origin, type Payload } from './sender';

export class SenderTable {
  private readonly origin: Origin;
  private readonly outboundStamp: ProducerStamp;
  private readonly senders = new Map<string, Sender>();
  /** The sender of the last sendToLocal/send call: a loop to one destination skips the map. */
  private lastSender: Sender | null = null;

  /**
   * @param entry the Bus's own directory entry (its identity in frame headers)
   * @param counters the Bus's own inbox header words (sent / refused counters)
   * @param assertOpen throws ERR_SHMBUS_CLOSED once the Bus is closed
   */
  constructor(entry: EntryInfo, counters: Uint32Array, private readonly routes: Routes, assertOpen: () => void) {
    const stamp: ProducerStamp = { sourceIndex: entry.index, sourceGeneration: entry.generation, sourceHost: 0, flags: 0 };
    this.outboundStamp = { ...stamp, flags: FRAME_FLAG_OUTBOUND };
    this.origin = { stamp, sequence: 0, counters, assertOpen };
  }

  /** The handle for `destination` (see `Bus.sender`). */
  get(destination: string): Sender {
    const known = this.senders.get(destination);
    if (known !== undefined) return known;
    this.origin.assertOpen();
    if (typeof destination !== 'string') throw new BusError('ERR_SHMBUS_INVALID_OPTION', `destination must be a string; received ${typeof destination}`);
    const at = destination.indexOf('@');
    let sender: Sender;
    if (at < 0) {
      sender = new Sender(destination, destination, this.origin, this.routes, this.origin.stamp, undefined);
    } else {
      const name = destination.slice(0, at);
      const host = destination.slice(at + 1);
      validateName(name, 'name');
      validateNamespace(host, 'host');
      sender = new Sender(destination, RELAY_ENDPOINT_NAME, this.origin, this.routes, this.outboundStamp, encodeAddressPrefix(destination));
    }
    this.senders.set(destination, sender);
    return sender;
  }

  /** The handle for local endpoint `destination` (a `name@host` is refused as a malformed name). */
  local(destination: string): Sender {
    const last = this.lastSender;
    if (last !== null && last.destination === destination) return last;
    if (typeof destination === 'string' && destination.includes('@')) validateName(destination, 'destination');
    return (this.lastSender = this.get(destination));
  }

  /** Send to `address`, local or remote (see `Bus.send`). */
  send(address: string, payload: Payload): boolean {
    const last = this.lastSender;
    if (last !== null && last.destination === address) return last.send(payload);
    return (this.lastSender = this.get(address)).send(payload);
  }

  /** The bus closed: drop every handle's route. */
  reset(): void {
    for (const sender of this.senders.values()) sender.reset();
    this.lastSender = null;
  }
}
