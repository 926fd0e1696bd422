/**
 * Notices, through inotify and without polling, when a path we use is removed or replaced by
 * another inode, and (given an open fd) when the inode itself is written or truncated by
 * someone else. A directory this user may enter but not read (`chmod 300`) cannot be watched
 * (inotify needs read access): there the path is looked at every {@link LOOK_MS} instead, until
 * a `chmod` lets the directory be watched.
 *
 * @module
 */

import * as C from "../ffi/constants.ts";
import { FdWaiter, type Readiness } from "../ffi/fd_waiter.ts";
import * as posix from "../ffi/posix.ts";
import { parentOf } from "./owned_path.ts";

/** What happened to the path or its inode. */
export type PathChange =
  /**
   * The inode was written, truncated or had its attributes changed (given an fd); or, given
   * `attributes`, the path's attributes changed.
   */
  | "modified"
  /** Another inode is at the path now. */
  | "replaced"
  /** Nothing is at the path any more. */
  | "removed"
  /** The path names the watched inode again (it was moved back). */
  | "restored";

/** Where the path stands against the inode it should name. */
export type PathStatus = "same" | "replaced" | "removed";

/**
 * A name in the directory made, removed or moved; and the directory itself removed or moved away
 * (`mv dir dir.old && mkdir dir`): the path then names nothing in it, and events in its new place
 * no longer concern the path.
 */
const DIRECTORY_EVENTS = C.IN_CREATE | C.IN_DELETE | C.IN_MOVED_FROM | C.IN_MOVED_TO |
  C.IN_DELETE_SELF | C.IN_MOVE_SELF;
/** Events about the directory itself, gone or moved (or its watch): the path is looked at. */
const LOOK_AGAIN = C.IN_DELETE_SELF | C.IN_MOVE_SELF | C.IN_IGNORED;
/** An ancestor's own events (`ancestors`): moved or removed, which takes the path's directory too. */
const ANCESTOR_GONE = C.IN_DELETE_SELF | C.IN_MOVE_SELF;
const INODE_EVENTS = C.IN_MODIFY | C.IN_ATTRIB;
/** How often a path in a directory that cannot be watched is looked at. */
export const LOOK_MS = 500;
/** How long after a failed poll call the inotify fd is waited on again. */
const RESTART_MS = 100;

/**
 * What a program says, once, of a watch that looks instead ({@link PathWatch.looking}):
 * `subject` names the file, as in `the FIFO "/run/x.fifo"`.
 */
export function lookingNotice(subject: string): string {
  return `The directory of ${subject} cannot be watched (its mode lets this user in but not ` +
    `read it): looking at it every ${LOOK_MS} ms instead`;
}
/**
 * What a program says once a watch that looked watches instead
 * ({@link PathWatchOptions.onWatched}).
 */
export function watchedNotice(subject: string): string {
  return `The directory of ${subject} can be watched again: a change is noticed at once`;
}
const decoder = new TextDecoder();

/** Options for {@link PathWatch}. */
export interface PathWatchOptions {
  /** An open fd of the inode, to hear of writes and truncation too. */
  fd?: number;
  /**
   * A missing directory, or one closed to this user so that the path cannot even be looked at
   * (`chmod 000`), is no error: the watch then reports nothing about the path (the inode's
   * changes still, given `fd`), and its owner looks at {@link PathWatch.status} now and then (as
   * for a directory made again, which no watch set before it sees). A directory that can be
   * looked into but not watched (`chmod 300`) is looked at by the watch itself, with or without
   * this (see {@link PathWatch.looking}).
   */
  directoryMayBeMissing?: boolean;
  /**
   * With `directoryMayBeMissing`: a missing or closed directory is looked at every
   * {@link LOOK_MS} by the watch itself, as a `chmod 300` one is, so that what is at the path is
   * told once it can be seen (what was there all along is no change). So too once the directory
   * is removed or moved away later (`rm -r`, `mv run run.old && mkdir run`), or one above it that
   * `ancestors` watches: a directory made in its place is looked into, then watched. While the
   * path names nothing, the directory is looked at too, as its removal reaches its watch only
   * once no open file in it is left. Default false: the owner looks itself.
   */
  lookWhenUnwatched?: boolean;
  /**
   * How many directories above the path's own to watch as well, for their being moved or
   * removed (`mv runtime runtime.old && mkdir runtime`): the path's own directory is then
   * where it was, and hears nothing. Default 0. One that is missing or closed is skipped.
   */
  ancestors?: number;
  /**
   * Hear the path's attributes changing too (`chmod`, `chown`), reported as `"modified"`,
   * through its directory's watch: unlike `fd`, this needs no open fd, nor read access to the
   * file, and follows whatever the path names.
   */
  attributes?: boolean;
  /**
   * Called when a watch that looked at the path ({@link PathWatch.looking}, or a missing
   * directory with `lookWhenUnwatched`) watches its directory from now on: a `chmod` let it, or
   * the directory was made.
   */
  onWatched?: () => void;
}

/**
 * The watch of the directory of `path`: -1 when it is missing (or closed) and may be, and
 * {@link LOOKING} when it may be looked into but not watched (`chmod 300`).
 */
function watchDirectory(inotify: number, path: string, options: PathWatchOptions): number {
  try {
    const mask = DIRECTORY_EVENTS | (options.attributes ? C.IN_ATTRIB : 0);
    return posix.inotifyWatch(inotify, parentOf(path), mask);
  } catch (error) {
    if (error instanceof Deno.errors.PermissionDenied && !unreachable(path)) return LOOKING;
    if (!options.directoryMayBeMissing) throw error;
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) {
      return -1;
    }
    if (error instanceof Deno.errors.PermissionDenied) return -1;
    throw error;
  }
}

/** {@link watchDirectory}'s word for a directory that is looked at, not watched. */
const LOOKING = -2;

/**
 * Watches the `count` directories above the directory of `path` for their own moving or removal
 * (which the caller tells by their events' masks), skipping any that cannot be watched: a
 * missing one leaves the path's own directory missing too, which its watch says.
 */
function watchAncestors(inotify: number, path: string, count: number): void {
  let directory = parentOf(path);
  for (let i = 0; i < count && directory !== "/"; i++) {
    directory = parentOf(directory);
    try {
      // Added to, not in place of, a watch of the same directory (a relative path's "." above
      // its own, a path with "/./" in it): the path's own directory's watch keeps its events.
      posix.inotifyWatch(inotify, directory, C.IN_DELETE_SELF | C.IN_MOVE_SELF | C.IN_MASK_ADD);
    } catch (error) {
      if (
        !(error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory ||
          error instanceof Deno.errors.PermissionDenied)
      ) throw error;
    }
  }
}

/** Whether a directory on the way keeps this user from looking at `path` at all. */
function unreachable(path: string): boolean {
  try {
    posix.statPath(path);
    return false;
  } catch (error) {
    if (error instanceof Deno.errors.PermissionDenied) return true;
    throw error;
  }
}

/** Watches one path and, optionally, its inode; see the module description. */
export class PathWatch {
  readonly #path: string;
  readonly #name: string;
  readonly #identity: string;
  readonly #inotify: number;
  readonly #options: PathWatchOptions;
  /** The directory's watch, or -1 or {@link LOOKING}; watched from the first look it may be. */
  #directoryWatch: number;
  /** The watched directory's inode (as `FileStat.identity`), to tell it from another there. */
  #directoryIdentity: string | undefined;
  readonly #inodeWatch: number;
  readonly #attributes: boolean;
  readonly #waiter = new FdWaiter();
  readonly #buffer = new Uint8Array(4096);
  #status: PathStatus;
  /**
   * Looks at the path every {@link LOOK_MS}: a 0300 directory, or an unwatched one when asked;
   * until the directory may be watched again.
   */
  #polling: boolean;
  /** It began by looking: it looks again whenever its directory's watch is gone. */
  readonly #looksUnwatched: boolean;
  /** The status could not be looked up yet (a closed directory): the first one seen is no change. */
  #unseen: boolean;
  /** Looking (see {@link PathWatch.looking}): the mode last seen, for `attributes`. */
  #mode: number | undefined;
  /** Looking: the timer of the next look, and whether that look is due. */
  #lookTimer: ReturnType<typeof setTimeout> | undefined;
  #lookDue = false;
  /**
   * Looking: the wait on the inotify fd, which goes on across the looks (given `fd`, the inode's
   * events), and what it ended with, not yet taken by {@link PathWatch.changes}.
   */
  #waiting = false;
  #ready: Readiness | undefined;
  /** Looking: wakes {@link PathWatch.changes} (a look due, the wait ended, or closed). */
  #wake: (() => void) | undefined;
  #closed = false;

  /**
   * @param path the path to watch
   * @param identity the inode (device and number, as `FileStat.identity`) it should name
   */
  constructor(path: string, identity: string, options: PathWatchOptions = {}) {
    this.#path = path;
    this.#name = path.slice(path.lastIndexOf("/") + 1);
    this.#identity = identity;
    this.#attributes = options.attributes ?? false;
    this.#options = options;
    this.#inotify = posix.inotifyInit();
    try {
      this.#directoryWatch = watchDirectory(this.#inotify, path, options);
      watchAncestors(this.#inotify, path, options.ancestors ?? 0);
      this.#inodeWatch = options.fd === undefined
        ? -1
        : posix.inotifyWatch(this.#inotify, `/proc/self/fd/${options.fd}`, INODE_EVENTS);
    } catch (error) {
      posix.closeFd(this.#inotify);
      throw error;
    }
    this.#directoryIdentity = this.#directoryNow();
    this.#polling = this.looking ||
      (this.#directoryWatch === -1 && (options.lookWhenUnwatched ?? false));
    this.#looksUnwatched = this.#polling;
    // An unwatched directory that nobody looks at reports nothing; one looked at (from now on)
    // reports what it holds once it can be seen, news only if not the inode watched.
    let seen: PathStatus | undefined;
    try {
      seen = this.#directoryWatch === -1 && !this.#polling ? undefined : this.#look();
    } catch (error) {
      posix.closeFd(this.#inotify); // ENAMETOOLONG, ELOOP, EIO: nobody will close() it
      throw error;
    }
    this.#status = seen ?? "removed";
    this.#unseen = this.#polling && seen === undefined;
    // Held against what a look finds: the mode seen last, also while watched (a watch may look
    // again later, once its directory goes; see #lookAgain()).
    if (this.#polling || this.#attributes) this.#mode = this.#modeNow();
    this.#lookWhileRemoved();
  }

  /**
   * Whether the path's directory cannot be watched (this user may enter it but not read it,
   * `chmod 300`) and the path is looked at every {@link LOOK_MS} instead: a change is then told
   * that much later, and a change undone between two looks not at all. It is watched again from
   * the first look after a `chmod` lets it be.
   */
  get looking(): boolean {
    return this.#directoryWatch === LOOKING;
  }

  /** The inode of the directory at the path's directory's path now, if one is there. */
  #directoryNow(): string | undefined {
    try {
      // Followed, as inotify_add_watch() follows it.
      return posix.statPath(parentOf(this.#path), { follow: true })?.identity;
    } catch {
      return undefined;
    }
  }

  /** The permission bits at the path now, or undefined when nothing is there to look at. */
  #modeNow(): number | undefined {
    try {
      return posix.statPath(this.#path)?.permissions;
    } catch {
      return undefined;
    }
  }

  /** {@link PathWatch.status}, or undefined while the path cannot be looked at (chmod). */
  #look(): PathStatus | undefined {
    try {
      return this.status();
    } catch (error) {
      if (error instanceof Deno.errors.PermissionDenied) return undefined;
      throw error;
    }
  }

  /** The watched path. */
  get path(): string {
    return this.#path;
  }

  /**
   * Looks now: whether the path still names the watched inode. Throws `PermissionDenied` when a
   * directory on the way does not let this user look.
   */
  status(): PathStatus {
    let stat;
    try {
      stat = posix.statPath(this.#path);
    } catch (error) {
      // A file where the path's directory was (`mv run run.old && touch run`): nothing is there.
      if (error instanceof Deno.errors.NotADirectory) return "removed";
      throw error;
    }
    if (stat === undefined) return "removed";
    return stat.identity === this.#identity ? "same" : "replaced";
  }

  /**
   * Yields each change until closed. Changes that come together are reported once each; the
   * path's status is looked up after every batch, so nothing is missed in between.
   */
  async *changes(): AsyncGenerator<PathChange, void, undefined> {
    while (!this.#closed) {
      const { readiness, look } = this.#polling
        ? await this.#nextWake()
        : { readiness: await this.#inotifyReady(), look: false };
      if (readiness === "cancelled" || this.#closed) return;
      let modified = false;
      let directory = false;
      if (look) {
        directory = true;
        const mode = this.#modeNow();
        // Closed to this user (chmod 000) meanwhile: the mode last seen stays, to hold the next
        // one seen against (the look after its opening again is no change of the path's).
        if (mode !== undefined) {
          if (this.#attributes && mode !== this.#mode) modified = true;
          this.#mode = mode;
        }
        this.#watchIfAble();
        // Looking while the path names nothing, its directory watched (see below): still the
        // one watched? A directory whose removed file something holds open is itself removed
        // from the path (rm -r) with no event until that file is closed.
        if (this.#directoryWatch >= 0 && this.#directoryNow() !== this.#directoryIdentity) {
          this.#lookAgain(0);
          this.#watchIfAble(); // one made in its place meanwhile
        }
      }
      for (;;) {
        if (readiness === undefined) break;
        const count = posix.readFd(this.#inotify, this.#buffer, "inotify events");
        if (count <= 0) break;
        const view = new DataView(this.#buffer.buffer, 0, count);
        for (let at = 0; at + 16 <= count;) {
          const wd = view.getInt32(at, true);
          const mask = view.getUint32(at + 4, true);
          const length = view.getUint32(at + 12, true);
          if ((mask & C.IN_Q_OVERFLOW) !== 0) {
            // Events were dropped (wd -1): whatever the path names now is found by looking, and
            // a change of the inode may have been among them.
            directory = true;
            modified ||= this.#inodeWatch >= 0 || this.#attributes;
          } else if (wd === this.#inodeWatch) {
            modified = true;
          } else if ((mask & LOOK_AGAIN) !== 0) {
            directory = true; // the directory itself went (or its watch did): looked at
            if (wd === this.#directoryWatch) this.#lookAgain(mask);
            // An ancestor moved or removed (`ancestors`): the path's own directory went with it,
            // and its watch follows it wherever it went.
            else if ((mask & ANCESTOR_GONE) !== 0) this.#lookAgain(0);
          } else if (wd === this.#directoryWatch) {
            const raw = this.#buffer.subarray(at + 16, at + 16 + length);
            const end = raw.indexOf(0);
            if (decoder.decode(end < 0 ? raw : raw.subarray(0, end)) === this.#name) {
              if ((mask & C.IN_ATTRIB) !== 0) {
                modified = true;
                this.#mode = this.#modeNow() ?? this.#mode;
              } else directory = true;
            }
          }
          at += 16 + length;
        }
      }
      if (readiness === "error" || readiness === "hangup") {
        // The poll call failed (its hub could not make its eventfd: EMFILE), and the next one
        // would at once: a moment later, not a loop of microtasks that starves the event loop.
        // What came meanwhile is read then.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            this.#wake = undefined;
            resolve();
          }, RESTART_MS);
          this.#wake = () => {
            clearTimeout(timer);
            this.#wake = undefined;
            resolve();
          };
        });
        if (this.#closed) return;
      }
      if (modified) yield "modified";
      if (directory) {
        // Closed to this user (chmod) since: nothing can be told until it opens again.
        const seen = this.#look();
        const status = seen ?? this.#status;
        if (this.#unseen && seen !== undefined) {
          // First seen now: held against the inode watched, as at the start.
          this.#unseen = false;
          this.#status = "same";
        }
        if (status !== this.#status) {
          this.#status = status;
          this.#lookWhileRemoved();
          yield status === "same" ? "restored" : status;
        }
      }
    }
  }

  /**
   * A watch that looks again once its directory goes (see {@link PathWatch.#lookAgain}) looks at
   * that directory every {@link LOOK_MS} while the path names nothing, as well as watching it:
   * `rm -r` of a directory that held a file something keeps open (the state file the system's
   * processes map) removes the directory with no event on its watch until the file is closed,
   * which may be never. The look costs one `statx` per {@link LOOK_MS}, and only then.
   */
  #lookWhileRemoved(): void {
    if (!this.#looksUnwatched && !this.#options.lookWhenUnwatched) return;
    if (this.#directoryWatch < 0) return; // looking already, or no directory to watch
    if (this.#status === "removed") {
      this.#polling = true;
      return;
    }
    this.#polling = false;
    this.#stopLookTimer();
  }

  /** Cancels the next look, if one is pending. */
  #stopLookTimer(): void {
    // Only a timer that exists: Deno's timers load on their first use, which cost a button that
    // never looks some 3 MiB of RSS (a tenth of its own) when every watch's start cleared none.
    if (this.#lookTimer !== undefined) clearTimeout(this.#lookTimer);
    this.#lookTimer = undefined;
    this.#lookDue = false;
  }

  /**
   * Looking: watches the directory from now on if it may be watched now (a `chmod` opened it to
   * this user, or it was made again), and stops looking. This look then tells what changed
   * before the watch began.
   */
  #watchIfAble(): void {
    if (this.#directoryWatch >= 0) return;
    let watch: number;
    try {
      watch = watchDirectory(this.#inotify, this.#path, this.#options);
    } catch {
      return; // missing now, where it may not be: looked at again, as before
    }
    if (watch < 0) return;
    this.#directoryWatch = watch;
    this.#directoryIdentity = this.#directoryNow();
    // The directories above it may be new too (`mv runtime runtime.old && mkdir -p runtime/run`):
    // watched as the first ones were, or their next move would go unheard.
    try {
      watchAncestors(this.#inotify, this.#path, this.#options.ancestors ?? 0);
    } catch {
      // Out of inotify watches (ENOSPC): the path's own directory is watched all the same.
    }
    this.#polling = false;
    this.#stopLookTimer();
    // Nothing at the path yet: the new directory may be removed as silently as the last one.
    this.#lookWhileRemoved();
    this.#options.onWatched?.();
  }

  /**
   * The path's directory was removed or moved away: a watch that looks at an unwatched directory
   * (it began by looking, or was told `lookWhenUnwatched`) looks at the path again, as before it
   * could watch, so that a directory made there anew is seen. A moved directory's watch would
   * follow it wherever it went: it is dropped.
   */
  #lookAgain(mask: number): void {
    if (!this.#looksUnwatched && !this.#options.lookWhenUnwatched) return;
    if (this.#directoryWatch < 0) return; // looking already
    if ((mask & C.IN_IGNORED) === 0) posix.inotifyUnwatch(this.#inotify, this.#directoryWatch);
    this.#directoryWatch = -1;
    this.#polling = true;
  }

  /**
   * The inotify fd's next readiness. After looking, the wait {@link PathWatch.#nextWake} left in
   * flight is the one to take: a waiter has one at a time.
   */
  async #inotifyReady(): Promise<Readiness> {
    if (this.#waiting) {
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
    const ready = this.#ready;
    this.#ready = undefined;
    return ready ?? await this.#waiter.wait(this.#inotify);
  }

  /**
   * Looking: waits until the next look is due or the inotify fd's wait ends, and says which
   * (both, when both came). The fd's wait gets one reaction, which leaves its result in a field:
   * a race of it against each look would add a reaction to it every {@link LOOK_MS}, kept until
   * it settled, which without events on the fd is never.
   */
  async #nextWake(): Promise<{ readiness: Readiness | undefined; look: boolean }> {
    if (!this.#waiting && this.#ready === undefined) {
      this.#waiting = true;
      void this.#waiter.wait(this.#inotify).then((readiness) => {
        this.#waiting = false;
        this.#ready = readiness;
        this.#wake?.();
      });
    }
    this.#lookTimer ??= setTimeout(() => {
      this.#lookTimer = undefined;
      this.#lookDue = true;
      this.#wake?.();
    }, LOOK_MS);
    if (this.#ready === undefined && !this.#lookDue && !this.#closed) {
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
    const woke = { readiness: this.#ready, look: this.#lookDue };
    this.#ready = undefined;
    this.#lookDue = false;
    return woke;
  }

  /** Stops watching; a pending `changes()` ends. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopLookTimer();
    this.#wake?.();
    await this.#waiter.close();
    posix.closeFd(this.#inotify);
  }
}
