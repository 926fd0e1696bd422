/**
 * Waits for fds to become readable without holding the event loop: every wait of the process
 * shares one poll(2) call on one of Deno's worker threads (`nonblocking: true`), with an eventfd
 * beside the fds that a new or cancelled wait writes to have the call taken again.
 *
 * A nonblocking FFI call holds one of Deno's blocking threads for as long as it runs, and those
 * threads are few (here about 30) and shared with file I/O: a poll call per wait (a pidfd per
 * watched writer, an inotify fd per watched path) soon made `Deno.readTextFile()` wait.
 *
 * No call sleeps longer than `ffi/call_bound.ts` says (10 s): one that returns with nothing ready
 * is made again, unseen by the waits. A Worker terminated while it waited has nothing left to
 * kick its call, whose thread would otherwise have slept for good.
 *
 * @module
 */

import * as C from "./constants.ts";
import { callBoundMs } from "./call_bound.ts";
import { libc } from "./libc.ts";
import { closeFd, createEventFd, readFd, writeFd } from "./posix.ts";
import { WOKEN_CODE_TURNS } from "./woken_code.ts";

/** What a readable wait saw on the watched fd. */
export type Readiness = "readable" | "hangup" | "cancelled" | "error";

const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);
/** `struct pollfd { int fd; short events; short revents; }` */
const POLLFD_BYTES = 8;
/** Failed poll calls in a row (EINTR is one, rarely) before every wait is ended with `"error"`. */
const MAX_FAILURES = 3;

/** Why the hub could not start, the last time it tried: see {@link pollFailure}. */
let lastFailure: Error | undefined;

/**
 * Why the waits last ended with `"error"` when the hub could not even start (its eventfd could
 * not be made: EMFILE, say), for an owner to say; undefined once it started again.
 */
export function pollFailure(): Error | undefined {
  return lastFailure;
}

/** Poll calls made and kicks sent by the process's hub, for tests: see {@link pollCounts}. */
const counts = { calls: 0, kicks: 0 };

/**
 * @internal How many poll calls the process has made, and how many kicks (a call in flight made
 * to return to take a new or cancelled wait in), for tests.
 */
export function pollCounts(): { calls: number; kicks: number } {
  return { ...counts };
}

interface PollEntry {
  fd: number;
  settle: (readiness: Readiness) => void;
}

/** The process's fd waits, in one poll call at a time. */
class PollHub {
  readonly #entries = new Set<PollEntry>();
  /** Written to make the call in flight return; made when the first wait comes, closed with the last. */
  #kickFd = -1;
  readonly #drain = new Uint8Array(new ArrayBuffer(8));
  /**
   * The call's `struct pollfd` array: the eventfd, then one per wait. Outside V8's heap (an
   * ArrayBuffer's bytes never move), written only between calls, and kept for the next one:
   * allocating one per call cost a wake-up about a microsecond.
   */
  #fds = new DataView(new ArrayBuffer(POLLFD_BYTES * 8));
  #fdBytes = new Uint8Array(this.#fds.buffer);
  /** The waits the call in flight watches, in the order of its array after the eventfd. */
  #polled: PollEntry[] = [];
  #running = false;
  /** Between calls, letting the code the last one woke run (see `WOKEN_CODE_TURNS`). */
  #yielding = false;
  #turns = 0;
  #waitsBefore = 0;
  #failures = 0;
  /** Resolves the promise {@link PollHub.remove} gave out while a call was in flight, if any. */
  #callReturned: (() => void) | undefined;
  #whenCallReturns: Promise<void> | undefined;

  add(entry: PollEntry): void {
    this.#entries.add(entry);
    // While it yields, no call is in flight: the next one takes the new wait in.
    if (this.#yielding) return;
    if (this.#running) this.#kick();
    else this.#start();
  }

  /**
   * Ends `entry` with `"cancelled"`. The promise resolves once no call in flight watches its fd
   * any more, after which the fd may be closed.
   */
  remove(entry: PollEntry): Promise<void> {
    if (!this.#entries.delete(entry)) return Promise.resolve();
    entry.settle("cancelled");
    if (!this.#running || this.#yielding) return Promise.resolve();
    this.#kick();
    return this.#whenCallReturns ??= new Promise((resolve) => (this.#callReturned = resolve));
  }

  #kick(): void {
    counts.kicks++;
    writeFd(this.#kickFd, ONE, "eventfd");
  }

  #start(): void {
    this.#running = true;
    try {
      this.#kickFd = createEventFd();
    } catch (error) {
      // No eventfd could be made (EMFILE): the waits end, their owners say what failed.
      lastFailure = error instanceof Error ? error : new Error(String(error));
      return this.#fail();
    }
    lastFailure = undefined;
    this.#next();
  }

  /**
   * Makes the next call, or stops in the same step as it finds no wait left: the waits it
   * settled run their code before anything queued here would, and a wait they add must find the
   * hub stopped (and start it), not running and about to stop.
   */
  #next(): void {
    const count = this.#entries.size;
    if (count === 0) return this.#stop();
    if (this.#fds.byteLength < POLLFD_BYTES * (count + 1)) {
      this.#fds = new DataView(new ArrayBuffer(POLLFD_BYTES * 2 * (count + 1)));
      this.#fdBytes = new Uint8Array(this.#fds.buffer);
    }
    const fds = this.#fds;
    const polled = this.#polled;
    polled.length = 0;
    pollFd(fds, 0, this.#kickFd);
    for (const entry of this.#entries) {
      polled.push(entry);
      pollFd(fds, polled.length, entry.fd);
    }
    counts.calls++;
    try {
      // Bounded: a call that nothing is left to kick (its Worker terminated) must still end, and
      // give its thread back. One that returns 0 (nothing ready) is simply made again.
      libc().poll_blocking(this.#fdBytes, BigInt(count + 1), callBoundMs())
        .then(this.#returned, this.#failed);
    } catch {
      this.#fail();
    }
  }

  /** The call returned: settles the waits whose fd is ready, then lets their code run. */
  readonly #returned = (result: number): void => {
    this.#callEnded();
    try {
      const fds = this.#fds;
      const kicked = fds.getInt16(6, true);
      if ((kicked & C.POLLNVAL) !== 0) {
        // Its eventfd was closed under it (a double close elsewhere in the process): every next
        // call would return at once, for ever. The number is someone else's now: not closed here.
        this.#kickFd = -1;
        return this.#fail();
      }
      if ((kicked & C.POLLIN) !== 0) readFd(this.#kickFd, this.#drain, "eventfd");
      if (result < 0) {
        // errno belongs to the worker thread: EINTR is retried, anything lasting ends all.
        if (++this.#failures >= MAX_FAILURES) this.#endAll("error");
        return this.#next();
      }
      this.#failures = 0;
      const polled = this.#polled;
      let settled = 0;
      for (let i = 0; i < polled.length; i++) {
        const entry = polled[i];
        const revents = fds.getInt16((i + 1) * POLLFD_BYTES + 6, true);
        if (revents === 0 || !this.#entries.delete(entry)) continue;
        settled++;
        entry.settle(
          (revents & C.POLLIN) !== 0
            ? "readable"
            : (revents & C.POLLHUP) !== 0
            ? "hangup"
            : "error",
        );
      }
      if (settled === 0) return this.#next();
      this.#yielding = true;
      this.#turns = 0;
      this.#waitsBefore = this.#entries.size;
      queueMicrotask(this.#turn);
    } catch {
      // The eventfd could not be read: the waits end, their owners say what failed.
      this.#fail();
    }
  };

  /** Only a bug gets here: the call cannot reject. */
  readonly #failed = (): void => {
    this.#callEnded();
    this.#fail();
  };

  /** Resolves the promise {@link PollHub.remove} gave out for the call that ended, if any. */
  #callEnded(): void {
    const callReturned = this.#callReturned;
    this.#callReturned = this.#whenCallReturns = undefined;
    callReturned?.();
  }

  /**
   * One microtask turn of the code the settled waits woke (see `WOKEN_CODE_TURNS`); the last
   * makes the next call. Made once, not a closure per wake-up.
   */
  readonly #turn = (): void => {
    if (this.#entries.size <= this.#waitsBefore && ++this.#turns < WOKEN_CODE_TURNS) {
      queueMicrotask(this.#turn);
      return;
    }
    this.#yielding = false;
    this.#next();
  };

  /** Not running any more, and the eventfd closed, in one step: see {@link PollHub.#next}. */
  #stop(): void {
    this.#running = false;
    this.#yielding = false;
    this.#polled.length = 0;
    // A run of failed calls belongs to the run of the hub it ended: the next starts afresh.
    this.#failures = 0;
    if (this.#kickFd >= 0) closeFd(this.#kickFd);
    this.#kickFd = -1;
  }

  /** Stops and ends every wait with `"error"`. */
  #fail(): void {
    this.#stop();
    this.#endAll("error");
  }

  #endAll(readiness: Readiness): void {
    for (const entry of this.#entries) entry.settle(readiness);
    this.#entries.clear();
  }
}

function pollFd(fds: DataView, index: number, fd: number): void {
  fds.setInt32(index * POLLFD_BYTES, fd, true);
  fds.setInt16(index * POLLFD_BYTES + 4, C.POLLIN, true);
  fds.setInt16(index * POLLFD_BYTES + 6, 0, true);
}

let hub: PollHub | undefined;

/** Sleeps until an fd has data, without holding the event loop. One wait at a time. */
export class FdWaiter {
  #cancelled = false;
  #entry: PollEntry | undefined;
  #closing: Promise<void> | undefined;

  /**
   * Resolves when `fd` is readable or hung up, or with `"cancelled"` once
   * {@link FdWaiter.cancel} or {@link FdWaiter.close} was called. The caller keeps `fd` open
   * until the wait has settled, and after a cancel until {@link FdWaiter.close} resolved.
   */
  wait(fd: number): Promise<Readiness> {
    if (this.#cancelled) return Promise.resolve("cancelled");
    if (this.#entry !== undefined) {
      return Promise.reject(
        new Deno.errors.Busy("Another wait is already in flight on this FdWaiter"),
      );
    }
    return new Promise((resolve) => {
      this.#entry = {
        fd,
        settle: (readiness) => {
          this.#entry = undefined;
          resolve(readiness);
        },
      };
      (hub ??= new PollHub()).add(this.#entry);
    });
  }

  /** Ends the wait in flight (and every later one) with `"cancelled"`. */
  cancel(): void {
    if (this.#cancelled) return;
    this.#cancelled = true;
    if (this.#entry !== undefined) this.#closing = hub?.remove(this.#entry);
  }

  /** Cancels; resolves once no poll call watches the fd any more. Safe to call twice. */
  close(): Promise<void> {
    this.cancel();
    return this.#closing ?? Promise.resolve();
  }
}
