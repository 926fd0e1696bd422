/**
 * Starting child processes for tests: Deno scripts with the project's config and the
 * permissions a test gives them, any other program, the project's tasks with exactly their
 * permissions, and the small C programs in `tests/fixtures/` built with gcc.
 *
 * @module
 */

import { assert, assertEquals } from "@std/assert";
import { ChildProcess } from "./child_process.ts";
import { ROOT, TESTS_DIR } from "./paths.ts";

/** The command line (program first) that runs `script` with `permissions` and the project's config. */
export function denoCommand(script: string, args: string[], permissions: string[]): string[] {
  return [
    Deno.execPath(),
    "run",
    "--quiet",
    "--no-prompt",
    "--config",
    `${ROOT}deno.json`,
    ...permissions,
    script,
    ...args,
  ];
}

/** Starts `deno run` on a script with the given permission flags and the project's config. */
export function spawnDeno(
  script: string,
  args: string[],
  options: { permissions?: string[]; env?: Record<string, string>; cwd?: string } = {},
): ChildProcess {
  const [program, ...commandArgs] = denoCommand(
    script,
    args,
    options.permissions ?? ["--allow-ffi"],
  );
  return new ChildProcess(
    new Deno.Command(program, {
      args: commandArgs,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: options.env,
      cwd: options.cwd,
    }),
  );
}

/**
 * Starts `deno run` on a script as {@link spawnDeno} does, under `ulimit -n 256` (through `sh`):
 * low enough that the script can take every fd it may have, to see what fails then.
 */
export function spawnDenoUnderFdLimit(
  script: string,
  args: string[],
  permissions: string[],
): ChildProcess {
  const command = denoCommand(script, args, permissions);
  return spawnProgram("sh", ["-c", 'ulimit -n 256 && exec "$@"', "sh", ...command]);
}

/**
 * Runs a fixture of `tests/fixtures/` under {@link spawnDenoUnderFdLimit} until it prints `done`
 * and exits 0; its lines, `done` last. `onLine` hears each line before `done` as it comes (a test
 * that acts on `ready`, say), and the next line is read once what it returns has settled.
 */
export async function runUnderFdLimit(
  fixture: string,
  args: string[],
  options: { permissions: string[]; onLine?: (line: string) => void | Promise<void> },
): Promise<string[]> {
  await using child = spawnDenoUnderFdLimit(
    `${TESTS_DIR}fixtures/${fixture}`,
    args,
    options.permissions,
  );
  const lines: string[] = [];
  for (;;) {
    const line = await child.nextLine();
    lines.push(line);
    if (line === "done") break;
    await options.onLine?.(line);
  }
  assertEquals((await child.status()).code, 0, child.transcript);
  return lines;
}

/** Starts any program; with `stdin: "piped"` the test can write to it. */
export function spawnProgram(
  program: string,
  args: string[],
  options: { stdin?: "null" | "piped"; env?: Record<string, string>; cwd?: string } = {},
): ChildProcess {
  return new ChildProcess(
    new Deno.Command(program, {
      args,
      stdin: options.stdin ?? "null",
      stdout: "piped",
      stderr: "piped",
      env: options.env,
      cwd: options.cwd,
    }),
  );
}

/**
 * The arguments `deno task NAME` runs `deno` with (a `deno run` task, or another `subcommand`),
 * the running Deno in place of the task's own lookup of its path: a test runs them as they are,
 * with exactly the task's permissions.
 */
export function taskArgs(name: string, subcommand = "run"): string[] {
  const config = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
  const command: string = config.tasks[name].command;
  const lookup = `"$(deno eval 'console.log(Deno.execPath())')"`;
  const [deno, ...args] = command.replaceAll(lookup, Deno.execPath()).split(" ");
  assertEquals([deno, args[0]], ["deno", subcommand], command);
  assert(!/["'$]/.test(args.join(" ")), `unhandled shell syntax in ${command}`);
  return args;
}

/** Compiles `tests/fixtures/NAME.c` into `dir`; returns the program's path. */
export async function buildC(dir: string, name: string): Promise<string> {
  const binary = `${dir}/${name}`;
  const result = await new Deno.Command("gcc", {
    args: ["-O2", "-Wall", "-o", binary, `${TESTS_DIR}fixtures/${name}.c`],
  }).output();
  assert(result.success, new TextDecoder().decode(result.stderr));
  return binary;
}

/**
 * Builds the small fake libgpiod 1.6 (`tests/fixtures/fake_gpiod_v1.c`) into `dir`, which it
 * then reads its lines from; returns the library's path, for `MMAP_IPC_LIBGPIOD`.
 */
export async function buildFakeGpiod(dir: string): Promise<string> {
  const library = `${dir}/libgpiod-fake.so`;
  const result = await new Deno.Command("gcc", {
    args: ["-shared", "-fPIC", "-o", library, `${TESTS_DIR}fixtures/fake_gpiod_v1.c`],
  }).output();
  assert(result.success, new TextDecoder().decode(result.stderr));
  return library;
}
