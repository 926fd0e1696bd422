/**
 * MQTT packet sizes the bridge checks itself: the length a broker declares for each packet it
 * sends (read from the fixed header, before the MQTT library buffers the packet whole), and the
 * length of a PUBLISH the bridge is about to send (against the broker's Maximum Packet Size).
 *
 * @module
 */

/** A packet the broker began to send that is longer than the bridge takes. */
export interface Oversized {
  /** The packet type (the high 4 bits of its first byte; 3 is PUBLISH). */
  type: number;
  /** Its whole length as declared: fixed header and remaining length. */
  size: number;
}

/**
 * Follows the packets in the bytes a broker sends, reading only each fixed header (type byte and
 * remaining length) and skipping the rest, so that a packet longer than `max` is seen as soon as
 * its header arrives: the MQTT library would buffer it whole (256 MiB at most) before its own
 * check. A malformed length is left to the library's parser, which says what is wrong.
 */
export class PacketSizeGuard {
  readonly #max: number;
  /** Bytes of the current packet's body still to skip. */
  #skip = 0;
  /** Whether the type byte of the current packet was read and its length is being read. */
  #inHeader = false;
  #type = 0;
  #length = 0;
  #lengthBytes = 0;
  /** Set once a malformed length was seen: the parser fails the connection, nothing to follow. */
  #lost = false;

  /** Guards against packets longer than `max` bytes in all. */
  constructor(max: number) {
    this.#max = max;
  }

  /** Takes the next bytes received; returns the first packet in them that is too long, if any. */
  feed(chunk: Uint8Array): Oversized | undefined {
    for (let at = 0; at < chunk.length && !this.#lost;) {
      if (this.#skip > 0) {
        const skipped = Math.min(this.#skip, chunk.length - at);
        this.#skip -= skipped;
        at += skipped;
        continue;
      }
      const byte = chunk[at++];
      if (!this.#inHeader) {
        this.#inHeader = true;
        this.#type = byte >> 4;
        this.#length = 0;
        this.#lengthBytes = 0;
        continue;
      }
      // 7 bits at a time, least significant first; at most 4 bytes.
      this.#length += (byte & 0x7f) * 128 ** this.#lengthBytes++;
      if (byte & 0x80) {
        if (this.#lengthBytes === 4) this.#lost = true;
        continue;
      }
      this.#inHeader = false;
      const size = 1 + this.#lengthBytes + this.#length;
      if (size > this.#max) return { type: this.#type, size };
      this.#skip = this.#length;
    }
    return undefined;
  }
}

/** How many bytes the remaining length `length` takes in a fixed header (1 to 4). */
function lengthBytes(length: number): number {
  return length < 128 ? 1 : length < 16_384 ? 2 : length < 2_097_152 ? 3 : 4;
}

/**
 * The whole length of the PUBLISH the MQTT library writes for `payload` (UTF-8) on `topic`: MQTT
 * 5's with no properties (one byte for their length), or 3.1.1's.
 */
export function publishSize(topic: string, payload: string, qos: 0 | 1, v5: boolean): number {
  const encoder = new TextEncoder();
  const remaining = 2 + encoder.encode(topic).length + (qos > 0 ? 2 : 0) + (v5 ? 1 : 0) +
    encoder.encode(payload).length;
  return 1 + lengthBytes(remaining) + remaining;
}
