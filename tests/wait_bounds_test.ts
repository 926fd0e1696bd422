/**
 * Waits never spin, hang, or end early, whatever the timeout or the follow period: huge and
 * invalid timeouts, a queued ring call with a timeout beyond `setTimeout`'s range, follow periods
 * that once made the follower's sleep fail at once, a follower stopped in the middle of a long
 * sleep, several waits on one reader while it follows, and an async op that holds a view across
 * close. CPU is read with `process.cpuUsage()`: a spin takes a whole core, a sleep next to none.
 *
 * @module
 */

import { assert, assertEquals, fail } from "@std/assert";
import { cpuUsage } from "node:process";
import { createMemfdRegion, openRingConsumer, openRingProducer, openStateCell } from "../mod.ts";
import { DEFAULT_FOLLOW_GRACE_MS } from "../lib/state_cell.ts";
import { makeFifo } from "../ffi/posix.ts";
import { assertRejectsWith, assertThrowsWith } from "./helpers/assertions.ts";
import { TESTS_DIR } from "./helpers/paths.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { spawnDeno } from "./helpers/spawn.ts";
import { withTempDir } from "./helpers/temp.ts";
import { ringRegion } from "./helpers/rings.ts";
import { delay, until, within } from "./helpers/waiting.ts";
import { settledWorkerThreads, workerThreads } from "./helpers/proc.ts";

/**
 * Fails unless this process sleeps for `ms` while its waits stay pending. A spin takes about as
 * much CPU as wall time in every look; a sleep's only CPU is the runtime's own (a compile, a
 * collection, a Worker starting, many times slower under the aarch64 VM's emulation), which does
 * not last: so up to three looks, and one under a quarter of the wall time passes.
 */
async function assertSleeps(ms: number, what: string): Promise<void> {
  const looks: string[] = [];
  for (let look = 0; look < 3; look++) {
    const before = cpuUsage();
    const started = performance.now();
    await delay(ms);
    const used = cpuUsage(before);
    const cpuMs = (used.user + used.system) / 1000;
    const wallMs = performance.now() - started;
    if (cpuMs < wallMs / 4) return;
    looks.push(`${cpuMs.toFixed(0)} ms of CPU in ${wallMs.toFixed(0)} ms`);
  }
  fail(`${what}: ${looks.join(", ")}`);
}

Deno.test("a timeout of 1e22 ms sleeps: the state cell's wait and the ring's receive do not spin", async () => {
  // Such a timeout overflowed the futex's timespec, which failed at once, in a loop.
  {
    using region = createMemfdRegion({ size: 256 });
    using _writer = openStateCell(region, { writer: true });
    using reader = openStateCell(region);
    // Awaited from the start, so a failure below is not hidden by an unhandled rejection.
    const ended = assertRejectsWith(
      () => reader.waitForChange({ timeout: 1e22 }),
      Deno.errors.BadResource,
      region.name,
    );
    await assertSleeps(500, "waitForChange({ timeout: 1e22 })");
    region.close();
    await ended;
  }
  {
    using region = ringRegion(4096);
    using _producer = openRingProducer(region);
    using consumer = openRingConsumer(region, { livenessCheckMs: Infinity, spin: 0 });
    const ended = assertRejectsWith(
      () => consumer.receive({ timeout: 1e22 }),
      Deno.errors.BadResource,
      region.name,
    );
    await assertSleeps(500, "receive({ timeout: 1e22 })");
    region.close();
    await ended;
  }
});

Deno.test("a NaN or negative timeout is a RangeError naming the cell or ring, not a wait", async () => {
  using cellRegion = createMemfdRegion({ size: 256 });
  using cell = openStateCell(cellRegion);
  using ringArea = ringRegion(4096);
  using consumer = openRingConsumer(ringArea);
  for (const timeout of [NaN, -1]) {
    await assertRejectsWith(() => cell.waitForChange({ timeout }), RangeError, cellRegion.name);
    assertThrowsWith(() => cell.waitForChangeSync({ timeout }), RangeError, cellRegion.name);
    await assertRejectsWith(() => consumer.receive({ timeout }), RangeError, ringArea.name);
  }
});

Deno.test("a timeout that is not a number is a TypeError, not coerced: a string's deadline was text", async () => {
  // performance.now() + "500" is a string, compared as one: the waits ended at once, or hours on.
  using cellRegion = createMemfdRegion({ size: 256 });
  using cell = openStateCell(cellRegion);
  using ringArea = ringRegion(4096);
  using consumer = openRingConsumer(ringArea);
  using producer = openRingProducer(ringArea);
  for (const timeout of ["500", true, 10n] as unknown as number[]) {
    const named = typeof timeout === "string" ? '"500"' : String(timeout);
    const expected = `timeout ${named} is not a number`;
    await assertRejectsWith(() => cell.waitForChange({ timeout }), TypeError, expected);
    assertThrowsWith(() => cell.waitForChangeSync({ timeout }), TypeError, expected);
    await assertRejectsWith(() => consumer.receive({ timeout }), TypeError, expected);
    await assertRejectsWith(
      () => producer.send(new Uint8Array(1), { timeout }),
      TypeError,
      expected,
    );
    await assertRejectsWith(() => cellRegion.waitInt32(128, 0, { timeout }), TypeError, expected);
  }
  for (const option of ["followPeriodMs", "livenessCheckMs"]) {
    assertThrowsWith(
      () => openStateCell(cellRegion, { [option]: "5" }),
      TypeError,
      `${option} "5" is not a number of milliseconds`,
    );
  }
  // No options at all: the wait says it needs a timeout.
  assertThrowsWith(
    () => (cell.waitForChangeSync as unknown as () => number)(),
    TypeError,
    "a synchronous wait needs one",
  );
});

Deno.test("a signal that is not an AbortSignal is a TypeError naming the wait, before it sleeps: not an uncaught error when the sleep ends", async () => {
  // The region's wait started its sleep, then failed on the signal, and the sleep's end threw
  // from the futex hub's callback, uncaught: the process died 10 ms after the call had failed.
  using region = createMemfdRegion({ size: 256 });
  using cell = openStateCell(region);
  for (const signal of [{}, "abort", 1] as unknown as AbortSignal[]) {
    const expected = "is not an AbortSignal";
    await assertRejectsWith(
      () => region.waitInt32(128, 0, { timeout: 10, signal }),
      TypeError,
      region.name,
      expected,
    );
    await assertRejectsWith(
      () => cell.waitForChange({ timeout: 10, signal }),
      TypeError,
      region.name,
      expected,
    );
    await assertRejectsWith(
      () => cell.changes({ signal }).next(),
      TypeError,
      region.name,
      expected,
    );
  }
  await delay(50);
  // null is no signal, as undefined is.
  assertEquals(
    await region.waitInt32(128, 0, { timeout: 1, signal: null as unknown as AbortSignal }),
    "timed-out",
  );
});

Deno.test("a from that is not a 32-bit integer is a RangeError: no value could equal it, so the wait returned at once", async () => {
  using region = createMemfdRegion({ size: 256 });
  using writer = openStateCell(region, { writer: true });
  writer.write(1);
  using cell = openStateCell(region);
  for (const from of ["1", 1.5, 2 ** 31] as unknown as number[]) {
    const expected = `from ${typeof from === "string" ? '"1"' : from} is not a 32-bit integer`;
    await assertRejectsWith(() => cell.waitForChange({ from, timeout: 50 }), RangeError, expected);
    assertThrowsWith(() => cell.waitForChangeSync({ from, timeout: 50 }), RangeError, expected);
  }
});

Deno.test("a queued ring call with a 30-day timeout waits its turn: it does not time out at once", async () => {
  // setTimeout fires at once for a delay beyond 2^31 - 1 ms.
  using region = ringRegion(64);
  using _producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const first = consumer.receive();
  const second = consumer.receive({ timeout: 30 * 24 * 3600 * 1000 });
  let settled = false;
  second.then(() => (settled = true), () => (settled = true));
  await delay(300);
  assertEquals(settled, false, "the second call settled before its turn");
  region.close();
  await assertRejectsWith(() => first, Deno.errors.BadResource, region.name);
  await assertRejectsWith(() => second, Deno.errors.BadResource, region.name);
});

Deno.test("a queued ring call's timeout bounds the whole call: its turn and its wait for data together", async () => {
  // Each wait was given the whole timeout afresh: a turn that came late doubled it.
  using region = ringRegion(64);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  const first = consumer.receive();
  const started = performance.now();
  const second = consumer.receive({ timeout: 1000 });
  await delay(800);
  producer.trySend(new Uint8Array([1])); // the first call takes it; the second's turn comes
  assertEquals(await first, new Uint8Array([1]));
  await assertRejectsWith(() => second, Deno.errors.TimedOut, region.name);
  const took = performance.now() - started;
  assert(took < 1500, `a 1000 ms timeout ended after ${took.toFixed(0)} ms`);
});

Deno.test("a follow period just under a whole second sleeps: the follower does not spin", async () => {
  // 999.9999999 ms once rounded to tv_nsec = 1e9, which nanosleep refuses at once.
  using region = createMemfdRegion({ size: 256 });
  using reader = openStateCell(region, { followPeriodMs: 999.9999999, followGraceMs: 0 });
  const ended = assertRejectsWith(
    () => reader.waitForChange(),
    Deno.errors.BadResource,
    region.name,
  );
  await delay(400); // the follower Worker runs
  await assertSleeps(1000, "followPeriodMs 999.9999999");
  region.close();
  await ended;
});

Deno.test("two waits on one reader while it follows a foreign writer both see its write", async () => {
  using region = createMemfdRegion({ size: 256 });
  const before = await settledWorkerThreads();
  using reader = openStateCell(region, { followGraceMs: 0 });
  const first = reader.waitForChange();
  first.catch(() => {}); // awaited below; a failed assertion before that closes the reader
  // At once, not after the default grace.
  await until(() => workerThreads() === before + 1, "the follower Worker started", {
    timeoutMs: DEFAULT_FOLLOW_GRACE_MS / 2,
  });
  const second = reader.waitForChange();
  await delay(50);
  region.write(0, new TextEncoder().encode("1\n\0")); // as the original C button writes it
  assertEquals(await within(Promise.all([first, second]), 5_000), [1, 1]);
});

testWith(
  NEEDS.children,
  "a follower in the middle of a long sleep stops at close: the process ends at once",
  async () => {
    // It slept in nanosleep, which nothing cuts short: the process lived 8 s past its close.
    await using child = spawnDeno(`${TESTS_DIR}fixtures/long_follow_close.ts`, []);
    assertEquals(await child.nextLine(), "closed");
    const closedAt = performance.now();
    const status = await child.status();
    assertEquals(status.code, 0, child.transcript);
    const lingered = performance.now() - closedAt;
    assert(lingered < 4_000, `the process lived ${lingered.toFixed(0)} ms past close (period 8 s)`);
  },
);

testWith(
  NEEDS.files,
  "an async read into a view still in flight at close lands nowhere shared: not in the next region",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/fifo`;
      makeFifo(path, 0o600);
      using fifo = Deno.openSync(path, { read: true, write: true });
      const first = createMemfdRegion({ size: 1 << 20 });
      const reading = fifo.read(first.view(0, 4096));
      await delay(100);
      first.close();
      // Usually mapped at the addresses just let go.
      using second = createMemfdRegion({ size: 1 << 20 });
      using writer = Deno.openSync(path, { write: true });
      writer.writeSync(new Uint8Array(4096).fill(7));
      await reading.catch(() => {}); // into private pages now, or EFAULT: either way, not shared
      assertEquals(second.read(0, 4096), new Uint8Array(4096));
    });
  },
);
