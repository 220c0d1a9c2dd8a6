/**
 * The client's lifecycle: self-registration, login, heartbeats and reconnects
 * with backoff. Work connections and their streams live in work.ts. It prints
 * nothing itself: client.ts turns its events into output.
 */
import type { SocketHandler, TLSOptions } from "bun";
import { EventEmitter } from "node:events";
import { encode, ErrorCode, FrameReader, FrameType, hostPort, loginProof, withMagic, type AppStatus, type Message } from "../../protocol.ts";
import { parseHostPort } from "../addr.ts";
import { normalizeFingerprint, type ClientApp, type ClientConfig } from "../config/client-schema.ts";
import { log } from "../log.ts";
import { Endpoint, type Counters } from "../net/endpoint.ts";
import { KEEPALIVE_MS, relayHandler } from "../net/sockets.ts";
import type { UdpCounters } from "./udp.ts";
import { register } from "./register.ts";
import { VERSION } from "../version.ts";
import { WorkConnections, type LocalApp, type WorkLimits } from "./work.ts";

/** A login that gets no answer within this time is abandoned. */
export const LOGIN_TIMEOUT_MS = 10_000;
/** First reconnect delay; it doubles per failure. */
export const BACKOFF_MIN_MS = 250;
/** Longest reconnect delay. */
export const BACKOFF_MAX_MS = 30_000;
/** Time allowed for the self-registration request. */
export const REGISTER_TIMEOUT_MS = 10_000;
/** Reconnect delay after `attempt` failures: exponential up to BACKOFF_MAX_MS, with jitter over its upper half so many clients do not reconnect in lockstep. */
export function backoffDelay(attempt: number, random: number = Math.random()): number {
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  return Math.round(cap / 2 + (random * cap) / 2);
}

/** Knobs for tests; production uses the defaults. */
export interface ConnectorOptions extends WorkLimits {
  /** Replaces LOGIN_TIMEOUT_MS. */
  readonly loginTimeoutMs?: number;
  /** Replaces REGISTER_TIMEOUT_MS. */
  readonly registerTimeoutMs?: number;
  /** The PEM text of `tls.trustedCaFile` (see `readTrustedCa`): required when that is set. */
  readonly trustedCa?: string;
}

/** Reads the client's `tls.trustedCaFile`, if one is set, for `ConnectorOptions.trustedCa`; throws when it cannot be read. */
export async function readTrustedCa(config: ClientConfig): Promise<string | undefined> {
  const file = config.tls.enabled ? config.tls.trustedCaFile : undefined;
  return file === undefined ? undefined : Bun.file(file).text();
}

/** The connector's events and their arguments. */
export interface ConnectorEvents {
  /** Logged in: the public endpoint of each declared app. */
  online: [apps: readonly AppStatus[]];
  /** The server changed the apps (an API change). */
  apps: [apps: readonly AppStatus[]];
  /** The session was lost; the connector reconnects by itself. */
  offline: [reason: string];
  /** Stopped for good: retrying cannot help. */
  fatal: [reason: string];
  /** The server's certificate was refused, or it wants TLS. */
  tlsError: [message: string];
}

/** One group's client: logs in, keeps the session alive, and reconnects until `stop`. */
export class Connector extends EventEmitter<ConnectorEvents> {
  #control: Endpoint | null = null;
  #attempt = 0;
  #timers = new Set<Timer>();
  #heartbeat: Timer | null = null;
  #lastSeen = 0;
  #seq = 0;
  #stopped = false;
  #registered = false;
  /** Public endpoints from the last login or update. */
  statuses: readonly AppStatus[] = [];
  online = false;
  /** Since when the session is up (while online). */
  onlineSince: Date | null = null;
  /** The last thing that went wrong (a lost session, a refused dial, what the server said), with when. */
  lastError: { readonly at: Date; readonly message: string } | null = null;
  readonly #work: WorkConnections;
  /** The apps served now, by name: changed in place by `reconfigure`, read by every new stream. */
  readonly #apps: Map<string, LocalApp>;
  readonly #loginTimeoutMs: number;
  readonly #registerTimeoutMs: number;
  readonly #serverHandler: SocketHandler<Endpoint>;
  /** Why the last dial of the control connection failed, for the reconnect line. */
  #dialError: string | null = null;
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
      this.#serverHandler = relayHandler(
        undefined,
        (socket, authError) => {
        const got = normalizeFingerprint(socket.getPeerCertificate()?.fingerprint256 ?? "");
        if (!got) return `TLS handshake with the server failed: does the server have [tls] enabled?${authError ? ` (${authError.message})` : ""}`;
        if (pin) return got === pin ? null : `server certificate fingerprint mismatch: expected ${pin}, got ${got}`;
        return authError ? `server certificate not trusted (${authError.message}); its fingerprint is ${got}` : null;
        },
        (ep, err) => this.#connectFailed(ep, err),
      );
    } else this.#serverHandler = relayHandler(undefined, undefined, (ep, err) => this.#connectFailed(ep, err));
    this.#loginTimeoutMs = options.loginTimeoutMs ?? LOGIN_TIMEOUT_MS;
    this.#registerTimeoutMs = options.registerTimeoutMs ?? REGISTER_TIMEOUT_MS;
    this.#apps = new Map<string, LocalApp>(config.apps.map((a) => [a.name, { ...a, ...parseHostPort(a.localAddr)! }]));
    this.#work = new WorkConnections(
      {
        config,
        apps: this.#apps,
        token: config.token,
        control: () => (this.online ? this.#control : null),
        dial: (ep) => this.#dialServer(ep),
      },
      options,
    );
  }

  /** The apps as the server is told them (Login, Declare). */
  #declared(): { name: string; type: LocalApp["type"] }[] {
    return [...this.#apps.values()].map((a) => ({ name: a.name, type: a.type }));
  }

  /**
   * Applies a changed app list (a reloaded client.toml) without a new login: new streams use
   * the new local addresses and PROXY options at once, and a changed set of apps is declared
   * to the server, which answers with their public ports ("apps" event). Streams already open
   * go on; a UDP app keeps its old local address until its work connection is replaced.
   */
  reconfigure(apps: readonly ClientApp[]): void {
    const before = JSON.stringify(this.#declared());
    this.#apps.clear();
    for (const a of apps) this.#apps.set(a.name, { ...a, ...parseHostPort(a.localAddr)! });
    const declared = this.#declared();
    if (JSON.stringify(declared) !== before && this.online) this.#control?.send(encode({ type: FrameType.Declare, apps: declared }));
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
    if (this.#registered) return true;
    this.#registered = await register(this.config, this.#registerTimeoutMs);
    return this.#registered;
  }

  async #connect(): Promise<void> {
    if (this.#stopped) return;
    if (!(await this.#register())) return this.#retry("registration failed");
    if (this.#stopped) return;
    const ep = new Endpoint();
    const reader = new FrameReader();
    this.#control = ep;
    let loggedIn = false;
    this.#dialError = null;
    const loginTimer = setTimeout(() => {
      if (loggedIn) return;
      // No socket yet: the connect itself never completed (packets dropped on the way, or a host that is down).
      if (!ep.socket) this.#dialError = `no answer to the connection attempt within ${this.#loginTimeoutMs / 1000} s (a firewall dropping packets, or the host down?)`;
      log.warn("no login answer in time; retrying", { server: this.#serverName(), timeoutMs: this.#loginTimeoutMs, connected: !!ep.socket });
      ep.destroy();
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
      e.socket?.setKeepAlive?.(true, KEEPALIVE_MS);
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
      if (this.#control === ep) this.#lost(loggedIn ? "control connection closed" : (this.#dialError ?? "could not log in"));
    };
    this.#dialServer(ep);
  }

  /** A dial to the server failed: say why, in words a person can act on. */
  #connectFailed(ep: Endpoint, err: Error): void {
    const code = (err as NodeJS.ErrnoException).code ?? "";
    const server = this.#serverName();
    const why =
      code === "ECONNREFUSED" ? `connection refused by ${server} (is the server running, and is serverPort right?)`
      : code === "ENOTFOUND" || code === "EAI_NONAME" || code === "EAI_AGAIN" ? `the name "${this.config.servers[this.#server]!.host}" could not be resolved (${code})`
      : code === "ETIMEDOUT" ? `connecting to ${server} timed out`
      : code === "EHOSTUNREACH" || code === "ENETUNREACH" ? `no route to ${server} (${code})`
      : `cannot connect to ${server} (${code || err.message})`;
    if (ep === this.#control) {
      this.#dialError = why;
      log.warn("cannot reach the server", { server, error: why });
    } else log.warn("work connection could not connect", { server, error: why });
  }

  #tlsError(message: string): void {
    this.lastError = { at: new Date(), message };
    log.error(message, { server: this.#serverName() });
    this.emit("tlsError", message);
  }

  #dialServer(ep: Endpoint): void {
    const server = this.config.servers[this.#server]!;
    Bun.connect<Endpoint>({
      hostname: server.host,
      port: server.port,
      data: ep,
      allowHalfOpen: true,
      tls: this.#serverTls,
      socket: this.#serverHandler,
    }).catch(() => {
      // connectError has already closed the endpoint.
    });
  }

  #serverName(): string {
    const server = this.config.servers[this.#server]!;
    return hostPort(server.host, server.port);
  }
  /** Which of config.servers is dialed now. */
  #server = 0;

  /** The host of the server dialed now (with `servers`, the one the client is logged in to while online). */
  get serverHost(): string {
    return this.config.servers[this.#server]!.host;
  }

  /** Handles one control message; false when the connection is finished. */
  #onControl(ep: Endpoint, msg: Message): boolean {
    switch (msg.type) {
      case FrameType.Challenge:
        ep.send(
          encode({
            type: FrameType.Login,
            group: this.config.group,
            proof: loginProof(this.config.token, msg.nonce, this.config.group),
            apps: this.#declared(),
            client: `warren-client ${VERSION}`,
          }),
        );
        return true;
      case FrameType.LoginOk:
        this.#work.start(msg.sessionId);
        this.#attempt = 0;
        this.online = true;
        this.onlineSince = new Date();
        this.#setStatuses(msg.apps);
        this.#startHeartbeat(ep);
        this.emit("online", msg.apps);
        return true;
      case FrameType.Apps:
        this.#setStatuses(msg.apps);
        this.emit("apps", msg.apps);
        return true;
      case FrameType.OpenWork:
        this.#work.want(msg.count);
        return true;
      case FrameType.StreamEnd:
        this.#work.streamEnd(msg.seq, msg.bytes);
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
    // A refused login: the same token can only fail again, and each failure counts toward the lockout of this address.
    const fatal =
      code === ErrorCode.SessionReplaced ? "another client logged in as this group; stopping"
      : code === ErrorCode.TokenChanged ? "the group's token was changed on the server; put the new token in client.toml and start again"
      : code === ErrorCode.AuthFailed ? "the server refused the login (authentication failed): check group and token in client.toml, then start again"
      : null;
    if (fatal) {
      this.lastError = { at: new Date(), message: fatal };
      log.error(fatal, { group: this.config.group, detail: message });
      this.emit("fatal", message);
      this.stop();
      return false;
    }
    log.warn("server closed the session", { group: this.config.group, reason: message, code: ErrorCode[code] ?? code });
    ep.destroy();
    return false;
  }

  #setStatuses(apps: readonly AppStatus[]): void {
    this.statuses = apps;
    for (const a of apps) if (a.error) log.error("app not served", { group: this.config.group, app: a.name, reason: a.error });
  }

  #startHeartbeat(ep: Endpoint): void {
    const intervalMs = this.config.heartbeatIntervalMs;
    const timeoutMs = this.config.heartbeatTimeoutMs;
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
    this.#work.lost();
    if (this.online) {
      this.online = false;
      this.onlineSince = null;
      this.emit("offline", reason);
    }
    this.#retry(reason);
  }

  #retry(reason: string): void {
    this.lastError = { at: new Date(), message: reason };
    if (this.#stopped) return;
    // Several servers (one cluster): each retry tries the next one, in order, round and round.
    this.#server = (this.#server + 1) % this.config.servers.length;
    const delay = backoffDelay(this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 20);
    log.info("reconnecting", { server: this.#serverName(), reason, inMs: delay });
    this.#later(delay, () => void this.#connect());
  }

  /** Counters of a UDP app's current work connection (peers, expiries, evictions, drops). */
  udpCounters(app: string): UdpCounters | undefined {
    return this.#work.udpCounters(app);
  }

  /** Streams open now and bytes to and from one TCP app's local address, since the client started. */
  traffic(app: string): Counters {
    return this.#work.traffic(app);
  }

  /** Idle work connections held for the server, those being dialed included: as many as the server asks for. */
  get idleWork(): number {
    return this.#work.idle;
  }

  /** The server this client talks to, as "host:port". */
  get server(): string {
    return this.#serverName();
  }

  /** Stops for good: closes the session, idle work connections and streams. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const t of this.#timers) clearTimeout(t);
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#work.stop();
    const control = this.#control;
    this.#control = null;
    control?.destroy();
    this.online = false;
  }
}
