/**
 * The client's engine: self-registration, login, heartbeats, reconnects with
 * backoff, and work connections that dial the local apps.
 */
import type { SocketHandler, TLSOptions } from "bun";
import { EventEmitter } from "node:events";
import {
  encode,
  ErrorCode,
  FrameReader,
  FrameType,
  loginProof,
  proxyHeader,
  withMagic,
  workProof,
  type AppStatus,
  type Message,
  type ProxyEnd,
} from "../protocol.ts";
import { normalizeFingerprint, type ClientApp, type ClientConfig } from "./config/schema.ts";
import { parseHostPort } from "./addr.ts";
import { log } from "./log.ts";
import { chain, Endpoint } from "./net/endpoint.ts";
import { holdUntilNextPoll } from "./net/hold.ts";
import { KEEPALIVE_MS, relayHandler } from "./net/sockets.ts";
import { UdpLocal, type UdpCounters } from "./udp.ts";
import { Deadlines } from "./net/deadlines.ts";

/** A login that gets no answer within this time is abandoned. */
export const LOGIN_TIMEOUT_MS = 10_000;
/** How long dialing a local app may take before the user is told it is unreachable. */
export const LOCAL_CONNECT_TIMEOUT_MS = 5_000;
/**
 * Connects to one local app in flight at once, abandoned ones included: Bun cannot cancel a connect,
 * so one given up after LOCAL_CONNECT_TIMEOUT_MS keeps its descriptor until the kernel gives up
 * (about 2 minutes for a local app that drops SYNs). Beyond this, that app's users are refused at
 * once; counted per app, so one app that swallows connects does not starve the others.
 */
export const MAX_LOCAL_DIALS = 1024;
/** First reconnect delay; it doubles per failure. */
export const BACKOFF_MIN_MS = 250;
/** Longest reconnect delay. */
export const BACKOFF_MAX_MS = 30_000;
/** Work connections being dialed at once; the server asks in batches, this caps a runaway. */
export const MAX_WORK_DIALS = 256;
/** Work connections dialed per event-loop turn: a refill batch is spread over turns, so no single stream in flight absorbs all of its dials. */
export const DIALS_PER_TURN = 2;
/**
 * Most work connections idle, being dialed or wanted at once. A server needs at most
 * poolSize + 256 idle ones plus one per waiting user (1,288 with the defaults), so this
 * only stops a server that keeps asking from making the client hold sockets without end;
 * the server re-asks for lost ones after its request timeout.
 */
export const MAX_WANTED_WORK = 4096;
/** Time allowed for the self-registration request. */
export const REGISTER_TIMEOUT_MS = 10_000;
/**
 * Longest a successful WorkAck waits for the app's first bytes, so that both
 * leave in one write; then it is sent alone. Far below the server's wait for
 * it (userConnTimeout, 10 s by default).
 */
export const ACK_HOLD_MS = 20;
/** The answer to StartWork when the local app accepted the connection. */
const ACK_OK = encode({ type: FrameType.WorkAck, ok: true, message: "" });

/** Reconnect delay after `attempt` failures: exponential up to BACKOFF_MAX_MS, with jitter over its upper half so many clients do not reconnect in lockstep. */
export function backoffDelay(attempt: number, random: number = Math.random()): number {
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  return Math.round(cap / 2 + (random * cap) / 2);
}

/** A work connection of the current session, idle or carrying a stream. */
interface Work {
  readonly ep: Endpoint;
  /** Its WorkHello sequence number: how StreamEnd and WorkFree name it. */
  readonly seq: number;
  readonly reader: FrameReader;
  /** Parses the next StartWork while idle. */
  readonly idle: (ep: Endpoint, chunk: Uint8Array) => void;
  stream: Stream | null;
  /** A StreamEnd that came before its StartWork; -1 if none. */
  upBytes: number;
}

/** A stream between a work connection and the local app. */
interface Stream {
  readonly work: Work;
  readonly local: Endpoint;
  /** Every byte the server announced has arrived (or its FIN): the app got a FIN. */
  upEnded: boolean;
  /** The app's FIN has been told to the server. */
  downEnded: boolean;
  /** The control connection is gone: an end not told by then cannot be told (the stream is reset), and the connection closes after it. */
  noReuse: boolean;
}

/** Knobs for tests; production uses the defaults. */
export interface ConnectorOptions {
  /** Replaces LOGIN_TIMEOUT_MS. */
  readonly loginTimeoutMs?: number;
  /** Replaces LOCAL_CONNECT_TIMEOUT_MS. */
  readonly localConnectTimeoutMs?: number;
  /** Replaces REGISTER_TIMEOUT_MS. */
  readonly registerTimeoutMs?: number;
  /** Replaces MAX_WORK_DIALS. */
  readonly maxWorkDials?: number;
  /** Replaces MAX_WANTED_WORK. */
  readonly maxWantedWork?: number;
  /** Replaces MAX_LOCAL_DIALS. */
  readonly maxLocalDials?: number;
  /** The PEM text of `tls.trustedCaFile` (see `readTrustedCa`): required when that is set. */
  readonly trustedCa?: string;
}

/** Reads the client's `tls.trustedCaFile`, if one is set, for `ConnectorOptions.trustedCa`; throws when it cannot be read. */
export async function readTrustedCa(config: ClientConfig): Promise<string | undefined> {
  const file = config.tls.enabled ? config.tls.trustedCaFile : undefined;
  return file === undefined ? undefined : Bun.file(file).text();
}

/** Events: "online" (statuses), "apps" (statuses), "offline" (reason), "fatal" (reason), "tlsError" (message). */
export class Connector extends EventEmitter {
  #apps: Map<string, ClientApp & { host: string; port: number }>;
  #control: Endpoint | null = null;
  #sessionId: Uint8Array | null = null;
  #token: string;
  #attempt = 0;
  #timers = new Set<Timer>();
  #heartbeat: Timer | null = null;
  #lastSeen = 0;
  #seq = 0;
  #dials = 0;
  /** Sequence number of the next work connection of this session. */
  #workSeq = 0;
  /** Work connections holding their WorkAck; release() does nothing once the ack has gone with the app's bytes. */
  readonly #heldAcks = new Deadlines<Endpoint>(ACK_HOLD_MS, (work) => work.release());
  /** Local dials still connecting, abandoned after LOCAL_CONNECT_TIMEOUT_MS. */
  readonly #localDials: Deadlines<Endpoint>;
  /** Work connections the server asked for that are not dialed yet. */
  #wantedWork = 0;
  #pumpScheduled = false;
  #idleWork = new Set<Endpoint>();
  #streams = new Set<Endpoint>();
  /** Work connections of the current session by sequence number (sequence numbers restart with each session). */
  #works = new Map<number, Work>();
  /** One set of functions per client, not per stream. */
  readonly #workEnded = (work: Endpoint) => this.#upEnded((work.tag as Work).stream!);
  readonly #localEnded = (local: Endpoint) => this.#downEnded(((local.peer as Endpoint).tag as Work).stream!);
  #udp = new Map<string, UdpLocal>();
  #stopped = false;
  #registered = false;
  /** Public endpoints from the last login or update. */
  statuses: readonly AppStatus[] = [];
  online = false;

  readonly #loginTimeoutMs: number;
  readonly #registerTimeoutMs: number;
  readonly #maxWorkDials: number;
  readonly #maxWantedWork: number;
  readonly #maxLocalDials: number;
  /** Connects to each local app the kernel has not finished (see MAX_LOCAL_DIALS). */
  readonly #localConnecting = new Map<string, number>();

  readonly #serverHandler: SocketHandler<Endpoint>;
  readonly #serverTls: TLSOptions | undefined;

  constructor(
    readonly config: ClientConfig,
    options: ConnectorOptions = {},
  ) {
    super();
    const tls = config.tls;
    if (tls.enabled) {
      const pin = tls.serverFingerprint;
      // Read by the caller (readTrustedCa): the client loads no node:fs (lib/files.ts says why).
      const ca = tls.trustedCaFile ? options.trustedCa : undefined;
      if (tls.trustedCaFile && ca === undefined) throw new Error(`tls.trustedCaFile is set: pass its text as the trustedCa option (readTrustedCa)`);
      // With a pinned fingerprint the chain is not checked (a self-signed certificate is expected); the fingerprint is.
      this.#serverTls = { rejectUnauthorized: !pin, serverName: tls.serverName ?? config.serverAddr, ca };
      this.#serverHandler = relayHandler(undefined, (socket, authError) => {
        const got = normalizeFingerprint(socket.getPeerCertificate()?.fingerprint256 ?? "");
        if (!got) return `TLS handshake with the server failed: does the server have [tls] enabled?${authError ? ` (${authError.message})` : ""}`;
        if (pin) return got === pin ? null : `server certificate fingerprint mismatch: expected ${pin}, got ${got}`;
        return authError ? `server certificate not trusted (${authError.message}); its fingerprint is ${got}` : null;
      });
    } else this.#serverHandler = dialHandler;
    this.#loginTimeoutMs = options.loginTimeoutMs ?? LOGIN_TIMEOUT_MS;
    this.#registerTimeoutMs = options.registerTimeoutMs ?? REGISTER_TIMEOUT_MS;
    this.#maxWorkDials = options.maxWorkDials ?? MAX_WORK_DIALS;
    this.#maxWantedWork = options.maxWantedWork ?? MAX_WANTED_WORK;
    this.#maxLocalDials = options.maxLocalDials ?? MAX_LOCAL_DIALS;
    this.#localDials = new Deadlines<Endpoint>(options.localConnectTimeoutMs ?? LOCAL_CONNECT_TIMEOUT_MS, (local) => local.destroy());
    this.#token = config.token;
    this.#apps = new Map(config.apps.map((a) => [a.name, { ...a, ...parseHostPort(a.localAddr)! }]));
  }

  /** Starts connecting; reconnects by itself until `stop`. */
  start(): void {
    this.#connect();
  }

  #later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn();
    }, ms);
    this.#timers.add(t);
  }

  async #register(): Promise<boolean> {
    const { apiUrl, registrationToken, group } = this.config;
    if (!apiUrl || !registrationToken || this.#registered) return true;
    const url = new URL("/api/groups", apiUrl);
    try {
      const res = await fetch(url, {
        method: "POST",
        headers: { authorization: `Bearer ${registrationToken}`, "content-type": "application/json" },
        body: JSON.stringify({ name: group, token: this.#token, apps: this.config.apps.map((a) => ({ name: a.name, type: a.type, remotePort: a.remotePort })) }),
        signal: AbortSignal.timeout(this.#registerTimeoutMs),
      });
      const body = (await res.json().catch(() => ({}))) as { error?: string };
      if (res.status === 201) log.info("group registered with the server", { group });
      else if (res.status === 409 && /already exists/.test(body.error ?? "")) log.debug("group already registered", { group });
      else if (res.status >= 500 || res.status === 429) {
        log.warn("self-registration failed; will retry", { group, status: res.status, error: body.error });
        return false;
      } else log.error("self-registration refused; logging in anyway", { group, status: res.status, error: body.error });
      // Registered, known, or refused for good (a wrong registrationToken, a bad app): do not ask again.
      this.#registered = true;
      return true;
    } catch (err) {
      log.warn("self-registration failed; will retry", { url: url.origin, error: (err as Error).message });
      return false;
    }
  }

  async #connect(): Promise<void> {
    if (this.#stopped) return;
    if (!(await this.#register())) return this.#retry("registration failed");
    if (this.#stopped) return;
    const ep = new Endpoint();
    const reader = new FrameReader();
    this.#control = ep;
    let loggedIn = false;
    const loginTimer = setTimeout(() => {
      if (!loggedIn) {
        log.warn("no login answer in time; retrying", { server: this.#serverName(), timeoutMs: this.#loginTimeoutMs });
        ep.destroy();
      }
    }, this.#loginTimeoutMs);
    ep.onData = (e, chunk) => {
      reader.push(chunk);
      for (let res = reader.next(); res; res = reader.next()) {
        if (!res.ok) {
          if (res.error.code === ErrorCode.TlsExpected) this.#tlsError("the server wants TLS: set enabled = true in the [tls] table of client.toml");
          else log.error("protocol error from server", { error: res.error.message });
          return e.destroy();
        }
        this.#lastSeen = performance.now();
        if (!this.#onControl(e, res.msg)) return;
        if (res.msg.type === FrameType.LoginOk) {
          loggedIn = true;
          clearTimeout(loginTimer);
        }
      }
    };
    let verified = false;
    ep.onOpen = (e) => {
      verified = true;
      e.socket?.setKeepAlive(true, KEEPALIVE_MS);
      e.send(withMagic(encode({ type: FrameType.Hello })));
    };
    // Set when the handshake finished but the server was refused (a fingerprint mismatch): that message is the true one.
    let refused = false;
    ep.onTlsError = (_e, message) => {
      refused = true;
      this.#tlsError(message);
    };
    ep.onClose = () => {
      clearTimeout(loginTimer);
      if (this.config.tls.enabled && !verified && !refused && ep.socket) this.#tlsError("TLS handshake with the server failed: does the server have [tls] enabled?");
      if (this.#control === ep) this.#lost(loggedIn ? "control connection closed" : "could not log in");
    };
    this.#dialServer(ep);
  }

  #tlsError(message: string): void {
    log.error(message, { server: this.#serverName() });
    this.emit("tlsError", message);
  }

  #dialServer(ep: Endpoint): void {
    Bun.connect<Endpoint>({
      hostname: this.config.serverAddr,
      port: this.config.serverPort,
      data: ep,
      allowHalfOpen: true,
      tls: this.#serverTls,
      socket: this.#serverHandler,
    }).catch(() => {
      // connectError has already closed the endpoint.
    });
  }

  #serverName(): string {
    return `${this.config.serverAddr}:${this.config.serverPort}`;
  }

  /** Handles one control message; false when the connection is finished. */
  #onControl(ep: Endpoint, msg: Message): boolean {
    switch (msg.type) {
      case FrameType.Challenge:
        ep.send(
          encode({
            type: FrameType.Login,
            group: this.config.group,
            proof: loginProof(this.#token, msg.nonce, this.config.group),
            apps: [...this.#apps.values()].map((a) => ({ name: a.name, type: a.type })),
          }),
        );
        return true;
      case FrameType.LoginOk:
        this.#sessionId = msg.sessionId;
        this.#workSeq = 0;
        this.#attempt = 0;
        this.online = true;
        this.#setStatuses(msg.apps);
        this.#startHeartbeat(ep);
        this.emit("online", msg.apps);
        return true;
      case FrameType.Apps:
        this.#setStatuses(msg.apps);
        this.emit("apps", msg.apps);
        return true;
      case FrameType.OpenWork:
        // Dials beyond MAX_WORK_DIALS wait their turn rather than being dropped (the server counts on them).
        // Idle work connections include those being dialed.
        this.#wantedWork = Math.min(this.#wantedWork + msg.count, Math.max(0, this.#maxWantedWork - this.#idleWork.size));
        this.#pumpWork();
        return true;
      case FrameType.StreamEnd:
        this.#streamEnd(msg.seq, msg.bytes);
        return true;
      case FrameType.Pong:
        return true;
      case FrameType.Error:
        return this.#serverError(ep, msg.code, msg.message);
      default:
        log.error("unexpected message from server", { type: msg.type });
        ep.destroy();
        return false;
    }
  }

  #serverError(ep: Endpoint, code: ErrorCode, message: string): boolean {
    // Errors after which retrying cannot help. Another client logged in as this group: fighting it would flap both.
    // The token was changed: the old one can only fail, and its failures would lock this address out (other groups' clients behind it too).
    const fatal =
      code === ErrorCode.SessionReplaced ? "another client logged in as this group; stopping"
      : code === ErrorCode.TokenChanged ? "the group's token was changed on the server; put the new token in client.toml and start again"
      : null;
    if (fatal) {
      log.error(fatal, { group: this.config.group, detail: message });
      this.emit("fatal", message);
      this.stop();
      return false;
    }
    const level = code === ErrorCode.AuthFailed ? "error" : "warn";
    log[level]("server closed the session", { group: this.config.group, reason: message, code: ErrorCode[code] ?? code });
    ep.destroy();
    return false;
  }

  #setStatuses(apps: readonly AppStatus[]): void {
    this.statuses = apps;
    for (const a of apps) {
      if (a.error) log.error("app not served", { group: this.config.group, app: a.name, reason: a.error });
      else console.log(`warren: app ${a.name} (${a.type}) is reachable at ${this.config.serverAddr}:${a.remotePort}`);
    }
  }

  #startHeartbeat(ep: Endpoint): void {
    const intervalMs = this.config.heartbeatInterval * 1000;
    const timeoutMs = this.config.heartbeatTimeout * 1000;
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = setInterval(() => {
      // Monotonic: a wall-clock step must not look like a silent server.
      if (performance.now() - this.#lastSeen > timeoutMs) {
        log.warn("no answer from the server within heartbeatTimeout; reconnecting", { server: this.#serverName() });
        ep.destroy();
        return;
      }
      ep.send(encode({ type: FrameType.Ping, seq: this.#seq++ >>> 0 }));
    }, Math.min(intervalMs, timeoutMs / 2));
  }

  #lost(reason: string): void {
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = null;
    this.#control = null;
    this.#sessionId = null;
    this.#wantedWork = 0;
    // An idle connection may still be sending the last bytes of a finished stream: they go out first.
    for (const w of this.#idleWork) w.endWhenFlushed();
    this.#idleWork.clear();
    // Streams go on carrying bytes, but an end not told by now can never be: such a direction ends with a reset.
    for (const w of this.#works.values()) if (w.stream) w.stream.noReuse = true;
    this.#works = new Map();
    if (this.online) {
      this.online = false;
      this.emit("offline", reason);
    }
    this.#retry(reason);
  }

  #retry(reason: string): void {
    if (this.#stopped) return;
    const delay = backoffDelay(this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 20);
    log.info("reconnecting", { server: this.#serverName(), reason, inMs: delay });
    this.#later(delay, () => void this.#connect());
  }

  #pumpWork(): void {
    if (this.#stopped) return;
    for (let i = 0; i < DIALS_PER_TURN && this.#wantedWork > 0 && this.#dials < this.#maxWorkDials && this.#sessionId; i++) {
      this.#wantedWork--;
      this.#openWork();
    }
    if (this.#wantedWork > 0 && this.#dials < this.#maxWorkDials && !this.#pumpScheduled) {
      this.#pumpScheduled = true;
      setImmediate(() => {
        this.#pumpScheduled = false;
        this.#pumpWork();
      });
    }
  }

  #openWork(): void {
    const sessionId = this.#sessionId;
    if (!sessionId) return;
    const seq = this.#workSeq++;
    this.#dials++;
    const ep = new Endpoint();
    const reader = new FrameReader();
    let counted = true;
    const uncount = () => {
      if (counted) {
        this.#dials--;
        counted = false;
        this.#pumpWork();
      }
    };
    const idle = (e: Endpoint, chunk: Uint8Array) => {
      reader.push(chunk);
      for (let res = reader.next(); res; res = reader.next()) {
        if (!res.ok) {
          log.warn("protocol error on a work connection", { error: res.error.message });
          return e.destroy();
        }
        const msg = res.msg;
        if (msg.type === FrameType.StartWork) {
          this.#idleWork.delete(e);
          this.#streams.add(e);
          return this.#startWork(w, msg.app, msg.userAddr, msg.publicAddr, reader.rest());
        } else {
          if (msg.type === FrameType.Error) log.debug("work connection refused", { reason: msg.message });
          return e.destroy();
        }
      }
    };
    const w: Work = { ep, seq, reader, idle, stream: null, upBytes: -1 };
    ep.tag = w;
    // A stream's end is its StreamEnd count: a FIN alone (a killed server) resets the local app's connection.
    ep.countedEnd = true;
    this.#works.set(seq, w);
    this.#idleWork.add(ep);
    ep.onOpen = (e) => {
      uncount();
      e.socket?.setKeepAlive(true, KEEPALIVE_MS);
      // No challenge to wait for: the proof covers this connection's sequence number, which the server takes once.
      e.send(withMagic(encode({ type: FrameType.WorkHello, sessionId, seq, proof: workProof(this.#token, sessionId, seq) })));
    };
    ep.onClose = (e, aborted) => {
      uncount();
      const s = w.stream;
      if (s && !(s.upEnded && s.downEnded)) log.warn("stream reset: its work connection closed before the stream ended", { how: aborted ? "reset" : "closed" });
      this.#idleWork.delete(e);
      this.#streams.delete(e);
      if (this.#works.get(seq) === w) this.#works.delete(seq);
    };
    ep.onData = idle;
    this.#dialServer(ep);
  }

  /** Dials the local app for a user; the user's first bytes (`pending`) wait in the local side's queue. */
  #startWork(w: Work, appName: string, userAddr: string, publicAddr: string, pending: Uint8Array): void {
    const work = w.ep;
    const app = this.#apps.get(appName);
    if (!app) {
      work.send(encode({ type: FrameType.WorkAck, ok: false, message: `unknown app "${appName}"` }));
      return work.endWhenFlushed();
    }
    if (app.type === "udp") return this.#startUdp(work, app, pending);
    if ((this.#localConnecting.get(appName) ?? 0) >= this.#maxLocalDials) {
      log.warn("too many connects to the local app unfinished; refusing a user", { app: appName, localAddr: app.localAddr, user: userAddr, limit: this.#maxLocalDials });
      work.send(encode({ type: FrameType.WorkAck, ok: false, message: `too many connects to local app ${app.localAddr} unfinished (${this.#maxLocalDials})` }));
      return work.endWhenFlushed();
    }
    const local = new Endpoint();
    const s: Stream = { work: w, local, upEnded: false, downEnded: false, noReuse: this.#works.get(w.seq) !== w };
    w.stream = s;
    work.onData = null;
    work.onEnd = this.#workEnded;
    work.peer = local;
    // Queued before the user's bytes: the app reads it first, whenever its connection opens.
    if (app.proxyProtocol) local.write(proxyHeader(app.proxyProtocol, endOf(userAddr), endOf(publicAddr)), null);
    work.forward(pending);
    if (w.upBytes >= 0) {
      const bytes = w.upBytes;
      w.upBytes = -1;
      if (!work.endAfter(bytes)) return this.#broken(s, "more bytes than its stream-end announced");
    }
    let opened = false;
    this.#localDials.add(local);
    local.onOpen = (l) => {
      opened = true;
      this.#localDials.delete(l);
      this.#holdAck(work);
      l.onOpen = l.onClose = null; // joined: from here the relay closes each side with the other
      l.onEnd = this.#localEnded;
      l.pipe(work);
      log.debug("stream open", { app: appName, user: userAddr });
    };
    local.onClose = (l) => {
      this.#localDials.delete(l);
      if (opened || work.closed) return; // joined, or the work connection went first (logged there)
      log.warn("local app unreachable", { app: appName, localAddr: app.localAddr, user: userAddr });
      work.peer = null;
      work.onEnd = null;
      work.send(encode({ type: FrameType.WorkAck, ok: false, message: `local app ${app.localAddr} is unreachable` }));
      work.endWhenFlushed();
    };
    const counts = this.#localConnecting;
    counts.set(appName, (counts.get(appName) ?? 0) + 1);
    const settled = () => {
      const n = counts.get(appName)! - 1;
      if (n > 0) counts.set(appName, n);
      else counts.delete(appName);
    };
    try {
      // Settles when the kernel is done with the connect (open or error), however long after our own timeout.
      Bun.connect<Endpoint>({ hostname: app.host, port: app.port, data: local, allowHalfOpen: true, socket: dialHandler }).then(settled, settled);
    } catch (err) {
      settled(); // a throw before any connect (not seen with checked addresses): nothing is in flight
      log.warn("cannot connect to the local app", { app: appName, localAddr: app.localAddr, error: (err as Error).message });
      local.destroy();
    }
  }

  /** The server's StreamEnd: the user's bytes on work connection `seq` end after `bytes`. */
  #streamEnd(seq: number, bytes: number): void {
    const w = this.#works.get(seq);
    if (!w) return; // closed meanwhile
    const s = w.stream;
    if (!s) w.upBytes = bytes; // before its StartWork: applied when that comes
    else if (!s.upEnded && !w.ep.endAfter(bytes)) this.#broken(s, "more bytes than its stream-end announced");
  }

  /** Every byte the server announced has arrived (or its FIN): the app gets a FIN. */
  #upEnded(s: Stream): void {
    if (s.upEnded) return;
    s.upEnded = true;
    if (s.downEnded) this.#finish(s);
    else s.local.shutdownWhenFlushed();
  }

  /** The app sent FIN: tell the server how many bytes to expect. */
  #downEnded(s: Stream): void {
    if (s.downEnded) return;
    s.downEnded = true;
    const control = this.#control;
    // Without the control connection the server cannot learn the count, and a FIN would prove nothing to it.
    if (s.noReuse || !control || !this.online) return this.#cut(s, "the app's end came after the control connection was lost");
    s.work.ep.release(); // a WorkAck held for the app's first bytes: none will come
    holdUntilNextPoll(control, encode({ type: FrameType.StreamEnd, seq: s.work.seq, bytes: s.local.relayed }));
    if (s.upEnded) this.#finish(s);
  }

  /** Both directions ended: the work connection leaves the app and waits for the next StartWork, or closes. */
  #finish(s: Stream): void {
    const w = s.work;
    const work = w.ep;
    // Parted first: the app may close at once, and must not take the work connection with it.
    work.unpipe();
    // The app's socket closes once its last bytes are taken; an app that stops reading is cut after LINGER_MS.
    s.local.endWhenFlushed();
    w.stream = null;
    const control = this.#control;
    if (s.noReuse || work.readEnded || !control || this.#works.get(w.seq) !== w) return work.endWhenFlushed();
    holdUntilNextPoll(control, encode({ type: FrameType.WorkFree, seq: w.seq }));
    w.reader.reopen();
    work.onData = w.idle;
    this.#streams.delete(work);
    this.#idleWork.add(work);
  }

  #broken(s: Stream, why: string): void {
    log.warn("protocol error on a work connection; resetting the stream", { error: why });
    s.local.reset();
    s.work.ep.reset();
  }

  /** Resets a stream whose end cannot be proven: the app sees a reset, never a clean end after fewer bytes. */
  #cut(s: Stream, why: string): void {
    log.warn("stream reset: its end cannot be confirmed", { reason: why });
    s.local.reset();
    s.work.ep.reset();
  }

  /** Holds a successful WorkAck until the app's first bytes, a FIN, or ACK_HOLD_MS. */
  #holdAck(work: Endpoint): void {
    work.hold(ACK_OK);
    this.#heldAcks.add(work);
  }

  /** Serves a UDP app on this work connection: datagram frames in, one local socket per public peer. */
  #startUdp(work: Endpoint, app: ClientApp & { host: string; port: number }, pending: Uint8Array): void {
    const udp = new UdpLocal(work, app, this.config.udpIdleTimeout * 1000, this.config.udpMaxPeers);
    this.#udp.set(app.name, udp);
    work.send(encode({ type: FrameType.WorkAck, ok: true, message: "" }));
    const feed = (ep: Endpoint, chunk: Uint8Array) => {
      const err = udp.push(chunk);
      if (err) {
        log.warn("bad datagram frame from server", { app: app.name, error: err.message });
        ep.destroy();
      }
    };
    work.onData = feed;
    work.onClose = chain(work.onClose, () => {
      udp.close();
      if (this.#udp.get(app.name) === udp) this.#udp.delete(app.name);
    });
    if (pending.length) feed(work, pending);
  }

  /** Counters of a UDP app's current work connection (peers, expiries, evictions, drops). */
  udpCounters(app: string): UdpCounters | undefined {
    return this.#udp.get(app)?.counters;
  }

  /** Stops for good: closes the session, idle work connections and streams. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const t of this.#timers) clearTimeout(t);
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heldAcks.clear();
    this.#localDials.clear();
    // No dial may start after this: a pump queued for the next turn, or a dial's close, would open one.
    this.#sessionId = null;
    this.#wantedWork = 0;
    const control = this.#control;
    this.#control = null;
    control?.destroy();
    for (const w of [...this.#idleWork, ...this.#streams]) w.destroy();
    this.online = false;
  }
}


/** One handler for every socket the client dials. */
const dialHandler = relayHandler();

/** An "ip:port" of StartWork as a PROXY header end; one that does not parse makes the header say "unknown". */
function endOf(addr: string): ProxyEnd {
  const hp = parseHostPort(addr);
  return hp ? { ip: hp.host, port: hp.port } : { ip: "", port: 0 };
}
