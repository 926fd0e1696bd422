/**
 * Names and places a test makes and always removes: private temporary directories, POSIX shm
 * names and System V keys that no other test (or other process on the machine) uses.
 *
 * @module
 */

import { removeShm } from "../../mod.ts";

/** Runs `fn` with a fresh private directory that is removed afterwards, whatever happens. */
export async function withTempDir<T>(fn: (dir: string) => T | Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "mmap-ipc-test-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

let counter = 0;

/** A POSIX shm name no other test uses. */
export function uniqueShmName(): string {
  return `/mmap-ipc-test-${Deno.pid}-${++counter}-${crypto.randomUUID().slice(0, 8)}`;
}

/** Runs `fn` with a fresh shm name that is removed afterwards if it was created. */
export async function withShmName<T>(fn: (name: string) => T | Promise<T>): Promise<T> {
  const name = uniqueShmName();
  try {
    return await fn(name);
  } finally {
    removeShm(name);
  }
}

/** A System V key no other test uses (the caller removes the segment). */
export function uniqueSysvKey(): number {
  return 0x4d490000 + ((Deno.pid * 64 + ++counter) & 0xffff);
}

/** Runs `rm -rf` on `paths` as another process would, while this event loop keeps running. */
export async function removeTree(...paths: string[]): Promise<void> {
  const { code, stderr } = await new Deno.Command("rm", { args: ["-rf", ...paths] }).output();
  if (code !== 0) {
    throw new Error(`rm -rf ${paths.join(" ")} failed: ${new TextDecoder().decode(stderr)}`);
  }
}

/**
 * Runs `fn` with a file system of `type` ("tmpfs", "ramfs") mounted 0700 at `${dir}/${type}`,
 * with `options` (such as "size=64k"); unmounted afterwards, whatever happens. Needs root.
 */
export async function withMount<T>(
  dir: string,
  type: "tmpfs" | "ramfs",
  fn: (mountPoint: string) => T | Promise<T>,
  options = "",
): Promise<T> {
  const mountPoint = `${dir}/${type}`;
  Deno.mkdirSync(mountPoint, { mode: 0o700 });
  const mount = await new Deno.Command("mount", {
    args: ["-t", type, "-o", `${options}${options === "" ? "" : ","}mode=0700`, type, mountPoint],
  }).output();
  if (!mount.success) {
    throw new Error(`mount -t ${type} failed: ${new TextDecoder().decode(mount.stderr)}`);
  }
  try {
    return await fn(mountPoint);
  } finally {
    // Lazily: a region a failed assertion left open still maps a file there.
    await new Deno.Command("umount", { args: ["-l", mountPoint] }).output();
  }
}
