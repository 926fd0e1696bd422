/**
 * A role in shared memory that one live process holds at a time (the state cell's writer, a
 * ring's producer or consumer). The 64-bit claim word holds the holder's pid and the low bits of
 * its start time, set and cleared with one compare-and-swap, so a holder that died, or whose pid
 * was recycled, is recognised and replaced instead of blocking everyone forever.
 *
 * @module
 */

import type { SharedMemory } from "./memory.ts";
import * as posix from "../ffi/posix.ts";
import { failure } from "./errors.ts";

let self: bigint | undefined;

/** This process's claim value: start time (low 32 bits) above the pid. */
export function ownClaim(): bigint {
  if (self === undefined) {
    const pid = Deno.pid;
    const start = posix.processState(pid)?.startTime ?? 0n;
    self = ((start & 0xffff_ffffn) << 32n) | BigInt(pid);
  }
  return self;
}

/** The kernel's largest possible pid (`PID_MAX_LIMIT` on 64-bit Linux). */
const PID_MAX_LIMIT = 2 ** 22;

/** The pid a claim value names. */
export function pidOf(claim: bigint): number {
  return Number(claim & 0xffff_ffffn);
}

/** Whether the process a claim value names is still running (and is the same process). */
export function claimIsLive(claim: bigint): boolean {
  if (claim === 0n) return false;
  const pid = pidOf(claim);
  // No process has a pid beyond the kernel's limit; a claim naming one was written by no one.
  if (pid <= 0 || pid > PID_MAX_LIMIT || !posix.sendSignal(pid, 0)) return false;
  const state = posix.processState(pid);
  // Without a readable /proc the signal probe is all there is to go on.
  if (state === undefined) return true;
  if (state.state === "Z" || state.state === "X") return false;
  const start = claim >> 32n;
  return start === 0n || start === (state.startTime & 0xffff_ffffn);
}

/** Reads the claim word at `byteOffset` (8-aligned). */
export function readClaim(memory: SharedMemory, byteOffset: number): bigint {
  return Atomics.load(memory.longWords, byteOffset >> 3);
}

/** The pid holding the claim at `byteOffset`, or `undefined` when nobody live holds it. */
export function claimHolder(memory: SharedMemory, byteOffset: number): number | undefined {
  const claim = readClaim(memory, byteOffset);
  return claimIsLive(claim) ? pidOf(claim) : undefined;
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
  const words = memory.longWords;
  const index = byteOffset >> 3;
  const mine = ownClaim();
  for (;;) {
    const found = Atomics.compareExchange(words, index, 0n, mine);
    if (found === 0n) return;
    if (found === mine) {
      throw failure(Deno.errors.Busy, `claim ${role}`, subject, "this process already holds it");
    }
    if (claimIsLive(found)) {
      throw failure(Deno.errors.Busy, `claim ${role}`, subject, `pid ${pidOf(found)} holds it`);
    }
    // The holder is gone: clear its claim (unless someone beat us to it) and try again.
    Atomics.compareExchange(words, index, found, 0n);
  }
}

/** Whether this process holds the claim at `byteOffset`. */
export function holdsClaim(memory: SharedMemory, byteOffset: number): boolean {
  return readClaim(memory, byteOffset) === ownClaim();
}

/** Gives up the claim at `byteOffset` if this process holds it. */
export function releaseClaim(memory: SharedMemory, byteOffset: number): void {
  Atomics.compareExchange(memory.longWords, byteOffset >> 3, ownClaim(), 0n);
}
