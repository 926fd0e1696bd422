/**
 * `deno task bench`: every benchmark, side by side with its baselines, in one run. Each figure
 * is the median over several runs (with the range of the runs); every claim is a ratio against
 * a baseline measured in the same run. Writes bench/results.json and bench/results.md and
 * refreshes the Performance section of README.md.
 *
 * Usage: deno task bench [--quick] [--runs N] [--no-readme]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { monotonicNanos } from "../ffi/posix.ts";
import {
  createMemfdRegion,
  initRing,
  openRingConsumer,
  openRingProducer,
  openStateCell,
  ringRegionSize,
} from "../mod.ts";
import {
  type ChildProcess,
  delay,
  ROOT,
  spawnDeno,
  spawnProgram,
  writeAndLeave,
} from "../tests/helpers.ts";
import { SEEN_OFFSET, STAMP_OFFSET } from "./peers/latency_reader.ts";
import { ECHO_RING_OFFSET } from "./peers/ring_peer.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean" },
    runs: { type: "string" },
    "no-readme": { type: "boolean" },
  },
});
const QUICK = flags.quick ?? false;
const RUNS = Number(flags.runs ?? (QUICK ? 2 : 5));
const PEERS = `${ROOT}bench/peers/`;
const FFI = ["--allow-ffi"];

// --- statistics ------------------------------------------------------------------------------

function percentile(values: number[], fraction: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))];
}

function median(values: number[]): number {
  return percentile(values, 0.5);
}

/** One figure: the median over runs, the median of the runs' p99s, and the runs' range. */
interface Figure {
  median: number;
  p99?: number;
  min: number;
  max: number;
  runs: number;
  unit: string;
}

function figure(perRun: number[], unit: string, p99s?: number[]): Figure {
  return {
    median: median(perRun),
    p99: p99s === undefined ? undefined : median(p99s),
    min: Math.min(...perRun),
    max: Math.max(...perRun),
    runs: perRun.length,
    unit,
  };
}

/** Runs `once` RUNS times; each run returns samples; the figure is over the runs' medians. */
async function latencyFigure(once: () => Promise<number[]>, unit = "us"): Promise<Figure> {
  const medians: number[] = [];
  const p99s: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const samples = await once();
    medians.push(median(samples));
    p99s.push(percentile(samples, 0.99));
  }
  return figure(medians, unit, p99s);
}

async function rateFigure(once: () => Promise<number>, unit: string): Promise<Figure> {
  const rates: number[] = [];
  for (let run = 0; run < RUNS; run++) rates.push(await once());
  return figure(rates, unit);
}

function log(message: string): void {
  console.error(`bench: ${message}`);
}

async function step<T>(name: string, run: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const result = await run();
  log(`  ${name} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  return result;
}

// --- helpers ---------------------------------------------------------------------------------

const work = await Deno.makeTempDir({ prefix: "mmap-ipc-bench-" });

async function compile(name: string, source: string): Promise<string> {
  const binary = `${work}/${name}`;
  const result = await new Deno.Command("gcc", { args: ["-O2", "-o", binary, source] }).output();
  if (!result.success) throw new Error(`gcc ${source}: ${new TextDecoder().decode(result.stderr)}`);
  return binary;
}

async function finish(child: ChildProcess): Promise<void> {
  const status = await child.status();
  if (status.code !== 0) throw new Error(`a benchmark process failed: ${child.transcript}`);
}

function stampBytes(): Uint8Array {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigInt64(0, monotonicNanos(), true);
  return bytes;
}

const SOCKET_PERMISSIONS = [...FFI, "--allow-read", "--allow-write", "--allow-net"];

/** Accepts the child's connection, or fails if the child ends first. */
async function accept(listener: Deno.UnixListener, child: ChildProcess): Promise<Deno.UnixConn> {
  const ended = child.status().then((status) => {
    throw new Error(`the peer ended (code ${status.code}) before connecting: ${child.transcript}`);
  });
  try {
    return await Promise.race([listener.accept(), ended]);
  } catch (error) {
    listener.close();
    throw error;
  }
}

/** A peer whose stdin (or stdout) is the pipe being measured, so it cannot print a ready line. */
function spawnPipePeer(
  script: string,
  args: string[],
  pipe: "stdin" | "stdout",
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--config", `${ROOT}deno.json`, ...FFI, `${PEERS}${script}`, ...args],
    stdin: pipe === "stdin" ? "piped" : "null",
    stdout: "piped",
  }).spawn();
}

function gap(): Promise<void> {
  return delay(1 + Math.random());
}

// --- 1. state change latency -----------------------------------------------------------------

const SAMPLES = QUICK ? 150 : 400;

async function stateLatency(mode: "cell" | "cell-sync" | "poll"): Promise<number[]> {
  using region = createMemfdRegion({ size: 256 });
  using cell = openStateCell(region, { writer: true });
  await using reader = spawnDeno(
    `${PEERS}latency_reader.ts`,
    [mode, region.name, String(SAMPLES)],
    { permissions: FFI },
  );
  await reader.nextLine();
  for (let i = 1; i <= SAMPLES; i++) {
    await gap();
    while (region.loadInt32(SEEN_OFFSET) < i - 1) await delay(1);
    region.write(STAMP_OFFSET, stampBytes());
    cell.write(i);
  }
  const latencies = JSON.parse(await reader.nextLine()) as number[];
  await finish(reader);
  return latencies.map((ns) => ns / 1000);
}

async function streamLatency(mode: "pipe" | "socket"): Promise<number[]> {
  if (mode === "pipe") {
    const child = spawnPipePeer("latency_reader.ts", ["pipe", "-", String(SAMPLES)], "stdin");
    const output = new Response(child.stdout).text();
    const writer = child.stdin.getWriter();
    await delay(300);
    for (let i = 0; i < SAMPLES; i++) {
      await gap();
      await writer.write(stampBytes());
    }
    await writer.close();
    await child.status;
    return (JSON.parse((await output).split("\n")[1]) as number[]).map((ns) => ns / 1000);
  }
  const path = `${work}/latency.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  await using reader = spawnDeno(`${PEERS}latency_reader.ts`, ["socket", path, String(SAMPLES)], {
    permissions: SOCKET_PERMISSIONS,
  });
  const connection = await accept(listener, reader);
  await reader.nextLine();
  for (let i = 0; i < SAMPLES; i++) {
    await gap();
    await connection.write(stampBytes());
  }
  const latencies = JSON.parse(await reader.nextLine()) as number[];
  connection.close();
  listener.close();
  await Deno.remove(path).catch(() => {}); // Deno may have removed it on close
  await finish(reader);
  return latencies.map((ns) => ns / 1000);
}

async function futexFloor(binary: string): Promise<number[]> {
  const result = await new Deno.Command(binary, { args: [String(SAMPLES)] }).output();
  return new TextDecoder().decode(result.stdout).trim().split("\n").map((ns) => Number(ns) / 1000);
}

// --- 2. press to LED -------------------------------------------------------------------------

interface System {
  led: ChildProcess;
  button: ChildProcess;
  fifo: string;
  [Symbol.asyncDispose](): Promise<void>;
}

async function startSystem(name: string): Promise<System> {
  const state = `${work}/${name}.dat`;
  const fifo = `${work}/${name}.fifo`;
  const led = spawnDeno(`${ROOT}consumers/led.ts`, ["--state", state], { permissions: FFI });
  await led.waitFor(/LED Status/);
  const button = spawnDeno(`${ROOT}producers/button.ts`, ["--state", state, "--fifo", fifo], {
    permissions: FFI,
  });
  await button.waitFor(/Button ready/);
  return {
    led,
    button,
    fifo,
    async [Symbol.asyncDispose](): Promise<void> {
      await button[Symbol.asyncDispose]();
      await led[Symbol.asyncDispose]();
      await Deno.remove(state).catch(() => {});
    },
  };
}

async function pressToLed(): Promise<number[]> {
  await using system = await startSystem("press");
  const latencies: number[] = [];
  for (let i = 0; i < (QUICK ? 30 : 100); i++) {
    await delay(5 + Math.random() * 5);
    const since = system.led.lines.length;
    const start = performance.now();
    await writeAndLeave(system.fifo, "0\n");
    await system.led.waitFor(/LED Status/, { since });
    latencies.push((performance.now() - start) * 1000);
  }
  return latencies;
}

// --- 3. idle cost ----------------------------------------------------------------------------

const TICKS_PER_SECOND = 100;

function cpuTicks(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** Voluntary context switches of each thread of `pid`, by thread id. */
function threadSwitches(pid: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const status = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/status`);
      counts.set(task.name, Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0));
    } catch {
      // the thread ended meanwhile
    }
  }
  return counts;
}

/**
 * Counts the voluntary context switches of all threads of `pid` over `seconds`, sampling each
 * second by thread id: threads that end meanwhile (Deno's idle workers do) would otherwise take
 * their counts with them.
 */
async function switchesOver(pids: number[], seconds: number): Promise<number[]> {
  const totals = pids.map(() => 0);
  let previous = pids.map(threadSwitches);
  for (let second = 0; second < seconds; second++) {
    await delay(1000);
    const now = pids.map(threadSwitches);
    now.forEach((threads, i) => {
      for (const [tid, count] of threads) {
        totals[i] += Math.max(0, count - (previous[i].get(tid) ?? 0));
      }
    });
    previous = now;
  }
  return totals;
}

function memoryOf(pid: number): { rssKiB: number; peakKiB: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string): number =>
    Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? 0);
  return { rssKiB: field("VmRSS"), peakKiB: field("VmHWM") };
}

interface IdleCost {
  cpuPercent: number;
  switchesPerSecond: number;
}

async function idleCost(original: string): Promise<{ ours: IdleCost; poller: IdleCost }> {
  const seconds = QUICK ? 3 : 10;
  await using system = await startSystem("idle");
  await using poller = spawnProgram(original, ["led", `${work}/idle-original.dat`]);
  await poller.nextLine();
  await delay(1000);
  const pids = [system.led.pid, poller.pid];
  const ticksBefore = pids.map(cpuTicks);
  const switches = await switchesOver(pids, seconds);
  const cost = (i: number): IdleCost => ({
    cpuPercent: ((cpuTicks(pids[i]) - ticksBefore[i]) / TICKS_PER_SECOND / seconds) * 100,
    switchesPerSecond: switches[i] / seconds,
  });
  return { ours: cost(0), poller: cost(1) };
}

// --- 4. ring throughput ----------------------------------------------------------------------

const RING_CAPACITY = 4 << 20;
const SIZES = [64, 4096, 65536, 1 << 20];

function messageCount(size: number): number {
  const bytes = QUICK ? 32 << 20 : 256 << 20;
  return Math.max(64, Math.min(QUICK ? 200_000 : 1_000_000, Math.floor(bytes / size)));
}

/** Spin that keeps both sides of a busy stream awake (about 5 ms of checks before sleeping). */
const STREAM_SPIN = 100_000;

async function ringThroughput(size: number, zeroCopy: boolean, spin?: number): Promise<number> {
  const count = messageCount(size);
  using region = createMemfdRegion({ size: ringRegionSize(RING_CAPACITY) });
  initRing(region);
  using consumer = openRingConsumer(region, { spin });
  const args = [
    "produce",
    region.name,
    String(size),
    String(count),
    zeroCopy ? "zerocopy" : "copy",
  ];
  await using producer = spawnDeno(
    `${PEERS}ring_peer.ts`,
    spin === undefined ? args : [...args, String(spin)],
    {
      permissions: FFI,
    },
  );
  await producer.nextLine();
  const start = performance.now();
  for (let received = 0; received < count;) {
    if (zeroCopy) {
      const lease = consumer.tryRead() ?? await consumer.read();
      if (lease === null) break;
      lease.release();
    } else {
      const message = consumer.tryReceive() ?? await consumer.receive();
      if (message === null) break;
    }
    received++;
  }
  const seconds = (performance.now() - start) / 1000;
  await finish(producer);
  return count / seconds;
}

async function countBytes(stream: ReadableStream<Uint8Array>, total: number): Promise<number> {
  let received = 0;
  let start = 0;
  for await (const chunk of stream) {
    if (start === 0) start = performance.now();
    received += chunk.length;
    if (received >= total) break;
  }
  return (performance.now() - start) / 1000;
}

async function streamThroughput(size: number, via: "socket" | "pipe"): Promise<number> {
  const count = messageCount(size);
  if (via === "pipe") {
    const child = spawnPipePeer("ring_peer.ts", ["stdout", String(size), String(count)], "stdout");
    const seconds = await countBytes(child.stdout, size * count);
    await child.status;
    return count / seconds;
  }
  const path = `${work}/throughput.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  await using writer = spawnDeno(`${PEERS}ring_peer.ts`, [
    "socket",
    path,
    String(size),
    String(count),
  ], {
    permissions: SOCKET_PERMISSIONS,
  });
  const connection = await accept(listener, writer);
  const seconds = await countBytes(connection.readable, size * count);
  listener.close();
  await Deno.remove(path).catch(() => {}); // Deno may have removed it on close
  await finish(writer);
  return count / seconds;
}

async function memcpyRate(binary: string, size: number): Promise<number> {
  const result = await new Deno.Command(binary, { args: [String(size)] }).output();
  return Number(new TextDecoder().decode(result.stdout)) / size;
}

// --- 5. ring ping-pong -----------------------------------------------------------------------

async function ringPingPong(spin: number): Promise<number[]> {
  const capacity = ECHO_RING_OFFSET - 256;
  using region = createMemfdRegion({ size: 2 * ECHO_RING_OFFSET });
  initRing(region, { capacity });
  initRing(region, { offset: ECHO_RING_OFFSET, capacity });
  using outbox = openRingProducer(region, { spin });
  using inbox = openRingConsumer(region, { offset: ECHO_RING_OFFSET, spin });
  await using echo = spawnDeno(`${PEERS}ring_peer.ts`, ["echo", region.name, String(spin)], {
    permissions: FFI,
  });
  await echo.nextLine();
  const message = new Uint8Array(64);
  const oneWay: number[] = [];
  for (let i = 0; i < (QUICK ? 500 : 3000); i++) {
    const start = monotonicNanos();
    if (!outbox.trySend(message)) await outbox.send(message);
    if (inbox.tryReceive() === undefined) await inbox.receive();
    oneWay.push(Number(monotonicNanos() - start) / 2000);
  }
  outbox.close();
  await finish(echo);
  return oneWay;
}

// --- memory over a minute --------------------------------------------------------------------

async function memorySoak(): Promise<
  Record<string, { peakKiB: number; startKiB: number; endKiB: number }>
> {
  const seconds = QUICK ? 10 : 60;
  await using system = await startSystem("soak");
  const pids = { led: system.led.pid, button: system.button.pid };
  const deadline = performance.now() + seconds * 1000;
  let start: Record<string, number> | undefined;
  while (performance.now() < deadline) {
    await writeAndLeave(system.fifo, "0\n");
    await delay(20);
    if (start === undefined && performance.now() > deadline - (seconds - 5) * 1000) {
      start = { led: memoryOf(pids.led).rssKiB, button: memoryOf(pids.button).rssKiB };
    }
  }
  const result: Record<string, { peakKiB: number; startKiB: number; endKiB: number }> = {};
  for (const [name, pid] of Object.entries(pids)) {
    const memory = memoryOf(pid);
    result[name] = {
      peakKiB: memory.peakKiB,
      startKiB: start?.[name] ?? memory.rssKiB,
      endKiB: memory.rssKiB,
    };
  }
  return result;
}

// --- in-process figures (deno bench) ---------------------------------------------------------

async function inProcess(): Promise<{ name: string; nsPerCall: number }[]> {
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["bench", "--quiet", "--json", "--allow-ffi", `${ROOT}bench/in_process_bench.ts`],
    stderr: "inherit",
  }).output();
  const report = JSON.parse(new TextDecoder().decode(result.stdout));
  return report.benches.map((bench: { name: string; results: { ok?: { avg: number } }[] }) => ({
    name: bench.name,
    nsPerCall: bench.results[0]?.ok?.avg ?? NaN,
  }));
}

// --- the report ------------------------------------------------------------------------------

function machine(): { cpu: string; cores: number; kernel: string; deno: string } {
  const cpuinfo = Deno.readTextFileSync("/proc/cpuinfo");
  return {
    cpu: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? Deno.build.arch,
    cores: navigator.hardwareConcurrency,
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
  };
}

const fmt = (value: number, digits = 1): string =>
  value >= 1e6
    ? `${(value / 1e6).toFixed(2)} M`
    : value >= 1e4
    ? `${(value / 1e3).toFixed(0)} k`
    : value.toFixed(digits);

function cell(f: Figure): string {
  return `${fmt(f.median)}${f.p99 !== undefined ? ` (p99 ${fmt(f.p99)})` : ""} [${fmt(f.min)}-${
    fmt(f.max)
  }]`;
}

function verdict(met: boolean, text: string): string {
  return `${met ? "met" : "**missed**"}: ${text}`;
}

async function main(): Promise<void> {
  log(
    `${RUNS} runs per figure${QUICK ? " (quick)" : ""}; this takes ${
      QUICK ? "about a minute" : "a few minutes"
    }`,
  );
  const floorBinary = await compile("futex_floor", `${ROOT}bench/c/futex_floor.c`);
  const memcpyBinary = await compile("memcpy_bandwidth", `${ROOT}bench/c/memcpy_bandwidth.c`);
  const original = await compile("original", `${ROOT}tests/fixtures/original.c`);

  log("1/6 state change latency");
  const latency = {
    stateCell: await step("state cell", () => latencyFigure(() => stateLatency("cell"))),
    stateCellSync: await step(
      "state cell, blocking wait",
      () => latencyFigure(() => stateLatency("cell-sync")),
    ),
    poll1ms: await step("1 ms poller", () => latencyFigure(() => stateLatency("poll"))),
    pipe: await step("pipe", () => latencyFigure(() => streamLatency("pipe"))),
    unixSocket: await step("Unix socket", () => latencyFigure(() => streamLatency("socket"))),
    cFutexFloor: await step("C futex floor", () => latencyFigure(() => futexFloor(floorBinary))),
  };
  log("2/6 press to LED");
  const press = await latencyFigure(pressToLed);
  log("3/6 idle cost");
  const idle = await idleCost(original);
  log("4/6 ring throughput");
  const throughput: Record<string, Record<string, Figure>> = {};
  for (const size of SIZES) {
    throughput[size] = {
      ringCopy: await rateFigure(() => ringThroughput(size, false), "msg/s"),
      ringZeroCopy: await rateFigure(() => ringThroughput(size, true), "msg/s"),
      ringZeroCopySpinning: await rateFigure(
        () => ringThroughput(size, true, STREAM_SPIN),
        "msg/s",
      ),
      unixSocket: await rateFigure(() => streamThroughput(size, "socket"), "msg/s"),
      pipe: await rateFigure(() => streamThroughput(size, "pipe"), "msg/s"),
      cMemcpy: await rateFigure(() => memcpyRate(memcpyBinary, size), "msg/s"),
    };
  }
  log("5/6 ring ping-pong");
  const pingPong = {
    blocked: await latencyFigure(() => ringPingPong(0)),
    spinning: await latencyFigure(() => ringPingPong(200_000)),
  };
  log("6/6 memory over a run and in-process figures");
  const memory = await memorySoak();
  const inProcessFigures = await inProcess();

  const ratios = {
    cellVsFloor: latency.stateCell.median / latency.cFutexFloor.median,
    cellSyncVsFloor: latency.stateCellSync.median / latency.cFutexFloor.median,
    pollVsCell: latency.poll1ms.median / latency.stateCell.median,
    ring64VsSocket: throughput[64].ringCopy.median / throughput[64].unixSocket.median,
    zeroCopy64KVsMemcpy: throughput[65536].ringZeroCopy.median / throughput[65536].cMemcpy.median,
    zeroCopySpinning64KVsMemcpy: throughput[65536].ringZeroCopySpinning.median /
      throughput[65536].cMemcpy.median,
  };
  const results = {
    date: new Date().toISOString(),
    machine: machine(),
    runs: RUNS,
    quick: QUICK,
    latency,
    press,
    idle,
    throughput,
    pingPong,
    memory,
    inProcess: inProcessFigures,
    ratios,
  };
  await Deno.writeTextFile(`${ROOT}bench/results.json`, JSON.stringify(results, null, 2) + "\n");

  const m = results.machine;
  const mb = (rate: number, size: number): string => `${((rate * size) / 1e6).toFixed(0)} MB/s`;
  const lines = [
    `Measured ${
      results.date.slice(0, 10)
    } on ${m.cpu}, ${m.cores} cores, Linux ${m.kernel}, Deno ${m.deno}, with \`deno task bench\`${
      QUICK ? " --quick" : ""
    }.`,
    `Each figure: median of ${RUNS} runs [range of the runs]; latencies also show the median p99.`,
    "",
    "| state change, writer to reader in another process (reader asleep) | us |",
    "| --- | --- |",
    `| state cell, \`waitForChange()\` (event loop free) | ${cell(latency.stateCell)} |`,
    `| state cell, \`waitForChangeSync()\` (the thread blocks) | ${cell(latency.stateCellSync)} |`,
    `| 1 ms polling reader (the original's approach) | ${cell(latency.poll1ms)} |`,
    `| pipe between the processes | ${cell(latency.pipe)} |`,
    `| Unix domain socket | ${cell(latency.unixSocket)} |`,
    `| C futex wake-up (the floor) | ${cell(latency.cFutexFloor)} |`,
    "",
    `| press to LED (FIFO write to the LED's log line, real scripts) | ${cell(press)} us |`,
    "| --- | --- |",
    "",
    "| LED process idle for " + (QUICK ? 3 : 10) + " s | CPU | voluntary context switches/s |",
    "| --- | --- | --- |",
    `| ours (asleep on the futex, our button running) | ${idle.ours.cpuPercent.toFixed(3)} % | ${
      idle.ours.switchesPerSecond.toFixed(2)
    } |`,
    `| the original's 1 ms poller (C stand-in) | ${idle.poller.cpuPercent.toFixed(3)} % | ${
      idle.poller.switchesPerSecond.toFixed(1)
    } |`,
    "",
    "| ring throughput, messages/s (bandwidth) | 64 B | 4 KiB | 64 KiB | 1 MiB |",
    "| --- | --- | --- | --- | --- |",
    ...([
      "ringCopy",
      "ringZeroCopy",
      "ringZeroCopySpinning",
      "unixSocket",
      "pipe",
      "cMemcpy",
    ] as const).map((method) =>
      `| ${
        {
          ringCopy: "ring, copying",
          ringZeroCopy: "ring, zero-copy",
          ringZeroCopySpinning: `ring, zero-copy, spin ${STREAM_SPIN}`,
          unixSocket: "Unix socket (bytes / size)",
          pipe: "pipe (bytes / size)",
          cMemcpy: "C memcpy (ceiling)",
        }[method]
      } | ${
        SIZES.map((size) =>
          `${fmt(throughput[size][method].median)} (${mb(throughput[size][method].median, size)})`
        ).join(" | ")
      } |`
    ),
    "",
    "| ring ping-pong, 64 B, one way | us |",
    "| --- | --- |",
    `| both sides asleep between messages (spin 0) | ${cell(pingPong.blocked)} |`,
    `| both sides spinning | ${cell(pingPong.spinning)} |`,
    "",
    "| memory of each child over " + (QUICK ? 10 : 60) +
    " s of presses | peak RSS | RSS after 5 s | RSS at the end |",
    "| --- | --- | --- | --- |",
    ...Object.entries(memory).map(([name, m]) =>
      `| ${name} | ${(m.peakKiB / 1024).toFixed(1)} MiB | ${(m.startKiB / 1024).toFixed(1)} MiB | ${
        (m.endKiB / 1024).toFixed(1)
      } MiB |`
    ),
    "",
    "| in-process (deno bench) | ns per call, mean |",
    "| --- | --- |",
    ...inProcessFigures.map((b) => `| ${b.name} | ${b.nsPerCall.toFixed(0)} |`),
    "",
    "Targets:",
    `- ${
      verdict(
        ratios.cellSyncVsFloor <= 1.5,
        `state cell p50 is ${
          ratios.cellSyncVsFloor.toFixed(1)
        }x the C futex floor with waitForChangeSync(), ${
          ratios.cellVsFloor.toFixed(1)
        }x with waitForChange() (target at most 1.5x)`,
      )
    }`,
    `- ${
      verdict(
        ratios.pollVsCell >= 5,
        `the 1 ms poller's p50 is ${
          ratios.pollVsCell.toFixed(0)
        }x the state cell's (target at least 5x)`,
      )
    }`,
    `- ${
      verdict(
        press.median < 1000,
        `press to LED p50 is ${
          (press.median / 1000).toFixed(2)
        } ms (target under 1 ms; the original: about 101 ms)`,
      )
    }`,
    `- ${
      verdict(
        idle.ours.cpuPercent < 0.05 && idle.ours.switchesPerSecond < 1,
        `idle LED: ${idle.ours.cpuPercent.toFixed(3)} % CPU and ${
          idle.ours.switchesPerSecond.toFixed(2)
        } switches/s (targets under 0.05 % and under 1/s; the poller: ${
          idle.poller.cpuPercent.toFixed(2)
        } %, ${idle.poller.switchesPerSecond.toFixed(0)}/s)`,
      )
    }`,
    `- ${
      verdict(
        ratios.ring64VsSocket >= 30,
        `ring, 64 B: ${
          ratios.ring64VsSocket.toFixed(1)
        }x the Unix socket's messages/s (target at least 30x)`,
      )
    }`,
    `- ${
      verdict(
        ratios.zeroCopySpinning64KVsMemcpy >= 0.5,
        `ring zero-copy, 64 KiB: ${
          ratios.zeroCopySpinning64KVsMemcpy.toFixed(2)
        }x the C memcpy bandwidth with spin ${STREAM_SPIN}, ${
          ratios.zeroCopy64KVsMemcpy.toFixed(2)
        }x with the default spin (target at least 0.5x)`,
      )
    }`,
    `- memory: ${
      Object.entries(memory).map(([name, m]) =>
        `${name} ${m.endKiB - m.startKiB >= 0 ? "+" : ""}${
          ((m.endKiB - m.startKiB) / 1024).toFixed(1)
        } MiB`
      ).join(", ")
    } from 5 s to the end of the run`,
  ];
  const markdown = lines.join("\n") + "\n";
  await Deno.writeTextFile(`${ROOT}bench/results.md`, markdown);
  console.log(markdown);
  const written = [`${ROOT}bench/results.md`];
  if (!flags["no-readme"]) {
    const readme = await Deno.readTextFile(`${ROOT}README.md`);
    const start = readme.indexOf("<!-- bench:start -->");
    const end = readme.indexOf("<!-- bench:end -->");
    if (start >= 0 && end > start) {
      await Deno.writeTextFile(
        `${ROOT}README.md`,
        `${readme.slice(0, start)}<!-- bench:start -->\n\n${markdown}\n${readme.slice(end)}`,
      );
      written.push(`${ROOT}README.md`);
    }
  }
  // What the benchmark writes is committed, and must pass deno fmt --check.
  await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", ...written] }).output();
}

try {
  await main();
} finally {
  await Deno.remove(work, { recursive: true });
}
