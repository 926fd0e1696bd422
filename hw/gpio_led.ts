/**
 * The Pi build's LED: a GPIO output that starts Off and is released on close.
 *
 * @module
 */

import { type Chip, explainRequestError, findLine, type OutputLine } from "../ffi/gpiod.ts";
import type { Led } from "./types.ts";

/** Options for {@link openGpioLed}. */
export interface GpioLedOptions {
  /** The chip: path, name, number, label or `auto` (default). */
  chip?: string;
  /** The line: name or offset. Default `GPIO17` (physical pin 11 on a Raspberry Pi). */
  line?: string;
  /** The consumer name others see on the line. */
  consumer?: string;
  /** Called after each change, for a log line. */
  onChange?: (on: boolean) => void;
}

/** An LED on a GPIO line; see {@link openGpioLed}. */
export class GpioLed implements Led {
  readonly #chip: Chip;
  readonly #output: OutputLine;
  readonly #onChange: (on: boolean) => void;
  /** Where the line is, for messages. */
  readonly description: string;
  #closed = false;

  /** Not for direct use: call {@link openGpioLed}. */
  constructor(
    chip: Chip,
    output: OutputLine,
    description: string,
    onChange: (on: boolean) => void,
  ) {
    this.#chip = chip;
    this.#output = output;
    this.description = description;
    this.#onChange = onChange;
  }

  /** Drives the line high (on) or low (off). */
  set(on: boolean): void {
    if (this.#closed) throw new Deno.errors.BadResource(`The LED on ${this.description} is closed`);
    this.#output.write(on ? 1 : 0);
    this.#onChange(on);
  }

  /** Turns the LED off and releases the line; safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#output.write(0);
    } finally {
      this.#output.close();
      this.#chip.close();
    }
  }

  /** Same as close(), for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Opens the LED's line as an output, Off. */
export function openGpioLed(options: GpioLedOptions = {}): GpioLed {
  const { chip, offset, description } = findLine(
    options.chip ?? "auto",
    options.line ?? "GPIO17",
  );
  let output: OutputLine;
  try {
    output = chip.requestOutput(offset, options.consumer ?? "mmap-ipc led", 0);
  } catch (error) {
    const explained = explainRequestError(error, chip, offset);
    chip.close();
    throw explained;
  }
  return new GpioLed(chip, output, description, options.onChange ?? (() => {}));
}
