/**
 * The launcher: claims the paths it will use, keeps the state in a sealed memfd (and, with
 * `--state` or `--shm`, as text in that file for other programs), starts the button and the LED
 * as separate processes, restarts them when they die, and on Ctrl+C, SIGTERM or SIGHUP (its
 * terminal closed) stops both and removes what it created. `deno task launch` runs it.
 *
 * @module
 */

import { openStateShm } from "./lib/state_file.ts";
import {
  describeMirrorOpenToOthers,
  describeOpenToOthers,
  ignoredAtStart,
  STATE_REGION_SIZE,
  unblockStopSignals,
} from "./app/cli.ts";
import { flushConsole } from "./app/console_output.ts";
import { parseCommandLine } from "./app/flags.ts";
import { LAUNCH_COMMAND, type LaunchFlags } from "./app/launch_command.ts";
import { defaultLogFormat, type Logger, logger, setupLogging } from "./app/logging.ts";
import { claimPaths, type PathClaim, SameFileError } from "./app/path_claims.ts";
import { defaultFifoPath, isRuntimeDirectory } from "./app/runtime_dir.ts";
import { repairLauncherMemory } from "./app/state_repair.ts";
import { ChildCrashLoop, type ChildSpec, Supervisor } from "./app/supervisor.ts";
import { closeFd, openPidfd, readFileText, statPath } from "./ffi/posix.ts";
import { shellQuote } from "./lib/shell_quote.ts";
import { FdWaiter } from "./ffi/fd_waiter.ts";
import { LIBGPIOD_ENV } from "./ffi/gpiod.ts";
import { refuseIfRead } from "./hw/fifo_button.ts";
import { findHolders } from "./lib/holders.ts";
import { normalizeShmName } from "./lib/open_region.ts";
import { checkOwn, createFifo, parentOf, removeIfSame, removeShmIfSame } from "./lib/owned_path.ts";
import { openGpioButton } from "./hw/gpio_button.ts";
import { openGpioLed } from "./hw/gpio_led.ts";
import {
  createMemfdRegion,
  openStateCell,
  openStateFile,
  type SharedRegion,
  type StateCell,
  type StateFile,
} from "./mod.ts";
import { keepClaims } from "./app/claim_keeper.ts";
import { pressOnEnter } from "./app/terminal_presses.ts";
import { keepFifo } from "./app/fifo_keeper.ts";
import { FifoHold } from "./app/fifo_hold.ts";
import { fromTaskDirectory, taskDirectory } from "./app/task_directory.ts";
import { printLine, usage } from "./app/flags.ts";
import { createRemoteLink, type LinkHolder } from "./app/remote/link.ts";
import { readCaFile } from "./bridges/mqtt/ca_file.ts";
import { loadCredentials, PASSWORD_ENV, USERNAME_ENV } from "./bridges/mqtt/credentials.ts";
import { localMachine, mqttIdentity } from "./bridges/mqtt/identity.ts";
import {
  BRIDGE_STOP_GRACE_MS,
  mqttBridgeArgs,
  mqttBridgePermissions,
  type MqttSettings,
  mqttSettings,
} from "./bridges/mqtt/settings.ts";

const ROOT = new URL(".", import.meta.url).pathname;
/** A child as the launcher starts it: which ends of the remote link it holds, if any. */
interface LaunchedChild extends ChildSpec {
  /** The link's ends it holds: looked at before it starts again (see `repairLauncherMemory`). */
  linkHolder?: LinkHolder;
}

/** Something at a path that this launcher owns, and so removes when it stops. */
interface Owned {
  kind: PathClaim["kind"];
  path: string;
  identity: string;
  remove: () => void;
}

/** Everything the launcher made or holds, so that it can undo exactly that. */
interface Resources {
  claims: PathClaim[];
  owned: Owned[];
  region?: SharedRegion;
  mirror?: StateFile;
  cell?: StateCell;
  link?: SharedRegion;
  /** The button's FIFO, held open: see `fifo_hold.ts`. */
  fifoHold?: FifoHold;
}

/**
 * Undoes what the launcher did, each step on its own so that one failure skips nothing. A
 * file it made is left in place while another process still uses it (the original C LED maps
 * the state file): removing it would split that process off.
 */
function release(resources: Resources, log: Logger): void {
  const steps: [string, () => void][] = [
    ["release the state", () => resources.cell?.close()],
    ["unmap the state", () => resources.region?.close()],
    ["unmap the remote link", () => resources.link?.close()],
    ["let go of the FIFO", () => resources.fifoHold?.close()],
    ["close the state file", () => resources.mirror?.close()],
    ...resources.owned.map((owned): [string, () => void] => [
      `remove the ${owned.kind} ${JSON.stringify(owned.path)}`,
      () => {
        const users = owned.kind === "FIFO" ? [] : findHolders(owned.identity, { maps: true });
        if (users.length > 0) {
          log.info(
            `Left the ${owned.kind} ${JSON.stringify(owned.path)} in place: pid ${
              users.join(", pid ")
            } still uses it`,
          );
        } else owned.remove();
      },
    ]),
    // One step each: a claim whose record cannot be removed must not keep the others held.
    ...resources.claims.map((claim): [string, () => void] => [
      `give up the claim on the ${claim.kind} ${JSON.stringify(claim.path)}`,
      () => claim.release(),
    ]),
  ];
  for (const [what, step] of steps) {
    try {
      step();
    } catch (error) {
      log.warn(`Could not ${what}: ${(error as Error).message}`);
    }
  }
}

/** The line for a leftover a launcher that died left at a claimed path. */
function adopting(claim: PathClaim): string {
  return `Adopting the ${claim.kind} ${
    JSON.stringify(claim.path)
  } left by launcher pid ${claim.leftover?.pid}, which did not stop cleanly`;
}

/**
 * Makes the button's FIFO or takes over a leftover of ours; a FIFO another program reads is
 * refused (presses would go to whichever reads first), anything else at the path is refused.
 * Returns the identity of the FIFO at the path.
 */
function prepareFifo(claim: PathClaim, resources: Resources, log: Logger): string {
  const path = claim.path;
  const existing = statPath(path);
  // The FIFO itself too, before it is used or taken over: it may be in use under another name.
  if (existing !== undefined) claim.claimFile(existing.identity);
  if (existing === undefined || claim.leftover?.identity === existing.identity) {
    if (existing !== undefined) {
      refuseIfRead(path, existing.identity);
      log.info(adopting(claim));
    }
    // Unlike the state file (see prepareMirror()), a FIFO cannot be made unnamed: one killed
    // between mkfifo and this record leaves a FIFO the next launcher uses but keeps as the user's.
    const { identity } = existing ?? createFifo(path);
    claim.record(identity);
    ownFifo(resources, path, identity);
    // Made just now, and already owned: refused here, it is removed again.
    if (existing === undefined) claim.claimFile(identity);
    return identity;
  }
  if (existing.type === "file") {
    const refused = `Cannot use FIFO ${JSON.stringify(path)}: it is a regular file, not a FIFO; ` +
      "it is left as it is.";
    // The usual way one comes: a press written (`echo 0 > FIFO`) while no launcher ran. Only
    // such a file gets an rm to copy: a --fifo mistyped onto a file of the user's must not.
    if (onlyPresses(path, existing.size)) {
      throw new Deno.errors.AlreadyExists(
        `${refused} A press written while no launcher ran (echo 0 > FIFO) makes such a file, ` +
          `and it holds only presses: if nothing in it is yours, remove it ` +
          `(rm ${shellQuote(path)}) and start again`,
      );
    }
    throw new Deno.errors.AlreadyExists(
      `${refused} It holds ${existing.size} bytes that are not presses written into it (a file ` +
        "of yours, or a --fifo mistyped?): give another --fifo PATH",
    );
  }
  checkOwn(existing, "fifo", "use FIFO", path);
  refuseIfRead(path, existing.identity);
  log.info(`Using the FIFO ${JSON.stringify(path)} that was already there; it stays after exit`);
  const openToOthers = describeOpenToOthers("FIFO", path, existing.permissions);
  if (openToOthers !== undefined) log.warn(openToOthers);
  return existing.identity;
}

/** The most a file of presses written while no launcher ran is thought to hold. */
const PRESSES_FILE_MAX_BYTES = 64;

/**
 * Whether the regular file at `path` (of `size` bytes) holds only what presses written into a
 * FIFO path with no FIFO there leave (`0`, `press`, `1` and blank lines), and is small.
 */
function onlyPresses(path: string, size: number): boolean {
  if (size > PRESSES_FILE_MAX_BYTES) return false;
  const text = readFileText(path);
  return text !== undefined && /^(\s*(0|1|press)?\s*\n)*\s*(0|1|press)?\s*$/.test(text);
}

/** Notes that the FIFO with `identity` at `path` is the launcher's to remove at exit. */
function ownFifo(resources: Resources, path: string, identity: string): void {
  const owned = resources.owned.find((entry) => entry.kind === "FIFO");
  if (owned !== undefined) {
    owned.identity = identity;
    return;
  }
  const entry: Owned = {
    kind: "FIFO",
    path,
    identity,
    // The entry's identity at exit: the last FIFO the launcher made there.
    remove: () => removeIfSame(path, entry.identity, "remove FIFO"),
  };
  resources.owned.push(entry);
}

/**
 * Claims and records each FIFO the launcher makes again (see `fifo_keeper.ts`): keyed anew if its
 * directory was made again too, so a second launcher on the path still meets the claim. Called
 * again for the same FIFO after a failure (the keeper tries again after a shortage of fds), it
 * takes only the steps not done yet.
 */
function fifoClaimer(claim: PathClaim, resources: Resources): (identity: string) => void {
  let claimed: { identity: string; done: Set<number> } | undefined;
  return (identity) => {
    if (claimed?.identity !== identity) {
      ownFifo(resources, claim.path, identity);
      claimed = { identity, done: new Set() };
    }
    const { done } = claimed;
    // Each step on its own, so that whatever fails, a launcher after this one still knows the
    // FIFO for ours; the first failure is told after the rest were done.
    let failed: unknown;
    const steps = [
      // Held first: until then a button looking at the new FIFO could take it for unread.
      () => resources.fifoHold?.hold(claim.path, identity),
      () => claim.record(identity),
      () => claim.claimFile(identity),
      () => claim.rekey(),
    ];
    for (const [index, step] of steps.entries()) {
      if (done.has(index)) continue;
      try {
        step();
        done.add(index);
      } catch (error) {
        failed ??= error;
      }
    }
    if (failed !== undefined) throw failed;
  };
}

/**
 * Holds the FIFO at `path` with `hold` (see `fifo_hold.ts`) unless it is held already: the one
 * found or made at the start, and a user's put there since. One that cannot be held (mode 0200)
 * is said once, and tried again when the keeper sees its mode change.
 */
function fifoHolder(hold: FifoHold, path: string, log: Logger): (identity: string) => void {
  let refused: string | undefined;
  return (identity) => {
    if (hold.holds(identity)) return;
    try {
      hold.hold(path, identity);
    } catch (error) {
      if (refused !== identity) {
        log.warn(
          `${(error as Error).message}; a press written as the button restarts may be lost ` +
            "(tried again when its mode changes)",
        );
      }
      refused = identity;
      return;
    }
    if (refused === identity) log.info(`Holding the FIFO ${JSON.stringify(path)} now`);
    refused = undefined;
  };
}

/**
 * Opens the state file (or shm object) the state is mirrored to: made here (and then ours to
 * remove), taken over from a launcher that died, or, when it was there already (the original's
 * `/tmp/data.dat`), used in place and never removed. A file that holds anything but a state is
 * refused and left exactly as it is.
 */
function prepareMirror(claim: PathClaim, resources: Resources, log: Logger): StateFile {
  const shm = claim.kind === "shared memory";
  const path = claim.path;
  // A file made here is recorded before it has its name: a launcher killed at any instant
  // leaves nothing at the path, or a file its record names, which the next one adopts.
  let recorded = false;
  const options = {
    create: true,
    beforeLink: (made: string): void => {
      recorded = true;
      claim.record(made);
    },
  };
  const mirror = shm ? openStateShm(path, options) : openStateFile(path, options);
  const identity = mirror.identity;
  const remove = shm
    ? () => removeShmIfSame(path, identity)
    : () => removeIfSame(path, identity, "remove state file");
  try {
    // The file itself too, before it is used or taken over: it may be in use under another name.
    claim.claimFile(identity);
  } catch (error) {
    mirror.close();
    try {
      if (mirror.created) remove();
      // Nothing of ours at the path any more: a dead launcher's leftover, if any, stays recorded.
      if (recorded) claim.record(undefined);
    } catch {
      // The refusal above is the error that matters: a failure to remove would hide it.
    }
    throw error;
  }
  const leftover = claim.leftover?.identity === identity;
  if (leftover) log.info(adopting(claim));
  if (mirror.created || leftover) {
    claim.record(identity);
    resources.owned.push({ kind: claim.kind, path, identity, remove });
  } else {
    // Another process put a file at the path as ours was to be named: the record takes it back.
    if (recorded) claim.record(undefined);
    log.info(`Keeping the state in ${JSON.stringify(path)} too, which was there already; it stays`);
  }
  const openToOthers = describeMirrorOpenToOthers(mirror, shm);
  if (openToOthers !== undefined) log.warn(openToOthers);
  return mirror;
}

/**
 * Under `deno task` (or `npx deno task`), stops the launcher when the task runner dies: killed
 * with SIGKILL it passes nothing on, and the launcher went on running, re-parented, with both
 * children. The kernel's parent-death signal would follow the runner's thread that started us,
 * not the runner: this watches the runner's process (a pidfd). Returns what stops watching.
 */
function stopWithTaskRunner(stop: AbortController, log: Logger): FdWaiter | undefined {
  if (taskDirectory() === undefined) return undefined;
  const runner = Deno.ppid;
  const pidfd = openPidfd(runner);
  if (pidfd === undefined) {
    log.warn(`The task runner (pid ${runner}) is gone: stopping`);
    stop.abort();
    return undefined;
  }
  const waiter = new FdWaiter();
  waiter.wait(pidfd).then((readiness) => {
    // A pidfd is readable once its process has ended; a failed poll says nothing of that.
    if (readiness === "error") log.warn(`Cannot watch the task runner (pid ${runner}) any more`);
    else if (readiness !== "cancelled" && !stop.signal.aborted) {
      log.warn(`The task runner (pid ${runner}) is gone: stopping`);
      stop.abort();
    }
  }).finally(() => waiter.close().then(() => closeFd(pidfd)));
  return waiter;
}

/** The flags that name a file: a relative one is meant from where the user ran `deno task`. */
const PATH_FLAGS = ["state", "fifo", "mqttCredentials", "mqttCa"] as const satisfies readonly (
  keyof LaunchFlags
)[];

/** The launcher's state as its children reach it. */
interface SharedState {
  region: SharedRegion;
  mirror?: StateFile;
}

/**
 * The flags that name the state and set up logging, which every child takes: the memfd and
 * the very inode of the state file, both through this process's fds, so every child uses the
 * same ones for the launcher's whole life, whatever happens to the paths.
 */
function commonArgs(flags: LaunchFlags, state: SharedState): string[] {
  const { region, mirror } = state;
  const mirrorArgs = mirror === undefined ? [] : [
    "--mirror",
    `/proc/${Deno.pid}/fd/${mirror.fd}`,
    flags.state ? "--state" : "--shm",
    mirror.path,
  ];
  return [
    "--memfd",
    region.name,
    ...mirrorArgs,
    "--log-level",
    flags.logLevel,
    "--log-format",
    flags.logFormat ?? defaultLogFormat(),
  ];
}

/**
 * The button and the LED as the launcher runs them: with `fifo` (the PC build), the FIFO it
 * made or looked at, `fifoIdentity` naming it; with `link`, the remote link to the bridge.
 */
function childSpecs(
  flags: LaunchFlags,
  state: SharedState,
  where: { fifo?: string; fifoIdentity?: string; link?: SharedRegion },
): LaunchedChild[] {
  const { fifo, fifoIdentity, link } = where;
  const remote = link === undefined ? [] : ["--remote", link.name];
  const common = commonArgs(flags, state);
  const option = (name: string, value: unknown): string[] =>
    value === undefined ? [] : [name, String(value)];
  if (flags.pi) {
    const permissions = ["--allow-ffi", `--allow-env=${LIBGPIOD_ENV}`];
    const env = [LIBGPIOD_ENV];
    const chip = option("--chip", flags.chip);
    return [
      {
        name: "led",
        script: `${ROOT}consumers/led.ts`,
        permissions,
        env,
        args: [
          ...common,
          "--pi",
          ...chip,
          ...option("--line", flags.ledLine),
          ...(flags.syslog ? ["--syslog"] : []),
        ],
      },
      {
        name: "button",
        script: `${ROOT}producers/button.ts`,
        permissions,
        env,
        args: [
          ...common,
          "--pi",
          ...chip,
          ...option("--line", flags.buttonLine),
          ...option("--debounce-ms", flags.debounceMs),
          ...remote,
        ],
        linkHolder: "button",
      },
    ];
  }
  return [
    {
      name: "led",
      script: `${ROOT}consumers/led.ts`,
      permissions: ["--allow-ffi"],
      args: [...common, ...(flags.syslog ? ["--syslog"] : [])],
    },
    {
      name: "button",
      script: `${ROOT}producers/button.ts`,
      permissions: ["--allow-ffi"],
      args: [...common, "--fifo", fifo as string, "--fifo-from-parent", ...remote],
      // Made, or looked at for other readers, by prepareFifo() just before: a restart looks,
      // and so does the first start if another FIFO was put there since.
      firstArgs: fifoIdentity === undefined ? [] : ["--fifo-checked", fifoIdentity],
      linkHolder: "button",
    },
  ];
}

/** Opens and releases both GPIO lines once, so a wiring or setup problem shows before any child starts. */
async function checkGpio(flags: LaunchFlags, log: Logger): Promise<void> {
  const button = openGpioButton({
    chip: flags.chip,
    line: flags.buttonLine,
    debounceMs: flags.debounceMs,
  });
  const where = button.description;
  await button.close();
  const led = openGpioLed({ chip: flags.chip, line: flags.ledLine });
  log.info(`Press the button on ${where}; the LED is on ${led.description}`);
  led.close();
}

/**
 * What the bridge reads of the environment besides its runtime's variables: the login when no
 * credentials file is given, and where Deno's TLS finds extra CA certificates. Never `DEBUG`,
 * with which the MQTT library would log every packet, the password in CONNECT included.
 */
function bridgeEnv(settings: MqttSettings): string[] {
  return [
    ...(settings.credentialsFile === undefined ? [USERNAME_ENV, PASSWORD_ENV] : []),
    "DENO_CERT",
    "DENO_TLS_CA_STORE",
    "NODE_EXTRA_CA_CERTS",
  ];
}

/** The MQTT bridge: a third child, reading the state and talking to the button over `link`. */
function bridgeSpec(
  flags: LaunchFlags,
  settings: MqttSettings,
  state: SharedState,
  link: SharedRegion,
): LaunchedChild {
  return {
    name: "mqtt",
    linkHolder: "controller",
    script: `${ROOT}bridges/mqtt_bridge.ts`,
    permissions: mqttBridgePermissions(settings),
    env: bridgeEnv(settings),
    // Its close says goodbye to the broker, which may take longer than a plain child's stop.
    stopGraceMs: BRIDGE_STOP_GRACE_MS,
    args: [
      ...commonArgs(flags, state),
      "--remote",
      link.name,
      ...(flags.pi ? ["--pi"] : []),
      ...mqttBridgeArgs(settings),
    ],
  };
}

/**
 * Refuses to start when this launcher may not run the Deno binary its children need, before
 * anything is claimed or made: otherwise each child's start fails, and the launcher stops only
 * after a crash loop. `--allow-run` names a path as it is given: a symlink to Deno (`/usr/bin/deno`)
 * is not the binary `Deno.execPath()` names.
 */
function checkMayStartDeno(): void {
  const deno = Deno.execPath();
  const missing: string[] = [];
  // Both said at once: a user who mends one should not meet the other at the next try.
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    missing.push("it may not call libc, which holds the shared memory; give it --allow-ffi");
  }
  if (Deno.permissions.querySync({ name: "run", command: deno }).state !== "granted") {
    missing.push(
      `it may not run the Deno binary ${JSON.stringify(deno)}; give it --allow-run=${
        shellQuote(deno)
      } (that file, not a symlink to it)`,
    );
  }
  if (missing.length === 0) return;
  throw new Deno.errors.NotCapable(
    `Cannot start the button and LED: ${missing.join("; and ")}. Or run it with deno task ` +
      "launch, which gives it what it needs",
  );
}

async function main(flags: LaunchFlags, mqtt: MqttSettings | undefined): Promise<number> {
  setupLogging({ level: flags.logLevel, format: flags.logFormat });
  const log = logger("launch");
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  // Looked at first: adding any signal listener takes an inherited ignoring away.
  const ignored = ignoredAtStart();
  Deno.addSignalListener("SIGTERM", onSignal);
  // Ctrl+C and a closed terminal: stop and clean up as for SIGTERM (by default each ends us on
  // the spot), unless started with the signal ignored, which asks for a launcher they leave
  // running (see ignoredAtStart). A listener that does nothing keeps it ignored.
  Deno.addSignalListener("SIGINT", ignored.interrupt ? () => {} : onSignal);
  Deno.addSignalListener("SIGHUP", ignored.hangUp ? () => {} : onSignal);
  unblockStopSignals();
  if (ignored.hangUp) {
    log.info("Started with SIGHUP ignored (nohup): a closed terminal leaves it running");
  }
  if (ignored.interrupt) {
    log.info(
      "Started with SIGINT ignored (a background job of a script): Ctrl+C leaves it running; " +
        "SIGTERM stops it",
    );
  }

  const resources: Resources = { claims: [], owned: [] };
  let keepingClaims: Promise<void> | undefined;
  let keepingFifo: Promise<void> | undefined;
  const taskRunner = stopWithTaskRunner(stop, log);
  try {
    checkMayStartDeno();
    // A missing or unsafe file is reported now, not as the bridge's crash loop later, and
    // before the claims: only reading it, and a mistake in it is the first thing to hear of.
    if (mqtt?.credentialsFile !== undefined) loadCredentials(mqtt.credentialsFile);
    if (mqtt?.caFile !== undefined) readCaFile(mqtt.caFile);
    // Claims first: a launcher that loses here has made, changed and removed nothing.
    const fifo = flags.pi ? undefined : flags.fifo ?? defaultFifoPath();
    const shm = flags.shm === undefined ? undefined : normalizeShmName(flags.shm);
    // The bridge is handed the prefix claimed here, so it publishes under no other.
    const bridged = mqtt === undefined
      ? undefined
      : { ...mqtt, ...mqttIdentity(mqtt, (await localMachine()).name) };
    resources.claims = claimPaths([
      ...(flags.state === undefined ? [] : [{ kind: "state file" as const, path: flags.state }]),
      ...(shm === undefined ? [] : [{ kind: "shared memory" as const, path: shm }]),
      ...(fifo === undefined ? [] : [{ kind: "FIFO" as const, path: fifo }]),
      ...(bridged === undefined
        ? []
        : [{ kind: "MQTT topic prefix" as const, path: bridged.prefix }]),
    ], {
      onSharedRefused: (reason) =>
        log.warn(
          `${reason}: claims are kept in this session's directory alone, so a launcher started ` +
            "outside the session would not meet them",
        ),
    });
    const claimOf = (kind: PathClaim["kind"]): PathClaim | undefined =>
      resources.claims.find((claim) => claim.kind === kind);
    const fifoClaim = claimOf("FIFO");
    const fifoIdentity = fifoClaim && prepareFifo(fifoClaim, resources, log);
    const holdFifo = fifoClaim && fifoIdentity !== undefined
      ? fifoHolder(resources.fifoHold = new FifoHold(), fifoClaim.path, log)
      : undefined;
    if (fifoIdentity !== undefined) holdFifo?.(fifoIdentity);
    const mirrorClaim = claimOf("state file") ?? claimOf("shared memory");
    if (mirrorClaim !== undefined) resources.mirror = prepareMirror(mirrorClaim, resources, log);

    // The state itself lives in a sealed memfd: nobody can truncate it under our processes.
    const region = createMemfdRegion({ size: STATE_REGION_SIZE, label: "mmap-ipc-state" });
    resources.region = region;
    const state: SharedState = { region, mirror: resources.mirror };
    resources.cell = openStateCell(region, { supervisor: true });
    // A fresh launch starts Off, whatever an earlier run left behind.
    using writer = openStateCell(region, { writer: true, mirror: resources.mirror });
    writer.write(0);
    writer.close();

    if (mqtt !== undefined) resources.link = createRemoteLink();

    if (flags.pi) {
      await checkGpio(flags, log);
    } else {
      log.info(`Press the button with: echo 0 > ${shellQuote(fifo ?? "")}`);
    }

    // Records removed while this runs (rm -rf of the runtime directory) are put back.
    keepingClaims = keepClaims(resources.claims, { signal: stop.signal, log });
    // The button makes no FIFO under a launcher (--fifo-from-parent): this makes each one.
    if (fifoClaim !== undefined && fifoIdentity !== undefined) {
      keepingFifo = keepFifo(fifoClaim.path, {
        identity: fifoIdentity,
        remakeDirectory: isRuntimeDirectory(parentOf(fifoClaim.path)),
        onMade: fifoClaimer(fifoClaim, resources),
        onFifo: holdFifo,
        onGone: () => resources.fifoHold?.release(),
        signal: stop.signal,
        log,
      });
    }

    const supervise = (spec: LaunchedChild): Supervisor =>
      new Supervisor(spec, {
        log,
        config: `${ROOT}deno.json`,
        // The memfds are the launcher's own; their seals stop truncation, not writes through
        // /proc/PID/fd/N: a child must find them sound.
        beforeRestart: () => {
          repairLauncherMemory({ state: region, link: resources.link }, {
            child: spec.name,
            log,
            linkHolder: spec.linkHolder,
          });
        },
      });
    const supervisors = childSpecs(flags, state, { fifo, fifoIdentity, link: resources.link }).map(
      supervise,
    );
    const bridge = bridged !== undefined && resources.link !== undefined
      ? supervise(bridgeSpec(flags, bridged, state, resources.link))
      : undefined;
    if (fifo !== undefined && Deno.stdin.isTerminal()) {
      const pressPath = fifo;
      pressOnEnter(pressPath, { signal: stop.signal, log }).catch((error) =>
        log.warn(
          `Enter no longer presses: ${(error as Error).message}; press with echo 0 > ${
            shellQuote(pressPath)
          }`,
        )
      );
    }
    const running = supervisors.map((supervisor) => supervisor.run(stop.signal));
    // The bridge is optional: whatever ends it, the button and LED carry on without it.
    const bridging = bridge?.run(stop.signal).catch((error: Error) => {
      const why = error instanceof ChildCrashLoop ? error.message : `mqtt failed: ${error.message}`;
      log.error(`${why}; the button and LED keep running without MQTT`);
    });
    try {
      await Promise.race([
        Promise.all(running),
        new Promise((resolve) => stop.signal.addEventListener("abort", resolve)),
      ]);
    } catch (error) {
      stop.abort();
      await Promise.allSettled([...running, bridging]);
      if (error instanceof ChildCrashLoop) {
        log.error(`Stopping: ${error.message}`);
        return 1;
      }
      throw error;
    }
    await Promise.allSettled([...running, bridging]);
    log.info("Stopped");
    return 0;
  } finally {
    await taskRunner?.close();
    stop.abort();
    await keepingClaims;
    await keepingFifo;
    release(resources, log);
    // The signal listeners stay until the process exits, right after this: a second SIGTERM (a
    // supervisor's, a second Ctrl+C) that came once they were gone ended the process on the
    // spot, its paths and claims left behind, or its last lines unwritten.
  }
}

if (import.meta.main) {
  const flags = fromTaskDirectory(parseCommandLine(LAUNCH_COMMAND), PATH_FLAGS);
  let mqtt: MqttSettings | undefined;
  try {
    mqtt = mqttSettings(flags);
  } catch (error) {
    printLine("stderr", `launch: ${(error as Error).message}\n\n${usage(LAUNCH_COMMAND)}`);
    Deno.exit(2);
  }
  let code: number;
  try {
    code = await main(flags, mqtt);
  } catch (error) {
    if (error instanceof SameFileError) {
      printLine("stderr", `launch: ${error.message}\n\n${usage(LAUNCH_COMMAND)}`);
      code = 2;
    } else {
      printLine("stderr", `launch: ${(error as Error).message}`);
      code = 1;
    }
  }
  await flushConsole();
  Deno.exit(code);
}
