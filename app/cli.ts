/**
 * What the button/LED programs share on their command line: the flags that name the shared
 * state and set up logging, opening that state, and orderly shutdown on signals (including the
 * launcher's death). The flag layer itself is `app/flags.ts`.
 *
 * @module
 */

import { SIGHUP, SIGINT, SIGKILL, SIGTERM } from "../ffi/constants.ts";
import { readFileText, setParentDeathSignal, statPath, unblockSignals } from "../ffi/posix.ts";
import { findHolders } from "../lib/holders.ts";
import { normalizeShmName, openMemfdRegion, openShmRegion } from "../lib/open_region.ts";
import { modeText, removeShmIfSame } from "../lib/owned_path.ts";
import { shellQuote } from "../lib/shell_quote.ts";
import type { SharedRegion } from "../lib/region.ts";
import { openStateFile, openStateFileAt, openStateShm, type StateFile } from "../lib/state_file.ts";
import { loneCellName, sweepLoneCells } from "./lone_cells.ts";
import { mirrorPath } from "./mirror_keeper.ts";
import { flushConsole } from "./console_output.ts";
import { formatLogLine, LOG_FORMATS, LOG_LEVELS } from "./logging.ts";

/** Bytes of the region the system's state cell lives in. */
export const STATE_REGION_SIZE = 256;

/**
 * The check of a flag that names a file: a path ending in "/" names a directory, and opening it
 * as a file failed later with a bare ENOENT.
 */
export function checkFilePath(path: string): string | undefined {
  return path.endsWith("/") ? 'a file\'s path (one not ending in "/")' : undefined;
}

/** `--state` and `--shm`: where the state is published as text for other programs. */
export const STATE_FLAGS = {
  state: {
    type: "string",
    arg: "PATH",
    help: "the file that holds the state as text (the original's: /tmp/data.dat)",
    check: checkFilePath,
  },
  shm: {
    type: "string",
    arg: "NAME",
    help: "the POSIX shared memory /NAME that holds the state as text",
    check: (name: string) => {
      try {
        normalizeShmName(name);
        return undefined;
      } catch {
        return 'a shared memory name (1 to 250 bytes, no "/" after the first)';
      }
    },
  },
} as const;

/**
 * The check of a flag that names one of the launcher's fds: a usage error (exit 2) before the
 * program makes anything, not a failure once it has.
 */
export function checkProcFd(path: string): string | undefined {
  return /^\/proc\/(\d+|self)\/fd\/\d+$/.test(path) ? undefined : "a path /proc/PID/fd/N";
}

/** `--memfd` and `--mirror`: what the launcher hands its children. */
export const MEMFD_FLAG = {
  memfd: {
    type: "string",
    arg: "PATH",
    help: "the launcher's shared state, /proc/PID/fd/N (the launcher passes it)",
    check: checkProcFd,
  },
  mirror: {
    type: "string",
    arg: "PATH",
    help: "the launcher's state file, /proc/PID/fd/N (the launcher passes it with --memfd)",
    check: checkProcFd,
  },
} as const;

const LOG_FLAG_TABLE = {
  "log-level": {
    type: "choice",
    arg: "L",
    choices: LOG_LEVELS,
    default: "info",
    help: "the lowest level logged" as string,
  },
  "log-format": {
    type: "choice",
    arg: "F",
    choices: LOG_FORMATS,
    defaultText: "journal when JOURNAL_STREAM is set, as systemd sets it, else text",
    help: "text: a timestamp on each line; journal: an sd-daemon <N> priority prefix instead",
  },
} as const;

/** The flags {@link logFlags} declares. */
export type LogFlagTable = typeof LOG_FLAG_TABLE;

/**
 * `--log-level` and `--log-format`. `debugLogs` is what the command logs at debug level only
 * (`each press`), for the help: each command says its own, and one that logs nothing more at
 * debug says nothing.
 */
export function logFlags(debugLogs?: string): LogFlagTable {
  if (debugLogs === undefined) return LOG_FLAG_TABLE;
  const level = LOG_FLAG_TABLE["log-level"];
  return {
    ...LOG_FLAG_TABLE,
    "log-level": { ...level, help: `${level.help}; debug also logs ${debugLogs}` },
  };
}

/** `--parent-pid`: the launcher's pid, so a child never outlives it. */
export const PARENT_PID_FLAG = {
  "parent-pid": {
    type: "number",
    arg: "N",
    integer: true,
    min: 1,
    max: 2 ** 31 - 1,
    help: "exit when process N exits, and leave SIGINT and SIGHUP to it (the process that " +
      "starts this one passes its own pid)",
  },
} as const;

/** Where the state is, as the flags say; `state` and `shm` exclude each other. */
export interface StateLocation {
  /** The state file's path. */
  state?: string;
  /** The POSIX shared-memory name the state is kept in as text. */
  shm?: string;
  /** The launcher's memfd as `/proc/PID/fd/N`. */
  memfd?: string;
  /** The launcher's state file (or shm) as `/proc/PID/fd/N`. */
  mirror?: string;
}

/** What a process of the system opens: the region its state cell lives in, and the text file. */
export interface SystemState extends Disposable {
  /** The launcher's sealed memfd, or the cell this process shares with others running alone. */
  region: SharedRegion;
  /** The state as text in a file or shm object, for other programs (never mapped). */
  mirror?: StateFile;
  /**
   * Why the launcher's state file could not be opened again (its mode changed since it was
   * made: chmod), if so: the process runs on the memfd without it, rather than fail at every
   * restart until the launcher gives up.
   */
  mirrorLost?: string;
  /** The warning of {@link describeOpenToOthers}, for a state file or shm object opened here. */
  openToOthers?: string;
}

/** What {@link describeOpenToOthers} warns of, and what others who may write it can do. */
const OPEN_TO_OTHERS = {
  "state file": "change the state",
  "shared memory": "change the state",
  FIFO: "press the button",
} as const;

/**
 * The warning for a state file, shm object or FIFO of this user's that other users may write
 * (its mode has `0o022` bits: the original's `/tmp/data.dat` or FIFO made under umask 0, or a
 * `chmod 666`): any of them can change the state or press the button. Said, never changed: the
 * mode is the user's to set. `undefined` for a mode that lets no one else write.
 */
export function describeOpenToOthers(
  what: keyof typeof OPEN_TO_OTHERS,
  path: string,
  mode: number,
): string | undefined {
  if ((mode & 0o022) === 0) return undefined;
  const who = (mode & 0o002) !== 0 ? "every user" : "its group";
  return `The ${what} ${JSON.stringify(path)} may be written by ${who} (mode ${
    modeText(mode)
  }): any of them can ${OPEN_TO_OTHERS[what]}; chmod go-w ${
    shellQuote(path)
  } makes it this user's alone`;
}

/** {@link describeOpenToOthers} for `mirror`, named as the user knows it. */
export function describeMirrorOpenToOthers(mirror: StateFile, shm: boolean): string | undefined {
  return describeOpenToOthers(
    shm ? "shared memory" : "state file",
    mirrorPath(mirror, shm),
    mirror.mode,
  );
}

/** The warning of a process that runs on without the launcher's state file (see `mirrorLost`). */
export function describeLostMirror(why: string): string {
  return `${why}; running on without it: the state is kept in the launcher's memory, and the ` +
    "file is neither written nor followed by this process until it starts again";
}

/**
 * What a reader follows while no button writes, and until when, for its messages: the state file
 * (or shm object) it opened, named as the flags name it. The inode is what is followed, not the
 * path, so one the path no longer names (removed, or replaced by another file) is said to be so.
 */
export function describeFollowed(mirror: StateFile, where: StateLocation): string {
  const shm = where.state === undefined && where.shm !== undefined;
  const path = mirrorPath(mirror, shm);
  // Named as the button's messages name it (see keepMirror).
  const name = shm
    ? `the shared memory state ${JSON.stringify(normalizeShmName(mirror.path))} (${path})`
    : `the state file ${JSON.stringify(mirror.path)}`;
  let there: boolean;
  try {
    there = statPath(path)?.identity === mirror.identity;
  } catch {
    // A directory closed to this user (chmod): what the path names cannot be told.
    return `${name} as it was opened, until a button is back`;
  }
  if (there) return `${name} until a button is back`;
  // Alone, a button meets this process through the inode (see openSystemState): one started on
  // the path now makes a new file there. Under the launcher, the button is given this inode.
  const alone = where.mirror === undefined
    ? ": a button started there now makes a new one, which this process reads only once it is " +
      "started again"
    : "";
  return `${name} as it was opened, until a button is back; it is no longer there (removed or ` +
    `replaced since)${alone}`;
}

/**
 * Opens the state as the flags name it. Under the launcher: its memfd (`--memfd`) and the very
 * inode of its state file (`--mirror`), whatever happened to the path since. Alone: `--state
 * PATH` or `--shm NAME` opened by name and created if missing, as the original programs did,
 * and a small cell in POSIX shared memory named after that file's inode, which every process
 * of ours running alone on the same file shares (so they still wake each other without
 * polling); the last one out removes it, and the cells killed processes left are swept (see
 * `lone_cells.ts`).
 */
export function openSystemState(where: StateLocation): SystemState {
  const name = where.state ?? where.shm;
  let mirror: StateFile | undefined;
  let mirrorLost: string | undefined;
  if (where.mirror !== undefined) {
    try {
      mirror = openStateFileAt(where.mirror, name ?? where.mirror);
    } catch (error) {
      if (!(error instanceof Deno.errors.PermissionDenied) || where.memfd === undefined) {
        throw error;
      }
      mirrorLost = error.message;
    }
  } else if (where.state !== undefined) {
    mirror = openStateFile(where.state, { create: true });
  } else if (where.shm !== undefined) {
    mirror = openStateShm(where.shm, { create: true });
  }
  try {
    // Said by whoever opened it by its name: a launcher's children leave it to the launcher.
    const openToOthers = where.mirror === undefined && mirror !== undefined
      ? describeMirrorOpenToOthers(mirror, where.state === undefined)
      : undefined;
    if (where.memfd !== undefined) {
      const region = openMemfdRegion(where.memfd);
      return {
        region,
        mirror,
        mirrorLost,
        [Symbol.dispose]: () => {
          region.close();
          mirror?.close();
        },
      };
    }
    if (mirror === undefined) throw new TypeError("Say where the state is: --state or --shm");
    const cellName = loneCellName(mirror);
    const region = openShmRegion(cellName, { create: true, size: STATE_REGION_SIZE });
    const identity = statPath(`/dev/shm${cellName}`)?.identity;
    sweepLoneCells(cellName, STATE_REGION_SIZE);
    const opened = mirror;
    return {
      region,
      mirror,
      openToOthers,
      [Symbol.dispose]: () => {
        region.close();
        opened.close();
        // The last process out removes the cell; one still running keeps it.
        if (identity !== undefined && findHolders(identity, { maps: true }).length === 0) {
          try {
            removeShmIfSame(cellName, identity);
          } catch {
            // Left for the next process's sweep of lone cells, which removes what it can.
          }
        }
      },
    };
  } catch (error) {
    mirror?.close();
    throw error;
  }
}

/**
 * Ends a script whose work is done: exit status 0 once its queued log lines are written. Exiting
 * here, rather than letting the event loop drain, means a signal that lands while Deno tears down
 * can no longer turn a clean stop into an exit by that signal.
 */
export async function exitWhenFlushed(): Promise<never> {
  await flushConsole();
  Deno.exit(0);
}

/** Which of the signals a process stops on it was started with ignored: see {@link ignoredAtStart}. */
export interface IgnoredAtStart {
  /** SIGHUP: started under `nohup`, which asks for a process a closed terminal leaves running. */
  hangUp: boolean;
  /**
   * SIGINT: started as a background job (`&`) of a shell without job control (a script), which
   * shares the terminal's process group: the shell ignores SIGINT for it so that Ctrl+C, meant
   * for what runs in the foreground, leaves it running.
   */
  interrupt: boolean;
}

/**
 * Which of SIGHUP and SIGINT this process was started with ignored: call it before any signal
 * listener is added, which takes the ignoring away (in Deno 2.9 the first listener of any signal
 * does; a listener that does nothing then keeps the signal ignored). Read from
 * `/proc/self/status` (its `SigIgn` mask), through our own FFI: no read permission needed.
 */
export function ignoredAtStart(): IgnoredAtStart {
  const line = readFileText("/proc/self/status")?.match(/^SigIgn:\s*([0-9a-f]+)$/m);
  // Signal n is the mask's bit n - 1: SIGHUP (1) its lowest, SIGINT (2) the next.
  const bits = line === null || line === undefined ? 0 : parseInt(line[1].slice(-1), 16);
  return { hangUp: (bits & 1) !== 0, interrupt: (bits & 2) !== 0 };
}

/**
 * An `AbortSignal` that aborts on SIGINT, SIGTERM or SIGHUP (its terminal closed: it stops as
 * cleanly as on the others, instead of dying with its work half done). SIGHUP and SIGINT it was
 * started with ignored stay ignored (see {@link ignoredAtStart}: `nohup`, a background job of a
 * script). Any of the three the process was started with blocked (a mask is inherited across
 * exec) is unblocked once listened to: left blocked, it stayed pending for good. With `parentPid`
 * (the launcher's), the kernel also kills the process (SIGKILL) when that parent dies, so a child
 * never outlives its launcher, not even one stopped then (SIGSTOP: a SIGTERM would wait for a
 * SIGCONT that a child in a session of its own never gets); and SIGHUP and SIGINT are the launcher's to act
 * on: it stops its children in order, or runs on when it ignores them. (A terminal sends them to
 * the launcher alone, which starts its children in a session of their own; one sent to a child
 * by hand is ignored for the same reason.)
 */
export function shutdownSignal(parentPid?: number): AbortSignal {
  // Looked at first: adding any signal listener takes an inherited ignoring away.
  const ignored = ignoredAtStart();
  const controller = new AbortController();
  if (parentPid !== undefined) {
    setParentDeathSignal(SIGKILL);
    // The parent may have died before prctl() ran: then we were already re-parented.
    if (Deno.ppid !== parentPid) {
      console.error(formatLogLine(
        "child",
        "warning",
        `Not starting: the launcher (pid ${parentPid}) is gone; this process's parent is pid ${Deno.ppid}`,
      ));
      Deno.exit(0);
    }
  }
  const stop = (): void => controller.abort();
  const ignore = (): void => {};
  const alone = parentPid === undefined;
  // The listeners stay until the process exits: a second Ctrl+C while it cleans up must not take
  // the default action and end it before it has removed its FIFO or its cell. They do not keep
  // the process alive.
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", alone && !ignored.interrupt ? stop : ignore);
  Deno.addSignalListener("SIGHUP", alone && !ignored.hangUp ? stop : ignore);
  // Only now: one already pending when unblocked finds its listener.
  unblockStopSignals();
  return controller.signal;
}

/**
 * Unblocks SIGHUP, SIGINT and SIGTERM in this thread (see `unblockSignals`), once they have
 * listeners: a process started with them blocked (a parent's mask is inherited across exec)
 * would never hear them. An error here is no reason not to run: it is left as it was.
 */
export function unblockStopSignals(): void {
  try {
    unblockSignals([SIGHUP, SIGINT, SIGTERM]);
  } catch {
    // sigprocmask fails only for a bad argument.
  }
}
