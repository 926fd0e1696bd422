/**
 * Memory of each child: the LED's and the button's resident set size after some presses, run
 * alone and as the launcher runs them (as users do: from the launcher's memfd, with its FIFO and
 * its state file), beside a bare `deno run --allow-ffi` script that does nothing, and beside the
 * floors the children cannot go below: a script that only opens the library's libc bindings
 * (what FFI itself costs), one that also compiles libc's fast calls (what a process that waits
 * synchronously or wakes often adds), one that only sets up the project's logging, and the LED's and the
 * button's whole module graphs without running them. All measured in the same run.
 *
 * @module
 */

import { delay } from "@std/async/delay";
import { anonymousBytes, residentBytes } from "../proc_stats.ts";
import { PEERS, ROOT, spawnDeno } from "../processes.ts";
import { summarizeRuns } from "../stats.ts";
import { startLauncher } from "../launcher.ts";
import { LED_LINE, startSystem } from "../system.ts";
import type { BenchCase, CaseContext } from "./case.ts";

const PRESSES = 20;

/** What the case measures the RSS of. */
const CHILDREN = [
  "bare",
  "ffi",
  "ffi-fast",
  "logging",
  "led-modules",
  "button-modules",
  "led",
  "button",
  "launched-led",
  "launched-button",
] as const;
type Child = typeof CHILDREN[number];

/** The memory case. */
export const memory: BenchCase = {
  id: "memory",
  // One more than the runs: the first, not counted, fills the run's fresh Deno cache (see
  // `measure()` in run.ts), so that every counted run finds the same code cache.
  steps: (config) => config.runs + 1,
  async run(context: CaseContext): Promise<void> {
    const { config, work, figures, progress } = context;
    const rss = Object.fromEntries(CHILDREN.map((child) => [child, [] as number[]])) as Record<
      Child,
      number[]
    >;
    const anonymous = structuredClone(rss);
    for (let run = 0; run <= config.runs; run++) {
      progress.step(
        run === 0
          ? "memory: one run not counted, to fill Deno's cache"
          : `memory: RSS beside a bare Deno script, run ${run}/${config.runs}`,
      );
      const floor = (arg?: string) =>
        spawnDeno(`${PEERS}idle.ts`, arg === undefined ? [] : [arg], {
          permissions: ["--allow-ffi", `--allow-read=${ROOT}`],
        });
      await using bare = floor();
      await using ffi = floor("ffi");
      await using ffiFast = floor("ffi-fast");
      await using logging = floor("logging");
      await using ledModules = floor("../../consumers/led.ts");
      await using buttonModules = floor("../../producers/button.ts");
      await using system = await startSystem(work, `memory-${run}`);
      await using launched = await startLauncher(work, `memory-launched-${run}`, {
        args: ["--state", work.file(`memory-launched-${run}.dat`)],
      });
      for (const idle of [bare, ffi, ffiFast, logging, ledModules, buttonModules]) {
        await idle.nextLine();
      }
      // Each pressed, and its LED's line awaited (the launcher's output carries its LED's lines).
      const pressed = [
        { press: system.press, output: system.led },
        { press: launched.press, output: launched.child },
      ];
      for (let i = 0; i < PRESSES; i++) {
        for (const { press, output } of pressed) {
          const since = output.lineCount;
          await press();
          await output.waitFor(LED_LINE, { since });
        }
        await delay(10);
      }
      await delay(1000);
      const pids: Record<Child, number> = {
        bare: bare.pid,
        ffi: ffi.pid,
        "ffi-fast": ffiFast.pid,
        logging: logging.pid,
        "led-modules": ledModules.pid,
        "button-modules": buttonModules.pid,
        led: system.led.pid,
        button: system.button.pid,
        "launched-led": await launched.childPid("led"),
        "launched-button": await launched.childPid("button"),
      };
      if (run === 0) continue;
      for (const child of CHILDREN) {
        rss[child].push(residentBytes(pids[child]));
        anonymous[child].push(anonymousBytes(pids[child]));
      }
    }
    const labels: Record<Child, string> = {
      bare: "a bare `deno run --allow-ffi` script, idle",
      ffi: "a script that only opens the library's libc bindings (generic calls), idle",
      "ffi-fast":
        "a script that opens the libc bindings and compiles libc's fast calls (as a synchronous wait does), idle",
      logging: "a script that only loads and sets up logging (`app/logging.ts`), idle",
      "led-modules": "the LED's modules loaded, none of it run (its floor), idle",
      "button-modules": "the button's modules loaded, none of it run (its floor), idle",
      led: `the LED (\`consumers/led.ts\`) after ${PRESSES} presses`,
      button: `the button (\`producers/button.ts\`) after ${PRESSES} presses`,
      "launched-led":
        `the LED as the launcher runs it (\`deno task launch\`) after ${PRESSES} presses`,
      "launched-button":
        `the button as the launcher runs it (\`deno task launch\`) after ${PRESSES} presses`,
    };
    for (const child of CHILDREN) {
      figures.add(
        {
          id: `memory.rss.${child}`,
          section: "memory",
          label: `RSS: ${labels[child]}`,
          unit: "bytes",
        },
        summarizeRuns(rss[child], "memory"),
      );
    }
    for (const child of CHILDREN) {
      figures.add(
        {
          id: `memory.anonymous.${child}`,
          section: "memory",
          label: `private (anonymous) memory: ${labels[child]}`,
          unit: "bytes",
        },
        summarizeRuns(anonymous[child], "memory"),
      );
    }
  },
};
