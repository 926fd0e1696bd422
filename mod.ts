/**
 * Shared-memory IPC for Deno on Linux, over libc through `Deno.dlopen`: regions of memory that
 * several processes map (from a file, a POSIX shared-memory name, a System V key or an anonymous
 * memfd), a state cell that carries the latest value of a small state between processes and
 * wakes readers when it changes, without polling, and a ring that streams messages from one
 * process to another, blocking on futexes when full or empty, with zero-copy reads and writes.
 *
 * Memory has one owner, the region: closing it closes everything built on it, settles every
 * pending wait, and revokes every view it handed out, so no order of calls can reach memory that
 * was let go.
 *
 * Needs `--allow-ffi`.
 *
 * @example
 * ```ts
 * import { createMemfdRegion, openStateCell } from "@mmap-ipc/mmap-ipc";
 *
 * using region = createMemfdRegion({ size: 256 });
 * using cell = openStateCell(region, { writer: true });
 * cell.write(1); // the region now starts with "1\n\0", as the original C button wrote it
 * ```
 *
 * @module
 */

export {
  MAX_REGION_SIZE,
  type RegionKind,
  type RegionOptions,
  type RegionWaitOptions,
  SharedRegion,
} from "./lib/region.ts";
export {
  createMemfdRegion,
  type MemfdOptions,
  openFileRegion,
  type OpenMemfdOptions,
  openMemfdRegion,
  openShmRegion,
  openSysvRegion,
  removeShm,
} from "./lib/open_region.ts";
export {
  openStateCell,
  restoreStateCellHeader,
  STATE_CELL_SIZE,
  StateCell,
  stateCellHeaderProblem,
  type StateCellOptions,
  type StateChangesOptions,
  type StateWaitOptions,
  type WriterEvent,
} from "./lib/state_cell.ts";
export {
  openStateFile,
  STATE_FILE_SIZE,
  StateFile,
  type StateFileContent,
  type StateFileOptions,
} from "./lib/state_file.ts";
export {
  initRing,
  type InitRingOptions,
  restoreRingHeader,
  type RestoreRingOptions,
  restoreRingPosition,
  type RestoreRingPositionOptions,
  ringRegionSize,
} from "./lib/ring/layout.ts";
export type { RingOptions, RingWaitOptions } from "./lib/ring/core.ts";
export {
  openRingProducer,
  RingProducer,
  type RingReservation,
  type RingWriter,
} from "./lib/ring/producer.ts";
export {
  openRingConsumer,
  RingConsumer,
  type RingLease,
  type RingReader,
} from "./lib/ring/consumer.ts";
