import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertMatch,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { assertThrowsWith } from "./helpers/assertions.ts";
import { writeAndLeave } from "./helpers/fifo.ts";
import { NEEDS, requires, skippedWithoutRoot, testWith } from "./helpers/permissions.ts";
import { killIfRunning, openFdCount, waitingForWriter } from "./helpers/proc.ts";
import { removeTree, withTempDir } from "./helpers/temp.ts";
import { delay, until } from "./helpers/waiting.ts";
import { runUnderFdLimit, spawnProgram } from "./helpers/spawn.ts";
import {
  type FifoEvent,
  type IgnoredInput,
  MAX_LINE_BYTES,
  openFifoButton,
  refuseIfRead,
  type TakenFifo,
} from "../hw/fifo_button.ts";
import { describeFifoEvent, describeTakenFifo } from "../producers/button.ts";
import { bytesWaiting, closeFd, effectiveUid, makeFifo, openPath, statPath } from "../ffi/posix.ts";
import * as C from "../ffi/constants.ts";

/** Counts presses in the background until stopped. */
function countPresses(
  button: ReturnType<typeof openFifoButton>,
): { count: () => number; stop: () => Promise<void> } {
  const controller = new AbortController();
  let presses = 0;
  const done = (async () => {
    for await (const _ of button.presses(controller.signal)) presses++;
  })();
  return {
    count: () => presses,
    stop: async () => {
      controller.abort();
      await done;
    },
  };
}

async function settle(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await delay(10);
}

/** Writes one press into the FIFO at `path`; it must be counted, and then the counting stops. */
async function pressOnce(
  path: string,
  presses: { count: () => number; stop: () => Promise<void> },
): Promise<void> {
  await writeAndLeave(path, "0\n");
  await settle(() => presses.count() === 1);
  await presses.stop();
  assertEquals(presses.count(), 1);
}

testWith(NEEDS.files, "openFifoButton() creates a 0600 FIFO and removes it on close", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/button.fifo`;
    const button = openFifoButton(path);
    const stat = Deno.lstatSync(path);
    assert(stat.isFifo);
    assertEquals((stat.mode ?? 0) & 0o777, 0o600);
    await button.close();
    await button.close();
    assertThrows(() => Deno.lstatSync(path), Deno.errors.NotFound);
  });
});

testWith(
  NEEDS.files,
  "openFifoButton() adopts an idle FIFO of ours and leaves it when closed",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      await new Deno.Command("mkfifo", { args: ["-m", "600", path] }).output();
      const button = openFifoButton(path);
      await button.close();
      assert(Deno.lstatSync(path).isFifo, "a FIFO it did not create was removed");
    });
  },
);

testWith(
  NEEDS.files,
  "openFifoButton() refuses a FIFO another reader holds, naming its pid",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      const first = openFifoButton(path);
      try {
        assertThrowsWith(() => openFifoButton(path), Deno.errors.Busy, path, `pid ${Deno.pid}`);
      } finally {
        await first.close();
      }
      assertThrows(() => Deno.lstatSync(path), Deno.errors.NotFound);
    });
  },
);

testWith(
  NEEDS.files,
  "openFifoButton() refuses a regular file or a symlink and leaves it alone",
  async () => {
    await withTempDir((dir) => {
      const file = `${dir}/file`;
      Deno.writeTextFileSync(file, "keep me");
      assertThrowsWith(() => openFifoButton(file), Deno.errors.AlreadyExists, file, "a file");
      const link = `${dir}/link`;
      Deno.symlinkSync(file, link);
      assertThrowsWith(() => openFifoButton(link), Deno.errors.FilesystemLoop, "symbolic link");
      assertEquals(Deno.readTextFileSync(file), "keep me");
      assert(Deno.lstatSync(link).isSymlink);
      assertThrows(() => openFifoButton(`${dir}/missing`, { create: false }), Deno.errors.NotFound);
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "with onTaken, a path another reader's FIFO or a user's file holds is left alone and waited for; once free, the button makes its own FIFO there and reads it",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      const first = openFifoButton(path); // another reader of the FIFO at the path
      const refusals: TakenFifo[] = [];
      const events: FifoEvent[] = [];
      await using button = openFifoButton(path, {
        onTaken: (taken) => refusals.push(taken),
        onPath: (event) => events.push(event),
      });
      assertEquals(refusals.length, 1);
      assertEquals(refusals[0].reason, "read");
      assertInstanceOf(refusals[0].error, Deno.errors.Busy);
      assertStringIncludes(refusals[0].error.message, `pid ${Deno.pid}`);
      const presses = countPresses(button);
      await delay(200);
      assertEquals(events, [], "the button did something with a FIFO that is not its to use");
      await first.close(); // removes its FIFO: the path is free
      await settle(() => events.includes("recreated"));
      assertEquals(events, ["removed", "recreated"]);
      await pressOnce(path, presses);

      // A regular file of the user's: left exactly as it is until the user takes it away.
      const other = `${dir}/other.fifo`;
      Deno.writeTextFileSync(other, "keep me");
      const later: FifoEvent[] = [];
      await using waiting = openFifoButton(other, {
        onTaken: (taken) => refusals.push(taken),
        onPath: (event) => later.push(event),
      });
      assertEquals(refusals[1].reason, "foreign");
      assertInstanceOf(refusals[1].error, Deno.errors.AlreadyExists);
      const stillWaiting = countPresses(waiting);
      await delay(200);
      assertEquals(Deno.readTextFileSync(other), "keep me");
      Deno.removeSync(other);
      await settle(() => later.includes("recreated"));
      assert(Deno.lstatSync(other).isFifo);
      await stillWaiting.stop();
    });
    // Without onTaken the refusal is thrown, as before (see the tests above).
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("sh"), requires("sleep")],
  "readersChecked spares the look for the FIFO its maker checked, not for another FIFO put at the path since, which another process reads",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      // The maker (the launcher) makes its FIFO and knows nobody else reads it...
      makeFifo(path, 0o600);
      const checked = statPath(path)?.identity ?? "";
      // ...and before the button opens it, another FIFO is put there, which a program reads.
      Deno.removeSync(path);
      makeFifo(path, 0o600);
      const other = statPath(path)?.identity;
      assert(other !== checked, "the new FIFO has the checked one's identity");
      const reader = new Deno.Command("sh", {
        args: ["-c", `exec 3<> '${path}'; echo open; exec sleep 60`],
        stdout: "piped",
      }).spawn();
      try {
        const lines = reader.stdout.pipeThrough(new TextDecoderStream()).getReader();
        assertEquals((await lines.read()).value, "open\n");
        lines.releaseLock();
        const options = { madeBy: "other" as const, readersChecked: checked };
        assertThrowsWith(
          () => openFifoButton(path, options),
          Deno.errors.Busy,
          `pid ${reader.pid}`,
        );
        const refusals: TakenFifo[] = [];
        await using _waiting = openFifoButton(path, {
          ...options,
          onTaken: (taken) => refusals.push(taken),
        });
        assertEquals(refusals.map((taken) => taken.reason), ["read"]);
        assertStringIncludes(refusals[0].error.message, `pid ${reader.pid}`);
      } finally {
        killIfRunning(reader.pid);
        await reader.status;
        await reader.stdout.cancel().catch(() => {});
      }
      // The FIFO it checked, nobody else reading it: opened without a look, and read.
      await using button = openFifoButton(path, { madeBy: "other", readersChecked: other });
      await pressOnce(path, countPresses(button));
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("sh"), requires("sleep")],
  "with onTaken, a FIFO whose other reader goes away (the FIFO left in place) is read within a look, as a fresh start would",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      makeFifo(path, 0o600);
      const reader = new Deno.Command("sh", {
        args: ["-c", `exec 3<> '${path}'; echo open; exec sleep 60`],
        stdout: "piped",
      }).spawn();
      const events: FifoEvent[] = [];
      try {
        const lines = reader.stdout.pipeThrough(new TextDecoderStream()).getReader();
        assertEquals((await lines.read()).value, "open\n");
        lines.releaseLock();
        const refusals: TakenFifo[] = [];
        await using button = openFifoButton(path, {
          onTaken: (taken) => refusals.push(taken),
          onPath: (event) => events.push(event),
        });
        assertEquals(refusals[0].reason, "read");
        assertInstanceOf(refusals[0].error, Deno.errors.Busy);
        const presses = countPresses(button);
        await delay(1200); // a look while the reader is there: nothing
        assertEquals(events, []);
        reader.kill("SIGKILL");
        await reader.status;
        await settle(() => events.includes("adopted"));
        assertEquals(events, ["adopted"]);
        await pressOnce(path, presses);
      } finally {
        killIfRunning(reader.pid);
        await reader.status;
        await reader.stdout.cancel().catch(() => {});
      }
      assert(Deno.lstatSync(path).isFifo, "the button removed a FIFO it did not make");
    });
  },
);

testWith(
  NEEDS.files,
  "a running button whose FIFO a user replaces with one of their own that nobody reads reads that one within a look",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      const events: FifoEvent[] = [];
      await using button = openFifoButton(path, { onPath: (event) => events.push(event) });
      const presses = countPresses(button);
      // In one step, as `mkfifo x.new && mv x.new x` would: the button sees it replaced.
      makeFifo(`${path}.new`, 0o600);
      Deno.renameSync(`${path}.new`, path);
      await settle(() => events.includes("adopted"));
      assertEquals(events, ["replaced", "adopted"]);
      await pressOnce(path, presses);
    });
  },
);

testWith(
  NEEDS.files,
  'with madeBy "other", the button makes no FIFO (not at its open, not after a removal, not in a directory made again) and reads each one its maker makes',
  async () => {
    await withTempDir(async (dir) => {
      const directory = `${dir}/run`;
      Deno.mkdirSync(directory, { mode: 0o700 });
      const path = `${directory}/button.fifo`;
      const events: FifoEvent[] = [];
      const options = {
        madeBy: "other",
        remakeDirectory: true,
        onPath: (event: FifoEvent) => events.push(event),
      } as const;
      // Free at the open: nothing made, and read once its maker made it.
      await using button = openFifoButton(path, options);
      const presses = countPresses(button);
      const press = async (count: number): Promise<void> => {
        await writeAndLeave(path, "0\n");
        await settle(() => presses.count() === count);
        assertEquals(presses.count(), count);
      };
      await delay(500);
      assert(!(statPath(path) !== undefined), "the button made a FIFO");
      makeFifo(path, 0o600);
      await settle(() => events.includes("adopted"));
      assertEquals(events, ["adopted"]);
      await press(1);
      // Removed: nothing made again.
      Deno.removeSync(path);
      await delay(500);
      assert(!(statPath(path) !== undefined), "the button made a FIFO again");
      makeFifo(path, 0o600);
      await settle(() => events.length === 3);
      assertEquals(events, ["adopted", "removed", "adopted"]);
      await press(2);
      // Its directory removed and made again, with the FIFO, by its maker: a watch set on the
      // old directory sees nothing of the new one, and the button reads the FIFO all the same.
      await removeTree(directory);
      await delay(500);
      assert(!(statPath(directory) !== undefined), "the button made the directory again");
      Deno.mkdirSync(directory, { mode: 0o700 });
      makeFifo(path, 0o600);
      await settle(() => events.length === 5);
      assertEquals(events, ["adopted", "removed", "adopted", "removed", "adopted"]);
      await press(3);
      await presses.stop();
      await button.close();
      assert(statPath(path) !== undefined, "the button removed a FIFO it did not make");
    });
  },
);

testWith(
  NEEDS.files,
  'with madeBy "other", a button opened while the FIFO\'s directory is missing waits for it (a button restarted after rm -rf crashed at its open)',
  async () => {
    await withTempDir(async (dir) => {
      const directory = `${dir}/gone`;
      const path = `${directory}/button.fifo`;
      const events: FifoEvent[] = [];
      await using button = openFifoButton(path, {
        madeBy: "other",
        onPath: (event) => events.push(event),
      });
      const presses = countPresses(button);
      await settle(() => events.includes("directory-removed"));
      Deno.mkdirSync(directory, { mode: 0o700 });
      makeFifo(path, 0o600);
      await settle(() => events.includes("adopted"));
      assertEquals(events, ["directory-removed", "adopted"]);
      await pressOnce(path, presses);
    });
  },
);

testWith(
  NEEDS.files,
  "with onTaken, a refusal that is not about what is at the path (an unsafe directory) is still thrown",
  async () => {
    await withTempDir((dir) => {
      const open = `${dir}/open`;
      Deno.mkdirSync(open, { mode: 0o700 });
      const path = `${open}/button.fifo`;
      makeFifo(path, 0o600);
      Deno.chmodSync(open, 0o777);
      const refusals: TakenFifo[] = [];
      assertThrowsWith(
        () => openFifoButton(path, { onTaken: (taken) => refusals.push(taken) }),
        Deno.errors.PermissionDenied,
        "writable by other users",
      );
      assertEquals(refusals, []);
      Deno.chmodSync(open, 0o700);
    });
  },
);

testWith(
  NEEDS.files,
  "with onTaken, a path that is free by the time the button looks gets its FIFO at once",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      Deno.writeTextFileSync(path, "x");
      const events: FifoEvent[] = [];
      await using button = openFifoButton(path, {
        onTaken: () => Deno.removeSync(path), // gone between the refusal and the wait
        onPath: (event) => events.push(event),
      });
      const presses = countPresses(button);
      await settle(() => events.includes("recreated"));
      assertEquals(events, ["recreated"]);
      await presses.stop();
    });
  },
);

testWith(NEEDS.files, "a FIFO button counts 0 and press, and reports everything else", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/button.fifo`;
    const ignored: IgnoredInput[] = [];
    await using button = openFifoButton(path, { onIgnored: (i) => ignored.push(i) });
    const presses = countPresses(button);
    await writeAndLeave(path, "0\n");
    await writeAndLeave(path, "press\n  PRESS \r\n");
    await writeAndLeave(path, "\n");
    await writeAndLeave(path, "1\n");
    await writeAndLeave(path, "garbage\n");
    await writeAndLeave(path, new Uint8Array([0x61, 0x00, 0xff, 0x0a]));
    await writeAndLeave(path, `${"x".repeat(1 << 20)}\n`);
    await writeAndLeave(path, "0\n");
    // Near misses of the plain ASCII press, and a press with blanks that are not ASCII.
    await writeAndLeave(path, "\t0\t\npres\npressed\n0 0\n\u00a0press\u00a0\n");
    await settle(() => presses.count() === 6 && ignored.length === 8);
    await presses.stop();
    assertEquals(presses.count(), 6);
    assertEquals(ignored.map((i) => i.reason), [
      "empty",
      "not a press",
      "not a press",
      "binary",
      "too long",
      "not a press",
      "not a press",
      "not a press",
    ]);
    assertEquals(ignored[4].bytes, 1 << 20);
    assert(ignored[4].input.length <= MAX_LINE_BYTES);
  });
});

testWith(
  NEEDS.files,
  "a line cut off by a writer that went away is dropped, and the next press counts",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      const ignored: IgnoredInput[] = [];
      await using button = openFifoButton(path, { onIgnored: (i) => ignored.push(i) });
      const presses = countPresses(button);
      await writeAndLeave(path, "pre");
      await settle(() => ignored.length === 1);
      await writeAndLeave(path, "0\n");
      await settle(() => presses.count() === 1);
      await presses.stop();
      assertEquals(ignored, [{ reason: "cut off", input: "pre", bytes: 3 }]);
      assertEquals(presses.count(), 1);
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "writers that come and go leave the button's fd count flat",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      await using button = openFifoButton(path);
      const presses = countPresses(button);
      await writeAndLeave(path, "0\n");
      await settle(() => presses.count() === 1);
      const before = await openFdCount(Deno.pid, path);
      for (let i = 0; i < 200; i++) {
        await writeAndLeave(path, "0\n");
        await settle(() => presses.count() === i + 2);
      }
      const after = await openFdCount(Deno.pid, path);
      await presses.stop();
      assertEquals(presses.count(), 201);
      assertEquals(before, 1);
      assertEquals(after, 1);
    });
  },
);

testWith(NEEDS.files, "aborting ends the presses iteration at once", async () => {
  await withTempDir(async (dir) => {
    await using button = openFifoButton(`${dir}/button.fifo`);
    const presses = countPresses(button);
    await delay(20);
    await presses.stop();
    assertEquals(presses.count(), 0);
  });
});

testWith(
  NEEDS.files,
  "the warning for a replaced FIFO says what took its path: a FIFO, a regular file, a symlink",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/button.fifo`;
      const said = (): string => describeFifoEvent(path, "replaced");
      makeFifo(path, 0o600);
      assertStringIncludes(said(), "replaced by another program's");
      assertStringIncludes(said(), "reads it once nobody else does, or a new FIFO");
      Deno.removeSync(path);
      Deno.writeTextFileSync(path, "hello\n"); // echo hello > button.fifo, once it was moved away
      assertStringIncludes(said(), "replaced by a regular file");
      // A file is never read: only a new FIFO is.
      assertStringIncludes(said(), "leaves it alone and reads a new FIFO once the path is free");
      Deno.removeSync(path);
      Deno.symlinkSync(`${dir}/elsewhere`, path);
      assertStringIncludes(said(), "replaced by a symbolic link");
      Deno.removeSync(path);
      assertStringIncludes(said(), "replaced by something that is gone again");
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "the FIFO's directory removed with rm -rf: the button says so, waits for it without ending, and reads a new FIFO once it is back",
  async () => {
    await withTempDir(async (dir) => {
      const directory = `${dir}/run`;
      Deno.mkdirSync(directory, { mode: 0o700 });
      const path = `${directory}/button.fifo`;
      const events: FifoEvent[] = [];
      await using button = openFifoButton(path, { onPath: (event) => events.push(event) });
      const presses = countPresses(button);
      await removeTree(directory);
      await settle(() => events.includes("directory-removed"));
      assertEquals(events, ["removed", "directory-removed"]);
      await delay(1200); // two more looks at the directory, each still finding it gone
      assertEquals(events.length, 2, "the removed directory was reported more than once");
      assertThrows(() => Deno.lstatSync(directory), Deno.errors.NotFound, undefined);
      Deno.mkdirSync(directory, { mode: 0o700 });
      await settle(() => events.includes("recreated"));
      assertEquals(events, ["removed", "directory-removed", "recreated"]);
      assert(Deno.lstatSync(path).isFifo, "no new FIFO in the directory made again");
      await pressOnce(path, presses);
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "the FIFO's directory moved away and made again (mv dir dir.old && mkdir dir): the button notices, and reads a new FIFO in the new directory",
  async () => {
    await withTempDir(async (dir) => {
      const directory = `${dir}/run`;
      Deno.mkdirSync(directory, { mode: 0o700 });
      const path = `${directory}/button.fifo`;
      const events: FifoEvent[] = [];
      await using button = openFifoButton(path, { onPath: (event) => events.push(event) });
      const presses = countPresses(button);
      Deno.renameSync(directory, `${dir}/run.old`);
      Deno.mkdirSync(directory, { mode: 0o700 });
      // Nothing happens in the new directory: only the old one's move can tell the button.
      await settle(() => events.includes("recreated"));
      assertEquals(events, ["removed", "recreated"]);
      assert(Deno.lstatSync(path).isFifo, "no new FIFO in the new directory");
      await pressOnce(path, presses);
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "with remakeDirectory the button makes its removed directory again, 0700, and reads a new FIFO there",
  async () => {
    await withTempDir(async (dir) => {
      const directory = `${dir}/run`;
      const path = `${directory}/button.fifo`;
      const events: FifoEvent[] = [];
      // Missing at open too: made then.
      await using button = openFifoButton(path, {
        onPath: (event) => events.push(event),
        remakeDirectory: true,
      });
      assertEquals((Deno.statSync(directory).mode ?? 0) & 0o777, 0o700);
      const presses = countPresses(button);
      await removeTree(directory);
      await settle(() => events.includes("recreated"));
      assertEquals(events, ["removed", "directory-recreated", "recreated"]);
      assertEquals((Deno.statSync(directory).mode ?? 0) & 0o777, 0o700);
      await pressOnce(path, presses);
    });
  },
);

Deno.test("the button's words for a removed FIFO directory name it and say how to mend it", () => {
  const said = describeFifoEvent("/home/ann/run/button.fifo", "directory-removed");
  assertStringIncludes(said, '"/home/ann/run" was removed');
  assertStringIncludes(said, 'mkdir -m 700 "/home/ann/run"');
  assertStringIncludes(
    describeFifoEvent("/home/ann/run/button.fifo", "directory-recreated"),
    '"/home/ann/run" was removed; made it again',
  );
});

Deno.test("a restarted button's warning for a taken FIFO path says why and what it waits for, by the refusal's reason", () => {
  const path = '"/home/ann/run/button.fifo"';
  const error = (message: string): Error => new Deno.errors.PermissionDenied(message);
  const cases: [TakenFifo["reason"], string, string][] = [
    [
      "read",
      `Cannot use FIFO ${path}: pid 7 reads it. Stop it, or choose another --fifo`,
      "reads it once nobody else does",
    ],
    [
      "mode",
      `Cannot use the FIFO ${path}: its mode (0000) does not let its owner read it (chmod?)`,
      "reads it once its mode lets it",
    ],
    [
      "foreign",
      `Cannot use FIFO ${path}: it is a regular file, not a FIFO`,
      "leaves it alone and reads the FIFO the launcher makes once the path is free",
    ],
    [
      "unreachable",
      `Cannot reach the FIFO ${path}: its directory "/home/ann/run" (or one above it) does not ` +
      "let this user look into it (chmod?)",
      "reads the FIFO there once the directory lets it in again",
    ],
  ];
  for (const [reason, message, then] of cases) {
    const said = describeTakenFifo({ reason, error: error(message) });
    assertStringIncludes(said, message.replace(". Stop it, or choose another --fifo", ""));
    assertStringIncludes(said, then);
    assert(!said.includes("Stop it"), said);
  }
});

testWith(
  NEEDS.files,
  "a FIFO the keeper puts at the path and holds a moment later is told as the old one's removal, not as another program's (the keeper makes a FIFO, then opens it)",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      makeFifo(path, 0o600);
      // This process is the keeper, as the launcher is: it holds the FIFO at the path.
      const holds = [openPath(path, C.O_RDONLY | C.O_NONBLOCK | C.O_CLOEXEC, 0, "hold FIFO")];
      try {
        const events: FifoEvent[] = [];
        await using button = openFifoButton(path, {
          madeBy: "other",
          keeper: Deno.pid,
          onPath: (event) => events.push(event),
        });
        const presses = countPresses(button);
        // A new FIFO moved onto the path is seen at once as another in its place (no removal
        // first); the keeper holds it 20 ms later.
        const next = `${dir}/next.fifo`;
        makeFifo(next, 0o600);
        Deno.renameSync(next, path);
        await delay(20);
        holds.push(openPath(path, C.O_RDONLY | C.O_NONBLOCK | C.O_CLOEXEC, 0, "hold FIFO"));
        await until(() => events.length > 0, "the button told of its FIFO");
        assertEquals(events[0], "removed");
        await presses.stop();
      } finally {
        for (const fd of holds) closeFd(fd);
      }
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("sh"), requires("cat")],
  "with a keeper holding the FIFO, a reader blocked opening it (the original button between reads) is still found, and a probe nobody takes leaves the waiting presses as they were",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      makeFifo(path, 0o600);
      const identity = statPath(path)?.identity ?? "";
      // This process is the keeper: its read end keeps what is written, and reads none of it.
      const hold = openPath(path, C.O_RDONLY | C.O_NONBLOCK | C.O_CLOEXEC, 0, "hold FIFO");
      try {
        await writeAndLeave(path, "0\n"); // a press waiting for the restarted button
        refuseIfRead(path, identity, { keeper: Deno.pid });
        assertEquals(bytesWaiting(hold, path), 2, "the waiting press changed");
        // Opening for reading blocks while no writer has it open: the keeper's end is no writer.
        await using reader = spawnProgram("sh", ["-c", `exec cat '${path}'`]);
        await until(() => waitingForWriter(reader.pid), "cat blocked opening the FIFO");
        const refused = assertThrowsWith(
          () => refuseIfRead(path, identity, { keeper: Deno.pid }),
          Deno.errors.Busy,
        );
        // The probe that found it woke it: by the look for a pid to name, it may hold the FIFO
        // open (named, with its command name when /proc still has it), or have read and gone
        // (told as waiting).
        assertMatch(
          refused.message,
          new RegExp(
            `pid ${reader.pid}( \\(cat\\))? reads it|another process is waiting to read it`,
          ),
        );
        // It took the waiting press and the probe's line behind it ("not a press" to the
        // original button), and ended with the probe's writer.
        const status = await reader.status();
        assertEquals(status.code, 0);
        assertEquals(reader.lines.map((line) => line.text), ["0", "1"]);
      } finally {
        closeFd(hold);
      }
    });
  },
);

testWith(
  NEEDS.files,
  "with onTaken, the refusal of another user's FIFO quotes its directory: a newline in the directory's name cannot forge a log line",
  async (t) => {
    if (await skippedWithoutRoot(t, "to give a FIFO to another user")) return;
    await withTempDir(async (dir) => {
      // This user's directory that lets nobody make anything in it: the refusal names it.
      const directory = `${dir}/in\n2026-01-01 00:00:00.000 [INF] forged`;
      Deno.mkdirSync(directory, { mode: 0o700 });
      const path = `${directory}/button.fifo`;
      makeFifo(path, 0o622);
      Deno.chownSync(path, 12345, 12345);
      Deno.chmodSync(directory, 0o500);
      const refusals: TakenFifo[] = [];
      try {
        await using _button = openFifoButton(path, {
          onTaken: (taken) => refusals.push(taken),
          madeBy: "other",
        });
        assertEquals(refusals.length, 1);
        assertEquals(refusals[0].reason, "foreign");
        const message = describeTakenFifo(refusals[0]);
        assertStringIncludes(message, "its mode (0500)");
        // deno-lint-ignore no-control-regex
        assert(!/[\x00-\x1f]/.test(message), message);
      } finally {
        Deno.chmodSync(directory, 0o700);
      }
    });
  },
);

testWith(
  NEEDS.files,
  "the refusal of another user's FIFO says who may remove it: this user, in a directory of its own; its owner or root, in a sticky one such as /tmp",
  async (t) => {
    if (await skippedWithoutRoot(t, "to give a FIFO to another user")) return;
    await withTempDir(async (dir) => {
      for (
        const [mode, who] of [[0o700, "(rm "], [0o1777, "(as uid 12345 or root: rm "]] as const
      ) {
        const directory = `${dir}/mode-${mode.toString(8)}`;
        Deno.mkdirSync(directory);
        Deno.chmodSync(directory, mode);
        const path = `${directory}/button.fifo`;
        makeFifo(path, 0o622);
        Deno.chownSync(path, 12345, 12345);
        const refusals: TakenFifo[] = [];
        await using _button = openFifoButton(path, {
          onTaken: (taken) => refusals.push(taken),
          madeBy: "other",
        });
        assertEquals(refusals.length, 1);
        const message = describeTakenFifo(refusals[0]);
        assertStringIncludes(message, `remove it ${who}${path}`);
        assertStringIncludes(message, `chown ${effectiveUid()} ${path}`);
      }
    });
  },
);

testWith(
  NEEDS.files,
  "with onTaken, a running button whose FIFO a file of this user's replaces says so once (onPath), not again at its looks (onTaken is for what is not this user's)",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      const refusals: TakenFifo[] = [];
      const events: FifoEvent[] = [];
      await using button = openFifoButton(path, {
        onTaken: (taken) => refusals.push(taken),
        onPath: (event) => events.push(event),
      });
      const presses = countPresses(button);
      // A regular file of the user's moved onto the path: the watch says it was replaced.
      Deno.writeTextFileSync(`${dir}/file`, "keep me");
      Deno.renameSync(`${dir}/file`, path);
      await settle(() => events.length > 0);
      await delay(2_500); // two looks at what took the path
      assertEquals(events, ["replaced"]);
      assertEquals(refusals.map((taken) => taken.error.message), []);
      assertEquals(Deno.readTextFileSync(path), "keep me");
      await presses.stop();
    });
  },
);

testWith(
  NEEDS.files,
  "with onTaken and a FIFO another makes, a symlink put at the path its removal freed (rm, then ln -s) is said once (onTaken), where nothing said it",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      makeFifo(path, 0o600);
      const refusals: TakenFifo[] = [];
      const events: FifoEvent[] = [];
      await using button = openFifoButton(path, {
        onTaken: (taken) => refusals.push(taken),
        onPath: (event) => events.push(event),
        madeBy: "other",
      });
      const presses = countPresses(button);
      Deno.removeSync(path);
      await settle(() => events.length > 0);
      Deno.symlinkSync(`${dir}/elsewhere`, path);
      await settle(() => refusals.length > 0);
      await delay(2_500); // two more looks at what took the path: said once
      assertEquals(events, ["removed"]);
      assertEquals(refusals.map((taken) => taken.reason), ["foreign"]);
      assertStringIncludes(describeTakenFifo(refusals[0]), "symbolic link");
      assertEquals(Deno.readLinkSync(path), `${dir}/elsewhere`, "the link was left alone");
      await presses.stop();
    });
  },
);

/** Runs `tests/fixtures/button_without_fds.ts` in `dir` under `ulimit -n 256`; its lines. */
function buttonWithoutFds(
  dir: string,
  mode: "reopen" | "wait",
  onReady: () => Promise<void> = async () => {},
): Promise<string[]> {
  return runUnderFdLimit("button_without_fds.ts", [dir, mode], {
    permissions: ["--allow-ffi", `--allow-read=${dir}`, `--allow-write=${dir}`],
    onLine: (line) => line === "ready" ? onReady() : undefined,
  });
}

testWith(
  [...NEEDS.childrenAndFiles, requires("sh")],
  "a button out of fds says so as a shortage that names its FIFO: when it opens it anew after a writer, and when it cannot wait",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      const reopened = await buttonWithoutFds(dir, "reopen", () => writeAndLeave(fifo, "0\n"));
      assertEquals(reopened, [
        "ready",
        "pressed",
        `failed: Cannot reopen FIFO ${
          JSON.stringify(fifo)
        }: too many open files (EMFILE) (shortage: true)`,
        "done",
      ]);
      const waited = await buttonWithoutFds(dir, "wait");
      assertEquals(waited.length, 2, waited.join("\n"));
      assertStringIncludes(waited[0], `failed: Cannot wait on FIFO ${JSON.stringify(fifo)}`);
      assertStringIncludes(waited[0], "(EMFILE)");
      assertStringIncludes(waited[0], "(shortage: true)");
    });
  },
);
