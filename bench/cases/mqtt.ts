/**
 * Bench case: the MQTT bridge, through the real launcher, a real mosquitto on a loopback port
 * and mosquitto's own C clients at the far end.
 *
 * Rows (each a list of samples per run, in us; runs interleave the rows):
 * - `mqtt.pub-to-sub`: a line written to `mosquitto_pub -l` until `mosquitto_sub` prints it:
 *   the broker hop between two C clients, the floor for the rows below.
 * - `mqtt.press-to-message`: a press written to the button's FIFO until `mosquitto_sub` prints
 *   it from `PREFIX/button/action`.
 * - `mqtt.set-to-led`: `TOGGLE` written to `mosquitto_pub -l` on `PREFIX/led/set` until the
 *   LED's log line.
 * - `mqtt.press-to-led`: press to LED with the bridge running, beside `mqtt.press-to-led-alone`
 *   from a launcher without `--mqtt` in the same run: the local path must not slow down.
 *
 * Plus the bridge's memory before and after a flood of `set` messages.
 *
 * Run alone: `deno run -A bench/cases/mqtt.ts [--runs N] [--samples N] [--flood N]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { readFileText } from "../../ffi/posix.ts";
import type { ChildProcess } from "../../tests/helpers/child_process.ts";
import { writeAndLeave } from "../../tests/helpers/fifo.ts";
import { ROOT } from "../../tests/helpers/paths.ts";
import { spawnDeno, spawnProgram } from "../../tests/helpers/spawn.ts";
import { delay } from "../../tests/helpers/waiting.ts";
import { hasProgram, startBroker } from "../../tests/mqtt_helpers.ts";

/** Options for {@link measureMqtt}. */
export interface MqttBenchOptions {
  /** Runs of every row, interleaved. Default 3. */
  runs?: number;
  /** Samples per row and run. Default 100. */
  samples?: number;
  /** `set` messages in the flood. Default 20,000. */
  flood?: number;
  /** Called before each measurement, for progress output. */
  progress?: (step: string) => void;
}

/** One row: its id, what it measures, and its samples (us) per run. */
export interface MqttBenchRow {
  /** Stable id, such as `mqtt.press-to-message`. */
  id: string;
  /** What the row measures. */
  label: string;
  /** Samples in us, one list per run. */
  runs: number[][];
}

/** What {@link measureMqtt} found. */
export interface MqttBenchResult {
  /** The latency rows. */
  rows: MqttBenchRow[];
  /** The bridge's memory around a flood of `set` messages. */
  flood: {
    /** Messages published. */
    messages: number;
    /** Resident memory before, KiB. */
    rssBeforeKiB: number;
    /** Highest resident memory seen while the flood was handled, KiB. */
    rssPeakKiB: number;
    /** Resident memory once it was handled, KiB. */
    rssAfterKiB: number;
    /** From the first message written until the LED showed the last command, ms. */
    drainedMs: number;
  };
}

const LAUNCH_PERMISSIONS = ["--allow-ffi", "--allow-run", "--allow-read", "--allow-env"];
const LED_LINE = /LED Status: (On|Off)/;

/** A process that publishes each line written to its stdin (`mosquitto_pub -l`). */
class LinePublisher {
  readonly process: ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #encoder = new TextEncoder();

  constructor(port: number, topic: string) {
    this.process = spawnProgram(
      "mosquitto_pub",
      ["-h", "127.0.0.1", "-p", String(port), "-q", "1", "-l", "-t", topic],
      { stdin: "piped" },
    );
    this.#writer = this.process.process.stdin.getWriter();
  }

  async send(line: string): Promise<void> {
    await this.#writer.write(this.#encoder.encode(`${line}\n`));
  }

  async close(): Promise<void> {
    await this.#writer.close().catch(() => {});
    await this.process[Symbol.asyncDispose]();
  }
}

function memoryKiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  const status = readFileText(`/proc/${pid}/status`) ?? "";
  return Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? NaN);
}

async function startLauncher(dir: string, name: string, args: string[]): Promise<ChildProcess> {
  const launcher = spawnDeno(
    `${ROOT}launch.ts`,
    ["--fifo", `${dir}/${name}.fifo`, ...args],
    { permissions: LAUNCH_PERMISSIONS, cwd: dir },
  );
  await launcher.waitFor(/Button ready/);
  await launcher.waitFor(LED_LINE);
  return launcher;
}

async function stop(child: ChildProcess): Promise<void> {
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await child.status();
  clearTimeout(timer);
}

/** Time from `act()` until `child` prints a line matching `pattern`, in us. */
async function timeUntil(
  child: ChildProcess,
  pattern: RegExp,
  act: () => Promise<void>,
): Promise<number> {
  const since = child.lines.length;
  const started = performance.now();
  await act();
  await child.waitFor(pattern, { since, timeoutMs: 20_000 });
  return (performance.now() - started) * 1000;
}

/** Runs the MQTT bench; see the module description. Needs mosquitto and its clients. */
export async function measureMqtt(options: MqttBenchOptions = {}): Promise<MqttBenchResult> {
  for (const program of ["mosquitto", "mosquitto_pub", "mosquitto_sub"]) {
    if (!hasProgram(program)) {
      throw new Error(`The MQTT bench needs ${program} (apt install mosquitto mosquitto-clients)`);
    }
  }
  const runs = options.runs ?? 3;
  const samples = options.samples ?? 100;
  const floodSize = options.flood ?? 20_000;
  const progress = options.progress ?? (() => {});
  const dir = await Deno.makeTempDir({ prefix: "mmap-ipc-bench-mqtt-" });
  const children: ChildProcess[] = [];
  const publishers: LinePublisher[] = [];
  try {
    await using broker = await startBroker(dir);
    const prefix = `bench/${crypto.randomUUID().slice(0, 8)}`;
    const bridged = await startLauncher(dir, "bridged", [
      "--mqtt",
      broker.url,
      "--mqtt-prefix",
      prefix,
    ]);
    children.push(bridged);
    await bridged.waitFor(/Connected to mqtt/);
    const alone = await startLauncher(dir, "alone", []);
    children.push(alone);
    const bridgePid = Number((await bridged.waitFor(/Started mqtt \(pid (\d+)\)/)).match[1]);

    const sub = spawnProgram("mosquitto_sub", [
      "-h",
      "127.0.0.1",
      "-p",
      String(broker.port),
      "-v",
      "-t",
      `${prefix}/rtt`,
      "-t",
      `${prefix}/button/action`,
    ]);
    children.push(sub);
    const rtt = new LinePublisher(broker.port, `${prefix}/rtt`);
    const set = new LinePublisher(broker.port, `${prefix}/led/set`);
    publishers.push(rtt, set);
    // mosquitto_sub says nothing when it has subscribed: probe until it hears us.
    for (let heard = false; !heard;) {
      const since = sub.lines.length;
      await rtt.send("probe");
      heard = await sub.waitFor(/ probe$/, { since, timeoutMs: 500 }).then(() => true, () => false);
    }

    let counter = 0;
    const rows: { id: string; label: string; once: () => Promise<number> }[] = [
      {
        id: "mqtt.pub-to-sub",
        label: "mosquitto_pub to mosquitto_sub through the broker (C clients)",
        once: () => {
          const line = `rtt-${++counter}`;
          return timeUntil(sub, new RegExp(` ${line}$`), () => rtt.send(line));
        },
      },
      {
        id: "mqtt.press-to-message",
        label: "press (FIFO write) to the button/action message at mosquitto_sub",
        once: () =>
          timeUntil(
            sub,
            /\/button\/action press$/,
            () => writeAndLeave(`${dir}/bridged.fifo`, "0\n"),
          ),
      },
      {
        id: "mqtt.set-to-led",
        label: "set TOGGLE (mosquitto_pub) to the LED's log line",
        once: () => timeUntil(bridged, LED_LINE, () => set.send("TOGGLE")),
      },
      {
        id: "mqtt.press-to-led",
        label: "press to LED with the bridge running",
        once: () => timeUntil(bridged, LED_LINE, () => writeAndLeave(`${dir}/bridged.fifo`, "0\n")),
      },
      {
        id: "mqtt.press-to-led-alone",
        label: "press to LED without --mqtt (same run)",
        once: () => timeUntil(alone, LED_LINE, () => writeAndLeave(`${dir}/alone.fifo`, "0\n")),
      },
    ];
    const results = new Map<string, number[][]>(rows.map((row) => [row.id, []]));
    for (let run = 1; run <= runs; run++) {
      for (const row of rows) {
        progress(`${row.label}, run ${run}/${runs}`);
        const latencies: number[] = [];
        for (let i = 0; i < samples; i++) {
          await delay(5 + Math.random() * 5);
          latencies.push(await row.once());
        }
        results.get(row.id)?.push(latencies);
      }
    }

    progress(`a flood of ${floodSize} set messages`);
    await delay(200);
    const rssBeforeKiB = memoryKiB(bridgePid, "VmRSS");
    let rssPeakKiB = rssBeforeKiB;
    const sampler = setInterval(() => {
      rssPeakKiB = Math.max(rssPeakKiB, memoryKiB(bridgePid, "VmRSS"));
    }, 10);
    const started = performance.now();
    let drainedMs = 0;
    const lastLed = (): string | undefined => {
      const lines = bridged.matching(LED_LINE);
      return lines[lines.length - 1];
    };
    try {
      for (let i = 0; i < floodSize; i++) await set.send("TOGGLE");
      // From whatever state the flood leaves, OFF then ON ends on a state nobody else sets.
      await set.send("OFF");
      await set.send("ON");
      // Drained once the LED shows On and stays so: nothing changes it after the last ON.
      let stableSince = performance.now();
      let seen = bridged.lines.length;
      while (!(lastLed()?.includes("On") && performance.now() - stableSince > 500)) {
        await delay(20);
        if (bridged.lines.length !== seen) {
          seen = bridged.lines.length;
          stableSince = performance.now();
        }
        if (performance.now() - started > 120_000) {
          throw new Error("The flood did not drain in 2 min");
        }
      }
      drainedMs = stableSince - started;
    } finally {
      clearInterval(sampler);
    }
    return {
      rows: rows.map((row) => ({ id: row.id, label: row.label, runs: results.get(row.id) ?? [] })),
      flood: {
        messages: floodSize + 2,
        rssBeforeKiB,
        rssPeakKiB,
        rssAfterKiB: memoryKiB(bridgePid, "VmRSS"),
        drainedMs,
      },
    };
  } finally {
    for (const publisher of publishers) await publisher.close();
    for (const child of children.reverse()) await stop(child);
    await Deno.remove(dir, { recursive: true });
  }
}

function percentile(values: number[], fraction: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))];
}

/** The result as a Markdown table: per row, the median over runs of each run's p50 and p99. */
export function mqttTable(result: MqttBenchResult): string {
  const median = (values: number[]): number => percentile(values, 0.5);
  const ms = (us: number): string => (us / 1000).toFixed(2);
  const lines = ["| MQTT | p50 ms | p99 ms | runs x samples |", "|---|---:|---:|---:|"];
  for (const row of result.rows) {
    const p50 = median(row.runs.map((run) => percentile(run, 0.5)));
    const p99 = median(row.runs.map((run) => percentile(run, 0.99)));
    lines.push(
      `| ${row.label} | ${ms(p50)} | ${ms(p99)} | ${row.runs.length} x ${
        row.runs[0]?.length ?? 0
      } |`,
    );
  }
  const { flood } = result;
  const mib = (kib: number): string => (kib / 1024).toFixed(1);
  lines.push(
    "",
    `Flood of ${flood.messages} set messages: the LED showed the last one after ${
      (flood.drainedMs / 1000).toFixed(1)
    } s; bridge RSS ${mib(flood.rssBeforeKiB)} MiB before, ${mib(flood.rssPeakKiB)} MiB at most, ${
      mib(flood.rssAfterKiB)
    } MiB after.`,
  );
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { runs: { type: "string" }, samples: { type: "string" }, flood: { type: "string" } },
  });
  const result = await measureMqtt({
    runs: values.runs === undefined ? undefined : Number(values.runs),
    samples: values.samples === undefined ? undefined : Number(values.samples),
    flood: values.flood === undefined ? undefined : Number(values.flood),
    progress: (step) => console.error(`bench mqtt: ${step}`),
  });
  console.log(mqttTable(result));
}
