/**
 * Loads libgpiod, whichever major version the system has, and finds chips and lines by path,
 * name, label, offset or line name.
 *
 * @module
 */

import { Errno } from "./errno.ts";
import { hasErrno, lineSubject, withAdvice } from "./gpiod_errors.ts";
import { fromCString } from "./posix.ts";
import { ChipV1, GPIOD_V1_SYMBOLS } from "./gpiod_v1.ts";
import { type Chip, LIBGPIOD_ENV } from "./gpiod_types.ts";
import { ChipV2, GPIOD_V2_SYMBOLS } from "./gpiod_v2.ts";
import { openLibrary } from "./library.ts";

export type { Bias, Chip, InputLine, InputSettings, LineInfo, OutputLine } from "./gpiod_types.ts";
export { LIBGPIOD_ENV };

/** Tried in this order when the environment names none: 2.x first, then 1.6. */
const CANDIDATES = ["libgpiod.so.3", "libgpiod.so.2"];

/** Symbols that tell the two APIs apart; optional so that the probe loads either. */
const PROBE_SYMBOLS = {
  /** const char *gpiod_api_version(void); (2.x only) */
  gpiod_api_version: { parameters: [], result: "pointer", optional: true },
  /** struct gpiod_line_request *gpiod_chip_request_lines(...); (2.x only) */
  gpiod_chip_request_lines: {
    parameters: ["pointer", "pointer", "pointer"],
    result: "pointer",
    optional: true,
  },
  /** const char *gpiod_version_string(void); (1.x only) */
  gpiod_version_string: { parameters: [], result: "pointer", optional: true },
  /** struct gpiod_chip *gpiod_chip_open_by_name(const char *name); (1.x only) */
  gpiod_chip_open_by_name: { parameters: ["buffer"], result: "pointer", optional: true },
} as const satisfies Deno.ForeignLibraryInterface;

/** A loaded libgpiod. */
export interface Gpiod {
  /** The API major version: 1 (libgpiod 1.6) or 2 (libgpiod 2.x). */
  api: 1 | 2;
  /** The library's own version string, such as `2.1.3`. */
  version: string;
  /** What was loaded: the environment's value or the soname that worked. */
  library: string;
  /** Opens the chip at a device path. */
  openChip(path: string): Chip;
}

let loaded: Gpiod | undefined;

function environmentLibrary(): string | undefined {
  try {
    return Deno.env.get(LIBGPIOD_ENV) || undefined;
  } catch {
    return undefined; // no --allow-env: use the defaults
  }
}

function versionOf(pointer: Deno.PointerValue): string {
  return fromCString(pointer) || "unknown";
}

function load(library: string): Gpiod {
  const probe = openLibrary(library, PROBE_SYMBOLS);
  const isV2 = probe.symbols.gpiod_api_version !== null &&
    probe.symbols.gpiod_chip_request_lines !== null;
  const isV1 = probe.symbols.gpiod_version_string !== null &&
    probe.symbols.gpiod_chip_open_by_name !== null;
  probe.close();
  if (isV2) {
    const lib = openLibrary(library, GPIOD_V2_SYMBOLS).symbols;
    return {
      api: 2,
      library,
      version: versionOf(lib.gpiod_api_version()),
      openChip: (path) => new ChipV2(lib, path),
    };
  }
  if (isV1) {
    const lib = openLibrary(library, GPIOD_V1_SYMBOLS).symbols;
    return {
      api: 1,
      library,
      version: versionOf(lib.gpiod_version_string()),
      openChip: (path) => new ChipV1(lib, path),
    };
  }
  throw new Error("it has neither the libgpiod 1.6 nor the 2.x API");
}

/**
 * Loads libgpiod on first use: the library named by `$MMAP_IPC_LIBGPIOD`, else
 * `libgpiod.so.3` (2.x), else `libgpiod.so.2` (1.6). Throws `NotFound` listing every
 * candidate and why it failed, and how to install or name one.
 */
export function gpiod(): Gpiod {
  return loaded ?? loadGpiod();
}

/**
 * Loads (again) the given library, or the default candidates, and makes it the one
 * {@link gpiod} returns from then on.
 */
export function loadGpiod(library?: string): Gpiod {
  const named = library ?? environmentLibrary();
  const candidates = named === undefined ? CANDIDATES : [named];
  const failures: string[] = [];
  for (const candidate of candidates) {
    try {
      loaded = load(candidate);
      return loaded;
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      // Deno says "Could not open library: " twice before dlopen's own reason.
      const reason = (error as Error).message.replace(/^(Could not open library: )+/, "");
      const own = `${candidate}: `;
      failures.push(own + (reason.startsWith(own) ? reason.slice(own.length) : reason));
    }
  }
  const install = "Raspberry Pi OS or Debian trixie: sudo apt install libgpiod3; bookworm: " +
    "sudo apt install libgpiod2";
  // Named by the environment: that name is the first thing to mend.
  const advice = library === undefined && named !== undefined
    ? `${LIBGPIOD_ENV} names that library: point it at a libgpiod 1.6 or 2.x, or unset it to ` +
      `use the one installed (${install}).`
    : `Install it (${install}) or set ${LIBGPIOD_ENV} to the library's path.`;
  throw new Deno.errors.NotFound(`Cannot load libgpiod. Tried ${failures.join("; ")}. ${advice}`);
}

const MAX_CHIPS = 64;
// <errno.h>: the same on x86-64 and aarch64.
const ENXIO = 6;
const EBUSY = 16;
const ENODEV = 19;

/**
 * Labels of the chips that carry a Raspberry Pi's 40-pin header, whose line offsets are the
 * BCM numbers (GPIO17 is offset 17), with the models that have them.
 */
export const PI_HEADER_CHIPS: Readonly<Record<string, string>> = {
  "pinctrl-rp1": "Raspberry Pi 5",
  "pinctrl-bcm2711": "Raspberry Pi 4, 400 and CM4",
  "pinctrl-bcm2835": "Raspberry Pi 3 and older",
};

/**
 * Opens every chip there is, in number order; the caller closes them. A chip this user may not
 * open (EACCES, EPERM: a unit allowed only some devices, an expander with other permissions) is
 * skipped, and its error, explained, returned as `denied` (the first one), for the caller to
 * throw if what it looks for is not on the others: it may be on that chip.
 */
function openAllChips(): { chips: Chip[]; denied?: unknown } {
  const lib = gpiod();
  const chips: Chip[] = [];
  let denied: unknown;
  for (let number = 0; number < MAX_CHIPS; number++) {
    const path = `/dev/gpiochip${number}`;
    try {
      chips.push(lib.openChip(path));
    } catch (error) {
      // Numbers can have gaps, and a node can outlive its device.
      if (hasErrno(error, Errno.ENOENT, ENXIO, ENODEV)) continue;
      if (hasErrno(error, Errno.EACCES, Errno.EPERM)) {
        denied ??= explainChipError(error, path);
        continue;
      }
      for (const chip of chips) chip.close();
      throw explainChipError(error, path);
    }
  }
  return { chips, denied };
}

/** The one device a chip spec names by number (`/dev/gpiochipN`, `gpiochipN`, `N`), if it does. */
function chipDevice(chipSpec: string): string | undefined {
  const number = /^(?:\/dev\/gpiochip|gpiochip)?(\d+)$/.exec(chipSpec)?.[1];
  return number === undefined ? undefined : `/dev/gpiochip${Number(number)}`;
}

/**
 * The chips to look for a line on: only the one named, when `chipSpec` names one device (so that
 * another chip this user may not open is no reason to fail), else every chip there is.
 */
function openChipsFor(chipSpec: string): { chips: Chip[]; denied?: unknown } {
  const device = chipDevice(chipSpec);
  if (device === undefined) return openAllChips();
  try {
    return { chips: [gpiod().openChip(device)] };
  } catch (error) {
    // Not there: every chip is opened, so that the error lists those present.
    if (hasErrno(error, Errno.ENOENT, ENXIO, ENODEV)) return openAllChips();
    throw explainChipError(error, device);
  }
}

/** Adds what to do to a permission error on a chip device. */
function explainChipError(error: unknown, path: string): unknown {
  if (hasErrno(error, Errno.EACCES, Errno.EPERM)) {
    return withAdvice(
      error,
      `Your user may not open ${path}: join the group that owns it ` +
        "(on Raspberry Pi OS: sudo usermod -aG gpio $USER, then log in again), or run as root",
    );
  }
  return error;
}

/** Where a line is: its chip (open) and offset. */
export interface LineLocation {
  /** The chip, open; the caller closes it. */
  chip: Chip;
  /** The line's offset in the chip. */
  offset: number;
  /** The line for messages, such as `GPIO17 (line 17 of /dev/gpiochip0, pinctrl-rp1)`. */
  description: string;
}

function matchesChip(chip: Chip, spec: string): boolean {
  return chip.path === spec || chip.name === spec || chip.label === spec ||
    `/dev/gpiochip${spec}` === chip.path;
}

/** `wanted` is the name asked for (undefined when an offset was): it leads when there is one. */
function describe(chip: Chip, offset: number, wanted: string | undefined, name: string): string {
  const where = `${lineSubject(chip.path, offset)}, ${chip.label || "no label"}`;
  const lead = wanted ?? name;
  if (lead === "") return `${lineSubject(chip.path, offset)} (${chip.label || "no label"})`;
  if (name === "" || name === lead) return `${lead} (${where})`;
  return `${lead} (${where}, named ${JSON.stringify(name)})`;
}

/**
 * Finds a line. `chipSpec` is a device path, a chip name (`gpiochip0`), a number, a label
 * (`pinctrl-rp1`) or `auto` (every chip). `lineSpec` is a line name (`GPIO17`) or an offset.
 * `GPION` is also the BCM line N on a Raspberry Pi's header chip (see {@link PI_HEADER_CHIPS})
 * where the device tree names it otherwise (the Pi 4 calls GPIO4 `GPIO_GCLK`). With `auto`,
 * an offset N means `GPION`, and where no chip has that, offset N of the first chip.
 * Throws `NotFound` only when no such chip or line exists; any other failure to read the chips
 * is thrown as it is, with its errno.
 */
export function findLine(chipSpec: string, lineSpec: string): LineLocation {
  const { chips, denied } = openChipsFor(chipSpec);
  try {
    const found = locate(chips, chipSpec, lineSpec);
    for (const chip of chips) if (chip !== found.chip) chip.close();
    return found;
  } catch (error) {
    for (const chip of chips) chip.close();
    // Not on the chips this user may open: it may be on one it may not.
    if (denied !== undefined && error instanceof Deno.errors.NotFound) throw denied;
    throw error;
  }
}

function locate(chips: Chip[], chipSpec: string, lineSpec: string): LineLocation {
  const auto = chipSpec === "auto";
  const candidates = auto ? chips : chips.filter((chip) => matchesChip(chip, chipSpec));
  const present = chips.map((chip) => `${chip.name} (${chip.label})`).join(", ");
  if (candidates.length === 0) {
    const wanted = auto ? "a GPIO chip" : `GPIO chip ${JSON.stringify(chipSpec)}`;
    throw new Deno.errors.NotFound(
      present === ""
        ? `Cannot find ${wanted}: this machine has none (no /dev/gpiochipN); on a PC, use the PC build (deno task launch)`
        : `Cannot find ${wanted}; chips present: ${present}`,
    );
  }
  const found = (chip: Chip, offset: number, wanted?: string): LineLocation => ({
    chip,
    offset,
    description: describe(chip, offset, wanted, chip.lineInfo(offset).name),
  });
  const numeric = /^\d+$/.test(lineSpec);
  if (numeric && !auto) {
    return found(candidates[0], Number(lineSpec));
  }
  const name = numeric ? `GPIO${lineSpec}` : lineSpec;
  for (const chip of candidates) {
    const offset = chip.findLine(name);
    if (offset !== undefined) return found(chip, offset, name);
  }
  const bcm = /^GPIO(\d+)$/.exec(name);
  if (bcm !== null) {
    const header = candidates.find((chip) => chip.label in PI_HEADER_CHIPS);
    const offset = Number(bcm[1]);
    if (header !== undefined && offset < header.lineCount) return found(header, offset, name);
  }
  if (numeric && Number(lineSpec) < candidates[0].lineCount) {
    return found(candidates[0], Number(lineSpec));
  }
  const where = auto
    ? present
    : candidates.map((chip) => `${chip.name} (${chip.label})`).join(", ");
  throw new Deno.errors.NotFound(
    `Cannot find GPIO line ${JSON.stringify(lineSpec)} on ${where}. Name a line ` +
      "(gpioinfo lists them), or give its offset (a number) and its chip (--chip)",
  );
}

/**
 * Turns a failed request into an error that says what to do: who holds a busy line, which
 * group may open the chip. Keeps the errno.
 */
export function explainRequestError(error: unknown, chip: Chip, offset: number): unknown {
  if (hasErrno(error, EBUSY)) {
    let holder = "Another program holds it";
    try {
      const info = chip.lineInfo(offset);
      if (info.used) {
        holder = info.consumer
          ? `It is held by consumer ${JSON.stringify(info.consumer)}`
          : "It is held by an unnamed consumer";
      }
    } catch {
      // keep the generic wording: the request's own error is the one to report
    }
    return withAdvice(error, `${holder}: stop that program or choose another line`);
  }
  return explainChipError(error, chip.path);
}
