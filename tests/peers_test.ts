/**
 * Peers that die and peers that are foreign (issue 11): our processes beside the original C
 * system (tests/fixtures/original.c, which behaves as the original does), in both directions,
 * and a writer killed in the middle of a write. Real processes, FIFOs and files throughout.
 */
import { assert, assertEquals, assertNotEquals, assertStringIncludes } from "@std/assert";
import { makeFifo, processState } from "../ffi/posix.ts";
import { openFileRegion, openStateCell } from "../mod.ts";
import { lineNaming } from "./helpers/assertions.ts";
import type { ChildProcess } from "./helpers/child_process.ts";
import { press } from "./helpers/fifo.ts";
import { ROOT, TESTS_DIR } from "./helpers/paths.ts";
import { type Need, NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { killIfRunning, waitingForWriter } from "./helpers/proc.ts";
import { buildC, spawnDeno, spawnProgram } from "./helpers/spawn.ts";
import {
  identity,
  ledShows,
  ledStates,
  REMADE,
  REPLACED,
  running,
  startButton,
  startedOrEnded,
  startLauncher,
  stateValue,
  stopAll,
} from "./helpers/system.ts";
import { removeTree, withTempDir } from "./helpers/temp.ts";
import { delay, GUARD_MS, until } from "./helpers/waiting.ts";
import { TORN_WRITER_VALUES } from "./fixtures/torn_writer.ts";

/** Waits until the original button `pid` sits in open(), so a write reaches it at once. */
async function originalButtonWaits(pid: number, child: ChildProcess): Promise<void> {
  await until(
    () => waitingForWriter(pid),
    `the original button (pid ${pid}) waiting for a press`,
    {
      child,
    },
  );
}

const FOREIGN_WRITERS: [
  string,
  Need[],
  (state: string, dir: string) => Promise<() => Promise<void>>,
][] = [
  [
    "the original C button presses",
    [requires("gcc")],
    async (state, dir) => {
      const original = await buildC(dir, "original");
      const fifo = `${dir}/mmap_file`;
      const button = spawnProgram(original, ["button", state, fifo]);
      await originalButtonWaits(button.pid, button);
      await press(fifo, button);
      // Its state starts at 0, so its first press writes 1.
      await until(() => stateValue(state) === 1, "the original button's 1 in the state file");
      return () => button[Symbol.asyncDispose]();
    },
  ],
  [
    '"1\\n" is written at offset 0',
    [],
    (state) => {
      using file = Deno.openSync(state, { write: true });
      file.writeSync(new TextEncoder().encode("1\n\0"));
      return Promise.resolve(() => Promise.resolve());
    },
  ],
];

for (const [writer, needs, write] of FOREIGN_WRITERS) {
  testWith(
    [...NEEDS.system, ...needs],
    `our button SIGKILLed, then ${writer}: our LED follows`,
    async () => {
      await withTempDir(async (dir) => {
        const state = `${dir}/data.dat`;
        const fifo = `${dir}/button.fifo`;
        await using led = spawnDeno(`${ROOT}consumers/led.ts`, ["--state", state]);
        let since = await ledShows(led, "Off", 0);
        await using button = await startButton(state, fifo);
        // On and back Off: the LED has gone to sleep trusting our live writer.
        for (const shown of ["On", "Off"] as const) {
          await press(fifo, button);
          since = await ledShows(led, shown, since);
        }
        button.kill("SIGKILL");
        assertEquals((await button.status()).signal, "SIGKILL");
        const stop = await write(state, dir);
        try {
          await ledShows(led, "On", since);
        } finally {
          await stop();
        }
      });
    },
  );
}

testWith(
  [...NEEDS.system, requires("gcc")],
  "a live original system: our launcher and a lone button refuse, naming the FIFO and the original button's pid, with no phantom press",
  async () => {
    await withTempDir(async (dir) => {
      const original = await buildC(dir, "original");
      const state = `${dir}/data.dat`;
      const fifo = `${dir}/mmap_file`;
      await using theirs = spawnProgram(original, ["launch", state, fifo]);
      let buttonPid: number | undefined;
      let ledPid: number | undefined;
      try {
        buttonPid = Number((await theirs.waitFor(/button pid (\d+)/)).match[1]);
        ledPid = Number((await theirs.waitFor(/led pid (\d+)/)).match[1]);
        let since = await ledShows(theirs, "Off", 0);
        // One press first: from then on the original button holds the FIFO open (it leaks an fd
        // per read), so the holder can be found.
        await originalButtonWaits(buttonPid, theirs);
        await press(fifo, theirs);
        since = await ledShows(theirs, "On", since);
        await originalButtonWaits(buttonPid, theirs);
        const before = { fifo: identity(fifo), state: identity(state) };

        const ours: [string, () => ChildProcess, RegExp][] = [
          [
            "our launcher",
            () => startLauncher(dir, ["--state", state, "--fifo", fifo]),
            /Started (led|button)/,
          ],
          [
            "our button alone",
            () =>
              spawnDeno(`${ROOT}producers/button.ts`, ["--state", state, "--fifo", fifo], {
                cwd: dir,
              }),
            /Button ready/,
          ],
        ];
        for (const [who, start, ready] of ours) {
          await using child = start();
          const outcome = await startedOrEnded(child, ready);
          assertEquals(
            outcome,
            "ended",
            `${who} started beside the original:\n${child.transcript}`,
          );
          const status = await child.status();
          assertEquals(status.code, 1, `${who}:\n${child.transcript}`);
          assertStringIncludes(status.stderr, fifo, `${who} did not name the FIFO`);
          assertStringIncludes(
            status.stderr,
            `pid ${buttonPid}`,
            `${who} did not name the original button's pid`,
          );
          // Its own look (a write that wakes a reader blocked in open) is no reader to name.
          assert(
            !new RegExp(`pid ${child.pid}\\b`).test(status.stderr),
            `${who} named itself as a reader:\n${status.stderr}`,
          );
        }

        assertEquals(identity(fifo), before.fifo, "the original's FIFO was replaced");
        assertEquals(identity(state), before.state, "the original's state file was replaced");
        assertEquals(Deno.statSync(state).size, 258);
        // A real press now: Off. A phantom press while ours looked would have shown Off already,
        // and this one would show On.
        await originalButtonWaits(buttonPid, theirs);
        await press(fifo, theirs);
        await ledShows(theirs, "Off", since);
        assertEquals(ledStates(theirs), ["Off", "On", "Off"]);
      } finally {
        killIfRunning(buttonPid);
        killIfRunning(ledPid);
      }
    });
  },
);

testWith(
  [...NEEDS.system, requires("gcc")],
  "the original button started while ours runs replaces our FIFO: ours says so, leaves it, and makes its own once the path is free",
  async () => {
    await withTempDir(async (dir) => {
      const original = await buildC(dir, "original");
      const fifo = `${dir}/mmap_file`;
      const theirState = `${dir}/data.dat`;
      await using launcher = startLauncher(dir, ["--state", `${dir}/ours.dat`, "--fifo", fifo]);
      const pids = await running(launcher);
      try {
        const since = launcher.lines.length;
        const ours = identity(fifo);
        await using theirs = spawnProgram(original, ["button", theirState, fifo]);
        await originalButtonWaits(theirs.pid, theirs);
        const replaced = identity(fifo);
        assertNotEquals(replaced, ours);
        await launcher.waitFor(lineNaming(fifo, REPLACED), { since, timeoutMs: GUARD_MS });
        // A press through the path now belongs to the original button.
        await press(fifo, theirs);
        await until(() => stateValue(theirState) === 1, "the original button's press");
        assertEquals(identity(fifo), replaced, "ours replaced the original's FIFO");
        theirs.kill("SIGKILL");
        await theirs.status();
        // The original leaves its FIFO behind, and it is not ours to remove: once the user
        // removes it, the path is free for ours again.
        assertEquals(identity(fifo), replaced, "ours removed or replaced the original's FIFO");
        const removed = launcher.lines.length;
        Deno.removeSync(fifo);
        await launcher.waitFor(lineNaming(fifo, REMADE), { since: removed, timeoutMs: GUARD_MS });
        assert(Deno.lstatSync(fifo).isFifo, "our FIFO is not back at the free path");
        await press(fifo, launcher);
        await ledShows(launcher, "On", 0);
        assertEquals(
          ledStates(launcher),
          ["Off", "On"],
          "ours took a press meant for the original",
        );
        launcher.kill("SIGTERM");
        assertEquals((await launcher.status()).code, 0, launcher.transcript);
        assertEquals(identity(fifo), undefined, "our FIFO was left behind");
      } finally {
        await stopAll(launcher, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "our FIFO removed while the system runs: the button says so, makes a new one, and presses work",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      await using launcher = startLauncher(dir, ["--fifo", fifo]);
      const pids = await running(launcher);
      try {
        const since = launcher.lines.length;
        Deno.removeSync(fifo);
        await launcher.waitFor(lineNaming(fifo, REPLACED), { since, timeoutMs: GUARD_MS });
        await launcher.waitFor(lineNaming(fifo, REMADE), { since, timeoutMs: GUARD_MS });
        assert(Deno.lstatSync(fifo).isFifo, "no new FIFO at the path");
        await press(fifo, launcher);
        await ledShows(launcher, "On", since);
      } finally {
        await stopAll(launcher, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "our FIFO removed, then the button killed: the launcher made the new FIFO, the restarted button reads it, and the launcher removes it at exit",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      await using launcher = startLauncher(dir, ["--fifo", fifo]);
      const pids = await running(launcher);
      let restarted: number | undefined;
      try {
        let since = launcher.lines.length;
        const first = identity(fifo);
        Deno.removeSync(fifo);
        await launcher.waitFor(lineNaming(fifo, /launch: Made the FIFO .* again/), { since });
        await launcher.waitFor(lineNaming(fifo, REMADE), { since, timeoutMs: GUARD_MS });
        const second = identity(fifo);
        assert(second !== undefined && second !== first, "no new FIFO at the path");
        await press(fifo, launcher);
        await ledShows(launcher, "On", since);
        // Killed: a button that had made the FIFO itself could never have removed it.
        since = launcher.lines.length;
        Deno.kill(pids.button, "SIGKILL");
        const again = await launcher.waitFor(/Started button \(pid (\d+)\)/, { since });
        restarted = Number(again.match[1]);
        await launcher.waitFor(/Button ready/, { since: again.index });
        assertEquals(identity(fifo), second, "the restarted button changed the FIFO");
        await press(fifo, launcher);
        await ledShows(launcher, "Off", since);
        launcher.kill("SIGTERM");
        assertEquals((await launcher.status()).code, 0, launcher.transcript);
        assertEquals(identity(fifo), undefined, "the launcher left the FIFO it made behind");
      } finally {
        await stopAll(launcher, [pids.led, pids.button, restarted]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "a FIFO of the user's put in place of ours is read, and left where it is at exit",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      await using launcher = startLauncher(dir, ["--fifo", fifo]);
      const pids = await running(launcher);
      try {
        const since = launcher.lines.length;
        // In one step, as `mkfifo x.new && mv x.new x` does: the path is never free.
        makeFifo(`${fifo}.new`, 0o600);
        Deno.renameSync(`${fifo}.new`, fifo);
        const users = identity(fifo);
        await launcher.waitFor(lineNaming(fifo, REMADE), { since, timeoutMs: GUARD_MS });
        await press(fifo, launcher);
        await ledShows(launcher, "On", since);
        assertEquals(launcher.matching(/Made the FIFO/, since), [], launcher.transcript);
        launcher.kill("SIGTERM");
        assertEquals((await launcher.status()).code, 0, launcher.transcript);
        assertEquals(identity(fifo), users, "the launcher removed the user's FIFO");
      } finally {
        await stopAll(launcher, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "rm -rf of the FIFO's directory, made again by the user: the launcher makes the FIFO in it, and a second launcher on the path is refused naming the first",
  async () => {
    await withTempDir(async (dir) => {
      const directory = `${dir}/run`;
      Deno.mkdirSync(directory, { mode: 0o700 });
      const fifo = `${directory}/button.fifo`;
      await using first = startLauncher(dir, ["--fifo", fifo]);
      const pids = await running(first);
      try {
        const since = first.lines.length;
        await removeTree(directory);
        await first.waitFor(lineNaming(directory, /mkdir -m 700/), { since });
        Deno.mkdirSync(directory, { mode: 0o700 });
        await first.waitFor(lineNaming(fifo, REMADE), { since, timeoutMs: GUARD_MS });
        // Claims are keyed on the directory's inode: the first launcher claimed the new one.
        await using second = startLauncher(dir, ["--fifo", fifo]);
        const { code, stderr } = await second.status();
        assertEquals(code, 1, second.transcript);
        assertStringIncludes(stderr, `another launcher (pid ${first.pid}) is using the FIFO`);
        await press(fifo, first);
        await ledShows(first, "On", since);
      } finally {
        await stopAll(first, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "rm -rf of the FIFO's directory while the system runs: the button waits for it, nothing crashes, and presses work once it is back",
  async () => {
    await withTempDir(async (dir) => {
      const directory = `${dir}/run`;
      Deno.mkdirSync(directory, { mode: 0o700 });
      const fifo = `${directory}/button.fifo`;
      await using launcher = startLauncher(dir, ["--fifo", fifo]);
      const pids = await running(launcher);
      try {
        const since = launcher.lines.length;
        await removeTree(directory);
        await launcher.waitFor(lineNaming(directory, /mkdir -m 700/), {
          since,
          timeoutMs: GUARD_MS,
        });
        // The button crashed within a second each time it could not remake its FIFO before.
        await delay(2000);
        const state = processState(pids.button)?.state;
        assert(state !== undefined && state !== "Z", `the button is gone:\n${launcher.transcript}`);
        assert(
          !launcher.lines.slice(since).some((line) => /crash|exited|restart/i.test(line.text)),
          launcher.transcript,
        );
        Deno.mkdirSync(directory, { mode: 0o700 });
        await launcher.waitFor(lineNaming(fifo, REMADE), { since, timeoutMs: GUARD_MS });
        await press(fifo, launcher);
        await ledShows(launcher, "On", since);
      } finally {
        await stopAll(launcher, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  [...NEEDS.system, requires("gcc")],
  "a state file the original C LED maps is never unlinked or replaced: across two of our launchers, presses reach it",
  async () => {
    await withTempDir(async (dir) => {
      const original = await buildC(dir, "original");
      const state = `${dir}/data.dat`;
      const fifo = `${dir}/button.fifo`;
      const args = ["--state", state, "--fifo", fifo];
      await using first = startLauncher(dir, args);
      const firstPids = await running(first);
      const inode = identity(state);
      await using cLed = spawnProgram(original, ["led", state]);
      let since = await ledShows(cLed, "Off", 0);
      try {
        await press(fifo, first);
        since = await ledShows(cLed, "On", since);
        first.kill("SIGTERM");
        assertEquals((await first.status()).code, 0, first.transcript);
        assertEquals(identity(state), inode, "the launcher removed a state file the C LED maps");

        await using second = startLauncher(dir, args);
        const secondPids = await running(second);
        try {
          assertEquals(identity(state), inode, "the second launcher replaced the state file");
          // The new launcher may start the state afresh; the press must then flip what it shows.
          await until(
            () => ledStates(cLed).at(-1) === (stateValue(state) === 0 ? "Off" : "On"),
            "the C LED showing the state file's value",
            { child: cLed },
          );
          const shown = ledStates(cLed).at(-1) === "On" ? "Off" : "On";
          since = cLed.lines.length;
          await press(fifo, second);
          await ledShows(cLed, shown, since);
          second.kill("SIGTERM");
          assertEquals((await second.status()).code, 0, second.transcript);
          assertEquals(identity(state), inode, "the launcher removed a state file the C LED maps");
        } finally {
          await stopAll(second, [secondPids.led, secondPids.button]);
        }
      } finally {
        await stopAll(first, [firstPids.led, firstPids.button]);
      }
    });
  },
);

const encoder = new TextEncoder();
const WHOLE_TEXTS = TORN_WRITER_VALUES.map((value) => encoder.encode(`${value}\n\0`));

/** Whether the file starts with the whole text of a value the torn writer writes. */
function wholeText(path: string): boolean {
  const bytes = Deno.readFileSync(path);
  return WHOLE_TEXTS.some((text) => text.every((byte, i) => bytes[i] === byte));
}

/**
 * Starts a torn writer on a fresh cell file and SIGKILLs it in the middle of a write: it is
 * stopped (SIGSTOP) at random points until the text at offset 0 is caught half written (the
 * original's view of the file), and killed there; if that never happens, it is killed anyway.
 * Returns what a reader open all along and a reader opened afterwards read.
 */
async function killMidWrite(path: string): Promise<{ caught: boolean; reads: [string, number][] }> {
  using region = openFileRegion(path, { create: true, size: 256 });
  using allAlong = openStateCell(region);
  await using writer = spawnDeno(`${TESTS_DIR}fixtures/torn_writer.ts`, [path]);
  await writer.waitFor(/writing/, { timeoutMs: GUARD_MS });
  let caught = false;
  for (let attempt = 0; attempt < 200 && !caught; attempt++) {
    // Not synchronisation: lets the writer run on to a random point of its loop.
    await delay(Math.random() * 2);
    Deno.kill(writer.pid, "SIGSTOP");
    await until(() => processState(writer.pid)?.state === "T", "the writer stopped", {
      child: writer,
    });
    caught = !wholeText(path);
    if (!caught) Deno.kill(writer.pid, "SIGCONT");
  }
  writer.kill("SIGKILL");
  assertEquals((await writer.status()).signal, "SIGKILL");
  using again = openFileRegion(path);
  using after = openStateCell(again);
  return {
    caught,
    reads: [["a reader open all along", allAlong.read()], ["a reader opened after", after.read()]],
  };
}

testWith(
  NEEDS.system,
  "a writer SIGKILLed mid-write, 20 rounds: no reader ever returns a value nobody wrote",
  async () => {
    await withTempDir(async (dir) => {
      const written = new Set(TORN_WRITER_VALUES);
      const wrong: string[] = [];
      let caught = 0;
      for (let round = 1; round <= 20; round++) {
        const result = await killMidWrite(`${dir}/cell-${round}.dat`);
        if (result.caught) caught++;
        for (const [who, value] of result.reads) {
          if (!written.has(value)) wrong.push(`round ${round}, ${who}: ${value}`);
        }
      }
      assert(
        wrong.length === 0,
        `Values nobody wrote (the writer wrote only ${
          TORN_WRITER_VALUES.join(" and ")
        }; ${caught} of 20 kills landed with the text half written):\n${wrong.join("\n")}`,
      );
    });
  },
);
