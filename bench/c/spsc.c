/*
 * spsc.c: a minimal shared-memory single-producer / single-consumer ring
 * between two processes, the physical limit the shmbus benchmark compares to.
 *
 * Usage: spsc <mode> <payload bytes> <producer cpu> <consumer cpu> <seconds> <max frames>
 *   mode    tput1   one-way throughput, the producer publishes its tail after every frame
 *           tput32  one-way throughput, the producer publishes its tail after every 32 frames
 *           (the consumer publishes its head every 32 frames in both modes)
 *           rtt     busy-poll ping-pong round trip (two rings)
 *   cpu     core to pin that side to (sched_setaffinity), or -1 for unpinned
 *   seconds time bound of the measured part (after the warm-up)
 *   max     frame (or round-trip) bound of the measured part
 *
 * Prints one JSON line. Frames carry a u32 sequence number at [0..4), a kind
 * byte at [4] (1 = last frame) and seq & 0xff in their last byte; the consumer
 * checks both on every frame, in place (zero-copy), like the JS consumers do.
 *
 * The ring lives in a file /dev/shm/shmbus-bench-<pid>, mapped and unlinked
 * at once (the mapping survives the unlink), so nothing is left behind even if
 * the process is killed. The forked child dies with its parent (PDEATHSIG),
 * and an alarm bounds the whole run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CAPACITY 4096u /* slots, like the shmbus inboxes of the benchmark */
#define BATCH 32u
#define LINE 128 /* keep the indices on separate (pairs of) cache lines */
#define WARMUP_FRAMES 200000u
#define WARMUP_RTT 20000u

struct ring {
  _Alignas(LINE) _Atomic uint32_t tail; /* written by the producer */
  _Alignas(LINE) _Atomic uint32_t head; /* written by the consumer */
  _Alignas(LINE) uint8_t pad[LINE];
};

struct result {
  uint64_t frames;
  double seconds;
  uint32_t errors;
  uint32_t samples;
  uint32_t server_errors;
  double p50, p99, mean;
};

struct shared {
  struct ring a; /* producer -> consumer, or client -> server */
  struct ring b; /* server -> client */
  _Alignas(LINE) struct result result;
  _Alignas(LINE) _Atomic uint32_t ready;
};

static uint32_t size;
static double seconds_bound;
static uint64_t max_frames;
static uint8_t *slots_a, *slots_b;
static struct shared *sh;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void pin(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    perror("sched_setaffinity");
    exit(2);
  }
}

static void fill(uint8_t *slot, const uint8_t *src, uint32_t seq, uint8_t kind) {
  memcpy(slot, src, size);
  memcpy(slot, &seq, 4);
  slot[4] = kind;
  slot[size - 1] = (uint8_t)seq;
}

/* Check a frame in place; returns its kind, counts errors. */
static inline int check(const uint8_t *slot, uint32_t expected, uint32_t *errors) {
  uint32_t seq;
  memcpy(&seq, slot, 4);
  if (seq != expected || slot[size - 1] != (uint8_t)expected) (*errors)++;
  return slot[4];
}

/* ---------------------------------------------------------------- one-way */

static void producer(uint32_t batch) {
  uint8_t *src = malloc(size);
  for (uint32_t i = 0; i < size; i++) src[i] = (uint8_t)(i * 7);
  struct ring *r = &sh->a;
  uint32_t tail = 0, cached_head = 0;
  uint64_t measured = 0;
  double deadline = 0;
  int last = 0;
  while (!last) {
    /* room for a whole batch */
    while (tail - cached_head > CAPACITY - batch) {
      __builtin_ia32_pause();
      cached_head = atomic_load_explicit(&r->head, memory_order_acquire);
    }
    for (uint32_t k = 0; k < batch; k++) {
      if (tail == WARMUP_FRAMES) deadline = now() + seconds_bound;
      if (tail > WARMUP_FRAMES) {
        measured++;
        if (measured >= max_frames || ((measured & 1023) == 0 && now() >= deadline)) last = 1;
      }
      fill(slots_a + (size_t)(tail & (CAPACITY - 1)) * size, src, tail, last ? 1 : 0);
      tail++;
      if (batch == 1 || last) break;
    }
    atomic_store_explicit(&r->tail, tail, memory_order_release);
  }
  free(src);
}

static void consumer(void) {
  struct ring *r = &sh->a;
  uint32_t head = 0, cached_tail = 0, errors = 0;
  double t0 = 0, t1 = 0;
  for (;;) {
    while (head == cached_tail) {
      __builtin_ia32_pause(); /* spin politely: fewer steals of the tail line from the producer */
      cached_tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    }
    /* Read what is there, publishing the head every BATCH frames (in both modes:
       the modes differ in how often the producer publishes its tail). */
    uint32_t avail = cached_tail - head;
    if (avail > BATCH) avail = BATCH;
    int last = 0;
    for (uint32_t k = 0; k < avail; k++) {
      if (head == WARMUP_FRAMES) t0 = now();
      if (check(slots_a + (size_t)(head & (CAPACITY - 1)) * size, head, &errors) == 1) last = 1;
      head++;
      if (last) break;
    }
    atomic_store_explicit(&r->head, head, memory_order_release);
    if (last) break;
  }
  t1 = now();
  sh->result.frames = head - 1 - WARMUP_FRAMES; /* frames received after the first measured one */
  sh->result.seconds = t1 - t0;
  sh->result.errors = errors;
}

/* ---------------------------------------------------------------- ping-pong */

static void push(struct ring *r, uint8_t *slots, uint32_t *tail, const uint8_t *src, uint32_t seq, uint8_t kind) {
  /* capacity never runs out in ping-pong (one frame in flight) */
  fill(slots + (size_t)(*tail & (CAPACITY - 1)) * size, src, seq, kind);
  (*tail)++;
  atomic_store_explicit(&r->tail, *tail, memory_order_release);
}

static const uint8_t *pop(struct ring *r, uint8_t *slots, uint32_t head) {
  while (atomic_load_explicit(&r->tail, memory_order_acquire) == head) {
  }
  return slots + (size_t)(head & (CAPACITY - 1)) * size;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void client(void) {
  uint8_t *src = malloc(size);
  for (uint32_t i = 0; i < size; i++) src[i] = (uint8_t)(i * 7);
  uint64_t cap = max_frames;
  double *samples = malloc(sizeof(double) * cap);
  uint32_t tail = 0, head = 0, errors = 0, n = 0;
  double deadline = 0, t_start = 0;
  for (uint32_t seq = 0;; seq++) {
    if (seq == WARMUP_RTT) deadline = (t_start = now()) + seconds_bound;
    int last = seq >= WARMUP_RTT && (n + 1 >= cap || ((n & 255) == 0 && now() >= deadline));
    double t = now();
    push(&sh->a, slots_a, &tail, src, seq, last ? 1 : 0);
    const uint8_t *reply = pop(&sh->b, slots_b, head);
    check(reply, seq, &errors);
    head++;
    atomic_store_explicit(&sh->b.head, head, memory_order_release);
    double dt = now() - t;
    if (seq >= WARMUP_RTT) samples[n++] = dt;
    if (last) break;
  }
  sh->result.seconds = now() - t_start;
  double sum = 0;
  for (uint32_t i = 0; i < n; i++) sum += samples[i];
  qsort(samples, n, sizeof(double), cmp);
  sh->result.samples = n;
  sh->result.frames = n;
  sh->result.p50 = samples[(uint32_t)((n - 1) * 0.50)];
  sh->result.p99 = samples[(uint32_t)((n - 1) * 0.99)];
  sh->result.mean = sum / n;
  sh->result.errors = errors;
  free(samples);
  free(src);
}

static void server(void) {
  uint32_t head = 0, tail = 0, errors = 0;
  for (;;) {
    const uint8_t *ping = pop(&sh->a, slots_a, head);
    int kind = check(ping, head, &errors);
    /* echo the frame back as it is (a copy, like a reply) */
    fill(slots_b + (size_t)(tail & (CAPACITY - 1)) * size, ping, head, (uint8_t)kind);
    tail++;
    head++;
    atomic_store_explicit(&sh->a.head, head, memory_order_release);
    atomic_store_explicit(&sh->b.tail, tail, memory_order_release);
    if (kind == 1) break;
  }
  sh->result.server_errors = errors;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: %s tput1|tput32|rtt <payload bytes> <producer cpu> <consumer cpu> <seconds> <max frames>\n", argv[0]);
    return 2;
  }
  const char *mode = argv[1];
  size = (uint32_t)atoi(argv[2]);
  int cpu_p = atoi(argv[3]), cpu_c = atoi(argv[4]);
  seconds_bound = atof(argv[5]);
  max_frames = strtoull(argv[6], NULL, 10);
  int rtt = strcmp(mode, "rtt") == 0;
  uint32_t batch = strcmp(mode, "tput32") == 0 ? BATCH : 1;
  if ((!rtt && strcmp(mode, "tput1") && strcmp(mode, "tput32")) || size < 8 || size % 8 || max_frames < 1) {
    fprintf(stderr, "spsc: bad arguments\n");
    return 2;
  }

  char path[64];
  snprintf(path, sizeof path, "/dev/shm/shmbus-bench-%d", (int)getpid());
  size_t ring_bytes = (size_t)CAPACITY * size;
  size_t length = sizeof(struct shared) + 2 * ring_bytes;
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    perror(path);
    return 1;
  }
  if (ftruncate(fd, (off_t)length) != 0) {
    perror("ftruncate");
    unlink(path);
    return 1;
  }
  void *map = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  unlink(path); /* the mapping lives on; nothing to clean up later */
  if (map == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  sh = map;
  slots_a = (uint8_t *)map + sizeof(struct shared);
  slots_b = slots_a + ring_bytes;

  alarm((unsigned)(seconds_bound * 4 + 30)); /* watchdog: the child dies with us */
  fflush(stdout);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return 1;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    pin(cpu_c);
    atomic_store(&sh->ready, 1);
    if (rtt) server();
    else consumer();
    _exit(0);
  }
  pin(cpu_p);
  while (atomic_load(&sh->ready) == 0) {
  }
  if (rtt) client();
  else producer(batch);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "spsc: child failed (status %d)\n", status);
    return 1;
  }
  struct result *r = &sh->result;
  r->errors += r->server_errors;
  if (rtt) {
    printf("{\"impl\":\"c\",\"mode\":\"%s\",\"size\":%u,\"samples\":%u,\"seconds\":%.6f,\"p50Us\":%.4f,\"p99Us\":%.4f,\"meanUs\":%.4f,\"errors\":%u}\n", mode, size,
           r->samples, r->seconds, r->p50 * 1e6, r->p99 * 1e6, r->mean * 1e6, r->errors);
  } else {
    printf("{\"impl\":\"c\",\"mode\":\"%s\",\"size\":%u,\"frames\":%llu,\"seconds\":%.6f,\"rate\":%.1f,\"errors\":%u}\n", mode, size,
           (unsigned long long)r->frames, r->seconds, (double)r->frames / r->seconds, r->errors);
  }
  return r->errors ? 3 : 0;
}
