/**
 * The state cell: the latest value of a small integer state shared between processes, such as
 * the button/LED state, with change notification and no polling between cooperating processes.
 *
 * Layout, from the cell's offset in its region:
 *
 * | bytes   | what                                                                  |
 * | ------- | --------------------------------------------------------------------- |
 * | 0-31    | the value as text, `"%d\n\0"`: what the original C programs read/write |
 * | 64-67   | magic `CELL`                                                          |
 * | 68-71   | layout version                                                        |
 * | 72-75   | cell size in bytes (128)                                              |
 * | 76-79   | sequence: the futex word, even when stable, odd while a write is made |
 * | 80-83   | how many readers are asleep on the sequence                            |
 * | 88-95   | the writer's claim (pid and start time)                               |
 * | 96-103  | the supervisor's claim (the launcher that owns the cell's lifetime)   |
 *
 * Bytes 32-63 and 104-127 are reserved; nothing is ever written at byte 257, where the original
 * C program keeps the last byte of its file.
 *
 * @module
 */

import type { Mapping } from "../ffi/mapping.ts";
import {
  claimHolder,
  claimIsLive,
  holdsClaim,
  readClaim,
  releaseClaim,
  takeClaim,
} from "./claim.ts";
import { abortReason, failure } from "./errors.ts";
import { mappingOf, type SharedRegion } from "./region.ts";

/** Bytes a state cell occupies in its region. */
export const STATE_CELL_SIZE = 128;
/** The magic number at byte 64 of a state cell: the ASCII letters `CELL`. */
export const STATE_CELL_MAGIC = 0x4c4c4543;
/** The layout version this library reads and writes. */
export const STATE_CELL_VERSION = 1;

const TEXT_BYTES = 32;
const MAGIC = 64;
const VERSION = 68;
const SIZE = 72;
const SEQUENCE = 76;
const WAITERS = 80;
const WRITER = 88;
const SUPERVISOR = 96;
/**
 * How often a reader looks at the text while no cooperating writer holds the cell: the only
 * way to see a writer that knows nothing of the sequence word (the original C button).
 */
const FOREIGN_WRITER_CHECK_MS = 2;
const MAX_SEQLOCK_SPINS = 10_000;

/** Options for {@link openStateCell}. */
export interface StateCellOptions {
  /** Where the cell starts in the region, a multiple of 8. Default 0 (the original's place). */
  offset?: number;
  /** Take the single writer role; `Deno.errors.Busy` names the pid of a live holder. */
  writer?: boolean;
  /**
   * Take the supervisor role: the one process (such as a launcher) that owns the cell's
   * lifetime. `Deno.errors.Busy` names the pid of a live holder.
   */
  supervisor?: boolean;
  /**
   * Write a fresh header and the value {@link StateCellOptions.initialValue} even over a header
   * that is foreign or damaged. Without it such a header is an error and nothing is written.
   */
  initialise?: boolean;
  /** The value `initialise` writes. Default 0. */
  initialValue?: number;
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
  /** Yield the value the cell holds now before waiting for the first change. Default false. */
  current?: boolean;
}

interface Snapshot {
  sequence: number;
  value: number;
}

/**
 * The latest value of a small integer state in a shared region. One process at a time may
 * write (open with `writer: true`); any number read, and sleep until it changes.
 *
 * @example
 * ```ts
 * using region = openFileRegion("/tmp/data.dat", { create: true, size: 256 });
 * using cell = openStateCell(region);
 * for await (const state of cell.changes({ signal: AbortSignal.timeout(10_000) })) {
 *   console.log(`LED Status: ${state ? "On" : "Off"}`);
 * }
 * ```
 */
export class StateCell {
  readonly #region: SharedRegion;
  readonly #mapping: Mapping;
  readonly #base: number;
  readonly #bytes: Uint8Array;
  readonly #words: Int32Array;
  readonly #sequenceIndex: number;
  readonly #waitersIndex: number;
  readonly #writer: boolean;
  readonly #supervisor: boolean;
  #closed = false;
  readonly #closing = new AbortController();
  readonly #joined = new WeakMap<AbortSignal, AbortSignal>();
  #deadClaim = 0n;

  /** Not for direct use: call {@link openStateCell}. */
  constructor(token: symbol, region: SharedRegion, options: StateCellOptions, header: HeaderState) {
    if (token !== constructing) throw new TypeError("Use openStateCell() to open a state cell");
    this.#region = region;
    this.#mapping = mappingOf(region);
    this.#base = options.offset ?? 0;
    this.#bytes = this.#mapping.bytes;
    this.#words = this.#mapping.words;
    this.#sequenceIndex = (this.#base + SEQUENCE) >> 2;
    this.#waitersIndex = (this.#base + WAITERS) >> 2;
    this.#writer = options.writer ?? false;
    this.#supervisor = options.supervisor ?? false;
    if (header === "initialise") this.#initialise(options.initialValue ?? 0);
    // Blank: a file the original made, or fresh memory. Keep the value its text holds.
    if (header === "blank") this.#initialise(this.#snapshot().value);
    if (this.#supervisor) {
      takeClaim(
        this.#mapping,
        this.#base + SUPERVISOR,
        `the supervisor role of state cell ${JSON.stringify(region.name)}`,
      );
    }
    if (this.#writer) {
      try {
        this.#claimWriter();
      } catch (error) {
        if (this.#supervisor) releaseClaim(this.#mapping, this.#base + SUPERVISOR);
        throw error;
      }
    }
  }

  /** Whether this handle holds the writer role. */
  get isWriter(): boolean {
    return this.#writer && !this.#closed;
  }

  /** The pid of the live process holding the writer role, if any. */
  get writerPid(): number | undefined {
    this.#check();
    return claimHolder(this.#mapping, this.#base + WRITER);
  }

  /** The pid of the live process holding the supervisor role, if any. */
  get supervisorPid(): number | undefined {
    this.#check();
    return claimHolder(this.#mapping, this.#base + SUPERVISOR);
  }

  /** The current value. */
  read(): number {
    this.#check();
    return this.#snapshot().value;
  }

  /**
   * Publishes `value` (a 32-bit integer): writes its text at the cell's start, bumps the
   * sequence and wakes every sleeping reader. Needs the writer role.
   */
  write(value: number): void {
    this.#check();
    if (!Number.isInteger(value) || value < -(2 ** 31) || value >= 2 ** 31) {
      throw new RangeError(`State ${value} is not a 32-bit integer`);
    }
    if (!this.#writer) {
      throw new Deno.errors.PermissionDenied(
        `Cannot write state cell ${JSON.stringify(this.#region.name)}: opened without writer: true`,
      );
    }
    if (!holdsClaim(this.#mapping, this.#base + WRITER)) {
      throw failure(
        Deno.errors.Busy,
        "write state cell",
        this.#region.name,
        "this process no longer holds the writer role",
      );
    }
    this.#publish(value);
  }

  /**
   * Resolves with the new value once the cell holds something other than `from`. Rejects with
   * `Deno.errors.TimedOut` after `timeout` ms, or with the signal's reason on abort.
   */
  async waitForChange(options: StateWaitOptions = {}): Promise<number> {
    this.#check();
    const { signal, timeout } = options;
    const deadline = timeout === undefined ? Infinity : performance.now() + timeout;
    let seen = this.#snapshot();
    const from = options.from ?? seen.value;
    for (;;) {
      if (seen.value !== from) return seen.value;
      if (signal?.aborted) throw abortReason(signal);
      seen = await this.#nextChange(seen, deadline, signal);
      if (this.#closed) throw new Deno.errors.BadResource(this.#closedMessage());
    }
  }

  /**
   * {@link StateCell.waitForChange} without the event loop: blocks this thread until the value
   * differs from `from` or `timeout` ms pass (then throws `TimedOut`; the timeout is required).
   * A change is seen several times sooner than through the event loop, but nothing else runs
   * on the thread meanwhile: use it in a worker, or in a process whose only job is to wait.
   */
  waitForChangeSync(options: { from?: number; timeout: number }): number {
    this.#check();
    const deadline = performance.now() + options.timeout;
    let seen = this.#snapshot();
    const from = options.from ?? seen.value;
    for (;;) {
      if (seen.value !== from) return seen.value;
      const slice = this.#sleepFor(deadline) ?? 0;
      Atomics.add(this.#words, this.#waitersIndex, 1);
      try {
        this.#mapping.waitSync(this.#base + SEQUENCE, seen.sequence, slice);
      } finally {
        Atomics.sub(this.#words, this.#waitersIndex, 1);
      }
      this.#check();
      seen = this.#snapshot();
    }
  }

  /**
   * Yields each new value as it is published. Readers that fall behind see the latest value,
   * not every value in between (changes are coalesced), and never the same value twice in a
   * row. Ends quietly when `signal` aborts or the cell is closed.
   */
  async *changes(options: StateChangesOptions = {}): AsyncGenerator<number, void, undefined> {
    this.#check();
    const { signal } = options;
    let seen = this.#snapshot();
    let last = seen.value;
    if (options.current) yield last;
    while (!this.#closed && !signal?.aborted) {
      try {
        seen = await this.#nextChange(seen, Infinity, signal);
      } catch (error) {
        if (signal?.aborted || this.#closed) return;
        throw error;
      }
      if (this.#closed || signal?.aborted) return;
      if (seen.value !== last) {
        last = seen.value;
        yield last;
      }
    }
  }

  /**
   * Gives up the writer and supervisor roles (if held) and wakes this process's sleeping readers so their
   * iterations end. The region stays open: it belongs to whoever opened it. Safe to call twice.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Ends this handle's own waits, even one whose thread has not reached the kernel yet.
    this.#closing.abort();
    if (this.#region.closed) return;
    if (this.#supervisor) releaseClaim(this.#mapping, this.#base + SUPERVISOR);
    if (this.#writer && holdsClaim(this.#mapping, this.#base + WRITER)) {
      releaseClaim(this.#mapping, this.#base + WRITER);
      // Readers in other processes must notice that no cooperating writer is left. Moving the
      // sequence (by two: no write is in progress) makes that impossible to miss: a reader
      // about to sleep on the old value returns at once instead.
      Atomics.add(this.#words, this.#sequenceIndex, 2);
      this.#mapping.wake(this.#base + SEQUENCE);
    }
  }

  /** Same as {@link StateCell.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Writes the header and `value`, keeping the sequence moving forward. */
  #initialise(value: number): void {
    const base = this.#base;
    const words = this.#words;
    const sequence = Atomics.load(words, this.#sequenceIndex);
    Atomics.store(words, (base + VERSION) >> 2, STATE_CELL_VERSION);
    Atomics.store(words, (base + SIZE) >> 2, STATE_CELL_SIZE);
    Atomics.store(words, this.#sequenceIndex, (sequence + 1) | 1);
    this.#writeText(value);
    Atomics.store(words, this.#sequenceIndex, ((sequence + 2) | 1) + 1);
    Atomics.store(words, (base + MAGIC) >> 2, STATE_CELL_MAGIC);
    this.#mapping.wake(base + SEQUENCE);
  }

  /** Takes the writer claim and repairs a sequence a dead writer left odd. */
  #claimWriter(): void {
    takeClaim(
      this.#mapping,
      this.#base + WRITER,
      `the writer role of state cell ${JSON.stringify(this.#region.name)}`,
    );
    const sequence = Atomics.load(this.#words, this.#sequenceIndex);
    if (sequence & 1) {
      Atomics.compareExchange(this.#words, this.#sequenceIndex, sequence, sequence + 1);
    }
    // Readers that were checking the text for a foreign writer can now sleep for good.
    this.#mapping.wake(this.#base + SEQUENCE);
  }

  #publish(value: number): void {
    Atomics.add(this.#words, this.#sequenceIndex, 1);
    this.#writeText(value);
    Atomics.add(this.#words, this.#sequenceIndex, 1);
    if (Atomics.load(this.#words, this.#waitersIndex) > 0) {
      this.#mapping.wake(this.#base + SEQUENCE);
    }
  }

  #writeText(value: number): void {
    // Byte-wise atomic stores keep the text ordered with the sequence on weakly ordered CPUs.
    // The digits are written by hand: this runs on every write, and an encoder allocates.
    const bytes = this.#bytes;
    let at = this.#base;
    let rest = value;
    if (rest < 0) {
      Atomics.store(bytes, at++, 0x2d);
      rest = -rest;
    }
    let divisor = 1;
    while (divisor * 10 <= rest) divisor *= 10;
    for (; divisor >= 1; divisor /= 10) {
      Atomics.store(bytes, at++, 0x30 + Math.floor(rest / divisor) % 10);
    }
    Atomics.store(bytes, at++, 0x0a);
    Atomics.store(bytes, at, 0);
  }

  #snapshot(): Snapshot {
    const words = this.#words;
    for (let spin = 0;; spin++) {
      const before = Atomics.load(words, this.#sequenceIndex);
      // Odd: a write is half done. A writer that died there leaves it odd for good, so after a
      // while read anyway rather than hang.
      if ((before & 1) !== 0 && spin < MAX_SEQLOCK_SPINS) continue;
      const value = this.#readText();
      if (Atomics.load(words, this.#sequenceIndex) === before) {
        return { sequence: before, value };
      }
    }
  }

  /** Parses the text the way the original's `sscanf("%d")` does; anything unparsable is 0. */
  #readText(): number {
    const bytes = this.#bytes;
    const end = this.#base + TEXT_BYTES;
    let i = this.#base;
    let byte = Atomics.load(bytes, i);
    while (i < end - 1 && (byte === 0x20 || (byte >= 0x09 && byte <= 0x0d))) {
      byte = Atomics.load(bytes, ++i);
    }
    let sign = 1;
    if (byte === 0x2d || byte === 0x2b) {
      if (byte === 0x2d) sign = -1;
      byte = Atomics.load(bytes, ++i);
    }
    let value = 0;
    let digits = 0;
    while (i < end && byte >= 0x30 && byte <= 0x39) {
      value = Math.min(value * 10 + (byte - 0x30), 2 ** 31);
      digits++;
      byte = ++i < end ? Atomics.load(bytes, i) : 0;
    }
    return digits === 0 ? 0 : Math.max(-(2 ** 31), Math.min(2 ** 31 - 1, sign * value));
  }

  /**
   * How long the next sleep may last: until the deadline while a cooperating writer will wake
   * us (undefined: no limit), else only until the next look at the text. Throws `TimedOut`
   * once the deadline has passed.
   */
  #sleepFor(deadline: number): number | undefined {
    const remaining = deadline - performance.now();
    if (remaining <= 0) {
      throw failure(
        Deno.errors.TimedOut,
        "wait for a change of state cell",
        this.#region.name,
        "no change before the timeout",
      );
    }
    if (!this.#cooperatingWriter()) return Math.min(remaining, FOREIGN_WRITER_CHECK_MS);
    return remaining === Infinity ? undefined : remaining;
  }

  /** Whether a live process that speaks this protocol holds the writer role. */
  #cooperatingWriter(): boolean {
    const claim = readClaim(this.#mapping, this.#base + WRITER);
    if (claim === 0n || claim === this.#deadClaim) return false;
    if (claimIsLive(claim)) return true;
    this.#deadClaim = claim;
    return false;
  }

  /**
   * Sleeps until the sequence moves or the text changes under a foreign writer, the deadline
   * passes (TimedOut), the signal aborts or the cell closes (both return the last snapshot).
   */
  async #nextChange(seen: Snapshot, deadline: number, signal?: AbortSignal): Promise<Snapshot> {
    const stop = this.#stopSignal(signal);
    for (;;) {
      if (this.#closed || this.#region.closed || signal?.aborted) return seen;
      const now = this.#snapshot();
      if (now.sequence !== seen.sequence || now.value !== seen.value) return now;
      const timeoutMs = this.#sleepFor(deadline);
      Atomics.add(this.#words, this.#waitersIndex, 1);
      try {
        await this.#mapping.wait(this.#base + SEQUENCE, now.sequence, { timeoutMs, signal: stop });
      } finally {
        if (!this.#region.closed) Atomics.sub(this.#words, this.#waitersIndex, 1);
      }
    }
  }

  /** The caller's signal joined with this handle's own close, made once per caller's signal. */
  #stopSignal(signal: AbortSignal | undefined): AbortSignal {
    if (signal === undefined) return this.#closing.signal;
    let joined = this.#joined.get(signal);
    if (joined === undefined) {
      joined = AbortSignal.any([signal, this.#closing.signal]);
      this.#joined.set(signal, joined);
    }
    return joined;
  }

  #check(): void {
    if (this.#closed || this.#region.closed) {
      throw new Deno.errors.BadResource(this.#closedMessage());
    }
  }

  #closedMessage(): string {
    return `The state cell in ${JSON.stringify(this.#region.name)} is closed`;
  }
}

const constructing = Symbol("StateCell.constructing");

/** What {@link openStateCell} found in the header and so what the constructor must do. */
type HeaderState = "valid" | "blank" | "initialise";

function hex(value: number): string {
  return `0x${(value >>> 0).toString(16).padStart(8, "0")}`;
}

/**
 * Opens the state cell in `region`. A blank (all-zero) header, such as the one in a file the
 * original C program made, is given a fresh header and keeps its value; a foreign or damaged
 * header is an error that says what was found, unless `initialise` is set.
 *
 * @example
 * ```ts
 * using region = openShmRegion("/led", { create: true, size: 256 });
 * using cell = openStateCell(region, { writer: true });
 * cell.write(cell.read() === 0 ? 1 : 0);
 * ```
 */
export function openStateCell(region: SharedRegion, options: StateCellOptions = {}): StateCell {
  const base = options.offset ?? 0;
  const action = "open state cell in";
  if (!Number.isSafeInteger(base) || base < 0 || base % 8 !== 0) {
    throw new RangeError(`State cell offset ${base} is not a non-negative multiple of 8`);
  }
  if (base + STATE_CELL_SIZE > region.size) {
    throw failure(
      RangeError,
      action,
      region.name,
      `the region has ${region.size} bytes; a state cell needs ${STATE_CELL_SIZE} from offset ${base}`,
    );
  }
  const initialValue = options.initialValue ?? 0;
  if (!Number.isInteger(initialValue) || initialValue < -(2 ** 31) || initialValue >= 2 ** 31) {
    throw new RangeError(`Initial state ${initialValue} is not a 32-bit integer`);
  }
  const header = region.read(base + MAGIC, STATE_CELL_SIZE - MAGIC);
  const view = new DataView(header.buffer);
  const magic = view.getUint32(0, true);
  let state: HeaderState = "valid";
  if (options.initialise) {
    state = "initialise";
  } else if (header.every((byte) => byte === 0)) {
    state = "blank";
  } else if (magic !== STATE_CELL_MAGIC) {
    throw failure(
      Deno.errors.InvalidData,
      action,
      region.name,
      `found ${hex(magic)} at byte ${base + MAGIC} where the magic ${
        hex(STATE_CELL_MAGIC)
      } ("CELL") belongs; it holds something else (pass initialise: true to overwrite it)`,
    );
  } else {
    const version = view.getUint32(VERSION - MAGIC, true);
    const size = view.getUint32(SIZE - MAGIC, true);
    if (version !== STATE_CELL_VERSION) {
      throw failure(
        Deno.errors.InvalidData,
        action,
        region.name,
        `its layout version is ${version}; this library reads version ${STATE_CELL_VERSION}`,
      );
    }
    if (size !== STATE_CELL_SIZE) {
      throw failure(
        Deno.errors.InvalidData,
        action,
        region.name,
        `its header claims a cell of ${size} bytes; a version ${STATE_CELL_VERSION} cell has ${STATE_CELL_SIZE}`,
      );
    }
  }
  return new StateCell(constructing, region, options, state);
}
