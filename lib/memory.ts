/**
 * The one owner of a mapping of shared memory. Everything in the library that reaches mapped
 * memory goes through a {@link SharedMemory}: its own views, the buffers lent to users (leases,
 * reservations, region views), the futex waits in flight, and the structures built on it (state
 * cells, ring ends), which it closes before it lets the memory go.
 *
 * The lifetime rules, in order, when {@link SharedMemory.close} runs:
 * 1. Dependents close first, while the memory is still there (they give up their roles and tell
 *    their peers), and their pending waits settle.
 * 2. Every buffer over the memory is detached (`ArrayBuffer.prototype.transfer(0)`): every view
 *    of it, in the library or in user code, now has length 0, and every method throws
 *    `BadResource`.
 * 3. Futex waits still running on Deno's worker threads are woken until they return (they then
 *    reject with `BadResource`); no FFI call runs against the memory after that.
 * 4. Only then is the range let go. If no buffer was ever lent to user code, it is released
 *    (unmapped). Otherwise it is retired: private zero pages replace the shared memory at the
 *    same addresses and stay there for the life of the process, so that nothing user code still
 *    holds can reach the file or another mapping that lands at those addresses: neither a buffer
 *    it moved away (`transfer()`, `postMessage` with a transfer list), which cannot be detached,
 *    nor an async op that took a view's memory before close (a read into it still in flight),
 *    which detaching does not stop. A retired range costs address space, not memory (bounded:
 *    see `ffi/mapping.ts`), nor commit charge (`MAP_NORESERVE`). Under `vm.overcommit_memory=2`,
 *    which ignores `MAP_NORESERVE`, a memfd of the process's own takes the range instead; where
 *    neither can be had, the shared memory stays mapped and close throws, saying so (see
 *    `Mapping.retire`), and it is tried again at the next close or open in the process (when
 *    no caller is left to throw to, only that).
 *
 * None of this runs in a Worker that is terminated (`worker.terminate()`): its isolate ends
 * without running its `FinalizationRegistry` callbacks, the safety net for memory never closed,
 * so memory it had open stays mapped for the life of the process (and the fds its waits held stay
 * open). Close it before terminating a Worker. A futex wait it had in flight ends with it, but
 * the call under it runs on until its bound passes (`ffi/call_bound.ts`, 10 s), and the worker
 * thread it held then ends.
 *
 * @module
 */

import type { FutexSettle, FutexWait } from "../ffi/futex_hub.ts";
import type { FutexWord, Mapping, WaitResult } from "../ffi/mapping.ts";
import { anyGuardedFault } from "../ffi/sigbus_guard.ts";
import type { TextFollower } from "../ffi/text_follower.ts";
import { type ShrinkWatch, watchShrink } from "./shrink_watch.ts";
import { failure } from "./errors.ts";

/**
 * `ffi/text_follower.ts`, once {@link loadTextFollower} has loaded it: only a reader of a
 * writer that knows no protocol needs it, and a process that never follows one (a writer, such
 * as the button) is spared its memory (about half a MiB here).
 */
let followerModule: typeof import("../ffi/text_follower.ts") | undefined;

/** Loads what {@link SharedMemory.followText} needs, once per process; at once after that. */
export async function loadTextFollower(): Promise<void> {
  followerModule ??= await import("../ffi/text_follower.ts");
}

/** Whether {@link loadTextFollower} has loaded it, so that no wait is needed. */
export function textFollowerLoaded(): boolean {
  return followerModule !== undefined;
}

/** Something built on a {@link SharedMemory} that must close before the memory goes away. */
export interface MemoryDependent {
  /** Closes the dependent; must not throw, and must be safe to call twice. */
  close(): void;
}

/** A futex sleep in flight on a worker thread; see {@link SharedMemory.sleep}. */
export interface Sleep {
  /** Where its word is. */
  readonly byteOffset: number;
  /** The value it sleeps while the word holds. */
  readonly expected: number;
  /** Whose it is: {@link SharedMemory.interruptAll} ends the sleeps of one owner. */
  readonly owner: object | undefined;
  /** The call on the worker thread, once made. */
  wait: FutexWait | undefined;
}

/** Options for {@link SharedMemory.wait}. */
export interface MemoryWaitOptions {
  /** Give up after this many milliseconds (resolves `"timed-out"`). */
  timeoutMs?: number;
  /** Ends the wait early: it then resolves `"ok"`, as a spurious wake-up would. */
  signal?: AbortSignal;
}

const WAKE_ALL = 0x7fff_ffff;
/** What a wait on memory that lost a page to a shrunk file says it could not use. */
const LOST_PAGE_SUBJECT = "the shared memory";
/** While a wait must end (abort, close), how often its word is woken until the thread returns. */
const REWAKE_MS = 1;
/**
 * How often the words of sleeping waits are read when the file under the memory cannot be watched
 * (inotify out of instances or watches): reading a word on a page the file lost is how the loss
 * is noticed then.
 */
const UNHEARD_LOOK_MS = 250;

/** What releasing a mapping needs; also what the safety net holds for an owner never closed. */
interface Held {
  mapping: Mapping;
  /** Every buffer over the mapping that is not detached yet: the library's own and lent ones. */
  buffers: Set<ArrayBuffer>;
  /**
   * Lent buffers that nothing revokes before close (region views), held weakly: one a user let
   * go of is collected, where kept in {@link Held.buffers} every view ever made stayed in memory
   * until close (a million views, about 400 MB).
   */
  weak: Set<WeakRef<ArrayBuffer>>;
  /** What users call the memory, for the error of a range that could not be retired. */
  name: string;
  /** Whether user code moved a lent buffer away, so the range must never be unmapped. */
  moved: boolean;
  /**
   * Whether a buffer was ever lent to user code. Detaching it does not stop an async op that
   * already holds its memory (a read into it still in flight), so such a range is retired, never
   * released: unmapped, it could be mapped again for something else, and the op would write there.
   */
  lent: boolean;
  onRelease: (() => void) | undefined;
  /** The watch for another process shrinking the file, if it can be shrunk and be watched. */
  shrink: ShrinkWatch | undefined;
}

/** Detaches every buffer still over the mapping, so every view of it has length 0. */
function detachAll(held: Held): void {
  for (const buffer of held.buffers) {
    if (buffer.detached) held.moved = true;
    else buffer.transfer(0);
  }
  held.buffers.clear();
  // One collected is out of reach; one moved away meanwhile is covered as every lent one is: the
  // range is retired, never released.
  for (const ref of held.weak) {
    const buffer = ref.deref();
    if (buffer !== undefined && !buffer.detached) buffer.transfer(0);
  }
  held.weak.clear();
}

/** Forgets a weakly lent buffer once it is collected. */
const collected = new FinalizationRegistry<
  { weak: Set<WeakRef<ArrayBuffer>>; ref: WeakRef<ArrayBuffer> }
>(
  ({ weak, ref }) => weak.delete(ref),
);

/**
 * Ranges that could not be retired (no memory and no fd at that moment: see `Mapping.retire`),
 * tried again whenever this module next lets memory go or maps some: the shortage may be over.
 */
const unretired = new Set<Held>();

/** Tries again to retire the ranges that could not be (see {@link unretired}). */
function retryRetiring(): void {
  for (const held of unretired) {
    try {
      held.mapping.retire(held.name);
    } catch {
      return; // the shortage lasts: the rest would fail as well
    }
    unretired.delete(held);
  }
}

/**
 * Releases the range, or retires it when a moved buffer may still point into it. Throws when it
 * could not be retired (see `Mapping.retire`): the shared memory then stays mapped, and is tried
 * again later (see {@link unretired}).
 */
function letGo(held: Held): void {
  held.shrink?.close();
  retryRetiring();
  try {
    if (held.moved || held.lent) held.mapping.retire(held.name);
    else held.mapping.release();
  } catch (error) {
    unretired.add(held);
    throw error;
  } finally {
    held.onRelease?.();
  }
}

/**
 * {@link letGo} where no caller is left to throw to (after close returned, or for an owner
 * collected): a range that could not be retired is only tried again later. Reported, the error
 * would end the process (an unhandled `reportError`), for a shared mapping that is kept, not lost.
 */
function letGoLater(held: Held): void {
  try {
    letGo(held);
  } catch {
    // In `unretired`, tried again at the next close or open.
  }
}

const forgotten = new FinalizationRegistry<Held>((held) => {
  // Nothing reaches the owner any more, so no wait is in flight: only buffers may remain.
  detachAll(held);
  letGoLater(held);
});

/** The owner of one mapping; see the module description. */
export class SharedMemory {
  readonly #mapping: Mapping;
  readonly #name: string;
  readonly #description: string;
  readonly #dependents = new Set<MemoryDependent>();
  /** Waits in flight on worker threads. */
  readonly #waits = new Set<Sleep>();
  /** Waits that must return (aborted, or the memory closed): woken until they have. */
  readonly #interrupted = new Set<Sleep>();
  /** Workers that read the memory themselves; it stays mapped until each has stopped. */
  readonly #followers = new Set<TextFollower>();
  readonly #held: Held;
  #closed = false;
  #rewake: ReturnType<typeof setInterval> | undefined;
  /** Owners waiting, or about to (see {@link SharedMemory.hearShrink}). */
  #hearers = 0;
  /** Whether the memory can be shrunk under its mapping but inotify could not watch it. */
  #unheard = false;
  /** While waits sleep on unheard memory: the timer that reads their words. */
  #looking: ReturnType<typeof setInterval> | undefined;
  /** The mapping as bytes, for the library's own use; length 0 once closed. */
  readonly bytes: Uint8Array;
  /** The mapping as 32-bit words for `Atomics`; length 0 once closed. */
  readonly words: Int32Array;
  /** The mapping as 64-bit words for `Atomics`; length 0 once closed. */
  readonly longWords: BigInt64Array;

  /**
   * Takes ownership of `mapping`.
   *
   * @param name what users call the memory (a path, an shm name), for messages
   * @param description how messages refer to it, such as `region "/led"`
   * @param onRelease runs once the range is released (for example to close an fd)
   * @param shrinkable the fd of a file or shm object that another process could shrink under
   *   the mapping: its inode is watched while waits are asleep (see `shrink_watch.ts`), or,
   *   where inotify cannot watch it, the sleeping waits' words are read every
   *   {@link UNHEARD_LOOK_MS}
   */
  constructor(
    mapping: Mapping,
    name: string,
    options: { description?: string; onRelease?: () => void; shrinkable?: number } = {},
  ) {
    if (unretired.size > 0) retryRetiring();
    this.#mapping = mapping;
    this.#name = name;
    this.#description = options.description ?? `region ${JSON.stringify(name)}`;
    const root = mapping.buffer();
    try {
      this.bytes = new Uint8Array(root);
      this.words = new Int32Array(root, 0, Math.floor(mapping.size / 4));
      this.longWords = new BigInt64Array(root, 0, Math.floor(mapping.size / 8));
    } catch (error) {
      // Nothing else holds the mapping yet: a failed open must not leak it.
      root.transfer(0);
      mapping.release();
      throw error;
    }
    this.#held = {
      mapping,
      name,
      buffers: new Set([root]),
      weak: new Set(),
      moved: false,
      lent: false,
      onRelease: options.onRelease,
      shrink: undefined,
    };
    if (options.shrinkable !== undefined) {
      // Weakly: the process-wide watch must not keep a memory nobody closes from its safety net.
      const self = new WeakRef(this);
      try {
        this.#held.shrink = watchShrink(options.shrinkable, () => {
          const memory = self.deref();
          if (memory !== undefined) memory.#heardChange();
        });
      } catch {
        // Out of inotify instances or watches: sleeping waits read their words now and then.
        this.#unheard = true;
      }
    }
    forgotten.register(this, this.#held, this);
  }

  /**
   * The file changed under the mapping (written, allocated or truncated): a sleeping wait whose
   * word now reads otherwise, or once a page of the memory was cut off (reading a word faulted,
   * now or since the wait began), looks again, and then throws (see
   * {@link SharedMemory.interrupt}). The others sleep on.
   */
  #heardChange(): void {
    if (this.#closed) return;
    for (const sleep of this.#waits) {
      // The lost pages after the load, which may be what faulted. Any, not only new ones: a fault
      // elsewhere may already have replaced the word's page (past the guard's first 1,024
      // faults, with the rest of its range), where no wake-up reaches it and its load faults no
      // more.
      if (
        Atomics.load(this.words, sleep.byteOffset / 4) !== sleep.expected ||
        this.#mapping.lostPages !== 0
      ) {
        this.interrupt(sleep);
      }
    }
  }

  /**
   * Listens for another process changing the file under the mapping (see `shrink_watch.ts`)
   * until as many {@link SharedMemory.stopHearingShrink} calls: owners call it for as long as
   * they wait, a state cell from its first wait until it has been idle a moment (its own timer),
   * a ring end or a region wait around each sleep. Nothing for memory that cannot shrink.
   */
  hearShrink(): void {
    if (this.#hearers++ !== 0 || this.#closed) return;
    this.#held.shrink?.listen();
    if (this.#unheard) {
      // Weakly, like the watch: the timer must not keep a memory nobody closes.
      const self = new WeakRef(this);
      const looking = setInterval(() => {
        const memory = self.deref();
        if (memory !== undefined) memory.#heardChange();
      }, UNHEARD_LOOK_MS);
      Deno.unrefTimer(looking);
      this.#looking = looking;
    }
  }

  /** Ends one {@link SharedMemory.hearShrink}. */
  stopHearingShrink(): void {
    if (this.#hearers > 0 && --this.#hearers === 0) {
      this.#held.shrink?.unlisten();
      this.#stopLooking();
    }
  }

  #stopLooking(): void {
    if (this.#looking !== undefined) clearInterval(this.#looking);
    this.#looking = undefined;
  }

  /** The name users know the memory by. */
  get name(): string {
    return this.#name;
  }

  /** Mapped bytes. */
  get size(): number {
    return this.#mapping.size;
  }

  /** Pages another process cut off by shrinking the file; see `SharedRegion.lostPages`. */
  get lostPages(): number {
    return this.#mapping.lostPages;
  }

  /**
   * Throws `UnexpectedEof` once a page of the memory was lost to a file shrunk under it (see
   * `SharedRegion.lostPages`): the structures built on the memory (state cells, ring ends) call
   * it, as what they would read there is zeros and what they would write reaches no one.
   * `what` names the structure, as in `the state cell in`.
   */
  checkPages(what: string): void {
    if (!anyGuardedFault()) return;
    const lost = this.#mapping.lostPages;
    if (lost === 0) return;
    throw failure(
      Deno.errors.UnexpectedEof,
      `use ${what}`,
      this.#name,
      `${lost === 1 ? "a page of it no longer reaches" : `${lost} pages of it no longer reach`}` +
        " the file or object: it was shrunk under the mapping (truncate?); open it again",
    );
  }

  /** Whether {@link SharedMemory.close} has run. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The error every use after close throws. */
  closedError(what: string = this.#description): Deno.errors.BadResource {
    return new Deno.errors.BadResource(`The ${what} is closed`);
  }

  /** Throws `BadResource` after close. */
  check(): void {
    if (this.#closed) throw this.closedError();
  }

  /** Registers something that must close before the memory goes; see {@link MemoryDependent}. */
  adopt(dependent: MemoryDependent): void {
    this.check();
    this.#dependents.add(dependent);
  }

  /** Forgets a dependent that closed on its own. */
  forget(dependent: MemoryDependent): void {
    this.#dependents.delete(dependent);
  }

  /**
   * A new buffer over `length` bytes at `offset`, for a view that leaves the library (a lease,
   * a reservation, a region view). It is detached at {@link SharedMemory.revoke} or at close.
   * `weak`: for a buffer nothing revokes (a region view), kept only while user code keeps it.
   */
  lend(offset: number, length: number, options: { weak?: boolean } = {}): ArrayBuffer {
    this.check();
    const buffer = this.#mapping.buffer(offset, length);
    const held = this.#held;
    if (options.weak) {
      const ref = new WeakRef(buffer);
      held.weak.add(ref);
      collected.register(buffer, { weak: held.weak, ref });
    } else held.buffers.add(buffer);
    held.lent = true;
    return buffer;
  }

  /**
   * Detaches a lent buffer now, so every view of it has length 0. A buffer that user code had
   * moved away cannot be detached: the range is then retired rather than released at close.
   */
  revoke(buffer: ArrayBuffer): void {
    if (!this.#held.buffers.delete(buffer)) return;
    if (buffer.detached) this.#held.moved = true;
    else buffer.transfer(0);
  }

  /**
   * Sleeps while the 32-bit word at `byteOffset` holds `expected`, on a worker thread so the
   * event loop stays free. Resolves `"ok"` when woken (or aborted, or spuriously),
   * `"not-equal"` when the word differs, `"timed-out"` when the time ran out; rejects with
   * `BadResource` when the memory closes meanwhile.
   */
  wait(byteOffset: number, expected: number, options: MemoryWaitOptions = {}): Promise<WaitResult> {
    this.check();
    const index = byteOffset / 4;
    if (Atomics.load(this.words, index) !== expected) return Promise.resolve("not-equal");
    const { timeoutMs, signal } = options;
    if (signal?.aborted) return Promise.resolve("ok");
    const started = timeoutMs === undefined ? 0 : performance.now();
    return new Promise((resolve, reject) => {
      const abort = (): void => this.interrupt(sleep);
      this.hearShrink();
      let sleep: Sleep;
      try {
        // `notifyInt32()` and its kind wake a word without changing it.
        sleep = this.sleep(byteOffset, expected, timeoutMs, (returned) => {
          this.stopHearingShrink();
          settled(returned);
        }, { wakesWithoutChange: true });
      } catch (error) {
        this.stopHearingShrink();
        throw error;
      }
      const settled = (returned: bigint): void => {
        signal?.removeEventListener("abort", abort);
        if (this.#closed) return reject(this.closedError());
        try {
          this.checkPages(LOST_PAGE_SUBJECT);
        } catch (error) {
          return reject(error);
        }
        if (returned === 0n) return resolve("ok");
        if (Atomics.load(this.words, index) !== expected) return resolve("not-equal");
        resolve(
          timeoutMs !== undefined && performance.now() - started >= timeoutMs ? "timed-out" : "ok",
        );
      };
      signal?.addEventListener("abort", abort, { once: true });
    });
  }

  /**
   * The bare futex sleep under {@link SharedMemory.wait}, for the paths that count every
   * microtask (the state cell's wait): calls `settle` once the worker thread's call returned,
   * with 0n when woken and -1n otherwise (changed, timed out, or for no reason), straight from
   * the event loop. It then looks at the word, the clock and {@link SharedMemory.closed} itself;
   * it must not throw. The returned handle is for {@link SharedMemory.interrupt}; `owner` is
   * for {@link SharedMemory.interruptAll}; `wakesWithoutChange` for a word whose wakers may leave
   * it as it was (see `FutexHub.wait`: such a sleep may end for no reason, and may miss a wake-up
   * that leaves the word unchanged: beyond the first few at a time, or as its call is made again).
   */
  sleep(
    byteOffset: number,
    expected: number,
    timeoutMs: number | undefined,
    settle: FutexSettle,
    options: { owner?: object; wakesWithoutChange?: boolean } = {},
  ): Sleep {
    const { owner, wakesWithoutChange = false } = options;
    this.check();
    // A word on a page the file lost is on a private page now, which no one else can wake.
    this.checkPages(LOST_PAGE_SUBJECT);
    const sleep: Sleep = { byteOffset, expected, owner, wait: undefined };
    this.#waits.add(sleep);
    try {
      sleep.wait = this.#mapping.futexWait(byteOffset, expected, timeoutMs, (returned) => {
        this.#waits.delete(sleep);
        // Looked up only when some sleep was interrupted: this runs on every wake-up.
        const interrupted = this.#interrupted;
        if (interrupted.size !== 0 && interrupted.delete(sleep) && interrupted.size === 0) {
          this.#stopRewaking();
        }
        if (this.#closed && this.#waits.size === 0) this.#finish(true);
        settle(returned);
      }, wakesWithoutChange);
    } catch (error) {
      this.#waits.delete(sleep);
      throw error;
    }
    return sleep;
  }

  /**
   * Makes a sleep in flight return soon (for an abort, a close or a peer's death): the futex hub
   * ends it through a word of its own, not through the sleep's word, whose page may no longer
   * reach the file (shrunk under the mapping: a wake-up there finds no one, and the sleep would
   * never end). Without the hub (a kernel before 5.16) it wakes the word now, and again every
   * {@link REWAKE_MS} until the sleep has returned, as one wake can land before the thread
   * sleeps; those wakes reach every sleeper on the word, in any process, as a spurious wake-up.
   */
  interrupt(sleep: Sleep): void {
    if (!this.#waits.has(sleep) || this.#interrupted.has(sleep)) return;
    if (sleep.wait !== undefined && this.#mapping.cancelWait(sleep.wait)) return;
    this.#interrupted.add(sleep);
    this.#mapping.futexWake(sleep.byteOffset, WAKE_ALL);
    this.#rewake ??= setInterval(() => {
      for (const { byteOffset } of this.#interrupted) this.#mapping.futexWake(byteOffset, WAKE_ALL);
    }, REWAKE_MS);
  }

  /** {@link SharedMemory.interrupt} for every sleep in flight of `owner` (which closes). */
  interruptAll(owner: object): void {
    for (const sleep of this.#waits) if (sleep.owner === owner) this.interrupt(sleep);
  }

  #stopRewaking(): void {
    if (this.#rewake !== undefined) clearInterval(this.#rewake);
    this.#rewake = undefined;
  }

  /**
   * The word at `byteOffset` for synchronous waits on this thread, blocking it, and wake-ups
   * (see {@link FutexWord}). Nothing can close the memory during such a wait: the thread is busy.
   * The caller checks that the memory is open before each call; a word used after the mapping was
   * retired or released throws `BadResource`.
   */
  futexWord(byteOffset: number): FutexWord {
    this.check();
    return this.#mapping.futexWord(byteOffset);
  }

  /** Wakes up to `count` waiters (default: all) on the word at `byteOffset`, in any process. */
  wake(byteOffset: number, count: number = WAKE_ALL): number {
    this.check();
    return this.#mapping.futexWake(byteOffset, count);
  }

  /**
   * Starts a Worker that follows a value kept as text (see `ffi/text_follower.ts`): the text at
   * `offset` in this memory, or at the start of the file behind `fd`. It also reports when the
   * 32-bit word at `watchOffset` here leaves `watchValue`. The memory stays mapped until the
   * follower has stopped, even past close. Only once {@link loadTextFollower} has loaded the
   * follower's module.
   */
  followText(
    from: { offset: number } | { fd: number },
    options: {
      parse: (bytes: Uint8Array, at: number, end: number) => number;
      value: number;
      watchOffset: number;
      watchValue: number;
      periodMs: number;
    },
  ): TextFollower {
    this.check();
    if (followerModule === undefined) {
      throw new Error("The text follower is not loaded yet: await loadTextFollower() first");
    }
    const follower = followerModule.TextFollower.start({
      source: "fd" in from ? { fd: from.fd } : { mapping: this.#mapping, offset: from.offset },
      parse: options.parse,
      value: options.value,
      watch: { mapping: this.#mapping, offset: options.watchOffset, value: options.watchValue },
      periodMs: options.periodMs,
      onStopped: () => {
        this.#followers.delete(follower);
        if (this.#closed && this.#waits.size === 0 && this.#followers.size === 0) {
          this.#finish(true);
        }
      },
    });
    this.#followers.add(follower);
    return follower;
  }

  /** Flushes the memory to its backing file (msync), synchronously unless `asynchronous`. */
  sync(asynchronous: boolean): void {
    this.check();
    this.#mapping.sync(asynchronous, this.#name);
  }

  /**
   * Closes the dependents, revokes every buffer and lets the memory go; safe to call twice.
   * Throws, closed all the same, when a range that lent buffers could not be retired (see
   * `Mapping.retire`): its shared memory then stays mapped.
   */
  close(): void {
    if (this.#closed) return;
    // Dependents first: they still write to the memory (roles, closed flags) as they go.
    for (const dependent of [...this.#dependents]) {
      try {
        dependent.close();
      } catch {
        // A dependent that fails to close must not keep the memory from being released.
      }
    }
    this.#dependents.clear();
    this.#closed = true;
    forgotten.unregister(this);
    this.#held.shrink?.close();
    this.#stopLooking();
    detachAll(this.#held);
    for (const follower of this.#followers) follower.stop();
    if (this.#waits.size === 0 && this.#followers.size === 0) {
      this.#finish(false);
      return;
    }
    if (this.#waits.size === 0) return; // the last follower to stop finishes
    for (const sleep of this.#waits) this.interrupt(sleep);
  }

  /**
   * Runs once no wait is in flight after close: stops waking waits, and lets the memory go
   * unless a follower still reads it (the last one to stop runs this again). A range that could
   * not be retired throws from close() itself; run after close() returned (`deferred`), it is
   * only tried again later (see `letGoLater`).
   */
  #finish(deferred: boolean): void {
    this.#interrupted.clear();
    this.#stopRewaking();
    if (this.#followers.size > 0) return;
    if (deferred) letGoLater(this.#held);
    else letGo(this.#held);
  }

  /** Same as {@link SharedMemory.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
