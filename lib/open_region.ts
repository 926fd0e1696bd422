/**
 * The four ways to open a {@link SharedRegion}: a file path, a POSIX shared-memory name, a
 * System V key, or an anonymous memfd. Each applies the same create/exclusive rules and the
 * ownership rules of `owned_path.ts`, and hands the mapping to one {@link SharedMemory} owner.
 *
 * @module
 */

import * as C from "../ffi/constants.ts";
import type { OsError } from "../ffi/errno.ts";
import { Mapping } from "../ffi/mapping.ts";
import * as posix from "../ffi/posix.ts";
import { failure, shown } from "./errors.ts";
import { SharedMemory } from "./memory.ts";
import {
  checkDataFile,
  checkOwn,
  checkOwner,
  checkPrivateDirectory,
  NAME_LOOK_FLAGS,
  openOrCreate,
  removeIfSame,
  removeShmIfSame,
  type Unnamed,
  unnamedAt,
  unnamedShm,
} from "./owned_path.ts";
import {
  MAX_REGION_SIZE,
  newRegion,
  type RegionKind,
  type RegionOptions,
  type SharedRegion,
} from "./region.ts";

function validateSize(size: number | undefined, action: string, subject: string): void {
  if (size === undefined) return;
  if (!Number.isSafeInteger(size) || size < 1 || size > MAX_REGION_SIZE) {
    throw failure(
      RangeError,
      action,
      subject,
      `size ${shown(size)} is not a whole number of bytes from 1 to ${MAX_REGION_SIZE}`,
    );
  }
}

function checkOptions(options: RegionOptions, action: string, subject: string): void {
  validateSize(options.size, action, subject);
  if (options.create && options.size === undefined) {
    throw failure(TypeError, action, subject, "create needs a size");
  }
  if (options.exclusive && !options.create) {
    throw failure(TypeError, action, subject, "exclusive needs create");
  }
}

/**
 * `size`, the size of an existing file, shm object, segment or memfd that is to be mapped whole,
 * unless it is more than {@link MAX_REGION_SIZE}: then a `RangeError`, as for a size asked for.
 */
function wholeSize(size: number, action: string, subject: string): number {
  if (size > MAX_REGION_SIZE) {
    throw failure(RangeError, action, subject, `its size ${size} exceeds ${MAX_REGION_SIZE}`);
  }
  return size;
}

/**
 * Decides how many bytes to map from an fd whose inode passed the type and owner checks,
 * growing it when asked; never shrinks.
 */
function settleSize(
  fd: number,
  stat: posix.FileStat,
  options: RegionOptions,
  created: boolean,
  action: string,
  subject: string,
): number {
  // Grown, and its blocks taken, before it was named (see openFdRegion()).
  if (created) return options.size as number;
  if (stat.size === 0 && !options.create) {
    throw failure(
      Deno.errors.InvalidData,
      action,
      subject,
      "it is empty (0 bytes); open it with create: true and a size to initialise it",
    );
  }
  if (options.size === undefined) return wholeSize(stat.size, action, subject);
  if (stat.size < options.size) growTo(fd, options.size, subject);
  return options.size;
}

/** How long {@link growTo} waits for another process's lock on the file. */
const GROW_LOCK_MS = 2_000;
const pause = new Int32Array(new SharedArrayBuffer(4));

/**
 * Grows the file behind `fd` to at least `size` bytes, never shrinking it. Under an exclusive
 * flock(2): without it, two processes opening one new name with different sizes at once could
 * each see it small, and the one with the smaller size would truncate it after the other had
 * grown and mapped it, and that process would die of SIGBUS.
 */
function growTo(fd: number, size: number, subject: string): void {
  withLock(fd, subject, () => {
    const before = posix.statFd(fd, subject).size;
    if (before >= size) return;
    // Refused before it grows: a file grown past the space left filled the file system as its
    // blocks were taken, and stayed grown when that failed (giving it its size back then could
    // cut it under a mapping another process made of the grown file meanwhile).
    const free = posix.freeBytes(fd, subject);
    if (free !== undefined && size - before > free) {
      throw posix.noSpaceError(
        subject,
        `${size} bytes need ${size - before} more, and ${free} are free; it is left as it was`,
      );
    }
    posix.truncateFd(fd, size, subject);
  });
}

/** Runs `fn` under an exclusive flock(2) of the file behind `fd`, waiting a while for it. */
function withLock<T>(fd: number, subject: string, fn: () => T): T {
  const deadline = performance.now() + GROW_LOCK_MS;
  while (!posix.tryLockExclusive(fd, subject)) {
    if (performance.now() >= deadline) {
      throw failure(
        Deno.errors.Busy,
        "resize",
        subject,
        `another process has held a lock on it for ${GROW_LOCK_MS} ms`,
      );
    }
    Atomics.wait(pause, 0, 0, 1);
  }
  try {
    return fn();
  } finally {
    posix.unlockFd(fd, subject);
  }
}

/** How an fd-backed region's name is removed: only while it still names the region's inode. */
interface NameRemoval {
  /** Removes the name if it still refers to the inode with `identity`; returns whether it did. */
  removeIfSame(identity: string): boolean;
  /** The action named in the error when the name refers to something else or to nothing. */
  action: string;
  /** Why, in that error. */
  reason: string;
}

/**
 * Opens fd-backed shared memory through `how.openFd(flags)`, or makes it when asked (see
 * {@link openOrCreate}: unnamed, set up, then named), then checks, sizes and maps it. The
 * region's `unlink()` removes the name only while it still refers to the inode mapped here, and
 * throws `NotFound` otherwise: a name removed and made again by someone else is theirs.
 */
function openFdRegion(
  kind: RegionKind,
  name: string,
  options: RegionOptions,
  action: string,
  how: { openFd: (flags: number) => number; unnamed: Unnamed; removal: NameRemoval },
): SharedRegion {
  const { openFd, removal } = how;
  const { fd, created } = openOrCreate(openFd, {
    ...options,
    name,
    // A new one appears at its name whole: made unnamed, grown and its blocks taken first, so
    // no other process opens it empty, and one that dies making it leaves nothing there.
    unnamed: how.unnamed,
    setUp: (fd) => {
      growTo(fd, options.size as number, name);
      posix.allocate(fd, options.size as number, name);
    },
    remove: (fd) => removal.removeIfSame(posix.statFd(fd, name).identity),
  });
  let identity: string | undefined;
  try {
    const stat = posix.statFd(fd, name);
    identity = stat.identity;
    checkOwn(stat, "file", action, name);
    checkDataFile(fd, action, name);
    const size = settleSize(fd, stat, options, created, action, name);
    // Holes would be filled as the mapping first touches them, and on a full file system (any
    // user can fill /dev/shm) that is a SIGBUS: take the blocks now, or fail now with ENOSPC.
    if (!created) posix.allocate(fd, size, name);
    const memory = new SharedMemory(Mapping.map(fd, size, name), name, { shrinkable: fd });
    const inode = identity;
    const remove = (): void => {
      if (!removal.removeIfSame(inode)) {
        throw failure(Deno.errors.NotFound, removal.action, name, removal.reason);
      }
    };
    return newRegion({ kind, memory, remove });
  } catch (error) {
    // What this call made goes, unless the name already refers to something else; a failure
    // to remove it would hide the error that matters, the one thrown here.
    if (created && identity !== undefined) {
      try {
        removal.removeIfSame(identity);
      } catch {
        // see above
      }
    }
    throw error;
  } finally {
    posix.closeFd(fd);
  }
}

const OPEN_FLAGS = C.O_RDWR | C.O_CLOEXEC | C.O_NOCTTY | C.O_NONBLOCK | C.O_NOFOLLOW;

/**
 * Opens a region backed by a regular file, the way the original C programs shared
 * `/tmp/data.dat`. A file it creates appears at its path whole: made unnamed (O_TMPFILE), given
 * mode 0600, grown and its blocks taken, then named (linkat(2), which never replaces anything),
 * so no process opens it empty and one killed making it leaves nothing (where the file system
 * cannot make unnamed files, it is made at its path). It is never opened through a symlink;
 * directories, FIFOs, devices, sockets and files of other users are refused, as is a directory
 * where other users could replace the file. A shorter existing file is grown to `size`, never
 * shrunk, under an exclusive flock(2), so that processes of this library opening one file at
 * once with different sizes never shrink it under each other's mappings.
 *
 * A file can be truncated by any process that may write it, and the kernel answers a mapping
 * that then reaches past the end of the file with SIGBUS. This library survives that: each
 * page cut off becomes a private zero-filled page when touched, and
 * {@link SharedRegion.lostPages} counts them; the data is gone all the same. Map a file only
 * when every process that can write it is trusted; otherwise keep the shared memory in a sealed
 * memfd ({@link createMemfdRegion}) and only copy to and from the file.
 *
 * @param path The file. Its directory and every directory above it must belong to this user or
 * root, and be writable by no other user unless sticky (as `/tmp` is).
 * @param [options={}] Whether to create it and how many bytes to map.
 * @example
 * ```ts
 * import { openFileRegion } from "@mmap-ipc/mmap-ipc";
 *
 * const dir = await Deno.makeTempDir();
 * using region = openFileRegion(`${dir}/data.dat`, { create: true, size: 256 });
 * region.write(0, new TextEncoder().encode("1\n\0")); // as the original C button writes it
 * region.unlink(); // removes the file; the mapping lasts until the region closes
 * await Deno.remove(dir);
 * ```
 */
export function openFileRegion(path: string, options: RegionOptions = {}): SharedRegion {
  options ??= {}; // null from JavaScript
  const action = "open region file";
  if (path === "") throw new TypeError("The region file path is empty");
  checkOptions(options, action, path);
  checkPrivateDirectory(path, action);
  const existing = posix.statPath(path);
  if (existing !== undefined) checkOwn(existing, "file", action, path);
  return openFdRegion(
    "file",
    path,
    options,
    action,
    {
      openFd: (extra) => posix.openPath(path, OPEN_FLAGS | extra, 0o600, action),
      unnamed: unnamedAt(path, action),
      removal: {
        removeIfSame: (identity) => removeIfSame(path, identity, "remove region file"),
        action: "remove region file",
        reason: "the path no longer refers to the file this region mapped",
      },
    },
  );
}

/** `name` as `shm_open` wants it: one leading slash and no other. */
export function normalizeShmName(name: string): string {
  const normalized = name.startsWith("/") ? name : `/${name}`;
  // Bytes, not characters: the kernel's limit on a name in /dev/shm is 255 bytes of UTF-8.
  if (
    !/^\/[^/\0]{1,250}$/.test(normalized) || new TextEncoder().encode(normalized).length > 251 ||
    normalized === "/." || normalized === "/.."
  ) {
    throw new TypeError(
      `Invalid shared memory name ${
        JSON.stringify(name)
      }: 1 to 250 bytes (in UTF-8), no "/" after the first and no NUL, not "." or ".."`,
    );
  }
  return normalized;
}

/**
 * Opens a POSIX shared-memory object (`shm_open`, visible in `/dev/shm`). The name may be given
 * with or without its leading `/`. Created 0600, and whole, as {@link openFileRegion} creates a
 * file (in `/dev/shm`, where glibc's shm_open(3) keeps them); objects of other users are refused.
 *
 * @param name The name, such as `/led-state`: up to 250 bytes of UTF-8, no `/` after the first.
 * @param [options={}] Whether to create it and how many bytes to map.
 * @example
 * ```ts
 * import { openShmRegion } from "@mmap-ipc/mmap-ipc";
 *
 * using region = openShmRegion(`/mmap-ipc-example-${Deno.pid}`, { create: true, size: 4096 });
 * // another process: openShmRegion(region.name)
 * region.unlink(); // removes the name; the mapping lasts until the region closes
 * ```
 */
export function openShmRegion(name: string, options: RegionOptions = {}): SharedRegion {
  options ??= {}; // null from JavaScript
  const action = "open shared memory";
  const shmName = normalizeShmName(name);
  checkOptions(options, action, shmName);
  return openFdRegion(
    "posix",
    shmName,
    options,
    action,
    {
      openFd: (extra) =>
        posix.shmOpen(shmName, C.O_RDWR | C.O_NOFOLLOW | C.O_CLOEXEC | extra, 0o600),
      unnamed: unnamedShm(shmName, action),
      removal: {
        removeIfSame: (identity) => removeShmIfSame(shmName, identity),
        action: "remove shared memory",
        reason: "the name no longer refers to the object this region mapped",
      },
    },
  );
}

/**
 * Removes a POSIX shared-memory name if it exists and belongs to this user; returns whether it
 * was there. Anything else is refused, never removed.
 *
 * @example
 * ```ts
 * import { openShmRegion, removeShm } from "@mmap-ipc/mmap-ipc";
 *
 * const name = `/mmap-ipc-example-${Deno.pid}`;
 * openShmRegion(name, { create: true, size: 4096 }).close();
 * console.log(removeShm(name)); // true
 * console.log(removeShm(name)); // false: nothing by that name any more
 * ```
 */
export function removeShm(name: string): boolean {
  const shmName = normalizeShmName(name);
  let fd: number;
  try {
    fd = posix.shmOpen(shmName, NAME_LOOK_FLAGS, 0, "remove shared memory");
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
  try {
    checkOwn(posix.statFd(fd, shmName), "file", "remove shared memory", shmName);
  } finally {
    posix.closeFd(fd);
  }
  posix.shmUnlink(shmName);
  return true;
}

/**
 * Opens a System V shared-memory segment by key (`shmget`/`shmat`), for programs that speak
 * only that API. Created 0600; segments of other users are refused. A System V segment cannot
 * grow: asking for more than it has is an error.
 *
 * @param key The segment's key: any non-zero 32-bit number the processes agree on, unsigned
 * (`0x8d000001`, as `ipcs` shows it) or signed (-1929379839, the same key as C's `key_t` holds
 * it). The region's {@link SharedRegion.name} is the key as `ipcs` shows it (`0x8d000001`),
 * which `Number()` reads back.
 * @param [options={}] Whether to create it and how many bytes to map.
 * @example
 * ```ts
 * import { openSysvRegion } from "@mmap-ipc/mmap-ipc";
 *
 * const key = 0x4d4d0000 | (Deno.pid & 0xffff);
 * using region = openSysvRegion(key, { create: true, size: 4096 });
 * region.unlink(); // the segment goes once every process has detached it
 * ```
 */
export function openSysvRegion(key: number, options: RegionOptions = {}): SharedRegion {
  options ??= {}; // null from JavaScript
  const action = "open System V shared memory";
  if (!Number.isInteger(key) || key === 0 || key < -(2 ** 31) || key >= 2 ** 32) {
    throw new TypeError(
      `Invalid System V key ${shown(key)}: a non-zero 32-bit integer, ` +
        "from 1 to 0xffffffff or, as C's signed key_t holds it, from -2147483648 to -1",
    );
  }
  const keyText = posix.sysvKeyText(key);
  const subject = `key ${keyText}`;
  checkOptions(options, action, subject);
  let id: number;
  let created = false;
  if (options.create) {
    try {
      id = posix.sysvGet(key, options.size as number, C.IPC_CREAT | C.IPC_EXCL | 0o600);
      created = true;
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists) || options.exclusive) throw error;
      id = posix.sysvGet(key, 0, 0);
    }
  } else {
    id = posix.sysvGet(key, 0, 0);
  }
  try {
    const stat = posix.sysvStat(id, subject);
    checkOwner(stat.uid, action, subject);
    const size = options.size ?? wholeSize(stat.size, action, subject);
    if (size > stat.size) {
      throw failure(
        Deno.errors.InvalidData,
        action,
        subject,
        `the segment has ${stat.size} bytes, fewer than the ${size} asked for (System V segments cannot grow)`,
      );
    }
    const memory = new SharedMemory(Mapping.attach(id, size, stat.size, subject), keyText, {
      description: `region "${keyText}"`,
    });
    const remove = (): void => {
      // As for a file or a POSIX name: removed by someone else already is NotFound, not a
      // removal done (the key may name another segment by now; this id is still ours).
      if (posix.sysvStat(id, subject).removed) {
        throw failure(
          Deno.errors.NotFound,
          "remove System V shared memory",
          subject,
          "it was removed already (IPC_RMID); it goes once the last process detaches it",
        );
      }
      posix.sysvRemove(id, subject);
    };
    return newRegion({ kind: "sysv", memory, remove });
  } catch (error) {
    if (created) posix.sysvRemove(id, subject);
    throw error;
  }
}

/** The longest memfd name, in bytes: NAME_MAX less the `memfd:` the kernel puts before it. */
const MAX_MEMFD_LABEL_BYTES = 249;

/** Options for {@link createMemfdRegion}. */
export interface MemfdOptions {
  /** Bytes to allocate and map. */
  size: number;
  /**
   * The memfd's name, shown in `/proc/PID/fd` as `/memfd:NAME`: up to 249 bytes of UTF-8.
   *
   * @default {"mmap-ipc"}
   */
  label?: string;
  /**
   * Seal the size for good, so that no process can shrink the memory under another's mapping
   * (the kernel would kill that process with SIGBUS) or grow it.
   *
   * @default {true}
   */
  seal?: boolean;
}

/**
 * Creates anonymous shared memory (`memfd_create`) that has no name in any directory, sealed
 * against resizing. Children reach it through its {@link SharedRegion.name},
 * `/proc/PID/fd/N`, with {@link openMemfdRegion}; it disappears when the last process closes it.
 *
 * @example
 * ```ts
 * import { createMemfdRegion } from "@mmap-ipc/mmap-ipc";
 *
 * using region = createMemfdRegion({ size: 4096 });
 * console.log(region.name); // "/proc/PID/fd/N": what a child passes to openMemfdRegion()
 * ```
 */
export function createMemfdRegion(options: MemfdOptions): SharedRegion {
  // Options missing or null from JavaScript: said as the missing size they are.
  if (options?.size === undefined) throw new TypeError("createMemfdRegion() needs a size");
  const label = options.label ?? "mmap-ipc";
  if (
    typeof label !== "string" || label.includes("\0") ||
    new TextEncoder().encode(label).length > MAX_MEMFD_LABEL_BYTES
  ) {
    throw failure(
      TypeError,
      "create memfd",
      String(label),
      `a label is a string without NUL bytes, of at most ${MAX_MEMFD_LABEL_BYTES} bytes in ` +
        "UTF-8 (the kernel's limit on a memfd's name)",
    );
  }
  validateSize(options.size, "create memfd", label);
  const seal = options.seal ?? true;
  const fd = posix.memfdCreate(label, { sealable: seal });
  try {
    posix.truncateFd(fd, options.size, label);
    if (seal) posix.sealSize(fd, label);
    // The fd stays open while the region lives: it is what /proc/PID/fd/N names.
    const name = `/proc/${Deno.pid}/fd/${fd}`;
    const memory = new SharedMemory(Mapping.map(fd, options.size, label), name, {
      onRelease: () => posix.closeFd(fd),
      shrinkable: seal ? undefined : fd,
    });
    return newRegion({ kind: "memfd", memory, remove: () => {} });
  } catch (error) {
    posix.closeFd(fd);
    throw error;
  }
}

/**
 * The identity (device, inode) of the file `fd` refers to, once it is known to be a memfd: a
 * regular file whose `/proc/self/fd` link reads `/memfd:NAME`. Anything else is `InvalidData`.
 */
function memfdIdentity(fd: number, action: string, path: string): string {
  const target = posix.readLink(`/proc/self/fd/${fd}`);
  const stat = posix.statFd(fd, path);
  if (!target.startsWith("/memfd:") || stat.type !== "file") {
    throw failure(Deno.errors.InvalidData, action, path, `it is ${target}, not a memfd`);
  }
  return stat.identity;
}

/**
 * `Mapping.map()` of a memfd another process made. One its maker sealed against writing
 * (`F_SEAL_WRITE`, `F_SEAL_FUTURE_WRITE`: memory handed out to be read only) cannot be mapped
 * read-write, and mmap says only EPERM: the error names the seal.
 */
function mapMemfd(fd: number, size: number, path: string): Mapping {
  try {
    return Mapping.map(fd, size, path);
  } catch (error) {
    const seals = (error as OsError).code === "EPERM" ? posix.writeSeals(fd) : [];
    if (seals.length === 0) throw error;
    const sealed = failure(
      Deno.errors.PermissionDenied,
      "map",
      path,
      `the memfd is sealed against writing (${seals.join(", ")}) by the process that made it, ` +
        "and a region is mapped read-write; operation not permitted (EPERM)",
    ) as OsError;
    sealed.code = "EPERM";
    sealed.errno = (error as OsError).errno;
    sealed.cause = error;
    throw sealed;
  }
}

/** Options for {@link openMemfdRegion}. */
export interface OpenMemfdOptions {
  /** Bytes to map. Default: the whole memfd. */
  size?: number;
  /**
   * Accept a memfd not sealed against shrinking (made with `seal: false`): any process holding
   * it could then truncate it under this mapping, and the kernel would kill this process with
   * SIGBUS when it next touches the memory. Without it such a memfd is refused.
   *
   * @default {false}
   */
  unsealed?: boolean;
}

/**
 * Opens a memfd another process created, through the `/proc/PID/fd/N` path it handed over
 * (its region's {@link SharedRegion.name}). Anything but a memfd of this user is refused, and
 * so is one not sealed against shrinking unless `unsealed` is given.
 *
 * @param path What the creator's {@link SharedRegion.name} gave: `/proc/PID/fd/N`.
 * @param [options={}] How many bytes to map (default: all of it), and whether to accept an
 * unsealed memfd.
 * @example
 * ```ts
 * import { createMemfdRegion, openMemfdRegion } from "@mmap-ipc/mmap-ipc";
 *
 * using parent = createMemfdRegion({ size: 4096 });
 * using child = openMemfdRegion(parent.name); // in a child process, from its arguments
 * child.write(0, new Uint8Array([1]));
 * console.log(parent.read(0, 1)[0]); // 1
 * ```
 */
export function openMemfdRegion(
  path: string,
  options: OpenMemfdOptions = {},
): SharedRegion {
  options ??= {}; // null from JavaScript
  const action = "open memfd";
  if (!/^\/proc\/(\d+|self)\/fd\/\d+$/.test(path)) {
    throw new TypeError(`Invalid memfd path ${JSON.stringify(path)}: expected /proc/PID/fd/N`);
  }
  validateSize(options.size, action, path);
  // /proc/PID/fd/N is a symlink by design: following it is the point. But its process can make
  // fd N another file at any moment, so a look at N's link and an open of the path could find two
  // different files (a device, or a file of root's, opened read-write). So the path is opened
  // with O_PATH, which opens nothing, the checks are made on that fd of this process's own, and
  // the memory is opened again through it, and checked again.
  const pathFd = posix.openPath(path, C.O_PATH | C.O_CLOEXEC, 0, action);
  let fd: number;
  let identity: string;
  try {
    identity = memfdIdentity(pathFd, action, path);
    fd = posix.reopenFd(pathFd, C.O_RDWR | C.O_CLOEXEC | C.O_NOCTTY | C.O_NONBLOCK, action, path);
  } finally {
    posix.closeFd(pathFd);
  }
  try {
    if (memfdIdentity(fd, action, path) !== identity) {
      throw failure(Deno.errors.InvalidData, action, path, "it was replaced while it was opened");
    }
    // The seals first: once F_SEAL_SHRINK is there, the size read after it can only grow.
    const sealed = posix.isSizeSealed(fd);
    const stat = posix.statFd(fd, path);
    checkOwner(stat.uid, action, path);
    if (!options.unsealed && !sealed) {
      throw failure(
        Deno.errors.InvalidData,
        action,
        path,
        "it is not sealed against shrinking (F_SEAL_SHRINK), so a process holding it could " +
          "truncate it under this mapping (SIGBUS); pass unsealed: true to accept that",
      );
    }
    const size = options.size ?? wholeSize(stat.size, action, path);
    if (size > stat.size || size === 0) {
      throw failure(
        Deno.errors.InvalidData,
        action,
        path,
        `the memfd has ${stat.size} bytes, asked for ${size}`,
      );
    }
    const memory = new SharedMemory(mapMemfd(fd, size, path), path, {
      shrinkable: sealed ? undefined : fd,
    });
    return newRegion({ kind: "memfd", memory, remove: () => {} });
  } finally {
    posix.closeFd(fd);
  }
}
