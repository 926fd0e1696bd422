/**
 * A small typed layer over `@std/cli`'s `parseArgs` for the project's scripts. A script declares
 * each flag once (name, type, default, range or choices, help text) and gets back typed values
 * (camelCase keys, no casts) and a usage text generated from the same declaration.
 * `parseArgs` alone is lenient (unknown flags pass, `--rate abc` is a string, a repeated flag
 * silently wins), so every value is checked here: a bad command line is a {@link UsageError}
 * that lists every problem, by flag.
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";

/** What every flag declaration has. */
export interface FlagBase {
  /** One line of help; defaults, ranges and choices are added from the declaration. */
  readonly help: string;
  /** Only allowed together with this flag (such as `pi`). */
  readonly requires?: string;
  /** A heading to list the flag under in the usage, after the flags without one. */
  readonly group?: string;
  /** What happens when the flag is absent, for the usage, where no fixed default says it. */
  readonly defaultText?: string;
}

/** A switch: `--pi`. */
export interface BooleanFlag extends FlagBase {
  /** The kind of flag. */
  readonly type: "boolean";
}

/** A text value: `--state PATH`. */
export interface StringFlag extends FlagBase {
  /** The kind of flag. */
  readonly type: "string";
  /** The value's placeholder in the usage, such as `PATH`. */
  readonly arg: string;
  /** The value when the flag is absent. */
  readonly default?: string;
  /** The command line must give it. */
  readonly required?: boolean;
  /** Says what is wrong with a value (a rule the flag's name begins), or undefined if nothing. */
  readonly check?: (value: string) => string | undefined;
}

/** One of a fixed set of words: `--log-level L`. */
export interface ChoiceFlag extends FlagBase {
  /** The kind of flag. */
  readonly type: "choice";
  /** The value's placeholder in the usage. */
  readonly arg: string;
  /** The words it accepts. */
  readonly choices: readonly string[];
  /** The value when the flag is absent. */
  readonly default?: string;
}

/** A decimal number in a range: `--rate N`. */
export interface NumberFlag extends FlagBase {
  /** The kind of flag. */
  readonly type: "number";
  /** The value's placeholder in the usage. */
  readonly arg: string;
  /** Only whole numbers. */
  readonly integer?: boolean;
  /** The smallest value accepted. */
  readonly min?: number;
  /** The largest value accepted. */
  readonly max?: number;
  /** The value when the flag is absent. */
  readonly default?: number;
  /** The command line must give it. */
  readonly required?: boolean;
}

/** Any flag declaration. */
export type FlagSpec = BooleanFlag | StringFlag | ChoiceFlag | NumberFlag;

/** A script's flags by their command-line name (`log-level`), without the leading dashes. */
export type FlagTable = Readonly<Record<string, FlagSpec>>;

/** `log-level` becomes `logLevel`. */
export type CamelCase<S extends string> = S extends `${infer Head}-${infer Tail}`
  ? `${Head}${Capitalize<CamelCase<Tail>>}`
  : S;

/** The type a flag's value has after parsing. */
export type FlagValue<F extends FlagSpec> = F extends BooleanFlag ? boolean
  : F extends { readonly type: "choice"; readonly choices: readonly (infer C)[] }
    ? (F extends { readonly default: string } ? C : C | undefined)
  : F extends NumberFlag
    ? (F extends { readonly default: number } | { readonly required: true } ? number
      : number | undefined)
  : F extends { readonly default: string } | { readonly required: true } ? string
  : string | undefined;

/** The parsed values of a flag table, keyed by camelCase name. */
export type FlagValues<T extends FlagTable> = {
  -readonly [K in keyof T & string as CamelCase<K>]: FlagValue<T[K]>;
};

/** At most one of these flags; with `required`, exactly one. */
export interface ExclusiveGroup<K extends string> {
  /** The flags, by command-line name. */
  readonly flags: readonly K[];
  /** One of them must be given. */
  readonly required?: boolean;
  /** They may be given together (with `required`: at least one of them). */
  readonly combinable?: boolean;
  /** Said instead of "give one" when they are combined: why they do not go together. */
  readonly why?: string;
}

/** Everything a script says about its command line. */
export interface CommandSpec<T extends FlagTable> {
  /** The name errors start with, such as `launch`. */
  readonly name: string;
  /** The usage synopsis lines, such as `deno task launch [options]`. */
  readonly synopsis: readonly string[];
  /** What the script does, a short paragraph. */
  readonly description: string;
  /** The flags; `-h`/`--help` is added to every command. */
  readonly flags: T;
  /** Flags that cannot be combined. */
  readonly exclusive?: readonly ExclusiveGroup<keyof T & string>[];
  /** Text after the options, such as how to press the button. */
  readonly footer?: string;
}

/** The parsed values of a command. */
export type CommandFlags<C> = C extends CommandSpec<infer T> ? FlagValues<T> : never;

/** A command line that does not fit its declaration; `problems` has one line per mistake. */
export class UsageError extends Error {
  /** Every problem found, each naming its flag. */
  readonly problems: readonly string[];

  /** Builds the error from its problems. */
  constructor(problems: string[]) {
    super(problems.join("\n"));
    this.name = "UsageError";
    this.problems = problems;
  }
}

/**
 * Declares a command; the `const` type parameter keeps literal types (choices, defaults), so
 * {@link parseFlags} can type the values it returns.
 */
export function defineCommand<const T extends FlagTable>(spec: CommandSpec<T>): CommandSpec<T> {
  for (const [name, flag] of Object.entries(spec.flags)) {
    if (flag.requires !== undefined && spec.flags[flag.requires] === undefined) {
      throw new TypeError(
        `--${name} requires --${flag.requires}, which is no flag of this command`,
      );
    }
  }
  return spec;
}

/** A flag's name as its value is keyed: `mqtt-client-id` gives `mqttClientId`. */
export function camelCase(name: string): string {
  return name.replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase());
}

const DECIMAL = /^-?(?:\d+\.?\d*|\.\d+)$/;
const INTEGER = /^-?\d+$/;

function describeRange(flag: NumberFlag): string | undefined {
  if (flag.min !== undefined && flag.max !== undefined) return `${flag.min} to ${flag.max}`;
  if (flag.min !== undefined) return `at least ${flag.min}`;
  if (flag.max !== undefined) return `at most ${flag.max}`;
  return undefined;
}

function rangeRule(flag: NumberFlag): string {
  if (flag.min !== undefined && flag.max !== undefined) return `from ${flag.min} to ${flag.max}`;
  return describeRange(flag) ?? "a finite number";
}

function orList(words: readonly string[]): string {
  return words.length < 2
    ? words.join("")
    : `${words.slice(0, -1).join(", ")} or ${words[words.length - 1]}`;
}

/** Checks one value; returns the parsed value or a problem. */
function convert(
  name: string,
  flag: FlagSpec,
  raw: string,
): { value: string | number } | { problem: string } {
  const quoted = JSON.stringify(raw);
  if (raw === "") return { problem: `--${name} needs a value` };
  switch (flag.type) {
    case "choice":
      return flag.choices.includes(raw)
        ? { value: raw }
        : { problem: `--${name} must be ${orList(flag.choices)}, not ${quoted}` };
    case "number": {
      // Plain digits only: `1e3`, `0x10` and `Infinity` are numbers to Number(), not here, and
      // the rule says so rather than call them no number at all.
      const pattern = flag.integer ? INTEGER : DECIMAL;
      if (!pattern.test(raw)) {
        const rule = flag.integer ? "a whole number in plain digits" : "a number in plain digits";
        return { problem: `--${name} must be ${rule}, not ${quoted}` };
      }
      const value = Number(raw);
      if (
        !Number.isFinite(value) || (flag.min !== undefined && value < flag.min) ||
        (flag.max !== undefined && value > flag.max)
      ) {
        return { problem: `--${name} must be ${rangeRule(flag)}, not ${raw}` };
      }
      return { value };
    }
    default: {
      const wrong = flag.type === "string" ? flag.check?.(raw) : undefined;
      return wrong === undefined
        ? { value: raw }
        : { problem: `--${name} must be ${wrong}, not ${quoted}` };
    }
  }
}

/**
 * Joins each flag that takes a value to the argument after it (`--state X` to `--state=X`), so
 * that parseArgs takes that argument whatever it looks like: a negative number (`--debounce-ms
 * -5`, which it reads as the flags `-5`) or an empty string (which it also reads as an argument
 * of its own). An argument that is a flag itself (`--x`, `-h`) is left alone: the value is then
 * missing, and said so.
 */
export function joinValues(args: readonly string[], valued: readonly string[]): string[] {
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") return [...joined, ...args.slice(i)];
    const next = args[i + 1];
    if (
      arg.startsWith("--") && valued.includes(arg.slice(2)) && next !== undefined &&
      !next.startsWith("--") && next !== "-h"
    ) {
      joined.push(`${arg}=${next}`);
      i++;
    } else {
      joined.push(arg);
    }
  }
  return joined;
}

/**
 * Parses `args` against `command`. Returns the typed values, or `"help"` when `-h`/`--help` is
 * among them; throws {@link UsageError} listing every problem otherwise.
 */
export function parseFlags<T extends FlagTable>(
  command: CommandSpec<T>,
  args: readonly string[],
): FlagValues<T> | "help" {
  const entries = Object.entries(command.flags) as [string, FlagSpec][];
  const booleans = entries.filter(([, flag]) => flag.type === "boolean").map(([name]) => name);
  const strings = entries.filter(([, flag]) => flag.type !== "boolean").map(([name]) => name);
  const unknown: string[] = [];
  const positionals: string[] = [];
  const joined = joinValues(args, strings);
  // collect: every occurrence is kept, so a repeated flag is seen rather than silently won.
  const parsed = parseArgs(joined, {
    boolean: [...booleans, "help"],
    string: strings,
    collect: [...booleans, ...strings],
    alias: { h: "help" },
    "--": true,
    unknown: (arg: string, key?: string) => {
      if (key === undefined) positionals.push(arg);
      else if (!unknown.includes(arg)) unknown.push(arg);
      return false;
    },
  }) as Record<string, unknown> & { "--"?: string[] };
  // parseArgs reads `--pi=anything` as a switch given (or not: `=false`, `-h0`); a switch takes
  // no value, so that none is read some other way than it was meant (`--help=false` ran the
  // program, `--syslog=false` turned it off where `--syslog=no` was refused).
  const flagArgs = joined.includes("--") ? joined.slice(0, joined.indexOf("--")) : joined;
  const switchValues: string[] = [];
  for (const arg of flagArgs) {
    const long = /^--([^=]+)=(.*)$/s.exec(arg);
    const short = /^-h=?(.+)$/s.exec(arg);
    if (long && [...booleans, "help"].includes(long[1])) {
      switchValues.push(`--${long[1]} takes no value, not ${JSON.stringify(long[2])}`);
    } else if (short) {
      switchValues.push(`-h takes no value, not ${JSON.stringify(short[1])}`);
    }
  }
  if (parsed.help === true && switchValues.length === 0) return "help";

  const problems: string[] = [];
  for (const arg of unknown) problems.push(`unknown flag ${arg.split("=")[0]}`);
  for (const arg of positionals) {
    problems.push(`unexpected argument ${JSON.stringify(arg)}: this script takes flags only`);
  }
  for (const arg of parsed["--"] ?? []) {
    // `deno task launch -- --fifo X`: npm's habit, where a task passes on what follows `--`.
    problems.push(
      `unexpected argument ${JSON.stringify(arg)} after "--": give flags without "--" before them`,
    );
  }
  problems.push(...switchValues);

  const values: Record<string, unknown> = {};
  const given = new Set<string>();
  for (const [name, flag] of entries) {
    const occurrences = (parsed[name] ?? []) as unknown[];
    // A switch given twice says the same thing twice (`deno task launch:pi --pi`); a value
    // given twice may say two things, and one of them would be silently dropped.
    if (occurrences.length > 1 && flag.type !== "boolean") {
      problems.push(`--${name} is given ${occurrences.length} times`);
    }
    const raw = occurrences[occurrences.length - 1];
    if (flag.type === "boolean") {
      values[camelCase(name)] = raw === true;
      if (raw === true) given.add(name);
      continue;
    }
    if (raw === undefined) {
      if ("required" in flag && flag.required) problems.push(`--${name} ${flag.arg} is required`);
      values[camelCase(name)] = flag.default;
      continue;
    }
    given.add(name);
    const result = convert(name, flag, String(raw));
    if ("problem" in result) problems.push(result.problem);
    else values[camelCase(name)] = result.value;
  }

  for (const group of command.exclusive ?? []) {
    const present = group.flags.filter((name) => given.has(name));
    const names = group.flags.map((name) => `--${name}`);
    if (present.length > 1 && !group.combinable) {
      problems.push(
        `${present.map((name) => `--${name}`).join(" and ")} cannot be combined: ${
          group.why ?? "give one"
        }`,
      );
    } else if (present.length === 0 && group.required) {
      problems.push(`give one of ${orList(names)}`);
    }
  }
  for (const [name, flag] of entries) {
    if (flag.requires !== undefined && given.has(name) && !given.has(flag.requires)) {
      const required = command.flags[flag.requires];
      problems.push(`--${name} needs --${flag.requires}${placeholder(required)}`);
    }
  }
  if (problems.length > 0) throw new UsageError(problems);
  return values as FlagValues<T>;
}

function placeholder(flag: FlagSpec): string {
  return flag.type === "boolean" ? "" : ` ${flag.arg}`;
}

function details(flag: FlagSpec): string {
  const parts: string[] = [];
  if (flag.type === "choice") parts.push(orList(flag.choices));
  if (flag.type === "number") {
    const range = describeRange(flag);
    if (range !== undefined) parts.push(range);
  }
  if (flag.type !== "boolean" && flag.default !== undefined) parts.push(`default ${flag.default}`);
  if (flag.defaultText !== undefined) parts.push(`default: ${flag.defaultText}`);
  if ((flag.type === "string" || flag.type === "number") && flag.required) parts.push("required");
  return parts.length === 0 ? flag.help : `${flag.help} (${parts.join("; ")})`;
}

const WIDTH = 100;

/** Wraps `text` at `width` columns, continuing lines at `indent`. */
function wrap(first: string, text: string, indent: number, width: number): string {
  const lines: string[] = [];
  let line = first.padEnd(indent);
  for (const word of text.split(" ")) {
    if (line.trim() !== first.trim() && line.length + 1 + word.length > width) {
      lines.push(line.trimEnd());
      line = " ".repeat(indent);
    }
    line += line === "" || line.endsWith(" ") ? word : ` ${word}`;
  }
  lines.push(line.trimEnd());
  return lines.join("\n");
}

/** The usage text, generated from the declaration. */
export function usage<T extends FlagTable>(command: CommandSpec<T>): string {
  const rows = (Object.entries(command.flags) as [string, FlagSpec][]).map(([name, flag]) => ({
    left: `  --${name}${placeholder(flag)}`,
    text: details(flag),
    group: flag.group,
  }));
  rows.push({ left: "  -h, --help", text: "show this help", group: undefined });
  const indent = Math.max(...rows.map((row) => row.left.length)) + 2;
  const groups = [undefined, ...new Set(rows.map((row) => row.group).filter((g) => g))];
  const sections = groups.map((group) =>
    [
      group === undefined ? "Options:" : `${group}:`,
      ...rows.filter((row) => row.group === group).map((row) =>
        wrap(row.left, row.text, indent, WIDTH)
      ),
    ].join("\n")
  );
  const [first, ...rest] = command.synopsis;
  const paragraph = (text: string): string =>
    text.split("\n").map((line) => wrap("", line, 0, WIDTH)).join("\n");
  return [
    [`Usage: ${first}`, ...rest.map((line) => `       ${line}`)].join("\n"),
    paragraph(command.description),
    ...sections,
    ...(command.footer === undefined ? [] : [paragraph(command.footer)]),
  ].join("\n\n");
}

/**
 * Prints `text` and a newline on stdout or stderr, as `console.log` and `console.error` do, but
 * throws nothing when the stream cannot be written (`2>/dev/full`, a pipe whose reader is gone):
 * the exit status that follows must still say what happened, where the uncaught write error made
 * it 1. Returns whether it printed.
 */
export function printLine(stream: "stdout" | "stderr", text: string): boolean {
  try {
    if (stream === "stdout") console.log(text);
    else console.error(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses `args` (default `Deno.args`) for a script: `--help` prints the usage and exits 0 (1 when
 * it could not be printed); a bad command line prints each problem, then the usage, to stderr
 * and exits 2, whether or not stderr could be written.
 */
export function parseCommandLine<T extends FlagTable>(
  command: CommandSpec<T>,
  args: readonly string[] = Deno.args,
): FlagValues<T> {
  let values: FlagValues<T> | "help";
  try {
    values = parseFlags(command, args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    const problems = error.problems.map((problem) => `${command.name}: ${problem}`).join("\n");
    printLine("stderr", `${problems}\n\n${usage(command)}`);
    Deno.exit(2);
  }
  if (values === "help") {
    if (printLine("stdout", usage(command))) Deno.exit(0);
    printLine("stderr", `${command.name}: could not print the usage on stdout`);
    Deno.exit(1);
  }
  return values;
}
