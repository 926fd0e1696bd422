/**
 * Follows values kept as text by writers that know no protocol (the original C button writes
 * `"%d\n"` at offset 0 and nothing else): a Worker looks at each text every few milliseconds,
 * off the JavaScript thread, and posts only when a value (or a watched word) changes, so an idle
 * follower never wakes the event loop.
 *
 * Every follower of the process shares one Worker (a Worker is a V8 isolate of its own, about
 * 7.6 MiB and two threads), up to {@link FOLLOWERS_PER_WORKER} of them; followers that parse
 * with another function get a Worker of their own. The Worker ends when its last follower stops.
 * It learns of followers through shared memory, never through messages: it never returns to its
 * event loop, and sleeps in futex(2) until the next look is due or the main thread wakes it.
 *
 * The Worker is made from a Blob, so it needs no read permission for a module file, only the
 * `--allow-ffi` the library needs anyway.
 *
 * @module
 */

import * as C from "./constants.ts";
import { type FollowerLibc, followerLibc, libc } from "./libc.ts";
import type { Mapping } from "./mapping.ts";
import type { OsError } from "./errno.ts";
import { closeFd, createEventFd, duplicateFd } from "./posix.ts";

/** Where the text is: in a mapping of this process, or in a file read with pread(2). */
export type TextSource =
  | { mapping: Mapping; offset: number }
  | { fd: number };

/** Options for {@link TextFollower.start}. */
export interface TextFollowerOptions {
  /** Where the text is. */
  source: TextSource;
  /**
   * Parses the text; must use nothing outside its own body, since it runs in the Worker.
   * Followers share a Worker only if their parse functions have the same source text.
   */
  parse: (bytes: Uint8Array, at: number, end: number) => number;
  /** The value the caller last saw: anything else is a change. */
  value: number;
  /** A 32-bit word whose change also counts (a sequence word), and its current value. */
  watch?: { mapping: Mapping; offset: number; value: number };
  /** How often to look, in ms. */
  periodMs: number;
  /** Runs once the Worker no longer reads anything for this follower. */
  onStopped?: () => void;
}

/** What a follower reports: the value it read and whether the watched word moved. */
export interface FollowedChange {
  /** The value the text holds now. */
  value: number;
  /** Whether the watched word no longer holds the value it was given. */
  watchMoved: boolean;
}

/** How many followers one Worker looks after; more start another Worker. */
export const FOLLOWERS_PER_WORKER = 128;

// The shared memory: a header, then one record per follower (a slot). Word indexes are in
// 32-bit words; the three numbers a record also holds are 64-bit floats (addresses below 2^53).
const HEADER_BYTES = 64;
const SLOT_BYTES = 64;
/** The word the Worker sleeps on; the main thread moves it to have the slots looked at. */
const WAKE = 0;
/** Set once the Worker has no follower left and should end. */
const EXIT = 1;
/** One past the highest slot in use: the Worker looks no further. */
const HIGH = 2;
// A slot's words.
const STATE = 0;
const VALUE = 1;
const GENERATION = 2;
const MOVED = 3;
const FD = 4;
const START_VALUE = 5;
const WATCH_VALUE = 6;
// A slot's 64-bit numbers, as byte offsets in the slot.
const ADDRESS = 32;
const WATCH_ADDRESS = 40;
const PERIOD = 48;
// A slot's states: the main thread moves FREE -> STARTING -> STOPPING, the Worker STARTING ->
// ACTIVE and STOPPING -> STOPPED (after which it reads nothing for that slot), the main thread
// STOPPED -> FREE once told.
const FREE = 0;
const STARTING = 1;
const ACTIVE = 2;
const STOPPING = 3;
const STOPPED = 4;
/** What the Worker posts when it ends; otherwise `slot * 2` for a change, `+ 1` for stopped. */
const ENDED = -1;

interface Start {
  control: SharedArrayBuffer;
  /** libc's path and the Worker's declarations of it, from `libc.ts`'s one table. */
  libc: FollowerLibc;
  /** futex(2)'s syscall number on this architecture. */
  futex: string;
  layout: typeof LAYOUT;
}

const LAYOUT = {
  HEADER_BYTES,
  SLOT_BYTES,
  WAKE,
  EXIT,
  HIGH,
  STATE,
  VALUE,
  GENERATION,
  MOVED,
  FD,
  START_VALUE,
  WATCH_VALUE,
  ADDRESS,
  WATCH_ADDRESS,
  PERIOD,
  STARTING,
  ACTIVE,
  STOPPING,
  STOPPED,
  ENDED,
};

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
    const { control, layout: L } = event.data;
    const words = new Int32Array(control);
    const numbers = new Float64Array(control);
    const lib = Deno.dlopen(event.data.libc.path, event.data.libc.symbols);
    const futex = BigInt(event.data.futex);
    const wakeWord = Deno.UnsafePointer.of(words);
    // A struct timespec of two 64-bit fields, written as 32-bit halves so that no BigInt is
    // made per sleep (both architectures are little-endian; the high halves stay 0). Its own
    // ArrayBuffer: off V8's heap, so its address holds.
    const timeout = new Int32Array(new ArrayBuffer(16));
    const timeoutAddress = Deno.UnsafePointer.of(timeout);
    const view = (address: number, bytes: number): ArrayBuffer =>
      Deno.UnsafePointerView.getArrayBuffer(
        Deno.UnsafePointer.create(BigInt(address)) as Deno.PointerObject,
        bytes,
      );
    // Per slot: what the Worker keeps of it while it follows.
    const texts: (Uint8Array | undefined)[] = [];
    const watched: (Int32Array | undefined)[] = [];
    const last: number[] = [];
    const moved: boolean[] = [];
    const due: number[] = [];
    const fromFile = new Uint8Array(32);

    const look = (slot: number, at: number): void => {
      const fd = words[at + L.FD];
      let text = texts[slot];
      if (text === undefined) {
        text = fromFile;
        const count = Number(lib.symbols.pread(fd, text, 32n, 0n));
        text.fill(0, count < 0 ? 0 : count);
      }
      const value = parseText(text, 0, 32);
      const watch = watched[slot];
      const nowMoved = watch !== undefined && Atomics.load(watch, 0) !== words[at + L.WATCH_VALUE];
      if (value !== last[slot] || (nowMoved && !moved[slot])) {
        last[slot] = value;
        moved[slot] = nowMoved;
        Atomics.store(words, at + L.VALUE, value);
        Atomics.store(words, at + L.MOVED, nowMoved ? 1 : 0);
        Atomics.add(words, at + L.GENERATION, 1);
        scope.postMessage(slot * 2);
      }
    };

    for (;;) {
      // The wake word before the exit word: the main thread sets them in the other order, so
      // an exit set after this look at it has moved the word this sleep compares.
      const seen = Atomics.load(words, L.WAKE);
      if (Atomics.load(words, L.EXIT) !== 0) break;
      const now = performance.now();
      let next = Infinity;
      const high = Atomics.load(words, L.HIGH);
      for (let slot = 0; slot < high; slot++) {
        const at = (L.HEADER_BYTES + slot * L.SLOT_BYTES) >> 2;
        const numberAt = (L.HEADER_BYTES + slot * L.SLOT_BYTES) >> 3;
        let state = Atomics.load(words, at + L.STATE);
        if (state === L.STARTING) {
          const address = numbers[numberAt + (L.ADDRESS >> 3)];
          const watchAddress = numbers[numberAt + (L.WATCH_ADDRESS >> 3)];
          texts[slot] = address === 0 ? undefined : new Uint8Array(view(address, 32));
          watched[slot] = watchAddress === 0 ? undefined : new Int32Array(view(watchAddress, 4));
          last[slot] = words[at + L.START_VALUE];
          moved[slot] = false;
          due[slot] = now + numbers[numberAt + (L.PERIOD >> 3)];
          // A stop may have come first: then the slot is stopped below, never looked at.
          state = Atomics.compareExchange(words, at + L.STATE, L.STARTING, L.ACTIVE);
          if (state === L.STARTING) state = L.ACTIVE;
        }
        if (state === L.STOPPING) {
          texts[slot] = undefined;
          watched[slot] = undefined;
          Atomics.store(words, at + L.STATE, L.STOPPED);
          scope.postMessage(slot * 2 + 1);
          continue;
        }
        if (state !== L.ACTIVE) continue;
        if (now >= due[slot]) {
          look(slot, at);
          const period = numbers[numberAt + (L.PERIOD >> 3)];
          due[slot] += period;
          if (due[slot] <= now) due[slot] = now + period;
        }
        if (due[slot] < next) next = due[slot];
      }
      if (next === Infinity) {
        lib.symbols.syscall(futex, wakeWord, 0, seen, null, null, 0); // FUTEX_WAIT while seen
      } else {
        const ms = next - performance.now();
        if (ms <= 0) continue;
        const seconds = Math.floor(ms / 1000);
        timeout[0] = seconds;
        timeout[2] = Math.min(999_999_999, Math.round((ms - seconds * 1000) * 1e6));
        lib.symbols.syscall(futex, wakeWord, 0, seen, timeoutAddress, null, 0);
      }
    }
    lib.close();
    scope.postMessage(L.ENDED);
    scope.close();
  };
}

// The parse function is put into the Worker's source under this name.
declare function parseText(bytes: Uint8Array, at: number, end: number): number;

/** What a pool tells the follower in a slot. */
interface SlotOwner {
  changed(): void;
  stopped(): void;
  failed(error: Error): void;
}

/** One Worker and the followers it looks after. */
class FollowerPool {
  readonly #worker: Worker;
  readonly words: Int32Array;
  readonly #numbers: Float64Array;
  readonly #owners: (SlotOwner | undefined)[] = [];
  #used = 0;
  /** No new follower comes here any more: the last one stopped, or the Worker failed. */
  #closing = false;
  readonly #onClosing: () => void;

  constructor(parse: string, onClosing: () => void) {
    checkRoomForWorker();
    this.#onClosing = onClosing;
    const control = new SharedArrayBuffer(HEADER_BYTES + FOLLOWERS_PER_WORKER * SLOT_BYTES);
    this.words = new Int32Array(control);
    this.#numbers = new Float64Array(control);
    const source = `const parseText = ${parse};\n(${followerMain.toString()})();`;
    const url = URL.createObjectURL(new Blob([source], { type: "application/javascript" }));
    this.#worker = new Worker(url, { type: "module" });
    URL.revokeObjectURL(url);
    this.#worker.onmessage = (event: MessageEvent<number>) => this.#message(event.data);
    this.#worker.onerror = (event) => {
      event.preventDefault();
      this.#fail(new Error(`the Worker that follows the text failed: ${event.message}`));
    };
    const start: Start = {
      control,
      libc: followerLibc(),
      futex: C.SYS_futex.toString(),
      layout: LAYOUT,
    };
    this.#worker.postMessage(start);
  }

  /** Whether another follower may join. */
  get open(): boolean {
    return !this.#closing && this.#used < FOLLOWERS_PER_WORKER;
  }

  /** Gives a follower a slot and has the Worker take it in; returns the slot's first word. */
  add(owner: SlotOwner, setup: {
    fd: number;
    address: number;
    watchAddress: number;
    watchValue: number;
    value: number;
    periodMs: number;
  }): { slot: number; at: number } {
    let slot = this.#owners.findIndex((taken) => taken === undefined);
    if (slot < 0) slot = this.#owners.length;
    this.#owners[slot] = owner;
    this.#used++;
    const at = (HEADER_BYTES + slot * SLOT_BYTES) >> 2;
    const numberAt = (HEADER_BYTES + slot * SLOT_BYTES) >> 3;
    const { words } = this;
    words[at + VALUE] = setup.value;
    words[at + GENERATION] = 0;
    words[at + MOVED] = 0;
    words[at + FD] = setup.fd;
    words[at + START_VALUE] = setup.value;
    words[at + WATCH_VALUE] = setup.watchValue;
    this.#numbers[numberAt + (ADDRESS >> 3)] = setup.address;
    this.#numbers[numberAt + (WATCH_ADDRESS >> 3)] = setup.watchAddress;
    this.#numbers[numberAt + (PERIOD >> 3)] = setup.periodMs;
    Atomics.store(words, at + STATE, STARTING);
    if (slot >= Atomics.load(words, HIGH)) Atomics.store(words, HIGH, slot + 1);
    this.#kick();
    return { slot, at };
  }

  /** Asks the Worker to stop reading for `slot`; the owner hears `stopped()` once it has. */
  remove(slot: number): void {
    const at = (HEADER_BYTES + slot * SLOT_BYTES) >> 2;
    Atomics.store(this.words, at + STATE, STOPPING);
    this.#kick();
  }

  /** Moves the wake word and wakes the Worker, so that it looks at the slots now. */
  #kick(): void {
    Atomics.add(this.words, WAKE, 1);
    libc().syscall(C.SYS_futex, Deno.UnsafePointer.of(this.words), C.FUTEX_WAKE, 1, null, null, 0);
  }

  #message(message: number): void {
    if (message === ENDED) {
      this.#worker.terminate();
      return;
    }
    const slot = message >> 1;
    const owner = this.#owners[slot];
    if (owner === undefined) return;
    if ((message & 1) === 0) {
      owner.changed();
      return;
    }
    // The Worker reads nothing for this slot any more: it may be taken again.
    Atomics.store(this.words, ((HEADER_BYTES + slot * SLOT_BYTES) >> 2) + STATE, FREE);
    this.#owners[slot] = undefined;
    this.#used--;
    owner.stopped();
    if (this.#used === 0) {
      // The Worker ends rather than idle on: it costs a V8 isolate's memory.
      this.#close();
      Atomics.store(this.words, EXIT, 1);
      this.#kick();
    }
  }

  #close(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#onClosing();
  }

  /** The Worker threw, so it reads nothing any more: every follower fails with `error`. */
  #fail(error: Error): void {
    this.#close();
    this.#worker.terminate();
    const owners = this.#owners.splice(0);
    this.#used = 0;
    for (const owner of owners) owner?.failed(error);
  }
}

/**
 * Free fds a Worker needs as it starts, with room to spare: Deno 2.9.6 takes 6, and without them
 * it panics (`Too many open files` unwrapped on the Worker's thread), ending the process.
 */
const WORKER_FDS = 8;

/**
 * Throws the EMFILE (or ENFILE) error rather than start a Worker the process has no fds for: a
 * failed start must fail the call, never the process. Another thread could take the fds between
 * this look and the Worker's start; Deno's own threads rarely open any.
 */
function checkRoomForWorker(): void {
  const probes: number[] = [];
  try {
    // eventfds, not copies of fd 0: a daemon may run with its stdin closed.
    for (let i = 0; i < WORKER_FDS; i++) probes.push(createEventFd());
  } catch (error) {
    const { code, errno } = error as OsError;
    const why = `fewer than the ${WORKER_FDS} fds it needs are free (${code})`;
    throw Object.assign(new Error(`Cannot start the Worker that follows text: ${why}`), {
      code,
      errno,
    });
  } finally {
    for (const probe of probes) closeFd(probe);
  }
}

/** The pool new followers join, per parse function's source. */
const pools = new Map<string, FollowerPool>();

function poolFor(parse: string): FollowerPool {
  const current = pools.get(parse);
  if (current?.open) return current;
  const pool: FollowerPool = new FollowerPool(parse, () => {
    if (pools.get(parse) === pool) pools.delete(parse);
  });
  pools.set(parse, pool);
  return pool;
}

/** A running follower; see the module description. */
export class TextFollower {
  readonly #pool: FollowerPool;
  readonly #slot: number;
  /** The slot's first word in the pool's memory. */
  readonly #at: number;
  readonly #stopped: Promise<void>;
  #generation = 0;
  readonly #waiting = new Set<() => void>();
  #stopping = false;
  /** Why the Worker stopped on its own, if it failed. */
  #failure: Error | undefined;

  private constructor(options: TextFollowerOptions) {
    const { source: where, watch, periodMs } = options;
    // A period of 0 would have the Worker look without sleeping, NaN never look.
    if (!(periodMs > 0 && periodMs < Infinity)) {
      throw new RangeError(`Follow period ${periodMs} is not a number of milliseconds above 0`);
    }
    // Before any Worker may start for this follower: one that failed here would be left with none.
    const address = "fd" in where ? 0 : Number(where.mapping.address(where.offset));
    const watchAddress = watch === undefined ? 0 : Number(watch.mapping.address(watch.offset));
    // The Worker reads a descriptor of its own, made here so that it exists before the owner
    // may close theirs, and closed here once the Worker reads no more.
    const fd = "fd" in where ? duplicateFd(where.fd, "the followed file") : -1;
    let resolveStopped: () => void = () => {};
    this.#stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
    let ended = false;
    const stopped = (): void => {
      if (ended) return;
      ended = true;
      if (fd >= 0) closeFd(fd);
      this.#stopping = true;
      resolveStopped();
      options.onStopped?.();
      this.#wakeAll();
    };
    try {
      this.#pool = poolFor(options.parse.toString());
      const { slot, at } = this.#pool.add({
        changed: () => this.#wakeAll(),
        stopped,
        failed: (error) => {
          this.#failure = error;
          stopped();
        },
      }, {
        fd,
        address,
        watchAddress,
        watchValue: watch?.value ?? 0,
        value: options.value,
        periodMs,
      });
      this.#slot = slot;
      this.#at = at;
    } catch (error) {
      if (fd >= 0) closeFd(fd);
      throw error;
    }
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
    const words = this.#pool.words;
    while (!this.#stopping) {
      const generation = Atomics.load(words, this.#at + GENERATION);
      if (generation !== after) {
        this.#generation = generation;
        return {
          value: Atomics.load(words, this.#at + VALUE),
          watchMoved: Atomics.load(words, this.#at + MOVED) === 1,
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

  /** Stops following; resolves once the Worker no longer reads anything for it. Safe twice. */
  stop(): Promise<void> {
    if (!this.#stopping) {
      this.#stopping = true;
      this.#pool.remove(this.#slot);
      this.#wakeAll();
    }
    return this.#stopped;
  }
}
