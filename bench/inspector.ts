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

/** What {@link HeapProbe.spacesInUse} evaluates in the child. */
const SPACES_EXPRESSION = `import("node:v8").then((v8) => JSON.stringify(Object.fromEntries(
  v8.getHeapSpaceStatistics().map((space) => [space.space_name, space.space_used_size]))))`;

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

  /**
   * Bytes in use in each V8 heap space (`node:v8`'s `getHeapSpaceStatistics()`, evaluated in the
   * child), or undefined where the child cannot say. The first call loads `node:v8` into the
   * child, which adds to its heap: see {@link HeapProbe.loadSpaces}.
   */
  async spacesInUse(): Promise<Record<string, number> | undefined> {
    try {
      const answer = await this.#call("Runtime.evaluate", {
        expression: SPACES_EXPRESSION,
        awaitPromise: true,
        returnByValue: true,
      }) as { result?: { value?: unknown } };
      const value = answer.result?.value;
      return typeof value === "string" ? JSON.parse(value) : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Makes the first {@link HeapProbe.spacesInUse} call and returns what it added to the heap
   * after a full GC (`node:v8` and what it loads), for samples to leave out: the script's own
   * heap is what is compared, not the probe's.
   */
  async loadSpaces(): Promise<number> {
    const before = await this.heapUsedAfterGc();
    await this.spacesInUse();
    return await this.heapUsedAfterGc() - before;
  }

  #call(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
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
      this.#socket.send(JSON.stringify({ id, method, params }));
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
