/**
 * The button/LED system as the system, interoperability and fault tests start it: our launcher
 * with the permissions its task gives, waiting for it and its children, pressing and watching
 * the LED, and what a test reads back from files without trusting the code under test.
 *
 * @module
 */

import { statPath } from "../../ffi/posix.ts";
import type { ChildProcess } from "./child_process.ts";
import { press, writeAndLeave } from "./fifo.ts";
import { ROOT } from "./paths.ts";
import { killIfRunning, processGone } from "./proc.ts";
import { denoCommand, spawnDeno, spawnProgram } from "./spawn.ts";
import { GUARD_MS, until } from "./waiting.ts";

/** The permissions `deno task launch` gives the launcher. */
export const LAUNCH_PERMISSIONS = ["--allow-ffi", "--allow-run", "--allow-read", "--allow-env"];

/** A line our LED or the original's prints. */
export const LED_LINE = /LED Status: (On|Off)/;

/** The launcher's log line for a child that died by a signal. */
export const KILLED_BY_SIGNAL = /killed by SIG\w+/;

/** Words that say a path was replaced or removed under a running system. */
export const REPLACED = /replac|remov|delet|gone|missing|vanish|no longer|changed/;

/**
 * Words a line uses to say the button reads a FIFO it made anew. Tests wait for it, not for the
 * FIFO to appear: between `mkfifo` and the button's open, a press finds no reader.
 */
export const REMADE = /reach(es)? this button again/;

/** The command line that runs our launcher with `args`, for programs that start it. */
export function launcherCommand(args: string[]): string[] {
  return denoCommand(`${ROOT}launch.ts`, args, LAUNCH_PERMISSIONS);
}

/**
 * Starts our launcher as the user `uid` (through `setpriv`, so the caller must be root) in
 * `dir`, which it chowns to that user, with a Deno cache of that user's own in `dir/.deno` (the
 * project's vendor/ and node_modules/ are all it needs). A test that must do something to the
 * user's runtime directories (`/tmp/mmap-ipc-UID`) does it to a user of its own this way, never
 * to the real user running the tests, whose own launcher may be using them.
 */
export function startLauncherAs(uid: number, dir: string, args: string[]): ChildProcess {
  return spawnCommandAs(uid, dir, launcherCommand(args));
}

/**
 * Runs `deno run` on `script` as the user `uid`, in `dir`, as {@link startLauncherAs} runs the
 * launcher: for a test of what a plain user meets that root never does (a mode that binds).
 */
export function spawnDenoAs(
  uid: number,
  dir: string,
  { script, args, permissions }: { script: string; args: string[]; permissions: string[] },
): ChildProcess {
  return spawnCommandAs(uid, dir, denoCommand(script, args, permissions));
}

function spawnCommandAs(uid: number, dir: string, command: string[]): ChildProcess {
  Deno.chmodSync(dir, 0o700);
  Deno.chownSync(dir, uid, uid);
  const [deno, ...rest] = command;
  return spawnProgram("setpriv", [
    ...asUser(uid),
    "env",
    "-i",
    `HOME=${dir}`,
    `DENO_DIR=${dir}/.deno`,
    "PATH=/usr/bin:/bin",
    deno,
    ...rest,
  ], { cwd: dir });
}

/** `setpriv`'s arguments that run its command as the user (and group) `uid`. */
export function asUser(uid: number): string[] {
  return [`--reuid=${uid}`, `--regid=${uid}`, "--clear-groups"];
}

/**
 * A uid no account has and no other test uses now: its `/tmp/mmap-ipc-UID` does not exist. For
 * {@link startLauncherAs}; remove that directory after.
 */
export function unusedUid(): number {
  for (;;) {
    const uid = 200_000 + Math.floor(Math.random() * 100_000);
    if (
      statPath(`/tmp/mmap-ipc-${uid}`) === undefined && statPath(`/run/user/${uid}`) === undefined
    ) {
      return uid;
    }
  }
}

/** Starts our launcher in `dir` with `args`. */
export function startLauncher(
  dir: string,
  args: string[],
  options: { env?: Record<string, string> } = {},
): ChildProcess {
  return spawnDeno(`${ROOT}launch.ts`, args, {
    permissions: LAUNCH_PERMISSIONS,
    cwd: dir,
    env: options.env,
  });
}

/**
 * Runs `deno task launch` with `args` in `dir`, as a user does; with `withoutInitCwd`, through
 * `env -u INIT_CWD`, as from a shell no task runner started (this test may run under one).
 */
export function spawnLaunchTask(
  dir: string,
  args: string[],
  options: { withoutInitCwd?: boolean } = {},
): ChildProcess {
  const task = [
    Deno.execPath(),
    "task",
    "--quiet",
    "--config",
    `${ROOT}deno.json`,
    "launch",
    ...args,
  ];
  const [program, ...rest] = options.withoutInitCwd ? ["env", "-u", "INIT_CWD", ...task] : task;
  return spawnProgram(program, rest, { cwd: dir });
}

/** Starts our button alone on `state` and `fifo`, and waits until it reads the FIFO. */
export async function startButton(state: string, fifo: string): Promise<ChildProcess> {
  const button = spawnDeno(`${ROOT}producers/button.ts`, ["--state", state, "--fifo", fifo]);
  try {
    await button.waitFor(/Button ready/, { timeoutMs: GUARD_MS });
  } catch (error) {
    await button[Symbol.asyncDispose]();
    throw error;
  }
  return button;
}

/** Waits until the launcher's LED and button are both up; returns their pids. */
export async function running(
  launcher: ChildProcess,
  since = 0,
): Promise<{ led: number; button: number }> {
  const options = { since, timeoutMs: GUARD_MS };
  const led = await launcher.waitFor(/Started led \(pid (\d+)\)/, options);
  const button = await launcher.waitFor(/Started button \(pid (\d+)\)/, options);
  await launcher.waitFor(/Button ready/, options);
  await launcher.waitFor(LED_LINE, options);
  return { led: Number(led.match[1]), button: Number(button.match[1]) };
}

/** The states an LED has shown, oldest first, from line `since` on. */
export function ledStates(child: ChildProcess, since = 0): string[] {
  return child.matching(LED_LINE, since).map((line) => LED_LINE.exec(line)?.[1] ?? "?");
}

/** Waits for the LED to print `state` at line `since` or later; returns the index after it. */
export async function ledShows(
  child: ChildProcess,
  state: "On" | "Off",
  since: number,
): Promise<number> {
  return (await child.waitFor(new RegExp(`LED Status: ${state}`), { since, timeoutMs: GUARD_MS }))
    .index + 1;
}

/** Makes sure a launcher and the processes it started are gone, whatever happened. */
export async function stopAll(launcher: ChildProcess, pids: (number | undefined)[]): Promise<void> {
  for (const pid of pids) killIfRunning(pid);
  launcher.kill("SIGKILL");
  await launcher.status();
  for (const pid of pids) killIfRunning(pid);
}

/**
 * Presses once through our launcher's FIFO (started with `--log-level debug`), waits for the
 * button's `Pressed: state N` and for the LED to show N; returns N.
 */
export async function pressAndSee(launcher: ChildProcess, fifo: string): Promise<number> {
  const since = launcher.lines.length;
  await press(fifo, launcher);
  const { match } = await launcher.waitFor(/Pressed: state (-?\d+)/, {
    since,
    timeoutMs: GUARD_MS,
  });
  const state = Number(match[1]);
  const shown = state === 0 ? "Off" : "On";
  await until(() => ledStates(launcher).at(-1) === shown, `the LED showing ${shown}`, {
    child: launcher,
  });
  return state;
}

/**
 * Whether `child` started (its output matched `ready`) or ended first; throws if neither happens
 * within the guard.
 */
export function startedOrEnded(child: ChildProcess, ready: RegExp): Promise<"started" | "ended"> {
  return child.waitFor(ready, { timeoutMs: GUARD_MS }).then(
    () => "started" as const,
    (error: Error) => {
      if (/ended before/.test(error.message)) return "ended" as const;
      throw error;
    },
  );
}

/** The state a file holds, read the way the original reads it: `sscanf("%d")`, else 0. */
export function stateValue(path: string): number {
  const text = new TextDecoder().decode(Deno.readFileSync(path).subarray(0, 32));
  const match = /^\s*([+-]?\d+)/.exec(text);
  return match === null ? 0 : Number(match[1]);
}

/** The device and inode at `path` (not followed), or `undefined` when nothing is there. */
export function identity(path: string): string | undefined {
  // Device, inode and birth time in nanoseconds (statx): a file system may give a file made
  // now the inode number of one just removed, within the same millisecond.
  return statPath(path)?.identity;
}

/**
 * Writes a press the button `button` of `launcher` cannot read (it is stopped, SIGSTOP), then
 * SIGKILLs it: the press is in the FIFO when the button dies. Returns the restarted one's pid.
 */
export async function pressAsButtonDies(
  launcher: ChildProcess,
  button: number,
  fifo: string,
): Promise<number> {
  const since = launcher.lines.length;
  Deno.kill(button, "SIGSTOP");
  await writeAndLeave(fifo, "0\n");
  Deno.kill(button, "SIGKILL");
  await until(() => processGone(button), "the button gone");
  return Number((await launcher.waitFor(/Started button \(pid (\d+)\)/, { since })).match[1]);
}
