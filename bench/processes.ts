/**
 * The benchmark's child processes: spawned with the project's config, their output recorded line
 * by line with the CLOCK_MONOTONIC time each line arrived, and always stopped when disposed.
 * Also the private work directory, the C programs compiled into it, and FIFO writes.
 *
 * @module
 */

import { delay } from "@std/async/delay";
import * as C from "../ffi/constants.ts";
import { closeFd, monotonicNanos, openPath, processState, writeFd } from "../ffi/posix.ts";
import { STOP_GRACE_MS } from "../app/supervisor.ts";
import { BRIDGE_STOP_GRACE_MS } from "../bridges/mqtt/settings.ts";

/** The project's root directory, with a trailing slash. */
export const ROOT: string = new URL("../", import.meta.url).pathname;
/** Where the benchmark's peer scripts live. */
export const PEERS: string = `${ROOT}bench/peers/`;

/** One line a child printed, and when it arrived (CLOCK_MONOTONIC, ns). */
export interface Line {
  stream: "stdout" | "stderr";
  text: string;
  arrivedNs: bigint;
}

/**
 * The children running now (those whose output is recorded, and the commands run to their end:
 * gcc, openssl, deno fmt), and the work directories there now: see {@link abandonAll}.
 */
const runningChildren = new Set<Child>();
const runningCommands = new Set<Deno.ChildProcess>();
const workDirectories = new Set<string>();

/**
 * How long {@link abandonAll} gives its children after SIGTERM: longer than a launcher gives its
 * slowest child (SIGKILL after {@link STOP_GRACE_MS}, or {@link BRIDGE_STOP_GRACE_MS} for the
 * MQTT bridge), so that one whose child is stuck still releases its claims.
 */
export const ABANDON_GRACE_MS = Math.max(STOP_GRACE_MS, BRIDGE_STOP_GRACE_MS) + 1_000;
/** Set by {@link abandonAll}: a case that runs on meanwhile starts nothing more. */
let abandoning = false;

/** Throws if {@link abandonAll} has begun, rather than start `name` during its grace. */
function refuseWhileAbandoning(name: string): void {
  if (abandoning) throw new Error(`Not starting ${name}: the benchmark is stopping`);
}

/** Sends `signal` to `process` if it still runs. */
function signal(process: Deno.ChildProcess, name: Deno.Signal): void {
  try {
    process.kill(name);
  } catch {
    // already gone
  }
}

/** SIGTERM to each of `processes`, then SIGKILL to those still running after `graceMs`. */
async function stop(processes: Deno.ChildProcess[], graceMs: number): Promise<void> {
  for (const process of processes) signal(process, "SIGTERM");
  if (graceMs > 0 && processes.length > 0) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.allSettled(processes.map((process) => process.status)),
      new Promise((resolve) => timer = setTimeout(resolve, graceMs)),
    ]);
    clearTimeout(timer);
  }
  for (const process of processes) signal(process, "SIGKILL");
}

/**
 * Stops every child still running and removes every work directory: for a run interrupted by a
 * signal, which gives no time to dispose of them one by one as a run that ends does. SIGTERM
 * first, so that a launcher releases its claims (a SIGKILLed one leaves its records behind for
 * the next launcher to sweep), then SIGKILL for whatever still runs after `graceMs`; the
 * children that stop last (the broker) the same way, once the others have gone.
 */
export async function abandonAll(graceMs: number = ABANDON_GRACE_MS): Promise<void> {
  abandoning = true;
  const children = [...runningChildren];
  // What the others use (the MQTT broker) goes once they have gone: a bridge that stops says
  // so to its broker, and one whose broker went first would only try to reach it again.
  const last = children.filter((child) => child.stopsLast).map((child) => child.process);
  await stop(
    [
      ...children.filter((child) => !child.stopsLast).map((child) => child.process),
      ...runningCommands,
    ],
    graceMs,
  );
  await stop(last, graceMs);
  for (const path of workDirectories) {
    try {
      Deno.removeSync(path, { recursive: true });
    } catch {
      // Gone already.
    }
  }
}

/**
 * Runs `program` to its end, as `new Deno.Command(program, options).output()` does (stdin
 * `null`, stdout and stderr piped unless `options` says otherwise), tracked so that
 * {@link abandonAll} stops it too.
 */
export async function runCommand(
  program: string,
  options: Deno.CommandOptions = {},
): Promise<Deno.CommandOutput> {
  refuseWhileAbandoning(program);
  const process = new Deno.Command(program, {
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...options,
  }).spawn();
  runningCommands.add(process);
  try {
    return await process.output();
  } finally {
    runningCommands.delete(process);
  }
}

/** A running child whose output is recorded; disposing it kills it and waits for it. */
export class Child implements AsyncDisposable {
  readonly #process: Deno.ChildProcess;
  readonly #name: string;
  readonly #lines: Line[] = [];
  readonly #listeners = new Set<() => void>();
  readonly #pumps: Promise<void>;
  #stdoutCursor = 0;
  #ended = false;

  /** Stopped after every other child when the run is interrupted (see {@link abandonAll}). */
  readonly stopsLast: boolean;

  /**
   * Spawns `command`; `name` says which child it is in errors. `stopsLast`: the others use it
   * (a broker), so an interrupted run stops it once they have gone.
   */
  constructor(command: Deno.Command, name: string, options: { stopsLast?: boolean } = {}) {
    refuseWhileAbandoning(name);
    this.#process = command.spawn();
    this.#name = name;
    this.stopsLast = options.stopsLast ?? false;
    runningChildren.add(this);
    void this.#process.status.finally(() => runningChildren.delete(this));
    this.#pumps = Promise.all([
      this.#pump(this.#process.stdout, "stdout"),
      this.#pump(this.#process.stderr, "stderr"),
    ]).then(() => {
      this.#ended = true;
      this.#notify();
    });
  }

  /**
   * Each line is stamped when the chunk that ends it is read, before any decoding: the time of
   * arrival, not of the harness's own work (a decode and a line-splitting stream cost it
   * hundreds of microseconds of cold code per line).
   */
  async #pump(stream: ReadableStream<Uint8Array>, name: Line["stream"]): Promise<void> {
    const decoder = new TextDecoder();
    let partial = "";
    for await (const chunk of stream) {
      const arrivedNs = monotonicNanos();
      const parts = (partial + decoder.decode(chunk, { stream: true })).split("\n");
      partial = parts.pop() ?? "";
      for (const part of parts) {
        this.#lines.push({ stream: name, text: part.replace(/\r$/, ""), arrivedNs });
      }
      if (parts.length > 0) this.#notify();
    }
    const rest = partial + decoder.decode();
    if (rest !== "") this.#lines.push({ stream: name, text: rest, arrivedNs: monotonicNanos() });
  }

  #notify(): void {
    for (const listener of this.#listeners) listener();
  }

  /** @internal The process itself, for {@link abandonAll}. */
  get process(): Deno.ChildProcess {
    return this.#process;
  }

  /** The child's pid. */
  get pid(): number {
    return this.#process.pid;
  }

  /**
   * Whether the child has ended: its output closed, or its process gone or a zombie. A look at
   * `/proc` that needs no turn of the event loop, for a harness that spins.
   */
  get gone(): boolean {
    if (this.#ended) return true;
    const state = processState(this.pid)?.state;
    return state === undefined || state === "Z" || state === "X";
  }

  /** How many lines (both streams) have arrived so far. */
  get lineCount(): number {
    return this.#lines.length;
  }

  /** The child's stdin, when it was spawned with `stdin: "piped"`. */
  get stdin(): WritableStream<Uint8Array> {
    return this.#process.stdin;
  }

  /** Everything printed so far, for error messages. */
  get transcript(): string {
    return this.#lines.map((line) => `${line.stream === "stderr" ? "! " : "  "}${line.text}`)
      .join("\n");
  }

  #until<T>(ready: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    const found = ready();
    if (found !== undefined) return Promise.resolve(found);
    return new Promise<T>((resolve, reject) => {
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        this.#listeners.delete(check);
        settle();
      };
      const check = (): void => {
        const value = ready();
        if (value !== undefined) finish(() => resolve(value));
        else if (this.#ended) {
          finish(() =>
            reject(
              new Error(
                `${this.#name} (pid ${this.pid}) ended before ${what}:\n${this.transcript}`,
              ),
            )
          );
        }
      };
      const timer = setTimeout(() =>
        finish(() =>
          reject(
            new Error(
              `No ${what} from ${this.#name} (pid ${this.pid}) in ${timeoutMs} ms:\n${this.transcript}`,
            ),
          )
        ), timeoutMs);
      this.#listeners.add(check);
      check();
    });
  }

  /** The next line on stdout not taken yet. */
  nextLine(timeoutMs = 60_000): Promise<Line> {
    return this.#until(
      () => {
        let seen = 0;
        for (const line of this.#lines) {
          if (line.stream !== "stdout") continue;
          if (seen++ === this.#stdoutCursor) {
            this.#stdoutCursor++;
            return line;
          }
        }
        return undefined;
      },
      timeoutMs,
      "a line on stdout",
    );
  }

  /** The first line (either stream) from index `since` on that matches `pattern`. */
  waitFor(
    pattern: RegExp,
    options: { since?: number; timeoutMs?: number } = {},
  ): Promise<{ line: Line; index: number; match: RegExpExecArray }> {
    const since = options.since ?? 0;
    return this.#until(
      () => {
        for (let index = since; index < this.#lines.length; index++) {
          const match = pattern.exec(this.#lines[index].text);
          if (match !== null) return { line: this.#lines[index], index, match };
        }
        return undefined;
      },
      options.timeoutMs ?? 60_000,
      `a line matching ${pattern}`,
    );
  }

  /** How many lines (either stream) match `pattern`. */
  matching(pattern: RegExp): number {
    return this.#lines.filter((line) => pattern.test(line.text)).length;
  }

  /** The match of the last line so far (either stream) that matches `pattern`, if any. */
  lastMatch(pattern: RegExp): RegExpExecArray | undefined {
    for (let index = this.#lines.length - 1; index >= 0; index--) {
      const match = pattern.exec(this.#lines[index].text);
      if (match !== null) return match;
    }
    return undefined;
  }

  /** Waits for the child to end and throws, with its output, unless it exited with 0. */
  async succeeded(): Promise<void> {
    const status = await this.#process.status;
    await this.#pumps;
    if (status.code !== 0) {
      throw new Error(
        `${this.#name} (pid ${this.pid}) exited with ${
          status.signal ?? status.code
        }:\n${this.transcript}`,
      );
    }
  }

  /** Sends `signal` if the child still runs. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    try {
      this.#process.kill(signal);
    } catch {
      // already gone
    }
  }

  /**
   * Stops the child if it still runs (SIGTERM, so it cleans up after itself; SIGKILL if it has
   * not ended within `graceMs`) and waits for it and its output, so nothing is left behind.
   */
  async stop(graceMs = 3_000): Promise<void> {
    this.kill("SIGTERM");
    const timer = setTimeout(() => this.kill("SIGKILL"), graceMs);
    await this.#process.status;
    clearTimeout(timer);
    await this.#pumps;
  }

  /** {@link Child.stop} with the default grace period. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Whether an executable file called `program` is in a directory of PATH. */
export function hasProgram(program: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((dir) => {
    try {
      const stat = Deno.statSync(`${dir || "."}/${program}`);
      return stat.isFile && ((stat.mode ?? 0) & 0o111) !== 0;
    } catch {
      return false;
    }
  });
}

/** Options for {@link spawnDeno}. */
export interface SpawnDenoOptions {
  /** Permission flags; default `--allow-ffi`. */
  permissions?: string[];
  /** Extra `deno run` flags, such as `--inspect=127.0.0.1:0`. */
  denoFlags?: string[];
  /** Leave out `--quiet` (the inspector prints its address only without it). */
  verbose?: boolean;
  /** Pipe stdin instead of /dev/null. */
  stdin?: boolean;
}

/** The permissions a peer needs to use the Unix socket at `path` (and FFI). */
export function socketPermissions(path: string): string[] {
  return [
    "--allow-ffi",
    `--allow-net=unix:${path}`,
    `--allow-read=${path}`,
    `--allow-write=${path}`,
  ];
}

/** Starts `deno run` on `script` with the project's config. */
export function spawnDeno(script: string, args: string[], options: SpawnDenoOptions = {}): Child {
  const name = script.slice(script.lastIndexOf("/") + 1);
  return new Child(
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...(options.verbose ? [] : ["--quiet"]),
        "--no-prompt",
        "--config",
        `${ROOT}deno.json`,
        ...(options.denoFlags ?? []),
        ...(options.permissions ?? ["--allow-ffi"]),
        script,
        ...args,
      ],
      stdin: options.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }),
    name,
  );
}

/**
 * Starts a compiled program; with `stdin: true` its stdin is a pipe from here, and with
 * `stopsLast` an interrupted run stops it after every other child (see {@link Child}).
 */
export function spawnProgram(
  program: string,
  args: string[],
  options: { stdin?: boolean; stopsLast?: boolean } = {},
): Child {
  return new Child(
    new Deno.Command(program, {
      args,
      stdin: options.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }),
    `${program.slice(program.lastIndexOf("/") + 1)} ${args[0] ?? ""}`.trim(),
    { stopsLast: options.stopsLast },
  );
}

/** The private temporary directory of one benchmark run and the C programs built into it. */
export class WorkDir implements AsyncDisposable {
  readonly path: string;
  readonly #binaries = new Map<string, string>();

  private constructor(path: string) {
    this.path = path;
    workDirectories.add(path);
  }

  /** Makes a fresh private directory (0700). */
  static async create(): Promise<WorkDir> {
    return new WorkDir(await Deno.makeTempDir({ prefix: "mmap-ipc-bench-" }));
  }

  /** A path inside the directory. */
  file(name: string): string {
    return `${this.path}/${name}`;
  }

  /** Compiles `source` (relative to the project root) with gcc -O2, once per run. */
  async compile(source: string): Promise<string> {
    const known = this.#binaries.get(source);
    if (known !== undefined) return known;
    const binary = this.file(source.slice(source.lastIndexOf("/") + 1).replace(/\.c$/, ""));
    let result: Deno.CommandOutput;
    try {
      result = await runCommand("gcc", {
        args: ["-O2", "-Wall", "-o", binary, `${ROOT}${source}`],
      });
    } catch (error) {
      throw new Error(`Cannot compile ${source}: gcc could not be started (${error})`);
    }
    if (!result.success) {
      throw new Error(`Cannot compile ${source}:\n${new TextDecoder().decode(result.stderr)}`);
    }
    this.#binaries.set(source, binary);
    return binary;
  }

  /** Removes the directory and everything in it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.path, { recursive: true });
    workDirectories.delete(this.path);
  }
}

/**
 * One writer on a FIFO, like `echo 0 > FIFO`: open, write, close. The open does not block; while
 * no reader has the FIFO open (the button reopens it after each writer leaves) it is retried,
 * as a shell's blocking open would wait, for up to `timeoutMs`.
 */
export async function writeToFifo(path: string, text: string, timeoutMs = 5000): Promise<void> {
  const giveUp = performance.now() + timeoutMs;
  let fd: number;
  for (;;) {
    try {
      fd = openPath(path, C.O_WRONLY | C.O_NONBLOCK | C.O_CLOEXEC, 0, "write FIFO");
      break;
    } catch (error) {
      if ((error as { code?: string }).code !== "ENXIO" || performance.now() > giveUp) throw error;
      await delay(1);
    }
  }
  try {
    writeFd(fd, new TextEncoder().encode(text), path);
  } finally {
    closeFd(fd);
  }
}
