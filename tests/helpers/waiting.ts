/**
 * Waiting in tests: for a condition, for a promise with a bound, or for a while. Every bound
 * here is a guard against a hang on a loaded machine, never a performance goal (those live in
 * `deno task bench`).
 *
 * @module
 */

import type { ChildProcess } from "./child_process.ts";
import { guardMs } from "./load.ts";

/**
 * The longest a test waits for something the system must do (start, restart, notice, stop): a
 * guard against hangs on a loaded machine, never a performance goal.
 */
export const GUARD_MS: number = guardMs(10_000);

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `condition` every 10 ms until it holds; returns how many ms that took. Throws naming
 * `what` (and showing `child`'s output) once `timeoutMs` (default {@link GUARD_MS}) pass.
 */
export async function until(
  condition: () => boolean,
  what: string,
  options: { child?: ChildProcess; timeoutMs?: number } = {},
): Promise<number> {
  const timeoutMs = options.timeoutMs ?? GUARD_MS;
  const started = performance.now();
  while (!condition()) {
    if (performance.now() - started > timeoutMs) {
      const output = options.child === undefined
        ? ""
        : `; output of pid ${options.child.pid}:\n${options.child.transcript}`;
      throw new Error(`Not ${what} after ${timeoutMs} ms${output}`);
    }
    await delay(10);
  }
  return performance.now() - started;
}

/** `promise`'s value, or `undefined` if it takes longer than `timeoutMs` (the timer is cleared). */
export async function within<T>(promise: Promise<T>, timeoutMs: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), timeoutMs)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Wakes each of `count` waits whose words stay as they were: `wake(i)` returns how many it woke.
 * A futex forgets a wake-up that comes before its wait sleeps, so a wake that woke no one is made
 * again, a few ms later, until it wakes one or `ended(i)` holds (the wait ended with another's return).
 * Throws naming the waits no wake reached after {@link GUARD_MS}.
 */
export async function wakeEach(
  count: number,
  wake: (i: number) => number,
  ended: (i: number) => boolean,
): Promise<void> {
  let pending = Array.from({ length: count }, (_, i) => i);
  const started = performance.now();
  for (;;) {
    pending = pending.filter((i) => !ended(i) && wake(i) === 0);
    if (pending.length === 0) return;
    if (performance.now() - started > GUARD_MS) {
      throw new Error(`Waits ${pending.join(", ")} never slept to be woken in ${GUARD_MS} ms`);
    }
    // Between 1 and 9 ms, not a fixed period, which can fall into step with a waiter's own
    // (a call made again every 5 ms was, in each of 2000 tries, between its two calls).
    await delay(1 + Math.floor(Math.random() * 9));
  }
}
