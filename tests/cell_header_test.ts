/**
 * How a state cell's header is made and made anew: by one opener at a time, never over a live
 * cell by an open that is refused, never over a ring, and never leaving a role behind when an
 * open fails.
 *
 * @module
 */

import { assert, assertEquals, assertThrows } from "@std/assert";
import { assertThrowsWith } from "./helpers/assertions.ts";
import { TESTS_DIR } from "./helpers/paths.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { spawnDeno } from "./helpers/spawn.ts";
import { withTempDir } from "./helpers/temp.ts";
import type { OpenerStart } from "./fixtures/blank_opener.ts";
import {
  createMemfdRegion,
  initRing,
  openFileRegion,
  openRingProducer,
  openStateCell,
  openStateFile,
  restoreStateCellHeader,
  ringRegionSize,
  type SharedRegion,
  stateCellHeaderProblem,
} from "../mod.ts";
import type { ChildProcess } from "./helpers/child_process.ts";
import { STATE_CELL_MAGIC } from "../lib/state_cell.ts";

const PEER = `${TESTS_DIR}fixtures/cell_peer.ts`;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The 64-bit word where the header's maker keeps its claim while it makes it. */
function makerClaim(region: { read(offset: number, length: number): Uint8Array }): bigint {
  return new DataView(region.read(112, 8).buffer).getBigUint64(0, true);
}

/**
 * Starts tests/fixtures/half_maker.ts on `region`, whose text it first sets to `" 7"`: it stops
 * half way through making the header, and prints `made`.
 */
function spawnHalfMaker(region: SharedRegion): ChildProcess {
  region.write(0, encoder.encode(" 7"));
  return spawnDeno(`${TESTS_DIR}fixtures/half_maker.ts`, [region.name], {
    permissions: ["--allow-ffi", "--allow-read"],
  });
}

testWith(
  ["read"],
  "two openers of one blank cell at the same moment: neither is refused, and a value the first writes is never written over by the other's making",
  async () => {
    const rounds = 300;
    using region = createMemfdRegion({ size: 256 });
    const control = new Int32Array(new SharedArrayBuffer(8));
    const workers = [true, false].map((writer) => {
      const worker = new Worker(new URL("./fixtures/blank_opener.ts", import.meta.url), {
        type: "module",
      });
      const done = new Promise<string[]>((resolve, reject) => {
        worker.onmessage = (event: MessageEvent<{ errors: string[] }>) =>
          resolve(event.data.errors);
        worker.onerror = (event) => {
          event.preventDefault();
          reject(new Error(`an opener failed: ${event.message}`));
        };
      });
      worker.postMessage(
        { name: region.name, control: control.buffer, rounds, writer } satisfies OpenerStart,
      );
      return { worker, done };
    });
    const overwritten: string[] = [];
    try {
      for (let round = 1; round <= rounds; round++) {
        region.write(0, new Uint8Array(128));
        region.write(0, encoder.encode("3\n"));
        Atomics.store(control, 1, 0);
        Atomics.store(control, 0, round);
        while (Atomics.load(control, 1) < 2) await new Promise((resolve) => setTimeout(resolve));
        using cell = openStateCell(region);
        if (cell.read() !== round) overwritten.push(`round ${round}: ${cell.read()}`);
      }
      const errors = (await Promise.all(workers.map(({ done }) => done))).flat();
      assertEquals(errors, []);
      assertEquals(overwritten, []);
    } finally {
      for (const { worker } of workers) worker.terminate();
    }
  },
);

testWith(
  NEEDS.children,
  "a blank header whose maker stopped half way: a live maker holds others up for a second, then is named; once it died, the next opener makes the header with the value it was writing",
  async () => {
    using region = createMemfdRegion({ size: 256 });
    await using maker = spawnHalfMaker(region);
    assertEquals(await maker.nextLine(), "made");
    assertEquals(stateCellHeaderProblem(region), undefined, "a header being made is not foreign");
    const started = performance.now();
    assertThrowsWith(
      () => openStateCell(region),
      Deno.errors.Busy,
      `pid ${maker.pid} has been making its header for more than 1000 ms`,
    );
    assert(performance.now() - started >= 1_000, "the opener should wait for the maker first");
    assertEquals(region.loadInt32(64), 0, "nothing is made while the maker lives");
    maker.kill("SIGKILL");
    await maker.status();
    // The text reads "77" half rewritten; the value being written says what it was.
    assertEquals(decoder.decode(region.read(0, 2)), "77");
    using cell = openStateCell(region);
    assertEquals(cell.read(), 7);
    assertEquals(decoder.decode(region.read(0, 3)), "7\n\0");
    assertEquals(region.loadInt32(64), STATE_CELL_MAGIC);
    assertEquals(makerClaim(region), 0n);
  },
);

testWith(
  NEEDS.children,
  "a maker that died half way, then a C writer's whole text: the next opener keeps the C writer's value, not the one the maker was writing",
  async () => {
    using region = createMemfdRegion({ size: 256 });
    await using maker = spawnHalfMaker(region);
    assertEquals(await maker.nextLine(), "made");
    maker.kill("SIGKILL");
    await maker.status();
    region.write(0, encoder.encode("5\n\0\0")); // the C button's next press: sprintf("%d\n")
    using cell = openStateCell(region);
    assertEquals(cell.read(), 5);
    assertEquals(decoder.decode(region.read(0, 3)), "5\n\0");
  },
);

testWith(
  NEEDS.children,
  "initialise: true over a header a live maker is making waits for it as any opener does, and keeps its claim: it is not written over under the maker",
  async () => {
    using region = createMemfdRegion({ size: 256 });
    await using maker = spawnHalfMaker(region);
    assertEquals(await maker.nextLine(), "made");
    const claim = makerClaim(region);
    assertThrowsWith(
      () => openStateCell(region, { initialise: true, initialValue: 9 }),
      Deno.errors.Busy,
      `pid ${maker.pid} has been making its header`,
    );
    assertEquals(makerClaim(region), claim, "the live maker's claim was cleared");
    assertEquals(region.loadInt32(64), 0, "the header was made under its maker");
    maker.kill("SIGKILL");
    await maker.status();
    using cell = openStateCell(region, { initialise: true, initialValue: 9 });
    assertEquals(cell.read(), 9, "once the maker is gone, the value asked for");
    assertEquals(makerClaim(region), 0n);
  },
);

testWith(
  NEEDS.files,
  "a cell opened on a file a peer shrank to nothing is UnexpectedEof at the open, not a cell made in the zeros mapped in its place",
  async () => {
    await withTempDir((dir) => {
      const path = `${dir}/state.dat`;
      using region = openFileRegion(path, { create: true, size: 4096 });
      Deno.truncateSync(path, 0);
      assertThrowsWith(
        () => openStateCell(region, { writer: true }),
        Deno.errors.UnexpectedEof,
      );
    });
  },
);

Deno.test("a header with no magic and no maker's claim is still foreign", () => {
  using region = createMemfdRegion({ size: 256 });
  region.storeInt32(68, 2);
  region.storeInt32(72, 128);
  assertThrowsWith(
    () => openStateCell(region),
    Deno.errors.InvalidData,
    "found 0x00000000 at byte 64",
  );
  assertEquals(region.loadInt32(64), 0);
});

testWith(
  NEEDS.children,
  "initialise: true refused because another process holds the writer role writes nothing: that writer's value and sequence stay",
  async () => {
    using region = createMemfdRegion({ size: 256 });
    {
      using writer = openStateCell(region, { writer: true });
      writer.write(42);
    }
    await using live = spawnDeno(PEER, ["hold-writer", "memfd", region.name]);
    assertEquals(await live.nextLine(), `writer ${live.pid}`);
    const sequence = region.loadInt32(76);
    for (const roles of [{ writer: true }, { supervisor: true, writer: true }]) {
      assertThrowsWith(
        () => openStateCell(region, { ...roles, initialise: true, initialValue: 7 }),
        Deno.errors.Busy,
        `pid ${live.pid} holds it`,
      );
      assertEquals(region.loadInt32(84), 42);
      assertEquals(decoder.decode(region.read(0, 3)), "42\n");
      assertEquals(region.loadInt32(76), sequence);
    }
    using reader = openStateCell(region);
    assertEquals(reader.supervisorPid, undefined, "the refused open gave its supervisor role up");
  },
);

Deno.test("initialise: true over a foreign header clears its claim words, which hold no claims", () => {
  using region = createMemfdRegion({ size: 256 });
  // Words that would read as a claim of pid 1 (start time 0: always live) in a cell's header.
  region.write(64, new Uint8Array(64).fill(0));
  region.storeInt32(64, 0x58585858);
  region.storeInt32(88, 1);
  region.storeInt32(96, 1);
  using cell = openStateCell(region, {
    writer: true,
    supervisor: true,
    initialise: true,
    initialValue: 5,
  });
  assertEquals(cell.read(), 5);
  assertEquals(cell.writerPid, Deno.pid);
  assertEquals(cell.supervisorPid, Deno.pid);
});

testWith(
  NEEDS.files,
  "a writer's open that fails after it took the role gives the role up",
  async () => {
    await withTempDir((dir) => {
      using region = createMemfdRegion({ size: 256 });
      const mirror = openStateFile(`${dir}/state.dat`, { create: true });
      mirror.close();
      openStateCell(region).close(); // the header made
      const sequence = region.loadInt32(76);
      assertThrows(
        () => openStateCell(region, { writer: true, supervisor: true, mirror }),
        Deno.errors.BadResource,
      );
      // Moved, as a close moves it: a reader that saw the claim for that moment wakes and looks.
      assertEquals(region.loadInt32(76), sequence + 2);
      using reader = openStateCell(region);
      assertEquals(reader.writerPid, undefined);
      assertEquals(reader.supervisorPid, undefined);
      using writer = openStateCell(region, { writer: true });
      writer.write(1);
      assertEquals(reader.read(), 1);
    });
  },
);

Deno.test("a cell is not made over a fresh ring, whose header leaves its bytes 64-127 zero", () => {
  using region = createMemfdRegion({ size: ringRegionSize(4096) });
  initRing(region);
  using producer = openRingProducer(region);
  const before = region.read(0, 192);
  assertThrowsWith(
    () => openStateCell(region),
    Deno.errors.InvalidData,
    `found a ring's header (its magic 0x474e4952, "RING") at byte 0 (pass initialise: true to overwrite it)`,
  );
  assertEquals(region.read(0, 192), before);
  assert(producer.trySend(new Uint8Array([1])));
  // Asked for by name, it is written over as any foreign header is.
  producer.close();
  using cell = openStateCell(region, { initialise: true, initialValue: 3 });
  assertEquals(cell.read(), 3);
});

Deno.test("an onWriter that is not a function is a TypeError at open, not a crash at the first writer event", () => {
  using region = createMemfdRegion({ size: 256 });
  assertThrowsWith(
    () => openStateCell(region, { onWriter: "log" as unknown as () => void }),
    TypeError,
    "State cell option onWriter is a string, not a function",
  );
});

Deno.test("an offset a cell cannot start at is refused alike by every function that takes one", () => {
  using region = createMemfdRegion({ size: 256 });
  for (const offset of [3, 4, -8, 1.5]) {
    assertThrowsWith(
      () => stateCellHeaderProblem(region, { offset }),
      RangeError,
      `offset ${offset} is not a non-negative multiple of 8`,
    );
    assertThrowsWith(
      () => openStateCell(region, { offset }),
      RangeError,
      `offset ${offset} is not a non-negative multiple of 8`,
    );
  }
  assertThrowsWith(
    () => stateCellHeaderProblem(region, { offset: 136 }),
    RangeError,
    "the region has 256 bytes; a state cell needs 128 from offset 136",
  );
});

Deno.test("what is no region of this library is a TypeError alike for every function that takes a region, and a closed one BadResource", () => {
  // Shaped like one: it failed with "region.read is not a function", or read its fake bytes.
  const fake = {
    name: "fake",
    size: 256,
    read: () => new Uint8Array(128),
  } as unknown as SharedRegion;
  for (const use of [openStateCell, stateCellHeaderProblem, restoreStateCellHeader]) {
    assertThrowsWith(() => use(fake), TypeError, "Not a region opened by this library");
  }
  const closed = createMemfdRegion({ size: 256 });
  closed.close();
  for (const use of [openStateCell, stateCellHeaderProblem, restoreStateCellHeader]) {
    assertThrowsWith(() => use(closed), Deno.errors.BadResource, closed.name);
  }
});
