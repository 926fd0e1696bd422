/**
 * Errors the library raises itself (the OS's own errors come from `ffi/errno.ts`), all in the
 * same shape: `Cannot <action> "<subject>": <reason>`.
 *
 * @module
 */

import { SHORTAGE_CODES } from "../ffi/errno.ts";

type ErrorClass = new (message: string, options?: ErrorOptions) => Error;

/** Builds an error of class `ErrorType` whose message names the action, the subject and why. */
export function failure(
  ErrorType: ErrorClass,
  action: string,
  subject: string,
  reason: string,
): Error {
  return new ErrorType(`Cannot ${action} ${JSON.stringify(subject)}: ${reason}`);
}

/** How a message shows a value of any type: a string quoted, anything else as `String()` does. */
export function shown(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  try {
    return String(value);
  } catch {
    return `a ${typeof value}`;
  }
}

/** The error an aborted wait rejects with: the signal's reason, as `AbortSignal` users expect. */
export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The operation was aborted", "AbortError");
}

/**
 * Whether `error`, or an error it was caused by, is a shortage of a system resource that may
 * pass (its `code`, as both `Deno`'s errors and the library's OS errors carry one, says so).
 */
export function isShortage(error: unknown): boolean {
  for (let at = error, depth = 0; at instanceof Error && depth < 8; depth++) {
    const code = (at as { code?: unknown }).code;
    if (typeof code === "string" && SHORTAGE_CODES.has(code)) return true;
    at = at.cause;
  }
  return false;
}
