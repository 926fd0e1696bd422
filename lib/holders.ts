/**
 * Which other processes have an inode open or mapped, read from `/proc` (the processes of this
 * user; root sees all): before taking a path that another program may be using (the original C
 * button reading a FIFO, the original C LED mapping the state file), look.
 *
 * @module
 */

import * as C from "../ffi/constants.ts";
import * as posix from "../ffi/posix.ts";

/** Where to look for an inode in each process. */
export interface HolderOptions {
  /** Its open fds (`/proc/PID/fd`). Default true. */
  fds?: boolean;
  /** Its mappings (`/proc/PID/maps`). Default false. */
  maps?: boolean;
  /** Count this process too. Default false. */
  self?: boolean;
}

/** Parses `MAJOR:MINOR:INODE` (decimal) into the key `/proc/PID/maps` lines can be compared to. */
function mapsKey(identity: string): string {
  const [major, minor, inode] = identity.split(":");
  const hex = (value: string): string => Number(value).toString(16).padStart(2, "0");
  return `${hex(major)}:${hex(minor)} ${inode}`;
}

/** Whether a `/proc/PID/maps` text maps the inode (device and inode columns). */
function mapsInode(maps: string, key: string): boolean {
  for (const line of maps.split("\n")) {
    // address perms offset dev inode [path]
    const fields = line.split(/\s+/, 5);
    if (fields.length === 5 && `${fields[3]} ${fields[4]}` === key) return true;
  }
  return false;
}

/**
 * The pids, other than this process, that hold the inode with `identity` (`FileStat.identity`)
 * open or mapped, as `options` says where to look.
 */
export function findHolders(identity: string, options: HolderOptions = {}): number[] {
  const fds = options.fds ?? true;
  const key = options.maps ? mapsKey(identity) : "";
  const holders: number[] = [];
  for (const entry of posix.listDirectory("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || (pid === Deno.pid && !options.self)) continue;
    if (fds && holdsOpen(pid, identity)) holders.push(pid);
    else if (options.maps && mapsInode(posix.readFileText(`/proc/${pid}/maps`) ?? "", key)) {
      holders.push(pid);
    }
  }
  return holders;
}

/**
 * Whether the process `pid` holds the inode with `identity` open (one of its fds); false when
 * its fds cannot be read (another user's process, or one that is gone).
 */
export function holdsOpen(pid: number, identity: string): boolean {
  return someFd(pid, (fd) => posix.statPath(fd, { follow: true })?.identity === identity);
}

/**
 * Whether `test` holds for one of the fds of the process `pid` (given as `/proc/PID/fd/N`); false
 * when its fds cannot be read (another user's process, or one that is gone).
 */
function someFd(pid: number, test: (fd: string) => boolean): boolean {
  for (const fd of posix.listDirectory(`/proc/${pid}/fd`)) {
    try {
      if (test(`/proc/${pid}/fd/${fd}`)) return true;
    } catch (error) {
      // Closed meanwhile, or not ours to look at: then none of its fds are, and each refusal
      // would cost an error built for nothing.
      if (error instanceof Deno.errors.PermissionDenied) return false;
    }
  }
  return false;
}

/**
 * The pids, this one too, holding a Unix socket bound to the abstract name `name` (without its
 * leading NUL): found by the socket's inode in `/proc/net/unix` (this network namespace), then
 * among each process's fds. For a holder that cannot be asked: one bound but not listening.
 */
export function abstractSocketHolders(name: string): number[] {
  const links = new Set<string>();
  // Num RefCount Protocol Flags Type St Inode Path; an abstract name reads "@name".
  for (const line of (posix.readFileText("/proc/net/unix") ?? "").split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length >= 8 && fields.slice(7).join(" ") === `@${name}`) {
      links.add(`socket:[${fields[6]}]`);
    }
  }
  if (links.size === 0) return [];
  return posix.listDirectory("/proc").map(Number).filter((pid) =>
    Number.isInteger(pid) && someFd(pid, (fd) => links.has(posix.readLink(fd)))
  );
}

/** Who reads a FIFO: the pids found holding it open, and whether a reader holds no fd yet. */
export interface FifoReaders {
  /** Processes with the FIFO open (this one too). */
  pids: number[];
  /** A reader is blocked in open(2), so it has no fd to find it by (the original C button). */
  waiting: boolean;
}

const NOT_A_PRESS = new TextEncoder().encode("1\n");

/**
 * Finds who reads the FIFO at `path` (the inode with `identity`). Processes holding it open are
 * found in `/proc`. A reader blocked in open(2) holds no fd yet; the only way to see it is to
 * open the FIFO for writing, which wakes it, so this then writes `1\n`: the original C button
 * reads that as "not a press", where an empty read would count as one.
 *
 * `options.keeper`: the pid of a process that holds the FIFO open for reading only to keep what
 * is written to it (the launcher, while its button restarts), and reads none of it: not counted.
 * Its read end lets the probe's open succeed whoever else waits, so while it holds the FIFO the
 * probe is made only when some process is blocked opening a FIFO at all, and tells a reader by
 * its taking the probe's line (FIONREAD); a line nobody took is read back, so the next reader
 * never sees it.
 */
export function fifoReaders(
  path: string,
  identity: string,
  options: { keeper?: number } = {},
): FifoReaders {
  const others = (found: number[]): number[] => found.filter((pid) => pid !== options.keeper);
  const found = findHolders(identity, { self: true });
  const pids = others(found);
  if (pids.length > 0) return { pids, waiting: false };
  const kept = pids.length < found.length;
  if (kept && !someoneWaitsForAFifo()) return { pids, waiting: false };
  let fd: number;
  try {
    fd = posix.openPath(path, C.O_WRONLY | C.O_NONBLOCK | C.O_NOFOLLOW | C.O_CLOEXEC, 0, "look at");
  } catch {
    return { pids, waiting: false }; // ENXIO: nobody reads it
  }
  try {
    if (posix.statFd(fd, path).identity !== identity) return { pids, waiting: false };
    // Presses may wait for the restarted button already: the probe's line goes behind them.
    const before = kept ? posix.bytesWaiting(fd, path) : 0;
    posix.writeFd(fd, NOT_A_PRESS, path);
    if (kept && !lineTaken(fd, path, before)) {
      takeBack(fd, path, before);
      return { pids, waiting: false };
    }
  } finally {
    posix.closeFd(fd);
  }
  // Looked for once the probe's own fd is closed: it is no reader to name.
  return { pids: others(findHolders(identity, { self: true })), waiting: true };
}

/** How long a reader woken by the probe is given to take its line: it only has to be run. */
const TAKE_WITHIN_MS = 200;

/** Whether some process is blocked opening a FIFO (the kernel's `wait_for_partner`) now. */
function someoneWaitsForAFifo(): boolean {
  for (const entry of posix.listDirectory("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === Deno.pid) continue;
    if (posix.readFileText(`/proc/${entry}/wchan`)?.trim() === "wait_for_partner") return true;
  }
  return false;
}

/**
 * Whether a reader took (any of) the `before` bytes waiting in the FIFO `fd` writes to and the
 * probe's line behind them, within a moment.
 */
function lineTaken(fd: number, path: string, before: number): boolean {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const until = performance.now() + TAKE_WITHIN_MS;
  while (posix.bytesWaiting(fd, path) >= before + NOT_A_PRESS.length) {
    if (performance.now() >= until) return false;
    Atomics.wait(pause, 0, 0, 2);
  }
  return true;
}

/**
 * Reads the probe's line back out of the FIFO `fd` writes to, through a read end of its own, and
 * writes the `before` bytes that waited ahead of it back as they were.
 */
function takeBack(fd: number, path: string, before: number): void {
  const reader = posix.openPath(
    `/proc/self/fd/${fd}`,
    C.O_RDONLY | C.O_NONBLOCK | C.O_CLOEXEC,
    0,
    "read back",
  );
  try {
    const waited = new Uint8Array(before + NOT_A_PRESS.length);
    const count = posix.readFd(reader, waited, path);
    if (count > NOT_A_PRESS.length) {
      posix.writeFd(fd, waited.slice(0, count - NOT_A_PRESS.length), path);
    }
  } finally {
    posix.closeFd(reader);
  }
}
