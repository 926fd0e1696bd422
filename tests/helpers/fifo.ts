/**
 * Writing into a FIFO the way a user does (`echo 0 > FIFO`): open, write, close.
 *
 * @module
 */

import * as C from "../../ffi/constants.ts";
import { closeFd, openPath, writeFd } from "../../ffi/posix.ts";
import type { ChildProcess } from "./child_process.ts";
import { delay } from "./waiting.ts";

/** One writer: open, write, close, like `echo ... > FIFO`; yields while the pipe is full. */
export async function writeAndLeave(path: string, data: string | Uint8Array): Promise<void> {
  const fd = openPath(path, C.O_WRONLY | C.O_NONBLOCK | C.O_CLOEXEC, 0, "write FIFO");
  try {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    for (let offset = 0; offset < bytes.length;) {
      const chunk = bytes.slice(offset, offset + 65536);
      try {
        offset += writeFd(fd, chunk, path);
      } catch (error) {
        if (!(error instanceof Deno.errors.WouldBlock)) throw error;
        await delay(1);
      }
    }
  } finally {
    closeFd(fd);
  }
}

/** Writes one press (`0\n`) into `fifo`; a failure names the FIFO and shows `child`'s output. */
export async function press(fifo: string, child?: ChildProcess): Promise<void> {
  try {
    await writeAndLeave(fifo, "0\n");
  } catch (error) {
    const output = child === undefined ? "" : `\n${child.transcript}`;
    throw new Error(`Cannot press through ${fifo}: ${(error as Error).message}${output}`);
  }
}
