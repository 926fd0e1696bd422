/**
 * Tests of `deno task bench`: its statistics, flags, targets, report and minimal ring as units,
 * and one real `--quick` run whose JSON must hold every goal and figure, with every ratio and
 * verdict following from the figures.
 *
 * @module
 */

import {
  assert,
  assertAlmostEquals,
  assertEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { createRawMemfd, openRawMemfd } from "../ffi/raw_futex.ts";
import { parseConfig, UsageError } from "../bench/config.ts";
import { MOSQUITTO_PROGRAMS } from "../bench/broker.ts";
import { censusOf, grewMost } from "../bench/inspector.ts";
import { FigureSet, SECTIONS } from "../bench/figures.ts";
import { MinimalConsumer, MinimalProducer, minimalRingSize } from "../bench/minimal_ring.ts";
import { hasProgram, spawnProgram as spawnBenchProgram } from "../bench/processes.ts";
import { gap } from "../bench/cases/wake_latency.ts";
import { renderMarkdown, replaceReadmeSection, type Results } from "../bench/report.ts";
import { RING_VARIANTS } from "../bench/ring_variants.ts";
import { median, percentile, summarizeLatencies, summarizeRuns } from "../bench/stats.ts";
import { evaluateTargets, holds, TARGETS, type TargetSpec } from "../bench/targets.ts";
import { ROOT } from "./helpers/paths.ts";
import { readFileText } from "../ffi/posix.ts";
import { claimsDirectories } from "../app/runtime_dir.ts";
import { childrenOf, killIfRunning, processGone } from "./helpers/proc.ts";
import { spawnDeno, spawnProgram } from "./helpers/spawn.ts";
import { until } from "./helpers/waiting.ts";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { withTempDir } from "./helpers/temp.ts";

const MQTT_LATENCY_ROWS = [
  "pub-to-sub",
  "press-to-message",
  "set-to-led",
  "press-to-led",
  "press-to-led-alone",
];
const CASES = ["wake", "ring", "in-process", "system", "foreign", "mqtt", "memory", "soak"];

Deno.test("median() and percentile() take the middle and the nearest rank", () => {
  assertEquals(median([3, 1, 2]), 2);
  assertEquals(median([4, 1, 3, 2]), 2.5);
  const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
  assertEquals(percentile(hundred, 0.99), 99);
  assertEquals(percentile(hundred, 0.5), 50);
  assertEquals(percentile([7], 0.99), 7);
  assertThrows(() => median([]), RangeError, "No values");
  assertThrows(() => median([1, NaN]), RangeError, "not all are finite");
  assertThrows(() => percentile([1], 1.5), RangeError, "between 0 and 1");
});

Deno.test("summarizeLatencies() gives the median of run medians, of run p99s, and the range", () => {
  const runs = [[1, 2, 3], [10, 20, 30], [4, 5, 6]];
  assertEquals(summarizeLatencies(runs), {
    median: 5,
    p99: 6,
    min: 2,
    max: 20,
    runs: 3,
    perRun: [2, 20, 5],
    p99PerRun: [3, 30, 6],
  });
  // The runs stay in the order they were made, for ratios taken run by run.
  assertEquals(summarizeRuns([5, 1, 3], "r"), {
    median: 3,
    min: 1,
    max: 5,
    runs: 3,
    perRun: [5, 1, 3],
    rounds: "r",
  });
});

Deno.test("evaluateTargets() takes a ratio run by run only between figures of the same rounds", () => {
  const figures = new FigureSet();
  const add = (id: string, perRun: number[], rounds?: string): void => {
    figures.add(
      { id, section: "ring", label: id, unit: "msg/s" },
      summarizeLatencies(perRun.map((value) => [value]), rounds),
    );
  };
  // The host slowed the second run down for both sides; the third for the baseline only.
  add("a", [10, 30, 20], "r");
  add("b", [10, 10, 40], "r");
  add("c", [10, 10, 40], "other rounds");
  add("d", [10, 10], "r");
  const target = (id: string, baseline: string, stat?: "p99"): TargetSpec => ({
    id,
    title: id,
    figure: { id: "a", stat },
    baseline: { id: baseline, stat },
    source: "test",
  });
  const [paired, p99, unpaired, uneven] = evaluateTargets(figures, [
    target("paired", "b"),
    target("p99", "b", "p99"),
    target("unpaired", "c"),
    target("uneven", "d"),
  ]);
  // Runs' ratios 1, 3 and 0.5: their median, and their range.
  assertEquals([paired.ratio, paired.ratioRange], [1, { min: 0.5, max: 3 }]);
  assertEquals([p99.ratio, p99.ratioRange], [1, { min: 0.5, max: 3 }]);
  // Not measured together: the quotient of the medians (20 / 10), and no range.
  assertEquals([unpaired.ratio, unpaired.ratioRange], [2, null]);
  assertEquals([uneven.ratio, uneven.ratioRange], [2, null]);
});

Deno.test("censusOf() counts a heap snapshot's nodes by kind, and grewMost() names what grew in bytes", () => {
  const snapshot = (nodes: number[]) => ({
    snapshot: {
      meta: {
        node_fields: ["type", "name", "id", "self_size", "edge_count"],
        node_types: [["hidden", "array", "string", "object", "code", "closure"], "string"],
      },
    },
    nodes,
    strings: ["Map", "hello", "onPress", "a longer string"],
  });
  // type, name, id, self_size, edge_count
  const start = censusOf(snapshot([3, 0, 1, 32, 0, 2, 1, 3, 24, 0, 5, 2, 5, 40, 0]));
  assertEquals(start.get("Map (object)"), { count: 1, bytes: 32 });
  assertEquals(start.get("(string)"), { count: 1, bytes: 24 }, "strings by type, not by text");
  assertEquals(start.get("onPress (closure)"), { count: 1, bytes: 40 });
  const end = censusOf(
    snapshot([3, 0, 1, 32, 0, 3, 0, 7, 32, 0, 2, 3, 9, 48, 0, 5, 2, 5, 40, 0, 2, 1, 11, 24, 0]),
  );
  assertEquals(grewMost(start, end), ["(string) +1 (+48 B)", "Map (object) +1 (+32 B)"]);
  assertEquals(grewMost(end, start), [], "nothing grew the other way round");
  assertEquals(grewMost(start, end, 1), ["(string) +1 (+48 B)"]);
});

Deno.test("parseConfig() defaults: a full run writes bench/ and the README", () => {
  const config = parseConfig([], { caseIds: CASES, root: "/p/" });
  assertEquals(config, {
    quick: false,
    runs: 5,
    cases: CASES,
    outDir: "/p/bench",
    readme: true,
    soak: undefined,
  });
});

Deno.test("parseConfig() --quick, --only and --soak write nothing unless --out is given", () => {
  const options = { caseIds: CASES, root: "/p/" };
  const quick = parseConfig(["--quick"], options);
  assert(quick !== "help");
  assertEquals([quick.runs, quick.outDir, quick.readme], [1, undefined, false]);
  const only = parseConfig(["--only", "soak,wake", "--out", "/tmp/x", "--runs=3"], options);
  assert(only !== "help");
  assertEquals([only.cases, only.outDir, only.readme, only.runs], [
    ["wake", "soak"],
    "/tmp/x",
    false,
    3,
  ]);
  const soak = parseConfig(["--soak", "--minutes", "0.5"], options);
  assert(soak !== "help");
  assertEquals([soak.soak, soak.readme], [{ minutes: 0.5 }, false]);
  assertEquals(parseConfig(["-h"], options), "help");
  const noReadme = parseConfig(["--no-readme"], options);
  assert(noReadme !== "help");
  assertEquals(noReadme.readme, false);
});

Deno.test("parseConfig() a full run with --out writes there and leaves the README alone", () => {
  const config = parseConfig(["--out", "/tmp/trial"], { caseIds: CASES, root: "/p/" });
  assert(config !== "help");
  assertEquals([config.cases, config.outDir, config.readme], [CASES, "/tmp/trial", false]);
});

Deno.test("parseConfig() rejects unknown flags, bad values and flags that do not go together", () => {
  const options = { caseIds: CASES, root: "/p/" };
  const cases: [string[], string][] = [
    [["--fast"], "Unknown argument: --fast"],
    [["--quick=no"], "--quick takes no value"],
    [["--no-readme=x"], "--no-readme takes no value"],
    [["-h=0"], "-h takes no value"],
    [["-h0"], "-h takes no value: -h0"],
    [["--quick", "-hfalse"], "-h takes no value"],
    [["--runs", "1e1"], '--runs "1e1": expected a whole number from 1 to 50'],
    [["--runs", "0x3"], "whole number"],
    [["--soak", "--minutes", " 5"], "expected a number from 0.05 to 1440"],
    [["extra"], "Unknown argument: extra"],
    [["--runs", "x"], '--runs "x": expected a whole number from 1 to 50'],
    [["--runs=0"], "--runs"],
    [["--runs", "2.5"], "whole number"],
    [["--runs"], "--runs needs a value"],
    [["--only", "rings"], "no case called rings"],
    [["--only", ","], "names no case"],
    [["--minutes", "3"], "--minutes needs --soak"],
    [["--soak", "--minutes", "-1"], '--minutes "-1": expected a number from 0.05 to 1440'],
    [["--runs", "-3"], '--runs "-3": expected a whole number from 1 to 50'],
    [["--runs", "--quick"], "--runs needs a value"],
    [["--soak", "--minutes=-1"], "--minutes"],
    [["--soak", "--only", "wake"], "leave out --only"],
    [["--out", ""], "--out needs a value"],
  ];
  for (const [args, message] of cases) {
    assertThrows(() => parseConfig(args, options), UsageError, message, args.join(" "));
  }
});

function figureSet(values: Record<string, number>): FigureSet {
  const figures = new FigureSet();
  for (const [id, value] of Object.entries(values)) {
    figures.add(
      { id, section: "ring", label: id, unit: "msg/s" },
      { median: value, min: value, max: value, runs: 1, p99: value * 2 },
    );
  }
  return figures;
}

Deno.test("evaluateTargets() computes each ratio and verdict from the figures", () => {
  const targets: TargetSpec[] = [
    {
      id: "ratio",
      title: "a ratio goal",
      figure: { id: "a" },
      baseline: { id: "b" },
      goal: { on: "ratio", op: ">=", bound: 0.7 },
      source: "test",
    },
    {
      id: "figure",
      title: "a goal on the figure's p99",
      figure: { id: "a", stat: "p99" },
      goal: { on: "figure", op: "<", bound: 100 },
      source: "test",
    },
    {
      id: "missing",
      title: "a goal whose baseline was not measured",
      figure: { id: "a" },
      baseline: { id: "nowhere" },
      goal: { on: "ratio", op: "<=", bound: 1 },
      source: "test",
    },
    {
      id: "comparison",
      title: "a comparison without a goal",
      figure: { id: "a", stat: "p99" },
      baseline: { id: "b", stat: "p99" },
      source: "test",
    },
    {
      id: "comparison-missing",
      title: "a comparison whose figure was not measured",
      figure: { id: "nowhere" },
      baseline: { id: "b" },
      source: "test",
    },
  ];
  const [ratio, figure, missing, comparison, comparisonMissing] = evaluateTargets(
    figureSet({ a: 60, b: 80 }),
    targets,
  );
  assertEquals(ratio.ratio, 0.75);
  assertEquals([ratio.measured, ratio.met], [true, true]);
  assertEquals(figure.figure?.value, 120);
  assertEquals(figure.ratio, null);
  assertEquals([figure.measured, figure.met], [true, false]);
  assertEquals(missing.baseline, null);
  assertEquals([missing.measured, missing.met], [false, null]);
  assertEquals([comparison.figure?.value, comparison.baseline?.value], [120, 160]);
  assertEquals(comparison.ratio, 0.75);
  assertEquals([comparison.measured, comparison.met, comparison.goal], [true, null, undefined]);
  assertEquals([comparisonMissing.measured, comparisonMissing.ratio], [false, null]);
  assertEquals([
    holds(1, { on: "ratio", op: "<=", bound: 1 }),
    holds(1, { on: "figure", op: "<", bound: 1 }),
  ], [
    true,
    false,
  ]);
});

Deno.test("every target names figures the benchmark measures, and ids are unique", () => {
  const ids = TARGETS.map((target) => target.id);
  assertEquals(new Set(ids).size, ids.length);
  for (const target of TARGETS) {
    // A row without a goal is there for its ratio, so it needs a baseline.
    assert(target.goal === undefined ? target.baseline !== undefined : target.goal.bound > 0);
    assert(target.title.length > 0 && target.source.length > 0, target.id);
  }
});

Deno.test("replaceReadmeSection() replaces only what is between the markers", () => {
  const readme = "# T\n\ntext\n<!-- bench:start -->\nold\n<!-- bench:end -->\nafter\n";
  assertEquals(
    replaceReadmeSection(readme, "new\n"),
    "# T\n\ntext\n<!-- bench:start -->\n\nnew\n\n<!-- bench:end -->\nafter\n",
  );
  assertThrows(() => replaceReadmeSection("# no markers\n", "x"), Error, "bench:start");
});

Deno.test("renderMarkdown() shows measured goals with their verdicts and every figure", () => {
  const figures = figureSet({
    "ring.64.library": 1e6,
    "ring.64.minimal": 2e6,
    "mqtt.press-to-message": 3e3,
    "mqtt.pub-to-sub": 1e3,
  });
  const results: Results = {
    date: "2026-01-02T03:04:05.000Z",
    machine: { cpu: "CPU", cores: 2, kernel: "6.1", deno: "2.9.6" },
    args: ["--quick"],
    quick: true,
    runs: 1,
    cases: ["ring", "mqtt"],
    skipped: [{ id: "soak", reason: "needs a rest" }],
    targets: evaluateTargets(figures),
    figures: figures.all(),
  };
  const markdown = renderMarkdown(results);
  assertStringIncludes(markdown, "`deno task bench --quick`");
  // A ratio taken run by run shows the range of the runs' ratios.
  const ranged = renderMarkdown({
    ...results,
    targets: [{ ...results.targets[0], ratioRange: { min: 0.25, max: 0.75 } }],
  });
  assertStringIncludes(ranged, "| 0.50x | 0.25x to 0.75x | ratio >= 0.7x |");
  assertStringIncludes(
    markdown,
    "| 1.00 M msg/s | 2.00 M msg/s | 0.50x | - | ratio >= 0.7x | **missed** |",
  );
  assertStringIncludes(markdown, "Goals: 0 of 1 met; ");
  assertStringIncludes(markdown, `not measured in this run`);
  // Both MQTT comparisons (p50 and p99) of press to message, shown with no goal and no verdict.
  assertStringIncludes(markdown, "2 more rows compare a figure with its baseline");
  assertStringIncludes(markdown, "| 3.0 k msg/s | 1.0 k msg/s | 3.00x | - | none set | - |");
  assertStringIncludes(markdown, "Not run here: the soak case, which needs a rest.");
  assertStringIncludes(markdown, "| ring.64.minimal | 2.00 M msg/s |");
});

Deno.test("the minimal ring moves messages in order, across its end, and says when full or empty", () => {
  const capacity = 256;
  using memory = createRawMemfd(minimalRingSize(capacity));
  using other = openRawMemfd(memory.path, minimalRingSize(capacity));
  const producer = new MinimalProducer(memory);
  const consumer = new MinimalConsumer(other);
  const into = new Uint8Array(100);
  assertEquals(consumer.tryReceiveInto(into), -1);
  let sent = 0;
  let received = 0;
  // Lengths that do not divide the capacity, so records wrap across the end of the ring.
  for (let round = 0; round < 50; round++) {
    const message = new Uint8Array(1 + (round * 37) % 97).fill(sent & 255);
    while (!producer.trySend(message)) {
      const length = consumer.tryReceiveInto(into);
      assert(length > 0, "the ring was full and empty at once");
      assertEquals(into[length - 1], received++ & 255);
    }
    sent++;
  }
  for (let length; (length = consumer.tryReceiveInto(into)) >= 0;) {
    assertEquals(into[0], received & 255);
    assertEquals(into[length - 1], received++ & 255);
  }
  assertEquals(received, sent);
  assertThrows(() => producer.trySend(new Uint8Array(capacity)), RangeError, "cannot fit");
  assertThrows(() => minimalRingSize(100), RangeError, "power of two");
});

testWith(
  NEEDS.children,
  "the wake-up writer says a reader that ended before taking its change, with its exit status and output, whether it sleeps or spins between changes",
  async () => {
    for (const regime of ["asleep", "busy"] as const) {
      await using reader = spawnBenchProgram("sh", [
        "-c",
        "echo ready; sleep 0.3; echo 'reader broke' >&2; exit 3",
      ]);
      await reader.nextLine();
      // The control words, where the reader would count the changes it took: none.
      const words = new Int32Array(64);
      const error = await assertRejects(() => gap(reader, { words, count: 1, regime }), Error);
      // Not the writer's 30 s deadline ("took 0 of 1 changes in time"): the end itself.
      assertStringIncludes(error.message, "exited with 3", regime);
      assertStringIncludes(error.message, "! reader broke", regime);
    }
  },
);

testWith(
  NEEDS.children,
  "an interrupted bench stops the broker once the processes that use it have gone, not at the same moment",
  async () => {
    await withTempDir(async (dir) => {
      await using fixture = spawnDeno(`${ROOT}tests/fixtures/bench_abandon.ts`, [`${dir}/seen`], {
        permissions: ["--allow-run", "--allow-read", "--allow-ffi"],
      });
      assertEquals((await fixture.status()).code, 0, fixture.transcript);
      assertEquals(fixture.matching(/^the broker /), [
        "the broker at the bridge's SIGTERM: running",
        "the broker ended by SIGTERM",
      ], fixture.transcript);
    });
  },
);

testWith(NEEDS.children, "bench/run.ts exits 2 with the usage on a bad flag", async () => {
  for (const args of [["--bogus"], ["--runs", "zero"], ["--only", "nothing"]]) {
    const result = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--allow-all", `${ROOT}bench/run.ts`, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(result.stderr);
    assertEquals(result.code, 2, stderr);
    assertStringIncludes(stderr, "Usage: deno task bench");
    assertStringIncludes(stderr, args[0]);
  }
});

testWith(
  [...NEEDS.childrenAndFiles, requires("gcc")],
  "bench/run.ts --quick measures every figure and computes every ratio from them",
  async () => {
    await withTempDir(async (dir) => {
      const result = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--quiet", "--allow-all", `${ROOT}bench/run.ts`, "--quick", "--out", dir],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(result.stderr);
      assertEquals(result.code, 0, stderr);
      const results = JSON.parse(await Deno.readTextFile(`${dir}/results.json`)) as Results;
      assertStringIncludes(await Deno.readTextFile(`${dir}/results.md`), "Goals: ");
      assertEquals(results.quick, true);

      // The MQTT case needs mosquitto; without it, it is skipped with the reason, and only it.
      const mqttHere = MOSQUITTO_PROGRAMS.every(hasProgram);
      assertEquals(
        results.skipped.map((c) => c.id),
        mqttHere ? [] : ["mqtt"],
        JSON.stringify(results.skipped),
      );
      const skipped = (id: string): boolean => !mqttHere && id.startsWith("mqtt");

      const figures = new Map(results.figures.map((figure) => [figure.id, figure]));
      for (const section of SECTIONS) {
        if (skipped(section.id)) continue;
        assert(results.figures.some((f) => f.section === section.id), `no figure in ${section.id}`);
      }
      if (mqttHere) {
        for (const row of MQTT_LATENCY_ROWS) {
          assert(figures.get(`mqtt.${row}`)?.p99 !== undefined, `mqtt.${row} has no p99`);
        }
        for (const row of ["rate", "rss-before", "rss-peak", "rss-after"]) {
          assert(figures.has(`mqtt.flood.${row}`), `mqtt.flood.${row} is missing`);
        }
      }
      for (const size of [64, 4096, 65536]) {
        for (
          const id of [...RING_VARIANTS.map((v) => v.id), "memcpy", "library", "library-zerocopy"]
        ) {
          assert(figures.has(`ring.${size}.${id}`), `ring.${size}.${id} is missing`);
        }
      }
      for (const figure of results.figures) {
        assert(
          Number.isFinite(figure.median) && figure.median >= 0,
          `${figure.id}: ${figure.median}`,
        );
        assert(figure.min <= figure.median && figure.median <= figure.max, figure.id);
      }

      assertEquals(results.targets.map((t) => t.id), TARGETS.map((t) => t.id));
      for (const target of results.targets) {
        const spec = TARGETS.find((t) => t.id === target.id);
        assert(spec !== undefined);
        if (skipped(spec.figure.id)) {
          assertEquals([target.measured, target.figure, target.met], [false, null, null]);
          continue;
        }
        assert(target.measured && target.figure !== null, `${target.id} was not measured`);
        const stat = (id: string, which = "median"): number | undefined => {
          const figure = figures.get(id);
          return which === "p99" ? figure?.p99 : figure?.median;
        };
        assertEquals(target.figure.value, stat(spec.figure.id, spec.figure.stat));
        if (spec.baseline !== undefined) {
          assert(target.baseline !== null && target.ratio !== null, `${target.id} has no ratio`);
          assertEquals(target.baseline.value, stat(spec.baseline.id, spec.baseline.stat));
          // One run (--quick): no ratio is taken run by run.
          assertEquals(target.ratioRange, null, target.id);
          assertAlmostEquals(target.ratio, target.figure.value / target.baseline.value, 1e-9);
        }
        if (spec.goal === undefined) {
          assertEquals(target.met, null, `${target.id} has no goal to meet`);
          continue;
        }
        const judged = spec.goal.on === "ratio" ? target.ratio : target.figure.value;
        assertEquals(target.met, holds(judged ?? NaN, spec.goal), target.id);
      }
    });
  },
);

testWith(
  ["run", "read", "write"],
  "bench/run.ts skips the MQTT case with the reason where mosquitto is not on PATH",
  async () => {
    await withTempDir(async (dir) => {
      // An empty PATH directory: no mosquitto, whatever this machine has.
      const empty = `${dir}/bin`;
      await Deno.mkdir(empty);
      const result = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--quiet",
          "--allow-all",
          `${ROOT}bench/run.ts`,
          "--only",
          "mqtt",
          "--out",
          dir,
        ],
        env: { PATH: empty },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(result.stderr);
      assertEquals(result.code, 0, stderr);
      const reason = "needs mosquitto, mosquitto_pub, mosquitto_sub on PATH";
      assertStringIncludes(stderr, `bench: skipping the mqtt case: it ${reason}`);
      const results = JSON.parse(await Deno.readTextFile(`${dir}/results.json`)) as Results;
      assertEquals(results.cases, []);
      assertEquals(results.skipped.map((c) => c.id), ["mqtt"]);
      assertStringIncludes(results.skipped[0].reason, reason);
      assertEquals(results.figures, []);
      assert(results.targets.every((target) => !target.measured && target.met === null));
      assertStringIncludes(
        await Deno.readTextFile(`${dir}/results.md`),
        `Not run here: the mqtt case, which ${reason}`,
      );
    });
  },
);

/** Every process under `pid`, children first found first. */
function descendantsOf(pid: number): number[] {
  const found: number[] = [];
  for (let i = -1; i < found.length; i++) {
    found.push(...childrenOf(i < 0 ? pid : found[i]));
  }
  return found;
}

/** The benchmark's work directories in /tmp now. */
function workDirectories(): Set<string> {
  return new Set(
    [...Deno.readDirSync("/tmp")].map((entry) => entry.name).filter((name) =>
      name.startsWith("mmap-ipc-bench-")
    ),
  );
}

testWith(
  [...NEEDS.childrenAndFiles, requires("gcc")],
  "bench/run.ts stopped by Ctrl+C (SIGINT) in mid-run leaves no process of its own running and no work directory behind; a C ring killed leaves no forked half running",
  async () => {
    await withTempDir(async (dir) => {
      const before = workDirectories();
      await using bench = spawnDeno(
        `${ROOT}bench/run.ts`,
        ["--quick", "--only", "ring", "--out", dir],
        { permissions: ["--allow-all"] },
      );
      await bench.waitFor(/\] ring, 4 KiB: /);
      const descendants = descendantsOf(bench.pid);
      Deno.kill(bench.pid, "SIGINT");
      const status = await bench.status();
      assertEquals(status.code, 130, bench.transcript);
      assertStringIncludes(status.stderr, "SIGINT: stopping its processes and removing its files");
      await until(() => descendants.every(processGone), "every process it started gone");
      assertEquals([...workDirectories()].filter((name) => !before.has(name)), []);

      // A C ring between two processes (a fork), its parent killed, as the benchmark kills it.
      const binary = `${dir}/ring_handoff`;
      const built = await new Deno.Command("gcc", {
        args: ["-O2", "-o", binary, `${ROOT}bench/c/ring_handoff.c`],
      }).output();
      assertEquals(built.code, 0, new TextDecoder().decode(built.stderr));
      await using ring = spawnProgram(binary, ["4096", String(10 ** 9)]);
      await until(() => childrenOf(ring.pid).length === 1, "the ring's producer forked");
      const [producer] = childrenOf(ring.pid);
      Deno.kill(ring.pid, "SIGKILL");
      await ring.status();
      await until(() => processGone(producer), "the forked producer gone with its parent");
    });
  },
);

/** Whether `pid` runs `launch.ts` (read through libc: Deno guards /proc behind --allow-all). */
function isLauncher(pid: number): boolean {
  return (readFileText(`/proc/${pid}/cmdline`) ?? "").split("\0").some((arg) =>
    arg.endsWith("/launch.ts")
  );
}

/** The claim records in this user's claims directories that name one of `pids`. */
function recordsOf(pids: number[]): string[] {
  return claimsDirectories().directories.flatMap((directory) =>
    [...Deno.readDirSync(directory)].map((entry) => `${directory}/${entry.name}`).filter(
      (file) => {
        try {
          return pids.includes((JSON.parse(Deno.readTextFileSync(file)) as { pid: number }).pid);
        } catch {
          return false; // gone meanwhile, or empty
        }
      },
    )
  );
}

testWith(
  [...NEEDS.system, ...MOSQUITTO_PROGRAMS.map((program) => requires(program))],
  "bench/run.ts stopped by SIGINT while its launchers run gives them SIGTERM first: they release their claims (no record of theirs is left behind) and nothing of its own runs on",
  async () => {
    let launchers: number[] = [];
    try {
      await withTempDir(async (dir) => {
        await using bench = spawnDeno(
          `${ROOT}bench/run.ts`,
          ["--quick", "--only", "mqtt", "--out", dir],
          { permissions: ["--allow-all"] },
        );
        // The MQTT case's two launchers, each holding its claims.
        await until(() => {
          launchers = descendantsOf(bench.pid).filter(isLauncher);
          return launchers.length === 2 &&
            launchers.every((pid) => recordsOf([pid]).length > 0);
        }, "two launchers running with their claims");
        const descendants = descendantsOf(bench.pid);
        Deno.kill(bench.pid, "SIGINT");
        const status = await bench.status();
        assertEquals(status.code, 130, bench.transcript);
        assert(!status.stderr.includes("bench: failed"), bench.transcript);
        await until(() => descendants.every(processGone), "every process it started gone");
        assertEquals(recordsOf(launchers), [], "claim records the launchers left behind");
      });
    } finally {
      // On a failure, what the dead launchers left goes too: the directory is every launcher's.
      for (const file of recordsOf(launchers.filter(processGone))) Deno.removeSync(file);
    }
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("sh"), requires("sleep")],
  "bench/run.ts stopped by SIGINT while gcc compiles stops gcc too (the commands it runs to their end are tracked like its other children)",
  async () => {
    await withTempDir(async (dir) => {
      // A gcc that never ends: SIGINT comes while the ring case compiles its C programs.
      Deno.writeTextFileSync(`${dir}/gcc`, "#!/bin/sh\nexec sleep 600\n", { mode: 0o755 });
      await using bench = spawnDeno(
        `${ROOT}bench/run.ts`,
        ["--quick", "--only", "ring", "--out", dir],
        {
          permissions: ["--allow-all"],
          env: { PATH: `${dir}:${Deno.env.get("PATH") ?? ""}` },
        },
      );
      let gcc: number[] = [];
      await until(() => {
        gcc = descendantsOf(bench.pid).filter((pid) =>
          (readFileText(`/proc/${pid}/cmdline`) ?? "").startsWith("sleep\u0000600")
        );
        return gcc.length === 1;
      }, "the ring case's gcc running");
      try {
        Deno.kill(bench.pid, "SIGINT");
        const status = await bench.status();
        assertEquals(status.code, 130, bench.transcript);
        await until(() => gcc.every(processGone), "gcc stopped with the benchmark");
      } finally {
        for (const pid of gcc) killIfRunning(pid);
      }
    });
  },
);
