/**
 * Our LED following a foreign writer (issue 11): a C program that writes `"%d\n"` at offset 0
 * of the state file and nothing else, as the original button does (`bench/c/foreign_writer.c`).
 * Our `consumers/led.ts` and the C stand-in of the original's 1 ms poller follow the same file
 * in the same run: change to applied (the writer's stamp to the LED's log line arriving here),
 * then what each costs while nothing changes, beside C doing what our follower does at its period
 * (`bench/c/follow_floor.c`): the least that following by looking costs on this machine. All
 * of it once the LED's grace has passed, in which it looks every 50 ms by itself before it
 * starts its follower Worker (see `followGraceMs`): what it does from then on.
 *
 * @module
 */

import { delay } from "@std/async/delay";
import { DEFAULT_FOLLOW_GRACE_MS, DEFAULT_FOLLOW_PERIOD_MS } from "../../lib/state_cell.ts";
import { idleCost } from "../proc_stats.ts";
import { type Child, ROOT, spawnDeno, spawnProgram } from "../processes.ts";
import { summarizeLatencies, summarizeRuns } from "../stats.ts";
import { LED_LINE } from "../system.ts";
import type { BenchCase, CaseContext } from "./case.ts";

/** Seconds of each idle run (one for --quick). */
const IDLE_SECONDS = 2;

/** The LED line for the state the writer just wrote, and when it arrived. */
async function applied(led: Child, since: number, state: number): Promise<bigint> {
  const { line, match } = await led.waitFor(LED_LINE, { since });
  if ((match[1] === "On") !== (state === 1)) {
    throw new Error(`The LED showed ${match[1]} for state ${state}:\n${led.transcript}`);
  }
  return line.arrivedNs;
}

/** The foreign writer case. */
export const foreignWriter: BenchCase = {
  id: "foreign",
  steps: (config) => 2 * config.runs,
  async run(context: CaseContext): Promise<void> {
    const { config, work, figures, progress } = context;
    const writerBinary = await work.compile("bench/c/foreign_writer.c");
    const original = await work.compile("tests/fixtures/original.c");
    const state = work.file("foreign.dat");
    await using writer = spawnProgram(writerBinary, [state], { stdin: true });
    await writer.nextLine();
    await using led = spawnDeno(`${ROOT}consumers/led.ts`, ["--state", state]);
    await using poller = spawnProgram(original, ["led", state]);
    await led.waitFor(LED_LINE);
    await poller.waitFor(LED_LINE);
    await delay(DEFAULT_FOLLOW_GRACE_MS + 500);
    const input = writer.stdin.getWriter();
    try {
      const changes = config.quick ? 20 : 100;
      const ours: number[][] = [];
      const theirs: number[][] = [];
      let value = 0;
      for (let run = 1; run <= config.runs; run++) {
        progress.step(`foreign writer: change to applied, run ${run}/${config.runs}`);
        const mine: number[] = [];
        const c: number[] = [];
        for (let i = 0; i < changes; i++) {
          await delay(5 + Math.random() * 5);
          const sinceOurs = led.lineCount;
          const sinceTheirs = poller.lineCount;
          value ^= 1;
          await input.write(new TextEncoder().encode("\n"));
          const stamped = BigInt((await writer.nextLine()).text);
          mine.push(Number((await applied(led, sinceOurs, value)) - stamped) / 1000);
          c.push(Number((await applied(poller, sinceTheirs, value)) - stamped) / 1000);
        }
        ours.push(mine);
        theirs.push(c);
      }
      figures.add(
        {
          id: "foreign.led.latency",
          section: "foreign",
          label: "our LED: change to applied",
          unit: "us",
        },
        summarizeLatencies(ours, "foreign.latency"),
      );
      figures.add(
        {
          id: "foreign.poller.latency",
          section: "foreign",
          label: "the original's 1 ms poller (C stand-in): change to applied",
          unit: "us",
        },
        summarizeLatencies(theirs, "foreign.latency"),
      );

      // Started only now, so that it takes no CPU from the latency runs.
      await using floor = spawnProgram(await work.compile("bench/c/follow_floor.c"), [
        state,
        String(DEFAULT_FOLLOW_PERIOD_MS),
      ]);
      await floor.nextLine();
      await delay(500);
      const seconds = config.quick ? 1 : IDLE_SECONDS;
      const cost: number[][] = [[], [], [], [], []];
      for (let run = 1; run <= config.runs; run++) {
        progress.step(`foreign writer: idle cost, run ${run}/${config.runs}`);
        const [mine, c, looking] = await idleCost([led.pid, poller.pid, floor.pid], seconds);
        cost[0].push(mine.cpuPercent);
        cost[1].push(mine.wakeupsPerSecond);
        cost[2].push(c.cpuPercent);
        cost[3].push(c.wakeupsPerSecond);
        cost[4].push(looking.cpuPercent);
      }
      const idle = `idle for ${seconds} s per run`;
      const rows = [
        ["foreign.led.cpu", `our LED ${idle}: CPU`, "%"],
        ["foreign.led.wakeups", `our LED ${idle}: voluntary context switches`, "/s"],
        ["foreign.poller.cpu", `the 1 ms poller ${idle}: CPU`, "%"],
        ["foreign.poller.wakeups", `the 1 ms poller ${idle}: voluntary context switches`, "/s"],
        [
          "foreign.floor.cpu",
          `C doing what our follower does (a futex sleep of ${DEFAULT_FOLLOW_PERIOD_MS} ms, pread, parse) ${idle}: CPU`,
          "%",
        ],
      ] as const;
      rows.forEach(([id, label, unit], i) =>
        figures.add({ id, section: "foreign", label, unit }, summarizeRuns(cost[i], "foreign.idle"))
      );
    } finally {
      await input.close().catch(() => {});
    }
  },
};
