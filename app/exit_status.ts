/**
 * How a child of the launcher says why it failed: a plain failure (1), or a shortage of a system
 * resource that may pass (75, `EX_TEMPFAIL` of `sysexits.h`): too many open files or inotify
 * instances, no memory. The launcher does not count the second as a crash at once (see
 * `RestartPolicy.shortageGraceMs`): a brief shortage, another program's burst of open files,
 * must not end the whole system.
 *
 * @module
 */

/** The exit status of a child that failed for a shortage that may pass: `EX_TEMPFAIL`. */
export const EXIT_SHORTAGE = 75;

/** The error codes of a shortage: of fds (this process's, the system's), memory, buffers. */
const SHORTAGES: ReadonlySet<string> = new Set(["EMFILE", "ENFILE", "ENOMEM", "ENOBUFS"]);

/**
 * The exit status for a process that ends on `error`: {@link EXIT_SHORTAGE} when it, or an error
 * it was caused by, is a shortage of a system resource (its `code`, as both `Deno` and our FFI
 * errors carry one, says so), 1 otherwise.
 */
export function failureExitStatus(error: unknown): number {
  for (let at = error, depth = 0; at instanceof Error && depth < 8; depth++) {
    const code = (at as { code?: unknown }).code;
    if (typeof code === "string" && SHORTAGES.has(code)) return EXIT_SHORTAGE;
    at = at.cause;
  }
  return 1;
}
