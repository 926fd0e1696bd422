/**
 * What the bridge says when the button process falls behind with commands: a flood makes it
 * fall behind and catch up again hundreds of times, and one pair of lines says it all.
 *
 * @module
 */

import type { Logger } from "../../app/logging.ts";

/**
 * How long the command path must flow before "flow again" is said: a flood made the button fall
 * behind and catch up again hundreds of times (284 times for 30,001 toggles), and one pair of
 * lines says it all.
 */
const BACKLOG_QUIET_MS = 1_000;

/**
 * The log lines for a backlog of commands: one warning when a run of backlogs starts, one line
 * with how many commands were folded when it has been over for {@link BACKLOG_QUIET_MS}.
 */
export class BacklogReport implements Disposable {
  readonly #log: Logger;
  #folded = 0;
  #reported: "full" | "no receiver" | undefined;
  #over: ReturnType<typeof setTimeout> | undefined;

  /** Says what it says through `log`. */
  constructor(log: Logger) {
    this.#log = log;
  }

  /** The forwarder holds commands back, for `reason`. */
  waiting(reason: "full" | "no receiver"): void {
    clearTimeout(this.#over);
    this.#over = undefined;
    if (this.#reported === reason) return;
    this.#reported = reason;
    this.#log.warn(
      reason === "full"
        ? "The button process is behind with commands: folding the next ones together"
        : "No button process takes commands right now: holding the latest until one does",
    );
  }

  /** The forwarder handed over what it held, `merged` commands folded into others. */
  caughtUp(merged: number): void {
    this.#folded += merged;
    clearTimeout(this.#over);
    this.#over = setTimeout(() => this.#flowing(), BACKLOG_QUIET_MS);
    Deno.unrefTimer(this.#over);
  }

  #flowing(): void {
    this.#over = undefined;
    if (this.#reported !== undefined) {
      this.#log.info(`Commands flow again (${this.#folded} folded into others)`);
    }
    this.#reported = undefined;
    this.#folded = 0;
  }

  /** Says what is pending, if anything; no timer is left. */
  [Symbol.dispose](): void {
    if (this.#over !== undefined) {
      clearTimeout(this.#over);
      this.#flowing();
    }
  }
}
