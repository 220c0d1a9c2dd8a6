/**
 * The interfaces around an Endpoint (endpoint.ts): what it relays over (Transport), and
 * how its end callbacks reach the stream it carries (StreamEnds, stream.ts).
 */

/** How the relay's end callbacks reach the stream a socket carries (stream.ts implements it; declared apart from it so the relay imports nothing above it). */
export interface StreamEnds {
  /** The socket this side serves sent its FIN. */
  nearEnded(): void;
  /** Every byte announced on the work connection has been relayed. */
  workEnded(): void;
}

/**
 * What the relay needs of a connection. Bun's TCP and TLS sockets implement it as they
 * are; a stream over another path (peer to peer, through another server) implements it
 * to be relayed, ended and counted the same way. Its owner feeds `Endpoint.events`.
 */
export interface Transport {
  /** Writes what the other end takes now: the bytes taken, or -1 once closed (never buffers: BUN-NOTES.md). */
  write(data: Uint8Array): number;
  /** Stops reading (backpressure). */
  pause(): void;
  /** Reads again. */
  resume(): void;
  /** Sends FIN and keeps reading: a half-close. */
  shutdown(): void;
  /** Closes both ways. */
  end(): void;
  /** Resets (RST): the other end sees an error, never a clean end. */
  terminate(): void;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  /** TCP keepalive probes, where the transport has them. */
  setKeepAlive?(enable: boolean, delayMs: number): boolean;
}
