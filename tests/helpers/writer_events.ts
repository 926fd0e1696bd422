/**
 * What a state cell's reader reports about its writer, gathered for a test.
 *
 * @module
 */

import type { WriterEvent } from "../../mod.ts";

/** The events a reader reported, and a promise that resolves at the first `died`. */
export interface WriterEvents {
  readonly events: WriterEvent[];
  readonly died: Promise<void>;
  /** The cell's `onWriter` option. */
  readonly onWriter: (event: WriterEvent) => void;
}

/** Collects the writer events of a reader opened with the returned `onWriter`. */
export function writerEvents(): WriterEvents {
  const events: WriterEvent[] = [];
  let died: () => void = () => {};
  return {
    events,
    died: new Promise<void>((resolve) => (died = resolve)),
    onWriter: (event) => {
      events.push(event);
      if (event.status === "died") died();
    },
  };
}
