/**
 * `deno task bench`: runs the cases, evaluates the targets and writes the report. Everything
 * measured lives in `cases/`, the child processes in `peers/`, the goals in `targets.ts`, the
 * writing in `report.ts`. Run with `--help` for the flags.
 *
 * @module
 */

import { type BenchCase, type CaseContext } from "./cases/case.ts";
import { foreignWriter } from "./cases/foreign_writer.ts";
import { inProcess } from "./cases/in_process.ts";
import { memory } from "./cases/memory.ts";
import { mqtt } from "./cases/mqtt.ts";
import { ringThroughput } from "./cases/ring_throughput.ts";
import { soak } from "./cases/soak.ts";
import { system } from "./cases/system.ts";
import { wakeLatency } from "./cases/wake_latency.ts";
import { type BenchConfig, parseConfig, usage, UsageError } from "./config.ts";
import { FigureSet } from "./figures.ts";
import { abandonAll, ROOT, runCommand, WorkDir } from "./processes.ts";
import { createProgress } from "./progress.ts";
import {
  describeMachine,
  renderJson,
  renderMarkdown,
  replaceReadmeSection,
  type Results,
  type SkippedCase,
} from "./report.ts";
import { evaluateTargets } from "./targets.ts";

/** Every case, in the order a full run measures them. */
const CASES: readonly BenchCase[] = [
  wakeLatency,
  ringThroughput,
  inProcess,
  system,
  foreignWriter,
  mqtt,
  memory,
  soak,
];

async function measure(config: BenchConfig, cases: readonly BenchCase[]): Promise<FigureSet> {
  const figures = new FigureSet();
  const progress = createProgress(cases.reduce((total, c) => total + c.steps(config), 0));
  try {
    await using work = await WorkDir.create();
    const context: CaseContext = { config, work, figures, progress };
    // Every child, and the launcher's, gets a Deno cache made for this run: one used for weeks
    // added about 1 MiB to each child's RSS (its code cache and its analysis caches' lookups),
    // so figures depended on the machine's history rather than on the code.
    const denoDir = Deno.env.get("DENO_DIR");
    Deno.env.set("DENO_DIR", work.file("deno-dir"));
    try {
      for (const benchCase of cases) await benchCase.run(context);
    } finally {
      if (denoDir === undefined) Deno.env.delete("DENO_DIR");
      else Deno.env.set("DENO_DIR", denoDir);
    }
  } finally {
    await progress.finish();
  }
  return figures;
}

/** The cases of `chosen` that can run here, and the others with the reason, each said once. */
function runnable(chosen: readonly BenchCase[]): { cases: BenchCase[]; skipped: SkippedCase[] } {
  const cases: BenchCase[] = [];
  const skipped: SkippedCase[] = [];
  for (const benchCase of chosen) {
    const reason = benchCase.unavailable?.();
    if (reason === undefined) {
      cases.push(benchCase);
    } else {
      console.error(`bench: skipping the ${benchCase.id} case: it ${reason}`);
      skipped.push({ id: benchCase.id, reason });
    }
  }
  return { cases, skipped };
}

async function write(config: BenchConfig, results: Results): Promise<void> {
  const markdown = renderMarkdown(results);
  console.log(markdown);
  const written: string[] = [];
  if (config.outDir !== undefined) {
    const base = `${config.outDir}/${config.soak ? "soak" : "results"}`;
    await Deno.mkdir(config.outDir, { recursive: true });
    await Deno.writeTextFile(`${base}.json`, renderJson(results));
    await Deno.writeTextFile(`${base}.md`, markdown);
    written.push(`${base}.md`);
  }
  if (config.readme) {
    const readme = `${ROOT}README.md`;
    await Deno.writeTextFile(
      readme,
      replaceReadmeSection(await Deno.readTextFile(readme), markdown),
    );
    written.push(readme);
  }
  if (written.length > 0) {
    // What the benchmark writes is committed, so it must pass `deno fmt --check`.
    const fmt = await runCommand(Deno.execPath(), {
      args: ["fmt", "--quiet", "--config", `${ROOT}deno.json`, ...written],
    });
    if (!fmt.success) throw new Error(`deno fmt failed on ${written.join(", ")}`);
    console.error(`bench: wrote ${written.join(", ")}${config.outDir ? " and the JSON" : ""}`);
  }
}

/** Set by the first SIGINT or SIGTERM: settles as the process exits, having stopped the rest. */
let interrupted: Promise<void> | undefined;

async function main(args: string[]): Promise<number> {
  const caseIds = CASES.map((c) => c.id);
  let config: BenchConfig | "help";
  try {
    config = parseConfig(args, { caseIds, root: ROOT });
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`bench: ${error.message}\n\n${usage(caseIds)}`);
    return 2;
  }
  if (config === "help") {
    console.log(usage(caseIds));
    return 0;
  }
  const { cases, skipped } = runnable(
    config.soak ? [soak] : CASES.filter((c) => config.cases.includes(c.id)),
  );
  // Ctrl+C (or a kill) leaves no child running and no work directory behind; a second one
  // does not wait for the children's grace.
  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    Deno.addSignalListener(signal, () => {
      if (interrupted !== undefined) {
        void abandonAll(0).finally(() => Deno.exit(code));
        return;
      }
      console.error(`bench: ${signal}: stopping its processes and removing its files`);
      interrupted = abandonAll().finally(() => Deno.exit(code));
    });
  }
  const figures = await measure(config, cases);
  await write(config, {
    date: new Date().toISOString(),
    machine: describeMachine(),
    args,
    quick: config.quick,
    runs: config.runs,
    cases: cases.map((c) => c.id),
    skipped,
    targets: evaluateTargets(figures),
    figures: figures.all(),
  });
  return 0;
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (error) {
    // Interrupted: a case fails as its children are stopped, which is no failure to report.
    if (interrupted === undefined) {
      console.error(`bench: failed: ${error instanceof Error ? error.message : error}`);
    }
    code = 1;
  }
  // The interrupt's exit, with its own code, once its children are stopped.
  await interrupted;
  Deno.exit(code);
}
