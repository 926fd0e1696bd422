/**
 * Ring throughput between two processes: each variant in {@link RING_VARIANTS} moves a stream of
 * messages from a sending process to a receiving one, which times the first message to the
 * last. Beside them, single-threaded C `memcpy` of the same block size (the bandwidth ceiling),
 * and a C ring between two processes (`bench/c/ring_handoff.c`): how fast messages are handed
 * over with nothing of JavaScript in it.
 * The library's best variant at each size becomes the figure the targets judge.
 *
 * @module
 */

import type { Figure } from "../figures.ts";
import type { ReceiveReport } from "../peers/ring_end.ts";
import { PEERS, socketPermissions, spawnDeno, spawnProgram, type WorkDir } from "../processes.ts";
import { RING_VARIANTS, type RingVariant, ringVariant } from "../ring_variants.ts";
import { summarizeRuns, summaryOf } from "../stats.ts";
import { type BenchCase, type CaseContext, interleaved } from "./case.ts";

/**
 * Message sizes, and how many messages a run moves at least: the first fifth of them a warm-up
 * (see `ring_end.ts`). A full run moves more, for {@link RUN_SECONDS}.
 */
const SIZES = [
  { bytes: 64, name: "64 B", count: 400_000 },
  { bytes: 4096, name: "4 KiB", count: 100_000 },
  { bytes: 65536, name: "64 KiB", count: 60_000 },
] as const;
const MEMCPY = "memcpy";
const C_RING = "c-ring";

/**
 * How long a full run of each way should last, and at most how many times the size's count it
 * may move for it. Short runs measure the start more than the ring: with 64 KiB messages the
 * library's zero-copy callbacks moved 0.42x `memcpy`'s messages per second in runs of 60k
 * messages, 0.68x in runs of 240k and 0.80x in runs of 600k (medians of 5, one session).
 */
const RUN_SECONDS = 1;
const MAX_COUNT_SCALE = 10;

async function viaRing(
  work: WorkDir,
  { variantId, size, count }: { variantId: string; size: number; count: number },
): Promise<number> {
  const variant = ringVariant(variantId);
  using endpoint = variant.prepare(work.file(`ring-${crypto.randomUUID().slice(0, 8)}.sock`));
  const permissions = socketPermissions(endpoint.path);
  const args = [variant.id, endpoint.path, String(size), String(count)];
  await using receiver = spawnDeno(`${PEERS}ring_end.ts`, ["receive", ...args], { permissions });
  await receiver.nextLine();
  await using sender = spawnDeno(`${PEERS}ring_end.ts`, ["send", ...args], { permissions });
  const report = JSON.parse((await receiver.nextLine()).text) as ReceiveReport;
  await receiver.succeeded();
  await sender.succeeded();
  return report.messages / report.seconds;
}

async function viaCRing(
  work: WorkDir,
  { size, count }: { size: number; count: number },
): Promise<number> {
  const binary = await work.compile("bench/c/ring_handoff.c");
  await using child = spawnProgram(binary, [String(size), String(count)]);
  const messagesPerSecond = Number((await child.nextLine()).text);
  await child.succeeded();
  return messagesPerSecond;
}

async function viaMemcpy(work: WorkDir, size: number): Promise<number> {
  const binary = await work.compile("bench/c/memcpy_bandwidth.c");
  await using child = spawnProgram(binary, [String(size)]);
  const bytesPerSecond = Number((await child.nextLine()).text);
  await child.succeeded();
  return bytesPerSecond / size;
}

/** The ring throughput case. */
export const ringThroughput: BenchCase = {
  id: "ring",
  steps: (config) =>
    (config.runs + (config.quick ? 0 : 1)) * SIZES.length * (RING_VARIANTS.length + 2) -
    (config.quick ? 0 : SIZES.length),
  async run(context: CaseContext): Promise<void> {
    const { config, work, figures } = context;
    for (const size of SIZES) {
      const base = config.quick ? size.count / 10 : size.count;
      const rows = [
        ...RING_VARIANTS.map((variant) => ({ id: variant.id, label: variant.label })),
        {
          id: C_RING,
          label: "C ring between two processes, both spinning (`bench/c/ring_handoff.c`)",
        },
        { id: MEMCPY, label: "C `memcpy`, one thread (the ceiling)" },
      ];
      const moving = (id: string, count: number): Promise<number> =>
        id === C_RING
          ? viaCRing(work, { size: size.bytes, count })
          : viaRing(work, { variantId: id, size: size.bytes, count });
      // Each way's count, from a first run that is not reported: enough for RUN_SECONDS.
      const counts = new Map<string, number>();
      for (const row of rows) {
        if (row.id === MEMCPY) continue;
        let count = row.id === C_RING ? base * MAX_COUNT_SCALE : base;
        if (!config.quick) {
          context.progress.step(`ring, ${size.name}: ${row.id}, sizing the runs`);
          const rate = await moving(row.id, base);
          count = Math.min(base * MAX_COUNT_SCALE, Math.max(base, Math.round(rate * RUN_SECONDS)));
        }
        counts.set(row.id, count);
      }
      const results = await interleaved(
        context,
        rows.map((row) => ({
          id: row.id,
          label: `ring, ${size.name}: ${row.id}`,
          measure: () =>
            row.id === MEMCPY
              ? viaMemcpy(work, size.bytes)
              : moving(row.id, counts.get(row.id) ?? base),
        })),
      );
      const added = new Map<string, Figure>();
      for (const row of rows) {
        added.set(
          row.id,
          figures.add(
            {
              id: `ring.${size.bytes}.${row.id}`,
              section: "ring",
              label: `${size.name}: ${row.label}`,
              unit: "msg/s",
              messageBytes: size.bytes,
            },
            summarizeRuns(results.get(row.id) ?? [], `ring.${size.bytes}`),
          ),
        );
      }
      const best = (id: string, what: string, ways: readonly RingVariant[]): void => {
        const candidates = ways.map((way) => added.get(way.id)).filter((f) => f !== undefined);
        const top = candidates.reduce((a, b) => b.median > a.median ? b : a);
        figures.add(
          {
            id: `ring.${size.bytes}.${id}`,
            section: "ring",
            label: `${size.name}: the library's best ${what} (${top.id.split(".").pop()})`,
            unit: "msg/s",
            messageBytes: size.bytes,
          },
          summaryOf(top),
          `the best of ${candidates.length}: ${top.label}`,
        );
      };
      const library = RING_VARIANTS.filter((variant) => variant.library);
      best("library", "way", library);
      best("library-zerocopy", "zero-copy way", library.filter((variant) => variant.zeroCopy));
    }
  },
};
