/**
 * Standard output and standard error that can never block the program that writes to them.
 * Lines go into a bounded queue that one asynchronous writer drains: a console that stops
 * reading (a stalled pipe, a paused terminal) fills the queue, then lines are dropped and
 * counted, and control (signals, presses, restarts) goes on. A write that fails (`/dev/full`,
 * a closed pipe) is reported once on standard error, and output to that stream stops.
 *
 * @module
 */

/** One of the two console streams. */
export type ConsoleStream = "stdout" | "stderr";

/** How much text may wait for a slow console before new lines are dropped. */
const MAX_QUEUED_BYTES = 1 << 20;

const encoder = new TextEncoder();

/** A console stream written without blocking; see the module description. */
export class ConsoleOutput {
  readonly #name: ConsoleStream;
  readonly #file: { write(bytes: Uint8Array): Promise<number> };
  readonly #queue: string[] = [];
  #queuedBytes = 0;
  #draining: Promise<void> | undefined;
  #dropped = 0;
  #failed = false;

  /** @ignore Use {@link consoleOutput}. */
  constructor(name: ConsoleStream) {
    this.#name = name;
    this.#file = name === "stdout" ? Deno.stdout : Deno.stderr;
  }

  /** Queues one line (a newline is added); drops it if the console has stopped reading. */
  writeLine(line: string): void {
    if (this.#failed) return;
    if (this.#queuedBytes + line.length > MAX_QUEUED_BYTES) {
      this.#dropped++;
      return;
    }
    this.#queue.push(line);
    this.#queuedBytes += line.length + 1;
    this.#draining ??= this.#drain();
  }

  /** Resolves once everything queued is written, or after `timeoutMs` if the console stalls. */
  async flush(timeoutMs: number): Promise<void> {
    if (this.#draining === undefined) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#draining,
      new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))),
    ]);
    clearTimeout(timer);
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0 && !this.#failed) {
        let text = "";
        if (this.#dropped > 0) {
          text = `... ${this.#dropped} lines dropped: the ${this.#name} reader was not reading\n`;
          this.#dropped = 0;
        }
        text += this.#queue.splice(0).join("\n") + "\n";
        this.#queuedBytes = 0;
        let bytes = encoder.encode(text);
        while (bytes.length > 0) {
          const written = await this.#file.write(bytes);
          bytes = bytes.subarray(written);
        }
      }
    } catch (error) {
      this.#failed = true;
      this.#queue.length = 0;
      this.#queuedBytes = 0;
      this.#reportFailure(error as Error);
    } finally {
      this.#draining = undefined;
    }
  }

  #reportFailure(error: Error): void {
    if (this.#name === "stderr") return; // nowhere left to say it
    const code = (error as { code?: string }).code;
    const reason = `${error.message}${code && !error.message.includes(code) ? ` (${code})` : ""}`;
    consoleOutput("stderr").writeLine(
      `Cannot write to standard output (stdout): ${reason}; further output there is dropped`,
    );
  }
}

const streams = new Map<ConsoleStream, ConsoleOutput>();

/**
 * Waits (at most `timeoutMs`, since a stalled console must not hold anything up) for queued
 * output to be written, before the process exits.
 */
export async function flushConsole(timeoutMs = 500): Promise<void> {
  await Promise.all([...streams.values()].map((stream) => stream.flush(timeoutMs)));
}

/** The process's non-blocking standard output or standard error. */
export function consoleOutput(name: ConsoleStream): ConsoleOutput {
  let stream = streams.get(name);
  if (stream === undefined) {
    stream = new ConsoleOutput(name);
    streams.set(name, stream);
  }
  return stream;
}
