/**
 * Progress of a long run: `@std/cli`'s progress bar on a terminal, plain lines otherwise (a
 * log file or CI output gets one line per step, not a stream of carriage returns).
 *
 * @module
 */

import { format as formatDuration } from "@std/fmt/duration";
import { ProgressBar } from "@std/cli/unstable-progress-bar";

/** Reports the steps of a run. */
export interface Progress {
  /** A step begins; `label` says what it measures. */
  step(label: string): void;
  /** The run is over: removes the bar. */
  finish(): Promise<void>;
}

function elapsed(since: number): string {
  return formatDuration(Math.round(performance.now() - since), { ignoreZero: true }) || "0ms";
}

class PlainProgress implements Progress {
  readonly #total: number;
  readonly #started = performance.now();
  #done = 0;

  constructor(total: number) {
    this.#total = total;
  }

  step(label: string): void {
    this.#done++;
    console.error(`bench: [${this.#done}/${this.#total}] ${label} (${elapsed(this.#started)} in)`);
  }

  finish(): Promise<void> {
    console.error(`bench: done in ${elapsed(this.#started)}`);
    return Promise.resolve();
  }
}

class BarProgress implements Progress {
  readonly #bar: ProgressBar;
  #label = "starting";

  constructor(total: number) {
    this.#bar = new ProgressBar({
      max: total,
      barLength: 30,
      interval: 500,
      clear: true,
      formatter: (state) =>
        `[${state.styledTime}] [${state.progressBar}] ${state.value}/${state.max} ${this.#label}`,
    });
  }

  step(label: string): void {
    this.#label = label;
    this.#bar.value++;
  }

  async finish(): Promise<void> {
    await this.#bar.stop();
  }
}

/** A progress reporter for `total` steps: a bar when stderr is a terminal, lines otherwise. */
export function createProgress(total: number): Progress {
  return Deno.stderr.isTerminal() ? new BarProgress(total) : new PlainProgress(total);
}
