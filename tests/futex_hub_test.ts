/**
 * Many asynchronous waits at once: each holds a worker thread only while it shares a
 * futex_waitv call with up to 126 others, so Deno's few blocking threads (shared with file I/O)
 * are never all taken, and each wait still returns what it waited for.
 *
 * @module
 */

import { assert, assertEquals, assertGreaterOrEqual } from "@std/assert";
import { createRawMemfd, type RawSharedMemory } from "../ffi/raw_futex.ts";
import {
  type FutexHub,
  futexHub,
  futexHubCounts,
  type FutexWait,
  OWN_CALLS,
} from "../ffi/futex_hub.ts";
import { setCallBoundMs } from "../ffi/call_bound.ts";
import { createMemfdRegion, openStateCell, type StateCell } from "../mod.ts";
import { assertRejectsWith } from "./helpers/assertions.ts";
import { Random } from "./fixtures/lifecycle_random.ts";
import { TESTS_DIR } from "./helpers/paths.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { spawnDeno } from "./helpers/spawn.ts";
import { delay, until, wakeEach, within } from "./helpers/waiting.ts";
import {
  FEW_THREADS,
  threadsLeftByWaitingWorkers,
  WAITING_WORKERS,
} from "./helpers/waiting_workers.ts";

const CELL_BYTES = 128;

/** A wait's result once its word changed: woken (0n) or changed before the call slept (-1n). */
function assertEnded(result: bigint | undefined): void {
  assert(result === 0n || result === -1n, `the wait did not end: ${result}`);
}

/** The address of the 32-bit word at `index` of `memory`, as the hub takes it. */
function wordAddress(memory: RawSharedMemory, index: number): bigint {
  return memory.wordAddress(index);
}

/**
 * Cancels every wait of a test that made them straight on the hub, so that none sleeps on its
 * memory once `using` unmaps it, even when an assertion failed first (a no-op for one that ended).
 */
function cancelAll(hub: FutexHub, handles: readonly FutexWait[]): void {
  for (const handle of handles) hub.cancel(handle);
}

/** `count` cells side by side in one memfd, each with a writer and a reader handle. */
function cells(count: number): {
  writers: StateCell[];
  readers: StateCell[];
  [Symbol.dispose](): void;
} {
  const region = createMemfdRegion({ size: count * CELL_BYTES });
  const writers: StateCell[] = [];
  const readers: StateCell[] = [];
  for (let i = 0; i < count; i++) {
    writers.push(openStateCell(region, { offset: i * CELL_BYTES, writer: true }));
    readers.push(openStateCell(region, { offset: i * CELL_BYTES }));
  }
  return {
    writers,
    readers,
    [Symbol.dispose]: () => {
      for (const cell of [...readers, ...writers]) cell.close();
      region.close();
    },
  };
}

testWith(
  NEEDS.files,
  "300 waits at once, on one cell and on 100 others, leave file I/O free and each returns its change",
  async () => {
    using all = cells(101);
    const { writers, readers } = all;
    // Thirty waits of a worker thread each made this read wait until one of them ended.
    const onOne = Array.from({ length: 100 }, () => readers[0].waitForChange());
    const onEach = readers.slice(1).flatMap((reader) => [
      reader.waitForChange(),
      reader.waitForChange({ timeout: 60_000 }),
    ]);
    await delay(200); // all asleep
    const read = await within(Deno.readTextFile(new URL(import.meta.url)), 10_000);
    assert(read?.includes("300 waits at once"), "a file read waited behind the futex waits");
    // Woken one cell at a time, in an order unlike the order of the waits.
    for (let i = 100; i >= 1; i--) writers[i].write(1000 + i);
    assertEquals(
      await within(Promise.all(onEach), 10_000),
      readers.slice(1).flatMap((_, i) => [1001 + i, 1001 + i]),
    );
    writers[0].write(7);
    assertEquals(await within(Promise.all(onOne), 10_000), onOne.map(() => 7));
  },
);

testWith(
  NEEDS.files,
  "waits that share a call each time out at their own time, and an abort ends only its own",
  async () => {
    using all = cells(4);
    const { writers, readers } = all;
    const started = performance.now();
    const timedOut = (reader: StateCell, timeout: number): Promise<number> =>
      assertRejectsWith(() => reader.waitForChange({ timeout }), Deno.errors.TimedOut)
        .then(() => performance.now() - started);
    const aborter = new AbortController();
    const aborted = readers[3].waitForChange({ signal: aborter.signal }).catch((error) => error);
    const late = readers[2].waitForChange({ timeout: 900 });
    const middle = timedOut(readers[1], 500);
    const early = timedOut(readers[0], 150);
    aborter.abort(new Error("stop"));
    assertEquals(((await aborted) as Error).message, "stop");
    const [first, second] = [await early, await middle];
    assertGreaterOrEqual(first, 150);
    assertGreaterOrEqual(second, 500);
    writers[2].write(3); // before its 900 ms: the wait left in the call sees it
    assertEquals(await late, 3);
  },
);

testWith(
  NEEDS.children,
  "without futex_waitv (kernels before 5.16) each wait has a call of its own and still times out, wakes and ends at close, even queued behind more waits than Deno has worker threads",
  async () => {
    await using child = spawnDeno(`${TESTS_DIR}fixtures/futex_fallback.ts`, []);
    assertEquals(await child.nextLine(), "timeout TimedOut");
    assertEquals(await child.nextLine(), "woken 5");
    assertEquals(await child.nextLine(), "closed BadResource");
    assertEquals(await child.nextLine(), "crowded: timeout TimedOut");
    assertEquals(await child.nextLine(), "crowded: BadResource at close");
    assertEquals(await child.nextLine(), "done");
    assertEquals((await child.status()).code, 0);
  },
);

Deno.test({
  name: "a cancelled wait ends with -1n at once, though nothing wakes or changes its word",
  ignore: !futexHub().pooled, // kernels before 5.16: the fallback test above covers those
}, async () => {
  using memory = createRawMemfd(4096, { name: "hub-cancel" });
  const hub = futexHub();
  const address = (index: number): bigint => wordAddress(memory, index);
  let wait: FutexWait | undefined;
  const returned = new Promise<bigint>((resolve) => {
    wait = hub.wait(address(0), 0, undefined, resolve);
  });
  assert(wait !== undefined);
  try {
    await delay(20); // asleep in the kernel, in all likelihood
    assertEquals(hub.cancel(wait), true);
    assertEquals(await within(returned, 10_000), -1n);
    assertEquals(hub.cancel(wait), true, "cancelling twice is harmless");
  } finally {
    hub.cancel(wait);
  }
});

Deno.test({
  name: "waits on one word in one call all end as woken when one wake-up reaches it, unchanged",
  ignore: !futexHub().pooled,
}, async () => {
  using memory = createRawMemfd(4096, { name: "hub-same-word" });
  const hub = futexHub();
  const address = wordAddress(memory, 0);
  const callsBefore = futexHubCounts().calls;
  const handles: FutexWait[] = [];
  const waits = [1, 2].map(() =>
    new Promise<bigint>((resolve) => handles.push(hub.wait(address, 0, undefined, resolve)))
  );
  try {
    // The first wait's call, then (kicked) the call that holds both: wake that one.
    while (futexHubCounts().calls < callsBefore + 2) await delay(1);
    // One waiter woken, the word left as it was: the call names one wait, and the other on the
    // same word must not sleep on (nothing else would ever wake it).
    while (memory.word(0).wake(1) === 0) await delay(5);
    assertEquals(await within(Promise.all(waits), 10_000), [0n, 0n]);
  } finally {
    cancelAll(hub, handles);
  }
});

/**
 * Two waits in one call; the first's word is woken, and its settle callback cancels the second,
 * at once (the group is settling) or a microtask later (the group is pausing for the code the
 * wake-up woke). Returns what each ended with and the kicks sent meanwhile.
 */
async function cancelFromWokenCode(
  when: "in the callback" | "a microtask later",
): Promise<{ first: bigint | undefined; second: bigint | undefined; kicks: number }> {
  using memory = createRawMemfd(4096, { name: "hub-cancel" });
  const hub = futexHub();
  const address = (index: number): bigint => wordAddress(memory, index);
  const handles: FutexWait[] = [];
  const secondReturned = new Promise<bigint>((resolve) => {
    handles.push(hub.wait(address(16), 0, undefined, resolve));
  });
  const cancelSecond = (): void => void hub.cancel(handles[0]);
  const firstReturned = new Promise<bigint>((resolve) => {
    handles.push(hub.wait(address(0), 0, undefined, (result) => {
      if (when === "in the callback") cancelSecond();
      else queueMicrotask(cancelSecond);
      resolve(result);
    }));
  });
  try {
    await delay(20);
    const before = futexHubCounts();
    Atomics.store(memory.words, 0, 1);
    memory.word(0).wake();
    return {
      first: await within(firstReturned, 10_000),
      second: await within(secondReturned, 10_000),
      kicks: futexHubCounts().kicks - before.kicks,
    };
  } finally {
    cancelAll(hub, handles);
  }
}

Deno.test({
  name: "a wait cancelled by another's settle callback, between two calls, is not slept on again",
  ignore: !futexHub().pooled,
}, async () => {
  const { first, second } = await cancelFromWokenCode("in the callback");
  assertEquals([first, second], [0n, -1n]);
});

Deno.test({
  name:
    "a wait cancelled by the code a wake-up woke, while the group lets it run, ends without a kick",
  ignore: !futexHub().pooled,
}, async () => {
  const { first, second, kicks } = await cancelFromWokenCode("a microtask later");
  assertEnded(first);
  // Taken out before the next call, not by kicking a call made meanwhile.
  assertEquals([second, kicks], [-1n, 0]);
});

Deno.test({
  name:
    "a wait made again by the code a wake-up woke joins the group's next call: one call per wake-up, no kick",
  ignore: !futexHub().pooled,
}, async () => {
  using memory = createRawMemfd(4096, { name: "hub-again" });
  const hub = futexHub();
  const address = (index: number): bigint => wordAddress(memory, index);
  // Another wait stays in the group throughout, as a second cell's reader would.
  const handles: FutexWait[] = [];
  const idleReturned = new Promise<bigint>((resolve) => {
    handles.push(hub.wait(address(16), 0, undefined, resolve));
  });
  const idle = handles[0];
  const waitOnFirst = (): Promise<bigint> =>
    new Promise((resolve) =>
      handles.push(hub.wait(address(0), Atomics.load(memory.words, 0), undefined, resolve))
    );
  let returned = waitOnFirst();
  const change = async (): Promise<void> => {
    Atomics.add(memory.words, 0, 1);
    memory.word(0).wake();
    // Woken (0n), or the word had changed before the call slept (-1n): one call either way.
    assertEnded(await within(returned, 10_000));
    returned = waitOnFirst();
  };
  try {
    await change();
    const before = futexHubCounts();
    const rounds = 20;
    for (let i = 0; i < rounds; i++) await change();
    const after = futexHubCounts();
    // Made at once after each wake-up, the next call left the wait made again to a kick and a
    // call more: 40 calls and 20 kicks.
    assertEquals(
      { calls: after.calls - before.calls, kicks: after.kicks - before.kicks },
      { calls: rounds, kicks: 0 },
    );
    hub.cancel(idle);
    assertEquals(await within(idleReturned, 10_000), -1n);
    // The last wait on the first word ends with a change, as the others did.
    Atomics.add(memory.words, 0, 1);
    memory.word(0).wake();
    assertEnded(await within(returned, 10_000));
  } finally {
    cancelAll(hub, handles);
  }
});

Deno.test({
  name:
    "a wait whose word may be woken unchanged has a call of its own: other waits coming and going do not end it",
  ignore: !futexHub().pooled,
}, async () => {
  using memory = createRawMemfd(4096, { name: "hub-alone" });
  const hub = futexHub();
  const address = (index: number): bigint => wordAddress(memory, index);
  let ended: bigint | undefined;
  let alone: FutexWait | undefined;
  const notified = new Promise<bigint>((resolve) => {
    alone = hub.wait(address(0), 0, undefined, (result) => resolve(ended = result), true);
  });
  try {
    // Waits that join and leave: in its call, each would make it return, and so end it.
    for (let i = 0; i < 10; i++) {
      const other = new Promise<bigint>((resolve) => {
        const wait = hub.wait(address(16), 0, undefined, resolve);
        setTimeout(() => hub.cancel(wait), 5);
      });
      assertEquals(await within(other, 10_000), -1n);
    }
    assertEquals(ended, undefined, "ended by the others' calls");
    while (memory.word(0).wake(1) === 0) await delay(5);
    assertEquals(await within(notified, 10_000), 0n);
  } finally {
    // Nothing may sleep on the memory once it is unmapped (a no-op for a wait that ended).
    if (alone !== undefined) hub.cancel(alone);
  }
});

Deno.test({
  name:
    "the first few waits whose words may be woken unchanged have a call each, the rest share one, and a wake-up of each ends every one",
  ignore: !futexHub().pooled,
}, async () => {
  using memory = createRawMemfd(4096, { name: "hub-own-calls" });
  const hub = futexHub();
  const address = (index: number): bigint => wordAddress(memory, index);
  const before = futexHubCounts().inFlight;
  const indexes = Array.from({ length: 10 }, (_, i) => i * 16);
  const handles: FutexWait[] = [];
  const ended: (bigint | undefined)[] = indexes.map(() => undefined);
  const waits = indexes.map((index, i) =>
    new Promise<bigint>((resolve) =>
      handles.push(hub.wait(address(index), 0, undefined, resolve, true))
    ).then((result) => ended[i] = result)
  );
  try {
    await delay(20); // asleep, in all likelihood; a wake that woke no one is made again
    assertEquals(futexHubCounts().inFlight - before, OWN_CALLS + 1, "worker threads held");
    await wakeEach(
      indexes.length,
      (i) => memory.word(indexes[i]).wake(1),
      (i) => ended[i] !== undefined,
    );
    const results = await within(Promise.all(waits), 10_000);
    assert(results !== undefined, "a wake-up was lost");
    // Each alone in its call ends as woken; the shared ones end, woken or not, with its return.
    assertEquals(results.slice(0, OWN_CALLS), indexes.slice(0, OWN_CALLS).map(() => 0n));
    results.slice(OWN_CALLS).forEach(assertEnded);
  } finally {
    cancelAll(hub, handles);
  }
});

Deno.test({
  name:
    "random waits of both kinds, cancels, changes and notifies: a wait whose word changed ends, and no call is left in flight",
  ignore: !futexHub().pooled,
}, async () => {
  // MMAP_IPC_HUB_SEED=N makes the same choices again (the timing is the host's).
  const given = Deno.permissions.querySync({ name: "env", variable: "MMAP_IPC_HUB_SEED" })
      .state === "granted"
    ? Deno.env.get("MMAP_IPC_HUB_SEED")
    : undefined;
  const seed = given ? Number(given) : Math.floor(Math.random() * 2 ** 32);
  if (!Number.isSafeInteger(seed)) throw new TypeError(`MMAP_IPC_HUB_SEED: not a number: ${given}`);
  const random = new Random(seed);
  using memory = createRawMemfd(4096, { name: "hub-random" });
  const hub = futexHub();
  const WORDS = 12;
  const index = (word: number): number => word * 16;
  const address = (word: number): bigint => wordAddress(memory, index(word));
  const inFlightBefore = futexHubCounts().inFlight;
  interface Live {
    word: number;
    expected: number;
    wait?: FutexWait;
    ended?: Promise<bigint>;
  }
  const live = new Set<Live>();
  try {
    for (let step = 0; step < 400; step++) {
      const word = random.int(0, WORDS - 1);
      const action = random.weighted({ wait: 5, cancel: 2, change: 2, notify: 1, pause: 2 });
      if (action === "wait") {
        const record: Live = { word, expected: Atomics.load(memory.words, index(word)) };
        record.ended = new Promise<bigint>((resolve) => {
          const settle = (result: bigint): void => {
            live.delete(record);
            resolve(result);
          };
          record.wait = hub.wait(
            address(word),
            record.expected,
            undefined,
            settle,
            random.chance(0.5),
          );
        });
        live.add(record);
      } else if (action === "cancel" && live.size > 0) {
        const wait = random.pick([...live]).wait;
        if (wait !== undefined) hub.cancel(wait);
      } else if (action === "change") {
        Atomics.add(memory.words, index(word), 1);
        memory.word(index(word)).wake();
      } else if (action === "notify") {
        memory.word(index(word)).wake(1); // unchanged: may end a wait, or none
      } else if (action === "pause") {
        await delay(random.int(0, 2));
      }
    }
    // Every wait whose word moved since it began must end, by itself.
    const moved = [...live].filter((record) =>
      Atomics.load(memory.words, index(record.word)) !== record.expected
    );
    const endedMoved = await within(Promise.all(moved.map((record) => record.ended)), 10_000);
    assert(
      endedMoved !== undefined,
      `MMAP_IPC_HUB_SEED=${seed}: a wait slept on after its word changed`,
    );
    // The rest end with a change of every word; then no call may be left asleep.
    const rest = [...live].map((record) => record.ended);
    for (let word = 0; word < WORDS; word++) {
      Atomics.add(memory.words, index(word), 1);
      memory.word(index(word)).wake();
    }
    assert(
      await within(Promise.all(rest), 10_000) !== undefined,
      `MMAP_IPC_HUB_SEED=${seed}: a wait never ended`,
    );
    for (let i = 0; i < 100 && futexHubCounts().inFlight !== inFlightBefore; i++) await delay(10);
    assertEquals(
      futexHubCounts().inFlight,
      inFlightBefore,
      `MMAP_IPC_HUB_SEED=${seed}: calls left in flight`,
    );
  } finally {
    // Nothing may sleep on the memory once it is unmapped, whatever failed above.
    for (const record of live) if (record.wait !== undefined) hub.cancel(record.wait);
  }
});

Deno.test({
  name:
    "cancelling a wait that has ended does nothing: no kick for the call its group makes for the waits it holds now",
  ignore: !futexHub().pooled,
}, async () => {
  using memory = createRawMemfd(4096, { name: "hub-stale-cancel" });
  const hub = futexHub();
  const address = (index: number): bigint => wordAddress(memory, index);
  const inFlight = futexHubCounts().inFlight;
  const handles: FutexWait[] = [];
  const waitOn = (index: number): Promise<bigint> =>
    new Promise((resolve) => handles.push(hub.wait(address(index), 0, undefined, resolve)));
  try {
    const stays = waitOn(16);
    const ends = waitOn(0);
    Atomics.store(memory.words, 0, 1);
    memory.word(0).wake();
    assertEnded(await within(ends, 10_000));
    // The group's next call, on the wait that stays (its last returned before `ends` settled).
    while (futexHubCounts().inFlight !== inFlight + 1) await delay(1);
    const kicks = futexHubCounts().kicks;
    assertEquals(hub.cancel(handles[1]), true);
    // A kick makes that call return for nothing; were the group's wait now one alone in its
    // call (whose word may be woken unchanged), a wake-up meanwhile would be lost.
    assertEquals(futexHubCounts().kicks - kicks, 0, "kicked for a wait that had ended");
    hub.cancel(handles[0]);
    assertEquals(await within(stays, 10_000), -1n);
  } finally {
    cancelAll(hub, handles);
  }
});

Deno.test({
  name:
    "calls that pass their bound are made again, unseen by their waits: a wait with no deadline sleeps on, alone in its call or shared, one with a deadline ends at it, and futex_waitv stays trusted",
  ignore: !futexHub().pooled,
}, async () => {
  using memory = createRawMemfd(4096, { name: "hub-bound" });
  const hub = futexHub();
  const address = (index: number): bigint => wordAddress(memory, index);
  const handles: FutexWait[] = [];
  const ended: (bigint | undefined)[] = [undefined, undefined];
  const boundBefore = setCallBoundMs(5);
  try {
    const calls = futexHubCounts().calls;
    const started = performance.now();
    handles.push(hub.wait(address(0), 0, undefined, (result) => ended[0] = result, true));
    handles.push(hub.wait(address(16), 0, undefined, (result) => ended[1] = result));
    const timedOut = new Promise<number>((resolve) => {
      handles.push(hub.wait(address(32), 0, 500, () => resolve(performance.now() - started)));
    });
    const after = await within(timedOut, 10_000);
    assert(after !== undefined, "the wait with a deadline never ended");
    assert(after >= 499, `the wait with a 500 ms deadline ended after ${after} ms`);
    // Far more calls ended by their bound, in each of the two calls, than the run of returns
    // nothing explains after which the hub stops trusting futex_waitv (64).
    await until(() => futexHubCounts().calls - calls >= 300, "300 calls ended by their bound");
    assertEquals(ended, [undefined, undefined], "a wait with no deadline ended");
    assert(hub.pooled, "the hub took calls ended by their bound for calls that do not sleep");
    // Both still sleep in the kernel: a wake reaches each (made again when it found no one, as
    // one in the moment a call is made again does). The usual bound first: a wake made every few
    // ms can fall into step with calls made again every 5 ms, each one in the moment between two
    // calls (it did, for 10 s, in CI).
    setCallBoundMs(boundBefore);
    Atomics.store(memory.words, 16, 1);
    await wakeEach(
      2,
      (i) => memory.word(i * 16).wake(1),
      (i) => ended[i] !== undefined,
    );
    while (ended[0] === undefined || ended[1] === undefined) await delay(1);
    assertEquals(ended[0], 0n);
    assertEnded(ended[1]);
  } finally {
    setCallBoundMs(boundBefore);
    cancelAll(hub, handles);
  }
});

testWith(
  ["read"],
  "a Worker terminated while a region's waitInt32() is in flight leaves no thread behind: the futex_waitv call it left ends within its bound",
  async () => {
    const left = await threadsLeftByWaitingWorkers("region");
    const what =
      `${left.inHubCalls} threads still in a hub's call and ${left.threads} more in all, ` +
      `after ${WAITING_WORKERS} Workers were terminated in waitInt32()`;
    assert(left.inHubCalls <= 0 && left.threads < FEW_THREADS, what);
  },
);
