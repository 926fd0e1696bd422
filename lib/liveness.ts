/**
 * Whether the process behind a claim (pid and start time) still runs, learnt without polling:
 * the kernel makes a pidfd readable when its process ends. A waiter learns of a death as it
 * happens, and nothing wakes up while the process lives.
 *
 * @module
 */

import { FdWaiter } from "../ffi/fd_waiter.ts";
import * as posix from "../ffi/posix.ts";
import { claimIsLive, pidOf } from "./claim.ts";

/** Watches the process that holds one claim; see the module description. */
export class ProcessWatch {
  /** The claim watched. */
  readonly claim: bigint;
  #pidfd: number | undefined;
  #alive: boolean;
  #waiter: FdWaiter | undefined;
  readonly #listeners = new Set<() => void>();

  /** Checks once (signal 0 and the start time in /proc), then opens a pidfd for the rest. */
  constructor(claim: bigint) {
    this.claim = claim;
    this.#alive = claimIsLive(claim);
    if (!this.#alive) return;
    this.#pidfd = posix.openPidfd(pidOf(claim));
    // The pid may have ended and been reused between the check and the open: check again, now
    // that the pidfd pins the process.
    if (this.#pidfd === undefined || !claimIsLive(claim)) this.#died();
  }

  /** The watched pid. */
  get pid(): number {
    return pidOf(this.claim);
  }

  /** Whether the process ran at the last look; a listener keeps this current without syscalls. */
  get alive(): boolean {
    return this.#alive;
  }

  /** Looks now (one poll(2) with no wait), for callers that cannot listen. */
  check(): boolean {
    if (this.#alive && this.#pidfd !== undefined && posix.isReadable(this.#pidfd)) this.#died();
    return this.#alive;
  }

  /**
   * Calls `listener` once when the process ends, from the event loop. While anyone listens a
   * poll(2) on the pidfd runs on a worker thread (and keeps the process alive); returns the
   * function that stops listening.
   */
  onDeath(listener: () => void): () => void {
    if (!this.#alive) {
      queueMicrotask(listener);
      return () => {};
    }
    this.#listeners.add(listener);
    if (this.#waiter === undefined && this.#pidfd !== undefined) {
      const waiter = new FdWaiter();
      this.#waiter = waiter;
      waiter.wait(this.#pidfd).then((readiness) => {
        if (readiness !== "cancelled" && this.#waiter === waiter) {
          this.#waiter = undefined;
          waiter.close();
          this.#died();
        }
      });
    }
    return () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size === 0) this.#stopWaiting();
    };
  }

  /** Stops listening and closes the pidfd; safe to call twice. */
  close(): void {
    this.#listeners.clear();
    this.#closePidfd();
  }

  #stopWaiting(): void {
    this.#waiter?.close();
    this.#waiter = undefined;
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
    this.#closePidfd();
    const listeners = [...this.#listeners];
    this.#listeners.clear();
    for (const listener of listeners) listener();
  }
}
