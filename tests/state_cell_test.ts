import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import { assertRejectsWith, assertThrowsWith } from "./helpers/assertions.ts";
import { TESTS_DIR } from "./helpers/paths.ts";
import { NEEDS, requires, skippedWithoutRoot, testWith } from "./helpers/permissions.ts";
import {
  allThreadSwitches,
  settledWorkerThreads,
  voluntarySwitches,
  workerThreads,
} from "./helpers/proc.ts";
import type { ChildProcess } from "./helpers/child_process.ts";
import { buildC, denoCommand, spawnDeno, spawnProgram } from "./helpers/spawn.ts";
import { withMount, withShmName, withTempDir } from "./helpers/temp.ts";
import { delay, GUARD_MS, until, within } from "./helpers/waiting.ts";
import { writerEvents } from "./helpers/writer_events.ts";
import {
  createMemfdRegion,
  openFileRegion,
  openMemfdRegion,
  openShmRegion,
  openStateCell,
  openStateFile,
  restoreStateCellHeader,
  SharedRegion,
  StateCell,
  stateCellHeaderProblem,
  StateFile,
} from "../mod.ts";
import { cpuUsage } from "node:process";
import { statPath } from "../ffi/posix.ts";
import { openStateShm } from "../lib/state_file.ts";
import { loadRounds } from "./helpers/load.ts";
import {
  DEFAULT_FOLLOW_GRACE_MS,
  STATE_CELL_MAGIC,
  STATE_CELL_VERSION,
} from "../lib/state_cell.ts";

const PEER = `${TESTS_DIR}fixtures/cell_peer.ts`;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function text(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

Deno.test("openStateCell() on blank memory writes a header and reads 0", () => {
  using region = createMemfdRegion({ size: 256 });
  using cell = openStateCell(region);
  assertEquals(cell.read(), 0);
  assertEquals(region.loadInt32(64), STATE_CELL_MAGIC);
  assertEquals(text(region.read(64, 4)), "CELL");
  assertEquals(cell.writerPid, undefined);
});

testWith(NEEDS.files, 'a 258-byte file holding the original\'s "1\\n\\0" reads 1', async () => {
  await withTempDir((dir) => {
    const path = `${dir}/data.dat`;
    const original = new Uint8Array(258);
    original.set(encoder.encode("1\n\0"));
    Deno.writeFileSync(path, original, { mode: 0o600 });
    {
      using region = openFileRegion(path, { size: 256 });
      using cell = openStateCell(region);
      assertEquals(cell.read(), 1);
    }
    const after = Deno.readFileSync(path);
    assertEquals(after.length, 258);
    assertEquals(text(after.subarray(0, 3)), "1\n\0");
    assertEquals(after[257], 0);
  });
});

Deno.test("openStateCell() refuses periods under 1 ms, or not a finite number of ms", () => {
  using region = createMemfdRegion({ size: 256 });
  const periods = [0, -1, NaN, 1e-9, 0.999];
  for (
    const options of periods.flatMap((ms) => [{ livenessCheckMs: ms }, { followPeriodMs: ms }])
  ) {
    // A period of a nanosecond kept a core 68 % busy while a reader followed the text.
    assertThrows(() => openStateCell(region, options), RangeError, "from 1 up");
  }
  for (const ms of [1, 2.75]) {
    openStateCell(region, { followPeriodMs: ms, livenessCheckMs: ms }).close();
  }
  // A reader with no cooperating writer must look now and then: no endless follow period.
  for (const followPeriodMs of [Infinity, 2 ** 31]) {
    assertThrows(() => openStateCell(region, { followPeriodMs }), RangeError, "followPeriodMs");
  }
  using cell = openStateCell(region, { livenessCheckMs: Infinity });
  assertEquals(cell.read(), 0);
  // The grace before a follower Worker: 0 (at once) and Infinity (never) are both meant.
  for (const followGraceMs of [0, 1.5, Infinity]) openStateCell(region, { followGraceMs }).close();
  for (const followGraceMs of [-1, NaN, -Infinity]) {
    assertThrows(() => openStateCell(region, { followGraceMs }), RangeError, "from 0 up");
  }
  assertThrows(
    () => openStateCell(region, { followGraceMs: "5" as unknown as number }),
    TypeError,
    'followGraceMs "5" is not a number',
  );
});

Deno.test("a state cell whose control block a peer wrote over fails with InvalidData naming the region, not with a value nobody wrote, and works again once restored", async () => {
  using region = createMemfdRegion({ size: 256 });
  using writer = openStateCell(region, { writer: true });
  using reader = openStateCell(region);
  writer.write(7);
  const waiting = reader.waitForChange({ timeout: 5_000 });
  await delay(50); // asleep in the kernel: the wake-up's own fast path must look at the header
  // A peer scribbles over the text and the control block (the sequence word among them).
  region.write(0, new TextEncoder().encode("garbage!".repeat(16)));
  region.notifyInt32(64 + 12); // the sequence word: the wait wakes and looks
  const why = "its header was overwritten (found 0x62726167 at byte 64 where the magic 0x4c4c4543";
  await assertRejectsWith(() => waiting, Deno.errors.InvalidData, region.name, why);
  assertThrowsWith(() => reader.read(), Deno.errors.InvalidData, region.name, why);
  // Not "no longer holds the writer role": the claim word is garbage too, but the header says so.
  assertThrowsWith(() => writer.write(1), Deno.errors.InvalidData, region.name, why);
  assertThrowsWith(
    () => reader.waitForChangeSync({ timeout: 10 }),
    Deno.errors.InvalidData,
    region.name,
    why,
  );
  // The header restored (what the launcher does before a child starts again), reads go on; the
  // value is whatever the scribbled words make of it.
  restoreStateCellHeader(region);
  assertEquals(typeof reader.read(), "number");
});

Deno.test("StateCell.write() leaves the original's text format at offset 0", () => {
  using region = createMemfdRegion({ size: 256 });
  using cell = openStateCell(region, { writer: true });
  cell.write(1);
  assertEquals(text(region.read(0, 3)), "1\n\0");
  cell.write(0);
  assertEquals(text(region.read(0, 3)), "0\n\0");
  cell.write(-42);
  assertEquals(text(region.read(0, 5)), "-42\n\0");
  assertEquals(cell.read(), -42);
  // The longest text, then the shortest: nothing of the longer one is left behind, nor of
  // anything another writer put in the text's 32 bytes.
  cell.write(-(2 ** 31));
  assertEquals(text(region.read(0, 13)), "-2147483648\n\0");
  region.write(13, new Uint8Array(19).fill(0x58));
  cell.write(7);
  assertEquals(region.read(0, 32), new Uint8Array([0x37, 0x0a, ...new Array(30).fill(0)]));
  for (const value of [2 ** 31, -(2 ** 31) - 1, 0.5, NaN, Infinity, "1", 1n]) {
    assertThrows(() => cell.write(value as number), RangeError, "is not a 32-bit integer");
    // The same test, through isStateValue(), for a cell's first value.
    assertThrows(
      () => openStateCell(region, { offset: 128, initialise: true, initialValue: value as number }),
      RangeError,
      "is not a 32-bit integer",
    );
  }
  for (const value of [2 ** 31 - 1, -(2 ** 31), -0]) {
    using other = openStateCell(region, { offset: 128, initialise: true, initialValue: value });
    assertEquals(other.read(), value || 0); // -0 reads back as 0
  }
  assertEquals(cell.read(), 7);
});

Deno.test('StateCell reads text the way sscanf("%d") does', () => {
  using region = createMemfdRegion({ size: 256 });
  using cell = openStateCell(region);
  const cases: [string, number][] = [
    ["1\n\0", 1],
    ["  7\n", 7],
    ["+3", 3],
    ["-9x", -9],
    ["abc", 0],
    ["\0", 0],
    ["-0\n", 0], // 0, as in C: not JavaScript's -0, which changes() took for no change
  ];
  for (const [written, expected] of cases) {
    region.write(0, new Uint8Array(32));
    region.write(0, encoder.encode(written));
    const read = cell.read();
    assert(
      Object.is(read, expected),
      `${JSON.stringify(written)} read as ${Object.is(read, -0) ? "-0" : read}`,
    );
  }
});

Deno.test("openStateCell() refuses a foreign header and changes nothing", () => {
  using region = createMemfdRegion({ size: 256 });
  const foreign = encoder.encode(
    "SQLite format 3\0 and more bytes that are not ours at all, ".repeat(4),
  );
  region.write(0, foreign.subarray(0, 256));
  const before = region.read(0, 256);
  assertThrowsWith(
    () => openStateCell(region),
    Deno.errors.InvalidData,
    region.name,
    "where the magic",
    "initialise: true",
  );
  assertEquals(region.read(0, 256), before);
  using cell = openStateCell(region, { initialise: true, initialValue: 1 });
  assertEquals(cell.read(), 1);
});

Deno.test("openStateCell() refuses an unknown version and an impossible size", () => {
  using region = createMemfdRegion({ size: 256 });
  openStateCell(region).close();
  region.storeInt32(68, 9);
  assertThrowsWith(() => openStateCell(region), Deno.errors.InvalidData, "layout version is 9");
  region.storeInt32(68, STATE_CELL_VERSION);
  region.storeInt32(72, 1 << 30);
  assertThrowsWith(() => openStateCell(region), Deno.errors.InvalidData, `${1 << 30} bytes`);
});

Deno.test("stateCellHeaderProblem() names what openStateCell() would refuse, and nothing else", () => {
  using region = createMemfdRegion({ size: 512 });
  assertEquals(stateCellHeaderProblem(region), undefined, "blank: openStateCell makes it a cell");
  using cell = openStateCell(region, { writer: true });
  cell.write(7);
  assertEquals(stateCellHeaderProblem(region), undefined);
  // A value, a sequence or a claim written over is the cell's to cope with, not the header's.
  region.storeInt32(84, 0x41414141);
  assertEquals(stateCellHeaderProblem(region), undefined);
  for (
    const [offset, value, words] of [
      [64, 0x58585858, "found 0x58585858 at byte 64 where the magic"],
      [68, 9, "layout version is 9"],
      [72, 1 << 30, `claims a cell of ${1 << 30} bytes`],
    ] as const
  ) {
    const before = region.loadInt32(offset);
    region.storeInt32(offset, value);
    const problem = stateCellHeaderProblem(region);
    assert(problem !== undefined && problem.includes(words), `${offset}: ${problem}`);
    assert(!problem.includes("initialise"), "a hint for openStateCell's callers only");
    assertThrowsWith(() => openStateCell(region), Deno.errors.InvalidData, words);
    region.storeInt32(offset, before);
  }
  assertEquals(stateCellHeaderProblem(region, { offset: 256 }), undefined);
  for (const offset of [-8, 1.5, 400]) {
    assertThrowsWith(() => stateCellHeaderProblem(region, { offset }), RangeError, `${offset}`);
  }
});

Deno.test("restoreStateCellHeader() rewrites only the header's fixed words, under cells that stay open", async () => {
  using region = createMemfdRegion({ size: 256 });
  using writer = openStateCell(region, { writer: true });
  using reader = openStateCell(region);
  writer.write(5);
  assertEquals(restoreStateCellHeader(region), undefined, "a sound header is left alone");
  const before = region.read(0, 256);
  for (const offset of [64, 68, 72]) region.storeInt32(offset, 0x58585858);
  const problem = restoreStateCellHeader(region);
  assert(problem?.includes("found 0x58585858 at byte 64"), problem);
  // Everything but the three words is as it was: the text, the sequence, the value, the claims.
  assertEquals(region.read(0, 256), before);
  assertEquals(stateCellHeaderProblem(region), undefined);
  using again = openStateCell(region);
  assertEquals(again.read(), 5);
  // The cells open all along carry on: the writer still holds its role and wakes the reader.
  const next = reader.waitForChange({ timeout: 10_000 });
  writer.write(6);
  assertEquals(await next, 6);
  assertThrowsWith(() => openStateCell(region, { writer: true }), Deno.errors.Busy);
});

Deno.test("openStateCell() refuses a region too small and a bad offset", () => {
  using small = createMemfdRegion({ size: 100 });
  assertThrowsWith(() => openStateCell(small), RangeError, "100 bytes");
  using region = createMemfdRegion({ size: 512 });
  assertThrows(() => openStateCell(region, { offset: 4 }), RangeError);
  assertThrows(() => openStateCell(region, { offset: 400 }), RangeError);
  using placed = openStateCell(region, { offset: 256, writer: true });
  placed.write(5);
  assertEquals(text(region.read(256, 3)), "5\n\0");
});

Deno.test("StateCell refuses a second writer, and writes without the role", () => {
  using region = createMemfdRegion({ size: 256 });
  using writer = openStateCell(region, { writer: true });
  assertEquals(writer.writerPid, Deno.pid);
  assertThrowsWith(
    () => openStateCell(region, { writer: true }),
    Deno.errors.Busy,
    // The name quoted once: it was `Cannot claim "the writer role of state cell \"NAME\""`.
    `Cannot claim the writer role of state cell ${
      JSON.stringify(region.name)
    }: this process already holds it`,
  );
  using reader = openStateCell(region);
  assertThrows(() => reader.write(1), Deno.errors.PermissionDenied);
  writer.close();
  using next = openStateCell(region, { writer: true });
  next.write(1);
  assertEquals(reader.read(), 1);
});

Deno.test("StateCell after close throws BadResource; close twice is fine", () => {
  using region = createMemfdRegion({ size: 256 });
  const cell = openStateCell(region, { writer: true });
  cell.close();
  cell.close();
  assertThrows(() => cell.read(), Deno.errors.BadResource);
  assertThrows(() => cell.write(1), Deno.errors.BadResource);
  const other = openStateCell(region);
  region.close();
  assertThrows(() => other.read(), Deno.errors.BadResource);
});

Deno.test("StateCell.waitForChange() times out with TimedOut and aborts with the reason", async () => {
  using region = createMemfdRegion({ size: 256 });
  using writer = openStateCell(region, { writer: true });
  using cell = openStateCell(region);
  await assertRejectsWith(
    () => cell.waitForChange({ timeout: 30 }),
    Deno.errors.TimedOut,
    region.name,
  );
  const controller = new AbortController();
  const waiting = cell.waitForChange({ signal: controller.signal });
  setTimeout(() => controller.abort(new Error("enough")), 20);
  await assertRejectsWith(() => waiting, Error, "enough");
  const next = cell.waitForChange();
  writer.write(1);
  assertEquals(await next, 1);
});

Deno.test("StateCell.waitForChangeSync() returns a change and times out", () => {
  using region = createMemfdRegion({ size: 256 });
  using writer = openStateCell(region, { writer: true });
  using cell = openStateCell(region);
  assertThrowsWith(
    () => cell.waitForChangeSync({ timeout: 20 }),
    Deno.errors.TimedOut,
    region.name,
  );
  writer.write(3);
  assertEquals(cell.waitForChangeSync({ from: 0, timeout: 1000 }), 3);
  region.write(0, encoder.encode("4\n\0")); // a foreign writer is seen too
  writer.close();
  assertEquals(cell.waitForChangeSync({ from: 3, timeout: 10_000 }), 4);
});

Deno.test("StateCell.waitForChangeSync() without a timeout is a TypeError, not a wait that spins", () => {
  using region = createMemfdRegion({ size: 256 });
  using writer = openStateCell(region, { writer: true });
  using cell = openStateCell(region);
  // From JavaScript, or cast: it slept 0 ms at a time, for good, 14 000 times a second.
  for (const options of [{}, { timeout: undefined }, { timeout: "100" }]) {
    assertThrowsWith(
      () => cell.waitForChangeSync(options as unknown as { timeout: number }),
      TypeError,
      `${region.name}": timeout`,
    );
  }
  writer.write(2);
  assertEquals(cell.waitForChangeSync({ from: 0, timeout: Infinity }), 2);
});

Deno.test("the exported classes cannot be made directly: a StateFile made around an fd number closed that fd, whoever's it was", () => {
  type Made = new (...parts: unknown[]) => unknown;
  assertThrows(() => new (SharedRegion as unknown as Made)(Symbol(), {}), TypeError, "Use open");
  assertThrows(() => new (StateCell as unknown as Made)(Symbol(), {}), TypeError, "Use open");
  using region = createMemfdRegion({ size: 256 });
  const fd = Number(region.name.split("/").pop());
  // close() of one made so closed the memfd's fd here, and Deno's event loop's (a panic).
  assertThrows(
    () => new (StateFile as unknown as Made)("state", fd, "", false),
    TypeError,
    "Use openStateFile()",
  );
  using again = openMemfdRegion(region.name);
  assertEquals(again.size, 256);
});

testWith(
  [...NEEDS.files, requires("mount"), requires("umount")],
  "a mirror that cannot be written (its file system full): with onMirrorError the cell takes each value and hands the failure over, the next write copies again and says so to onMirrorRecovered; without it the failure is thrown",
  async (t) => {
    if (await skippedWithoutRoot(t, "to mount a small tmpfs")) return;
    await withTempDir(async (dir) => {
      await withMount(dir, "tmpfs", async (small) => {
        const path = `${small}/state`;
        using mirror = openStateFile(path, { create: true });
        using region = createMemfdRegion({ size: 256 });
        const failures: Error[] = [];
        let recovered = 0;
        const repeats: boolean[] = [];
        using writer = openStateCell(region, {
          writer: true,
          mirror,
          onMirrorError: (error, repeated) => {
            failures.push(error);
            repeats.push(repeated);
          },
          onMirrorRecovered: () => recovered++,
        });
        using reader = openStateCell(region);
        // The file's block freed, then every block taken.
        Deno.truncateSync(path, 0);
        await new Deno.Command("sh", {
          args: ["-c", 'cat /dev/zero > "$1/fill" 2>/dev/null; :', "sh", small],
        }).output();
        writer.write(1);
        assertEquals(reader.read(), 1);
        assertEquals(failures.length, 1);
        assertStringIncludes(failures[0].message, path);
        assertStringIncludes(failures[0].message, "ENOSPC");
        writer.write(0);
        assertEquals(failures.length, 2);
        assertEquals(repeats, [false, true]);
        assertEquals(recovered, 0);
        // Without it, the open that takes the writer role (and copies its value) throws.
        using other = createMemfdRegion({ size: 256 });
        assertThrowsWith(
          () => openStateCell(other, { writer: true, mirror }),
          Error,
          path,
          "ENOSPC",
        );
        Deno.removeSync(`${small}/fill`);
        writer.write(1);
        assertEquals(failures.length, 2);
        assertEquals(mirror.value(), 1);
        assertEquals(recovered, 1);
        // Once per recovery: a copy that follows a good one recovers nothing.
        writer.write(0);
        assertEquals(mirror.value(), 0);
        assertEquals(recovered, 1);
        assertThrowsWith(
          () => openStateCell(region, { onMirrorError: "warn" as unknown as () => void }),
          TypeError,
          "onMirrorError is a string, not a function",
        );
        assertThrowsWith(
          () => openStateCell(region, { onMirrorRecovered: 1 as unknown as () => void }),
          TypeError,
          "onMirrorRecovered is a number, not a function",
        );
      }, "size=16k");
    });
  },
);

for (const kind of ["file", "shm"] as const) {
  testWith(
    NEEDS.files,
    `openState${
      kind === "file" ? "File" : "Shm"
    }() with beforeLink: told the new file's identity while nothing is at the path yet, and it appears whole; a throw there leaves nothing`,
    async () => {
      await withTempDir(async (dir) => {
        await withShmName((shm) => {
          const at = kind === "file" ? `${dir}/state` : `/dev/shm${shm}`;
          const open = (beforeLink: (identity: string) => void): StateFile =>
            kind === "file"
              ? openStateFile(at, { create: true, beforeLink })
              : openStateShm(shm, { create: true, beforeLink });
          assertThrowsWith(
            () =>
              open(() => {
                throw new Error("refused by the caller");
              }),
            Error,
            "refused by the caller",
          );
          assertEquals(statPath(at), undefined, "a file named though beforeLink threw");
          let told: string | undefined;
          using file = open((identity) => {
            assertEquals(statPath(at), undefined, "named before beforeLink was told");
            told = identity;
          });
          assert(file.created);
          assertEquals(told, file.identity);
          assertEquals(statPath(at)?.identity, file.identity);
          assertEquals(statPath(at)?.permissions, 0o600);
          // Read through it: Deno lets no test read /dev/shm by path without --allow-all.
          assertEquals(file.read(), { value: 0, size: 258, blank: false });
        });
      });
    },
  );
}

/**
 * Runs `tests/fixtures/unnamed_state_files.ts` under `wrapper` (a program and its arguments
 * before the fixture's command) and checks the state file and shm object it made: whole, 0600,
 * told to beforeLink, gone after a throw there. `namedBeforeLink`: whether the path held each
 * before beforeLink was told (made at its path at once), or not (made unnamed).
 */
async function checkUnnamedStateFiles(
  wrapper: [string, ...string[]],
  namedBeforeLink: boolean,
): Promise<void> {
  await withTempDir(async (dir) => {
    await withShmName(async (shm) => {
      const [program, ...before] = wrapper;
      const command = denoCommand(
        `${TESTS_DIR}fixtures/unnamed_state_files.ts`,
        [`${dir}/state`, shm],
        ["--allow-all"],
      );
      await using child = spawnProgram(program, [...before, ...command]);
      const status = await child.status();
      assert(status.success, child.transcript);
      const results = child.matching(/^\{/).map((line) => JSON.parse(line));
      assertEquals(results.map((result) => result.kind), ["file", "shm"], child.transcript);
      for (const result of results) {
        assertEquals(result, {
          kind: result.kind,
          thrown: "refused by the caller",
          leftAfterThrow: false,
          presentInBeforeLink: namedBeforeLink,
          told: true,
          created: true,
          identity: true,
          mode: 0o600,
          read: { value: 0, size: 258, blank: false },
        });
      }
    });
  });
}

testWith(
  [...NEEDS.system, requires("gcc")],
  "where no unnamed file can be made (O_TMPFILE refused with EOPNOTSUPP), openStateFile() and openStateShm() make the file at its path, set it up and tell beforeLink right after; a throw there removes it",
  async () => {
    await withTempDir(async (dir) => {
      await checkUnnamedStateFiles([await buildC(dir, "refuse_unnamed_files")], true);
    });
  },
);

testWith(
  [...NEEDS.system, requires("unshare"), requires("sh")],
  "where /proc is not mounted, a new state file or shm object is still made unnamed and named once set up (linkat with AT_EMPTY_PATH, not through /proc/self/fd)",
  async (t) => {
    if (await skippedWithoutRoot(t, "to mount over /proc in a mount namespace of its own")) return;
    // An empty tmpfs over /proc, in a mount namespace of the child's own; -m, as busybox's
    // unshare in the GPIO VMs may have no long options.
    await checkUnnamedStateFiles(
      ["unshare", "-m", "sh", "-c", 'mount -t tmpfs none /proc && exec "$@"', "sh"],
      false,
    );
  },
);

testWith(
  NEEDS.files,
  "openStateFile(): a file put at the path while the new one is made is opened instead (exclusive: AlreadyExists), and the new one is never named",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/state`;
      const putThere = (): void => Deno.writeTextFileSync(path, "1\n", { mode: 0o600 });
      let told: string | undefined;
      using file = openStateFile(path, {
        create: true,
        beforeLink: (identity) => {
          told ??= identity;
          putThere();
        },
      });
      assert(!file.created);
      assertEquals(file.value(), 1);
      assert(told !== undefined && told !== file.identity);
      Deno.removeSync(path);
      assertThrowsWith(
        () => openStateFile(path, { create: true, exclusive: true, beforeLink: putThere }),
        Deno.errors.AlreadyExists,
        path,
      );
      assertEquals(Deno.readTextFileSync(path), "1\n", "the file put there was touched");
    });
  },
);

testWith(
  NEEDS.files,
  "a mirror closed before its cell: a write is BadResource naming both and publishes nothing; what is no mirror is refused at open",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/state`;
      const mirror = openStateFile(path, { create: true });
      using region = createMemfdRegion({ size: 256 });
      using writer = openStateCell(region, { writer: true, mirror });
      using reader = openStateCell(region);
      mirror.close();
      // The value reached every reader, and then the write threw as if it had not.
      assertThrowsWith(() => writer.write(1), Deno.errors.BadResource, region.name, path, "closed");
      assertEquals(reader.read(), 0);
      assertThrowsWith(
        () => openStateCell(region, { mirror: {} as StateFile }),
        TypeError,
        "mirror is an Object, not a StateFile",
      );
    });
  },
);

testWith(
  NEEDS.files,
  "StateCell.waitForChangeSync() with a mirror, once its writer left, sleeps between looks at the file instead of spinning",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/state`;
      using mirror = openStateFile(path, { create: true });
      using region = createMemfdRegion({ size: 256 });
      using cell = openStateCell(region, { mirror });
      assertEquals(cell.read(), 0);
      // The sequence moves after the reader's last look, and then no writer holds the cell.
      const writer = openStateCell(region, { writer: true, mirror });
      writer.write(1);
      writer.close();
      // A spin takes a core for the whole wait, every time; a look at the file every 2.75 ms, a
      // few percent, and the runtime's own work (a compile, a collection) does not last: so up
      // to three waits, and one under half the wall time passes.
      const waits: string[] = [];
      for (let wait = 0; wait < 3; wait++) {
        const before = cpuUsage();
        const started = performance.now();
        assertThrowsWith(
          () => cell.waitForChangeSync({ from: 1, timeout: 400 }),
          Deno.errors.TimedOut,
          region.name,
        );
        const used = cpuUsage(before);
        const cpuMs = (used.user + used.system) / 1000;
        const wallMs = performance.now() - started;
        if (cpuMs < wallMs / 2) break;
        waits.push(`${cpuMs.toFixed(0)} ms of CPU in a ${wallMs.toFixed(0)} ms wait`);
      }
      assert(waits.length < 3, waits.join(", "));
      // The file is still followed: the original C button's write (no truncation) is seen.
      using file = Deno.openSync(path, { write: true });
      file.writeSync(encoder.encode("0\n"));
      assertEquals(cell.waitForChangeSync({ from: 1, timeout: 10_000 }), 0);
    });
  },
);

Deno.test("a write left half done (odd sequence) is waited out once per handle, not on every read", () => {
  using region = createMemfdRegion({ size: 256 });
  const writer = openStateCell(region, { writer: true });
  writer.write(5);
  writer.close();
  region.addInt32(76, 1); // the sequence word: a write begun and never finished
  const readers = Array.from({ length: 20 }, () => openStateCell(region));
  const timed = (fn: () => void): number => {
    const started = performance.now();
    fn();
    return performance.now() - started;
  };
  // Each handle's first read waits the write out, then takes the last complete value.
  const first = timed(() => readers.forEach((reader) => assertEquals(reader.read(), 5)));
  // The best of five: the first also compiles the code of that path, and the machine is shared.
  const again = Math.min(
    ...Array.from(
      { length: 5 },
      () => timed(() => readers.forEach((reader) => assertEquals(reader.read(), 5))),
    ),
  );
  assert(
    again * 20 < first,
    `later reads took ${again.toFixed(3)} ms, the first ${first.toFixed(3)}`,
  );
  for (const reader of readers) reader.close();
});

Deno.test("StateCell.changes() yields new values in order, coalesced, and ends on abort", async () => {
  using region = createMemfdRegion({ size: 256 });
  using writer = openStateCell(region, { writer: true });
  using cell = openStateCell(region);
  const controller = new AbortController();
  const seen: number[] = [];
  const done = (async () => {
    for await (const value of cell.changes({ signal: controller.signal, current: true })) {
      seen.push(value);
      if (value === 1000) controller.abort();
    }
  })();
  await delay(10);
  for (let i = 1; i <= 1000; i++) writer.write(i);
  await done;
  assertEquals(seen[0], 0);
  assertEquals(seen.at(-1), 1000);
  for (let i = 1; i < seen.length; i++) assert(seen[i] > seen[i - 1], `out of order: ${seen}`);
});

Deno.test("StateCell.close() ends an iteration in progress", async () => {
  using region = createMemfdRegion({ size: 256 });
  const cell = openStateCell(region);
  const iteration = (async () => {
    const values: number[] = [];
    for await (const value of cell.changes()) values.push(value);
    return values;
  })();
  await delay(10);
  cell.close();
  assertEquals(await iteration, []);
});

Deno.test("region.close() ends a pending changes() and rejects a pending timed wait", async () => {
  const region = createMemfdRegion({ size: 256 });
  const cell = openStateCell(region);
  const seen: number[] = [];
  const iterating = (async () => {
    for await (const value of cell.changes()) seen.push(value);
  })();
  const waiting = cell.waitForChange({ timeout: 60_000 });
  // The event loop must stay free: a timer set now still fires while both waits are pending.
  let timerFired = false;
  const timer = new Promise<void>((resolve) =>
    setTimeout(() => {
      timerFired = true;
      resolve();
    }, 5)
  );
  setTimeout(() => region.close(), 20);
  await assertRejectsWith(() => waiting, Deno.errors.BadResource, region.name, "closed");
  await iterating;
  await timer;
  assertEquals([timerFired, seen], [true, []]);
  assertThrows(() => cell.read(), Deno.errors.BadResource);
  cell.close(); // after its region: still fine
});

Deno.test("StateCell.close() before or after its region, twice, with using: all fine", () => {
  for (const regionFirst of [true, false]) {
    const region = createMemfdRegion({ size: 256 });
    const writer = openStateCell(region, { writer: true, supervisor: true });
    if (regionFirst) region.close();
    writer.close();
    writer[Symbol.dispose]();
    region.close();
    assertThrows(() => writer.write(1), Deno.errors.BadResource);
  }
  using region = createMemfdRegion({ size: 256 });
  {
    using writer = openStateCell(region, { writer: true });
    writer.write(1);
  }
  using again = openStateCell(region, { writer: true }); // the role was given back
  assertEquals(again.read(), 1);
});

Deno.test("a reader sees a writer that only writes the text (the original C button)", async () => {
  using region = createMemfdRegion({ size: 256 });
  using cell = openStateCell(region);
  const next = cell.waitForChange({ timeout: 10_000 });
  await delay(20);
  region.write(0, encoder.encode("1\n\0")); // no sequence bump, no wake: like sprintf()
  assertEquals(await next, 1);
});

/**
 * Waits on `reader` for `pauseMs`, checks that no Worker thread started since `before` (else
 * fails with `noWorker`), then writes `value` as the original C button does: the wait must see it
 * within moments, where it would last a minute, so by the reader's own looks.
 */
async function seenByLooks(
  region: SharedRegion,
  reader: StateCell,
  { before, pauseMs, value, noWorker }: {
    before: number;
    pauseMs: number;
    value: number;
    noWorker: string;
  },
): Promise<void> {
  const next = reader.waitForChange({ timeout: 60_000 });
  next.catch(() => {}); // awaited below; a failed assertion before that closes the reader
  await delay(pauseMs);
  assertEquals(workerThreads(), before, noWorker);
  region.write(0, encoder.encode(`${value}\n\0`));
  assertEquals(await within(next, GUARD_MS), value);
}

Deno.test("a reader whose writer left looks at the text itself during its grace, with no Worker", async () => {
  const before = await settledWorkerThreads();
  using region = createMemfdRegion({ size: 256 });
  // A grace and a wait no test comes near: only the reader's own looks can see the change.
  using reader = openStateCell(region, { followGraceMs: 60_000 });
  const writer = openStateCell(region, { writer: true });
  writer.write(1);
  const next = reader.waitForChange({ from: 1, timeout: 60_000 });
  next.catch(() => {}); // awaited below; a failed assertion before that closes the reader
  await delay(20);
  writer.close();
  await delay(200);
  assertEquals(workerThreads(), before, "a Worker started in the grace");
  region.write(0, encoder.encode("7\n\0")); // as the original C button writes
  // Seen by a look within moments, not at the end of the minute's wait.
  assertEquals(await within(next, GUARD_MS), 7);
  assertEquals(workerThreads(), before, "a Worker started in the grace");
});

Deno.test("each absence of the writer gets a grace of its own: a second restart costs no Worker either", async () => {
  const before = await settledWorkerThreads();
  using region = createMemfdRegion({ size: 256 });
  using reader = openStateCell(region, { followGraceMs: 2000 });
  let writer = openStateCell(region, { writer: true });
  const values: number[] = [];
  const seen = (async () => {
    for await (const value of reader.changes()) values.push(value);
  })();
  try {
    let most = 0;
    for (let round = 1; round <= 2; round++) {
      // Gone for a tenth of the grace, then back for longer than the grace.
      writer.close();
      await delay(200);
      most = Math.max(most, workerThreads());
      writer = openStateCell(region, { writer: true });
      writer.write(round);
      await until(() => values.at(-1) === round, `value ${round} seen`);
      if (round === 1) await delay(2500);
    }
    assertEquals(most, before, "a Worker started for a writer gone a moment");
    assertEquals(workerThreads(), before, "a Worker started for a writer gone a moment");
  } finally {
    writer.close();
    reader.close();
    await seen;
  }
});

Deno.test("the grace counts the time spent waiting: a reader that waits again after a pause gets a new one", async () => {
  const before = await settledWorkerThreads();
  using region = createMemfdRegion({ size: 256 });
  using reader = openStateCell(region, { followGraceMs: 1000 });
  await assertRejectsWith(() => reader.waitForChange({ timeout: 100 }), Deno.errors.TimedOut);
  await delay(1500); // no wait under way, for longer than the grace
  await seenByLooks(region, reader, {
    before,
    pauseMs: 300,
    value: 4,
    noWorker: "a Worker started at once, the grace spent while idle",
  });
});

Deno.test("followGraceMs: Infinity never starts a Worker, and the reader's own looks still see a foreign write", async () => {
  const before = await settledWorkerThreads();
  using region = createMemfdRegion({ size: 256 });
  using reader = openStateCell(region, { followGraceMs: Infinity });
  await seenByLooks(region, reader, {
    before,
    pauseMs: DEFAULT_FOLLOW_GRACE_MS + 500, // past the default grace
    value: 3,
    noWorker: "a Worker started",
  });
});

Deno.test("a writer back within a reader's grace costs it no Worker; one that stays away does", async () => {
  const before = await settledWorkerThreads();
  using region = createMemfdRegion({ size: 256 });
  const reader = openStateCell(region, { followGraceMs: 1000 });
  let writer = openStateCell(region, { writer: true });
  try {
    // A button that died and was started again: gone for a moment, then back.
    let next = reader.waitForChange({ timeout: 10_000 });
    next.catch(() => {}); // awaited below; a failed assertion before that closes the reader
    await delay(20);
    writer.close();
    await delay(100);
    writer = openStateCell(region, { writer: true });
    writer.write(1);
    assertEquals(await next, 1);
    assertEquals(workerThreads(), before, "a Worker started for a writer that came back");
    // Gone for good: the grace ends, and the Worker follows the text.
    next = reader.waitForChange({ timeout: 30_000 });
    next.catch(() => {});
    await delay(20);
    writer.close();
    await until(() => workerThreads() === before + 1, "the follower Worker started");
    region.write(0, encoder.encode("5\n\0"));
    assertEquals(await next, 5);
  } finally {
    writer.close();
    reader.close();
  }
  await until(() => workerThreads() === before, "the follower Worker ended");
});

Deno.test("readers go back to checking the text once the cooperating writer leaves", async () => {
  using region = createMemfdRegion({ size: 256 });
  using cell = openStateCell(region);
  const writer = openStateCell(region, { writer: true });
  const next = cell.waitForChange({ timeout: 10_000 });
  await delay(20);
  writer.close();
  region.write(0, encoder.encode("1\n\0"));
  assertEquals(await next, 1);
});

Deno.test("a write half done by a writer that died reads as the last complete value", () => {
  using region = createMemfdRegion({ size: 256 });
  using cell: StateCell = openStateCell(region);
  region.storeInt32(76, 13); // odd sequence: mid-write forever
  region.storeInt32(104, 9); // the value being written, set before the text
  region.write(0, encoder.encode("9\n\0")); // the half-written text nobody finished
  assertEquals(cell.read(), 0, "the value of the last complete write, not the torn text");
  using writer = openStateCell(region, { writer: true });
  assertEquals(region.loadInt32(76) % 2, 0);
  assertEquals(text(region.read(0, 3)), "0\n\0", "the new writer put the last value back");
  writer.write(1);
  assertEquals(cell.read(), 1);
});

// --- across processes ------------------------------------------------------------------------

testWith(
  NEEDS.childrenAndFiles,
  "a second writer in another process is refused by pid; a dead one's claim is taken",
  async () => {
    await withShmName(async (name) => {
      using region = openShmRegion(name, { create: true, size: 256 });
      openStateCell(region).close();
      await using holder = spawnDeno(PEER, ["hold-writer", "posix", name]);
      assertEquals(await holder.nextLine(), `writer ${holder.pid}`);
      assertThrowsWith(
        () => openStateCell(region, { writer: true }),
        Deno.errors.Busy,
        `pid ${holder.pid} holds it`,
      );
      holder.kill("SIGKILL");
      await holder.status();
      using cell = openStateCell(region, { writer: true });
      assertEquals(cell.writerPid, Deno.pid);
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a reader learns at once that its writer died, then follows a foreign writer's text",
  async () => {
    await withShmName(async (name) => {
      using region = openShmRegion(name, { create: true, size: 256 });
      openStateCell(region).close();
      await using holder = spawnDeno(PEER, ["hold-writer", "posix", name]);
      assertEquals(await holder.nextLine(), `writer ${holder.pid}`);
      const { events, died, onWriter } = writerEvents();
      // The follower Worker at once, as before the grace: what follows its start is the test.
      using reader = openStateCell(region, { onWriter, followGraceMs: 0 });
      const next = reader.waitForChange({ timeout: 30_000 });
      await delay(50); // the reader is asleep on the futex, listening to the writer's pidfd
      holder.kill("SIGKILL");
      await died; // no timer and no write is needed for the reader to learn it
      region.write(0, encoder.encode("7\n\0")); // the original C button writes only this
      assertEquals(await next, 7);
      assertEquals(events, [
        { pid: holder.pid, status: "writing" },
        { pid: holder.pid, status: "died" },
      ]);
    });
  },
);

Deno.test("closing the cell or its region from onWriter fails the waits with BadResource", async () => {
  for (const status of ["writing", "left"] as const) {
    for (const what of ["cell", "region"] as const) {
      const label = `${what} closed on "${status}"`;
      using region = createMemfdRegion({ size: 256 });
      using writer = openStateCell(region, { writer: true });
      const seen: string[] = [];
      const reader: StateCell = openStateCell(region, {
        onWriter: (event) => {
          seen.push(event.status);
          if (event.status === status) (what === "cell" ? reader : region).close();
        },
      });
      // On "writing" the first wait meets the writer; on "left" the writer goes while it sleeps.
      const waits = [
        reader.waitForChange({ timeout: 10_000 }),
        reader.waitForChange({ timeout: 10_000 }),
      ];
      if (status === "left") {
        await delay(20);
        writer.close();
      }
      for (const wait of waits) {
        // It was a TypeError: the callback's close emptied what the step that called it used.
        await assertRejectsWith(() => wait, Deno.errors.BadResource);
      }
      assertEquals(seen, status === "writing" ? ["writing"] : ["writing", "left"], label);
      await assertRejectsWith(() => reader.changes().next(), Deno.errors.BadResource);
      writer.close();
    }
  }
});

/**
 * Runs `fixtures/SCRIPT DIR ARGS...` (DIR a directory of the test's) with `flags`, hands it to
 * `use`, and checks that it then exits 0; the child is stopped and the directory removed even on
 * failure.
 */
async function withFollowerFixture(
  [script, ...args]: string[],
  flags: string[],
  use: (child: ChildProcess) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    await using child = spawnDeno(`${TESTS_DIR}fixtures/${script}`, [dir, ...args], {
      permissions: ["--allow-ffi", "--allow-read", "--allow-write", ...flags],
    });
    await use(child);
    assertEquals((await child.status()).code, 0);
  });
}

for (const ending of ["aborted", "ended by its timeout"]) {
  testWith(
    NEEDS.childrenAndFiles,
    `waits that share a follower go on when one of them is ${ending}, whatever the microtask the next starts in`,
    async () => {
      // In a child: before the fix the process hung for good, its event loop starved.
      const args = ["shared_follower.ts", ending === "aborted" ? "abort" : "timeout"];
      await withFollowerFixture(args, [], async (child) => {
        for (let hops = 0; hops < 16; hops++) {
          assertEquals(await child.nextLine(GUARD_MS), `${hops}: ${100 + hops} ${100 + hops}`);
        }
        assertEquals(await child.nextLine(GUARD_MS), "done");
      });
    },
  );
}

testWith(
  NEEDS.childrenAndFiles,
  "waits of a following reader that time out leave nothing behind in the heap",
  async () => {
    await withFollowerFixture(
      ["follower_waits_heap.ts"],
      ["--v8-flags=--expose-gc"],
      async (child) => {
        const line = await child.nextLine(60_000);
        const bytes = Number(/^bytes per wait (-?\d+)$/.exec(line)?.[1] ?? NaN);
        // Before the fix each wait left a call of the follower's next(): about 1 KiB.
        assert(bytes < 200, `the heap grew ${bytes} bytes per timed-out wait`);
      },
    );
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a reader blocked for minutes wakes on a write, without periodic wake-ups",
  async () => {
    await withShmName(async (name) => {
      using region = openShmRegion(name, { create: true, size: 256 });
      using writer = openStateCell(region, { writer: true });
      await using reader = spawnDeno(PEER, ["follow", "posix", name]);
      assertEquals(await reader.nextLine(), "ready 0");
      await delay(300); // let the runtime settle
      const before = allThreadSwitches(reader.pid);
      await delay(1000);
      const idle = allThreadSwitches(reader.pid) - before;
      writer.write(1);
      assertEquals(await reader.nextLine(), "value 1");
      writer.write(0);
      assertEquals(await reader.nextLine(), "value 0");
      // With no cooperating writer a Worker looks at the text every 2.75 ms (about 360 times a
      // second), and the event loop (the main thread) still sleeps until something changes.
      writer.close();
      await delay(300);
      const followingBefore = allThreadSwitches(reader.pid);
      const mainBefore = voluntarySwitches(reader.pid);
      await delay(1000);
      const following = allThreadSwitches(reader.pid) - followingBefore;
      const main = voluntarySwitches(reader.pid) - mainBefore;
      assert(idle < 50, `the idle reader's threads woke ${idle} times in a second`);
      assert(idle * 5 < following, `idle reader woke ${idle} times, a following one ${following}`);
      assert(main < 50, `the following reader's event loop woke ${main} times in a second`);
      region.write(0, encoder.encode("1\n\0")); // a foreign writer: text only
      assertEquals(await reader.nextLine(), "value 1");
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a synchronous wait in another process returns each write, and a foreign text once the writer leaves",
  async () => {
    await withShmName(async (name) => {
      using region = openShmRegion(name, { create: true, size: 256 });
      using writer = openStateCell(region, { writer: true });
      await using waiter = spawnDeno(PEER, ["wait-sync", "posix", name]);
      assertEquals(await waiter.nextLine(), "ready 0");
      await delay(100); // asleep, so that a wake-up, not the first look, returns the value
      writer.write(1);
      assertEquals(await waiter.nextLine(), "changed 1");
      // The writer's leaving wakes the waiter with no new value: it must look again at who
      // writes, and from then on follow the text (a writer of text only wakes nobody).
      writer.close();
      await delay(100);
      region.write(0, encoder.encode("7\n\0"));
      assertEquals(await waiter.nextLine(10_000), "changed 7");
      const status = await waiter.status();
      assertEquals(status.code, 0, status.stderr);
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a synchronous wait asleep in another process when a peer writes over the header and wakes it fails with InvalidData, and never returns the garbage as a change",
  async () => {
    await withShmName(async (name) => {
      using region = openShmRegion(name, { create: true, size: 256 });
      using _writer = openStateCell(region, { writer: true });
      await using waiter = spawnDeno(PEER, ["wait-sync", "posix", name]);
      assertEquals(await waiter.nextLine(), "ready 0");
      await delay(100); // asleep: the wake-up's own path must look at the header
      // A peer scribbles over the text and the control block (the value word among them).
      region.write(0, encoder.encode("garbage!".repeat(16)));
      region.notifyInt32(64 + 12); // the sequence word
      const status = await waiter.status();
      assertEquals(status.code, 1, status.stderr);
      assertStringIncludes(status.stderr, "InvalidData");
      assertStringIncludes(status.stderr, "its header was overwritten (found 0x62726167");
      assertEquals(waiter.matching(/^changed/), [], "the garbage returned as a change");
    });
  },
);

testWith(NEEDS.childrenAndFiles, "an aborted wait lets the process exit", async () => {
  await withShmName(async (name) => {
    using region = openShmRegion(name, { create: true, size: 256 });
    using _writer = openStateCell(region, { writer: true });
    await using waiter = spawnDeno(PEER, ["abort-wait", "posix", name]);
    assertEquals(await waiter.nextLine(), "aborted TimeoutError");
    const status = await waiter.status();
    assertEquals(status.code, 0, status.stderr);
  });
});

testWith(
  NEEDS.children,
  "a reader whose loop of waits ends lets go of what it listened to: its process ends by itself, the cell still open",
  async () => {
    using region = createMemfdRegion({ size: 256 });
    using writer = openStateCell(region, { writer: true });
    await using reader = spawnDeno(`${TESTS_DIR}fixtures/idle_release.ts`, [region.name, "20"]);
    assertEquals(await reader.nextLine(), "ready");
    for (let value = 1; value <= 20; value++) {
      writer.write(value);
      assertEquals(await reader.nextLine(), `changed ${value}`);
    }
    const status = await reader.status({ timeoutMs: GUARD_MS });
    assertEquals(status.code, 0, reader.transcript);
  },
);

/** Round trips per echo test: enough to have caught the ring's lost wake-ups under load. */
const ECHO_ROUNDS = loadRounds(10_000);

/**
 * Writes 1..ECHO_ROUNDS into the cell at 0 and waits each time for the peer to echo it into the
 * cell at 128: every wake-up in both directions must arrive, since nothing else would end a
 * wait. Another process spins on a core meanwhile, so sleepers and wakers are preempted at
 * every point, as on a busy machine.
 */
async function echoUnderLoad(peerMode: "echo" | "echo-sync"): Promise<void> {
  using region = createMemfdRegion({ size: 256 });
  using out = openStateCell(region, { writer: true });
  using back = openStateCell(region, { offset: 128 });
  await using _spinner = spawnProgram("sh", ["-c", "while :; do :; done"]);
  await using peer = spawnDeno(PEER, [peerMode, "memfd", region.name]);
  assertEquals(await peer.nextLine(), "ready 0");
  for (let round = 1; round <= ECHO_ROUNDS; round++) {
    out.write(round);
    try {
      assertEquals(await back.waitForChange({ from: round - 1, timeout: 5_000 }), round);
    } catch (error) {
      if (!(error instanceof Deno.errors.TimedOut)) throw error;
      const seen = back.read() === round ? "the echo was there: a lost wake-up here" : "no echo";
      throw new Error(`Round ${round} of ${ECHO_ROUNDS}: ${seen}\n${peer.transcript}`);
    }
  }
  out.write(-1);
  const status = await peer.status();
  assertEquals(status.code, 0, peer.transcript);
}

testWith(
  NEEDS.children,
  "no wake-up is lost between processes under load: waitForChange() on both sides",
  () => echoUnderLoad("echo"),
);

testWith(
  NEEDS.children,
  "no wake-up is lost between processes under load: waitForChangeSync() in the peer",
  () => echoUnderLoad("echo-sync"),
);

Deno.test("a writer dead in the middle of a write, then a writer of text only: its value is seen, never the half-done text", () => {
  const sequence = 76; // byte offsets in the cell, as lib/state_cell.ts lays it out
  const writerClaim = 88;
  const pending = 104;
  using region = createMemfdRegion({ size: 256 });
  using writer = openStateCell(region, { writer: true });
  using reader = openStateCell(region);
  writer.write(25);
  // The writer dies between its two sequence increments, one byte into "31\n": the text reads
  // "35", a value nobody wrote. A pid beyond the kernel's (2^22) is a dead holder.
  region.addInt32(sequence, 1);
  region.storeInt32(pending, 31);
  region.write(0, encoder.encode("3"));
  new BigInt64Array(region.view(writerClaim, 8).buffer)[0] = 2n ** 22n + 1n;
  assertEquals(reader.read(), 25, "the half-done text was taken for a value");
  assertEquals(reader.read(), 25);
  // The original C button writes its text, knowing nothing of the sequence.
  region.write(0, encoder.encode("1\n\0"));
  assertEquals(reader.read(), 1, "a foreign write after the dead writer was not seen");
  assertEquals(reader.waitForChangeSync({ from: 25, timeout: 1_000 }), 1);
  region.write(0, encoder.encode("0\n\0"));
  assertEquals(reader.waitForChangeSync({ from: 1, timeout: 1_000 }), 0);
});

/** A cell whose writer died one byte into writing 31 over 25: the text reads "35". */
function cellLeftHalfWritten(region: SharedRegion): void {
  using writer = openStateCell(region, { writer: true });
  writer.write(25);
  region.addInt32(76, 1); // the sequence: odd
  region.storeInt32(104, 31); // the value being written
  region.write(0, encoder.encode("3"));
  // A pid beyond the kernel's (2^22) is a dead holder; the handle's close must not release it.
  new BigInt64Array(region.view(88, 8).buffer)[0] = 2n ** 22n + 1n;
}

Deno.test("a new writer after one that died mid-write puts the last complete value back over the torn text", () => {
  using region = createMemfdRegion({ size: 256 });
  cellLeftHalfWritten(region);
  using writer = openStateCell(region, { writer: true });
  assertEquals(writer.read(), 25, "the torn text was taken for a value");
  assertEquals(text(region.read(0, 4)), "25\n\0");
});

Deno.test("a foreign write over a write left half done is kept by a new writer and seen by a new reader", () => {
  using region = createMemfdRegion({ size: 256 });
  cellLeftHalfWritten(region);
  // The original C button writes its text, knowing nothing of the sequence.
  region.write(0, encoder.encode("7\n\0"));
  using reader = openStateCell(region);
  assertEquals(reader.read(), 7, "a reader opened after the foreign write did not see it");
  using writer = openStateCell(region, { writer: true });
  assertEquals(writer.read(), 7, "the new writer put the last complete value over a foreign write");
  assertEquals(text(region.read(0, 3)), "7\n\0");
  assertEquals(region.loadInt32(76) % 2, 0);
  assertEquals(reader.read(), 7);
});

Deno.test("a write left half done by a live writer (stopped): its text moving on is not yet a value", () => {
  using region = createMemfdRegion({ size: 256 });
  using writer = openStateCell(region, { writer: true });
  using reader = openStateCell(region);
  writer.write(25);
  region.addInt32(76, 1); // the sequence: odd, a write under way
  region.storeInt32(104, 31); // of 31
  region.write(0, encoder.encode("3"));
  assertEquals(reader.read(), 25);
  region.write(1, encoder.encode("1")); // the stopped writer resumed: "31", the sequence still odd
  assertEquals(reader.read(), 25, "a text under a live writer's unfinished write was taken");
});
