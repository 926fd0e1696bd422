/**
 * A hostile peer at random: while a victim process (tests/fixtures/hostile_victim.ts) makes
 * seeded random calls on a ring, a state cell and a futex word in one region, this process
 * writes garbage over their headers, claims, positions and records at random moments, and now
 * and then mends them (with the library's restore functions, or by making the ring and the cell
 * afresh) so the victim gets back to work and meets the next fault from a working state. The
 * rounds take turns at the memory: a sealed memfd; an unsealed one, which this process also cuts
 * short for a few ms at a time; a file, which it also cuts short, overwrites as `echo 1 > FILE`
 * does, and removes and makes again (and the state file the cell mirrors, which it overwrites,
 * empties and removes); and a POSIX shm object, which it cuts short through `/dev/shm` and
 * removes and makes again. Every second set of four rounds has two victims on the memory, one
 * on the producer's and writer's side and one on the consumer's and reader's, so that messages,
 * changes and wake-ups cross between processes under attack. A victim must never end in a
 * signal or hang; every call must end
 * well or with an error that names what was refused (`ALLOWED_ERRORS`), never a stray TypeError
 * or RangeError; nothing may hand out a message longer than the ring; and it must give back
 * every fd and mapping. The library calls this process makes on the damaged memory are held to
 * the same errors.
 *
 * The seed is printed; `MMAP_IPC_HOSTILE_SEED` replays the victim's calls (the attack's timing
 * still varies), `MMAP_IPC_HOSTILE_ROUNDS` (default 8) and `MMAP_IPC_HOSTILE_STEPS` (default
 * 1200) make a longer soak.
 *
 * @module
 */

import { assert, assertEquals } from "@std/assert";
import {
  createMemfdRegion,
  initRing,
  openFileRegion,
  openShmRegion,
  openStateCell,
  removeShm,
  restoreRingHeader,
  restoreRingPosition,
  restoreStateCellHeader,
  type SharedRegion,
} from "../mod.ts";
import {
  ALLOWED_ERRORS,
  CELL_AT,
  CELL_WORDS,
  HOSTILE_REGION_SIZE,
  type HostileKind,
  RING_AT,
  RING_BYTES,
  RING_DATA,
  RING_WORDS,
  type VictimConfig,
  type VictimSide,
  WORD_AT,
} from "./fixtures/hostile_layout.ts";
import { O_CLOEXEC, O_RDWR } from "../ffi/constants.ts";
import { closeFd, openPath, truncateFd } from "../ffi/posix.ts";
import { mixSeed, Random } from "./fixtures/lifecycle_random.ts";
import { TESTS_DIR } from "./helpers/paths.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { envNumber } from "./helpers/env.ts";
import { spawnDeno } from "./helpers/spawn.ts";
import { uniqueShmName, withTempDir } from "./helpers/temp.ts";

const VICTIM = `${TESTS_DIR}fixtures/hostile_victim.ts`;
/** How long a victim may run: far beyond what a healthy one needs. */
const VICTIM_BOUND_MS = 180_000;

/** Values that sit on the edges of what the library checks. */
function garbage(rng: Random, near: number): number {
  switch (rng.weighted({ edge: 4, near: 3, random: 2 })) {
    case "edge":
      return rng.pick([0, 1, -1, 7, 0x7fff_ffff, -0x8000_0000, RING_BYTES, RING_BYTES * 2]);
    case "near":
      return near + rng.pick([-16, -8, -1, 1, 8, 16, RING_BYTES, -RING_BYTES]);
    default:
      return rng.int(-0x8000_0000, 0x7fff_ffff);
  }
}

/** Writes over one word of a header, or a record's length, or any byte. */
function strike(rng: Random, region: SharedRegion, pids: readonly number[]): string {
  const view = new DataView(region.view().buffer);
  const target = rng.weighted({ ring: 4, record: 3, cell: 4, word: 0.3, byte: 0.5 });
  if (target === "byte") {
    const at = rng.int(0, HOSTILE_REGION_SIZE - 1);
    view.setUint8(at, rng.int(0, 255));
    return `byte ${at}`;
  }
  if (target === "record") {
    // Where the consumer reads next, or any record's place.
    const tail = view.getInt32(RING_AT + RING_WORDS.tail[0], true) & 0x7fff_ffff;
    const at = rng.chance(0.6) ? tail % RING_BYTES : rng.int(0, RING_BYTES / 8 - 1) * 8;
    const length = view.getInt32(RING_AT + RING_DATA + at, true);
    view.setInt32(RING_AT + RING_DATA + at, garbage(rng, length), true);
    return `record length at ${at}`;
  }
  if (target === "word") {
    view.setInt32(WORD_AT, garbage(rng, 0), true);
    return "futex word";
  }
  const [base, words] = target === "ring" ? [RING_AT, RING_WORDS] : [CELL_AT, CELL_WORDS];
  const name = rng.pick(Object.keys(words)) as keyof typeof words;
  const [offset, bytes] = words[name] as readonly [number, 4 | 8];
  const at = base + offset;
  if (bytes === 8) {
    // A claim: nobody, garbage, a live process with a start time that is not its own, or a
    // copy of the other claim (one process holding both roles).
    const other = Object.values(words).find(([o, b]) => b === 8 && o !== offset);
    assert(other !== undefined, `${target} has one claim`);
    const choice = rng.weighted({ zero: 1, garbage: 1, pid: 2, copy: 1 });
    const value = choice === "zero"
      ? 0n
      : choice === "garbage"
      ? BigInt.asIntN(64, BigInt(rng.int(0, 0x7fff_ffff)) << 32n | BigInt(rng.int(0, 0x7fff_ffff)))
      : choice === "pid"
      ? BigInt(rng.pick([...pids, Deno.pid, 1])) | BigInt(rng.int(0, 1000)) << 32n
      : view.getBigInt64(base + other[0], true);
    view.setBigInt64(at, value, true);
  } else {
    view.setInt32(at, garbage(rng, view.getInt32(at, true)), true);
  }
  return `${target} ${name}`;
}

/** Mends what it can through the library, or makes the ring and the cell afresh. */
function mend(rng: Random, region: SharedRegion, failures: string[]): void {
  const guarded = (what: string, fn: () => unknown): void => {
    try {
      fn();
    } catch (error) {
      const name = error instanceof Error ? error.name : "";
      if (!ALLOWED_ERRORS.has(name)) {
        failures.push(`${what} threw ${error instanceof Error ? error.stack : String(error)}`);
      }
    }
  };
  if (rng.chance(0.15)) {
    new Uint8Array(region.view().buffer, RING_AT, RING_DATA).fill(0);
    guarded("initRing", () => initRing(region, { offset: RING_AT, capacity: RING_BYTES }));
    new Uint8Array(region.view().buffer, CELL_AT + 64, 64).fill(0);
    guarded(
      "openStateCell(initialise)",
      () => openStateCell(region, { offset: CELL_AT, initialise: true }).close(),
    );
    return;
  }
  const options = { offset: RING_AT, capacity: RING_BYTES };
  guarded("restoreRingHeader", () => restoreRingHeader(region, options));
  for (const end of ["producer", "consumer"] as const) {
    guarded("restoreRingPosition", () => restoreRingPosition(region, { ...options, end }));
  }
  guarded("restoreStateCellHeader", () => restoreStateCellHeader(region, { offset: CELL_AT }));
}

interface RoundResult {
  strikes: number;
  shrunk: number;
  /** Whether two victims shared the memory. */
  paired: boolean;
  outcomes: Outcomes;
}

/** The memory under attack, and what the attacker can do to it besides writing. */
class Target {
  readonly kind: HostileKind;
  readonly path: string;
  /** With a file: the original's state file beside it, which the victim's cell mirrors. */
  readonly statePath: string | undefined;
  region: SharedRegion;

  constructor(kind: HostileKind, dir: string) {
    this.kind = kind;
    this.statePath = kind === "file" ? `${dir}/state.dat` : undefined;
    if (kind === "file" || kind === "shm") {
      this.path = kind === "file" ? `${dir}/hostile.dat` : uniqueShmName();
      this.region = this.#fresh();
    } else {
      this.region = createMemfdRegion({
        size: HOSTILE_REGION_SIZE,
        label: "hostile",
        seal: kind === "memfd",
      });
      this.path = this.region.name;
      Target.#build(this.region);
    }
  }

  static #build(region: SharedRegion): void {
    initRing(region, { offset: RING_AT, capacity: RING_BYTES });
    openStateCell(region, { offset: CELL_AT, initialise: true }).close();
  }

  #fresh(): SharedRegion {
    const options = { create: true, size: HOSTILE_REGION_SIZE };
    const region = this.kind === "file"
      ? openFileRegion(this.path, options)
      : openShmRegion(this.path, options);
    Target.#build(region);
    return region;
  }

  /** Sets the size of the file or memfd (this process's own fd of it, from its name). */
  resize(size: number): void {
    if (this.kind === "file") Deno.truncateSync(this.path, size);
    else if (this.kind === "shm") {
      // Through libc: Deno asks for --allow-all to touch /dev/shm.
      const path = `/dev/shm${this.path}`;
      const fd = openPath(path, O_RDWR | O_CLOEXEC, 0, "cut short");
      try {
        truncateFd(fd, size, path);
      } finally {
        closeFd(fd);
      }
    } else truncateFd(Number(this.path.slice(this.path.lastIndexOf("/") + 1)), size, this.path);
  }

  /**
   * Something a user does to the file, shm object or memfd, for a few ms: cuts it short, writes a value
   * over it as `echo 1 > FILE` does (which cuts it to two bytes), or removes it and makes it
   * again. This process touches none of its memory meanwhile, so none of its pages is lost.
   */
  async disturb(rng: Random): Promise<string> {
    const what = this.kind === "file"
      ? rng.weighted({ cut: 3, echo: 2, remove: 1 })
      : this.kind === "shm"
      ? rng.weighted({ cut: 3, remove: 1 })
      : "cut";
    if (what === "cut") this.resize(rng.pick([0, 4096, 8192, 12288]));
    else if (what === "echo") Deno.writeTextFileSync(this.path, "1\n");
    else if (this.kind === "shm") removeShm(this.path);
    else Deno.removeSync(this.path);
    await new Promise((resolve) => setTimeout(resolve, rng.int(0, 10)));
    if (what === "remove") {
      this.region.close();
      this.region = this.#fresh();
    } else this.resize(HOSTILE_REGION_SIZE);
    return what;
  }

  /**
   * What a user does to the state file: writes a value as `echo 5 > FILE` does, empties it,
   * writes something that is no number, or removes it (the victim makes it again when it opens
   * it next).
   */
  disturbStateFile(rng: Random): void {
    const path = this.statePath;
    if (path === undefined) return;
    const what = rng.weighted({ echo: 4, empty: 1, garbage: 1, remove: 0.5 });
    try {
      if (what === "echo") Deno.writeTextFileSync(path, `${rng.int(0, 9)}\n`);
      else if (what === "empty") Deno.writeTextFileSync(path, "");
      else if (what === "garbage") Deno.writeTextFileSync(path, "not a number\n");
      else Deno.removeSync(path);
    } catch (error) {
      // Removed already, and not made again yet.
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
}

const KINDS: readonly HostileKind[] = ["memfd", "unsealed", "file", "shm"];

/**
 * Round `index` attacks the kind of memory its place in {@link KINDS} names, with one victim
 * making every call, or (in every second set of four rounds) two: one the producer's and the
 * writer's side, the other the consumer's and the reader's, so that wake-ups cross processes.
 */
async function round(seed: number, index: number, steps: number): Promise<RoundResult> {
  const rng = new Random(mixSeed(seed, index, 1));
  const kind = KINDS[index % KINDS.length];
  const sides: VictimSide[] = Math.floor(index / KINDS.length) % 2 === 1
    ? ["producer", "consumer"]
    : ["both"];
  return await withTempDir(async (dir) => {
    const target = new Target(kind, dir);
    try {
      const configs = sides.map((side, which): VictimConfig => ({
        path: target.path,
        seed: mixSeed(seed, index, 2 + which),
        steps,
        kind,
        dir,
        statePath: target.statePath,
        side,
      }));
      const context = `seed ${seed} round ${index} (${kind}, ${
        sides.join(" and ")
      }, MMAP_IPC_HOSTILE_SEED=${seed})`;
      return await attack(rng, target, configs, context);
    } finally {
      target.region.close();
      if (kind === "shm") removeShm(target.path);
    }
  });
}

async function attack(
  rng: Random,
  target: Target,
  configs: readonly VictimConfig[],
  context: string,
): Promise<RoundResult> {
  await using first = spawnDeno(VICTIM, [JSON.stringify(configs[0])]);
  await using second = configs.length > 1
    ? spawnDeno(VICTIM, [JSON.stringify(configs[1])])
    : undefined;
  const victims = second === undefined ? [first] : [first, second];
  const pids = victims.map((victim) => victim.pid);
  const failures: string[] = [];
  let running = victims.length;
  let strikes = 0;
  let shrunk = 0;
  const statuses = victims.map((victim) =>
    victim.status({ timeoutMs: VICTIM_BOUND_MS }).finally(() => running--)
  );
  for (const victim of victims) await victim.waitFor(/^READY$/, { timeoutMs: 30_000 });
  while (running > 0) {
    await new Promise((resolve) => setTimeout(resolve, rng.int(0, 4)));
    if (running === 0) break;
    if (target.kind !== "memfd" && rng.chance(0.04)) {
      await target.disturb(rng);
      shrunk++;
    } else if (target.statePath !== undefined && rng.chance(0.1)) target.disturbStateFile(rng);
    else if (rng.chance(0.2)) mend(rng, target.region, failures);
    else {
      for (let burst = rng.int(1, 3); burst > 0; burst--) strike(rng, target.region, pids);
      strikes++;
    }
  }
  const ends = await Promise.all(statuses);
  const outcomes: Outcomes[] = [];
  for (const [which, victim] of victims.entries()) {
    const { code, signal, stderr } = ends[which];
    const who = `the ${configs[which].side} victim (pid ${victim.pid}), ${context}`;
    const tail = `${victim.transcript.split("\n").slice(-40).join("\n")}\n${stderr}`;
    assertEquals(signal, null, `${who} ended by signal ${signal}:\n${tail}`);
    assertEquals(code, 0, `${who} failed:\n${tail}`);
    const summary = victim.matching(/^SUMMARY /)[0];
    assert(summary !== undefined, `no summary from ${who}:\n${tail}`);
    outcomes.push(JSON.parse(summary.slice("SUMMARY ".length)));
  }
  assertEquals(failures, [], `this process's own calls on the damaged memory, ${context}`);
  return { strikes, shrunk, paired: victims.length > 1, outcomes: addOutcomes(...outcomes) };
}

/** Counts of each outcome, by method. */
type Outcomes = Record<string, Record<string, number>>;

/** The sum of some counts of outcomes. */
function addOutcomes(...all: Outcomes[]): Outcomes {
  const total: Outcomes = {};
  for (const outcomes of all) {
    for (const [method, counts] of Object.entries(outcomes)) {
      total[method] ??= {};
      for (const [outcome, count] of Object.entries(counts)) {
        total[method][outcome] = (total[method][outcome] ?? 0) + count;
      }
    }
  }
  return total;
}

testWith(
  NEEDS.childrenAndFiles,
  "a peer writing garbage at random never crashes, hangs or leaks the process using the memory",
  async () => {
    const seed = envNumber("MMAP_IPC_HOSTILE_SEED", Math.floor(Math.random() * 2 ** 32));
    const rounds = envNumber("MMAP_IPC_HOSTILE_ROUNDS", 8);
    const steps = envNumber("MMAP_IPC_HOSTILE_STEPS", 1200);
    console.log(`hostile seed ${seed} (MMAP_IPC_HOSTILE_SEED=${seed} replays its calls)`);
    let totals: Outcomes = {};
    let paired: Outcomes = {};
    let strikes = 0;
    let shrunk = 0;
    for (let index = 0; index < rounds; index++) {
      const result = await round(seed, index, steps);
      strikes += result.strikes;
      shrunk += result.shrunk;
      totals = addOutcomes(totals, result.outcomes);
      if (result.paired) paired = addOutcomes(paired, result.outcomes);
    }
    const line = (method: string): string =>
      `${method} ${
        Object.entries(totals[method] ?? {}).map(([outcome, n]) => `${outcome} ${n}`).join(", ")
      }`;
    console.log(
      `hostile: ${strikes} strikes, ${shrunk} cuts; ${
        Object.keys(totals).sort().map(line).join("; ")
      }`,
    );
    if (rounds > KINDS.length) {
      console.log(
        `hostile, two victims: ${paired.taken?.messages ?? 0} messages taken, ${
          paired.receive?.ok ?? 0
        } receive() and ${paired.waitForChange?.ok ?? 0} waitForChange() ended well`,
      );
    }
    // The attack must have landed, and the victims must still have got work done; with two
    // victims, messages and changes must have crossed from one process to the other.
    const sum = (outcome: string): number =>
      Object.values(totals).reduce((total, counts) => total + (counts[outcome] ?? 0), 0);
    assert(sum("InvalidData") > 0, "no call met the damage: the attack never landed");
    assert((totals.taken?.messages ?? 0) > 0, "no message was ever taken");
    assert((totals.write?.ok ?? 0) > 0, "the cell was never written");
    if (rounds > KINDS.length) {
      assert((paired.taken?.messages ?? 0) > 0, "no message crossed between two victims");
      assert((paired.waitForChange?.ok ?? 0) > 0, "no change woke the other victim's reader");
    }
  },
);
