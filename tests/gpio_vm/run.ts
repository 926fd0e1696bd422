/**
 * `deno task test:gpio`: type-checks what the VMs will run, then boots the GPIO test VMs one
 * after another (tests/gpio_vm/vm.sh) and reports each one's result and time:
 *
 * - `v2-x86_64`: libgpiod 2.x on the trixie-backports kernel, whose gpio-sim is a module;
 * - `v1-x86_64`: libgpiod 1.6 on the bookworm-backports 6.12 kernel (v1 interface on), with
 *   gpio-sim built for it;
 * - `v2-aarch64`: libgpiod 2.x on the arm64 kernel on an emulated Cortex-A72, with the aarch64
 *   Deno; it also runs the library's tests.
 *
 * Usage: deno task test:gpio [--vm NAME]... [--require]
 *   --vm NAME   run only this VM (repeatable)
 *   --require   a VM that cannot run here (SKIPPED) fails the run, as in CI
 *
 * Downloads are kept in $MMAP_IPC_GPIO_VM_CACHE (default ~/.cache/mmap-ipc/gpio-vm). This
 * needs only to start bash (vm.sh) and the running Deno (type-checking, its cache directory).
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";

/** The VMs, in the order they run. */
export const VMS = ["v2-x86_64", "v1-x86_64", "v2-aarch64"] as const;

/** What every VM runs. */
export const GPIO_TESTS = ["tests/gpio_test.ts"];

/**
 * What the aarch64 VM runs besides: the library's tests, so the numbers that differ by
 * architecture (syscall numbers, O_* flags, struct layouts) are exercised on aarch64.
 */
export const LIBRARY_TESTS = [
  "tests/region_test.ts",
  "tests/state_cell_test.ts",
  "tests/ring_test.ts",
  "tests/fifo_button_test.ts",
  "tests/wait_bounds_test.ts",
  "tests/futex_hub_test.ts",
  "tests/sigbus_guard_test.ts",
  "tests/worker_roles_test.ts",
];

/**
 * Library tests left out under emulation, by name: the guest's CPU is emulated (TCG), so
 * these do not fit the time or are not meaningful there.
 */
export const LEFT_OUT_UNDER_EMULATION: readonly { name: string; why: string }[] = [
  {
    name: "two processes pass a million messages",
    why: "about 9 minutes under emulation, and TCG runs the guest's memory accesses in the " +
      "host's stronger order, so it could not catch an aarch64 ordering bug anyway",
  },
  {
    name: "StateCell.waitForChangeSync() with a mirror, once its writer left",
    why: "tells a sleep from a spin by CPU time, and each look at the file costs half the " +
      "wall time under emulation (a spin all of it): too close to tell",
  },
  {
    name: "a reader blocked for minutes wakes on a write, without periodic wake-ups",
    why: "counts the follower's wake-ups in a second, and under emulation its Worker may take " +
      "longer than that to start",
  },
  {
    name: "Workers terminated at random moments in random calls",
    why: "starts 30 Workers, each loading the library, with waits of 30 ms and bounds of a few " +
      "seconds set for a host's speed; the Worker-held roles tests before it cover the " +
      "architecture's part (gettid's number)",
  },
  {
    name: "deno task demo:ring streams samples",
    why: "runs the demo for a fixed 2 s (or 5 s at --rate 0, both tests of that name), less " +
      "than its processes take to start under emulation",
  },
];

/**
 * The longest prefix {@link excludingFilter} takes: its regex nests a group per character, and
 * past about 85 Deno's regex engine refuses it, and `deno test` then runs no test at all.
 */
export const MAX_PREFIX_LENGTH = 80;

/**
 * A `deno test --filter` regex that leaves out the tests whose names start with one of
 * `prefixes`. Deno's filter regexes have no lookahead, so this spells out every way a name can
 * differ from all of them; each non-alphanumeric character is written `\x{HEX}`.
 */
export function excludingFilter(prefixes: readonly string[]): string {
  for (const prefix of prefixes) {
    if (prefix.length === 0 || prefix.length > MAX_PREFIX_LENGTH) {
      throw new RangeError(
        `A test name prefix to leave out must have 1 to ${MAX_PREFIX_LENGTH} characters ` +
          `(a longer one makes deno test run nothing): "${prefix}" has ${prefix.length}`,
      );
    }
  }
  const char = (c: string): string =>
    /[A-Za-z0-9]/.test(c) ? c : `\\x{${c.codePointAt(0)?.toString(16)}}`;
  const notStartingWith = (rest: readonly string[]): string => {
    const firsts = [...new Set(rest.map((prefix) => prefix[0]))];
    const parts = ["$", `[^${firsts.map(char).join("")}][\\s\\S]*`];
    for (const first of firsts) {
      const tails = rest.filter((prefix) => prefix[0] === first).map((prefix) => prefix.slice(1));
      if (!tails.includes("")) parts.push(`${char(first)}${notStartingWith(tails)}`);
    }
    return `(?:${parts.join("|")})`;
  };
  return `/^${notStartingWith(prefixes)}/`;
}

/** What the tests start in the guests, type-checked here with them. */
const GUEST_PROGRAMS = [
  "launch.ts",
  "producers/button.ts",
  "consumers/led.ts",
  "tests/gpio_vm/hold_line.ts",
  "tests/gpio_vm/count_presses.ts",
];

const ROOT = new URL("../../", import.meta.url).pathname;
const SKIPPED = 77;
/** vm.sh's exit code when the guest stopped before any result (it panicked at boot, say). */
const NO_RESULT = 3;

type Outcome = "passed" | "failed" | "skipped";

interface Result {
  vm: string;
  outcome: Outcome;
  seconds: number;
  cache: "cold" | "warm";
}

/** What `--help` prints, and usage errors after their line. */
const USAGE = `Usage: deno task test:gpio [--vm NAME]... [--require]

Boots small VMs whose kernels have the GPIO simulator (gpio-sim) and runs the GPIO tests in them
(tests/gpio_vm/vm.sh), one after another, each reported with its time.

  --vm NAME   run only this VM (repeatable): ${VMS.join(", ")}
  --require   a VM that cannot run here (SKIPPED) fails the run, as in CI

Needs a Debian-based host (apt-get, dpkg) and QEMU, which it installs with apt when run as root
(else a VM without it is SKIPPED). The first run downloads the guests' kernels and packages (some
hundreds of MB) into $MMAP_IPC_GPIO_VM_CACHE (default ~/.cache/mmap-ipc/gpio-vm).`;

function fail(message: string): never {
  console.error(`test:gpio: ${message}\n\n${USAGE}`);
  Deno.exit(2);
}

/** What the guests read besides the project's own files: Deno's std and the npm packages. */
const DEPENDENCY_DIRECTORIES = ["vendor", "node_modules"];

/**
 * Why the guests could not read `root`'s dependency folders (see {@link DEPENDENCY_DIRECTORIES}),
 * or undefined when they can: one that is a symlink out of `root` leads nowhere in a guest,
 * which mounts only the project, and every test there would fail to load its imports.
 */
export function dependenciesOutside(root: string): string | undefined {
  for (const name of DEPENDENCY_DIRECTORIES) {
    const path = `${root.replace(/\/$/, "")}/${name}`;
    let target: string;
    try {
      if (!Deno.lstatSync(path).isSymlink) continue;
      target = Deno.realPathSync(path);
    } catch (error) {
      // Missing, or a dangling link: `deno check` says so first.
      if (error instanceof Deno.errors.NotFound) continue;
      throw error;
    }
    const real = Deno.realPathSync(root).replace(/\/$/, "");
    if (!target.startsWith(`${real}/`)) {
      return `${name}/ is a symlink to ${target}, outside the project, which the VMs mount ` +
        `alone (over 9p): make it a copy (rm ${name} && cp -r ${target} ${name})`;
    }
  }
  return undefined;
}

async function run(command: string, args: string[]): Promise<number> {
  const child = new Deno.Command(command, { args, cwd: ROOT }).spawn();
  return (await child.status).code;
}

async function output(command: string, args: string[]): Promise<string> {
  const result = await new Deno.Command(command, { args, cwd: ROOT, stderr: "inherit" }).output();
  if (!result.success) fail(`${command} ${args.join(" ")} failed`);
  return new TextDecoder().decode(result.stdout);
}

/** Runs one VM, passing its output through; returns its exit code and what it said of its cache. */
async function runVm(
  vm: string,
  env: Record<string, string>,
): Promise<{ code: number; cache: Result["cache"] }> {
  const child = new Deno.Command("bash", {
    args: [`${ROOT}tests/gpio_vm/vm.sh`, vm],
    cwd: ROOT,
    env,
    stdout: "piped",
  }).spawn();
  const decoder = new TextDecoder();
  let said = ""; // the start of the output, where vm.sh says which cache it found
  for await (const chunk of child.stdout) {
    await Deno.stdout.write(chunk);
    if (said.length < 4096) said += decoder.decode(chunk, { stream: true });
  }
  const cache = said.includes(`gpio-vm: ${vm}: warm cache`) ? "warm" : "cold";
  return { code: (await child.status).code, cache };
}

async function main(): Promise<number> {
  const flags = parseArgs(Deno.args, {
    string: ["vm"],
    boolean: ["require", "help"],
    collect: ["vm"],
    unknown: (flag) => fail(`unknown option ${flag}`),
  });
  if (flags.help) {
    console.log(USAGE);
    return 0;
  }
  const chosen = flags.vm.length === 0 ? [...VMS] : flags.vm;
  for (const vm of chosen) {
    if (vm === "") fail("--vm needs a VM's name");
    if (!(VMS as readonly string[]).includes(vm)) {
      fail(`unknown VM ${JSON.stringify(vm)}; the VMs are ${VMS.join(", ")}`);
    }
  }
  const outside = dependenciesOutside(ROOT);
  if (outside !== undefined) {
    console.error(`test:gpio: ${outside}`);
    return 1;
  }
  const deno = Deno.execPath();
  console.log("test:gpio: type-checking what the VMs run (they run it with --no-check)");
  const files = [...GPIO_TESTS, ...LIBRARY_TESTS, ...GUEST_PROGRAMS];
  if (await run(deno, ["check", "--quiet", ...files]) !== 0) {
    console.error("test:gpio: if a file was renamed, update the lists in tests/gpio_vm/run.ts");
    return 1;
  }
  const denoDir = JSON.parse(await output(deno, ["info", "--json"])).denoDir as string;

  const results: Result[] = [];
  for (const vm of chosen) {
    const started = performance.now();
    const boot = () =>
      runVm(vm, {
        DENO_BIN: deno,
        DENO_DIR: denoDir,
        TESTS: GPIO_TESTS.join(" "),
        LIBRARY_TESTS: LIBRARY_TESTS.join(" "),
        TEST_FILTER: excludingFilter(LEFT_OUT_UNDER_EMULATION.map(({ name }) => name)),
      });
    let { code, cache } = await boot();
    // An emulated guest kernel has panicked at boot now and then (QEMU's TCG): one more boot.
    if (code === NO_RESULT) {
      console.log(`test:gpio: ${vm} stopped before any result; booting it once more`);
      ({ code, cache } = await boot());
    }
    results.push({
      vm,
      outcome: code === 0 ? "passed" : code === SKIPPED ? "skipped" : "failed",
      seconds: Math.round((performance.now() - started) / 1000),
      cache,
    });
  }

  console.log("\ntest:gpio results:");
  for (const { vm, outcome, seconds, cache } of results) {
    console.log(
      `  ${vm.padEnd(11)} ${outcome.toUpperCase().padEnd(8)} ${seconds} s (${cache} cache)`,
    );
  }
  const failed = results.some((result) =>
    result.outcome === "failed" || (flags.require && result.outcome === "skipped")
  );
  if (flags.require && results.some((result) => result.outcome === "skipped")) {
    console.error("test:gpio: --require: a VM that cannot run counts as a failure");
  }
  return failed ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
