/*
 * The floor for following a foreign writer by looking, at a given period: what the state
 * cell's text follower (a Worker) does, in C. Every PERIOD_MS it sleeps in futex(2) with a
 * timeout on a word nobody wakes (the follower's stop word), reads the first 32 bytes of FILE
 * with pread(2) and parses them as "%d", as the follower does;
 * so its CPU, beside our LED's in the same run, is what this way of following costs at least.
 * Usage: follow_floor FILE PERIOD_MS   prints "ready", then runs until killed
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/futex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: follow_floor FILE PERIOD_MS\n");
    return 2;
  }
  int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    perror(argv[1]);
    return 1;
  }
  double period_ms = strtod(argv[2], NULL);
  struct timespec period = {(time_t)(period_ms / 1000),
                            (long)((period_ms - (time_t)(period_ms / 1000) * 1000) * 1e6)};
  char text[33];
  volatile long value = 0;
  uint32_t stop = 0;
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    syscall(SYS_futex, &stop, FUTEX_WAIT, 0, &period, NULL, 0);
    ssize_t count = pread(fd, text, 32, 0);
    text[count < 0 ? 0 : count] = '\0';
    value = strtol(text, NULL, 10);
  }
  (void)value;
}
