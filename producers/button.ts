/**
 * The button process: turns each press into a toggled state and writes it to the state cell.
 *
 * Run `deno run --allow-ffi producers/button.ts --help` for its flags; `launch.ts` starts it.
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
import { logger, parseLevel, quote, setupLogging } from "../app/logging.ts";
import { defaultFifoPath } from "../app/runtime_dir.ts";
import { type IgnoredInput, openFifoButton } from "../hw/fifo_button.ts";
import { openGpioButton } from "../hw/gpio_button.ts";
import type { Button } from "../hw/types.ts";
import { openStateCell, type StateCell } from "../mod.ts";

const USAGE = `Usage: deno run --allow-ffi producers/button.ts [options]

The button process: each press toggles the shared state between 0 and 1.

Options:
${STATE_USAGE}
  --fifo PATH      read presses from this FIFO, one per line: "0" or "press"
                   (default: $XDG_RUNTIME_DIR/mmap-ipc/button.fifo or /tmp/mmap-ipc-UID/button.fifo)
  --pi             read presses from a GPIO button instead (libgpiod)
  --chip C         GPIO chip: path, name, number, label or auto (default auto)
  --line L         GPIO line: name or offset (default GPIO4, physical pin 7)
  --debounce-ms N  ignore bounces shorter than N ms (default 50)
  --log-level L    debug, info, warning or error (default info)
  --parent-pid N   exit when process N (the launcher) exits
  -h, --help       show this help`;

/** Options for {@link runButton}. */
export interface RunButtonOptions {
  /** Stops the loop. */
  signal: AbortSignal;
  /** Called after each press with the state it wrote. */
  onPress?: (state: number) => void;
}

/**
 * Toggles `cell` between 0 and 1 on every press of `button` until `signal` aborts. It toggles
 * what the cell holds, not a private copy, so the first press always changes the LED even when
 * the state was left over from an earlier run or another writer. Returns the number of presses.
 */
export async function runButton(
  button: Button,
  cell: StateCell,
  options: RunButtonOptions,
): Promise<number> {
  let presses = 0;
  for await (const _ of button.presses(options.signal)) {
    const state = cell.read() === 0 ? 1 : 0;
    cell.write(state);
    presses++;
    options.onPress?.(state);
  }
  return presses;
}

/** Describes input that was not a press, for a warning. */
export function describeIgnored(ignored: IgnoredInput): string {
  switch (ignored.reason) {
    case "empty":
      return `Ignored an empty line; write "0" or "press" to press the button`;
    case "too long":
      return `Ignored a line of ${ignored.bytes} bytes (longer than a press can be) starting ${
        quote(ignored.input)
      }`;
    case "binary":
      return `Ignored ${ignored.bytes} bytes of binary data: ${quote(ignored.input)}`;
    case "cut off":
      return `Ignored ${quote(ignored.input)}: its writer went away before the end of the line`;
    default:
      return `Ignored ${quote(ignored.input)}: not a press; write "0" or "press"`;
  }
}

async function main(flags: Flags): Promise<void> {
  const signal = shutdownSignal(parentPidFlag(flags));
  await setupLogging({ level: parseLevel(flags["log-level"] as string | undefined) });
  const log = logger("button");
  const { region } = openStateRegion(flags);
  using _region = region;
  using cell = openStateCell(region, { writer: true });
  let button: Button;
  if (flags.pi) {
    const gpio = openGpioButton({
      chip: flags.chip as string | undefined,
      line: flags.line as string | undefined,
      debounceMs: flags["debounce-ms"] === undefined ? undefined : Number(flags["debounce-ms"]),
    });
    button = gpio;
    log.info(`Button ready on ${gpio.description}`);
  } else {
    const fifo = (flags.fifo as string | undefined) ?? defaultFifoPath();
    button = openFifoButton(fifo, { onIgnored: (ignored) => log.warn(describeIgnored(ignored)) });
    log.info(`Button ready: echo 0 > ${fifo}`);
  }
  await using _button = button;
  await runButton(button, cell, {
    signal,
    onPress: (state) => log.debug(`Pressed: state ${state}`),
  });
}

if (import.meta.main) {
  const flags = parseFlags(Deno.args, {
    ...STATE_FLAGS,
    fifo: { type: "string" },
    pi: { type: "boolean" },
    chip: { type: "string" },
    line: { type: "string" },
    "debounce-ms": { type: "string" },
    "log-level": { type: "string" },
    "parent-pid": { type: "string" },
  }, USAGE);
  try {
    await main(flags);
  } catch (error) {
    console.error(`button: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
