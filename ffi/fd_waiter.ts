/**
 * Waits for an fd to become readable on a worker thread (poll(2) with `nonblocking: true`),
 * with an eventfd beside it so the wait can be cancelled at once from JavaScript.
 *
 * @module
 */

import * as C from "./constants.ts";
import { libc } from "./libc.ts";
import { closeFd, createEventFd, writeFd } from "./posix.ts";

/** What a readable wait saw on the watched fd. */
export type Readiness = "readable" | "hangup" | "cancelled" | "error";

const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

/** Sleeps until an fd has data, without holding the event loop. One wait at a time. */
export class FdWaiter {
  #cancelFd: number;
  #cancelled = false;
  #inFlight: Promise<unknown> | undefined;
  #closing: Promise<void> | undefined;
  /** The pollfd pair, reused: only one wait runs at a time. */
  readonly #fds = new Uint8Array(16);
  readonly #view = new DataView(this.#fds.buffer);

  constructor() {
    this.#cancelFd = createEventFd();
  }

  /**
   * Resolves when `fd` is readable or hung up, or with `"cancelled"` once
   * {@link FdWaiter.cancel} or {@link FdWaiter.close} was called. The caller keeps `fd` open
   * until the wait has settled.
   */
  async wait(fd: number): Promise<Readiness> {
    if (this.#cancelled) return "cancelled";
    if (this.#inFlight !== undefined) {
      throw new Deno.errors.Busy("Another wait is already in flight on this FdWaiter");
    }
    const view = this.#view;
    view.setInt32(0, fd, true);
    view.setInt16(4, C.POLLIN, true);
    view.setInt16(6, 0, true);
    view.setInt32(8, this.#cancelFd, true);
    view.setInt16(12, C.POLLIN, true);
    view.setInt16(14, 0, true);
    const call = libc().poll_blocking(this.#fds, 2n, -1);
    this.#inFlight = call;
    let result: number;
    try {
      result = await call;
    } finally {
      this.#inFlight = undefined;
    }
    if (this.#cancelled || (view.getInt16(14, true) & C.POLLIN) !== 0) return "cancelled";
    if (result < 0) return "error";
    const revents = view.getInt16(6, true);
    if ((revents & C.POLLIN) !== 0) return "readable";
    if ((revents & C.POLLHUP) !== 0) return "hangup";
    return "error";
  }

  /** Ends the wait in flight (and every later one) with `"cancelled"`. */
  cancel(): void {
    if (this.#cancelled) return;
    this.#cancelled = true;
    writeFd(this.#cancelFd, ONE, "eventfd");
  }

  /**
   * Cancels and, once no wait is in flight, closes the eventfd. Safe to call twice, also at
   * once: the eventfd is closed exactly once.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.cancel();
      await this.#inFlight?.catch(() => {});
      closeFd(this.#cancelFd);
      this.#cancelFd = -1;
    })();
    return this.#closing;
  }
}
