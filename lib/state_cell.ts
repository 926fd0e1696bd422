/**
 * The state cell: the latest value of a small integer state shared between processes, such as
 * the button/LED state, with change notification and no polling between cooperating processes.
 *
 * Layout, from the cell's offset in its region:
 *
 * | bytes   | what                                                                    |
 * | ------- | ----------------------------------------------------------------------- |
 * | 0-31    | the value as text, `"%d\n"`, zeros after it: what the C programs use     |
 * | 64-67   | magic `CELL`                                                            |
 * | 68-71   | layout version                                                          |
 * | 72-75   | cell size in bytes (128)                                                |
 * | 76-79   | sequence: the futex word, even when stable, odd while a write is made   |
 * | 80-83   | how many readers are asleep on the sequence                              |
 * | 84-87   | the value of the last complete write, as a 32-bit integer                |
 * | 88-95   | the writer's claim (pid and start time)                                 |
 * | 96-103  | the supervisor's claim (the launcher that owns the cell's lifetime)     |
 * | 104-107 | the value being written: set before the text, under the odd sequence     |
 * | 112-119 | the claim of whoever makes the header, while it does (see below)        |
 *
 * Bytes 32-63, 108-111 and 120-127 are reserved; nothing is ever written at byte 257, where the
 * original C program keeps the last byte of its file.
 *
 * The value being written tells what a writer that died in the middle of a write can have left
 * in the text: each byte that of the last complete value's text or of this one's. A text with a
 * byte of neither was written by someone else (the original C button) and is a value. Writers
 * before this word (the same layout version) left it 0: a text they left torn reads as foreign.
 *
 * A blank header (all zero: a file the C programs made, fresh memory) is made by one opener at a
 * time, the one that takes the maker's claim; the others wait for its magic. One that died
 * making it is replaced, and its successor starts from the value it was writing.
 *
 * @module
 */

import {
  claimHolder,
  describeHolder,
  holdsClaim,
  ownClaim,
  releaseClaim,
  takeClaim,
  tryTakeClaim,
} from "./claim.ts";
import { abortReason, failure, isShortage, shown } from "./errors.ts";
import { ProcessWatch } from "./liveness.ts";
import { checkPeriod, checkSignal, checkTimeout, startTimer } from "./timeouts.ts";
import { loadTextFollower, type SharedMemory, type Sleep, textFollowerLoaded } from "./memory.ts";
import { anyGuardedFault, guardedFaultWord } from "../ffi/sigbus_guard.ts";
import type { FutexSettle } from "../ffi/futex_hub.ts";
import { WOKEN_CODE_TURNS } from "../ffi/woken_code.ts";
import type { TextFollower } from "../ffi/text_follower.ts";
import type { FutexWord, WaitResult } from "../ffi/mapping.ts";
import { memoryOf, type SharedRegion } from "./region.ts";
import { StateFile } from "./state_file.ts";
import { describeKind } from "./byte_arrays.ts";
import { formatState, isStateValue, parseState, STATE_TEXT_BYTES } from "./state_text.ts";

/**
 * Bytes a state cell occupies in its region (part of its wire format, for laying out a region
 * that holds a cell beside other data).
 */
export const STATE_CELL_SIZE = 128;
/** The magic number at byte 64 of a state cell: the ASCII letters `CELL`. */
export const STATE_CELL_MAGIC = 0x4c4c4543;
/** The layout version this library reads and writes. */
export const STATE_CELL_VERSION = 2;

const MAGIC = 64;
const VERSION = 68;
const SIZE = 72;
const SEQUENCE = 76;
/** Readers asleep: writers of earlier versions wake only when it is above 0; ours always wake. */
const WAITERS = 80;
const VALUE = 84;
const WRITER = 88;
const SUPERVISOR = 96;
const PENDING = 104;
const MAKER = 112;
/** `RING_MAGIC` of lib/ring/layout.ts, not imported: a cell's users need load no ring code. */
const RING_MAGIC = 0x474e4952;
/** How long an opener waits for another to make a blank header before it says who holds it up. */
const MAKER_WAIT_MS = 1_000;
/**
 * How often a reader looks at the text while no cooperating writer holds the cell: the only
 * way to see a writer that knows nothing of the sequence word (the original C button).
 */
export const DEFAULT_FOLLOW_PERIOD_MS = 2.75;
/** The longest follow period, as for `setTimeout`: about 24.8 days. */
const MAX_FOLLOW_PERIOD_MS = 2 ** 31 - 1;
/** While a synchronous wait sleeps, how often it looks whether the writer still lives. */
const DEFAULT_SYNC_LIVENESS_MS = 100;
/** How long a handle with no wait under way keeps listening, for a reader that waits again. */
const IDLE_RELEASE_MS = 20;
/**
 * How long a reader with no cooperating writer looks at the text itself before it starts the
 * follower Worker (see {@link StateCellOptions.followGraceMs}).
 */
export const DEFAULT_FOLLOW_GRACE_MS = 3000;
/** How long a reader whose follower could not start looks at the text itself, then tries again. */
const FOLLOW_RETRY_MS = 1000;
/** How often a reader in its grace looks at the text (unless `followPeriodMs` is longer). */
const GRACE_LOOK_MS = 50;
/** How a lost page's error names the cell: `Cannot use the state cell in "PATH": ...`. */
const LOST_PAGE_SUBJECT = "the state cell in";
/** Reads of an odd sequence before a reader stops waiting for the write to finish. */
const MAX_SEQLOCK_SPINS = 10_000;

/** Options for {@link openStateCell}. */
export interface StateCellOptions {
  /**
   * Where the cell starts in the region, a multiple of 8. The original C programs use 0.
   *
   * @default {0}
   */
  offset?: number;
  /**
   * Take the single writer role; `Deno.errors.Busy` names the pid of a live holder.
   *
   * @default {false}
   */
  writer?: boolean;
  /**
   * Take the supervisor role: the one process (such as a launcher) that owns the cell's
   * lifetime. `Deno.errors.Busy` names the pid of a live holder.
   *
   * @default {false}
   */
  supervisor?: boolean;
  /**
   * Write a fresh header and the value {@link StateCellOptions.initialValue} even over a header
   * that is foreign or damaged. Without it such a header is an error and nothing is written.
   *
   * @default {false}
   */
  initialise?: boolean;
  /**
   * The value `initialise` writes.
   *
   * @default {0}
   */
  initialValue?: number;
  /**
   * The original's state file to keep in step (see `openStateFile`): the writer copies each
   * value into it, and readers follow it while no cooperating writer is alive, since a writer
   * that knows no protocol (the original C button) writes only the file. A new writer starts
   * from the value the file holds.
   */
  mirror?: StateFile;
  /**
   * Called, with the writer's `mirror`, when copying a value into it fails for a reason of the
   * file's (its file system full, an I/O error): the value is in the cell all the same, and the
   * next write copies it again. `repeated` is true when the copy before failed too, so that a
   * failure that lasts can be said once. Without it, such a failure is thrown from `write()`
   * (after the cell took the value) and from the open that takes the writer role.
   */
  onMirrorError?: (error: Error, repeated: boolean) => void;
  /**
   * Called when a copy into the `mirror` succeeds after the last one failed (and went to
   * `onMirrorError`): the file holds the cell's value again.
   */
  onMirrorRecovered?: () => void;
  /**
   * How often a reader looks at the text while no cooperating writer is alive, in ms (off the
   * JavaScript thread, in a Worker that wakes the event loop only for a change, once
   * `followGraceMs` has passed); at most 2^31 - 1, since such a reader has nothing else to go by.
   *
   * @default {2.75}
   */
  followPeriodMs?: number;
  /**
   * How long a waiting reader with no cooperating writer (none came yet, or it died or left)
   * looks at the text itself, on the JavaScript thread every 50 ms (or every `followPeriodMs`,
   * if longer), before it starts the Worker that looks every `followPeriodMs`, in ms. It counts
   * while waits are under way: a handle with no wait for a moment starts a new one at its next
   * wait. A writer that comes (or comes back: a button restarted) within it costs no Worker: a
   * Worker is a V8 isolate of its own, and the process keeps most of what it took (about 11 MiB
   * here) after it ends. 0 starts the Worker at once; `Infinity` never starts one. A Worker
   * that cannot start (fewer than eight fds free) is tried again a second later, the reader
   * looking at the text itself meanwhile.
   *
   * @default {3000}
   */
  followGraceMs?: number;
  /**
   * How often {@link StateCell.waitForChangeSync} looks whether the writer still lives while it
   * sleeps, in ms (nothing else runs on its thread to hear of a death). `Infinity` never looks:
   * a writer's death then shows only as the wait's timeout.
   *
   * @default {100}
   */
  livenessCheckMs?: number;
  /**
   * Called when a reader waiting on the cell sees a cooperating writer come, die or leave: from a
   * microtask, once the wait that saw it has done its step, so it may close the cell or its region
   * (the waits then reject with `BadResource`). Not called once the cell is closed. What it throws
   * is uncaught, as from an event listener.
   */
  onWriter?: (event: WriterEvent) => void;
}

/** What a waiting reader noticed about the cooperating writer. */
export interface WriterEvent {
  /** The writer's pid (for a writer in a Worker, its process's). */
  pid: number;
  /**
   * `writing`: a live process (or Worker) speaking this protocol holds the writer role; `died`:
   * it ended without giving the role back (its last complete value stays; a Worker terminated
   * without closing the cell ends so too); `left`: it gave the role back.
   */
  status: "writing" | "died" | "left";
}

/** Options for {@link StateCell.waitForChange}. */
export interface StateWaitOptions {
  /** The value to wait to change from. Default: the value when the call is made. */
  from?: number;
  /** Milliseconds before the wait rejects with `Deno.errors.TimedOut`. Default: no limit. */
  timeout?: number;
  /** Rejects the wait with the signal's reason when aborted. */
  signal?: AbortSignal;
}

/** Options for {@link StateCell.changes}. */
export interface StateChangesOptions {
  /** Ends the iteration (without an error) when aborted. */
  signal?: AbortSignal;
  /**
   * Yield the value the cell holds now before waiting for the first change.
   *
   * @default {false}
   */
  current?: boolean;
}

/**
 * What {@link openStateCell} found in the header and so what the constructor must do: `blank`
 * also when another opener is making the header, or died making it; `initialise` is asked for
 * (`initialise: true`), and the constructor looks at the header again to see how.
 */
type HeaderState = "valid" | "blank" | "initialise";

interface CellParts {
  region: SharedRegion;
  options: StateCellOptions;
  header: HeaderState;
}

/**
 * A follower of a foreign writer's text and the waits on its next report, told it with nothing
 * or with why the follower failed. One call of `next()` serves them all (`asked` while it is
 * under way); a wait that ends removes itself, so none leaves anything behind however long the
 * follower stays quiet.
 */
interface Following {
  readonly follower: TextFollower;
  readonly waiters: Set<(failure: Error | undefined) => void>;
  asked: boolean;
}

const constructing = Symbol("StateCell");

/**
 * The latest value of a small integer state in a shared region. One process (or Worker) at a
 * time may write (open with `writer: true`); any number read, and sleep until it changes.
 *
 * Closing the cell, or its region, settles every pending wait at once: `waitForChange()`
 * rejects with `Deno.errors.BadResource`, `changes()` ends.
 *
 * @example
 * ```ts
 * import { createMemfdRegion, openStateCell } from "@mmap-ipc/mmap-ipc";
 *
 * using region = createMemfdRegion({ size: 256 });
 * using writer = openStateCell(region, { writer: true });
 * using reader = openStateCell(region);
 * const next = reader.waitForChange({ timeout: 1_000 });
 * writer.write(1);
 * console.log(`LED Status: ${(await next) ? "On" : "Off"}`);
 * ```
 */
export class StateCell {
  readonly #name: string;
  readonly #memory: SharedMemory;
  /** The synchronous waits on the sequence word, prepared once. */
  readonly #sequenceWord: FutexWord;
  readonly #base: number;
  readonly #bytes: Uint8Array;
  readonly #words: Int32Array;
  /**
   * The SIGBUS guard's fault count (see `anyGuardedFault`), read in place on the wake-up path.
   * The guard is installed, or found impossible, before the first mapping, so before any cell.
   */
  readonly #faults: Int32Array;
  readonly #sequenceIndex: number;
  readonly #waitersIndex: number;
  readonly #valueIndex: number;
  readonly #pendingIndex: number;
  readonly #writerClaimIndex: number;
  readonly #magicIndex: number;
  readonly #longWords: BigInt64Array;
  readonly #writer: boolean;
  readonly #supervisor: boolean;
  readonly #mirror: StateFile | undefined;
  readonly #followPeriodMs: number;
  readonly #followGraceMs: number;
  /** How often a reader in its grace looks at the text. */
  readonly #graceLookMs: number;
  readonly #livenessCheckMs: number;
  readonly #onWriter: ((event: WriterEvent) => void) | undefined;
  readonly #onMirrorError: ((error: Error, repeated: boolean) => void) | undefined;
  readonly #onMirrorRecovered: (() => void) | undefined;
  /** The last copy into the mirror failed, and went to #onMirrorError. */
  #mirrorFailing = false;
  readonly #closing = new AbortController();
  #closed = false;
  /** The sequence the last read saw; set by {@link StateCell.#load}. */
  #sequence = 0;
  /** An odd sequence a read stopped waiting on: its write was left half done. */
  #abandoned = 0;
  /** The text as it was when {@link StateCell.#abandoned} was given up on. */
  readonly #abandonedText = new Uint8Array(STATE_TEXT_BYTES);
  /** Where {@link StateCell.#leftByWriter} formats the two texts a write can leave. */
  readonly #scratchText = [new Uint8Array(STATE_TEXT_BYTES), new Uint8Array(STATE_TEXT_BYTES)];
  /** The process behind the current writer claim, watched through a pidfd. */
  #watch: ProcessWatch | undefined;
  /** Stops listening for the watched writer's death. */
  #unlisten: (() => void) | undefined;
  /** What waiting readers last knew of the writer, to report only changes. */
  #writerSeen: WriterEvent | undefined;
  /** Follows a foreign writer while no cooperating writer is alive, with the waits on it. */
  #following: Following | undefined;
  /** When a reader with no cooperating writer starts following (see `#graceEnd`). */
  #followAfter: number | undefined;
  /** How many waits (calls and iterations) are under way on this handle. */
  #waiting = 0;
  /** Whether this handle asked its memory to hear of the file shrinking (see `#enter`). */
  #hearingShrink = false;
  /** Pending release of the listener and follower once no wait is under way. */
  #idleCheck: ReturnType<typeof setTimeout> | undefined;
  /** Microtask turns the idle check has waited for a wait to start again; 0: none pending. */
  #idleTurns = 0;

  /** @ignore Not for direct use: call {@link openStateCell}. */
  constructor(token: symbol, parts: unknown) {
    if (token !== constructing) throw new TypeError("Use openStateCell() to open a state cell");
    const { region, options, header } = parts as CellParts;
    this.#name = region.name;
    this.#memory = memoryOf(region);
    this.#base = options.offset ?? 0;
    this.#sequenceWord = this.#memory.futexWord(this.#base + SEQUENCE);
    this.#bytes = this.#memory.bytes;
    this.#words = this.#memory.words;
    this.#faults = guardedFaultWord();
    this.#sequenceIndex = (this.#base + SEQUENCE) / 4;
    this.#waitersIndex = (this.#base + WAITERS) / 4;
    this.#valueIndex = (this.#base + VALUE) / 4;
    this.#pendingIndex = (this.#base + PENDING) / 4;
    this.#writerClaimIndex = (this.#base + WRITER) / 8;
    this.#magicIndex = (this.#base + MAGIC) / 4;
    this.#longWords = this.#memory.longWords;
    this.#writer = options.writer ?? false;
    this.#supervisor = options.supervisor ?? false;
    this.#mirror = options.mirror;
    this.#followPeriodMs = options.followPeriodMs ?? DEFAULT_FOLLOW_PERIOD_MS;
    this.#followGraceMs = options.followGraceMs ?? DEFAULT_FOLLOW_GRACE_MS;
    this.#graceLookMs = Math.max(GRACE_LOOK_MS, this.#followPeriodMs);
    this.#livenessCheckMs = options.livenessCheckMs ?? DEFAULT_SYNC_LIVENESS_MS;
    this.#onWriter = options.onWriter;
    this.#onMirrorError = options.onMirrorError;
    this.#onMirrorRecovered = options.onMirrorRecovered;
    const initialValue = options.initialValue ?? 0;
    // Asked for: a sound cell's header (made meanwhile, perhaps) is written anew once its roles
    // are taken (below); any other now.
    const rewrite = header === "initialise" && !this.#initialiseUnlessSound(region, initialValue);
    // Blank: a file the original made, or fresh memory. Keep the value its text holds.
    if (header === "blank") this.#makeBlankHeader(region, undefined);
    const roles: number[] = [];
    try {
      if (this.#supervisor) {
        takeClaim(this.#memory, this.#base + SUPERVISOR, this.#role("supervisor"));
        roles.push(SUPERVISOR);
      }
      if (this.#writer) {
        takeClaim(this.#memory, this.#base + WRITER, this.#role("writer"));
        roles.push(WRITER);
      }
      // After the roles: an open they refuse writes nothing over a live cell.
      if (rewrite) this.#initialise(initialValue, false);
      if (this.#writer) this.#settleWriter();
      // Made on a page a shrunk file lost (the zeros mapped in its place): no cell at all.
      this.#memory.checkPages(LOST_PAGE_SUBJECT);
    } catch (error) {
      for (const role of roles) releaseClaim(this.#memory, this.#base + role);
      if (roles.includes(WRITER) && this.#words[this.#magicIndex] === STATE_CELL_MAGIC) {
        // As close() does: a reader that saw the claim a moment learns that it is gone.
        Atomics.add(this.#words, this.#sequenceIndex, 2);
        this.#sequenceWord.wakeAll();
      }
      throw error;
    }
    this.#memory.adopt(this);
  }

  /**
   * `initialise: true`, by what the header is now (another opener may have made it since
   * {@link openStateCell} looked): a blank one is made with `value` through the maker's claim,
   * one that is no cell's is written over, its claim words cleared as they hold no claims.
   * Returns false for a sound cell's, which is written anew once the roles are taken.
   */
  #initialiseUnlessSound(region: SharedRegion, value: number): boolean {
    const problem = headerProblem(region, this.#base);
    if (problem === undefined) return false;
    if (problem === "blank") return this.#makeBlankHeader(region, value);
    this.#initialise(value, true);
    return true;
  }

  /** Whether this handle holds the writer role. */
  get isWriter(): boolean {
    return this.#writer && !this.#closed;
  }

  /**
   * The pid of the live process holding the writer role, if any (a Worker holding it holds it
   * for its process).
   */
  get writerPid(): number | undefined {
    this.#check();
    return claimHolder(this.#memory, this.#base + WRITER);
  }

  /** The pid of the live process holding the supervisor role, if any (as {@link writerPid}). */
  get supervisorPid(): number | undefined {
    this.#check();
    return claimHolder(this.#memory, this.#base + SUPERVISOR);
  }

  /** The current value. */
  read(): number {
    if (this.#closed) this.#check();
    // Checked after the read, which may be what touched a page the file lost.
    return this.#checked(
      this.#mirror === undefined ? this.#load() : this.#current(this.#writerAlive(false)),
    );
  }

  /**
   * Publishes `value` (a 32-bit integer): writes its text at the cell's start, bumps the
   * sequence and wakes every sleeping reader. Needs the writer role.
   */
  write(value: number): void {
    if (this.#closed) this.#check();
    // isStateValue()'s test, without the call: this path runs cold, call by call.
    if (typeof value !== "number" || (value | 0) !== value) {
      throw new RangeError(`State ${value} is not a 32-bit integer`);
    }
    if (!this.#writer) {
      throw failure(
        Deno.errors.PermissionDenied,
        "write state cell",
        this.#name,
        "opened without writer: true",
      );
    }
    const claim = Atomics.load(this.#longWords, this.#writerClaimIndex);
    // Before judging the claim: a page the file lost reads as no claim at all, and a header
    // written over holds anything.
    this.#memory.checkPages(LOST_PAGE_SUBJECT);
    if (this.#words[this.#magicIndex] !== STATE_CELL_MAGIC) this.#headerOverwritten();
    if (claim !== ownClaim()) {
      throw failure(
        Deno.errors.Busy,
        "write state cell",
        this.#name,
        "this process no longer holds the writer role",
      );
    }
    // Before the value is published: a write that throws must not have reached the readers.
    if (this.#mirror !== undefined && this.#mirror.closed) this.#mirrorClosed("write");
    this.#publish(value);
    this.#copyToMirror(value);
  }

  /** Copies `value` into the mirror, if any; a failure goes to `onMirrorError` when given. */
  #copyToMirror(value: number): void {
    try {
      this.#mirror?.write(value);
    } catch (error) {
      // A closed mirror is the caller's mistake, not the file's.
      const told = this.#onMirrorError;
      if (
        told === undefined || !(error instanceof Error) || error instanceof Deno.errors.BadResource
      ) throw error;
      const repeated = this.#mirrorFailing;
      this.#mirrorFailing = true;
      told(error, repeated);
      return;
    }
    if (this.#mirrorFailing) {
      this.#mirrorFailing = false;
      this.#onMirrorRecovered?.();
    }
  }

  /**
   * Resolves with the new value once the cell holds something other than `from`. Rejects with
   * `Deno.errors.TimedOut` after `timeout` ms, with the signal's reason on abort, and with
   * `Deno.errors.BadResource` if the cell or its region closes meanwhile.
   *
   * @param [options={}] The value to wait to change from, a timeout and an abort signal.
   */
  waitForChange(options: StateWaitOptions = {}): Promise<number> {
    options ??= {}; // null from JavaScript
    const { timeout } = options;
    try {
      this.#check();
      checkTimeout(timeout, "wait for a change of state cell", this.#name);
      checkSignal(options.signal, "wait for a change of state cell", this.#name);
      this.#checkFrom(options.from);
    } catch (error) {
      return Promise.reject(error);
    }
    const deadline = timeout === undefined ? Infinity : performance.now() + timeout;
    const { from, signal } = options;
    if (signal !== undefined) return this.#changeFrom(from, deadline, signal);
    return new Promise((resolve, reject) => this.#firstSleep(from, deadline, resolve, reject));
  }

  /**
   * The usual wait (no signal, a cooperating writer alive) up to its first wake-up, as one
   * callback from the futex call to the caller's promise: the value a woken wait returns reaches
   * the caller a microtask sooner than through the loop. Anything else goes on in the loop.
   */
  #firstSleep(
    from: number | undefined,
    deadline: number,
    resolve: (value: number) => void,
    reject: (error: unknown) => void,
  ): void {
    this.#enter();
    let sleeping = false;
    try {
      const cooperating = this.#writerAlive(true);
      const value = this.#current(cooperating);
      const start = from ?? value;
      if (value !== start) resolve(this.#checked(value));
      else if (!cooperating) this.#changeFrom(start, deadline, undefined).then(resolve, reject);
      else {
        this.#sleep(deadline, Infinity, true, (returned) => {
          this.#slept();
          // The fault count read in place, as the ring's short paths read it: this runs cold
          // after every sleep, before the woken caller's code.
          const words = this.#words;
          // Woken by a cooperating writer: its value word holds what it wrote. Anything rarer
          // (a close, a page lost to a shrunk file, a header written over) is the loop's to tell.
          const now = returned === 0n && !this.#closed && this.#faults[0] === 0 &&
              words[this.#magicIndex] === STATE_CELL_MAGIC
            ? Atomics.load(words, this.#valueIndex)
            : start;
          if (now !== start) resolve(now);
          else this.#changeFrom(start, deadline, undefined).then(resolve, reject);
          this.#leave();
        });
        sleeping = true;
      }
    } catch (error) {
      reject(error);
    } finally {
      if (!sleeping) this.#leave();
    }
  }

  /**
   * {@link StateCell.waitForChange} without the event loop: blocks this thread until the value
   * differs from `from` or `timeout` ms pass (then throws `TimedOut`). The timeout is required
   * (`Infinity` for no limit): a missing one is a `TypeError`. Nothing else runs on the thread
   * meanwhile: use it in a worker, or in a process whose only job is to wait. A file shrunk
   * under the cell is out of reach of the writer's wake-up: the wait throws `UnexpectedEof` at
   * the end of the sleep it happened in, which lasts at most `livenessCheckMs` while a
   * cooperating writer holds the cell, `followPeriodMs` otherwise.
   */
  waitForChangeSync(options: { from?: number; timeout: number }): number {
    // The usual case's checks in place, the rest (and every error) in #startSyncWait(): the CPU a
    // reader spends between two sleeps decides whether the kernel runs it at once when it is
    // woken on its writer's CPU, or only once the writer sleeps (see the README's wake-up case).
    // No options at all reaches #startSyncWait's "needs a timeout", not a destructuring error.
    const timeout = options?.timeout;
    const given = options?.from;
    const words = this.#words;
    if (
      this.#closed || typeof timeout !== "number" || !(timeout >= 0) ||
      (given !== undefined && (given | 0) !== given) || anyGuardedFault() ||
      words[this.#magicIndex] !== STATE_CELL_MAGIC
    ) this.#startSyncWait(timeout, given);
    const started = performance.now();
    let cooperating = this.#writerAlive(false);
    // Read before the value, which may come from the mirror: a write after this changes the
    // word, so the sleep below returns at once instead of missing it (or never sleeping).
    let sequence = Atomics.load(words, this.#sequenceIndex);
    let value = this.#current(cooperating);
    const from = given ?? value;
    for (let first = true; value === from; first = false) {
      const slice = this.#syncSlice(first, started, timeout, cooperating);
      Atomics.add(words, this.#waitersIndex, 1);
      let result: WaitResult;
      try {
        result = this.#sequenceWord.wait(sequence, slice);
      } finally {
        Atomics.sub(words, this.#waitersIndex, 1);
      }
      // Woken by a cooperating writer: its value word holds what it wrote. One load, where a
      // second look at the writer and parsing the text under the sequence lock were most of
      // this path's cost in a process's first few hundred waits (before V8 optimises them).
      if (cooperating && result !== "timed-out") {
        value = Atomics.load(words, this.#valueIndex);
        if (value !== from) {
          // #checked() in place, for the same reason.
          if (anyGuardedFault()) this.#memory.checkPages(LOST_PAGE_SUBJECT);
          if (words[this.#magicIndex] !== STATE_CELL_MAGIC) this.#headerOverwritten();
          return value;
        }
      }
      cooperating = this.#writerAfterSleep(result, cooperating);
      sequence = Atomics.load(words, this.#sequenceIndex);
      value = this.#current(cooperating);
    }
    return this.#checked(value);
  }

  /** `value`, once no page under the cell was lost to a shrunk file (see `#check`). */
  #checked(value: number): number {
    this.#memory.checkPages(LOST_PAGE_SUBJECT);
    if (this.#words[this.#magicIndex] !== STATE_CELL_MAGIC) this.#headerOverwritten();
    return value;
  }

  /**
   * Throws `InvalidData` saying what took the magic's place: a peer wrote over the control block,
   * so neither the value nor the claims there can be believed any more.
   */
  #headerOverwritten(): never {
    // Reading the magic may be what touched a page the file lost: that, then, is what happened.
    this.#memory.checkPages(LOST_PAGE_SUBJECT);
    const magic = Atomics.load(this.#words, this.#magicIndex);
    throw failure(
      Deno.errors.InvalidData,
      "use the state cell in",
      this.#name,
      `its header was overwritten (found ${hex(magic)} at byte ${
        this.#base + MAGIC
      } where the magic ${
        hex(STATE_CELL_MAGIC)
      } belongs): something other than a state cell wrote there; restoreStateCellHeader() writes it anew, for memory you own`,
    );
  }

  /** Throws `BadResource` naming the cell and its mirror, which was closed before the cell. */
  #mirrorClosed(action: string): never {
    throw failure(
      Deno.errors.BadResource,
      `${action} state cell`,
      this.#name,
      `its mirror ${JSON.stringify(this.#mirror?.path)} is closed`,
    );
  }

  /** Checks the cell, the timeout and `from` of a synchronous wait: throws what is wrong. */
  #startSyncWait(timeout: number, from: number | undefined): void {
    this.#check();
    this.#checkFrom(from);
    // Nothing else runs on a thread that blocks: a wait with no end must be asked for by name.
    if (typeof timeout !== "number") {
      throw failure(
        TypeError,
        "wait for a change of state cell",
        this.#name,
        `timeout ${
          shown(timeout)
        } is not a number: a synchronous wait needs one (Infinity for no limit)`,
      );
    }
    checkTimeout(timeout, "wait for a change of state cell", this.#name);
  }

  /** Throws `RangeError` for a `from` no value can equal: the wait would return at once. */
  #checkFrom(from: number | undefined): void {
    if (from !== undefined && !isStateValue(from)) {
      throw failure(
        RangeError,
        "wait for a change of state cell",
        this.#name,
        `from ${shown(from)} is not a 32-bit integer, so no value the cell holds could equal it`,
      );
    }
  }

  /**
   * How long a synchronous wait's next sleep may last: until the deadline, and at most until it
   * should look whether the writer still lives (nothing else on its thread would hear of a
   * death) or at a foreign writer's text. Throws `TimedOut` once the deadline has passed.
   */
  #syncSlice(first: boolean, started: number, timeout: number, cooperating: boolean): number {
    const period = cooperating ? this.#livenessCheckMs : this.#followPeriodMs;
    if (first && timeout > 0) return Math.min(timeout, period);
    const remaining = this.#remaining(started + timeout);
    return remaining === undefined ? period : Math.min(remaining, period);
  }

  /**
   * Whether a cooperating writer holds the cell after a sleep. Only a sleep that ran its whole
   * slice looks at the writer's pidfd: a wake-up costs nothing.
   */
  #writerAfterSleep(result: WaitResult, cooperating: boolean): boolean {
    // A sleep on a page the file lost can only run out (no wake-up reaches it); the zeros read
    // there are no value. Off the wake-up path, which a lost page never takes.
    if (result === "timed-out") this.#memory.checkPages(LOST_PAGE_SUBJECT);
    if (result === "timed-out" && cooperating) this.#watch?.check();
    return this.#writerAlive(false);
  }

  /**
   * Yields each new value as it is published. Readers that fall behind see the latest value,
   * not every value in between (changes are coalesced), and never the same value twice in a
   * row. Ends quietly when `signal` aborts or the cell (or its region) closes.
   *
   * @param [options={}] An abort signal, and whether to yield the current value first.
   */
  async *changes(options: StateChangesOptions = {}): AsyncGenerator<number, void, undefined> {
    options ??= {}; // null from JavaScript
    this.#check();
    const { signal } = options;
    checkSignal(signal, "iterate over the changes of state cell", this.#name);
    this.#enter();
    try {
      let last = this.#checked(this.#current(this.#writerAlive(true)));
      if (options.current) yield last;
      for (;;) {
        if (this.#closed || signal?.aborted) return;
        try {
          last = await this.#changeFrom(last, Infinity, signal);
        } catch (error) {
          if (error instanceof Deno.errors.BadResource || signal?.aborted) return;
          throw error;
        }
        yield last;
      }
    } finally {
      this.#leave();
    }
  }

  /**
   * Gives up the writer and supervisor roles (if held) and settles this handle's pending waits.
   * The region stays open: it belongs to whoever opened it. Safe to call twice.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#memory.interruptAll(this);
    this.#stopHearingShrink();
    this.#closing.abort();
    this.#memory.forget(this);
    clearTimeout(this.#idleCheck);
    this.#stopFollowing();
    this.#unlisten?.();
    this.#unlisten = undefined;
    this.#watch?.close();
    this.#watch = undefined;
    if (this.#memory.closed) return;
    if (this.#supervisor) releaseClaim(this.#memory, this.#base + SUPERVISOR);
    if (this.#writer && holdsClaim(this.#memory, this.#base + WRITER)) {
      releaseClaim(this.#memory, this.#base + WRITER);
      // Readers in other processes must notice that no cooperating writer is left. Moving the
      // sequence (by two: no write is in progress) makes that impossible to miss: a reader
      // about to sleep on the old value returns at once instead.
      Atomics.add(this.#words, this.#sequenceIndex, 2);
      this.#sequenceWord.wakeAll();
    }
  }

  /** Same as {@link StateCell.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #role(role: string): { role: string; subject: string } {
    return { role: `the ${role} role of state cell`, subject: this.#name };
  }

  /**
   * Writes the header and `value`, keeping the sequence moving forward; with `clearClaims`, the
   * role and maker claims too (over a header that was no cell's, which holds no claims).
   */
  #initialise(value: number, clearClaims: boolean): void {
    const base = this.#base;
    const words = this.#words;
    const sequence = Atomics.load(words, this.#sequenceIndex);
    Atomics.store(words, (base + VERSION) / 4, STATE_CELL_VERSION);
    Atomics.store(words, (base + SIZE) / 4, STATE_CELL_SIZE);
    if (clearClaims) {
      for (const claim of [WRITER, SUPERVISOR, MAKER]) {
        Atomics.store(this.#longWords, (base + claim) / 8, 0n);
      }
    }
    Atomics.store(words, this.#sequenceIndex, (sequence + 1) | 1);
    Atomics.store(words, this.#pendingIndex, value);
    this.#writeText(value);
    Atomics.store(words, this.#valueIndex, value);
    Atomics.store(words, this.#sequenceIndex, ((sequence + 2) | 1) + 1);
    Atomics.store(words, (base + MAGIC) / 4, STATE_CELL_MAGIC);
    this.#sequenceWord.wakeAll();
  }

  /**
   * Makes a blank header a cell's, keeping the value its text holds (or writing `value`, for
   * `initialise: true`), unless another opener is at it: then waits (at most
   * {@link MAKER_WAIT_MS}) for its magic. The maker's claim decides who makes it, so no value
   * written meanwhile is written over by a slower maker; one that died at it is replaced.
   * Returns whether this call made it (not: another did).
   */
  #makeBlankHeader(region: SharedRegion, value: number | undefined): boolean {
    const mine = ownClaim();
    const started = performance.now();
    let magicWord: FutexWord | undefined;
    for (;;) {
      if (Atomics.load(this.#words, this.#magicIndex) === STATE_CELL_MAGIC) return false;
      // A maker that died before it finished is replaced.
      const found = tryTakeClaim(this.#memory, this.#base + MAKER);
      if (found === 0n || found === mine) break;
      if (performance.now() - started > MAKER_WAIT_MS) {
        throw failure(
          Deno.errors.Busy,
          "open state cell in",
          this.#name,
          `${
            describeHolder(found)
          } has been making its header for more than ${MAKER_WAIT_MS} ms (is it stopped?)`,
        );
      }
      // Its maker wakes the magic word; an older version's does not, hence the short slices.
      magicWord ??= this.#memory.futexWord(this.#base + MAGIC);
      magicWord.waitRarely(0, 1);
    }
    try {
      if (Atomics.load(this.#words, this.#magicIndex) === STATE_CELL_MAGIC) return false;
      if (value === undefined) {
        // Looked at again now that no one else may make it: something else (a ring) may have
        // been put there since openStateCell() looked.
        const problem = headerProblem(region, this.#base);
        if (problem !== "blank" && problem !== undefined) throw headerRefusal(region, problem);
      }
      this.#initialise(value ?? this.#unfinishedValue(), false);
      return true;
    } finally {
      releaseClaim(this.#memory, this.#base + MAKER);
      this.#memory.wake(this.#base + MAGIC);
    }
  }

  /**
   * The value a blank header's maker keeps: the text's, or, when a maker died in the middle of
   * rewriting the text (the sequence odd), the value it was writing, which it took from there;
   * unless the text is whole again (`"%d\n"` and its NUL), as a C writer leaves it after.
   */
  #unfinishedValue(): number {
    const pending = Atomics.load(this.#words, this.#pendingIndex);
    const writing = (Atomics.load(this.#words, this.#sequenceIndex) & 1) !== 0;
    const text = parseState(this.#bytes, this.#base, this.#base + STATE_TEXT_BYTES);
    // 0 there is no value written yet (or 0, whose text any torn mix still reads as 0).
    if (!writing || pending === 0 || this.#textIsWhole()) return text;
    return pending;
  }

  /**
   * Whether the text is a value's as the C programs write it: `"%d\n"`, then a NUL. A rewrite
   * left half done mixes two texts byte by byte, which leaves that form only as one of the two.
   */
  #textIsWhole(): boolean {
    const bytes = this.#bytes;
    let at = this.#base;
    const end = at + STATE_TEXT_BYTES;
    if (Atomics.load(bytes, at) === 0x2d) at++;
    const first = at;
    while (at < end && Atomics.load(bytes, at) >= 0x30 && Atomics.load(bytes, at) <= 0x39) at++;
    return at > first && at + 1 < end && Atomics.load(bytes, at) === 0x0a &&
      Atomics.load(bytes, at + 1) === 0;
  }

  /**
   * Settles the writer role just taken. A writer that died in the middle of a write left the
   * sequence odd and perhaps half a text: the text of the last complete write is put back first,
   * unless the text is a foreign writer's (see the module description), whose value is kept.
   * With a mirror, the value the file holds now (a foreign writer may have moved it) is where
   * this writer starts.
   */
  #settleWriter(): void {
    const sequence = Atomics.load(this.#words, this.#sequenceIndex);
    if (sequence & 1) {
      const value = this.#leftByWriter()
        ? Atomics.load(this.#words, this.#valueIndex)
        : parseState(this.#bytes, this.#base, this.#base + STATE_TEXT_BYTES);
      this.#writeText(value);
      Atomics.store(this.#words, this.#valueIndex, value);
      Atomics.store(this.#words, this.#sequenceIndex, sequence + 1);
    }
    const mirrored = this.#mirror?.value();
    if (mirrored !== undefined && mirrored !== this.#load()) this.#publish(mirrored);
    // Moving the sequence tells readers that follow a foreign writer that a cooperating one is
    // back, and wakes those asleep.
    Atomics.add(this.#words, this.#sequenceIndex, 2);
    this.#sequenceWord.wakeAll();
    if (mirrored !== undefined) this.#copyToMirror(this.#load());
  }

  #publish(value: number): void {
    const words = this.#words;
    // A sequence lock: the plain stores between the two read-modify-writes cannot move out.
    // Odd while writing, even if another process had left it odd, or readers would see torn text.
    if ((Atomics.add(words, this.#sequenceIndex, 1) & 1) !== 0) {
      Atomics.add(words, this.#sequenceIndex, 1);
    }
    words[this.#pendingIndex] = value;
    // #writeText() in place: a write made now and then runs cold, and each call on the way to
    // the wake-up is time the reader waits (a cold write took 1.9-2.2 us more than a raw add and
    // wake with the call, 1.1-1.4 without).
    const bytes = this.#bytes;
    const end = this.#base + STATE_TEXT_BYTES;
    for (let i = this.#base + formatState(bytes, this.#base, value); i < end; i++) bytes[i] = 0;
    words[this.#valueIndex] = value;
    Atomics.add(words, this.#sequenceIndex, 1);
    // Every time, not only when the count of sleeping readers says so: any process can write
    // that count, and a reader that sleeps without a timeout must never miss a write.
    this.#sequenceWord.wakeAll();
  }

  /**
   * Reads the value under the sequence lock and notes the sequence it saw. A write left half
   * done (its writer died or stopped) never yields a value nobody wrote: after a while the
   * value of the last complete write is returned instead, until a writer that knows nothing of
   * the sequence (the original C button) changes the text.
   */
  #load(): number {
    const words = this.#words;
    const base = this.#base;
    for (let spin = 0;; spin++) {
      const before = Atomics.load(words, this.#sequenceIndex);
      if ((before & 1) !== 0) {
        // A sequence this handle already gave up on is a write left half done for good: every
        // read would wait it out again (about 66 us), so take the last complete value at once.
        if (spin < MAX_SEQLOCK_SPINS && before !== this.#abandoned) continue;
        if (before !== this.#abandoned) this.#abandon(before);
        this.#sequence = before;
        // Moved since, or never the half-done write's, with no cooperating writer alive: a
        // foreign writer's text. Moved under a live writer, it is that writer finishing (a
        // stopped one was resumed): not yet a value.
        if (
          (this.#abandonedTextMoved() || !this.#leftByWriter()) && !this.#writerAlive(false)
        ) {
          return parseState(this.#bytes, base, base + STATE_TEXT_BYTES);
        }
        return Atomics.load(words, this.#valueIndex);
      }
      const value = parseState(this.#bytes, base, base + STATE_TEXT_BYTES);
      if (Atomics.load(words, this.#sequenceIndex) === before) {
        this.#sequence = before;
        return value;
      }
    }
  }

  /** Gives up on the odd `sequence`, keeping the text as the half-done write left it. */
  #abandon(sequence: number): void {
    this.#abandoned = sequence;
    for (let i = 0; i < STATE_TEXT_BYTES; i++) {
      this.#abandonedText[i] = Atomics.load(this.#bytes, this.#base + i);
    }
  }

  /**
   * Writes `value`'s text and zeros after it, so that the whole text is known from the value
   * (see {@link StateCell.#leftByWriter}).
   */
  #writeText(value: number): void {
    const bytes = this.#bytes;
    const end = this.#base + STATE_TEXT_BYTES;
    // A loop, not fill(): run cold, as a write now and then runs, the builtin cost 2 us more.
    for (let i = this.#base + formatState(bytes, this.#base, value); i < end; i++) bytes[i] = 0;
  }

  /**
   * Whether the text is what a write left half done can leave: each byte that of the last
   * complete value's text or of the value being written's. Only on the rare odd-sequence path.
   */
  #leftByWriter(): boolean {
    const complete = this.#scratchText[0];
    const pending = this.#scratchText[1];
    complete.fill(0);
    pending.fill(0);
    formatState(complete, 0, Atomics.load(this.#words, this.#valueIndex));
    formatState(pending, 0, Atomics.load(this.#words, this.#pendingIndex));
    for (let i = 0; i < STATE_TEXT_BYTES; i++) {
      const byte = Atomics.load(this.#bytes, this.#base + i);
      if (byte !== complete[i] && byte !== pending[i]) return false;
    }
    return true;
  }

  /** Whether the text differs from what the half-done write left. */
  #abandonedTextMoved(): boolean {
    for (let i = 0; i < STATE_TEXT_BYTES; i++) {
      if (Atomics.load(this.#bytes, this.#base + i) !== this.#abandonedText[i]) return true;
    }
    return false;
  }

  /** The value now: the cell's, or the mirror's while no cooperating writer is alive. */
  #current(cooperating: boolean): number {
    return cooperating || this.#mirror === undefined ? this.#load() : this.#mirror.value();
  }

  /** Milliseconds left before `deadline` (undefined: none); throws `TimedOut` once it passed. */
  #remaining(deadline: number): number | undefined {
    const remaining = deadline - performance.now();
    if (remaining <= 0) {
      throw failure(
        Deno.errors.TimedOut,
        "wait for a change of state cell",
        this.#name,
        "no change before the timeout",
      );
    }
    return remaining === Infinity ? undefined : remaining;
  }

  /**
   * Whether a live process that speaks this protocol holds the writer role. A new claim is
   * checked once and then watched through a pidfd, so this costs no syscall per call; with
   * `listen`, a death wakes this handle's sleeping waits at once.
   */
  #writerAlive(listen: boolean): boolean {
    const claim = Atomics.load(this.#longWords, this.#writerClaimIndex);
    // The usual answer, kept apart so that it is small enough to inline into a waiting loop.
    const watch = this.#watch;
    if (watch?.claim === claim && watch.alive && (!listen || this.#unlisten !== undefined)) {
      return true;
    }
    return this.#lookAtWriter(claim, listen);
  }

  /** {@link StateCell.#writerAlive} when the claim is new, gone or dead, or not listened to. */
  #lookAtWriter(claim: bigint, listen: boolean): boolean {
    if (claim === 0n) {
      this.#dropWatch("left");
      return false;
    }
    if (this.#watch?.claim !== claim) {
      this.#dropWatch("left");
      this.#watch = new ProcessWatch(claim);
      if (this.#watch.alive) this.#report("writing");
    }
    const watch = this.#watch;
    if (!watch.alive) {
      this.#report("died");
      return false;
    }
    // Its next absence gets a grace of its own.
    this.#followAfter = undefined;
    if (listen && this.#unlisten === undefined) {
      this.#unlisten = watch.onDeath(() => {
        this.#unlisten = undefined;
        // Ends this handle's sleeps, even on a page a shrunk file cut off (no wake reaches it).
        if (!this.#closed) this.#memory.interruptAll(this);
      });
    }
    return true;
  }

  /** Forgets the watched writer, reporting how it went if it was alive. */
  #dropWatch(how: "left" | "died"): void {
    if (this.#watch === undefined) return;
    if (this.#watch.alive) this.#report(how);
    this.#unlisten?.();
    this.#unlisten = undefined;
    this.#watch.close();
    this.#watch = undefined;
  }

  #report(status: WriterEvent["status"]): void {
    const pid = this.#watch?.pid;
    if (pid === undefined || this.#waiting === 0) return;
    if (this.#writerSeen?.pid === pid && this.#writerSeen.status === status) return;
    this.#writerSeen = { pid, status };
    const onWriter = this.#onWriter;
    if (onWriter === undefined) return;
    // After the step that saw it is done: the callback may close the cell or its region, which
    // from inside that step left the wait it served failing with a TypeError of our own.
    queueMicrotask(() => {
      if (!this.#closed) onWriter({ pid, status });
    });
  }

  /**
   * The loop under {@link StateCell.waitForChange} and {@link StateCell.changes}: resolves with
   * the value once it differs from `from` (default: the value now). With a cooperating writer
   * alive it sleeps on the sequence word; otherwise it looks at the foreign writer's text itself
   * during its grace (see `#graceEnd`), and after it a follower Worker watches the text and the
   * sequence, and only a change wakes it. Throws `TimedOut` at the deadline, the signal's reason
   * on abort and `BadResource` once closed.
   *
   * One async function, awaiting the futex call itself: a woken wait reaches its caller in two
   * microtask hops, with one load in between. Each hop or call more on that path costs
   * microseconds here, as it runs cold after a sleep.
   */
  async #changeFrom(
    from: number | undefined,
    deadline: number,
    signal: AbortSignal | undefined,
  ): Promise<number> {
    this.#enter();
    let sleep: Sleep | undefined;
    const onAbort = (): void => {
      if (sleep !== undefined) this.#memory.interrupt(sleep);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      this.#check();
      // Before the writer is looked at: a follower told a later sequence would miss a writer
      // that came and wrote in between (its mirror write failing, in a mirror's case).
      let sequence = Atomics.load(this.#words, this.#sequenceIndex);
      let cooperating = this.#writerAlive(true);
      let value = this.#current(cooperating);
      const start = from ?? value;
      while (value === start) {
        if (signal?.aborted) throw abortReason(signal);
        const graceEnd = cooperating ? Infinity : this.#graceEnd();
        let returned = -1n;
        if (cooperating || graceEnd > performance.now()) {
          returned = await new Promise<bigint>((resolve) => {
            sleep = this.#sleep(deadline, graceEnd, cooperating, (returned) => {
              this.#slept();
              resolve(returned);
            });
          });
          sleep = undefined;
        } else {
          await this.#follow(start, sequence, deadline, signal);
        }
        this.#check();
        // Woken by a cooperating writer: its value word holds what it wrote.
        if (returned === 0n && cooperating) {
          value = Atomics.load(this.#words, this.#valueIndex);
          if (value !== start) return this.#checked(value);
        }
        sequence = Atomics.load(this.#words, this.#sequenceIndex);
        cooperating = this.#writerAlive(true);
        value = this.#current(cooperating);
      }
      // What was read may have come from a page the file lost: zeros, never written.
      return this.#checked(value);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this.#leave();
    }
  }

  /**
   * When a reader with no cooperating writer stops looking at the text itself and starts
   * following (a Worker). The LED usually starts before its button and meets it within moments,
   * and a button that dies is started again within a second or two; a foreign change made
   * meanwhile is seen by the next look, `#graceLookMs` later at most.
   */
  #graceEnd(): number {
    if (this.#following !== undefined) return 0;
    return this.#followAfter ??= performance.now() + this.#followGraceMs;
  }

  /**
   * Starts a sleep on the sequence the last read saw, until the deadline (throws `TimedOut` once
   * it passed), and without a cooperating writer until `graceEnd` or the next look at the text,
   * whichever comes first; `settle` is called as {@link SharedMemory.sleep} says, and must call
   * {@link StateCell.#slept} first.
   */
  #sleep(deadline: number, graceEnd: number, cooperating: boolean, settle: FutexSettle): Sleep {
    let timeoutMs = this.#remaining(deadline);
    if (!cooperating) {
      timeoutMs = Math.min(timeoutMs ?? Infinity, graceEnd - performance.now(), this.#graceLookMs);
    }
    if (cooperating) this.#stopFollowing();
    // The sequence the read of the value saw; a reader in its grace may have read the mirror.
    const sequence = cooperating ? this.#sequence : Atomics.load(this.#words, this.#sequenceIndex);
    // Announced before the call starts (its thread may sleep at once): a writer that moves the
    // sequence after the kernel compared it then sees a waiter, and wakes it.
    Atomics.add(this.#words, this.#waitersIndex, 1);
    try {
      return this.#memory.sleep(this.#base + SEQUENCE, sequence, timeoutMs, settle, {
        owner: this,
      });
    } catch (error) {
      Atomics.sub(this.#words, this.#waitersIndex, 1);
      throw error;
    }
  }

  /**
   * Ends what {@link StateCell.#sleep} announced: one reader fewer asleep. Not once the memory
   * is closed: its words are detached (length 0), and the count is no one's to read then.
   */
  #slept(): void {
    const words = this.#words;
    if (words.length !== 0) Atomics.sub(words, this.#waitersIndex, 1);
  }

  /**
   * Waits for the follower's next report (starting one if needed, told the value and sequence
   * the caller saw), the deadline, an abort or the close.
   */
  async #follow(
    seen: number,
    sequence: number,
    deadline: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    if (!textFollowerLoaded()) {
      // The process's first follower: its module is loaded now (see loadTextFollower), and
      // the caller looks at the cell again, which may have closed or changed meanwhile.
      try {
        await loadTextFollower();
      } catch (error) {
        this.#followLater(error);
      }
      return;
    }
    const timeoutMs = this.#remaining(deadline);
    let following = this.#following;
    if (following === undefined) {
      let follower: TextFollower;
      try {
        follower = this.#memory.followText(
          this.#mirror === undefined ? { offset: this.#base } : { fd: this.#mirror.fd },
          {
            parse: parseState,
            value: seen,
            watchOffset: this.#base + SEQUENCE,
            watchValue: sequence,
            periodMs: this.#followPeriodMs,
          },
        );
      } catch (error) {
        this.#followLater(error);
        return;
      }
      following = this.#following = { follower, waiters: new Set(), asked: false };
    }
    const closing = this.#closing.signal;
    let cancelTimer: (() => void) | undefined;
    let onReport: ((failure: Error | undefined) => void) | undefined;
    let onStop: (() => void) | undefined;
    let failed: Error | undefined;
    try {
      failed = await new Promise<Error | undefined>((resolve) => {
        // Either may have happened since the caller looked (an onWriter callback runs in
        // between), and a listener added after the event never hears it.
        if (signal?.aborted || closing.aborted) return resolve(undefined);
        onReport = resolve;
        onStop = () => resolve(undefined);
        this.#awaitReport(following, onReport);
        if (timeoutMs !== undefined) cancelTimer = startTimer(timeoutMs, onStop);
        signal?.addEventListener("abort", onStop, { once: true });
        closing.addEventListener("abort", onStop, { once: true });
      });
    } finally {
      cancelTimer?.();
      if (onReport !== undefined) following.waiters.delete(onReport);
      if (onStop !== undefined) {
        signal?.removeEventListener("abort", onStop);
        closing.removeEventListener("abort", onStop);
      }
    }
    // The follower failed (and is stopped): this wait says why; the next one starts another.
    if (failed !== undefined) {
      throw failure(Error, "follow the text of state cell", this.#name, failed.message);
    }
  }

  /**
   * After a follower could not start for want of fds or memory (its Worker takes several fds,
   * and Deno ends the process when one starts without them): the caller looks at the text
   * itself, as in its grace, and a follower is tried again {@link FOLLOW_RETRY_MS} later. The
   * reader goes on seeing changes at the grace's pace. Anything else is thrown as it is.
   */
  #followLater(error: unknown): void {
    if (!isShortage(error)) throw error;
    this.#followAfter = performance.now() + FOLLOW_RETRY_MS;
  }

  /**
   * Adds `waiter` to the waits on the follower's next report, asking for it if nobody has. The
   * report is judged here, once, before any wait goes on: a follower is stopped only when its
   * sequence moved (a cooperating writer may be back, and the waits look again) or it failed;
   * never because one wait ended. A wait that stopped the follower others shared whenever it
   * ended let two waits start and stop followers in turn, in microtasks, for good. A report
   * reaches only the waits on its own follower, never those of one started after it.
   */
  #awaitReport(following: Following, waiter: (failure: Error | undefined) => void): void {
    following.waiters.add(waiter);
    if (following.asked) return;
    following.asked = true;
    const tell = (failed: Error | undefined, stop: boolean): void => {
      following.asked = false;
      if (stop && this.#following === following) this.#stopFollowing();
      const waiters = [...following.waiters];
      following.waiters.clear();
      for (const wake of waiters) wake(failed);
    };
    following.follower.next().then(
      (change) => tell(undefined, change?.watchMoved === true),
      (error) => tell(error instanceof Error ? error : new Error(String(error)), true),
    );
  }

  /** Stops the follower (a stopped one is never left in `#following`: its reports end at once). */
  #stopFollowing(): void {
    // Its pending report ends at once (undefined) and wakes its waits, which look again.
    this.#following?.follower.stop();
    this.#following = undefined;
  }

  /** Marks a wait as under way, so that the writer's liveness is listened for. */
  #enter(): void {
    this.#waiting++;
    // Heard until the cell has been idle a moment, as the writer's death is: a loop of waits
    // keeps it without a call per wait.
    if (!this.#hearingShrink) {
      this.#hearingShrink = true;
      this.#memory.hearShrink();
    }
  }

  #stopHearingShrink(): void {
    if (!this.#hearingShrink) return;
    this.#hearingShrink = false;
    this.#memory.stopHearingShrink();
  }

  /**
   * Ends a wait; once none is left, stops listening so nothing keeps the process alive. Not at
   * once: a reader that waits again straight away (a loop of `waitForChange()`) keeps its
   * listener and follower instead of paying to start them again on every change. Nor is the
   * timer for it armed here, on the wake-up's path: a `setTimeout()` right after a wake-up cost
   * about 70 us of the woken caller's time here (Deno's timer code, run cold), once every
   * `IDLE_RELEASE_MS` of a loop. It is armed after the woken code has had its turns, and not at
   * all when a wait started again meanwhile: that wait's own end arms it.
   */
  #leave(): void {
    if (--this.#waiting > 0 || this.#idleCheck !== undefined || this.#idleTurns !== 0) return;
    this.#idleTurns = 1;
    queueMicrotask(this.#idleTurn);
  }

  /** One microtask turn of {@link StateCell.#leave}'s wait; made once, not a closure per wait. */
  readonly #idleTurn = (): void => {
    if (this.#waiting > 0 || this.#closed || this.#idleCheck !== undefined) {
      this.#idleTurns = 0;
    } else if (this.#idleTurns++ < WOKEN_CODE_TURNS) {
      queueMicrotask(this.#idleTurn);
    } else {
      this.#idleTurns = 0;
      this.#idleCheck = setTimeout(this.#releaseIfIdle, IDLE_RELEASE_MS);
    }
  };

  readonly #releaseIfIdle = (): void => {
    this.#idleCheck = undefined;
    if (this.#waiting > 0) return;
    this.#unlisten?.();
    this.#unlisten = undefined;
    this.#stopFollowing();
    // The grace counts the time spent waiting: the next wait gets one of its own.
    this.#followAfter = undefined;
    this.#writerSeen = undefined;
    this.#stopHearingShrink();
  };

  /**
   * Throws `BadResource` once closed (closing the region closes the cell first), `UnexpectedEof`
   * once the file under the cell was shrunk (see {@link SharedMemory.checkPages}), and
   * `InvalidData` once its header was written over.
   */
  #check(): void {
    if (this.#closed) throw this.#memory.closedError(`state cell in ${JSON.stringify(this.#name)}`);
    this.#memory.checkPages(LOST_PAGE_SUBJECT);
    if (this.#words[this.#magicIndex] !== STATE_CELL_MAGIC) this.#headerOverwritten();
  }
}

function hex(value: number): string {
  return `0x${(value >>> 0).toString(16).padStart(8, "0")}`;
}

/**
 * What is wrong with the header of the state cell at `offset` (default 0) of `region`, in words
 * fit for an error or a log line: `undefined` when it is a sound cell's, or when it is blank (all
 * zero, which {@link openStateCell} makes into a cell). {@link openStateCell} refuses such a
 * header unless `initialise` is set; a program that owns the memory (a supervisor, say) can look
 * first and decide to write it anew. Only the header's fixed words are looked at: a value, a
 * sequence or a claim a peer wrote over is the cell's to cope with.
 *
 * @example
 * ```ts
 * import { createMemfdRegion, openStateCell, stateCellHeaderProblem } from "@mmap-ipc/mmap-ipc";
 *
 * using region = createMemfdRegion({ size: 256 });
 * openStateCell(region).close();
 * console.log(stateCellHeaderProblem(region)); // undefined
 * region.write(64, new TextEncoder().encode("XXXX"));
 * console.log(stateCellHeaderProblem(region)); // found 0x58585858 at byte 64 where the magic ...
 * ```
 */
export function stateCellHeaderProblem(
  region: SharedRegion,
  options: { offset?: number } = {},
): string | undefined {
  options ??= {}; // null from JavaScript
  const base = options.offset ?? 0;
  checkPlace(region, base, "look at the state cell header in");
  const problem = headerProblem(region, base);
  return problem === "blank" ? undefined : problem?.reason;
}

/**
 * Writes the fixed words of the state cell header at `offset` (default 0) of `region` anew when
 * {@link stateCellHeaderProblem} finds them wrong: the layout version and the size, then the magic,
 * each with one atomic store. The sequence, the value, the text and the claims are left as they
 * are, so cells open on the memory (a writer in the middle of a write among them) carry on, and
 * {@link openStateCell} opens it again. Returns what was wrong, or `undefined` when nothing was
 * (a blank header too: {@link openStateCell} makes that a cell). Only for memory you own: a
 * header another program keeps there is overwritten.
 *
 * @example
 * ```ts
 * import { createMemfdRegion, openStateCell, restoreStateCellHeader } from "@mmap-ipc/mmap-ipc";
 *
 * using region = createMemfdRegion({ size: 256 });
 * using writer = openStateCell(region, { writer: true });
 * writer.write(1);
 * region.write(64, new TextEncoder().encode("XXXX"));
 * console.log(restoreStateCellHeader(region)); // found 0x58585858 at byte 64 where the magic ...
 * using reader = openStateCell(region);
 * console.log(reader.read()); // 1
 * ```
 */
export function restoreStateCellHeader(
  region: SharedRegion,
  options: { offset?: number } = {},
): string | undefined {
  options ??= {}; // null from JavaScript
  const problem = stateCellHeaderProblem(region, options);
  if (problem === undefined) return undefined;
  const base = options.offset ?? 0;
  region.storeInt32(base + VERSION, STATE_CELL_VERSION);
  region.storeInt32(base + SIZE, STATE_CELL_SIZE);
  // Last: a cell opened meanwhile sees the right magic only with the rest in place.
  region.storeInt32(base + MAGIC, STATE_CELL_MAGIC);
  return problem;
}

/**
 * What the header at `base` is, unless a sound cell's: blank, or wrong in the way `reason` says
 * (`foreign`: not a cell's at all, rather than another version's).
 */
function headerProblem(
  region: SharedRegion,
  base: number,
): "blank" | { reason: string; foreign?: boolean } | undefined {
  const cell = region.read(base, STATE_CELL_SIZE);
  const view = new DataView(cell.buffer, MAGIC);
  const magic = view.getUint32(0, true);
  if (cell.subarray(MAGIC).every((byte) => byte === 0) || beingMade(view)) {
    // A fresh ring's header leaves these bytes zero too; making a cell there would wreck it.
    const text = new DataView(cell.buffer).getUint32(0, true);
    if (text !== RING_MAGIC) return "blank";
    return {
      reason: `found a ring's header (its magic ${hex(RING_MAGIC)}, "RING") at byte ${base}`,
      foreign: true,
    };
  }
  if (magic !== STATE_CELL_MAGIC) {
    return {
      reason: `found ${hex(magic)} at byte ${base + MAGIC} where the magic ${
        hex(STATE_CELL_MAGIC)
      } ("CELL") belongs; it holds something else`,
      foreign: true,
    };
  }
  const version = view.getUint32(VERSION - MAGIC, true);
  if (version !== STATE_CELL_VERSION) {
    return {
      reason: `its layout version is ${version}; this library reads version ${STATE_CELL_VERSION}`,
    };
  }
  const size = view.getUint32(SIZE - MAGIC, true);
  if (size !== STATE_CELL_SIZE) {
    return {
      reason:
        `its header claims a cell of ${size} bytes; a version ${STATE_CELL_VERSION} cell has ${STATE_CELL_SIZE}`,
    };
  }
  return undefined;
}

/** The `InvalidData` an open of a cell whose header has `problem` fails with. */
function headerRefusal(
  region: SharedRegion,
  problem: { reason: string; foreign?: boolean },
): Error {
  // Only a foreign header is worth overwriting: another version's is a newer program's.
  const hint = problem.foreign ? " (pass initialise: true to overwrite it)" : "";
  return failure(Deno.errors.InvalidData, "open state cell in", region.name, problem.reason + hint);
}

/**
 * Throws `RangeError` unless a state cell can start at `base` in `region`; first `TypeError` for
 * what is no region of this library (which failed with "region.read is not a function") and
 * `BadResource` for a closed one.
 */
function checkPlace(region: SharedRegion, base: number, action: string): void {
  memoryOf(region);
  if (!Number.isSafeInteger(base) || base < 0 || base % 8 !== 0) {
    throw failure(
      RangeError,
      action,
      region.name,
      `offset ${base} is not a non-negative multiple of 8 (a claim there is a 64-bit word)`,
    );
  }
  if (base + STATE_CELL_SIZE > region.size) {
    throw failure(
      RangeError,
      action,
      region.name,
      `the region has ${region.size} bytes; a state cell needs ${STATE_CELL_SIZE} from offset ${base}`,
    );
  }
}

/**
 * Whether the header (from its magic on) is a blank one that an opener is making, or died
 * making: no magic yet, the maker's claim, and nothing but what the making writes before the
 * magic. Anything else with no magic is not a cell's.
 */
function beingMade(header: DataView): boolean {
  const word = (at: number): number => header.getUint32(at - MAGIC, true);
  const version = word(VERSION);
  const size = word(SIZE);
  return word(MAGIC) === 0 && header.getBigUint64(MAKER - MAGIC, true) !== 0n &&
    (version === 0 || version === STATE_CELL_VERSION) && (size === 0 || size === STATE_CELL_SIZE) &&
    header.getBigUint64(WRITER - MAGIC, true) === 0n &&
    header.getBigUint64(SUPERVISOR - MAGIC, true) === 0n && word(MAKER - 4) === 0 &&
    header.getBigUint64(MAKER + 8 - MAGIC, true) === 0n;
}

/** Throws unless `followGraceMs` is a number of milliseconds from 0 up (`Infinity`: no Worker). */
function checkGrace(value: number | undefined): void {
  if (value === undefined) return;
  if (typeof value !== "number") {
    throw new TypeError(`followGraceMs ${shown(value)} is not a number of milliseconds`);
  }
  if (!(value >= 0)) {
    throw new RangeError(`followGraceMs ${value} is not a number of milliseconds from 0 up`);
  }
}

/**
 * Opens the state cell in `region`. A blank (all-zero) header, such as the one in a file the
 * original C program made, is given a fresh header and keeps its value; a foreign or damaged
 * header is an error that says what was found, unless `initialise` is set.
 *
 * @param region A region of at least {@link STATE_CELL_SIZE} bytes from the cell's offset.
 * @param [options={}] The roles to take, where the cell starts, and what to do with a bad header.
 * @example
 * ```ts
 * import { createMemfdRegion, openStateCell } from "@mmap-ipc/mmap-ipc";
 *
 * using region = createMemfdRegion({ size: 256 });
 * using cell = openStateCell(region, { writer: true });
 * cell.write(cell.read() === 0 ? 1 : 0);
 * console.log(cell.read()); // 1
 * ```
 */
export function openStateCell(region: SharedRegion, options: StateCellOptions = {}): StateCell {
  options ??= {}; // null from JavaScript
  const base = options.offset ?? 0;
  const action = "open state cell in";
  checkPlace(region, base, action);
  if (!isStateValue(options.initialValue ?? 0)) {
    throw new RangeError(`Initial state ${options.initialValue} is not a 32-bit integer`);
  }
  for (const name of ["followPeriodMs", "livenessCheckMs"] as const) {
    checkPeriod(options[name], name);
  }
  checkGrace(options.followGraceMs);
  // Now, not at the first read or write, which failed on it with a TypeError of our own. (A
  // closed one fails a writer's open once its roles are taken, which it then gives up.)
  const { mirror } = options;
  if (mirror !== undefined && !(mirror instanceof StateFile)) {
    throw new TypeError(
      `State cell option mirror is ${describeKind(mirror)}, not a StateFile (see openStateFile())`,
    );
  }
  // Now, not from the microtask that would first call one, where nothing could catch it.
  for (const name of ["onWriter", "onMirrorError", "onMirrorRecovered"] as const) {
    if (options[name] !== undefined && typeof options[name] !== "function") {
      throw new TypeError(`State cell option ${name} is a ${typeof options[name]}, not a function`);
    }
  }
  // A reader with no cooperating writer has nothing else to go by: it must look now and then.
  if ((options.followPeriodMs ?? 1) > MAX_FOLLOW_PERIOD_MS) {
    throw new RangeError(
      `followPeriodMs ${options.followPeriodMs} is more than ${MAX_FOLLOW_PERIOD_MS} ms (a finite period is needed)`,
    );
  }
  // Asked for: the constructor looks at the header itself, as it acts.
  if (options.initialise) {
    return new StateCell(constructing, { region, options, header: "initialise" });
  }
  let problem = headerProblem(region, base);
  // The bytes are read one by one: a header read while its maker finished may look half made
  // and foreign (no magic yet, the maker's claim gone already). A second look tells.
  if (typeof problem === "object" && problem.foreign) problem = headerProblem(region, base);
  if (typeof problem === "object") throw headerRefusal(region, problem);
  const header: HeaderState = problem === "blank" ? "blank" : "valid";
  return new StateCell(constructing, { region, options, header });
}
