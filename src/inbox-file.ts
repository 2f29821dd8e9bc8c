/**
 * An endpoint's inbox file: created with its geometry, or taken over from a
 * dead owner (under the directory lock). Used by the Bus and by the relay.
 */
import { join } from 'node:path';
import { addU64 } from './frame';
import { InboxConsumer } from './inbox';
import { INBOX_DISCARDED_OFFSET, INBOX_HEADER_LENGTH, SEGMENT_KIND_INBOX, inboxFileName, inboxSegmentLength } from './layout';
import type { ResolvedBusOptions } from './options';
import { Segment, unlinkQuiet } from './segment';

/** The geometry of an inbox, as options give it. */
export interface InboxGeometry {
  readonly slotSize: number;
  /** Slots per lane. */
  readonly capacity: number;
  readonly lanes: number;
  readonly maxMessageSize: number;
}

/**
 * Create the inbox of an endpoint being registered, or take over the inbox a
 * dead owner left (runs under the directory lock). A predecessor's inbox of the
 * same geometry is kept, frames, lanes and all; one of another geometry is
 * replaced and its unread frames are counted as discarded in the new inbox.
 */
export function openInbox(options: Pick<ResolvedBusOptions, 'dir' | 'namespace' | 'name' | 'mode'> & InboxGeometry): Segment {
  const path = join(options.dir, inboxFileName(options.namespace, options.name));
  const length = inboxSegmentLength(options.slotSize, options.capacity, options.lanes);
  const create = (discarded: number) =>
    Segment.create(path, SEGMENT_KIND_INBOX, length, options.mode, INBOX_HEADER_LENGTH, (buffer) => {
      InboxConsumer.format(buffer, options.slotSize, options.capacity, options.lanes, options.maxMessageSize);
      addU64(new Uint32Array(buffer), INBOX_DISCARDED_OFFSET, discarded);
    });
  let previous: Segment;
  try {
    previous = Segment.attach(path, SEGMENT_KIND_INBOX, 0);
  } catch (err) {
    const code = (err as { errno?: string; code?: string }).errno;
    if (code === 'ENOENT') return create(0);
    // A corrupt, foreign or other-version leftover under our name (we hold the directory lock, and no live owner claims it).
    unlinkQuiet(path);
    return create(0);
  }
  const inbox = new InboxConsumer(previous.buffer);
  if (inbox.slotSize === options.slotSize && inbox.capacity === options.capacity && inbox.laneCount === options.lanes && inbox.maxMessage === options.maxMessageSize) {
    inbox.unpark();
    return previous;
  }
  const unread = inbox.depth();
  previous.unmap();
  unlinkQuiet(path);
  return create(unread);
}
