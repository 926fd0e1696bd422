/**
 * A launcher's claims on the paths it will use (the state file, the shm name, the FIFO, and the
 * MQTT topic prefix, which is a path on the broker), taken
 * before anything is created there: a record file per path in each claims directory (see
 * `runtime_dir.ts`: the shared one, and the session's when there is one),
 * held with flock(2) for as long as the launcher runs. A second launcher on any of the same
 * paths is refused by pid before it touches anything, and a launcher that died leaves its
 * record behind, which says what it had created, so the next one can recognise its leftovers.
 *
 * A file or FIFO is claimed by what it is, not by how its path is spelled: the record is named
 * after its directory's device and inode and its own name there, so `dir/data.dat`,
 * `dir//data.dat`, a relative path and a path through a symlinked directory all meet at one
 * record, and a shm name meets its file in `/dev/shm`. (Shm names are normalised before they
 * get here; a topic prefix is a plain string.) Once the file exists, the launcher claims it
 * too, by its own device and inode ({@link PathClaim.claimFile}), which two names of one file
 * (hard links) share.
 *
 * @module
 */

import * as C from "../ffi/constants.ts";
import {
  abstractNameHolder,
  dropConnections,
  holdAbstractName,
  isRole,
  type NameHolder,
} from "../ffi/abstract_socket.ts";
import { FdWaiter } from "../ffi/fd_waiter.ts";
import * as posix from "../ffi/posix.ts";
import { failure } from "../lib/errors.ts";
import { abstractSocketHolders } from "../lib/holders.ts";
import { ensurePrivateDirectory, parentOf } from "../lib/owned_path.ts";
import { claimsDirectories, claimsDirectory, type RuntimeRoots } from "./runtime_dir.ts";
import { fnv1a } from "./fnv1a.ts";

/** What a path is, for messages. */
export type PathKind = "state file" | "shared memory" | "FIFO" | "MQTT topic prefix";

/** What a launcher that died left recorded for a path. */
export interface Leftover {
  /** The dead launcher's pid. */
  pid: number;
  /** The inode it had created there, if any. */
  identity?: string;
}

interface Record {
  pid: number;
  /** What holds the claim ({@link ClaimOptions.role}); absent in records of older versions. */
  role?: string;
  kind: PathKind;
  /** The path as the launcher was given it, for messages. */
  path: string;
  /** The path from `/` (a relative one joined to the launcher's directory), for the sweep. */
  absolute?: string;
  /** What the record is named after: see {@link claimKey}. */
  key?: string;
  identity?: string;
}

/** A short file name, stable across machines and versions, for any claim key. */
function recordName(key: string): string {
  return fnv1a(key, 64);
}

const encoder = new TextEncoder();

/** One held claim; see the module description. */
export class PathClaim {
  readonly kind: PathKind;
  readonly path: string;
  /** What holds it: see {@link ClaimOptions.role}. */
  readonly #role: string;
  readonly #leftover: Leftover | undefined;
  /**
   * The record of the launcher that died, as it was: put back at release if this claim never
   * recorded a file of its own (refused, or failed, before it adopted the leftover), so that the
   * next launcher still takes the leftover over instead of keeping it as the user's.
   */
  readonly #leftoverRecord: string | undefined;
  #key: string;
  #file: string;
  #fd: number;
  /**
   * A shared lock on the claims directory while the claim is held: systemd-tmpfiles skips a
   * locked directory, so it never ages out a running launcher's records in `/tmp`.
   */
  #directoryFd: number;
  /** The claim on the file itself, once it exists: see {@link PathClaim.claimFile}. */
  #inode: PathClaim | undefined;
  /** The same claim in the other claims directories. */
  readonly #mirrors: PathClaim[] = [];
  /** What {@link PathClaim.record} last wrote as the identity. */
  #identity: string | undefined;
  /** The claim across every user of the machine (an MQTT topic prefix's): its socket, or -1. */
  #machineFd = -1;
  /** Waits for connections to the machine-wide name, which asked who holds it, to drop them. */
  #machineWaiter: FdWaiter | undefined;
  /** The machine-wide name held, for {@link heldHere}. */
  #machineName: string | undefined;

  /** @ignore Not for direct use: call {@link claimPaths}. */
  constructor(
    kind: PathKind,
    path: string,
    where: { key: string; file: string; role: string },
    fd: number,
    leftover?: Leftover,
    leftoverRecord?: string,
  ) {
    this.kind = kind;
    this.path = path;
    this.#role = where.role;
    this.#key = where.key;
    this.#file = where.file;
    this.#fd = fd;
    this.#leftover = leftover;
    this.#leftoverRecord = leftover === undefined ? undefined : leftoverRecord;
    this.#directoryFd = lockDirectory(parentOf(where.file));
  }

  /** What a launcher that died had recorded for this path, if one did (in any directory). */
  get leftover(): Leftover | undefined {
    return this.#leftover ?? this.#mirrors.find((mirror) => mirror.leftover)?.leftover;
  }

  /** @ignore Not for direct use: {@link claimPaths} adds the same claim in another directory. */
  alsoHeldAs(mirror: PathClaim): void {
    this.#mirrors.push(mirror);
  }

  /** @ignore Not for direct use: {@link claimPaths} adds the claim across the machine. */
  alsoHeldOnMachine(fd: number, name: string): void {
    this.#machineFd = fd;
    heldHere.set(name, this.#role);
    this.#machineName = name;
    const waiter = this.#machineWaiter = new FdWaiter();
    const role = this.#role;
    void (async () => {
      // Each connection only asked who holds the name: told, and dropped, so the queue never
      // fills.
      while ((await waiter.wait(fd)) === "readable") dropConnections(fd, role);
    })();
  }

  /** Records that this launcher owns the inode with `identity` at the path (or nothing). */
  record(identity: string | undefined): void {
    this.#identity = identity;
    this.#writeRecord();
    for (const mirror of this.#mirrors) mirror.record(identity);
  }

  /** Writes this claim's own record (not its mirrors'). */
  #writeRecord(): void {
    const record: Record = {
      pid: Deno.pid,
      role: this.#role,
      kind: this.kind,
      path: this.path,
      absolute: absolutePath(this.kind, this.path),
      key: this.#key,
      // Until this launcher records its own: the dead one's leftover, so that one killed now
      // leaves it to the next launcher all the same.
      identity: this.#identity ?? this.#leftover?.identity,
    };
    const bytes = encoder.encode(`${JSON.stringify(record)}\n`);
    posix.truncateFd(this.#fd, 0, this.#file);
    posix.writeAt(this.#fd, bytes, 0, this.#file);
  }

  /**
   * Also claims the file itself, the inode with `identity` now at the path, keyed on its device
   * and inode alone, so a launcher on another name of it (a hard link, or the path it was moved
   * to) is refused too. A path is claimed before anything exists there, its file only once it
   * does (one it makes, right after making it); so every launcher claims the file before it
   * takes it over, writes a state to it or starts a child on it, and the one that claims it
   * second is refused. Throws `Busy` naming the launcher that holds it, having claimed nothing.
   */
  claimFile(identity: string): void {
    if (this.#fd < 0) {
      throw new Deno.errors.BadResource(`The claim on ${JSON.stringify(this.path)} is released`);
    }
    this.#inode?.release();
    this.#inode = undefined;
    const key = `inode\0${identity}`;
    const inode = claim(
      `${parentOf(this.#file)}/${recordName(key)}`,
      { key, kind: this.kind, path: this.path, role: this.#role },
    );
    // With the identity, a sweep keeps the record while the file is there to be adopted.
    inode.record(identity);
    const done: PathClaim[] = [];
    try {
      for (const mirror of this.#mirrors) {
        mirror.claimFile(identity);
        done.push(mirror);
      }
    } catch (error) {
      inode.release();
      for (const mirror of done) {
        mirror.#inode?.release();
        mirror.#inode = undefined;
      }
      throw error;
    }
    this.#inode = inode;
  }

  /**
   * The record files this claim holds now (its own, its file's, and the same in the other
   * claims directories), each with the identity of the file held: for watching them.
   */
  records(): { file: string; identity: string }[] {
    if (this.#fd < 0) return [];
    return [
      { file: this.#file, identity: posix.statFd(this.#fd, this.#file).identity },
      ...(this.#inode?.records() ?? []),
      ...this.#mirrors.flatMap((mirror) => mirror.records()),
    ];
  }

  /**
   * Puts back records someone removed (`rm -rf` of the runtime directory, or of one record):
   * makes the claims directory again (0700; it is this program's own) and locks and writes a new
   * record in place of each one gone. Returns how many were put back. Throws `Busy` naming the
   * launcher that claimed the path while its record was gone.
   */
  restore(): number {
    let restored = 0;
    for (const other of [this.#inode, ...this.#mirrors]) restored += other?.restore() ?? 0;
    if (this.#fd < 0) return restored;
    const held = posix.statFd(this.#fd, this.#file).identity;
    if (posix.statPath(this.#file)?.identity === held) return restored;
    closeHeld(this.#holdRecord(this.#key));
    this.record(this.#identity);
    return restored + 1;
  }

  /**
   * Claims the path again under what it is keyed on now, if that changed: its directory was
   * removed and made again (another inode), and a launcher started on the path now would look
   * for another record, find none, and take it. The old record goes. Throws `Busy` naming the
   * launcher that claimed the path under its new key first; this claim then keeps the old one.
   */
  rekey(): void {
    if (this.#fd < 0) {
      throw new Deno.errors.BadResource(`The claim on ${JSON.stringify(this.path)} is released`);
    }
    const key = claimKey(this.kind, this.path);
    // This claim first: if another launcher holds the new key, the mirrors stay as they are too.
    if (key !== this.#key) this.#moveTo(key);
    for (const mirror of this.#mirrors) mirror.rekey();
  }

  /** Takes the record for `key` in this claims directory, and lets go of the old one. */
  #moveTo(key: string): void {
    const old = this.#holdRecord(key);
    try {
      // Removed while still locked, as release() does.
      if (posix.statPath(old.file)?.identity === posix.statFd(old.fd, old.file).identity) {
        posix.unlinkPath(old.file, "remove claim");
      }
    } finally {
      closeHeld(old);
    }
    this.#writeRecord();
  }

  /**
   * Locks the record for `key` in this claim's claims directory (made again 0700 if `rm -rf`
   * took it) and holds it from now on. Returns what was held before, for the caller to let go.
   */
  #holdRecord(key: string): HeldRecord {
    const directory = parentOf(this.#file);
    ensurePrivateDirectory(parentOf(directory));
    ensurePrivateDirectory(directory);
    const file = `${directory}/${recordName(key)}`;
    const fresh = claim(
      file,
      { key, kind: this.kind, path: this.path, role: this.#role },
      "keep the claims",
    );
    const old = { fd: this.#fd, directoryFd: this.#directoryFd, file: this.#file };
    this.#fd = fresh.#fd;
    this.#directoryFd = fresh.#directoryFd;
    this.#key = key;
    this.#file = file;
    return old;
  }

  /** Gives the claim up (the file's too) and removes its records; safe to call twice. */
  release(): void {
    // First: a mirror whose record cannot be removed (its directory made read-only) throws, and
    // the name would stay held by a process that has let go of the prefix. The waiter's poll
    // call holds the socket until it returns, which the cancel brings about at once: the name is
    // free a moment after this, not at this very instant.
    this.#machineWaiter?.cancel();
    this.#machineWaiter = undefined;
    if (this.#machineFd >= 0) posix.closeFd(this.#machineFd);
    this.#machineFd = -1;
    if (this.#machineName !== undefined) heldHere.delete(this.#machineName);
    this.#machineName = undefined;
    // Each part let go of whatever another throws (a record that cannot be removed): one left
    // locked would refuse every later launcher on the path while this process lives. The first
    // failure is thrown once all are done.
    let failed: unknown;
    const attempt = (step: () => void): void => {
      try {
        step();
      } catch (error) {
        failed ??= error;
      }
    };
    for (const mirror of this.#mirrors) attempt(() => mirror.release());
    attempt(() => this.#inode?.release());
    this.#inode = undefined;
    if (this.#fd >= 0) {
      const fd = this.#fd;
      // Removed while still locked, so no other launcher can lock this record in between.
      attempt(() => {
        if (posix.statPath(this.#file)?.identity !== posix.statFd(fd, this.#file).identity) return;
        const previous = this.#leftoverRecord;
        if (previous !== undefined && this.#identity === undefined) {
          posix.truncateFd(fd, 0, this.#file);
          posix.writeAt(fd, encoder.encode(previous), 0, this.#file);
        } else {
          posix.unlinkPath(this.#file, "remove claim");
        }
      });
      this.#fd = -1;
      posix.closeFd(fd);
      if (this.#directoryFd >= 0) posix.closeFd(this.#directoryFd);
      this.#directoryFd = -1;
    }
    if (failed !== undefined) throw failed;
  }
}

/** A record a claim held: its locked fd, the claims directory's lock (or -1), its file. */
interface HeldRecord {
  fd: number;
  directoryFd: number;
  file: string;
}

/** Lets go of a record held before (its fds; the file is the caller's to remove or not). */
function closeHeld(held: HeldRecord): void {
  posix.closeFd(held.fd);
  if (held.directoryFd >= 0) posix.closeFd(held.directoryFd);
}

/** A shared lock on `directory`, best effort (-1 when it cannot be had at once). */
function lockDirectory(directory: string): number {
  let fd: number;
  try {
    fd = posix.openPath(
      directory,
      C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW | C.O_CLOEXEC,
      0,
      "open claims directory",
    );
  } catch {
    return -1;
  }
  try {
    if (posix.tryLockShared(fd, directory)) return fd;
  } catch {
    // Only a cleaner's protection is lost.
  }
  posix.closeFd(fd);
  return -1;
}

/**
 * How long a claim keeps trying a record that is locked. Another launcher's sweep holds a record
 * for microseconds while it judges it; a live launcher holds its records for its whole life.
 */
const SWEEP_GRACE_MS = 250;
const RETRY_MS = 2;
const pause = new Int32Array(new SharedArrayBuffer(4));

/** Tries to lock `fd` until it succeeds or {@link SWEEP_GRACE_MS} pass. */
function lockWithinGrace(fd: number, file: string): boolean {
  const deadline = performance.now() + SWEEP_GRACE_MS;
  for (;;) {
    if (posix.tryLockExclusive(fd, file)) return true;
    if (performance.now() >= deadline) return false;
    Atomics.wait(pause, 0, 0, RETRY_MS);
  }
}

/**
 * What a claim on `path` of `kind` is keyed on, the same however the path is spelled: for a
 * file or FIFO, its directory's identity (device, inode; followed through symlinks) and its own
 * name in it; the final name is not followed, as the launcher never opens one through a
 * symlink. A shm name is the file `/dev/shm/NAME` (where glibc's shm_open(3) puts it), keyed the
 * same way, so `--shm NAME` and `--state /dev/shm/NAME` meet; and the kind is left out, as a
 * file is one file whatever a launcher means to use it as. Throws, naming `path`, when the
 * directory is missing or not a directory: nothing could be made there anyway.
 */
function claimKey(kind: PathKind, path: string): string {
  if (kind === "MQTT topic prefix") return `${kind}\0${path}`;
  // Shm names are normalised before they get here: "/NAME".
  const file = kind === "shared memory" ? `/dev/shm${path}` : path;
  const trimmed = file.replace(/\/+$/, "");
  const name = trimmed.slice(trimmed.lastIndexOf("/") + 1);
  // "", "." or "..": a directory, which the launcher refuses once it opens it.
  if (name === "" || name === "." || name === "..") return `${kind}\0${path}`;
  const directory = parentOf(file);
  const action = `claim the ${kind}`;
  const stat = posix.statPath(directory, { follow: true });
  if (stat === undefined) {
    throw failure(Deno.errors.NotFound, action, path, `its directory ${directory} does not exist`);
  }
  if (stat.type !== "directory") {
    throw failure(Deno.errors.NotADirectory, action, path, `${directory} is not a directory`);
  }
  return `file\0${stat.identity}\0${name}`;
}

/** `path` with no `//`, `/./` or trailing `/`: two spellings of one path look alike. */
function spelledAlike(path: string): string {
  return path.replace(/\/+/g, "/").replace(/\/(\.\/)+/g, "/").replace(/(.)\/$/, "$1");
}

/**
 * `path` from `/`: a relative file or FIFO path joined to this process's working directory
 * (read from `/proc/self/cwd`, since the launcher may not read the file system otherwise).
 */
function absolutePath(kind: PathKind, path: string): string {
  if (kind === "shared memory" || kind === "MQTT topic prefix" || path.startsWith("/")) return path;
  return `${posix.readLink("/proc/self/cwd")}/${path}`;
}

/** The record file for `path` of `kind` in the claims `directory`; see {@link claimKey}. */
export function claimRecordFile(directory: string, kind: PathKind, path: string): string {
  return `${directory}/${recordName(claimKey(kind, path))}`;
}

/**
 * What another holder's record says: its role, and the path it names when it spelled it
 * differently from `path`.
 */
function heldAs(fd: number, path: string): { role?: string; spelled: string } {
  try {
    const record = JSON.parse(posix.readFileText(`/proc/self/fd/${fd}`) ?? "") as Record;
    const other = record.path;
    return {
      role: typeof record.role === "string" ? record.role : undefined,
      spelled: typeof other === "string" && other !== path ? ` as ${JSON.stringify(other)}` : "",
    };
  } catch {
    return { spelled: "" }; // being written, or empty: the pid says enough
  }
}

/** What one claim is on, and for whom: see {@link claim}. */
interface Claiming {
  /** What the record is named after: see {@link claimKey}. */
  key: string;
  kind: PathKind;
  path: string;
  /** See {@link ClaimOptions.role}. */
  role: string;
}

/**
 * Locks the record `file` for one path ({@link claimKey}); throws `Busy` naming the launcher
 * (or whatever else claimed it: see {@link holderLabel}) holding it.
 */
function claim(file: string, claiming: Claiming, action = "launch"): PathClaim {
  const { key, kind, path, role } = claiming;
  for (;;) {
    const fd = posix.openPath(
      file,
      C.O_RDWR | C.O_CREAT | C.O_NOFOLLOW | C.O_CLOEXEC,
      0o600,
      "open claim",
    );
    const stat = posix.statFd(fd, file);
    // Ours, in our private directory, made with less than 0600 (umask 0277): the next launcher
    // could not open it for writing, and was refused its claim for good.
    if (stat.uid === posix.effectiveUid() && stat.permissions !== 0o600) {
      posix.setFdMode(fd, 0o600, file, "open claim");
    }
    if (!lockWithinGrace(fd, file)) {
      const held = heldAs(fd, path);
      posix.closeFd(fd);
      const holder = posix.flockHolder(stat.lockIdentity);
      throw new Deno.errors.Busy(
        `Cannot ${action}: ${holderLabel(held.role)}${
          holder === undefined ? "" : ` (pid ${holder})`
        } is using the ${kind} ${JSON.stringify(path)}${held.spelled}${busyHint(kind)}`,
      );
    }
    // A launcher that was letting go may have removed the record just before we locked it.
    if (posix.statPath(file)?.identity !== stat.identity) {
      posix.closeFd(fd);
      continue;
    }
    const text = posix.readFileText(`/proc/self/fd/${fd}`) ?? "";
    let leftover: Leftover | undefined;
    try {
      const previous = JSON.parse(text) as Record;
      // We hold the lock, so whoever wrote it is gone: one that stops cleanly removes it.
      if (previous.key === key && previous.pid !== Deno.pid) {
        leftover = { pid: previous.pid, identity: previous.identity };
      }
    } catch {
      // Empty or unreadable: no launcher died holding this path.
    }
    const held = new PathClaim(kind, path, { key, file, role }, fd, leftover, text);
    try {
      held.record(undefined);
    } catch (error) {
      // No space for it, say: the record goes, not left empty for good (the sweep skips those).
      try {
        held.release();
      } catch {
        // the error that matters is the one thrown below
      }
      throw error;
    }
    return held;
  }
}

/**
 * Removes the records that launchers which died left for paths with nothing of theirs left to
 * adopt (the path is gone, or holds another inode than the one recorded; an MQTT prefix is never
 * adopted). Without this, every SIGKILLed launcher would leave a record behind for good. A
 * record is only removed while locked, as {@link PathClaim.release} does, so a live launcher's
 * records and one being claimed are never touched.
 */
function sweepStaleClaims(directory: string): void {
  for (const name of posix.listDirectory(directory)) {
    if (!/^[0-9a-f]{16}$/.test(name)) continue;
    const file = `${directory}/${name}`;
    let fd: number;
    try {
      fd = posix.openPath(file, C.O_RDWR | C.O_NOFOLLOW | C.O_CLOEXEC, 0, "open claim");
    } catch {
      continue; // removed meanwhile by its launcher
    }
    try {
      if (!posix.tryLockExclusive(fd, file)) continue; // a live launcher holds it
      const stat = posix.statFd(fd, file);
      if (posix.statPath(file)?.identity !== stat.identity) continue; // replaced meanwhile
      let record: Record;
      try {
        record = JSON.parse(posix.readFileText(`/proc/self/fd/${fd}`) ?? "") as Record;
      } catch {
        continue; // empty: a claim being taken right now, or not ours to judge
      }
      // A relative path is judged from the dead launcher's directory, not from this one's.
      const path = record.absolute ?? record.path;
      const there = record.kind === "MQTT topic prefix"
        ? undefined
        : posix.statPath(record.kind === "shared memory" ? `/dev/shm${path}` : path)?.identity;
      if (record.identity !== undefined && there === record.identity) continue; // adoptable
      try {
        posix.unlinkPath(file, "remove stale claim");
      } catch (error) {
        // Its directory keeps it (made immutable, say): a stale record stands in no one's way,
        // as a claim of its path locks it as it finds it and writes it anew.
        if (!(error instanceof Deno.errors.PermissionDenied)) throw error;
      }
    } finally {
      posix.closeFd(fd);
    }
  }
}

/** The shared directory that holds the claim records: see `runtime_dir.ts`. */
export { claimsDirectory };

/** Two of the paths given to {@link claimPaths} name one file: a bad command line. */
export class SameFileError extends TypeError {
  override name = "SameFileError";
}

/** Options for {@link claimPaths}. */
export interface ClaimOptions {
  /** Told why the shared claims directory is not used, when only the session's is. */
  onSharedRefused?: (reason: string) => void;
  /** The directories' roots: for tests. */
  roots?: RuntimeRoots;
  /**
   * What claims the paths, as a refusal of another names it: `launcher` (the default) or
   * `mqtt:forget`, which holds a prefix while it clears it; 1 to 64 printable ASCII characters.
   */
  role?: string;
  /**
   * @internal For tests: called when a machine-wide name was held at a bind but nobody answered
   * the question who holds it (its holder ended in between, say), before the bind is tried again.
   */
  onNameUnanswered?: () => void;
}

/**
 * Claims every path in `paths` (in a fixed order, so two launchers never each hold what the
 * other waits for) in every claims directory usable now (see `runtime_dir.ts`), or none: throws
 * `Busy` naming the launcher that holds one, having released the rest, or `NotFound` /
 * `NotADirectory` for a file or FIFO whose directory is missing, or {@link SameFileError} for
 * two of `paths` that name one file, before claiming any.
 */
export function claimPaths(
  paths: { kind: PathKind; path: string }[],
  options: ClaimOptions = {},
): PathClaim[] {
  // Ordered by record, not by spelling, so two launchers take shared records in one order. A
  // path whose directory is missing is told after the check below: one spelled twice is a
  // usage error whether or not its directory is there.
  let missing: Error | undefined;
  const sorted = paths.map(({ kind, path }) => {
    try {
      return { kind, path, key: claimKey(kind, path) };
    } catch (error) {
      if (
        !(error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory)
      ) throw error;
      missing ??= error;
      return { kind, path, key: `unresolved\0${spelledAlike(absolutePath(kind, path))}` };
    }
  })
    .sort((a, b) => {
      const [x, y] = [recordName(a.key), recordName(b.key)];
      return x < y ? -1 : x > y ? 1 : 0;
    });
  // One path given twice would be refused as held by this very launcher.
  for (const [i, later] of sorted.slice(1).entries()) {
    const { kind, path, key } = sorted[i];
    if (later.key !== key) continue;
    throw new SameFileError(
      `Cannot launch: the ${kind} ${JSON.stringify(path)} and the ${later.kind} ${
        JSON.stringify(later.path)
      } are the same file`,
    );
  }
  if (missing !== undefined) throw missing;
  const role = options.role ?? "launcher";
  if (!isRole(role)) throw new TypeError(`Role ${JSON.stringify(role)} is not a role`);
  const { directories, sharedRefused } = claimsDirectories(options.roots);
  if (sharedRefused !== undefined) options.onSharedRefused?.(sharedRefused);
  const claims: PathClaim[] = [];
  try {
    for (const [index, directory] of directories.entries()) {
      sweepStaleClaims(directory);
      for (const [i, { kind, path, key }] of sorted.entries()) {
        const held = claim(`${directory}/${recordName(key)}`, { key, kind, path, role });
        if (index === 0) claims.push(held);
        else claims[i].alsoHeldAs(held);
      }
    }
    // After the records: a launcher of this same user is named from them, as before.
    for (const held of claims) {
      if (held.kind === "MQTT topic prefix") {
        const name = machineClaimName(held.path);
        held.alsoHeldOnMachine(holdOnMachine(name, held.path, options), name);
      }
    }
  } catch (error) {
    // Every claim made so far let go of; the refusal is what the caller hears.
    for (const held of claims) {
      try {
        held.release();
      } catch {
        // the error that matters is the one thrown below
      }
    }
    throw error;
  }
  return claims;
}

/**
 * The name in the abstract socket namespace that claims the MQTT topic `prefix` across the
 * machine (see {@link holdOnMachine}); `ss -xlp | grep NAME` shows who holds it.
 */
export function machineClaimName(prefix: string): string {
  return `mmap-ipc/claim/${recordName(claimKey("MQTT topic prefix", prefix))}`;
}

/** The roles of the machine-wide names this process holds: it cannot ask itself. */
const heldHere = new Map<string, string>();

/**
 * How many times a machine-wide name is tried when a bind finds it held but nobody answers
 * (its holder ended in between), and how long to let it go between tries.
 */
const MACHINE_ATTEMPTS = 3;
const MACHINE_RETRY_MS = 10;

/**
 * Claims the topic `prefix` across every user of this machine, for what users share: a topic
 * prefix on a broker, which two users' launchers would fight over (each taking the other's
 * session in turn), and whose claim records in each user's own directories the other never
 * sees. Held as the abstract socket `name` (see `ffi/abstract_socket.ts`): a launcher that dies
 * gives it up with its last fd. Returns the socket's fd. Throws `Busy` naming what holds it.
 */
function holdOnMachine(name: string, prefix: string, options: ClaimOptions): number {
  const kind: PathKind = "MQTT topic prefix";
  for (let attempt = 1;; attempt++) {
    try {
      return holdAbstractName(name);
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse)) {
        throw failure(Error, `claim the ${kind}`, prefix, (error as Error).message);
      }
    }
    const holder = abstractNameHolder(name);
    if (holder !== undefined || attempt >= MACHINE_ATTEMPTS) {
      throw new Deno.errors.Busy(
        `Cannot launch: ${machineHolder(name, prefix, holder)}${busyHint(kind)}`,
      );
    }
    // Held at the bind, nobody there at the connect: its holder may have just let it go.
    options.onNameUnanswered?.();
    Atomics.wait(pause, 0, 0, MACHINE_RETRY_MS);
  }
}

/** Who holds the machine-wide `name` claiming `prefix`, and how, for a refusal. */
function machineHolder(name: string, prefix: string, holder: NameHolder | undefined): string {
  const using = `is using the MQTT topic prefix ${JSON.stringify(prefix)}`;
  // Not one of ours, or not saying: the name is what a user can look for (`ss -xlp`).
  const squatting = `holds the name "@${name}" that claims the MQTT topic prefix ${
    JSON.stringify(prefix)
  } on this machine`;
  if (holder === undefined) {
    // Bound but not listening: found by its socket, as `ss -xlp` would.
    const found = abstractSocketHolders(name).map((pid) => describeProcess(pid));
    return `a process that does not answer${
      found.length === 0 ? "" : ` (${found.join("; ")})`
    } ${squatting}`;
  }
  const pid = holder.pid > 0 ? `pid ${holder.pid}, ` : "";
  const role = holder.pid === Deno.pid ? heldHere.get(name) : holder.role;
  if (role === "launcher" || role === "mqtt:forget") {
    return `${holderLabel(role)} on this machine (${pid}${userLabel(holder.uid)}) ${using}`;
  }
  // Says nothing, or something not ours (holderLabel() reads a missing role as an old record's).
  const what = role === undefined ? "a process" : holderLabel(role);
  return `${what} (${describeProcess(holder.pid, holder.uid)}) ${squatting}`;
}

/**
 * `"COMM", pid N, user NAME (uid N)` of a process: its command name from /proc, and its user
 * from there unless `uid` is given (the socket's peer credentials); what is gone, or a pid the
 * kernel could not give (0), is left out.
 */
function describeProcess(pid: number, uid?: number): string {
  const known = pid > 0;
  const comm = known ? posix.readFileText(`/proc/${pid}/comm`)?.trim() : undefined;
  const user = uid ?? (known ? posix.statPath(`/proc/${pid}`)?.uid : undefined);
  return [
    ...(comm === undefined || comm === "" ? [] : [JSON.stringify(comm)]),
    ...(known ? [`pid ${pid}`] : []),
    ...(user === undefined ? [] : [userLabel(user)]),
  ].join(", ");
}

/** How a refusal names what holds a claim, by the role it recorded or said. */
function holderLabel(role: string | undefined): string {
  if (role === "mqtt:forget") return "deno task mqtt:forget";
  // Records of older versions say no role: only launchers claimed paths then.
  if (role === undefined || role === "launcher") return "another launcher";
  return `a process that says it is ${JSON.stringify(role)}`;
}

/** `user NAME (uid N)` from /etc/passwd, or `uid N` when it has no such user. */
function userLabel(uid: number): string {
  for (const line of (posix.readFileText("/etc/passwd") ?? "").split("\n")) {
    const [name, , id] = line.split(":");
    if (id !== undefined && Number(id) === uid && name !== "") return `user ${name} (uid ${uid})`;
  }
  return `uid ${uid}`;
}

/** What a refusal of `kind` adds: two systems under one prefix fight over its topics and session. */
function busyHint(kind: PathKind): string {
  return kind === "MQTT topic prefix" ? "; give this one another --mqtt-prefix" : "";
}
