/**
 * In-process costs, one measurement per process so that no variant's code shapes the JIT's view
 * of another's: times BATCHES batches of CALLS calls (after a warm-up) and prints one JSON line,
 * the nanoseconds per call of each batch.
 *
 * Usage: in_process.ts WHAT BATCHES CALLS
 *   ring-VARIANT   send then receive one 64-byte message on a ring variant (see ring_variants.ts)
 *   cell-write     write the state cell (no reader asleep)
 *   cell-read      read the state cell
 *   atomics        Atomics.add on a local Int32Array (what one shared-word operation costs)
 *
 * @module
 */

import { createMemfdRegion, openStateCell } from "../../mod.ts";
import { ringVariant } from "../ring_variants.ts";

const MESSAGE_BYTES = 64;

function timeBatches(batches: number, calls: number, body: () => void): number[] {
  for (let i = 0; i < calls; i++) body(); // warm-up: let the JIT settle first
  const nsPerCall: number[] = [];
  for (let batch = 0; batch < batches; batch++) {
    const started = performance.now();
    for (let i = 0; i < calls; i++) body();
    nsPerCall.push(((performance.now() - started) * 1e6) / calls);
  }
  return nsPerCall;
}

async function ring(variantId: string, batches: number, calls: number): Promise<number[]> {
  const variant = ringVariant(variantId);
  using endpoint = variant.prepare("");
  const receiver = await variant.openReceiver(endpoint.path, () => {});
  const sender = await variant.openSender(endpoint.path);
  try {
    const message = new Uint8Array(MESSAGE_BYTES).fill(7);
    const into = new Uint8Array(MESSAGE_BYTES);
    return timeBatches(batches, calls, () => {
      if (!sender.trySend(message) || receiver.tryReceiveInto(into) !== MESSAGE_BYTES) {
        throw new Error(`${variantId}: a message did not go through`);
      }
    });
  } finally {
    sender.close();
    receiver.close();
  }
}

function cell(what: "cell-write" | "cell-read", batches: number, calls: number): number[] {
  using region = createMemfdRegion({ size: 256, label: "bench-in-process" });
  using writer = openStateCell(region, { writer: true });
  using reader = openStateCell(region);
  let toggle = 0;
  return what === "cell-write"
    ? timeBatches(batches, calls, () => writer.write(toggle ^= 1))
    : timeBatches(batches, calls, () => {
      toggle ^= reader.read();
    });
}

function atomics(batches: number, calls: number): number[] {
  const local = new Int32Array(new SharedArrayBuffer(4));
  return timeBatches(batches, calls, () => {
    Atomics.add(local, 0, 1);
  });
}

if (import.meta.main) {
  const [what, batchesText, callsText] = Deno.args;
  const batches = Number(batchesText);
  const calls = Number(callsText);
  if (!Number.isSafeInteger(batches) || batches < 1 || !Number.isSafeInteger(calls) || calls < 1) {
    throw new TypeError(`Bad BATCHES ${batchesText} or CALLS ${callsText}`);
  }
  let nsPerCall: number[];
  if (what?.startsWith("ring-")) nsPerCall = await ring(what.slice(5), batches, calls);
  else if (what === "cell-write" || what === "cell-read") nsPerCall = cell(what, batches, calls);
  else if (what === "atomics") nsPerCall = atomics(batches, calls);
  else throw new TypeError(`Unknown measurement ${JSON.stringify(what)}`);
  console.log(JSON.stringify(nsPerCall));
}
