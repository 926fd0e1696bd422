/**
 * The private per-user directories, created 0700 and checked to be ours, never taken from the
 * environment: the session's, `/run/user/UID/mmap-ipc`, when the system keeps a runtime
 * directory for this user (logind's: ours and 0700, only while the user has a session); and the
 * shared one, `/tmp/mmap-ipc-UID`, there whether or not a session is.
 *
 * The default FIFO lives in the session's directory if there is one, else in the shared one.
 * Launchers keep their claims in both where both are usable: the shared one is where a launcher
 * in a session and one outside any (cron, a user service without lingering) meet, and the
 * session's is one no other user can take first. Another user who made `/tmp/mmap-ipc-UID`
 * first only costs the launchers outside a session their start.
 *
 * @module
 */

import { effectiveUid, statPath } from "../ffi/posix.ts";
import { ensurePrivateDirectory } from "../lib/owned_path.ts";
import { shellQuote } from "../lib/shell_quote.ts";

/** Where the two directories are made: the real roots unless a test gives its own. */
export interface RuntimeRoots {
  /** Where logind keeps each user's runtime directory. Default `/run/user`. */
  sessions?: string;
  /** Where the shared directory is made. Default `/tmp`. */
  shared?: string;
}

/** Where logind keeps the user's runtime directory (not ours: it is only looked at). */
function sessionRoot(uid: number, roots: RuntimeRoots): string {
  return `${roots.sessions ?? "/run/user"}/${uid}`;
}

function sharedPath(uid: number, roots: RuntimeRoots): string {
  return `${roots.shared ?? "/tmp"}/mmap-ipc-${uid}`;
}

/** The session's directory, created if needed, or undefined when the user has no session. */
function sessionDirectory(uid: number, roots: RuntimeRoots): string | undefined {
  const run = sessionRoot(uid, roots);
  // Not followed: logind's directory is never a symlink, and one would point who knows where.
  const stat = statPath(run);
  if (stat?.type === "directory" && stat.uid === uid && (stat.permissions & 0o077) === 0) {
    return ensurePrivateDirectory(`${run}/mmap-ipc`);
  }
  return undefined;
}

function sharedDirectory(uid: number, roots: RuntimeRoots): string {
  const path = sharedPath(uid, roots);
  try {
    return ensurePrivateDirectory(path);
  } catch (error) {
    // Another user made it first: nothing this user can do about it, so say who can. (A look
    // that fails too leaves the first failure to say what it says.)
    const owner = error instanceof Deno.errors.PermissionDenied ? ownerOf(path) : undefined;
    if (owner !== undefined && owner !== uid) {
      const why = (error as Error).message;
      // Root is the administrator the message would send the user to.
      const remedy = uid === 0
        ? `Another user made it before root's first run: look at what is in it, and remove it ` +
          `(rm -r ${shellQuote(path)}) once nothing there is in use`
        : "Another user made it before this one's first run, and only they or an administrator " +
          "can remove it";
      throw new Deno.errors.PermissionDenied(
        `${why}. ${remedy}; until then, run in a login session (which has /run/user/${uid}, ` +
          "used instead)",
      );
    }
    throw error;
  }
}

/** The owner of `path`, or undefined when nothing is there or it cannot be looked at. */
function ownerOf(path: string): number | undefined {
  try {
    return statPath(path)?.uid;
  } catch {
    return undefined;
  }
}

/** The default runtime directory, created if needed. */
export function runtimeDirectory(): string {
  const uid = effectiveUid();
  return sessionDirectory(uid, {}) ?? sharedDirectory(uid, {});
}

/**
 * Whether `path` is one of this user's runtime directories (made and checked by this program,
 * so it may make them again), by name: nothing is created or looked at.
 */
export function isRuntimeDirectory(path: string, roots: RuntimeRoots = {}): boolean {
  const uid = effectiveUid();
  const clean = path.replace(/\/+$/, "");
  return clean === `${sessionRoot(uid, roots)}/mmap-ipc` || clean === sharedPath(uid, roots);
}

/** Where the button's FIFO lives unless `--fifo` says otherwise. */
export function defaultFifoPath(): string {
  return `${runtimeDirectory()}/button.fifo`;
}

/** The shared claims directory, where every launcher of this user claims; created if needed. */
export function claimsDirectory(roots: RuntimeRoots = {}): string {
  return ensurePrivateDirectory(`${sharedDirectory(effectiveUid(), roots)}/claims`);
}

/** The claims directories a launcher uses now; see the module description. */
export interface ClaimsDirectories {
  /** The session's claims directory first, if any, then the shared one, if usable. */
  directories: string[];
  /** Why the shared one is not used, when only the session's is. */
  sharedRefused?: string;
}

/**
 * Every claims directory usable now, created if needed. Throws why the shared one cannot be
 * used when there is no session's directory either.
 */
export function claimsDirectories(roots: RuntimeRoots = {}): ClaimsDirectories {
  const session = sessionDirectory(effectiveUid(), roots);
  const directories = session === undefined ? [] : [ensurePrivateDirectory(`${session}/claims`)];
  try {
    directories.push(claimsDirectory(roots));
  } catch (error) {
    if (session === undefined) throw error;
    return { directories, sharedRefused: (error as Error).message };
  }
  return { directories };
}
