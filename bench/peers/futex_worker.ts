/**
 * A Worker that blocks in a raw synchronous futex wait and posts each change to the main
 * thread: one way to wait without holding the event loop, measured against the nonblocking FFI
 * call. Receives `{ path, samples }`, posts "ready", then the sequence value of each change.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { openRawMemfd } from "../../ffi/raw_futex.ts";
import { CONTROL_SIZE, SEQUENCE_WORD } from "./wake_protocol.ts";

const WAIT_SLICE_MS = 60_000;

self.onmessage = (event: MessageEvent<{ path: string; samples: number }>) => {
  const { path, samples } = event.data;
  using control = openRawMemfd(path, CONTROL_SIZE);
  const words = control.words;
  const sequence = control.word(SEQUENCE_WORD);
  let last = Atomics.load(words, SEQUENCE_WORD);
  self.postMessage("ready");
  for (let taken = 0; taken < samples; taken++) {
    while (Atomics.load(words, SEQUENCE_WORD) === last) sequence.waitSync(last, WAIT_SLICE_MS);
    last = Atomics.load(words, SEQUENCE_WORD);
    self.postMessage(last);
  }
};
