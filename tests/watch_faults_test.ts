import { assert, assertEquals, assertRejects } from "@std/assert";
import { statPath } from "../ffi/posix.ts";
import { openFdsTo } from "./helpers/proc.ts";
import { PathWatch } from "../lib/path_watch.ts";
import { watchShrink } from "../lib/shrink_watch.ts";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { runUnderFdLimit, spawnProgram } from "./helpers/spawn.ts";
import { withTempDir } from "./helpers/temp.ts";
import { delay } from "./helpers/waiting.ts";

/** Runs `tests/fixtures/watches_without_fds.ts` under `ulimit -n 256`; its lines. */
function withoutFds(args: string[], onLine?: (line: string) => void): Promise<string[]> {
  return runUnderFdLimit("watches_without_fds.ts", args, {
    permissions: ["--allow-ffi", "--allow-read"],
    onLine,
  });
}

testWith(
  [...NEEDS.childrenAndFiles, requires("sh")],
  "a path watch whose waits fail (no fd left for the poll hub: EMFILE) waits a moment before the next, never holding the event loop in a loop of failed waits",
  async () => {
    await withTempDir(async (dir) => {
      Deno.writeTextFileSync(`${dir}/f`, "x");
      assertEquals(await withoutFds(["path", `${dir}/f`]), ["event loop ran", "done"]);
    });
  },
);

testWith(
  [...NEEDS.children, requires("sh")],
  "a process watch whose wait fails (no fd left for the poll hub: EMFILE) reports no death of a process alive throughout",
  async () => {
    assertEquals(await withoutFds(["pid", String(Deno.pid)]), ["event loop ran", "done"]);
  },
);

testWith(
  [...NEEDS.children, requires("sh"), requires("sleep")],
  "a process watch whose wait failed (EMFILE) still tells the death of its process once it ends, with fds free again",
  async () => {
    await using peer = spawnProgram("sleep", ["60"]);
    const lines = await withoutFds(["pid", String(peer.pid), "ends"], (line) => {
      if (line === "fds free") Deno.kill(peer.pid, "SIGKILL");
    });
    assertEquals(lines, ["event loop ran", "fds free", "death reported", "done"]);
  },
);

testWith(
  NEEDS.files,
  "shrink watches made and closed in one step share one inotify instance (a user may have only 128), closed once the last is gone",
  async () => {
    await withTempDir(async (dir) => {
      await delay(0); // an instance retired by another test is closed by now
      const before = openFdsTo(Deno.pid, "anon_inode:inotify").length;
      using file = Deno.openSync(`${dir}/f`, { create: true, write: true });
      const [fd] = openFdsTo(Deno.pid, `${dir}/f`);
      for (let i = 0; i < 300; i++) watchShrink(fd, () => {})?.close();
      assert(
        openFdsTo(Deno.pid, "anon_inode:inotify").length - before <= 1,
        "an instance per watch",
      );
      await delay(0);
      assertEquals(
        openFdsTo(Deno.pid, "anon_inode:inotify").length,
        before,
        "the instance outlived its watches",
      );
      file.close();
    });
  },
);

testWith(
  NEEDS.files,
  "a path watch that cannot look at its path (ENAMETOOLONG) throws and leaves no inotify fd open",
  async () => {
    await withTempDir(async (dir) => {
      Deno.writeTextFileSync(`${dir}/f`, "x");
      const identity = statPath(`${dir}/f`)?.identity ?? "";
      const before = openFdsTo(Deno.pid, "anon_inode:inotify").length;
      await assertRejects(async () => {
        await new PathWatch(`${dir}/${"a".repeat(300)}`, identity).close();
      });
      assertEquals(openFdsTo(Deno.pid, "anon_inode:inotify").length, before);
    });
  },
);
