/**
 * The Pi build's button: a GPIO input with pull-up, active low (the button connects the pin to
 * ground), woken by edge events (no polling), debounced. A held button is one press.
 *
 * @module
 */

import { FdWaiter, type Readiness } from "../ffi/fd_waiter.ts";
import { type Chip, explainRequestError, findLine, gpiod, type InputLine } from "../ffi/gpiod.ts";
import type { Button } from "./types.ts";

/** Options for {@link openGpioButton}. */
export interface GpioButtonOptions {
  /** The chip: path, name, number, label or `auto` (default). */
  chip?: string;
  /** The line: name or offset. Default `GPIO4` (physical pin 7 on a Raspberry Pi). */
  line?: string;
  /** Bounces shorter than this are ignored (default 50 ms); in the kernel with libgpiod 2.x. */
  debounceMs?: number;
  /** The consumer name others see on the line. */
  consumer?: string;
  /**
   * Called when the kernel dropped edge events of the line, its queue full while this process
   * was busy or stopped (or the contact bounced hard): presses among them are lost, and the line
   * is read once the debounce time has passed, so the next press counts. `dropped` is how many
   * events (libgpiod 2.x), or undefined with libgpiod 1.6, which cannot tell (a read that took a
   * full queue may have missed later events, or not).
   */
  onDropped?: (dropped: number | undefined) => void;
}

/** A button on a GPIO line; see {@link openGpioButton}. */
export class GpioButton implements Button {
  readonly #chip: Chip;
  readonly #input: InputLine;
  readonly #debounceMs: number;
  readonly #onDropped: (dropped: number | undefined) => void;
  readonly #waiter = new FdWaiter();
  /**
   * The poll of the line's events in flight, kept across calls of {@link GpioButton.presses}:
   * one that ended (a `break`) while a settle's read had won the race leaves it running, and
   * the FdWaiter takes one wait at a time, so the next call takes it up.
   */
  #polling: Promise<Readiness> | undefined;
  /** Where the line is, for messages. */
  readonly description: string;
  /**
   * The last settled value, read when the line is opened: read any later and a press that
   * lands in between would count as the starting state, and be lost.
   */
  #stable: number;
  #closed = false;

  /** Not for direct use: call {@link openGpioButton}. */
  constructor(
    chip: Chip,
    input: InputLine,
    { description, debounceMs, stable, onDropped }: {
      description: string;
      debounceMs: number;
      stable: number;
      onDropped?: (dropped: number | undefined) => void;
    },
  ) {
    this.#chip = chip;
    this.#input = input;
    this.description = description;
    this.#debounceMs = debounceMs;
    this.#stable = stable;
    this.#onDropped = onDropped ?? (() => {});
  }

  /**
   * Yields once per press: each edge to active (pressed) after an inactive one, told by the
   * kernel's queued edge events and their timestamps, not by when this process reads them, so a
   * press and release that both happened while it was busy (or stopped) still count. An edge
   * less than the debounce time after the last one accepted is a bounce; once that time has
   * passed the line is read to settle where it ended, so nothing is missed and nothing bounces.
   * The same read follows events the kernel dropped from its full queue (the newest of them with
   * libgpiod 1.6, such as the last release): the button then goes on from where the line is.
   * With libgpiod 2.x, which drops the oldest, the first edge after them counts as a change.
   *
   * An edge past the debounce time to the value the button already holds is a press too: the
   * line went away and came back. Without the kernel's debounce (libgpiod 1.6) the kernel types
   * each edge by reading the line once its interrupt thread runs, and merges the edges that come
   * before it does: a release and the next press become one "press". Before any change was taken
   * such an edge says nothing (it may be the pull-up's own, as the line was requested).
   */
  async *presses(signal: AbortSignal): AsyncGenerator<void, void, undefined> {
    const cancel = (): void => this.#waiter.cancel();
    signal.addEventListener("abort", cancel, { once: true });
    const debounceMs = this.#debounceMs;
    let pending = 0;
    /** When the last edge accepted, and the last edge seen, happened: the kernel's clock. */
    let acceptedAt = -Infinity;
    let seenAt = -Infinity;
    /**
     * An edge was not taken as it came (a bounce, or one that said nothing new), or the kernel
     * dropped some: settle.
     */
    let unsettled = false;
    const accept = (value: number): void => {
      this.#stable = value;
      if (value === 1) pending++;
    };
    /** The kernel dropped the events just before the next one: what came before it is unknown. */
    let afterGap = false;
    /** The value the last edge seen told. */
    let told = this.#stable;
    /** A settle took a value no edge had told: the next edge is that change's own. */
    let owed = false;
    const edge = (active: boolean, at: number): void => {
      seenAt = at;
      const value = active ? 1 : 0;
      told = value;
      const itsOwn = owed;
      owed = false;
      // After a gap an edge is a change even to the stable value: its own direction says where
      // the line came from (the release before a press was among the events dropped, say).
      const same = value === this.#stable && !afterGap;
      afterGap = false;
      if (at - acceptedAt < debounceMs || (same && (itsOwn || acceptedAt === -Infinity))) {
        unsettled = true;
        return;
      }
      acceptedAt = at;
      if (same) {
        // Away and back (see above): one press either way. The line is read once more.
        pending++;
        unsettled = true;
      } else accept(value);
    };
    const lost = (dropped: number | undefined): void => {
      // libgpiod 2.x tells a gap before an event; 1.6 only that later events may be gone.
      if (dropped !== undefined) afterGap = true;
      unsettled = true;
      this.#onDropped(dropped);
    };
    let settleTimer: ReturnType<typeof setTimeout> | undefined;
    let wake: (() => void) | undefined;
    /** The settle's read failed (EIO from an expander on a glitching bus, say): thrown below. */
    let failed: { error: unknown } | undefined;
    const throwIfFailed = (): void => {
      if (failed !== undefined) throw failed.error;
    };
    const settle = (): void => {
      settleTimer = undefined;
      unsettled = false;
      // Closed while its caller held a press (the generator paused at a yield): nothing to read.
      if (this.#closed) return;
      let value: number;
      try {
        value = this.#input.read();
      } catch (error) {
        // Thrown in this timer, it would end the process past every cleanup: the loop throws it.
        failed = { error };
        wake?.();
        return;
      }
      if (value !== this.#stable) {
        // Its edge may still be queued, or on its way: it then says nothing new.
        owed = value !== told;
        acceptedAt = seenAt;
        accept(value);
      }
      wake?.();
    };
    try {
      while (!this.#closed && !signal.aborted) {
        throwIfFailed();
        // One poll at a time: when the settle timer wins a race, the poll stays in flight.
        const polling = this.#polling ??= this.#waiter.wait(this.#input.eventFd);
        const readiness = await Promise.race([
          polling,
          new Promise<"settled">((resolve) => (wake = () => resolve("settled"))),
        ]);
        if (readiness === "cancelled" || this.#closed || signal.aborted) return;
        throwIfFailed();
        if (readiness !== "settled") this.#polling = undefined;
        if (readiness === "readable" || readiness === "hangup") this.#input.readEvents(edge, lost);
        if (readiness === "error") {
          throw new Deno.errors.BadResource(`Cannot wait on ${this.description}`);
        }
        if (unsettled && settleTimer === undefined) {
          // Measured on the kernel's clock from the last edge seen, which is no later than now.
          settleTimer = setTimeout(settle, Math.max(0, acceptedAt + debounceMs - seenAt));
        }
        while (pending > 0) {
          pending--;
          yield;
        }
      }
    } finally {
      if (settleTimer !== undefined) clearTimeout(settleTimer);
      signal.removeEventListener("abort", cancel);
    }
  }

  /** Releases the line and the chip; safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#waiter.close();
    this.#input.close();
    this.#chip.close();
  }

  /** Same as {@link GpioButton.close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Opens the button: pull-up, active low, both edges, debounced. */
export function openGpioButton(options: GpioButtonOptions = {}): GpioButton {
  const debounceMs = options.debounceMs ?? 50;
  if (!Number.isFinite(debounceMs) || debounceMs < 0 || debounceMs > 10_000) {
    throw new RangeError(`Debounce ${debounceMs} ms is outside 0 to 10000`);
  }
  const { chip, offset, description } = findLine(
    options.chip ?? "auto",
    options.line ?? "GPIO4",
  );
  const lib = gpiod();
  let input: InputLine;
  try {
    input = chip.requestInput(offset, {
      consumer: options.consumer ?? "mmap-ipc button",
      activeLow: true,
      bias: "pull-up",
      debounceUs: lib.api === 2 ? Math.round(debounceMs * 1000) : 0,
    });
  } catch (error) {
    const explained = explainRequestError(error, chip, offset);
    chip.close();
    throw explained;
  }
  try {
    return new GpioButton(chip, input, {
      description,
      debounceMs,
      stable: input.read(),
      onDropped: options.onDropped,
    });
  } catch (error) {
    input.close();
    chip.close();
    throw error;
  }
}
