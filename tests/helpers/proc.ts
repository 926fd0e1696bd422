/**
 * What other processes are doing, read from `/proc` without trusting the code under test:
 * whether a process ended, its children, its open fds, its wake-ups, where it is blocked; and
 * killing one that a test left running.
 *
 * @module
 */

import { listDirectory, processState, readFileText, readLink } from "../../ffi/posix.ts";
import { delay } from "./waiting.ts";

/** Whether `pid` has ended (gone, or a zombie nobody reaped yet). */
export function processGone(pid: number): boolean {
  const state = processState(pid);
  return state === undefined || state.state === "Z" || state.state === "X";
}

/** Kills `pid` unless it has already ended. */
export function killIfRunning(pid: number | undefined): void {
  if (pid === undefined || pid <= 0 || processGone(pid)) return;
  try {
    Deno.kill(pid, "SIGKILL");
  } catch {
    // Ended in between.
  }
}

/** The pids of `pid`'s children, from /proc (empty when it has ended). */
export function childrenOf(pid: number): number[] {
  const text = readFileText(`/proc/${pid}/task/${pid}/children`) ?? "";
  return text.trim() === "" ? [] : text.trim().split(/\s+/).map(Number);
}

/**
 * The fds (by number) `pid` has open, or only those that refer to `target`
 * (`anon_inode:inotify`, a path), read through libc (Deno guards /proc behind --allow-all): an fd
 * closed between listing and reading it is left out.
 */
export function openFdsTo(pid: number, target?: string): number[] {
  return listDirectory(`/proc/${pid}/fd`).filter((fd) => {
    try {
      const link = readLink(`/proc/${pid}/fd/${fd}`);
      return target === undefined || link === target;
    } catch {
      return false; // closed meanwhile
    }
  }).map(Number);
}

/** How many fds `pid` has open, or only those that refer to `target` (see {@link openFdsTo}). */
export function openFdCount(pid: number, target?: string): Promise<number> {
  return Promise.resolve(openFdsTo(pid, target).length);
}

/**
 * {@link openFdCount} of another process once it holds still: the same count twice in a row 20 ms
 * apart. A process that opens a new fd before closing the old one (the button reopening its FIFO
 * after each writer) has one more for a moment.
 */
export async function settledFdCount(pid: number): Promise<number> {
  let last = await openFdCount(pid);
  for (let i = 0; i < 50; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    const now = await openFdCount(pid);
    if (now === last) return now;
    last = now;
  }
  return last;
}

/**
 * Voluntary context switches of the main thread of `pid`: it runs the event loop, so every
 * wake-up that reaches JavaScript shows here. Read through libc because Deno guards /proc.
 */
export function voluntarySwitches(pid: number): number {
  const status = readFileText(`/proc/${pid}/status`) ?? "";
  const match = /^voluntary_ctxt_switches:\s+(\d+)/m.exec(status);
  if (match === null) throw new Error(`No context switch count for pid ${pid}`);
  return Number(match[1]);
}

/** Voluntary context switches of every thread of `pid` together (Workers and Deno's pools too). */
export function allThreadSwitches(pid: number): number {
  let total = 0;
  for (const task of listDirectory(`/proc/${pid}/task`)) {
    const status = readFileText(`/proc/${pid}/task/${task}/status`) ?? "";
    total += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  }
  return total;
}

/**
 * Whether `pid` is blocked opening a FIFO, waiting for a writer. For the original button: only
 * then does a write reach it at once (after a press it sleeps 100 ms, and a write made
 * meanwhile waits in the FIFO until the next writer comes).
 */
export function waitingForWriter(pid: number): boolean {
  return readFileText(`/proc/${pid}/wchan`)?.trim() === "wait_for_partner";
}

/** The environment `pid` was started with, from `/proc/PID/environ` (empty when it has ended). */
export function environOf(pid: number): Map<string, string> {
  const text = readFileText(`/proc/${pid}/environ`) ?? "";
  return new Map(
    text.split("\0").filter((entry) => entry !== "").map((entry) => {
      const equals = entry.indexOf("=");
      return [entry.slice(0, equals), entry.slice(equals + 1)];
    }),
  );
}

/**
 * What the threads of a process that seems hung are doing, for the failure message: how many of
 * each kind (Deno names Worker threads `worker-N`), and where the main thread is (its state,
 * kernel wait channel and system call): a main thread that is running is stuck in JavaScript, one
 * asleep in a futex with no timer due is waiting on a lock. Of the calling process itself, its main
 * thread always shows running (it is the one reading); only the counts tell there.
 */
export function threadReport(pid: number): string {
  const kinds = new Map<string, number>();
  for (const task of listDirectory(`/proc/${pid}/task`)) {
    const name = (readFileText(`/proc/${pid}/task/${task}/comm`) ?? "?").trim();
    const kind = name.replace(/[-\d]+$/, "");
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  const state = processState(pid)?.state ?? "gone";
  const wchan = readFileText(`/proc/${pid}/wchan`)?.trim() || "-";
  const syscall = readFileText(`/proc/${pid}/syscall`)?.trim().split(" ")[0] ?? "-";
  const threads = [...kinds].map(([kind, count]) => `${count} ${kind}`).join(", ");
  return `threads: ${threads}; main thread: state ${state}, wchan ${wchan}, syscall ${syscall}`;
}

/** How many threads this process has now, of every kind. */
export function threadCount(): number {
  return listDirectory(`/proc/${Deno.pid}/task`).length;
}

/** How many Worker threads (Deno names them `worker-N`) this process has now. */
export function workerThreads(): number {
  let count = 0;
  for (const task of listDirectory(`/proc/${Deno.pid}/task`)) {
    if (readFileText(`/proc/${Deno.pid}/task/${task}/comm`)?.startsWith("worker-")) count++;
  }
  return count;
}

/**
 * The Worker threads to count from: once the number held for 100 ms, since a Worker an earlier
 * test terminated may still be ending.
 */
export async function settledWorkerThreads(): Promise<number> {
  let count = workerThreads();
  for (let same = 0; same < 5;) {
    await delay(20);
    const now = workerThreads();
    same = now === count ? same + 1 : 0;
    count = now;
  }
  return count;
}
