/**
 * A single-producer, single-consumer ring of variable-length messages in a shared region: the
 * bounded buffer between two processes, done properly. Both sides sleep on futex words when
 * the ring is full or empty (after an optional short spin), the producer can write a message
 * in place and the consumer can read one in place, and either side notices when the other
 * closes or dies.
 *
 * Layout, from the ring's offset in its region (each hot word on its own cache line):
 *
 * | bytes        | what                                                               |
 * | ------------ | ------------------------------------------------------------------ |
 * | 0-3          | magic `RING`                                                       |
 * | 4-7          | layout version                                                     |
 * | 8-11         | capacity: data bytes, a multiple of 8                              |
 * | 16-23, 24-31 | the producer's and the consumer's claims (pid and start time)      |
 * | 64-67        | head: where the producer writes next; bit 31 set once it closed    |
 * | 68-71        | 1 while the consumer sleeps on the head                            |
 * | 128-131      | tail: where the consumer reads next; bit 31 set once it closed     |
 * | 132-135      | 1 while the producer sleeps on the tail                            |
 * | 192-         | the data: records of an 8-byte header (the length) and the payload padded to 8 bytes |
 *
 * Head and tail count bytes modulo twice the capacity, so a full ring (head - tail ==
 * capacity) differs from an empty one (head == tail) and every byte of the capacity holds
 * data: no slot is lost, and the capacity need not be a power of two. A record that would
 * cross the end of the data is placed at its start, after a padding record.
 *
 * @module
 */

import type { Mapping } from "../ffi/mapping.ts";
import { claimIsLive, readClaim, releaseClaim, takeClaim } from "./claim.ts";
import { abortReason, failure } from "./errors.ts";
import { mappingOf, type SharedRegion } from "./region.ts";

/** The magic number at the start of a ring: the ASCII letters `RING`. */
export const RING_MAGIC = 0x474e4952;
/** The layout version this library reads and writes. */
export const RING_VERSION = 1;
/** Bytes of header before a ring's data. */
export const RING_HEADER_SIZE = 192;
/** Bytes of header before each message. */
export const RING_RECORD_HEADER_SIZE = 8;
/** The largest capacity (1 GiB): positions modulo twice the capacity must fit in 31 bits. */
export const RING_MAX_CAPACITY = 2 ** 30;

const MAGIC = 0;
const VERSION = 4;
const CAPACITY = 8;
const PRODUCER = 16;
const CONSUMER = 24;
const HEAD = 64;
const CONSUMER_WAITING = 68;
const TAIL = 128;
const PRODUCER_WAITING = 132;
const CLOSED = 0x8000_0000;
const POSITION = 0x7fff_ffff;
/** The length a padding record carries: "skip to the start of the data". */
const PAD = -1;
const DEFAULT_LIVENESS_CHECK_MS = 1000;
const DEFAULT_SPIN = 1000;

/** How many bytes a region needs for a ring of `capacity` data bytes at offset 0. */
export function ringRegionSize(capacity: number): number {
  return RING_HEADER_SIZE + capacity;
}

function roundUp8(value: number): number {
  return (value + 7) & ~7;
}

/** Options for {@link initRing}. */
export interface InitRingOptions {
  /** Where the ring starts in the region, a multiple of 64. Default 0. */
  offset?: number;
  /** Data bytes, a positive multiple of 8. Default: the rest of the region. */
  capacity?: number;
}

/**
 * Writes a fresh, empty ring header into `region`, whatever was there: the creator of the
 * region calls this once before producer and consumer attach. Returns the capacity.
 */
export function initRing(region: SharedRegion, options: InitRingOptions = {}): number {
  const offset = options.offset ?? 0;
  checkOffset(offset);
  const capacity = options.capacity ?? ((region.size - offset - RING_HEADER_SIZE) & ~7);
  if (
    !Number.isSafeInteger(capacity) || capacity < 8 || capacity % 8 !== 0 ||
    capacity > RING_MAX_CAPACITY
  ) {
    throw new RangeError(
      `Ring capacity ${capacity} must be a multiple of 8 from 8 to ${RING_MAX_CAPACITY} bytes (any such size works; it need not be a power of two)`,
    );
  }
  if (offset + RING_HEADER_SIZE + capacity > region.size) {
    throw failure(
      RangeError,
      "create a ring in",
      region.name,
      `a ring of ${capacity} bytes needs ${
        offset + RING_HEADER_SIZE + capacity
      } bytes; the region has ${region.size}`,
    );
  }
  region.write(offset, new Uint8Array(RING_HEADER_SIZE));
  region.storeInt32(offset + VERSION, RING_VERSION);
  region.storeInt32(offset + CAPACITY, capacity);
  region.storeInt32(offset + MAGIC, RING_MAGIC);
  return capacity;
}

function checkOffset(offset: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % 64 !== 0) {
    throw new RangeError(`Ring offset ${offset} is not a non-negative multiple of 64`);
  }
}

/** Options for {@link openRingProducer} and {@link openRingConsumer}. */
export interface RingOptions {
  /** Where the ring starts in the region (as given to {@link initRing}). Default 0. */
  offset?: number;
  /**
   * Check for space or data this many times (about 50 ns each) before sleeping on the futex:
   * costs a little CPU, saves a wake-up when the other side is quick. Default 1000, which
   * roughly doubled messages per second between two processes on a 2-core machine; 0 sleeps
   * at once.
   */
  spin?: number;
  /**
   * How often a side that is asleep checks that the other side is still alive, in ms.
   * Default 1000; `Infinity` turns it off (then a dead peer is only noticed by a timeout).
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

/** Reads the header at `offset` and checks it, or throws `InvalidData` saying what it found. */
function attach(region: SharedRegion, offset: number, action: string): number {
  checkOffset(offset);
  if (offset + RING_HEADER_SIZE + 8 > region.size) {
    throw failure(
      RangeError,
      action,
      region.name,
      `the region has ${region.size} bytes, too few for a ring at offset ${offset}`,
    );
  }
  const magic = region.loadInt32(offset + MAGIC) >>> 0;
  if (magic !== RING_MAGIC) {
    const what = magic === 0
      ? "a blank header; call initRing() first"
      : `0x${magic.toString(16).padStart(8, "0")}`;
    throw failure(
      Deno.errors.InvalidData,
      action,
      region.name,
      `found ${what} where the magic "RING" belongs`,
    );
  }
  const version = region.loadInt32(offset + VERSION);
  if (version !== RING_VERSION) {
    throw failure(
      Deno.errors.InvalidData,
      action,
      region.name,
      `its layout version is ${version}; this library reads ${RING_VERSION}`,
    );
  }
  const capacity = region.loadInt32(offset + CAPACITY);
  if (
    capacity < 8 || capacity % 8 !== 0 || capacity > RING_MAX_CAPACITY ||
    offset + RING_HEADER_SIZE + capacity > region.size
  ) {
    throw failure(
      Deno.errors.InvalidData,
      action,
      region.name,
      `its header claims a capacity of ${capacity} bytes, impossible in a region of ${region.size} bytes`,
    );
  }
  return capacity;
}

/** The state both ends share: the mapping, the layout, and the waiting logic. */
class RingCore {
  readonly region: SharedRegion;
  readonly mapping: Mapping;
  readonly words: Int32Array;
  readonly bytes: Uint8Array;
  readonly base: number;
  readonly data: number;
  /** Data bytes. */
  readonly capacity: number;
  /** The largest message this ring carries. */
  readonly maxMessageSize: number;
  readonly spin: number;
  readonly livenessCheckMs: number;
  readonly closing = new AbortController();
  closed = false;

  constructor(region: SharedRegion, capacity: number, options: RingOptions) {
    this.region = region;
    this.mapping = mappingOf(region);
    this.words = this.mapping.words;
    this.bytes = this.mapping.bytes;
    this.base = options.offset ?? 0;
    this.data = this.base + RING_HEADER_SIZE;
    this.capacity = capacity;
    this.maxMessageSize = capacity - RING_RECORD_HEADER_SIZE;
    this.spin = options.spin ?? DEFAULT_SPIN;
    this.livenessCheckMs = options.livenessCheckMs ?? DEFAULT_LIVENESS_CHECK_MS;
  }

  load(field: number): number {
    return Atomics.load(this.words, (this.base + field) >> 2);
  }

  store(field: number, value: number): void {
    Atomics.store(this.words, (this.base + field) >> 2, value);
  }

  /** Bytes in the ring between `tail` and `head` (positions without the closed bit). */
  used(head: number, tail: number): number {
    const used = head - tail;
    return used < 0 ? used + 2 * this.capacity : used;
  }

  index(position: number): number {
    return position >= this.capacity ? position - this.capacity : position;
  }

  advance(position: number, by: number): number {
    const next = position + by;
    return next >= 2 * this.capacity ? next - 2 * this.capacity : next;
  }

  check(): void {
    if (this.closed || this.region.closed) {
      throw new Deno.errors.BadResource(
        `The ring in ${JSON.stringify(this.region.name)} is closed`,
      );
    }
  }

  /** Throws `InvalidData` when a position word is outside what the layout allows. */
  checkPosition(position: number, which: string): void {
    if (position >= 2 * this.capacity) {
      throw failure(
        Deno.errors.InvalidData,
        "use the ring in",
        this.region.name,
        `its ${which} position ${position} is outside 0..${
          2 * this.capacity - 1
        }: the header is corrupted`,
      );
    }
  }

  /**
   * Sleeps until `ready()` returns something: spins first if asked, then announces itself in
   * `waitingField` and sleeps on the futex word `wordField` while it still holds what was read.
   * Checks the peer's claim at `peerField` every `livenessCheckMs` while asleep.
   */
  async waitFor<T>(
    ready: () => T | undefined,
    wordField: number,
    waitingField: number,
    peerField: number,
    peerName: string,
    options: RingWaitOptions,
  ): Promise<T> {
    const { signal, timeout } = options;
    const deadline = timeout === undefined ? Infinity : performance.now() + timeout;
    for (let spin = 0; spin < this.spin; spin++) {
      const value = ready();
      if (value !== undefined) return value;
    }
    const waitSignal = signal === undefined
      ? this.closing.signal
      : AbortSignal.any([signal, this.closing.signal]);
    let nextLivenessCheck = performance.now() + this.livenessCheckMs;
    for (;;) {
      this.check();
      if (signal?.aborted) throw abortReason(signal);
      const word = this.load(wordField);
      this.store(waitingField, 1);
      // Announce first, then look: the other side either sees the flag or we see its change.
      const value = ready();
      if (value !== undefined) {
        this.store(waitingField, 0);
        return value;
      }
      const now = performance.now();
      if (now >= deadline) {
        this.store(waitingField, 0);
        throw failure(
          Deno.errors.TimedOut,
          `wait for the ${peerName} of the ring in`,
          this.region.name,
          "timed out",
        );
      }
      if (now >= nextLivenessCheck) {
        const claim = readClaim(this.mapping, this.base + peerField);
        if (claim !== 0n && !claimIsLive(claim)) {
          this.store(waitingField, 0);
          throw failure(
            Deno.errors.BrokenPipe,
            "use the ring in",
            this.region.name,
            `its ${peerName} (pid ${Number(claim & 0xffff_ffffn)}) died`,
          );
        }
        nextLivenessCheck = now + this.livenessCheckMs;
      }
      const timeoutMs = Math.min(deadline, nextLivenessCheck) - now;
      await this.mapping.wait(this.base + wordField, word, {
        timeoutMs: timeoutMs === Infinity ? undefined : timeoutMs,
        signal: waitSignal,
      });
      this.store(waitingField, 0);
      if (this.closed) this.check();
    }
  }

  /**
   * Takes this end's role and clears the closed bit an earlier holder left on its position
   * word, so a new producer or consumer resumes the stream; returns the position.
   */
  attachEnd(claimField: number, positionField: number, role: string, position: string): number {
    takeClaim(
      this.mapping,
      this.base + claimField,
      `the ${role} role of the ring in ${JSON.stringify(this.region.name)}`,
    );
    const value = this.load(positionField) & POSITION;
    try {
      this.checkPosition(value, position);
    } catch (error) {
      releaseClaim(this.mapping, this.base + claimField);
      throw error;
    }
    this.store(positionField, value);
    return value;
  }

  /** Wakes the other side if it announced that it sleeps. */
  wakeIfWaiting(waitingField: number, wordField: number): void {
    if (this.load(waitingField) !== 0) this.mapping.wake(this.base + wordField);
  }
}

/** Space for one message, reserved in the ring; see {@link RingProducer.tryReserve}. */
export interface RingReservation {
  /** Where to write the message: valid until `commit()` or `cancel()`, then zero-length. */
  readonly bytes: Uint8Array;
  /** Publishes the first `length` bytes written (default: all that were reserved). */
  commit(length?: number): void;
  /** Gives the space back without sending anything. */
  cancel(): void;
}

/** One message read in place; see {@link RingConsumer.tryRead}. */
export interface RingLease {
  /** The message: valid until `release()`, then zero-length. */
  readonly bytes: Uint8Array;
  /** Hands the message's space back to the producer. */
  release(): void;
}

const constructing = Symbol("ring");

/** The sending end of a ring; one per ring, enforced. Open with {@link openRingProducer}. */
export class RingProducer {
  readonly #ring: RingCore;
  #head: number;
  /** While set, publishing skips the wake-up; the batch wakes once at its end. */
  #batching = false;
  #reserved: { buffer: ArrayBuffer; position: number; length: number } | undefined;

  /** Not for direct use: call {@link openRingProducer}. */
  constructor(token: symbol, region: SharedRegion, capacity: number, options: RingOptions) {
    if (token !== constructing) throw new TypeError("Use openRingProducer()");
    this.#ring = new RingCore(region, capacity, options);
    this.#head = this.#ring.attachEnd(PRODUCER, HEAD, "producer", "head");
  }

  /** Data bytes in the ring. */
  get capacity(): number {
    return this.#ring.capacity;
  }

  /** The largest message the ring carries: its capacity less a record header. */
  get maxMessageSize(): number {
    return this.#ring.maxMessageSize;
  }

  /** Bytes free for messages right now. */
  get free(): number {
    this.#ring.check();
    return this.#ring.capacity - this.#ring.used(this.#head, this.#tail());
  }

  #tail(): number {
    const tail = this.#ring.load(TAIL);
    if ((tail & CLOSED) !== 0) {
      throw failure(
        Deno.errors.BrokenPipe,
        "send into the ring in",
        this.#ring.region.name,
        "the consumer closed it",
      );
    }
    this.#ring.checkPosition(tail, "tail");
    return tail;
  }

  #checkLength(length: number): void {
    if (!Number.isSafeInteger(length) || length < 0 || length > this.#ring.maxMessageSize) {
      throw new RangeError(
        `A message of ${length} bytes does not fit in the ring in ${
          JSON.stringify(this.#ring.region.name)
        }: it carries at most ${this.#ring.maxMessageSize} bytes (its capacity of ${this.#ring.capacity} less an ${RING_RECORD_HEADER_SIZE}-byte header)`,
      );
    }
  }

  /**
   * Finds room for a message of `length` bytes at the head, padding to the wrap if needed;
   * returns the data index of its record, or undefined when the ring is too full.
   */
  #place(length: number): number | undefined {
    const record = RING_RECORD_HEADER_SIZE + roundUp8(length);
    let free = this.#ring.capacity - this.#ring.used(this.#head, this.#tail());
    const index = this.#ring.index(this.#head);
    const untilEnd = this.#ring.capacity - index;
    if (record <= untilEnd) return record <= free ? index : undefined;
    if (free < untilEnd) return undefined;
    // Too close to the end: a padding record sends the consumer to the start.
    this.#ring.words[(this.#ring.data + index) >> 2] = PAD;
    this.#publish(this.#ring.advance(this.#head, untilEnd));
    free -= untilEnd;
    return record <= free ? 0 : undefined;
  }

  /** Sleeps until a message of `length` bytes fits; returns where it goes. */
  #waitForRoom(length: number, options: RingWaitOptions): Promise<number> {
    return this.#ring.waitFor(
      () => this.#place(length),
      TAIL,
      PRODUCER_WAITING,
      CONSUMER,
      "consumer",
      options,
    );
  }

  #publish(head: number): void {
    this.#head = head;
    this.#ring.store(HEAD, head);
    if (!this.#batching) this.#ring.wakeIfWaiting(CONSUMER_WAITING, HEAD);
  }

  #write(index: number, message: Uint8Array): void {
    this.#ring.words[(this.#ring.data + index) >> 2] = message.length;
    this.#ring.bytes.set(message, this.#ring.data + index + RING_RECORD_HEADER_SIZE);
    this.#publish(
      this.#ring.advance(this.#head, RING_RECORD_HEADER_SIZE + roundUp8(message.length)),
    );
  }

  #checkNoReservation(): void {
    this.#ring.check();
    if (this.#reserved !== undefined) {
      throw new Deno.errors.Busy("Commit or cancel the open reservation before sending again");
    }
  }

  /** Sends `message` if it fits now; returns whether it was sent. */
  trySend(message: Uint8Array): boolean {
    this.#checkNoReservation();
    this.#checkLength(message.length);
    const index = this.#place(message.length);
    if (index === undefined) return false;
    this.#write(index, message);
    return true;
  }

  /**
   * Sends `message`, sleeping while the ring is full. Rejects with `BrokenPipe` if the consumer
   * closes or dies, `TimedOut` or the signal's reason.
   */
  async send(message: Uint8Array, options: RingWaitOptions = {}): Promise<void> {
    if (this.trySend(message)) return;
    const index = await this.#waitForRoom(message.length, options);
    this.#write(index, message);
  }

  /**
   * Sends as many of `messages` as fit now, waking the consumer once; returns how many went.
   */
  trySendBatch(messages: Uint8Array[]): number {
    this.#checkNoReservation();
    for (const message of messages) this.#checkLength(message.length);
    let sent = 0;
    this.#batching = true;
    try {
      for (const message of messages) {
        const index = this.#place(message.length);
        if (index === undefined) break;
        this.#write(index, message);
        sent++;
      }
    } finally {
      this.#batching = false;
      if (sent > 0) this.#ring.wakeIfWaiting(CONSUMER_WAITING, HEAD);
    }
    return sent;
  }

  /** Sends all of `messages` in order, sleeping whenever the ring is full. */
  async sendBatch(messages: Uint8Array[], options: RingWaitOptions = {}): Promise<void> {
    let sent = this.trySendBatch(messages);
    while (sent < messages.length) {
      await this.send(messages[sent], options);
      sent++;
      sent += this.trySendBatch(messages.slice(sent));
    }
  }

  /**
   * Reserves room for a message of up to `length` bytes and returns a view of it, to be filled
   * in place and then committed: zero-copy. The view is only valid until `commit()` or
   * `cancel()`; after that it has length 0. Returns undefined when the ring is too full.
   */
  tryReserve(length: number): RingReservation | undefined {
    this.#checkNoReservation();
    this.#checkLength(length);
    const index = this.#place(length);
    return index === undefined ? undefined : this.#reservation(index, length);
  }

  /** {@link RingProducer.tryReserve}, sleeping while the ring is full. */
  async reserve(length: number, options: RingWaitOptions = {}): Promise<RingReservation> {
    const reservation = this.tryReserve(length);
    if (reservation !== undefined) return reservation;
    const index = await this.#waitForRoom(length, options);
    return this.#reservation(index, length);
  }

  #reservation(index: number, length: number): RingReservation {
    const buffer = this.#ring.mapping.buffer(
      this.#ring.data + index + RING_RECORD_HEADER_SIZE,
      length,
    );
    const reserved = { buffer, position: index, length };
    this.#reserved = reserved;
    const finish = (): void => {
      if (this.#reserved !== reserved) {
        throw new Deno.errors.BadResource("This reservation is already finished");
      }
      this.#reserved = undefined;
      buffer.transfer(0); // every view of it is now zero-length
    };
    const bytes = new Uint8Array(buffer);
    return {
      bytes,
      commit: (used = length): void => {
        if (!Number.isSafeInteger(used) || used < 0 || used > length) {
          throw new RangeError(`Cannot commit ${used} bytes of a ${length}-byte reservation`);
        }
        finish();
        this.#ring.check();
        this.#ring.words[(this.#ring.data + index) >> 2] = used;
        this.#publish(this.#ring.advance(this.#head, RING_RECORD_HEADER_SIZE + roundUp8(used)));
      },
      cancel: finish,
    };
  }

  /**
   * Closes the sending end: the consumer receives what was sent, then its iteration ends. Any
   * open reservation is cancelled. Safe to call twice.
   */
  close(): void {
    if (this.#ring.closed) return;
    this.#ring.closed = true;
    this.#ring.closing.abort();
    if (this.#reserved !== undefined) {
      this.#reserved.buffer.transfer(0);
      this.#reserved = undefined;
    }
    if (this.#ring.region.closed) return;
    this.#ring.store(HEAD, this.#head | CLOSED);
    this.#ring.mapping.wake(this.#ring.base + HEAD);
    releaseClaim(this.#ring.mapping, this.#ring.base + PRODUCER);
  }

  /** Same as {@link RingProducer.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** The receiving end of a ring; one per ring, enforced. Open with {@link openRingConsumer}. */
export class RingConsumer {
  readonly #ring: RingCore;
  #tail: number;
  #lease: ArrayBuffer | undefined;

  /** Not for direct use: call {@link openRingConsumer}. */
  constructor(token: symbol, region: SharedRegion, capacity: number, options: RingOptions) {
    if (token !== constructing) throw new TypeError("Use openRingConsumer()");
    this.#ring = new RingCore(region, capacity, options);
    this.#tail = this.#ring.attachEnd(CONSUMER, TAIL, "consumer", "tail");
  }

  /** Data bytes in the ring. */
  get capacity(): number {
    return this.#ring.capacity;
  }

  /** The largest message the ring carries: its capacity less a record header. */
  get maxMessageSize(): number {
    return this.#ring.maxMessageSize;
  }

  /** Bytes of messages waiting right now (headers and padding included). */
  get available(): number {
    this.#ring.check();
    return this.#ring.used(this.#ring.load(HEAD) & POSITION, this.#tail);
  }

  /**
   * Finds the next message: its data index and length, `"closed"` when the producer closed and
   * everything is read, or undefined when nothing is there yet. Skips padding.
   */
  #next(): { index: number; length: number } | "closed" | undefined {
    for (;;) {
      const headWord = this.#ring.load(HEAD);
      const head = headWord & POSITION;
      this.#ring.checkPosition(head, "head");
      const used = this.#ring.used(head, this.#tail);
      if (used === 0) return (headWord & CLOSED) !== 0 ? "closed" : undefined;
      const index = this.#ring.index(this.#tail);
      const untilEnd = this.#ring.capacity - index;
      const length = this.#ring.words[(this.#ring.data + index) >> 2];
      if (used > this.#ring.capacity || used < RING_RECORD_HEADER_SIZE) {
        this.#corrupt(index, `${used} bytes in use`);
      }
      if (length === PAD) {
        if (untilEnd > used) {
          this.#corrupt(index, `padding of ${untilEnd} bytes but only ${used} in use`);
        }
        this.#consume(untilEnd);
        continue;
      }
      const record = RING_RECORD_HEADER_SIZE + roundUp8(length);
      if (length < 0 || length > this.#ring.maxMessageSize || record > used || record > untilEnd) {
        this.#corrupt(
          index,
          `a message of ${length} bytes with ${used} in use and ${untilEnd} before the end`,
        );
      }
      return { index, length };
    }
  }

  #corrupt(index: number, what: string): never {
    throw failure(
      Deno.errors.InvalidData,
      "read the ring in",
      this.#ring.region.name,
      `the record at data offset ${index} is corrupted: ${what}`,
    );
  }

  #consume(bytes: number): void {
    this.#tail = this.#ring.advance(this.#tail, bytes);
    this.#ring.store(TAIL, this.#tail);
    this.#ring.wakeIfWaiting(PRODUCER_WAITING, TAIL);
  }

  #checkNoLease(): void {
    this.#ring.check();
    if (this.#lease !== undefined) {
      throw new Deno.errors.Busy("Release the message you hold before reading another");
    }
  }

  #copy(found: { index: number; length: number }): Uint8Array {
    const start = this.#ring.data + found.index + RING_RECORD_HEADER_SIZE;
    const message = this.#ring.bytes.slice(start, start + found.length);
    this.#consume(RING_RECORD_HEADER_SIZE + roundUp8(found.length));
    return message;
  }

  /** The next message (a copy), `null` once the producer closed and all is read, or undefined. */
  tryReceive(): Uint8Array | null | undefined {
    this.#checkNoLease();
    const found = this.#next();
    if (found === undefined) return undefined;
    return found === "closed" ? null : this.#copy(found);
  }

  /**
   * The next message (a copy), sleeping while the ring is empty; `null` once the producer
   * closed and everything it sent was received. Rejects with `BrokenPipe` if the producer died.
   */
  async receive(options: RingWaitOptions = {}): Promise<Uint8Array | null> {
    const message = this.tryReceive();
    if (message !== undefined) return message;
    const found = await this.#waitForMessage(options);
    return found === "closed" ? null : this.#copy(found);
  }

  /** Up to `max` messages that are there now, handing their space back at once. */
  tryReceiveBatch(max = Infinity): Uint8Array[] {
    this.#checkNoLease();
    const messages: Uint8Array[] = [];
    while (messages.length < max) {
      const found = this.#next();
      if (found === undefined || found === "closed") break;
      messages.push(this.#copy(found));
    }
    return messages;
  }

  /**
   * At least one and up to `max` messages, sleeping while the ring is empty; an empty array
   * once the producer closed and everything was received.
   */
  async receiveBatch(max = Infinity, options: RingWaitOptions = {}): Promise<Uint8Array[]> {
    const messages = this.tryReceiveBatch(max);
    if (messages.length > 0) return messages;
    const first = await this.receive(options);
    return first === null ? [] : [first, ...this.tryReceiveBatch(max - 1)];
  }

  /**
   * The next message in place: zero-copy. Its view is valid until `release()`, which hands the
   * space back to the producer; after that it has length 0. `null` once the producer closed and
   * everything was read; undefined when nothing is there yet.
   */
  tryRead(): RingLease | null | undefined {
    this.#checkNoLease();
    const found = this.#next();
    if (found === undefined) return undefined;
    return found === "closed" ? null : this.#leaseOf(found);
  }

  /** {@link RingConsumer.tryRead}, sleeping while the ring is empty. */
  async read(options: RingWaitOptions = {}): Promise<RingLease | null> {
    const lease = this.tryRead();
    if (lease !== undefined) return lease;
    const found = await this.#waitForMessage(options);
    return found === "closed" ? null : this.#leaseOf(found);
  }

  /** Sleeps until a message (or the producer's close) is there. */
  #waitForMessage(options: RingWaitOptions): Promise<{ index: number; length: number } | "closed"> {
    return this.#ring.waitFor(
      () => this.#next(),
      HEAD,
      CONSUMER_WAITING,
      PRODUCER,
      "producer",
      options,
    );
  }

  #leaseOf(found: { index: number; length: number }): RingLease {
    const buffer = this.#ring.mapping.buffer(
      this.#ring.data + found.index + RING_RECORD_HEADER_SIZE,
      found.length,
    );
    this.#lease = buffer;
    return {
      bytes: new Uint8Array(buffer),
      release: (): void => {
        if (this.#lease !== buffer) {
          throw new Deno.errors.BadResource("This message is already released");
        }
        this.#lease = undefined;
        buffer.transfer(0);
        this.#ring.check();
        this.#consume(RING_RECORD_HEADER_SIZE + roundUp8(found.length));
      },
    };
  }

  /**
   * Yields each message (a copy) until the producer closes and everything is received. Ends
   * quietly when `signal` aborts; throws `BrokenPipe` if the producer dies.
   */
  async *messages(
    options: { signal?: AbortSignal } = {},
  ): AsyncGenerator<Uint8Array, void, undefined> {
    for (;;) {
      let message: Uint8Array | null;
      try {
        message = await this.receive({ signal: options.signal });
      } catch (error) {
        if (options.signal?.aborted || this.#ring.closed) return;
        throw error;
      }
      if (message === null) return;
      yield message;
    }
  }

  /** Same as {@link RingConsumer.messages} without a signal. */
  [Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    return this.messages();
  }

  /** Closes the receiving end: a producer that sends afterwards gets `BrokenPipe`. Safe twice. */
  close(): void {
    if (this.#ring.closed) return;
    this.#ring.closed = true;
    this.#ring.closing.abort();
    if (this.#lease !== undefined) {
      this.#lease.transfer(0);
      this.#lease = undefined;
    }
    if (this.#ring.region.closed) return;
    this.#ring.store(TAIL, this.#tail | CLOSED);
    this.#ring.mapping.wake(this.#ring.base + TAIL);
    releaseClaim(this.#ring.mapping, this.#ring.base + CONSUMER);
  }

  /** Same as {@link RingConsumer.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Attaches the producer to the ring in `region` (written by {@link initRing}). One producer
 * at a time: a live one's pid is named in a `Deno.errors.Busy`.
 *
 * @example
 * ```ts
 * using region = openShmRegion("/samples", { create: true, size: ringRegionSize(1 << 20) });
 * initRing(region);
 * using producer = openRingProducer(region);
 * await producer.send(new TextEncoder().encode("hello"));
 * ```
 */
export function openRingProducer(region: SharedRegion, options: RingOptions = {}): RingProducer {
  const capacity = attach(region, options.offset ?? 0, "open the ring producer in");
  return new RingProducer(constructing, region, capacity, options);
}

/**
 * Attaches the consumer to the ring in `region`. One consumer at a time.
 *
 * @example
 * ```ts
 * using region = openShmRegion("/samples");
 * using consumer = openRingConsumer(region);
 * for await (const message of consumer) console.log(message.length);
 * ```
 */
export function openRingConsumer(region: SharedRegion, options: RingOptions = {}): RingConsumer {
  const capacity = attach(region, options.offset ?? 0, "open the ring consumer in");
  return new RingConsumer(constructing, region, capacity, options);
}
