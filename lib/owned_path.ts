/**
 * The rules for paths this library creates or adopts (region files, FIFOs, private
 * directories), in one place: created 0600 (directories 0700), never followed through a
 * symlink, only in a directory other users cannot swap things in, only if they belong to this
 * user, and never removed unless the path still names the very inode that was ours.
 *
 * @module
 */

import * as C from "../ffi/constants.ts";
import * as posix from "../ffi/posix.ts";
import type { FileStat } from "../ffi/posix.ts";
import { failure } from "./errors.ts";
import { shellQuote } from "./shell_quote.ts";

/** The parent directory of `path`. */
export function parentOf(path: string): string {
  const cut = path.replace(/\/+$/, "").lastIndexOf("/");
  if (cut < 0) return path.startsWith("/") ? "/" : ".";
  return cut === 0 ? "/" : path.slice(0, cut);
}

function describeOwner(uid: number): string {
  return `it belongs to uid ${uid}, not to this process's uid ${posix.effectiveUid()}`;
}

let unmappedUid: number | undefined | null = null;

/**
 * The uid that owners outside this process's user namespace show as (`overflowuid`), or
 * undefined in the initial namespace, where that uid is a user like any other.
 */
function unmappedOwnerUid(): number | undefined {
  if (unmappedUid === null) {
    const map = posix.readFileText("/proc/self/uid_map")?.trim().split(/\s+/).join(" ");
    const overflow = Number(posix.readFileText("/proc/sys/kernel/overflowuid")?.trim());
    unmappedUid = map === "0 0 4294967295" || !Number.isInteger(overflow) ? undefined : overflow;
  }
  return unmappedUid;
}

/** A mode's permission bits as `ls -l`'s octal and chmod(1) write them: `0600`, `1777`. */
export function modeText(permissions: number): string {
  return (permissions & 0o7777).toString(8).padStart(4, "0");
}

/**
 * Why another user could rename or replace entries of the directory `stat` describes, if one
 * could: it belongs to someone who is neither us nor root, or others may write it and it is not
 * sticky (a sticky directory, as `/tmp` is, lets only an entry's owner rename it). Above the
 * file's own directory (`above`), an owner outside this user namespace counts as root: in a
 * rootless container or `unshare -U`, that is how root's `/` and `/tmp` look.
 */
function unsafeDirectory(stat: posix.FileStat, above = false): string | undefined {
  const mode = modeText(stat.permissions);
  if (
    stat.uid !== posix.effectiveUid() && stat.uid !== 0 &&
    !(above && stat.uid === unmappedOwnerUid())
  ) {
    return `belongs to uid ${stat.uid} (mode ${mode})`;
  }
  if ((stat.permissions & 0o022) !== 0 && (stat.permissions & C.S_ISVTX) === 0) {
    return `is writable by other users and not sticky (mode ${mode})`;
  }
  return undefined;
}

/**
 * How a POSIX shared-memory name is opened only to look at what it is before removing it: never
 * through a symlink, and without blocking on a FIFO that anyone may put in the sticky /dev/shm.
 */
export const NAME_LOOK_FLAGS: number = C.O_RDONLY | C.O_NONBLOCK | C.O_NOFOLLOW | C.O_CLOEXEC;

/** Deeper than any path the kernel resolves (PATH_MAX is 4096 bytes, "/.." three of them). */
const MAX_ANCESTORS = 1366;

/** {@link posix.statPath}, following links, with any failure but "not found" named for `subject`. */
function statAbove(path: string, action: string, subject: string): posix.FileStat | undefined {
  try {
    return posix.statPath(path, { follow: true });
  } catch (error) {
    // `D/..` that cannot be looked at: D is closed to this user, which is what to say.
    const closed = error instanceof Deno.errors.PermissionDenied && path.endsWith("/..")
      ? path.slice(0, -3)
      : undefined;
    throw failure(
      Deno.errors.PermissionDenied,
      action,
      subject,
      closed === undefined
        ? `cannot check the directory ${path} above it: ${(error as Error).message}`
        : `this user may not look into ${closed} (permission denied)${closedModeHint(closed)}`,
    );
  }
}

/**
 * What to add when `directory`, which this user may not look into, is this user's own (its mode
 * lost the owner's x bit: `chmod 600`), with the command that fixes it; "" otherwise.
 */
function closedModeHint(directory: string): string {
  let stat;
  try {
    stat = posix.statPath(directory, { follow: true });
  } catch {
    return "";
  }
  // With its x bit, what refused is not the mode (a security module, say): no chmod helps.
  if (
    stat?.type !== "directory" || stat.uid !== posix.effectiveUid() ||
    (stat.permissions & 0o100) !== 0
  ) return "";
  const mode = modeText(stat.permissions);
  return `: it is this user's, but its mode (${mode}) does not let this user look into it; ` +
    `chmod u+rwx ${shellQuote(directory)}`;
}

/**
 * Refuses a path under a directory above `directory` that another user could rename or
 * replace (see {@link unsafeDirectory}): whoever can rename `/srv/open/me` can put their own
 * `me` there, whatever `me` itself allows. Walks up through `..`, so the directories checked are
 * the ones the kernel resolves, whatever symlinks led to `directory`; each is named by its path
 * where that path is the same directory, else as `directory/../..`. Symlinks on the way as
 * written are checked too: see {@link checkLinksOnTheWay}.
 */
function checkAncestors(directory: string, action: string, subject: string): void {
  checkLinksOnTheWay(directory, action, subject);
  const root = statAbove("/", action, subject)?.lockIdentity;
  let here = statAbove(directory, action, subject);
  let physical = directory;
  let lexical: string | undefined = directory;
  for (let depth = 0; here !== undefined; depth++) {
    if (depth === MAX_ANCESTORS) {
      throw failure(Deno.errors.PermissionDenied, action, subject, "its directories nest too deep");
    }
    if (here.lockIdentity === root) return;
    physical = `${physical.replace(/\/+$/, "")}/..`;
    const above = statAbove(physical, action, subject);
    if (above === undefined) return;
    // The same directory (one bind-mounted under itself): look further up, not stop.
    if (above.lockIdentity === here.lockIdentity) continue;
    lexical = lexical === undefined || parentOf(lexical) === lexical
      ? undefined
      : parentOf(lexical);
    const problem = unsafeDirectory(above, true);
    if (problem !== undefined) {
      const same = lexical !== undefined &&
        posix.statPath(lexical, { follow: true })?.lockIdentity === above.lockIdentity;
      throw failure(
        Deno.errors.PermissionDenied,
        action,
        subject,
        `the directory ${same ? lexical : physical} above it ${problem}, so another user could ` +
          "put a directory of theirs in its place",
      );
    }
    here = above;
  }
}

/**
 * Refuses a path that passes through a symlink another user could change: one in a directory
 * of the kind {@link unsafeDirectory} refuses, or one that is not ours or root's. The `..` walk
 * checks where the links lead, not where they are.
 */
function checkLinksOnTheWay(directory: string, action: string, subject: string): void {
  const parts = directory.split("/");
  for (let end = parts.length; end > 0; end--) {
    const prefix = parts.slice(0, end).join("/");
    if (prefix === "" || prefix === "." || prefix === "..") continue;
    const stat = posix.statPath(prefix);
    if (stat?.type !== "symlink") continue;
    const holder = parentOf(prefix);
    const holderStat = statAbove(holder, action, subject);
    const problem = stat.uid !== posix.effectiveUid() && stat.uid !== 0
      ? `belongs to uid ${stat.uid}`
      : holderStat === undefined
      ? undefined
      : unsafeDirectory(holderStat, true);
    if (problem !== undefined) {
      throw failure(
        Deno.errors.PermissionDenied,
        action,
        subject,
        `the symbolic link ${prefix} on its way ${
          problem.startsWith("belongs") ? problem : `is in ${holder}, which ${problem}`
        }, so another user could point it elsewhere`,
      );
    }
  }
}

/**
 * Refuses a directory where another user could swap a file under us: writable by others
 * without the sticky bit, or owned by someone who is neither us nor root; and the same of every
 * directory above it.
 *
 * @param path the file whose directory is checked
 */
export function checkPrivateDirectory(path: string, action: string): void {
  if (path.endsWith("/")) {
    throw failure(
      Deno.errors.IsADirectory,
      action,
      path,
      'it ends in "/", so it names a directory, not a file',
    );
  }
  const directory = parentOf(path);
  const stat = posix.statPath(directory, { follow: true });
  if (stat === undefined) {
    throw failure(Deno.errors.NotFound, action, path, `its directory ${directory} does not exist`);
  }
  if (stat.type !== "directory") {
    throw failure(Deno.errors.NotADirectory, action, path, `${directory} is not a directory`);
  }
  checkDirectoryAndAbove(directory, stat, action, path);
}

/** Refuses `subject` if another user could replace `directory` (its `stat`) or its entries. */
function checkDirectoryAndAbove(
  directory: string,
  stat: posix.FileStat,
  action: string,
  subject: string,
): void {
  const problem = unsafeDirectory(stat);
  if (problem !== undefined) {
    throw failure(
      Deno.errors.PermissionDenied,
      action,
      subject,
      `its directory ${directory} ${problem}`,
    );
  }
  checkAncestors(directory, action, subject);
}

/** Refuses an inode that is not of `type` or not this user's, saying what it is instead. */
export function checkOwn(
  stat: posix.FileStat,
  type: "file" | "fifo",
  action: string,
  subject: string,
): void {
  if (stat.type === "symlink") {
    throw failure(
      Deno.errors.FilesystemLoop,
      action,
      subject,
      "it is a symbolic link; refusing to follow it",
    );
  }
  if (stat.type !== type) {
    const wanted = type === "file" ? "a regular file" : "a FIFO";
    if (stat.type === "directory") {
      throw failure(Deno.errors.IsADirectory, action, subject, `it is a directory, not ${wanted}`);
    }
    throw failure(
      type === "fifo" ? Deno.errors.AlreadyExists : Deno.errors.InvalidData,
      action,
      subject,
      `it is a ${stat.type}, not ${wanted}; it is left as it is`,
    );
  }
  if (stat.uid !== posix.effectiveUid()) {
    throw failure(Deno.errors.PermissionDenied, action, subject, describeOwner(stat.uid));
  }
}

/** Refuses a System V segment or memfd of another user. */
export function checkOwner(uid: number, action: string, subject: string): void {
  if (uid !== posix.effectiveUid()) {
    throw failure(Deno.errors.PermissionDenied, action, subject, describeOwner(uid));
  }
}

/**
 * File systems whose files are the kernel's interfaces, not data (`statfs(2)`'s magic numbers):
 * as root every file there is "ours", and writing a state into one sets a kernel tunable.
 */
const KERNEL_FILE_SYSTEMS = new Map<number, string>([
  [0x9fa0, "proc"],
  [0x62656572, "sysfs"],
  [0x64626720, "debugfs"],
  [0x74726163, "tracefs"],
  [0x73636673, "securityfs"],
  [0x62656570, "configfs"],
  [0x27e0eb, "cgroup"],
  [0x63677270, "cgroup2"],
  [0xde5e81e4, "efivarfs"],
  [0xcafe4a11, "bpf"],
  [0x6165676c, "pstore"],
]);

/** Throws `InvalidData` if the open `fd` is a file of the kernel's (see above), not of data. */
export function checkDataFile(fd: number, action: string, subject: string): void {
  const kind = KERNEL_FILE_SYSTEMS.get(posix.fileSystemType(fd, subject));
  if (kind === undefined) return;
  throw failure(
    Deno.errors.InvalidData,
    action,
    subject,
    `it is a file of the kernel's ${kind} file system, not one that holds data; it is left as it is`,
  );
}

/**
 * `error`, from making `path`, with why when the mode of the path's directory, which is this
 * user's own, refuses it (`chmod 500` or `chmod 100`: no write): the OS says only EACCES.
 */
export function withDirectoryMode(error: unknown, path: string): unknown {
  if (!(error instanceof Deno.errors.PermissionDenied)) return error;
  const directory = parentOf(path);
  let stat;
  try {
    stat = posix.statPath(directory, { follow: true });
  } catch {
    return error; // what keeps the directory from being looked at is said elsewhere
  }
  const hint = stat === undefined ? undefined : directoryModeHint(directory, stat);
  if (hint !== undefined) error.message += `; ${hint}`;
  return error;
}

/**
 * What to say of `directory` (whose status is `stat`) when it is this user's but its mode lets
 * this user make nothing in it (0500, 0100), with the command that fixes it; undefined
 * otherwise. Both paths are quoted, so that no character of theirs can break the line it is in.
 */
export function directoryModeHint(directory: string, stat: FileStat): string | undefined {
  if (stat.type !== "directory" || stat.uid !== posix.effectiveUid()) return undefined;
  if ((stat.permissions & 0o300) === 0o300) return undefined;
  const mode = modeText(stat.permissions);
  return `its directory ${JSON.stringify(directory)} is this user's, but its mode (${mode}) ` +
    `does not let this user make anything in it: chmod u+wx ${shellQuote(directory)}`;
}

/** Creates (0700) or checks a directory that only this user can use; returns `path`. */
export function ensurePrivateDirectory(path: string): string {
  const action = "use as a private directory";
  // Checked before anything is made in it (a missing parent is makeDirectory's to report).
  const parent = parentOf(path);
  const parentStat = posix.statPath(parent, { follow: true });
  if (parentStat?.type === "directory") checkDirectoryAndAbove(parent, parentStat, action, path);
  try {
    posix.makeDirectory(path, 0o700);
  } catch (error) {
    throw withDirectoryMode(error, path);
  }
  const stat = posix.statPath(path);
  if (stat?.type !== "directory") {
    throw failure(Deno.errors.AlreadyExists, action, path, `it is a ${stat?.type}`);
  }
  const uid = posix.effectiveUid();
  const mode = modeText(stat.permissions);
  if (stat.uid !== uid) {
    throw failure(
      Deno.errors.PermissionDenied,
      action,
      path,
      `it belongs to uid ${stat.uid} (mode ${mode}), not to us (uid ${uid}); it is left as it is`,
    );
  }
  if ((stat.permissions & 0o077) !== 0) {
    throw failure(
      Deno.errors.PermissionDenied,
      action,
      path,
      `it is ours, but others may use it (mode ${mode}); make it private with chmod 700 ${
        shellQuote(path)
      }`,
    );
  }
  return path;
}

/** Where a FIFO we created or adopted lives, and which inode it is. */
export interface OwnedFifo {
  /** The FIFO's path. */
  path: string;
  /** Device and inode: the FIFO's identity, to tell it from one made later at the same path. */
  identity: string;
  /** Whether it was created here (and so is ours to remove). */
  created: boolean;
}

/**
 * Creates a FIFO (0600) at `path`, or adopts the FIFO of ours already there. Anything else at
 * the path is refused, never removed.
 */
export function createFifo(path: string): OwnedFifo {
  const action = "create FIFO";
  checkPrivateDirectory(path, action);
  const existing = posix.statPath(path);
  if (existing !== undefined) {
    checkOwn(existing, "fifo", action, path);
    return { path, identity: existing.identity, created: false };
  }
  try {
    posix.makeFifo(path, 0o600);
  } catch (error) {
    throw withDirectoryMode(error, path);
  }
  const made = posix.statPath(path);
  if (made === undefined) throw failure(Deno.errors.NotFound, action, path, "it vanished");
  return { path, identity: made.identity, created: true };
}

/**
 * Removes `path` only while it still names the inode with `identity`: never something that
 * took its place. Returns whether it removed anything.
 */
export function removeIfSame(path: string, identity: string, action = "remove"): boolean {
  if (posix.statPath(path)?.identity !== identity) return false;
  posix.unlinkPath(path, action);
  return true;
}

/**
 * Removes the POSIX shared-memory `name` only while it still names the object with `identity`.
 * Returns whether it removed anything; throws (naming the OS reason) when it cannot tell, such
 * as when the object may not be opened any more.
 */
export function removeShmIfSame(name: string, identity: string): boolean {
  const action = "remove shared memory";
  let fd: number;
  try {
    fd = posix.shmOpen(name, NAME_LOOK_FLAGS, 0, action);
  } catch (error) {
    // A symlink put at the name (ELOOP) is no more the object than nothing is.
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.FilesystemLoop) {
      return false;
    }
    throw error;
  }
  try {
    if (posix.statFd(fd, name).identity !== identity) return false;
  } finally {
    posix.closeFd(fd);
  }
  posix.shmUnlink(name);
  return true;
}

/** How {@link openOrCreate} opens a file, and makes one when asked. */
export interface OpenOrCreate {
  /** Create the file when nothing is at its path. */
  create?: boolean;
  /** Open only a file this call creates (`AlreadyExists` otherwise). */
  exclusive?: boolean;
  /** The file's path or name, for messages. */
  name?: string;
  /**
   * How to make the file unnamed and name it once it is ready: `open` makes it (undefined where
   * the file system cannot: then it is made at its path, as without this), `link` names it and
   * throws `AlreadyExists` when anything is at the path already.
   */
  unnamed?: Unnamed;
  /** Sets a file made here up (its size, what it holds) before anyone can open it by name. */
  setUp?: (fd: number) => void;
  /** Told each file made here, set up, before it gets its name: see {@link openOrCreate}. */
  beforeLink?: (fd: number) => void;
  /**
   * Removes the file made here, open as `fd`, from its path when setting it up failed where no
   * unnamed file could be made (see `unnamed`).
   */
  remove?: (fd: number) => void;
}

/** How {@link openOrCreate} makes a file unnamed, and names it once it is ready. */
export interface Unnamed {
  /** Makes the file unnamed: undefined where the file system cannot. */
  open: () => number | undefined;
  /** Names it; `AlreadyExists` when anything is at the path already. */
  link: (fd: number) => void;
}

/** An unnamed file's flags: O_NOFOLLOW would refuse its directory, which is what is opened. */
const UNNAMED_FLAGS = C.O_RDWR | C.O_CLOEXEC;

/** Where glibc keeps POSIX shared memory (see shm_open(3)). */
const SHM_DIRECTORY = "/dev/shm";

/**
 * {@link Unnamed} for a file at `path`, made in its directory (followed as a path to the file
 * would be; the name itself is never opened). Errors name `path` and `action`.
 */
export function unnamedAt(path: string, action: string): Unnamed {
  return {
    open: (): number | undefined => {
      try {
        return posix.openUnnamed(parentOf(path), UNNAMED_FLAGS, 0o600, action, path);
      } catch (error) {
        throw withDirectoryMode(error, path);
      }
    },
    link: (fd: number): void => {
      try {
        posix.linkFd(fd, path, action);
      } catch (error) {
        throw withDirectoryMode(error, path);
      }
    },
  };
}

/**
 * {@link Unnamed} for the POSIX shared-memory object `shmName` (normalized, with its leading
 * slash): glibc's shm_open(3) is open(2) of /dev/shm/NAME, so it is made there unnamed and named
 * as shm_open would name it. Errors name `shmName` and `action`.
 */
export function unnamedShm(shmName: string, action: string): Unnamed {
  const file = `${SHM_DIRECTORY}${shmName}`;
  return {
    open: (): number | undefined =>
      posix.openUnnamed(SHM_DIRECTORY, UNNAMED_FLAGS, 0o600, action, shmName),
    link: (fd: number): void => {
      try {
        posix.linkFd(fd, file, action);
      } catch (error) {
        if (error instanceof Error) {
          error.message = error.message.replace(JSON.stringify(file), JSON.stringify(shmName));
        }
        throw error;
      }
    },
  };
}

/** How often a file is looked for and made again, as others make and remove it meanwhile. */
const CREATE_ATTEMPTS = 3;

/**
 * Opens with `openFd`, or creates the file when `create` is set and nothing is at the path (an
 * existing file is opened instead unless `exclusive`), so `created` tells whether this call made
 * it. A file made here gets exactly mode 0600 (every file we create has it), whatever the umask
 * took from it: `umask 0277` left one its owner could not open again for writing.
 *
 * With `unnamed`, a new file is made without a name, set up (`setUp`), handed to `beforeLink`
 * and only then named: a process that dies before the name is given leaves nothing at the path,
 * one that dies after it leaves a file `beforeLink` was told of, never one it was not. A file
 * put at the path meanwhile is opened as an existing one (with `exclusive`, refused). Where no
 * unnamed file can be made, the file is made at its path and set up and told of right after,
 * which leaves that window open.
 */
export function openOrCreate(
  openFd: (flags: number) => number,
  options: OpenOrCreate,
): { fd: number; created: boolean } {
  if (!options.create) return { fd: openFd(0), created: false };
  const name = options.name ?? "file";
  for (let attempt = 1;; attempt++) {
    if (!options.exclusive) {
      try {
        return { fd: openFd(0), created: false };
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound) || attempt > CREATE_ATTEMPTS) throw error;
      }
    }
    const fd = options.unnamed?.open();
    if (fd === undefined) return createNamed(openFd, options);
    try {
      posix.setFdMode(fd, 0o600, name);
      options.setUp?.(fd);
      options.beforeLink?.(fd);
    } catch (error) {
      posix.closeFd(fd); // never named: closing it frees it
      throw error;
    }
    try {
      options.unnamed?.link(fd);
    } catch (error) {
      posix.closeFd(fd);
      if (!(error instanceof Deno.errors.AlreadyExists) || options.exclusive) throw error;
      continue; // made by another meanwhile: open theirs
    }
    return { fd: reopenByName(fd, openFd, name), created: true };
  }
}

/**
 * The file just named from the unnamed `fd`, opened again by its name (and `fd` closed), when
 * the path still holds it; else `fd` itself. Writes through the fd O_TMPFILE gave reach the
 * inotify watchers of its directory under the kernel's name for the unnamed file (`#INODE`),
 * never under its own: a program watching for its name would miss every change.
 */
function reopenByName(fd: number, openFd: (flags: number) => number, name: string): number {
  let named: number;
  try {
    named = openFd(0);
  } catch {
    return fd; // removed or replaced at once: as if it happened a moment later
  }
  let same = false;
  try {
    same = posix.statFd(named, name).identity === posix.statFd(fd, name).identity;
  } finally {
    posix.closeFd(same ? fd : named);
  }
  return same ? named : fd;
}

/** {@link openOrCreate} where no unnamed file can be made: O_CREAT | O_EXCL at the path. */
function createNamed(
  openFd: (flags: number) => number,
  options: OpenOrCreate,
): { fd: number; created: boolean } {
  let fd: number;
  try {
    fd = openFd(C.O_CREAT | C.O_EXCL);
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists) || options.exclusive) throw error;
    return { fd: openFd(0), created: false };
  }
  try {
    posix.setFdMode(fd, 0o600, options.name ?? `fd ${fd}`);
    options.setUp?.(fd);
    options.beforeLink?.(fd);
  } catch (error) {
    try {
      options.remove?.(fd);
    } catch {
      // the error that matters is the one thrown below
    }
    posix.closeFd(fd);
    throw error;
  }
  return { fd, created: true };
}
