/**
 * Safe wrappers over the libc calls in `ffi/libc.ts`: plain numbers and strings in,
 * `Deno.errors` out. Callers never see a pointer.
 *
 * @module
 */

import * as C from "./constants.ts";
import {
  attempt,
  Errno,
  errnoName,
  lastErrno,
  type OsError,
  osError,
  retryFailed,
  SHORTAGE_CODES,
} from "./errno.ts";
import { compiledFastLibc, countGenericCall, libc } from "./libc.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A NUL-terminated copy of `text` for a `const char *` parameter. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  if (text.includes("\0")) throw new TypeError(`${JSON.stringify(text)} contains a NUL byte`);
  return encoder.encode(`${text}\0`);
}

/**
 * `text` as a NUL-terminated string in `scratch`, for a call that does not keep it; in a new
 * array when it does not fit.
 */
function scratchCString(text: string, scratch: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  if (text.includes("\0")) throw new TypeError(`${JSON.stringify(text)} contains a NUL byte`);
  const { read, written } = encoder.encodeInto(text, scratch);
  if (read < text.length || written === scratch.length) return cString(text);
  scratch[written] = 0;
  return scratch;
}

/** The string a `const char *` result points to; empty for NULL. */
export function fromCString(pointer: Deno.PointerValue): string {
  return pointer === null ? "" : new Deno.UnsafePointerView(pointer).getCString();
}

/** What kind of inode a path or fd refers to. */
export type FileType =
  | "file"
  | "directory"
  | "fifo"
  | "symlink"
  | "socket"
  | "character device"
  | "block device";

/** The fields of `struct statx` the project uses. */
export interface FileStat {
  /** The kind of inode. */
  type: FileType;
  /** Permission bits, including set-id and sticky bits (mode & 07777). */
  permissions: number;
  /** Owner's user id. */
  uid: number;
  /** Size in bytes. */
  size: number;
  /**
   * Device, inode number and (where the file system keeps it) birth time: together an inode's
   * identity, which a file made later at the same path does not share.
   */
  identity: string;
  /** The same identity as /proc/locks writes it: `MAJOR:MINOR:INODE`, device numbers in hex. */
  lockIdentity: string;
}

function fileType(mode: number): FileType {
  switch (mode & C.S_IFMT) {
    case C.S_IFREG:
      return "file";
    case C.S_IFDIR:
      return "directory";
    case C.S_IFIFO:
      return "fifo";
    case C.S_IFLNK:
      return "symlink";
    case C.S_IFSOCK:
      return "socket";
    case C.S_IFCHR:
      return "character device";
    default:
      return "block device";
  }
}

/**
 * One `struct statx` for every statx(2) call, and one path for each call that takes one path
 * and keeps none: a scan of /proc makes hundreds of calls, and each typed array allocated costs
 * a microsecond and native memory the process keeps.
 */
const statxBuffer = new Uint8Array(C.STATX_SIZE_BYTES);
const pathScratch = new Uint8Array(C.PATH_MAX);

function statxCall(dirfd: number, path: string, flags: number, subject: string): FileStat {
  const buffer = statxBuffer;
  const wanted = C.STATX_BASIC_STATS | C.STATX_BTIME;
  const name = scratchCString(path, pathScratch);
  attempt(() => libc().statx(dirfd, name, flags, wanted, buffer), "inspect", subject);
  const view = new DataView(buffer.buffer);
  // A file system reuses a freed inode number at once (ext4 and tmpfs do): with the birth time,
  // where the file system keeps one, a file made later at the same path never looks the same.
  const born = (view.getUint32(C.STATX_OFFSET.mask, true) & C.STATX_BTIME) === 0
    ? ""
    : `:${view.getBigInt64(C.STATX_OFFSET.btimeSeconds, true)}.${
      view.getUint32(C.STATX_OFFSET.btimeNanoseconds, true)
    }`;
  const mode = view.getUint16(C.STATX_OFFSET.mode, true);
  const major = view.getUint32(C.STATX_OFFSET.devMajor, true);
  const minor = view.getUint32(C.STATX_OFFSET.devMinor, true);
  const inode = view.getBigUint64(C.STATX_OFFSET.ino, true);
  const hex = (n: number): string => n.toString(16).padStart(2, "0");
  return {
    type: fileType(mode),
    permissions: mode & 0o7777,
    uid: view.getUint32(C.STATX_OFFSET.uid, true),
    size: Number(view.getBigUint64(C.STATX_OFFSET.size, true)),
    identity: `${major}:${minor}:${inode}${born}`,
    lockIdentity: `${hex(major)}:${hex(minor)}:${inode}`,
  };
}

/**
 * statx(2) of a path; `undefined` when nothing is there. A final symlink is reported as one,
 * not followed, unless `follow` is set.
 */
export function statPath(path: string, options: { follow?: boolean } = {}): FileStat | undefined {
  try {
    return statxCall(C.AT_FDCWD, path, options.follow ? 0 : C.AT_SYMLINK_NOFOLLOW, path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/** statx(2) of an open fd; `subject` names it in errors. */
export function statFd(fd: number, subject: string): FileStat {
  return statxCall(fd, "", C.AT_EMPTY_PATH, subject);
}

/** `struct statfs` is 120 bytes on x86-64 and aarch64; room to spare. */
const STATFS_BYTES = 128;

/** The magic number of the file system the open `fd` is on (fstatfs(2)'s `f_type`). */
export function fileSystemType(fd: number, subject: string): number {
  return Number(statFileSystem(fd, subject)[0]);
}

/**
 * Bytes free on the file system the open `fd` is on, for this process: `f_bavail` blocks, or
 * `f_bfree` for root, which may use the blocks kept for it. Undefined for a file system that
 * reports no size at all (ramfs), whose free space nobody can tell.
 */
export function freeBytes(fd: number, subject: string): number | undefined {
  const fields = statFileSystem(fd, subject);
  // f_type, f_bsize, f_blocks, f_bfree, f_bavail: 64 bits each on x86-64 and aarch64.
  if (fields[2] === 0n) return undefined;
  const blocks = effectiveUid() === 0 ? fields[3] : fields[4];
  return Number(blocks) * Number(fields[1]);
}

/** ENOSPC for reserving space for `subject`, with `detail` (how much was needed and free). */
export function noSpaceError(subject: string, detail: string): OsError {
  const error = osError("reserve space for", subject, Errno.ENOSPC);
  error.message += `: ${detail}`;
  return error;
}

function statFileSystem(fd: number, subject: string): BigInt64Array {
  const buffer = new BigInt64Array(STATFS_BYTES / 8);
  attempt(() => libc().fstatfs(fd, buffer), "look at the file system of", subject);
  return buffer;
}

/** open(2); throws with `action` and `path` in the message. */
export function openPath(path: string, flags: number, mode: number, action: string): number {
  const name = scratchCString(path, pathScratch);
  return attempt(() => libc().open(name, flags, mode), action, path);
}

/**
 * Opens anew, with `flags`, the file the fd `fd` refers to (an `O_PATH` fd, say), through
 * `/proc/self/fd/N`; `subject` names the file in errors.
 */
export function reopenFd(fd: number, flags: number, action: string, subject: string): number {
  const name = scratchCString(`/proc/self/fd/${fd}`, pathScratch);
  return attempt(() => libc().open(name, flags, 0), action, subject);
}

/** close(2), ignoring errors: by then there is nothing a caller could do. */
export function closeFd(fd: number): void {
  libc().close(fd);
}

/** ftruncate(2). */
export function truncateFd(fd: number, size: number, subject: string): void {
  attempt(() => libc().ftruncate(fd, BigInt(size)), "resize", subject);
}

/**
 * Gives the first `size` bytes of a file real blocks (fallocate(2), mode 0, never shrinking),
 * so that a full file system is an ENOSPC error now rather than a SIGBUS when a mapping first
 * touches a hole. A file system that cannot do it (EOPNOTSUPP) leaves the file as it is.
 */
export function allocate(fd: number, size: number, subject: string): void {
  const reserve = (): number => libc().fallocate(fd, 0, 0n, BigInt(size));
  if (reserve() === 0) return;
  const retried = retryFailed(reserve);
  if (retried.ok) return;
  if (retried.errno === Errno.EOPNOTSUPP || retried.errno === Errno.ENOSYS) return;
  throw osError("reserve space for", subject, retried.errno);
}

/** flock(2) without blocking; returns false when another open file holds the lock. */
export function tryLockExclusive(fd: number, subject: string): boolean {
  return tryLock(fd, C.LOCK_EX | C.LOCK_NB, subject);
}

function tryLock(fd: number, operation: number, subject: string): boolean {
  const lock = (): number => libc().flock(fd, operation);
  if (lock() === 0) return true;
  // A lock held elsewhere (EAGAIN) is no error, so that errno must be confirmed too.
  const retried = retryFailed(lock);
  if (retried.ok) return true;
  if (retried.errno === Errno.EAGAIN) return false;
  throw osError("lock", subject, retried.errno);
}

/** A shared flock(2) without blocking; returns false when another open file holds it exclusively. */
export function tryLockShared(fd: number, subject: string): boolean {
  return tryLock(fd, C.LOCK_SH | C.LOCK_NB, subject);
}

/** Lets go of this open file's flock(2). */
export function unlockFd(fd: number, subject: string): void {
  attempt(() => libc().flock(fd, C.LOCK_UN), "unlock", subject);
}

/** The pid holding a flock(2) on the inode with `lockIdentity`, from /proc/locks. */
export function flockHolder(lockIdentity: string): number | undefined {
  const locks = readFileText("/proc/locks") ?? "";
  for (const line of locks.split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (fields[1] === "FLOCK" && fields[5] === lockIdentity) return Number(fields[4]);
  }
  return undefined;
}

/** read(2) into `buffer`; returns the byte count, 0 at end of file, or -1 for EAGAIN. */
export function readFd(fd: number, buffer: Uint8Array<ArrayBuffer>, subject: string): number {
  const read = (): number => Number(libc().read(fd, buffer, BigInt(buffer.byteLength)));
  const count = read();
  if (count >= 0) return count;
  // Taken as read: a wrong EAGAIN only makes the caller wait for the fd and read again.
  if (lastErrno() === Errno.EAGAIN) return -1;
  const retried = retryFailed(read);
  if (retried.ok) return retried.result;
  if (retried.errno === Errno.EAGAIN) return -1;
  throw osError("read", subject, retried.errno);
}

/** pread(2) into `buffer` at `offset`; returns the byte count (0 at the end of the file). */
export function readAt(
  fd: number,
  buffer: Uint8Array<ArrayBuffer>,
  offset: number,
  subject: string,
): number {
  return Number(
    attempt(
      () => libc().pread(fd, buffer, BigInt(buffer.byteLength), BigInt(offset)),
      "read",
      subject,
    ),
  );
}

/** Refuses a length the buffer does not hold: libc would read past its end. */
function checkLength(bytes: Uint8Array, length: number): void {
  if (!(length >= 0 && length <= bytes.byteLength)) {
    throw new RangeError(`Cannot write ${length} bytes of a ${bytes.byteLength}-byte buffer`);
  }
}

/** pwrite(2) of the first `length` of `bytes` (all of them by default) at `offset`. */
export function writeAt(
  fd: number,
  bytes: Uint8Array<ArrayBuffer>,
  offset: number,
  subject: string,
  length: number = bytes.byteLength,
): number {
  checkLength(bytes, length);
  return Number(
    attempt(() => libc().pwrite(fd, bytes, BigInt(length), BigInt(offset)), "write", subject),
  );
}

/** The names in a directory (without `.` and `..`); empty when it cannot be read. */
export function listDirectory(path: string): string[] {
  const dir = libc().opendir(scratchCString(path, pathScratch));
  if (dir === null) return [];
  const names: string[] = [];
  try {
    for (;;) {
      const entry = libc().readdir(dir);
      if (entry === null) break;
      const name = new Deno.UnsafePointerView(entry).getCString(C.DIRENT_NAME_OFFSET);
      if (name !== "." && name !== "..") names.push(name);
    }
  } finally {
    libc().closedir(dir);
  }
  return names;
}

/**
 * pidfd_open(2): an fd that becomes readable when process `pid` ends, or with `thread` when
 * thread `pid` ends (see {@link threadPidfds}); undefined if it has.
 */
export function openPidfd(pid: number, options: { thread?: boolean } = {}): number | undefined {
  const flags = options.thread ? C.PIDFD_THREAD : 0;
  const open = (): number => Number(libc().syscall_pidfd_open(C.SYS_pidfd_open, pid, flags));
  const fd = open();
  if (fd >= 0) return fd;
  const retried = retryFailed(open);
  if (retried.ok) return retried.result;
  if (retried.errno === Errno.ESRCH) return undefined;
  throw osError("watch", `${options.thread ? "thread" : "pid"} ${pid}`, retried.errno);
}

let threadPidfdsWork: boolean | undefined;

/**
 * Whether {@link openPidfd} can watch a single thread: Linux 6.9 and later. Learnt once, from a
 * pidfd of this thread; a process out of fds or memory is told no until it can ask.
 */
export function threadPidfds(): boolean {
  if (threadPidfdsWork === undefined) {
    const open = (): number =>
      Number(libc().syscall_pidfd_open(C.SYS_pidfd_open, threadId(), C.PIDFD_THREAD));
    const fd = open();
    const retried = fd >= 0 ? { ok: true as const, result: fd } : retryFailed(open);
    if (retried.ok) closeFd(retried.result);
    // Out of fds or memory says nothing of what the kernel can do.
    else if (SHORTAGE_CODES.has(errnoName(retried.errno))) return false;
    threadPidfdsWork = retried.ok;
  }
  return threadPidfdsWork;
}

/** @internal Makes {@link threadPidfds} say no, as on kernels before 6.9, for tests. */
export function distrustThreadPidfds(): void {
  threadPidfdsWork = false;
}

/** gettid(2): this thread's id, which is the pid on a process's main thread. */
export function threadId(): number {
  return Number(libc().syscall_gettid(C.SYS_gettid));
}

/**
 * The process thread `tid` belongs to (`Tgid` in /proc/TID/status): `tid` itself for a
 * process's main thread, the pid of its process for a Worker's; undefined once it has ended.
 */
export function processOfThread(tid: number): number | undefined {
  const status = readFileText(`/proc/${tid}/status`);
  const tgid = status === undefined ? undefined : /^Tgid:\s+(\d+)/m.exec(status)?.[1];
  return tgid === undefined ? undefined : Number(tgid);
}

/** Whether `fd` is readable right now (poll(2) with no wait). */
export function isReadable(fd: number): boolean {
  const pollfd = new Uint8Array(8);
  const view = new DataView(pollfd.buffer);
  view.setInt32(0, fd, true);
  view.setInt16(4, C.POLLIN, true);
  return libc().poll(pollfd, 1n, 0) > 0 && (view.getInt16(6, true) & C.POLLIN) !== 0;
}

/** inotify_init1(2), non-blocking and close-on-exec. */
export function inotifyInit(): number {
  return attempt(
    () => libc().inotify_init1(C.IN_NONBLOCK | C.IN_CLOEXEC),
    "create",
    "inotify instance",
  );
}

/** inotify_add_watch(2); returns the watch descriptor. */
export function inotifyWatch(fd: number, path: string, mask: number): number {
  return attempt(() => libc().inotify_add_watch(fd, cString(path), mask), "watch", path);
}

/** inotify_rm_watch(2); a watch the kernel already dropped (its inode gone) is no error. */
export function inotifyUnwatch(fd: number, wd: number): void {
  libc().inotify_rm_watch(fd, wd);
}

/** write(2) of all of `bytes`; returns the count written (short only for a non-blocking fd). */
export function writeFd(fd: number, bytes: Uint8Array<ArrayBuffer>, subject: string): number {
  return Number(attempt(() => libc().write(fd, bytes, BigInt(bytes.byteLength)), "write", subject));
}

/** How many bytes wait unread in the pipe or FIFO `fd` is an end of (FIONREAD). */
export function bytesWaiting(fd: number, subject: string): number {
  const count = new Int32Array(1);
  attempt(
    () => libc().ioctl(fd, C.FIONREAD, new Uint8Array(count.buffer)),
    "count the bytes waiting in",
    subject,
  );
  return count[0];
}

/**
 * write(2) of what fits now: returns the count written, or -1 when the fd is non-blocking and
 * full (EAGAIN); throws for any other failure.
 */
export function writeSome(
  fd: number,
  bytes: Uint8Array,
  subject: string,
  length: number = bytes.byteLength,
): number {
  checkLength(bytes, length);
  const write = (): number =>
    Number(libc().write(fd, bytes as Uint8Array<ArrayBuffer>, BigInt(length)));
  const count = write();
  if (count >= 0) return count;
  // Taken as read: a wrong EAGAIN only makes the caller wait for the fd and write again.
  if (lastErrno() === Errno.EAGAIN) return -1;
  const retried = retryFailed(write);
  if (retried.ok) return retried.result;
  if (retried.errno === Errno.EAGAIN) return -1;
  throw osError("write", subject, retried.errno);
}

/**
 * mkfifo(3), with exactly `mode`: the umask, which takes bits away from what mkfifo makes, is
 * undone at once (`umask 0277` left a FIFO its owner could not write).
 */
export function makeFifo(path: string, mode: number): void {
  attempt(() => libc().mkfifo(cString(path), mode), "create FIFO", path);
  setMode(path, mode, "create FIFO");
}

/**
 * mkdir(2), with exactly `mode` (as {@link makeFifo}: `umask 0177` left a directory of mode 0600
 * that its owner could not enter, for this run and every later one); returns false when the path
 * already exists.
 */
export function makeDirectory(path: string, mode: number): boolean {
  const make = (): number => libc().mkdir(cString(path), mode);
  if (make() !== 0) {
    const retried = retryFailed(make);
    if (!retried.ok) {
      if (retried.errno === Errno.EEXIST) return false;
      throw osError("create directory", path, retried.errno);
    }
  }
  setMode(path, mode, "create directory");
  return true;
}

/**
 * chmod(2) of what this process has just made at `path`: in a directory the caller checked that no
 * other user may write (or a sticky one, where none may rename what is ours), so the path still
 * names it.
 */
function setMode(path: string, mode: number, action: string): void {
  attempt(() => libc().chmod(cString(path), mode), action, path);
}

/** fchmod(2): a file just created gets exactly `mode`, whatever the umask took from it. */
export function setFdMode(fd: number, mode: number, name: string, action = "create"): void {
  attempt(() => libc().fchmod(fd, mode), action, name);
}

/** unlink(2). */
export function unlinkPath(path: string, action = "remove"): void {
  attempt(() => libc().unlink(cString(path)), action, path);
}

/**
 * Why open(2) with O_TMPFILE fails where no unnamed file can be made at all: the file system
 * cannot (EOPNOTSUPP), or a kernel older than 3.11 took the flag for a directory open (EISDIR)
 * or refused it (EINVAL).
 */
const NO_UNNAMED_FILES: ReadonlySet<number> = new Set([
  Errno.EOPNOTSUPP,
  Errno.EISDIR,
  Errno.EINVAL,
]);

/**
 * open(2) of a new unnamed regular file in `directory` (O_TMPFILE, with `flags` such as O_RDWR),
 * which only {@link linkFd} gives a name, and which is freed with its last fd if it never gets
 * one. Returns undefined where the file system or the kernel cannot make one (see above);
 * `subject` names the file to be in errors.
 */
export function openUnnamed(
  directory: string,
  flags: number,
  mode: number,
  action: string,
  subject: string,
): number | undefined {
  const name = scratchCString(directory, pathScratch);
  const open = (): number => libc().open(name, C.O_TMPFILE | flags, mode);
  const fd = open();
  if (fd >= 0) return fd;
  const retried = retryFailed(open);
  if (retried.ok) return retried.result;
  if (NO_UNNAMED_FILES.has(retried.errno)) return undefined;
  throw osError(action, subject, retried.errno);
}

/**
 * linkat(2): gives the unnamed file open as `fd` ({@link openUnnamed}) the name `path`, through
 * `/proc/self/fd/N` (AT_SYMLINK_FOLLOW; AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH before Linux
 * 6.10), or through AT_EMPTY_PATH where /proc is not mounted. Never replaces or follows what is
 * at `path`: anything there, a symlink too, is `AlreadyExists` (EEXIST).
 */
export function linkFd(fd: number, path: string, action: string): void {
  const target = cString(path);
  const proc = (): number =>
    libc().linkat(
      C.AT_FDCWD,
      cString(`/proc/self/fd/${fd}`),
      C.AT_FDCWD,
      target,
      C.AT_SYMLINK_FOLLOW,
    );
  if (proc() === 0) return;
  const retried = retryFailed(proc);
  if (retried.ok) return;
  if (retried.errno !== Errno.ENOENT || statPath("/proc/self/fd") !== undefined) {
    throw osError(action, path, retried.errno);
  }
  attempt(() => libc().linkat(fd, cString(""), C.AT_FDCWD, target, C.AT_EMPTY_PATH), action, path);
}

const linkScratch = new Uint8Array(C.PATH_MAX);

/** readlink(2) of a symlink such as `/proc/PID/fd/N`. */
export function readLink(path: string): string {
  const name = scratchCString(path, pathScratch);
  const buffer = linkScratch;
  const length = Number(
    attempt(() => libc().readlink(name, buffer, BigInt(buffer.length)), "read link", path),
  );
  return decoder.decode(buffer.subarray(0, length));
}

/** shm_open(3). */
export function shmOpen(
  name: string,
  flags: number,
  mode: number,
  action = "open shared memory",
): number {
  try {
    return attempt(() => libc().shm_open(cString(name), flags, mode), action, name);
  } catch (error) {
    // glibc reports a directory at the name (EISDIR) as EINVAL: say what it is.
    if (
      (error as OsError).errno === Errno.EINVAL && statPath(`/dev/shm${name}`)?.type === "directory"
    ) {
      throw osError(action, name, Errno.EISDIR);
    }
    throw error;
  }
}

/** shm_unlink(3). */
export function shmUnlink(name: string): void {
  attempt(() => libc().shm_unlink(cString(name)), "remove shared memory", name);
}

/** memfd_create(2) with MFD_CLOEXEC, and MFD_ALLOW_SEALING when it is to be sealed. */
export function memfdCreate(name: string, options: { sealable?: boolean } = {}): number {
  const flags = C.MFD_CLOEXEC | (options.sealable ? C.MFD_ALLOW_SEALING : 0);
  return attempt(() => libc().memfd_create(cString(name), flags), "create memfd", name);
}

/** A second descriptor of the same open file, closed on exec (fcntl(2) F_DUPFD_CLOEXEC). */
export function duplicateFd(fd: number, subject: string): number {
  return attempt(
    () => libc().fcntl(fd, C.F_DUPFD_CLOEXEC, 0),
    "duplicate the descriptor of",
    subject,
  );
}

/** Seals a memfd's size for good: nobody can shrink or grow it, nor lift the seal (fcntl(2)). */
export function sealSize(fd: number, subject: string): void {
  const seals = C.F_SEAL_SHRINK | C.F_SEAL_GROW | C.F_SEAL_SEAL;
  attempt(() => libc().fcntl(fd, C.F_ADD_SEALS, seals), "seal", subject);
}

/** Whether a memfd's size is sealed against shrinking. */
export function isSizeSealed(fd: number): boolean {
  const seals = libc().fcntl(fd, C.F_GET_SEALS, 0);
  return seals >= 0 && (seals & C.F_SEAL_SHRINK) !== 0;
}

/**
 * A System V key as `ipcs` shows it: `0x` and eight hex digits, of the key as unsigned (a
 * negative `key_t`, as C holds a key with its top bit set, is the same key).
 */
export function sysvKeyText(key: number): string {
  return `0x${(key >>> 0).toString(16).padStart(8, "0")}`;
}

/**
 * The seals of a memfd that forbid writing to it (fcntl(2) F_GET_SEALS), by name: none when it
 * has none, or they cannot be read.
 */
export function writeSeals(fd: number): string[] {
  const seals = libc().fcntl(fd, C.F_GET_SEALS, 0);
  if (seals < 0) return [];
  const names: string[] = [];
  if ((seals & C.F_SEAL_WRITE) !== 0) names.push("F_SEAL_WRITE");
  if ((seals & C.F_SEAL_FUTURE_WRITE) !== 0) names.push("F_SEAL_FUTURE_WRITE");
  return names;
}

/** shmget(2) with a 32-bit `key`, signed or not; returns the segment id. */
export function sysvGet(key: number, size: number, flags: number): number {
  return attempt(
    () => libc().shmget(key | 0, BigInt(size), flags), // key_t is an int
    "get System V shared memory",
    `key ${sysvKeyText(key)}`,
  );
}

/** The fields of `struct shmid_ds` the project uses. */
export interface SysvStat {
  /** Owner's user id. */
  uid: number;
  /** Permission bits. */
  permissions: number;
  /** Segment size in bytes. */
  size: number;
  /** How many mappings are attached. */
  attached: number;
  /** Removed (IPC_RMID) already: it goes away once the last mapping is detached. */
  removed: boolean;
}

/** shmctl(IPC_STAT). */
export function sysvStat(id: number, subject: string): SysvStat {
  const buffer = new Uint8Array(C.SHMID_DS_BYTES);
  attempt(() => libc().shmctl(id, C.IPC_STAT, buffer), "inspect System V shared memory", subject);
  const view = new DataView(buffer.buffer);
  return {
    uid: view.getUint32(C.SHMID_DS_OFFSET.uid, true),
    permissions: view.getUint16(C.SHMID_DS_OFFSET.mode, true) & 0o777,
    size: Number(view.getBigUint64(C.SHMID_DS_OFFSET.segsz, true)),
    attached: Number(view.getBigUint64(C.SHMID_DS_OFFSET.nattch, true)),
    removed: (view.getUint16(C.SHMID_DS_OFFSET.mode, true) & C.SHM_DEST) !== 0,
  };
}

/** shmctl(IPC_RMID): the segment goes away once the last process detaches. */
export function sysvRemove(id: number, subject: string): void {
  attempt(() => libc().shmctl(id, C.IPC_RMID, new Uint8Array(C.SHMID_DS_BYTES)), "remove", subject);
}

/** The effective user id of this process. */
export function effectiveUid(): number {
  return libc().geteuid();
}

const timespecBuffer = new BigInt64Array(2);
// One view, made once: a view per call was an allocation per clock read.
const timespecBytes = new Uint8Array(timespecBuffer.buffer);

/**
 * CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine (unlike
 * `performance.now()`, which starts at each process's own start), for cross-process latency.
 */
export function monotonicNanos(): bigint {
  const fast = compiledFastLibc();
  // Two call sites, each only ever calling one function: V8 makes the first a fast call.
  if (fast !== undefined) fast.clock_gettime(C.CLOCK_MONOTONIC, timespecBytes);
  else genericClock();
  return timespecBuffer[0] * 1_000_000_000n + timespecBuffer[1];
}

function genericClock(): void {
  countGenericCall();
  libc().clock_gettime(C.CLOCK_MONOTONIC, timespecBytes);
}

/**
 * CLOCK_MONOTONIC in whole milliseconds: one clock for every process of the machine, where
 * `performance.now()` counts from each process's own start.
 */
export function monotonicMillis(): number {
  return Number(monotonicNanos() / 1_000_000n);
}

/**
 * Whether this process is in the foreground process group of the terminal on `fd` (a
 * background job that reads it is stopped by SIGTTIN).
 */
export function inForeground(fd: number): boolean {
  return libc().tcgetpgrp(fd) === libc().getpgrp();
}

/**
 * Ignores SIGTTIN: a read of the terminal from the background then fails (EIO) instead of
 * stopping the whole process. Children started after this inherit it, as exec keeps ignored
 * signals.
 */
export function ignoreTerminalReadStops(): void {
  libc().signal(C.SIGTTIN, Deno.UnsafePointer.create(1n)); // SIG_IGN
}

/** kill(2); returns false when the process does not exist. */
export function sendSignal(pid: number, signal: number): boolean {
  const send = (): number => libc().kill(pid, signal);
  if (send() === 0) return true;
  // A failed kill sent nothing; ESRCH (gone) and EPERM (alive, another user's) decide liveness.
  const retried = retryFailed(send);
  if (retried.ok) return true;
  if (retried.errno === Errno.ESRCH) return false;
  if (retried.errno === Errno.EPERM) return true;
  throw osError("signal", `pid ${pid}`, retried.errno);
}

/**
 * Takes `signals` out of the calling thread's signal mask (sigprocmask(2)), where a parent may
 * have left them blocked: a mask is inherited across fork and exec. Called on the main thread,
 * the process can then receive them: the kernel gives a signal sent to the process to any
 * thread that does not block it.
 */
export function unblockSignals(signals: readonly number[]): void {
  const set = new Uint8Array(C.SIGSET_BYTES);
  for (const signal of signals) set[(signal - 1) >> 3] |= 1 << ((signal - 1) & 7);
  attempt(() => libc().sigprocmask(C.SIG_UNBLOCK, set, null), "unblock", "signals");
}

/** Asks the kernel to send `signal` to this process when its parent dies (prctl(2)). */
export function setParentDeathSignal(signal: number): void {
  attempt(
    () => libc().prctl(C.PR_SET_PDEATHSIG, BigInt(signal), 0n, 0n, 0n),
    "set",
    "parent death signal",
  );
}

/** What /proc says of a running process. */
export interface ProcessState {
  /** The state letter: R, S, D, Z (zombie), T, ... */
  state: string;
  /** The parent's pid. */
  parentPid: number;
  /** Start time in clock ticks after boot; with the pid it names one process for good. */
  startTime: bigint;
}

/**
 * Where `readFileText` reads: scans of /proc read a file of each process, and a buffer of this
 * size allocated per file kept megabytes of native memory in the process after a scan.
 */
const READ_SCRATCH_BYTES = 65536;
let readScratch: Uint8Array<ArrayBuffer> | undefined;

/**
 * Reads a whole file through libc, for /proc files that Deno's own file API guards behind
 * `--allow-all`; `undefined` when it cannot be read.
 */
export function readFileText(path: string): string | undefined {
  return readingFile(path, (fd) => {
    let buffer = readScratch ??= new Uint8Array(READ_SCRATCH_BYTES);
    let length = 0;
    for (;;) {
      if (length === buffer.length) {
        // Only a file larger than the scratch (a process's maps) allocates, and only for itself.
        const grown = new Uint8Array(buffer.length * 2);
        grown.set(buffer);
        buffer = grown;
      }
      const count = readFd(fd, buffer.subarray(length), path);
      if (count <= 0) break;
      length += count;
    }
    return decoder.decode(buffer.subarray(0, length));
  });
}

/** `read` of `path` opened read-only, then closed; `undefined` when it cannot be opened or read. */
function readingFile<T>(path: string, read: (fd: number) => T): T | undefined {
  let fd: number;
  try {
    fd = openPath(path, C.O_RDONLY | C.O_CLOEXEC, 0, "read");
  } catch {
    return undefined;
  }
  try {
    return read(fd);
  } catch {
    return undefined;
  } finally {
    closeFd(fd);
  }
}

/**
 * How many mappings the process has: the lines of `/proc/self/maps`, counted without making a
 * string of them (a process near the kernel's limit has megabytes of them). `undefined` where
 * it cannot be read.
 */
export function mappingCount(): number | undefined {
  const path = "/proc/self/maps";
  return readingFile(path, (fd) => {
    const buffer = readScratch ??= new Uint8Array(READ_SCRATCH_BYTES);
    let lines = 0;
    for (let count; (count = readFd(fd, buffer, path)) > 0;) {
      // indexOf, not a loop over the bytes: V8 compiles such a loop on the spot (on-stack
      // replacement), which kept megabytes more in every process that opened one region.
      const read = buffer.subarray(0, count);
      for (let at = read.indexOf(0x0a); at >= 0; at = read.indexOf(0x0a, at + 1)) lines++;
    }
    return lines;
  });
}

/**
 * The process's virtual memory size in bytes and the address of the start of its main stack,
 * which lies just below the top of the user address space (`/proc/self/stat`, fields 23 and 28);
 * `undefined` where it cannot be read.
 */
export function addressSpaceUse(): { used: number; stackStart: number } | undefined {
  const fields = statFields("self");
  if (fields === undefined) return undefined;
  const used = Number(fields[20]);
  const stackStart = Number(fields[25]);
  return Number.isSafeInteger(used) && Number.isSafeInteger(stackStart) && stackStart > 0
    ? { used, stackStart }
    : undefined;
}

/**
 * The soft limit on the process's address space (`RLIMIT_AS`, from `/proc/self/limits`) in
 * bytes: Infinity when unlimited, `undefined` where it cannot be read.
 */
export function addressSpaceRlimit(): number | undefined {
  const text = readFileText("/proc/self/limits");
  const soft = text === undefined ? undefined : /^Max address space\s+(\S+)/m.exec(text)?.[1];
  if (soft === undefined) return undefined;
  if (soft === "unlimited") return Infinity;
  const limit = Number(soft);
  return Number.isSafeInteger(limit) && limit > 0 ? limit : undefined;
}

/** The kernel's limit on a process's mappings (`vm.max_map_count`), if it can be read. */
export function maxMapCount(): number | undefined {
  const text = readFileText("/proc/sys/vm/max_map_count");
  const limit = text === undefined ? NaN : Number(text.trim());
  return Number.isSafeInteger(limit) && limit > 0 ? limit : undefined;
}

/**
 * Whether the kernel never overcommits memory (`vm.overcommit_memory` is 2): every private
 * writable mapping is then charged whole, `MAP_NORESERVE` or not. `undefined` where it cannot be
 * read (no fd left, no /proc).
 */
export function overcommitNever(): boolean | undefined {
  const text = readFileText("/proc/sys/vm/overcommit_memory");
  return text === undefined ? undefined : text.trim() === "2";
}

/**
 * The fields of /proc/PID/stat from the third (the state) on, so that field N is at N - 3;
 * undefined when the process is gone or /proc is not readable.
 */
function statFields(pid: number | "self"): string[] | undefined {
  const text = readFileText(`/proc/${pid}/stat`);
  // The command name in field 2 may hold spaces and parentheses: split after the last ")".
  return text?.slice(text.lastIndexOf(")") + 2).split(" ");
}

/** Reads /proc/PID/stat; undefined when the process is gone or /proc is not readable. */
export function processState(pid: number): ProcessState | undefined {
  const fields = statFields(pid);
  if (fields === undefined) return undefined;
  return {
    state: fields[0] ?? "?",
    parentPid: Number(fields[1] ?? 0),
    startTime: BigInt(fields[19] ?? "0"),
  };
}

/** eventfd(2), non-blocking and close-on-exec. */
export function createEventFd(): number {
  return attempt(() => libc().eventfd(0, C.EFD_NONBLOCK | C.EFD_CLOEXEC), "create", "eventfd");
}
