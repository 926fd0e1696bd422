/**
 * The state's text form, byte for byte what the original C programs use: the button writes
 * `sprintf(mem, "%d\n", state)` (so `"1\n\0"`), the LED reads `sscanf(mem, "%d")`. Both
 * functions work in place on bytes (shared memory or a buffer read from a file) and allocate
 * nothing, because they run on every write and every read.
 *
 * @module
 */

/** Bytes the text may take, NUL included: an `int` with sign, newline and NUL fits in 13. */
export const STATE_TEXT_BYTES = 32;

const MINUS = 0x2d;
const ZERO = 0x30;
const NEWLINE = 0x0a;

/**
 * Writes `value` (a 32-bit integer) as `"%d\n\0"` at `at`; returns the bytes written, NUL
 * included. The stores are plain: in shared memory the caller brackets them with sequentially
 * consistent operations (the state cell's sequence lock does), which keeps them in order on
 * weakly ordered CPUs too.
 */
export function formatState(bytes: Uint8Array, at: number, value: number): number {
  const start = at;
  let rest = value;
  if (rest < 0) {
    bytes[at++] = MINUS;
    rest = -rest;
  }
  let divisor = 1;
  while (divisor * 10 <= rest) divisor *= 10;
  for (; divisor >= 1; divisor /= 10) bytes[at++] = ZERO + Math.floor(rest / divisor) % 10;
  bytes[at++] = NEWLINE;
  bytes[at++] = 0;
  return at - start;
}

/**
 * Reads the value the way `sscanf("%d")` does, from `at` up to `end`: leading white space, an
 * optional sign, digits. Anything unparsable reads as 0, as the original C LED reads an all-zero
 * file; values beyond 32 bits are clamped. It uses nothing outside its own body, so that a
 * follower Worker can run it from its source text.
 */
export function parseState(bytes: Uint8Array, at: number, end: number): number {
  let i = at;
  let byte = i < end ? Atomics.load(bytes, i) : 0;
  // White space: space, \t, \n, \v, \f, \r.
  while (i < end - 1 && (byte === 0x20 || (byte >= 0x09 && byte <= 0x0d))) {
    byte = Atomics.load(bytes, ++i);
  }
  let sign = 1;
  if (byte === 0x2d || byte === 0x2b) {
    if (byte === 0x2d) sign = -1;
    byte = ++i < end ? Atomics.load(bytes, i) : 0;
  }
  let value = 0;
  let digits = 0;
  while (i < end && byte >= 0x30 && byte <= 0x39) {
    value = Math.min(value * 10 + (byte - 0x30), 2147483648);
    digits++;
    byte = ++i < end ? Atomics.load(bytes, i) : 0;
  }
  // `| 0`: "-0" is 0, as in C (JavaScript's -0 printed as 0 but was not `Object.is` 0).
  return digits === 0 ? 0 : Math.max(-2147483648, Math.min(2147483647, sign * value)) | 0;
}

/** Whether `value` is a 32-bit integer, the range of the original's `int`. */
export function isStateValue(value: number): boolean {
  // A number that survives a 32-bit conversion unchanged; the state cell's write path tests
  // exactly this in place, without the call.
  return typeof value === "number" && (value | 0) === value;
}
