import { assert, assertEquals } from "@std/assert";
import { backoffDelay } from "../app/backoff.ts";

Deno.test("backoffDelay() doubles from the first delay up to the longest", () => {
  const backoff = { initialMs: 100, maxMs: 2_000 };
  assertEquals([0, 1, 2, 3, 4, 5, 9].map((n) => backoffDelay(backoff, n)), [
    100,
    200,
    400,
    800,
    1600,
    2000,
    2000,
  ]);
});

Deno.test("backoffDelay() with jitter stays within its spread", () => {
  const backoff = { initialMs: 500, maxMs: 30_000, jitter: 0.2 };
  for (let i = 0; i < 1000; i++) {
    const delay = backoffDelay(backoff, 2);
    assert(delay >= 1600 && delay <= 2400, `delay ${delay} outside 2000 ms +- 20 %`);
  }
});
