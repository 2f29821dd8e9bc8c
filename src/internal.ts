/**
 * The internal entry: what the transit relay (relay/) and the tools use of
 * the library's insides — inbox lanes, the scanning consumer, routes, the
 * directory, segments, outcomes. Not public API (that is src/index.ts): it
 * may change in any release. The relay imports src/ only through this file
 * (test/00.imports.test.ts keeps it so), so the seam between the two is
 * visible in one place.
 *
 * The one way to put a frame into an inbox, for the Bus and the relay alike:
 * a LaneProducer (routes.ts Route.lane) offers — or prepares then publishes —
 * and the caller rings with ringRoute(route) when the publish says so.
 */
export { copyBytes, dataViewOf } from './copy';
export { Directory, type EntryInfo } from './directory';
export { FutexSleeper, UDP_DOORBELL_DATAGRAM, wakeAll } from './doorbell';
export { BusError, describeValue, isBusError } from './errors';
export { OFFER_FULL, OFFER_OK_RING, encodeAddressPrefix, type FrameView, type ProducerStamp } from './frame';
export { openInbox } from './inbox-file';
export { DEDUP_DESTINATION_HASH_OFFSET, DEDUP_ENTRY_COUNT_OFFSET, DEDUP_ENTRY_LENGTH, DEDUP_HEADER_LENGTH, DEDUP_INTENT_ENTRY_OFFSET, DEDUP_INTENT_LANE_OFFSET, DEDUP_INTENT_OPEN, DEDUP_INTENT_SEQUENCE_OFFSET, DEDUP_INTENT_SLOTS_OFFSET, DEDUP_INTENT_STATE_OFFSET, DEDUP_INTENT_TAIL_OFFSET, DEDUP_INTENT_TARGET_EPOCH_OFFSET, DEDUP_INTENT_TARGET_GENERATION_OFFSET, DEDUP_INTENT_TARGET_INDEX_OFFSET, DEDUP_LAST_SEQUENCE_OFFSET, DEDUP_SOURCE_GENERATION_OFFSET, DEDUP_SOURCE_HOST_OFFSET, DEDUP_SOURCE_INDEX_OFFSET, DEDUP_TOUCHED_OFFSET, DEDUP_USED_OFFSET, DEFAULT_DEDUP_ENTRY_COUNT, DEFAULT_RELAY_LANES, DOORBELL_UDP, ENTRY_FLAG_RELAY, FRAME_FLAG_NOTICE, FRAME_FLAG_OUTBOUND, FRAME_FLAG_REMOTE, LANE_TAIL_OFFSET, MAX_ADDRESS_LENGTH, NOTICE_ADDRESS_OFFSET, NOTICE_KIND_OFFSET, NOTICE_REASON_OFFSET, NOTICE_SEQUENCE_OFFSET, NOTICE_UNDELIVERABLE, RELAY_ENDPOINT_NAME, SEGMENT_KIND_DEDUP, SEGMENT_KIND_INBOX, dedupFileName, dedupSegmentLength, inboxFileName, laneOffset } from './layout';
export { DEFAULT_DIR, DEFAULT_LOCK_TIMEOUT_MS, DEFAULT_MODE, DEFAULT_NAMESPACE, defaultMaxMessageSize, validateCapacity, validateDir, validateDurationMs, validateLanes, validateNamespace, validateSlotSize } from './options';
export { OUTCOME_DELIVERED, OUTCOME_DUPLICATE, OUTCOME_EXPIRED, OUTCOME_TABLE, OUTCOME_TOO_LARGE, OUTCOME_UNKNOWN_DESTINATION, OUTCOME_UNKNOWN_HOST, isUndeliverable, outcomeName } from './outcome';
export { Routes, ringRoute, type Route } from './routes';
export { ScanningConsumer } from './scan';
export { Segment, isProcessAlive, processStartTime, unlinkQuiet } from './segment';
