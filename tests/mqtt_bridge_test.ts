/**
 * `MqttBridge` (bridges/mqtt/bridge.ts) against a fake broker on a loopback socket that answers
 * when the test says: orders of events mosquitto would not hold still for; and against a real
 * mosquitto for what one can show.
 */
import { assert, assertEquals, AssertionError, assertStringIncludes } from "@std/assert";
import { logger } from "../app/logging.ts";
import { discoveryMessages } from "../bridges/mqtt/discovery.ts";
import { type Topics, topicsFor } from "../bridges/mqtt/topics.ts";
import type { MqttBridge } from "../bridges/mqtt/bridge.ts";
import type { Command } from "../app/remote/messages.ts";
import { testWith } from "./helpers/permissions.ts";
import { delay, GUARD_MS, until, within } from "./helpers/waiting.ts";
import { withTempDir } from "./helpers/temp.ts";
import {
  denySubscriptions,
  dynamicSecurityOrSkip,
  linesInto,
  listen,
  type Listener,
  startAedes,
  startBroker,
  testWithBroker,
} from "./helpers/mqtt.ts";
import {
  acceptClient,
  PacketReader,
  parsePublish,
  pubackFor,
  type Published,
  publishPacket,
  subackFor,
  subscriptionsOf,
} from "./helpers/fake_broker.ts";

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
      const accepted = await acceptClient(server);
      conn = accepted.conn;
      const client = conn;
      const { packets } = accepted;
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

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "over MQTT 5 the bridge asks the broker not to send its own availability and state back (No Local): each copy held the next command back up to 40 ms behind the broker's Nagle",
  async () => {
    const { MqttBridge } = await import("../bridges/mqtt/bridge.ts");
    using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const topics = topicsFor("test/no-local");
    const bridge = new MqttBridge({
      connection: { url: `mqtt://127.0.0.1:${server.addr.port}`, clientId: "mmap-ipc-nl-test" },
      topics,
      discoveryPrefix: "homeassistant",
      discovery: [],
      log: logger("no-local-test"),
      onCommand: () => {},
    });
    let conn: Deno.TcpConn | undefined;
    try {
      bridge.start();
      const accepted = await acceptClient(server);
      conn = accepted.conn;
      let filters: Map<string, number> | undefined;
      while (filters === undefined) {
        const packet = await within(accepted.packets.next(), 2 * GUARD_MS);
        assert(packet !== undefined, "no SUBSCRIBE (hang guard)");
        const type = packet[0] >> 4;
        if (type === 8) filters = subscriptionsOf(packet, 5);
        else if (type === 3) {
          const published = parsePublish(packet);
          if (published.qos > 0) await conn.write(pubackFor(published.id));
        }
      }
      const NO_LOCAL = 0x04;
      assertEquals(
        Object.fromEntries([...filters].map(([topic, options]) => [topic, options & NO_LOCAL])),
        {
          [topics.set]: 0,
          "homeassistant/status": 0,
          // Its probe must come back to it: that is what it checks.
          [topics.echo]: 0,
          [topics.availability]: NO_LOCAL,
          [topics.state]: NO_LOCAL,
        },
      );
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

testWithBroker(
  "MqttBridge names exactly the subscriptions the broker refused, from its SUBACK (a refused P/echo is not P/led/set), once per outage",
  async (t) => {
    const plugin = await dynamicSecurityOrSkip(t);
    if (plugin === undefined) return;
    // Loaded here: the MQTT library reads the environment as it loads.
    const { MqttBridge } = await import("../bridges/mqtt/bridge.ts");
    const topics = topicsFor(`test/${crypto.randomUUID().slice(0, 8)}`);
    const cases = [
      { denied: [topics.echo], granted: [topics.set, "homeassistant/status"] },
      { denied: [topics.set, "homeassistant/status"], granted: [topics.echo] },
    ];
    for (const { denied, granted } of cases) {
      await withTempDir(async (dir) => {
        await using broker = await startBroker(dir, {
          config: await denySubscriptions(dir, plugin, denied),
        });
        const said: string[] = [];
        const bridge = new MqttBridge({
          connection: {
            url: broker.url,
            clientId: "mmap-ipc-subscribe-test",
            backoff: { initialMs: 20, maxMs: 20, jitter: 0 },
          },
          topics,
          discoveryPrefix: "homeassistant",
          discovery: [],
          log: linesInto(said),
          onCommand: () => {},
        });
        const refusals = (level: string): string[] =>
          said.filter((line) => line.startsWith(`${level} Could not subscribe`));
        try {
          bridge.start();
          await until(() => refusals("WRN").length > 0, `a refusal by ${broker.url} said`);
          const [line] = refusals("WRN");
          for (const topic of denied) {
            assertStringIncludes(
              line,
              `${JSON.stringify(topic)} (reason code 0x87: Not authorized)`,
            );
          }
          for (const topic of granted) {
            assert(
              !line.includes(JSON.stringify(topic)),
              `${topic} was granted, yet named:\n${line}`,
            );
          }
          assertStringIncludes(line, "its ACL does not let anonymous clients subscribe there");
          // Each connection is refused again: within the outage (connections shorter than 10
          // s), said at debug level only.
          for (let connection = 2; connection <= 3; connection++) {
            await broker.restart();
            await until(
              () => refusals("DBG").length === connection - 1,
              `the refusal on connection ${connection} to ${broker.url}`,
            );
          }
          assertEquals(refusals("WRN").length, 1, said.join("\n"));
        } finally {
          await bridge.close();
        }
      });
    }
  },
);

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "MqttBridge names a subscription an MQTT 3.1.1 broker refused (SUBACK 0x80) by 3.1.1's name, Failure, not MQTT 5's Unspecified error",
  async () => {
    // A fake broker: mosquitto speaks MQTT 5 to a client that asks for it, so the bridge never
    // falls back to 3.1.1 with it. This one refuses MQTT 5 (return code 1, as a 3.1.1 broker
    // answers another level), accepts the 3.1.1 connection that follows and refuses all its
    // subscriptions with 3.1.1's one code of failure.
    const { MqttBridge } = await import("../bridges/mqtt/bridge.ts");
    using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const url = `mqtt://127.0.0.1:${server.addr.port}`;
    const topics = topicsFor("test/failure");
    const said: string[] = [];
    const bridge = new MqttBridge({
      connection: {
        url,
        clientId: "mmap-ipc-failure-test",
        backoff: { initialMs: 20, maxMs: 20, jitter: 0 },
      },
      topics,
      discoveryPrefix: "homeassistant",
      discovery: [],
      log: linesInto(said),
      onCommand: () => {},
    });
    const conns: Deno.Conn[] = [];
    const refusals = (): string[] => said.filter((line) => line.startsWith("WRN Could not"));
    /** The protocol level of a CONNECT: after its fixed header and the name "MQTT". */
    const level = (packet: Uint8Array): number => packet[packet.indexOf(0x54, 2) + 2];
    const serve = async (): Promise<void> => {
      const first = await within(server.accept(), 2 * GUARD_MS);
      assert(first !== undefined, "no connection from the bridge (hang guard)");
      conns.push(first);
      assertEquals(level(await new PacketReader(first).next()), 5, "the first CONNECT's level");
      await first.write(new Uint8Array([0x20, 0x02, 0x00, 0x01]));
      first.close();
      const second = await within(server.accept(), 2 * GUARD_MS);
      assert(second !== undefined, "no second connection from the bridge (hang guard)");
      conns.push(second);
      const packets = new PacketReader(second);
      assertEquals(level(await packets.next()), 4, "the CONNECT after the refusal of MQTT 5");
      await second.write(new Uint8Array([0x20, 0x02, 0x00, 0x00]));
      for (;;) {
        const packet = await packets.next();
        const type = packet[0] >> 4;
        if (type === 8) {
          // 3.1.1 has no No Local (asked for over 5): an options byte with more than the QoS in
          // it is a malformed packet, for which a broker drops the connection.
          for (const [topic, options] of subscriptionsOf(packet, 4)) {
            assertEquals(options & ~0x03, 0, `the options of ${topic} over 3.1.1`);
          }
          // SUBSCRIBE in 3.1.1: packet id, then each filter (length, topic, QoS); no properties.
          let at = 1;
          while (packet[at++] & 0x80);
          const id = [packet[at], packet[at + 1]];
          let filters = 0;
          for (at += 2; at < packet.length; filters++) {
            at += 2 + ((packet[at] << 8) | packet[at + 1]) + 1;
          }
          await second.write(
            new Uint8Array([0x90, 2 + filters, ...id, ...Array(filters).fill(0x80)]),
          );
        } else if (type === 3) {
          const published = parsePublish(packet);
          if (published.qos > 0) await second.write(pubackFor(published.id));
        }
      }
    };
    const serving = serve().catch((error) => error);
    let ended: unknown;
    try {
      bridge.start();
      await until(() => refusals().length > 0, `the refusal by ${url} said`);
      const [line] = refusals();
      for (const topic of [topics.set, "homeassistant/status", topics.echo]) {
        assertStringIncludes(line, `${JSON.stringify(topic)} (reason code 0x80: Failure)`);
      }
      assert(!line.includes("Unspecified error"), line);
    } finally {
      await bridge.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // Closed already.
        }
      }
      server.close();
      ended = await serving;
    }
    // The fake broker ends when the bridge hangs up; an assertion of its own is the test's.
    if (ended instanceof AssertionError) throw ended;
  },
);

/** A bridge on a real broker at `url`, under `clientId`, saying what happens into `said`. */
async function bridgeOn(
  url: string,
  topics: Topics,
  clientId: string,
  said: string[],
  onCommand: (command: Command) => void = () => {},
): Promise<MqttBridge> {
  // Loaded here: the MQTT library reads the environment as it loads.
  const { MqttBridge } = await import("../bridges/mqtt/bridge.ts");
  return new MqttBridge({
    connection: { url, clientId, backoff: { initialMs: 50, maxMs: 200, jitter: 0 } },
    topics,
    discoveryPrefix: "homeassistant",
    discovery: discoveryMessages({
      discoveryPrefix: "homeassistant",
      deviceId: "watch",
      deviceName: "watch",
      model: "test",
      version: "0.0.0",
      topics,
    }),
    log: linesInto(said),
    onCommand,
  });
}

/** The lines of `said` at `level` that hold `text`. */
function saidAt(said: string[], level: string, text: string): string[] {
  return said.filter((line) => line.startsWith(`${level} `) && line.includes(text));
}

testWithBroker(
  "two systems on one prefix (another machine, another client id): each says the other's echo, and the one left running puts back the availability the other's goodbye wrote over",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      const topics = topicsFor(`test/${crypto.randomUUID().slice(0, 8)}`);
      const saidA: string[] = [];
      const saidB: string[] = [];
      const a = await bridgeOn(broker.url, topics, "mmap-ipc-pi1-aaaaaa-kitchen", saidA);
      const b = await bridgeOn(broker.url, topics, "mmap-ipc-pi2-bbbbbb-kitchen", saidB);
      try {
        a.setState(true);
        a.start();
        await until(() => a.connected, "bridge A connected");
        b.setState(true);
        b.start();
        // B's echo reaches A as B connects; A's answer reaches B.
        const other = "as a bridge of another system on this prefix does";
        await until(() => saidAt(saidA, "WRN", other).length === 1, "A saying B's echo");
        await until(() => saidAt(saidB, "WRN", other).length === 1, "B saying A's echo");
        // B stops: its goodbye, offline, retained (a SIGKILL leaves its will, the same).
        await b.close();
        await until(
          () => saidAt(saidA, "WRN", `Another client wrote "offline"`).length === 1,
          "A putting back its availability",
        );
        await using late = await listen(broker.url, [topics.availability]);
        assertEquals((await late.waitFor(topics.availability)).payload, "online");
        assertEquals(saidAt(saidA, "WRN", other).length, 1, "said once");
      } finally {
        await b.close();
        await a.close();
      }
    });
  },
);

testWithBroker(
  "a state another client writes over the bridge's is put back, said once a minute; the bridge's own copies, however fast it changes, are not another's",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      const topics = topicsFor(`test/${crypto.randomUUID().slice(0, 8)}`);
      const said: string[] = [];
      const bridge = await bridgeOn(broker.url, topics, "mmap-ipc-state-watch", said);
      const overwritten = "Another client wrote";
      try {
        bridge.setState(true);
        bridge.start();
        await using user = await listen(broker.url, [topics.state]);
        await user.waitFor(topics.state, { payload: "ON" });
        // 200 changes back to back: the copies come back behind the publishes.
        for (let i = 0; i < 200; i++) {
          bridge.setState(i % 2 === 0);
          if (i % 10 === 0) await delay(1);
        }
        bridge.setState(true);
        await delay(1_500); // past the wait before putting anything back
        assertEquals(said.filter((line) => line.includes(overwritten)), [], "its own copies");
        // A clumsy user writes over it, retained: garbage, then the other state.
        let since = user.heard.length;
        await user.publish(topics.state, "garbage", { retain: true });
        await user.waitFor(topics.state, { payload: "ON", since: since + 1 });
        assertEquals(saidAt(said, "WRN", `${overwritten} "garbage" on`).length, 1);
        since = user.heard.length;
        await user.publish(topics.state, "OFF", { retain: true });
        await user.waitFor(topics.state, { payload: "ON", since: since + 1 });
        assertEquals(saidAt(said, "DBG", `${overwritten} "OFF" on`).length, 1, "said once");
        await using late = await listen(broker.url, [topics.state]);
        assertEquals((await late.waitFor(topics.state)).payload, "ON");
      } finally {
        await bridge.close();
      }
    });
  },
);

/** What {@link withBridgeUp} hands its test. */
interface BridgeUp {
  bridge: MqttBridge;
  topics: Topics;
  said: string[];
  /** A client of the test's on the same broker. */
  user: Listener;
}

/**
 * Runs `test` with a bridge (state OFF) on a fresh mosquitto, connected and subscribed, whose
 * commands go to `onCommand`; closes everything after.
 */
async function withBridgeUp(
  clientId: string,
  onCommand: (command: Command) => void,
  test: (up: BridgeUp) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    await using broker = await startBroker(dir);
    const topics = topicsFor(`test/${crypto.randomUUID().slice(0, 8)}`);
    const said: string[] = [];
    const bridge = await bridgeOn(broker.url, topics, clientId, said, onCommand);
    try {
      bridge.setState(false);
      bridge.start();
      await until(() => said.some((line) => line.includes("Published availability")), "up");
      await delay(300); // subscribed: a retained command then comes live
      await using user = await listen(broker.url, []);
      await test({ bridge, topics, said, user });
    } finally {
      await bridge.close();
    }
  });
}

testWithBroker(
  "a retained command cleared as the README says (mosquitto_pub -r -n) is no malformed payload to warn of",
  async () => {
    const commands: string[] = [];
    await withBridgeUp(
      "mmap-ipc-clear",
      (c) => commands.push(c),
      async ({ topics, said, user }) => {
        await user.publish(topics.set, "TOGGLE", { retain: true });
        await until(() => commands.length === 1, "the retained TOGGLE applied once");
        await user.publish(topics.set, "", { retain: true });
        await user.publish(topics.set, "ON");
        await until(() => commands.length === 2, "the ON after it");
        assertEquals(said.filter((line) => line.startsWith("WRN")), []);
      },
    );
  },
);

testWithBroker(
  "a command its taker throws at is said as an error, not thrown into the MQTT library (which would end the process without its goodbye)",
  async () => {
    let taken = 0;
    const throwing = (): void => {
      taken++;
      throw new Deno.errors.BadResource("The command forwarder is closed");
    };
    const uncaught: unknown[] = [];
    const onError = (event: ErrorEvent): void => {
      uncaught.push(event.error);
      event.preventDefault();
    };
    globalThis.addEventListener("error", onError);
    try {
      await withBridgeUp("mmap-ipc-throwing", throwing, async ({ bridge, topics, said, user }) => {
        await user.publish(topics.set, "ON");
        await user.publish(topics.set, "OFF");
        await until(() => saidAt(said, "ERR", "Cannot apply the command").length === 2, "said");
        assertEquals(taken, 2);
        assertStringIncludes(
          saidAt(said, "ERR", "OFF")[0],
          `Cannot apply the command OFF from ${topics.set}: The command forwarder is closed`,
        );
        await delay(100);
        assertEquals(uncaught, []);
        assert(bridge.connected, "the bridge stays up");
      });
    } finally {
      globalThis.removeEventListener("error", onError);
    }
  },
);

testWith(
  ["env", { name: "net", host: "127.0.0.1" }],
  "over MQTT 3.1.1, a copy of the bridge's own older state, the newer one's copy lost (a broker drops copies under load), is not taken for another client's; a state heard with none of its own awaited is",
  async () => {
    // Over 3.1.1, which cannot ask the broker not to send a client's own messages back (over 5
    // the bridge does: a state it hears there is always another client's).
    const { MqttBridge } = await import("../bridges/mqtt/bridge.ts");
    using server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const topics = topicsFor("test/copies");
    const said: string[] = [];
    const bridge = new MqttBridge({
      connection: {
        url: `mqtt://127.0.0.1:${server.addr.port}`,
        clientId: "mmap-ipc-copies",
        backoff: { initialMs: 20, maxMs: 20, jitter: 0 },
      },
      topics,
      discoveryPrefix: "homeassistant",
      discovery: [],
      log: linesInto(said),
      onCommand: () => {},
    });
    const states: string[] = [];
    let conn: Deno.TcpConn | undefined;
    let serving: Promise<unknown> = Promise.resolve();
    try {
      bridge.setState(true);
      bridge.start();
      // MQTT 5 refused as a 3.1.1 broker refuses it (return code 1); the next CONNECT is 3.1.1.
      const refused = await within(server.accept(), 2 * GUARD_MS);
      assert(refused !== undefined, "no connection from the bridge (hang guard)");
      await new PacketReader(refused).next();
      await refused.write(new Uint8Array([0x20, 0x02, 0x00, 0x01]));
      refused.close();
      const accepted = await within(server.accept(), 2 * GUARD_MS);
      assert(accepted !== undefined, "no second connection from the bridge (hang guard)");
      conn = accepted;
      const client = conn;
      const packets = new PacketReader(client);
      await packets.next(); // its CONNECT
      await client.write(new Uint8Array([0x20, 0x02, 0x00, 0x00]));
      // Answers everything; the copies of the state are the test's to send.
      serving = (async () => {
        for (;;) {
          const packet = await packets.next();
          const type = packet[0] >> 4;
          if (type === 8) await client.write(subackFor(packet, 4));
          if (type !== 3) continue;
          const published = parsePublish(packet, 4);
          if (published.topic === topics.state) states.push(published.payload);
          if (published.qos > 0) await client.write(pubackFor(published.id));
        }
      })().catch((error) => error);
      await until(() => states.length === 1, "the state published");
      await delay(100); // subscribed
      bridge.setState(false);
      await until(() => states.length === 2, "the new state published");
      assertEquals(states, ["ON", "OFF"]);
      // The copy of ON comes back; OFF's is lost. Before, ON counted as another client's.
      await client.write(publishPacket(topics.state, "ON", 4));
      await delay(1_500); // past the wait before putting anything back
      assertEquals(states, ["ON", "OFF"], "nothing put back");
      assertEquals(said.filter((line) => line.includes("Another client wrote")), []);
      // Now nothing of its own is awaited: an ON is another client's.
      await client.write(publishPacket(topics.state, "ON", 4));
      await until(() => states.length === 3, "the state put back");
      assertEquals(states[2], "OFF");
      assertEquals(saidAt(said, "WRN", `Another client wrote "ON" on`).length, 1);
    } finally {
      await bridge.close();
      try {
        conn?.close();
      } catch {
        // Closed by the bridge already.
      }
      await serving;
    }
  },
);

testWith(
  ["env", { name: "net", host: "127.0.0.1" }, "read"],
  "over MQTT 3.1.1 (aedes), a message retained by anyone, longer than the bridge takes, on a topic it subscribes to is left out, and the bridge stays connected",
  async () => {
    await using broker = await startAedes();
    const { url } = broker;
    const topics = topicsFor(`test/${crypto.randomUUID().slice(0, 8)}`);
    const said: string[] = [];
    const commands: Command[] = [];
    const bridge = await bridgeOn(url, topics, "mmap-ipc-big", said, (c) => commands.push(c));
    try {
      {
        await using vandal = await listen(url, [], { protocolVersion: 4 });
        await vandal.publish("homeassistant/status", "x".repeat(5000), { retain: true });
        await vandal.publish(topics.echo, "y".repeat(5000), { retain: true });
      }
      bridge.setState(true);
      bridge.start();
      await until(() => bridge.connected, "the bridge connected");
      // Before, each connection was dropped at the retained message, and came back to it.
      await until(() => saidAt(said, "WRN", "left it out unread").length === 2, "both said");
      await delay(1_000);
      assert(bridge.connected, "connected");
      assertEquals(said.filter((line) => line.includes("Lost the connection")), []);
      // Commands flow.
      await using user = await listen(url, [], { protocolVersion: 4 });
      await user.publish(topics.set, "OFF");
      await until(() => commands.length === 1, "the command");
    } finally {
      await bridge.close();
    }
  },
);
