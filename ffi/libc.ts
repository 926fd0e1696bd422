/**
 * The libc symbol table and its lazy loaders: every function through Deno's generic FFI path,
 * and the few called often through fast calls on demand. Nothing else in the project names a libc
 * symbol.
 *
 * @module
 */

import { openLibrary } from "./library.ts";

/** Every libc function the project calls, with its C declaration. */
export const LIBC_SYMBOLS = {
  /** int *__errno_location(void); */
  __errno_location: { parameters: [], result: "pointer" },
  /** char *strerror(int errnum); */
  strerror: { parameters: ["i32"], result: "pointer" },

  /** int open(const char *path, int flags, mode_t mode); */
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  /** int close(int fd); */
  close: { parameters: ["i32"], result: "i32" },
  /** ssize_t read(int fd, void *buf, size_t count); */
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** ssize_t write(int fd, const void *buf, size_t count); */
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** int ioctl(int fd, unsigned long request, int *argp); (FIONREAD's form of it) */
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  /** ssize_t pread(int fd, void *buf, size_t count, off_t offset); */
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  /** ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset); */
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  /** int ftruncate(int fd, off_t length); */
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  /** int fstatfs(int fd, struct statfs *buf); f_type is its first field, 64 bits on both arches */
  fstatfs: { parameters: ["i32", "buffer"], result: "i32" },
  /** int fallocate(int fd, int mode, off_t offset, off_t len); */
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  /** int fcntl(int fd, int cmd, int arg); used for F_DUPFD_CLOEXEC, F_ADD_SEALS and F_GET_SEALS */
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int flock(int fd, int operation); */
  flock: { parameters: ["i32", "i32"], result: "i32" },
  /** int unlink(const char *path); */
  unlink: { parameters: ["buffer"], result: "i32" },
  /** int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags); */
  linkat: { parameters: ["i32", "buffer", "i32", "buffer", "i32"], result: "i32" },
  /** int mkfifo(const char *path, mode_t mode); */
  mkfifo: { parameters: ["buffer", "u32"], result: "i32" },
  /** int mkdir(const char *path, mode_t mode); */
  mkdir: { parameters: ["buffer", "u32"], result: "i32" },
  /** int chmod(const char *path, mode_t mode); */
  chmod: { parameters: ["buffer", "u32"], result: "i32" },
  /** int fchmod(int fd, mode_t mode); */
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  /** ssize_t readlink(const char *path, char *buf, size_t size); */
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  /** int statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *buf); */
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },

  /** void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset); */
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  /** int munmap(void *addr, size_t length); */
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  /** int msync(void *addr, size_t length, int flags); */
  msync: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  /** int mprotect(void *addr, size_t length, int prot); */
  mprotect: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  /** int getpagesize(void); */
  getpagesize: { parameters: [], result: "i32" },
  /** int sigaction(int signum, const struct sigaction *act, struct sigaction *oldact); */
  sigaction: { parameters: ["i32", "buffer", "buffer"], result: "i32" },

  /** int shm_open(const char *name, int oflag, mode_t mode); */
  shm_open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  /** int shm_unlink(const char *name); */
  shm_unlink: { parameters: ["buffer"], result: "i32" },
  /** int shmget(key_t key, size_t size, int shmflg); */
  shmget: { parameters: ["i32", "usize", "i32"], result: "i32" },
  /** void *shmat(int shmid, const void *shmaddr, int shmflg); */
  shmat: { parameters: ["i32", "pointer", "i32"], result: "pointer" },
  /** int shmdt(const void *shmaddr); */
  shmdt: { parameters: ["pointer"], result: "i32" },
  /** int shmctl(int shmid, int cmd, struct shmid_ds *buf); */
  shmctl: { parameters: ["i32", "i32", "buffer"], result: "i32" },
  /** int memfd_create(const char *name, unsigned int flags); */
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },

  /** long syscall(long number, ...); used as futex(uaddr, op, val, timeout, uaddr2, val3) */
  syscall: {
    parameters: ["i64", "pointer", "i32", "i32", "pointer", "pointer", "i32"],
    result: "i64",
  },
  /** The same futex syscall on a worker thread, so a wait leaves the event loop free. */
  syscall_blocking: {
    name: "syscall",
    parameters: ["i64", "pointer", "i32", "i32", "pointer", "pointer", "i32"],
    result: "i64",
    nonblocking: true,
  },
  /**
   * long syscall(long number, ...); used as futex_waitv(struct futex_waitv *waiters,
   * unsigned int nr_futexes, unsigned int flags, struct timespec *timeout, clockid_t clockid),
   * on a worker thread
   */
  syscall_futex_waitv_blocking: {
    name: "syscall",
    parameters: ["i64", "buffer", "u32", "u32", "buffer", "i32"],
    result: "i64",
    nonblocking: true,
  },
  /** The same on this thread: only to learn whether the kernel has futex_waitv. */
  syscall_futex_waitv: {
    name: "syscall",
    parameters: ["i64", "buffer", "u32", "u32", "buffer", "i32"],
    result: "i64",
  },
  /** int poll(struct pollfd *fds, nfds_t nfds, int timeout); on a worker thread */
  poll_blocking: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  /** long syscall(long number, ...); used as pidfd_open(pid_t pid, unsigned int flags) */
  syscall_pidfd_open: { name: "syscall", parameters: ["i64", "i32", "u32"], result: "i64" },
  /** long syscall(long number, ...); used as pid_t gettid(void) */
  syscall_gettid: { name: "syscall", parameters: ["i64"], result: "i64" },
  /** int poll(struct pollfd *fds, nfds_t nfds, int timeout); on this thread, for a quick look */
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  /** int inotify_init1(int flags); */
  inotify_init1: { parameters: ["i32"], result: "i32" },
  /** int inotify_add_watch(int fd, const char *path, uint32_t mask); */
  inotify_add_watch: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int inotify_rm_watch(int fd, int wd); */
  inotify_rm_watch: { parameters: ["i32", "i32"], result: "i32" },
  /** DIR *opendir(const char *name); */
  opendir: { parameters: ["buffer"], result: "pointer" },
  /** struct dirent *readdir(DIR *dirp); */
  readdir: { parameters: ["pointer"], result: "pointer" },
  /** int closedir(DIR *dirp); */
  closedir: { parameters: ["pointer"], result: "i32" },
  /** int eventfd(unsigned int initval, int flags); */
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  /** int socket(int domain, int type, int protocol); */
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int bind(int fd, const struct sockaddr *addr, socklen_t len); */
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int listen(int fd, int backlog); */
  listen: { parameters: ["i32", "i32"], result: "i32" },
  /** int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags); */
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  /** int connect(int fd, const struct sockaddr *addr, socklen_t len); */
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int getsockopt(int fd, int level, int name, void *value, socklen_t *len); */
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },

  /** int clock_gettime(clockid_t clock, struct timespec *tp); */
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  /** uid_t geteuid(void); */
  geteuid: { parameters: [], result: "u32" },
  /** int kill(pid_t pid, int sig); */
  kill: { parameters: ["i32", "i32"], result: "i32" },
  /** pid_t tcgetpgrp(int fd); the terminal's foreground process group */
  tcgetpgrp: { parameters: ["i32"], result: "i32" },
  /** pid_t getpgrp(void); */
  getpgrp: { parameters: [], result: "i32" },
  /** sighandler_t signal(int signum, sighandler_t handler); only with SIG_IGN here */
  signal: { parameters: ["i32", "pointer"], result: "pointer" },
  /** int sigprocmask(int how, const sigset_t *set, sigset_t *oldset); the calling thread's mask */
  sigprocmask: { parameters: ["i32", "buffer", "pointer"], result: "i32" },
  /** int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5); */
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },

  /** void openlog(const char *ident, int option, int facility); */
  openlog: { parameters: ["buffer", "i32", "i32"], result: "void" },
  /** void syslog(int priority, const char *format, ...); called as syslog(p, "%s", message) */
  syslog: { parameters: ["i32", "buffer", "buffer"], result: "void" },
  /** void closelog(void); */
  closelog: { parameters: [], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded libc with {@link LIBC_SYMBOLS}. */
export type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];

/**
 * The calls made often enough that Deno's generic FFI path would cost: futex waits and wake-ups
 * (through `syscall`) and the clock. Compiled only for a process that needs them.
 */
const FAST_SYMBOLS = {
  syscall: LIBC_SYMBOLS.syscall,
  clock_gettime: LIBC_SYMBOLS.clock_gettime,
} as const satisfies Deno.ForeignLibraryInterface;

/** libc's fast-call functions: see {@link fastLibc}. */
export type FastLibc = Deno.DynamicLibrary<typeof FAST_SYMBOLS>["symbols"];

/**
 * What the text follower's Worker opens of libc (`text_follower.ts`): its body runs from source
 * text and imports nothing, so it is handed these with the path libc was opened from. Fast calls
 * there: it looks every few milliseconds, and its CPU while idle is held against C's.
 */
const FOLLOWER_SYMBOLS = {
  pread: LIBC_SYMBOLS.pread,
  syscall: LIBC_SYMBOLS.syscall,
} as const satisfies Deno.ForeignLibraryInterface;

/** libc as the text follower's Worker opens it: see {@link followerLibc}. */
export interface FollowerLibc {
  /** The path libc was opened from in this thread. */
  path: string;
  /** The declarations to open it with. */
  symbols: typeof FOLLOWER_SYMBOLS;
}

const LIBC_CANDIDATES = ["libc.so.6"] as const;
let loaded: Libc | undefined;
let loadedPath: string | undefined;
let fast: FastLibc | undefined;

/**
 * Returns libc's symbols, opening the library on first use. Synchronous calls take Deno's
 * generic path (see `library.ts`): about 0.7 us more each than a fast call, and no compiler code
 * in memory. Kept this small so that V8 inlines it into its callers at little cost of their
 * inlining budget.
 */
export function libc(): Libc {
  return loaded ?? openLibc();
}

/**
 * Returns libc's fast-call functions, compiling them on first use (`Deno.dlopen`): about 3 ms
 * once, and about 3 MiB of resident memory for the rest of the process's life (Cranelift's code,
 * the first time any library's fast call is compiled). For a synchronous futex wait, whose caller
 * waits for speed, and for calls a process makes often (see `futex_wake.ts`). Kept this small so
 * that V8 inlines it into the wait, whose call then takes V8's fast path.
 */
export function fastLibc(): FastLibc {
  return fast ?? openFastLibc();
}

/** {@link fastLibc}'s functions if something in the process compiled them, else undefined. */
export function compiledFastLibc(): FastLibc | undefined {
  return fast;
}

/**
 * Generic calls of {@link FastLibc}'s functions within a second that make the process compile
 * the fast ones: at this rate the generic calls cost about 0.01 % of a CPU, and a person pressing
 * a button never gets near it.
 */
export const HOT_CALLS = 200;

/** When the latest run of {@link HOT_CALLS} generic calls began, and how far it has come. */
let burstStart = 0;
let burstCalls = 0;

/**
 * Counts a generic call of one of {@link FastLibc}'s functions, made because they are not
 * compiled: {@link HOT_CALLS} of them within a second compile them.
 */
export function countGenericCall(): void {
  if (++burstCalls < HOT_CALLS) return;
  const now = performance.now();
  if (now - burstStart < 1000) fastLibc();
  burstStart = now;
  burstCalls = 0;
}

/** The path and declarations the text follower's Worker opens libc with, opening it here first. */
export function followerLibc(): FollowerLibc {
  libc();
  return { path: loadedPath as string, symbols: FOLLOWER_SYMBOLS };
}

function openLibc(): Libc {
  loaded = openFirst((path) => {
    const symbols = openLibrary(path, LIBC_SYMBOLS).symbols;
    loadedPath = path;
    return symbols;
  });
  return loaded;
}

function openFastLibc(): FastLibc {
  fast = openFirst((path) => Deno.dlopen(path, FAST_SYMBOLS).symbols);
  return fast;
}

function openFirst<T>(open: (path: string) => T): T {
  if (Deno.build.os !== "linux") {
    throw new Deno.errors.NotSupported(
      `mmap-ipc needs Linux (futex, memfd, statx); this is ${Deno.build.os}`,
    );
  }
  const failures: string[] = [];
  for (const candidate of LIBC_CANDIDATES) {
    try {
      return open(candidate);
    } catch (error) {
      if (
        error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied
      ) {
        throw error;
      }
      failures.push(`${candidate}: ${(error as Error).message}`);
    }
  }
  throw new Deno.errors.NotFound(`Cannot load libc; tried ${failures.join("; ")}`);
}
