/**
 * One side of a relayed connection: the one place that writes to sockets.
 *
 * Bun's `socket.write` does not buffer (BUN-NOTES.md): it returns how many
 * bytes the kernel took. Each Endpoint keeps the tail in a small queue,
 * pauses the socket feeding it when the queue passes HIGH_WATER_BYTES and
 * resumes it on `drain` once the queue is empty. A FIN from one side is
 * forwarded with `shutdown()` after the queue toward the other side drains,
 * unless the owner takes the end itself (`onEnd`: a reusable work connection
 * tells a stream's end on the control connection instead). No Promise and no
 * timer is created per chunk. The socket handler that feeds it lives in
 * sockets.ts; holding a frame for the next chunk in hold.ts.
 */
import type { Socket } from "bun";
import type { Throttle } from "./throttle.ts";
import type { StreamEnds, Transport } from "./transport.ts";
import { concat } from "../bytes.ts";

export type { StreamEnds, Transport } from "./transport.ts";

/** Queued bytes toward one socket before its source is paused; with one more chunk (at most 512 KiB in Bun) this bounds memory per direction. */
export const HIGH_WATER_BYTES = 256 * 1024;
/** How long a closing side may make no progress flushing its last bytes before it is cut: a user that stopped reading must not hold a dead stream forever. */
export const LINGER_MS = 30_000;
/** The linger in force: LINGER_MS, lowered only by tests (a 30 s wait cannot be tested in a unit test). */
export const linger = { ms: LINGER_MS };
/** Queued control bytes toward a peer that does not read before the connection is dropped. */
export const MAX_CONTROL_QUEUE_BYTES = 1024 * 1024;

/** Traffic counters of one app, shared by its streams. */
export interface Counters {
  connections: number;
  bytesIn: number;
  bytesOut: number;
}

/** A Bun socket carrying an Endpoint (sockets.ts attaches these). */
export type Sock = Socket<Endpoint>;

/** One side of a connection: its transport, its outgoing queue, and where its incoming bytes go. */
export class Endpoint {
  socket: Transport | null = null;
  /** Where bytes read from this socket are forwarded; null while the owner parses frames. */
  peer: Endpoint | null = null;
  /** Receives incoming chunks while `peer` is null (handshakes and control traffic). */
  onData: ((ep: Endpoint, chunk: Uint8Array) => void) | null = null;
  /**
   * While piped: called when this side's incoming direction has ended (its FIN, or
   * `endAfter` bytes relayed) instead of forwarding a FIN to the peer.
   */
  onEnd: ((ep: Endpoint) => void) | null = null;
  /** Called once when the socket has closed. */
  onClose: ((ep: Endpoint, aborted: boolean) => void) | null = null;
  /** Called once when the socket opens (outgoing connections; after a verified handshake with TLS). */
  onOpen: ((ep: Endpoint) => void) | null = null;
  /** Called when a TLS peer fails verification. */
  onTlsError: ((ep: Endpoint, message: string) => void) | null = null;
  /** Counts user traffic: bytes read here are `bytesIn`, bytes written here `bytesOut`. */
  stats: Counters | null = null;
  /** Owner's state (session, app, work-connection phase). */
  tag: unknown = null;
  /** The stream this socket carries (stream.ts), while it carries one. */
  stream: StreamEnds | null = null;
  /** The bandwidth limit that bytes read here spend (throttle.ts, set with `limitBy`); null: none. */
  limit: Throttle | null = null;
  closed = false;
  /** Counted in `sockets.open`. */
  counted = false;
  readEnded = false;
  writeEnded = false;
  /** Bytes read here and relayed to the peer since the last `pipe`. */
  relayed = 0;
  /**
   * A FIN here does not end the incoming direction; only the byte count told by `endAfter` does
   * (work connections: a killed peer's kernel sends a FIN too, so a FIN proves nothing).
   */
  countedEnd = false;
  /** Where the incoming direction ends (see `endAfter`); Infinity while unknown. */
  #endAt = Infinity;
  /** The incoming direction has ended since the last `pipe` (its FIN or its count), and was passed on. */
  #inputDone = false;
  /** Bytes not yet taken by the kernel; null while empty, so that an idle connection carries no array. */
  #queue: Uint8Array[] | null = null;
  #queued = 0;
  #blocked: Endpoint | null = null;
  #paused = false;
  /** Bandwidth limits holding reading back now (an app's and its group's; independent of backpressure's #paused). */
  #throttled = 0;
  #finPending = false;
  #closePending = false;
  /** Close with RST rather than FIN once flushed: the other side was reset, and a clean FIN would hide the truncation. */
  #abortPending = false;
  #linger: Timer | null = null;
  /** A header held back to leave in the same write as the next relayed chunk (see `hold`). */
  #held: Uint8Array | null = null;

  /** Whether reading from this socket is paused (backpressure, or waiting for a partner). */
  get paused(): boolean {
    return this.#paused;
  }

  /** Bytes waiting in this endpoint's outgoing queue. */
  get queued(): number {
    return this.#queued;
  }

  /** Binds a transport that has just opened, and writes what was queued before it existed. */
  attach(socket: Transport): void {
    this.socket = socket;
    if (this.#paused || this.#throttled > 0) socket.pause();
    this.#flush();
  }

  /** Queues or writes relayed bytes; pauses `source` when this side falls behind. */
  write(chunk: Uint8Array, source: Endpoint | null): void {
    if (this.closed || this.writeEnded || this.#finPending || this.#closePending) return;
    if (this.stats) this.stats.bytesOut += chunk.length;
    if (this.#held) chunk = this.#joinHeld(chunk);
    if (this.#queued === 0 && this.socket) {
      const n = this.socket.write(chunk);
      if (n === chunk.length || n < 0) return; // n < 0: closed, and `close` will follow.
      chunk = chunk.subarray(n);
    }
    (this.#queue ??= []).push(chunk);
    this.#queued += chunk.length;
    if (source && this.#queued > HIGH_WATER_BYTES && !this.#blocked) {
      this.#blocked = source;
      source.pause();
    }
  }

  /**
   * Holds `header` back so that it leaves in one write (one packet, one wakeup of
   * the peer) with the next chunk relayed here; `release`, a FIN or a clean close
   * send it alone. A frame that introduces a stream this way costs no write of its own.
   */
  hold(header: Uint8Array): void {
    this.#held = this.#held ? concat(this.#held, header) : header;
  }

  /** Sends a held header now, if one is held. */
  release(): void {
    const held = this.#held;
    if (!held) return;
    this.#held = null;
    this.write(held, null);
  }

  /** Whether a header is held. */
  get holding(): boolean {
    return this.#held !== null;
  }

  #joinHeld(chunk: Uint8Array): Uint8Array {
    const held = this.#held!;
    this.#held = null;
    return concat(held, chunk);
  }

  /** Sends one control frame; a peer that lets MAX_CONTROL_QUEUE_BYTES pile up is cut off. */
  send(frame: Uint8Array): void {
    this.write(frame, null);
    if (this.#queued > MAX_CONTROL_QUEUE_BYTES) this.destroy();
  }

  /** Stops reading from this socket (backpressure, or waiting for a partner). */
  pause(): void {
    this.#paused = true;
    this.socket?.pause();
  }

  /** Resumes reading from this socket. */
  resume(): void {
    if (!this.#paused) return; // a native call saved per stream that never waited
    this.#paused = false;
    if (this.#throttled === 0) this.socket?.resume();
  }

  /** Bytes read here spend `limit` from now on (null: none). */
  limitBy(limit: Throttle | null): void {
    if (this.limit === limit) return;
    this.limit?.leave(this);
    this.limit = limit;
    limit?.join(this);
  }

  /** One bandwidth limit starts (true) or stops (false) holding reading back; backpressure keeps its own say. */
  throttle(on: boolean): void {
    this.#throttled += on ? 1 : -1;
    if (on && this.#throttled === 1) this.socket?.pause();
    else if (!on && this.#throttled === 0 && !this.#paused) this.socket?.resume();
  }

  /** Joins two endpoints so that bytes flow both ways, and delivers `pending` (bytes already read from `this`) first. */
  pipe(other: Endpoint, pending?: Uint8Array): void {
    this.peer = other;
    other.peer = this;
    this.onData = null;
    other.onData = null;
    if (pending && pending.length) this.#relay(pending);
    if (this.readEnded && this.peer === other) this.#inputEnded();
    if (other.readEnded && other.peer === this) other.#inputEnded();
  }

  /** Relays bytes read from this socket before it had a peer (they came behind a frame), counted like any others. */
  forward(chunk: Uint8Array): void {
    if (chunk.length && this.peer) this.#relay(chunk);
  }

  /** Forwards one chunk read from this socket to the peer, counting it against `endAfter`. */
  #relay(chunk: Uint8Array): void {
    this.relayed += chunk.length;
    if (this.stats) this.stats.bytesIn += chunk.length;
    // More bytes than the sender announced: the stream cannot be told apart from the next one.
    if (this.relayed > this.#endAt) return this.#resetBoth();
    this.peer!.write(chunk, this);
    if (this.limit !== null) this.limit.spend(chunk.length);
    if (this.relayed === this.#endAt) this.#counted();
  }

  /** Every byte `endAfter` announced has been relayed: the incoming direction is complete. */
  #counted(): void {
    this.#endAt = Infinity;
    this.#passEnd();
  }

  /** This socket sent a FIN. */
  #inputEnded(): void {
    if (this.#inputDone) return;
    // A FIN before every announced byte, or one that no count confirms: the sender was cut short
    // (or cannot be told apart from one that was), and a clean FIN would hide it.
    if (this.countedEnd || (this.#endAt !== Infinity && this.relayed < this.#endAt)) return this.#resetBoth();
    this.#passEnd();
  }

  #passEnd(): void {
    this.#inputDone = true;
    if (this.onEnd) this.onEnd(this);
    else this.peer?.shutdownWhenFlushed();
  }

  /** Resets this connection and its peer: our own reset is not reported as one, so the peer is told directly. */
  #resetBoth(): void {
    this.peer?.reset();
    this.reset();
  }

  /**
   * Ends this side's incoming direction once `total` bytes have been relayed since
   * `pipe` (an end told out of band, not by a FIN). False if more have come already.
   */
  endAfter(total: number): boolean {
    if (this.relayed > total) return false;
    if (this.relayed === total) this.#counted();
    else this.#endAt = total;
    return true;
  }

  /**
   * Parts this endpoint from its peer without closing either: a work connection
   * going back to its pool, its stream finished. A side paused by the other is resumed.
   */
  unpipe(): void {
    const other = this.peer;
    this.#detach();
    if (!other) return;
    other.#detach();
    if (this.#blocked === other) {
      this.#blocked = null;
      other.resume();
    }
    if (other.#blocked === this) {
      other.#blocked = null;
      this.resume();
    }
  }

  /** Forgets the peer and the stream's byte counts, ready for the next `pipe`. */
  #detach(): void {
    this.peer = null;
    this.onEnd = null;
    this.relayed = 0;
    this.#endAt = Infinity;
    this.#inputDone = false;
    // A reused work connection carries the next stream free of this one's limit.
    this.limitBy(null);
  }

  /** Sends FIN once the queue is empty; reading goes on (a half-close). */
  shutdownWhenFlushed(): void {
    if (this.writeEnded || this.closed) return;
    this.release();
    if (this.#queued === 0 && this.socket) {
      this.writeEnded = true;
      this.socket.shutdown();
      this.#closeIfDone();
    } else this.#finPending = true;
  }

  /** Closes once the queue is empty (with RST when `abort`); a peer that takes no bytes for LINGER_MS is cut. */
  endWhenFlushed(abort = false): void {
    if (this.closed) return;
    if (abort) this.#held = null;
    else this.release();
    if (this.#queued === 0 && this.socket) {
      if (abort) this.socket.terminate();
      else this.socket.end();
      return;
    }
    if (!this.socket) return this.destroy();
    this.#closePending = true;
    this.#abortPending ||= abort;
    this.#linger ??= setTimeout(() => this.reset(), linger.ms);
  }

  /** Closes now, dropping anything queued. */
  destroy(): void {
    if (this.closed) return;
    this.#held = null;
    this.#queue = null;
    this.#queued = 0;
    if (this.socket) this.socket.end();
    else this.#closed();
  }

  /** Resets the connection (RST), for streams that are cut rather than finished. */
  reset(): void {
    if (this.closed) return;
    this.#held = null;
    this.#queue = null;
    this.#queued = 0;
    if (this.socket) this.socket.terminate();
    else this.#closed();
  }

  #flush(): void {
    const socket = this.socket!;
    const queue = this.#queue;
    while (queue && queue.length) {
      const chunk = queue[0]!;
      const n = socket.write(chunk);
      if (n < 0) return;
      this.#queued -= n;
      if (n > 0) this.#linger?.refresh();
      if (n < chunk.length) {
        queue[0] = chunk.subarray(n);
        return;
      }
      queue.shift();
    }
    this.#queue = null;
    const blocked = this.#blocked;
    if (blocked) {
      this.#blocked = null;
      blocked.resume();
    }
    if (this.#closePending) {
      if (this.#abortPending) socket.terminate();
      else socket.end();
    } else if (this.#finPending) {
      this.#finPending = false;
      this.writeEnded = true;
      socket.shutdown();
      this.#closeIfDone();
    }
  }

  #closeIfDone(): void {
    if (this.readEnded && this.writeEnded) this.socket?.end();
  }

  #closed(aborted = false): void {
    if (this.closed) return;
    // Bun reports a FIN that arrives after our own shutdown() as a clean close with no `end` event.
    if (!aborted && this.writeEnded && !this.readEnded && this.peer) {
      this.readEnded = true;
      this.#inputEnded();
    }
    this.closed = true;
    this.limit?.leave(this);
    if (this.#linger) clearTimeout(this.#linger);
    // Bytes still queued toward this socket are lost with it.
    const dropped = this.#queued > 0;
    this.#queue = null;
    this.#queued = 0;
    this.#held = null;
    const peer = this.peer;
    if (peer && !peer.closed) {
      // Nothing more can be read from here nor delivered here: flush what we sent and close the other side,
      // cleanly only if both directions had ended and nothing was dropped; otherwise with a reset.
      peer.#blocked = null;
      peer.endWhenFlushed(aborted || dropped || !this.#inputDone || !peer.#inputDone);
    }
    const blocked = this.#blocked;
    this.#blocked = null;
    if (blocked && !blocked.closed) blocked.resume();
    this.onClose?.(this, aborted);
    this.onClose = null;
  }

  /** Socket event plumbing, called by the shared handler only. */
  static readonly events = {
    data(ep: Endpoint, chunk: Uint8Array): void {
      if (ep.peer) ep.#relay(chunk);
      else ep.onData?.(ep, chunk);
    },
    drain(ep: Endpoint): void {
      if (ep.socket) ep.#flush();
    },
    end(ep: Endpoint): void {
      ep.readEnded = true;
      if (ep.peer) ep.#inputEnded();
      else if (!ep.onData) return; // not yet piped: `pipe` forwards the FIN
      // A framed connection that stops sending is finished; what we still had queued for it (the
      // last bytes of a stream that has just ended on a reused work connection) goes out first.
      else ep.endWhenFlushed();
      ep.#closeIfDone();
    },
    closed(ep: Endpoint, aborted: boolean): void {
      ep.#closed(aborted);
    },
  };
}


/** An endpoint callback that runs `a` (if any), then `b`: for adding a close hook to one already set. */
export function chain(a: ((ep: Endpoint, aborted: boolean) => void) | null, b: (ep: Endpoint, aborted: boolean) => void): (ep: Endpoint, aborted: boolean) => void {
  return (ep, aborted) => {
    a?.(ep, aborted);
    b(ep, aborted);
  };
}
