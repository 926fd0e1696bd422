/**
 * Whether the thread behind a claim (its id and start time) still runs, learnt without polling:
 * the kernel makes a pidfd readable when its process ends, or for a Worker's claim (Linux 6.9
 * and later) when its thread does. A waiter learns of a death as it happens, and nothing wakes
 * up while the holder lives. On older kernels a Worker's claim is looked at every
 * {@link THREAD_LOOK_MS} while someone listens.
 *
 * @module
 */

import { FdWaiter } from "../ffi/fd_waiter.ts";
import * as posix from "../ffi/posix.ts";
import { claimIsLive, describeHolder, knownProcessOf, processOf, threadOf } from "./claim.ts";

/**
 * How often a Worker's claim is looked at while someone listens, on kernels before 6.9, which
 * have no pidfd for a thread.
 */
export const THREAD_LOOK_MS = 100;
/** How long after a failed poll call (not a death) the pidfd is waited on again. */
const RETRY_MS = 100;

/** Watches the thread that holds one claim; see the module description. */
export class ProcessWatch {
  /** The claim watched. */
  readonly claim: bigint;
  /** The holder's process: for a Worker's claim, the process the Worker runs in. */
  readonly pid: number;
  #pidfd: number | undefined;
  /** A Worker's claim on a kernel with no pidfd for a thread: looked at, not watched. */
  readonly #looked: boolean;
  #alive: boolean;
  #waiter: FdWaiter | undefined;
  #lookTimer: ReturnType<typeof setInterval> | undefined;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #listeners = new Set<() => void>();
  #closed = false;

  /** Checks once (signal 0 and the start time in /proc), then opens a pidfd for the rest. */
  constructor(claim: bigint) {
    this.claim = claim;
    const thread = threadOf(claim);
    this.#alive = claimIsLive(claim);
    // Found dead, it is not looked at twice: processOf() would look again.
    this.pid = this.#alive ? processOf(claim) : knownProcessOf(claim);
    const worker = this.pid !== thread;
    this.#looked = worker && !posix.threadPidfds();
    if (!this.#alive || this.#looked) return;
    this.#pidfd = posix.openPidfd(thread, { thread: worker });
    // The id may have ended and been reused between the check and the open: check again, now
    // that the pidfd pins the thread.
    if (this.#pidfd === undefined || !claimIsLive(claim)) this.#died();
  }

  /**
   * Whether the process ran at the last look; a listener keeps this current without syscalls.
   * Throws `BadResource` once closed, as every method does but `close()`.
   */
  get alive(): boolean {
    this.#checkOpen();
    return this.#alive;
  }

  /** Looks now (one poll(2) with no wait), for callers that cannot listen. */
  check(): boolean {
    this.#checkOpen();
    return this.#look();
  }

  #look(): boolean {
    if (!this.#alive) return false;
    const pidfd = this.#pidfd;
    const ended = this.#looked
      ? !claimIsLive(this.claim)
      : pidfd !== undefined && posix.isReadable(pidfd);
    if (ended) this.#died();
    return this.#alive;
  }

  /**
   * Calls `listener` once when the holder ends, from the event loop. While anyone listens a
   * poll(2) on the pidfd runs on a worker thread, or a timer looks (either keeps the process
   * alive); returns the function that stops listening. A listener that throws has its error
   * reported as an uncaught one (`reportError`) once every listener has been called.
   */
  onDeath(listener: () => void): () => void {
    this.#checkOpen();
    if (!this.#alive) {
      queueMicrotask(listener);
      return () => {};
    }
    this.#listeners.add(listener);
    if (this.#looked) {
      this.#lookTimer ??= setInterval(() => this.#look(), THREAD_LOOK_MS);
    } else this.#startWaiting();
    return () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size === 0) this.#stopWaiting();
    };
  }

  /** Stops listening and closes the pidfd; safe to call twice. */
  close(): void {
    this.#closed = true;
    this.#listeners.clear();
    this.#stopLooking();
    this.#closePidfd();
  }

  /** Same as {@link ProcessWatch.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #checkOpen(): void {
    if (this.#closed) {
      throw new Deno.errors.BadResource(`The watch of ${describeHolder(this.claim)} is closed`);
    }
  }

  #startWaiting(): void {
    const pidfd = this.#pidfd;
    if (this.#waiter !== undefined || this.#retryTimer !== undefined || pidfd === undefined) return;
    const waiter = new FdWaiter();
    this.#waiter = waiter;
    waiter.wait(pidfd).then((readiness) => {
      if (readiness === "cancelled" || this.#waiter !== waiter) return;
      this.#waiter = undefined;
      waiter.close();
      if (readiness === "readable" || readiness === "hangup") return this.#died();
      // The poll call failed (its hub could not make its eventfd: EMFILE), which tells nothing
      // of the holder: looked at now without it, and waited on again a moment later.
      if (!this.#look()) return;
      // Cleared when the last listener leaves (#stopWaiting), when it dies and at close.
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = undefined;
        this.#startWaiting();
      }, RETRY_MS);
    });
  }

  #stopWaiting(): void {
    this.#waiter?.close();
    this.#waiter = undefined;
    this.#stopLooking();
  }

  #stopLooking(): void {
    clearInterval(this.#lookTimer);
    this.#lookTimer = undefined;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
  }

  /** Closes the pidfd, once a poll in flight on it (if any) has returned. */
  #closePidfd(): void {
    const pidfd = this.#pidfd;
    const waiter = this.#waiter;
    this.#pidfd = undefined;
    this.#waiter = undefined;
    if (pidfd === undefined) return;
    if (waiter === undefined) posix.closeFd(pidfd);
    else waiter.close().then(() => posix.closeFd(pidfd));
  }

  #died(): void {
    if (!this.#alive) return;
    this.#alive = false;
    this.#stopLooking();
    this.#closePidfd();
    const listeners = [...this.#listeners];
    this.#listeners.clear();
    // Each is told, whatever another threw; a throw is not this watch's to swallow.
    const thrown: unknown[] = [];
    for (const listener of listeners) {
      try {
        listener();
      } catch (error) {
        thrown.push(error);
      }
    }
    for (const error of thrown) reportError(error);
  }
}
