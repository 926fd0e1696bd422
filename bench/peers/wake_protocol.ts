/**
 * The shared words of the wake-up benchmarks, in a bare memfd (`ffi/raw_futex.ts`) beside the
 * memory being measured: the writer stamps CLOCK_MONOTONIC before each change, and the reader
 * counts the changes it has taken, so the writer knows when the reader is back asleep.
 *
 * @module
 */

import { monotonicNanos } from "../../ffi/posix.ts";

/** Bytes of the control memory. */
export const CONTROL_SIZE = 4096;
/** The futex word the raw readers sleep on (a 32-bit word index). */
export const SEQUENCE_WORD = 0;
/** How many changes the reader has taken (a 32-bit word index, its own cache line). */
export const SEEN_WORD = 16;
/** The writer's stamp (a 64-bit word index, its own cache line). */
const STAMP_LONG_WORD = 16;

/** Stamps the time just before a change. */
export function stamp(longWords: BigInt64Array): void {
  Atomics.store(longWords, STAMP_LONG_WORD, monotonicNanos());
}

/** Nanoseconds from the writer's last stamp to now. */
export function sinceStamp(longWords: BigInt64Array): number {
  return Number(monotonicNanos() - Atomics.load(longWords, STAMP_LONG_WORD));
}

/** What a wake-up reader prints at the end, as one JSON line. */
export interface WakeReport {
  /** One latency per change, in nanoseconds. */
  latenciesNs: number[];
  /** Nanoseconds spent spinning before sleeping, over all changes (spinning readers only). */
  spinNs?: number;
}
