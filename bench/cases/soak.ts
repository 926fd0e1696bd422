/**
 * The soak: the real LED and button under a steady stream of presses, with each child's V8 heap
 * (after a full garbage collection, read through the inspector; also by space, through `node:v8`
 * evaluated in the child, whose own share is left out of the heap compared) and RSS taken after a
 * warm-up and at the end. The warm-up is 30 000 presses back to back, then a share of the soak at
 * its pace. `deno task bench` runs a short one (a minute, after a minute at its pace);
 * `--soak [--minutes N]` a long one alone (N minutes, after a fifth of that at its pace, at least
 * a minute).
 *
 * @module
 */

import { format as formatBytes } from "@std/fmt/bytes";
import { format as formatDuration } from "@std/fmt/duration";
import { delay } from "@std/async/delay";
import { grewMost, type HeapCensus, HeapProbe, INSPECT_FLAG } from "../inspector.ts";
import { residentBytes } from "../proc_stats.ts";
import { LED_LINE, startSystem } from "../system.ts";
import type { BenchCase, CaseContext } from "./case.ts";

const CHECKPOINTS = 10;
/** The warm-up before the soak is judged, a share of the soak: code is compiled, caches fill. */
const WARM_UP = 0.2;
/**
 * And at least this long (but in a quick run): the button's heap grew most in its first minute of
 * presses (4.78 to 4.83 MiB over a soak of 1 minute after 12 s).
 */
const MIN_WARM_UP_MS = 60_000;
const PRESS_EVERY_MS = 20;
/**
 * Presses made back to back (each waits for the LED's line; about 0.3 ms each) before the timed
 * warm-up. V8 moves a function up a tier after so many calls, not after so long: after a warm-up
 * of 2 minutes at the soak's pace alone, the button's code and trusted spaces still grew by
 * 59 KiB over a 10-minute soak (its heap 4.89 to 4.96 MiB, 1.014x; its old space by 5 KiB), and
 * `--trace-opt` showed TurboFan still compiling functions of the press path 6 to 9 minutes (about
 * 20 000 presses) in. With this burst first, the heap reached 4.96 MiB before the soak and held
 * there for its 10 minutes.
 */
const BURST_PRESSES = 30_000;
const QUICK_BURST_PRESSES = 200;

function minutesOf(config: CaseContext["config"]): number {
  return config.soak?.minutes ?? (config.quick ? 0.05 : 1);
}

function warmUpMs(config: CaseContext["config"], soakMs: number): number {
  return config.quick ? soakMs * WARM_UP : Math.max(soakMs * WARM_UP, MIN_WARM_UP_MS);
}

/** One child at one checkpoint. */
interface Sample {
  /** V8 heap in use after a full GC, less what the probe loaded into the child. */
  heap: number;
  /** The heap in use by space, where the child could say (the probe's share included). */
  spaces: Record<string, number> | undefined;
  rss: number;
}

/**
 * The heap spaces that moved between two samples: the old space holds the script's data, the
 * code and trusted spaces what V8 compiles (they grow while it still optimises hot code).
 */
function bySpace(
  start: Record<string, number> | undefined,
  end: Record<string, number> | undefined,
): string {
  if (start === undefined || end === undefined) return "";
  // The young generation holds only what the probe's own call allocated.
  const moved = Object.keys(end).filter((name) =>
    !name.startsWith("new_") && (end[name] ?? 0) !== (start[name] ?? 0)
  );
  if (moved.length === 0) return "; no space moved";
  const kib = (bytes: number): string => `${(bytes / 1024).toFixed(1)} KiB`;
  return `; by space, start to end: ${
    moved.map((name) => `${name} ${kib(start[name] ?? 0)} to ${kib(end[name])}`).join(", ")
  }`;
}

/** The kinds of object that grew most between two censuses, for a figure's note. */
function byKind(start: HeapCensus | undefined, end: HeapCensus | undefined): string {
  if (start === undefined || end === undefined) return "";
  const grown = grewMost(start, end);
  return grown.length === 0
    ? "; no kind of object grew"
    : `; kinds of object that grew most (heap snapshots): ${grown.join(", ")}`;
}

/** The soak case. */
export const soak: BenchCase = {
  id: "soak",
  steps: () => CHECKPOINTS + 1,
  async run(context: CaseContext): Promise<void> {
    const { config, work, figures, progress } = context;
    const totalMs = minutesOf(config) * 60_000;
    await using system = await startSystem(work, "soak", { denoFlags: [INSPECT_FLAG] });
    const children = { led: system.led, button: system.button };
    using ledProbe = await HeapProbe.connect(system.led);
    using buttonProbe = await HeapProbe.connect(system.button);
    const probes = { led: ledProbe, button: buttonProbe };
    // The heap by space needs node:v8 in each child: loaded now, its share left out of samples.
    const probeShare = { led: await ledProbe.loadSpaces(), button: await buttonProbe.loadSpaces() };

    let presses = 0;
    const pressFor = async (ms: number): Promise<void> => {
      const until = performance.now() + ms;
      while (performance.now() < until) {
        await system.press();
        presses++;
        await delay(PRESS_EVERY_MS);
      }
    };
    const one = async (child: "led" | "button"): Promise<Sample> => ({
      heap: await probes[child].heapUsedAfterGc() - probeShare[child],
      spaces: await probes[child].spacesInUse(),
      rss: residentBytes(children[child].pid),
    });
    const sample = async (): Promise<Record<"led" | "button", Sample>> => ({
      led: await one("led"),
      button: await one("button"),
    });

    // The burst first, then the soak's own pace, so that what the pace alone runs (the timers'
    // callbacks) warms up too.
    const burst = config.quick ? QUICK_BURST_PRESSES : BURST_PRESSES;
    progress.step(`soak: warm-up, ${burst} presses back to back, then at the soak's pace`);
    for (let i = 0; i < burst; i++) {
      const since = system.led.lineCount;
      await system.press();
      await system.led.waitFor(LED_LINE, { since });
      presses++;
    }
    const warmUp = warmUpMs(config, totalMs);
    await pressFor(warmUp);
    // Which kinds of object grew, from a heap snapshot of each child, in a long soak only: a
    // snapshot's native memory stays in the child's RSS (over 100 MiB more). Taken before the
    // first sample, so that whatever it leaves behind is in every sample alike.
    const census = config.soak !== undefined;
    const startCensus = census
      ? { led: await ledProbe.census(), button: await buttonProbe.census() }
      : undefined;
    const start = await sample();
    const series = [start];
    const warmPresses = presses;
    for (let checkpoint = 1; checkpoint <= CHECKPOINTS; checkpoint++) {
      progress.step(`soak: checkpoint ${checkpoint}/${CHECKPOINTS}, ${presses} presses so far`);
      await pressFor(totalMs / CHECKPOINTS);
      series.push(await sample());
    }
    const end = series[series.length - 1];
    const endCensus = census
      ? { led: await ledProbe.census(), button: await buttonProbe.census() }
      : undefined;
    // The LED logs each change: a soak whose presses were not applied proves nothing.
    const shown = system.led.matching(LED_LINE);
    if (shown < presses / 2) {
      throw new Error(
        `The LED showed ${shown} changes for ${presses} presses:\n${system.led.transcript}`,
      );
    }
    const span = `${formatDuration(Math.round(totalMs), { ignoreZero: true })} soak (${
      presses - warmPresses
    } presses after a warm-up of ${burst} back to back and ${
      formatDuration(Math.round(warmUp), { ignoreZero: true })
    } at its pace)`;
    for (const child of ["led", "button"] as const) {
      const trail = series.map((s) => formatBytes(s[child].heap, { binary: true })).join(", ");
      const rssTrail = series.map((s) => formatBytes(s[child].rss, { binary: true })).join(", ");
      const one = (value: number) => ({ median: value, min: value, max: value, runs: 1 });
      figures.add(
        {
          id: `memory.heap-start.${child}`,
          section: "memory",
          label: `V8 heap after a full GC: the ${child} at the start of the ${span}`,
          unit: "bytes",
        },
        one(start[child].heap),
      );
      figures.add(
        {
          id: `memory.heap-end.${child}`,
          section: "memory",
          label: `V8 heap after a full GC: the ${child} at the end of the ${span}`,
          unit: "bytes",
        },
        one(end[child].heap),
        `at each checkpoint: ${trail}${bySpace(start[child].spaces, end[child].spaces)}${
          byKind(startCensus?.[child], endCensus?.[child])
        }`,
      );
      figures.add(
        {
          id: `memory.soak-rss-start.${child}`,
          section: "memory",
          label: `RSS: the ${child} at the start of the ${span}`,
          unit: "bytes",
        },
        one(start[child].rss),
      );
      figures.add(
        {
          id: `memory.soak-rss-end.${child}`,
          section: "memory",
          label: `RSS: the ${child} at the end of the ${span}`,
          unit: "bytes",
        },
        one(end[child].rss),
        `at each checkpoint: ${rssTrail}${
          census ? " (with the heap snapshots' native memory)" : ""
        }`,
      );
    }
  },
};
