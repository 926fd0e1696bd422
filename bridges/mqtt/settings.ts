/**
 * The MQTT bridge's command-line settings: the `--mqtt...` flags the launcher takes and hands
 * on to the bridge, their checks, and the permissions the bridge process runs with.
 *
 * @module
 */

import { camelCase } from "../../app/flags.ts";
import { checkCredentialsEnv } from "./credentials.ts";
import { checkTopicPrefix, describeUnfit, MAX_CLIENT_ID_LENGTH, unfitCharacter } from "./topics.ts";

/**
 * How long the launcher gives the bridge to stop after SIGTERM before it kills it: its whole
 * close (up to `GRACE_MS` of `connection.ts` for the broker to take `offline`, as long again to
 * end the connection) with 2 s to spare for its exit. Killed sooner, it would leave the broker
 * to publish its last will a keepalive later, and Home Assistant would show it online till then.
 */
export const BRIDGE_STOP_GRACE_MS = 6_000;

const GROUP = "MQTT options (bridge the button and LED to a broker and to Home Assistant)";

/** The `--mqtt...` flags, which the launcher takes and hands on to the bridge. */
export const MQTT_FLAGS = {
  mqtt: {
    type: "string",
    arg: "URL",
    group: GROUP,
    help: "start the MQTT bridge to this broker: mqtt://HOST[:PORT] (port 1883 by default) " +
      "or mqtts://HOST[:PORT] (TLS, 8883)",
  },
  "mqtt-credentials": {
    type: "string",
    arg: "FILE",
    group: GROUP,
    defaultText: "$MMAP_IPC_MQTT_USERNAME and $MMAP_IPC_MQTT_PASSWORD if set, else none",
    help: "log in with the username=... and password=... lines of FILE, which only you may " +
      "read (chmod 600); never on the command line",
  },
  "mqtt-ca": {
    type: "string",
    arg: "FILE",
    group: GROUP,
    defaultText: "the public CAs",
    help: "with mqtts://, trust the CA certificates in this PEM file",
  },
  "mqtt-prefix": {
    type: "string",
    arg: "P",
    group: GROUP,
    defaultText: "mmap-ipc/HOSTNAME-XXXXXX, XXXXXX from the machine id",
    help: "the topic prefix",
  },
  "mqtt-client-id": {
    type: "string",
    arg: "ID",
    group: GROUP,
    defaultText: "mmap-ipc-HOSTNAME-XXXXXX (with --mqtt-prefix P, P's letters and digits added)",
    help: "the MQTT client id",
  },
  "mqtt-discovery-prefix": {
    type: "string",
    arg: "P",
    group: GROUP,
    // No default here: mqttSettings() supplies it, so that a value given without --mqtt shows.
    defaultText: "homeassistant",
    help: "Home Assistant's discovery prefix",
  },
} as const;

/** The `--mqtt...` flags' values, as the flag layer hands them over. */
export interface MqttFlagValues {
  /** `--mqtt`. */
  mqtt?: string;
  /** `--mqtt-credentials`. */
  mqttCredentials?: string;
  /** `--mqtt-ca`. */
  mqttCa?: string;
  /** `--mqtt-prefix`. */
  mqttPrefix?: string;
  /** `--mqtt-client-id`. */
  mqttClientId?: string;
  /** `--mqtt-discovery-prefix`. */
  mqttDiscoveryPrefix?: string;
}

/** The bridge's settings, checked. */
export interface MqttSettings {
  /** The broker, as `mqtt://HOST:PORT` or `mqtts://HOST:PORT`. */
  url: string;
  /** The broker's host (IPv6 addresses in brackets). */
  host: string;
  /** The broker's port. */
  port: number;
  /** Whether the connection uses TLS. */
  tls: boolean;
  /** The credentials file (relative paths are the launcher's; the bridge runs there too). */
  credentialsFile?: string;
  /** A PEM file of CA certificates. */
  caFile?: string;
  /** The topic prefix, when given. */
  prefix?: string;
  /** The client id, when given. */
  clientId?: string;
  /** Home Assistant's discovery prefix. */
  discoveryPrefix: string;
}

/** A host name (or IPv4 address): labels of letters, digits, `-` and `_`, a trailing dot or not. */
const HOST_NAME = /^[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?$/i;

/** Reads and checks a broker URL; throws a `TypeError` that says what is wrong. */
export function parseBrokerUrl(
  text: string,
): { url: string; host: string; port: number; tls: boolean } {
  const invalid = (why: string): TypeError =>
    new TypeError(`Invalid --mqtt ${JSON.stringify(text)}: ${why}`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    const port = /:(\d+)\/?$/.exec(text)?.[1];
    if (port !== undefined && Number(port) > 65535) {
      throw invalid(`port ${port} is no port: ports go from 1 to 65535`);
    }
    throw invalid("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]");
  }
  if (url.protocol !== "mqtt:" && url.protocol !== "mqtts:") {
    throw invalid(`the scheme must be mqtt:// or mqtts://, not ${url.protocol}//`);
  }
  if (url.username !== "" || url.password !== "") {
    throw invalid(
      "it holds a user name or password, and every user can read a command line; use " +
        "--mqtt-credentials FILE or $MMAP_IPC_MQTT_USERNAME and $MMAP_IPC_MQTT_PASSWORD",
    );
  }
  if (url.hostname === "") throw invalid("it names no host");
  // Percent-escapes in a host pass the URL parser, and then fail where the bridge is given
  // --allow-net for it, as a crash loop: refused here, as a port 0 that no broker listens on.
  if (url.hostname.includes("%")) {
    throw invalid(
      "its host holds a % escape (or letters beyond ASCII: write such a name in its xn-- form)",
    );
  }
  // The URL parser takes almost anything as the host of an mqtt:// URL (`a=b`, `a,b`); Deno
  // then refuses to connect there (a crash loop), or reads `a,b` in --allow-net as two hosts.
  if (!/^\[[0-9a-f:.]+\]$/i.test(url.hostname) && !HOST_NAME.test(url.hostname)) {
    throw invalid(
      `its host ${JSON.stringify(url.hostname)} is no host name (letters, digits, - and _ in ` +
        "labels between dots), IPv4 address or [IPv6] address",
    );
  }
  if (url.port === "0") throw invalid("port 0 is no port a broker listens on");
  if ((url.pathname !== "" && url.pathname !== "/") || url.search !== "" || url.hash !== "") {
    throw invalid("only a host and a port may follow the scheme");
  }
  const tls = url.protocol === "mqtts:";
  const port = url.port === "" ? (tls ? 8883 : 1883) : Number(url.port);
  return { url: `${url.protocol}//${url.hostname}:${port}`, host: url.hostname, port, tls };
}

/**
 * The settings the flags give, or undefined without `--mqtt`. Throws a `TypeError` for a
 * flag that is wrong or that makes no sense without another, and for a password in the
 * environment without a user name when no `--mqtt-credentials` file is given.
 */
export function mqttSettings(flags: MqttFlagValues): MqttSettings | undefined {
  if (flags.mqtt === undefined) {
    // Every --mqtt-... flag, from the table itself, so a flag added later is covered too.
    const needless = Object.keys(MQTT_FLAGS).filter((name) =>
      name !== "mqtt" && flags[camelCase(name) as keyof MqttFlagValues] !== undefined
    ).map((name) => `--${name}`);
    if (needless.length > 0) {
      throw new TypeError(
        `${needless.join(", ")} ${needless.length > 1 ? "need" : "needs"} --mqtt URL`,
      );
    }
    return undefined;
  }
  const broker = parseBrokerUrl(flags.mqtt);
  const { mqttCa: caFile, mqttCredentials: credentialsFile, mqttClientId: clientId } = flags;
  // The file, when given, is the launcher's to check (it exits 1 naming it, as for any file).
  if (credentialsFile === undefined) checkCredentialsEnv();
  if (caFile !== undefined && !broker.tls) {
    throw new TypeError(`--mqtt-ca is for TLS: use an mqtts:// URL, not ${broker.url}`);
  }
  if (clientId !== undefined) checkClientId(clientId);
  return {
    ...broker,
    credentialsFile,
    caFile,
    prefix: flags.mqttPrefix === undefined
      ? undefined
      : checkTopicPrefix(flags.mqttPrefix, "--mqtt-prefix"),
    clientId,
    discoveryPrefix: checkTopicPrefix(
      flags.mqttDiscoveryPrefix ?? "homeassistant",
      "--mqtt-discovery-prefix",
    ),
  };
}

/** The flags that hand `settings` on to the bridge process. */
export function mqttBridgeArgs(settings: MqttSettings): string[] {
  const pairs: [string, string | undefined][] = [
    ["--mqtt", settings.url],
    ["--mqtt-credentials", settings.credentialsFile],
    ["--mqtt-ca", settings.caFile],
    ["--mqtt-prefix", settings.prefix],
    ["--mqtt-client-id", settings.clientId],
    ["--mqtt-discovery-prefix", settings.discoveryPrefix],
  ];
  return pairs.flatMap(([flag, value]) => value === undefined ? [] : [flag, value]);
}

/**
 * What the bridge process may do: map the shared state (ffi, through which it also reads the
 * credentials and CA files, the machine id and the host name, as the launcher does), and reach
 * its broker and nothing else. The whole environment, because the MQTT library's logging module
 * lists it when it loads.
 */
export function mqttBridgePermissions(settings: MqttSettings): string[] {
  return [
    "--allow-ffi",
    "--allow-env",
    `--allow-net=${settings.host}:${settings.port}`,
  ];
}

/**
 * Checks `--mqtt-client-id`: 1 to {@link MAX_CLIENT_ID_LENGTH} characters, none that a broker
 * refuses in a CONNECT (it drops the connection as malformed, and the bridge would retry for
 * good, blaming everything but the id).
 */
function checkClientId(clientId: string): void {
  const unfit = unfitCharacter(clientId);
  const problem = clientId === ""
    ? "it is empty"
    : clientId.length > MAX_CLIENT_ID_LENGTH
    ? `it is longer than ${MAX_CLIENT_ID_LENGTH} characters`
    : unfit !== undefined
    ? `it holds ${describeUnfit(unfit)}, which brokers refuse in a client id`
    : undefined;
  if (problem !== undefined) {
    throw new TypeError(
      `Invalid --mqtt-client-id ${JSON.stringify(clientId)}: ${problem} (give 1 to ` +
        `${MAX_CLIENT_ID_LENGTH} printable characters)`,
    );
  }
}
