/**
 * The MQTT bridge (issue 15) through the real launcher, a private mosquitto on a loopback port
 * and mosquitto's own C clients at the far end. Latency rows (interleaved over the runs):
 * - `mqtt.pub-to-sub`: a line written to `mosquitto_pub -l` until `mosquitto_sub` prints it, the
 *   broker hop between two C clients: the baseline of the two rows below.
 * - `mqtt.press-to-message`: a press written to the button's FIFO until `mosquitto_sub` prints
 *   it from `PREFIX/button/action`.
 * - `mqtt.set-to-led`: `TOGGLE` written to `mosquitto_pub -l` on `PREFIX/led/set` until the
 *   LED's log line.
 * - `mqtt.press-to-led`: press to LED with the bridge running, beside `mqtt.press-to-led-alone`
 *   from a launcher without `--mqtt` in the same run: the local path must keep its speed.
 *
 * Then, once per run, a fresh bridge under a flood of `set` messages: how many it handles per
 * second and its RSS before, at most and after. Skipped, with the reason, where mosquitto or its
 * clients are not installed.
 *
 * @module
 */

import { delay } from "@std/async/delay";
import { type Broker, MOSQUITTO_INSTALL, MOSQUITTO_PROGRAMS, startBroker } from "../broker.ts";
import { type Launcher, startLauncher } from "../launcher.ts";
import { residentBytes } from "../proc_stats.ts";
import { type Child, hasProgram, spawnProgram, type WorkDir } from "../processes.ts";
import { monotonicNanos } from "../../ffi/posix.ts";
import { summarizeLatencies, summarizeRuns } from "../stats.ts";
import { LED_LINE } from "../system.ts";
import { type BenchCase, type CaseContext, interleaved, type Row } from "./case.ts";

const SAMPLES = { quick: 20, full: 100 };
const FLOOD_MESSAGES = { quick: 2_000, full: 20_000 };
/** The latency rows: the figure's id and label, and what the progress shows while measuring. */
const LATENCY_ROWS = [
  {
    id: "mqtt.pub-to-sub",
    label: "`mosquitto_pub -l` to `mosquitto_sub` through the broker (C clients)",
    step: "MQTT: mosquitto_pub to mosquitto_sub",
  },
  {
    id: "mqtt.press-to-message",
    label: "press (FIFO write) to the `button/action` message at `mosquitto_sub`",
    step: "MQTT: press to message",
  },
  {
    id: "mqtt.set-to-led",
    label: "`TOGGLE` written to `mosquitto_pub -l` on `led/set` to the LED's line",
    step: "MQTT: set to LED",
  },
  {
    id: "mqtt.press-to-led",
    label: "press to the LED's line, with the bridge running",
    step: "MQTT: press to LED with the bridge",
  },
  {
    id: "mqtt.press-to-led-alone",
    label: "press to the LED's line, a launcher without `--mqtt`",
    step: "MQTT: press to LED without the bridge",
  },
] as const;
/** What the bridge logs, once, for the first payload that is not a command. */
const IGNORED = /Ignored a payload that is not ON, OFF or TOGGLE/;

/** `mosquitto_pub -l`: publishes each line written to its stdin, with QoS 1. */
class LinePublisher implements AsyncDisposable {
  readonly #child: Child;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #encoder = new TextEncoder();

  constructor(port: number, topic: string) {
    this.#child = spawnProgram(
      "mosquitto_pub",
      ["-h", "127.0.0.1", "-p", String(port), "-q", "1", "-l", "-t", topic],
      { stdin: true },
    );
    this.#writer = this.#child.stdin.getWriter();
  }

  /** Writes `lines` in one go; resolves with CLOCK_MONOTONIC just before. */
  async send(...lines: string[]): Promise<bigint> {
    const bytes = this.#encoder.encode(lines.map((line) => `${line}\n`).join(""));
    const now = monotonicNanos();
    await this.#writer.write(bytes);
    return now;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#writer.close().catch(() => {});
    await this.#child[Symbol.asyncDispose]();
  }
}

/** The LED's line for `state`. */
function ledShows(state: boolean): RegExp {
  return new RegExp(`LED Status: ${state ? "On" : "Off"}`);
}

/** What the LED of `launcher` shows now, by its last line. */
function ledState(launcher: Launcher): boolean {
  return launcher.child.lastMatch(LED_LINE)?.[1] === "On";
}

/** Microseconds from `act()`'s stamp until `child` prints a line matching `pattern`. */
async function latency(
  child: Child,
  pattern: RegExp,
  act: () => Promise<bigint>,
): Promise<number> {
  const since = child.lineCount;
  const started = await act();
  const { line } = await child.waitFor(pattern, { since, timeoutMs: 20_000 });
  return Number(line.arrivedNs - started) / 1000;
}

/** `count` samples of `once()`, 5-10 ms apart so that each finds the processes asleep. */
async function sampled(count: number, once: () => Promise<number>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    await delay(5 + Math.random() * 5);
    samples.push(await once());
  }
  return samples;
}

/** Publishes probes until `sub` prints one: `mosquitto_sub` says nothing once it subscribed. */
async function untilSubscribed(sub: Child, publisher: LinePublisher): Promise<void> {
  const giveUp = performance.now() + 10_000;
  for (let probe = 1;; probe++) {
    const since = sub.lineCount;
    await publisher.send(`probe-${probe}`);
    try {
      await sub.waitFor(new RegExp(` probe-${probe}$`), { since, timeoutMs: 200 });
      return;
    } catch (error) {
      if (performance.now() > giveUp) {
        throw new Error(`mosquitto_sub heard no probe in 10 s: ${(error as Error).message}`);
      }
    }
  }
}

/**
 * `--mqtt` flags with a prefix and a client id of their own: the default client id is one per
 * machine, and the broker drops a client when another connects with its id.
 */
function bridgeArgs(url: string, prefix: string): string[] {
  return ["--mqtt", url, "--mqtt-prefix", prefix, "--mqtt-client-id", prefix.replace("/", "-")];
}

/** What one flood found. */
interface Flood {
  messagesPerSecond: number;
  rssBefore: number;
  rssPeak: number;
  rssAfter: number;
}

/**
 * A fresh bridge under `size` `TOGGLE`s, then `ON` and one word that is not a command: the
 * bridge logs the first such payload, and handles a topic's messages in order, so that line
 * says it has handled them all.
 */
async function flood(work: WorkDir, broker: Broker, name: string, size: number): Promise<Flood> {
  const prefix = `bench/${crypto.randomUUID().slice(0, 8)}`;
  await using launcher = await startLauncher(work, name, {
    args: bridgeArgs(broker.url, prefix),
    ready: [/Connected to mqtt/],
  });
  const pid = await launcher.childPid("mqtt");
  await using set = new LinePublisher(broker.port, `${prefix}/led/set`);
  await delay(200);
  const rssBefore = residentBytes(pid);
  let rssPeak = rssBefore;
  const sampler = setInterval(() => {
    try {
      rssPeak = Math.max(rssPeak, residentBytes(pid));
    } catch {
      // the bridge ended: waiting for its line below says so
    }
  }, 10);
  try {
    const since = launcher.child.lineCount;
    const started = await set.send(...new Array<string>(size).fill("TOGGLE"), "ON", "flood-end");
    const { line } = await launcher.child.waitFor(IGNORED, { since, timeoutMs: 120_000 });
    const seconds = Number(line.arrivedNs - started) / 1e9;
    // The commands go on to the button process; the last one leaves the LED on.
    for (const giveUp = performance.now() + 20_000; !ledState(launcher);) {
      if (performance.now() > giveUp) {
        throw new Error(`The LED did not end on after the flood:\n${launcher.child.transcript}`);
      }
      await delay(10);
    }
    const rssAfter = residentBytes(pid);
    return {
      messagesPerSecond: (size + 2) / seconds,
      rssBefore,
      rssPeak: Math.max(rssPeak, rssAfter),
      rssAfter,
    };
  } finally {
    clearInterval(sampler);
  }
}

async function measure(context: CaseContext): Promise<void> {
  const { config, work, figures, progress } = context;
  const samples = config.quick ? SAMPLES.quick : SAMPLES.full;
  await using broker = await startBroker(work.path);
  const prefix = `bench/${crypto.randomUUID().slice(0, 8)}`;
  await using bridged = await startLauncher(work, "mqtt-bridged", {
    args: bridgeArgs(broker.url, prefix),
    ready: [/Connected to mqtt/],
  });
  await using alone = await startLauncher(work, "mqtt-alone");
  const host = ["-h", "127.0.0.1", "-p", String(broker.port)];
  await using sub = spawnProgram("mosquitto_sub", [
    ...host,
    "-v",
    "-t",
    `${prefix}/rtt`,
    "-t",
    `${prefix}/button/action`,
  ]);
  await using rtt = new LinePublisher(broker.port, `${prefix}/rtt`);
  await using set = new LinePublisher(broker.port, `${prefix}/led/set`);
  await untilSubscribed(sub, rtt);

  // Each press and TOGGLE flips the LED: waiting for the state it must show next cannot be
  // satisfied by a line left over from the sample before.
  let bridgedLed = ledState(bridged);
  let aloneLed = ledState(alone);
  let counter = 0;
  /** A press on the bridged launcher: us to the message at `mosquitto_sub` and to the LED. */
  const pressBridged = async (): Promise<{ message: number; led: number }> => {
    const subSince = sub.lineCount;
    const ledSince = bridged.child.lineCount;
    const started = await bridged.press();
    bridgedLed = !bridgedLed;
    const [message, led] = await Promise.all([
      sub.waitFor(/\/button\/action press$/, { since: subSince, timeoutMs: 20_000 }),
      bridged.child.waitFor(ledShows(bridgedLed), { since: ledSince, timeoutMs: 20_000 }),
    ]);
    return {
      message: Number(message.line.arrivedNs - started) / 1000,
      led: Number(led.line.arrivedNs - started) / 1000,
    };
  };
  const once: Record<typeof LATENCY_ROWS[number]["id"], () => Promise<number>> = {
    "mqtt.pub-to-sub": () => {
      const line = `rtt-${++counter}`;
      return latency(sub, new RegExp(` ${line}$`), () => rtt.send(line));
    },
    "mqtt.press-to-message": async () => (await pressBridged()).message,
    "mqtt.set-to-led": () => {
      bridgedLed = !bridgedLed;
      return latency(bridged.child, ledShows(bridgedLed), () => set.send("TOGGLE"));
    },
    "mqtt.press-to-led": async () => (await pressBridged()).led,
    "mqtt.press-to-led-alone": () => {
      aloneLed = !aloneLed;
      return latency(alone.child, ledShows(aloneLed), () => alone.press());
    },
  };
  const rows: Row<number[]>[] = LATENCY_ROWS.map((row) => ({
    id: row.id,
    label: row.step,
    measure: () => sampled(samples, once[row.id]),
  }));
  const latencies = await interleaved(context, rows);
  for (const row of LATENCY_ROWS) {
    figures.add(
      { id: row.id, section: "mqtt", label: row.label, unit: "us" },
      summarizeLatencies(latencies.get(row.id) ?? [], "mqtt.latency"),
    );
  }

  const size = config.quick ? FLOOD_MESSAGES.quick : FLOOD_MESSAGES.full;
  const floods: Flood[] = [];
  for (let run = 1; run <= config.runs; run++) {
    progress.step(`MQTT: a flood of ${size} set messages, run ${run}/${config.runs}`);
    floods.push(await flood(work, broker, `mqtt-flood-${run}`, size));
  }
  const what = `a fresh bridge, ${size + 2} \`set\` messages from \`mosquitto_pub -l\``;
  const flooded = [
    ["rate", "msg/s", `${what}: handled per second`, (f: Flood) => f.messagesPerSecond],
    ["rss-before", "bytes", `${what}: its RSS before`, (f: Flood) => f.rssBefore],
    [
      "rss-peak",
      "bytes",
      `${what}: its highest RSS (sampled every 10 ms)`,
      (f: Flood) => f.rssPeak,
    ],
    ["rss-after", "bytes", `${what}: its RSS after`, (f: Flood) => f.rssAfter],
  ] as const;
  for (const [id, unit, label, value] of flooded) {
    figures.add(
      { id: `mqtt.flood.${id}`, section: "mqtt-flood", label, unit },
      summarizeRuns(floods.map(value), "mqtt.flood"),
    );
  }
}

/** The MQTT case. */
export const mqtt: BenchCase = {
  id: "mqtt",
  unavailable(): string | undefined {
    const missing = MOSQUITTO_PROGRAMS.filter((program) => !hasProgram(program));
    return missing.length === 0
      ? undefined
      : `needs ${missing.join(", ")} on PATH (${MOSQUITTO_INSTALL})`;
  },
  steps: (config) => (LATENCY_ROWS.length + 1) * config.runs,
  run: measure,
};
