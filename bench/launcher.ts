/**
 * The real launcher (`launch.ts`) as a user starts it, with the FIFO button, the console LED and,
 * given `--mqtt`, the MQTT bridge: its output carries its children's lines. Stopping it stops them;
 * a child that outlived it is killed by the pid the launcher announced.
 *
 * @module
 */

import { monotonicNanos, processState } from "../ffi/posix.ts";
import { type Child, ROOT, spawnDeno, type WorkDir, writeToFifo } from "./processes.ts";
import { LED_LINE } from "./system.ts";

/** What `deno task launch` grants (the launcher gives each child its own narrower set). */
const PERMISSIONS = ["--allow-ffi", "--allow-run", "--allow-read", "--allow-env"];
const STARTED = /Started (\w+) \(pid (\d+)\)/;

/** A running launcher and its children. */
export interface Launcher extends AsyncDisposable {
  /** The launcher process; its output holds the children's lines too. */
  child: Child;
  /** The pid of the child the launcher started last under `name` (such as `mqtt`). */
  childPid(name: string): Promise<number>;
  /** Presses the button (writes "0" to its FIFO); resolves with CLOCK_MONOTONIC just before. */
  press(): Promise<bigint>;
}

function gone(pid: number): boolean {
  const state = processState(pid)?.state;
  return state === undefined || state === "Z" || state === "X";
}

/**
 * Starts `launch.ts` with its FIFO named after `name` in `work` and `args` (such as `--mqtt URL`);
 * resolves once the button is ready, the LED has shown the state and each of `ready` (such as
 * the bridge's connection) has been printed.
 */
export async function startLauncher(
  work: WorkDir,
  name: string,
  options: { args?: string[]; ready?: RegExp[] } = {},
): Promise<Launcher> {
  const fifo = work.file(`${name}.fifo`);
  const child = spawnDeno(`${ROOT}launch.ts`, ["--fifo", fifo, ...(options.args ?? [])], {
    permissions: PERMISSIONS,
  });
  const launcher: Launcher = {
    child,
    async childPid(childName: string): Promise<number> {
      const pattern = new RegExp(`Started ${childName} \\(pid (\\d+)\\)`);
      await child.waitFor(pattern);
      return Number(child.lastMatch(pattern)?.[1]);
    },
    async press(): Promise<bigint> {
      const now = monotonicNanos();
      await writeToFifo(fifo, "0\n");
      return now;
    },
    async [Symbol.asyncDispose](): Promise<void> {
      // The launcher stops its children on SIGTERM; give it the time that takes.
      await child.stop(10_000);
      const pids = child.transcript.split("\n").flatMap((line) => {
        const match = STARTED.exec(line);
        return match === null ? [] : [Number(match[2])];
      });
      for (const pid of pids) if (!gone(pid)) Deno.kill(pid, "SIGKILL");
      await Deno.remove(fifo).catch(() => {});
    },
  };
  try {
    await child.waitFor(/Button ready/);
    await child.waitFor(LED_LINE);
    for (const pattern of options.ready ?? []) await child.waitFor(pattern);
  } catch (error) {
    await launcher[Symbol.asyncDispose]();
    throw error;
  }
  return launcher;
}
