/** PathWatch (lib/path_watch.ts) on real files: what it reports, and when. */
import { assert, assertEquals } from "@std/assert";
import { LOOK_MS, PathWatch } from "../lib/path_watch.ts";
import type { PathChange, PathWatchOptions } from "../lib/path_watch.ts";
import { listDirectory, readFileText, readLink, statPath } from "../ffi/posix.ts";
import { NEEDS, requires, skippedWithoutRoot, testWith } from "./helpers/permissions.ts";
import type { ChildProcess } from "./helpers/child_process.ts";
import { ROOT } from "./helpers/paths.ts";
import { spawnDenoAs, unusedUid } from "./helpers/system.ts";
import { withTempDir } from "./helpers/temp.ts";
import { delay, until } from "./helpers/waiting.ts";

/**
 * Runs `body` with the changes `watch` reported so far (collected as they come); closes the
 * watch after, and waits for its `changes()` to end.
 */
async function watching(
  watch: PathWatch,
  body: (seen: PathChange[]) => Promise<void>,
): Promise<void> {
  const seen: PathChange[] = [];
  const ended = (async () => {
    for await (const change of watch.changes()) seen.push(change);
  })();
  try {
    await body(seen);
  } finally {
    await watch.close();
    await ended;
  }
}

/**
 * Runs `body` with a watch of the file `DIR/run/state` made in a temporary directory, and the
 * changes it reported so far; closes the watch after.
 */
async function withWatch(
  body: (dir: string, seen: PathChange[], watch: PathWatch) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    Deno.mkdirSync(`${dir}/run`, { mode: 0o700 });
    const path = `${dir}/run/state`;
    Deno.writeTextFileSync(path, "0\n");
    const watch = new PathWatch(path, statPath(path)?.identity ?? "");
    await watching(watch, (seen) => body(dir, seen, watch));
  });
}

testWith(
  NEEDS.files,
  "PathWatch reports a path removed when its directory is moved away, and nothing more from the moved one",
  async () => {
    await withWatch(async (dir, seen, watch) => {
      Deno.renameSync(`${dir}/run`, `${dir}/run.old`);
      Deno.mkdirSync(`${dir}/run`, { mode: 0o700 });
      await until(() => seen.length > 0, "the move reported");
      assertEquals(seen, ["removed"]);
      assertEquals(watch.status(), "removed");
      // The moved directory's own events are not about the path any more.
      Deno.removeSync(`${dir}/run.old/state`);
      Deno.writeTextFileSync(`${dir}/run.old/state`, "1\n");
      await delay(200);
      assertEquals(seen, ["removed"]);
    });
  },
);

testWith(
  NEEDS.files,
  "PathWatch told to watch an ancestor reports a path removed when the directory above its own is moved away; one not told hears nothing",
  async () => {
    await withTempDir(async (dir) => {
      Deno.mkdirSync(`${dir}/runtime/claims`, { recursive: true, mode: 0o700 });
      const path = `${dir}/runtime/claims/record`;
      Deno.writeTextFileSync(path, "");
      const identity = statPath(path)?.identity ?? "";
      const told = new PathWatch(path, identity, { ancestors: 1 });
      const untold = new PathWatch(path, identity);
      const seen: Record<string, PathChange[]> = { told: [], untold: [] };
      const ended = Object.entries({ told, untold }).map(async ([name, watch]) => {
        for await (const change of watch.changes()) seen[name].push(change);
      });
      try {
        Deno.renameSync(`${dir}/runtime`, `${dir}/runtime.old`);
        Deno.mkdirSync(`${dir}/runtime`, { mode: 0o700 });
        await until(() => seen.told.length > 0, "the move reported");
        await delay(200);
        assertEquals(seen, { told: ["removed"], untold: [] });
        assertEquals(told.status(), "removed");
        // Moved back: the path names its inode again, which the moved directory's watch hears.
        Deno.removeSync(`${dir}/runtime`);
        Deno.renameSync(`${dir}/runtime.old`, `${dir}/runtime`);
        await until(() => seen.told.length > 1, "the move back reported");
        assertEquals(seen.told, ["removed", "restored"]);
      } finally {
        await Promise.all([told.close(), untold.close()]);
        await Promise.all(ended);
      }
    });
  },
);

testWith(
  NEEDS.files,
  "PathWatch told to watch an ancestor that is its own directory again (a path with /./ in it) still hears the path removed",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/./state`;
      Deno.writeTextFileSync(path, "0\n");
      // The directory above `DIR/.` is DIR itself: watched a second time, it kept only the
      // ancestor's events, and the removal went unheard.
      const watch = new PathWatch(path, statPath(path)?.identity ?? "", { ancestors: 1 });
      await watching(watch, async (seen) => {
        Deno.removeSync(path);
        await until(() => seen.length > 0, "the removal reported");
        assertEquals(seen, ["removed"]);
      });
    });
  },
);

testWith(
  NEEDS.files,
  "PathWatch reports a path restored when its directory is moved away and back",
  async () => {
    await withWatch(async (dir, seen) => {
      Deno.renameSync(`${dir}/run`, `${dir}/run.old`);
      await until(() => seen.length > 0, "the move reported");
      Deno.renameSync(`${dir}/run.old`, `${dir}/run`);
      await until(() => seen.length > 1, "the move back reported");
      assertEquals(seen, ["removed", "restored"]);
    });
  },
);

testWith(
  NEEDS.files,
  "PathWatch whose event queue overflowed looks at the path: a removal lost in the flood is reported, and no change of an inode it does not watch",
  async () => {
    const queued = Number(readFileText("/proc/sys/fs/inotify/max_queued_events") ?? "16384");
    await withWatch(async (dir, seen) => {
      // All in one turn of the event loop: the watch reads nothing until the queue is full.
      for (let i = 0; i <= queued; i++) {
        const other = `${dir}/run/other`;
        Deno.writeTextFileSync(other, "");
        Deno.removeSync(other);
        if (i === queued >> 1) Deno.removeSync(`${dir}/run/state`);
      }
      await until(() => seen.length > 0, "the removal reported");
      await delay(100);
      assertEquals(seen, ["removed"]);
    });
  },
);

/**
 * `DIR/run`, the user `uid`'s and mode 0300 (enter and write, not read: inotify cannot watch
 * it), with the user's file `state` in it.
 */
function unreadableDirectory(dir: string, uid: number): { directory: string; path: string } {
  const directory = `${dir}/run`;
  const path = `${directory}/state`;
  Deno.mkdirSync(directory);
  Deno.writeTextFileSync(path, "0\n");
  Deno.chownSync(path, uid, uid);
  Deno.chmodSync(directory, 0o300);
  Deno.chownSync(directory, uid, uid);
  return { directory, path };
}

/** `tests/fixtures/path_watch_looking.ts` on `path`, run as `uid`, once it says it looks. */
async function lookingWatch(dir: string, uid: number, path: string): Promise<ChildProcess> {
  const watcher = spawnDenoAs(uid, dir, {
    script: `${ROOT}tests/fixtures/path_watch_looking.ts`,
    args: [path],
    permissions: ["--allow-ffi"],
  });
  try {
    await watcher.waitFor(/^looking: true$/);
    return watcher;
  } catch (error) {
    await watcher[Symbol.asyncDispose]();
    throw error;
  }
}

/**
 * Moves another file onto `path` in `directory`, then removes it: the looking watch's fixture
 * tells both, closes its watch and ends, exit 0.
 */
async function replaceThenRemove(
  directory: string,
  path: string,
  watcher: ChildProcess,
): Promise<void> {
  Deno.writeTextFileSync(`${directory}/other`, "1\n");
  Deno.renameSync(`${directory}/other`, path);
  await watcher.waitFor(/^replaced$/);
  Deno.removeSync(path);
  await watcher.waitFor(/^removed$/);
  await watcher.waitFor(/^ended$/);
  assertEquals((await watcher.status()).code, 0, watcher.transcript);
}

testWith(
  [...NEEDS.system, requires("setpriv")],
  "PathWatch in a directory its user may enter but not read (0300), which inotify cannot watch, looks at the path instead: nothing for the directory closed (0000) and opened again, a chmod, a replacement, a removal, and a close that ends it",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the watch as another user")) return;
    const user = unusedUid();
    await withTempDir(async (dir) => {
      const { directory, path } = unreadableDirectory(dir, user);
      await using watcher = await lookingWatch(dir, user, path);
      // Closed to the user for two looks, then open again: the path itself did not change.
      Deno.chmodSync(directory, 0o000);
      await delay(2 * LOOK_MS + 100);
      Deno.chmodSync(directory, 0o300);
      await delay(2 * LOOK_MS + 100);
      assertEquals(watcher.matching(/^modified$/), [], watcher.transcript);
      Deno.chmodSync(path, 0o640);
      await watcher.waitFor(/^modified$/);
      await replaceThenRemove(directory, path, watcher);
    });
  },
);

testWith(
  NEEDS.files,
  "PathWatch looking at a path whose directory is missing (lookWhenUnwatched) watches the directory once it is made, and looks again once it is removed: a file put at the path in the directory made again is told",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/run/state`;
      // An inode the path never names: each file put there is a replacement.
      Deno.writeTextFileSync(`${dir}/watched`, "0\n");
      const watch = new PathWatch(path, statPath(`${dir}/watched`)?.identity ?? "", {
        directoryMayBeMissing: true,
        lookWhenUnwatched: true,
      });
      await watching(watch, async (seen) => {
        Deno.mkdirSync(`${dir}/run`, { mode: 0o700 });
        Deno.writeTextFileSync(path, "1\n");
        // Told by the look that takes the directory's watch, or by that watch.
        await until(() => seen.length === 1, "the file told");
        Deno.removeSync(`${dir}/run`, { recursive: true });
        await until(() => seen.length === 2, "the removal told");
        Deno.mkdirSync(`${dir}/run`, { mode: 0o700 });
        Deno.writeTextFileSync(path, "2\n");
        await until(() => seen.length === 3, "the file in the directory made again told");
        assertEquals(seen, ["replaced", "removed", "replaced"]);
      });
    });
  },
);

/**
 * Runs `body` with a watch told `lookWhenUnwatched` of the file `DIR/run/state`, made while it
 * is there, and the changes it reported so far; closes the watch after.
 */
async function withLookingWatch(
  body: (dir: string, seen: PathChange[], watched: () => number) => Promise<void>,
  options: PathWatchOptions = {},
): Promise<void> {
  await withTempDir(async (dir) => {
    Deno.mkdirSync(`${dir}/run`, { mode: 0o700 });
    const path = `${dir}/run/state`;
    Deno.writeTextFileSync(path, "0\n");
    let watchedAgain = 0;
    const watch = new PathWatch(path, statPath(path)?.identity ?? "", {
      directoryMayBeMissing: true,
      lookWhenUnwatched: true,
      onWatched: () => watchedAgain++,
      ...options,
    });
    assert(!watch.looking, "the directory is watched from the start");
    await watching(watch, (seen) => body(dir, seen, () => watchedAgain));
  });
}

testWith(
  NEEDS.files,
  "PathWatch told lookWhenUnwatched, its directory watched from the start, looks again once the directory is removed: a file put in a directory made anew is told, and a change of it after",
  async () => {
    await withLookingWatch(async (dir, seen, watched) => {
      Deno.removeSync(`${dir}/run`, { recursive: true });
      await until(() => seen.length === 1, "the removal told");
      Deno.mkdirSync(`${dir}/run`, { mode: 0o700 });
      Deno.writeTextFileSync(`${dir}/run/state`, "1\n");
      await until(() => seen.length === 2, "the file in the directory made anew told");
      assertEquals(watched(), 1, "the directory made anew is watched, not only looked at");
      Deno.removeSync(`${dir}/run/state`);
      await until(() => seen.length === 3, "the file's removal told");
      assertEquals(seen, ["removed", "replaced", "removed"]);
    });
  },
);

testWith(
  NEEDS.files,
  "PathWatch told lookWhenUnwatched sees its directory removed while the file removed in it is held open (rm -r under the running system), which the directory's watch hears of only once the file is closed",
  async () => {
    await withLookingWatch(async (dir, seen, watched) => {
      using _held = Deno.openSync(`${dir}/run/state`);
      const removed = inodeOf(`${dir}/run`);
      Deno.removeSync(`${dir}/run`, { recursive: true });
      await until(() => seen.length === 1, "the removal told");
      Deno.mkdirSync(`${dir}/run`, { mode: 0o700 });
      Deno.writeTextFileSync(`${dir}/run/state`, "1\n");
      await until(() => seen.length === 2, "the file in the directory made anew told");
      assertEquals(watched(), 1, "the directory made anew is watched");
      const inodes = watchedInodes();
      assert(!inodes.includes(removed), "the removed directory is still watched");
      assert(inodes.includes(inodeOf(`${dir}/run`)), "the new directory is not watched");
      assertEquals(seen, ["removed", "replaced"]);
      // Again, from a directory made anew whose file is held open (the launcher's FIFO, say)
      // and that was watched while the path named nothing.
      Deno.removeSync(`${dir}/run/state`);
      await until(() => seen.length === 3, "the second removal told");
      using _other = Deno.openSync(`${dir}/run/other`, { write: true, create: true });
      Deno.removeSync(`${dir}/run`, { recursive: true });
      Deno.mkdirSync(`${dir}/run`, { mode: 0o700 });
      await until(() => watched() === 2, "the second directory made anew watched");
      // That one removed as silently, before anything came to the path: still looked at.
      using _another = Deno.openSync(`${dir}/run/other`, { write: true, create: true });
      Deno.removeSync(`${dir}/run`, { recursive: true });
      Deno.mkdirSync(`${dir}/run`, { mode: 0o700 });
      await until(() => watched() === 3, "the third directory made anew watched");
      Deno.writeTextFileSync(`${dir}/run/state`, "2\n");
      await until(() => seen.length === 4, "the file in the third directory made anew told");
      assertEquals(seen, ["removed", "replaced", "removed", "replaced"]);
    });
  },
);

testWith(
  NEEDS.files,
  "PathWatch told lookWhenUnwatched stops following its directory moved away: a directory made in its place is looked into, and the moved one's events are not the path's",
  async () => {
    await withLookingWatch(async (dir, seen, watched) => {
      const moved = inodeOf(`${dir}/run`);
      Deno.renameSync(`${dir}/run`, `${dir}/run.old`);
      await until(() => seen.length === 1, "the move told");
      Deno.mkdirSync(`${dir}/run`, { mode: 0o700 });
      Deno.writeTextFileSync(`${dir}/run/state`, "1\n");
      await until(() => seen.length === 2, "the file in the directory made in its place told");
      assertEquals(watched(), 1, "the directory made in its place is watched");
      const inodes = watchedInodes();
      assert(!inodes.includes(moved), "the moved directory is still watched");
      assert(inodes.includes(inodeOf(`${dir}/run`)), "the new directory is not watched");
      Deno.removeSync(`${dir}/run.old/state`);
      await delay(LOOK_MS + 200);
      assertEquals(seen, ["removed", "replaced"]);
    });
  },
);

testWith(
  NEEDS.files,
  "PathWatch told lookWhenUnwatched tells a path restored when its directory is moved away and back",
  async () => {
    await withLookingWatch(async (dir, seen) => {
      Deno.renameSync(`${dir}/run`, `${dir}/run.old`);
      await until(() => seen.length === 1, "the move told");
      Deno.renameSync(`${dir}/run.old`, `${dir}/run`);
      await until(() => seen.length === 2, "the move back told");
      Deno.removeSync(`${dir}/run/state`);
      await until(() => seen.length === 3, "the removal in the directory moved back told");
      assertEquals(seen, ["removed", "restored", "removed"]);
    });
  },
);

/** The inode number of `path`. */
function inodeOf(path: string): number {
  return Number(statPath(path)?.lockIdentity.split(":").pop());
}

/** The inodes every inotify fd of this process watches (from /proc/self/fdinfo). */
function watchedInodes(): number[] {
  return listDirectory("/proc/self/fd")
    .filter((fd) => readLinkOrEmpty(`/proc/self/fd/${fd}`) === "anon_inode:inotify")
    .flatMap((fd) =>
      [...(readFileText(`/proc/self/fdinfo/${fd}`) ?? "").matchAll(
        /^inotify wd:\S+ ino:([0-9a-f]+)/gm,
      )]
        .map((match) => parseInt(match[1], 16))
    );
}

/** The target of the link `path`, or nothing for an fd closed since it was listed. */
function readLinkOrEmpty(path: string): string {
  try {
    return readLink(path);
  } catch {
    return ""; // closed since it was listed
  }
}

/**
 * A watch of `DIR/top/run/state` told `lookWhenUnwatched` and to watch one ancestor, after `top`
 * was moved away and made anew with a new file at the path (both changes told); then `body`.
 */
async function afterAncestorMovedAndMadeAnew(
  body: (seen: PathChange[], dir: string, watch: PathWatch) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    Deno.mkdirSync(`${dir}/top/run`, { recursive: true, mode: 0o700 });
    const path = `${dir}/top/run/state`;
    Deno.writeTextFileSync(path, "0\n");
    const watch = new PathWatch(path, statPath(path)?.identity ?? "", {
      directoryMayBeMissing: true,
      lookWhenUnwatched: true,
      ancestors: 1,
    });
    await watching(watch, async (seen) => {
      Deno.renameSync(`${dir}/top`, `${dir}/top.old`);
      await until(() => seen.length === 1, "the move told");
      Deno.mkdirSync(`${dir}/top/run`, { recursive: true, mode: 0o700 });
      Deno.writeTextFileSync(path, "1\n");
      await until(() => seen.length === 2, "the file in the directory made anew told");
      await body(seen, dir, watch);
    });
  });
}

testWith(
  NEEDS.files,
  "PathWatch told lookWhenUnwatched and to watch an ancestor looks again once the ancestor is moved away: a file put where the path's directory is made anew is told",
  async () => {
    await afterAncestorMovedAndMadeAnew((seen) => {
      assertEquals(seen, ["removed", "replaced"]);
      return Promise.resolve();
    });
  },
);

testWith(
  NEEDS.files,
  "PathWatch told lookWhenUnwatched and to watch an ancestor watches the ancestor made anew too: a second move of it is told",
  async () => {
    await afterAncestorMovedAndMadeAnew(async (seen, dir, watch) => {
      Deno.renameSync(`${dir}/top`, `${dir}/top.older`);
      await until(() => seen.length === 3, "the second move told");
      assertEquals(seen, ["removed", "replaced", "removed"]);
      assertEquals(watch.status(), "removed");
    });
  },
);

testWith(
  NEEDS.files,
  "PathWatch told lookWhenUnwatched whose directory is moved away and a file put in its place tells the path removed, and goes on: no NotADirectory",
  async () => {
    await withLookingWatch(async (dir, seen) => {
      Deno.renameSync(`${dir}/run`, `${dir}/run.old`);
      Deno.writeTextFileSync(`${dir}/run`, "a file where the directory was\n");
      await until(() => seen.length === 1, "the move told");
      await delay(LOOK_MS + 200); // a look through the file
      Deno.removeSync(`${dir}/run`);
      Deno.mkdirSync(`${dir}/run`, { mode: 0o700 });
      Deno.writeTextFileSync(`${dir}/run/state`, "1\n");
      await until(() => seen.length === 2, "the file in the directory made in its place told");
      assertEquals(seen, ["removed", "replaced"]);
    });
  },
);

testWith(
  NEEDS.files,
  "PathWatch told lookWhenUnwatched and attributes tells no change of the path's mode when its directory is moved away and back, and a chmod made meanwhile once",
  async () => {
    await withLookingWatch(async (dir, seen) => {
      Deno.renameSync(`${dir}/run`, `${dir}/run.old`);
      await until(() => seen.length === 1, "the move told");
      Deno.renameSync(`${dir}/run.old`, `${dir}/run`);
      await until(() => seen.length === 2, "the move back told");
      assertEquals(seen, ["removed", "restored"]);
      Deno.renameSync(`${dir}/run`, `${dir}/run.old`);
      await until(() => seen.length === 3, "the second move told");
      Deno.chmodSync(`${dir}/run.old/state`, 0o640);
      Deno.renameSync(`${dir}/run.old`, `${dir}/run`);
      await until(() => seen.length === 5, "the chmod and the move back told");
      assertEquals(seen, ["removed", "restored", "removed", "modified", "restored"]);
    }, { attributes: true });
  },
);

/** The fds this process holds open now, by number (read through FFI: Deno asks --allow-all). */
function openFds(): string[] {
  return listDirectory("/proc/self/fd").sort();
}

testWith(
  NEEDS.files,
  "PathWatch closed while it looks, its wait on the inotify fd in flight, ends its changes() at once, looks no more and leaves no fd open",
  async () => {
    await withTempDir(async (dir) => {
      Deno.writeTextFileSync(`${dir}/watched`, "0\n");
      const before = openFds();
      const watch = new PathWatch(`${dir}/run/state`, statPath(`${dir}/watched`)?.identity ?? "", {
        directoryMayBeMissing: true,
        lookWhenUnwatched: true,
      });
      const seen: PathChange[] = [];
      let ended = false;
      const changes = (async () => {
        for await (const change of watch.changes()) seen.push(change);
        ended = true;
      })();
      // Past the first look: the next one is timed, the fd's wait goes on across it.
      await delay(LOOK_MS * 1.5);
      assert(!ended);
      await watch.close();
      // Not at the next look: the close's own wake-up (a timer left behind fails the test).
      await until(() => ended, "changes() ended by the close");
      await changes;
      assertEquals(openFds(), before, "the inotify fd closed");
      Deno.mkdirSync(`${dir}/run`, { mode: 0o700 });
      Deno.writeTextFileSync(`${dir}/run/state`, "1\n");
      await delay(LOOK_MS + 200);
      assertEquals(seen, [], "nothing told after the close");
      await watch.close(); // twice: nothing
    });
  },
);

testWith(
  [...NEEDS.system, requires("setpriv")],
  "PathWatch looking at a path (a 0300 directory) watches it again once a chmod lets its user read the directory, and still tells a replacement and a removal",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the watch as another user")) return;
    const user = unusedUid();
    await withTempDir(async (dir) => {
      const { directory, path } = unreadableDirectory(dir, user);
      await using watcher = await lookingWatch(dir, user, path);
      Deno.chmodSync(directory, 0o700);
      // The next look finds it may be watched.
      await watcher.waitFor(/^looking: false$/);
      await replaceThenRemove(directory, path, watcher);
      assertEquals(
        watcher.matching(/^modified$/),
        [],
        "the chmod is the directory's, not the path's",
      );
    });
  },
);

testWith(
  [...NEEDS.system, requires("setpriv")],
  "PathWatch looking at a path (a 0300 directory) for long keeps its memory flat: 100 000 looks with nothing changing grow the heap by next to nothing",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the watch as another user")) return;
    const user = unusedUid();
    await withTempDir(async (dir) => {
      const { path } = unreadableDirectory(dir, user);
      await using watcher = spawnDenoAs(user, dir, {
        script: `${ROOT}tests/fixtures/path_watch_looks.ts`,
        args: [path, "100000"],
        permissions: ["--allow-ffi", "--v8-flags=--expose-gc"],
      });
      await watcher.waitFor(/^looking: true$/);
      const [, bytes] = (await watcher.waitFor(/^bytes per look: (-?\d+)$/)).match;
      // A race of the inotify fd's wait against each look added a reaction to that wait (about
      // 300 bytes) every look, kept while nothing came on the fd: 50 MB a day.
      assert(Number(bytes) < 30, `${bytes} bytes per look\n${watcher.transcript}`);
      await watcher.waitFor(/^changes: $/);
      await watcher.waitFor(/^ended$/);
      assertEquals((await watcher.status()).code, 0, watcher.transcript);
    });
  },
);
