/**
 * Timeouts, checked and kept the same way everywhere: a timeout is a number of milliseconds from
 * 0 up (`Infinity` and anything from {@link NO_LIMIT_MS} on meaning none), and a timer for any
 * such delay fires when it is due, never early (`setTimeout` fires at once for a delay beyond
 * 2^31 - 1 ms, which made a long wait spin).
 *
 * @module
 */

import { failure, shown } from "./errors.ts";

/** Timeouts from this many ms on (about 35 years) are no limit, and would not fit a timespec. */
export const NO_LIMIT_MS = 2 ** 40;

/** The longest delay `setTimeout` keeps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Throws, naming `action` and `subject`: `TypeError` for a timeout that is not a number, and
 * `RangeError` for one that is not from 0 up.
 */
export function checkTimeout(timeout: number | undefined, action: string, subject: string): void {
  // Not coerced: a string's deadline would be "now" + "500", a string compared as one.
  if (timeout !== undefined && typeof timeout !== "number") {
    throw failure(
      TypeError,
      action,
      subject,
      `timeout ${shown(timeout)} is not a number of milliseconds`,
    );
  }
  if (timeout !== undefined && !(timeout >= 0)) {
    throw failure(
      RangeError,
      action,
      subject,
      `timeout ${timeout} is not a number of milliseconds from 0 up`,
    );
  }
}

/**
 * Throws `TypeError`, naming `action` and `subject`, for a `signal` that is not an `AbortSignal`
 * (`null` is none). Before the wait starts: a region's wait found it out only once its sleep was
 * in flight, and that sleep's end then threw from the futex hub's callback, uncaught, ending the
 * process.
 */
export function checkSignal(signal: unknown, action: string, subject: string): void {
  if (signal !== undefined && signal !== null && !(signal instanceof AbortSignal)) {
    throw failure(TypeError, action, subject, `signal ${shown(signal)} is not an AbortSignal`);
  }
}

/**
 * The shortest period a wait may be asked to look at something while it sleeps (a writer's
 * liveness, a foreign writer's text): the original C reader polled every millisecond, and
 * shorter periods only keep a core busy.
 */
export const MIN_PERIOD_MS = 1;

/**
 * Throws, naming the option: `TypeError` for a period that is not a number, `RangeError` for one
 * that is not from {@link MIN_PERIOD_MS} up (`Infinity` passes: the caller judges whether it may
 * be turned off).
 */
export function checkPeriod(value: number | undefined, option: string): void {
  if (value !== undefined && typeof value !== "number") {
    throw new TypeError(`${option} ${shown(value)} is not a number of milliseconds`);
  }
  if (value !== undefined && !(value >= MIN_PERIOD_MS)) {
    throw new RangeError(
      `${option} ${value} is not a number of milliseconds from ${MIN_PERIOD_MS} up (a shorter period would keep a core busy)`,
    );
  }
}

/**
 * Calls `fn` once `ms` have passed, however long that is (none from {@link NO_LIMIT_MS} on);
 * returns what cancels it.
 */
export function startTimer(ms: number, fn: () => void): () => void {
  if (ms >= NO_LIMIT_MS) return () => {};
  const due = performance.now() + ms;
  let timer: ReturnType<typeof setTimeout>;
  const arm = (delay: number): void => {
    timer = setTimeout(() => {
      const left = due - performance.now();
      if (left > 0) arm(left);
      else fn();
    }, Math.min(delay, MAX_TIMER_MS));
  };
  arm(ms);
  return () => clearTimeout(timer);
}
