/**
 * What the MQTT bridge says and hears: the LED state (retained, republished after every
 * reconnect), availability, Home Assistant discovery, press events out, `set` commands in.
 * It owns no shared memory: the runnable script feeds it the cell's changes and the presses,
 * and hands the commands it parses to whoever applies them.
 *
 * @module
 */

import type { Logger } from "../../app/logging.ts";
import type { Command } from "../../app/remote/messages.ts";
import { BrokerConnection, type BrokerConnectionOptions } from "./connection.ts";
import {
  type DiscoveryMessage,
  OFFLINE,
  ONLINE,
  PRESS_PAYLOAD,
  STATE_OFF,
  STATE_ON,
} from "./discovery.ts";
import {
  describeMalformed,
  type MalformedKind,
  OncePerKind,
  parseSetPayload,
} from "./set_payload.ts";
import { homeAssistantStatusTopic, type Topics } from "./topics.ts";
import { refusedSubscriptions } from "./problems.ts";
import { quote } from "../../app/logging.ts";

/**
 * Home Assistant's `online` answered at most this often: a flood of them (anyone may publish
 * to its status topic) costs one announcement, and one log line, a second, not one each.
 */
const ANNOUNCE_EVERY_MS = 1_000;
/** The first wait before a state the broker refused is published again; see `#retryLater`. */
const REFUSED_RETRY_MS = 1_000;
/** The longest such wait: a broker's owner who fixed its ACL does not wait longer. */
const REFUSED_RETRY_MAX_MS = 60_000;
/** How long the bridge's own message on its echo topic may take to come back; see `#probe`. */
const ECHO_WAIT_MS = 5_000;
/**
 * The first wait before the bridge puts back its availability or state that another client
 * wrote over (see `#heard`): long enough for the echo of its own later publish to arrive, which
 * says the broker holds its state after all. Doubled at each one in a row, up to
 * {@link RESTORE_MAX_MS}: two systems on one prefix then fight once a minute, not once a second.
 */
const RESTORE_MS = 1_000;
/** The longest such wait, and the calm after which a write over is news again (said). */
const RESTORE_MAX_MS = 60_000;

/** How many of its own state messages the bridge remembers awaiting their copy; see `#heard`. */
const STATE_ECHOES_KEPT = 64;

/** The topics the bridge publishes on and listens to, to hear another client write over them. */
type Watched = "availability" | "state";

/** Options for {@link MqttBridge}. */
export interface MqttBridgeOptions {
  /** How to reach the broker (the will and the callbacks are the bridge's own). */
  connection: Omit<BrokerConnectionOptions, "will" | "onConnect" | "onMessage" | "log">;
  /** The topics. */
  topics: Topics;
  /** Home Assistant's discovery prefix, to hear when it (re)starts. */
  discoveryPrefix: string;
  /** The discovery configs to publish on every connection. */
  discovery: DiscoveryMessage[];
  /** Where to say what happens. */
  log: Logger;
  /** Called with each valid command from the `set` topic. */
  onCommand: (command: Command) => void;
}

/** The bridge's MQTT side; see the module description. */
export class MqttBridge {
  readonly #options: MqttBridgeOptions;
  readonly #connection: BrokerConnection;
  readonly #malformed = new OncePerKind<MalformedKind>();
  readonly #haStatus: string;
  /** The LED state to show; undefined until the cell was read. */
  #state: boolean | undefined;
  /** What the broker holds as the retained state, as far as this connection knows. */
  #published: boolean | undefined;
  /**
   * Counts the connections and announcements: a state publish that was in flight across one
   * does not count as the state published for it (it was asked for again, at QoS 1).
   */
  #round = 0;
  #publishing = false;
  /** The state publish the broker refused is tried again at this timer; see `#retryLater`. */
  #retry: ReturnType<typeof setTimeout> | undefined;
  /** The last wait before such a try, doubled each time up to {@link REFUSED_RETRY_MAX_MS}. */
  #retryMs = 0;
  #droppedPresses = 0;
  /** `performance.now()` at the last announcement; see {@link ANNOUNCE_EVERY_MS}. */
  #announcedAt = -Infinity;
  /** Home Assistant's `online` heard too soon after an announcement: answered at this timer. */
  #announceLater: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  /** The payload of the echo probe awaited now, if any; see `#probe`. */
  #echoAwaited: string | undefined;
  #echoTimer: ReturnType<typeof setTimeout> | undefined;
  /** The echo did not come back, and that was said: said again only after it came back. */
  #echoMissingSaid = false;
  /** This bridge's echo messages start with this; anyone else's are another client's. */
  readonly #echoPrefix = `echo ${crypto.randomUUID()} `;
  #echoCount = 0;
  /** `performance.now()` when another client's echo message was last said; see `#foreignEcho`. */
  #foreignEchoAt = -Infinity;
  /**
   * The states this bridge published on this connection whose copy has not come back yet (it
   * listens to the topic too), oldest first: a state heard that is none of these is another
   * client's. At most {@link STATE_ECHOES_KEPT}: a broker may drop a copy under load. Only over
   * MQTT 3.1.1: over 5 the bridge asks for none of its copies (No Local), and a state heard is
   * always another client's.
   */
  #stateEchoes: string[] = [];
  /** What another client wrote over this bridge's topics, by topic, not put back yet. */
  readonly #overwritten = new Map<Watched, string>();
  #restoreTimer: ReturnType<typeof setTimeout> | undefined;
  #restoreMs = 0;
  /** `performance.now()` at the last putting back; see {@link RESTORE_MAX_MS}. */
  #restoredAt = -Infinity;

  /** Prepares the bridge; {@link MqttBridge.start} connects. */
  constructor(options: MqttBridgeOptions) {
    this.#options = options;
    this.#haStatus = homeAssistantStatusTopic(options.discoveryPrefix);
    this.#connection = new BrokerConnection({
      ...options.connection,
      log: options.log,
      will: { topic: options.topics.availability, payload: OFFLINE },
      onConnect: () => this.#onConnect(),
      onMessage: (topic, payload, retained) => this.#onMessage(topic, payload, retained),
    });
  }

  /** Whether the bridge is connected to the broker now. */
  get connected(): boolean {
    return this.#connection.connected;
  }

  /** Connects, and keeps reconnecting until closed. */
  start(): void {
    this.#check();
    this.#connection.start();
  }

  /** Shows a new LED state: published now if connected, else on the next connection. */
  setState(on: boolean): void {
    this.#check();
    this.#state = on;
    this.#pushState();
  }

  /** Publishes one press on the action topic; a press while disconnected is dropped. */
  press(): void {
    this.#check();
    if (this.#connection.publishEvent(this.#options.topics.action, PRESS_PAYLOAD)) {
      if (this.#droppedPresses > 0) {
        this.#options.log.info(`Publishing presses again (${this.#droppedPresses} dropped)`);
        this.#droppedPresses = 0;
      }
    } else if (this.#droppedPresses++ === 0) {
      this.#options.log.warn(
        "A press was not published: the broker is not connected (or not keeping up); " +
          "presses are not replayed later, the LED state is",
      );
    }
  }

  /**
   * Publishes `offline`, disconnects and stops reconnecting; everything else throws
   * `BadResource` from now on. Safe twice.
   */
  close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#announceLater);
    clearTimeout(this.#retry);
    clearTimeout(this.#echoTimer);
    clearTimeout(this.#restoreTimer);
    return this.#connection.close({ topic: this.#options.topics.availability, payload: OFFLINE });
  }

  /** Same as {@link MqttBridge.close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #check(): void {
    if (this.#closed) throw new Deno.errors.BadResource("The MQTT bridge is closed");
  }

  #onConnect(): void {
    if (this.#closed) return;
    this.#published = undefined;
    // The connection publishes the state anew: a refusal then starts its own waits.
    clearTimeout(this.#retry);
    this.#retry = undefined;
    this.#retryMs = 0;
    this.#overwritten.clear();
    this.#stateEchoes = [];
    clearTimeout(this.#restoreTimer);
    this.#restoreTimer = undefined;
    this.#announce();
    const { topics } = this.#options;
    this.#connection.subscribe({
      [topics.set]: 1,
      [this.#haStatus]: 0,
      [topics.echo]: 0,
      // Its own messages on these two are no news, and each copy the broker sent back (under
      // MQTT 3.1.1, which cannot ask it not to) held back the next command to the bridge by up
      // to 40 ms: Nagle's algorithm on the broker's side (mosquitto's default) waits for the
      // bridge's delayed ACK of the copy before it sends more.
      [topics.availability]: { qos: 0, noLocal: true },
      [topics.state]: { qos: 0, noLocal: true },
    })
      .then((refused) => {
        // No answer: the connection dropped first, which it says; the next one subscribes again.
        if (refused === undefined || this.#closed) return;
        if (refused.size > 0) this.#refused(refused);
        // The echo needs both: without P/echo it could not come back, and a refused P/led/set
        // was said just now.
        if (!refused.has(topics.set) && !refused.has(topics.echo)) this.#probe();
      });
  }

  /**
   * Says which subscriptions the broker refused and what that costs: once per outage (an ACL
   * refuses them again at every connection), as the connection says its problems.
   */
  #refused(refused: Map<string, number>): void {
    const { topics, connection } = this.#options;
    const costs = [
      refused.has(topics.set) &&
      `commands on ${JSON.stringify(topics.set)} never reach the bridge`,
      refused.has(this.#haStatus) &&
      "Home Assistant's restarts go unheard (it gets discovery and the state again only at the " +
        "bridge's next connection)",
      refused.has(topics.echo) &&
      "the bridge cannot check that the broker delivers commands to it (it checks by its own " +
        `message on ${JSON.stringify(topics.echo)} coming back), nor hear another system on ` +
        "its prefix",
      (refused.has(topics.availability) || refused.has(topics.state)) &&
      "the bridge does not hear another client write over its availability or state, to put " +
        "them back",
    ].filter((cost) => typeof cost === "string");
    const { url, credentials } = connection;
    const where = { url, credentials, protocolVersion: this.#connection.protocolVersion };
    const message = `${refusedSubscriptions(refused, where)}; ${costs.join("; ")}` +
      " (said once per outage; the bridge subscribes again at each connection)";
    const kind = [...refused].map(([topic, code]) => `${topic} ${code}`).join(" ");
    this.#connection.warnOncePerOutage(`refused subscriptions: ${kind}`, message);
  }

  /**
   * Publishes a message of its own on its echo topic (not retained, nothing Home Assistant
   * reads) and says once if it does not come back within {@link ECHO_WAIT_MS}: a broker whose
   * ACL lets this login write under the prefix but not read there (mosquitto grants the
   * subscription all the same and delivers nothing) would lose every command without a word.
   */
  #probe(): void {
    clearTimeout(this.#echoTimer);
    const token = `${this.#echoPrefix}${++this.#echoCount}`;
    this.#echoAwaited = token;
    const { topics, log } = this.#options;
    this.#connection.publish(topics.echo, token, { retain: false, qos: 0 }).then((sent) => {
      if (!sent || this.#echoAwaited !== token) return;
      this.#echoTimer = setTimeout(() => {
        // A connection lost meanwhile says nothing of the ACL: the next one probes again.
        if (this.#closed || this.#echoAwaited !== token || !this.#connection.connected) return;
        if (this.#echoMissingSaid) return;
        this.#echoMissingSaid = true;
        log.warn(
          `The broker did not deliver this bridge's own message on ${
            JSON.stringify(topics.echo)
          } ` +
            `back to it within ${ECHO_WAIT_MS / 1000} s, though it granted the subscription: ` +
            "its ACL likely lets this login write under the prefix but not read there, and then " +
            `commands on ${JSON.stringify(topics.set)} never reach the bridge; or it denies ` +
            `${JSON.stringify(topics.echo)} alone, and commands still work (give it read access ` +
            `to ${JSON.stringify(topics.set)}, and read and write access to ${
              JSON.stringify(topics.echo)
            })`,
        );
      }, ECHO_WAIT_MS);
    });
  }

  /**
   * A message on the echo topic: the probe's own coming back (the broker delivers to this
   * bridge), an older one of this bridge's, or another client's (see `#foreignEcho`).
   */
  #echoed(payload: Uint8Array, retained: boolean): void {
    const text = new TextDecoder().decode(payload);
    if (!text.startsWith(this.#echoPrefix)) {
      // Retained, it is a leftover of someone's, not a bridge now connected.
      if (!retained) this.#foreignEcho(text);
      return;
    }
    if (text !== this.#echoAwaited) return;
    this.#echoAwaited = undefined;
    clearTimeout(this.#echoTimer);
    if (this.#echoMissingSaid) {
      this.#echoMissingSaid = false;
      this.#options.log.info(
        `The broker delivers this bridge's messages on ${
          JSON.stringify(this.#options.topics.echo)
        } again`,
      );
    }
  }

  /**
   * Another client published on this bridge's echo topic, as a bridge does at each connection:
   * most likely another system on this prefix, on another machine or in a container, where
   * launchers cannot see each other's claims. Said at once (the two write over each other's
   * state and availability, which `#heard` then puts back), again only after
   * {@link RESTORE_MAX_MS} without; and answered once with a probe of this bridge's, so that the
   * other one hears of this one too.
   */
  #foreignEcho(text: string): void {
    const now = performance.now();
    const news = now - this.#foreignEchoAt > RESTORE_MAX_MS;
    this.#foreignEchoAt = now;
    const { topics, log } = this.#options;
    const message =
      `Another client published ${quote(text, 60)} on ${
        JSON.stringify(topics.echo)
      }, as a bridge of another system on this prefix does when it connects (launchers on ` +
      "other machines or in containers cannot see each other's claims): the two write over " +
      "each other's state and availability; give each system its own --mqtt-prefix";
    if (!news) return log.debug(message);
    log.warn(message);
    this.#probe();
  }

  /**
   * A message on the availability or state topic, which the bridge listens to in order to hear
   * another client write over them (another system on this prefix, its goodbye or its will, or
   * a user). The broker's retained copy at subscription is no news, and over MQTT 3.1.1 the copy
   * of a state this bridge published is its own (the broker holds its latest, whose copy comes
   * last; over 5 none comes: see `#stateEchoes`); the
   * bridge never publishes `offline` while it runs. Anything else that is not what the bridge
   * holds is put back after a wait (see {@link RESTORE_MS}).
   */
  #heard(topic: Watched, payload: Uint8Array, retained: boolean): void {
    if (retained || !this.#connection.connected) return;
    const text = new TextDecoder().decode(payload);
    if (topic === "state") {
      const own = this.#stateEchoes.indexOf(text);
      if (own >= 0) {
        // Copies lost before it (a broker may drop them under load) will not come.
        this.#stateEchoes.splice(0, own + 1);
        return;
      }
    }
    const ours = topic === "availability"
      ? ONLINE
      : this.#state === undefined
      ? undefined
      : this.#state
      ? STATE_ON
      : STATE_OFF;
    if (ours === undefined) return;
    if (text === ours) {
      this.#overwritten.delete(topic);
      if (this.#overwritten.size === 0) {
        clearTimeout(this.#restoreTimer);
        this.#restoreTimer = undefined;
      }
      return;
    }
    this.#overwritten.set(topic, text);
    if (this.#restoreTimer !== undefined) return;
    const calm = performance.now() - this.#restoredAt > RESTORE_MAX_MS;
    this.#restoreMs = calm ? RESTORE_MS : Math.min(this.#restoreMs * 2, RESTORE_MAX_MS);
    this.#restoreTimer = setTimeout(() => this.#restore(), this.#restoreMs);
  }

  /** Puts back what another client wrote over: availability, discovery and the state. */
  #restore(): void {
    this.#restoreTimer = undefined;
    if (this.#closed || !this.#connection.connected || this.#overwritten.size === 0) return;
    const { topics, log } = this.#options;
    const heard = [...this.#overwritten].map(([topic, text]) =>
      `${quote(text, 20)} on ${JSON.stringify(topics[topic])}`
    ).join(" and ");
    this.#overwritten.clear();
    const now = performance.now();
    const news = now - this.#restoredAt > RESTORE_MAX_MS;
    this.#restoredAt = now;
    const message = `Another client wrote ${heard} over what this bridge holds there: put ` +
      "it back (another system on this prefix, a user, or the will of this bridge's last " +
      "connection; said again only after a minute without)";
    if (news) log.warn(message);
    else log.debug(message);
    this.#announce();
  }

  /** Availability, discovery and the state: everything a fresh broker or Home Assistant needs. */
  #announce(): void {
    this.#announcedAt = performance.now();
    // This one answers an `online` waiting for its turn too.
    clearTimeout(this.#announceLater);
    this.#announceLater = undefined;
    const { topics, discovery, log } = this.#options;
    const sent = [
      this.#connection.publish(topics.availability, ONLINE, { retain: true }),
      ...discovery.map((message) =>
        this.#connection.publish(message.topic, JSON.stringify(message.payload), { retain: true })
      ),
    ];
    Promise.all(sent).then((results) => {
      if (results.every(Boolean)) {
        log.debug(`Published availability and ${discovery.length} discovery configs`);
      }
    });
    this.#published = undefined;
    this.#round++;
    this.#pushState();
  }

  /**
   * Publishes the latest state until it is out: one publish at a time, so a burst of changes
   * costs one message per round, not one per change. QoS 0: each connection starts by
   * publishing the state again, so a message lost with a connection is soon replaced; and a
   * QoS 1 acknowledgement from the broker would, through Nagle's algorithm on its side, hold
   * back the next command to us by up to 40 ms. Except the first on a connection (or after
   * an announcement, or a refusal): at QoS 1, so that a broker whose ACL denies the topic
   * says so (at QoS 0 it drops the message without a word); it comes with the discovery
   * configs' acknowledgements anyway.
   */
  async #pushState(): Promise<void> {
    if (this.#publishing) return;
    this.#publishing = true;
    try {
      while (!this.#closed && this.#state !== undefined && this.#state !== this.#published) {
        const state = this.#state;
        const round = this.#round;
        const payload = state ? STATE_ON : STATE_OFF;
        // Before the call: its copy may come back before the call's promise settles.
        const copied = this.#connection.protocolVersion !== 5;
        if (copied && this.#stateEchoes.push(payload) > STATE_ECHOES_KEPT) {
          this.#stateEchoes.shift();
        }
        const ok = await this.#connection.publish(
          this.#options.topics.state,
          payload,
          { retain: true, qos: this.#published === undefined ? 1 : 0 },
        );
        if (!ok) {
          const at = copied ? this.#stateEchoes.lastIndexOf(payload) : -1;
          if (at >= 0) this.#stateEchoes.splice(at, 1);
          // Not connected: the next connection publishes it. Refused (a quota, an ACL the
          // broker's owner may change and reload): the broker keeps an old state meanwhile.
          this.#published = undefined;
          if (this.#connection.connected) this.#retryLater();
          return;
        }
        if (round === this.#round) {
          this.#published = state;
          this.#retryMs = 0;
        }
      }
    } finally {
      this.#publishing = false;
    }
  }

  /**
   * Publishes the state again after a wait that doubles with each refusal in a row, from
   * {@link REFUSED_RETRY_MS} to {@link REFUSED_RETRY_MAX_MS}: at QoS 1, to hear the answer. A
   * change meanwhile is published at once, as usual.
   */
  #retryLater(): void {
    if (this.#retry !== undefined || this.#closed) return;
    this.#retryMs = Math.min(Math.max(this.#retryMs * 2, REFUSED_RETRY_MS), REFUSED_RETRY_MAX_MS);
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      if (!this.#closed) this.#pushState();
    }, this.#retryMs);
  }

  /** Home Assistant (re)started: it needs discovery and the state again, at most once a second. */
  #homeAssistantOnline(): void {
    const announce = (): void => {
      this.#options.log.info("Home Assistant (re)started: publishing discovery and state again");
      this.#announce();
    };
    const wait = this.#announcedAt + ANNOUNCE_EVERY_MS - performance.now();
    if (wait <= 0) return announce();
    this.#announceLater ??= setTimeout(() => {
      this.#announceLater = undefined;
      if (!this.#closed) announce();
    }, wait);
  }

  #onMessage(topic: string, payload: Uint8Array, retained: boolean): void {
    if (this.#closed) return;
    const { topics, log } = this.#options;
    if (topic === this.#haStatus) {
      // A retained `online` is the broker's copy, handed over as this connection subscribed,
      // just after it announced: no news. Home Assistant starting sends it live.
      if (!retained && new TextDecoder().decode(payload) === "online") this.#homeAssistantOnline();
      return;
    }
    if (topic === topics.echo) return this.#echoed(payload, retained);
    if (topic === topics.availability) return this.#heard("availability", payload, retained);
    if (topic === topics.state) return this.#heard("state", payload, retained);
    if (topic !== topics.set) return;
    const parsed = parseSetPayload(payload);
    if ("cleared" in parsed) {
      // A retained command cleared, as the README says (mosquitto_pub -r -n): no command.
      log.debug(`Heard a retained message on ${topic} cleared`);
      return;
    }
    if (retained || "malformed" in parsed) {
      const kind = retained ? "retained" : (parsed as { malformed: MalformedKind }).malformed;
      const sample = "sample" in parsed ? parsed.sample : parsed.command;
      if (this.#malformed.first(kind)) log.warn(describeMalformed(kind, sample, topic));
      return;
    }
    try {
      this.#options.onCommand(parsed.command);
    } catch (error) {
      // Thrown back into the MQTT library's handler, it would end the process without its
      // goodbye; the caller's failure is its own to tell (onCommand should not throw).
      log.error(
        `Cannot apply the command ${parsed.command} from ${topic}: ${
          error instanceof Error ? error.message : String(error)
        }`,
      );
    }
  }
}
