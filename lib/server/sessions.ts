/**
 * The directory of online groups: one session per group (a new authenticated
 * login takes over), found by group name or by session id; and the sweep
 * that drops sessions whose client went quiet.
 */
import { ErrorCode, FrameType, randomBytes, SESSION_ID_BYTES, type Message } from "../../protocol.ts";
import { log } from "../log.ts";
import type { Endpoint } from "../net/endpoint.ts";
import type { Auth } from "./auth.ts";
import type { ControlPort, Handoff, Handshake } from "./control-port.ts";
import { Session, type SessionHost } from "./session.ts";
import type { GroupEvents } from "./events.ts";
import type { RegistryView } from "../registry/view.ts";

/** Longest gap between heartbeat sweeps; shorter heartbeat timeouts sweep more often. */
export const MAX_SWEEP_INTERVAL_MS = 1000;

/** The online sessions of one server. */
export class Sessions implements Handoff {
  readonly #byGroup = new Map<string, Session>();
  readonly #byId = new Map<string, Session>();
  #sweep: Timer | null = null;
  /** Set once the control port exists (it is built with this object as its handoff). */
  port: ControlPort | null = null;

  /** Logins by result, for warren_logins_total. */
  readonly logins = { ok: 0, failed: 0, blocked: 0, disabled: 0, refused: 0 };

  constructor(
    readonly host: SessionHost & { readonly registry: RegistryView },
    readonly auth: Auth,
    readonly heartbeatTimeoutMs: number,
    readonly events: GroupEvents,
  ) {}

  /** A login: checked, then it becomes the group's session (replacing one still online). */
  login(ep: Endpoint, hs: Handshake, msg: Extract<Message, { type: FrameType.Login }>): void {
    const res = this.auth.login(hs, hs.nonce!, msg, hs.reader.buffered);
    if (!res.ok) {
      this.#loginRefused(hs, msg.group, res.code, res.message);
      return this.port!.refuse(ep, res.code, res.message);
    }
    const group = res.group;
    const old = this.#byGroup.get(group.name);
    // The new login is authenticated: it takes over, and the old session's ports pass to it.
    if (old) {
      this.events.add(group.name, { kind: "takeover", addr: hs.ip, message: `a new login from ${hs.addr} replaced the client at ${old.clientAddr}` });
      old.end(ErrorCode.SessionReplaced, `session replaced by a new login from ${hs.addr}`);
    } else this.events.add(group.name, { kind: "login", addr: hs.ip, message: `logged in from ${hs.addr}${msg.client ? ` (${msg.client})` : ""}` });
    this.logins.ok++;
    // In a cluster, ports this node opened for another node's session of the group are given back first.
    this.host.beforeLogin?.(group.name);
    const session = new Session(this.host, randomBytes(SESSION_ID_BYTES), group, ep, msg.apps, hs.addr, msg.client ?? null);
    this.#byGroup.set(group.name, session);
    this.#byId.set(session.idHex, session);
    session.open(hs.reader);
  }

  /** Counts a refused login, and notes it in the group's events when the group exists (a guess at an unknown name is only counted). */
  #loginRefused(hs: Handshake, group: string, code: ErrorCode, message: string): void {
    const result = code === ErrorCode.AuthFailed ? "failed" : code === ErrorCode.Blocked ? "blocked" : code === ErrorCode.GroupDisabled ? "disabled" : "refused";
    this.logins[result]++;
    if (!this.host.registry.get(group)) return;
    this.events.add(group, { kind: "login_failed", addr: hs.ip, reason: result, message: result === "failed" ? `login with a wrong token from ${hs.ip}` : `login from ${hs.ip} refused: ${message}` });
  }

  /** A work connection's hello: checked, then it joins its session's pool. */
  workHello(ep: Endpoint, hs: Handshake, msg: Extract<Message, { type: FrameType.WorkHello }>): void {
    const res = this.auth.workHello(hs, this.#byId.get(Buffer.from(msg.sessionId).toString("hex")), msg, hs.reader.buffered);
    if (!res.ok) return this.port!.refuse(ep, res.code, res.message);
    res.session.addWork(ep, hs.reader, msg.seq);
  }

  /** Starts the heartbeat sweep. */
  startSweep(): void {
    const interval = Math.min(MAX_SWEEP_INTERVAL_MS, this.heartbeatTimeoutMs / 4);
    this.#sweep = setInterval(() => this.#checkHeartbeats(), interval);
  }

  #checkHeartbeats(): void {
    // Monotonic, like lastSeen: a wall-clock step (a time sync, a resumed VM) drops no session.
    const now = performance.now();
    const deadline = now - this.heartbeatTimeoutMs;
    for (const s of this.#byGroup.values()) {
      s.trimIdle(now);
      if (s.lastSeen < deadline) {
        log.warn("heartbeat timeout; dropping session", { group: s.group.name, client: s.clientAddr });
        s.end(ErrorCode.HeartbeatTimeout, "no heartbeat within heartbeatTimeout");
      }
    }
  }

  /** A session has ended: forget it unless it was already replaced. */
  ended(session: Session, reason: string): void {
    if (this.#byGroup.get(session.group.name) === session) {
      this.#byGroup.delete(session.group.name);
      this.events.add(session.group.name, { kind: "offline", addr: session.clientAddr.replace(/:\d+$/, ""), message: `offline: ${reason}` });
    }
    this.#byId.delete(session.idHex);
  }

  /** The online session of a group, if any. */
  get(name: string): Session | undefined {
    return this.#byGroup.get(name);
  }

  /** Every online session. */
  all(): IterableIterator<Session> {
    return this.#byGroup.values();
  }

  /** Number of online sessions. */
  get size(): number {
    return this.#byGroup.size;
  }

  /** Ends every session and the sweep. */
  stop(code: ErrorCode, reason: string): void {
    if (this.#sweep) clearInterval(this.#sweep);
    for (const s of [...this.#byGroup.values()]) s.end(code, reason);
  }
}
