/**
 * The LED process: applies the shared state to an LED, at start and on every change. It sleeps
 * on the state cell's futex word between changes: no polling.
 *
 * Run `deno run --allow-ffi consumers/led.ts --help` for its flags; `launch.ts` starts it.
 *
 * @module
 */

import {
  type Flags,
  openStateRegion,
  parentPidFlag,
  parseFlags,
  shutdownSignal,
  STATE_FLAGS,
  STATE_USAGE,
} from "../app/cli.ts";
import { logger, parseLevel, setupLogging } from "../app/logging.ts";
import { ConsoleLed } from "../hw/console_led.ts";
import { openGpioLed } from "../hw/gpio_led.ts";
import type { Led } from "../hw/types.ts";
import { openStateCell, type StateCell } from "../mod.ts";

const USAGE = `Usage: deno run --allow-ffi consumers/led.ts [options]

The LED process: shows the shared state, "LED Status: On" or "LED Status: Off".

Options:
${STATE_USAGE}
  --syslog         also log to the system log, ident "LED MMAP", as the original did
  --pi             drive a GPIO LED (libgpiod) and log each change
  --chip C         GPIO chip: path, name, number, label or auto (default auto)
  --line L         GPIO line: name or offset (default GPIO17, physical pin 11)
  --log-level L    debug, info, warning or error (default info)
  --parent-pid N   exit when process N (the launcher) exits
  -h, --help       show this help`;

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

async function main(flags: Flags): Promise<void> {
  const signal = shutdownSignal(parentPidFlag(flags));
  await setupLogging({
    level: parseLevel(flags["log-level"] as string | undefined),
    syslogIdent: flags.syslog ? "LED MMAP" : undefined,
  });
  const { region } = openStateRegion(flags);
  using _region = region;
  using cell = openStateCell(region);
  const log = logger("led");
  let led: Led;
  if (flags.pi) {
    const gpio = openGpioLed({
      chip: flags.chip as string | undefined,
      line: flags.line as string | undefined,
      onChange: (on) => log.info(`LED Status: ${on ? "On" : "Off"}`),
    });
    log.info(`LED ready on ${gpio.description}`);
    led = gpio;
  } else {
    led = new ConsoleLed(log);
  }
  try {
    await runLed(led, cell, { signal });
  } finally {
    led.close();
  }
}

if (import.meta.main) {
  const flags = parseFlags(Deno.args, {
    ...STATE_FLAGS,
    syslog: { type: "boolean" },
    pi: { type: "boolean" },
    chip: { type: "string" },
    line: { type: "string" },
    "log-level": { type: "string" },
    "parent-pid": { type: "string" },
  }, USAGE);
  try {
    await main(flags);
  } catch (error) {
    console.error(`led: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
