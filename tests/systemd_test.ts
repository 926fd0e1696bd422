/**
 * The systemd unit for the Pi build (deploy/mmap-ipc.service): it passes systemd-analyze
 * verify, and its own command line, run here, logs journald lines and stops cleanly on SIGTERM.
 *
 * What differs from a Pi: the unit's two install paths (the Deno binary, /opt/mmap-ipc) become
 * this Deno and this checkout; `--pi` drives the fake libgpiod 1.6 (tests/fixtures, built with
 * gcc) instead of a real chip; DENO_DIR stays the test's own; and the sandbox, the user and the
 * restart policy, which only systemd applies, are not exercised.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { ChildProcess } from "./helpers/child_process.ts";
import { ROOT } from "./helpers/paths.ts";
import { NEEDS, requires, testWith } from "./helpers/permissions.ts";
import { killIfRunning, processGone } from "./helpers/proc.ts";
import { buildFakeGpiod } from "./helpers/spawn.ts";
import { withTempDir } from "./helpers/temp.ts";
import { until } from "./helpers/waiting.ts";

const UNIT = `${ROOT}deploy/mmap-ipc.service`;
const INSTALLED_DENO = "/usr/local/bin/deno";
const INSTALLED_ROOT = "/opt/mmap-ipc";

/** The unit with its install paths pointing at this Deno and this checkout. */
function unitHere(): string {
  return Deno.readTextFileSync(UNIT)
    .replaceAll(INSTALLED_DENO, Deno.execPath())
    .replaceAll(INSTALLED_ROOT, ROOT.replace(/\/$/, ""));
}

/** The values of `key` in the unit's [Service] section, continuation lines joined. */
function serviceSetting(unit: string, key: string): string[] {
  const lines = unit.replace(/\\\n/g, " ").split("\n");
  const start = lines.indexOf("[Service]");
  assert(start >= 0, "the unit has no [Service] section");
  const values: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.startsWith("[")) break;
    const match = new RegExp(`^${key}=(.*)$`).exec(line.trim());
    if (match) values.push(match[1]);
  }
  return values;
}

function words(value: string): string[] {
  // The unit avoids quoting, so splitting on spaces is exactly what systemd does with it.
  assert(!/["'\\]/.test(value), `quoting in the unit is not handled here: ${value}`);
  return value.trim().split(/\s+/);
}

testWith(
  [...NEEDS.childrenAndFiles, requires("systemd-analyze")],
  "deploy/mmap-ipc.service passes systemd-analyze verify without a warning",
  async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/mmap-ipc.service`;
      Deno.writeTextFileSync(path, unitHere());
      const result = await new Deno.Command("systemd-analyze", { args: ["verify", path] }).output();
      const stderr = new TextDecoder().decode(result.stderr).trim();
      assert(result.success, stderr);
      // verify exits 0 even for unknown keys and bad values: it only warns about them.
      assertEquals(stderr, "");
    });
  },
);

testWith(
  [...NEEDS.system, requires("gcc")],
  "the unit's command line logs journald lines and stops on SIGTERM with exit 0, children gone",
  async () => {
    await withTempDir(async (dir) => {
      const library = await buildFakeGpiod(dir);

      const unit = unitHere();
      const [program, ...args] = words(serviceSetting(unit, "ExecStart")[0]);
      assertEquals(program, Deno.execPath());
      assertEquals(args[args.length - 1], "--pi");
      const env: Record<string, string> = {};
      for (const setting of serviceSetting(unit, "Environment").flatMap(words)) {
        const [name, value] = setting.split("=", 2);
        if (name !== "DENO_DIR") env[name] = value;
      }
      Object.assign(env, {
        JOURNAL_STREAM: "8:123456",
        MMAP_IPC_LIBGPIOD: library,
      });

      const launcher = new ChildProcess(
        new Deno.Command(program, {
          args,
          cwd: serviceSetting(unit, "WorkingDirectory")[0],
          env,
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }),
      );
      const pids: number[] = [];
      try {
        const started = async (name: string, since = 0): Promise<number> => {
          const { match } = await launcher.waitFor(new RegExp(`Started ${name} \\(pid (\\d+)\\)`), {
            since,
          });
          pids.push(Number(match[1]));
          return Number(match[1]);
        };
        const led = await started("led");
        await started("button");
        await launcher.waitFor(/Button ready on GPIO4/);
        await launcher.waitFor(/LED Status: Off/);
        await until(
          () => {
            try {
              return Deno.statSync(`${dir}/line4.events`).isFifo === true;
            } catch {
              return false;
            }
          },
          "the button's event FIFO",
          { timeoutMs: 10_000 },
        );
        Deno.writeTextFileSync(`${dir}/line4.level`, "0");
        Deno.writeTextFileSync(`${dir}/line4.events`, "F", { append: true });
        await launcher.waitFor(/LED Status: On/);

        // A warning on the way: the LED is killed and restarted.
        Deno.kill(led, "SIGKILL");
        const restarting = await launcher.waitFor(/led was killed by SIGKILL; restarting/);
        await started("led", restarting.index);
        await launcher.waitFor(/LED Status: On/, { since: restarting.index });

        launcher.kill("SIGTERM");
        const status = await launcher.status();
        assertEquals(status.code, 0, launcher.transcript);
        for (const pid of pids) assert(processGone(pid), `pid ${pid} outlived the launcher`);
        assertEquals(Deno.readTextFileSync(`${dir}/line17.out`), "0", "the LED was left on");

        for (const { text } of launcher.lines) {
          assertMatch(text, /^<[0-7]>mmap-ipc\.(launch|led|button): \S/);
          assert(!/\d\d:\d\d:\d\d/.test(text), `a second timestamp: ${text}`);
        }
        const priority = (pattern: RegExp): string[] =>
          launcher.matching(pattern).map((line) => line.slice(0, 3));
        assertEquals(priority(/LED Status: On/), ["<6>", "<6>"]);
        assertEquals(priority(/killed by SIGKILL/), ["<4>"]);
        assertEquals(priority(/: Stopped$/), ["<6>"]);
      } finally {
        launcher.kill("SIGKILL");
        await launcher.status();
        for (const pid of pids) killIfRunning(pid);
      }
    });
  },
);
