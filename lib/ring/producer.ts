/**
 * The sending end of a ring. It keeps its own head and a cached copy of the consumer's tail,
 * and reads the shared tail only when the ring looks full: a message costs a length store, a
 * copy, one head store, and one load to see whether the consumer sleeps.
 *
 * @module
 */

import { failure, shown } from "../errors.ts";
import { byteCount, unusableBytes } from "../byte_arrays.ts";
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
  PAD,
  PRODUCER,
  PRODUCER_WAITING,
  readCapacity,
  RECORD_HEADER_SIZE,
  TAIL,
} from "./layout.ts";

/** Space for one message, reserved in the ring; see {@link RingProducer.tryReserve}. */
export interface RingReservation {
  /** Where to write the message: valid until `commit()` or `cancel()`, then zero-length. */
  readonly bytes: Uint8Array;
  /**
   * Publishes the first `length` bytes written (default: all that were reserved). Throws
   * `UnexpectedEof`, publishing nothing, if a page under the ring was lost to a file shrunk
   * under it: what was written reaches no one.
   */
  commit(length?: number): void;
  /** Gives the space back without sending anything. */
  cancel(): void;
}

/**
 * Fills a message in place for {@link RingProducer.sendWith} and {@link RingProducer.trySendWith}:
 * write it at `data[offset ... offset + length]` and return how many bytes were written (at most
 * `length`). It must not use the same producer (that is `Deno.errors.Busy`); if it throws,
 * nothing is sent.
 */
export type RingWriter = (data: Uint8Array, offset: number, length: number) => number;

const constructing = Symbol("RingProducer");

/**
 * The sending end of a ring; one per ring, enforced. Open with {@link openRingProducer}.
 *
 * One call at a time: blocking calls made while another is in flight wait their turn, in order,
 * and the `try` forms report the ring full meanwhile, so nothing overtakes. The producer learns
 * that the consumer closed (or died) when the ring looks full or when it sleeps: until then
 * `trySend()` may go on filling the ring.
 */
export class RingProducer {
  readonly #ring: RingCore;
  readonly #words: Int32Array;
  readonly #lengths: Int32Array;
  readonly #messages: Uint8Array;
  readonly #capacity: number;
  readonly #twice: number;
  readonly #data: number;
  readonly #headIndex: number;
  /** Where the producer role's claim names its holder, and this end's name there. */
  readonly #claimWord: number;
  readonly #ownId: number;
  readonly #waitingIndex: number;
  readonly #maxMessageSize: number;
  /** The SIGBUS guard's fault count: looked at before a record is published. */
  readonly #faults: Int32Array;
  #head: number;
  /** What this end last stored in the shared head (a padding may be ahead of it, unpublished). */
  #publishedHead: number;
  #tail: number;
  /** While set, publishing looks for a sleeping consumer only now and then, and at the end. */
  #batching = false;
  /**
   * Bytes a batch has published since it last looked whether the consumer sleeps; it looks
   * every eighth of the ring, so a sleeping consumer starts on a long batch before it ends.
   */
  #unwoken = 0;
  readonly #wakeEvery: number;
  readonly #wakeFields: WaitFields;

  /** @ignore Not for direct use: call {@link openRingProducer}. */
  constructor(token: symbol, region: unknown, capacity: unknown, options: unknown) {
    if (token !== constructing) throw new TypeError("Use openRingProducer()");
    const ring = new RingCore(
      region as SharedRegion,
      capacity as number,
      options as RingOptions,
      "Commit or cancel the open reservation before sending again",
    );
    this.#ring = ring;
    this.#words = ring.words;
    this.#lengths = ring.lengths;
    this.#messages = ring.messages;
    this.#capacity = ring.capacity;
    this.#twice = 2 * ring.capacity;
    this.#data = ring.data;
    this.#headIndex = ring.index(HEAD);
    this.#waitingIndex = ring.index(CONSUMER_WAITING);
    this.#maxMessageSize = ring.maxMessageSize;
    this.#faults = ring.faults;
    this.#wakeEvery = Math.max(RECORD_HEADER_SIZE, ring.capacity >> 3);
    this.#head = ring.attach(PRODUCER, HEAD, "producer", "head");
    this.#claimWord = ring.claimWord;
    this.#ownId = ring.ownId;
    this.#publishedHead = this.#head;
    this.#tail = this.#head;
    this.#wakeFields = {
      word: TAIL,
      waiting: PRODUCER_WAITING,
      peer: CONSUMER,
      peerName: "consumer",
      own: HEAD,
      ownName: "head",
      published: () => this.#publishedHead,
    };
    try {
      this.#refreshTail("open the ring producer in");
      ring.memory.adopt(this);
    } catch (error) {
      ring.detach(PRODUCER, HEAD);
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

  /** Bytes free for messages right now. */
  get free(): number {
    this.#ring.check();
    this.#refreshTail();
    return this.#capacity - this.#used();
  }

  /**
   * The ring's data area in place, for {@link RingProducer.trySendWith}: writes into it are
   * seen by the consumer once committed. Revoked (length 0) when the producer closes.
   */
  get data(): Uint8Array {
    return this.#ring.dataView();
  }

  /** Sends `message` if it fits now; returns whether it was sent. */
  trySend(message: Uint8Array): boolean {
    // One flat function, so that a caller's loop has it whole within the runtime's inlining
    // budget: the usual message sent in place, and anything else (no room with the cached tail,
    // the wrap, an odd message, the end busy or closed, the role taken over) to the general
    // path, which looks at everything again.
    const length = byteCount(message);
    const head = this.#head;
    const capacity = this.#capacity;
    const twice = this.#twice;
    const index = head >= capacity ? head - capacity : head;
    // The 8-byte header and the message, to a multiple of 8: more than is left before the end
    // for a message too long.
    const record = (length + 15) & ~7;
    let used = head - this.#tail;
    if (used < 0) used += twice;
    const words = this.#words;
    if (
      length <= 0 || record > capacity - index || record > capacity - used ||
      this.#ring.blocked !== 0 || words[this.#claimWord] !== this.#ownId
    ) return this.#trySendSlowly(message);
    this.#messages.set(message, index);
    this.#lengths[index >> 2] = length;
    // Once any fault was taken: written into a page cut off, it must not be published. (Past
    // the published head, the record was not the consumer's to read yet.)
    if (this.#faults[0] !== 0) this.#ring.checkLost();
    const next = head + record;
    this.#head = this.#publishedHead = next >= twice ? next - twice : next;
    atomicStore(words, this.#headIndex, this.#head);
    if (atomicLoad(words, this.#waitingIndex) !== 0) this.#ring.wake(HEAD);
    return true;
  }

  /** {@link RingProducer.trySend} for everything its short path leaves. */
  #trySendSlowly(message: Uint8Array): boolean {
    // -1 for no byte array at all; 0 for an empty one, and for one whose buffer was moved away.
    const length = byteCount(message);
    if (length <= 0 || length > this.#maxMessageSize) this.#checkMessage(message);
    if (!this.#ring.free()) return false;
    const index = this.#room(RECORD_HEADER_SIZE + ((length + 7) & ~7));
    if (index < 0) return false;
    this.#write(index, message, length);
    return true;
  }

  /**
   * Sends `message`, sleeping while the ring is full. Rejects with `BrokenPipe` if the consumer
   * closes or dies, `TimedOut`, the signal's reason, or `BadResource` if the producer or its
   * region closes meanwhile.
   *
   * @param [options={}] A timeout and an abort signal.
   */
  async send(message: Uint8Array, options: RingWaitOptions = {}): Promise<void> {
    options = this.#ring.bounded(options);
    if (this.trySend(message)) return;
    // The room waited for is this length's: a view over a buffer resized or moved away meanwhile
    // must not be written into more room than was found.
    const length = byteCount(message);
    await this.#ring.blocking(
      () => this.trySend(message) || undefined,
      (spun) => this.#waitForRoom(length, options, spun),
      (index) => {
        this.#checkUnchanged(message, length);
        this.#write(index, message, length);
        return true;
      },
      options,
    );
  }

  /**
   * Sends as many of `messages` as fit now, waking the consumer once; returns how many went.
   *
   * @param messages The messages, in order.
   * @param [start=0] The index of the first one to send.
   */
  trySendBatch(messages: readonly Uint8Array[], start = 0): number {
    if (typeof messages?.length !== "number") {
      throw this.#ring.argumentError(TypeError, "send into", `the batch is ${typeof messages}`);
    }
    if (!Number.isSafeInteger(start) || start < 0 || start > messages.length) {
      throw this.#ring.argumentError(
        RangeError,
        "send into",
        `start ${start} is not an index of the ${messages?.length}-message batch`,
      );
    }
    for (let i = start; i < messages.length; i++) {
      const message = messages[i];
      const length = byteCount(message);
      if (length <= 0 || length > this.#maxMessageSize) this.#checkMessage(message, i, 0);
    }
    if (!this.#ring.free()) return 0;
    return this.#sendBatch(messages, start);
  }

  /**
   * Sends all of `messages` in order, sleeping whenever the ring is full.
   *
   * @param messages The messages, in order.
   * @param [options={}] A timeout and an abort signal.
   */
  async sendBatch(messages: readonly Uint8Array[], options: RingWaitOptions = {}): Promise<void> {
    options = this.#ring.bounded(options);
    let sent = this.trySendBatch(messages);
    const spins = this.#ring.spins();
    // The lengths were checked once above: each try looks for room only.
    for (let spin = 0; sent < messages.length && spin < spins; spin++) {
      sent += this.#ring.free() ? this.#sendBatch(messages, sent) : 0;
    }
    if (sent === messages.length) return;
    await this.#ring.inTurn(
      async () => {
        let spun = spins > 0;
        while (sent < messages.length) {
          // Looked at again after every sleep: the caller may change the array or a message
          // meanwhile, and a message too long for the ring would wait for room for good.
          const message = messages[sent];
          const length = byteCount(message);
          if (length <= 0 || length > this.#maxMessageSize) {
            this.#checkMessage(message, sent, sent);
          }
          const index = await this.#waitForRoom(length, options, spun);
          spun = false;
          this.#ring.check(); // closed while the wait returned: write nothing
          this.#checkUnchanged(message, length, sent);
          this.#write(index, message, length);
          sent++;
          sent += this.#sendBatch(messages, sent);
        }
      },
      options,
      this.#ring.ready,
    );
  }

  /**
   * Sends a message of up to `length` bytes written in place, if it fits now: `write` fills
   * {@link RingProducer.data} from the offset it is given and returns the bytes it wrote.
   * Zero-copy, and nothing is allocated. Returns whether a message was sent.
   *
   * @example
   * ```ts
   * import { createMemfdRegion, initRing, openRingProducer } from "@mmap-ipc/mmap-ipc";
   *
   * using region = createMemfdRegion({ size: 4096 });
   * initRing(region);
   * using producer = openRingProducer(region);
   * producer.trySendWith(4, (data, offset) => {
   *   data.set([1, 2, 3, 4], offset);
   *   return 4;
   * });
   * ```
   */
  trySendWith(length: number, write: RingWriter): boolean {
    this.#checkLength(length);
    this.#ring.checkCallback(write, "writer", "send into");
    if (!this.#ring.free()) return false;
    const index = this.#room(RECORD_HEADER_SIZE + ((length + 7) & ~7));
    if (index < 0) return false;
    this.#writeWith(index, length, write);
    return true;
  }

  /**
   * {@link RingProducer.trySendWith}, sleeping while the ring is too full: `write` fills the
   * message in place once there is room. Zero-copy, like the method it waits for. Rejects with
   * `BrokenPipe` if the consumer closes or dies, `TimedOut`, the signal's reason, `BadResource`
   * if the producer or its region closes meanwhile, and with what `write` throws.
   *
   * @param length The most bytes the message will have.
   * @param write Fills {@link RingProducer.data} from the offset it is given; returns the bytes
   * it wrote.
   * @param [options={}] A timeout and an abort signal.
   * @example
   * ```ts
   * import { createMemfdRegion, initRing, openRingProducer } from "@mmap-ipc/mmap-ipc";
   *
   * using region = createMemfdRegion({ size: 4096 });
   * initRing(region);
   * using producer = openRingProducer(region);
   * await producer.sendWith(2, (data, offset) => {
   *   data.set([1, 2], offset);
   *   return 2;
   * });
   * ```
   */
  async sendWith(length: number, write: RingWriter, options: RingWaitOptions = {}): Promise<void> {
    options = this.#ring.bounded(options);
    if (this.trySendWith(length, write)) return;
    await this.#ring.blocking(
      () => this.trySendWith(length, write) || undefined,
      (spun) => this.#waitForRoom(length, options, spun),
      (index) => {
        this.#writeWith(index, length, write);
        return true;
      },
      options,
    );
  }

  #writeWith(index: number, length: number, write: RingWriter): void {
    const data = this.data;
    let used: number;
    this.#ring.inCallback = true;
    try {
      used = write(data, index + RECORD_HEADER_SIZE, length);
    } finally {
      this.#ring.inCallback = false;
    }
    if (!Number.isSafeInteger(used) || used < 0 || used > length) {
      throw this.#ring.argumentError(
        RangeError,
        "send into",
        `the writer reported ${
          shown(used)
        } bytes for a message of at most ${length}; nothing was sent`,
      );
    }
    this.#ring.check(); // the callback may have closed it
    this.#checkOwn();
    this.#commit(index, used);
  }

  /**
   * Reserves room for a message of up to `length` bytes and returns a view of it, to be filled
   * in place and then committed: zero-copy. The view is only valid until `commit()` or
   * `cancel()`; after that it has length 0. Returns undefined when the ring is too full.
   */
  tryReserve(length: number): RingReservation | undefined {
    this.#checkLength(length);
    if (!this.#ring.free()) return undefined;
    const index = this.#room(RECORD_HEADER_SIZE + ((length + 7) & ~7));
    return index < 0 ? undefined : this.#reservation(index, length);
  }

  /**
   * {@link RingProducer.tryReserve}, sleeping while the ring is full.
   *
   * @param length The most bytes the message will have.
   * @param [options={}] A timeout and an abort signal.
   */
  async reserve(length: number, options: RingWaitOptions = {}): Promise<RingReservation> {
    options = this.#ring.bounded(options);
    const reservation = this.tryReserve(length);
    if (reservation !== undefined) return reservation;
    return await this.#ring.blocking(
      () => this.tryReserve(length),
      (spun) => this.#waitForRoom(length, options, spun),
      (index) => this.#reservation(index, length),
      options,
    );
  }

  /**
   * Closes the sending end: the consumer receives what was sent, then its iteration ends. Any
   * open reservation is cancelled and pending calls reject with `BadResource`. Safe to call
   * twice.
   */
  close(): void {
    if (this.#ring.closed) return;
    this.#ring.memory.forget(this);
    this.#ring.close(PRODUCER, HEAD, this.#head);
  }

  /** Same as {@link RingProducer.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #checkLength(length: number): void {
    if (!Number.isSafeInteger(length) || length < 0) {
      throw this.#ring.argumentError(
        RangeError,
        "send into",
        `a length of ${shown(length)} bytes is not a whole number from 0 up`,
      );
    }
    if (length > this.#ring.maxMessageSize) this.#tooLong(length);
  }

  /**
   * Throws if `message` cannot be sent: no byte array, too long, or (length 0) one whose buffer
   * was transferred or resized away. In a batch, `at` is its index and `sent` how many of the
   * batch went before it.
   */
  #checkMessage(message: unknown, at?: number, sent?: number): void {
    const length = byteCount(message);
    if (length > 0) this.#tooLong(length, sent);
    const why = unusableBytes(message);
    if (why === undefined) return;
    const which = at === undefined ? "the message" : `message ${at} of the batch`;
    throw this.#ring.argumentError(TypeError, "send into", `${which} is ${why}${went(sent)}`);
  }

  /** `sent`: how many of a batch went before the message that does not fit. */
  #tooLong(length: number, sent?: number): never {
    throw this.#ring.argumentError(
      RangeError,
      "send into",
      `a message of ${length} bytes does not fit: it carries at most ${this.#ring.maxMessageSize} bytes (its capacity of ${this.#capacity} less an ${RECORD_HEADER_SIZE}-byte header)${
        went(sent)
      }`,
    );
  }

  /** Throws, sending nothing, if `message` no longer has the `length` room was found for. */
  #checkUnchanged(message: Uint8Array, length: number, sent?: number): void {
    if (byteCount(message) === length) return;
    throw failure(
      RangeError,
      "send into the ring in",
      this.#ring.name,
      `the message had ${length} bytes when the send began and ${
        byteCount(message)
      } when room came (its buffer was resized or transferred meanwhile); nothing of it was sent${
        went(sent)
      }`,
    );
  }

  #used(): number {
    const used = this.#head - this.#tail;
    return used < 0 ? used + this.#twice : used;
  }

  /** Reads the consumer's position; a closed consumer is a `BrokenPipe`. */
  #refreshTail(action = "send into the ring in"): void {
    const tail = this.#ring.position(TAIL, "tail");
    if ((tail & CLOSED) !== 0) {
      throw failure(
        Deno.errors.BrokenPipe,
        action,
        this.#ring.name,
        "the consumer closed it",
      );
    }
    // The consumer never gets ahead of the producer: a tail that is, was written by no end of
    // a ring, and the ring would look full for good.
    const used = this.#head - tail;
    if ((used < 0 ? used + this.#twice : used) > this.#capacity) {
      throw failure(
        Deno.errors.InvalidData,
        action,
        this.#ring.name,
        `its tail position ${tail} is ahead of the head ${this.#head}, or more than the capacity (${this.#capacity}) behind it: the header is corrupted`,
      );
    }
    this.#tail = tail;
  }

  /**
   * Finds room for a record of `record` bytes at the head, padding to the wrap if needed;
   * returns the data index of the record, or -1 when the ring is too full. Reads the shared
   * tail only when the cached one says there is no room.
   */
  #room(record: number): number {
    const head = this.#head;
    const index = head >= this.#capacity ? head - this.#capacity : head;
    // Kept small so that the runtime inlines it: room before the end with the cached tail, and
    // the role still this end's (see #checkOwn).
    if (
      record <= this.#capacity - index && record <= this.#capacity - this.#used() &&
      this.#words[this.#claimWord] === this.#ownId
    ) return index;
    return this.#roomSlowly(record);
  }

  /**
   * {@link RingProducer.#room} when the cached tail says there is no room, at the wrap, or when
   * the claim changed.
   */
  #roomSlowly(record: number): number {
    this.#checkOwn();
    const head = this.#head;
    const index = head >= this.#capacity ? head - this.#capacity : head;
    const untilEnd = this.#capacity - index;
    const needed = record <= untilEnd ? record : untilEnd + record;
    if (needed > this.#capacity - this.#used()) {
      this.#refreshTail();
      if (needed > this.#capacity - this.#used()) {
        // A record that needs the start of the data while the end is free: pad to the end now,
        // so the space comes back as soon as the consumer skips it.
        if (record > untilEnd && untilEnd <= this.#capacity - this.#used()) {
          this.#pad(index, untilEnd);
          this.#publishHead(untilEnd);
        }
        // About to wait for room: a padding left unpublished (by a reservation cancelled after
        // it, or a send refused) must reach the consumer first, or its space never comes back.
        if (this.#head !== this.#publishedHead) this.#publishPadding();
        this.#ring.pollPeer(this.#wakeFields);
        return -1;
      }
    }
    if (record <= untilEnd) return index;
    // Too close to the end: a padding record sends the consumer to the start. It is published
    // with the message that follows it.
    this.#pad(index, untilEnd);
    return 0;
  }

  /** Publishes the local head (a padding no message followed) and wakes a sleeping consumer. */
  #publishPadding(): void {
    Atomics.store(this.#words, this.#headIndex, this.#publishedHead = this.#head);
    if (Atomics.load(this.#words, this.#waitingIndex) !== 0) this.#ring.wake(HEAD);
  }

  /** Writes a padding record at `index` and moves the local head past it. */
  #pad(index: number, untilEnd: number): void {
    this.#lengths[index >> 2] = PAD;
    this.#checkWritten();
    const head = this.#head + untilEnd;
    this.#head = head >= this.#twice ? head - this.#twice : head;
  }

  /**
   * Throws `UnexpectedEof` if what was just written went into a page cut off under the ring:
   * before the local head moves past it, so that neither this call nor the closed mark that
   * `close()` writes with the head ever publishes it.
   */
  #checkWritten(): void {
    if (this.#faults[0] !== 0) this.#ring.checkLost();
  }

  /**
   * Throws `InvalidData` once another process took this end's role (see `RingCore.checkOwn`):
   * two producers would write over each other's records, and the consumer read a mix of both.
   * Looked at before anything is written (by `#room`, one load per message, and again before a
   * reservation or a `...With` callback's message is committed), so a producer that never
   * waits learns it at its next message, as one that sleeps does before it sleeps. The head
   * word itself is looked at only then, and at a poll's look at the peer: written over while
   * the role stays this end's (`restoreRingPosition` of a word that is no position), it gets
   * this end's head back at the next message.
   */
  #checkOwn(): void {
    if (this.#words[this.#claimWord] !== this.#ownId) this.#ring.checkOwn(this.#wakeFields);
  }

  /** Publishes the local head and wakes the consumer if it sleeps. */
  #publishHead(record: number): void {
    Atomics.store(this.#words, this.#headIndex, this.#publishedHead = this.#head);
    if (this.#batching) {
      this.#unwoken += record;
      if (this.#unwoken < this.#wakeEvery) return;
      this.#unwoken = 0;
    }
    if (Atomics.load(this.#words, this.#waitingIndex) !== 0) {
      this.#ring.wake(HEAD);
    }
  }

  /** Copies `message`, of `length` bytes (its {@link byteCount}), into the record at `index`. */
  #write(index: number, message: Uint8Array, length: number): void {
    this.#messages.set(message, index);
    this.#commit(index, length);
  }

  /** Writes the record's length and publishes it (and any padding before it). */
  #commit(index: number, length: number): void {
    this.#lengths[index >> 2] = length;
    this.#checkWritten();
    const record = RECORD_HEADER_SIZE + ((length + 7) & ~7);
    const head = this.#head + record;
    this.#head = head >= this.#twice ? head - this.#twice : head;
    this.#publishHead(record);
  }

  #sendBatch(messages: readonly Uint8Array[], start: number): number {
    let sent = 0;
    this.#batching = true;
    this.#unwoken = 0;
    try {
      for (let i = start; i < messages.length; i++) {
        // Read once: what is measured is what is written, whatever the array does meanwhile.
        const message = messages[i];
        const length = byteCount(message);
        // Checked at the call, but a blocking batch comes back here after sleeping, and the
        // caller may have changed the array meanwhile.
        if (length <= 0 || length > this.#maxMessageSize) this.#checkMessage(message, i, i);
        const index = this.#room(RECORD_HEADER_SIZE + ((length + 7) & ~7));
        if (index < 0) break;
        this.#write(index, message, length);
        sent++;
      }
    } finally {
      this.#batching = false;
      // Whatever was published since the last look, a padding record alone included: the
      // batch may be about to sleep for room that only the consumer skipping it can make.
      if (this.#unwoken > 0 && Atomics.load(this.#words, this.#waitingIndex) !== 0) {
        this.#ring.wake(HEAD);
      }
    }
    return sent;
  }

  /** Sleeps until a message of `length` bytes fits; returns where it goes. */
  #waitForRoom(length: number, options: RingWaitOptions, spun: boolean): Promise<number> {
    const record = RECORD_HEADER_SIZE + ((length + 7) & ~7);
    return this.#ring.waitFor(
      () => {
        const index = this.#room(record);
        return index < 0 ? undefined : index;
      },
      this.#wakeFields,
      options,
      spun,
    );
  }

  #reservation(index: number, length: number): RingReservation {
    const buffer = this.#ring.memory.lend(this.#data + index + RECORD_HEADER_SIZE, length);
    this.#ring.held = buffer;
    const finish = (): void => {
      if (this.#ring.held !== buffer) {
        this.#ring.check();
        throw failure(
          Deno.errors.BadResource,
          "finish a reservation in the ring in",
          this.#ring.name,
          "it was committed or cancelled already",
        );
      }
      this.#ring.held = undefined;
      this.#ring.memory.revoke(buffer);
    };
    return {
      bytes: new Uint8Array(buffer),
      commit: (used = length): void => {
        if (!Number.isSafeInteger(used) || used < 0 || used > length) {
          this.#ring.check(); // the reservation itself holds the end: no Busy for it
          throw failure(
            RangeError,
            "commit into the ring in",
            this.#ring.name,
            `${shown(used)} bytes is not a whole number up to the reservation's ${length}`,
          );
        }
        finish();
        this.#checkOwn();
        this.#commit(index, used);
      },
      cancel: finish,
    };
  }
}

/**
 * Attaches the producer to the ring in `region` (written by `initRing`). One producer at a
 * time: a live one's pid is named in a `Deno.errors.Busy`.
 *
 * @param region The region the ring was written into.
 * @param [options={}] Where the ring starts, and how this end waits.
 * @example
 * ```ts
 * import {
 *   createMemfdRegion,
 *   initRing,
 *   openRingProducer,
 *   ringRegionSize,
 * } from "@mmap-ipc/mmap-ipc";
 *
 * using region = createMemfdRegion({ size: ringRegionSize(1 << 16) });
 * initRing(region);
 * using producer = openRingProducer(region);
 * await producer.send(new TextEncoder().encode("hello"));
 * ```
 */
export function openRingProducer(region: SharedRegion, options: RingOptions = {}): RingProducer {
  options ??= {}; // null from JavaScript
  const capacity = readCapacity(region, options.offset ?? 0, "open the ring producer in");
  return new RingProducer(constructing, region, capacity, options);
}

/** How a batch's error says what of the batch went before the message it is about. */
function went(sent: number | undefined): string {
  if (sent === undefined) return "";
  return sent === 0 ? "; nothing of the batch was sent" : `; ${sent} of the batch went before it`;
}
