/**
 * Every way of moving messages that the ring benchmarks measure, behind one small interface, so
 * that a new way (another batch form, say) is one more entry in
 * {@link RING_VARIANTS}: the cross-process and in-process cases, the report and the targets'
 * "best library way" pick it up from there.
 *
 * Each end copies the message in (the sender) and hands the receiver's loop the message's length
 * and first byte (which carries a sequence mark the benchmark checks), so no variant can skip
 * work another does.
 *
 * @module
 */

import { createRawMemfd, openRawMemfd } from "../ffi/raw_futex.ts";
import {
  createMemfdRegion,
  initRing,
  openMemfdRegion,
  openRingConsumer,
  openRingProducer,
  type RingConsumer,
  ringRegionSize,
  type SharedRegion,
} from "../mod.ts";
import { FramedReceiver, FramedSender } from "./framed_socket.ts";
import { MinimalConsumer, MinimalProducer, minimalRingSize } from "./minimal_ring.ts";

/** The capacity of every ring in the benchmark, in bytes. */
export const RING_CAPACITY = 4 << 20;

/** The sending end as the benchmark drives it. */
export interface SenderEnd {
  /** Sends `message` if there is room now. */
  trySend(message: Uint8Array): boolean;
  /** Sends `message`, waiting for room. */
  send(message: Uint8Array): Promise<void>;
  /** Closes the end (and whatever it opened). */
  close(): void;
}

/**
 * The receiving end as the benchmark drives it: each call takes one message and puts its first
 * byte in `into[0]` (copying variants copy the whole message into `into`).
 */
export interface ReceiverEnd {
  /** The next message's length, or -1 when none is there now. */
  tryReceiveInto(into: Uint8Array): number;
  /** The next message's length, waiting for one. */
  receiveInto(into: Uint8Array): Promise<number>;
  /** Closes the end (and whatever it opened). */
  close(): void;
}

/** What the orchestrator makes before starting the ends: memory, or a socket's path. */
export interface Endpoint extends Disposable {
  /** What both ends open. */
  path: string;
}

/** One way of moving messages. */
export interface RingVariant {
  /** Short id, used in figure ids and on peer command lines. */
  id: string;
  /** What it is, for the report. */
  label: string;
  /** One of the library's ways: the targets hold the best of these against the baselines. */
  library: boolean;
  /** The library's way that moves the message in place (one copy, by the sender). */
  zeroCopy: boolean;
  /** Also measured with both ends in one process. */
  inProcess: boolean;
  /** Makes the endpoint for a ring of {@link RING_CAPACITY} bytes; `socketPath` is free to use. */
  prepare(socketPath: string): Endpoint;
  /** Opens the sending end. */
  openSender(path: string): Promise<SenderEnd>;
  /** Opens the receiving end; calls `listening()` once a sender may connect. */
  openReceiver(path: string, listening: () => void): Promise<ReceiverEnd>;
}

function closedError(): Error {
  return new Deno.errors.UnexpectedEof("The producer closed the ring before the last message");
}

/** The library consumer's blocking copy into `into`, for the variants whose fallback it is. */
async function waitingReceiveInto(consumer: RingConsumer, into: Uint8Array): Promise<number> {
  const length = await consumer.receiveInto(into);
  if (length === null) throw closedError();
  return length;
}

function libraryEndpoint(): Endpoint {
  const region = createMemfdRegion({ size: ringRegionSize(RING_CAPACITY), label: "bench-ring" });
  initRing(region);
  return { path: region.name, [Symbol.dispose]: () => region.close() };
}

/** Opens the region at `path` and one ring end on it; the end's `close` closes both. */
function onRegion<T extends { close(): void }>(
  path: string,
  open: (region: SharedRegion) => T,
): { end: T; close: () => void } {
  const region = openMemfdRegion(path);
  try {
    const end = open(region);
    return {
      end,
      close: () => {
        end.close();
        region.close();
      },
    };
  } catch (error) {
    region.close();
    throw error;
  }
}

/** The library's sending end with `trySend()` / `send()` (a copy into the ring). */
function copyingSender(path: string): Promise<SenderEnd> {
  const { end: producer, close } = onRegion(path, (region) => openRingProducer(region));
  return Promise.resolve({
    trySend: (message) => producer.trySend(message),
    send: (message) => producer.send(message),
    close,
  });
}

const libraryCopy: RingVariant = {
  id: "copy",
  label: "ring, `trySend()` / `tryReceive()` (a new copy per message)",
  library: true,
  zeroCopy: false,
  inProcess: true,
  prepare: libraryEndpoint,
  openSender: copyingSender,
  openReceiver(path, listening): Promise<ReceiverEnd> {
    const { end: consumer, close } = onRegion(path, (region) => openRingConsumer(region));
    listening();
    return Promise.resolve({
      tryReceiveInto(into): number {
        const message = consumer.tryReceive();
        if (message === undefined) return -1;
        if (message === null) throw closedError();
        into[0] = message[0];
        return message.length;
      },
      async receiveInto(into): Promise<number> {
        const message = await consumer.receive();
        if (message === null) throw closedError();
        into[0] = message[0];
        return message.length;
      },
      close,
    });
  },
};

const libraryInto: RingVariant = {
  id: "into",
  label: "ring, `trySend()` / `tryReceiveInto()` (copying into the caller's buffer)",
  library: true,
  zeroCopy: false,
  inProcess: true,
  prepare: libraryEndpoint,
  openSender: copyingSender,
  openReceiver(path, listening): Promise<ReceiverEnd> {
    const { end: consumer, close } = onRegion(path, (region) => openRingConsumer(region));
    listening();
    return Promise.resolve({
      tryReceiveInto(into): number {
        const length = consumer.tryReceiveInto(into);
        if (length === undefined) return -1;
        if (length === null) throw closedError();
        return length;
      },
      receiveInto: (into) => waitingReceiveInto(consumer, into),
      close,
    });
  },
};

/** How many messages the batch variant takes per call. */
const BATCH = 64;

const libraryBatchInto: RingVariant = {
  id: "batch-into",
  label: `ring, \`trySend()\` / \`tryReceiveBatchInto()\` (up to ${BATCH} messages per call)`,
  library: true,
  zeroCopy: false,
  inProcess: true,
  prepare: libraryEndpoint,
  openSender: copyingSender,
  openReceiver(path, listening): Promise<ReceiverEnd> {
    const { end: consumer, close } = onRegion(path, (region) => openRingConsumer(region));
    listening();
    let batch = new Uint8Array(0);
    const lengths = new Uint32Array(BATCH);
    let count = 0;
    let next = 0;
    let offset = 0;
    // Hands out the messages of the last batch (already copied out of the ring, once each).
    const take = (into: Uint8Array): number => {
      if (next === count) {
        if (batch.length < into.length * BATCH) batch = new Uint8Array(into.length * BATCH);
        count = consumer.tryReceiveBatchInto(batch, lengths);
        next = 0;
        offset = 0;
        if (count === 0) return -1;
      }
      const length = lengths[next++];
      into[0] = batch[offset];
      offset += length;
      return length;
    };
    return Promise.resolve({
      tryReceiveInto: take,
      async receiveInto(into): Promise<number> {
        if (batch.length < into.length * BATCH) batch = new Uint8Array(into.length * BATCH);
        const taken = await consumer.receiveBatchInto(batch, lengths);
        if (taken === null) throw closedError();
        count = taken;
        next = 0;
        offset = 0;
        return take(into);
      },
      close,
    });
  },
};

const libraryWith: RingVariant = {
  id: "with",
  label:
    `ring, \`trySendWith()\` / \`tryReadWith()\` (zero-copy callbacks, up to ${BATCH} per call)`,
  library: true,
  zeroCopy: true,
  inProcess: true,
  prepare: libraryEndpoint,
  openSender(path): Promise<SenderEnd> {
    const { end: producer, close } = onRegion(path, (region) => openRingProducer(region));
    let current: Uint8Array = new Uint8Array(0);
    const write = (data: Uint8Array, offset: number): number => {
      data.set(current, offset);
      return current.length;
    };
    return Promise.resolve({
      trySend(message): boolean {
        current = message;
        return producer.trySendWith(message.length, write);
      },
      send(message): Promise<void> {
        current = message;
        return producer.sendWith(message.length, write);
      },
      close,
    });
  },
  openReceiver(path, listening): Promise<ReceiverEnd> {
    const { end: consumer, close } = onRegion(path, (region) => openRingConsumer(region));
    listening();
    // Each message is looked at in place (its mark and length noted) by the callback, up to a
    // batch per call, as a reader that handles messages in the callback would; the notes are
    // then handed out one by one.
    const marks = new Uint8Array(BATCH);
    const sizes = new Uint32Array(BATCH);
    let count = 0;
    let next = 0;
    const read = (data: Uint8Array, offset: number, length: number): void => {
      marks[count] = data[offset];
      sizes[count++] = length;
    };
    const take = (into: Uint8Array): number => {
      into[0] = marks[next];
      return sizes[next++];
    };
    return Promise.resolve({
      tryReceiveInto(into): number {
        if (next === count) {
          count = next = 0;
          if (consumer.tryReadWith(read, BATCH) === null) throw closedError();
          if (count === 0) return -1;
        }
        return take(into);
      },
      async receiveInto(into): Promise<number> {
        count = next = 0;
        if (await consumer.readWith(read, BATCH) === null) throw closedError();
        return take(into);
      },
      close,
    });
  },
};

const libraryZeroCopy: RingVariant = {
  id: "zerocopy",
  label: "ring, `tryReserve()`+`commit()` / `tryRead()`+`release()` (zero-copy)",
  library: true,
  zeroCopy: true,
  inProcess: true,
  prepare: libraryEndpoint,
  openSender(path): Promise<SenderEnd> {
    const { end: producer, close } = onRegion(path, (region) => openRingProducer(region));
    return Promise.resolve({
      trySend(message): boolean {
        const slot = producer.tryReserve(message.length);
        if (slot === undefined) return false;
        slot.bytes.set(message);
        slot.commit();
        return true;
      },
      async send(message): Promise<void> {
        const slot = await producer.reserve(message.length);
        slot.bytes.set(message);
        slot.commit();
      },
      close,
    });
  },
  openReceiver(path, listening): Promise<ReceiverEnd> {
    const { end: consumer, close } = onRegion(path, (region) => openRingConsumer(region));
    listening();
    const take = (lease: ReturnType<typeof consumer.tryRead>, into: Uint8Array): number => {
      if (lease === undefined) return -1;
      if (lease === null) throw closedError();
      const bytes = lease.bytes;
      into[0] = bytes[0];
      const length = bytes.length;
      lease.release();
      return length;
    };
    return Promise.resolve({
      tryReceiveInto: (into) => take(consumer.tryRead(), into),
      receiveInto: async (into) => take(await consumer.read(), into),
      close,
    });
  },
};

const minimal: RingVariant = {
  id: "minimal",
  label: "minimal ring over a bare memfd (the floor, `bench/minimal_ring.ts`)",
  library: false,
  zeroCopy: false,
  inProcess: true,
  prepare(): Endpoint {
    const memory = createRawMemfd(minimalRingSize(RING_CAPACITY), { name: "bench-minimal-ring" });
    return { path: memory.path, [Symbol.dispose]: () => memory.close() };
  },
  openSender(path): Promise<SenderEnd> {
    const memory = openRawMemfd(path, minimalRingSize(RING_CAPACITY));
    const producer = new MinimalProducer(memory);
    return Promise.resolve({
      trySend: (message) => producer.trySend(message),
      send: (message) => producer.send(message),
      close: () => memory.close(),
    });
  },
  openReceiver(path, listening): Promise<ReceiverEnd> {
    const memory = openRawMemfd(path, minimalRingSize(RING_CAPACITY));
    const consumer = new MinimalConsumer(memory);
    listening();
    return Promise.resolve({
      tryReceiveInto: (into) => consumer.tryReceiveInto(into),
      receiveInto: (into) => consumer.receiveInto(into),
      close: () => memory.close(),
    });
  },
};

const socket: RingVariant = {
  id: "socket",
  label: "Unix socket, a 4-byte length prefix per message",
  library: false,
  zeroCopy: false,
  inProcess: false,
  prepare(socketPath): Endpoint {
    return {
      path: socketPath,
      [Symbol.dispose]: () => {
        try {
          Deno.removeSync(socketPath);
        } catch {
          // not created, or already removed when the listener closed
        }
      },
    };
  },
  async openSender(path): Promise<SenderEnd> {
    const sender = await FramedSender.connect(path);
    return {
      trySend: () => false,
      send: (message) => sender.send(message),
      close: () => sender.close(),
    };
  },
  async openReceiver(path, listening): Promise<ReceiverEnd> {
    const listener = Deno.listen({ transport: "unix", path });
    listening();
    try {
      const receiver = new FramedReceiver(await listener.accept());
      return {
        tryReceiveInto: (into) => receiver.tryReceiveInto(into),
        receiveInto: (into) => receiver.receiveInto(into),
        close: () => receiver.close(),
      };
    } finally {
      listener.close();
    }
  },
};

/** Every way measured, in the order the report shows them. */
export const RING_VARIANTS: readonly RingVariant[] = [
  libraryCopy,
  libraryInto,
  libraryBatchInto,
  libraryZeroCopy,
  libraryWith,
  minimal,
  socket,
];

/** The variant with `id`; throws a clear error for an unknown one. */
export function ringVariant(id: string): RingVariant {
  const variant = RING_VARIANTS.find((candidate) => candidate.id === id);
  if (variant === undefined) {
    throw new TypeError(
      `Unknown ring variant ${JSON.stringify(id)}; known: ${
        RING_VARIANTS.map((v) => v.id).join(", ")
      }`,
    );
  }
  return variant;
}
