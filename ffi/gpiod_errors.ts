/**
 * Errors from libgpiod calls: the errno, the chip and the line, and what to do about it.
 *
 * @module
 */

import { type OsError, osError } from "./errno.ts";

type ErrorClass = new (message: string, options?: ErrorOptions) => Error;

/** How a line is named in messages: `line 17 of /dev/gpiochip0`. */
export function lineSubject(chipPath: string, offset: number): string {
  return `line ${offset} of ${chipPath}`;
}

/**
 * The same failure with `advice` appended to its message, as `errorClass` (default: the
 * original's class); keeps `code` and `errno` and has the original as its cause.
 */
export function withAdvice(
  error: OsError,
  advice: string,
  errorClass: ErrorClass = error.constructor as ErrorClass,
): OsError {
  const explained = new errorClass(`${error.message}. ${advice}`, { cause: error }) as OsError;
  explained.code = error.code;
  explained.errno = error.errno;
  return explained;
}

/** The error for a libgpiod call that failed with `errno`, with advice when there is some. */
export function gpioError(
  action: string,
  subject: string,
  errno: number,
  advice?: string,
): OsError {
  const error = osError(action, subject, errno);
  return advice === undefined ? error : withAdvice(error, advice);
}

/** Whether `error` came from a libgpiod call that failed with one of `errnos`. */
export function hasErrno(error: unknown, ...errnos: number[]): error is OsError {
  const errno = (error as Partial<OsError> | null)?.errno;
  return typeof errno === "number" && errnos.includes(errno);
}
