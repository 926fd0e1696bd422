/**
 * What the library takes from a byte array the caller passed: its real length, from the
 * array itself rather than from a `length` property a subclass or an own property can make say
 * anything (a send sized by a lying length would write past its record), and why an array of
 * length 0 cannot be used: its buffer was moved away (`transfer()`, `postMessage` with a transfer
 * list) or resized from under it.
 *
 * @module
 */

const EMPTY = new Uint8Array(0);

/** `null`, `undefined`, `a string`, `a Float64Array`, `an Array`: for a message. */
export function describeKind(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  const kind = typeof value === "object"
    ? Object.prototype.toString.call(value).slice(8, -1)
    : typeof value;
  // "a Uint8Array", "an Int8Array": by the sound, and a leading U reads "you".
  return `${/^[aeioAEIO]/.test(kind) ? "an" : "a"} ${kind}`;
}

/** %TypedArray%.prototype's `length` getter: the length from the array's own internal slot. */
const typedArrayLength = Object.getOwnPropertyDescriptor(
  Object.getPrototypeOf(Uint8Array.prototype),
  "length",
)?.get as (this: Uint8Array) => number;

/**
 * The number of bytes `bytes` holds, read from the array itself; -1 when it is not a
 * `Uint8Array` (or a subclass of it) at all.
 */
export function byteCount(bytes: unknown): number {
  if (!(bytes instanceof Uint8Array)) return -1;
  try {
    return typedArrayLength.call(bytes);
  } catch {
    return -1; // an object made to look like one (its prototype set by hand)
  }
}

/**
 * What is wrong with `bytes` (no `Uint8Array`, detached, or outside its resized buffer), to
 * follow "is"; undefined when nothing is. Ask it for arrays of length 0 or -1 (see
 * {@link byteCount}): only those can be so.
 */
export function unusableBytes(bytes: unknown): string | undefined {
  if (byteCount(bytes) < 0) return `${describeKind(bytes)}, not a Uint8Array`;
  const array = bytes as Uint8Array;
  if ((array.buffer as ArrayBuffer).detached) {
    return "detached: its buffer was transferred away";
  }
  try {
    EMPTY.set(array);
  } catch {
    return "out of bounds: its buffer was resized to end before it";
  }
  return undefined;
}
