/**
 * Workers that take a role in shared memory and are terminated without closing it
 * (tests/fixtures/role_worker.ts), and the scene the Worker-held roles test plays with a state
 * cell's writer, in this process or in a child that has no pidfds for threads.
 *
 * @module
 */

import { assertEquals, assertThrows } from "@std/assert";
import {
  createMemfdRegion,
  openStateCell,
  type SharedRegion,
  type WriterEvent,
} from "../../mod.ts";
import type { RoleHeld, RoleStart } from "../fixtures/role_worker.ts";
import { delay } from "./waiting.ts";
import { writerEvents } from "./writer_events.ts";

/** A Worker holding a role; disposing of it terminates it, if the test has not already. */
export interface RoleWorker extends Disposable {
  /** The Worker's thread id, which its claim names. */
  readonly thread: number;
  /** Terminates the Worker without closing anything it holds. */
  terminate(): void;
}

/** Starts a Worker that takes `role` in `region` and resolves once it holds it. */
export async function startRoleWorker(
  region: SharedRegion,
  role: RoleStart["role"],
): Promise<RoleWorker> {
  const worker = new Worker(new URL("../fixtures/role_worker.ts", import.meta.url), {
    type: "module",
  });
  try {
    const held = new Promise<RoleHeld>((resolve, reject) => {
      worker.onmessage = (event: MessageEvent<RoleHeld>) => resolve(event.data);
      worker.onerror = (event) => {
        event.preventDefault();
        reject(new Error(`the ${role} Worker failed: ${event.message}`));
      };
    });
    worker.postMessage({ name: region.name, role } satisfies RoleStart);
    const { thread } = await held;
    return {
      thread,
      terminate: () => worker.terminate(),
      [Symbol.dispose]: () => worker.terminate(),
    };
  } catch (error) {
    worker.terminate();
    throw error;
  }
}

/**
 * A state cell's writer held by a Worker of this process: another handle cannot take the role
 * while the Worker runs, and the message names its thread; a reader asleep in `waitForChange()`
 * hears that the writer died once the Worker is terminated, without a write or a timeout; the
 * role is then free, and a new writer's value ends the wait. Returns the writer events the
 * reader reported (the Worker writing and dying, then the new writer).
 */
export async function cellWriterDiesWithItsWorker(): Promise<WriterEvent[]> {
  using region = createMemfdRegion({ size: 256 });
  openStateCell(region, { initialise: true }).close();
  using worker = await startRoleWorker(region, "writer");
  const { events, died, onWriter } = writerEvents();
  using reader = openStateCell(region, { onWriter });
  assertEquals(reader.read(), 7);
  assertEquals(reader.writerPid, Deno.pid);
  assertThrows(
    () => openStateCell(region, { writer: true }),
    Deno.errors.Busy,
    `thread ${worker.thread} of pid ${Deno.pid} (this process) holds it`,
  );
  const next = reader.waitForChange({ timeout: 30_000 });
  await delay(50); // the reader is asleep on the futex, listening for the writer's end
  worker.terminate();
  await died; // neither a write nor the wait's timeout is needed to learn it
  using writer = openStateCell(region, { writer: true });
  writer.write(8);
  assertEquals(await next, 8);
  return events;
}
