/**
 * The pause a wait hub makes between settling waits and making its next call: its length for
 * both hubs, and the poll hub's loop of it (the futex hub queues its turns as callbacks).
 *
 * @module
 */

/**
 * Microtask turns let pass after waits were settled, before the next call: enough for a loop of
 * awaits (a FIFO's reader, through an async generator, to its caller and back) to handle what
 * woke it and wait again.
 */
export const WOKEN_CODE_TURNS = 16;

/**
 * Lets the code that settled waits woke run before the hub's next call: made at once, the call's
 * start (a worker thread woken, tens of microseconds here) came before that code, and the wait it
 * made again needed a kick and a second call. Ends early once `waits()` grew (a wait was made
 * again), after {@link WOKEN_CODE_TURNS} turns at most.
 */
export async function letWokenCodeRun(waits: () => number): Promise<void> {
  const before = waits();
  for (let turn = 0; turn < WOKEN_CODE_TURNS && waits() <= before; turn++) await undefined;
}
