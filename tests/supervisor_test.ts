/**
 * The supervisor on its own, with real child processes: what a crash report quotes of a child's
 * error output, a child that cannot be started at all, and the hook that runs before a restart.
 */
import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import { logger } from "../app/logging.ts";
import { ChildCrashLoop, type RestartPolicy, Supervisor } from "../app/supervisor.ts";
import { ErrorOutput, MAX_LINE_LENGTH, TAIL_LINES } from "../app/error_output.ts";
import { ROOT } from "./helpers/paths.ts";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { denoCommand, runUnderFdLimit, spawnProgram } from "./helpers/spawn.ts";
import { EXIT_SHORTAGE } from "../app/exit_status.ts";
import { withTempDir } from "./helpers/temp.ts";
import { until } from "./helpers/waiting.ts";
import { readFileText, statPath } from "../ffi/posix.ts";

/** Two quick crashes end it. */
const QUICK: RestartPolicy = {
  initialDelayMs: 1,
  maxDelayMs: 1,
  stableAfterMs: 600_000,
  maxCrashes: 2,
  shortageGraceMs: 0,
};

async function crashLoop(supervisor: Supervisor): Promise<ChildCrashLoop> {
  const error = await assertRejects(() => supervisor.run(new AbortController().signal));
  assertInstanceOf(error, ChildCrashLoop);
  return error;
}

testWith(
  NEEDS.childrenAndFiles,
  "a crash report quotes the child's error line, not only the stack trace after it, and stays short",
  async () => {
    await withTempDir(async (dir) => {
      const script = `${dir}/crash.ts`;
      const long = "x".repeat(MAX_LINE_LENGTH * 2);
      Deno.writeTextFileSync(
        script,
        [
          `console.error("starting up");`,
          `console.error("error: Uncaught (in promise) Error: the real cause: the disk is on fire");`,
          `for (let i = 0; i < 40; i++) console.error(\`    at frame\${i} (file:///x.ts:\${i}:1)\`);`,
          `console.error("${long}");`,
          `console.error("    at the last frame");`,
          `Deno.exit(1);`,
        ].join("\n"),
      );
      const supervisor = new Supervisor(
        { name: "crasher", script, permissions: [], args: [] },
        { log: logger("test"), config: `${ROOT}deno.json`, policy: QUICK },
      );
      const { message } = await crashLoop(supervisor);
      assertStringIncludes(message, "crasher crashed 2 times in a row");
      assertStringIncludes(message, "the real cause: the disk is on fire");
      assertStringIncludes(message, "at the last frame", "the tail");
      assert(!message.includes("starting up"), message);
      assertStringIncludes(message, `(${40 + 2 - TAIL_LINES} more lines)`);
      assert(!message.includes(long), "a long line is quoted whole");
      assert(message.length < (TAIL_LINES + 2) * (MAX_LINE_LENGTH + 20), message);
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a child that cannot be started counts as a crash: the loop ends with the reason and the path",
  async () => {
    await withTempDir(async (dir) => {
      const executable = `${dir}/no-deno-here`;
      const supervisor = new Supervisor(
        { name: "ghost", script: `${dir}/none.ts`, permissions: [], args: [] },
        { log: logger("test"), config: `${ROOT}deno.json`, policy: QUICK, executable },
      );
      const { message } = await crashLoop(supervisor);
      assertStringIncludes(message, "ghost crashed 2 times in a row");
      assertStringIncludes(message, `could not be started with "${executable}"`);
      assertStringIncludes(message, "No such file or directory");
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a crash loop of a child that said nothing tells how it died the last time",
  async () => {
    await withTempDir(async (dir) => {
      const script = `${dir}/silent.ts`;
      Deno.writeTextFileSync(script, `Deno.kill(Deno.pid, "SIGKILL");`);
      const supervisor = new Supervisor(
        { name: "silent", script, permissions: ["--allow-run"], args: [] },
        { log: logger("test"), config: `${ROOT}deno.json`, policy: QUICK },
      );
      const { message } = await crashLoop(supervisor);
      assertStringIncludes(
        message,
        "silent crashed 2 times in a row (the last time it was killed by SIGKILL); its last error: (no output)",
      );
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a child runs in a session of its own, without a controlling terminal: what a terminal sends the launcher's process group never reaches it",
  async () => {
    await withTempDir(async (dir) => {
      const script = `${dir}/session.ts`;
      const started = `${dir}/started`;
      Deno.writeTextFileSync(
        script,
        `Deno.writeTextFileSync(${JSON.stringify(started)}, "");\nsetInterval(() => {}, 60_000);`,
      );
      const supervisor = new Supervisor(
        { name: "session", script, permissions: [`--allow-write=${dir}`], args: [] },
        { log: logger("test"), config: `${ROOT}deno.json`, policy: QUICK },
      );
      const stop = new AbortController();
      const running = supervisor.run(stop.signal);
      try {
        await until(() => statPath(started) !== undefined, "the child started");
        // pid (comm) state ppid pgrp session tty_nr ...
        const [pid, ppid, group, session, terminal] =
          (readFileText(`/proc/${supervisor.pid}/stat`) ?? "")
            .replace(/^(\d+) \(.*\) \S+ /, "$1 ").split(" ").map(Number);
        assertEquals(pid, supervisor.pid);
        assertEquals(ppid, Deno.pid);
        assertEquals([group, session, terminal], [pid, pid, 0]);
      } finally {
        stop.abort();
        await running;
      }
    });
  },
);

Deno.test("a crash report finds Deno's coloured error line, and quotes it without its colours", () => {
  const output = new ErrorOutput();
  output.add("\x1b[0m\x1b[1m\x1b[31merror\x1b[0m: Uncaught (in promise) Error: gone");
  for (let i = 1; i <= 8; i++) output.add(`    at step ${i}`);
  const summary = output.summary();
  // The escape codes hid "error" from the search: the report had the stack's tail only.
  assertStringIncludes(summary, "error: Uncaught (in promise) Error: gone");
  assert(!summary.includes("\x1b"), summary);
});

Deno.test("a crash report keeps a journal-format error line (<3>...) ahead of the lines after it, and quotes no warning", () => {
  const output = new ErrorOutput();
  output.add("<6>mmap-ipc.button: Button ready");
  output.add("<3>mmap-ipc.button: Cannot open the remote link: gone");
  for (let i = 1; i <= 8; i++) output.add(`    at step ${i}`);
  output.add("<4>mmap-ipc.button: a read error, retrying");
  const summary = output.summary();
  assertStringIncludes(summary, "<3>mmap-ipc.button: Cannot open the remote link: gone");
  assertStringIncludes(summary, "(3 more lines)");
  assertStringIncludes(summary, "at step 8");
  assert(!summary.includes("retrying"), summary);
});

Deno.test("a crash report on a child that printed only warnings says it printed no error line", () => {
  const output = new ErrorOutput();
  output.add("2026-12-04 10:00:00.000 [WRN] mmap-ipc.led: the state file: Input/output error");
  assertEquals(
    output.summary(),
    "no error line; its last lines: 2026-12-04 10:00:00.000 [WRN] mmap-ipc.led: the state file: Input/output error",
  );
  assertEquals(new ErrorOutput().summary(), "");
});

testWith(
  NEEDS.childrenAndFiles,
  "a crash report quotes the child's last error, never a warning it logged before (one that says 'error' too)",
  async () => {
    await withTempDir(async (dir) => {
      // Warns as the button does (the real logger, to standard error), then fails: with Deno's
      // uncaught error and its stack, or with the plain line the programs end on.
      const endings: [string, string, string][] = [
        [
          "uncaught",
          `throw new Error("the state cell is gone");`,
          "error: Uncaught (in promise) Error: the state cell is gone",
        ],
        [
          "plain",
          `console.error("button: Cannot open FIFO: permission denied (EACCES)"); Deno.exit(1);`,
          "button: Cannot open FIFO: permission denied (EACCES)",
        ],
      ];
      for (const [name, ending, expected] of endings) {
        const script = `${dir}/${name}.ts`;
        Deno.writeTextFileSync(
          script,
          [
            `import { logger, setupLogging } from "${ROOT}app/logging.ts";`,
            `setupLogging();`,
            `const log = logger("button");`,
            `log.warn("Could not send the press to MQTT: Input/output error (EIO); dropped");`,
            `for (let i = 0; i < 8; i++) log.warn(\`retrying \${i}\`);`,
            `await new Promise((resolve) => setTimeout(resolve, 100));`,
            ending,
          ].join("\n"),
        );
        const supervisor = new Supervisor(
          { name, script, permissions: ["--allow-ffi"], args: [] },
          { log: logger("test"), config: `${ROOT}deno.json`, policy: QUICK },
        );
        const { message } = await crashLoop(supervisor);
        assertStringIncludes(message, `its last error: ${expected}`);
        assert(!message.includes("Input/output error"), message);
        assert(!message.includes("retrying"), message);
      }
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "beforeRestart runs before each restart, not the first start; what it throws is logged and the child starts again",
  async () => {
    await withTempDir(async (dir) => {
      // The child fails until the file it needs is there, as the LED did with its state
      // written over; the hook puts it there at its second call.
      const script = `${dir}/needs_file.ts`;
      Deno.writeTextFileSync(
        script,
        [
          `try { Deno.statSync("${dir}/needed"); } catch { Deno.exit(1); }`,
          `Deno.writeTextFileSync("${dir}/running", "");`,
          `setTimeout(() => {}, 600_000);`,
        ].join("\n"),
      );
      const warnings: string[] = [];
      const log = { ...logger("test"), warn: (message: string) => warnings.push(message) };
      let calls = 0;
      const supervisor = new Supervisor(
        {
          name: "needy",
          script,
          permissions: [`--allow-read=${dir}`, `--allow-write=${dir}`],
          args: [],
        },
        {
          log,
          config: `${ROOT}deno.json`,
          policy: { ...QUICK, maxCrashes: 5 },
          beforeRestart: () => {
            if (++calls === 1) throw new Error("the first repair failed");
            Deno.writeTextFileSync(`${dir}/needed`, "");
          },
        },
      );
      const stop = new AbortController();
      const running = supervisor.run(stop.signal);
      try {
        await until(() => statPath(`${dir}/running`) !== undefined, "the child running");
      } finally {
        stop.abort();
        await running;
      }
      assertEquals(calls, 2);
      assertEquals(warnings.filter((line) => line.includes("restarting in")).length, 2);
      assertEquals(warnings.filter((line) => line.includes("the first repair failed")), [
        "Before restarting needy: the first repair failed",
      ]);
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a stop during the pause before a restart ends the pause at once and skips beforeRestart",
  async () => {
    await withTempDir(async (dir) => {
      const script = `${dir}/fails.ts`;
      Deno.writeTextFileSync(script, "Deno.exit(1);");
      let pausing: () => void = () => {};
      const paused = new Promise<void>((resolve) => pausing = resolve);
      const log = {
        ...logger("test"),
        warn: (message: string) => message.includes("restarting in") && pausing(),
      };
      let calls = 0;
      const supervisor = new Supervisor(
        { name: "failing", script, permissions: [], args: [] },
        {
          log,
          config: `${ROOT}deno.json`,
          // A pause far longer than the test's guard: only the stop can end it.
          policy: { ...QUICK, initialDelayMs: 600_000, maxDelayMs: 600_000 },
          beforeRestart: () => calls++,
        },
      );
      const stop = new AbortController();
      const running = supervisor.run(stop.signal);
      try {
        await paused;
      } finally {
        stop.abort();
        await running;
      }
      assertEquals(calls, 0, "no repair for a child that will not start again");
    });
  },
);

/**
 * A child script that follows `plan`, one run a step: it runs `ms` milliseconds and exits with
 * `code` (saying a shortage for `EXIT_SHORTAGE`); once the plan is done, it keeps running.
 */
function plannedChild(dir: string, plan: { ms: number; code: number }[]): string {
  const script = `${dir}/planned.ts`;
  Deno.writeTextFileSync(
    script,
    [
      `const plan = ${JSON.stringify(plan)};`,
      `const run = Number(Deno.readTextFileSync("${dir}/runs") || "0");`,
      `Deno.writeTextFileSync("${dir}/runs", String(run + 1));`,
      `const step = plan[run];`,
      `if (step !== undefined) {`,
      `  await new Promise((resolve) => setTimeout(resolve, step.ms));`,
      `  if (step.code === ${EXIT_SHORTAGE}) {`,
      `    console.error("Cannot open inotify: too many open files (EMFILE)");`,
      `  }`,
      `  Deno.exit(step.code);`,
      `}`,
      `Deno.writeTextFileSync("${dir}/running", "");`,
      `setInterval(() => {}, 1000);`,
    ].join("\n"),
  );
  Deno.writeTextFileSync(`${dir}/runs`, "");
  return script;
}

/** `count` quick exits with `code`. */
function quick(count: number, code: number): { ms: number; code: number }[] {
  return Array.from({ length: count }, () => ({ ms: 0, code }));
}

/** Runs `plannedChild(plan)` under `policy` until it runs on; what it warned of. */
async function survives(
  dir: string,
  plan: { ms: number; code: number }[],
  policy: RestartPolicy,
): Promise<string[]> {
  const warnings: string[] = [];
  const log = { ...logger("test"), warn: (message: string) => warnings.push(message) };
  const supervisor = new Supervisor(
    {
      name: "short",
      script: plannedChild(dir, plan),
      permissions: [`--allow-read=${dir}`, `--allow-write=${dir}`],
      args: [],
    },
    { log, config: `${ROOT}deno.json`, policy },
  );
  const stop = new AbortController();
  const running = supervisor.run(stop.signal);
  try {
    await Promise.race([
      until(() => statPath(`${dir}/running`) !== undefined, "the child running"),
      running.then(() => {
        throw new Error("the supervisor stopped first");
      }),
    ]);
  } finally {
    stop.abort();
    await running.catch(() => {});
  }
  await running; // a crash loop fails the test here
  return warnings;
}

testWith(
  NEEDS.childrenAndFiles,
  "a child that exits for a shortage (EX_TEMPFAIL) is restarted without counting crashes while it may pass, and says why",
  async () => {
    await withTempDir(async (dir) => {
      // Two crashes would end it: four shortages must not.
      const warnings = await survives(dir, quick(4, EXIT_SHORTAGE), {
        ...QUICK,
        shortageGraceMs: 600_000,
      });
      assertEquals(warnings.length, 4, warnings.join("\n"));
      for (const warning of warnings) {
        assertStringIncludes(warning, "short is short of a system resource");
        assertStringIncludes(warning, "too many open files (EMFILE)");
        assertStringIncludes(warning, "not counted as a crash");
      }
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "the shortage grace starts at the first shortage, not at the start of a child that ran long before it",
  async () => {
    await withTempDir(async (dir) => {
      // Ran 800 ms, longer than the grace, then three shortages in a row: all within it.
      const plan = [{ ms: 800, code: EXIT_SHORTAGE }, ...quick(3, EXIT_SHORTAGE)];
      const warnings = await survives(dir, plan, {
        ...QUICK,
        stableAfterMs: 400,
        shortageGraceMs: 500,
      });
      assertEquals(warnings.filter((line) => line.includes("short of")).length, 4);
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a long run that ends in a shortage ends the run of crashes before it",
  async () => {
    await withTempDir(async (dir) => {
      // A crash, a long run ended by a shortage, a crash: never two crashes in a row.
      const plan = [...quick(1, 1), { ms: 800, code: EXIT_SHORTAGE }, ...quick(1, 1)];
      const warnings = await survives(dir, plan, {
        ...QUICK,
        stableAfterMs: 400,
        shortageGraceMs: 600_000,
      });
      assertEquals(warnings.length, 3, warnings.join("\n"));
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a shortage that outlasts its grace counts as crashes, and ends in a crash loop that names it",
  async () => {
    await withTempDir(async (dir) => {
      const supervisor = new Supervisor(
        {
          name: "short",
          script: plannedChild(dir, quick(1_000, EXIT_SHORTAGE)),
          permissions: [`--allow-read=${dir}`, `--allow-write=${dir}`],
          args: [],
        },
        { log: logger("test"), config: `${ROOT}deno.json`, policy: QUICK },
      );
      const { message } = await crashLoop(supervisor);
      assertStringIncludes(message, "short crashed 2 times in a row");
      assertStringIncludes(message, `exited with code ${EXIT_SHORTAGE}`);
      assertStringIncludes(message, "too many open files (EMFILE)");
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, requires("sh")],
  "failureExitStatus() gives EX_TEMPFAIL for a real EMFILE (Deno's and our FFI's) and 1 for other failures",
  async () => {
    await withTempDir(async (dir) => {
      const script = `${dir}/exhaust.ts`;
      Deno.writeTextFileSync(
        script,
        [
          `import { failureExitStatus } from "${ROOT}app/exit_status.ts";`,
          `import { osError } from "${ROOT}ffi/errno.ts";`,
          `const which = Deno.args[0];`,
          `const held = [];`,
          `try {`,
          `  if (which === "other") Deno.openSync("${dir}/missing");`,
          `  for (;;) held.push(Deno.openSync("/dev/null"));`,
          `} catch (error) {`,
          `  const thrown = which === "wrapped"`,
          `    ? new Error("could not start", { cause: error })`,
          `    : which === "ffi" ? osError("open inotify", "x", 24) : error;`,
          `  console.error((error as Error).message);`,
          `  Deno.exit(failureExitStatus(thrown));`,
          `}`,
        ].join("\n"),
      );
      const [deno, ...rest] = denoCommand(script, [], ["--allow-read", "--allow-ffi"]);
      const quoted = [deno, ...rest].map((word) => `'${word}'`).join(" ");
      const statusOf = async (which: string): Promise<number> =>
        (await spawnProgram("sh", ["-c", `ulimit -n 64; exec ${quoted} ${which}`]).status()).code;
      assertEquals(await statusOf("deno"), EXIT_SHORTAGE);
      assertEquals(await statusOf("wrapped"), EXIT_SHORTAGE);
      assertEquals(await statusOf("ffi"), EXIT_SHORTAGE);
      assertEquals(await statusOf("other"), 1);
    });
  },
);

/**
 * Runs a child named `name` whose SIGTERM handler is `onTerm` (JavaScript), given `graceMs` to
 * stop, and stops it once it runs; returns what the supervisor warned and the child's pid.
 */
async function stopChild(
  dir: string,
  name: string,
  onTerm: string,
  graceMs: number,
): Promise<{ warnings: string[]; pid: number | undefined }> {
  const script = `${dir}/${name}.ts`;
  const ready = `${dir}/ready`;
  Deno.writeTextFileSync(
    script,
    [
      `Deno.addSignalListener("SIGTERM", ${onTerm});`,
      `Deno.writeTextFileSync(${JSON.stringify(ready)}, "");`,
      `setInterval(() => {}, 1_000);`,
    ].join("\n"),
  );
  const warnings: string[] = [];
  const log = { ...logger("test"), warn: (message: string) => warnings.push(message) };
  const supervisor = new Supervisor(
    { name, script, permissions: [`--allow-write=${dir}`], args: [], stopGraceMs: graceMs },
    { log, config: `${ROOT}deno.json`, policy: QUICK },
  );
  const stop = new AbortController();
  const running = supervisor.run(stop.signal);
  let pid: number | undefined;
  try {
    await until(() => statPath(ready) !== undefined, `${ready} made by the child`);
    pid = supervisor.pid;
  } finally {
    stop.abort();
    await running;
  }
  return { warnings, pid };
}

testWith(
  NEEDS.childrenAndFiles,
  "a child that does not stop within its grace after SIGTERM is killed with SIGKILL, and the launcher says so, naming it and the grace",
  async () => {
    await withTempDir(async (dir) => {
      // Ignores SIGTERM, as a bridge still saying goodbye to a silent broker does for a while.
      const { warnings, pid } = await stopChild(dir, "stubborn", "() => {}", 300);
      assert(pid !== undefined, "the child ran");
      assertEquals(
        warnings,
        [`stubborn (pid ${pid}) did not stop within 0.3 s of SIGTERM; killed it with SIGKILL`],
      );
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a child that stops within its grace after SIGTERM is not said to be killed",
  async () => {
    await withTempDir(async (dir) => {
      // A grace no stop comes near: the test does not hang on how fast the child is.
      const { warnings } = await stopChild(dir, "prompt", "() => Deno.exit(0)", 600_000);
      assertEquals(warnings, []);
    });
  },
);

testWith(
  [...NEEDS.childrenAndFiles, "env", requires("sh")],
  "a child that cannot be started while the launcher is out of fds (EMFILE) is a shortage, not a crash: started again once fds are back",
  async () => {
    await withTempDir(async (dir) => {
      const lines = await runUnderFdLimit("supervisor_without_fds.ts", [dir, "1500"], {
        permissions: [
          "--allow-ffi",
          "--allow-run",
          "--allow-read",
          `--allow-write=${dir}`,
          "--allow-env",
        ],
      });
      assertEquals(lines, ["warned", "started again", "done"]);
    });
  },
);
