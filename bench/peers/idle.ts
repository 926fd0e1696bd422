/**
 * A bare Deno script that does nothing: the baseline for each child's memory. It prints
 * "ready" and then waits (a timer keeps the process alive without waking it).
 *
 * @module
 */

console.log("ready");
setInterval(() => {}, 2 ** 31 - 1);
