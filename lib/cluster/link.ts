/**
 * A link to another node of the cluster (issue 20), from the node a user
 * reached to the node that holds the user's group's session. One control
 * connection per pair of nodes (proved with the cluster token, heartbeats,
 * and each direction's end as a StreamEnd count), and a pool of
 * pre-authenticated data connections, one per forwarded user. A forwarded
 * stream is the same stream unit as a work connection's (net/stream.ts): a
 * FIN proves nothing (a killed node's kernel sends one too), only a count
 * told on the control connection ends a direction; a lost link resets every
 * stream it carried.
 */
import { encode, ErrorCode, FrameReader, FrameType, hostPort, peerDataProof, peerProof, withMagic, type Message } from "../../protocol.ts";
import { log } from "../log.ts";
import { Endpoint } from "../net/endpoint.ts";
import { holdUntilNextPoll } from "../net/hold.ts";
import { relayHandler } from "../net/sockets.ts";
import { Stream, type StreamOwner } from "../net/stream.ts";

/** Idle data connections a link keeps ready, so a forwarded user waits for no connection setup. */
export const PEER_POOL_SIZE = 8;
/** Users waiting for a data connection of one link; more are reset. */
export const MAX_LINK_WAITING = 1024;
/** How long a user waits for a link that is (re)connecting, or for a data connection, before it is reset. */
export const LINK_WAIT_MS = 10_000;
/** Backoff between reconnects of a lost link. */
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5_000;

/** How a link proves itself and keeps alive. */
export interface LinkSettings {
  /** This node's name. */
  readonly node: string;
  readonly clusterToken: string;
  /** Ping interval; the link is dropped when no frame came for 3 of them. */
  readonly heartbeatMs: number;
  readonly poolSize?: number;
  /** TLS toward the peer port (when the cluster runs with [tls]). */
  readonly tls?: { rejectUnauthorized: boolean; ca?: string; serverName?: string };
}

/** A forwarded user's stream: the user is `near`, the data connection `work`. */
class PeerStream extends Stream {
  acked = false;
  /** A StreamEnd count that came before the WorkAck. */
  downBytes = -1;
}

/** The link from this node to `remote` (reached at `host:port`). */
export class PeerLink implements StreamOwner {
  readonly nearName = "user";
  #control: Endpoint | null = null;
  #linkId: Uint8Array | null = null;
  #idle: Endpoint[] = [];
  #dialing = 0;
  #waiting: { user: Endpoint; group: string; app: string; publicAddr: string; since: number }[] = [];
  #waitSweep: Timer | null = null;
  readonly #streams = new Map<number, PeerStream>();
  #seq = 0;
  #stopped = false;
  #backoff = BACKOFF_MIN_MS;
  #lastHeard = 0;
  #pinger: Timer | null = null;
  /** Resolves each time the link comes up (tests and the cluster wait on it). */
  #upWaiters: (() => void)[] = [];

  /** Where the remote node is now: asked again at every (re)connect, since a restarted node may have moved. */
  host = "";
  port = 0;

  constructor(
    readonly remote: string,
    readonly address: () => { host: string; port: number } | null,
    readonly settings: LinkSettings,
  ) {}

  get up(): boolean {
    return this.#linkId !== null;
  }

  /** Streams carried now. */
  get streams(): number {
    return this.#streams.size;
  }

  /** Starts connecting (and reconnecting after a loss, until stop). */
  start(): void {
    this.#connect();
  }

  /** Resolves once the link is up (at once if it is). */
  ready(): Promise<void> {
    return this.up ? Promise.resolve() : new Promise((r) => this.#upWaiters.push(r));
  }

  stop(): void {
    this.#stopped = true;
    this.#control?.destroy();
    this.#down("the node is stopping");
  }

  /** Carries `user` (of app `app` of `group`, which `remote` serves) to the remote node. */
  forward(user: Endpoint, group: string, app: string, publicAddr: string): void {
    if (this.#stopped) return user.reset();
    // A link that is (re)connecting is waited for, up to LINK_WAIT_MS: users who come just as a
    // group moves to a node this one has not linked to yet are not turned away.
    const data = this.up ? this.#idle.pop() : undefined;
    if (data) return this.#start(data, user, group, app, publicAddr);
    user.pause();
    if (this.#waiting.length >= MAX_LINK_WAITING) {
      log.warn("cluster: too many users waiting for a data connection; refusing", { node: this.remote, limit: MAX_LINK_WAITING });
      return user.reset();
    }
    const entry = { user, group, app, publicAddr, since: performance.now() };
    this.#waiting.push(entry);
    this.#waitSweep ??= setInterval(() => this.#sweepWaiting(), 1000);
    this.#waitSweep.unref();
    const prev = user.onClose;
    user.onClose = (ep, aborted) => {
      const i = this.#waiting.indexOf(entry);
      if (i >= 0) this.#waiting.splice(i, 1);
      prev?.(ep, aborted);
    };
    this.#refill();
  }

  /** The users of `group` waiting for this link are reset: the group is no longer served through it (it moved, or went offline). */
  dropWaiting(group: string): void {
    const gone = this.#waiting.filter((w) => w.group === group);
    if (!gone.length) return;
    this.#waiting = this.#waiting.filter((w) => w.group !== group);
    for (const w of gone) w.user.reset();
  }

  /** Users who waited LINK_WAIT_MS are reset; the sweep stops when none wait. */
  #sweepWaiting(): void {
    const now = performance.now();
    const stale = this.#waiting.filter((w) => now - w.since >= LINK_WAIT_MS);
    if (stale.length) {
      this.#waiting = this.#waiting.filter((w) => now - w.since < LINK_WAIT_MS);
      log.warn("cluster: users reset: no link to the node holding their group in time", { node: this.remote, users: stale.length, waitedMs: LINK_WAIT_MS });
      for (const w of stale) w.user.reset();
    }
    if (!this.#waiting.length && this.#waitSweep) {
      clearInterval(this.#waitSweep);
      this.#waitSweep = null;
    }
  }

  /**
   * A channel for a UDP app of `group` (which `remote` serves): a data connection that says PeerStart
   * and is then handed to `bind` (the app's bindWork, which reads the WorkAck and then datagram frames).
   * False when the link is down: the caller asks again later.
   */
  udpChannel(group: string, app: string, publicAddr: string, bind: (data: Endpoint) => void): boolean {
    if (!this.up || this.#stopped) return false;
    const start = (data: Endpoint) => {
      data.send(encode({ type: FrameType.PeerStart, group, app, userAddr: "", publicAddr }));
      bind(data);
    };
    const idle = this.#idle.pop();
    if (idle) start(idle);
    else this.#dialData(start);
    this.#refill();
    return true;
  }

  // ---- the control connection ----

  #connect(): void {
    if (this.#stopped) return;
    const addr = this.address();
    if (!addr) {
      // Not known yet (the node registered after this one last read the nodes): asked again shortly.
      setTimeout(() => this.#connect(), BACKOFF_MIN_MS * 5).unref();
      return;
    }
    this.host = addr.host;
    this.port = addr.port;
    const ep = new Endpoint();
    const reader = new FrameReader();
    this.#control = ep;
    ep.onOpen = (e) => e.send(withMagic(encode({ type: FrameType.Hello })));
    ep.onData = (e, chunk) => {
      reader.push(chunk);
      for (let res = reader.next(); res; res = reader.next()) {
        if (!res.ok) {
          log.warn("cluster: bad frame on a node link; dropping it", { node: this.remote, error: res.error.message });
          return e.destroy();
        }
        this.#lastHeard = performance.now();
        this.#controlFrame(e, res.msg);
      }
    };
    ep.onClose = () => {
      if (this.#control === ep) this.#control = null;
      this.#down(`the link to ${this.remote} (${hostPort(this.host, this.port)}) closed`);
      if (this.#stopped) return;
      const wait = this.#backoff;
      this.#backoff = Math.min(BACKOFF_MAX_MS, this.#backoff * 2);
      setTimeout(() => this.#connect(), wait).unref();
    };
    this.#dial(ep);
  }

  #controlFrame(ep: Endpoint, msg: Message): void {
    switch (msg.type) {
      case FrameType.Challenge:
        return ep.send(encode({ type: FrameType.PeerLogin, node: this.settings.node, proof: peerProof(this.settings.clusterToken, msg.nonce, this.settings.node) }));
      case FrameType.PeerOk: {
        if (msg.node !== this.remote) log.warn("cluster: the node at this address calls itself by another name", { expected: this.remote, got: msg.node, addr: hostPort(this.host, this.port) });
        this.#linkId = msg.linkId;
        this.#backoff = BACKOFF_MIN_MS;
        log.info("cluster: link up", { node: this.remote, addr: hostPort(this.host, this.port) });
        this.#pinger = setInterval(() => this.#ping(), this.settings.heartbeatMs);
        this.#pinger.unref();
        for (const w of this.#upWaiters.splice(0)) w();
        return this.#refill();
      }
      case FrameType.StreamEnd: {
        const s = this.#streams.get(msg.seq);
        if (!s || s.inEnded) return;
        if (!s.acked) s.downBytes = msg.bytes;
        else s.endAfter(msg.bytes);
        return;
      }
      case FrameType.Ping:
        return ep.send(encode({ type: FrameType.Pong, seq: msg.seq }));
      case FrameType.Pong:
        return;
      case FrameType.Error:
        log.warn("cluster: the node refused the link", { node: this.remote, code: ErrorCode[msg.code] ?? msg.code, reason: msg.message });
        return ep.endWhenFlushed();
      default:
        log.warn("cluster: unexpected frame on a node link; dropping it", { node: this.remote, type: msg.type });
        return ep.destroy();
    }
  }

  #ping(): void {
    if (performance.now() - this.#lastHeard > 3 * this.settings.heartbeatMs) {
      log.warn("cluster: node link silent for 3 heartbeats; dropping it", { node: this.remote });
      return this.#control?.destroy();
    }
    this.#control?.send(encode({ type: FrameType.Ping, seq: 0 }));
  }

  /** The link is gone: every stream it carried is reset (its ends can no longer be told), waiting users too. */
  #down(why: string): void {
    const was = this.#linkId !== null;
    this.#linkId = null;
    if (this.#pinger) clearInterval(this.#pinger);
    this.#pinger = null;
    for (const d of this.#idle.splice(0)) d.destroy();
    // Waiting users wait for the link to come back (at most LINK_WAIT_MS); at stop they go at once.
    if (this.#stopped) for (const w of this.#waiting.splice(0)) w.user.reset();
    for (const s of [...this.#streams.values()]) {
      s.noReuse = true;
      if (!s.done) s.cut(why);
    }
    this.#streams.clear();
    if (was) log.warn("cluster: link down", { node: this.remote, reason: why });
  }

  // ---- data connections ----

  /** Dials data connections until the pool and the waiting users are covered. */
  #refill(): void {
    if (!this.up) return;
    const want = Math.max(this.settings.poolSize ?? PEER_POOL_SIZE, this.#waiting.length) - this.#idle.length - this.#dialing;
    for (let i = 0; i < want; i++) this.#dialData();
  }

  #dialData(ready?: (data: Endpoint) => void): void {
    const linkId = this.#linkId!;
    const seq = ++this.#seq;
    const ep = new Endpoint();
    this.#dialing++;
    let opened = false;
    ep.onOpen = (e) => {
      opened = true;
      this.#dialing--;
      e.send(withMagic(encode({ type: FrameType.PeerData, linkId, seq, proof: peerDataProof(this.settings.clusterToken, linkId, seq) })));
      e.tag = seq;
      if (this.#linkId !== linkId) return e.destroy();
      if (ready) return ready(e);
      const w = this.#waiting.shift();
      if (w) return this.#start(e, w.user, w.group, w.app, w.publicAddr);
      this.#idle.push(e);
    };
    // An idle data connection that closes (the other node restarted) leaves the pool.
    ep.onClose = (e) => {
      if (!opened) this.#dialing--;
      const i = this.#idle.indexOf(e);
      if (i >= 0) this.#idle.splice(i, 1);
    };
    this.#dial(ep);
  }

  /** Sends PeerStart (with the user's first bytes), relays at once, and joins both ways on the WorkAck. */
  #start(data: Endpoint, user: Endpoint, group: string, app: string, publicAddr: string): void {
    const seq = data.tag as number;
    const sock = user.socket;
    const userAddr = sock ? hostPort(sock.remoteAddress, sock.remotePort) : "";
    holdUntilNextPoll(data, encode({ type: FrameType.PeerStart, group, app, userAddr, publicAddr }));
    const s = new PeerStream(this, data, user, seq, app);
    this.#streams.set(seq, s);
    data.countedEnd = true;
    data.onClose = () => this.#streams.delete(seq);
    user.peer = data;
    user.resume();
    const reader = new FrameReader();
    data.onData = (ep, chunk) => {
      reader.push(chunk);
      const res = reader.next();
      if (!res) return;
      if (!res.ok || res.msg.type !== FrameType.WorkAck || !res.msg.ok) {
        const why = !res.ok ? res.error.message : res.msg.type === FrameType.WorkAck || res.msg.type === FrameType.Error ? res.msg.message : "unexpected frame";
        log.warn("cluster: the node holding the group refused a user", { node: this.remote, group, app, reason: why });
        user.reset();
        return ep.destroy();
      }
      s.acked = true;
      s.watchWork();
      ep.pipe(user, reader.rest());
      if (s.downBytes >= 0 && ep.peer === user) s.endAfter(s.downBytes);
    };
    this.#refill();
  }

  #dial(ep: Endpoint): void {
    try {
      Bun.connect<Endpoint>({ hostname: this.host, port: this.port, data: ep, allowHalfOpen: true, tls: this.settings.tls, socket: linkHandler }).catch(() => {
        // connectError has closed the endpoint; its onClose retries.
      });
    } catch (err) {
      // Bun.connect throws at once (not in its promise) for an address it cannot use: the endpoint closes as if refused.
      log.warn("cluster: cannot dial a node at the address it registered", { node: this.remote, addr: hostPort(this.host, this.port), error: (err as Error).message });
      queueMicrotask(() => Endpoint.events.closed(ep, true));
    }
  }

  // StreamOwner
  fields(s: Stream): Record<string, unknown> {
    return { node: this.remote, app: s.app };
  }

  tellEnd(s: Stream, bytes: number): boolean {
    if (!this.#control || !this.up) return false;
    holdUntilNextPoll(this.#control, encode({ type: FrameType.StreamEnd, seq: s.seq, bytes }));
    return true;
  }

  finished(s: Stream): void {
    this.#streams.delete(s.seq);
    s.work.endWhenFlushed();
  }
}

/** One handler for every socket a link dials. */
const linkHandler = relayHandler(undefined, undefined, (ep, error) => {
  log.debug("cluster: cannot reach a node", { error: error.message, endpoint: ep.tag ?? "control" });
});
