/**
 * Tests of how a failed libc call's errno is read (`ffi/errno.ts`): errno is read by a second FFI
 * call, and the runtime can change it in between; a failure's errno is believed only when two
 * failures in a row agree. Real calls, real failures.
 *
 * @module
 */

import { assertEquals } from "@std/assert";
import * as C from "../ffi/constants.ts";
import { Errno, lastErrno, retryFailed } from "../ffi/errno.ts";
import { libc } from "../ffi/libc.ts";
import { statPath } from "../ffi/posix.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { withTempDir } from "./helpers/temp.ts";

const encoder = new TextEncoder();
const cPath = (path: string): Uint8Array<ArrayBuffer> => encoder.encode(`${path}\0`);

Deno.test("retryFailed() believes a failure's errno only when two failures in a row agree", () => {
  const lockNothing = (): number => libc().flock(-1, C.LOCK_EX | C.LOCK_NB);
  assertEquals(lockNothing(), -1);
  assertEquals(lastErrno(), Errno.EBADF);
  // What the runtime sometimes does between a failed call and the read of its errno.
  assertEquals(statPath("/nonexistent-mmap-ipc/x"), undefined);
  assertEquals(lastErrno(), Errno.ENOENT);
  assertEquals(retryFailed(lockNothing), { ok: false, errno: Errno.EBADF });
});

testWith(NEEDS.files, "retryFailed() returns the result of a repeat that succeeds", async () => {
  await withTempDir((dir) => {
    const path = cPath(`${dir}/made`);
    const make = (): number => libc().mkdir(path, 0o700);
    assertEquals(make(), 0);
    assertEquals(make(), -1); // EEXIST
    Deno.removeSync(`${dir}/made`);
    assertEquals(retryFailed(make), { ok: true, result: 0 });
    assertEquals(Deno.statSync(`${dir}/made`).isDirectory, true);
  });
});
