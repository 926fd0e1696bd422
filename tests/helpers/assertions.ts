/**
 * Assertions the tests share: an error of the right class whose message names what failed, and
 * a pattern for a log line that names a path and says what happened to it.
 *
 * @module
 */

import { assertRejects, assertStringIncludes, assertThrows } from "@std/assert";

// deno-lint-ignore no-explicit-any
type ErrorClass<E extends Error> = abstract new (...args: any[]) => E;

/** `assertThrows` for `ErrorClass`, and the message names every one of `parts`. */
export function assertThrowsWith<E extends Error>(
  fn: () => unknown,
  ErrorClass: ErrorClass<E>,
  ...parts: string[]
): E {
  const error = assertThrows(fn, ErrorClass);
  for (const part of parts) assertStringIncludes(error.message, part);
  return error;
}

/** `assertRejects` for `ErrorClass`, and the message names every one of `parts`. */
export async function assertRejectsWith<E extends Error>(
  fn: () => PromiseLike<unknown>,
  ErrorClass: ErrorClass<E>,
  ...parts: string[]
): Promise<E> {
  const error = await assertRejects(fn, ErrorClass);
  for (const part of parts) assertStringIncludes(error.message, part);
  return error;
}

/** `text` as a regular expression that matches it literally. */
export function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** A pattern for a line that names `path` and says one of `words` (case-insensitive). */
export function lineNaming(path: string, words: RegExp): RegExp {
  return new RegExp(`^(?=.*${escapeRegExp(path)})(?=.*(?:${words.source}))`, "i");
}
