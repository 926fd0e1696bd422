/**
 * The real button and LED scripts, started as `launch.ts` would start them but directly, so the
 * benchmark knows their pids: `consumers/led.ts` and `producers/button.ts` on a state file and
 * a FIFO in the run's private directory.
 *
 * @module
 */

import { monotonicNanos } from "../ffi/posix.ts";
import { type Child, ROOT, spawnDeno, type WorkDir, writeToFifo } from "./processes.ts";

/** A line the LED prints for each state it applies. */
export const LED_LINE: RegExp = /LED Status: (On|Off)/;

/** A running LED and button. */
export interface System extends AsyncDisposable {
  /** The LED process. */
  led: Child;
  /** The button process. */
  button: Child;
  /** The state file both map. */
  state: string;
  /** Presses the button (writes "0" to its FIFO); resolves with CLOCK_MONOTONIC just before. */
  press(): Promise<bigint>;
}

/**
 * Starts the LED, then the button, on files named after `name` in `work`; with `denoFlags`
 * (such as the inspector's) given to both.
 */
export async function startSystem(
  work: WorkDir,
  name: string,
  options: { denoFlags?: string[] } = {},
): Promise<System> {
  const state = work.file(`${name}.dat`);
  const fifo = work.file(`${name}.fifo`);
  const spawnOptions = {
    denoFlags: options.denoFlags,
    verbose: options.denoFlags !== undefined,
  };
  const led = spawnDeno(`${ROOT}consumers/led.ts`, ["--state", state], spawnOptions);
  let button: Child | undefined;
  try {
    await led.waitFor(LED_LINE);
    button = spawnDeno(
      `${ROOT}producers/button.ts`,
      ["--state", state, "--fifo", fifo],
      spawnOptions,
    );
    await button.waitFor(/Button ready/);
  } catch (error) {
    await button?.[Symbol.asyncDispose]();
    await led[Symbol.asyncDispose]();
    throw error;
  }
  const started = button;
  return {
    led,
    button: started,
    state,
    async press(): Promise<bigint> {
      const now = monotonicNanos();
      await writeToFifo(fifo, "0\n");
      return now;
    },
    async [Symbol.asyncDispose](): Promise<void> {
      await started[Symbol.asyncDispose]();
      await led[Symbol.asyncDispose]();
      await Deno.remove(state).catch(() => {});
      await Deno.remove(fifo).catch(() => {});
    },
  };
}
