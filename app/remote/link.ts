/**
 * The remote link: anonymous shared memory (a memfd) the launcher creates when a remote
 * controller such as the MQTT bridge runs. It holds two channels: commands from the controller
 * to the button process, which applies them as it applies presses (so the button stays the
 * state cell's only writer), and press events from the button process to the controller.
 *
 * @module
 */

import { createMemfdRegion, openMemfdRegion, type SharedRegion } from "../../mod.ts";
import {
  type ChannelReceiver,
  type ChannelSender,
  channelSize,
  initChannel,
  openChannelReceiver,
  openChannelSender,
  restoreChannel,
  restoreChannelEnd,
} from "./channel.ts";

/** Where the command channel lives and how much it holds: 16 commands of up to 8 bytes. */
export const COMMAND_CHANNEL = { offset: 0, capacity: 256 } as const;
/** Where the press-event channel lives and how much it holds: 64 presses. */
export const EVENT_CHANNEL = {
  offset: Math.ceil(channelSize(COMMAND_CHANNEL.capacity) / 64) * 64,
  capacity: 1024,
} as const;
/** Bytes of the link's memory. */
export const REMOTE_LINK_SIZE = 4096;

/** Creates the link, both channels empty; children open it by its `name`. */
export function createRemoteLink(): SharedRegion {
  const region = createMemfdRegion({ size: REMOTE_LINK_SIZE, label: "mmap-ipc-remote" });
  try {
    initChannel(region, COMMAND_CHANNEL);
    initChannel(region, EVENT_CHANNEL);
    return region;
  } catch (error) {
    region.close();
    throw error;
  }
}

/**
 * Who holds ends of the link: the button process (receives commands, sends press events) and
 * the remote controller, such as the MQTT bridge (the other way round).
 */
export type LinkHolder = "button" | "controller";

/** What {@link repairRemoteLink} found, by channel, for a log line. */
export interface LinkRepair {
  /** What was written over and is now put right. */
  mended: string[];
  /** What could not be looked at or put right, and why (an end held by a stray process, say). */
  notMended: string[];
}

/**
 * Writes the ring headers of the link's channels anew where something wrote over them (the link
 * is the launcher's own memfd), and, for a `holder` about to start again, the positions of its
 * ends where they were written over (what was in that channel is dropped). Returns what it put
 * right and what it could not (an end held by a stray process, say), each by channel.
 */
export function repairRemoteLink(link: SharedRegion, holder?: LinkHolder): LinkRepair {
  const repair: LinkRepair = { mended: [], notMended: [] };
  // Each step on its own: one that throws (an end held by a stray process) keeps neither the
  // others from their repair nor what they found from the log line.
  const attempt = (name: string, step: () => string | undefined, dropped = ""): void => {
    try {
      const problem = step();
      if (problem !== undefined) repair.mended.push(`its ${name} channel: ${problem}${dropped}`);
    } catch (error) {
      const why = error instanceof Error ? error.message : String(error);
      repair.notMended.push(`its ${name} channel (${why})`);
    }
  };
  for (
    const [name, channel, ends] of [
      ["command", COMMAND_CHANNEL, { button: "receiver", controller: "sender" }],
      ["press-event", EVENT_CHANNEL, { button: "sender", controller: "receiver" }],
    ] as const
  ) {
    attempt(name, () => restoreChannel(link, channel));
    if (holder === undefined) continue;
    const end = ends[holder];
    attempt(
      name,
      () => restoreChannelEnd(link, { ...channel, end }),
      `; the ${name}s in it dropped`,
    );
  }
  return repair;
}

/** Opens the link the launcher created, by the `/proc/PID/fd/N` path it handed over. */
export function openRemoteLink(path: string): SharedRegion {
  try {
    return openMemfdRegion(path, { size: REMOTE_LINK_SIZE });
  } catch (error) {
    // Named as the flag that gave it: the launcher passes it, and a person running a child by
    // hand reads "memfd" and looks for a --memfd.
    (error as Error).message = `Cannot open the remote link (--remote): ${
      (error as Error).message
    }`;
    throw error;
  }
}

/** The controller's end of the command channel. */
export function openCommandSender(link: SharedRegion): ChannelSender {
  return openChannelSender(link, COMMAND_CHANNEL);
}

/** The button process's end of the command channel. */
export function openCommandReceiver(link: SharedRegion): ChannelReceiver {
  return openChannelReceiver(link, COMMAND_CHANNEL);
}

/** The button process's end of the press-event channel. */
export function openEventSender(link: SharedRegion): ChannelSender {
  return openChannelSender(link, EVENT_CHANNEL);
}

/** The controller's end of the press-event channel. */
export function openEventReceiver(link: SharedRegion): ChannelReceiver {
  return openChannelReceiver(link, EVENT_CHANNEL);
}
