/**
 * A child process a test started, with its output recorded line by line: wait for a line, read
 * what it printed, and stop it (SIGTERM, then SIGKILL) with `await using`.
 *
 * @module
 */

import { guardMs } from "./load.ts";

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
                `Waited for ${what} from pid ${this.pid} for ${timeoutMs} ms in vain:\n${this.transcript}`,
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
  nextLine(timeoutMs: number = guardMs(30_000)): Promise<string> {
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

  /**
   * The exit status, once the child has ended and its output is read. A child still running
   * after `timeoutMs` (default five minutes, room for the emulated VMs) fails the test with its
   * transcript rather than hanging it; the child is left to `await using` to stop.
   */
  async status(
    options: { timeoutMs?: number } = {},
  ): Promise<Deno.CommandStatus & { stderr: string }> {
    const timeoutMs = options.timeoutMs ?? 300_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const guard = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(`pid ${this.pid} still runs after ${timeoutMs} ms:\n${this.transcript}`),
          ),
        timeoutMs,
      );
    });
    // The output too: a grandchild that outlives the child may hold its pipes open.
    const ended = this.#status.then(async (status) => {
      await this.#pumps;
      return status;
    });
    const status = await Promise.race([ended, guard]).finally(() => clearTimeout(timer));
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
