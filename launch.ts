/**
 * The launcher: creates the shared state and the button's FIFO, starts the button and the LED
 * as separate processes, restarts them when they die, and on Ctrl+C or SIGTERM stops both and
 * removes what it created. `deno task launch` runs it.
 *
 * @module
 */

import { openStateRegion } from "./app/cli.ts";
import { parseCommandLine } from "./app/flags.ts";
import { LAUNCH_COMMAND, type LaunchFlags } from "./app/launch_command.ts";
import type { Logger } from "@logtape/logtape";
import { defaultLogFormat, logger, setupLogging } from "./app/logging.ts";
import { defaultFifoPath } from "./app/runtime_dir.ts";
import { ChildCrashLoop, type ChildSpec, Supervisor } from "./app/supervisor.ts";
import * as C from "./ffi/constants.ts";
import { closeFd, flockHolder, openPath, statFd, tryLockExclusive, writeFd } from "./ffi/posix.ts";
import { LIBGPIOD_ENV } from "./ffi/gpiod.ts";
import { createFifo, removeIfSame } from "./lib/owned_path.ts";
import { openGpioButton } from "./hw/gpio_button.ts";
import { openGpioLed } from "./hw/gpio_led.ts";
import { openStateCell, type SharedRegion, type StateCell } from "./mod.ts";
import { usage } from "./app/flags.ts";
import { createRemoteLink } from "./app/remote/link.ts";
import { readCaFile } from "./bridges/mqtt/ca_file.ts";
import { loadCredentials } from "./bridges/mqtt/credentials.ts";
import {
  mqttBridgeArgs,
  mqttBridgePermissions,
  type MqttSettings,
  mqttSettings,
} from "./bridges/mqtt/settings.ts";

const ROOT = new URL(".", import.meta.url).pathname;

/** Everything the launcher made or holds, so that it can undo exactly that. */
interface Resources {
  region?: SharedRegion;
  regionCreated?: boolean;
  cell?: StateCell;
  fifoPath?: string;
  fifoIdentity?: string;
  fifoCreated?: boolean;
  fifoFd?: number;
  link?: SharedRegion;
}

/** Undoes what the launcher did, each step on its own so that one failure skips nothing. */
function release(resources: Resources, log: Logger): void {
  const steps: [string, () => void][] = [
    ["close the FIFO", () => resources.fifoFd !== undefined && closeFd(resources.fifoFd)],
    ["remove the FIFO", () => {
      if (resources.fifoCreated && resources.fifoPath && resources.fifoIdentity) {
        removeIfSame(resources.fifoPath, resources.fifoIdentity, "remove FIFO");
      }
    }],
    ["release the state", () => resources.cell?.close()],
    ["remove the state", () => {
      if (resources.regionCreated && resources.region?.kind !== "memfd") resources.region?.unlink();
    }],
    ["unmap the state", () => resources.region?.close()],
    ["unmap the remote link", () => resources.link?.close()],
  ];
  for (const [what, step] of steps) {
    try {
      step();
    } catch (error) {
      log.warn(`Could not ${what}: ${(error as Error).message}`);
    }
  }
}

/**
 * Holds a read end of the FIFO, locked: writers never block or fail while the button restarts,
 * and a second launcher on the same FIFO is refused by pid.
 */
function holdFifo(path: string, identity: string): number {
  const fd = openPath(path, C.O_RDONLY | C.O_NONBLOCK | C.O_NOFOLLOW | C.O_CLOEXEC, 0, "open FIFO");
  const stat = statFd(fd, path);
  if (stat.identity !== identity) {
    closeFd(fd);
    throw new Deno.errors.InvalidData(
      `Cannot open FIFO ${JSON.stringify(path)}: it was replaced while starting`,
    );
  }
  if (!tryLockExclusive(fd, path)) {
    closeFd(fd);
    const holder = flockHolder(stat.lockIdentity);
    throw new Deno.errors.Busy(
      `Cannot launch: another launcher${holder ? ` (pid ${holder})` : ""} is using the FIFO ${
        JSON.stringify(path)
      }`,
    );
  }
  return fd;
}

/** Writes one press into the FIFO, for Enter in the launcher's terminal. */
function pressOnce(path: string): void {
  const fd = openPath(
    path,
    C.O_WRONLY | C.O_NONBLOCK | C.O_NOFOLLOW | C.O_CLOEXEC,
    0,
    "press through FIFO",
  );
  try {
    writeFd(fd, new TextEncoder().encode("press\n"), path);
  } finally {
    closeFd(fd);
  }
}

async function pressOnEnter(path: string, signal: AbortSignal): Promise<void> {
  const reader = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
  for (;;) {
    const { value, done } = await reader.read();
    if (done || signal.aborted) return;
    for (const _ of value.matchAll(/\n/g)) pressOnce(path);
  }
}

/** The flags that name the state and set up logging, which every child takes. */
function commonArgs(flags: LaunchFlags, region: SharedRegion): string[] {
  const stateArgs = region.kind === "memfd"
    ? ["--memfd", region.name]
    : region.kind === "posix"
    ? ["--shm", region.name]
    : ["--state", region.name];
  return [
    ...stateArgs,
    "--log-level",
    flags.logLevel,
    "--log-format",
    flags.logFormat ?? defaultLogFormat(),
  ];
}

function childSpecs(
  flags: LaunchFlags,
  region: SharedRegion,
  fifo: string | undefined,
  link: SharedRegion | undefined,
): ChildSpec[] {
  const remote = link === undefined ? [] : ["--remote", link.name];
  const common = commonArgs(flags, region);
  const option = (name: string, value: unknown): string[] =>
    value === undefined ? [] : [name, String(value)];
  if (flags.pi) {
    const permissions = ["--allow-ffi", `--allow-env=${LIBGPIOD_ENV}`];
    const chip = option("--chip", flags.chip);
    return [
      {
        name: "led",
        script: `${ROOT}consumers/led.ts`,
        permissions,
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
        args: [
          ...common,
          "--pi",
          ...chip,
          ...option("--line", flags.buttonLine),
          ...option("--debounce-ms", flags.debounceMs),
          ...remote,
        ],
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
      args: [...common, "--fifo", fifo as string, ...remote],
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

/** The MQTT bridge: a third child, reading the state and talking to the button over `link`. */
function bridgeSpec(
  flags: LaunchFlags,
  settings: MqttSettings,
  region: SharedRegion,
  link: SharedRegion,
): ChildSpec {
  return {
    name: "mqtt",
    script: `${ROOT}bridges/mqtt_bridge.ts`,
    permissions: mqttBridgePermissions(settings),
    args: [
      ...commonArgs(flags, region),
      "--remote",
      link.name,
      ...(flags.pi ? ["--pi"] : []),
      ...mqttBridgeArgs(settings),
    ],
  };
}

async function main(flags: LaunchFlags, mqtt: MqttSettings | undefined): Promise<number> {
  await setupLogging({ level: flags.logLevel, format: flags.logFormat });
  const log = logger("launch");
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  const resources: Resources = {};
  try {
    const { region, created } = openStateRegion(flags, { anonymous: true });
    resources.region = region;
    resources.regionCreated = created;
    try {
      resources.cell = openStateCell(region, { supervisor: true });
    } catch (error) {
      if (error instanceof Deno.errors.Busy) {
        throw new Deno.errors.Busy(
          `Cannot launch: another launcher is running on this state (${error.message})`,
        );
      }
      throw error;
    }
    // A fresh launch starts Off, whatever an earlier run left behind.
    using writer = openStateCell(region, { writer: true });
    writer.write(0);
    writer.close();

    if (mqtt !== undefined) {
      // A missing or unsafe file is reported now, not as the bridge's crash loop later.
      if (mqtt.credentialsFile !== undefined) loadCredentials(mqtt.credentialsFile);
      if (mqtt.caFile !== undefined) readCaFile(mqtt.caFile);
      resources.link = createRemoteLink();
    }

    let fifo: string | undefined;
    if (flags.pi) {
      await checkGpio(flags, log);
    } else {
      fifo = flags.fifo ?? defaultFifoPath();
      const { identity, created: fifoCreated } = createFifo(fifo);
      Object.assign(resources, { fifoPath: fifo, fifoIdentity: identity, fifoCreated });
      resources.fifoFd = holdFifo(fifo, identity);
      log.info(`Press the button with: echo 0 > ${fifo}`);
    }

    const config = `${ROOT}deno.json`;
    const supervisors = childSpecs(flags, region, fifo, resources.link).map((spec) =>
      new Supervisor(spec, { log, config })
    );
    const bridge = mqtt !== undefined && resources.link !== undefined
      ? new Supervisor(bridgeSpec(flags, mqtt, region, resources.link), { log, config })
      : undefined;
    if (fifo !== undefined && Deno.stdin.isTerminal()) {
      log.info("...or press Enter here. Ctrl+C stops everything.");
      const pressPath = fifo;
      pressOnEnter(pressPath, stop.signal).catch((error) =>
        log.warn(`Enter no longer presses: ${error.message}`)
      );
    }
    const running = supervisors.map((supervisor) => supervisor.run(stop.signal));
    // The bridge is optional: if it keeps crashing, the button and LED carry on without it.
    const bridging = bridge?.run(stop.signal).catch((error) => {
      if (!(error instanceof ChildCrashLoop)) throw error;
      log.error(`${error.message}; the button and LED keep running without MQTT`);
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
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    release(resources, log);
  }
}

if (import.meta.main) {
  const flags = parseCommandLine(LAUNCH_COMMAND);
  let mqtt: MqttSettings | undefined;
  try {
    mqtt = mqttSettings(flags);
  } catch (error) {
    console.error(`launch: ${(error as Error).message}\n\n${usage(LAUNCH_COMMAND)}`);
    Deno.exit(2);
  }
  let code: number;
  try {
    code = await main(flags, mqtt);
  } catch (error) {
    console.error(`launch: ${(error as Error).message}`);
    code = 1;
  }
  Deno.exit(code);
}
