/**
 * The benchmark's data: every measured figure with its id, the table it belongs to, its unit
 * and its summary over runs. Cases add figures; targets and the report only read them.
 *
 * @module
 */

import type { Summary } from "./stats.ts";

/** Units a figure can have. */
export type Unit =
  | "us"
  | "us/event"
  | "ns/op"
  | "msg/s"
  | "%"
  | "/s"
  | "bytes";

/** What a figure is, before it is measured. */
export interface FigureSpec {
  /** Stable id, such as `ring.64.minimal`; targets refer to figures by it. */
  id: string;
  /** The id of the table it is shown in (one of {@link SECTIONS}). */
  section: SectionId;
  /** What was measured, for a reader. */
  label: string;
  /** The unit of the values. */
  unit: Unit;
  /** For message rates: the bytes per message, so the report can show a bandwidth too. */
  messageBytes?: number;
}

/** A measured figure. */
export interface Figure extends FigureSpec, Summary {
  /** Anything the reader needs to know about this figure, such as which variant was best. */
  note?: string;
}

/** The tables of the report, in order. */
export const SECTIONS = [
  {
    id: "wake-asleep",
    title: "Wake-up latency, writer to a reader asleep in another process (writes 1-2 ms apart)",
  },
  {
    id: "wake-busy",
    title: "Wake-up latency, back to back (each write 0-100 us after the reader took the last)",
  },
  {
    id: "wake-warm",
    title:
      "Wake-up latency, reader asleep as in the first table, after it took 3000 changes back to back (V8 has optimised its code)",
  },
  {
    id: "wake-paired",
    title:
      "Wake-up latency, each state cell wait and the raw waits of its kind alive at once, woken in turn (writes 1-2 ms apart)",
  },
  { id: "system", title: "The button and LED system (real scripts)" },
  { id: "foreign", title: 'Our LED following a foreign writer (C, `"%d\\n"` at offset 0)' },
  {
    id: "mqtt",
    title: "The MQTT bridge: the real launcher, a private mosquitto on loopback, its C clients",
  },
  { id: "mqtt-flood", title: "The MQTT bridge under a flood of `set` messages" },
  { id: "ring", title: "Ring throughput between two processes (messages/s)" },
  { id: "in-process", title: "In one process (time per call)" },
  { id: "memory", title: "Memory of each child" },
] as const;

/** The id of a report table. */
export type SectionId = typeof SECTIONS[number]["id"];

/** The figures of one run of the benchmark. */
export class FigureSet {
  readonly #figures = new Map<string, Figure>();

  /** Records a measured figure; an id can be recorded once. */
  add(spec: FigureSpec, summary: Summary, note?: string): Figure {
    if (this.#figures.has(spec.id)) throw new Error(`Figure ${spec.id} was measured twice`);
    const figure: Figure = { ...spec, ...summary };
    if (note !== undefined) figure.note = note;
    this.#figures.set(spec.id, figure);
    return figure;
  }

  /** The figure with `id`, if it was measured. */
  get(id: string): Figure | undefined {
    return this.#figures.get(id);
  }

  /** Every figure, in the order they were measured. */
  all(): Figure[] {
    return [...this.#figures.values()];
  }
}
