/**
 * How a child of the launcher says why it failed: a plain failure (1), or a shortage of a system
 * resource that may pass (75, `EX_TEMPFAIL` of `sysexits.h`): too many open files or inotify
 * instances, no memory. The launcher does not count the second as a crash at once (see
 * `RestartPolicy.shortageGraceMs`): a brief shortage, another program's burst of open files,
 * must not end the whole system.
 *
 * @module
 */

import { isShortage } from "../lib/errors.ts";

/** The exit status of a child that failed for a shortage that may pass: `EX_TEMPFAIL`. */
export const EXIT_SHORTAGE = 75;

/**
 * The exit status for a process that ends on `error`: {@link EXIT_SHORTAGE} when it, or an error
 * it was caused by, is a shortage of a system resource (see `isShortage`), 1 otherwise.
 */
export function failureExitStatus(error: unknown): number {
  return isShortage(error) ? EXIT_SHORTAGE : 1;
}
