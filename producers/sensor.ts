/**
 * The ring demo's producer: streams synthetic sensor samples into a ring at a chosen rate.
 * Each sample is 32 bytes: sequence number, send time (CLOCK_MONOTONIC), temperature, humidity.
 * `deno task demo:ring` starts it beside `consumers/ring_stats.ts`.
 *
 * @module
 */

import { delay } from "@std/async/delay";
import { exitWhenFlushed, PARENT_PID_FLAG, shutdownSignal } from "../app/cli.ts";
import { defineCommand, parseCommandLine } from "../app/flags.ts";
import { monotonicNanos } from "../ffi/posix.ts";
import { openMemfdRegion, openRingProducer, type RingProducer } from "../mod.ts";
import { failureExitStatus } from "../app/exit_status.ts";

/** The most samples per second `--rate` accepts. */
export const MAX_RATE = 10_000_000;

/** The sensor's command line. */
export const SENSOR_COMMAND = defineCommand({
  name: "sensor",
  synopsis: ["deno run --allow-ffi producers/sensor.ts --memfd /proc/PID/fd/N [options]"],
  description: "Streams 32-byte sensor samples into the ring in the given memfd.",
  flags: {
    memfd: {
      type: "string",
      arg: "PATH",
      required: true,
      help: "the ring's memfd, as the demo's consumer passes it",
    },
    rate: {
      type: "number",
      arg: "N",
      min: 0,
      max: MAX_RATE,
      default: 10_000,
      help: "samples per second; 0 = as fast as the ring takes them",
    },
    ...PARENT_PID_FLAG,
  },
});

/** Bytes in one sample. */
export const SAMPLE_SIZE = 32;

/** One decoded sample. */
export interface Sample {
  /** Counts up from 0; a gap means a lost sample. */
  sequence: number;
  /** When it was sent, CLOCK_MONOTONIC nanoseconds. */
  sentAt: bigint;
  /** Degrees Celsius. */
  temperature: number;
  /** Percent. */
  humidity: number;
}

/** Writes sample number `sequence` into `bytes` (32 bytes). */
export function encodeSample(bytes: Uint8Array, sequence: number): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, SAMPLE_SIZE);
  view.setFloat64(0, sequence, true);
  view.setBigInt64(8, monotonicNanos(), true);
  view.setFloat64(16, 21 + 3 * Math.sin(sequence / 1000), true);
  view.setFloat64(24, 45 + 10 * Math.cos(sequence / 1700), true);
}

/** Reads a sample. */
export function decodeSample(bytes: Uint8Array): Sample {
  const view = new DataView(bytes.buffer, bytes.byteOffset, SAMPLE_SIZE);
  return {
    sequence: view.getFloat64(0, true),
    sentAt: view.getBigInt64(8, true),
    temperature: view.getFloat64(16, true),
    humidity: view.getFloat64(24, true),
  };
}

/**
 * Sends samples at `rate` per second (0: as fast as possible), in place (zero-copy), until
 * `signal` aborts; closes the producer at the end so the consumer's iteration ends.
 */
export async function streamSamples(
  producer: RingProducer,
  rate: number,
  signal: AbortSignal,
): Promise<number> {
  let sequence = 0;
  const started = performance.now();
  while (!signal.aborted) {
    if (rate > 0) {
      const due = started + (sequence / rate) * 1000;
      const wait = due - performance.now();
      if (wait > 1) await delay(wait);
    }
    try {
      const reservation = producer.tryReserve(SAMPLE_SIZE) ??
        await producer.reserve(SAMPLE_SIZE, { signal });
      encodeSample(reservation.bytes, sequence++);
      reservation.commit();
    } catch (error) {
      if (signal.aborted) break;
      throw error;
    }
  }
  producer.close();
  return sequence;
}

if (import.meta.main) {
  const flags = parseCommandLine(SENSOR_COMMAND);
  try {
    const signal = shutdownSignal(flags.parentPid);
    using region = openMemfdRegion(flags.memfd);
    using producer = openRingProducer(region);
    await streamSamples(producer, flags.rate, signal);
  } catch (error) {
    console.error(`sensor: ${(error as Error).message}`);
    Deno.exit(failureExitStatus(error));
  }
  await exitWhenFlushed();
}
