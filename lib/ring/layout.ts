/**
 * The ring's layout in shared memory, its constants, and the checks of a header.
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
 * cross the end of the data is placed at its start, after a padding record. Each hot word sits
 * on its own cache line.
 *
 * @module
 */

import { claimIsLive, describeHolder, readClaim } from "../claim.ts";
import { failure, shown } from "../errors.ts";
import { describeKind } from "../byte_arrays.ts";
import { memoryOf, type SharedRegion } from "../region.ts";

/** The magic number at the start of a ring: the ASCII letters `RING`. */
export const RING_MAGIC = 0x474e4952;
/** The layout version this library reads and writes. */
export const RING_VERSION = 1;
/** Bytes of header before a ring's data. */
export const RING_HEADER_SIZE = 192;
/** Bytes of header before each message. */
export const RECORD_HEADER_SIZE = 8;
/** The largest capacity (1 GiB): positions modulo twice the capacity must fit in 31 bits. */
export const RING_MAX_CAPACITY = 2 ** 30;

export const MAGIC = 0;
export const VERSION = 4;
export const CAPACITY = 8;
export const PRODUCER = 16;
export const CONSUMER = 24;
export const HEAD = 64;
export const CONSUMER_WAITING = 68;
export const TAIL = 128;
export const PRODUCER_WAITING = 132;
/** Set in a position word once its end closed. */
export const CLOSED = 0x8000_0000;
/** The position bits of a position word. */
export const POSITION = 0x7fff_ffff;
/** The length a padding record carries: "skip to the start of the data". */
export const PAD = -1;

/**
 * How many bytes a region needs for a ring of `capacity` data bytes at offset 0. Throws
 * `RangeError` for a capacity no ring can have (see {@link InitRingOptions.capacity}).
 *
 * @example
 * ```ts
 * import { ringRegionSize } from "@mmap-ipc/mmap-ipc";
 *
 * console.log(ringRegionSize(1 << 20)); // 1 MiB of data plus the header
 * ```
 */
export function ringRegionSize(capacity: number): number {
  // The check initRing() makes: a size made from a capacity it would refuse helps no one.
  checkCapacity(capacity);
  return RING_HEADER_SIZE + capacity;
}

/** Options for {@link initRing}. */
export interface InitRingOptions {
  /**
   * Where the ring starts in the region, a multiple of 64.
   *
   * @default {0}
   */
  offset?: number;
  /** Data bytes, a positive multiple of 8. Default: the rest of the region. */
  capacity?: number;
}

/** Throws unless `offset` is a place a ring may start. */
export function checkOffset(offset: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % 64 !== 0) {
    throw new RangeError(`Ring offset ${shown(offset)} is not a non-negative multiple of 64`);
  }
}

/**
 * Writes a fresh, empty ring header into `region`, whatever was there: the creator of the
 * region calls this once before producer and consumer attach. Returns the capacity. A ring there
 * whose producer or consumer a live process (or Worker) holds is refused with `Busy`, naming
 * the pid (and the Worker's thread).
 *
 * @param region A region with room for the header and the data: see {@link ringRegionSize}.
 * @param [options={}] Where the ring starts and how many data bytes it holds.
 * @example
 * ```ts
 * import { createMemfdRegion, initRing, ringRegionSize } from "@mmap-ipc/mmap-ipc";
 *
 * using region = createMemfdRegion({ size: ringRegionSize(4096) });
 * console.log(initRing(region)); // 4096
 * ```
 */
export function initRing(region: SharedRegion, options: InitRingOptions = {}): number {
  memoryOf(region); // a TypeError for anything but a region, BadResource for a closed one
  options ??= {}; // null from JavaScript
  const offset = options.offset ?? 0;
  checkOffset(offset);
  // The rest of a region that has no room left past the offset is no capacity to speak of.
  if (options.capacity === undefined) checkRoom(region, offset, "create a ring in");
  const capacity = options.capacity ??
    Math.floor((region.size - offset - RING_HEADER_SIZE) / 8) * 8;
  checkCapacity(capacity);
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
  refuseLiveRing(region, offset);
  region.write(offset, new Uint8Array(RING_HEADER_SIZE));
  region.storeInt32(offset + VERSION, RING_VERSION);
  region.storeInt32(offset + CAPACITY, capacity);
  region.storeInt32(offset + MAGIC, RING_MAGIC);
  return capacity;
}

/**
 * Throws `Busy` if a ring at `offset` has an end a live process holds: writing a fresh header
 * under it would wipe its claims, let a second producer in beside the first, and lose what the
 * first sends.
 */
function refuseLiveRing(region: SharedRegion, offset: number): void {
  if (region.loadInt32(offset + MAGIC) >>> 0 !== RING_MAGIC) return;
  const memory = memoryOf(region);
  for (const [field, end] of [[PRODUCER, "producer"], [CONSUMER, "consumer"]] as const) {
    const claim = readClaim(memory, offset + field);
    if (!claimIsLive(claim)) continue;
    throw failure(
      Deno.errors.Busy,
      "create a ring in",
      region.name,
      `a ring there is in use: ${describeHolder(claim)} holds its ${end}; close its ends first`,
    );
  }
}

/** Options for {@link restoreRingHeader}. */
export interface RestoreRingOptions {
  /**
   * Where the ring starts in the region, a multiple of 64.
   *
   * @default {0}
   */
  offset?: number;
  /** The ring's data bytes, as {@link initRing} made it: a damaged header cannot say. */
  capacity: number;
}

/**
 * Writes the fixed words of the ring header at `offset` of `region` anew when they are not what
 * {@link initRing} wrote for a ring of `capacity` bytes: the layout version and the capacity,
 * then the magic, each with one atomic store. The positions, the claims and the messages are left
 * as they are, so ends open on the ring carry on and new ends can open it again. Returns what was
 * wrong, or `undefined` when nothing was. Only for memory you own, whose ring you made: whatever
 * another program keeps there is overwritten.
 *
 * @example
 * ```ts
 * import { createMemfdRegion, initRing, openRingConsumer, restoreRingHeader } from "@mmap-ipc/mmap-ipc";
 *
 * using region = createMemfdRegion({ size: 4096 });
 * const capacity = initRing(region);
 * region.storeInt32(0, 0x58585858);
 * console.log(restoreRingHeader(region, { capacity })); // found 0x58585858 where the magic ...
 * using consumer = openRingConsumer(region);
 * console.log(consumer.tryReceive()); // undefined: nothing there yet
 * ```
 */
export function restoreRingHeader(
  region: SharedRegion,
  options: RestoreRingOptions,
): string | undefined {
  checkOptions(options, "restoreRingHeader", "{ capacity }");
  const { offset = 0, capacity } = options;
  checkOffset(offset);
  checkCapacity(capacity);
  if (offset + RING_HEADER_SIZE + capacity > region.size) {
    throw new RangeError(
      `A ring of ${capacity} bytes at offset ${offset} is not in ${region.name}`,
    );
  }
  const magic = region.loadInt32(offset + MAGIC) >>> 0;
  const version = region.loadInt32(offset + VERSION);
  const claimed = region.loadInt32(offset + CAPACITY);
  const problem = magic !== RING_MAGIC
    ? `found 0x${magic.toString(16).padStart(8, "0")} where the magic "RING" belongs`
    : version !== RING_VERSION
    ? `its layout version is ${version}; this library reads ${RING_VERSION}`
    : claimed !== capacity
    ? `its header claims a capacity of ${claimed} bytes; the ring has ${capacity}`
    : undefined;
  if (problem === undefined) return undefined;
  region.storeInt32(offset + VERSION, RING_VERSION);
  region.storeInt32(offset + CAPACITY, capacity);
  // Last: an end opened meanwhile sees the right magic only with the rest in place.
  region.storeInt32(offset + MAGIC, RING_MAGIC);
  return problem;
}

/** Options for {@link restoreRingPosition}. */
export interface RestoreRingPositionOptions extends RestoreRingOptions {
  /** The end whose position to set: one no process holds now. */
  end: "producer" | "consumer";
}

/**
 * Sets the position of the ring's `end` anew when something wrote over it: a position outside
 * the ring or between two records, or one out of step with the other end's (a consumer ahead of
 * the producer, or more than the capacity behind it). Either made the end fail with
 * `InvalidData` each time it opened or read. The end then takes the other end's position, so
 * the ring reads as empty: whatever was in it is dropped, as it cannot be told from what was
 * written over it. A live consumer that had already seen the producer's position may still hand
 * out what was there; the producer started after it then finds the consumer ahead of it and
 * fails once, and this mends that too.
 *
 * The other end's position, if it is not one of the ring's either, is set to this end's: an end
 * never reads its own position word back, so one left written over would fail this end at every
 * open, however long its holder lives. That assumes the ring was empty, as it was if the other
 * end is idle; a live holder that goes on moving writes its own position back at its next step
 * (one asleep, or polling a full or empty ring, fails with `InvalidData` at its next liveness
 * check instead: it looks at its own word there).
 *
 * A closed mark (bit 31) is kept on a position that was only out of step; on one written over it
 * is cleared, as it is garbage too: a consumer then waits for a producer rather than ending.
 * The claims and the messages are left as they are.
 *
 * Only for memory you own, whose ring you made, and for an `end` no process holds (its holder
 * died or closed it): a live holder is refused with `Busy`, as it keeps its position to itself.
 * The header must be sound (see {@link restoreRingHeader}); one that is not is `InvalidData`.
 * Returns what was wrong, or `undefined` when nothing was.
 *
 * @example
 * ```ts
 * import { createMemfdRegion, initRing, openRingConsumer, restoreRingPosition } from "@mmap-ipc/mmap-ipc";
 *
 * using region = createMemfdRegion({ size: 4096 });
 * const capacity = initRing(region);
 * region.storeInt32(128, 0x58585858); // the consumer's position
 * console.log(restoreRingPosition(region, { capacity, end: "consumer" })); // its consumer position ...
 * using consumer = openRingConsumer(region);
 * console.log(consumer.tryReceive()); // undefined: nothing there yet
 * ```
 */
export function restoreRingPosition(
  region: SharedRegion,
  options: RestoreRingPositionOptions,
): string | undefined {
  checkOptions(options, "restoreRingPosition", "{ capacity, end }");
  const { offset = 0, capacity, end } = options;
  checkOffset(offset);
  checkCapacity(capacity);
  if (end !== "producer" && end !== "consumer") {
    throw new TypeError(`A ring's end is "producer" or "consumer", not ${JSON.stringify(end)}`);
  }
  const action = "restore a ring position in";
  const found = readCapacity(region, offset, action);
  if (found !== capacity) {
    throw failure(
      Deno.errors.InvalidData,
      action,
      region.name,
      `its header claims a capacity of ${found} bytes; the ring has ${capacity}`,
    );
  }
  const producer = end === "producer";
  const [own, other, claim] = producer ? [HEAD, TAIL, PRODUCER] : [TAIL, HEAD, CONSUMER];
  const holder = readClaim(memoryOf(region), offset + claim);
  if (claimIsLive(holder)) {
    throw failure(
      Deno.errors.Busy,
      action,
      region.name,
      `${describeHolder(holder)} holds its ${end}`,
    );
  }
  const twice = 2 * capacity;
  const sound = (at: number): boolean => at < twice && at % 8 === 0;
  const unsound = (which: string, at: number): string =>
    `its ${which} position ${at} is not one of the ring's (multiples of 8 below ${twice})`;
  const otherEnd = producer ? "consumer" : "producer";
  const word = region.loadInt32(offset + own);
  const position = word & POSITION;
  const otherPosition = region.loadInt32(offset + other) & POSITION;
  const problems: string[] = [];
  let next = position;
  if (!sound(position)) {
    problems.push(unsound(end, position));
    next = sound(otherPosition) ? otherPosition : 0;
  } else if (sound(otherPosition)) {
    const [head, tail] = producer ? [position, otherPosition] : [otherPosition, position];
    if (!recordsLead(region, offset, capacity, tail, head)) {
      problems.push(
        `its ${end} position ${position} is out of step with the ${otherEnd}'s ${otherPosition}: the records from the consumer's do not lead to the producer's`,
      );
      next = otherPosition;
    }
  }
  if (!sound(otherPosition)) {
    problems.push(`${unsound(otherEnd, otherPosition)}; set to the ${end}'s`);
    region.storeInt32(offset + other, next); // its closed mark was garbage too
  }
  if (problems.length === 0) return undefined;
  // An unsound position always moves; only a sound one's closed mark means anything.
  if (next !== position) {
    region.storeInt32(offset + own, (sound(position) ? word & CLOSED : 0) | next);
  }
  return problems.join("; ");
}

/**
 * Whether the records from position `tail` lead to position `head` exactly, each one whole, as
 * a consumer reads them: otherwise it would find a corrupted record, every time it opened.
 */
function recordsLead(
  region: SharedRegion,
  offset: number,
  capacity: number,
  tail: number,
  head: number,
): boolean {
  const twice = 2 * capacity;
  let used = (head - tail + twice) % twice;
  if (used > capacity) return false;
  for (let at = tail; used > 0;) {
    const index = at >= capacity ? at - capacity : at;
    const untilEnd = capacity - index;
    const length = region.loadInt32(offset + RING_HEADER_SIZE + index);
    if (used < RECORD_HEADER_SIZE || length < PAD || length > capacity) return false;
    const record = length === PAD ? untilEnd : RECORD_HEADER_SIZE + ((length + 7) & ~7);
    if (record > used || record > untilEnd) return false;
    at = (at + record) % twice;
    used -= record;
  }
  return true;
}

/** Throws a `RangeError` unless the region has room for a ring's header and 8 bytes at `offset`. */
function checkRoom(region: SharedRegion, offset: number, action: string): void {
  if (offset + RING_HEADER_SIZE + 8 > region.size) {
    throw failure(
      RangeError,
      action,
      region.name,
      `the region has ${region.size} bytes, too few for a ring at offset ${offset}`,
    );
  }
}

/** Throws a `RangeError` unless `capacity` is one {@link initRing} can make. */
function checkCapacity(capacity: number): void {
  if (
    !Number.isSafeInteger(capacity) || capacity < 8 || capacity % 8 !== 0 ||
    capacity > RING_MAX_CAPACITY
  ) {
    throw new RangeError(
      `Ring capacity ${
        shown(capacity)
      } must be a multiple of 8 from 8 to ${RING_MAX_CAPACITY} bytes (any such size works; it need not be a power of two)`,
    );
  }
}

/** Reads the header at `offset` and checks it, or throws `InvalidData` saying what it found. */
export function readCapacity(region: SharedRegion, offset: number, action: string): number {
  memoryOf(region); // a TypeError for anything but a region, BadResource for a closed one
  checkOffset(offset);
  checkRoom(region, offset, action);
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

/** Throws a `TypeError` unless the options `call` cannot do without (`needed`) are an object. */
function checkOptions(options: unknown, call: string, needed: string): void {
  if (typeof options === "object" && options !== null) return;
  throw new TypeError(
    `${call}() needs its options, ${needed} at least, not ${describeKind(options)}`,
  );
}
