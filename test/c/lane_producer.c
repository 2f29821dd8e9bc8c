/*
 * A shmbus producer in C, written from docs/LAYOUT.md and native/layout.h
 * alone (no JavaScript, no addon). test/00.layout.test.ts compiles it with the
 * system `cc` and runs it against an inbox that a JavaScript Bus consumes.
 *
 * It attaches the inbox (§7.2), takes a lane (§7.8), sends `frames`
 * sequence-numbered frames in batches (§7.9: one publish per batch, the fenced
 * light side of §3), waits for room when its lane is full (§7.12, the heavy
 * side: with membarrier; it clears its own space-wanted flag when the wait ends), rings the futex doorbell whenever its
 * publish finds the consumer parked (§7.11), optionally publishes one frame
 * whose length is one byte past the slot's payload (§7.10: the consumer must
 * skip and count it), sends each long message over several slots with one
 * publish (§5.3), and releases its lane (§7.8).
 *
 * usage: lane_producer <inbox path> <destination index> <frames> <park phases>
 *                      <corrupt edge 0|1> [<long message length>...]
 *
 * Frame k (sequence k) has 4 + k % (P - 3) bytes (P = slot size - 32, so every
 * length from 4 to P occurs): k as a little-endian u32, then (k * 31 + i) & 255
 * at byte i. Long message j has the next sequences and byte i = (i * 7 + j * 13
 * + 1) & 255. At `park phases` points spread over the frames it waits until the
 * consumer is parked, sends one frame, and measures how long the consumer takes
 * to read it (the doorbell's wake-up latency).
 *
 * stdout: "lane <l> reused <0|1>", "phase <p> latency_us <n>" per phase,
 *         "done frames <n> messages <n> rings <n> waits <n>", "released".
 * exit:   0 ok; 2 usage or invalid segment; 3 ERR_SHMBUS_NO_LANE;
 *         4 ERR_SHMBUS_CORRUPT_SEGMENT; 5 timed out.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../../native/layout.h"

/* §7.0: sequentially consistent atomics on 32-bit words. */
#define LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define ADD(p, n) __atomic_fetch_add((p), (n), __ATOMIC_SEQ_CST)
#define RELAXED_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

static int32_t cas_i32(int32_t *p, int32_t expected, int32_t desired) {
  __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return expected; /* the previous value */
}

static uint32_t cas_u32(uint32_t *p, uint32_t expected, uint32_t desired) {
  __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return expected;
}

enum { EXIT_USAGE = 2, EXIT_NO_LANE = 3, EXIT_CORRUPT = 4, EXIT_TIMEOUT = 5 };
static const int64_t DEADLINE_NS = 20LL * 1000 * 1000 * 1000;

static void fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("lane_producer: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(code);
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ns(long ns) {
  struct timespec ts = {0, ns};
  nanosleep(&ts, NULL);
}

/* Shared futex (no FUTEX_PRIVATE_FLAG): the word lives in a MAP_SHARED file. */
static long futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns) {
  struct timespec ts = {(time_t)(timeout_ns / 1000000000LL), (long)(timeout_ns % 1000000000LL)};
  return syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
}

static long futex_wake(void *word, int count) { return syscall(SYS_futex, word, FUTEX_WAKE, count, NULL, NULL, 0); }

/* §3 heavy_barrier(): the rare side of a store-then-load handshake. JavaScript consumers release slots
 * with plain stores and loads (the light side), so a producer that waits for room must make their
 * threads execute a full barrier between its flag store and its head load. */
static int global_expedited = -1; /* unknown until first asked */

static void heavy_barrier(void) {
  if (global_expedited < 0) {
    long supported = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    global_expedited = supported >= 0 && (supported & MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0;
  }
  if (global_expedited && syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) != 0) fail(EXIT_USAGE, "membarrier: %s", strerror(errno));
}

/* §4: field 22 of /proc/<pid>/stat, or 0 when there is no such process. */
static uint64_t start_time(int32_t pid) {
  char path[64], text[4096];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ESRCH) return 0;
    fail(EXIT_USAGE, "open %s: %s", path, strerror(errno));
  }
  ssize_t n = read(fd, text, sizeof text - 1);
  int err = errno;
  close(fd);
  if (n < 0) {
    if (err == ESRCH) return 0;
    fail(EXIT_USAGE, "read %s: %s", path, strerror(err));
  }
  text[n] = '\0';
  char *p = strrchr(text, ')'); /* comm may contain spaces and ')' */
  if (p == NULL) fail(EXIT_USAGE, "%s: no ')'", path);
  p++;
  for (int field = 3; field < 22; field++) { /* skip fields 3 .. 21 */
    while (*p == ' ') p++;
    while (*p != ' ' && *p != '\0') p++;
  }
  return strtoull(p, NULL, 10);
}

static int alive(int32_t pid, uint64_t recorded_start) {
  if (pid <= 0) return 0;
  uint64_t now = start_time(pid);
  if (now == 0) return 0;
  return recorded_start == 0 || now == recorded_start;
}

/* The attached inbox and this producer's lane. */
static uint8_t *base;
static shmbus_inbox_header *inbox;
static uint32_t slot_size, capacity, lane_count, max_message, max_payload;
static int32_t me;
static uint64_t my_start;
static uint32_t lane_index;
static shmbus_lane *lane;
static uint32_t tail, cached_head; /* private copies (§7.9) */
static unsigned long rings, waits;

static shmbus_lane *lane_at(uint32_t l) { return (shmbus_lane *)(base + SHMBUS_LANE_OFFSET(l)); }

static uint8_t *slot_at(uint32_t position) {
  return base + SHMBUS_SLOT_OFFSET(lane_index, position & (capacity - 1), slot_size, capacity, lane_count);
}

/* §7.15 */
static void shared_add_u64(shmbus_u64 *c, uint32_t n) {
  uint32_t before = ADD(&c->low, n);
  if ((uint64_t)before + n > 0xFFFFFFFFull) ADD(&c->high, 1u);
}

/* §2, §7.2: map the whole file read-write and validate the inbox header. */
static void attach(const char *path) {
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) fail(EXIT_USAGE, "open %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) fail(EXIT_USAGE, "fstat %s: %s", path, strerror(errno));
  uint64_t size = (uint64_t)st.st_size;
  if (size < SHMBUS_INBOX_HEADER_LENGTH || size > SHMBUS_MAX_SEGMENT_LENGTH || size % 4 != 0) fail(EXIT_USAGE, "%s: %llu bytes", path, (unsigned long long)size);
  base = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) fail(EXIT_USAGE, "mmap %s: %s", path, strerror(errno));
  close(fd);
  inbox = (shmbus_inbox_header *)base;
  if (inbox->common.magic != SHMBUS_SEGMENT_MAGIC || inbox->common.kind != SHMBUS_SEGMENT_KIND_INBOX) fail(EXIT_USAGE, "%s: not an inbox segment", path);
  uint32_t version = LOAD(&inbox->common.version); /* SYNC POINT segment ready (acquire) */
  if (version != SHMBUS_LAYOUT_VERSION) fail(EXIT_USAGE, "%s: layout version %u, expected %u (ERR_SHMBUS_LAYOUT_MISMATCH)", path, version, SHMBUS_LAYOUT_VERSION);
  slot_size = inbox->slot_size;
  capacity = inbox->capacity;
  lane_count = inbox->lane_count;
  max_message = inbox->max_message;
  uint64_t message_limit = (uint64_t)capacity * (slot_size - SHMBUS_SLOT_HEADER_LENGTH);
  if (message_limit > SHMBUS_MAX_MESSAGE_LENGTH) message_limit = SHMBUS_MAX_MESSAGE_LENGTH;
  int valid = inbox->common.segment_length == size && inbox->common.header_length == SHMBUS_INBOX_HEADER_LENGTH &&
              slot_size % 64 == 0 && slot_size >= SHMBUS_MIN_SLOT_SIZE && slot_size <= SHMBUS_MAX_SLOT_SIZE &&
              capacity >= SHMBUS_MIN_CAPACITY && capacity <= SHMBUS_MAX_CAPACITY && (capacity & (capacity - 1)) == 0 &&
              lane_count >= SHMBUS_MIN_LANES && lane_count <= SHMBUS_MAX_LANES &&
              (uint64_t)lane_count * capacity <= 4294967296ull && max_message >= 1 && max_message <= message_limit &&
              size == SHMBUS_INBOX_SEGMENT_LENGTH(slot_size, capacity, lane_count);
  if (!valid) fail(EXIT_USAGE, "%s: inbox header cannot be valid (ERR_SHMBUS_CORRUPT_SEGMENT)", path);
  max_payload = SHMBUS_MAX_PAYLOAD(slot_size);
}

static void release_lane(void) {
  STORE(&lane->owner_flags, 0u);  /* flags first: a lane left flagged would wait for a relay */
  cas_i32(&lane->owner, me, 0);   /* SYNC POINT lane owner */
}

/* §7.8 finish_take */
static void finish_take(uint32_t l, int reused) {
  lane_index = l;
  lane = lane_at(l);
  STORE(&lane->owner_start_time.low, (uint32_t)(my_start & 0xFFFFFFFFu));
  STORE(&lane->owner_start_time.high, (uint32_t)(my_start >> 32));
  STORE(&lane->owner_flags, 0u); /* not a relay */
  STORE(&lane->owner, me); /* SYNC POINT lane owner: the start time and flags first */
  for (;;) {               /* SYNC POINT lanes in use: before the first publish */
    uint32_t n = LOAD(&inbox->lanes_in_use);
    if (n >= l + 1 || cas_u32(&inbox->lanes_in_use, n, l + 1) == n) break;
  }
  shared_add_u64(&inbox->lane_takes, 1);
  if (reused) shared_add_u64(&inbox->lane_reuses, 1);
  tail = LOAD(&lane->tail);
  cached_head = LOAD(&lane->head); /* SYNC POINT lane release (acquire) */
  if (tail - cached_head > capacity) {
    STORE(&lane->state, (uint32_t)SHMBUS_LANE_STATE_CORRUPT); /* set it aside: no one takes it again */
    release_lane();
    fail(EXIT_CORRUPT, "lane %u: tail %u, head %u (ERR_SHMBUS_CORRUPT_SEGMENT)", l, tail, cached_head);
  }
  printf("lane %u reused %d\n", l, reused);
  fflush(stdout);
}

/* §7.8 take_lane */
static void take_lane(void) {
  for (uint32_t l = 0; l < lane_count; l++) { /* pass 1: free lanes */
    shmbus_lane *x = lane_at(l);
    if (LOAD(&x->state) == SHMBUS_LANE_STATE_CORRUPT) continue;
    if (LOAD(&x->owner) == 0 && cas_i32(&x->owner, 0, -me) == 0) {
      finish_take(l, 0);
      return;
    }
  }
  for (uint32_t l = 0; l < lane_count; l++) { /* pass 2: lanes of dead owners */
    shmbus_lane *x = lane_at(l);
    if (LOAD(&x->state) == SHMBUS_LANE_STATE_CORRUPT) continue;
    int32_t w = LOAD(&x->owner); /* the owner word, THEN its start time */
    uint64_t st = ((uint64_t)LOAD(&x->owner_start_time.high) << 32) | LOAD(&x->owner_start_time.low);
    int dead;
    if (w == 0) dead = 1;
    else if (w > SHMBUS_MAX_PID || w < -SHMBUS_MAX_PID) { /* no producer writes this: set the lane aside */
      STORE(&x->state, (uint32_t)SHMBUS_LANE_STATE_CORRUPT);
      continue;
    }
    else if (w > 0 && (LOAD(&x->owner_flags) & SHMBUS_LANE_OWNER_FLAG_RELAY) != 0) dead = 0; /* a relay's lane waits for a relay (§7.18) */
    else if (w > 0) dead = w != me && !alive(w, st);
    else dead = -w != me && !alive(-w, 0); /* being taken: pid only */
    if (dead && cas_i32(&x->owner, w, -me) == w) {
      finish_take(l, w != 0);
      return;
    }
  }
  shared_add_u64(&inbox->lane_refused, 1);
  fail(EXIT_NO_LANE, "every one of the %u lanes is held by a live process (ERR_SHMBUS_NO_LANE)", lane_count);
}

/* §7.9 refresh_head */
static void refresh_head(void) {
  uint32_t h = LOAD(&lane->head); /* SYNC POINT lane release (acquire) */
  if (tail - h > capacity || LOAD(&lane->state) == SHMBUS_LANE_STATE_CORRUPT) {
    release_lane();
    fail(EXIT_CORRUPT, "lane %u was set aside (ERR_SHMBUS_CORRUPT_SEGMENT)", lane_index);
  }
  cached_head = h;
}

static int room(uint32_t need) {
  if (tail - cached_head + need <= capacity) return 1;
  refresh_head();
  return tail - cached_head + need <= capacity;
}

/* §7.12 end_space_wait: only the waiting producer clears its flag (the consumer never does). */
static void end_space_wait(void) {
  if (__atomic_load_n(&lane->space_wanted, __ATOMIC_RELAXED) != 0) STORE(&lane->space_wanted, 0u);
}

/* §7.12: wait until `need` slots are free. */
static void wait_for_room(uint32_t need) {
  int64_t deadline = now_ns() + DEADLINE_NS;
  for (;;) {
    STORE(&lane->space_wanted, 1u); /* SYNC POINT space wanted (heavy side): store, barrier, THEN load head */
    heavy_barrier();
    refresh_head();
    if (tail - cached_head + need <= capacity) {
      end_space_wait();
      return;
    }
    int64_t left = deadline - now_ns();
    if (left <= 0) {
      end_space_wait();
      fail(EXIT_TIMEOUT, "no room in lane %u for 20 s", lane_index);
    }
    waits++;
    futex_wait(&lane->head, cached_head, left < 100000000LL ? left : 100000000LL);
  }
}

/* §7.11 ring (DOORBELL_FUTEX): after publish() took the bell. */
static void ring(void) {
  futex_wake(&inbox->parked, 1);
  rings++;
}

/* §7.9 publish, the fenced light side of parked (§3): returns 1 when this producer took the bell. */
static int publish(void) {
  STORE(&lane->tail, tail); /* SYNC POINT lane publish; seq-cst: the parked handshake */
  if (LOAD(&inbox->parked) != 0 && cas_i32(&inbox->parked, 1, 0) == 1) { /* SYNC POINT parked */
    shared_add_u64(&inbox->wakeups, 1);
    return 1;
  }
  return 0;
}

static uint32_t destination_index;

/* §7.9 write_slot: plain stores, before the publish. */
static void write_slot(uint32_t position, uint32_t sequence, const uint8_t *bytes, uint32_t n, uint32_t message_length, int continuation) {
  uint8_t *s = slot_at(position);
  shmbus_slot_header *h = (shmbus_slot_header *)s;
  h->length = n;
  /* flags (a local frame: 0, plus CONTINUATION after a message's first slot) and source host 0: one u32 */
  const uint32_t flags = continuation ? SHMBUS_FRAME_FLAG_CONTINUATION : 0u, source_host = 0;
  const uint32_t flags_and_host = flags + source_host * 65536u;
  memcpy(s + SHMBUS_SLOT_FLAGS_OFFSET, &flags_and_host, sizeof flags_and_host);
  h->source_index = SHMBUS_NO_INDEX;
  h->source_generation = 0;
  h->destination_index = destination_index;
  h->sequence = sequence;
  h->message_length = message_length;
  RELAXED_STORE(&h->mark, 0u);
  if (bytes != NULL) memcpy(s + SHMBUS_SLOT_HEADER_LENGTH, bytes, n);
}

static uint32_t frame_length(uint32_t k) { return 4 + k % (max_payload - 3); }

static void fill_frame(uint8_t *out, uint32_t k) {
  uint32_t n = frame_length(k);
  out[0] = (uint8_t)k;
  out[1] = (uint8_t)(k >> 8);
  out[2] = (uint8_t)(k >> 16);
  out[3] = (uint8_t)(k >> 24);
  for (uint32_t i = 4; i < n; i++) out[i] = (uint8_t)(k * 31 + i);
}

/* §7.9 offer_batch: frames first .. first+count-1, one publish; returns how many were written. */
static uint32_t offer_batch(uint32_t first, uint32_t count, uint8_t *scratch) {
  uint32_t room_left = capacity - (tail - cached_head);
  if (room_left < count) {
    refresh_head();
    room_left = capacity - (tail - cached_head);
  }
  uint32_t n = count < room_left ? count : room_left;
  if (n == 0) return 0;
  for (uint32_t j = 0; j < n; j++) {
    fill_frame(scratch, first + j);
    write_slot(tail + j, first + j, scratch, frame_length(first + j), frame_length(first + j), 0);
  }
  tail += n;
  if (publish()) ring();
  return n;
}

/* §7.9 offer of a long message (m > P): k consecutive slots, one publish. */
static void send_message(uint32_t sequence, const uint8_t *message, uint32_t m) {
  if (m > max_message) fail(EXIT_USAGE, "message of %u bytes > max message size %u (ERR_SHMBUS_FRAME_TOO_LARGE)", m, max_message);
  uint32_t k = SHMBUS_SLOTS_FOR(m, slot_size);
  if (!room(k)) wait_for_room(k);
  for (uint32_t j = 0; j < k; j++) {
    uint32_t n = j < k - 1 ? max_payload : m - (k - 1) * max_payload;
    write_slot(tail + j, sequence, message + (size_t)j * max_payload, n, m, j > 0);
  }
  tail += k;
  if (publish()) ring();
}

static void wait_until_parked(void) {
  int64_t deadline = now_ns() + DEADLINE_NS;
  while (LOAD(&inbox->parked) == 0) {
    if (now_ns() > deadline) fail(EXIT_TIMEOUT, "the consumer did not park within 20 s");
    sleep_ns(100000);
  }
}

/* After a publish that rang: how long until the consumer has read everything (head == tail). */
static int64_t wait_until_read(void) {
  int64_t start = now_ns();
  while (LOAD(&lane->head) != tail) {
    if (now_ns() - start > DEADLINE_NS) fail(EXIT_TIMEOUT, "the consumer did not read the frame within 20 s of the ring");
    sched_yield();
  }
  return now_ns() - start;
}

static uint32_t parse_u32(const char *text, const char *what) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(text, &end, 10);
  if (errno != 0 || *end != '\0' || v > 0xFFFFFFFFul) fail(EXIT_USAGE, "%s: not a u32: %s", what, text);
  return (uint32_t)v;
}

int main(int argc, char **argv) {
  if (argc < 6) fail(EXIT_USAGE, "usage: lane_producer <inbox> <destination index> <frames> <park phases> <corrupt edge 0|1> [<long length>...]");
  destination_index = parse_u32(argv[2], "destination index");
  uint32_t frames = parse_u32(argv[3], "frames");
  uint32_t phases = parse_u32(argv[4], "park phases");
  uint32_t corrupt_edge = parse_u32(argv[5], "corrupt edge");
  me = (int32_t)getpid();
  my_start = start_time(me);
  attach(argv[1]);
  take_lane();

  uint8_t *scratch = malloc(max_payload);
  if (scratch == NULL) fail(EXIT_USAGE, "out of memory");
  uint32_t next_phase = 0;
  uint32_t k = 0;
  while (k < frames) {
    uint32_t phase_at = next_phase < phases ? (uint32_t)((uint64_t)(next_phase + 1) * frames / (phases + 1)) : frames;
    if (phase_at < k) phase_at = k;
    if (k == phase_at) {
      /* The consumer has read everything and parks: this publish must ring, and wake it at once. */
      wait_until_parked();
      unsigned long before = rings;
      while (offer_batch(k, 1, scratch) == 0) wait_for_room(1);
      if (rings != before + 1) fail(EXIT_TIMEOUT, "phase %u: the publish did not take the bell", next_phase);
      printf("phase %u latency_us %lld\n", next_phase, (long long)(wait_until_read() / 1000));
      fflush(stdout);
      k++;
      next_phase++;
      continue;
    }
    uint32_t batch = 1 + k % 7;
    if (batch > phase_at - k) batch = phase_at - k;
    uint32_t n = offer_batch(k, batch, scratch);
    if (n == 0) wait_for_room(1);
    k += n;
  }

  uint32_t sequence = frames;
  if (corrupt_edge) {
    /* length = P + 1: one byte past the payload area, which the consumer must skip and count. */
    if (!room(1)) wait_for_room(1);
    write_slot(tail, sequence++, NULL, max_payload + 1, max_payload + 1, 0);
    tail += 1;
    if (publish()) ring();
  }

  uint32_t messages = 0;
  for (int a = 6; a < argc; a++, messages++) {
    uint32_t m = parse_u32(argv[a], "long message length");
    uint8_t *message = malloc(m == 0 ? 1 : m);
    if (message == NULL) fail(EXIT_USAGE, "out of memory");
    for (uint32_t i = 0; i < m; i++) message[i] = (uint8_t)(i * 7 + messages * 13 + 1);
    send_message(sequence++, message, m);
    free(message);
  }

  printf("done frames %u messages %u rings %lu waits %lu\n", frames, messages, rings, waits);
  fflush(stdout);
  release_lane();
  printf("released\n");
  fflush(stdout);
  free(scratch);
  return 0;
}
