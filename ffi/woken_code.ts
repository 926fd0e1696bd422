/**
 * The pause a wait hub makes between settling waits and making its next call, for both hubs
 * (the poll one and the futex one): each queues its turns as microtasks, one callback made once.
 *
 * @module
 */

/**
 * Microtask turns let pass after waits were settled, before the next call: enough for a loop of
 * awaits (a FIFO's reader, through an async generator, to its caller and back) to handle what
 * woke it and wait again. Made at once, the call's start (a worker thread woken, tens of
 * microseconds here) came before that code, and the wait it made again needed a kick and a
 * second call. A hub ends the pause early once a wait was made again.
 */
export const WOKEN_CODE_TURNS = 16;
