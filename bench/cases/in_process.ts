/**
 * In-process costs per call: a 64-byte send and receive on each ring variant that runs in one
 * process (the minimal ring is the floor), the state cell's write and read, and a bare
 * `Atomics.add`. Each measurement runs in a process of its own; each run is a batch of calls.
 *
 * @module
 */

import type { Figure } from "../figures.ts";
import { PEERS, spawnDeno } from "../processes.ts";
import { RING_VARIANTS } from "../ring_variants.ts";
import { summarizeRuns, summaryOf } from "../stats.ts";
import type { BenchCase, CaseContext } from "./case.ts";

const CALLS = 200_000;

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

async function measure(what: string, batches: number, calls: number): Promise<number[]> {
  await using child = spawnDeno(`${PEERS}in_process.ts`, [what, String(batches), String(calls)]);
  const line = await child.nextLine();
  await child.succeeded();
  return JSON.parse(line.text) as number[];
}

/** The in-process case. */
export const inProcess: BenchCase = {
  id: "in-process",
  steps: () => MEASUREMENTS.length,
  async run(context: CaseContext): Promise<void> {
    const { config, figures, progress } = context;
    // Each run is one batch; a batch is short, so take at least 5 for a stable median.
    const batches = Math.max(5, config.runs);
    const calls = config.quick ? CALLS / 10 : CALLS;
    const library: Figure[] = [];
    for (const measurement of MEASUREMENTS) {
      progress.step(`in one process: ${measurement.what}`);
      const figure = figures.add(
        { id: measurement.id, section: "in-process", label: measurement.label, unit: "ns/op" },
        summarizeRuns(await measure(measurement.what, batches, calls)),
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
