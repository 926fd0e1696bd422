/**
 * libc's calls: Deno's generic FFI path unless the process needs speed (a synchronous wait, or
 * calls made often), so that most processes never hold the fast calls' compiler code; and
 * `openLibrary()`, which binds a library that way.
 */

import { assert, assertEquals, assertThrows } from "@std/assert";
import { TESTS_DIR } from "./helpers/paths.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { spawnDeno } from "./helpers/spawn.ts";
import { openLibrary } from "../ffi/library.ts";
import { HOT_CALLS } from "../ffi/libc.ts";

/** Executable pages of a process that compiled no fast call: the SIGBUS guard's handler. */
const GUARD_PAGES = 1;

/**
 * Runs `fast_calls.ts` with `args`: whether libc's fast calls were compiled after opening and at
 * the end, each checked against the process's executable anonymous memory, where Deno puts each
 * fast call it compiles (of any library): the SIGBUS guard's page alone unless they were.
 */
async function compiledIn(...args: string[]): Promise<{ atOpen: boolean; atEnd: boolean }> {
  await using child = spawnDeno(`${TESTS_DIR}fixtures/fast_calls.ts`, args, {
    permissions: ["--allow-ffi"],
  });
  const status = await child.status();
  assertEquals(status.code, 0, status.stderr);
  const said = child.lines.filter((line) => line.stream === "stdout").map((line) => line.text);
  assertEquals(said.length, 2, said.join(" | "));
  const [atOpen, atEnd] = said.map((line) => {
    const [, compiled, pages] = /^compiled (true|false) executable (\d+)$/.exec(line) ?? [];
    assert(compiled !== undefined, said.join(" | "));
    if (compiled === "true") assert(Number(pages) > GUARD_PAGES, said.join(" | "));
    else assertEquals(Number(pages), GUARD_PAGES, said.join(" | "));
    return compiled === "true";
  });
  return { atOpen, atEnd };
}

testWith(
  NEEDS.children,
  "libc: opening a region and a state cell, and writing it now and then, compile no fast calls",
  async () => {
    // Each write wakes the cell's readers: 20 writes 20 ms apart, a fast hand at a button.
    assertEquals(await compiledIn("write", "20", "20"), { atOpen: false, atEnd: false });
    assertEquals(await compiledIn("notify", "20", "20"), { atOpen: false, atEnd: false });
  },
);

testWith(
  NEEDS.children,
  `libc: ${HOT_CALLS} wake-ups or clock reads within a second compile the fast calls`,
  async () => {
    const burst = String(HOT_CALLS + 10);
    assertEquals(await compiledIn("write", burst), { atOpen: false, atEnd: true });
    assertEquals(await compiledIn("notify", burst), { atOpen: false, atEnd: true });
    assertEquals(await compiledIn("clock", burst), { atOpen: false, atEnd: true });
    // As many, 5 ms apart (more than a second for each run of them): still generic.
    assertEquals(await compiledIn("notify", burst, "5"), { atOpen: false, atEnd: false });
  },
);

testWith(
  NEEDS.children,
  "libc: a synchronous wait compiles the fast calls at once; an opener's wait for a header does not",
  async () => {
    assertEquals(await compiledIn("wait-sync"), { atOpen: false, atEnd: true });
    // Two processes opening a blank cell at once (the launcher's children) make one wait.
    assertEquals(await compiledIn("wait-rarely"), { atOpen: false, atEnd: false });
  },
);

Deno.test("openLibrary(): generic calls with numbers, buffers and pointers give what libc gives", () => {
  const lib = openLibrary("libc.so.6", {
    getpid: { parameters: [], result: "i32" },
    strlen: { parameters: ["buffer"], result: "usize" },
    getenv: { parameters: ["buffer"], result: "pointer" },
    time: { parameters: ["pointer"], result: "i64" },
    labs: { parameters: ["i64"], result: "i64" },
  });
  try {
    assertEquals(lib.symbols.getpid(), Deno.pid);
    assertEquals(lib.symbols.strlen(new TextEncoder().encode("mmap-ipc\0")), 8n);
    const name = (text: string): Uint8Array<ArrayBuffer> => new TextEncoder().encode(`${text}\0`);
    assertEquals(lib.symbols.getenv(name("MMAP_IPC_NO_SUCH_VARIABLE")), null);
    assert(lib.symbols.getenv(name("PATH")) !== null);
    const seconds = Number(lib.symbols.time(null));
    assert(Math.abs(seconds - Date.now() / 1000) < 60, `time(NULL) gave ${seconds}`);
    assertEquals(lib.symbols.labs(-(2n ** 40n)), 2n ** 40n);
  } finally {
    lib.close();
  }
});

Deno.test("openLibrary(): an optional function the library lacks is null; a required one throws", () => {
  const lib = openLibrary("libc.so.6", {
    getpid: { parameters: [], result: "i32" },
    no_such_function_here: { parameters: [], result: "i32", optional: true },
  });
  try {
    assertEquals(lib.symbols.no_such_function_here, null);
    assertEquals(lib.symbols.getpid(), Deno.pid);
  } finally {
    lib.close();
  }
  assertThrows(() =>
    openLibrary("libc.so.6", { no_such_function_here: { parameters: [], result: "i32" } })
  );
});

Deno.test("openLibrary(): a nonblocking function runs on a worker thread and resolves", async () => {
  const lib = openLibrary("libc.so.6", {
    usleep: { parameters: ["u32"], result: "i32", nonblocking: true },
    getpid: { name: "getpid", parameters: [], result: "i32" },
  });
  try {
    const sleeping = lib.symbols.usleep(1000);
    assert(sleeping instanceof Promise);
    assertEquals(await sleeping, 0);
    assertEquals(lib.symbols.getpid(), Deno.pid);
  } finally {
    lib.close();
  }
});

Deno.test("openLibrary(): a function bound under another name calls the C function it names", () => {
  const lib = openLibrary("libc.so.6", {
    my_pid: { name: "getpid", parameters: [], result: "i32" },
  });
  try {
    assertEquals(lib.symbols.my_pid(), Deno.pid);
  } finally {
    lib.close();
  }
});
