/**
 * Tests of the bare futex floor the benchmark measures the library against (`ffi/raw_futex.ts`):
 * real memfds, real futex calls, a real second mapping of the same memory.
 *
 * @module
 */

import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { deadline } from "@std/async/deadline";
import { futexHub } from "../ffi/futex_hub.ts";
import { createRawMemfd, openRawMemfd } from "../ffi/raw_futex.ts";

Deno.test("createRawMemfd() maps zeroed memory another mapping of the memfd shares", () => {
  using memory = createRawMemfd(4096);
  assertEquals(memory.size, 4096);
  assert(/^\/proc\/\d+\/fd\/\d+$/.test(memory.path), memory.path);
  assertEquals(memory.words.length, 1024);
  assertEquals(memory.words.every((word) => word === 0), true);
  using other = openRawMemfd(memory.path, 4096);
  Atomics.store(memory.words, 7, 42);
  assertEquals(Atomics.load(other.words, 7), 42);
});

Deno.test("RawFutexWord.waitSync() returns at once when the word differs, else times out", () => {
  using memory = createRawMemfd(64);
  const word = memory.word(3);
  Atomics.store(memory.words, 3, 5);
  assertEquals(word.waitSync(4, 1000), "not-equal");
  assertEquals(word.waitSync(5, 1), "timed-out");
  assertEquals(word.load(), 5);
});

// wait() is the raw nonblocking floor; waitv() and waitInHub() the two steps from it to the
// library's asynchronous wait (the futex hub's call, then the hub), as the benchmark measures them.
for (const how of ["wait", "waitv", "waitInHub"] as const) {
  // Kernels before 5.16 have no futex_waitv: waitv() refuses there, and the hub does without it.
  const ignore = how === "waitv" && !futexHub().pooled;
  Deno.test({
    name:
      `RawFutexWord.${how}() is woken through another mapping of the same memfd, and returns at once when the word differs`,
    ignore,
  }, async () => {
    using memory = createRawMemfd(64);
    using other = openRawMemfd(memory.path, 64);
    const waiting = memory.word(0)[how](0);
    const waker = other.word(0);
    // The waiting thread may not be asleep yet: change the word first, then wake until it returns.
    Atomics.store(other.words, 0, 1);
    let returned = false;
    waiting.then(() => returned = true);
    const giveUp = performance.now() + 10_000;
    while (!returned) {
      assert(performance.now() < giveUp, "the wait was not woken in 10 s");
      waker.wake();
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    assertEquals(Atomics.load(memory.words, 0), 1);
    await deadline(memory.word(0)[how](0), 10_000); // the word holds 1, not 0
  });

  Deno.test({
    name: `RawSharedMemory.close() wakes a ${how}() in flight, detaches views and then throws`,
    ignore,
  }, async () => {
    const memory = createRawMemfd(64);
    const words = memory.words;
    const word = memory.word(1);
    const waiting = word[how](0);
    memory.close();
    await deadline(waiting, 10_000); // settles instead of hanging
    assertEquals(words.length, 0);
    assertEquals(words[1], undefined);
    assertThrows(() => memory.words, Deno.errors.BadResource, "closed");
    assertThrows(() => memory.buffer, Deno.errors.BadResource, "closed");
    assertThrows(() => memory.word(0), Deno.errors.BadResource, "closed");
    assertThrows(() => word.wake(), Deno.errors.BadResource, "closed");
    assertThrows(() => word.waitSync(0, 1), Deno.errors.BadResource, "closed");
    await assertRejects(async () => await word[how](0), Deno.errors.BadResource, "closed");
    memory.close(); // safe twice
  });
}

Deno.test({
  name: "RawFutexWord.waitv() refuses a second call while one is in flight on the word",
  ignore: !futexHub().pooled,
}, async () => {
  using memory = createRawMemfd(64);
  const word = memory.word(0);
  Atomics.store(memory.words, 0, 1);
  const first = word.waitv(1);
  // Before, it rewrote the first call's arguments: that one then slept on 0, until a wake.
  assertThrows(() => word.waitv(0), Deno.errors.Busy, "already in flight");
  // Changed before the wake: a call not yet asleep then finds 2, not 1, and returns.
  Atomics.store(memory.words, 0, 2);
  word.wake();
  await deadline(first, 10_000);
  await deadline(word.waitv(0), 10_000); // one at a time again; 2 is not 0
});

Deno.test("openRawMemfd() refuses a path that is not a memfd, or is too small", () => {
  assertThrows(() => openRawMemfd("/tmp/data.dat", 64), TypeError, "/proc/PID/fd/N");
  // stdin is /dev/null, a pipe or a terminal here: never a memfd.
  assertThrows(
    () => openRawMemfd(`/proc/${Deno.pid}/fd/0`, 64),
    Deno.errors.InvalidData,
    "not a memfd",
  );
  using memory = createRawMemfd(64);
  assertThrows(() => openRawMemfd(memory.path, 128), Deno.errors.InvalidData, "64 bytes");
});

Deno.test("RawSharedMemory.word() refuses an index outside the memory", () => {
  using memory = createRawMemfd(64);
  assertThrows(() => memory.word(16), RangeError, "outside");
  assertThrows(() => memory.word(-1), RangeError, "outside");
});
