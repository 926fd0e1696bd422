/**
 * One end of a ring throughput run, in its own process.
 *
 * Usage: ring_end.ts send|receive VARIANT PATH SIZE COUNT
 *   send      opens the sending end, prints "ready", sends COUNT messages of SIZE bytes (the
 *             first byte of message i is i & 255), then closes
 *   receive   opens the receiving end, prints "ready" once a sender may connect, takes COUNT
 *             messages checking each one's length and mark, and prints one JSON line: how
 *             many messages were timed and in how many seconds. The first fifth is a warm-up
 *             (the JIT compiles both ends meanwhile) and is not timed.
 *
 * @module
 */

import { ringVariant } from "../ring_variants.ts";

/** What the receiving end prints. */
export interface ReceiveReport {
  /** Messages timed: those after the first timed one, up to the last. */
  messages: number;
  /** Seconds from the first timed message to the last. */
  seconds: number;
}

/** The share of a run's messages taken before the clock starts. */
const WARM_UP = 1 / 5;

async function send(variantId: string, path: string, size: number, count: number): Promise<void> {
  const sender = await ringVariant(variantId).openSender(path);
  try {
    const message = new Uint8Array(size).fill(7);
    console.log("ready");
    for (let i = 0; i < count; i++) {
      message[0] = i & 255;
      if (!sender.trySend(message)) await sender.send(message);
    }
  } finally {
    sender.close();
  }
}

async function receive(
  variantId: string,
  path: string,
  size: number,
  count: number,
): Promise<ReceiveReport> {
  const receiver = await ringVariant(variantId).openReceiver(path, () => console.log("ready"));
  try {
    const into = new Uint8Array(size);
    const first = Math.floor((count - 1) * WARM_UP);
    let started = 0;
    for (let i = 0; i < count; i++) {
      let length = receiver.tryReceiveInto(into);
      if (length < 0) length = await receiver.receiveInto(into);
      if (i === first) started = performance.now();
      if (length !== size || into[0] !== (i & 255)) {
        throw new Error(
          `Message ${i} is wrong: ${length} bytes marked ${into[0]}, expected ${size} marked ${
            i & 255
          }`,
        );
      }
    }
    return { messages: count - 1 - first, seconds: (performance.now() - started) / 1000 };
  } finally {
    receiver.close();
  }
}

if (import.meta.main) {
  const [role, variant, path, sizeText, countText] = Deno.args;
  const size = Number(sizeText);
  const count = Number(countText);
  if (!Number.isSafeInteger(size) || size < 1 || !Number.isSafeInteger(count) || count < 2) {
    throw new TypeError(`Bad SIZE ${sizeText} or COUNT ${countText}`);
  }
  if (role === "send") await send(variant, path, size, count);
  else if (role === "receive") {
    console.log(JSON.stringify(await receive(variant, path, size, count)));
  } else throw new TypeError(`Unknown role ${JSON.stringify(role)}: expected send or receive`);
}
