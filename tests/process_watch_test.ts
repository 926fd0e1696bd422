import { assert, assertEquals, assertThrows } from "@std/assert";
import { claimOf } from "../lib/claim.ts";
import { threadPidfds } from "../ffi/posix.ts";
import { ProcessWatch } from "../lib/liveness.ts";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { openFdsTo } from "./helpers/proc.ts";
import { runUnderFdLimit, spawnProgram } from "./helpers/spawn.ts";

const PIDFD = "anon_inode:[pidfd]";

testWith(
  [...NEEDS.children, requires("sleep")],
  "a listener that throws on a death leaves the others told, and its error is reported, not lost",
  async () => {
    await using peer = spawnProgram("sleep", ["60"]);
    using watch = new ProcessWatch(claimOf(peer.pid));
    const told: string[] = [];
    const reported: unknown[] = [];
    const onError = (event: ErrorEvent): void => {
      event.preventDefault();
      reported.push(event.error);
    };
    globalThis.addEventListener("error", onError);
    try {
      const { promise: lastTold, resolve } = Promise.withResolvers<void>();
      watch.onDeath(() => told.push("first"));
      watch.onDeath(() => {
        told.push("second");
        throw new Error("listener failed");
      });
      watch.onDeath(() => {
        told.push("third");
        resolve();
      });
      Deno.kill(peer.pid, "SIGKILL");
      await lastTold;
      assertEquals(told, ["first", "second", "third"]);
      assertEquals(reported.map((error) => (error as Error).message), ["listener failed"]);
      assert(!watch.alive);
    } finally {
      globalThis.removeEventListener("error", onError);
    }
  },
);

testWith(
  [...NEEDS.children, requires("sleep")],
  "a closed process watch throws BadResource from every method but close(), which is safe twice, and holds no pidfd",
  async () => {
    await using peer = spawnProgram("sleep", ["60"]);
    const before = openFdsTo(Deno.pid, PIDFD);
    const watch = new ProcessWatch(claimOf(peer.pid));
    let told = false;
    watch.onDeath(() => told = true);
    assert(watch.check());
    // Deno holds a pidfd of its own for each child it started: the watch's is the new one.
    const pidfds = openFdsTo(Deno.pid, PIDFD).filter((fd) => !before.includes(fd));
    assertEquals(pidfds.length, 1);
    const stillOpen = (): boolean => openFdsTo(Deno.pid, PIDFD).includes(pidfds[0]);
    watch.close();
    watch.close();
    for (const use of [() => watch.alive, () => watch.check(), () => watch.onDeath(() => {})]) {
      const error = assertThrows(use, Deno.errors.BadResource);
      assert(error.message.includes(`pid ${peer.pid}`), error.message);
    }
    // The pidfd closes once the poll call that watched it returned (a kick away).
    for (let turn = 0; turn < 100 && stillOpen(); turn++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert(!stillOpen(), "the watch's pidfd is still open");
    Deno.kill(peer.pid, "SIGKILL");
    await peer.status();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert(!told, "a closed watch told a death");
  },
);

testWith(
  [...NEEDS.children, requires("sh")],
  "whether a thread can be watched through a pidfd is not learnt while the process has no fd left: asked again once fds are back",
  async () => {
    const lines = await runUnderFdLimit("claims_without_fds.ts", ["thread-pidfds"], {
      permissions: ["--allow-ffi"],
    });
    // What this process learnt with fds free: true on Linux 6.9 and later.
    assertEquals(lines, ["at EMFILE: false", `after: ${threadPidfds()}`, "done"]);
  },
);
