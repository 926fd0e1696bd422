/**
 * Logging for the button/LED programs: LogTape to the console with timestamps, and optionally
 * the same lines to the system log, as the original C programs logged.
 *
 * @module
 */

import {
  configure,
  getConsoleSink,
  getLogger,
  getTextFormatter,
  type Logger,
  type LogLevel,
  type LogRecord,
  type Sink,
} from "@logtape/logtape";
import { openSyslog, type SyslogLevel, writeSyslog } from "../ffi/syslog.ts";

/** The levels `--log-level` accepts. */
export const LOG_LEVELS = ["debug", "info", "warning", "error"] as const;

/** One of {@link LOG_LEVELS}. */
export type LevelName = typeof LOG_LEVELS[number];

/** Options for {@link setupLogging}. */
export interface LoggingOptions {
  /** The lowest level shown. Default `info`. */
  level?: LevelName;
  /** Also send every line to the system log under this ident (the original: `LED MMAP`). */
  syslogIdent?: string;
}

/** Checks a `--log-level` value. */
export function parseLevel(value: string | undefined): LevelName {
  const level = (value ?? "info") as LevelName;
  if (!LOG_LEVELS.includes(level)) {
    throw new TypeError(
      `--log-level must be one of ${LOG_LEVELS.join(", ")}, not ${JSON.stringify(value)}`,
    );
  }
  return level;
}

function render(record: LogRecord): string {
  return record.message.map((part) => typeof part === "string" ? part : JSON.stringify(part)).join(
    "",
  );
}

function syslogSink(ident: string): Sink {
  openSyslog(ident);
  const levels: Partial<Record<LogLevel, SyslogLevel>> = {
    warning: "warning",
    error: "error",
    fatal: "error",
  };
  return (record) => writeSyslog(levels[record.level] ?? "info", render(record));
}

/** Configures LogTape for a program; call once, before the first log line. */
export async function setupLogging(options: LoggingOptions = {}): Promise<void> {
  const sinks: Record<string, Sink> = {
    console: getConsoleSink({
      formatter: getTextFormatter({ timestamp: "date-time", category: "." }),
    }),
  };
  if (options.syslogIdent !== undefined) sinks.syslog = syslogSink(options.syslogIdent);
  await configure({
    reset: true,
    sinks,
    loggers: [
      { category: ["mmap-ipc"], lowestLevel: options.level ?? "info", sinks: Object.keys(sinks) },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["console"] },
    ],
  });
}

/** The logger for one part of the system, such as `led`. */
export function logger(name: string): Logger {
  return getLogger(["mmap-ipc", name]);
}

/** Quotes untrusted input for a log line: escaped, and cut to `max` characters. */
export function quote(input: string, max = 40): string {
  let out = "";
  for (const char of input.slice(0, max)) {
    const code = char.charCodeAt(0);
    if (char === "\\" || char === '"') out += `\\${char}`;
    else if (char === "\ufffd") out += "\\ufffd";
    else if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) {
      out += `\\x${code.toString(16).padStart(2, "0")}`;
    } else out += char;
  }
  return `"${out}${input.length > max ? "..." : ""}"`;
}
