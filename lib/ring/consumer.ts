/**
 * The receiving end of a ring. It keeps its own tail and a cached copy of the producer's head,
 * and reads the shared head only when the ring looks empty. Five ways to take a message, from
 * the most convenient to the fastest: a copy (`receive`), a copy into your buffer
 * (`receiveInto`), many copies into one buffer (`receiveBatchInto`), a lease on the message in
 * place (`read`), and a callback that sees it in place (`readWith`); each with a `try` form that
 * never waits.
 *
 * @module
 */

import { failure, shown } from "../errors.ts";
import { byteCount, describeKind, unusableBytes } from "../byte_arrays.ts";
import type { SharedRegion } from "../region.ts";
import {
  atomicLoad,
  atomicStore,
  RingCore,
  type RingOptions,
  type RingWaitOptions,
  type WaitFields,
} from "./core.ts";
import {
  CLOSED,
  CONSUMER,
  CONSUMER_WAITING,
  HEAD,
  MAGIC,
  PAD,
  POSITION,
  PRODUCER,
  PRODUCER_WAITING,
  readCapacity,
  RECORD_HEADER_SIZE,
  RING_MAGIC,
  TAIL,
} from "./layout.ts";

/** One message read in place; see {@link RingConsumer.tryRead}. */
export interface RingLease {
  /** The message: valid until `release()`, then zero-length. */
  readonly bytes: Uint8Array;
  /**
   * Hands the message's space back to the producer. Throws `UnexpectedEof` if a page under the
   * ring was lost to a file shrunk under it meanwhile: what `bytes` showed may have been zeros.
   */
  release(): void;
}

/** A count of messages taken, or undefined for none (what a blocking call's retry wants). */
function nonZero(count: number | null): number | null | undefined {
  return count === 0 ? undefined : count;
}

/** A batch of messages taken, or undefined for none. */
function nonEmpty(messages: Uint8Array[]): Uint8Array[] | undefined {
  return messages.length === 0 ? undefined : messages;
}

/**
 * Sees one message in place for {@link RingConsumer.readWith} and
 * {@link RingConsumer.tryReadWith}: it is `data[offset ... offset + length]`, valid only until
 * the callback returns. It must not use the same consumer (that is `Deno.errors.Busy`); if it
 * throws, its message stays in the ring and the messages before it in the call are taken.
 */
export type RingReader = (data: Uint8Array, offset: number, length: number) => void;

/** What {@link RingConsumer.#next} found besides a message. */
const NOTHING = -1;
const ENDED = -2;

const constructing = Symbol("RingConsumer");

/**
 * The receiving end of a ring; one per ring, enforced. Open with {@link openRingConsumer}.
 *
 * One call at a time: blocking calls made while another is in flight wait their turn, in order,
 * and the `try` forms report the ring empty meanwhile, so no message is taken out of order.
 */
export class RingConsumer {
  readonly #ring: RingCore;
  readonly #words: Int32Array;
  readonly #lengths: Int32Array;
  readonly #messages: Uint8Array;
  readonly #capacity: number;
  readonly #twice: number;
  readonly #data: number;
  readonly #tailIndex: number;
  readonly #headIndex: number;
  readonly #magicIndex: number;
  readonly #maxMessageSize: number;
  readonly #waitingIndex: number;
  /** Where the consumer role's claim names its holder, and this end's name there. */
  readonly #claimWord: number;
  readonly #ownId: number;
  /** The SIGBUS guard's fault count: looked at before a message read is handed over. */
  readonly #faults: Int32Array;
  #tail: number;
  #head: number;
  /** The data index of the message {@link RingConsumer.#next} found. */
  #at = 0;
  /** Bytes taken since the tail was last handed back, and how many make it hand them back. */
  #unpublished = 0;
  /** What this end last stored in the shared tail. */
  #publishedTail: number;
  readonly #publishEvery: number;
  readonly #wakeFields: WaitFields;

  /** @ignore Not for direct use: call {@link openRingConsumer}. */
  constructor(token: symbol, region: unknown, capacity: unknown, options: unknown) {
    if (token !== constructing) throw new TypeError("Use openRingConsumer()");
    const ring = new RingCore(
      region as SharedRegion,
      capacity as number,
      options as RingOptions,
      "Release the message you hold before reading another",
    );
    this.#ring = ring;
    this.#words = ring.words;
    this.#lengths = ring.lengths;
    this.#messages = ring.messages;
    this.#capacity = ring.capacity;
    this.#twice = 2 * ring.capacity;
    this.#data = ring.data;
    this.#tailIndex = ring.index(TAIL);
    this.#headIndex = ring.index(HEAD);
    this.#magicIndex = ring.index(MAGIC);
    this.#maxMessageSize = ring.maxMessageSize;
    this.#publishEvery = Math.max(RECORD_HEADER_SIZE, ring.capacity >> 3);
    this.#waitingIndex = ring.index(PRODUCER_WAITING);
    this.#faults = ring.faults;
    this.#tail = ring.attach(CONSUMER, TAIL, "consumer", "tail");
    this.#claimWord = ring.claimWord;
    this.#ownId = ring.ownId;
    this.#publishedTail = this.#tail;
    this.#wakeFields = {
      word: HEAD,
      waiting: CONSUMER_WAITING,
      peer: PRODUCER,
      peerName: "producer",
      own: TAIL,
      ownName: "tail",
      published: () => this.#publishedTail,
    };
    this.#head = this.#tail;
    try {
      ring.memory.adopt(this);
    } catch (error) {
      ring.detach(CONSUMER, TAIL);
      throw error;
    }
  }

  /** Data bytes in the ring. */
  get capacity(): number {
    this.#ring.checkOpen();
    return this.#capacity;
  }

  /** The largest message the ring carries: its capacity less a record header. */
  get maxMessageSize(): number {
    this.#ring.checkOpen();
    return this.#ring.maxMessageSize;
  }

  /**
   * Bytes of messages waiting right now (headers and padding included). `InvalidData` when the
   * producer's position was written over with one it could not have written.
   */
  get available(): number {
    this.#ring.check();
    const head = this.#producerHead("count the bytes waiting in");
    const used = head - this.#tail;
    this.#head = head;
    return used < 0 ? used + this.#twice : used;
  }

  /**
   * The ring's data area in place, as {@link RingConsumer.tryReadWith} hands it to its
   * callback. Revoked (length 0) when the consumer closes.
   */
  get data(): Uint8Array {
    return this.#ring.dataView();
  }

  /**
   * The next message (a new copy), `null` once the producer closed and all is read, or
   * undefined when nothing is there yet. Allocates per message: see
   * {@link RingConsumer.tryReceiveInto} for the fast form.
   */
  tryReceive(): Uint8Array | null | undefined {
    if (!this.#ring.free()) return undefined;
    const length = this.#next();
    if (length === NOTHING) return undefined;
    return length === ENDED ? null : this.#copy(length);
  }

  /**
   * The next message (a new copy), sleeping while the ring is empty; `null` once the producer
   * closed and everything it sent was received. Rejects with `BrokenPipe` if the producer died,
   * with `BadResource` if the consumer or its region closes meanwhile.
   *
   * @param [options={}] A timeout and an abort signal.
   */
  async receive(options: RingWaitOptions = {}): Promise<Uint8Array | null> {
    options = this.#ring.bounded(options);
    const message = this.tryReceive();
    if (message !== undefined) return message;
    return await this.#ring.blocking(
      () => this.tryReceive(),
      (spun) => this.#waitForMessage(options, spun),
      (length) => length === ENDED ? null : this.#copy(length),
      options,
    );
  }

  /**
   * Copies the next message into `buffer` and returns its length, allocating nothing; `null`
   * once the producer closed and all is read, undefined when nothing is there yet. A message
   * longer than `buffer` is a `RangeError` and stays in the ring.
   */
  tryReceiveInto(buffer: Uint8Array): number | null | undefined {
    // One flat function, so that a caller's loop has it whole within the runtime's inlining
    // budget: the usual message copied out, and anything else (an empty ring, padding, the
    // closed mark, a record or buffer out of the ordinary, the end busy or closed, the role
    // taken over) to the general path, which looks at everything again.
    const words = this.#words;
    const tail = this.#tail;
    const twice = this.#twice;
    let head = this.#head;
    // Not once busy or closed: a closed region's words are detached, and Atomics throws there.
    if (head === tail && this.#ring.blocked === 0) {
      head = atomicLoad(words, this.#headIndex);
      // The closed mark makes the word negative; a header rewritten under the ring (echo >
      // FILE) is no ring any more: both for the general path, as an empty ring is (used 0).
      if (head < 0 || head >= twice || words[this.#magicIndex] !== RING_MAGIC) head = tail;
      this.#head = head;
    }
    const capacity = this.#capacity;
    let used = head - tail;
    if (used < 0) used += twice;
    const index = tail >= capacity ? tail - capacity : tail;
    const length = this.#lengths[index >> 2];
    // The 8-byte header and the message, to a multiple of 8: more than is left before the end
    // for a length too large, more than is used for an empty ring.
    const record = (length + 15) & ~7;
    if (
      length <= 0 || record > used || record > capacity - index || used > capacity ||
      this.#ring.blocked !== 0 || words[this.#claimWord] !== this.#ownId ||
      !(buffer instanceof Uint8Array) || length > buffer.length
    ) return this.#tryReceiveIntoSlowly(buffer);
    buffer.set(this.#messages.subarray(index, index + length));
    // Once any fault was taken: what was read may be zeros from a page cut off.
    if (this.#faults[0] !== 0) this.#ring.checkLost();
    let next = tail + record;
    if (next >= twice) next -= twice;
    this.#tail = this.#publishedTail = next;
    atomicStore(words, this.#tailIndex, next);
    if (atomicLoad(words, this.#waitingIndex) !== 0) this.#ring.wake(TAIL);
    return length;
  }

  /** {@link RingConsumer.tryReceiveInto} for everything its short path leaves. */
  #tryReceiveIntoSlowly(buffer: Uint8Array): number | null | undefined {
    if (!this.#ring.free()) return undefined;
    const length = this.#next();
    if (length >= 0) return this.#copyInto(buffer, length);
    // Checked with nothing to copy too: a wrong buffer is wrong before a message comes.
    if (!(buffer instanceof Uint8Array)) this.#tooSmall(0, buffer);
    return length === ENDED ? null : undefined;
  }

  /**
   * {@link RingConsumer.tryReceiveInto}, sleeping while the ring is empty.
   *
   * @param buffer Where the message goes; a longer message is a `RangeError`.
   * @param [options={}] A timeout and an abort signal.
   */
  async receiveInto(buffer: Uint8Array, options: RingWaitOptions = {}): Promise<number | null> {
    options = this.#ring.bounded(options);
    const length = this.tryReceiveInto(buffer);
    if (length !== undefined) return length;
    return await this.#ring.blocking(
      () => this.tryReceiveInto(buffer),
      (spun) => this.#waitForMessage(options, spun),
      (length) => length === ENDED ? null : this.#copyInto(buffer, length),
      options,
    );
  }

  /**
   * Up to `max` messages that are there now (new copies), and at most a ring's worth of them (a
   * producer that keeps up cannot keep the call going), handing their space back at once (and
   * every eighth of the ring in a long batch).
   *
   * @param [max=Infinity] The most messages to take.
   */
  tryReceiveBatch(max = Infinity): Uint8Array[] {
    if (max !== Infinity) this.#checkMax(max, 0, "receive from");
    return this.#ring.free() ? this.#takeBatch(max) : [];
  }

  /**
   * Throws unless `max` is a count of messages to take: a whole number from `least` (1 for a
   * wait, which returns at least one; a try form may be asked for none), or Infinity.
   */
  #checkMax(max: number, least: number, action: string): void {
    if (Number.isSafeInteger(max) && max >= least || max === Infinity) return;
    throw this.#ring.argumentError(
      typeof max === "number" ? RangeError : TypeError,
      action,
      `max ${shown(max)} is not a whole number of messages from ${least} up, or Infinity`,
    );
  }

  /** Takes up to `max` messages after those of `messages`, into it (see `keepsTaken`). */
  #takeBatch(max: number, messages: Uint8Array[] = []): Uint8Array[] {
    // At most a ring's worth: a producer that keeps up would otherwise keep the call going.
    let budget = this.#capacity;
    try {
      while (messages.length < max && budget > 0) {
        const length = this.#next();
        if (length < 0) break;
        const at = this.#at;
        messages.push(this.#messages.slice(at, at + length));
        this.#skip(length);
        budget -= RECORD_HEADER_SIZE + ((length + 7) & ~7);
      }
    } catch (error) {
      if (!keepsTaken(error, messages.length)) throw error;
    } finally {
      if (this.#unpublished > 0) this.#publish();
    }
    return messages;
  }

  /**
   * At least one and up to `max` messages (at most a ring's worth), sleeping while the ring is
   * empty; an empty array once the producer closed and everything was received.
   *
   * @param [max=Infinity] The most messages to take.
   * @param [options={}] A timeout and an abort signal.
   */
  async receiveBatch(max = Infinity, options: RingWaitOptions = {}): Promise<Uint8Array[]> {
    options = this.#ring.bounded(options);
    this.#checkMax(max, 1, "receive from");
    const messages = this.tryReceiveBatch(max);
    if (messages.length > 0) return messages;
    // One call: the first message and the rest are taken in the same turn.
    return await this.#ring.blocking(
      () => nonEmpty(this.tryReceiveBatch(max)),
      (spun) => this.#waitForMessage(options, spun),
      (length) => length === ENDED ? [] : this.#takeBatch(max, [this.#copy(length)]),
      options,
    );
  }

  /**
   * Copies up to `lengths.length` waiting messages back to back into `buffer`, writes each
   * one's length into `lengths`, and returns how many it took (0 when none fit or none wait):
   * many messages per call, their space handed back once (and every eighth of the ring in a long
   * batch), nothing allocated. A message that does
   * not fit in what is left of `buffer` stays for the next call; a message larger than the
   * whole buffer is a `RangeError`, as are `lengths` with no room for one.
   */
  tryReceiveBatchInto(buffer: Uint8Array, lengths: Uint32Array): number {
    this.#checkBatchInto(buffer, lengths);
    return this.#ring.free() ? this.#batchInto(buffer, lengths) : 0;
  }

  /** Throws unless `buffer` is a byte array and `lengths` a `Uint32Array` with room for one. */
  #checkBatchInto(buffer: Uint8Array, lengths: Uint32Array): void {
    if (!(buffer instanceof Uint8Array)) this.#tooSmall(0, buffer);
    if (!(lengths instanceof Uint32Array)) {
      // A Uint8Array's lengths wrap at 256, a plain array's are not the caller's to read back.
      throw this.#ring.argumentError(
        TypeError,
        "receive from",
        `lengths is ${describeKind(lengths)}, not a Uint32Array`,
      );
    }
    if (lengths.length === 0) {
      throw this.#ring.argumentError(
        RangeError,
        "receive from",
        "lengths has no room for even one message",
      );
    }
  }

  /**
   * {@link RingConsumer.tryReceiveBatchInto}, sleeping while the ring is empty: resolves with
   * how many messages (at least one) it copied into `buffer`, their lengths in `lengths`, or
   * `null` once the producer closed and everything was received. Nothing is allocated per
   * message. Rejects with `BrokenPipe` if the producer died, `TimedOut`, the signal's reason,
   * and `BadResource` if the consumer or its region closes meanwhile.
   *
   * @param buffer Where the messages go, back to back; a message larger than it is a
   * `RangeError` and stays in the ring.
   * @param lengths Receives each message's length; its length is the most messages taken.
   * @param [options={}] A timeout and an abort signal.
   * @example
   * ```ts
   * import {
   *   createMemfdRegion,
   *   initRing,
   *   openRingConsumer,
   *   openRingProducer,
   * } from "@mmap-ipc/mmap-ipc";
   *
   * using region = createMemfdRegion({ size: 4096 });
   * initRing(region);
   * using producer = openRingProducer(region);
   * using consumer = openRingConsumer(region);
   * producer.trySendBatch([new Uint8Array([1, 2]), new Uint8Array([3])]);
   * const buffer = new Uint8Array(64);
   * const lengths = new Uint32Array(8);
   * const count = await consumer.receiveBatchInto(buffer, lengths);
   * console.log(count, [...lengths.subarray(0, 2)], [...buffer.subarray(0, 3)]); // 2 [ 2, 1 ] [ 1, 2, 3 ]
   * ```
   */
  async receiveBatchInto(
    buffer: Uint8Array,
    lengths: Uint32Array,
    options: RingWaitOptions = {},
  ): Promise<number | null> {
    options = this.#ring.bounded(options);
    const count = this.tryReceiveBatchInto(buffer, lengths); // checks its arguments first
    if (count > 0) return count;
    return await this.#ring.blocking(
      () => nonZero(this.tryReceiveBatchInto(buffer, lengths)),
      (spun) => this.#waitForMessage(options, spun),
      (length) => length === ENDED ? null : this.#batchInto(buffer, lengths),
      options,
    );
  }

  #batchInto(buffer: Uint8Array, lengths: Uint32Array): number {
    let count = 0;
    let filled = 0;
    try {
      while (count < lengths.length) {
        const length = this.#next();
        if (length < 0) break;
        // Too large for the whole buffer: an error, but only before anything was taken, so that
        // what was taken is returned and nothing is lost.
        if ((length > buffer.length || buffer.length === 0) && count === 0) {
          this.#tooSmall(length, buffer);
        }
        if (filled + length > buffer.length) break;
        const at = this.#at;
        buffer.set(this.#messages.subarray(at, at + length), filled);
        filled += length;
        lengths[count++] = length;
        this.#skip(length);
      }
    } catch (error) {
      if (!keepsTaken(error, count)) throw error;
    } finally {
      if (this.#unpublished > 0) this.#publish();
    }
    return count;
  }

  /**
   * Hands each waiting message, up to `max` and at most a ring's worth (a producer that keeps up,
   * or `read` itself sending, cannot keep the call going), to `read` in place (zero-copy, nothing
   * allocated), then gives their space back at once (and every eighth of the ring in a long batch, so the
   * producer can write meanwhile). Returns how many it read; `null` once the producer
   * closed and everything was read. The view `read` gets is only valid until it returns.
   *
   * @param read Called with each message in place.
   * @param [max=Infinity] The most messages to read.
   * @example
   * ```ts
   * import {
   *   createMemfdRegion,
   *   initRing,
   *   openRingConsumer,
   *   openRingProducer,
   * } from "@mmap-ipc/mmap-ipc";
   *
   * using region = createMemfdRegion({ size: 4096 });
   * initRing(region);
   * using producer = openRingProducer(region);
   * using consumer = openRingConsumer(region);
   * producer.trySend(new Uint8Array([7, 8, 9]));
   * let sum = 0;
   * consumer.tryReadWith((data, offset, length) => {
   *   for (let i = offset; i < offset + length; i++) sum += data[i];
   * });
   * console.log(sum); // 24
   * ```
   */
  tryReadWith(read: RingReader, max = Infinity): number | null {
    this.#checkReader(read, max, 0);
    return this.#ring.free() ? this.#readWith(read, max) : 0;
  }

  /** Throws unless `read` is a function and `max` a count of messages (see `#checkMax`). */
  #checkReader(read: RingReader, max: number, least: number): void {
    this.#ring.checkCallback(read, "reader", "read from");
    if (max !== Infinity) this.#checkMax(max, least, "read from");
  }

  /**
   * {@link RingConsumer.tryReadWith}, sleeping while the ring is empty: resolves with how many
   * messages (at least one) `read` got in place, or `null` once the producer closed and
   * everything was read. Zero-copy, like the method it waits for. Rejects with `BrokenPipe` if
   * the producer died, `TimedOut`, the signal's reason, `BadResource` if the consumer or its
   * region closes meanwhile, and with what `read` throws.
   *
   * @param read Called with each message in place; the view is only valid until it returns.
   * @param [max=Infinity] The most messages to read, at least 1.
   * @param [options={}] A timeout and an abort signal.
   * @example
   * ```ts
   * import {
   *   createMemfdRegion,
   *   initRing,
   *   openRingConsumer,
   *   openRingProducer,
   * } from "@mmap-ipc/mmap-ipc";
   *
   * using region = createMemfdRegion({ size: 4096 });
   * initRing(region);
   * using producer = openRingProducer(region);
   * using consumer = openRingConsumer(region);
   * let first = -1;
   * const reading = consumer.readWith((data, offset) => (first = data[offset]), 1);
   * producer.trySend(new Uint8Array([42]));
   * console.log(await reading, first); // 1 42
   * ```
   */
  async readWith(
    read: RingReader,
    max = Infinity,
    options: RingWaitOptions = {},
  ): Promise<number | null> {
    options = this.#ring.bounded(options);
    this.#checkReader(read, max, 1);
    const count = this.tryReadWith(read, max);
    if (count !== 0) return count;
    return await this.#ring.blocking(
      () => nonZero(this.tryReadWith(read, max)),
      (spun) => this.#waitForMessage(options, spun),
      (length) => length === ENDED ? null : this.#readWith(read, max),
      options,
    );
  }

  #readWith(read: RingReader, max: number): number | null {
    const data = this.data;
    let count = 0;
    let length = NOTHING;
    // At most a ring's worth: a producer that keeps up (the callback itself may send) would
    // otherwise keep the call going, and the event loop waiting, for good.
    let budget = this.#capacity;
    /** Whether an error comes from `read`, which is the caller's to have, whatever it is. */
    let reading = false;
    this.#ring.inCallback = true; // nothing in this loop asks whether the end is free
    try {
      while (count < max && budget > 0) {
        length = this.#next();
        if (length < 0) break;
        if (this.#faults[0] !== 0) this.#ring.checkLost(); // not a length read as zeros
        reading = true;
        read(data, this.#at + RECORD_HEADER_SIZE, length);
        reading = false;
        this.#ring.check(); // the callback may have closed the ring
        this.#skip(length);
        budget -= RECORD_HEADER_SIZE + ((length + 7) & ~7);
        count++;
      }
    } catch (error) {
      if (reading || !keepsTaken(error, count)) throw error;
    } finally {
      this.#ring.inCallback = false;
      if (this.#unpublished > 0 && !this.#ring.closed) this.#publish();
    }
    return count === 0 && length === ENDED ? null : count;
  }

  /**
   * The next message in place: zero-copy. Its view is valid until `release()`, which hands the
   * space back to the producer; after that it has length 0. `null` once the producer closed and
   * everything was read; undefined when nothing is there yet.
   */
  tryRead(): RingLease | null | undefined {
    if (!this.#ring.free()) return undefined;
    const length = this.#next();
    if (length === NOTHING) return undefined;
    return length === ENDED ? null : this.#leaseOf(length);
  }

  /**
   * {@link RingConsumer.tryRead}, sleeping while the ring is empty.
   *
   * @param [options={}] A timeout and an abort signal.
   */
  async read(options: RingWaitOptions = {}): Promise<RingLease | null> {
    options = this.#ring.bounded(options);
    const lease = this.tryRead();
    if (lease !== undefined) return lease;
    return await this.#ring.blocking(
      () => this.tryRead(),
      (spun) => this.#waitForMessage(options, spun),
      (length) => length === ENDED ? null : this.#leaseOf(length),
      options,
    );
  }

  /**
   * Yields each message (a copy) until the producer closes and everything is received. Ends
   * quietly when `signal` aborts or the consumer closes meanwhile; throws `BrokenPipe` if the
   * producer dies, and `BadResource` when started on a closed consumer (as `StateCell.changes()`
   * does).
   *
   * @param [options={}] An abort signal.
   */
  async *messages(
    options: { signal?: AbortSignal } = {},
  ): AsyncGenerator<Uint8Array, void, undefined> {
    options ??= {}; // null from JavaScript
    this.#ring.checkOpen();
    for (;;) {
      let message: Uint8Array | null;
      try {
        message = await this.receive({ signal: options.signal });
      } catch (error) {
        if (options.signal?.aborted || error instanceof Deno.errors.BadResource) return;
        throw error;
      }
      if (message === null) return;
      yield message;
    }
  }

  /**
   * Drops every message waiting, without reading them, and returns the bytes that frees (record
   * headers and padding included). It is the way past a record something wrote over, which the
   * read methods report with `InvalidData` each time they reach it: a consumer cannot tell where
   * the next record starts after one whose length is garbage, so it starts again where the
   * producer writes next. What the producer sends afterwards reads as usual. A head position
   * the producer could not have written (more than a ring's worth past this end, or between two
   * records) is `InvalidData`, and nothing moves: the producer writes its own back at its next
   * send. A ring whose header was written over stays `InvalidData`: it must be made again
   * (`initRing`). A batch read that meets such a record returns the messages before it, and the
   * next call meets the record.
   *
   * Throws `Busy` while a lease is held, from inside a callback of this end, or while a blocking
   * call of this end waits: what that call found would be read from dropped space.
   *
   * @example
   * ```ts
   * import {
   *   createMemfdRegion,
   *   initRing,
   *   openRingConsumer,
   *   openRingProducer,
   * } from "@mmap-ipc/mmap-ipc";
   *
   * using region = createMemfdRegion({ size: 4096 });
   * initRing(region);
   * using producer = openRingProducer(region);
   * using consumer = openRingConsumer(region);
   * producer.trySend(new TextEncoder().encode("lost"));
   * region.storeInt32(192, 0x7fff_0000); // a stray write over the record's length
   * try {
   *   consumer.tryReceive();
   * } catch (error) {
   *   if (!(error instanceof Deno.errors.InvalidData)) throw error;
   *   console.log(`dropped ${consumer.discardAll()} bytes`); // dropped 16 bytes
   * }
   * producer.trySend(new TextEncoder().encode("next"));
   * console.log(new TextDecoder().decode(consumer.tryReceive()!)); // next
   * ```
   */
  discardAll(): number {
    if (!this.#ring.free()) {
      throw new Deno.errors.Busy(
        `Cannot discard the messages of the ring in ${
          JSON.stringify(this.#ring.name)
        }: a blocking call of this consumer is waiting`,
      );
    }
    // A head written over cannot be read past either: taken, it would put this end where the
    // producer never wrote, and the producer would then find the tail ahead of its head.
    const head = this.#producerHead("discard the messages of the ring in");
    let dropped = head - this.#tail;
    if (dropped < 0) dropped += this.#twice;
    this.#head = this.#tail = head;
    this.#publish();
    return dropped;
  }

  /** Same as {@link RingConsumer.messages} without a signal. */
  [Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    return this.messages();
  }

  /**
   * Closes the receiving end: a producer that sends afterwards gets `BrokenPipe`, pending calls
   * reject with `BadResource`, and a held lease is revoked. Safe to call twice.
   */
  close(): void {
    if (this.#ring.closed) return;
    this.#ring.memory.forget(this);
    this.#ring.close(CONSUMER, TAIL, this.#tail);
  }

  /** Same as {@link RingConsumer.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Finds the next message: returns its length and sets `#at` to its data index; or NOTHING,
   * or ENDED when the producer closed and all is read. Reads the shared head only when the
   * cached one says the ring is empty. Kept small so that the runtime inlines it: anything out
   * of the ordinary (padding, the closed mark, a fault taken, a record that does not fit) goes
   * to {@link RingConsumer.#nextSlowly}, which looks at everything again.
   */
  #next(): number {
    const tail = this.#tail;
    let head = this.#head;
    if (head === tail) {
      head = Atomics.load(this.#words, this.#headIndex);
      // The closed mark makes the word negative; a head outside the positions is corrupt; a
      // header rewritten under the ring (echo > FILE) is no ring any more.
      if (
        head < 0 || head >= this.#twice || this.#faults[0] !== 0 ||
        this.#words[this.#magicIndex] !== RING_MAGIC
      ) return this.#nextSlowly();
      if (head === tail) return this.#nothing();
      this.#head = head;
    }
    let used = head - tail;
    if (used < 0) used += this.#twice;
    const index = tail >= this.#capacity ? tail - this.#capacity : tail;
    const length = this.#lengths[index >> 2];
    const record = RECORD_HEADER_SIZE + ((length + 7) & ~7);
    // An empty message is rare, and what a zeroed ring reads as: the slow path looks at the
    // header before it hands one over. The role still this end's: see #publish.
    if (
      this.#words[this.#claimWord] === this.#ownId &&
      length > 0 && length <= this.#maxMessageSize && record <= used &&
      record <= this.#capacity - index && used <= this.#capacity
    ) {
      this.#at = index;
      return length;
    }
    return this.#nextSlowly();
  }

  /** What `#next` says of an empty ring, the producer looked at now and then (see pollPeer). */
  #nothing(): number {
    this.#ring.pollPeer(this.#wakeFields);
    return NOTHING;
  }

  /** {@link RingConsumer.#next} for padding, the closed mark, faults and corrupted records. */
  #nextSlowly(): number {
    this.#checkOwn();
    for (;;) {
      if (this.#head === this.#tail) {
        const word = this.#ring.position(HEAD, "head");
        this.#head = word & POSITION;
        if (this.#head === this.#tail) return (word & CLOSED) !== 0 ? ENDED : this.#nothing();
      }
      let used = this.#head - this.#tail;
      if (used < 0) used += this.#twice;
      const tail = this.#tail;
      const index = tail >= this.#capacity ? tail - this.#capacity : tail;
      const untilEnd = this.#capacity - index;
      const length = this.#lengths[index >> 2];
      if (used > this.#capacity || used < RECORD_HEADER_SIZE) {
        this.#corrupt(index, `${used} bytes in use`);
      }
      if (length === PAD) {
        if (untilEnd > used) {
          this.#corrupt(index, `padding of ${untilEnd} bytes but only ${used} in use`);
        }
        this.#tail = tail + untilEnd >= this.#twice
          ? tail + untilEnd - this.#twice
          : tail + untilEnd;
        // Padding is rare: hand its space back at once, since the producer may wait for it.
        this.#publish();
        continue;
      }
      if (length === 0) this.#ring.checkHeader();
      const record = RECORD_HEADER_SIZE + ((length + 7) & ~7);
      if (length < 0 || length > this.#ring.maxMessageSize || record > used || record > untilEnd) {
        this.#corrupt(
          index,
          `a message of ${length} bytes with ${used} in use and ${untilEnd} before the end`,
        );
      }
      this.#at = index;
      return length;
    }
  }

  /**
   * The producer's position, or `InvalidData` for one it could not have written: more than a
   * ring's worth past the tail, or between two records (which {@link RingCore.position} sees).
   */
  #producerHead(action: string): number {
    const head = this.#ring.position(HEAD, "head") & POSITION;
    let used = head - this.#tail;
    if (used < 0) used += this.#twice;
    if (used > this.#capacity) {
      throw failure(
        Deno.errors.InvalidData,
        action,
        this.#ring.name,
        `its head position ${head} is not one the producer could have written, ${used} bytes past the tail in a ring of ${this.#capacity}: the header is corrupted`,
      );
    }
    return head;
  }

  #corrupt(index: number, what: string): never {
    this.#ring.checkLost(); // zeros read from a page cut off are not a corrupted ring
    throw failure(
      Deno.errors.InvalidData,
      "read the ring in",
      this.#ring.name,
      `the record at data offset ${index} is corrupted: ${what}`,
    );
  }

  /** Throws when the next message, of `length` bytes, cannot be copied into `buffer`. */
  #tooSmall(length: number, buffer: Uint8Array): void {
    // A Uint16Array took each byte into an element of its own; a plain array, nothing at all.
    const why = byteCount(buffer) <= 0 ? unusableBytes(buffer) : undefined;
    // Through argumentError: once closed, that is what a call says first.
    if (why !== undefined) {
      throw this.#ring.argumentError(
        TypeError,
        "receive from",
        `the buffer to copy into is ${why}; the next message stays in the ring`,
      );
    }
    if (length <= buffer.length) return;
    throw this.#ring.argumentError(
      RangeError,
      "receive from",
      `the next message has ${length} bytes, more than the buffer's ${buffer.length}; it stays in the ring`,
    );
  }

  /**
   * Moves the local tail past the message of `length` bytes at `#at`. A batch hands its space
   * back at the end, and also whenever it has taken an eighth of the ring, so that the producer
   * can write while a long batch is read.
   */
  #skip(length: number): void {
    // What was read came from a page cut off (a zero length, or zeros copied): say so instead.
    if (this.#faults[0] !== 0) this.#ring.checkLost();
    const record = RECORD_HEADER_SIZE + ((length + 7) & ~7);
    const tail = this.#tail + record;
    this.#tail = tail >= this.#twice ? tail - this.#twice : tail;
    this.#unpublished += record;
    if (this.#unpublished >= this.#publishEvery) this.#publish();
  }

  /**
   * Throws `InvalidData` once another process took this end's role (see `RingCore.checkOwn`):
   * two consumers would hand out the same messages. Looked at by `#next` before each message is
   * handed out, by any read (its fast path does the same load in place), and before space goes
   * back.
   */
  #checkOwn(): void {
    if (this.#words[this.#claimWord] !== this.#ownId) this.#ring.checkOwn(this.#wakeFields);
  }

  /** Hands the space before the local tail back to the producer, waking it if it sleeps. */
  #publish(): void {
    this.#checkOwn();
    this.#unpublished = 0;
    Atomics.store(this.#words, this.#tailIndex, this.#publishedTail = this.#tail);
    if (Atomics.load(this.#words, this.#waitingIndex) !== 0) {
      this.#ring.wake(TAIL);
    }
  }

  #copy(length: number): Uint8Array {
    const at = this.#at;
    const message = this.#messages.slice(at, at + length);
    this.#skip(length);
    if (this.#unpublished > 0) this.#publish();
    return message;
  }

  #copyInto(buffer: Uint8Array, length: number): number {
    if (!(buffer instanceof Uint8Array) || length > buffer.length || buffer.length === 0) {
      this.#tooSmall(length, buffer);
    }
    const at = this.#at;
    buffer.set(this.#messages.subarray(at, at + length));
    this.#skip(length);
    if (this.#unpublished > 0) this.#publish();
    return length;
  }

  /** Sleeps until a message (or the producer's close) is there; returns what `#next` found. */
  #waitForMessage(options: RingWaitOptions, spun: boolean): Promise<number> {
    return this.#ring.waitFor(
      () => {
        const length = this.#next();
        return length === NOTHING ? undefined : length;
      },
      this.#wakeFields,
      options,
      spun,
    );
  }

  #leaseOf(length: number): RingLease {
    if (this.#faults[0] !== 0) this.#ring.checkLost(); // not a length read as zeros
    const at = this.#at;
    const buffer = this.#ring.memory.lend(this.#data + at + RECORD_HEADER_SIZE, length);
    this.#ring.held = buffer;
    return {
      bytes: new Uint8Array(buffer),
      release: (): void => {
        if (this.#ring.held !== buffer) {
          this.#ring.check();
          throw failure(
            Deno.errors.BadResource,
            "release a message of the ring in",
            this.#ring.name,
            "it was released already",
          );
        }
        this.#ring.held = undefined;
        this.#ring.memory.revoke(buffer);
        this.#at = at;
        this.#skip(length);
        if (this.#unpublished > 0) this.#publish();
      },
    };
  }
}

/**
 * Whether a batch that met `error` after taking `taken` messages returns them instead: a record
 * written over (`InvalidData`) stays where it is, for the next call to meet, and what came
 * before it was read whole; a dead producer (`BrokenPipe`, from an empty ring) is said again
 * by the next call. Anything else (a page lost, say) is thrown.
 */
function keepsTaken(error: unknown, taken: number): boolean {
  return taken > 0 &&
    (error instanceof Deno.errors.InvalidData || error instanceof Deno.errors.BrokenPipe);
}

/**
 * Attaches the consumer to the ring in `region`. One consumer at a time.
 *
 * @param region The region the ring was written into.
 * @param [options={}] Where the ring starts, and how this end waits.
 * @example
 * ```ts
 * import {
 *   createMemfdRegion,
 *   initRing,
 *   openRingConsumer,
 *   openRingProducer,
 * } from "@mmap-ipc/mmap-ipc";
 *
 * using region = createMemfdRegion({ size: 4096 });
 * initRing(region);
 * using producer = openRingProducer(region);
 * using consumer = openRingConsumer(region);
 * await producer.send(new TextEncoder().encode("hello"));
 * producer.close();
 * for await (const message of consumer) console.log(new TextDecoder().decode(message));
 * ```
 */
export function openRingConsumer(region: SharedRegion, options: RingOptions = {}): RingConsumer {
  options ??= {}; // null from JavaScript
  const capacity = readCapacity(region, options.offset ?? 0, "open the ring consumer in");
  return new RingConsumer(constructing, region, capacity, options);
}
