/**
 * Hears, through inotify and without polling, when another process truncates (or writes with
 * write(2)) the file or shm object behind a mapping. A futex wait asleep on a page the file lost
 * is out of reach of every wake-up on its word: without this, only an abort, a close or the
 * writer's death would end it, and a reader with none of those coming slept on for good.
 *
 * One inotify instance serves the whole process (a user may have only 128), with a watch per
 * inode, and is read only while some mapping listens, that is while it has waits asleep: an idle
 * process has nothing in the poll call, and nothing keeps it alive.
 *
 * @module
 */

import * as C from "../ffi/constants.ts";
import { FdWaiter } from "../ffi/fd_waiter.ts";
import * as posix from "../ffi/posix.ts";

/** `struct inotify_event { int wd; uint32_t mask, cookie, len; char name[]; }` */
const EVENT_HEADER_BYTES = 16;
/** How long after a failed poll call the events are read again. */
const RESTART_MS = 100;

/** One mapping's watch; see {@link watchShrink}. */
export interface ShrinkWatch {
  /** Calls `onModified` for each batch of changes to the inode from now on. */
  listen(): void;
  /** Stops calling it (changes meanwhile go unheard). */
  unlisten(): void;
  /** Stops for good and lets the inode's watch go; safe to call twice. */
  close(): void;
}

interface Watcher {
  readonly wd: number;
  readonly onModified: () => void;
  listening: boolean;
  closed: boolean;
}

/** The process's inotify instance: every watched inode, and the one loop that reads events. */
class Watches {
  readonly #fd: number;
  readonly #byWd = new Map<number, Set<Watcher>>();
  readonly #buffer = new Uint8Array(4096);
  #listening = 0;
  #waiter: FdWaiter | undefined;
  /** Resolves once no poll call watches the fd (after the last listener left). */
  #released: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor() {
    this.#fd = posix.inotifyInit();
  }

  add(fd: number, onModified: () => void): Watcher {
    let wd: number;
    try {
      // The magic link reaches the inode itself, whatever name it has (or had) now.
      wd = posix.inotifyWatch(this.#fd, `/proc/self/fd/${fd}`, C.IN_MODIFY);
    } catch (error) {
      if (this.#byWd.size === 0) this.#retire();
      throw error;
    }
    const watcher: Watcher = { wd, onModified, listening: false, closed: false };
    let same = this.#byWd.get(wd);
    if (same === undefined) this.#byWd.set(wd, same = new Set());
    same.add(watcher);
    return watcher;
  }

  listen(watcher: Watcher): void {
    if (watcher.listening || watcher.closed) return;
    watcher.listening = true;
    if (this.#listening++ === 0) this.#start();
  }

  unlisten(watcher: Watcher): void {
    if (!watcher.listening) return;
    watcher.listening = false;
    if (--this.#listening === 0) this.#stop();
  }

  remove(watcher: Watcher): void {
    if (watcher.closed) return;
    this.unlisten(watcher);
    watcher.closed = true;
    const same = this.#byWd.get(watcher.wd);
    same?.delete(watcher);
    if (same?.size === 0) {
      this.#byWd.delete(watcher.wd);
      posix.inotifyUnwatch(this.#fd, watcher.wd);
    }
    if (this.#byWd.size === 0) this.#retire();
  }

  /**
   * Closes the instance once nothing reads it; a watch added before then keeps it (a user may
   * have only 128: closing and watching in one step must not take a new one each time).
   */
  #retire(): void {
    const released = this.#released;
    void released.then(() => {
      if (this.#closed || this.#byWd.size > 0) return;
      if (this.#released !== released) return this.#retire(); // a later poll call to wait for
      this.#closed = true;
      posix.closeFd(this.#fd);
    });
  }

  /** Whether the instance's fd is closed: the next watch makes a new one. */
  get closed(): boolean {
    return this.#closed;
  }

  #start(): void {
    // What piled up while nobody listened is read and told like any change: a truncation
    // between a wait's read of its word and its sleep is among it. At worst one look too many.
    const waiter = this.#waiter = new FdWaiter();
    void this.#loop(waiter);
  }

  #stop(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    if (waiter !== undefined) this.#released = Promise.all([this.#released, waiter.close()]);
  }

  async #loop(waiter: FdWaiter): Promise<void> {
    for (;;) {
      const readiness = await waiter.wait(this.#fd);
      if (readiness === "cancelled" || this.#waiter !== waiter) return;
      // A failed poll call tells every listener: better a look too many than a change unheard.
      const modified = readiness === "readable" ? this.#drain() : new Set(this.#byWd.keys());
      for (const wd of modified) {
        for (const watcher of this.#byWd.get(wd) ?? []) {
          if (!watcher.listening) continue;
          try {
            watcher.onModified();
          } catch {
            // Only a memory closing meanwhile gets here; the others must still hear.
          }
        }
      }
      if (readiness !== "readable") {
        // The poll call gave up (its hub ends every wait after a few failures in a row): a new
        // waiter a moment later, while anyone listens, rather than a loop that spins or stops.
        this.#waiter = undefined;
        this.#released = Promise.all([this.#released, waiter.close()]);
        setTimeout(() => {
          if (this.#listening > 0 && this.#waiter === undefined && !this.#closed) this.#start();
        }, RESTART_MS);
        return;
      }
    }
  }

  /**
   * Reads every pending event; returns the watches that saw a change (all of them on an
   * overflow, or when the read fails: better a look too many than a change unheard).
   */
  #drain(): Set<number> {
    const modified = new Set<number>();
    for (;;) {
      let count: number;
      try {
        count = posix.readFd(this.#fd, this.#buffer, "inotify events");
      } catch {
        return new Set(this.#byWd.keys());
      }
      if (count <= 0) return modified;
      const view = new DataView(this.#buffer.buffer, 0, count);
      for (let at = 0; at + EVENT_HEADER_BYTES <= count;) {
        const wd = view.getInt32(at, true);
        const mask = view.getUint32(at + 4, true);
        if ((mask & C.IN_Q_OVERFLOW) !== 0) {
          for (const any of this.#byWd.keys()) modified.add(any);
        } else if ((mask & C.IN_MODIFY) !== 0) modified.add(wd);
        at += EVENT_HEADER_BYTES + view.getUint32(at + 12, true);
      }
    }
  }
}

let watches: Watches | undefined;
let disabled = false;

/**
 * @internal For tests: regions opened from now on are not watched, so that what ends a wait
 * asleep on a lost page can be told from the truncation itself.
 */
export function disableShrinkWatch(): void {
  disabled = true;
}

/**
 * Watches the inode behind `fd` (a file or shm object that may be mapped) for truncation: while
 * listening, `onModified` is called after each batch of changes to it. Throws when inotify
 * cannot watch it (out of instances or watches): the caller then looks for itself (the memory
 * reads its sleeping waits' words every so often). Undefined after {@link disableShrinkWatch}.
 */
export function watchShrink(fd: number, onModified: () => void): ShrinkWatch | undefined {
  if (disabled) return undefined;
  if (watches === undefined || watches.closed) watches = new Watches();
  const owner = watches;
  const watcher = owner.add(fd, onModified);
  return {
    listen: () => owner.listen(watcher),
    unlisten: () => owner.unlisten(watcher),
    close: () => owner.remove(watcher),
  };
}
