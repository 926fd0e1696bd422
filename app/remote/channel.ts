/**
 * A one-way channel of small messages between two processes that may each restart at any
 * time: a ring (lib/ring/) plus two generation words beside it, one per end.
 *
 * The ring already lets a restarted end attach again, but an end that is left behind cannot
 * sleep until that happens: a receiver whose sender closed sees "closed" at once on every
 * receive, and a sender whose receiver closed gets `BrokenPipe` at once on every send. So each
 * end bumps its generation word (and wakes it) when it attaches, and the end left behind sleeps
 * on that word: no polling, no liveness timer, whatever order the two come and go in. The
 * ring also refuses a new producer while its consumer is closed, so the sender attaches when
 * it first finds a receiver there.
 *
 * Layout, from the channel's offset in its region:
 *
 * | bytes | what                                                       |
 * | ----- | ---------------------------------------------------------- |
 * | 0-3   | sender generation: bumped each time a sender attaches      |
 * | 4-7   | receiver generation: bumped each time a receiver attaches  |
 * | 64-   | the ring (its header, then `capacity` data bytes)          |
 *
 * @module
 */

import {
  initRing,
  openRingConsumer,
  openRingProducer,
  restoreRingHeader,
  restoreRingPosition,
  type RingConsumer,
  type RingProducer,
  ringRegionSize,
  type SharedRegion,
} from "../../mod.ts";

const SENDER_GENERATION = 0;
const RECEIVER_GENERATION = 4;
/** Where a channel's ring starts: after the channel's own 64-byte header. */
export const CHANNEL_RING = 64;
// The ends never check each other's liveness on a timer: the generation words do that job.
const RING_OPTIONS = { spin: 0, livenessCheckMs: Infinity };

/** Bytes a channel with `capacity` bytes of ring data takes in a region. */
export function channelSize(capacity: number): number {
  return CHANNEL_RING + ringRegionSize(capacity);
}

/** Writes an empty channel at `offset` (a multiple of 64) of `region`: the creator does this once. */
export function initChannel(
  region: SharedRegion,
  options: { offset: number; capacity: number },
): void {
  region.storeInt32(options.offset + SENDER_GENERATION, 0);
  region.storeInt32(options.offset + RECEIVER_GENERATION, 0);
  initRing(region, { offset: options.offset + CHANNEL_RING, capacity: options.capacity });
}

/**
 * Writes the fixed words of the channel's ring header anew if something wrote over them (see
 * `restoreRingHeader`); returns what was wrong, or `undefined`. For the channel's creator only.
 */
export function restoreChannel(
  region: SharedRegion,
  options: { offset: number; capacity: number },
): string | undefined {
  return restoreRingHeader(region, {
    offset: options.offset + CHANNEL_RING,
    capacity: options.capacity,
  });
}

/**
 * Sets the position of the channel's `end` anew where something wrote over it (see
 * `restoreRingPosition`): what was in the channel is dropped. For the channel's creator only,
 * while no process holds that end.
 */
export function restoreChannelEnd(
  region: SharedRegion,
  options: { offset: number; capacity: number; end: "sender" | "receiver" },
): string | undefined {
  return restoreRingPosition(region, {
    offset: options.offset + CHANNEL_RING,
    capacity: options.capacity,
    end: options.end === "sender" ? "producer" : "consumer",
  });
}

/** What {@link ChannelSender.trySend} did with a message. */
export type TrySendResult = "sent" | "full" | "no receiver";

function joinSignals(signal: AbortSignal | undefined, closing: AbortSignal): AbortSignal {
  return signal === undefined ? closing : AbortSignal.any([signal, closing]);
}

/** The most batches {@link ChannelReceiver.discardWaiting} takes: each is a ring's worth at most. */
const DISCARD_BATCHES = 4;

/** Bumps a generation word and wakes whoever sleeps on it. */
function announce(region: SharedRegion, offset: number): void {
  region.addInt32(offset, 1);
  region.notifyInt32(offset);
}

/** The sending end of a channel; see {@link openChannelSender}. */
export class ChannelSender {
  readonly #region: SharedRegion;
  readonly #offset: number;
  readonly #closing = new AbortController();
  /** The ring's producer end, once attached: the ring refuses a producer while its consumer is closed. */
  #producer: RingProducer | undefined;
  #closed = false;

  /** Not for direct use: call {@link openChannelSender}. */
  constructor(region: SharedRegion, offset: number) {
    this.#region = region;
    this.#offset = offset;
    this.#attach();
  }

  /** Whether a receiver was there to attach to (it may have left since). */
  get attached(): boolean {
    return this.#producer !== undefined;
  }

  /** Attaches to the ring unless already attached; false while its receiver is closed. */
  #attach(): boolean {
    if (this.#closed) throw new Deno.errors.BadResource("The channel sender is closed");
    if (this.#producer !== undefined) return true;
    try {
      this.#producer = openRingProducer(this.#region, {
        ...RING_OPTIONS,
        offset: this.#offset + CHANNEL_RING,
      });
    } catch (error) {
      if (error instanceof Deno.errors.BrokenPipe) return false;
      throw error;
    }
    announce(this.#region, this.#offset + SENDER_GENERATION);
    return true;
  }

  /**
   * Sends `message` if it fits now; never waits. A receiver that closed is noticed once the
   * ring is full (what was sent meanwhile waits in the ring for the next receiver).
   */
  trySend(message: Uint8Array): TrySendResult {
    if (!this.#attach()) return "no receiver";
    try {
      return this.#producer?.trySend(message) ? "sent" : "full";
    } catch (error) {
      if (error instanceof Deno.errors.BrokenPipe) return "no receiver";
      throw error;
    }
  }

  /**
   * Sends `message`, sleeping while the ring is full or while no receiver is attached (one
   * that closed is waited for until a new one attaches). Rejects with the signal's reason.
   */
  async send(message: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    const signal = joinSignals(options.signal, this.#closing.signal);
    const word = this.#offset + RECEIVER_GENERATION;
    for (;;) {
      const generation = this.#region.loadInt32(word);
      if (this.#attach()) {
        try {
          await this.#producer?.send(message, { signal });
          return;
        } catch (error) {
          if (!(error instanceof Deno.errors.BrokenPipe)) throw error;
        }
      }
      await this.#region.waitInt32(word, generation, { signal });
    }
  }

  /** Detaches: the receiver gets what was sent, then waits for the next sender. Safe twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing.abort(new Deno.errors.BadResource("The channel sender is closed"));
    this.#producer?.close();
  }

  /** Same as {@link ChannelSender.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** The receiving end of a channel; see {@link openChannelReceiver}. */
export class ChannelReceiver {
  readonly #region: SharedRegion;
  readonly #offset: number;
  readonly #consumer: RingConsumer;
  readonly #closing = new AbortController();

  /** Not for direct use: call {@link openChannelReceiver}. */
  constructor(region: SharedRegion, offset: number) {
    this.#region = region;
    this.#offset = offset;
    this.#consumer = openRingConsumer(region, { ...RING_OPTIONS, offset: offset + CHANNEL_RING });
    announce(region, offset + RECEIVER_GENERATION);
  }

  /**
   * Takes the messages waiting now, without sleeping; returns how many there were. A record
   * written over among them is dropped with what waited behind it.
   */
  discardWaiting(): number {
    let count = 0;
    try {
      // A batch stops before a record written over, returning what came before it: the next
      // one meets the record. A few batches at most: a sender that keeps up cannot hold this.
      for (let batch = 0; batch < DISCARD_BATCHES; batch++) {
        const taken = this.#consumer.tryReceiveBatch().length;
        if (taken === 0) break;
        count += taken;
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.InvalidData)) throw error;
      this.#consumer.discardAll();
    }
    return count;
  }

  /**
   * Yields each message (a copy) from whichever sender is attached, across senders that come
   * and go, until `signal` aborts or this end is closed. A record something wrote over (the
   * memfd is open to its user through `/proc/PID/fd/N`) drops what was waiting behind it, which
   * `onDiscarded` is told, and the messages sent after it flow on; a ring header written over
   * still throws (`InvalidData`): only its creator writes it anew.
   */
  async *messages(
    signal: AbortSignal,
    options: { onDiscarded?: (error: Error, bytes: number) => void } = {},
  ): AsyncGenerator<Uint8Array, void, undefined> {
    const stop = joinSignals(signal, this.#closing.signal);
    const word = this.#offset + SENDER_GENERATION;
    while (!stop.aborted) {
      const generation = this.#region.loadInt32(word);
      try {
        for await (const message of this.#consumer.messages({ signal: stop })) yield message;
      } catch (error) {
        if (!(error instanceof Deno.errors.InvalidData)) throw error;
        // Throws in turn when it cannot get past (a header or a head position written over).
        const bytes = this.#consumer.discardAll();
        options.onDiscarded?.(error, bytes);
        continue;
      }
      if (stop.aborted) return;
      // The sender closed: sleep until another one attaches.
      try {
        await this.#region.waitInt32(word, generation, { signal: stop });
      } catch (error) {
        if (stop.aborted) return;
        throw error;
      }
    }
  }

  /** Detaches: a sender's messages wait in the ring for the next receiver. Safe twice. */
  close(): void {
    this.#closing.abort();
    this.#consumer.close();
  }

  /** Same as {@link ChannelReceiver.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Attaches the sending end of the channel at `offset` of `region` (written by
 * {@link initChannel}). One sender at a time; a dead one's place is taken over.
 */
export function openChannelSender(
  region: SharedRegion,
  options: { offset: number },
): ChannelSender {
  return new ChannelSender(region, options.offset);
}

/** Attaches the receiving end of the channel at `offset` of `region`. One receiver at a time. */
export function openChannelReceiver(
  region: SharedRegion,
  options: { offset: number },
): ChannelReceiver {
  return new ChannelReceiver(region, options.offset);
}
