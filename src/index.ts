/**
 * shmbus: a shared-memory IPC bus for Node.js. Public exports only.
 */
export { Bus, parseNotice, type Frame, type BusStats, type SendAsyncOptions, type Notice } from './bus';
export { type BusOptions } from './options';
export { BusError, SystemError, ERROR_TABLE, isBusError, type ErrorCode } from './errors';
export { FrameRing, FrameView, OFFER_FULL, OFFER_OK, OFFER_OK_RING, type FrameHandler, type ProducerStamp } from './ring';
export { Directory, type EntryInfo } from './directory';
export * as layout from './layout';
