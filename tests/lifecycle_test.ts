/**
 * Lifetimes: no order of open, use and close crashes, hangs or leaks. The regressions of issue
 * 10: each scene that once crashed or hung runs in a process of its own, so that a crash shows as
 * a signal instead of taking the test runner down; then calls in flight at once on one ring end.
 *
 * @module
 */

import { assert, assertEquals } from "@std/assert";
import {
  createMemfdRegion,
  initRing,
  openRingConsumer,
  openRingProducer,
  ringRegionSize,
  type SharedRegion,
} from "../mod.ts";
import { spawnDeno, TESTS_DIR, testWith, withTempDir } from "./helpers.ts";

/** How long a child may take before it counts as hung: far beyond what a healthy one needs. */
const PEER_BOUND_MS = 180_000;

// --- regressions of issue 10, each scene in a process of its own --------------------------------

const SCENES = `${TESTS_DIR}fixtures/lifecycle_scenes.ts`;

/** Runs a scene; asserts it ended normally, by itself; returns what it reported. */
async function scene(name: string, ...args: string[]): Promise<Map<string, string>> {
  await using child = spawnDeno(SCENES, [name, ...args]);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const status = await Promise.race([
    child.status(),
    new Promise<"hung">((resolve) => timer = setTimeout(() => resolve("hung"), PEER_BOUND_MS)),
  ]);
  clearTimeout(timer);
  assert(status !== "hung", `The ${name} scene hung:\n${child.transcript}`);
  assertEquals(status.signal, null, `The ${name} scene was killed:\n${child.transcript}`);
  assertEquals(status.code, 0, `The ${name} scene failed:\n${child.transcript}`);
  const seen = new Map<string, string>();
  for (const line of child.lines) {
    const at = line.text.indexOf(": ");
    if (line.stream === "stdout" && at > 0) {
      seen.set(line.text.slice(0, at), line.text.slice(at + 2));
    }
  }
  assertEquals(seen.get("end"), "ok", child.transcript);
  return seen;
}

testWith(
  ["run", "read"],
  "closing the region under a blocked receive() rejects it with BadResource; the process lives on",
  async () => {
    const seen = await scene("receive-blocked");
    assertEquals(seen.get("receive"), "BadResource");
    assertEquals(seen.get("tryReceive after"), "BadResource");
    assertEquals(seen.get("trySend after"), "BadResource");
    assertEquals(seen.get("timer"), "fired");
  },
);

testWith(
  ["run", "read"],
  "closing the region under a send() blocked on a full ring rejects it with BadResource; the process lives on",
  async () => {
    const seen = await scene("send-blocked");
    assertEquals(seen.get("send"), "BadResource");
    assertEquals(seen.get("consumer after"), "BadResource");
    assertEquals(seen.get("timer"), "fired");
  },
);

testWith(
  ["run", "read"],
  "closing the region settles pending changes(), waitForChange({ timeout }) and waitInt32() at once, and timers keep running",
  async () => {
    const seen = await scene("waits-pending");
    assertEquals(seen.get("changes"), "ok []");
    assertEquals(seen.get("waitForChange"), "BadResource");
    assertEquals(seen.get("waitInt32"), "BadResource");
    assertEquals(seen.get("timer"), "fired");
    assertEquals(seen.get("read after"), "BadResource");
  },
);

testWith(
  ["run", "read"],
  "a lease's, a reservation's and a view's bytes after region.close() are empty, and a region mapped next is not written",
  async () => {
    const seen = await scene("views-after-close");
    const revoked = JSON.stringify({ length: 0, first: "undefined" });
    assertEquals(seen.get("lease after close"), revoked);
    assertEquals(seen.get("reservation after close"), revoked);
    assertEquals(seen.get("view after close"), revoked);
    assertEquals(seen.get("new region written"), "false");
    assertEquals(seen.get("release after"), "BadResource");
    assertEquals(seen.get("commit after"), "BadResource");
  },
);

testWith(
  ["run", "read", "write"],
  "a view's buffer moved away with transfer() cannot reach the file after region.close()",
  async () => {
    await withTempDir(async (dir) => {
      const seen = await scene("moved-after-close", `${dir}/moved.region`);
      assertEquals(seen.get("moved after close"), JSON.stringify({ length: 4096, first: 0x55 }));
      assertEquals(seen.get("file first byte"), "1");
      assertEquals(seen.get("file written after close"), "false");
    });
  },
);

// --- calls in flight at once ------------------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function ringRegion(capacity: number): SharedRegion {
  const region = createMemfdRegion({ size: ringRegionSize(capacity) });
  initRing(region);
  return region;
}

function describe(value: unknown): string {
  if (value instanceof Uint8Array) return JSON.stringify(decoder.decode(value));
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  return String(value);
}

Deno.test("two send()s and two receive()s at once lose, repeat and reorder nothing", async () => {
  using region = ringRegion(64); // two 24-byte messages fill it: sends wait as often as not
  using producer = openRingProducer(region, { spin: 0 });
  using consumer = openRingConsumer(region, { spin: 0 });
  const count = 400;
  const message = (i: number): Uint8Array => encoder.encode(`message ${i}`.padEnd(24, "."));
  const sending = (async () => {
    for (let i = 0; i < count; i += 2) {
      await Promise.all([producer.send(message(i)), producer.send(message(i + 1))]);
    }
  })();
  const received: string[] = [];
  while (received.length < count) {
    const pair = await Promise.all([consumer.receive(), consumer.receive()]);
    for (const got of pair) received.push(describe(got));
  }
  await sending;
  assertEquals(received, Array.from({ length: count }, (_, i) => describe(message(i))));
  assertEquals(consumer.tryReceive(), undefined);
});
