/**
 * In-process costs per call: a 64-byte send and receive on each ring variant that runs in one
 * process (the minimal ring is the floor), the state cell's write and read, and a bare
 * `Atomics.add`. Each run of each measurement is a process of its own (warm-up, then the median of
 * a few batches of calls), the rows interleaved run by run: the batches of one process take a
 * tenth of a second, so a moment of a busy host used to slow down every run of one row and none
 * of the next (175 ns against 94 for the ring's best way in one full run, right after the ring
 * case, the minimal ring untouched three seconds later).
 *
 * @module
 */

import type { Figure } from "../figures.ts";
import { PEERS, spawnDeno } from "../processes.ts";
import { RING_VARIANTS } from "../ring_variants.ts";
import { median, summarizeRuns, summaryOf } from "../stats.ts";
import { type BenchCase, type CaseContext, interleaved } from "./case.ts";

const CALLS = 200_000;
/** Batches per process; the process's figure is their median. */
const BATCHES = 3;

const MEASUREMENTS = [
  ...RING_VARIANTS.filter((variant) => variant.inProcess).map((variant) => ({
    what: `ring-${variant.id}`,
    id: `in-process.ring-64.${variant.id}`,
    label: `64 B send + receive: ${variant.label}`,
  })),
  {
    what: "cell-write",
    id: "in-process.cell-write",
    label: "state cell `write()`, no reader asleep",
  },
  { what: "cell-read", id: "in-process.cell-read", label: "state cell `read()`" },
  { what: "atomics", id: "in-process.atomics", label: "`Atomics.add` on a local Int32Array" },
];

/** One run of a measurement: a process of its own, the median of its batches (ns per call). */
async function measure(what: string, calls: number): Promise<number> {
  await using child = spawnDeno(`${PEERS}in_process.ts`, [what, String(BATCHES), String(calls)]);
  const line = await child.nextLine();
  await child.succeeded();
  return median(JSON.parse(line.text) as number[]);
}

/** The in-process case. */
export const inProcess: BenchCase = {
  id: "in-process",
  steps: (config) => config.runs * MEASUREMENTS.length,
  async run(context: CaseContext): Promise<void> {
    const { config, figures } = context;
    const calls = config.quick ? CALLS / 10 : CALLS;
    const results = await interleaved(
      context,
      MEASUREMENTS.map((measurement) => ({
        id: measurement.id,
        label: `in one process: ${measurement.what}`,
        measure: () => measure(measurement.what, calls),
      })),
    );
    const library: Figure[] = [];
    for (const measurement of MEASUREMENTS) {
      const figure = figures.add(
        { id: measurement.id, section: "in-process", label: measurement.label, unit: "ns/op" },
        summarizeRuns(results.get(measurement.id) ?? [], "in-process"),
      );
      const variant = RING_VARIANTS.find((v) => `ring-${v.id}` === measurement.what);
      if (variant?.library) library.push(figure);
    }
    const best = library.reduce((a, b) => b.median < a.median ? b : a);
    figures.add(
      {
        id: "in-process.ring-64.library",
        section: "in-process",
        label: `64 B send + receive: the library's best way (${best.id.split(".").pop()})`,
        unit: "ns/op",
      },
      summaryOf(best),
      `the best of ${library.length} library ways: ${best.label}`,
    );
  },
};
