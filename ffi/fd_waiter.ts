/**
 * Waits for fds to become readable without holding the event loop: every wait of the process
 * shares one poll(2) call on one of Deno's worker threads (`nonblocking: true`), with an eventfd
 * beside the fds that a new or cancelled wait writes to have the call taken again.
 *
 * A nonblocking FFI call holds one of Deno's blocking threads for as long as it runs, and those
 * threads are few (here about 30) and shared with file I/O: a poll call per wait (a pidfd per
 * watched writer, an inotify fd per watched path) soon made `Deno.readTextFile()` wait.
 *
 * @module
 */

import * as C from "./constants.ts";
import { libc } from "./libc.ts";
import { closeFd, createEventFd, readFd, writeFd } from "./posix.ts";
import { letWokenCodeRun } from "./woken_code.ts";

/** What a readable wait saw on the watched fd. */
export type Readiness = "readable" | "hangup" | "cancelled" | "error";

const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);
/** `struct pollfd { int fd; short events; short revents; }` */
const POLLFD_BYTES = 8;
/** Failed poll calls in a row (EINTR is one, rarely) before every wait is ended with `"error"`. */
const MAX_FAILURES = 3;

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
  /** For `letWokenCodeRun`, made once: not a closure per wake-up. */
  readonly #waitCount = (): number => this.#entries.size;
  /** Written to make the call in flight return; made when the first wait comes, closed with the last. */
  #kickFd = -1;
  readonly #drain = new Uint8Array(new ArrayBuffer(8));
  #running = false;
  /** Between calls, letting the code the last one woke run (see `letWokenCodeRun`). */
  #yielding = false;
  #failures = 0;
  /** Resolves when the call in flight returns. */
  #returned: Promise<void> = Promise.resolve();

  add(entry: PollEntry): void {
    this.#entries.add(entry);
    // While it yields, no call is in flight: the next one takes the new wait in.
    if (this.#yielding) return;
    if (this.#running) this.#kick();
    else void this.#run();
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
    return this.#returned;
  }

  #kick(): void {
    counts.kicks++;
    writeFd(this.#kickFd, ONE, "eventfd");
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      await this.#loop();
    } catch {
      // No eventfd could be made (EMFILE) or read: the waits end, their owners say what failed.
      this.#stop();
      this.#endAll("error");
    }
  }

  /** Not running any more, and the eventfd closed, in one step: see {@link PollHub.#loop}. */
  #stop(): void {
    this.#running = false;
    if (this.#kickFd >= 0) closeFd(this.#kickFd);
    this.#kickFd = -1;
  }

  /**
   * Polls until no wait is left. It stops in the same step as it finds none: the waits it
   * settled run their code before anything after an `await` here would, and a wait they add
   * must find the hub stopped (and start it), not running and about to stop.
   */
  async #loop(): Promise<void> {
    this.#kickFd = createEventFd();
    for (;;) {
      if (this.#entries.size === 0) return this.#stop();
      const entries = [...this.#entries];
      // A buffer of its own (never on V8's heap, where it could move), kept until the call
      // returns: the kernel writes the revents into it.
      const fds = new DataView(new ArrayBuffer(POLLFD_BYTES * (entries.length + 1)));
      pollFd(fds, 0, this.#kickFd);
      entries.forEach((entry, i) => pollFd(fds, i + 1, entry.fd));
      let returned!: () => void;
      this.#returned = new Promise((resolve) => (returned = resolve));
      let result: number;
      counts.calls++;
      try {
        result = await libc().poll_blocking(
          new Uint8Array(fds.buffer),
          BigInt(entries.length + 1),
          -1,
        );
      } finally {
        returned();
      }
      if ((fds.getInt16(6, true) & C.POLLIN) !== 0) readFd(this.#kickFd, this.#drain, "eventfd");
      if (result < 0) {
        // errno belongs to the worker thread: EINTR is retried, anything lasting ends all.
        if (++this.#failures >= MAX_FAILURES) this.#endAll("error");
        continue;
      }
      this.#failures = 0;
      let settled = 0;
      entries.forEach((entry, i) => {
        const revents = fds.getInt16((i + 1) * POLLFD_BYTES + 6, true);
        if (revents === 0 || !this.#entries.delete(entry)) return;
        settled++;
        entry.settle(
          (revents & C.POLLIN) !== 0
            ? "readable"
            : (revents & C.POLLHUP) !== 0
            ? "hangup"
            : "error",
        );
      });
      if (settled > 0) await this.#letWokenCodeRun();
    }
  }

  async #letWokenCodeRun(): Promise<void> {
    this.#yielding = true;
    try {
      await letWokenCodeRun(this.#waitCount);
    } finally {
      this.#yielding = false;
    }
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
