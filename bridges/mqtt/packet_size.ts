/**
 * MQTT packet sizes the bridge checks itself: the length a broker declares for each packet it
 * sends (read from the fixed header, before the MQTT library buffers the packet whole; a message
 * too long is left out unread), and the length of a PUBLISH the bridge is about to send (against
 * the broker's Maximum Packet Size).
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

/** A PUBLISH longer than the bridge takes, left out of the bytes it reads; see {@link PacketFilter}. */
export interface SkippedPublish {
  /** Its whole length as declared: fixed header and remaining length. */
  size: number;
  /** Its topic (at most its first {@link TOPIC_KEPT} bytes, as text). */
  topic: string;
  /** Its QoS: 1 needs a PUBACK, which the bridge then sends itself. */
  qos: 0 | 1;
  /** Its packet id (QoS 1), or 0. */
  packetId: number;
}

/** What {@link PacketFilter.feed} makes of some bytes. */
export interface Filtered {
  /** The bytes to hand to the MQTT library, in order (none, or pieces of the chunk). */
  pass: Uint8Array[];
  /** The messages left out. */
  skipped: SkippedPublish[];
  /** A packet longer than the bridge takes that cannot be left out: drop the connection. */
  oversized?: Oversized;
}

/** How much of a skipped message's topic is kept, to name it. */
const TOPIC_KEPT = 200;

/**
 * Where {@link PacketFilter} is in the bytes: before a packet's first byte (its type), in its
 * remaining length (7 bits a byte), in a body handed on, in the body of a PUBLISH left out (its
 * topic and packet id read on the way), or lost after a malformed length (the library's parser
 * fails the connection, nothing to follow).
 */
type FilterState = "type" | "length" | "body" | "skip" | "lost";

/**
 * Follows the packets in the bytes a broker sends, reading only each fixed header (type byte
 * and remaining length), and leaves out every PUBLISH longer than `max` as soon as its header
 * arrives: the MQTT library would buffer it whole (256 MiB at most) before its own check, then
 * fail the connection, and a message retained on a topic the bridge subscribes to would come
 * back at every connection. A header is held back until its length is known, when it straddles
 * two chunks. A longer packet of another type, or a PUBLISH at QoS 2 (the bridge asks for at
 * most 1, and could not acknowledge it alone), cannot be left out: it is reported, and the
 * caller drops the connection. A malformed length is left to the library's parser, which says
 * what is wrong.
 */
export class PacketFilter {
  readonly #max: number;
  #at: FilterState = "type";
  /** The current packet's first byte, and its remaining length read so far. */
  #type = 0;
  #length = 0;
  #lengthBytes = 0;
  /** Header bytes held back from an earlier chunk (its end cut the header). */
  #held: Uint8Array | undefined;
  /** Bytes of the current body still to hand on or to skip. */
  #left = 0;
  /** A skipped PUBLISH: how far into its body, its topic's length and bytes, its packet id. */
  #bodyAt = 0;
  #topicLength = 0;
  #topic: number[] = [];
  #packetId = 0;
  #skipped: SkippedPublish | undefined;

  /** Leaves out messages longer than `max` bytes in all. */
  constructor(max: number) {
    this.#max = max;
  }

  /** Takes the next bytes received; says what to hand on and what was left out. */
  feed(chunk: Uint8Array): Filtered {
    const result: Filtered = { pass: [], skipped: [] };
    const pass = (bytes: Uint8Array): void => {
      if (bytes.length > 0) result.pass.push(bytes);
    };
    // The start of the bytes of `chunk` handed on so far unbroken, or -1 while skipping.
    let from = this.#at === "skip" ? -1 : 0;
    let headerStart = 0;
    if (this.#held !== undefined && from === 0) from = -1; // the held header decides first
    for (let at = 0; at < chunk.length;) {
      switch (this.#at) {
        case "lost":
          at = chunk.length;
          break;
        case "body": {
          const passed = Math.min(this.#left, chunk.length - at);
          this.#left -= passed;
          at += passed;
          if (this.#left === 0) this.#at = "type";
          break;
        }
        case "type":
          headerStart = at;
          this.#type = chunk[at++];
          this.#length = 0;
          this.#lengthBytes = 0;
          this.#at = "length";
          break;
        case "length": {
          const byte = chunk[at++];
          this.#length += (byte & 0x7f) * 128 ** this.#lengthBytes++;
          if (byte & 0x80) {
            if (this.#lengthBytes < 4) break;
            // Handed on as it is, for the parser to fail.
            this.#at = "lost";
            if (this.#held !== undefined) {
              pass(this.#held);
              this.#held = undefined;
              from = 0;
            }
            break;
          }
          const held = this.#held;
          this.#held = undefined;
          const size = 1 + this.#lengthBytes + this.#length;
          const type = this.#type >> 4;
          const qos = (this.#type >> 1) & 3;
          if (size <= this.#max) {
            if (held !== undefined) {
              pass(held);
              from = 0;
            }
            this.#left = this.#length;
            this.#at = this.#left === 0 ? "type" : "body";
            break;
          }
          if (type !== 3 || qos > 1) {
            // Handed on up to it; the caller drops the connection.
            if (from >= 0) pass(chunk.subarray(from, headerStart));
            result.oversized = { type, size };
            this.#at = "lost";
            return result;
          }
          if (from >= 0) pass(chunk.subarray(from, headerStart));
          from = -1;
          this.#skipped = { size, topic: "", qos: qos as 0 | 1, packetId: 0 };
          this.#left = this.#length;
          this.#bodyAt = 0;
          this.#topicLength = 0;
          this.#topic = [];
          this.#packetId = 0;
          this.#at = "skip";
          break;
        }
        case "skip": {
          // The topic's length, its first bytes and the packet id come first; the rest is skipped.
          const idEnd = 2 + this.#topicLength + 2;
          if (this.#bodyAt < 2 || this.#bodyAt < idEnd) {
            const byte = chunk[at++];
            const i = this.#bodyAt++;
            this.#left--;
            if (i < 2) this.#topicLength = (this.#topicLength << 8) | byte;
            else if (i < 2 + this.#topicLength) {
              if (this.#topic.length < TOPIC_KEPT) this.#topic.push(byte);
            } else this.#packetId = (this.#packetId << 8) | byte;
          } else {
            const skipped = Math.min(this.#left, chunk.length - at);
            this.#left -= skipped;
            this.#bodyAt += skipped;
            at += skipped;
          }
          if (this.#left > 0) break;
          const message = this.#skipped;
          if (message !== undefined) {
            message.topic = new TextDecoder().decode(new Uint8Array(this.#topic));
            if (message.qos === 1) message.packetId = this.#packetId & 0xffff;
            result.skipped.push(message);
          }
          this.#skipped = undefined;
          this.#at = "type";
          from = at;
          break;
        }
      }
    }
    if (this.#at === "length") {
      // The chunk ends inside a header: held back until its length says what the packet is.
      const start = this.#held === undefined ? headerStart : 0;
      if (from >= 0 && this.#held === undefined) pass(chunk.subarray(from, start));
      const more = chunk.subarray(start);
      const held = this.#held ?? new Uint8Array(0);
      const joined = new Uint8Array(held.length + more.length);
      joined.set(held);
      joined.set(more, held.length);
      this.#held = joined;
      return result;
    }
    if (from >= 0) pass(chunk.subarray(from));
    return result;
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
