/**
 * Timeouts of one fixed length for many items, on a single timer.
 *
 * A timer per connection is costly in Bun: with three per tunneled connection
 * (handshake, work ack, local dial) they took about 15 us of CPU per
 * connection, a sixth of Warren's user time in the connection-setup benchmark.
 * Items that share one timeout length expire in the order they were added, so
 * an insertion-ordered Map is the queue and one timer, armed for the oldest
 * item, serves them all.
 */
export class Deadlines<T> {
  /** Item -> time (performance.now(), monotonic: a wall-clock step changes nothing) at which it expires, oldest first. */
  readonly #due = new Map<T, number>();
  #timer: Timer | null = null;

  constructor(
    /** The timeout, in milliseconds. */
    readonly timeoutMs: number,
    private readonly onExpire: (item: T) => void,
  ) {}

  /** Starts (or restarts) the timeout of `item`. */
  add(item: T): void {
    // Re-adding moves the item to the end, keeping the Map ordered by due time.
    this.#due.delete(item);
    this.#due.set(item, performance.now() + this.timeoutMs);
    this.#timer ??= setTimeout(() => this.#fire(), this.timeoutMs);
  }

  /** Cancels the timeout of `item`, if it is pending. */
  delete(item: T): void {
    this.#due.delete(item);
  }

  /** Items whose timeout is pending. */
  get size(): number {
    return this.#due.size;
  }

  /** Cancels every pending timeout. */
  clear(): void {
    this.#due.clear();
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #fire(): void {
    this.#timer = null;
    const now = performance.now();
    for (const [item, due] of this.#due) {
      if (due > now) {
        this.#timer = setTimeout(() => this.#fire(), due - now);
        return;
      }
      this.#due.delete(item);
      try {
        this.onExpire(item);
      } catch (err) {
        // One failing callback must not leave the others waiting for the next add().
        console.error(`deadlines: expiry callback failed: ${(err as Error).message}`);
      }
    }
  }
}
