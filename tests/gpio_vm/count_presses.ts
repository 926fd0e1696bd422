/**
 * A GPIO button in a process of its own, for the test that stops it with SIGSTOP while the line
 * changes: opens the button on the header's GPIO4 with the given debounce, says `ready`, then
 * `press N` for each press and `dropped N` (or `dropped unknown`) each time the kernel's queue of
 * edge events overflowed; stops on SIGTERM.
 *
 * Usage: count_presses.ts DEBOUNCE_MS
 *
 * @module
 */

import { openGpioButton } from "../../hw/gpio_button.ts";

if (import.meta.main) {
  const controller = new AbortController();
  Deno.addSignalListener("SIGTERM", () => controller.abort());
  await using button = openGpioButton({
    debounceMs: Number(Deno.args[0]),
    onDropped: (dropped) => console.log(`dropped ${dropped ?? "unknown"}`),
  });
  console.log("ready");
  let presses = 0;
  for await (const _ of button.presses(controller.signal)) console.log(`press ${++presses}`);
}
