/**
 * The launcher's care of its claim records: a user who removes them while it runs (`rm -rf` of
 * the runtime directory, or its `mv`) would let a second launcher take the same paths. Each record
 * is watched, and so is the runtime directory above the claims directory (inotify, no polling);
 * one removed or replaced is put back once the removal has had time to finish, as the FIFO button
 * waits before it makes a new FIFO.
 *
 * @module
 */

import { delay } from "@std/async/delay";
import type { Logger } from "./logging.ts";
import type { PathClaim } from "./path_claims.ts";
import { PathWatch } from "../lib/path_watch.ts";

/** How long a removal is given to finish before the records are put back. */
const SETTLE_MS = 200;
/** How long to wait before trying again when the records could not be put back. */
const RETRY_MS = 1_000;

/** Keeps the records of `claims` in place until `signal` aborts; see the module description. */
export async function keepClaims(
  claims: PathClaim[],
  options: { signal: AbortSignal; log: Logger },
): Promise<void> {
  const { signal, log } = options;
  // After a failed attempt the records are tried again at once: their directory may be missing,
  // and a watch cannot be set on a path in a missing directory.
  let failing = false;
  // A failure is said once, until the records are watched again: putting them back may work
  // where watching them fails (no inotify instance or fd left), turn after turn.
  let told = false;
  const watching = (): void => {
    if (!told) return;
    told = false;
    log.info("Watching this launcher's claim records again");
  };
  while (!signal.aborted) {
    try {
      if (!failing) {
        await firstChange(claims, signal, watching);
        if (signal.aborted) return;
        await delay(SETTLE_MS, { signal });
      }
      const restored = claims.reduce((count, claim) => count + claim.restore(), 0);
      if (restored > 0) {
        log.warn(
          `${restored} of this launcher's claim records were removed; made them again, so that ` +
            "no other launcher takes its paths",
        );
      }
      failing = false;
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof Deno.errors.Busy) {
        log.error((error as Error).message);
        return;
      }
      if (!told) {
        log.warn(
          `Cannot watch or put back this launcher's claim records yet (trying every second): ${
            (error as Error).message
          }`,
        );
      }
      told = true;
      failing = true;
      await delay(RETRY_MS, { signal }).catch(() => {});
    }
  }
}

/**
 * Resolves when any record of `claims` is removed or replaced, or when `signal` aborts; calls
 * `watching` once every record is watched.
 */
async function firstChange(
  claims: PathClaim[],
  signal: AbortSignal,
  watching: () => void,
): Promise<void> {
  const watches: PathWatch[] = [];
  try {
    for (const { file, identity } of claims.flatMap((claim) => claim.records())) {
      watches.push(new PathWatch(file, identity, { ancestors: 1 }));
    }
    watching();
    // Gone before the watch began: put back at once.
    if (watches.some((watch) => watch.status() !== "same")) return;
    const aborted = new Promise<void>((resolve) => {
      signal.addEventListener("abort", () => resolve(), { once: true });
    });
    await Promise.race([
      aborted,
      ...watches.map(async (watch) => {
        for await (const change of watch.changes()) if (change !== "restored") return;
        await aborted; // closed: only the abort ends the wait
      }),
    ]);
  } finally {
    await Promise.all(watches.map((watch) => watch.close()));
  }
}
