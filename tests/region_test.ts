import assert from "node:assert/strict";
import {
  createMemfdRegion,
  MAX_REGION_SIZE,
  openFileRegion,
  openMemfdRegion,
  openShmRegion,
  openStateCell,
  openSysvRegion,
  removeShm,
  type SharedRegion,
} from "../mod.ts";
import { makeFifo } from "../ffi/posix.ts";
import {
  isRoot,
  spawnDeno,
  TESTS_DIR,
  testWith,
  uniqueSysvKey,
  withShmName,
  withTempDir,
} from "./helpers.ts";

const FS = ["read", "write"] as Deno.PermissionName[];
const RUN = ["run", "read", "write"] as Deno.PermissionName[];
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function assertErrorNames(error: unknown, ...parts: string[]): true {
  assert(error instanceof Error);
  for (const part of parts) {
    assert.ok(error.message.includes(part), `"${error.message}" lacks ${part}`);
  }
  return true;
}

// --- file regions ----------------------------------------------------------------------------

testWith(FS, "openFileRegion() creates a 0600 file of the asked size", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/state.dat`;
    using region = openFileRegion(path, { create: true, size: 300 });
    assert.equal(region.kind, "file");
    assert.equal(region.name, path);
    assert.equal(region.size, 300);
    const stat = Deno.lstatSync(path);
    assert.equal((stat.mode ?? 0) & 0o777, 0o600);
    assert.equal(stat.size, 300);
  });
});

testWith(FS, "openFileRegion() shares writes between two handles", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/state.dat`;
    using writer = openFileRegion(path, { create: true, size: 64 });
    using reader = openFileRegion(path);
    writer.write(10, encoder.encode("hello"));
    assert.equal(decoder.decode(reader.read(10, 5)), "hello");
    writer.storeInt32(32, 1234);
    assert.equal(reader.loadInt32(32), 1234);
    assert.equal(reader.addInt32(32, 1), 1234);
    assert.equal(writer.compareExchangeInt32(32, 1235, 7), 1235);
    assert.equal(reader.loadInt32(32), 7);
  });
});

testWith(
  FS,
  "openFileRegion() opens the original's 258-byte file and never shrinks it",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/data.dat`;
      const original = new Uint8Array(258);
      original.set(encoder.encode("1\n\0"));
      Deno.writeFileSync(path, original, { mode: 0o600 });
      using region = openFileRegion(path, { size: 256 });
      assert.equal(region.size, 256);
      assert.equal(Deno.statSync(path).size, 258);
      assert.deepEqual(region.read(0, 3), encoder.encode("1\n\0"));
    });
  },
);

testWith(FS, "openFileRegion() grows a shorter existing file", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/short.dat`;
    Deno.writeFileSync(path, encoder.encode("0\n"), { mode: 0o600 });
    using region = openFileRegion(path, { size: 4096 });
    assert.equal(Deno.statSync(path).size, 4096);
    assert.deepEqual(region.read(0, 2), encoder.encode("0\n"));
  });
});

testWith(FS, "openFileRegion() without create reports a missing file as NotFound", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/missing.dat`;
    assert.throws(
      () => openFileRegion(path, { size: 64 }),
      (e) => e instanceof Deno.errors.NotFound && assertErrorNames(e, path, "ENOENT"),
    );
    assert.throws(() => Deno.lstatSync(path), Deno.errors.NotFound);
  });
});

testWith(FS, "openFileRegion() with exclusive refuses an existing file", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/taken.dat`;
    Deno.writeFileSync(path, encoder.encode("mine"), { mode: 0o600 });
    assert.throws(
      () => openFileRegion(path, { create: true, exclusive: true, size: 64 }),
      (e) => e instanceof Deno.errors.AlreadyExists && assertErrorNames(e, path, "EEXIST"),
    );
    assert.equal(Deno.readTextFileSync(path), "mine");
  });
});

testWith(FS, "openFileRegion() rejects a symlink and leaves its target alone", async () => {
  await withTempDir((dir) => {
    const target = `${dir}/target.dat`;
    const link = `${dir}/link.dat`;
    Deno.writeFileSync(target, encoder.encode("precious"), { mode: 0o600 });
    Deno.symlinkSync(target, link);
    for (const options of [{}, { create: true, size: 64 }]) {
      assert.throws(
        () => openFileRegion(link, options),
        (e) =>
          e instanceof Deno.errors.FilesystemLoop && assertErrorNames(e, link, "symbolic link"),
      );
    }
    assert.equal(Deno.readTextFileSync(target), "precious");
    assert.ok(Deno.lstatSync(link).isSymlink);
  });
});

testWith(
  FS,
  "openFileRegion() rejects a dangling symlink instead of creating its target",
  async () => {
    await withTempDir((dir) => {
      const link = `${dir}/dangling.dat`;
      Deno.symlinkSync(`${dir}/would-be-created`, link);
      assert.throws(
        () => openFileRegion(link, { create: true, size: 64 }),
        (e) => e instanceof Deno.errors.FilesystemLoop && assertErrorNames(e, link),
      );
      assert.throws(() => Deno.lstatSync(`${dir}/would-be-created`), Deno.errors.NotFound);
    });
  },
);

testWith(FS, "openFileRegion() rejects a directory", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/sub`;
    Deno.mkdirSync(path);
    assert.throws(
      () => openFileRegion(path, { create: true, size: 64 }),
      (e) => e instanceof Deno.errors.IsADirectory && assertErrorNames(e, path, "directory"),
    );
  });
});

testWith(FS, "openFileRegion() rejects a FIFO without opening it", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/pipe`;
    makeFifo(path, 0o600);
    assert.throws(
      () => openFileRegion(path, { size: 64 }),
      (e) => e instanceof Deno.errors.InvalidData && assertErrorNames(e, path, "fifo"),
    );
    assert.ok(Deno.lstatSync(path).isFifo);
  });
});

testWith(FS, "openFileRegion() rejects a device", () => {
  assert.throws(
    () => openFileRegion("/dev/null", { size: 64 }),
    (e) =>
      e instanceof Deno.errors.InvalidData && assertErrorNames(e, "/dev/null", "character device"),
  );
});

testWith(FS, "openFileRegion() rejects a file of another owner", async (t) => {
  if (!isRoot()) {
    t.step({ name: "needs root to chown a file (skipped)", ignore: true, fn: () => {} });
    return;
  }
  await withTempDir((dir) => {
    const path = `${dir}/theirs.dat`;
    Deno.writeFileSync(path, new Uint8Array(256), { mode: 0o600 });
    Deno.chownSync(path, 65534, 65534);
    assert.throws(
      () => openFileRegion(path),
      (e) => e instanceof Deno.errors.PermissionDenied && assertErrorNames(e, path, "uid 65534"),
    );
    assert.equal(Deno.statSync(path).size, 256);
  });
});

testWith(
  FS,
  "openFileRegion() rejects a directory others can write without the sticky bit",
  async () => {
    await withTempDir((dir) => {
      const open = `${dir}/open`;
      Deno.mkdirSync(open);
      Deno.chmodSync(open, 0o777);
      const path = `${open}/state.dat`;
      assert.throws(
        () => openFileRegion(path, { create: true, size: 64 }),
        (e) =>
          e instanceof Deno.errors.PermissionDenied &&
          assertErrorNames(e, path, "writable by other users"),
      );
      Deno.chmodSync(open, 0o1777); // sticky, like /tmp: allowed
      using region = openFileRegion(path, { create: true, size: 64 });
      assert.equal(region.size, 64);
    });
  },
);

testWith(FS, "openFileRegion() rejects an empty file opened without create", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/empty.dat`;
    Deno.writeFileSync(path, new Uint8Array(0), { mode: 0o600 });
    for (const options of [{}, { size: 256 }]) {
      assert.throws(
        () => openFileRegion(path, options),
        (e) => e instanceof Deno.errors.InvalidData && assertErrorNames(e, path, "empty"),
      );
    }
    using region = openFileRegion(path, { create: true, size: 256 });
    assert.equal(region.size, 256);
  });
});

testWith(FS, "openFileRegion() rejects negative, fractional and absurd sizes", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/sized.dat`;
    for (const size of [-1, 0, 1.5, MAX_REGION_SIZE + 1, Infinity, NaN]) {
      assert.throws(
        () => openFileRegion(path, { create: true, size }),
        (e) => e instanceof RangeError && assertErrorNames(e, path, `size ${size}`),
      );
    }
    assert.throws(() => openFileRegion(path, { create: true }), TypeError);
    assert.throws(() => Deno.lstatSync(path), Deno.errors.NotFound);
  });
});

testWith(FS, "SharedRegion.unlink() refuses a path that was replaced", async () => {
  await withTempDir((dir) => {
    const path = `${dir}/state.dat`;
    using region = openFileRegion(path, { create: true, size: 64 });
    Deno.removeSync(path);
    Deno.writeFileSync(path, encoder.encode("someone else's"));
    assert.throws(
      () => region.unlink(),
      (e) => e instanceof Deno.errors.NotFound && assertErrorNames(e, path),
    );
    assert.equal(Deno.readTextFileSync(path), "someone else's");
    Deno.removeSync(path);
    using again = openFileRegion(path, { create: true, size: 64 });
    again.unlink();
    assert.throws(() => Deno.lstatSync(path), Deno.errors.NotFound);
  });
});

// --- access checks ---------------------------------------------------------------------------

Deno.test("SharedRegion accessors are bounds-checked", () => {
  using region = createMemfdRegion({ size: 64 });
  assert.throws(() => region.read(60, 8), RangeError);
  assert.throws(() => region.read(-1, 1), RangeError);
  assert.throws(() => region.write(63, new Uint8Array(2)), RangeError);
  assert.throws(() => region.loadInt32(64), RangeError);
  assert.throws(() => region.loadInt32(2), RangeError);
  assert.throws(() => region.storeInt32(1.5, 0), RangeError);
  region.write(60, new Uint8Array([1, 2, 3, 4]));
  assert.deepEqual(region.read(60, 4), new Uint8Array([1, 2, 3, 4]));
});

Deno.test("SharedRegion after close throws BadResource, and close twice is fine", () => {
  const region = createMemfdRegion({ size: 64 });
  const copy = region.read(0, 8);
  region.close();
  region.close();
  assert.equal(region.closed, true);
  assert.equal(copy.length, 8); // copies outlive the mapping
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
    assert.throws(
      use,
      (e) => e instanceof Deno.errors.BadResource && assertErrorNames(e, "closed"),
    );
  }
});

Deno.test("SharedRegion works with using", () => {
  let outer: SharedRegion;
  {
    using region = createMemfdRegion({ size: 64 });
    outer = region;
    region.storeInt32(0, 1);
  }
  assert.equal(outer.closed, true);
});

Deno.test("SharedRegion.waitInt32() wakes on notify, times out, and aborts", async () => {
  using region = createMemfdRegion({ size: 64 });
  assert.equal(await region.waitInt32(0, 5), "not-equal");
  assert.equal(await region.waitInt32(0, 0, { timeout: 20 }), "timed-out");
  const waiting = region.waitInt32(0, 0);
  setTimeout(() => {
    region.storeInt32(0, 1);
    region.notifyInt32(0);
  }, 20);
  assert.equal(await waiting, "ok");
  const controller = new AbortController();
  const aborted = region.waitInt32(0, 1, { signal: controller.signal });
  setTimeout(() => controller.abort(new Error("stop waiting")), 20);
  await assert.rejects(aborted, { message: "stop waiting" });
});

Deno.test("SharedRegion.close() during a wait ends the wait", async () => {
  const region = createMemfdRegion({ size: 64 });
  const waiting = region.waitInt32(0, 0);
  setTimeout(() => region.close(), 20);
  assert.equal(await waiting, "ok");
  assert.equal(region.closed, true);
});

// --- POSIX shared memory ---------------------------------------------------------------------

Deno.test("openShmRegion() creates, reopens, refuses exclusive reuse and removes", async () => {
  await withShmName((name) => {
    assert.throws(
      () => openShmRegion(name, { size: 64 }),
      (e) => e instanceof Deno.errors.NotFound && assertErrorNames(e, name, "ENOENT"),
    );
    using created = openShmRegion(name, { create: true, exclusive: true, size: 128 });
    assert.equal(created.kind, "posix");
    created.storeInt32(0, 99);
    using opened = openShmRegion(name.slice(1));
    assert.equal(opened.size, 128);
    assert.equal(opened.loadInt32(0), 99);
    assert.throws(
      () => openShmRegion(name, { create: true, exclusive: true, size: 128 }),
      (e) => e instanceof Deno.errors.AlreadyExists && assertErrorNames(e, name),
    );
    created.unlink();
    assert.equal(removeShm(name), false);
  });
});

Deno.test("openShmRegion() rejects names with slashes", () => {
  for (const name of ["/a/b", "", "/", "a".repeat(300)]) {
    assert.throws(() => openShmRegion(name, { create: true, size: 8 }), TypeError);
  }
});

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
    assert.equal((await chown("65534:65534")).code, 0);
    assert.throws(
      () => openShmRegion(name),
      (e) => e instanceof Deno.errors.PermissionDenied && assertErrorNames(e, name, "uid 65534"),
    );
    assert.throws(() => removeShm(name), Deno.errors.PermissionDenied);
    assert.equal((await chown("0:0")).code, 0);
  });
});

// --- System V shared memory ------------------------------------------------------------------

Deno.test("openSysvRegion() creates, reopens, refuses growth and removes", () => {
  const key = uniqueSysvKey();
  const created = openSysvRegion(key, { create: true, exclusive: true, size: 4096 });
  try {
    assert.equal(created.kind, "sysv");
    created.storeInt32(8, 5);
    using opened = openSysvRegion(key);
    assert.equal(opened.size, 4096);
    assert.equal(opened.loadInt32(8), 5);
    assert.throws(
      () => openSysvRegion(key, { size: 8192 }),
      (e) =>
        e instanceof Deno.errors.InvalidData && assertErrorNames(e, `key ${key}`, "cannot grow"),
    );
    assert.throws(
      () => openSysvRegion(key, { create: true, exclusive: true, size: 4096 }),
      (e) => e instanceof Deno.errors.AlreadyExists && assertErrorNames(e, `key ${key}`),
    );
  } finally {
    created.unlink();
    created.close();
  }
  assert.throws(
    () => openSysvRegion(key),
    (e) => e instanceof Deno.errors.NotFound && assertErrorNames(e, `key ${key}`),
  );
});

Deno.test("openSysvRegion() rejects a zero key", () => {
  assert.throws(() => openSysvRegion(0, { create: true, size: 64 }), TypeError);
});

// --- memfd -----------------------------------------------------------------------------------

Deno.test("createMemfdRegion() is reachable through its /proc path", () => {
  using region = createMemfdRegion({ size: 256, label: "test" });
  assert.equal(region.kind, "memfd");
  assert.match(region.name, /^\/proc\/\d+\/fd\/\d+$/);
  region.storeInt32(4, 77);
  using again = openMemfdRegion(region.name);
  assert.equal(again.size, 256);
  assert.equal(again.loadInt32(4), 77);
  assert.throws(
    () => openMemfdRegion(region.name, { size: 512 }),
    (e) => e instanceof Deno.errors.InvalidData && assertErrorNames(e, region.name, "256 bytes"),
  );
});

Deno.test("openMemfdRegion() refuses an fd that is not a memfd", () => {
  assert.throws(() => openMemfdRegion("/etc/passwd"), TypeError);
  assert.throws(
    () => openMemfdRegion("/proc/self/fd/0"),
    (e) =>
      e instanceof Deno.errors.InvalidData && assertErrorNames(e, "/proc/self/fd/0", "not a memfd"),
  );
});

// --- two processes, four ways ----------------------------------------------------------------

async function sharedWithChild(region: SharedRegion, kind: string): Promise<void> {
  using cell = openStateCell(region, { writer: true, initialise: true, initialValue: 7 });
  region.storeInt32(192, 0);
  await using peer = spawnDeno(`${TESTS_DIR}fixtures/cell_peer.ts`, ["share", kind, region.name]);
  assert.equal(await peer.nextLine(), "ready 7");
  // The child's write to the word wakes us: a futex across processes.
  while (region.loadInt32(192) !== 42) await region.waitInt32(192, 0, { timeout: 30_000 });
  cell.write(8);
  assert.equal(await peer.nextLine(), "changed 8");
  const status = await peer.status();
  assert.equal(status.code, 0, status.stderr);
}

testWith(RUN, "two processes share a file region and its state cell", async () => {
  await withTempDir(async (dir) => {
    using region = openFileRegion(`${dir}/shared.dat`, { create: true, size: 256 });
    await sharedWithChild(region, "file");
  });
});

testWith(RUN, "two processes share a POSIX shm region and its state cell", async () => {
  await withShmName(async (name) => {
    using region = openShmRegion(name, { create: true, size: 256 });
    await sharedWithChild(region, "posix");
  });
});

testWith(RUN, "two processes share a System V region and its state cell", async () => {
  const region = openSysvRegion(uniqueSysvKey(), { create: true, exclusive: true, size: 256 });
  try {
    await sharedWithChild(region, "sysv");
  } finally {
    region.unlink();
    region.close();
  }
});

testWith(RUN, "a child reaches the parent's memfd through /proc/PID/fd/N", async () => {
  using region = createMemfdRegion({ size: 256 });
  await sharedWithChild(region, "memfd");
});
