/**
 * Loads libgpiod, whichever major version the system has, and finds chips and lines by path,
 * name, label, offset or line name.
 *
 * @module
 */

import { Errno } from "./errno.ts";
import { fromCString } from "./posix.ts";
import { ChipV1, GPIOD_V1_SYMBOLS } from "./gpiod_v1.ts";
import type { Chip } from "./gpiod_types.ts";
import { ChipV2, GPIOD_V2_SYMBOLS } from "./gpiod_v2.ts";

export type { Bias, Chip, InputLine, InputSettings, LineInfo, OutputLine } from "./gpiod_types.ts";

/** The environment variable that names the libgpiod to load (a path or a soname). */
export const LIBGPIOD_ENV = "MMAP_IPC_LIBGPIOD";

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
  const probe = Deno.dlopen(library, PROBE_SYMBOLS);
  const isV2 = probe.symbols.gpiod_api_version !== null &&
    probe.symbols.gpiod_chip_request_lines !== null;
  const isV1 = probe.symbols.gpiod_version_string !== null &&
    probe.symbols.gpiod_chip_open_by_name !== null;
  probe.close();
  if (isV2) {
    const lib = Deno.dlopen(library, GPIOD_V2_SYMBOLS).symbols;
    return {
      api: 2,
      library,
      version: versionOf(lib.gpiod_api_version()),
      openChip: (path) => new ChipV2(lib, path),
    };
  }
  if (isV1) {
    const lib = Deno.dlopen(library, GPIOD_V1_SYMBOLS).symbols;
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
      failures.push(`${candidate}: ${(error as Error).message}`);
    }
  }
  throw new Deno.errors.NotFound(
    `Cannot load libgpiod. Tried ${
      failures.join("; ")
    }. Install it (Raspberry Pi OS or Debian trixie: ` +
      `sudo apt install libgpiod3; bookworm: sudo apt install libgpiod2) or set ${LIBGPIOD_ENV} to the library's path.`,
  );
}

const MAX_CHIPS = 64;

/** Opens every chip there is, in number order. The caller closes them. */
export function openAllChips(): Chip[] {
  const lib = gpiod();
  const chips: Chip[] = [];
  for (let number = 0; number < MAX_CHIPS; number++) {
    try {
      chips.push(lib.openChip(`/dev/gpiochip${number}`));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue;
      for (const chip of chips) chip.close();
      throw explainChipError(error, `/dev/gpiochip${number}`);
    }
  }
  return chips;
}

/** Adds what to do to a permission error on a chip device. */
function explainChipError(error: unknown, path: string): unknown {
  if (error instanceof Deno.errors.PermissionDenied) {
    return new Deno.errors.PermissionDenied(
      `${(error as Error).message}. Your user may not open ${path}: join the group that owns it ` +
        `(on Raspberry Pi OS: sudo usermod -aG gpio $USER, then log in again)`,
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
}

function matchesChip(chip: Chip, spec: string): boolean {
  return chip.path === spec || chip.name === spec || chip.label === spec ||
    `/dev/gpiochip${spec}` === chip.path;
}

/**
 * Finds a line. `chipSpec` is a device path, a chip name (`gpiochip0`), a number, a label
 * (`pinctrl-rp1`) or `auto` (every chip). `lineSpec` is a line name (`GPIO17`) or an offset;
 * with `auto`, an offset N means the line named `GPION` (the Raspberry Pi's BCM numbering,
 * whichever chip has the header), else offset N of the first chip.
 */
export function findLine(chipSpec: string, lineSpec: string): LineLocation {
  const chips = openAllChips();
  const keep = (chip: Chip, offset: number): LineLocation => {
    for (const other of chips) if (other !== chip) other.close();
    return { chip, offset };
  };
  const candidates = chipSpec === "auto"
    ? chips
    : chips.filter((chip) => matchesChip(chip, chipSpec));
  if (candidates.length === 0) {
    for (const chip of chips) chip.close();
    const present = chips.map((chip) => `${chip.name} (${chip.label})`).join(", ");
    throw new Deno.errors.NotFound(
      present === ""
        ? `Cannot find GPIO chip ${
          JSON.stringify(chipSpec)
        }: this machine has no GPIO chips (no /dev/gpiochipN); on a PC, use the PC build (deno task launch)`
        : `Cannot find GPIO chip ${JSON.stringify(chipSpec)}; chips present: ${present}`,
    );
  }
  const numeric = /^\d+$/.test(lineSpec);
  const name = numeric && chipSpec === "auto" ? `GPIO${lineSpec}` : lineSpec;
  if (!numeric || chipSpec === "auto") {
    for (const chip of candidates) {
      const offset = chip.findLine(name);
      if (offset !== undefined) return keep(chip, offset);
    }
  }
  if (numeric) {
    const offset = Number(lineSpec);
    const chip = candidates[0];
    if (offset < chip.lineCount) return keep(chip, offset);
  }
  for (const chip of chips) chip.close();
  const where = candidates.map((chip) => chip.name).join(", ");
  throw new Deno.errors.NotFound(`Cannot find GPIO line ${JSON.stringify(lineSpec)} on ${where}`);
}

/** Turns a failed request into an error that names who holds the line, when it is busy. */
export function explainRequestError(error: unknown, chip: Chip, offset: number): unknown {
  const code = (error as { errno?: number }).errno;
  if (error instanceof Deno.errors.Busy || code === 16) {
    let holder = "another process";
    try {
      const info = chip.lineInfo(offset);
      if (info.used) {
        holder = info.consumer
          ? `consumer ${JSON.stringify(info.consumer)}`
          : "an unnamed consumer";
      }
    } catch {
      // keep the generic wording
    }
    return new Deno.errors.Busy(`GPIO line ${offset} of ${chip.path} is busy: ${holder} holds it`);
  }
  if (code === Errno.EACCES || code === Errno.EPERM) return explainChipError(error, chip.path);
  return error;
}
