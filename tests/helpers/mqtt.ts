/**
 * Test helpers for MQTT: tests that need a real mosquitto, and a real MQTT client (the npm `mqtt`
 * package) that records what it hears. The broker itself (a free loopback port, a generated
 * config, a password file or TLS) lives in `bench/broker.ts`, which the benchmark uses too.
 *
 * @module
 */

import type { IClientOptions, MqttClient } from "mqtt";
import type { Logger } from "../../app/logging.ts";
import { NEEDS, requires, testWith } from "./permissions.ts";

export {
  Broker,
  type BrokerOptions,
  freePort,
  listenOnFixedPort,
  makeCertificates,
  startBroker,
} from "../../bench/broker.ts";
export { hasProgram } from "./permissions.ts";

/**
 * Registers a test that needs mosquitto (and the permissions to run it and talk to it); it is
 * ignored, with the reason in its name, when either is missing. `.ci/run` installs mosquitto.
 */
export function testWithBroker(
  name: string,
  fn: (t: Deno.TestContext) => void | Promise<void>,
  options: { programs?: string[] } = {},
): void {
  const programs = ["mosquitto", "mosquitto_passwd", ...(options.programs ?? [])];
  testWith(
    [
      ...NEEDS.system,
      { name: "net", host: "127.0.0.1" },
      ...programs.map((program) => requires(program)),
    ],
    name,
    fn,
  );
}

/** One message a {@link Listener} heard. */
export interface Heard {
  topic: string;
  payload: string;
  retain: boolean;
}

/** A real MQTT client that records every message on the topics it subscribed to. */
export class Listener implements AsyncDisposable {
  readonly client: MqttClient;
  readonly heard: Heard[] = [];
  readonly #waiters = new Set<() => void>();

  constructor(client: MqttClient) {
    this.client = client;
    client.on("message", (topic, payload, packet) => {
      this.heard.push({ topic, payload: new TextDecoder().decode(payload), retain: packet.retain });
      for (const waiter of this.#waiters) waiter();
    });
  }

  /** Messages on `topic`, from index `since` of {@link Listener.heard}. */
  on(topic: string, since = 0): Heard[] {
    return this.heard.slice(since).filter((message) => message.topic === topic);
  }

  /** Waits for a message on `topic` (with `payload`, if given) at index `since` or later. */
  waitFor(
    topic: string,
    options: { payload?: string; since?: number; timeoutMs?: number } = {},
  ): Promise<Heard> {
    const since = options.since ?? 0;
    const find = (): Heard | undefined =>
      this.heard.slice(since).find((message) =>
        message.topic === topic &&
        (options.payload === undefined || message.payload === options.payload)
      );
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const found = find();
        if (found !== undefined) finish(() => resolve(found));
      };
      const timer = setTimeout(() => {
        const seen = this.heard.slice(since).map((m) => `${m.topic} ${m.payload}`).join("\n  ");
        finish(() =>
          reject(
            new Error(
              `No message on ${topic}${
                options.payload === undefined ? "" : ` with ${JSON.stringify(options.payload)}`
              } within ${options.timeoutMs ?? 20_000} ms; heard:\n  ${seen}`,
            ),
          )
        );
      }, options.timeoutMs ?? 20_000);
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        settle();
      };
      this.#waiters.add(check);
      check();
    });
  }

  /** Publishes and waits for the broker to take it (QoS 1). */
  async publish(
    topic: string,
    payload: string | Uint8Array,
    options: { retain?: boolean; qos?: 0 | 1 } = {},
  ): Promise<void> {
    await this.client.publishAsync(topic, payload as string, {
      qos: options.qos ?? 1,
      retain: options.retain ?? false,
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.client.endAsync(true);
  }
}

/** Connects a {@link Listener} to `url` and subscribes it to `topics` (wildcards welcome). */
export async function listen(
  url: string,
  topics: string[],
  options: IClientOptions = {},
): Promise<Listener> {
  // Loaded here: the MQTT library reads the environment as it loads, which tests without
  // --allow-env (ignored then) must not trip over.
  const { connect } = await import("mqtt");
  const client = connect(url, { reconnectPeriod: 0, connectTimeout: 10_000, ...options });
  await new Promise<void>((resolve, reject) => {
    client.once("connect", () => resolve());
    client.once("error", (error) => {
      client.end(true);
      reject(error);
    });
  });
  const listener = new Listener(client);
  if (topics.length > 0) await client.subscribeAsync(topics, { qos: 1 });
  return listener;
}

/**
 * A logger that puts each line it is told into `said`, after its level (`DBG`, `INF`, `WRN`,
 * `ERR`) and a space: tests that count what was said loudly and what only at debug level.
 */
export function linesInto(said: string[]): Logger {
  return {
    debug: (line: string) => said.push(`DBG ${line}`),
    info: (line: string) => said.push(`INF ${line}`),
    warn: (line: string) => said.push(`WRN ${line}`),
    error: (line: string) => said.push(`ERR ${line}`),
  };
}

/**
 * Where mosquitto's dynamic security plugin is, if it is installed: unlike its plain `acl_file`
 * (which grants every subscription and then delivers nothing), it refuses a subscription its
 * roles deny, in the SUBACK.
 */
export function dynamicSecurityPlugin(): string | undefined {
  const file = "mosquitto_dynamic_security.so";
  const dirs = ["/usr/lib", "/usr/local/lib", "/usr/lib64"];
  try {
    for (const entry of Deno.readDirSync("/usr/lib")) {
      if (entry.isDirectory && entry.name.endsWith("-linux-gnu")) {
        dirs.push(`/usr/lib/${entry.name}`);
      }
    }
  } catch {
    // No /usr/lib to look through: the fixed places only.
  }
  for (const dir of dirs) {
    try {
      if (Deno.statSync(`${dir}/${file}`).isFile) return `${dir}/${file}`;
    } catch {
      // Not there.
    }
  }
  return undefined;
}

/**
 * {@link dynamicSecurityPlugin}, or undefined with `t` marked as skipped for want of it: a test
 * that needs a broker whose SUBACK can refuse (mosquitto's own ACL file never does).
 */
export async function dynamicSecurityOrSkip(t: Deno.TestContext): Promise<string | undefined> {
  const plugin = dynamicSecurityPlugin();
  if (plugin === undefined) {
    await t.step({
      name: "needs mosquitto's dynamic security plugin, which can refuse a subscription (skipped)",
      ignore: true,
      fn: () => {},
    });
  }
  return plugin;
}

/**
 * The lines for {@link BrokerOptions.config} (and the plugin's file, written into `dir`) that
 * have mosquitto refuse anonymous clients' subscriptions to each of `denied` (SUBACK 0x87 in MQTT
 * 5, 0x80 in 3.1.1) and allow everything else, through the dynamic security `plugin`.
 */
export async function denySubscriptions(
  dir: string,
  plugin: string,
  denied: readonly string[],
): Promise<string[]> {
  const file = `${dir}/dynamic-security.json`;
  const config = {
    defaultACLAccess: {
      publishClientSend: true,
      publishClientReceive: true,
      subscribe: true,
      unsubscribe: true,
    },
    clients: [],
    groups: [{ groupname: "anonymous", roles: [{ rolename: "deny" }] }],
    roles: [{
      rolename: "deny",
      acls: denied.map((topic) => ({
        acltype: "subscribeLiteral",
        topic,
        priority: 0,
        allow: false,
      })),
    }],
    anonymousGroup: "anonymous",
  };
  await Deno.writeTextFile(file, JSON.stringify(config), { mode: 0o600 });
  return [`plugin ${plugin}`, `plugin_opt_config_file ${file}`];
}

/** A broker that speaks only MQTT 3.1.1 (aedes, in this process), on a free loopback port. */
export interface Aedes extends AsyncDisposable {
  /** `mqtt://127.0.0.1:PORT`. */
  url: string;
}

/** Starts an aedes broker (see {@link Aedes}); disposing it closes its server and itself. */
export async function startAedes(): Promise<Aedes> {
  // Loaded here: MQTT libraries read the environment as they load.
  const { default: aedes } = await import("aedes");
  const { createServer } = await import("node:net");
  const broker = aedes.createBroker();
  const server = createServer(broker.handle);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `mqtt://127.0.0.1:${port}`,
    async [Symbol.asyncDispose](): Promise<void> {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    },
  };
}
