/**
 * The documentation's examples, the README's and those in the library's JSDoc, as
 * `deno task test:doc` runs them: every one runs, and together they leave nothing behind: no
 * file in the temporary directory, no POSIX shm name, no System V segment.
 */
import { assertEquals, assertThrows } from "@std/assert";
import { openSysvRegion, removeShm } from "../mod.ts";
import { ROOT } from "./helpers/paths.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { spawnProgram, taskArgs } from "./helpers/spawn.ts";
import { withTempDir } from "./helpers/temp.ts";

/** How many examples `deno test --doc` finds: the `ts` code blocks not marked `ignore`. */
function countExamples(): number {
  const readme = Deno.readTextFileSync(`${ROOT}README.md`).split("\n")
    .filter((line) => /^```(ts|typescript)\b/.test(line) && !/\bignore\b/.test(line));
  const library = ["mod.ts", "lib", "lib/ring"].flatMap((path) =>
    path.endsWith(".ts")
      ? [`${ROOT}${path}`]
      : [...Deno.readDirSync(`${ROOT}${path}`)].filter((entry) => entry.name.endsWith(".ts"))
        .map((entry) => `${ROOT}${path}/${entry.name}`)
  ).flatMap((file) =>
    Deno.readTextFileSync(file).split("\n")
      .filter((line) => /^\s*\* ```(ts|typescript)\b/.test(line) && !/\bignore\b/.test(line))
  );
  return readme.length + library.length;
}

testWith(
  NEEDS.childrenAndFiles,
  "deno task test:doc runs every example, and they leave no file, shm name or System V segment",
  async () => {
    await withTempDir(async (tmp) => {
      const examples = countExamples();
      await using run = spawnProgram(Deno.execPath(), taskArgs("test:doc", "test"), {
        cwd: ROOT,
        env: { TMPDIR: tmp, NO_COLOR: "1" },
      });
      const status = await run.status();
      assertEquals(status.code, 0, run.transcript);
      assertEquals(
        run.matching(/^ok \| \d+ passed/).map((line) => line.replace(/ \(.*\)$/, "")),
        [`ok | ${examples} passed | 0 failed`],
        `expected all ${examples} examples to run:\n${run.transcript}`,
      );
      assertEquals([...Deno.readDirSync(tmp)].map((entry) => entry.name), [], "left in TMPDIR");
      // The examples name their shm objects and System V keys after their process.
      const pid = run.pid;
      assertEquals(removeShm(`/mmap-ipc-example-${pid}`), false, "a shm name was left");
      assertThrows(
        () => openSysvRegion(0x4d4d0000 | (pid & 0xffff)).close(),
        Deno.errors.NotFound,
        undefined,
        "a System V segment was left",
      );
    });
  },
);
