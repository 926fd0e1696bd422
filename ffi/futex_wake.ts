/**
 * futex(2) wake-ups through the fastest call the process has. A process that wakes now and then
 * (a button pressed by hand) makes the generic call, about 0.7 us slower, and keeps the 3 MiB
 * that compiling libc's fast calls costs (see `library.ts`); one that wakes often compiles them
 * (`countGenericCall()` in `libc.ts`), as does anything that needs them anyway (a synchronous
 * wait), and every wake-up after that is a fast call.
 *
 * @module
 */

import * as C from "./constants.ts";
import { compiledFastLibc, countGenericCall, libc } from "./libc.ts";

/** Wakes up to `count` waiters on the futex word at `address`, in any process; returns how many. */
export function wakeFutex(address: Deno.PointerValue, count: number): number {
  const fast = compiledFastLibc();
  // Two call sites, each only ever calling one function: V8 makes the first a fast call.
  const woken = fast !== undefined
    ? fast.syscall(C.SYS_futex, address, C.FUTEX_WAKE, count, null, null, 0)
    : genericWake(address, count);
  return Number(woken < 0n ? 0n : woken);
}

function genericWake(address: Deno.PointerValue, count: number): bigint {
  countGenericCall();
  return libc().syscall(C.SYS_futex, address, C.FUTEX_WAKE, count, null, null, 0);
}
