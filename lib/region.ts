/**
 * The shared region: memory that several processes map at once, with bounds-checked and atomic
 * access, cross-process waits, and views that are revoked when it closes. The functions that
 * open one live in `open_region.ts`.
 *
 * @module
 */

import { abortReason, failure, shown } from "./errors.ts";
import { byteCount, describeKind, unusableBytes } from "./byte_arrays.ts";
import { checkSignal, checkTimeout, NO_LIMIT_MS } from "./timeouts.ts";
import type { SharedMemory } from "./memory.ts";

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
  /**
   * Create the region when it does not exist (mode 0600). Without it the region must exist.
   *
   * @default {false}
   */
  create?: boolean;
  /**
   * With `create`, fail with `AlreadyExists` instead of opening an existing region.
   *
   * @default {false}
   */
  exclusive?: boolean;
}

/** Options for {@link SharedRegion.waitInt32}. */
export interface RegionWaitOptions {
  /**
   * Milliseconds before the wait resolves with `"timed-out"`, from 0. Default (and `Infinity`):
   * no limit.
   */
  timeout?: number;
  /** Rejects the wait with the signal's reason when aborted. */
  signal?: AbortSignal;
}

/** The largest region this library maps (1 TiB); anything larger is a mistake, not a plan. */
export const MAX_REGION_SIZE: number = 2 ** 40;

/** What the openers hand to the {@link SharedRegion} constructor. */
export interface RegionParts {
  kind: RegionKind;
  memory: SharedMemory;
  remove: () => void;
}

const constructing = Symbol("SharedRegion");
const memories = new WeakMap<SharedRegion, SharedMemory>();

/** Builds a region; for `open_region.ts` only. */
export function newRegion(parts: RegionParts): SharedRegion {
  return new SharedRegion(constructing, parts);
}

/** The memory owner behind a region, for the library's own structures built on it. */
export function memoryOf(region: SharedRegion): SharedMemory {
  const memory = memories.get(region);
  if (memory === undefined) throw new TypeError("Not a region opened by this library");
  memory.check();
  return memory;
}

/**
 * Memory shared between processes. Every access is bounds-checked; after
 * {@link SharedRegion.close} every method throws `Deno.errors.BadResource` naming the region,
 * every view it handed out has length 0, and everything built on it (state cells, ring ends) is
 * closed too.
 *
 * Open one with `openFileRegion`, `openShmRegion`, `openSysvRegion`, `createMemfdRegion` or
 * `openMemfdRegion`.
 */
export class SharedRegion {
  readonly #kind: RegionKind;
  readonly #memory: SharedMemory;
  readonly #remove: () => void;

  /** @ignore Not for direct use: call one of the `open...Region` functions. */
  constructor(token: symbol, parts: unknown) {
    if (token !== constructing) {
      throw new TypeError(
        "Use openFileRegion(), openShmRegion(), openSysvRegion() or a memfd function",
      );
    }
    const { kind, memory, remove } = parts as RegionParts;
    this.#kind = kind;
    this.#memory = memory;
    this.#remove = remove;
    memories.set(this, memory);
  }

  /** How the region was reached. */
  get kind(): RegionKind {
    return this.#kind;
  }

  /**
   * What another process passes to the matching opener to reach the same memory: the file
   * path, the shm name (`/name`), the System V key in hex as `ipcs` shows it (`0x4d4d0001`,
   * which `Number()` reads back), or the memfd's `/proc/PID/fd/N` path.
   */
  get name(): string {
    return this.#memory.name;
  }

  /** Mapped bytes. */
  get size(): number {
    this.#memory.check();
    return this.#memory.size;
  }

  /**
   * How many of the region's pages another process cut off by shrinking its file or shm object
   * (`truncate`, `echo >`): 0 while it is intact. Touching such a page would kill the process
   * with SIGBUS; instead it becomes a private zero-filled page, so reads there see zeros and
   * writes stay in this process. A sealed memfd (`createMemfdRegion()`) cannot be shrunk.
   *
   * @example
   * ```ts
   * import { createMemfdRegion } from "@mmap-ipc/mmap-ipc";
   *
   * using region = createMemfdRegion({ size: 4096 });
   * console.assert(region.lostPages === 0);
   * ```
   */
  get lostPages(): number {
    this.#memory.check();
    return this.#memory.lostPages;
  }

  /** Whether {@link SharedRegion.close} has run. */
  get closed(): boolean {
    return this.#memory.closed;
  }

  /** Copies `length` bytes starting at `offset` out of the region. */
  read(offset: number, length: number): Uint8Array {
    this.#range(offset, length);
    return this.#memory.bytes.slice(offset, offset + length);
  }

  /** Copies `target.length` bytes starting at `offset` into `target`, allocating nothing. */
  readInto(offset: number, target: Uint8Array): void {
    const length = this.#lengthOf(target, "target");
    this.#range(offset, length);
    target.set(this.#memory.bytes.subarray(offset, offset + length));
  }

  /** Copies `bytes` into the region at `offset`. */
  write(offset: number, bytes: Uint8Array): void {
    this.#range(offset, this.#lengthOf(bytes, "bytes"));
    this.#memory.bytes.set(bytes, offset);
  }

  /**
   * The bytes at `offset` in place, without copying: the returned array *is* the shared
   * memory. It is revoked (length 0) when the region closes, so it can never reach memory
   * that was let go. Use {@link SharedRegion.read} for a copy that outlives the region. A view
   * you let go of is collected like any array (the region holds it weakly), though not before
   * the task that made it ends: a loop making millions of views should yield now and then.
   */
  view(offset?: number, length?: number): Uint8Array<ArrayBuffer> {
    const from = offset ?? 0;
    const bytes = length ?? this.size - from;
    this.#range(from, bytes);
    // Weakly: a view the caller drops is collected, not kept until close.
    return new Uint8Array(this.#memory.lend(from, bytes, { weak: true }));
  }

  /** Atomically reads the 32-bit word at `offset` (a multiple of 4). */
  loadInt32(offset: number): number {
    return Atomics.load(this.#words(offset), offset / 4);
  }

  /**
   * Atomically writes the 32-bit word at `offset`: `value` is a whole number from -2^31 to
   * 2^32 - 1 (a `RangeError` otherwise, a `TypeError` for what is not a number).
   */
  storeInt32(offset: number, value: number): void {
    const words = this.#words(offset);
    Atomics.store(words, offset / 4, this.#int32(value, "value", "store into"));
  }

  /**
   * Atomically adds `delta` (checked as {@link SharedRegion.storeInt32}'s value) to the 32-bit
   * word at `offset`; returns the previous value.
   */
  addInt32(offset: number, delta: number): number {
    const words = this.#words(offset);
    return Atomics.add(words, offset / 4, this.#int32(delta, "delta", "add to"));
  }

  /**
   * Atomic compare-and-swap on the 32-bit word at `offset` (both values checked as
   * {@link SharedRegion.storeInt32}'s); returns the value found.
   */
  compareExchangeInt32(offset: number, expected: number, replacement: number): number {
    const words = this.#words(offset);
    return Atomics.compareExchange(
      words,
      offset / 4,
      this.#int32(expected, "expected value", "compare and exchange in"),
      this.#int32(replacement, "replacement", "compare and exchange in"),
    );
  }

  /**
   * Sleeps while the 32-bit word at `offset` holds `expected`, until another process (or this
   * one) calls {@link SharedRegion.notifyInt32} on it: `Atomics.waitAsync` across processes,
   * built on the futex syscall. Resolves `"ok"` when woken, `"not-equal"` when the word already
   * differed and `"timed-out"` when the timeout ran out; rejects with `BadResource` if the
   * region closes meanwhile. The event loop stays free.
   *
   * As with the futex syscall, a notify reaches only a wait that already sleeps (a moment after
   * this call), and `"ok"` can come without one. The process's waits share a few worker
   * threads: four of these waits at a time get one each, and sleep until notified. More share
   * one with the process's other waits: each of those ends when any wait of that call is woken,
   * as a notify of it could have been missed, and a notify in the microseconds while their shared
   * call is made again (a wait joining or leaving) can be lost, as can one in the moment any of
   * these calls is made again once its bound (10 s) passed. So change the word before notifying
   * (a wait then sees the new value and returns, whatever it missed), and look at the word again
   * after `"ok"`.
   *
   * @param [options={}] A timeout and an abort signal.
   */
  async waitInt32(
    offset: number,
    expected: number,
    options: RegionWaitOptions = {},
  ): Promise<"ok" | "not-equal" | "timed-out"> {
    options ??= {}; // null from JavaScript
    this.#words(offset);
    const { signal, timeout } = options;
    checkTimeout(timeout, "wait on region", this.name);
    checkSignal(signal, "wait on region", this.name);
    if (signal?.aborted) throw abortReason(signal);
    const timeoutMs = timeout === undefined || timeout >= NO_LIMIT_MS ? undefined : timeout;
    const result = await this.#memory.wait(
      offset,
      this.#int32(expected, "expected value", "wait on") | 0,
      { timeoutMs, signal },
    );
    if (signal?.aborted) throw abortReason(signal);
    return result;
  }

  /**
   * Wakes up to `count` waiters on the word at `offset`; returns how many woke. `count` is a
   * whole number from 0 up, or `Infinity` (the default): all of them. 0 wakes none (the kernel
   * would take it as 1), and anything else is a `RangeError`.
   */
  notifyInt32(offset: number, count?: number): number {
    this.#words(offset);
    if (count === undefined || count === Infinity) return this.#memory.wake(offset);
    if (!Number.isSafeInteger(count) || count < 0) {
      throw failure(
        RangeError,
        "notify on region",
        this.name,
        `count ${shown(count)} is not a whole number of waiters from 0 up, or Infinity for all`,
      );
    }
    if (count === 0) return 0;
    // As many as the kernel takes: no more can sleep on one word.
    return this.#memory.wake(offset, Math.min(count, 0x7fff_ffff));
  }

  /**
   * Flushes the region to its backing file with msync(2). Only file regions have a file that
   * outlives the machine's memory; for the others this is cheap and harmless.
   *
   * @param [options={}] `async: true` schedules the flush (`MS_ASYNC`) instead of waiting for it.
   */
  sync(options: { async?: boolean } = {}): void {
    options ??= {}; // null from JavaScript
    this.#memory.check();
    this.#memory.sync(options.async ?? false);
  }

  /**
   * Removes the region's name (the file, the shm name, the System V key) so no new process can
   * open it; processes that have it mapped keep it until they close. A file or POSIX shm name is
   * removed only while it still refers to the inode this region mapped: when it was removed, or
   * removed and made again by someone else, nothing is removed and this throws
   * `Deno.errors.NotFound`; so too for a System V segment removed already. A memfd has no name:
   * no-op.
   */
  unlink(): void {
    this.#memory.check();
    this.#remove();
  }

  /**
   * Closes everything built on the region (state cells, ring ends: their pending waits settle),
   * revokes every view, and unmaps the memory; safe to call more than once.
   */
  close(): void {
    this.#memory.close();
  }

  /** Same as {@link SharedRegion.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * `value`, once it is known to be a number that a 32-bit word holds, signed or not (`what`
   * names it, to `action` the region): `Atomics` would store 2^32 + 5 as 5 and NaN or null as 0,
   * and call an object's `valueOf()`, which could close the region under it.
   */
  #int32(value: number, what: string, action: string): number {
    if (typeof value === "number" && ((value | 0) === value || value >>> 0 === value)) return value;
    throw failure(
      typeof value === "number" ? RangeError : TypeError,
      `${action} region`,
      this.name,
      `the ${what} ${
        typeof value === "number"
          ? `${shown(value)} is not a whole number`
          : `is ${describeKind(value)}, not a number`
      } that fits in 32 bits (-2147483648 to 4294967295)`,
    );
  }

  #words(offset: number): Int32Array {
    if (!Number.isInteger(offset) || offset % 4 !== 0) {
      throw new RangeError(`Offset ${offset} is not a multiple of 4`);
    }
    this.#range(offset, 4);
    return this.#memory.words;
  }

  /**
   * The length of `bytes`, a `TypeError` naming the region if it is no byte array at all, or one
   * whose buffer was transferred or resized away.
   */
  #lengthOf(bytes: Uint8Array, what: string): number {
    const length = byteCount(bytes);
    if (length > 0) return length;
    this.#memory.check();
    const why = unusableBytes(bytes);
    if (why === undefined) return 0;
    throw failure(TypeError, "access", this.name, `${what} is ${why}`);
  }

  #range(offset: number, length: number): void {
    const size = this.size;
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
      offset + length > size
    ) {
      throw failure(
        RangeError,
        "access",
        this.name,
        `bytes ${offset}..${offset + length} are outside the region of ${size} bytes`,
      );
    }
  }
}
