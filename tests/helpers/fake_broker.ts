/**
 * Just enough of an MQTT 5 broker's side of a loopback socket for tests that must order events
 * mosquitto would not hold still for: whole packets read, PUBLISHes parsed, and the answers a
 * broker sends (CONNACK, SUBACK, PUBACK, a PUBLISH of its own).
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import { GUARD_MS, within } from "./waiting.ts";

/** One PUBLISH a client sent. */
export interface Published {
  topic: string;
  qos: number;
  /** Its packet id (QoS 1), to acknowledge it with. */
  id: number;
  /** Its payload, as text. */
  payload: string;
}

/** Reads whole MQTT packets from one connection, keeping what arrives beyond one. */
export class PacketReader {
  readonly #conn: Deno.Conn;
  #bytes = new Uint8Array(0);
  readonly #buffer = new Uint8Array(65536);

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** The next packet, whole. */
  async next(): Promise<Uint8Array> {
    for (;;) {
      const bytes = this.#bytes;
      let length = 0;
      let index = 1;
      for (let shift = 0; index < bytes.length && index < 5; shift += 7) {
        length |= (bytes[index] & 0x7f) << shift;
        if ((bytes[index++] & 0x80) === 0) {
          if (bytes.length >= index + length) {
            this.#bytes = bytes.slice(index + length);
            return bytes.slice(0, index + length);
          }
          break;
        }
      }
      const count = await this.#conn.read(this.#buffer);
      if (count === null) throw new Error("the client closed the connection");
      const more = new Uint8Array(bytes.length + count);
      more.set(bytes);
      more.set(this.#buffer.subarray(0, count), bytes.length);
      this.#bytes = more;
    }
  }
}

/** Where a packet's variable header starts: after its type byte and remaining length. */
function headerStart(packet: Uint8Array): number {
  let at = 1;
  while (packet[at++] & 0x80);
  return at;
}

/** A PUBLISH's topic, QoS, packet id and payload; MQTT 5's unless `version` is 4 (3.1.1). */
export function parsePublish(packet: Uint8Array, version: 4 | 5 = 5): Published {
  const qos = (packet[0] >> 1) & 3;
  let at = headerStart(packet);
  const length = (packet[at] << 8) | packet[at + 1];
  const topic = new TextDecoder().decode(packet.subarray(at + 2, at + 2 + length));
  at += 2 + length;
  const id = qos > 0 ? (packet[at] << 8) | packet[at + 1] : 0;
  if (qos > 0) at += 2;
  let properties = 0;
  for (let shift = 0; version === 5; shift += 7) {
    const byte = packet[at++];
    properties |= (byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) break;
  }
  const payload = new TextDecoder().decode(packet.subarray(at + properties));
  return { topic, qos, id, payload };
}

/** The SUBACK for a SUBSCRIBE: every filter granted QoS 0; MQTT 5's unless `version` is 4. */
export function subackFor(packet: Uint8Array, version: 4 | 5 = 5): Uint8Array {
  const at = headerStart(packet);
  const id = [packet[at], packet[at + 1]];
  const filters = subscriptionsOf(packet, version).size;
  return version === 5
    ? new Uint8Array([0x90, 3 + filters, ...id, 0x00, ...new Array(filters).fill(0)])
    : new Uint8Array([0x90, 2 + filters, ...id, ...new Array(filters).fill(0)]);
}

/**
 * A SUBSCRIBE's filters, each with its options byte (QoS in the low two bits; in MQTT 5 also No
 * Local, 0x04, and more; in 3.1.1 the rest must be 0). `version` 5 skips the properties.
 */
export function subscriptionsOf(packet: Uint8Array, version: 4 | 5): Map<string, number> {
  let at = headerStart(packet) + 2;
  if (version === 5) {
    let properties = 0;
    for (let shift = 0;; shift += 7) {
      const byte = packet[at++];
      properties |= (byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) break;
    }
    at += properties;
  }
  const filters = new Map<string, number>();
  while (at < packet.length) {
    const length = (packet[at] << 8) | packet[at + 1];
    filters.set(
      new TextDecoder().decode(packet.subarray(at + 2, at + 2 + length)),
      packet[at + 2 + length],
    );
    at += 2 + length + 1;
  }
  return filters;
}

/** A PUBLISH, QoS 0, of `payload` on `topic`, from the broker; MQTT 5's unless `version` is 4. */
export function publishPacket(topic: string, payload: string, version: 4 | 5 = 5): Uint8Array {
  const name = new TextEncoder().encode(topic);
  const body = new TextEncoder().encode(payload);
  const properties = version === 5 ? [0] : [];
  const length = 2 + name.length + properties.length + body.length;
  assert(length < 128, "one length byte");
  return new Uint8Array([
    0x30,
    length,
    name.length >> 8,
    name.length & 0xff,
    ...name,
    ...properties,
    ...body,
  ]);
}

/** The PUBACK of the PUBLISH with packet id `id`: success. */
export function pubackFor(id: number): Uint8Array {
  return new Uint8Array([0x40, 0x02, id >> 8, id & 0xff]);
}

/** The MQTT 5 CONNACK that accepts a connection: no session present, no properties. */
export const CONNACK_5: Uint8Array = new Uint8Array([0x20, 0x03, 0x00, 0x00, 0x00]);

/**
 * Accepts the next connection on `server` (within the hang guard), reads its CONNECT and accepts
 * it (MQTT 5); the connection, and a reader of the packets after the CONNECT.
 */
export async function acceptClient(
  server: Deno.TcpListener,
): Promise<{ conn: Deno.TcpConn; packets: PacketReader }> {
  const conn = await within(server.accept(), 2 * GUARD_MS);
  assert(conn !== undefined, "no connection from the client (hang guard)");
  const packets = new PacketReader(conn);
  assertEquals((await packets.next())[0] >> 4, 1, "CONNECT");
  await conn.write(CONNACK_5);
  return { conn, packets };
}
