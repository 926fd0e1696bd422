/**
 * A child's V8 heap, read through the V8 inspector (the child runs with
 * `--inspect=127.0.0.1:0`): a full garbage collection, then the heap in use. This measures the
 * real LED and button scripts without adding anything to them.
 *
 * @module
 */

import type { Child } from "./processes.ts";

/** The flag that makes a child listen for the inspector on a free local port. */
export const INSPECT_FLAG = "--inspect=127.0.0.1:0";

/** A connection to one child's inspector. */
export class HeapProbe implements Disposable {
  readonly #socket: WebSocket;
  readonly #pending = new Map<number, (message: { result?: unknown; error?: unknown }) => void>();
  #nextId = 1;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (typeof message.id === "number") this.#pending.get(message.id)?.(message);
    };
  }

  /** Connects to the inspector `child` announced on stderr. */
  static async connect(child: Child): Promise<HeapProbe> {
    const { match } = await child.waitFor(/Debugger listening on (ws:\/\/\S+)/);
    const socket = new WebSocket(match[1]);
    await new Promise<void>((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new Error(`Cannot reach the inspector at ${match[1]}`));
    });
    return new HeapProbe(socket);
  }

  #call(method: string): Promise<unknown> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`The inspector did not answer ${method}`));
      }, 30_000);
      this.#pending.set(id, (message) => {
        clearTimeout(timer);
        this.#pending.delete(id);
        if (message.error !== undefined) {
          reject(new Error(`${method}: ${JSON.stringify(message.error)}`));
        } else resolve(message.result);
      });
      this.#socket.send(JSON.stringify({ id, method, params: {} }));
    });
  }

  /**
   * Bytes of V8 heap in use after a full garbage collection. The inspector keeps the console
   * messages it has seen (with their arguments, on the heap): they are discarded first, so the
   * figure is the script's own heap, not the inspector's log.
   */
  async heapUsedAfterGc(): Promise<number> {
    await this.#call("Runtime.discardConsoleEntries");
    await this.#call("HeapProfiler.collectGarbage");
    const usage = await this.#call("Runtime.getHeapUsage") as { usedSize: number };
    return usage.usedSize;
  }

  /** Closes the connection. */
  [Symbol.dispose](): void {
    this.#socket.close();
  }
}
