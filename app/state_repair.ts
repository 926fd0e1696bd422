/**
 * Puts the launcher's state cell back in order when something wrote over its header. The memfd
 * is sealed against truncation and growth, but the same user can still write into it through
 * `/proc/PID/fd/N`; a damaged header made every child that started after it fail to open the
 * cell, and the launcher then stopped everything. The memfd is the launcher's own and holds
 * nothing of the user's, so it is written anew before a child starts again.
 *
 * @module
 */

import type { Logger } from "./logging.ts";
import {
  openStateCell,
  type SharedRegion,
  type StateCell,
  stateCellHeaderProblem,
  type StateFile,
} from "../mod.ts";

/** What {@link repairStateCell} looks at and keeps. */
export interface RepairedState {
  /** The launcher's memfd holding the cell. */
  region: SharedRegion;
  /** The launcher's own cell on it (the supervisor role): where the state is read from. */
  cell?: StateCell;
  /** The state file kept in step, if any: the state it holds is the user's to keep. */
  mirror?: StateFile;
}

/**
 * Writes the cell's header anew if something wrote over it, keeping the state (the state file's,
 * with `--state` or `--shm`; else what the cell last held), and says so naming `child`, which is
 * about to start again. Returns whether it did. A sound header is left exactly as it is.
 */
export function repairStateCell(state: RepairedState, child: string, log: Logger): boolean {
  const problem = stateCellHeaderProblem(state.region);
  if (problem === undefined) return false;
  const value = keptValue(state);
  openStateCell(state.region, { initialise: true, initialValue: value }).close();
  log.warn(
    `Something wrote over the state memfd ${state.region.name} (${problem}); ` +
      `wrote its header anew with state ${value} before starting ${child} again`,
  );
  return true;
}

/** The state to keep: the file's, else the cell's, else Off. Neither read may fail the repair. */
function keptValue(state: RepairedState): number {
  for (const read of [() => state.mirror?.value(), () => state.cell?.read()]) {
    try {
      const value = read();
      if (value !== undefined) return value;
    } catch {
      // Looked at the next way.
    }
  }
  return 0;
}
