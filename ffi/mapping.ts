/**
 * A mapping of shared memory into this process, and the futex calls on words inside it.
 * The pointer never leaves this module; callers get typed arrays that this class stops handing
 * out after `close()`.
 *
 * @module
 */

import * as C from "./constants.ts";
import { check, Errno, lastErrno, osError } from "./errno.ts";
import { libc } from "./libc.ts";

const MAP_FAILED = 0xffff_ffff_ffff_ffffn;
const WAKE_ALL = 0x7fff_ffff;
/** How often an abort re-sends its wake-up until the waiting thread has taken it. */
const ABORT_REWAKE_MS = 1;

/** How a futex wait ended: woken (or spuriously), the word already differed, or time ran out. */
export type WaitResult = "ok" | "not-equal" | "timed-out";

/** Options for {@link Mapping.wait}. */
export interface MappingWaitOptions {
  /** Give up after this many milliseconds. Default: wait until woken. */
  timeoutMs?: number;
  /** Ends the wait early; the returned promise then resolves with `"ok"`. */
  signal?: AbortSignal;
}

/** One `mmap` or `shmat` mapping. */
export class Mapping {
  readonly #pointer: Deno.PointerObject;
  readonly #size: number;
  readonly #unmap: (pointer: Deno.PointerObject, size: number) => void;
  #bytes: Uint8Array | undefined;
  #words: Int32Array | undefined;
  #longWords: BigInt64Array | undefined;
  /** Waits in flight, each with the function that wakes it early (on abort or close). */
  readonly #pending = new Map<Promise<unknown>, () => void>();

  private constructor(
    pointer: Deno.PointerObject,
    size: number,
    unmap: (pointer: Deno.PointerObject, size: number) => void,
  ) {
    this.#pointer = pointer;
    this.#size = size;
    this.#unmap = unmap;
    const buffer = Deno.UnsafePointerView.getArrayBuffer(pointer, size);
    this.#bytes = new Uint8Array(buffer);
    this.#words = new Int32Array(buffer, 0, Math.floor(size / 4));
    this.#longWords = new BigInt64Array(buffer, 0, Math.floor(size / 8));
  }

  /** mmap(2) `size` bytes of `fd` read-write and shared; `subject` names it in errors. */
  static map(fd: number, size: number, subject: string): Mapping {
    const pointer = libc().mmap(
      null,
      BigInt(size),
      C.PROT_READ | C.PROT_WRITE,
      C.MAP_SHARED,
      fd,
      0n,
    );
    if (pointer === null || Deno.UnsafePointer.value(pointer) === MAP_FAILED) {
      throw osError("map", subject, lastErrno());
    }
    return new Mapping(pointer, size, (p, n) => libc().munmap(p, BigInt(n)));
  }

  /** shmat(2) a System V segment of `size` bytes. */
  static attach(id: number, size: number, subject: string): Mapping {
    const pointer = libc().shmat(id, null, 0);
    if (pointer === null || Deno.UnsafePointer.value(pointer) === MAP_FAILED) {
      throw osError("attach", subject, lastErrno());
    }
    return new Mapping(pointer, size, (p) => libc().shmdt(p));
  }

  /** The mapped length in bytes. */
  get size(): number {
    return this.#size;
  }

  /** Whether `close()` has run. */
  get closed(): boolean {
    return this.#bytes === undefined;
  }

  /** The mapped bytes; throws `BadResource` after close. */
  get bytes(): Uint8Array {
    if (this.#bytes === undefined) throw new Deno.errors.BadResource("The mapping is closed");
    return this.#bytes;
  }

  /** The mapped memory as 32-bit words for `Atomics`; throws `BadResource` after close. */
  get words(): Int32Array {
    if (this.#words === undefined) throw new Deno.errors.BadResource("The mapping is closed");
    return this.#words;
  }

  /** The mapped memory as 64-bit words for `Atomics`; throws `BadResource` after close. */
  get longWords(): BigInt64Array {
    if (this.#longWords === undefined) throw new Deno.errors.BadResource("The mapping is closed");
    return this.#longWords;
  }

  /**
   * A fresh `ArrayBuffer` over `length` bytes at `offset`, for a view that its owner revokes
   * with `buffer.transfer(0)` before the mapping can go away.
   */
  buffer(offset: number, length: number): ArrayBuffer {
    if (this.#bytes === undefined) throw new Deno.errors.BadResource("The mapping is closed");
    return Deno.UnsafePointerView.getArrayBuffer(this.#pointer, length, offset);
  }

  /** msync(2); `subject` names the region in errors. */
  sync(subject: string, options: { async?: boolean } = {}): void {
    check(
      libc().msync(this.#pointer, BigInt(this.#size), options.async ? C.MS_ASYNC : C.MS_SYNC),
      "sync",
      subject,
    );
  }

  /**
   * Sleeps on the 32-bit word at `byteOffset` while it holds `expected`, on a worker thread so
   * the event loop stays free.
   */
  wait(
    byteOffset: number,
    expected: number,
    options: MappingWaitOptions = {},
  ): Promise<WaitResult> {
    const words = this.words;
    const index = byteOffset >> 2;
    if (Atomics.load(words, index) !== expected) return Promise.resolve("not-equal");
    const { timeoutMs, signal } = options;
    if (signal?.aborted) return Promise.resolve("ok");
    const timeout = timeoutMs === undefined ? null : timespec(timeoutMs);
    const started = performance.now();
    const call = libc().syscall_blocking(
      C.SYS_futex,
      Deno.UnsafePointer.offset(this.#pointer, byteOffset),
      C.FUTEX_WAIT,
      expected,
      timeout === null ? null : Deno.UnsafePointer.of(timeout),
      null,
      0,
    );
    // errno belongs to the worker thread, so the result is judged by the word and the clock.
    const result = call.then((returned): WaitResult => {
      void timeout; // keeps the timespec alive until the kernel is done with it
      if (returned === 0n) return "ok";
      if (this.#words !== undefined && Atomics.load(this.#words, index) !== expected) {
        return "not-equal";
      }
      return timeoutMs !== undefined && performance.now() - started >= timeoutMs
        ? "timed-out"
        : "ok";
    });
    this.#track(result, byteOffset, signal);
    return result;
  }

  /**
   * Sleeps on the word at `byteOffset` on this thread, blocking it (like `Atomics.wait`): the
   * quickest wake-up, for a thread that has nothing else to do. A timeout is required so that
   * nothing can block forever by mistake.
   */
  waitSync(byteOffset: number, expected: number, timeoutMs: number): WaitResult {
    const words = this.words;
    const index = byteOffset >> 2;
    if (Atomics.load(words, index) !== expected) return "not-equal";
    const timeout = timespec(timeoutMs);
    const result = libc().syscall(
      C.SYS_futex,
      Deno.UnsafePointer.offset(this.#pointer, byteOffset),
      C.FUTEX_WAIT,
      expected,
      Deno.UnsafePointer.of(timeout),
      null,
      0,
    );
    if (result === 0n) return "ok";
    const errno = lastErrno();
    return errno === Errno.ETIMEDOUT ? "timed-out" : errno === Errno.EAGAIN ? "not-equal" : "ok";
  }

  /** Wakes up to `count` waiters on the word at `byteOffset`, in any process; returns how many. */
  wake(byteOffset: number, count: number = WAKE_ALL): number {
    if (this.#bytes === undefined) throw new Deno.errors.BadResource("The mapping is closed");
    return this.#wake(byteOffset, count);
  }

  #wake(byteOffset: number, count: number): number {
    const woken = libc().syscall(
      C.SYS_futex,
      Deno.UnsafePointer.offset(this.#pointer, byteOffset),
      C.FUTEX_WAKE,
      count,
      null,
      null,
      0,
    );
    return Number(woken < 0n ? 0n : woken);
  }

  /**
   * Keeps the mapping alive while a wait is in flight, and on abort keeps waking the word until
   * the worker thread returns: a single wake could land before the thread is asleep.
   */
  #track(wait: Promise<WaitResult>, byteOffset: number, signal: AbortSignal | undefined): void {
    let timer: ReturnType<typeof setInterval> | undefined;
    const rewake = (): void => {
      if (timer !== undefined) return;
      this.#wake(byteOffset, WAKE_ALL);
      timer = setInterval(() => this.#wake(byteOffset, WAKE_ALL), ABORT_REWAKE_MS);
    };
    signal?.addEventListener("abort", rewake, { once: true });
    const settle = (): void => {
      signal?.removeEventListener("abort", rewake);
      if (timer !== undefined) clearInterval(timer);
      this.#pending.delete(wait);
      if (this.#pending.size === 0 && this.#bytes === undefined) {
        this.#unmap(this.#pointer, this.#size);
      }
    };
    this.#pending.set(wait, rewake);
    wait.then(settle, settle);
  }

  /**
   * Unmaps the memory; safe to call twice. Waits still in flight are woken first and the unmap
   * happens when the last of them has returned.
   */
  close(): void {
    if (this.#bytes === undefined) return;
    this.#bytes = undefined;
    this.#words = undefined;
    this.#longWords = undefined;
    if (this.#pending.size === 0) {
      this.#unmap(this.#pointer, this.#size);
      return;
    }
    for (const rewake of this.#pending.values()) rewake();
  }
}

function timespec(milliseconds: number): BigInt64Array<ArrayBuffer> {
  const ms = Math.max(0, milliseconds);
  const seconds = Math.floor(ms / 1000);
  return new BigInt64Array([
    BigInt(seconds),
    BigInt(Math.min(999_999_999, Math.floor((ms - seconds * 1000) * 1e6))),
  ]);
}
