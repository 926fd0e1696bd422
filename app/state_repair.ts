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
import { type LinkHolder, repairRemoteLink } from "./remote/link.ts";
import { restoreStateCellHeader, type SharedRegion } from "../mod.ts";

/** The launcher's memfds that its children open again at each start. */
export interface LauncherMemory {
  /** The state cell's region. */
  state: SharedRegion;
  /** The remote link's region, with `--mqtt`. */
  link?: SharedRegion;
}

/** What one memfd's repair found: what it put right, and what it could not, with why. */
interface Findings {
  mended: string[];
  notMended: string[];
}

/** Options for {@link repairLauncherMemory}. */
export interface RepairOptions {
  /** The child about to start again, named in the warnings. */
  child: string;
  /** Where the warnings go. */
  log: Logger;
  /** Which ends of the remote link the child holds, if any: their positions are looked at too. */
  linkHolder?: LinkHolder;
}

/**
 * Writes the headers in the launcher's `memory` anew where something wrote over them, and says
 * so naming the child about to start again. Only fixed words are written: the state, its
 * sequence, the roles' claims and the messages stay as they are, since the children still
 * running (the button, say, in the middle of a write) use them meanwhile; so do the link's ring
 * positions, but for those of the child's own ends and, where they are not positions of the ring
 * at all, of the ends facing them: the child would find either written over every time it
 * started (see `restoreRingPosition`). What could not be mended (an end a stray process holds,
 * say) is named in the same warning, or in one of its own when nothing was; each memfd is tried
 * on its own, so one that fails does not keep the other from its repair. Returns how many memfds
 * it wrote to.
 */
export function repairLauncherMemory(memory: LauncherMemory, options: RepairOptions): number {
  const { child, log, linkHolder } = options;
  const repairs: [SharedRegion | undefined, string, (region: SharedRegion) => Findings, string][] =
    [
      [memory.state, "state", stateRepair, "its header right; the state left as it was"],
      [
        memory.link,
        "remote link",
        (link) => repairRemoteLink(link, linkHolder),
        "those words right; the rest left as it was",
      ],
    ];
  let repaired = 0;
  for (const [region, what, repair, done] of repairs) {
    if (region === undefined) continue;
    const before = `before starting ${child} again`;
    let found: Findings;
    try {
      found = repair(region);
    } catch (error) {
      found = { mended: [], notMended: [error instanceof Error ? error.message : String(error)] };
    }
    const { mended, notMended } = found;
    if (mended.length > 0) {
      const failed = notMended.length > 0 ? `. Not mended: ${notMended.join("; ")}` : "";
      log.warn(
        `Something wrote over the ${what} memfd ${region.name} (${mended.join("; ")}); ` +
          `put ${done}, ${before}${failed}`,
      );
      repaired++;
    } else if (notMended.length > 0) {
      log.warn(
        `Could not repair the ${what} memfd ${region.name} ${before}: ${notMended.join("; ")}`,
      );
    }
  }
  return repaired;
}

function stateRepair(region: SharedRegion): Findings {
  const problem = restoreStateCellHeader(region);
  return { mended: problem === undefined ? [] : [problem], notMended: [] };
}
