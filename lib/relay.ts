/**
 * The relay: the one module that writes to sockets.
 *
 * Bun's `socket.write` does not buffer (BUN-NOTES.md): it returns how many
 * bytes the kernel took. Each Endpoint keeps the tail in a small queue,
 * pauses the socket feeding it when the queue passes HIGH_WATER_BYTES and
 * resumes it on `drain` once the queue is empty. A FIN from one side is
 * forwarded with `shutdown()` after the queue toward the other side drains,
 * unless the owner takes the end itself (`onEnd`: a reusable work connection
 * tells a stream's end on the control connection instead). No Promise and no
 * timer is created per chunk.
 */
import type { Socket, SocketHandler } from "bun";

/** Queued bytes toward one socket before its source is paused; with one more chunk (at most 512 KiB in Bun) this bounds memory per direction. */
export const HIGH_WATER_BYTES = 256 * 1024;
/** How long a closing side may make no progress flushing its last bytes before it is cut: a user that stopped reading must not hold a dead stream forever. */
export const LINGER_MS = 30_000;
/** The linger in force: LINGER_MS, lowered only by tests (a 30 s wait cannot be tested in a unit test). */
export const linger = { ms: LINGER_MS };
/** Idle time before TCP keepalive probes on control and work connections (both sides): a pooled connection whose path died is found. */
export const KEEPALIVE_MS = 30_000;
/** Queued control bytes toward a peer that does not read before the connection is dropped. */
export const MAX_CONTROL_QUEUE_BYTES = 1024 * 1024;

/** Descriptors kept free for the registry, the API, UDP sockets and outgoing dials. */
export const FD_RESERVE = 64;
/** Least number of sockets allowed whatever the file limit says. */
const MIN_SOCKETS = 32;

/** The soft limit on open files (Linux /proc), or 1024 where it cannot be read. Bun's file API, not node:fs: see lib/files.ts. */
async function fileLimit(): Promise<number> {
  const text = await Bun.file("/proc/self/limits")
    .text()
    .catch(() => ""); // not Linux
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(text);
  if (m) return m[1] === "unlimited" ? 1 << 20 : Number(m[1]);
  return 1024;
}

/**
 * Open TCP sockets of this process and the most it accepts. Bun's listener spins at
 * 100 % CPU when accept() fails with EMFILE (BUN-NOTES.md), so accepted sockets beyond
 * `max` are closed at once, while descriptors are still left.
 */
export const sockets = { open: 0, max: Math.max(MIN_SOCKETS, (await fileLimit()) - FD_RESERVE), refused: 0 };
let lastRefusalLog = 0;

/** Traffic counters of one app, shared by its streams. */
export interface Counters {
  connections: number;
  bytesIn: number;
  bytesOut: number;
}

/** A socket as the relay sees it. */
export type Sock = Socket<Endpoint>;

/** One side of a connection: its socket, its outgoing queue, and where its incoming bytes go. */
export class Endpoint {
  socket: Sock | null = null;
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

  /** Binds a socket that has just opened, and writes what was queued before it existed. */
  attach(socket: Sock): void {
    this.socket = socket;
    if (this.#paused) socket.pause();
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
    this.socket?.resume();
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

/** `a` then `b` in one new buffer. */
function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

// Endpoints whose held header waits for the event loop's next poll: a user who
// writes right after connecting has its first bytes read by then, and they leave
// with the header. setImmediate runs before the poll, so a header is released on
// the second turn after it was held: at most one loop turn of delay for a user who
// waits for the app to speak first.
let heldNew: Endpoint[] = [];
let heldOld: Endpoint[] = [];
let releaseScheduled = false;

function releaseTurn(): void {
  for (const ep of heldOld) ep.release();
  heldOld = heldNew;
  heldNew = [];
  if (heldOld.length) setImmediate(releaseTurn);
  else releaseScheduled = false;
}

/** Holds `header` on `ep` until its next relayed chunk or, at the latest, the event loop's next poll has passed. */
export function holdUntilNextPoll(ep: Endpoint, header: Uint8Array): void {
  ep.hold(header);
  heldNew.push(ep);
  if (!releaseScheduled) {
    releaseScheduled = true;
    setImmediate(releaseTurn);
  }
}

/** Checks a TLS peer once its handshake is done; returns why it is refused, or null. */
export type TlsVerifier = (socket: Sock, authorizationError: Error | null) => string | null;

/** An endpoint callback that runs `a` (if any), then `b`: for adding a close hook to one already set. */
export function chain(a: ((ep: Endpoint, aborted: boolean) => void) | null, b: (ep: Endpoint, aborted: boolean) => void): (ep: Endpoint, aborted: boolean) => void {
  return (ep, aborted) => {
    a?.(ep, aborted);
    b(ep, aborted);
  };
}

/**
 * A socket handler shared by every socket of one listener or dialer.
 * `create` makes the Endpoint for an accepted socket; dialed sockets carry
 * theirs in `data` already. With `verify` (TLS dialers), `onOpen` waits for
 * the handshake and a verified peer: in Bun `open` fires before the TLS
 * handshake, and nothing may be sent before the server is verified.
 */
export function relayHandler(create?: (socket: Sock) => Endpoint, verify?: TlsVerifier): SocketHandler<Endpoint> {
  return {
    open(socket) {
      if (!socket.data && sockets.open >= sockets.max) {
        sockets.refused++;
        if (Date.now() - lastRefusalLog > 5_000) {
          lastRefusalLog = Date.now();
          console.error(`relay: ${sockets.open} sockets open, the most this process may hold (file limit less ${FD_RESERVE}); refusing new connections (${sockets.refused} so far)`);
        }
        return socket.terminate();
      }
      const ep = socket.data ?? create!(socket);
      socket.data = ep;
      ep.counted = true;
      sockets.open++;
      if (ep.closed) {
        // Abandoned before it opened (a connect timeout fired).
        socket.end();
        return;
      }
      ep.attach(socket);
      if (!verify) ep.onOpen?.(ep);
    },
    handshake: verify
      ? (socket, _success, authorizationError) => {
          const ep = socket.data;
          const refused = verify(socket, authorizationError);
          if (refused) {
            ep.onTlsError?.(ep, refused);
            socket.terminate();
          } else if (!ep.closed) ep.onOpen?.(ep);
        }
      : undefined,
    data(socket, chunk) {
      Endpoint.events.data(socket.data, chunk);
    },
    drain(socket) {
      Endpoint.events.drain(socket.data);
    },
    end(socket) {
      Endpoint.events.end(socket.data);
    },
    close(socket, err) {
      const ep = socket.data;
      if (!ep) return;
      if (ep.counted) {
        ep.counted = false;
        sockets.open--;
      }
      // An error here is a reset (ECONNRESET and the like): pass it on as one.
      Endpoint.events.closed(ep, !!err);
    },
    error(socket, err) {
      // A handler threw (a bug): never leave the connection half-handled.
      console.error(`relay: handler error: ${err?.message ?? err}`);
      socket.terminate();
    },
    connectError(socket) {
      if (socket.data) Endpoint.events.closed(socket.data, false);
    },
  };
}
