import { assert, assertEquals, assertRejects } from "@std/assert";
import { setCallBoundMs } from "../ffi/call_bound.ts";
import { FdWaiter, pollCounts } from "../ffi/fd_waiter.ts";
import { closeFd, createEventFd, readFd, statFd, writeFd } from "../ffi/posix.ts";
import { openFdCount, openFdsTo } from "./helpers/proc.ts";
import { delay, until, within } from "./helpers/waiting.ts";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { runUnderFdLimit, spawnDenoUnderFdLimit } from "./helpers/spawn.ts";
import { TESTS_DIR } from "./helpers/paths.ts";
import {
  FEW_THREADS,
  threadsLeftByWaitingWorkers,
  WAITING_WORKERS,
} from "./helpers/waiting_workers.ts";

Deno.test("FdWaiter.wait() resolves readable, and cancelled after cancel()", async () => {
  const fd = createEventFd();
  const waiter = new FdWaiter();
  try {
    const pending = waiter.wait(fd);
    writeFd(fd, new Uint8Array(new BigUint64Array([1n]).buffer), "eventfd");
    assertEquals(await pending, "readable");
    readFd(fd, new Uint8Array(8), "eventfd");
    const cancelled = waiter.wait(fd);
    waiter.cancel();
    assertEquals(await cancelled, "cancelled");
    assertEquals(await waiter.wait(fd), "cancelled");
  } finally {
    await waiter.close();
    closeFd(fd);
  }
});

Deno.test("FdWaiter refuses a second wait at once", async () => {
  const fd = createEventFd();
  const waiter = new FdWaiter();
  const first = waiter.wait(fd);
  await assertRejects(() => waiter.wait(fd), Deno.errors.Busy);
  await waiter.close();
  assertEquals(await first, "cancelled");
  closeFd(fd);
});

Deno.test("FdWaiter.close() twice closes its eventfd once, never an fd opened since", async () => {
  const waiter = new FdWaiter();
  await waiter.close();
  // The eventfd's number is free again: whatever opens next may get it.
  const unrelated = createEventFd();
  await Promise.all([waiter.close(), waiter.close()]);
  statFd(unrelated, "the unrelated eventfd"); // throws BadResource (EBADF) if it was closed
  closeFd(unrelated);
});

Deno.test("FdWaiters share one poll: cancelling one leaves the others waiting, each wakes on its own fd, and no fd outlives the waits", async () => {
  const before = await openFdCount(Deno.pid);
  const fds = [createEventFd(), createEventFd(), createEventFd()];
  const waiters = fds.map(() => new FdWaiter());
  try {
    const pending = waiters.map((waiter, i) => waiter.wait(fds[i]));
    await waiters[1].close(); // in flight beside the two others
    assertEquals(await pending[1], "cancelled");
    writeFd(fds[2], new Uint8Array(new BigUint64Array([1n]).buffer), "eventfd");
    assertEquals(await pending[2], "readable");
    writeFd(fds[0], new Uint8Array(new BigUint64Array([1n]).buffer), "eventfd");
    assertEquals(await pending[0], "readable");
  } finally {
    for (const waiter of waiters) await waiter.close();
    for (const fd of fds) closeFd(fd);
  }
  // The hub closes its eventfd once it finds no wait left, a few microtask turns after the last
  // one settled (code woken by it may wait again first).
  await delay(0);
  assertEquals(
    await openFdCount(Deno.pid),
    before,
    "an fd outlived the waits (the poll's eventfd?)",
  );
});

Deno.test("a wait started the moment the last one settles is taken into the poll, not left without one", async () => {
  const [fd, other] = [createEventFd(), createEventFd()];
  const [first, second] = [new FdWaiter(), new FdWaiter()];
  const one = new Uint8Array(new BigUint64Array([1n]).buffer);
  try {
    const waiting = first.wait(fd);
    writeFd(fd, one, "eventfd");
    assertEquals(await waiting, "readable");
    // Runs in the same turn as the settling, before the poll loop's own code after its await.
    const next = second.wait(other);
    writeFd(other, one, "eventfd");
    assertEquals(await within(next, 5_000), "readable", "the second wait was never polled");
  } finally {
    await first.close();
    await second.close();
    closeFd(fd);
    closeFd(other);
  }
});

Deno.test("a wait made again by the code a readiness woke joins the next poll call: one call per wake-up, no kick", async () => {
  const [idle, busy] = [createEventFd(), createEventFd()];
  const [idleWaiter, waiter] = [new FdWaiter(), new FdWaiter()];
  const one = new Uint8Array(new BigUint64Array([1n]).buffer);
  const drained = new Uint8Array(8);
  try {
    // Another wait stays in the poll throughout, as a FIFO's path watch does beside its reads.
    const idleWait = idleWaiter.wait(idle);
    let pending = waiter.wait(busy);
    const wakeUp = async (): Promise<void> => {
      writeFd(busy, one, "eventfd");
      assertEquals(await within(pending, 5_000), "readable");
      readFd(busy, drained, "eventfd");
      pending = waiter.wait(busy);
    };
    await wakeUp();
    const before = pollCounts();
    const rounds = 20;
    for (let i = 0; i < rounds; i++) await wakeUp();
    const after = pollCounts();
    // Made at once after each wake-up, the next call left the wait made again to a kick and a
    // call more: 40 calls and 20 kicks.
    assertEquals(
      { calls: after.calls - before.calls, kicks: after.kicks - before.kicks },
      { calls: rounds, kicks: 0 },
    );
    await idleWaiter.close();
    assertEquals(await idleWait, "cancelled");
  } finally {
    await idleWaiter.close();
    await waiter.close();
    closeFd(idle);
    closeFd(busy);
  }
});

Deno.test("a wait closed by the code another wait's wake-up woke, before the next poll call, ends at once and is not polled again", async () => {
  const [first, second] = [createEventFd(), createEventFd()];
  const [waiter, other] = [new FdWaiter(), new FdWaiter()];
  const one = new Uint8Array(new BigUint64Array([1n]).buffer);
  let reused: number | undefined;
  try {
    const otherWait = other.wait(second);
    const woken = waiter.wait(first);
    writeFd(first, one, "eventfd");
    assertEquals(await within(woken, 5_000), "readable");
    // The hub is between calls, letting this code run: the close resolves at once, and the fd's
    // number may be taken by the next fd made, which the next call must not watch.
    await other.close();
    assertEquals(await otherWait, "cancelled");
    closeFd(second);
    reused = createEventFd();
    readFd(first, new Uint8Array(8), "eventfd");
    const again = waiter.wait(first);
    writeFd(reused, one, "eventfd"); // seen by no wait: none is on it
    writeFd(first, one, "eventfd");
    assertEquals(await within(again, 5_000), "readable");
  } finally {
    await waiter.close();
    await other.close();
    closeFd(first);
    if (reused !== undefined) closeFd(reused);
    else closeFd(second);
  }
});

Deno.test("close() of a wait in flight resolves only once the poll call that watched its fd returned", async () => {
  const [kept, closed] = [createEventFd(), createEventFd()];
  const [keptWaiter, closedWaiter] = [new FdWaiter(), new FdWaiter()];
  try {
    const keptWait = keptWaiter.wait(kept);
    const closedWait = closedWaiter.wait(closed);
    await delay(0); // both in the call
    const before = pollCounts();
    await closedWaiter.close();
    // Until the call returns the kernel holds the fd's file (a FIFO keeps its reader): its
    // owner may close it now. The call was kicked, returned, and the next one watches the rest.
    const after = pollCounts();
    assertEquals(
      { calls: after.calls - before.calls, kicks: after.kicks - before.kicks },
      { calls: 1, kicks: 1 },
    );
    assertEquals(await closedWait, "cancelled");
    writeFd(kept, new Uint8Array(new BigUint64Array([1n]).buffer), "eventfd");
    assertEquals(await within(keptWait, 5_000), "readable");
  } finally {
    await keptWaiter.close();
    await closedWaiter.close();
    closeFd(kept);
    closeFd(closed);
  }
});

Deno.test("FdWaiters past the poll's buffer each wake on their own fd, woken in any order", async () => {
  // More waits than the hub's first pollfd array holds: it grows between calls.
  const count = 20;
  const fds = Array.from({ length: count }, () => createEventFd());
  const waiters = fds.map(() => new FdWaiter());
  const one = new Uint8Array(new BigUint64Array([1n]).buffer);
  try {
    const pending = waiters.map((waiter, i) => waiter.wait(fds[i]));
    const settled: number[] = [];
    pending.forEach((wait, i) => wait.then(() => settled.push(i)));
    const woken: number[] = [];
    for (const i of [13, 2, 19, 7, 0, 11, 16, 5, 8, 1, 18, 3, 14, 9, 6, 17, 4, 12, 10, 15]) {
      writeFd(fds[i], one, "eventfd");
      woken.push(i);
      assertEquals(await within(pending[i], 5_000), "readable", `the wait on fd ${i}`);
      await delay(0);
      // Only the woken ones ended: a wait read at another's place in the array would too.
      assertEquals(settled, woken);
    }
  } finally {
    for (const waiter of waiters) await waiter.close();
    for (const fd of fds) closeFd(fd);
  }
});

testWith(
  [...NEEDS.children, requires("sh")],
  "with no fd left for the poll's eventfd (EMFILE) a wait ends with error at once, and the next wait, once an fd is free, is polled and wakes",
  async () => {
    assertEquals(
      await runUnderFdLimit("poll_without_fds.ts", [], { permissions: ["--allow-ffi"] }),
      ["no fd left: error", "one fd free: readable", "done"],
    );
  },
);

testWith(
  [...NEEDS.children, requires("sh")],
  "a poll call interrupted by a signal (EINTR) is made again, not the end of the wait, also once the hub gave up on a lasting failure and started again",
  async () => {
    await using child = spawnDenoUnderFdLimit(`${TESTS_DIR}fixtures/poll_eintr.ts`, [], [
      "--allow-ffi",
      "--allow-run",
    ]);
    assertEquals(await child.nextLine(), "fresh hub, one EINTR: readable");
    assertEquals(await child.nextLine(), "over the fd limit: error");
    assertEquals(await child.nextLine(), "restarted hub, one EINTR: readable");
    assertEquals(await child.nextLine(), "done");
    assertEquals((await child.status()).code, 0);
  },
);

Deno.test("the hub's eventfd closed under it (a double close elsewhere) ends its waits with error, never a call after call, and the next wait starts afresh", async () => {
  const fd = createEventFd();
  const [waiter, later] = [new FdWaiter(), new FdWaiter()];
  const one = new Uint8Array(new BigUint64Array([1n]).buffer);
  const eventFds = (): number[] => openFdsTo(Deno.pid, "anon_inode:[eventfd]");
  try {
    await delay(0); // no hub running: each test's waits have ended
    const before = eventFds();
    const first = waiter.wait(fd);
    const [hubFd] = eventFds().filter((name) => !before.includes(name));
    assertEquals(typeof hubFd, "number", "the hub made no eventfd");
    const calls = pollCounts().calls;
    closeFd(hubFd);
    // The call in flight looks at its fds again when one is ready, and finds its eventfd gone
    // (POLLNVAL): it ends the waits rather than make a call that returns at once, for ever.
    writeFd(fd, one, "eventfd");
    assertEquals(await within(first, 5_000), "error");
    assertEquals(pollCounts().calls - calls, 0, "a call after the one that found its eventfd gone");
    const next = later.wait(fd);
    writeFd(fd, one, "eventfd");
    assertEquals(await within(next, 5_000), "readable");
  } finally {
    await waiter.close();
    await later.close();
    closeFd(fd);
  }
});

Deno.test("a poll call that passes its bound with nothing ready is made again, unseen by the wait: no kick, no error, and the fd still wakes it", async () => {
  const fd = createEventFd();
  const waiter = new FdWaiter();
  const one = new Uint8Array(new BigUint64Array([1n]).buffer);
  const boundBefore = setCallBoundMs(5);
  try {
    const before = pollCounts();
    let readiness: string | undefined;
    const wait = waiter.wait(fd).then((result) => readiness = result);
    // More calls ended by their bound than the failed calls in a row that end every wait (3).
    await until(() => pollCounts().calls - before.calls >= 50, "50 calls ended by their bound");
    assertEquals(readiness, undefined, "the wait ended with its call's bound");
    assertEquals(pollCounts().kicks - before.kicks, 0, "kicked");
    writeFd(fd, one, "eventfd");
    assertEquals(await within(wait, 5_000), "readable");
  } finally {
    setCallBoundMs(boundBefore);
    await waiter.close();
    closeFd(fd);
  }
});

testWith(
  ["read"],
  "a Worker terminated while a state cell's waitForChange() is in flight leaves no thread behind: the poll of its writer's pidfd (and the futex_waitv call) it left end within their bound",
  async () => {
    const left = await threadsLeftByWaitingWorkers("cell");
    const what =
      `${left.inHubCalls} threads still in a hub's call and ${left.threads} more in all, ` +
      `after ${WAITING_WORKERS} Workers were terminated in waitForChange()`;
    assert(left.inHubCalls <= 0 && left.threads < FEW_THREADS, what);
  },
);
