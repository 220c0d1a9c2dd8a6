/**
 * The control port: accepts connections, refuses blocked and excess ones at
 * once, reads the first frames (Hello, Challenge, Login; or WorkHello) within
 * handshakeTimeout, and hands each proven connection to the sessions. Nothing
 * is written to a connection before the client has spoken.
 */
import type { TCPSocketListener } from "bun";
import { encode, ErrorCode, FrameReader, frameName, FrameType, hostPort, NONCE_BYTES, randomBytes, withMagic, type Message } from "../../protocol.ts";
import type { LoginGuard } from "../guard.ts";
import { log } from "../log.ts";
import { Deadlines } from "../net/deadlines.ts";
import { Endpoint } from "../net/endpoint.ts";
import { KEEPALIVE_MS, relayHandler, sockets } from "../net/sockets.ts";
import { BLOCKED } from "./auth.ts";

/** Connections on the control port that have not finished their hello; more are refused at once, so a flood cannot exhaust memory. */
export const MAX_PENDING_HANDSHAKES = 4096;

/** A connection in its handshake. */
export interface Handshake {
  readonly reader: FrameReader;
  /** The login challenge, once a Hello asked for one. */
  nonce: Uint8Array | null;
  /** Whether our MAGIC has gone out (every first frame we send carries it). */
  magicSent: boolean;
  readonly ip: string;
  /** "ip:port" of the peer, for logs (the port is looked up only when needed). */
  readonly addr: string;
}

/** Where a connection goes once its handshake frame has arrived. */
export interface Handoff {
  /** A login answering `hs.nonce`. */
  login(ep: Endpoint, hs: Handshake, msg: Extract<Message, { type: FrameType.Login }>): void;
  /** A work connection's hello. */
  workHello(ep: Endpoint, hs: Handshake, msg: Extract<Message, { type: FrameType.WorkHello }>): void;
}

/** The control port of one server. */
export class ControlPort {
  /** MAX_PENDING_HANDSHAKES, held here so a test can lower it (as it lowers `sockets.max`) instead of opening 4,096 sockets; not a config key. */
  maxPendingHandshakes = MAX_PENDING_HANDSHAKES;
  #pending = 0;
  #listener: TCPSocketListener<Endpoint> | null = null;
  /** Connections still in their handshake, refused when handshakeTimeout passes. */
  readonly #handshakes: Deadlines<Endpoint>;

  constructor(
    readonly bindAddr: string,
    handshakeTimeoutMs: number,
    readonly guard: LoginGuard,
    readonly handoff: Handoff,
  ) {
    this.#handshakes = new Deadlines(handshakeTimeoutMs, (ep) => this.refuse(ep, ErrorCode.HandshakeTimeout, "handshake not finished in time"));
  }

  /** Opens the port (TLS only, when `tls` is given); returns the port bound. */
  listen(port: number, tls?: { cert: string; key: string }): number {
    this.#listener = Bun.listen<Endpoint>({
      hostname: this.bindAddr,
      port,
      exclusive: true,
      allowHalfOpen: true,
      tls,
      socket: relayHandler((socket) => this.#accept(socket)),
    });
    return this.#listener.port;
  }

  /** Connections that have not finished their hello (bounded by maxPendingHandshakes). */
  get pending(): number {
    return this.#pending;
  }

  #accept(socket: { remoteAddress: string; remotePort: number }): Endpoint {
    const ep = new Endpoint();
    const ip = socket.remoteAddress;
    const addr = () => hostPort(ip, socket.remotePort);
    if (this.guard.blocked(ip)) {
      // Refused before any work: the block itself was logged once when it began.
      ep.onOpen = (e) => {
        e.send(withMagic(encode({ type: FrameType.Error, code: ErrorCode.Blocked, message: BLOCKED })));
        e.endWhenFlushed();
      };
      return ep;
    }
    // Unfinished handshakes may hold at most half the sockets, so logged-in groups always have room.
    const limit = Math.min(this.maxPendingHandshakes, sockets.max / 2);
    if (this.#pending >= limit) {
      log.warn("too many unfinished handshakes; refusing a connection", { from: addr(), limit: Math.ceil(limit) });
      ep.onOpen = (e) => {
        e.send(withMagic(encode({ type: FrameType.Error, code: ErrorCode.Overloaded, message: "server busy: too many unfinished handshakes" })));
        e.endWhenFlushed();
      };
      return ep;
    }
    this.#pending++;
    const hs: Handshake = {
      reader: new FrameReader(),
      nonce: null,
      magicSent: false,
      get addr() {
        return addr();
      },
      ip,
    };
    ep.tag = hs;
    // The client speaks first (Hello or WorkHello): nothing is written before it has.
    ep.onOpen = (e) => e.socket?.setKeepAlive?.(true, KEEPALIVE_MS);
    ep.onData = (e, chunk) => this.#handshake(e, hs, chunk);
    ep.onClose = () => {
      this.#handshakes.delete(ep);
      this.#pending--;
    };
    this.#handshakes.add(ep);
    return ep;
  }

  /** Refuses a connection in or just after its handshake: one Error frame, then the close. */
  refuse(ep: Endpoint, code: ErrorCode, message: string): void {
    const hs = ep.tag as Handshake;
    log.info("connection refused", { from: hs.addr, reason: message });
    ep.onData = null;
    const frame = encode({ type: FrameType.Error, code, message });
    ep.send(hs.magicSent ? frame : withMagic(frame));
    ep.endWhenFlushed();
  }

  #handshake(ep: Endpoint, hs: Handshake, chunk: Uint8Array): void {
    hs.reader.push(chunk);
    for (let res = hs.reader.next(); res; res = hs.reader.next()) {
      if (!res.ok) return this.refuse(ep, res.error.code, res.error.message);
      const msg = res.msg;
      if (msg.type === FrameType.Hello && !hs.nonce) {
        // A control connection: challenge it, and wait for its login.
        hs.nonce = randomBytes(NONCE_BYTES);
        hs.magicSent = true;
        ep.send(withMagic(encode({ type: FrameType.Challenge, nonce: hs.nonce })));
        continue;
      }
      const login = msg.type === FrameType.Login && hs.nonce;
      const work = msg.type === FrameType.WorkHello && !hs.nonce;
      if (!login && !work) {
        const expected = hs.nonce ? "a login after the challenge" : "hello or work-hello first";
        return this.refuse(ep, ErrorCode.UnexpectedMessage, `expected ${expected}, got a ${frameName(msg.type)} frame`);
      }
      this.#handshakes.delete(ep);
      this.#pending--;
      ep.onClose = null;
      if (msg.type === FrameType.Login) return this.handoff.login(ep, hs, msg);
      if (msg.type === FrameType.WorkHello) return this.handoff.workHello(ep, hs, msg);
    }
  }

  /** Closes the port; handshakes in progress are abandoned. */
  stop(): void {
    this.#handshakes.clear();
    this.#listener?.stop(true);
  }
}
