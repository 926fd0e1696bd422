/**
 * Shared-memory IPC for Deno on Linux, over libc through `Deno.dlopen`: regions of memory that
 * several processes map (from a file, a POSIX shared-memory name, a System V key or an anonymous
 * memfd), a state cell that carries the latest value of a small state between processes and
 * wakes readers when it changes, without polling, and a ring that streams messages from one
 * process to another, blocking on futexes when full or empty, with zero-copy reads and writes.
 *
 * Needs `--allow-ffi`.
 *
 * @example
 * ```ts
 * import { openFileRegion, openStateCell } from "./mod.ts";
 *
 * using region = openFileRegion("/tmp/data.dat", { create: true, size: 256 });
 * using cell = openStateCell(region, { writer: true });
 * cell.write(1); // the file now starts with "1\n\0", as the original C button wrote it
 * ```
 *
 * @module
 */

export {
  createMemfdRegion,
  MAX_REGION_SIZE,
  type MemfdOptions,
  openFileRegion,
  openMemfdRegion,
  openShmRegion,
  openSysvRegion,
  type RegionKind,
  type RegionOptions,
  type RegionWaitOptions,
  removeShm,
  SharedRegion,
} from "./lib/region.ts";
export {
  openStateCell,
  STATE_CELL_MAGIC,
  STATE_CELL_SIZE,
  STATE_CELL_VERSION,
  StateCell,
  type StateCellOptions,
  type StateChangesOptions,
  type StateWaitOptions,
} from "./lib/state_cell.ts";
export {
  initRing,
  type InitRingOptions,
  openRingConsumer,
  openRingProducer,
  RING_HEADER_SIZE,
  RING_MAGIC,
  RING_MAX_CAPACITY,
  RING_RECORD_HEADER_SIZE,
  RING_VERSION,
  RingConsumer,
  type RingLease,
  type RingOptions,
  RingProducer,
  ringRegionSize,
  type RingReservation,
  type RingWaitOptions,
} from "./lib/ring.ts";
