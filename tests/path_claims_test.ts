/**
 * The launcher's path claims in one process, against real record files locked with flock(2) by
 * another process (util-linux's `flock`): a record another launcher's sweep holds for an instant
 * is waited out, one a live launcher holds is refused by pid.
 *
 * @module
 */

import { assertEquals, assertThrows } from "@std/assert";
import { claimPaths, claimRecordFile, claimsDirectory } from "../app/path_claims.ts";
import { flockHolder, statPath } from "../ffi/posix.ts";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import type { ChildProcess } from "./helpers/child_process.ts";
import { spawnProgram } from "./helpers/spawn.ts";
import { withTempDir } from "./helpers/temp.ts";

/** Runs `fn` with XDG_RUNTIME_DIR set to a private directory of its own, then puts it back. */
async function withRuntimeDir(fn: (dir: string) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    Deno.chmodSync(dir, 0o700);
    const before = Deno.env.get("XDG_RUNTIME_DIR");
    Deno.env.set("XDG_RUNTIME_DIR", dir);
    try {
      await fn(dir);
    } finally {
      if (before === undefined) Deno.env.delete("XDG_RUNTIME_DIR");
      else Deno.env.set("XDG_RUNTIME_DIR", before);
    }
  });
}

/** Locks the state file's claim record from another process for `seconds`. */
function holdRecord(path: string, seconds: number): ChildProcess {
  const record = claimRecordFile(claimsDirectory(), "state file", path);
  Deno.writeTextFileSync(record, "", { mode: 0o600 });
  // No fork: the pid that holds the lock is the one the test stops.
  return spawnProgram("flock", [
    "--exclusive",
    "--no-fork",
    record,
    "sh",
    "-c",
    `echo locked; exec sleep ${seconds}`,
  ]);
}

testWith(
  [...NEEDS.system, requires("flock")],
  "a claim waits out a record that another launcher's sweep holds for an instant",
  async () => {
    await withRuntimeDir(async (dir) => {
      const path = `${dir}/state.dat`;
      await using sweeper = holdRecord(path, 0.2);
      assertEquals(await sweeper.nextLine(), "locked");
      const record = claimRecordFile(claimsDirectory(), "state file", path);
      // Still held as the claim starts, so the claim must wait it out (it lasts 200 ms).
      assertEquals(flockHolder(statPath(record)?.lockIdentity ?? ""), sweeper.pid);
      const claims = claimPaths([{ kind: "state file", path }]);
      assertEquals(claims.map((held) => held.path), [path]);
      for (const held of claims) held.release();
      assertEquals((await sweeper.status()).code, 0);
    });
  },
);

testWith(
  [...NEEDS.system, requires("flock")],
  "a claim on a record a live launcher holds is refused with Busy naming its pid",
  async () => {
    await withRuntimeDir(async (dir) => {
      const path = `${dir}/state.dat`;
      await using holder = holdRecord(path, 30);
      assertEquals(await holder.nextLine(), "locked");
      assertThrows(
        () => claimPaths([{ kind: "state file", path }]),
        Deno.errors.Busy,
        `another launcher (pid ${holder.pid}) is using the state file "${path}"`,
      );
    });
  },
);
