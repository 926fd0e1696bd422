/**
 * What went wrong with a connection to the broker, in words a person can act on, sorted into
 * kinds so that each kind is reported once per outage.
 *
 * @module
 */

import type { Credentials } from "./credentials.ts";

/** What went wrong, sorted so each kind is reported once per outage. */
export interface Problem {
  /** The kind: the same kind is reported once per outage. */
  kind: string;
  /** What to tell the user. */
  message: string;
  /** How loud: an error needs the user to act. */
  level: "warn" | "error";
}

/**
 * The broker (or whatever listens at its address) closed a connection before accepting it, and
 * the client saw no error: no CONNACK at all.
 */
export function closedBeforeAccepted(url: string): Problem {
  // A broker at its max_connections hangs up at once, as something that speaks no MQTT does.
  const tls = url.startsWith("mqtt://") ? " (a port that takes TLS wants an mqtts:// URL)" : "";
  return {
    kind: "closed before accepted",
    level: "warn",
    message: `${url} closed the connection before accepting it (no answer to the MQTT CONNECT): ` +
      "the broker may turn clients away (at its max_connections, say), or what listens there " +
      `speaks no MQTT${tls}; its log says why it hung up`,
  };
}

/**
 * The words for a reset before the broker accepted the connection: a TLS port meeting a plain
 * CONNECT, a plain port meeting a TLS handshake, and a broker at its max_connections all look
 * alike to the client, so the hint names the mismatch and the turning away, in that order.
 */
function resetBeforeAccepted(url: string, code: string): string {
  const turnedAway = "the broker turned this client away (at its max_connections, say; its " +
    "log says why)";
  return url.startsWith("mqtts://")
    ? `The broker at ${url} closed the connection before the TLS handshake was done (${code}): ` +
      "if that port takes plain MQTT (1883 usually does), use an mqtt:// URL; if it takes TLS, " +
      turnedAway
    : `The broker at ${url} reset the connection before accepting it (${code}): if that port ` +
      `takes TLS (8883 usually does), use an mqtts:// URL; if it takes plain MQTT, ${turnedAway}`;
}

/** An MQTT 5 reason code as the specification writes it: `0x87`. */
export function reasonCode(code: number): string {
  return `0x${code.toString(16).padStart(2, "0")}`;
}

/**
 * What to say when the broker answered a publish to `topic` with an MQTT 5 reason code of
 * failure (`error.code`, such as 0x87 Not authorized when its ACL denies the topic).
 */
export function refusedPublish(
  error: Error & { code: number },
  where: { url: string; topic: string; credentials: Credentials | undefined },
): string {
  const { url, topic, credentials } = where;
  const reason = error.message.replace(/^Publish error: /, "");
  const refused = `The broker at ${url} refused a message on ${JSON.stringify(topic)} ` +
    `(reason code ${reasonCode(error.code)}: ${reason})`;
  const who = credentials === undefined
    ? "anonymous clients"
    : `user ${JSON.stringify(credentials.username)}`;
  const why = error.code === 0x87 ? `: its ACL does not let ${who} publish there` : "";
  return `${refused}${why} (said once per topic; the rest of the bridge works meanwhile)`;
}

/** The SUBACK reason codes of refusal in MQTT 5 (3.1.1 has 0x80 alone: {@link FAILURE_311}). */
const SUBACK_REFUSALS: Readonly<Record<number, string>> = {
  0x80: "Unspecified error",
  0x83: "Implementation specific error",
  0x87: "Not authorized",
  0x8f: "Topic Filter invalid",
  0x91: "Packet Identifier in use",
  0x97: "Quota exceeded",
  0x9e: "Shared Subscriptions not supported",
  0xa1: "Subscription Identifiers not supported",
  0xa2: "Wildcard Subscriptions not supported",
};

/** What MQTT 3.1.1 calls its one SUBACK refusal, 0x80 (MQTT 5's "Unspecified error"). */
const FAILURE_311 = "Failure";

/**
 * What to say when the broker refused the subscriptions to the topics of `refused`, each with
 * the reason code its SUBACK gave (0x87 Not authorized when an ACL denies it): names each topic
 * and code, by the name the connection's protocol level (`protocolVersion`: 5, or 4 for MQTT
 * 3.1.1; 5 when not given) gives it, and who the ACL turns away.
 */
export function refusedSubscriptions(
  refused: ReadonlyMap<string, number>,
  where: { url: string; credentials?: Credentials; protocolVersion?: 4 | 5 },
): string {
  const { url, credentials } = where;
  const name = (code: number): string =>
    where.protocolVersion === 4 && code === 0x80
      ? FAILURE_311
      : SUBACK_REFUSALS[code] ?? "a refusal";
  const each = [...refused].map(([topic, code]) =>
    `${JSON.stringify(topic)} (reason code ${reasonCode(code)}: ${name(code)})`
  );
  const list = each.length === 1 ? each[0] : `${each.slice(0, -1).join(", ")} and ${each.at(-1)}`;
  const who = credentials === undefined
    ? "anonymous clients"
    : `user ${JSON.stringify(credentials.username)}`;
  const why = [...refused.values()].includes(0x87)
    ? `: its ACL does not let ${who} subscribe there`
    : "";
  return `Could not subscribe to ${list}: the broker at ${url} refused ` +
    `${refused.size === 1 ? "it" : "them"}${why}`;
}

/** A TLS failure that is about the host name, not the CA. */
const NAME_MISMATCH = /ALTNAME|HOSTNAME|not valid for name|does not match/i;

const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO|HOSTNAME_)/;

/** Where a problem of the MQTT client happened, for {@link describeProblem}. */
export interface ProblemContext {
  /** The broker's URL. */
  url: string;
  /** The login given, if any. */
  credentials?: Credentials;
  /** It came after the broker had accepted the connection (a reset then is no TLS port's). */
  accepted?: boolean;
  /** The `--mqtt-ca` file trusted instead of the public CAs, if one was given. */
  caFile?: string;
  /** The MQTT keepalive in effect, in seconds: the broker's, when it set one. */
  keepaliveSeconds?: number;
  /** The keepalive asked for, in seconds, when the broker set another (MQTT 5 Server Keep Alive). */
  keepaliveAsked?: number;
}

/** Turns an error of the MQTT client into a problem a person can act on. */
export function describeProblem(
  error: Error & { code?: string | number },
  context: ProblemContext,
): Problem {
  const { url, credentials } = context;
  const code = error.code;
  if (typeof code === "number" && context.accepted) {
    // No CONNACK refusal: the connection was accepted (a client-side check such as 0x95).
    return {
      kind: `failed ${code}`,
      level: "warn",
      message: `The connection to the broker at ${url} failed after it accepted it: ` +
        `${error.message} (reason code ${reasonCode(code)})`,
    };
  }
  if (typeof code === "number") {
    const refused = `The broker at ${url} refused the connection`;
    const login = credentials === undefined
      ? "no user name was given: set --mqtt-credentials FILE, or $MMAP_IPC_MQTT_USERNAME and $MMAP_IPC_MQTT_PASSWORD"
      : `user ${JSON.stringify(credentials.username)} from ${credentials.source}`;
    switch (code) {
      case 4:
      case 134:
        return {
          kind: "credentials",
          level: "error",
          message: `${refused}: bad user name or password (${login})`,
        };
      case 5:
      case 135:
        return {
          kind: "credentials",
          level: "error",
          message: `${refused}: not authorized (${login})`,
        };
      case 2:
      case 133:
        return {
          kind: "client id",
          level: "error",
          message: `${refused}: it rejects the client id; choose another with --mqtt-client-id`,
        };
      default:
        return { kind: `refused ${code}`, level: "warn", message: `${refused}: ${error.message}` };
    }
  }
  if (code === "ECONNREFUSED") {
    return {
      kind: "refused",
      level: "warn",
      message:
        `Cannot reach the broker at ${url}: nothing accepts connections there (ECONNREFUSED)`,
    };
  }
  if (code === "ECONNRESET" && !context.accepted) {
    return { kind: "reset", level: "warn", message: resetBeforeAccepted(url, code) };
  }
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") {
    return {
      kind: "dns",
      level: "warn",
      message: `Cannot find the broker's host in ${url} (${code})`,
    };
  }
  if (
    typeof code === "string" && TLS_CODES.test(code) &&
    NAME_MISMATCH.test(`${code} ${error.message}`)
  ) {
    // Another CA would not help: the certificate is sound, for another name.
    return {
      kind: "tls",
      level: "error",
      message: `Cannot trust the broker at ${url}: ${error.message} (${code}); its certificate ` +
        "is for another host name: put a name it was issued for in the URL",
    };
  }
  if (typeof code === "string" && TLS_CODES.test(code)) {
    // With --mqtt-ca given, that file is the only trust: asking for it again would mislead.
    const hint = context.caFile === undefined
      ? "if its certificate comes from a private CA, give that CA with --mqtt-ca FILE"
      : `its certificate is not signed by a CA in ${JSON.stringify(context.caFile)} ` +
        "(--mqtt-ca), the only CAs trusted: give the CA that issued it (and any CA between " +
        "the two)";
    return {
      kind: "tls",
      level: "error",
      message: `Cannot trust the broker at ${url}: ${error.message} (${code}); ${hint}`,
    };
  }
  if (error.message === "Keepalive timeout") {
    // mqtt.js pings after a keepalive without an acknowledgement or a ping's answer from the
    // broker, and gives up half a keepalive later.
    const keepalive = context.keepaliveSeconds;
    const silence = keepalive === undefined ? "" : ` for ${keepalive * 1.5} s`;
    const set = context.keepaliveAsked === undefined
      ? ""
      : `, the broker's Server Keep Alive; the bridge asked for ${context.keepaliveAsked} s`;
    const asked = keepalive === undefined ? "" : ` ${keepalive} s${set}`;
    return {
      kind: "keepalive",
      level: "warn",
      message: `The broker at ${url} answered nothing${silence}, a ping included (MQTT ` +
        `keepalive${asked}): it hangs, or the network to it is down; dropped the connection`,
    };
  }
  if (error.message === "connack timeout") {
    return {
      kind: "timeout",
      level: "warn",
      message: `The broker at ${url} did not answer the connect request in time`,
    };
  }
  return {
    // One kind for all errors without a code (the parser's, whose text differs with each
    // packet a peer that is no MQTT broker sends): said once per outage, not once per attempt.
    kind: `other ${code ?? "without a code"}`,
    level: "warn",
    message: `Connection to the broker at ${url} failed: ${error.message}${
      code ? ` (${code})` : ""
    }`,
  };
}
