/**
 * `MqttBridge` (bridges/mqtt/bridge.ts) against a fake broker on a loopback socket that answers
 * when the test says: orders of events mosquitto would not hold still for.
 */
import { assert, assertEquals } from "@std/assert";
import { logger } from "../app/logging.ts";
import { discoveryMessages } from "../bridges/mqtt/discovery.ts";
import { topicsFor } from "../bridges/mqtt/topics.ts";
import { testWith } from "./helpers/permissions.ts";
import { GUARD_MS, within } from "./helpers/waiting.ts";

/** One PUBLISH the bridge sent. */
interface Published {
  topic: string;
  qos: number;
  /** Its packet id (QoS 1), to acknowledge it with. */
  id: number;
}

/** Reads whole MQTT packets from one connection, keeping what arrives beyond one. */
class PacketReader {
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

/** An MQTT 5 PUBLISH's topic, QoS and packet id. */
function parsePublish(packet: Uint8Array): Published {
  const qos = (packet[0] >> 1) & 3;
  let at = headerStart(packet);
  const length = (packet[at] << 8) | packet[at + 1];
  const topic = new TextDecoder().decode(packet.subarray(at + 2, at + 2 + length));
  at += 2 + length;
  const id = qos > 0 ? (packet[at] << 8) | packet[at + 1] : 0;
  return { topic, qos, id };
}

/** The MQTT 5 SUBACK for a SUBSCRIBE: every filter granted QoS 0. */
function subackFor(packet: Uint8Array): Uint8Array {
  let at = headerStart(packet);
  const id = [packet[at], packet[at + 1]];
  at += 2;
  let properties = 0;
  for (let shift = 0;; shift += 7) {
    const byte = packet[at++];
    properties |= (byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) break;
  }
  at += properties;
  let filters = 0;
  while (at < packet.length) {
    at += 2 + ((packet[at] << 8) | packet[at + 1]) + 1;
    filters++;
  }
  return new Uint8Array([0x90, 3 + filters, ...id, 0x00, ...new Array(filters).fill(0)]);
}

/** An MQTT 5 PUBLISH, QoS 0, of `payload` on `topic`, from the broker. */
function publishPacket(topic: string, payload: string): Uint8Array {
  const name = new TextEncoder().encode(topic);
  const body = new TextEncoder().encode(payload);
  const length = 2 + name.length + 1 + body.length;
  assert(length < 128, "one length byte");
  return new Uint8Array([0x30, length, name.length >> 8, name.length & 0xff, ...name, 0, ...body]);
}

/** The PUBACK of the PUBLISH with packet id `id`: success. */
function pubackFor(id: number): Uint8Array {
  return new Uint8Array([0x40, 0x02, id >> 8, id & 0xff]);
}

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "a state publish still in flight when Home Assistant comes online does not stand for the announcement's: the state is published again",
  async () => {
    // Loaded here: the MQTT library reads the environment as it loads.
    const { MqttBridge } = await import("../bridges/mqtt/bridge.ts");
    using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const topics = topicsFor("test/race");
    const bridge = new MqttBridge({
      connection: { url: `mqtt://127.0.0.1:${server.addr.port}`, clientId: "mmap-ipc-race-test" },
      topics,
      discoveryPrefix: "homeassistant",
      discovery: discoveryMessages({
        discoveryPrefix: "homeassistant",
        deviceId: "race",
        deviceName: "race",
        model: "test",
        version: "0.0.0",
        topics,
      }),
      log: logger("race-test"),
      onCommand: () => {},
    });
    let conn: Deno.TcpConn | undefined;
    try {
      bridge.setState(true);
      bridge.start();
      conn = await within(server.accept(), 2 * GUARD_MS);
      assert(conn !== undefined, "no connection from the bridge (hang guard)");
      const client = conn;
      const packets = new PacketReader(client);
      assertEquals((await packets.next())[0] >> 4, 1, "CONNECT");
      await conn.write(new Uint8Array([0x20, 0x03, 0x00, 0x00, 0x00]));
      /** Answers packets until a PUBLISH on `topic` comes; acknowledges all others, returns it. */
      const until = async (topic: string): Promise<Published> => {
        for (;;) {
          const packet = await within(packets.next(), 2 * GUARD_MS);
          assert(packet !== undefined, `no PUBLISH on ${topic} (hang guard)`);
          const type = packet[0] >> 4;
          if (type === 8) await client.write(subackFor(packet));
          if (type !== 3) continue;
          const published = parsePublish(packet);
          if (published.topic === topic) return published;
          if (published.qos > 0) await client.write(pubackFor(published.id));
        }
      };
      // The state goes out with the announcement at QoS 1: its acknowledgement is held back.
      const held = await until(topics.state);
      assertEquals(held.qos, 1);
      // Home Assistant comes online meanwhile: its announcement (a second later at most) asks
      // for the state again, while the first publish is still in flight.
      await conn.write(publishPacket("homeassistant/status", "online"));
      const announced = await until(topics.availability);
      await conn.write(pubackFor(announced.id));
      await conn.write(pubackFor(held.id));
      // Before, the late acknowledgement counted for the announcement: no state followed it.
      const again = await until(topics.state);
      assertEquals(again.qos, 1, "the announcement's state, at QoS 1 again");
      await conn.write(pubackFor(again.id));
      // Its goodbye (offline, at QoS 1) acknowledged too, so the close does not wait for it.
      until("no such topic").catch(() => {});
    } finally {
      await bridge.close();
      try {
        conn?.close();
      } catch {
        // Closed by the bridge already.
      }
    }
  },
);
