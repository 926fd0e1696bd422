/**
 * The private per-user directory for the FIFO and other runtime files: `$XDG_RUNTIME_DIR/mmap-ipc`
 * when the session has one, else `/tmp/mmap-ipc-UID`, created 0700 and checked to be ours.
 *
 * @module
 */

import { effectiveUid, statPath } from "../ffi/posix.ts";
import { ensurePrivateDirectory } from "../lib/owned_path.ts";

function envVar(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env: fall back
  }
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
