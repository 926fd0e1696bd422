/**
 * `BrokerConnection` (bridges/mqtt/connection.ts) against a broker that misbehaves in ways
 * mosquitto never does: a fake broker on a loopback socket (`Deno.listen`) that speaks just
 * enough MQTT 3.1.1 to accept a client, then sends what the test says; and against a real
 * mosquitto for what one can show (restarted, frozen).
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import type { BrokerConnection } from "../bridges/mqtt/connection.ts";
import { logger } from "../app/logging.ts";
import { STOP_GRACE_MS } from "../app/supervisor.ts";
import { BRIDGE_STOP_GRACE_MS } from "../bridges/mqtt/settings.ts";
import { testWith } from "./helpers/permissions.ts";
import { warningsInto } from "./helpers/logs.ts";
import { CONNACK_5 } from "./helpers/fake_broker.ts";
import { delay, GUARD_MS, until, within } from "./helpers/waiting.ts";
import { withTempDir } from "./helpers/temp.ts";
import { linesInto, listenOnFixedPort, startBroker, testWithBroker } from "./helpers/mqtt.ts";

/** CONNACK: session not present, connection accepted. */
const CONNACK = new Uint8Array([0x20, 0x02, 0x00, 0x00]);
/** A PUBLISH with both QoS bits set, which MQTT forbids: the client's parser rejects it. */
const MALFORMED = new Uint8Array([0x36, 0x00]);

/** Reads one whole MQTT packet from `conn`; returns its type (the high 4 bits of byte 0). */
async function readPacket(conn: Deno.Conn): Promise<number> {
  return (await readWholePacket(conn))[0] >> 4;
}

/**
 * The protocol level a CONNECT asks for (4: MQTT 3.1.1, 5: MQTT 5) and, for MQTT 5, the Maximum
 * Packet Size among its properties, if any.
 */
async function readConnect(conn: Deno.Conn): Promise<{ level: number; maxPacket?: number }> {
  return parseConnect(await readWholePacket(conn));
}

/** {@link readConnect} of a packet read already. */
function parseConnect(packet: Uint8Array): { level: number; maxPacket?: number } {
  assertEquals(packet[0] >> 4, 1, "CONNECT");
  let at = 1;
  while (packet[at++] & 0x80); // the remaining length
  at += 2 + 4; // "MQTT"
  const level = packet[at];
  if (level !== 5) return { level };
  at += 1 + 1 + 2; // level, flags, keepalive
  let length = 0;
  for (let shift = 0;; shift += 7) {
    const byte = packet[at++];
    length |= (byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) break;
  }
  const end = at + length;
  const view = new DataView(packet.buffer, packet.byteOffset);
  while (at < end) {
    const id = packet[at++];
    if (id === 0x27) return { level, maxPacket: view.getUint32(at) };
    // The other properties a client sends in CONNECT: 4-byte, 2-byte or 1-byte values.
    at += id === 0x11 || id === 0x18 ? 4 : id === 0x21 || id === 0x22 ? 2 : 1;
  }
  return { level };
}

/** Reads one whole MQTT packet from `conn`. */
async function readWholePacket(conn: Deno.Conn): Promise<Uint8Array> {
  let bytes = new Uint8Array(0);
  const buffer = new Uint8Array(4096);
  for (;;) {
    // Fixed header: the type byte, then the remaining length in 7-bit groups.
    let length = 0;
    let index = 1;
    for (let shift = 0; index < bytes.length && index < 5; shift += 7) {
      length |= (bytes[index] & 0x7f) << shift;
      if ((bytes[index++] & 0x80) === 0) {
        if (bytes.length >= index + length) return bytes.subarray(0, index + length);
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

/** Closes each of `conns` the test accepted, those the client closed first too. */
function closeAll(conns: Deno.Conn[]): void {
  for (const conn of conns) {
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }
}

/** The client's next connection to `server` (a hang guard: the test fails if none comes). */
async function nextConnection(server: Deno.TcpListener): Promise<Deno.TcpConn> {
  const conn = await within(server.accept(), 2 * GUARD_MS);
  assert(conn !== undefined, "no connection from the client (hang guard)");
  return conn;
}

/**
 * The client's next MQTT connection to `server` and its first packet, past the bare connections
 * that check whether the broker still listens after a short-lived connection (they send nothing
 * and close). Each connection accepted goes into `conns`, for the test to close.
 */
async function nextClient(
  server: Deno.TcpListener,
  conns: Deno.Conn[],
): Promise<{ conn: Deno.TcpConn; first: Uint8Array }> {
  for (;;) {
    const conn = await nextConnection(server);
    conns.push(conn);
    const first = await readWholePacket(conn).catch(() => undefined);
    if (first !== undefined) return { conn, first };
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
      const conn = await nextConnection(server);
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
  onConnect: () => void = () => {},
): Promise<BrokerConnection> {
  // Loaded here: the MQTT library reads the environment as it loads.
  const { BrokerConnection } = await import("../bridges/mqtt/connection.ts");
  return new BrokerConnection({
    url: `mqtt://127.0.0.1:${server.addr.port}`,
    clientId: "mmap-ipc-connection-test",
    will: { topic: "test/availability", payload: "offline" },
    backoff: { initialMs: 20, maxMs: 20, jitter: 0 },
    log: warningsInto(said),
    onConnect,
    onMessage: () => {},
  });
}

/**
 * A connection to `url` for the tests that watch what it says and how often it connects: every
 * line it logs into `said`, a fixed backoff of `backoffMs`, no message taken; `connects()` counts.
 */
async function countedConnection(
  url: string,
  said: string[],
  options: { backoffMs: number; clientId?: string; keepaliveSeconds?: number },
): Promise<{ connection: BrokerConnection; connects: () => number }> {
  // Loaded here: the MQTT library reads the environment as it loads.
  const { BrokerConnection } = await import("../bridges/mqtt/connection.ts");
  let connects = 0;
  const connection = new BrokerConnection({
    url,
    clientId: options.clientId ?? "mmap-ipc-connection-test",
    backoff: { initialMs: options.backoffMs, maxMs: options.backoffMs, jitter: 0 },
    keepaliveSeconds: options.keepaliveSeconds,
    log: linesInto(said),
    onConnect: () => connects++,
    onMessage: () => {},
  });
  return { connection, connects: () => connects };
}

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "BrokerConnection says once when the broker hangs up before accepting (no CONNACK), where it said nothing",
  async () => {
    using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const url = `mqtt://127.0.0.1:${server.addr.port}`;
    const said: string[] = [];
    const connection = await quickConnection(server, said);
    try {
      connection.start();
      const levels: number[] = [];
      for (let i = 0; i < 6; i++) {
        const conn = await nextConnection(server);
        levels.push((await readConnect(conn)).level);
        conn.close();
      }
      // Some brokers hang up on a version they do not speak: after two, 3.1.1 is tried, once,
      // as a broker that hangs up on it too gives no sign that it lacks MQTT 5.
      assertEquals(levels, [5, 5, 4, 5, 5, 4], `the protocol levels the client asked of ${url}`);
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
    const conns: Deno.Conn[] = [];
    try {
      connection.start();
      for (let i = 0; i < 3; i++) {
        const { conn, first } = await nextClient(server, conns);
        assertEquals(first[0] >> 4, 1, "CONNECT");
        await conn.write(CONNACK);
        await delay(50);
        conn.close();
      }
      // After each close the client checks that the broker still listens (a bare connection,
      // nothing sent), as it does when it gives the id to another client.
      const why = (): string[] =>
        said.filter((line) =>
          line.includes('another client may be connecting as "mmap-ipc-connection-test"')
        );
      await until(() => why().length > 0, "the hint at a rival client");
      // The next attempt comes after the check: wait for it, then nothing more is said.
      await nextClient(server, conns);
      assertEquals(why().length, 1, said.join("\n"));
      assertEquals(said.filter((line) => line.includes("before accepting")).length, 0);
    } finally {
      await connection.close();
      closeAll(conns);
    }
  },
);

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "BrokerConnection speaks MQTT 5 with a small Maximum Packet Size, and 3.1.1 to a broker that refuses 5, for one connection at a time",
  async () => {
    using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const url = `mqtt://127.0.0.1:${server.addr.port}`;
    const said: string[] = [];
    const connection = await quickConnection(server, said);
    const { MAX_INCOMING_PACKET } = await import("../bridges/mqtt/connection.ts");
    const conns: Deno.Conn[] = [];
    try {
      connection.start();
      const first = await nextConnection(server);
      const asked = await readConnect(first);
      assertEquals(asked, { level: 5, maxPacket: MAX_INCOMING_PACKET });
      // What a 3.1.1 broker answers a CONNECT of another level: return code 1, then a hang-up.
      await first.write(new Uint8Array([0x20, 0x02, 0x00, 0x01]));
      first.close();
      const second = await nextConnection(server);
      assertEquals(await readConnect(second), { level: 4 });
      await second.write(CONNACK);
      await until(() => connection.connected, "connected over 3.1.1");
      assertEquals(said, [], "a refusal of MQTT 5 is no problem to warn of");
      second.close();
      // 3.1.1 was for that connection: the next asks for MQTT 5 and its limit again. (Past the
      // check that the broker still listens, which the short connection's close makes.)
      const { conn: third, first: connect } = await nextClient(server, conns);
      assertEquals(
        parseConnect(connect),
        { level: 5, maxPacket: MAX_INCOMING_PACKET },
        `the CONNECT to ${url} after a 3.1.1 connection ended`,
      );
      await third.write(new Uint8Array([0x20, 0x02, 0x00, 0x01]));
      third.close();
      const fourth = await nextConnection(server);
      assertEquals(
        await readConnect(fourth),
        { level: 4 },
        `3.1.1 to ${url} refusing MQTT 5 again`,
      );
      fourth.close();
    } finally {
      await connection.close();
      closeAll(conns);
    }
  },
);

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "BrokerConnection says at once, and once, that another client took its session (MQTT 5 DISCONNECT 0x8e), as a copy of the system with the same client id makes a broker say",
  async () => {
    using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const said: string[] = [];
    const connection = await quickConnection(server, said);
    // DISCONNECT, reason code 0x8e (Session taken over), no properties. mosquitto 2.0.11 only
    // closes the old connection; later brokers say this.
    const takenOver = new Uint8Array([0xe0, 0x02, 0x8e, 0x00]);
    try {
      connection.start();
      for (let i = 0; i < 4; i++) {
        const conn = await nextConnection(server);
        assertEquals(await readPacket(conn), 1, "CONNECT");
        await conn.write(CONNACK);
        await delay(20);
        await conn.write(takenOver);
        conn.close();
        // Told at the first, before any run of closes could hint at it.
        if (i === 0) {
          await until(() => said.some((line) => line.includes("session taken over")), "told");
        }
      }
      (await nextConnection(server)).close();
      const told = said.filter((line) => line.includes("session taken over"));
      assertEquals(told.length, 1, said.join("\n"));
      assertStringIncludes(told[0], '"mmap-ipc-connection-test"');
      assertStringIncludes(told[0], "--mqtt-prefix");
      assertEquals(
        said.filter((line) => line.includes("soon after accepting")),
        [],
        said.join("\n"),
      );
    } finally {
      await connection.close();
    }
  },
);

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "BrokerConnection leaves out unread a message longer than it takes (acknowledging it at QoS 1) and stays connected; a longer packet it cannot leave out drops the connection",
  async () => {
    using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const url = `mqtt://127.0.0.1:${server.addr.port}`;
    const said: string[] = [];
    const heard: string[] = [];
    // Loaded here: the MQTT library reads the environment as it loads.
    const { BrokerConnection } = await import("../bridges/mqtt/connection.ts");
    const connection = new BrokerConnection({
      url,
      clientId: "mmap-ipc-connection-test",
      backoff: { initialMs: 20, maxMs: 20, jitter: 0 },
      log: warningsInto(said),
      onConnect: () => {},
      onMessage: (topic, payload) => heard.push(`${topic} ${new TextDecoder().decode(payload)}`),
    });
    const publish = (topic: string, qos: 0 | 1 | 2, id: number, length: number): Uint8Array => {
      const name = new TextEncoder().encode(topic);
      // MQTT 5: topic, packet id (QoS 1 and 2), property length 0, payload.
      const remaining = 2 + name.length + (qos > 0 ? 2 : 0) + 1 + length;
      const header = [0x30 | (qos << 1)];
      for (let left = remaining;;) {
        header.push((left & 0x7f) | (left >= 128 ? 0x80 : 0));
        left = Math.floor(left / 128);
        if (left === 0) break;
      }
      const bytes = new Uint8Array(header.length + remaining).fill(0x41);
      bytes.set(header);
      let at = header.length;
      bytes.set([name.length >> 8, name.length & 0xff, ...name], at);
      at += 2 + name.length;
      if (qos > 0) bytes.set([id >> 8, id & 0xff], (at += 2) - 2);
      bytes[at] = 0;
      return bytes;
    };
    try {
      connection.start();
      const conn = await nextConnection(server);
      try {
        await readConnect(conn);
        await conn.write(CONNACK_5);
        await until(() => connection.connected, `connected to ${url}`);
        // 8 MiB at QoS 1 (as a retained message on a subscribed topic comes at every
        // connection), then a short one: only the short one reaches the bridge.
        const big = publish("test/big", 1, 0x4321, 8 << 20);
        const small = publish("test/small", 0, 0, 2);
        const bytes = new Uint8Array(big.length + small.length);
        bytes.set(big);
        bytes.set(small, big.length);
        for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
        await until(() => heard.length > 0, "the short message");
        assertEquals(heard, ["test/small AA"]);
        // Its PUBACK, as mqtt.js would have sent: the broker frees the packet id.
        const ack = new Uint8Array(4);
        let got = 0;
        while (got < 4) {
          const count = await within(conn.read(ack.subarray(got)), 2 * GUARD_MS);
          assert(count !== undefined && count !== null, "no PUBACK (hang guard)");
          got += count;
        }
        assertEquals([...ack], [0x40, 0x02, 0x43, 0x21]);
        assert(connection.connected, "still connected");
        const told = said.filter((line) => line.includes(`${big.length} bytes`));
        assertEquals(told.length, 1, said.join("\n"));
        assertStringIncludes(told[0], `on "test/big"`);
        assertStringIncludes(told[0], "left it out unread");
        assertStringIncludes(told[0], url);
        // A QoS 2 message that long cannot be left out (it needs a reply the bridge does not
        // make): the header alone is enough to drop the connection.
        const qos2 = publish("test/qos2", 2, 7, 8 << 20).subarray(0, 16);
        for (let at = 0; at < qos2.length;) at += await conn.write(qos2.subarray(at));
        await until(() => !connection.connected, "the connection dropped");
        const dropped = said.filter((line) => line.includes("a message at QoS 2"));
        assertEquals(dropped.length, 1, said.join("\n"));
        assertStringIncludes(dropped[0], "dropped the connection rather than read it");
      } finally {
        conn.close();
      }
      assertEquals(said.filter((line) => line.includes("refused")), [], said.join("\n"));
      // And it connects again.
      (await nextConnection(server)).close();
    } finally {
      await connection.close();
    }
  },
);

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "BrokerConnection hints at no rival client when its short connections each had a cause it said: a malformed packet, the broker's DISCONNECT with a reason",
  async () => {
    using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const url = `mqtt://127.0.0.1:${server.addr.port}`;
    const said: string[] = [];
    let connects = 0;
    const connection = await quickConnection(server, said, () => connects++);
    // DISCONNECT, reason code 0x8b (Server shutting down), no properties: a broker restarting.
    const shuttingDown = new Uint8Array([0xe0, 0x02, 0x8b, 0x00]);
    const conns: Deno.Conn[] = [];
    try {
      connection.start();
      for (let i = 0; i < 6; i++) {
        const conn = await nextConnection(server);
        conns.push(conn);
        await readConnect(conn);
        await conn.write(CONNACK_5);
        await until(() => connects === i + 1, `connection ${i + 1} to ${url} accepted`);
        // Three in a row of each: the bridge drops a connection with a malformed packet itself,
        // then the broker closes three after saying why.
        await conn.write(i < 3 ? MALFORMED : shuttingDown);
        if (i >= 3) conn.close();
      }
      // The sixth close is told after the seventh attempt has begun: wait for that attempt.
      conns.push(await nextConnection(server));
      assertEquals(
        said.filter((line) => line.includes("another client may be connecting")),
        [],
        `hinted at a rival client of ${url} for closes with causes it said:\n${said.join("\n")}`,
      );
    } finally {
      await connection.close();
      closeAll(conns);
    }
  },
);

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "BrokerConnection hints at a rival client only after three short connections in a row that the broker still listened after: a close it stopped listening at (a restart) ends the run",
  async () => {
    // Closed and listened on again below, as a broker restarting.
    let server = listenOnFixedPort();
    const port = server.addr.port;
    const url = `mqtt://127.0.0.1:${port}`;
    const said: string[] = [];
    const { connection, connects } = await countedConnection(url, said, { backoffMs: 100 });
    const rival = (): string[] =>
      said.filter((line) => line.includes("another client may be connecting"));
    const wentAway = (): number =>
      said.filter((line) => line.includes("the broker went away")).length;
    const conns: Deno.Conn[] = [];
    try {
      connection.start();
      for (let i = 1; i <= 5; i++) {
        const { conn, first } = await nextClient(server, conns);
        assertEquals(first[0] >> 4, 1, "CONNECT");
        await conn.write(CONNACK_5);
        await until(() => connects() === i, `connection ${i} to ${url} accepted`);
        // Each close before this one was checked before this attempt began.
        assertEquals(rival(), [], `hinted before close ${i}:\n${said.join("\n")}`);
        // The first two as a broker restarting: it stops listening, then closes its connections.
        const restart = i <= 2;
        if (restart) server.close();
        conn.close();
        if (restart) {
          await until(() => wentAway() === i, `the check after close ${i} found no listener`);
          server = Deno.listen({ hostname: "127.0.0.1", port });
        }
      }
      // The three closes after the restarts: said at the third of them, once.
      await until(() => rival().length === 1, `the hint at a rival client of ${url}`);
      assertEquals(wentAway(), 2, said.join("\n"));
    } finally {
      await connection.close();
      closeAll(conns);
      try {
        server.close();
      } catch {
        // Closed already.
      }
    }
  },
);

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "BrokerConnection says a problem once per outage, not once per connection, when the broker accepts and soon fails each one",
  async () => {
    using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const url = `mqtt://127.0.0.1:${server.addr.port}`;
    const said: string[] = [];
    let connects = 0;
    const connection = await quickConnection(server, said, () => connects++);
    const conns: Deno.Conn[] = [];
    try {
      connection.start();
      for (let i = 0; i < 3; i++) {
        const conn = await nextConnection(server);
        conns.push(conn);
        await readConnect(conn);
        await conn.write(CONNACK_5);
        await until(() => connects === i + 1, `connection ${i + 1} to ${url} accepted`);
        await conn.write(MALFORMED);
      }
      // The third is told before the fourth attempt begins.
      conns.push(await nextConnection(server));
      const told = said.filter((line) => line.includes("both QoS bits"));
      assertEquals(told.length, 1, `the malformed packets from ${url}, once:\n${said.join("\n")}`);
    } finally {
      await connection.close();
      closeAll(conns);
    }
  },
);

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "BrokerConnection says once that what listens at the broker's address sends no MQTT, whatever it sends each time",
  async () => {
    using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const url = `mqtt://127.0.0.1:${server.addr.port}`;
    const said: string[] = [];
    const connection = await quickConnection(server, said);
    const encoder = new TextEncoder();
    // Each makes mqtt.js's parser fail with other words.
    const answers = [
      encoder.encode("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
      MALFORMED,
      new Uint8Array([0x00, 0x00]),
    ];
    const conns: Deno.Conn[] = [];
    try {
      connection.start();
      for (const answer of answers) {
        const conn = await nextConnection(server);
        conns.push(conn);
        await readConnect(conn);
        await conn.write(answer);
      }
      // The third is told before the fourth attempt begins.
      conns.push(await nextConnection(server));
      const told = said.filter((line) =>
        line.includes(`Connection to the broker at ${url} failed`)
      );
      assertEquals(
        told.length,
        1,
        `the answers that are no MQTT from ${url}, once:\n${said.join("\n")}`,
      );
    } finally {
      await connection.close();
      closeAll(conns);
    }
  },
);

testWith(
  ["env"],
  "the launcher gives the bridge longer to stop than its whole close may take (offline, then the end of the connection), with a second to spare, and longer than other children",
  async () => {
    const { GRACE_MS } = await import("../bridges/mqtt/connection.ts");
    // The bridge was killed, unsaid, at 3 s while its close could take 4 s.
    assert(
      BRIDGE_STOP_GRACE_MS >= 2 * GRACE_MS + 1_000,
      `the launcher gives the bridge ${BRIDGE_STOP_GRACE_MS} ms, its close may take ${
        2 * GRACE_MS
      } ms`,
    );
    assert(BRIDGE_STOP_GRACE_MS > STOP_GRACE_MS);
  },
);

testWithBroker(
  "BrokerConnection says once per outage that it lost the connection, not at each reconnect, when mosquitto restarts over and over; after a connection that lasted 10 s, a loss is news again",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      const said: string[] = [];
      const { connection, connects } = await countedConnection(broker.url, said, {
        backoffMs: 20,
      });
      try {
        connection.start();
        await until(() => connects() === 1, `connected to ${broker.url}`);
        // Each connection is shorter than the 10 s that end an outage: one outage, three losses.
        for (let i = 2; i <= 4; i++) {
          await broker.restart();
          await until(() => connects() === i, `connection ${i} to ${broker.url}`);
        }
        const lost = (level: string): string[] =>
          said.filter((line) => line.startsWith(`${level} Lost the connection to ${broker.url}`));
        assertEquals(lost("WRN").length, 1, `said once:\n${said.join("\n")}`);
        assertEquals(lost("DBG").length, 2, `the others at debug level:\n${said.join("\n")}`);
        // Each says what ended it, and how long it lasted.
        assertMatch(lost("WRN")[0], /after \d+\.\d s \(.+\); reconnecting$/);
        // The connection coming back is said each time.
        assertEquals(said.filter((line) => line.startsWith("INF Connected to")).length, 4);

        // A connection that lasts 10 s (STABLE_MS in connection.ts) ends the outage.
        await delay(10_500);
        await broker.restart();
        await until(() => connects() === 5, `connection 5 to ${broker.url}`);
        assertEquals(lost("WRN").length, 2, `a new outage, said again:\n${said.join("\n")}`);
      } finally {
        await connection.close();
      }
    });
  },
);

testWithBroker(
  "BrokerConnection notices a frozen mosquitto (SIGSTOP) by its keepalive, says so, and connects again once it runs on (SIGCONT)",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      const said: string[] = [];
      const { connection, connects } = await countedConnection(broker.url, said, {
        backoffMs: 20,
        // A ping after 2 s without a word from the broker, given up 1 s later: noticed within
        // 3 s, well within the hang guard of `until`.
        keepaliveSeconds: 2,
      });
      try {
        connection.start();
        await until(() => connects() === 1, `connected to ${broker.url}`);
        broker.freeze();
        await until(
          () => said.some((line) => line.startsWith(`WRN Lost the connection to ${broker.url}`)),
          `the loss of the frozen broker at ${broker.url} said`,
        );
        const hung = said.filter((line) => line.includes("answered nothing for 3 s, a ping"));
        assertEquals(hung.length, 1, said.join("\n"));
        assertStringIncludes(hung[0], `WRN The broker at ${broker.url}`);
        broker.thaw();
        await until(() => connects() === 2, `connected to ${broker.url} again`);
        assertEquals(said.filter((line) => line.startsWith("INF Connected to")).length, 2);
      } finally {
        await connection.close();
      }
    });
  },
);

testWithBroker(
  "BrokerConnection names the keepalive the broker set (MQTT 5 Server Keep Alive, mosquitto's max_keepalive) when a frozen mosquitto answers nothing, not the one it asked for",
  async () => {
    await withTempDir(async (dir) => {
      // Asked for 60 s, told 10 s (the least mosquitto takes) by the broker, which mqtt.js then
      // keeps to: noticed within 15 s.
      await using broker = await startBroker(dir, { config: ["max_keepalive 10"] });
      const said: string[] = [];
      const { connection, connects } = await countedConnection(broker.url, said, {
        backoffMs: 20,
        keepaliveSeconds: 60,
      });
      try {
        connection.start();
        await until(() => connects() === 1, `connected to ${broker.url}`);
        broker.freeze();
        await until(
          () => said.some((line) => line.includes("answered nothing")),
          `the silence of the frozen broker at ${broker.url} said`,
          { timeoutMs: 30_000 },
        );
        const hung = said.filter((line) => line.includes("answered nothing"));
        assertEquals(hung.length, 1, said.join("\n"));
        assertStringIncludes(
          hung[0],
          `WRN The broker at ${broker.url} answered nothing for 15 s, a ping included (MQTT ` +
            "keepalive 10 s, the broker's Server Keep Alive; the bridge asked for 60 s)",
        );
      } finally {
        broker.thaw();
        await connection.close();
      }
    });
  },
);

testWithBroker(
  "BrokerConnection hints at no rival client when mosquitto restarts three times within 10 s (nothing listens right after each close), and does when a second client takes its id in turn",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      const { BrokerConnection } = await import("../bridges/mqtt/connection.ts");
      const rival = (lines: string[]): string[] =>
        lines.filter((line) => line.includes("another client may be connecting"));
      const said: string[] = [];
      const { connection, connects } = await countedConnection(broker.url, said, {
        clientId: "mmap-ipc-restart-test",
        // Longer than a restart takes: each next attempt meets the broker running again, so no
        // failed attempt ends the run of short-lived connections.
        backoffMs: 1_000,
      });
      try {
        connection.start();
        await until(() => connects() === 1, `connected to ${broker.url}`);
        for (let i = 2; i <= 4; i++) {
          // Down a while, as a broker's service restarting is: what the bridge sees at each
          // close is then the broker gone, not a race with its start.
          await broker.restart({ downMs: 300 });
          await until(() => connects() === i, `connection ${i} to ${broker.url}`);
        }
        assertEquals(rival(said), [], `hinted at a rival client for restarts:\n${said.join("\n")}`);
        assert(said.some((line) => line.includes("the broker went away")), said.join("\n"));
        assertEquals(said.filter((line) => line.startsWith("ERR")), []);
      } finally {
        await connection.close();
      }

      // Two clients with one id, each taking it from the other (mosquitto 2.0.11 says nothing
      // of it, even in MQTT 5): the broker listens all along, and the hint is said.
      const saidBy: string[][] = [[], []];
      const twins = saidBy.map((lines) =>
        new BrokerConnection({
          url: broker.url,
          clientId: "mmap-ipc-twin-test",
          backoff: { initialMs: 50, maxMs: 50, jitter: 0 },
          log: linesInto(lines),
          onConnect: () => {},
          onMessage: () => {},
        })
      );
      try {
        for (const twin of twins) twin.start();
        await until(
          () => saidBy.some((lines) => rival(lines).length > 0),
          `the hint at a rival client of ${broker.url}`,
        );
      } finally {
        for (const twin of twins) await twin.close();
      }
    });
  },
);
