/**
 * Rings as the library tests use them: in an anonymous memfd, sized to the capacity asked for.
 *
 * @module
 */

import { createMemfdRegion, initRing, ringRegionSize, type SharedRegion } from "../../mod.ts";
import { POSITION, RING_HEADER_SIZE, TAIL } from "../../lib/ring/layout.ts";

/** A memfd region holding an empty ring of exactly `capacity` data bytes at offset 0. */
export function ringRegion(capacity: number): SharedRegion {
  const region = createMemfdRegion({ size: ringRegionSize(capacity) });
  initRing(region, { capacity });
  return region;
}

/**
 * Where the length of the next record the consumer reads lies in `region`, for the ring at
 * `offset` with `capacity` data bytes: the word a test writes over to corrupt a record in flight.
 */
export function nextRecordLength(region: SharedRegion, offset: number, capacity: number): number {
  const tail = region.loadInt32(offset + TAIL) & POSITION;
  return offset + RING_HEADER_SIZE + (tail >= capacity ? tail - capacity : tail);
}
