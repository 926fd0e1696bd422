/**
 * The benchmark's flags: `@std/cli`'s `parseArgs` under a checked layer, because `parseArgs`
 * alone accepts anything. Unknown flags, bad values and flags that make no sense together are
 * a {@link UsageError}, which `bench/run.ts` turns into exit code 2 with the usage.
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { joinValues } from "../app/flags.ts";

/** The usage text. */
export const USAGE = `Usage: deno task bench [options]

Measures the library and the system beside their baselines in one run; every goal is a ratio
against a baseline measured in the same run. A full run takes a few minutes and writes
bench/results.json, bench/results.md and the Performance section of README.md.

Options:
  --quick          a short smoke run (1 run per figure, few samples); writes nothing unless
                   --out is given, never the README
  --runs N         runs per figure, 1 to 50 (default 5; 1 with --quick)
  --only IDS       run only these cases, comma-separated; writes nothing unless --out is
                   given, never the README
                   (CASES)
  --out DIR        write results.json and results.md (soak.json and soak.md with --soak) to
                   DIR instead of bench/, and leave the README alone: its table is the
                   committed bench/results.md
  --no-readme      do not refresh README.md
  --soak           run the system under presses for a long time and compare each child's
                   heap (after a full GC; by space, and by kind of object from heap
                   snapshots) and RSS at the start and the end; not for CI
  --minutes N      how long the soak runs after its warm-up (a fifth of it, at least a
                   minute), 0.05 to 1440 (default 10; only with --soak)
  -h, --help       show this help`;

/** What a run is asked to do. */
export interface BenchConfig {
  /** A short smoke run. */
  quick: boolean;
  /** Runs per figure. */
  runs: number;
  /** The cases to run, by id. */
  cases: string[];
  /** Where results.json and results.md go; undefined: nowhere. */
  outDir: string | undefined;
  /** Refresh the README's Performance section. */
  readme: boolean;
  /** Soak mode, and how long. */
  soak: { minutes: number } | undefined;
}

/** A command line the benchmark cannot run; exit code 2. */
export class UsageError extends Error {
  /** Names the error. */
  override name = "UsageError";
}

const BOOLEAN_FLAGS = ["quick", "readme", "soak", "help"] as const;
const STRING_FLAGS = ["runs", "only", "out", "minutes"] as const;

function number(
  flag: string,
  text: string | undefined,
  range: { min: number; max: number; integer: boolean },
): number | undefined {
  if (text === undefined) return undefined;
  // Plain digits (and a fraction where one is taken), as the programs' own flags: Number()
  // alone takes 1e1, 0x10 and " 5".
  const plain = range.integer ? /^\d+$/ : /^\d+(\.\d+)?$/;
  const value = plain.test(text) ? Number(text) : NaN;
  if (
    !Number.isFinite(value) || (range.integer && !Number.isInteger(value)) ||
    value < range.min || value > range.max
  ) {
    throw new UsageError(
      `--${flag} ${JSON.stringify(text)}: expected ${
        range.integer ? "a whole number" : "a number"
      } from ${range.min} to ${range.max}`,
    );
  }
  return value;
}

/**
 * Parses the command line. `caseIds` are the cases `--only` may name, in the order they run;
 * `root` is the project's directory (for the default output). Returns "help" for `--help`.
 */
export function parseConfig(
  args: string[],
  options: { caseIds: readonly string[]; root: string },
): BenchConfig | "help" {
  for (const arg of args) {
    // parseArgs reads `-h0` as `--help=0`, a full run, as it reads `-h=0`.
    if (/^-h=?./s.test(arg)) throw new UsageError(`-h takes no value: ${arg}`);
    const flag = /^--((?:no-)?[a-z]+)=/.exec(arg)?.[1];
    if (
      flag !== undefined && (BOOLEAN_FLAGS as readonly string[]).includes(flag.replace(/^no-/, ""))
    ) {
      throw new UsageError(`--${flag} takes no value: ${arg}`);
    }
  }
  const unknown: string[] = [];
  const flags = parseArgs(joinValues(args, STRING_FLAGS), {
    boolean: BOOLEAN_FLAGS,
    string: STRING_FLAGS,
    negatable: ["readme"],
    default: { readme: true },
    alias: { h: "help" },
    unknown: (arg) => {
      unknown.push(arg);
      return false;
    },
  });
  for (const flag of STRING_FLAGS) {
    if (flags[flag] !== undefined && typeof flags[flag] !== "string") {
      throw new UsageError(`--${flag} was given in a form it does not take`);
    }
  }
  if (flags.help) return "help";
  // A value that is missing or empty leaves an empty string (joinValues takes -1 as a value).
  for (const flag of STRING_FLAGS) {
    if (flags[flag] === "") throw new UsageError(`--${flag} needs a value`);
  }
  if (unknown.length > 0) {
    throw new UsageError(
      `Unknown ${unknown.length === 1 ? "argument" : "arguments"}: ${unknown.join(" ")}`,
    );
  }
  const quick = flags.quick;
  const runs = number("runs", flags.runs, { min: 1, max: 50, integer: true }) ?? (quick ? 1 : 5);
  let cases = [...options.caseIds];
  if (flags.only !== undefined) {
    const named = flags.only.split(",").map((id) => id.trim()).filter((id) => id !== "");
    const wrong = named.filter((id) => !options.caseIds.includes(id));
    if (named.length === 0 || wrong.length > 0) {
      throw new UsageError(
        `--only ${JSON.stringify(flags.only)}: ${
          named.length === 0 ? "names no case" : `no case called ${wrong.join(", ")}`
        }; the cases are ${options.caseIds.join(", ")}`,
      );
    }
    cases = options.caseIds.filter((id) => named.includes(id));
  }
  const minutes = number("minutes", flags.minutes, { min: 0.05, max: 1440, integer: false });
  if (minutes !== undefined && !flags.soak) throw new UsageError("--minutes needs --soak");
  if (flags.soak && flags.only !== undefined) {
    throw new UsageError("--soak runs the soak alone: leave out --only");
  }
  const partial = quick || flags.only !== undefined || flags.soak;
  const outDir = flags.out ?? (partial ? undefined : `${options.root}bench`);
  return {
    quick,
    runs,
    cases,
    outDir,
    // The README's table goes with bench/results.md: a run written elsewhere (a trial, a probe)
    // must not put its figures under prose that reads the committed run.
    readme: flags.readme && !partial && flags.out === undefined,
    soak: flags.soak ? { minutes: minutes ?? 10 } : undefined,
  };
}

/** The usage text with the case ids filled in. */
export function usage(caseIds: readonly string[]): string {
  return USAGE.replace("CASES", caseIds.join(", "));
}
