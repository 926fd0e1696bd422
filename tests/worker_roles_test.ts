/**
 * Roles held by Workers: a claim names the thread that took it, so a Worker terminated without
 * closing what it held (crashed, or stopped from outside) leaves a claim that is dead as soon as
 * its thread is, as a process that died does, instead of one its live process keeps for good.
 */
import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { readFileText, threadPidfds } from "../ffi/posix.ts";
import { ownClaim, threadOf } from "../lib/claim.ts";
import { openRingConsumer, openRingProducer } from "../mod.ts";
import { CONSUMER_WAITING } from "../lib/ring/layout.ts";
import { TESTS_DIR } from "./helpers/paths.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { cellWriterDiesWithItsWorker, startRoleWorker } from "./helpers/role_workers.ts";
import { processGone } from "./helpers/proc.ts";
import { ringRegion } from "./helpers/rings.ts";
import { spawnDeno } from "./helpers/spawn.ts";
import { until } from "./helpers/waiting.ts";

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
      `its producer (pid ${worker.thread}) died`,
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
    await assertRejects(() => next, Deno.errors.BrokenPipe, `its producer (pid ${thread}) died`);
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
