/**
 * What a crash report quotes of a child's error output: its last error line and the lines after
 * it (a stack trace), each cut to a bounded length; without an error line, its last lines. A
 * line logged below error level (a warning) is never quoted as the error: a child warns of
 * things it handled (a dropped message, a path it looks at instead of watching), and the word
 * "error" in such a line (`Input/output error`) named it the crash's cause before.
 *
 * @module
 */

/**
 * A line that reads like an error: Deno's `error: Uncaught ...`, a log line at `[ERR]`, or one
 * in the journal format at sd-daemon priority 0 to 3 (`<3>mmap-ipc.led: ...`).
 */
const ERROR_LINE = /\b(error|exception|panic|fatal|uncaught)\b|\[(ERR|FTL)\]|^<[0-3]>/i;

/**
 * A line below error level: our log line at `[WRN]`, `[INF]` or `[DBG]` (after its timestamp)
 * or at journal priority 4 to 7, or Deno's own `Warning ...`.
 */
const BELOW_ERROR_LINE = /^(\S+ \S+ )?\[(WRN|INF|DBG)\] |^<[4-7]>|^warning\b/i;

/**
 * Deno's report of the error that ends the process: the lines after it (the source line, a
 * caret, the stack, any of which may say "Error") are its context, never a later error.
 */
const FATAL_LINE = /^error: /i;

/** The longest a quoted line gets, in UTF-16 code units (a bound on the report's size). */
export const MAX_LINE_LENGTH = 500;

/** How many of the last lines are kept. */
export const TAIL_LINES = 5;

function clip(line: string): string {
  return line.length > MAX_LINE_LENGTH ? `${line.slice(0, MAX_LINE_LENGTH)} [cut]` : line;
}

/** The error output of one run of a child; see the module description. */
export class ErrorOutput {
  /** The last error line, and its index among the lines not below error level. */
  #error: { line: string; index: number } | undefined;
  /** Whether the error line is Deno's report of the error that ended the process. */
  #fatal = false;
  /** The last lines not below error level. */
  #tail: string[] = [];
  /** How many lines not below error level there were. */
  #count = 0;
  /** The last lines of all, for a report on a child that printed no error at all. */
  #all: string[] = [];

  /** Takes the next line, without its terminal colours (Deno colours `error:` on a pipe too). */
  add(coloured: string): void {
    // deno-lint-ignore no-control-regex
    const line = clip(coloured.replace(/\x1b\[[0-9;]*[A-Za-z]/g, ""));
    keepLast(this.#all, line);
    if (BELOW_ERROR_LINE.test(line)) return;
    if (FATAL_LINE.test(line) || (!this.#fatal && ERROR_LINE.test(line))) {
      this.#error = { line, index: this.#count };
      this.#fatal ||= FATAL_LINE.test(line);
    }
    keepLast(this.#tail, line);
    this.#count++;
  }

  /**
   * The last error line, how many lines after it were left out and the last lines after it,
   * joined with ` | `; without an error line the last lines not below error level, or when
   * there are none, `no error line; its last lines: ` and its last lines of all; empty when
   * nothing was printed.
   */
  summary(): string {
    const tailStart = this.#count - this.#tail.length;
    if (this.#error === undefined) {
      if (this.#tail.length > 0) return this.#tail.join(" | ");
      return this.#all.length > 0 ? `no error line; its last lines: ${this.#all.join(" | ")}` : "";
    }
    const after = this.#tail.slice(Math.max(0, this.#error.index + 1 - tailStart));
    const skipped = this.#count - this.#error.index - 1 - after.length;
    return [
      this.#error.line,
      ...(skipped > 0 ? [`(${skipped} more line${skipped === 1 ? "" : "s"})`] : []),
      ...after,
    ].join(" | ");
  }
}

/** Appends `line` to `lines`, keeping the last {@link TAIL_LINES}. */
function keepLast(lines: string[], line: string): void {
  lines.push(line);
  if (lines.length > TAIL_LINES) lines.shift();
}
