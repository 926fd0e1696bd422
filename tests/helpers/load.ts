/**
 * How hard a load test pushes: every round on a native CPU, a share of them under the aarch64
 * GPIO VM's emulated one, where each round takes 20 to 50 times as long.
 *
 * @module
 */

/** The variable the GPIO VMs set (tests/gpio_vm/init.sh) to the share of rounds to run. */
export const LOAD_VARIABLE = "MMAP_IPC_TEST_LOAD";

/**
 * `rounds`, or the share of them `MMAP_IPC_TEST_LOAD` asks for (a number in (0, 1]), at least
 * one. Without permission to read it, all of them.
 */
export function loadRounds(rounds: number): number {
  const { state } = Deno.permissions.querySync({ name: "env", variable: LOAD_VARIABLE });
  const text = state === "granted" ? Deno.env.get(LOAD_VARIABLE) : undefined;
  if (text === undefined || text === "") return rounds;
  const share = Number(text);
  if (!(share > 0 && share <= 1)) {
    throw new RangeError(`${LOAD_VARIABLE} must be a share in (0, 1], not "${text}"`);
  }
  return Math.max(1, Math.round(rounds * share));
}
