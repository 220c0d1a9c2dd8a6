/**
 * Event-loop lag: how late a timer fires. One timer every LAG_SAMPLE_MS; a
 * relay that keeps the loop busy (or a long synchronous task) shows as lag
 * long before users notice it as latency.
 */

/** Time between two samples. */
export const LAG_SAMPLE_MS = 500;

/** Samples the event loop's lag. */
export class LoopLag {
  /** The lag of the last sample, in seconds. */
  last = 0;
  /** The largest lag since `takeMax` was last called, in seconds. */
  #max = 0;
  #timer: Timer | null = null;

  start(): void {
    let expected = performance.now() + LAG_SAMPLE_MS;
    this.#timer = setInterval(() => {
      const now = performance.now();
      this.last = Math.max(0, now - expected) / 1000;
      if (this.last > this.#max) this.#max = this.last;
      expected = now + LAG_SAMPLE_MS;
    }, LAG_SAMPLE_MS);
    this.#timer.unref();
  }

  /** The largest lag since the previous call (a scrape reads the worst of its interval, not just the last sample). */
  takeMax(): number {
    const m = Math.max(this.#max, this.last);
    this.#max = 0;
    return m;
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}
