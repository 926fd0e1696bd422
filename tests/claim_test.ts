/**
 * The claim value a process takes roles with (`lib/claim.ts`): never made without its start
 * time, which alone tells this process from a later one given the same pid.
 */
import { assertEquals } from "@std/assert";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { runUnderFdLimit } from "./helpers/spawn.ts";
import { withTempDir } from "./helpers/temp.ts";

testWith(
  [...NEEDS.childrenAndFiles, requires("sh")],
  "a role taken first while the process has no fd left is refused with EMFILE, not claimed without a start time for the rest of the process's life",
  async () => {
    await withTempDir(async (dir) => {
      const permissions = ["--allow-ffi", `--allow-read=${dir}`, `--allow-write=${dir}`];
      assertEquals(
        await runUnderFdLimit("claims_without_fds.ts", ["writer", dir], { permissions }),
        [
          "refused: EMFILE",
          "claim has a start time: true",
          "done",
        ],
      );
    });
  },
);
