/**
 * Logging for the button/LED programs: LogTape to the console, and optionally the same lines
 * to the system log, as the original C programs logged. On a terminal each line has a
 * timestamp; under systemd (`JOURNAL_STREAM` set) each line instead starts with its sd-daemon
 * priority prefix (`<6>` info, `<4>` warning, ...; see sd-daemon(3)), so journald files it at
 * the right priority and adds the only timestamp.
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
  type TextFormatter,
} from "@logtape/logtape";
import { openSyslog, type SyslogLevel, writeSyslog } from "../ffi/syslog.ts";

/** The levels `--log-level` accepts. */
export const LOG_LEVELS = ["debug", "info", "warning", "error"] as const;

/** One of {@link LOG_LEVELS}. */
export type LevelName = typeof LOG_LEVELS[number];

/** The console formats `--log-format` accepts: see the module description. */
export const LOG_FORMATS = ["text", "journal"] as const;

/** One of {@link LOG_FORMATS}. */
export type LogFormat = typeof LOG_FORMATS[number];

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
const SD_PRIORITY: Record<LogLevel, number> = {
  fatal: 2,
  error: 3,
  warning: 4,
  info: 6,
  debug: 7,
  trace: 7,
};

/**
 * Lines for journald: `<6>mmap-ipc.led: LED Status: On`, the priority prefix sd-daemon(3)
 * describes and no timestamp (the journal adds its own).
 */
export const journalFormatter: TextFormatter = getTextFormatter({
  timestamp: "none",
  category: ".",
  level: (level) => `<${SD_PRIORITY[level]}>`,
  format: ({ level, category, message }) => `${level}${category}: ${message}`,
});

/** Lines for a terminal or a file: `2026-11-21 10:50:23.626 [INF] mmap-ipc.led: ...`. */
export const textFormatter: TextFormatter = getTextFormatter({
  timestamp: "date-time",
  category: ".",
});

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
      formatter: (options.format ?? defaultLogFormat()) === "journal"
        ? journalFormatter
        : textFormatter,
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
