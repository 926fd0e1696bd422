/*
 * A writer that knows nothing of our protocol, as the original C button: it maps FILE the way the
 * original does (258 bytes on disk, 256 mapped MAP_SHARED) and writes sprintf("%d\n", state) at
 * offset 0 and nothing else. For every line on stdin it toggles the state, writes it, and prints
 * the CLOCK_MONOTONIC time (ns) taken just before the write, so a reader's latency can be told.
 * Usage: foreign_writer FILE   prints "ready", then one stamp per line read; exits at end of input
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define FILE_LENGTH 0x100

static long long now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: foreign_writer FILE\n");
    return 2;
  }
  int fd = open(argv[1], O_RDWR | O_CREAT, 0600);
  if (fd < 0) { perror(argv[1]); return 1; }
  if (lseek(fd, FILE_LENGTH + 1, SEEK_SET) < 0 || write(fd, "", 1) != 1) { perror(argv[1]); return 1; }
  char *memory = mmap(0, FILE_LENGTH, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (memory == MAP_FAILED) { perror("mmap"); return 1; }
  int state = 0;
  sprintf(memory, "%d\n", state);
  printf("ready\n");
  fflush(stdout);
  char line[64];
  while (fgets(line, sizeof line, stdin) != NULL) {
    state ^= 1;
    long long stamp = now();
    sprintf(memory, "%d\n", state);
    printf("%lld\n", stamp);
    fflush(stdout);
  }
  return 0;
}
