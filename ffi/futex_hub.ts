/**
 * Every asynchronous futex wait of the process on as few of Deno's worker threads as can hold
 * them: one `futex_waitv(2)` (Linux 5.16) sleeps on up to 127 words at once, beside a control
 * word of its own that a new wait moves to have it taken in.
 *
 * A nonblocking FFI call holds one of Deno's blocking threads for as long as it runs, and those
 * threads are few (here about 30) and shared with file I/O: thirty waits of one call each made
 * `Deno.readTextFile()` wait until one of them ended. Kernels without `futex_waitv` get one call
 * per wait, as before.
 *
 * No call sleeps longer than `ffi/call_bound.ts` says (10 s): one whose bound passed is made again,
 * unseen by its waits. A Worker terminated while it waited has nothing left to kick its call,
 * whose thread would otherwise have slept for good.
 *
 * @module
 */

import * as C from "./constants.ts";
import { callBoundMs } from "./call_bound.ts";
import { Errno, retryFailed } from "./errno.ts";
import { libc } from "./libc.ts";
import { wakeFutex } from "./futex_wake.ts";
import { guardedFaultWord } from "./sigbus_guard.ts";
import { WOKEN_CODE_TURNS } from "./woken_code.ts";
import { monotonicTimespec, timespec } from "./timespec.ts";

/** @internal `struct futex_waitv { u64 val; u64 uaddr; u32 flags; u32 reserved; }` */
export const WAITV_BYTES = 24;
/** FUTEX_WAITV_MAX, less the control word. */
const GROUP_SIZE = 127;
/** FUTEX2_SIZE_U32: each word is 32 bits; shared (no FUTEX2_PRIVATE), as other processes wake. */
const FUTEX2_SIZE_U32 = 0x02;
/**
 * How early a deadline may be found reached: the kernel's clock is read a little before the
 * JavaScript one, so its timeout can end a few microseconds before the deadline as seen here.
 */
const DEADLINE_SLACK_MS = 0.1;
/**
 * Returns in a row that nothing explains before the hub stops trusting futex_waitv. A few are
 * normal (a signal, a word that changed and changed back, a timeout a little early); a long run
 * is a call that does not sleep, and looping on it would spin.
 */
const MAX_UNEXPLAINED = 64;
/**
 * The longest one call of the fallback (a worker thread per wait) sleeps before it is made
 * again. Those threads are few (about 30 here): a wait queued behind them starts within a slice
 * or so, where a call with no limit could have kept it queued for good.
 */
const FALLBACK_SLICE_MS = 100;
/**
 * @internal How many waits whose word may be woken unchanged get a call of their own (a worker
 * thread each) at a time: in a shared call such a wait ends whenever a word of it is woken, "ok"
 * for no reason to its caller; alone, only its word, its deadline or a cancel end it. A few, as
 * the threads are few.
 */
export const OWN_CALLS = 4;

/** Calls made, in flight and kicks sent by every group, for tests: see {@link futexHubCounts}. */
const counts = { calls: 0, inFlight: 0, kicks: 0 };

/**
 * @internal How many futex_waitv calls the process's hub has made, how many of them are in
 * flight (a worker thread each), and how many kicks (a call in flight made to return to take a
 * new or cancelled wait in) it has sent, for tests.
 */
export function futexHubCounts(): { calls: number; inFlight: number; kicks: number } {
  return { ...counts };
}

/** Called once per wait: 0n when its word was woken, -1n when it changed or timed out. */
export type FutexSettle = (result: bigint) => void;

/** A wait in flight, for {@link FutexHub.cancel}. */
export interface FutexWait {
  /** Set by {@link FutexHub.cancel}: the wait is to end as soon as its call returns. */
  cancelled: boolean;
}

/** One wait; see {@link FutexSettle}. */
interface Entry extends FutexWait {
  address: bigint;
  view: Deno.UnsafePointerView;
  expected: number;
  /** `performance.now()` at which it times out; Infinity: never. */
  deadline: number;
  settle: FutexSettle;
  /** See {@link FutexHub.wait}'s `wakesWithoutChange`. */
  wakesWithoutChange: boolean;
  group: Group;
  /** Settled: a cancel now finds nothing to do (its group may hold other waits by then). */
  ended: boolean;
}

/** Up to {@link GROUP_SIZE} waits, slept on by one `futex_waitv` call at a time. */
class Group {
  readonly entries: Entry[] = [];
  /** The control word: moved and woken to make the call in flight return. */
  readonly #control = new Int32Array(new ArrayBuffer(4));
  readonly #controlAddress = Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#control));
  #running = false;
  /** Holds one wait whose word may be woken unchanged, which nothing may join: see `#groupFor`. */
  alone = false;
  /** Between calls: settling waits, or letting the code they woke run (see `WOKEN_CODE_TURNS`). */
  #settling = false;
  /** A wait was cancelled while the group settled: settle again before the next call. */
  #cancelPending = false;
  /** The waits one return ended, reused: no allocation per wake-up. */
  readonly #over: Entry[] = [];
  #unexplained = 0;
  // The call's arguments, made once: they are off V8's heap (where they could move), and the
  // kernel reads them only while the call runs, which is never twice at once. Allocating them
  // per call cost more than the rest of the hub's work.
  readonly #vector = new Uint8Array(new ArrayBuffer(WAITV_BYTES * (GROUP_SIZE + 1)));
  readonly #fields = new DataView(this.#vector.buffer);
  readonly #timeout = new BigInt64Array(new ArrayBuffer(16));
  readonly #hub: FutexHub;
  /** How many waits the call in flight sleeps on, and the control word's value it was given. */
  #armed = 0;
  #controlArmed = 0;
  /**
   * `performance.now()` at which the call in flight returns for its bound (`ffi/call_bound.ts`)
   * rather than for a wait's deadline; Infinity when a deadline comes first.
   */
  #boundArmed = Infinity;
  /** Microtask turns let pass since the last settling, and the count of waits then. */
  #turns = 0;
  #waitsBefore = 0;

  constructor(hub: FutexHub) {
    this.#hub = hub;
  }

  add(entry: Entry): void {
    this.entries.push(entry);
    // While it settles, the loop is between calls and takes the new wait in by itself.
    if (this.#settling) return;
    if (this.#running) this.#kick();
    else {
      this.#running = true;
      this.#next();
    }
  }

  /**
   * Ends `entry` without a wake-up on its word: the control word is this process's own, so this
   * works even when the word's page no longer reaches the file (a wake there finds no one).
   */
  cancel(entry: Entry): void {
    // Ended already: a kick would make the call of the waits the group holds now return for
    // nothing (one alone in its call could miss a wake-up that leaves its word unchanged).
    if (entry.ended) return;
    entry.cancelled = true;
    // While it settles, the loop is between calls: it looks again before the next one.
    if (this.#settling) this.#cancelPending = true;
    else if (this.#running) this.#kick();
  }

  /** Makes the call in flight return, so that the next one takes the waits in as they are now. */
  #kick(): void {
    counts.kicks++;
    Atomics.add(this.#control, 0, 1);
    wakeFutex(Deno.UnsafePointer.create(this.#controlAddress), 1);
  }

  /**
   * The loop's head: settles the waits cancelled meanwhile, then sleeps on the rest, or stops
   * running in the same step as it finds none (the waits it settled run their code before
   * anything queued here would, and a wait they add must find the loop stopped and start it,
   * not running and about to stop). A loop of callbacks, not an async function: the usual
   * wake-up runs cold, and resuming an async function, then suspending it again to let the woken
   * code run, cost that code microseconds before it ran.
   */
  #next(): void {
    try {
      while (this.#cancelPending) {
        this.#cancelPending = false;
        this.#settle(undefined, 0);
      }
      const count = this.entries.length;
      if (count === 0) {
        this.#running = false;
        return;
      }
      const control = Atomics.load(this.#control, 0);
      const fields = this.#fields;
      putWaitvEntry(fields, 0, control, this.#controlAddress);
      let deadline = Infinity;
      for (let i = 0; i < count; i++) {
        const entry = this.entries[i];
        putWaitvEntry(fields, i + 1, entry.expected, entry.address);
        if (entry.deadline < deadline) deadline = entry.deadline;
      }
      // Bounded even when no wait has a deadline: a call that nothing is left to kick (its
      // Worker terminated) must still end, and give its thread back.
      const now = performance.now();
      const bound = now + callBoundMs();
      this.#boundArmed = deadline < bound ? Infinity : bound;
      const timeout = monotonicTimespec(Math.min(deadline, bound) - now, this.#timeout);
      this.#armed = count;
      this.#controlArmed = control;
      const call = libc().syscall_futex_waitv_blocking(
        C.SYS_futex_waitv,
        this.#vector,
        count + 1,
        0,
        timeout,
        C.CLOCK_MONOTONIC,
      );
      counts.calls++;
      counts.inFlight++;
      call.then(this.#returned, this.#rejected);
    } catch {
      this.#failed();
    }
  }

  /** The call returned: settles the waits that are over, then lets their code run. */
  readonly #returned = (returned: bigint): void => {
    counts.inFlight--;
    try {
      const count = this.#armed;
      if (returned === 1n && count === 1 && this.entries.length === 1) {
        // The usual wake-up: a group of one wait, woken, and none joined meanwhile. It ends as
        // #settle would end it (0n unless cancelled: the word, the fault word and the deadline
        // matter only for waits kept asleep), on a shorter path: this code runs cold after every
        // sleep, and the general one cost the woken caller about 3-4 us more at the median.
        const entry = this.entries[0];
        this.entries.length = 0;
        this.#unexplained = 0;
        this.#settling = true;
        endEntry(entry, entry.cancelled ? -1n : 0n);
        this.#letWokenCodeRun();
        return;
      }
      const woken = returned > 0n ? this.entries[Number(returned) - 1] : undefined;
      const settled = this.#settle(woken, count);
      if (
        settled || returned === 0n || Atomics.load(this.#control, 0) !== this.#controlArmed ||
        // The call's bound passed: a sleep as long as it may be, not a call that does not sleep.
        performance.now() + DEADLINE_SLACK_MS >= this.#boundArmed
      ) {
        this.#unexplained = 0;
      } else if (++this.#unexplained >= MAX_UNEXPLAINED) {
        // Nothing woke, changed or ran out, time after time: futex_waitv is not doing what it
        // should here. Every wait returns as if woken and is made again one call each.
        this.#hub.distrust();
        for (const entry of this.entries.splice(0)) endEntry(entry, -1n);
      }
      if (settled) {
        this.#settling = true;
        this.#letWokenCodeRun();
      } else this.#next();
    } catch {
      this.#failed();
    }
  };

  /** The call's promise rejected, which it cannot: as {@link Group.#failed}, with the count. */
  readonly #rejected = (): void => {
    counts.inFlight--;
    this.#failed();
  };

  /**
   * Only a bug gets here (the call cannot reject, and the loop's code does not throw): the waits
   * return as if woken and are made again one call each.
   */
  readonly #failed = (): void => {
    this.#running = false;
    this.#settling = false;
    this.#hub.distrust();
    for (const entry of this.entries.splice(0)) endEntry(entry, -1n);
  };

  /**
   * Lets the code the settled waits woke run before the next call (see `WOKEN_CODE_TURNS`):
   * made at once, the call's start (a worker thread woken, tens of microseconds here) came
   * before that code, and the wait it made again needed a kick and a second call. A turn is a
   * queued microtask, which costs the woken code nothing before it runs.
   */
  #letWokenCodeRun(): void {
    this.#turns = 0;
    this.#waitsBefore = this.entries.length;
    queueMicrotask(this.#turn);
  }

  /** One turn of {@link Group.#letWokenCodeRun}; made once, not a closure per wake-up. */
  readonly #turn = (): void => {
    if (this.entries.length <= this.#waitsBefore && ++this.#turns < WOKEN_CODE_TURNS) {
      queueMicrotask(this.#turn);
      return;
    }
    this.#settling = false;
    this.#next();
  };

  /**
   * Settles the waits that are over: on the woken word, on a word that changed, past their
   * deadline, or, when a word was woken, one of the first `armed` (those the call slept on) whose
   * word may be woken without a change. Whether any was.
   */
  #settle(woken: Entry | undefined, armed: number): boolean {
    // The clock only for a wait with a deadline: most have none, and this runs on every wake-up.
    let now: number | undefined;
    let kept = 0;
    const entries = this.entries;
    const count = entries.length;
    const over = this.#over;
    const faults = guardedFaultWord();
    const faultsBefore = faults[0];
    for (let i = 0; i < count; i++) {
      const entry = entries[i];
      if (
        entry.cancelled || isWoken(entry, woken) ||
        // Read before the next test, for every wait: a read that faults tells of a lost page.
        entry.view.getInt32() !== entry.expected ||
        // A wake-up of its word may have come with the one reported (the call names one woken
        // word), or just after, before the next call sleeps: either is lost if it sleeps on.
        // Not on a kick: waits made again after a macrotask would end each other, endlessly.
        (entry.wakesWithoutChange && woken !== undefined && i < armed) ||
        (entry.deadline !== Infinity &&
          entry.deadline <= (now ??= performance.now()) + DEADLINE_SLACK_MS)
      ) {
        over.push(entry);
      } else entries[kept++] = entry;
    }
    if (faults[0] !== faultsBefore) {
      // A word read here was on a page its file lost (the guard put a private zero page there,
      // which no other process shares): a wait that slept on it again could never be woken.
      // All of them end, and each owner looks at its own words.
      for (let i = 0; i < kept; i++) over.push(entries[i]);
      kept = 0;
    }
    entries.length = kept;
    // Settled once the group is in order: a settle callback may add a wait to it.
    this.#settling = true;
    try {
      // Indexed: an iterator per wake-up costs most in the lower tiers this code runs in.
      for (let i = 0; i < over.length; i++) {
        const entry = over[i];
        endEntry(entry, isWoken(entry, woken) && !entry.cancelled ? 0n : -1n);
      }
    } finally {
      this.#settling = false;
    }
    const settled = over.length > 0;
    over.length = 0;
    return settled;
  }
}

/**
 * Whether `entry` was woken: it is the wait the call returned for, or one on the same word (the
 * same wake-up may have reached it: the call names only one). Identity first: a BigInt
 * comparison costs more, in the lower tiers this runs in, and most groups hold one wait.
 */
function isWoken(entry: Entry, woken: Entry | undefined): boolean {
  return entry === woken || (woken !== undefined && entry.address === woken.address);
}

/**
 * @internal Writes entry `index` of a `struct futex_waitv` array in `fields`: wait while the
 * shared 32-bit word at `address` holds `value`.
 */
export function putWaitvEntry(
  fields: DataView,
  index: number,
  value: number,
  address: bigint,
): void {
  const at = index * WAITV_BYTES;
  // The 64-bit val as two halves: a BigInt per word would be an allocation per call.
  fields.setUint32(at, value >>> 0, true);
  fields.setUint32(at + 4, 0, true);
  fields.setBigUint64(at + 8, address, true);
  fields.setUint32(at + 16, FUTEX2_SIZE_U32, true);
  fields.setUint32(at + 20, 0, true);
}

/** The process's futex waits; see the module description. */
class FutexHub {
  readonly #groups: Group[] = [];
  #trusted: boolean | undefined;

  /**
   * Sleeps on a worker thread while the 32-bit word at `address` holds `expected`, for at most
   * `timeoutMs`, then calls `settle` once, from the event loop: with 0n when woken, and otherwise
   * with -1n (the word changed, the time ran out, or, rarely, for no reason): the caller looks at
   * the word and the clock. A callback rather than a promise: the wake-up path runs the caller's
   * code at once, a microtask sooner. `settle` must not throw. Returns the wait, for
   * {@link FutexHub.cancel}.
   *
   * `wakesWithoutChange`: the word's wakers may leave it as it was (a notify, not a change of
   * state), so a wake-up it missed could not be told from none. The first {@link OWN_CALLS} such
   * waits at a time have a call of their own, which returns only for them. Later ones share a
   * call, and end, with -1n, whenever a word of it is woken: `futex_waitv` names one, and those
   * woken with it or just after, before the next call sleeps, would be lost. A wake-up in the
   * microseconds while a call is made again for another reason (a wait joining or leaving, or,
   * once every 10 s, the call's bound: see `ffi/call_bound.ts`) is lost, as it is between two
   * calls of the fallback. Waits whose wakers always change the word first (the state cell's,
   * the ring's) lose nothing and sleep on.
   */
  wait(
    address: bigint,
    expected: number,
    timeoutMs: number | undefined,
    settle: FutexSettle,
    wakesWithoutChange = false,
  ): FutexWait {
    const pointer = Deno.UnsafePointer.create(address);
    if (pointer === null) throw new RangeError("A futex word cannot be at address 0");
    const deadline = timeoutMs === undefined ? Infinity : performance.now() + timeoutMs;
    if (!this.#supported()) {
      return waitAlone(pointer, expected, { deadline, settle });
    }
    const view = new Deno.UnsafePointerView(pointer);
    const group = this.#groupFor(wakesWithoutChange);
    const entry: Entry = {
      address,
      view,
      expected,
      deadline,
      settle,
      wakesWithoutChange,
      cancelled: false,
      group,
      ended: false,
    };
    group.add(entry);
    return entry;
  }

  /**
   * Where a new wait goes. One whose word may be woken unchanged gets an idle group of its own,
   * up to {@link OWN_CALLS} of them, and nothing joins it there (a join makes the call return,
   * which would end it). Any other wait joins a running call that has room, else an idle group,
   * else a new one: as few threads as can hold them.
   */
  #groupFor(wakesWithoutChange: boolean): Group {
    const groups = this.#groups;
    let idle: Group | undefined;
    let shared: Group | undefined;
    let alone = 0;
    for (let i = 0; i < groups.length; i++) {
      const group = groups[i];
      const waits = group.entries.length;
      if (waits === 0) idle ??= group;
      else if (group.alone) alone++;
      else if (waits < GROUP_SIZE) shared ??= group;
    }
    const ownCall = wakesWithoutChange && alone < OWN_CALLS;
    const group = (ownCall ? idle : shared ?? idle) ?? new Group(this);
    if (group !== idle && group !== shared) groups.push(group);
    if (group !== shared) group.alone = ownCall;
    return group;
  }

  /**
   * Makes `wait` end soon with -1n, without relying on a wake-up of its word, which finds no one
   * once the word's page was cut off by a shrunk file. Returns whether that is at once; if not
   * (a kernel without futex_waitv), the wait ends when its call next returns, which a wake-up of
   * the word brings about, and which happens within {@link FALLBACK_SLICE_MS} regardless.
   * Nothing happens to a wait already settled.
   */
  cancel(wait: FutexWait): boolean {
    if (wait.cancelled) return true;
    if (!("group" in wait)) {
      wait.cancelled = true;
      return false;
    }
    (wait as Entry).group.cancel(wait as Entry);
    return true;
  }

  /** Whether waits share futex_waitv calls (Linux 5.16 and later, and trusted). */
  get pooled(): boolean {
    return this.#supported();
  }

  /** Called by a group that saw futex_waitv misbehave: every later wait gets a call of its own. */
  distrust(): void {
    this.#trusted = false;
  }

  /** Whether the kernel has futex_waitv: a call with no words fails with EINVAL, not ENOSYS. */
  #supported(): boolean {
    if (this.#trusted === undefined) {
      const call = (): bigint => libc().syscall_futex_waitv(C.SYS_futex_waitv, null, 0, 0, null, 0);
      if (call() !== -1n) {
        this.#trusted = false;
      } else {
        const retried = retryFailed(call);
        this.#trusted = !retried.ok && retried.errno !== Errno.ENOSYS;
      }
    }
    return this.#trusted;
  }
}

/**
 * One worker thread for one wait: kernels before 5.16. Each call sleeps at most
 * {@link FALLBACK_SLICE_MS} and is made again until the wait is over, so that waits queued
 * behind the few worker threads all get their turn.
 */
function waitAlone(
  pointer: Deno.PointerObject,
  expected: number,
  { deadline, settle }: { deadline: number; settle: FutexSettle },
): FutexWait {
  const wait: FutexWait = { cancelled: false };
  const view = new Deno.UnsafePointerView(pointer);
  const timeout = new BigInt64Array(new ArrayBuffer(16));
  const sleep = (): void => {
    const remaining = deadline - performance.now();
    const slice = Math.max(0, Math.min(remaining, FALLBACK_SLICE_MS));
    libc().syscall_blocking(
      C.SYS_futex,
      pointer,
      C.FUTEX_WAIT,
      expected,
      Deno.UnsafePointer.of(timespec(slice, timeout)),
      null,
      0,
    ).then((returned) => {
      // The kernel read the timespec while the call ran: it stays reachable until here.
      if (wait.cancelled) return settleSafely(settle, -1n);
      if (returned === 0n) return settleSafely(settle, 0n);
      const faults = guardedFaultWord();
      const faultsBefore = faults[0];
      // A word whose page the file lost (the read faulted) is never slept on again: see #settle.
      // A wait whose word may be woken unchanged sleeps on across slices too: ending it with each
      // one returned "ok" every 100 ms, before an abort on a slow machine (the aarch64 VM). A
      // wake-up in the moment between two slices is lost: a known limit of this path.
      if (
        view.getInt32() !== expected || faults[0] !== faultsBefore || slice === remaining ||
        remaining <= 0
      ) {
        return settleSafely(settle, -1n);
      }
      sleep();
    });
  };
  sleep();
  return wait;
}

/** Settles a wait of a group, once: see {@link Entry.ended}. */
function endEntry(entry: Entry, result: bigint): void {
  entry.ended = true;
  settleSafely(entry.settle, result);
}

/** Runs a wait's callback; one that throws must not stop the others (nor the hub's loop). */
function settleSafely(settle: FutexSettle, result: bigint): void {
  try {
    settle(result);
  } catch (error) {
    queueMicrotask(() => {
      throw error;
    });
  }
}

let hub: FutexHub | undefined;

/** The process's {@link FutexHub}, made on first use. */
export function futexHub(): FutexHub {
  return hub ??= new FutexHub();
}

export type { FutexHub };
