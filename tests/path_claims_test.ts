/**
 * The launcher's path claims in one process, against real record files locked with flock(2) by
 * another process (util-linux's `flock`): a record another launcher's sweep holds for an instant
 * is waited out, one a live launcher holds is refused by pid, however the path is spelled; and
 * two real launchers on one state file spelled two ways.
 *
 * @module
 */

import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import { claimPaths, claimRecordFile, claimsDirectory } from "../app/path_claims.ts";
import { flockHolder, statPath } from "../ffi/posix.ts";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import type { ChildProcess } from "./helpers/child_process.ts";
import { childrenOf } from "./helpers/proc.ts";
import { spawnProgram } from "./helpers/spawn.ts";
import { identity, running, startedOrEnded, startLauncher, stopAll } from "./helpers/system.ts";
import { withTempDir } from "./helpers/temp.ts";
import { within } from "./helpers/waiting.ts";

/** Runs `fn` with XDG_RUNTIME_DIR set to a private directory of its own, then puts it back. */
async function withRuntimeDir(fn: (dir: string) => void | Promise<void>): Promise<void> {
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

/** Makes `dir/real` and a symlink `dir/link` to it; returns the spellings of `real/name`. */
function spellings(dir: string, name: string): { plain: string; others: string[] } {
  Deno.mkdirSync(`${dir}/real`, { mode: 0o700 });
  Deno.symlinkSync("real", `${dir}/link`);
  return {
    plain: `${dir}/real/${name}`,
    others: [`${dir}/real//${name}`, `${dir}/link/${name}`, `${dir}/real/./${name}`],
  };
}

testWith(
  [...NEEDS.system, requires("flock")],
  "a claim on a path spelled another way (//, ./, a symlinked directory) meets the same record and is refused",
  async () => {
    await withRuntimeDir(async (dir) => {
      const { plain, others } = spellings(dir, "state.dat");
      await using holder = holdRecord(plain, 30);
      assertEquals(await holder.nextLine(), "locked");
      for (const path of [plain, ...others]) {
        assertEquals(
          claimRecordFile(claimsDirectory(), "state file", path),
          claimRecordFile(claimsDirectory(), "state file", plain),
          path,
        );
        assertThrows(
          () => claimPaths([{ kind: "state file", path }]),
          Deno.errors.Busy,
          `another launcher (pid ${holder.pid}) is using the state file "${path}"`,
        );
      }
    });
  },
);

testWith(
  NEEDS.system,
  "a claim on a file in a directory that does not exist is refused before any claim, naming the path",
  async () => {
    await withRuntimeDir((dir) => {
      const path = `${dir}/missing/state.dat`;
      assertThrows(
        () =>
          claimPaths([{ kind: "FIFO", path: `${dir}/button.fifo` }, { kind: "state file", path }]),
        Deno.errors.NotFound,
        `Cannot claim the state file "${path}": its directory ${dir}/missing does not exist`,
      );
      // The FIFO was not left claimed: claiming it again works.
      for (const held of claimPaths([{ kind: "FIFO", path: `${dir}/button.fifo` }])) held.release();
    });
  },
);

testWith(
  NEEDS.system,
  "a second launcher on the state file spelled with // or through a symlinked directory exits 1 naming the first one's pid, leaving nothing",
  async () => {
    await withTempDir(async (dir) => {
      // A runtime directory of the test's own, so no other test's claims meet these.
      const run = `${dir}/run`;
      Deno.mkdirSync(run, { mode: 0o700 });
      const env = { XDG_RUNTIME_DIR: run };
      const { plain, others } = spellings(dir, "state.dat");
      await using first = startLauncher(dir, ["--state", plain, "--fifo", `${dir}/first.fifo`], {
        env,
      });
      const pids = await running(first);
      try {
        for (const [i, state] of others.slice(0, 2).entries()) {
          const fifo = `${dir}/second-${i}.fifo`;
          await using second = startLauncher(dir, ["--state", state, "--fifo", fifo], { env });
          try {
            const outcome = await startedOrEnded(second, /Started (led|button)/);
            assertEquals(
              outcome,
              "ended",
              `a second launcher ran on ${state}:\n${second.transcript}`,
            );
            const status = await within(second.status(), 5_000);
            assert(status !== undefined, second.transcript);
            assertEquals(status.code, 1, second.transcript);
            assertStringIncludes(status.stderr, `another launcher (pid ${first.pid})`);
            assertStringIncludes(status.stderr, `the state file ${JSON.stringify(state)}`);
            assertEquals(identity(fifo), undefined, "the refused launcher left its FIFO");
          } finally {
            await stopAll(second, childrenOf(second.pid));
          }
        }
        assert(identity(plain) !== undefined, "the first launcher's state file is gone");
        first.kill("SIGTERM");
        assertEquals((await within(first.status(), 5_000))?.code, 0, first.transcript);
        assertEquals(identity(plain), undefined, "the state file was left behind");
      } finally {
        await stopAll(first, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "a SIGKILLed launcher's record for a relative path is judged from its own directory: another launcher's sweep keeps it, and the next launcher there adopts the file",
  async () => {
    await withRuntimeDir(async (dir) => {
      const env = { XDG_RUNTIME_DIR: dir };
      const [a, b] = [`${dir}/a`, `${dir}/b`];
      Deno.mkdirSync(a);
      Deno.mkdirSync(b);
      const record = claimRecordFile(claimsDirectory(), "state file", `${a}/state.dat`);
      const relative = ["--state", "state.dat", "--fifo", "button.fifo"];
      {
        await using dead = startLauncher(a, relative, { env });
        const pids = await running(dead);
        try {
          dead.kill("SIGKILL");
          await dead.status();
        } finally {
          await stopAll(dead, [pids.led, pids.button]);
        }
      }
      assert(identity(`${a}/state.dat`) !== undefined, "the dead launcher's state file is gone");
      assert(identity(record) !== undefined, "the dead launcher left no record");
      // Another launcher, elsewhere, with the same relative spelling of other files: its sweep
      // must not judge the dead one's record from its own directory.
      {
        await using other = startLauncher(b, relative, { env });
        const pids = await running(other);
        try {
          assert(identity(record) !== undefined, "the sweep removed the dead launcher's record");
        } finally {
          other.kill("SIGTERM");
          await other.status();
          await stopAll(other, [pids.led, pids.button]);
        }
      }
      await using next = startLauncher(a, relative, { env });
      const pids = await running(next);
      try {
        await next.waitFor(/Adopting the state file "state.dat"/);
        next.kill("SIGTERM");
        assertEquals((await next.status()).code, 0, next.transcript);
        assertEquals(identity(`${a}/state.dat`), undefined, "the adopted state file stayed");
      } finally {
        await stopAll(next, [pids.led, pids.button]);
      }
    });
  },
);
