/**
 * The launcher's care of the button's FIFO: once it is removed (`rm`, `rm -rf` of its
 * directory), the launcher makes a new one when the path is free, and the button (run with
 * `madeBy: "other"`) reads it. The launcher, not the button, makes every FIFO the system uses, so
 * it knows each one it made: it claims it, records it for a launcher after it, and removes it at
 * exit, even after the button was killed. Whatever else comes to the path (a user's file, their
 * own FIFO, the original C button's) is left alone, and looked after again once it goes.
 *
 * Only while the path is free does this look every so often (a directory made again is one an
 * inotify watch set before cannot see); otherwise it sleeps on a watch.
 *
 * @module
 */

import { delay } from "@std/async/delay";
import type { Logger } from "./logging.ts";
import { statPath } from "../ffi/posix.ts";
import { DIRECTORY_LOOK_MS, REMAKE_DELAY_MS } from "../hw/fifo_button.ts";
import { createFifo, ensurePrivateDirectory, parentOf } from "../lib/owned_path.ts";
import { PathWatch } from "../lib/path_watch.ts";

/** Options for {@link keepFifo}. */
export interface FifoKeeperOptions {
  /** The inode at the path now: the FIFO the launcher made, or the one it found there. */
  identity: string;
  /** Make the FIFO's directory again when it is removed: for this program's own. */
  remakeDirectory: boolean;
  /**
   * Called with each FIFO made: to claim and record it. What it throws is logged as a warning,
   * and the keeping goes on.
   */
  onMade: (identity: string) => void;
  /** Ends the keeping. */
  signal: AbortSignal;
  log: Logger;
}

/** Keeps a FIFO at `path` until `signal` aborts; see the module description. */
export async function keepFifo(path: string, options: FifoKeeperOptions): Promise<void> {
  const { signal, log } = options;
  let identity = options.identity;
  let directoryGone = false;
  while (!signal.aborted) {
    await untilFree(path, identity, signal);
    // As the button used to: an `rm -rf` still emptying the directory would find a new FIFO
    // in it and fail to remove it.
    await delay(REMAKE_DELAY_MS, { signal }).catch(() => {});
    while (!signal.aborted) {
      const there = statPath(path);
      if (there !== undefined) {
        identity = there.identity; // not ours: looked after again once it goes
        break;
      }
      const directory = parentOf(path);
      if (statPath(directory, { follow: true }) === undefined) {
        if (!options.remakeDirectory) {
          if (!directoryGone) log.debug(`Waiting for the FIFO's directory ${directory} to be back`);
          directoryGone = true;
          await delay(DIRECTORY_LOOK_MS, { signal }).catch(() => {});
          continue;
        }
        ensurePrivateDirectory(directory);
      }
      directoryGone = false;
      let made;
      try {
        made = createFifo(path);
      } catch (error) {
        // Something took the path between the look and the mkfifo: the next look sees it.
        if (error instanceof Deno.errors.AlreadyExists) continue;
        throw error;
      }
      identity = made.identity;
      log.info(`Made the FIFO ${JSON.stringify(path)} again`);
      try {
        options.onMade(identity);
      } catch (error) {
        // The FIFO is there and read all the same; only a launcher after this one could miss it.
        log.warn(
          `Could not claim the FIFO ${JSON.stringify(path)} made again: ${
            (error as Error).message
          }`,
        );
      }
      break;
    }
  }
}

/**
 * Resolves once nothing is at `path` (or `signal` aborted). `identity` is what was there last:
 * the watch, set on the directory, reports each change of the path, looked at again each time.
 */
async function untilFree(path: string, identity: string, signal: AbortSignal): Promise<void> {
  let watch: PathWatch;
  try {
    watch = new PathWatch(path, identity);
  } catch {
    return; // its directory is gone: so is the path
  }
  const stop = (): void => void watch.close();
  signal.addEventListener("abort", stop, { once: true });
  try {
    if (statPath(path) === undefined) return;
    for await (const _change of watch.changes()) {
      if (statPath(path) === undefined) return;
    }
  } finally {
    signal.removeEventListener("abort", stop);
    await watch.close();
  }
}
