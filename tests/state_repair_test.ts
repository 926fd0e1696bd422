import { assert, assertEquals } from "@std/assert";
import { warningsInto } from "./helpers/logs.ts";
import {
  COMMAND_CHANNEL,
  createRemoteLink,
  EVENT_CHANNEL,
  openCommandReceiver,
} from "../app/remote/link.ts";
import { repairLauncherMemory } from "../app/state_repair.ts";
import { createMemfdRegion, openStateCell, type SharedRegion } from "../mod.ts";
import { HEAD, TAIL } from "../lib/ring/layout.ts";
import { CHANNEL_RING } from "../app/remote/channel.ts";

/** The command channel's ring magic. */
const LINK_RING_MAGIC = COMMAND_CHANNEL.offset + CHANNEL_RING;

/** A state memfd as the launcher makes it, its cell written once. */
function stateRegion(): SharedRegion {
  const region = createMemfdRegion({ size: 256, label: "mmap-ipc-state" });
  openStateCell(region, { supervisor: true }).close();
  return region;
}

Deno.test("repairLauncherMemory() writes over nothing sound and says nothing", () => {
  using state = stateRegion();
  using link = createRemoteLink();
  const said: string[] = [];
  const before = [state.read(0, 256), link.read(0, link.size)];
  assertEquals(repairLauncherMemory({ state, link }, { child: "led", log: warningsInto(said) }), 0);
  assertEquals(said, []);
  assertEquals([state.read(0, 256), link.read(0, link.size)], before);
});

Deno.test("repairLauncherMemory() repairs each memfd written over and names it and the child", () => {
  using state = stateRegion();
  using link = createRemoteLink();
  state.storeInt32(64, 0x58585858);
  link.storeInt32(LINK_RING_MAGIC, 0x58585858);
  const said: string[] = [];
  assertEquals(
    repairLauncherMemory({ state, link }, { child: "button", log: warningsInto(said) }),
    2,
  );
  assertEquals(said.length, 2, said.join("\n"));
  assert(said[0].includes(`state memfd ${state.name}`) && said[0].includes("0x58585858"), said[0]);
  assert(
    said[1].includes(`remote link memfd ${link.name}`) && said[1].includes("command"),
    said[1],
  );
  assert(said.every((line) => line.endsWith("before starting button again")), said.join("\n"));
  openStateCell(state).close(); // opens again
  assertEquals(
    repairLauncherMemory({ state, link }, { child: "button", log: warningsInto(said) }),
    0,
  );
});

Deno.test("repairLauncherMemory(): a memfd that cannot be repaired does not keep the other from its repair", () => {
  const state = stateRegion();
  state.close();
  using link = createRemoteLink();
  link.storeInt32(LINK_RING_MAGIC, 0x58585858);
  const said: string[] = [];
  assertEquals(repairLauncherMemory({ state, link }, { child: "led", log: warningsInto(said) }), 1);
  assert(
    said[0].startsWith(`Could not repair the state memfd ${state.name} before starting led again`),
    said[0],
  );
  assert(said[1].includes(`remote link memfd ${link.name}`), said[1]);
  assertEquals(link.loadInt32(LINK_RING_MAGIC) >>> 0, 0x474e4952, "the magic RING written anew");
});

Deno.test("repairLauncherMemory() sets the positions of the restarting child's link ends, and of their other ends written over", () => {
  using state = stateRegion();
  using link = createRemoteLink();
  const commandTail = COMMAND_CHANNEL.offset + CHANNEL_RING + TAIL; // the button's: it receives commands
  const commandHead = COMMAND_CHANNEL.offset + CHANNEL_RING + HEAD; // the controller's
  const eventTail = EVENT_CHANNEL.offset + CHANNEL_RING + TAIL; // the controller's
  const said: string[] = [];
  const log = warningsInto(said);
  link.storeInt32(commandTail, 0x58585858);
  link.storeInt32(commandHead, 0x58585858);
  assertEquals(repairLauncherMemory({ state, link }, { child: "led", log }), 0, "no link ends");
  assertEquals(link.loadInt32(commandTail), 0x58585858, "nothing written for the LED");
  assertEquals(
    repairLauncherMemory({ state, link }, { child: "button", log, linkHolder: "button" }),
    1,
  );
  for (
    const words of [
      "its command channel: its consumer position 1482184792 is not one of the ring's",
      "its producer position 1482184792 is not one of the ring's (multiples of 8 below 512); set to the consumer's",
      "the commands in it dropped",
    ]
  ) {
    assert(said[0].includes(words), said[0]);
  }
  // Neither was sound: both start again at 0, the ring empty.
  assertEquals([link.loadInt32(commandHead), link.loadInt32(commandTail)], [0, 0]);
  // The controller's own end, written over while it runs, would have failed the button's
  // open of the press-event producer every time: the button's repair sets it to its own.
  link.storeInt32(eventTail, 0x58585858);
  repairLauncherMemory({ state, link }, { child: "button", log, linkHolder: "button" });
  assert(said[1].includes("its press-event channel: its consumer position 1482184792"), said[1]);
  assertEquals(
    link.loadInt32(eventTail),
    link.loadInt32(EVENT_CHANNEL.offset + CHANNEL_RING + HEAD),
  );
  assertEquals(
    repairLauncherMemory({ state, link }, { child: "mqtt", log, linkHolder: "controller" }),
    0,
  );
});

Deno.test("repairLauncherMemory(): what it could not mend is named apart from what it mended", () => {
  using state = stateRegion();
  using link = createRemoteLink();
  // A stray process holding the button's end of the command channel: here, this one.
  using stray = openCommandReceiver(link);
  const commandTail = COMMAND_CHANNEL.offset + CHANNEL_RING + TAIL;
  const eventMagic = EVENT_CHANNEL.offset + CHANNEL_RING;
  link.storeInt32(commandTail, 0x58585858);
  link.storeInt32(eventMagic, 0x58585858);
  const said: string[] = [];
  const log = warningsInto(said);
  assertEquals(
    repairLauncherMemory({ state, link }, { child: "button", log, linkHolder: "button" }),
    1,
  );
  assertEquals(said.length, 1, said.join("\n"));
  const [mended, notMended] = said[0].split(". Not mended: ");
  assert(
    mended.includes('its press-event channel: found 0x58585858 where the magic "RING" belongs') &&
      mended.endsWith(
        "put those words right; the rest left as it was, before starting button again",
      ),
    said[0],
  );
  assert(!mended.includes("its command channel"), said[0]);
  assert(
    notMended.startsWith("its command channel (") && notMended.includes(`pid ${Deno.pid}`),
    said[0],
  );
  assertEquals(link.loadInt32(commandTail), 0x58585858, "a held end's position is left alone");
  // With nothing to mend, the end still held: a warning of its own.
  link.storeInt32(eventMagic, 0x474e4952);
  assertEquals(
    repairLauncherMemory({ state, link }, { child: "button", log, linkHolder: "button" }),
    0,
  );
  assert(
    said[1].startsWith(
      `Could not repair the remote link memfd ${link.name} before starting button again: its command channel (`,
    ),
    said[1],
  );
  stray.close();
});
