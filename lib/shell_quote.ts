/**
 * Paths as a user can paste them into a shell: the hints the programs print (`echo 0 > PATH`)
 * must name the very file, whatever characters its path holds.
 *
 * @module
 */

/** Characters a POSIX shell takes literally in a word. */
const PLAIN = /^[A-Za-z0-9_./@%+=:,-]+$/;

/**
 * `text` quoted for a POSIX shell: as it is when nothing in it is special, in single quotes
 * otherwise, and in `$'...'` (bash, zsh, ksh) when it holds control characters, so that a
 * newline in a path can neither split the hint nor forge a log line.
 *
 * @example
 * ```ts
 * import { shellQuote } from "./shell_quote.ts";
 *
 * console.log(shellQuote("/tmp/my button.fifo")); // '/tmp/my button.fifo'
 * ```
 */
export function shellQuote(text: string): string {
  if (PLAIN.test(text)) return text;
  // deno-lint-ignore no-control-regex
  if (!/[\x00-\x1f\x7f]/.test(text)) return `'${text.replaceAll("'", `'\\''`)}'`;
  const escaped = [...text].map((char) => {
    const code = char.codePointAt(0) ?? 0;
    if (char === "'" || char === "\\") return `\\${char}`;
    return code < 0x20 || code === 0x7f ? `\\x${code.toString(16).padStart(2, "0")}` : char;
  }).join("");
  return `$'${escaped}'`;
}
