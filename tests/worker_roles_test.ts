/**
 * Roles held by Workers: a claim names the thread that took it, so a Worker terminated without
 * closing what it held (crashed, or stopped from outside) leaves a claim that is dead as soon as
 * its thread is, as a process that died does, instead of one its live process keeps for good.
 */
import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { readFileText, threadPidfds } from "../ffi/posix.ts";
import { ownClaim, threadOf } from "../lib/claim.ts";
import {
  createMemfdRegion,
  initRing,
  openRingConsumer,
  openRingProducer,
  openStateCell,
  type RingProducer,
} from "../mod.ts";
import { CONSUMER_WAITING } from "../lib/ring/layout.ts";
import {
  checkStamped,
  openWhenFree,
  RANDOM_CELL_AT,
  RANDOM_REGION_SIZE,
  RANDOM_RING_BYTES,
  type RandomRoleStart,
  stamped,
} from "./fixtures/role_layout.ts";
import { mixSeed, Random } from "./fixtures/lifecycle_random.ts";
import { envNumber } from "./helpers/env.ts";
import { TESTS_DIR } from "./helpers/paths.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { cellWriterDiesWithItsWorker, startRoleWorker } from "./helpers/role_workers.ts";
import { processGone } from "./helpers/proc.ts";
import { ringRegion } from "./helpers/rings.ts";
import { spawnDeno } from "./helpers/spawn.ts";
import { delay, until, within } from "./helpers/waiting.ts";

Deno.test("the main runtime's claim names its process", () => {
  assertEquals(threadOf(ownClaim()), Deno.pid);
});

testWith(
  ["read"],
  "a ring end a terminated Worker held is free again, and a consumer asleep in receive() learns that its producer died",
  async () => {
    using region = ringRegion(4096);
    using worker = await startRoleWorker(region, "producer");
    using consumer = openRingConsumer(region, { livenessCheckMs: 20 });
    assertEquals(consumer.tryReceive(), new Uint8Array([7]));
    assertThrows(
      () => openRingProducer(region),
      Deno.errors.Busy,
      `thread ${worker.thread} of pid ${Deno.pid} (this process) holds it`,
    );
    const next = consumer.receive({ timeout: 30_000 });
    await until(() => region.loadInt32(CONSUMER_WAITING) === 1, "the consumer asleep");
    worker.terminate();
    await assertRejects(
      () => next,
      Deno.errors.BrokenPipe,
      `its producer (thread ${worker.thread} of pid ${Deno.pid} (this process)) died`,
    );
    using producer = openRingProducer(region);
    producer.trySend(new Uint8Array([8]));
    assertEquals(consumer.tryReceive(), new Uint8Array([8]));
  },
);

testWith(
  NEEDS.children,
  "another process's Worker holding a ring end: its peer sees the Worker's thread hold it, and takes the end over once that Worker is terminated while its process lives on",
  async () => {
    using region = ringRegion(4096);
    await using child = spawnDeno(`${TESTS_DIR}fixtures/worker_role_process.ts`, [region.name], {
      permissions: ["--allow-ffi", "--allow-read"],
    });
    const thread = Number((await child.nextLine()).replace(/^held /, ""));
    using consumer = openRingConsumer(region, { livenessCheckMs: 20 });
    assertEquals(consumer.tryReceive(), new Uint8Array([7]));
    assertThrows(
      () => openRingProducer(region),
      Deno.errors.Busy,
      `thread ${thread} of pid ${child.pid} holds it`,
    );
    const next = consumer.receive({ timeout: 30_000 });
    await until(() => region.loadInt32(CONSUMER_WAITING) === 1, "the consumer asleep");
    child.kill("SIGUSR1");
    assertEquals(await child.nextLine(), "terminated");
    await assertRejects(
      () => next,
      Deno.errors.BrokenPipe,
      `its producer (thread ${thread} of pid ${child.pid}) died`,
    );
    using producer = openRingProducer(region);
    producer.trySend(new Uint8Array([8]));
    assertEquals(consumer.tryReceive(), new Uint8Array([8]));
    assert(!processGone(child.pid), "the Worker's process should live on");
  },
);

testWith(
  ["read"],
  "a state cell's writer a terminated Worker held: its reader hears of the death at once and the role is free again",
  async () => {
    // Linux 6.9 and later: a pidfd of the Worker's thread; before, the child test below.
    const events = await cellWriterDiesWithItsWorker();
    assertEquals(events, [
      { pid: Deno.pid, status: "writing" },
      { pid: Deno.pid, status: "died" },
      { pid: Deno.pid, status: "writing" },
    ]);
  },
);

testWith(
  NEEDS.children,
  "without pidfds for threads (kernels before 6.9) the reader looks at a Worker writer's claim on a timer, and still hears of its death",
  async () => {
    await using child = spawnDeno(`${TESTS_DIR}fixtures/worker_roles_looked.ts`, [], {
      permissions: ["--allow-ffi", "--allow-read"],
    });
    const line = await child.nextLine();
    assertEquals((await child.status()).code, 0, child.transcript);
    assertEquals(JSON.parse(line), [
      { pid: child.pid, status: "writing" },
      { pid: child.pid, status: "died" },
      { pid: child.pid, status: "writing" },
    ]);
  },
);

Deno.test("this kernel's pidfds for threads are used where it has them", () => {
  // Not a condition on the kernel: whichever it is, the tests above take its path.
  const release = (readFileText("/proc/sys/kernel/osrelease") ?? "").split(".").map(Number);
  assertEquals(threadPidfds(), release[0] > 6 || (release[0] === 6 && release[1] >= 9));
});

/** What the main thread's loops saw in one round. */
interface RoundSeen {
  received: number;
  failures: string[];
}

testWith(
  ["read"],
  "Workers terminated at random moments in random calls: every role they held is free again, and no message is lost in the middle, doubled or corrupted",
  async () => {
    const seed = envNumber("MMAP_IPC_WORKER_SEED", Math.floor(Math.random() * 2 ** 32));
    const rounds = envNumber("MMAP_IPC_WORKER_ROUNDS", 30);
    console.log(`worker roles seed ${seed} (MMAP_IPC_WORKER_SEED=${seed} replays its choices)`);
    const rng = new Random(seed);
    // Each terminated Worker keeps its mapping and fd of the memfd until this process exits:
    // nothing runs in a terminated Worker to close them.
    using region = createMemfdRegion({ size: RANDOM_REGION_SIZE });
    initRing(region, { capacity: RANDOM_RING_BYTES });
    openStateCell(region, { offset: RANDOM_CELL_AT, initialise: true }).close();
    const lastSeen = new Map<number, number>();
    const failures: string[] = [];
    let received = 0;
    let sentByWorkers = 0;
    let mainNumber = 0;
    for (let round = 1; round <= rounds; round++) {
      const roles = (["producer", "consumer", "writer"] as const).filter(() => rng.chance(0.5));
      if (roles.length === 0) roles.push("producer");
      const context = `round ${round} (${roles.join(", ")}), MMAP_IPC_WORKER_SEED=${seed}`;
      // This thread takes the ends the Worker does not, once the last Worker's claims died.
      const options = { livenessCheckMs: 20 };
      using consumer = roles.includes("producer") && !roles.includes("consumer")
        ? await taken(() => openRingConsumer(region, options), context)
        : undefined;
      // The producer once the Worker's consumer is open: a producer opened after the last
      // consumer closed, and before the next one opens, is BrokenPipe at once.
      let producer: RingProducer | undefined;
      using reader = openStateCell(region, { offset: RANDOM_CELL_AT });
      const worker = new Worker(new URL("./fixtures/role_worker_random.ts", import.meta.url), {
        type: "module",
      });
      try {
        const ready = new Promise<void>((resolve, reject) => {
          let isReady = false;
          worker.onmessage = (event: MessageEvent<string>) => {
            if (event.data === "ready") {
              isReady = true;
              resolve();
            } else if (isReady) failures.push(`${context}: the Worker saw ${event.data}`);
            else reject(new Error(`${context}: the Worker saw ${event.data}`));
          };
          worker.onerror = (event) => {
            event.preventDefault();
            reject(new Error(`${context}: the Worker failed: ${event.message}`));
          };
        });
        worker.postMessage(
          {
            name: region.name,
            seed: mixSeed(seed, round),
            session: round,
            roles,
          } satisfies RandomRoleStart,
        );
        assert(
          await within(ready.then(() => true), 10_000),
          `${context}: the Worker never got ready`,
        );
        if (roles.includes("consumer") && !roles.includes("producer")) {
          producer = await taken(() => openRingProducer(region, options), context);
        }
        if (roles.includes("producer")) sentByWorkers++;
        let running = true;
        const bad = (what: string): void => void failures.push(`${context}: ${what}`);
        // A dead peer is said at once by each call, from the second on: a loop that goes on
        // after an error waits a moment, or its calls and catches would keep the timers of
        // this round (its end) from ever running.
        const allowed = (error: unknown): Promise<void> => {
          const name = error instanceof Error ? error.name : "";
          if (name !== "TimedOut" && name !== "BrokenPipe") bad(`${name}: ${String(error)}`);
          return delay(1);
        };
        const loops: Promise<void>[] = [];
        if (consumer) {
          loops.push((async () => {
            while (running) {
              const message = await consumer.receive({ timeout: 30 }).catch(allowed);
              if (message) {
                received++;
                checkStamped(message, lastSeen, bad);
              }
            }
          })());
        }
        if (producer) {
          const sending = producer;
          loops.push((async () => {
            while (running) {
              await sending.send(stamped(0, mainNumber, rng.int(0, 300)), { timeout: 30 })
                .then(() => mainNumber++, allowed);
            }
          })());
        }
        loops.push((async () => {
          while (running) {
            const value = await reader.waitForChange({ timeout: 30 }).catch(allowed);
            if (value !== undefined && !(Number.isInteger(value) && value >= 0 && value <= 9)) {
              bad(`the cell read ${value}`);
            }
          }
        })());
        await delay(rng.int(2, 40));
        worker.terminate();
        await delay(rng.int(0, 60));
        running = false;
        const settled = await within(Promise.all(loops).then(() => true), 5_000);
        assert(settled, `${context}: this thread's calls did not settle: hung`);
      } finally {
        worker.terminate();
        producer?.close();
      }
    }
    // Every role the last Worker held is free again.
    const context = `after the last round, MMAP_IPC_WORKER_SEED=${seed}`;
    using lastConsumer = await taken(() => openRingConsumer(region), context);
    (await taken(() => openRingProducer(region), context)).close();
    lastConsumer.close();
    (await taken(() => openStateCell(region, { offset: RANDOM_CELL_AT, writer: true }), context))
      .close();
    console.log(
      `worker roles: ${rounds} Workers terminated, ${received} messages taken from ${sentByWorkers} producer Workers`,
    );
    assertEquals(failures, []);
    if (sentByWorkers > 3) assert(received > 0, "no message from a Worker was ever taken");
  },
);

/** {@link openWhenFree}, its failure naming `context`. */
async function taken<T>(open: () => T, context: string): Promise<T> {
  try {
    return await openWhenFree(open);
  } catch (error) {
    throw new Error(`${context}: a role was not free again: ${error}`, { cause: error });
  }
}
