/**
 * Enter in the launcher's terminal as a press: each newline read from it writes one press into
 * the button's FIFO. Only while the launcher is the terminal's foreground job: in the background
 * (`deno task launch &`, or Ctrl+Z then bg) a read of the terminal would stop the launcher, and
 * with it every press (SIGTTIN), so it is not read then, and it is read again after `fg`.
 *
 * @module
 */

import { delay } from "@std/async/delay";
import * as C from "../ffi/constants.ts";
import {
  closeFd,
  ignoreTerminalReadStops,
  inForeground,
  openPath,
  statFd,
  writeFd,
} from "../ffi/posix.ts";
import type { Logger } from "./logging.ts";

/**
 * Ends of the terminal's input in a row, each at once (see {@link AT_ONCE_MS}), after which
 * Enter is given up: the terminal is gone.
 */
const TERMINAL_ENDS_TO_STOP = 3;
/**
 * A read that ends sooner than this after it began met an end already there: a terminal that is
 * gone, or Ctrl+D pressed during the pause. A person's Ctrl+D ends a read that waited for it.
 */
const AT_ONCE_MS = 50;
/** The pause after an end of the terminal's input: a terminal that is gone does not spin us. */
const TERMINAL_END_PAUSE_MS = 100;
/** How often a launcher in the background looks whether it was brought to the foreground. */
const FOREGROUND_LOOK_MS = 1_000;
/** A read of the terminal from the background, with SIGTTIN ignored. */
const BACKGROUND_READ = /\(os error 5\)|EIO/;

/**
 * Writes one press into the FIFO, for Enter in the launcher's terminal. What is at the path is
 * looked at through the open descriptor first: if someone put a file of their own there, it is
 * left as it is and the press is dropped.
 */
function pressOnce(path: string): void {
  const fd = openPath(
    path,
    C.O_WRONLY | C.O_NONBLOCK | C.O_NOFOLLOW | C.O_CLOEXEC,
    0,
    "press through FIFO",
  );
  try {
    const { type } = statFd(fd, path);
    if (type !== "fifo") {
      throw new Deno.errors.AlreadyExists(
        `Cannot press through ${JSON.stringify(path)}: it is a ${
          type === "file" ? "regular file" : type
        } now, not the button's FIFO; it is left as it is`,
      );
    }
    writeFd(fd, new TextEncoder().encode("press\n"), path);
  } finally {
    closeFd(fd);
  }
}

/**
 * Presses on each Enter in this process's terminal (its stdin) until `signal` aborts, saying
 * whether Enter presses as the launcher goes to the background and back. Throws when the
 * terminal's input has ended for good.
 */
export async function pressOnEnter(
  path: string,
  options: { signal: AbortSignal; log: Logger },
): Promise<void> {
  const { signal, log } = options;
  // A read from the background fails (EIO) instead of stopping the whole process.
  ignoreTerminalReadStops();
  let first = true;
  while (!signal.aborted) {
    if (!inForeground(0)) {
      log.info(
        first
          ? "Running in the background: Enter does not press here (it does after fg)."
          : "In the background now: Enter does not press here until fg.",
      );
      while (!inForeground(0)) {
        await delay(FOREGROUND_LOOK_MS, { signal }).catch(() => {});
        if (signal.aborted) return;
      }
      log.info("In the foreground again: Enter presses here.");
    } else if (first) log.info("...or press Enter here. Ctrl+C stops everything.");
    first = false;
    try {
      await readPresses(path, options);
      return;
    } catch (error) {
      if (!(error instanceof Error && BACKGROUND_READ.test(error.message))) throw error;
    }
  }
}

/** Presses on each Enter read; returns on abort, and throws what the read throws. */
async function readPresses(
  path: string,
  { signal, log }: { signal: AbortSignal; log: Logger },
): Promise<void> {
  // Read by hand, not through Deno.stdin.readable: that ends for good at the first end of input.
  const buffer = new Uint8Array(1024);
  let endsInRow = 0;
  let toldOfEnds = false;
  for (;;) {
    const began = performance.now();
    const count = await Deno.stdin.read(buffer);
    if (signal.aborted) return;
    if (count === null) {
      // Ctrl+D ends one read of a terminal, not the terminal: Enter still presses after it. A
      // terminal that is gone ends every read, at once: given up after a few such in a row.
      endsInRow = performance.now() - began < AT_ONCE_MS ? endsInRow + 1 : 0;
      if (endsInRow >= TERMINAL_ENDS_TO_STOP) throw new Error("the terminal's input ended");
      if (!toldOfEnds) log.info("Ctrl+D does not stop the launcher (Ctrl+C does)");
      toldOfEnds = true;
      await delay(TERMINAL_END_PAUSE_MS, { signal }).catch(() => {});
      continue;
    }
    endsInRow = 0;
    for (let i = 0; i < count; i++) {
      if (buffer[i] !== 0x0a) continue;
      try {
        pressOnce(path);
      } catch (error) {
        // ENXIO: nothing reads the FIFO (a user's FIFO at the path now, no button on it yet).
        log.warn(`Enter did not press: ${(error as Error).message}`);
      }
    }
  }
}
