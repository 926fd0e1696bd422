/**
 * The private per-user directory for the FIFO, the launchers' claims and other runtime files:
 * `/run/user/UID/mmap-ipc` when the system keeps a runtime directory for this user (logind's:
 * ours and 0700), else `/tmp/mmap-ipc-UID`, created 0700 and checked to be ours. It depends on
 * the uid alone, never on the environment, so every launcher of this user finds the same claims
 * whatever `XDG_RUNTIME_DIR` it was started with.
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
  return ensurePrivateDirectory(`/tmp/mmap-ipc-${uid}`);
}

/** Where the button's FIFO lives unless `--fifo` says otherwise. */
export function defaultFifoPath(): string {
  return `${runtimeDirectory()}/button.fifo`;
}
