/**
 * The tunnel side of one HTTP connection: a stream to the local app, opened
 * through the group's session like a TCP user's. The session's pool sees an
 * ordinary user Endpoint; its Transport is this object, so what the pool
 * writes "to the user" (the app's bytes) comes to the HTTP connection
 * (proxy.ts), which parses and forwards it, and what the HTTP connection
 * sends (request heads and bodies) enters as bytes "read from the user". The
 * stream's end-by-count, resets and backpressure are the relay's, unchanged.
 */
import { Endpoint, type Transport } from "../../net/endpoint.ts";

/** What an upstream tells the HTTP connection that owns it. */
export interface UpstreamOwner {
  /** Bytes from the app (the whole chunk is taken; backpressure is the user endpoint's, which pauses `source`). */
  fromApp(up: Upstream, data: Uint8Array): void;
  /** The app's direction ended cleanly (every byte it sent has arrived). */
  appEnded(up: Upstream): void;
  /** The stream has closed: `clean` when both directions ended with every byte, false after a reset. */
  upstreamClosed(up: Upstream, clean: boolean): void;
  /** The work connection is backed up (true) or has room again (false): stop or resume reading the user. */
  blocked(up: Upstream, on: boolean): void;
}

/** Most bytes held for a stream whose work connection is not bound yet; the HTTP connection stops reading the user past it. */
export const MAX_UPSTREAM_PENDING_BYTES = 256 * 1024;

/** One stream to the local app, carrying one or more requests of one user connection to one app. */
export class Upstream implements Transport {
  /** The endpoint the session's pool relays to and from. */
  readonly ep = new Endpoint();
  /** Requests sent on it (the second and later reuse it). */
  requests = 0;
  /** Bytes from the app since the current request was sent. */
  answered = 0;
  #pending: Uint8Array[] | null = [];
  #pendingBytes = 0;
  #appEnded = false;
  #closed = false;

  constructor(
    /** Null once the HTTP connection has let go of it (it then only finishes quietly). */
    public owner: UpstreamOwner | null,
    /** The user's connection: its addresses are what StartWork tells the client (PROXY protocol, logs). */
    private readonly user: Transport,
  ) {
    this.ep.onClose = (_ep, aborted) => {
      this.#closed = true;
      this.owner?.upstreamClosed(this, !aborted);
    };
  }

  /** Whether the stream has a work connection (bytes sent now go straight out). */
  get bound(): boolean {
    return this.#pending === null;
  }

  /** Bytes held until the work connection is bound. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get appEnded(): boolean {
    return this.#appEnded;
  }

  /** The pool may have bound a work connection synchronously (a pooled one was free): check after handing the endpoint over. */
  checkBound(): void {
    if (this.#pending === null || !this.ep.peer) return;
    const held = this.#pending;
    this.#pending = null;
    this.#pendingBytes = 0;
    for (const chunk of held) Endpoint.events.data(this.ep, chunk);
    this.owner?.blocked(this, false);
  }

  /** Sends request bytes to the app. */
  send(chunk: Uint8Array): void {
    if (this.#closed || !chunk.length) return;
    if (this.#pending) {
      this.#pending.push(chunk);
      this.#pendingBytes += chunk.length;
      if (this.#pendingBytes > MAX_UPSTREAM_PENDING_BYTES) this.owner?.blocked(this, true);
      return;
    }
    Endpoint.events.data(this.ep, chunk);
  }

  /** Ends the request direction (the app reads EOF): the stream then ends once the app closes its side. */
  finish(): void {
    if (this.#closed) return;
    if (this.#pending) {
      // Never bound: nothing reached the app; the waiting user entry is dropped.
      this.ep.reset();
      return;
    }
    Endpoint.events.end(this.ep);
  }

  /** Resets the stream: the app sees a reset, never a clean end after fewer bytes. */
  reset(): void {
    this.ep.reset();
  }

  // Transport: what the relay does to "the user's socket".
  write(data: Uint8Array): number {
    if (this.#closed) return -1;
    this.answered += data.length;
    this.owner?.fromApp(this, data);
    return data.length;
  }
  pause(): void {
    this.owner?.blocked(this, true);
  }
  resume(): void {
    if (this.#pending) return this.checkBound();
    this.owner?.blocked(this, false);
  }
  shutdown(): void {
    this.#signalEnd();
  }
  end(): void {
    // The relay closes cleanly only after both directions ended with every byte (endpoint.ts).
    this.#signalEnd();
    queueMicrotask(() => Endpoint.events.closed(this.ep, false));
  }
  terminate(): void {
    queueMicrotask(() => Endpoint.events.closed(this.ep, true));
  }
  #signalEnd(): void {
    if (this.#appEnded) return;
    this.#appEnded = true;
    this.owner?.appEnded(this);
  }
  get remoteAddress(): string {
    return this.user.remoteAddress;
  }
  get remotePort(): number {
    return this.user.remotePort;
  }
  get localAddress(): string {
    return this.user.localAddress;
  }
  get localPort(): number {
    return this.user.localPort;
  }
}
