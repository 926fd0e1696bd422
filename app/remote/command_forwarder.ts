/**
 * Hands commands to the button process without ever waiting and in bounded memory, however
 * fast they come: while one command waits for room in the channel (or for a button process to
 * attach), the ones behind it are folded into a single pending command with exactly the same
 * effect ({@link composeCommands}), so the LED ends where the whole sequence says.
 *
 * @module
 */

import type { ChannelSender } from "./channel.ts";
import { type Command, composeCommands, encodeCommand } from "./messages.ts";

/** Options for {@link CommandForwarder}. */
export interface CommandForwarderOptions {
  /** Called when a command has to wait: the channel is full, or no button process takes it. */
  onWaiting?: (reason: "full" | "no receiver") => void;
  /** Called when everything waiting was handed over; `merged` commands were folded away. */
  onCaughtUp?: (merged: number) => void;
  /** Called if handing over fails for another reason; the forwarder then stops. */
  onError?: (error: Error) => void;
}

/** Forwards commands to a {@link ChannelSender}; see the module description. */
export class CommandForwarder {
  readonly #sender: ChannelSender;
  readonly #options: CommandForwarderOptions;
  readonly #closing = new AbortController();
  #flushing = false;
  #settled: Promise<void> = Promise.resolve();
  #hasPending = false;
  #pending: Command | undefined;
  #merged = 0;
  #closed = false;

  /** Forwards through `sender`, which stays the caller's to close. */
  constructor(sender: ChannelSender, options: CommandForwarderOptions = {}) {
    this.#sender = sender;
    this.#options = options;
  }

  /**
   * Commands held here right now, not yet in the channel: at most 2 (one being handed over, one
   * pending), however many were submitted.
   */
  get held(): number {
    return (this.#flushing ? 1 : 0) + (this.#hasPending && this.#pending !== undefined ? 1 : 0);
  }

  /** Commands folded into others since the last catch-up. */
  get merged(): number {
    return this.#merged;
  }

  /** Resolves once nothing is held or waiting (at once when nothing is). */
  settled(): Promise<void> {
    return this.#settled;
  }

  /** Queues `command`; returns at once. */
  submit(command: Command): void {
    if (this.#closed) throw new Deno.errors.BadResource("The command forwarder is closed");
    if (this.#flushing) {
      if (this.#hasPending) this.#merged++;
      this.#pending = this.#hasPending ? composeCommands(this.#pending, command) : command;
      this.#hasPending = true;
      return;
    }
    const result = this.#sender.trySend(encodeCommand(command));
    if (result === "sent") return;
    this.#options.onWaiting?.(result);
    this.#pending = command;
    this.#hasPending = true;
    this.#flushing = true;
    this.#settled = this.#flush();
  }

  async #flush(): Promise<void> {
    try {
      while (this.#hasPending) {
        const command = this.#pending;
        this.#hasPending = false;
        this.#pending = undefined;
        if (command === undefined) continue;
        await this.#sender.send(encodeCommand(command), { signal: this.#closing.signal });
      }
      // No await between the loop's last check and this: a command submitted meanwhile is
      // either in the loop or finds the forwarder idle.
      this.#flushing = false;
      const merged = this.#merged;
      this.#merged = 0;
      this.#options.onCaughtUp?.(merged);
    } catch (error) {
      this.#flushing = false;
      if (this.#closed) return;
      this.#closed = true;
      this.#options.onError?.(error as Error);
    }
  }

  /** Drops what is held and stops; the sender stays open. Safe twice. */
  close(): void {
    this.#closed = true;
    this.#hasPending = false;
    this.#pending = undefined;
    this.#closing.abort();
  }

  /** Same as {@link CommandForwarder.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
