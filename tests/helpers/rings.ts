/**
 * Rings as the library tests use them: in an anonymous memfd, sized to the capacity asked for.
 *
 * @module
 */

import { createMemfdRegion, initRing, ringRegionSize, type SharedRegion } from "../../mod.ts";

/** A memfd region holding an empty ring of exactly `capacity` data bytes at offset 0. */
export function ringRegion(capacity: number): SharedRegion {
  const region = createMemfdRegion({ size: ringRegionSize(capacity) });
  initRing(region, { capacity });
  return region;
}
