/**
 * shmbus: a shared-memory IPC bus for Node.js. Public exports only.
 */
export { Bus, Sender, parseNotice, type Frame, type BusStats, type SendAsyncOptions, type Payload, type Notice } from './bus';
export { type BusOptions } from './options';
export { BusError, SystemError, ERROR_TABLE, isBusError, type ErrorCode } from './errors';
export { FrameView, OFFER_FULL, OFFER_OK, OFFER_OK_RING, type FrameHandler, type ProducerStamp, type InboxCounters } from './frame';
export { InboxConsumer, type LaneSnapshot } from './inbox';
export { ScanningConsumer } from './scan';
export { LaneProducer } from './lane';
export { Directory, type EntryInfo } from './directory';
export * as layout from './layout';
