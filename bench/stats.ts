/**
 * Statistics for the benchmark: medians, percentiles and the range over runs. Every figure is
 * reported as the median over several runs with the range of the runs, because one run on a
 * shared machine proves little.
 *
 * @module
 */

/** What a figure says: the median over runs, the range of the runs and, for latencies, the p99. */
export interface Summary {
  /** Median over the runs (for latencies, the median of each run's median). */
  median: number;
  /** For latencies: the median of each run's 99th percentile. */
  p99?: number;
  /** Smallest run value. */
  min: number;
  /** Largest run value. */
  max: number;
  /** How many runs. */
  runs: number;
  /** Each run's value, in the order the runs were made (for latencies, each run's p50). */
  perRun?: number[];
  /** For latencies: each run's p99, in the same order. */
  p99PerRun?: number[];
  /**
   * Names the rounds the runs were made in, where other figures were measured in the same
   * rounds (in each run, one right after another, or from the same samples): a ratio of two
   * such figures is taken run by run (see `evaluateTargets`).
   */
  rounds?: string;
}

function sorted(values: readonly number[], what: string): number[] {
  if (values.length === 0) throw new RangeError(`No values to take the ${what} of`);
  if (values.some((value) => !Number.isFinite(value))) {
    throw new RangeError(`Cannot take the ${what} of ${values.join(", ")}: not all are finite`);
  }
  return [...values].sort((a, b) => a - b);
}

/** The nearest-rank percentile (`fraction` from 0 to 1) of `values`. */
export function percentile(values: readonly number[], fraction: number): number {
  if (!(fraction >= 0 && fraction <= 1)) {
    throw new RangeError(`Percentile ${fraction} is not between 0 and 1`);
  }
  const ordered = sorted(values, `p${fraction * 100}`);
  return ordered[Math.max(0, Math.ceil(fraction * ordered.length) - 1)];
}

/** The median of `values` (the mean of the two middle values when their count is even). */
export function median(values: readonly number[]): number {
  const ordered = sorted(values, "median");
  const middle = ordered.length >> 1;
  return ordered.length % 2 === 1 ? ordered[middle] : (ordered[middle - 1] + ordered[middle]) / 2;
}

/**
 * Summarizes one value per run: their median and range, and the values in run order.
 *
 * @param rounds Names the rounds, when other figures were measured in the same ones.
 */
export function summarizeRuns(perRun: readonly number[], rounds?: string): Summary {
  const ordered = sorted(perRun, "range");
  return {
    median: median(ordered),
    min: ordered[0],
    max: ordered[ordered.length - 1],
    runs: ordered.length,
    perRun: [...perRun],
    ...(rounds === undefined ? {} : { rounds }),
  };
}

/**
 * Summarizes latency samples taken in several runs: the median of the runs' medians (p50),
 * the median of the runs' 99th percentiles (p99), and the range of the runs' medians.
 *
 * @param rounds Names the rounds, when other figures were measured in the same ones.
 */
export function summarizeLatencies(
  runs: readonly (readonly number[])[],
  rounds?: string,
): Summary {
  const medians = runs.map((samples) => median(samples));
  const p99s = runs.map((samples) => percentile(samples, 0.99));
  return { ...summarizeRuns(medians, rounds), p99: median(p99s), p99PerRun: p99s };
}

/** The summary part of `figure` (a figure that stands for another, such as the best of some). */
export function summaryOf(figure: Summary): Summary {
  const { median, p99, min, max, runs, perRun, p99PerRun, rounds } = figure;
  return {
    median,
    min,
    max,
    runs,
    ...(p99 === undefined ? {} : { p99 }),
    ...(perRun === undefined ? {} : { perRun }),
    ...(p99PerRun === undefined ? {} : { p99PerRun }),
    ...(rounds === undefined ? {} : { rounds }),
  };
}
