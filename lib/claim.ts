/**
 * A role in shared memory that one live process or Worker holds at a time (the state cell's
 * writer, a ring's producer or consumer). The 64-bit claim word holds the holder's id and the low
 * bits of its start time, set and cleared with one compare-and-swap, so a holder that died, or
 * whose id was recycled, is recognised and replaced instead of blocking everyone forever. The
 * main runtime's claim names its process (the pid); a Worker's names the Worker's thread, so a
 * Worker terminated without closing what it held leaves a claim that is dead as soon as its
 * thread is, not one its live process keeps.
 *
 * @module
 */

import type { SharedMemory } from "./memory.ts";
import * as C from "../ffi/constants.ts";
import * as posix from "../ffi/posix.ts";
import { failure } from "./errors.ts";

/** Each Worker loads this module afresh, so this is the calling thread's. */
let own: bigint | undefined;

/** Whether this code runs in a Worker (whose global scope is a `WorkerGlobalScope`). */
function inWorker(): boolean {
  const scope = (globalThis as { WorkerGlobalScope?: abstract new () => unknown })
    .WorkerGlobalScope;
  return scope !== undefined && globalThis instanceof scope;
}

/**
 * This thread's claim value: start time (low 32 bits) above the id. The main runtime's claim
 * names the process (its pid and start time), as it lives exactly as long; a Worker's names
 * the Worker's thread. Made on first use and kept; that first use throws, and makes nothing,
 * when the start time cannot be read (no fd left: EMFILE).
 */
export function ownClaim(): bigint {
  return own ??= readOwnClaim();
}

/**
 * {@link ownClaim}, read. Throws the OS's reason (EMFILE, most likely) when this thread's /proc
 * entry is there but cannot be read: a claim without its start time would match any later
 * holder of this id, for the whole life of the process, as it is kept once made.
 */
function readOwnClaim(): bigint {
  const id = inWorker() ? posix.threadId() : Deno.pid;
  let state = posix.processState(id);
  const path = `/proc/${id}/stat`;
  // stat(2) needs no fd, where the read needs one.
  if (state === undefined && posix.statPath(path) !== undefined) {
    posix.closeFd(posix.openPath(path, C.O_RDONLY | C.O_CLOEXEC, 0, "read the start time in"));
    state = posix.processState(id);
  }
  return claimValue(id, state?.startTime ?? 0n);
}

/**
 * The claim value of the process or thread `id` as it runs now. Without its start time (no
 * such id, or no /proc) the claim has none, and any holder of that id matches it.
 */
export function claimOf(id: number): bigint {
  return claimValue(id, posix.processState(id)?.startTime ?? 0n);
}

function claimValue(id: number, start: bigint): bigint {
  return ((start & 0xffff_ffffn) << 32n) | BigInt(id);
}

/** The kernel's largest possible pid (`PID_MAX_LIMIT` on 64-bit Linux). */
const PID_MAX_LIMIT = 2 ** 22;

/** The id a claim value names: a pid (its main thread's id), or a Worker's thread id. */
export function threadOf(claim: bigint): number {
  return Number(claim & 0xffff_ffffn);
}

/**
 * The process of each claim this thread has seen live (see {@link claimIsLive}), at most
 * {@link REMEMBERED} of them: once a Worker's thread has ended, /proc no longer says whose it
 * was, and a message about its death would name its thread id as a pid.
 */
const processes = new Map<bigint, number>();
/** The peers a process meets are few; the oldest is forgotten first. */
const REMEMBERED = 64;

/** Notes the process of a claim found live, once per claim (one read of /proc). */
function remember(claim: bigint, thread: number): void {
  if (processes.has(claim)) return;
  const pid = posix.processOfThread(thread);
  if (pid === undefined) return;
  if (processes.size >= REMEMBERED) processes.delete(processes.keys().next().value as bigint);
  processes.set(claim, pid);
}

/**
 * The pid of the process that holds a claim (a Worker's process). Once the holder ended, the
 * process this thread saw it live in, or else its id (never looked up: another thread may have
 * it now), so a Worker never seen live is named by its thread id.
 */
export function processOf(claim: bigint): number {
  if (!processes.has(claim)) claimIsLive(claim); // notes the process of a live one
  return knownProcessOf(claim);
}

/**
 * {@link processOf} without a look at the thread, for a claim just found dead: the process this
 * thread saw it live in, or its id.
 */
export function knownProcessOf(claim: bigint): number {
  return processes.get(claim) ?? threadOf(claim);
}

/**
 * How a message names the holder of a claim: `pid 12`, or `thread 34 of pid 12` for a Worker's,
 * with ` (this process)` when it is this one.
 */
export function describeHolder(claim: bigint): string {
  const thread = threadOf(claim);
  const pid = processOf(claim);
  const who = pid === thread ? `pid ${pid}` : `thread ${thread} of pid ${pid}`;
  return pid === Deno.pid ? `${who} (this process)` : who;
}

/** Whether the thread a claim value names is still running (and is the same thread). */
export function claimIsLive(claim: bigint): boolean {
  if (claim === 0n) return false;
  const pid = threadOf(claim);
  // No process has a pid beyond the kernel's limit; a claim naming one was written by no one.
  if (pid <= 0 || pid > PID_MAX_LIMIT || !posix.sendSignal(pid, 0)) return false;
  const state = posix.processState(pid);
  // Without a readable /proc the signal probe is all there is to go on.
  if (state === undefined) return true;
  if (state.state === "Z" || state.state === "X") return false;
  const start = claim >> 32n;
  if (start !== 0n && start !== (state.startTime & 0xffff_ffffn)) return false;
  remember(claim, pid);
  return true;
}

/** Reads the claim word at `byteOffset` (8-aligned). */
export function readClaim(memory: SharedMemory, byteOffset: number): bigint {
  return Atomics.load(memory.longWords, byteOffset / 8);
}

/**
 * The pid of the process holding the claim at `byteOffset` (for a Worker's claim, its
 * process's), or `undefined` when nobody live holds it.
 */
export function claimHolder(memory: SharedMemory, byteOffset: number): number | undefined {
  const claim = readClaim(memory, byteOffset);
  return claimIsLive(claim) ? processOf(claim) : undefined;
}

/**
 * Takes the claim at `byteOffset` for this process, replacing a dead holder's; throws
 * `Deno.errors.Busy` naming the live holder's pid otherwise.
 *
 * @param role names the role and what it is of in the error, such as `the writer role of state
 * cell`, and `subject` the region (quoted there)
 */
export function takeClaim(
  memory: SharedMemory,
  byteOffset: number,
  { role, subject }: { role: string; subject: string },
): void {
  const found = tryTakeClaim(memory, byteOffset);
  if (found === 0n) return;
  if (found === ownClaim()) {
    const holder = inWorker() ? "this Worker" : "this process";
    throw failure(Deno.errors.Busy, `claim ${role}`, subject, `${holder} already holds it`);
  }
  throw failure(Deno.errors.Busy, `claim ${role}`, subject, `${describeHolder(found)} holds it`);
}

/**
 * Takes the claim at `byteOffset` for this thread, replacing a dead holder's: returns 0n once
 * taken, or the live holder's claim (this thread's own, if it holds it already), for a caller
 * that waits for the holder rather than failing.
 */
export function tryTakeClaim(memory: SharedMemory, byteOffset: number): bigint {
  const words = memory.longWords;
  const index = byteOffset / 8;
  const mine = ownClaim();
  for (;;) {
    const found = Atomics.compareExchange(words, index, 0n, mine);
    if (found === 0n) return 0n;
    if (found === mine || claimIsLive(found)) return found;
    // The holder is gone: clear its claim (unless someone beat us to it) and try again.
    Atomics.compareExchange(words, index, found, 0n);
  }
}

/** Whether this thread holds the claim at `byteOffset`. */
export function holdsClaim(memory: SharedMemory, byteOffset: number): boolean {
  // A thread that never made its claim value holds nothing (and a close needs no fd to say so).
  return own !== undefined && readClaim(memory, byteOffset) === own;
}

/** Gives up the claim at `byteOffset` if this thread holds it. */
export function releaseClaim(memory: SharedMemory, byteOffset: number): void {
  if (own !== undefined) Atomics.compareExchange(memory.longWords, byteOffset / 8, own, 0n);
}
