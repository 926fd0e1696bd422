/**
 * Another program that holds a GPIO line, for the busy-line test: requests the line as an
 * output under the given consumer name, says `holding`, and releases it on SIGTERM.
 *
 * Usage: hold_line.ts CHIP LINE CONSUMER
 *
 * @module
 */

import { findLine } from "../../ffi/gpiod.ts";

if (import.meta.main) {
  const [chipSpec, lineSpec, consumer] = Deno.args;
  const { chip, offset } = findLine(chipSpec, lineSpec);
  const line = chip.requestOutput(offset, consumer, 0);
  const stopped = new Promise<void>((resolve) => Deno.addSignalListener("SIGTERM", resolve));
  console.log(`holding line ${offset} of ${chip.path} as ${consumer}`);
  await stopped;
  line.close();
  chip.close();
}
