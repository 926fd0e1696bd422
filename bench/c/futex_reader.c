/*
 * A C reader for the wake-up benchmark's own writer: the floor of the reading side alone. It
 * sleeps on the control memfd's sequence word as the raw synchronous FFI reader does (the same
 * words, see bench/peers/wake_protocol.ts), reads CLOCK_MONOTONIC when woken and subtracts the
 * writer's stamp. `futex_floor.c` has a C writer that sleeps as soon as it has woken the reader;
 * the benchmark's writer is the Deno process that writes every other reader's changes.
 * Usage: futex_reader CONTROL SAMPLES   prints "ready", then one latency in ns per line
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/futex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CONTROL_SIZE 4096
#define SEQUENCE_WORD 0 /* a 32-bit word index */
#define SEEN_WORD 16 /* a 32-bit word index */
#define STAMP_LONG_WORD 16 /* a 64-bit word index */

static int64_t now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "Usage: futex_reader CONTROL SAMPLES\n");
    return 2;
  }
  int samples = atoi(argv[2]);
  int fd = open(argv[1], O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    perror(argv[1]);
    return 1;
  }
  void *memory = mmap(NULL, CONTROL_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (memory == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  uint32_t *words = memory;
  int64_t *long_words = memory;
  int64_t *latency = malloc(samples * sizeof *latency);
  if (latency == NULL) return 1;
  uint32_t last = __atomic_load_n(&words[SEQUENCE_WORD], __ATOMIC_SEQ_CST);
  printf("ready\n");
  fflush(stdout);
  for (int i = 0; i < samples; i++) {
    while (__atomic_load_n(&words[SEQUENCE_WORD], __ATOMIC_SEQ_CST) == last) {
      syscall(SYS_futex, &words[SEQUENCE_WORD], FUTEX_WAIT, last, NULL, NULL, 0);
    }
    latency[i] = now() - __atomic_load_n(&long_words[STAMP_LONG_WORD], __ATOMIC_SEQ_CST);
    last = __atomic_load_n(&words[SEQUENCE_WORD], __ATOMIC_SEQ_CST);
    __atomic_store_n(&words[SEEN_WORD], i + 1, __ATOMIC_SEQ_CST);
  }
  for (int i = 0; i < samples; i++) printf("%lld\n", (long long)latency[i]);
  return 0;
}
