/**
 * A UDP app on the server: its public UDP port and one work connection kept for
 * good, carrying every datagram as a frame that names the public peer
 * (protocol.ts), so datagram boundaries survive and replies find their peer; a
 * lost work connection is replaced. The client's side is lib/client/udp.ts.
 */
import type { udp } from "bun";
import { datagramFrameBytes, DatagramReader, encodeDatagramInto, FrameType, MAX_DATAGRAM_BYTES, type FrameReader, type ProtocolError } from "../../../protocol.ts";
import { AccessList } from "../../guard.ts";
import { log } from "../../log.ts";
import type { AppCounters } from "../../metrics/counters.ts";
import { DatagramBatcher, DropLog, errorOf, MAX_SWEEP_MS } from "../../net/datagrams.ts";
import { tuneReceiveBuffer, watchKernelDrops } from "../../net/udp-buffers.ts";
import { UDP_RECEIVE_BUFFER_BYTES } from "../../config/defaults.ts";
import { chain, type Endpoint } from "../../net/endpoint.ts";
import type { AppRecord } from "../../registry/types.ts";
import type { AppHost, PublicApp } from "./app.ts";

/** What a UDP app needs of its registry record. */
type UdpAppRecord = Pick<AppRecord, "name" | "remotePort" | "allowIPs" | "denyIPs" | "maxConnections">;

/** Bytes queued toward another node's channel past which its replies are dropped (as a backed-up work connection's). */
export const RELAY_MAX_QUEUED = 1024 * 1024;

/** Counters of a UDP app on the server (connections = live peers). */
type UdpAppStats = Pick<AppCounters, "connections" | "bytesIn" | "bytesOut" | "denied" | "overLimit" | "dropped" | "accepted" | "datagramsIn" | "datagramsOut"> & Partial<Pick<AppCounters, "kernelDropped">>;

/** Server side of a UDP app: the public socket and the work connection carrying its datagrams. */
export class UdpPublic {
  work: Endpoint | null = null;
  readonly #peers = new Map<string, { seen: number }>(); // "addr|port" -> last seen, for the API's connection count
  /** The peer of the last datagram or reply: runs of one peer's datagrams then build no key and do no lookup each. */
  #last: { address: string; port: number; peer: { seen: number } } | null = null;
  readonly #batcher = new DatagramBatcher(() => this.work);
  readonly #drops: DropLog;
  #sweep: Timer;
  #socket: udp.Socket<"uint8array"> | null = null;
  #reader = new DatagramReader(() => {});
  #replies: (Uint8Array | number | string)[] = [];
  /** Stops counting the kernel's drops at the public socket. */
  #unwatch: (() => void) | null = null;
  /** Peers another node of a cluster carried here ("addr|port" -> the link's data connection): replies go back that way. */
  readonly #relayOf = new Map<string, Endpoint>();

  private constructor(
    readonly name: string,
    private readonly stats: UdpAppStats,
    private access: AccessList,
    private maxPeers: number,
    private readonly idleMs: number,
    fields: Record<string, unknown>,
  ) {
    this.#drops = new DropLog(fields);
    this.#sweep = setInterval(() => this.#expire(), Math.min(MAX_SWEEP_MS, idleMs / 4));
  }

  /** New peers are judged by `access` and `maxPeers` from now on (peers already heard from stay). */
  limit(access: AccessList, maxPeers: number): void {
    this.access = access;
    this.maxPeers = maxPeers;
  }

  /** Binds the public port with a receive buffer of `receiveBuffer` bytes; returns the app, or why the port cannot be bound. */
  static async open(bindAddr: string, rec: UdpAppRecord, stats: UdpAppStats, idleMs: number, fields: Record<string, unknown>, receiveBuffer = UDP_RECEIVE_BUFFER_BYTES): Promise<UdpPublic | string> {
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
      const socket = app.#socket;
      await tuneReceiveBuffer((socket as unknown as { fd: number }).fd, receiveBuffer, fields);
      // Datagrams the kernel drops before we see them (a full receive buffer) are counted and logged too.
      app.#unwatch = watchKernelDrops((socket as unknown as { fd: number }).fd, (n) => {
        stats.kernelDropped = (stats.kernelDropped ?? 0) + n;
        stats.dropped += n;
        app.#drops.note("receive buffer full: the kernel dropped them (udpReceiveBuffer)", n);
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
    const peer = this.#peer(address, port) ?? this.#admit(address, port);
    if (!peer) return;
    peer.seen = performance.now();
    if (!this.#batcher.add(address, port, payload)) return this.#drop(this.work && !this.work.closed ? "work connection backed up" : "no work connection");
    this.stats.bytesIn += payload.length; // relayed bytes only: a dropped datagram counts in `dropped`
    this.stats.datagramsIn++;
  }

  /** The peer at `address:port` if it is known (sent to this app and not expired). */
  #peer(address: string, port: number): { seen: number } | undefined {
    const last = this.#last;
    if (last && last.port === port && last.address === address) return last.peer;
    const peer = this.#peers.get(`${address}|${port}`);
    if (peer) this.#last = { address, port, peer };
    return peer;
  }

  /** A new peer: the access list and the peer limit decide before anything is relayed. */
  #admit(address: string, port: number): { seen: number } | undefined {
    if (!this.access.allows(address)) return void this.stats.denied++;
    if (this.maxPeers > 0 && this.#peers.size >= this.maxPeers) return void this.stats.overLimit++;
    const peer = { seen: 0 };
    this.#peers.set(`${address}|${port}`, peer);
    this.#last = { address, port, peer };
    this.stats.connections = this.#peers.size;
    this.stats.accepted++;
    return peer;
  }

  /** Datagrams dropped so far (too large, no or a backed-up work connection, replies to unknown peers); replies the public socket could not send; a batch of replies that threw counts once. */
  get dropped(): number {
    return this.stats.dropped;
  }

  #drop(reason: string, n = 1): void {
    this.stats.dropped += n;
    this.#drops.note(reason, n);
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
      if (!this.#peer(address, port)) return this.#drop("reply to an unknown peer");
      const relay = this.#relayOf.size ? this.#relayOf.get(`${address}|${port}`) : undefined;
      if (relay) return this.#toRelay(relay, address, port, payload);
      this.stats.bytesOut += payload.length;
      this.stats.datagramsOut++;
      this.#replies.push(payload, port, address);
    });
  }

  /** Sends the replies in a chunk from the client to their peers, in one batch. */
  fromClient(chunk: Uint8Array): ProtocolError | null {
    const err = this.#reader.push(chunk);
    if (this.#replies.length && this.#socket) {
      try {
        // sendMany stops at a full send buffer (a busy interface): what it did not send is lost, and counted.
        const unsent = this.#replies.length / 3 - this.#socket.sendMany(this.#replies);
        if (unsent > 0) this.#drop("public socket send buffer full", unsent);
      } catch (err) {
        // An ICMP error from an earlier send can surface here; the peer is gone, the app is not.
        this.#drop(`sending to peers: ${(err as Error).message}`);
      }
    }
    this.#replies = [];
    return err;
  }

  /**
   * Datagrams another node of a cluster received for this app come on `ep` as datagram frames (with
   * their peer's address), are relayed as if they had come to this port, and their replies go back on
   * `ep`. The other node applied the access list; this one applies it again (it is cheap).
   */
  addRelay(ep: Endpoint, first: Uint8Array): void {
    const reader = new DatagramReader((address, port, payload) => {
      this.#relayOf.set(`${address}|${port}`, ep);
      this.#fromPeer(payload, port, address);
    });
    ep.onData = (e, chunk) => {
      const err = reader.push(chunk);
      if (err) {
        log.warn("bad datagram frame from another node; closing its channel", { app: this.name, error: err.message });
        e.destroy();
      }
    };
    ep.onClose = () => {
      for (const [k, r] of this.#relayOf) if (r === ep) this.#relayOf.delete(k);
    };
    if (first.length) ep.onData(ep, first);
  }

  #toRelay(ep: Endpoint, address: string, port: number, payload: Uint8Array): void {
    // As on a work connection: a channel backed up past RELAY_MAX_QUEUED drops, it never queues without bound.
    if (ep.closed || ep.queued > RELAY_MAX_QUEUED) return this.#drop("channel to another node backed up");
    const frame = new Uint8Array(datagramFrameBytes(address, payload));
    encodeDatagramInto(frame, 0, address, port, payload);
    ep.send(frame);
    this.stats.bytesOut += payload.length;
    this.stats.datagramsOut++;
  }

  #expire(): void {
    const deadline = performance.now() - this.idleMs;
    for (const [key, p] of this.#peers) if (p.seen < deadline) this.#peers.delete(key);
    this.#last = null;
    this.stats.connections = this.#peers.size;
  }

  /** Closes the public socket and the work connection. */
  close(): void {
    clearInterval(this.#sweep);
    this.#unwatch?.();
    this.#socket?.close();
    this.#socket = null;
    this.#peers.clear();
    this.#last = null;
    this.stats.connections = 0;
    const w = this.work;
    this.work = null;
    w?.destroy();
  }
}

/** Binds the app's UDP port; a string says why it cannot be. */
export async function openUdp(rec: AppRecord, host: AppHost): Promise<PublicApp | string> {
  const group = host.groupName;
  const bound = await UdpPublic.open(host.settings.bindAddr, rec, host.stats(rec.name), host.settings.udpIdleTimeoutMs, { group, app: rec.name }, host.settings.udpReceiveBuffer);
  if (typeof bound === "string") return bound;
  const udp = bound;
  let closed = false;
  let current = rec;
  const app: PublicApp = {
    get record() {
      return current;
    },
    update(next: AppRecord): boolean {
      if (next.remotePort !== current.remotePort || next.type !== current.type) return false;
      current = next;
      udp.limit(new AccessList(next.allowIPs, next.denyIPs), next.maxConnections);
      return true;
    },
    relay(ep: Endpoint, first: Uint8Array): void {
      udp.addRelay(ep, first);
    },
    bindWork(work: Endpoint, reader: FrameReader): void {
      udp.attach(work);
      let acked = false;
      work.onData = (ep, chunk) => {
        if (!acked) {
          reader.push(chunk);
          const res = reader.next();
          if (!res) return;
          if (!res.ok || res.msg.type !== FrameType.WorkAck || !res.msg.ok) {
            log.warn("udp work connection refused", { group, app: rec.name, reason: res.ok && res.msg.type === FrameType.WorkAck ? res.msg.message : "bad answer" });
            return ep.destroy();
          }
          acked = true;
          chunk = reader.rest();
        }
        const err = udp.fromClient(chunk);
        if (err) {
          log.warn("bad datagram frame from client", { group, app: rec.name, error: err.message });
          ep.destroy();
        }
      };
      work.onClose = chain(work.onClose, () => {
        if (udp.work === work) udp.work = null;
        // Still served: get another work connection.
        if (!closed) host.wantWork(app);
      });
    },
    close(): void {
      closed = true;
      udp.close();
    },
  };
  return app;
}
