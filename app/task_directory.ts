/**
 * Where the user ran `deno task`: a task runs its command in the project's directory (where
 * deno.json is), and says in `INIT_CWD` where the user was, which relative paths on its command
 * line are meant from.
 *
 * @module
 */

import { readFileText, readLink } from "../ffi/posix.ts";

/**
 * Where the user ran `deno task` (its `INIT_CWD`), when this process's parent is that task
 * runner; otherwise undefined. Every process under a task inherits `INIT_CWD`: a process that a
 * program run by some task started in a directory of its own must not take it for its own.
 */
export function taskDirectory(): string | undefined {
  // Asked first: reading a variable not granted would prompt in a terminal.
  if (Deno.permissions.querySync({ name: "env", variable: "INIT_CWD" }).state !== "granted") {
    return undefined;
  }
  const base = Deno.env.get("INIT_CWD");
  if (base === undefined || !base.startsWith("/")) return undefined;
  const parent = readFileText(`/proc/${Deno.ppid}/cmdline`)?.split("\0") ?? [];
  return parent.includes("task") ? base : undefined;
}

/**
 * This process's working directory, read through libc (`/proc/self/cwd`), so that no read
 * permission is asked for; undefined where it cannot be read or is gone (removed).
 */
function workingDirectory(): string | undefined {
  try {
    const cwd = readLink("/proc/self/cwd");
    return cwd.startsWith("/") && !cwd.endsWith(" (deleted)") ? cwd : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `flags` with the relative paths among `names` made absolute: taken from where the user ran
 * `deno task` (see {@link taskDirectory}), else (run with `deno run`, or where this process may
 * not read `INIT_CWD`) from this process's working directory, once, now. So the paths still name
 * the same files if that directory is removed or renamed later, and the launcher's children,
 * started in `/`, get paths that mean what the user meant.
 */
export function fromTaskDirectory<T extends object>(flags: T, names: readonly (keyof T)[]): T {
  const task = taskDirectory();
  const base = task ?? workingDirectory();
  if (base === undefined) return flags;
  const resolved: T = { ...flags };
  for (const name of names) {
    const path = resolved[name];
    if (typeof path === "string" && path !== "" && !path.startsWith("/")) {
      resolved[name] =
        (task !== undefined ? `${task.replace(/\/+$/, "")}/${path}` : under(base, path)) as T[
          keyof T
        ];
    }
  }
  return resolved;
}

/**
 * `path` under `base`, a directory's path with no symlink in it (the kernel's own, from
 * `/proc/self/cwd`): its leading `.` and `..` are taken off against `base` here, so that the
 * result still names the same file once `base` itself is gone. What follows a name is left to
 * the kernel (`link/..` is where the link leads, then up).
 */
function under(base: string, path: string): string {
  const parts = base.split("/").filter((part) => part !== "");
  const rest = path.split("/");
  while (rest.length > 1 && (rest[0] === "." || rest[0] === ".." || rest[0] === "")) {
    const part = rest.shift();
    if (part === "..") parts.pop();
  }
  return `/${[...parts, ...rest].join("/")}`;
}
