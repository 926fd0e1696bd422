/**
 * The README's Layout section is the map a newcomer reads first: it must name every module of
 * the folders it lists one by one, and nothing that is not there. And what it says of `ffi/`
 * holds: no code outside it loads a library or touches a pointer.
 */
import { assert, assertEquals } from "@std/assert";
import { ROOT } from "./helpers/paths.ts";
import { testWith } from "./helpers/permissions.ts";

/** Folders whose every module the Layout names; the others it names as a whole. */
const LISTED = [
  "ffi",
  "lib",
  "lib/ring",
  "app",
  "bridges",
  "bridges/mqtt",
  "hw",
  "producers",
  "consumers",
  "bench",
];

/** Folders no project code lives in. */
const NOT_OURS = new Set(["vendor", "node_modules", ".cache", ".git"]);

function layoutBlock(): string {
  const readme = Deno.readTextFileSync(`${ROOT}README.md`);
  const match = /\n## Layout\n\n```\n([\s\S]*?)\n```\n/.exec(readme);
  assert(match, "README.md has no Layout section with a code block");
  return match[1];
}

function modulesIn(folder: string): string[] {
  return [...Deno.readDirSync(`${ROOT}${folder}`)]
    .filter((entry) => entry.isFile && entry.name.endsWith(".ts"))
    .map((entry) => entry.name);
}

/** Every `.ts` file of the project, as a path from its root. */
function projectSources(folder = ""): string[] {
  return [...Deno.readDirSync(`${ROOT}${folder}`)].flatMap((entry) => {
    const path = `${folder}${entry.name}`;
    if (entry.isDirectory) return NOT_OURS.has(entry.name) ? [] : projectSources(`${path}/`);
    return entry.isFile && entry.name.endsWith(".ts") ? [path] : [];
  });
}

testWith(["read"], "the README's Layout names every module of the folders it lists", () => {
  const named = new Set(layoutBlock().match(/(?<!\*)\b[\w.]+\.ts\b/g));
  const missing = LISTED.flatMap((folder) =>
    modulesIn(folder).filter((name) => !named.has(name)).map((name) => `${folder}/${name}`)
  );
  assertEquals(missing, [], "modules the Layout does not name");
  const everywhere = new Set(projectSources().map((path) => path.split("/").at(-1)));
  const gone = [...named].filter((name) => !everywhere.has(name));
  assertEquals(gone, [], "files the Layout names that do not exist");
});

testWith(["read"], "no code outside ffi/ loads a library or touches a pointer", () => {
  // A name in backquotes is a mention in text (a benchmark's label), not a use.
  const use = /(?<!`)\bDeno\.(dlopen|Unsafe[A-Za-z]*)\b/;
  const outside = projectSources().filter((path) => !path.startsWith("ffi/"))
    .filter((path) => use.test(Deno.readTextFileSync(`${ROOT}${path}`)));
  assertEquals(outside, []);
});

testWith(
  ["read"],
  "every library is opened with a named table of its symbols, never one written inline",
  () => {
    // One table per library, its C declarations beside it: a second, inline copy of a symbol's
    // parameters drifts from the table's (the text follower's Worker once had its own two).
    const inline = /\bDeno\.dlopen\([^,]*,\s*\{/;
    const found = projectSources().filter((path) =>
      inline.test(Deno.readTextFileSync(`${ROOT}${path}`))
    );
    assertEquals(found, []);
  },
);
