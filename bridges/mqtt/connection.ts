/**
 * One connection to an MQTT broker that stays up for as long as the bridge runs: reconnects
 * with exponential backoff (with jitter, so a fleet does not come back in step), says once per
 * outage and kind what is wrong (refused, unreachable, bad credentials, TLS), and never
 * queues while it is down, so its memory stays bounded however long the broker is away.
 *
 * @module
 */

import type { Logger } from "../../app/logging.ts";
import { connect, type ErrorWithReasonCode, type MqttClient } from "mqtt";
import type { Credentials } from "./credentials.ts";
import {
  closedBeforeAccepted,
  describeProblem,
  type Problem,
  reasonCode,
  refusedPublish,
} from "./problems.ts";
import { type Backoff, backoffDelay } from "../../app/backoff.ts";
import { type Oversized, PacketFilter, publishSize, type SkippedPublish } from "./packet_size.ts";
import { type Duplex, Transform } from "node:stream";
import { Buffer } from "node:buffer";
import { connect as connectTcp } from "node:net";
import { parseBrokerUrl } from "./settings.ts";

/** 0.5 s, doubling to 30 s, spread by +-20 % so a fleet does not come back in step. */
export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000, jitter: 0.2 };

/** A connection that lasted this long counts as healthy: the next outage starts the backoff over. */
const STABLE_MS = 10_000;
/**
 * The longest packet the broker may send the bridge (MQTT 5's Maximum Packet Size): it drops a
 * longer message, which is no command anyway (a `set` payload has at most 64 bytes), rather than
 * have the bridge take it in whole before refusing it (150 MB took the bridge to 384 MiB). A
 * broker that sends one all the same (or over 3.1.1) has the bridge drop the connection as soon
 * as the packet's header arrives; see `#guardIncoming`.
 */
export const MAX_INCOMING_PACKET = 4096;
/** CONNACK return codes that say the broker does not speak MQTT 5: 3.1.1's and 5's. */
const UNSUPPORTED_VERSION = new Set([1, 132]);
/**
 * Hang-ups before accepting an MQTT 5 connection, in a row, after which 3.1.1 is tried once: some
 * brokers close a connection of a version they do not speak without a word.
 */
const V5_HANG_UPS = 2;

/** Connections in a row shorter than {@link STABLE_MS} before the bridge says what may cause it. */
const SHORT_LIVED_TO_WARN = 3;
/** How long the check that the broker still listens (see {@link listens}) waits for an answer. */
const LISTENS_WAIT_MS = 2_000;
/** MQTT 5 DISCONNECT reason code: another client connected with this one's client id. */
const SESSION_TAKEN_OVER = 0x8e;
/**
 * The kind under which "Lost the connection" is kept among what was said (#reported): once per
 * outage, as the problems are. A broker that accepts each connection and soon drops it (a rival
 * client with the same id, a broker restarted over and over) would otherwise have it said at
 * every reconnect.
 */
const LOST = "lost the connection";
/** The options of an MQTT 5 connection, which the bridge makes unless it just fell back. */
const MQTT_5 = {
  protocolVersion: 5,
  properties: { maximumPacketSize: MAX_INCOMING_PACKET },
} as const;
/** Whether `client` connects with MQTT 5 (not fallen back to 3.1.1). */
function speaks5(client: MqttClient): boolean {
  return client.options.protocolVersion === 5;
}

/** QoS 0 messages allowed to wait for the socket; more are dropped rather than queued. */
const MAX_UNWRITTEN = 32;
/**
 * How long a close waits for each of its two steps (the broker taking the last message, the
 * connection ending); the launcher's grace for the bridge, `BRIDGE_STOP_GRACE_MS`, covers both.
 */
export const GRACE_MS = 2_000;

/**
 * How {@link BrokerConnection.subscribe} subscribes to a topic: its QoS, or its QoS and No Local
 * (the broker sends this client's own messages on it back to no one but others).
 */
export type Subscription = 0 | 1 | { qos: 0 | 1; noLocal: true };

/** Options for {@link BrokerConnection}. */
export interface BrokerConnectionOptions {
  /** `mqtt://HOST:PORT` or `mqtts://HOST:PORT`. */
  url: string;
  /** The MQTT client id. */
  clientId: string;
  /** The login, if the broker needs one. */
  credentials?: Credentials;
  /** PEM CA certificates to trust for TLS, instead of the public ones. */
  ca?: string;
  /** The file `ca` was read from, named when the broker's certificate is not signed by it. */
  caFile?: string;
  /** Published (retained) by the broker when the connection dies without a goodbye. */
  will?: { topic: string; payload: string };
  /** Reconnect delays. Default {@link DEFAULT_BACKOFF}. */
  backoff?: Backoff;
  /**
   * The MQTT keepalive, in seconds: mqtt.js pings the broker after this long without an
   * acknowledgement or a ping's answer from it, and drops the connection (said) if the answer
   * does not come within half as long again. Default 30: a broker that hangs is noticed within
   * 45 s. An MQTT 5 broker may set another in its CONNACK (Server Keep Alive), which mqtt.js
   * then keeps to, and a keepalive timeout names.
   */
  keepaliveSeconds?: number;
  /** Where to say what happens. */
  log: Logger;
  /**
   * What goes on while the broker cannot be reached, said after each problem. Default: the
   * bridge's "the button and LED work meanwhile"; empty for nothing.
   */
  meanwhile?: string;
  /**
   * Told of each problem as it happens, repeats too (the log hears each kind once). Returns
   * true when the caller says it itself, and stops: the log then says nothing of retrying.
   */
  onProblem?: (problem: Problem) => boolean | void;
  /** Called on each (re)connection: subscribe and publish the current state here. */
  onConnect: () => void;
  /** Called for each message on a subscribed topic. */
  onMessage: (topic: string, payload: Uint8Array, retained: boolean) => void;
}

/** A connection to a broker; see the module description. */
export class BrokerConnection {
  readonly #options: BrokerConnectionOptions;
  readonly #backoff: Backoff;
  readonly #reported = new Set<string>();
  /**
   * The reason codes of publishes the broker refused, by topic, each said once until the topic
   * is accepted again: an ACL refuses the same topics again at every reconnect and announcement.
   */
  readonly #refused = new Map<string, Set<number>>();
  #client: MqttClient | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #failures = 0;
  /** Attempts since the last connection that the broker never accepted, for the log. */
  #refusals = 0;
  /** Connections in a row the broker closed soon after accepting them; see #onClose. */
  #shortLived = 0;
  /** The broker said the connection closing now was taken over by a client with our id. */
  #takenOver = false;
  /** The takeover was said; not again until a connection lasts without one. */
  #takeoverSaid = false;
  /**
   * An error was reported for the attempt or connection under way (a malformed or oversized
   * packet, a reset): its close needs no words of its own, and hints at no rival client.
   */
  #attemptErred = false;
  /** The broker said why it closes the connection (DISCONNECT with a reason code). */
  #disconnectSaid = false;
  /** The reason code of the broker's DISCONNECT on the connection now closing, if it sent one. */
  #disconnectCode: number | undefined;
  /** The attempt just refused was in MQTT 5, and the next speaks 3.1.1: no failure to count. */
  #fellBack = false;
  /** Attempts in MQTT 5 in a row the broker hung up on before accepting; see {@link V5_HANG_UPS}. */
  #v5HangUps = 0;
  /** The fall back to 3.1.1 was said; not again until an MQTT 5 connection is accepted. */
  #fallBackSaid = false;
  #connectedAt: number | undefined;
  /** The MQTT version of the connection the broker accepted last (4: 3.1.1); see its getter. */
  #protocolVersion: 4 | 5 | undefined;
  /** This connection has lasted STABLE_MS and ended the outage (see #endOutage). */
  #outageEnded = false;
  /** The longest packet the broker takes (its MQTT 5 Maximum Packet Size), if it said. */
  #brokerMax: number | undefined;
  /**
   * The keepalive the broker set for this connection, in seconds (its MQTT 5 Server Keep
   * Alive, mosquitto's max_keepalive), if it did: mqtt.js uses it instead of the one asked for.
   */
  #serverKeepalive: number | undefined;
  /** The topics whose messages were too long for the broker, said once each, with the limit. */
  readonly #tooLong = new Set<string>();
  /** Counts connections, so a callback from an old one does not touch the current count. */
  #generation = 0;
  #unwritten = 0;
  /** Publishes waiting for the broker: settled (false) when the connection drops. */
  readonly #inFlight = new Set<(ok: boolean) => void>();
  #closing = false;
  /** Ends the check that the broker still listens (see #onClose) when the connection closes. */
  #listensCheck: AbortController | undefined;

  /** Prepares the connection; {@link BrokerConnection.start} makes it. */
  constructor(options: BrokerConnectionOptions) {
    this.#options = options;
    this.#backoff = options.backoff ?? DEFAULT_BACKOFF;
  }

  /** Whether the broker accepted the connection and it is up now. */
  get connected(): boolean {
    return this.#client?.connected ?? false;
  }

  /**
   * The MQTT version of the connection the broker accepted last: 5, or 4 for MQTT 3.1.1 (after
   * a broker refused 5); undefined before the first. A SUBACK that {@link
   * BrokerConnection.subscribe} resolves with came on that connection: no other is accepted
   * before the next attempt's timer.
   */
  get protocolVersion(): 4 | 5 | undefined {
    return this.#protocolVersion;
  }

  /** Connects, and keeps reconnecting until closed. */
  start(): void {
    this.#check();
    if (this.#client !== undefined) return;
    const { url, clientId, credentials, ca, will } = this.#options;
    const client = connect(url, {
      clientId,
      username: credentials?.username,
      password: credentials?.password,
      ca,
      rejectUnauthorized: true,
      // MQTT 5; 3.1.1 for one attempt after a broker refuses it (see #fallBackTo311).
      protocolVersion: MQTT_5.protocolVersion,
      properties: { ...MQTT_5.properties },
      clean: true,
      keepalive: this.#keepaliveSeconds,
      connectTimeout: 10_000,
      // Reconnects are ours (with backoff); nothing is queued while down.
      reconnectPeriod: 0,
      queueQoSZero: false,
      resubscribe: false,
      will: will && { topic: will.topic, payload: will.payload, qos: 1, retain: true },
      // The stream builder is wrapped below before the first connection.
      manualConnect: true,
    });
    this.#guardIncoming(client);
    client.on("connect", (connack) => {
      this.#brokerMax = connack.properties?.maximumPacketSize;
      this.#serverKeepalive = connack.properties?.serverKeepAlive;
      this.#onConnect();
    });
    client.on("disconnect", (packet) => this.#onDisconnect(packet.reasonCode ?? 0));
    client.on("close", () => this.#onClose());
    client.on("error", (error) => {
      this.#attemptErred = true;
      if (this.#fallBack(client, error as ErrorWithReasonCode)) return;
      this.#report(error as ErrorWithReasonCode);
      this.#dropIfOpen(client);
    });
    client.on("message", (topic, payload, packet) => {
      this.#options.onMessage(topic, payload, packet.retain);
    });
    this.#client = client;
    client.connect();
  }

  /**
   * Makes each socket `client` opens leave out every message longer than
   * {@link MAX_INCOMING_PACKET} unread, whatever the protocol version, and drop the connection on
   * any other packet that long: mqtt.js checks the size only after buffering the whole packet
   * (256 MiB at most) and then fails the connection, and a broker may ignore the limit the bridge
   * asked for, or (over 3.1.1) never have been told it. Dropping the connection on a message
   * would not do: one retained on a topic the bridge subscribes to comes back at every
   * connection. A message left out at QoS 1 is acknowledged here, as mqtt.js would have.
   */
  #guardIncoming(client: MqttClient): void {
    const inner = client as unknown as { streamBuilder: (client: MqttClient) => Duplex };
    const build = inner.streamBuilder;
    inner.streamBuilder = (c: MqttClient): Duplex => {
      const stream = build(c);
      const filter = new PacketFilter(MAX_INCOMING_PACKET);
      const filtered = new Transform({
        transform: (chunk: Buffer, _encoding, done) => {
          const { pass, skipped, oversized } = filter.feed(chunk);
          for (const message of skipped) {
            // Written whole between two of mqtt.js's packets: it writes each in one go.
            if (message.qos === 1 && !stream.destroyed) {
              stream.write(
                Buffer.from([0x40, 0x02, message.packetId >> 8, message.packetId & 0xff]),
              );
            }
            this.#sayOnce(`skipped: ${message.topic}`, this.#skippedMessage(c, message));
          }
          if (oversized !== undefined && !stream.destroyed) {
            this.#attemptErred = true;
            this.#tell(this.#oversized(c, oversized));
            stream.destroy();
          }
          done(null, pass.length === 0 ? undefined : Buffer.concat(pass));
        },
      });
      // mqtt.js reads the socket through stream.pipe(its parser) alone: the filter goes between.
      const pipe = stream.pipe.bind(stream);
      stream.pipe = <T extends NodeJS.WritableStream>(
        destination: T,
        options?: { end?: boolean },
      ): T => {
        pipe(filtered);
        return filtered.pipe(destination, options);
      };
      return stream;
    };
  }

  /** What to say of a message longer than the bridge takes, left out. */
  #skippedMessage(client: MqttClient, message: SkippedPublish): string {
    return `The broker at ${this.#options.url} sent a message of ${message.size} bytes on ` +
      `${JSON.stringify(message.topic)}, more than the ${MAX_INCOMING_PACKET} the bridge takes ` +
      `(a command has at most 64 bytes): left it out unread (${this.#whyLong(client)})`;
  }

  /** Why a broker sent a packet longer than the bridge takes. */
  #whyLong(client: MqttClient): string {
    return speaks5(client)
      ? "the broker ignores the Maximum Packet Size the bridge asked for in MQTT 5"
      : "over MQTT 3.1.1 the broker cannot be told the longest packet the bridge takes";
  }

  /** What to say of a packet longer than the bridge takes that is no message. */
  #oversized(client: MqttClient, packet: Oversized): Problem {
    const { url } = this.#options;
    const what = packet.type === 3 ? "a message at QoS 2" : `a packet of type ${packet.type}`;
    return {
      kind: "oversized",
      level: "warn",
      message: `The broker at ${url} began to send ${what} of ${packet.size} bytes, more than ` +
        `the ${MAX_INCOMING_PACKET} the bridge takes: dropped the connection rather than read ` +
        `it (${this.#whyLong(client)})`,
    };
  }

  #onConnect(): void {
    const { log, url, clientId } = this.#options;
    // Small messages go out at once: without this, Nagle's algorithm meeting the broker's
    // delayed ACK holds a press event back ~40 ms now and then.
    (this.#client?.stream as { setNoDelay?: (noDelay: boolean) => void } | undefined)
      ?.setNoDelay?.(true);
    this.#generation++;
    this.#unwritten = 0;
    this.#connectedAt = performance.now();
    this.#outageEnded = false;
    if (this.#client !== undefined) this.#protocolVersion = speaks5(this.#client) ? 5 : 4;
    const after = this.#refusals > 0 ? ` (after ${this.#refusals} failed attempts)` : "";
    this.#refusals = 0;
    log.info(`Connected to ${url} as ${clientId}${after}`);
    // What was said is forgotten only once this connection proves stable (see #tell): a broker
    // that accepts and soon drops each one is one outage, not one per connection.
    if (this.#client !== undefined && speaks5(this.#client)) this.#fallBackSaid = false;
    this.#options.onConnect();
  }

  /**
   * An MQTT 5 broker said why it closes the connection. "Session taken over" (0x8e) is another
   * client connecting with this one's id: said at once, once per run of them, as the closes in a
   * row would only hint at it after three (a copy of its SD card or of its unit, each taking
   * the id in turn; launchers on one machine cannot share a prefix, see `app/path_claims.ts`).
   */
  #onDisconnect(code: number): void {
    const { log, url, clientId } = this.#options;
    this.#disconnectCode = code;
    if (code !== SESSION_TAKEN_OVER) {
      this.#disconnectSaid = true;
      log.info(`The broker at ${url} closes the connection (reason code ${reasonCode(code)})`);
      return;
    }
    this.#takenOver = true;
    if (this.#takeoverSaid) return;
    this.#takeoverSaid = true;
    log.warn(
      `The broker at ${url} gave this bridge's session to another client connecting as ` +
        `${JSON.stringify(clientId)} (reason code 0x8e, session taken over): another system ` +
        "(a copy of this one, on another machine or in a container) uses the same client id, " +
        "and the two take it from each other in turn; give one of them its own --mqtt-prefix " +
        "(or --mqtt-client-id, if they are one system)",
    );
  }

  #onClose(): void {
    // The client forgets what was in flight when it reconnects: settle it here, as not done.
    for (const settle of this.#inFlight) settle(false);
    this.#inFlight.clear();
    if (this.#closing) return;
    const { log, url, clientId } = this.#options;
    const client = this.#client;
    const was5 = client !== undefined && speaks5(client);
    // 3.1.1 was for this attempt only (unless it falls back now): a broker that hung up twice
    // may have been restarting, and one that speaks only 3.1.1 refuses MQTT 5 again at once.
    if (client !== undefined && !was5 && !this.#fellBack) speak5(client);
    /** This close is a short-lived one with no cause said, and the takeover was not said. */
    let unexplained = false;
    if (this.#connectedAt !== undefined) {
      const lasted = performance.now() - this.#connectedAt;
      this.#connectedAt = undefined;
      this.#v5HangUps = 0;
      const takenOver = this.#takenOver;
      this.#takenOver = false;
      if (lasted >= STABLE_MS) {
        this.#failures = 0;
        this.#shortLived = 0;
        this.#endOutage();
        // Not taken from it for a while: a later takeover is news again.
        if (!takenOver) this.#takeoverSaid = false;
      } else if (this.#attemptErred || this.#disconnectSaid) {
        // A close with a cause said already (the bridge dropped it on an error, or the broker
        // gave a reason) is no sign of a rival client: it ends a run of unexplained ones.
        this.#shortLived = 0;
      } else {
        // Three in a row have a usual cause: a second client with our id (a cloned SD card, a
        // copy of the unit on another machine or in a container), each taking the id in turn;
        // said once the broker is seen to listen still after each (below), as it does when it
        // gives the id to another client.
        this.#shortLived++;
        unexplained = !this.#takeoverSaid;
      }
      // Named briefly: what the error or the DISCONNECT said is on a line of its own.
      const cause = this.#attemptErred
        ? "dropped for the error said above"
        : this.#disconnectCode !== undefined
        ? `the broker closed it, reason code ${reasonCode(this.#disconnectCode)}`
        : "the broker or the network closed it without a word";
      // Once per outage, then at debug level; each connection's "Connected to" says it is back.
      this.#sayOnce(
        LOST,
        `Lost the connection to ${url} after ${(lasted / 1000).toFixed(1)} s (${cause}); ` +
          "reconnecting",
      );
    } else {
      // A failed attempt ends a run of short-lived connections: an outage, not a rival client.
      this.#shortLived = 0;
      if (!this.#fellBack) this.#refusals++;
      // Closed before the broker's answer, with no error to say why: say it once per outage.
      if (this.#attemptErred) this.#v5HangUps = 0;
      else if (client !== undefined && was5 && ++this.#v5HangUps >= V5_HANG_UPS) {
        this.#v5HangUps = 0;
        this.#fallBackTo311(client, `hung up on it ${V5_HANG_UPS} times before accepting it`);
      } else this.#tell(closedBeforeAccepted(url));
    }
    this.#attemptErred = false;
    this.#disconnectSaid = false;
    this.#disconnectCode = undefined;
    this.#fellBack = false;
    if (!unexplained) {
      this.#scheduleReconnect();
      return;
    }
    // A broker that went away (stopped, restarted) closes every connection without a word too,
    // and a few restarts within 10 s made as many short-lived connections. A broker that gives
    // the id to another client still listens; one that is going away has stopped listening by
    // the time its connections close (mosquitto 2.0.11 stopped: a connection made as soon as its
    // clients saw the close was refused every time), so a connection to it now is refused.
    // Checked at each close of the run, not only the third: a broker restarted at once may
    // listen again before a check is made, and one such close must not make a rival of three.
    // The next attempt is scheduled once this check settles (within LISTENS_WAIT_MS).
    const run = this.#shortLived;
    const { host, port } = brokerAddress(url);
    const check = this.#listensCheck = new AbortController();
    listens(host, port, check.signal).then((listening) => {
      if (this.#listensCheck === check) this.#listensCheck = undefined;
      if (this.#closing) return;
      if (!listening) {
        // Went away: a run of short-lived connections ends here, as at a failed attempt.
        this.#shortLived = 0;
        log.debug(
          `Nothing accepts connections at ${url} right after it closed the connection: the ` +
            "broker went away (stopped or restarting), no sign of another client with this id",
        );
      } else if (run === SHORT_LIVED_TO_WARN) {
        log.warn(
          `The broker at ${url} closed the connection soon after accepting it, ` +
            `${SHORT_LIVED_TO_WARN} times in a row, and still listens: another client may be ` +
            `connecting as ${JSON.stringify(clientId)} (another system with the same name: a ` +
            "copy of this one on another machine or in a container, which needs its own " +
            "--mqtt-prefix; or this system twice, which --mqtt-client-id tells apart), or the " +
            "broker refuses something this bridge does (its log says what)",
        );
      }
      this.#scheduleReconnect();
    });
  }

  /** Makes the next attempt to connect after the backoff's delay, unless one is due already. */
  #scheduleReconnect(): void {
    if (this.#closing || this.#timer !== undefined) return;
    const delay = backoffDelay(this.#backoff, this.#failures);
    this.#failures++;
    this.#options.log.debug(`Next attempt to connect in ${delay} ms`);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.#closing) this.#client?.reconnect();
    }, delay);
  }

  /**
   * After an error that left the socket open (a malformed packet from the broker: the client
   * only reports it), drops the connection, so #onClose reconnects now rather than when the
   * keepalive gives up on a connection nothing more can be read from. Errors that closed the
   * socket already (refused, unreachable, a CONNACK refusal) are left to their own close.
   */
  #dropIfOpen(client: MqttClient): void {
    if (this.#closing || client.disconnecting) return;
    const stream = client.stream as { destroyed?: boolean } | undefined;
    if (stream !== undefined && stream.destroyed === false) client.end(true);
  }

  /**
   * Whether `error` was a broker's refusal of MQTT 5: the next attempt (made as after any
   * refusal) speaks 3.1.1, said once.
   */
  #fallBack(client: MqttClient, error: ErrorWithReasonCode): boolean {
    if (!speaks5(client) || !UNSUPPORTED_VERSION.has(error.code as number)) return false;
    this.#fallBackTo311(client, "refused it");
    return true;
  }

  /**
   * Makes the next attempt speak MQTT 3.1.1 (the one after it MQTT 5 again; see #onClose), and
   * says why once until an MQTT 5 connection is accepted.
   */
  #fallBackTo311(client: MqttClient, why: string): void {
    this.#fellBack = true;
    // reconnect() connects with these options.
    client.options.protocolVersion = 4;
    delete client.options.properties;
    const { log, url } = this.#options;
    const message = `The broker at ${url} ${why} in MQTT 5: using 3.1.1 for the next ` +
      "connection, MQTT 5 again after it; 3.1.1 cannot tell the broker the longest packet the " +
      `bridge takes, so the bridge leaves out unread any message longer than ` +
      `${MAX_INCOMING_PACKET} bytes`;
    if (this.#fallBackSaid) {
      log.debug(message);
      return;
    }
    this.#fallBackSaid = true;
    log.info(message);
  }

  #report(error: ErrorWithReasonCode): void {
    const { url, credentials, caFile } = this.#options;
    const accepted = this.#connectedAt !== undefined;
    // The keepalive in effect, as mqtt.js takes it (its `keepalive` getter): the broker's, if
    // it set one (not 0) and the bridge asked for one at all.
    const server = this.#serverKeepalive;
    const fromBroker = accepted && server !== undefined && server > 0 &&
      this.#keepaliveSeconds > 0 && server !== this.#keepaliveSeconds;
    const keepalive = fromBroker
      ? { keepaliveSeconds: server, keepaliveAsked: this.#keepaliveSeconds }
      : { keepaliveSeconds: this.#keepaliveSeconds };
    this.#tell(describeProblem(error, { url, credentials, accepted, caFile, ...keepalive }));
  }

  /** The keepalive the bridge asks for, in seconds. */
  get #keepaliveSeconds(): number {
    return this.#options.keepaliveSeconds ?? 30;
  }

  /**
   * Forgets what was said, once per connection that lasted STABLE_MS: found at its first
   * problem or at its close, whichever comes first. Each of its problems had cleared it
   * before, so a stable connection said each one at every occurrence, and its close cleared
   * what its last problem had said, which the first reconnect then said again.
   */
  #endOutage(): void {
    if (this.#outageEnded) return;
    this.#outageEnded = true;
    this.#reported.clear();
  }

  /** Warns of `message` once per outage for `kind` (kept in #reported), at debug level after. */
  #sayOnce(kind: string, message: string): void {
    const { log } = this.#options;
    if (this.#saidBefore(kind)) log.debug(message);
    else log.warn(message);
  }

  /** Says what went wrong: once per outage for each kind, and only at debug level after. */
  #tell(problem: Problem): void {
    const { log } = this.#options;
    if (this.#options.onProblem?.(problem) === true) return;
    if (this.#saidBefore(problem.kind)) {
      log.debug(problem.message);
      return;
    }
    const meanwhile = this.#options.meanwhile ?? "the button and LED work meanwhile";
    log[problem.level](
      `${problem.message}; retrying (every ${this.#backoff.maxMs / 1000} s at most)` +
        (meanwhile === "" ? "" : `, ${meanwhile}`),
    );
  }

  /**
   * Whether `kind` was said already in this outage (kept in #reported); marks it said. A
   * connection up for STABLE_MS ended the outage first: what comes now is news.
   */
  #saidBefore(kind: string): boolean {
    const connectedAt = this.#connectedAt;
    if (connectedAt !== undefined && performance.now() - connectedAt >= STABLE_MS) {
      this.#endOutage();
    }
    if (this.#reported.has(kind)) return true;
    this.#reported.add(kind);
    return false;
  }

  /**
   * Publishes (QoS 1 unless `qos` says 0); resolves true once the broker has it (QoS 1) or it
   * was written to the socket (QoS 0), false at once when not connected (nothing is queued),
   * if the connection drops first, or if the broker refused it (said once per topic; only an
   * MQTT 5 broker says so, and only at QoS 1).
   */
  publish(
    topic: string,
    payload: string,
    options: { retain: boolean; qos?: 0 | 1 },
  ): Promise<boolean> {
    this.#check();
    return this.#publish(topic, payload, options);
  }

  #publish(
    topic: string,
    payload: string,
    options: { retain: boolean; qos?: 0 | 1 },
  ): Promise<boolean> {
    const client = this.#client;
    if (client === undefined || !client.connected) return Promise.resolve(false);
    const qos = options.qos ?? 1;
    if (!this.#fits(client, topic, payload, qos)) return Promise.resolve(false);
    return new Promise((resolve) => {
      const settle = (ok: boolean): void => {
        if (this.#inFlight.delete(settle)) resolve(ok);
      };
      this.#inFlight.add(settle);
      client.publish(topic, payload, { qos, retain: options.retain }, (error) => {
        if (error) this.#refusal(topic, error as ErrorWithReasonCode);
        else if (qos === 1) this.#accepted(topic);
        settle(error === undefined || error === null);
      });
    });
  }

  /**
   * Whether a PUBLISH of `payload` on `topic` is within the broker's Maximum Packet Size. A
   * longer one is not sent (the broker would drop the connection for it, and again at every
   * announcement) and is said once per topic and limit, naming both; the rest goes on.
   */
  #fits(client: MqttClient, topic: string, payload: string, qos: 0 | 1): boolean {
    const max = this.#brokerMax;
    if (max === undefined) return true;
    const size = publishSize(topic, payload, qos, speaks5(client));
    if (size <= max) return true;
    const { log, url } = this.#options;
    const message = `Did not send a message on ${JSON.stringify(topic)} of ${size} bytes: the ` +
      `broker at ${url} takes packets of at most ${max} bytes (its Maximum Packet Size, ` +
      "max_packet_size in mosquitto) and would drop the connection for it; the rest of the " +
      "bridge works meanwhile";
    const key = `${max} ${topic}`;
    if (this.#tooLong.has(key)) {
      log.debug(message);
      return false;
    }
    this.#tooLong.add(key);
    log.warn(message);
    return false;
  }

  /**
   * Says that the broker refused a publish to `topic`, if `error` is its answer: an MQTT 5
   * PUBACK with a reason code of failure (0x87 when an ACL denies the topic; a broker says
   * nothing of a refused QoS 0 message, nor in 3.1.1). Once per topic and code, then at debug
   * level: the user has to change the broker, and a log line per announcement says no more.
   * An error without a code is the connection's, which #onClose deals with.
   */
  #refusal(topic: string, error: ErrorWithReasonCode): void {
    if (typeof error.code !== "number") return;
    const { log, url, credentials } = this.#options;
    const message = refusedPublish(error as Error & { code: number }, {
      url,
      topic,
      credentials,
    });
    const codes = this.#refused.get(topic) ?? new Set<number>();
    if (codes.has(error.code)) {
      log.debug(message);
      return;
    }
    this.#refused.set(topic, codes.add(error.code));
    log.warn(message);
  }

  /**
   * Says that the broker acknowledged a message on `topic` it had refused before (its ACL was
   * changed and reloaded, a quota freed): once, and a later refusal is said again.
   */
  #accepted(topic: string): void {
    if (this.#refused.delete(topic)) {
      this.#options.log.info(
        `The broker at ${this.#options.url} accepts messages on ${JSON.stringify(topic)} again`,
      );
    }
  }

  /**
   * Publishes an event with QoS 0, not retained; false (dropped) when not connected or when
   * the socket already holds {@link MAX_UNWRITTEN} unwritten events.
   */
  publishEvent(topic: string, payload: string): boolean {
    this.#check();
    const client = this.#client;
    if (client === undefined || !client.connected) return false;
    if (this.#unwritten >= MAX_UNWRITTEN) return false;
    if (!this.#fits(client, topic, payload, 0)) return false;
    const generation = this.#generation;
    this.#unwritten++;
    client.publish(topic, payload, { qos: 0, retain: false }, () => {
      if (generation === this.#generation) this.#unwritten--;
    });
    return true;
  }

  /**
   * Subscribes to `topics` (topic to QoS, or to a QoS with `noLocal`). Resolves with the topics
   * the broker refused, each with the reason code its SUBACK gave it (0x80 or more: 0x87 when an
   * ACL denies it; 0x80 is all MQTT 3.1.1 says), empty when it granted them all; or undefined
   * when no SUBACK came (not connected, or the connection dropped first, which the connection
   * says itself): the next connection subscribes again.
   *
   * `noLocal` asks the broker not to send this client its own messages on the topic back (MQTT
   * 5's No Local): MQTT 3.1.1 has no such option, and there they come back all the same; see
   * {@link BrokerConnection.protocolVersion}.
   */
  subscribe(topics: Record<string, Subscription>): Promise<Map<string, number> | undefined> {
    this.#check();
    const client = this.#client;
    if (client === undefined || !client.connected) return Promise.resolve(undefined);
    const noLocal = speaks5(client);
    const request = Object.fromEntries(
      Object.entries(topics).map(([topic, wanted]) =>
        typeof wanted === "number"
          ? [topic, { qos: wanted }]
          : [topic, noLocal ? { qos: wanted.qos, nl: true } : { qos: wanted.qos }]
      ),
    );
    return new Promise((resolve) => {
      // With an error too (a refusal makes one), mqtt.js hands over the subscriptions it sent
      // and the SUBACK, whose codes are in the same order; the error names no topic.
      client.subscribe(request, (_error, sent, suback) => {
        const codes = suback?.granted as number[] | undefined;
        if (sent === undefined || codes === undefined || codes.length !== sent.length) {
          resolve(undefined);
          return;
        }
        const refused = new Map<string, number>();
        sent.forEach(({ topic }, i) => {
          if (codes[i] >= 0x80) refused.set(topic, codes[i]);
        });
        resolve(refused);
      });
    });
  }

  /**
   * Says `message` (a warning) once per outage for each `kind`, as the connection says its own
   * problems, and at debug level after: for what the broker refuses again at every connection,
   * such as a subscription its ACL denies. A connection that lasted 10 s ends the outage.
   */
  warnOncePerOutage(kind: string, message: string): void {
    this.#check();
    this.#sayOnce(`caller: ${kind}`, message);
  }

  /**
   * Publishes `last` (retained) if connected, says goodbye to the broker and stops
   * reconnecting; waits at most a few seconds. Everything else throws `BadResource` from now
   * on. Safe twice.
   */
  async close(last?: { topic: string; payload: string }): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    const client = this.#client;
    if (last !== undefined && client?.connected) {
      await withTimeout(this.#publish(last.topic, last.payload, { retain: true }), GRACE_MS);
    }
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#listensCheck?.abort();
    if (client === undefined) return;
    const ended = new Promise<void>((resolve) =>
      client.end(!client.connected, {}, () => resolve())
    );
    if (!(await withTimeout(ended, GRACE_MS))) {
      await new Promise<void>((resolve) => client.end(true, {}, () => resolve()));
    }
  }

  /** Same as {@link BrokerConnection.close} without a last message, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #check(): void {
    if (this.#closing) {
      throw new Deno.errors.BadResource(
        `The connection to the broker at ${this.#options.url} is closed`,
      );
    }
  }
}

/** The host (an IPv6 address without its brackets) and port of the broker at `url`. */
function brokerAddress(url: string): { host: string; port: number } {
  const { host, port } = parseBrokerUrl(url);
  return { host: host.replace(/^\[(.*)\]$/, "$1"), port };
}

/**
 * Whether something accepts TCP connections at `host`:`port` now: a bare connection, made as
 * the MQTT client makes its own (node:net, the same name resolution), closed at once without a
 * byte sent. False when refused, unreachable, or not answered within {@link LISTENS_WAIT_MS};
 * false at once when `signal` aborts.
 */
function listens(host: string, port: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    let socket: ReturnType<typeof connectTcp>;
    try {
      socket = connectTcp({ host, port });
    } catch {
      // Whatever keeps a connection from being tried keeps the broker from being reached.
      resolve(false);
      return;
    }
    const done = (listening: boolean): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", abort);
      socket.destroy();
      resolve(listening);
    };
    const abort = (): void => done(false);
    const timer = setTimeout(abort, LISTENS_WAIT_MS);
    signal.addEventListener("abort", abort);
    socket.once("connect", () => done(true));
    // Not once: an error after the first must not go unhandled.
    socket.on("error", abort);
  });
}

/** Makes the next attempt of `client` speak MQTT 5 again. */
function speak5(client: MqttClient): void {
  // reconnect() connects with these options.
  client.options.protocolVersion = MQTT_5.protocolVersion;
  client.options.properties = { ...MQTT_5.properties };
}

/** Resolves true when `promise` settles within `ms`, false when the time runs out first. */
async function withTimeout(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([promise.then(() => true, () => true), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}
