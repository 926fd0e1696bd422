/**
 * The GPIO code on libgpiod 2.x against the kernel's GPIO simulator (gpio-sim). These tests run
 * inside the VM that `deno task test:gpio` boots (tests/gpio_vm/), which names the simulated
 * chip's lines GPIO0..GPIO31 like a Raspberry Pi's header and says where its sysfs is in
 * $GPIO_SIM_SYSFS. Elsewhere they are ignored.
 */
import { assert, assertEquals, assertMatch, assertThrows } from "@std/assert";
import { assertThrowsWith } from "./helpers.ts";
import { findLine, gpiod } from "../ffi/gpiod.ts";
import { openGpioButton } from "../hw/gpio_button.ts";
import { openGpioLed } from "../hw/gpio_led.ts";
import { delay, eventually, ROOT, spawnDeno } from "./helpers.ts";

function simulator(): string | undefined {
  try {
    return Deno.env.get("GPIO_SIM_SYSFS");
  } catch {
    return undefined;
  }
}

const SIM = simulator();

function simTest(name: string, fn: () => Promise<void> | void): void {
  Deno.test({
    name: SIM
      ? name
      : `${name} [ignored: needs the kernel GPIO simulator; run deno task test:gpio]`,
    ignore: SIM === undefined,
    fn,
  });
}

function simValue(line: number): string {
  return Deno.readTextFileSync(`${SIM}/sim_gpio${line}/value`).trim();
}

/** Pulls the simulated line: "pull-down" is a pressed button (it connects the pin to ground). */
function simPull(line: number, pull: "pull-up" | "pull-down"): void {
  Deno.writeTextFileSync(`${SIM}/sim_gpio${line}/pull`, pull);
}

simTest("libgpiod 2.x: the API is detected and the simulated header's lines are found", () => {
  const lib = gpiod();
  assertEquals(lib.api, 2);
  assertMatch(lib.version, /^2\./);
  const { chip, offset } = findLine("auto", "GPIO17");
  assertEquals(offset, 17);
  assertEquals(chip.path, Deno.env.get("GPIO_SIM_CHIP"));
  assertEquals(chip.lineCount, 32);
  chip.close();
  const byNumber = findLine("auto", "4");
  assertEquals(byNumber.offset, 4);
  byNumber.chip.close();
  assertThrowsWith(() => findLine("auto", "GPIO99"), Deno.errors.NotFound, "GPIO99");
  assertThrows(() => findLine("no-such-chip", "GPIO4"), Deno.errors.NotFound);
});

simTest("libgpiod 2.x: an output set from Deno shows in the simulator", () => {
  const { chip, offset } = findLine("auto", "GPIO17");
  const line = chip.requestOutput(offset, "test-led", 0);
  assertEquals(simValue(17), "0");
  line.write(1);
  assertEquals(simValue(17), "1");
  assertEquals(line.read(), 1);
  assertEquals(chip.lineInfo(offset), {
    offset: 17,
    name: "GPIO17",
    used: true,
    consumer: "test-led",
  });
  line.write(0);
  assertEquals(simValue(17), "0");
  line.close();
  chip.close();
});

simTest("libgpiod 2.x: a pull set in the simulator is read through pull-up and active-low", () => {
  const { chip, offset } = findLine("auto", "GPIO4");
  const input = chip.requestInput(offset, {
    consumer: "test-button",
    activeLow: true,
    bias: "pull-up",
    debounceUs: 0,
  });
  assertEquals(input.read(), 0); // pulled up: released
  simPull(4, "pull-down");
  assertEquals(input.read(), 1); // pressed
  simPull(4, "pull-up");
  assertEquals(input.read(), 0);
  input.close();
  chip.close();
});

simTest("libgpiod 2.x: edge events arrive through a nonblocking wait", async () => {
  const { chip, offset } = findLine("auto", "GPIO4");
  const input = chip.requestInput(offset, {
    consumer: "test-button",
    activeLow: true,
    bias: "pull-up",
    debounceUs: 0,
  });
  assertEquals(await input.waitEvents(20), false);
  const waiting = input.waitEvents(10_000);
  await delay(20);
  simPull(4, "pull-down");
  assertEquals(await waiting, true);
  assert(input.readEvents() >= 1);
  simPull(4, "pull-up");
  assertEquals(await input.waitEvents(10_000), true);
  assert(input.readEvents() >= 1);
  input.close();
  chip.close();
});

simTest("libgpiod 2.x: a bouncing press is one press, a held button is one press", async () => {
  await using button = openGpioButton({ debounceMs: 50 });
  const controller = new AbortController();
  let presses = 0;
  const counting = (async () => {
    for await (const _ of button.presses(controller.signal)) presses++;
  })();
  await delay(20);
  for (let i = 0; i < 5; i++) {
    simPull(4, "pull-down");
    simPull(4, "pull-up");
  }
  simPull(4, "pull-down");
  await eventually(() => presses >= 1, 5000, "a press");
  await delay(300); // held
  assertEquals(presses, 1);
  simPull(4, "pull-up");
  await delay(150);
  simPull(4, "pull-down");
  await eventually(() => presses === 2, 5000, "a second press");
  simPull(4, "pull-up");
  controller.abort();
  await counting;
});

simTest("libgpiod 2.x: a busy line names its consumer", () => {
  const { chip, offset } = findLine("auto", "GPIO17");
  const holder = chip.requestOutput(offset, "someone-else", 0);
  try {
    assertThrowsWith(() => openGpioLed(), Deno.errors.Busy, `consumer "someone-else"`);
  } finally {
    holder.close();
    chip.close();
  }
});

simTest(
  "deno task launch:pi on the simulator: the simulated button drives the simulated LED",
  async () => {
    await using launcher = spawnDeno(`${ROOT}launch.ts`, ["--pi"], {
      permissions: ["--allow-all", "--cached-only", "--no-lock"],
    });
    await launcher.waitFor(/Press the button on GPIO4/);
    await launcher.waitFor(/Button ready on GPIO4/);
    await launcher.waitFor(/LED Status: Off/);
    assertEquals(simValue(17), "0");
    simPull(4, "pull-down");
    await launcher.waitFor(/LED Status: On/);
    await eventually(() => simValue(17) === "1", 5000, "the LED line high");
    simPull(4, "pull-up");
    await delay(150);
    simPull(4, "pull-down");
    const on = await launcher.waitFor(/LED Status: On/);
    await launcher.waitFor(/LED Status: Off/, { since: on.index });
    await eventually(() => simValue(17) === "0", 5000, "the LED line low");
    simPull(4, "pull-up");
    launcher.kill("SIGTERM");
    const status = await launcher.status();
    assertEquals(status.code, 0, launcher.transcript);
  },
);
