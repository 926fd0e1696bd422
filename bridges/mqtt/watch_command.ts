/**
 * The command a person runs to watch what the bridge publishes, for its start-up line.
 *
 * @module
 */

import { shellQuote } from "../../lib/shell_quote.ts";
import type { MqttSettings } from "./settings.ts";

/**
 * The `mosquitto_sub` command that shows what the bridge publishes: with the broker's TLS and the
 * login's user name (the password left for the user to type: it is never printed).
 */
export function watchCommand(
  settings: Pick<MqttSettings, "host" | "port" | "tls" | "caFile">,
  prefix: string,
  credentials?: { username: string },
): string {
  // mosquitto_sub takes an IPv6 address without its brackets.
  const words = [
    "mosquitto_sub",
    "-h",
    shellQuote(settings.host.replace(/^\[(.*)\]$/, "$1")),
    "-p",
    String(settings.port),
  ];
  if (settings.tls) {
    words.push(
      ...(settings.caFile === undefined
        ? ["--capath", "/etc/ssl/certs"]
        : ["--cafile", shellQuote(settings.caFile)]),
    );
  }
  if (credentials !== undefined) {
    words.push("-u", shellQuote(credentials.username), "-P", "PASSWORD");
  }
  words.push("-v", "-t", shellQuote(`${prefix}/#`));
  return words.join(" ");
}
