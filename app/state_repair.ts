/**
 * Puts the launcher's state cell back in order when something wrote over its header. The memfd
 * is sealed against truncation and growth, but the same user can still write into it through
 * `/proc/PID/fd/N`; a damaged header made every child that started after it fail to open the
 * cell, and the launcher then stopped everything. The memfd is the launcher's own and holds
 * nothing of the user's, so its header is written anew before a child starts again; so are the
 * ring headers of the remote link's channels (with `--mqtt`), which the button and the bridge
 * open at their start.
 *
 * @module
 */

import type { Logger } from "./logging.ts";
import { repairRemoteLink } from "./remote/link.ts";
import { restoreStateCellHeader, type SharedRegion } from "../mod.ts";

/**
 * Writes the header of the cell in the launcher's `region` anew if something wrote over it, and
 * says so naming `child`, which is about to start again. Only the header's fixed words are
 * written: the state, its sequence and the roles' claims stay as they are, since the children
 * still running (the button, say, in the middle of a write) hold the cell meanwhile. Returns
 * whether it wrote anything.
 */
export function repairStateCell(region: SharedRegion, child: string, log: Logger): boolean {
  const problem = restoreStateCellHeader(region);
  if (problem === undefined) return false;
  log.warn(
    `Something wrote over the state memfd ${region.name} (${problem}); ` +
      `wrote its header anew, the state left as it was, before starting ${child} again`,
  );
  return true;
}

/**
 * Writes the ring headers of the launcher's remote `link` anew where something wrote over them,
 * and says so naming `child`, about to start again; the messages and positions stay as they are.
 * Returns whether it wrote anything.
 */
export function repairLink(link: SharedRegion, child: string, log: Logger): boolean {
  const problems = repairRemoteLink(link);
  if (problems.length === 0) return false;
  log.warn(
    `Something wrote over the remote link memfd ${link.name} (${problems.join("; ")}); ` +
      `wrote its ring headers anew, the messages left as they were, before starting ${child} again`,
  );
  return true;
}
