/**
 * shmbus: a shared-memory IPC bus for Node.js. Public exports only.
 */
export {
  Bus,
  Sender,
  FrameIterator,
  parseNotice,
  type Frame,
  type FramesOptions,
  type BusEvents,
  type BusListener,
  type WaitForOptions,
  type BusStats,
  type SendAsyncOptions,
  type Payload,
  type Notice,
} from './bus';
export { type BusOptions } from './options';
export { BusError, BusAbortError, SystemError, ERROR_TABLE, isBusError, type ErrorCode } from './errors';
export { FrameView, OFFER_FULL, OFFER_OK, OFFER_OK_RING, type FrameHandler, type ProducerStamp, type InboxCounters } from './frame';
export { InboxConsumer, type LaneSnapshot } from './inbox';
export { ScanningConsumer } from './scan';
export { LaneProducer } from './lane';
export { Directory, type EntryInfo } from './directory';
export * as layout from './layout';
