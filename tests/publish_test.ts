/**
 * What `deno publish` would put on JSR: the library alone. The files a dry run lists must be
 * exactly the modules `mod.ts` reaches (so none is missing at run time, and nothing else goes:
 * no tests, launcher, hardware code or benchmarks), plus the README, the license and
 * `deno.json`.
 */
import { assertEquals } from "@std/assert";
import { ROOT } from "./helpers/paths.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";

/** Runs `deno ARGS` in the project; returns stdout and stderr, failing on a non-zero exit. */
async function deno(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const result = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
  }).output();
  const stdout = new TextDecoder().decode(result.stdout);
  const stderr = new TextDecoder().decode(result.stderr);
  assertEquals(result.code, 0, `deno ${args.join(" ")}:\n${stderr}`);
  return { stdout, stderr };
}

testWith(
  NEEDS.children,
  "deno publish --dry-run ships the modules mod.ts reaches, the README, the license and deno.json",
  async () => {
    const root = `file://${ROOT}`;
    const graph = JSON.parse((await deno(["info", "--json", "mod.ts"])).stdout);
    const reached: string[] = graph.modules
      .map((module: { specifier: string }) => module.specifier)
      .filter((specifier: string) => specifier.startsWith(root))
      .map((specifier: string) => specifier.slice(root.length));
    const { stderr } = await deno(["publish", "--dry-run", "--allow-dirty"]);
    const published = [...stderr.matchAll(/^\s+file:\/\/(\S+) \(/gm)]
      .map((match) => `file://${match[1]}`.slice(root.length));
    assertEquals(
      published.toSorted(),
      [...reached, "README.md", "LICENSE", "deno.json"].toSorted(),
      stderr,
    );
  },
);
