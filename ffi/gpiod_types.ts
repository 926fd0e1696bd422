/**
 * What the rest of the project sees of a GPIO chip, whichever libgpiod API (1.6 or 2.x) is
 * underneath. Values are logical: with `activeLow` a line that reads 1 is electrically low.
 *
 * @module
 */

/** The environment variable that names the libgpiod to load (a path or a soname). */
export const LIBGPIOD_ENV = "MMAP_IPC_LIBGPIOD";

/** Pull resistor for an input. */
export type Bias = "as-is" | "disabled" | "pull-up" | "pull-down";

/** What is known of one line of a chip. */
export interface LineInfo {
  /** The line's offset in its chip. */
  offset: number;
  /** Its name, such as `GPIO4`; empty when it has none. */
  name: string;
  /** Whether some process holds it. */
  used: boolean;
  /** Who holds it, when someone does. */
  consumer: string;
}

/** Settings for an input line that reports edges. */
export interface InputSettings {
  /** Shown to others as the line's consumer. */
  consumer: string;
  /** Invert the line: electrically low reads as 1. */
  activeLow: boolean;
  /** Pull resistor. */
  bias: Bias;
  /** Debounce in the kernel, where the API supports it (libgpiod 2.x); 0 = none. */
  debounceUs: number;
}

/** Takes one edge event: see {@link InputLine.readEvents}. */
export type EdgeSink = (active: boolean, timestampMs: number) => void;

/**
 * Told that the kernel's queue of the line's edge events overflowed: see
 * {@link InputLine.readEvents}. `dropped` is how many events it dropped there, or undefined when
 * that cannot be known (libgpiod 1.6, where some may have been).
 */
export type LossSink = (dropped: number | undefined) => void;

/**
 * How many edge events the kernel queues per line request (its default, which this project
 * keeps). Once full, the v1 interface (libgpiod 1.6) drops each newer event, the v2 interface
 * (libgpiod 2.x) the oldest queued one.
 */
export const KERNEL_EVENT_QUEUE = 16;

/** A requested input line with edge events (both edges). */
export interface InputLine extends Disposable {
  /** The logical value now. */
  read(): number;
  /** An fd that polls readable when edge events are queued. */
  readonly eventFd: number;
  /**
   * Reads the queued edge events (after the fd polled readable), handing each to `edge` in
   * order: whether the line turned active (a rising edge of the logical value) and when, in ms
   * of the kernel's clock for the line's events (only differences between them mean anything).
   * Returns how many.
   *
   * The kernel queues {@link KERNEL_EVENT_QUEUE} events per request and drops events once the
   * queue is full (a reader stalled through many edges), and `lost` is told where in the
   * sequence they went. With libgpiod 2.x the kernel dropped the oldest, told for sure by a gap
   * in the events' sequence numbers: `lost` gets how many, before the first event after them
   * (which then follows an unknown state). With libgpiod 1.6 it dropped the newest, and the
   * events have no sequence numbers: a read that took a full queue may have lost later events
   * (the events read may then not end where the line is), and `lost` gets undefined after
   * them, also when exactly that many were queued and none was lost.
   */
  readEvents(edge: EdgeSink, lost?: LossSink): number;
  /**
   * Waits for edge events with libgpiod's own wait function on a worker thread (the event
   * loop stays free); true when events are queued, false on timeout.
   */
  waitEvents(timeoutMs: number): Promise<boolean>;
  /** Releases the line; safe to call twice. */
  close(): void;
}

/** A requested output line. */
export interface OutputLine extends Disposable {
  /** Sets the logical value. */
  write(value: number): void;
  /** The logical value now. */
  read(): number;
  /** Releases the line; safe to call twice. */
  close(): void;
}

/** An open GPIO chip. */
export interface Chip extends Disposable {
  /** Its device path, such as `/dev/gpiochip0`. */
  readonly path: string;
  /** Its name, such as `gpiochip0`. */
  readonly name: string;
  /** Its label, such as `pinctrl-bcm2711`. */
  readonly label: string;
  /** How many lines it has. */
  readonly lineCount: number;
  /**
   * The offset of the line called `name`, or undefined when the chip has none; throws when
   * the chip's lines cannot be read.
   */
  findLine(name: string): number | undefined;
  /** What is known of the line at `offset`; throws `NotFound` when the chip has no such line. */
  lineInfo(offset: number): LineInfo;
  /** Requests the line at `offset` as an input with edge events. */
  requestInput(offset: number, settings: InputSettings): InputLine;
  /** Requests the line at `offset` as an output starting at `value`. */
  requestOutput(offset: number, consumer: string, value: number): OutputLine;
  /** Closes the chip and releases the lines requested from it (one waiting, once its wait returns); safe to call twice. */
  close(): void;
}
