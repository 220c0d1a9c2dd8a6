/**
 * The peer port (issue 20): where other nodes' links arrive. A link's control
 * connection proves the cluster token answering a challenge (as a client's
 * login does) and carries StreamEnd counts and heartbeats; each data
 * connection proves it belongs to the link (as a work connection does) and
 * then carries one user of a group whose session is on this node. That user
 * enters the session's work pool as an in-process endpoint (an Upstream, as
 * an HTTP request does), so the pool, the stream unit and the client see an
 * ordinary user. Bad input gets what the control port gives it: one Error
 * frame, a close, and a failed login counted by the lockout.
 */
import type { TCPSocketListener } from "bun";
import { encode, ErrorCode, FrameReader, frameName, FrameType, hostPort, NONCE_BYTES, peerDataProof, peerProof, randomBytes, SESSION_ID_BYTES, withMagic, type Message } from "../../protocol.ts";
import type { LoginGuard } from "../guard.ts";
import { SeqWindow } from "../guard.ts";
import { log } from "../log.ts";
import { Deadlines } from "../net/deadlines.ts";
import { Endpoint, type Transport } from "../net/endpoint.ts";
import { relayHandler } from "../net/sockets.ts";
import { constantTimeEqual } from "../secrets.ts";
import { Upstream, type UpstreamOwner } from "../server/http/upstream.ts";

/** Unfinished handshakes on the peer port; more are refused at once. */
export const MAX_PEER_HANDSHAKES = 256;
/** Data connections of one link that wait for their PeerStart; more are refused (a link keeps PEER_POOL_SIZE). */
export const MAX_IDLE_DATA_PER_LINK = 256;

/** What the peer port needs from its node. */
export interface PeerHost {
  readonly node: string;
  readonly clusterToken: string;
  readonly guard: LoginGuard;
  readonly handshakeTimeoutMs: number;
  /** Ping interval of links: one silent for 3 of them is dropped. */
  readonly heartbeatMs: number;
  /** Hands a forwarded user to the session of `group` on this node; a string says why it cannot be. */
  acceptForwarded(user: Endpoint, group: string, app: string): string | null;
  /** Hands a channel of datagrams for `group`'s UDP app to its session here (frames after `first`); a string says why not. */
  acceptForwardedUdp?(ep: Endpoint, group: string, app: string, first: Uint8Array): string | null;
  /** The registered type of an app ("udp" takes a channel, not a stream). */
  appType?(group: string, app: string): string | undefined;
}

/** A link from another node, as this node holds it. */
class InLink {
  readonly datas = new Map<number, InData>();
  readonly seqs = new SeqWindow();
  lastHeard = performance.now();
  constructor(
    readonly id: Uint8Array,
    readonly node: string,
    readonly control: Endpoint,
  ) {}
}

/** One forwarded user on a data connection: `ep` toward the other node, `up` into the session. */
class InData implements UpstreamOwner {
  up: Upstream | null = null;
  /** Bytes from the other node (the user's), and the count its StreamEnd told. */
  received = 0;
  endAt = -1;
  /** Bytes toward the other node (the app's), told in our StreamEnd once the app's side ended. */
  sent = 0;
  inDone = false;
  outDone = false;

  constructor(
    readonly link: InLink,
    readonly seq: number,
    readonly ep: Endpoint,
  ) {}

  /** The user's bytes from the other node. */
  data(chunk: Uint8Array): void {
    this.received += chunk.length;
    if (this.endAt >= 0 && this.received > this.endAt) return this.fail("more bytes than the stream-end announced");
    this.up?.send(chunk);
    this.#maybeEnded();
  }

  /** The other node's StreamEnd: the user's direction ends after `bytes`. */
  told(bytes: number): void {
    if (this.received > bytes) return this.fail("more bytes than the stream-end announced");
    this.endAt = bytes;
    this.#maybeEnded();
  }

  #maybeEnded(): void {
    if (this.inDone || this.endAt < 0 || this.received !== this.endAt) return;
    this.inDone = true;
    // A user still waiting in the pool for a work connection ends once it has one (finish() before
    // that would drop it: for an HTTP request that never reached the app, that is right; here it is not).
    if (this.up && !this.up.bound) this.finishWhenBound = true;
    else this.up?.finish();
    this.#maybeClose();
  }
  finishWhenBound = false;

  fail(why: string): void {
    // An idle data connection (no user yet) going with its link is no news.
    if (this.up) log.warn("cluster: forwarded stream reset", { node: this.link.node, reason: why });
    this.up?.reset();
    this.ep.reset();
  }

  /**
   * The other node closes the data connection once it has every byte and has told its count: this
   * side never closes it first, since a FIN there can overtake our StreamEnd on the control connection
   * and would read as a cut stream. Once it closed, the entry stays until the count is in.
   */
  #maybeClose(): void {
    if (this.inDone && this.outDone && this.ep.closed) this.link.datas.delete(this.seq);
  }

  // UpstreamOwner: what the session's pool does to the user.
  fromApp(_up: Upstream, data: Uint8Array): void {
    this.sent += data.length;
    this.ep.write(data, this.up?.ep.peer ?? null);
  }
  appEnded(): void {
    if (this.outDone) return;
    this.outDone = true;
    this.link.control.send(encode({ type: FrameType.StreamEnd, seq: this.seq, bytes: this.sent }));
    this.#maybeClose();
  }
  upstreamClosed(_up: Upstream, clean: boolean): void {
    if (clean && this.inDone && this.outDone) return;
    this.link.datas.delete(this.seq);
    this.ep.reset();
  }

  /** The data connection closed: cleanly after our side's last byte, the user's count may still be on its way. */
  closed(aborted: boolean): void {
    if (!aborted && this.outDone) {
      if (this.inDone) this.link.datas.delete(this.seq);
      return; // else: told() completes it, or the link's loss resets it
    }
    if (this.link.datas.get(this.seq) === this) this.link.datas.delete(this.seq);
    if (!(this.inDone && this.outDone)) this.up?.reset();
  }
  blocked(up: Upstream, on: boolean): void {
    if (on) return this.ep.pause();
    this.ep.resume();
    if (this.finishWhenBound && up.bound) {
      this.finishWhenBound = false;
      up.finish();
    }
  }
}

/** The user's addresses as the PeerStart told them: what StartWork, the PROXY header and logs say. */
function userTransport(userAddr: string, publicAddr: string): Transport {
  const split = (a: string): [string, number] => {
    const m = /^\[?(.*?)\]?:(\d+)$/.exec(a);
    return m ? [m[1]!, Number(m[2])] : [a, 0];
  };
  const [ra, rp] = split(userAddr);
  const [la, lp] = split(publicAddr);
  const none = () => {};
  return { write: () => -1, pause: none, resume: none, shutdown: none, end: none, terminate: none, remoteAddress: ra, remotePort: rp, localAddress: la, localPort: lp };
}

/** The peer port of one node. */
export class PeerPort {
  #listener: TCPSocketListener<Endpoint> | null = null;
  readonly #links = new Map<string, InLink>();
  #pending = 0;
  readonly #handshakes: Deadlines<Endpoint>;

  constructor(readonly host: PeerHost) {
    this.#handshakes = new Deadlines(host.handshakeTimeoutMs, (ep) => this.#refuse(ep, ErrorCode.HandshakeTimeout, "handshake not finished in time", false));
    const sweep = setInterval(() => this.#sweep(), host.heartbeatMs);
    sweep.unref();
    this.#sweepTimer = sweep;
  }
  readonly #sweepTimer: Timer;

  listen(bindAddr: string, port: number, tls?: { cert: string; key: string }): number {
    this.#listener = Bun.listen<Endpoint>({ hostname: bindAddr, port, exclusive: true, allowHalfOpen: true, tls, socket: relayHandler((s) => this.#accept(s)) });
    return this.#listener.port;
  }

  /** Links from other nodes, by node name. */
  get links(): string[] {
    return [...this.#links.values()].map((l) => l.node);
  }

  stop(): void {
    clearInterval(this.#sweepTimer);
    this.#handshakes.clear();
    this.#listener?.stop(true);
    for (const l of this.#links.values()) l.control.destroy();
  }

  #accept(socket: { remoteAddress: string; remotePort: number }): Endpoint {
    const ep = new Endpoint();
    const ip = socket.remoteAddress;
    const addr = hostPort(ip, socket.remotePort);
    if (this.host.guard.blocked(ip) || this.#pending >= MAX_PEER_HANDSHAKES) {
      ep.onOpen = (e) => {
        const code = this.#pending >= MAX_PEER_HANDSHAKES ? ErrorCode.Overloaded : ErrorCode.Blocked;
        e.send(withMagic(encode({ type: FrameType.Error, code, message: code === ErrorCode.Blocked ? "too many failed logins from this address" : "too many unfinished handshakes" })));
        e.endWhenFlushed();
      };
      return ep;
    }
    this.#pending++;
    const reader = new FrameReader();
    const hs = { ip, addr, nonce: null as Uint8Array | null, reader, done: false };
    ep.tag = hs;
    ep.onData = (e, chunk) => {
      reader.push(chunk);
      // Stops as soon as the handshake hands the connection on: the frames after it are the next owner's.
      while (!hs.done) {
        const res = reader.next();
        if (!res) break;
        if (!res.ok) return this.#refuse(e, res.error.code, res.error.message, !!hs.nonce);
        this.#handshake(e, hs, res.msg);
      }
    };
    ep.onClose = () => this.#settled(ep, hs);
    this.#handshakes.add(ep);
    return ep;
  }

  #settled(ep: Endpoint, hs: { done: boolean }): void {
    if (hs.done) return;
    hs.done = true;
    this.#handshakes.delete(ep);
    this.#pending--;
  }

  #refuse(ep: Endpoint, code: ErrorCode, message: string, magicSent: boolean): void {
    const hs = ep.tag as { addr: string; done: boolean };
    log.info("cluster: peer connection refused", { from: hs.addr, reason: message });
    this.#settled(ep, hs);
    ep.onData = null;
    const frame = encode({ type: FrameType.Error, code, message });
    ep.send(magicSent ? frame : withMagic(frame));
    ep.endWhenFlushed();
  }

  #handshake(ep: Endpoint, hs: { ip: string; addr: string; nonce: Uint8Array | null; reader: FrameReader; done: boolean }, msg: Message): void {
    if (msg.type === FrameType.Hello && !hs.nonce) {
      hs.nonce = randomBytes(NONCE_BYTES);
      return ep.send(withMagic(encode({ type: FrameType.Challenge, nonce: hs.nonce })));
    }
    if (msg.type === FrameType.PeerLogin && hs.nonce) {
      if (!constantTimeEqual(peerProof(this.host.clusterToken, hs.nonce, msg.node), msg.proof)) {
        this.host.guard.fail(hs.ip, "peer port");
        return this.#refuse(ep, ErrorCode.AuthFailed, "authentication failed", true);
      }
      this.#settled(ep, hs);
      return this.#linkUp(ep, msg.node, hs.reader);
    }
    if (msg.type === FrameType.PeerData && !hs.nonce) {
      const link = this.#links.get(Buffer.from(msg.linkId).toString("hex"));
      if (!link || !constantTimeEqual(peerDataProof(this.host.clusterToken, msg.linkId, msg.seq), msg.proof)) {
        this.host.guard.fail(hs.ip, "peer port");
        return this.#refuse(ep, ErrorCode.AuthFailed, "authentication failed", false);
      }
      if (!link.seqs.accept(msg.seq)) return this.#refuse(ep, ErrorCode.AuthFailed, "authentication failed", false);
      // Idle ones only (no user yet): a link carries as many users as come, each on a connection of its own.
      let idle = 0;
      for (const d of link.datas.values()) if (!d.up) idle++;
      if (idle >= MAX_IDLE_DATA_PER_LINK) return this.#refuse(ep, ErrorCode.Overloaded, `a link may hold at most ${MAX_IDLE_DATA_PER_LINK} data connections`, false);
      this.#settled(ep, hs);
      return this.#dataUp(ep, link, msg.seq, hs.reader);
    }
    const expected = hs.nonce ? "a peer login after the challenge" : "hello or peer-data first";
    this.#refuse(ep, ErrorCode.UnexpectedMessage, `expected ${expected}, got a ${frameName(msg.type)} frame`, !!hs.nonce);
  }

  #linkUp(ep: Endpoint, node: string, reader: FrameReader): void {
    const id = randomBytes(SESSION_ID_BYTES);
    const key = Buffer.from(id).toString("hex");
    const link = new InLink(id, node, ep);
    this.#links.set(key, link);
    log.info("cluster: link from a node accepted", { node, from: (ep.tag as { addr: string }).addr });
    ep.send(encode({ type: FrameType.PeerOk, linkId: id, node: this.host.node }));
    const onControl = (e: Endpoint, chunk: Uint8Array) => {
      reader.push(chunk);
      for (let res = reader.next(); res; res = reader.next()) {
        if (!res.ok) {
          log.warn("cluster: bad frame on a link; dropping it", { node, error: res.error.message });
          return e.destroy();
        }
        link.lastHeard = performance.now();
        const m = res.msg;
        if (m.type === FrameType.StreamEnd) link.datas.get(m.seq)?.told(m.bytes);
        else if (m.type === FrameType.Ping) e.send(encode({ type: FrameType.Pong, seq: m.seq }));
        else if (m.type !== FrameType.Pong) {
          log.warn("cluster: unexpected frame on a link; dropping it", { node, type: frameName(m.type) });
          return e.destroy();
        }
      }
    };
    ep.onData = onControl;
    // Frames that came in the same read as the login are handled now, not at the next read.
    if (reader.buffered > 0) onControl(ep, new Uint8Array(0));
    // A lost link leaves every stream it carried unprovable: each is reset, never ended cleanly.
    ep.onClose = () => {
      this.#links.delete(key);
      log.warn("cluster: link from a node closed", { node, streams: link.datas.size });
      for (const d of [...link.datas.values()]) d.fail("its link closed");
      link.datas.clear();
    };
  }

  #dataUp(ep: Endpoint, link: InLink, seq: number, reader: FrameReader): void {
    const d = new InData(link, seq, ep);
    link.datas.set(seq, d);
    ep.onClose = (_e, aborted) => d.closed(aborted);
    const onStart = (e: Endpoint, chunk: Uint8Array) => {
      reader.push(chunk);
      const res = reader.next();
      if (!res) return;
      if (!res.ok || res.msg.type !== FrameType.PeerStart) {
        return this.#refuse(e, res.ok ? ErrorCode.UnexpectedMessage : res.error.code, res.ok ? `expected peer-start, got a ${frameName(res.msg.type)} frame` : res.error.message, false);
      }
      const m = res.msg;
      if (this.host.appType?.(m.group, m.app) === "udp") return this.#udpChannel(e, link, seq, m.group, m.app, reader);
      const up = new Upstream(d, userTransport(m.userAddr, m.publicAddr));
      d.up = up;
      up.ep.attach(up);
      const why = this.host.acceptForwarded(up.ep, m.group, m.app);
      if (why) {
        d.up = null;
        link.datas.delete(seq);
        log.info("cluster: forwarded user refused", { node: link.node, group: m.group, app: m.app, reason: why });
        e.send(withMagic(encode({ type: FrameType.WorkAck, ok: false, message: why })));
        return e.endWhenFlushed();
      }
      e.send(withMagic(encode({ type: FrameType.WorkAck, ok: true, message: "" })));
      up.checkBound();
      e.onData = (_e2, c) => d.data(c);
      const rest = reader.rest();
      if (rest.length) d.data(rest);
    };
    ep.onData = onStart;
    // A PeerStart that came in the same read as the PeerData (a data connection dialed for a waiting user).
    if (reader.buffered > 0) onStart(ep, new Uint8Array(0));
  }

  /** A UDP app's channel: datagram frames both ways for as long as it stays open; no stream, no counts. */
  #udpChannel(ep: Endpoint, link: InLink, seq: number, group: string, app: string, reader: FrameReader): void {
    link.datas.delete(seq);
    ep.onData = null;
    // Datagrams that came with the PeerStart are relayed at once; their replies come later, after the WorkAck below.
    const why = this.host.acceptForwardedUdp ? this.host.acceptForwardedUdp(ep, group, app, reader.rest()) : "udp apps are not forwarded here";
    if (why) {
      log.info("cluster: forwarded udp channel refused", { node: link.node, group, app, reason: why });
      ep.send(withMagic(encode({ type: FrameType.WorkAck, ok: false, message: why })));
      return ep.endWhenFlushed();
    }
    ep.send(withMagic(encode({ type: FrameType.WorkAck, ok: true, message: "" })));
  }

  /** Drops links silent for 3 heartbeats (their node is gone without a FIN). */
  #sweep(): void {
    const now = performance.now();
    for (const l of this.#links.values()) if (now - l.lastHeard > 3 * this.host.heartbeatMs) l.control.destroy();
  }
}
