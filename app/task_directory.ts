/**
 * Where the user ran `deno task`: a task runs its command in the project's directory (where
 * deno.json is), and says in `INIT_CWD` where the user was, which relative paths on its command
 * line are meant from.
 *
 * @module
 */

import { readFileText } from "../ffi/posix.ts";

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
 * `flags` with the relative paths among `names` taken from where the user ran `deno task` (see
 * {@link taskDirectory}). Without a task runner (run with `deno run`), or where this process may
 * not read `INIT_CWD`, paths are taken as given.
 */
export function fromTaskDirectory<T extends object>(flags: T, names: readonly (keyof T)[]): T {
  const base = taskDirectory();
  if (base === undefined) return flags;
  const resolved: T = { ...flags };
  for (const name of names) {
    const path = resolved[name];
    if (typeof path === "string" && path !== "" && !path.startsWith("/")) {
      resolved[name] = `${base.replace(/\/+$/, "")}/${path}` as T[keyof T];
    }
  }
  return resolved;
}
