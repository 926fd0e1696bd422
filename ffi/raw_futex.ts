/**
 * The floor the library is measured against in `deno task bench`: a bare memfd mapping with an
 * `Int32Array` over it, and futex waits and wakes on its words with nothing in between (no
 * claims, no liveness checks, no waiter counts, no abort handling). What the state cell and the
 * ring cost is judged as a ratio against these calls, measured in the same run.
 *
 * Safe like every owner in `ffi/`: after `close()` the views are detached (length 0), every call
 * throws `Deno.errors.BadResource`, and the memory is unmapped only once no wait is in flight.
 *
 * @module
 */

import * as C from "./constants.ts";
import { check, Errno, lastErrno, osError } from "./errno.ts";
import { fastLibc, libc } from "./libc.ts";
import { futexHub, putWaitvEntry, WAITV_BYTES } from "./futex_hub.ts";
import { cString, readLink, statFd } from "./posix.ts";

const WAKE_ALL = 0x7fff_ffff;
/** How often `close()` re-sends its wake-up until every wait in flight has returned. */
const CLOSE_REWAKE_MS = 1;

/** How a synchronous wait ended: woken (or spuriously), the word already differed, or timed out. */
export type RawWaitResult = "woken" | "not-equal" | "timed-out";

/**
 * A bare shared mapping of a memfd. The creator keeps the memfd open so that other processes
 * can open it through {@link RawSharedMemory.path}.
 */
export class RawSharedMemory {
  readonly #pointer: Deno.PointerObject;
  readonly #size: number;
  readonly #path: string;
  #fd: number | undefined;
  #buffer: ArrayBuffer | undefined;
  #words: Int32Array | undefined;
  #waitsInFlight = 0;
  #rewake: ReturnType<typeof setInterval> | undefined;
  readonly #wakeAllOnClose = new Set<RawFutexWord>();

  private constructor(pointer: Deno.PointerObject, size: number, path: string, fd?: number) {
    this.#pointer = pointer;
    this.#size = size;
    this.#path = path;
    this.#fd = fd;
    this.#buffer = Deno.UnsafePointerView.getArrayBuffer(pointer, size);
    this.#words = new Int32Array(this.#buffer);
  }

  /** @internal Maps `fd`; used by {@link createRawMemfd} and {@link openRawMemfd}. */
  static map(fd: number, size: number, path: string, keepFd: boolean): RawSharedMemory {
    const pointer = libc().mmap(
      null,
      BigInt(size),
      C.PROT_READ | C.PROT_WRITE,
      C.MAP_SHARED,
      fd,
      0n,
    );
    if (pointer === null || Deno.UnsafePointer.value(pointer) === C.MAP_FAILED) {
      throw osError("map", path, lastErrno());
    }
    return new RawSharedMemory(pointer, size, path, keepFd ? fd : undefined);
  }

  /** `/proc/PID/fd/N`: the path another process opens this memory by. */
  get path(): string {
    return this.#path;
  }

  /** The mapped length in bytes. */
  get size(): number {
    return this.#size;
  }

  /** The mapped memory, for typed arrays of any kind; detached (length 0) after close. */
  get buffer(): ArrayBuffer {
    if (this.#buffer === undefined) throw this.#closedError();
    return this.#buffer;
  }

  /** The mapped memory as 32-bit words for `Atomics`. */
  get words(): Int32Array {
    if (this.#words === undefined) throw this.#closedError();
    return this.#words;
  }

  /** The futex word at `index` (in 32-bit words), with its address worked out once. */
  word(index: number): RawFutexWord {
    if (this.#words === undefined) throw this.#closedError();
    if (!Number.isSafeInteger(index) || index < 0 || index >= this.#words.length) {
      throw new RangeError(`Word ${index} is outside ${this.#path} (${this.#words.length} words)`);
    }
    return new RawFutexWord(this, index);
  }

  /** @internal The address of the word at `index`, for {@link RawFutexWord}. */
  addressOf(index: number): Deno.PointerObject {
    return Deno.UnsafePointer.offset(this.#pointer, index * 4) as Deno.PointerObject;
  }

  /** The address of the word at `index` as a number, as the futex hub takes it (its tests). */
  wordAddress(index: number): bigint {
    return Deno.UnsafePointer.value(this.addressOf(index));
  }

  /** @internal Counts a nonblocking wait in flight on `word`, so close can wake it. */
  track(word: RawFutexWord, wait: Promise<unknown>): void {
    this.#waitsInFlight++;
    this.#wakeAllOnClose.add(word);
    const settle = (): void => {
      if (--this.#waitsInFlight === 0 && this.#buffer === undefined) this.#release();
    };
    wait.then(settle, settle);
  }

  /** @internal Whether `close()` has run. */
  get closed(): boolean {
    return this.#buffer === undefined;
  }

  #closedError(): Deno.errors.BadResource {
    return new Deno.errors.BadResource(`The raw shared memory ${this.#path} is closed`);
  }

  #release(): void {
    if (this.#rewake !== undefined) clearInterval(this.#rewake);
    libc().munmap(this.#pointer, BigInt(this.#size));
  }

  /**
   * Detaches every view and unmaps the memory (once waits in flight have been woken and have
   * returned); closes the memfd if this process created it. Safe to call twice.
   */
  close(): void {
    if (this.#buffer === undefined) return;
    // transfer(0) detaches the buffer (and so every view over it) without copying.
    this.#buffer.transfer(0);
    this.#buffer = undefined;
    this.#words = undefined;
    if (this.#fd !== undefined) libc().close(this.#fd);
    this.#fd = undefined;
    if (this.#waitsInFlight === 0) {
      this.#release();
      return;
    }
    // A single wake could land before a worker thread is asleep: repeat until all returned.
    const wakeAll = (): void => {
      for (const word of this.#wakeAllOnClose) word.wakeForClose();
    };
    wakeAll();
    this.#rewake = setInterval(wakeAll, CLOSE_REWAKE_MS);
  }

  /** Same as {@link RawSharedMemory.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** One 32-bit futex word in a {@link RawSharedMemory}. */
export class RawFutexWord {
  readonly #memory: RawSharedMemory;
  readonly #words: Int32Array;
  readonly #index: number;
  readonly #address: Deno.PointerObject;
  // The kernel reads these by address: made over an ArrayBuffer of their own, off V8's heap,
  // where a small typed array's memory could be moved by a collection.
  readonly #timespec = new BigInt64Array(new ArrayBuffer(16));
  readonly #timespecAddress: Deno.PointerObject;
  #timeoutMs = -1;
  /** For {@link RawFutexWord.waitv}: the call's arguments and its control word, made once. */
  readonly #waitv = new Uint8Array(new ArrayBuffer(2 * WAITV_BYTES));
  readonly #waitvFields = new DataView(this.#waitv.buffer);
  readonly #control = new Int32Array(new ArrayBuffer(4));
  readonly #controlAddress = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#control)));
  #waitvInFlight = false;

  /** @internal Made by {@link RawSharedMemory.word}, which checks `index`. */
  constructor(memory: RawSharedMemory, index: number) {
    this.#memory = memory;
    this.#words = memory.words;
    this.#index = index;
    this.#address = memory.addressOf(index);
    this.#timespecAddress = Deno.UnsafePointer.of(this.#timespec) as Deno.PointerObject;
  }

  /** The word's index in 32-bit words. */
  get index(): number {
    return this.#index;
  }

  #check(): void {
    if (this.#memory.closed) {
      throw new Deno.errors.BadResource(`The raw shared memory ${this.#memory.path} is closed`);
    }
  }

  /**
   * FUTEX_WAIT on this thread while the word holds `expected`, for at most `timeoutMs` (a
   * timeout is required so nothing blocks forever by mistake). The bare synchronous FFI call.
   */
  waitSync(expected: number, timeoutMs: number): RawWaitResult {
    this.#check();
    if (timeoutMs !== this.#timeoutMs) {
      if (!(timeoutMs >= 0 && timeoutMs < 2 ** 40)) {
        throw new RangeError(`Timeout ${timeoutMs} ms is not between 0 and 2^40`);
      }
      const seconds = Math.floor(timeoutMs / 1000);
      this.#timespec[0] = BigInt(seconds);
      this.#timespec[1] = BigInt(Math.floor((timeoutMs - seconds * 1000) * 1e6));
      this.#timeoutMs = timeoutMs;
    }
    const result = fastLibc().syscall(
      C.SYS_futex,
      this.#address,
      C.FUTEX_WAIT,
      expected,
      this.#timespecAddress,
      null,
      0,
    );
    if (result === 0n) return "woken";
    const errno = lastErrno();
    return errno === Errno.ETIMEDOUT ? "timed-out" : errno === Errno.EAGAIN ? "not-equal" : "woken";
  }

  /**
   * FUTEX_WAIT on one of Deno's worker threads (`nonblocking: true`) while the word holds
   * `expected`; the event loop stays free. Resolves when woken, at once if the word differs,
   * when the memory is closed, and after `timeoutMs` if given (without one, something must wake
   * it, or close its memory).
   */
  wait(expected: number, timeoutMs?: number): Promise<void> {
    this.#check();
    let timespec: BigInt64Array | undefined;
    if (timeoutMs !== undefined) {
      if (!(timeoutMs >= 0 && timeoutMs < 2 ** 40)) {
        throw new RangeError(`Timeout ${timeoutMs} ms is not between 0 and 2^40`);
      }
      // A buffer per call: the worker thread reads it after this returns.
      timespec = new BigInt64Array(new ArrayBuffer(16));
      const seconds = Math.floor(timeoutMs / 1000);
      timespec[0] = BigInt(seconds);
      timespec[1] = BigInt(Math.floor((timeoutMs - seconds * 1000) * 1e6));
    }
    const call = libc().syscall_blocking(
      C.SYS_futex,
      this.#address,
      C.FUTEX_WAIT,
      expected,
      timespec === undefined ? null : Deno.UnsafePointer.of(timespec),
      null,
      0,
    ).then(() => {
      timespec = undefined; // reachable until the call has returned
    });
    this.#memory.track(this, call);
    return call;
  }

  /**
   * What the library's futex hub sleeps in, bare: a nonblocking `futex_waitv` on this word while
   * it holds `expected` and on a control word of this process's own, which the hub moves and
   * wakes to end a wait without waking the shared word (here nothing moves it). Resolves as
   * {@link RawFutexWord.wait} does, without a timeout. One at a time per word (`Busy` while one
   * is in flight): the call's arguments are made once. `NotSupported` where the hub does not use `futex_waitv` (kernels
   * before 5.16).
   */
  waitv(expected: number): Promise<void> {
    this.#check();
    // Not a wait at all there: a loop on it would spin.
    if (!futexHub().pooled) {
      throw new Deno.errors.NotSupported("futex_waitv needs Linux 5.16 or later");
    }
    // A second call would rewrite the arguments before the first one's thread hands them over.
    if (this.#waitvInFlight) {
      throw new Deno.errors.Busy(`A waitv() on word ${this.#index} is already in flight`);
    }
    this.#waitvInFlight = true;
    const fields = this.#waitvFields;
    putWaitvEntry(fields, 0, Atomics.load(this.#control, 0), this.#controlAddress);
    putWaitvEntry(fields, 1, expected, BigInt(Deno.UnsafePointer.value(this.#address)));
    const call = libc().syscall_futex_waitv_blocking(
      C.SYS_futex_waitv,
      this.#waitv,
      2,
      0,
      null,
      C.CLOCK_MONOTONIC,
    ).then(() => {
      this.#waitvInFlight = false;
    });
    this.#memory.track(this, call);
    return call;
  }

  /**
   * The library's futex hub alone (`ffi/futex_hub.ts`, under the state cell's asynchronous
   * wait): waits while this word holds `expected`, without a timeout, resolving when the hub
   * says the wait is over (woken, or the word changed).
   */
  waitInHub(expected: number): Promise<void> {
    this.#check();
    const address = BigInt(Deno.UnsafePointer.value(this.#address));
    const call = new Promise<void>((resolve) => {
      futexHub().wait(address, expected, undefined, () => resolve());
    });
    this.#memory.track(this, call);
    return call;
  }

  /** FUTEX_WAKE: wakes up to `count` waiters on this word, in any process; returns how many. */
  wake(count: number = WAKE_ALL): number {
    this.#check();
    const woken = fastLibc().syscall(
      C.SYS_futex,
      this.#address,
      C.FUTEX_WAKE,
      count,
      null,
      null,
      0,
    );
    return Number(woken < 0n ? 0n : woken);
  }

  /** @internal Wakes every waiter while the memory closes (the address is still mapped). */
  wakeForClose(): void {
    fastLibc().syscall(C.SYS_futex, this.#address, C.FUTEX_WAKE, WAKE_ALL, null, null, 0);
  }

  /** `Atomics.load` of the word. */
  load(): number {
    this.#check();
    return Atomics.load(this.#words, this.#index);
  }
}

function checkSize(size: number, subject: string): void {
  if (!Number.isSafeInteger(size) || size < 4 || size > 2 ** 40) {
    throw new RangeError(`Size ${size} of ${subject} is not between 4 bytes and 1 TiB`);
  }
}

/** Creates a memfd of `size` bytes (zero-filled) and maps it shared. */
export function createRawMemfd(size: number, options: { name?: string } = {}): RawSharedMemory {
  const name = options.name ?? "mmap-ipc-raw";
  checkSize(size, `memfd ${name}`);
  const fd = check(libc().memfd_create(cString(name), C.MFD_CLOEXEC), "create memfd", name);
  const path = `/proc/${Deno.pid}/fd/${fd}`;
  try {
    check(libc().ftruncate(fd, BigInt(size)), "resize", path);
    return RawSharedMemory.map(fd, size, path, true);
  } catch (error) {
    libc().close(fd);
    throw error;
  }
}

/**
 * Maps the memfd another process made with {@link createRawMemfd}, by its `/proc/PID/fd/N`
 * path; anything but a memfd of at least `size` bytes is refused.
 */
export function openRawMemfd(path: string, size: number): RawSharedMemory {
  if (!/^\/proc\/\d+\/fd\/\d+$/.test(path)) {
    throw new TypeError(`Invalid memfd path ${JSON.stringify(path)}: expected /proc/PID/fd/N`);
  }
  checkSize(size, path);
  const target = readLink(path);
  if (!target.startsWith("/memfd:")) {
    throw new Deno.errors.InvalidData(
      `Cannot open memfd ${JSON.stringify(path)}: it is ${target}, not a memfd`,
    );
  }
  // /proc/PID/fd/N is a symlink by design: following it is the point, and it was checked above.
  const fd = check(libc().open(cString(path), C.O_RDWR | C.O_CLOEXEC, 0), "open memfd", path);
  try {
    const stat = statFd(fd, path);
    if (stat.size < size) {
      throw new Deno.errors.InvalidData(
        `Cannot open memfd ${JSON.stringify(path)}: it has ${stat.size} bytes, asked for ${size}`,
      );
    }
    return RawSharedMemory.map(fd, size, path, false);
  } finally {
    libc().close(fd);
  }
}
