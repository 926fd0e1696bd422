/**
 * The launcher's FIFO keeper (app/fifo_keeper.ts) on real files: it makes the FIFO again once
 * the path is free, leaves what others put there alone, and a failure does not end it.
 */
import { assert, assertEquals, assertNotEquals, assertStringIncludes } from "@std/assert";
import { keepFifo } from "../app/fifo_keeper.ts";
import { makeFifo, statPath } from "../ffi/posix.ts";
import { Errno, osError } from "../ffi/errno.ts";
import { warningsInto } from "./helpers/logs.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { removeTree, withTempDir } from "./helpers/temp.ts";
import { delay, until } from "./helpers/waiting.ts";

/**
 * Keeps the FIFO at `path` (made here) until the returned stop is called; `onMade` is told of
 * each one made (by default, into `made`), and `onFifo` as `keepFifo()` says.
 */
function keeping(
  path: string,
  said: string[],
  made: string[],
  options: {
    onMade?: (identity: string) => void;
    onFifo?: (identity: string) => void;
    onGone?: () => void;
  } = {},
): () => Promise<void> {
  const { onMade = (identity: string): void => void made.push(identity), onFifo, onGone } = options;
  makeFifo(path, 0o600);
  const stop = new AbortController();
  const kept = keepFifo(path, {
    identity: statPath(path)?.identity ?? "",
    remakeDirectory: false,
    onMade,
    onFifo,
    onGone,
    signal: stop.signal,
    log: warningsInto(said),
  });
  return async () => {
    stop.abort();
    await kept;
  };
}

testWith(
  NEEDS.files,
  "keepFifo() makes the FIFO again once it is removed, and leaves a user's FIFO put in its place alone",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      const said: string[] = [];
      const made: string[] = [];
      const stop = keeping(path, said, made);
      try {
        const first = statPath(path)?.identity;
        Deno.removeSync(path);
        await until(() => made.length === 1, "made again");
        assertEquals(statPath(path)?.identity, made[0]);
        assertNotEquals(made[0], first);
        // A user's FIFO moved onto the path (never free): not made, not claimed.
        makeFifo(`${path}.new`, 0o600);
        Deno.renameSync(`${path}.new`, path);
        const users = statPath(path)?.identity;
        await delay(500);
        assertEquals(made.length, 1);
        assertEquals(statPath(path)?.identity, users);
        // Once the user removes theirs, the path is free: made again.
        Deno.removeSync(path);
        await until(() => made.length === 2, "made again after the user's went");
        assertEquals(said, []);
      } finally {
        await stop();
      }
    });
  },
);

testWith(
  NEEDS.files,
  "keepFifo() tells onFifo of a user's FIFO put at the path and of each chmod of what is there, never of a file, onGone of each that leaves, and logs what onFifo throws",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      const said: string[] = [];
      const made: string[] = [];
      const told: string[] = [];
      const onFifo = (identity: string): void => {
        told.push(identity);
        if (told.length === 3) throw new Error("refused for the test");
      };
      let gone = 0;
      const stop = keeping(path, said, made, { onFifo, onGone: () => gone++ });
      try {
        const ours = statPath(path)?.identity ?? "";
        Deno.chmodSync(path, 0o400);
        await until(() => told.length === 1, "the chmod of ours told");
        assertEquals(told, [ours]);
        assertEquals(gone, 0, "a chmod is no leaving");
        makeFifo(`${path}.new`, 0o200);
        Deno.renameSync(`${path}.new`, path);
        const users = statPath(path)?.identity ?? "";
        await until(() => told.length === 2, "the user's FIFO told");
        assertEquals(told[1], users);
        assertEquals(gone, 1, "ours left the path");
        Deno.chmodSync(path, 0o600);
        await until(() => told.length === 3, "its chmod told");
        assertEquals(told[2], users);
        await until(() => said.length === 1, "what onFifo threw, logged");
        assertStringIncludes(said[0], "refused for the test");
        // A file is not a FIFO to hold, put in place or changed.
        Deno.writeTextFileSync(`${path}.file`, "");
        Deno.renameSync(`${path}.file`, path);
        Deno.chmodSync(path, 0o400);
        await until(() => gone === 2, "the user's FIFO left the path");
        await delay(300);
        assertEquals(told.length, 3);
        assertEquals(gone, 2);
        assertEquals(made, []);
      } finally {
        await stop();
      }
    });
  },
);

testWith(
  NEEDS.files,
  "keepFifo() goes on after a failure: a file put where the FIFO's directory was is said once, and the FIFO is made once the directory is back",
  async () => {
    await withTempDir(async (dir) => {
      const directory = `${dir}/run`;
      Deno.mkdirSync(directory, { mode: 0o700 });
      const path = `${directory}/button.fifo`;
      const said: string[] = [];
      const made: string[] = [];
      const stop = keeping(path, said, made);
      try {
        await removeTree(directory);
        Deno.writeTextFileSync(directory, "not a directory");
        await until(() => said.length > 0, "the failure said");
        assertStringIncludes(said[0], "Cannot keep the FIFO");
        await delay(1500); // a retry or two: said once
        assertEquals(said.length, 1, said.join("\n"));
        Deno.removeSync(directory);
        Deno.mkdirSync(directory, { mode: 0o700 });
        await until(() => made.length === 1, "made once the directory is back", {
          timeoutMs: 10_000,
        });
        assert(Deno.lstatSync(path).isFifo);
      } finally {
        await stop();
      }
    });
  },
);

testWith(
  NEEDS.files,
  "keepFifo() whose FIFO cannot be claimed says so and goes on: the FIFO is there, and made again after the next removal",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      const said: string[] = [];
      const made: string[] = [];
      const stop = keeping(path, said, made, {
        onMade: (identity) => {
          made.push(identity);
          throw new Deno.errors.Busy("another launcher (pid 7) is using the FIFO");
        },
      });
      try {
        Deno.removeSync(path);
        await until(() => made.length === 1, "made again");
        assert(Deno.lstatSync(path).isFifo);
        assertEquals(said.length, 1, said.join("\n"));
        assertStringIncludes(said[0], "Could not claim the FIFO");
        assertStringIncludes(said[0], "another launcher (pid 7)");
        Deno.removeSync(path);
        await until(() => made.length === 2, "made again after the next removal");
      } finally {
        await stop();
      }
    });
  },
);

testWith(
  NEEDS.files,
  "keepFifo() notices the FIFO's directory moved away (mv dir dir.old && mkdir dir), and makes the FIFO in the new one",
  async () => {
    await withTempDir(async (dir) => {
      const directory = `${dir}/run`;
      Deno.mkdirSync(directory, { mode: 0o700 });
      const path = `${directory}/button.fifo`;
      const said: string[] = [];
      const made: string[] = [];
      const stop = keeping(path, said, made);
      try {
        Deno.renameSync(directory, `${dir}/run.old`);
        Deno.mkdirSync(directory, { mode: 0o700 });
        // Nothing happens in the new directory: only the old one's move can tell the keeper.
        await until(() => made.length === 1, "made in the new directory");
        assertEquals(statPath(path)?.identity, made[0]);
        assert(Deno.lstatSync(`${dir}/run.old/button.fifo`).isFifo, "the moved FIFO was touched");
        assertEquals(said, []);
      } finally {
        await stop();
      }
    });
  },
);

testWith(
  NEEDS.files,
  "keepFifo() whose FIFO cannot be claimed for a shortage (EMFILE) says so once and claims it again each second until it can",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/button.fifo`;
      const said: string[] = [];
      const made: string[] = [];
      const stop = keeping(path, said, made, {
        onMade: (identity) => {
          made.push(identity);
          if (made.length <= 2) throw osError("hold FIFO", path, Errno.EMFILE);
        },
      });
      try {
        Deno.removeSync(path);
        await until(() => made.length === 3, "claimed at the third try");
        assertEquals(new Set(made).size, 1, "the same FIFO each time");
        assertEquals(said.length, 1, said.join("\n"));
        assertStringIncludes(said[0], "(trying every second)");
        assertStringIncludes(said[0], "too many open files (EMFILE)");
        await delay(1_200);
        assertEquals(made.length, 3, "claimed, and no more tries");
      } finally {
        await stop();
      }
    });
  },
);
