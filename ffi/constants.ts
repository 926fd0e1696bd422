/**
 * Numbers from the Linux and glibc headers. Where x86-64 and aarch64 differ the value is looked
 * up per `Deno.build.arch`; everything else is the same on both.
 *
 * @module
 */

type Arch = "x86_64" | "aarch64";

function perArch<T>(values: Record<Arch, T>): T {
  const arch = Deno.build.arch as string;
  if (arch !== "x86_64" && arch !== "aarch64") {
    throw new Deno.errors.NotSupported(`mmap-ipc supports x86_64 and aarch64, not ${arch}`);
  }
  return values[arch];
}

// <fcntl.h>: aarch64 moved O_DIRECTORY and O_NOFOLLOW.
export const O_RDONLY = 0;
export const O_DIRECTORY: number = perArch({ x86_64: 0o200000, aarch64: 0o40000 });
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_NOCTTY = 0o400;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
/** An fd that refers to a file without opening it (no device's open runs, no FIFO waits). */
export const O_PATH = 0o10000000;
export const O_NOFOLLOW: number = perArch({ x86_64: 0o400000, aarch64: 0o100000 });
/**
 * An unnamed file in the directory opened (`__O_TMPFILE | O_DIRECTORY`): it gets a name only by
 * linkat(2), and is freed with its last fd if it never does.
 */
export const O_TMPFILE: number = 0o20000000 | O_DIRECTORY;

// <sys/stat.h> and statx(2); struct statx has the same layout on both architectures.
export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_EMPTY_PATH = 0x1000;
/** linkat(2): follow `oldpath` if it is a symlink (`/proc/self/fd/N` is one, to the open file). */
export const AT_SYMLINK_FOLLOW = 0x400;
export const STATX_BASIC_STATS = 0x7ff;
export const STATX_BTIME = 0x800;
export const STATX_SIZE_BYTES = 256;
/** The longest path a call takes, with its NUL (`<linux/limits.h>`). */
export const PATH_MAX = 4096;
export const STATX_OFFSET = {
  mask: 0,
  btimeSeconds: 80,
  btimeNanoseconds: 88,
  uid: 20,
  gid: 24,
  mode: 28,
  ino: 32,
  size: 40,
  devMajor: 136,
  devMinor: 140,
} as const;
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o60000;
export const S_IFDIR = 0o40000;
export const S_IFCHR = 0o20000;
export const S_IFIFO = 0o10000;
export const S_ISVTX = 0o1000;

// <sys/mman.h>
export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;
export const MAP_SHARED = 1;
export const MAP_PRIVATE = 2;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
/** Takes no commit charge for the mapping (ignored under `vm.overcommit_memory=2`). */
export const MAP_NORESERVE = 0x4000;
/** What mmap(2) and shmat(2) return on failure: `(void *) -1`. */
export const MAP_FAILED = 0xffff_ffff_ffff_ffffn;
export const MS_ASYNC = 1;
export const MS_SYNC = 4;
export const MFD_CLOEXEC = 1;
export const MFD_ALLOW_SEALING = 2;
export const F_DUPFD_CLOEXEC = 1030;
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 1;
export const F_SEAL_SHRINK = 2;
export const F_SEAL_GROW = 4;
export const F_SEAL_WRITE = 8;
export const F_SEAL_FUTURE_WRITE = 16;

// <sys/file.h>
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

// <sys/ipc.h>, <sys/shm.h>; struct shmid_ds is laid out alike on both (checked with gcc and the
// generic 64-bit headers aarch64 uses).
export const IPC_CREAT = 0o1000;
export const IPC_EXCL = 0o2000;
export const IPC_RMID = 0;
export const IPC_STAT = 2;
export const SHMID_DS_BYTES = 112;
export const SHMID_DS_OFFSET = { uid: 4, mode: 20, segsz: 48, nattch: 88 } as const;
/** In `shm_perm.mode`: the segment was removed (IPC_RMID) and goes once nothing is attached. */
export const SHM_DEST = 0o1000;

// <linux/futex.h>; shared (not FUTEX_PRIVATE_FLAG) because the word lives in memory other
// processes map.
export const SYS_futex: bigint = perArch({ x86_64: 202n, aarch64: 98n });
/** clock_gettime(2)'s clock for deadlines, and futex_waitv's for its timeout. */
export const CLOCK_MONOTONIC = 1;
/** futex_waitv(2), Linux 5.16: the same number on every architecture. */
export const SYS_futex_waitv = 449n;
export const FUTEX_WAIT = 0;
export const FUTEX_WAKE = 1;

// <poll.h>, <sys/eventfd.h>
export const POLLIN = 0x1;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;

// pidfd_open(2): the same number on x86-64 and aarch64 (both use the generic table from 5.x on).
export const SYS_pidfd_open = 434n;
/** pidfd_open(2)'s flag for a pidfd of one thread (Linux 6.9); O_EXCL's value on both. */
export const PIDFD_THREAD = 0o200;
/** gettid(2), called through syscall(2): glibc before 2.30 has no wrapper. */
export const SYS_gettid: bigint = perArch({ x86_64: 186n, aarch64: 178n });

// <sys/ioctl.h>: the bytes waiting in a pipe (asm-generic: the same on x86-64 and aarch64).
export const FIONREAD = 0x541bn;

// <sys/inotify.h>
export const IN_NONBLOCK = 0o4000;
export const IN_CLOEXEC = 0o2000000;
export const IN_MODIFY = 0x2;
export const IN_ATTRIB = 0x4;
export const IN_MOVED_FROM = 0x40;
export const IN_MOVED_TO = 0x80;
export const IN_CREATE = 0x100;
export const IN_DELETE = 0x200;
export const IN_DELETE_SELF = 0x400;
export const IN_Q_OVERFLOW = 0x4000;
export const IN_MOVE_SELF = 0x800;
export const IN_IGNORED = 0x8000;
/** Adds to the mask of a directory watched already, where a new watch would replace it. */
export const IN_MASK_ADD = 0x20000000;

// <dirent.h>: struct dirent's d_name, the same offset on x86-64 and aarch64 (glibc, 64-bit).
export const DIRENT_NAME_OFFSET = 19;

// <signal.h>, <sys/prctl.h>
export const SIGHUP = 1;
export const SIGINT = 2;
export const SIGKILL = 9;
export const SIGTERM = 15;
/** sigprocmask(2)'s `how` that takes signals out of the mask. */
export const SIG_UNBLOCK = 1;
/** glibc's `sigset_t`: 1024 bits, signal n at bit n - 1. */
export const SIGSET_BYTES = 128;
/** A background process reading its terminal gets it, and stops (x86-64 and aarch64 alike). */
export const SIGTTIN = 21;
export const PR_SET_PDEATHSIG = 1;

// <syslog.h>
export const LOG_PID = 0x01;
export const LOG_NDELAY = 0x08;
export const LOG_USER = 1 << 3;
export const LOG_ERR = 3;
export const LOG_WARNING = 4;
export const LOG_INFO = 6;

// <sys/socket.h>, <sys/un.h>: the same values on x86-64 and aarch64.
export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = O_NONBLOCK;
export const SOCK_CLOEXEC = O_CLOEXEC;
export const SOL_SOCKET = 1;
export const SO_PEERCRED = 17;
/** `struct sockaddr_un`: a 2-byte family, then up to 108 bytes of path. */
export const SOCKADDR_UN_PATH_BYTES = 108;
