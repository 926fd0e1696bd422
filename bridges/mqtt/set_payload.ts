/**
 * Reads the payload of a `set` message: `ON`, `OFF` or `TOGGLE` (any case of their ASCII
 * letters, surrounding blanks ignored). An empty payload is no command and no mistake: it is how
 * a retained message is cleared (`mosquitto_pub -r -n`). Anything else is sorted into a kind of
 * malformed payload, so the bridge can say once per kind what it ignores instead of once per
 * message.
 *
 * @module
 */

import { quote } from "../../app/logging.ts";
import { type Command, COMMANDS } from "../../app/remote/messages.ts";

/** Payloads longer than this are not commands; only their start is ever looked at. */
export const MAX_SET_PAYLOAD_BYTES = 64;

/** Why a payload is not a command. */
export type MalformedKind = "blank" | "too long" | "not UTF-8 text" | "unknown word" | "retained";

/**
 * What a payload holds: a command, nothing (an empty payload: a retained message cleared), or
 * what is wrong with it (with a short quote of it).
 */
export type SetPayload =
  | { command: Command }
  | { cleared: true }
  | { malformed: MalformedKind; sample: string };

const decoder = new TextDecoder("utf-8", { fatal: true });

/** Reads a `set` payload. */
export function parseSetPayload(payload: Uint8Array): SetPayload {
  if (payload.length > MAX_SET_PAYLOAD_BYTES) {
    const start = new TextDecoder().decode(payload.subarray(0, 20));
    return { malformed: "too long", sample: `${quote(start, 20)} (${payload.length} bytes)` };
  }
  let text: string;
  try {
    text = decoder.decode(payload);
  } catch {
    return { malformed: "not UTF-8 text", sample: `${payload.length} bytes` };
  }
  if (payload.length === 0) return { cleared: true };
  const trimmed = text.trim();
  if (trimmed === "") return { malformed: "blank", sample: quote(text) };
  // ASCII first: toUpperCase() spells some other letters as two (U+FB00, a ligature, as "FF").
  const word = /^[a-z]+$/i.test(trimmed) ? trimmed.toUpperCase() : trimmed;
  if ((COMMANDS as readonly string[]).includes(word)) return { command: word as Command };
  return { malformed: "unknown word", sample: quote(text) };
}

/** Describes a malformed payload for the log. */
export function describeMalformed(kind: MalformedKind, sample: string, topic: string): string {
  const what = kind === "retained"
    ? `a retained message (${sample}): a retained command would be applied again at every reconnect`
    : `a payload that is ${kind === "unknown word" ? "not ON, OFF or TOGGLE" : kind}: ${sample}`;
  return `Ignored ${what} on ${topic}; further ones of this kind are ignored without a word`;
}

/** Remembers which kinds were already reported, so each is logged once. */
export class OncePerKind<K> {
  readonly #seen = new Map<K, number>();

  /** Counts one of `kind`; true the first time. */
  first(kind: K): boolean {
    const count = this.#seen.get(kind) ?? 0;
    this.#seen.set(kind, count + 1);
    return count === 0;
  }

  /** How many of `kind` were counted. */
  count(kind: K): number {
    return this.#seen.get(kind) ?? 0;
  }
}
