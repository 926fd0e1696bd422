/**
 * The PC build's button: a named pipe (FIFO) that anyone of this user can write presses to,
 * one per line: `echo 0 > PATH` (the original's) or `echo press > PATH`.
 *
 * @module
 */

import * as C from "../ffi/constants.ts";
import { FdWaiter, pollFailure, type Readiness } from "../ffi/fd_waiter.ts";
import { type OsError, osError } from "../ffi/errno.ts";
import {
  closeFd,
  effectiveUid,
  type FileStat,
  openPath,
  readFd,
  readFileText,
  readLink,
  statFd,
  statPath,
} from "../ffi/posix.ts";
import { fifoReaders, holdsOpen } from "../lib/holders.ts";
import { shellQuote } from "../lib/shell_quote.ts";
import {
  checkOwn,
  createFifo,
  directoryModeHint,
  ensurePrivateDirectory,
  modeText,
  parentOf,
  removeIfSame,
} from "../lib/owned_path.ts";
import { type PathChange, PathWatch } from "../lib/path_watch.ts";
import type { Button } from "./types.ts";

/**
 * How long after seeing a new FIFO of this user's at its path the button looks again whether the
 * keeper holds it: the keeper opens the FIFO a moment after it makes it.
 */
const KEEPER_HOLDS_MS = 50;
/** Lines longer than this are not presses; they are dropped without being kept in memory. */
export const MAX_LINE_BYTES = 256;
/**
 * How much one read of the FIFO takes, and the most one wake-up reads: a writer that keeps the
 * FIFO full must not keep the button from its event loop (signals, the path watch).
 */
const READ_CHUNK_BYTES = 4096;

const OPEN_FLAGS = C.O_RDONLY | C.O_NONBLOCK | C.O_NOFOLLOW | C.O_CLOEXEC;
/**
 * How long the path stays free before the button makes a new FIFO there: an `rm -rf` of the
 * directory is still emptying it when the FIFO goes, and a FIFO made at once would make its
 * rmdir fail (directory not empty).
 */
export const REMAKE_DELAY_MS = 200;
/** How often the button looks whether a removed directory of its FIFO is there again. */
export const DIRECTORY_LOOK_MS = 500;
/** How often a button opened while its path was taken looks whether it may use what is there. */
const TAKEN_LOOK_MS = 1_000;
const decoder = new TextDecoder();

/** Why a line did not count as a press. */
export interface IgnoredInput {
  /** What was wrong with it. */
  reason: "empty" | "not a press" | "too long" | "binary" | "cut off";
  /** The input as text (may hold replacement characters), cut to a readable length. */
  input: string;
  /** Its length in bytes. */
  bytes: number;
}

/** What happened to the FIFO's path while the button read it. */
export type FifoEvent =
  /** Another FIFO (or anything else) took the path: presses written there go elsewhere now. */
  | "replaced"
  /** The FIFO was removed. */
  | "removed"
  /** The path was free again, and the button made a new FIFO of its own there. */
  | "recreated"
  /**
   * The FIFO the button had to leave alone (another program's that replaced it, or one it found
   * at its open: see `onTaken`) is one it may use now (its reader went away): the button reads it.
   */
  | "adopted"
  /**
   * The FIFO's directory was removed too: presses cannot be read until it is there again (the
   * button then makes a new FIFO in it), or, with `remakeDirectory`, the button made it again.
   */
  | "directory-removed"
  /** The button made the FIFO's removed directory again (with `remakeDirectory`). */
  | "directory-recreated";

/** Options for {@link openFifoButton}. */
export interface FifoButtonOptions {
  /** Create the FIFO (0600) when it does not exist; it is then removed on close. Default true. */
  create?: boolean;
  /** Called for every line that is not a press. */
  onIgnored?: (ignored: IgnoredInput) => void;
  /** Called when the FIFO at the path is replaced or removed, and when the button makes anew. */
  onPath?: (event: FifoEvent) => void;
  /**
   * When the FIFO's directory is removed, make it again (0700) rather than wait for someone to:
   * for a directory that is this program's own, such as its runtime directory. Also makes it
   * at open when it is missing.
   *
   * @default {false}
   */
  remakeDirectory?: boolean;
  /**
   * When given, a path that holds something the button may not use (anything but a FIFO of
   * ours, a FIFO another process reads, or one whose mode keeps its owner from reading it) is
   * not an error: `onTaken` hears why, and the button leaves it alone, as it does when its FIFO
   * is replaced while it runs: it reads the FIFO there once it may (looking every second), or
   * makes its own once the path is free. For a button restarted by a launcher, which checked the
   * path before its first start: what took it since is not for a restart to fix. Something
   * at the path that is not this user's (another user's FIFO) that comes there later, while the
   * button waits for its path, is told too, once for each such thing: only someone's act (a
   * removal, a chown) lets the button read there again.
   */
  onTaken?: (taken: TakenFifo) => void;
  /**
   * Who makes the FIFO at the path. `"button"`: the button, at its open when there is none and
   * again whenever the path is free. `"other"`: another process (the launcher), which also makes
   * it again once it is removed; the button makes none, and while the path is free it looks for
   * the new FIFO every {@link REMAKE_DELAY_MS} and reads it once it is there. So a FIFO the button
   * read is never one only the button knew it made, and which it could leave behind if it died.
   *
   * @default {"button"}
   */
  madeBy?: "button" | "other";
  /**
   * The pid of a process that holds the FIFO open for reading and reads none of it (the
   * launcher that makes it): what is written while this button restarts waits there for the
   * next one, where it would be lost with the last reader. Not counted as another reader.
   */
  keeper?: number;
  /**
   * With `madeBy: "other"`: the identity (`FileStat.identity`) of the FIFO its maker made at the
   * path, or looked for other readers of, just before this open (the launcher, before a button's
   * first start), so the open does not look through /proc for them again while that FIFO is the
   * one at the path; another put there since is looked at. That look reads every process's fds,
   * and its cost stays in the button's memory (about 3 MiB) for as long as it runs.
   */
  readersChecked?: string;
}

/** Why a FIFO path holds something the button may not use now: see `onTaken`. */
export interface TakenFifo {
  /**
   * `"foreign"`: not a FIFO of this user's (a file, a symlink, a directory, another user's
   * FIFO); `"read"`: a FIFO another process reads; `"mode"`: a FIFO of this user's whose mode
   * keeps its owner from reading it (chmod); `"unreachable"`: a directory on the way does not
   * let this user look into it (`chmod 000` of the FIFO's directory), so nothing can be told.
   */
  reason: "foreign" | "read" | "mode" | "unreachable";
  /** The refusal an open without `onTaken` throws, naming the path and why. */
  error: Error;
}

function isPress(line: string): boolean {
  const word = line.trim();
  return word === "0" || word.toLowerCase() === "press";
}

/** "press", for {@link isPlainPress}. */
const PRESS = [0x70, 0x72, 0x65, 0x73, 0x73];

/**
 * Whether the first `length` bytes of `line` are a press in plain ASCII ("0" or "press" in any
 * case, spaces, tabs or a CR around it): the usual line, told without a copy or a decode. Any
 * other line is looked at whole, as {@link isPress} and {@link isBinary} say.
 */
function isPlainPress(line: Uint8Array, length: number): boolean {
  let start = 0;
  let end = length;
  while (start < end && isBlank(line[start])) start++;
  while (end > start && isBlank(line[end - 1])) end--;
  if (end - start === 1) return line[start] === 0x30;
  if (end - start !== PRESS.length) return false;
  // Setting 0x20 lowers an ASCII capital, and maps no other byte onto a lower-case letter.
  for (let i = 0; i < PRESS.length; i++) if ((line[start + i] | 0x20) !== PRESS[i]) return false;
  return true;
}

/** A space, a tab or a CR: what `trim()` takes off a plain ASCII press line. */
function isBlank(byte: number): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0d;
}

function isBinary(bytes: Uint8Array): boolean {
  for (const byte of bytes) {
    if (byte === 0 || (byte < 0x20 && byte !== 0x09 && byte !== 0x0d) || byte === 0x7f) return true;
  }
  return decoder.decode(bytes).includes("\ufffd");
}

/** Reads presses from a FIFO; see {@link openFifoButton}. */
export class FifoButton implements Button {
  readonly #path: string;
  #identity: string;
  #removeOnClose: boolean;
  readonly #onIgnored: (ignored: IgnoredInput) => void;
  readonly #onPath: (event: FifoEvent) => void;
  readonly #remakeDirectory: boolean;
  #waiter = new FdWaiter();
  #watch: PathWatch;
  readonly #line = new Uint8Array(MAX_LINE_BYTES);
  /** What one read(2) takes; kept, since a press should allocate nothing. */
  readonly #chunk = new Uint8Array(READ_CHUNK_BYTES);
  #lineLength = 0;
  #overflow = 0;
  #fd: number;
  /** The FIFO's directory was found removed, and that was said. */
  #directoryGone = false;
  /**
   * The path holds something the button may not use now (see `onTaken`), or something took its
   * FIFO's place: it looks now and then whether it may use what is there.
   */
  #taken: boolean;
  readonly #madeByOther: boolean;
  readonly #keeper: number | undefined;
  readonly #onTaken: ((taken: TakenFifo) => void) | undefined;
  /** What at the path was last told to `onTaken`: its identity and why (see {@link refusalKey}). */
  #told: string | undefined;
  /**
   * Whether the watch's last "replaced" went untold (the path free, the maker another): what
   * took the path is then said once it is looked at and found unusable, as nothing else says it.
   */
  #replacementUntold = false;
  #closed = false;

  /** Not for direct use: call {@link openFifoButton}. */
  constructor(
    path: string,
    fd: number,
    identity: string,
    created: boolean,
    options: FifoButtonOptions,
    told?: string,
  ) {
    this.#path = path;
    this.#fd = fd;
    this.#identity = identity;
    this.#removeOnClose = created;
    this.#onIgnored = options.onIgnored ?? (() => {});
    this.#onPath = options.onPath ?? (() => {});
    this.#remakeDirectory = options.remakeDirectory ?? false;
    this.#madeByOther = options.madeBy === "other";
    this.#keeper = options.keeper;
    this.#onTaken = options.onTaken;
    this.#told = told;
    // Its maker may be about to make the directory again, or it may be closed to this user
    // (chmod) at a restart: looked at now and then, as the FIFO is.
    this.#watch = new PathWatch(path, identity, {
      directoryMayBeMissing: this.#madeByOther || fd < 0,
    });
    this.#taken = fd < 0;
  }

  /** The FIFO's path. */
  get path(): string {
    return this.#path;
  }

  /**
   * Yields once per press. Writers may come and go: when the last one leaves, a line it left
   * unfinished is reported and dropped, and the FIFO is reopened (so the fd count stays flat).
   * When another program replaces the FIFO (the original C button removes and recreates it at
   * its start) or someone removes it, the button says so, stops reading the old one, and makes
   * a new FIFO of its own only once the path is free. When the directory goes too (`rm -rf`),
   * it waits for the directory to be there again, or makes it with `remakeDirectory`.
   */
  async *presses(signal: AbortSignal): AsyncGenerator<void, void, undefined> {
    const cancel = (): void => {
      this.#waiter.cancel();
      void this.#watch.close();
    };
    signal.addEventListener("abort", cancel, { once: true });
    // Each wait gets exactly one reaction, which leaves its result here and wakes the loop: a
    // Promise.race over a wait that stays pending for long (the path watch) would add a reaction
    // to it on every press, and they would pile up until it settled.
    let pathResult: IteratorResult<PathChange> | undefined;
    /** What the watch failed with: the presses end with it, as a read that fails does. */
    let pathFailure: unknown;
    let readyResult: Readiness | undefined;
    let waitingReady = false;
    let wake: (() => void) | undefined;
    let changes = this.#watch.changes();
    const watchPath = (): void => {
      const source = changes;
      source.next().then((result) => {
        // A watch replaced meanwhile ends when closed: that is not the end of the presses.
        if (source !== changes) return;
        pathResult = result;
        wake?.();
      }, (error) => {
        if (source !== changes) return;
        pathFailure = error;
        wake?.();
      });
    };
    /** A timer that asks the loop to look at the free path again (see #lookAtFreePath). */
    let look: ReturnType<typeof setTimeout> | undefined;
    let looked = false;
    const lookIn = (ms: number): void => {
      look = setTimeout(() => {
        look = undefined;
        looked = true;
        wake?.();
      }, ms);
    };
    watchPath();
    // Opened while the path was taken (see onTaken): it may be free or usable already.
    if (this.#taken) looked = true;
    try {
      while (!this.#closed && !signal.aborted) {
        if (!waitingReady && readyResult === undefined && this.#fd >= 0) {
          waitingReady = true;
          this.#waiter.wait(this.#fd).then((readiness) => {
            waitingReady = false;
            readyResult = readiness;
            wake?.();
          });
        }
        if (
          pathResult === undefined && readyResult === undefined && !looked &&
          pathFailure === undefined
        ) {
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
        if (this.#closed || signal.aborted) return;
        if (pathFailure !== undefined) throw pathFailure;
        if (looked) {
          looked = false;
          const next = this.#lookAtFreePath();
          if (next === "remade") {
            changes = this.#watch.changes();
            watchPath();
          } else if (next !== "taken") {
            lookIn(next);
          }
          continue;
        }
        if (pathResult !== undefined) {
          const woke = pathResult;
          pathResult = undefined;
          if (woke.done) return;
          if (woke.value === "replaced" || woke.value === "removed") {
            // With madeBy "other", what comes to the free path is looked at, not reported: most
            // often the FIFO its maker made again, which the button then says it reads.
            if (this.#fd >= 0 || !this.#madeByOther) {
              const what = await this.#whatHappened(woke.value);
              if (this.#closed || signal.aborted) return;
              this.#onPath(what);
              this.#replacementUntold = false;
            } else if (woke.value === "replaced") this.#replacementUntold = true;
            await this.#letGo();
            readyResult = undefined;
            waitingReady = false;
            // What took the path may become usable (its reader gone) with no event: look.
            if (woke.value === "replaced") this.#taken = true;
          }
          if (this.#fd < 0 && look === undefined && this.#watch.status() === "removed") {
            lookIn(REMAKE_DELAY_MS);
          }
          // The FIFO another process makes is read at once, not a look later.
          if (this.#fd < 0 && this.#taken && look === undefined) {
            lookIn(this.#madeByOther ? 0 : TAKEN_LOOK_MS);
          }
          watchPath();
          continue;
        }
        const readiness = readyResult;
        readyResult = undefined;
        if (readiness === "cancelled") return;
        if (readiness === "error") {
          // With why, when known: a shortage (no fd for the poll hub) ends the button for a
          // restart, not as a crash.
          const cause = pollFailure();
          const why = cause === undefined ? "poll failed" : `poll failed (${cause.message})`;
          throw new Deno.errors.BadResource(
            `Cannot wait on FIFO ${JSON.stringify(this.#path)}: ${why}`,
            { cause },
          );
        }
        const { presses, ended } = this.#drain();
        for (let i = 0; i < presses; i++) yield;
        if (ended) this.#reopen();
      }
    } finally {
      clearTimeout(look);
      signal.removeEventListener("abort", cancel);
    }
  }

  /**
   * Looks at the path some time after it became free: makes a new FIFO there if it is still
   * free (`remade`); says when to look again if its directory is gone (in ms); `taken` if
   * something else is at the path now (the watch says when it goes).
   */
  #lookAtFreePath(): "remade" | "taken" | number {
    // What is at the path may be the FIFO its maker made, in a directory made again, which the
    // watch (set on the one removed) does not see: looked at, not waited for.
    if (this.#madeByOther) this.#taken = true;
    let status;
    try {
      status = this.#watch.status();
    } catch (error) {
      // The directory closed to this user (said at the open: see onTaken): looked at again.
      if (error instanceof Deno.errors.PermissionDenied && this.#taken) return TAKEN_LOOK_MS;
      throw error;
    }
    if (status !== "removed") {
      // Taken: what is there may become usable (its reader gone, chmod back) with no event.
      if (!this.#taken) return "taken";
      return this.#adoptIfUsable() ? "remade" : TAKEN_LOOK_MS;
    }
    const directory = parentOf(this.#path);
    if (statPath(directory, { follow: true }) === undefined) {
      // The maker makes the directory again when it is ours, and says nothing: nor does this.
      if (this.#madeByOther && this.#remakeDirectory) return REMAKE_DELAY_MS;
      if (this.#madeByOther || !this.#remakeDirectory) {
        if (!this.#directoryGone) this.#onPath("directory-removed");
        this.#directoryGone = true;
        return DIRECTORY_LOOK_MS;
      }
      ensurePrivateDirectory(directory);
      this.#onPath("directory-recreated");
    }
    this.#directoryGone = false;
    if (this.#madeByOther) return REMAKE_DELAY_MS;
    this.#remake();
    this.#onPath("recreated");
    return "remade";
  }

  /**
   * What to tell of a change the watch reported: `"removed"` for a FIFO replaced by one the
   * keeper (the launcher) holds and this user owns, the FIFO the keeper made again once this one
   * was removed, seen only once made when the path is looked at rather than watched (a 0300
   * directory): another program's would be left alone, this one is read at once. A FIFO of this
   * user's not held yet is looked at once more a moment later: the keeper makes it, then opens it.
   */
  async #whatHappened(change: "replaced" | "removed"): Promise<FifoEvent> {
    if (change !== "replaced" || !this.#madeByOther || this.#keeper === undefined) return change;
    for (let look = 0;; look++) {
      let there;
      try {
        there = statPath(this.#path);
      } catch {
        return change; // the directory closed meanwhile: nothing to tell it by
      }
      if (there?.type !== "fifo" || there.uid !== effectiveUid()) return change;
      if (holdsOpen(this.#keeper, there.identity)) return "removed";
      if (look > 0) return change;
      await new Promise((resolve) => setTimeout(resolve, KEEPER_HOLDS_MS));
    }
  }

  /** Stops reading a FIFO that is no longer at the path (and is not ours to remove any more). */
  async #letGo(): Promise<void> {
    await this.#waiter.close();
    this.#waiter = new FdWaiter();
    if (this.#fd >= 0) closeFd(this.#fd);
    this.#fd = -1;
    this.#removeOnClose = false;
    this.#lineLength = 0;
    this.#overflow = 0;
  }

  /**
   * Opens the FIFO at the path if the button may use it now (a FIFO of ours that nobody reads):
   * what {@link openFifoButton} would have taken at the start. Whether it did.
   */
  #adoptIfUsable(): boolean {
    const looked = lookAtPath(this.#path, this.#keeper, undefined);
    if (isRefused(looked)) {
      // Not a file of this user's (another user's FIFO, say): no look will find it usable until
      // someone acts, so what to do is said, once for each thing put there. A file of this
      // user's is not, when the watch already said what replaced the FIFO (onPath); it is when
      // it came to the free path (rm, then ln -s), which the watch leaves to this look.
      const key = refusalKey(looked);
      const foreign = looked.taken.reason === "foreign";
      if (
        foreign && (looked.uid !== effectiveUid() || this.#replacementUntold) &&
        key !== this.#told
      ) {
        this.#told = key;
        this.#onTaken?.(looked.taken);
      }
      return false;
    }
    let opened;
    try {
      opened = openFifo(this.#path, {
        create: false,
        keeper: this.#keeper,
        readersCheckedOf: looked?.identity,
      });
    } catch {
      return false; // gone or changed meanwhile: the next look, or the watch, sees what is there
    }
    let watch;
    try {
      watch = new PathWatch(this.#path, opened.identity);
    } catch {
      closeFd(opened.fd); // out of inotify instances: wait on, as before
      return false;
    }
    this.#identity = opened.identity;
    this.#removeOnClose = false;
    this.#fd = opened.fd;
    this.#taken = false;
    void this.#watch.close();
    this.#watch = watch;
    this.#onPath("adopted");
    return true;
  }

  /** Makes a new FIFO of ours at the free path and reads it from now on. */
  #remake(): void {
    this.#taken = false;
    const made = createFifo(this.#path);
    this.#identity = made.identity;
    this.#removeOnClose = made.created;
    this.#fd = openPath(this.#path, OPEN_FLAGS, 0, "open FIFO");
    const old = this.#watch;
    this.#watch = new PathWatch(this.#path, this.#identity);
    void old.close();
  }

  /**
   * Reads what is available, up to one chunk; counts presses and notes whether every writer has
   * gone. A full chunk may have more behind it: the next wake-up, at once, reads on.
   */
  #drain(): { presses: number; ended: boolean } {
    const chunk = this.#chunk;
    let presses = 0;
    for (;;) {
      const count = readFd(this.#fd, chunk, this.#path);
      if (count < 0) return { presses, ended: false };
      if (count === 0) {
        if (this.#lineLength > 0 || this.#overflow > 0) this.#ignore("cut off");
        return { presses, ended: true };
      }
      for (let i = 0; i < count; i++) {
        const byte = chunk[i];
        if (byte === 0x0a) {
          if (this.#endLine()) presses++;
        } else if (this.#lineLength < MAX_LINE_BYTES && this.#overflow === 0) {
          this.#line[this.#lineLength++] = byte;
        } else {
          this.#overflow++;
        }
      }
      if (count === chunk.length) return { presses, ended: false };
    }
  }

  /** Judges the line just ended; true when it is a press. */
  #endLine(): boolean {
    if (this.#overflow > 0) {
      this.#ignore("too long");
      return false;
    }
    if (isPlainPress(this.#line, this.#lineLength)) {
      this.#lineLength = 0;
      return true;
    }
    const bytes = this.#line.subarray(0, this.#lineLength);
    if (isBinary(bytes)) {
      this.#ignore("binary");
      return false;
    }
    const text = decoder.decode(bytes);
    if (isPress(text)) {
      this.#lineLength = 0;
      return true;
    }
    this.#ignore(text.trim() === "" ? "empty" : "not a press");
    return false;
  }

  #ignore(reason: IgnoredInput["reason"]): void {
    const bytes = this.#line.subarray(0, this.#lineLength);
    this.#onIgnored({
      reason,
      input: decoder.decode(bytes),
      bytes: this.#lineLength + this.#overflow,
    });
    this.#lineLength = 0;
    this.#overflow = 0;
  }

  /** After the last writer left: a fresh open, so poll() does not report the hang-up forever. */
  #reopen(): void {
    // The new read end opens before the old one closes, so a writer never finds the FIFO
    // without a reader (ENXIO), and through the old fd, so it is the same FIFO whatever
    // happened to the path (the path's own changes are the watch's to report).
    let fd: number;
    try {
      fd = openPath(`/proc/self/fd/${this.#fd}`, OPEN_FLAGS & ~C.O_NOFOLLOW, 0, "reopen FIFO");
    } catch (error) {
      // Named by its path, not the /proc link it was opened through.
      const { errno } = error as OsError;
      throw typeof errno === "number" ? osError("reopen FIFO", this.#path, errno) : error;
    }
    closeFd(this.#fd);
    this.#fd = fd;
  }

  /** Stops reading and closes the FIFO; removes it if this button created it. Safe twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#waiter.close();
    await this.#watch.close();
    if (this.#fd >= 0) closeFd(this.#fd);
    this.#fd = -1;
    if (this.#removeOnClose) removeIfSame(this.#path, this.#identity, "remove FIFO");
  }

  /** Same as {@link FifoButton.close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Opens (and, unless `create: false`, creates) the FIFO button at `path`. A path that exists
 * and is not a FIFO of ours (a regular file, a symlink, a directory) is refused with a clear
 * error and left untouched, and so is a FIFO another process reads (the original C button),
 * naming that process where it can be found.
 */
export function openFifoButton(path: string, options: FifoButtonOptions = {}): FifoButton {
  const checked = options.madeBy === "other" ? options.readersChecked : undefined;
  const looked = options.onTaken === undefined
    ? undefined
    : lookAtPath(path, options.keeper, checked);
  if (isRefused(looked)) {
    options.onTaken?.(looked.taken);
    // The watch says when the path is free (or at once, if it is now); see #lookAtFreePath.
    return new FifoButton(path, -1, looked.identity, false, options, refusalKey(looked));
  }
  if (options.madeBy === "other" && statPath(path) === undefined) {
    // Its maker makes it (again) in a moment: looked for at once, and then while it is not there.
    return new FifoButton(path, -1, "", false, options);
  }
  const { fd, identity, created } = openFifo(path, {
    ...options,
    // Their readers looked for just now, above or by its maker: not again for that FIFO.
    readersCheckedOf: looked?.identity ?? checked,
  });
  try {
    return new FifoButton(path, fd, identity, created, options);
  } catch (error) {
    closeFd(fd);
    if (created) removeIfSame(path, identity, "remove FIFO");
    throw error;
  }
}

/** What {@link lookAtPath} found at a path: its identity, and why the button may not use it. */
interface LookedPath {
  identity: string;
  uid?: number;
  /** Set when the button may not use it. */
  taken?: TakenFifo;
}

/** A path that holds something the button may not use. */
type RefusedPath = LookedPath & { taken: TakenFifo };

function isRefused(looked: LookedPath | undefined): looked is RefusedPath {
  return looked?.taken !== undefined;
}

/**
 * Looks at what is at `path`: why the button may not use it (anything but a FIFO of ours, or,
 * unless it is the FIFO `readersChecked` names, whose readers were just looked for, a FIFO
 * another process reads), with its identity; or the identity of a FIFO it may use; undefined
 * when the path is free. Any other failure (the directory, the system) is left for the open to
 * report.
 */
function lookAtPath(
  path: string,
  keeper: number | undefined,
  readersChecked: string | undefined,
): LookedPath | undefined {
  let stat;
  try {
    stat = statPath(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.PermissionDenied)) throw error;
    const directory = JSON.stringify(parentOf(path));
    return {
      identity: "",
      taken: {
        reason: "unreachable",
        error: new Deno.errors.PermissionDenied(
          `Cannot reach the FIFO ${JSON.stringify(path)}: its directory ${directory} (or one ` +
            `above it) does not let this user look into it (chmod?): ${error.message}`,
        ),
      },
    };
  }
  if (stat === undefined) return undefined;
  const taken = (reason: TakenFifo["reason"], error: Error): RefusedPath => ({
    identity: stat.identity,
    uid: stat.uid,
    taken: { reason, error },
  });
  try {
    checkOwn(stat, "fifo", "use FIFO", path);
  } catch (error) {
    const fromPath = error instanceof Deno.errors.AlreadyExists ||
      error instanceof Deno.errors.IsADirectory || error instanceof Deno.errors.FilesystemLoop ||
      error instanceof Deno.errors.PermissionDenied;
    if (stat.type === "fifo" && stat.uid !== effectiveUid()) {
      return taken("foreign", anotherUsersFifo(path, stat, error as Error));
    }
    if (fromPath) return taken("foreign", error as Error);
    throw error;
  }
  // Ours, but its mode changed (chmod): no open would succeed until it is changed back.
  if ((stat.permissions & 0o400) === 0 && effectiveUid() !== 0) {
    return taken(
      "mode",
      new Deno.errors.PermissionDenied(
        `Cannot use the FIFO ${JSON.stringify(path)}: its mode (0${
          stat.permissions.toString(8).padStart(3, "0")
        }) does not let its owner read it (chmod?)`,
      ),
    );
  }
  if (stat.identity !== readersChecked) {
    try {
      refuseIfRead(path, stat.identity, { keeper });
    } catch (error) {
      if (error instanceof Deno.errors.Busy) return taken("read", error);
      throw error;
    }
  }
  return { identity: stat.identity };
}

/** What tells one refusal from another: the thing at the path and why it is refused. */
function refusalKey(refusal: RefusedPath): string {
  return `${refusal.identity}\0${refusal.taken.reason}`;
}

/**
 * The refusal of another user's FIFO at `path` (`why`, which names the owner), with what lets a
 * button read a FIFO there: its removal, after which the launcher makes one of this user's (once
 * the directory's mode lets it, said when it does not), or a chown.
 */
function anotherUsersFifo(path: string, stat: FileStat, why: Error): Error {
  const uid = effectiveUid();
  const mode = modeText(stat.permissions);
  const quoted = shellQuote(path);
  const directory = parentOf(path);
  let parent;
  try {
    parent = statPath(directory, { follow: true });
  } catch {
    parent = undefined; // what keeps it from being looked at is no part of this advice
  }
  // In a directory of this user's that is not sticky (/tmp is), this user may remove it.
  const whoRemoves = parent?.type === "directory" && parent.uid === uid &&
      (parent.permissions & 0o1000) === 0
    ? ""
    : `as uid ${stat.uid} or root: `;
  let remedy = `remove it (${whoRemoves}rm ${quoted}), and the launcher makes ` +
    `one of this user's there, or give it to this user (chown ${uid} ${quoted})`;
  // The launcher makes this user's FIFO there only once the directory lets it.
  const hint = parent === undefined ? undefined : directoryModeHint(directory, parent);
  if (hint !== undefined) remedy += `; ${hint}`;
  // Another user's FIFO is theirs: they can read what is written to it, or keep it from this
  // button with a chmod at any time.
  return new Deno.errors.PermissionDenied(
    `${why.message} (mode ${mode}): this button reads only a FIFO of its own user's, since ` +
      `its owner could read the presses written to it or take it away; to fix it, ${remedy}`,
  );
}

/** Makes (unless `create: false`) and opens the FIFO at `path`: its fd, identity and whether made. */
function openFifo(
  path: string,
  options: FifoButtonOptions & {
    /** The FIFO whose readers were just looked for (its identity). */
    readersCheckedOf?: string;
  },
): { fd: number; identity: string; created: boolean } {
  const action = "open FIFO";
  let identity: string;
  let created = false;
  if ((options.create ?? true) && options.madeBy !== "other") {
    if (options.remakeDirectory && statPath(parentOf(path), { follow: true }) === undefined) {
      ensurePrivateDirectory(parentOf(path));
    }
    ({ identity, created } = createFifo(path));
  } else {
    const stat = statPath(path);
    if (stat === undefined) {
      throw new Deno.errors.NotFound(`Cannot ${action} ${JSON.stringify(path)}: it does not exist`);
    }
    checkOwn(stat, "fifo", action, path);
    identity = stat.identity;
  }
  if (!created && options.readersCheckedOf !== identity) {
    refuseIfRead(path, identity, { keeper: options.keeper });
  }
  const fd = openPath(path, OPEN_FLAGS, 0, action);
  try {
    const stat = statFd(fd, path);
    checkOwn(stat, "fifo", action, path);
    if (stat.identity !== identity) {
      throw new Deno.errors.InvalidData(
        `Cannot ${action} ${JSON.stringify(path)}: it changed while opening`,
      );
    }
    return { fd, identity, created };
  } catch (error) {
    closeFd(fd);
    if (created) removeIfSame(path, identity, "remove FIFO");
    throw error;
  }
}

/**
 * Refuses a FIFO another process reads: presses would go to whichever reads first. The error
 * names the readers found (`pid N`), or says one waits to read when none can be named.
 * `options.keeper` is no reader: see {@link FifoButtonOptions.keeper}.
 */
export function refuseIfRead(
  path: string,
  identity: string,
  options: { keeper?: number } = {},
): void {
  const readers = fifoReaders(path, identity, options);
  if (readers.pids.length === 0 && !readers.waiting) return;
  const named = readers.pids.map(describeReader);
  const ours = named.some((reader) => reader.ours);
  const who = named.length > 0
    ? `${named.map((reader) => reader.text).join(" and ")} ${
      named.length > 1 ? "read" : "reads"
    } it`
    : "another process is waiting to read it (blocked opening it, so its pid cannot be found)";
  const perhaps = ours ? "" : ", perhaps the original button";
  const stop = ours ? "Stop that launcher or button first" : "Stop it";
  throw new Deno.errors.Busy(
    `Cannot use the FIFO ${JSON.stringify(path)}: ${who}${perhaps}; presses would go to ` +
      `whichever reads first. ${stop}, or choose another --fifo`,
  );
}

/** The working directory of the process `pid`, or "" when it cannot be read. */
function processDirectory(pid: number): string {
  try {
    return readLink(`/proc/${pid}/cwd`);
  } catch {
    return "";
  }
}

/**
 * Names the process `pid` for a refusal: a launcher or button of this system by what it runs,
 * anything else by its command's name.
 */
function describeReader(pid: number): { text: string; ours: boolean } {
  const args = readFileText(`/proc/${pid}/cmdline`)?.split("\0") ?? [];
  // `deno task launch` runs `deno run ... launch.ts`: a path from the process's own directory.
  let cwd: string | undefined;
  const runs = (script: string): boolean =>
    args.some((arg) => {
      if (arg.startsWith("-")) return false;
      const full = arg.startsWith("/") ? arg : `${cwd ??= processDirectory(pid)}/${arg}`;
      return full.endsWith(`/${script}`);
    });
  if (runs("launch.ts")) return { text: `a launcher of this system (pid ${pid})`, ours: true };
  if (runs("producers/button.ts")) {
    return { text: `a button of this system (pid ${pid})`, ours: true };
  }
  const command = args[0]?.slice(args[0].lastIndexOf("/") + 1);
  return { text: command ? `pid ${pid} (${command})` : `pid ${pid}`, ours: false };
}
