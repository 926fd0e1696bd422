/**
 * What /proc says about a child: CPU time and voluntary context switches of all its threads,
 * and memory. (Deno reads /proc only with --allow-all, which `deno task bench` has.)
 *
 * @module
 */

import { delay } from "@std/async/delay";

interface ThreadSample {
  /** Nanoseconds on a CPU (the first field of /proc/PID/task/TID/schedstat). */
  cpuNs: number;
  /** Voluntary context switches. */
  switches: number;
}

/** CPU time and voluntary context switches of each thread of `pid`, by thread id. */
function threadSamples(pid: number): Map<string, ThreadSample> {
  const samples = new Map<string, ThreadSample>();
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const status = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/status`);
      const schedstat = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/schedstat`);
      samples.set(task.name, {
        cpuNs: Number(schedstat.split(" ")[0]),
        switches: Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0),
      });
    } catch {
      // the thread ended meanwhile
    }
  }
  return samples;
}

/** What a process cost while it was watched. */
export interface IdleCost {
  /** Percent of one core. */
  cpuPercent: number;
  /** Voluntary context switches per second, all threads: each is a sleep and a wake-up. */
  wakeupsPerSecond: number;
}

/**
 * Watches `pids` for `seconds`: CPU time and voluntary context switches, sampled per thread
 * every second (threads that end meanwhile, as Deno's idle workers do, would otherwise take
 * their counts with them; a thread that starts and ends within one second is missed).
 */
export async function idleCost(pids: readonly number[], seconds: number): Promise<IdleCost[]> {
  const cpuNs = pids.map(() => 0);
  const switches = pids.map(() => 0);
  let previous = pids.map(threadSamples);
  const started = performance.now();
  for (let second = 0; second < seconds; second++) {
    await delay(1000);
    const now = pids.map(threadSamples);
    now.forEach((threads, i) => {
      for (const [tid, sample] of threads) {
        const before = previous[i].get(tid) ?? { cpuNs: 0, switches: 0 };
        cpuNs[i] += Math.max(0, sample.cpuNs - before.cpuNs);
        switches[i] += Math.max(0, sample.switches - before.switches);
      }
    });
    previous = now;
  }
  const elapsed = (performance.now() - started) / 1000;
  return pids.map((_, i) => ({
    cpuPercent: (cpuNs[i] / 1e9 / elapsed) * 100,
    wakeupsPerSecond: switches[i] / elapsed,
  }));
}

/**
 * Private memory of `pid` in bytes: its resident anonymous pages (heaps, stacks, JIT code). The
 * resident set also counts the pages of the Deno binary a process has touched, which every Deno
 * process on the machine shares.
 */
export function anonymousBytes(pid: number): number {
  const rollup = Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`);
  const kib = /^Anonymous:\s+(\d+)/m.exec(rollup)?.[1];
  if (kib === undefined) throw new Error(`No Anonymous in /proc/${pid}/smaps_rollup`);
  return Number(kib) * 1024;
}

/** Resident set size of `pid`, in bytes. */
export function residentBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kib = /^VmRSS:\s+(\d+)/m.exec(status)?.[1];
  if (kib === undefined) throw new Error(`No VmRSS in /proc/${pid}/status`);
  return Number(kib) * 1024;
}
