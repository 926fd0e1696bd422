/**
 * Turns `errno` into the matching `Deno.errors` class with a message that names the operation,
 * the path or name involved, and the errno name, for example
 * `Cannot open shared memory "/led": permission denied (EACCES)`.
 *
 * @module
 */

import { libc } from "./libc.ts";

type ErrorClass = new (message: string, options?: ErrorOptions) => Error;

/** errno values are the same on x86-64 and aarch64 (asm-generic). */
const ERRNO: Record<number, [name: string, text: string, errorClass: ErrorClass]> = {
  1: ["EPERM", "operation not permitted", Deno.errors.PermissionDenied],
  2: ["ENOENT", "no such file or directory", Deno.errors.NotFound],
  3: ["ESRCH", "no such process", Deno.errors.NotFound],
  4: ["EINTR", "interrupted system call", Deno.errors.Interrupted],
  5: ["EIO", "input/output error", Error],
  6: ["ENXIO", "no such device or address", Deno.errors.NotFound],
  9: ["EBADF", "bad file descriptor", Deno.errors.BadResource],
  11: ["EAGAIN", "resource temporarily unavailable", Deno.errors.WouldBlock],
  12: ["ENOMEM", "out of memory", RangeError],
  13: ["EACCES", "permission denied", Deno.errors.PermissionDenied],
  14: ["EFAULT", "bad address", Error],
  16: ["EBUSY", "device or resource busy", Deno.errors.Busy],
  17: ["EEXIST", "already exists", Deno.errors.AlreadyExists],
  19: ["ENODEV", "no such device", Deno.errors.NotFound],
  20: ["ENOTDIR", "not a directory", Deno.errors.NotADirectory],
  21: ["EISDIR", "is a directory", Deno.errors.IsADirectory],
  22: ["EINVAL", "invalid argument", TypeError],
  23: ["ENFILE", "too many open files in system", Error],
  24: ["EMFILE", "too many open files", Error],
  26: ["ETXTBSY", "text file busy", Deno.errors.Busy],
  27: ["EFBIG", "file too large", RangeError],
  28: ["ENOSPC", "no space left on device", Error],
  30: ["EROFS", "read-only file system", Deno.errors.PermissionDenied],
  32: ["EPIPE", "broken pipe", Deno.errors.BrokenPipe],
  36: ["ENAMETOOLONG", "file name too long", TypeError],
  38: ["ENOSYS", "function not implemented", Deno.errors.NotSupported],
  40: ["ELOOP", "is a symbolic link or a loop of them", Deno.errors.FilesystemLoop],
  43: ["EIDRM", "identifier removed", Deno.errors.NotFound],
  95: ["EOPNOTSUPP", "operation not supported", Deno.errors.NotSupported],
  98: ["EADDRINUSE", "address already in use", Deno.errors.AddrInUse],
  110: ["ETIMEDOUT", "timed out", Deno.errors.TimedOut],
  111: ["ECONNREFUSED", "connection refused", Deno.errors.ConnectionRefused],
};

/** errno numbers the rest of `ffi/` tests for by name. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EEXIST: 17,
  EISDIR: 21,
  EINVAL: 22,
  EMFILE: 24,
  ENOSPC: 28,
  ENOLCK: 37,
  ENOSYS: 38,
  ELOOP: 40,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ETIMEDOUT: 110,
} as const;

/**
 * The errno names of a shortage that may pass: fds (the process's, the system's), memory,
 * buffers. A call that fails for one may work a moment later.
 */
export const SHORTAGE_CODES: ReadonlySet<string> = new Set([
  "EMFILE",
  "ENFILE",
  "ENOMEM",
  "ENOBUFS",
]);

/** This thread's errno, as a view made once per thread (each Worker loads its own modules). */
let errnoWord: Int32Array | undefined;

/**
 * The calling thread's `errno`; read it straight after the failed call. Through a view over it, so
 * the read itself is a load, not two more calls: the runtime can change errno wherever JavaScript
 * enters a function (V8 handles its interrupts there). Early in a process, a loop of failing calls
 * read a wrong errno in 10 of 40 processes through `__errno_location()` and a pointer view, in 4
 * to 6 of 40 through this function, and in none of 80 from the view read inline straight after
 * the call. Call sites that decide on errno confirm it with {@link retryFailed}, as
 * `lastErrno()` is itself a call.
 */
export function lastErrno(): number {
  return (errnoWord ??= errnoView())[0];
}

function errnoView(): Int32Array {
  const location = libc().__errno_location();
  if (location === null) throw new Error("__errno_location() returned NULL");
  return new Int32Array(Deno.UnsafePointerView.getArrayBuffer(location, 4));
}

/** The symbolic name of an errno value, such as `EACCES`. */
export function errnoName(errno: number): string {
  return ERRNO[errno]?.[0] ?? `errno ${errno}`;
}

function errnoText(errno: number): string {
  const known = ERRNO[errno]?.[1];
  if (known !== undefined) return known;
  const text = libc().strerror(errno);
  if (text === null) return "unknown error";
  const message = new Deno.UnsafePointerView(text).getCString();
  return message.charAt(0).toLowerCase() + message.slice(1);
}

/** An error carrying the errno it came from, in the `Deno.errors` class that matches it. */
export interface OsError extends Error {
  /** The errno name, such as `EACCES`. */
  code: string;
  /** The errno number. */
  errno: number;
}

/**
 * Builds the error for `errno` after `action` failed on `subject`.
 *
 * @param action what was attempted, such as `open shared memory`
 * @param subject the path, name or key it was attempted on, quoted in the message
 */
export function osError(action: string, subject: string, errno: number): OsError {
  const ErrorType = ERRNO[errno]?.[2] ?? Error;
  const name = errnoName(errno);
  const error = new ErrorType(
    `Cannot ${action} ${JSON.stringify(subject)}: ${errnoText(errno)} (${name})`,
  ) as OsError;
  error.code = name;
  error.errno = errno;
  return error;
}

/**
 * Throws the error for the current `errno` when `result` is negative; returns it otherwise. The
 * errno is taken as read: use {@link attempt} for a call that can safely be made again.
 */
export function check<T extends number | bigint>(result: T, action: string, subject: string): T {
  if (result < 0) throw osError(action, subject, lastErrno());
  return result;
}

/** How many times in all a failing call is made before its last errno is taken as it is. */
const MAX_ATTEMPTS = 4;

/** A failed call made again: the result of a repeat that succeeded, or the errno it failed with. */
export type Retried<T> = { ok: true; result: T } | { ok: false; errno: number };

/**
 * Makes a call that just failed again until its errno can be believed, and returns that errno,
 * or the result of a repeat that succeeded. errno is read once the call has returned, and the
 * runtime (what in it was not found) sometimes changes it in between early in a process's life
 * (see {@link lastErrno}): a button's open that failed with EEXIST read EAGAIN and gave up. So a
 * failure's errno is believed when two failures in a row agree. Only for calls whose failure
 * changes nothing, so that making them again is harmless.
 *
 * @param call the call, made again as it was
 * @param failed whether a result is a failure; by default, a negative number
 */
export function retryFailed<T>(
  call: () => T,
  failed: (result: T) => boolean = negative,
): Retried<T> {
  let errno = lastErrno();
  for (let attempts = 1; attempts < MAX_ATTEMPTS; attempts++) {
    const result = call();
    if (!failed(result)) return { ok: true, result };
    const again = lastErrno();
    if (again === errno) break;
    errno = again;
  }
  return { ok: false, errno };
}

/**
 * Makes `call`, a libc or libgpiod call that returns NULL when it fails, and returns its pointer,
 * or the errno its failures agreed on (see {@link retryFailed}): a number. For calls whose failure
 * changes nothing.
 */
export function pointerOrErrno(call: () => Deno.PointerValue): Deno.PointerObject | number {
  const pointer = call();
  if (pointer !== null) return pointer;
  const retried = retryFailed(call, (result) => result === null);
  return retried.ok ? retried.result as Deno.PointerObject : retried.errno;
}

function negative(result: unknown): boolean {
  return (result as number | bigint) < 0;
}

/**
 * Makes `call` and returns its result; when it fails (negative), throws the error for its errno,
 * confirmed by {@link retryFailed}. For calls whose failure changes nothing.
 *
 * @param call a libc call that returns a negative number and sets errno when it fails
 * @param action what was attempted, such as `open shared memory`
 * @param subject the path, name or key it was attempted on, quoted in the message
 */
export function attempt<T extends number | bigint>(
  call: () => T,
  action: string,
  subject: string,
): T {
  const result = call();
  if (result >= 0) return result;
  const retried = retryFailed(call);
  if (retried.ok) return retried.result;
  throw osError(action, subject, retried.errno);
}
