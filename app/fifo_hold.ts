/**
 * The launcher's read end of the button's FIFO, which it never reads from. A pipe keeps what
 * was written to it only while some end of it is open: a press written just before the button
 * dies would go with the last reader. Held here, it waits for the restarted button instead, and
 * a writer (`echo 0 > FIFO`, Enter in the launcher's terminal) is not left waiting, or refused,
 * while the button restarts. The button is told this process is its keeper, so it does not take
 * the held end for another program reading its presses.
 *
 * @module
 */

import * as C from "../ffi/constants.ts";
import { closeFd, openPath, statFd } from "../ffi/posix.ts";

const HOLD_FLAGS = C.O_RDONLY | C.O_NONBLOCK | C.O_NOFOLLOW | C.O_CLOEXEC;

/** Holds one FIFO open for reading at a time; see the module description. */
export class FifoHold {
  #fd = -1;
  #identity: string | undefined;
  #closed = false;

  /** Whether the FIFO held now is the inode `identity`. */
  holds(identity: string): boolean {
    return this.#fd >= 0 && this.#identity === identity;
  }

  /**
   * Holds the FIFO at `path` from now on (and lets go of the one held before), if it is the
   * inode `identity`: one put there meanwhile is not ours to hold. Throws naming the path.
   */
  hold(path: string, identity: string): void {
    if (this.#closed) throw new Deno.errors.BadResource("The FIFO hold is closed");
    const fd = openPath(path, HOLD_FLAGS, 0, "hold FIFO");
    try {
      const stat = statFd(fd, path);
      if (stat.identity !== identity || stat.type !== "fifo") {
        throw new Deno.errors.InvalidData(
          `Cannot hold FIFO ${JSON.stringify(path)}: another file was put there meanwhile`,
        );
      }
    } catch (error) {
      closeFd(fd);
      throw error;
    }
    if (this.#fd >= 0) closeFd(this.#fd);
    this.#fd = fd;
    this.#identity = identity;
  }

  /**
   * Lets go of the FIFO held, if any, once it has left the path: its writers then hear that
   * nobody reads it (EPIPE) when the button has left it too, rather than write into it for
   * nobody. The hold stays usable for the next FIFO.
   */
  release(): void {
    if (this.#fd >= 0) closeFd(this.#fd);
    this.#fd = -1;
    this.#identity = undefined;
  }

  /** Lets go of the FIFO held; what waits in it goes with it unless a reader remains. Safe twice. */
  close(): void {
    this.#closed = true;
    this.release();
  }

  /** Same as {@link FifoHold.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
