/**
 * The PC build's LED: a log line per change, `LED Status: On` / `LED Status: Off`, as the
 * original C LED wrote to the system log (send it there too with `--syslog`).
 *
 * @module
 */

import type { Logger } from "../app/logging.ts";
import type { Led } from "./types.ts";

/** An LED that logs its state. */
export class ConsoleLed implements Led {
  readonly #log: Logger;
  #closed = false;

  /** Logs through `log`. */
  constructor(log: Logger) {
    this.#log = log;
  }

  /** Logs `LED Status: On` or `LED Status: Off`. */
  set(on: boolean): void {
    if (this.#closed) throw new Deno.errors.BadResource("The console LED is closed");
    this.#log.info(`LED Status: ${on ? "On" : "Off"}`);
  }

  /** Stops the LED; later `set()` calls throw `BadResource`. */
  close(): void {
    this.#closed = true;
  }

  /** Same as close(), for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
