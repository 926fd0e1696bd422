/**
 * The aarch64 VM leaves some library tests out by name (tests/gpio_vm/run.ts): each name left out
 * must still be a test's, and the filter regex must leave out exactly those tests and run the
 * rest, under the real `deno test --filter` (its regex engine refuses a regex nested too deep
 * and then runs nothing, silently).
 *
 * @module
 */

import { assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import {
  dependenciesOutside,
  excludingFilter,
  GPIO_TESTS,
  LEFT_OUT_UNDER_EMULATION,
  LIBRARY_TESTS,
  MAX_PREFIX_LENGTH,
} from "./gpio_vm/run.ts";
import { ROOT } from "./helpers/paths.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { withTempDir } from "./helpers/temp.ts";

const LEFT_OUT = LEFT_OUT_UNDER_EMULATION.map(({ name }) => name);

testWith(
  NEEDS.files,
  "each test the aarch64 VM leaves out by name is a test of the files it runs",
  () => {
    const sources = [...GPIO_TESTS, ...LIBRARY_TESTS].map((file) =>
      Deno.readTextFileSync(`${ROOT}${file}`)
    );
    for (const name of LEFT_OUT) {
      const found = sources.some((source) => source.includes(`"${name}`));
      assertEquals(found, true, `no test in the VM's files starts with "${name}"`);
    }
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "the aarch64 VM's filter leaves out exactly the tests it names, under deno test itself",
  async () => {
    await withTempDir(async (dir) => {
      // Each name left out, and one as long as a name may be; names that differ from one only
      // at its end, or start differently, must run.
      const names = [...LEFT_OUT, "m".repeat(MAX_PREFIX_LENGTH)];
      const excluded = names.map((name) => `${name} (and the rest of its name)`);
      const kept = names.flatMap((name) => [
        name.slice(0, -1),
        `${name.slice(0, -1)}${name.endsWith("!") ? "?" : "!"}`,
        ` ${name}`,
      ]);
      const file = `${dir}/names_test.ts`;
      Deno.writeTextFileSync(
        file,
        [...excluded, ...kept].map((name) => `Deno.test(${JSON.stringify(name)}, () => {});\n`)
          .join(""),
      );
      const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
        args: ["test", "--no-config", "--filter", excludingFilter(names), file],
        cwd: dir,
        env: { NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = new TextDecoder().decode(stdout);
      assertEquals(code, 0, new TextDecoder().decode(stderr));
      const ran = out.split("\n").filter((line) => line.endsWith(")") && line.includes(" ... ok"))
        .map((line) => line.slice(0, line.lastIndexOf(" ... ok")));
      assertEquals(ran.sort(), [...kept].sort(), out);
      assertStringIncludes(out, `${excluded.length} filtered out`);
    });
  },
);

Deno.test("a name too long for the filter's regex is refused, not a filter that runs nothing", () => {
  const long = "a".repeat(MAX_PREFIX_LENGTH + 1);
  assertThrows(() => excludingFilter([long]), RangeError, `has ${MAX_PREFIX_LENGTH + 1}`);
  assertThrows(() => excludingFilter([""]), RangeError, "1 to");
});

testWith(
  NEEDS.files,
  "test:gpio refuses, before booting anything, a vendor/ or node_modules/ that is a symlink out of the project (the guests mount only the project), and names the copy to make",
  async () => {
    await withTempDir((dir) => {
      const project = `${dir}/project`;
      Deno.mkdirSync(`${project}/node_modules`, { recursive: true });
      Deno.mkdirSync(`${dir}/shared/vendor`, { recursive: true });
      assertEquals(dependenciesOutside(project), undefined);
      Deno.symlinkSync(`${dir}/shared/vendor`, `${project}/vendor`);
      const said = dependenciesOutside(project) ?? "";
      assertStringIncludes(said, `vendor/ is a symlink to ${Deno.realPathSync(dir)}/shared/vendor`);
      assertStringIncludes(said, "cp -r");
      // A link that stays in the project is read in the guest as it is here.
      Deno.removeSync(`${project}/vendor`);
      Deno.mkdirSync(`${project}/deps/vendor`, { recursive: true });
      Deno.symlinkSync("deps/vendor", `${project}/vendor`);
      assertEquals(dependenciesOutside(project), undefined);
    });
  },
);
