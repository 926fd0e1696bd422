/**
 * What every program of the button/LED system shares on its command line: flag parsing with
 * `--help`, the flags that name the shared state, and orderly shutdown on signals (including
 * the launcher's death).
 *
 * @module
 */

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { SIGTERM } from "../ffi/constants.ts";
import { parentProcessId, setParentDeathSignal } from "../ffi/posix.ts";
import {
  createMemfdRegion,
  openFileRegion,
  openMemfdRegion,
  openShmRegion,
  type SharedRegion,
} from "../mod.ts";

/** Bytes of state the system maps: the original's 256. */
export const STATE_REGION_SIZE = 256;

/** Flag values as `parseArgs` returns them. */
export type Flags = Record<string, string | boolean | undefined>;

/**
 * Parses `args` strictly. `--help` prints `usage` and exits 0; a bad flag prints the problem
 * and the usage to stderr and exits 2.
 */
export function parseFlags(args: string[], options: ParseArgsOptionsConfig, usage: string): Flags {
  try {
    const { values } = parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: false,
    });
    if (values.help) {
      console.log(usage);
      Deno.exit(0);
    }
    return values as Flags;
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${usage}`);
    Deno.exit(2);
  }
}

/** The flags that say where the state lives; see {@link openStateRegion}. */
export const STATE_FLAGS: ParseArgsOptionsConfig = {
  state: { type: "string" },
  shm: { type: "string" },
  memfd: { type: "string" },
};

/** Usage lines for {@link STATE_FLAGS}. */
export const STATE_USAGE =
  `  --state PATH     keep the state in this file (the original used /tmp/data.dat)
  --shm NAME       keep the state in POSIX shared memory /NAME`;

/**
 * Opens the region the flags name: `--state PATH`, `--shm NAME`, or the launcher's
 * `--memfd /proc/PID/fd/N`. A missing file or shm is created (as the original programs did);
 * when none is named, `anonymous` makes a fresh memfd. `created` says whether it was made here.
 */
export function openStateRegion(
  flags: Flags,
  options: { anonymous?: boolean } = {},
): { region: SharedRegion; created: boolean } {
  const named = ["state", "shm", "memfd"].filter((flag) => flags[flag] !== undefined);
  if (named.length > 1) {
    throw new TypeError(
      `Give only one of --state, --shm or --memfd, not ${named.map((f) => `--${f}`).join(" and ")}`,
    );
  }
  const size = STATE_REGION_SIZE;
  if (typeof flags.memfd === "string") {
    return { region: openMemfdRegion(flags.memfd), created: false };
  }
  const open = typeof flags.state === "string"
    ? (create: boolean) =>
      openFileRegion(flags.state as string, create ? { create, exclusive: true, size } : { size })
    : typeof flags.shm === "string"
    ? (create: boolean) =>
      openShmRegion(flags.shm as string, create ? { create, exclusive: true, size } : { size })
    : undefined;
  if (open === undefined) {
    if (!options.anonymous) {
      throw new TypeError("Say where the state is: --state PATH or --shm NAME");
    }
    return { region: createMemfdRegion({ size, label: "mmap-ipc-state" }), created: true };
  }
  try {
    return { region: open(true), created: true };
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
  }
  return { region: open(false), created: false };
}

/**
 * An `AbortSignal` that aborts on SIGINT or SIGTERM. With `parentPid` (the launcher's), the
 * kernel also sends SIGTERM when that parent dies, so a child never outlives its launcher.
 */
export function shutdownSignal(parentPid?: number): AbortSignal {
  const controller = new AbortController();
  if (parentPid !== undefined) {
    setParentDeathSignal(SIGTERM);
    // The parent may have died before prctl() ran: then we were already re-parented.
    if (parentProcessId() !== parentPid) Deno.exit(0);
  }
  const stop = (): void => controller.abort();
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, stop);
  controller.signal.addEventListener("abort", () => {
    for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.removeSignalListener(signal, stop);
  });
  return controller.signal;
}

/** Reads `--parent-pid`. */
export function parentPidFlag(flags: Flags): number | undefined {
  if (flags["parent-pid"] === undefined) return undefined;
  const pid = Number(flags["parent-pid"]);
  if (!Number.isInteger(pid) || pid <= 0) {
    throw new TypeError(`Invalid --parent-pid ${flags["parent-pid"]}`);
  }
  return pid;
}
