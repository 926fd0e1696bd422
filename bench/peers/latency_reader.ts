/**
 * The reading side of the state-change latency benchmark. It waits for each change, reads
 * CLOCK_MONOTONIC, and subtracts the writer's stamp; at the end it prints the latencies (ns)
 * as one JSON array.
 *
 * Usage: latency_reader.ts MODE TARGET SAMPLES
 *   cell   TARGET is a memfd path: sleep on the state cell (this library), event loop free
 *   cell-sync  the same with waitForChangeSync(): the thread blocks in the futex
 *   poll   TARGET is a memfd path: read the state every 1 ms (the original's approach)
 *   pipe   read 8-byte stamps from stdin (a pipe from the parent)
 *   socket TARGET is a Unix socket path: read 8-byte stamps from it
 *
 * @module
 */

import { monotonicNanos } from "../../ffi/posix.ts";
import { openMemfdRegion, openStateCell } from "../../mod.ts";

/** Where the writer stamps the time in the region, and where the reader counts what it saw. */
export const STAMP_OFFSET = 192;
export const SEEN_OFFSET = 208;

function stampOf(bytes: Uint8Array, offset = 0): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset + offset, 8).getBigInt64(0, true);
}

async function fromCell(
  path: string,
  samples: number,
  how: "cell" | "cell-sync" | "poll",
): Promise<number[]> {
  using region = openMemfdRegion(path);
  using cell = openStateCell(region);
  const latencies: number[] = [];
  let last = cell.read();
  console.log("ready");
  while (latencies.length < samples) {
    let value: number;
    if (how === "poll") {
      while ((value = cell.read()) === last) await new Promise((resolve) => setTimeout(resolve, 1));
    } else if (how === "cell-sync") {
      value = cell.waitForChangeSync({ from: last, timeout: 60_000 });
    } else {
      value = await cell.waitForChange({ from: last });
    }
    const now = monotonicNanos();
    latencies.push(Number(now - stampOf(region.read(STAMP_OFFSET, 8))));
    last = value;
    region.storeInt32(SEEN_OFFSET, latencies.length);
  }
  return latencies;
}

async function fromStream(stream: ReadableStream<Uint8Array>, samples: number): Promise<number[]> {
  const latencies: number[] = [];
  let pending = new Uint8Array(0);
  for await (const chunk of stream) {
    const now = monotonicNanos();
    const joined = new Uint8Array(pending.length + chunk.length);
    joined.set(pending);
    joined.set(chunk, pending.length);
    let offset = 0;
    for (; offset + 8 <= joined.length; offset += 8) {
      latencies.push(Number(now - stampOf(joined, offset)));
    }
    pending = joined.slice(offset);
    if (latencies.length >= samples) break;
  }
  return latencies;
}

if (import.meta.main) {
  const [mode, target, count] = Deno.args;
  const samples = Number(count);
  let latencies: number[];
  if (mode === "cell" || mode === "cell-sync" || mode === "poll") {
    latencies = await fromCell(target, samples, mode);
  } else if (mode === "pipe") {
    console.log("ready");
    latencies = await fromStream(Deno.stdin.readable, samples);
  } else if (mode === "socket") {
    const connection = await Deno.connect({ transport: "unix", path: target });
    console.log("ready");
    latencies = await fromStream(connection.readable, samples);
  } else {
    throw new TypeError(`unknown mode ${mode}`);
  }
  console.log(JSON.stringify(latencies));
}
