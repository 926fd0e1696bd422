/*
 * The floor for a blocking wake-up on this machine: one-way latency from a futex wake in one
 * process to the woken waiter in another, measured as the benchmark measures everything else
 * (the writer stamps CLOCK_MONOTONIC into shared memory, the woken reader reads the clock).
 * Usage: futex_floor SAMPLES   prints one latency in nanoseconds per line
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct shared {
  volatile uint32_t word;
  volatile uint32_t ack;
  volatile int64_t stamp;
  int64_t latency[];
};

static int64_t now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void futex(volatile uint32_t *word, int op, uint32_t value) {
  syscall(SYS_futex, word, op, value, NULL, NULL, 0);
}

int main(int argc, char **argv) {
  int samples = argc > 1 ? atoi(argv[1]) : 1000;
  struct shared *s = mmap(NULL, sizeof *s + samples * sizeof(int64_t), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (s == MAP_FAILED) return 1;
  pid_t parent = getpid();
  pid_t child = fork();
  if (child == 0) {
    /* Not left asleep if the parent is killed (an interrupted benchmark kills only it). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    for (int i = 0; i < samples; i++) {
      while (__atomic_load_n(&s->word, __ATOMIC_SEQ_CST) == (uint32_t)i) futex(&s->word, FUTEX_WAIT, i);
      s->latency[i] = now() - s->stamp;
      __atomic_store_n(&s->ack, i + 1, __ATOMIC_SEQ_CST);
    }
    _exit(0);
  }
  srand(1);
  for (int i = 0; i < samples; i++) {
    usleep(1000 + rand() % 1000); /* the reader is asleep when the write comes */
    s->stamp = now();
    __atomic_store_n(&s->word, i + 1, __ATOMIC_SEQ_CST);
    futex(&s->word, FUTEX_WAKE, 1);
    while (__atomic_load_n(&s->ack, __ATOMIC_SEQ_CST) != (uint32_t)(i + 1)) usleep(50);
  }
  waitpid(child, NULL, 0);
  for (int i = 0; i < samples; i++) printf("%lld\n", (long long)s->latency[i]);
  return 0;
}
