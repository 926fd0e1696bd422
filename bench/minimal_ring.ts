/**
 * The smallest correct single-producer single-consumer ring we could write in Deno, over a bare
 * memfd mapping (`ffi/raw_futex.ts`): the floor the library's ring is held against in the same
 * run. Free-running 32-bit positions with a power-of-two mask; each record is a 4-byte length
 * and the payload, padded to 4 bytes, copied in up to two pieces where it wraps; the consumer
 * copies into the caller's buffer; each side caches the other's position and reads it again
 * only when the ring looks full or empty; a side sleeps on a futex only when it must, after a
 * short spin, and the other side wakes it only while its sleeping flag is set (the sleeper
 * clears its own flag, as the library's ring does); no sleep lasts more than
 * {@link SLEEP_SLICE_MS}. No close or peer-death protocol: the benchmark's ends know how many
 * messages to expect.
 *
 * Layout (bytes): 0 head (written by the producer), 64 tail (consumer), 128 consumer asleep,
 * 192 producer asleep, data from 256.
 *
 * @module
 */

import type { RawFutexWord, RawSharedMemory } from "../ffi/raw_futex.ts";

const HEAD = 0;
const TAIL = 16;
const CONSUMER_ASLEEP = 32;
const PRODUCER_ASLEEP = 48;
const DATA_OFFSET = 256;
/** Checks of the other side's position before sleeping, as many as the library's default spin. */
const SPIN_CHECKS = 1000;
/**
 * The longest sleep before looking again: a net under a protocol that once failed. When the
 * waker cleared the sleeper's flag itself (one wake-up per sleep), a wake-up was lost under load
 * in 2 of 21 runs (100,000 messages of 4 KiB beside spinning processes): the sleeper stayed in
 * FUTEX_WAIT on a value the other side had moved past. With the flag left to the sleeper, as
 * now, none was lost in 70 runs; why the other way failed is not understood. The library's ring
 * never lost one with no net at all (tests/ring_test.ts, "no wake-up is lost").
 */
const SLEEP_SLICE_MS = 100;

/** Bytes of shared memory a minimal ring of `capacity` bytes needs. */
export function minimalRingSize(capacity: number): number {
  if (!Number.isInteger(Math.log2(capacity)) || capacity < 64 || capacity > 2 ** 30) {
    throw new RangeError(`Ring capacity ${capacity} is not a power of two from 64 B to 1 GiB`);
  }
  return DATA_OFFSET + capacity;
}

function recordBytes(length: number): number {
  return (length + 7) & ~3;
}

class RingView {
  readonly words: Int32Array;
  readonly data: Uint8Array;
  readonly lengths: Int32Array;
  readonly capacity: number;
  readonly mask: number;

  constructor(memory: RawSharedMemory) {
    this.words = memory.words;
    this.capacity = memory.size - DATA_OFFSET;
    minimalRingSize(this.capacity);
    this.mask = this.capacity - 1;
    this.data = new Uint8Array(memory.buffer, DATA_OFFSET, this.capacity);
    this.lengths = new Int32Array(memory.buffer, DATA_OFFSET, this.capacity >> 2);
  }
}

/** The producing end of a minimal ring. */
export class MinimalProducer {
  readonly #ring: RingView;
  readonly #tailWord: RawFutexWord;
  readonly #headWord: RawFutexWord;
  #head: number;
  #tail: number;

  /** The producing end of the ring in `memory` (one producer per ring). */
  constructor(memory: RawSharedMemory) {
    this.#ring = new RingView(memory);
    this.#headWord = memory.word(HEAD);
    this.#tailWord = memory.word(TAIL);
    this.#head = Atomics.load(this.#ring.words, HEAD);
    this.#tail = Atomics.load(this.#ring.words, TAIL);
  }

  /** Copies `message` into the ring; false when there is no room now. */
  trySend(message: Uint8Array): boolean {
    const ring = this.#ring;
    const length = message.length;
    const need = recordBytes(length);
    if (need > ring.capacity) throw new RangeError(`A ${length}-byte message cannot fit`);
    if (((this.#head - this.#tail) | 0) + need > ring.capacity) {
      this.#tail = Atomics.load(ring.words, TAIL);
      if (((this.#head - this.#tail) | 0) + need > ring.capacity) return false;
    }
    const at = this.#head & ring.mask;
    ring.lengths[at >> 2] = length;
    const start = (at + 4) & ring.mask;
    const first = ring.capacity - start;
    if (length <= first) {
      ring.data.set(message, start);
    } else {
      ring.data.set(message.subarray(0, first), start);
      ring.data.set(message.subarray(first), 0);
    }
    this.#head = (this.#head + need) | 0;
    Atomics.store(ring.words, HEAD, this.#head);
    if (Atomics.load(ring.words, CONSUMER_ASLEEP) !== 0) this.#headWord.wake();
    return true;
  }

  /** {@link MinimalProducer.trySend}, sleeping on the consumer's position while full. */
  async send(message: Uint8Array): Promise<void> {
    const words = this.#ring.words;
    while (!this.trySend(message)) {
      const seen = this.#tail;
      let spins = 0;
      while (Atomics.load(words, TAIL) === seen && spins++ < SPIN_CHECKS);
      if (spins <= SPIN_CHECKS) continue;
      Atomics.store(words, PRODUCER_ASLEEP, 1);
      if (Atomics.load(words, TAIL) === seen) await this.#tailWord.wait(seen, SLEEP_SLICE_MS);
      Atomics.store(words, PRODUCER_ASLEEP, 0);
    }
  }
}

/** The consuming end of a minimal ring. */
export class MinimalConsumer {
  readonly #ring: RingView;
  readonly #tailWord: RawFutexWord;
  readonly #headWord: RawFutexWord;
  #head: number;
  #tail: number;

  /** The consuming end of the ring in `memory` (one consumer per ring). */
  constructor(memory: RawSharedMemory) {
    this.#ring = new RingView(memory);
    this.#headWord = memory.word(HEAD);
    this.#tailWord = memory.word(TAIL);
    this.#head = Atomics.load(this.#ring.words, HEAD);
    this.#tail = Atomics.load(this.#ring.words, TAIL);
  }

  /** Copies the next message into `buffer` and returns its length; -1 when the ring is empty. */
  tryReceiveInto(buffer: Uint8Array): number {
    const ring = this.#ring;
    if (this.#tail === this.#head) {
      this.#head = Atomics.load(ring.words, HEAD);
      if (this.#tail === this.#head) return -1;
    }
    const at = this.#tail & ring.mask;
    const length = ring.lengths[at >> 2];
    if (length > buffer.length) {
      throw new RangeError(`A ${length}-byte message does not fit a ${buffer.length}-byte buffer`);
    }
    const start = (at + 4) & ring.mask;
    const first = ring.capacity - start;
    if (length <= first) {
      buffer.set(ring.data.subarray(start, start + length));
    } else {
      buffer.set(ring.data.subarray(start), 0);
      buffer.set(ring.data.subarray(0, length - first), first);
    }
    this.#tail = (this.#tail + recordBytes(length)) | 0;
    Atomics.store(ring.words, TAIL, this.#tail);
    if (Atomics.load(ring.words, PRODUCER_ASLEEP) !== 0) this.#tailWord.wake();
    return length;
  }

  /** {@link MinimalConsumer.tryReceiveInto}, sleeping on the producer's position while empty. */
  async receiveInto(buffer: Uint8Array): Promise<number> {
    const words = this.#ring.words;
    for (;;) {
      const length = this.tryReceiveInto(buffer);
      if (length >= 0) return length;
      const seen = this.#tail;
      let spins = 0;
      while (Atomics.load(words, HEAD) === seen && spins++ < SPIN_CHECKS);
      if (spins <= SPIN_CHECKS) continue;
      Atomics.store(words, CONSUMER_ASLEEP, 1);
      if (Atomics.load(words, HEAD) === seen) await this.#headWord.wait(seen, SLEEP_SLICE_MS);
      Atomics.store(words, CONSUMER_ASLEEP, 0);
    }
  }
}
