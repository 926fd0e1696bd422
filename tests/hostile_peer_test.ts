/**
 * A peer that writes garbage into the shared headers (any process that can write the memory
 * can): the library refuses what it cannot trust and never hangs, throws a stray TypeError, or
 * shows a value nobody wrote because of it.
 *
 * @module
 */

import { assertEquals } from "@std/assert";
import { assertRejectsWith, assertThrowsWith } from "./helpers/assertions.ts";
import { createMemfdRegion, openRingConsumer, openRingProducer, openStateCell } from "../mod.ts";
import { ringRegion } from "./helpers/rings.ts";
import { delay, within } from "./helpers/waiting.ts";

/** Byte offsets in the headers, as `lib/ring/layout.ts` and `lib/state_cell.ts` lay them out. */
const RING_PRODUCER_CLAIM = 16;
const RING_CONSUMER_CLAIM = 24;
const RING_TAIL = 128;
const CELL_SEQUENCE = 76;
const CELL_WAITERS = 80;
const CELL_WRITER_CLAIM = 88;

Deno.test("a claim naming a pid beyond any the kernel gives is a dead holder, not a TypeError", () => {
  // kill(2)'s pid is an i32: 2^32 - 1 threw "Invalid FFI i32 type" from every opener and wait.
  for (const pid of [0xffff_ffffn, 0x8000_0000n, 2n ** 22n + 1n]) {
    using ring = ringRegion(4096);
    const claims = new BigInt64Array(ring.view(0, 32).buffer);
    claims[RING_PRODUCER_CLAIM / 8] = pid;
    claims[RING_CONSUMER_CLAIM / 8] = pid;
    using producer = openRingProducer(ring);
    using consumer = openRingConsumer(ring);
    producer.trySend(new Uint8Array([1]));
    assertEquals(consumer.tryReceive(), new Uint8Array([1]));
  }
  using region = createMemfdRegion({ size: 4096 });
  const cellClaim = new BigInt64Array(region.view(2048 + CELL_WRITER_CLAIM, 8).buffer);
  openStateCell(region, { offset: 2048, initialise: true }).close();
  cellClaim[0] = 0xffff_ffffn;
  using reader = openStateCell(region, { offset: 2048 });
  assertEquals(reader.writerPid, undefined);
  using writer = openStateCell(region, { offset: 2048, writer: true });
  writer.write(3);
  assertEquals(reader.read(), 3);
});

Deno.test("a sequence word another process left odd does not invert the sequence lock", () => {
  // The writer's first add then made it even for the length of the write, and odd for good after.
  using region = createMemfdRegion({ size: 256 });
  using writer = openStateCell(region, { writer: true });
  using reader = openStateCell(region);
  writer.write(10);
  region.addInt32(CELL_SEQUENCE, 1);
  writer.write(9);
  assertEquals(region.loadInt32(CELL_SEQUENCE) % 2, 0, "the sequence stays odd after the write");
  assertEquals(reader.read(), 9);
});

Deno.test("a count of sleeping readers set to 0 or -1 by another process does not stop a write waking them", async () => {
  for (const garbage of [0, -1]) {
    using region = createMemfdRegion({ size: 256 });
    using writer = openStateCell(region, { writer: true });
    using reader = openStateCell(region);
    const next = reader.waitForChange(); // no timeout, as the LED waits
    await delay(100); // asleep now
    region.storeInt32(CELL_WAITERS, garbage);
    writer.write(1);
    assertEquals(
      await within(next, 5_000),
      1,
      `the reader slept through a write (count ${garbage})`,
    );
  }
});

Deno.test("a ring tail moved ahead of the head is InvalidData for the producer, not a ring full for good", async () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using _consumer = openRingConsumer(region);
  const fill = new Uint8Array(100);
  while (producer.trySend(fill)); // full: the next send reads the shared tail
  region.storeInt32(RING_TAIL, 300); // beyond the head (256 at most here), within 0..511
  assertThrowsWith(() => producer.trySend(fill), Deno.errors.InvalidData, region.name, "ahead");
  await assertRejectsWith(
    () => producer.send(fill, { timeout: 1000 }),
    Deno.errors.InvalidData,
    region.name,
  );
});
