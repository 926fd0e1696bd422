/**
 * `struct timespec` for futex timeouts, in one place: the relative one of FUTEX_WAIT and the
 * absolute CLOCK_MONOTONIC one of futex_waitv.
 *
 * @module
 */

import { monotonicNanos } from "./posix.ts";

/** The longest timespec made (about 35 years): longer ones overflowed into invalid values. */
const MAX_TIMESPEC_MS = 2 ** 40;

/** `milliseconds` clamped: negative or NaN counts as 0, anything from 2^40 on (`Infinity` too) as 2^40. */
function clamp(milliseconds: number): number {
  return milliseconds > 0 ? Math.min(milliseconds, MAX_TIMESPEC_MS) : 0;
}

/**
 * Fills `into` with a struct timespec for `milliseconds` from now (clamped, see above). Out of
 * range, futex(2) fails at once with EINVAL, and a waiting loop would spin.
 */
export function timespec<T extends BigInt64Array>(milliseconds: number, into: T): T {
  const ms = clamp(milliseconds);
  const seconds = Math.floor(ms / 1000);
  into[0] = BigInt(seconds);
  into[1] = BigInt(Math.min(999_999_999, Math.floor((ms - seconds * 1000) * 1e6)));
  return into;
}

/** Fills `into` with CLOCK_MONOTONIC `milliseconds` from now (clamped), rounded up to the ns. */
export function monotonicTimespec<T extends BigInt64Array>(milliseconds: number, into: T): T {
  const at = monotonicNanos() + BigInt(Math.ceil(clamp(milliseconds) * 1e6));
  into[0] = at / 1_000_000_000n;
  into[1] = at % 1_000_000_000n;
  return into;
}
