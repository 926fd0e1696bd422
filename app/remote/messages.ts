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

/** The bytes after `press` that carry when it was made: see {@link encodePress}. */
const TIME_BYTES = 3;
/** Those bytes count in steps of this many milliseconds. */
const TIME_STEP_MS = 10;
/** Times are kept modulo this many steps (46.6 hours); see {@link pressAgeMs}. */
const TIME_RANGE = 2 ** (8 * TIME_BYTES);

/**
 * The bytes of a press event on the link: `press`, and with `madeAtMs` (CLOCK_MONOTONIC in
 * milliseconds, one clock for every process on the machine) that time in 3 bytes (in 10 ms
 * steps modulo 2^24, little-endian), so that its reader can tell a press it gets to late (it
 * was stopped, or starved of CPU) from one made just now. 8 bytes take a ring record of the
 * size the 5 of `press` alone did, so the event channel still holds 64.
 */
export function encodePress(madeAtMs?: number): Uint8Array {
  const text = encoder.encode(PRESS);
  if (madeAtMs === undefined) return text;
  const bytes = new Uint8Array(text.length + TIME_BYTES);
  bytes.set(text);
  const at = Math.floor(madeAtMs / TIME_STEP_MS) % TIME_RANGE;
  for (let i = 0; i < TIME_BYTES; i++) bytes[text.length + i] = (at >>> (8 * i)) & 0xff;
  return bytes;
}

/** Whether `bytes` are a press event. */
export function isPress(bytes: Uint8Array): boolean {
  return pressAgeMs(bytes, 0) !== undefined;
}

/**
 * How long ago, at `nowMs` (CLOCK_MONOTONIC milliseconds), the press event in `bytes` was made,
 * to 10 ms: 0 for a press that does not say when, undefined for bytes that are no press event.
 * Counted modulo 46.6 hours, far longer than a press ever waits in the link.
 */
export function pressAgeMs(bytes: Uint8Array, nowMs: number): number | undefined {
  const length = bytes.length;
  if (length !== PRESS.length && length !== PRESS.length + TIME_BYTES) return undefined;
  if (decoder.decode(bytes.subarray(0, PRESS.length)) !== PRESS) return undefined;
  if (length === PRESS.length) return 0;
  let madeAt = 0;
  for (let i = 0; i < TIME_BYTES; i++) madeAt |= bytes[PRESS.length + i] << (8 * i);
  const now = Math.floor(nowMs / TIME_STEP_MS) % TIME_RANGE;
  return (((now - madeAt) % TIME_RANGE) + TIME_RANGE) % TIME_RANGE * TIME_STEP_MS;
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
