/**
 * The broker's user name and password: from a file of our own that nobody else can read, or
 * from two environment variables; never from the command line, which every user can see.
 *
 * The file holds `key=value` lines:
 *
 * ```
 * # MQTT login of the kitchen Pi
 * username=kitchen
 * password=correct horse battery staple
 * ```
 *
 * @module
 */

import * as C from "../../ffi/constants.ts";
import { closeFd, effectiveUid, openPath, readFd, statFd } from "../../ffi/posix.ts";
import { failure } from "../../lib/errors.ts";
import { shellQuote } from "../../lib/shell_quote.ts";

/** The environment variable with the user name (used when no file is given). */
export const USERNAME_ENV = "MMAP_IPC_MQTT_USERNAME";
/** The environment variable with the password. */
export const PASSWORD_ENV = "MMAP_IPC_MQTT_PASSWORD";

const MAX_FILE_BYTES = 4096;

/** A login, and where it came from (for messages; never the password). */
export interface Credentials {
  /** The user name. */
  username: string;
  /** The password, if any. */
  password?: string;
  /** Where they came from: `file "PATH"` or `$MMAP_IPC_MQTT_USERNAME`. */
  source: string;
}

/** Reads the `key=value` text of a credentials file; errors name the line, never a value. */
export function parseCredentials(text: string, path: string): Credentials {
  const values = new Map<string, string>();
  const lines = text.split("\n");
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index].replace(/\r$/, "");
    if (line.trim() === "" || line.trimStart().startsWith("#")) continue;
    const equals = line.indexOf("=");
    const key = equals < 0 ? "" : line.slice(0, equals).trim();
    if (key !== "username" && key !== "password") {
      throw new Deno.errors.InvalidData(
        `Cannot read MQTT credentials from ${JSON.stringify(path)}: line ${
          index + 1
        } is not username=... or password=...`,
      );
    }
    if (values.has(key)) {
      throw new Deno.errors.InvalidData(
        `Cannot read MQTT credentials from ${JSON.stringify(path)}: line ${
          index + 1
        } gives the ${key} a second time`,
      );
    }
    const value = line.slice(equals + 1);
    // `username = kitchen` read as the user " kitchen" fails at the broker as a wrong login: a
    // user name never has blanks around it, and `key = value` is spacing, not a password's.
    const spaced = /[ \t]$/.test(line.slice(0, equals)) && /^[ \t]/.test(value);
    if ((key === "username" && value !== value.trim()) || spaced) {
      throw new Deno.errors.InvalidData(
        `Cannot read MQTT credentials from ${JSON.stringify(path)}: line ${
          index + 1
        } has blanks around its ${key}: write ${key}=VALUE, with nothing between = and the value`,
      );
    }
    values.set(key, value);
  }
  const username = values.get("username");
  if (username === undefined || username === "") {
    const why = values.has("password")
      ? "it has a password=... line but no username=... line: a password needs a user name"
      : "it has no username=... line";
    throw new Deno.errors.InvalidData(
      `Cannot read MQTT credentials from ${JSON.stringify(path)}: ${why}`,
    );
  }
  return { username, password: values.get("password"), source: `file ${JSON.stringify(path)}` };
}

/**
 * Reads the credentials file at `path`. It must be a regular file of this user that no one
 * else may read or write (mode 0600 or stricter), as ssh insists for its keys. Read through
 * libc like every other path the launcher is given, so the launcher can check it before it
 * starts anything, with no file permission of Deno's own.
 */
export function readCredentialsFile(path: string): Credentials {
  const action = "read the MQTT credentials (--mqtt-credentials) in";
  // O_NONBLOCK: a FIFO with no writer would block open() forever, signals and all; it is
  // refused below like any other file that is not a regular one.
  const fd = openPath(path, C.O_RDONLY | C.O_CLOEXEC | C.O_NOCTTY | C.O_NONBLOCK, 0, action);
  try {
    const stat = statFd(fd, path);
    if (stat.type !== "file") {
      throw failure(
        Deno.errors.InvalidData,
        action,
        path,
        `it is a ${stat.type}, not a regular file`,
      );
    }
    const uid = effectiveUid();
    if (stat.uid !== uid) {
      throw failure(
        Deno.errors.PermissionDenied,
        action,
        path,
        `it belongs to uid ${stat.uid}, not to this user (uid ${uid})`,
      );
    }
    const mode = stat.permissions & 0o777;
    if ((mode & 0o077) !== 0) {
      throw failure(
        Deno.errors.PermissionDenied,
        action,
        path,
        `other users may read or change it (mode ${
          mode.toString(8).padStart(3, "0")
        }); run chmod 600 ${shellQuote(path)}`,
      );
    }
    if (stat.size > MAX_FILE_BYTES) {
      throw failure(Deno.errors.InvalidData, action, path, "it is larger than 4 KiB");
    }
    const bytes = new Uint8Array(MAX_FILE_BYTES);
    let length = 0;
    for (
      let count;
      length < bytes.length && (count = readFd(fd, bytes.subarray(length), path)) > 0;
    ) {
      length += count;
    }
    return parseCredentials(new TextDecoder().decode(bytes.subarray(0, length)), path);
  } finally {
    closeFd(fd);
  }
}

/** The credentials from `$MMAP_IPC_MQTT_USERNAME` and `$MMAP_IPC_MQTT_PASSWORD`, if set. */
export function credentialsFromEnv(): Credentials | undefined {
  const username = Deno.env.get(USERNAME_ENV);
  const password = Deno.env.get(PASSWORD_ENV);
  if (username === undefined || username === "") {
    if (password !== undefined) {
      throw new TypeError(
        `$${PASSWORD_ENV} is set but $${USERNAME_ENV} is ${
          username === undefined ? "not" : "empty"
        }: a password needs a user name; set both, or neither`,
      );
    }
    return undefined;
  }
  return { username, password, source: `$${USERNAME_ENV}` };
}

/**
 * Throws {@link credentialsFromEnv}'s `TypeError` (a password without a user name) now, for a
 * command line that takes its login from the environment, so the launcher reports it as a
 * usage error before it starts anything. Without permission to read both variables it checks
 * nothing (the bridge, which may read them, still refuses).
 */
export function checkCredentialsEnv(): void {
  const readable = [USERNAME_ENV, PASSWORD_ENV].every((variable) =>
    Deno.permissions.querySync({ name: "env", variable }).state === "granted"
  );
  if (readable) credentialsFromEnv();
}

/** The credentials to log in with: the file when one is given, else the environment, else none. */
export function loadCredentials(file: string | undefined): Credentials | undefined {
  return file === undefined ? credentialsFromEnv() : readCredentialsFile(file);
}
