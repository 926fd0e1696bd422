/**
 * The environment the launcher's children start with: never the launcher's whole environment
 * (it may hold an MQTT password, or a `DEBUG` that makes a library log it), only the variables
 * named here and in each child's spec, and only those the launcher may read itself.
 *
 * @module
 */

/**
 * What the Deno runtime of every child reads: where its module cache is (`DENO_DIR`, else
 * `$XDG_CACHE_HOME/deno`, else `$HOME/.cache/deno`), whether to look for updates, the time zone,
 * the locale and colours. The children read none of the launcher's own variables
 * (`JOURNAL_STREAM`): they are given the FIFO and the log format on their command line.
 */
export const CHILD_RUNTIME_ENV: readonly string[] = [
  "DENO_DIR",
  "XDG_CACHE_HOME",
  "HOME",
  "DENO_NO_UPDATE_CHECK",
  "TZ",
  "LANG",
  "LC_ALL",
  "NO_COLOR",
];

/**
 * The values of `names` in this process's environment: those that are set and that this process
 * has permission to read (a name it may not read is left out, never prompted for).
 */
export function inheritedEnv(names: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of names) {
    const permission = Deno.permissions.querySync({ name: "env", variable: name });
    if (permission.state !== "granted") continue;
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
}
