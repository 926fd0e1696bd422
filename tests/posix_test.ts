/**
 * Tests of the libc wrappers that reuse one buffer from call to call (`ffi/posix.ts`): a scan of
 * /proc makes hundreds of calls, and a buffer allocated for each kept megabytes of native memory.
 * What one call leaves in a buffer must never show in the next call's result. Real files, real
 * calls.
 *
 * @module
 */

import { assert, assertEquals, assertThrows } from "@std/assert";
import * as C from "../ffi/constants.ts";
import {
  addressSpaceRlimit,
  addressSpaceUse,
  closeFd,
  linkFd,
  mappingCount,
  openPath,
  openUnnamed,
  readFileText,
  readLink,
  statFd,
  statPath,
} from "../ffi/posix.ts";
import { createMemfdRegion, type SharedRegion } from "../mod.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { withTempDir } from "./helpers/temp.ts";

testWith(
  NEEDS.files,
  "readFileText() reads each file whole and only it, whatever size the one before it had",
  async () => {
    await withTempDir((dir) => {
      const texts: Record<string, string> = {
        empty: "",
        small: "small\n",
        // The buffer's size, one byte over it, and several times it.
        exact: "e".repeat(65535) + "\n",
        over: "o".repeat(65536) + "\n",
        large: Array.from({ length: 30000 }, (_, i) => `line ${i}\n`).join(""),
        after: "after\n",
      };
      for (const [name, text] of Object.entries(texts)) {
        Deno.writeTextFileSync(`${dir}/${name}`, text);
      }
      for (const name of ["large", "small", "exact", "empty", "over", "small", "large", "after"]) {
        assertEquals(readFileText(`${dir}/${name}`), texts[name], name);
      }
      assertEquals(readFileText(`${dir}/missing`), undefined);
    });
  },
);

testWith(
  NEEDS.files,
  "a path as long as libc takes is used whole, a longer one is refused by name, and a short path after either is not read with what they left",
  async () => {
    await withTempDir((dir) => {
      Deno.writeTextFileSync(`${dir}/b`, "b");
      // PATH_MAX counts the NUL: the longest path is one byte shorter. "./" adds length only.
      const longest = `${dir}/${"./".repeat((C.PATH_MAX - dir.length - 3) / 2)}`.padEnd(
        C.PATH_MAX - 2,
        "/",
      ) + "b";
      assertEquals(new TextEncoder().encode(longest).length, C.PATH_MAX - 1);
      assertEquals(statPath(longest)?.size, 1);
      const fd = openPath(longest, C.O_RDONLY | C.O_CLOEXEC, 0, "open");
      closeFd(fd);
      // A byte longer, and longer still in characters of two bytes each.
      for (const tooLong of [`/${longest}`, `${dir}/${"\u00e9".repeat(C.PATH_MAX / 2)}`]) {
        assertThrows(
          () => statPath(tooLong),
          Error,
          "file name too long (ENAMETOOLONG)",
        );
        assertThrows(
          () => openPath(tooLong, C.O_RDONLY | C.O_CLOEXEC, 0, "open"),
          Error,
          "file name too long (ENAMETOOLONG)",
        );
        assertEquals(statPath(`${dir}/b`)?.size, 1, "a short path after a long one");
        assertEquals(statPath(`${dir}/c`), undefined, "a short path after a long one");
      }
    });
  },
);

testWith(
  NEEDS.files,
  "readLink() gives each link's target whole, a long one's and then a short one's",
  async () => {
    await withTempDir((dir) => {
      const long = `/${"x".repeat(C.PATH_MAX - 2)}`;
      Deno.symlinkSync(long, `${dir}/long`);
      Deno.symlinkSync("short", `${dir}/short`);
      assertEquals(readLink(`${dir}/long`), long);
      assertEquals(readLink(`${dir}/short`), "short");
      assertEquals(readLink(`${dir}/long`), long);
    });
  },
);

testWith(
  NEEDS.files,
  "mappingCount() counts every line of /proc/self/maps, across reads of many scratch buffers",
  () => {
    // Deno guards /proc/self behind --allow-all: read through libc, tested above.
    const maps = (): string => readFileText("/proc/self/maps") ?? "";
    const lines = (): number => maps().split("\n").length - 1;
    const regions: SharedRegion[] = [];
    try {
      // Enough mappings that the file is several times the 64 KiB read at a time.
      for (let i = 0; i < 2500; i++) regions.push(createMemfdRegion({ size: 4096 }));
      assert(maps().length > 3 * 65536);
      const before = lines();
      const counted = mappingCount();
      const after = lines();
      assert(counted !== undefined);
      // V8 may map or unmap a page of its own between the reads.
      assert(
        counted >= Math.min(before, after) - 4 && counted <= Math.max(before, after) + 4,
        `counted ${counted}, the text has ${before} then ${after} lines`,
      );
    } finally {
      for (const region of regions) region.close();
    }
  },
);

testWith(
  NEEDS.files,
  "addressSpaceUse() follows the process's virtual size and finds the top of user space; addressSpaceRlimit() reads RLIMIT_AS",
  () => {
    const before = addressSpaceUse();
    assert(before !== undefined);
    // The main stack lies near the top of a user space of 2^39 to 2^57 bytes (within the few
    // GiB that the randomization of its place takes).
    const top = 2 ** Math.ceil(Math.log2(before.stackStart));
    assert(top >= 2 ** 39 && top <= 2 ** 57 && top - before.stackStart < 2 ** 36, `${top}`);
    const status = readFileText("/proc/self/status") ?? "";
    const vmSizeKiB = Number(/^VmSize:\s+(\d+) kB/m.exec(status)?.[1]);
    // V8 may map or unmap a little between the two reads.
    assert(Math.abs(before.used - vmSizeKiB * 1024) < 2 ** 28, `${before.used} ${vmSizeKiB}`);
    using region = createMemfdRegion({ size: 2 ** 32 });
    const after = addressSpaceUse();
    assert(after !== undefined && after.used - before.used >= 2 ** 32 - 2 ** 28);
    assertEquals(region.size, 2 ** 32);
    const limits = readFileText("/proc/self/limits") ?? "";
    const soft = /^Max address space\s+(\S+)/m.exec(limits)?.[1];
    assertEquals(addressSpaceRlimit(), soft === "unlimited" ? Infinity : Number(soft));
  },
);

testWith(
  NEEDS.files,
  "openUnnamed() and linkFd(): the file has no name until linked, and a link never replaces what is at the path, a symlink included",
  async () => {
    await withTempDir((dir) => {
      const fd = openUnnamed(dir, C.O_RDWR | C.O_CLOEXEC, 0o600, "create", `${dir}/a`);
      assert(fd !== undefined, "tmpfs or ext4 makes unnamed files");
      try {
        assertEquals([...Deno.readDirSync(dir)], []);
        linkFd(fd, `${dir}/a`, "create");
        assertEquals(statPath(`${dir}/a`)?.identity, statFd(fd, "a").identity);
        Deno.writeTextFileSync(`${dir}/b`, "theirs");
        Deno.symlinkSync(`${dir}/b`, `${dir}/link`);
        for (const taken of ["a", "b", "link"]) {
          assertThrows(() => linkFd(fd, `${dir}/${taken}`, "create"), Deno.errors.AlreadyExists);
        }
        assertEquals(Deno.readTextFileSync(`${dir}/b`), "theirs");
        assertEquals(statPath(`${dir}/link`)?.type, "symlink");
      } finally {
        closeFd(fd);
      }
    });
  },
);
