/**
 * Shared test helpers: permission-gated registration, temporary directories and names that are
 * always cleaned up, and child processes that are always stopped.
 *
 * @module
 */

import { removeShm } from "../mod.ts";
import { effectiveUid, readSmallFile } from "../ffi/posix.ts";

/** Registers a test that is ignored, with the reason in its name, unless `permissions` are granted. */
export function testWith(
  permissions: Deno.PermissionName[],
  name: string,
  fn: (t: Deno.TestContext) => void | Promise<void>,
): void {
  const missing = permissions.filter((permission) =>
    Deno.permissions.querySync({ name: permission } as Deno.PermissionDescriptor).state !==
      "granted"
  );
  Deno.test({
    name: missing.length === 0
      ? name
      : `${name} [ignored: needs ${missing.map((p) => `--allow-${p}`).join(" ")}]`,
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

/** A running child process whose stdout is read line by line. */
export class ChildProcess implements AsyncDisposable {
  readonly process: Deno.ChildProcess;
  readonly #lines: AsyncIterator<string>;
  readonly #stderr: Promise<string>;
  #status: Promise<Deno.CommandStatus>;

  constructor(command: Deno.Command) {
    this.process = command.spawn();
    this.#lines = lines(this.process.stdout)[Symbol.asyncIterator]();
    this.#stderr = new Response(this.process.stderr).text();
    this.#status = this.process.status;
  }

  /** The child's pid. */
  get pid(): number {
    return this.process.pid;
  }

  /** The next line the child prints; throws if it ends first or takes over `timeoutMs`. */
  async nextLine(timeoutMs = 30_000): Promise<string> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`No line from pid ${this.pid} within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      const next = await Promise.race([this.#lines.next(), timeout]);
      if (next.done) {
        const status = await this.#status;
        throw new Error(
          `pid ${this.pid} ended (code ${status.code}) before printing a line: ${await this
            .#stderr}`,
        );
      }
      return next.value;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Waits for a line that satisfies `match`, skipping others. */
  async lineMatching(match: (line: string) => boolean, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = await this.nextLine(Math.max(1, deadline - Date.now()));
      if (match(line)) return line;
    }
  }

  /** The exit status, with stderr. */
  async status(): Promise<Deno.CommandStatus & { stderr: string }> {
    const status = await this.#status;
    return { ...status, stderr: await this.#stderr };
  }

  /** Sends `signal` if the child still runs. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    try {
      this.process.kill(signal);
    } catch {
      // Already gone.
    }
  }

  /** Kills the child if it still runs and waits for it, so no test leaves a process behind. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.kill("SIGKILL");
    await this.#status;
    await this.#stderr.catch(() => "");
    await this.#lines.return?.();
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

/** Starts `deno run` on a script with the given permission flags. */
export function spawnDeno(
  script: string,
  args: string[],
  options: { permissions?: string[]; env?: Record<string, string>; cwd?: string } = {},
): ChildProcess {
  return new ChildProcess(
    new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", ...(options.permissions ?? ["--allow-ffi"]), script, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: options.env,
      cwd: options.cwd,
    }),
  );
}

/**
 * Voluntary context switches of the main thread of `pid`: it runs the event loop, so every
 * wake-up that reaches JavaScript shows here. Read through libc because Deno guards /proc.
 */
export function voluntarySwitches(pid: number): number {
  const status = readSmallFile(`/proc/${pid}/status`) ?? "";
  const match = /^voluntary_ctxt_switches:\s+(\d+)/m.exec(status);
  if (match === null) throw new Error(`No context switch count for pid ${pid}`);
  return Number(match[1]);
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
