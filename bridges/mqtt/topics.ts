/**
 * The bridge's MQTT names: its topics under one prefix, the prefix and client id a machine
 * gets by default (its host name plus a short hash of its machine id, so that two Pis both
 * called `raspberrypi` still differ), and the id Home Assistant knows the device by.
 *
 * @module
 */

import { fnv1a } from "../../app/fnv1a.ts";

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
  /**
   * The bridge's own message after each (re)subscription, not retained: whether it comes back
   * tells whether the broker lets it read under the prefix (and so hear commands).
   */
  echo: string;
}

/** The topics under `prefix`. */
export function topicsFor(prefix: string): Topics {
  return {
    state: `${prefix}/led/state`,
    set: `${prefix}/led/set`,
    action: `${prefix}/button/action`,
    availability: `${prefix}/availability`,
    echo: `${prefix}/echo`,
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
  const unfit = unfitCharacter(prefix);
  const problem = prefix === ""
    ? "it is empty"
    : /[+#]/.test(prefix)
    ? "it holds a wildcard (+ or #)"
    : unfit !== undefined
    ? `it holds ${describeUnfit(unfit)}, which brokers refuse in a topic`
    : prefix.startsWith("$")
    ? "it starts with $, which brokers keep for their own topics ($SYS)"
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

/**
 * The first code point of `text` that MQTT says a topic or client id should not hold (and
 * mosquitto refuses, dropping the connection as malformed): a control character (C0, DEL, C1),
 * a noncharacter, or half of a surrogate pair on its own (no UTF-8 spells it).
 */
export function unfitCharacter(text: string): number | undefined {
  for (const char of text) {
    const code = char.codePointAt(0) ?? 0;
    if (
      code < 0x20 || (code >= 0x7f && code <= 0x9f) || (code >= 0xfdd0 && code <= 0xfdef) ||
      (code & 0xfffe) === 0xfffe || (code >= 0xd800 && code <= 0xdfff)
    ) {
      return code;
    }
  }
  return undefined;
}

/** Names a code point {@link unfitCharacter} found: `U+0085, a control character`. */
export function describeUnfit(code: number): string {
  const kind = code >= 0xd800 && code <= 0xdfff
    ? "half of a surrogate pair on its own"
    : code < 0xa0
    ? "a control character"
    : "a noncharacter";
  return `U+${code.toString(16).toUpperCase().padStart(4, "0")}, ${kind}`;
}

/**
 * This machine's name on the broker: its host name, plus the first 6 hex digits of a hash of
 * its machine id when there is one (the id itself is never published).
 */
export async function machineName(
  hostname: string,
  machineId: string | undefined,
): Promise<string> {
  // Lower-case letters, digits and `-` only, as host names are written.
  const host = spell(hostname, "-") || "host";
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
 * Whether the ids made from `prefix` spell it exactly, so that no other prefix gives the same:
 * a default prefix (`mmap-ipc/` and a machine name: lower-case letters and digits joined by
 * single `-`), or levels of lower-case letters and digits alone (`home/kitchen`), other than
 * ones that read like a default prefix (`mmap/ipc/...`). Every other prefix loses something in
 * its id (`a-b` and `a/b` would both give `a_b`, `Kitchen` and `kitchen` both `kitchen`), and its
 * ids get a hash of it added (see {@link prefixHash}).
 */
function idsAreExact(prefix: string): boolean {
  return /^mmap-ipc\/[a-z0-9]+(-[a-z0-9]+)*$/.test(prefix) ||
    (/^[a-z0-9]+(\/[a-z0-9]+)*$/.test(prefix) && !prefix.startsWith("mmap/ipc/"));
}

/**
 * 6 hex digits of the FNV-1a (32-bit) hash of `prefix`'s UTF-8 bytes: short, the same on every
 * machine and version (it names devices in Home Assistant), and computed synchronously.
 */
function prefixHash(prefix: string): string {
  return fnv1a(prefix, 32).slice(0, 6);
}

/** `prefix` in lower case, every run of other characters as `separator`, none at either end. */
function spell(prefix: string, separator: "-" | "_"): string {
  return prefix.toLowerCase().replace(/[^a-z0-9]+/g, separator)
    .replace(new RegExp(`^${separator}+|${separator}+$`, "g"), "");
}

/** The longest client id `--mqtt-client-id` takes, and the longest one made here. */
export const MAX_CLIENT_ID_LENGTH = 128;

/**
 * The default client id of the machine called `name`; with a `prefix` the user chose, one that
 * also names the prefix, so two systems on one machine have a session each. A prefix its
 * spelling loses something of gets `--` and its hash too (`a-b` gives `...-a-b--2a89df`, while
 * `a/b` gives `...-a-b`): no other id has `--`, so the two never take each other's session.
 * An id longer than {@link MAX_CLIENT_ID_LENGTH} (a long prefix) is cut to it, ending in `--`
 * and a hash of the machine's name and the whole prefix, so it still names one system.
 */
export function defaultClientId(name: string, prefix?: string): string {
  if (prefix === undefined) return `mmap-ipc-${name}`;
  const spelled = spell(prefix, "-");
  const id = idsAreExact(prefix)
    ? `mmap-ipc-${name}-${spelled}`
    : `mmap-ipc-${name}${spelled === "" ? "" : `-${spelled}`}--${prefixHash(prefix)}`;
  if (id.length <= MAX_CLIENT_ID_LENGTH) return id;
  const hash = prefixHash(`${name}\n${prefix}`);
  const kept = id.slice(0, MAX_CLIENT_ID_LENGTH - hash.length - 2).replace(/-+$/, "");
  return `${kept}--${hash}`;
}

/**
 * The device's id in Home Assistant, made from the topic prefix so that it is stable across
 * restarts and differs wherever the topics differ: `mmap-ipc/pi-3fa2c1` gives
 * `mmap_ipc_pi_3fa2c1` and `home/kitchen` gives `home_kitchen`, as they always did. A prefix its
 * spelling loses something of gets `__` and its hash added (`home/kitchen-pi` gives
 * `home_kitchen_pi__190ce0`): no other id has `__`, so no two prefixes share a device.
 */
export function deviceId(prefix: string): string {
  const spelled = spell(prefix, "_");
  return idsAreExact(prefix) ? spelled : `${spelled || "mmap_ipc"}__${prefixHash(prefix)}`;
}
