/**
 * The button/LED system end to end: the real launcher, button and LED processes, a real FIFO
 * and real shared memory, plus the original C programs' stand-in for interoperability.
 */
import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { listDirectory, makeFifo, processState, readFileText, statPath } from "../ffi/posix.ts";
import { openStateFile } from "../mod.ts";
import { shellQuote } from "../lib/shell_quote.ts";
import { escapeRegExp } from "./helpers/assertions.ts";
import { claimRecordsMentioning } from "./helpers/claims.ts";
import { writeAndLeave } from "./helpers/fifo.ts";
import { ROOT } from "./helpers/paths.ts";
import { NEEDS, requires, skippedWithoutRoot, testWith } from "./helpers/permissions.ts";
import type { ChildProcess } from "./helpers/child_process.ts";
import { killIfRunning, processGone, settledFdCount, waitingForWriter } from "./helpers/proc.ts";
import { buildC, denoCommand, spawnDeno, spawnProgram } from "./helpers/spawn.ts";
import {
  asUser,
  LAUNCH_PERMISSIONS,
  launcherCommand,
  LED_LINE,
  ledShows,
  ledStates,
  pressAsButtonDies,
  running,
  spawnLaunchTask,
  startButton,
  startLauncher,
  startLauncherAs,
  stateValue,
  stopAll,
  unusedUid,
} from "./helpers/system.ts";
import { removeTree, withShmName, withTempDir } from "./helpers/temp.ts";
import { delay, until } from "./helpers/waiting.ts";

testWith(
  NEEDS.system,
  "deno task launch in a temp directory: presses give On, Off, On",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      await using task = spawnLaunchTask(dir, ["--fifo", fifo]);
      const pids = await running(task);
      const launcherPid = processState(pids.led)?.parentPid ?? 0;
      try {
        let since = await ledShows(task, "Off", 0);
        for (const state of ["On", "Off", "On"] as const) {
          await writeAndLeave(fifo, "0\n");
          since = await ledShows(task, state, since);
        }
        assertEquals(ledStates(task), ["Off", "On", "Off", "On"]);
        Deno.kill(launcherPid, "SIGTERM");
        const status = await task.status();
        assertEquals(status.code, 0, task.transcript);
        assertThrows(() => Deno.lstatSync(fifo), Deno.errors.NotFound);
      } finally {
        killIfRunning(launcherPid);
        await stopAll(task, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  [...NEEDS.system, requires("env")],
  "deno task launch takes relative paths from where it was run, not from the project's directory",
  async () => {
    await withTempDir(async (dir) => {
      // deno task runs the launcher where deno.json is: these went there. It sets INIT_CWD
      // only where no task runner did before (this test may run under one).
      await using task = spawnLaunchTask(dir, ["--fifo", "button.fifo", "--state", "state.dat"], {
        withoutInitCwd: true,
      });
      const pids = await running(task);
      const launcherPid = processState(pids.led)?.parentPid ?? 0;
      try {
        assert(Deno.lstatSync(`${dir}/button.fifo`).isFifo);
        assert(Deno.lstatSync(`${dir}/state.dat`).isFile);
        assertThrows(() => Deno.lstatSync(`${ROOT}button.fifo`), Deno.errors.NotFound);
        await writeAndLeave(`${dir}/button.fifo`, "0\n");
        await ledShows(task, "On", 0);
        Deno.kill(launcherPid, "SIGTERM");
        assertEquals((await task.status()).code, 0, task.transcript);
      } finally {
        killIfRunning(launcherPid);
        await stopAll(task, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  [...NEEDS.system, requires("env")],
  "deno task launch takes a relative --mqtt-credentials and --mqtt-ca from where it was run too",
  async () => {
    await withTempDir(async (dir) => {
      // Unsafe on purpose: the launcher reads each at once, and names the path it read.
      Deno.writeTextFileSync(`${dir}/mqtt.login`, "username=a\npassword=b\n", { mode: 0o644 });
      Deno.chmodSync(`${dir}/mqtt.login`, 0o644);
      Deno.writeTextFileSync(`${dir}/ca.pem`, "not a certificate\n");
      for (
        const [flag, url, file, why] of [
          ["--mqtt-credentials", "mqtt://127.0.0.1:1", "mqtt.login", "chmod 600"],
          ["--mqtt-ca", "mqtts://127.0.0.1:1", "ca.pem", "holds no PEM certificate"],
        ]
      ) {
        await using task = spawnLaunchTask(dir, ["--mqtt", url, flag, file], {
          withoutInitCwd: true,
        });
        const { code, stderr } = await task.status();
        assertEquals(code, 1, task.transcript);
        assertStringIncludes(stderr, `${dir}/${file}`);
        assertStringIncludes(stderr, why);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "deno task launch whose task runner is SIGKILLed stops, with its children, and cleans up",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      await using task = spawnLaunchTask(dir, ["--fifo", fifo]);
      const pids = await running(task);
      const launcherPid = processState(pids.led)?.parentPid ?? 0;
      try {
        assertNotEquals(launcherPid, task.pid, "the task runner starts the launcher");
        task.kill("SIGKILL");
        // The launcher lived on, re-parented, with both children.
        await until(
          () => processGone(launcherPid) && processGone(pids.led) && processGone(pids.button),
          "the launcher and its children gone",
        );
        assertThrows(() => Deno.lstatSync(fifo), Deno.errors.NotFound);
      } finally {
        killIfRunning(launcherPid);
        await stopAll(task, [pids.led, pids.button]);
      }
    });
  },
);

/**
 * Runs the launcher in a terminal of its own (script(1) gives it one and passes on what we
 * write), on a FIFO in a temporary directory; `fn` gets Enter to press. Stops everything after.
 */
async function inTerminal(
  fn: (
    launch: {
      dir: string;
      fifo: string;
      terminal: ChildProcess;
      enter(): Promise<void>;
      type(text: string): Promise<void>;
    },
  ) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    const fifo = `${dir}/button.fifo`;
    const command = launcherCommand(["--fifo", fifo]).map((word) => `'${word}'`).join(" ");
    await using terminal = spawnProgram("script", ["-qfec", command, "/dev/null"], {
      stdin: "piped",
    });
    const pids = await running(terminal);
    const writer = terminal.process.stdin.getWriter();
    try {
      await terminal.waitFor(/or press Enter here/);
      await fn({
        dir,
        fifo,
        terminal,
        enter: () => writer.write(new TextEncoder().encode("\n")),
        type: (text) => writer.write(new TextEncoder().encode(text)),
      });
    } finally {
      await writer.close().catch(() => {});
      await stopAll(terminal, [pids.led, pids.button]);
    }
  });
}

testWith(
  [...NEEDS.system, requires("script"), requires("bash")],
  "a launcher started in the background of a terminal (launch &) is never stopped by it: the FIFO presses, SIGTERM stops it",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      const command = launcherCommand(["--fifo", fifo]).map((word) => `'${word}'`).join(" ");
      // A shell with job control: the launcher is a background job of the terminal script(1)
      // gives it. It read the terminal for Enter, and SIGTTIN stopped it and every press.
      await using terminal = spawnProgram("script", [
        "-qfec",
        `bash -c 'set -m; ${command.replaceAll("'", `'\\''`)} & echo "job $!"; wait $!'`,
        "/dev/null",
      ]);
      const pids = await running(terminal);
      const job = Number((await terminal.waitFor(/job (\d+)/)).match[1]);
      try {
        await terminal.waitFor(/Running in the background: Enter does not press here/);
        await writeAndLeave(fifo, "0\n");
        await ledShows(terminal, "On", 0);
        assertNotEquals(processState(job)?.state, "T", "the launcher was stopped");
        Deno.kill(job, "SIGTERM");
        await terminal.waitFor(/Stopped/);
        assert(processGone(pids.led) && processGone(pids.button));
      } finally {
        killIfRunning(job);
        await stopAll(terminal, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  [...NEEDS.system, requires("script"), requires("bash")],
  "a launcher started in the background of an interactive shell takes Enter once brought back with fg, and again after Ctrl+Z, bg and fg, and says so",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      const command = launcherCommand(["--fifo", fifo]).map((word) => `'${word}'`).join(" ");
      await using terminal = spawnProgram(
        "script",
        ["-qfec", "bash --norc --noprofile -i", "/dev/null"],
        { stdin: "piped" },
      );
      const writer = terminal.process.stdin.getWriter();
      const type = (text: string): Promise<void> => writer.write(new TextEncoder().encode(text));
      let launcher: number | undefined;
      let pids: { led: number; button: number } | undefined;
      try {
        await type(`${command} & echo "job $!"\n`);
        launcher = Number((await terminal.waitFor(/^job (\d+)/)).match[1]);
        pids = await running(terminal);
        await terminal.waitFor(/Running in the background: Enter does not press here/);
        await type("fg\n");
        await terminal.waitFor(/In the foreground again: Enter presses here/);
        await type("\n");
        let since = await ledShows(terminal, "On", 0);
        // Ctrl+Z, bg: the read under way fails (EIO), and the launcher waits for fg again.
        await type("\x1a");
        await terminal.waitFor(/Stopped/, { since });
        await type("bg\n");
        await terminal.waitFor(/In the background now: Enter does not press here until fg/, {
          since,
        });
        since = terminal.lines.length;
        await type("fg\n");
        await terminal.waitFor(/In the foreground again: Enter presses here/, { since });
        await type("\n");
        await ledShows(terminal, "Off", since);
        assertEquals(terminal.matching(/Enter no longer presses/), [], terminal.transcript);
      } finally {
        await writer.close().catch(() => {});
        await stopAll(terminal, [launcher, pids?.led, pids?.button]);
      }
    });
  },
);

testWith(NEEDS.system, "Enter in the launcher's terminal is a press", async () => {
  await inTerminal(async ({ terminal, enter }) => {
    await enter();
    const since = await ledShows(terminal, "On", 0);
    await enter();
    await ledShows(terminal, "Off", since);
  });
});

testWith(
  NEEDS.system,
  "Ctrl+D in the launcher's terminal does not end Enter's presses, and says Ctrl+C is what stops",
  async () => {
    await inTerminal(async ({ terminal, enter, type }) => {
      await type("\x04"); // Ctrl+D at the start of a line: an end of input to the reader
      await terminal.waitFor(/Ctrl\+D does not stop the launcher \(Ctrl\+C does\)/);
      await enter();
      const since = await ledShows(terminal, "On", 0);
      // Ctrl+D again and again, as a person presses it: Enter still presses after.
      for (let i = 0; i < 4; i++) {
        await type("\x04");
        await delay(300);
      }
      await enter();
      await ledShows(terminal, "Off", since);
      assertEquals(terminal.matching(/Enter no longer presses/), [], terminal.transcript);
      assertEquals(terminal.matching(/Ctrl\+D does not stop/).length, 1);
    });
  },
);

testWith(
  NEEDS.system,
  "Enter after a user's file took the FIFO's place: the file is left as it is",
  async () => {
    await inTerminal(async ({ dir, fifo, terminal, enter }) => {
      const notes = "my notes: do not lose\n";
      Deno.writeTextFileSync(`${dir}/notes`, notes);
      Deno.renameSync(`${dir}/notes`, fifo);
      await enter();
      await terminal.waitFor(/Enter did not press: .*regular file.*left as it is/);
      assertEquals(Deno.readTextFileSync(fifo), notes);
    });
  },
);

testWith(
  NEEDS.system,
  "1,000 presses as fast as a writer can go: all counted, LED ends on the latest",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      const state = `${dir}/state.dat`;
      await using launcher = startLauncher(dir, [
        "--state",
        state,
        "--fifo",
        fifo,
        "--log-level",
        "debug",
      ]);
      const pids = await running(launcher);
      try {
        await writeAndLeave(fifo, "0\n");
        await launcher.waitFor(/Pressed: state 1/);
        const fdsBefore = await settledFdCount(pids.button);
        for (let i = 0; i < 1000; i++) await writeAndLeave(fifo, "0\n");
        await until(
          () => launcher.matching(/Pressed: state/).length === 1001,
          "1,001 presses",
          { timeoutMs: 30_000 },
        );
        const fdsAfter = await settledFdCount(pids.button);
        // 1,001 toggles from Off: the state ends On, and so does the LED.
        using file = openStateFile(state);
        assertEquals(file.read().value, 1);
        await until(() => ledStates(launcher).at(-1) === "On", "LED On", { timeoutMs: 10_000 });
        const shown = ledStates(launcher);
        // Coalesced: every line differs from the one before, so nothing is shown twice or late.
        for (let i = 1; i < shown.length; i++) {
          assertNotEquals(shown[i], shown[i - 1], shown.join());
        }
        assertEquals(fdsAfter, fdsBefore, "the button's fd count grew");
      } finally {
        await stopAll(launcher, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "garbage, empty lines, a 1 MiB line, binary and a killed writer: warnings, no toggle",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      await using launcher = startLauncher(dir, ["--fifo", fifo]);
      const pids = await running(launcher);
      try {
        await writeAndLeave(fifo, "garbage\n");
        await launcher.waitFor(/Ignored "garbage": not a press/);
        await writeAndLeave(fifo, "\n");
        await launcher.waitFor(/Ignored an empty line/);
        await writeAndLeave(fifo, `${"x".repeat(1 << 20)}\n`);
        await launcher.waitFor(/Ignored a line of 1048576 bytes/);
        await writeAndLeave(fifo, new Uint8Array([0xde, 0xad, 0x00, 0xbe, 0xef, 0x0a]));
        await launcher.waitFor(/Ignored 5 bytes of binary data/);
        await using writer = spawnProgram("sh", [
          "-c",
          `exec 3>'${fifo}'; printf half >&3; echo ready; exec sleep 60`,
        ]);
        assertEquals(await writer.nextLine(), "ready");
        writer.kill("SIGKILL");
        await writer.status();
        await launcher.waitFor(/Ignored "half": its writer went away/);
        assertEquals(ledStates(launcher), ["Off"]);
        assertEquals(launcher.matching(/Started button/).length, 1, "the button restarted");
        await writeAndLeave(fifo, "0\n");
        await ledShows(launcher, "On", 0);
      } finally {
        await stopAll(launcher, [pids.led, pids.button]);
      }
    });
  },
);

testWith(NEEDS.system, "SIGKILL the LED: it is restarted and shows the current state", async () => {
  await withTempDir(async (dir) => {
    const fifo = `${dir}/button.fifo`;
    await using launcher = startLauncher(dir, ["--fifo", fifo]);
    const pids = await running(launcher);
    let restarted = 0;
    try {
      await writeAndLeave(fifo, "0\n");
      const since = await ledShows(launcher, "On", 0);
      Deno.kill(pids.led, "SIGKILL");
      const again = await launcher.waitFor(/Started led \(pid (\d+)\)/, { since });
      restarted = Number(again.match[1]);
      assertNotEquals(restarted, pids.led);
      await launcher.waitFor(/led was killed by SIGKILL; restarting/, { since });
      await ledShows(launcher, "On", again.index);
    } finally {
      await stopAll(launcher, [pids.led, pids.button, restarted]);
    }
  });
});

testWith(NEEDS.system, "SIGKILL the launcher: both children are gone soon after", async () => {
  await withTempDir(async (dir) => {
    await using launcher = startLauncher(dir, ["--fifo", `${dir}/button.fifo`]);
    const pids = await running(launcher);
    try {
      launcher.kill("SIGKILL");
      await launcher.status();
      const elapsed = await until(
        () => processGone(pids.led) && processGone(pids.button),
        "children gone",
        { timeoutMs: 10_000 },
      );
      console.log(`children gone ${elapsed.toFixed(0)} ms after the launcher was killed`);
    } finally {
      await stopAll(launcher, [pids.led, pids.button]);
    }
  });
});

testWith(
  NEEDS.system,
  "SIGTERM the launcher: exit 0, children stopped, FIFO and state removed",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      const state = `${dir}/state.dat`;
      await using launcher = startLauncher(dir, ["--state", state, "--fifo", fifo]);
      const pids = await running(launcher);
      try {
        launcher.kill("SIGTERM");
        const status = await launcher.status();
        assertEquals(status.code, 0, launcher.transcript);
        assert(processGone(pids.led) && processGone(pids.button));
        assertThrows(() => Deno.lstatSync(fifo), Deno.errors.NotFound);
        assertThrows(() => Deno.lstatSync(state), Deno.errors.NotFound);
      } finally {
        await stopAll(launcher, [pids.led, pids.button]);
      }
    });
  },
);

/**
 * The state file's directory goes away while the system runs (moved, or removed with the file
 * the system's processes hold open in it), and a new one is made with a file at the path: the
 * button says the file was removed, then that another was put at the path, left alone at exit.
 */
async function stateDirectoryGoes(goAway: (directory: string) => void): Promise<void> {
  await withTempDir(async (dir) => {
    const directory = `${dir}/run`;
    Deno.mkdirSync(directory, { mode: 0o700 });
    const state = `${directory}/state.dat`;
    await using launcher = startLauncher(dir, [
      "--state",
      state,
      "--fifo",
      `${dir}/button.fifo`,
    ]);
    const pids = await running(launcher);
    try {
      const since = launcher.lines.length;
      goAway(directory);
      await launcher.waitFor(/The state file .*state\.dat.* was removed/, { since });
      Deno.mkdirSync(directory, { mode: 0o700 });
      Deno.writeTextFileSync(state, "1\n");
      // Seen in the directory made in place of the one gone, not in that one.
      await launcher.waitFor(/The state file .*state\.dat.* was replaced by another file/, {
        since,
      });
      launcher.kill("SIGTERM");
      assertEquals((await launcher.status()).code, 0, launcher.transcript);
      assertEquals(Deno.readTextFileSync(state), "1\n", "the file put at the path");
    } finally {
      await stopAll(launcher, [pids.led, pids.button]);
    }
  });
}

testWith(
  NEEDS.system,
  "mv of the state file's directory, a new one made in its place: the button says the file was removed, then that another was put at the path, which it leaves alone, also at exit",
  () => stateDirectoryGoes((directory) => Deno.renameSync(directory, `${directory}.old`)),
);

testWith(
  NEEDS.system,
  "rm -r of the state file's directory, whose file the system's processes hold open (so the directory's watch hears nothing of it), and a new one made: the button says the file was removed, then that another was put at the path",
  () => stateDirectoryGoes((directory) => Deno.removeSync(directory, { recursive: true })),
);

testWith(
  NEEDS.system,
  "SIGHUP the launcher (its terminal closed): exit 0, children stopped, FIFO, state and claims removed",
  async () => {
    await withTempDir(async (dir) => {
      const claims = (): string[] => claimRecordsMentioning(`"${dir}/`);
      const fifo = `${dir}/button.fifo`;
      const state = `${dir}/state.dat`;
      await using launcher = startLauncher(dir, ["--state", state, "--fifo", fifo]);
      const pids = await running(launcher);
      try {
        assertEquals(claims().length, 4, "a claim per path and per file");
        launcher.kill("SIGHUP");
        const status = await launcher.status();
        assertEquals(status.code, 0, launcher.transcript);
        assert(processGone(pids.led) && processGone(pids.button));
        assertThrows(() => Deno.lstatSync(fifo), Deno.errors.NotFound);
        assertThrows(() => Deno.lstatSync(state), Deno.errors.NotFound);
        assertEquals(claims(), [], "claims left behind");
      } finally {
        await stopAll(launcher, [pids.led, pids.button]);
      }
    });
  },
);

/**
 * Starts a launcher, then a button and an LED alone, each through `ignoring` (the command line
 * that runs a command with `signal` ignored, as `nohup` does SIGHUP), and sends each `signal`,
 * the launcher's children too: each runs on (no child started again), the launcher saying
 * `said`, and still stops on SIGTERM with exit 0.
 */
async function runOnIgnored(
  signal: "SIGHUP" | "SIGINT",
  ignoring: (command: string[]) => [string, string[]],
  said: RegExp,
): Promise<void> {
  await withTempDir(async (dir) => {
    const fifo = `${dir}/button.fifo`;
    const state = `${dir}/state.dat`;
    await using launcher = spawnProgram(
      ...ignoring(launcherCommand(["--state", state, "--fifo", fifo])),
      { cwd: dir },
    );
    const pids = await running(launcher);
    try {
      const since = launcher.lines.length;
      for (const pid of [launcher.pid, pids.led, pids.button]) Deno.kill(pid, signal);
      await delay(500);
      assert(!processGone(launcher.pid), `the launcher stopped:\n${launcher.transcript}`);
      assert(!processGone(pids.led) && !processGone(pids.button), launcher.transcript);
      assertMatch(launcher.transcript, said);
      const after = launcher.lines.slice(since).map((line) => line.text);
      assertEquals(after.filter((text) => /Started |restarting/.test(text)), []);
      launcher.kill("SIGTERM");
      assertEquals((await launcher.status()).code, 0, launcher.transcript);
    } finally {
      await stopAll(launcher, [pids.led, pids.button]);
    }
    const alone = `${dir}/alone.dat`;
    for (
      const [script, more] of [["producers/button.ts", ["--fifo", fifo]], [
        "consumers/led.ts",
        [],
      ]]
    ) {
      const command = denoCommand(`${ROOT}${script}`, ["--state", alone, ...more], [
        "--allow-ffi",
      ]);
      await using child = spawnProgram(...ignoring(command), { cwd: dir });
      await child.waitFor(/Button ready|LED Status/);
      child.kill(signal);
      await delay(500);
      assert(!processGone(child.pid), `${script} stopped:\n${child.transcript}`);
      child.kill("SIGTERM");
      assertEquals((await child.status()).code, 0, child.transcript);
    }
  });
}

testWith(
  [...NEEDS.system, requires("nohup")],
  "a launcher, and a button and an LED run alone, started under nohup (SIGHUP ignored) are left running by SIGHUP, the launcher saying so, and still stop on SIGTERM",
  () => runOnIgnored("SIGHUP", (command) => ["nohup", command], /SIGHUP ignored \(nohup\)/),
);

testWith(
  [...NEEDS.system, requires("sh")],
  "a launcher, and a button and an LED run alone, started with SIGINT ignored (a script's background job) are left running by SIGINT, the launcher saying so, its children too, and still stop on SIGTERM",
  () =>
    // What a shell without job control does for `command &`.
    runOnIgnored(
      "SIGINT",
      (command) => ["sh", ["-c", 'trap "" INT; exec "$@"', "sh", ...command]],
      /SIGINT ignored \(a background job of a script\)/,
    ),
);

testWith(
  [...NEEDS.system, requires("sh"), requires("setsid")],
  "a terminal's Ctrl+C (SIGINT to the launcher's process group) sent again and again while the children start reaches neither: a launcher started with SIGINT ignored runs on and restarts none",
  async () => {
    await withTempDir(async (dir) => {
      const command = launcherCommand(["--state", `${dir}/state.dat`, "--fifo", `${dir}/f.fifo`]);
      // setsid: a process group of the launcher's own, as a shell's job has, so that the group's
      // SIGINT stays off this test. The children used to share it, and died of one that came
      // before they listened for signals.
      await using launcher = spawnProgram(
        "setsid",
        ["sh", "-c", 'trap "" INT; exec "$@"', "sh", ...command],
        { cwd: dir },
      );
      // Not before: sh, until its trap has run, would die of the first one.
      await launcher.waitFor(/SIGINT ignored/);
      let interrupting = true;
      const interrupts = (async () => {
        while (interrupting) {
          try {
            Deno.kill(-launcher.pid, "SIGINT");
          } catch {
            return; // the group is gone: the launcher ended, which the checks below report
          }
          await delay(5);
        }
      })();
      let pids: { led: number; button: number } | undefined;
      try {
        pids = await running(launcher);
        await delay(300);
        interrupting = false;
        await interrupts;
        assert(!processGone(launcher.pid), `the launcher stopped:\n${launcher.transcript}`);
        assert(!processGone(pids.led) && !processGone(pids.button), launcher.transcript);
        const starts = launcher.lines.filter((line) =>
          /Started (led|button)|restarting/.test(line.text)
        );
        assertEquals(starts.length, 2, launcher.transcript);
        launcher.kill("SIGTERM");
        assertEquals((await launcher.status()).code, 0, launcher.transcript);
      } finally {
        interrupting = false;
        await interrupts;
        await stopAll(launcher, [pids?.led, pids?.button]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "a state file, shm object or FIFO other users may write (mode 0666, 0620) is warned of once, naming it, its mode and the chmod that makes it private, by the launcher and by an LED or button run alone, and its mode is left as it is; a private one is not",
  async () => {
    await withTempDir(async (dir) => {
      const state = `${dir}/data.dat`;
      Deno.writeTextFileSync(state, "0\n");
      Deno.chmodSync(state, 0o666);
      const fifo = `${dir}/f.fifo`;
      makeFifo(fifo, 0o600);
      Deno.chmodSync(fifo, 0o666);
      const warning = `The state file ${
        JSON.stringify(state)
      } may be written by every user (mode 0666): any of them can change the state; chmod go-w ${
        shellQuote(state)
      } makes it this user's alone`;
      await using launcher = startLauncher(dir, ["--state", state, "--fifo", fifo]);
      const pids = await running(launcher);
      try {
        // Once: the children, which get the file from the launcher, leave it to the launcher.
        assertEquals(launcher.transcript.split(warning).length, 2, launcher.transcript);
        const fifoWarning = `The FIFO ${
          JSON.stringify(fifo)
        } may be written by every user (mode 0666): any of them can press the button; chmod go-w ${
          shellQuote(fifo)
        } makes it this user's alone`;
        assertEquals(launcher.transcript.split(fifoWarning).length, 2, launcher.transcript);
        launcher.kill("SIGTERM");
        assertEquals((await launcher.status()).code, 0, launcher.transcript);
      } finally {
        await stopAll(launcher, [pids.led, pids.button]);
      }
      assertEquals(statPath(state)?.permissions, 0o666);

      const alone = `${dir}/alone.fifo`;
      makeFifo(alone, 0o600);
      Deno.chmodSync(alone, 0o620);
      await using button = spawnDeno(`${ROOT}producers/button.ts`, [
        "--state",
        state,
        "--fifo",
        alone,
      ]);
      await button.waitFor(/Button ready/);
      assertStringIncludes(button.transcript, warning);
      assertStringIncludes(
        button.transcript,
        `The FIFO ${
          JSON.stringify(alone)
        } may be written by its group (mode 0620): any of them can press the button`,
      );
      button.kill("SIGTERM");
      assertEquals((await button.status()).code, 0, button.transcript);

      await withShmName(async (name) => {
        const shm = `/dev/shm${name}`;
        await using led = spawnDeno(`${ROOT}consumers/led.ts`, ["--shm", name]);
        await led.waitFor(LED_LINE);
        led.kill("SIGTERM");
        assertEquals((await led.status()).code, 0, led.transcript);
        // Made here, 0600: nothing to say.
        assert(!led.transcript.includes("may be written by"), led.transcript);
        // Deno's own chmod and stat refuse /dev/shm without --allow-all.
        assert(new Deno.Command("chmod", { args: ["620", shm] }).outputSync().success);
        await using again = spawnDeno(`${ROOT}consumers/led.ts`, ["--shm", name]);
        await again.waitFor(LED_LINE);
        assertStringIncludes(
          again.transcript,
          `The shared memory ${
            JSON.stringify(shm)
          } may be written by its group (mode 0620): any of them can change the state; chmod go-w ${shm} makes it this user's alone`,
        );
        again.kill("SIGTERM");
        assertEquals((await again.status()).code, 0, again.transcript);
        assertEquals(statPath(shm)?.permissions, 0o620);
      });
    });
  },
);

testWith(
  NEEDS.system,
  "a second launcher on the same state or FIFO refuses and names the first one's pid",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      const state = `${dir}/state.dat`;
      await using first = startLauncher(dir, ["--state", state, "--fifo", fifo]);
      const pids = await running(first);
      try {
        for (const args of [["--state", state, "--fifo", `${dir}/other.fifo`], ["--fifo", fifo]]) {
          await using second = startLauncher(dir, args);
          const status = await second.status();
          assertEquals(status.code, 1);
          assertMatch(
            status.stderr,
            new RegExp(`another launcher.*pid ${first.pid}`),
            second.transcript,
          );
        }
        assert(Deno.lstatSync(fifo).isFifo, "the second launcher removed the first one's FIFO");
        assert(Deno.lstatSync(state).isFile);
        assertThrows(() => Deno.lstatSync(`${dir}/other.fifo`), Deno.errors.NotFound);
      } finally {
        await stopAll(first, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "a button run by hand on a launcher's FIFO refuses naming the launcher and its button, and leaves no state file made",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      // As `deno task launch` runs it: the script named by a path from the project's directory.
      await using launcher = spawnDeno("launch.ts", ["--fifo", fifo], {
        permissions: LAUNCH_PERMISSIONS,
        cwd: ROOT,
      });
      const pids = await running(launcher);
      try {
        const state = `${dir}/mine.dat`;
        await using button = spawnDeno(`${ROOT}producers/button.ts`, [
          "--state",
          state,
          "--fifo",
          fifo,
        ]);
        const status = await button.status();
        assertEquals(status.code, 1, button.transcript);
        assertStringIncludes(status.stderr, `a launcher of this system (pid ${launcher.pid})`);
        assertStringIncludes(status.stderr, `a button of this system (pid ${pids.button})`);
        assert(!status.stderr.includes("original button"), status.stderr);
        assertEquals(statPath(state), undefined, "the refused button left a state file");
        assert(Deno.lstatSync(fifo).isFifo, "the refused button removed the launcher's FIFO");
      } finally {
        await stopAll(launcher, [pids.led, pids.button]);
      }
    });
  },
);

/**
 * SIGKILLs the `child` (led or button) of `launcher` with pid `pid`, waits for the restarted one
 * to say `said`, and returns its pid.
 */
async function killAndHear(
  launcher: ChildProcess,
  child: { name: "led" | "button"; pid: number },
  said: RegExp,
): Promise<number> {
  const since = launcher.lines.length;
  Deno.kill(child.pid, "SIGKILL");
  await launcher.waitFor(said, { since });
  const started = new RegExp(`Started ${child.name} \\(pid (\\d+)\\)`);
  return Number((await launcher.waitFor(started, { since })).match[1]);
}

/**
 * For a button under `launcher` (run as `user`) that reads its FIFO again: a press `user` writes
 * reaches the LED, and no child crashed.
 */
async function pressAsUserAndSee(
  launcher: ChildProcess,
  user: number,
  fifo: string,
): Promise<void> {
  const since = launcher.lines.length;
  const press = await spawnProgram("setpriv", [...asUser(user), "sh", "-c", `echo 0 > '${fifo}'`])
    .status();
  assertEquals(press.code, 0);
  await ledShows(launcher, "On", since);
  assertEquals(launcher.matching(/crashed|exited with code/), [], launcher.transcript);
}

testWith(
  [...NEEDS.system, requires("setpriv"), requires("chmod")],
  "run by a user whose chmod takes away its own access: a restarted LED runs on without the state file, a restarted button waits for the FIFO's mode, and nothing stops",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the launcher as another user")) return;
    const user = unusedUid(); // not a real user: its runtime directory is the test's own
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      const state = `${dir}/state.dat`;
      await using launcher = startLauncherAs(user, dir, ["--fifo", fifo, "--state", state]);
      const pids = await running(launcher);
      const restarted: number[] = [];
      try {
        // Root would open both anyway: the launcher runs as a plain user, whom the mode binds.
        Deno.chmodSync(state, 0o400);
        let since = launcher.lines.length;
        restarted.push(
          await killAndHear(
            launcher,
            { name: "led", pid: pids.led },
            /led: .*state file ".*state\.dat" \(through \/proc\/\d+\/fd\/\d+\): permission denied.*running on without it/,
          ),
        );
        await ledShows(launcher, "Off", since);

        Deno.chmodSync(fifo, 0o000);
        since = launcher.lines.length;
        restarted.push(
          await killAndHear(
            launcher,
            { name: "button", pid: pids.button },
            /its mode \(0000\) does not let its owner read it.*reads it once its mode lets it/,
          ),
        );
        Deno.chmodSync(fifo, 0o600);
        await launcher.waitFor(/is one this button may read now/, { since });
        await pressAsUserAndSee(launcher, user, fifo);
      } finally {
        await stopAll(launcher, [pids.led, pids.button, ...restarted]);
      }
    }).finally(() => removeTree(`/tmp/mmap-ipc-${user}`));
  },
);

testWith(
  [...NEEDS.system, requires("setpriv")],
  "/tmp/mmap-ipc-UID made first by another user: the launcher, outside a login session, is refused saying who can remove it and what to do meanwhile",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the launcher as another user")) return;
    const user = unusedUid(); // not a real user: its runtime directory is the test's own
    const shared = `/tmp/mmap-ipc-${user}`;
    await withTempDir(async (dir) => {
      Deno.mkdirSync(shared, { mode: 0o700 }); // root's, made before the user's first run
      await using launcher = startLauncherAs(user, dir, [
        "--fifo",
        `${dir}/button.fifo`,
        "--state",
        `${dir}/state.dat`,
      ]);
      const status = await launcher.status();
      assertEquals(status.code, 1, launcher.transcript);
      assertStringIncludes(status.stderr, shared);
      assertStringIncludes(
        status.stderr,
        "Another user made it before this one's first run, and only they or an administrator can remove it",
      );
      assertStringIncludes(status.stderr, `/run/user/${user}, used instead`);
      // Nothing of the refused run is left: no FIFO, no state file, and the directory as it was.
      assertEquals([...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n !== ".deno"), []);
      assertEquals(Deno.statSync(shared).uid, 0);
    }).finally(() => removeTree(shared));
  },
);

testWith(
  [...NEEDS.system, requires("setpriv")],
  "a directory of the user's own whose mode refuses new files (0500, 0100): the launcher's refusal names that directory, its mode and the chmod that lets it start (its runtime directory, a --fifo's, a --state's)",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the launcher as another user")) return;
    const user = unusedUid(); // not a real user: its runtime directory is the test's own
    const shared = `/tmp/mmap-ipc-${user}`;
    await withTempDir(async (dir) => {
      const closed = (path: string, mode: number): string => {
        Deno.mkdirSync(path);
        Deno.chownSync(path, user, user);
        Deno.chmodSync(path, mode);
        return path;
      };
      const refusal = async (args: string[]): Promise<string> => {
        await using launcher = startLauncherAs(user, dir, args);
        const status = await launcher.status();
        assertEquals(status.code, 1, launcher.transcript);
        return status.stderr;
      };
      const cases: [string, string, string[]][] = [
        // A clumsy chmod of the runtime directory, which the launcher made on an earlier run.
        [closed(shared, 0o500), "0500", []],
        [closed(`${dir}/fifo`, 0o500), "0500", ["--fifo", `${dir}/fifo/button.fifo`]],
        [closed(`${dir}/state`, 0o100), "0100", ["--state", `${dir}/state/state.dat`]],
      ];
      for (const [directory, mode, args] of cases) {
        const stderr = await refusal(args);
        assertStringIncludes(stderr, "permission denied (EACCES)");
        assertStringIncludes(
          stderr,
          `its directory ${JSON.stringify(directory)} is this user's, but its mode (${mode}) ` +
            `does not let this user make anything in it: chmod u+wx ${shellQuote(directory)}`,
        );
        Deno.chmodSync(directory, 0o700); // for the next case, and the cleanup
      }
    }).finally(() => removeTree(shared));
  },
);

testWith(
  [...NEEDS.system, requires("setpriv"), requires("chattr")],
  "claims whose records cannot be removed at the launcher's stop (its claims directory made immutable): each claim is given up on its own, and each failure is said with its path",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the launcher as another user and chattr +i")) return;
    const user = unusedUid(); // not a real user: its runtime directory is the test's own
    const claims = `/tmp/mmap-ipc-${user}/claims`;
    const chattr = async (flag: string): Promise<void> => {
      const out = await new Deno.Command("chattr", { args: [flag, claims] }).output();
      assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    };
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      const state = `${dir}/state.dat`;
      await using launcher = startLauncherAs(user, dir, ["--fifo", fifo, "--state", state]);
      const pids = await running(launcher);
      let immutable = false;
      try {
        await chattr("+i");
        immutable = true;
        launcher.kill("SIGTERM");
        const { stderr } = await launcher.status();
        // Before, the first claim's failure skipped the release of the others, said as one line.
        for (const [kind, path] of [["FIFO", fifo], ["state file", state]]) {
          assertMatch(
            stderr,
            new RegExp(
              `Could not give up the claim on the ${kind} "${path}": .*remove claim.*EPERM`,
            ),
          );
        }
      } finally {
        if (immutable) await chattr("-i");
        await stopAll(launcher, [pids.led, pids.button]);
      }
    }).finally(() => removeTree(`/tmp/mmap-ipc-${user}`));
  },
);

testWith(
  [...NEEDS.system, requires("setpriv")],
  "a --state in a directory closed to the user (another's, 0700) is refused saying so, not with a path of /..",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the launcher as another user")) return;
    const user = unusedUid();
    await withTempDir(async (dir) => {
      const closed = `${dir}/closed`;
      Deno.mkdirSync(closed, { mode: 0o700 }); // root's
      await using launcher = startLauncherAs(user, dir, ["--state", `${closed}/x.dat`]);
      const status = await launcher.status();
      assertEquals(status.code, 1, launcher.transcript);
      assertStringIncludes(status.stderr, `this user may not look into ${closed} (permission`);
      assert(!status.stderr.includes("/.."), status.stderr);
    }).finally(() => removeTree(`/tmp/mmap-ipc-${user}`));
  },
);

testWith(
  [...NEEDS.system, requires("setpriv"), requires("chmod")],
  "run on a user's FIFO whose mode keeps its owner from reading it (0200): the launcher says it cannot hold it, holds it once a chmod lets it, and a press written just before the button dies is then not lost",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the launcher as another user")) return;
    const user = unusedUid(); // not a real user: its runtime directory is the test's own
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      makeFifo(fifo, 0o200);
      Deno.chmodSync(fifo, 0o200); // past the umask
      Deno.chownSync(fifo, user, user);
      await using launcher = startLauncherAs(user, dir, ["--fifo", fifo]);
      let restarted: number | undefined;
      const pids = { led: 0, button: 0 };
      try {
        for (const name of ["led", "button"] as const) {
          const started = await launcher.waitFor(new RegExp(`Started ${name} \\(pid (\\d+)\\)`));
          pids[name] = Number(started.match[1]);
        }
        await launcher.waitFor(
          /Cannot hold FIFO .*button\.fifo.*permission denied.*tried again when its mode changes/,
        );
        await launcher.waitFor(/its mode \(0200\) does not let its owner read it/);
        const since = launcher.lines.length;
        Deno.chmodSync(fifo, 0o600);
        await launcher.waitFor(/Holding the FIFO .*button\.fifo.* now/, { since });
        await launcher.waitFor(/is one this button may read now/, { since });
        await pressAsUserAndSee(launcher, user, fifo);
        // Held: a press the stopped button cannot read waits in the pipe for the next one.
        const next = launcher.lines.length;
        restarted = await pressAsButtonDies(launcher, pids.button, fifo);
        await ledShows(launcher, "Off", next);
        assertEquals(launcher.matching(/Cannot hold FIFO/).length, 1, launcher.transcript);
      } finally {
        await stopAll(launcher, [pids.led, pids.button, restarted]);
      }
    }).finally(() => removeTree(`/tmp/mmap-ipc-${user}`));
  },
);

testWith(
  [...NEEDS.system, requires("setpriv"), requires("chmod")],
  "run by a user who closes the directory of the FIFO and the state file (chmod 000): a restarted button waits for it, reads the FIFO once it is open again, tells of the state file once it can, and nothing stops",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the launcher as another user")) return;
    const user = unusedUid(); // not a real user: its runtime directory is the test's own
    await withTempDir(async (dir) => {
      const directory = `${dir}/run`;
      const fifo = `${directory}/button.fifo`;
      Deno.mkdirSync(directory, { mode: 0o700 });
      Deno.chownSync(directory, user, user);
      // The state file beside it, as in the original's layout: its watch meets the closed
      // directory too.
      await using launcher = startLauncherAs(user, dir, [
        "--fifo",
        fifo,
        "--state",
        `${directory}/state.dat`,
      ]);
      const pids = await running(launcher);
      const restarted: number[] = [];
      try {
        Deno.chmodSync(directory, 0o000);
        const since = launcher.lines.length;
        restarted.push(
          await killAndHear(
            launcher,
            { name: "button", pid: pids.button },
            /Cannot reach the FIFO .*button\.fifo.*does not let this user look into it.*permission denied.*once the directory lets it in again/,
          ),
        );
        await delay(2500); // a few looks at the closed directory: no crash, no second warning
        assertEquals(launcher.matching(/Cannot reach the FIFO/).length, 1, launcher.transcript);
        assertEquals(launcher.matching(/state file .* cannot be looked at/).length, 1);
        Deno.chmodSync(directory, 0o700);
        await launcher.waitFor(/is one this button may read now/, { since });
        await pressAsUserAndSee(launcher, user, fifo);
        // The restarted button could not look at its state file at its start: it has looked
        // since, and the file there all along is no news, but its removal is.
        assertEquals(
          launcher.matching(/The state file .* (is back at its path|was removed|was replaced)/),
          [],
        );
        Deno.removeSync(`${directory}/state.dat`);
        await launcher.waitFor(/The state file .*state\.dat.* was removed/, { since });
      } finally {
        Deno.chmodSync(directory, 0o700);
        await stopAll(launcher, [pids.led, pids.button, ...restarted]);
      }
    }).finally(() => removeTree(`/tmp/mmap-ipc-${user}`));
  },
);

testWith(
  [...NEEDS.system, requires("setpriv")],
  "a FIFO and a state file in a directory the user may enter and write but not read (0300), which inotify cannot watch: the launcher makes a removed FIFO again, presses work, and a removed state file is reported",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the launcher as another user")) return;
    const user = unusedUid(); // not a real user: its runtime directory is the test's own
    await withTempDir(async (dir) => {
      const directory = `${dir}/run`;
      const fifo = `${directory}/button.fifo`;
      Deno.mkdirSync(directory);
      Deno.chmodSync(directory, 0o300);
      Deno.chownSync(directory, user, user);
      const state = `${directory}/state.dat`;
      await using launcher = startLauncherAs(user, dir, ["--fifo", fifo, "--state", state]);
      const pids = await running(launcher);
      try {
        await launcher.waitFor(/FIFO .*button\.fifo.* cannot be watched .* every 500 ms instead/);
        const looking = await launcher.waitFor(
          /state file .*state\.dat.* cannot be watched .* every 500 ms instead/,
        );
        // Ready once its state file's first look is made: a test that closes the directory
        // right after "ready" must not meet a button that has yet to look (it would say so too).
        const ready = await launcher.waitFor(/Button ready/);
        assert(looking.index < ready.index, launcher.transcript);
        await pressAsUserAndSee(launcher, user, fifo);
        const since = launcher.lines.length;
        Deno.removeSync(fifo);
        await launcher.waitFor(/launch: Made the FIFO .* again/, { since });
        await launcher.waitFor(/button: .*presses reach this button again/, { since });
        const press = await spawnProgram("setpriv", [
          ...asUser(user),
          "sh",
          "-c",
          `echo 0 > '${fifo}'`,
        ])
          .status();
        assertEquals(press.code, 0);
        await ledShows(launcher, "Off", since);
        // The directory readable again: both are watched from the next look on, and say so.
        Deno.chmodSync(directory, 0o700);
        await launcher.waitFor(/FIFO .*button\.fifo.* can be watched again/, { since });
        await launcher.waitFor(/state file .*state\.dat.* can be watched again/, { since });
        Deno.removeSync(state);
        await launcher.waitFor(/The state file .*state\.dat.* was removed/, { since });
        assertEquals(launcher.matching(/Cannot keep the FIFO|crashed/), [], launcher.transcript);
      } finally {
        await stopAll(launcher, [pids.led, pids.button]);
      }
    }).finally(() => removeTree(`/tmp/mmap-ipc-${user}`));
  },
);

testWith(
  [...NEEDS.system, requires("setpriv")],
  "a FIFO removed as the button restarts, in a directory the user may not read (0300): the button says it was removed, never that another program's replaced it, though it sees the launcher's new one before it sees the path free",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the launcher as another user")) return;
    const user = unusedUid(); // not a real user: its runtime directory is the test's own
    await withTempDir(async (dir) => {
      const directory = `${dir}/run`;
      const fifo = `${directory}/button.fifo`;
      Deno.mkdirSync(directory);
      Deno.chmodSync(directory, 0o300);
      Deno.chownSync(directory, user, user);
      await using launcher = startLauncherAs(user, dir, ["--fifo", fifo]);
      const pids = await running(launcher);
      const restarted: number[] = [];
      try {
        // Removed right as the restarted button is ready: its first look (500 ms on) most often
        // comes after the launcher's new FIFO (its own look, then 200 ms), so each round is
        // likely to show it, and four rounds almost surely do (a fifth kill would be the fifth
        // crash in a row, after which the launcher gives up).
        let button = pids.button;
        for (let round = 0; round < 4; round++) {
          const since = launcher.lines.length;
          Deno.kill(button, "SIGKILL");
          const started = await launcher.waitFor(/Started button \(pid (\d+)\)/, { since });
          button = Number(started.match[1]);
          restarted.push(button);
          await launcher.waitFor(/Button ready/, { since: started.index });
          Deno.removeSync(fifo);
          await launcher.waitFor(/launch: Made the FIFO .* again/, { since });
          await launcher.waitFor(/button: .*presses reach this button again/, { since });
          assertEquals(launcher.matching(/another program/, since), [], launcher.transcript);
          assertEquals(
            launcher.matching(/button: The FIFO .*button\.fifo" was removed/, since).length,
            1,
            launcher.transcript,
          );
        }
        await pressAsUserAndSee(launcher, user, fifo);
      } finally {
        await stopAll(launcher, [pids.led, pids.button, ...restarted]);
      }
    }).finally(() => removeTree(`/tmp/mmap-ipc-${user}`));
  },
);

testWith(
  [...NEEDS.system, requires("setpriv")],
  "root's FIFO (0622) put at the path in the user's directory of mode 0500: the button says once, running and restarted, whose it is, why it does not read it and what to do, and reads it once chowned",
  async (t) => {
    if (await skippedWithoutRoot(t, "to run the launcher as another user")) return;
    const user = unusedUid(); // not a real user: its runtime directory is the test's own
    await withTempDir(async (dir) => {
      const directory = `${dir}/run`;
      const fifo = `${directory}/button.fifo`;
      Deno.mkdirSync(directory, { mode: 0o700 });
      Deno.chownSync(directory, user, user);
      await using launcher = startLauncherAs(user, dir, ["--fifo", fifo]);
      const pids = await running(launcher);
      const restarted: number[] = [];
      try {
        const since = launcher.lines.length;
        // As root: mkfifo -m 622, then the directory closed to new files (the launcher's too).
        Deno.removeSync(fifo);
        makeFifo(fifo, 0o622);
        Deno.chmodSync(fifo, 0o622);
        Deno.chmodSync(directory, 0o500);
        // The paths as a shell takes them (quoted only if they need it), as a regexp matches them.
        const q = (path: string): string => escapeRegExp(shellQuote(path));
        const said = new RegExp(
          `button: Cannot use FIFO "${fifo}": it belongs to uid 0, not to this process's uid ` +
            `${user} \\(mode 0622\\): this button reads only a FIFO of its own user's.*` +
            `rm ${q(fifo)}.*chown ${user} ${q(fifo)}.*its mode \\(0500\\).*chmod u\\+wx ${
              q(directory)
            }`,
        );
        await launcher.waitFor(said, { since });
        // Once, not at each of its looks (every second).
        await delay(2_500);
        assertEquals(launcher.matching(said, since).length, 1, launcher.transcript);
        // A restarted button says it once too.
        restarted.push(
          await killAndHear(launcher, { name: "button", pid: pids.button }, /restarting/),
        );
        await until(() => launcher.matching(said, since).length === 2, "the restart's line");
        await delay(2_500);
        assertEquals(launcher.matching(said, since).length, 2, launcher.transcript);
        Deno.chownSync(fifo, user, user);
        await launcher.waitFor(/button: .*presses reach this button again/, { since });
        await pressAsUserAndSee(launcher, user, fifo);
      } finally {
        await stopAll(launcher, [pids.led, pids.button, ...restarted]);
      }
    }).finally(() => removeTree(`/tmp/mmap-ipc-${user}`));
  },
);

testWith(
  [...NEEDS.system, requires("sh"), requires("sleep")],
  "a restarted button that finds its FIFO taken (a user's file, a FIFO another process reads) leaves it alone and waits for the path, and the LED runs on",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      await using launcher = startLauncher(dir, ["--fifo", fifo]);
      const pids = await running(launcher);
      let reader: ChildProcess | undefined;
      try {
        // A file of the user's where the FIFO was, in one step: a button that sees its FIFO
        // removed makes it again at once, and a write to the path would then go into it.
        Deno.writeTextFileSync(`${dir}/notes`, "notes");
        Deno.renameSync(`${dir}/notes`, fifo);
        let since = launcher.lines.length;
        Deno.kill(pids.button, "SIGKILL");
        const waiting =
          /not a FIFO.*This button leaves it alone and reads the FIFO the launcher makes/;
        await launcher.waitFor(waiting, { since });
        // Not a crash: nothing counts towards giving up, and the LED is not stopped.
        assertEquals(launcher.matching(/crashed|restarting/, since).length, 1, launcher.transcript);
        assert(!processGone(pids.led), "the LED was stopped");
        assertEquals(Deno.readTextFileSync(fifo), "notes", "the button touched the user's file");
        // Once the user takes the file away, the launcher makes the FIFO, the waiting button
        // reads it, and presses work.
        Deno.removeSync(fifo);
        await launcher.waitFor(/launch: Made the FIFO .* again/, { since });
        await launcher.waitFor(/button: .*presses reach this button again/, { since });
        await writeAndLeave(fifo, "0\n");
        await ledShows(launcher, "On", since);

        // A FIFO of the user's that another process reads, then the button killed again.
        const waited = await launcher.waitFor(/Started button \(pid (\d+)\)/, { since });
        pids.button = Number(waited.match[1]);
        Deno.removeSync(fifo);
        await spawnProgram("mkfifo", ["-m", "600", fifo]).status();
        // It reads what is written: the launcher holds this FIFO too, and what a reader left
        // unread would wait there for the button.
        const taken = `${dir}/taken`;
        reader = spawnProgram("sh", [
          "-c",
          `exec 3<> '${fifo}'; echo open; exec cat <&3 > '${taken}'`,
        ]);
        await reader.waitFor(/open/);
        since = launcher.lines.length;
        Deno.kill(pids.button, "SIGKILL");
        await launcher.waitFor(/pid \d+ \(cat\) reads it.*This button leaves it alone/, { since });
        const restarted = await launcher.waitFor(/Started button \(pid (\d+)\)/, { since });
        // The presses written there go to the user's reader, not to the button.
        await writeAndLeave(fifo, "0\n");
        await until(() => readFileText(taken) === "0\n", "the press read by the user's reader");
        await new Promise((resolve) => setTimeout(resolve, 300));
        assertEquals(ledStates(launcher, since), [], launcher.transcript);
        assertEquals(launcher.matching(/crashed|exited with code/, since), []);
        assert(!processGone(pids.led), "the LED was stopped");
        pids.button = Number(restarted.match[1]);
        assert(!processGone(pids.button), "the restarted button exited");
        assertEquals((await Deno.lstat(fifo)).isFifo, true, "the user's FIFO was removed");
        // Its reader gone and the FIFO left in place, the button reads it, as a fresh one would.
        killIfRunning(reader.pid);
        await reader.status();
        // Said as news, not as a warning.
        await launcher.waitFor(
          /\[INF\].*is one this button may read now.*presses reach this button again/,
          { since },
        );
        await writeAndLeave(fifo, "0\n");
        await ledShows(launcher, "Off", since);
      } finally {
        if (reader !== undefined) {
          killIfRunning(reader.pid);
          await reader.status();
        }
        await stopAll(launcher, [pids.led, pids.button]);
      }
    });
  },
);

testWith(
  NEEDS.system,
  "the LED with --syslog logs as usual, with or without a system log daemon",
  async () => {
    await withTempDir(async (dir) => {
      await using led = spawnDeno(`${ROOT}consumers/led.ts`, [
        "--state",
        `${dir}/state.dat`,
        "--syslog",
      ]);
      await led.waitFor(/LED Status: Off/);
      led.kill("SIGTERM");
      const status = await led.status();
      assertEquals(status.code, 0, led.transcript);
    });
  },
);

testWith(
  NEEDS.system,
  "the launcher runs its children without V8's code cache, and tells only the button's first start that it has just made its FIFO (a restarted button looks for other readers itself)",
  async () => {
    await withTempDir(async (dir) => {
      await using launcher = startLauncher(dir, [
        "--state",
        `${dir}/state.dat`,
        "--fifo",
        `${dir}/button.fifo`,
      ]);
      const argsOf = (pid: number): string[] =>
        (readFileText(`/proc/${pid}/cmdline`) ?? "").split("\0");
      /** Its `deno run` flags and its script's own arguments. */
      const split = (args: string[]): { deno: string[]; script: string[] } => {
        const at = args.findIndex((arg) => arg.endsWith(".ts"));
        return { deno: args.slice(0, at), script: args.slice(at + 1) };
      };
      const pids = await running(launcher);
      let restarted: number | undefined;
      try {
        for (const pid of [pids.led, pids.button]) {
          assert(split(argsOf(pid)).deno.includes("--no-code-cache"), argsOf(pid).join(" "));
        }
        // With the identity of the FIFO the launcher made: another put there since is looked at.
        const first = split(argsOf(pids.button)).script;
        assertEquals(
          first[first.indexOf("--fifo-checked") + 1],
          statPath(`${dir}/button.fifo`)?.identity,
          first.join(" "),
        );
        const since = launcher.lines.length;
        Deno.kill(pids.button, "SIGKILL");
        const again = await launcher.waitFor(/Started button \(pid (\d+)\)/, { since });
        restarted = Number(again.match[1]);
        await launcher.waitFor(/Button ready/, { since });
        const args = split(argsOf(restarted));
        assert(args.deno.includes("--no-code-cache"), args.deno.join(" "));
        assert(!args.script.includes("--fifo-checked"), args.script.join(" "));
      } finally {
        await stopAll(launcher, [pids.led, pids.button, ...(restarted ? [restarted] : [])]);
      }
    });
  },
);

/**
 * Runs a button and an LED alone on a state file in `dir`, stops each (the LED first) with
 * `stop`, and checks that each exited 0, not by a signal (which would have left its FIFO, and
 * the LED its cell in /dev/shm), and that nothing of them is left.
 */
async function stopsCleanlyAlone(
  dir: string,
  stop: (child: ChildProcess) => Promise<void>,
): Promise<void> {
  const state = `${dir}/state.dat`;
  const fifo = `${dir}/button.fifo`;
  const cells = (): string[] =>
    listDirectory("/dev/shm").filter((name) => name.startsWith("mmap-ipc-cell-"));
  const before = cells();
  await using button = spawnDeno(`${ROOT}producers/button.ts`, [
    "--state",
    state,
    "--fifo",
    fifo,
  ]);
  await button.waitFor(/Button ready/);
  await using led = spawnDeno(`${ROOT}consumers/led.ts`, ["--state", state]);
  await led.waitFor(/LED Status: Off/);
  for (const child of [led, button]) {
    await stop(child);
    const status = await child.status();
    assertEquals([status.code, status.signal], [0, null], child.transcript);
  }
  assertThrows(() => Deno.lstatSync(fifo), Deno.errors.NotFound);
  assertEquals(cells(), before, "a lone cell left in /dev/shm");
}

testWith(
  NEEDS.system,
  "a button and an LED run alone stop cleanly on SIGHUP (their terminal closed), leaving nothing behind",
  async () => {
    await withTempDir((dir) =>
      stopsCleanlyAlone(dir, async (child) => {
        child.kill("SIGHUP");
        await child.status();
      })
    );
  },
);

testWith(
  NEEDS.system,
  "a button and an LED run alone and sent Ctrl+C again and again while they stop still stop cleanly: exit 0, nothing left behind",
  async () => {
    await withTempDir((dir) =>
      stopsCleanlyAlone(dir, async (child) => {
        const exited = child.status();
        let ended = false;
        void exited.then(() => ended = true);
        // Every 2 ms until it is gone: some land while it removes its FIFO or its cell, and some
        // while Deno itself tears down.
        while (!ended) {
          child.kill("SIGINT");
          await delay(2);
        }
      })
    );
  },
);

testWith(
  NEEDS.system,
  "an LED whose button stops just before the LED itself (a launcher stops both at once) says nothing of it; a button that stops alone is still said",
  async () => {
    await withTempDir(async (dir) => {
      const state = `${dir}/state.dat`;
      const fifo = `${dir}/button.fifo`;
      const first = await startButton(state, fifo);
      try {
        await using led = spawnDeno(`${ROOT}consumers/led.ts`, ["--state", state]);
        await led.waitFor(/Following the button/);
        first.kill("SIGTERM");
        assertEquals((await first.status()).code, 0, first.transcript);
        await led.waitFor(/The button \(pid \d+\) stopped/);
        const since = led.lines.length;
        await using second = await startButton(state, fifo);
        await led.waitFor(/Following the button/, { since });
        // As a launcher stops them, the LED's SIGTERM a moment after the button's: here once
        // the button is gone, so the button's end surely reaches the LED first.
        second.kill("SIGTERM");
        assertEquals((await second.status()).code, 0, second.transcript);
        led.kill("SIGTERM");
        assertEquals((await led.status()).code, 0, led.transcript);
        const said = led.lines.slice(since).filter((line) => /stopped|died/.test(line.text));
        assertEquals(said, [], led.transcript);
      } finally {
        await first[Symbol.asyncDispose]();
      }
    });
  },
);

testWith(
  NEEDS.system,
  "a button run by hand with --parent-pid alone makes its FIFO (only --fifo-from-parent leaves that to the parent), reads presses, and removes it at exit",
  async () => {
    await withTempDir(async (dir) => {
      const state = `${dir}/state.dat`;
      const fifo = `${dir}/button.fifo`;
      // Its parent is this test, which makes no FIFO.
      await using button = spawnDeno(`${ROOT}producers/button.ts`, [
        "--state",
        state,
        "--fifo",
        fifo,
        "--parent-pid",
        String(Deno.pid),
      ]);
      await button.waitFor(/Button ready/);
      assert(Deno.lstatSync(fifo).isFifo, "no FIFO made");
      await writeAndLeave(fifo, "0\n");
      await until(() => stateValue(state) === 1, "the press applied");
      button.kill("SIGTERM");
      assertEquals((await button.status()).code, 0, button.transcript);
      assertThrows(() => Deno.lstatSync(fifo), Deno.errors.NotFound);
    });
  },
);

// --- the original C programs -----------------------------------------------------------------

testWith([...NEEDS.system, requires("gcc")], "our button drives the original C LED", async () => {
  await withTempDir(async (dir) => {
    const original = await buildC(dir, "original");
    const state = `${dir}/data.dat`;
    const fifo = `${dir}/mmap_file`;
    await using cLed = spawnProgram(original, ["led", state]);
    assertEquals(await cLed.nextLine(), "LED Status: Off");
    await using launcher = startLauncher(dir, ["--state", state, "--fifo", fifo]);
    const pids = await running(launcher);
    try {
      await writeAndLeave(fifo, "0\n");
      assertEquals(await cLed.nextLine(), "LED Status: On");
      await writeAndLeave(fifo, "0\n");
      assertEquals(await cLed.nextLine(), "LED Status: Off");
      assertEquals(Deno.statSync(state).size, 258, "the original's file size changed");
    } finally {
      await stopAll(launcher, [pids.led, pids.button]);
    }
  });
});

testWith([...NEEDS.system, requires("gcc")], "the original C button drives our LED", async () => {
  await withTempDir(async (dir) => {
    const original = await buildC(dir, "original");
    const state = `${dir}/data.dat`;
    const fifo = `${dir}/mmap_file`;
    await using cButton = spawnProgram(original, ["button", state, fifo]);
    await using led = spawnDeno(`${ROOT}consumers/led.ts`, ["--state", state]);
    await led.waitFor(/LED Status: Off/);
    const press = async (expected: "On" | "Off", since: number): Promise<number> => {
      // Like the original, the stand-in opens the FIFO anew for each read and sleeps 100 ms
      // after a press: a write reaches it at once only while it waits in open().
      await until(() => waitingForWriter(cButton.pid), "the C button waiting", { child: cButton });
      const fd = await Deno.open(fifo, { write: true });
      await fd.write(new TextEncoder().encode("0\n"));
      fd.close();
      return await ledShows(led, expected, since);
    };
    let since = await press("On", 0);
    since = await press("Off", since);
    await press("On", since);
    assertEquals(ledStates(led), ["Off", "On", "Off", "On"]);
  });
});

/**
 * Kills `button` (run alone beside `led`) and returns the LED's warning of its death, after the
 * LED first said it followed it.
 */
async function ledSaysButtonDied(led: ChildProcess, button: ChildProcess): Promise<string> {
  await led.waitFor(new RegExp(`Following the button \\(pid ${button.pid}\\)`));
  button.kill("SIGKILL");
  await button.status();
  return (await led.waitFor(new RegExp(`The button \\(pid ${button.pid}\\) died; .*`))).match[0];
}

testWith(
  NEEDS.system,
  "a button run alone dies: the LED says which state file it follows, and that it is no longer at its path once it was removed",
  async () => {
    await withTempDir(async (dir) => {
      const state = `${dir}/state.dat`;
      const fifo = `${dir}/button.fifo`;
      await using first = await startButton(state, fifo);
      await using led = spawnDeno(`${ROOT}consumers/led.ts`, ["--state", state]);
      assertStringIncludes(
        await ledSaysButtonDied(led, first),
        `following the state file ${JSON.stringify(state)} until a button is back`,
      );
      // A second button on the same file, then the file removed under both: the LED still follows
      // the inode it opened, which nothing at the path is any more.
      await using second = await startButton(state, fifo);
      Deno.removeSync(state);
      await second.waitFor(/removed/);
      const line = await ledSaysButtonDied(led, second);
      assertStringIncludes(
        line,
        `following the state file ${
          JSON.stringify(state)
        } as it was opened, until a button is back; it is no longer there (removed or replaced since): a button started there now makes a new one, which this process reads only once it is started again`,
      );
    });
  },
);

testWith(
  NEEDS.system,
  "a button run alone on --shm dies: the LED names the shared memory state it follows, not a file",
  async () => {
    await withTempDir(async (dir) => {
      await withShmName(async (name) => {
        const fifo = `${dir}/button.fifo`;
        await using button = spawnDeno(`${ROOT}producers/button.ts`, [
          "--shm",
          name,
          "--fifo",
          fifo,
        ]);
        await button.waitFor(/Button ready/);
        await using led = spawnDeno(`${ROOT}consumers/led.ts`, ["--shm", name]);
        const line = await ledSaysButtonDied(led, button);
        assertStringIncludes(
          line,
          `following the shared memory state ${
            JSON.stringify(name)
          } (/dev/shm${name}) until a button is back`,
        );
      });
    });
  },
);
