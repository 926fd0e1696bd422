/**
 * The other process in the ring benchmarks.
 *
 * Usage: ring_peer.ts MODE ...
 *   produce MEMFD SIZE COUNT copy|zerocopy [SPIN]   send COUNT messages of SIZE bytes into the ring
 *   socket PATH SIZE COUNT                   write them to a Unix socket instead
 *   stdout SIZE COUNT                        write them to stdout (a pipe) instead
 *   echo MEMFD SPIN                          send back every message from ring A on ring B
 *
 * @module
 */

import { openMemfdRegion, openRingConsumer, openRingProducer } from "../../mod.ts";

/** Where the second ring of the ping-pong benchmark starts. */
export const ECHO_RING_OFFSET = 65536;

async function writeAll(
  writer: { write(bytes: Uint8Array): Promise<number> },
  bytes: Uint8Array,
): Promise<void> {
  for (let offset = 0; offset < bytes.length;) offset += await writer.write(bytes.subarray(offset));
}

async function produce(
  path: string,
  size: number,
  count: number,
  zeroCopy: boolean,
  spin?: number,
): Promise<void> {
  using region = openMemfdRegion(path);
  using producer = openRingProducer(region, { spin });
  const message = new Uint8Array(size).fill(7);
  console.log("ready");
  for (let i = 0; i < count; i++) {
    if (zeroCopy) {
      const slot = producer.tryReserve(size) ?? await producer.reserve(size);
      slot.bytes.set(message);
      slot.commit();
    } else if (!producer.trySend(message)) {
      await producer.send(message);
    }
  }
}

async function echo(path: string, spin: number): Promise<void> {
  using region = openMemfdRegion(path);
  using inbox = openRingConsumer(region, { spin });
  using outbox = openRingProducer(region, { offset: ECHO_RING_OFFSET, spin });
  console.log("ready");
  for (;;) {
    const message = inbox.tryReceive() ?? await inbox.receive();
    if (message === null) return;
    if (!outbox.trySend(message)) await outbox.send(message);
  }
}

if (import.meta.main) {
  const [mode, ...args] = Deno.args;
  switch (mode) {
    case "produce":
      await produce(
        args[0],
        Number(args[1]),
        Number(args[2]),
        args[3] === "zerocopy",
        args[4] === undefined ? undefined : Number(args[4]),
      );
      break;
    case "socket": {
      const connection = await Deno.connect({ transport: "unix", path: args[0] });
      const message = new Uint8Array(Number(args[1])).fill(7);
      for (let i = 0; i < Number(args[2]); i++) await writeAll(connection, message);
      connection.close();
      break;
    }
    case "stdout": {
      const message = new Uint8Array(Number(args[0])).fill(7);
      for (let i = 0; i < Number(args[1]); i++) await writeAll(Deno.stdout, message);
      break;
    }
    case "echo":
      await echo(args[0], Number(args[1]));
      break;
    default:
      throw new TypeError(`unknown mode ${mode}`);
  }
}
