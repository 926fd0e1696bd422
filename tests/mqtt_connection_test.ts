/**
 * `BrokerConnection` (bridges/mqtt/connection.ts) against a broker that misbehaves in ways
 * mosquitto never does: a fake broker on a loopback socket (`Deno.listen`) that speaks just
 * enough MQTT 3.1.1 to accept a client, then sends what the test says.
 */
import { assert, assertEquals } from "@std/assert";
import type { BrokerConnection } from "../bridges/mqtt/connection.ts";
import { logger } from "../app/logging.ts";
import { testWith } from "./helpers/permissions.ts";
import { warningsInto } from "./helpers/logs.ts";
import { delay, GUARD_MS, within } from "./helpers/waiting.ts";

/** CONNACK: session not present, connection accepted. */
const CONNACK = new Uint8Array([0x20, 0x02, 0x00, 0x00]);
/** A PUBLISH with both QoS bits set, which MQTT forbids: the client's parser rejects it. */
const MALFORMED = new Uint8Array([0x36, 0x00]);

/** Reads one whole MQTT packet from `conn`; returns its type (the high 4 bits of byte 0). */
async function readPacket(conn: Deno.Conn): Promise<number> {
  let bytes = new Uint8Array(0);
  const buffer = new Uint8Array(4096);
  for (;;) {
    // Fixed header: the type byte, then the remaining length in 7-bit groups.
    let length = 0;
    let index = 1;
    for (let shift = 0; index < bytes.length && index < 5; shift += 7) {
      length |= (bytes[index] & 0x7f) << shift;
      if ((bytes[index++] & 0x80) === 0) {
        if (bytes.length >= index + length) return bytes[0] >> 4;
        break;
      }
    }
    const count = await conn.read(buffer);
    if (count === null) throw new Error("the client closed the connection mid-packet");
    const more = new Uint8Array(bytes.length + count);
    more.set(bytes);
    more.set(buffer.subarray(0, count), bytes.length);
    bytes = more;
  }
}

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "BrokerConnection drops a connection the broker sent a malformed packet on, and reconnects",
  async () => {
    // Loaded here: the MQTT library reads the environment as it loads.
    const { BrokerConnection } = await import("../bridges/mqtt/connection.ts");
    using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepted: Deno.Conn[] = [];
    const accept = async (): Promise<Deno.Conn> => {
      const conn = await within(server.accept(), 2 * GUARD_MS);
      assert(conn !== undefined, "no connection from the client (hang guard)");
      accepted.push(conn);
      return conn;
    };
    let connects = 0;
    let connected = (): void => {};
    const connection = new BrokerConnection({
      url: `mqtt://127.0.0.1:${server.addr.port}`,
      clientId: "mmap-ipc-connection-test",
      will: { topic: "test/availability", payload: "offline" },
      backoff: { initialMs: 50, maxMs: 50, jitter: 0 },
      // The longest MQTT allows: only a drop made on the error itself can reconnect in this test.
      keepaliveSeconds: 65_535,
      log: logger("connection-test"),
      onConnect: () => {
        connects++;
        connected();
      },
      onMessage: () => {},
    });
    try {
      const onConnect = new Promise<void>((resolve) => connected = resolve);
      connection.start();
      const first = await accept();
      assertEquals(await readPacket(first), 1, "CONNECT");
      await first.write(CONNACK);
      await within(onConnect, 2 * GUARD_MS);
      assertEquals(connects, 1, "connected (hang guard)");
      assert(connection.connected);

      await first.write(MALFORMED);
      const second = await accept();
      assertEquals(await readPacket(second), 1, "a CONNECT on a new connection");
      const again = new Promise<void>((resolve) => connected = resolve);
      await second.write(CONNACK);
      await within(again, 2 * GUARD_MS);
      assertEquals(connects, 2, "connected again (hang guard)");
      assert(connection.connected);
    } finally {
      await connection.close();
      for (const conn of accepted) {
        try {
          conn.close();
        } catch {
          // Closed by the other side already.
        }
      }
    }
  },
);

/** A BrokerConnection to `server` that reconnects every 20 ms and tells its warnings to `said`. */
async function quickConnection(
  server: Deno.TcpListener,
  said: string[],
): Promise<BrokerConnection> {
  // Loaded here: the MQTT library reads the environment as it loads.
  const { BrokerConnection } = await import("../bridges/mqtt/connection.ts");
  return new BrokerConnection({
    url: `mqtt://127.0.0.1:${server.addr.port}`,
    clientId: "mmap-ipc-connection-test",
    will: { topic: "test/availability", payload: "offline" },
    backoff: { initialMs: 20, maxMs: 20, jitter: 0 },
    log: warningsInto(said),
    onConnect: () => {},
    onMessage: () => {},
  });
}

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "BrokerConnection says once when the broker hangs up before accepting (no CONNACK), where it said nothing",
  async () => {
    using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const said: string[] = [];
    const connection = await quickConnection(server, said);
    try {
      connection.start();
      for (let i = 0; i < 3; i++) {
        const conn = await within(server.accept(), 2 * GUARD_MS);
        assert(conn !== undefined, "no connection from the client (hang guard)");
        assertEquals(await readPacket(conn), 1, "CONNECT");
        conn.close();
      }
      const hungUp = said.filter((line) => line.includes("closed the connection before accepting"));
      assertEquals(hungUp.length, 1, said.join("\n"));
      assert(!connection.connected);
    } finally {
      await connection.close();
    }
  },
);

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "BrokerConnection says when the broker closes its connections soon after accepting them, as it does to two clients with one id",
  async () => {
    using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const said: string[] = [];
    const connection = await quickConnection(server, said);
    try {
      connection.start();
      for (let i = 0; i < 3; i++) {
        const conn = await within(server.accept(), 2 * GUARD_MS);
        assert(conn !== undefined, "no connection from the client (hang guard)");
        assertEquals(await readPacket(conn), 1, "CONNECT");
        await conn.write(CONNACK);
        await delay(50);
        conn.close();
      }
      // The third close is told after the fourth attempt has begun: wait for that attempt.
      const fourth = await within(server.accept(), 2 * GUARD_MS);
      fourth?.close();
      const why = said.filter((line) =>
        line.includes('another client may be connecting as "mmap-ipc-connection-test"')
      );
      assertEquals(why.length, 1, said.join("\n"));
      assertEquals(said.filter((line) => line.includes("before accepting")).length, 0);
    } finally {
      await connection.close();
    }
  },
);
