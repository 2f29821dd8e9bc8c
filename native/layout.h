/*
 * native/layout.h: the C mirror of src/layout.ts (shared-memory layout
 * version 2: inboxes of single-producer lanes).
 *
 * docs/LAYOUT.md is the spec (prose, diagrams, algorithms); src/layout.ts holds
 * every number; this header repeats those numbers for C and C++ programs and
 * pins every struct offset and size with a static assertion.
 * test/00.layout.test.ts checks that the three agree: every numeric or string
 * export NAME of layout.ts (a RegExp by its source) is a macro SHMBUS_NAME here
 * with the same value, and vice versa.
 *
 * Conventions (see docs/LAYOUT.md, "Conventions"):
 *  - Little-endian. Every field of a header, entry, lane descriptor or slot
 *    header is a 32-bit word (or two 16-bit halves of one, in the slot header:
 *    flags and source host share the word at 4); the address prefix
 *    and the notice inside a payload are byte-packed. A "u64" is two u32 words, low word
 *    first (shmbus_u64), never one 64-bit access. A u64 is only 4-byte aligned
 *    (ENTRY_OWNER_START_TIME is at 12), which is why it is not a uint64_t here.
 *  - The struct fields are plain integers. Words that several processes touch
 *    concurrently must be accessed with __atomic builtins (__ATOMIC_SEQ_CST
 *    unless docs/LAYOUT.md names a weaker order for that SYNC POINT).
 *  - Offsets named *_OFFSET in the common, directory, inbox and dedup headers
 *    are from the start of the segment; ENTRY_* and DEDUP_* entry fields from
 *    the start of an entry; LANE_* from the start of a lane descriptor
 *    (SHMBUS_LANE_OFFSET); SLOT_* from the start of a slot (SHMBUS_SLOT_OFFSET);
 *    NOTICE_* from the start of the message.
 *  - The addon itself uses none of this (JavaScript passes it the parked word's
 *    byte offset); the header is for C programs that attach a namespace, and
 *    test/00.layout.test.ts compiles it and a C producer (test/c/).
 *
 * Compiles as C11 and as C++11 or later; only <stddef.h> and <stdint.h>.
 */
#ifndef SHMBUS_LAYOUT_H
#define SHMBUS_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#if defined(__cplusplus)
#define SHMBUS_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define SHMBUS_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

/* ---------------------------------------------------------------------------
 * Identity
 * ------------------------------------------------------------------------- */

/* Version of the byte layout; written last at creation (the "ready" flag). */
#define SHMBUS_LAYOUT_VERSION 2
/* ASCII "SHMB" read as a little-endian u32: the first word of every segment. */
#define SHMBUS_SEGMENT_MAGIC 0x424D4853u
/* Cache-line size used for padding. */
#define SHMBUS_CACHE_LINE_LENGTH 64

/* Segment kinds (common header `kind`). */
#define SHMBUS_SEGMENT_KIND_DIRECTORY 1
#define SHMBUS_SEGMENT_KIND_INBOX 2
#define SHMBUS_SEGMENT_KIND_DEDUP 3

/* ---------------------------------------------------------------------------
 * Files: <dir>/shmbus.<namespace>.dir, <dir>/shmbus.<namespace>.<name>.inbox and
 * <dir>/shmbus.<namespace>.@relay.dedup (default dir /dev/shm, default mode
 * 0600; both defaults live in src/options.ts).
 * ------------------------------------------------------------------------- */

/* Prefix shared by every file of every namespace. */
#define SHMBUS_FILE_PREFIX "shmbus."
/* Endpoint names, as a POSIX extended regular expression (regcomp REG_EXTENDED). */
#define SHMBUS_NAME_PATTERN "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"
/* Namespace names (no "."), as a POSIX extended regular expression. */
#define SHMBUS_NAMESPACE_PATTERN "^[A-Za-z0-9_-]{1,64}$"
/* Name of a namespace's transit relay endpoint (outside SHMBUS_NAME_PATTERN on purpose). */
#define SHMBUS_RELAY_ENDPOINT_NAME "@relay"

/* ---------------------------------------------------------------------------
 * Common header: the first 40 bytes of every segment.
 * ------------------------------------------------------------------------- */

#define SHMBUS_MAGIC_OFFSET 0
#define SHMBUS_KIND_OFFSET 4
#define SHMBUS_VERSION_OFFSET 8
#define SHMBUS_HEADER_LENGTH_OFFSET 12
#define SHMBUS_SEGMENT_LENGTH_OFFSET 16
#define SHMBUS_CREATOR_PID_OFFSET 20
#define SHMBUS_CREATOR_START_TIME_OFFSET 24
#define SHMBUS_EPOCH_OFFSET 32
#define SHMBUS_COMMON_HEADER_LENGTH 40

/* ---------------------------------------------------------------------------
 * Directory segment
 * ------------------------------------------------------------------------- */

#define SHMBUS_DIR_ENTRY_COUNT_OFFSET 40
#define SHMBUS_DIR_ENTRY_LENGTH_OFFSET 44
#define SHMBUS_DIR_LOCK_OFFSET 64
#define SHMBUS_DIR_REMOVED_OFFSET 68
#define SHMBUS_DIR_REGISTRATIONS_OFFSET 72
#define SHMBUS_DIR_TAKEOVERS_OFFSET 76
#define SHMBUS_DIR_HEADER_LENGTH 128

/* Directory entry (offsets from the start of the entry). */
#define SHMBUS_DIR_ENTRY_LENGTH 128
#define SHMBUS_ENTRY_GENERATION_OFFSET 0
#define SHMBUS_ENTRY_STATE_OFFSET 4
#define SHMBUS_ENTRY_OWNER_PID_OFFSET 8
#define SHMBUS_ENTRY_OWNER_START_TIME_OFFSET 12
#define SHMBUS_ENTRY_FLAGS_OFFSET 20
#define SHMBUS_ENTRY_DOORBELL_KIND_OFFSET 24
#define SHMBUS_ENTRY_DOORBELL_PORT_OFFSET 28
#define SHMBUS_ENTRY_SLOT_SIZE_OFFSET 32
#define SHMBUS_ENTRY_CAPACITY_OFFSET 36
#define SHMBUS_ENTRY_NAME_LENGTH_OFFSET 40
#define SHMBUS_ENTRY_METRICS_PORT_OFFSET 44 /* TCP port on 127.0.0.1 of HTTP metrics; 0 = none */
#define SHMBUS_ENTRY_NAME_OFFSET 64

#define SHMBUS_ENTRY_STATE_FREE 0
#define SHMBUS_ENTRY_STATE_ACTIVE 1
/* Entry flag: the endpoint is the namespace's transit relay. */
#define SHMBUS_ENTRY_FLAG_RELAY 1

/* Doorbell kinds (entry `doorbell_kind`). */
#define SHMBUS_DOORBELL_FUTEX 1 /* FUTEX_WAKE (shared) on the inbox's parked word */
#define SHMBUS_DOORBELL_UDP 2   /* one datagram to 127.0.0.1:doorbell_port */

#define SHMBUS_MAX_NAME_LENGTH 64
#define SHMBUS_DEFAULT_DIR_ENTRY_COUNT 256
#define SHMBUS_MAX_DIR_ENTRY_COUNT 65536

/* ---------------------------------------------------------------------------
 * Inbox segment: a header, `lane_count` lane descriptors, then the slots of
 * lane 0, of lane 1, ... Each lane is a single-producer ring of `capacity`
 * slots; positions are u32 and wrap; 0 <= tail - head <= capacity.
 * ------------------------------------------------------------------------- */

#define SHMBUS_INBOX_SLOT_SIZE_OFFSET 40   /* u32 bytes per slot, header included */
#define SHMBUS_INBOX_CAPACITY_OFFSET 44    /* u32 slots per lane, a power of two */
#define SHMBUS_INBOX_LANE_COUNT_OFFSET 48  /* u32 lanes */
#define SHMBUS_INBOX_MAX_MESSAGE_OFFSET 52 /* u32 largest message (bytes, address prefix included) */
#define SHMBUS_INBOX_LANES_IN_USE_OFFSET 64 /* own cache line; only grows (CAS by producers); SYNC POINT: lanes in use */
#define SHMBUS_INBOX_PARKED_OFFSET 128     /* own cache line; the futex word; SYNC POINT: parked */
/* u64 counters written by any producer (atomic add on the low word, carry). */
#define SHMBUS_INBOX_REFUSED_FULL_OFFSET 192
#define SHMBUS_INBOX_WAKEUPS_OFFSET 200
#define SHMBUS_INBOX_LANE_TAKES_OFFSET 208
#define SHMBUS_INBOX_LANE_REUSES_OFFSET 216
#define SHMBUS_INBOX_LANE_REFUSED_OFFSET 224
/* u64 counters written by the owner only (plain stores). */
#define SHMBUS_INBOX_RECEIVED_OFFSET 256
#define SHMBUS_INBOX_CORRUPT_OFFSET 264
#define SHMBUS_INBOX_SENT_OFFSET 272
#define SHMBUS_INBOX_SEND_REFUSED_OFFSET 280
#define SHMBUS_INBOX_PARKS_OFFSET 288
#define SHMBUS_INBOX_DISCARDED_OFFSET 296
#define SHMBUS_INBOX_CORRUPT_LANES_OFFSET 304
/* Where lane descriptor 0 begins. */
#define SHMBUS_INBOX_HEADER_LENGTH 320

/* Lane descriptor (offsets from the start of the descriptor): a producer line, then a consumer line. */
#define SHMBUS_LANE_LENGTH 128
#define SHMBUS_LANE_OWNER_OFFSET 0             /* i32: 0 free, pid owned, -pid being taken; SYNC POINT: lane owner */
#define SHMBUS_LANE_OWNER_FLAGS_OFFSET 4       /* u32: SHMBUS_LANE_OWNER_FLAG_*, stored with the start time before the pid; 0 before a release */
#define SHMBUS_LANE_OWNER_START_TIME_OFFSET 8  /* u64: stored before the pid */
#define SHMBUS_LANE_OWNER_FLAG_RELAY 1         /* held by the namespace's relay: after its death only a relay takes it over (docs/LAYOUT.md §7.8) */
#define SHMBUS_LANE_TAIL_OFFSET 16             /* u32: written by the lane's owner; SYNC POINT: lane publish */
#define SHMBUS_LANE_SPACE_WANTED_OFFSET 20     /* u32: 1 while the owner waits for room (set and cleared by the owner only); SYNC POINT: space wanted */
#define SHMBUS_LANE_HEAD_OFFSET 64             /* u32: written by the consumer; futex word; SYNC POINT: lane release */
#define SHMBUS_LANE_STATE_OFFSET 68            /* u32: SHMBUS_LANE_STATE_* (set to CORRUPT by the consumer, or by a producer that finds the lane impossible) */
#define SHMBUS_LANE_STATE_OK 0
#define SHMBUS_LANE_STATE_CORRUPT 1 /* set aside: never read, never taken again */
/* Largest pid Linux hands out (PID_MAX_LIMIT): an owner word beyond +-this is not valid (a taker sets the lane aside). */
#define SHMBUS_MAX_PID 4194304

/* Slot header (offsets from the start of the slot); the payload follows. */
#define SHMBUS_SLOT_LENGTH_OFFSET 0              /* u32 bytes in this slot's payload area */
#define SHMBUS_SLOT_FLAGS_OFFSET 4               /* u16 (low half of the word at 4) */
#define SHMBUS_SLOT_SOURCE_HOST_OFFSET 6         /* u16 (high half of the word at 4) */
#define SHMBUS_SLOT_SOURCE_INDEX_OFFSET 8
#define SHMBUS_SLOT_SOURCE_GENERATION_OFFSET 12
#define SHMBUS_SLOT_DESTINATION_INDEX_OFFSET 16
#define SHMBUS_SLOT_SEQUENCE_OFFSET 20
#define SHMBUS_SLOT_MESSAGE_LENGTH_OFFSET 24     /* u32 bytes of the whole message */
#define SHMBUS_SLOT_MARK_OFFSET 28               /* u32 consumer mark: 0 from the producer */
#define SHMBUS_SLOT_HEADER_LENGTH 32
/* Consumer marks (relay mode). DONE: a frame finished out of order, counted as received when the head
 * passes it. SKIPPED: a slot scan skipped as invalid, counted as corrupt once; the head passes it without
 * counting it as received, and a restarted scan passes it without decoding or counting it again. A frame
 * whose mark is non-zero is not handed out again. */
#define SHMBUS_SLOT_MARK_DONE 1
#define SHMBUS_SLOT_MARK_SKIPPED 2

/* Frame flags (slot `flags`). */
#define SHMBUS_FRAME_FLAG_REMOTE 1       /* from another host; the message starts with the source address prefix */
#define SHMBUS_FRAME_FLAG_NOTICE 2       /* a notice from the relay; the message is a shmbus_notice */
#define SHMBUS_FRAME_FLAG_OUTBOUND 4     /* in the relay's inbox; the message starts with the destination address prefix */
#define SHMBUS_FRAME_FLAG_CONTINUATION 8 /* every slot of a long message after its first */
/* Flags that put an address prefix at the start of the message. */
#define SHMBUS_FRAME_FLAGS_WITH_ADDRESS 5
/* Address prefix: u8 length n (1..SHMBUS_MAX_ADDRESS_LENGTH), then n ASCII bytes "name@host". */
#define SHMBUS_MAX_ADDRESS_LENGTH 129
#define SHMBUS_ADDRESS_PREFIX_HEADER_LENGTH 1

/* Notice payload (SHMBUS_FRAME_FLAG_NOTICE), offsets from the start of the payload. */
#define SHMBUS_NOTICE_KIND_OFFSET 0     /* u8 */
#define SHMBUS_NOTICE_REASON_OFFSET 1   /* u8: the relay's ACK status code */
#define SHMBUS_NOTICE_SEQUENCE_OFFSET 4 /* u32: sequence of the undelivered frame */
#define SHMBUS_NOTICE_ADDRESS_OFFSET 8  /* address prefix of the destination */
#define SHMBUS_NOTICE_UNDELIVERABLE 1
#define SHMBUS_NOTICE_REASON_UNKNOWN_DESTINATION 2
#define SHMBUS_NOTICE_REASON_EXPIRED 3
#define SHMBUS_NOTICE_REASON_TOO_LARGE 4
#define SHMBUS_NOTICE_REASON_UNKNOWN_HOST 5

/* Source index of a frame whose source is not a directory endpoint. */
#define SHMBUS_NO_INDEX 0xFFFFFFFFu

/* ---------------------------------------------------------------------------
 * Limits and defaults
 * ------------------------------------------------------------------------- */

#define SHMBUS_MIN_SLOT_SIZE 64
#define SHMBUS_MAX_SLOT_SIZE 65536
#define SHMBUS_DEFAULT_SLOT_SIZE 256
#define SHMBUS_MIN_CAPACITY 2
#define SHMBUS_MAX_CAPACITY 1048576 /* 1 << 20 */
#define SHMBUS_DEFAULT_CAPACITY 1024 /* slots per lane */
#define SHMBUS_MIN_LANES 1
#define SHMBUS_MAX_LANES 4096
#define SHMBUS_DEFAULT_LANES 16
#define SHMBUS_DEFAULT_RELAY_LANES 64
#define SHMBUS_MAX_MESSAGE_LENGTH 16777216 /* 1 << 24 */
#define SHMBUS_MAX_SEGMENT_LENGTH 1073741824 /* 1 << 30 */

/* ---------------------------------------------------------------------------
 * Relay dedup segment (written by the namespace's relay only). Its header
 * holds the delivery intent: the one frame the relay is publishing into a
 * local inbox, recorded before the publish and closed after the frame's entry
 * is updated; a restarted relay settles an open one from the target lane's
 * tail (docs/LAYOUT.md §5.5, §7.18).
 * ------------------------------------------------------------------------- */

#define SHMBUS_DEDUP_ENTRY_COUNT_OFFSET 40
#define SHMBUS_DEDUP_INTENT_STATE_OFFSET 64             /* u32: SHMBUS_DEDUP_INTENT_OPEN while an intent is recorded, else 0; seq-cst; SYNC POINT: delivery intent */
#define SHMBUS_DEDUP_INTENT_ENTRY_OFFSET 68             /* u32: dedup entry of the frame's key; the fields below are stored before the state */
#define SHMBUS_DEDUP_INTENT_SEQUENCE_OFFSET 72          /* u32: the frame's sequence */
#define SHMBUS_DEDUP_INTENT_TARGET_INDEX_OFFSET 76      /* u32: directory entry index of the target endpoint */
#define SHMBUS_DEDUP_INTENT_TARGET_GENERATION_OFFSET 80 /* u32: its generation */
#define SHMBUS_DEDUP_INTENT_TARGET_EPOCH_OFFSET 84      /* u32: epoch of the target's inbox segment */
#define SHMBUS_DEDUP_INTENT_LANE_OFFSET 88              /* u32: the relay's lane in that inbox */
#define SHMBUS_DEDUP_INTENT_TAIL_OFFSET 92              /* u32: the lane's tail once the frame is published */
#define SHMBUS_DEDUP_INTENT_SLOTS_OFFSET 96             /* u32: the frame's slots (>= 1): unpublished, the tail is TAIL - SLOTS */
#define SHMBUS_DEDUP_INTENT_OPEN 1
/* Where dedup entries begin (after the delivery intent). */
#define SHMBUS_DEDUP_HEADER_LENGTH 128
#define SHMBUS_DEDUP_ENTRY_LENGTH 32
#define SHMBUS_DEDUP_USED_OFFSET 0
#define SHMBUS_DEDUP_SOURCE_HOST_OFFSET 4
#define SHMBUS_DEDUP_SOURCE_INDEX_OFFSET 8
#define SHMBUS_DEDUP_SOURCE_GENERATION_OFFSET 12
#define SHMBUS_DEDUP_DESTINATION_HASH_OFFSET 16
#define SHMBUS_DEDUP_LAST_SEQUENCE_OFFSET 24
#define SHMBUS_DEDUP_TOUCHED_OFFSET 28
#define SHMBUS_DEFAULT_DEDUP_ENTRY_COUNT 65536
#define SHMBUS_MAX_DEDUP_ENTRY_COUNT 4194304 /* 1 << 22 */

/* ---------------------------------------------------------------------------
 * Addressing (mirrors of the layout.ts functions; results are uint64_t)
 * ------------------------------------------------------------------------- */

/* Byte offset of lane `lane`'s descriptor. */
#define SHMBUS_LANE_OFFSET(lane) \
  ((uint64_t)SHMBUS_INBOX_HEADER_LENGTH + (uint64_t)(lane) * (uint64_t)SHMBUS_LANE_LENGTH)
/* Byte offset of lane 0's slot 0 in an inbox of `lane_count` lanes (the descriptors come first). */
#define SHMBUS_SLOTS_OFFSET(lane_count) SHMBUS_LANE_OFFSET(lane_count)
/* Byte offset of slot `index` (0 <= index < capacity) of lane `lane`; position p is in slot p & (capacity - 1). */
#define SHMBUS_SLOT_OFFSET(lane, index, slot_size, capacity, lane_count) \
  (SHMBUS_SLOTS_OFFSET(lane_count) +                                     \
   ((uint64_t)(lane) * (uint64_t)(capacity) + (uint64_t)(index)) * (uint64_t)(slot_size))
/* Byte offset of directory entry `index`. */
#define SHMBUS_ENTRY_OFFSET(index) \
  ((uint64_t)SHMBUS_DIR_HEADER_LENGTH + (uint64_t)(index) * (uint64_t)SHMBUS_DIR_ENTRY_LENGTH)
/* Total length of an inbox segment. */
#define SHMBUS_INBOX_SEGMENT_LENGTH(slot_size, capacity, lane_count) \
  (SHMBUS_SLOTS_OFFSET(lane_count) + (uint64_t)(slot_size) * (uint64_t)(capacity) * (uint64_t)(lane_count))
/* Total length of a directory segment. */
#define SHMBUS_DIRECTORY_SEGMENT_LENGTH(entry_count) \
  ((uint64_t)SHMBUS_DIR_HEADER_LENGTH + (uint64_t)(entry_count) * (uint64_t)SHMBUS_DIR_ENTRY_LENGTH)
/* Total length of a dedup segment. */
#define SHMBUS_DEDUP_SEGMENT_LENGTH(entry_count) \
  ((uint64_t)SHMBUS_DEDUP_HEADER_LENGTH + (uint64_t)(entry_count) * (uint64_t)SHMBUS_DEDUP_ENTRY_LENGTH)
/* Largest payload one slot holds. */
#define SHMBUS_MAX_PAYLOAD(slot_size) ((uint32_t)(slot_size) - (uint32_t)SHMBUS_SLOT_HEADER_LENGTH)
/* Slots a message of `length` bytes occupies: 1 up to a slot's payload, else ceil(length / payload). */
#define SHMBUS_SLOTS_FOR(length, slot_size)                       \
  ((uint32_t)(length) <= SHMBUS_MAX_PAYLOAD(slot_size) ? 1u       \
   : ((uint32_t)(length) + SHMBUS_MAX_PAYLOAD(slot_size) - 1u) / SHMBUS_MAX_PAYLOAD(slot_size))
/* A frame's id (the relay's name for it until it is released): lane * capacity + slot index, a u32. */
#define SHMBUS_FRAME_ID(lane, position, capacity) \
  ((uint32_t)((uint32_t)(lane) * (uint32_t)(capacity) + ((uint32_t)(position) & ((uint32_t)(capacity) - 1u))))

/* ---------------------------------------------------------------------------
 * Structs
 * ------------------------------------------------------------------------- */

/* A u64 stored as two u32 words, low word first; each word accessed alone. */
typedef struct shmbus_u64 {
  uint32_t low;
  uint32_t high;
} shmbus_u64;

/* First 40 bytes of every segment. */
typedef struct shmbus_common_header {
  uint32_t magic;                /* SHMBUS_SEGMENT_MAGIC */
  uint32_t kind;                 /* SHMBUS_SEGMENT_KIND_* */
  uint32_t version;              /* 0 while being created; SYNC POINT: segment ready */
  uint32_t header_length;        /* where the first entry / slot begins */
  uint32_t segment_length;       /* length of the whole file */
  int32_t creator_pid;
  shmbus_u64 creator_start_time; /* clock ticks since boot, /proc/<pid>/stat field 22 */
  uint32_t epoch;                /* random, chosen at creation */
  uint32_t reserved_36;          /* reserved, zero */
} shmbus_common_header;

/* Header of a directory segment; entries follow at SHMBUS_DIR_HEADER_LENGTH. */
typedef struct shmbus_directory_header {
  shmbus_common_header common;
  uint32_t entry_count;
  uint32_t entry_length; /* SHMBUS_DIR_ENTRY_LENGTH */
  uint8_t reserved_48[SHMBUS_DIR_LOCK_OFFSET - SHMBUS_DIR_ENTRY_LENGTH_OFFSET - 4];
  int32_t lock;           /* 0 or the holder's pid; CAS */
  uint32_t removed;       /* 1 once the file is (about to be) unlinked */
  uint32_t registrations; /* under the lock */
  uint32_t takeovers;     /* under the lock */
  uint8_t reserved_80[SHMBUS_DIR_HEADER_LENGTH - SHMBUS_DIR_TAKEOVERS_OFFSET - 4];
} shmbus_directory_header;

/* One directory entry (seqlock on `generation`). */
typedef struct shmbus_dir_entry {
  uint32_t generation; /* odd while written; SYNC POINT: entry published */
  uint32_t state;      /* SHMBUS_ENTRY_STATE_* */
  int32_t owner_pid;
  shmbus_u64 owner_start_time; /* at offset 12: 4-byte aligned only */
  uint32_t flags;              /* SHMBUS_ENTRY_FLAG_* */
  uint32_t doorbell_kind;      /* SHMBUS_DOORBELL_* */
  uint32_t doorbell_port;      /* UDP port on 127.0.0.1, or 0 */
  uint32_t slot_size;
  uint32_t capacity;
  uint32_t name_length;  /* 1..SHMBUS_MAX_NAME_LENGTH */
  uint32_t metrics_port; /* TCP port on 127.0.0.1 of HTTP metrics (relays); 0 = none */
  uint8_t reserved_48[SHMBUS_ENTRY_NAME_OFFSET - SHMBUS_ENTRY_METRICS_PORT_OFFSET - 4];
  uint8_t name[SHMBUS_MAX_NAME_LENGTH]; /* ASCII, zero-padded, not terminated when 64 long */
} shmbus_dir_entry;

/* Header of an inbox segment; lane descriptor 0 begins at SHMBUS_INBOX_HEADER_LENGTH. */
typedef struct shmbus_inbox_header {
  shmbus_common_header common;
  uint32_t slot_size;   /* multiple of 64 in [64, 65536] */
  uint32_t capacity;    /* slots per lane, power of two in [2, 1 << 20] */
  uint32_t lane_count;  /* [1, 4096]; lane_count * capacity <= 2^32 */
  uint32_t max_message; /* [1, min(1 << 24, capacity * (slot_size - 32))] */
  uint8_t reserved_56[SHMBUS_INBOX_LANES_IN_USE_OFFSET - SHMBUS_INBOX_MAX_MESSAGE_OFFSET - 4];
  uint32_t lanes_in_use; /* one more than the highest lane ever taken; SYNC POINT: lanes in use */
  uint8_t reserved_68[SHMBUS_INBOX_PARKED_OFFSET - SHMBUS_INBOX_LANES_IN_USE_OFFSET - 4];
  int32_t parked; /* futex word; SYNC POINT: parked */
  uint8_t reserved_132[SHMBUS_INBOX_REFUSED_FULL_OFFSET - SHMBUS_INBOX_PARKED_OFFSET - 4];
  shmbus_u64 refused_full; /* any producer, from here to lane_refused */
  shmbus_u64 wakeups;
  shmbus_u64 lane_takes;
  shmbus_u64 lane_reuses;
  shmbus_u64 lane_refused;
  uint8_t reserved_232[SHMBUS_INBOX_RECEIVED_OFFSET - SHMBUS_INBOX_LANE_REFUSED_OFFSET - 8];
  shmbus_u64 received; /* owner only, from here on */
  shmbus_u64 corrupt;
  shmbus_u64 sent;
  shmbus_u64 send_refused;
  shmbus_u64 parks;
  shmbus_u64 discarded;
  shmbus_u64 corrupt_lanes;
  uint8_t reserved_312[SHMBUS_INBOX_HEADER_LENGTH - SHMBUS_INBOX_CORRUPT_LANES_OFFSET - 8];
} shmbus_inbox_header;

/* One lane descriptor: the producer's line (owner, owner flags, start time, tail, space wanted), then the consumer's (head, state). */
typedef struct shmbus_lane {
  int32_t owner;               /* 0 free, pid owned, -pid being taken; SYNC POINT: lane owner */
  uint32_t owner_flags;        /* SHMBUS_LANE_OWNER_FLAG_*; stored before the pid, 0 before a release */
  shmbus_u64 owner_start_time; /* clock ticks since boot; stored before the pid */
  uint32_t tail;               /* next position to publish; SYNC POINT: lane publish */
  uint32_t space_wanted;       /* 1 while the owner waits for room (the owner clears it); SYNC POINT: space wanted */
  uint8_t reserved_24[SHMBUS_LANE_HEAD_OFFSET - SHMBUS_LANE_SPACE_WANTED_OFFSET - 4];
  uint32_t head;               /* next position to consume; futex word; SYNC POINT: lane release */
  uint32_t state;              /* SHMBUS_LANE_STATE_* (CORRUPT: set aside by the consumer or a producer) */
  uint8_t reserved_72[SHMBUS_LANE_LENGTH - SHMBUS_LANE_STATE_OFFSET - 4];
} shmbus_lane;

/* Header of one slot; the payload follows at SHMBUS_SLOT_HEADER_LENGTH. */
typedef struct shmbus_slot_header {
  uint32_t length;            /* bytes in this slot, <= slot_size - 32 */
  uint16_t flags;             /* SHMBUS_FRAME_FLAG_* (low half of the word at 4) */
  uint16_t source_host;       /* 0 = this host (high half of the word at 4) */
  uint32_t source_index;      /* directory index of the source, or SHMBUS_NO_INDEX */
  uint32_t source_generation;
  uint32_t destination_index;
  uint32_t sequence;          /* per-source, wraps */
  uint32_t message_length;    /* bytes of the whole message: = length for a one-slot frame */
  uint32_t mark;              /* consumer mark: 0 from the producer; SHMBUS_SLOT_MARK_DONE or _SKIPPED */
} shmbus_slot_header;

/* Address prefix at the start of the message of frames flagged
 * SHMBUS_FRAME_FLAGS_WITH_ADDRESS (and inside notices): only 1 + length bytes
 * are present; the application payload follows them, unaligned. */
typedef struct shmbus_address_prefix {
  uint8_t length; /* 1..SHMBUS_MAX_ADDRESS_LENGTH */
  uint8_t text[SHMBUS_MAX_ADDRESS_LENGTH]; /* ASCII "name@host", not terminated */
} shmbus_address_prefix;

/* Payload of a notice frame (SHMBUS_FRAME_FLAG_NOTICE); only 8 + 1 + address.length bytes are present. */
typedef struct shmbus_notice {
  uint8_t kind;        /* SHMBUS_NOTICE_UNDELIVERABLE */
  uint8_t reason;      /* the relay's ACK status code */
  uint16_t reserved_2; /* reserved, zero */
  uint32_t sequence;   /* sequence of the frame that was not delivered */
  shmbus_address_prefix address; /* the destination it was sent to */
} shmbus_notice;

/* Header of a dedup segment; entries follow at SHMBUS_DEDUP_HEADER_LENGTH. */
typedef struct shmbus_dedup_header {
  shmbus_common_header common;
  uint32_t entry_count;
  uint8_t reserved_44[SHMBUS_DEDUP_INTENT_STATE_OFFSET - SHMBUS_DEDUP_ENTRY_COUNT_OFFSET - 4];
  uint32_t intent_state;             /* SHMBUS_DEDUP_INTENT_OPEN while recorded (seq-cst, after the fields below, before the publish; 0 after the entry's update); SYNC POINT: delivery intent */
  uint32_t intent_entry;             /* dedup entry of the frame's stream */
  uint32_t intent_sequence;          /* the frame's sequence */
  uint32_t intent_target_index;      /* directory index of the target endpoint */
  uint32_t intent_target_generation; /* its directory generation */
  uint32_t intent_target_epoch;      /* epoch of its inbox segment */
  uint32_t intent_lane;              /* the relay's lane in that inbox */
  uint32_t intent_tail;              /* the lane's tail once the frame is published */
  uint32_t intent_slots;             /* the frame's slots */
  uint8_t reserved_100[SHMBUS_DEDUP_HEADER_LENGTH - SHMBUS_DEDUP_INTENT_SLOTS_OFFSET - 4];
} shmbus_dedup_header;

/* One dedup entry. */
typedef struct shmbus_dedup_entry {
  uint32_t used;               /* 1 when the entry holds a key (stored last when filled) */
  uint32_t source_host;        /* host id of the source */
  uint32_t source_index;       /* directory index of the source on its host */
  uint32_t source_generation;  /* directory generation of the source */
  shmbus_u64 destination_hash; /* fingerprint of the destination name */
  uint32_t last_sequence;      /* last sequence delivered (serial-number order) */
  uint32_t touched;            /* seconds (relay-local clock) of the last use */
} shmbus_dedup_entry;

/* ---------------------------------------------------------------------------
 * Every offset and size pinned
 * ------------------------------------------------------------------------- */

#define SHMBUS_ASSERT_OFFSET(type, member, offset) \
  SHMBUS_STATIC_ASSERT(offsetof(type, member) == (offset), #type "." #member " is at " #offset)
#define SHMBUS_ASSERT_SIZE(type, size) SHMBUS_STATIC_ASSERT(sizeof(type) == (size), "sizeof " #type " is " #size)

SHMBUS_ASSERT_SIZE(shmbus_u64, 8);
SHMBUS_ASSERT_OFFSET(shmbus_u64, low, 0);
SHMBUS_ASSERT_OFFSET(shmbus_u64, high, 4);

SHMBUS_ASSERT_OFFSET(shmbus_common_header, magic, SHMBUS_MAGIC_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_common_header, kind, SHMBUS_KIND_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_common_header, version, SHMBUS_VERSION_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_common_header, header_length, SHMBUS_HEADER_LENGTH_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_common_header, segment_length, SHMBUS_SEGMENT_LENGTH_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_common_header, creator_pid, SHMBUS_CREATOR_PID_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_common_header, creator_start_time, SHMBUS_CREATOR_START_TIME_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_common_header, epoch, SHMBUS_EPOCH_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_common_header, reserved_36, 36);
SHMBUS_ASSERT_SIZE(shmbus_common_header, SHMBUS_COMMON_HEADER_LENGTH);

SHMBUS_ASSERT_OFFSET(shmbus_directory_header, common, 0);
SHMBUS_ASSERT_OFFSET(shmbus_directory_header, entry_count, SHMBUS_DIR_ENTRY_COUNT_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_directory_header, entry_length, SHMBUS_DIR_ENTRY_LENGTH_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_directory_header, reserved_48, 48);
SHMBUS_ASSERT_OFFSET(shmbus_directory_header, lock, SHMBUS_DIR_LOCK_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_directory_header, removed, SHMBUS_DIR_REMOVED_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_directory_header, registrations, SHMBUS_DIR_REGISTRATIONS_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_directory_header, takeovers, SHMBUS_DIR_TAKEOVERS_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_directory_header, reserved_80, 80);
SHMBUS_ASSERT_SIZE(shmbus_directory_header, SHMBUS_DIR_HEADER_LENGTH);

SHMBUS_ASSERT_OFFSET(shmbus_dir_entry, generation, SHMBUS_ENTRY_GENERATION_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dir_entry, state, SHMBUS_ENTRY_STATE_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dir_entry, owner_pid, SHMBUS_ENTRY_OWNER_PID_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dir_entry, owner_start_time, SHMBUS_ENTRY_OWNER_START_TIME_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dir_entry, flags, SHMBUS_ENTRY_FLAGS_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dir_entry, doorbell_kind, SHMBUS_ENTRY_DOORBELL_KIND_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dir_entry, doorbell_port, SHMBUS_ENTRY_DOORBELL_PORT_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dir_entry, slot_size, SHMBUS_ENTRY_SLOT_SIZE_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dir_entry, capacity, SHMBUS_ENTRY_CAPACITY_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dir_entry, name_length, SHMBUS_ENTRY_NAME_LENGTH_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dir_entry, metrics_port, SHMBUS_ENTRY_METRICS_PORT_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dir_entry, reserved_48, 48);
SHMBUS_ASSERT_OFFSET(shmbus_dir_entry, name, SHMBUS_ENTRY_NAME_OFFSET);
SHMBUS_ASSERT_SIZE(shmbus_dir_entry, SHMBUS_DIR_ENTRY_LENGTH);

SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, common, 0);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, slot_size, SHMBUS_INBOX_SLOT_SIZE_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, capacity, SHMBUS_INBOX_CAPACITY_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, lane_count, SHMBUS_INBOX_LANE_COUNT_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, max_message, SHMBUS_INBOX_MAX_MESSAGE_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, reserved_56, 56);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, lanes_in_use, SHMBUS_INBOX_LANES_IN_USE_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, reserved_68, 68);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, parked, SHMBUS_INBOX_PARKED_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, reserved_132, 132);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, refused_full, SHMBUS_INBOX_REFUSED_FULL_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, wakeups, SHMBUS_INBOX_WAKEUPS_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, lane_takes, SHMBUS_INBOX_LANE_TAKES_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, lane_reuses, SHMBUS_INBOX_LANE_REUSES_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, lane_refused, SHMBUS_INBOX_LANE_REFUSED_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, reserved_232, 232);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, received, SHMBUS_INBOX_RECEIVED_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, corrupt, SHMBUS_INBOX_CORRUPT_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, sent, SHMBUS_INBOX_SENT_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, send_refused, SHMBUS_INBOX_SEND_REFUSED_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, parks, SHMBUS_INBOX_PARKS_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, discarded, SHMBUS_INBOX_DISCARDED_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, corrupt_lanes, SHMBUS_INBOX_CORRUPT_LANES_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_inbox_header, reserved_312, 312);
SHMBUS_ASSERT_SIZE(shmbus_inbox_header, SHMBUS_INBOX_HEADER_LENGTH);

SHMBUS_ASSERT_OFFSET(shmbus_lane, owner, SHMBUS_LANE_OWNER_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_lane, owner_flags, SHMBUS_LANE_OWNER_FLAGS_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_lane, owner_start_time, SHMBUS_LANE_OWNER_START_TIME_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_lane, tail, SHMBUS_LANE_TAIL_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_lane, space_wanted, SHMBUS_LANE_SPACE_WANTED_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_lane, reserved_24, 24);
SHMBUS_ASSERT_OFFSET(shmbus_lane, head, SHMBUS_LANE_HEAD_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_lane, state, SHMBUS_LANE_STATE_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_lane, reserved_72, 72);
SHMBUS_ASSERT_SIZE(shmbus_lane, SHMBUS_LANE_LENGTH);

SHMBUS_ASSERT_OFFSET(shmbus_slot_header, length, SHMBUS_SLOT_LENGTH_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_slot_header, flags, SHMBUS_SLOT_FLAGS_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_slot_header, source_host, SHMBUS_SLOT_SOURCE_HOST_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_slot_header, source_index, SHMBUS_SLOT_SOURCE_INDEX_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_slot_header, source_generation, SHMBUS_SLOT_SOURCE_GENERATION_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_slot_header, destination_index, SHMBUS_SLOT_DESTINATION_INDEX_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_slot_header, sequence, SHMBUS_SLOT_SEQUENCE_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_slot_header, message_length, SHMBUS_SLOT_MESSAGE_LENGTH_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_slot_header, mark, SHMBUS_SLOT_MARK_OFFSET);
SHMBUS_ASSERT_SIZE(shmbus_slot_header, SHMBUS_SLOT_HEADER_LENGTH);

SHMBUS_ASSERT_OFFSET(shmbus_address_prefix, length, 0);
SHMBUS_ASSERT_OFFSET(shmbus_address_prefix, text, SHMBUS_ADDRESS_PREFIX_HEADER_LENGTH);
SHMBUS_ASSERT_SIZE(shmbus_address_prefix, SHMBUS_ADDRESS_PREFIX_HEADER_LENGTH + SHMBUS_MAX_ADDRESS_LENGTH);

SHMBUS_ASSERT_OFFSET(shmbus_notice, kind, SHMBUS_NOTICE_KIND_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_notice, reason, SHMBUS_NOTICE_REASON_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_notice, reserved_2, 2);
SHMBUS_ASSERT_OFFSET(shmbus_notice, sequence, SHMBUS_NOTICE_SEQUENCE_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_notice, address, SHMBUS_NOTICE_ADDRESS_OFFSET);

SHMBUS_ASSERT_OFFSET(shmbus_dedup_header, common, 0);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_header, entry_count, SHMBUS_DEDUP_ENTRY_COUNT_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_header, reserved_44, 44);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_header, intent_state, SHMBUS_DEDUP_INTENT_STATE_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_header, intent_entry, SHMBUS_DEDUP_INTENT_ENTRY_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_header, intent_sequence, SHMBUS_DEDUP_INTENT_SEQUENCE_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_header, intent_target_index, SHMBUS_DEDUP_INTENT_TARGET_INDEX_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_header, intent_target_generation, SHMBUS_DEDUP_INTENT_TARGET_GENERATION_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_header, intent_target_epoch, SHMBUS_DEDUP_INTENT_TARGET_EPOCH_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_header, intent_lane, SHMBUS_DEDUP_INTENT_LANE_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_header, intent_tail, SHMBUS_DEDUP_INTENT_TAIL_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_header, intent_slots, SHMBUS_DEDUP_INTENT_SLOTS_OFFSET);
SHMBUS_ASSERT_SIZE(shmbus_dedup_header, SHMBUS_DEDUP_HEADER_LENGTH);

SHMBUS_ASSERT_OFFSET(shmbus_dedup_entry, used, SHMBUS_DEDUP_USED_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_entry, source_host, SHMBUS_DEDUP_SOURCE_HOST_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_entry, source_index, SHMBUS_DEDUP_SOURCE_INDEX_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_entry, source_generation, SHMBUS_DEDUP_SOURCE_GENERATION_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_entry, destination_hash, SHMBUS_DEDUP_DESTINATION_HASH_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_entry, last_sequence, SHMBUS_DEDUP_LAST_SEQUENCE_OFFSET);
SHMBUS_ASSERT_OFFSET(shmbus_dedup_entry, touched, SHMBUS_DEDUP_TOUCHED_OFFSET);
SHMBUS_ASSERT_SIZE(shmbus_dedup_entry, SHMBUS_DEDUP_ENTRY_LENGTH);

/* Cross-structure facts the algorithms rely on. */
#define SHMBUS_LINE_OF(offset) ((offset) / SHMBUS_CACHE_LINE_LENGTH)
SHMBUS_STATIC_ASSERT(SHMBUS_INBOX_HEADER_LENGTH % SHMBUS_CACHE_LINE_LENGTH == 0, "lane 0 starts on a cache line");
SHMBUS_STATIC_ASSERT(SHMBUS_LANE_LENGTH % SHMBUS_CACHE_LINE_LENGTH == 0, "lanes are whole cache lines, so slot 0 starts on one");
SHMBUS_STATIC_ASSERT(SHMBUS_DIR_HEADER_LENGTH % SHMBUS_CACHE_LINE_LENGTH == 0, "entry 0 starts on a cache line");
SHMBUS_STATIC_ASSERT(SHMBUS_DIR_ENTRY_LENGTH % SHMBUS_CACHE_LINE_LENGTH == 0, "entries are whole cache lines");
SHMBUS_STATIC_ASSERT(SHMBUS_DEDUP_HEADER_LENGTH % SHMBUS_CACHE_LINE_LENGTH == 0, "dedup entries start on a cache line");
SHMBUS_STATIC_ASSERT(SHMBUS_FRAME_FLAGS_WITH_ADDRESS == (SHMBUS_FRAME_FLAG_REMOTE | SHMBUS_FRAME_FLAG_OUTBOUND),
                     "REMOTE and OUTBOUND frames carry an address prefix");
SHMBUS_STATIC_ASSERT((SHMBUS_FRAME_FLAG_CONTINUATION & (SHMBUS_FRAME_FLAG_REMOTE | SHMBUS_FRAME_FLAG_NOTICE | SHMBUS_FRAME_FLAG_OUTBOUND)) == 0,
                     "the continuation flag is a bit of its own");
SHMBUS_STATIC_ASSERT(SHMBUS_MIN_SLOT_SIZE % SHMBUS_CACHE_LINE_LENGTH == 0, "slots are whole cache lines");
SHMBUS_STATIC_ASSERT(SHMBUS_MIN_SLOT_SIZE > SHMBUS_SLOT_HEADER_LENGTH, "a slot holds its header and a payload");
SHMBUS_STATIC_ASSERT(SHMBUS_ENTRY_NAME_OFFSET + SHMBUS_MAX_NAME_LENGTH == SHMBUS_DIR_ENTRY_LENGTH, "the name ends the entry");
SHMBUS_STATIC_ASSERT(SHMBUS_LINE_OF(SHMBUS_INBOX_LANES_IN_USE_OFFSET) != SHMBUS_LINE_OF(SHMBUS_INBOX_PARKED_OFFSET),
                     "lanes in use and parked on distinct cache lines");
SHMBUS_STATIC_ASSERT(SHMBUS_LINE_OF(SHMBUS_INBOX_PARKED_OFFSET) != SHMBUS_LINE_OF(SHMBUS_INBOX_REFUSED_FULL_OFFSET),
                     "parked and the producers' counters on distinct cache lines");
SHMBUS_STATIC_ASSERT(SHMBUS_LINE_OF(SHMBUS_INBOX_LANE_REFUSED_OFFSET + 7) != SHMBUS_LINE_OF(SHMBUS_INBOX_RECEIVED_OFFSET),
                     "producer-written and owner-only counters on distinct cache lines");
SHMBUS_STATIC_ASSERT(SHMBUS_LINE_OF(SHMBUS_LANE_TAIL_OFFSET) != SHMBUS_LINE_OF(SHMBUS_LANE_HEAD_OFFSET),
                     "a lane's tail (producer) and head (consumer) on distinct cache lines");
SHMBUS_STATIC_ASSERT(SHMBUS_LINE_OF(SHMBUS_LANE_OWNER_OFFSET) == SHMBUS_LINE_OF(SHMBUS_LANE_SPACE_WANTED_OFFSET),
                     "owner, start time, tail and space wanted share the producer's line");
SHMBUS_STATIC_ASSERT(SHMBUS_LINE_OF(SHMBUS_LANE_HEAD_OFFSET) == SHMBUS_LINE_OF(SHMBUS_LANE_STATE_OFFSET),
                     "head and state share the consumer's line");
SHMBUS_STATIC_ASSERT((uint64_t)SHMBUS_MAX_LANES * (uint64_t)SHMBUS_MAX_CAPACITY <= 4294967296ull,
                     "frame ids (lane * capacity + slot) fit a u32");
SHMBUS_STATIC_ASSERT(SHMBUS_MAX_PID > 0 && SHMBUS_MAX_PID < 2147483647, "owner words +-pid fit an i32");

#endif /* SHMBUS_LAYOUT_H */
