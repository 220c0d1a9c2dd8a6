/**
 * The server's core: the control port (handshakes, logins, work hellos), the
 * live sessions found by group name and by session id, heartbeat checks and
 * per-app traffic counters.
 */
import type { TCPSocketListener } from "bun";
import {
  encode,
  ErrorCode,
  FrameReader,
  frameName,
  FrameType,
  loginProof,
  NONCE_BYTES,
  proofEquals,
  randomBytes,
  SESSION_ID_BYTES,
  MAX_FRAME_BYTES,
  NAME_PATTERN,
  withMagic,
  workProof,
  type Message,
} from "../protocol.ts";
import type { ServerConfig } from "./config/schema.ts";
import { log } from "./log.ts";
import type { GroupRecord, Registry } from "./registry.ts";
import { Endpoint } from "./net/endpoint.ts";
import { KEEPALIVE_MS, relayHandler, sockets } from "./net/sockets.ts";
import { Session, WORK_REQUEST_TIMEOUT_MS, type AppStats, type SessionHost } from "./session.ts";
import { LoginGuard } from "./guard.ts";
import { Deadlines } from "./net/deadlines.ts";

/** Connections on the control port that have not finished their hello; more are refused at once, so a flood cannot exhaust memory. */
export const MAX_PENDING_HANDSHAKES = 4096;
/** Longest gap between heartbeat sweeps; shorter heartbeat timeouts sweep more often. */
export const MAX_SWEEP_INTERVAL_MS = 1000;

/** The same sentence for a wrong token and an unknown group, so a stranger learns nothing. */
const AUTH_FAILED = "authentication failed";
const BLOCKED = "too many failed logins from this address; try again later";
/** Most apps one login may declare: their statuses must fit in one LoginOk frame (64 KiB; see MAX_STATUS_ERROR_BYTES). */
export const MAX_DECLARED_APPS = 256;
/** Token used to compute a proof for unknown groups, so that both failures take the same time. */
const DUMMY_TOKEN = Buffer.from(randomBytes(32)).toString("hex");

interface Handshake {
  readonly reader: FrameReader;
  /** The login challenge, once a Hello asked for one. */
  nonce: Uint8Array | null;
  /** Whether our MAGIC has gone out (every first frame we send carries it). */
  magicSent: boolean;
  readonly ip: string;
  /** "ip:port" of the peer, for logs (the port is looked up only when needed). */
  readonly addr: string;
}

/** Live state of one app, as the API shows it. */
export interface AppView {
  name: string;
  type: string;
  remotePort: number;
  allowIPs: readonly string[];
  denyIPs: readonly string[];
  maxConnections: number;
  online: boolean;
  error: string | null;
  connections: number;
  bytesIn: number;
  bytesOut: number;
  deniedConnections: number;
  overLimitConnections: number;
  droppedDatagrams: number;
  queueFullConnections: number;
}

/** Live state of one group, as the API shows it. */
export interface GroupView {
  name: string;
  maxApps: number;
  allowPorts: string | null;
  online: boolean;
  clientAddr: string | null;
  onlineSince: string | null;
  apps: AppView[];
}

/** Sessions, control port and counters of one server. */
export class Hub implements SessionHost {
  readonly bindAddr: string;
  readonly poolSize: number;
  readonly userConnTimeoutMs: number;
  readonly maxPendingUsers: number;
  readonly udpIdleTimeoutMs: number;
  /** MAX_PENDING_HANDSHAKES, held here so a test can lower it (as it lowers `sockets.max`) instead of opening 4,096 sockets; not a config key. */
  maxPendingHandshakes = MAX_PENDING_HANDSHAKES;
  /** WORK_REQUEST_TIMEOUT_MS, held here so a test need not wait 5 s for a re-request; not a config key. */
  workRequestTimeoutMs = WORK_REQUEST_TIMEOUT_MS;
  readonly #heartbeatTimeoutMs: number;
  readonly #handshakeTimeoutMs: number;
  #sessions = new Map<string, Session>();
  #byId = new Map<string, Session>();
  #stats = new Map<string, AppStats>();
  #pending = 0;
  #listener: TCPSocketListener<Endpoint> | null = null;
  #sweep: Timer | null = null;
  /** Connections still in their handshake, refused when handshakeTimeout passes. */
  readonly #handshakes: Deadlines<Endpoint>;
  /** Failed logins per source address, shared with the API. */
  readonly guard: LoginGuard;

  constructor(
    config: ServerConfig,
    readonly registry: Registry,
  ) {
    this.bindAddr = config.bindAddr;
    this.poolSize = config.poolSize;
    this.userConnTimeoutMs = config.userConnTimeout * 1000;
    this.maxPendingUsers = config.maxPendingUsers;
    this.udpIdleTimeoutMs = config.udpIdleTimeout * 1000;
    this.#heartbeatTimeoutMs = config.heartbeatTimeout * 1000;
    this.#handshakeTimeoutMs = config.handshakeTimeout * 1000;
    this.#handshakes = new Deadlines(this.#handshakeTimeoutMs, (ep) => this.#refuse(ep, ErrorCode.HandshakeTimeout, "handshake not finished in time"));
    this.guard = new LoginGuard(config.loginFailureLimit, config.loginFailureWindow * 1000, config.loginBlockTime * 1000);
  }

  /** Opens the control port (TLS only, when `tls` is given); returns the port bound. */
  listen(port: number, tls?: { cert: string; key: string }): number {
    this.#listener = Bun.listen<Endpoint>({
      hostname: this.bindAddr,
      port,
      exclusive: true,
      allowHalfOpen: true,
      tls,
      socket: relayHandler((socket) => this.#accept(socket)),
    });
    const interval = Math.min(MAX_SWEEP_INTERVAL_MS, this.#heartbeatTimeoutMs / 4);
    this.#sweep = setInterval(() => this.#checkHeartbeats(), interval);
    return this.#listener.port;
  }

  #accept(socket: { remoteAddress: string; remotePort: number }): Endpoint {
    const ep = new Endpoint();
    const ip = socket.remoteAddress;
    const addr = () => `${ip}:${socket.remotePort}`;
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
    ep.onOpen = (e) => e.socket?.setKeepAlive(true, KEEPALIVE_MS);
    ep.onData = (e, chunk) => this.#handshake(e, hs, chunk);
    ep.onClose = () => {
      this.#handshakes.delete(ep);
      this.#pending--;
    };
    this.#handshakes.add(ep);
    return ep;
  }

  #refuse(ep: Endpoint, code: ErrorCode, message: string): void {
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
      if (!res.ok) return this.#refuse(ep, res.error.code, res.error.message);
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
        return this.#refuse(ep, ErrorCode.UnexpectedMessage, `expected ${expected}, got a ${frameName(msg.type)} frame`);
      }
      this.#handshakes.delete(ep);
      this.#pending--;
      ep.onClose = null;
      if (msg.type === FrameType.Login) return this.#login(ep, hs, hs.nonce!, msg);
      if (msg.type === FrameType.WorkHello) return this.#workHello(ep, hs, msg);
    }
  }

  #login(ep: Endpoint, hs: Handshake, nonce: Uint8Array, msg: Extract<Message, { type: FrameType.Login }>): void {
    // Checked again here: connections opened before the block must not keep guessing.
    if (this.guard.blocked(hs.ip)) return this.#refuse(ep, ErrorCode.Blocked, BLOCKED);
    const group = this.registry.get(msg.group);
    const expected = loginProof(group?.token ?? DUMMY_TOKEN, nonce, msg.group);
    if (!group || !proofEquals(expected, msg.proof)) {
      log.warn("login failed", { group: msg.group, from: hs.addr, reason: group ? "wrong proof" : "unknown group" });
      this.guard.fail(hs.ip, "control port");
      return this.#refuse(ep, ErrorCode.AuthFailed, AUTH_FAILED);
    }
    if (hs.reader.buffered > 0) return this.#refuse(ep, ErrorCode.UnexpectedMessage, "data after login before the server answered");
    // Bounded so that the answer (one status per declared app) always fits in a frame.
    if (msg.apps.length > MAX_DECLARED_APPS) return this.#refuse(ep, ErrorCode.MalformedFrame, `a login may declare at most ${MAX_DECLARED_APPS} apps`);
    const badName = msg.apps.find((a) => !NAME_PATTERN.test(a.name));
    if (badName) return this.#refuse(ep, ErrorCode.MalformedFrame, "app names must be 1-64 letters, digits, '_', '.' or '-'");
    const old = this.#sessions.get(group.name);
    // The new login is authenticated: it takes over, and the old session's ports pass to it.
    if (old) old.end(ErrorCode.SessionReplaced, `session replaced by a new login from ${hs.addr}`);
    const session = new Session(this, randomBytes(SESSION_ID_BYTES), group, ep, msg.apps, hs.addr);
    this.#sessions.set(group.name, session);
    this.#byId.set(session.idHex, session);
    const reader = hs.reader;
    let ready = false;
    ep.onData = (_e, chunk) => {
      reader.push(chunk);
      // Frames that arrive while the apps are being bound wait in the reader, in order (and bounded).
      if (ready) this.#control(session, reader);
      else if (reader.buffered > MAX_FRAME_BYTES) session.end(ErrorCode.UnexpectedMessage, "too much data before the login was answered");
    };
    ep.onClose = () => session.end(null, "control connection closed");
    session
      .reconcile(group)
      .then(() => {
        if (session.ended) return;
        ep.send(encode({ type: FrameType.LoginOk, sessionId: session.id, apps: session.statuses }));
        log.info("group online", { group: group.name, client: session.clientAddr, apps: session.statuses.filter((s) => !s.error).length });
        ready = true;
        session.start();
        this.#control(session, reader);
      })
      .catch((err: Error) => {
        log.error("login could not be completed", { group: group.name, error: err.message });
        session.end(ErrorCode.Overloaded, "the server could not complete the login");
      });
  }

  #control(session: Session, reader: FrameReader): void {
    for (let res = reader.next(); res; res = reader.next()) {
      if (!res.ok) {
        log.warn("protocol error on control connection", { group: session.group.name, error: res.error.message });
        return session.end(res.error.code, res.error.message);
      }
      session.touch();
      const msg = res.msg;
      if (msg.type === FrameType.StreamEnd) session.streamEnd(msg.seq, msg.bytes);
      else if (msg.type === FrameType.WorkFree) session.workFree(msg.seq);
      else if (msg.type === FrameType.Ping) session.control.send(encode({ type: FrameType.Pong, seq: msg.seq }));
      else if (msg.type !== FrameType.Pong) return session.end(ErrorCode.UnexpectedMessage, `unexpected frame type ${msg.type} on a control connection`);
    }
  }

  #workHello(ep: Endpoint, hs: Handshake, msg: Extract<Message, { type: FrameType.WorkHello }>): void {
    const session = this.#byId.get(Buffer.from(msg.sessionId).toString("hex"));
    const expected = workProof(session?.group.token ?? DUMMY_TOKEN, msg.sessionId, msg.seq);
    if (this.guard.blocked(hs.ip)) return this.#refuse(ep, ErrorCode.Blocked, BLOCKED);
    if (!session || session.ended || !proofEquals(expected, msg.proof)) {
      log.warn("work connection refused", { from: hs.addr, reason: session ? "wrong proof" : "unknown session" });
      this.guard.fail(hs.ip, "control port");
      return this.#refuse(ep, ErrorCode.AuthFailed, AUTH_FAILED);
    }
    // A valid proof seen before is a replay (or a very late duplicate): refused. Not counted as a failed
    // login: it guesses nothing, and a legitimate client's late hello must not lock out its address.
    if (!session.workSeqs.accept(msg.seq)) {
      log.warn("work connection refused", { from: hs.addr, reason: "sequence number already used or too old", group: session.group.name });
      return this.#refuse(ep, ErrorCode.AuthFailed, AUTH_FAILED);
    }
    if (hs.reader.buffered > 0) return this.#refuse(ep, ErrorCode.UnexpectedMessage, "data on a work connection before start");
    session.addWork(ep, hs.reader, msg.seq);
  }

  #checkHeartbeats(): void {
    // Monotonic, like lastSeen: a wall-clock step (a time sync, a resumed VM) drops no session.
    const now = performance.now();
    const deadline = now - this.#heartbeatTimeoutMs;
    for (const s of this.#sessions.values()) {
      s.trimIdle(now);
      if (s.lastSeen < deadline) {
        log.warn("heartbeat timeout; dropping session", { group: s.group.name, client: s.clientAddr });
        s.end(ErrorCode.HeartbeatTimeout, "no heartbeat within heartbeatTimeout");
      }
    }
  }

  /** Counters of one app; they outlive sessions and go with the app. */
  statsFor(group: string, app: string): AppStats {
    const key = `${group}/${app}`;
    let s = this.#stats.get(key);
    if (!s) this.#stats.set(key, (s = { connections: 0, bytesIn: 0, bytesOut: 0, denied: 0, overLimit: 0, dropped: 0, queueFull: 0, streams: new Set() }));
    return s;
  }

  /** A session has ended: forget it unless it was already replaced. */
  ended(session: Session): void {
    if (this.#sessions.get(session.group.name) === session) this.#sessions.delete(session.group.name);
    this.#byId.delete(session.idHex);
  }

  /** The online session of a group, if any. */
  session(name: string): Session | undefined {
    return this.#sessions.get(name);
  }

  /** Applies a changed app list to the group's online session at once. */
  async groupChanged(group: GroupRecord): Promise<void> {
    // Reconcile errors are logged by the session; the API still answers with the stored group.
    for (const key of this.#stats.keys()) {
      const [g, app] = key.split("/") as [string, string];
      if (g === group.name && !group.apps.some((a) => a.name === app)) this.#cut(key);
    }
    const s = this.#sessions.get(group.name);
    if (!s) return;
    await s.reconcile(group);
    if (!s.ended) s.control.send(encode({ type: FrameType.Apps, apps: s.statuses }));
  }

  /** A group was deleted: kick its session and cut its streams. */
  groupDeleted(name: string): void {
    this.#sessions.get(name)?.end(ErrorCode.GroupDeleted, "group deleted by the administrator");
    for (const key of [...this.#stats.keys()]) if (key.startsWith(`${name}/`)) this.#cut(key);
  }

  /** A group's token changed: its session (logged in with the old one) ends, and its streams are cut. */
  tokenChanged(name: string): void {
    this.#sessions.get(name)?.end(ErrorCode.TokenChanged, "the group's token was changed by the administrator");
    // The apps stay, and so do their counters.
    for (const [key, s] of this.#stats) if (key.startsWith(`${name}/`)) for (const user of [...s.streams]) user.reset();
  }

  #cut(key: string): void {
    const s = this.#stats.get(key);
    this.#stats.delete(key);
    for (const user of s?.streams ?? []) user.reset();
  }

  /** The API's view of a group. */
  view(group: GroupRecord): GroupView {
    const s = this.#sessions.get(group.name);
    return {
      name: group.name,
      maxApps: group.maxApps,
      allowPorts: group.allowPorts,
      online: !!s,
      clientAddr: s?.clientAddr ?? null,
      onlineSince: s?.onlineSince.toISOString() ?? null,
      apps: group.apps.map((a) => {
        const st = this.#stats.get(`${group.name}/${a.name}`);
        const status = s?.statuses.find((x) => x.name === a.name);
        return {
          name: a.name,
          type: a.type,
          remotePort: a.remotePort,
          allowIPs: a.allowIPs,
          denyIPs: a.denyIPs,
          maxConnections: a.maxConnections,
          online: !!status && !status.error,
          error: status?.error || null,
          connections: st?.connections ?? 0,
          bytesIn: st?.bytesIn ?? 0,
          bytesOut: st?.bytesOut ?? 0,
          deniedConnections: st?.denied ?? 0,
          overLimitConnections: st?.overLimit ?? 0,
          droppedDatagrams: st?.dropped ?? 0,
          queueFullConnections: st?.queueFull ?? 0,
        };
      }),
    };
  }

  /** Control-port connections that have not finished their hello (bounded by maxPendingHandshakes). */
  get pendingHandshakes(): number {
    return this.#pending;
  }

  /** Number of online sessions. */
  get online(): number {
    return this.#sessions.size;
  }

  /** Closes the control port and every session; established streams are cut too. */
  stop(): void {
    if (this.#sweep) clearInterval(this.#sweep);
    this.#handshakes.clear();
    this.#listener?.stop(true);
    for (const s of [...this.#sessions.values()]) s.end(ErrorCode.ServerShutdown, "server shutting down");
    for (const key of [...this.#stats.keys()]) this.#cut(key);
  }
}
