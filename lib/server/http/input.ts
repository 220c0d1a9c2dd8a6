/**
 * Bytes a vhost connection has read from its user and not yet handled: a request
 * head being gathered, or the next pipelined request. Grows by doubling (a head
 * sent a byte at a time costs linear copying, not quadratic); what has been
 * handled is dropped as a view, never written over, because handled bytes may
 * still sit in a queue toward the app.
 */
export class UserInput {
  #buf: Uint8Array | null = null;
  #len = 0;
  /** Where the search for a head's end resumes (the last 3 bytes may begin its blank line). */
  scanFrom = 0;

  constructor(
    /** Largest capacity worth growing to at once (a head limit plus one read). */
    private readonly growCap: number,
  ) {}

  get length(): number {
    return this.#len;
  }

  /** The bytes held, as a view of exactly their length. */
  bytes(): Uint8Array {
    return this.#buf ? this.#buf.subarray(0, this.#len) : EMPTY;
  }

  append(chunk: Uint8Array): void {
    if (!this.#buf || this.#len === 0) {
      this.#buf = chunk;
      this.#len = chunk.length;
      return;
    }
    const need = this.#len + chunk.length;
    if (this.#buf.length < need) {
      const grown = new Uint8Array(Math.max(need, Math.min(this.#buf.length * 2, this.growCap)));
      grown.set(this.#buf.subarray(0, this.#len));
      this.#buf = grown;
    }
    this.#buf.set(chunk, this.#len);
    this.#len = need;
  }

  /** Drops the first `n` bytes; the rest becomes a view of exactly its length, so nothing handed on is written over. */
  consume(n: number): void {
    if (n >= this.#len) return this.clear();
    this.#buf = this.#buf!.subarray(n, this.#len);
    this.#len = this.#buf.length;
  }

  clear(): void {
    this.#buf = null;
    this.#len = 0;
    this.scanFrom = 0;
  }
}

const EMPTY = new Uint8Array(0);

/** The host of a Host header (or an absolute URL's authority), lower-case, without port and trailing dot; null when malformed. */
export function hostOf(authority: string): string | null {
  let host = authority.trim().toLowerCase();
  if (host.startsWith("[")) {
    const close = host.indexOf("]");
    if (close < 0 || !/^(:\d{1,5})?$/.test(host.slice(close + 1))) return null;
    host = host.slice(0, close + 1);
  } else {
    const colon = host.indexOf(":");
    if (colon >= 0) {
      if (!/^\d{1,5}$/.test(host.slice(colon + 1))) return null;
      host = host.slice(0, colon);
    }
  }
  if (host.endsWith(".")) host = host.slice(0, -1);
  if (!host || !/^(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)$/.test(host) || host.length > 253) return null;
  return host;
}
