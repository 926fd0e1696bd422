/**
 * The log formats: timestamps on a terminal, sd-daemon priority prefixes and no timestamp for
 * journald (`JOURNAL_STREAM` set), and the choice between them.
 */
import { assertEquals, assertMatch } from "@std/assert";
import { delay } from "@std/async/delay";
import {
  defaultLogFormat,
  journalFormatter,
  type LevelName,
  type LogRecord,
  quote,
  textFormatter,
} from "../app/logging.ts";
import { ROOT } from "./helpers/paths.ts";
import { NEEDS, testWith } from "./helpers/permissions.ts";
import { spawnDeno } from "./helpers/spawn.ts";
import { withTempDir } from "./helpers/temp.ts";
import { FLOOD_LINES, floodLine } from "./fixtures/console_flood.ts";

const FLOOD = `${ROOT}tests/fixtures/console_flood.ts`;

function record(level: LevelName, message: string): LogRecord {
  return {
    category: ["mmap-ipc", "led"],
    level,
    message,
    timestamp: Date.UTC(2026, 10, 21, 10, 50, 23, 626),
  };
}

Deno.test("quote() escapes what would change how the line reads: quotes, controls, bidirectional and zero-width characters, line separators", () => {
  assertEquals(quote('say "hi"\\'), '"say \\"hi\\"\\\\"');
  assertEquals(quote("a\nb\x1b[31m\x9b"), '"a\\x0ab\\x1b[31m\\x9b"');
  // A right-to-left override would show the rest of the line reversed, the quote's end too.
  assertEquals(quote("x\u202eyz\u2066\u2069"), '"x\\u202eyz\\u2066\\u2069"');
  assertEquals(quote("a\u2028b\u2029c"), '"a\\u2028b\\u2029c"');
  assertEquals(quote("\ufeffa\u200bb\u061c\ufffd"), '"\\ufeffa\\u200bb\\u061c\\ufffd"');
  // A soft hyphen; tag characters, which spell hidden text (one code point, two UTF-16 units).
  assertEquals(quote("a\u00adb\u{e0041}"), '"a\\u00adb\\u{e0041}"');
  // Letters of any script are shown as they are.
  assertEquals(
    quote("Liga \u00e7\u00e3o \u5f00 \u05e9\u05dc\u05d5\u05dd"),
    '"Liga \u00e7\u00e3o \u5f00 \u05e9\u05dc\u05d5\u05dd"',
  );
  assertEquals(quote("abcdef", 3), '"abc..."');
});

Deno.test("journalFormatter gives each level its sd-daemon priority and no timestamp", () => {
  const lines = (["debug", "info", "warning", "error"] as const).map((level) =>
    journalFormatter(record(level, "LED Status: On"))
  );
  assertEquals(lines, [
    "<7>mmap-ipc.led: LED Status: On",
    "<6>mmap-ipc.led: LED Status: On",
    "<4>mmap-ipc.led: LED Status: On",
    "<3>mmap-ipc.led: LED Status: On",
  ]);
});

Deno.test("textFormatter starts each line with a timestamp and the level", () => {
  assertEquals(
    textFormatter(record("warning", "careful")),
    "2026-11-21 10:50:23.626 [WRN] mmap-ipc.led: careful",
  );
});

testWith(
  NEEDS.children,
  "nothing is logged before setupLogging(), then each level and above, warnings on stderr",
  async () => {
    for (
      const [level, shown] of [
        ["debug", ["debug", "info", "warning", "error"]],
        ["info", ["info", "warning", "error"]],
        ["warning", ["warning", "error"]],
        ["error", ["error"]],
      ] as const
    ) {
      await using child = spawnDeno(`${ROOT}tests/fixtures/log_levels.ts`, [level]);
      assertEquals((await child.status()).code, 0, child.transcript);
      const seen = child.lines.map(({ stream, text }) => `${stream} ${text}`);
      assertEquals(
        seen.toSorted(),
        shown.map((name) =>
          `${name === "warning" || name === "error" ? "stderr" : "stdout"} <${
            { debug: 7, info: 6, warning: 4, error: 3 }[name]
          }>mmap-ipc.levels: after ${name}`
        ).toSorted(),
      );
    }
  },
);

testWith(["env"], "defaultLogFormat() is journal only while JOURNAL_STREAM is set", () => {
  const saved = Deno.env.get("JOURNAL_STREAM");
  try {
    Deno.env.set("JOURNAL_STREAM", "8:12345");
    assertEquals(defaultLogFormat(), "journal");
    Deno.env.delete("JOURNAL_STREAM");
    assertEquals(defaultLogFormat(), "text");
  } finally {
    if (saved === undefined) Deno.env.delete("JOURNAL_STREAM");
    else Deno.env.set("JOURNAL_STREAM", saved);
  }
});

testWith(
  NEEDS.childrenAndFiles,
  "the LED without env permission logs text, and journal lines with --log-format journal",
  async () => {
    await withTempDir(async (dir) => {
      for (
        const [args, pattern] of [
          [[], /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[INF\] mmap-ipc\.led: LED Status: Off$/],
          [["--log-format", "journal"], /^<6>mmap-ipc\.led: LED Status: Off$/],
        ] as const
      ) {
        await using led = spawnDeno(`${ROOT}consumers/led.ts`, [
          "--state",
          `${dir}/state.dat`,
          ...args,
        ], { env: { JOURNAL_STREAM: "8:12345" } });
        const { match } = await led.waitFor(/LED Status: Off/);
        assertMatch(match.input, pattern);
        led.kill("SIGTERM");
        assertEquals((await led.status()).code, 0, led.transcript);
      }
    });
  },
);

testWith(
  ["run"],
  "a console that does not read at first gets every line, whole and in order, once it reads",
  async () => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--config", `${ROOT}deno.json`, "--allow-ffi", FLOOD],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // More than a pipe holds is written before the first read: lines are cut and queued.
    await delay(500);
    const [output, status] = await Promise.all([child.output(), child.status]);
    assertEquals(new TextDecoder().decode(output.stderr), "");
    assertEquals(status.code, 0);
    const lines = new TextDecoder().decode(output.stdout).split("\n");
    assertEquals(lines.pop(), "");
    assertEquals(lines.length, FLOOD_LINES);
    lines.forEach((line, i) => assertEquals(line, floodLine(i), `line ${i}`));
  },
);
