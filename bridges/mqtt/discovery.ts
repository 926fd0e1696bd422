/**
 * Home Assistant MQTT discovery: the retained config messages that make the system appear in
 * Home Assistant with no YAML. One device, with the LED as a light (command and state topics,
 * availability) and the button as a device trigger (`button_short_press` of `button_1`).
 *
 * @module
 */

import type { Topics } from "./topics.ts";

/** What the discovery messages describe. */
export interface DiscoveryOptions {
  /** Home Assistant's discovery prefix (its default: `homeassistant`). */
  discoveryPrefix: string;
  /** The device's stable id: its `identifiers`, the base of every `unique_id`, the node id. */
  deviceId: string;
  /** The device's name in Home Assistant. */
  deviceName: string;
  /** What the device is, such as `Button and LED (PC build)`. */
  model: string;
  /** This software's version. */
  version: string;
  /** The bridge's topics. */
  topics: Topics;
}

/** One discovery message: publish `payload` (as JSON) to `topic`, retained. */
export interface DiscoveryMessage {
  /** The config topic. */
  topic: string;
  /** The config. */
  payload: Record<string, unknown>;
}

/** The payload of each press on the action topic, matched by the device trigger. */
export const PRESS_PAYLOAD = "press";
/** Availability payloads. */
export const ONLINE = "online";
/** Availability payload of the last will. */
export const OFFLINE = "offline";
/** The LED's state payloads, on its state topic. */
export const STATE_ON = "ON";
/** See {@link STATE_ON}. */
export const STATE_OFF = "OFF";
/** The origin named in every discovery config: how `mqtt:forget` tells ours from others'. */
export const ORIGIN_NAME = "mmap-ipc";

/**
 * The config topics of the device `deviceId` under Home Assistant's `discoveryPrefix`: the LED's
 * and the button's, in the order {@link discoveryMessages} gives them.
 */
export function discoveryTopics(discoveryPrefix: string, deviceId: string): [string, string] {
  return [
    `${discoveryPrefix}/light/${deviceId}/led/config`,
    `${discoveryPrefix}/device_automation/${deviceId}/button_short_press/config`,
  ];
}

/** The discovery messages for the LED and the button, in the order to publish them. */
export function discoveryMessages(options: DiscoveryOptions): DiscoveryMessage[] {
  const { discoveryPrefix, deviceId, topics } = options;
  const [lightTopic, triggerTopic] = discoveryTopics(discoveryPrefix, deviceId);
  const device = {
    identifiers: [deviceId],
    name: options.deviceName,
    manufacturer: ORIGIN_NAME,
    model: options.model,
    sw_version: options.version,
  };
  const origin = { name: ORIGIN_NAME, sw_version: options.version };
  return [
    {
      topic: lightTopic,
      payload: {
        name: "LED",
        unique_id: `${deviceId}_led`,
        schema: "basic",
        command_topic: topics.set,
        state_topic: topics.state,
        payload_on: STATE_ON,
        payload_off: STATE_OFF,
        availability_topic: topics.availability,
        payload_available: ONLINE,
        payload_not_available: OFFLINE,
        qos: 1,
        device,
        origin,
      },
    },
    {
      topic: triggerTopic,
      payload: {
        automation_type: "trigger",
        topic: topics.action,
        type: "button_short_press",
        subtype: "button_1",
        payload: PRESS_PAYLOAD,
        qos: 0,
        device,
        origin,
      },
    },
  ];
}
