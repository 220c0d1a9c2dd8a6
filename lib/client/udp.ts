/**
 * A UDP app on the client: one connected local socket per public peer, so the
 * local app sees distinct peers; idle peers expire and the least recently active
 * is evicted at the cap. The server's side is lib/server/apps/udp.ts.
 */
import type { udp } from "bun";
import { DatagramReader, hostPort, MAX_DATAGRAM_BYTES, type ProtocolError } from "../../protocol.ts";
import { log } from "../log.ts";
import { UDP_IDLE_TIMEOUT_S, UDP_RECEIVE_BUFFER_BYTES } from "../config/defaults.ts";
import { tuneReceiveBuffer, watchKernelDrops } from "../net/udp-buffers.ts";
import { DatagramBatcher, DropLog, errorOf, MAX_SWEEP_MS, UDP_PENDING_PER_PEER } from "../net/datagrams.ts";
import type { Endpoint } from "../net/endpoint.ts";

/** A public peer and its local socket. */
interface Peer {
  readonly address: string;
  readonly port: number;
  socket: udp.ConnectedSocket<"uint8array"> | null;
  pending: Uint8Array[] | null;
  /** Datagrams of the chunk being read, sent in one sendMany when it is done (views into the chunk). */
  out: Uint8Array[];
  /** Stops counting the kernel's drops at the local socket. */
  unwatch: (() => void) | null;
  lastSeen: number;
  closed: boolean;
}

/** Counters of one UDP app on the client, for logs and tests. */
export interface UdpCounters {
  peers: number;
  expired: number;
  evicted: number;
  dropped: number;
  localErrors: number;
  /** Replies the kernel dropped at the local sockets (a full receive buffer); also in `dropped`. */
  kernelDropped: number;
}

/** Client side of a UDP app on one work connection: a connected local socket per public peer. */
export class UdpLocal {
  readonly counters: UdpCounters = { peers: 0, expired: 0, evicted: 0, dropped: 0, localErrors: 0, kernelDropped: 0 };
  readonly reader: DatagramReader;
  readonly #peers = new Map<string, Peer>();
  readonly #batcher: DatagramBatcher;
  readonly #drops: DropLog;
  readonly #sweep: Timer;
  #now = performance.now();
  /** Peers with datagrams in `out`, sent at the end of push(). */
  readonly #dirty: Peer[] = [];
  /** The peer of the last datagram: most chunks carry runs of one peer, and this spares a key and a lookup per datagram. */
  #last: Peer | null = null;

  constructor(
    work: Endpoint,
    private readonly app: { name: string; host: string; port: number },
    private readonly idleMs: number,
    private readonly maxPeers: number,
    /** Receive buffer asked for each local socket (udpReceiveBuffer): a burst of replies from the app fits. */
    private readonly receiveBuffer = UDP_RECEIVE_BUFFER_BYTES,
  ) {
    this.#batcher = new DatagramBatcher(() => work);
    this.#drops = new DropLog({ app: app.name });
    this.reader = new DatagramReader((address, port, payload) => this.#toLocal(address, port, payload));
    this.#sweep = setInterval(() => this.#expire(), Math.min(MAX_SWEEP_MS, idleMs / 4));
  }

  /** Feeds bytes from the work connection. */
  push(chunk: Uint8Array): ProtocolError | null {
    this.#now = performance.now();
    const err = this.reader.push(chunk);
    // The payloads are views into this chunk or the reader's store, which stay as they are until the next push.
    for (const peer of this.#dirty) this.#sendAll(peer);
    this.#dirty.length = 0;
    return err;
  }

  #toLocal(address: string, port: number, payload: Uint8Array): void {
    let peer = this.#last;
    if (!peer || peer.port !== port || peer.address !== address || peer.closed) {
      const key = `${address}|${port}`;
      peer = this.#peers.get(key) ?? this.#open(key, address, port);
      this.#last = peer;
    }
    peer.lastSeen = this.#now;
    if (peer.socket) {
      if (peer.out.push(payload) === 1) this.#dirty.push(peer);
    } else if (peer.pending && peer.pending.length < UDP_PENDING_PER_PEER) {
      // A copy: the payload is a view of a chunk that is not ours to keep.
      peer.pending.push(payload.slice());
    } else this.#drop("local socket not ready");
  }

  /** Sends a peer's datagrams of this chunk with one sendMany (one system call for many, not one each). */
  #sendAll(peer: Peer): void {
    const out = peer.out;
    peer.out = [];
    if (!peer.socket) return this.#drop("local socket closed", out.length);
    try {
      const sent = out.length === 1 ? (peer.socket.send(out[0]!) ? 1 : 0) : peer.socket.sendMany(out);
      if (sent < out.length) this.#drop("local socket buffer full", out.length - sent);
    } catch (err) {
      // A connected UDP socket reports an earlier ICMP "port unreachable" by throwing from send().
      this.counters.localErrors++;
      this.#drop(`local app ${hostPort(this.app.host, this.app.port)}: ${(err as Error).message}`, out.length);
    }
  }

  #open(key: string, address: string, port: number): Peer {
    if (this.#peers.size >= this.maxPeers) this.#evictOldest();
    const peer: Peer = { address, port, socket: null, pending: [], out: [], unwatch: null, lastSeen: this.#now, closed: false };
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
          this.#drop(`local app ${hostPort(this.app.host, this.app.port)}: ${errorOf(a, b)?.message ?? "error"}`);
        },
      },
    }).then(
      (socket) => {
        if (peer.closed) return socket.close();
        const fd = (socket as unknown as { fd: number }).fd;
        // In the background: the peer's first datagrams need not wait for it.
        void tuneReceiveBuffer(fd, this.receiveBuffer, { app: this.app.name });
        peer.unwatch = watchKernelDrops(fd, this.#kernelDrops);
        peer.socket = socket;
        peer.out = peer.pending ?? [];
        peer.pending = null;
        this.#sendAll(peer);
      },
      (err: Error) => {
        this.#drop(`cannot open a local socket: ${err.message}`);
        this.#remove(key, peer);
      },
    );
    return peer;
  }

  /** Drops the kernel counted at one of this app's local sockets. */
  readonly #kernelDrops = (n: number): void => {
    this.counters.kernelDropped += n;
    this.#drop("receive buffer full: the kernel dropped replies (udpReceiveBuffer)", n);
  };

  #drop(reason: string, n = 1): void {
    this.counters.dropped += n;
    this.#drops.note(reason, n);
  }

  #remove(key: string, peer: Peer): void {
    peer.closed = true;
    peer.unwatch?.();
    peer.unwatch = null;
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
