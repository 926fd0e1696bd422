/**
 * Forgets a system on its MQTT broker: removes what the bridge left retained there under one
 * topic prefix. Its two Home Assistant discovery configs (Home Assistant then removes the device
 * and its entities), its LED state and its availability. For a prefix no longer used: after a
 * change of `--mqtt-prefix` (the old one's device would stay in Home Assistant, unavailable), or
 * a machine retired. A retained command on `P/led/set` is someone's own message, and stays; so
 * does everything when any of those topics holds a message no bridge writes (see
 * {@link bridgeWrote}): it is another program's, and the prefix is likely mistyped.
 *
 * Run `deno task mqtt:forget --help` for its flags.
 *
 * @module
 */

import { deadline } from "@std/async/deadline";
import { delay } from "@std/async/delay";
import { logFlags } from "../app/cli.ts";
import {
  type CommandFlags,
  defineCommand,
  parseCommandLine,
  printLine,
  usage,
} from "../app/flags.ts";
import { logger, quote, setupLogging } from "../app/logging.ts";
import { claimPaths } from "../app/path_claims.ts";
import { fromTaskDirectory } from "../app/task_directory.ts";
import { failureExitStatus } from "../app/exit_status.ts";
import { readCaFile } from "./mqtt/ca_file.ts";
import { loadCredentials } from "./mqtt/credentials.ts";
import { type Problem, refusedSubscriptions } from "./mqtt/problems.ts";
import {
  discoveryTopics,
  OFFLINE,
  ONLINE,
  ORIGIN_NAME,
  STATE_OFF,
  STATE_ON,
} from "./mqtt/discovery.ts";
import { localMachine, mqttIdentity } from "./mqtt/identity.ts";
import { MQTT_FLAGS, type MqttSettings, mqttSettings } from "./mqtt/settings.ts";
import { deviceId, MAX_CLIENT_ID_LENGTH, topicsFor } from "./mqtt/topics.ts";

/** Where the broker flags are listed: as the launcher of the system to forget was given them. */
const BROKER = "Broker options (as the system to forget was started with them)";

/** The command line of `deno task mqtt:forget`. */
export const MQTT_FORGET_COMMAND = defineCommand({
  name: "mqtt:forget",
  synopsis: ["deno task mqtt:forget --mqtt URL [--mqtt-prefix P] [options]"],
  description: "Removes from the broker what the system with this prefix left retained there: " +
    "its Home Assistant discovery configs (so Home Assistant removes its device), its LED state " +
    "and its availability. For a prefix no longer used: refused while a launcher of this user " +
    "uses it, or while its availability on the broker says online. Refused, removing nothing, " +
    "when any of those topics holds something no bridge of this project publishes (another " +
    "program's message: a mistyped prefix). A retained command on P/led/set is left.",
  flags: {
    mqtt: {
      ...MQTT_FLAGS.mqtt,
      group: BROKER,
      help: "the broker: mqtt://HOST[:PORT] (port 1883 by default) or mqtts://HOST[:PORT] " +
        "(TLS, 8883)",
    },
    "mqtt-credentials": { ...MQTT_FLAGS["mqtt-credentials"], group: BROKER },
    "mqtt-ca": { ...MQTT_FLAGS["mqtt-ca"], group: BROKER },
    "mqtt-prefix": {
      ...MQTT_FLAGS["mqtt-prefix"],
      group: BROKER,
      help: "the topic prefix of the system to forget",
    },
    "mqtt-discovery-prefix": { ...MQTT_FLAGS["mqtt-discovery-prefix"], group: BROKER },
    force: {
      type: "boolean",
      help: "forget it even though its availability on the broker says online (a bridge that " +
        "died without its last will, say), or this login may not read what is retained there " +
        "(the broker refuses its subscriptions to some of the four topics, which are then " +
        "cleared unseen; or its message under the prefix never comes back, and all four are); " +
        "never what is seen to be another program's message",
    },
    ...logFlags("each attempt to connect to the broker"),
  },
});

/** The parsed flags of `deno task mqtt:forget`. */
export type MqttForgetFlags = CommandFlags<typeof MQTT_FORGET_COMMAND>;

/** How long the broker is given to accept the connection. */
const CONNECT_TIMEOUT_MS = 20_000;
/** How long its own message is waited for to come back; see `main()`. */
const ECHO_WAIT_MS = 2_000;
/** Its reconnects: often enough to matter within {@link CONNECT_TIMEOUT_MS}. */
const BACKOFF = { initialMs: 500, maxMs: 5_000, jitter: 0.2 };

/**
 * The retained topics a bridge publishes under `prefix`, which forgetting it clears: the
 * discovery configs first (Home Assistant removes the entities), then the state and the
 * availability. Not `P/led/set`: a retained command there is someone's own.
 */
export function retainedTopics(prefix: string, discoveryPrefix: string): string[] {
  const topics = topicsFor(prefix);
  return [...discoveryTopics(discoveryPrefix, deviceId(prefix)), topics.state, topics.availability];
}

/**
 * Whether `payload`, retained on `topic` (one of {@link retainedTopics}), is what a bridge of
 * this project publishes there for `prefix`: `ON` or `OFF` on the state, `online` or `offline`
 * on the availability, and on a discovery topic a JSON config whose origin is `mmap-ipc` and
 * whose device is this prefix's. Anything else is another program's (a mistyped prefix that
 * lands on its topics), which forgetting must not remove.
 */
export function bridgeWrote(
  topic: string,
  payload: Uint8Array,
  where: { prefix: string; discoveryPrefix: string },
): boolean {
  const topics = topicsFor(where.prefix);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(payload);
  } catch {
    return false;
  }
  if (topic === topics.state) return text === STATE_ON || text === STATE_OFF;
  if (topic === topics.availability) return text === ONLINE || text === OFFLINE;
  if (!discoveryTopics(where.discoveryPrefix, deviceId(where.prefix)).includes(topic)) {
    return false;
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch {
    return false;
  }
  const { origin, device } = (config ?? {}) as {
    origin?: { name?: unknown };
    device?: { identifiers?: unknown };
  };
  return typeof config === "object" && origin?.name === ORIGIN_NAME &&
    Array.isArray(device?.identifiers) && device.identifiers.includes(deviceId(where.prefix));
}

async function main(settings: MqttSettings, options: { force: boolean }): Promise<number> {
  const log = logger("mqtt:forget");
  // Loaded here: the MQTT library reads the environment as it loads, and --help or a usage
  // error needs no permissions.
  const { BrokerConnection } = await import("./mqtt/connection.ts");
  const credentials = loadCredentials(settings.credentialsFile);
  const ca = settings.caFile === undefined ? undefined : readCaFile(settings.caFile);
  const { prefix, clientId } = mqttIdentity(settings, (await localMachine()).name);
  // A launcher using the prefix now would publish it all again at its next connection.
  let claims;
  try {
    claims = claimPaths([{ kind: "MQTT topic prefix", path: prefix }], { role: "mqtt:forget" });
  } catch (error) {
    if (!(error instanceof Deno.errors.Busy)) throw error;
    const who = error.message.replace(/^Cannot [^:]*: /, "")
      .replace(/; give this one another --mqtt-prefix$/, "");
    throw new Deno.errors.Busy(`Cannot forget ${JSON.stringify(prefix)}: ${who}; stop it first`);
  }
  try {
    const topics = retainedTopics(prefix, settings.discoveryPrefix);
    const availabilityTopic = topicsFor(prefix).availability;
    let availability: string | undefined;
    // What the broker holds retained on each topic: the rest have nothing to forget.
    const held = new Map<string, Uint8Array>();
    // Its own message on this topic, come back: see below.
    const echoTopic = `${prefix}/forget`;
    let echoed: () => void = () => {};
    const echo = new Promise<void>((resolve) => echoed = resolve);
    let connected: () => void = () => {};
    /** Connections the broker accepted: more than one, and what was heard may be half of it. */
    let connections = 0;
    let refused: (problem: Problem) => void = () => {};
    const accepted = new Promise<void>((resolve, reject) => {
      connected = resolve;
      refused = reject;
    });
    // An id of its own: the bridge's would take its session (and a live one would take it back).
    // Its `_` is in no default id of a bridge (lower-case letters, digits and `-`), where
    // `-forget` was the id of the bridge whose prefix is this one's with a `/forget` level added
    // (`kitchen` and `kitchen/forget`), whose session forgetting the first took away.
    const id = `${clientId.slice(0, MAX_CLIENT_ID_LENGTH - 7)}_forget`;
    await using connection = new BrokerConnection({
      url: settings.url,
      clientId: id,
      credentials,
      ca,
      caFile: settings.caFile,
      log,
      backoff: BACKOFF,
      meanwhile: "",
      onConnect: () => {
        connections++;
        connected();
      },
      // A login, certificate or client id the broker refuses is not for retrying to mend: said
      // once, below, as what stopped it.
      onProblem: (problem) => {
        if (problem.level !== "error") return false;
        refused(problem);
        return true;
      },
      onMessage: (topic, payload, retained) => {
        if (topic === echoTopic && !retained) echoed();
        if (!retained || payload.length === 0 || !topics.includes(topic)) return;
        held.set(topic, payload);
        if (topic === availabilityTopic) availability = new TextDecoder().decode(payload);
      },
    });
    connection.start();
    try {
      await deadline(accepted, CONNECT_TIMEOUT_MS);
    } catch (error) {
      if (error instanceof DOMException && error.name === "TimeoutError") {
        throw new Deno.errors.TimedOut(
          `Cannot reach the broker at ${settings.url} within ${CONNECT_TIMEOUT_MS / 1000} s ` +
            "(see above why); nothing was removed",
        );
      }
      // Mid-sentence here: "the broker at ...", as the other refusals read.
      const why = (error as Problem).message.replace(/^The /, "the ");
      throw new Deno.errors.PermissionDenied(
        `Cannot forget ${JSON.stringify(prefix)}: ${why}; nothing was removed`,
      );
    }
    // A bridge running elsewhere (another machine, or this one as another user, whose claims
    // this cannot see) says so in its retained availability; one that stopped said offline.
    const refusedTopics = await connection.subscribe(
      Object.fromEntries([...topics, echoTopic].map((topic) => [topic, 0 as const])),
    );
    // A broker sends a subscription's retained messages as it grants it, and the messages of one
    // connection in order: once a message sent after the grant comes back, they are all here.
    // One that never comes back is a login that may write under the prefix but not read there
    // (an ACL; mosquitto's acl_file grants the subscription all the same and delivers nothing).
    const lost = (): Error =>
      new Deno.errors.ConnectionReset(
        `Lost the connection to ${settings.url} while looking at what is retained under ` +
          `${JSON.stringify(prefix)}; nothing was removed; try again`,
      );
    // No SUBACK: the connection dropped before the broker answered.
    if (refusedTopics === undefined) throw lost();
    // A broker that says it refuses a subscription (its SUBACK: mosquitto's dynamic security
    // plugin, say) shows nothing retained there: what it holds, whose it is, or whether a bridge
    // is online there cannot be told, however the other topics look.
    const unseen = topics.filter((topic) => refusedTopics.has(topic));
    const where = { url: settings.url, credentials, protocolVersion: connection.protocolVersion };
    // Its own topic alone refused: what it clears can all be read, so no --force is needed.
    if (unseen.length > 0) {
      const why = `${refusedSubscriptions(refusedTopics, where)}, ` +
        "so whether anything is retained there, whose it is, or whether a bridge is online " +
        "there, cannot be told";
      if (!options.force) {
        throw new Deno.errors.PermissionDenied(
          `Cannot forget ${JSON.stringify(prefix)}: ${why.replace(/^Could/, "could")}; nothing ` +
            "was removed. Give a login " +
            `that may read there, or --force to clear ${unseen.join(", ")} unseen`,
        );
      }
      log.warn(`${why}; clearing ${unseen.join(", ")} unseen (--force)`);
    }
    let readable: boolean;
    if (refusedTopics.has(echoTopic)) {
      // A broker that says which subscriptions it refuses can read the ones it grants, whose
      // retained messages come right after the grant; nothing marks their end without the
      // echo, so they are given the time the echo would have had. One that comes later is
      // not cleared (only what was seen is), never taken for nothing there.
      log.info(
        `${
          refusedSubscriptions(
            new Map([[echoTopic, refusedTopics.get(echoTopic) ?? 0]]),
            where,
          )
        }; waiting ${ECHO_WAIT_MS / 1000} s for what is retained instead of for its own ` +
          "message there",
      );
      await delay(ECHO_WAIT_MS);
      readable = true;
    } else {
      const sent = await connection.publish(echoTopic, "", { retain: false, qos: 1 });
      if (!sent && !connection.connected) throw lost();
      readable = await deadline(echo, ECHO_WAIT_MS).then(() => true, () => false);
    }
    // A message that did not come back because the connection dropped is no sign of a login
    // that may not read; and a connection made again may not have heard everything retained.
    if (connections > 1 || !connection.connected) throw lost();
    if (!readable) {
      // A login that may clear the topics but not read them (its ACL): nothing can be told of
      // what is there, which may be another program's; only the user can say it is not.
      const blind = `The broker at ${settings.url} does not let this login read under ` +
        `${JSON.stringify(prefix)} (its message there did not come back within ` +
        `${ECHO_WAIT_MS / 1000} s), so whether anything is retained there, whose it is, or ` +
        "whether a bridge is online, cannot be told";
      if (!options.force) {
        throw new Deno.errors.PermissionDenied(
          `${blind}; nothing was removed. Give a login that may read there, or --force to ` +
            `clear all of ${topics.join(", ")} unseen`,
        );
      }
      log.warn(`${blind}; clearing all of it (--force)`);
      for (const topic of topics) held.set(topic, new Uint8Array());
    } else if (held.size === 0 && unseen.length === 0) {
      throw new Deno.errors.NotFound(
        `Nothing is retained under ${JSON.stringify(prefix)} on ${settings.url} (no ` +
          "availability, state or discovery config), so there is nothing to forget; is the " +
          'prefix right? A bridge names it in its "watch with" line',
      );
    }
    // Another program's message (a prefix mistyped onto its topics) is never removed, not even
    // with --force, which says a bridge is gone, not whose messages these are.
    const foreign = readable
      ? [...held].filter(([topic, payload]) =>
        !bridgeWrote(topic, payload, { prefix, discoveryPrefix: settings.discoveryPrefix })
      )
      : [];
    // The topics it may not read are cleared unseen (--force): nothing was heard from them.
    for (const topic of unseen) held.set(topic, new Uint8Array());
    if (foreign.length > 0) {
      const what = foreign.map(([topic, payload]) =>
        `${JSON.stringify(topic)} holds ${quote(new TextDecoder().decode(payload), 60)} ` +
        `(${payload.length} bytes)`
      ).join("; ");
      throw new Deno.errors.InvalidData(
        `Cannot forget ${JSON.stringify(prefix)} on ${settings.url}: ${what}, which no ` +
          "mmap-ipc bridge publishes (it writes ON or OFF, online or offline, and discovery " +
          `configs of origin "mmap-ipc" for device ${JSON.stringify(deviceId(prefix))}), so ` +
          "it is another program's; nothing was removed. Is the prefix right? To remove a " +
          "message anyway: mosquitto_pub -r -n -t TOPIC",
      );
    }
    // State and availability with no discovery config beside them: the configs are most likely
    // under another discovery prefix, and clearing the rest would leave Home Assistant's device
    // in place with nothing left to tell it by.
    const configs = discoveryTopics(settings.discoveryPrefix, deviceId(prefix));
    const configHeld = configs.some((topic) => held.has(topic));
    if (readable && !configHeld && !options.force) {
      throw new Deno.errors.NotFound(
        `No discovery config of ${JSON.stringify(prefix)} is retained on ${settings.url} at ` +
          `${configs.join(" or ")}, though its ${
            topics.filter((topic) => held.has(topic)).join(" and ")
          } are: the system was likely started with another --mqtt-discovery-prefix than ` +
          `${JSON.stringify(settings.discoveryPrefix)}; give the same one. Nothing was ` +
          "removed; --force clears the state and availability alone (Home Assistant then keeps " +
          "the device)",
      );
    }
    if (availability === "online" && !options.force) {
      throw new Deno.errors.Busy(
        `Cannot forget ${JSON.stringify(prefix)}: its availability on ${settings.url} says ` +
          "online, so a bridge may be using it (on another machine, or as another user); stop " +
          "it first, or give --force if it is gone (it died without its last will)",
      );
    }
    // An empty retained message removes the one kept; QoS 1, so the broker says it has it.
    // Only on the topics seen holding a bridge's message: an empty topic has nothing to lose.
    const clearing = topics.filter((topic) => held.has(topic));
    const done = await Promise.all(
      clearing.map((topic) => connection.publish(topic, "", { retain: true, qos: 1 })),
    );
    const left = clearing.filter((_, i) => !done[i]);
    if (left.length > 0) {
      log.error(
        `Could not remove ${left.length} of the ${clearing.length} retained messages of ` +
          `${JSON.stringify(prefix)} from ${settings.url}: ${left.join(", ")}`,
      );
      return 1;
    }
    const removes = configs.some((topic) => clearing.includes(topic))
      ? "Home Assistant removes its device"
      : "no discovery config was there: Home Assistant keeps any device of it";
    log.info(
      `Removed what the system ${JSON.stringify(prefix)} left retained on ${settings.url} ` +
        `(${removes}): ${clearing.join(", ")}`,
    );
    return 0;
  } finally {
    for (const claim of claims) claim.release();
  }
}

if (import.meta.main) {
  const flags: MqttForgetFlags = fromTaskDirectory(parseCommandLine(MQTT_FORGET_COMMAND), [
    "mqttCredentials",
    "mqttCa",
  ]);
  setupLogging({ level: flags.logLevel, format: flags.logFormat });
  let settings: MqttSettings | undefined;
  try {
    settings = mqttSettings(flags);
    if (settings === undefined) throw new TypeError("--mqtt URL is required");
  } catch (error) {
    printLine(
      "stderr",
      `mqtt:forget: ${(error as Error).message}\n\n${usage(MQTT_FORGET_COMMAND)}`,
    );
    Deno.exit(2);
  }
  try {
    Deno.exit(await main(settings, { force: flags.force }));
  } catch (error) {
    console.error(`mqtt:forget: ${(error as Error).message}`);
    Deno.exit(failureExitStatus(error));
  }
}
