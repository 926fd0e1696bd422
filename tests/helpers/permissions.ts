/**
 * What a test needs beyond `--allow-ffi`, in one place: the permission sets the tests use, and
 * {@link testWith}, which ignores a test (saying why in its name) when its needs are not met, so
 * that `deno test --allow-ffi` passes and `deno task test` runs everything.
 *
 * @module
 */

import { effectiveUid } from "../../ffi/posix.ts";

/** The permission sets tests need, by what they do. */
export const NEEDS = {
  /** Temporary files and directories. */
  files: ["read", "write"],
  /** Child processes (Deno reads the scripts it starts). */
  children: ["run", "read"],
  /** Child processes and temporary files. */
  childrenAndFiles: ["run", "read", "write"],
  /** The button/LED system: child processes, files, and the environment the launcher reads. */
  system: ["run", "read", "write", "env"],
} as const satisfies Record<string, readonly Deno.PermissionName[]>;

/** A program a test runs; see {@link requires}. */
export interface Program {
  /** The program's name, looked up on PATH. */
  program: string;
  /** Arguments the program must run with successfully, for the features a test uses. */
  probe?: readonly string[];
}

/**
 * For {@link testWith}: the test also needs `program` on PATH (such as gcc), and, given `probe`,
 * one that runs `program ...probe` successfully (busybox's `setpriv` has no `--bounding-set`).
 */
export function requires(program: string, options: { probe?: readonly string[] } = {}): Program {
  return { program, probe: options.probe };
}

/** Whether `program ...args` runs and exits 0 (with its output thrown away). */
function runsWith(program: string, args: readonly string[]): boolean {
  try {
    return new Deno.Command(program, { args: [...args], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Whether `program` is an executable file in a directory on PATH. */
export function hasProgram(program: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((dir) => {
    try {
      const stat = Deno.statSync(`${dir || "."}/${program}`);
      return stat.isFile && ((stat.mode ?? 0) & 0o111) !== 0;
    } catch {
      return false;
    }
  });
}

/** What {@link testWith} can be told a test needs. */
export type Need = Deno.PermissionName | Deno.PermissionDescriptor | Program;

/**
 * Registers a test that is ignored, with the reason in its name, unless `needs` are met: the
 * permissions granted (a name, or a descriptor such as `{ name: "net", host: "127.0.0.1" }`),
 * and every {@link requires} program on PATH (looking needs `--allow-env` and `--allow-read`).
 */
export function testWith(
  needs: readonly Need[],
  name: string,
  fn: (t: Deno.TestContext) => void | Promise<void>,
): void {
  const programs = needs.filter((need): need is Program =>
    typeof need === "object" && "program" in need
  );
  const permissions = needs.filter((
    need,
  ): need is Deno.PermissionName | Deno.PermissionDescriptor =>
    typeof need === "string" || "name" in need
  ).map((need) => typeof need === "string" ? { name: need } as Deno.PermissionDescriptor : need);
  if (programs.length > 0) permissions.push({ name: "env" }, { name: "read" });
  if (programs.some((p) => p.probe)) permissions.push({ name: "run" });
  const missing = [
    ...new Set(
      permissions.filter((descriptor) => Deno.permissions.querySync(descriptor).state !== "granted")
        .map((descriptor) => `--allow-${descriptor.name}`),
    ),
  ];
  if (missing.length === 0) {
    for (const { program, probe } of programs) {
      if (!hasProgram(program)) missing.push(`${program} on PATH`);
      else if (probe && !runsWith(program, probe)) {
        missing.push(`a ${program} that runs "${[program, ...probe].join(" ")}"`);
      }
    }
  }
  Deno.test({
    name: missing.length === 0 ? name : `${name} [ignored: needs ${missing.join(" ")}]`,
    ignore: missing.length > 0,
    fn,
  });
}

/** Whether this process runs as root (can chown files to another user). */
export function isRoot(): boolean {
  return effectiveUid() === 0;
}

/**
 * For a test that only root can run: when this process is not root, records an ignored step
 * that says what root is `needed` for and returns true (the test then returns at once).
 */
export async function skippedWithoutRoot(t: Deno.TestContext, needed: string): Promise<boolean> {
  if (isRoot()) return false;
  await t.step({ name: `needs root ${needed} (skipped)`, ignore: true, fn: () => {} });
  return true;
}
