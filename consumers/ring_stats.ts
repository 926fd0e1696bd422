/**
 * The ring demo: creates a ring in anonymous shared memory, starts `producers/sensor.ts` to
 * fill it, and prints live throughput and latency once a second. `deno task demo:ring`. It stops
 * (exit 0, its producer stopped) when nobody reads its output any more: `| head -3`.
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

/** One interval's figures. */
export interface Report {
  /** Samples received in the interval. */
  samples: number;
  /** How long the interval was, in seconds: about one, and the last one shorter. */
  seconds: number;
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

/**
 * How many of an interval's latencies are kept for its percentiles: a uniform sample of them
 * (reservoir sampling), so that a second of millions of samples (`--rate 0`) costs no more
 * memory, nor sorting, than one of a few thousand.
 */
const KEPT_LATENCIES = 8192;

function percentile(sorted: Float64Array, fraction: number): number {
  return sorted.length === 0
    ? 0
    : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))];
}

/**
 * How often, at most, a consumer that always finds a sample waiting lets the event loop run:
 * otherwise its timers (the report's, `--seconds`) and its signal handlers (Ctrl+C) would wait
 * until the ring happened to be empty.
 */
const YIELD_MS = 20;

/**
 * Turns of the event loop (timers and signal handlers run before each resolves) through a
 * message to itself: a few microseconds, where `setTimeout(0)` waits a millisecond or two.
 */
class EventLoopTurns implements Disposable {
  readonly #channel = new MessageChannel();
  #resolve: (() => void) | undefined;

  constructor() {
    this.#channel.port2.onmessage = () => this.#resolve?.();
  }

  /** Resolves after one turn of the event loop. */
  next(): Promise<void> {
    return new Promise((resolve) => {
      this.#resolve = resolve;
      this.#channel.port1.postMessage(null);
    });
  }

  /** Closes the channel, which would otherwise keep the process alive. */
  [Symbol.dispose](): void {
    this.#channel.port1.close();
    this.#channel.port2.close();
  }
}

/**
 * Reads samples until the producer closes, calling `report` once per `intervalMs`, and once at
 * the end for the samples since the last report, if any.
 */
export async function collectStats(
  consumer: RingConsumer,
  report: (report: Report) => void,
  options: { intervalMs?: number; signal?: AbortSignal } = {},
): Promise<void> {
  const intervalMs = options.intervalMs ?? 1000;
  const kept = new Float64Array(KEPT_LATENCIES);
  let samples = 0;
  let max = 0;
  let expected = 0;
  let lost = 0;
  let temperature = 0;
  let intervalStart = performance.now();
  const flush = (): void => {
    const now = performance.now();
    const sorted = kept.slice(0, Math.min(samples, KEPT_LATENCIES)).sort();
    report({
      samples,
      seconds: (now - intervalStart) / 1000,
      lost,
      p50: percentile(sorted, 0.5),
      p99: percentile(sorted, 0.99),
      max,
      temperature,
    });
    samples = 0;
    max = 0;
    lost = 0;
    intervalStart = now;
  };
  const timer = setInterval(flush, intervalMs);
  using turns = new EventLoopTurns();
  let yielded = performance.now();
  let taken = 0;
  try {
    for (;;) {
      const lease = consumer.tryRead() ?? await consumer.read({ signal: options.signal });
      if (lease === null) break;
      if (lease.bytes.length === SAMPLE_SIZE) {
        const sample = decodeSample(lease.bytes);
        const latency = Number(monotonicNanos() - sample.sentAt) / 1000;
        const slot = samples < KEPT_LATENCIES ? samples : Math.floor(Math.random() * (samples + 1));
        if (slot < KEPT_LATENCIES) kept[slot] = latency;
        if (latency > max) max = latency;
        samples++;
        if (sample.sequence > expected) lost += sample.sequence - expected;
        expected = sample.sequence + 1;
        temperature = sample.temperature;
      }
      lease.release();
      // The clock every so many samples: reading it costs more than taking one.
      if ((++taken & 1023) === 0 && performance.now() - yielded >= YIELD_MS) {
        await turns.next();
        // A ring never empty never reaches read()'s own look at the signal.
        if (options.signal?.aborted) break;
        yielded = performance.now();
      }
    }
  } catch (error) {
    if (!options.signal?.aborted) throw error;
  } finally {
    clearInterval(timer);
    if (samples > 0 || lost > 0) flush();
  }
}

const encoder = new TextEncoder();

/**
 * Writes `line` to standard output; false once nobody reads it (a closed pipe: `| head -1`).
 * console.log drops that error (EPIPE), and the demo went on streaming and printing for nobody.
 */
function printLine(line: string): boolean {
  let bytes = encoder.encode(`${line}\n`);
  try {
    while (bytes.length > 0) bytes = bytes.subarray(Deno.stdout.writeSync(bytes));
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.BrokenPipe) return false;
    throw error;
  }
}

async function main(rate: number, seconds: number | undefined): Promise<void> {
  const stop = new AbortController();
  // Output nobody reads stops the demo (exit 0, as `| head` expects); output that cannot be
  // written otherwise (ENOSPC on /dev/full) stops it too, and fails it.
  let outputGone = false;
  let outputFailed: Error | undefined;
  const print = (line: string): void => {
    if (outputGone) return;
    try {
      if (printLine(line)) return;
    } catch (error) {
      outputFailed = error as Error;
    }
    outputGone = true;
    stop.abort();
  };
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
  print(`Streaming 32-byte samples through a 1 MiB ring (${region.name}); Ctrl+C stops.`);
  await collectStats(consumer, (r) => {
    print(
      `${String(Math.round(r.samples / r.seconds)).padStart(8)} samples/s  latency p50 ${
        r.p50.toFixed(1).padStart(7)
      } us  p99 ${r.p99.toFixed(1).padStart(7)} us  max ${
        r.max.toFixed(1).padStart(8)
      } us  lost ${r.lost}  temperature ${r.temperature.toFixed(2)} C`,
    );
  }, { signal: AbortSignal.any([stop.signal, ended.signal]) });
  const { success, code, signal } = await status;
  if (outputFailed !== undefined) {
    throw new Error(`Cannot write to standard output: ${outputFailed.message}`);
  }
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
