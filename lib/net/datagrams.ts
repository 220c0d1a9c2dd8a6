/**
 * Datagrams on a work connection, shared by both sides of a UDP app: frames
 * (protocol.ts) gathered into batches, the limits on what may wait, and the
 * rate-limited log line that counts drops (UDP may drop; a queue must not grow).
 */
import { encodeDatagramInto } from "../../protocol.ts";
import { log } from "../log.ts";
import type { Endpoint } from "./endpoint.ts";

/** Bytes of datagram frames gathered before one write to the work connection. */
export const UDP_BATCH_BYTES = 256 * 1024;
/** Work-connection backlog beyond which datagrams are dropped (UDP may drop; a queue must not grow). */
export const UDP_MAX_QUEUED_BYTES = 1024 * 1024;
/** Datagrams held for a peer whose local socket is still being created. */
export const UDP_PENDING_PER_PEER = 64;
/** At most one "datagrams dropped" log line per app in this interval. */
export const DROP_LOG_INTERVAL_MS = 5_000;
/** The drop-log interval in force: DROP_LOG_INTERVAL_MS, lowered only by tests (its timer is real time). */
export const dropLog = { intervalMs: DROP_LOG_INTERVAL_MS };
/** Longest gap between sweeps for idle UDP peers. */
export const MAX_SWEEP_MS = 1_000;

/** Logs drops at most once per DROP_LOG_INTERVAL_MS, with the count since the last line; drops after a line are reported when the interval ends. */
export class DropLog {
  #last = 0;
  #since = 0;
  #reason = "";
  #tail: Timer | null = null;
  constructor(private readonly fields: Record<string, unknown>) {}
  /** Counts `n` dropped datagrams (one by default), for `reason`. */
  note(reason: string, n = 1): void {
    this.#since += n;
    this.#reason = reason;
    const now = Date.now();
    if (now - this.#last >= dropLog.intervalMs) return this.#print(now);
    // Drops that stop within the interval must still be told: once it ends (unref'd: it never holds a stopping process).
    // At most one interval away, even after the wall clock stepped back (these times are for log lines only).
    this.#tail ??= setTimeout(() => this.#print(Date.now()), Math.min(dropLog.intervalMs, this.#last + dropLog.intervalMs - now)).unref();
  }
  #print(now: number): void {
    if (this.#tail) clearTimeout(this.#tail);
    this.#tail = null;
    log.warn("udp datagrams dropped", { ...this.fields, reason: this.#reason, count: this.#since });
    this.#last = now;
    this.#since = 0;
  }
}

/** Writes datagram frames to a work connection: the first of an event-loop turn at once, the rest of the turn in one batch. */
export class DatagramBatcher {
  #buf = new Uint8Array(UDP_BATCH_BYTES);
  #at = 0;
  #scheduled = false;
  constructor(private readonly target: () => Endpoint | null) {}

  /**
   * Adds one datagram; false when it was dropped because the connection is backed up,
   * or absent with the batch full (while a work connection is on its way, one batch waits).
   */
  add(address: string, port: number, payload: Uint8Array): boolean {
    const ep = this.target();
    if (!ep || ep.closed) {
      const next = encodeDatagramInto(this.#buf, this.#at, address, port, payload);
      if (next < 0) return false;
      this.#at = next;
      return true;
    }
    if (ep.queued > UDP_MAX_QUEUED_BYTES) return false;
    let next = encodeDatagramInto(this.#buf, this.#at, address, port, payload);
    if (next < 0) {
      this.flush();
      next = encodeDatagramInto(this.#buf, 0, address, port, payload);
    }
    this.#at = next;
    if (!this.#scheduled) {
      // The first datagram of an event-loop turn goes out at once (latency); the rest of the turn is batched (throughput).
      this.#scheduled = true;
      setImmediate(this.#onImmediate);
      if (ep.queued === 0) this.flush();
    }
    return true;
  }

  #onImmediate = (): void => {
    this.#scheduled = false;
    this.flush();
  };

  /** Writes what is gathered (kept while there is no connection to write to). */
  flush(): void {
    const ep = this.target();
    if (this.#at === 0 || !ep || ep.closed) return;
    // A copy: the endpoint may queue it while this buffer is reused.
    const out = this.#buf.slice(0, this.#at);
    this.#at = 0;
    ep.write(out, null);
  }
}

/** The error a Bun UDP socket's error handler was given. */
export function errorOf(a: unknown, b: unknown): Error {
  // Bun passes (socket, error) by its types but (error) with `this` as the socket at run time (BUN-NOTES.md).
  return (b ?? a) as Error;
}
