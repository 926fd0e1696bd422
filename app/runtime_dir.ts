/**
 * The private per-user directory for the FIFO and other runtime files: `$XDG_RUNTIME_DIR/mmap-ipc`
 * when the session has one, else `/tmp/mmap-ipc-UID`, created 0700 and checked to be ours.
 *
 * @module
 */

import { effectiveUid, makeDirectory, statPath } from "../ffi/posix.ts";

function envVar(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env: fall back
  }
}

/** Creates (0700) or checks a directory only this user can use; throws if it is not. */
export function ensurePrivateDirectory(path: string): string {
  makeDirectory(path, 0o700);
  const stat = statPath(path);
  const uid = effectiveUid();
  if (stat?.type !== "directory") {
    throw new Deno.errors.AlreadyExists(
      `Cannot use ${JSON.stringify(path)} as a private directory: it is a ${stat?.type}`,
    );
  }
  if (stat.uid !== uid || (stat.permissions & 0o077) !== 0) {
    throw new Deno.errors.PermissionDenied(
      `Cannot use ${JSON.stringify(path)} as a private directory: it belongs to uid ${stat.uid} ` +
        `with mode ${stat.permissions.toString(8)}; it must be ours (uid ${uid}) and 0700`,
    );
  }
  return path;
}

/** The default runtime directory, created if needed. */
export function runtimeDirectory(): string {
  const xdg = envVar("XDG_RUNTIME_DIR");
  if (xdg !== undefined && xdg.startsWith("/")) {
    const stat = statPath(xdg, { follow: true });
    if (
      stat?.type === "directory" && stat.uid === effectiveUid() && (stat.permissions & 0o077) === 0
    ) {
      return ensurePrivateDirectory(`${xdg}/mmap-ipc`);
    }
  }
  return ensurePrivateDirectory(`/tmp/mmap-ipc-${effectiveUid()}`);
}

/** Where the button's FIFO lives unless `--fifo` says otherwise. */
export function defaultFifoPath(): string {
  return `${runtimeDirectory()}/button.fifo`;
}
