import { assertEquals } from "@std/assert";
import { fnv1a } from "../app/fnv1a.ts";

// The names made from these hashes must not change between versions: the published test vectors.
Deno.test("fnv1a() gives FNV-1a's published 32- and 64-bit values", () => {
  assertEquals(["", "a", "foobar"].map((text) => fnv1a(text, 32)), [
    "811c9dc5",
    "e40c292c",
    "bf9cf968",
  ]);
  assertEquals(["", "a", "foobar"].map((text) => fnv1a(text, 64)), [
    "cbf29ce484222325",
    "af63dc4c8601ec8c",
    "85944171f73967e8",
  ]);
});

Deno.test("fnv1a() hashes UTF-8 bytes, not UTF-16 code units", () => {
  // U+00E9 (e acute) is the UTF-8 bytes c3 a9; its one code unit 0xe9 would hash to 6c0b6c44.
  assertEquals(fnv1a("\u00e9", 32), "1e9de8c1");
  assertEquals(fnv1a("\u00e9", 64), "0ac21707b7181e01");
});
