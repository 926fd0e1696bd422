/**
 * Tells a remote controller about each press without ever slowing the press down: a press
 * that does not fit in the event channel now (the controller is slow, restarting or absent) is
 * dropped and counted, never waited for.
 *
 * @module
 */

import type { ChannelSender } from "./channel.ts";
import { monotonicMillis } from "../../ffi/posix.ts";
import { encodePress } from "./messages.ts";

/** Options for {@link PressReporter}. */
export interface PressReporterOptions {
  /** Called at the first press dropped after one that went through (or at the start). */
  onDropping?: (reason: "full" | "no receiver") => void;
  /** Called at the first press that goes through after `dropped` were dropped. */
  onResumed?: (dropped: number) => void;
}

/** Reports presses through a {@link ChannelSender}; see the module description. */
export class PressReporter {
  readonly #sender: ChannelSender;
  readonly #options: PressReporterOptions;
  #dropped = 0;

  /** Reports through `sender`, which stays the caller's to close. */
  constructor(sender: ChannelSender, options: PressReporterOptions = {}) {
    this.#sender = sender;
    this.#options = options;
  }

  /** Presses dropped since the last one that went through. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Reports one press; returns whether it went through. */
  report(): boolean {
    // With the time it was made: a reader that gets to it late does not pass it on late.
    const result = this.#sender.trySend(encodePress(monotonicMillis()));
    if (result === "sent") {
      if (this.#dropped > 0) this.#options.onResumed?.(this.#dropped);
      this.#dropped = 0;
      return true;
    }
    if (this.#dropped++ === 0) this.#options.onDropping?.(result);
    return false;
  }
}
