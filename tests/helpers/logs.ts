/**
 * A logger for tests that keeps what it is told.
 *
 * @module
 */

import type { Logger } from "../../app/logging.ts";

/** A logger that puts its warnings and errors into `said`, and drops the rest. */
export function warningsInto(said: string[]): Logger {
  return {
    debug: () => {},
    info: () => {},
    warn: (line: string) => said.push(line),
    error: (line: string) => said.push(line),
  };
}
