/**
 * The typed flag layer (app/flags.ts), and every script's command line run for real: `--help`
 * exits 0 with the script's own usage, and each bad value or combination exits 2 with a
 * message that names the flag, followed by that script's usage.
 */
import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import { assertType, type IsExact } from "@std/testing/types";
import { CHILD_RUNTIME_ENV } from "../app/child_env.ts";
import { shellQuote } from "../lib/shell_quote.ts";
import { defineCommand, type FlagValues, parseFlags, usage, UsageError } from "../app/flags.ts";
import { LAUNCH_COMMAND } from "../app/launch_command.ts";
import { PASSWORD_ENV, USERNAME_ENV } from "../bridges/mqtt/credentials.ts";
import { writeAndLeave } from "./helpers/fifo.ts";
import { ROOT } from "./helpers/paths.ts";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { denoCommand, spawnDeno, spawnProgram, taskArgs } from "./helpers/spawn.ts";
import { withTempDir } from "./helpers/temp.ts";

const DEMO = defineCommand({
  name: "demo",
  synopsis: ["demo [options]"],
  description: "A command to test the layer with.",
  flags: {
    state: { type: "string", arg: "PATH", help: "a file" },
    shm: { type: "string", arg: "NAME", help: "a name" },
    "log-level": {
      type: "choice",
      arg: "L",
      choices: ["debug", "info"],
      default: "info",
      help: "level",
    },
    rate: { type: "number", arg: "N", min: 0, max: 100, default: 10, help: "per second" },
    "debounce-ms": { type: "number", arg: "N", integer: true, min: 0, requires: "pi", help: "ms" },
    pi: { type: "boolean", help: "GPIO" },
    label: { type: "string", arg: "TEXT", required: true, help: "a label" },
  },
  exclusive: [{ flags: ["state", "shm"] }],
});

function problems(args: string[]): string[] {
  const error = assertThrows(() => parseFlags(DEMO, args), UsageError);
  return [...error.problems];
}

Deno.test("parseFlags() returns typed camelCase values with their defaults", () => {
  const values = parseFlags(DEMO, ["--label", "x", "--pi", "--debounce-ms=20", "--shm", "led"]);
  assert(values !== "help");
  assertType<IsExact<typeof values.rate, number>>(true);
  assertType<IsExact<typeof values.debounceMs, number | undefined>>(true);
  assertType<IsExact<typeof values.logLevel, "debug" | "info">>(true);
  assertType<IsExact<typeof values.label, string>>(true);
  assertType<IsExact<typeof values.state, string | undefined>>(true);
  assertType<IsExact<typeof values.pi, boolean>>(true);
  assertType<IsExact<keyof FlagValues<typeof DEMO.flags>, keyof typeof values>>(true);
  assertEquals(values, {
    state: undefined,
    shm: "led",
    logLevel: "info",
    rate: 10,
    debounceMs: 20,
    pi: true,
    label: "x",
  });
  const more = parseFlags(DEMO, ["--label=y", "--rate", "2.5", "--log-level", "debug"]);
  assert(more !== "help");
  assertEquals([more.rate, more.logLevel, more.pi, more.debounceMs], [
    2.5,
    "debug",
    false,
    undefined,
  ]);
});

Deno.test("parseFlags() rejects unknown flags, arguments and values given to a switch", () => {
  assertEquals(problems(["extra", "--label", "x", "--bogus", "-q", "--no-pi", "--pi=yes"]), [
    "unknown flag --bogus",
    "unknown flag -q",
    "unknown flag --no-pi",
    'unexpected argument "extra": this script takes flags only',
    '--pi takes no value, not "yes"',
  ]);
  // Not even true or false: --pi=false was read as false, --pi=no was refused.
  for (const value of ["true", "false", "", "1"]) {
    assertEquals(problems(["--label", "x", `--pi=${value}`]), [
      `--pi takes no value, not ${JSON.stringify(value)}`,
    ]);
  }
  assertEquals(problems(["--label", "x", "--", "--rate", "5"]), [
    'unexpected argument "--rate" after "--": give flags without "--" before them',
    'unexpected argument "5" after "--": give flags without "--" before them',
  ]);
});

Deno.test("parseFlags() rejects missing values, bad numbers, out-of-range numbers, bad choices", () => {
  assertEquals(problems(["--label"]), ["--label needs a value"]);
  assertEquals(problems(["--label", "x", "--state", "--rate", "abc"]), [
    "--state needs a value",
    '--rate must be a number in plain digits, not "abc"',
  ]);
  // 1e3 is a number to Number(): the rule says which form is taken.
  assertEquals(problems(["--label", "x", "--rate", "1e3"]), [
    '--rate must be a number in plain digits, not "1e3"',
  ]);
  assertEquals(problems(["--label", "x", "--pi", "--debounce-ms", "1e3"]), [
    '--debounce-ms must be a whole number in plain digits, not "1e3"',
  ]);
  assertEquals(problems(["--label", "x", "--rate=-5"]), ["--rate must be from 0 to 100, not -5"]);
  // A value after a space is the value, whatever it looks like: not a flag "-5", not an argument.
  assertEquals(problems(["--label", "x", "--rate", "-5"]), [
    "--rate must be from 0 to 100, not -5",
  ]);
  assertEquals(problems(["--label", "x", "--state", ""]), ["--state needs a value"]);
  assertEquals(problems(["--label", "x", "--rate", "101"]), [
    "--rate must be from 0 to 100, not 101",
  ]);
  for (const bad of ["0x10", "1e3", " 5", "", "Infinity", "NaN", "5s"]) {
    assertEquals(problems(["--label", "x", `--rate=${bad}`]).length, 1, bad);
  }
  assertEquals(problems(["--label", "x", "--pi", "--debounce-ms", "1.5"]), [
    '--debounce-ms must be a whole number in plain digits, not "1.5"',
  ]);
  assertEquals(problems(["--label", "x", "--pi", "--debounce-ms=-1"]), [
    "--debounce-ms must be at least 0, not -1",
  ]);
  assertEquals(problems(["--label", "x", "--log-level", "loud"]), [
    '--log-level must be debug or info, not "loud"',
  ]);
});

Deno.test("parseFlags() rejects a repeated flag instead of letting the last one win", () => {
  assertEquals(problems(["--label", "x", "--rate", "1", "--rate", "2"]), [
    "--rate is given 2 times",
  ]);
  assertEquals(problems(["--label", "x", "--state", "a", "--state", "a"]), [
    "--state is given 2 times",
  ]);
});

testWith(["read"], "parseFlags() takes a switch given twice: it says the same thing twice", () => {
  const values = parseFlags(DEMO, ["--label", "x", "--pi", "--pi"]);
  assert(values !== "help");
  assertEquals(values.pi, true);
  // deno task launch:pi passes --pi already; --pi again said "--pi is given 2 times".
  const launch = parseFlags(LAUNCH_COMMAND, [...taskArgs("launch:pi").slice(-1), "--pi"]);
  assert(launch !== "help");
  assertEquals(launch.pi, true);
});

Deno.test("parseFlags() checks exclusive flags, required flags and flags that need another", () => {
  assertEquals(problems(["--label", "x", "--state", "f", "--shm", "n"]), [
    "--state and --shm cannot be combined: give one",
  ]);
  assertEquals(problems([]), ["--label TEXT is required"]);
  assertEquals(problems(["--label", "x", "--debounce-ms", "5"]), ["--debounce-ms needs --pi"]);
  const required = defineCommand({
    name: "r",
    synopsis: ["r"],
    description: "r",
    flags: {
      a: { type: "string", arg: "A", help: "a" },
      b: { type: "string", arg: "B", help: "b" },
    },
    exclusive: [{ flags: ["a", "b"], required: true }],
  });
  assertThrows(() => parseFlags(required, []), UsageError, "give one of --a or --b");
  assertEquals(parseFlags(required, ["--b", "1"]), { a: undefined, b: "1" });
});

Deno.test("parseFlags() answers -h and --help even beside mistakes", () => {
  assertEquals(parseFlags(DEMO, ["--help"]), "help");
  assertEquals(parseFlags(DEMO, ["--bogus", "-h", "--rate", "x"]), "help");
  // -h as the value of a flag is still -h; -h0 as one is the value.
  assertEquals(parseFlags(DEMO, ["--label", "-h"]), "help");
  assert(parseFlags(DEMO, ["--label", "-h0"]) !== "help");
});

Deno.test("parseFlags() refuses -h and --help with a value, which ran the program", () => {
  assertEquals(problems(["--label", "x", "--help=false"]), ['--help takes no value, not "false"']);
  assertEquals(problems(["--label", "x", "--help=1"]), ['--help takes no value, not "1"']);
  assertEquals(problems(["--label", "x", "-h=0"]), ['-h takes no value, not "0"']);
  assertEquals(problems(["--label", "x", "-h0"]), ['-h takes no value, not "0"']);
  assertEquals(problems(["--label", "x", "-h", "--help=false"]), [
    '--help takes no value, not "false"',
  ]);
});

// The MQTT library reads the environment as it loads: these modules are loaded in the test.
testWith(
  ["env"],
  "each command's --log-level help says what it logs at debug, if anything more",
  async () => {
    const { MQTT_BRIDGE_COMMAND } = await import("../bridges/mqtt_bridge.ts");
    const { MQTT_FORGET_COMMAND } = await import("../bridges/mqtt_forget.ts");
    const { LED_COMMAND } = await import("../consumers/led.ts");
    const { BUTTON_COMMAND } = await import("../producers/button.ts");
    // The help was shared: mqtt:forget and the LED said "debug also logs each press".
    const debugHelp = (text: string): string | undefined =>
      /--log-level L +the lowest level logged(?:; debug also logs ([^(]+?))? \(/.exec(
        text.replace(/\s+/g, " "),
      )?.[1];
    assertEquals(debugHelp(usage(LAUNCH_COMMAND)), "each press");
    assertEquals(debugHelp(usage(BUTTON_COMMAND)), "each press");
    assertEquals(debugHelp(usage(LED_COMMAND)), undefined);
    assertEquals(debugHelp(usage(MQTT_FORGET_COMMAND)), "each attempt to connect to the broker");
    assertEquals(
      debugHelp(usage(MQTT_BRIDGE_COMMAND)),
      "each command from the broker and each attempt to reconnect",
    );
  },
);

Deno.test("usage() lists every flag with its range, choices and default", () => {
  const text = usage(DEMO);
  assert(text.startsWith("Usage: demo [options]\n\nA command to test the layer with."), text);
  for (
    const line of [
      "--state PATH",
      "--log-level L",
      "(debug or info; default info)",
      "(0 to 100; default 10)",
      "--debounce-ms N",
      "(at least 0)",
      "--pi ",
      "a label (required)",
      "-h, --help",
    ]
  ) {
    assertStringIncludes(text, line);
  }
  assert(text.split("\n").every((line) => line.length <= 100), text);
});

Deno.test("defineCommand() refuses requires that names no switch", () => {
  assertThrows(
    () =>
      defineCommand({
        name: "x",
        synopsis: ["x"],
        description: "x",
        flags: { a: { type: "string", arg: "A", requires: "b", help: "a" } },
      }),
    TypeError,
    "--a requires --b",
  );
});

// --- every script, run ------------------------------------------------------------------------

interface Script {
  path: string;
  name: string;
  usageLine: string;
  bad: [args: string[], message: string][];
}

const SCRIPTS: Script[] = [
  {
    path: "launch.ts",
    name: "launch",
    usageLine: "Usage: deno task launch [options]",
    bad: [
      [["--state", "s", "--shm", "n"], "--state and --shm cannot be combined"],
      [["--log-level", "loud"], '--log-level must be debug, info, warning or error, not "loud"'],
      [
        ["--pi", "--debounce-ms", "abc"],
        '--debounce-ms must be a whole number in plain digits, not "abc"',
      ],
      [["--pi", "--debounce-ms=-1"], "--debounce-ms must be from 0 to 10000, not -1"],
      [["--debounce-ms", "5"], "--debounce-ms needs --pi"],
      [
        ["--pi", "--fifo", "f"],
        "--fifo and --pi cannot be combined: --fifo is the PC build's button (deno task launch)",
      ],
      [["--fifo"], "--fifo needs a value"],
      // A path ending in "/" failed once things were made, with a bare ENOENT.
      [
        ["--fifo", "/tmp/x/"],
        '--fifo must be a file\'s path (one not ending in "/"), not "/tmp/x/"',
      ],
      [["--state", "dir/"], '--state must be a file\'s path (one not ending in "/"), not "dir/"'],
      [["--shm=a/b"], '--shm must be a shared memory name (1 to 250 bytes, no "/" after'],
      [["--bogus"], "unknown flag --bogus"],
      [["now"], 'unexpected argument "now"'],
      [["--help=false"], '--help takes no value, not "false"'],
      [["-h=0"], '-h takes no value, not "0"'],
      [["--pi=false"], '--pi takes no value, not "false"'],
      [["--", "--fifo", "f"], 'unexpected argument "--fifo" after "--": give flags without "--"'],
      [["--mqtt-prefix", "a/b"], "--mqtt-prefix needs --mqtt URL"],
      [["--mqtt-discovery-prefix", "ha"], "--mqtt-discovery-prefix needs --mqtt URL"],
      [["--mqtt-client-id", "x"], "--mqtt-client-id needs --mqtt URL"],
      [
        ["--mqtt-credentials", "login", "--mqtt-ca", "ca.pem"],
        "--mqtt-credentials, --mqtt-ca need --mqtt URL",
      ],
    ],
  },
  {
    path: "producers/button.ts",
    name: "button",
    usageLine: "Usage: deno run --allow-ffi producers/button.ts",
    bad: [
      [[], "give one of --state, --shm or --memfd"],
      [["--state", "s", "--shm", "m"], "--state and --shm cannot be combined"],
      [["--state", "s", "--pi", "--debounce-ms", "abc"], "--debounce-ms must be a whole number"],
      [["--state", "s", "--parent-pid", "0"], "--parent-pid must be from 1 to 2147483647, not 0"],
      [
        ["--state", "s", "--log-format", "json"],
        '--log-format must be text or journal, not "json"',
      ],
      [["--state", "s", "--line", "4"], "--line needs --pi"],
      [["--state", "s", "--fifo-from-parent"], "--fifo-from-parent needs --parent-pid N"],
      [["--state", "s", "--fifo", "f/"], '--fifo must be a file\'s path (one not ending in "/")'],
      // It made the state file and the FIFO first, then exited 1 naming another flag.
      [
        ["--state", "s", "--remote", "/dev/zero"],
        '--remote must be a path /proc/PID/fd/N, not "/dev/zero"',
      ],
    ],
  },
  {
    path: "consumers/led.ts",
    name: "led",
    usageLine: "Usage: deno run --allow-ffi consumers/led.ts",
    bad: [
      [["--state", "s", "--shm", "n"], "--state and --shm cannot be combined"],
      [
        ["--state", "s", "--log-level", "loud"],
        "--log-level must be debug, info, warning or error",
      ],
      [["--state", "s", "--syslog=no"], '--syslog takes no value, not "no"'],
      [["--state", "s", "--syslog=false"], '--syslog takes no value, not "false"'],
      [
        ["--state", "s", "--parent-pid", "x"],
        '--parent-pid must be a whole number in plain digits, not "x"',
      ],
      [["--memfd", "/dev/zero"], '--memfd must be a path /proc/PID/fd/N, not "/dev/zero"'],
      [["--state", "s", "--mirror", "m"], '--mirror must be a path /proc/PID/fd/N, not "m"'],
    ],
  },
  {
    path: "producers/sensor.ts",
    name: "sensor",
    usageLine: "Usage: deno run --allow-ffi producers/sensor.ts",
    bad: [
      [[], "--memfd PATH is required"],
      [
        ["--memfd", "/proc/1/fd/1", "--rate", "abc"],
        '--rate must be a number in plain digits, not "abc"',
      ],
      [["--memfd", "/proc/1/fd/1", "--rate=-5"], "--rate must be from 0 to 10000000, not -5"],
    ],
  },
  {
    path: "bridges/mqtt_forget.ts",
    name: "mqtt:forget",
    usageLine: "Usage: deno task mqtt:forget --mqtt URL",
    bad: [
      [[], "--mqtt URL is required"],
      [["--mqtt-prefix", "a/b"], "--mqtt-prefix needs --mqtt URL"],
      [["--mqtt", "http://broker"], "--mqtt"],
      [["--mqtt", "mqtt://broker", "--mqtt-prefix", "a/#"], "it holds a wildcard"],
    ],
  },
  {
    path: "consumers/ring_stats.ts",
    name: "ring demo",
    usageLine: "Usage: deno task demo:ring [options]",
    bad: [
      [["--seconds", "x"], '--seconds must be a number in plain digits, not "x"'],
      [["--seconds=-1"], "--seconds must be from 0.001 to 2147483, not -1"],
      [["--seconds", "0"], "--seconds must be from 0.001 to 2147483, not 0"],
      [["--rate", "abc"], '--rate must be a number in plain digits, not "abc"'],
      [["--rate=-5"], "--rate must be from 0 to 10000000, not -5"],
      [["--seconds"], "--seconds needs a value"],
      [["--seconds", "1", "--seconds", "2"], "--seconds is given 2 times"],
      [["--rate", "1e3"], '--rate must be a number in plain digits, not "1e3"'],
      [["-h=0"], '-h takes no value, not "0"'],
    ],
  },
];

async function run(
  script: Script,
  args: string[],
): Promise<{ code: number; out: string; err: string }> {
  await using child = spawnDeno(`${ROOT}${script.path}`, args);
  const status = await child.status();
  const out = child.lines.filter((l) => l.stream === "stdout").map((l) => l.text).join("\n");
  return { code: status.code, out, err: status.stderr };
}

for (const script of SCRIPTS) {
  testWith(["run"], `${script.path} --help prints its own usage and exits 0`, async () => {
    for (const flag of ["--help", "-h"]) {
      const { code, out, err } = await run(script, [flag]);
      assertEquals(code, 0, err);
      assert(out.startsWith(script.usageLine), out);
      assertEquals(err, "");
    }
  });

  testWith(
    ["run"],
    `${script.path} exits 2 on each bad value or combination, naming the flag, with its usage`,
    async () => {
      const results = await Promise.all(script.bad.map(([args]) => run(script, args)));
      results.forEach(({ code, out, err }, i) => {
        const [args, message] = script.bad[i];
        const what = `${script.path} ${args.join(" ")}:\n${err}`;
        assertEquals(code, 2, what);
        assertEquals(out, "", what);
        assert(err.startsWith(`${script.name}: `), what);
        assertStringIncludes(err.split("\n\n")[0], message, what);
        assertStringIncludes(err, `\n\n${script.usageLine}`, what);
        for (const other of SCRIPTS.filter((s) => s !== script)) {
          assert(!err.includes(other.usageLine), `${what}\nshows the usage of ${other.path}`);
        }
      });
    },
  );
}

/** Runs `script` with `args`, its stdout and stderr on /dev/full; returns its exit status. */
async function runOnFullOutput(
  script: string,
  args: string[],
  permissions = ["--allow-ffi"],
): Promise<Deno.CommandStatus & { stderr: string }> {
  const [deno, ...rest] = denoCommand(`${ROOT}${script}`, args, permissions);
  await using child = spawnProgram("sh", [
    "-c",
    'exec "$@" >/dev/full 2>/dev/full',
    "sh",
    deno,
    ...rest,
  ]);
  return await child.status();
}

testWith(
  [...NEEDS.childrenAndFiles, requires("sh")],
  "a bad command line exits 2 even when stderr cannot be written (/dev/full), and --help then exits 1, not with an uncaught write error",
  async () => {
    await withTempDir(async (dir) => {
      for (const script of SCRIPTS) {
        const [bad, help] = await Promise.all([
          runOnFullOutput(script.path, script.bad[0][0]),
          runOnFullOutput(script.path, ["--help"]),
        ]);
        assertEquals(bad.code, 2, `${script.path} ${script.bad[0][0].join(" ")}: ${bad.stderr}`);
        assertEquals(help.code, 1, `${script.path} --help: ${help.stderr}`);
      }
      // Found only once the launcher runs: one file given twice.
      const twice = await runOnFullOutput(
        "launch.ts",
        ["--state", `${dir}/x`, "--fifo", `${dir}/x`],
        ["--allow-all"],
      );
      assertEquals(twice.code, 2, twice.stderr);
    });
  },
);

testWith(
  ["run"],
  "a child whose launcher is gone (its parent is another pid) does not start, and says so in its log format",
  async () => {
    for (const script of SCRIPTS.filter((s) => s.name === "led" || s.name === "button")) {
      for (const [format, prefix] of [["journal", "<4>"], ["text", ""]] as const) {
        // The test runner is this child's parent, not pid 1: as if the launcher had died and the
        // child had been handed to init before it could ask for its parent's death signal.
        const args = ["--memfd", "/proc/1/fd/999", "--parent-pid", "1", "--log-format", format];
        const { code, out, err } = await run(script, args);
        const what = `${script.path} ${args.join(" ")}:\n${err}`;
        assertEquals(code, 0, what);
        assertEquals(out, "", what);
        const line =
          `mmap-ipc.child: Not starting: the launcher (pid 1) is gone; this process's parent is pid ${Deno.pid}`;
        assert(
          format === "journal"
            ? err.trim() === `${prefix}${line}`
            : /^\d{4}-\d\d-\d\d .* \[WRN\] /.test(err) && err.trim().endsWith(line),
          what,
        );
      }
    }
  },
);

testWith(NEEDS.childrenAndFiles, "a rejected launch command line creates nothing", async () => {
  await withTempDir(async (dir) => {
    const state = `${dir}/state.dat`;
    const { code } = await run(SCRIPTS[0], [
      "--state",
      state,
      "--shm",
      "mmap-ipc-cli-test",
      "--fifo",
      `${dir}/fifo`,
    ]);
    assertEquals(code, 2);
    assertEquals([...Deno.readDirSync(dir)], []);
  });
});

// --- the tasks' narrowed permissions are enough -------------------------------------------------

testWith(
  NEEDS.childrenAndFiles,
  "a launcher whose --allow-run names a symlink to Deno, not Deno itself, says so and makes nothing",
  async () => {
    await withTempDir(async (dir) => {
      const link = `${dir}/deno`;
      Deno.symlinkSync(Deno.execPath(), link);
      await using launcher = spawnDeno(`${ROOT}launch.ts`, ["--fifo", `${dir}/button.fifo`], {
        permissions: ["--allow-ffi", `--allow-run=${link}`, "--allow-read", "--allow-env"],
        cwd: dir,
      });
      const { code, stderr } = await launcher.status();
      assertEquals(code, 1, launcher.transcript);
      assertStringIncludes(stderr, `may not run the Deno binary "${Deno.execPath()}"`);
      assertStringIncludes(stderr, `--allow-run=${Deno.execPath()}`);
      assertEquals(launcher.matching(/Started|crashed/), [], launcher.transcript);
      assertEquals([...Deno.readDirSync(dir)].map((entry) => entry.name), ["deno"]);
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "a launcher run with neither --allow-ffi nor --allow-run says both at once and makes nothing",
  async () => {
    await withTempDir(async (dir) => {
      await using launcher = spawnDeno(`${ROOT}launch.ts`, ["--fifo", `${dir}/button.fifo`], {
        permissions: ["--allow-read", "--allow-env"],
        cwd: dir,
      });
      const { code, stderr } = await launcher.status();
      assertEquals(code, 1, launcher.transcript);
      assertStringIncludes(stderr, "give it --allow-ffi");
      assertStringIncludes(stderr, `--allow-run=${Deno.execPath()}`);
      assertEquals([...Deno.readDirSync(dir)], [], "it made something");
    });
  },
);

testWith(
  NEEDS.childrenAndFiles,
  "deno task launch runs with its narrowed permissions: a press, then SIGTERM, exit 0",
  async () => {
    await withTempDir(async (dir) => {
      const fifo = `${dir}/button.fifo`;
      const args = [...taskArgs("launch"), "--fifo", fifo];
      await using launcher = spawnProgram(Deno.execPath(), args, { cwd: ROOT });
      await launcher.waitFor(/Button ready/);
      await launcher.waitFor(/LED Status: Off/);
      await writeAndLeave(fifo, "0\n");
      await launcher.waitFor(/LED Status: On/);
      launcher.kill("SIGTERM");
      assertEquals((await launcher.status()).code, 0, launcher.transcript);
      assertEquals(launcher.matching(/NotCapable|Requires .* access/), [], launcher.transcript);
    });
  },
);

testWith(
  ["read"],
  "the launch tasks and the systemd unit let the launcher read what it passes on to its children",
  () => {
    const allowed = (args: string[]): string[] =>
      args.find((arg) => arg.startsWith("--allow-env="))?.slice("--allow-env=".length).split(",") ??
        [];
    const unit = Deno.readTextFileSync(`${ROOT}deploy/mmap-ipc.service`);
    const execStart = /^ExecStart=(.*)$/m.exec(unit)?.[1].split(" ") ?? [];
    for (
      const [where, args, needed] of [
        ["task launch", taskArgs("launch"), [...CHILD_RUNTIME_ENV, USERNAME_ENV, PASSWORD_ENV]],
        ["task launch:pi", taskArgs("launch:pi"), [
          ...CHILD_RUNTIME_ENV,
          USERNAME_ENV,
          PASSWORD_ENV,
        ]],
        ["the unit's ExecStart", execStart, CHILD_RUNTIME_ENV],
      ] as const
    ) {
      const missing = needed.filter((name) => !allowed([...args]).includes(name));
      assertEquals(missing, [], `${where} does not let the launcher read these`);
    }
  },
);

testWith(NEEDS.children, "deno task demo:ring runs with its narrowed permissions", async () => {
  await using demo = spawnProgram(
    Deno.execPath(),
    [...taskArgs("demo:ring"), "--seconds", "1", "--rate", "500"],
    { cwd: ROOT },
  );
  assertEquals((await demo.status()).code, 0, demo.transcript);
  assert(demo.matching(/samples\/s/).length >= 1, demo.transcript);
});

testWith(
  [...NEEDS.children, requires("bash")],
  "the press hint quotes the FIFO's path so that a shell writes to that very file",
  async () => {
    assertEquals(
      shellQuote("/run/user/0/mmap-ipc/button.fifo"),
      "/run/user/0/mmap-ipc/button.fifo",
    );
    // With a space, the hint "echo 0 > /tmp/my button.fifo" wrote 0 to a file named "/tmp/my".
    assertEquals(shellQuote("/tmp/my button.fifo"), "'/tmp/my button.fifo'");
    assertEquals(shellQuote("/tmp/it's"), "'/tmp/it'\\''s'");
    // A newline split the hint, and could forge a log line.
    assertEquals(shellQuote("/tmp/a\n[ERR] b"), "$'/tmp/a\\x0a[ERR] b'");
    const shell = await new Deno.Command("bash", {
      args: ["-c", `printf %s ${shellQuote("/tmp/a b\n'c\\d")}`],
      stdout: "piped",
    }).output();
    assertEquals(new TextDecoder().decode(shell.stdout), "/tmp/a b\n'c\\d");
  },
);
