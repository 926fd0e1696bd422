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

/** Sleeps until an fd has data, without holding the event loop. */
export class FdWaiter {
  readonly #cancelFd: number;
  #closed = false;
  #inFlight: Promise<Readiness> | undefined;

  constructor() {
    this.#cancelFd = createEventFd();
  }

  /** Resolves when `fd` is readable or hung up, or when {@link FdWaiter.cancel} is called. */
  async wait(fd: number): Promise<Readiness> {
    if (this.#closed) return "cancelled";
    const fds = new Uint8Array(16);
    const view = new DataView(fds.buffer);
    view.setInt32(0, fd, true);
    view.setInt16(4, C.POLLIN, true);
    view.setInt32(8, this.#cancelFd, true);
    view.setInt16(12, C.POLLIN, true);
    const call = libc().poll_blocking(fds, 2n, -1);
    this.#inFlight = call.then(() => "readable" as Readiness);
    const result = await call;
    this.#inFlight = undefined;
    if (this.#closed || (view.getInt16(14, true) & C.POLLIN) !== 0) return "cancelled";
    if (result < 0) return "error";
    const revents = view.getInt16(6, true);
    if ((revents & C.POLLIN) !== 0) return "readable";
    if ((revents & C.POLLHUP) !== 0) return "hangup";
    return "error";
  }

  /** Ends the wait in flight (and every later one) with `"cancelled"`. */
  cancel(): void {
    if (this.#closed) return;
    this.#closed = true;
    writeFd(this.#cancelFd, new Uint8Array(new BigUint64Array([1n]).buffer), "eventfd");
  }

  /** Cancels and, once no wait is in flight, closes the eventfd; safe to call twice. */
  async close(): Promise<void> {
    this.cancel();
    await this.#inFlight;
    if (this.#cancelFd >= 0) closeFd(this.#cancelFd);
  }
}
