/**
 * Runs a child process for as long as the launcher lives: restarts it with backoff when it
 * dies (or cannot be started), gives up when it keeps crashing, and stops it on request.
 * Children get only the permissions and the environment variables they need, run in a session
 * of their own (a terminal's signals reach the launcher alone), and learn the launcher's pid so
 * the kernel stops them if it dies.
 *
 * @module
 */

import type { Logger } from "./logging.ts";
import { delay as sleep } from "@std/async/delay";
import { TextLineStream } from "@std/streams/text-line-stream";
import { backoffDelay } from "./backoff.ts";
import { CHILD_RUNTIME_ENV, inheritedEnv } from "./child_env.ts";
import { consoleOutput } from "./console_output.ts";
import { ErrorOutput } from "./error_output.ts";
import { EXIT_SHORTAGE } from "./exit_status.ts";
import { isShortage } from "../lib/errors.ts";

/** What to run. */
export interface ChildSpec {
  /** A short name for logs: `button`, `led`. */
  name: string;
  /** The script, as a path. */
  script: string;
  /** `deno run` permission flags, such as `--allow-ffi`. */
  permissions: string[];
  /** The script's own arguments. */
  args: string[];
  /**
   * Arguments its first start alone gets, after `args`: what the launcher knows only then (it
   * has just made the child's FIFO, say).
   */
  firstArgs?: string[];
  /**
   * The launcher's environment variables the child also gets, besides those of its Deno runtime
   * (`CHILD_RUNTIME_ENV`); nothing else of the launcher's environment reaches it.
   */
  env?: readonly string[];
  /**
   * How long it may take to stop after SIGTERM before it is killed with SIGKILL; default
   * {@link STOP_GRACE_MS}. Longer for a child whose own orderly close takes longer (the MQTT
   * bridge says goodbye to its broker).
   */
  stopGraceMs?: number;
}

/** Restart policy. */
export interface RestartPolicy {
  /** First restart delay; each crash in a row doubles it. */
  initialDelayMs: number;
  /** The longest restart delay. */
  maxDelayMs: number;
  /** A child that ran this long counts as healthy again. */
  stableAfterMs: number;
  /** Crashes in a row (each before `stableAfterMs`) after which the launcher gives up. */
  maxCrashes: number;
  /**
   * How long a child that keeps failing for a shortage of a system resource (it exits with
   * {@link EXIT_SHORTAGE}: too many open files, no memory; or the launcher has too few to start
   * it) is restarted before those failures count as crashes: a shortage that passes must not
   * end the whole system, and one that stays is a crash like any other.
   */
  shortageGraceMs: number;
}

/**
 * The defaults: 100 ms doubling to 2 s, five quick crashes in a row end it; a shortage gets
 * 30 s to pass.
 */
export const DEFAULT_RESTART_POLICY: RestartPolicy = {
  initialDelayMs: 100,
  maxDelayMs: 2_000,
  stableAfterMs: 5_000,
  maxCrashes: 5,
  shortageGraceMs: 30_000,
};

/** Thrown when a child keeps crashing: says which, how often, and its last error output. */
export class ChildCrashLoop extends Error {
  /** The child's name. */
  readonly child: string;

  /**
   * Builds the error for `child`; `lastError` is what its error output showed (see
   * `ErrorOutput`), or why it could not be started, and `how` how it ended the last time.
   */
  constructor(child: string, crashes: number, lastError: string, how?: string) {
    super(
      `${child} crashed ${crashes} times in a row${
        how && how !== lastError ? ` (the last time it ${how})` : ""
      }; its last error: ${lastError || "(no output)"}`,
    );
    this.name = "ChildCrashLoop";
    this.child = child;
  }
}

/**
 * How long a stopping launcher gives a child after SIGTERM before it SIGKILLs it, unless its
 * {@link ChildSpec.stopGraceMs} says otherwise.
 */
export const STOP_GRACE_MS = 3_000;

/** Hands each line of `stream` to `write`, as it arrives. */
async function forwardLines(
  stream: ReadableStream<Uint8Array>,
  write: (line: string) => void,
): Promise<void> {
  const lines = stream.pipeThrough(new TextDecoderStream()).pipeThrough(new TextLineStream());
  for await (const line of lines) write(line);
}

/** Supervises one child; see the module description. */
export class Supervisor {
  readonly #spec: ChildSpec;
  readonly #policy: RestartPolicy;
  readonly #log: Logger;
  readonly #config: string;
  readonly #executable: string;
  readonly #env: Record<string, string>;
  readonly #beforeRestart: (() => void) | undefined;
  /** Whether a start was tried: later ones get no `firstArgs`. */
  #spawned = false;
  #child: Deno.ChildProcess | undefined;

  /**
   * @param config the deno.json the child runs with, so it resolves imports wherever the
   *   launcher was started
   * @param executable the Deno binary to start the child with; by default the running one's
   *   path now (the one the launcher's `--allow-run` names): a restart after an upgrade replaced
   *   the binary there starts the new one, and one after it was removed counts as a crash
   * @param beforeRestart runs before each restart, after the pause: puts right what the child
   *   needs (the state it opens) if something else broke it; what it throws is logged
   */
  constructor(
    spec: ChildSpec,
    options: {
      log: Logger;
      config: string;
      policy?: RestartPolicy;
      executable?: string;
      beforeRestart?: () => void;
    },
  ) {
    this.#spec = spec;
    this.#log = options.log;
    this.#config = options.config;
    this.#policy = options.policy ?? DEFAULT_RESTART_POLICY;
    this.#executable = options.executable ?? Deno.execPath();
    this.#env = inheritedEnv([...CHILD_RUNTIME_ENV, ...(spec.env ?? [])]);
    this.#beforeRestart = options.beforeRestart;
  }

  /** The running child's pid, if one runs. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  #spawn(): { child: Deno.ChildProcess; output: Promise<unknown>; errors: ErrorOutput } {
    const { name, script, permissions, args } = this.#spec;
    const firstArgs = this.#spawned ? [] : this.#spec.firstArgs ?? [];
    this.#spawned = true;
    const child = new Deno.Command(this.#executable, {
      args: [
        "run",
        "--quiet",
        "--no-prompt",
        // V8's code cache cost each child 0.6 to 1.3 MiB of RSS (the cache's database and the
        // code it brings back) and its start no measurable time: a child starts once and runs.
        "--no-code-cache",
        "--config",
        this.#config,
        ...permissions,
        script,
        ...args,
        ...firstArgs,
        "--parent-pid",
        String(Deno.pid),
      ],
      clearEnv: true,
      env: this.#env,
      // Not the launcher's working directory, which Deno looks up at every spawn: removed while
      // the launcher runs (rmdir of where it was started), every restart failed. The script,
      // the config and every path a child is given are absolute.
      cwd: "/",
      // A session of its own (setsid): what a terminal sends its foreground group (Ctrl+C, a
      // hang-up) reaches the launcher alone, which stops its children in order. In the
      // launcher's group, a child still starting, before it listened for signals, died of it.
      detached: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const errors = new ErrorOutput();
    // Relayed through queues that never block: a stalled console must not stall control.
    const relayed = forwardLines(child.stdout, (line) => consoleOutput("stdout").writeLine(line))
      .catch(() => {});
    const relayedErrors = forwardLines(child.stderr, (line) => {
      consoleOutput("stderr").writeLine(line);
      errors.add(line);
    }).catch(() => {});
    this.#log.info(`Started ${name} (pid ${child.pid})`);
    return { child, output: Promise.all([relayed, relayedErrors]), errors };
  }

  /**
   * Runs the child until `signal` aborts, restarting it after crashes; resolves once it is
   * stopped, rejects with {@link ChildCrashLoop} when it keeps crashing. A child that cannot be
   * started (the Deno binary gone, say, after an upgrade) counts as a crash, unless for a
   * shortage (this process out of fds, say), which is judged as the child's own.
   */
  async run(signal: AbortSignal): Promise<void> {
    const { name } = this.#spec;
    const backoff = { initialMs: this.#policy.initialDelayMs, maxMs: this.#policy.maxDelayMs };
    let crashes = 0;
    /** When the run of shortage failures going on began, and how many it has had. */
    let shortSince: number | undefined;
    let shortages = 0;
    while (!signal.aborted) {
      const started = performance.now();
      const ran = await this.#runOnce(signal);
      if (signal.aborted) return;
      const ended = performance.now();
      const short = ran.code === EXIT_SHORTAGE;
      // A run that lasted ends any run of crashes, or of shortages, before it.
      if (ended - started >= this.#policy.stableAfterMs) {
        crashes = 0;
        shortSince = undefined;
        shortages = 0;
      }
      if (!short) {
        shortSince = undefined;
        shortages = 0;
      }
      let delay: number;
      // The grace runs from the first failure of the shortage, however long the child ran before.
      if (short && ended - (shortSince ??= ended) < this.#policy.shortageGraceMs) {
        delay = backoffDelay(backoff, shortages++);
        this.#log.warn(
          `${name} is short of a system resource (${
            ran.lastError || ran.how
          }); not counted as a crash while it may pass, restarting in ${delay} ms`,
        );
      } else {
        crashes++;
        if (crashes >= this.#policy.maxCrashes) {
          throw new ChildCrashLoop(name, crashes, ran.lastError, ran.how);
        }
        delay = backoffDelay(backoff, crashes - 1);
        this.#log.warn(`${name} ${ran.how}; restarting in ${delay} ms`);
      }
      await sleep(delay, { signal }).catch(() => {}); // an abort ends the pause early
      if (signal.aborted) return;
      try {
        this.#beforeRestart?.();
      } catch (error) {
        const why = error instanceof Error ? error.message : String(error);
        this.#log.warn(`Before restarting ${name}: ${why}`);
      }
    }
  }

  /** Starts the child once and waits for it to end: how it ended, and what it said. */
  async #runOnce(
    signal: AbortSignal,
  ): Promise<{ how: string; lastError: string; signal: string | null; code: number | null }> {
    let spawned;
    try {
      spawned = this.#spawn();
    } catch (error) {
      const reason = `could not be started with ${JSON.stringify(this.#executable)}: ${
        (error as Error).message
      }`;
      // Out of fds or memory for the spawn is a shortage, as it is when the child says so.
      const code = isShortage(error) ? EXIT_SHORTAGE : null;
      return { how: reason, lastError: reason, signal: null, code };
    }
    const { child, output, errors } = spawned;
    this.#child = child;
    const stop = (): void => void this.#stop(child);
    signal.addEventListener("abort", stop, { once: true });
    const status = await child.status;
    // Its last lines may still be in the pipe: the crash report quotes them (a second at most,
    // in case something else holds the pipe open).
    await Promise.race([output, sleep(1_000)]);
    signal.removeEventListener("abort", stop);
    this.#child = undefined;
    const how = status.signal !== null
      ? `was killed by ${status.signal}`
      : `exited with code ${status.code}`;
    return {
      how,
      lastError: errors.summary(),
      signal: status.signal,
      code: status.signal === null ? status.code : null,
    };
  }

  /** SIGTERM, then SIGKILL, said, if the child has not gone after its grace period. */
  async #stop(child: Deno.ChildProcess): Promise<void> {
    try {
      child.kill("SIGTERM");
    } catch {
      return; // already gone
    }
    const grace = this.#spec.stopGraceMs ?? STOP_GRACE_MS;
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        return; // gone in the meantime
      }
      // What it had left to do on its way out (a goodbye, a file) was cut short: say so.
      this.#log.warn(
        `${this.#spec.name} (pid ${child.pid}) did not stop within ${grace / 1000} s of ` +
          "SIGTERM; killed it with SIGKILL",
      );
    }, grace);
    await child.status;
    clearTimeout(timer);
  }
}
