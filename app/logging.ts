/**
 * Logging for the button/LED programs: lines to the console, and optionally the same lines to
 * the system log, as the original C programs logged. On a terminal each line has a timestamp;
 * under systemd (`JOURNAL_STREAM` set) each line instead starts with its sd-daemon priority
 * prefix (`<6>` info, `<4>` warning, ...; see sd-daemon(3)), so journald files it at the right
 * priority and adds the only timestamp.
 *
 * It is this small on purpose: LogTape, used before, cost each process about 6 MiB of memory
 * (a fifth of a bare Deno's) for the four methods and two sinks used here.
 *
 * @module
 */

import { openSyslog, type SyslogLevel, writeSyslog } from "../ffi/syslog.ts";
import { consoleOutput } from "./console_output.ts";

/** The levels `--log-level` accepts, lowest first. */
export const LOG_LEVELS = ["debug", "info", "warning", "error"] as const;

/** One of {@link LOG_LEVELS}. */
export type LevelName = typeof LOG_LEVELS[number];

/** The console formats `--log-format` accepts: see the module description. */
export const LOG_FORMATS = ["text", "journal"] as const;

/** One of {@link LOG_FORMATS}. */
export type LogFormat = typeof LOG_FORMATS[number];

/** One line to log. */
export interface LogRecord {
  /** Where it comes from, such as `["mmap-ipc", "led"]`. */
  readonly category: readonly string[];
  /** How severe it is. */
  readonly level: LevelName;
  /** The text. */
  readonly message: string;
  /** When, in ms since the epoch. */
  readonly timestamp: number;
}

/** Turns a record into one line of text, without the line break. */
export type LogFormatter = (record: LogRecord) => string;

/** Where one part of the system logs; see {@link logger}. */
export interface Logger {
  /** Details for finding a fault; shown with `--log-level debug`. */
  debug(message: string): void;
  /** What happens in normal operation. */
  info(message: string): void;
  /** Something went wrong and was handled. */
  warn(message: string): void;
  /** Something went wrong and was not. */
  error(message: string): void;
}

/** Options for {@link setupLogging}. */
export interface LoggingOptions {
  /** The lowest level shown. Default `info`. */
  level?: LevelName;
  /** The console format. Default: {@link defaultLogFormat}. */
  format?: LogFormat;
  /** Also send every line to the system log under this ident (the original: `LED MMAP`). */
  syslogIdent?: string;
}

/**
 * `journal` when systemd connected our output to the journal (it sets `JOURNAL_STREAM`), else
 * `text`. Without permission to read the variable (the launcher's children) it is `text`:
 * the launcher passes its choice on with `--log-format`.
 */
export function defaultLogFormat(): LogFormat {
  const variable = "JOURNAL_STREAM";
  const permission = Deno.permissions.querySync({ name: "env", variable });
  if (permission.state !== "granted") return "text";
  return Deno.env.get(variable) ? "journal" : "text";
}

// sd-daemon(3): <3> error, <4> warning, <6> info, <7> debug.
const SD_PRIORITY: Record<LevelName, number> = { debug: 7, info: 6, warning: 4, error: 3 };
const ABBREVIATION: Record<LevelName, string> = {
  debug: "DBG",
  info: "INF",
  warning: "WRN",
  error: "ERR",
};

/**
 * Lines for journald: `<6>mmap-ipc.led: LED Status: On`, the priority prefix sd-daemon(3)
 * describes and no timestamp (the journal adds its own).
 */
export function journalFormatter({ level, category, message }: LogRecord): string {
  return `<${SD_PRIORITY[level]}>${category.join(".")}: ${message}`;
}

/** Lines for a terminal or a file: `2026-11-21 10:50:23.626 [INF] mmap-ipc.led: ...` (UTC). */
export function textFormatter({ timestamp, level, category, message }: LogRecord): string {
  const time = new Date(timestamp).toISOString().slice(0, 23).replace("T", " ");
  return `${time} [${ABBREVIATION[level]}] ${category.join(".")}: ${message}`;
}

type Sink = (record: LogRecord) => void;

function syslogSink(ident: string): Sink {
  openSyslog(ident);
  const levels: Partial<Record<LevelName, SyslogLevel>> = { warning: "warning", error: "error" };
  return (record) => writeSyslog(levels[record.level] ?? "info", record.message);
}

/**
 * The console, written without ever blocking (see `console_output.ts`): warnings and errors to
 * standard error, the rest to standard output.
 */
function consoleSink(formatter: LogFormatter): Sink {
  return (record) => {
    const stream = record.level === "warning" || record.level === "error" ? "stderr" : "stdout";
    consoleOutput(stream).writeLine(formatter(record));
  };
}

function formatterFor(format: LogFormat): LogFormatter {
  return format === "journal" ? journalFormatter : textFormatter;
}

/** Until {@link setupLogging} runs, nothing is written, as a library's logging should be. */
let lowest = Infinity;
let sinks: Sink[] = [];
let consoleFormatter: LogFormatter | undefined;

/** Configures logging for a program; call once, before the first log line. */
export function setupLogging(options: LoggingOptions = {}): void {
  const format = options.format ?? defaultLogFormat();
  consoleFormatter = formatterFor(format);
  sinks = [consoleSink(consoleFormatter)];
  if (options.syslogIdent !== undefined) sinks.push(syslogSink(options.syslogIdent));
  lowest = LOG_LEVELS.indexOf(options.level ?? "info");
}

function emit(category: readonly string[], level: LevelName, message: string): void {
  if (LOG_LEVELS.indexOf(level) < lowest) return;
  const record: LogRecord = { category, level, message, timestamp: Date.now() };
  for (const sink of sinks) sink(record);
}

/**
 * A line of `name`'s at `level` as the console shows it ({@link setupLogging}'s format, else
 * {@link defaultLogFormat}'s), for a program about to exit at once: written with
 * `console.error`, it waits behind nothing, where a logger's line queues (see
 * `console_output.ts`).
 */
export function formatLogLine(name: string, level: LevelName, message: string): string {
  const format = consoleFormatter ?? formatterFor(defaultLogFormat());
  return format({ category: ["mmap-ipc", name], level, message, timestamp: Date.now() });
}

/** The logger for one part of the system, such as `led`; it follows {@link setupLogging}. */
export function logger(name: string): Logger {
  const category = ["mmap-ipc", name] as const;
  return {
    debug: (message) => emit(category, "debug", message),
    info: (message) => emit(category, "info", message),
    warn: (message) => emit(category, "warning", message),
    error: (message) => emit(category, "error", message),
  };
}

/**
 * What changes how a line reads without being seen: Unicode's format characters (the
 * bidirectional controls that can show text in another order than it is, and so hide a quote's
 * end; zero-width characters; the byte order mark; tag characters) and its line and paragraph
 * separators.
 */
const INVISIBLE = /[\p{Cf}\p{Zl}\p{Zp}]/u;

/**
 * Quotes untrusted input for a log line: control characters, invisible ones (INVISIBLE, above)
 * and U+FFFD (what undecodable bytes became) escaped, and cut to `max` characters.
 */
export function quote(input: string, max = 40): string {
  let out = "";
  for (const char of input.slice(0, max)) {
    const code = char.codePointAt(0) ?? 0;
    if (char === "\\" || char === '"') out += `\\${char}`;
    else if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) {
      out += `\\x${code.toString(16).padStart(2, "0")}`;
    } else if (char === "\ufffd" || INVISIBLE.test(char)) {
      const hex = code.toString(16);
      out += code > 0xffff ? `\\u{${hex}}` : `\\u${hex.padStart(4, "0")}`;
    } else out += char;
  }
  return `"${out}${input.length > max ? "..." : ""}"`;
}
