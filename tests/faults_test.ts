/**
 * Faults on the files and in the supervisor (issue 13), as a user would cause them: the state
 * file shrunk, rewritten, removed or replaced under a running system, the --shm name removed or
 * replaced, two launchers at once, a SIGKILLed launcher, and a console that stalls or fails.
 * Real files, processes and signals; every wait is bounded as a guard against hangs.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import {
  closeFd,
  makeFifo,
  openPath,
  processState,
  readFileText,
  statPath,
  writeFd,
} from "../ffi/posix.ts";
import * as C from "../ffi/constants.ts";
import { openShmRegion, removeShm, STATE_FILE_SIZE } from "../mod.ts";
import { COMMAND_CHANNEL, EVENT_CHANNEL, openRemoteLink } from "../app/remote/link.ts";
import { HEAD, POSITION, TAIL } from "../lib/ring/layout.ts";
import { CHANNEL_RING } from "../app/remote/channel.ts";
import { nextRecordLength } from "./helpers/rings.ts";
import { claimRecordsMentioning } from "./helpers/claims.ts";
import { lineNaming } from "./helpers/assertions.ts";
import type { ChildProcess } from "./helpers/child_process.ts";
import { writeAndLeave } from "./helpers/fifo.ts";
import { NEEDS, requires, skippedWithoutRoot, testWith } from "./helpers/permissions.ts";
import { childrenOf, killIfRunning, openFdsTo, processGone } from "./helpers/proc.ts";
import { ROOT } from "./helpers/paths.ts";
import { buildC, spawnDeno, spawnProgram } from "./helpers/spawn.ts";
import {
  identity,
  KILLED_BY_SIGNAL,
  launcherCommand,
  LED_LINE,
  ledShows,
  pressAndSee,
  pressAsButtonDies,
  REPLACED,
  running,
  startButton,
  startedOrEnded,
  startLauncher,
  startLauncherAs,
  stateValue,
  stopAll,
  unusedUid,
} from "./helpers/system.ts";
import { removeTree, uniqueShmName, withMount, withShmName, withTempDir } from "./helpers/temp.ts";
import { delay, GUARD_MS, until, within } from "./helpers/waiting.ts";

/** How long SIGTERM may take to stop everything before the test calls it a hang. */
const STOP_GUARD_MS = 5_000;

/** Words that say the launcher found what a crashed launcher left behind. */
const LEFTOVER = /adopt|left ?over|left behind|stale|crash|dead|previous|earlier/;

/** Whether a POSIX shm name exists (without creating it). */
function shmExists(name: string): boolean {
  try {
    openShmRegion(name).close();
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Asserts that nothing the launcher relayed says a child of ours died by a signal. */
function assertNoSignalDeaths(launcher: ChildProcess): void {
  assertEquals(launcher.matching(KILLED_BY_SIGNAL), [], launcher.transcript);
}

/** SIGTERM, then the launcher must exit 0 within the guard, and its children be gone. */
async function stopCleanly(launcher: ChildProcess, children: number[]): Promise<void> {
  launcher.kill("SIGTERM");
  const status = await within(launcher.status(), STOP_GUARD_MS);
  assert(
    status !== undefined,
    `still running ${STOP_GUARD_MS} ms after SIGTERM:\n${launcher.transcript}`,
  );
  assertEquals(status.signal, null, launcher.transcript);
  assertEquals(status.code, 0, launcher.transcript);
  for (const pid of children) assert(processGone(pid), `child ${pid} outlived the launcher`);
}

/** Three presses after a fault: each toggles, the LED shows it, and the file holds it. */
async function pressesStillWork(
  launcher: ChildProcess,
  fifo: string,
  state?: string,
): Promise<void> {
  const seen: number[] = [];
  for (let i = 0; i < 3; i++) {
    const value = await pressAndSee(launcher, fifo);
    if (state !== undefined) {
      assertEquals(stateValue(state), value, `the state file disagrees:\n${launcher.transcript}`);
    }
    seen.push(value);
  }
  assert(
    seen[1] === 1 - seen[0] && seen[2] === seen[0],
    `presses did not toggle: ${seen.join(", ")}\n${launcher.transcript}`,
  );
}

/** Runs `script` with sh(1), `path` as its `$1`, as a user at a shell would; it must succeed. */
async function shell(script: string, path: string): Promise<void> {
  const sh = await new Deno.Command("sh", { args: ["-c", script, "sh", path] }).output();
  assert(sh.success, new TextDecoder().decode(sh.stderr));
}

/**
 * Writes "XXXX" at byte `offset` of `path` in place, as a user's `dd` into another process's
 * memfd through `/proc/PID/fd/N` would: the seals refuse growth and truncation, not this.
 */
function writeOver(path: string, offset: number): Promise<void> {
  return shell(`printf XXXX | dd of="$1" bs=1 seek=${offset} conv=notrunc status=none`, path);
}

/**
 * Starts a launcher in `dir` with `args`, waits until both children run and hands it to `fn`,
 * then requires a clean stop (see {@link stopCleanly}); stops everything, even when `fn` or the
 * stop failed.
 */
async function withLauncher(
  dir: string,
  args: string[],
  fn: (launcher: ChildProcess, pids: { led: number; button: number }) => Promise<void> | void,
): Promise<void> {
  await using launcher = startLauncher(dir, args);
  const pids = await running(launcher);
  try {
    await fn(launcher, pids);
    await stopCleanly(launcher, [pids.led, pids.button]);
  } finally {
    await stopAll(launcher, [pids.led, pids.button]);
  }
}

// --- the state file shrunk or rewritten under a running system ----------------------------------

for (const [fault, command] of [[": > state", ': > "$1"'], ["echo 1 > state", 'echo 1 > "$1"']]) {
  testWith(
    NEEDS.system,
    `${fault} under a running launcher: no process dies by a signal, the next presses toggle the LED`,
    async () => {
      await withTempDir(async (dir) => {
        const state = `${dir}/state`;
        const fifo = `${dir}/button.fifo`;
        const args = ["--state", state, "--fifo", fifo, "--log-level", "debug"];
        await withLauncher(dir, args, async (launcher) => {
          assertEquals(await pressAndSee(launcher, fifo), 1);
          await shell(command, state);
          await pressesStillWork(launcher, fifo, state);
          assertNoSignalDeaths(launcher);
        });
      });
    },
  );
}

/**
 * Runs `fn` with a launcher on a state file and a FIFO in a temporary directory, then stops it
 * cleanly, or at least stops it when `fn` failed.
 */
async function withStateLauncher(
  fn: (launcher: ChildProcess, state: string) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    const state = `${dir}/state`;
    const args = ["--state", state, "--fifo", `${dir}/button.fifo`];
    await withLauncher(dir, args, (launcher) => fn(launcher, state));
  });
}

testWith(
  NEEDS.system,
  "a value written 20 ms after the state file was emptied becomes the state; the emptying is not answered over it",
  () =>
    withStateLauncher(async (launcher, state) => {
      const since = launcher.lines.length;
      // `echo 1 > state` slowed down: the keeper sees the empty file well before the 1. Appended,
      // so a state written back at full size meanwhile would keep the 1 from offset 0.
      await shell(': > "$1"; sleep 0.02; printf 1 >> "$1"', state);
      await launcher.waitFor(/was set to 1 from outside/, { since, timeoutMs: GUARD_MS });
      await ledShows(launcher, "On", since);
      assertEquals(stateValue(state), 1, launcher.transcript);
      assert(!/was emptied/.test(launcher.transcript), launcher.transcript);
    }),
);

testWith(
  NEEDS.system,
  "echo garbage > state: the launcher says the file holds no state (not that it was emptied) and writes the state back",
  () =>
    withStateLauncher(async (launcher, state) => {
      const since = launcher.lines.length;
      await shell('echo garbage > "$1"', state);
      await launcher.waitFor(
        /holds no state now \(8 bytes of other text\); wrote the state \(0\) back/,
        {
          since,
          timeoutMs: GUARD_MS,
        },
      );
      assertEquals(stateValue(state), 0, launcher.transcript);
    }),
);

/**
 * A launcher's arguments with the MQTT bridge and no broker there: the bridge retries, and the
 * remote link is made all the same.
 */
function bridgedWithoutBroker(fifo: string): string[] {
  return ["--fifo", fifo, "--mqtt", "mqtt://127.0.0.1:1", "--log-level", "debug"];
}

/** The argument after `flag` on the command line of process `pid`. */
function argumentAfter(pid: number, flag: string): string {
  const args = (readFileText(`/proc/${pid}/cmdline`) ?? "").split("\0");
  const at = args.indexOf(flag);
  assert(at >= 0 && at + 1 < args.length, `no ${flag} in ${args.join(" ")}`);
  return args[at + 1];
}

testWith(
  NEEDS.system,
  "the launcher's state memfd written over through /proc/PID/fd/N: each child started again finds its header written anew, the state kept",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      await using launcher = startLauncher(dir, ["--fifo", fifo, "--log-level", "debug"]);
      const pids = await running(launcher);
      const restarted: number[] = [];
      try {
        assertEquals(await pressAndSee(launcher, fifo), 1);
        const memfd = argumentAfter(pids.led, "--memfd");
        /** The pid of the child's latest start (the LED may have been started again meanwhile). */
        const latest = (child: string): number => {
          const lines = launcher.matching(new RegExp(`Started ${child} \\(pid \\d+\\)`));
          return Number(/pid (\d+)/.exec(lines.at(-1) ?? "")?.[1]);
        };
        // Sealed against truncation, not against this. Before, the child started again could
        // not open the cell, nor the four after it, and the launcher stopped everything.
        for (
          const [child, offset, found, ready] of [
            ["button", 64, "found 0x58585858 at byte 64 where the magic", /Button ready/],
            ["led", 68, "its layout version is 1482184792", /LED Status: On/],
          ] as const
        ) {
          // An LED the last round started again (one that met the damaged magic while it waited
          // on the cell) is up before this round writes: else it may meet this round's damage
          // as it opens the cell, and exit for it.
          const ledStart = launcher.lines.findLastIndex((line) => /Started led/.test(line.text));
          await launcher.waitFor(/LED Status/, { since: ledStart, timeoutMs: GUARD_MS });
          const since = launcher.lines.length;
          await writeOver(memfd, offset);
          Deno.kill(latest(child), "SIGKILL");
          const started = new RegExp(`Started ${child} \\(pid (\\d+)\\)`);
          const { match } = await launcher.waitFor(started, { since, timeoutMs: GUARD_MS });
          restarted.push(Number(match[1]));
          // The LED started again shows On: the state was kept.
          await launcher.waitFor(ready, { since, timeoutMs: GUARD_MS });
          const warnings = launcher.matching(/wrote over the state memfd/, since);
          assertEquals(warnings.length, 1, launcher.transcript);
          // Before whichever child started again first: the LED, waiting on the cell, may have
          // met the damaged magic before the button's restart (see below).
          for (const words of [memfd, found, "state left as it was, before starting"]) {
            assertStringIncludes(warnings[0], words);
          }
        }
        // The one way a child may have ended by itself: the LED that met the magic written over
        // says so (InvalidData naming the header) and is started again once it is written anew.
        for (const line of launcher.matching(/exited with code|Cannot open/)) {
          assertMatch(line, /led exited with code 1/, launcher.transcript);
          assertMatch(launcher.transcript, /led: .*its header was overwritten \(found 0x58585858/);
        }
        restarted.push(
          ...launcher.matching(/Started led \(pid \d+\)/).map((line) =>
            Number(/pid (\d+)/.exec(line)?.[1])
          ),
        );
        assertEquals(await pressAndSee(launcher, fifo), 0, "the press after the repair toggles 1");
        assertEquals(await pressAndSee(launcher, fifo), 1);
        await stopCleanly(launcher, restarted);
      } finally {
        await stopAll(launcher, [pids.led, pids.button, ...restarted]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "the launcher's remote link memfd written over: the button started again finds both channels' ring headers, and its own ends' positions, written anew",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      await using launcher = startLauncher(dir, bridgedWithoutBroker(fifo));
      const pids = await running(launcher);
      let restarted: number | undefined;
      try {
        const link = argumentAfter(pids.button, "--remote");
        // The bridge opens both channels before it says this: written over earlier, it could not
        // open them at all (and crashed once, before the button's restart wrote them anew).
        await launcher.waitFor(/mmap-ipc\.mqtt: Bridging to/, { timeoutMs: GUARD_MS });
        const since = launcher.lines.length;
        // The command channel's ring magic and the position of the button's end (its consumer),
        // the press-event channel's ring version and the position of the bridge's end (its
        // consumer), which the bridge, running all along, never reads back: the button's
        // producer failed on it at every start.
        const ring = CHANNEL_RING;
        for (
          const offset of [
            COMMAND_CHANNEL.offset + ring,
            COMMAND_CHANNEL.offset + ring + TAIL,
            EVENT_CHANNEL.offset + ring + 4,
            EVENT_CHANNEL.offset + ring + TAIL,
          ]
        ) {
          await writeOver(link, offset);
        }
        Deno.kill(pids.button, "SIGKILL");
        const { match } = await launcher.waitFor(/Started button \(pid (\d+)\)/, {
          since,
          timeoutMs: GUARD_MS,
        });
        restarted = Number(match[1]);
        await launcher.waitFor(/Button ready/, { since, timeoutMs: GUARD_MS });
        const warnings = launcher.matching(/wrote over the remote link memfd/, since);
        assertEquals(warnings.length, 1, launcher.transcript);
        for (
          const words of [
            link,
            'its command channel: found 0x58585858 where the magic "RING" belongs',
            "its press-event channel: its layout version is 1482184792",
            "its command channel: its consumer position 1482184792 is not one of the ring's",
            "its press-event channel: its consumer position 1482184792 is not one of the ring's (multiples of 8 below 2048); set to the producer's",
            "before starting button again",
          ]
        ) {
          assertStringIncludes(warnings[0], words);
        }
        // Before, the button started again could not open the command channel, five times over,
        // and the launcher stopped everything.
        assertEquals(launcher.matching(/exited with code|Cannot open/), [], launcher.transcript);
        // The presses reach the bridge through the press-event channel, whose ends both run.
        assertEquals(await pressAndSee(launcher, fifo), 1);
        assertEquals(await pressAndSee(launcher, fifo), 0);
        assertEquals(
          launcher.matching(/exited with code|Cannot (open|use|read|send)/),
          [],
          launcher.transcript,
        );
        await stopCleanly(launcher, [pids.led, restarted]);
      } finally {
        await stopAll(launcher, [pids.led, pids.button, restarted]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "a press event written over in the remote link while both ends run: the bridge skips it and what waited behind it, says so, and takes the next press",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      // The bridge's first press that cannot be published is a warning: it shows that the press
      // reached the bridge.
      await using launcher = startLauncher(dir, bridgedWithoutBroker(fifo));
      const pids = await running(launcher);
      const { match } = await launcher.waitFor(/Started mqtt \(pid (\d+)\)/, {
        timeoutMs: GUARD_MS,
      });
      const bridge = Number(match[1]);
      try {
        await launcher.waitFor(/mmap-ipc\.mqtt: Bridging to/, { timeoutMs: GUARD_MS });
        using link = openRemoteLink(argumentAfter(pids.button, "--remote"));
        const ring = EVENT_CHANNEL.offset + CHANNEL_RING;
        const since = launcher.lines.length;
        // Stopped, the bridge leaves the press in the ring, where its length is written over.
        Deno.kill(bridge, "SIGSTOP");
        try {
          const length = nextRecordLength(link, ring, EVENT_CHANNEL.capacity);
          const head = link.loadInt32(ring + HEAD) & POSITION;
          assertEquals(await pressAndSee(launcher, fifo), 1);
          // The LED can show the press before the button has sent its event: written over
          // sooner, the length would be put back by the send.
          await until(() => (link.loadInt32(ring + HEAD) & POSITION) !== head, "the press sent");
          link.storeInt32(length, 0x58585858);
        } finally {
          Deno.kill(bridge, "SIGCONT");
        }
        await launcher.waitFor(
          /Skipped a press event written over in the remote link \(.*corrupted.*\): dropped it and what waited behind it \(16 bytes\)/,
          { since, timeoutMs: GUARD_MS },
        );
        assertEquals(launcher.matching(/not published/, since), [], "the press written over");
        assertEquals(await pressAndSee(launcher, fifo), 0);
        await launcher.waitFor(/A press was not published/, { since, timeoutMs: GUARD_MS });
        // Before, the bridge crashed on the record and was started again.
        assertEquals(
          launcher.matching(/exited with code|Started mqtt/, since),
          [],
          launcher.transcript,
        );
        await stopCleanly(launcher, [pids.led, pids.button, bridge]);
      } finally {
        await stopAll(launcher, [pids.led, pids.button, bridge]);
      }
    });
  },
);

testWith(
  [...NEEDS.system, requires("mount"), requires("umount")],
  ": > state on a full file system: the state cannot be written back, which the button says, naming the path and ENOSPC, once until it can write the file again, which it says too; it does not exit, presses go on, and the file has the state once there is room",
  async (t) => {
    if (await skippedWithoutRoot(t, "to mount a small tmpfs")) return;
    await withTempDir(async (dir) => {
      await withMount(dir, "tmpfs", async (small) => {
        const state = `${small}/state`;
        const fifo = `${dir}/button.fifo`;
        const args = ["--state", state, "--fifo", fifo, "--log-level", "debug"];
        await withLauncher(dir, args, async (launcher) => {
          const since = launcher.lines.length;
          // Every block but the state file's taken, then that one freed and taken too.
          await shell('cat /dev/zero > "$1/fill" 2>/dev/null; :', small);
          await shell(': > "$1"; cat /dev/zero > "$(dirname "$1")/more" 2>/dev/null; :', state);
          await launcher.waitFor(/was emptied; could not write the state \(0\) back: .*ENOSPC/, {
            since,
            timeoutMs: GUARD_MS,
          });
          const cannot = /\[(WRN|DBG)\] .*Cannot write ".*\/state": no space left.*\(ENOSPC\)/;
          const said = (): string[] =>
            launcher.lines.slice(since).map((line) => line.text)
              .filter((text) => cannot.test(text) && !text.includes("was emptied"));
          assertEquals(await pressAndSee(launcher, fifo), 1);
          assertEquals(await pressAndSee(launcher, fifo), 0);
          assertEquals(await pressAndSee(launcher, fifo), 1);
          // Once as a warning, then at debug level: not at every press.
          await until(() => said().length === 3, "each failed write said", { timeoutMs: GUARD_MS });
          assertEquals(said().map((text) => text.match(cannot)?.[1]), ["WRN", "DBG", "DBG"]);
          Deno.removeSync(`${small}/more`);
          assertEquals(await pressAndSee(launcher, fifo), 0);
          await until(() => stateValue(state) === 0, "the state in the file again");
          await launcher.waitFor(/\[INF\] .*The state file ".*\/state" is written again/, {
            since,
            timeoutMs: GUARD_MS,
          });
          const restarts = launcher.lines.slice(since).filter((line) => /Started /.test(line.text));
          assertEquals(restarts, [], launcher.transcript);
        });
      }, "size=16k");
    });
  },
);

testWith(
  NEEDS.system,
  "echo 1 > state and echo 0 > state, 20 times over: the state follows each, none is undone",
  () =>
    withStateLauncher(async (launcher, state) => {
      let since = launcher.lines.length;
      for (let i = 0; i < 20; i++) {
        // The truncation is a change too: the write that follows it must not be undone.
        const value = i % 2 === 0 ? 1 : 0;
        await shell(`echo ${value} > "$1"`, state);
        // The button's answer comes after its own write of the file, which a write started
        // sooner could land under.
        const answer = await launcher.waitFor(new RegExp(`was set to ${value} from outside`), {
          since,
          timeoutMs: GUARD_MS,
        });
        since = Math.max(
          await ledShows(launcher, value === 1 ? "On" : "Off", since),
          answer.index + 1,
        );
        assertEquals(stateValue(state), value, launcher.transcript);
      }
    }),
);

testWith(
  NEEDS.system,
  "echo 1 > a --state file in / (shaped like a shm name, /NAME.dat): the state follows it, and nothing is said to be removed",
  async (t) => {
    if (await skippedWithoutRoot(t, "to make a file in /")) return;
    await withTempDir(async (dir) => {
      // A name nothing uses, neither in / nor in /dev/shm.
      const name = `${uniqueShmName()}.dat`;
      assertEquals(identity(name), undefined);
      assertEquals(identity(`/dev/shm${name}`), undefined);
      const fifo = `${dir}/button.fifo`;
      let made: string | undefined;
      try {
        await withLauncher(dir, ["--state", name, "--fifo", fifo], async (launcher) => {
          made = identity(name);
          await shell('echo 1 > "$1"', name);
          await launcher.waitFor(/was set to 1 from outside; the state follows it/, {
            timeoutMs: GUARD_MS,
          });
          await ledShows(launcher, "On", 0);
          assertEquals(launcher.matching(/was (removed|replaced)/).length, 0, launcher.transcript);
        });
      } finally {
        // Only the file the launcher made, if it is still there.
        if (made !== undefined && identity(name) === made) Deno.removeSync(name);
      }
    });
  },
);

// --- the state file or the shm name removed or replaced, then the button killed ------------------

/** One way to take the state's name away from a running system. */
interface PathFault {
  name: string;
  /** The launcher's flag for the state. */
  flag: "--state" | "--shm";
  /** Removes or replaces the state's name; returns the replacement's content, if any. */
  apply(where: string): Uint8Array | undefined;
  /** What the name holds afterwards: its bytes, or undefined when nothing is there. */
  read(where: string): Uint8Array | undefined;
}

/** What a user might put in place of the state: the original's 258-byte file holding 0. */
function replacement(): Uint8Array {
  const bytes = new Uint8Array(258);
  bytes.set(new TextEncoder().encode("0\n\0"));
  return bytes;
}

function readFileOrNothing(path: string): Uint8Array | undefined {
  return identity(path) === undefined ? undefined : Deno.readFileSync(path);
}

function readShmOrNothing(name: string): Uint8Array | undefined {
  if (!shmExists(name)) return undefined;
  using region = openShmRegion(name);
  return region.read(0, region.size);
}

const PATH_FAULTS: PathFault[] = [
  {
    name: "rm of the state file",
    flag: "--state",
    apply: (path) => (Deno.removeSync(path), undefined),
    read: readFileOrNothing,
  },
  {
    name: "replace of the state file",
    flag: "--state",
    apply: (path) => {
      const bytes = replacement();
      Deno.writeFileSync(`${path}.new`, bytes, { mode: 0o600 });
      Deno.renameSync(`${path}.new`, path);
      return bytes;
    },
    read: readFileOrNothing,
  },
  {
    name: "rm of the --shm name",
    flag: "--shm",
    apply: (name) => (removeShm(name), undefined),
    read: readShmOrNothing,
  },
  {
    name: "replace of the --shm name",
    flag: "--shm",
    apply: (name) => {
      removeShm(name);
      using region = openShmRegion(name, { create: true, exclusive: true, size: 258 });
      region.write(0, replacement());
      return region.read(0, region.size);
    },
    read: readShmOrNothing,
  },
];

for (const fault of PATH_FAULTS) {
  testWith(
    NEEDS.system,
    `${fault.name} while running, then the button killed: it is reported, and the restarted button and the LED still agree`,
    async () => {
      await withTempDir(async (dir) => {
        await withShmName(async (shm) => {
          const where = fault.flag === "--state" ? `${dir}/state.dat` : shm;
          const fifo = `${dir}/button.fifo`;
          await using launcher = startLauncher(dir, [
            fault.flag,
            where,
            "--fifo",
            fifo,
            "--log-level",
            "debug",
          ]);
          const pids = await running(launcher);
          let restarted: number | undefined;
          try {
            assertEquals(await pressAndSee(launcher, fifo), 1);
            const since = launcher.lines.length;
            const put = fault.apply(where);
            Deno.kill(pids.button, "SIGKILL");
            const again = await launcher.waitFor(/Started button \(pid (\d+)\)/, {
              since,
              timeoutMs: GUARD_MS,
            });
            restarted = Number(again.match[1]);
            await launcher.waitFor(/Button ready/, { since: again.index, timeoutMs: GUARD_MS });
            await pressesStillWork(launcher, fifo);
            // The button's report: the LED names the path too once its button dies.
            const said = await launcher.waitFor(
              new RegExp(`mmap-ipc\\.button: ${lineNaming(where, REPLACED).source.slice(1)}`, "i"),
              { since, timeoutMs: GUARD_MS },
            );
            // A shm name is called one, not a file at a path under `/`.
            if (fault.flag === "--shm") {
              assertStringIncludes(
                said.match.input,
                `shared memory state "${where}" (/dev/shm${where})`,
              );
            }
            assertEquals(fault.read(where), put, "the system wrote to what is now at the path");
            await stopCleanly(launcher, [pids.led, restarted]);
            assertEquals(
              fault.read(where),
              put,
              "the launcher removed or changed what it does not own",
            );
          } finally {
            await stopAll(launcher, [pids.led, pids.button, restarted]);
          }
        });
      });
    },
  );
}

// --- two launchers at once -----------------------------------------------------------------------

/** One launcher in a race for the same --state. */
interface Contender {
  /** Holds the launcher's output. */
  child: ChildProcess;
  /** The launcher's pid. */
  pid: number;
  /** Its --fifo. */
  fifo: string;
  /** Resolves when the launcher has ended: its exit code, or the signal that ended it. */
  ended(): Promise<number | string>;
}

function direct(child: ChildProcess, fifo: string): Contender {
  return {
    child,
    pid: child.pid,
    fifo,
    ended: () => child.status().then((status) => status.signal ?? status.code),
  };
}

/** A launcher run by a fixture that prints `pid N` and, at the end, `exit N` or `signal N`. */
async function wrapped(child: ChildProcess, fifo: string): Promise<Contender> {
  const pid = Number((await child.waitFor(/^pid (\d+)$/, { timeoutMs: GUARD_MS })).match[1]);
  return {
    child,
    pid,
    fifo,
    ended: async () => {
      await child.status();
      const last = child.matching(/^(exit|signal) \d+$/).at(-1) ?? "no status";
      return last.startsWith("exit ") ? Number(last.slice(5)) : last;
    },
  };
}

/**
 * Exactly one of two contenders runs, on the file at `state`; the other ends with code 1 naming
 * the state and leaves nothing; after the winner's SIGTERM nothing is left at all. Adds every
 * child pid it learns to `pids`, for the caller's clean-up.
 */
async function oneRunsOnThePath(
  round: number,
  state: string,
  contenders: Contender[],
  pids: number[],
): Promise<void> {
  const first = await within(
    Promise.race(contenders.map((contender, i) => contender.ended().then(() => i))),
    GUARD_MS,
  );
  const both = contenders.map((c) => c.child.transcript).join("\n---\n");
  assert(first !== undefined, `round ${round}: neither launcher refused:\n${both}`);
  const loser = contenders[first];
  const winner = contenders[1 - first];
  assertEquals(await loser.ended(), 1, `round ${round}, the loser:\n${loser.child.transcript}`);
  assertStringIncludes(
    loser.child.transcript,
    state,
    `round ${round}: the refusal names the state`,
  );
  const started = await running(winner.child);
  pids.push(started.led, started.button);
  assertEquals(identity(loser.fifo), undefined, `round ${round}: the loser left its FIFO`);
  const inode = identity(state);
  assert(inode !== undefined, `round ${round}: no state file at the path:\n${both}`);
  const value = await pressAndSee(winner.child, winner.fifo);
  assertEquals(identity(state), inode, `round ${round}: the state file was replaced`);
  assertEquals(stateValue(state), value, `round ${round}: the winner's children use another file`);
  Deno.kill(winner.pid, "SIGTERM");
  const code = await within(winner.ended(), STOP_GUARD_MS);
  assertEquals(code, 0, `round ${round}, the winner:\n${winner.child.transcript}`);
  for (const pid of [started.led, started.button]) {
    assert(processGone(pid), `round ${round}: child ${pid} outlived the launcher`);
  }
  assertEquals(identity(state), undefined, `round ${round}: the state file was left behind`);
  assertEquals(identity(winner.fifo), undefined, `round ${round}: a FIFO was left behind`);
}

function raceArgs(state: string, fifo: string): string[] {
  return ["--state", state, "--fifo", fifo, "--log-level", "debug"];
}

const RACE_ROUNDS = 8;

testWith(
  NEEDS.system,
  `two launchers started at the same instant on one --state, ${RACE_ROUNDS} rounds: one runs on the file at the path, the other leaves nothing`,
  async () => {
    await withTempDir(async (dir) => {
      const state = `${dir}/state.dat`;
      for (let round = 1; round <= RACE_ROUNDS; round++) {
        const contenders = [`${dir}/a.fifo`, `${dir}/b.fifo`].map((fifo) =>
          direct(startLauncher(dir, raceArgs(state, fifo)), fifo)
        );
        const pids: number[] = [];
        try {
          await oneRunsOnThePath(round, state, contenders, pids);
        } finally {
          for (const contender of contenders) await stopAll(contender.child, pids);
        }
      }
    });
  },
);

testWith(
  [...NEEDS.system, requires("gcc")],
  "two launchers on one --state, the first frozen the instant it first writes the state file by its name (the worst interleaving), 3 rounds: one runs on the file at the path, the other leaves nothing",
  async () => {
    await withTempDir(async (dir) => {
      const freeze = await buildC(dir, "freeze_on_write");
      const state = `${dir}/state.dat`;
      for (let round = 1; round <= 3; round++) {
        const fifos = [`${dir}/a.fifo`, `${dir}/b.fifo`];
        await using frozen = spawnProgram(freeze, [
          dir,
          "state.dat",
          ...launcherCommand(raceArgs(state, fifos[0])),
        ]);
        const pids: number[] = [];
        let contenders: Contender[] = [];
        try {
          const first = await wrapped(frozen, fifos[0]);
          await frozen.waitFor(/^frozen$/, { timeoutMs: GUARD_MS });
          const second = direct(startLauncher(dir, raceArgs(state, fifos[1])), fifos[1]);
          contenders = [first, second];
          // The second launcher gets as far as it can (its LED and button run, or it refuses)
          // before the first one continues.
          await running(second.child).catch(() => {});
          Deno.kill(first.pid, "SIGCONT");
          await oneRunsOnThePath(round, state, contenders, pids);
        } finally {
          for (const contender of contenders) {
            killIfRunning(contender.pid);
            await stopAll(contender.child, pids);
          }
        }
      }
    });
  },
);

// --- a SIGKILLed launcher and what it leaves -----------------------------------------------------

/** SIGKILLs `launcher` and waits until it and its `children` are gone. */
async function killLauncher(
  launcher: ChildProcess,
  children: { led: number; button: number },
): Promise<void> {
  launcher.kill("SIGKILL");
  await launcher.status();
  await until(
    () => processGone(children.led) && processGone(children.button),
    "the dead launcher's children gone",
    { timeoutMs: STOP_GUARD_MS },
  );
}

for (const unnamed of ["made", "refused"] as const) {
  for (const flag of ["--state", "--shm"] as const) {
    const name = unnamed === "made"
      ? `SIGKILL of a launcher with ${flag}: its children exit, the next launcher takes over the leftovers in one line and leaves nothing`
      : `where no unnamed file can be made (O_TMPFILE refused with EOPNOTSUPP), a launcher with ${flag} makes it at its path and records it: killed (SIGKILL), the next launcher takes it over and leaves nothing`;
    testWith(
      unnamed === "made" ? NEEDS.system : [...NEEDS.system, requires("gcc")],
      name,
      async () => {
        await withTempDir(async (dir) => {
          await withShmName(async (shm) => {
            const where = flag === "--state" ? `${dir}/state.dat` : shm;
            const exists = (): boolean =>
              flag === "--state" ? identity(where) !== undefined : shmExists(where);
            const fifo = `${dir}/button.fifo`;
            const args = [flag, where, "--fifo", fifo, "--log-level", "debug"];
            // The filter is inherited: the children cannot make unnamed files either.
            await using crashed = unnamed === "made"
              ? startLauncher(dir, args)
              : spawnProgram(await buildC(dir, "refuse_unnamed_files"), launcherCommand(args), {
                cwd: dir,
              });
            const old = await running(crashed);
            try {
              assertEquals(await pressAndSee(crashed, fifo), 1);
              await killLauncher(crashed, old);
              assert(exists(), `${where} was not made, or not left by the killed launcher`);
              const left = [where, fifo].filter((path) =>
                path === where ? exists() : identity(path) !== undefined
              );

              await withLauncher(dir, args, async (next) => {
                for (const path of left) {
                  await next.waitFor(lineNaming(path, LEFTOVER), { timeoutMs: GUARD_MS });
                }
                await pressAndSee(next, fifo);
              });
              assertEquals(identity(fifo), undefined, "the FIFO was left behind");
              assert(!exists(), `${where} was left behind`);
            } finally {
              await stopAll(crashed, [old.led, old.button]);
            }
          });
        });
      },
    );
  }
}

testWith(
  NEEDS.system,
  "a launcher sent SIGTERM again and again while it stops (a supervisor's second signal) still stops cleanly: exit 0, its claims and its FIFO removed",
  async () => {
    await withTempDir(async (dir) => {
      const claims = (): string[] => claimRecordsMentioning(`"${dir}/`);
      const fifo = `${dir}/button.fifo`;
      await using launcher = startLauncher(dir, ["--state", `${dir}/s.dat`, "--fifo", fifo]);
      const pids = await running(launcher);
      try {
        assertEquals(claims().length, 4, "a claim per path and per file");
        const exited = launcher.status();
        let ended = false;
        void exited.then(() => ended = true);
        // Every 2 ms until it is gone: some land while it is letting go of its paths.
        while (!ended) {
          launcher.kill("SIGTERM");
          await delay(2);
        }
        const status = await exited;
        assertEquals(status.signal, null, launcher.transcript);
        assertEquals(status.code, 0, launcher.transcript);
        assertEquals(claims(), [], "claims a launcher stopping cleanly left behind");
        assertEquals(statPath(fifo), undefined, "the FIFO it made is left behind");
      } finally {
        await stopAll(launcher, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "a SIGKILLed launcher's claims are swept by the next launcher once nothing of it is left to adopt",
  async () => {
    await withTempDir(async (dir) => {
      // The records in the claims directory for paths in this test's directory.
      const claims = (): string[] => claimRecordsMentioning(`"${dir}/`);
      const gone = ["--state", `${dir}/gone.dat`, "--fifo", `${dir}/gone.fifo`];
      await using crashed = startLauncher(dir, gone);
      const old = await running(crashed);
      try {
        assertEquals(claims().length, 4, "a claim per path and per file");
        await killLauncher(crashed, old);
        assertEquals(claims().length, 4, "a killed launcher cannot remove its claims");
        // Another launcher's sweep keeps them while the files are there to be adopted.
        await withTempDir(async (elsewhere) => {
          const paths = ["--state", `${elsewhere}/s.dat`, "--fifo", `${elsewhere}/b.fifo`];
          await withLauncher(elsewhere, paths, () => {
            assertEquals(claims().length, 4, "another launcher swept what was left to adopt");
          });
        });
        // The user cleans up what it left: nothing is left to adopt, so its claims go too.
        Deno.removeSync(`${dir}/gone.dat`);
        Deno.removeSync(`${dir}/gone.fifo`);
        await withLauncher(dir, ["--fifo", `${dir}/next.fifo`], () => {
          // The new launcher's FIFO, by path and by inode.
          assertEquals(claims().length, 2, "the dead launcher's claims were kept");
        });
        assertEquals(claims(), [], "a launcher that stopped cleanly left a claim");
      } finally {
        await stopAll(crashed, [old.led, old.button]);
      }
    });
  },
);

/**
 * The system calls a launcher is killed at (SIGSYS, through `kill_at_syscall`), between making
 * its state file and naming it: the first ftruncate to the state file's size, which sets up the
 * new file, and the linkat(2) that names it.
 */
const KILL_POINTS = [
  { call: "ftruncate", arg: String(STATE_FILE_SIZE), when: "as it sets up the file it made" },
  { call: "linkat", arg: "-", when: "just before it names the file it made" },
] as const;

for (const flag of ["--state", "--shm"] as const) {
  for (const { call, arg, when } of KILL_POINTS) {
    testWith(
      [...NEEDS.system, requires("gcc")],
      `a launcher with ${flag} killed ${when} (at ${call}) leaves nothing the next launcher keeps as the user's: it starts, and leaves nothing when it stops`,
      async () => {
        await withTempDir(async (dir) => {
          await withShmName(async (shm) => {
            const where = flag === "--state" ? `${dir}/state.dat` : shm;
            // By its path: a shm object left empty is refused by openShmRegion().
            const exists = (): boolean =>
              identity(flag === "--state" ? where : `/dev/shm${where}`) !== undefined;
            const fifo = `${dir}/button.fifo`;
            const args = [flag, where, "--fifo", fifo];
            const killAt = await buildC(dir, "kill_at_syscall");
            // The filter is inherited: the call must come before any child starts.
            await using killed = spawnProgram(killAt, [call, arg, ...launcherCommand(args)], {
              cwd: dir,
            });
            const status = await killed.status({ timeoutMs: 3 * GUARD_MS });
            assertEquals(status.signal, "SIGSYS", killed.transcript);
            assertEquals(killed.matching(/Started/), [], "a child started under the filter");
            // Before, the file was named as it was made and recorded later: killed in between,
            // it was left unrecorded, and every later launcher kept it as the user's.
            const leftByKilled = exists();
            const records = claimRecordsMentioning(JSON.stringify(where))
              .map((text) => JSON.parse(text) as { kind: string; identity?: string });
            await withLauncher(dir, args, (next) => {
              assertEquals(next.matching(/there already/), [], next.transcript);
            });
            assert(!exists(), `${where} was left behind`);
            assertEquals(identity(fifo), undefined, "the FIFO was left behind");
            assertEquals(claimRecordsMentioning(`"${dir}/`, JSON.stringify(shm)), []);
            assert(!leftByKilled, `the killed launcher left ${where}, unnamed in its record`);
            if (call === "linkat") {
              // Recorded before it was named: had it been named, the next launcher adopts it.
              assert(
                records.some((record) => record.kind !== "FIFO" && record.identity !== undefined),
                `no identity recorded before the link: ${JSON.stringify(records)}`,
              );
            }
          });
        });
      },
    );
  }
}

testWith(
  NEEDS.system,
  "a press written while no launcher ran (echo 0 > FIFO makes a file): the next launcher refuses it, says how to remove it, and leaves it",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      await spawnProgram("sh", ["-c", `echo 0 > '${fifo}'`]).status();
      await using launcher = startLauncher(dir, ["--fifo", fifo]);
      const status = await launcher.status();
      assertEquals(status.code, 1, launcher.transcript);
      assertStringIncludes(status.stderr, "it is a regular file, not a FIFO");
      assertStringIncludes(status.stderr, `remove it (rm ${fifo}) and start again`);
      assertEquals(Deno.readTextFileSync(fifo), "0\n", "the file was changed");
    });
  },
);

testWith(
  NEEDS.system,
  "a --fifo mistyped onto a file of the user's (not presses) is refused and left, with no rm to copy",
  async () => {
    await withTempDir(async (dir) => {
      const notes = `${dir}/notes.txt`;
      Deno.writeTextFileSync(notes, "Shopping: milk, eggs\n");
      await using launcher = startLauncher(dir, ["--fifo", notes]);
      const status = await launcher.status();
      assertEquals(status.code, 1, launcher.transcript);
      assertStringIncludes(status.stderr, "it is a regular file, not a FIFO");
      assertStringIncludes(status.stderr, "It holds 21 bytes that are not presses");
      assertStringIncludes(status.stderr, "give another --fifo PATH");
      assert(!status.stderr.includes("rm "), status.stderr);
      assertEquals(Deno.readTextFileSync(notes), "Shopping: milk, eggs\n", "the file was changed");
    });
  },
);

testWith(
  NEEDS.system,
  "a file at the --state path that is not provably ours is refused, named, and left exactly as it was",
  async () => {
    await withTempDir(async (dir) => {
      const state = `${dir}/notes.txt`;
      const fifo = `${dir}/button.fifo`;
      const notes = new TextEncoder().encode("Shopping: milk, eggs\n");
      Deno.writeFileSync(state, notes, { mode: 0o600 });
      await using launcher = startLauncher(dir, ["--state", state, "--fifo", fifo]);
      const outcome = await startedOrEnded(launcher, /Started (led|button)/);
      try {
        assertEquals(
          outcome,
          "ended",
          `the launcher ran on a file that is not ours:\n${launcher.transcript}`,
        );
        const status = await launcher.status();
        assertEquals(status.code, 1, launcher.transcript);
        assertStringIncludes(status.stderr, state);
        assertEquals(Deno.readFileSync(state), notes, "the file was changed");
        assertEquals(identity(fifo), undefined, "the refused launcher left its FIFO");
      } finally {
        await stopAll(launcher, childrenOf(launcher.pid));
      }
    });
  },
);

testWith(
  NEEDS.system,
  "shared memory at the --shm name that is not provably ours is refused as shared memory, named as given, and left exactly as it was",
  async () => {
    await withTempDir(async (dir) => {
      await withShmName(async (shm) => {
        const notes = new TextEncoder().encode("Shopping: milk, eggs\n");
        {
          using theirs = openShmRegion(shm, { create: true, exclusive: true, size: notes.length });
          theirs.write(0, notes);
        }
        const fifo = `${dir}/button.fifo`;
        await using launcher = startLauncher(dir, ["--shm", shm, "--fifo", fifo]);
        const outcome = await startedOrEnded(launcher, /Started (led|button)/);
        try {
          assertEquals(
            outcome,
            "ended",
            `the launcher ran on shared memory not ours:\n${launcher.transcript}`,
          );
          const status = await launcher.status();
          assertEquals(status.code, 1, launcher.transcript);
          // Not 'state file "/NAME"': a shm name is no path under /.
          assertStringIncludes(status.stderr, `Cannot open shared memory ${JSON.stringify(shm)}`);
          using still = openShmRegion(shm);
          assertEquals(still.read(0, still.size), notes, "the shared memory was changed");
        } finally {
          await stopAll(launcher, childrenOf(launcher.pid));
        }
      });
    });
  },
);

// --- a press in flight when the button dies ------------------------------------------------------

testWith(
  NEEDS.system,
  "a press written just before the button dies is not lost: the launcher holds the FIFO open, and the restarted button reads it without taking the launcher for another reader",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      await using launcher = startLauncher(dir, ["--fifo", fifo, "--state", `${dir}/data.dat`]);
      const pids = await running(launcher);
      let restarted: number | undefined;
      try {
        const since = launcher.lines.length;
        restarted = await pressAsButtonDies(launcher, pids.button, fifo);
        await ledShows(launcher, "On", since);
        assertEquals(launcher.matching(/reads it|not a press/), [], launcher.transcript);
        // And one written while no button runs at all waits for the next (it was refused).
        const next = launcher.lines.length;
        const last = restarted;
        Deno.kill(last, "SIGKILL");
        await until(() => processGone(last), "the restarted button gone");
        await writeAndLeave(fifo, "0\n");
        restarted = Number(
          (await launcher.waitFor(/Started button \(pid (\d+)\)/, { since: next })).match[1],
        );
        await ledShows(launcher, "Off", next);
        await stopCleanly(launcher, [pids.led, restarted]);
        assertEquals(statPath(fifo), undefined, "the FIFO was left behind");
      } finally {
        await stopAll(launcher, [pids.led, pids.button, restarted]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "a user's FIFO put in place of the launcher's while it runs is held too: a press written just before the button dies is not lost, and the user's FIFO is left at exit",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      await using launcher = startLauncher(dir, ["--fifo", fifo, "--state", `${dir}/data.dat`]);
      const pids = await running(launcher);
      let restarted: number | undefined;
      try {
        let since = launcher.lines.length;
        makeFifo(`${fifo}.new`, 0o600);
        Deno.renameSync(`${fifo}.new`, fifo);
        const users = identity(fifo);
        await launcher.waitFor(/is one this button may read now/, { since });
        since = launcher.lines.length;
        restarted = await pressAsButtonDies(launcher, pids.button, fifo);
        await ledShows(launcher, "On", since);
        await stopCleanly(launcher, [pids.led, restarted]);
        assertEquals(identity(fifo), users, "the user's FIFO was removed or replaced");
      } finally {
        await stopAll(launcher, [pids.led, pids.button, restarted]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "a FIFO that leaves the path is let go: a writer still holding it hears EPIPE once the button has left it too, rather than write into it for nobody",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      await using launcher = startLauncher(dir, ["--fifo", fifo]);
      const pids = await running(launcher);
      const writer = openPath(fifo, C.O_WRONLY | C.O_NONBLOCK | C.O_CLOEXEC, 0, "write FIFO");
      try {
        const since = launcher.lines.length;
        // A user's file put at the path: the button leaves the FIFO it read.
        Deno.writeTextFileSync(`${dir}/notes`, "notes\n");
        Deno.renameSync(`${dir}/notes`, fifo);
        await launcher.waitFor(/button\.fifo" was replaced by/, { since });
        const press = new TextEncoder().encode("0\n");
        await until(() => {
          try {
            writeFd(writer, press, fifo);
            return false;
          } catch (error) {
            return error instanceof Deno.errors.BrokenPipe;
          }
        }, "EPIPE for the writer of the FIFO that left");
        assertEquals(Deno.readTextFileSync(fifo), "notes\n", "the user's file was touched");
      } finally {
        closeFd(writer);
        await stopAll(launcher, [pids.led, pids.button]);
      }
    });
  },
);

// --- a writer that never stops -------------------------------------------------------------------

testWith(
  [...NEEDS.system, requires("yes")],
  "a writer that keeps the FIFO full: the button still applies presses and stops on SIGTERM",
  async () => {
    await withTempDir(async (dir) => {
      const state = `${dir}/data.dat`;
      const fifo = `${dir}/button.fifo`;
      await using button = await startButton(state, fifo);
      // yes(1) writes "0\n" as fast as the button reads: the FIFO is never empty.
      const flood = new Deno.Command("sh", {
        args: ["-c", 'exec yes 0 > "$1"', "sh", fifo],
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        await until(() => stateValue(state) === 1, "a press applied during the flood", {
          child: button,
        });
        button.kill("SIGTERM");
        const status = await button.status({ timeoutMs: GUARD_MS });
        assertEquals(status.code, 0, button.transcript);
      } finally {
        killIfRunning(flood.pid);
        await flood.status;
      }
    });
  },
);

// --- a console that stalls or fails --------------------------------------------------------------

/** Starts our launcher through stdout_trap; returns the trap and the launcher's pid. */
async function launchBehind(
  trap: string,
  mode: "stall" | "full" | "closed",
  args: string[],
): Promise<{ trap: ChildProcess; pid: number }> {
  const child = spawnProgram(trap, [mode, ...launcherCommand(args)]);
  const pid = Number((await child.waitFor(/^pid (\d+)$/, { timeoutMs: GUARD_MS })).match[1]);
  return { trap: child, pid };
}

/** Writes one press into `fifo`, retrying while the launcher is not yet there to read it. */
async function pressWhenReady(fifo: string, trap: ChildProcess): Promise<void> {
  const started = performance.now();
  for (;;) {
    try {
      return await writeAndLeave(fifo, "0\n");
    } catch (error) {
      if (performance.now() - started > GUARD_MS) {
        throw new Error(
          `Cannot press through ${fifo}: ${(error as Error).message}\n${trap.transcript}`,
        );
      }
      await delay(10);
    }
  }
}

/** Presses through `fifo` `count` times, each time until the state file has toggled. */
async function pressByFile(
  fifo: string,
  state: string,
  count: number,
  trap: ChildProcess,
): Promise<void> {
  for (let i = 0; i < count; i++) {
    const expected = 1 - stateValue(state);
    await pressWhenReady(fifo, trap);
    await until(() => stateValue(state) === expected, `press ${i + 1} in the state file`, {
      child: trap,
    });
  }
}

testWith(
  [...NEEDS.system, requires("gcc")],
  "stdout a pipe nobody reads: presses still count, and SIGTERM stops everything within the guard",
  async () => {
    await withTempDir(async (dir) => {
      const trapProgram = await buildC(dir, "stdout_trap");
      const state = `${dir}/state.dat`;
      const fifo = `${dir}/button.fifo`;
      const { trap, pid } = await launchBehind(trapProgram, "stall", [
        "--state",
        state,
        "--fifo",
        fifo,
        "--log-level",
        "debug",
      ]);
      await using _trap = trap;
      let children: number[] = [];
      try {
        await until(() => identity(state) !== undefined, "the state file", { child: trap });
        // Each press logs two lines or more (about 150 bytes): 60 fill the one-page pipe twice.
        await pressByFile(fifo, state, 60, trap);
        children = childrenOf(pid);
        Deno.kill(pid, "SIGTERM");
        const ended = await trap.waitFor(/^(exit|signal) (\d+)$/, { timeoutMs: STOP_GUARD_MS });
        assertEquals(ended.match[0], "exit 0", trap.transcript);
        for (const child of children) {
          assert(processGone(child), `child ${child} outlived the launcher`);
        }
      } finally {
        for (const child of children) killIfRunning(child);
        killIfRunning(pid);
      }
    });
  },
);

for (const mode of ["full", "closed"] as const) {
  const what = mode === "full" ? "/dev/full" : "a closed pipe";
  testWith(
    [...NEEDS.system, requires("gcc")],
    `stdout on ${what}: reported once on stderr, presses still change the state`,
    async () => {
      await withTempDir(async (dir) => {
        const trapProgram = await buildC(dir, "stdout_trap");
        const state = `${dir}/state.dat`;
        const fifo = `${dir}/button.fifo`;
        const { trap, pid } = await launchBehind(trapProgram, mode, [
          "--state",
          state,
          "--fifo",
          fifo,
        ]);
        await using _trap = trap;
        let children: number[] = [];
        try {
          await until(() => identity(state) !== undefined, "the state file", { child: trap });
          await pressByFile(fifo, state, 20, trap);
          children = childrenOf(pid);
          assert(!processGone(pid), `the launcher ended:\n${trap.transcript}`);
          assertEquals(children.length, 2, `the LED and the button are not both running`);
          assertEquals(trap.matching(/restarting/), [], trap.transcript);
          Deno.kill(pid, "SIGTERM");
          const ended = await trap.waitFor(/^(exit|signal) (\d+)$/, { timeoutMs: STOP_GUARD_MS });
          assertEquals(ended.match[0], "exit 0", trap.transcript);
          const reports = trap.lines.filter((line) =>
            line.stream === "stderr" && /stdout|standard output|console/i.test(line.text)
          );
          assertEquals(reports.length, 1, `not reported exactly once:\n${trap.transcript}`);
          assertMatch(reports[0].text, mode === "full" ? /ENOSPC|no space/i : /EPIPE|broken pipe/i);
        } finally {
          for (const child of children) killIfRunning(child);
          killIfRunning(pid);
        }
      });
    },
  );
}

testWith(
  NEEDS.childrenAndFiles,
  "the cell a SIGKILLed lone process left is removed by the next one running alone; cells in use and names not ours stay",
  async () => {
    await withTempDir(async (dir) => {
      const cellOf = (state: string): string =>
        `/dev/shm/mmap-ipc-cell-${(identity(state) ?? "").replaceAll(":", "-")}`;
      const lone = (state: string): ChildProcess =>
        spawnDeno(`${ROOT}consumers/led.ts`, ["--state", state], { cwd: dir });
      // Named like a cell and ours, but not one: no magic.
      const decoy = `/mmap-ipc-cell-${Deno.pid}-0-1`;
      const region = openShmRegion(decoy, { create: true, size: 256 });
      region.close();
      const [killed, running, next] = ["killed", "running", "next"].map((name) =>
        `${dir}/${name}.dat`
      );
      try {
        await using first = lone(killed);
        await first.waitFor(LED_LINE);
        first.kill("SIGKILL");
        await first.status();
        assert(identity(cellOf(killed)) !== undefined, "the killed LED's cell is not there");
        await using second = lone(running);
        await second.waitFor(LED_LINE);
        await using third = lone(next);
        await third.waitFor(LED_LINE);
        assertEquals(identity(cellOf(killed)), undefined, "the killed LED's cell was kept");
        assert(identity(cellOf(running)) !== undefined, "a cell in use was removed");
        assert(identity(`/dev/shm${decoy}`) !== undefined, "a shm object not a cell was removed");
        for (const child of [second, third]) {
          child.kill("SIGTERM");
          assertEquals((await child.status()).code, 0, child.transcript);
        }
        assertEquals(identity(cellOf(running)), undefined, "the last one out kept its cell");
        assertEquals(identity(cellOf(next)), undefined, "the last one out kept its cell");
      } finally {
        for (const path of [`/dev/shm${decoy}`, ...[killed, running, next].map(cellOf)]) {
          if (identity(path) !== undefined) removeShm(path.slice("/dev/shm".length));
        }
      }
    });
  },
);

testWith(
  [...NEEDS.system, requires("setpriv")],
  "rm -rf of the runtime directory while a launcher runs: its claims are put back, and a second launcher on its paths is still refused",
  async (t) => {
    // As a user of the test's own: the real user's runtime directory may serve their launcher.
    if (await skippedWithoutRoot(t, "to run the launchers as a user of the test's own")) return;
    const uid = unusedUid();
    const runtime = `/tmp/mmap-ipc-${uid}`;
    await withTempDir(async (dir) => {
      const state = `${dir}/state.dat`;
      const args = ["--state", state, "--fifo", `${dir}/button.fifo`];
      await using first = startLauncherAs(uid, dir, args);
      const pids = await running(first);
      try {
        const since = first.lines.length;
        assert(statPath(runtime)?.uid === uid, `${runtime} is not the test user's`);
        await removeTree(runtime);
        await first.waitFor(/claim records were removed; made them again/, {
          since,
          timeoutMs: GUARD_MS,
        });
        await using second = startLauncherAs(uid, dir, args);
        assertEquals((await second.status()).code, 1, second.transcript);
        // It names whichever of the paths it found held first (claims go in record order).
        assertMatch(
          second.transcript,
          new RegExp(
            `another launcher \\(pid ${first.pid}\\) is using the (state file|FIFO) "${dir}/`,
          ),
        );
      } finally {
        await stopAll(first, [pids.led, pids.button]);
      }
    }).finally(() => removeTree(runtime));
  },
);

testWith(
  [...NEEDS.system, requires("setpriv")],
  "a runtime directory of the user's own that it may not look into (chmod 600): the launcher refuses, naming it and the chmod that fixes it, and leaves it as it is",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the launcher as a user of the test's own")) return;
    const uid = unusedUid();
    const runtime = `/tmp/mmap-ipc-${uid}`;
    await withTempDir(async (dir) => {
      Deno.mkdirSync(runtime, { mode: 0o700 });
      Deno.chownSync(runtime, uid, uid);
      Deno.chmodSync(runtime, 0o600);
      await using launcher = startLauncherAs(uid, dir, []);
      const status = await launcher.status();
      assertEquals(status.code, 1, launcher.transcript);
      assertStringIncludes(
        status.stderr,
        `this user may not look into ${runtime} (permission denied): it is this user's, but ` +
          `its mode (0600) does not let this user look into it; chmod u+rwx ${runtime}`,
      );
      assertEquals((Deno.statSync(runtime).mode ?? 0) & 0o7777, 0o600);
    }).finally(() => removeTree(runtime));
  },
);

testWith(
  [...NEEDS.system, requires("setpriv")],
  "rm -rf of the runtime directory that holds the default FIFO: the launcher makes both again, presses work, a second launcher is refused naming it, and nothing is left at exit",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the launchers as a user of the test's own")) return;
    const uid = unusedUid();
    const runtime = `/tmp/mmap-ipc-${uid}`;
    const fifo = `${runtime}/button.fifo`;
    await withTempDir(async (dir) => {
      await using first = startLauncherAs(uid, dir, []);
      const pids = await running(first);
      try {
        const since = first.lines.length;
        const before = statPath(fifo);
        assert(before?.uid === uid, `no FIFO of the test user's at ${fifo}`);
        await removeTree(runtime);
        await first.waitFor(lineNaming(fifo, /launch: Made the FIFO .* again/), {
          since,
          timeoutMs: GUARD_MS,
        });
        await first.waitFor(/button: .*presses reach this button again/, { since });
        assertEquals((Deno.statSync(runtime).mode ?? 0) & 0o777, 0o700);
        await writeAndLeave(fifo, "0\n");
        await ledShows(first, "On", since);
        // The FIFO's claim is keyed on the new directory's inode now.
        await using second = startLauncherAs(uid, dir, []);
        assertEquals((await second.status()).code, 1, second.transcript);
        assertStringIncludes(
          second.transcript,
          `another launcher (pid ${first.pid}) is using the FIFO "${fifo}"`,
        );
        first.kill("SIGTERM");
        assertEquals((await first.status()).code, 0, first.transcript);
        assertEquals(statPath(fifo), undefined, "the FIFO the launcher made again was left");
        assertEquals([...Deno.readDirSync(`${runtime}/claims`)], [], "claim records were left");
      } finally {
        await stopAll(first, [pids.led, pids.button]);
      }
    }).finally(() => removeTree(runtime));
  },
);

/** The launcher's soft limit of open files (`prlimit`), or sets it to `value` (hard kept). */
async function softFileLimit(pid: number, value?: number): Promise<number> {
  const args = value === undefined
    ? ["--pid", String(pid), "--nofile", "--raw", "--noheadings", "--output", "SOFT"]
    : ["--pid", String(pid), `--nofile=${value}:`];
  const output = await new Deno.Command("prlimit", { args, stdin: "null" }).output();
  const text = new TextDecoder().decode(output.stdout).trim();
  assert(output.success, new TextDecoder().decode(output.stderr));
  return value ?? Number(text);
}

testWith(
  [...NEEDS.system, requires("prlimit")],
  "a launcher out of fds as it makes the FIFO again claims and holds it once fds are back, and says each failure once",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      await using launcher = startLauncher(dir, ["--fifo", fifo, "--log-level", "debug"]);
      const pids = await running(launcher);
      try {
        assertEquals(openFdsTo(launcher.pid, fifo).length, 1, "the FIFO held at the start");
        const records = claimRecordsMentioning(fifo).length;
        const soft = await softFileLimit(launcher.pid);
        // Fewer than it has open: every fd it asks for now is EMFILE.
        await softFileLimit(launcher.pid, 16);
        const since = launcher.lines.length;
        Deno.removeSync(fifo);
        await launcher.waitFor(/Could not claim the FIFO .* \(trying every second\)/, {
          since,
          timeoutMs: GUARD_MS,
        });
        await delay(2_500); // tries that fail, and a claim keeper that cannot watch either
        await softFileLimit(launcher.pid, soft);
        await launcher.waitFor(/Claimed the FIFO .* made again now/, {
          since,
          timeoutMs: GUARD_MS,
        });
        assertEquals(openFdsTo(launcher.pid, fifo).length, 1, launcher.transcript);
        await until(() => claimRecordsMentioning(fifo).length === records, "the records back", {
          child: launcher,
        });
        for (const said of [/Could not claim the FIFO/, /claim records yet/]) {
          assert(launcher.matching(said, since).length <= 1, launcher.transcript);
        }
        assertEquals(await pressAndSee(launcher, fifo), 1);
      } finally {
        await stopAll(launcher, [pids.led, pids.button]);
      }
    });
  },
);

// --- the launcher's lifetime: signals and directories it is started with, or meets ------------

testWith(
  NEEDS.system,
  "a child stopped (SIGSTOP) when the launcher is killed (SIGKILL) dies with it, and the next launcher on its paths starts",
  async () => {
    await withTempDir(async (dir) => {
      const args = ["--state", `${dir}/s.dat`, "--fifo", `${dir}/button.fifo`];
      await using crashed = startLauncher(dir, args);
      const old = await running(crashed);
      try {
        // A debugger, or a user's kill -STOP, holds the button when the launcher dies. Its
        // parent-death SIGTERM then waited for a SIGCONT that never came (a session of its own),
        // and the next launcher was refused: "a button of this system reads it".
        Deno.kill(old.button, "SIGSTOP");
        await until(() => processState(old.button)?.state === "T", "the button stopped");
        crashed.kill("SIGKILL");
        await crashed.status();
        await until(
          () => processGone(old.led) && processGone(old.button),
          "the dead launcher's children gone",
        );
        await using next = startLauncher(dir, args);
        const pids = await running(next);
        try {
          await next.waitFor(/Button ready/, { timeoutMs: GUARD_MS });
          await stopCleanly(next, [pids.led, pids.button]);
        } finally {
          await stopAll(next, [pids.led, pids.button]);
        }
      } finally {
        await stopAll(crashed, [old.led, old.button]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "a launcher whose working directory is removed while it runs still restarts a child that dies, on the paths it was given relative to it",
  async () => {
    await withTempDir(async (dir) => {
      const cwd = `${dir}/work`;
      Deno.mkdirSync(cwd);
      // Relative to the launcher's working directory (run with deno run, no task directory).
      await using launcher = startLauncher(cwd, ["--fifo", "../button.fifo"]);
      const pids = await running(launcher);
      try {
        Deno.removeSync(cwd);
        const since = launcher.lines.length;
        Deno.kill(pids.button, "SIGKILL");
        // Before: "failed resolving cwd" at each start, and a crash loop that stopped it all.
        const restarted = await launcher.waitFor(/Started button \(pid (\d+)\)/, { since });
        pids.button = Number(restarted.match[1]);
        await launcher.waitFor(/Button ready/, { since });
        const pressed = launcher.lines.length;
        await writeAndLeave(`${dir}/button.fifo`, "0\n");
        await ledShows(launcher, "On", pressed);
        await stopCleanly(launcher, [pids.led, pids.button]);
        assertEquals(identity(`${dir}/button.fifo`), undefined, "the FIFO was left behind");
      } finally {
        await stopAll(launcher, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  [...NEEDS.system, requires("gcc")],
  "a launcher started with SIGHUP, SIGINT and SIGTERM blocked (an inherited signal mask) still stops on SIGTERM, and its children die with it when it is killed",
  async () => {
    await withTempDir(async (dir) => {
      const blocked = await buildC(dir, "blocked_exec");
      for (const end of ["SIGTERM", "SIGKILL"] as const) {
        const fifo = `${dir}/button-${end}.fifo`;
        await using launcher = spawnProgram(blocked, launcherCommand(["--fifo", fifo]), {
          cwd: dir,
        });
        const pids = await running(launcher);
        try {
          if (end === "SIGTERM") {
            // Before: the SIGTERM stayed pending, and the launcher ran on.
            await stopCleanly(launcher, []);
            assertEquals(identity(fifo), undefined, "the FIFO was left behind");
          } else {
            launcher.kill("SIGKILL");
            await launcher.status();
          }
          // Before: with the mask inherited, the kernel's parent-death SIGTERM stayed pending in
          // each child, which ran on with parent 1.
          await until(
            () => processGone(pids.led) && processGone(pids.button),
            `the children gone after ${end}`,
          );
        } finally {
          await stopAll(launcher, [pids.led, pids.button]);
        }
      }
    });
  },
);

testWith(
  [...NEEDS.system, requires("sh"), requires("sleep")],
  "a launcher refused after it claimed a dead launcher's paths (another program reads the FIFO) leaves the dead one's records: the launcher after it still adopts the leftovers and removes them at exit",
  async () => {
    await withTempDir(async (dir) => {
      const state = `${dir}/s.dat`;
      const fifo = `${dir}/button.fifo`;
      const args = ["--state", state, "--fifo", fifo];
      await using crashed = startLauncher(dir, args);
      const old = await running(crashed);
      try {
        crashed.kill("SIGKILL");
        await crashed.status();
        await until(() => processGone(old.led) && processGone(old.button), "its children gone");
        assert(identity(state) !== undefined && identity(fifo) !== undefined);
        // A program reads the FIFO for a while: the next launcher is refused, rightly.
        await using reader = spawnProgram("sh", ["-c", 'exec sleep 60 <> "$1"', "sh", fifo]);
        await until(() => openFdsTo(reader.pid, fifo).length > 0, "the reader holding the FIFO");
        await using refused = startLauncher(dir, args);
        assertEquals((await refused.status()).code, 1, refused.transcript);
        reader.kill("SIGKILL");
        await reader.status();
        // Before, the refused launcher had removed the dead one's records: every later launcher
        // kept its FIFO and state file for good, as the user's.
        await using next = startLauncher(dir, args);
        const pids = await running(next);
        try {
          await next.waitFor(/Adopting the state file/, { timeoutMs: GUARD_MS });
          await stopCleanly(next, [pids.led, pids.button]);
        } finally {
          await stopAll(next, [pids.led, pids.button]);
        }
        assertEquals(identity(state), undefined, `state file kept:\n${next.transcript}`);
        assertEquals(identity(fifo), undefined, `FIFO kept:\n${next.transcript}`);
      } finally {
        await stopAll(crashed, [old.led, old.button]);
      }
    });
  },
);
