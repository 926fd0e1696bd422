/**
 * Why a byte array the caller passed cannot be read or written although it is one: its buffer
 * was moved away (`transfer()`, `postMessage` with a transfer list) or resized from under it.
 * Such an array has length 0, so callers need to ask only then, off their hot paths.
 *
 * @module
 */

const EMPTY = new Uint8Array(0);

/**
 * What is wrong with `bytes` (detached, or outside its resized buffer), to follow "is"; undefined
 * when nothing is.
 */
export function unusableBytes(bytes: ArrayBufferView): string | undefined {
  if (!ArrayBuffer.isView(bytes)) {
    return `${bytes === null ? "null" : typeof bytes}, not a Uint8Array`;
  }
  if ((bytes.buffer as ArrayBuffer).detached) {
    return "detached: its buffer was transferred away";
  }
  try {
    EMPTY.set(bytes as Uint8Array);
  } catch {
    return "out of bounds: its buffer was resized to end before it";
  }
  return undefined;
}
