/**
 * The bridge's MQTT names: its topics under one prefix, the prefix and client id a machine
 * gets by default (its host name plus a short hash of its machine id, so that two Pis both
 * called `raspberrypi` still differ), and the id Home Assistant knows the device by.
 *
 * @module
 */

/** The topics the bridge publishes and listens on. */
export interface Topics {
  /** `ON` / `OFF`, retained: the LED's state. */
  state: string;
  /** `ON` / `OFF` / `TOGGLE`: commands for the LED. */
  set: string;
  /** `press`, once per press of the button (not retained). */
  action: string;
  /** `online` / `offline`, retained, with `offline` as the last will. */
  availability: string;
}

/** The topics under `prefix`. */
export function topicsFor(prefix: string): Topics {
  return {
    state: `${prefix}/led/state`,
    set: `${prefix}/led/set`,
    action: `${prefix}/button/action`,
    availability: `${prefix}/availability`,
  };
}

/** Where Home Assistant announces itself (`online` when it starts): its birth topic. */
export function homeAssistantStatusTopic(discoveryPrefix: string): string {
  return `${discoveryPrefix}/status`;
}

/**
 * Checks a topic prefix given on the command line: a plain topic of one or more levels, no
 * wildcards, no empty level, at most 200 characters. Throws a `TypeError` naming `flag`.
 */
export function checkTopicPrefix(prefix: string, flag: string): string {
  const problem = prefix === ""
    ? "it is empty"
    : /[+#\0]/.test(prefix)
    ? "it holds a wildcard (+ or #) or a NUL"
    : prefix.split("/").some((level) => level === "")
    ? "it has an empty level (a leading, trailing or double /)"
    : prefix.length > 200
    ? "it is longer than 200 characters"
    : undefined;
  if (problem !== undefined) {
    throw new TypeError(`Invalid ${flag} ${JSON.stringify(prefix)}: ${problem}`);
  }
  return prefix;
}

/** Lower-case letters, digits and `-` only, as host names and ids are written. */
function slug(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "") || "host";
}

/**
 * This machine's name on the broker: its host name, plus the first 6 hex digits of a hash of
 * its machine id when there is one (the id itself is never published).
 */
export async function machineName(
  hostname: string,
  machineId: string | undefined,
): Promise<string> {
  const host = slug(hostname);
  const id = machineId?.trim();
  if (!id) return host;
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(`mmap-ipc:${id}`),
  );
  const hex = Array.from(
    new Uint8Array(digest).subarray(0, 3),
    (byte) => byte.toString(16).padStart(2, "0"),
  ).join("");
  return `${host}-${hex}`;
}

/** The default topic prefix of the machine called `name`. */
export function defaultPrefix(name: string): string {
  return `mmap-ipc/${name}`;
}

/**
 * The default client id of the machine called `name`; with a `prefix` the user chose, one that
 * also names the prefix, so two systems on one machine have a session each.
 */
export function defaultClientId(name: string, prefix?: string): string {
  return prefix === undefined ? `mmap-ipc-${name}` : `mmap-ipc-${name}-${slug(prefix)}`;
}

/**
 * The device's id in Home Assistant, made from the topic prefix so that it is stable across
 * restarts and differs wherever the topics differ: `mmap-ipc/pi-3fa2c1` gives
 * `mmap_ipc_pi_3fa2c1`.
 */
export function deviceId(prefix: string): string {
  const id = prefix.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "");
  // A prefix of symbols only still needs an id of its own: spell its characters in hex.
  return id ||
    `mmap_ipc_${Array.from(prefix, (char) => char.codePointAt(0)?.toString(16)).join("_")}`;
}
