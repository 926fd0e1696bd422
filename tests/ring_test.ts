import {
  assert,
  assertEquals,
  assertIsError,
  assertMatch,
  assertRejects,
  assertThrows,
  fail,
} from "@std/assert";
import { assertRejectsWith, assertThrowsWith } from "./helpers/assertions.ts";
import { ROOT, TESTS_DIR } from "./helpers/paths.ts";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { withTempDir } from "./helpers/temp.ts";
import { ringRegion } from "./helpers/rings.ts";
import { childrenOf, killIfRunning, processGone } from "./helpers/proc.ts";
import { spawnDeno, spawnProgram, taskArgs } from "./helpers/spawn.ts";
import { delay, GUARD_MS, until, within } from "./helpers/waiting.ts";
import {
  createMemfdRegion,
  initRing,
  openFileRegion,
  openMemfdRegion,
  openRingConsumer,
  openRingProducer,
  openStateCell,
  restoreRingHeader,
  restoreRingPosition,
  restoreStateCellHeader,
  type RingConsumer,
  type RingProducer,
  ringRegionSize,
  stateCellHeaderProblem,
} from "../mod.ts";
import {
  CLOSED,
  CONSUMER,
  CONSUMER_WAITING,
  HEAD,
  POSITION,
  PRODUCER,
  PRODUCER_WAITING,
  RING_HEADER_SIZE,
  TAIL,
} from "../lib/ring/layout.ts";
import { STRICT } from "./fixtures/ring_peer.ts";
import { checkStressMessage, stressLengths } from "./fixtures/stress_message.ts";
import { loadRounds } from "./helpers/load.ts";

const PEER = `${TESTS_DIR}fixtures/ring_peer.ts`;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function text(message: Uint8Array | null | undefined): string | null | undefined {
  return message instanceof Uint8Array ? decoder.decode(message) : message;
}

Deno.test("the seed's example: a ring for 3 items holds 3, not size - 1", () => {
  // The textbook buffer of size 3 holds only 2 items. Each 1-byte item here takes a 16-byte
  // record (8-byte header, payload padded to 8), so 48 bytes hold exactly three.
  using region = ringRegion(48);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map((item) => encoder.encode(item));
  assertEquals(producer.trySend(a), true);
  assertEquals(producer.trySend(b), true);
  assertEquals(producer.trySend(c), true); // the whole capacity is used: no lost slot
  assertEquals(producer.free, 0);
  assertEquals(producer.trySend(d), false); // full
  assertEquals(text(consumer.tryReceive()), "a");
  assertEquals(producer.trySend(d), true); // a's space is reused, across the wrap
  assertEquals(producer.trySend(e), false);
  assertEquals(text(consumer.tryReceive()), "b");
  assertEquals(producer.trySend(e), true);
  assertEquals(consumer.tryReceiveBatch().map(text), ["c", "d", "e"]);
  assertEquals(consumer.tryReceive(), undefined); // empty
  assertEquals(consumer.available, 0);
});

Deno.test("messages of every size survive many wraps, padding included", () => {
  using region = ringRegion(200); // not a power of two
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const lengths = stressLengths(7, producer.maxMessageSize);
  const expected: string[] = [];
  let sent = 0;
  let received = 0;
  while (received < 20_000) {
    const message = `${sent}:`.padEnd(lengths(), "x");
    // Send until the ring is full, then receive one: every position of the ring gets used.
    let skippedPadding = false;
    while (producer.trySend(encoder.encode(message)) === false) {
      const got = consumer.tryReceive();
      if (got === undefined) {
        // Only padding was left: the producer wrapped but the record needs the start too.
        assertEquals(skippedPadding, false, `the ring makes no progress (sent ${sent})`);
        skippedPadding = true;
        continue;
      }
      assert(got instanceof Uint8Array);
      assertEquals(decoder.decode(got), expected.shift());
      received++;
    }
    expected.push(message);
    sent++;
  }
});

Deno.test("ring capacities: any multiple of 8, clear errors otherwise", () => {
  using region = createMemfdRegion({ size: 4096 });
  assertEquals(initRing(region, { capacity: 24 }), 24);
  for (const capacity of [0, 4, 12, 100.5, 2 ** 31, -5, NaN, "4096" as unknown as number]) {
    assertThrows(() => initRing(region, { capacity }), RangeError);
    // The size of a region for a ring that cannot be made was -5 + 192, or "1924096".
    assertThrowsWith(
      () => ringRegionSize(capacity),
      RangeError,
      `Ring capacity ${typeof capacity === "string" ? `"${capacity}"` : capacity}`,
    );
  }
  assertThrowsWith(() => initRing(region, { capacity: 8192 }), RangeError, "4096");
  assertEquals(initRing(region), 4096 - RING_HEADER_SIZE);
  assertThrows(() => initRing(region, { offset: 10 }), RangeError);
});

Deno.test("ring options and batch sizes out of range are RangeErrors, and no role is taken", async () => {
  using region = ringRegion(64);
  for (const options of [{ spin: -1 }, { spin: 0.5 }, { spin: Infinity }, { spin: NaN }]) {
    assertThrowsWith(() => openRingConsumer(region, options), RangeError, "spin");
  }
  for (const livenessCheckMs of [0, -5, NaN, 1e-9, 0.5]) {
    assertThrowsWith(
      () => openRingProducer(region, { livenessCheckMs }),
      RangeError,
      `livenessCheckMs ${livenessCheckMs} is not a number of milliseconds from 1 up`,
    );
  }
  using consumer = openRingConsumer(region, { livenessCheckMs: Infinity, spin: 0 });
  using producer = openRingProducer(region);
  producer.trySend(new Uint8Array([1]));
  for (const max of [0, -1, NaN]) {
    await assertRejectsWith(() => consumer.receiveBatch(max), RangeError, "from 1 up");
  }
  assertEquals((await consumer.receiveBatch(1)).length, 1);
});

Deno.test("a signal that is no AbortSignal is a TypeError naming the ring, whether or not the call would wait", async () => {
  using region = ringRegion(64);
  using consumer = openRingConsumer(region, { spin: 0 });
  using producer = openRingProducer(region);
  const signal = "abort" as unknown as AbortSignal;
  const why = 'signal "abort" is not an AbortSignal';
  // Before, an empty ring's receive failed on signal.addEventListener, naming nothing, and the
  // calls that did not wait took it.
  await assertRejectsWith(() => consumer.receive({ signal }), TypeError, region.name, why);
  await assertRejectsWith(() => producer.send(new Uint8Array([1]), { signal }), TypeError, why);
  assertEquals(consumer.tryReceive(), undefined, "a refused send sent nothing");
  producer.trySend(new Uint8Array([2]));
  await assertRejectsWith(() => consumer.receive({ signal }), TypeError, why);
  await assertRejectsWith(() => consumer.receiveBatch(1, { signal }), TypeError, why);
  assertEquals(text(await consumer.receive({ signal: null as unknown as undefined })), "\u0002");
});

Deno.test("a message larger than the ring is a RangeError before anything is written", () => {
  using region = ringRegion(64);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  assertEquals(producer.maxMessageSize, 56);
  assertThrowsWith(
    () => producer.trySend(new Uint8Array(57)),
    RangeError,
    "57 bytes",
    "at most 56",
  );
  assertThrows(() => producer.tryReserve(1000), RangeError);
  assertEquals(consumer.available, 0);
  assertEquals(producer.trySend(new Uint8Array(56)), true);
  assertEquals(consumer.tryReceive()?.length, 56);
});

Deno.test("close() by the producer ends the consumer after it drains what was sent", async () => {
  using region = ringRegion(256);
  const producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  for (const item of ["one", "two", "three"]) await producer.send(encoder.encode(item));
  producer.close();
  producer.close();
  assertThrows(() => producer.trySend(encoder.encode("four")), Deno.errors.BadResource);
  const received: string[] = [];
  for await (const message of consumer) received.push(decoder.decode(message));
  assertEquals(received, ["one", "two", "three"]);
  assertEquals(await consumer.receive(), null);
});

Deno.test("a blocked consumer wakes on a send, and a blocked producer on a receive", async () => {
  using region = ringRegion(32);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const receiving = consumer.receive({ timeout: 30_000 });
  await delay(20);
  await producer.send(encoder.encode("ping"));
  assertEquals(text(await receiving), "ping");
  await producer.send(new Uint8Array(8)); // 16 bytes, up to the end
  await producer.send(new Uint8Array(8)); // 16 more from the start: full
  assertEquals(producer.free, 0);
  const sending = producer.send(encoder.encode("next"), { timeout: 30_000 });
  await delay(20);
  assertEquals((await consumer.receive())?.length, 8);
  await sending;
  assertEquals((await consumer.receive())?.length, 8);
  assertEquals(text(await consumer.receive()), "next");
});

Deno.test("a consumer's close makes the producer's sends fail with BrokenPipe", async () => {
  using region = ringRegion(32);
  using producer = openRingProducer(region);
  const consumer = openRingConsumer(region);
  await producer.send(new Uint8Array(24));
  const blocked = producer.send(new Uint8Array(8));
  await delay(20);
  consumer.close();
  await assertRejectsWith(() => blocked, Deno.errors.BrokenPipe, "consumer closed");
  assertThrows(() => producer.trySend(new Uint8Array(1)), Deno.errors.BrokenPipe);
});

Deno.test("a producer's open refused after it took the role tells the consumer side nothing: no end of stream, and an earlier producer's closed mark kept", () => {
  using region = ringRegion(32);
  openRingConsumer(region).close();
  // Refused: the consumer closed. The head is left as no producer touched it.
  assertThrowsWith(() => openRingProducer(region), Deno.errors.BrokenPipe, "consumer closed");
  assertEquals(region.loadInt32(HEAD), 0);
  {
    using next = openRingConsumer(region);
    assertEquals(next.tryReceive(), undefined, "a producer that never sent ended the stream");
    using producer = openRingProducer(region);
    producer.trySend(encoder.encode("late"));
    assertEquals(text(next.tryReceive()), "late");
  }
  // Both ends closed: the refused open puts the last producer's closed mark back, and wakes
  // nobody into a stream that looks open.
  openRingConsumer(region).close();
  const head = region.loadInt32(HEAD);
  assert((head & CLOSED) !== 0, "the last producer's close left no mark");
  assertThrowsWith(() => openRingProducer(region), Deno.errors.BrokenPipe, "consumer closed");
  assertEquals(region.loadInt32(HEAD), head);
  using last = openRingConsumer(region);
  assertEquals(last.tryReceive(), null, "the stream the last producer ended reads as going on");
  // Nor is the role kept: a producer may open once a consumer is there.
  openRingProducer(region).close();
});

Deno.test("aborts and timeouts end waits on both sides", async () => {
  using region = ringRegion(32);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const controller = new AbortController();
  const receiving = consumer.receive({ signal: controller.signal });
  setTimeout(() => controller.abort(new Error("no more")), 20);
  await assertRejectsWith(() => receiving, Error, "no more");
  await assertRejects(() => consumer.receive({ timeout: 20 }), Deno.errors.TimedOut);
  await producer.send(new Uint8Array(24));
  await assertRejects(
    () => producer.send(new Uint8Array(8), { timeout: 20 }),
    Deno.errors.TimedOut,
  );
  await assertRejectsWith(
    () => producer.send(new Uint8Array(8), { signal: AbortSignal.abort(new Error("stop")) }),
    Error,
    "stop",
  );
  const messages = consumer.messages({ signal: AbortSignal.timeout(50) });
  assertEquals((await messages.next()).value?.length, 24);
  assertEquals((await messages.next()).done, true);
});

Deno.test("zero-copy: a reservation is written in place and unusable after commit", async () => {
  using region = ringRegion(128);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const reservation = producer.tryReserve(16);
  assert(reservation !== undefined);
  assertThrowsWith(
    () => producer.trySend(new Uint8Array(1)),
    Deno.errors.Busy,
    "Commit or cancel",
    `the ring in ${JSON.stringify(region.name)}`,
  );
  reservation.bytes.set(encoder.encode("in place"));
  reservation.commit(8);
  assertEquals(reservation.bytes.length, 0);
  assertThrows(() => reservation.commit(), Deno.errors.BadResource);
  const cancelled = await producer.reserve(8);
  cancelled.cancel();
  assertEquals(cancelled.bytes.length, 0);

  const lease = consumer.tryRead();
  assert(lease);
  assertEquals(decoder.decode(lease.bytes), "in place");
  assertThrowsWith(
    () => consumer.tryReceive(),
    Deno.errors.Busy,
    "Release the message",
    `the ring in ${JSON.stringify(region.name)}`,
  );
  const free = producer.free;
  lease.release();
  assertEquals(lease.bytes.length, 0);
  assertEquals(producer.free, free + 16);
  assertThrows(() => lease.release(), Deno.errors.BadResource);
  assertEquals(consumer.tryRead(), undefined);
});

Deno.test("one producer and one consumer per ring", () => {
  using region = ringRegion(64);
  using _producer = openRingProducer(region);
  using _consumer = openRingConsumer(region);
  assertThrowsWith(() => openRingProducer(region), Deno.errors.Busy, "producer role");
  assertThrowsWith(() => openRingConsumer(region), Deno.errors.Busy, "consumer role");
});

Deno.test("a foreign, blank or impossible ring header is refused", () => {
  using region = createMemfdRegion({ size: 1024 });
  assertThrowsWith(
    () => openRingConsumer(region),
    Deno.errors.InvalidData,
    "blank header",
    "initRing",
  );
  region.write(0, encoder.encode("GIF89a"));
  assertThrowsWith(() => openRingConsumer(region), Deno.errors.InvalidData, "0x");
  initRing(region);
  region.storeInt32(8, 1 << 29);
  assertThrowsWith(() => openRingProducer(region), Deno.errors.InvalidData, "capacity");
  initRing(region);
  region.storeInt32(4, 7);
  assertThrowsWith(() => openRingProducer(region), Deno.errors.InvalidData, "version is 7");
});

Deno.test("a corrupted record or position is reported, never read out of bounds", async () => {
  using region = ringRegion(128);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  await producer.send(encoder.encode("hello"));
  region.storeInt32(RING_HEADER_SIZE, 1_000_000); // the record's length
  assertThrowsWith(() => consumer.tryReceive(), Deno.errors.InvalidData, "corrupted", "1000000");
  region.storeInt32(RING_HEADER_SIZE, 5);
  assertEquals(text(consumer.tryReceive()), "hello");
  region.storeInt32(64, 100_000); // the head
  assertThrowsWith(() => consumer.tryReceive(), Deno.errors.InvalidData, "head position");
  region.storeInt32(64, 24);
  region.storeInt32(RING_HEADER_SIZE + 16, -5);
  assertThrows(() => consumer.tryReceive(), Deno.errors.InvalidData);
});

Deno.test("a record corrupted after the consumer saw the head is reported too (the quick path checks it)", async () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  await producer.send(encoder.encode("one"));
  await producer.send(encoder.encode("two"));
  assertEquals(text(consumer.tryReceive()), "one"); // the consumer now holds the head: 32
  const second = RING_HEADER_SIZE + 16;
  const into = new Uint8Array(64);
  for (const length of [2 ** 31 - 1, 2 ** 31 - 8, 1_000, 9, -2]) {
    region.storeInt32(second, length);
    assertThrowsWith(() => consumer.tryReceiveInto(into), Deno.errors.InvalidData, "corrupted");
  }
  region.storeInt32(second, 3);
  assertEquals(consumer.tryReceiveInto(into), 3);
  assertEquals(text(into.subarray(0, 3)), "two");
  assertEquals(consumer.tryReceiveInto(into), undefined);
});

Deno.test("attaching to a corrupted position fails and leaves the role free", () => {
  using region = ringRegion(128);
  region.storeInt32(128, 100_000); // the tail, outside 0..255
  assertThrowsWith(() => openRingConsumer(region), Deno.errors.InvalidData, "tail position 100000");
  region.storeInt32(128, 0);
  using consumer = openRingConsumer(region); // not Busy: the failed attach gave its claim back
  assertEquals(consumer.available, 0);
});

Deno.test("ring ends throw BadResource after close and when their region closes", () => {
  const region = ringRegion(64);
  const producer = openRingProducer(region);
  const consumer = openRingConsumer(region);
  consumer.close();
  assertThrows(() => consumer.tryReceive(), Deno.errors.BadResource);
  region.close();
  assertThrows(() => producer.trySend(new Uint8Array(1)), Deno.errors.BadResource);
  producer.close();
});

// --- lifetimes (issue 10) --------------------------------------------------------------------

Deno.test("region.close() while receive() sleeps rejects it with BadResource", async () => {
  const region = ringRegion(64);
  using consumer = openRingConsumer(region, { spin: 0 });
  const pending = consumer.receive();
  setTimeout(() => region.close(), 10);
  await assertRejectsWith(() => pending, Deno.errors.BadResource, region.name, "closed");
  assertThrows(() => consumer.tryReceive(), Deno.errors.BadResource);
});

Deno.test("region.close() while send() waits on a full ring rejects it with BadResource", async () => {
  const region = ringRegion(64);
  using producer = openRingProducer(region, { spin: 0 });
  using _consumer = openRingConsumer(region);
  while (producer.trySend(new Uint8Array(8)));
  const pending = producer.send(new Uint8Array(8));
  setTimeout(() => region.close(), 10);
  await assertRejectsWith(() => pending, Deno.errors.BadResource, "closed");
});

Deno.test("leases, reservations and data views are zero-length once the region closes", () => {
  const region = ringRegion(256);
  const producer = openRingProducer(region);
  const consumer = openRingConsumer(region);
  producer.trySend(encoder.encode("kept"));
  const lease = consumer.tryRead();
  assert(lease);
  const reservation = producer.tryReserve(16);
  assert(reservation);
  const data = consumer.data;
  region.close();
  assertEquals([lease.bytes.length, reservation.bytes.length, data.length], [0, 0, 0]);
  // A region mapped afterwards may land at the same address: stale views must not reach it.
  using next = createMemfdRegion({ size: 256 });
  lease.bytes[0] = 1;
  reservation.bytes[0] = 1;
  data[0] = 1;
  assertEquals(next.read(0, 1)[0], 0);
  assertThrows(() => lease.release(), Deno.errors.BadResource);
  assertThrows(() => reservation.commit(), Deno.errors.BadResource);
});

Deno.test("two send() calls at once on one producer keep their order and lose nothing", async () => {
  using region = ringRegion(64);
  using producer = openRingProducer(region, { spin: 0 });
  using consumer = openRingConsumer(region, { spin: 0 });
  const messages = Array.from({ length: 40 }, (_, i) => encoder.encode(`message ${i}`));
  const sends = messages.map((message) => producer.send(message)); // all in flight at once
  const received: string[] = [];
  while (received.length < messages.length) {
    received.push(text(await consumer.receive({ timeout: 5_000 })) as string);
  }
  await Promise.all(sends);
  assertEquals(received, messages.map((m) => decoder.decode(m)));
});

Deno.test("two receive() calls at once on one consumer get one message each, in order", async () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region, { spin: 0 });
  const first = consumer.receive();
  const second = consumer.receive();
  const buffer = new Uint8Array(16);
  const third = consumer.receiveInto(buffer);
  assertEquals(consumer.tryReceive(), undefined, "a try call never overtakes a waiting one");
  producer.trySendBatch(["one", "two", "three"].map((word) => encoder.encode(word)));
  assertEquals([text(await first), text(await second)], ["one", "two"]);
  assertEquals(decoder.decode(buffer.subarray(0, (await third) as number)), "three");
});

Deno.test("a blocking call waiting its turn honours its own timeout and signal", async () => {
  using region = ringRegion(64);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region, { spin: 0 });
  const first = consumer.receive(); // holds the turn
  await assertRejectsWith(() => consumer.receive({ timeout: 20 }), Deno.errors.TimedOut);
  const controller = new AbortController();
  const aborted = consumer.receive({ signal: controller.signal });
  controller.abort(new Error("give up"));
  await assertRejectsWith(() => aborted, Error, "give up");
  producer.trySend(encoder.encode("first"));
  assertEquals(text(await first), "first");
});

Deno.test("closing the ring ends in any order, with using or by hand, is safe", () => {
  for (const order of ["region first", "ends first", "twice"]) {
    const region = ringRegion(64);
    const producer = openRingProducer(region);
    const consumer = openRingConsumer(region);
    if (order === "region first") region.close();
    producer.close();
    consumer.close();
    region.close();
    if (order === "twice") {
      producer[Symbol.dispose]();
      consumer[Symbol.dispose]();
      region[Symbol.dispose]();
    }
    assertThrows(() => producer.trySend(new Uint8Array(1)), Deno.errors.BadResource);
  }
});

// --- the fast paths (issue 12) ---------------------------------------------------------------

Deno.test("receiveInto, tryReceiveBatchInto and tryReadWith copy nothing they need not", async () => {
  using region = ringRegion(1024);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const words = ["alpha", "beta", "gamma", "delta", "epsilon"];
  for (const word of words) producer.trySend(encoder.encode(word));
  const buffer = new Uint8Array(3);
  assertThrowsWith(() => consumer.tryReceiveInto(buffer), RangeError, "5 bytes", "stays");
  const big = new Uint8Array(64);
  assertEquals(await consumer.receiveInto(big), 5);
  assertEquals(decoder.decode(big.subarray(0, 5)), "alpha");
  const lengths = new Uint32Array(2);
  assertEquals(consumer.tryReceiveBatchInto(big, lengths), 2);
  assertEquals(decoder.decode(big.subarray(0, lengths[0] + lengths[1])), "betagamma");
  const seen: string[] = [];
  const count = consumer.tryReadWith((data, offset, length) => {
    seen.push(decoder.decode(data.subarray(offset, offset + length)));
  });
  assertEquals([count, seen], [2, ["delta", "epsilon"]]);
  assertEquals(consumer.tryReadWith(() => {}), 0);
  producer.close();
  assertEquals(consumer.tryReadWith(() => {}), null);
});

Deno.test("send() of a message resized or moved away while it waited for room sends nothing of it", async () => {
  using region = createMemfdRegion({ size: ringRegionSize(64) + 64 });
  initRing(region, { capacity: 64 });
  const after = ringRegionSize(64);
  region.write(after, new Uint8Array(16).fill(0xee)); // what the region holds after the ring
  using producer = openRingProducer(region, { spin: 0 });
  using consumer = openRingConsumer(region);
  const fill = (): void => {
    while (producer.trySend(new Uint8Array(8).fill(1)));
  };
  for (const change of ["resize", "transfer"] as const) {
    fill();
    const buffer = new ArrayBuffer(8, { maxByteLength: 4096 });
    const message = new Uint8Array(buffer); // follows the buffer's length
    const sending = producer.send(message, { timeout: 10_000 });
    await delay(20); // asleep for room for 8 bytes
    if (change === "resize") buffer.resize(200);
    else buffer.transfer();
    assert(consumer.tryReceive() !== undefined); // room for one record: the send wakes
    // It wrote 200 bytes into a record of 16 (over unread messages and past the ring), then the
    // consumer found "a message of 117901063 bytes".
    await assertRejectsWith(() => sending, RangeError, region.name, "when room came", "nothing");
    let received = 0;
    while (consumer.tryReceive() instanceof Uint8Array) received++;
    assertEquals(received, 3, `${change}: what was sent before is intact`);
  }
  assertEquals([...region.read(after, 16)], new Array(16).fill(0xee), "past the ring");
});

Deno.test("sendBatch() whose array changes while it sleeps throws for a message that cannot fit", async () => {
  using region = ringRegion(64);
  using producer = openRingProducer(region, { spin: 0 });
  using consumer = openRingConsumer(region);
  const messages = Array.from({ length: 8 }, () => new Uint8Array(8));
  const sending = producer.sendBatch(messages, { timeout: 10_000 });
  await delay(20); // four sent, asleep for room for the fifth
  messages[5] = new Uint8Array(1000);
  messages[6] = null as unknown as Uint8Array<ArrayBuffer>;
  // The consumer takes all it can: the batch sends the fifth, then meets the sixth. It slept
  // for room a 1000-byte message can never have, until its timeout.
  while (consumer.tryReceive() instanceof Uint8Array);
  await assertRejectsWith(() => sending, RangeError, "1000 bytes does not fit", "5 of the batch");
});

Deno.test("data moved away by its user (transfer()) is lent again: the ...With callbacks write and read the ring, and close revokes the new view", () => {
  using region = ringRegion(256);
  const producer = openRingProducer(region);
  const consumer = openRingConsumer(region);
  (producer.data.buffer as ArrayBuffer).transfer();
  assertEquals(producer.data.length, 256);
  assert(producer.trySendWith(4, (data, offset) => (data.set([42, 43, 44, 45], offset), 4)));
  (consumer.data.buffer as ArrayBuffer).transfer();
  let seen: number[] = [];
  const read = consumer.tryReadWith((data, offset, length) => {
    seen = [...data.subarray(offset, offset + length)];
  });
  assertEquals([read, seen], [1, [42, 43, 44, 45]]);
  const [sending, receiving] = [producer.data, consumer.data];
  producer.close();
  consumer.close();
  assertEquals([sending.length, receiving.length], [0, 0], "a view lent again outlived its close");
});

Deno.test("a message or target whose buffer was transferred or resized away is a TypeError naming the ring; nothing is sent or taken", () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const detached = new Uint8Array(8);
  detached.buffer.transfer();
  const resizable = new ArrayBuffer(16, { maxByteLength: 16 });
  const cutOff = new Uint8Array(resizable, 8, 8);
  resizable.resize(4);
  const ok = new Uint8Array([1, 2, 3]);
  const name = region.name;
  assertThrowsWith(() => producer.trySend(detached), TypeError, name, "the message is detached");
  assertThrowsWith(() => producer.trySend(cutOff), TypeError, name, "the message is out of bounds");
  assertThrowsWith(
    () => producer.trySendBatch([ok, ok, detached, ok]),
    TypeError,
    name,
    "message 2 of the batch is detached",
    "nothing of the batch was sent",
  );
  assertEquals(consumer.tryReceive(), undefined, "a batch with a bad message sent part of itself");
  // A message of length 0 over a buffer that is fine (or length-tracking and empty) still goes.
  assert(producer.trySend(new Uint8Array(new ArrayBuffer(0, { maxByteLength: 8 }))));
  assert(producer.trySend(ok));
  assertEquals(consumer.tryReceive()?.length, 0);
  for (const bad of ["", { length: 0 }]) {
    assertThrowsWith(
      () => producer.trySend(bad as unknown as Uint8Array),
      TypeError,
      name,
      "not a Uint8Array",
    );
  }
  for (const target of [detached, cutOff]) {
    assertThrowsWith(() => consumer.tryReceiveInto(target), TypeError, name, "stays in the ring");
    assertThrowsWith(
      () => consumer.tryReceiveBatchInto(target, new Uint32Array(4)),
      TypeError,
      name,
      "stays in the ring",
    );
  }
  assertEquals(consumer.tryReceive(), ok);
  // An empty message first: the detached target is still said to be one, naming the ring.
  assert(producer.trySend(new Uint8Array(0)));
  assertThrowsWith(
    () => consumer.tryReceiveBatchInto(detached, new Uint32Array(4)),
    TypeError,
    name,
    "stays in the ring",
  );
  assertEquals(consumer.tryReceive()?.length, 0);
});

Deno.test("a send is sized by the message's real length: a length that lies, or an array that changes as it is read, never writes past its record; anything but a Uint8Array is a TypeError", () => {
  const capacity = 4096;
  const cellAt = ringRegionSize(capacity);
  using region = createMemfdRegion({ size: cellAt + 256 });
  initRing(region, { capacity });
  using writer = openStateCell(region, { writer: true, offset: cellAt });
  writer.write(42);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  for (let i = 0; i < 250; i++) producer.trySend(new Uint8Array(8)); // the head near the end
  while (consumer.tryReceive() !== undefined);
  class Lying extends Uint8Array {
    override get length(): number {
      return 8;
    }
  }
  assert(producer.trySend(new Lying(300).fill(0x41)));
  const own = new Uint8Array(200).fill(0x43);
  Object.defineProperty(own, "length", { value: 8 });
  assert(producer.trySend(own));
  // An array whose element is another object each time it is read: the one measured is sent.
  const small = new Uint8Array(8).fill(0x44);
  const big = new Uint8Array(200).fill(0x42);
  let reads = 0;
  const batch = new Proxy([small], {
    get: (target, key) => key === "0" ? (reads++ < 1 ? small : big) : Reflect.get(target, key),
  });
  assertEquals(producer.trySendBatch(batch as Uint8Array[]), 1);
  assertEquals(consumer.tryReceive(), new Uint8Array(300).fill(0x41));
  assertEquals(consumer.tryReceive(), new Uint8Array(200).fill(0x43));
  assertEquals(consumer.tryReceive(), new Uint8Array(200).fill(0x42));
  assertEquals(consumer.tryReceive(), undefined);
  assertEquals(writer.read(), 42, "a send wrote over the state cell after the ring");
  assertEquals(stateCellHeaderProblem(region, { offset: cellAt }), undefined);
  for (
    const [bad, kind] of [
      ["abc", "a string"],
      [[300, -1, 2.7], "an Array"],
      [new Float64Array(2), "a Float64Array"],
      [Object.setPrototypeOf({}, Uint8Array.prototype), "an Object"],
    ] as const
  ) {
    assertThrowsWith(
      () => producer.trySend(bad as unknown as Uint8Array),
      TypeError,
      region.name,
      `the message is ${kind}, not a Uint8Array`,
    );
  }
  assertEquals(consumer.tryReceive(), undefined);
});

Deno.test("a ring end refuses a spin so long that it would hold up the event loop (its own timeout and signal among it)", () => {
  using region = ringRegion(256);
  assertThrowsWith(
    () => openRingConsumer(region, { spin: 100_001 }),
    RangeError,
    "spin 100001 is not a whole number of checks from 0 to 100000",
  );
  assertThrowsWith(() => openRingProducer(region, { spin: 2 ** 53 - 1 }), RangeError, "spin");
  openRingConsumer(region, { spin: 100_000 }).close();
});

/**
 * A ring of 1792 bytes filled with 32 records of 56 bytes (8 of header, 48 of payload): its two
 * ends and the 48-byte message, closed together.
 */
function fullRing(): {
  producer: RingProducer;
  consumer: RingConsumer;
  message: Uint8Array<ArrayBuffer>;
} & Disposable {
  // Whatever fails on the way, what was opened is closed.
  using stack = new DisposableStack();
  const region = stack.use(ringRegion(32 * 56));
  const producer = stack.use(openRingProducer(region));
  const consumer = stack.use(openRingConsumer(region));
  const message = new Uint8Array(48);
  while (producer.trySend(message));
  const owned = stack.move();
  return { producer, consumer, message, [Symbol.dispose]: () => owned.dispose() };
}

Deno.test("null for the options (from JavaScript) is no options, for every call that takes them; where options are required, a TypeError says so", async () => {
  // Each destructured null: "Cannot destructure property 'timeout' of 'options' as it is null",
  // naming neither the call nor the ring.
  const none = null as unknown as Record<string, never>;
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const one = (): Uint8Array => new Uint8Array([1]);
  await producer.send(one(), none);
  await producer.sendBatch([one()], none);
  await producer.sendWith(1, () => 1, none);
  (await producer.reserve(1, none)).commit();
  assertEquals((await consumer.receive(none))?.length, 1);
  assertEquals(await consumer.receiveInto(new Uint8Array(8), none), 1);
  assertEquals((await consumer.receiveBatch(1, none)).length, 1);
  (await consumer.read(none))?.release();
  await producer.send(one());
  assertEquals(await consumer.readWith(() => {}, 1, none), 1);
  await producer.send(one());
  assertEquals(await consumer.receiveBatchInto(new Uint8Array(8), new Uint32Array(1), none), 1);
  await producer.send(one());
  producer.close();
  const messages = [];
  for await (const message of consumer.messages(none)) messages.push(message);
  assertEquals(messages.length, 1);
  for (
    const [call, needed] of [["restoreRingHeader", "{ capacity }"], [
      "restoreRingPosition",
      "{ capacity, end }",
    ]]
  ) {
    const restore = call === "restoreRingHeader" ? restoreRingHeader : restoreRingPosition;
    assertThrowsWith(
      () => restore(region, none as never),
      TypeError,
      `${call}() needs its options, ${needed} at least, not null`,
    );
  }
  using cellRegion = createMemfdRegion({ size: 256 });
  using cell = openStateCell(cellRegion, { writer: true });
  cell.write(1);
  const change = cell.waitForChange(none);
  cell.write(2);
  assertEquals(await change, 2);
  const changes = cell.changes(none);
  const next = changes.next();
  cell.write(3);
  assertEquals((await next).value, 3);
  await changes.return();
  assertEquals(stateCellHeaderProblem(cellRegion, none), undefined);
  assertEquals(restoreStateCellHeader(cellRegion, none), undefined);
  cellRegion.sync(none);
  assertEquals(await cellRegion.waitInt32(0, 0x1234, none), "not-equal");
});

Deno.test("messages() started on a closed consumer throws BadResource, as every call after close does; closed while it waits, it ends quietly", async () => {
  using region = ringRegion(256);
  const consumer = openRingConsumer(region);
  const waiting = (async () => {
    for await (const _ of consumer.messages()) fail("nothing was sent");
    return "ended";
  })();
  await delay(20);
  consumer.close();
  assertEquals(await waiting, "ended");
  // It ended quietly at once, as if the stream were over.
  await assertRejectsWith(() => consumer.messages().next(), Deno.errors.BadResource);
});

Deno.test("restoreRingHeader() rewrites only the fixed words, under ends that stay open", () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  assert(producer.trySend(encoder.encode("before")));
  assertEquals(restoreRingHeader(region, { capacity: 256 }), undefined, "a sound header");
  for (
    const [offset, value, words] of [
      [0, 0x58585858, 'found 0x58585858 where the magic "RING" belongs'],
      [4, 7, "layout version is 7"],
      [8, 1 << 20, `claims a capacity of ${1 << 20} bytes; the ring has 256`],
    ] as const
  ) {
    const before = region.read(0, RING_HEADER_SIZE);
    region.storeInt32(offset, value);
    assertThrows(() => openRingConsumer(region), Deno.errors.InvalidData);
    const problem = restoreRingHeader(region, { capacity: 256 });
    assert(problem?.includes(words), `${offset}: ${problem}`);
    assertEquals(region.read(0, RING_HEADER_SIZE), before, "the positions and claims as they were");
  }
  // The ends open all along carry on, the message sent before included.
  assertEquals(text(consumer.tryReceive()), "before");
  assert(producer.trySend(encoder.encode("after")));
  assertEquals(text(consumer.tryReceive()), "after");
  assertThrowsWith(() => restoreRingHeader(region, { capacity: 4096 }), RangeError, region.name);
  assertThrows(() => restoreRingHeader(region, { offset: 8, capacity: 64 }), RangeError);
  // A capacity initRing() could not have made is refused, not written into the header.
  for (const capacity of [0, 12, 255, Number.NaN]) {
    region.storeInt32(0, 0x58585858);
    assertThrowsWith(() => restoreRingHeader(region, { capacity }), RangeError, "multiple of 8");
    assertEquals(region.loadInt32(8), 256, `${capacity}: the header's capacity as it was`);
  }
});

Deno.test("restoreRingPosition() sets a position written over to the other end's, and nothing else", () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  const consumer = openRingConsumer(region);
  assert(producer.trySend(encoder.encode("in flight")));
  consumer.close();
  assertEquals(restoreRingPosition(region, { capacity: 256, end: "consumer" }), undefined);
  const head = region.loadInt32(HEAD);
  for (
    const [tail, words] of [
      [0x58585858, "is not one of the ring's"],
      [12, "is not one of the ring's"], // between two records
      [head + 8, "out of step with the producer's"], // ahead of the producer
      [head - 8, "out of step with the producer's"], // inside the record in flight
    ] as const
  ) {
    region.storeInt32(TAIL, tail);
    // Each made the consumer fail, at its open or at its first look, every time.
    assertThrows(() => {
      using consumer = openRingConsumer(region);
      consumer.tryReceive();
    }, Deno.errors.InvalidData);
    const before = region.read(0, RING_HEADER_SIZE);
    const problem = restoreRingPosition(region, { capacity: 256, end: "consumer" });
    assert(problem?.includes(words), `${tail}: ${problem}`);
    const after = region.read(0, RING_HEADER_SIZE);
    assertEquals(region.loadInt32(TAIL) & POSITION, head, "the producer's position");
    after.set(before.subarray(TAIL, TAIL + 4), TAIL);
    assertEquals(after, before, "only the consumer's position word written");
  }
  // The consumer opens again; what was in flight is dropped; the live producer carries on.
  using reopened = openRingConsumer(region);
  assertEquals(reopened.tryReceive(), undefined);
  assert(producer.trySend(encoder.encode("after")));
  assertEquals(text(reopened.tryReceive()), "after");
  // The producer's end, while its holder lives, is refused; once closed, it is set too.
  assertThrowsWith(
    () => restoreRingPosition(region, { capacity: 256, end: "producer" }),
    Deno.errors.Busy,
    `pid ${Deno.pid} (this process) holds its producer`,
  );
  producer.close();
  region.storeInt32(HEAD, (region.loadInt32(TAIL) + 264) | CLOSED); // more than the capacity on
  assert(restoreRingPosition(region, { capacity: 256, end: "producer" })?.includes("out of step"));
  assertEquals(region.loadInt32(HEAD), region.loadInt32(TAIL) | CLOSED, "the closed mark kept");
  using again = openRingProducer(region);
  assert(again.trySend(encoder.encode("again")));
  assertEquals(text(reopened.tryReceive()), "again");
  // A header written over is for restoreRingHeader() first; a wrong capacity is refused.
  assertThrowsWith(
    () => restoreRingPosition(region, { capacity: 128, end: "consumer" }),
    Deno.errors.InvalidData,
    "capacity of 256",
  );
  region.storeInt32(0, 0x58585858);
  assertThrows(
    () => restoreRingPosition(region, { capacity: 256, end: "consumer" }),
    Deno.errors.InvalidData,
  );
  region.storeInt32(0, 0x474e4952);
});

Deno.test("restoreRingPosition(): the other end's position written over is set to this end's, as its holder never reads it back", () => {
  using region = ringRegion(256);
  using consumer = openRingConsumer(region); // live and idle, its tail its own
  const producer = openRingProducer(region);
  assert(producer.trySend(encoder.encode("read")));
  assertEquals(text(consumer.tryReceive()), "read");
  producer.close();
  const head = region.loadInt32(HEAD) & POSITION;
  region.storeInt32(TAIL, 0x58585858 | CLOSED);
  // Before, the producer's open failed on the consumer's position, however long it lived.
  assertThrows(() => openRingProducer(region).close(), Deno.errors.InvalidData);
  const problem = restoreRingPosition(region, { capacity: 256, end: "producer" });
  assert(problem?.includes("its consumer position 1482184792 is not one of the ring's"), problem);
  assert(problem?.includes("set to the producer's"), problem);
  assertEquals(region.loadInt32(TAIL), head, "the producer's position, its closed mark cleared");
  using again = openRingProducer(region);
  assert(again.trySend(encoder.encode("after")));
  assertEquals(text(consumer.tryReceive()), "after");
  // Both written over: both start again at 0.
  again.close();
  consumer.close();
  region.storeInt32(HEAD, 0x58585858);
  region.storeInt32(TAIL, 0x7ffffff8);
  assert(restoreRingPosition(region, { capacity: 256, end: "consumer" }));
  assertEquals([region.loadInt32(HEAD), region.loadInt32(TAIL)], [0, 0]);
  using fresh = openRingConsumer(region);
  assertEquals(fresh.tryReceive(), undefined, "not ended: the garbage's closed mark is gone");
});

Deno.test("restoreRingPosition(): a closed mark stays on a position only out of step", () => {
  using region = ringRegion(256);
  openRingProducer(region).close();
  openRingConsumer(region).close();
  region.storeInt32(TAIL, 64 | CLOSED); // ahead of the producer's 0, the consumer closed
  assert(restoreRingPosition(region, { capacity: 256, end: "consumer" })?.includes("out of step"));
  assertEquals(region.loadInt32(TAIL), 0 | CLOSED);
  // Usage errors: a capacity initRing() could not make, an end that is neither.
  assertThrowsWith(
    () => restoreRingPosition(region, { capacity: 12, end: "consumer" }),
    RangeError,
    "multiple of 8",
  );
  assertThrowsWith(
    () => restoreRingPosition(region, { capacity: 256, end: "both" as "consumer" }),
    TypeError,
    '"both"',
  );
  // A closed region: BadResource, as for every use after close, and nothing touched.
  region.close();
  assertThrowsWith(
    () => restoreRingPosition(region, { capacity: 256, end: "consumer" }),
    Deno.errors.BadResource,
    "closed",
  );
});

Deno.test("restoreRingPosition(): a live consumer that saw the producer's position may hand out the dropped messages; the next repair mends the producer that then fails", () => {
  using region = ringRegion(256);
  using consumer = openRingConsumer(region);
  const producer = openRingProducer(region);
  for (const message of ["old-1", "old-2", "old-3"]) {
    assert(producer.trySend(encoder.encode(message)));
  }
  assertEquals(text(consumer.tryReceive()), "old-1"); // it has seen the producer's position
  producer.close();
  region.storeInt32(HEAD, 0x58585858);
  assert(restoreRingPosition(region, { capacity: 256, end: "producer" }));
  assertEquals([text(consumer.tryReceive()), text(consumer.tryReceive())], ["old-2", "old-3"]);
  assertThrowsWith(() => openRingProducer(region).close(), Deno.errors.InvalidData, "ahead of");
  assert(restoreRingPosition(region, { capacity: 256, end: "producer" })?.includes("out of step"));
  using again = openRingProducer(region);
  assert(again.trySend(encoder.encode("new")));
  assertEquals(text(consumer.tryReceive()), "new");
});

Deno.test("discardAll() gets a live consumer past a record written over, and wakes a producer waiting for room", async () => {
  using region = ringRegion(48); // three 1-byte messages fill it
  // No liveness looks: only the consumer's wake ends the producer's sleep for room.
  using producer = openRingProducer(region, { livenessCheckMs: Infinity });
  using consumer = openRingConsumer(region);
  for (const message of ["a", "b", "c"]) assert(producer.trySend(encoder.encode(message)));
  assertEquals(text(consumer.tryReceive()), "a");
  assert(producer.trySend(encoder.encode("d")), "into a's space, across the wrap");
  region.storeInt32(RING_HEADER_SIZE + 16, 0x58585858); // b's length
  for (let i = 0; i < 2; i++) {
    // It stays stuck there: no read can tell where the next record starts.
    assertThrowsWith(
      () => consumer.tryReceive(),
      Deno.errors.InvalidData,
      "data offset 16 is corrupted",
    );
  }
  // The producer, its ring full, sleeps until the consumer hands the space back.
  const sent = producer.send(encoder.encode("e")).then(() => "sent");
  await until(() => region.loadInt32(PRODUCER_WAITING) === 1, "the producer asleep");
  assertEquals(consumer.discardAll(), 48, "b's, c's and d's records");
  assertEquals(await within(sent, GUARD_MS), "sent", "the producer woken");
  assertEquals(text(consumer.tryReceive()), "e");
  assertEquals(consumer.tryReceive(), undefined);
  assertEquals(consumer.discardAll(), 0, "nothing waiting: nothing dropped");
  // The producer's close mark survives it.
  assert(producer.trySend(encoder.encode("f")));
  producer.close();
  assertEquals(consumer.discardAll(), 16);
  assertEquals(consumer.tryReceive(), null);
});

Deno.test("discardAll() refuses while a lease is held or a receive waits, and after close", async () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  const consumer = openRingConsumer(region);
  assert(producer.trySend(encoder.encode("held")));
  const lease = consumer.tryRead();
  assert(lease);
  assertThrowsWith(() => consumer.discardAll(), Deno.errors.Busy, "Release the message");
  lease.release();
  const waiting = consumer.receive({ timeout: 10_000 });
  assertThrowsWith(
    () => consumer.discardAll(),
    Deno.errors.Busy,
    "a blocking call of this consumer is waiting",
  );
  assert(producer.trySend(encoder.encode("kept")));
  assertEquals(text(await waiting), "kept", "what the waiting call found was not dropped");
  // A header written over stays InvalidData: the ring must be made again.
  region.storeInt32(0, 0x58585858);
  assertThrowsWith(() => consumer.discardAll(), Deno.errors.InvalidData, "header was overwritten");
  consumer.close();
  assertThrowsWith(() => consumer.discardAll(), Deno.errors.BadResource, "closed");
});

Deno.test("discardAll() refuses a head position the producer could not have written, and moves nothing", () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  assert(producer.trySend(encoder.encode("kept")));
  for (const head of [472, 12]) {
    region.storeInt32(HEAD, head); // past a ring's worth of the tail; between two records
    assertThrowsWith(
      () => consumer.discardAll(),
      Deno.errors.InvalidData,
      head === 12
        ? "its head position 12 is between two records"
        : `its head position ${head} is not one the producer could have written`,
    );
    assertEquals(region.loadInt32(TAIL), 0, "the tail left where it was");
  }
  region.storeInt32(HEAD, 16); // the producer's own, as its next step writes it back
  assertEquals(text(consumer.tryReceive()), "kept");
});

Deno.test("a batch that meets a record written over returns what it read before it; the next call meets the record", () => {
  const takers: [string, (consumer: RingConsumer) => string[]][] = [
    ["tryReceiveBatch", (consumer) => consumer.tryReceiveBatch().map((m) => decoder.decode(m))],
    ["tryReceiveBatchInto", (consumer) => {
      const buffer = new Uint8Array(256);
      const lengths = new Uint32Array(8);
      const count = consumer.tryReceiveBatchInto(buffer, lengths);
      const out: string[] = [];
      for (let i = 0, at = 0; i < count; at += lengths[i++]) {
        out.push(decoder.decode(buffer.subarray(at, at + lengths[i])));
      }
      return out;
    }],
    ["tryReadWith", (consumer) => {
      const out: string[] = [];
      consumer.tryReadWith((data, offset, length) =>
        out.push(decoder.decode(data.subarray(offset, offset + length)))
      );
      return out;
    }],
  ];
  for (const [name, take] of takers) {
    using region = ringRegion(256);
    using producer = openRingProducer(region);
    using consumer = openRingConsumer(region);
    for (const message of ["a", "b", "c"]) assert(producer.trySend(encoder.encode(message)));
    region.storeInt32(RING_HEADER_SIZE + 32, 0x58585858); // c's length
    assertEquals(take(consumer), ["a", "b"], name);
    assertEquals(region.loadInt32(TAIL), 32, `${name}: their space handed back`);
    assertThrowsWith(() => take(consumer), Deno.errors.InvalidData, "data offset 32");
    assertEquals(consumer.discardAll(), 16, name);
  }
});

Deno.test("a blocking receiveBatch() that wakes to a record written over behind its first message returns that message", async () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region, { spin: 0 });
  const receiving = consumer.receiveBatch(10, { timeout: GUARD_MS });
  await until(() => region.loadInt32(CONSUMER_WAITING) === 1, "the consumer asleep");
  assertEquals(
    producer.trySendBatch(["1", "2", "3"].map((m) => encoder.encode(m))),
    3,
  );
  region.storeInt32(RING_HEADER_SIZE + 16, 0x58585858); // the second one's length
  assertEquals((await receiving).map(text), ["1"]);
  assertThrowsWith(() => consumer.tryReceive(), Deno.errors.InvalidData, "data offset 16");
});

Deno.test("a consumer closed while asleep leaves the asleep flag of the end's next holder alone", async () => {
  using region = ringRegion(256);
  const options = { livenessCheckMs: Infinity, spin: 0 };
  using producer = openRingProducer(region, options);
  const first = openRingConsumer(region, options);
  const ended = first.receive();
  await until(() => region.loadInt32(CONSUMER_WAITING) === 1, "the first consumer asleep");
  first.close(); // its sleep ends later, in the event loop
  using second = openRingConsumer(region, options);
  const received = second.receive();
  await assertRejectsWith(() => ended, Deno.errors.BadResource);
  assertEquals(region.loadInt32(CONSUMER_WAITING), 1, "the second one's flag");
  assert(producer.trySend(encoder.encode("woken")));
  assertEquals(text(await within(received, GUARD_MS)), "woken");
});

Deno.test("tryReadWith(): an InvalidData the callback throws is the caller's at once, after messages read", () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  for (const message of ["a", "b"]) assert(producer.trySend(encoder.encode(message)));
  let calls = 0;
  assertThrowsWith(
    () =>
      consumer.tryReadWith(() => {
        if (++calls === 2) throw new Deno.errors.InvalidData("the caller's own");
      }),
    Deno.errors.InvalidData,
    "the caller's own",
  );
  assertEquals(region.loadInt32(TAIL), 16, "a's space handed back, b still there");
});

Deno.test("a blocking receive that ends in InvalidData leaves no flag that has the producer wake it for nothing", async () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const receiving = consumer.receive({ timeout: GUARD_MS });
  await until(() => region.loadInt32(CONSUMER_WAITING) === 1, "the consumer asleep");
  region.storeInt32(RING_HEADER_SIZE, 0x58585858); // the record about to be sent: its length
  // The producer writes a whole record over it; the stray write comes again after the send.
  assert(producer.trySend(encoder.encode("x")));
  region.storeInt32(RING_HEADER_SIZE, 0x58585858);
  await assertRejectsWith(() => receiving, Deno.errors.InvalidData, "data offset 0");
  assertEquals(region.loadInt32(CONSUMER_WAITING), 0);
});

Deno.test("a long batch hands space back every eighth of the ring, so the producer writes meanwhile", () => {
  // An eighth of the ring is 224 bytes, 4 records.
  using ring = fullRing();
  const { producer, consumer, message } = ring;
  const roomAfter: number[] = [];
  let taken = 0;
  const count = consumer.tryReadWith(() => {
    taken++;
    if (producer.trySend(message)) roomAfter.push(taken);
  }, 32);
  assertEquals(count, 32);
  // The producer finds room once the 4th record's space is back, while the 5th is read; and
  // again every 4 records after, not only when the batch is over.
  assertEquals(roomAfter.slice(0, 4), [5, 6, 7, 8]);
  assert(roomAfter.length >= 24, `the producer wrote ${roomAfter.length} times meanwhile`);
});

Deno.test("a padding left unpublished by a cancelled reservation or a refused send reaches the consumer before the producer sleeps", async () => {
  for (const how of ["cancel", "refused"] as const) {
    using region = ringRegion(256);
    using producer = openRingProducer(region, { spin: 0, livenessCheckMs: Infinity });
    using consumer = openRingConsumer(region, { spin: 0, livenessCheckMs: Infinity });
    for (let i = 0; i < 3; i++) producer.trySend(new Uint8Array(56)); // the head at 192
    while (consumer.tryReceive() instanceof Uint8Array);
    if (how === "cancel") {
      // 112 bytes do not fit before the end: a padding to it, then the reservation at the start.
      producer.tryReserve(104)?.cancel();
    } else {
      // Full, the head again at 192: too close to the end for 112 bytes.
      for (let i = 0; i < 4; i++) assert(producer.trySend(new Uint8Array(56)));
      const buffer = new ArrayBuffer(104, { maxByteLength: 256 });
      const sending = producer.send(new Uint8Array(buffer), { timeout: 10_000 });
      await delay(20); // asleep for room
      buffer.resize(120);
      // Room comes: the send pads to the end, finds the message resized, and is refused.
      while (consumer.tryReceive() instanceof Uint8Array);
      await assertRejectsWith(() => sending, RangeError, "when room came");
    }
    const receiving = consumer.receive({ timeout: 10_000 });
    await delay(20); // the consumer asleep on a head that did not move
    // Room for it needs the padding skipped: both ends slept until their timeouts.
    await producer.send(new Uint8Array(248), { timeout: 10_000 });
    assertEquals((await receiving)?.length, 248, how);
  }
});

Deno.test("a batch read takes at most a ring's worth, though a producer keeps up with it", () => {
  using ring = fullRing();
  const { producer, consumer, message } = ring;
  // Each message read sends another: without a bound the call never returned.
  let calls = 0;
  const count = consumer.tryReadWith(() => {
    if (++calls > 10_000) throw new Error("the batch read did not end");
    producer.trySend(message);
  });
  assertEquals(count, 32);
  // What it sent meanwhile: every send found room but the first four (space goes back every
  // eighth of the ring). Left for the next call, which again ends.
  assertEquals(consumer.tryReceiveBatch().length, 28);
  assertEquals(consumer.tryReceiveBatch().length, 0);
});

testWith(
  ["read"],
  "a long batch wakes a sleeping consumer once an eighth of the ring is sent, not at its end",
  async () => {
    const record = 56;
    using region = ringRegion(32 * record);
    using producer = openRingProducer(region);
    const done = new SharedArrayBuffer(4);
    const worker = new Worker(new URL("./fixtures/ring_reader_worker.ts", import.meta.url), {
      type: "module",
    });
    try {
      const opened = new Promise((resolve) => (worker.onmessage = resolve));
      worker.postMessage({ name: region.name, done });
      await opened;
      await until(() => region.loadInt32(CONSUMER_WAITING) === 1, "the consumer asleep");
      const flag = new Int32Array(done);
      const message = new Uint8Array(record - 8);
      const messages = Array.from({ length: 32 }, () => message);
      // The batch checks every length first, then sends the messages one by one: when it takes
      // the 9th, it waits (up to 10 s) for the consumer to have read, which the consumer can
      // only do if the batch woke it before its end.
      let looks = 0;
      let woken: string | undefined;
      Object.defineProperty(messages, 8, {
        get: () => {
          if (++looks === 2) woken = Atomics.wait(flag, 0, 0, 10_000);
          return message;
        },
      });
      assertEquals(producer.trySendBatch(messages), 32);
      assert(woken !== "timed-out", "the consumer read nothing before the batch ended");
    } finally {
      worker.terminate();
    }
  },
);

Deno.test("trySendWith writes in place; the producer notices a closed consumer when full", () => {
  using region = ringRegion(64);
  using producer = openRingProducer(region);
  const consumer = openRingConsumer(region);
  assertEquals(
    producer.trySendWith(8, (data, offset) => {
      data.set(encoder.encode("in place"), offset);
      return 8;
    }),
    true,
  );
  assertEquals(text(consumer.tryReceive()), "in place");
  consumer.close();
  // With the consumer's position cached, the producer fills what is free, then learns it.
  let sent = 0;
  assertThrowsWith(
    () => {
      for (;;) if (producer.trySend(new Uint8Array(8))) sent++;
    },
    Deno.errors.BrokenPipe,
    "consumer closed",
  );
  assert(sent <= 4, `sent ${sent} after the close`);
});

Deno.test("readWith and sendWith sleep until they can read or write in place", async () => {
  using region = ringRegion(32);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const seen: string[] = [];
  const collect = (data: Uint8Array, offset: number, length: number): void => {
    seen.push(decoder.decode(data.subarray(offset, offset + length)));
  };
  const reading = consumer.readWith(collect, Infinity, { timeout: 30_000 });
  await delay(20);
  assertEquals(seen, [], "read before anything was sent");
  producer.trySend(encoder.encode("first"));
  assertEquals(await reading, 1);
  assertEquals(seen, ["first"]);
  await producer.send(new Uint8Array(8)); // 16 bytes, up to the end
  await producer.send(new Uint8Array(8)); // 16 more from the start: full
  assertEquals(producer.free, 0);
  let wrote = false;
  const sending = producer.sendWith(4, (data, offset) => {
    data.set(encoder.encode("next"), offset);
    wrote = true;
    return 4;
  }, { timeout: 30_000 });
  await delay(20);
  assertEquals(wrote, false, "wrote into a full ring");
  assertEquals(await consumer.readWith(() => {}, 1), 1);
  await sending;
  assertEquals(await consumer.readWith(() => {}, 1), 1);
  assertEquals(await consumer.readWith(collect), 1);
  assertEquals(seen, ["first", "next"]);
  producer.close();
  assertEquals(await consumer.readWith(collect), null);
});

Deno.test("receiveBatchInto sleeps until messages come, then takes what fits", async () => {
  using region = ringRegion(128);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const buffer = new Uint8Array(12);
  const lengths = new Uint32Array(4);
  const receiving = consumer.receiveBatchInto(buffer, lengths, { timeout: 30_000 });
  await delay(20);
  producer.trySendBatch(["alpha", "beta", "gamma"].map((word) => encoder.encode(word)));
  assertEquals(await receiving, 2, "took more than fits in 12 bytes");
  assertEquals([...lengths.subarray(0, 2)], [5, 4]);
  assertEquals(decoder.decode(buffer.subarray(0, 9)), "alphabeta");
  assertEquals(await consumer.receiveBatchInto(buffer, lengths), 1);
  assertEquals(decoder.decode(buffer.subarray(0, lengths[0])), "gamma");
  await assertRejects(
    () => consumer.receiveBatchInto(buffer, lengths, { timeout: 20 }),
    Deno.errors.TimedOut,
  );
  await assertRejectsWith(
    () => consumer.receiveBatchInto(buffer, new Uint32Array(0)),
    RangeError,
    "lengths",
  );
  producer.trySend(new Uint8Array(13));
  await assertRejectsWith(() => consumer.receiveBatchInto(buffer, lengths), RangeError, "13");
  assertEquals(consumer.tryReceive()?.length, 13, "the message too large was lost");
  producer.close();
  assertEquals(await consumer.receiveBatchInto(buffer, lengths), null);
});

Deno.test("a callback that uses its own ring end gets Busy, and the stream stays whole", async () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const busy: string[] = [];
  const nested: Promise<unknown>[] = [];
  await producer.sendWith(1, (data, offset) => {
    try {
      producer.trySend(new Uint8Array([9]));
    } catch (error) {
      if (error instanceof Deno.errors.Busy) busy.push("trySend");
    }
    data[offset] = 1;
    return 1;
  });
  producer.trySend(new Uint8Array([2]));
  const seen: number[] = [];
  const count = await consumer.readWith((data, offset) => {
    nested.push(consumer.receive());
    try {
      consumer.tryReceive();
    } catch (error) {
      if (error instanceof Deno.errors.Busy) busy.push("tryReceive");
    }
    seen.push(data[offset]);
  });
  assertEquals(nested.length, 2);
  for (const call of nested) await assertRejects(() => call, Deno.errors.Busy);
  assertEquals(busy, ["trySend", "tryReceive", "tryReceive"]);
  assertEquals([count, seen], [2, [1, 2]], "a message was lost, repeated or reordered");
  assertEquals(consumer.tryReceive(), undefined);
  await assertRejectsWith(() => consumer.readWith(() => {}, 0), RangeError, "from 1 up");
});

Deno.test("readWith and sendWith time out, abort, and reject with BadResource on close", async () => {
  using region = ringRegion(32);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  await assertRejects(() => consumer.readWith(() => {}, 1, { timeout: 20 }), Deno.errors.TimedOut);
  await assertRejectsWith(() => producer.sendWith(9, () => 10), RangeError, "10 bytes");
  assertEquals(producer.free, 32, "a refused write left something behind");
  await producer.send(new Uint8Array(24));
  await assertRejects(() => producer.sendWith(8, () => 8, { timeout: 20 }), Deno.errors.TimedOut);
  const write = (_data: Uint8Array, _offset: number): number => 8;
  await assertRejectsWith(
    () => producer.sendWith(8, write, { signal: AbortSignal.abort(new Error("stop")) }),
    Error,
    "stop",
  );
  const reading = consumer.readWith(() => {}, 1); // takes the 24 bytes at once
  assertEquals(await reading, 1);
  const waiting = consumer.readWith(() => {});
  await delay(20);
  region.close();
  await assertRejects(() => waiting, Deno.errors.BadResource);
});

Deno.test("opening and making a ring: an offset with no room past it, a string where a number goes, null options and a refused producer each say what they are", () => {
  using region = createMemfdRegion({ size: 8192 });
  // It said "Ring capacity -192 must be a multiple of 8".
  assertThrowsWith(
    () => initRing(region, { offset: 8192 }),
    RangeError,
    "the region has 8192 bytes, too few for a ring at offset 8192",
  );
  assertThrowsWith(() => initRing(region, { offset: "64" as never }), RangeError, 'offset "64"');
  assertThrowsWith(
    () => initRing(region, { capacity: "64" as never }),
    RangeError,
    'capacity "64"',
  );
  assertThrowsWith(() => openRingProducer(null as never), TypeError, "Not a region");
  assertEquals(initRing(region, null as never), 8192 - RING_HEADER_SIZE);
  assertThrowsWith(
    () => openRingProducer(region, { spin: "10" as never }),
    RangeError,
    'spin "10" is not',
  );
  openRingConsumer(region, null as never).close();
  // Refused as an open, not as a send: it said "Cannot send into".
  assertThrowsWith(
    () => openRingProducer(region),
    Deno.errors.BrokenPipe,
    `Cannot open the ring producer in ${JSON.stringify(region.name)}: the consumer closed it`,
  );
});

Deno.test("bad arguments name the ring and say what is wrong; once closed, every call is BadResource first", async () => {
  using region = ringRegion(64);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const named = `the ring in ${JSON.stringify(region.name)}`;
  const cases: [() => unknown, ErrorConstructor, string][] = [
    // Each was "a message of -1 bytes does not fit", or a TypeError naming nothing.
    [() => producer.tryReserve(-1), RangeError, "a length of -1 bytes is not a whole number"],
    [() => producer.tryReserve(0.5), RangeError, "a length of 0.5 bytes"],
    [() => producer.trySendWith(NaN, () => 0), RangeError, "a length of NaN bytes"],
    [() => producer.trySend(undefined as unknown as Uint8Array), TypeError, "is undefined, not a"],
    [() => producer.trySendBatch([new Uint8Array(1)], -1), RangeError, "start -1 is not an index"],
    [() => producer.trySendBatch([new Uint8Array(1)], NaN), RangeError, "start NaN"],
    [() => producer.trySendBatch([null as unknown as Uint8Array]), TypeError, "is null, not a"],
    [() => producer.trySendBatch(undefined as unknown as Uint8Array[]), TypeError, "the batch is"],
    [() => producer.trySend(new Uint8Array(100)), RangeError, "100 bytes does not fit"],
    [() => producer.trySendWith(4, () => 9), RangeError, "the writer reported 9 bytes"],
    [
      () => consumer.tryReceiveBatchInto(new Uint8Array(8), new Uint32Array(0)),
      RangeError,
      "lengths has no room",
    ],
    // Strings are quoted: 'a length of 8 bytes is not a whole number' said of "8".
    [() => producer.tryReserve("8" as unknown as number), RangeError, 'a length of "8" bytes'],
    [() => producer.trySendWith(4, (() => "4") as never), RangeError, 'reported "4" bytes'],
    [() => producer.trySendWith(4, undefined as never), TypeError, "the writer is undefined"],
    // The consumer's counts and targets: each took messages, or none, or wrote lengths that
    // wrap at 256, or widened each byte into an element of its own.
    [() => consumer.tryReceiveBatch(-1), RangeError, "max -1 is not a whole number of messages"],
    [() => consumer.tryReceiveBatch(1.5), RangeError, "max 1.5 is not"],
    [() => consumer.tryReceiveBatch(NaN), RangeError, "max NaN is not"],
    [() => consumer.tryReceiveBatch("3" as unknown as number), TypeError, 'max "3" is not'],
    [() => consumer.tryReadWith(() => {}, -1), RangeError, "max -1 is not"],
    [() => consumer.tryReadWith(undefined as never), TypeError, "the reader is undefined"],
    [
      () => consumer.tryReceiveBatchInto(new Uint8Array(8), new Uint8Array(4) as never),
      TypeError,
      "lengths is a Uint8Array, not a Uint32Array",
    ],
    [
      () => consumer.tryReceiveBatchInto(null as never, new Uint32Array(4)),
      TypeError,
      "the buffer to copy into is null, not a Uint8Array",
    ],
    [
      () => consumer.tryReceiveInto(new Uint16Array(64) as never),
      TypeError,
      "the buffer to copy into is a Uint16Array, not a Uint8Array",
    ],
  ];
  for (const [call, ErrorType, why] of cases) assertThrowsWith(call, ErrorType, named, why);
  await assertRejectsWith(
    () => consumer.receiveBatch(0),
    RangeError,
    named,
    "max 0 is not a whole number of messages from 1 up, or Infinity",
  );
  await assertRejectsWith(() => consumer.receiveBatch(true as never), TypeError, "max true");
  await assertRejectsWith(() => consumer.readWith(() => {}, 0), RangeError, named, "max 0");
  const reservation = producer.tryReserve(4);
  reservation?.commit();
  assertThrowsWith(() => reservation?.commit(), Deno.errors.BadResource, named, "already");
  const lease = consumer.tryRead();
  lease?.release();
  assertThrowsWith(() => lease?.release(), Deno.errors.BadResource, named, "released already");
  producer.close();
  consumer.close();
  // Closed comes first: these were RangeErrors about their arguments.
  for (const [call] of cases) assertThrowsWith(call, Deno.errors.BadResource, "closed");
  for (const end of [producer, consumer]) {
    assertThrowsWith(() => end.capacity, Deno.errors.BadResource, "closed");
    assertThrowsWith(() => end.maxMessageSize, Deno.errors.BadResource, "closed");
  }
  await assertRejectsWith(() => consumer.receiveBatch(0), Deno.errors.BadResource, "closed");
});

// --- peers that are not trusted --------------------------------------------------------------

testWith(
  [...NEEDS.files, requires("sh")],
  "echo > FILE under a file ring (its first page kept, zeroed) is InvalidData at both ends, never empty messages",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/ring.dat`;
      using region = openFileRegion(path, { create: true, size: ringRegionSize(1024) });
      initRing(region);
      using producer = openRingProducer(region);
      using other = openFileRegion(path);
      using consumer = openRingConsumer(other);
      for (let i = 1; i <= 3; i++) producer.trySend(new Uint8Array(10).fill(i));
      assertEquals(consumer.tryReceive()?.length, 10); // the consumer knows two more are there
      const echo = await new Deno.Command("sh", { args: ["-c", 'echo > "$1"', "sh", path] })
        .output();
      assert(echo.success);
      assertEquals([region.lostPages, other.lostPages], [0, 0], "no page was lost");
      // It handed out nine empty messages nobody sent, then one sent after the echo.
      assertThrowsWith(() => consumer.tryReceive(), Deno.errors.InvalidData, path, "overwritten");
      // The producer finds out at its next send: its head word no longer holds what it put.
      assertThrowsWith(
        () => producer.trySend(new Uint8Array(8)),
        Deno.errors.InvalidData,
        path,
        "overwritten",
      );
    });
  },
);

Deno.test("initRing() over a ring whose ends are held is Busy, naming the holder; once they close it starts afresh", () => {
  using region = ringRegion(256);
  const producer = openRingProducer(region);
  const consumer = openRingConsumer(region);
  producer.trySend(new Uint8Array([1]));
  // It wiped both claims: a second producer then attached beside the first, and what the first
  // sent was lost.
  assertThrowsWith(
    () => initRing(region),
    Deno.errors.Busy,
    `pid ${Deno.pid} (this process) holds its producer`,
  );
  producer.close();
  assertThrowsWith(() => initRing(region), Deno.errors.Busy, "holds its consumer");
  assertEquals(consumer.tryReceive()?.length, 1, "what was sent is still there");
  consumer.close();
  assertEquals(initRing(region), 256);
  using fresh = openRingConsumer(region);
  assertEquals(fresh.tryReceive(), undefined);
});

Deno.test("a position another process set back is InvalidData at the next liveness check, not two ends asleep for good", async () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region, { livenessCheckMs: 50 });
  using theirs = openMemfdRegion(region.name);
  using consumer = openRingConsumer(theirs, { livenessCheckMs: 50 });
  for (let i = 0; i < 15; i++) producer.trySend(new Uint8Array(8)); // 240 of 256 bytes
  while (consumer.tryReceive() !== undefined);
  const receiving = consumer.receive({ timeout: 10_000 });
  await delay(20); // asleep on the empty ring
  // Another process: the tail a capacity behind the head, so the ring looks full to the
  // producer and still empty to the consumer. Both slept, each waiting for the other to move.
  const head = region.loadInt32(HEAD);
  region.storeInt32(TAIL, (head + 256) % 512);
  const sending = producer.send(new Uint8Array(16), { timeout: 10_000 });
  await assertRejectsWith(() => receiving, Deno.errors.InvalidData, "tail position word holds");
  consumer.close(); // wakes the producer, which finds the consumer gone
  await assertRejectsWith(() => sending, Deno.errors.BrokenPipe);
});

// --- across processes ------------------------------------------------------------------------

async function stress(zeroCopy: boolean): Promise<void> {
  const count = 1_000_000;
  const seed = zeroCopy ? 2 : 1;
  using region = ringRegion(64 * 1024);
  using consumer = openRingConsumer(region, { livenessCheckMs: 100 });
  await using producer = spawnDeno(PEER, [
    zeroCopy ? "produce-zerocopy" : "produce-copy",
    region.name,
    String(count),
    String(seed),
  ]);
  assertEquals(await producer.nextLine(), "ready");
  const lengths = stressLengths(seed, consumer.maxMessageSize);
  let sequence = 0;
  for (;;) {
    let lease = consumer.tryRead();
    if (lease === undefined) lease = await consumer.read({ timeout: 60_000 });
    if (lease === null) break;
    const problem = checkStressMessage(lease.bytes, sequence, lengths());
    if (problem !== undefined) fail(problem);
    lease.release();
    sequence++;
  }
  assertEquals(sequence, count, "messages were lost or duplicated");
  assertEquals(await producer.nextLine(), "sent");
  const status = await producer.status();
  assertEquals(status.code, 0, status.stderr);
}

/**
 * A small ring between two processes that never spin and never check liveness, so every sleep,
 * on a full ring or an empty one, ends only by the other side's wake-up (or a timeout here);
 * another process spins on a core meanwhile, so each side is preempted at every point.
 */
testWith(
  NEEDS.children,
  "no wake-up is lost between processes under load, on a full ring or an empty one",
  async () => {
    const count = loadRounds(200_000);
    const seed = 3;
    using region = ringRegion(4096);
    using consumer = openRingConsumer(region, STRICT);
    await using _spinner = spawnProgram("sh", ["-c", "while :; do :; done"]);
    await using producer = spawnDeno(PEER, ["produce-strict", region.name, String(count), "3"]);
    assertEquals(await producer.nextLine(), "ready");
    const lengths = stressLengths(seed, consumer.maxMessageSize);
    const buffer = new Uint8Array(consumer.maxMessageSize);
    for (let sequence = 0;; sequence++) {
      let length = consumer.tryReceiveInto(buffer);
      try {
        if (length === undefined) length = await consumer.receiveInto(buffer, { timeout: 10_000 });
      } catch (error) {
        if (!(error instanceof Deno.errors.TimedOut)) throw error;
        fail(`No message ${sequence} in 10 s: a lost wake-up\n${producer.transcript}`);
      }
      if (length === null) {
        assertEquals(sequence, count, "messages were lost or duplicated");
        break;
      }
      const problem = checkStressMessage(buffer.subarray(0, length), sequence, lengths());
      if (problem !== undefined) fail(problem);
    }
    assertEquals(await producer.nextLine(), "sent");
    const status = await producer.status();
    assertEquals(status.code, 0, status.stderr);
  },
);

/**
 * Round trips through two rings between two processes that never spin and never check liveness:
 * each message waits for its echo, so no later message's wake-up can make up for a lost one.
 */
testWith(
  NEEDS.children,
  "no wake-up is lost between processes under load, one message at a time each way",
  async () => {
    const rounds = loadRounds(10_000);
    using there = ringRegion(4096);
    using back = ringRegion(4096);
    using producer = openRingProducer(there, STRICT);
    using consumer = openRingConsumer(back, STRICT);
    await using _spinner = spawnProgram("sh", ["-c", "while :; do :; done"]);
    await using peer = spawnDeno(PEER, ["echo", there.name, back.name]);
    assertEquals(await peer.nextLine(), "ready");
    const message = new Uint8Array(8);
    const view = new DataView(message.buffer);
    const echoed = new Uint8Array(8);
    for (let round = 1; round <= rounds; round++) {
      view.setFloat64(0, round);
      await producer.send(message, { timeout: 10_000 });
      try {
        assertEquals(await consumer.receiveInto(echoed, { timeout: 10_000 }), 8);
      } catch (error) {
        if (!(error instanceof Deno.errors.TimedOut)) throw error;
        fail(`No echo of round ${round} in 10 s: a lost wake-up\n${peer.transcript}`);
      }
      assertEquals(new DataView(echoed.buffer).getFloat64(0), round);
    }
    producer.close();
    const status = await peer.status();
    assertEquals(status.code, 0, peer.transcript);
  },
);

/**
 * A batch whose message fits only at the ring's start, behind a head near the end, while the
 * consumer sleeps in another process: the batch publishes a padding record to the end and sleeps
 * for room, which only the consumer skipping that padding makes. Neither side spins or checks
 * liveness, so a padding published without a wake-up leaves both asleep for good.
 */
testWith(
  NEEDS.children,
  "a batch that pads to the ring's end before it sleeps for room wakes the consumer asleep in another process",
  async () => {
    const capacity = 4096;
    using there = ringRegion(capacity);
    using back = ringRegion(capacity);
    using producer = openRingProducer(there, STRICT);
    using consumer = openRingConsumer(back, STRICT);
    await using peer = spawnDeno(PEER, ["echo", there.name, back.name]);
    assertEquals(await peer.nextLine(), "ready");
    // The first leaves the head 64 bytes before the end (a padding too short for a batch's
    // wake-up every eighth of the ring); the second then fits only at the start.
    const first = new Uint8Array(capacity - 72).fill(1);
    const second = new Uint8Array(capacity - 40).fill(2);
    const echoed = new Uint8Array(capacity);
    for (let round = 1; round <= 5; round++) {
      for (const message of [first, second]) {
        await delay(20); // the consumer asleep on the empty ring
        try {
          await producer.sendBatch([message], { timeout: 10_000 });
          assertEquals(await consumer.receiveInto(echoed, { timeout: 10_000 }), message.length);
        } catch (error) {
          if (!(error instanceof Deno.errors.TimedOut)) throw error;
          fail(`Round ${round}, ${message.length} bytes: a lost wake-up\n${peer.transcript}`);
        }
        assertEquals(echoed[0], message[0]);
      }
    }
    producer.close();
    assertEquals((await peer.status()).code, 0, peer.transcript);
  },
);

testWith(
  NEEDS.children,
  "two processes pass a million messages of random sizes intact (copying API)",
  async () => {
    await stress(false);
  },
);

testWith(
  NEEDS.children,
  "two processes pass a million messages of random sizes intact (zero-copy API)",
  async () => {
    await stress(true);
  },
);

testWith(
  NEEDS.children,
  "a consumer blocked on an empty ring notices that the producer died",
  async () => {
    using region = ringRegion(64);
    using consumer = openRingConsumer(region, { livenessCheckMs: 50 });
    await using producer = spawnDeno(PEER, ["hold-producer", region.name]);
    assertEquals(await producer.nextLine(), "ready");
    const receiving = consumer.receive();
    await delay(100);
    producer.kill("SIGKILL");
    await assertRejectsWith(
      () => receiving,
      Deno.errors.BrokenPipe,
      `producer (pid ${producer.pid}) died`,
    );
    // Known dead now: the next call says so at once, a poll as well as a wait.
    assertThrowsWith(
      () => consumer.tryReceive(),
      Deno.errors.BrokenPipe,
      `producer (pid ${producer.pid}) died`,
    );
    await assertRejectsWith(
      () => consumer.receive({ timeout: 0 }),
      Deno.errors.BrokenPipe,
      `producer (pid ${producer.pid}) died`,
    );
  },
);

testWith(
  NEEDS.children,
  "a producer blocked on a full ring notices that the consumer died",
  async () => {
    using region = ringRegion(64);
    using producer = openRingProducer(region, { livenessCheckMs: 50 });
    await using consumer = spawnDeno(PEER, ["hold-consumer", region.name]);
    assertEquals(await consumer.nextLine(), "ready");
    await producer.send(new Uint8Array(56));
    const sending = producer.send(new Uint8Array(8));
    await delay(100);
    consumer.kill("SIGKILL");
    await assertRejectsWith(
      () => sending,
      Deno.errors.BrokenPipe,
      `consumer (pid ${consumer.pid}) died`,
    );
  },
);

testWith(
  NEEDS.children,
  "an end that only polls (trySend on a full ring, tryReceive and the batch forms on an empty one) learns that its peer died: BrokenPipe, nothing it sent lost",
  async () => {
    /** Polls with `poll` until it throws, yielding now and then; returns what it threw. */
    const pollUntilThrown = async (poll: () => void): Promise<unknown> => {
      const until = performance.now() + GUARD_MS;
      while (performance.now() < until) {
        try {
          for (let i = 0; i < 1000; i++) poll();
        } catch (error) {
          return error;
        }
        await delay(1);
      }
      return new Error("it never threw");
    };
    {
      using region = ringRegion(64);
      using producer = openRingProducer(region, { livenessCheckMs: 20 });
      await using consumer = spawnDeno(PEER, ["hold-consumer", region.name]);
      assertEquals(await consumer.nextLine(), "ready");
      while (producer.trySend(new Uint8Array(8)));
      consumer.kill("SIGKILL");
      await consumer.status();
      const thrown = await pollUntilThrown(() => producer.trySend(new Uint8Array(8)));
      assertIsError(thrown, Deno.errors.BrokenPipe, `consumer (pid ${consumer.pid}) died`);
    }
    const polls: [string, (consumer: RingConsumer) => number][] = [
      ["tryReceive", (consumer) => consumer.tryReceive() ? 1 : 0],
      ["tryReceiveBatch", (consumer) => consumer.tryReceiveBatch().length],
      ["tryReceiveBatchInto", (c) => c.tryReceiveBatchInto(new Uint8Array(64), new Uint32Array(8))],
      ["tryReadWith", (consumer) => consumer.tryReadWith(() => {}) ?? 0],
    ];
    for (const [name, poll] of polls) {
      using region = ringRegion(64);
      using consumer = openRingConsumer(region, { livenessCheckMs: 20 });
      await using producer = spawnDeno(PEER, ["hold-producer", region.name]);
      assertEquals(await producer.nextLine(), "ready");
      producer.kill("SIGKILL");
      await producer.status();
      let taken = 0;
      const thrown = await pollUntilThrown(() => taken += poll(consumer));
      assertIsError(thrown, Deno.errors.BrokenPipe, `producer (pid ${producer.pid}) died`, name);
      assertEquals(taken, 0, name);
    }
  },
);

testWith(
  NEEDS.children,
  "a slow poller learns that its peer died within a few polls, not after hundreds",
  async () => {
    using region = ringRegion(64);
    using consumer = openRingConsumer(region, { livenessCheckMs: 40 });
    await using producer = spawnDeno(PEER, ["hold-producer", region.name]);
    assertEquals(await producer.nextLine(), "ready");
    for (let i = 0; i < 5; i++) {
      assertEquals(consumer.tryReceive(), undefined);
      await delay(30);
    }
    producer.kill("SIGKILL");
    await producer.status();
    // It took 256 polls (a look at the clock every 256th answer), some 8 s at this pace.
    let polls = 0;
    for (; polls < 100; polls++) {
      try {
        consumer.tryReceive();
      } catch (error) {
        assertIsError(error, Deno.errors.BrokenPipe, `producer (pid ${producer.pid}) died`);
        break;
      }
      await delay(30);
    }
    assert(polls < 100, "a poll every 30 ms never learned that the producer died");
  },
);

testWith(
  NEEDS.children,
  "a batch that takes the last messages of a producer found dead at that moment returns them, and the next call says it died",
  async () => {
    using region = ringRegion(256);
    using producer = openRingProducer(region);
    using consumer = openRingConsumer(region, { livenessCheckMs: 20 });
    // The producer's claim made to name a process that has exited: the producer died.
    const gone = spawnProgram("true", []);
    await gone.status();
    const claim = [region.loadInt32(PRODUCER), region.loadInt32(PRODUCER + 4)];
    const die = (): void => {
      region.storeInt32(PRODUCER, gone.pid);
      region.storeInt32(PRODUCER + 4, 0);
    };
    // Found dead once by polling, then alive again (its claim put back): the end looks at the
    // next empty answer, which is the batch's own below, after its messages.
    die();
    const thrown = await (async () => {
      for (const until = performance.now() + GUARD_MS; performance.now() < until;) {
        try {
          consumer.tryReceiveBatch();
        } catch (error) {
          return error;
        }
        await delay(1);
      }
      return new Error("never found dead");
    })();
    assertIsError(thrown, Deno.errors.BrokenPipe, `producer (pid ${gone.pid}) died`);
    region.storeInt32(PRODUCER, claim[0]);
    region.storeInt32(PRODUCER + 4, claim[1]);
    producer.trySendBatch(["a", "b", "c"].map((item) => encoder.encode(item)));
    die();
    assertEquals(consumer.tryReceiveBatch().map(text), ["a", "b", "c"]);
    assertThrowsWith(
      () => consumer.tryReceiveBatch(),
      Deno.errors.BrokenPipe,
      `producer (pid ${gone.pid}) died`,
    );
  },
);

testWith(
  NEEDS.children,
  "a peer's claim zeroed by a third process hides no death: the end asleep names the peer it last saw, on either side",
  async () => {
    for (const side of ["consumer asleep", "producer asleep"] as const) {
      using region = ringRegion(64);
      const asleep = side === "consumer asleep";
      const peerMode = asleep ? "hold-producer" : "hold-consumer";
      await using peer = spawnDeno(PEER, [peerMode, region.name]);
      assertEquals(await peer.nextLine(), "ready");
      // The consumer waits on an empty ring, the producer on a full one.
      using consumer = asleep ? openRingConsumer(region, { livenessCheckMs: 20 }) : undefined;
      using producer = asleep ? undefined : openRingProducer(region, { livenessCheckMs: 20 });
      await producer?.send(new Uint8Array(56));
      // Bounded: without the fix, the wait is one that never ends.
      const waiting: Promise<unknown> = consumer?.receive({ timeout: GUARD_MS }) ??
        (producer as RingProducer).send(new Uint8Array(8), { timeout: GUARD_MS });
      await delay(100); // a few liveness checks: the sleeping end has seen the peer's claim
      const claim = asleep ? PRODUCER : CONSUMER;
      region.storeInt32(claim, 0);
      region.storeInt32(claim + 4, 0);
      peer.kill("SIGKILL");
      await assertRejectsWith(
        () => waiting,
        Deno.errors.BrokenPipe,
        `${asleep ? "producer" : "consumer"} (pid ${peer.pid}) died`,
      );
    }
  },
);

Deno.test("an end asleep whose own claim another process wrote over says so: InvalidData, where both ends could go on as one", async () => {
  using region = ringRegion(64);
  using consumer = openRingConsumer(region, { livenessCheckMs: 20 });
  const receiving = consumer.receive({ timeout: GUARD_MS });
  await delay(50);
  region.storeInt32(CONSUMER, 0);
  region.storeInt32(CONSUMER + 4, 0);
  await assertRejectsWith(
    () => receiving,
    Deno.errors.InvalidData,
    "its consumer role's claim holds nothing where this end's was: another process wrote it",
  );
  // Another process's claim there, as a second consumer that took the role would leave it.
  using producer = openRingProducer(region, { livenessCheckMs: 20 });
  await producer.send(new Uint8Array(56));
  const sending = producer.send(new Uint8Array(8), { timeout: GUARD_MS });
  await delay(50);
  region.storeInt32(PRODUCER, 1);
  await assertRejectsWith(
    () => sending,
    Deno.errors.InvalidData,
    "its producer role's claim holds pid 1 where this end's was",
  );
});

testWith(
  NEEDS.children,
  "a producer that never waits learns at its next send that another process took its role, before it writes: InvalidData, and the other's message reaches the consumer intact",
  async () => {
    using region = ringRegion(256);
    using producer = openRingProducer(region);
    using consumer = openRingConsumer(region);
    assert(producer.trySend(encoder.encode("one")));
    await using thief = spawnDeno(PEER, ["take-producer", region.name]);
    assertEquals(await thief.nextLine(), "ready", thief.transcript);
    // Without the check it wrote "mine" over "theirs" and published it as its own.
    for (let i = 0; i < 2; i++) {
      assertThrowsWith(
        () => producer.trySend(encoder.encode("mine")),
        Deno.errors.InvalidData,
        `producer role's claim holds pid ${thief.pid} where this end's was: another process wrote it`,
      );
    }
    assertEquals(consumer.tryReceiveBatch().map(text), ["one", "theirs"]);
    // Its close leaves the role and the stream to the process that holds them now.
    producer.close();
    assertEquals(consumer.tryReceive(), undefined, "the stream goes on");
    assertEquals(region.loadInt32(PRODUCER), thief.pid);
  },
);

testWith(
  NEEDS.children,
  "a consumer that never waits learns at its next receive that another process took its role: InvalidData, and no message is handed out twice",
  async () => {
    using region = ringRegion(256);
    using producer = openRingProducer(region);
    using consumer = openRingConsumer(region);
    // Messages enough for every read form below to find one waiting.
    const sent = producer.trySendBatch([..."abcdefghij"].map((item) => encoder.encode(item)));
    assertEquals(sent, 10);
    assertEquals(text(consumer.tryReceive()), "a");
    await using thief = spawnDeno(PEER, ["take-consumer", region.name]);
    assertEquals(await thief.nextLine(), "b", thief.transcript);
    // Without the check it handed out "b" again, and set the tail back for both; the zero-copy
    // reads learnt of it only when they gave the space back, after the caller had the message.
    let calls = 0;
    const reads: [string, () => unknown][] = [
      ["tryReceive", () => consumer.tryReceive()],
      ["tryReceiveInto", () => consumer.tryReceiveInto(new Uint8Array(8))],
      ["tryReceiveBatch", () => consumer.tryReceiveBatch()],
      [
        "tryReceiveBatchInto",
        () => consumer.tryReceiveBatchInto(new Uint8Array(64), new Uint32Array(4)),
      ],
      ["tryRead", () => consumer.tryRead()],
      ["tryReadWith", () => consumer.tryReadWith(() => void calls++)],
    ];
    for (const [name, read] of reads) {
      assertThrowsWith(
        read,
        Deno.errors.InvalidData,
        `consumer role's claim holds pid ${thief.pid} where this end's was`,
      );
      assertEquals(calls, 0, name);
    }
    consumer.close();
    assert(producer.trySend(encoder.encode("d")), "the producer was told of no close");
  },
);

Deno.test("an end whose claim was zeroed, by nobody who took the role, still marks the stream closed at close(): the peer asleep is not left waiting", async () => {
  using region = ringRegion(256);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region, { livenessCheckMs: 20 });
  assert(producer.trySend(encoder.encode("last")));
  region.storeInt32(PRODUCER, 0);
  region.storeInt32(PRODUCER + 4, 0);
  assertThrowsWith(
    () => producer.trySend(encoder.encode("x")),
    Deno.errors.InvalidData,
    "holds nothing",
  );
  producer.close();
  assertEquals(text(await consumer.receive({ timeout: GUARD_MS })), "last");
  // Without the mark, the consumer slept on: the producer it last saw (this process) lives.
  assertEquals(await consumer.receive({ timeout: GUARD_MS }), null);
});

Deno.test("an end that only polls learns within livenessCheckMs that its claim was written over, on either side", async () => {
  for (const side of ["consumer", "producer"] as const) {
    using region = ringRegion(64);
    using producer = openRingProducer(region, { livenessCheckMs: 20 });
    using consumer = openRingConsumer(region, { livenessCheckMs: 20 });
    // The consumer polls an empty ring, the producer a full one.
    if (side === "producer") assert(producer.trySend(new Uint8Array(56)));
    const poll = side === "consumer"
      ? () => assertEquals(consumer.tryReceive(), undefined)
      : () => assertEquals(producer.trySend(new Uint8Array(8)), false);
    poll();
    const claim = side === "consumer" ? CONSUMER : PRODUCER;
    region.storeInt32(claim, 0);
    region.storeInt32(claim + 4, 0);
    const thrown = await (async () => {
      for (const until = performance.now() + GUARD_MS; performance.now() < until;) {
        try {
          poll();
        } catch (error) {
          return error;
        }
        await delay(1);
      }
      return new Error(`the ${side} polled for ${GUARD_MS} ms and never noticed`);
    })();
    assertIsError(
      thrown,
      Deno.errors.InvalidData,
      `its ${side} role's claim holds nothing where this end's was`,
    );
    // Said again by every call, not once per liveness period.
    assertThrowsWith(poll, Deno.errors.InvalidData, "claim holds nothing");
  }
});

testWith(NEEDS.children, "deno task demo:ring streams samples and reports them", async () => {
  await using demo = spawnDeno(`${ROOT}consumers/ring_stats.ts`, [
    "--seconds",
    "2",
    "--rate",
    "2000",
  ], {
    permissions: ["--allow-ffi", "--allow-run", "--allow-read"],
  });
  const status = await demo.status();
  assertEquals(status.code, 0, demo.transcript);
  const reports = demo.matching(/samples\/s/).map((line) => {
    const match = /(\d+) samples\/s.*p50 +([\d.]+) us.*lost (\d+)/.exec(line);
    assert(match, line);
    return { samples: Number(match[1]), p50: Number(match[2]), lost: Number(match[3]) };
  });
  assert(reports.length >= 2, demo.transcript);
  assert(reports.some((report) => report.samples > 0), demo.transcript);
  assert(reports.every((report) => report.lost === 0), demo.transcript);
});

testWith(
  NEEDS.children,
  "deno task demo:ring streams samples at --rate 0 too (a ring that is never empty): it still reports and stops on its own timer, and never reports an empty interval",
  async () => {
    // The consumer then always finds a sample waiting: its report timer and --seconds run only
    // because it lets the event loop turn now and then (it once reported every 2 s or so, and
    // its last report was an empty interval). How many reports fit in the run depends on how
    // soon the sensor starts on a busy host: only two are asked for.
    await using demo = spawnDeno(`${ROOT}consumers/ring_stats.ts`, [
      "--seconds",
      "5",
      "--rate",
      "0",
    ], {
      permissions: ["--allow-ffi", "--allow-run", "--allow-read"],
    });
    const status = await demo.status();
    assertEquals(status.code, 0, demo.transcript);
    const reports = demo.matching(/samples\/s/).map((line) =>
      Number(/(\d+) samples\/s/.exec(line)?.[1])
    );
    // The first may be empty, on a host slow to start the sensor; the last is left out when
    // empty.
    assert(reports.length >= 2, demo.transcript);
    assert(reports.slice(1).every((samples) => samples > 0), demo.transcript);
  },
);

testWith(
  NEEDS.children,
  "deno task demo:ring | head -1: the demo stops, exit 0, its sensor stopped, once its output's reader is gone",
  async () => {
    // console.log drops EPIPE: the demo streamed and printed for nobody until Ctrl+C.
    const demo = new Deno.Command(Deno.execPath(), {
      args: [...taskArgs("demo:ring"), "--rate", "500"],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(demo.stderr).text();
    let sensors: number[] = [];
    try {
      const reader = demo.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      while (!text.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) fail(`no line on stdout: ${text}${await stderr}`);
        text += value;
      }
      assertMatch(text, /^Streaming 32-byte samples/);
      // The sensor is started before that line is printed.
      sensors = childrenOf(demo.pid);
      assertEquals(sensors.length, 1, `the demo's children: ${sensors}`);
      await reader.cancel();
      // The next report, about a second later, finds the pipe closed.
      const status = await within(demo.status, GUARD_MS);
      assert(status !== undefined, `the demo still runs ${GUARD_MS} ms after its reader left`);
      assertEquals(status.code, 0, await stderr);
      assertEquals(await stderr, "");
      await until(() => processGone(sensors[0]), "the sensor to end");
    } finally {
      killIfRunning(demo.pid);
      for (const sensor of sensors) killIfRunning(sensor);
      await demo.status;
    }
  },
);

testWith(
  NEEDS.children,
  "the ring demo fails, naming the sensor, when the sensor dies before it reaches the ring",
  async () => {
    await using demo = spawnDeno(`${ROOT}consumers/ring_stats.ts`, ["--rate", "500"], {
      permissions: ["--allow-ffi", "--allow-run", "--allow-read"],
    });
    // A Deno child takes tens of milliseconds to load its script, so one seen this early has
    // not attached to the ring yet.
    let sensor: number | undefined;
    while (sensor === undefined) {
      sensor = childrenOf(demo.pid)[0];
      if (sensor === undefined) await delay(1);
    }
    Deno.kill(sensor, "SIGKILL");
    const status = await demo.status({ timeoutMs: 30_000 });
    assertEquals(status.code, 1, demo.transcript);
    assertMatch(status.stderr, new RegExp(`sensor .*pid ${sensor}\\) was killed by SIGKILL`));
  },
);
