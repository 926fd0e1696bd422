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

/** Summarizes one value per run: their median and range. */
export function summarizeRuns(perRun: readonly number[]): Summary {
  const ordered = sorted(perRun, "range");
  return {
    median: median(ordered),
    min: ordered[0],
    max: ordered[ordered.length - 1],
    runs: ordered.length,
  };
}

/**
 * Summarizes latency samples taken in several runs: the median of the runs' medians (p50),
 * the median of the runs' 99th percentiles (p99), and the range of the runs' medians.
 */
export function summarizeLatencies(runs: readonly (readonly number[])[]): Summary {
  const medians = runs.map((samples) => median(samples));
  return {
    ...summarizeRuns(medians),
    p99: median(runs.map((samples) => percentile(samples, 0.99))),
  };
}
