/**
 * The small cells that our processes running alone (without the launcher) share for a state
 * file: a POSIX shm object named after the file's inode, so they still wake each other without
 * polling. The last process out removes it; one that was killed cannot, so the next process
 * that runs alone removes the cells nobody has open or mapped any more.
 *
 * @module
 */

import { effectiveUid, listDirectory, readFileText, statPath } from "../ffi/posix.ts";
import { findHolders } from "../lib/holders.ts";
import { removeShmIfSame } from "../lib/owned_path.ts";
import type { StateFile } from "../lib/state_file.ts";

const PREFIX = "mmap-ipc-cell-";
const NAME = /^mmap-ipc-cell-[0-9]+(-[0-9]+)+(\.[0-9]+)?$/;
/** Where a state cell keeps its magic number (`STATE_CELL_MAGIC`), as text. */
const MAGIC_AT = 64;

/** The POSIX shm name of the cell that processes running alone share for a state file. */
export function loneCellName(mirror: StateFile): string {
  return `/${PREFIX}${mirror.identity.replaceAll(":", "-")}`;
}

/**
 * Removes the lone cells, other than `keep`, that no process has open or mapped: ours by name,
 * owner, size and magic, `size` bytes. Such a cell holds nothing the state file does not: the
 * first process to open a cell again starts from the file's value.
 *
 * A process may open a cell between the look at its holders and the removal; it then shares
 * that cell with nobody, and its reader follows the state file's text instead, as it does
 * beside the original C button. Removing only what holds no process makes that a narrow window.
 */
export function sweepLoneCells(keep: string, size: number): void {
  const uid = effectiveUid();
  for (const entry of listDirectory("/dev/shm")) {
    if (!NAME.test(entry) || `/${entry}` === keep) continue;
    const path = `/dev/shm/${entry}`;
    const stat = statPath(path);
    if (stat?.type !== "file" || stat.uid !== uid || stat.size !== size) continue;
    if (readFileText(path)?.slice(MAGIC_AT, MAGIC_AT + 4) !== "CELL") continue;
    if (findHolders(stat.identity, { maps: true }).length > 0) continue;
    removeShmIfSame(`/${entry}`, stat.identity);
  }
}
