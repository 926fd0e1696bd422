/**
 * The MQTT bridge end to end: the real launcher with `--mqtt`, its button, LED and bridge
 * processes, a real mosquitto on a free loopback port, and a real MQTT client (npm `mqtt`).
 */
import { assert, assertEquals, assertMatch, assertStringIncludes, assertThrows } from "@std/assert";
import { deviceId, type Topics, topicsFor } from "../bridges/mqtt/topics.ts";
import type { ChildProcess } from "./helpers/child_process.ts";
import { claimRecordsMentioning } from "./helpers/claims.ts";
import { writeAndLeave } from "./helpers/fifo.ts";
import { ROOT } from "./helpers/paths.ts";
import { NEEDS, requires, skippedWithoutRoot, testWith } from "./helpers/permissions.ts";
import { makeFifo } from "../ffi/posix.ts";
import { environOf, killIfRunning, processGone } from "./helpers/proc.ts";
import { spawnDeno, spawnProgram, taskArgs } from "./helpers/spawn.ts";
import {
  LAUNCH_PERMISSIONS,
  launcherCommand,
  LED_LINE,
  ledShows,
  ledStates,
  running,
  startLauncher,
  startLauncherAs,
  stopAll,
  unusedUid,
} from "./helpers/system.ts";
import { withTempDir } from "./helpers/temp.ts";
import {
  CONNACK_5,
  PacketReader,
  parsePublish,
  pubackFor,
  subackFor,
} from "./helpers/fake_broker.ts";
import { delay, until } from "./helpers/waiting.ts";
import {
  denySubscriptions,
  dynamicSecurityOrSkip,
  freePort,
  listen,
  type Listener,
  makeCertificates,
  startAedes,
  startBroker,
  testWithBroker,
} from "./helpers/mqtt.ts";
import { discoveryMessages, discoveryTopics, ORIGIN_NAME } from "../bridges/mqtt/discovery.ts";

/** A launcher with `--mqtt`, and what a test needs to talk to it. */
interface System extends AsyncDisposable {
  launcher: ChildProcess;
  fifo: string;
  prefix: string;
  topics: Topics;
  /** The pid of the bridge started last. */
  bridgePid(since?: number): Promise<number>;
}

async function startSystem(
  dir: string,
  url: string,
  options: {
    args?: string[];
    env?: Record<string, string>;
    connected?: boolean;
    fifo?: string;
    prefix?: string;
  } = {},
): Promise<System> {
  const fifo = options.fifo ?? `${dir}/button.fifo`;
  const prefix = options.prefix ?? `test/${crypto.randomUUID().slice(0, 8)}`;
  const launcher = spawnDeno(
    `${ROOT}launch.ts`,
    ["--fifo", fifo, "--mqtt", url, "--mqtt-prefix", prefix, ...(options.args ?? [])],
    { permissions: LAUNCH_PERMISSIONS, cwd: dir, env: options.env },
  );
  const system: System = {
    launcher,
    fifo,
    prefix,
    topics: topicsFor(prefix),
    async bridgePid(since = 0): Promise<number> {
      return Number((await launcher.waitFor(/Started mqtt \(pid (\d+)\)/, { since })).match[1]);
    },
    async [Symbol.asyncDispose](): Promise<void> {
      const pids = launcher.lines.flatMap((line) => {
        const match = /Started \w+ \(pid (\d+)\)/.exec(line.text);
        return match ? [Number(match[1])] : [];
      });
      launcher.kill("SIGTERM");
      const timer = setTimeout(() => launcher.kill("SIGKILL"), 10_000);
      await launcher.status();
      clearTimeout(timer);
      for (const pid of pids) killIfRunning(pid);
    },
  };
  try {
    await launcher.waitFor(/Button ready/);
    await launcher.waitFor(LED_LINE);
    if (options.connected ?? true) await launcher.waitFor(/Connected to mqtt/);
  } catch (error) {
    await system[Symbol.asyncDispose]();
    throw error;
  }
  return system;
}

/**
 * A press, seen by `listener` as the action and the state ON; then `set` OFF from it, seen by
 * the LED and as the state OFF: both ways through the broker work.
 */
async function pressAndSetOff(system: System, listener: Listener): Promise<void> {
  const { launcher, topics } = system;
  await writeAndLeave(system.fifo, "0\n");
  await listener.waitFor(topics.action, { payload: "press" });
  await listener.waitFor(topics.state, { payload: "ON" });
  const since = launcher.lines.length;
  const mark = listener.heard.length;
  await listener.publish(topics.set, "OFF");
  await ledShows(launcher, "Off", since);
  await listener.waitFor(topics.state, { payload: "OFF", since: mark });
}

/** The login of the test brokers' user who may do anything (see {@link bridgeAcl}). */
const ADMIN = { username: "admin", password: "admin pw" };

/**
 * A mosquitto ACL where user "bridge" may write `writes` and read its commands and Home
 * Assistant's status, and {@link ADMIN} may do anything.
 */
function bridgeAcl(topics: Topics, writes: string[]): string {
  return [
    "user bridge",
    ...writes.map((topic) => `topic write ${topic}`),
    `topic read ${topics.set}`,
    "topic read homeassistant/status",
    "",
    `user ${ADMIN.username}`,
    "topic readwrite #",
  ].join("\n") + "\n";
}

/** Checks the two discovery configs field by field. */
function checkDiscovery(listener: Listener, prefix: string, since = 0): void {
  const id = deviceId(prefix);
  const topics = topicsFor(prefix);
  const light = listener.on(`homeassistant/light/${id}/led/config`, since);
  const trigger = listener.on(
    `homeassistant/device_automation/${id}/button_short_press/config`,
    since,
  );
  assertEquals(light.length >= 1 && trigger.length >= 1, true, "both discovery configs");
  const lightConfig = JSON.parse(light[light.length - 1].payload);
  const triggerConfig = JSON.parse(trigger[trigger.length - 1].payload);
  const device = lightConfig.device;
  assertEquals(device.identifiers, [id]);
  assertEquals(device.manufacturer, "mmap-ipc");
  assertEquals(device.model, "Button and LED (PC build)");
  assertMatch(device.name, /^mmap-ipc /);
  assertMatch(device.sw_version, /^\d+\.\d+\.\d+/);
  assertEquals(lightConfig.name, "LED");
  assertEquals(lightConfig.unique_id, `${id}_led`);
  assertEquals(lightConfig.schema, "basic");
  assertEquals(lightConfig.command_topic, topics.set);
  assertEquals(lightConfig.state_topic, topics.state);
  assertEquals(lightConfig.payload_on, "ON");
  assertEquals(lightConfig.payload_off, "OFF");
  assertEquals(lightConfig.availability_topic, topics.availability);
  assertEquals(lightConfig.payload_available, "online");
  assertEquals(lightConfig.payload_not_available, "offline");
  assertEquals(lightConfig.origin.name, "mmap-ipc");
  assertEquals(triggerConfig.automation_type, "trigger");
  assertEquals(triggerConfig.topic, topics.action);
  assertEquals(triggerConfig.type, "button_short_press");
  assertEquals(triggerConfig.subtype, "button_1");
  assertEquals(triggerConfig.payload, "press");
  assertEquals(triggerConfig.device, device, "one device for both");
}

/** Waits until the newest message on `topic` is `payload`. */
async function latestIs(listener: Listener, topic: string, payload: string): Promise<void> {
  for (let since = 0;;) {
    const heard = await listener.waitFor(topic, { since });
    since = listener.heard.indexOf(heard) + 1;
    const all = listener.on(topic);
    if (all[all.length - 1].payload === payload) return;
  }
}

testWithBroker(
  "MQTT bridge: state, presses, commands, discovery, bad payloads, a flood, a killed bridge, a restarted broker",
  async (t) => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      // Debug logs: the button says which remote command it applied, the flood's barrier below.
      await using system = await startSystem(dir, broker.url, { args: ["--log-level", "debug"] });
      const { launcher, topics, prefix } = system;
      const bridgePid = await system.bridgePid();
      await using early = await listen(broker.url, [`${prefix}/#`]);
      await early.waitFor(topics.state, { payload: "OFF" });

      await t.step(
        "a late subscriber gets availability, the state and the discovery configs, retained",
        async () => {
          await using late = await listen(broker.url, [`${prefix}/#`, "homeassistant/#"]);
          assertEquals((await late.waitFor(topics.availability)).payload, "online");
          const state = await late.waitFor(topics.state);
          assertEquals([state.payload, state.retain], ["OFF", true]);
          await late.waitFor(`homeassistant/light/${deviceId(prefix)}/led/config`);
          await late.waitFor(
            `homeassistant/device_automation/${deviceId(prefix)}/button_short_press/config`,
          );
          assert(late.heard.every((message) => message.retain), "all retained");
          checkDiscovery(late, prefix);
        },
      );

      let since = launcher.lines.length;
      await t.step("a press is published on button/action and the LED state follows", async () => {
        const mark = early.heard.length;
        await writeAndLeave(system.fifo, "0\n");
        since = await ledShows(launcher, "On", since);
        assertEquals((await early.waitFor(topics.action, { since: mark })).payload, "press");
        assertEquals((await early.waitFor(topics.state, { since: mark })).payload, "ON");
      });

      await t.step("set OFF, on and TOGGLE reach the LED through the button process", async () => {
        for (
          const [payload, led, state] of [["OFF", "Off", "OFF"], ["on", "On", "ON"], [
            "TOGGLE",
            "Off",
            "OFF",
          ]] as const
        ) {
          const mark = early.heard.length;
          await early.publish(topics.set, payload);
          since = await ledShows(launcher, led, since);
          await early.waitFor(topics.state, { payload: state, since: mark });
        }
        assertEquals(early.on(topics.action).length, 1, "commands are not presses");
      });

      await t.step("malformed payloads are ignored, each kind logged once", async () => {
        const ignoredBefore = launcher.matching(/Ignored/).length;
        const ledBefore = launcher.matching(LED_LINE).length;
        const bad: (string | Uint8Array)[] = [
          // Longer than the Maximum Packet Size the bridge asks for (MQTT 5): the broker drops
          // it, and the bridge never holds a megabyte to refuse it.
          new Uint8Array(1 << 20).fill(0x41),
          "bogus",
          "also bogus",
          "",
          "   ",
          "x".repeat(100),
          "y".repeat(1000),
          new Uint8Array([0xff, 0xfe, 0x4f]),
          new Uint8Array([0xc3]),
        ];
        for (const payload of bad) await early.publish(topics.set, payload);
        await early.publish(topics.set, "ON");
        since = await ledShows(launcher, "On", since);
        // The bridge logs what it ignored before the ON that follows (its second "ON").
        await until(
          () => launcher.matching(/mqtt: Command ON/).length === 2,
          "the ON parsed",
          { timeoutMs: 20_000 },
        );
        const ignored = launcher.matching(/Ignored/).slice(ignoredBefore);
        assertEquals(ignored.length, 4, ignored.join("\n"));
        for (const kind of ["not ON, OFF or TOGGLE", "blank", "too long", "not UTF-8"]) {
          assertEquals(ignored.filter((line) => line.includes(kind)).length, 1, kind);
        }
        const tooLong = ignored.find((line) => line.includes("too long")) ?? "";
        assertStringIncludes(tooLong, "(100 bytes)", "the first too long to reach the bridge");
        assertEquals(
          launcher.matching(LED_LINE).length,
          ledBefore + 1,
          "only the last ON moved the LED",
        );
      });

      await t.step(
        "a flood of set commands leaves the bridge up and responsive, and the LED ends at the last command",
        async () => {
          const beforeFlood = launcher.lines.length;
          const flood = [];
          for (let i = 0; i < 3000; i++) flood.push(early.publish(topics.set, "TOGGLE"));
          flood.push(early.publish(topics.set, "ON"));
          await Promise.all(flood);
          // Folding toggles never makes an ON, so the button applying this ON (its third: "on"
          // and "ON" came before) means the flood is through. Counted: children's lines interleave.
          await until(
            () => launcher.matching(/Remote command ON: state 1/).length === 3,
            "the flood applied",
            { timeoutMs: 60_000 },
          );
          await until(() => ledStates(launcher).at(-1) === "On", "the LED on", {
            timeoutMs: 20_000,
          });
          await latestIs(early, topics.state, "ON");
          since = launcher.lines.length;
          assert(!processGone(bridgePid), "the same bridge process still runs");
          assertEquals(launcher.matching(/Started mqtt/).length, 1);
          const applied = launcher.matching(/Remote command/).length;
          assert(applied <= 3000 + 4, `${applied} commands applied`);
          // Behind and caught up again many times: said once, not once each time.
          const behind = launcher.matching(/behind with commands/, beforeFlood);
          assert(behind.length <= 1, behind.join("\n"));
        },
      );

      await t.step(
        "Home Assistant coming online (its birth message) gets the discovery and state again",
        async () => {
          const mark = early.heard.length;
          await using ha = await listen(broker.url, ["homeassistant/#"]);
          await ha.waitFor(`homeassistant/light/${deviceId(prefix)}/led/config`);
          const retained = ha.heard.length;
          await ha.publish("homeassistant/status", "online");
          await launcher.waitFor(/Home Assistant \(re\)started/, { since });
          const again = await ha.waitFor(`homeassistant/light/${deviceId(prefix)}/led/config`, {
            since: retained,
          });
          assertEquals(again.retain, false, "published anew, not the retained copy");
          await early.waitFor(topics.state, { payload: "ON", since: mark });
          await early.waitFor(topics.availability, { payload: "online", since: mark });
          // Anyone may publish there: a flood costs one announcement a second, not one each
          // (which took the bridge to hundreds of MiB and a log line per message).
          const flooded = launcher.lines.length;
          const beforeFlood = ha.heard.length;
          const started = performance.now();
          const flood = [];
          for (let i = 0; i < 2000; i++) flood.push(ha.publish("homeassistant/status", "online"));
          await Promise.all(flood);
          await ha.waitFor(`homeassistant/light/${deviceId(prefix)}/led/config`, {
            since: beforeFlood,
          });
          await delay(1500); // the announcement the flood's end may still owe
          const seconds = (performance.now() - started) / 1000;
          const announced = launcher.matching(/Home Assistant \(re\)started/, flooded).length;
          assert(
            announced >= 1 && announced <= Math.ceil(seconds) + 1,
            `${announced} announcements in ${seconds.toFixed(1)} s`,
          );
          assert(!processGone(bridgePid), "the bridge process died");
        },
      );

      await t.step(
        "a killed bridge leaves its will (offline); the restarted one is online with the state and does not apply a retained command again",
        async () => {
          // Retained, so the restarted bridge hears it again when it subscribes.
          await early.publish(topics.set, "TOGGLE", { retain: true });
          since = await ledShows(launcher, "Off", since);
          const mark = early.heard.length;
          const lines = launcher.lines.length;
          const leds = launcher.matching(LED_LINE).length;
          Deno.kill(bridgePid, "SIGKILL");
          await early.waitFor(topics.availability, { payload: "offline", since: mark });
          const restarted = await system.bridgePid(lines);
          assert(restarted !== bridgePid);
          await early.waitFor(topics.availability, { payload: "online", since: mark });
          await early.waitFor(topics.state, { payload: "OFF", since: mark });
          const retained = await launcher.waitFor(/Ignored a retained message/, { since: lines });
          assertStringIncludes(retained.match.input, "applied again at every reconnect");
          await early.publish(topics.set, "", { retain: true }); // clears the retained command
          await early.publish(topics.set, "ON");
          since = await ledShows(launcher, "On", since);
          assertEquals(launcher.matching(LED_LINE).length, leds + 1, "the TOGGLE was applied once");
        },
      );

      await t.step(
        "a restarted broker gets the state and discovery again, and commands still work",
        async () => {
          const lines = launcher.lines.length;
          await broker.restart();
          await launcher.waitFor(/Lost the connection/, { since: lines });
          await launcher.waitFor(/Connected to mqtt/, { since: lines });
          // The first listener may hear the bridge republish; the one after it must get it retained.
          await using first = await listen(broker.url, [topics.state]);
          await first.waitFor(topics.state, { payload: "ON" });
          await using late = await listen(broker.url, [`${prefix}/#`, "homeassistant/#"]);
          const state = await late.waitFor(topics.state);
          assertEquals([state.payload, state.retain], ["ON", true]);
          assertEquals((await late.waitFor(topics.availability)).payload, "online");
          await late.waitFor(
            `homeassistant/device_automation/${deviceId(prefix)}/button_short_press/config`,
          );
          checkDiscovery(late, prefix);
          await late.publish(topics.set, "TOGGLE");
          since = await ledShows(launcher, "Off", since);
          await late.waitFor(topics.state, { payload: "OFF" });
        },
      );
    });
  },
);

testWithBroker(
  "MQTT bridge: a retained Home Assistant `online` on the broker does not make each connection announce twice",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      {
        // Home Assistant's birth message, kept by the broker (a setup some users choose).
        await using ha = await listen(broker.url, []);
        await ha.publish("homeassistant/status", "online", { retain: true });
      }
      await using watcher = await listen(broker.url, ["homeassistant/#"]);
      await using system = await startSystem(dir, broker.url);
      const config = `homeassistant/light/${deviceId(system.prefix)}/led/config`;
      await watcher.waitFor(config);
      // An answer to the retained copy would come within the second announcements are apart.
      await delay(2500);
      assertEquals(watcher.on(config).length, 1, "discovery announced more than once");
      assertEquals(system.launcher.matching(/Home Assistant \(re\)started/), []);
      // Home Assistant starting again, live, is still answered.
      await watcher.publish("homeassistant/status", "online");
      await system.launcher.waitFor(/Home Assistant \(re\)started/);
      await watcher.waitFor(config, { since: watcher.heard.indexOf(watcher.on(config)[0]) + 1 });
    });
  },
);

testWithBroker(
  "MQTT bridge: to a broker with a small Maximum Packet Size it sends no longer message, says once which, and state, presses and commands flow",
  async () => {
    await withTempDir(async (dir) => {
      // Below the discovery configs (some 600 bytes), above the state, press and availability.
      await using broker = await startBroker(dir, { maxPacketSize: 200 });
      await using system = await startSystem(dir, broker.url);
      const { launcher, topics, prefix } = system;
      const config = `homeassistant/light/${deviceId(prefix)}/led/config`;
      const told = await launcher.waitFor(/Did not send a message on "[^"]+" of \d+ bytes/);
      assertStringIncludes(
        told.match.input,
        `the broker at ${broker.url} takes packets of at most 200`,
      );
      await using listener = await listen(broker.url, [`${prefix}/#`]);
      assertEquals((await listener.waitFor(topics.availability)).payload, "online");
      assertEquals((await listener.waitFor(topics.state)).payload, "OFF");
      await pressAndSetOff(system, listener);
      const skipped = launcher.matching(/Did not send a message on/);
      assert(
        skipped.some((line) => line.includes(JSON.stringify(config))),
        `no word of the discovery config ${config} the broker at ${broker.url} would not take:\n` +
          launcher.transcript,
      );
      assertEquals(
        skipped.length,
        2,
        `each of the two discovery configs once:\n${skipped.join("\n")}`,
      );
      assertEquals(
        launcher.matching(/Connected to mqtt/).length,
        1,
        `the bridge stayed connected to ${broker.url}:\n${launcher.transcript}`,
      );
      assert(
        !broker.transcript.includes("oversize"),
        `the broker at ${broker.url} dropped the bridge for an oversize packet:\n${broker.transcript}`,
      );
    });
  },
);

testWithBroker(
  "MQTT bridge: with the broker down at start the LED follows presses; the bridge connects when it comes",
  async () => {
    await withTempDir(async (dir) => {
      const port = freePort();
      await using system = await startSystem(dir, `mqtt://127.0.0.1:${port}`, { connected: false });
      const { launcher, topics, prefix } = system;
      await launcher.waitFor(/Cannot reach the broker .* \(ECONNREFUSED\)/);
      await writeAndLeave(system.fifo, "0\n");
      await ledShows(launcher, "On", 0);
      await using broker = await startBroker(dir, { port });
      await launcher.waitFor(
        /Connected to mqtt:\/\/127\.0\.0\.1:\d+ as \S+ \(after \d+ failed attempts\)/,
      );
      await using late = await listen(broker.url, [`${prefix}/#`]);
      assertEquals((await late.waitFor(topics.state)).payload, "ON");
      assertEquals(launcher.matching(/ECONNREFUSED/).length, 1, "the outage is reported once");
      assertEquals(launcher.matching(/Started mqtt/).length, 1, "the bridge never crashed");
    });
  },
);

testWith(
  [...NEEDS.system, { name: "net", host: "127.0.0.1" }],
  "MQTT bridge to a real broker that speaks only MQTT 3.1.1 (aedes): refused in MQTT 5, it says so once, speaks 3.1.1, and state, presses and commands all flow",
  async () => {
    await using broker = await startAedes();
    const { url } = broker;
    await withTempDir(async (dir) => {
      await using system = await startSystem(dir, url);
      const { launcher, topics } = system;
      await launcher.waitFor(/refused it in MQTT 5: using 3\.1\.1/);
      // A client of its own that speaks 3.1.1, as every client of this broker must.
      await using listener = await listen(url, [topics.state, topics.action], {
        protocolVersion: 4,
      });
      assertEquals((await listener.waitFor(topics.state)).payload, "OFF");
      await pressAndSetOff(system, listener);
      assertEquals(launcher.matching(/in MQTT 5: using 3\.1\.1/).length, 1, "said once");
      assertEquals(launcher.matching(/Started mqtt/).length, 1, "the bridge never crashed");
    });
  },
);

testWithBroker(
  "MQTT bridge: a wrong password is refused with one clear message and no crash loop; the LED still works",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir, { users: { alice: "right" } });
      const credentials = `${dir}/mqtt.login`;
      await Deno.writeTextFile(credentials, "username=alice\npassword=wrong\n", { mode: 0o600 });
      await using system = await startSystem(dir, broker.url, {
        args: ["--mqtt-credentials", credentials, "--log-level", "debug"],
        connected: false,
      });
      const { launcher } = system;
      const refused = await launcher.waitFor(/refused the connection/);
      assertMatch(refused.match.input, /not authorized|bad user name or password/);
      assertStringIncludes(refused.match.input, `user "alice" from file "${credentials}"`);
      assert(!refused.match.input.includes("wrong"), "the password is never logged");
      // Several more attempts, all refused, none reported again.
      for (let attempt = 0, since = refused.index; attempt < 3; attempt++) {
        since = (await launcher.waitFor(/Next attempt to connect/, { since })).index + 1;
      }
      assertEquals(launcher.matching(/\[ERR\].*refused the connection/).length, 1);
      assertEquals(launcher.matching(/Started mqtt/).length, 1, "the bridge never crashed");
      await writeAndLeave(system.fifo, "0\n");
      await ledShows(launcher, "On", 0);
    });
  },
);

testWithBroker(
  "MQTT bridge: a state the broker refused is published once its owner lets it (the ACL changed and reloaded), with no new connection and no new state, and that is said",
  async () => {
    await withTempDir(async (dir) => {
      const prefix = `test/${crypto.randomUUID().slice(0, 8)}`;
      const topics = topicsFor(prefix);
      const acl = (state: boolean): string =>
        bridgeAcl(topics, [
          topics.availability,
          topics.action,
          ...(state ? [topics.state] : []),
          "homeassistant/#",
        ]);
      const admin = ADMIN;
      await using broker = await startBroker(dir, {
        users: { bridge: "bridge pw", [admin.username]: admin.password },
        acl: acl(false),
      });
      await using system = await startSystem(dir, broker.url, {
        prefix,
        env: { MMAP_IPC_MQTT_USERNAME: "bridge", MMAP_IPC_MQTT_PASSWORD: "bridge pw" },
      });
      const { launcher } = system;
      const refused = await launcher.waitFor(/refused a message on "[^"]*\/state"/);
      assertStringIncludes(refused.match.input, JSON.stringify(topics.state));
      const since = launcher.lines.length;
      await broker.reloadAcl(acl(true));
      await using watcher = await listen(broker.url, [topics.state], admin);
      assertEquals((await watcher.waitFor(topics.state)).payload, "OFF");
      const accepted = await launcher.waitFor(/accepts messages on .* again/, { since });
      assertStringIncludes(accepted.match.input, JSON.stringify(topics.state));
      assertEquals(launcher.matching(/Lost the connection|Connected to mqtt/, since), []);
      assertEquals(ledStates(launcher), ["Off"], "the state published was not a new one");
    });
  },
);

testWithBroker(
  "MQTT bridge: a broker whose ACL denies the state and discovery topics gets each refusal said once, naming the topic; presses and commands still work",
  async () => {
    await withTempDir(async (dir) => {
      const prefix = `test/${crypto.randomUUID().slice(0, 8)}`;
      const topics = topicsFor(prefix);
      const id = deviceId(prefix);
      const denied = [
        topics.state,
        `homeassistant/light/${id}/led/config`,
        `homeassistant/device_automation/${id}/button_short_press/config`,
      ];
      // The bridge may write its availability (its will too) and presses, and read commands
      // and Home Assistant's status: not the state or the discovery configs. mosquitto answers
      // such a publish from an MQTT 5 client with PUBACK 0x87 at QoS 1, and with nothing at
      // QoS 0 (and to MQTT 3.1.1, a plain PUBACK): it never drops the connection for it.
      const acl = bridgeAcl(topics, [topics.availability, topics.action]);
      const admin = ADMIN;
      await using broker = await startBroker(dir, {
        users: { bridge: "bridge pw", [admin.username]: admin.password },
        acl,
      });
      // Debug logs: a refusal said again shows there, which tells the test it happened.
      await using system = await startSystem(dir, broker.url, {
        prefix,
        args: ["--log-level", "debug"],
        env: { MMAP_IPC_MQTT_USERNAME: "bridge", MMAP_IPC_MQTT_PASSWORD: "bridge pw" },
      });
      const { launcher } = system;
      const bridgePid = await system.bridgePid();
      /** The bridge's lines at `level` saying the broker refused a message on `topic`. */
      const refusals = (topic: string, level: "WRN" | "DBG"): string[] =>
        launcher.matching(/refused/).filter((line) =>
          line.includes(`[${level}]`) && line.includes(JSON.stringify(topic))
        );
      /** Waits until each denied topic was refused (and said at debug level) `times` in all. */
      const refusedAgain = async (times: number): Promise<void> => {
        for (const topic of denied) {
          await until(
            () => refusals(topic, "WRN").length + refusals(topic, "DBG").length >= times,
            `${times} refusals of ${topic} logged`,
            { child: launcher },
          );
        }
      };
      {
        await using watcher = await listen(broker.url, [`${prefix}/#`, "homeassistant/#"], admin);
        assertEquals((await watcher.waitFor(topics.availability)).payload, "online");
        await refusedAgain(1);
        for (const topic of denied) {
          const [line] = refusals(topic, "WRN");
          assertMatch(line, /not authorized/i);
          assertStringIncludes(line, "0x87");
          assertStringIncludes(line, 'user "bridge"');
        }
        // Home Assistant's birth message brings the same refusals again, and so does a
        // restarted broker below: said at debug level only, not once per announcement or
        // per connection.
        for (let round = 2; round <= 3; round++) {
          await watcher.publish("homeassistant/status", "online");
          await refusedAgain(round);
        }
      }
      const lines = launcher.lines.length;
      await broker.restart();
      await launcher.waitFor(/Lost the connection/, { since: lines });
      await launcher.waitFor(/Connected to mqtt/, { since: lines });
      await using watcher = await listen(broker.url, [`${prefix}/#`, "homeassistant/#"], admin);
      await refusedAgain(4);
      for (const topic of denied) {
        assertEquals(refusals(topic, "WRN").length, 1, refusals(topic, "WRN").join("\n"));
      }

      // The bridge runs on: presses go out, commands come in.
      let since = launcher.lines.length;
      await writeAndLeave(system.fifo, "0\n");
      since = await ledShows(launcher, "On", since);
      await watcher.waitFor(topics.action, { payload: "press" });
      await watcher.publish(topics.set, "OFF");
      since = await ledShows(launcher, "Off", since);
      await watcher.publish(topics.set, "TOGGLE");
      await ledShows(launcher, "On", since);
      assert(!processGone(bridgePid), "the bridge process died");
      assertEquals(launcher.matching(/Started mqtt/).length, 1, "the bridge never restarted");
      assertEquals(
        launcher.matching(/\[(WRN|ERR)\].*refused/).length,
        denied.length,
        "one warning per denied topic, none for the allowed ones",
      );
      for (const topic of denied) assertEquals(watcher.on(topic), [], `${topic} got through`);
    });
  },
);

testWithBroker(
  "MQTT bridge: a broker whose ACL lets it write under its prefix but not read there (it grants the subscription and delivers nothing) gets that said, naming the topics, where commands were lost without a word",
  async () => {
    await withTempDir(async (dir) => {
      const prefix = `test/${crypto.randomUUID().slice(0, 8)}`;
      const topics = topicsFor(prefix);
      const acl = [
        "user bridge",
        `topic write ${prefix}/#`,
        "topic write homeassistant/#",
        "topic read homeassistant/status",
        "",
        `user ${ADMIN.username}`,
        "topic readwrite #",
      ].join("\n") + "\n";
      await using broker = await startBroker(dir, {
        users: { bridge: "bridge pw", [ADMIN.username]: ADMIN.password },
        acl,
      });
      await using watcher = await listen(broker.url, [`${prefix}/#`], ADMIN);
      await using system = await startSystem(dir, broker.url, {
        prefix,
        env: { MMAP_IPC_MQTT_USERNAME: "bridge", MMAP_IPC_MQTT_PASSWORD: "bridge pw" },
      });
      const { launcher } = system;
      const said = await launcher.waitFor(/did not deliver this bridge's own message/);
      assertStringIncludes(said.match.input, JSON.stringify(topics.echo));
      assertStringIncludes(said.match.input, JSON.stringify(topics.set));
      assertStringIncludes(said.match.input, "ACL");
      // The probe is no command and nothing kept: not on the set topic, never retained.
      const probes = watcher.on(topics.echo);
      assert(probes.length >= 1, "the probe went out");
      assert(probes.every((message) => !message.retain), "the probe is not retained");
      assertEquals(watcher.on(topics.set), [], "nothing on the command topic");
    });
  },
);

testWithBroker(
  "deno task launch --mqtt runs with the task's narrowed permissions, credentials from a file",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir, { users: { carol: "pw" } });
      const login = `${dir}/login`;
      await Deno.writeTextFile(login, "username=carol\npassword=pw\n", { mode: 0o600 });
      const prefix = `test/${crypto.randomUUID().slice(0, 8)}`;
      await using launcher = spawnProgram(
        Deno.execPath(),
        [
          ...taskArgs("launch"),
          "--fifo",
          `${dir}/button.fifo`,
          "--mqtt",
          broker.url,
          "--mqtt-credentials",
          login,
          "--mqtt-prefix",
          prefix,
        ],
        { cwd: ROOT },
      );
      await launcher.waitFor(/Connected to mqtt/);
      await using listener = await listen(broker.url, [`${prefix}/#`], {
        username: "carol",
        password: "pw",
      });
      await writeAndLeave(`${dir}/button.fifo`, "0\n");
      await listener.waitFor(`${prefix}/button/action`, { payload: "press" });
      await listener.waitFor(`${prefix}/led/state`, { payload: "ON" });
      launcher.kill("SIGTERM");
      assertEquals((await launcher.status()).code, 0, launcher.transcript);
      assertEquals(launcher.matching(/NotCapable|Requires .* access/), [], launcher.transcript);
      await listener.waitFor(`${prefix}/availability`, { payload: "offline" });
    });
  },
);

testWithBroker("MQTT bridge: logs in with credentials from the environment", async () => {
  await withTempDir(async (dir) => {
    await using broker = await startBroker(dir, { users: { bob: "s3cret pass" } });
    await using system = await startSystem(dir, broker.url, {
      env: { MMAP_IPC_MQTT_USERNAME: "bob", MMAP_IPC_MQTT_PASSWORD: "s3cret pass" },
    });
    await using listener = await listen(broker.url, [`${system.prefix}/#`], {
      username: "bob",
      password: "s3cret pass",
    });
    assertEquals((await listener.waitFor(system.topics.state)).payload, "OFF");
    await writeAndLeave(system.fifo, "press\n");
    await listener.waitFor(system.topics.action, { payload: "press" });
  });
});

testWithBroker(
  "MQTT bridge: with DEBUG=mqttjs:* the password never reaches the console; the button and LED never see it",
  async () => {
    await withTempDir(async (dir) => {
      const password = `pw-${crypto.randomUUID()}`;
      await using broker = await startBroker(dir, { users: { dave: password } });
      await using system = await startSystem(dir, broker.url, {
        env: {
          DEBUG: "mqttjs:*",
          MMAP_IPC_MQTT_USERNAME: "dave",
          MMAP_IPC_MQTT_PASSWORD: password,
          MMAP_IPC_UNRELATED_SECRET: "x",
        },
      });
      const { launcher } = system;
      const pid = async (name: string): Promise<number> =>
        Number((await launcher.waitFor(new RegExp(`Started ${name} \\(pid (\\d+)\\)`))).match[1]);
      const [led, button, bridge] = [await pid("led"), await pid("button"), await pid("mqtt")];
      // The bridge has published (so it has logged what it logs on connecting) before we look.
      await using listener = await listen(broker.url, [`${system.prefix}/#`], {
        username: "dave",
        password,
      });
      await listener.waitFor(system.topics.state, { payload: "OFF" });
      await writeAndLeave(system.fifo, "0\n");
      await listener.waitFor(system.topics.state, { payload: "ON" });
      for (const [name, child] of [["led", led], ["button", button]] as const) {
        const env = environOf(child);
        assert(env.size > 0, `no environment read for the ${name} (pid ${child})`);
        for (const variable of ["MMAP_IPC_MQTT_PASSWORD", "MMAP_IPC_MQTT_USERNAME", "DEBUG"]) {
          assert(!env.has(variable), `the ${name} got ${variable}`);
        }
        assert(![...env.values()].includes(password), `the ${name} got the password`);
      }
      const bridgeEnv = environOf(bridge);
      assertEquals(bridgeEnv.get("MMAP_IPC_MQTT_PASSWORD"), password, "the bridge logs in with it");
      assert(!bridgeEnv.has("DEBUG"), "the bridge got DEBUG");
      assert(!bridgeEnv.has("MMAP_IPC_UNRELATED_SECRET"), "the bridge got the whole environment");
      await system[Symbol.asyncDispose]();
      assert(!launcher.transcript.includes(password), "the password reached the console");
    });
  },
);

testWithBroker(
  "two systems on one machine: the same MQTT prefix is refused naming the first launcher; another prefix gets a session of its own",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      await using first = await startSystem(dir, broker.url);
      await using refused = spawnDeno(
        `${ROOT}launch.ts`,
        ["--fifo", `${dir}/second.fifo`, "--mqtt", broker.url, "--mqtt-prefix", first.prefix],
        { permissions: LAUNCH_PERMISSIONS, cwd: dir },
      );
      const status = await refused.status({ timeoutMs: 30_000 });
      assertEquals(status.code, 1, refused.transcript);
      assertStringIncludes(status.stderr, `pid ${first.launcher.pid}`);
      assertStringIncludes(status.stderr, `MQTT topic prefix "${first.prefix}"`);
      assertStringIncludes(status.stderr, "--mqtt-prefix");
      assert(refused.matching(/Started/).length === 0, "the refused launcher started children");

      await using second = await startSystem(dir, broker.url, { fifo: `${dir}/third.fifo` });
      const clientId = (system: System): string =>
        system.launcher.matching(/Connected to mqtt/).map((line) =>
          / as (\S+)/.exec(line)?.[1]
        )[0] ??
          "";
      assert(clientId(first) !== "" && clientId(first) !== clientId(second), "one client id");
      // Both stay connected: with one client id the broker would drop each for the other.
      await using listener = await listen(broker.url, [`${first.prefix}/#`, `${second.prefix}/#`]);
      await writeAndLeave(first.fifo, "0\n");
      await listener.waitFor(first.topics.state, { payload: "ON" });
      await writeAndLeave(second.fifo, "0\n");
      await listener.waitFor(second.topics.state, { payload: "ON" });
      for (const system of [first, second]) {
        assertEquals(
          system.launcher.matching(/Connected to mqtt/).length,
          1,
          system.launcher.transcript,
        );
      }
    });
  },
);

testWith(
  [...NEEDS.system, requires("setpriv"), { name: "net", host: "127.0.0.1" }],
  "two users on one machine with one MQTT prefix (each user's default is the machine's): the second user's launcher and mqtt:forget are refused naming the first launcher's pid and user; once it is killed, the second starts",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run a launcher as another user")) return;
    const user = unusedUid(); // not a real user: its runtime directory is the test's own
    // No broker needed: the prefix is claimed before anything connects.
    const url = `mqtt://127.0.0.1:${freePort()}`;
    const prefix = `test/${crypto.randomUUID().slice(0, 8)}`;
    await withTempDir(async (theirs) => {
      // The first user's launcher (its bridge cannot load the MQTT library from a cache of its
      // own here, and is given up on alone: the launcher, which holds the claim, runs on).
      await using first = startLauncherAs(user, theirs, [
        "--fifo",
        `${theirs}/button.fifo`,
        "--mqtt",
        url,
        "--mqtt-prefix",
        prefix,
      ]);
      const pids = await running(first);
      try {
        await withTempDir(async (dir) => {
          const holder = `another launcher on this machine (pid ${first.pid}, uid ${user}) ` +
            `is using the MQTT topic prefix "${prefix}"`;
          await using refused = spawnDeno(
            `${ROOT}launch.ts`,
            ["--fifo", `${dir}/button.fifo`, "--mqtt", url, "--mqtt-prefix", prefix],
            { permissions: LAUNCH_PERMISSIONS, cwd: dir },
          );
          const status = await refused.status({ timeoutMs: 30_000 });
          assertEquals(status.code, 1, refused.transcript);
          assertStringIncludes(status.stderr, `${holder}; give this one another --mqtt-prefix`);
          assertEquals(refused.matching(/Started/), [], "the refused launcher started children");
          assertEquals([...Deno.readDirSync(dir)], [], "the refused launcher made nothing");
          const forgot = await forget(["--mqtt", url, "--mqtt-prefix", prefix]);
          assertEquals(forgot.code, 1, forgot.output);
          assertStringIncludes(
            forgot.output,
            `Cannot forget "${prefix}": ${holder}; stop it first`,
          );

          // The first launcher dies without a word: its claim goes with it, leaving nothing.
          first.kill("SIGKILL");
          await first.status();
          await using second = await startSystem(dir, url, { connected: false, prefix });
          assertEquals(second.launcher.matching(/another launcher/), []);
        });
      } finally {
        await stopAll(first, [pids.led, pids.button]);
      }
    }).finally(() => Deno.removeSync(`/tmp/mmap-ipc-${user}`, { recursive: true }));
  },
);

testWithBroker(
  "two systems whose prefixes differ only in punctuation (a/b, a-b) get a session and a device each and both stay connected",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      const base = `t${crypto.randomUUID().slice(0, 8)}`;
      await using listener = await listen(broker.url, ["homeassistant/#", `${base}/#`]);
      await using slash = await startSystem(dir, broker.url, { prefix: `${base}/a/b` });
      await using dash = await startSystem(dir, broker.url, {
        prefix: `${base}/a-b`,
        fifo: `${dir}/dash.fifo`,
      });
      const systems = [slash, dash];
      for (const system of systems) {
        await writeAndLeave(system.fifo, "0\n");
        await listener.waitFor(system.topics.state, { payload: "ON" });
      }
      // One device each in Home Assistant: each light's config names its own topics.
      const devices = await Promise.all(systems.map(async (system) => {
        const config = await listener.waitFor(
          `homeassistant/light/${deviceId(system.prefix)}/led/config`,
        );
        assertEquals(JSON.parse(config.payload).state_topic, system.topics.state);
        return JSON.parse(config.payload).device.identifiers[0];
      }));
      assert(devices[0] !== devices[1], `one device id for both: ${devices[0]}`);
      const clientIds = systems.map((system) =>
        / as (\S+)/.exec(system.launcher.matching(/Connected to mqtt/)[0] ?? "")?.[1]
      );
      assert(clientIds[0] !== clientIds[1], `one client id for both: ${clientIds[0]}`);
      // With one client id the broker drops each for the other as it (re)connects.
      for (const system of systems) {
        assertEquals(
          system.launcher.matching(/Lost the connection/),
          [],
          system.launcher.transcript,
        );
        assertEquals(
          system.launcher.matching(/Connected to mqtt/).length,
          1,
          system.launcher.transcript,
        );
      }
    });
  },
);

testWithBroker(
  "MQTT bridge: when it keeps crashing the launcher gives up on it alone; the button and LED carry on",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      await using system = await startSystem(dir, broker.url);
      const { launcher } = system;
      for (let crash = 0, since = 0; crash < 5; crash++) {
        const started = await launcher.waitFor(/Started mqtt \(pid (\d+)\)/, { since });
        since = started.index + 1;
        Deno.kill(Number(started.match[1]), "SIGKILL");
      }
      const gaveUp = await launcher.waitFor(/keep running without MQTT/);
      assertStringIncludes(gaveUp.match.input, "mqtt crashed 5 times in a row");
      await writeAndLeave(system.fifo, "0\n");
      await ledShows(launcher, "On", gaveUp.index);
      await writeAndLeave(system.fifo, "0\n");
      await ledShows(launcher, "Off", gaveUp.index);
      assertEquals(launcher.matching(/Started mqtt/).length, 5);
    });
  },
);

testWithBroker(
  "Deno's binary removed under a running launcher: a restart that cannot start is a crash; MQTT is given up alone, and the launcher still cleans up",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      // The launcher runs from a copy of Deno that the test can take away, as an upgrade might.
      Deno.mkdirSync(`${dir}/bin`);
      const deno = `${dir}/bin/deno`;
      Deno.copyFileSync(Deno.execPath(), deno);
      Deno.chmodSync(deno, 0o755);
      const fifo = `${dir}/button.fifo`;
      const state = `${dir}/state.dat`;
      const prefix = `test/${crypto.randomUUID().slice(0, 8)}`;
      const claims = (): string[] => claimRecordsMentioning(`"${dir}/`, `"${prefix}"`);
      const args = [
        "--fifo",
        fifo,
        "--state",
        state,
        "--mqtt",
        broker.url,
        "--mqtt-prefix",
        prefix,
      ];
      const [, ...command] = launcherCommand(args);
      await using launcher = spawnProgram(deno, command, { cwd: dir });
      const pids: number[] = [];
      const started = async (name: string): Promise<number> => {
        const { match } = await launcher.waitFor(new RegExp(`Started ${name} \\(pid (\\d+)\\)`));
        pids.push(Number(match[1]));
        return Number(match[1]);
      };
      try {
        const led = await started("led");
        await started("button");
        const bridge = await started("mqtt");
        await launcher.waitFor(/Button ready/);
        await launcher.waitFor(/Connected to mqtt/);
        assertEquals(claims().length, 5, "a claim per path and per file, one for the prefix");

        Deno.removeSync(deno);
        Deno.kill(bridge, "SIGKILL");
        const gaveUp = await launcher.waitFor(/keep running without MQTT/);
        assertStringIncludes(gaveUp.match.input, "mqtt crashed 5 times in a row");
        assertStringIncludes(gaveUp.match.input, `could not be started with "${deno}"`);
        await writeAndLeave(fifo, "0\n");
        await ledShows(launcher, "On", gaveUp.index);

        Deno.kill(led, "SIGKILL");
        const status = await launcher.status();
        assertEquals(status.code, 1, launcher.transcript);
        assertMatch(status.stderr, /led crashed 5 times in a row; its last error: could not be/);
        for (const pid of pids) assert(processGone(pid), `pid ${pid} outlived the launcher`);
        assertThrows(() => Deno.lstatSync(fifo), Deno.errors.NotFound);
        assertThrows(() => Deno.lstatSync(state), Deno.errors.NotFound);
        assertEquals(claims(), [], "claims left behind");
      } finally {
        launcher.kill("SIGKILL");
        await launcher.status();
        for (const pid of pids) killIfRunning(pid);
      }
    });
  },
);

testWithBroker(
  "MQTT bridge over mqtts:// trusts the CA given with --mqtt-ca, and says what to do without it",
  async () => {
    await withTempDir(async (dir) => {
      const { ca, cert, key } = await makeCertificates(dir);
      await using broker = await startBroker(dir, { tls: { cert, key } });
      {
        await using system = await startSystem(dir, broker.url, { connected: false });
        const error = await system.launcher.waitFor(/Cannot trust the broker/);
        assertStringIncludes(error.match.input, "--mqtt-ca FILE");
      }
      {
        // Another CA given: that file is named, and not asked for again.
        await Deno.mkdir(`${dir}/other`);
        const other = await makeCertificates(`${dir}/other`);
        await using system = await startSystem(dir, broker.url, {
          connected: false,
          args: ["--mqtt-ca", other.ca],
        });
        const error = await system.launcher.waitFor(/Cannot trust the broker/);
        assertStringIncludes(
          error.match.input,
          `its certificate is not signed by a CA in ${JSON.stringify(other.ca)} (--mqtt-ca)`,
        );
        assert(!error.match.input.includes("give that CA with --mqtt-ca FILE"), error.match.input);
      }
      await using system = await startSystem(dir, broker.url, { args: ["--mqtt-ca", ca] });
      await using listener = await listen(broker.url, [`${system.prefix}/#`], {
        ca: await Deno.readTextFile(ca),
      });
      assertEquals((await listener.waitFor(system.topics.state)).payload, "OFF");
      await writeAndLeave(system.fifo, "0\n");
      await listener.waitFor(system.topics.action, { payload: "press" });
      await listener.waitFor(system.topics.state, { payload: "ON" });
    });
  },
  { programs: ["openssl"] },
);

testWithBroker(
  "MQTT bridge: mqtts:// at a port of plain MQTT is told to use mqtt://, and a broker at its max_connections is said to turn it away, not to want TLS",
  async () => {
    await withTempDir(async (dir) => {
      {
        await using broker = await startBroker(dir);
        const url = broker.url.replace("mqtt://", "mqtts://");
        await using system = await startSystem(dir, url, { connected: false });
        const said = await system.launcher.waitFor(/closed the connection before the TLS/);
        assertStringIncludes(said.match.input, `The broker at ${url} closed the connection`);
        assertStringIncludes(said.match.input, "use an mqtt:// URL");
      }
      await Deno.mkdir(`${dir}/full`);
      await using full = await startBroker(`${dir}/full`, { config: ["max_connections 1"] });
      await using holder = await listen(full.url, []);
      await using system = await startSystem(dir, full.url, { connected: false });
      // The first word on it: a hang-up (no CONNACK) or a reset, as the broker's close lands.
      const said = await system.launcher.waitFor(/before accepting it/);
      assertStringIncludes(said.match.input, full.url);
      assertStringIncludes(said.match.input, "max_connections");
      assert(!said.match.input.includes("is an MQTT broker listening there"), said.match.input);
      assertEquals(holder.client.connected, true, "the broker kept its one client");
    });
  },
);

testWith(
  NEEDS.system,
  "launch --mqtt refuses bad settings before starting anything",
  async () => {
    await withTempDir(async (dir) => {
      const run = async (args: string[]): Promise<{ code: number; stderr: string }> => {
        await using child = spawnDeno(`${ROOT}launch.ts`, ["--fifo", `${dir}/b.fifo`, ...args], {
          permissions: LAUNCH_PERMISSIONS,
          cwd: dir,
        });
        const { code, stderr } = await child.status({ timeoutMs: 30_000 }); // a hang guard
        assertEquals(child.matching(/Started/).length, 0, "nothing started");
        return { code, stderr };
      };
      const usage = [
        [["--mqtt", "http://127.0.0.1"], "the scheme must be mqtt:// or mqtts://"],
        [["--mqtt", "mqtt://alice:secret@127.0.0.1"], "every user can read a command line"],
        [["--mqtt", "mqtt://127.0.0.1", "--mqtt-ca", "ca.pem"], "--mqtt-ca is for TLS"],
        [["--mqtt", "mqtt://127.0.0.1", "--mqtt-prefix", "a/#"], "wildcard"],
        [["--mqtt-prefix", "a/b"], "needs --mqtt URL"],
        [["--mqtt", "not a url"], "Invalid --mqtt"],
      ] as const;
      for (const [args, message] of usage) {
        const { code, stderr } = await run([...args]);
        assertEquals(code, 2, `${args.join(" ")}: ${stderr}`);
        assertStringIncludes(stderr, message);
      }
      // A password without a user name in the file is the file's problem: exit 1, as above.
      const nameless = `${dir}/nameless.login`;
      await Deno.writeTextFile(nameless, "password=b\n", { mode: 0o600 });
      const noName = await run(["--mqtt", "mqtt://127.0.0.1", "--mqtt-credentials", nameless]);
      assertEquals(noName.code, 1);
      assertStringIncludes(noName.stderr, "a password=... line but no username=... line");
      await Deno.remove(nameless);
      const open = `${dir}/open.login`;
      await Deno.writeTextFile(open, "username=a\npassword=b\n", { mode: 0o644 });
      await Deno.chmod(open, 0o644);
      const shared = await run(["--mqtt", "mqtt://127.0.0.1", "--mqtt-credentials", open]);
      assertEquals(shared.code, 1);
      assertStringIncludes(shared.stderr, `chmod 600 ${open}`);
      const missing = await run([
        "--mqtt",
        "mqtt://127.0.0.1",
        "--mqtt-credentials",
        `${dir}/none`,
      ]);
      assertEquals(missing.code, 1);
      assertStringIncludes(missing.stderr, "no such file or directory");
      await Deno.writeTextFile(`${dir}/not-a-ca.pem`, "hello\n");
      const ca = await run(["--mqtt", "mqtts://127.0.0.1", "--mqtt-ca", `${dir}/not-a-ca.pem`]);
      assertEquals(ca.code, 1);
      assertStringIncludes(ca.stderr, "holds no PEM certificate");
      // A certificate line around junk: refused at start, not at every TLS connection.
      const junk = `${dir}/junk-ca.pem`;
      await Deno.writeTextFile(
        junk,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
      );
      const junkCa = await run(["--mqtt", "mqtts://127.0.0.1", "--mqtt-ca", junk]);
      assertEquals(junkCa.code, 1, junkCa.stderr);
      assertStringIncludes(junkCa.stderr, JSON.stringify(junk));
      assertStringIncludes(junkCa.stderr, "its certificate is not a valid X.509 certificate");
      assertEquals([...Deno.readDirSync(dir)].map((entry) => entry.name).sort(), [
        "junk-ca.pem",
        "not-a-ca.pem",
        "open.login",
      ], "no FIFO or anything else left behind");
    });
  },
);

testWith(
  NEEDS.system,
  "a launcher whose --mqtt-credentials file is unsafe hears of that first, even when another launcher holds its topic prefix",
  async () => {
    await withTempDir(async (dir) => {
      // No broker at port 1: the first launcher runs on, its bridge retrying, its prefix held.
      const bridged = [
        "--mqtt",
        "mqtt://127.0.0.1:1",
        "--mqtt-prefix",
        `test-${crypto.randomUUID()}`,
      ];
      await using first = startLauncher(dir, ["--fifo", `${dir}/first.fifo`, ...bridged]);
      const pids = await running(first);
      try {
        const open = `${dir}/open.login`;
        await Deno.writeTextFile(open, "username=a\npassword=b\n", { mode: 0o644 });
        await Deno.chmod(open, 0o644);
        await using second = startLauncher(dir, [
          ...["--fifo", `${dir}/second.fifo`, ...bridged, "--mqtt-credentials", open],
        ]);
        const { code, stderr } = await second.status();
        assertEquals(code, 1, second.transcript);
        assertStringIncludes(stderr, `chmod 600 ${open}`);
        assertEquals(second.matching(/another launcher/), [], second.transcript);
      } finally {
        await stopAll(first, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "the bridge run by hand with a --remote that is no link names --remote, and leaves no state file behind",
  async () => {
    await withTempDir(async (dir) => {
      await using bridge = spawnDeno(`${ROOT}bridges/mqtt_bridge.ts`, [
        ...["--state", `${dir}/state.dat`, "--remote", `${dir}/not-a-link`],
        ...["--mqtt", "mqtt://127.0.0.1:1"],
      ], {
        permissions: ["--allow-ffi", "--allow-env", "--allow-read", "--allow-net=127.0.0.1:1"],
      });
      const { code, stderr } = await bridge.status();
      assertEquals(code, 1, bridge.transcript);
      assertStringIncludes(stderr, "Cannot open the remote link (--remote)");
      assertEquals([...Deno.readDirSync(dir)], [], "the bridge left a file behind");
    });
  },
);

testWith(
  NEEDS.system,
  "launch --mqtt refuses a FIFO as --mqtt-credentials or --mqtt-ca at once, without waiting for a writer",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/login.fifo`;
      makeFifo(fifo, 0o600);
      for (
        const args of [
          ["--mqtt", "mqtt://127.0.0.1", "--mqtt-credentials", fifo],
          ["--mqtt", "mqtts://127.0.0.1", "--mqtt-ca", fifo],
        ]
      ) {
        const flag = args[2];
        await using child = spawnDeno(`${ROOT}launch.ts`, ["--fifo", `${dir}/b.fifo`, ...args], {
          permissions: LAUNCH_PERMISSIONS,
          cwd: dir,
        });
        // A hang guard only: a launcher stuck in open() fails here, and `await using` kills it.
        const { code, stderr } = await child.status({ timeoutMs: 30_000 });
        assertEquals(code, 1, child.transcript);
        assertStringIncludes(stderr, flag);
        assertStringIncludes(stderr, JSON.stringify(fifo));
        assertStringIncludes(stderr, "it is a fifo, not a regular file");
        assertEquals(child.matching(/Started/).length, 0, "nothing started");
      }
    });
  },
);

testWith(
  NEEDS.system,
  "deno task launch --mqtt refuses a password in the environment without a user name: exit 2, nothing started",
  async () => {
    await withTempDir(async (dir) => {
      const cases: [Record<string, string>, string][] = [
        [{ MMAP_IPC_MQTT_PASSWORD: "pw" }, "is not"],
        [{ MMAP_IPC_MQTT_PASSWORD: "pw", MMAP_IPC_MQTT_USERNAME: "" }, "is empty"],
      ];
      for (const [env, why] of cases) {
        await using launcher = spawnProgram(
          Deno.execPath(),
          [...taskArgs("launch"), "--fifo", `${dir}/b.fifo`, "--mqtt", "mqtt://127.0.0.1"],
          { cwd: ROOT, env },
        );
        const { code, stderr } = await launcher.status({ timeoutMs: 30_000 });
        assertEquals(code, 2, launcher.transcript);
        assertStringIncludes(
          stderr,
          `$MMAP_IPC_MQTT_PASSWORD is set but $MMAP_IPC_MQTT_USERNAME ${why}`,
        );
        assertStringIncludes(stderr, "Usage: deno task launch");
        assertEquals(launcher.matching(/Started/).length, 0, "nothing started");
      }
      assertEquals([...Deno.readDirSync(dir)], [], "no FIFO or anything else made");
    });
  },
);

/** Runs `deno task mqtt:forget` with `args`, with the task's permissions; its status and output. */
async function forget(args: string[]): Promise<{ code: number; output: string }> {
  await using child = spawnProgram(Deno.execPath(), [...taskArgs("mqtt:forget"), ...args], {
    cwd: ROOT,
  });
  const { code } = await child.status();
  return { code, output: child.transcript };
}

/** Publishes each `[topic, payload]` retained, through a client of its own. */
async function keepRetained(url: string, kept: readonly [string, string][]): Promise<void> {
  await using writer = await listen(url, []);
  for (const [topic, payload] of kept) await writer.publish(topic, payload, { retain: true });
}

/**
 * What the broker at `url` holds retained under `prefix` and the discovery topics, as sorted
 * `[topic, payload]` pairs; read through wildcards, which the dynamic security plugin of these
 * tests (it denies literal topics) leaves alone.
 */
async function retainedUnder(url: string, prefix: string): Promise<string[][]> {
  await using late = await listen(url, [`${prefix}/#`, "homeassistant/#"]);
  await late.publish(`${prefix}/sentinel`, "end");
  await late.waitFor(`${prefix}/sentinel`);
  return late.heard.filter((message) => message.retain)
    .map(({ topic, payload }) => [topic, payload]).sort();
}

testWithBroker(
  "deno task mqtt:forget removes what a system left retained (discovery configs, state, availability), leaves a retained command, and refuses a prefix a launcher uses",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      const system = await startSystem(dir, broker.url);
      const { prefix, topics, launcher } = system;
      const [light, trigger] = [
        `homeassistant/light/${deviceId(prefix)}/led/config`,
        `homeassistant/device_automation/${deviceId(prefix)}/button_short_press/config`,
      ];
      await using watcher = await listen(broker.url, [`${prefix}/#`, "homeassistant/#"]);
      try {
        await watcher.waitFor(light);
        await watcher.waitFor(trigger);
        const refused = await forget(["--mqtt", broker.url, "--mqtt-prefix", prefix]);
        assertEquals(refused.code, 1, refused.output);
        assertStringIncludes(refused.output, `another launcher (pid ${launcher.pid})`);
        assertStringIncludes(refused.output, "stop it first");
        assert(!refused.output.includes("another --mqtt-prefix"), refused.output);
      } finally {
        await system[Symbol.asyncDispose]();
      }
      // The system is gone; what it left stays, and so does a command someone kept there.
      await watcher.waitFor(topics.availability, { payload: "offline" });
      await watcher.publish(topics.set, "ON", { retain: true });
      // A bridge elsewhere under the prefix (another machine, another user) says online.
      await watcher.publish(topics.availability, "online", { retain: true });
      const online = await forget(["--mqtt", broker.url, "--mqtt-prefix", prefix]);
      assertEquals(online.code, 1, online.output);
      assertStringIncludes(online.output, "says online");
      assertStringIncludes(online.output, "--force");
      await watcher.waitFor(light); // still there

      const done = await forget(["--mqtt", broker.url, "--mqtt-prefix", prefix, "--force"]);
      assertEquals(done.code, 0, done.output);
      for (const topic of [light, trigger, topics.state, topics.availability]) {
        assertStringIncludes(done.output, topic);
      }
      // Again, or with a prefix mistyped: nothing is retained there, which it says, exit 1.
      for (const which of [prefix, `${prefix}x`]) {
        const nothing = await forget(["--mqtt", broker.url, "--mqtt-prefix", which]);
        assertEquals(nothing.code, 1, nothing.output);
        assertStringIncludes(nothing.output, `Nothing is retained under ${JSON.stringify(which)}`);
        assertStringIncludes(nothing.output, "is the prefix right?");
      }
      // A newcomer gets every retained message before a message published after it subscribed.
      await using late = await listen(broker.url, [`${prefix}/#`, "homeassistant/#"]);
      await late.publish(`${prefix}/sentinel`, "end");
      await late.waitFor(`${prefix}/sentinel`);
      const kept = late.heard.filter((message) => message.retain);
      assertEquals(kept.map(({ topic, payload }) => [topic, payload]), [[topics.set, "ON"]]);
    });
  },
);

testWithBroker(
  "MQTT bridge: presses it gets to late (it was stopped for 6 s) are dropped and said so, not published late; the next press is published",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      await using system = await startSystem(dir, broker.url);
      const { launcher, topics } = system;
      const bridge = await system.bridgePid();
      await using listener = await listen(broker.url, [topics.action]);
      await writeAndLeave(system.fifo, "0\n");
      await listener.waitFor(topics.action, { payload: "press" });
      const mark = listener.heard.length;
      const since = launcher.lines.length;
      Deno.kill(bridge, "SIGSTOP");
      try {
        // Two presses while it cannot run: the button takes them (the LED shows them) at once.
        await writeAndLeave(system.fifo, "0\n");
        await ledShows(launcher, "Off", since);
        await writeAndLeave(system.fifo, "0\n");
        await ledShows(launcher, "On", since);
        // Longer than the 5 s a press may wait, shorter than the broker's keepalive (45 s).
        await delay(6_000);
      } finally {
        Deno.kill(bridge, "SIGCONT");
      }
      await delay(1_500);
      assertEquals(listener.on(topics.action, mark), [], "no press published late");
      await launcher.waitFor(/Dropped a press made \d+\.\d s ago: this bridge could not publish/, {
        since,
      });
      assertEquals(launcher.matching(/Dropped a press/, since).length, 1, launcher.transcript);
      // A press made now is published, and says the late ones were dropped.
      await writeAndLeave(system.fifo, "0\n");
      await listener.waitFor(topics.action, { payload: "press", since: mark });
      await launcher.waitFor(/Publishing presses again \(2 made too long ago dropped\)/, { since });
    });
  },
);

testWithBroker(
  "deno task mqtt:forget without the --mqtt-discovery-prefix the system had finds state and availability but no discovery config: it removes nothing and names the flag; with it, it forgets the device; --force alone clears the rest, not saying Home Assistant removes the device",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      const prefix = `test/${crypto.randomUUID().slice(0, 8)}`;
      const topics = topicsFor(prefix);
      /** Leaves on the broker what a stopped system started with --mqtt-discovery-prefix ha2 does. */
      const leave = async (configs: boolean): Promise<void> => {
        await using writer = await listen(broker.url, []);
        const messages = discoveryMessages({
          discoveryPrefix: "ha2",
          deviceId: deviceId(prefix),
          deviceName: "mmap-ipc test",
          model: "Button and LED (PC build)",
          version: "0.1.0",
          topics,
        });
        for (const { topic, payload } of configs ? messages : []) {
          await writer.publish(topic, JSON.stringify(payload), { retain: true });
        }
        await writer.publish(topics.state, "OFF", { retain: true });
        await writer.publish(topics.availability, "offline", { retain: true });
      };
      /** The topics under `ha2/` and the prefix that hold a retained message now. */
      const retained = async (): Promise<string[]> => {
        await using late = await listen(broker.url, ["ha2/#", `${prefix}/#`]);
        await late.publish(`${prefix}/sentinel`, "end");
        await late.waitFor(`${prefix}/sentinel`);
        return late.heard.filter((message) => message.retain).map((message) => message.topic)
          .sort();
      };
      await leave(true);
      const all = await retained();
      assertEquals(all.length, 4);
      const refused = await forget(["--mqtt", broker.url, "--mqtt-prefix", prefix]);
      assertEquals(refused.code, 1, refused.output);
      assertStringIncludes(refused.output, "No discovery config of");
      assertStringIncludes(refused.output, "homeassistant/light/");
      assertStringIncludes(refused.output, "another --mqtt-discovery-prefix");
      assertStringIncludes(refused.output, "Nothing was removed");
      assertEquals(await retained(), all, "nothing removed");
      const done = await forget([
        "--mqtt",
        broker.url,
        "--mqtt-prefix",
        prefix,
        "--mqtt-discovery-prefix",
        "ha2",
      ]);
      assertEquals(done.code, 0, done.output);
      assertStringIncludes(done.output, "Home Assistant removes its device");
      assertEquals(await retained(), []);
      // The configs gone some other way: --force clears the rest, and says what it did not do.
      await leave(false);
      const forced = await forget(["--mqtt", broker.url, "--mqtt-prefix", prefix, "--force"]);
      assertEquals(forced.code, 0, forced.output);
      assertStringIncludes(forced.output, "no discovery config was there");
      assert(!forced.output.includes("Home Assistant removes its device"), forced.output);
      assertEquals(await retained(), []);
    });
  },
);

testWithBroker(
  "deno task mqtt:forget refuses, removing nothing, when a topic it would clear holds another program's message (a mistyped prefix), --force or not, naming the topic and quoting the payload",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      const prefix = `test/${crypto.randomUUID().slice(0, 8)}`;
      const topics = topicsFor(prefix);
      const light = `homeassistant/light/${deviceId(prefix)}/led/config`;
      // Another program's messages, as the reviewer's probe left them, beside one of a bridge's.
      const kept: [string, string][] = [
        [topics.availability, '{"state":"offline"}'],
        [topics.state, '{"state":"ON","brightness":200}'],
        [light, JSON.stringify({ name: "LED", device: { identifiers: [deviceId(prefix)] } })],
      ];
      const others: [string, string][] = [[topics.availability, "offline"], [topics.state, "OFF"]];
      for (const [foreign, ours] of [[kept, []], [[kept[1]], [others[0]]]] as const) {
        {
          await using writer = await listen(broker.url, []);
          for (const topic of [topics.availability, topics.state, light]) {
            await writer.publish(topic, "", { retain: true });
          }
          for (const [topic, payload] of [...foreign, ...ours]) {
            await writer.publish(topic, payload, { retain: true });
          }
        }
        for (const force of [[], ["--force"]]) {
          const refused = await forget(["--mqtt", broker.url, "--mqtt-prefix", prefix, ...force]);
          assertEquals(refused.code, 1, refused.output);
          for (const [topic, payload] of foreign) {
            assertStringIncludes(refused.output, `${JSON.stringify(topic)} holds `);
            assertStringIncludes(refused.output, payload.slice(0, 10).replaceAll('"', '\\"'));
          }
          assertStringIncludes(refused.output, "which no mmap-ipc bridge publishes");
          assertStringIncludes(refused.output, "nothing was removed");
          await using late = await listen(broker.url, [`${prefix}/#`, "homeassistant/#"]);
          await late.publish(`${prefix}/sentinel`, "end");
          await late.waitFor(`${prefix}/sentinel`);
          assertEquals(
            late.heard.filter((message) => message.retain).map((
              { topic, payload },
            ) => [topic, payload]).sort(),
            [...foreign, ...ours].map(([topic, payload]) => [topic, payload]).sort(),
            "everything retained is still there",
          );
        }
      }
    });
  },
);

testWithBroker(
  "deno task mqtt:forget connects under a client id no bridge has: forgetting P leaves the session of a running bridge under P/forget alone",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir);
      const base = `test/${crypto.randomUUID().slice(0, 8)}`;
      // `test/x/forget` gives the bridge the id `...-test-x-forget`, which was forget's for `test/x`.
      await using system = await startSystem(dir, broker.url, { prefix: `${base}/forget` });
      await using watcher = await listen(broker.url, [`${base}/#`]);
      await watcher.waitFor(system.topics.availability, { payload: "online" });
      // Something retained under the prefix to forget, as a system that stopped leaves it.
      await watcher.publish(topicsFor(base).availability, "offline", { retain: true });
      const since = system.launcher.lines.length;
      const heardSince = watcher.heard.length;
      // --force: with no discovery config beside it, forget would refuse (a wrong discovery
      // prefix, most likely).
      const done = await forget(["--mqtt", broker.url, "--mqtt-prefix", base, "--force"]);
      assertEquals(done.code, 0, done.output);
      assertStringIncludes(done.output, topicsFor(base).availability);
      // A taken session would show within this: the bridge reconnects after 0.5 s at most.
      await delay(1_500);
      assertEquals(system.launcher.matching(/Lost the connection/, since), []);
      assertEquals(
        watcher.on(system.topics.availability, heardSince).map(({ payload }) => payload),
        [],
        "the running bridge's availability never changed",
      );
    });
  },
);

testWithBroker(
  "deno task mqtt:forget with a login that may clear the topics but not read them says so and removes nothing; with --force it clears them all",
  async () => {
    await withTempDir(async (dir) => {
      const prefix = "test/writer";
      const topics = topicsFor(prefix);
      const admin = ADMIN;
      const acl = [
        "user w",
        `topic write ${prefix}/#`,
        "topic write homeassistant/#",
        "",
        "user admin",
        "topic readwrite #",
      ].join("\n") + "\n";
      await using broker = await startBroker(dir, {
        users: { w: "w pw", [ADMIN.username]: ADMIN.password },
        acl,
      });
      {
        await using kept = await listen(broker.url, [`${prefix}/#`], admin);
        await kept.publish(topics.state, "ON", { retain: true, qos: 1 });
        await kept.publish(topics.availability, "offline", { retain: true, qos: 1 });
      }
      const login = `${dir}/login`;
      await Deno.writeTextFile(login, "username=w\npassword=w pw\n", { mode: 0o600 });
      // What it cannot see may be another program's: refused, unless the user says --force.
      const blind = await forget([
        "--mqtt",
        broker.url,
        "--mqtt-prefix",
        prefix,
        "--mqtt-credentials",
        login,
      ]);
      assertEquals(blind.code, 1, blind.output);
      assertStringIncludes(blind.output, "does not let this login read under");
      assertStringIncludes(blind.output, "nothing was removed");
      assertStringIncludes(blind.output, "--force");
      {
        await using still = await listen(broker.url, [`${prefix}/#`], admin);
        await still.waitFor(topics.state, { payload: "ON" });
        await still.waitFor(topics.availability, { payload: "offline" });
      }
      const done = await forget([
        "--mqtt",
        broker.url,
        "--mqtt-prefix",
        prefix,
        "--mqtt-credentials",
        login,
        "--force",
      ]);
      assertEquals(done.code, 0, done.output);
      assertStringIncludes(done.output, "does not let this login read under");
      await using late = await listen(broker.url, [`${prefix}/#`], admin);
      await late.publish(`${prefix}/sentinel`, "end");
      await late.waitFor(`${prefix}/sentinel`);
      assertEquals(late.heard.filter((message) => message.retain), [], "something stayed");
    });
  },
);

testWithBroker(
  "deno task mqtt:forget whose subscriptions to some of the topics it clears the broker refuses (SUBACK 0x87), its own echo granted, names them, removes nothing, and with --force clears them unseen",
  async (t) => {
    const plugin = await dynamicSecurityOrSkip(t);
    if (plugin === undefined) return;
    const prefix = `test/${crypto.randomUUID().slice(0, 8)}`;
    const topics = topicsFor(prefix);
    const configs = discoveryTopics("homeassistant", deviceId(prefix));
    const config = JSON.stringify({
      origin: { name: ORIGIN_NAME },
      device: { identifiers: [deviceId(prefix)] },
    });
    // A bridge online elsewhere, its availability unreadable to this login: not to be
    // forgotten for the discovery configs and state it can see. And all three kinds refused.
    const cases = [[topics.availability], [...configs, topics.state, topics.availability]];
    for (const denied of cases) {
      await withTempDir(async (dir) => {
        await using broker = await startBroker(dir, {
          config: await denySubscriptions(dir, plugin, denied),
        });
        const kept: [string, string][] = [
          [topics.availability, "online"],
          [topics.state, "ON"],
          ...configs.map((topic): [string, string] => [topic, config]),
        ];
        await keepRetained(broker.url, kept);
        const retained = (): Promise<string[][]> => retainedUnder(broker.url, prefix);
        const refused = await forget(["--mqtt", broker.url, "--mqtt-prefix", prefix]);
        assertEquals(refused.code, 1, refused.output);
        for (const topic of denied) {
          assertStringIncludes(
            refused.output,
            `${JSON.stringify(topic)} (reason code 0x87: Not authorized)`,
          );
        }
        assertStringIncludes(refused.output, `Cannot forget ${JSON.stringify(prefix)}: could not`);
        assertStringIncludes(refused.output, "nothing was removed");
        assertStringIncludes(refused.output, `--force to clear ${denied.join(", ")} unseen`);
        assertEquals(await retained(), kept.map((pair) => [...pair]).sort(), "all still there");

        const done = await forget(["--mqtt", broker.url, "--mqtt-prefix", prefix, "--force"]);
        assertEquals(done.code, 0, done.output);
        assertStringIncludes(done.output, `clearing ${denied.join(", ")} unseen (--force)`);
        assertEquals(await retained(), [], "everything cleared");
      });
    }
  },
);

testWithBroker(
  "deno task mqtt:forget whose subscription to its own topic alone the broker refuses (SUBACK 0x87) sees all it clears: it forgets a stopped bridge without --force, saying it waited instead of for its own message, and still refuses another program's message",
  async (t) => {
    const plugin = await dynamicSecurityOrSkip(t);
    if (plugin === undefined) return;
    const prefix = `test/${crypto.randomUUID().slice(0, 8)}`;
    const topics = topicsFor(prefix);
    const configs = discoveryTopics("homeassistant", deviceId(prefix));
    const config = JSON.stringify({
      origin: { name: ORIGIN_NAME },
      device: { identifiers: [deviceId(prefix)] },
    });
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir, {
        config: await denySubscriptions(dir, plugin, [`${prefix}/forget`]),
      });
      const retained = (): Promise<string[][]> => retainedUnder(broker.url, prefix);
      await keepRetained(broker.url, [
        [topics.availability, "offline"],
        [topics.state, "ON"],
        ...configs.map((topic): [string, string] => [topic, config]),
      ]);
      const done = await forget(["--mqtt", broker.url, "--mqtt-prefix", prefix]);
      assertEquals(done.code, 0, done.output);
      assertStringIncludes(
        done.output,
        `Could not subscribe to ${JSON.stringify(`${prefix}/forget`)} (reason code 0x87: ` +
          "Not authorized): the broker at",
      );
      assertStringIncludes(done.output, "waiting 2 s for what is retained instead");
      assertEquals(await retained(), [], "everything cleared");

      const theirs: [string, string][] = [[topics.availability, "offline"], [topics.state, "42"]];
      await keepRetained(broker.url, theirs);
      const refused = await forget(["--mqtt", broker.url, "--mqtt-prefix", prefix, "--force"]);
      assertEquals(refused.code, 1, refused.output);
      assertStringIncludes(refused.output, "which no mmap-ipc bridge publishes");
      assertEquals(await retained(), theirs.map((pair) => [...pair]).sort(), "all still there");
    });
  },
);

testWith(
  [...NEEDS.system, { name: "net", host: "127.0.0.1" }],
  "deno task mqtt:forget whose connection drops after its own message went out, before it came back, removes nothing and says so, not that its login may not read",
  async () => {
    // A fake broker: mosquitto answers too fast to drop the connection at that very moment.
    // The first connection is granted everything, its own message acknowledged, then hung up
    // on; the next ones are granted everything and route nothing, as an ACL would make it look.
    const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const prefix = "test/dropped";
    const removals: string[] = [];
    const connections: Deno.Conn[] = [];
    const serve = async (conn: Deno.Conn, first: boolean): Promise<void> => {
      const packets = new PacketReader(conn);
      for (;;) {
        const packet = await packets.next();
        const type = packet[0] >> 4;
        if (type === 1) await conn.write(CONNACK_5);
        else if (type === 8) await conn.write(subackFor(packet));
        else if (type === 12) await conn.write(new Uint8Array([0xd0, 0x00])); // PINGRESP
        else if (type === 3) {
          const published = parsePublish(packet);
          if ((packet[0] & 1) === 1) removals.push(published.topic);
          if (published.qos > 0) await conn.write(pubackFor(published.id));
          if (first && published.topic === `${prefix}/forget`) return conn.close();
        }
      }
    };
    const accepting = (async () => {
      for (let n = 0;; n++) {
        const conn = await server.accept().catch(() => undefined);
        if (conn === undefined) return;
        connections.push(conn);
        serve(conn, n === 0).catch(() => {}); // the tool hung up
      }
    })();
    try {
      const result = await forget([
        "--mqtt",
        `mqtt://127.0.0.1:${server.addr.port}`,
        "--mqtt-prefix",
        prefix,
      ]);
      assertEquals(result.code, 1, result.output);
      assertStringIncludes(
        result.output,
        `Lost the connection to mqtt://127.0.0.1:${server.addr.port} while looking at what is ` +
          `retained under "${prefix}"; nothing was removed; try again`,
      );
      assert(!result.output.includes("does not let this login read"), result.output);
      assertEquals(removals, [], "nothing was removed");
    } finally {
      server.close();
      await accepting;
      for (const conn of connections) {
        try {
          conn.close();
        } catch {
          // Closed already.
        }
      }
    }
  },
);

testWithBroker(
  "deno task mqtt:forget whose login the broker refuses says so at once, and removes nothing",
  async () => {
    await withTempDir(async (dir) => {
      await using broker = await startBroker(dir, { users: { carol: "pw" } });
      const login = `${dir}/login`;
      await Deno.writeTextFile(login, "username=carol\npassword=wrong\n", { mode: 0o600 });
      const refused = await forget([
        "--mqtt",
        broker.url,
        "--mqtt-prefix",
        "test/forget",
        "--mqtt-credentials",
        login,
      ]);
      assertEquals(refused.code, 1, refused.output);
      assertStringIncludes(
        refused.output,
        `Cannot forget "test/forget": the broker at ${broker.url} refused the connection: ` +
          'not authorized (user "carol"',
      );
      assertStringIncludes(refused.output, "nothing was removed");
      // Not the connection timeout's words: it did not wait for one, nor retry.
      assert(!refused.output.includes("within 20 s"), refused.output);
      assert(!refused.output.includes("retrying"), refused.output);
    });
  },
);
