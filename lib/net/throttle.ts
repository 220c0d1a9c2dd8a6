/**
 * Bandwidth limits: a token bucket shared by every stream of an app, one per
 * direction. A relayed chunk spends its bytes; when the bucket runs dry, every
 * socket that feeds it stops reading (backpressure, as for a slow peer) until
 * the bucket has refilled, so a new stream cannot slip past a spent budget.
 * Bytes are delayed, never dropped. Over a span, the rate overshoots by at most
 * the burst plus the chunks already read when the budget ran out.
 */
import type { Endpoint } from "./endpoint.ts";

/** The burst a bucket holds, in seconds of its rate: small, so a limit holds over short spans too. */
export const BURST_SECONDS = 0.05;

/**
 * A byte budget refilled at `rate` bytes per second, for the sockets that joined it. With a
 * `parent` (the group's budget, for an app's), a member spends both and waits for either.
 */
export class Throttle {
  #tokens: number;
  #last = performance.now();
  readonly #members = new Set<Endpoint>();
  #timer: Timer | null = null;

  constructor(
    readonly rate: number,
    readonly parent: Throttle | null = null,
  ) {
    this.#tokens = rate * BURST_SECONDS;
  }

  /** `ep` now spends this budget for what it reads; it waits at once if the budget is spent. */
  join(ep: Endpoint): void {
    this.#members.add(ep);
    if (this.#timer) ep.throttle(true);
    this.parent?.join(ep);
  }

  /** `ep` no longer spends this budget (its stream ended); this budget no longer holds it back. */
  leave(ep: Endpoint): void {
    if (this.#members.delete(ep) && this.#timer) ep.throttle(false);
    this.parent?.leave(ep);
  }

  /** `n` bytes were relayed: when the budget is spent, every member stops reading until it is back. */
  spend(n: number): void {
    this.parent?.spend(n);
    this.#refill();
    this.#tokens -= n;
    if (this.#tokens >= 0 || this.#timer) return;
    for (const ep of this.#members) ep.throttle(true);
    this.#timer = setTimeout(this.#wake, (-this.#tokens / this.rate) * 1000);
  }

  #refill(): void {
    const now = performance.now();
    this.#tokens = Math.min(this.rate * BURST_SECONDS, this.#tokens + ((now - this.#last) / 1000) * this.rate);
    this.#last = now;
  }

  readonly #wake = (): void => {
    this.#refill();
    if (this.#tokens < 0) {
      this.#timer = setTimeout(this.#wake, (-this.#tokens / this.rate) * 1000);
      return;
    }
    this.#timer = null;
    for (const ep of this.#members) ep.throttle(false);
  };
}
