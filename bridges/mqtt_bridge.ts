/**
 * The MQTT bridge process: shows the button and LED on an MQTT broker and in Home Assistant.
 * It reads the state cell (sleeping on it between changes: no polling) and publishes the LED
 * state; it hears `set` commands and hands them to the button process through the remote
 * link, so the button stays the cell's only writer; it publishes the presses the button
 * process reports. The launcher starts it with `--mqtt URL`.
 *
 * Run `deno run bridges/mqtt_bridge.ts --help` for its flags.
 *
 * @module
 */

import {
  exitWhenFlushed,
  logFlags,
  MEMFD_FLAG,
  openSystemState,
  PARENT_PID_FLAG,
  shutdownSignal,
  STATE_FLAGS,
} from "../app/cli.ts";
import {
  type CommandFlags,
  defineCommand,
  parseCommandLine,
  printLine,
  usage,
} from "../app/flags.ts";
import { logger, setupLogging } from "../app/logging.ts";
import { BacklogReport } from "./mqtt/backlog_report.ts";
import { CommandForwarder } from "../app/remote/command_forwarder.ts";
import { openCommandSender, openEventReceiver, openRemoteLink } from "../app/remote/link.ts";
import { pressAgeMs } from "../app/remote/messages.ts";
import { monotonicMillis } from "../ffi/posix.ts";
import { openStateCell } from "../mod.ts";
import config from "../deno.json" with { type: "json" };
import { MqttBridge } from "./mqtt/bridge.ts";
import { readCaFile } from "./mqtt/ca_file.ts";
import { loadCredentials } from "./mqtt/credentials.ts";
import { discoveryMessages } from "./mqtt/discovery.ts";
import { localMachine, mqttIdentity } from "./mqtt/identity.ts";
import { MQTT_FLAGS, type MqttSettings, mqttSettings } from "./mqtt/settings.ts";
import { deviceId, topicsFor } from "./mqtt/topics.ts";
import { watchCommand } from "./mqtt/watch_command.ts";
import { failureExitStatus } from "../app/exit_status.ts";

/**
 * A press this bridge gets to longer than this after the button made it is dropped, not
 * published: a press reaches the bridge within microseconds, and after a flood of commands
 * (which keeps it busy for a second or two) within a few seconds.
 */
const LATE_PRESS_MS = 5_000;

/** The MQTT bridge process's command line. */
export const MQTT_BRIDGE_COMMAND = defineCommand({
  name: "mqtt",
  synopsis: [
    "deno run --allow-ffi --allow-env --allow-net \\",
    "    bridges/mqtt_bridge.ts (--state PATH | --shm NAME) --remote PATH --mqtt URL [options]",
  ],
  description: "The MQTT bridge: publishes the LED state and each press, and applies ON, OFF " +
    "and TOGGLE from PREFIX/led/set through the button process. The launcher starts it: " +
    "deno task launch --mqtt URL.",
  flags: {
    ...STATE_FLAGS,
    ...MEMFD_FLAG,
    remote: {
      type: "string",
      arg: "PATH",
      required: true,
      help: "the launcher's remote link, /proc/PID/fd/N, shared with the button process",
    },
    pi: { type: "boolean", help: "describe the device to Home Assistant as the Pi build" },
    ...logFlags("each command from the broker and each attempt to reconnect"),
    ...PARENT_PID_FLAG,
    ...MQTT_FLAGS,
  },
  exclusive: [{ flags: ["state", "shm"] }, {
    flags: ["state", "shm", "memfd"],
    required: true,
    combinable: true,
  }],
});

/** The bridge's parsed flags. */
export type MqttBridgeFlags = CommandFlags<typeof MQTT_BRIDGE_COMMAND>;

async function main(flags: MqttBridgeFlags, settings: MqttSettings): Promise<void> {
  // Logging first: a child that does not start says why in the format asked for.
  setupLogging({ level: flags.logLevel, format: flags.logFormat });
  const signal = shutdownSignal(flags.parentPid);
  const log = logger("mqtt");
  const credentials = loadCredentials(settings.credentialsFile);
  const ca = settings.caFile === undefined ? undefined : readCaFile(settings.caFile);
  const { hostname, name } = await localMachine();
  const { prefix, clientId } = mqttIdentity(settings, name);
  const topics = topicsFor(prefix);

  // The link first: a bad --remote then leaves no state file made for nothing.
  using link = openRemoteLink(flags.remote);
  using state = openSystemState(flags);
  if (state.openToOthers !== undefined) log.warn(state.openToOthers);
  const { region, mirror } = state;
  using cell = openStateCell(region, { mirror });
  using commands = openCommandSender(link);
  using events = openEventReceiver(link);
  // Presses made while no bridge ran are old news: publishing them now would fire automations late.
  const stale = events.discardWaiting();
  if (stale > 0) log.debug(`Skipped ${stale} presses made before the bridge started`);
  using backlog = new BacklogReport(log);
  // A forwarder that failed takes no more commands: the bridge ends (saying offline), and the
  // launcher starts it again, with the link repaired if it was written over.
  const failed = new AbortController();
  const stop = AbortSignal.any([signal, failed.signal]);
  using forwarder = new CommandForwarder(commands, {
    onWaiting: (reason) => backlog.waiting(reason),
    onCaughtUp: (merged) => backlog.caughtUp(merged),
    onError: (error) => failed.abort(error),
  });

  const id = deviceId(prefix);
  const bridge = new MqttBridge({
    connection: { url: settings.url, clientId, credentials, ca, caFile: settings.caFile },
    topics,
    discoveryPrefix: settings.discoveryPrefix,
    discovery: discoveryMessages({
      discoveryPrefix: settings.discoveryPrefix,
      deviceId: id,
      deviceName: `mmap-ipc ${hostname}`,
      model: flags.pi ? "Button and LED (Pi build, GPIO)" : "Button and LED (PC build)",
      version: config.version,
      topics,
    }),
    log,
    onCommand: (command) => {
      log.debug(`Command ${command}`);
      if (!failed.signal.aborted) forwarder.submit(command);
    },
  });
  log.info(
    `Bridging to ${settings.url}; watch with: ${watchCommand(settings, prefix, credentials)}`,
  );
  bridge.start();
  try {
    await Promise.all([
      (async () => {
        for await (const state of cell.changes({ signal: stop, current: true })) {
          bridge.setState(state !== 0);
        }
      })(),
      (async () => {
        const onDiscarded = (error: Error, bytes: number): void =>
          log.warn(
            `Skipped a press event written over in the remote link (${error.message}): ` +
              `dropped it and what waited behind it (${bytes} bytes)`,
          );
        // Presses this bridge got to too late (it was stopped, or starved of CPU), in a row.
        let late = 0;
        for await (const message of events.messages(stop, { onDiscarded })) {
          const age = pressAgeMs(message, monotonicMillis());
          if (age === undefined) {
            const what = `${message.length} bytes`;
            log.warn(`Skipped something in the remote link that is no press event (${what})`);
            continue;
          }
          if (age > LATE_PRESS_MS) {
            // Old news, as a press made while no bridge ran is: it would fire automations late.
            if (late++ === 0) {
              log.warn(
                `Dropped a press made ${(age / 1000).toFixed(1)} s ago: this bridge could not ` +
                  "publish it in time (it was stopped, or starved of CPU), and a late press " +
                  "would fire automations late",
              );
            }
            continue;
          }
          if (late > 1) log.info(`Publishing presses again (${late} made too long ago dropped)`);
          late = 0;
          bridge.press();
        }
      })(),
    ]);
  } finally {
    await bridge.close();
  }
  if (failed.signal.aborted) {
    const cause = failed.signal.reason as Error;
    throw new Error(`Cannot hand commands to the button process: ${cause.message}`, { cause });
  }
}

if (import.meta.main) {
  const flags = parseCommandLine(MQTT_BRIDGE_COMMAND);
  let settings: MqttSettings | undefined;
  try {
    settings = mqttSettings(flags);
    if (settings === undefined) throw new TypeError("--mqtt URL is required");
  } catch (error) {
    printLine("stderr", `mqtt: ${(error as Error).message}\n\n${usage(MQTT_BRIDGE_COMMAND)}`);
    Deno.exit(2);
  }
  try {
    await main(flags, settings);
  } catch (error) {
    console.error(`mqtt: ${(error as Error).message}`);
    Deno.exit(failureExitStatus(error));
  }
  await exitWhenFlushed();
}
