/**
 * The small cells that our processes running alone (without the launcher) share for a state
 * file: a POSIX shm object named after the file's inode, so they still wake each other without
 * polling. The last process out removes it; one that was killed cannot, so the next process
 * that runs alone removes the cells nobody has open or mapped any more.
 *
 * @module
 */

import * as C from "../ffi/constants.ts";
import { closeFd, effectiveUid, listDirectory, openPath, readAt, statFd } from "../ffi/posix.ts";
import { findHolders } from "../lib/holders.ts";
import { removeShmIfSame } from "../lib/owned_path.ts";
import { STATE_CELL_MAGIC } from "../lib/state_cell.ts";
import type { StateFile } from "../lib/state_file.ts";

const PREFIX = "mmap-ipc-cell-";
const NAME = /^mmap-ipc-cell-[0-9]+(-[0-9]+)+(\.[0-9]+)?$/;
/** Where a state cell keeps its magic number (`STATE_CELL_MAGIC`, little-endian). */
const MAGIC_AT = 64;

/** The POSIX shm name of the cell that processes running alone share for a state file. */
export function loneCellName(mirror: StateFile): string {
  return `/${PREFIX}${mirror.identity.replaceAll(":", "-")}`;
}

/**
 * Removes the lone cells, other than `keep`, that no process has open or mapped: ours by name,
 * owner, size (`size` bytes) and magic. Such a cell holds nothing the state file does not: the
 * first process to open a cell again starts from the file's value. Never throws: a cell another
 * process removed or took meanwhile is simply left to it.
 *
 * A process may open a cell between the look at its holders and the removal; it then shares
 * that cell with nobody, and its reader follows the state file's text instead, as it does
 * beside the original C button. Removing only what holds no process makes that a narrow window.
 */
export function sweepLoneCells(keep: string, size: number): void {
  for (const entry of listDirectory("/dev/shm")) {
    if (!NAME.test(entry) || `/${entry}` === keep) continue;
    try {
      const identity = deadCell(`/dev/shm/${entry}`, size);
      if (identity !== undefined) removeShmIfSame(`/${entry}`, identity);
    } catch {
      // Removed or replaced meanwhile, most likely by another process sweeping: not ours now.
    }
  }
}

/** The identity of the lone cell at `path` if it is ours and nobody holds it, else undefined. */
function deadCell(path: string, size: number): string | undefined {
  const identity = ourCell(path, size);
  if (identity === undefined) return undefined;
  // This process too: it must not remove a cell it maps itself.
  return findHolders(identity, { maps: true, self: true }).length === 0 ? identity : undefined;
}

/** The identity of the shm object at `path` if it is a lone cell of ours, else undefined. */
function ourCell(path: string, size: number): string | undefined {
  // Not followed and never waited on: a FIFO or a symlink put here is only looked at.
  const fd = openPath(path, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK | C.O_CLOEXEC, 0, "open");
  try {
    const stat = statFd(fd, path);
    if (stat.type !== "file" || stat.uid !== effectiveUid() || stat.size !== size) return;
    const magic = new Uint8Array(4);
    if (readAt(fd, magic, MAGIC_AT, path) !== 4) return;
    if (new DataView(magic.buffer).getUint32(0, true) !== STATE_CELL_MAGIC) return;
    return stat.identity;
  } finally {
    closeFd(fd);
  }
}
