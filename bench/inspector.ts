/**
 * A child's V8 heap, read through the V8 inspector (the child runs with
 * `--inspect=127.0.0.1:0`): a full garbage collection, then the heap in use. This measures the
 * real LED and button scripts without adding anything to them.
 *
 * @module
 */

import { format as formatBytes } from "@std/fmt/bytes";
import type { Child } from "./processes.ts";

/** The flag that makes a child listen for the inspector on a free local port. */
export const INSPECT_FLAG = "--inspect=127.0.0.1:0";

/** What {@link HeapProbe.spacesInUse} evaluates in the child. */
const SPACES_EXPRESSION = `import("node:v8").then((v8) => JSON.stringify(Object.fromEntries(
  v8.getHeapSpaceStatistics().map((space) => [space.space_name, space.space_used_size]))))`;

/** Objects on a heap by kind ("Map (object)", "(string)"): how many, and their own bytes. */
export type HeapCensus = Map<string, { count: number; bytes: number }>;

/** Node types whose name says which kind of object it is (a constructor, a function). */
const NAMED_TYPES = new Set([
  "object",
  "closure",
  "native",
  "array",
  "hidden",
  "code",
  "object shape",
]);

/** A snapshot's nodes (`HeapProfiler.takeHeapSnapshot`) counted by kind. */
export function censusOf(snapshot: {
  snapshot: { meta: { node_fields: string[]; node_types: unknown[] } };
  nodes: number[];
  strings: string[];
}): HeapCensus {
  const { node_fields: fields, node_types: nodeTypes } = snapshot.snapshot.meta;
  const types = nodeTypes[0] as string[];
  const width = fields.length;
  const [typeAt, nameAt, sizeAt] = ["type", "name", "self_size"].map((f) => fields.indexOf(f));
  const census: HeapCensus = new Map();
  const { nodes, strings } = snapshot;
  for (let i = 0; i < nodes.length; i += width) {
    const type = types[nodes[i + typeAt]];
    const kind = NAMED_TYPES.has(type) ? `${strings[nodes[i + nameAt]]} (${type})` : `(${type})`;
    const entry = census.get(kind) ?? { count: 0, bytes: 0 };
    entry.count++;
    entry.bytes += nodes[i + sizeAt];
    census.set(kind, entry);
  }
  return census;
}

/**
 * The kinds of object that grew most in bytes from `start` to `end`, largest first: at most
 * `top` of them, as "kind +count (+bytes)".
 */
export function grewMost(start: HeapCensus, end: HeapCensus, top = 5): string[] {
  const grown = [...end].map(([kind, now]) => {
    const before = start.get(kind) ?? { count: 0, bytes: 0 };
    return { kind, count: now.count - before.count, bytes: now.bytes - before.bytes };
  }).filter((change) => change.bytes > 0).sort((a, b) => b.bytes - a.bytes);
  return grown.slice(0, top).map(({ kind, count, bytes }) =>
    `${kind} ${count >= 0 ? "+" : ""}${count} (+${formatBytes(bytes, { binary: true })})`
  );
}

/** A connection to one child's inspector. */
export class HeapProbe implements Disposable {
  readonly #socket: WebSocket;
  readonly #pending = new Map<number, (message: { result?: unknown; error?: unknown }) => void>();
  #nextId = 1;
  /** Where the chunks of a heap snapshot in progress go. */
  #onChunk: ((chunk: string) => void) | undefined;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (typeof message.id === "number") this.#pending.get(message.id)?.(message);
      else if (message.method === "HeapProfiler.addHeapSnapshotChunk") {
        this.#onChunk?.(message.params.chunk);
      }
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

  /**
   * The child's heap by kind of object, from a heap snapshot (which collects garbage first), or
   * undefined where the child cannot give one. The snapshot is streamed here and dropped.
   */
  async census(): Promise<HeapCensus | undefined> {
    const chunks: string[] = [];
    this.#onChunk = (chunk) => chunks.push(chunk);
    try {
      await this.#call("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
      return censusOf(JSON.parse(chunks.join("")));
    } catch {
      return undefined;
    } finally {
      this.#onChunk = undefined;
    }
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
