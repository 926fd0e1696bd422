/**
 * The reading side of the wake-up benchmarks: waits for each change in one of several ways,
 * reads CLOCK_MONOTONIC when it sees it, and subtracts the writer's stamp. Prints "ready", then
 * at the end one JSON line (a {@link WakeReport}).
 *
 * Usage: wake_reader.ts MODE CONTROL SAMPLES [TARGET]
 *   raw-sync      synchronous FFI futex wait on the control memfd's sequence word
 *   raw-async     nonblocking FFI futex wait (the event loop stays free)
 *   raw-waitv     nonblocking FFI futex_waitv on the word and a control word (the hub's call)
 *   hub-async     the library's futex hub alone, on the same word
 *   raw-worker    a Worker blocks in raw-sync and posts each change to the main thread
 *   spin-N        spin on the word for up to N microseconds, then as raw-async
 *   cell-sync     the state cell in the memfd TARGET, waitForChangeSync()
 *   cell-async    the state cell in the memfd TARGET, waitForChange()
 *   socket        8-byte stamps from the Unix socket TARGET
 *   pipe          8-byte stamps from stdin
 *
 * @module
 */

import { openRawMemfd, type RawSharedMemory } from "../../ffi/raw_futex.ts";
import { monotonicNanos } from "../../ffi/posix.ts";
import { openMemfdRegion, openStateCell } from "../../mod.ts";
import {
  CONTROL_SIZE,
  SEEN_WORD,
  SEQUENCE_WORD,
  sinceStamp,
  type WakeReport,
} from "./wake_protocol.ts";

const WAIT_SLICE_MS = 60_000;

function ready(): void {
  console.log("ready");
}

function rawSync(control: RawSharedMemory, samples: number): WakeReport {
  const words = control.words;
  const longWords = new BigInt64Array(control.buffer);
  const sequence = control.word(SEQUENCE_WORD);
  const latenciesNs: number[] = [];
  let last = Atomics.load(words, SEQUENCE_WORD);
  ready();
  while (latenciesNs.length < samples) {
    while (Atomics.load(words, SEQUENCE_WORD) === last) sequence.waitSync(last, WAIT_SLICE_MS);
    latenciesNs.push(sinceStamp(longWords));
    last = Atomics.load(words, SEQUENCE_WORD);
    Atomics.store(words, SEEN_WORD, latenciesNs.length);
  }
  return { latenciesNs };
}

/** How an asynchronous reader sleeps on the sequence word: see the modes above. */
type AsyncWait = "wait" | "waitv" | "waitInHub";

/** raw-async (or another `how`), with `spinUs` > 0 a time-bounded spin before each sleep. */
async function rawAsync(
  control: RawSharedMemory,
  samples: number,
  spinUs: number,
  how: AsyncWait = "wait",
): Promise<WakeReport> {
  const words = control.words;
  const longWords = new BigInt64Array(control.buffer);
  const sequence = control.word(SEQUENCE_WORD);
  const spinMs = spinUs / 1000;
  const latenciesNs: number[] = [];
  let spinNs = 0;
  let last = Atomics.load(words, SEQUENCE_WORD);
  ready();
  while (latenciesNs.length < samples) {
    if (spinMs > 0) {
      const started = performance.now();
      let now = started;
      while (
        Atomics.load(words, SEQUENCE_WORD) === last && (now = performance.now()) - started < spinMs
      );
      spinNs += (now - started) * 1e6;
    }
    while (Atomics.load(words, SEQUENCE_WORD) === last) await sequence[how](last);
    latenciesNs.push(sinceStamp(longWords));
    last = Atomics.load(words, SEQUENCE_WORD);
    Atomics.store(words, SEEN_WORD, latenciesNs.length);
  }
  return spinMs > 0 ? { latenciesNs, spinNs } : { latenciesNs };
}

function rawWorker(control: RawSharedMemory, samples: number): Promise<WakeReport> {
  const words = control.words;
  const longWords = new BigInt64Array(control.buffer);
  const latenciesNs: number[] = [];
  const worker = new Worker(new URL("./futex_worker.ts", import.meta.url), { type: "module" });
  return new Promise((resolve, reject) => {
    worker.onerror = (event) => {
      event.preventDefault();
      worker.terminate();
      reject(new Error(`The futex worker failed: ${event.message}`));
    };
    worker.onmessage = (event: MessageEvent<"ready" | number>) => {
      if (event.data === "ready") return ready();
      latenciesNs.push(sinceStamp(longWords));
      Atomics.store(words, SEEN_WORD, latenciesNs.length);
      if (latenciesNs.length === samples) {
        worker.terminate();
        resolve({ latenciesNs });
      }
    };
    worker.postMessage({ path: control.path, samples });
  });
}

/** The state cell's synchronous wait, in a synchronous loop as `rawSync()` is. */
function cellSync(control: RawSharedMemory, samples: number, target: string): WakeReport {
  const words = control.words;
  const longWords = new BigInt64Array(control.buffer);
  using region = openMemfdRegion(target);
  using cell = openStateCell(region);
  const latenciesNs: number[] = [];
  let last = cell.read();
  ready();
  while (latenciesNs.length < samples) {
    last = cell.waitForChangeSync({ from: last, timeout: WAIT_SLICE_MS });
    latenciesNs.push(sinceStamp(longWords));
    Atomics.store(words, SEEN_WORD, latenciesNs.length);
  }
  return { latenciesNs };
}

async function cellAsync(
  control: RawSharedMemory,
  samples: number,
  target: string,
): Promise<WakeReport> {
  const words = control.words;
  const longWords = new BigInt64Array(control.buffer);
  using region = openMemfdRegion(target);
  using cell = openStateCell(region);
  const latenciesNs: number[] = [];
  let last = cell.read();
  ready();
  while (latenciesNs.length < samples) {
    last = await cell.waitForChange({ from: last });
    latenciesNs.push(sinceStamp(longWords));
    Atomics.store(words, SEEN_WORD, latenciesNs.length);
  }
  return { latenciesNs };
}

async function stream(
  control: RawSharedMemory,
  samples: number,
  readable: ReadableStream<Uint8Array>,
): Promise<WakeReport> {
  const words = control.words;
  const latenciesNs: number[] = [];
  const pending = new Uint8Array(16);
  const view = new DataView(pending.buffer);
  let buffered = 0;
  for await (const chunk of readable) {
    const now = monotonicNanos();
    for (const byte of chunk) {
      pending[buffered++] = byte;
      if (buffered === 8) {
        latenciesNs.push(Number(now - view.getBigInt64(0, true)));
        buffered = 0;
      }
    }
    Atomics.store(words, SEEN_WORD, latenciesNs.length);
    if (latenciesNs.length >= samples) break;
  }
  return { latenciesNs };
}

async function main(args: string[]): Promise<WakeReport> {
  const [mode, controlPath, count, target] = args;
  const samples = Number(count);
  if (!Number.isSafeInteger(samples) || samples < 1) {
    throw new TypeError(`SAMPLES ${JSON.stringify(count)} is not a positive whole number`);
  }
  using control = openRawMemfd(controlPath, CONTROL_SIZE);
  const spin = /^spin-(\d+)$/.exec(mode ?? "");
  switch (mode) {
    case "raw-sync":
      return rawSync(control, samples);
    case "raw-async":
      return await rawAsync(control, samples, 0);
    case "raw-waitv":
      return await rawAsync(control, samples, 0, "waitv");
    case "hub-async":
      return await rawAsync(control, samples, 0, "waitInHub");
    case "raw-worker":
      return await rawWorker(control, samples);
    case "cell-sync":
      return cellSync(control, samples, target);
    case "cell-async":
      return await cellAsync(control, samples, target);
    case "socket": {
      const connection = await Deno.connect({ transport: "unix", path: target });
      ready();
      try {
        return await stream(control, samples, connection.readable);
      } finally {
        try {
          connection.close();
        } catch {
          // the stream's end already closed it
        }
      }
    }
    case "pipe":
      ready();
      return await stream(control, samples, Deno.stdin.readable);
    default:
      if (spin !== null) return await rawAsync(control, samples, Number(spin[1]));
      throw new TypeError(`Unknown mode ${JSON.stringify(mode)}`);
  }
}

if (import.meta.main) {
  console.log(JSON.stringify(await main(Deno.args)));
}
