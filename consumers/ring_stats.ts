/**
 * The ring demo: creates a ring in anonymous shared memory, starts `producers/sensor.ts` to
 * fill it, and prints live throughput and latency once a second. `deno task demo:ring`.
 *
 * @module
 */

import { defineCommand, parseCommandLine } from "../app/flags.ts";
import { monotonicNanos } from "../ffi/posix.ts";
import {
  createMemfdRegion,
  initRing,
  openRingConsumer,
  type RingConsumer,
  ringRegionSize,
} from "../mod.ts";
import { decodeSample, MAX_RATE, SAMPLE_SIZE } from "../producers/sensor.ts";

/** setTimeout's longest delay, 2^31 - 1 ms, in whole seconds. */
const MAX_SECONDS = 2_147_483;

/** The ring demo's command line. */
export const RING_DEMO_COMMAND = defineCommand({
  name: "ring demo",
  synopsis: ["deno task demo:ring [options]"],
  description: "Streams sensor samples from a producer process through a shared-memory ring " +
    "and prints samples per second, latency percentiles and lost samples once a second.",
  flags: {
    rate: {
      type: "number",
      arg: "N",
      min: 0,
      max: MAX_RATE,
      default: 10_000,
      help: "samples per second; 0 = as fast as possible",
    },
    seconds: {
      type: "number",
      arg: "N",
      min: 0.001,
      max: MAX_SECONDS,
      defaultText: "run until Ctrl+C",
      help: "stop after N seconds",
    },
  },
});

/** One second's figures. */
export interface Report {
  /** Samples received in the interval. */
  samples: number;
  /** Samples whose sequence numbers were skipped. */
  lost: number;
  /** Latency percentiles in microseconds. */
  p50: number;
  /** 99th percentile latency, microseconds. */
  p99: number;
  /** Highest latency, microseconds. */
  max: number;
  /** The last sample's temperature, for show. */
  temperature: number;
}

function percentile(sorted: Float64Array, fraction: number): number {
  return sorted.length === 0
    ? 0
    : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))];
}

/** Reads samples until the producer closes, calling `report` once per `intervalMs`. */
export async function collectStats(
  consumer: RingConsumer,
  report: (report: Report) => void,
  options: { intervalMs?: number; signal?: AbortSignal } = {},
): Promise<void> {
  const intervalMs = options.intervalMs ?? 1000;
  let latencies: number[] = [];
  let expected = 0;
  let lost = 0;
  let temperature = 0;
  const flush = (): void => {
    const sorted = Float64Array.from(latencies).sort();
    report({
      samples: latencies.length,
      lost,
      p50: percentile(sorted, 0.5),
      p99: percentile(sorted, 0.99),
      max: sorted.length === 0 ? 0 : sorted[sorted.length - 1],
      temperature,
    });
    latencies = [];
    lost = 0;
  };
  const timer = setInterval(flush, intervalMs);
  try {
    for (;;) {
      const lease = consumer.tryRead() ?? await consumer.read({ signal: options.signal });
      if (lease === null) break;
      if (lease.bytes.length === SAMPLE_SIZE) {
        const sample = decodeSample(lease.bytes);
        latencies.push(Number(monotonicNanos() - sample.sentAt) / 1000);
        if (sample.sequence > expected) lost += sample.sequence - expected;
        expected = sample.sequence + 1;
        temperature = sample.temperature;
      }
      lease.release();
    }
  } catch (error) {
    if (!options.signal?.aborted) throw error;
  } finally {
    clearInterval(timer);
    flush();
  }
}

async function main(rate: number, seconds: number | undefined): Promise<void> {
  const stop = new AbortController();
  Deno.addSignalListener("SIGINT", () => stop.abort());
  if (seconds !== undefined) setTimeout(() => stop.abort(), seconds * 1000);
  using region = createMemfdRegion({ size: ringRegionSize(1 << 20), label: "mmap-ipc-ring-demo" });
  initRing(region);
  using consumer = openRingConsumer(region);
  const root = new URL("../", import.meta.url).pathname;
  const producer = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      "--config",
      `${root}deno.json`,
      "--allow-ffi",
      `${root}producers/sensor.ts`,
      "--memfd",
      region.name,
      "--rate",
      String(rate),
      "--parent-pid",
      String(Deno.pid),
    ],
    stdin: "null",
  }).spawn();
  stop.signal.addEventListener("abort", () => {
    try {
      producer.kill("SIGTERM");
    } catch {
      // already gone
    }
  });
  // The ring notices a producer that dies once it has attached; one that dies before, only
  // its parent can see.
  const ended = new AbortController();
  const status = producer.status.finally(() => ended.abort());
  console.log(`Streaming 32-byte samples through a 1 MiB ring (${region.name}); Ctrl+C stops.`);
  await collectStats(consumer, (r) => {
    console.log(
      `${String(r.samples).padStart(8)} samples/s  latency p50 ${
        r.p50.toFixed(1).padStart(7)
      } us  p99 ${r.p99.toFixed(1).padStart(7)} us  max ${
        r.max.toFixed(1).padStart(8)
      } us  lost ${r.lost}  temperature ${r.temperature.toFixed(2)} C`,
    );
  }, { signal: AbortSignal.any([stop.signal, ended.signal]) });
  const { success, code, signal } = await status;
  if (!success && !(stop.signal.aborted && signal === "SIGTERM")) {
    const how = signal === null ? `exited with code ${code}` : `was killed by ${signal}`;
    throw new Error(`The sensor (producers/sensor.ts, pid ${producer.pid}) ${how}`);
  }
}

if (import.meta.main) {
  const flags = parseCommandLine(RING_DEMO_COMMAND);
  try {
    await main(flags.rate, flags.seconds);
    Deno.exit(0);
  } catch (error) {
    console.error(`ring demo: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
