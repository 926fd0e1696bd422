/**
 * The GPIO code on libgpiod 1.6, against a small fake libgpiod built from
 * tests/fixtures/fake_gpiod_v1.c (no kernel here speaks the v1 ioctls with a simulator).
 * The 2.x path runs against the kernel's GPIO simulator: deno task test:gpio.
 */
import { assert, assertEquals, assertThrows } from "@std/assert";
import { assertThrowsWith } from "./helpers.ts";
import { findLine, LIBGPIOD_ENV, loadGpiod, openAllChips } from "../ffi/gpiod.ts";
import { openGpioButton } from "../hw/gpio_button.ts";
import { openGpioLed } from "../hw/gpio_led.ts";
import { delay, eventually, requires, ROOT, spawnDeno, TESTS_DIR, testWith } from "./helpers.ts";

// gcc builds the fake libgpiod.
const NEEDS = ["run", "read", "write", "env", requires("gcc")] as const;

/** Builds the fake library in a fresh directory that also drives it; removed afterwards. */
async function withFakeGpiod(
  fn: (dir: string, library: string) => Promise<void> | void,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "mmap-ipc-gpio-" });
  try {
    const library = `${dir}/libgpiod-fake.so`;
    const built = await new Deno.Command("gcc", {
      args: ["-shared", "-fPIC", "-o", library, `${TESTS_DIR}fixtures/fake_gpiod_v1.c`],
    }).output();
    assert(built.success, new TextDecoder().decode(built.stderr));
    Deno.env.set("FAKE_GPIOD_DIR", dir);
    loadGpiod(library);
    await fn(dir, library);
  } finally {
    Deno.env.delete("FAKE_GPIOD_DIR");
    await Deno.remove(dir, { recursive: true });
  }
}

function setLevel(dir: string, offset: number, level: 0 | 1): void {
  Deno.writeTextFileSync(`${dir}/line${offset}.level`, String(level));
}

/** Moves input line `offset` to `level` and queues the matching edge event. */
function edge(dir: string, offset: number, level: 0 | 1): void {
  setLevel(dir, offset, level);
  const fifo = Deno.openSync(`${dir}/line${offset}.events`, { write: true });
  fifo.writeSync(new TextEncoder().encode(level ? "R" : "F"));
  fifo.close();
}

testWith(NEEDS, "libgpiod 1.6: the API is detected and chips and lines are found", async () => {
  await withFakeGpiod((_dir, library) => {
    const lib = loadGpiod(library);
    assertEquals(lib.api, 1);
    assertEquals(lib.version, "1.6.3-fake");
    const chips = openAllChips();
    assertEquals(chips.map((chip) => [chip.path, chip.name, chip.label, chip.lineCount]), [
      ["/dev/gpiochip0", "gpiochip0", "fake-pinctrl", 32],
    ]);
    for (const chip of chips) chip.close();
    for (
      const [chip, line, offset] of [
        ["auto", "GPIO4", 4],
        ["auto", "17", 17],
        ["fake-pinctrl", "GPIO4", 4],
        ["gpiochip0", "GPIO9", 9],
        ["0", "5", 5],
        ["/dev/gpiochip0", "31", 31],
      ] as const
    ) {
      const found = findLine(chip, line);
      assertEquals(found.offset, offset, `${chip} ${line}`);
      found.chip.close();
    }
    assertThrowsWith(
      () => findLine("gpiochip7", "GPIO4"),
      Deno.errors.NotFound,
      "gpiochip0 (fake-pinctrl)",
    );
    assertThrowsWith(() => findLine("auto", "GPIO99"), Deno.errors.NotFound, "GPIO99");
    assertThrows(() => findLine("auto", "99"), Deno.errors.NotFound);
  });
});

testWith(NEEDS, "libgpiod 1.6: an output line is set, read and shown as used", async () => {
  await withFakeGpiod((dir) => {
    const { chip, offset } = findLine("auto", "GPIO17");
    const line = chip.requestOutput(offset, "test-led", 0);
    assertEquals(Deno.readTextFileSync(`${dir}/line17.out`), "0");
    line.write(1);
    assertEquals(Deno.readTextFileSync(`${dir}/line17.out`), "1");
    assertEquals(line.read(), 1);
    assertEquals(chip.lineInfo(offset), {
      offset: 17,
      name: "GPIO17",
      used: true,
      consumer: "test-led",
    });
    line.close();
    line.close();
    assertThrows(() => line.write(0), Deno.errors.BadResource);
    assertEquals(chip.lineInfo(offset).used, false);
    chip.close();
  });
});

testWith(NEEDS, "libgpiod 1.6: a pulled-up, active-low input reads and reports edges", async () => {
  await withFakeGpiod(async (dir) => {
    const { chip, offset } = findLine("auto", "GPIO4");
    const input = chip.requestInput(offset, {
      consumer: "test-button",
      activeLow: true,
      bias: "pull-up",
      debounceUs: 0,
    });
    assertEquals(input.read(), 0); // pulled up: electrically high, logically released
    assertEquals(await input.waitEvents(20), false);
    const waiting = input.waitEvents(10_000);
    await delay(10);
    edge(dir, offset, 0);
    assertEquals(await waiting, true);
    assertEquals(input.readEvents(), 1);
    assertEquals(input.read(), 1); // pressed: electrically low
    input.close();
    chip.close();
  });
});

testWith(
  NEEDS,
  "libgpiod 1.6: a busy line names its consumer; a denied chip says which group",
  async () => {
    await withFakeGpiod((dir) => {
      Deno.writeTextFileSync(`${dir}/line4.busy`, "other-app");
      assertThrowsWith(
        () => openGpioButton(),
        Deno.errors.Busy,
        `consumer "other-app"`,
        "/dev/gpiochip0",
      );
      Deno.removeSync(`${dir}/line4.busy`);
      Deno.writeTextFileSync(`${dir}/deny`, "");
      assertThrowsWith(() => openGpioLed(), Deno.errors.PermissionDenied, "gpio", "/dev/gpiochip0");
    });
  },
);

testWith(NEEDS, "libgpiod: a library that cannot be loaded is reported with what to do", () => {
  assertThrowsWith(
    () => loadGpiod("/nonexistent/libgpiod.so"),
    Deno.errors.NotFound,
    "/nonexistent/libgpiod.so",
    "apt install libgpiod3",
    LIBGPIOD_ENV,
  );
});

testWith(
  NEEDS,
  "GPIO button on 1.6: presses are debounced in software, a held button is one press",
  async () => {
    await withFakeGpiod(async (dir) => {
      await using button = openGpioButton({ debounceMs: 40 });
      const controller = new AbortController();
      let presses = 0;
      const counting = (async () => {
        for await (const _ of button.presses(controller.signal)) presses++;
      })();
      await delay(20);
      // A bouncy press: down, up, down within the debounce time, then held.
      edge(dir, 4, 0);
      edge(dir, 4, 1);
      edge(dir, 4, 0);
      await eventually(() => presses === 1, 5000, "one press");
      await delay(150); // held: nothing more
      assertEquals(presses, 1);
      edge(dir, 4, 1); // released
      await delay(80);
      edge(dir, 4, 0); // pressed again
      await eventually(() => presses === 2, 5000, "a second press");
      // Released and pressed again inside the debounce time: settled after it, so still seen.
      edge(dir, 4, 1);
      await delay(80);
      edge(dir, 4, 0);
      edge(dir, 4, 1);
      edge(dir, 4, 0);
      await eventually(() => presses === 3, 5000, "a third press");
      controller.abort();
      await counting;
      assertEquals(presses, 3);
    });
  },
);

testWith(NEEDS, "GPIO LED on 1.6: starts Off, follows, and is released Off", async () => {
  await withFakeGpiod((dir) => {
    const changes: boolean[] = [];
    const led = openGpioLed({ onChange: (on) => changes.push(on) });
    assertEquals(Deno.readTextFileSync(`${dir}/line17.out`), "0");
    led.set(true);
    assertEquals(Deno.readTextFileSync(`${dir}/line17.out`), "1");
    led.close();
    led.close();
    assertEquals(Deno.readTextFileSync(`${dir}/line17.out`), "0");
    assertEquals(changes, [true]);
    assertThrows(() => led.set(true), Deno.errors.BadResource);
  });
});

testWith(
  NEEDS,
  "deno task launch:pi on libgpiod 1.6: presses on GPIO4 toggle the LED on GPIO17",
  async () => {
    await withFakeGpiod(async (dir, library) => {
      await using launcher = spawnDeno(`${ROOT}launch.ts`, ["--pi", "--debounce-ms", "10"], {
        permissions: ["--allow-ffi", "--allow-run", "--allow-read", "--allow-env"],
        env: { [LIBGPIOD_ENV]: library, FAKE_GPIOD_DIR: dir },
      });
      const pids: number[] = [];
      try {
        await launcher.waitFor(/Press the button on GPIO4 on \/dev\/gpiochip0 \(fake-pinctrl\)/);
        for (const name of ["led", "button"]) {
          pids.push(
            Number(
              (await launcher.waitFor(new RegExp(`Started ${name} \\(pid (\\d+)\\)`))).match[1],
            ),
          );
        }
        await launcher.waitFor(/Button ready on GPIO4/);
        await launcher.waitFor(/LED Status: Off/);
        await eventually(
          () => {
            try {
              return Deno.statSync(`${dir}/line4.events`).isFifo === true;
            } catch {
              return false;
            }
          },
          10_000,
          "the button's event FIFO",
        );
        edge(dir, 4, 0);
        await launcher.waitFor(/LED Status: On/);
        assertEquals(Deno.readTextFileSync(`${dir}/line17.out`), "1");
        edge(dir, 4, 1);
        await delay(50);
        edge(dir, 4, 0);
        const off = await launcher.waitFor(/LED Status: Off/, { since: 0 });
        assert(off.index > 0);
        await eventually(
          () => Deno.readTextFileSync(`${dir}/line17.out`) === "0",
          5000,
          "LED line low",
        );
        launcher.kill("SIGTERM");
        const status = await launcher.status();
        assertEquals(status.code, 0, launcher.transcript);
      } finally {
        launcher.kill("SIGKILL");
        await launcher.status();
        for (const pid of pids) {
          try {
            Deno.kill(pid, "SIGKILL");
          } catch {
            // gone
          }
        }
      }
    });
  },
);
