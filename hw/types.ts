/**
 * What the button and LED processes need from hardware. The PC build implements these with a
 * FIFO and the console, the Pi build with GPIO lines.
 *
 * @module
 */

/** A source of button presses. */
export interface Button extends AsyncDisposable {
  /** Yields once per press until `signal` aborts or the button is closed. */
  presses(signal: AbortSignal): AsyncIterable<void>;
  /** Releases the button; safe to call twice. */
  close(): Promise<void>;
}

/** Something that shows on/off. */
export interface Led extends Disposable {
  /** Turns the LED on or off. */
  set(on: boolean): void;
  /** Releases the LED; safe to call twice. */
  close(): void;
}
