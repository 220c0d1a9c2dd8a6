/**
 * UDP apps. The server binds the app's public UDP port and carries every
 * datagram over one work connection, framed with the public peer's address
 * (protocol.ts), so datagram boundaries survive and replies find their peer.
 * The client keeps one connected local socket per public peer, so the local
 * app sees distinct peers; idle peers expire and the oldest is evicted at the cap.
 */
import type { udp } from "bun";
import { DatagramReader, encodeDatagramInto, MAX_DATAGRAM_BYTES, type ProtocolError } from "../protocol.ts";
import { log } from "./log.ts";
import { UDP_IDLE_TIMEOUT_S } from "./config/defaults.ts";
import { AccessList } from "./guard.ts";
import type { Counters, Endpoint } from "./net/endpoint.ts";

/** What a UDP app needs of its registry record. */
interface UdpAppRecord {
  readonly name: string;
  readonly remotePort: number;
  readonly allowIPs: readonly string[];
  readonly denyIPs: readonly string[];
  readonly maxConnections: number;
}

/** Counters of a UDP app on the server (connections = live peers). */
interface UdpAppStats extends Counters {
  denied: number;
  overLimit: number;
  dropped: number;
}

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
/** Longest gap between idle sweeps. */
const MAX_SWEEP_MS = 1_000;

/** Counters of one UDP app on the client, for logs and tests. */
export interface UdpCounters {
  peers: number;
  expired: number;
  evicted: number;
  dropped: number;
  localErrors: number;
}

/** Logs drops at most once per DROP_LOG_INTERVAL_MS, with the count since the last line; drops after a line are reported when the interval ends. */
class DropLog {
  #last = 0;
  #since = 0;
  #reason = "";
  #tail: Timer | null = null;
  constructor(private readonly fields: Record<string, unknown>) {}
  note(reason: string): void {
    this.#since++;
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

function errorOf(a: unknown, b: unknown): Error {
  // Bun passes (socket, error) by its types but (error) with `this` as the socket at run time (BUN-NOTES.md).
  return (b ?? a) as Error;
}

/** Server side of a UDP app: the public socket and the work connection carrying its datagrams. */
export class UdpPublic {
  work: Endpoint | null = null;
  readonly #peers = new Map<string, number>(); // "addr|port" -> last seen, for the API's connection count
  readonly #batcher = new DatagramBatcher(() => this.work);
  readonly #drops: DropLog;
  #sweep: Timer;
  #socket: udp.Socket<"uint8array"> | null = null;
  #reader = new DatagramReader(() => {});
  #replies: (Uint8Array | number | string)[] = [];

  private constructor(
    readonly name: string,
    private readonly stats: UdpAppStats,
    private readonly access: AccessList,
    private readonly maxPeers: number,
    private readonly idleMs: number,
    fields: Record<string, unknown>,
  ) {
    this.#drops = new DropLog(fields);
    this.#sweep = setInterval(() => this.#expire(), Math.min(MAX_SWEEP_MS, idleMs / 4));
  }

  /** Binds the public port; returns the app, or why the port cannot be bound. */
  static async open(bindAddr: string, rec: UdpAppRecord, stats: UdpAppStats, idleMs: number, fields: Record<string, unknown>): Promise<UdpPublic | string> {
    const port = rec.remotePort;
    const app = new UdpPublic(rec.name, stats, new AccessList(rec.allowIPs, rec.denyIPs), rec.maxConnections, idleMs, fields);
    try {
      app.#socket = await Bun.udpSocket({
        hostname: bindAddr,
        port,
        binaryType: "uint8array",
        socket: {
          data: (_s, payload, peerPort, peerAddr) => app.#fromPeer(payload, peerPort, peerAddr),
          error: (a: unknown, b?: unknown) => log.debug("udp socket error", { ...fields, error: errorOf(a, b)?.message }),
        },
      });
      return app;
    } catch (err) {
      clearInterval(app.#sweep);
      return `udp port ${port} cannot be bound (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
    }
  }

  #fromPeer(payload: Uint8Array, port: number, address: string): void {
    // IPv6 allows up to 65,527 bytes; the protocol carries at most MAX_DATAGRAM_BYTES.
    if (payload.length > MAX_DATAGRAM_BYTES) return this.#drop("datagram larger than 65,507 bytes");
    const key = `${address}|${port}`;
    if (!this.#peers.has(key)) {
      // A new peer: the access list and the peer limit decide before anything is relayed.
      if (!this.access.allows(address)) return void this.stats.denied++;
      if (this.maxPeers > 0 && this.#peers.size >= this.maxPeers) return void this.stats.overLimit++;
      this.stats.connections = this.#peers.size + 1;
    }
    this.#peers.set(key, performance.now());
    if (!this.#batcher.add(address, port, payload)) return this.#drop(this.work && !this.work.closed ? "work connection backed up" : "no work connection");
    this.stats.bytesIn += payload.length; // relayed bytes only: a dropped datagram counts in `dropped`
  }

  /** Datagrams dropped so far (too large, no or a backed-up work connection, replies to unknown peers); a failed batch of replies counts once. */
  get dropped(): number {
    return this.stats.dropped;
  }

  #drop(reason: string): void {
    this.stats.dropped++;
    this.#drops.note(reason);
  }

  /** The bound public port. */
  get port(): number {
    return this.#socket?.port ?? 0;
  }

  /** Binds a new work connection; datagram frames it carries back are fed to `fromClient`. */
  attach(work: Endpoint): void {
    this.work = work;
    this.#batcher.flush();
    this.#reader = new DatagramReader((address, port, payload) => {
      // Replies go only to peers that sent to this app (and so passed its access list): a client
      // must not make the server send datagrams to anyone it likes.
      if (!this.#peers.has(`${address}|${port}`)) return this.#drop("reply to an unknown peer");
      this.stats.bytesOut += payload.length;
      this.#replies.push(payload, port, address);
    });
  }

  /** Sends the replies in a chunk from the client to their peers, in one batch. */
  fromClient(chunk: Uint8Array): ProtocolError | null {
    const err = this.#reader.push(chunk);
    if (this.#replies.length && this.#socket) {
      try {
        this.#socket.sendMany(this.#replies);
      } catch (err) {
        // An ICMP error from an earlier send can surface here; the peer is gone, the app is not.
        this.#drop(`sending to peers: ${(err as Error).message}`);
      }
    }
    this.#replies = [];
    return err;
  }

  #expire(): void {
    const deadline = performance.now() - this.idleMs;
    for (const [key, seen] of this.#peers) if (seen < deadline) this.#peers.delete(key);
    this.stats.connections = this.#peers.size;
  }

  /** Closes the public socket and the work connection. */
  close(): void {
    clearInterval(this.#sweep);
    this.#socket?.close();
    this.#socket = null;
    this.#peers.clear();
    this.stats.connections = 0;
    const w = this.work;
    this.work = null;
    w?.destroy();
  }
}

interface Peer {
  readonly address: string;
  readonly port: number;
  socket: udp.ConnectedSocket<"uint8array"> | null;
  pending: Uint8Array[] | null;
  lastSeen: number;
  closed: boolean;
}

/** Client side of a UDP app on one work connection: a connected local socket per public peer. */
export class UdpLocal {
  readonly counters: UdpCounters = { peers: 0, expired: 0, evicted: 0, dropped: 0, localErrors: 0 };
  readonly reader: DatagramReader;
  readonly #peers = new Map<string, Peer>();
  readonly #batcher: DatagramBatcher;
  readonly #drops: DropLog;
  readonly #sweep: Timer;
  #now = performance.now();

  constructor(
    work: Endpoint,
    private readonly app: { name: string; host: string; port: number },
    private readonly idleMs: number,
    private readonly maxPeers: number,
  ) {
    this.#batcher = new DatagramBatcher(() => work);
    this.#drops = new DropLog({ app: app.name });
    this.reader = new DatagramReader((address, port, payload) => this.#toLocal(address, port, payload));
    this.#sweep = setInterval(() => this.#expire(), Math.min(MAX_SWEEP_MS, idleMs / 4));
  }

  /** Feeds bytes from the work connection. */
  push(chunk: Uint8Array): ProtocolError | null {
    this.#now = performance.now();
    return this.reader.push(chunk);
  }

  #toLocal(address: string, port: number, payload: Uint8Array): void {
    const key = `${address}|${port}`;
    let peer = this.#peers.get(key);
    if (!peer) peer = this.#open(key, address, port);
    peer.lastSeen = this.#now;
    if (peer.socket) this.#send(peer, payload);
    else if (peer.pending && peer.pending.length < UDP_PENDING_PER_PEER) {
      // A copy: the payload is a view of a chunk that is not ours to keep.
      peer.pending.push(payload.slice());
    } else this.#drop("local socket not ready");
  }

  #send(peer: Peer, payload: Uint8Array): void {
    try {
      if (!peer.socket!.send(payload)) this.#drop("local socket buffer full");
    } catch (err) {
      // A connected UDP socket reports an earlier ICMP "port unreachable" by throwing from send().
      this.counters.localErrors++;
      this.#drop(`local app ${this.app.host}:${this.app.port}: ${(err as Error).message}`);
    }
  }

  #open(key: string, address: string, port: number): Peer {
    if (this.#peers.size >= this.maxPeers) this.#evictOldest();
    const peer: Peer = { address, port, socket: null, pending: [], lastSeen: this.#now, closed: false };
    this.#peers.set(key, peer);
    this.counters.peers = this.#peers.size;
    Bun.udpSocket({
      binaryType: "uint8array",
      connect: { hostname: this.app.host, port: this.app.port },
      socket: {
        data: (_s, reply) => {
          peer.lastSeen = performance.now();
          if (reply.length > MAX_DATAGRAM_BYTES) return this.#drop("datagram larger than 65,507 bytes");
          if (!this.#batcher.add(address, port, reply)) this.#drop("work connection backed up");
        },
        error: (a: unknown, b?: unknown) => {
          // ECONNREFUSED here is the ICMP "port unreachable" of a local app that is down.
          this.counters.localErrors++;
          this.#drop(`local app ${this.app.host}:${this.app.port}: ${errorOf(a, b)?.message ?? "error"}`);
        },
      },
    }).then(
      (socket) => {
        if (peer.closed) return socket.close();
        peer.socket = socket;
        for (const p of peer.pending ?? []) this.#send(peer, p);
        peer.pending = null;
      },
      (err: Error) => {
        this.#drop(`cannot open a local socket: ${err.message}`);
        this.#remove(key, peer);
      },
    );
    return peer;
  }

  #drop(reason: string): void {
    this.counters.dropped++;
    this.#drops.note(reason);
  }

  #remove(key: string, peer: Peer): void {
    peer.closed = true;
    peer.socket?.close();
    peer.socket = null;
    peer.pending = null;
    if (this.#peers.get(key) === peer) this.#peers.delete(key);
    this.counters.peers = this.#peers.size;
  }

  #evictOldest(): void {
    let oldestKey = "";
    let oldest: Peer | null = null;
    for (const [key, p] of this.#peers) if (!oldest || p.lastSeen < oldest.lastSeen) [oldestKey, oldest] = [key, p];
    if (oldest) {
      this.counters.evicted++;
      this.#remove(oldestKey, oldest);
    }
  }

  #expire(): void {
    const deadline = performance.now() - this.idleMs;
    for (const [key, p] of this.#peers) {
      if (p.lastSeen < deadline) {
        this.counters.expired++;
        this.#remove(key, p);
      }
    }
  }

  /** Frees every peer. */
  close(): void {
    clearInterval(this.#sweep);
    for (const [key, p] of [...this.#peers]) this.#remove(key, p);
  }
}
