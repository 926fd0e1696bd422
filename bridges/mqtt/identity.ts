/**
 * Who this system is on the broker: its topic prefix and client id, from the flags or, by
 * default, from this machine's host name and machine id. The launcher and the bridge both ask
 * here, so the prefix the launcher claims is the one the bridge publishes under.
 *
 * @module
 */

import { readFileText } from "../../ffi/posix.ts";
import type { MqttSettings } from "./settings.ts";
import { defaultClientId, defaultPrefix, machineName } from "./topics.ts";

/** Where the machine id may be, read to make the default prefix unique per machine. */
export const MACHINE_ID_PATHS = ["/etc/machine-id", "/var/lib/dbus/machine-id"] as const;

/** The host name as `gethostname(2)` gives it (this UTS namespace's node name). */
const HOSTNAME_PATH = "/proc/sys/kernel/hostname";

/** The topic prefix and client id a system uses on its broker. */
export interface MqttIdentity {
  /** The topic prefix. */
  prefix: string;
  /** The MQTT client id. */
  clientId: string;
}

/** This machine as the broker knows it. */
export interface LocalMachine {
  /** The host name, as `gethostname(2)` gives it (for the device's name in Home Assistant). */
  hostname: string;
  /** Its name on the broker (see {@link machineName}). */
  name: string;
}

/**
 * This machine's host name and name on the broker. Read through the FFI layer, as the
 * credentials are, so neither the launcher nor the bridge needs read or sys permissions for it.
 */
export async function localMachine(): Promise<LocalMachine> {
  const hostname = readFileText(HOSTNAME_PATH)?.trim() || "localhost";
  let machineId: string | undefined;
  for (const path of MACHINE_ID_PATHS) {
    machineId = readFileText(path);
    if (machineId?.trim()) break;
  }
  return { hostname, name: await machineName(hostname, machineId) };
}

/**
 * The prefix and client id for `settings`: what the flags give, else the defaults for the
 * machine called `name`. A prefix given without a client id gets a client id of its own, so two
 * systems on one machine (told apart by `--mqtt-prefix`) never take each other's session.
 */
export function mqttIdentity(
  settings: Pick<MqttSettings, "prefix" | "clientId">,
  name: string,
): MqttIdentity {
  return {
    prefix: settings.prefix ?? defaultPrefix(name),
    clientId: settings.clientId ?? defaultClientId(name, settings.prefix),
  };
}
