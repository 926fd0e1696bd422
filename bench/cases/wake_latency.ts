/**
 * Wake-up latency: how long a reader in another process takes to see a change. The writer (this
 * process) stamps CLOCK_MONOTONIC into a control memfd just before each change; the reader reads
 * the clock when it sees it. Two regimes: writes 1-2 ms apart, so the reader is always asleep
 * (what the LED sees), and back to back, each write 0-100 us after the reader took the last
 * one, where spinning before sleeping can pay. A third regime repeats the first after the reader
 * took 3000 changes back to back, so V8 has optimised its code: a process's first few hundred
 * wake-ups run in V8's lower tiers, slower than optimised code. In every regime the
 * writer's code from its stamp to the wake counts, and a write made now and then runs cold. The
 * woken reader most often runs on the writer's CPU: at once if the kernel lets it preempt the
 * writer, else once the writer sleeps, and which it is depends on how long the reader ran the
 * last time (the CPU a reader spends between two sleeps counts twice). Baselines: the C floor (C on
 * both sides), the raw FFI futex calls (`ffi/raw_futex.ts`), a Unix socket and a pipe. Last,
 * each state cell wait is measured in a group with the raw wait of its kind (synchronous, then
 * nonblocking, with the steps between): all of them alive at once, each change going to one and
 * then the next, in a random order, so that they see the same host. Run apart, as in the first table, their runs fall in bands (a few
 * microseconds, or tens) that say more about where the host ran each run than about the waits.
 *
 * @module
 */

import { delay } from "@std/async/delay";
import { futexHub } from "../../ffi/futex_hub.ts";
import { createRawMemfd, type RawSharedMemory } from "../../ffi/raw_futex.ts";
import { monotonicNanos } from "../../ffi/posix.ts";
import { createMemfdRegion, openStateCell } from "../../mod.ts";
import type { SectionId } from "../figures.ts";
import {
  CONTROL_SIZE,
  SEEN_WORD,
  SEQUENCE_WORD,
  stamp,
  type WakeReport,
} from "../peers/wake_protocol.ts";
import {
  type Child,
  PEERS,
  ROOT,
  socketPermissions,
  spawnDeno,
  spawnProgram,
  type WorkDir,
} from "../processes.ts";
import { summarizeLatencies, summarizeRuns } from "../stats.ts";
import { type BenchCase, type CaseContext, interleaved } from "./case.ts";

type Regime = "asleep" | "busy" | "warm";

interface Reader {
  id: string;
  label: string;
  regimes: readonly Regime[];
}

const BOTH: readonly Regime[] = ["asleep", "busy"];
const ALL: readonly Regime[] = ["asleep", "busy", "warm"];
/** Changes the reader takes back to back, unreported, before the warm regime's samples. */
const WARM_UP_CHANGES = 3000;
const SPIN_BUDGETS_US = [20, 50, 100] as const;

/**
 * Every way of waiting that is measured; `id` is also the reader's mode. Each state cell wait
 * comes right after the raw wait it is held against: the runs of a pair are a second apart, not
 * seven, so the host moves less between them.
 */
const READERS: readonly Reader[] = [
  { id: "c-floor", label: "C futex wait woken by a C writer (the floor)", regimes: ["asleep"] },
  {
    id: "c-reader",
    label: "C futex wait woken by the benchmark's writer (the floor of the reading side)",
    regimes: ALL,
  },
  { id: "raw-sync", label: "raw synchronous FFI futex wait", regimes: ALL },
  { id: "cell-sync", label: "state cell `waitForChangeSync()`", regimes: ALL },
  // Where the asynchronous wait's cost goes: the call the library's hub makes, then the hub
  // itself, both on the raw word, before the raw wait and the state cell's.
  {
    id: "raw-waitv",
    label: "raw nonblocking FFI `futex_waitv` on the word and a control word (the hub's call)",
    regimes: ALL,
  },
  {
    id: "hub-async",
    label: "the library's futex hub alone (under `waitForChange()`)",
    regimes: ALL,
  },
  { id: "raw-async", label: "raw nonblocking FFI futex wait (event loop free)", regimes: ALL },
  { id: "cell-async", label: "state cell `waitForChange()`", regimes: ALL },
  {
    id: "raw-worker",
    label: "Worker blocked in a raw synchronous wait, posting to the main thread",
    regimes: BOTH,
  },
  ...SPIN_BUDGETS_US.map((us) => ({
    id: `spin-${us}`,
    label: `spin up to ${us} us, then the raw nonblocking wait`,
    regimes: BOTH,
  })),
  { id: "socket", label: "Unix socket, 8-byte stamps", regimes: ["asleep"] },
  { id: "pipe", label: "pipe, 8-byte stamps", regimes: ["asleep"] },
];

/** How long the writer waits for the reader to take a change before giving up. */
const READER_TIMEOUT_MS = 30_000;
const BUSY_GAP_MAX_US = 100;

function samplesFor(regime: Regime, quick: boolean): number {
  if (regime !== "busy") return quick ? 30 : 400;
  return quick ? 100 : 1000;
}

/** How often a writer spinning for the reader looks whether the reader still runs. */
const READER_LOOK_MS = 50;

/**
 * Waits until the reader has taken `count` changes, then for the regime's gap. A reader that
 * ends first (it failed) is said at once, with its exit status and output.
 */
export async function gap(
  reader: Child,
  { words, count, regime }: { words: Int32Array; count: number; regime: "asleep" | "busy" },
): Promise<void> {
  const deadline = performance.now() + READER_TIMEOUT_MS;
  const late = (): Error =>
    new Error(`The reader took ${Atomics.load(words, SEEN_WORD)} of ${count} changes in time:
${reader.transcript}`);
  const ended = async (): Promise<never> => {
    await reader.succeeded(); // throws with the exit status and every line, unless it was 0
    throw new Error(
      `The reader ended after ${Atomics.load(words, SEEN_WORD)} of ${count} changes:
${reader.transcript}`,
    );
  };
  if (regime === "asleep") {
    await delay(1 + Math.random());
    while (Atomics.load(words, SEEN_WORD) < count) {
      if (reader.gone) return await ended();
      if (performance.now() > deadline) throw late();
      await delay(1);
    }
    return;
  }
  // Back to back: spin here (the event loop would add a millisecond), then a random pause.
  let look = performance.now() + READER_LOOK_MS;
  while (Atomics.load(words, SEEN_WORD) < count) {
    const now = performance.now();
    if (now > deadline) throw late();
    if (now > look) {
      if (reader.gone) return await ended();
      look = now + READER_LOOK_MS;
    }
  }
  const until = performance.now() + (Math.random() * BUSY_GAP_MAX_US) / 1000;
  while (performance.now() < until);
}

function stampBytes(): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigInt64(0, monotonicNanos(), true);
  return bytes;
}

/** The reader's report, without the changes it took to warm up. */
async function report(reader: Child, warmUp: number): Promise<WakeReport> {
  const line = await reader.nextLine();
  await reader.succeeded();
  const report = JSON.parse(line.text) as WakeReport;
  return { ...report, latenciesNs: report.latenciesNs.slice(warmUp) };
}

/** The C reader's report: one latency in ns per line, `changes` of them, once it has taken all. */
async function cReport(reader: Child, changes: number): Promise<WakeReport> {
  const latenciesNs: number[] = [];
  for (let i = 0; i < changes; i++) latenciesNs.push(Number((await reader.nextLine()).text));
  await reader.succeeded();
  return { latenciesNs };
}

/** The gap before change `i` (from 1): back to back while warming up, then the regime's. */
function gapOf(regime: Regime, i: number): "asleep" | "busy" {
  if (regime !== "warm") return regime;
  return i <= WARM_UP_CHANGES ? "busy" : "asleep";
}

/** One run of one reader: starts it, makes `samples` changes, returns what it saw. */
async function measure(
  work: WorkDir,
  { readerId, regime, samples }: { readerId: string; regime: Regime; samples: number },
): Promise<WakeReport> {
  if (readerId === "c-floor") {
    const floor = await work.compile("bench/c/futex_floor.c");
    await using child = spawnProgram(floor, [String(samples)]);
    const latenciesNs: number[] = [];
    for (let i = 0; i < samples; i++) latenciesNs.push(Number((await child.nextLine()).text));
    await child.succeeded();
    return { latenciesNs };
  }
  using control = createRawMemfd(CONTROL_SIZE, { name: "bench-wake" });
  const words = control.words;
  const longWords = new BigInt64Array(control.buffer);
  const warmUp = regime === "warm" ? WARM_UP_CHANGES : 0;
  const changes = warmUp + samples;
  const args = [readerId, control.path, String(changes)];

  if (readerId === "cell-sync" || readerId === "cell-async") {
    using region = createMemfdRegion({ size: 256, label: "bench-cell" });
    using cell = openStateCell(region, { writer: true });
    await using reader = spawnDeno(`${PEERS}wake_reader.ts`, [...args, region.name]);
    await reader.nextLine();
    for (let i = 1; i <= changes; i++) {
      await gap(reader, { words, count: i - 1, regime: gapOf(regime, i) });
      stamp(longWords);
      cell.write(i);
    }
    return await report(reader, warmUp);
  }
  if (readerId === "socket") return await viaSocket(work, { control, args, samples });
  if (readerId === "pipe") {
    await using reader = spawnDeno(`${PEERS}wake_reader.ts`, args, { stdin: true });
    await reader.nextLine();
    const writer = reader.stdin.getWriter();
    for (let i = 1; i <= samples; i++) {
      await gap(reader, { words, count: i - 1, regime: gapOf(regime, i) });
      await writer.write(stampBytes());
    }
    const result = await report(reader, 0);
    await writer.close().catch(() => {}); // the reader may have closed its end already
    return result;
  }
  if (readerId === "c-reader") {
    const binary = await work.compile("bench/c/futex_reader.c");
    await using reader = spawnProgram(binary, [control.path, String(changes)]);
    await reader.nextLine();
    await writeChanges(reader, { control, changes, regime });
    const { latenciesNs } = await cReport(reader, changes);
    return { latenciesNs: latenciesNs.slice(warmUp) };
  }
  // A Worker's module is read from disk: that reader needs read access to the project.
  const permissions = [
    "--allow-ffi",
    ...(readerId === "raw-worker" ? [`--allow-read=${ROOT}`] : []),
  ];
  await using reader = spawnDeno(`${PEERS}wake_reader.ts`, args, { permissions });
  await reader.nextLine();
  await writeChanges(reader, { control, changes, regime });
  return await report(reader, warmUp);
}

/**
 * The waits measured as a group, alive at once and woken in turn (see {@link measureGroup}):
 * each state cell wait with the raw wait of its kind, the synchronous one also with the C reader
 * (the floor under both: what the reading side reaches with no Deno in it), and the asynchronous
 * one also with the steps between them (the hub's call, then the hub), so that each step is
 * judged on one host.
 */
const GROUPS = [
  { id: "sync", readers: ["c-reader", "raw-sync", "cell-sync"] },
  { id: "async", readers: ["raw-async", "raw-waitv", "hub-async", "cell-async"] },
] as const;

type Group = typeof GROUPS[number];

/** The readers of `group` this kernel can run: before 5.16 there is no futex_waitv to time. */
function membersOf(group: Group): string[] {
  return group.readers.filter((id) => id !== "raw-waitv" || futexHub().pooled);
}

/** One reader of a group, with the writer's side of it. */
interface Member {
  id: string;
  reader: Child;
  control: RawSharedMemory;
  stamps: BigInt64Array;
  write: (i: number) => void;
}

/**
 * One run of a group: its readers alive at once, each woken 1-2 ms after it took its last
 * change, in a random order within each turn. Returns each reader's report, by id.
 */
async function measureGroup(
  work: WorkDir,
  { group, samples }: { group: Group; samples: number },
): Promise<Map<string, WakeReport>> {
  await using stack = new AsyncDisposableStack();
  const script = `${PEERS}wake_reader.ts`;
  const members: Member[] = [];
  for (const id of membersOf(group)) {
    const control = stack.use(createRawMemfd(CONTROL_SIZE, { name: `bench-wake-${id}` }));
    const args = [id, control.path, String(samples)];
    let write: (i: number) => void;
    if (id.startsWith("cell-")) {
      const region = stack.use(createMemfdRegion({ size: 256, label: "bench-cell" }));
      const cell = stack.use(openStateCell(region, { writer: true }));
      args.push(region.name);
      write = (i) => cell.write(i);
    } else {
      const sequence = control.word(SEQUENCE_WORD);
      write = () => {
        Atomics.add(control.words, SEQUENCE_WORD, 1);
        sequence.wake();
      };
    }
    const reader = stack.use(
      id === "c-reader"
        ? spawnProgram(await work.compile("bench/c/futex_reader.c"), args.slice(1))
        : spawnDeno(script, args),
    );
    members.push({ id, reader, control, stamps: new BigInt64Array(control.buffer), write });
  }
  for (const { reader } of members) await reader.nextLine();
  const order = [...members];
  for (let i = 1; i <= samples; i++) {
    shuffle(order);
    for (const { reader, control, stamps, write } of order) {
      await gap(reader, { words: control.words, count: i - 1, regime: "asleep" });
      stamp(stamps);
      write(i);
    }
  }
  const reports = new Map<string, WakeReport>();
  for (const { id, reader } of members) {
    reports.set(id, id === "c-reader" ? await cReport(reader, samples) : await report(reader, 0));
  }
  return reports;
}

/** Puts `items` in a random order, in place (Fisher-Yates). */
function shuffle<T>(items: T[]): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
}

/** The raw readers' writer: stamps, moves the sequence word and wakes it, `changes` times. */
async function writeChanges(
  reader: Child,
  { control, changes, regime }: { control: RawSharedMemory; changes: number; regime: Regime },
): Promise<void> {
  const words = control.words;
  const longWords = new BigInt64Array(control.buffer);
  const sequence = control.word(SEQUENCE_WORD);
  for (let i = 1; i <= changes; i++) {
    await gap(reader, { words, count: i - 1, regime: gapOf(regime, i) });
    stamp(longWords);
    Atomics.add(words, SEQUENCE_WORD, 1);
    sequence.wake();
  }
}

async function viaSocket(
  work: WorkDir,
  { control, args, samples }: { control: RawSharedMemory; args: string[]; samples: number },
): Promise<WakeReport> {
  const path = work.file(`wake-${crypto.randomUUID().slice(0, 8)}.sock`);
  using listener = Deno.listen({ transport: "unix", path });
  await using reader = spawnDeno(`${PEERS}wake_reader.ts`, [...args, path], {
    permissions: socketPermissions(path),
  });
  const connection = await Promise.race([
    listener.accept(),
    reader.succeeded().then(() => {
      throw new Error(`The socket reader ended before it connected:\n${reader.transcript}`);
    }),
  ]);
  try {
    await reader.nextLine();
    for (let i = 1; i <= samples; i++) {
      await gap(reader, { words: control.words, count: i - 1, regime: "asleep" });
      await connection.write(stampBytes());
    }
    return await report(reader, 0);
  } finally {
    connection.close();
    await Deno.remove(path).catch(() => {}); // Deno may remove it when the listener closes
  }
}

/** The readers measured in `regime` here: kernels before 5.16 have no futex_waitv to time. */
function readersOf(regime: Regime): Reader[] {
  return READERS.filter((reader) =>
    reader.regimes.includes(regime) && (reader.id !== "raw-waitv" || futexHub().pooled)
  );
}

/** The wake-up latency case. */
export const wakeLatency: BenchCase = {
  id: "wake",
  steps: (config) =>
    config.runs *
    (GROUPS.length + ALL.reduce((total, regime) => total + readersOf(regime).length, 0)),
  async run(context: CaseContext): Promise<void> {
    const { config, work, figures } = context;
    for (const regime of ALL) {
      const readers = readersOf(regime);
      const samples = samplesFor(regime, config.quick);
      const results = await interleaved(
        context,
        readers.map((reader) => ({
          id: reader.id,
          label: `wake-up, ${regime}: ${reader.id}`,
          measure: () => measure(work, { readerId: reader.id, regime, samples }),
        })),
      );
      const section: SectionId = `wake-${regime}`;
      for (const reader of readers) {
        const reports = results.get(reader.id) ?? [];
        figures.add(
          { id: `${section}.${reader.id}`, section, label: reader.label, unit: "us" },
          summarizeLatencies(reports.map((r) => r.latenciesNs.map((ns) => ns / 1000)), section),
        );
        if (reports.every((r) => r.spinNs !== undefined)) {
          figures.add(
            {
              id: `${section}.${reader.id}.spin`,
              section,
              label: `${reader.label}: time spent spinning`,
              unit: "us/event",
            },
            summarizeRuns(reports.map((r) => (r.spinNs ?? 0) / 1000 / r.latenciesNs.length)),
          );
        }
      }
    }
    const groups = await interleaved(
      context,
      GROUPS.map((group) => ({
        id: group.id,
        label: `wake-up, the ${group.id} waits woken in turn`,
        measure: () => measureGroup(work, { group, samples: samplesFor("asleep", config.quick) }),
      })),
    );
    const section: SectionId = "wake-paired";
    for (const group of GROUPS) {
      const runs = groups.get(group.id) ?? [];
      for (const id of membersOf(group)) {
        const reader = READERS.find((reader) => reader.id === id);
        figures.add(
          { id: `${section}.${id}`, section, label: reader?.label ?? id, unit: "us" },
          summarizeLatencies(
            runs.map((reports) => (reports.get(id)?.latenciesNs ?? []).map((ns) => ns / 1000)),
            section,
          ),
        );
      }
    }
  },
};
