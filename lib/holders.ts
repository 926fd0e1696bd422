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

function holdsOpen(pid: number, identity: string): boolean {
  for (const fd of posix.listDirectory(`/proc/${pid}/fd`)) {
    try {
      if (posix.statPath(`/proc/${pid}/fd/${fd}`, { follow: true })?.identity === identity) {
        return true;
      }
    } catch {
      // Not ours to look at, or closed meanwhile.
    }
  }
  return false;
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
 * While it holds the FIFO, no probe is made: the keeper's read end would let it open, its line
 * would wait for the next reader (a "not a press" to warn of), and it would report a reader that
 * may not be there. (The original C button, the reader it is for, makes a FIFO of its own at its
 * start, so it is never blocked opening one a keeper holds.)
 */
export function fifoReaders(
  path: string,
  identity: string,
  options: { keeper?: number } = {},
): FifoReaders {
  const found = findHolders(identity, { self: true });
  const pids = found.filter((pid) => pid !== options.keeper);
  if (pids.length > 0 || pids.length < found.length) return { pids, waiting: false };
  let fd: number;
  try {
    fd = posix.openPath(path, C.O_WRONLY | C.O_NONBLOCK | C.O_NOFOLLOW | C.O_CLOEXEC, 0, "look at");
  } catch {
    return { pids, waiting: false }; // ENXIO: nobody reads it
  }
  try {
    if (posix.statFd(fd, path).identity !== identity) return { pids, waiting: false };
    posix.writeFd(fd, NOT_A_PRESS, path);
  } finally {
    posix.closeFd(fd);
  }
  // Looked for once the probe's own fd is closed: it is no reader to name.
  return { pids: findHolders(identity, { self: true }), waiting: true };
}
