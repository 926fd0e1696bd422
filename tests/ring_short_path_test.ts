/**
 * `trySend()` and `tryReceiveInto()` take a short path for the usual message and hand anything
 * else to the general path that every other call uses. These tests put each end in every state
 * the short path must not handle on its own, with a message waiting where one could be, and
 * check that the answer is the general path's: the same errors, nothing sent or taken out of
 * turn, and the stream whole afterwards.
 *
 * @module
 */

import { assertEquals, assertThrows } from "@std/assert";
import { assertThrowsWith } from "./helpers/assertions.ts";
import { ringRegion } from "./helpers/rings.ts";
import { openRingConsumer, openRingProducer } from "../mod.ts";
import { CONSUMER, HEAD, MAGIC, PRODUCER, RING_HEADER_SIZE, TAIL } from "../lib/ring/layout.ts";

/** A one-byte message. */
function byte(value: number): Uint8Array {
  return new Uint8Array([value]);
}

/** What `tryReceiveInto` took, as `[length, first byte]`, or its `undefined` or `null`. */
function taken(length: number | null | undefined, into: Uint8Array): unknown {
  return typeof length === "number" ? [length, into[0]] : length;
}

Deno.test("the short paths wait their turn: a blocking call in flight is not overtaken on either side", async () => {
  using region = ringRegion(64);
  using producer = openRingProducer(region, { spin: 0 });
  using consumer = openRingConsumer(region, { spin: 0 });
  const into = new Uint8Array(8);
  const first = new Uint8Array(8);
  const receiving = consumer.receiveInto(first, { timeout: 10_000 });
  assertEquals(producer.trySend(byte(1)), true);
  // The message is there, but the receive that waits came first: it is not taken from under it.
  assertEquals(consumer.tryReceiveInto(into), undefined);
  assertEquals(await receiving, 1);
  assertEquals(first[0], 1);

  for (let i = 2; producer.trySend(byte(i)); i++); // full: four 16-byte records
  const sending = producer.send(byte(9), { timeout: 10_000 });
  assertEquals(taken(consumer.tryReceiveInto(into), into), [1, 2]); // room for one more now
  // The room is the waiting send's: a try form sent now would overtake it.
  assertEquals(producer.trySend(byte(10)), false);
  await sending;
  const rest: unknown[] = [];
  for (let length; (length = consumer.tryReceiveInto(into)) !== undefined;) {
    rest.push(taken(length, into));
  }
  assertEquals(rest, [[1, 3], [1, 4], [1, 5], [1, 9]]);
});

Deno.test("the short paths say Busy while a lease, a reservation or a callback holds the end", () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const into = new Uint8Array(8);
  producer.trySend(byte(1));
  producer.trySend(byte(2));

  const lease = consumer.tryRead();
  assertEquals(lease?.bytes[0], 1);
  assertThrowsWith(() => consumer.tryReceiveInto(into), Deno.errors.Busy, "Release");
  lease?.release();
  const reservation = producer.tryReserve(1);
  assertThrowsWith(() => producer.trySend(byte(3)), Deno.errors.Busy, "Commit or cancel");
  reservation?.cancel();

  const inCallback: string[] = [];
  consumer.tryReadWith(() => {
    try {
      consumer.tryReceiveInto(into);
    } catch (error) {
      if (error instanceof Deno.errors.Busy) inCallback.push("tryReceiveInto");
    }
  }, 1);
  producer.trySendWith(1, (data, offset) => {
    try {
      producer.trySend(byte(4));
    } catch (error) {
      if (error instanceof Deno.errors.Busy) inCallback.push("trySend");
    }
    data[offset] = 5;
    return 1;
  });
  assertEquals(inCallback, ["tryReceiveInto", "trySend"]);
  // Nothing was taken or sent by the calls refused: 2 was read by the callback, then 5.
  assertEquals(taken(consumer.tryReceiveInto(into), into), [1, 5]);
  assertEquals(consumer.tryReceiveInto(into), undefined);
});

Deno.test("the short paths say BadResource once their end or its region closed, with a message waiting", () => {
  // `using` though each is closed by hand below: close() is safe twice, and a failed assertion
  // leaves nothing open.
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const into = new Uint8Array(8);
  producer.trySend(byte(1));
  consumer.close();
  assertThrows(() => consumer.tryReceiveInto(into), Deno.errors.BadResource);
  producer.close();
  assertThrows(() => producer.trySend(byte(2)), Deno.errors.BadResource);

  // A new consumer first: a producer refuses to open on a ring whose consumer closed it.
  using reader = openRingConsumer(region);
  using again = openRingProducer(region);
  again.trySend(byte(3));
  region.close(); // its words are detached now: no Atomics call may meet them
  assertThrows(() => reader.tryReceiveInto(into), Deno.errors.BadResource);
  assertThrows(() => again.trySend(byte(4)), Deno.errors.BadResource);
});

Deno.test("the short paths notice at once a role another process took over: InvalidData, nothing sent or taken", () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const into = new Uint8Array(8);
  producer.trySend(byte(1));

  const producerClaim = region.loadInt32(PRODUCER);
  region.storeInt32(PRODUCER, producerClaim + 1);
  assertThrowsWith(() => producer.trySend(byte(2)), Deno.errors.InvalidData, "producer role");
  region.storeInt32(PRODUCER, producerClaim);

  const consumerClaim = region.loadInt32(CONSUMER);
  region.storeInt32(CONSUMER, consumerClaim + 1);
  assertThrowsWith(() => consumer.tryReceiveInto(into), Deno.errors.InvalidData, "consumer role");
  region.storeInt32(CONSUMER, consumerClaim);

  assertEquals(taken(consumer.tryReceiveInto(into), into), [1, 1]);
  assertEquals(consumer.tryReceiveInto(into), undefined);
});

Deno.test("the consumer's short path checks what it reads: a header, head or record written over is InvalidData, and nothing is taken", () => {
  const corruptions: [string, number, number, string][] = [
    ["the magic zeroed, as `echo > FILE` leaves it", MAGIC, 0, "header"],
    ["the head between two records", HEAD, 4, "corrupted"],
    ["the head past twice the capacity", HEAD, 512, "head position"],
    ["the head more than a ring's worth ahead", HEAD, 400, "400 bytes in use"],
    ["the head all ones, closed mark included", HEAD, -1, "head position"],
    ["a record length past the capacity", RING_HEADER_SIZE, 0x7fff_0000, "corrupted"],
    ["a record length past the data written", RING_HEADER_SIZE, 9, "corrupted"],
    ["a record length that runs past the end", RING_HEADER_SIZE, 241, "corrupted"],
    ["a record length below padding's", RING_HEADER_SIZE, -2, "corrupted"],
  ];
  for (const [what, offset, value, says] of corruptions) {
    using region = ringRegion(256);
    using producer = openRingProducer(region);
    using consumer = openRingConsumer(region);
    const into = new Uint8Array(8);
    producer.trySend(byte(1));
    const was = region.loadInt32(offset);
    region.storeInt32(offset, value);
    const error = assertThrows(() => consumer.tryReceiveInto(into), Deno.errors.InvalidData);
    assertEquals(error.message.includes(says), true, `${what}: ${error.message}`);
    assertEquals(region.loadInt32(TAIL), 0, `${what}: the tail moved`);
    if (offset !== HEAD) {
      // What the consumer read of the head stays cached: a head written over needs discardAll().
      region.storeInt32(offset, was);
      assertEquals(taken(consumer.tryReceiveInto(into), into), [1, 1], what);
    }
  }
});

Deno.test("the consumer's short path refuses a record written over to run past the end of the data, where padding was", () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const into = new Uint8Array(256);
  producer.trySend(new Uint8Array(224)); // a 232-byte record: the tail goes to 232
  assertEquals(consumer.tryReceiveInto(into), 224);
  producer.trySend(byte(1)); // at 232, to 248
  producer.trySend(byte(2)); // 8 bytes left: padding at 248, the message at 0
  assertEquals(taken(consumer.tryReceiveInto(into), into), [1, 1]);
  const padding = RING_HEADER_SIZE + 248;
  assertEquals(region.loadInt32(padding), -1);
  region.storeInt32(padding, 5); // a 16-byte record with 8 bytes left, and 24 in use
  assertThrowsWith(() => consumer.tryReceiveInto(into), Deno.errors.InvalidData, "corrupted");
  region.storeInt32(padding, -1);
  assertEquals(taken(consumer.tryReceiveInto(into), into), [1, 2]);
});

Deno.test("the consumer's short path leaves a message that does not fit the buffer in the ring, and takes an empty one", () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  producer.trySend(new Uint8Array([1, 2, 3]));
  assertThrowsWith(() => consumer.tryReceiveInto(new Uint8Array(2)), RangeError, "3 bytes");
  assertThrowsWith(
    () => consumer.tryReceiveInto([0, 0, 0] as unknown as Uint8Array),
    TypeError,
    "not a Uint8Array",
  );
  // Something that only looks like a buffer is never handed a view of the ring to keep.
  const lent: unknown[] = [];
  const lookalike = { length: 64, set: (view: unknown) => lent.push(view) };
  assertThrowsWith(
    () => consumer.tryReceiveInto(lookalike as unknown as Uint8Array),
    TypeError,
    "not a Uint8Array",
  );
  assertEquals(lent, []);
  const into = new Uint8Array(3);
  assertEquals(consumer.tryReceiveInto(into), 3);
  assertEquals([...into], [1, 2, 3]);
  assertEquals(producer.trySend(new Uint8Array(0)), true);
  assertEquals(consumer.tryReceiveInto(into), 0);
  assertEquals(consumer.tryReceiveInto(into), undefined);
});

Deno.test("the short paths carry a stream whole across many wraps, through padding and a producer's cached tail running out", () => {
  // 200 bytes: records of 16 to 48 bytes leave padding at the end of most laps.
  using region = ringRegion(200);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const into = new Uint8Array(40);
  let seed = 12345;
  /** A whole number from 0 to `below` - 1, the same in every run. */
  const random = (below: number): number => {
    seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0;
    return (seed >>> 16) % below;
  };
  let sent = 0;
  let received = 0;
  const check = (length: number | null | undefined): void => {
    assertEquals(length, 1 + (received % 37), `message ${received}`);
    const expected = received & 0xff;
    if (into.subarray(0, length as number).some((value) => value !== expected)) {
      throw new Error(`message ${received} arrived changed`);
    }
    received++;
  };
  for (let round = 0; round < 5_000; round++) {
    // A few sends and a few receives at a time: the wrap falls anywhere in a run of sends, and
    // each side's cached view of the other runs out at any point.
    for (let count = random(8); count > 0; count--) {
      const length = 1 + (sent % 37);
      if (!producer.trySend(new Uint8Array(length).fill(sent & 0xff))) break;
      sent++;
    }
    for (let count = random(8); count > 0; count--) {
      const length = consumer.tryReceiveInto(into);
      if (length === undefined) break;
      check(length);
    }
  }
  for (let length; (length = consumer.tryReceiveInto(into)) !== undefined;) check(length);
  assertEquals(received, sent);
  assertEquals(sent > 10_000, true, `only ${sent} messages went`);
});
