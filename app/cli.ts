/**
 * What the button/LED programs share on their command line: the flags that name the shared
 * state and set up logging, opening that state, and orderly shutdown on signals (including the
 * launcher's death). The flag layer itself is `app/flags.ts`.
 *
 * @module
 */

import { SIGTERM } from "../ffi/constants.ts";
import { setParentDeathSignal } from "../ffi/posix.ts";
import {
  createMemfdRegion,
  openFileRegion,
  openMemfdRegion,
  openShmRegion,
  type SharedRegion,
} from "../mod.ts";
import { LOG_FORMATS, LOG_LEVELS } from "./logging.ts";

/** Bytes of state the system maps: the original's 256. */
export const STATE_REGION_SIZE = 256;

/** `--state` and `--shm`: where the state lives (the launcher's and the processes'). */
export const STATE_FLAGS = {
  state: {
    type: "string",
    arg: "PATH",
    help: "keep the state in this file (the original used /tmp/data.dat)",
  },
  shm: { type: "string", arg: "NAME", help: "keep the state in POSIX shared memory /NAME" },
} as const;

/** `--memfd`: the launcher's anonymous state, which only its children are given. */
export const MEMFD_FLAG = {
  memfd: {
    type: "string",
    arg: "PATH",
    help: "the launcher's anonymous state, /proc/PID/fd/N (the launcher passes it)",
  },
} as const;

/** `--log-level` and `--log-format`. */
export const LOG_FLAGS = {
  "log-level": {
    type: "choice",
    arg: "L",
    choices: LOG_LEVELS,
    default: "info",
    help: "the lowest level logged; debug also logs each press",
  },
  "log-format": {
    type: "choice",
    arg: "F",
    choices: LOG_FORMATS,
    defaultText: "journal when JOURNAL_STREAM is set, as systemd sets it, else text",
    help: "text: a timestamp on each line; journal: an sd-daemon <N> priority prefix instead",
  },
} as const;

/** `--parent-pid`: the launcher's pid, so a child never outlives it. */
export const PARENT_PID_FLAG = {
  "parent-pid": {
    type: "number",
    arg: "N",
    integer: true,
    min: 1,
    max: 2 ** 31 - 1,
    help: "exit when process N exits (the process that starts this one passes its own pid)",
  },
} as const;

/** Where the state is, as the flags say; at most one is set (the flag layer checks). */
export interface StateLocation {
  /** A file path. */
  state?: string;
  /** A POSIX shared-memory name. */
  shm?: string;
  /** The launcher's memfd as `/proc/PID/fd/N`. */
  memfd?: string;
}

/**
 * Opens the region the flags name: `--state PATH`, `--shm NAME`, or the launcher's
 * `--memfd /proc/PID/fd/N`. A missing file or shm is created (as the original programs did);
 * when none is named, `anonymous` makes a fresh memfd. `created` says whether it was made here.
 */
export function openStateRegion(
  where: StateLocation,
  options: { anonymous?: boolean } = {},
): { region: SharedRegion; created: boolean } {
  const size = STATE_REGION_SIZE;
  if (where.memfd !== undefined) {
    return { region: openMemfdRegion(where.memfd), created: false };
  }
  const { state, shm } = where;
  const open = state !== undefined
    ? (create: boolean) =>
      openFileRegion(state, create ? { create, exclusive: true, size } : { size })
    : shm !== undefined
    ? (create: boolean) => openShmRegion(shm, create ? { create, exclusive: true, size } : { size })
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
    if (Deno.ppid !== parentPid) Deno.exit(0);
  }
  const stop = (): void => controller.abort();
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, stop);
  controller.signal.addEventListener("abort", () => {
    for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.removeSignalListener(signal, stop);
  });
  return controller.signal;
}
