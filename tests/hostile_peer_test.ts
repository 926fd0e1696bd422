/**
 * A peer that writes garbage into the shared headers (any process that can write the memory
 * can): the library refuses what it cannot trust and never hangs, throws a stray TypeError, or
 * shows a value nobody wrote because of it.
 *
 * @module
 */

import { assert, assertEquals } from "@std/assert";
import { assertRejectsWith, assertThrowsWith } from "./helpers/assertions.ts";
import {
  createMemfdRegion,
  openRingConsumer,
  openRingProducer,
  openStateCell,
  restoreRingPosition,
} from "../mod.ts";
import { ringRegion } from "./helpers/rings.ts";
import { delay, within } from "./helpers/waiting.ts";

/** Byte offsets in the headers, as `lib/ring/layout.ts` and `lib/state_cell.ts` lay them out. */
const RING_PRODUCER_CLAIM = 16;
const RING_CONSUMER_CLAIM = 24;
const RING_HEAD = 64;
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
  region.storeInt32(RING_TAIL, 304); // beyond the head (256 at most here), within 0..511
  assertThrowsWith(() => producer.trySend(fill), Deno.errors.InvalidData, region.name, "ahead");
  await assertRejectsWith(
    () => producer.send(fill, { timeout: 1000 }),
    Deno.errors.InvalidData,
    region.name,
  );
});

Deno.test("available with a head written over is InvalidData, not a count beyond the ring, and reads on once the producer writes its own back", () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  assert(producer.trySend(new Uint8Array(5)));
  for (const head of [472, 12]) {
    // Past a ring's worth of the tail (it counted 472 bytes of 256); between two records.
    region.storeInt32(RING_HEAD, head);
    assertThrowsWith(
      () => consumer.available,
      Deno.errors.InvalidData,
      region.name,
      head === 12
        ? "its head position 12 is between two records"
        : `its head position ${head} is not one the producer could have written`,
    );
  }
  region.storeInt32(RING_HEAD, 16); // the producer's own, as its next step writes it back
  assertEquals(consumer.available, 16);
  assertEquals(consumer.tryReceive()?.length, 5);
});

Deno.test("a position between two records is InvalidData when an end opens (it read lengths from inside records) and restoreRingPosition() mends it", () => {
  for (
    const [end, word, other] of [["consumer", RING_TAIL, RING_HEAD], [
      "producer",
      RING_HEAD,
      RING_TAIL,
    ]] as const
  ) {
    using region = ringRegion(256);
    region.storeInt32(word, 455);
    const open = end === "consumer" ? openRingConsumer : openRingProducer;
    assertThrowsWith(
      () => open(region).close(),
      Deno.errors.InvalidData,
      region.name,
      `position 455 is between two records`,
    );
    assert(restoreRingPosition(region, { capacity: 256, end }) !== undefined);
    assertEquals(region.loadInt32(word), region.loadInt32(other));
    using producer = openRingProducer(region);
    using consumer = openRingConsumer(region);
    assert(producer.trySend(new Uint8Array(3)));
    assertEquals(consumer.tryReceive()?.length, 3);
  }
});
