/**
 * What both ends of a ring share: the memory and its word indexes, the role claim, taking turns
 * between blocking calls, and sleeping until the other side moves.
 *
 * @module
 */

import {
  claimIsLive,
  describeHolder,
  ownClaim,
  readClaim,
  releaseClaim,
  takeClaim,
} from "../claim.ts";
import { abortReason, failure, shown } from "../errors.ts";
import { describeKind } from "../byte_arrays.ts";
import { checkPeriod, checkSignal, checkTimeout, NO_LIMIT_MS, startTimer } from "../timeouts.ts";
import { guardedFaultWord } from "../../ffi/sigbus_guard.ts";
import type { SharedMemory, Sleep } from "../memory.ts";
import { memoryOf, type SharedRegion } from "../region.ts";
import {
  CAPACITY,
  CLOSED,
  MAGIC,
  POSITION,
  RECORD_HEADER_SIZE,
  RING_HEADER_SIZE,
  RING_MAGIC,
} from "./layout.ts";

/** Options for `openRingProducer` and `openRingConsumer`. */
export interface RingOptions {
  /**
   * Where the ring starts in the region (as given to `initRing`).
   *
   * @default {0}
   */
  offset?: number;
  /**
   * Check for space or data this many times (about 50 ns each) before sleeping on the futex:
   * costs a little CPU, saves a wake-up when the other side is quick; 0 sleeps at once. At most
   * 100,000: the event loop (timers, the wait's own timeout and signal) waits while it spins.
   *
   * @default {1000}
   */
  spin?: number;
  /**
   * How often a side that is asleep checks that the other side is still alive, in ms;
   * `Infinity` turns it off: then a dead peer is only noticed by a timeout, and so is a peer
   * that breaks the protocol by clearing this side's "asleep" flag (it is then not woken, as if
   * nothing were sent). With a finite period such a wake-up comes at most this late.
   *
   * @default {1000}
   */
  livenessCheckMs?: number;
}

/** Options for a blocking ring operation. */
export interface RingWaitOptions {
  /** Reject with `Deno.errors.TimedOut` after this many ms. Default: no limit. */
  timeout?: number;
  /** Reject with the signal's reason when aborted. */
  signal?: AbortSignal;
}

/**
 * `Atomics.load` and `Atomics.store`, held: called through these, the hot paths' bytecode (which
 * the runtime's inlining budget counts) is about a third smaller per call than through a
 * property of `Atomics`, and a call costs the same once compiled.
 */
export const { load: atomicLoad, store: atomicStore } = Atomics;

const DEFAULT_LIVENESS_CHECK_MS = 1000;
const DEFAULT_SPIN = 1000;
/**
 * The most checks a spin may make (a few ms): a spin blocks the event loop, so timers, timeouts
 * and abort signals wait until it ends; past this it stops paying and starts to hang the process.
 */
export const MAX_SPIN = 100_000;

/** The words a sleeping end uses: see {@link RingCore.waitFor}. */
export interface WaitFields {
  /** The futex word it sleeps on: the other end's position. */
  word: number;
  /** Its "asleep" flag. */
  waiting: number;
  /** The other end's claim, and its name in errors. */
  peer: number;
  peerName: string;
  /** Its own position word, its name, and what it last put there. */
  own: number;
  ownName: string;
  published: () => number;
}

/** Empty or full answers of the try forms between two looks at the clock (see pollPeer). */
const ANSWERS_PER_LOOK = 256;

/** One waiter for its turn: how to let it go, or to fail it. */
interface Turn {
  go: () => void;
  fail: (error: unknown) => void;
}

/** The shared state of one ring end; the ends keep their hot fields in their own slots. */
export class RingCore {
  readonly name: string;
  readonly memory: SharedMemory;
  readonly words: Int32Array;
  readonly bytes: Uint8Array;
  readonly base: number;
  /** Byte offset of the data. */
  readonly data: number;
  /** The data as words: the length of the record at data index `at` is `lengths[at >> 2]`. */
  readonly lengths: Int32Array;
  /**
   * The data past the first record header: the message of the record at data index `at` starts
   * at `messages[at]`.
   */
  readonly messages: Uint8Array;
  readonly capacity: number;
  readonly maxMessageSize: number;
  readonly spin: number;
  readonly livenessCheckMs: number;
  /**
   * The SIGBUS guard's fault count, kept: nonzero sends the try forms to `check()` first, and
   * the ends look again after each access to shared words or data, before they act on what they
   * read (see {@link RingCore.checkLost}).
   */
  readonly faults: Int32Array;
  /**
   * Nonzero while a `try` call cannot take its short path: the end is closed, a lease or
   * reservation is held, a callback of this end runs, or a blocking call holds the turn. One
   * load for the hot paths, kept up to date by the four setters below.
   */
  blocked = 0;
  #closed = false;
  #busy = false;
  #held: ArrayBuffer | undefined;
  #inCallback = false;
  readonly #queue: Turn[] = [];
  readonly #magicIndex: number;
  readonly #capacityIndex: number;
  readonly #heldMessage: string;
  #view: Uint8Array<ArrayBuffer> | undefined;
  /** The position word as the last holder of this end left it, before attach() took over. */
  #attachedOver: number | undefined;
  /** Where this end's claim is, and its role's name, once attached. */
  #claim: { field: number; role: string } | undefined;
  /**
   * The word index of the low half of this end's claim, the holder's thread id, once attached:
   * one load with no BigInt made tells the hot paths whether it is still this end's (both
   * architectures are little-endian).
   */
  claimWord = 0;
  /** That half as this end wrote it. */
  readonly ownId: number = Number(ownClaim() & 0xffff_ffffn);
  /**
   * The other end's claim as last seen: a claim word another process zeroed must not hide its
   * holder's death, or this end would sleep for good.
   */
  #peerSeen = 0n;
  /** Empty (or full) answers left before the next look at the clock (see pollPeer). */
  #answersLeft = 1;
  /** How many answers go between two looks at the clock: fewer while they come slowly. */
  #answersPerLook = 1;
  #lastClockLook = -Infinity;
  #nextPollLook = 0;

  /**
   * @param heldMessage what `Busy` says while a lease or reservation is held
   */
  constructor(region: SharedRegion, capacity: number, options: RingOptions, heldMessage: string) {
    this.#heldMessage = heldMessage;
    this.name = region.name;
    this.memory = memoryOf(region);
    this.faults = guardedFaultWord();
    this.words = this.memory.words;
    this.bytes = this.memory.bytes;
    this.base = options.offset ?? 0;
    this.data = this.base + RING_HEADER_SIZE;
    this.#magicIndex = (this.base + MAGIC) / 4;
    this.#capacityIndex = (this.base + CAPACITY) / 4;
    this.capacity = capacity;
    this.maxMessageSize = capacity - 8;
    this.lengths = this.words.subarray(this.data / 4, (this.data + capacity) / 4);
    this.messages = this.bytes.subarray(this.data + RECORD_HEADER_SIZE, this.data + capacity);
    this.spin = options.spin ?? DEFAULT_SPIN;
    this.livenessCheckMs = options.livenessCheckMs ?? DEFAULT_LIVENESS_CHECK_MS;
    if (!Number.isSafeInteger(this.spin) || this.spin < 0 || this.spin > MAX_SPIN) {
      throw new RangeError(
        `Ring option spin ${
          shown(this.spin)
        } is not a whole number of checks from 0 to ${MAX_SPIN}`,
      );
    }
    checkPeriod(this.livenessCheckMs, "Ring option livenessCheckMs");
  }

  /** Whether this end is closed (its region may still be open). */
  get closed(): boolean {
    return this.#closed;
  }

  set closed(closed: boolean) {
    this.#closed = closed;
    this.#restate();
  }

  /** Whether a blocking call runs (and so the `try` forms must not overtake it). */
  get busy(): boolean {
    return this.#busy;
  }

  set busy(busy: boolean) {
    this.#busy = busy;
    this.#restate();
  }

  /** The lease (consumer) or reservation (producer) handed out and not finished yet. */
  get held(): ArrayBuffer | undefined {
    return this.#held;
  }

  set held(held: ArrayBuffer | undefined) {
    this.#held = held;
    this.#restate();
  }

  /** While a `...With` callback runs: it must not use this end, whose positions are in flux. */
  get inCallback(): boolean {
    return this.#inCallback;
  }

  set inCallback(inCallback: boolean) {
    this.#inCallback = inCallback;
    this.#restate();
  }

  #restate(): void {
    this.blocked = this.#closed || this.#busy || this.#held !== undefined || this.#inCallback
      ? 1
      : 0;
  }

  /** The ring's data area in place, lent by the memory and revoked when this end closes. */
  dataView(): Uint8Array {
    this.check();
    const view = this.#view;
    // Moved away by its user (transfer(), a postMessage transfer list), it has length 0 (a ring
    // has 8 bytes at least), and is lent again: the ...With callbacks are handed it, and a view
    // of length 0 there wrote or read nothing. The length, not buffer.detached: the ...With
    // forms ask on every call, and the getter cost them a third of their time.
    if (view !== undefined && view.length !== 0) return view;
    if (view !== undefined) this.memory.revoke(view.buffer);
    return this.#view = new Uint8Array(this.memory.lend(this.data, this.capacity));
  }

  /**
   * Whether a `try` call may go ahead now: throws after close, while a lease or reservation is
   * held, or from inside a callback of this end; false while a blocking call waits its turn (it
   * must not be overtaken).
   */
  free(): boolean {
    if (this.blocked === 0 && this.faults[0] === 0) return true;
    if (this.#closed || this.#held !== undefined || this.#inCallback || this.faults[0] !== 0) {
      this.ready();
    }
    return !this.#busy;
  }

  /**
   * How many more times a blocking call may try at once, in its own stack, before it queues for
   * its turn and sleeps: the whole spin while no other call holds the turn, else none. Spinning
   * here saves the promises and closures a turn costs, per message, when the other side is quick.
   */
  spins(): number {
    return this.busy ? 0 : this.spin;
  }

  /**
   * The rest of a blocking call whose `try` form found nothing: tries it again up to
   * {@link RingCore.spins} times here, then waits its turn, sleeps with `sleep(spun)` (which
   * resolves with what the end's wait found) and ends with `finish` of that.
   */
  async blocking<T>(
    retry: () => T | undefined,
    sleep: (spun: boolean) => Promise<number>,
    finish: (found: number) => T,
    options: RingWaitOptions,
  ): Promise<T> {
    const spins = this.spins();
    for (let spin = 0; spin < spins; spin++) {
      const value = retry();
      if (value !== undefined) return value;
    }
    return await this.inTurn(
      async () => {
        const found = await sleep(spins > 0);
        this.check(); // closed while the wait returned: take or write nothing
        return finish(found);
      },
      options,
      this.ready,
    );
  }

  /**
   * The error for a bad argument to `action` (such as `send into`), naming the ring: once the end
   * or its region is closed (`BadResource`), or while a lease, reservation or callback holds it
   * (`Busy`), that comes first, as for any other call.
   */
  argumentError(
    ErrorType: typeof RangeError | typeof TypeError,
    action: string,
    reason: string,
  ): Error {
    this.ready();
    return failure(ErrorType, `${action} the ring in`, this.name, reason);
  }

  /** Throws a `TypeError` naming the ring unless `callback` (the `name`, to `action`) is one. */
  checkCallback(callback: unknown, name: string, action: string): void {
    if (typeof callback === "function") return;
    throw this.argumentError(
      TypeError,
      action,
      `the ${name} is ${describeKind(callback)}, not a function`,
    );
  }

  /** Throws why a call cannot go ahead now: closed, or a lease or reservation is held. */
  readonly ready = (): void => {
    this.check();
    if (this.held !== undefined) {
      throw new Deno.errors.Busy(`${this.#heldMessage} (the ring in ${JSON.stringify(this.name)})`);
    }
    if (this.inCallback) {
      throw new Deno.errors.Busy(
        `A callback of this ring end in ${
          JSON.stringify(this.name)
        } is running: it cannot use the same end`,
      );
    }
  };

  /** Wakes the other end asleep on the position word at `field`: one call, for small hot paths. */
  wake(field: number): void {
    this.memory.wake(this.base + field);
  }

  /** The word index of the field at `byteOffset` from the ring's start. */
  index(byteOffset: number): number {
    return (this.base + byteOffset) / 4;
  }

  /** The error every use after close throws. */
  closedError(): Error {
    return this.memory.closedError(`ring in ${JSON.stringify(this.name)}`);
  }

  /** Throws `BadResource` once this end or its region is closed. */
  checkOpen(): void {
    if (this.closed || this.memory.closed) throw this.closedError();
  }

  /**
   * Throws `BadResource` once this end or its region closed, and `UnexpectedEof` once a page
   * under the ring was lost to a file shrunk under it (see `SharedMemory.checkPages`).
   */
  check(): void {
    if (this.closed || this.memory.closed) throw this.closedError();
    this.memory.checkPages("the ring in");
  }

  /**
   * Throws `UnexpectedEof` if a page under the ring has been lost, once any fault was taken in
   * the process: called after reading or writing the ring and before acting on it, so that a
   * call that met a page cut off under it (and read zeros, or wrote into a page of its own)
   * says so instead of returning what it read or reporting a send that reached no one.
   */
  checkLost(): void {
    if (this.faults[0] !== 0) this.memory.checkPages("the ring in");
  }

  /**
   * Throws `InvalidData` if the ring's magic or capacity no longer reads as it did at open: the
   * file was rewritten under the ring (`echo > FILE` leaves its first page in place, zeroed,
   * so no page is lost and the records there read as empty messages), or another process
   * wrote over the header. A page that was lost is `UnexpectedEof` instead.
   */
  checkHeader(): void {
    const magic = this.words[this.#magicIndex] >>> 0;
    const capacity = this.words[this.#capacityIndex];
    if (magic === RING_MAGIC && capacity === this.capacity) return;
    this.checkLost();
    throw failure(
      Deno.errors.InvalidData,
      "use the ring in",
      this.name,
      `its header was overwritten (magic 0x${
        magic.toString(16).padStart(8, "0")
      }, capacity ${capacity}, where "RING" and ${this.capacity} were): the file or memory was rewritten under it (echo >? truncate?); what it held is gone, and the ring must be made again (initRing)`,
    );
  }

  /** Reads a position word, checking it and the header; keeps the closed bit. */
  position(field: number, which: string): number {
    const word = Atomics.load(this.words, this.index(field));
    this.checkLost();
    this.checkHeader();
    const position = word & POSITION;
    // Every record starts on a multiple of 8: a position between two would read a length out
    // of the middle of one.
    if (position >= 2 * this.capacity || position % RECORD_HEADER_SIZE !== 0) {
      throw failure(
        Deno.errors.InvalidData,
        "use the ring in",
        this.name,
        `its ${which} position ${position} is ${
          position >= 2 * this.capacity
            ? `outside 0..${2 * this.capacity - 1}`
            : "between two records"
        }: the header is corrupted`,
      );
    }
    return word;
  }

  /**
   * Takes this end's role and clears the closed bit an earlier holder left on its position
   * word, so a new producer or consumer resumes the stream; returns the position.
   */
  attach(claimField: number, positionField: number, role: string, which: string): number {
    takeClaim(
      this.memory,
      this.base + claimField,
      { role: `the ${role} role of the ring in`, subject: this.name },
    );
    let word: number;
    try {
      word = this.position(positionField, which);
    } catch (error) {
      releaseClaim(this.memory, this.base + claimField);
      throw error;
    }
    this.#attachedOver = word;
    this.#claim = { field: claimField, role };
    this.claimWord = this.index(claimField);
    Atomics.store(this.words, this.index(positionField), word & POSITION);
    return word & POSITION;
  }

  /**
   * Undoes {@link RingCore.attach} for an open that failed after it: puts back the closed bit
   * the last holder left, if it was there, and gives up the role, so that the other end hears
   * nothing of the failed open (a consumer told the stream ended, by a producer that never
   * sent). Marks this end closed.
   */
  detach(claimField: number, positionField: number): void {
    if (this.closed) return;
    this.closed = true;
    if (this.memory.closed) return;
    const word = this.#attachedOver;
    const index = this.index(positionField);
    // Only over what attach() stored: anything else there is what a later holder wrote.
    if (
      word !== undefined && (word & CLOSED) !== 0 &&
      Atomics.compareExchange(this.words, index, word & POSITION, word) === (word & POSITION)
    ) this.memory.wake(this.base + positionField);
    releaseClaim(this.memory, this.base + claimField);
  }

  /**
   * Marks this end closed in its position word, wakes the other side, gives up the role,
   * revokes what it lent and settles every pending call of this end. Safe to call twice.
   */
  close(claimField: number, positionField: number, position: number): void {
    if (this.closed) return;
    this.closed = true;
    if (this.held !== undefined) this.memory.revoke(this.held);
    this.held = undefined;
    if (this.#view !== undefined) this.memory.revoke(this.#view.buffer);
    this.#view = undefined;
    this.memory.interruptAll(this);
    for (const turn of this.#queue.splice(0)) turn.fail(this.closedError());
    if (this.memory.closed) return;
    // Not once another process took the role over: the mark would end its stream. A claim that
    // reads 0 (zeroed, nobody took it) is still marked, or a sleeping peer would wait for good.
    const claim = readClaim(this.memory, this.base + claimField);
    if (claim === 0n || claim === ownClaim()) {
      Atomics.store(this.words, this.index(positionField), position | CLOSED);
      this.memory.wake(this.base + positionField);
    }
    releaseClaim(this.memory, this.base + claimField);
  }

  /** Throws what is wrong with a wait's timeout or signal, before anything waits. */
  checkWaitOptions(options: RingWaitOptions): void {
    checkTimeout(options.timeout, "wait in the ring in", this.name);
    checkSignal(options.signal, "wait in the ring in", this.name);
  }

  /**
   * `options` with its timeout counted from now across every wait of one call (its turn, then
   * each sleep for data or room), so that the call as a whole ends by then: each wait had been
   * given the whole timeout afresh. Checks the timeout. `null` (from JavaScript) is no options.
   */
  bounded(options: RingWaitOptions | null): RingWaitOptions {
    options ??= {};
    const { timeout, signal } = options;
    this.checkWaitOptions(options);
    if (timeout === undefined || timeout >= NO_LIMIT_MS) return options;
    const deadline = performance.now() + timeout;
    return {
      signal,
      get timeout(): number {
        return Math.max(0, deadline - performance.now());
      },
    };
  }

  /**
   * Runs `operation` when the calls before it on this end have finished, so that two calls in
   * flight at once never interleave: they run in the order they were made. `ready` throws if
   * the end can no longer run it (closed, or a lease or reservation is held) once its turn
   * comes.
   */
  async inTurn<T>(
    operation: () => Promise<T>,
    options: RingWaitOptions,
    ready: () => void,
  ): Promise<T> {
    this.checkWaitOptions(options);
    if (this.busy) await this.#wait(options);
    this.busy = true;
    try {
      // The end may have closed, or a lease been taken, while this call waited its turn.
      ready();
      return await operation();
    } finally {
      const next = this.#queue.shift();
      if (next === undefined) this.busy = false;
      else next.go();
    }
  }

  /** Waits for this end's turn; fails on timeout, abort or close, leaving the queue in order. */
  #wait(options: RingWaitOptions): Promise<void> {
    const { signal, timeout } = options;
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise<void>((resolve, reject) => {
      let cancelTimer: (() => void) | undefined;
      const leave = (): void => {
        const at = this.#queue.indexOf(turn);
        if (at >= 0) this.#queue.splice(at, 1);
        cancelTimer?.();
        signal?.removeEventListener("abort", onAbort);
      };
      const onAbort = (): void => {
        leave();
        reject(abortReason(signal as AbortSignal));
      };
      const turn: Turn = {
        go: () => {
          leave();
          resolve();
        },
        fail: (error) => {
          leave();
          reject(error);
        },
      };
      this.#queue.push(turn);
      signal?.addEventListener("abort", onAbort, { once: true });
      if (timeout !== undefined) {
        cancelTimer = startTimer(timeout, () => {
          leave();
          reject(this.timedOut("its turn"));
        });
      }
    });
  }

  /** The error a blocking call's timeout rejects with. */
  timedOut(what: string): Error {
    return failure(
      Deno.errors.TimedOut,
      `wait for ${what} in the ring in`,
      this.name,
      "timed out",
    );
  }

  /**
   * Sleeps until `ready()` returns something: spins first unless the call `spun` already (see
   * {@link RingCore.spins}), then announces itself in
   * `waitingField` and sleeps on the futex word `wordField` while it still holds what was read.
   * Checks the peer's claim at `peerField` every `livenessCheckMs` while asleep.
   */
  async waitFor<T>(
    ready: () => T | undefined,
    fields: WaitFields,
    options: RingWaitOptions,
    spun: boolean,
  ): Promise<T> {
    const { signal, timeout } = options;
    this.checkWaitOptions(options);
    const deadline = timeout === undefined || timeout >= NO_LIMIT_MS
      ? Infinity
      : performance.now() + timeout;
    this.check();
    for (let spin = spun ? this.spin : 0; spin < this.spin; spin++) {
      const value = ready();
      if (value !== undefined) return value;
    }
    const wordIndex = this.index(fields.word);
    const waitingIndex = this.index(fields.waiting);
    let nextLivenessCheck = performance.now() + this.livenessCheckMs;
    let sleep: Sleep | undefined;
    let hearing = false;
    const onAbort = (): void => {
      if (sleep !== undefined) this.memory.interrupt(sleep);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for (;;) {
        this.check();
        if (signal?.aborted) throw abortReason(signal);
        const word = Atomics.load(this.words, wordIndex);
        Atomics.store(this.words, waitingIndex, 1);
        // Announce first, then look: the other side either sees the flag or we see its change.
        const value = ready();
        if (value !== undefined) {
          Atomics.store(this.words, waitingIndex, 0);
          return value;
        }
        const now = performance.now();
        if (now >= deadline) {
          Atomics.store(this.words, waitingIndex, 0);
          throw this.timedOut(`the ${fields.peerName}`);
        }
        if (now >= nextLivenessCheck) {
          this.#checkPeer(fields, waitingIndex);
          try {
            this.checkOwn(fields);
          } catch (error) {
            Atomics.store(this.words, waitingIndex, 0);
            throw error;
          }
          nextLivenessCheck = now + this.livenessCheckMs;
        }
        const timeoutMs = Math.min(deadline, nextLivenessCheck) - now;
        if (!hearing) {
          // Only once it sleeps: a wait that spins to its message asks nothing of the watch.
          hearing = true;
          this.memory.hearShrink();
        }
        await new Promise((resolve) => {
          const limit = timeoutMs === Infinity ? undefined : timeoutMs;
          sleep = this.memory.sleep(this.base + fields.word, word, limit, resolve, {
            owner: this,
          });
        });
        sleep = undefined;
        // Not once closed: a later holder of this end may sleep on the flag by then.
        if (!this.closed && !this.memory.closed) Atomics.store(this.words, waitingIndex, 0);
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (hearing) this.memory.stopHearingShrink();
      // A wait that ends in an error (a record written over, an abort) no longer sleeps: left
      // set, the flag had the other end make a futex wake for each message, for no one. Not once
      // closed: the flag may be a later holder's of this end by then.
      if (!this.closed && !this.memory.closed) Atomics.store(this.words, waitingIndex, 0);
    }
  }

  /**
   * Throws `InvalidData` if the header, this end's claim or its own position word, which no
   * other process writes, no longer holds what was put there: both ends would otherwise sleep
   * for good, each waiting for the other to move (a position set back by another process makes
   * the ring look full to one end and empty to the other), or two producers (or consumers)
   * would write over each other's records. A page lost under the ring is `UnexpectedEof`.
   * Called before each sleep, at each look at the peer of the try forms, and by the hot paths
   * when their one-load check of the position and claim words finds them changed.
   */
  checkOwn(fields: WaitFields): void {
    this.checkLost();
    this.checkHeader();
    const own = this.#claim; // set by attach(), before any use
    const claim = own && readClaim(this.memory, this.base + own.field);
    if (own !== undefined && claim !== ownClaim()) {
      throw failure(
        Deno.errors.InvalidData,
        "use the ring in",
        this.name,
        `its ${own.role} role's claim holds ${
          claim ? describeHolder(claim) : "nothing"
        } where this end's was: another process wrote it`,
      );
    }
    const word = Atomics.load(this.words, this.index(fields.own));
    const put = fields.published();
    if (word !== put) {
      throw failure(
        Deno.errors.InvalidData,
        "use the ring in",
        this.name,
        `its ${fields.ownName} position word holds ${word} where this end put ${put}: another process wrote it`,
      );
    }
  }

  /**
   * Called with each answer of "empty" (consumer) or "full" (producer): looks at the clock now
   * and then, and once `livenessCheckMs` has passed since it last did, at the peer and at this
   * end's own claim and position, so that a caller that only polls with the try forms learns of
   * a dead peer (`BrokenPipe`) or of its role taken over (`InvalidData`), as one that sleeps
   * does. Counted between two looks at the clock, so that a quick poll costs a
   * decrement: as many answers (up to 256) as come in about a quarter of `livenessCheckMs`, so
   * a slow poller (one a second) looks at every answer and learns as soon as a quick one.
   */
  pollPeer(fields: WaitFields): void {
    if (--this.#answersLeft > 0) return;
    if (this.livenessCheckMs === Infinity) {
      this.#answersLeft = ANSWERS_PER_LOOK;
      return;
    }
    const now = performance.now();
    const each = (now - this.#lastClockLook) / this.#answersPerLook;
    this.#lastClockLook = now;
    this.#answersPerLook = Math.max(
      1,
      Math.min(ANSWERS_PER_LOOK, Math.floor(this.livenessCheckMs / 4 / each)),
    );
    this.#answersLeft = this.#answersPerLook;
    if (now < this.#nextPollLook) return;
    this.#nextPollLook = now + this.livenessCheckMs;
    this.#checkPeer(fields);
    try {
      this.checkOwn(fields);
    } catch (error) {
      // Said by every call from now on, as a dead peer is.
      this.#answersLeft = 1;
      this.#nextPollLook = 0;
      throw error;
    }
  }

  #checkPeer(fields: WaitFields, waitingIndex?: number): void {
    const read = readClaim(this.memory, this.base + fields.peer);
    if (read !== 0n) this.#peerSeen = read;
    // A peer that closes marks its position closed before it gives up its claim, and the next
    // one takes the claim before it clears the mark: a claim word that reads 0 with no mark
    // read after it was written over, and the holder last seen there is the one to look at.
    // Read again, so that a close and a new open between the two reads are not taken for that.
    let claim = read;
    if (read === 0n && (Atomics.load(this.words, this.index(fields.word)) & CLOSED) === 0) {
      claim = readClaim(this.memory, this.base + fields.peer) || this.#peerSeen;
    }
    if (claim !== 0n && !claimIsLive(claim)) {
      if (waitingIndex !== undefined) Atomics.store(this.words, waitingIndex, 0);
      // Found dead, it is looked at again by the next empty or full answer, not 256 later: a
      // batch that had taken messages returns them and leaves the BrokenPipe to its next call,
      // and every call says it until a new peer attaches.
      this.#answersLeft = 1;
      this.#nextPollLook = 0;
      throw failure(
        Deno.errors.BrokenPipe,
        "use the ring in",
        this.name,
        `its ${fields.peerName} (${describeHolder(claim)}) died`,
      );
    }
  }
}
