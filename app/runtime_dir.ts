/**
 * The private per-user directories, created 0700 and checked to be ours: the default FIFO's,
 * `/run/user/UID/mmap-ipc` when the system keeps a runtime directory for this user (logind's:
 * ours and 0700), else `/tmp/mmap-ipc-UID`; and the launchers' claims, always
 * `/tmp/mmap-ipc-UID/claims`. Neither depends on the environment.
 *
 * The claims must be one place for every launcher of the user: in a login session, under
 * systemd without one, from cron. logind's directory exists only while the user has a session,
 * so claims kept there would not meet those of a launcher started outside one.
 *
 * @module
 */

import { effectiveUid, statPath } from "../ffi/posix.ts";
import { ensurePrivateDirectory } from "../lib/owned_path.ts";

/** The default runtime directory, created if needed. */
export function runtimeDirectory(): string {
  const uid = effectiveUid();
  const run = `/run/user/${uid}`;
  // Not followed: logind's directory is never a symlink, and one would point who knows where.
  const stat = statPath(run);
  if (stat?.type === "directory" && stat.uid === uid && (stat.permissions & 0o077) === 0) {
    return ensurePrivateDirectory(`${run}/mmap-ipc`);
  }
  return sharedDirectory(uid);
}

function sharedDirectory(uid: number): string {
  return ensurePrivateDirectory(`/tmp/mmap-ipc-${uid}`);
}

/** Where every launcher of this user keeps its claims, created if needed. */
export function claimsDirectory(): string {
  return ensurePrivateDirectory(`${sharedDirectory(effectiveUid())}/claims`);
}

/** Where the button's FIFO lives unless `--fifo` says otherwise. */
export function defaultFifoPath(): string {
  return `${runtimeDirectory()}/button.fifo`;
}
