/**
 * Every number of the shared-memory layout, in one place.
 *
 * This module is the code half of docs/LAYOUT.md (the prose and diagrams) and
 * of native/layout.h (the C mirror); test/00.layout.test.ts keeps the three in
 * step. All multi-byte fields are little-endian, naturally aligned, and are
 * accessed as 32-bit words; "u64" counters are two u32 words, low word first.
 * Offsets are in bytes unless the name says otherwise.
 *
 * A change to any value below is a layout change: bump {@link LAYOUT_VERSION}.
 */

/** Version of the byte layout described here. Written last at creation: a reader that sees it may read the rest. */
export const LAYOUT_VERSION = 2;

/** ASCII "SHMB" read as a little-endian u32: the first word of every shmbus segment. */
export const SEGMENT_MAGIC = 0x424d4853;

/** Cache-line size used for padding: producer-written and consumer-written words never share a line. */
export const CACHE_LINE_LENGTH = 64;

/** Segment kinds (the `kind` word of the common header). */
export const SEGMENT_KIND_DIRECTORY = 1;
export const SEGMENT_KIND_INBOX = 2;
export const SEGMENT_KIND_DEDUP = 3;

// ---------------------------------------------------------------------------
// Common header: the first 40 bytes of every segment.
// ---------------------------------------------------------------------------

/** u32 {@link SEGMENT_MAGIC}. Written first at creation. */
export const MAGIC_OFFSET = 0;
/** u32 {@link SEGMENT_KIND_DIRECTORY} or {@link SEGMENT_KIND_INBOX}. */
export const KIND_OFFSET = 4;
/** u32 {@link LAYOUT_VERSION}; 0 while the creator is still writing the header. SYNC POINT: segment ready (release by creator, acquire by attacher). */
export const VERSION_OFFSET = 8;
/** u32 length of the whole header, where the first entry / slot begins. */
export const HEADER_LENGTH_OFFSET = 12;
/** u32 length of the whole segment (file) in bytes. */
export const SEGMENT_LENGTH_OFFSET = 16;
/** i32 pid of the process that created the segment. */
export const CREATOR_PID_OFFSET = 20;
/** u64 start time of the creator (clock ticks since boot, /proc/<pid>/stat field 22). */
export const CREATOR_START_TIME_OFFSET = 24;
/** u32 random number chosen at creation; a segment recreated under the same name gets another. */
export const EPOCH_OFFSET = 32;
/** End of the common header; kind-specific header fields follow. */
export const COMMON_HEADER_LENGTH = 40;

// ---------------------------------------------------------------------------
// Directory segment: one per namespace, file `shmbus.<namespace>.dir`.
// ---------------------------------------------------------------------------

/** u32 number of entries in the directory. */
export const DIR_ENTRY_COUNT_OFFSET = 40;
/** u32 length of one entry ({@link DIR_ENTRY_LENGTH}). */
export const DIR_ENTRY_LENGTH_OFFSET = 44;
/** i32 registry lock: 0 = free, else the pid of the holder. CAS to take; a dead holder's lock may be taken over by CAS from its pid. */
export const DIR_LOCK_OFFSET = 64;
/** u32 set to 1 (under the lock) just before the last endpoint unlinks the directory file: a process still holding this mapping must reopen the namespace. */
export const DIR_REMOVED_OFFSET = 68;
/** u32 registrations since creation (under the lock). */
export const DIR_REGISTRATIONS_OFFSET = 72;
/** u32 names taken over from dead owners (under the lock). */
export const DIR_TAKEOVERS_OFFSET = 76;
/** Where entries begin. */
export const DIR_HEADER_LENGTH = 128;

/** Length of one directory entry: two cache lines. */
export const DIR_ENTRY_LENGTH = 128;
/** u32 generation: odd while the entry is being written (seqlock), incremented on every register and unregister. SYNC POINT: entry published. */
export const ENTRY_GENERATION_OFFSET = 0;
/** u32 {@link ENTRY_STATE_FREE} or {@link ENTRY_STATE_ACTIVE}. */
export const ENTRY_STATE_OFFSET = 4;
/** i32 pid of the owner. */
export const ENTRY_OWNER_PID_OFFSET = 8;
/** u64 start time of the owner (clock ticks since boot). */
export const ENTRY_OWNER_START_TIME_OFFSET = 12;
/** u32 {@link ENTRY_FLAG_RELAY} and friends. */
export const ENTRY_FLAGS_OFFSET = 20;
/** u32 {@link DOORBELL_FUTEX} or {@link DOORBELL_UDP}. */
export const ENTRY_DOORBELL_KIND_OFFSET = 24;
/** u32 UDP port on 127.0.0.1 for {@link DOORBELL_UDP}; 0 otherwise. */
export const ENTRY_DOORBELL_PORT_OFFSET = 28;
/** u32 slot size of the endpoint's inbox (copy of the inbox header, for `stat`). */
export const ENTRY_SLOT_SIZE_OFFSET = 32;
/** u32 capacity of the endpoint's inbox. */
export const ENTRY_CAPACITY_OFFSET = 36;
/** u32 length of the name in bytes. */
export const ENTRY_NAME_LENGTH_OFFSET = 40;
/** u32 TCP port on 127.0.0.1 of the endpoint's HTTP metrics (relays); 0 = none. */
export const ENTRY_METRICS_PORT_OFFSET = 44;
/** Name bytes (ASCII, {@link NAME_PATTERN}), up to {@link MAX_NAME_LENGTH}. */
export const ENTRY_NAME_OFFSET = 64;

export const ENTRY_STATE_FREE = 0;
export const ENTRY_STATE_ACTIVE = 1;
/** The endpoint is the namespace's transit relay. */
export const ENTRY_FLAG_RELAY = 1;

/** Ring the owner by FUTEX_WAKE on its inbox's parked word. */
export const DOORBELL_FUTEX = 1;
/** Ring the owner by a UDP datagram to 127.0.0.1:port. */
export const DOORBELL_UDP = 2;

export const MAX_NAME_LENGTH = 64;
/** Endpoint names: they become part of a file name (never "." or "..", no "/", no "@"). */
export const NAME_PATTERN = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$/;
/** Namespace names: no "." so that `shmbus.<namespace>.` prefixes of two namespaces never overlap. */
export const NAMESPACE_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export const DEFAULT_DIR_ENTRY_COUNT = 256;
export const MAX_DIR_ENTRY_COUNT = 65536;

// ---------------------------------------------------------------------------
// Inbox segment: one per endpoint, file `shmbus.<namespace>.<name>.inbox`.
//
// An inbox is a set of single-producer lanes. Each lane is an SPSC ring of
// `capacity` slots with its own published position (tail, written by the lane's
// owner only) and consumed position (head, written by the inbox's owner only).
// A producer takes a lane of the destination on its first send (CAS on the
// lane's owner word) and then publishes with one release store per frame or
// per batch. Positions are u32 and wrap; 0 <= tail - head <= capacity.
// ---------------------------------------------------------------------------

/** u32 slot size in bytes (slot header + payload), multiple of 64. */
export const INBOX_SLOT_SIZE_OFFSET = 40;
/** u32 slots per lane, a power of two. */
export const INBOX_CAPACITY_OFFSET = 44;
/** u32 number of lanes. */
export const INBOX_LANE_COUNT_OFFSET = 48;
/** u32 largest message (bytes, address prefix included) the owner accepts; a message longer than one slot's payload spans consecutive slots of one lane. */
export const INBOX_MAX_MESSAGE_OFFSET = 52;

/** u32 lanes in use: one more than the highest lane index ever taken (only grows; CAS by producers). The consumer visits lanes [0, this). SYNC POINT: lanes in use. */
export const INBOX_LANES_IN_USE_OFFSET = 64;

/** i32 parked word and futex: 1 while the consumer sleeps or is about to. SYNC POINT: parked (consumer store / producer load, CAS to take the bell). Own cache line. */
export const INBOX_PARKED_OFFSET = 128;

/** Counters written by any producer (atomic add on the low word; the adder that wraps it carries into the high word). */
/** u64 sends refused because the sender's lane was full. */
export const INBOX_REFUSED_FULL_OFFSET = 192;
/** u64 doorbells rung (a producer saw the consumer parked and woke it). */
export const INBOX_WAKEUPS_OFFSET = 200;
/** u64 lanes taken by producers (free ones and those of dead owners). */
export const INBOX_LANE_TAKES_OFFSET = 208;
/** u64 of those, lanes taken over from a dead owner. */
export const INBOX_LANE_REUSES_OFFSET = 216;
/** u64 producers refused because every lane was taken by a live owner. */
export const INBOX_LANE_REFUSED_OFFSET = 224;

/** Counters written by the owner only (plain stores; readers are racy observers). */
/** u64 frames (messages) consumed from this inbox. */
export const INBOX_RECEIVED_OFFSET = 256;
/** u64 frames skipped because their header could not be valid. */
export const INBOX_CORRUPT_OFFSET = 264;
/** u64 frames the owner sent (to any inbox). */
export const INBOX_SENT_OFFSET = 272;
/** u64 sends by the owner that were refused (destination lane full). */
export const INBOX_SEND_REFUSED_OFFSET = 280;
/** u64 times the owner parked. */
export const INBOX_PARKS_OFFSET = 288;
/** u64 frames discarded when this inbox replaced a dead predecessor's inbox of another geometry. */
export const INBOX_DISCARDED_OFFSET = 296;
/** u64 lanes the consumer found corrupt (a published position out of bounds) and set aside. */
export const INBOX_CORRUPT_LANES_OFFSET = 304;

/** Where lane descriptor 0 begins. */
export const INBOX_HEADER_LENGTH = 320;

/** Length of one lane descriptor: a producer line and a consumer line. */
export const LANE_LENGTH = 128;
/** i32 owner: 0 = free; pid = owned by that process; -pid = being taken by that process (its start time not yet written). CAS to take or free. SYNC POINT: lane owner. */
export const LANE_OWNER_OFFSET = 0;
/** u32 {@link LANE_OWNER_FLAG_RELAY} and friends, written with the start time (between the CAS to -pid and the store of pid); cleared before a clean release. */
export const LANE_OWNER_FLAGS_OFFSET = 4;
/** u64 start time of the owner (clock ticks since boot), written between the CAS to -pid and the store of pid. */
export const LANE_OWNER_START_TIME_OFFSET = 8;
/** u32 tail: position of the next frame to publish. Written by the owner only (release store after the slots). SYNC POINT: lane publish. */
export const LANE_TAIL_OFFSET = 16;
/** u32 1 while the owner waits for room (set by the producer, cleared by the consumer, which then wakes the head futex). SYNC POINT: space wanted. */
export const LANE_SPACE_WANTED_OFFSET = 20;
/** u32 head: position of the next frame to consume. Written by the inbox's owner only (release store after reading). Futex word for producers waiting for room. SYNC POINT: lane release. Consumer line. */
export const LANE_HEAD_OFFSET = 64;
/** u32 {@link LANE_STATE_OK} or {@link LANE_STATE_CORRUPT} (written by the consumer). */
export const LANE_STATE_OFFSET = 68;

/**
 * The lane is held by the namespace's transit relay. After the relay dies only
 * a relay takes the lane over (applications leave it alone), so that the
 * lane's published position stays exactly as the dead relay left it until its
 * successor has settled its open delivery intent (§7.18).
 */
export const LANE_OWNER_FLAG_RELAY = 1;

export const LANE_STATE_OK = 0;
/** The consumer found this lane's positions impossible and set it aside: never read again, never taken again; its owner's next send fails with ERR_SHMBUS_CORRUPT_SEGMENT. */
export const LANE_STATE_CORRUPT = 1;

/** Largest pid Linux hands out (PID_MAX_LIMIT on 64-bit): an owner word beyond it cannot be valid. */
export const MAX_PID = 4194304;

// Slot: SLOT_HEADER_LENGTH bytes of header, then the payload. Written by the lane's owner before it publishes.
/** u32 bytes of payload in this slot (address prefix included). */
export const SLOT_LENGTH_OFFSET = 0;
/** u16 flags ({@link FRAME_FLAG_REMOTE} ...), then u16 source host id (0 = this host). */
export const SLOT_FLAGS_OFFSET = 4;
/** u16 source host id, the high half of the flags word. */
export const SLOT_SOURCE_HOST_OFFSET = 6;
/** u32 directory index of the source endpoint on its host. */
export const SLOT_SOURCE_INDEX_OFFSET = 8;
/** u32 directory generation of the source endpoint when it sent (names one incarnation). */
export const SLOT_SOURCE_GENERATION_OFFSET = 12;
/** u32 directory index of the destination endpoint on the inbox's host. */
export const SLOT_DESTINATION_INDEX_OFFSET = 16;
/** u32 per-source sequence number (wraps; compare with serial-number arithmetic). */
export const SLOT_SEQUENCE_OFFSET = 20;
/** u32 length of the whole message (bytes, address prefix included): equal to the slot's length for a one-slot frame; larger for the first slot of a message that continues in the following slots. */
export const SLOT_MESSAGE_LENGTH_OFFSET = 24;
/** u32 consumer mark: written 0 by the producer; a consumer that finishes frames out of order (the relay) stores {@link SLOT_MARK_DONE} so that a restarted consumer skips it. */
export const SLOT_MARK_OFFSET = 28;
export const SLOT_HEADER_LENGTH = 32;
/** Value of the consumer mark for a frame that has been finished (acked) but not yet passed by the lane's head. */
export const SLOT_MARK_DONE = 1;
/** Value of the consumer mark for a slot skipped as invalid (counted as corrupt, not as received). */
export const SLOT_MARK_SKIPPED = 2;

/**
 * The frame arrived through the transit relay from another host. Its payload
 * area begins with an address prefix naming the source: u8 length n (1..129),
 * then n ASCII bytes `name@host`; the application payload follows. The slot's
 * length field counts prefix and payload together.
 */
export const FRAME_FLAG_REMOTE = 1;
/** The frame is a notice from the relay (see NOTICE_* below), not application data. Its source is the relay endpoint. */
export const FRAME_FLAG_NOTICE = 2;
/**
 * The frame is bound for another host (only in the relay's inbox). Its payload
 * area begins with an address prefix naming the destination, `name@host`,
 * laid out as for {@link FRAME_FLAG_REMOTE}.
 */
export const FRAME_FLAG_OUTBOUND = 4;
/** A continuation slot of a message longer than one slot (every slot after the first). Its length counts its bytes; the other header fields repeat the first slot's. */
export const FRAME_FLAG_CONTINUATION = 8;
/** Flags that put an address prefix at the start of the payload area. */
export const FRAME_FLAGS_WITH_ADDRESS = FRAME_FLAG_REMOTE | FRAME_FLAG_OUTBOUND;
/** Longest address in a prefix: a 64-byte name, "@", a 64-byte host name. */
export const MAX_ADDRESS_LENGTH = 129;
/** Length of the prefix's length byte. */
export const ADDRESS_PREFIX_HEADER_LENGTH = 1;

/** Name under which a namespace's transit relay registers (applications cannot take it: "@" is not allowed in their names). */
export const RELAY_ENDPOINT_NAME = '@relay';

/**
 * Notice payload (FRAME_FLAG_NOTICE), written by the relay into the inbox of
 * the endpoint whose frame could not be delivered:
 * u8 kind (NOTICE_UNDELIVERABLE), u8 reason (the relay ACK status code),
 * u16 reserved (0), u32 sequence of the undelivered frame, then an address
 * prefix (u8 n, n bytes) naming the destination it was sent to.
 */
export const NOTICE_KIND_OFFSET = 0;
export const NOTICE_REASON_OFFSET = 1;
export const NOTICE_SEQUENCE_OFFSET = 4;
export const NOTICE_ADDRESS_OFFSET = 8;
export const NOTICE_UNDELIVERABLE = 1;
/** Notice reasons: the relay ACK status codes 2-4 (docs/PROTOCOL.md), plus 5 from the sending relay itself. */
export const NOTICE_REASON_UNKNOWN_DESTINATION = 2;
export const NOTICE_REASON_EXPIRED = 3;
export const NOTICE_REASON_TOO_LARGE = 4;
/** The destination host is not in the sending relay's cluster config. */
export const NOTICE_REASON_UNKNOWN_HOST = 5;

/** Source index written when the source is not a directory endpoint. */
export const NO_INDEX = 0xffffffff;

export const MIN_SLOT_SIZE = 64;
export const MAX_SLOT_SIZE = 65536;
export const DEFAULT_SLOT_SIZE = 256;
export const MIN_CAPACITY = 2;
export const MAX_CAPACITY = 1 << 20;
/** Default slots per lane. */
export const DEFAULT_CAPACITY = 1024;
export const MIN_LANES = 1;
export const MAX_LANES = 4096;
/** Default lanes of an application's inbox (the relay's outbound inbox defaults to {@link DEFAULT_RELAY_LANES}). */
export const DEFAULT_LANES = 16;
/** Default lanes of the relay's outbound inbox: every local process that sends to another host takes one. */
export const DEFAULT_RELAY_LANES = 64;
/** Largest message an inbox accepts, whatever its geometry (bytes). */
export const MAX_MESSAGE_LENGTH = 1 << 24;
/** Largest segment this version creates or attaches (bytes). */
export const MAX_SEGMENT_LENGTH = 1 << 30;


// ---------------------------------------------------------------------------
// Relay dedup table: file `shmbus.<namespace>.@relay.dedup`, written by the
// namespace's relay only. Remembers the last sequence delivered per
// (source host, source index, source generation, destination name).
// ---------------------------------------------------------------------------

/** u32 number of entries. */
export const DEDUP_ENTRY_COUNT_OFFSET = 40;

// The delivery intent: the one frame the relay is writing into a local inbox,
// recorded before its publish and closed after its entry is updated, so that a
// relay killed at any instruction between the two leaves an intent its
// successor settles from the target lane's published position (§7.18).
/** u32 {@link DEDUP_INTENT_OPEN} while an intent is recorded; 0 otherwise. Stored after the fields below, cleared after the entry's update. */
export const DEDUP_INTENT_STATE_OFFSET = 64;
/** u32 index of the dedup entry the frame belongs to. */
export const DEDUP_INTENT_ENTRY_OFFSET = 68;
/** u32 sequence of the frame. */
export const DEDUP_INTENT_SEQUENCE_OFFSET = 72;
/** u32 directory index of the target endpoint. */
export const DEDUP_INTENT_TARGET_INDEX_OFFSET = 76;
/** u32 directory generation of the target endpoint. */
export const DEDUP_INTENT_TARGET_GENERATION_OFFSET = 80;
/** u32 epoch of the target inbox segment. */
export const DEDUP_INTENT_TARGET_EPOCH_OFFSET = 84;
/** u32 the relay's lane in the target inbox. */
export const DEDUP_INTENT_LANE_OFFSET = 88;
/** u32 the lane's tail once the frame is published (tail before + the frame's slots). */
export const DEDUP_INTENT_TAIL_OFFSET = 92;
/** u32 the frame's slots in the lane. */
export const DEDUP_INTENT_SLOTS_OFFSET = 96;
export const DEDUP_INTENT_OPEN = 1;
/** Where entries begin. */
export const DEDUP_HEADER_LENGTH = 128;
export const DEDUP_ENTRY_LENGTH = 32;
/** u32 1 when the entry holds a key (stored last when an entry is filled). */
export const DEDUP_USED_OFFSET = 0;
/** u32 host id of the source (1-based index in the sorted host names of the cluster config). */
export const DEDUP_SOURCE_HOST_OFFSET = 4;
/** u32 directory index of the source on its host. */
export const DEDUP_SOURCE_INDEX_OFFSET = 8;
/** u32 directory generation of the source. */
export const DEDUP_SOURCE_GENERATION_OFFSET = 12;
/** u64 fingerprint of the destination name (two u32). */
export const DEDUP_DESTINATION_HASH_OFFSET = 16;
/** u32 last sequence delivered (serial-number order). */
export const DEDUP_LAST_SEQUENCE_OFFSET = 24;
/** u32 seconds (relay-local clock) of the last use, for eviction. */
export const DEDUP_TOUCHED_OFFSET = 28;
export const DEFAULT_DEDUP_ENTRY_COUNT = 65536;
export const MAX_DEDUP_ENTRY_COUNT = 1 << 22;

/** Byte offset of lane `lane`'s descriptor. */
export function laneOffset(lane: number): number {
  return INBOX_HEADER_LENGTH + lane * LANE_LENGTH;
}

/** Byte offset of lane 0's first slot in an inbox of `laneCount` lanes: the lane descriptors come first. */
export function slotsOffset(laneCount: number): number {
  return INBOX_HEADER_LENGTH + laneCount * LANE_LENGTH;
}

/** Byte offset of slot `index` (0 <= index < capacity) of lane `lane`. */
export function slotOffset(lane: number, index: number, slotSize: number, capacity: number, laneCount: number): number {
  return slotsOffset(laneCount) + (lane * capacity + index) * slotSize;
}

/** Byte offset of directory entry `index`. */
export function entryOffset(index: number): number {
  return DIR_HEADER_LENGTH + index * DIR_ENTRY_LENGTH;
}

/** Total length of an inbox segment. */
export function inboxSegmentLength(slotSize: number, capacity: number, laneCount: number): number {
  return slotsOffset(laneCount) + slotSize * capacity * laneCount;
}

/** Total length of a directory segment. */
export function directorySegmentLength(entryCount: number): number {
  return DIR_HEADER_LENGTH + entryCount * DIR_ENTRY_LENGTH;
}

/** File name (within the namespace directory) of a namespace's directory segment. */
export function directoryFileName(namespace: string): string {
  return `shmbus.${namespace}.dir`;
}

/** File name of an endpoint's inbox segment. */
export function inboxFileName(namespace: string, name: string): string {
  return `shmbus.${namespace}.${name}.inbox`;
}

/** File name of a namespace relay's dedup table. */
export function dedupFileName(namespace: string): string {
  return `shmbus.${namespace}.@relay.dedup`;
}

/** Total length of a dedup segment. */
export function dedupSegmentLength(entryCount: number): number {
  return DEDUP_HEADER_LENGTH + entryCount * DEDUP_ENTRY_LENGTH;
}

/** Prefix shared by every file of every namespace (used by `shmbus gc`). */
export const FILE_PREFIX = 'shmbus.';
