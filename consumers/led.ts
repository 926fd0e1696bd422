/**
 * The LED process: applies the shared state to an LED, at start and on every change. It sleeps
 * on the state cell's futex word between changes: no polling.
 *
 * Run `deno run --allow-ffi consumers/led.ts --help` for its flags; `launch.ts` starts it.
 *
 * @module
 */

import {
  describeFollowed,
  describeLostMirror,
  exitWhenFlushed,
  logFlags,
  MEMFD_FLAG,
  openSystemState,
  PARENT_PID_FLAG,
  shutdownSignal,
  STATE_FLAGS,
} from "../app/cli.ts";
import { type CommandFlags, defineCommand, parseCommandLine } from "../app/flags.ts";
import { logger, setupLogging } from "../app/logging.ts";
import { ConsoleLed } from "../hw/console_led.ts";
import type { Led } from "../hw/types.ts";
import { openStateCell, type StateCell } from "../lib/state_cell.ts";
import { failureExitStatus } from "../app/exit_status.ts";

/** The LED process's command line. */
export const LED_COMMAND = defineCommand({
  name: "led",
  synopsis: ["deno run --allow-ffi consumers/led.ts (--state PATH | --shm NAME) [options]"],
  description: 'The LED process: shows the shared state, "LED Status: On" or "LED Status: Off".',
  flags: {
    ...STATE_FLAGS,
    ...MEMFD_FLAG,
    syslog: {
      type: "boolean",
      help: 'also log to the system log, ident "LED MMAP", as the original did',
    },
    pi: { type: "boolean", help: "drive a GPIO LED (libgpiod) and log each change" },
    chip: {
      type: "string",
      arg: "C",
      requires: "pi",
      defaultText: "auto",
      help: "GPIO chip: path, name, number, label or auto",
    },
    line: {
      type: "string",
      arg: "L",
      requires: "pi",
      defaultText: "GPIO17, physical pin 11",
      help: "GPIO line: name or offset",
    },
    ...logFlags(),
    ...PARENT_PID_FLAG,
  },
  exclusive: [{ flags: ["state", "shm"] }, {
    flags: ["state", "shm", "memfd"],
    required: true,
    combinable: true,
  }],
});

/** The LED process's parsed flags. */
export type LedFlags = CommandFlags<typeof LED_COMMAND>;

/**
 * Shows the current state on `led` at once, then every change, until `signal` aborts.
 * Changes that come faster than the LED is set are coalesced: it always ends on the latest.
 */
export async function runLed(
  led: Led,
  cell: StateCell,
  options: { signal: AbortSignal },
): Promise<void> {
  // current: true starts from the same snapshot the iteration compares with, so a change that
  // lands while the LED starts up is never lost.
  for await (const state of cell.changes({ signal: options.signal, current: true })) {
    led.set(state !== 0);
  }
}

/**
 * How long the LED waits before it says that the button stopped (not died): long enough for a
 * launcher's SIGTERM, sent to both at once, to reach the LED too.
 */
const STOPPED_NOTICE_MS = 500;

/** One notice held back for a while, said at once on demand, and dropped once `signal` aborts. */
class DeferredNotice {
  readonly #delayMs: number;
  readonly #signal: AbortSignal;
  #pending: { say: () => void; timer: ReturnType<typeof setTimeout> } | undefined;

  constructor(delayMs: number, signal: AbortSignal) {
    this.#delayMs = delayMs;
    this.#signal = signal;
    signal.addEventListener("abort", () => this.#drop(), { once: true });
  }

  /** Holds `say` back (saying the one held before it now). */
  later(say: () => void): void {
    this.now();
    if (this.#signal.aborted) return;
    const timer = setTimeout(() => this.now(), this.#delayMs);
    this.#pending = { say, timer };
  }

  /** Says the notice held back, if any, now. */
  now(): void {
    const pending = this.#drop();
    pending?.say();
  }

  #drop(): { say: () => void; timer: ReturnType<typeof setTimeout> } | undefined {
    const pending = this.#pending;
    this.#pending = undefined;
    if (pending !== undefined) clearTimeout(pending.timer);
    return pending;
  }
}

async function main(flags: LedFlags): Promise<void> {
  // Logging first: a child that does not start says why in the format asked for.
  setupLogging({
    level: flags.logLevel,
    format: flags.logFormat,
    syslogIdent: flags.syslog ? "LED MMAP" : undefined,
  });
  const signal = shutdownSignal(flags.parentPid);
  const log = logger("led");
  using state = openSystemState(flags);
  if (state.mirrorLost !== undefined) log.warn(describeLostMirror(state.mirrorLost));
  if (state.openToOthers !== undefined) log.warn(state.openToOthers);
  const { region, mirror } = state;
  const lost = (pid: number, status: "died" | "left"): void => {
    const how = `The button (pid ${pid}) ${status === "died" ? "died" : "stopped"}`;
    log.warn(mirror === undefined ? how : `${how}; following ${describeFollowed(mirror, flags)}`);
  };
  // A button that stopped cleanly is said a moment later, and not at all once this LED stops
  // too: a launcher that stops sends both their SIGTERM at once, and the button's end could
  // reach this LED before its own signal did: a warning at an orderly Ctrl+C.
  const stopped = new DeferredNotice(STOPPED_NOTICE_MS, signal);
  using cell = openStateCell(region, {
    mirror,
    onWriter: ({ pid, status }) => {
      if (status === "left") return stopped.later(() => lost(pid, status));
      // Said in the order it happened: a button that stopped before this one came.
      stopped.now();
      if (status === "writing") log.info(`Following the button (pid ${pid})`);
      else lost(pid, status);
    },
  });
  let led: Led;
  if (flags.pi) {
    // Loaded only here: the PC build never pays for the GPIO modules.
    const { openGpioLed } = await import("../hw/gpio_led.ts");
    const gpio = openGpioLed({
      chip: flags.chip,
      line: flags.line,
      onChange: (on) => log.info(`LED Status: ${on ? "On" : "Off"}`),
    });
    log.info(`LED ready on ${gpio.description}`);
    led = gpio;
  } else {
    led = new ConsoleLed(log);
  }
  try {
    await runLed(led, cell, { signal });
  } catch (error) {
    try {
      led.close();
    } catch {
      // Its line gone too (ENODEV): the error that ended the run is the one to tell.
    }
    throw error;
  }
  led.close();
}

if (import.meta.main) {
  const flags = parseCommandLine(LED_COMMAND);
  try {
    await main(flags);
  } catch (error) {
    console.error(`led: ${(error as Error).message}`);
    Deno.exit(failureExitStatus(error));
  }
  await exitWhenFlushed();
}
