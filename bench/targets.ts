/**
 * Every goal of the benchmark as data: which figure, against which baseline measured in the same
 * run, the bound, and where the goal comes from. A comparison that no issue gives a number for
 * is a target without a bound: its ratio is shown, never judged. {@link evaluateTargets}
 * computes each ratio and verdict from the measured figures; the report and the README's
 * Performance table are written from its result, so a goal lives in exactly one place.
 *
 * @module
 */

import type { Figure, FigureSet, Unit } from "./figures.ts";
import { median } from "./stats.ts";

/** A figure's value: its median (p50 for latencies) or, for latencies, its p99. */
export interface FigureRef {
  /** The figure's id. */
  id: string;
  /** Which statistic; default the median. */
  stat?: "median" | "p99";
}

/** What must hold: the ratio (figure / baseline) or the figure itself, against a bound. */
export interface Goal {
  /** Whether the bound applies to the ratio figure / baseline, or to the figure's own value. */
  on: "ratio" | "figure";
  /** The comparison. */
  op: "<=" | ">=" | "<";
  /** The bound, in the figure's unit when `on` is `figure`. */
  bound: number;
}

/** One goal, or one comparison without a bound. */
export interface TargetSpec {
  /** Stable id. */
  id: string;
  /** What the goal says, for a reader. */
  title: string;
  /** What is measured. */
  figure: FigureRef;
  /** What it is compared with, measured in the same run. */
  baseline?: FigureRef;
  /** The bound; none where the source asks for the comparison but gives no number. */
  goal?: Goal;
  /** Where the goal comes from. */
  source: string;
}

/** A figure's value as a target used it. */
export interface TargetValue {
  /** The figure's id. */
  id: string;
  /** The statistic used. */
  stat: "median" | "p99";
  /** The figure's label. */
  label: string;
  /** The value. */
  value: number;
  /** Its unit. */
  unit: Unit;
  /** The figure's note, if any (such as which variant was best). */
  note?: string;
}

/** A goal, evaluated against one run's figures. */
export interface TargetResult extends Omit<TargetSpec, "figure" | "baseline"> {
  /** The measured value; null when it was not measured in this run. */
  figure: TargetValue | null;
  /** The baseline's value; null when the goal has none or it was not measured. */
  baseline: TargetValue | null;
  /**
   * figure / baseline, computed here; null without both. Where both were measured in the same
   * rounds (see `Summary.rounds`), the median of the runs' own ratios, so that a run the host
   * slowed down slows both sides of its ratio; else the quotient of the two values.
   */
  ratio: number | null;
  /** The smallest and largest of the runs' ratios, where the ratio was taken run by run. */
  ratioRange: { min: number; max: number } | null;
  /** Whether the figure, and the baseline if it has one, were measured in this run. */
  measured: boolean;
  /** Whether the goal holds; null without a goal or when it could not be judged in this run. */
  met: boolean | null;
}

const ISSUE_12 = "issue 12";
const ISSUE_11 = "issue 11";
const SYSTEM = "system goals (DESIGN.md)";
const ISSUE_15 = "issue 15";

function ringTargets(): TargetSpec[] {
  const targets: TargetSpec[] = [];
  for (const [size, name] of [[64, "64 B"], [4096, "4 KiB"]] as const) {
    targets.push({
      id: `ring-${size}-vs-minimal`,
      title: `ring across processes, ${name}: messages/s against the minimal ring`,
      figure: { id: `ring.${size}.library` },
      baseline: { id: `ring.${size}.minimal` },
      goal: { on: "ratio", op: ">=", bound: 0.7 },
      source: ISSUE_12,
    });
  }
  targets.push(
    {
      id: "ring-64-vs-socket",
      title: "ring across processes, 64 B: messages/s against a framed Unix socket",
      figure: { id: "ring.64.library" },
      baseline: { id: "ring.64.socket" },
      goal: { on: "ratio", op: ">=", bound: 10 },
      source: ISSUE_12,
    },
    {
      id: "ring-4096-vs-socket",
      title: "ring across processes, 4 KiB: messages/s against a framed Unix socket",
      figure: { id: "ring.4096.library" },
      baseline: { id: "ring.4096.socket" },
      goal: { on: "ratio", op: ">=", bound: 3 },
      source: ISSUE_12,
    },
    {
      id: "ring-65536-zerocopy-vs-memcpy",
      title: "ring zero-copy across processes, 64 KiB: bandwidth against C memcpy",
      figure: { id: "ring.65536.library-zerocopy" },
      baseline: { id: "ring.65536.memcpy" },
      goal: { on: "ratio", op: ">=", bound: 0.8 },
      source: ISSUE_12,
    },
    {
      id: "in-process-64-vs-minimal",
      title: "ring in one process, 64 B send + receive: time against the minimal ring",
      figure: { id: "in-process.ring-64.library" },
      baseline: { id: "in-process.ring-64.minimal" },
      goal: { on: "ratio", op: "<=", bound: 1.3 },
      source: ISSUE_12,
    },
  );
  return targets;
}

function wakeTargets(): TargetSpec[] {
  return [
    // Measured as a pair, both readers alive and woken in turn: run apart (the row after), each
    // run falls where the host put it, and the ratio of two such runs says little.
    {
      id: "cell-sync-vs-raw-sync",
      title:
        "state cell `waitForChangeSync()` p50 against a raw synchronous FFI futex wait, woken in turn",
      figure: { id: "wake-paired.cell-sync" },
      baseline: { id: "wake-paired.raw-sync" },
      goal: { on: "ratio", op: "<=", bound: 1.2 },
      source: ISSUE_12,
    },
    {
      id: "cell-sync-vs-raw-sync-apart",
      title:
        "state cell `waitForChangeSync()` p50 against a raw synchronous FFI futex wait, run apart",
      figure: { id: "wake-asleep.cell-sync" },
      baseline: { id: "wake-asleep.raw-sync" },
      source: ISSUE_12,
    },
    {
      id: "cell-sync-vs-c-floor",
      title: "state cell `waitForChangeSync()` p50 against the C futex floor",
      figure: { id: "wake-asleep.cell-sync" },
      baseline: { id: "wake-asleep.c-floor" },
      goal: { on: "ratio", op: "<=", bound: 1.5 },
      source: ISSUE_12,
    },
    // The floor under the goal above: the cell's synchronous wait makes this very call, and
    // cannot come closer to the C floor than the call alone does.
    {
      id: "raw-sync-vs-c-floor",
      title: "raw synchronous FFI futex wait p50 against the C futex floor",
      figure: { id: "wake-asleep.raw-sync" },
      baseline: { id: "wake-asleep.c-floor" },
      source: ISSUE_12,
    },
    // The C floor's writer sleeps as soon as it has woken its reader, the benchmark's writer
    // (Deno) runs on; a C reader woken by that writer is what the reading side alone can reach.
    {
      id: "c-reader-vs-c-floor",
      title: "C reader woken by the benchmark's writer p50 against the C futex floor",
      figure: { id: "wake-asleep.c-reader" },
      baseline: { id: "wake-asleep.c-floor" },
      source: ISSUE_12,
    },
    {
      id: "raw-sync-vs-c-reader",
      title: "raw synchronous FFI futex wait p50 against a C reader woken by the same writer",
      figure: { id: "wake-asleep.raw-sync" },
      baseline: { id: "wake-asleep.c-reader" },
      source: ISSUE_12,
    },
    {
      id: "cell-sync-vs-c-reader",
      title: "state cell `waitForChangeSync()` p50 against a C reader woken by the same writer",
      figure: { id: "wake-asleep.cell-sync" },
      baseline: { id: "wake-asleep.c-reader" },
      source: ISSUE_12,
    },
    // The same two, the C reader in the synchronous group, woken in turn with both waits.
    {
      id: "raw-sync-vs-c-reader-paired",
      title:
        "raw synchronous FFI futex wait p50 against a C reader woken by the same writer, woken in turn",
      figure: { id: "wake-paired.raw-sync" },
      baseline: { id: "wake-paired.c-reader" },
      source: ISSUE_12,
    },
    {
      id: "cell-sync-vs-c-reader-paired",
      title:
        "state cell `waitForChangeSync()` p50 against a C reader woken by the same writer, woken in turn",
      figure: { id: "wake-paired.cell-sync" },
      baseline: { id: "wake-paired.c-reader" },
      source: ISSUE_12,
    },
    // As the synchronous wait: measured in its group, all woken in turn, and run apart (the row
    // after).
    {
      id: "cell-async-vs-raw-async",
      title:
        "state cell `waitForChange()` p50 against a raw nonblocking FFI futex wait, woken in turn",
      figure: { id: "wake-paired.cell-async" },
      baseline: { id: "wake-paired.raw-async" },
      goal: { on: "ratio", op: "<=", bound: 1.1 },
      source: ISSUE_12,
    },
    {
      id: "cell-async-vs-raw-async-apart",
      title: "state cell `waitForChange()` p50 against a raw nonblocking FFI futex wait, run apart",
      figure: { id: "wake-asleep.cell-async" },
      baseline: { id: "wake-asleep.raw-async" },
      source: ISSUE_12,
    },
    // Where the asynchronous wait's cost goes, step by step, all four woken in turn (see
    // `bench/cases/wake_latency.ts`).
    {
      id: "raw-waitv-vs-raw-async",
      title:
        "raw `futex_waitv` on the word and a control word (the hub's call) p50 against the raw nonblocking wait",
      figure: { id: "wake-paired.raw-waitv" },
      baseline: { id: "wake-paired.raw-async" },
      source: ISSUE_12,
    },
    {
      id: "hub-async-vs-raw-waitv",
      title: "the futex hub alone p50 against the raw `futex_waitv` it makes",
      figure: { id: "wake-paired.hub-async" },
      baseline: { id: "wake-paired.raw-waitv" },
      source: ISSUE_12,
    },
    {
      id: "cell-async-vs-hub-async",
      title: "state cell `waitForChange()` p50 against the futex hub alone",
      figure: { id: "wake-paired.cell-async" },
      baseline: { id: "wake-paired.hub-async" },
      source: ISSUE_12,
    },
    // The same comparisons once V8 has optimised the code of both sides.
    {
      id: "cell-sync-vs-raw-sync-warm",
      title:
        "state cell `waitForChangeSync()` p50 against the raw synchronous wait, both warmed up",
      figure: { id: "wake-warm.cell-sync" },
      baseline: { id: "wake-warm.raw-sync" },
      source: ISSUE_12,
    },
    {
      id: "raw-sync-vs-c-reader-warm",
      title:
        "raw synchronous FFI futex wait p50 against a C reader woken by the same writer, both warmed up",
      figure: { id: "wake-warm.raw-sync" },
      baseline: { id: "wake-warm.c-reader" },
      source: ISSUE_12,
    },
    {
      id: "cell-async-vs-raw-async-warm",
      title: "state cell `waitForChange()` p50 against the raw nonblocking wait, both warmed up",
      figure: { id: "wake-warm.cell-async" },
      baseline: { id: "wake-warm.raw-async" },
      source: ISSUE_12,
    },
  ];
}

function memoryTargets(): TargetSpec[] {
  const targets: TargetSpec[] = [];
  for (const child of ["led", "button"]) {
    targets.push({
      id: `rss-${child}-vs-bare`,
      title: `${child} process RSS against a bare \`deno run --allow-ffi\` script`,
      figure: { id: `memory.rss.${child}` },
      baseline: { id: "memory.rss.bare" },
      goal: { on: "ratio", op: "<=", bound: 1.3 },
      source: ISSUE_12,
    });
  }
  // As users run them: the same goal for the processes the launcher starts.
  for (const child of ["led", "button"]) {
    targets.push({
      id: `rss-launched-${child}-vs-bare`,
      title: `${child} process as the launcher runs it: RSS against a bare script`,
      figure: { id: `memory.rss.launched-${child}` },
      baseline: { id: "memory.rss.bare" },
      goal: { on: "ratio", op: "<=", bound: 1.3 },
      source: ISSUE_12,
    });
  }
  // The floors under that goal: what FFI itself and loading the code cost before any of it runs.
  targets.push({
    id: "rss-ffi-vs-bare",
    title:
      "RSS of a script that only opens the libc bindings (generic calls), against a bare script",
    figure: { id: "memory.rss.ffi" },
    baseline: { id: "memory.rss.bare" },
    source: ISSUE_12,
  });
  targets.push({
    id: "rss-ffi-fast-vs-ffi",
    title:
      "RSS of a script that also compiles libc's fast calls, against one with the generic calls only",
    figure: { id: "memory.rss.ffi-fast" },
    baseline: { id: "memory.rss.ffi" },
    source: ISSUE_12,
  });
  targets.push({
    id: "rss-logging-vs-bare",
    title: "RSS of a script that only sets up logging, against a bare script",
    figure: { id: "memory.rss.logging" },
    baseline: { id: "memory.rss.bare" },
    source: ISSUE_12,
  });
  for (const child of ["led", "button"]) {
    targets.push({
      id: `rss-${child}-modules-vs-bare`,
      title: `RSS of the ${child}'s modules loaded but not run (its floor), against a bare script`,
      figure: { id: `memory.rss.${child}-modules` },
      baseline: { id: "memory.rss.bare" },
      source: ISSUE_12,
    });
    targets.push({
      id: `rss-${child}-vs-modules`,
      title: `${child} process RSS against its modules loaded but not run`,
      figure: { id: `memory.rss.${child}` },
      baseline: { id: `memory.rss.${child}-modules` },
      source: ISSUE_12,
    });
  }
  // RSS also counts the pages of the Deno binary a process has run, shared by every Deno process.
  for (const child of ["led", "button"]) {
    targets.push({
      id: `anonymous-${child}-vs-bare`,
      title: `${child} process private (anonymous) memory against a bare script's`,
      figure: { id: `memory.anonymous.${child}` },
      baseline: { id: "memory.anonymous.bare" },
      source: ISSUE_12,
    });
  }
  for (const child of ["led", "button"]) {
    targets.push({
      id: `heap-${child}-soak`,
      title: `${child} process V8 heap after a full GC: end of the soak against its start`,
      figure: { id: `memory.heap-end.${child}` },
      baseline: { id: `memory.heap-start.${child}` },
      // Within 1 %: what a full GC leaves from one sample to the next without any leak.
      goal: { on: "ratio", op: "<=", bound: 1.01 },
      source: ISSUE_12,
    });
  }
  return targets;
}

function systemTargets(): TargetSpec[] {
  return [
    {
      id: "press-to-led",
      title: "press to LED p50 (FIFO write to the LED's log line; the original: about 101 ms)",
      figure: { id: "system.press-to-led" },
      goal: { on: "figure", op: "<", bound: 1000 },
      source: SYSTEM,
    },
    {
      id: "idle-led-cpu",
      title: "idle LED CPU (our button holds the cell), beside the C 1 ms poller",
      figure: { id: "system.idle-led.cpu" },
      baseline: { id: "system.idle-poller.cpu" },
      goal: { on: "figure", op: "<", bound: 0.05 },
      source: SYSTEM,
    },
    {
      id: "idle-led-wakeups",
      title: "idle LED voluntary context switches, beside the C 1 ms poller",
      figure: { id: "system.idle-led.wakeups" },
      baseline: { id: "system.idle-poller.wakeups" },
      goal: { on: "figure", op: "<", bound: 1 },
      source: SYSTEM,
    },
    {
      id: "foreign-p50",
      title: "our LED following a foreign C writer: change to applied, p50",
      figure: { id: "foreign.led.latency" },
      baseline: { id: "foreign.poller.latency" },
      goal: { on: "figure", op: "<=", bound: 2000 },
      source: ISSUE_11,
    },
    {
      id: "foreign-p99",
      title: "our LED following a foreign C writer: change to applied, p99",
      figure: { id: "foreign.led.latency", stat: "p99" },
      baseline: { id: "foreign.poller.latency", stat: "p99" },
      goal: { on: "figure", op: "<=", bound: 5000 },
      source: ISSUE_11,
    },
    {
      id: "foreign-cpu",
      title: "our LED following a foreign C writer, idle: CPU against the C 1 ms poller",
      figure: { id: "foreign.led.cpu" },
      baseline: { id: "foreign.poller.cpu" },
      goal: { on: "ratio", op: "<=", bound: 0.5 },
      source: ISSUE_11,
    },
    {
      id: "foreign-cpu-vs-floor",
      title: "our LED following a foreign C writer, idle: CPU against C doing the follower's loop",
      figure: { id: "foreign.led.cpu" },
      baseline: { id: "foreign.floor.cpu" },
      source: ISSUE_11,
    },
  ];
}

/** The MQTT rows: issue 15 asks for them beside the broker's own round trip, with no bound. */
function mqttComparisons(): TargetSpec[] {
  const beside = { id: "mqtt.pub-to-sub" };
  const comparisons: TargetSpec[] = [];
  for (const stat of ["median", "p99"] as const) {
    const which = stat === "median" ? "p50" : "p99";
    comparisons.push(
      {
        id: `mqtt-press-to-message-${which}`,
        title: `press to MQTT message at a subscriber, ${which}, against mosquitto_pub to ` +
          "mosquitto_sub",
        figure: { id: "mqtt.press-to-message", stat },
        baseline: { ...beside, stat },
        source: ISSUE_15,
      },
      {
        id: `mqtt-set-to-led-${which}`,
        title: `MQTT \`set\` to LED applied, ${which}, against mosquitto_pub to mosquitto_sub`,
        figure: { id: "mqtt.set-to-led", stat },
        baseline: { ...beside, stat },
        source: ISSUE_15,
      },
    );
  }
  comparisons.push(
    {
      id: "mqtt-press-to-led-bridged",
      title: "press to LED p50 with the MQTT bridge running, against a launcher without it",
      figure: { id: "mqtt.press-to-led" },
      baseline: { id: "mqtt.press-to-led-alone" },
      source: ISSUE_15,
    },
    {
      id: "mqtt-flood-rss",
      title: "MQTT bridge RSS: highest during a flood of `set` messages, against before it",
      figure: { id: "mqtt.flood.rss-peak" },
      baseline: { id: "mqtt.flood.rss-before" },
      source: ISSUE_15,
    },
  );
  return comparisons;
}

/** Every goal, in the order the report shows them. */
export const TARGETS: readonly TargetSpec[] = [
  ...ringTargets(),
  ...wakeTargets(),
  ...systemTargets(),
  ...memoryTargets(),
  ...mqttComparisons(),
];

/**
 * Each run's figure / baseline, where both were measured in the same rounds and more than once;
 * else null.
 */
function runRatios(
  figures: FigureSet,
  figureRef: FigureRef,
  baselineRef: FigureRef | undefined,
): number[] | null {
  if (baselineRef === undefined) return null;
  const figure = figures.get(figureRef.id);
  const baseline = figures.get(baselineRef.id);
  if (figure?.rounds === undefined || figure.rounds !== baseline?.rounds) return null;
  const values = (of: Figure, ref: FigureRef) =>
    (ref.stat ?? "median") === "p99" ? of.p99PerRun : of.perRun;
  const over = values(figure, figureRef);
  const under = values(baseline, baselineRef);
  if (over === undefined || under === undefined || over.length !== under.length) return null;
  if (over.length < 2 || under.some((value) => value === 0)) return null;
  return over.map((value, run) => value / under[run]);
}

function valueOf(figures: FigureSet, ref: FigureRef | undefined): TargetValue | null {
  if (ref === undefined) return null;
  const figure: Figure | undefined = figures.get(ref.id);
  const stat = ref.stat ?? "median";
  const value = figure === undefined ? undefined : stat === "p99" ? figure.p99 : figure.median;
  if (figure === undefined || value === undefined) return null;
  const result: TargetValue = { id: ref.id, stat, label: figure.label, value, unit: figure.unit };
  if (figure.note !== undefined) result.note = figure.note;
  return result;
}

/** Whether `value` satisfies `goal`. */
export function holds(value: number, goal: Goal): boolean {
  switch (goal.op) {
    case "<=":
      return value <= goal.bound;
    case ">=":
      return value >= goal.bound;
    case "<":
      return value < goal.bound;
  }
}

/** Evaluates every target against `figures`: ratios and verdicts come from the figures alone. */
export function evaluateTargets(
  figures: FigureSet,
  targets: readonly TargetSpec[] = TARGETS,
): TargetResult[] {
  return targets.map((target) => {
    const figure = valueOf(figures, target.figure);
    const baseline = valueOf(figures, target.baseline);
    const perRun = runRatios(figures, target.figure, target.baseline);
    const ratio = perRun !== null
      ? median(perRun)
      : figure !== null && baseline !== null && baseline.value !== 0
      ? figure.value / baseline.value
      : null;
    const measured = figure !== null && (target.baseline === undefined || baseline !== null);
    const goal = target.goal;
    const judged = goal === undefined || !measured
      ? null
      : goal.on === "ratio"
      ? ratio
      : figure?.value ?? null;
    return {
      id: target.id,
      title: target.title,
      figure,
      baseline,
      ratio,
      ratioRange: perRun === null ? null : { min: Math.min(...perRun), max: Math.max(...perRun) },
      ...(goal === undefined ? {} : { goal }),
      measured,
      met: goal === undefined || judged === null ? null : holds(judged, goal),
      source: target.source,
    };
  });
}
