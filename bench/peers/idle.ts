/**
 * A Deno script that does nothing: the baselines for each child's memory. It prints "ready"
 * and then waits (a timer keeps the process alive without waking it).
 *
 *   idle.ts           a bare script: Deno itself
 *   idle.ts ffi       the library's libc bindings opened (`Deno.dlopen`), nothing else: the
 *                     floor of any program that makes FFI calls (Deno compiles a fast-call
 *                     trampoline per symbol with Cranelift, whose code pages then count)
 *   idle.ts logging   logging loaded and set up as the children set it up, nothing else
 *   idle.ts SCRIPT    the whole module graph of SCRIPT (a path from here: the LED or the button)
 *                     loaded, and its
 *                     logging set up, but nothing of it run: the floor the child's own work
 *                     adds to
 *
 * @module
 */

const what = Deno.args[0];
if (what === "ffi") {
  const { libc } = await import("../../ffi/libc.ts");
  libc();
} else if (what !== undefined) {
  const { setupLogging } = await import("../../app/logging.ts");
  setupLogging({ level: "info", format: "text" });
  // The child's `main` runs only under `import.meta.main`, so this loads and runs nothing else.
  if (what !== "logging") await import(new URL(what, import.meta.url).href);
}
console.log("ready");
setInterval(() => {}, 2 ** 31 - 1);
