/**
 * Memory of each child: the LED's and the button's resident set size after some presses, beside
 * a bare `deno run --allow-ffi` script that does nothing, all three measured in the same run.
 *
 * @module
 */

import { delay } from "@std/async/delay";
import { residentBytes } from "../proc_stats.ts";
import { PEERS, spawnDeno } from "../processes.ts";
import { summarizeRuns } from "../stats.ts";
import { LED_LINE, startSystem } from "../system.ts";
import type { BenchCase, CaseContext } from "./case.ts";

const PRESSES = 20;

/** The memory case. */
export const memory: BenchCase = {
  id: "memory",
  steps: (config) => config.runs,
  async run(context: CaseContext): Promise<void> {
    const { config, work, figures, progress } = context;
    const rss = { bare: [] as number[], led: [] as number[], button: [] as number[] };
    for (let run = 1; run <= config.runs; run++) {
      progress.step(`memory: RSS beside a bare Deno script, run ${run}/${config.runs}`);
      await using bare = spawnDeno(`${PEERS}idle.ts`, []);
      await using system = await startSystem(work, `memory-${run}`);
      await bare.nextLine();
      for (let i = 0; i < PRESSES; i++) {
        const since = system.led.lineCount;
        await system.press();
        await system.led.waitFor(LED_LINE, { since });
        await delay(10);
      }
      await delay(1000);
      rss.bare.push(residentBytes(bare.pid));
      rss.led.push(residentBytes(system.led.pid));
      rss.button.push(residentBytes(system.button.pid));
    }
    const labels = {
      bare: "a bare `deno run --allow-ffi` script, idle",
      led: `the LED (\`consumers/led.ts\`) after ${PRESSES} presses`,
      button: `the button (\`producers/button.ts\`) after ${PRESSES} presses`,
    };
    for (const child of ["bare", "led", "button"] as const) {
      figures.add(
        {
          id: `memory.rss.${child}`,
          section: "memory",
          label: `RSS: ${labels[child]}`,
          unit: "bytes",
        },
        summarizeRuns(rss[child]),
      );
    }
  },
};
