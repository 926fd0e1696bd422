/**
 * The Worker that follows a value kept as text (`ffi/text_follower.ts`): it keeps reading after
 * its owner closed the file, and a Worker that fails is reported, never waited for in vain.
 */
import { assertEquals, assertRejects } from "@std/assert";
import * as C from "../ffi/constants.ts";
import { closeFd, openPath } from "../ffi/posix.ts";
import { type FollowedChange, TextFollower } from "../ffi/text_follower.ts";
import { parseState } from "../lib/state_text.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { withTempDir } from "./helpers/temp.ts";
import { delay } from "./helpers/waiting.ts";

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
