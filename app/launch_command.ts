/**
 * The launcher's command line (`launch.ts`): its flags, declared once, and their usage.
 *
 * @module
 */

import { MQTT_FLAGS } from "../bridges/mqtt/settings.ts";
import { checkFilePath, logFlags, STATE_FLAGS } from "./cli.ts";
import { type CommandFlags, defineCommand } from "./flags.ts";

const GPIO = "GPIO options (with --pi, which launch:pi passes)";

/** The launcher's command line. */
export const LAUNCH_COMMAND = defineCommand({
  name: "launch",
  synopsis: [
    "deno task launch [options]      (PC: FIFO button, console LED)",
    "deno task launch:pi [options]   (Raspberry Pi: GPIO button and LED through libgpiod)",
  ],
  description:
    "Starts the button and LED processes, keeps them running, and stops them on Ctrl+C or SIGTERM.",
  flags: {
    ...STATE_FLAGS,
    fifo: {
      type: "string",
      arg: "PATH",
      defaultText: "/run/user/UID/mmap-ipc/button.fifo, else /tmp/mmap-ipc-UID/button.fifo",
      help: "PC build: the button's FIFO; --fifo /tmp/mmap_file is the original's",
      check: checkFilePath,
    },
    syslog: { type: "boolean", help: 'the LED also logs to the system log, ident "LED MMAP"' },
    ...logFlags("each press"),
    pi: {
      type: "boolean",
      help: "the Raspberry Pi build: GPIO button and LED (libgpiod); deno task launch:pi gives it",
    },
    chip: {
      type: "string",
      arg: "C",
      group: GPIO,
      requires: "pi",
      defaultText: "auto, the chip that has the lines, whichever Pi and kernel this is",
      help: "GPIO chip: /dev/gpiochipN, gpiochipN, N, a label, or auto",
    },
    "button-line": {
      type: "string",
      arg: "L",
      group: GPIO,
      requires: "pi",
      defaultText: "GPIO4, physical pin 7",
      help: "the button's line: a name or an offset",
    },
    "led-line": {
      type: "string",
      arg: "L",
      group: GPIO,
      requires: "pi",
      defaultText: "GPIO17, physical pin 11",
      help: "the LED's line",
    },
    "debounce-ms": {
      type: "number",
      arg: "N",
      integer: true,
      min: 0,
      max: 10_000,
      default: 50,
      group: GPIO,
      requires: "pi",
      help: "ignore button bounces shorter than N ms",
    },
    ...MQTT_FLAGS,
  },
  exclusive: [{ flags: ["state", "shm"] }, {
    flags: ["fifo", "pi"],
    // deno task launch:pi gives --pi itself: the user may never have typed it.
    why: "--fifo is the PC build's button (deno task launch); the Pi build (deno task " +
      "launch:pi, which gives --pi) reads a GPIO line (--button-line)",
  }],
  footer: "Without --state or --shm the state is anonymous shared memory that only the " +
    "launcher's children see.\nPC build: press the button with  echo 0 > FIFO  (or press " +
    "Enter in this terminal).",
});

/** The launcher's parsed flags. */
export type LaunchFlags = CommandFlags<typeof LAUNCH_COMMAND>;
