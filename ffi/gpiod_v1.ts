/**
 * libgpiod 1.6 (`libgpiod.so.2`: Debian bookworm, Ubuntu 24.04, Raspberry Pi OS bookworm)
 * through Deno.dlopen.
 *
 * @module
 */

import { attempt, check, Errno, osError, pointerOrErrno } from "./errno.ts";
import { gpioError, lineSubject } from "./gpiod_errors.ts";
import {
  type Bias,
  type Chip,
  type EdgeSink,
  type InputLine,
  type InputSettings,
  KERNEL_EVENT_QUEUE,
  LIBGPIOD_ENV,
  type LineInfo,
  type LossSink,
  type OutputLine,
} from "./gpiod_types.ts";
import { cString, fromCString as text } from "./posix.ts";

/** The libgpiod 1.6 functions this project calls, with their C declarations. */
export const GPIOD_V1_SYMBOLS = {
  /** const char *gpiod_version_string(void); */
  gpiod_version_string: { parameters: [], result: "pointer" },
  /** struct gpiod_chip *gpiod_chip_open(const char *path); */
  gpiod_chip_open: { parameters: ["buffer"], result: "pointer" },
  /** void gpiod_chip_close(struct gpiod_chip *chip); */
  gpiod_chip_close: { parameters: ["pointer"], result: "void" },
  /** const char *gpiod_chip_name(struct gpiod_chip *chip); */
  gpiod_chip_name: { parameters: ["pointer"], result: "pointer" },
  /** const char *gpiod_chip_label(struct gpiod_chip *chip); */
  gpiod_chip_label: { parameters: ["pointer"], result: "pointer" },
  /** unsigned int gpiod_chip_num_lines(struct gpiod_chip *chip); */
  gpiod_chip_num_lines: { parameters: ["pointer"], result: "u32" },
  /** struct gpiod_line *gpiod_chip_get_line(struct gpiod_chip *chip, unsigned int offset); */
  gpiod_chip_get_line: { parameters: ["pointer", "u32"], result: "pointer" },
  /** struct gpiod_line *gpiod_chip_find_line(struct gpiod_chip *chip, const char *name); */
  gpiod_chip_find_line: { parameters: ["pointer", "buffer"], result: "pointer" },
  /** unsigned int gpiod_line_offset(struct gpiod_line *line); */
  gpiod_line_offset: { parameters: ["pointer"], result: "u32" },
  /** const char *gpiod_line_name(struct gpiod_line *line); */
  gpiod_line_name: { parameters: ["pointer"], result: "pointer" },
  /** const char *gpiod_line_consumer(struct gpiod_line *line); */
  gpiod_line_consumer: { parameters: ["pointer"], result: "pointer" },
  /** bool gpiod_line_is_used(struct gpiod_line *line); */
  gpiod_line_is_used: { parameters: ["pointer"], result: "bool" },
  /** int gpiod_line_request(struct gpiod_line *line, const struct gpiod_line_request_config *config, int default_val); */
  gpiod_line_request: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  /** void gpiod_line_release(struct gpiod_line *line); */
  gpiod_line_release: { parameters: ["pointer"], result: "void" },
  /** int gpiod_line_get_value(struct gpiod_line *line); */
  gpiod_line_get_value: { parameters: ["pointer"], result: "i32" },
  /** int gpiod_line_set_value(struct gpiod_line *line, int value); */
  gpiod_line_set_value: { parameters: ["pointer", "i32"], result: "i32" },
  /** int gpiod_line_event_get_fd(struct gpiod_line *line); */
  gpiod_line_event_get_fd: { parameters: ["pointer"], result: "i32" },
  /** int gpiod_line_event_wait(struct gpiod_line *line, const struct timespec *timeout); on a worker thread */
  gpiod_line_event_wait: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  /** int gpiod_line_event_read_multiple(struct gpiod_line *line, struct gpiod_line_event *events, unsigned int num_events); */
  gpiod_line_event_read_multiple: { parameters: ["pointer", "buffer", "u32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

type V1 = Deno.DynamicLibrary<typeof GPIOD_V1_SYMBOLS>["symbols"];

// <gpiod.h> 1.6: request types and flags.
const REQUEST_DIRECTION_OUTPUT = 3;
const REQUEST_EVENT_BOTH_EDGES = 6;
const FLAG_ACTIVE_LOW = 1 << 2;
const BIAS_FLAG: Record<Bias, number> = {
  "as-is": 0,
  disabled: 1 << 3,
  "pull-down": 1 << 4,
  "pull-up": 1 << 5,
};
/** struct gpiod_line_request_config { const char *consumer; int request_type; int flags; } */
const REQUEST_CONFIG_BYTES = 16;
/** struct gpiod_line_event { struct timespec ts; int event_type; } */
const LINE_EVENT_BYTES = 24;
/** GPIOD_LINE_EVENT_RISING_EDGE: the logical value turned 1. */
const LINE_EVENT_RISING_EDGE = 1;

/**
 * libgpiod 1.6 reads line info with the kernel's v1 ioctls; a kernel built without them
 * (CONFIG_GPIO_CDEV_V1 off, as Debian's arm64 and newest kernels are) answers EINVAL.
 */
const NO_V1_INTERFACE_ADVICE =
  "The kernel refused libgpiod 1.6's line-info request: it has no GPIO character device v1 " +
  "interface (CONFIG_GPIO_CDEV_V1), which libgpiod 1.6 needs. Install libgpiod 2.x " +
  `(sudo apt install libgpiod3), which this program prefers, or set ${LIBGPIOD_ENV} to its path`;

/** The error for a failed line-info call: EINVAL on a line that exists means no v1 interface. */
function lineInfoError(action: string, subject: string, errno: number): Error {
  if (errno === Errno.EINVAL) {
    const error = gpioError(action, subject, errno, NO_V1_INTERFACE_ADVICE);
    return new Deno.errors.NotSupported(error.message, { cause: error });
  }
  return gpioError(action, subject, errno);
}

/**
 * Fills a `struct gpiod_line_request_config`, with the consumer string (NUL-terminated) in the
 * same buffer, after the struct: the buffer passed to the call keeps it alive through the call,
 * where a string of its own, reached only by its address, could be collected before libgpiod
 * copied it.
 */
function requestConfig(
  consumer: Uint8Array<ArrayBuffer>,
  type: number,
  flags: number,
): Uint8Array<ArrayBuffer> {
  const config = new Uint8Array(REQUEST_CONFIG_BYTES + consumer.length);
  config.set(consumer, REQUEST_CONFIG_BYTES);
  const view = new DataView(config.buffer);
  const base = Deno.UnsafePointer.value(Deno.UnsafePointer.of(config));
  view.setBigUint64(0, BigInt(base) + BigInt(REQUEST_CONFIG_BYTES), true);
  view.setInt32(8, type, true);
  view.setInt32(12, flags, true);
  return config;
}

/** A requested libgpiod 1.6 line. */
class LineV1 implements InputLine, OutputLine {
  readonly #lib: V1;
  readonly #subject: string;
  #line: Deno.PointerObject | undefined;
  /** Room for a whole kernel queue of events: one read takes all that is queued. */
  readonly #events = new Uint8Array(LINE_EVENT_BYTES * KERNEL_EVENT_QUEUE);
  readonly #eventView = new DataView(this.#events.buffer);
  /** Runs once the line is released (its chip may then close). */
  readonly #onReleased: () => void;
  /** Waits running on worker threads, which the release waits for. */
  #waiting = 0;
  #closed = false;

  constructor(lib: V1, line: Deno.PointerObject, subject: string, onReleased: () => void) {
    this.#lib = lib;
    this.#line = line;
    this.#subject = subject;
    this.#onReleased = onReleased;
  }

  #open(): Deno.PointerObject {
    if (this.#closed || this.#line === undefined) {
      throw new Deno.errors.BadResource(`${this.#subject} is released`);
    }
    return this.#line;
  }

  get eventFd(): number {
    const line = this.#open();
    return attempt(
      () => this.#lib.gpiod_line_event_get_fd(line),
      "get the event fd of",
      this.#subject,
    );
  }

  read(): number {
    const line = this.#open();
    return attempt(() => this.#lib.gpiod_line_get_value(line), "read", this.#subject);
  }

  write(value: number): void {
    const line = this.#open();
    attempt(() => this.#lib.gpiod_line_set_value(line, value ? 1 : 0), "set", this.#subject);
  }

  readEvents(edge: EdgeSink, lost?: LossSink): number {
    // Not made again on failure: the read blocks until an event comes, if none is left.
    const count = check(
      this.#lib.gpiod_line_event_read_multiple(this.#open(), this.#events, KERNEL_EVENT_QUEUE),
      "read edge events of",
      this.#subject,
    );
    const view = this.#eventView;
    for (let i = 0; i < count; i++) {
      // struct gpiod_line_event { struct timespec ts; int event_type; }, read in 32-bit words
      // (no BigInt on this path); tv_nsec is below 1e9, all in its low word.
      const at = i * LINE_EVENT_BYTES;
      const seconds = view.getUint32(at, true) + view.getInt32(at + 4, true) * 2 ** 32;
      const ms = seconds * 1000 + view.getUint32(at + 8, true) / 1e6;
      edge(view.getInt32(at + 16, true) === LINE_EVENT_RISING_EDGE, ms);
    }
    // The v1 interface drops the newest events once its queue is full, leaving no trace: a read
    // that took a full queue may have missed later edges (the last release, say).
    if (count >= KERNEL_EVENT_QUEUE) lost?.(undefined);
    return count;
  }

  async waitEvents(timeoutMs: number): Promise<boolean> {
    const seconds = Math.floor(timeoutMs / 1000);
    const timeout = new BigInt64Array([
      BigInt(seconds),
      BigInt(Math.floor((timeoutMs - seconds * 1000) * 1e6)),
    ]);
    const line = this.#open();
    this.#waiting++;
    let result: number;
    try {
      result = await this.#lib.gpiod_line_event_wait(line, new Uint8Array(timeout.buffer));
    } finally {
      // A close during the wait released nothing yet: the worker thread still used the line.
      if (--this.#waiting === 0 && this.#closed) this.#release();
    }
    this.#open();
    if (result < 0) throw this.#waitError();
    return result > 0;
  }

  /**
   * The wait ran on a worker thread, whose errno is not visible here: a read on this thread
   * shows the cause when the line itself has failed.
   */
  #waitError(): Error {
    this.read();
    return new Error(
      `Cannot wait for edge events of ${this.#subject}: libgpiod's wait failed on a worker ` +
        "thread (its errno is not visible there) while the line still reads",
    );
  }

  /**
   * Releases the line; safe to call twice. A wait in flight returns first (within its timeout)
   * and the release follows it, so no worker thread ever uses a released line.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#waiting === 0) this.#release();
  }

  #release(): void {
    if (this.#line === undefined) return;
    this.#lib.gpiod_line_release(this.#line);
    this.#line = undefined;
    this.#onReleased();
  }

  /** Same as close(), for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** An open chip through libgpiod 1.6. */
export class ChipV1 implements Chip {
  readonly #lib: V1;
  #chip: Deno.PointerObject | undefined;
  /** Lines requested through this chip: libgpiod 1.6 frees them when the chip closes. */
  readonly #lines = new Set<LineV1>();
  #closed = false;
  readonly path: string;
  readonly name: string;
  readonly label: string;
  readonly lineCount: number;

  /** Opens the chip at `path`. */
  constructor(lib: V1, path: string) {
    this.#lib = lib;
    this.path = path;
    const chip = pointerOrErrno(() => lib.gpiod_chip_open(cString(path)));
    if (typeof chip === "number") throw osError("open GPIO chip", path, chip);
    this.#chip = chip;
    this.name = text(lib.gpiod_chip_name(chip));
    this.label = text(lib.gpiod_chip_label(chip));
    this.lineCount = lib.gpiod_chip_num_lines(chip);
  }

  #open(): Deno.PointerObject {
    if (this.#closed || this.#chip === undefined) {
      throw new Deno.errors.BadResource(`The GPIO chip ${this.path} is closed`);
    }
    return this.#chip;
  }

  #line(offset: number): Deno.PointerObject {
    const chip = this.#open();
    const subject = lineSubject(this.path, offset);
    if (!Number.isInteger(offset) || offset < 0 || offset >= this.lineCount) {
      throw new Deno.errors.NotFound(
        `Cannot find GPIO ${subject}: the chip has lines 0 to ${this.lineCount - 1}`,
      );
    }
    const line = pointerOrErrno(() => this.#lib.gpiod_chip_get_line(chip, offset));
    if (typeof line === "number") throw lineInfoError("inspect", subject, line);
    return line;
  }

  findLine(name: string): number | undefined {
    const chip = this.#open();
    const line = pointerOrErrno(() => this.#lib.gpiod_chip_find_line(chip, cString(name)));
    if (typeof line !== "number") return this.#lib.gpiod_line_offset(line);
    if (line === Errno.ENOENT) return undefined;
    throw lineInfoError(`look for line ${JSON.stringify(name)} on`, this.path, line);
  }

  lineInfo(offset: number): LineInfo {
    const line = this.#line(offset);
    return {
      offset,
      name: text(this.#lib.gpiod_line_name(line)),
      used: this.#lib.gpiod_line_is_used(line),
      consumer: text(this.#lib.gpiod_line_consumer(line)),
    };
  }

  #request(offset: number, consumer: string, type: number, flags: number, value: number): LineV1 {
    const line = this.#line(offset);
    const name = cString(consumer);
    const subject = lineSubject(this.path, offset);
    const config = requestConfig(name, type, flags);
    attempt(
      () => this.#lib.gpiod_line_request(line, config, value),
      "request",
      subject,
    );
    const requested: LineV1 = new LineV1(this.#lib, line, subject, () => {
      this.#lines.delete(requested);
      if (this.#closed && this.#lines.size === 0) this.#release();
    });
    this.#lines.add(requested);
    return requested;
  }

  requestInput(offset: number, settings: InputSettings): InputLine {
    // libgpiod 1.6 has no debounce: the caller debounces in software.
    const flags = (settings.activeLow ? FLAG_ACTIVE_LOW : 0) | BIAS_FLAG[settings.bias];
    return this.#request(offset, settings.consumer, REQUEST_EVENT_BOTH_EDGES, flags, 0);
  }

  requestOutput(offset: number, consumer: string, value: number): OutputLine {
    return this.#request(offset, consumer, REQUEST_DIRECTION_OUTPUT, 0, value ? 1 : 0);
  }

  /**
   * Closes the chip, releasing the lines requested through it first (libgpiod 1.6 frees them
   * with the chip, so none may outlive it); safe to call twice. A line with a wait in flight
   * is released when the wait returns, and the chip closes after it.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const line of [...this.#lines]) line.close();
    if (this.#lines.size === 0) this.#release();
  }

  #release(): void {
    if (this.#chip === undefined) return;
    this.#lib.gpiod_chip_close(this.#chip);
    this.#chip = undefined;
  }

  /** Same as close(), for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
