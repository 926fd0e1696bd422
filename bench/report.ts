/**
 * The benchmark's report, written from one set of data: the targets (from `targets.ts`) and the
 * figures. The same Markdown goes to `results.md` and between the README's
 * `<!-- bench:start -->` and `<!-- bench:end -->` markers; `results.json` holds the data.
 *
 * @module
 */

import { format as formatBytes } from "@std/fmt/bytes";
import type { Figure, Unit } from "./figures.ts";
import { SECTIONS } from "./figures.ts";
import type { Goal, TargetResult, TargetValue } from "./targets.ts";

/** The machine a run was made on. */
export interface Machine {
  /** CPU model. */
  cpu: string;
  /** Logical CPUs. */
  cores: number;
  /** Kernel release. */
  kernel: string;
  /** Deno version. */
  deno: string;
}

/** A case that could not run on this machine, and why. */
export interface SkippedCase {
  /** The case's id. */
  id: string;
  /** Why, such as a program that is not installed. */
  reason: string;
}

/** Everything one run measured: what `results.json` holds. */
export interface Results {
  /** When the run ended (ISO 8601). */
  date: string;
  /** Where. */
  machine: Machine;
  /** The command line's arguments. */
  args: string[];
  /** Whether it was a `--quick` smoke run. */
  quick: boolean;
  /** Runs per figure. */
  runs: number;
  /** The cases that ran. */
  cases: string[];
  /** The cases that were asked for but could not run here. */
  skipped: SkippedCase[];
  /** Every goal, evaluated. */
  targets: TargetResult[];
  /** Every figure. */
  figures: Figure[];
}

/** Describes this machine. */
export function describeMachine(): Machine {
  let cpu: string = Deno.build.arch;
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? cpu;
  } catch {
    // /proc/cpuinfo is not readable: the architecture will do
  }
  return {
    cpu,
    cores: navigator.hardwareConcurrency,
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
  };
}

function significant(value: number): string {
  const magnitude = Math.abs(value);
  if (magnitude >= 100 || value === 0) return value.toFixed(0);
  if (magnitude >= 10) return value.toFixed(1);
  if (magnitude >= 1) return value.toFixed(2);
  return value.toPrecision(2);
}

function rate(value: number): string {
  if (value >= 1e6) return `${(value / 1e6).toFixed(2)} M`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(value >= 1e5 ? 0 : 1)} k`;
  return value.toFixed(0);
}

/** `value` in `unit`, for a reader. */
export function formatValue(value: number, unit: Unit): string {
  switch (unit) {
    case "us":
    case "us/event":
      return `${significant(value)} ${unit}`;
    case "ns/op":
      return `${significant(value)} ns`;
    case "msg/s":
      return `${rate(value)} msg/s`;
    case "%":
      return `${value.toFixed(value >= 10 ? 1 : 3)} %`;
    case "/s":
      return `${significant(value)}/s`;
    case "bytes":
      return formatBytes(value, { binary: true, maximumFractionDigits: 1 });
  }
}

function bandwidth(figure: Figure, value: number): string {
  return figure.messageBytes === undefined
    ? ""
    : ` (${formatBytes(value * figure.messageBytes, { maximumFractionDigits: 1 })}/s)`;
}

function targetValue(value: TargetValue | null): string {
  if (value === null) return "-";
  return `${formatValue(value.value, value.unit)}${value.stat === "p99" ? " (p99)" : ""}`;
}

function goalText(goal: Goal | undefined, unit: Unit | undefined): string {
  if (goal === undefined) return "none set";
  return goal.on === "ratio"
    ? `ratio ${goal.op} ${goal.bound}x`
    : `${goal.op} ${unit === undefined ? goal.bound : formatValue(goal.bound, unit)}`;
}

function verdict(target: TargetResult): string {
  if (!target.measured) return "not measured";
  if (target.met === null) return "-";
  return target.met ? "met" : "**missed**";
}

function cell(text: string): string {
  return text.replaceAll("|", "\\|");
}

function targetsTable(targets: readonly TargetResult[]): string[] {
  const lines = [
    "| what | figure | baseline | ratio | runs' ratios | goal | verdict |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const target of targets) {
    lines.push(
      `| ${
        [
          target.title,
          targetValue(target.figure),
          targetValue(target.baseline),
          target.ratio === null ? "-" : `${target.ratio.toFixed(2)}x`,
          target.ratioRange === null
            ? "-"
            : `${target.ratioRange.min.toFixed(2)}x to ${target.ratioRange.max.toFixed(2)}x`,
          goalText(target.goal, target.figure?.unit),
          verdict(target),
        ].map(cell).join(" | ")
      } |`,
    );
  }
  return lines;
}

function figureTable(title: string, figures: readonly Figure[]): string[] {
  const latencies = figures.some((figure) => figure.p99 !== undefined);
  const runs = [...new Set(figures.map((figure) => figure.runs))];
  const range = runs.length === 1 && runs[0] > 1 ? `range of ${runs[0]} runs` : "range of the runs";
  const lines = [
    `**${title}**`,
    "",
    latencies ? `| what | p50 | p99 | ${range} |` : `| what | median | ${range} |`,
    latencies ? "| --- | --- | --- | --- |" : "| --- | --- | --- |",
  ];
  for (const figure of figures) {
    const columns = [
      figure.label,
      `${formatValue(figure.median, figure.unit)}${bandwidth(figure, figure.median)}`,
      ...(latencies ? [figure.p99 === undefined ? "-" : formatValue(figure.p99, figure.unit)] : []),
      figure.runs === 1
        ? "-"
        : `${formatValue(figure.min, figure.unit)} to ${formatValue(figure.max, figure.unit)}`,
    ];
    lines.push(`| ${columns.map(cell).join(" | ")} |`);
  }
  return lines;
}

/** How the goals went, and how many rows compare without a goal. */
function goalsLine(targets: readonly TargetResult[]): string {
  const goals = targets.filter((target) => target.goal !== undefined);
  const judged = goals.filter((target) => target.met !== null);
  const met = judged.filter((target) => target.met).length;
  const unmeasured = goals.length - judged.length;
  const comparisons = targets.filter((t) => t.goal === undefined && t.measured).length;
  const verdicts = judged.length === 0
    ? `none of the ${goals.length} measured in this run`
    : `${met} of ${judged.length} met` +
      (unmeasured > 0 ? `; ${unmeasured} not measured in this run` : "");
  const others = comparisons === 0
    ? ""
    : ` ${comparisons} more ${comparisons === 1 ? "row compares" : "rows compare"} a figure ` +
      "with its baseline where no goal was set.";
  return `Goals: ${verdicts}.${others}`;
}

/** The report as Markdown: the goals, then one table per section, then the figures' notes. */
export function renderMarkdown(results: Results): string {
  const m = results.machine;
  // A soak alone takes one sample per figure, whatever --runs says.
  const runs = Math.max(1, ...results.figures.map((figure) => figure.runs));
  const lines = [
    `Measured ${results.date.slice(0, 10)} on ${m.cpu}, ${m.cores} cores, Linux ${m.kernel}, ` +
    `Deno ${m.deno}, with \`deno task bench${
      results.args.length > 0 ? ` ${results.args.join(" ")}` : ""
    }\`. Each figure is the median of ${runs === 1 ? "one run" : `${runs} runs`} ` +
    "(latencies: the median of the runs' p50s and of their p99s) with the range of the runs; " +
    "every ratio is figure / baseline, both from this run. Where the two were measured in the " +
    "same runs (each run measures every row of its case in turn, or takes several figures from " +
    "the same samples), the ratio is the median of the runs' own ratios, with their range " +
    "beside it, so a run the host slowed down counts against both sides alike; it can differ " +
    "from the quotient of the two medians (both are in the table), either way" +
    (runs > 1 && results.figures.some((f) => f.runs === 1)
      ? ". A figure without a range is one sample."
      : "."),
    "",
    goalsLine(results.targets),
    ...results.skipped.flatMap((c) => ["", `Not run here: the ${c.id} case, which ${c.reason}.`]),
    "",
    ...targetsTable(results.targets.filter((target) => target.measured)),
  ];
  for (const section of SECTIONS) {
    const figures = results.figures.filter((figure) => figure.section === section.id);
    if (figures.length === 0) continue;
    lines.push("", ...figureTable(section.title, figures));
  }
  const notes = results.figures.filter((figure) => figure.note !== undefined);
  if (notes.length > 0) {
    lines.push("", "Notes:", "");
    for (const figure of notes) lines.push(`- ${figure.label}: ${figure.note}`);
  }
  return lines.join("\n") + "\n";
}

/** The data as JSON. */
export function renderJson(results: Results): string {
  return JSON.stringify(results, null, 2) + "\n";
}

const START = "<!-- bench:start -->";
const END = "<!-- bench:end -->";

/** `readme` with the text between the bench markers replaced by `markdown`. */
export function replaceReadmeSection(readme: string, markdown: string): string {
  const start = readme.indexOf(START);
  const end = readme.indexOf(END);
  if (start < 0 || end < start) {
    throw new Error(`The README has no ${START} ... ${END} section to write the results into`);
  }
  return `${readme.slice(0, start)}${START}\n\n${markdown}\n${readme.slice(end)}`;
}
