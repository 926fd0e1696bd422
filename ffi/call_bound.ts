/**
 * The longest one kernel call of a wait hub sleeps, for both hubs (the poll one and the futex
 * one).
 *
 * @module
 */

/**
 * How long one call of a hub sleeps at most when no wait of it ends sooner; a live hub makes the
 * call again when it returns with nothing to report, which its waits do not see (a deadline still
 * ends a wait when it comes; a wait with none never ends for it). Without a bound, the call of a
 * Worker terminated while it waited slept for good: nothing of that isolate is left to kick it,
 * and the blocking thread it held (Deno runs nonblocking FFI calls on a pool of them) never
 * ended. With it, that thread ends as its call returns, within this bound.
 *
 * Each return wakes an idle process for nothing: about three voluntary context switches per call
 * in flight (measured: 6.4 a second for a state cell's reader, which holds two calls, with a 1 s
 * bound), as the blocking thread returns, the event loop makes the call again and a blocking
 * thread takes it. The benchmark holds an idle LED (such a reader) under 1 a second: 10 s costs it
 * about 0.64 a second on average, where 5 s would cost 1.3.
 */
export const CALL_BOUND_MS = 10_000;

/** The bound in force: {@link CALL_BOUND_MS}, unless a test set another. */
let bound = CALL_BOUND_MS;

/** @internal The bound the hubs' calls are made with now: {@link CALL_BOUND_MS} outside tests. */
export function callBoundMs(): number {
  return bound;
}

/**
 * @internal For tests: makes the hubs' next calls end after `ms` (a whole number from 1 to
 * {@link CALL_BOUND_MS}), so that a test sees many calls end by their bound; returns the bound it
 * replaced, to be set back.
 */
export function setCallBoundMs(ms: number): number {
  if (!Number.isInteger(ms) || ms < 1 || ms > CALL_BOUND_MS) {
    throw new RangeError(`A call bound must be a whole number of ms from 1 to ${CALL_BOUND_MS}`);
  }
  const before = bound;
  bound = ms;
  return before;
}
