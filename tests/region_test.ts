import { assert, assertEquals, assertMatch, assertStringIncludes, assertThrows } from "@std/assert";
import { assertRejectsWith, assertThrowsWith } from "./helpers/assertions.ts";
import { ROOT, TESTS_DIR } from "./helpers/paths.ts";
import { isRoot, NEEDS, requires, skippedWithoutRoot, testWith } from "./helpers/permissions.ts";
import { buildC, denoCommand, spawnDeno, spawnProgram } from "./helpers/spawn.ts";
import { uniqueSysvKey, withMount, withShmName, withTempDir } from "./helpers/temp.ts";
import { delay, wakeEach } from "./helpers/waiting.ts";
import {
  createMemfdRegion,
  MAX_REGION_SIZE,
  openFileRegion,
  openMemfdRegion,
  openShmRegion,
  openStateCell,
  openStateFile,
  openSysvRegion,
  removeShm,
  type SharedRegion,
} from "../mod.ts";
import { OWN_CALLS } from "../ffi/futex_hub.ts";
import * as C from "../ffi/constants.ts";
import type { OsError } from "../ffi/errno.ts";
import { libc } from "../ffi/libc.ts";
import { heldMappings, MAX_MAPPINGS } from "../ffi/mapping.ts";
import {
  closeFd,
  effectiveUid,
  makeFifo,
  memfdCreate,
  readFileText,
  sealSize,
  statPath,
  sysvGet,
  sysvKeyText,
  sysvRemove,
  sysvStat,
  truncateFd,
  unlinkPath,
} from "../ffi/posix.ts";
import { openFifoButton } from "../hw/fifo_button.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// --- file regions ----------------------------------------------------------------------------

testWith(NEEDS.files, "openFileRegion() creates a 0600 file of the asked size", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/state.dat`;
    using region = openFileRegion(path, { create: true, size: 300 });
    assertEquals(region.kind, "file");
    assertEquals(region.name, path);
    assertEquals(region.size, 300);
    const stat = Deno.lstatSync(path);
    assertEquals((stat.mode ?? 0) & 0o777, 0o600);
    assertEquals(stat.size, 300);
  });
});

testWith(NEEDS.files, "openFileRegion() shares writes between two handles", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/state.dat`;
    using writer = openFileRegion(path, { create: true, size: 64 });
    using reader = openFileRegion(path);
    writer.write(10, encoder.encode("hello"));
    assertEquals(decoder.decode(reader.read(10, 5)), "hello");
    writer.storeInt32(32, 1234);
    assertEquals(reader.loadInt32(32), 1234);
    assertEquals(reader.addInt32(32, 1), 1234);
    assertEquals(writer.compareExchangeInt32(32, 1235, 7), 1235);
    assertEquals(reader.loadInt32(32), 7);
  });
});

testWith(
  NEEDS.files,
  "openFileRegion() opens the original's 258-byte file and never shrinks it",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/data.dat`;
      const original = new Uint8Array(258);
      original.set(encoder.encode("1\n\0"));
      Deno.writeFileSync(path, original, { mode: 0o600 });
      using region = openFileRegion(path, { size: 256 });
      assertEquals(region.size, 256);
      assertEquals(Deno.statSync(path).size, 258);
      assertEquals(region.read(0, 3), encoder.encode("1\n\0"));
    });
  },
);

testWith(NEEDS.files, "openFileRegion() grows a shorter existing file", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/short.dat`;
    Deno.writeFileSync(path, encoder.encode("0\n"), { mode: 0o600 });
    using region = openFileRegion(path, { size: 4096 });
    assertEquals(Deno.statSync(path).size, 4096);
    assertEquals(region.read(0, 2), encoder.encode("0\n"));
  });
});

testWith(
  NEEDS.files,
  "openFileRegion() without create reports a missing file as NotFound",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/missing.dat`;
      assertThrowsWith(
        () => openFileRegion(path, { size: 64 }),
        Deno.errors.NotFound,
        path,
        "ENOENT",
      );
      assertThrows(() => Deno.lstatSync(path), Deno.errors.NotFound);
    });
  },
);

testWith(NEEDS.files, "openFileRegion() with exclusive refuses an existing file", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/taken.dat`;
    Deno.writeFileSync(path, encoder.encode("mine"), { mode: 0o600 });
    assertThrowsWith(
      () => openFileRegion(path, { create: true, exclusive: true, size: 64 }),
      Deno.errors.AlreadyExists,
      path,
      "EEXIST",
    );
    assertEquals(Deno.readTextFileSync(path), "mine");
  });
});

testWith(
  NEEDS.files,
  "openFileRegion() rejects a symlink and leaves its target alone",
  async () => {
    await withTempDir((dir) => {
      const target = `${dir}/target.dat`;
      const link = `${dir}/link.dat`;
      Deno.writeFileSync(target, encoder.encode("precious"), { mode: 0o600 });
      Deno.symlinkSync(target, link);
      for (const options of [{}, { create: true, size: 64 }]) {
        assertThrowsWith(
          () => openFileRegion(link, options),
          Deno.errors.FilesystemLoop,
          link,
          "symbolic link",
        );
      }
      assertEquals(Deno.readTextFileSync(target), "precious");
      assert(Deno.lstatSync(link).isSymlink);
    });
  },
);

testWith(
  NEEDS.files,
  "openFileRegion() rejects a dangling symlink instead of creating its target",
  async () => {
    await withTempDir((dir) => {
      const link = `${dir}/dangling.dat`;
      Deno.symlinkSync(`${dir}/would-be-created`, link);
      assertThrowsWith(
        () => openFileRegion(link, { create: true, size: 64 }),
        Deno.errors.FilesystemLoop,
        link,
      );
      assertThrows(() => Deno.lstatSync(`${dir}/would-be-created`), Deno.errors.NotFound);
    });
  },
);

testWith(NEEDS.files, "openFileRegion() rejects a directory", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/sub`;
    Deno.mkdirSync(path);
    assertThrowsWith(
      () => openFileRegion(path, { create: true, size: 64 }),
      Deno.errors.IsADirectory,
      path,
      "directory",
    );
  });
});

testWith(NEEDS.files, "openFileRegion() rejects a FIFO without opening it", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/pipe`;
    makeFifo(path, 0o600);
    assertThrowsWith(
      () => openFileRegion(path, { size: 64 }),
      Deno.errors.InvalidData,
      path,
      "fifo",
    );
    assert(Deno.lstatSync(path).isFifo);
  });
});

testWith(
  NEEDS.files,
  "a file of the kernel's (/proc, /sys) is refused as a region and as a state file, and left as it is",
  () => {
    // Ours as root, so the owner check let them through: a state written to
    // /proc/sys/vm/swappiness would have set the kernel's tunable.
    const paths = ["/proc/self/status", "/proc/sys/vm/swappiness", "/sys/kernel/mm/ksm/run"];
    for (const path of paths.filter((path) => statPath(path) !== undefined)) {
      for (const open of [() => openFileRegion(path), () => openStateFile(path).close()]) {
        // Not ours unless root: then it is PermissionDenied before anything else.
        if (!isRoot()) assertThrows(open, Deno.errors.PermissionDenied);
        else assertThrowsWith(open, Deno.errors.InvalidData, path, "the kernel's", "left as");
      }
    }
  },
);

testWith(
  NEEDS.files,
  "openStateFile() refuses a small binary file that starts with a NUL (an icon, UTF-16 text) and leaves it as it is; an all-NUL file and a state with a leftover after its NUL are taken",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/given.dat`;
      const icon = new Uint8Array(1_150);
      icon.set([0, 0, 1, 0, 1, 0, 16, 16, 0, 0, 1, 0, 32, 0, 0x68, 4, 0, 0, 22, 0]);
      icon.fill(0xab, 22);
      const utf16 = new Uint8Array([0, 0x4e, 0, 0x6f, 0, 0x74, 0, 0x65, 0, 0x73, 0, 0x0a]);
      for (const theirs of [icon, utf16, new Uint8Array([0x0a, 0, 0x50, 0x4b])]) {
        Deno.writeFileSync(path, theirs, { mode: 0o600 });
        assertThrowsWith(
          () => openStateFile(path).close(),
          Deno.errors.InvalidData,
          path,
          "something other than a state",
          "left as it is",
        );
        assertEquals(Deno.readFileSync(path), theirs, "the file was changed");
      }
      // What the format leaves: the original's fresh file, and "1\n\0" written over "12345\n".
      for (const state of [new Uint8Array(258), encoder.encode("1\n\x0045\n\0\0")]) {
        Deno.writeFileSync(path, state, { mode: 0o600 });
        openStateFile(path).close();
      }
    });
  },
);

testWith(
  NEEDS.files,
  "openStateFile() takes only ASCII white space around the number, as sscanf does: a file of non-breaking spaces, or a number after a byte-order mark, is refused and left as it is",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/given.txt`;
      for (const theirs of ["\u00a0\u00a0\n", "\u3000", "\u2028\n", "\ufeff1\n"]) {
        Deno.writeTextFileSync(path, theirs, { mode: 0o600 });
        assertThrowsWith(
          () => openStateFile(path).close(),
          Deno.errors.InvalidData,
          path,
          "something other than a state",
        );
        assertEquals(Deno.readTextFileSync(path), theirs, "the file was changed");
      }
      Deno.writeTextFileSync(path, " \t1\r\n\v\f", { mode: 0o600 });
      using state = openStateFile(path);
      assertEquals(state.read().value, 1);
    });
  },
);

testWith(
  NEEDS.files,
  "StateFile.mode is the file's permission bits now, a chmod since included, and BadResource once closed",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/state.dat`;
      const state = openStateFile(path, { create: true });
      assertEquals(state.mode, 0o600);
      Deno.chmodSync(path, 0o4666);
      assertEquals(state.mode, 0o4666);
      state.close();
      assertThrowsWith(() => state.mode, Deno.errors.BadResource, path, "is closed");
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("sh")],
  "what is made under a umask that takes the owner's bits away (0377) gets its mode all the same: a private directory 0700, a FIFO, a state file, a file region, shm and a claim record 0600",
  async () => {
    await withTempDir(async (dir) => {
      await withShmName(async (shm) => {
        const script = `${dir}/make.ts`;
        Deno.writeTextFileSync(
          script,
          `import { createFifo, ensurePrivateDirectory } from "${ROOT}lib/owned_path.ts";
import { openFileRegion, openShmRegion, openStateFile } from "${ROOT}mod.ts";
import { claimPaths } from "${ROOT}app/path_claims.ts";
const dir = Deno.args[0];
ensurePrivateDirectory(dir + "/private");
createFifo(dir + "/private/button.fifo");
openStateFile(dir + "/state.dat", { create: true }).close();
openFileRegion(dir + "/region", { create: true, size: 64 }).close();
openShmRegion(Deno.args[1], { create: true, size: 64 }).close();
const roots = { sessions: dir + "/none", shared: dir + "/private" };
const held = claimPaths([{ kind: "state file", path: dir + "/state.dat" }], { roots });
const claims = dir + "/private/mmap-ipc-" + Deno.uid() + "/claims";
for (const { name } of Deno.readDirSync(claims)) {
  console.log(((Deno.lstatSync(claims + "/" + name).mode ?? 0) & 0o777).toString(8));
}
for (const claim of held) claim.release();
`,
        );
        const [deno, ...args] = denoCommand(script, [dir, shm], ["--allow-all"]);
        const output = await new Deno.Command("sh", {
          args: ["-c", 'umask 0377; exec "$@"', "sh", deno, ...args],
        }).output();
        assert(output.success, new TextDecoder().decode(output.stderr));
        const records = new TextDecoder().decode(output.stdout).trim().split("\n");
        const mode = (path: string): string =>
          ((statPath(path)?.permissions ?? 0) & 0o777).toString(8);
        // effectiveUid(), not Deno.uid(): the suite runs without --allow-sys.
        const claims = `${dir}/private/mmap-ipc-${effectiveUid()}/claims`;
        assertEquals(
          {
            private: mode(`${dir}/private`),
            fifo: mode(`${dir}/private/button.fifo`),
            state: mode(`${dir}/state.dat`),
            region: mode(`${dir}/region`),
            shm: mode(`/dev/shm${shm}`),
            claims: mode(claims),
            records,
          },
          {
            private: "700",
            fifo: "600",
            state: "600",
            region: "600",
            shm: "600",
            claims: "700",
            records: records.map(() => "600"),
          },
        );
      });
    });
  },
);

testWith(NEEDS.files, "openFileRegion() rejects a device", () => {
  assertThrowsWith(
    () => openFileRegion("/dev/null", { size: 64 }),
    Deno.errors.InvalidData,
    "/dev/null",
    "character device",
  );
});

testWith(NEEDS.files, "openFileRegion() rejects a file of another owner", async (t) => {
  if (await skippedWithoutRoot(t, "to chown a file")) return;
  await withTempDir((dir) => {
    const path = `${dir}/theirs.dat`;
    Deno.writeFileSync(path, new Uint8Array(256), { mode: 0o600 });
    Deno.chownSync(path, 65534, 65534);
    assertThrowsWith(() => openFileRegion(path), Deno.errors.PermissionDenied, path, "uid 65534");
    assertEquals(Deno.statSync(path).size, 256);
  });
});

testWith(
  NEEDS.files,
  "openFileRegion() rejects a directory others can write without the sticky bit",
  async () => {
    await withTempDir((dir) => {
      const open = `${dir}/open`;
      Deno.mkdirSync(open);
      Deno.chmodSync(open, 0o777);
      const path = `${open}/state.dat`;
      assertThrowsWith(
        () => openFileRegion(path, { create: true, size: 64 }),
        Deno.errors.PermissionDenied,
        path,
        "writable by other users",
      );
      Deno.chmodSync(open, 0o1777); // sticky, like /tmp: allowed
      using region = openFileRegion(path, { create: true, size: 64 });
      assertEquals(region.size, 64);
    });
  },
);

testWith(
  NEEDS.files,
  "a file under a directory another user could rename is refused: region, state file and FIFO directory, naming that directory",
  async () => {
    await withTempDir((dir) => {
      // Whoever may write open/ can rename own/ away and put a directory of theirs in its place,
      // however private own/ is.
      const open = `${dir}/open`;
      const own = `${open}/own`;
      Deno.mkdirSync(own, { recursive: true });
      Deno.chmodSync(own, 0o700);
      Deno.chmodSync(open, 0o777);
      const why = `the directory ${open} above it is writable by other users and not sticky`;
      const region = `${own}/region.dat`;
      assertThrowsWith(
        () => openFileRegion(region, { create: true, size: 64 }),
        Deno.errors.PermissionDenied,
        region,
        why,
      );
      const state = `${own}/state.txt`;
      assertThrowsWith(
        () => openStateFile(state, { create: true }),
        Deno.errors.PermissionDenied,
        why,
      );
      const fifo = `${own}/fifos/button.fifo`;
      assertThrowsWith(
        () => openFifoButton(fifo, { remakeDirectory: true }),
        Deno.errors.PermissionDenied,
        why,
      );
      assertEquals([...Deno.readDirSync(own)], [], "nothing was made");
      // A path ending in "/" names a directory (it was a bare ENOENT).
      Deno.chmodSync(open, 0o755);
      for (
        const open of [
          () => openFileRegion(`${own}/`, { create: true, size: 64 }),
          () => openStateFile(`${own}/x/`, { create: true }),
          () => openFifoButton(`${own}/b/`),
        ]
      ) {
        assertThrowsWith(open, Deno.errors.IsADirectory, 'ends in "/"');
      }
      Deno.chmodSync(open, 0o777);
      // Reached through a symlink, the directories the kernel resolves are the ones checked.
      const link = `${dir}/link`;
      Deno.symlinkSync(own, link);
      assertThrowsWith(
        () => openFileRegion(`${link}/region.dat`, { create: true, size: 64 }),
        Deno.errors.PermissionDenied,
        "writable by other users and not sticky",
      );
      // A symlink in a directory others may write leads to a safe place, but they may point it
      // elsewhere: the link is refused, where it is, not only where it leads.
      const safe = `${dir}/safe`;
      Deno.mkdirSync(safe, { mode: 0o700 });
      Deno.symlinkSync(safe, `${open}/to-safe`);
      assertThrowsWith(
        () => openStateFile(`${open}/to-safe/state.txt`, { create: true }),
        Deno.errors.PermissionDenied,
        `the symbolic link ${open}/to-safe on its way is in ${open}, which is writable by other users`,
      );
      assertEquals([...Deno.readDirSync(safe)], []);
      Deno.chmodSync(open, 0o1777); // sticky, like /tmp: only own/'s owner may rename it
      using _viaLink = openStateFile(`${open}/to-safe/state.txt`, { create: true });
      using made = openFileRegion(region, { create: true, size: 64 });
      assertEquals(made.size, 64);
      using _state = openStateFile(state, { create: true });
      Deno.chmodSync(open, 0o755);
      using _also = openFileRegion(`${link}/region.dat`, { size: 64 });
    });
  },
);

testWith(
  [
    ...NEEDS.childrenAndFiles,
    requires("unshare", { probe: ["--user", "--map-root-user", "true"] }),
  ],
  "above a file's directory, an owner outside the user namespace counts as root (as in a rootless container); outside one, that owner is refused",
  async (t) => {
    if (await skippedWithoutRoot(t, "to make a directory another user owns")) return;
    await withTempDir(async (dir) => {
      const theirs = `${dir}/theirs`;
      const mine = `${theirs}/mine`;
      Deno.mkdirSync(mine, { recursive: true });
      Deno.chmodSync(mine, 0o700);
      Deno.chmodSync(theirs, 0o755);
      Deno.chownSync(theirs, 12345, 12345);
      const path = `${mine}/state.txt`;
      assertThrowsWith(
        () => openStateFile(path, { create: true }),
        Deno.errors.PermissionDenied,
        `the directory ${theirs} above it belongs to uid 12345`,
      );
      // In a user namespace that maps only root, uid 12345 shows as the overflow uid, as root's
      // directories do in a rootless container: there it cannot be told from root.
      const script = `${dir}/open.ts`;
      Deno.writeTextFileSync(
        script,
        `import { openStateFile } from ${JSON.stringify(`${ROOT}lib/state_file.ts`)};\n` +
          "openStateFile(Deno.args[0], { create: true }).close();\n" +
          'console.log("opened");\n',
      );
      await using child = spawnProgram("unshare", [
        ...["--user", "--map-root-user"],
        ...denoCommand(script, [path], ["--allow-all"]),
      ]);
      const status = await child.status();
      assertEquals(status.code, 0, status.stderr);
      assertEquals(statPath(path)?.type, "file");
    });
  },
);

testWith(NEEDS.files, "openFileRegion() rejects an empty file opened without create", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/empty.dat`;
    Deno.writeFileSync(path, new Uint8Array(0), { mode: 0o600 });
    for (const options of [{}, { size: 256 }]) {
      assertThrowsWith(() => openFileRegion(path, options), Deno.errors.InvalidData, path, "empty");
    }
    using region = openFileRegion(path, { create: true, size: 256 });
    assertEquals(region.size, 256);
  });
});

testWith(
  NEEDS.files,
  "openFileRegion() rejects negative, fractional and absurd sizes",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/sized.dat`;
      for (const size of [-1, 0, 1.5, MAX_REGION_SIZE + 1, Infinity, NaN]) {
        assertThrowsWith(
          () => openFileRegion(path, { create: true, size }),
          RangeError,
          path,
          `size ${size}`,
        );
      }
      assertThrows(() => openFileRegion(path, { create: true }), TypeError);
      assertThrows(() => Deno.lstatSync(path), Deno.errors.NotFound);
    });
  },
);

testWith(NEEDS.files, "SharedRegion.unlink() refuses a path that was replaced", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/state.dat`;
    using region = openFileRegion(path, { create: true, size: 64 });
    Deno.removeSync(path);
    Deno.writeFileSync(path, encoder.encode("someone else's"));
    assertThrowsWith(() => region.unlink(), Deno.errors.NotFound, path);
    assertEquals(Deno.readTextFileSync(path), "someone else's");
    Deno.removeSync(path);
    using again = openFileRegion(path, { create: true, size: 64 });
    again.unlink();
    assertThrows(() => Deno.lstatSync(path), Deno.errors.NotFound);
  });
});

// --- access checks ---------------------------------------------------------------------------

Deno.test("SharedRegion accessors are bounds-checked", () => {
  using region = createMemfdRegion({ size: 64 });
  assertThrows(() => region.read(60, 8), RangeError);
  assertThrows(() => region.read(-1, 1), RangeError);
  assertThrows(() => region.write(63, new Uint8Array(2)), RangeError);
  assertThrows(() => region.loadInt32(64), RangeError);
  assertThrows(() => region.loadInt32(2), RangeError);
  assertThrows(() => region.storeInt32(1.5, 0), RangeError);
  region.write(60, new Uint8Array([1, 2, 3, 4]));
  assertEquals(region.read(60, 4), new Uint8Array([1, 2, 3, 4]));
});

Deno.test("SharedRegion's atomic calls take only numbers a 32-bit word holds, and run no code of the value's", async () => {
  using region = createMemfdRegion({ size: 64 });
  region.storeInt32(0, -(2 ** 31));
  assertEquals(region.loadInt32(0), -(2 ** 31));
  region.storeInt32(0, 2 ** 32 - 1); // unsigned: the same bits as -1
  assertEquals(region.loadInt32(0), -1);
  assertEquals(region.compareExchangeInt32(0, 0xffff_ffff, 5), -1);
  assertEquals(region.addInt32(0, -6), 5);
  // Atomics stored 2^32 + 5 as 5 and NaN, null or "12" as 0 or 12, and added 1 for 1.5.
  const bad: [unknown, typeof RangeError | typeof TypeError, string][] = [
    [2 ** 32 + 5, RangeError, "the value 4294967301 is not a whole number that fits in 32 bits"],
    [-(2 ** 31) - 1, RangeError, "the value -2147483649 is not a whole number"],
    [1.5, RangeError, "the value 1.5 is not"],
    [NaN, RangeError, "the value NaN is not"],
    [Infinity, RangeError, "the value Infinity is not"],
    [null, TypeError, "the value is null, not a number that fits in 32 bits"],
    [undefined, TypeError, "the value is undefined, not a number"],
    ["12", TypeError, "the value is a string, not a number"],
    [12n, TypeError, "the value is a bigint, not a number"],
  ];
  for (const [value, ErrorClass, message] of bad) {
    const untyped = value as number;
    assertThrowsWith(
      () => region.storeInt32(0, untyped),
      ErrorClass,
      `Cannot store into region ${JSON.stringify(region.name)}: ${message}`,
    );
    assertThrowsWith(() => region.addInt32(0, untyped), ErrorClass, "the delta");
    assertThrowsWith(() => region.compareExchangeInt32(0, untyped, 1), ErrorClass, "expected");
    assertThrowsWith(() => region.compareExchangeInt32(0, -1, untyped), ErrorClass, "replacement");
    await assertRejectsWith(() => region.waitInt32(0, untyped), ErrorClass, "expected value");
  }
  assertEquals(region.loadInt32(0), -1, "nothing was stored");
  // An object's valueOf() closed the region inside Atomics: a TypeError of V8's, not one of ours.
  let called = 0;
  const sly = { valueOf: (): number => (called++, region.close(), 7) } as unknown as number;
  assertThrowsWith(() => region.storeInt32(0, sly), TypeError, "is an Object, not a number");
  assertEquals(called, 0);
});

Deno.test("SharedRegion after close throws BadResource, and close twice is fine", () => {
  const region = createMemfdRegion({ size: 64 });
  const copy = region.read(0, 8);
  region.close();
  region.close();
  assertEquals(region.closed, true);
  assertEquals(copy.length, 8); // copies outlive the mapping
  for (
    const use of [
      () => region.read(0, 1),
      () => region.write(0, new Uint8Array(1)),
      () => region.loadInt32(0),
      () => region.size,
      () => region.sync(),
      () => region.notifyInt32(0),
    ]
  ) {
    assertThrowsWith(use, Deno.errors.BadResource, "closed");
  }
});

Deno.test("write() and readInto() without bytes, and a memfd label with a NUL, are TypeErrors that name what failed", () => {
  const region = createMemfdRegion({ size: 64 });
  for (
    const [use, what] of [
      [() => region.write(0, null as unknown as Uint8Array), "bytes is null"],
      [() => region.readInto(0, undefined as unknown as Uint8Array), "target is undefined"],
    ] as const
  ) {
    // It was "Cannot read properties of null (reading 'length')".
    assertThrowsWith(use, TypeError, `Cannot access ${JSON.stringify(region.name)}: ${what}`);
  }
  region.close();
  assertThrowsWith(() => region.write(0, null as unknown as Uint8Array), Deno.errors.BadResource);
  assertThrowsWith(
    () => createMemfdRegion({ size: 64, label: "a\0b" }),
    TypeError,
    'Cannot create memfd "a\\u0000b": a label is a string without NUL bytes',
  );
});

Deno.test("SharedRegion works with using", () => {
  let outer: SharedRegion;
  {
    using region = createMemfdRegion({ size: 64 });
    outer = region;
    region.storeInt32(0, 1);
  }
  assertEquals(outer.closed, true);
});

Deno.test("SharedRegion.waitInt32() wakes on notify, times out, and aborts", async () => {
  using region = createMemfdRegion({ size: 64 });
  assertEquals(await region.waitInt32(0, 5), "not-equal");
  assertEquals(await region.waitInt32(0, 0, { timeout: 20 }), "timed-out");
  const waiting = region.waitInt32(0, 0);
  setTimeout(() => {
    region.storeInt32(0, 1);
    region.notifyInt32(0);
  }, 20);
  assertEquals(await waiting, "ok");
  const controller = new AbortController();
  const aborted = region.waitInt32(0, 1, { signal: controller.signal });
  setTimeout(() => controller.abort(new Error("stop waiting")), 20);
  await assertRejectsWith(() => aborted, Error, "stop waiting");
});

Deno.test("SharedRegion.notifyInt32() wakes as many as asked, 0 none, and refuses other counts", async () => {
  using region = createMemfdRegion({ size: 64 });
  const controller = new AbortController();
  const ended: string[] = [];
  const waits = [1, 2, 3].map(() =>
    region.waitInt32(0, 0, { signal: controller.signal }).then((result) => {
      ended.push(result);
      return result;
    })
  );
  try {
    for (const count of [-1, 1.5, NaN, -Infinity, "2"]) {
      // 1.5 and NaN were an FFI TypeError that named neither the call nor the count.
      assertThrowsWith(
        () => region.notifyInt32(0, count as number),
        RangeError,
        region.name,
        `count ${typeof count === "string" ? `"${count}"` : count} is not a whole number`,
      );
    }
    let woken = 0;
    while ((woken = region.notifyInt32(0, 1)) === 0) await delay(5); // one asleep at least
    assertEquals(woken, 1);
    await delay(50); // the others asleep too
    // The kernel takes 0 (and less) as 1: it woke one of them.
    assertEquals(region.notifyInt32(0, 0), 0);
    await delay(20);
    assertEquals(ended, ["ok"]);
    assertEquals(region.notifyInt32(0, 2 ** 40), 2);
    assertEquals(await Promise.all(waits), ["ok", "ok", "ok"]);
  } finally {
    controller.abort();
    await Promise.allSettled(waits);
  }
});

/**
 * Runs `fixture` (in tests/fixtures), which measures its heap around what it does with a
 * garbage collection of its own (`--expose-gc`), and returns the lines it printed; it must
 * exit 0.
 */
async function collectedFixture(fixture: string): Promise<string[]> {
  await using child = spawnDeno(`${TESTS_DIR}fixtures/${fixture}`, [], {
    permissions: ["--allow-ffi", "--v8-flags=--expose-gc"],
  });
  const status = await child.status();
  assertEquals(status.code, 0, status.stderr);
  return child.lines.filter((line) => line.stream === "stdout").map((line) => line.text);
}

testWith(
  NEEDS.children,
  "SharedRegion.notifyInt32() on each of a million words keeps no memory for each word",
  async () => {
    // Each word's address was kept, for good: 65 MiB here. Now a few, for the words in use.
    const lines = await collectedFixture("many_futex_words.ts");
    const grown = Number(/^grew (-?\d+) KiB$/.exec(lines[0] ?? "")?.[1]);
    assert(grown < 1024, lines.join(" | "));
  },
);

Deno.test("SharedRegion.waitInt32(): notifies of many words at once, none changed, are never lost", async () => {
  using region = createMemfdRegion({ size: 4096 });
  // The first few waits have a futex_waitv call each; the rest share one, which names one woken
  // word: before, every other wake-up in it was lost, and its wait slept on to its timeout. A
  // wait in a shared call now ends with each return ("ok", perhaps for no reason, as a futex
  // wait may).
  const offsets = Array.from({ length: OWN_CALLS + 6 }, (_, i) => i * 64);
  for (let round = 0; round < 5; round++) {
    const settled = offsets.map(() => false);
    const waits = offsets.map((offset, i) =>
      region.waitInt32(offset, 0, { timeout: 10_000 }).finally(() => settled[i] = true)
    );
    await delay(20); // asleep, in all likelihood; a notify that woke no one is made again
    await wakeEach(offsets.length, (i) => region.notifyInt32(offsets[i]), (i) => settled[i]);
    assertEquals(await Promise.all(waits), offsets.map(() => "ok"));
  }
});

Deno.test("SharedRegion.waitInt32(): waits made again after other work do not end each other", async () => {
  using region = createMemfdRegion({ size: 4096 });
  // More waits than have a call of their own, each made again a timer later (other work, as a
  // real loop does): before, each one made again ended those it joined with "ok", which then
  // did the same, hundreds of times a second, with no notify at all.
  const stop = new AbortController();
  let oks = 0;
  const loops = Array.from({ length: OWN_CALLS + 4 }, async (_, i) => {
    while (!stop.signal.aborted) {
      const waited = region.waitInt32(i * 64, 0, { signal: stop.signal });
      if (await waited.catch(() => "aborted") === "ok") oks++;
      await delay(1);
    }
  });
  await delay(300);
  stop.abort();
  await Promise.all(loops);
  assertEquals(oks, 0, "waits ended with no notify");
});

Deno.test("SharedRegion.waitInt32(): Infinity is no limit; a timeout below 0 or NaN is refused", async () => {
  using region = createMemfdRegion({ size: 64 });
  for (const timeout of [-1, NaN]) {
    await assertRejectsWith(
      () => region.waitInt32(0, 0, { timeout }),
      RangeError,
      region.name,
      `timeout ${timeout}`,
    );
  }
  for (const timeout of [Infinity, 2 ** 60]) {
    let stored = false;
    const waiting = region.waitInt32(0, 0, { timeout });
    setTimeout(() => {
      stored = true;
      region.storeInt32(0, 1);
      region.notifyInt32(0);
    }, 20);
    // Woken ("ok"), or, on a slow machine (the aarch64 VM), the store came before the wait's
    // thread compared the word ("not-equal"): either way only the store ended it, never a limit.
    const result = await waiting;
    assert(result === "ok" || result === "not-equal", `timeout ${timeout}: ${result}`);
    assert(stored, `timeout ${timeout}: the wait ended before the store, with ${result}`);
    region.storeInt32(0, 0);
  }
});

Deno.test("SharedRegion.close() during a wait rejects the wait with BadResource", async () => {
  const region = createMemfdRegion({ size: 64 });
  const waiting = region.waitInt32(0, 0);
  setTimeout(() => region.close(), 20);
  await assertRejectsWith(() => waiting, Deno.errors.BadResource, region.name, "closed");
  assertEquals(region.closed, true);
});

Deno.test("SharedRegion.view() is the memory in place and is revoked at close", () => {
  const region = createMemfdRegion({ size: 64 });
  const view = region.view(8, 4);
  view.set([1, 2, 3, 4]);
  assertEquals([...region.read(8, 4)], [1, 2, 3, 4]);
  assertEquals(region.view().length, 64);
  assertThrows(() => region.view(60, 8), RangeError);
  region.close();
  assertEquals(view.length, 0);
  view[0] = 9; // a write to a revoked view does nothing, and nothing crashes
  assertThrows(() => region.view(), Deno.errors.BadResource);
});

testWith(
  NEEDS.files,
  "a view moved away by transfer() cannot reach the file after close",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/moved`;
      const region = openFileRegion(path, { create: true, size: 4096 });
      const moved = region.view().buffer.transfer(); // user code takes the memory away from us
      region.close();
      const stale = new Uint8Array(moved);
      stale[0] = 0x41; // must land in private pages, never in the file
      assertEquals(stale.length, 4096);
      assertEquals(Deno.readFileSync(path)[0], 0);
      using next = createMemfdRegion({ size: 4096 });
      assertEquals(next.read(0, 1)[0], 0);
    });
  },
);

/** MemTotal + SwapTotal in bytes: past it, the kernel's overcommit heuristic refuses one mmap. */
function memoryAndSwap(): number {
  const info = readFileText("/proc/meminfo") ?? "";
  const kib = (field: string): number =>
    Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(info)?.[1] ?? 0);
  return (kib("MemTotal") + kib("SwapTotal")) * 1024;
}

/** A size past RAM + swap (not page-exact on purpose), at most 1 TiB. */
function pastMemory(): number {
  return Math.min(2 ** 40, 2 ** Math.ceil(Math.log2(memoryAndSwap() * 1.5)));
}

/** The lines of /proc/self/maps that name `text`. */
function mapsNaming(text: string): string[] {
  return (readFileText("/proc/self/maps") ?? "").split("\n").filter((line) => line.includes(text));
}

Deno.test(
  "a memfd region larger than RAM and swap that lent a view lets go of its shared mapping at close",
  () => {
    const label = `retire-large-${Deno.pid}`;
    const before = heldMappings();
    const region = createMemfdRegion({ size: pastMemory(), label });
    const view = region.view(0, 1 << 20);
    view.fill(7);
    region.close();
    assertEquals(view.length, 0);
    // The private pages put in its place were refused (no MAP_NORESERVE), and the shared mapping
    // stayed, silently: the memfd's pages kept for the life of the process, a moved buffer still
    // writing to them, and the SIGBUS guard's slot never given back.
    const left = mapsNaming(`/memfd:${label}`);
    assertEquals(left, [], `the shared mapping outlived close():\n${left.join("\n")}`);
    assertEquals(heldMappings(), before, "the closed region still counts as a held mapping");
  },
);

Deno.test(
  "retiring regions that lent a view adds no lasting commit charge (Committed_AS)",
  () => {
    // Committed_AS is the whole system's: retire 16 GiB and allow half of it for everything else.
    const committedKiB = (): number =>
      Number(/^Committed_AS:\s+(\d+)/m.exec(readFileText("/proc/meminfo") ?? "")?.[1]);
    const before = committedKiB();
    for (let i = 0; i < 4; i++) {
      const region = createMemfdRegion({ size: 4 * 2 ** 30 });
      region.view(0, 16)[0] = 1;
      region.close();
    }
    const grownGiB = (committedKiB() - before) / 2 ** 20;
    // Each retired range was charged whole for the life of the process (private and writable,
    // without MAP_NORESERVE): under vm.overcommit_memory=2 the machine's allocations then fail.
    assert(grownGiB < 8, `Committed_AS grew by ${grownGiB.toFixed(1)} GiB and stays so`);
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("gcc"), requires("sh")],
  "a retired range takes a memfd of its own where private pages are refused (vm.overcommit_memory=2), close() says so where neither can be had, and the next open retires it",
  async () => {
    await withTempDir(async (dir) => {
      const refuse = await buildC(dir, "refuse_private_pages");
      const command = denoCommand(`${TESTS_DIR}fixtures/retire_fallbacks.ts`, [], [
        "--allow-ffi",
        "--allow-read",
      ]);
      await using child = spawnProgram("sh", [
        "-c",
        'ulimit -n 256 && exec "$@"',
        "sh",
        refuse,
        ...command,
      ]);
      assertEquals((await child.status()).code, 0, child.transcript);
      const lines = child.matching(/./);
      assertEquals(lines.slice(0, 5), [
        "close: ok",
        "shared mappings: 1", // the peer's alone
        "retired memfds: 1",
        "moved write reached the peer: no",
        "held: 1",
      ], child.transcript);
      assertMatch(
        lines[5] ?? "",
        /^close threw: Cannot retire the mapping of "\/proc\/\d+\/fd\/\d+": neither private pages \(ENOMEM\) nor a memfd of its own \(EMFILE\) could take its place, so the shared memory stays mapped in this process for good, and a buffer moved away from a view of it \(transfer\(\)\) still reaches it$/,
      );
      // Kept, and said so: not unmapped, where a moved buffer's next access would kill the
      // process and a mapping made later could land.
      assertEquals(lines.slice(6), [
        "shared mappings: 2",
        "retired memfds: 1",
        "moved write reached the peer: yes",
        "held: 3",
        // Tried again once the shortage is over: the peer's mapping alone is left.
        "after the next open, shared mappings: 1",
        "retired memfds: 2",
        "done",
      ], child.transcript);
    });
  },
);

// --- POSIX shared memory ---------------------------------------------------------------------

testWith(
  NEEDS.children,
  "views a caller let go of are not kept until close: half a million of them leave the heap as it was",
  async () => {
    // Each view's buffer was kept (to revoke it at close) for as long as the region was open:
    // about 120 bytes of heap a view, for good, in a process that takes a view per message.
    const lines = await collectedFixture("dropped_views.ts");
    const grown = Number(/^grew (-?\d+) MB$/.exec(lines[0] ?? "")?.[1]);
    assert(grown < 10, lines.join(" | "));
    assertEquals(lines[1], "kept view: 0 bytes after close");
  },
);

Deno.test("openShmRegion() creates, reopens, refuses exclusive reuse and removes", async () => {
  await withShmName((name) => {
    assertThrowsWith(() => openShmRegion(name, { size: 64 }), Deno.errors.NotFound, name, "ENOENT");
    using created = openShmRegion(name, { create: true, exclusive: true, size: 128 });
    assertEquals(created.kind, "posix");
    created.storeInt32(0, 99);
    using opened = openShmRegion(name.slice(1));
    assertEquals(opened.size, 128);
    assertEquals(opened.loadInt32(0), 99);
    assertThrowsWith(
      () => openShmRegion(name, { create: true, exclusive: true, size: 128 }),
      Deno.errors.AlreadyExists,
      name,
    );
    created.unlink();
    assertEquals(removeShm(name), false);
  });
});

Deno.test("SharedRegion.unlink() refuses a shm name that was made again by another or removed", async () => {
  await withShmName((name) => {
    using region = openShmRegion(name, { create: true, exclusive: true, size: 64 });
    // Someone removes the name and makes an object by it: that one is theirs.
    assertEquals(removeShm(name), true);
    using theirs = openShmRegion(name, { create: true, exclusive: true, size: 64 });
    theirs.write(0, encoder.encode("someone else's"));
    assertThrowsWith(() => region.unlink(), Deno.errors.NotFound, name, "no longer refers");
    using still = openShmRegion(name);
    assertEquals(decoder.decode(still.read(0, 14)), "someone else's");
    // Nothing by the name at all: the same error.
    theirs.unlink();
    assertThrowsWith(() => region.unlink(), Deno.errors.NotFound, name, "no longer refers");
    assertEquals(removeShm(name), false);
  });
});

Deno.test("a FIFO anyone put at a shm name is refused by removeShm() and SharedRegion.unlink() at once, and left there", async () => {
  // /dev/shm is sticky and open to all; opening a FIFO there to look at it blocked for good.
  await withShmName((name) => {
    const path = `/dev/shm${name}`;
    using region = openShmRegion(name, { create: true, exclusive: true, size: 64 });
    assertEquals(removeShm(name), true);
    makeFifo(path, 0o600);
    try {
      assertThrowsWith(
        () => removeShm(name),
        Deno.errors.InvalidData,
        name,
        "it is a fifo, not a regular file; it is left as it is",
      );
      assertThrowsWith(() => region.unlink(), Deno.errors.NotFound, name, "no longer refers");
      assertEquals(statPath(path)?.type, "fifo");
    } finally {
      unlinkPath(path);
    }
  });
});

testWith(
  NEEDS.files,
  "a symlink put at a shm name is no longer the region's: SharedRegion.unlink() says so as for any other replacement, not ELOOP, and leaves the link",
  async () => {
    await withTempDir(async (dir) => {
      await withShmName((name) => {
        const path = `/dev/shm${name}`;
        using region = openShmRegion(name, { create: true, exclusive: true, size: 64 });
        assertEquals(removeShm(name), true);
        Deno.writeTextFileSync(`${dir}/target`, "someone's");
        Deno.symlinkSync(`${dir}/target`, path);
        try {
          assertThrowsWith(() => region.unlink(), Deno.errors.NotFound, name, "no longer refers");
          assertEquals(statPath(path)?.type, "symlink");
          assertEquals(Deno.readTextFileSync(`${dir}/target`), "someone's");
        } finally {
          unlinkPath(path);
        }
      });
    });
  },
);

testWith(
  [
    ...NEEDS.childrenAndFiles,
    ...(isRoot()
      ? [requires("setpriv", { probe: ["--bounding-set=-all", "--inh-caps=-all", "true"] })]
      : []),
  ],
  "SharedRegion.unlink() says why when it cannot look at its shm name (EACCES), not NotFound",
  async () => {
    await withShmName(async (name) => {
      // Root bypasses file modes: run the child as root with no capabilities, as a user is.
      // Deno asks for all permissions to chmod in /dev.
      const command = denoCommand(`${TESTS_DIR}fixtures/unlink_unreadable_shm.ts`, [name], [
        "--allow-all",
      ]);
      await using child = isRoot()
        ? spawnProgram("setpriv", ["--bounding-set=-all", "--inh-caps=-all", ...command])
        : spawnProgram(command[0], command.slice(1));
      const status = await child.status();
      assertEquals(status.code, 0, child.transcript);
      const line = child.transcript.trim();
      assertMatch(line, /^PermissionDenied: /, child.transcript);
      assertStringIncludes(line, name);
      assertStringIncludes(line, "EACCES");
      // Nothing was removed: the object is still there under its name.
      using still = openShmRegion(name);
      assertEquals(still.size, 64);
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "two processes opening one new shm name with create: true and different sizes never shrink it under each other (no SIGBUS)",
  async () => {
    await withShmName(async (name) => {
      // Before the fix the larger side died of SIGBUS within 4 s in 3 runs of 3.
      const race = (role: string) =>
        spawnDeno(`${TESTS_DIR}fixtures/create_race.ts`, [name, role, "3000"]);
      await using small = race("small");
      await using big = race("big");
      for (const side of [small, big]) {
        const status = await side.status();
        assertEquals(status.signal, null, side.transcript);
        assertEquals(status.code, 0, side.transcript);
        assert(Number(side.lines.at(-1)?.text) > 0, side.transcript);
      }
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("flock")],
  "growing a shm object another process holds locked for good is Busy naming it, after a grace",
  async () => {
    await withShmName(async (name) => {
      openShmRegion(name, { create: true, size: 4096 }).close();
      // No fork: the pid that holds the lock is the one the test stops.
      await using holder = spawnProgram("flock", [
        "--exclusive",
        "--no-fork",
        `/dev/shm${name}`,
        "sh",
        "-c",
        "echo locked; exec sleep 30",
      ]);
      assertEquals(await holder.nextLine(), "locked");
      assertThrowsWith(
        () => openShmRegion(name, { size: 8192 }),
        Deno.errors.Busy,
        name,
        "held a lock on it",
      );
      using still = openShmRegion(name);
      assertEquals(still.size, 4096, "it was resized without the lock");
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("mount"), requires("umount")],
  "a region too big for its file system's free space is ENOSPC at open, not SIGBUS at first touch",
  async (t) => {
    if (await skippedWithoutRoot(t, "to mount a small tmpfs")) return;
    await withTempDir(async (dir) => {
      await withMount(dir, "tmpfs", (small) => {
        const path = `${small}/ring.dat`;
        // Sparse, this opened, and the process died of SIGBUS on the first write past 64 KiB.
        assertThrowsWith(
          () => openFileRegion(path, { create: true, size: 1 << 20 }),
          Error,
          path,
          "ENOSPC",
        );
        assertEquals(statPath(path), undefined, "the file it made is left behind");
        // A file of the user's, asked to grow past the space there: refused, and left as it was.
        const notes = `${small}/notes.txt`;
        Deno.writeTextFileSync(notes, "my notes\n", { mode: 0o600 });
        assertThrowsWith(() => openFileRegion(notes, { size: 1 << 20 }), Error, notes, "ENOSPC");
        // It grew to 1 MiB first, its blocks filling the file system, and was left so.
        assertEquals(Deno.readTextFileSync(notes), "my notes\n");
        using fits = openFileRegion(`${small}/fits.dat`, { create: true, size: 16384 });
        fits.write(16383, new Uint8Array([1]));
      }, "size=64k");
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("mount"), requires("umount")],
  "a file system that cannot reserve blocks (ramfs, EOPNOTSUPP) still opens a file region",
  async (t) => {
    if (await skippedWithoutRoot(t, "to mount a ramfs")) return;
    await withTempDir(async (dir) => {
      await withMount(dir, "ramfs", (ram) => {
        const path = `${ram}/state.dat`;
        // ramfs has no fallocate(2): the reservation is skipped, not an error.
        using region = openFileRegion(path, { create: true, size: 3 * 4096 });
        region.write(3 * 4096 - 1, new Uint8Array([7]));
        using again = openFileRegion(path);
        assertEquals(again.read(3 * 4096 - 1, 1)[0], 7);
        assertEquals(statPath(path)?.size, 3 * 4096);
      });
    });
  },
);

Deno.test("openShmRegion() rejects names with slashes, and longer than 250 bytes", () => {
  // 200 characters, 400 bytes: the kernel refused it (EINVAL), after the check had let it by.
  for (const name of ["/a/b", "", "/", "a".repeat(300), "\u00e9".repeat(200), "a\0b", ".", "/.."]) {
    assertThrowsWith(
      () => openShmRegion(name, { create: true, size: 8 }),
      TypeError,
      `Invalid shared memory name ${JSON.stringify(name)}: 1 to 250 bytes`,
    );
    assertThrows(() => removeShm(name), TypeError);
  }
});

testWith(
  [...NEEDS.childrenAndFiles, requires("mkdir"), requires("rmdir")],
  "a directory at a POSIX shm name is IsADirectory, and left there",
  async () => {
    const name = `/mmap-ipc-test-dir-${Deno.pid}`;
    // Deno's own file calls need --allow-all for /dev: a program makes it.
    const run = async (program: string): Promise<void> => {
      assert((await new Deno.Command(program, { args: [`/dev/shm${name}`] }).output()).success);
    };
    await run("mkdir");
    try {
      // glibc said EINVAL, a TypeError: "invalid argument".
      assertThrowsWith(
        () => openShmRegion(name, { create: true, size: 64 }),
        Deno.errors.IsADirectory,
        name,
        "EISDIR",
      );
      assertEquals(statPath(`/dev/shm${name}`)?.type, "directory");
    } finally {
      await run("rmdir");
    }
  },
);

Deno.test("openShmRegion() rejects an object of another owner", async (t) => {
  if (!isRoot() || Deno.permissions.querySync({ name: "run" }).state !== "granted") {
    await t.step({
      name: "needs root and --allow-run to chown (skipped)",
      ignore: true,
      fn: () => {},
    });
    return;
  }
  await withShmName(async (name) => {
    openShmRegion(name, { create: true, size: 64 }).close();
    // Deno guards /dev behind --allow-all, so chown(1) does it.
    const chown = (owner: string) =>
      new Deno.Command("chown", { args: [owner, `/dev/shm${name}`] }).output();
    assertEquals((await chown("65534:65534")).code, 0);
    assertThrowsWith(() => openShmRegion(name), Deno.errors.PermissionDenied, name, "uid 65534");
    assertThrows(() => removeShm(name), Deno.errors.PermissionDenied);
    assertEquals((await chown("0:0")).code, 0);
  });
});

testWith(
  NEEDS.files,
  "every opener takes null options from JavaScript as no options; createMemfdRegion(null) asks for a size",
  async () => {
    // Each would have thrown "Cannot read properties of null" before reaching its own checks.
    const untyped = null as unknown as undefined;
    await withTempDir(async (dir) => {
      const path = `${dir}/state.dat`;
      openFileRegion(path, { create: true, size: 128 }).close();
      using file = openFileRegion(path, untyped);
      assertEquals(file.size, 128);
      using cell = openStateCell(file, untyped);
      assertEquals(cell.read(), 0);
      using memfd = createMemfdRegion({ size: 64 });
      using memfdAgain = openMemfdRegion(memfd.name, untyped);
      assertEquals(memfdAgain.size, 64);
      assertThrowsWith(
        () => createMemfdRegion(null as unknown as { size: number }),
        TypeError,
        "needs a size",
      );
      await withShmName((name) => {
        openShmRegion(name, { create: true, size: 64 }).close();
        using shm = openShmRegion(name, untyped);
        assertEquals(shm.size, 64);
      });
      openStateFile(`${dir}/led.dat`, { create: true }).close();
      using state = openStateFile(`${dir}/led.dat`, untyped);
      assertEquals(state.path, `${dir}/led.dat`);
    });
    const key = uniqueSysvKey();
    const created = openSysvRegion(key, { create: true, exclusive: true, size: 4096 });
    try {
      using sysv = openSysvRegion(key, untyped);
      assertEquals(sysv.size, 4096);
    } finally {
      created.unlink();
      created.close();
    }
  },
);

// --- System V shared memory ------------------------------------------------------------------

testWith(
  NEEDS.children,
  "a process's mappings stop at the library's budget, System V attachments included: an open is refused, and the process goes on",
  async () => {
    // Past the kernel's limit on mappings V8's next allocation failed and it aborted the process
    // (SIGTRAP): System V attachments were never counted.
    const key = uniqueSysvKey();
    const segment = openSysvRegion(key, { create: true, exclusive: true, size: 4096 });
    try {
      {
        await using child = spawnDeno(`${TESTS_DIR}fixtures/mapping_budget.ts`, [
          "sysv",
          String(key),
        ], { permissions: ["--allow-ffi", "--allow-read"] });
        const status = await child.status();
        assertEquals(status.code, 0, child.transcript);
        assertEquals(child.matching(/^refused after/), [
          `refused after ${MAX_MAPPINGS}: Cannot attach "key ${
            sysvKeyText(key)
          }": this thread holds ${MAX_MAPPINGS} mappings of shared memory open, as many as one thread may before the kernel's limit on mappings; close some`,
        ], child.transcript);
        assertEquals(child.matching(/^allocated$/).length, 1, child.transcript);
        assertEquals(
          child.matching(/^held after close/),
          ["held after close: 0"],
          child.transcript,
        );
      }
      // Two Workers, each under its thread's budget: together they reached the kernel's limit.
      await using child = spawnDeno(`${TESTS_DIR}fixtures/mapping_budget.ts`, [
        "workers",
        String(key),
      ], { permissions: ["--allow-ffi", "--allow-read"] });
      const status = await child.status();
      assertEquals(status.code, 0, child.transcript);
      const refusals = child.matching(/^refused after/);
      assertEquals(refusals.length, 2, child.transcript);
      for (const refusal of refusals) {
        assertMatch(
          refusal,
          new RegExp(
            `^refused after \\d+: Cannot attach "key ${
              sysvKeyText(key)
            }": the process has \\d+ mappings, \\d+ short of the kernel's limit \\(vm.max_map_count, \\d+\\), where every mmap of the process fails and V8 aborts it; close some regions \\(in this thread or its Workers\\)$`,
          ),
        );
        assert(Number(/after (\d+)/.exec(refusal)?.[1]) < MAX_MAPPINGS, refusal);
      }
      assertEquals(child.matching(/^allocated$/).length, 1, child.transcript);
    } finally {
      segment.unlink();
      segment.close();
    }
  },
);

testWith(
  NEEDS.children,
  "regions opened, lent and closed past the thread's budget: their retired ranges are not counted against it, and the kernel merges them",
  async () => {
    // Counted, they refused every open after 49,150 such regions, for the rest of the process's
    // life, though the kernel held them in a few hundred mappings.
    const count = MAX_MAPPINGS + 2048;
    await using child = spawnDeno(
      `${TESTS_DIR}fixtures/mapping_budget.ts`,
      ["retired", String(count)],
      { permissions: ["--allow-ffi", "--allow-read"] },
    );
    const status = await child.status();
    assertEquals(status.code, 0, child.transcript);
    assertEquals(child.matching(/^opened|^refused/), [`opened ${count}`], child.transcript);
    const [mappings] = child.matching(/^mappings: /);
    assert(Number(mappings?.slice("mappings: ".length)) < 5_000, child.transcript);
    assertEquals(child.matching(/^allocated$/).length, 1, child.transcript);
    assertEquals(child.matching(/^held after close/), ["held after close: 0"], child.transcript);
  },
);

testWith(
  NEEDS.children,
  "regions that keep their address range after close stop at three quarters of the process's address space (RLIMIT_AS here): an open is refused, and the process can still allocate and start a Worker",
  async () => {
    // Past the end of its address space a large buffer failed, and the next Worker aborted the
    // process (SIGTRAP: "Failed to reserve virtual memory for CodeRange"). The limit is 16 GiB
    // over the most a child takes at its start: V8 reserves some 30 GiB there for a moment (a
    // 48 GiB peak for 17 kept on x86-64), and under a lower limit it aborted at random
    // ("Oilpan: CagedHeap reservation"; under a 40 GiB limit 2 of 20 starts failed here).
    await using peak = spawnDeno(`${TESTS_DIR}fixtures/mapping_budget.ts`, ["peak"], {
      permissions: ["--allow-ffi", "--allow-read"],
    });
    assertEquals((await peak.status()).code, 0, peak.transcript);
    const [peakKiB] = peak.matching(/^\d+$/);
    const limitGiB = Math.ceil(Number(peakKiB) / 2 ** 20) + 16;
    assert(limitGiB > 16, `the child's peak was not read: ${peak.transcript}`);
    const [deno, ...args] = denoCommand(
      `${TESTS_DIR}fixtures/mapping_budget.ts`,
      ["address", "1"],
      [
        "--allow-ffi",
        "--allow-read",
      ],
    );
    await using child = spawnProgram("sh", [
      "-c",
      `ulimit -v ${limitGiB * 2 ** 20} && exec "$0" "$@"`,
      deno,
      ...args,
    ]);
    assertEquals((await child.status()).code, 0, child.transcript);
    const [refusal] = child.matching(/^refused after/);
    assertMatch(
      refusal ?? "",
      new RegExp(
        `^refused after \\d+: Cannot map "mmap-ipc": its 1 GiB would take the process's address space from [\\d.]+ GiB past three quarters of the ${limitGiB} GiB it has \\(at the end allocations fail, and V8 aborts the process when it cannot reserve what it needs\\); a region that ever lent a view keeps its address range after it closes, for the life of the process, so reuse regions rather than open one for each use$`,
      ),
      child.transcript,
    );
    assertEquals(child.matching(/^(allocated|buffer|worker)$/), ["allocated", "buffer", "worker"]);
  },
);

Deno.test("openSysvRegion() creates, reopens, refuses growth and removes", () => {
  const key = uniqueSysvKey();
  const created = openSysvRegion(key, { create: true, exclusive: true, size: 4096 });
  try {
    assertEquals(created.kind, "sysv");
    created.storeInt32(8, 5);
    using opened = openSysvRegion(key);
    assertEquals(opened.size, 4096);
    assertEquals(opened.loadInt32(8), 5);
    assertThrowsWith(
      () => openSysvRegion(key, { size: 8192 }),
      Deno.errors.InvalidData,
      `key ${sysvKeyText(key)}`,
      "cannot grow",
    );
    assertThrowsWith(
      () => openSysvRegion(key, { create: true, exclusive: true, size: 4096 }),
      Deno.errors.AlreadyExists,
      `key ${sysvKeyText(key)}`,
    );
  } finally {
    created.unlink();
    created.close();
  }
  assertThrowsWith(() => openSysvRegion(key), Deno.errors.NotFound, `key ${sysvKeyText(key)}`);
});

Deno.test("openSysvRegion(): unlink() of a segment removed already is NotFound, as for a file", () => {
  const key = uniqueSysvKey();
  using first = openSysvRegion(key, { create: true, exclusive: true, size: 4096 });
  using second = openSysvRegion(key);
  first.unlink();
  // Before, this removed nothing and said nothing, where a file's or a POSIX name's said so.
  assertThrowsWith(
    () => second.unlink(),
    Deno.errors.NotFound,
    `key ${sysvKeyText(key)}`,
    "it was removed already",
  );
  assertThrowsWith(() => first.unlink(), Deno.errors.NotFound, "removed already");
  second.storeInt32(0, 7); // still mapped: it goes once both close
  assertEquals(first.loadInt32(0), 7);
});

Deno.test("a System V region mapping part of its segment lets all of it go at close, even after lending a view", () => {
  const key = uniqueSysvKey();
  const whole = openSysvRegion(key, { create: true, exclusive: true, size: 3 * 4096 });
  const id = sysvGet(key, 0, 0);
  const part = openSysvRegion(key, { size: 100 });
  part.view(0, 10); // lent: the range is retired at close, not detached
  part.close();
  whole.unlink();
  whole.close();
  // shmat mapped all three pages: any left attached keep the removed segment alive.
  assertThrowsWith(() => sysvStat(id, `key ${sysvKeyText(key)}`), TypeError, "EINVAL");
});

Deno.test(
  "a System V segment larger than RAM and swap that lent a view is detached at close, so unlink() destroys it",
  () => {
    // What a C peer makes with shmget(key, size, IPC_CREAT | 0600 | SHM_NORESERVE): no commit
    // charge, so the kernel allows a segment past RAM + swap.
    const SHM_NORESERVE = 0o10000;
    const key = uniqueSysvKey();
    const id = sysvGet(key, pastMemory(), C.IPC_CREAT | C.IPC_EXCL | 0o600 | SHM_NORESERVE);
    try {
      const before = heldMappings();
      const region = openSysvRegion(key);
      region.view(0, 4096).fill(1);
      region.unlink();
      region.close();
      // Still attached, the removed segment was never destroyed (its retire was refused).
      assertThrowsWith(() => sysvStat(id, `key ${sysvKeyText(key)}`), TypeError, "EINVAL");
      assertEquals(heldMappings(), before);
    } finally {
      try {
        sysvRemove(id, `key ${sysvKeyText(key)}`);
      } catch {
        // destroyed already, as it should be
      }
    }
  },
);

Deno.test("openSysvRegion() rejects a zero key, and keys outside 32 bits", () => {
  for (const key of [0, 2 ** 32, -(2 ** 31) - 1, 1.5, NaN]) {
    assertThrowsWith(
      () => openSysvRegion(key, { create: true, size: 64 }),
      TypeError,
      `Invalid System V key ${key}: a non-zero 32-bit integer, from 1 to 0xffffffff or`,
    );
  }
});

Deno.test(
  "openSysvRegion() opens a segment whose key has its top bit set (0x8d..., as ipcs and ftok() show it), given unsigned or as C's signed key_t, and names it in hex",
  () => {
    const key = (0x8d000000 | (Deno.pid & 0xffff)) >>> 0; // unsigned, as ipcs shows it
    const hex = `0x8d00${(Deno.pid & 0xffff).toString(16).padStart(4, "0")}`;
    // What a C peer makes: shmget() takes a key_t, an int, where the top bit is the sign.
    const id = sysvGet(key | 0, 4096, C.IPC_CREAT | C.IPC_EXCL | 0o600);
    try {
      // Refused before: 'Invalid System V key 2365587457', though any 32-bit key was promised.
      using region = openSysvRegion(key);
      assertEquals([region.size, region.name], [4096, hex]);
      region.storeInt32(0, 7);
      using signed = openSysvRegion(key | 0);
      using byName = openSysvRegion(Number(region.name));
      assertEquals([signed.name, signed.loadInt32(0), byName.loadInt32(0)], [hex, 7, 7]);
      assertThrowsWith(
        () => openSysvRegion(key, { size: 8192 }),
        Deno.errors.InvalidData,
        `Cannot open System V shared memory "key ${hex}": the segment has 4096 bytes`,
      );
      region.close();
      assertThrowsWith(() => region.loadInt32(0), Deno.errors.BadResource, `region "${hex}"`);
    } finally {
      sysvRemove(id, `key ${hex}`);
    }
    assertThrowsWith(
      () => openSysvRegion(key),
      Deno.errors.NotFound,
      `Cannot get System V shared memory "key ${hex}": `,
    );
  },
);

// --- memfd -----------------------------------------------------------------------------------

Deno.test("createMemfdRegion() is reachable through its /proc path", () => {
  using region = createMemfdRegion({ size: 256, label: "test" });
  assertEquals(region.kind, "memfd");
  assertMatch(region.name, /^\/proc\/\d+\/fd\/\d+$/);
  region.storeInt32(4, 77);
  using again = openMemfdRegion(region.name);
  assertEquals(again.size, 256);
  assertEquals(again.loadInt32(4), 77);
  assertThrowsWith(
    () => openMemfdRegion(region.name, { size: 512 }),
    Deno.errors.InvalidData,
    region.name,
    "256 bytes",
  );
});

Deno.test("openMemfdRegion() refuses a memfd that can be shrunk under it, unless told unsealed", () => {
  // Any process holding it could truncate it, and this one would die of SIGBUS on its next touch.
  using region = createMemfdRegion({ size: 256, seal: false });
  assertThrowsWith(
    () => openMemfdRegion(region.name),
    Deno.errors.InvalidData,
    region.name,
    "not sealed against shrinking",
  );
  using accepted = openMemfdRegion(region.name, { unsealed: true });
  assertEquals(accepted.size, 256);
});

Deno.test(
  "openMemfdRegion() of a memfd its maker sealed against writing says which seal, as PermissionDenied (EPERM)",
  () => {
    for (
      const [seal, name] of [[C.F_SEAL_WRITE, "F_SEAL_WRITE"], [
        C.F_SEAL_FUTURE_WRITE,
        "F_SEAL_FUTURE_WRITE",
      ]] as const
    ) {
      // What a C peer that hands out read-only memory does.
      const fd = memfdCreate("sealed-peer", { sealable: true });
      try {
        truncateFd(fd, 4096, "sealed-peer");
        assertEquals(libc().fcntl(fd, C.F_ADD_SEALS, seal | C.F_SEAL_SHRINK | C.F_SEAL_GROW), 0);
        const path = `/proc/self/fd/${fd}`;
        // Before: 'Cannot map "/proc/self/fd/N": operation not permitted (EPERM)', which reads
        // as a matter of permissions; the reason is the peer's seal.
        const error = assertThrowsWith(
          () => openMemfdRegion(path),
          Deno.errors.PermissionDenied,
          `Cannot map "${path}": the memfd is sealed against writing (${name}) by the process that made it, and a region is mapped read-write; operation not permitted (EPERM)`,
        );
        assertEquals((error as OsError).code, "EPERM");
      } finally {
        closeFd(fd);
      }
    }
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("gcc")],
  "openMemfdRegion() of a /proc/PID/fd/N that its process swaps for a file meanwhile maps the memfd or refuses, never the file",
  async () => {
    await withTempDir(async (dir) => {
      const swapper = await buildC(dir, "fd_swapper");
      const file = `${dir}/swapped-in`;
      Deno.writeFileSync(file, new Uint8Array(8192).fill(0x46)); // 'F'; the memfd's is 'M'
      await using child = spawnProgram(swapper, [file]);
      const fd = Number(/^fd (\d+)$/.exec(await child.nextLine())?.[1]);
      const path = `/proc/${child.pid}/fd/${fd}`;
      const seen = { memfd: 0, refused: 0, file: 0 };
      // The link was read, then the path opened: the file swapped in between was opened
      // read-write and mapped (300 times in 2 s here).
      const deadline = performance.now() + 2_000;
      while (performance.now() < deadline && seen.file === 0) {
        let region: SharedRegion;
        try {
          region = openMemfdRegion(path, { unsealed: true });
        } catch (error) {
          assert(error instanceof Deno.errors.InvalidData, String(error));
          assertStringIncludes(error.message, `it is ${file}, not a memfd`);
          seen.refused++;
          continue;
        }
        if (region.read(0, 1)[0] === 0x4d) seen.memfd++;
        else seen.file++;
        region.close();
      }
      assertEquals(seen.file, 0, JSON.stringify(seen));
      assert(seen.memfd > 0, JSON.stringify(seen));
    });
  },
);

Deno.test("createMemfdRegion() takes a label of up to 249 bytes, the kernel's limit, and says so past it", () => {
  using longest = createMemfdRegion({ size: 64, label: "a".repeat(249) });
  assertEquals(longest.size, 64);
  // Before: 'Cannot create memfd "aaa...": invalid argument (EINVAL)'.
  for (const label of ["a".repeat(250), "\u00e9".repeat(125)]) {
    assertThrowsWith(
      () => createMemfdRegion({ size: 64, label }),
      TypeError,
      "of at most 249 bytes in UTF-8 (the kernel's limit on a memfd's name)",
    );
  }
});

Deno.test("openMemfdRegion() refuses an fd that is not a memfd", () => {
  assertThrows(() => openMemfdRegion("/etc/passwd"), TypeError);
  assertThrowsWith(
    () => openMemfdRegion("/proc/self/fd/0"),
    Deno.errors.InvalidData,
    "/proc/self/fd/0",
    "not a memfd",
  );
});

Deno.test("openMemfdRegion() of a memfd larger than MAX_REGION_SIZE is a RangeError, as for a file, unless asked for less", () => {
  // A peer (a C program, say) can make a memfd of any size: mapped whole, 2 TiB were mapped.
  const fd = memfdCreate("too-big", { sealable: true });
  try {
    truncateFd(fd, MAX_REGION_SIZE + 4096, "too-big");
    sealSize(fd, "too-big");
    const path = `/proc/self/fd/${fd}`;
    assertThrowsWith(
      () => openMemfdRegion(path),
      RangeError,
      path,
      `its size ${MAX_REGION_SIZE + 4096} exceeds ${MAX_REGION_SIZE}`,
    );
    using part = openMemfdRegion(path, { size: 4096 });
    assertEquals(part.size, 4096);
  } finally {
    closeFd(fd);
  }
});

// --- two processes, four ways ----------------------------------------------------------------

async function sharedWithChild(region: SharedRegion, kind: string): Promise<void> {
  using cell = openStateCell(region, { writer: true, initialise: true, initialValue: 7 });
  region.storeInt32(192, 0);
  await using peer = spawnDeno(`${TESTS_DIR}fixtures/cell_peer.ts`, ["share", kind, region.name]);
  assertEquals(await peer.nextLine(), "ready 7");
  // The child's write to the word wakes us: a futex across processes.
  while (region.loadInt32(192) !== 42) await region.waitInt32(192, 0, { timeout: 30_000 });
  cell.write(8);
  assertEquals(await peer.nextLine(), "changed 8");
  const status = await peer.status();
  assertEquals(status.code, 0, status.stderr);
}

testWith(
  NEEDS.childrenAndFiles,
  "two processes share a file region and its state cell",
  async () => {
    await withTempDir(async (dir) => {
      using region = openFileRegion(`${dir}/shared.dat`, { create: true, size: 256 });
      await sharedWithChild(region, "file");
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "two processes share a POSIX shm region and its state cell",
  async () => {
    await withShmName(async (name) => {
      using region = openShmRegion(name, { create: true, size: 256 });
      await sharedWithChild(region, "posix");
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "two processes share a System V region and its state cell",
  async () => {
    const region = openSysvRegion(uniqueSysvKey(), { create: true, exclusive: true, size: 256 });
    try {
      await sharedWithChild(region, "sysv");
    } finally {
      region.unlink();
      region.close();
    }
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a child reaches the parent's memfd through /proc/PID/fd/N",
  async () => {
    using region = createMemfdRegion({ size: 256 });
    await sharedWithChild(region, "memfd");
  },
);

// --- regions past 32 bits ----------------------------------------------------------------------

testWith(
  NEEDS.files,
  "regions of 2 GiB and more (sparse memfds, up to MAX_REGION_SIZE): atomics, copies, views, a state cell and a ring reach their far end, never a wrapped offset",
  async () => {
    const { initRing, openRingConsumer, openRingProducer, ringRegionSize } = await import(
      "../mod.ts"
    );
    for (const size of [2 ** 31, 2 ** 32, 2 ** 32 + 65_536, MAX_REGION_SIZE]) {
      using region = createMemfdRegion({ size });
      const far = size - 65_536; // 64 KiB from the end: room for a cell and a small ring
      region.storeInt32(far, 0x01020304);
      assertEquals(region.loadInt32(far), 0x01020304, `size ${size}`);
      // The copy and the atomic see the same bytes: the word was not stored at a wrapped index.
      assertEquals([...region.read(far, 4)], [4, 3, 2, 1], `size ${size}`);
      if (far >= 2 ** 32) {
        assertEquals(region.loadInt32(far % 2 ** 32), 0, `size ${size}: the wrapped word changed`);
      }
      assertEquals(region.addInt32(far, 1), 0x01020304);
      assertEquals(region.compareExchangeInt32(far, 0x01020305, 9), 0x01020305);
      assertEquals(region.view(far, 4)[0], 9);
      assertEquals(await region.waitInt32(far, 1, { timeout: 0 }), "not-equal");
      region.notifyInt32(far);
      using cell = openStateCell(region, { offset: far + 64, writer: true });
      cell.write(1);
      assertEquals(cell.read(), 1, `size ${size}`);
      const ringAt = far + 4096;
      initRing(region, { offset: ringAt, capacity: 1024 });
      assert(ringAt + ringRegionSize(1024) <= size);
      using producer = openRingProducer(region, { offset: ringAt });
      using consumer = openRingConsumer(region, { offset: ringAt });
      assert(producer.trySend(encoder.encode("far")));
      assertEquals(decoder.decode(consumer.tryReceive() ?? new Uint8Array()), "far");
    }
    // A ring over the rest of a region past 2 GiB is too large, and says so with its real size
    // (the size wrapped at 32 bits gave a negative capacity, or a 64-byte ring at 4 GiB).
    for (const size of [2 ** 31 + 4096, 2 ** 32 + 4096]) {
      using region = createMemfdRegion({ size });
      assertThrowsWith(() => initRing(region), RangeError, `capacity ${size - 192} `);
    }
  },
);

testWith(
  NEEDS.files,
  "write() and readInto() with a byte array whose buffer was transferred or resized away: a TypeError naming the region",
  () => {
    using region = createMemfdRegion({ size: 4096 });
    const detached = new Uint8Array(8);
    detached.buffer.transfer();
    const resizable = new ArrayBuffer(16, { maxByteLength: 16 });
    const cutOff = new Uint8Array(resizable, 8, 8);
    resizable.resize(4);
    for (const bytes of [detached, cutOff]) {
      assertThrowsWith(() => region.write(0, bytes), TypeError, region.name, "bytes is ");
      assertThrowsWith(() => region.readInto(0, bytes), TypeError, region.name, "target is ");
    }
    region.write(0, new Uint8Array(0)); // empty, but whole: nothing to do, no error
    for (const bad of ["", [], { length: 0 }]) {
      assertThrowsWith(
        () => region.write(0, bad as unknown as Uint8Array),
        TypeError,
        region.name,
        "not a Uint8Array",
      );
    }
  },
);

for (const kind of ["file", "shm"] as const) {
  testWith(
    [...NEEDS.childrenAndFiles, requires("gcc")],
    `a ${
      kind === "file" ? "file openFileRegion()" : "shm object openShmRegion()"
    } creates appears whole: made unnamed, grown and allocated, then named; a process killed as it grows it leaves nothing, and where no unnamed file can be made it is made at its name`,
    async () => {
      await withTempDir(async (dir) => {
        await withShmName(async (shm) => {
          const where = kind === "file" ? `${dir}/region.dat` : shm;
          const at = kind === "file" ? where : `/dev/shm${shm}`;
          const size = 77824; // 19 pages: a length nothing else truncates to
          const maker = (args: string[]): string[] => [
            ...args,
            ...denoCommand(`${TESTS_DIR}fixtures/region_maker.ts`, [kind, where, String(size)], [
              "--allow-all",
            ]),
          ];
          const killAt = await buildC(dir, "kill_at_syscall");
          await using killed = spawnProgram(killAt, maker(["ftruncate", String(size)]));
          const status = await killed.status();
          assertEquals(status.signal, "SIGSYS", killed.transcript);
          // Before: an empty file at its name, which every open without create refused as empty.
          assertEquals(statPath(at), undefined, "the killed maker left its region at its name");
          const refuse = await buildC(dir, "refuse_unnamed_files");
          await using made = spawnProgram(refuse, maker([]));
          assert((await made.status()).success, made.transcript);
          assertEquals(made.matching(/^made /), [`made ${size}`], made.transcript);
          assertEquals(statPath(at)?.size, size);
          assertEquals(statPath(at)?.permissions, 0o600);
          if (kind === "file") Deno.removeSync(at);
        });
      });
    },
  );
}
