/** Names in the abstract socket namespace (ffi/abstract_socket.ts): held, refused, told, freed. */
import { assertEquals, assertThrows } from "@std/assert";
import {
  abstractNameHolder,
  dropConnections,
  holdAbstractName,
  isRole,
} from "../ffi/abstract_socket.ts";
import { closeFd, effectiveUid } from "../ffi/posix.ts";

Deno.test("an abstract name is held once, tells who holds it, and is free again at close", () => {
  const name = `mmap-ipc/test/${crypto.randomUUID()}`;
  assertEquals(abstractNameHolder(name), undefined, "nobody holds it yet");
  const fd = holdAbstractName(name);
  try {
    assertThrows(() => holdAbstractName(name), Deno.errors.AddrInUse, JSON.stringify(name));
    assertEquals(abstractNameHolder(name), { pid: Deno.pid, uid: effectiveUid() });
  } finally {
    closeFd(fd);
  }
  assertEquals(abstractNameHolder(name), undefined, "free after the close");
  closeFd(holdAbstractName(name));
});

Deno.test("an abstract name longer than sockaddr_un holds, empty, or with a NUL, is a TypeError", () => {
  assertThrows(() => holdAbstractName("x".repeat(108)), TypeError, "1 to 107 bytes");
  assertThrows(() => holdAbstractName(""), TypeError, "1 to 107 bytes");
  assertThrows(() => abstractNameHolder("a\0b"), TypeError, "without a NUL");
  closeFd(holdAbstractName(`${"y".repeat(100)}${crypto.randomUUID().slice(0, 7)}`));
});

Deno.test("a held name whose queue is full still refuses a second holder", () => {
  const name = `mmap-ipc/test/${crypto.randomUUID()}`;
  const fd = holdAbstractName(name);
  try {
    // Nobody is accepted: each look stays queued until the holder closes.
    for (let i = 0; i < 40; i++) abstractNameHolder(name);
    assertEquals(abstractNameHolder(name), undefined, "the queue is full: the holder unknown");
    assertThrows(() => holdAbstractName(name), Deno.errors.AddrInUse);
  } finally {
    closeFd(fd);
  }
});

Deno.test("a role a holder says is 1 to 64 printable ASCII characters; dropConnections() refuses any other", () => {
  for (const role of ["launcher", "mqtt:forget", "x".repeat(64)]) assertEquals(isRole(role), true);
  for (const role of ["", " launcher", "launcher\n", "x".repeat(65), "caf\u00e9"]) {
    assertEquals(isRole(role), false, JSON.stringify(role));
  }
  const fd = holdAbstractName(`mmap-ipc/test/${crypto.randomUUID()}`);
  try {
    assertThrows(() => dropConnections(fd, "two\nlines"), TypeError, "printable ASCII");
  } finally {
    closeFd(fd);
  }
});
