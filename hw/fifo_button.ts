/**
 * The PC build's button: a named pipe (FIFO) that anyone of this user can write presses to,
 * one per line: `echo 0 > PATH` (the original's) or `echo press > PATH`.
 *
 * @module
 */

import * as C from "../ffi/constants.ts";
import { FdWaiter } from "../ffi/fd_waiter.ts";
import { closeFd, openPath, readFd, statFd, statPath } from "../ffi/posix.ts";
import { checkOwn, createFifo, removeIfSame } from "../lib/owned_path.ts";
import type { Button } from "./types.ts";

/** Lines longer than this are not presses; they are dropped without being kept in memory. */
export const MAX_LINE_BYTES = 256;

const OPEN_FLAGS = C.O_RDONLY | C.O_NONBLOCK | C.O_NOFOLLOW | C.O_CLOEXEC;
const decoder = new TextDecoder();

/** Why a line did not count as a press. */
export interface IgnoredInput {
  /** What was wrong with it. */
  reason: "empty" | "not a press" | "too long" | "binary" | "cut off";
  /** The input as text (may hold replacement characters), cut to a readable length. */
  input: string;
  /** Its length in bytes. */
  bytes: number;
}

/** Options for {@link openFifoButton}. */
export interface FifoButtonOptions {
  /** Create the FIFO (0600) when it does not exist; it is then removed on close. Default true. */
  create?: boolean;
  /** Called for every line that is not a press. */
  onIgnored?: (ignored: IgnoredInput) => void;
}

function isPress(line: string): boolean {
  const word = line.trim();
  return word === "0" || word.toLowerCase() === "press";
}

function isBinary(bytes: Uint8Array): boolean {
  for (const byte of bytes) {
    if (byte === 0 || (byte < 0x20 && byte !== 0x09 && byte !== 0x0d) || byte === 0x7f) return true;
  }
  return decoder.decode(bytes).includes("\ufffd");
}

/** Reads presses from a FIFO; see {@link openFifoButton}. */
export class FifoButton implements Button {
  readonly #path: string;
  readonly #identity: string;
  readonly #removeOnClose: boolean;
  readonly #onIgnored: (ignored: IgnoredInput) => void;
  readonly #waiter = new FdWaiter();
  readonly #line = new Uint8Array(MAX_LINE_BYTES);
  #lineLength = 0;
  #overflow = 0;
  #fd: number;
  #closed = false;

  /** Not for direct use: call {@link openFifoButton}. */
  constructor(
    path: string,
    fd: number,
    identity: string,
    created: boolean,
    options: FifoButtonOptions,
  ) {
    this.#path = path;
    this.#fd = fd;
    this.#identity = identity;
    this.#removeOnClose = created;
    this.#onIgnored = options.onIgnored ?? (() => {});
  }

  /** The FIFO's path. */
  get path(): string {
    return this.#path;
  }

  /**
   * Yields once per press. Writers may come and go: when the last one leaves, a line it left
   * unfinished is reported and dropped, and the FIFO is reopened (so the fd count stays flat).
   */
  async *presses(signal: AbortSignal): AsyncGenerator<void, void, undefined> {
    const cancel = (): void => this.#waiter.cancel();
    signal.addEventListener("abort", cancel, { once: true });
    try {
      while (!this.#closed && !signal.aborted) {
        const readiness = await this.#waiter.wait(this.#fd);
        if (readiness === "cancelled" || this.#closed) return;
        if (readiness === "error") {
          throw new Deno.errors.BadResource(
            `Cannot wait on FIFO ${JSON.stringify(this.#path)}: poll failed`,
          );
        }
        const { presses, ended } = this.#drain();
        for (let i = 0; i < presses; i++) yield;
        if (ended) this.#reopen();
      }
    } finally {
      signal.removeEventListener("abort", cancel);
    }
  }

  /** Reads everything available; counts presses and notes whether every writer has gone. */
  #drain(): { presses: number; ended: boolean } {
    const chunk = new Uint8Array(65536);
    let presses = 0;
    for (;;) {
      const count = readFd(this.#fd, chunk, this.#path);
      if (count < 0) return { presses, ended: false };
      if (count === 0) {
        if (this.#lineLength > 0 || this.#overflow > 0) this.#ignore("cut off");
        return { presses, ended: true };
      }
      for (let i = 0; i < count; i++) {
        const byte = chunk[i];
        if (byte === 0x0a) {
          if (this.#endLine()) presses++;
        } else if (this.#lineLength < MAX_LINE_BYTES && this.#overflow === 0) {
          this.#line[this.#lineLength++] = byte;
        } else {
          this.#overflow++;
        }
      }
    }
  }

  /** Judges the line just ended; true when it is a press. */
  #endLine(): boolean {
    if (this.#overflow > 0) {
      this.#ignore("too long");
      return false;
    }
    const bytes = this.#line.subarray(0, this.#lineLength);
    if (isBinary(bytes)) {
      this.#ignore("binary");
      return false;
    }
    const text = decoder.decode(bytes);
    if (isPress(text)) {
      this.#lineLength = 0;
      return true;
    }
    this.#ignore(text.trim() === "" ? "empty" : "not a press");
    return false;
  }

  #ignore(reason: IgnoredInput["reason"]): void {
    const bytes = this.#line.subarray(0, this.#lineLength);
    this.#onIgnored({
      reason,
      input: decoder.decode(bytes),
      bytes: this.#lineLength + this.#overflow,
    });
    this.#lineLength = 0;
    this.#overflow = 0;
  }

  /** After the last writer left: a fresh open, so poll() does not report the hang-up forever. */
  #reopen(): void {
    closeFd(this.#fd);
    this.#fd = -1;
    const fd = openPath(this.#path, OPEN_FLAGS, 0, "reopen FIFO");
    if (statFd(fd, this.#path).identity !== this.#identity) {
      closeFd(fd);
      throw new Deno.errors.InvalidData(
        `Cannot reopen FIFO ${JSON.stringify(this.#path)}: it was replaced by something else`,
      );
    }
    this.#fd = fd;
  }

  /** Stops reading and closes the FIFO; removes it if this button created it. Safe twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#waiter.close();
    if (this.#fd >= 0) closeFd(this.#fd);
    this.#fd = -1;
    if (this.#removeOnClose) removeIfSame(this.#path, this.#identity, "remove FIFO");
  }

  /** Same as {@link FifoButton.close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Opens (and, unless `create: false`, creates) the FIFO button at `path`. A path that exists
 * and is not a FIFO of ours (a regular file, a symlink, a directory) is refused with a clear
 * error and left untouched.
 */
export function openFifoButton(path: string, options: FifoButtonOptions = {}): FifoButton {
  const action = "open FIFO";
  let identity: string;
  let created = false;
  if (options.create ?? true) {
    ({ identity, created } = createFifo(path));
  } else {
    const stat = statPath(path);
    if (stat === undefined) {
      throw new Deno.errors.NotFound(`Cannot ${action} ${JSON.stringify(path)}: it does not exist`);
    }
    checkOwn(stat, "fifo", action, path);
    identity = stat.identity;
  }
  const fd = openPath(path, OPEN_FLAGS, 0, action);
  try {
    const stat = statFd(fd, path);
    checkOwn(stat, "fifo", action, path);
    if (stat.identity !== identity) {
      throw new Deno.errors.InvalidData(
        `Cannot ${action} ${JSON.stringify(path)}: it changed while opening`,
      );
    }
    return new FifoButton(path, fd, identity, created, options);
  } catch (error) {
    closeFd(fd);
    if (created) removeIfSame(path, identity, "remove FIFO");
    throw error;
  }
}
