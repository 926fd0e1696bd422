/**
 * The launcher's path claims in one process, against real record files locked with flock(2) by
 * another process (util-linux's `flock`): a record another launcher's sweep holds for an instant
 * is waited out, one a live launcher holds is refused by pid, however the path is spelled; and
 * real launchers on one state file: spelled two ways, or started with different environments; and
 * a real launcher that meets a shared directory another user made first (in a mount namespace of
 * its own, so that nothing outside it sees the squatter's directory).
 * The claims directory is the real one, every launcher's of this user; the tests' paths are in
 * their own temporary directories, so no other launcher's claims meet theirs.
 *
 * @module
 */

import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import {
  claimPaths,
  claimRecordFile,
  claimsDirectory,
  machineClaimName,
  type PathClaim,
} from "../app/path_claims.ts";
import { effectiveUid, flockHolder, readFileText, statPath } from "../ffi/posix.ts";
import { NEEDS, requires, skippedWithoutRoot, testWith } from "./helpers/permissions.ts";
import { shellQuote } from "../lib/shell_quote.ts";
import type { ChildProcess } from "./helpers/child_process.ts";
import { childrenOf, openFdCount, processGone } from "./helpers/proc.ts";
import { isRuntimeDirectory, type RuntimeRoots } from "../app/runtime_dir.ts";
import { spawnDeno, spawnProgram } from "./helpers/spawn.ts";
import { TESTS_DIR } from "./helpers/paths.ts";
import {
  identity,
  launcherCommand,
  pressAndSee,
  running,
  startedOrEnded,
  startLauncher,
  stopAll,
} from "./helpers/system.ts";
import { removeTree, withMount, withShmName, withTempDir } from "./helpers/temp.ts";
import { delay, until, within } from "./helpers/waiting.ts";
import { keepClaims } from "../app/claim_keeper.ts";
import { ensurePrivateDirectory } from "../lib/owned_path.ts";
import { assertThrowsWith } from "./helpers/assertions.ts";
import { warningsInto } from "./helpers/logs.ts";

/**
 * Runs `fn` with the state file's claim record locked by another process (util-linux's `flock`)
 * for `seconds`, then stops it and removes the record it made, if it is still that one: the
 * claims directory is every launcher's of this user, so nothing of a test's may stay there.
 */
async function withHeldRecord(
  path: string,
  seconds: number,
  fn: (holder: ChildProcess, record: string) => Promise<void>,
): Promise<void> {
  const record = claimRecordFile(claimsDirectory(), "state file", path);
  Deno.writeTextFileSync(record, "", { mode: 0o600, createNew: true });
  const made = statPath(record)?.identity;
  try {
    // No fork: the pid that holds the lock is the one the test stops.
    await using holder = spawnProgram("flock", [
      "--exclusive",
      "--no-fork",
      record,
      "sh",
      "-c",
      `echo locked; exec sleep ${seconds}`,
    ]);
    assertEquals(await holder.nextLine(), "locked");
    await fn(holder, record);
  } finally {
    if (made !== undefined && statPath(record)?.identity === made) Deno.removeSync(record);
  }
}

/** Waits for a refused launcher and checks that it named `first` and the path as `spelled`. */
async function refused(
  second: ChildProcess,
  first: ChildProcess,
  what: string,
  spelled: string,
): Promise<void> {
  const outcome = await startedOrEnded(second, /Started (led|button)/);
  assertEquals(outcome, "ended", `a second launcher ran on ${spelled}:\n${second.transcript}`);
  const status = await within(second.status(), 5_000);
  assert(status !== undefined, second.transcript);
  assertEquals(status.code, 1, second.transcript);
  assertStringIncludes(status.stderr, `another launcher (pid ${first.pid})`);
  assertStringIncludes(status.stderr, `the ${what} ${JSON.stringify(spelled)}`);
}

testWith(
  [...NEEDS.system, requires("flock")],
  "a claim waits out a record that another launcher's sweep holds for an instant",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/state.dat`;
      await withHeldRecord(path, 0.2, async (sweeper, record) => {
        // Still held as the claim starts, so the claim must wait it out (it lasts 200 ms).
        assertEquals(flockHolder(statPath(record)?.lockIdentity ?? ""), sweeper.pid);
        const claims = claimPaths([{ kind: "state file", path }]);
        assertEquals(claims.map((held) => held.path), [path]);
        for (const held of claims) held.release();
        assertEquals((await sweeper.status()).code, 0);
      });
    });
  },
);

testWith(
  [...NEEDS.system, requires("flock")],
  "a claim on a record a live launcher holds is refused with Busy naming its pid",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/state.dat`;
      await withHeldRecord(path, 30, (holder) => {
        assertThrows(
          () => claimPaths([{ kind: "state file", path }]),
          Deno.errors.Busy,
          `another launcher (pid ${holder.pid}) is using the state file "${path}"`,
        );
        return Promise.resolve();
      });
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
    await withTempDir(async (dir) => {
      const { plain, others } = spellings(dir, "state.dat");
      await withHeldRecord(plain, 30, (holder) => {
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
        return Promise.resolve();
      });
    });
  },
);

testWith(
  NEEDS.system,
  "a claim on a file in a directory that does not exist is refused before any claim, naming the path",
  async () => {
    await withTempDir((dir) => {
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

/** A launcher {@link secondsRefused} starts second, and what it must be refused on. */
interface Second {
  args: string[];
  /** The kind of path it is refused on, as the message says it. */
  what: string;
  /** That path as the message spells it. */
  spelled: string;
  env?: Record<string, string>;
  /** Its FIFO, when the test made it; else one of its own, which it must not leave. */
  fifo?: string;
}

/**
 * Starts a launcher with `first` (and `dir/first.fifo`), waits until it runs, then for each of
 * `seconds` starts another one and checks that it is refused, naming the first one's pid and the
 * path; then stops the first one cleanly. `between` runs once the first one runs.
 */
async function secondsRefused(
  dir: string,
  first: { args: string[]; env?: Record<string, string> },
  seconds: Second[],
  between: () => void = () => {},
): Promise<void> {
  await using launcher = startLauncher(dir, [...first.args, "--fifo", `${dir}/first.fifo`], {
    env: first.env,
  });
  const pids = await running(launcher);
  try {
    between();
    for (const [i, { args, what, spelled, env, fifo }] of seconds.entries()) {
      const own = `${dir}/second-${i}.fifo`;
      await using second = startLauncher(dir, [...args, "--fifo", fifo ?? own], { env });
      try {
        await refused(second, launcher, what, spelled);
        if (fifo === undefined) {
          assertEquals(identity(own), undefined, "the refused launcher left its FIFO");
        }
      } finally {
        await stopAll(second, childrenOf(second.pid));
      }
    }
    launcher.kill("SIGTERM");
    assertEquals((await within(launcher.status(), 5_000))?.code, 0, launcher.transcript);
  } finally {
    await stopAll(launcher, [pids.led, pids.button]);
  }
}

testWith(
  NEEDS.system,
  "a second launcher on the state file spelled with // or through a symlinked directory exits 1 naming the first one's pid, leaving nothing",
  async () => {
    await withTempDir(async (dir) => {
      const { plain, others } = spellings(dir, "state.dat");
      await secondsRefused(
        dir,
        { args: ["--state", plain] },
        others.slice(0, 2).map((state) => ({
          args: ["--state", state],
          what: "state file",
          spelled: state,
        })),
      );
      assertEquals(identity(plain), undefined, "the state file was left behind");
    });
  },
);

testWith(
  NEEDS.system,
  "a second launcher started with another XDG_RUNTIME_DIR still meets the first one's claim and exits 1",
  async () => {
    await withTempDir(async (dir) => {
      // Two private directories, as two sessions (or a session and a cron job) would have.
      const [one, two] = [`${dir}/run-1`, `${dir}/run-2`];
      Deno.mkdirSync(one, { mode: 0o700 });
      Deno.mkdirSync(two, { mode: 0o700 });
      const state = `${dir}/state.dat`;
      await secondsRefused(dir, { args: ["--state", state], env: { XDG_RUNTIME_DIR: one } }, [{
        args: ["--state", state],
        what: "state file",
        spelled: state,
        env: { XDG_RUNTIME_DIR: two },
      }]);
      assertEquals(identity(state), undefined, "the state file was left behind");
    });
  },
);

testWith(
  NEEDS.system,
  "a launcher started in a login session meets the claim of one started outside any session",
  async (t) => {
    // A session is logind's /run/user/UID: the test makes one appear between the two launchers.
    const session = `/run/user/${effectiveUid()}`;
    let canMake = false;
    try {
      canMake = Deno.statSync("/run/user").isDirectory && !existsNoFollow(session);
    } catch {
      // no /run/user
    }
    if (!canMake) {
      t.step({ name: `needs /run/user without ${session} (skipped)`, ignore: true, fn: () => {} });
      return;
    }
    await withTempDir(async (dir) => {
      const state = `${dir}/state.dat`;
      let made = false;
      try {
        await secondsRefused(dir, { args: ["--state", state] }, [{
          args: ["--state", state],
          what: "state file",
          spelled: state,
        }], () => {
          Deno.mkdirSync(session, { mode: 0o700 });
          made = true;
        });
      } finally {
        if (made) Deno.removeSync(session, { recursive: true });
      }
      assertEquals(identity(state), undefined, "the state file was left behind");
    });
  },
);

function existsNoFollow(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

testWith(
  NEEDS.system,
  "a second launcher on --state /dev/shm/NAME is refused while one runs on --shm NAME, and the other way round",
  async () => {
    await withTempDir(async (dir) => {
      await withShmName(async (name) => {
        await secondsRefused(dir, { args: ["--shm", name] }, [{
          args: ["--state", `/dev/shm${name}`],
          what: "state file",
          spelled: `/dev/shm${name}`,
        }]);
        assertEquals(identity(`/dev/shm${name}`), undefined, "the shm object was left behind");
      });
      await withShmName(async (name) => {
        await secondsRefused(dir, { args: ["--state", `/dev/shm${name}`] }, [{
          // Without its "/", as a user may write it.
          args: ["--shm", name.slice(1)],
          what: "shared memory",
          spelled: name,
        }]);
        assertEquals(identity(`/dev/shm${name}`), undefined, "the state file was left behind");
      });
    });
  },
);

testWith(
  NEEDS.system,
  "a claim on one file under two names (a FIFO and a shm name in /dev/shm) is refused before any claim",
  async () => {
    await withShmName((name) => {
      let claims: PathClaim[] = [];
      try {
        assertThrows(
          () => {
            claims = claimPaths([{ kind: "shared memory", path: name }, {
              kind: "FIFO",
              path: `/dev/shm/${name.slice(1)}`,
            }]);
          },
          TypeError,
          "are the same file",
        );
        // Nothing was left claimed: claiming the name again works.
        claims = claimPaths([{ kind: "shared memory", path: name }]);
      } finally {
        for (const held of claims) held.release();
      }
    });
  },
);

testWith(
  NEEDS.system,
  "a second launcher on another name of the first one's state file or FIFO (a hard link) exits 1 naming the first one's pid, leaving that name",
  async () => {
    await withTempDir(async (dir) => {
      // Neither exists when the first launcher starts: it makes both, then the user links them.
      const [state, linkedState] = [`${dir}/state.dat`, `${dir}/other.dat`];
      const [fifo, linkedFifo] = [`${dir}/first.fifo`, `${dir}/other.fifo`];
      await secondsRefused(
        dir,
        { args: ["--state", state] },
        [
          { args: ["--state", linkedState], what: "state file", spelled: linkedState },
          {
            args: ["--state", `${dir}/second.dat`],
            fifo: linkedFifo,
            what: "FIFO",
            spelled: linkedFifo,
          },
        ],
        () => {
          Deno.linkSync(state, linkedState);
          Deno.linkSync(fifo, linkedFifo);
        },
      );
      assertEquals(identity(state), undefined, "the first launcher left its state file");
      assert(identity(linkedState) !== undefined, "the user's name for the state file is gone");
      assert(identity(linkedFifo) !== undefined, "the user's name for the FIFO is gone");
      assertEquals(identity(`${dir}/second.dat`), undefined, "the refused launcher left a file");
    });
  },
);

testWith(
  NEEDS.system,
  "a SIGKILLed launcher's record for a relative path is judged from its own directory: another launcher's sweep keeps it, and the next launcher there adopts the file",
  async () => {
    await withTempDir(async (dir) => {
      const [a, b] = [`${dir}/a`, `${dir}/b`];
      Deno.mkdirSync(a);
      Deno.mkdirSync(b);
      const record = claimRecordFile(claimsDirectory(), "state file", `${a}/state.dat`);
      const relative = ["--state", "state.dat", "--fifo", "button.fifo"];
      {
        await using dead = startLauncher(a, relative);
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
        await using other = startLauncher(b, relative);
        const pids = await running(other);
        try {
          assert(identity(record) !== undefined, "the sweep removed the dead launcher's record");
        } finally {
          other.kill("SIGTERM");
          await other.status();
          await stopAll(other, [pids.led, pids.button]);
        }
      }
      await using next = startLauncher(a, relative);
      const pids = await running(next);
      try {
        // Absolute: the launcher takes a relative path from its working directory as it starts.
        await next.waitFor(new RegExp(`Adopting the state file "${a}/state.dat"`));
        next.kill("SIGTERM");
        assertEquals((await next.status()).code, 0, next.transcript);
        assertEquals(identity(`${a}/state.dat`), undefined, "the adopted state file stayed");
      } finally {
        await stopAll(next, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "one file given as both --state and --fifo is a usage error: exit 2 with the usage, nothing made, also when its directory is missing (which was exit 1, naming the directory)",
  async () => {
    await withTempDir(async (dir) => {
      for (
        const [state, fifo] of [[`${dir}/both`, `${dir}/both`], [
          `${dir}/gone/both`,
          `${dir}//gone/./both`,
        ]]
      ) {
        await using launcher = startLauncher(dir, ["--state", state, "--fifo", fifo]);
        const status = await launcher.status({ timeoutMs: 30_000 });
        assertEquals(status.code, 2, launcher.transcript);
        assertStringIncludes(status.stderr, "are the same file");
        assertStringIncludes(status.stderr, "Usage:");
        assertEquals(identity(state), undefined);
      }
    });
  },
);

/** The pid holding a flock on the file or directory at `path`. */
function lockHolder(path: string): number | undefined {
  const stat = statPath(path);
  assert(stat !== undefined, `${path} is missing`);
  return flockHolder(stat.lockIdentity);
}

/** A session's and a shared root of the test's own, as `/run/user` and `/tmp` would be. */
function roots(dir: string, { session }: { session: boolean }): RuntimeRoots {
  const sessions = `${dir}/run`;
  Deno.mkdirSync(`${sessions}/${effectiveUid()}`, { recursive: true, mode: 0o700 });
  Deno.chmodSync(`${sessions}/${effectiveUid()}`, 0o700);
  Deno.mkdirSync(`${dir}/tmp`, { recursive: true });
  return { sessions: session ? sessions : `${dir}/no-sessions`, shared: `${dir}/tmp` };
}

testWith(
  NEEDS.childrenAndFiles,
  "a claim in a session is held in the session's and the shared directory, so a claim outside any session meets it",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/state.dat`;
      const inSession = claimPaths([{ kind: "state file", path }], {
        roots: roots(dir, { session: true }),
      });
      try {
        for (
          const directory of [
            `${dir}/run/${effectiveUid()}/mmap-ipc/claims`,
            `${dir}/tmp/mmap-ipc-${effectiveUid()}/claims`,
          ]
        ) {
          const record = claimRecordFile(directory, "state file", path);
          assertEquals(lockHolder(record), Deno.pid, record);
          // Locked so that systemd-tmpfiles never ages the records out from under the launcher.
          assertEquals(lockHolder(directory), Deno.pid, directory);
        }
        assertThrows(
          () =>
            claimPaths([{ kind: "state file", path }], { roots: roots(dir, { session: false }) }),
          Deno.errors.Busy,
          `another launcher (pid ${Deno.pid}) is using the state file`,
        );
      } finally {
        for (const held of inSession) held.release();
      }
      const shared = `${dir}/tmp/mmap-ipc-${effectiveUid()}/claims`;
      assertEquals([...Deno.readDirSync(shared)], [], "records left behind");
      assertEquals(
        lockHolder(shared),
        undefined,
        "the directory stays locked",
      );
    });
  },
);

testWith(
  [...NEEDS.system, requires("flock")],
  "a claims directory someone holds locked exclusively (a cleaner) does not stop a claim, and no fd is left",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/state.dat`;
      const outside = roots(dir, { session: false });
      const directory = `${dir}/tmp/mmap-ipc-${effectiveUid()}/claims`;
      Deno.mkdirSync(directory, { recursive: true, mode: 0o700 });
      Deno.chmodSync(`${dir}/tmp/mmap-ipc-${effectiveUid()}`, 0o700);
      await using cleaner = spawnProgram("flock", [
        "--exclusive",
        "--no-fork",
        directory,
        "sh",
        "-c",
        "echo locked; exec sleep 30",
      ]);
      assertEquals(await cleaner.nextLine(), "locked");
      const claims = claimPaths([{ kind: "state file", path }], { roots: outside });
      const record = claimRecordFile(directory, "state file", path);
      assertEquals(lockHolder(record), Deno.pid, record);
      assertEquals(lockHolder(directory), cleaner.pid, "the cleaner's lock is untouched");
      // The directory could not be locked, so it is not kept open either.
      assertEquals(await openFdCount(Deno.pid, directory), 0, "fds left open on the directory");
      for (const held of claims) held.release();
      assertEquals([...Deno.readDirSync(directory)], [], "records left behind");
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a shared directory another user made first: a session claims in its own with a warning, outside a session the claim fails naming it",
  async (t) => {
    if (await skippedWithoutRoot(t, "to make a directory another user owns")) return;
    await withTempDir((dir) => {
      const path = `${dir}/state.dat`;
      const squatted = `${dir}/tmp/mmap-ipc-${effectiveUid()}`;
      const inSession = roots(dir, { session: true });
      Deno.mkdirSync(squatted, { mode: 0o700 });
      Deno.chownSync(squatted, 12345, 12345);
      const refusals: string[] = [];
      const claims = claimPaths([{ kind: "state file", path }], {
        roots: inSession,
        onSharedRefused: (reason) => refusals.push(reason),
      });
      try {
        assertEquals(refusals.length, 1);
        assertStringIncludes(refusals[0], squatted);
        assertStringIncludes(refusals[0], "belongs to uid 12345");
        const record = claimRecordFile(
          `${dir}/run/${effectiveUid()}/mmap-ipc/claims`,
          "state file",
          path,
        );
        assertEquals(lockHolder(record), Deno.pid);
      } finally {
        for (const held of claims) held.release();
      }
      assertThrowsWith(
        () => claimPaths([{ kind: "state file", path }], { roots: roots(dir, { session: false }) }),
        Deno.errors.PermissionDenied,
        squatted,
        // This test runs as root, who is the administrator: it is told to look, then remove it.
        `Another user made it before root's first run: look at what is in it, and remove it (rm -r ${
          shellQuote(squatted)
        }) once nothing there is in use; until then, run in a login session`,
      );
    });
  },
);

testWith(
  // The probe: root in a container may lack CAP_SYS_ADMIN, and then no mount namespace.
  [...NEEDS.system, requires("unshare", { probe: ["--mount", "true"] }), requires("mount")],
  "/tmp/mmap-ipc-UID made first by another user: a launcher in a session warns naming it and runs; one outside any session exits 1 naming it",
  async (t) => {
    if (await skippedWithoutRoot(t, "for a mount namespace and a directory another user owns")) {
      return;
    }
    await withTempDir(async (dir) => {
      const uid = effectiveUid();
      const shared = `/tmp/mmap-ipc-${uid}`;
      // The mount point: any launcher of this user makes it so (ours, 0700) and leaves it.
      if (statPath(shared) === undefined) Deno.mkdirSync(shared, { mode: 0o700 });
      const squatted = `${dir}/squatted`;
      Deno.mkdirSync(squatted, { mode: 0o700 });
      Deno.chownSync(squatted, 12345, 12345);
      const why = `"${shared}": it belongs to uid 12345`;
      const fifo = `${dir}/button.fifo`;
      const args = ["--state", `${dir}/state.dat`, "--fifo", fifo, "--log-level", "debug"];
      // In a mount namespace of its own (nothing outside sees its mounts): a /run of its own,
      // with or without this user's session directory, and the squatter's directory mounted at
      // the shared path. `exec` all the way: the child's pid is the launcher's.
      const script = 'set -e; mount -t tmpfs -o mode=0755 tmpfs /run; if [ "$2" = yes ]; then ' +
        'mkdir -p -m 0700 "/run/user/$3"; fi; mount --bind "$1" "$4"; shift 4; exec "$@"';
      const launcher = (session: boolean): ChildProcess =>
        spawnProgram("unshare", [
          ...["--mount", "--propagation", "private", "sh", "-c", script, "sh", squatted],
          ...[session ? "yes" : "no", String(uid), shared, ...launcherCommand(args)],
        ], { cwd: dir });
      {
        await using outside = launcher(false);
        // Exit 1 is also what unshare or sh would give: the reason below is the launcher's.
        assertEquals((await outside.status()).code, 1, outside.transcript);
        assertStringIncludes(
          outside.transcript,
          `launch: Cannot use as a private directory ${why}`,
        );
        assertEquals(outside.matching(/Started (led|button)/), [], outside.transcript);
      }
      await using inside = launcher(true);
      const pids = await running(inside);
      try {
        const warnings = inside.matching(/\[WRN\].*claims are kept in this session's directory/);
        assertEquals(warnings.length, 1, inside.transcript);
        assertStringIncludes(warnings[0], why);
        assertEquals(await pressAndSee(inside, fifo), 1);
        inside.kill("SIGTERM");
        assertEquals((await inside.status()).code, 0, inside.transcript);
      } finally {
        await stopAll(inside, [pids.led, pids.button]);
      }
      assertEquals(
        [...Deno.readDirSync(squatted)],
        [],
        "a launcher wrote into another's directory",
      );
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a file claimed outside a session under another name: the claim in a session is refused and keeps no claim on the file",
  async () => {
    await withTempDir((dir) => {
      const [first, second] = [`${dir}/a.dat`, `${dir}/b.dat`];
      Deno.writeTextFileSync(first, "0\n");
      Deno.linkSync(first, second);
      const file = statPath(first);
      assert(file !== undefined);
      const outside = claimPaths([{ kind: "state file", path: first }], {
        roots: roots(dir, { session: false }),
      });
      const inSession = claimPaths([{ kind: "state file", path: second }], {
        roots: roots(dir, { session: true }),
      });
      try {
        outside[0].claimFile(file.identity);
        assertThrows(
          () => inSession[0].claimFile(file.identity),
          Deno.errors.Busy,
          `another launcher (pid ${Deno.pid}) is using the state file`,
        );
        // Its claim on the file in the session's directory, taken first, was given up again.
        const session = `${dir}/run/${effectiveUid()}/mmap-ipc/claims`;
        assertEquals([...Deno.readDirSync(session)].length, 1, "only the name's record stays");
      } finally {
        for (const held of [...outside, ...inSession]) held.release();
      }
    });
  },
);

Deno.test("isRuntimeDirectory() knows this user's two runtime directories by name, and nothing else", () => {
  const uid = effectiveUid();
  assert(isRuntimeDirectory(`/run/user/${uid}/mmap-ipc`));
  assert(isRuntimeDirectory(`/tmp/mmap-ipc-${uid}/`));
  assert(isRuntimeDirectory(`/x/mmap-ipc-${uid}`, { shared: "/x" }));
  for (
    const other of [
      `/tmp/mmap-ipc-${uid + 1}`,
      `/tmp/mmap-ipc-${uid}/claims`,
      "/tmp",
      "/home/ann/run",
    ]
  ) {
    assert(!isRuntimeDirectory(other), other);
  }
});

testWith(
  NEEDS.files,
  "records removed while held (rm -rf of the runtime directories) are put back by restore(), 0700, and hold again",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/state.dat`;
      Deno.writeTextFileSync(path, "0\n");
      const file = statPath(path);
      assert(file !== undefined);
      const inSession = roots(dir, { session: true });
      const claims = claimPaths([{ kind: "state file", path }], { roots: inSession });
      try {
        claims[0].claimFile(file.identity);
        assertEquals(claims[0].restore(), 0, "nothing was missing");
        const runtime = [
          `${dir}/run/${effectiveUid()}/mmap-ipc`,
          `${dir}/tmp/mmap-ipc-${effectiveUid()}`,
        ];
        for (const directory of runtime) Deno.removeSync(directory, { recursive: true });
        // The path's record and the file's, in both directories.
        assertEquals(claims[0].restore(), 4);
        for (const directory of runtime) {
          for (const made of [directory, `${directory}/claims`]) {
            assertEquals((Deno.statSync(made).mode ?? 0) & 0o777, 0o700, made);
          }
        }
        for (const { file: record } of claims[0].records()) {
          assertEquals(lockHolder(record), Deno.pid, `${record} is not locked by this process`);
        }
        assertThrows(
          () => claimPaths([{ kind: "state file", path }], { roots: inSession }),
          Deno.errors.Busy,
          `pid ${Deno.pid}`,
        );
      } finally {
        for (const held of claims) held.release();
      }
    });
  },
);

testWith(
  NEEDS.files,
  "a path another launcher claimed while the records were gone: restore() says who holds it",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/state.dat`;
      const outside = roots(dir, { session: false });
      const claims = claimPaths([{ kind: "state file", path }], { roots: outside });
      Deno.removeSync(`${dir}/tmp/mmap-ipc-${effectiveUid()}`, { recursive: true });
      const other = claimPaths([{ kind: "state file", path }], { roots: outside });
      try {
        assertThrows(() => claims[0].restore(), Deno.errors.Busy, `pid ${Deno.pid}`, path);
      } finally {
        for (const held of [...claims, ...other]) held.release();
      }
    });
  },
);

/**
 * Claims a state file under the runtime roots of `dir` and keeps the claims while `takeAway`
 * does something to the runtime directory; then they must be back, said once, and a second
 * claim on the path refused.
 */
async function keptThrough(
  dir: string,
  takeAway: (runtime: string) => Promise<void> | void,
): Promise<void> {
  const path = `${dir}/state.dat`;
  const outside = roots(dir, { session: false });
  const claims = claimPaths([{ kind: "state file", path }], { roots: outside });
  const said: string[] = [];
  const stop = new AbortController();
  const keeping = keepClaims(claims, { signal: stop.signal, log: warningsInto(said) });
  try {
    await delay(100);
    await takeAway(`${dir}/tmp/mmap-ipc-${effectiveUid()}`);
    await until(() => said.length > 0, "the keeper's word");
    assertStringIncludes(said[0], "claim records were removed; made them again");
    assertThrows(
      () => claimPaths([{ kind: "state file", path }], { roots: outside }),
      Deno.errors.Busy,
    );
  } finally {
    stop.abort();
    await keeping;
    for (const held of claims) held.release();
  }
  assertEquals(said.length, 1, said.join("\n"));
}

testWith(
  NEEDS.childrenAndFiles,
  "keepClaims() puts back records an rm -rf removed, says so, and stops on abort",
  async () => {
    await withTempDir((dir) => keptThrough(dir, (runtime) => removeTree(runtime)));
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "keepClaims() puts back records whose runtime directory was moved away (mv, then mkdir)",
  async () => {
    await withTempDir((dir) =>
      keptThrough(dir, (runtime) => {
        // The claims directory itself is not moved, so a watch of it alone heard nothing.
        Deno.renameSync(runtime, `${dir}/moved`);
        Deno.mkdirSync(runtime, { mode: 0o700 });
      })
    );
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "keepClaims() that cannot put the records back yet (the root of their directory is gone too) says so once and does it once it can",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/state.dat`;
      const outside = roots(dir, { session: false });
      const claims = claimPaths([{ kind: "state file", path }], { roots: outside });
      const said: string[] = [];
      const log = warningsInto(said);
      const stop = new AbortController();
      const keeping = keepClaims(claims, { signal: stop.signal, log });
      try {
        await delay(100);
        await removeTree(`${dir}/tmp`); // /tmp itself, as far as the claims know
        await until(() => said.length > 0, "the keeper's first word");
        assertStringIncludes(said[0], "Cannot watch or put back this launcher's claim records yet");
        await delay(1500); // more tries, none of them said again
        assertEquals(said.length, 1, said.join("\n"));
        Deno.mkdirSync(`${dir}/tmp`);
        await until(() => said.length > 1, "the keeper's second word");
        assertStringIncludes(said[1], "claim records were removed; made them again");
        assertThrows(
          () => claimPaths([{ kind: "state file", path }], { roots: outside }),
          Deno.errors.Busy,
        );
      } finally {
        stop.abort();
        await keeping;
        for (const held of claims) held.release();
      }
    });
  },
);

testWith(
  NEEDS.files,
  "a private directory of ours that others may use is refused with the chmod that mends it",
  async () => {
    await withTempDir((dir) => {
      const shared = `${dir}/runtime`;
      Deno.mkdirSync(shared);
      Deno.chmodSync(shared, 0o755);
      // It said "belongs to uid 0 ... must be ours (uid 0)", of a directory that was ours.
      assertThrowsWith(
        () => ensurePrivateDirectory(shared),
        Deno.errors.PermissionDenied,
        shared,
        "it is ours, but others may use it (mode 0755)",
        `chmod 700 ${shellQuote(shared)}`,
      );
      Deno.chmodSync(shared, 0o700);
      assertEquals(ensurePrivateDirectory(shared), shared);
    });
  },
);

/** Every regular file under `dir`, by path. */
function filesUnder(dir: string): string[] {
  return [...Deno.readDirSync(dir)].flatMap((entry) => {
    const path = `${dir}/${entry.name}`;
    return entry.isDirectory ? filesUnder(path) : [path];
  });
}

testWith(
  [...NEEDS.childrenAndFiles, requires("mount"), requires("umount")],
  "a claim whose record cannot be written (its file system full) fails naming why, and leaves no empty record behind",
  async (t) => {
    if (await skippedWithoutRoot(t, "to mount a small tmpfs")) return;
    await withTempDir(async (dir) => {
      await withMount(dir, "tmpfs", (small) => {
        const runtime = roots(small, { session: false });
        const path = `${dir}/state.dat`;
        // Once with room, so the claims directories exist; then every block taken.
        for (const held of claimPaths([{ kind: "state file", path }], { roots: runtime })) {
          held.release();
        }
        const filler = `${small}/filler`;
        assertThrows(() => Deno.writeFileSync(filler, new Uint8Array(128 * 1024)));
        assertThrowsWith(
          () => claimPaths([{ kind: "state file", path }], { roots: runtime }),
          Error,
          "ENOSPC",
        );
        // An empty record was left for good: sweeps skip those as being written.
        assertEquals(filesUnder(small), [filler]);
      }, "size=64k");
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("chattr")],
  "a prefix's claim whose record in the shared directory cannot be removed at its release still gives up the name held across the machine",
  async (t) => {
    if (await skippedWithoutRoot(t, "to make a claims directory immutable (chattr +i)")) return;
    await withTempDir(async (dir) => {
      const path = `test/${crypto.randomUUID().slice(0, 8)}`;
      const [held] = claimPaths([{ kind: "MQTT topic prefix", path }], {
        roots: roots(dir, { session: true }),
      });
      const shared = `${dir}/tmp/mmap-ipc-${effectiveUid()}/claims`;
      const chattr = (flag: string) =>
        new Deno.Command("chattr", { args: [flag, shared] }).output().then((out) => {
          assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
        });
      await chattr("+i");
      try {
        assertThrows(() => held.release(), Deno.errors.PermissionDenied, "remove claim");
        // The rest went all the same: the session's record, and both records' locks (a record
        // left locked would refuse this user's next launcher on the prefix for as long as this
        // process lived).
        const sessionRecord = claimRecordFile(
          `${dir}/run/${effectiveUid()}/mmap-ipc/claims`,
          "MQTT topic prefix",
          path,
        );
        assertEquals(statPath(sessionRecord), undefined);
        // Another user's launcher (no session; other directories) meets no claim on the prefix,
        // a moment after the release (the name goes once the poll call watching it returns).
        Deno.mkdirSync(`${dir}/other`);
        let other: PathClaim[] = [];
        await until(() => {
          try {
            other = claimPaths([{ kind: "MQTT topic prefix", path }], {
              roots: { sessions: `${dir}/no-sessions`, shared: `${dir}/other` },
            });
            return true;
          } catch (error) {
            if (error instanceof Deno.errors.Busy) return false;
            throw error;
          }
        }, "the prefix claimed by another");
        for (const claim of other) claim.release();
        // This user's next launcher takes it too, the shared record that stayed included.
        let again: PathClaim[] = [];
        await until(() => {
          try {
            again = claimPaths([{ kind: "MQTT topic prefix", path }], {
              roots: roots(dir, { session: true }),
            });
            return true;
          } catch (error) {
            if (error instanceof Deno.errors.Busy) return false;
            throw error;
          }
        }, "the prefix claimed again by this user");
        for (const claim of again) {
          assertThrows(() => claim.release(), Deno.errors.PermissionDenied);
        }
      } finally {
        await chattr("-i");
        held.release();
      }
    });
  },
);

testWith(
  NEEDS.files,
  "a prefix held across the machine names its holder to every launcher it refuses, however many ask (their connections are dropped, and its queue never fills)",
  async () => {
    await withTempDir(async (dir) => {
      const path = `test/${crypto.randomUUID().slice(0, 8)}`;
      const held = claimPaths([{ kind: "MQTT topic prefix", path }], {
        roots: roots(dir, { session: true }),
      });
      try {
        Deno.mkdirSync(`${dir}/other`);
        // As another user's launchers would ask: their own directories, so only the name refuses.
        const refusal = (): string => {
          try {
            claimPaths([{ kind: "MQTT topic prefix", path }], {
              roots: { sessions: `${dir}/no-sessions`, shared: `${dir}/other` },
            }).forEach((claim) => claim.release());
            return "claimed";
          } catch (error) {
            return (error as Error).message;
          }
        };
        for (let i = 0; i < 60; i++) {
          let said = "";
          await until(() => (said = refusal()).includes(`(pid ${Deno.pid}, `), `refusal ${i}`);
          assertStringIncludes(said, `is using the MQTT topic prefix "${path}"`);
        }
      } finally {
        for (const claim of held) claim.release();
      }
      // Released: the poll call watching the name ends, and no op of it is left behind.
      await delay(100);
    });
  },
);

/** The message of what `claim()` throws, or "claimed" (having released the claims). */
function refusalOf(claim: () => PathClaim[]): string {
  try {
    claim().forEach((held) => held.release());
    return "claimed";
  } catch (error) {
    return (error as Error).message;
  }
}

testWith(
  NEEDS.childrenAndFiles,
  "a prefix held by mqtt:forget (or a launcher) in another process is refused naming what holds it, by its records and across the machine",
  async () => {
    await withTempDir(async (dir) => {
      for (
        const [role, named] of [["mqtt:forget", "deno task mqtt:forget"], [
          "launcher",
          "another launcher",
        ]]
      ) {
        const prefix = `test/${crypto.randomUUID().slice(0, 8)}`;
        const theirs = roots(`${dir}/${role}`, { session: false });
        await using holder = spawnDeno(
          `${TESTS_DIR}fixtures/prefix_holder.ts`,
          [prefix, role, `${theirs.sessions}`, `${theirs.shared}`],
          { permissions: ["--allow-ffi", "--allow-env", "--allow-read", "--allow-write"] },
        );
        assertEquals(await holder.nextLine(), "held", holder.transcript);
        const claim = (where: RuntimeRoots) => (): PathClaim[] =>
          claimPaths([{ kind: "MQTT topic prefix", path: prefix }], { roots: where });
        // Its records, as the same user's claim meets them.
        assertStringIncludes(
          refusalOf(claim(theirs)),
          `${named} (pid ${holder.pid}) is using the MQTT topic prefix "${prefix}"`,
        );
        // Its name on the machine, as another user's claim meets it.
        assertStringIncludes(
          refusalOf(claim(roots(`${dir}/${role}-other`, { session: false }))),
          `${named} on this machine (pid ${holder.pid}, `,
        );
        holder.kill("SIGTERM");
        assertEquals((await holder.status()).code, 0, holder.transcript);
      }
    });
  },
);

/** A process not of this project holding the abstract `name`: see the fixture for `mode`. */
function squatter(name: string, mode: "bind" | "listen" | "accept"): ChildProcess {
  return spawnDeno(`${TESTS_DIR}fixtures/name_squatter.ts`, [name, mode]);
}

testWith(
  NEEDS.childrenAndFiles,
  "a prefix whose machine-wide name another process squats is refused naming that process's command, pid and user, whether it accepts or not, without waiting on it for good",
  async () => {
    await withTempDir(async (dir) => {
      for (const mode of ["listen", "accept"] as const) {
        const prefix = `test/${crypto.randomUUID().slice(0, 8)}`;
        const name = machineClaimName(prefix);
        await using held = squatter(name, mode);
        assertEquals(await held.nextLine(), "held", held.transcript);
        const comm = readFileText(`/proc/${held.pid}/comm`)?.trim();
        const said = refusalOf(() =>
          claimPaths([{ kind: "MQTT topic prefix", path: prefix }], {
            roots: roots(`${dir}/${mode}`, { session: false }),
          })
        );
        assertStringIncludes(said, `a process (${JSON.stringify(comm)}, pid ${held.pid}, `);
        assertStringIncludes(
          said,
          `holds the name "@${name}" that claims the MQTT topic prefix "${prefix}" on this machine`,
        );
        assert(!said.includes("launcher"), said);
      }
    });
  },
);

/** Blocks this thread until `pid` has ended (its fds closed), for up to 10 s. */
function waitGone(pid: number): void {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const giveUp = performance.now() + 10_000;
  while (!processGone(pid)) {
    if (performance.now() > giveUp) throw new Error(`pid ${pid} did not end in 10 s`);
    Atomics.wait(pause, 0, 0, 5);
  }
}

testWith(
  NEEDS.childrenAndFiles,
  "a prefix's machine-wide name held at the bind but by nobody at the connect (its holder just ended) is tried again and taken; a holder that never answers is refused after a few tries",
  async () => {
    await withTempDir(async (dir) => {
      const prefix = `test/${crypto.randomUUID().slice(0, 8)}`;
      // Bound, not listening: a bind finds the name in use, a connect is refused, every time.
      await using held = squatter(machineClaimName(prefix), "bind");
      assertEquals(await held.nextLine(), "held", held.transcript);
      let asked = 0;
      const claim = (onNameUnanswered: () => void): string =>
        refusalOf(() =>
          claimPaths([{ kind: "MQTT topic prefix", path: prefix }], {
            roots: roots(dir, { session: false }),
            onNameUnanswered,
          })
        );
      const said = claim(() => asked++);
      assertEquals(asked, 2, "tried three times in all");
      // Found by its socket's inode, since it cannot be asked.
      const comm = readFileText(`/proc/${held.pid}/comm`)?.trim();
      assertStringIncludes(
        said,
        `a process that does not answer (${JSON.stringify(comm)}, pid ${held.pid}, `,
      );
      assertStringIncludes(said, `) holds the name "@${machineClaimName(prefix)}"`);
      // The holder ends between the failed bind and the connect: the next bind takes the name.
      asked = 0;
      const taken = claim(() => {
        if (asked++ > 0) return;
        held.kill("SIGKILL");
        waitGone(held.pid);
      });
      assertEquals(taken, "claimed");
      assertEquals(asked, 1);
    });
  },
);
