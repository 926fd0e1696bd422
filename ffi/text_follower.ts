/**
 * Follows a value kept as text by a writer that knows no protocol (the original C button writes
 * `"%d\n"` at offset 0 and nothing else): a Worker looks at the text every few milliseconds, off
 * the JavaScript thread, and posts only when the value (or a watched word) changes, so an idle
 * follower never wakes the event loop.
 *
 * The Worker is made from a Blob, so it needs no read permission for a module file, only the
 * `--allow-ffi` the library needs anyway.
 *
 * @module
 */

import * as C from "./constants.ts";
import { libc } from "./libc.ts";
import type { Mapping } from "./mapping.ts";
import { closeFd, duplicateFd } from "./posix.ts";

/** Where the text is: in a mapping of this process, or in a file read with pread(2). */
export type TextSource =
  | { mapping: Mapping; offset: number }
  | { fd: number };

/** Options for {@link TextFollower.start}. */
export interface TextFollowerOptions {
  /** Where the text is. */
  source: TextSource;
  /** Parses the text; must use nothing outside its own body, since it runs in the Worker. */
  parse: (bytes: Uint8Array, at: number, end: number) => number;
  /** The value the caller last saw: anything else is a change. */
  value: number;
  /** A 32-bit word whose change also counts (a sequence word), and its current value. */
  watch?: { mapping: Mapping; offset: number; value: number };
  /** How often to look, in ms. */
  periodMs: number;
  /** Runs once the Worker has stopped and reads nothing any more. */
  onStopped?: () => void;
}

/** What a follower reports: the value it read and whether the watched word moved. */
export interface FollowedChange {
  /** The value the text holds now. */
  value: number;
  /** Whether the watched word no longer holds the value it was given. */
  watchMoved: boolean;
}

const STOP = 0;
const VALUE = 1;
const GENERATION = 2;
const MOVED = 3;

interface Start {
  control: SharedArrayBuffer;
  periodMs: number;
  /** futex(2)'s syscall number on this architecture. */
  futex: string;
  fd?: number;
  address?: string;
  watchAddress?: string;
  watchValue: number;
  value: number;
}

/** What a Worker's global scope offers that the body uses. */
interface WorkerScope {
  onmessage: (event: MessageEvent<Start>) => void;
  postMessage(message: number): void;
  close(): void;
}

/** The Worker's body; it runs from its source text, so it uses nothing outside itself. */
function followerMain(): void {
  const scope = self as unknown as WorkerScope;
  scope.onmessage = (event: MessageEvent<Start>) => {
    const start = event.data;
    const control = new Int32Array(start.control);
    const lib = Deno.dlopen("libc.so.6", {
      pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
      syscall: {
        parameters: ["i64", "pointer", "i32", "i32", "buffer", "pointer", "i32"],
        result: "i64",
      },
    });
    const fd = start.fd ?? -1;
    const text = start.address === undefined ? new Uint8Array(32) : new Uint8Array(
      Deno.UnsafePointerView.getArrayBuffer(
        Deno.UnsafePointer.create(BigInt(start.address)) as Deno.PointerObject,
        32,
      ),
    );
    const watched = start.watchAddress === undefined ? undefined : new Int32Array(
      Deno.UnsafePointerView.getArrayBuffer(
        Deno.UnsafePointer.create(BigInt(start.watchAddress)) as Deno.PointerObject,
        4,
      ),
    );
    let last = start.value;
    let moved = false;
    // Sleeps in futex(2) on the stop word, so stop() wakes it at once (a nanosleep(2) could not
    // be cut short: a long period kept the Worker, and the memory it reads, for that long).
    const stopWord = Deno.UnsafePointer.of(control);
    const periodNs = BigInt(Math.round(start.periodMs * 1e6));
    const period = new BigInt64Array([periodNs / 1_000_000_000n, periodNs % 1_000_000_000n]);
    const futex = BigInt(start.futex);
    for (;;) {
      lib.symbols.syscall(futex, stopWord, 0, 0, period, null, 0); // FUTEX_WAIT while 0
      if (Atomics.load(control, 0) !== 0) break;
      if (fd >= 0) {
        const count = Number(lib.symbols.pread(fd, text, 32n, 0n));
        text.fill(0, count < 0 ? 0 : count);
      }
      const value = parseText(text, 0, 32);
      const nowMoved = watched !== undefined && Atomics.load(watched, 0) !== start.watchValue;
      if (value !== last || (nowMoved && !moved)) {
        last = value;
        moved = nowMoved;
        Atomics.store(control, 1, value);
        Atomics.store(control, 3, moved ? 1 : 0);
        Atomics.add(control, 2, 1);
        scope.postMessage(0);
      }
    }
    lib.close();
    scope.postMessage(1);
    scope.close();
  };
}

// The parse function is put into the Worker's source under this name.
declare function parseText(bytes: Uint8Array, at: number, end: number): number;

/** A running follower; see the module description. */
export class TextFollower {
  readonly #worker: Worker;
  readonly #control: Int32Array;
  readonly #stopped: Promise<void>;
  #generation = 0;
  readonly #waiting = new Set<() => void>();
  #stopping = false;
  /** Why the Worker stopped on its own, if it failed. */
  #failure: Error | undefined;

  private constructor(options: TextFollowerOptions) {
    const { source: where, watch } = options;
    // The Worker reads a descriptor of its own, made here so that it exists before the owner
    // may close theirs, and closed here once the Worker reads no more.
    const fd = "fd" in where ? duplicateFd(where.fd, "the followed file") : -1;
    const source =
      `const parseText = ${options.parse.toString()};\n(${followerMain.toString()})();`;
    const url = URL.createObjectURL(new Blob([source], { type: "application/javascript" }));
    this.#worker = new Worker(url, { type: "module" });
    URL.revokeObjectURL(url);
    const control = new SharedArrayBuffer(16);
    this.#control = new Int32Array(control);
    let resolveStopped: () => void = () => {};
    this.#stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
    let ended = false;
    const stopped = (): void => {
      if (ended) return;
      ended = true;
      this.#worker.terminate();
      if (fd >= 0) closeFd(fd);
      this.#stopping = true;
      resolveStopped();
      options.onStopped?.();
      this.#wakeAll();
    };
    this.#worker.onmessage = (event: MessageEvent<number>) => {
      if (event.data === 1) stopped();
      else this.#wakeAll();
    };
    this.#worker.onerror = (event) => {
      event.preventDefault();
      this.#failure = new Error(`the Worker that follows the text failed: ${event.message}`);
      stopped();
    };
    const start: Start = {
      control,
      periodMs: options.periodMs,
      futex: C.SYS_futex.toString(),
      value: options.value,
      watchValue: watch?.value ?? 0,
    };
    if ("fd" in where) start.fd = fd;
    else start.address = where.mapping.address(where.offset).toString();
    if (watch !== undefined) start.watchAddress = watch.mapping.address(watch.offset).toString();
    this.#worker.postMessage(start);
  }

  /** Starts a follower. */
  static start(options: TextFollowerOptions): TextFollower {
    return new TextFollower(options);
  }

  /**
   * Resolves with the next change after the last one returned, or `undefined` once the
   * follower stopped; rejects with why if the Worker failed. Any number of calls may wait at
   * once: each gets the first change made after the last one returned when it was called.
   */
  async next(): Promise<FollowedChange | undefined> {
    const after = this.#generation;
    while (!this.#stopping) {
      const generation = Atomics.load(this.#control, GENERATION);
      if (generation !== after) {
        this.#generation = generation;
        return {
          value: Atomics.load(this.#control, VALUE),
          watchMoved: Atomics.load(this.#control, MOVED) === 1,
        };
      }
      await new Promise<void>((resolve) => this.#waiting.add(resolve));
    }
    if (this.#failure !== undefined) throw this.#failure;
    return undefined;
  }

  /** Wakes every call of {@link TextFollower.next} that waits. */
  #wakeAll(): void {
    const waiting = [...this.#waiting];
    this.#waiting.clear();
    for (const resolve of waiting) resolve();
  }

  /** Stops the Worker; resolves once it no longer reads anything. Safe to call twice. */
  stop(): Promise<void> {
    if (!this.#stopping) {
      this.#stopping = true;
      Atomics.store(this.#control, STOP, 1);
      // The Worker sleeps in futex(2) on this word, not in Atomics.wait.
      libc().syscall(
        C.SYS_futex,
        Deno.UnsafePointer.of(this.#control),
        C.FUTEX_WAKE,
        1,
        null,
        null,
        0,
      );
      this.#wakeAll();
    }
    return this.#stopped;
  }
}
