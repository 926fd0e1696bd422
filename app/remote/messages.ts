/**
 * What travels over the remote link: commands for the LED (`ON`, `OFF`, `TOGGLE`) from a remote
 * controller to the button process, and press events from the button process back to it. Both
 * ends import this module; neither imports the other.
 *
 * @module
 */

/** The commands a remote controller can give the LED. */
export const COMMANDS = ["ON", "OFF", "TOGGLE"] as const;

/** One of {@link COMMANDS}. */
export type Command = typeof COMMANDS[number];

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ENCODED = new Map<Command, Uint8Array>(
  COMMANDS.map((command) => [command, encoder.encode(command)]),
);
const PRESS = "press";

/** The bytes of `command` on the link. */
export function encodeCommand(command: Command): Uint8Array {
  const bytes = ENCODED.get(command);
  if (bytes === undefined) throw new TypeError(`Unknown command ${JSON.stringify(command)}`);
  return bytes;
}

/** The command in `bytes`, or undefined when they hold none. */
export function decodeCommand(bytes: Uint8Array): Command | undefined {
  const text = decoder.decode(bytes);
  return (COMMANDS as readonly string[]).includes(text) ? text as Command : undefined;
}

/** The bytes of a press event on the link. */
export function encodePress(): Uint8Array {
  return encoder.encode(PRESS);
}

/** Whether `bytes` are a press event. */
export function isPress(bytes: Uint8Array): boolean {
  return decoder.decode(bytes) === PRESS;
}

/**
 * One command with the same effect on an on/off state as `first` and then `second`, or
 * undefined when together they change nothing (two toggles). `first` undefined means "nothing".
 * So any run of commands folds into at most one, exactly.
 */
export function composeCommands(first: Command | undefined, second: Command): Command | undefined {
  if (second !== "TOGGLE" || first === undefined) return second;
  if (first === "TOGGLE") return undefined;
  return first === "ON" ? "OFF" : "ON";
}
