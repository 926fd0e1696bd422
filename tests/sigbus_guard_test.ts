/**
 * A file or shared-memory object another process shrinks under a mapping (`truncate`, `echo >`)
 * must not kill the process (`ffi/sigbus_guard.ts`), and a fault that is not the guard's must
 * still end it as before. Each case runs in a child: a failure kills the child, not the tests.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { TESTS_DIR } from "./helpers/paths.ts";
import { NEEDS, requires, skippedWithoutRoot, testWith } from "./helpers/permissions.ts";
import type { ChildProcess } from "./helpers/child_process.ts";
import { denoCommand, spawnDeno, spawnProgram } from "./helpers/spawn.ts";
import { withMount, withShmName, withTempDir } from "./helpers/temp.ts";
import { delay, within } from "./helpers/waiting.ts";
import { openFileRegion } from "../mod.ts";

const FIXTURE = `${TESTS_DIR}fixtures/shrunk_mapping.ts`;

/** Runs the fixture; returns its status and stdout lines. */
function shrunk(
  args: string[],
): Promise<{ status: Deno.CommandStatus & { stderr: string }; lines: string[] }> {
  // --allow-all: it runs truncate on paths of its own, /proc/PID/fd/N among them.
  return output(spawnDeno(FIXTURE, args, { permissions: ["--allow-all"] }));
}

/** Waits for the child to end; returns its status and stdout lines. */
async function output(
  started: ChildProcess,
): Promise<{ status: Deno.CommandStatus & { stderr: string }; lines: string[] }> {
  await using child = started;
  const status = await child.status();
  const lines = child.lines.filter((line) => line.stream === "stdout").map((line) => line.text);
  return { status, lines };
}

/** The fixture was not ended by a signal (SIGBUS, most likely); says what it printed if it was. */
function assertNotKilled(status: Deno.CommandStatus, lines: string[]): void {
  assertEquals(status.signal, null, `killed by ${status.signal}: ${lines.join(" | ")}`);
}

/** What a guarded mapping does once its object shrank to nothing. */
function assertSurvived(result: { status: Deno.CommandStatus; lines: string[] }): void {
  const { status, lines } = result;
  assertNotKilled(status, lines);
  assertEquals(status.code, 0, lines.join(" | "));
  assertEquals(lines.slice(0, 4), [
    "lost 0",
    "shrunk",
    `read "\\u0000\\u0000\\u0000\\u0000\\u0000"`, // past the end: a zero page of its own
    `wrote "again"`, // its own page: the write stays in the process
  ]);
  // One page past the end was touched: the region counts it, the process-wide count too.
  const [, faults, lost] = /^faults (\d+), lost (\d+)$/.exec(lines[4] ?? "") ?? [];
  assertEquals(Number(lost), 1, lines[4]);
  assert(Number(faults) >= 1, lines[4]);
  assertEquals(lines[5], "closed");
}

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "a file region truncated by another process: reads past the end see zeros, nothing dies, the file stays as the user left it",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/state.dat`;
      assertSurvived(await shrunk(["file", path]));
      assertEquals(Deno.statSync(path).size, 0, "the process wrote into the file the user shrank");
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate"), requires("stat")],
  "a POSIX shared-memory region truncated by another process: nothing dies",
  async () => {
    await withShmName(async (name) => {
      assertSurvived(await shrunk(["shm", name]));
      // Read by another process: a Deno process may stat /dev only with --allow-all.
      const size = await new Deno.Command("stat", { args: ["-c", "%s", `/dev/shm${name}`] })
        .output();
      assertEquals(new TextDecoder().decode(size.stdout).trim(), "0");
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "a Worker's guard and the main thread's both hold: each thread's shrunk file is survived",
  async () => {
    await withTempDir(async (dir) => {
      const { status, lines } = await shrunk(["worker", `${dir}/state.dat`]);
      assertNotKilled(status, lines);
      assertEquals(lines, [
        "worker read 0, lost 1",
        "shrunk",
        `read "\\u0000\\u0000\\u0000\\u0000\\u0000", lost 1`,
      ]);
      assertEquals(status.code, 0);
    });
  },
);

/** What a structure over a file that lost `pages` pages throws, as the fixture prints it. */
function lostPageError(what: string, path: string, pages = 1): string {
  const lost = pages === 1
    ? "a page of it no longer reaches"
    : `${pages} pages of it no longer reach`;
  return `UnexpectedEof: Cannot use ${what} ${JSON.stringify(path)}: ${lost} ` +
    "the file or object: it was shrunk under the mapping (truncate?); open it again";
}

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "a state cell whose file was truncated fails with UnexpectedEof naming the file, not with zeros",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/state.dat`;
      const { status, lines } = await shrunk(["cell", path]);
      assertNotKilled(status, lines);
      const why = lostPageError("the state cell in", path);
      assertEquals(lines, [
        "read: 1",
        "shrunk",
        `read: ${why}`, // the read itself met the lost page, and says so
        `write: ${why}`,
        "wait: UnexpectedEof",
        "lost 1",
      ]);
      assertEquals(status.code, 0);
      assertEquals(Deno.statSync(path).size, 0, "the process wrote into the file the user shrank");
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "a state cell whose file was truncated: a wait that meets the lost page first fails with UnexpectedEof, and never returns the zeros it read as a change",
  async () => {
    await withTempDir(async (dir) => {
      const firsts = ["waitForChange", "waitForChange-signal", "waitForChangeSync", "changes"];
      await inBatches(firsts, 4, async (first) => {
        const path = `${dir}/${first}.dat`;
        const { status, lines } = await shrunk(["cell", path, first]);
        assertNotKilled(status, lines);
        const why = lostPageError("the state cell in", path);
        // Before the fix the async waits returned 0, a value no writer wrote.
        assertEquals(lines, ["shrunk", `${first}: ${why}`, `read: ${why}`, "lost 1"], first);
        assertEquals(status.code, 0, first);
      });
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "a ring whose file was truncated: the call that meets the lost header fails with UnexpectedEof, and every call after it",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/ring.dat`;
      const { status, lines } = await shrunk(["ring", path]);
      assertNotKilled(status, lines);
      const why = lostPageError("the ring in", path);
      assertEquals(lines, [
        "send: true",
        "shrunk",
        `receive: ${why}`, // not "undefined": the zeros it read there are not an empty ring
        `send: ${why}`,
        "lost 1",
      ]);
      assertEquals(status.code, 0);
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "a ring whose file was truncated between a waiting record's length and its message: the receive that copies the zeros says UnexpectedEof",
  async () => {
    await withTempDir(async (dir) => {
      const { status, lines } = await shrunk(["ring-straddle", `${dir}/ring.dat`]);
      assertNotKilled(status, lines);
      assertEquals(lines, ["shrunk", "tryReceiveInto: UnexpectedEof", "lost 1"], status.stderr);
      assertEquals(status.code, 0, status.stderr);
    });
  },
);

/** Every call that reads a message or writes one, as the first to meet a lost page. */
const FIRST_TO_MEET = [
  "tryReceive",
  "tryReceiveInto",
  "tryReceiveBatch",
  "tryReceiveBatchInto",
  "tryRead",
  "tryReadWith",
  "receive",
  "receiveInto",
  "receiveBatch",
  "readWith",
  "read",
  "trySend",
  "trySendBatch",
  "trySendWith",
  "tryReserve",
  "send",
];

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "a ring whose file was truncated: no call returns the zeros it met as a message, nor reports a send that reached no one",
  async () => {
    await withTempDir(async (dir) => {
      // A few children at a time: the aarch64 test VM runs them under emulation.
      await inBatches(FIRST_TO_MEET, 4, async (first) => {
        const path = `${dir}/${first}.dat`;
        const { status, lines } = await shrunk(["ring", path, first]);
        assertNotKilled(status, lines);
        const why = lostPageError("the ring in", path);
        assertEquals(lines, [
          "send: true",
          "send: true",
          "receive: 5",
          "shrunk",
          `${first}: ${why}`,
          `receive: ${why}`,
          `send: ${why}`,
          "lost 1",
        ], first);
        assertEquals(status.code, 0, first);
      });
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "a ring send that met a lost page never reaches a consumer: not when the producer closes, nor once the file is grown back",
  async () => {
    await withTempDir(async (dir) => {
      const { status, lines } = await shrunk(["ring-regrow", `${dir}/ring.dat`]);
      assertNotKilled(status, lines);
      const sent = /^sent (\d+)$/.exec(lines[0] ?? "")?.[1];
      assert(sent !== undefined && Number(sent) > 0, lines.join(" | "));
      // Before the fix the failed send's record was published with the producer's closed mark:
      // a zero-length message that was never sent.
      assertEquals(lines.slice(1), [
        "shrunk",
        "send: UnexpectedEof",
        `received ${sent}, then the end`,
      ], status.stderr);
      assertEquals(status.code, 0, status.stderr);
    });
  },
);

/** How a wait asleep on a page the file lost is ended, and what it then rejects with. */
const ENDS_OF_A_LOST_WAIT: readonly (readonly [string, string])[] = [
  ["cell-abort", "UnexpectedEof"],
  ["cell-close", "BadResource"],
  ["cell-region-close", "BadResource"],
  ["cell-death", "UnexpectedEof"],
  ["ring-abort", "UnexpectedEof"],
  ["ring-close", "BadResource"],
  ["region-abort", "AbortError"],
  // Nothing but the truncation: the library hears of it (inotify) and the wait looks again.
  ["cell-none", "UnexpectedEof"],
  ["ring-none", "UnexpectedEof"],
  ["region-none", "UnexpectedEof"],
  ["region-kick", "UnexpectedEof"],
];

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "a wait asleep when its file is truncated ends at once, by itself or at an abort, a close or the writer's death, though no wake-up on its word can reach it",
  async () => {
    await withTempDir(async (dir) => {
      const runs = ENDS_OF_A_LOST_WAIT.flatMap(([how, error]) =>
        ["hub", "fallback"].map((path) => ({ how, error, path }))
      );
      await inBatches(runs, 4, async ({ how, error, path }) => {
        const { status, lines } = await shrunk(["asleep", `${dir}/${how}-${path}.dat`, how, path]);
        assertNotKilled(status, lines);
        // Before the fix each of these was still waiting: the wake-up went to a page the
        // kernel no longer finds, and the wait had no other way to end. Without futex_waitv a
        // wait's call returns every 100 ms, and may find the lost page before the close comes.
        const ends = [
          `${how}: ${error}`,
          ...(path === "fallback" ? [`${how}: UnexpectedEof`] : []),
        ];
        assertEquals(lines[0], "shrunk", `${how} (${path}): ${status.stderr}`);
        assert(ends.includes(lines[1]), `${how} (${path}): ${lines.join(" | ")} ${status.stderr}`);
        assertEquals(lines.length, 2, `${how} (${path}): ${lines.join(" | ")}`);
        assertEquals(status.code, 0, status.stderr);
      });
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate"), requires("sh")],
  "a state cell's waitForChangeSync() asleep when another process truncates its file ends with UnexpectedEof within a period, with a writer or none",
  async () => {
    await withTempDir(async (dir) => {
      await inBatches(["writer", "none"], 2, async (writer) => {
        const { status, lines } = await shrunk(["asleep-sync", `${dir}/${writer}.dat`, writer]);
        assertNotKilled(status, lines);
        // Before the fix: TimedOut after 10 s, having woken every period meanwhile.
        assertEquals(
          lines,
          ["sync: UnexpectedEof", "ended in time"],
          `${writer}: ${status.stderr}`,
        );
        assertEquals(status.code, 0, status.stderr);
      });
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "two regions of one file share its inotify watch: closing one leaves the other hearing of a truncation, and closing both leaves no fd",
  async () => {
    await withTempDir(async (dir) => {
      const { status, lines } = await shrunk(["same-inode", `${dir}/state.dat`]);
      assertNotKilled(status, lines);
      assertEquals(lines, ["shrunk", "wait: UnexpectedEof", "inotify fds left: 0"], status.stderr);
      assertEquals(status.code, 0, status.stderr);
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a state cell's wait asleep while rm and mv replace its file: the writer still wakes it, the user's file stays",
  async () => {
    await withTempDir(async (dir) => {
      const { status, lines } = await shrunk(["unlinked", `${dir}/state.dat`]);
      assertNotKilled(status, lines);
      assertEquals(
        lines,
        ["removed", "replaced", "wait: returned 0", 'at the path: "1\\n"', "inotify fds left: 0"],
        status.stderr,
      );
      assertEquals(status.code, 0, status.stderr);
    });
  },
);

/** How few inotify instances the `unheard` fixture's user namespace allows (see below). */
const JAILED_INSTANCES = 4;
const JAIL_SCRIPT = `echo ${JAILED_INSTANCES} > /proc/sys/user/max_inotify_instances && exec "$@"`;

/**
 * Where the `unheard` fixture may use up every inotify instance it is allowed: "namespace", a
 * user namespace of its own whose limit is {@link JAILED_INSTANCES} (its instances also count
 * against the user's, but only that many: other processes of the user can still make theirs);
 * else "user", the user's own limit when it is low enough to use up (every process of the user
 * is then refused one for about half a second); else undefined (the test is ignored).
 */
function inotifyJail(): "namespace" | "user" | undefined {
  const granted = NEEDS.childrenAndFiles.every((name) =>
    Deno.permissions.querySync({ name }).state === "granted"
  );
  if (!granted) return undefined;
  try {
    const { success } = new Deno.Command("unshare", {
      args: ["--user", "--map-root-user", "sh", "-c", JAIL_SCRIPT, "sh", "true"],
      stdout: "null",
      stderr: "null",
    }).outputSync();
    if (success) return "namespace";
  } catch {
    // No unshare: try the user's own limit.
  }
  try {
    // Through cat: Deno wants --allow-all to read /proc/sys.
    const { stdout } = new Deno.Command("cat", {
      args: ["/proc/sys/fs/inotify/max_user_instances"],
      stderr: "null",
    }).outputSync();
    const limit = Number(new TextDecoder().decode(stdout));
    return limit > 0 && limit <= 1024 ? "user" : undefined;
  } catch {
    return undefined;
  }
}

const JAIL = inotifyJail();

Deno.test({
  name: JAIL === undefined
    ? "a state cell's wait asleep when its file shrinks ends when inotify cannot watch the file, as does one whose cell closes [ignored: needs --allow-run --allow-read --allow-write, and unshare --user or fs.inotify.max_user_instances <= 1024]"
    : `a state cell's wait asleep when its file shrinks ends when inotify cannot watch the file, as does one whose cell closes (${
      JAIL === "namespace"
        ? "the instances of a user namespace used up"
        : "the user's instances used up"
    })`,
  ignore: JAIL === undefined,
  async fn(): Promise<void> {
    await withTempDir(async (dir) => {
      const args = ["unheard", `${dir}/state.dat`];
      const { status, lines } = JAIL === "namespace"
        ? await output(spawnProgram("unshare", [
          ...["--user", "--map-root-user", "sh", "-c", JAIL_SCRIPT, "sh"],
          ...denoCommand(FIXTURE, args, ["--allow-all"]),
        ]))
        : await shrunk(args);
      assertNotKilled(status, lines);
      assertEquals(lines.length, 3, status.stderr);
      const refused = /^shrunk \((\d+) inotify instances, then refused: (.*)\)$/.exec(lines[0]);
      assert(refused !== null && refused[2] !== "none", lines[0]);
      if (JAIL === "namespace") assertEquals(Number(refused[1]), JAILED_INSTANCES, lines[0]);
      assertEquals(lines[1], "wait: UnexpectedEof", status.stderr);
      // Closing the cell ends its unheard wait too, and leaves nothing running.
      assertEquals(lines[2], "closed: BadResource", status.stderr);
      assertEquals(status.code, 0, status.stderr);
    });
  },
});

testWith(
  [...NEEDS.childrenAndFiles, requires("fallocate")],
  "a region's wait asleep while another process writes the file without shrinking it sleeps on to its timeout",
  async () => {
    await withTempDir(async (dir) => {
      const { status, lines } = await shrunk(["unshrunk", `${dir}/state.dat`]);
      assertNotKilled(status, lines);
      // Every change to the inode is heard; only a wait whose word changed or was lost looks.
      assertEquals(lines, ["fallocate ran", "wait: timed-out"], status.stderr);
      assertEquals(status.code, 0, status.stderr);
    });
  },
);

/** Runs `fn` on every item, at most `width` at a time. */
async function inBatches<T>(
  items: readonly T[],
  width: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  for (let start = 0; start < items.length; start += width) {
    await Promise.all(items.slice(start, start + width).map(fn));
  }
}

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "a state cell following a foreign writer, its file truncated: the follower Worker survives and the wait fails with UnexpectedEof",
  async () => {
    await withTempDir(async (dir) => {
      const { status, lines } = await shrunk(["follow", `${dir}/state.dat`]);
      assertNotKilled(status, lines);
      assertEquals(
        lines,
        ["followed 1", "shrunk", "wait: UnexpectedEof", "lost 1"],
        `exit ${status.code}: ${status.stderr}`,
      );
      assertEquals(status.code, 0);
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "the guard's table full: a mapping is refused with a clear error rather than left unguarded; one made once a slot is free is guarded",
  async () => {
    await withTempDir(async (dir) => {
      const { status, lines } = await shrunk(["full", `${dir}/state.dat`]);
      assertNotKilled(status, lines);
      // 1 MiB of table, three words a range after eight of header.
      assertEquals(lines, [
        "full after 49150 ranges of 49150",
        'late: Cannot map "PATH.late": 49150 mappings that another process could shrink are open ' +
        "in this process, as many as its SIGBUS guard can hold; close some",
        "shrunk",
        "first: read 0, lost 1",
      ]);
      assertEquals(status.code, 0);
      // The refused open removed the file it had made (create: true).
      assertEquals(
        await Deno.lstat(`${dir}/state.dat.late`).then(() => true, () => false),
        false,
      );
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "regions retired on close (they lent a view) give their guard slots back: 3000 of them, then a truncated file is survived",
  async () => {
    await withTempDir(async (dir) => {
      const { status, lines } = await shrunk(["retired", `${dir}/state.dat:3000`]);
      assertNotKilled(status, lines);
      assertEquals(lines, ["slots kept: 0", "shrunk", "read 0, lost 1"]);
      assertEquals(status.code, 0);
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "a large region shrunk to nothing, then every other page touched: the process survives as many faults as the kernel allows mappings",
  async () => {
    // Each page was replaced on its own, splitting the mapping in three, until the mappings
    // reached vm.max_map_count: the guard's mmap failed then, and SIGBUS ended the process. Now
    // the page and the rest of the range above it are replaced in one mapping at that point.
    const { status, lines } = await shrunk(["sparse"]);
    assertNotKilled(status, lines);
    assertEquals(status.code, 0, lines.join(" | "));
    if (lines[0]?.startsWith("skipped")) return;
    assertEquals(lines.length, 2, lines.join(" | "));
    assertEquals(lines[0], "shrunk");
    // Every page touched counts, the last ones with the rest of the range: fewer than all.
    assertMatch(lines[1], /^touched \d+, lost each touched and more, not all$/);
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "the guard's one-page mmap refused at the kernel's limit on mappings (ENOMEM, every other mapping in use): the faulting page and every page above it are replaced at once, the pages below still reach the file, nothing dies",
  async () => {
    await withTempDir(async (dir) => {
      // The fixture uses up vm.max_map_count but for one mapping, where a page replaced alone
      // takes two; a page with room for two takes three faults more for the pages above it.
      const { status, lines } = await shrunk(["map-limit", `${dir}/state.dat`]);
      assertNotKilled(status, lines);
      assertEquals(status.code, 0, `${lines.join(" | ")}: ${status.stderr}`);
      if (lines[0]?.startsWith("skipped")) return;
      assertEquals(lines, [
        "shrunk",
        "read 0, then 0 0 0 in 0 faults more",
        "below: kept!, lost 4",
      ]);
    });
  },
);

testWith(
  NEEDS.files,
  "a wait asleep on a page past a shrunk file's end ends once the shrink is heard, a fault lower down already taken",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/state.dat`;
      using region = openFileRegion(path, { create: true, size: 65_536 });
      const waiting = region.waitInt32(65_532, 0).then(
        (result) => result,
        (error: Error) => error.name,
      );
      await delay(50);
      Deno.truncateSync(path, 0);
      // Before the loop reads the inotify event: a page of the region is lost by then.
      region.read(0, 1);
      assertEquals(await within(waiting, 5_000), "UnexpectedEof");
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "a Worker that installs its guard while the main thread installs its own stays in the chain: its shrunk memfd is survived",
  async () => {
    // The main thread read the handler in place, the Worker put its own there, and the main
    // thread's then replaced it, chaining to the one read before: the Worker's faults reached
    // no guard and SIGBUS ended the process (8 Workers mapping at once: 1 run in 40).
    const { status, lines } = await shrunk(["racing"]);
    assertNotKilled(status, lines);
    assertEquals(lines, ["installed: true", "worker read 0, lost 1"]);
    assertEquals(status.code, 0);
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("mount"), requires("umount")],
  "a SIGBUS that is no shrink (a hole in a full tmpfs) costs its page alone: a page above it still reaches the file",
  async (t) => {
    if (await skippedWithoutRoot(t, "to mount a small tmpfs")) return;
    await withTempDir(async (dir) => {
      await withMount(dir, "tmpfs", async (small) => {
        const { status, lines } = await shrunk(["hole", `${small}/state.dat`]);
        assertNotKilled(status, lines);
        // Replacing every page above the fault, the guard cut page 10 off the file: it read
        // zeros, and the write stayed in the process.
        assertEquals(lines, ["page 10: hello, lost 1", "file: 16 pages, WORLD"], status.stderr);
        assertEquals(status.code, 0);
      }, "size=256k");
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("truncate")],
  "a fault outside the library's mappings still ends the process with SIGBUS, the guard installed",
  async () => {
    const { status, lines } = await shrunk(["foreign"]);
    assertEquals(lines, ["shrunk"]);
    assertEquals(status.signal, "SIGBUS", `exit code ${status.code}`);
  },
);
