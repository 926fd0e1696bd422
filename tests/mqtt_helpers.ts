/**
 * Test helpers for MQTT: a real mosquitto broker on a free loopback port with a generated
 * config (optionally a password file and a TLS listener with a CA made by openssl), started
 * and stopped by the test; and a real MQTT client (the npm `mqtt` package) that records what
 * it hears.
 *
 * @module
 */

import type { IClientOptions, MqttClient } from "mqtt";
import type { ChildProcess } from "./helpers/child_process.ts";
import { isRoot, NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { spawnProgram } from "./helpers/spawn.ts";
import { delay } from "./helpers/waiting.ts";

export { hasProgram } from "./helpers/permissions.ts";

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
    [...NEEDS.system, { name: "net", host: "127.0.0.1" }, ...programs.map(requires)],
    name,
    fn,
  );
}

/** A port on 127.0.0.1 that nothing listens on right now. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

async function run(program: string, args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command(program, {
    args,
    stdout: "null",
    stderr: "piped",
  })
    .output();
  if (!success) {
    throw new Error(`${program} ${args.join(" ")} failed: ${new TextDecoder().decode(stderr)}`);
  }
}

/** Makes a CA and a server certificate for `localhost` and 127.0.0.1 in `dir` with openssl. */
export async function makeCertificates(
  dir: string,
): Promise<{ ca: string; cert: string; key: string }> {
  const ca = `${dir}/ca.crt`;
  const caKey = `${dir}/ca.key`;
  const cert = `${dir}/server.crt`;
  const key = `${dir}/server.key`;
  const curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await run("openssl", [
    "req",
    "-x509",
    ...curve,
    "-keyout",
    caKey,
    "-out",
    ca,
    "-days",
    "2",
    "-subj",
    "/CN=mmap-ipc test CA",
  ]);
  await run("openssl", [
    "req",
    ...curve,
    "-keyout",
    key,
    "-out",
    `${dir}/server.csr`,
    "-subj",
    "/CN=localhost",
  ]);
  await Deno.writeTextFile(`${dir}/san.cnf`, "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    `${dir}/server.csr`,
    "-CA",
    ca,
    "-CAkey",
    caKey,
    "-CAcreateserial",
    "-out",
    cert,
    "-days",
    "2",
    "-extfile",
    `${dir}/san.cnf`,
  ]);
  return { ca, cert, key };
}

/** Options for {@link startBroker}. */
export interface BrokerOptions {
  /** Users and their passwords; without them, anonymous clients are allowed. */
  users?: Record<string, string>;
  /** Listen with TLS, using certificates made by {@link makeCertificates}. */
  tls?: { cert: string; key: string };
  /** The port; default a free one. */
  port?: number;
}

/** A mosquitto broker that a test started; stop it with `await using`. */
export class Broker implements AsyncDisposable {
  readonly #dir: string;
  readonly #options: BrokerOptions;
  readonly port: number;
  #process: ChildProcess | undefined;

  constructor(dir: string, port: number, options: BrokerOptions) {
    this.#dir = dir;
    this.port = port;
    this.#options = options;
  }

  /** `mqtt://127.0.0.1:PORT` (or `mqtts://localhost:PORT` with TLS). */
  get url(): string {
    return this.#options.tls ? `mqtts://localhost:${this.port}` : `mqtt://127.0.0.1:${this.port}`;
  }

  /** Whether the broker runs. */
  get running(): boolean {
    return this.#process !== undefined;
  }

  /** What the broker logged. */
  get transcript(): string {
    return this.#process?.transcript ?? "";
  }

  /** Writes the config (and password file) and starts mosquitto; resolves once it listens. */
  async start(): Promise<void> {
    if (this.#process !== undefined) return;
    const lines = [
      `listener ${this.port} 127.0.0.1`,
      "persistence false",
      "log_dest stderr",
      "log_type error",
      "log_type warning",
      "log_type notice",
      "log_type information",
      // Unlimited, so that a flood test loses nothing at the broker.
      "max_queued_messages 0",
    ];
    // As root, mosquitto would switch to its own user, which cannot read our 0700 directory.
    if (isRoot()) lines.push("user root");
    if (this.#options.users) {
      const file = `${this.#dir}/passwords`;
      await Deno.writeTextFile(file, "", { mode: 0o600 });
      for (const [user, password] of Object.entries(this.#options.users)) {
        await run("mosquitto_passwd", ["-b", file, user, password]);
      }
      lines.push("allow_anonymous false", `password_file ${file}`);
    } else {
      lines.push("allow_anonymous true");
    }
    if (this.#options.tls) {
      lines.push(`certfile ${this.#options.tls.cert}`, `keyfile ${this.#options.tls.key}`);
    }
    const config = `${this.#dir}/mosquitto.conf`;
    await Deno.writeTextFile(config, lines.join("\n") + "\n");
    const process = spawnProgram("mosquitto", ["-c", config]);
    try {
      await process.waitFor(/mosquitto version \S+ running/, { timeoutMs: 10_000 });
    } catch (error) {
      await process[Symbol.asyncDispose]();
      throw error;
    }
    this.#process = process;
  }

  /** Stops mosquitto (SIGTERM, then SIGKILL) and waits for it to go. */
  async stop(): Promise<void> {
    const process = this.#process;
    if (process === undefined) return;
    this.#process = undefined;
    process.kill("SIGTERM");
    const timer = setTimeout(() => process.kill("SIGKILL"), 5_000);
    await process.status();
    clearTimeout(timer);
  }

  /** Stops and starts again on the same port, with nothing retained (no persistence). */
  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#process?.[Symbol.asyncDispose]();
    this.#process = undefined;
  }
}

/** Starts a broker whose files live in `dir`. */
export async function startBroker(dir: string, options: BrokerOptions = {}): Promise<Broker> {
  for (let attempt = 0;; attempt++) {
    const broker = new Broker(dir, options.port ?? freePort(), options);
    try {
      await broker.start();
      return broker;
    } catch (error) {
      // Someone took the free port in between: try another.
      if (attempt >= 3 || options.port !== undefined) throw error;
      await delay(50);
    }
  }
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
