/**
 * Workers terminated while a wait of theirs is in flight (tests/fixtures/waits_until_terminated.ts),
 * and the threads they leave behind: a wait hub's kernel call that nothing is left to end holds
 * one of Deno's blocking threads until the call's bound passes.
 *
 * @module
 */

import { createMemfdRegion, openStateCell } from "../../mod.ts";
import { CALL_BOUND_MS } from "../../ffi/call_bound.ts";
import { SYS_futex_waitv } from "../../ffi/constants.ts";
import { listDirectory, readFileText } from "../../ffi/posix.ts";
import type { WaitingStart } from "../fixtures/waits_until_terminated.ts";
import { threadCount } from "./proc.ts";
import { delay, GUARD_MS } from "./waiting.ts";

/** How many Workers a round starts and terminates. */
export const WAITING_WORKERS = 12;
/** Fewer threads than this left after a round count as none: not one per Worker. */
export const FEW_THREADS = 4;
/**
 * How long an idle blocking thread of Deno's lingers before it ends: tokio's keep-alive (10 s),
 * which Deno keeps (measured here: an idle one ended 10.1 s after its last call returned). A
 * terminated Worker's own blocking thread ended as its call returned; those that Worker start-up
 * used in this process's runtime linger this long.
 */
const BLOCKING_KEEP_ALIVE_MS = 10_000;
/**
 * How long the threads of a round may take to end: the call's bound, then the keep-alive, then
 * the usual guard for a loaded machine.
 */
const THREADS_END_MS = CALL_BOUND_MS + BLOCKING_KEEP_ALIVE_MS + GUARD_MS;
/** The system calls the hubs sleep in: futex_waitv, and poll (glibc's poll() is ppoll on aarch64). */
const HUB_CALLS = new Set([
  String(SYS_futex_waitv),
  Deno.build.arch === "aarch64" ? "73" : "7",
]);

/** What a round of Workers left behind, in threads more than before it. */
export interface ThreadsLeft {
  /** Threads of any kind (a thread or two of Deno's may come and go meanwhile). */
  threads: number;
  /** Threads asleep in a system call a hub makes (futex_waitv or poll). */
  inHubCalls: number;
}

/** How many of this process's threads are in a hub's system call now (`/proc/.../syscall`). */
function threadsInHubCalls(): number {
  let count = 0;
  for (const task of listDirectory(`/proc/${Deno.pid}/task`)) {
    const call = readFileText(`/proc/${Deno.pid}/task/${task}/syscall`)?.split(" ")[0];
    if (call !== undefined && HUB_CALLS.has(call)) count++;
  }
  return count;
}

/**
 * Starts {@link WAITING_WORKERS} Workers one after the other, each waiting on one region in the
 * way `what` says, and terminates each while its wait is in flight, in two rounds. Returns what
 * they left once none is left in a hub's call and fewer than {@link FEW_THREADS} more threads
 * are, or once they have had the time to end. The threads are counted from after the first
 * round, which takes in what any Worker leaves for good (a thread or two of Deno's own); the
 * calls from before it, as its calls are still in flight after it.
 */
export async function threadsLeftByWaitingWorkers(
  what: WaitingStart["what"],
): Promise<ThreadsLeft> {
  using region = createMemfdRegion({ size: 8192 });
  // A writer that never writes again: the Workers' readers sleep on its cell, and poll its pidfd.
  if (what === "cell") openStateCell(region, { writer: true }).write(1);
  // The process's own calls: none, unless a wait of an earlier test is still in flight.
  const inCallsBefore = threadsInHubCalls();
  await terminateWaitingWorkers(region.name, what);
  // The first round's calls, still in flight, end meanwhile: not counted as there before.
  const threadsBefore = threadCount() - (threadsInHubCalls() - inCallsBefore);
  await terminateWaitingWorkers(region.name, what);
  const deadline = performance.now() + THREADS_END_MS;
  const left = (): ThreadsLeft => ({
    threads: threadCount() - threadsBefore,
    inHubCalls: threadsInHubCalls() - inCallsBefore,
  });
  let now = left();
  while ((now.inHubCalls > 0 || now.threads >= FEW_THREADS) && performance.now() < deadline) {
    await delay(250);
    now = left();
  }
  return now;
}

/** One round of {@link threadsLeftByWaitingWorkers}. */
async function terminateWaitingWorkers(name: string, what: WaitingStart["what"]): Promise<void> {
  for (let i = 0; i < WAITING_WORKERS; i++) {
    const worker = new Worker(new URL("../fixtures/waits_until_terminated.ts", import.meta.url), {
      type: "module",
    });
    try {
      await new Promise<void>((resolve, reject) => {
        worker.onmessage = () => resolve();
        worker.onerror = (event) => {
          event.preventDefault();
          reject(new Error(`a waiting Worker failed: ${event.message}`));
        };
        worker.postMessage({ name, what } satisfies WaitingStart);
      });
    } finally {
      worker.terminate();
    }
  }
}
