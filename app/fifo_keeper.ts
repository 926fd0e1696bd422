/**
 * The launcher's care of the button's FIFO: once it is removed (`rm`, `rm -rf` of its
 * directory), the launcher makes a new one when the path is free, and the button (run with
 * `madeBy: "other"`) reads it. The launcher, not the button, makes every FIFO the system uses, so
 * it knows each one it made: it claims it, records it for a launcher after it, and removes it at
 * exit, even after the button was killed. Whatever else comes to the path (a user's file, their
 * own FIFO, the original C button's) is left alone, and looked after again once it goes; a FIFO
 * among them is told to `onFifo`, for the launcher to hold (`fifo_hold.ts`), and so is each
 * change of the mode of what is at the path.
 *
 * Only while the path is free does this look every so often (a directory made again is one an
 * inotify watch set before cannot see); otherwise it sleeps on a watch (which, in a directory
 * the user may enter but not read, looks at the path every so often itself).
 *
 * @module
 */

import { delay } from "@std/async/delay";
import type { Logger } from "./logging.ts";
import { type FileStat, makeFifo, statPath } from "../ffi/posix.ts";
import { DIRECTORY_LOOK_MS, REMAKE_DELAY_MS } from "../hw/fifo_button.ts";
import {
  checkPrivateDirectory,
  ensurePrivateDirectory,
  parentOf,
  withDirectoryMode,
} from "../lib/owned_path.ts";
import { isShortage } from "../lib/errors.ts";
import { lookingNotice, PathWatch, watchedNotice } from "../lib/path_watch.ts";

/** Options for {@link keepFifo}. */
export interface FifoKeeperOptions {
  /** The inode at the path now: the FIFO the launcher made, or the one it found there. */
  identity: string;
  /** Make the FIFO's directory again when it is removed: for this program's own. */
  remakeDirectory: boolean;
  /**
   * Called with each FIFO made: to claim and record it. What it throws is logged as a warning,
   * and the keeping goes on; after a shortage that may pass (EMFILE, say) it is called again
   * every second, with the same FIFO, until it returns or the FIFO goes.
   */
  onMade: (identity: string) => void;
  /**
   * Called with each FIFO at the path as it comes (a user's, put there since) and each time
   * the mode of what is there changes (a `chmod` that lets this user read it now): to hold it.
   * It says itself what went wrong; what it throws is logged, and the keeping goes on.
   */
  onFifo?: (identity: string) => void;
  /** Called when what was at the path leaves it (removed, or another put there): to let go of it. */
  onGone?: () => void;
  /** Ends the keeping. */
  signal: AbortSignal;
  log: Logger;
}

/** How long to wait before trying again after a failure nobody can fix from here at once. */
const RETRY_MS = 1_000;

/**
 * Keeps a FIFO at `path` until `signal` aborts; see the module description. Only the abort ends
 * it: a failure (the directory replaced by a file, a removal still under way, a directory that
 * is not private) is said once and tried again every second.
 */
export async function keepFifo(path: string, options: FifoKeeperOptions): Promise<void> {
  const { signal, log } = options;
  let identity = options.identity;
  let failing = false;
  const said = { looking: false };
  while (!signal.aborted) {
    try {
      identity = await keepOnce(path, identity, options, said);
      failing = false;
    } catch (error) {
      if (signal.aborted) return;
      if (!failing) {
        log.warn(
          `Cannot keep the FIFO ${JSON.stringify(path)} yet (trying every second): ${
            (error as Error).message
          }`,
        );
      }
      failing = true;
      await delay(RETRY_MS, { signal }).catch(() => {});
    }
  }
}

/**
 * Waits for the path to be free, then makes the FIFO again once it may; returns the identity of
 * what is at the path then (the FIFO made, or what someone else put there meanwhile).
 */
async function keepOnce(
  path: string,
  identity: string,
  options: FifoKeeperOptions,
  said: { looking: boolean },
): Promise<string> {
  const { remakeDirectory, signal, log } = options;
  const found = (there: FileStat): string => {
    if (there.type === "fifo") tell(options, there.identity);
    return there.identity; // not ours: looked after once it goes
  };
  await untilMoved(path, identity, options, said);
  if (signal.aborted) return identity;
  options.onGone?.();
  const replaced = statPath(path);
  if (replaced !== undefined) return found(replaced);
  // As the button used to: an `rm -rf` still emptying the directory would find a new FIFO in it
  // and fail to remove it.
  await delay(REMAKE_DELAY_MS, { signal }).catch(() => {});
  let directoryGone = false;
  while (!signal.aborted) {
    const there = statPath(path);
    if (there !== undefined) return found(there);
    const directory = parentOf(path);
    if (statPath(directory, { follow: true }) === undefined) {
      if (!remakeDirectory) {
        if (!directoryGone) log.debug(`Waiting for the FIFO's directory ${directory} to be back`);
        directoryGone = true;
        await delay(DIRECTORY_LOOK_MS, { signal }).catch(() => {});
        continue;
      }
      ensurePrivateDirectory(directory);
    }
    directoryGone = false;
    checkPrivateDirectory(path, "create FIFO");
    try {
      // mkfifo itself, not createFifo(): that takes over a FIFO of ours already there, and one a
      // user made since the look above is theirs, never to be claimed or removed at exit.
      makeFifo(path, 0o600);
    } catch (error) {
      if (error instanceof Deno.errors.AlreadyExists) continue; // the next look sees whose
      throw withDirectoryMode(error, path);
    }
    const made = statPath(path);
    if (made === undefined) continue; // removed at once: made again after the next look
    log.info(`Made the FIFO ${JSON.stringify(path)} again`);
    await claimMade(path, made.identity, options);
    return made.identity;
  }
  return identity;
}

/**
 * Tells `onMade` of the FIFO just made. A failure is said once; one for a shortage that may pass
 * (no fd left to hold the FIFO or write a record) is tried again every second while the FIFO is
 * still at the path, as nothing else would: the FIFO is read all the same, but the launcher's
 * hold keeps a press written as the button restarts, and its records a second launcher out.
 */
async function claimMade(
  path: string,
  identity: string,
  options: FifoKeeperOptions,
): Promise<void> {
  const { onMade, signal, log } = options;
  const subject = `the FIFO ${JSON.stringify(path)} made again`;
  for (let tries = 0; !signal.aborted; tries++) {
    try {
      onMade(identity);
      if (tries > 0) log.info(`Claimed ${subject} now`);
      return;
    } catch (error) {
      const retried = isShortage(error);
      // A shortage once; anything else (another launcher keyed it first, say) ends the tries.
      if (tries === 0 || !retried) {
        const later = retried ? " (trying every second)" : "";
        log.warn(`Could not claim ${subject}${later}: ${(error as Error).message}`);
      }
      if (!retried) return;
    }
    await delay(RETRY_MS, { signal }).catch(() => {});
    if (statPath(path)?.identity !== identity) return; // gone: the keeping looks after it
  }
}

/** Calls `onFifo`, logging what it throws. */
function tell({ onFifo, log }: FifoKeeperOptions, identity: string): void {
  try {
    onFifo?.(identity);
  } catch (error) {
    log.warn((error as Error).message);
  }
}

/**
 * Resolves once `path` no longer names `identity` (or `signal` aborted): it is free, or
 * something else was put there. The watch, set on the directory, reports each change of the
 * path, looked at again each time; a change of its mode is told to `onFifo`.
 */
async function untilMoved(
  path: string,
  identity: string,
  options: FifoKeeperOptions,
  said: { looking: boolean },
): Promise<void> {
  const { signal } = options;
  // Its directory gone (or a file in its place): so is the path, as the look below finds.
  const subject = `the FIFO ${JSON.stringify(path)}`;
  const watch = new PathWatch(path, identity, {
    directoryMayBeMissing: true,
    attributes: true,
    onWatched: () => {
      if (!said.looking) return;
      said.looking = false;
      options.log.info(watchedNotice(subject));
    },
  });
  if (watch.looking && !said.looking) {
    said.looking = true;
    options.log.info(lookingNotice(subject));
  }
  const stop = (): void => void watch.close();
  signal.addEventListener("abort", stop, { once: true });
  try {
    if (statPath(path)?.identity !== identity) return;
    for await (const change of watch.changes()) {
      const there = statPath(path);
      if (there?.identity !== identity) return;
      if (change === "modified" && there.type === "fifo") tell(options, identity);
    }
  } finally {
    signal.removeEventListener("abort", stop);
    await watch.close();
  }
}
