/**
 * In-process figures for `deno bench`: what one call costs on this machine, with a plain
 * JavaScript operation as the baseline.
 *
 * @module
 */

import {
  createMemfdRegion,
  initRing,
  openRingConsumer,
  openRingProducer,
  openStateCell,
  ringRegionSize,
} from "../mod.ts";

const region = createMemfdRegion({ size: 256 });
const writer = openStateCell(region, { writer: true });
const reader = openStateCell(region);
let toggle = 0;
const local = new Int32Array(new SharedArrayBuffer(4));

Deno.bench(
  "baseline: Atomics.add on a local Int32Array",
  { group: "state", baseline: true },
  () => {
    Atomics.add(local, 0, 1);
  },
);
Deno.bench("state cell write (no reader asleep)", { group: "state" }, () => {
  writer.write(toggle ^= 1);
});
Deno.bench("state cell read", { group: "state" }, () => {
  reader.read();
});

const ring = createMemfdRegion({ size: ringRegionSize(1 << 20) });
initRing(ring);
const producer = openRingProducer(ring);
const consumer = openRingConsumer(ring);
const message = new Uint8Array(64);

Deno.bench("ring trySend + tryReceive, 64 B (one process)", { group: "ring" }, () => {
  producer.trySend(message);
  consumer.tryReceive();
});
Deno.bench("ring tryReserve/commit + tryRead/release, 64 B", { group: "ring" }, () => {
  producer.tryReserve(64)?.commit();
  consumer.tryRead()?.release();
});
Deno.bench("baseline: Uint8Array.slice of 64 B", { group: "ring", baseline: true }, () => {
  message.slice();
});
