/**
 * Standard output and standard error that can never block the program that writes to them, and
 * that cost no more than a plain write while the console keeps up.
 *
 * A line is written at once, with write(2) on a non-blocking descriptor of the same pipe or
 * terminal (a second open of it, so the flags of the descriptor other processes share stay as
 * they are). What does not fit goes into a bounded queue, written as the console drains; a
 * console that stops reading (a stalled pipe, a paused terminal) fills it, then lines are
 * dropped and counted, and control (signals, presses, restarts) goes on. A regular file never
 * blocks and is written directly; a socket (journald) is written through Deno's asynchronous
 * API. A write that fails (`/dev/full`, a closed pipe) is reported once on standard error, and
 * output to that stream stops.
 *
 * @module
 */

import * as C from "../ffi/constants.ts";
import { openPath, statFd, writeSome } from "../ffi/posix.ts";

/** One of the two console streams. */
export type ConsoleStream = "stdout" | "stderr";

/** How much text may wait for a slow console before new lines are dropped. */
const MAX_QUEUED_BYTES = 1 << 20;
/** Lines up to about this long are encoded without allocating. */
const SCRATCH_BYTES = 4096;
/** While a non-blocking console is full, how often to try it again. */
const RETRY_MS = 5;

const encoder = new TextEncoder();

/** How to reach the stream: a descriptor written directly, or Deno's asynchronous file. */
type Target = { fd: number } | { file: { write(bytes: Uint8Array): Promise<number> } };

function targetOf(name: ConsoleStream): Target {
  const fd = name === "stdout" ? 1 : 2;
  const file = name === "stdout" ? Deno.stdout : Deno.stderr;
  try {
    const type = statFd(fd, name).type;
    if (type === "file") return { fd };
    if (type === "fifo" || type === "character device") {
      return {
        fd: openPath(`/proc/self/fd/${fd}`, C.O_WRONLY | C.O_NONBLOCK | C.O_CLOEXEC, 0, "open"),
      };
    }
  } catch {
    // Not reopenable (a socket, a closed stream): Deno's own writer never blocks the caller.
  }
  return { file };
}

/** A console stream written without blocking; see the module description. */
export class ConsoleOutput {
  readonly #name: ConsoleStream;
  readonly #target: Target;
  readonly #queue: Uint8Array[] = [];
  readonly #scratch = new Uint8Array(SCRATCH_BYTES);
  #queuedBytes = 0;
  #draining: Promise<void> | undefined;
  #dropped = 0;
  #failed = false;

  /** @ignore Use {@link consoleOutput}. */
  constructor(name: ConsoleStream) {
    this.#name = name;
    this.#target = targetOf(name);
  }

  /** Writes one line (a newline is added), or queues it; drops it if the console stalled. */
  writeLine(line: string): void {
    if (this.#failed) return;
    const text = `${line}\n`;
    let bytes: Uint8Array;
    if (this.#queue.length === 0 && "fd" in this.#target) {
      // A line that fits is encoded into a kept buffer: logging a line allocates no bytes.
      const { read, written: length } = encoder.encodeInto(text, this.#scratch);
      bytes = read === text.length ? this.#scratch : encoder.encode(text);
      const end = read === text.length ? length : bytes.length;
      const written = this.#write(this.#target.fd, bytes, end);
      if (written === end || written === undefined) return;
      // The rest may stay in the kept buffer: it is used only while nothing is queued.
      bytes = bytes.subarray(Math.max(0, written), end);
    } else {
      bytes = encoder.encode(text);
    }
    if (this.#queuedBytes + bytes.length > MAX_QUEUED_BYTES) {
      this.#dropped++;
      return;
    }
    this.#queue.push(bytes);
    this.#queuedBytes += bytes.length;
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

  /** One write(2) of what fits now; undefined once it failed (and was reported). */
  #write(fd: number, bytes: Uint8Array, length: number = bytes.length): number | undefined {
    try {
      return writeSome(fd, bytes, this.#name, length);
    } catch (error) {
      this.#fail(error as Error);
      return undefined;
    }
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0 && !this.#failed) {
        if (this.#dropped > 0) {
          const note =
            `... ${this.#dropped} lines dropped: the ${this.#name} reader was not reading\n`;
          this.#queue.unshift(encoder.encode(note));
          this.#dropped = 0;
        }
        const chunk = this.#queue[0];
        let written: number | undefined;
        if ("fd" in this.#target) {
          written = this.#write(this.#target.fd, chunk);
          if (written === undefined) return;
          if (written < 0) {
            await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
            continue;
          }
        } else {
          try {
            written = await this.#target.file.write(chunk);
          } catch (error) {
            this.#fail(error as Error);
            return;
          }
        }
        if (written === chunk.length) this.#queue.shift();
        else this.#queue[0] = chunk.subarray(written);
        this.#queuedBytes -= written;
      }
    } finally {
      this.#draining = undefined;
    }
  }

  #fail(error: Error): void {
    this.#failed = true;
    this.#queue.length = 0;
    this.#queuedBytes = 0;
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
