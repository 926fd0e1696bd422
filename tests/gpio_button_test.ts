/**
 * The GPIO button's own failure paths, on the small fake libgpiod 1.6 (a host has no GPIO; the
 * button's behaviour on a real kernel simulator is in gpio_test.ts, run by `deno task test:gpio`).
 */

import { assert, assertEquals, assertMatch } from "@std/assert";
import { TESTS_DIR } from "./helpers/paths.ts";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { buildFakeGpiod, spawnDeno } from "./helpers/spawn.ts";
import { withTempDir } from "./helpers/temp.ts";

testWith(
  [...NEEDS.system, requires("gcc")],
  "a button whose first read fails releases its line and descriptors, so it can be opened again",
  async () => {
    await withTempDir(async (dir) => {
      const library = await buildFakeGpiod(dir);

      await using child = spawnDeno(`${TESTS_DIR}fixtures/gpio_button_open.ts`, [dir], {
        permissions: ["--allow-all"], // /proc/self/fd needs it
        env: { MMAP_IPC_LIBGPIOD: library },
      });
      const status = await child.status();
      assert(status.success, status.stderr);
      const result = JSON.parse(await child.nextLine());
      assertMatch(result.error, /GPIO4|line 4/);
      assertMatch(result.error, /I\/O error|EIO/);
      assertEquals(result.after, result.before, "descriptors left open by the failed open");
      assertMatch(result.reopened, /^(?!failed)/);
    });
  },
);
