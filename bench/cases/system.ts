/**
 * The button and LED system, through the real scripts: press to LED (a "0" written to the
 * button's FIFO until the LED's log line arrives here), and what the LED costs while nothing
 * happens (our button holds the cell) beside the C stand-in of the original's 1 ms poller.
 *
 * @module
 */

import { delay } from "@std/async/delay";
import { idleCost } from "../proc_stats.ts";
import { spawnProgram } from "../processes.ts";
import { summarizeLatencies, summarizeRuns } from "../stats.ts";
import { LED_LINE, startSystem } from "../system.ts";
import type { BenchCase, CaseContext } from "./case.ts";

/** Seconds of each idle run (one for --quick). */
const IDLE_SECONDS = 2;

async function pressToLed(context: CaseContext): Promise<number[][]> {
  const { config, work, progress } = context;
  const presses = config.quick ? 20 : 100;
  const runs: number[][] = [];
  for (let run = 1; run <= config.runs; run++) {
    progress.step(`press to LED, run ${run}/${config.runs}`);
    await using system = await startSystem(work, `press-${run}`);
    const latencies: number[] = [];
    for (let i = 0; i < presses; i++) {
      await delay(5 + Math.random() * 5);
      const since = system.led.lineCount;
      const pressed = await system.press();
      const { line } = await system.led.waitFor(LED_LINE, { since });
      latencies.push(Number(line.arrivedNs - pressed) / 1000);
    }
    runs.push(latencies);
  }
  return runs;
}

/** The system case. */
export const system: BenchCase = {
  id: "system",
  steps: (config) => 2 * config.runs,
  async run(context: CaseContext): Promise<void> {
    const { config, work, figures, progress } = context;
    figures.add(
      {
        id: "system.press-to-led",
        section: "system",
        label: "press to LED: FIFO write to the LED's log line",
        unit: "us",
      },
      summarizeLatencies(await pressToLed(context)),
    );

    const original = await work.compile("tests/fixtures/original.c");
    await using ours = await startSystem(work, "idle");
    await using poller = spawnProgram(original, ["led", work.file("idle-original.dat")]);
    await poller.nextLine();
    await delay(1000);
    const seconds = config.quick ? 1 : IDLE_SECONDS;
    const led: number[][] = [[], []];
    const c: number[][] = [[], []];
    for (let run = 1; run <= config.runs; run++) {
      progress.step(`idle LED beside the C poller, run ${run}/${config.runs}`);
      const [mine, theirs] = await idleCost([ours.led.pid, poller.pid], seconds);
      led[0].push(mine.cpuPercent);
      led[1].push(mine.wakeupsPerSecond);
      c[0].push(theirs.cpuPercent);
      c[1].push(theirs.wakeupsPerSecond);
    }
    const idle = `idle for ${seconds} s per run`;
    figures.add(
      { id: "system.idle-led.cpu", section: "system", label: `our LED ${idle}: CPU`, unit: "%" },
      summarizeRuns(led[0], "system.idle"),
    );
    figures.add(
      {
        id: "system.idle-led.wakeups",
        section: "system",
        label: `our LED ${idle}: voluntary context switches`,
        unit: "/s",
      },
      summarizeRuns(led[1], "system.idle"),
    );
    figures.add(
      {
        id: "system.idle-poller.cpu",
        section: "system",
        label: `the original's 1 ms poller (C stand-in) ${idle}: CPU`,
        unit: "%",
      },
      summarizeRuns(c[0], "system.idle"),
    );
    figures.add(
      {
        id: "system.idle-poller.wakeups",
        section: "system",
        label: `the original's 1 ms poller (C stand-in) ${idle}: voluntary context switches`,
        unit: "/s",
      },
      summarizeRuns(c[1], "system.idle"),
    );
  },
};
