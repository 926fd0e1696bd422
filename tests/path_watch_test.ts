/** PathWatch (lib/path_watch.ts) on real files: what it reports, and when. */
import { assertEquals } from "@std/assert";
import { PathWatch } from "../lib/path_watch.ts";
import type { PathChange } from "../lib/path_watch.ts";
import { statPath } from "../ffi/posix.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { withTempDir } from "./helpers/temp.ts";
import { delay, until } from "./helpers/waiting.ts";

/** Collects the changes `watch` reports until it is closed; resolves once it has ended. */
function collect(watch: PathWatch, into: PathChange[]): Promise<void> {
  return (async () => {
    for await (const change of watch.changes()) into.push(change);
  })();
}

testWith(
  NEEDS.files,
  "PathWatch reports a path removed when its directory is moved away, and nothing more from the moved one",
  async () => {
    await withTempDir(async (dir) => {
      const directory = `${dir}/run`;
      Deno.mkdirSync(directory, { mode: 0o700 });
      const path = `${directory}/state`;
      Deno.writeTextFileSync(path, "0\n");
      const watch = new PathWatch(path, statPath(path)?.identity ?? "");
      const seen: PathChange[] = [];
      const ended = collect(watch, seen);
      try {
        Deno.renameSync(directory, `${dir}/run.old`);
        Deno.mkdirSync(directory, { mode: 0o700 });
        await until(() => seen.length > 0, "the move reported");
        assertEquals(seen, ["removed"]);
        assertEquals(watch.status(), "removed");
        // The moved directory's own events are not about the path any more.
        Deno.removeSync(`${dir}/run.old/state`);
        Deno.writeTextFileSync(`${dir}/run.old/state`, "1\n");
        await delay(200);
        assertEquals(seen, ["removed"]);
      } finally {
        await watch.close();
        await ended;
      }
    });
  },
);

testWith(
  NEEDS.files,
  "PathWatch reports a path restored when its directory is moved away and back",
  async () => {
    await withTempDir(async (dir) => {
      const directory = `${dir}/run`;
      Deno.mkdirSync(directory, { mode: 0o700 });
      const path = `${directory}/state`;
      Deno.writeTextFileSync(path, "0\n");
      const watch = new PathWatch(path, statPath(path)?.identity ?? "");
      const seen: PathChange[] = [];
      const ended = collect(watch, seen);
      try {
        Deno.renameSync(directory, `${dir}/run.old`);
        await until(() => seen.length > 0, "the move reported");
        Deno.renameSync(`${dir}/run.old`, directory);
        await until(() => seen.length > 1, "the move back reported");
        assertEquals(seen, ["removed", "restored"]);
      } finally {
        await watch.close();
        await ended;
      }
    });
  },
);
