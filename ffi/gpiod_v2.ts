/**
 * libgpiod 2.x (`libgpiod.so.3`: Debian trixie, Raspberry Pi OS trixie) through Deno.dlopen.
 *
 * @module
 */

import { attempt, check, Errno, lastErrno, osError, pointerOrErrno, retryFailed } from "./errno.ts";
import { gpioError, lineSubject } from "./gpiod_errors.ts";
import {
  type Bias,
  type Chip,
  type EdgeSink,
  type InputLine,
  type InputSettings,
  KERNEL_EVENT_QUEUE,
  type LineInfo,
  type LossSink,
  type OutputLine,
} from "./gpiod_types.ts";
import { cString, fromCString as text } from "./posix.ts";

/** The libgpiod 2.x functions this project calls, with their C declarations. */
export const GPIOD_V2_SYMBOLS = {
  /** const char *gpiod_api_version(void); */
  gpiod_api_version: { parameters: [], result: "pointer" },
  /** struct gpiod_chip *gpiod_chip_open(const char *path); */
  gpiod_chip_open: { parameters: ["buffer"], result: "pointer" },
  /** void gpiod_chip_close(struct gpiod_chip *chip); */
  gpiod_chip_close: { parameters: ["pointer"], result: "void" },
  /** struct gpiod_chip_info *gpiod_chip_get_info(struct gpiod_chip *chip); */
  gpiod_chip_get_info: { parameters: ["pointer"], result: "pointer" },
  /** void gpiod_chip_info_free(struct gpiod_chip_info *info); */
  gpiod_chip_info_free: { parameters: ["pointer"], result: "void" },
  /** const char *gpiod_chip_info_get_name(struct gpiod_chip_info *info); */
  gpiod_chip_info_get_name: { parameters: ["pointer"], result: "pointer" },
  /** const char *gpiod_chip_info_get_label(struct gpiod_chip_info *info); */
  gpiod_chip_info_get_label: { parameters: ["pointer"], result: "pointer" },
  /** size_t gpiod_chip_info_get_num_lines(struct gpiod_chip_info *info); */
  gpiod_chip_info_get_num_lines: { parameters: ["pointer"], result: "usize" },
  /** int gpiod_chip_get_line_offset_from_name(struct gpiod_chip *chip, const char *name); */
  gpiod_chip_get_line_offset_from_name: { parameters: ["pointer", "buffer"], result: "i32" },
  /** struct gpiod_line_info *gpiod_chip_get_line_info(struct gpiod_chip *chip, unsigned int offset); */
  gpiod_chip_get_line_info: { parameters: ["pointer", "u32"], result: "pointer" },
  /** void gpiod_line_info_free(struct gpiod_line_info *info); */
  gpiod_line_info_free: { parameters: ["pointer"], result: "void" },
  /** const char *gpiod_line_info_get_name(struct gpiod_line_info *info); */
  gpiod_line_info_get_name: { parameters: ["pointer"], result: "pointer" },
  /** bool gpiod_line_info_is_used(struct gpiod_line_info *info); */
  gpiod_line_info_is_used: { parameters: ["pointer"], result: "bool" },
  /** const char *gpiod_line_info_get_consumer(struct gpiod_line_info *info); */
  gpiod_line_info_get_consumer: { parameters: ["pointer"], result: "pointer" },

  /** struct gpiod_line_settings *gpiod_line_settings_new(void); */
  gpiod_line_settings_new: { parameters: [], result: "pointer" },
  /** void gpiod_line_settings_free(struct gpiod_line_settings *settings); */
  gpiod_line_settings_free: { parameters: ["pointer"], result: "void" },
  /** int gpiod_line_settings_set_direction(struct gpiod_line_settings *settings, enum gpiod_line_direction direction); */
  gpiod_line_settings_set_direction: { parameters: ["pointer", "i32"], result: "i32" },
  /** int gpiod_line_settings_set_edge_detection(struct gpiod_line_settings *settings, enum gpiod_line_edge edge); */
  gpiod_line_settings_set_edge_detection: { parameters: ["pointer", "i32"], result: "i32" },
  /** int gpiod_line_settings_set_bias(struct gpiod_line_settings *settings, enum gpiod_line_bias bias); */
  gpiod_line_settings_set_bias: { parameters: ["pointer", "i32"], result: "i32" },
  /** void gpiod_line_settings_set_active_low(struct gpiod_line_settings *settings, bool active_low); */
  gpiod_line_settings_set_active_low: { parameters: ["pointer", "bool"], result: "void" },
  /** void gpiod_line_settings_set_debounce_period_us(struct gpiod_line_settings *settings, unsigned long period); */
  gpiod_line_settings_set_debounce_period_us: { parameters: ["pointer", "u64"], result: "void" },
  /** int gpiod_line_settings_set_output_value(struct gpiod_line_settings *settings, enum gpiod_line_value value); */
  gpiod_line_settings_set_output_value: { parameters: ["pointer", "i32"], result: "i32" },

  /** struct gpiod_line_config *gpiod_line_config_new(void); */
  gpiod_line_config_new: { parameters: [], result: "pointer" },
  /** void gpiod_line_config_free(struct gpiod_line_config *config); */
  gpiod_line_config_free: { parameters: ["pointer"], result: "void" },
  /** int gpiod_line_config_add_line_settings(struct gpiod_line_config *config, const unsigned int *offsets, size_t num_offsets, struct gpiod_line_settings *settings); */
  gpiod_line_config_add_line_settings: {
    parameters: ["pointer", "buffer", "usize", "pointer"],
    result: "i32",
  },
  /** struct gpiod_request_config *gpiod_request_config_new(void); */
  gpiod_request_config_new: { parameters: [], result: "pointer" },
  /** void gpiod_request_config_free(struct gpiod_request_config *config); */
  gpiod_request_config_free: { parameters: ["pointer"], result: "void" },
  /** void gpiod_request_config_set_consumer(struct gpiod_request_config *config, const char *consumer); */
  gpiod_request_config_set_consumer: { parameters: ["pointer", "buffer"], result: "void" },
  /** struct gpiod_line_request *gpiod_chip_request_lines(struct gpiod_chip *chip, struct gpiod_request_config *req_cfg, struct gpiod_line_config *line_cfg); */
  gpiod_chip_request_lines: { parameters: ["pointer", "pointer", "pointer"], result: "pointer" },

  /** void gpiod_line_request_release(struct gpiod_line_request *request); */
  gpiod_line_request_release: { parameters: ["pointer"], result: "void" },
  /** enum gpiod_line_value gpiod_line_request_get_value(struct gpiod_line_request *request, unsigned int offset); */
  gpiod_line_request_get_value: { parameters: ["pointer", "u32"], result: "i32" },
  /** int gpiod_line_request_set_value(struct gpiod_line_request *request, unsigned int offset, enum gpiod_line_value value); */
  gpiod_line_request_set_value: { parameters: ["pointer", "u32", "i32"], result: "i32" },
  /** int gpiod_line_request_get_fd(struct gpiod_line_request *request); */
  gpiod_line_request_get_fd: { parameters: ["pointer"], result: "i32" },
  /** int gpiod_line_request_wait_edge_events(struct gpiod_line_request *request, int64_t timeout_ns); on a worker thread */
  gpiod_line_request_wait_edge_events: {
    parameters: ["pointer", "i64"],
    result: "i32",
    nonblocking: true,
  },
  /** int gpiod_line_request_read_edge_events(struct gpiod_line_request *request, struct gpiod_edge_event_buffer *buffer, size_t max_events); */
  gpiod_line_request_read_edge_events: {
    parameters: ["pointer", "pointer", "usize"],
    result: "i32",
  },
  /** struct gpiod_edge_event_buffer *gpiod_edge_event_buffer_new(size_t capacity); */
  gpiod_edge_event_buffer_new: { parameters: ["usize"], result: "pointer" },
  /** void gpiod_edge_event_buffer_free(struct gpiod_edge_event_buffer *buffer); */
  gpiod_edge_event_buffer_free: { parameters: ["pointer"], result: "void" },
  /** struct gpiod_edge_event *gpiod_edge_event_buffer_get_event(struct gpiod_edge_event_buffer *buffer, unsigned long index); */
  gpiod_edge_event_buffer_get_event: { parameters: ["pointer", "usize"], result: "pointer" },
  /** enum gpiod_edge_event_type gpiod_edge_event_get_event_type(struct gpiod_edge_event *event); */
  gpiod_edge_event_get_event_type: { parameters: ["pointer"], result: "i32" },
  /** uint64_t gpiod_edge_event_get_timestamp_ns(struct gpiod_edge_event *event); */
  gpiod_edge_event_get_timestamp_ns: { parameters: ["pointer"], result: "u64" },
  /** unsigned long gpiod_edge_event_get_line_seqno(struct gpiod_edge_event *event); */
  gpiod_edge_event_get_line_seqno: { parameters: ["pointer"], result: "usize" },
} as const satisfies Deno.ForeignLibraryInterface;

type V2 = Deno.DynamicLibrary<typeof GPIOD_V2_SYMBOLS>["symbols"];

// <gpiod.h> 2.x enums.
const DIRECTION_INPUT = 2;
const DIRECTION_OUTPUT = 3;
const EDGE_BOTH = 4;
const BIAS: Record<Bias, number> = { "as-is": 1, disabled: 3, "pull-up": 4, "pull-down": 5 };
/** A whole kernel queue: one read takes all that is queued. */
const EVENT_BUFFER_CAPACITY = KERNEL_EVENT_QUEUE;
/** GPIOD_EDGE_EVENT_RISING_EDGE: the logical value turned 1. */
const EDGE_EVENT_RISING = 1;

/** Builds settings, a line config and a request config, requests, and frees the builders. */
function requestLine(
  lib: V2,
  chip: Deno.PointerObject,
  chipPath: string,
  offset: number,
  consumer: string,
  configure: (settings: Deno.PointerObject) => void,
): Deno.PointerObject {
  const subject = lineSubject(chipPath, offset);
  const settings = lib.gpiod_line_settings_new();
  const lineConfig = lib.gpiod_line_config_new();
  const requestConfig = lib.gpiod_request_config_new();
  try {
    if (settings === null || lineConfig === null || requestConfig === null) {
      throw osError("configure", subject, lastErrno());
    }
    configure(settings);
    const offsets = new Uint32Array([offset]);
    attempt(
      () => lib.gpiod_line_config_add_line_settings(lineConfig, offsets, 1n, settings),
      "configure",
      subject,
    );
    lib.gpiod_request_config_set_consumer(requestConfig, cString(consumer));
    const request = pointerOrErrno(() =>
      lib.gpiod_chip_request_lines(chip, requestConfig, lineConfig)
    );
    if (typeof request === "number") throw osError("request", subject, request);
    return request;
  } finally {
    if (requestConfig !== null) lib.gpiod_request_config_free(requestConfig);
    if (lineConfig !== null) lib.gpiod_line_config_free(lineConfig);
    if (settings !== null) lib.gpiod_line_settings_free(settings);
  }
}

/** A libgpiod 2.x line request of one line. */
class RequestV2 implements InputLine, OutputLine {
  readonly #lib: V2;
  readonly #offset: number;
  readonly #subject: string;
  #request: Deno.PointerObject | undefined;
  #events: Deno.PointerObject | undefined;
  /** The events read, copied out of libgpiod's buffer before any is told. */
  readonly #rising = new Uint8Array(EVENT_BUFFER_CAPACITY);
  readonly #times = new Float64Array(EVENT_BUFFER_CAPACITY);
  /** How many events the kernel dropped just before each one read. */
  readonly #dropped = new Uint32Array(EVENT_BUFFER_CAPACITY);
  /** The line sequence number of the last event read: the kernel numbers them from 1. */
  #lastSeqno = 0;
  /** Waits running on worker threads, which the release waits for. */
  #waiting = 0;
  #closed = false;
  /** Tells the chip that made it that it closed. */
  onClose: () => void = () => {};

  constructor(
    lib: V2,
    request: Deno.PointerObject,
    offset: number,
    subject: string,
    events: boolean,
  ) {
    this.#lib = lib;
    this.#request = request;
    this.#offset = offset;
    this.#subject = subject;
    if (events) {
      const buffer = pointerOrErrno(() =>
        lib.gpiod_edge_event_buffer_new(BigInt(EVENT_BUFFER_CAPACITY))
      );
      if (typeof buffer === "number") {
        lib.gpiod_line_request_release(request);
        throw osError("allocate an event buffer for", subject, buffer);
      }
      this.#events = buffer;
    }
  }

  #open(): Deno.PointerObject {
    if (this.#closed || this.#request === undefined) {
      throw new Deno.errors.BadResource(`${this.#subject} is released`);
    }
    return this.#request;
  }

  get eventFd(): number {
    const request = this.#open();
    return attempt(
      () => this.#lib.gpiod_line_request_get_fd(request),
      "get the fd of",
      this.#subject,
    );
  }

  read(): number {
    const request = this.#open();
    return attempt(
      () => this.#lib.gpiod_line_request_get_value(request, this.#offset),
      "read",
      this.#subject,
    );
  }

  write(value: number): void {
    const request = this.#open();
    attempt(
      () => this.#lib.gpiod_line_request_set_value(request, this.#offset, value ? 1 : 0),
      "set",
      this.#subject,
    );
  }

  readEvents(edge: EdgeSink, lost?: LossSink): number {
    const events = this.#events;
    if (events === undefined) throw new TypeError(`${this.#subject} has no edge detection`);
    // Not made again on failure: the read blocks until an event comes, if none is left.
    const count = check(
      this.#lib.gpiod_line_request_read_edge_events(
        this.#open(),
        events,
        BigInt(EVENT_BUFFER_CAPACITY),
      ),
      "read edge events of",
      this.#subject,
    );
    // All read out of the buffer before any is told: `edge` may close the request, which frees
    // the buffer (and the events in it) at once.
    const rising = this.#rising;
    const times = this.#times;
    const dropped = this.#dropped;
    let read = 0;
    for (let i = 0; i < count; i++) {
      const event = this.#lib.gpiod_edge_event_buffer_get_event(events, BigInt(i));
      if (event === null) continue;
      // A full queue drops its oldest event (linereq_put_event), whose number is then missing.
      const seqno = Number(this.#lib.gpiod_edge_event_get_line_seqno(event));
      dropped[read] = seqno > this.#lastSeqno + 1 ? seqno - this.#lastSeqno - 1 : 0;
      this.#lastSeqno = seqno;
      rising[read] = this.#lib.gpiod_edge_event_get_event_type(event) === EDGE_EVENT_RISING ? 1 : 0;
      times[read++] = Number(this.#lib.gpiod_edge_event_get_timestamp_ns(event)) / 1e6;
    }
    for (let i = 0; i < read; i++) {
      if (dropped[i] > 0) lost?.(dropped[i]);
      edge(rising[i] === 1, times[i]);
    }
    return count;
  }

  async waitEvents(timeoutMs: number): Promise<boolean> {
    const request = this.#open();
    this.#waiting++;
    let result: number;
    try {
      result = await this.#lib.gpiod_line_request_wait_edge_events(
        request,
        BigInt(Math.round(timeoutMs * 1e6)),
      );
    } finally {
      // A close during the wait released nothing yet: the worker thread still used the request.
      if (--this.#waiting === 0 && this.#closed) this.#release();
    }
    this.#open();
    if (result < 0) throw this.#waitError();
    return result > 0;
  }

  /**
   * The wait ran on a worker thread, whose errno is not visible here: a read on this thread
   * shows the cause when the request itself has failed.
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
   * and the release follows it, so no worker thread ever uses a freed request.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.onClose();
    if (this.#waiting === 0) this.#release();
  }

  #release(): void {
    if (this.#request === undefined) return;
    this.#lib.gpiod_line_request_release(this.#request);
    this.#request = undefined;
    if (this.#events !== undefined) this.#lib.gpiod_edge_event_buffer_free(this.#events);
    this.#events = undefined;
  }

  /** Same as close(), for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** An open chip through libgpiod 2.x. */
export class ChipV2 implements Chip {
  readonly #lib: V2;
  #chip: Deno.PointerObject | undefined;
  /** Requests made through this chip, closed with it (as libgpiod 1.6 does with its lines). */
  readonly #requests = new Set<RequestV2>();
  readonly path: string;
  readonly name: string;
  readonly label: string;
  readonly lineCount: number;

  /** Opens the chip at `path`. */
  constructor(lib: V2, path: string) {
    this.#lib = lib;
    this.path = path;
    const chip = pointerOrErrno(() => lib.gpiod_chip_open(cString(path)));
    if (typeof chip === "number") throw osError("open GPIO chip", path, chip);
    this.#chip = chip;
    const info = pointerOrErrno(() => lib.gpiod_chip_get_info(chip));
    if (typeof info === "number") {
      lib.gpiod_chip_close(chip);
      throw osError("inspect GPIO chip", path, info);
    }
    this.name = text(lib.gpiod_chip_info_get_name(info));
    this.label = text(lib.gpiod_chip_info_get_label(info));
    this.lineCount = Number(lib.gpiod_chip_info_get_num_lines(info));
    lib.gpiod_chip_info_free(info);
  }

  #open(): Deno.PointerObject {
    if (this.#chip === undefined) {
      throw new Deno.errors.BadResource(`The GPIO chip ${this.path} is closed`);
    }
    return this.#chip;
  }

  findLine(name: string): number | undefined {
    const chip = this.#open();
    const find = (): number => this.#lib.gpiod_chip_get_line_offset_from_name(chip, cString(name));
    const offset = find();
    if (offset >= 0) return offset;
    const retried = retryFailed(find);
    if (retried.ok) return retried.result;
    if (retried.errno === Errno.ENOENT) return undefined;
    throw gpioError(`look for line ${JSON.stringify(name)} on`, this.path, retried.errno);
  }

  lineInfo(offset: number): LineInfo {
    const chip = this.#open();
    const subject = lineSubject(this.path, offset);
    if (!Number.isInteger(offset) || offset < 0 || offset >= this.lineCount) {
      throw new Deno.errors.NotFound(
        `Cannot find GPIO ${subject}: the chip has lines 0 to ${this.lineCount - 1}`,
      );
    }
    const info = pointerOrErrno(() => this.#lib.gpiod_chip_get_line_info(chip, offset));
    if (typeof info === "number") throw osError("inspect", subject, info);
    try {
      return {
        offset,
        name: text(this.#lib.gpiod_line_info_get_name(info)),
        used: this.#lib.gpiod_line_info_is_used(info),
        consumer: text(this.#lib.gpiod_line_info_get_consumer(info)),
      };
    } finally {
      this.#lib.gpiod_line_info_free(info);
    }
  }

  requestInput(offset: number, settings: InputSettings): InputLine {
    const lib = this.#lib;
    const request = requestLine(lib, this.#open(), this.path, offset, settings.consumer, (s) => {
      lib.gpiod_line_settings_set_direction(s, DIRECTION_INPUT);
      lib.gpiod_line_settings_set_edge_detection(s, EDGE_BOTH);
      lib.gpiod_line_settings_set_bias(s, BIAS[settings.bias]);
      lib.gpiod_line_settings_set_active_low(s, settings.activeLow);
      lib.gpiod_line_settings_set_debounce_period_us(s, BigInt(settings.debounceUs));
    });
    return this.#track(new RequestV2(lib, request, offset, lineSubject(this.path, offset), true));
  }

  requestOutput(offset: number, consumer: string, value: number): OutputLine {
    const lib = this.#lib;
    const request = requestLine(lib, this.#open(), this.path, offset, consumer, (s) => {
      lib.gpiod_line_settings_set_direction(s, DIRECTION_OUTPUT);
      lib.gpiod_line_settings_set_output_value(s, value ? 1 : 0);
    });
    return this.#track(new RequestV2(lib, request, offset, lineSubject(this.path, offset), false));
  }

  #track(request: RequestV2): RequestV2 {
    this.#requests.add(request);
    request.onClose = () => this.#requests.delete(request);
    return request;
  }

  /**
   * Closes the chip and the requests made through it (a request with a wait in flight is
   * released when the wait returns); safe to call twice.
   */
  close(): void {
    if (this.#chip === undefined) return;
    for (const request of [...this.#requests]) request.close();
    this.#lib.gpiod_chip_close(this.#chip);
    this.#chip = undefined;
  }

  /** Same as close(), for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
