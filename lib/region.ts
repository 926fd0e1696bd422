/**
 * Shared regions: memory that several processes map at once, opened from a file path, a POSIX
 * shared-memory name, a System V key or an anonymous memfd.
 *
 * @module
 */

import * as C from "../ffi/constants.ts";
import { Mapping } from "../ffi/mapping.ts";
import * as posix from "../ffi/posix.ts";
import { abortReason, failure } from "./errors.ts";

/** The four ways to reach a shared region. */
export type RegionKind = "file" | "posix" | "sysv" | "memfd";

/** Create/open choices shared by every way of opening a region. */
export interface RegionOptions {
  /**
   * Bytes to map. Required when the region is created; when it already exists a smaller one is
   * grown to this size (files and POSIX shm) and a larger one is left as it is and mapped in
   * part. Default for an existing region: its whole size.
   */
  size?: number;
  /** Create the region when it does not exist (mode 0600). Default `false`: it must exist. */
  create?: boolean;
  /** With `create`, fail with `AlreadyExists` instead of opening an existing region. */
  exclusive?: boolean;
}

/** Options for {@link SharedRegion.waitInt32}. */
export interface RegionWaitOptions {
  /** Milliseconds before the wait resolves with `"timed-out"`. Default: no limit. */
  timeout?: number;
  /** Rejects the wait with the signal's reason when aborted. */
  signal?: AbortSignal;
}

/** The largest region this library maps (1 TiB); anything larger is a mistake, not a plan. */
export const MAX_REGION_SIZE: number = 2 ** 40;

const internal = Symbol("SharedRegion.internal");

/** What the openers hand to the {@link SharedRegion} constructor. */
interface RegionParts {
  kind: RegionKind;
  name: string;
  mapping: Mapping;
  remove: () => void;
  release?: () => void;
}

/**
 * Memory shared between processes. Every access is bounds-checked and throws
 * `Deno.errors.BadResource` after {@link SharedRegion.close}; no `ArrayBuffer` over the mapping
 * ever escapes, so nothing can touch the memory after it is unmapped.
 *
 * Open one with {@link openFileRegion}, {@link openShmRegion}, {@link openSysvRegion},
 * {@link createMemfdRegion} or {@link openMemfdRegion}.
 */
export class SharedRegion {
  readonly #kind: RegionKind;
  readonly #name: string;
  readonly #remove: () => void;
  readonly #release: (() => void) | undefined;
  #mapping: Mapping | undefined;

  /** Not for direct use: call one of the `open...Region` functions. */
  constructor(token: symbol, parts: RegionParts) {
    if (token !== internal) {
      throw new TypeError(
        "Use openFileRegion(), openShmRegion(), openSysvRegion() or a memfd function",
      );
    }
    this.#kind = parts.kind;
    this.#name = parts.name;
    this.#mapping = parts.mapping;
    this.#remove = parts.remove;
    this.#release = parts.release;
  }

  /** How the region was reached. */
  get kind(): RegionKind {
    return this.#kind;
  }

  /**
   * What another process passes to the matching opener to reach the same memory: the file
   * path, the shm name (`/name`), the System V key as a string, or the memfd's
   * `/proc/PID/fd/N` path.
   */
  get name(): string {
    return this.#name;
  }

  /** Mapped bytes. */
  get size(): number {
    return this.#open().size;
  }

  /** Whether {@link SharedRegion.close} has run. */
  get closed(): boolean {
    return this.#mapping === undefined;
  }

  /** Copies `length` bytes starting at `offset` out of the region. */
  read(offset: number, length: number): Uint8Array {
    const mapping = this.#open();
    this.#checkRange(offset, length, mapping.size);
    return mapping.bytes.slice(offset, offset + length);
  }

  /** Copies `bytes` into the region at `offset`. */
  write(offset: number, bytes: Uint8Array): void {
    const mapping = this.#open();
    this.#checkRange(offset, bytes.byteLength, mapping.size);
    mapping.bytes.set(bytes, offset);
  }

  /** Atomically reads the 32-bit word at `offset` (a multiple of 4). */
  loadInt32(offset: number): number {
    return Atomics.load(this.#words(offset), offset >> 2);
  }

  /** Atomically writes the 32-bit word at `offset`. */
  storeInt32(offset: number, value: number): void {
    Atomics.store(this.#words(offset), offset >> 2, value);
  }

  /** Atomically adds to the 32-bit word at `offset`; returns the previous value. */
  addInt32(offset: number, delta: number): number {
    return Atomics.add(this.#words(offset), offset >> 2, delta);
  }

  /** Atomic compare-and-swap on the 32-bit word at `offset`; returns the value found. */
  compareExchangeInt32(offset: number, expected: number, replacement: number): number {
    return Atomics.compareExchange(this.#words(offset), offset >> 2, expected, replacement);
  }

  /**
   * Sleeps while the 32-bit word at `offset` holds `expected`, until another process (or this
   * one) calls {@link SharedRegion.notifyInt32} on it: `Atomics.waitAsync` across processes,
   * built on the futex syscall. Resolves `"ok"` when woken, `"not-equal"` when the word already
   * differed and `"timed-out"` when the timeout ran out. The event loop stays free meanwhile.
   */
  async waitInt32(
    offset: number,
    expected: number,
    options: RegionWaitOptions = {},
  ): Promise<"ok" | "not-equal" | "timed-out"> {
    const mapping = this.#open();
    this.#words(offset);
    const { signal, timeout } = options;
    if (signal?.aborted) throw abortReason(signal);
    const result = await mapping.wait(offset, expected | 0, { timeoutMs: timeout, signal });
    if (signal?.aborted) throw abortReason(signal);
    return result;
  }

  /** Wakes up to `count` waiters (default: all) on the word at `offset`; returns how many woke. */
  notifyInt32(offset: number, count?: number): number {
    this.#words(offset);
    return this.#open().wake(offset, count);
  }

  /**
   * Flushes the region to its backing file with msync(2). Only file regions have a file that
   * outlives the machine's memory; for the others this is cheap and harmless.
   */
  sync(options: { async?: boolean } = {}): void {
    this.#open().sync(this.#name, options);
  }

  /**
   * Removes the region's name (the file, the shm name, the System V key) so no new process can
   * open it; processes that have it mapped keep it until they close. A file is removed only
   * while its path still refers to the file that was opened. A memfd has no name: no-op.
   */
  unlink(): void {
    this.#open();
    this.#remove();
  }

  /** Unmaps the region and releases its fd; safe to call more than once. */
  close(): void {
    if (this.#mapping === undefined) return;
    this.#mapping.close();
    this.#mapping = undefined;
    this.#release?.();
  }

  /** Same as {@link SharedRegion.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** @internal The mapping, for the library's own structures built on a region. */
  [internal](): Mapping {
    return this.#open();
  }

  #open(): Mapping {
    if (this.#mapping === undefined) {
      throw new Deno.errors.BadResource(`The region ${JSON.stringify(this.#name)} is closed`);
    }
    return this.#mapping;
  }

  #words(offset: number): Int32Array {
    const mapping = this.#open();
    if (!Number.isInteger(offset) || offset % 4 !== 0) {
      throw new RangeError(`Offset ${offset} is not a multiple of 4`);
    }
    this.#checkRange(offset, 4, mapping.size);
    return mapping.words;
  }

  #checkRange(offset: number, length: number, size: number): void {
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
      offset + length > size
    ) {
      throw new RangeError(
        `Bytes ${offset}..${offset + length} are outside the region ${
          JSON.stringify(this.#name)
        } of ${size} bytes`,
      );
    }
  }
}

/** The mapping behind a region, for modules of this library only. */
export function mappingOf(region: SharedRegion): Mapping {
  return region[internal]();
}

function validateSize(size: number | undefined, action: string, subject: string): void {
  if (size === undefined) return;
  if (!Number.isSafeInteger(size) || size < 1 || size > MAX_REGION_SIZE) {
    throw new RangeError(
      `Cannot ${action} ${JSON.stringify(subject)}: size ${size} is not a whole number of bytes ` +
        `from 1 to ${MAX_REGION_SIZE}`,
    );
  }
}

function describeOwner(uid: number): string {
  return `it belongs to uid ${uid}, not to this process's uid ${posix.effectiveUid()}`;
}

/**
 * Decides how many bytes to map from an fd whose inode has passed the type and owner checks,
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
  if (created) {
    posix.truncateFd(fd, options.size as number, subject);
    return options.size as number;
  }
  if (stat.size === 0 && !options.create) {
    throw failure(
      Deno.errors.InvalidData,
      action,
      subject,
      "it is empty (0 bytes); open it with create: true and a size to initialise it",
    );
  }
  if (options.size === undefined) {
    if (stat.size === 0) {
      throw failure(Deno.errors.InvalidData, action, subject, "it is empty and no size was given");
    }
    if (stat.size > MAX_REGION_SIZE) {
      throw failure(
        RangeError,
        action,
        subject,
        `its size ${stat.size} exceeds ${MAX_REGION_SIZE}`,
      );
    }
    return stat.size;
  }
  if (stat.size < options.size) posix.truncateFd(fd, options.size, subject);
  return options.size;
}

function requireSizeToCreate(options: RegionOptions, action: string, subject: string): void {
  validateSize(options.size, action, subject);
  if (options.create && options.size === undefined) {
    throw new TypeError(`Cannot ${action} ${JSON.stringify(subject)}: create needs a size`);
  }
  if (options.exclusive && !options.create) {
    throw new TypeError(`Cannot ${action} ${JSON.stringify(subject)}: exclusive needs create`);
  }
}

function dirname(path: string): string {
  const cut = path.replace(/\/+$/, "").lastIndexOf("/");
  if (cut < 0) return ".";
  return cut === 0 ? "/" : path.slice(0, cut);
}

/**
 * Refuses a directory where another user could swap the file under us: writable by others
 * without the sticky bit, or owned by someone who is neither us nor root.
 */
export function checkPrivateDirectory(path: string, action: string, subject: string): void {
  const directory = dirname(path);
  const stat = posix.statPath(directory, { follow: true });
  if (stat === undefined) {
    throw failure(
      Deno.errors.NotFound,
      action,
      subject,
      `its directory ${directory} does not exist`,
    );
  }
  if (stat.type !== "directory") {
    throw failure(Deno.errors.NotADirectory, action, subject, `${directory} is not a directory`);
  }
  const uid = posix.effectiveUid();
  if (stat.uid !== uid && stat.uid !== 0) {
    throw failure(
      Deno.errors.PermissionDenied,
      action,
      subject,
      `its directory ${directory} belongs to uid ${stat.uid}`,
    );
  }
  if ((stat.permissions & 0o022) !== 0 && (stat.permissions & C.S_ISVTX) === 0) {
    throw failure(
      Deno.errors.PermissionDenied,
      action,
      subject,
      `its directory ${directory} is writable by other users and not sticky`,
    );
  }
}

/** Refuses any inode that is not a regular file of ours. */
export function checkOwnRegularFile(stat: posix.FileStat, action: string, subject: string): void {
  if (stat.type === "symlink") {
    throw failure(
      Deno.errors.FilesystemLoop,
      action,
      subject,
      "it is a symbolic link; refusing to follow it",
    );
  }
  if (stat.type === "directory") {
    throw failure(Deno.errors.IsADirectory, action, subject, "it is a directory");
  }
  if (stat.type !== "file") {
    throw failure(
      Deno.errors.InvalidData,
      action,
      subject,
      `it is a ${stat.type}, not a regular file`,
    );
  }
  if (stat.uid !== posix.effectiveUid()) {
    throw failure(Deno.errors.PermissionDenied, action, subject, describeOwner(stat.uid));
  }
}

const OPEN_FLAGS = C.O_RDWR | C.O_CLOEXEC | C.O_NOCTTY | C.O_NONBLOCK;

/**
 * Opens `fd`-backed shared memory through `openFd(flags)`: tries an exclusive create first so
 * it knows whether it made the inode, then checks, sizes and maps it.
 */
function openFdRegion(
  kind: "file" | "posix",
  name: string,
  options: RegionOptions,
  action: string,
  openFd: (flags: number) => number,
  removeName: () => void,
): SharedRegion {
  let fd: number;
  let created = false;
  if (options.create) {
    try {
      fd = openFd(C.O_CREAT | C.O_EXCL);
      created = true;
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists) || options.exclusive) throw error;
      fd = openFd(0);
    }
  } else {
    fd = openFd(0);
  }
  try {
    const stat = posix.statFd(fd, name);
    checkOwnRegularFile(stat, action, name);
    const size = settleSize(fd, stat, options, created, action, name);
    const mapping = Mapping.map(fd, size, name);
    const identity = stat.identity;
    return new SharedRegion(internal, {
      kind,
      name,
      mapping,
      remove: kind === "file"
        ? () => {
          const now = posix.statPath(name);
          if (now?.identity !== identity) {
            throw failure(
              Deno.errors.NotFound,
              "remove region file",
              name,
              "the path no longer refers to the file this region mapped",
            );
          }
          removeName();
        }
        : removeName,
    });
  } catch (error) {
    if (created) removeName();
    throw error;
  } finally {
    posix.closeFd(fd);
  }
}

/**
 * Opens a region backed by a regular file, the way the original C programs shared
 * `/tmp/data.dat`. The file is created with mode 0600 and never opened through a symlink;
 * directories, FIFOs, devices, sockets and files of other users are refused, as is a directory
 * where other users could replace the file. A shorter existing file is grown to `size`, never
 * shrunk.
 *
 * @example
 * ```ts
 * using region = openFileRegion("/tmp/data.dat", { create: true, size: 256 });
 * region.write(0, new TextEncoder().encode("1\n\0"));
 * ```
 */
export function openFileRegion(path: string, options: RegionOptions = {}): SharedRegion {
  const action = "open region file";
  if (path === "") throw new TypeError("The region file path is empty");
  requireSizeToCreate(options, action, path);
  checkPrivateDirectory(path, action, path);
  const existing = posix.statPath(path);
  if (existing !== undefined) checkOwnRegularFile(existing, action, path);
  return openFdRegion(
    "file",
    path,
    options,
    action,
    (extra) => posix.openPath(path, OPEN_FLAGS | C.O_NOFOLLOW | extra, 0o600, action),
    () => posix.unlinkPath(path, "remove region file"),
  );
}

/** `name` as `shm_open` wants it: one leading slash and no other. */
export function normalizeShmName(name: string): string {
  const normalized = name.startsWith("/") ? name : `/${name}`;
  if (!/^\/[^/\0]{1,250}$/.test(normalized)) {
    throw new TypeError(
      `Invalid shared memory name ${
        JSON.stringify(name)
      }: 1 to 250 characters, no "/" after the first`,
    );
  }
  return normalized;
}

/**
 * Opens a POSIX shared-memory object (`shm_open`, visible in `/dev/shm`). The name may be given
 * with or without its leading `/`. Created 0600; objects of other users are refused.
 *
 * @example
 * ```ts
 * using region = openShmRegion("/led-state", { create: true, size: 4096 });
 * // elsewhere: openShmRegion("/led-state")
 * ```
 */
export function openShmRegion(name: string, options: RegionOptions = {}): SharedRegion {
  const action = "open shared memory";
  const shmName = normalizeShmName(name);
  requireSizeToCreate(options, action, shmName);
  return openFdRegion(
    "posix",
    shmName,
    options,
    action,
    (extra) => posix.shmOpen(shmName, C.O_RDWR | C.O_NOFOLLOW | C.O_CLOEXEC | extra, 0o600),
    () => posix.shmUnlink(shmName),
  );
}

/**
 * Removes a POSIX shared-memory name if it exists and belongs to this user; returns whether it
 * was there. Anything else is refused, never removed.
 */
export function removeShm(name: string): boolean {
  const shmName = normalizeShmName(name);
  let fd: number;
  try {
    fd = posix.shmOpen(shmName, C.O_RDONLY | C.O_NOFOLLOW | C.O_CLOEXEC, 0);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
  try {
    checkOwnRegularFile(posix.statFd(fd, shmName), "remove shared memory", shmName);
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
 * @example
 * ```ts
 * using region = openSysvRegion(0x4d4d4150, { create: true, size: 4096 });
 * ```
 */
export function openSysvRegion(key: number, options: RegionOptions = {}): SharedRegion {
  const action = "open System V shared memory";
  const subject = `key ${key}`;
  if (!Number.isInteger(key) || key === 0 || key < -(2 ** 31) || key >= 2 ** 31) {
    throw new TypeError(`Invalid System V key ${key}: a non-zero 32-bit integer`);
  }
  requireSizeToCreate(options, action, subject);
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
    if (stat.uid !== posix.effectiveUid()) {
      throw failure(Deno.errors.PermissionDenied, action, subject, describeOwner(stat.uid));
    }
    const size = options.size ?? stat.size;
    if (size > stat.size) {
      throw failure(
        Deno.errors.InvalidData,
        action,
        subject,
        `the segment has ${stat.size} bytes, fewer than the ${size} asked for (System V segments cannot grow)`,
      );
    }
    const mapping = Mapping.attach(id, size, subject);
    return new SharedRegion(internal, {
      kind: "sysv",
      name: String(key),
      mapping,
      remove: () => posix.sysvRemove(id, subject),
    });
  } catch (error) {
    if (created) posix.sysvRemove(id, subject);
    throw error;
  }
}

/** Options for {@link createMemfdRegion}. */
export interface MemfdOptions {
  /** Bytes to allocate and map. */
  size: number;
  /** The memfd's name, shown in `/proc/PID/fd` as `/memfd:NAME`; default `mmap-ipc`. */
  label?: string;
}

/**
 * Creates anonymous shared memory (`memfd_create`) that has no name in any directory. Children
 * reach it through its {@link SharedRegion.name}, `/proc/PID/fd/N`, with
 * {@link openMemfdRegion}; it disappears when the last process closes it.
 *
 * @example
 * ```ts
 * using region = createMemfdRegion({ size: 4096 });
 * const child = new Deno.Command(Deno.execPath(), { args: ["run", "-A", "child.ts", region.name] });
 * ```
 */
export function createMemfdRegion(options: MemfdOptions): SharedRegion {
  const label = options.label ?? "mmap-ipc";
  validateSize(options.size, "create memfd", label);
  if (options.size === undefined) throw new TypeError("createMemfdRegion() needs a size");
  const fd = posix.memfdCreate(label);
  try {
    posix.truncateFd(fd, options.size, label);
    const mapping = Mapping.map(fd, options.size, label);
    return new SharedRegion(internal, {
      kind: "memfd",
      name: `/proc/${posix.processId()}/fd/${fd}`,
      mapping,
      remove: () => {},
      release: () => posix.closeFd(fd),
    });
  } catch (error) {
    posix.closeFd(fd);
    throw error;
  }
}

/**
 * Opens a memfd another process created, through the `/proc/PID/fd/N` path it handed over
 * (its region's {@link SharedRegion.name}). Anything but a memfd of this user is refused.
 */
export function openMemfdRegion(
  path: string,
  options: Omit<RegionOptions, "create" | "exclusive"> = {},
): SharedRegion {
  const action = "open memfd";
  if (!/^\/proc\/(\d+|self)\/fd\/\d+$/.test(path)) {
    throw new TypeError(`Invalid memfd path ${JSON.stringify(path)}: expected /proc/PID/fd/N`);
  }
  validateSize(options.size, action, path);
  const target = posix.readLink(path);
  if (!target.startsWith("/memfd:")) {
    throw failure(Deno.errors.InvalidData, action, path, `it is ${target}, not a memfd`);
  }
  // /proc/PID/fd/N is a symlink by design: following it is the point, and it was checked above.
  const fd = posix.openPath(path, C.O_RDWR | C.O_CLOEXEC, 0, action);
  try {
    const stat = posix.statFd(fd, path);
    if (stat.uid !== posix.effectiveUid()) {
      throw failure(Deno.errors.PermissionDenied, action, path, describeOwner(stat.uid));
    }
    const size = options.size ?? stat.size;
    if (size > stat.size || size === 0) {
      throw failure(
        Deno.errors.InvalidData,
        action,
        path,
        `the memfd has ${stat.size} bytes, asked for ${size}`,
      );
    }
    return new SharedRegion(internal, {
      kind: "memfd",
      name: path,
      mapping: Mapping.map(fd, size, path),
      remove: () => {},
    });
  } finally {
    posix.closeFd(fd);
  }
}
