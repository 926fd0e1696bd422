/**
 * The GPIO code against the kernel's GPIO simulator (gpio-sim), through whichever libgpiod the
 * machine has. `deno task test:gpio` runs this file in three VMs (tests/gpio_vm/): libgpiod 2.x
 * on x86-64, libgpiod 1.6 on an x86-64 kernel that still has the v1 interface, and libgpiod 2.x
 * on aarch64. The simulator tests are ignored elsewhere; the rest run everywhere.
 *
 * The VM says what it holds in the environment: $GPIO_SIM (the simulator's configfs
 * directory), $GPIO_TEST_API (the libgpiod API it installed: 1 or 2), $GPIO_CDEV_V1 (y or n:
 * whether its kernel has the v1 interface) and $GPIO_TEST_V1_LIBRARY (a libgpiod 1.6 to try
 * on a kernel without that interface).
 */
import {
  assert,
  assertEquals,
  assertMatch,
  assertNotEquals,
  assertRejects,
  assertThrows,
} from "@std/assert";
import { findLine, gpiod, LIBGPIOD_ENV, loadGpiod } from "../ffi/gpiod.ts";
import { type GpioButton, openGpioButton } from "../hw/gpio_button.ts";
import { openGpioLed } from "../hw/gpio_led.ts";
import { assertThrowsWith } from "./helpers/assertions.ts";
import { ROOT } from "./helpers/paths.ts";
import { isRoot, NEEDS, testWith } from "./helpers/permissions.ts";
import { spawnDeno } from "./helpers/spawn.ts";
import { LAUNCH_PERMISSIONS } from "./helpers/system.ts";
import { withTempDir } from "./helpers/temp.ts";
import { delay, until } from "./helpers/waiting.ts";
import { GpioSim, PI_MODELS, simulatorRoot } from "./gpio_vm/sim.ts";

const SIM = simulatorRoot();

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** Under emulation a Deno process takes seconds to start; these bound waits, never results. */
const START_MS = 180_000;
const EVENT_MS = 30_000;
/** In the guests, children run what the host type-checked. */
const GUEST_RUN = ["--allow-all", "--cached-only", "--no-lock", "--no-check"];

/** A test that needs the simulator, and whatever `unmet()` says is missing besides. */
function simTest(
  name: string,
  fn: () => Promise<void> | void,
  unmet: () => string | undefined = () => undefined,
): void {
  const missing = SIM === undefined
    ? "needs the kernel GPIO simulator; run deno task test:gpio"
    : unmet();
  Deno.test({ name: missing ? `${name} [ignored: ${missing}]` : name, ignore: !!missing, fn });
}

/** The header chip of a simulated Pi 5, and a chip before it. */
function pi5(): GpioSim {
  return new GpioSim(PI_MODELS["Raspberry Pi 5"]);
}

const RP1 = "pinctrl-rp1";

testWith([], "loadGpiod() names the library it tried, why it failed, and what to install", () => {
  assertThrowsWith(
    () => loadGpiod("/nonexistent/libgpiod.so.3"),
    Deno.errors.NotFound,
    "/nonexistent/libgpiod.so.3",
    "No such file",
    "apt install libgpiod3",
    "apt install libgpiod2",
    LIBGPIOD_ENV,
  );
});

testWith(
  NEEDS.system,
  "launch:pi without libgpiod stops before starting anything and says what to install",
  async () => {
    await withTempDir(async (dir) => {
      await using launcher = spawnDeno(`${ROOT}launch.ts`, ["--pi", "--state", `${dir}/state`], {
        permissions: LAUNCH_PERMISSIONS,
        env: { [LIBGPIOD_ENV]: "/nonexistent/libgpiod.so.3" },
      });
      const status = await launcher.status();
      assertEquals(status.code, 1, launcher.transcript);
      assertMatch(status.stderr, /Cannot load libgpiod/);
      assertMatch(status.stderr, /apt install libgpiod3/);
      // The variable named the library tried: it is what to mend first.
      assertMatch(status.stderr, /MMAP_IPC_LIBGPIOD names that library: point it at a libgpiod/);
      assertEquals(launcher.matching(/Started/), [], launcher.transcript);
    });
  },
);

simTest("the libgpiod this VM installed is the one found and loaded", () => {
  const lib = gpiod();
  assertEquals(String(lib.api), env("GPIO_TEST_API"));
  assertMatch(lib.version, lib.api === 1 ? /^1\.6/ : /^2\./);
});

for (const [model, banks] of Object.entries(PI_MODELS)) {
  simTest(`findLine() finds a ${model}'s header lines by name, number and chip label`, () => {
    using sim = new GpioSim(banks);
    const [other, header] = sim.chips;
    const expect = (chipSpec: string, lineSpec: string, offset: number): string => {
      const found = findLine(chipSpec, lineSpec);
      try {
        assertEquals(
          [found.chip.path, found.offset],
          [header.path, offset],
          `${chipSpec} ${lineSpec}`,
        );
        return found.description;
      } finally {
        found.chip.close();
      }
    };
    assertMatch(expect("auto", "GPIO17", 17), /^GPIO17 \(line 17 of \/dev\/gpiochip\d+, pinctrl-/);
    // The Pi 4 and older name the button's line GPIO_GCLK; GPIO4 is still BCM 4.
    const gpio4 = expect("auto", "GPIO4", 4);
    if (header.label !== RP1) assertMatch(gpio4, /named "GPIO_GCLK"/);
    expect("auto", "4", 4); // not offset 4 of the chip before it
    expect(header.label, "GPIO22", 22);
    expect(header.name, "5", 5);
    expect(header.path, "GPIO27", 27);
    expect(header.name.replace("gpiochip", ""), "17", 17);
    assertThrowsWith(() => findLine(other.label, "GPIO17"), Deno.errors.NotFound, other.name);
    assertThrowsWith(
      () => findLine("auto", "GPIO99"),
      Deno.errors.NotFound,
      `"GPIO99"`,
      `${header.name} (${header.label})`,
      `${other.name} (${other.label})`,
    );
    assertThrowsWith(
      () => findLine("pinctrl-nonesuch", "GPIO4"),
      Deno.errors.NotFound,
      "chips present",
      header.label,
    );
    assertThrowsWith(() => findLine(header.label, "60"), Deno.errors.NotFound, "lines 0 to");
  });
}

simTest("an LED set from Deno drives the simulated line, and is released on close", () => {
  using sim = pi5();
  const changes: boolean[] = [];
  const led = openGpioLed({ onChange: (on) => changes.push(on) });
  assertMatch(led.description, /^GPIO17 \(line 17 of \/dev\/gpiochip\d+, pinctrl-rp1\)$/);
  assertEquals(sim.value(RP1, 17), "0");
  led.set(true);
  assertEquals(sim.value(RP1, 17), "1");
  const { chip, offset } = findLine(RP1, "GPIO17");
  try {
    assertEquals(chip.lineInfo(offset), {
      offset: 17,
      name: "GPIO17",
      used: true,
      consumer: "mmap-ipc led",
    });
    led.set(false);
    assertEquals(sim.value(RP1, 17), "0");
    led.close();
    led.close();
    assertEquals(chip.lineInfo(offset).used, false);
  } finally {
    chip.close();
  }
  assertEquals(changes, [true, false]);
  assertThrowsWith(() => led.set(true), Deno.errors.BadResource, "GPIO17");
});

simTest("a pull-up bias reaches the kernel, and active-low reads a pull to ground as 1", () => {
  using sim = pi5();
  sim.setPull(RP1, 4, "pull-down");
  const { chip, offset } = findLine("auto", "GPIO4");
  try {
    using input = chip.requestInput(offset, {
      consumer: "test-button",
      activeLow: true,
      bias: "pull-up",
      debounceUs: 0,
    });
    assertEquals(sim.pull(RP1, 4), "pull-up"); // set by the request, not by the test
    assertEquals(input.read(), 0); // pulled up: released
    sim.setPull(RP1, 4, "pull-down");
    assertEquals(input.read(), 1); // pulled to ground: pressed
    sim.setPull(RP1, 4, "pull-up");
    assertEquals(input.read(), 0);
  } finally {
    chip.close();
  }
});

simTest("edges from the simulator's pulls wake a request waiting on another thread", async () => {
  using sim = pi5();
  const { chip, offset } = findLine("auto", "GPIO4");
  try {
    using input = chip.requestInput(offset, {
      consumer: "test-button",
      activeLow: true,
      bias: "pull-up",
      debounceUs: 0,
    });
    assertEquals(await input.waitEvents(20), false);
    const waiting = input.waitEvents(EVENT_MS);
    await delay(20);
    sim.setPull(RP1, 4, "pull-down");
    assertEquals(await waiting, true);
    const edges: boolean[] = [];
    const times: number[] = [];
    const edge = (active: boolean, at: number): void => {
      edges.push(active);
      times.push(at);
    };
    assertEquals(input.readEvents(edge), 1);
    sim.setPull(RP1, 4, "pull-up");
    assertEquals(await input.waitEvents(EVENT_MS), true);
    assertEquals(input.readEvents(edge), 1);
    // Active low: the pull to ground is the edge to active, the pull up the edge back.
    assertEquals(edges, [true, false]);
    assert(times[1] > times[0] && times[1] - times[0] < EVENT_MS, String(times));
    assert(input.eventFd >= 0);
  } finally {
    chip.close();
  }
});

simTest(
  "closing a chip and its requests in any order, with a wait in flight, is safe",
  async () => {
    using _sim = pi5();
    for (const order of ["chip first", "request first", "chip during a wait"]) {
      const { chip, offset } = findLine("auto", "GPIO4");
      const input = chip.requestInput(offset, {
        consumer: "test-close",
        activeLow: true,
        bias: "pull-up",
        debounceUs: 0,
      });
      if (order === "chip during a wait") {
        const waiting = input.waitEvents(300);
        await delay(20);
        chip.close(); // the line is released only once the wait has returned
        await assertRejects(() => waiting, Deno.errors.BadResource);
      } else if (order === "chip first") {
        chip.close();
      } else {
        input.close();
        chip.close();
      }
      input.close();
      chip.close();
      assertThrows(() => input.read(), Deno.errors.BadResource);
      assertThrows(() => chip.lineInfo(offset), Deno.errors.BadResource);
    }
  },
);

/** Counts `button`'s presses from now on (`count`) until disposed, which ends its loop. */
function countPresses(button: GpioButton): { readonly count: number } & AsyncDisposable {
  const controller = new AbortController();
  let count = 0;
  const counting = (async () => {
    for await (const _ of button.presses(controller.signal)) count++;
  })();
  return {
    get count(): number {
      return count;
    },
    async [Symbol.asyncDispose](): Promise<void> {
      controller.abort();
      await counting;
    },
  };
}

simTest("the GPIO button counts a bouncing press once and a held button once", async () => {
  // On a Pi 4's header chip, where GPIO4 is named GPIO_GCLK.
  using sim = new GpioSim(PI_MODELS["Raspberry Pi 4"]);
  const label = "pinctrl-bcm2711";
  // Long enough that a burst of bounces fits in it even on a slow emulated CPU.
  await using button = openGpioButton({ debounceMs: 300 });
  assertMatch(button.description, /^GPIO4 \(line 4 of .*pinctrl-bcm2711, named "GPIO_GCLK"\)$/);
  await using presses = countPresses(button);
  for (let i = 0; i < 5; i++) {
    sim.setPull(label, 4, "pull-down");
    sim.setPull(label, 4, "pull-up");
  }
  sim.setPull(label, 4, "pull-down");
  await until(() => presses.count >= 1, "a press", { timeoutMs: EVENT_MS });
  await delay(900); // held for three debounce times
  assertEquals(presses.count, 1);
  sim.setPull(label, 4, "pull-up");
  await delay(600);
  sim.setPull(label, 4, "pull-down");
  await until(() => presses.count === 2, "a second press", { timeoutMs: EVENT_MS });
  sim.setPull(label, 4, "pull-up");
  assertEquals(presses.count, 2);
});

simTest(
  "the GPIO button counts presses made and released while its process was busy: told by the kernel's queued edges, not by the line's value once it looks",
  async () => {
    using sim = pi5();
    await using button = openGpioButton({ debounceMs: 50 });
    await using presses = countPresses(button);
    await delay(100); // the button waits for its first edge
    // This thread busy, as a process stalled by the scheduler, a long GC or SIGSTOP is: two
    // presses and releases 150 ms apart, each longer than the debounce, all queued unread.
    // Read once it looks, the line is released as it was: no press, before.
    const busy = (ms: number): void => {
      const until = performance.now() + ms;
      while (performance.now() < until);
    };
    for (let i = 0; i < 2; i++) {
      sim.setPull(RP1, 4, "pull-down");
      busy(150);
      sim.setPull(RP1, 4, "pull-up");
      busy(150);
    }
    await until(() => presses.count >= 2, "two presses.count", { timeoutMs: EVENT_MS });
    await delay(300); // and no more
    assertEquals(presses.count, 2);
  },
);

/** The x86-64 guests' helper (tests/gpio_vm/rt_burst.c): edges faster than the kernel takes them. */
const RT_BURST = "/usr/bin/rt_burst";

function rtBurstMissing(): string | undefined {
  try {
    Deno.statSync(RT_BURST);
    return undefined;
  } catch {
    return "needs rt_burst, built into the x86-64 guests";
  }
}

/**
 * Pulls line `offset` of the Pi 5's header chip up, then down again (a release and a press),
 * while no CPU is free for the kernel's interrupt threads: both edges come before the thread
 * of the first has run.
 */
async function releaseAndPressAtOnce(sim: GpioSim, offset: number): Promise<void> {
  const pull = `${sim.chip(RP1).sysfs}/sim_gpio${offset}/pull`;
  const output = await new Deno.Command(RT_BURST, {
    args: [pull, "pull-up", pull, "pull-down"],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert(output.success, new TextDecoder().decode(output.stderr));
}

simTest(
  "edges that come before the kernel's interrupt thread runs are merged into one event, typed by the line's level once it runs: a release and a press read as a press",
  async () => {
    using sim = pi5();
    const { chip, offset } = findLine("auto", "GPIO4");
    try {
      using input = chip.requestInput(offset, {
        consumer: "test-button",
        activeLow: true,
        bias: "pull-up",
        debounceUs: 0,
      });
      const edges: boolean[] = [];
      const edge = (active: boolean): void => void edges.push(active);
      sim.setPull(RP1, 4, "pull-down");
      assertEquals(await input.waitEvents(EVENT_MS), true);
      input.readEvents(edge);
      await releaseAndPressAtOnce(sim, 4);
      assertEquals(await input.waitEvents(EVENT_MS), true);
      await delay(500); // a second event, were there one, is queued by now
      input.readEvents(edge);
      assertEquals(edges, [true, true]);
    } finally {
      chip.close();
    }
  },
  rtBurstMissing,
);

simTest(
  "the GPIO button counts a release and a press that libgpiod 1.6's kernel interface merged into one event typed as a press",
  async () => {
    using sim = pi5();
    await using button = openGpioButton({ debounceMs: 50 });
    await using presses = countPresses(button);
    await delay(100); // the button waits for its first edge
    sim.setPull(RP1, 4, "pull-down");
    await until(() => presses.count === 1, "a press", { timeoutMs: EVENT_MS });
    await delay(300); // past the debounce time
    // Before: the event said "pressed", as the button was: nothing new, and the press lost.
    await releaseAndPressAtOnce(sim, 4);
    await until(() => presses.count === 2, "the second press", { timeoutMs: EVENT_MS });
    await delay(300); // and no more
    assertEquals(presses.count, 2);
    sim.setPull(RP1, 4, "pull-up");
  },
  () => gpiod().api === 1 ? rtBurstMissing() : "libgpiod 2.x debounces in the kernel",
);

simTest(
  "a GPIO button stopped (SIGSTOP) through more edges than the kernel queues counts each press it kept and the next one, and tells the events dropped: with libgpiod 1.6 the newest (the last release among them), with 2.x the oldest (the release before the first press kept)",
  async () => {
    using sim = pi5();
    await using button = spawnDeno(`${ROOT}tests/gpio_vm/count_presses.ts`, ["20"], {
      permissions: GUEST_RUN,
    });
    await button.waitFor(/^ready$/, { timeoutMs: START_MS });
    sim.setPull(RP1, 4, "pull-down");
    await button.waitFor(/^press 1$/, { timeoutMs: EVENT_MS });
    button.kill("SIGSTOP"); // its own pid: the Deno process itself
    try {
      // 21 edges at least 100 ms apart, five debounce times, so each is a change: a release,
      // then ten presses each with its release. The kernel queues 16 of them: with libgpiod 1.6
      // the first 16, ending on the eighth press; with 2.x the last 16, ending released.
      for (let i = 0; i < 21; i++) {
        await delay(100);
        sim.setPull(RP1, 4, i % 2 === 0 ? "pull-up" : "pull-down");
      }
      await delay(200); // the kernel's debounce (2.x) holds each edge back for its time
    } finally {
      button.kill("SIGCONT");
    }
    // Before, with 2.x: "press 8" at most, the first press kept taken for nothing new.
    const { index } = await button.waitFor(/^press 9$/, { timeoutMs: EVENT_MS });
    await delay(500); // past the debounce time, and the read of the line after it
    sim.setPull(RP1, 4, "pull-down");
    // Before, with 1.6: lost, the button still pressed from the last event kept.
    await button.waitFor(/^press 10$/, { since: index, timeoutMs: EVENT_MS });
    sim.setPull(RP1, 4, "pull-up");
    await delay(300);
    assertEquals(button.matching(/^press /).length, 10, button.transcript);
    // 1.6 cannot tell how many; 2.x tells the five oldest by their sequence numbers.
    const dropped = env("GPIO_TEST_API") === "1" ? "dropped unknown" : "dropped 5";
    assertEquals(button.matching(/^dropped /), [dropped], button.transcript);
  },
);

simTest(
  "a GPIO button closed while its caller holds a press, a settle of a bounce still due, reads nothing more: no BadResource from the settle's timer",
  async () => {
    using sim = pi5();
    const button = openGpioButton({ debounceMs: 300 });
    const controller = new AbortController();
    let presses = 0;
    const counting = (async () => {
      for await (const _ of button.presses(controller.signal)) {
        if (++presses < 2) continue;
        // Held at the yield while the bounce's settle still waits, then closed.
        await button.close();
        await delay(600); // past the settle: its read would have thrown from a timer
      }
    })();
    const busy = (ms: number): void => {
      const until = performance.now() + ms;
      while (performance.now() < until);
    };
    try {
      await delay(100);
      // All queued while this thread is busy, so the button reads them in a row: a press, a
      // bounce (its settle then due 300 ms after the press), a release and a second press.
      sim.setPull(RP1, 4, "pull-down");
      busy(10);
      sim.setPull(RP1, 4, "pull-up");
      busy(10);
      sim.setPull(RP1, 4, "pull-down");
      busy(400);
      sim.setPull(RP1, 4, "pull-up");
      busy(400);
      sim.setPull(RP1, 4, "pull-down");
      await counting;
      assertEquals(presses, 2);
    } finally {
      sim.setPull(RP1, 4, "pull-up");
      controller.abort();
      await button.close();
    }
  },
);

simTest(
  "a line held by another program is busy: the error names its holder and the line",
  async () => {
    using sim = pi5();
    const chip = sim.chip(RP1);
    await using holder = spawnDeno(
      `${ROOT}tests/gpio_vm/hold_line.ts`,
      [RP1, "GPIO17", "other-program"],
      { permissions: GUEST_RUN },
    );
    await holder.waitFor(/^holding/, { timeoutMs: START_MS });
    assertThrowsWith(
      () => openGpioLed(),
      Deno.errors.Busy,
      "EBUSY",
      `line 17 of ${chip.path}`,
      `consumer "other-program"`,
    );
    holder.kill("SIGTERM");
    assertEquals((await holder.status()).code, 0, holder.transcript);
    openGpioLed().close(); // free again
  },
);

simTest(
  "a user who may not open the chips is told the chip, the errno and the group to join",
  async () => {
    using _sim = pi5();
    await withTempDir(async (dir) => {
      const nobody = 65534;
      Deno.chownSync(dir, nobody, nobody);
      // As that user, with no supplementary groups: the chips are root's alone in the VM.
      const result = await new Deno.Command(Deno.execPath(), {
        args: ["run", ...GUEST_RUN, `${ROOT}launch.ts`, "--pi", "--state", `${dir}/state`],
        uid: nobody,
        gid: nobody,
        stdin: "null",
      }).output();
      const stderr = new TextDecoder().decode(result.stderr);
      assertEquals(result.code, 1, stderr);
      assertMatch(stderr, /Cannot open GPIO chip "\/dev\/gpiochip\d+": permission denied/);
      assertMatch(stderr, /\(EACCES\)/);
      assertMatch(stderr, /sudo usermod -aG gpio/);
    });
  },
  () => isRoot() ? undefined : "needs root, to run as another user",
);

const V1_LIBRARY = env("GPIO_TEST_V1_LIBRARY");

simTest(
  "libgpiod 1.6 on a kernel without the v1 interface reports EINVAL, the chip, and what to install",
  async () => {
    using _sim = pi5();
    try {
      assertEquals(loadGpiod(V1_LIBRARY).api, 1);
      const error = assertThrowsWith(
        () => findLine("auto", "GPIO17"),
        Deno.errors.NotSupported,
        "(EINVAL)",
        "/dev/gpiochip",
        "CONFIG_GPIO_CDEV_V1",
        "apt install libgpiod3",
      );
      assertNotEquals(error.message.indexOf("Cannot look for line"), -1);
    } finally {
      loadGpiod(); // the library the other tests use
    }
    await withTempDir(async (dir) => {
      await using launcher = spawnDeno(`${ROOT}launch.ts`, ["--pi", "--state", `${dir}/state`], {
        permissions: GUEST_RUN,
        env: { [LIBGPIOD_ENV]: V1_LIBRARY as string },
      });
      const status = await launcher.status();
      assertEquals(status.code, 1, launcher.transcript);
      assertMatch(status.stderr, /\(EINVAL\).*CONFIG_GPIO_CDEV_V1.*libgpiod3/);
      assertMatch(status.stderr, /"\/dev\/gpiochip\d+"/);
    });
  },
  () =>
    env("GPIO_CDEV_V1") === "n" && V1_LIBRARY !== undefined
      ? undefined
      : "needs a kernel without the v1 interface and a libgpiod 1.6 (the VMs with libgpiod 2.x)",
);

simTest("deno task launch:pi on a Raspberry Pi 5's header: the button drives the LED", async () => {
  using sim = pi5();
  await withTempDir(async (dir) => {
    await using launcher = spawnDeno(`${ROOT}launch.ts`, ["--pi", "--state", `${dir}/state`], {
      permissions: GUEST_RUN,
    });
    const wait = (pattern: RegExp, since = 0): Promise<{ index: number }> =>
      launcher.waitFor(pattern, { since, timeoutMs: START_MS });
    await wait(/Press the button on GPIO4 \(line 4 of .*pinctrl-rp1\)/);
    await wait(/Button ready on GPIO4/);
    await wait(/LED Status: Off/);
    assertEquals(sim.value(RP1, 17), "0");
    sim.setPull(RP1, 4, "pull-down");
    const on = await wait(/LED Status: On/);
    await until(() => sim.value(RP1, 17) === "1", "the LED line high", { timeoutMs: EVENT_MS });
    sim.setPull(RP1, 4, "pull-up");
    await delay(200);
    sim.setPull(RP1, 4, "pull-down");
    await wait(/LED Status: Off/, on.index);
    await until(() => sim.value(RP1, 17) === "0", "the LED line low", { timeoutMs: EVENT_MS });
    sim.setPull(RP1, 4, "pull-up");
    launcher.kill("SIGTERM");
    assertEquals((await launcher.status()).code, 0, launcher.transcript);
  });
  const { chip, offset } = findLine(RP1, "GPIO17");
  try {
    assertEquals(chip.lineInfo(offset).used, false);
  } finally {
    chip.close();
  }
});

simTest("launch:pi --chip, --button-line and --led-line pick other lines", async () => {
  const label = "mmap-ipc-test-board";
  using sim = new GpioSim([
    ...PI_MODELS["Raspberry Pi 4"],
    { label, lines: 8, names: ["", "", "PUSH", "", "", "LAMP"] },
  ]);
  await withTempDir(async (dir) => {
    await using launcher = spawnDeno(
      `${ROOT}launch.ts`,
      [
        "--pi",
        "--state",
        `${dir}/state`,
        "--chip",
        label,
        "--button-line",
        "PUSH",
        "--led-line",
        "5",
        "--debounce-ms",
        "10",
      ],
      { permissions: GUEST_RUN },
    );
    const wait = (pattern: RegExp): Promise<{ index: number }> =>
      launcher.waitFor(pattern, { timeoutMs: START_MS });
    await wait(new RegExp(`Press the button on PUSH \\(line 2 of .*${label}\\)`));
    await wait(new RegExp(`LED ready on LAMP \\(line 5 of .*${label}\\)`));
    await wait(/Button ready on PUSH/);
    await wait(/LED Status: Off/);
    sim.setPull(label, 2, "pull-down");
    await wait(/LED Status: On/);
    await until(() => sim.value(label, 5) === "1", "LAMP high", { timeoutMs: EVENT_MS });
    assertEquals(sim.value("pinctrl-bcm2711", 17), "0"); // the default LED line is untouched
    sim.setPull(label, 2, "pull-up");
    launcher.kill("SIGTERM");
    assertEquals((await launcher.status()).code, 0, launcher.transcript);
  });
});
