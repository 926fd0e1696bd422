/**
 * What every benchmark case is: an id (for `--only`), how many progress steps it reports, and
 * a run that adds its figures to the run's {@link FigureSet}.
 *
 * @module
 */

import type { BenchConfig } from "../config.ts";
import type { FigureSet } from "../figures.ts";
import type { WorkDir } from "../processes.ts";
import type { Progress } from "../progress.ts";

/** What a case gets to run with. */
export interface CaseContext {
  /** The command line. */
  config: BenchConfig;
  /** The run's private temporary directory and compiled C programs. */
  work: WorkDir;
  /** Where the case puts its figures. */
  figures: FigureSet;
  /** Where the case reports each step. */
  progress: Progress;
}

/** One benchmark case. */
export interface BenchCase {
  /** The id `--only` names it by. */
  id: string;
  /**
   * Why it cannot run on this machine (such as a program that is not installed); undefined when
   * it can. A case that cannot is skipped with this reason, and the rest of the run goes on.
   */
  unavailable?(): string | undefined;
  /** How many times it calls `progress.step()` under `config`. */
  steps(config: BenchConfig): number;
  /** Measures, and adds the figures to `context.figures`. */
  run(context: CaseContext): Promise<void>;
}

/** One row of a case: an id, a label for the progress, and one measurement of it. */
export interface Row<T> {
  /** The row's id. */
  id: string;
  /** What the progress shows while it is measured. */
  label: string;
  /** Measures it once. */
  measure: () => Promise<T>;
}

/**
 * Measures every row `config.runs` times, interleaved (run 1 of every row, then run 2, ...), so
 * a machine that gets busier or quieter during the case affects all rows alike; every other run
 * goes through the rows backwards, so that no row always comes first or right after another
 * (rows compared with each other sit side by side: A B ... then ... B A). Reports a step per
 * measurement; returns each row's results in run order.
 */
export async function interleaved<T>(
  context: CaseContext,
  rows: readonly Row<T>[],
): Promise<Map<string, T[]>> {
  const results = new Map<string, T[]>(rows.map((row) => [row.id, []]));
  const runs = context.config.runs;
  for (let run = 1; run <= runs; run++) {
    for (const row of run % 2 === 1 ? rows : [...rows].reverse()) {
      context.progress.step(`${row.label}${runs > 1 ? `, run ${run}/${runs}` : ""}`);
      results.get(row.id)?.push(await row.measure());
    }
  }
  return results;
}
