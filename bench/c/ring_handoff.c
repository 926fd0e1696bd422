/*
 * How fast C hands messages from one process to another through a shared ring: the hardware's
 * own ceiling for the library's cross-process figures. A forked producer copies each message
 * (memcpy from one hot source) into a 4 MiB ring in a MAP_SHARED mapping; the consumer reads
 * the length and the first byte in place (zero-copy, as the benchmark's zero-copy readers do).
 * Each side caches the other's position and reads it again only when the ring looks full or
 * empty, as the minimal ring does. Positions are published with sequentially consistent
 * stores, which is what JavaScript's Atomics.store is (on x86-64 an xchg, which waits for the
 * line to come over from the other core); with "release" they are plain release stores, what
 * C would use. Both sides spin (with a pause) and never sleep: a ceiling, not a protocol.
 *
 * Usage: ring_handoff BLOCK_BYTES COUNT [release]   prints messages per second, timed by the
 * consumer over all but the first fifth of the messages (a warm-up, as in ring_end.ts).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#define PAUSE() __builtin_ia32_pause()
#else
#define PAUSE() __asm__ volatile("yield")
#endif

#define CAPACITY (4u << 20)
#define MASK (CAPACITY - 1)

struct header {
  _Alignas(64) uint32_t head; /* written by the producer */
  _Alignas(64) uint32_t tail; /* written by the consumer */
  _Alignas(64) double seconds;
};

static int release_order;

static void publish(uint32_t *word, uint32_t value) {
  if (release_order) __atomic_store_n(word, value, __ATOMIC_RELEASE);
  else __atomic_store_n(word, value, __ATOMIC_SEQ_CST);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Records are a 4-byte length and the payload padded to 4 bytes; one that would wrap starts at
 * the ring's beginning instead (a length of 0 marks the skipped end). */
static uint32_t record_bytes(uint32_t length) { return 4 + ((length + 3) & ~3u); }

static void produce(struct header *h, uint8_t *data, uint32_t block, long count) {
  uint8_t *source = malloc(block);
  memset(source, 7, block);
  uint32_t head = 0, tail = 0, need = record_bytes(block);
  for (long i = 0; i < count; i++) {
    uint32_t at = head & MASK, skip = CAPACITY - at < need ? CAPACITY - at : 0;
    while (head + skip + need - tail > CAPACITY) {
      tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
      if (head + skip + need - tail > CAPACITY) PAUSE();
    }
    if (skip) {
      memset(data + at, 0, 4);
      head += skip;
      at = 0;
    }
    source[0] = (uint8_t)i;
    memcpy(data + at + 4, source, block);
    memcpy(data + at, &block, 4);
    head += need;
    publish(&h->head, head);
  }
  free(source);
}

static double consume(struct header *h, uint8_t *data, uint32_t block, long count) {
  uint32_t head = 0, tail = 0, need = record_bytes(block);
  long warm = count / 5;
  double started = now();
  unsigned sum = 0;
  for (long i = 0; i < count; i++) {
    if (i == warm) started = now();
    for (;;) {
      while (head == tail) {
        head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
        if (head == tail) PAUSE();
      }
      uint32_t length;
      memcpy(&length, data + (tail & MASK), 4);
      if (length != 0) break;
      tail += CAPACITY - (tail & MASK); /* the skipped end */
    }
    sum += data[(tail & MASK) + 4];
    tail += need;
    publish(&h->tail, tail);
  }
  return (count - warm) / (now() - started) + (sum == 1u ? 1e-9 : 0); /* keeps the reads */
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: ring_handoff BLOCK_BYTES COUNT [release]\n");
    return 2;
  }
  uint32_t block = (uint32_t)strtoul(argv[1], NULL, 10);
  long count = strtol(argv[2], NULL, 10);
  release_order = argc > 3 && strcmp(argv[3], "release") == 0;
  if (block == 0 || record_bytes(block) > CAPACITY || count < 5) {
    fprintf(stderr, "ring_handoff: BLOCK_BYTES must be 1 to %u and COUNT at least 5\n",
            CAPACITY - 4);
    return 2;
  }
  size_t size = sizeof(struct header) + CAPACITY;
  struct header *h = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (h == MAP_FAILED) {
    perror("ring_handoff: mmap");
    return 1;
  }
  uint8_t *data = (uint8_t *)(h + 1);
  memset(data, 0, CAPACITY); /* every page present before the clock starts */
  pid_t parent = getpid();
  pid_t child = fork();
  if (child < 0) {
    perror("ring_handoff: fork");
    return 1;
  }
  if (child == 0) {
    /* Not left spinning if the parent is killed (an interrupted benchmark kills only it). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    produce(h, data, block, count);
    _exit(0);
  }
  double rate = consume(h, data, block, count);
  int status;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "ring_handoff: the producer failed\n");
    return 1;
  }
  printf("%.0f\n", rate);
  return 0;
}
