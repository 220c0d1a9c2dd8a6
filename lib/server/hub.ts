/**
 * The server's core, wired from its parts: the control port (control-port.ts),
 * who may log in (auth.ts), the online sessions (sessions.ts), the counters
 * (lib/metrics) and the live users. The API acts on the server through it.
 */
import { ErrorCode } from "../../protocol.ts";
import type { ServerConfig } from "../config/schema.ts";
import { LoginGuard } from "../guard.ts";
import { Metrics, type AppCounters } from "../metrics/counters.ts";
import type { RegistryStore } from "../registry/store.ts";
import { HTTP_RECORD_KEYS, type AppRecord, type GroupRecord, type RegistryChange } from "../registry/types.ts";
import type { RegistryView } from "../registry/view.ts";
import { Auth } from "./auth.ts";
import { ControlPort } from "./control-port.ts";
import { Sessions } from "./sessions.ts";
import { WORK_REQUEST_TIMEOUT_MS, type Session, type SessionHost } from "./session.ts";
import { LiveUsers } from "./users.ts";
import type { Vhosts } from "./http/edge.ts";
import type { MetricsSource } from "../metrics/prometheus.ts";
import { sockets } from "../net/sockets.ts";

/** Live state of one app, as the API shows it. */
export interface AppView {
  name: string;
  type: string;
  remotePort: number;
  allowIPs: readonly string[];
  denyIPs: readonly string[];
  maxConnections: number;
  bandwidthLimit: string | null;
  /** Where users reach an HTTP or HTTPS app. */
  urls: string[];
  online: boolean;
  error: string | null;
  connections: number;
  bytesIn: number;
  bytesOut: number;
  deniedConnections: number;
  overLimitConnections: number;
  droppedDatagrams: number;
  kernelDroppedDatagrams: number;
  queueFullConnections: number;
}

/** Live state of one group, as the API shows it. */
export interface GroupView {
  name: string;
  maxApps: number;
  allowPorts: string | null;
  bandwidthLimit: string | null;
  online: boolean;
  clientAddr: string | null;
  onlineSince: string | null;
  apps: AppView[];
}

/** One server's control port, sessions and counters. */
export class Hub implements SessionHost {
  readonly bindAddr: string;
  readonly poolSize: number;
  readonly userConnTimeoutMs: number;
  readonly maxPendingUsers: number;
  readonly udpIdleTimeoutMs: number;
  readonly udpReceiveBuffer: number;
  /** WORK_REQUEST_TIMEOUT_MS, held here so a test need not wait 5 s for a re-request; not a config key. */
  workRequestTimeoutMs = WORK_REQUEST_TIMEOUT_MS;
  /** Failed logins per source address, shared with the API. */
  readonly guard: LoginGuard;
  readonly metrics = new Metrics();
  readonly users = new LiveUsers();
  /** The shared HTTP and HTTPS ports (set by the server before clients log in), or null. */
  vhosts: Vhosts | null = null;
  readonly #sessions: Sessions;
  readonly #port: ControlPort;

  constructor(
    config: ServerConfig,
    /** Where groups are written; its announcements reach the sessions through `#changed`. */
    readonly store: RegistryStore,
    /** The groups as last announced, read where no wait is allowed (a login, the API's pages). */
    readonly registry: RegistryView,
  ) {
    this.bindAddr = config.bindAddr;
    this.poolSize = config.poolSize;
    this.userConnTimeoutMs = config.userConnTimeoutMs;
    this.maxPendingUsers = config.maxPendingUsers;
    this.udpIdleTimeoutMs = config.udpIdleTimeoutMs;
    this.udpReceiveBuffer = config.udpReceiveBuffer;
    this.guard = new LoginGuard(config.loginFailureLimit, config.loginFailureWindowMs, config.loginBlockTimeMs);
    this.#sessions = new Sessions(this, new Auth(registry, this.guard), config.heartbeatTimeoutMs);
    this.#port = new ControlPort(config.bindAddr, config.handshakeTimeoutMs, this.guard, this.#sessions);
    this.#sessions.port = this.#port;
    store.onChange((c) => {
      // Routes first: an app a session binds in `#changed` must be reachable by its (new) domain.
      this.vhosts?.router.rebuild(this.registry.list());
      return this.#changed(c);
    });
  }

  /** Acts on a stored change: the group's session follows it at once. */
  #changed(c: RegistryChange): Promise<void> | void {
    if (c.kind === "updated") return this.#groupChanged(c.group);
    if (c.kind === "deleted") return this.#groupDeleted(c.name);
    if (c.kind === "token") return this.#tokenChanged(c.group.name);
  }

  /** Opens the control port (TLS only, when `tls` is given) and starts the heartbeat sweep; returns the port bound. */
  listen(port: number, tls?: { cert: string; key: string }): number {
    const bound = this.#port.listen(port, tls);
    this.#sessions.startSweep();
    return bound;
  }

  /** MAX_PENDING_HANDSHAKES in force (see ControlPort). */
  get maxPendingHandshakes(): number {
    return this.#port.maxPendingHandshakes;
  }

  set maxPendingHandshakes(n: number) {
    this.#port.maxPendingHandshakes = n;
  }

  /** Counters of one app; they outlive sessions and go with the app. */
  statsFor(group: string, app: string): AppCounters {
    return this.metrics.app(group, app);
  }

  /** A session has ended: forget it unless it was already replaced. */
  ended(session: Session): void {
    this.#sessions.ended(session);
  }

  /** The online session of a group, if any. */
  session(name: string): Session | undefined {
    return this.#sessions.get(name);
  }

  /** Applies a changed app list to the group's online session at once; apps removed lose their users and counters. */
  async #groupChanged(group: GroupRecord): Promise<void> {
    for (const app of this.metrics.appsOf(group.name)) {
      if (!group.apps.some((a) => a.name === app)) this.#forget(group.name, app);
    }
    // Reconcile errors are logged by the session; the API still answers with the stored group.
    await this.#sessions.get(group.name)?.update(group);
  }

  /** A group was deleted: kick its session and cut its streams. */
  #groupDeleted(name: string): void {
    this.#sessions.get(name)?.end(ErrorCode.GroupDeleted, "group deleted by the administrator");
    this.#forget(name);
  }

  /** A group's token changed: its session (logged in with the old one) ends, and its streams are cut. */
  #tokenChanged(name: string): void {
    this.#sessions.get(name)?.end(ErrorCode.TokenChanged, "the group's token was changed by the administrator");
    // The apps stay, and so do their counters.
    this.users.cut(name);
  }

  /** Cuts the users of one app (or of the whole group) and forgets its counters. */
  #forget(group: string, app?: string): void {
    this.users.cut(group, app);
    this.metrics.forget(group, app);
  }

  /** The API's view of a group. */
  view(group: GroupRecord): GroupView {
    const s = this.#sessions.get(group.name);
    return {
      name: group.name,
      maxApps: group.maxApps,
      allowPorts: group.allowPorts,
      bandwidthLimit: group.bandwidthLimit,
      online: !!s,
      clientAddr: s?.clientAddr ?? null,
      onlineSince: s?.onlineSince.toISOString() ?? null,
      apps: group.apps.map((a) => {
        const st = this.metrics.peek(group.name, a.name);
        const status = s?.statuses.find((x) => x.name === a.name);
        return {
          name: a.name,
          type: a.type,
          remotePort: a.remotePort,
          allowIPs: a.allowIPs,
          denyIPs: a.denyIPs,
          maxConnections: a.maxConnections,
          bandwidthLimit: a.bandwidthLimit ?? null,
          ...httpView(a),
          urls: this.vhosts?.urls(a) ?? [],
          online: !!status && !status.error,
          error: status?.error || null,
          connections: st?.connections ?? 0,
          bytesIn: st?.bytesIn ?? 0,
          bytesOut: st?.bytesOut ?? 0,
          deniedConnections: st?.denied ?? 0,
          overLimitConnections: st?.overLimit ?? 0,
          droppedDatagrams: st?.dropped ?? 0,
          kernelDroppedDatagrams: st?.kernelDropped ?? 0,
          queueFullConnections: st?.queueFull ?? 0,
          ...(a.type === "http" ? { requests: st?.requests ?? 0 } : {}),
        };
      }),
    };
  }

  /** Control-port connections that have not finished their hello (bounded by maxPendingHandshakes). */
  get pendingHandshakes(): number {
    return this.#port.pending;
  }

  /** What a Prometheus scrape reads (lib/metrics/prometheus.ts). */
  metricsSource(): MetricsSource {
    const sessions = this.#sessions;
    return {
      groups: this.registry.list().length,
      groupsOnline: sessions.size,
      apps: () => this.metrics.entries(),
      pools: function* () {
        for (const s of sessions.all()) yield [s.group.name, s.pooled] as [string, number];
      },
      socketsOpen: sockets.open,
    };
  }

  /** Number of online sessions. */
  get online(): number {
    return this.#sessions.size;
  }

  /** Closes the control port and every session; established streams are cut too. */
  stop(): void {
    this.#port.stop();
    this.#sessions.stop(ErrorCode.ServerShutdown, "server shutting down");
    this.users.cutAll();
  }
}

/** An HTTP app's keys as the API shows them: the Basic-auth password never, only whether one is set. */
function httpView(a: AppRecord): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of HTTP_RECORD_KEYS) if (a[k] !== undefined && k !== "httpPassword") out[k] = a[k];
  if (a.httpPassword !== undefined) out.basicAuth = true;
  return out;
}
