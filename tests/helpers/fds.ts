/**
 * For fixtures that see what fails when their process has no fd left (EMFILE): run them under a
 * low `ulimit -n` (see `runUnderFdLimit()` in `spawn.ts`).
 *
 * @module
 */

import type { OsError } from "../../ffi/errno.ts";
import { closeFd, createEventFd } from "../../ffi/posix.ts";

/** Takes every fd this process may still open (eventfds, until EMFILE); the ones it took. */
export function takeAllFds(): number[] {
  const held: number[] = [];
  try {
    for (;;) held.push(createEventFd());
  } catch (error) {
    if ((error as OsError).code !== "EMFILE") {
      giveBackFds(held);
      throw error;
    }
  }
  return held;
}

/** Closes the fds {@link takeAllFds} took (all of them, or those `held` still names). */
export function giveBackFds(held: number[]): void {
  for (const fd of held.splice(0)) closeFd(fd);
}
