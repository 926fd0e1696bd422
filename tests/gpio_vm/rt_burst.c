/*
 * rt_burst: writes each VALUE to its PATH in turn while no CPU is free for the kernel's
 * interrupt threads (SCHED_FIFO 50): this process runs on CPU 0 and a spinner on every other
 * CPU, all at SCHED_FIFO 99, until the last write is done. Hard interrupts still come at once;
 * their threads run only after. A GPIO VM test uses it to make gpio-sim's edges come faster
 * than the kernel takes them, as a busy or slow machine makes them. Exits 0 when every write
 * was made; 1 with a message otherwise.
 *
 * Usage: rt_burst PATH VALUE [PATH VALUE]...
 * Build: gcc -O2 -o rt_burst rt_burst.c (vm.sh builds it into the x86-64 guests)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CPUS 64

static void fail(const char *what, const char *subject) {
  fprintf(stderr, "rt_burst: cannot %s %s: %s\n", what, subject, strerror(errno));
  exit(1);
}

/* Pins the calling process to `cpu` at SCHED_FIFO 99. */
static void take_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) < 0) fail("pin to a CPU", "");
  struct sched_param param = {.sched_priority = 99};
  if (sched_setscheduler(0, SCHED_FIFO, &param) < 0) fail("take SCHED_FIFO", "");
}

int main(int argc, char **argv) {
  if (argc < 3 || argc % 2 != 1) {
    fprintf(stderr, "Usage: rt_burst PATH VALUE [PATH VALUE]...\n");
    return 2;
  }
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus < 1 || cpus > MAX_CPUS) cpus = 1;
  /* [0]: spinners running; [1]: set when the writes are done. */
  volatile int *shared =
      mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) fail("map", "shared memory");
  pid_t spinners[MAX_CPUS];
  for (long cpu = 1; cpu < cpus; cpu++) {
    spinners[cpu] = fork();
    if (spinners[cpu] < 0) fail("fork", "a spinner");
    if (spinners[cpu] == 0) {
      take_cpu((int)cpu);
      __atomic_add_fetch(&shared[0], 1, __ATOMIC_SEQ_CST);
      /* Bounded: a spinner whose writer died must not hold its CPU for good. */
      struct timespec start, now;
      clock_gettime(CLOCK_MONOTONIC, &start);
      do clock_gettime(CLOCK_MONOTONIC, &now);
      while (!__atomic_load_n(&shared[1], __ATOMIC_SEQ_CST) && now.tv_sec - start.tv_sec < 5);
      _exit(0);
    }
  }
  while (__atomic_load_n(&shared[0], __ATOMIC_SEQ_CST) < cpus - 1) sched_yield();
  take_cpu(0);
  int status = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    int fd = open(argv[i], O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, argv[i + 1], strlen(argv[i + 1])) < 0) {
      fprintf(stderr, "rt_burst: cannot write %s: %s\n", argv[i], strerror(errno));
      status = 1;
    }
    if (fd >= 0) close(fd);
  }
  __atomic_store_n(&shared[1], 1, __ATOMIC_SEQ_CST);
  for (long cpu = 1; cpu < cpus; cpu++) waitpid(spinners[cpu], NULL, 0);
  return status;
}
