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
import { GroupEvents } from "./events.ts";
import { History } from "../metrics/history.ts";
import { LoopLag } from "../metrics/lag.ts";
import type { ConnectionView } from "./users.ts";
import type { Cluster } from "../cluster/cluster.ts";
import type { Endpoint } from "../net/endpoint.ts";

/** Time between two looks at the refusal counters, which become events (events.ts). */
export const REFUSAL_WATCH_MS = 1000;
/** Most live connections the API lists for one group (the newest). */
export const MAX_LISTED_CONNECTIONS = 200;

/** One group in the overview: what the dashboard's first page shows of it. */
export interface GroupSummary {
  name: string;
  online: boolean;
  /** In a cluster: the node holding the session. */
  node?: string | null;
  enabled: boolean;
  clientAddr: string | null;
  clientVersion: string | null;
  onlineSince: string | null;
  apps: number;
  connections: number;
  bytesIn: number;
  bytesOut: number;
}

/** Every group in short, with the totals over all of them. */
export interface Overview {
  totals: { groups: number; groupsOnline: number; connections: number; bytesIn: number; bytesOut: number };
  groups: GroupSummary[];
}

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
  /** Users accepted so far (kept across restarts). */
  connectionsTotal: number;
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
  enabled: boolean;
  online: boolean;
  clientAddr: string | null;
  clientVersion: string | null;
  onlineSince: string | null;
  /** In a cluster: the node holding the session (null while offline). */
  node?: string | null;
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
  /** Recent events of each group (events.ts). */
  readonly events = new GroupEvents();
  /** Traffic history and totals kept in the registry's database (history.ts). */
  readonly history: History;
  readonly lag = new LoopLag();
  #watch: Timer | null = null;
  /** Refusal counts as last seen by the watch, per "group/app". */
  readonly #refusalsSeen = new Map<string, [denied: number, overLimit: number, queueFull: number]>();
  /** The shared HTTP and HTTPS ports (set by the server before clients log in), or null. */
  vhosts: Vhosts | null = null;
  /** This node's part in a cluster (set by the server when `database` is configured), or null. */
  cluster: Cluster | null = null;
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
    this.history = new History(this.metrics, store.history());
    this.#sessions = new Sessions(this, new Auth(registry, this.guard), config.heartbeatTimeoutMs, this.events);
    this.#port = new ControlPort(config.bindAddr, config.handshakeTimeoutMs, this.guard, this.#sessions);
    this.#sessions.port = this.#port;
    store.onChange((c) => {
      // Routes first: an app a session binds in `#changed` must be reachable by its (new) domain.
      const name = c.kind === "deleted" ? c.name : c.group.name;
      this.vhosts?.router.update(name, c.kind === "deleted" ? undefined : c.group);
      // Captures of apps removed or no longer inspected go at once: capture off means nothing kept.
      this.vhosts?.settings.inspections?.pruneGroup(name, c.kind === "deleted" ? undefined : c.group);
      this.cluster?.changed(c.kind === "deleted" ? c.name : c.group.name);
      return this.#changed(c);
    });
  }

  /** Acts on a stored change: the group's session follows it at once. */
  #changed(c: RegistryChange): Promise<void> | void {
    if (c.kind === "updated" && c.group.disabled) return this.#sessions.get(c.group.name)?.end(ErrorCode.GroupDisabled, "the group was disabled by the administrator");
    if (c.kind === "updated") return this.#groupChanged(c.group);
    if (c.kind === "deleted") return this.#groupDeleted(c.name);
    if (c.kind === "token") return this.#tokenChanged(c.group.name);
  }

  /** Opens the control port (TLS only, when `tls` is given) and starts the heartbeat sweep; returns the port bound. */
  listen(port: number, tls?: { cert: string; key: string }): number {
    const bound = this.#port.listen(port, tls);
    this.#sessions.startSweep();
    this.history.start((group, app) => !!this.registry.get(group)?.apps.some((a) => a.name === app));
    this.lag.start();
    // The refusals restored from the history happened before this start: they are the watch's starting point, not news.
    // (Taken here, not at the watch's first look at an app: an app bound later starts at zero, and refusals in its
    // first second, before that look, were lost; tests/dashboard-ops.test.ts "users refused by allowIPs...".)
    for (const [group, app, c] of this.metrics.entries()) this.#refusalsSeen.set(`${group}/${app}`, [c.denied, c.overLimit, c.queueFull]);
    this.#watch = setInterval(() => this.#watchRefusals(), REFUSAL_WATCH_MS);
    this.#watch.unref();
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
  ended(session: Session, reason: string): void {
    this.#sessions.ended(session, reason);
    void this.cluster?.ended(session);
  }

  serving(session: Session, apps: readonly string[]): void {
    void this.cluster?.online(session, apps);
  }

  beforeLogin(group: string): void {
    this.cluster?.beforeLogin(group);
  }

  /** A user another node carried here for `group`'s session on this node; a string says why it cannot be served. */
  acceptForwarded(user: Endpoint, group: string, app: string): string | null {
    const s = this.#sessions.get(group);
    if (!s || s.ended) return `group "${group}" is not online on this node`;
    const a = s.app(app);
    if (!a) return `app "${app}" of group "${group}" is not served`;
    if (a.record.type === "udp") return `app "${app}" is a udp app: its datagrams come on a channel, not as a stream`;
    s.acceptUser(user, app);
    return null;
  }

  /** A channel of datagrams another node received for `group`'s UDP app `app` (frames after `first`); a string says why not. */
  acceptForwardedUdp(ep: Endpoint, group: string, app: string, first: Uint8Array): string | null {
    const s = this.#sessions.get(group);
    if (!s || s.ended) return `group "${group}" is not online on this node`;
    const a = s.app(app);
    if (!a?.relay) return `app "${app}" of group "${group}" is not a udp app served here`;
    a.relay(ep, first);
    return null;
  }

  /** The type of `group`'s app `app` as registered, if any. */
  appType(group: string, app: string): string | undefined {
    return this.registry.get(group)?.apps.find((a) => a.name === app)?.type;
  }

  /** Ends a group's session at the administrator's request (the client reconnects); false when it is offline. */
  kick(name: string): boolean {
    const s = this.#sessions.get(name);
    if (!s) return false;
    s.end(ErrorCode.Kicked, "session ended by the administrator");
    return true;
  }

  /** The live user connections of a group, newest first. */
  connections(name: string): ConnectionView[] {
    return this.users.list(name, MAX_LISTED_CONNECTIONS);
  }

  /** Turns rises in the refusal counters into events: the refusal paths stay as cheap as a counter. */
  #watchRefusals(): void {
    for (const [group, app, c] of this.metrics.entries()) {
      const k = `${group}/${app}`;
      // Not seen yet: counters created after the start (an app bound since), which began at zero.
      const seen = this.#refusalsSeen.get(k) ?? [0, 0, 0];
      const rose = [c.denied - seen[0], c.overLimit - seen[1], c.queueFull - seen[2]];
      if (!rose[0] && !rose[1] && !rose[2]) continue;
      const reasons = ["allowIPs/denyIPs", "maxConnections", "queue full (maxPendingUsers)"];
      for (const [i, n] of rose.entries()) {
        if (n > 0) this.events.add(group, { kind: "refused", app, reason: reasons[i], message: `users of ${app} refused: ${reasons[i]}` }, n);
      }
      this.#refusalsSeen.set(k, [c.denied, c.overLimit, c.queueFull]);
    }
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
    this.history.forget(group, app);
    if (app === undefined) this.events.forget(group);
    for (const k of [...this.#refusalsSeen.keys()]) if (app === undefined ? k.startsWith(`${group}/`) : k === `${group}/${app}`) this.#refusalsSeen.delete(k);
  }

  /** The API's view of a group. */
  view(group: GroupRecord): GroupView {
    const s = this.#sessions.get(group.name);
    return {
      name: group.name,
      maxApps: group.maxApps,
      allowPorts: group.allowPorts,
      bandwidthLimit: group.bandwidthLimit,
      enabled: !group.disabled,
      // In a cluster: online on any node, and which (the session's details are the holding node's to show).
      online: !!s || !!this.cluster?.nodeOf(group.name),
      ...(this.cluster ? { node: s ? this.cluster.node : this.cluster.nodeOf(group.name) } : {}),
      clientAddr: s?.clientAddr ?? null,
      clientVersion: s?.clientVersion ?? null,
      onlineSince: s?.onlineSince.toISOString() ?? null,
      apps: group.apps.map((a) => {
        const st = this.metrics.peek(group.name, a.name);
        const status = s?.statuses.find((x) => x.name === a.name);
        // In a cluster: the other nodes' counts added (as of their last sync), and served if the holding node serves it.
        const far = this.cluster?.elsewhere(group.name, a.name);
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
          online: (!!status && !status.error) || !!this.cluster?.servedElsewhere(group.name, a.name),
          error: status?.error || null,
          connections: (st?.connections ?? 0) + (far?.connections ?? 0),
          connectionsTotal: (st?.accepted ?? 0) + (far?.accepted ?? 0),
          bytesIn: (st?.bytesIn ?? 0) + (far?.bytesIn ?? 0),
          bytesOut: (st?.bytesOut ?? 0) + (far?.bytesOut ?? 0),
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

  /** Every group in short, for the dashboard's overview: one pass over the registry, no per-app objects. */
  overview(groups: readonly GroupRecord[] = this.registry.list()): Overview {
    const totals = { groups: groups.length, groupsOnline: 0, connections: 0, bytesIn: 0, bytesOut: 0 };
    const out: GroupSummary[] = [];
    for (const g of groups) {
      const s = this.#sessions.get(g.name);
      let connections = 0;
      let bytesIn = 0;
      let bytesOut = 0;
      for (const a of g.apps) {
        const st = this.metrics.peek(g.name, a.name);
        // In a cluster, what the other nodes counted too (as of their last exchange).
        const far = this.cluster?.elsewhere(g.name, a.name);
        connections += (st?.connections ?? 0) + (far?.connections ?? 0);
        bytesIn += (st?.bytesIn ?? 0) + (far?.bytesIn ?? 0);
        bytesOut += (st?.bytesOut ?? 0) + (far?.bytesOut ?? 0);
      }
      const node = s ? (this.cluster?.node ?? null) : (this.cluster?.nodeOf(g.name) ?? null);
      if (s || node) totals.groupsOnline++;
      totals.connections += connections;
      totals.bytesIn += bytesIn;
      totals.bytesOut += bytesOut;
      out.push({ name: g.name, online: !!s || !!node, ...(this.cluster ? { node } : {}), enabled: !g.disabled, clientAddr: s?.clientAddr ?? null, clientVersion: s?.clientVersion ?? null, onlineSince: s?.onlineSince.toISOString() ?? null, apps: g.apps.length, connections, bytesIn, bytesOut });
    }
    return { totals, groups: out };
  }

  /** What a Prometheus scrape reads (lib/metrics/prometheus.ts). */
  metricsSource(): MetricsSource {
    const sessions = this.#sessions;
    return {
      logins: sessions.logins,
      loopLagSeconds: this.lag.takeMax(),
      groups: this.registry.list().length,
      groupsOnline: sessions.size,
      apps: () => this.metrics.entries(),
      pools: function* () {
        for (const s of sessions.all()) yield [s.group.name, s.pooled] as [string, number];
      },
      socketsOpen: sockets.open,
      inspectBytes: this.vhosts?.settings.inspections?.bytes ?? 0,
    };
  }

  /** Number of online sessions. */
  get online(): number {
    return this.#sessions.size;
  }

  /** Closes the control port and every session; established streams are cut too. */
  stop(): void {
    if (this.#watch) clearInterval(this.#watch);
    this.lag.stop();
    // The last batch of traffic goes to the store before it is closed: totals survive a restart.
    this.history.stop();
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
