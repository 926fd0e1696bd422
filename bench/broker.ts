/**
 * A private mosquitto broker for the benchmark and the MQTT tests: started on a free loopback
 * port with a config generated into a directory the caller owns (optionally a password file,
 * and a TLS listener with certificates from a CA made here by openssl), and always stopped.
 * Nothing here touches the system's mosquitto service or its config.
 *
 * @module
 */

import { delay } from "@std/async/delay";
import { effectiveUid } from "../ffi/posix.ts";
import { type Child, runCommand, spawnProgram } from "./processes.ts";

/** The programs a broker and its command-line clients need, and the Debian packages with them. */
export const MOSQUITTO_PROGRAMS: readonly string[] = [
  "mosquitto",
  "mosquitto_pub",
  "mosquitto_sub",
];
/** How to get {@link MOSQUITTO_PROGRAMS} on Debian. */
export const MOSQUITTO_INSTALL = "apt-get install mosquitto mosquitto-clients";

/**
 * Ports below Linux's default range of ephemeral ports (32768-60999, `ip_local_port_range`):
 * the kernel gives none of them to a socket of its own accord. (On a host whose range was
 * widened down into them, a port may again be taken between two listens.)
 */
const FIXED_PORTS = { from: 20_000, count: 12_000 };

/**
 * A loopback listener on a port below the ephemeral range, for a broker that stops listening
 * and listens again on the same port: a port from `port: 0` could be given meanwhile to any
 * connection made on the machine (a client reconnecting to that very broker among them).
 */
export function listenOnFixedPort(): Deno.TcpListener {
  for (let tries = 1;; tries++) {
    const port = FIXED_PORTS.from + Math.floor(Math.random() * FIXED_PORTS.count);
    try {
      return Deno.listen({ hostname: "127.0.0.1", port });
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse) || tries === 100) throw error;
    }
  }
}

/**
 * A port on 127.0.0.1 that nothing listens on right now, below the ephemeral range (see
 * {@link listenOnFixedPort}), so that it is still free when a broker starts, or starts again,
 * on it.
 */
export function freePort(): number {
  const listener = listenOnFixedPort();
  const { port } = listener.addr;
  listener.close();
  return port;
}

async function run(program: string, args: string[]): Promise<void> {
  const { success, stderr } = await runCommand(program, { args, stdout: "null" });
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
  const subject = (name: string): string[] => ["-subj", `/CN=${name}`];
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
    ...subject("mmap-ipc test CA"),
  ]);
  await run("openssl", [
    "req",
    ...curve,
    "-keyout",
    key,
    "-out",
    `${dir}/server.csr`,
    ...subject("localhost"),
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
  /** The text of an ACL file (mosquitto's `acl_file`): who may read and write which topics. */
  acl?: string;
  /** Listen with TLS, using certificates made by {@link makeCertificates}. */
  tls?: { cert: string; key: string };
  /** The port; default a free one. */
  port?: number;
  /** mosquitto's `max_packet_size`: the longest packet it takes (told to MQTT 5 clients). */
  maxPacketSize?: number;
  /** More lines for its mosquitto.conf, such as `max_connections 1`. */
  config?: string[];
}

/** A mosquitto broker that we started; stop it with `await using`. */
export class Broker implements AsyncDisposable {
  readonly #dir: string;
  readonly #options: BrokerOptions;
  /** The loopback port it listens on. */
  readonly port: number;
  #process: Child | undefined;
  /** Stopped by {@link Broker.freeze}, not yet let go on. */
  #frozen = false;

  /** A broker whose files live in `dir` (0700, ours), on `port`; {@link Broker.start} runs it. */
  constructor(dir: string, port: number, options: BrokerOptions = {}) {
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
      // Unlimited (0), so that a flood loses nothing at the broker. With an ACL, a limit far
      // beyond any flood instead: mosquitto 2.0.11 takes 0 as a full queue when it denies a
      // publish, and drops the client ("Bad socket read/write ... Unknown error").
      `max_queued_messages ${this.#options.acl === undefined ? 0 : 1_000_000}`,
    ];
    // As root, mosquitto would switch to its own user, which cannot read our 0700 directory.
    if (effectiveUid() === 0) lines.push("user root");
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
    if (this.#options.acl !== undefined) {
      const file = `${this.#dir}/acl`;
      await Deno.writeTextFile(file, this.#options.acl, { mode: 0o600 });
      lines.push(`acl_file ${file}`);
    }
    if (this.#options.maxPacketSize !== undefined) {
      lines.push(`max_packet_size ${this.#options.maxPacketSize}`);
    }
    if (this.#options.tls) {
      lines.push(`certfile ${this.#options.tls.cert}`, `keyfile ${this.#options.tls.key}`);
    }
    lines.push(...(this.#options.config ?? []));
    const config = `${this.#dir}/mosquitto.conf`;
    await Deno.writeTextFile(config, lines.join("\n") + "\n", { mode: 0o600 });
    const process = spawnProgram("mosquitto", ["-c", config], { stopsLast: true });
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
    // A frozen one would take its SIGTERM only once let go on: that first.
    this.thaw();
    this.#process = undefined;
    await process.stop(5_000);
  }

  /**
   * Freezes mosquitto (SIGSTOP), as a hung broker or host: its connections stay open and it
   * answers nothing, not even a ping, until {@link Broker.thaw}; {@link Broker.stop} thaws it.
   */
  freeze(): void {
    const process = this.#process;
    if (process === undefined) throw new Deno.errors.BadResource("The broker is not running");
    this.#frozen = true;
    process.kill("SIGSTOP");
  }

  /** Lets a mosquitto frozen by {@link Broker.freeze} run on (SIGCONT); nothing otherwise. */
  thaw(): void {
    if (!this.#frozen) return;
    this.#frozen = false;
    this.#process?.kill("SIGCONT");
  }

  /**
   * Writes a new ACL and has mosquitto read it again (SIGHUP), keeping every connection;
   * resolves once it says it reloaded.
   */
  async reloadAcl(acl: string): Promise<void> {
    const process = this.#process;
    if (process === undefined || this.#options.acl === undefined) {
      throw new Deno.errors.BadResource("The broker is not running with an ACL");
    }
    await Deno.writeTextFile(`${this.#dir}/acl`, acl, { mode: 0o600 });
    const since = process.lineCount;
    Deno.kill(process.pid, "SIGHUP");
    await process.waitFor(/Reloading config/, { since, timeoutMs: 10_000 });
  }

  /**
   * Stops and starts again on the same port, with nothing retained (no persistence); nothing
   * listens on it for `downMs` in between.
   */
  async restart(options: { downMs?: number } = {}): Promise<void> {
    await this.stop();
    if (options.downMs !== undefined) await delay(options.downMs);
    await this.start();
  }

  /** {@link Broker.stop}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Starts a broker whose files live in `dir`, on a free loopback port unless one is given. */
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
