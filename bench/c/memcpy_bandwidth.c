/*
 * The ceiling for moving bytes: single-threaded memcpy bandwidth for a block size, cycling
 * through buffers larger than the caches like the ring does.
 * Usage: memcpy_bandwidth BLOCK_BYTES   prints bytes per second
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  size_t block = argc > 1 ? strtoul(argv[1], NULL, 10) : 65536;
  size_t span = 4u << 20; /* 4 MiB, the size of the benchmark's ring */
  if (block > span) span = block;
  char *source = malloc(span), *target = malloc(span);
  memset(source, 1, span);
  memset(target, 2, span);
  size_t copied = 0, offset = 0;
  double start = now(), elapsed;
  do {
    for (int i = 0; i < 64; i++) {
      if (offset + block > span) offset = 0;
      memcpy(target + offset, source + offset, block);
      offset += block;
      copied += block;
    }
    elapsed = now() - start;
  } while (elapsed < 0.5);
  printf("%.0f\n", copied / elapsed + (target[block / 2] == 3)); /* keeps the copies */
  return 0;
}
