/**
 * Exponential backoff with optional jitter, for the loops that try again after a failure: the
 * launcher restarting a child, the MQTT bridge reconnecting. (`@std/async`'s `retry` retries
 * one call until it succeeds and keeps its backoff to itself; these loops retry forever, and
 * start over once a process or a connection has been healthy for a while.)
 *
 * @module
 */

/** Delays that start at `initialMs` and double after each failure, up to `maxMs`. */
export interface Backoff {
  /** The first delay, in ms. */
  initialMs: number;
  /** The longest delay, in ms. */
  maxMs: number;
  /**
   * Spread each delay by up to this fraction either way (0.2: +-20 %), so that many clients
   * that failed together do not come back in step. Default 0.
   */
  jitter?: number;
}

/**
 * The delay before attempt `failures + 1`, after `failures` failures in a row (0 for the
 * first retry).
 *
 * @example
 * ```ts
 * import { backoffDelay } from "./backoff.ts";
 *
 * console.log(backoffDelay({ initialMs: 100, maxMs: 2_000 }, 3)); // 800
 * ```
 */
export function backoffDelay(backoff: Backoff, failures: number): number {
  const base = Math.min(backoff.maxMs, backoff.initialMs * 2 ** failures);
  const jitter = backoff.jitter ?? 0;
  return Math.round(base * (1 - jitter + 2 * jitter * Math.random()));
}
