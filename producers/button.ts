/**
 * The button process: turns each press into a toggled state and writes it to the state cell.
 *
 * Run `deno run --allow-ffi producers/button.ts --help` for its flags; `launch.ts` starts it.
 *
 * @module
 */

import {
  checkFilePath,
  checkProcFd,
  describeLostMirror,
  describeOpenToOthers,
  exitWhenFlushed,
  logFlags,
  MEMFD_FLAG,
  openSystemState,
  PARENT_PID_FLAG,
  shutdownSignal,
  STATE_FLAGS,
} from "../app/cli.ts";
import { type CommandFlags, defineCommand, parseCommandLine } from "../app/flags.ts";
import { type Logger, logger, quote, setupLogging } from "../app/logging.ts";
import { defaultFifoPath, isRuntimeDirectory } from "../app/runtime_dir.ts";
import {
  type FifoEvent,
  type IgnoredInput,
  openFifoButton,
  type TakenFifo,
} from "../hw/fifo_button.ts";
import { keepMirror, MIRROR_WRITE_LATER, mirrorName } from "../app/mirror_keeper.ts";
import { effectiveUid, statPath } from "../ffi/posix.ts";
import type { Button } from "../hw/types.ts";
import { parentOf } from "../lib/owned_path.ts";
import { openStateCell, type StateCell } from "../lib/state_cell.ts";
import type { ChannelReceiver } from "../app/remote/channel.ts";
import { type Command, decodeCommand } from "../app/remote/messages.ts";
import { shellQuote } from "../lib/shell_quote.ts";
import { failureExitStatus } from "../app/exit_status.ts";

/** The button process's command line. */
export const BUTTON_COMMAND = defineCommand({
  name: "button",
  synopsis: ["deno run --allow-ffi producers/button.ts (--state PATH | --shm NAME) [options]"],
  description: "The button process: each press toggles the shared state between 0 and 1.",
  flags: {
    ...STATE_FLAGS,
    ...MEMFD_FLAG,
    fifo: {
      type: "string",
      arg: "PATH",
      defaultText: "/run/user/UID/mmap-ipc/button.fifo, else /tmp/mmap-ipc-UID/button.fifo",
      help: 'read presses from this FIFO, one per line: "0" or "press"',
      check: checkFilePath,
    },
    pi: { type: "boolean", help: "read presses from a GPIO button instead (libgpiod)" },
    chip: {
      type: "string",
      arg: "C",
      requires: "pi",
      defaultText: "auto",
      help: "GPIO chip: path, name, number, label or auto",
    },
    line: {
      type: "string",
      arg: "L",
      requires: "pi",
      defaultText: "GPIO4, physical pin 7",
      help: "GPIO line: name or offset",
    },
    "debounce-ms": {
      type: "number",
      arg: "N",
      integer: true,
      min: 0,
      max: 10_000,
      default: 50,
      requires: "pi",
      help: "ignore bounces shorter than N ms",
    },
    remote: {
      type: "string",
      arg: "PATH",
      help: "the launcher's remote link, /proc/PID/fd/N (the launcher passes it with --mqtt): " +
        "apply the ON, OFF and TOGGLE commands that come through it as presses are applied, " +
        "and report each press through it",
      check: checkProcFd,
    },
    "fifo-from-parent": {
      type: "boolean",
      requires: "parent-pid",
      help: "the parent (--parent-pid) makes the FIFO, makes it again when it is removed, " +
        "and holds it open so that no press is lost while this restarts: make none, read " +
        "the one it makes, and take its hold for no other reader (the launcher passes this)",
    },
    "fifo-checked": {
      type: "string",
      arg: "IDENTITY",
      requires: "fifo-from-parent",
      help: "the parent made the FIFO with this identity (device:inode:birth), or looked for " +
        "other readers of it, just before this start: do not look through /proc for them " +
        "again while it is the one at the path (the launcher passes this at the button's " +
        "first start)",
    },
    ...logFlags("each press"),
    ...PARENT_PID_FLAG,
  },
  exclusive: [{ flags: ["state", "shm"] }, {
    flags: ["state", "shm", "memfd"],
    required: true,
    combinable: true,
  }, { flags: ["fifo", "pi"] }],
});

/** The button process's parsed flags. */
export type ButtonFlags = CommandFlags<typeof BUTTON_COMMAND>;

/** Options for {@link runButton}. */
export interface RunButtonOptions {
  /** Stops the loop. */
  signal: AbortSignal;
  /** Called after each press with the state it wrote. */
  onPress?: (state: number) => void;
}

/**
 * Applies `command` to `cell` and returns the state it holds afterwards. A press is `TOGGLE`:
 * it toggles what the cell holds, not a private copy, so the first press always changes the
 * LED even when the state was left over from an earlier run or another writer. `ON` and `OFF`
 * write only when they change something.
 */
export function applyCommand(cell: StateCell, command: Command): number {
  const now = cell.read();
  const state = command === "ON" ? 1 : command === "OFF" ? 0 : now === 0 ? 1 : 0;
  if (state !== now) cell.write(state);
  return state;
}

/**
 * Toggles `cell` between 0 and 1 on every press of `button` until `signal` aborts; returns the
 * number of presses.
 */
export async function runButton(
  button: Button,
  cell: StateCell,
  options: RunButtonOptions,
): Promise<number> {
  let presses = 0;
  for await (const _ of button.presses(options.signal)) {
    const state = applyCommand(cell, "TOGGLE");
    presses++;
    options.onPress?.(state);
  }
  return presses;
}

/** Options for {@link runCommands}. */
export interface RunCommandsOptions {
  /** Ends the loop. */
  signal: AbortSignal;
  /** Each command applied, with the state it left. */
  onCommand?: (command: Command, state: number) => void;
  /**
   * Something in the channel that no controller sends: a message that is not a command, or a
   * record written over (and what waited behind it dropped). It is skipped; the next command
   * is applied as usual.
   */
  onIgnored?: (why: string) => void;
}

/**
 * Applies each command that comes through `commands` to `cell`, through the same
 * {@link applyCommand} a press takes, until `signal` aborts. What is not a command is skipped
 * and reported: the memfd is open to its user, and a stray write must not stop the button.
 */
export async function runCommands(
  commands: ChannelReceiver,
  cell: StateCell,
  options: RunCommandsOptions,
): Promise<void> {
  const onDiscarded = (error: Error, bytes: number): void =>
    options.onIgnored?.(`${error.message}: dropped it and what waited behind it, ${bytes} bytes`);
  for await (const message of commands.messages(options.signal, { onDiscarded })) {
    const command = decodeCommand(message);
    if (command === undefined) {
      options.onIgnored?.(`${message.length} bytes that are not ON, OFF or TOGGLE`);
      continue;
    }
    options.onCommand?.(command, applyCommand(cell, command));
  }
}

/** Describes what happened to the FIFO's path, for a warning. */
export function describeFifoEvent(fifo: string, event: FifoEvent): string {
  const path = JSON.stringify(fifo);
  switch (event) {
    case "replaced": {
      // Looked at now, not followed: what took the path decides what the user should hear.
      const kind = statPath(fifo, { follow: false })?.type;
      const what = kind === "fifo"
        ? "another program's (the original button makes its own at its start)"
        : kind === "symlink"
        ? "a symbolic link"
        : kind === "file"
        ? "a regular file"
        : kind === undefined
        ? "something that is gone again"
        : `a ${kind}`;
      // Only a FIFO can be read once nobody else does; anything else, never.
      const then = kind === "fifo" ? "reads it once nobody else does, or " : "reads ";
      return `The FIFO ${path} was replaced by ${what}; presses written there no longer reach ` +
        `this button, which leaves it alone and ${then}a new FIFO once the path is free`;
    }
    case "removed":
      return `The FIFO ${path} was removed; a new one is made once the path is free`;
    case "directory-removed": {
      const directory = JSON.stringify(parentOf(fifo));
      return `The FIFO's directory ${directory} was removed too; presses cannot reach this ` +
        `button until it is there again (mkdir -m 700 ${directory}), then it makes a new FIFO`;
    }
    case "directory-recreated":
      return `The FIFO's directory ${JSON.stringify(parentOf(fifo))} was removed; made it again`;
    case "recreated":
      return `Made a new FIFO at ${path}; presses reach this button again`;
    case "adopted":
      return `The FIFO ${path} is one this button may read now (nobody else reads it, and its ` +
        "mode lets it); presses reach this button again";
  }
}

/**
 * The warning of a button (restarted by a launcher) whose FIFO path holds something it may not
 * use: why, and what it does instead of exiting.
 */
export function describeTakenFifo(taken: TakenFifo): string {
  const why = taken.error.message.replace(/\. Stop it, or choose another --fifo$/, "");
  const then = {
    read: "reads it once nobody else does, or the FIFO the launcher makes once the path is free",
    mode: "reads it once its mode lets it, or the FIFO the launcher makes once the path is free",
    foreign: "reads the FIFO the launcher makes once the path is free",
    unreachable: "reads the FIFO there once the directory lets it in again (looking every second)",
  }[taken.reason];
  return `${why}. This button leaves it alone and ${then}`;
}

/**
 * The warning of a GPIO button whose line's edge events the kernel dropped (see
 * `GpioButtonOptions.onDropped`): `dropped` is how many, when libgpiod can tell.
 */
export function describeDroppedEdges(line: string, dropped: number | undefined): string {
  const what = dropped === undefined
    ? `The kernel's queue of edge events of ${line} was full when read (it holds 16 and, with ` +
      "libgpiod 1.6, drops newer ones), so some may have been dropped"
    : `The kernel dropped ${dropped} edge event${dropped === 1 ? "" : "s"} of ${line} (its ` +
      "queue holds 16)";
  return `${what}: edges came faster than this process read them (it was busy or stopped, or ` +
    "the contact bounces hard), so presses made then may be lost; the line is read again, so " +
    "the next press counts";
}

/** Describes input that was not a press, for a warning. */
export function describeIgnored(ignored: IgnoredInput): string {
  switch (ignored.reason) {
    case "empty":
      return `Ignored an empty line; write "0" or "press" to press the button`;
    case "too long":
      return `Ignored a line of ${ignored.bytes} bytes (longer than a press can be) starting ${
        quote(ignored.input)
      }`;
    case "binary":
      return `Ignored ${ignored.bytes} bytes of binary data: ${quote(ignored.input)}`;
    case "cut off":
      return `Ignored ${quote(ignored.input)}: its writer went away before the end of the line`;
    default:
      return `Ignored ${quote(ignored.input)}: not a press; write "0" or "press"`;
  }
}

/**
 * Opens the button's input: the GPIO line with --pi, else the FIFO. Returns it, and the line
 * that says it is ready (none while it waits for its FIFO's path: it says why, and when it reads
 * it).
 */
async function openInput(
  flags: ButtonFlags,
  log: Logger,
): Promise<{ button: Button; ready?: string }> {
  if (flags.pi) {
    // Loaded only here: the PC build never pays for the GPIO modules.
    const { openGpioButton } = await import("../hw/gpio_button.ts");
    let toldDropped = false;
    const gpio = openGpioButton({
      chip: flags.chip,
      line: flags.line,
      debounceMs: flags.debounceMs,
      // Warned once: a process stopped now and then would say it again at every stop.
      onDropped: (dropped) => {
        const said = describeDroppedEdges(gpio.description, dropped);
        if (toldDropped) log.debug(said);
        else log.warn(said);
        toldDropped = true;
      },
    });
    return { button: gpio, ready: `Button ready on ${gpio.description}` };
  }
  const fifo = flags.fifo ?? defaultFifoPath();
  let waiting = false;
  const button = openFifoButton(fifo, {
    onIgnored: (ignored) => log.warn(describeIgnored(ignored)),
    // Presses reaching the button again is good news, not a warning.
    onPath: (event) => {
      const said = describeFifoEvent(fifo, event);
      if (event === "adopted" || event === "recreated") log.info(said);
      else log.warn(said);
    },
    // The runtime directory is ours to make again; a directory the user chose is not.
    remakeDirectory: isRuntimeDirectory(parentOf(fifo)),
    // Under a launcher, which checked the FIFO before the first start, what took the path
    // since is not for a restart to fix: wait for it as the running button would, rather
    // than crash again and again until the launcher gives up and stops the LED too.
    onTaken: flags.parentPid === undefined ? undefined : (taken) => {
      waiting = true;
      log.warn(describeTakenFifo(taken));
    },
    // A launcher makes the FIFO, and makes it again once removed: it then knows each one, and
    // removes the last at exit even if this button was killed.
    madeBy: flags.fifoFromParent ? "other" : "button",
    // And holds it open, so presses written while this button restarts wait for the next.
    keeper: flags.fifoFromParent ? flags.parentPid : undefined,
    readersChecked: flags.fifoChecked,
  });
  // A launcher's button leaves this to the launcher, which looked at the FIFO first.
  const found = flags.fifoFromParent ? undefined : statPath(fifo);
  if (found?.type === "fifo" && found.uid === effectiveUid()) {
    const openToOthers = describeOpenToOthers("FIFO", fifo, found.permissions);
    if (openToOthers !== undefined) log.warn(openToOthers);
  }
  // Not "ready" while it waits for the path (said above why): it says when it reads it.
  return { button, ready: waiting ? undefined : `Button ready: echo 0 > ${shellQuote(fifo)}` };
}

async function main(flags: ButtonFlags): Promise<void> {
  // Logging first: a child that does not start says why in the format asked for.
  setupLogging({ level: flags.logLevel, format: flags.logFormat });
  const signal = shutdownSignal(flags.parentPid);
  const log = logger("button");
  // Loaded only with --remote: the link's modules (the ring among them) would cost every
  // process that never uses them memory. Opened first: a bad --remote then leaves nothing made.
  const remote = flags.remote === undefined ? undefined : await import("../app/remote/link.ts");
  const link = flags.remote === undefined ? undefined : remote?.openRemoteLink(flags.remote);
  using _link = link;
  // The input before the state: a FIFO or a line it may not use then leaves no state file made.
  const { button, ready } = await openInput(flags, log);
  await using _button = button;
  using state = openSystemState(flags);
  if (state.mirrorLost !== undefined) log.warn(describeLostMirror(state.mirrorLost));
  if (state.openToOthers !== undefined) log.warn(state.openToOthers);
  const { region, mirror } = state;
  // The state file is a copy for other programs: one that cannot be written (its file system
  // full) is said once, not at every press, and the system goes on with its state in memory.
  using cell = openStateCell(region, {
    writer: true,
    mirror,
    onMirrorError: (error, repeated) => {
      if (repeated) log.debug(`${error.message} (again)`);
      else log.warn(`${error.message}; ${MIRROR_WRITE_LATER}`);
    },
    onMirrorRecovered: () => {
      if (mirror !== undefined) {
        log.info(`${mirrorName(mirror.path, flags.shm !== undefined)} is written again`);
      }
    },
  });
  using events = link && remote?.openEventSender(link);
  using commands = link && remote?.openCommandReceiver(link);
  const { PressReporter } = events ? await import("../app/remote/press_reporter.ts") : {};
  const reporter = events && PressReporter && new PressReporter(events, {
    onDropping: (reason) =>
      log.warn(
        `Presses are not reaching the remote bridge (${
          reason === "full" ? "it is not taking them" : "it is not running"
        }); the LED still follows them`,
      ),
    onResumed: (dropped) => log.info(`Presses reach the remote bridge again (${dropped} dropped)`),
  });
  const running = Promise.all([
    mirror && keepMirror(cell, mirror, { shm: flags.shm !== undefined, signal, log }),
    runButton(button, cell, {
      signal,
      onPress: (state) => {
        log.debug(`Pressed: state ${state}`);
        reporter?.report();
      },
    }),
    commands && runCommands(commands, cell, {
      signal,
      onCommand: (command, state) => log.debug(`Remote command ${command}: state ${state}`),
      onIgnored: (why) =>
        log.warn(`Skipped something in the remote link that is no command (${why})`),
    }),
  ]);
  // Said once every part is under way, the state file's first look included: whoever acts on
  // it (a user, a test that then closes the directory) meets a button that has looked.
  if (ready !== undefined) log.info(ready);
  await running;
}

if (import.meta.main) {
  const flags = parseCommandLine(BUTTON_COMMAND);
  try {
    await main(flags);
  } catch (error) {
    console.error(`button: ${(error as Error).message}`);
    Deno.exit(failureExitStatus(error));
  }
  await exitWhenFlushed();
}
