/**
 * A Deno script that does nothing: the baselines for each child's memory. It prints "ready"
 * and then waits (a timer keeps the process alive without waking it).
 *
 *   idle.ts           a bare script: Deno itself
 *   idle.ts ffi       the library's libc bindings opened, nothing else: the floor of any
 *                     program that makes FFI calls (the generic calls of `ffi/library.ts`)
 *   idle.ts ffi-fast  the same, and libc's fast calls compiled as a synchronous wait or a burst
 *                     of wake-ups compiles them (Deno compiles each with Cranelift, whose code
 *                     pages then count)
 *   idle.ts logging   logging loaded and set up as the children set it up, nothing else
 *   idle.ts SCRIPT    the whole module graph of SCRIPT (a path from here: the LED or the button)
 *                     loaded, and its
 *                     logging set up, but nothing of it run: the floor the child's own work
 *                     adds to
 *
 * @module
 */

const what = Deno.args[0];
if (what === "ffi" || what === "ffi-fast") {
  const { fastLibc, libc } = await import("../../ffi/libc.ts");
  libc();
  if (what === "ffi-fast") fastLibc();
} else if (what !== undefined) {
  const { setupLogging } = await import("../../app/logging.ts");
  setupLogging({ level: "info", format: "text" });
  // The child's `main` runs only under `import.meta.main`, so this loads and runs nothing else.
  if (what !== "logging") await import(new URL(what, import.meta.url).href);
}
console.log("ready");
setInterval(() => {}, 2 ** 31 - 1);
