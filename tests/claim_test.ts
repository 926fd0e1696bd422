/**
 * The claim value a process takes roles with (`lib/claim.ts`): never made without its start
 * time, which alone tells this process from a later one given the same pid.
 */
import { assertEquals } from "@std/assert";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { TESTS_DIR } from "./helpers/paths.ts";
import { spawnDenoUnderFdLimit } from "./helpers/spawn.ts";
import { withTempDir } from "./helpers/temp.ts";

/** Runs `tests/fixtures/claims_without_fds.ts` under `ulimit -n 256`; its lines. */
async function claimsWithoutFds(args: string[], dir?: string): Promise<string[]> {
  const files = dir === undefined ? [] : [`--allow-read=${dir}`, `--allow-write=${dir}`];
  await using child = spawnDenoUnderFdLimit(
    `${TESTS_DIR}fixtures/claims_without_fds.ts`,
    args,
    ["--allow-ffi", ...files],
  );
  const lines: string[] = [];
  for (let line = ""; line !== "done";) lines.push(line = await child.nextLine());
  assertEquals((await child.status()).code, 0);
  return lines;
}

testWith(
  [...NEEDS.childrenAndFiles, requires("sh")],
  "a role taken first while the process has no fd left is refused with EMFILE, not claimed without a start time for the rest of the process's life",
  async () => {
    await withTempDir(async (dir) => {
      assertEquals(await claimsWithoutFds(["writer", dir], dir), [
        "refused: EMFILE",
        "claim has a start time: true",
        "done",
      ]);
    });
  },
);
