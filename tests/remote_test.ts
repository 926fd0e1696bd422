/**
 * The remote link: channels whose ends come and go, the command forwarder's bounded folding,
 * press reports that never wait, and the button process applying remote commands.
 */
import { assert, assertEquals } from "@std/assert";
import {
  CHANNEL_RING,
  type ChannelReceiver,
  channelSize,
  initChannel,
  openChannelReceiver,
  openChannelSender,
} from "../app/remote/channel.ts";
import { CommandForwarder } from "../app/remote/command_forwarder.ts";
import {
  COMMAND_CHANNEL,
  createRemoteLink,
  openCommandReceiver,
  openCommandSender,
  openEventReceiver,
  openEventSender,
} from "../app/remote/link.ts";
import {
  type Command,
  COMMANDS,
  composeCommands,
  decodeCommand,
  encodeCommand,
  encodePress,
  isPress,
  pressAgeMs,
} from "../app/remote/messages.ts";
import { PressReporter } from "../app/remote/press_reporter.ts";
import { createMemfdRegion, openFileRegion, openStateCell, type SharedRegion } from "../mod.ts";
import { HEAD, RING_HEADER_SIZE, TAIL } from "../lib/ring/layout.ts";
import { nextRecordLength } from "./helpers/rings.ts";
import { writeAndLeave } from "./helpers/fifo.ts";
import { ROOT } from "./helpers/paths.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { spawnDeno } from "./helpers/spawn.ts";
import { withTempDir } from "./helpers/temp.ts";
import { delay, until } from "./helpers/waiting.ts";

const text = new TextEncoder();
const read = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

function apply(state: number, command: Command | undefined): number {
  if (command === undefined) return state;
  return command === "ON" ? 1 : command === "OFF" ? 0 : 1 - state;
}

function channelRegion(capacity = 256): SharedRegion {
  const region = createMemfdRegion({ size: channelSize(capacity), label: "remote-test" });
  initChannel(region, { offset: 0, capacity });
  return region;
}

/** Collects what `receiver` yields until `signal` aborts. */
async function collect(
  receiver: ChannelReceiver,
  signal: AbortSignal,
  into: string[],
): Promise<void> {
  for await (const message of receiver.messages(signal)) into.push(read(message));
}

Deno.test("composeCommands() folds every sequence into one command with the same effect", () => {
  const sequences: Command[][] = [[]];
  for (let length = 1; length <= 6; length++) {
    for (const sequence of sequences.filter((s) => s.length === length - 1)) {
      for (const command of COMMANDS) sequences.push([...sequence, command]);
    }
  }
  for (const sequence of sequences) {
    let folded: Command | undefined;
    let started = false;
    for (const command of sequence) {
      folded = started ? composeCommands(folded, command) : command;
      started = true;
    }
    for (const initial of [0, 1]) {
      const stepByStep = sequence.reduce(apply, initial);
      assertEquals(apply(initial, folded), stepByStep, `${sequence.join(",")} from ${initial}`);
    }
  }
});

Deno.test("encodeCommand() and decodeCommand() round-trip; other bytes are no command", () => {
  for (const command of COMMANDS) assertEquals(decodeCommand(encodeCommand(command)), command);
  assertEquals(decodeCommand(text.encode("on")), undefined);
  assertEquals(decodeCommand(text.encode("press")), undefined);
  assert(isPress(text.encode("press")));
  // A press says when it was made (3 bytes, 10 ms steps modulo 2^24), its age told modulo that.
  assert(isPress(encodePress(1_000)));
  assertEquals(pressAgeMs(encodePress(1_000), 6_500), 5_500);
  assertEquals(pressAgeMs(encodePress(2 ** 24 * 10 - 10), 2 ** 24 * 10 + 20), 30);
  assertEquals(encodePress(1_000).length, 8);
  assertEquals(pressAgeMs(text.encode("press"), 6_500), 0);
  assertEquals(pressAgeMs(text.encode("press 1"), 6_500), undefined);
});

Deno.test("ChannelReceiver.messages() carries on across a sender that closes and one that attaches later", async () => {
  using region = channelRegion();
  using receiver = openChannelReceiver(region, { offset: 0 });
  const stop = new AbortController();
  const got: string[] = [];
  const collecting = collect(receiver, stop.signal, got);
  {
    using first = openChannelSender(region, { offset: 0 });
    assertEquals(first.trySend(text.encode("a")), "sent");
  }
  await until(() => got.length === 1, "a received");
  await delay(20); // the receiver now sleeps on the sender generation
  {
    using second = openChannelSender(region, { offset: 0 });
    await second.send(text.encode("b"));
  }
  await until(() => got.length === 2, "b received");
  stop.abort();
  await collecting;
  assertEquals(got, ["a", "b"]);
});

Deno.test("ChannelReceiver.messages() reads on past a record written over, with or without onDiscarded", async () => {
  for (const told of [true, false]) {
    using region = channelRegion();
    using receiver = openChannelReceiver(region, { offset: 0 });
    using sender = openChannelSender(region, { offset: 0 });
    const ring = CHANNEL_RING;
    assertEquals(sender.trySend(text.encode("lost")), "sent");
    region.storeInt32(ring + RING_HEADER_SIZE, 0x58585858); // its length
    assertEquals(sender.trySend(text.encode("lost too")), "sent");
    const discarded: number[] = [];
    const stop = new AbortController();
    const got: string[] = [];
    const options = told ? { onDiscarded: (_: Error, bytes: number) => discarded.push(bytes) } : {};
    const reading = (async () => {
      for await (const message of receiver.messages(stop.signal, options)) got.push(read(message));
    })();
    await until(() => region.loadInt32(ring + TAIL) === 32, "both records dropped");
    assertEquals(sender.trySend(text.encode("next")), "sent");
    await until(() => got.length === 1, "the next message received");
    stop.abort();
    await reading;
    assertEquals(got, ["next"]);
    assertEquals(discarded, told ? [32] : []);
  }
});

Deno.test("ChannelReceiver.discardWaiting() drops a record written over with what waited, and keeps what comes after", async () => {
  using region = channelRegion();
  using receiver = openChannelReceiver(region, { offset: 0 });
  using sender = openChannelSender(region, { offset: 0 });
  for (const message of ["old-1", "old-2", "old-3"]) {
    assertEquals(sender.trySend(text.encode(message)), "sent");
  }
  region.storeInt32(CHANNEL_RING + RING_HEADER_SIZE + 32, 0x58585858); // old-3's length
  assertEquals(receiver.discardWaiting(), 2);
  assertEquals(
    region.loadInt32(CHANNEL_RING + TAIL),
    region.loadInt32(CHANNEL_RING + HEAD),
    "nothing left waiting",
  );
  assertEquals(sender.trySend(text.encode("fresh")), "sent");
  const stop = new AbortController();
  const got: string[] = [];
  const discarded: number[] = [];
  const reading = (async () => {
    const onDiscarded = (_: Error, bytes: number) => discarded.push(bytes);
    for await (const message of receiver.messages(stop.signal, { onDiscarded })) {
      got.push(read(message));
    }
  })();
  await until(() => got.length === 1, "the fresh message");
  stop.abort();
  await reading;
  assertEquals([got, discarded], [["fresh"], []]);
});

Deno.test("ChannelSender.send() waits for a receiver that closed until a new one attaches", async () => {
  using region = channelRegion(64);
  using sender = openChannelSender(region, { offset: 0 });
  openChannelReceiver(region, { offset: 0 }).close();
  // What fits still goes into the ring, for the next receiver; then the closed one shows.
  let queued = 0;
  while (sender.trySend(text.encode(`m${queued}`)) === "sent") queued++;
  assertEquals(queued, 4);
  assertEquals(sender.trySend(text.encode("x")), "no receiver");
  let sent = false;
  const sending = sender.send(text.encode("x")).then(() => sent = true);
  await delay(20);
  assertEquals(sent, false);
  using receiver = openChannelReceiver(region, { offset: 0 });
  const stop = new AbortController();
  const got: string[] = [];
  const collecting = collect(receiver, stop.signal, got);
  await sending;
  await until(() => got.length === 5, "everything received");
  stop.abort();
  await collecting;
  assertEquals(got, ["m0", "m1", "m2", "m3", "x"]);
});

Deno.test("ChannelSender opened while the receiver is closed attaches when a receiver comes back", async () => {
  using region = channelRegion();
  openChannelReceiver(region, { offset: 0 }).close();
  using sender = openChannelSender(region, { offset: 0 });
  assertEquals(sender.attached, false);
  assertEquals(sender.trySend(text.encode("lost?")), "no receiver");
  const sending = sender.send(text.encode("y"));
  using receiver = openChannelReceiver(region, { offset: 0 });
  await sending;
  assertEquals(sender.attached, true);
  const stop = new AbortController();
  const got: string[] = [];
  const collecting = collect(receiver, stop.signal, got);
  await until(() => got.length === 1, "y received");
  stop.abort();
  await collecting;
  assertEquals(got, ["y"]);
});

Deno.test("ChannelSender.trySend() reports a full channel instead of waiting", () => {
  using region = channelRegion(64);
  using sender = openChannelSender(region, { offset: 0 });
  using _receiver = openChannelReceiver(region, { offset: 0 });
  let sent = 0;
  while (sender.trySend(text.encode("TOGGLE")) === "sent") sent++;
  assertEquals(sent, 4); // 64 bytes hold four 16-byte records
  assertEquals(sender.trySend(text.encode("ON")), "full");
});

Deno.test("CommandForwarder folds a flood into at most two held commands, and the receiver ends where the sequence says", async () => {
  using link = createRemoteLink();
  using sender = openCommandSender(link);
  const stop = new AbortController();
  let state = 0;
  let applied = 0;
  using receiver = openCommandReceiver(link);
  let done!: () => void;
  const finished = new Promise<void>((resolve) => done = resolve);
  const applying = (async () => {
    for await (const message of receiver.messages(stop.signal)) {
      if (read(message) === "END") done();
      state = apply(state, decodeCommand(message));
      applied++;
      if (applied % 4 === 0) await delay(1); // a slow button process
    }
  })();
  let caughtUp = 0;
  let merged = 0;
  using forwarder = new CommandForwarder(sender, {
    onCaughtUp: (count) => {
      caughtUp++;
      merged += count;
    },
  });
  let expected = 0;
  let seed = 42;
  for (let i = 0; i < 20_000; i++) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const command = COMMANDS[seed % 10 < 8 ? 2 : seed % 2]; // mostly toggles
    forwarder.submit(command);
    expected = apply(expected, command);
    assert(forwarder.held <= 2, `${forwarder.held} held`);
    if (i % 500 === 0) await delay(0);
  }
  await forwarder.settled();
  assertEquals(forwarder.held, 0);
  await sender.send(text.encode("END")); // behind everything the forwarder handed over
  await finished;
  assertEquals(state, expected);
  assert(caughtUp > 0 && merged > 0, "the flood was folded");
  assert(applied < 20_000, `${applied} applied of 20000`);
  stop.abort();
  await applying;
});

Deno.test("CommandForwarder holds commands while no receiver is attached and hands them over when one comes", async () => {
  using link = createRemoteLink();
  openCommandReceiver(link).close();
  using sender = openCommandSender(link);
  const waiting: string[] = [];
  using forwarder = new CommandForwarder(sender, { onWaiting: (reason) => waiting.push(reason) });
  forwarder.submit("ON");
  forwarder.submit("TOGGLE");
  forwarder.submit("TOGGLE");
  forwarder.submit("TOGGLE");
  assertEquals(waiting, ["no receiver"]);
  assertEquals(forwarder.held, 2);
  using receiver = openCommandReceiver(link);
  await forwarder.settled();
  const got: string[] = [];
  const stop = new AbortController();
  const collecting = collect(receiver, stop.signal, got);
  await until(() => got.length === 2, "both received");
  stop.abort();
  await collecting;
  assertEquals(got, ["ON", "TOGGLE"], "ON, then the three toggles folded into one");
  assertEquals(forwarder.held, 0);
});

Deno.test("PressReporter drops presses while the channel is full, says so once, and counts them", () => {
  using link = createRemoteLink();
  using events = openEventSender(link);
  using receiver = openEventReceiver(link);
  const said: string[] = [];
  const reporter = new PressReporter(events, {
    onDropping: (reason) => said.push(`dropping: ${reason}`),
    onResumed: (dropped) => said.push(`resumed after ${dropped}`),
  });
  let reported = 0;
  while (reporter.report()) reported++;
  assertEquals(reported, 64); // the event channel holds 64 presses
  for (let i = 0; i < 9; i++) assertEquals(reporter.report(), false);
  assertEquals(said, ["dropping: full"]);
  assertEquals(receiver.discardWaiting(), 64);
  assert(reporter.report());
  assertEquals(said, ["dropping: full", "resumed after 10"]);
  receiver.close();
  while (reporter.report()); // presses fill the ring for the next receiver, then drop
  assertEquals(said.at(-1), "dropping: no receiver");
});

testWith(
  NEEDS.childrenAndFiles,
  "the button process applies remote commands as it applies presses, reports presses, and a restarted one gets the command that waited",
  async () => {
    await withTempDir(async (dir) => {
      const state = `${dir}/state.dat`;
      const fifo = `${dir}/button.fifo`;
      using region = openFileRegion(state, { create: true, size: 256 });
      using cell = openStateCell(region);
      using link = createRemoteLink();
      using commands = openCommandSender(link);
      using events = openEventReceiver(link);
      const start = () =>
        spawnDeno(`${ROOT}producers/button.ts`, [
          "--state",
          state,
          "--fifo",
          fifo,
          "--remote",
          link.name,
        ]);
      const pressed: string[] = [];
      const stop = new AbortController();
      const listening = (async () => {
        for await (const message of events.messages(stop.signal)) {
          pressed.push(isPress(message) ? "press" : read(message));
        }
      })();
      {
        await using button = start();
        await button.waitFor(/Button ready/);
        await commands.send(encodeCommand("ON"));
        assertEquals(await cell.waitForChange({ from: 0, timeout: 20_000 }), 1);
        await commands.send(encodeCommand("ON"));
        await commands.send(encodeCommand("TOGGLE"));
        assertEquals(await cell.waitForChange({ from: 1, timeout: 20_000 }), 0);
        await writeAndLeave(fifo, "0\n");
        assertEquals(await cell.waitForChange({ from: 0, timeout: 20_000 }), 1);
        await until(() => pressed.length === 1, "the press reported");
        assertEquals(pressed, ["press"], "commands are not reported as presses");
        button.kill("SIGTERM");
        await button.status();
      }
      // No button process, and a controller that starts meanwhile: its command waits for the
      // next button process.
      commands.close();
      using later = openCommandSender(link);
      assertEquals(later.attached, false);
      const sending = later.send(encodeCommand("OFF"));
      {
        await using button = start();
        await sending;
        assertEquals(await cell.waitForChange({ from: 1, timeout: 20_000 }), 0);
        await writeAndLeave(fifo, "0\n");
        assertEquals(await cell.waitForChange({ from: 0, timeout: 20_000 }), 1);
        await until(() => pressed.length === 2, "the second press reported");
        button.kill("SIGKILL");
        await button.status();
      }
      // Killed without closing: the command sits in the ring until the next one takes it.
      assertEquals(later.trySend(encodeCommand("TOGGLE")), "sent");
      {
        await using button = start();
        assertEquals(await cell.waitForChange({ from: 1, timeout: 20_000 }), 0);
        button.kill("SIGTERM");
        await button.status();
      }
      stop.abort();
      await listening;
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "the button process skips what is no command in the remote link, a record written over included, and applies the commands after it",
  async () => {
    await withTempDir(async (dir) => {
      const state = `${dir}/state.dat`;
      using region = openFileRegion(state, { create: true, size: 256 });
      using cell = openStateCell(region);
      using link = createRemoteLink();
      using commands = openCommandSender(link);
      await using button = spawnDeno(`${ROOT}producers/button.ts`, [
        "--state",
        state,
        "--fifo",
        `${dir}/button.fifo`,
        "--remote",
        link.name,
      ]);
      await button.waitFor(/Button ready/);
      // Bytes no controller sends: skipped and named.
      await commands.send(text.encode("BLINK"));
      await button.waitFor(/no command \(5 bytes that are not ON, OFF or TOGGLE\)/);
      await commands.send(encodeCommand("ON"));
      assertEquals(await cell.waitForChange({ from: 0, timeout: 20_000 }), 1);
      // A command in flight written over (through /proc/PID/fd/N, as any process of the user
      // can): its length is garbage, so no read can tell where the next record starts.
      button.kill("SIGSTOP");
      try {
        const ring = COMMAND_CHANNEL.offset + CHANNEL_RING;
        const length = nextRecordLength(link, ring, COMMAND_CHANNEL.capacity);
        await commands.send(encodeCommand("OFF"));
        link.storeInt32(length, 0x58585858);
      } finally {
        button.kill("SIGCONT");
      }
      await button.waitFor(
        /no command \(.*record at data offset \d+ is corrupted.*dropped it and what waited behind it, 16 bytes/,
      );
      assertEquals(cell.read(), 1, "the command written over is not applied");
      await commands.send(encodeCommand("TOGGLE"));
      assertEquals(await cell.waitForChange({ from: 1, timeout: 20_000 }), 0);
      button.kill("SIGTERM");
      const status = await button.status();
      assertEquals(status.code, 0, button.transcript);
    });
  },
);
