/**
 * The GPIO button's own failure paths and a full kernel queue of edge events, on the small fake
 * libgpiod 1.6 (a host has no GPIO; the button's behaviour on a real kernel simulator is in
 * gpio_test.ts, run by `deno task test:gpio`).
 */

import { assert, assertEquals, assertMatch } from "@std/assert";
import { ROOT, TESTS_DIR } from "./helpers/paths.ts";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { buildFakeGpiod, spawnDeno } from "./helpers/spawn.ts";
import { withTempDir } from "./helpers/temp.ts";
import { until } from "./helpers/waiting.ts";

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

testWith(
  [...NEEDS.system, requires("gcc")],
  "a read that fails when the button settles a bounce (in a timer) is thrown out of presses(), not out of the timer, which ended the process past every cleanup",
  async () => {
    await withTempDir(async (dir) => {
      const library = await buildFakeGpiod(dir);
      await using child = spawnDeno(`${TESTS_DIR}fixtures/gpio_button_settle_fails.ts`, [dir], {
        permissions: ["--allow-all"],
        env: { MMAP_IPC_LIBGPIOD: library },
      });
      const status = await child.status();
      assert(status.success, child.transcript);
      const lines = child.matching(/./);
      assertEquals(lines[0], "press", child.transcript);
      assertMatch(lines[1] ?? "", /^threw: Cannot read .*(I\/O error|EIO)/, child.transcript);
      assertEquals(lines[2], "closed", child.transcript);
    });
  },
);

testWith(
  [...NEEDS.system, requires("gcc")],
  "a chip this user may not open does not keep a line from being found on another: --chip names one and only it is opened; auto skips it, and says its error when the line is on no other",
  async () => {
    await withTempDir(async (dir) => {
      const library = await buildFakeGpiod(dir);
      await using child = spawnDeno(`${TESTS_DIR}fixtures/gpio_find_line.ts`, [dir], {
        permissions: ["--allow-all"],
        env: { MMAP_IPC_LIBGPIOD: library },
      });
      const status = await child.status();
      assert(status.success, child.transcript);
      const lines = child.matching(/./);
      // Before, each failed on /dev/gpiochip1: "Cannot open GPIO chip ... permission denied".
      assertMatch(lines[0] ?? "", /^gpiochip0 GPIO4: found GPIO4 \(/, child.transcript);
      assertMatch(lines[1] ?? "", /^auto GPIO4: found GPIO4 \(/, child.transcript);
      assertMatch(
        lines[2] ?? "",
        /^auto GPIO99: PermissionDenied .*\/dev\/gpiochip1/,
        child.transcript,
      );
    });
  },
);

testWith(
  [...NEEDS.system, requires("gcc")],
  "presses() can be iterated again after a loop broke off while its poll was in flight",
  async () => {
    await withTempDir(async (dir) => {
      const library = await buildFakeGpiod(dir);
      await using child = spawnDeno(`${TESTS_DIR}fixtures/gpio_button_again.ts`, [dir], {
        permissions: ["--allow-all"],
        env: { MMAP_IPC_LIBGPIOD: library },
      });
      const status = await child.status();
      assert(status.success, child.transcript);
      // Before: "second threw: Another wait is already in flight on this FdWaiter".
      assertEquals(child.matching(/./), ["first: press", "second: press"], child.transcript);
    });
  },
);

testWith(
  [...NEEDS.system, requires("gcc")],
  "a press after the kernel's full queue of edge events dropped the last release counts: libgpiod 1.6 drops the newest events, so the line is read again once a read took a full queue",
  async () => {
    await withTempDir(async (dir) => {
      const library = await buildFakeGpiod(dir);
      await using child = spawnDeno(`${TESTS_DIR}fixtures/gpio_button_dropped.ts`, [dir], {
        permissions: ["--allow-all"],
        env: { MMAP_IPC_LIBGPIOD: library },
      });
      const status = await child.status();
      assert(status.success, child.transcript);
      // Before: "presses 9": the queue ended on a press, the button stayed pressed, and the
      // next press's edge said nothing new.
      assertEquals(child.matching(/^presses /), ["presses 10"], child.transcript);
      assertEquals(child.matching(/^dropped /), ["dropped unknown"], child.transcript);
    });
  },
);

testWith(
  [...NEEDS.system, requires("gcc")],
  "an edge to the value the button holds, past the debounce time, is the line gone and come back: a press (libgpiod 1.6 types an edge by the level once its interrupt thread runs, and merges the edges before it), unless it is the pull-up's at the start or the late edge of a change a settle read first",
  async () => {
    await withTempDir(async (dir) => {
      const library = await buildFakeGpiod(dir);
      await using child = spawnDeno(`${TESTS_DIR}fixtures/gpio_button_merged.ts`, [dir], {
        permissions: ["--allow-all"],
        env: { MMAP_IPC_LIBGPIOD: library },
      });
      const status = await child.status();
      assert(status.success, child.transcript);
      // Before: "after merged: 1", and one press fewer from there on.
      assertEquals(child.matching(/^after /), [
        "after start: 0",
        "after press: 1",
        "after merged: 2",
        "after settled: 3",
        "after owed: 3",
        "after again: 3",
        "after again: 4",
      ], child.transcript);
    });
  },
);

testWith(
  [...NEEDS.system, requires("gcc")],
  "the button process warns once, naming the line, that the kernel's full queue of edge events may have dropped some and the line is read again (later times at debug level)",
  async () => {
    await withTempDir(async (dir) => {
      const library = await buildFakeGpiod(dir);
      await using button = spawnDeno(
        `${ROOT}producers/button.ts`,
        ["--state", `${dir}/state`, "--pi", "--chip", "gpiochip0", "--log-level", "debug"],
        { permissions: ["--allow-all"], env: { MMAP_IPC_LIBGPIOD: library } },
      );
      await button.waitFor(/Button ready on GPIO4/);
      using events = Deno.openSync(`${dir}/line4.events`, { write: true });
      const dropped = /queue of edge events of GPIO4 \(line 4 of \/dev\/gpiochip0.*was full/;
      for (let burst = 1; burst <= 2; burst++) {
        // More edges than the queue holds, ending released (the level the fake reads).
        events.writeSync(new TextEncoder().encode("fr".repeat(10)));
        await until(() => button.matching(dropped).length === burst, "the warning", {
          timeoutMs: 10_000,
        });
      }
      const [first, second] = button.matching(dropped);
      assertMatch(first, /WRN|warn/i, button.transcript);
      assertMatch(second, /DBG|debug/i, button.transcript);
      assertMatch(first, /the line is read again/);
    });
  },
);
