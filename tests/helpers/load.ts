/**
 * How hard load tests push and how long guards wait: as written on a native CPU; under the
 * aarch64 GPIO VM's emulated one, where each round takes 20 to 50 times as long and a Deno child
 * takes seconds to start, fewer rounds and longer guards (tests/gpio_vm/init.sh sets both).
 *
 * @module
 */

/** The share of a load test's rounds to run, a number in (0, 1]. */
export const LOAD_VARIABLE = "MMAP_IPC_TEST_LOAD";
/** How many times longer a guard against a hang waits, a number from 1 to 100. */
export const SLOWNESS_VARIABLE = "MMAP_IPC_TEST_SLOWNESS";

/** The variable's value as a number within `[min, max]` (`min` excluded if `open`), if set. */
function setting(name: string, min: number, max: number, open: boolean): number | undefined {
  const { state } = Deno.permissions.querySync({ name: "env", variable: name });
  const text = state === "granted" ? Deno.env.get(name) : undefined;
  if (text === undefined || text === "") return undefined;
  const value = Number(text);
  if (!(open ? value > min : value >= min) || !(value <= max)) {
    throw new RangeError(`${name} must be a number from ${min} to ${max}, not "${text}"`);
  }
  return value;
}

/**
 * `rounds`, or the share of them `MMAP_IPC_TEST_LOAD` asks for, at least one. Without
 * permission to read it, all of them.
 */
export function loadRounds(rounds: number): number {
  const share = setting(LOAD_VARIABLE, 0, 1, true) ?? 1;
  return Math.max(1, Math.round(rounds * share));
}

/**
 * `ms` for a guard against a hang, times `MMAP_IPC_TEST_SLOWNESS` where it is set (never a
 * bound on speed: those are `deno task bench`'s).
 */
export function guardMs(ms: number): number {
  return ms * (setting(SLOWNESS_VARIABLE, 1, 100, false) ?? 1);
}
