/**
 * `deno task test:gpio`: runs tests/gpio_vm/run.sh with the path of the Deno that runs this, so
 * the VM gets the same Deno even where `deno` is not on PATH (as with `npx deno`).
 *
 * @module
 */

if (import.meta.main) {
  const script = new URL("./run.sh", import.meta.url).pathname;
  const child = new Deno.Command("bash", {
    args: [script, ...Deno.args],
    env: { DENO_BIN: Deno.execPath() },
  }).spawn();
  Deno.exit((await child.status).code);
}
