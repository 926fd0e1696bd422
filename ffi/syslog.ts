/**
 * The system log through libc's openlog/syslog, as the original C LED used it. glibc drops
 * messages quietly when no log daemon listens on /dev/log, so this never fails for that.
 *
 * @module
 */

import * as C from "./constants.ts";
import { libc } from "./libc.ts";
import { cString } from "./posix.ts";

/** Severities this project logs at. */
export type SyslogLevel = "info" | "warning" | "error";

const PRIORITY: Record<SyslogLevel, number> = {
  info: C.LOG_INFO,
  warning: C.LOG_WARNING,
  error: C.LOG_ERR,
};
const FORMAT = cString("%s");
// openlog keeps the pointer to the ident, so the bytes must live as long as the process.
let ident: Uint8Array<ArrayBuffer> | undefined;

/** Opens the system log under `name` (the original used `LED MMAP`), tagged with the pid. */
export function openSyslog(name: string): void {
  ident = cString(name);
  libc().openlog(ident, C.LOG_PID | C.LOG_NDELAY, C.LOG_USER);
}

/** Sends one message; `%` in it is passed through a `"%s"` format, never interpreted. */
export function writeSyslog(level: SyslogLevel, message: string): void {
  libc().syslog(PRIORITY[level], FORMAT, cString(message.replaceAll("\0", "\\0")));
}

/** Closes the system log connection. */
export function closeSyslog(): void {
  if (ident !== undefined) libc().closelog();
}
