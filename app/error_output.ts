/**
 * What a crash report quotes of a child's error output: the first line that reads like an
 * error and the last few lines, each cut to a bounded length. A stack trace alone would push the
 * error's own message out of a plain tail.
 *
 * @module
 */

/**
 * A line that reads like an error: Deno's `error: Uncaught ...`, a log line at `[ERR]`, or one
 * in the journal format at sd-daemon priority 0 to 3 (`<3>mmap-ipc.led: ...`).
 */
const ERROR_LINE = /\b(error|exception|panic|fatal|uncaught)\b|\[(ERR|FTL)\]|^<[0-3]>/i;

/** The longest a quoted line gets, in UTF-16 code units (a bound on the report's size). */
export const MAX_LINE_LENGTH = 500;

/** How many of the last lines are kept. */
export const TAIL_LINES = 5;

function clip(line: string): string {
  return line.length > MAX_LINE_LENGTH ? `${line.slice(0, MAX_LINE_LENGTH)} [cut]` : line;
}

/** The error output of one run of a child; see the module description. */
export class ErrorOutput {
  #first: { line: string; index: number } | undefined;
  #tail: string[] = [];
  #count = 0;

  /** Takes the next line, without its terminal colours (Deno colours `error:` on a pipe too). */
  add(coloured: string): void {
    // deno-lint-ignore no-control-regex
    const line = coloured.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
    if (this.#first === undefined && ERROR_LINE.test(line)) {
      this.#first = { line: clip(line), index: this.#count };
    }
    this.#tail.push(clip(line));
    if (this.#tail.length > TAIL_LINES) this.#tail.shift();
    this.#count++;
  }

  /**
   * The first error line (when the tail no longer holds it), how many lines were left out after
   * it, and the tail, joined with ` | `; empty when nothing was printed.
   */
  summary(): string {
    const tailStart = this.#count - this.#tail.length;
    if (this.#first === undefined || this.#first.index >= tailStart) return this.#tail.join(" | ");
    const skipped = tailStart - this.#first.index - 1;
    return [
      this.#first.line,
      ...(skipped > 0 ? [`(${skipped} more line${skipped === 1 ? "" : "s"})`] : []),
      ...this.#tail,
    ].join(" | ");
  }
}
