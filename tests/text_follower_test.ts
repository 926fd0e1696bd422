/**
 * The Worker that follows values kept as text (`ffi/text_follower.ts`): it keeps reading after
 * its owner closed the file, a Worker that fails is reported, never waited for in vain, and every
 * follower of a process shares one Worker, and a process with no fd for a Worker keeps running.
 */
import { assertEquals, assertRejects, assertThrows } from "@std/assert";
import type { Mapping } from "../ffi/mapping.ts";
import * as C from "../ffi/constants.ts";
import { closeFd, openPath } from "../ffi/posix.ts";
import { type FollowedChange, FOLLOWERS_PER_WORKER, TextFollower } from "../ffi/text_follower.ts";
import { parseState } from "../lib/state_text.ts";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { runUnderFdLimit } from "./helpers/spawn.ts";
import { settledWorkerThreads, workerThreads } from "./helpers/proc.ts";
import { withTempDir } from "./helpers/temp.ts";
import { delay, until, within } from "./helpers/waiting.ts";

/** Writes `text` in place at the start of `path`, as the original C button writes. */
function writeInPlace(path: string, text: string): void {
  using file = Deno.openSync(path, { write: true });
  file.writeSync(new TextEncoder().encode(text));
}

testWith(
  NEEDS.files,
  "a follower keeps reading the file after its owner closed their descriptor",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/data.dat`;
      Deno.writeTextFileSync(path, "1\n");
      const fd = openPath(path, C.O_RDONLY | C.O_CLOEXEC, 0, "open");
      const follower = TextFollower.start({
        source: { fd },
        parse: parseState,
        value: 1,
        periodMs: 1,
      });
      try {
        closeFd(fd);
        // Several looks at a file that still says 1: nothing to report.
        const first = follower.next();
        const quiet = await Promise.race([first, delay(50).then(() => "quiet" as const)]);
        assertEquals(quiet, "quiet", "a change was reported though the file still says 1");
        // In place, as the original C button writes: writeTextFileSync would empty the file
        // first, and a look in between would rightly report the 0 an empty file reads as.
        using file = Deno.openSync(path, { write: true });
        file.writeSync(new TextEncoder().encode("7\n"));
        assertEquals(await first, { value: 7, watchMoved: false } satisfies FollowedChange);
      } finally {
        await follower.stop();
      }
    });
  },
);

testWith(NEEDS.files, "a follower whose Worker fails rejects next() with why", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/data.dat`;
    Deno.writeTextFileSync(path, "1\n");
    const fd = openPath(path, C.O_RDONLY | C.O_CLOEXEC, 0, "open");
    try {
      const follower = TextFollower.start({
        source: { fd },
        parse: () => {
          throw new Error("unparsable on purpose");
        },
        value: 1,
        periodMs: 1,
      });
      await assertRejects(() => follower.next(), Error, "unparsable on purpose");
      await follower.stop();
    } finally {
      closeFd(fd);
    }
  });
});

testWith(
  NEEDS.childrenAndFiles,
  "followers share one Worker: each hears its own file, one stops while the others go on",
  async () => {
    await withTempDir(async (dir) => {
      const before = await settledWorkerThreads();
      const count = FOLLOWERS_PER_WORKER + 2; // fills one Worker and starts a second
      const fds: number[] = [];
      const followers: TextFollower[] = [];
      try {
        for (let i = 0; i < count; i++) {
          const path = `${dir}/${i}.dat`;
          Deno.writeTextFileSync(path, "1\n");
          fds.push(openPath(path, C.O_RDONLY | C.O_CLOEXEC, 0, "open"));
          followers.push(
            TextFollower.start({
              source: { fd: fds[i] },
              parse: parseState,
              value: 1,
              periodMs: 5,
            }),
          );
        }
        await until(() => workerThreads() === before + 2, "two Worker threads");
        // One stops; every other one still hears its own file, with its own value.
        await followers[0].stop();
        assertEquals(await followers[0].next(), undefined);
        const changes = followers.slice(1).map((follower) => follower.next());
        for (let i = 1; i < count; i++) writeInPlace(`${dir}/${i}.dat`, `${i % 2 === 0 ? 0 : 7}\n`);
        for (let i = 1; i < count; i++) {
          assertEquals(await within(changes[i - 1], 10_000), {
            value: i % 2 === 0 ? 0 : 7,
            watchMoved: false,
          });
        }
        assertEquals(
          workerThreads(),
          before + 2,
          "a Worker ended while its followers went on",
        );
      } finally {
        await Promise.all(followers.map((follower) => follower.stop()));
        for (const fd of fds) closeFd(fd);
      }
      // The last follower to stop ends its Worker.
      await until(() => workerThreads() === before, "no Worker thread left");
    });
  },
);

testWith(
  NEEDS.files,
  "a follower started as the last one stops gets a Worker that runs, and changes reach it",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/data.dat`;
      Deno.writeTextFileSync(path, "1\n");
      const fd = openPath(path, C.O_RDONLY | C.O_CLOEXEC, 0, "open");
      const start = () =>
        TextFollower.start({ source: { fd }, parse: parseState, value: 1, periodMs: 1 });
      try {
        for (let round = 0; round < 20; round++) {
          // The first one's stop ends its Worker: the second one starts before that is seen
          // (odd rounds) or after it (even rounds).
          const stopping = start().stop();
          if (round % 2 === 0) await stopping;
          const second = start();
          try {
            const change = second.next();
            writeInPlace(path, "7\n");
            assertEquals(
              await within(change, 10_000),
              { value: 7, watchMoved: false },
              `round ${round}`,
            );
          } finally {
            await stopping;
            await second.stop();
            writeInPlace(path, "1\n");
          }
        }
      } finally {
        closeFd(fd);
      }
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a Worker that fails fails each of its followers with why; a follower started after gets a Worker of its own that runs",
  async () => {
    await withTempDir(async (dir) => {
      const before = await settledWorkerThreads();
      // Throws on a text that starts with "b": one follower's file makes the shared Worker fail.
      const parse = (bytes: Uint8Array, at: number, end: number): number => {
        if (bytes[at] === 98) throw new Error("unparsable on purpose");
        let value = 0;
        for (let i = at; i < end && bytes[i] >= 48 && bytes[i] <= 57; i++) {
          value = value * 10 + bytes[i] - 48;
        }
        return value;
      };
      const fds: number[] = [];
      const open = (name: string): number => {
        Deno.writeTextFileSync(`${dir}/${name}`, "1\n");
        fds.push(openPath(`${dir}/${name}`, C.O_RDONLY | C.O_CLOEXEC, 0, "open"));
        return fds[fds.length - 1];
      };
      const start = (fd: number) =>
        TextFollower.start({ source: { fd }, parse, value: 1, periodMs: 1 });
      const followers = [start(open("a")), start(open("b")), start(open("c"))];
      try {
        const nexts = followers.map((follower) => follower.next());
        writeInPlace(`${dir}/b`, "boom\n");
        for (const next of nexts) {
          await assertRejects(() => within(next, 10_000), Error, "unparsable on purpose");
        }
        // The failed Worker is gone, and a new follower gets one that works.
        const late = start(open("d"));
        followers.push(late);
        const change = late.next();
        writeInPlace(`${dir}/d`, "7\n");
        assertEquals(await within(change, 10_000), { value: 7, watchMoved: false });
        await until(
          () => workerThreads() === before + 1,
          "the failed Worker gone",
        );
      } finally {
        await Promise.all(followers.map((follower) => follower.stop()));
        for (const fd of fds) closeFd(fd);
      }
      await until(() => workerThreads() === before, "no Worker thread left");
    });
  },
);

/** Runs `tests/fixtures/follow_without_fds.ts` under `ulimit -n 256`; its lines. */
function followWithoutFds(args: string[], dir: string): Promise<string[]> {
  return runUnderFdLimit("follow_without_fds.ts", args, {
    permissions: ["--allow-ffi", `--allow-read=${dir}`, `--allow-write=${dir}`],
  });
}

testWith(
  [...NEEDS.childrenAndFiles, requires("sh")],
  "a reader whose follower Worker cannot start (no fd free) looks at the text itself, and starts the Worker a second later once fds are free",
  async () => {
    await withTempDir(async (dir) => {
      assertEquals(await followWithoutFds(["cell", dir], dir), [
        "changed to 7 with 0 Worker more",
        "1 Worker more",
        "changed to 8",
        "done",
      ]);
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("sh")],
  "a follower that cannot start its Worker (its copy of the fd took the last one) throws EMFILE and closes that copy",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/data.dat`;
      Deno.writeTextFileSync(path, "1\n");
      const lines = await followWithoutFds(["follower", path], dir);
      assertEquals(lines.length, 3, lines.join("\n"));
      assertEquals(lines[0].split(": ").slice(0, 2), ["refused", "EMFILE"]);
      assertEquals(lines.slice(1), ["0 fds more", "done"]);
    });
  },
);

testWith(
  NEEDS.files,
  "a follower refuses a period that is not above 0 or not finite, and one that cannot start leaves no Worker behind",
  async () => {
    const before = await settledWorkerThreads();
    const source = { fd: 0 };
    for (const periodMs of [0, -1, NaN, Infinity]) {
      assertThrows(
        () => TextFollower.start({ source, parse: parseState, value: 0, periodMs }),
        RangeError,
        `Follow period ${periodMs} `,
      );
    }
    // A mapping closed before the follower starts (its address throws), as no owner of ours
    // lets happen: the Worker must not be started for a follower that never joins it.
    const closed = {
      address(): bigint {
        throw new Deno.errors.BadResource("The mapping is closed");
      },
    } as unknown as Mapping;
    assertThrows(
      () =>
        TextFollower.start({
          source: { mapping: closed, offset: 0 },
          parse: parseState,
          value: 0,
          periodMs: 5,
        }),
      Deno.errors.BadResource,
    );
    assertEquals(await settledWorkerThreads(), before);
  },
);
