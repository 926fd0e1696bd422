/**
 * The kernel's GPIO simulator (gpio-sim), driven through configfs and sysfs, for the GPIO tests
 * that run inside the VMs of `deno task test:gpio`. Each {@link GpioSim} is one simulated device
 * whose banks become chips with the labels and line names a Raspberry Pi's kernel gives them.
 *
 * @module
 */

/** Where configfs has the simulator; the VM's /init mounts it and exports this. */
export const GPIO_SIM_ENV = "GPIO_SIM";

/** One bank of a simulated device: it becomes one GPIO chip. */
export interface SimBank {
  /** The chip's label, such as `pinctrl-rp1`. */
  label: string;
  /** How many lines it has. */
  lines: number;
  /** Line names by offset; missing or empty entries stay unnamed. */
  names?: readonly string[];
}

/** A simulated chip, live. */
export interface SimChip {
  /** Its device path, such as `/dev/gpiochip2`. */
  path: string;
  /** Its name, such as `gpiochip2`. */
  name: string;
  /** Its label. */
  label: string;
  /** Its directory in sysfs, where `sim_gpioN/{value,pull}` are. */
  sysfs: string;
}

/** The outside world's pull on a simulated line: `pull-down` is a pressed button to ground. */
export type SimPull = "pull-up" | "pull-down";

/** The configfs directory of the simulator, or undefined outside the test VMs. */
export function simulatorRoot(): string | undefined {
  try {
    return Deno.env.get(GPIO_SIM_ENV) || undefined;
  } catch {
    return undefined;
  }
}

let devices = 0;

/** A simulated GPIO device, live until closed. */
export class GpioSim implements Disposable {
  readonly #dir: string;
  readonly #banks: readonly SimBank[];
  /** Its chips, one per bank, in bank order. */
  readonly chips: readonly SimChip[];
  #closed = false;

  /** Creates the device with `banks` and makes it live; see {@link GpioSim.close}. */
  constructor(banks: readonly SimBank[]) {
    const root = simulatorRoot();
    if (root === undefined) throw new Deno.errors.NotFound(`$${GPIO_SIM_ENV} is not set`);
    this.#dir = `${root}/mmap-ipc-${Deno.pid}-${++devices}`;
    this.#banks = banks;
    Deno.mkdirSync(this.#dir);
    try {
      banks.forEach((bank, index) => {
        const dir = `${this.#dir}/bank${index}`;
        Deno.mkdirSync(dir);
        Deno.writeTextFileSync(`${dir}/num_lines`, String(bank.lines));
        Deno.writeTextFileSync(`${dir}/label`, bank.label);
        bank.names?.forEach((name, offset) => {
          if (!name) return;
          Deno.mkdirSync(`${dir}/line${offset}`);
          Deno.writeTextFileSync(`${dir}/line${offset}/name`, name);
        });
      });
      Deno.writeTextFileSync(`${this.#dir}/live`, "1");
      const device = Deno.readTextFileSync(`${this.#dir}/dev_name`).trim();
      this.chips = banks.map((bank, index) => {
        const name = Deno.readTextFileSync(`${this.#dir}/bank${index}/chip_name`).trim();
        return {
          path: `/dev/${name}`,
          name,
          label: bank.label,
          sysfs: `/sys/devices/platform/${device}/${name}`,
        };
      });
    } catch (error) {
      this.#remove();
      throw error;
    }
  }

  /** The chip with `label`. */
  chip(label: string): SimChip {
    const chip = this.chips.find((candidate) => candidate.label === label);
    if (chip === undefined) throw new Deno.errors.NotFound(`No simulated chip ${label}`);
    return chip;
  }

  /** The level the simulator sees on a line: "1" or "0" (what a driven output shows). */
  value(label: string, offset: number): string {
    return Deno.readTextFileSync(`${this.chip(label).sysfs}/sim_gpio${offset}/value`).trim();
  }

  /** The line's pull as the simulator has it: set by the test, or by a requested bias. */
  pull(label: string, offset: number): string {
    return Deno.readTextFileSync(`${this.chip(label).sysfs}/sim_gpio${offset}/pull`).trim();
  }

  /** Pulls a line from outside, as a button or a resistor would. */
  setPull(label: string, offset: number, pull: SimPull): void {
    Deno.writeTextFileSync(`${this.chip(label).sysfs}/sim_gpio${offset}/pull`, pull);
  }

  #remove(): void {
    try {
      Deno.writeTextFileSync(`${this.#dir}/live`, "0");
    } catch {
      // never went live
    }
    this.#banks.forEach((bank, index) => {
      const dir = `${this.#dir}/bank${index}`;
      bank.names?.forEach((name, offset) => {
        if (name) Deno.removeSync(`${dir}/line${offset}`, { recursive: false });
      });
      try {
        Deno.removeSync(dir);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
    });
    Deno.removeSync(this.#dir);
  }

  /** Takes the device down and removes its configuration; safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#remove();
  }

  /** Same as close(), for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Names from offset 0 up, as a device tree's `gpio-line-names` gives them. */
function names(...list: string[]): readonly string[] {
  return list;
}

const HEADER_BCM2835 = names(
  "ID_SDA",
  "ID_SCL",
  "SDA1",
  "SCL1",
  "GPIO_GCLK",
  "GPIO5",
  "GPIO6",
  "SPI_CE1_N",
  "SPI_CE0_N",
  "SPI_MISO",
  "SPI_MOSI",
  "SPI_SCLK",
  "GPIO12",
  "GPIO13",
  "TXD1",
  "RXD1",
  ...Array.from({ length: 12 }, (_, i) => `GPIO${16 + i}`),
);

/**
 * The header chips of the Raspberry Pi models, with the line names their device trees give the
 * 40-pin header's lines (offsets 0 to 27; the rest are left unnamed here), each after another chip
 * of that model, so `auto` has to look past chip 0 (as on a Pi 5 with an older kernel, where the
 * SoC's own chips come first; a Pi 4's firmware expander really comes after its header chip).
 */
export const PI_MODELS: Readonly<Record<string, readonly SimBank[]>> = {
  "Raspberry Pi 5": [
    { label: "gpio-brcmstb@107d508500", lines: 32, names: names("", "2712_BOOT_CS_N") },
    {
      label: "pinctrl-rp1",
      lines: 54,
      names: names("ID_SDA", "ID_SCL", ...Array.from({ length: 26 }, (_, i) => `GPIO${2 + i}`)),
    },
  ],
  "Raspberry Pi 4": [
    { label: "raspberrypi-exp-gpio", lines: 8, names: names("BT_ON", "WL_ON", "PWR_LED_OFF") },
    { label: "pinctrl-bcm2711", lines: 58, names: HEADER_BCM2835 },
  ],
  "Raspberry Pi 3": [
    { label: "raspberrypi-exp-gpio", lines: 8, names: names("BT_ON", "WL_ON", "STATUS_LED") },
    { label: "pinctrl-bcm2835", lines: 54, names: HEADER_BCM2835 },
  ],
};
