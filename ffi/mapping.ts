/**
 * One `mmap` or `shmat` mapping and the futex calls on words inside it. The pointer never leaves
 * this module. This is the raw layer: it knows nothing about who may still use the memory; the
 * owner in `lib/memory.ts` decides when {@link Mapping.retire} and {@link Mapping.release} run.
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
} from "./errno.ts";
import { futexHub, type FutexSettle, type FutexWait } from "./futex_hub.ts";
import { type FastLibc, fastLibc, libc } from "./libc.ts";
import { wakeFutex } from "./futex_wake.ts";
import * as posix from "./posix.ts";
import { guardCapacity, guardRange, type RangeGuard } from "./sigbus_guard.ts";
import { timespec } from "./timespec.ts";

/** FUTEX_WAKE's count for every waiter (INT_MAX). */
const WAKE_ALL = 0x7fff_ffff;
/**
 * The futex words whose addresses a mapping keeps: more than a cell or a ring waits on (a few
 * each), far fewer than the words of a large region a caller may wait on or wake one by one.
 */
const MAX_CACHED_WORDS = 64;

/**
 * The most mappings this module holds open at once in one JavaScript thread (the process, or one
 * of its Workers, each of which loads the module afresh), System V attachments included: three
 * quarters of the kernel's default limit on mappings (`vm.max_map_count`, 65,530), as many as the
 * SIGBUS guard holds. At the kernel's limit every mmap of the process fails, V8's own too, and V8
 * then aborts the process; short of it, an open is refused instead (see also {@link RESERVE}).
 * A retired range (never unmapped: see `lib/memory.ts`) is not counted here: its private pages
 * need no guard, and the kernel merges it with the retired ranges beside it (49,150 regions
 * opened, lent and closed in a loop left under 500 mappings in `/proc/self/maps`), so counted
 * here a process could open only so many regions in its life (a range retired into a memfd, under
 * `vm.overcommit_memory=2`, is merged with none). What retired ranges do cost, the count of the
 * process's mappings below sees.
 */
export const MAX_MAPPINGS = 49_150;

/**
 * Mappings an open leaves below the kernel's limit for the whole process, counted in
 * `/proc/self/maps` every {@link LOOK_EVERY} opens of a thread (and at every open close to the
 * limit): for V8, the pages the SIGBUS guard splits off, and what the process's other threads
 * map before they next count. It is what keeps Workers, each under {@link MAX_MAPPINGS}, from
 * reaching the limit together.
 */
const RESERVE = 8192;
const LOOK_EVERY = 1024;
/** The kernel's default `vm.max_map_count`, where it cannot be read. */
const DEFAULT_MAX_MAP_COUNT = 65_530;

/** Mappings this module holds open now in this thread: mapped, not retired or released. */
let held = 0;
/** Opens left before the next count of the process's mappings. */
let untilLook = 0;
let kernelLimit: number | undefined;
/** `vm.overcommit_memory` is 2: kept once read (see {@link Mapping.retire}). */
let overcommitNever: boolean | undefined;

/**
 * The share of the process's address space the library leaves to everything else: V8, the
 * allocator, other threads. Retired ranges keep theirs for the life of the process (a loop that
 * opens a 1 GiB region, lends a view of it and closes it takes 1 GiB each time), and at the end of
 * the address space allocations fail, and V8 aborts the process when it cannot reserve what it
 * needs (a Worker's code range did so in a probe).
 */
const ADDRESS_SPACE_KEPT = 1 / 4;
/** Bytes this thread may still map before it looks at the process's address space again. */
let addressBudget = 0;
/** The process's usable address space: the top of user space, or a lower `RLIMIT_AS`. */
let addressLimit: number | undefined;

/** Throws unless `bytes` more of address space leave {@link ADDRESS_SPACE_KEPT} of it free. */
function checkAddressSpace(bytes: number, action: string, subject: string): void {
  if (bytes <= addressBudget) {
    addressBudget -= bytes;
    return;
  }
  const space = posix.addressSpaceUse();
  if (space === undefined) return; // without /proc, the kernel's ENOMEM is what says it
  // The main stack starts just below the top of user space (2^47 on x86-64, 2^39 or 2^48 on
  // aarch64, by the kernel's configuration).
  addressLimit ??= Math.min(
    2 ** Math.ceil(Math.log2(space.stackStart)),
    posix.addressSpaceRlimit() ?? Infinity,
  );
  const room = addressLimit * (1 - ADDRESS_SPACE_KEPT) - space.used;
  if (bytes > room) {
    throw new Error(
      `Cannot ${action} ${JSON.stringify(subject)}: its ${sized(bytes)} would take the ` +
        `process's address space from ${sized(space.used)} past three quarters of the ` +
        `${sized(addressLimit)} it has (at the end allocations fail, and V8 aborts the process ` +
        "when it cannot reserve what it needs); a region that ever lent a view keeps its " +
        "address range after it closes, for the life of the process, so reuse regions rather " +
        "than open one for each use",
    );
  }
  // Half of what is left: other threads map from the same address space meanwhile.
  addressBudget = (room - bytes) / 2;
}

/** `bytes` in the largest unit it holds one of, to a tenth, for messages. */
function sized(bytes: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (unit < units.length - 1 && bytes >= 2 ** (10 * (unit + 1))) unit++;
  return `${Number((bytes / 2 ** (10 * unit)).toFixed(1))} ${units[unit]}`;
}

/** Throws unless one more mapping of `bytes` fits, in this thread and in the process. */
function checkRoom(action: string, subject: string, bytes: number): void {
  if (held >= MAX_MAPPINGS) tooMany(action, subject);
  checkAddressSpace(bytes, action, subject);
  if (--untilLook > 0) return;
  // Kept once read: a look that could not read it (no fd left) takes the default this time only.
  kernelLimit ??= posix.maxMapCount();
  const limit = kernelLimit ?? DEFAULT_MAX_MAP_COUNT;
  const count = posix.mappingCount();
  if (count === undefined) {
    untilLook = LOOK_EVERY;
    return;
  }
  const room = limit - RESERVE - count;
  if (room > 0) {
    untilLook = Math.min(LOOK_EVERY, room);
    return;
  }
  throw new Error(
    `Cannot ${action} ${JSON.stringify(subject)}: the process has ${count} mappings, ` +
      `${limit - count} short of the kernel's limit (vm.max_map_count, ${limit}), ` +
      "where every mmap of the process fails and V8 aborts it; close some regions " +
      "(in this thread or its Workers)",
  );
}

function tooMany(action: string, subject: string): never {
  throw new Error(
    `Cannot ${action} ${JSON.stringify(subject)}: this thread holds ${held} mappings of shared ` +
      "memory open, as many as one thread may before the kernel's limit on mappings; close some",
  );
}

/** How many mappings this module holds open now in this thread (for tests). */
export function heldMappings(): number {
  return held;
}

/** How a futex wait ended: woken (or spuriously), the word already differed, or time ran out. */
export type WaitResult = "ok" | "not-equal" | "timed-out";

/** One `mmap` or `shmat` mapping; see the module description. */
export class Mapping {
  readonly #pointer: Deno.PointerObject;
  readonly #size: number;
  /**
   * The bytes the kernel mapped, which {@link Mapping.retire} and {@link Mapping.release} must
   * cover: `shmat` maps the whole segment, however few of its bytes are used.
   */
  readonly #extent: number;
  readonly #attached: boolean;
  /** mapped: the shared memory; retired: private pages in its place; released: unmapped. */
  #state: "mapped" | "retired" | "released" = "mapped";
  /**
   * The address of each futex word used lately, so that a wait or wake allocates no pointer:
   * at most {@link MAX_CACHED_WORDS}, as a caller may use any of the mapping's words.
   */
  readonly #words = new Map<number, Deno.PointerValue>();
  /** The range's SIGBUS guard (see sigbus_guard.ts), ended before the range is unmapped. */
  #guard: RangeGuard | undefined;

  private constructor(
    pointer: Deno.PointerObject,
    size: number,
    attached: boolean,
    extent: number = size,
  ) {
    this.#pointer = pointer;
    this.#size = size;
    this.#attached = attached;
    this.#extent = extent;
  }

  /**
   * mmap(2) `size` bytes of `fd` read-write and shared, guarded against SIGBUS (see
   * sigbus_guard.ts); `subject` names it in errors. Even a memfd sealed against shrinking is
   * guarded: its pages are only taken when first touched, and where memory is not overcommitted
   * a page the kernel cannot take is a SIGBUS too.
   */
  static map(fd: number, size: number, subject: string): Mapping {
    checkRoom("map", subject, size);
    const map = (): Deno.PointerValue =>
      libc().mmap(null, BigInt(size), C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED, fd, 0n);
    let pointer = map();
    if (mapFailed(pointer)) {
      const retried = retryFailed(map, mapFailed);
      if (!retried.ok) throw osError("map", subject, retried.errno);
      pointer = retried.result;
    }
    const mapping = new Mapping(pointer as Deno.PointerObject, size, false);
    held++;
    // A file or shm object another process shrinks must not kill this one (see sigbus_guard.ts).
    const guarded = guardRange(Deno.UnsafePointer.value(pointer), size);
    if (guarded === null) {
      mapping.release();
      throw new Error(
        `Cannot map ${JSON.stringify(subject)}: ${guardCapacity()} mappings that another process ` +
          "could shrink are open in this process, as many as its SIGBUS guard can hold; close some",
      );
    }
    mapping.#guard = guarded;
    return mapping;
  }

  /** shmat(2) a System V segment of `segmentSize` bytes and use its first `size` bytes. */
  static attach(id: number, size: number, segmentSize: number, subject: string): Mapping {
    checkRoom("attach", subject, segmentSize);
    const attach = (): Deno.PointerValue => libc().shmat(id, null, 0);
    let pointer = attach();
    if (mapFailed(pointer)) {
      const retried = retryFailed(attach, mapFailed);
      if (!retried.ok) throw osError("attach", subject, retried.errno);
      pointer = retried.result;
    }
    held++;
    return new Mapping(pointer as Deno.PointerObject, size, true, segmentSize);
  }

  /** The usable length in bytes. */
  get size(): number {
    return this.#size;
  }

  /**
   * The address of the byte at `offset`, for a Worker of `ffi/` that reads the mapping itself;
   * the owner keeps the mapping until that Worker has stopped.
   */
  address(offset: number): bigint {
    this.#live();
    return Deno.UnsafePointer.value(this.#pointer) + BigInt(offset);
  }

  /**
   * A new `ArrayBuffer` over `length` bytes at `offset`. Whoever takes one must detach it
   * (`transfer(0)`) before the mapping is released.
   */
  buffer(offset = 0, length: number = this.#size - offset): ArrayBuffer {
    this.#live();
    return Deno.UnsafePointerView.getArrayBuffer(this.#pointer, length, offset);
  }

  /** msync(2) of the whole mapping; `subject` names it in errors. */
  sync(asynchronous: boolean, subject: string): void {
    this.#live();
    const pointer = this.#pointer;
    attempt(
      () => libc().msync(pointer, BigInt(this.#size), asynchronous ? C.MS_ASYNC : C.MS_SYNC),
      "sync",
      subject,
    );
  }

  /**
   * Sleeps on the 32-bit word at `byteOffset` while it holds `expected`, on one of Deno's worker
   * threads so the event loop stays free, beside the process's other waits (see
   * `futex_hub.ts`). Calls `settle` with 0n when woken, -1n otherwise: the caller judges the
   * outcome by the word and the clock. Returns the wait, for {@link Mapping.cancelWait}.
   * `wakesWithoutChange`: see `FutexHub.wait`.
   */
  futexWait(
    byteOffset: number,
    expected: number,
    timeoutMs: number | undefined,
    settle: FutexSettle,
    wakesWithoutChange = false,
  ): FutexWait {
    this.#live();
    return futexHub().wait(
      Deno.UnsafePointer.value(this.#word(byteOffset)),
      expected,
      timeoutMs,
      settle,
      wakesWithoutChange,
    );
  }

  /**
   * Ends a wait of {@link Mapping.futexWait} without waking its word (see `FutexHub.cancel`):
   * true when it returns at once, false when its call must still be made to return by a wake.
   */
  cancelWait(wait: FutexWait): boolean {
    return futexHub().cancel(wait);
  }

  /** Wakes up to `count` waiters on the word at `byteOffset`, in any process; returns how many. */
  futexWake(byteOffset: number, count: number): number {
    this.#live();
    return wakeFutex(this.#word(byteOffset), count);
  }

  /**
   * Puts memory of this process's own in place of the shared memory at the same addresses, in one
   * call (`mmap` with `MAP_FIXED`): anything that still points into the range (a buffer that
   * could not be detached) now touches that, never the file or another mapping. The range stays
   * reserved until {@link Mapping.release}. First private zero pages with `MAP_NORESERVE`, which
   * take no commit charge (without it each retire charged the whole range for good, and the
   * kernel refused a range larger than RAM + swap). Where the kernel charges them all the same
   * (`vm.overcommit_memory=2`) or refuses them (a low `RLIMIT_DATA`), a fresh memfd that nothing
   * else maps, mapped shared, whose pages are charged only once touched. Where neither can be had
   * (no fd left as well), the shared mapping stays, and this throws, saying so: unmapped, or made
   * inaccessible, the range would be a fault for a moved buffer that touches it, and a mapping
   * made later could land there. `subject` names the memory in that error.
   */
  retire(subject: string): void {
    if (this.#state !== "mapped") return;
    // Before Linux 6.12 a MAP_FIXED mmap refused its commit charge had unmapped the range already:
    // where every private page is charged, the memfd is tried alone.
    overcommitNever ??= posix.overcommitNever();
    const failures: string[] = [];
    if (overcommitNever !== true) {
      const errno = this.#replace(
        C.PROT_READ | C.PROT_WRITE,
        C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED | C.MAP_NORESERVE,
        -1,
      );
      if (errno === undefined) return this.#retired();
      failures.push(`private pages (${errnoName(errno)})`);
    }
    const errno = this.#replaceWithMemfd();
    if (errno === undefined) return this.#retired();
    failures.push(`a memfd of its own (${errnoName(errno)})`);
    throw new Error(
      `Cannot retire the mapping of ${JSON.stringify(subject)}: neither ${
        failures.join(" nor ")
      } could take its place, so the shared memory stays mapped in this process for good, and ` +
        "a buffer moved away from a view of it (transfer()) still reaches it",
    );
  }

  /** mmap(2) over the whole range with `MAP_FIXED`; the errno when it failed. */
  #replace(protection: number, flags: number, fd: number): number | undefined {
    const map = (): Deno.PointerValue =>
      libc().mmap(this.#pointer, BigInt(this.#extent), protection, flags, fd, 0n);
    if (!mapFailed(map())) return undefined;
    const retried = retryFailed(map, mapFailed);
    return retried.ok ? undefined : retried.errno;
  }

  /**
   * {@link Mapping.retire} with a new memfd of the range's size, mapped shared: a memfd is charged
   * page by page as it is touched, whatever `vm.overcommit_memory` says. Its fd is closed at once;
   * nothing else can reach it. The errno when it failed.
   */
  #replaceWithMemfd(): number | undefined {
    let fd: number;
    try {
      fd = posix.memfdCreate("mmap-ipc-retired");
    } catch (error) {
      return (error as OsError).errno;
    }
    try {
      posix.truncateFd(fd, this.#extent, "mmap-ipc-retired");
      return this.#replace(C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED | C.MAP_FIXED, fd);
    } catch (error) {
      return (error as OsError).errno;
    } finally {
      posix.closeFd(fd);
    }
  }

  #retired(): void {
    // Nothing else maps the memory in its place, nor can shrink it: the guard's slot is free for
    // another range (on a machine out of memory a memfd's page may still fail when first touched,
    // but so would the private page the guard put there).
    this.#guard?.end();
    this.#state = "retired";
    held--;
  }

  /** Unmaps the range (detaches the segment); safe to call twice. */
  release(): void {
    if (this.#state === "released") return;
    this.#guard?.end();
    if (this.#attached && this.#state === "mapped") libc().shmdt(this.#pointer);
    else libc().munmap(this.#pointer, BigInt(this.#extent));
    if (this.#state === "mapped") held--;
    this.#state = "released";
  }

  /**
   * How many pages of the mapping another process cut off by shrinking its file (each became a
   * private zero-filled page when touched, instead of a SIGBUS; see `sigbus_guard.ts`).
   */
  get lostPages(): number {
    return this.#guard?.lostPages() ?? 0;
  }

  /** Whether the shared memory is still mapped (not retired or released). */
  get isMapped(): boolean {
    return this.#state === "mapped";
  }

  /**
   * A {@link FutexWord} for the word at `byteOffset`: synchronous waits and wake-ups with the
   * address (and a wait's timeout) prepared once, for one word used again and again.
   */
  futexWord(byteOffset: number): FutexWord {
    this.#live();
    return new FutexWord(this, this.#word(byteOffset));
  }

  #word(byteOffset: number): Deno.PointerValue {
    let pointer = this.#words.get(byteOffset);
    if (pointer === undefined) {
      // Started again when full: the words in use now are cached again at their next use.
      if (this.#words.size >= MAX_CACHED_WORDS) this.#words.clear();
      pointer = Deno.UnsafePointer.offset(this.#pointer, byteOffset);
      this.#words.set(byteOffset, pointer);
    }
    return pointer;
  }

  #live(): void {
    if (this.#state !== "mapped") {
      // Only a bug in this library gets here: its owner checks before every call.
      throw new Deno.errors.BadResource("The mapping was released");
    }
  }
}

/**
 * One futex word of a {@link Mapping}: synchronous waits on this thread, and wake-ups. Everything
 * a call needs is prepared here once, so a wait is a compare, one FFI call and a compare, small
 * enough for V8 to inline into the caller's optimised loop (where the FFI call is a fast call:
 * the first wait compiles libc's fast calls), and a wake is one check and one call to
 * `wakeFutex()`: in V8's lower tiers, where a process that writes now and then runs, each call and
 * lookup on the way to the syscall is time a sleeping reader waits for.
 */
export class FutexWord {
  readonly #mapping: Mapping;
  readonly #address: Deno.PointerValue;
  // Kept from the first wait: a wait made now and then runs cold, and each call and lookup on the
  // way to the syscall costs.
  #syscall: FastLibc["syscall"] | undefined;
  readonly #timeout = new BigInt64Array(2);
  readonly #timeoutAddress = Deno.UnsafePointer.of(this.#timeout);
  #timeoutMs = -1;

  /** @ignore Made by {@link Mapping.futexWord}. */
  constructor(mapping: Mapping, address: Deno.PointerValue) {
    this.#mapping = mapping;
    this.#address = address;
  }

  /** Sleeps while the word holds `expected`, for at most `timeoutMs` (finite, not negative). */
  wait(expected: number, timeoutMs: number): WaitResult {
    if (timeoutMs !== this.#timeoutMs || !this.#mapping.isMapped) this.#prepare(timeoutMs);
    const result = (this.#syscall ?? this.#compile())(
      C.SYS_futex,
      this.#address,
      C.FUTEX_WAIT,
      expected,
      this.#timeoutAddress,
      null,
      0,
    );
    return result === 0n ? "ok" : waitFailure();
  }

  /**
   * {@link FutexWord.wait} through Deno's generic call: for a wait made rarely (an opener waiting
   * for another to finish a header), which should not compile the fast calls for the process.
   * Written out beside `wait()`, not shared with it: a call site that saw both functions would
   * no longer be a fast call in `wait()`'s optimised code.
   */
  waitRarely(expected: number, timeoutMs: number): WaitResult {
    if (timeoutMs !== this.#timeoutMs || !this.#mapping.isMapped) this.#prepare(timeoutMs);
    const result = libc().syscall(
      C.SYS_futex,
      this.#address,
      C.FUTEX_WAIT,
      expected,
      this.#timeoutAddress,
      null,
      0,
    );
    return result === 0n ? "ok" : waitFailure();
  }

  /** Wakes every waiter on the word, in any process; returns how many woke. */
  wakeAll(): number {
    // Only a bug in this library gets here: its owner checks before every call.
    if (!this.#mapping.isMapped) throw new Deno.errors.BadResource("The mapping was released");
    return wakeFutex(this.#address, WAKE_ALL);
  }

  /** The fast futex call, compiled by the first synchronous wait of the process. */
  #compile(): FastLibc["syscall"] {
    this.#syscall = fastLibc().syscall;
    return this.#syscall;
  }

  /** Sets the timeout of the waits to come, once the mapping is known to be there. */
  #prepare(timeoutMs: number): void {
    // Only a bug in this library gets here: its owner checks before every call.
    if (!this.#mapping.isMapped) throw new Deno.errors.BadResource("The mapping was released");
    timespec(timeoutMs, this.#timeout);
    this.#timeoutMs = timeoutMs;
  }
}

/** Whether mmap(2) or shmat(2) returned its failure value. */
export function mapFailed(pointer: Deno.PointerValue): boolean {
  return pointer === null || Deno.UnsafePointer.value(pointer) === C.MAP_FAILED;
}

/**
 * What a futex wait that returned -1 means, from errno. Not confirmed (see `retryFailed`): a
 * wrong value reads as a wake-up, and every caller looks at the word again after one.
 */
function waitFailure(): WaitResult {
  const errno = lastErrno();
  return errno === Errno.ETIMEDOUT ? "timed-out" : errno === Errno.EAGAIN ? "not-equal" : "ok";
}
