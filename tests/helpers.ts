/**
 * Shared test helpers: permission-gated registration, temporary directories and names that are
 * always cleaned up, and child processes that are always stopped.
 *
 * @module
 */

import { assertRejects, assertStringIncludes, assertThrows } from "@std/assert";
import { removeShm } from "../mod.ts";
import * as C from "../ffi/constants.ts";
import {
  closeFd,
  effectiveUid,
  listDirectory,
  openPath,
  processState,
  readFileText,
  readLink,
  writeFd,
} from "../ffi/posix.ts";

// deno-lint-ignore no-explicit-any
type ErrorClass<E extends Error> = abstract new (...args: any[]) => E;

/** `assertThrows` for `ErrorClass`, and the message names every one of `parts`. */
export function assertThrowsWith<E extends Error>(
  fn: () => unknown,
  ErrorClass: ErrorClass<E>,
  ...parts: string[]
): E {
  const error = assertThrows(fn, ErrorClass);
  for (const part of parts) assertStringIncludes(error.message, part);
  return error;
}

/** `assertRejects` for `ErrorClass`, and the message names every one of `parts`. */
export async function assertRejectsWith<E extends Error>(
  fn: () => PromiseLike<unknown>,
  ErrorClass: ErrorClass<E>,
  ...parts: string[]
): Promise<E> {
  const error = await assertRejects(fn, ErrorClass);
  for (const part of parts) assertStringIncludes(error.message, part);
  return error;
}

/** A program a test runs; see {@link requires}. */
export interface Program {
  /** The program's name, looked up on PATH. */
  program: string;
}

/** For {@link testWith}: the test also needs `program` on PATH (such as gcc). */
export function requires(program: string): Program {
  return { program };
}

function onPath(program: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((dir) => {
    try {
      const stat = Deno.statSync(`${dir || "."}/${program}`);
      return stat.isFile && ((stat.mode ?? 0) & 0o111) !== 0;
    } catch {
      return false;
    }
  });
}

/**
 * Registers a test that is ignored, with the reason in its name, unless `needs` are met: the
 * permissions granted, and every {@link requires} program on PATH (looking needs `--allow-env`
 * and `--allow-read`).
 */
export function testWith(
  needs: readonly (Deno.PermissionName | Program)[],
  name: string,
  fn: (t: Deno.TestContext) => void | Promise<void>,
): void {
  const programs = needs.filter((need): need is Program => typeof need === "object");
  const permissions = needs.filter((need): need is Deno.PermissionName => typeof need === "string");
  if (programs.length > 0) permissions.push("env", "read");
  const missing = [...new Set(permissions)].filter((permission) =>
    Deno.permissions.querySync({ name: permission } as Deno.PermissionDescriptor).state !==
      "granted"
  ).map((p) => `--allow-${p}`);
  if (missing.length === 0) {
    missing.push(...programs.filter((p) => !onPath(p.program)).map((p) => `${p.program} on PATH`));
  }
  Deno.test({
    name: missing.length === 0 ? name : `${name} [ignored: needs ${missing.join(" ")}]`,
    ignore: missing.length > 0,
    fn,
  });
}

/** Whether this process runs as root (can chown files to another user). */
export function isRoot(): boolean {
  return effectiveUid() === 0;
}

/** Runs `fn` with a fresh private directory that is removed afterwards, whatever happens. */
export async function withTempDir<T>(fn: (dir: string) => T | Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "mmap-ipc-test-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

let counter = 0;

/** A POSIX shm name no other test uses. */
export function uniqueShmName(): string {
  return `/mmap-ipc-test-${Deno.pid}-${++counter}-${crypto.randomUUID().slice(0, 8)}`;
}

/** Runs `fn` with a fresh shm name that is removed afterwards if it was created. */
export async function withShmName<T>(fn: (name: string) => T | Promise<T>): Promise<T> {
  const name = uniqueShmName();
  try {
    return await fn(name);
  } finally {
    removeShm(name);
  }
}

/** A System V key no other test uses (the caller removes the segment). */
export function uniqueSysvKey(): number {
  return 0x4d490000 + ((Deno.pid * 64 + ++counter) & 0xffff);
}

/** The directory of this file, for fixtures. */
export const TESTS_DIR: string = new URL(".", import.meta.url).pathname;

/** One line a child printed. */
export interface OutputLine {
  stream: "stdout" | "stderr";
  text: string;
}

/** A running child process whose output is recorded line by line. */
export class ChildProcess implements AsyncDisposable {
  readonly process: Deno.ChildProcess;
  /** Every line printed so far, both streams, in order of arrival. */
  readonly lines: OutputLine[] = [];
  readonly #listeners = new Set<() => void>();
  readonly #pumps: Promise<void>;
  #stdoutCursor = 0;
  #ended = false;
  #status: Promise<Deno.CommandStatus>;

  constructor(command: Deno.Command) {
    this.process = command.spawn();
    this.#pumps = Promise.all([
      this.#pump(this.process.stdout, "stdout"),
      this.#pump(this.process.stderr, "stderr"),
    ]).then(() => {
      this.#ended = true;
      this.#notify();
    });
    this.#status = this.process.status;
  }

  async #pump(stream: ReadableStream<Uint8Array>, name: OutputLine["stream"]): Promise<void> {
    for await (const text of lines(stream)) {
      this.lines.push({ stream: name, text });
      this.#notify();
    }
  }

  #notify(): void {
    for (const listener of this.#listeners) listener();
  }

  /** The child's pid. */
  get pid(): number {
    return this.process.pid;
  }

  /** Everything printed so far, as one string (for assertion messages). */
  get transcript(): string {
    return this.lines.map((line) => `${line.stream === "stderr" ? "! " : "  "}${line.text}`).join(
      "\n",
    );
  }

  /** Resolves once `ready()` returns a value, the output ends, or `timeoutMs` passes. */
  async #until<T>(ready: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    const found = ready();
    if (found !== undefined) return found;
    return await new Promise<T>((resolve, reject) => {
      const check = (): void => {
        const value = ready();
        if (value !== undefined) finish(() => resolve(value));
        else if (this.#ended) {
          finish(() =>
            reject(new Error(`pid ${this.pid} ended before ${what}:\n${this.transcript}`))
          );
        }
      };
      const timer = setTimeout(
        () =>
          finish(() =>
            reject(
              new Error(
                `No ${what} from pid ${this.pid} within ${timeoutMs} ms:\n${this.transcript}`,
              ),
            )
          ),
        timeoutMs,
      );
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        this.#listeners.delete(check);
        settle();
      };
      this.#listeners.add(check);
      check();
    });
  }

  /** The next line on stdout; throws if the child ends first or takes over `timeoutMs`. */
  nextLine(timeoutMs = 30_000): Promise<string> {
    return this.#until(
      () => {
        const stdout = this.lines.filter((line) => line.stream === "stdout");
        if (stdout.length > this.#stdoutCursor) return stdout[this.#stdoutCursor++].text;
        return undefined;
      },
      timeoutMs,
      "a line on stdout",
    );
  }

  /**
   * Waits for a line (either stream) matching `pattern` at index `since` or later; returns the
   * match and the line's index.
   */
  waitFor(
    pattern: RegExp,
    options: { since?: number; timeoutMs?: number } = {},
  ): Promise<{ index: number; match: RegExpExecArray }> {
    const since = options.since ?? 0;
    return this.#until(
      () => {
        for (let index = since; index < this.lines.length; index++) {
          const match = pattern.exec(this.lines[index].text);
          if (match !== null) return { index, match };
        }
        return undefined;
      },
      options.timeoutMs ?? 30_000,
      `a line matching ${pattern}`,
    );
  }

  /** Lines (either stream) matching `pattern`, from index `since` on. */
  matching(pattern: RegExp, since = 0): string[] {
    return this.lines.slice(since).map((line) => line.text).filter((text) => pattern.test(text));
  }

  /** The exit status, once the child has ended and its output is read. */
  async status(): Promise<Deno.CommandStatus & { stderr: string }> {
    const status = await this.#status;
    await this.#pumps;
    const stderr = this.lines.filter((line) => line.stream === "stderr").map((line) => line.text)
      .join("\n");
    return { ...status, stderr };
  }

  /** Sends `signal` if the child still runs. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    try {
      this.process.kill(signal);
    } catch {
      // Already gone.
    }
  }

  /**
   * Stops the child as a user would (SIGTERM, so it cleans up after itself), and kills it if it
   * has not ended within a grace period; waits for it either way.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    this.kill("SIGTERM");
    const timer = setTimeout(() => this.kill("SIGKILL"), 3_000);
    await this.#status;
    clearTimeout(timer);
    await this.#pumps;
  }
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      yield buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
    }
  }
  if (buffered !== "") yield buffered;
}

/** The project's root directory. */
export const ROOT: string = new URL("../", import.meta.url).pathname;

/** Starts `deno run` on a script with the given permission flags and the project's config. */
export function spawnDeno(
  script: string,
  args: string[],
  options: { permissions?: string[]; env?: Record<string, string>; cwd?: string } = {},
): ChildProcess {
  return new ChildProcess(
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        "--no-prompt",
        "--config",
        `${ROOT}deno.json`,
        ...(options.permissions ?? ["--allow-ffi"]),
        script,
        ...args,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: options.env,
      cwd: options.cwd,
    }),
  );
}

/** Starts any program; with `stdin: "piped"` the test can write to it. */
export function spawnProgram(
  program: string,
  args: string[],
  options: { stdin?: "null" | "piped" } = {},
): ChildProcess {
  return new ChildProcess(
    new Deno.Command(program, {
      args,
      stdin: options.stdin ?? "null",
      stdout: "piped",
      stderr: "piped",
    }),
  );
}

/**
 * How many fds `pid` has open, or only those that refer to `target` (counted with ls(1): Deno
 * guards /proc behind --allow-all).
 */
export function openFdCount(pid: number, target?: string): Promise<number> {
  // Read through libc: an fd closed between listing and reading it is simply not counted.
  let count = 0;
  for (const fd of listDirectory(`/proc/${pid}/fd`)) {
    try {
      if (target === undefined || readLink(`/proc/${pid}/fd/${fd}`) === target) count++;
    } catch {
      // Closed meanwhile.
    }
  }
  return Promise.resolve(count);
}

/** Whether `pid` has ended (gone, or a zombie nobody reaped yet). */
export function processGone(pid: number): boolean {
  const state = processState(pid);
  return state === undefined || state.state === "Z" || state.state === "X";
}

/** Waits until `condition()` holds, checking every 10 ms; throws after `timeoutMs`. */
export async function eventually(
  condition: () => boolean,
  timeoutMs: number,
  what: string,
): Promise<number> {
  const started = performance.now();
  while (!condition()) {
    if (performance.now() - started > timeoutMs) {
      throw new Error(`Not ${what} after ${timeoutMs} ms`);
    }
    await delay(10);
  }
  return performance.now() - started;
}

/**
 * Voluntary context switches of the main thread of `pid`: it runs the event loop, so every
 * wake-up that reaches JavaScript shows here. Read through libc because Deno guards /proc.
 */
export function voluntarySwitches(pid: number): number {
  const status = readFileText(`/proc/${pid}/status`) ?? "";
  const match = /^voluntary_ctxt_switches:\s+(\d+)/m.exec(status);
  if (match === null) throw new Error(`No context switch count for pid ${pid}`);
  return Number(match[1]);
}

/** Voluntary context switches of every thread of `pid` together (Workers and Deno's pools too). */
export function allThreadSwitches(pid: number): number {
  let total = 0;
  for (const task of listDirectory(`/proc/${pid}/task`)) {
    const status = readFileText(`/proc/${pid}/task/${task}/status`) ?? "";
    total += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  }
  return total;
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One writer: open, write, close, like `echo ... > FIFO`; yields while the pipe is full. */
export async function writeAndLeave(path: string, data: string | Uint8Array): Promise<void> {
  const fd = openPath(path, C.O_WRONLY | C.O_NONBLOCK | C.O_CLOEXEC, 0, "write FIFO");
  try {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    for (let offset = 0; offset < bytes.length;) {
      const chunk = bytes.slice(offset, offset + 65536);
      try {
        offset += writeFd(fd, chunk, path);
      } catch (error) {
        if (!(error instanceof Deno.errors.WouldBlock)) throw error;
        await delay(1);
      }
    }
  } finally {
    closeFd(fd);
  }
}
