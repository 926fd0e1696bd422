/**
 * The writer's care of the state file: whatever is done to the file while the system runs, it
 * notices (inotify, no polling) and answers. A value written from outside (`echo 1 > state`)
 * becomes the state; a file truncated (`: > state`) gets the state written back at its full
 * size; a file removed or replaced is reported, and the system carries on with its state in
 * memory, leaving whatever is at the path alone.
 *
 * `echo 1 > state` truncates the file before it writes, so an empty file, or a short one that
 * holds the state itself, may be a write half done: the state is written back only if the file is
 * still so a moment later, or it could land on the `1` just written and undo it.
 *
 * @module
 */

import { delay } from "@std/async/delay";
import type { Logger } from "./logging.ts";
import { lookingNotice, type PathChange, PathWatch, watchedNotice } from "../lib/path_watch.ts";
import { STATE_FILE_SIZE } from "../lib/state_file.ts";
import { normalizeShmName } from "../lib/open_region.ts";
import type { StateCell } from "../lib/state_cell.ts";
import type { StateFile } from "../lib/state_file.ts";

/** What is said of a state file that could not be written: the button and the keeper say it. */
export const MIRROR_WRITE_LATER = "this system keeps its state in memory and goes on, and " +
  "writes the file again at the next change";

/**
 * What messages call the state file at `path`: with `shm` (`--shm`), a shm name, which is no path
 * under `/` and reads as one unnamed, so its file in `/dev/shm` is named too.
 */
export function mirrorName(path: string, shm: boolean): string {
  if (!shm) return `The state file ${JSON.stringify(path)}`;
  const name = normalizeShmName(path);
  return `The shared memory state ${JSON.stringify(name)} (/dev/shm${name})`;
}

/** How long an emptied state file is given to be written by whoever emptied it. */
const SETTLE_MS = 100;

/** Where `mirror` is in the file system: a shm name (`shm`) is a file in `/dev/shm`. */
export function mirrorPath(mirror: StateFile, shm: boolean): string {
  return shm ? `/dev/shm${normalizeShmName(mirror.path)}` : mirror.path;
}

/**
 * Keeps `mirror` in step with `cell` (whose writer this process is) until `signal` aborts.
 * `options.shm` says whether `mirror.path` is a shm name (`--shm`), watched in `/dev/shm`, or a
 * file's path (`--state`): the caller knows which, and a path such as `/name.dat` looks like both.
 */
export async function keepMirror(
  cell: StateCell,
  mirror: StateFile,
  options: { shm: boolean; signal: AbortSignal; log: Logger },
): Promise<void> {
  const { signal, log } = options;
  const path = mirrorPath(mirror, options.shm);
  const name = mirrorName(mirror.path, options.shm);
  // Its directory removed or closed to this user (chmod) at a restart: its content is still
  // watched through the fd, and what is at the path is said once it can be looked at.
  const subject = name.replace(/^The /, "the ");
  let saidLooking = false;
  const watch = new PathWatch(path, mirror.identity, {
    fd: mirror.fd,
    directoryMayBeMissing: true,
    lookWhenUnwatched: true,
    onWatched: () => {
      if (!saidLooking) return;
      saidLooking = false;
      log.info(watchedNotice(subject));
    },
  });
  if (watch.looking) {
    saidLooking = true;
    log.info(lookingNotice(subject));
  }
  const stop = (): void => void watch.close();
  signal.addEventListener("abort", stop, { once: true });
  const report = (change: PathChange): void => {
    if (change === "removed") {
      log.warn(
        `${name} was removed; this system keeps its state in memory and goes on, ` +
          "and nothing new is made at the path",
      );
    } else if (change === "replaced") {
      log.warn(
        `${name} was replaced by another file, which is left alone; this system ` +
          "keeps its state in memory and goes on",
      );
    } else if (change === "restored") {
      log.info(`${name} is back at its path`);
    }
  };
  /** Answers a change of the file's content. */
  const check = async (): Promise<void> => {
    let { value, size, blank } = mirror.read();
    // Empty, or short and holding the state itself: maybe a write half done, which writing the
    // state back now could land on. (The read and the size are two calls: they can straddle
    // `echo 1 >`'s truncation, the old text with the new size, and its 1 comes next.)
    if (blank || (size < STATE_FILE_SIZE && value === cell.read())) {
      await delay(SETTLE_MS, { signal }).catch(() => {});
      if (signal.aborted) return;
      ({ value, size, blank } = mirror.read());
    }
    const state = cell.read();
    if (blank) {
      const what = size === 0 ? "was emptied" : `holds no state now (${size} bytes of other text)`;
      writeBack(state, what, `wrote the state (${state}) back`);
    } else if (value !== state) {
      cell.write(value);
      log.warn(`${name} was set to ${value} from outside; the state follows it`);
    } else if (size < STATE_FILE_SIZE) {
      writeBack(state, `was cut to ${size} bytes`, "put it back to full size");
    }
  };
  /**
   * Writes the state back into the file and says so; a file that cannot be written (its file
   * system full) is said too, and this goes on: the state is in memory, and the next change
   * writes the file again.
   */
  const writeBack = (state: number, what: string, done: string): void => {
    try {
      mirror.write(state);
    } catch (error) {
      if (!(error instanceof Error) || error instanceof Deno.errors.BadResource) throw error;
      log.warn(
        `${name} ${what}; could not write the state (${state}) back: ${error.message}; ` +
          MIRROR_WRITE_LATER,
      );
      return;
    }
    log.warn(`${name} ${what}; ${done}`);
  };
  try {
    // What happened before this process started (a restarted button) is reported too.
    let status;
    try {
      status = watch.status();
    } catch (error) {
      if (!(error instanceof Deno.errors.PermissionDenied)) throw error;
      log.warn(
        `${name} cannot be looked at (${error.message}); this system keeps its state in memory ` +
          "and in the file as it is open, and goes on",
      );
    }
    if (status !== undefined && status !== "same") report(status);
    // And a write between the file's opening and the watch's start: the watch saw none of it.
    await check();
    for await (const change of watch.changes()) {
      if (change === "modified") await check();
      else report(change);
    }
  } finally {
    signal.removeEventListener("abort", stop);
    await watch.close();
  }
}
