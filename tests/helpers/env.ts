/**
 * Numbers tests read from the environment (seeds, rounds, steps of the randomized tests).
 *
 * @module
 */

/** The whole number in environment variable `name`, or `fallback` when it is unset or empty. */
export function envNumber(name: string, fallback: number): number {
  const text = Deno.env.get(name);
  if (text === undefined || text === "") return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new TypeError(`${name} must be a whole number, got ${JSON.stringify(text)}`);
  }
  return value;
}
