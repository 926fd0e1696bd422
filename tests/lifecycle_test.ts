/**
 * Lifetimes: no order of open, use and close crashes, hangs or leaks.
 *
 * The randomized test runs pairs of peer processes (tests/fixtures/lifecycle_peer.ts) on
 * regions of every kind that both share, each making thousands of random calls with many in
 * flight; every child must exit normally, in time, leaving no fd, mapping or name behind, and no
 * message may be lost, duplicated or corrupted. The seed is printed; set
 * `MMAP_IPC_LIFECYCLE_SEED` to replay it, `MMAP_IPC_LIFECYCLE_ROUNDS` (default 6) for a longer
 * soak, `MMAP_IPC_LIFECYCLE_STEPS` (default 3000) for longer peers. The regressions of issue 10
 * follow, and then regressions of the bugs the randomized test found.
 *
 * @module
 */

import { assert, assertEquals } from "@std/assert";
import {
  createMemfdRegion,
  openFileRegion,
  openRingConsumer,
  openRingProducer,
  openShmRegion,
  openSysvRegion,
  removeShm,
  type SharedRegion,
} from "../mod.ts";
import { statPath } from "../ffi/posix.ts";
import {
  initLifecycleRegion,
  objectPrefix,
  type PeerConfig,
  REGION_SIZE,
  RING_CAPACITIES,
  type SharedObject,
} from "./fixtures/lifecycle_layout.ts";
import { lostMessages } from "./fixtures/lifecycle_messages.ts";
import { mixSeed } from "./fixtures/lifecycle_random.ts";
import type { ChildProcess } from "./helpers/child_process.ts";
import { TESTS_DIR } from "./helpers/paths.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { threadReport } from "./helpers/proc.ts";
import { ringRegion } from "./helpers/rings.ts";
import { envNumber } from "./helpers/env.ts";
import { spawnDeno } from "./helpers/spawn.ts";
import { uniqueSysvKey, withTempDir } from "./helpers/temp.ts";

const PEER = `${TESTS_DIR}fixtures/lifecycle_peer.ts`;
/** How long a peer may take before it counts as hung: far beyond what a healthy one needs. */
const PEER_BOUND_MS = 180_000;

/** What one peer reported at its end. */
interface PeerSummary {
  steps: number;
  ms: number;
  outcomes: Record<string, number>;
  syncThrows: Record<string, number>;
  skipped: Record<string, number[]>;
  /** Numbers skipped across a `discardAll()`: dropped on purpose. */
  discarded: Record<string, number[]>;
  unsent: Record<string, number[]>;
  pid: number;
}

/** The regions both peers of a round share, made and removed by the parent. */
class SharedObjects implements Disposable {
  readonly objects: SharedObject[];
  readonly #regions: SharedRegion[] = [];

  constructor(dir: string, tag: string, capacity: number) {
    const size = REGION_SIZE;
    const exclusive = { create: true, exclusive: true, size };
    const file = `${dir}/shared.region`;
    const shm = `/${objectPrefix(tag)}-shared`;
    const key = uniqueSysvKey();
    try {
      this.#regions.push(openFileRegion(file, exclusive));
      this.#regions.push(openShmRegion(shm, exclusive));
      this.#regions.push(openSysvRegion(key, exclusive));
      this.#regions.push(createMemfdRegion({ size, label: `${objectPrefix(tag)}-shared` }));
      for (const region of this.#regions) initLifecycleRegion(region, capacity);
    } catch (error) {
      this[Symbol.dispose]();
      throw error;
    }
    this.objects = this.#regions.map((region) => ({ kind: region.kind, name: region.name }));
  }

  [Symbol.dispose](): void {
    for (const region of this.#regions) {
      if (!region.closed) region.unlink();
      region.close();
    }
  }
}

function tail(child: ChildProcess, lines = 60): string {
  return child.lines.slice(-lines).map((line) => line.text).join("\n");
}

/** Waits for a peer to end; kills it and fails if it takes longer than the bound. */
async function finished(child: ChildProcess, name: string): Promise<PeerSummary> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<"hung">((resolve) => {
    timer = setTimeout(() => resolve("hung"), PEER_BOUND_MS);
  });
  const status = await Promise.race([child.status(), hung]);
  clearTimeout(timer);
  if (status === "hung") {
    const threads = threadReport(child.pid);
    child.kill("SIGKILL");
    throw new Error(
      `Peer ${name} (pid ${child.pid}) hung for ${PEER_BOUND_MS} ms (${threads}):\n${tail(child)}`,
    );
  }
  const failure = child.matching(/^FAIL /);
  assertEquals(
    status.signal,
    null,
    `Peer ${name} (pid ${child.pid}) was killed by ${status.signal}:\n${tail(child)}`,
  );
  assert(
    status.success && failure.length === 0,
    `Peer ${name} (pid ${child.pid}) failed (exit ${status.code}): ${failure.join("\n")}\n${
      tail(child)
    }\n${status.stderr}`,
  );
  const line = child.matching(/^SUMMARY /).at(-1);
  assert(line !== undefined, `Peer ${name} printed no summary:\n${tail(child)}`);
  return JSON.parse(line.slice("SUMMARY ".length)) as PeerSummary;
}

/** Checks that every object a peer created is gone, removing (and reporting) any left. */
function leftBehind(child: ChildProcess): string[] {
  const left: string[] = [];
  for (const line of child.matching(/^CREATED /)) {
    const [, kind, name] = line.split(" ");
    if (kind === "file" && statPath(name) !== undefined) {
      left.push(line);
    } else if (kind === "posix" && removeShm(name)) {
      left.push(line);
    } else if (kind === "sysv") {
      try {
        using region = openSysvRegion(Number(name));
        region.unlink();
        left.push(line);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
    }
  }
  return left;
}

function merge(into: Record<string, number[]>, from: Record<string, number[]>): void {
  for (const [key, values] of Object.entries(from)) into[key] = [...(into[key] ?? []), ...values];
}

/** Runs one round: two peers on freshly made shared regions. Returns the calls made and the time. */
async function round(
  seed: number,
  index: number,
  steps: number,
): Promise<{ calls: number; ms: number; discarded: number; syncThrows: Record<string, number> }> {
  return await withTempDir(async (dir) => {
    const tag = `${Deno.pid.toString(36)}r${index}`;
    const capacity = RING_CAPACITIES[mixSeed(seed, index) % RING_CAPACITIES.length];
    using shared = new SharedObjects(dir, tag, capacity);
    const peers: [string, ChildProcess][] = [];
    let failed = false;
    try {
      for (const role of ["A", "B"]) {
        const peerDir = `${dir}/${role}`;
        await Deno.mkdir(peerDir, { mode: 0o700 });
        const config: PeerConfig = {
          seed: mixSeed(seed, index, role.charCodeAt(0)),
          steps,
          role,
          dir: peerDir,
          tag,
          shared: shared.objects,
        };
        peers.push([role, spawnDeno(PEER, [JSON.stringify(config)])]);
      }
      const summaries = await Promise.all(peers.map(([role, child]) => finished(child, role)));
      const skipped: Record<string, number[]> = {};
      const unsent: Record<string, number[]> = {};
      for (const summary of summaries) {
        merge(skipped, summary.skipped);
        merge(unsent, summary.unsent);
      }
      const lost = lostMessages(skipped, unsent);
      assertEquals(lost, [], `Round ${index}: messages were sent but never reached a consumer`);
      let calls = 0;
      let discarded = 0;
      const syncThrows: Record<string, number> = {};
      for (const summary of summaries) {
        for (const count of Object.values(summary.outcomes)) calls += count;
        for (const seqs of Object.values(summary.discarded)) discarded += seqs.length;
        for (const [method, count] of Object.entries(summary.syncThrows)) {
          syncThrows[method] = (syncThrows[method] ?? 0) + count;
        }
      }
      const ms = Math.max(...summaries.map((summary) => summary.ms));
      return { calls, ms, discarded, syncThrows };
    } catch (error) {
      failed = true;
      throw error;
    } finally {
      for (const [, child] of peers) await child[Symbol.asyncDispose]();
      // Sweep what a failed peer left, but report it only when nothing else failed.
      const left = peers.flatMap(([, child]) => leftBehind(child));
      if (!failed) assertEquals(left, [], `Round ${index}: peers left objects behind`);
    }
  });
}

testWith(
  NEEDS.system,
  "random interleavings of open, use and close in two processes never crash, hang or leak",
  async () => {
    const seed = envNumber("MMAP_IPC_LIFECYCLE_SEED", Math.floor(Math.random() * 2 ** 32));
    const rounds = envNumber("MMAP_IPC_LIFECYCLE_ROUNDS", 6);
    const steps = envNumber("MMAP_IPC_LIFECYCLE_STEPS", 3000);
    console.log(
      `lifecycle seed ${seed} (MMAP_IPC_LIFECYCLE_SEED=${seed} replays it), ${rounds} rounds of 2 peers x ${steps} steps`,
    );
    let calls = 0;
    let ms = 0;
    let discarded = 0;
    const syncThrows: Record<string, number> = {};
    for (let index = 0; index < rounds; index++) {
      const figures = await round(seed, index, steps);
      calls += figures.calls;
      ms += figures.ms;
      discarded += figures.discarded;
      for (const [method, count] of Object.entries(figures.syncThrows)) {
        syncThrows[method] = (syncThrows[method] ?? 0) + count;
      }
    }
    console.log(
      `lifecycle: ${calls} calls in ${rounds} rounds, ${
        Math.round(calls / (ms / 1000))
      } calls/s per pair; ${discarded} tracked messages dropped by discardAll(); promise-returning methods that threw instead of rejecting: ${
        JSON.stringify(syncThrows)
      }`,
    );
  },
);

// --- regressions of issue 10, each scene in a process of its own --------------------------------

const SCENES = `${TESTS_DIR}fixtures/lifecycle_scenes.ts`;

/** Runs a scene; asserts it ended normally, by itself; returns what it reported. */
async function scene(name: string, ...args: string[]): Promise<Map<string, string>> {
  await using child = spawnDeno(SCENES, [name, ...args]);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const status = await Promise.race([
    child.status(),
    new Promise<"hung">((resolve) => timer = setTimeout(() => resolve("hung"), PEER_BOUND_MS)),
  ]);
  clearTimeout(timer);
  assert(status !== "hung", `The ${name} scene hung:\n${child.transcript}`);
  assertEquals(status.signal, null, `The ${name} scene was killed:\n${child.transcript}`);
  assertEquals(status.code, 0, `The ${name} scene failed:\n${child.transcript}`);
  const seen = new Map<string, string>();
  for (const line of child.lines) {
    const at = line.text.indexOf(": ");
    if (line.stream === "stdout" && at > 0) {
      seen.set(line.text.slice(0, at), line.text.slice(at + 2));
    }
  }
  assertEquals(seen.get("end"), "ok", child.transcript);
  return seen;
}

testWith(
  NEEDS.children,
  "closing the region under a blocked receive() rejects it with BadResource; the process lives on",
  async () => {
    const seen = await scene("receive-blocked");
    assertEquals(seen.get("receive"), "BadResource");
    assertEquals(seen.get("tryReceive after"), "BadResource");
    assertEquals(seen.get("trySend after"), "BadResource");
    assertEquals(seen.get("timer"), "fired");
  },
);

testWith(
  NEEDS.children,
  "closing the region under a send() blocked on a full ring rejects it with BadResource; the process lives on",
  async () => {
    const seen = await scene("send-blocked");
    assertEquals(seen.get("send"), "BadResource");
    assertEquals(seen.get("consumer after"), "BadResource");
    assertEquals(seen.get("timer"), "fired");
  },
);

testWith(
  NEEDS.children,
  "closing the region settles pending changes(), waitForChange({ timeout }) and waitInt32() at once, and timers keep running",
  async () => {
    const seen = await scene("waits-pending");
    assertEquals(seen.get("changes"), "ok []");
    assertEquals(seen.get("waitForChange"), "BadResource");
    assertEquals(seen.get("waitInt32"), "BadResource");
    assertEquals(seen.get("timer"), "fired");
    assertEquals(seen.get("read after"), "BadResource");
  },
);

testWith(
  NEEDS.children,
  "a lease's, a reservation's and a view's bytes after region.close() are empty, and a region mapped next is not written",
  async () => {
    const seen = await scene("views-after-close");
    const revoked = JSON.stringify({ length: 0, first: "undefined" });
    assertEquals(seen.get("lease after close"), revoked);
    assertEquals(seen.get("reservation after close"), revoked);
    assertEquals(seen.get("view after close"), revoked);
    assertEquals(seen.get("new region written"), "false");
    assertEquals(seen.get("release after"), "BadResource");
    assertEquals(seen.get("commit after"), "BadResource");
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a view's buffer moved away with transfer() cannot reach the file after region.close()",
  async () => {
    await withTempDir(async (dir) => {
      const seen = await scene("moved-after-close", `${dir}/moved.region`);
      assertEquals(seen.get("moved after close"), JSON.stringify({ length: 4096, first: 0x55 }));
      assertEquals(seen.get("file first byte"), "1");
      assertEquals(seen.get("file written after close"), "false");
    });
  },
);

// --- calls in flight at once ------------------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** How a call ended: its value (once a promise it returned settled), or what it threw. */
async function settle<T>(call: () => T | Promise<T>): Promise<T | Error> {
  try {
    return await call();
  } catch (error) {
    return error as Error;
  }
}

function describe(value: unknown): string {
  if (value instanceof Uint8Array) return JSON.stringify(decoder.decode(value));
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  return String(value);
}

Deno.test("two send()s and two receive()s at once lose, repeat and reorder nothing", async () => {
  using region = ringRegion(64); // two 24-byte messages fill it: sends wait as often as not
  using producer = openRingProducer(region, { spin: 0 });
  using consumer = openRingConsumer(region, { spin: 0 });
  const count = 400;
  const message = (i: number): Uint8Array => encoder.encode(`message ${i}`.padEnd(24, "."));
  const sending = (async () => {
    for (let i = 0; i < count; i += 2) {
      await Promise.all([producer.send(message(i)), producer.send(message(i + 1))]);
    }
  })();
  const received: string[] = [];
  while (received.length < count) {
    const pair = await Promise.all([consumer.receive(), consumer.receive()]);
    for (const got of pair) received.push(describe(got));
  }
  await sending;
  assertEquals(received, Array.from({ length: count }, (_, i) => describe(message(i))));
  assertEquals(consumer.tryReceive(), undefined);
});

// --- regressions of bugs the randomized test found ---------------------------------------------

/** Waits a little for `promise`: its outcome, or `"waiting"` if it is still pending. */
function soon<T>(promise: Promise<T>): Promise<T | "waiting"> {
  return Promise.race([promise, new Promise<"waiting">((r) => setTimeout(() => r("waiting"), 50))]);
}

Deno.test(
  "a receive() queued behind read() does not take the leased message again, nor lose the next",
  async () => {
    using region = ringRegion(256);
    using producer = openRingProducer(region);
    using consumer = openRingConsumer(region);
    const reading = consumer.read({ timeout: 10_000 });
    const receiving = settle(() => consumer.receive({ timeout: 10_000 }));
    producer.trySend(encoder.encode("one"));
    producer.trySend(encoder.encode("two"));
    const lease = await reading;
    assert(lease !== null);
    assertEquals(decoder.decode(lease.bytes), "one");
    // While the lease is held, the queued receive() may fail with Busy or wait for the release.
    const early = await soon(receiving);
    assert(
      early === "waiting" || early instanceof Deno.errors.Busy,
      `receive() gave ${describe(early)} while the lease of "one" was held`,
    );
    lease.release();
    const next = early === "waiting" ? await receiving : await settle(() => consumer.receive());
    assertEquals(describe(next), '"two"');
    assertEquals(consumer.tryReceive(), undefined);
  },
);

Deno.test("a send() queued behind reserve() does not write into the reserved space", async () => {
  using region = ringRegion(64);
  using producer = openRingProducer(region);
  using consumer = openRingConsumer(region);
  producer.trySend(new Uint8Array(56)); // full
  const reserving = producer.reserve(16, { timeout: 10_000 });
  const sending = settle(() => producer.send(encoder.encode("second"), { timeout: 10_000 }));
  assertEquals(consumer.tryReceive()?.length, 56); // room again: reserve() wakes
  const reservation = await reserving;
  reservation.bytes.set(encoder.encode("first reserved.."));
  const early = await soon(sending);
  assert(
    early === "waiting" || early instanceof Deno.errors.Busy,
    `send() gave ${describe(early)} while the reservation was open`,
  );
  reservation.commit();
  if (early === "waiting") await sending;
  else await producer.send(encoder.encode("second"));
  assertEquals(describe(await settle(() => consumer.tryReceive())), '"first reserved.."');
  assertEquals(describe(await settle(() => consumer.tryReceive())), '"second"');
});

Deno.test(
  "a message longer than the ring is a RangeError even while another call is in flight",
  async () => {
    using region = ringRegion(64);
    using producer = openRingProducer(region);
    using consumer = openRingConsumer(region);
    producer.trySend(new Uint8Array(56)); // full
    const blocked = producer.send(new Uint8Array(8), { timeout: 10_000 }); // in flight
    const tooLong = new Uint8Array(57);
    const outcomes = {
      trySend: await settle(() => producer.trySend(tooLong)),
      trySendBatch: await settle(() => producer.trySendBatch([tooLong])),
      tryReserve: await settle(() => producer.tryReserve(57)),
      trySendWith: await settle(() => producer.trySendWith(57, () => 0)),
      send: await settle(() => producer.send(tooLong, { timeout: 500 })),
    };
    assertEquals(consumer.tryReceive()?.length, 56);
    await blocked;
    const wrong = Object.entries(outcomes)
      .filter(([, outcome]) => !(outcome instanceof RangeError))
      .map(([call, outcome]) => `${call}() of 57 bytes gave ${describe(outcome)}`);
    assertEquals(wrong, []);
  },
);

Deno.test(
  "receiveBatch() takes its messages in one piece: a call made after it gets the next ones",
  async () => {
    using region = ringRegion(256);
    using producer = openRingProducer(region);
    using consumer = openRingConsumer(region);
    for (const text of ["1", "2", "3", "4"]) producer.trySend(encoder.encode(text));
    const batch = consumer.receiveBatch(3);
    const after = consumer.tryReceive(); // made after receiveBatch(): it must not overtake it
    assertEquals(
      (await batch).map(describe),
      ['"1"', '"2"', '"3"'],
      "receiveBatch(3) has a gap: a call made after it took from its middle",
    );
    assert(
      after === undefined || describe(after) === '"4"',
      `tryReceive() took ${describe(after)}`,
    );
  },
);

Deno.test(
  "tryReceiveBatchInto() that meets a message too large for its buffer keeps the ones it took",
  async () => {
    using region = ringRegion(256);
    using producer = openRingProducer(region);
    using consumer = openRingConsumer(region);
    producer.trySend(encoder.encode("one"));
    producer.trySend(new Uint8Array(100));
    const buffer = new Uint8Array(50);
    const lengths = new Uint32Array(4);
    const taken = await settle(() => consumer.tryReceiveBatchInto(buffer, lengths));
    if (taken === 1) {
      assertEquals(decoder.decode(buffer.subarray(0, lengths[0])), "one");
    } else {
      assert(taken instanceof RangeError, `tryReceiveBatchInto() gave ${describe(taken)}`);
      assertEquals(describe(consumer.tryReceive()), '"one"', '"one" was taken and lost');
    }
    assertEquals(consumer.tryReceive()?.length, 100);
  },
);

Deno.test(
  "a receive() made after region.close() while the last one settles is refused with BadResource",
  async () => {
    const region = ringRegion(64);
    using _producer = openRingProducer(region);
    const consumer = openRingConsumer(region);
    const first = settle(() => consumer.receive());
    await new Promise((resolve) => setTimeout(resolve, 10));
    region.close();
    const second = await settle(() => consumer.receive({ timeout: 1000 }));
    assert(await first instanceof Deno.errors.BadResource);
    assert(second instanceof Deno.errors.BadResource, `receive() gave ${describe(second)}`);
  },
);

Deno.test(
  "a receive() made after consumer.close() while the last one settles takes nothing, and the producer still sees the close",
  async () => {
    using region = ringRegion(64);
    using producer = openRingProducer(region);
    const consumer = openRingConsumer(region);
    const first = settle(() => consumer.receive());
    await new Promise((resolve) => setTimeout(resolve, 10));
    consumer.close();
    const second = settle(() => consumer.receive({ timeout: 1000 }));
    producer.trySend(encoder.encode("for the next consumer"));
    assert(await first instanceof Deno.errors.BadResource);
    const got = await second;
    assert(got instanceof Deno.errors.BadResource, `receive() gave ${describe(got)}`);
    // The consumer's close stays visible to the producer.
    let free: number | Error;
    try {
      free = producer.free;
    } catch (error) {
      free = error as Error;
    }
    assert(free instanceof Deno.errors.BrokenPipe, `producer.free gave ${describe(free)}`);
  },
);

Deno.test(
  "a region closed between a queued call's turn and its copy rejects the call with BadResource",
  async () => {
    const outcomes: Record<string, unknown> = {};
    for (const call of ["receive", "receiveInto", "send"]) {
      const region = ringRegion(64);
      const producer = openRingProducer(region);
      const consumer = openRingConsumer(region);
      let queued: Promise<unknown>;
      if (call === "send") {
        producer.trySend(new Uint8Array(56)); // full
        const first = producer.send(new Uint8Array(8));
        queued = settle(() => producer.send(new Uint8Array(8)));
        // The first send settling hands the turn to the queued one; close right then.
        first.then(() => region.close());
        consumer.tryReceive();
      } else {
        const first = consumer.receive();
        queued = settle<unknown>(() =>
          call === "receive" ? consumer.receive() : consumer.receiveInto(new Uint8Array(64))
        );
        first.then(() => region.close());
        producer.trySend(encoder.encode("one"));
        producer.trySend(encoder.encode("two"));
      }
      outcomes[call] = await queued;
      region.close();
    }
    // Either the call took its turn and finished before the close (the second message, or a
    // send that went through), or the close came first and the call is refused: never a
    // TypeError from the detached memory, never a copy out of a closed ring.
    const wrong = Object.entries(outcomes)
      .filter(([call, outcome]) =>
        !(outcome instanceof Deno.errors.BadResource) &&
        !(call === "receive" && outcome instanceof Uint8Array &&
          decoder.decode(outcome) === "two") &&
        !(call === "receiveInto" && outcome === 3) &&
        !(call === "send" && outcome === undefined)
      )
      .map(([call, outcome]) => `${call}() gave ${describe(outcome)}`);
    assertEquals(wrong, []);
  },
);

Deno.test(
  "a consumer closed between a queued receive()'s turn and its copy stays closed for the producer",
  async () => {
    using region = ringRegion(64);
    using producer = openRingProducer(region);
    const consumer = openRingConsumer(region);
    const first = consumer.receive();
    const queued = settle(() => consumer.receive());
    first.then(() => consumer.close());
    producer.trySend(encoder.encode("one"));
    producer.trySend(encoder.encode("two"));
    const got = await queued;
    // Taken in its turn before the close, or refused after it; never a message of a closed end.
    assert(
      got instanceof Deno.errors.BadResource ||
        (got instanceof Uint8Array && decoder.decode(got) === "two"),
      `receive() gave ${describe(got)}`,
    );
    let free: number | Error;
    try {
      free = producer.free;
    } catch (error) {
      free = error as Error;
    }
    assert(free instanceof Deno.errors.BrokenPipe, `producer.free gave ${describe(free)}`);
  },
);

Deno.test(
  "a send() made after region.close() while the last one settles is refused with BadResource",
  async () => {
    const region = ringRegion(64);
    const producer = openRingProducer(region);
    using _consumer = openRingConsumer(region);
    producer.trySend(new Uint8Array(56)); // full
    const first = settle(() => producer.send(new Uint8Array(8)));
    await new Promise((resolve) => setTimeout(resolve, 10));
    region.close();
    const second = await settle(() => producer.send(new Uint8Array(8), { timeout: 1000 }));
    assert(await first instanceof Deno.errors.BadResource);
    assert(second instanceof Deno.errors.BadResource, `send() gave ${describe(second)}`);
  },
);
