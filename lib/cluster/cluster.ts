/**
 * Several servers as one (issue 20): which node holds each online group's
 * session, kept as a lease in PostgreSQL that its node renews, and told to
 * every node with NOTIFY. A node that holds a group serves it as today; every
 * other node opens the group's public apps too and carries their users over a
 * link to the holder (remote.ts, link.ts, peer-port.ts). A login on another
 * node takes the lease over: the old holder ends its session when told. A node
 * that dies stops renewing; its leases expire after heartbeatTimeout and any
 * node removes them, so its groups' clients can log in elsewhere. Every tick
 * also re-reads the leases, so a notification missed while the database was
 * unreachable is made up for.
 */
import type { SQL } from "bun";
import { ErrorCode } from "../../protocol.ts";
import { log } from "../log.ts";
import type { AppCounters } from "../metrics/counters.ts";
import type { GroupRecord } from "../registry/types.ts";
import type { Session } from "../server/session.ts";
import type { ServerSettings } from "../server/settings.ts";
import { PeerLink } from "./link.ts";
import { RemoteGroup } from "./remote.ts";

/** The NOTIFY channel of leases. */
const CHANNEL = "warren_cluster";
/** How often a node writes its apps' counters for the others, and reads theirs (the API shows sums over nodes). */
export const TRAFFIC_SYNC_MS = 10_000;
/** Serialises schema creation among nodes starting at once. */
const SCHEMA_LOCK = 0x5741_5252; // "WARR"

/** This node's part in the cluster (server.toml). */
export interface ClusterOptions {
  readonly node: string;
  /** Where other nodes reach this node's peer port ("host:port"). */
  readonly peerAddr: string;
  readonly clusterToken: string;
  /** A lease not renewed for this long has expired (heartbeatTimeout). */
  readonly heartbeatTimeoutMs: number;
  readonly tls?: { rejectUnauthorized: boolean; ca?: string };
}

/** What the cluster needs from its server. */
export interface ClusterHost {
  readonly settings: ServerSettings;
  statsFor(group: string, app: string): AppCounters;
  /** Every app's counters on this node. */
  counters(): Iterable<[group: string, app: string, counters: AppCounters]>;
  group(name: string): GroupRecord | undefined;
  session(name: string): Session | undefined;
}

/** What the other nodes counted for one app. */
export interface Elsewhere {
  bytesIn: number;
  bytesOut: number;
  accepted: number;
  connections: number;
}

interface Lease {
  readonly node: string;
  readonly session: string;
  readonly apps: readonly string[];
}

/** One node of the cluster. */
export class Cluster {
  readonly #leases = new Map<string, Lease>();
  readonly #remote = new Map<string, RemoteGroup>();
  readonly #links = new Map<string, PeerLink>();
  #timer: Timer | null = null;
  #trafficTimer: Timer | null = null;
  /** "group/app" -> the sums of the other nodes' counters, as last read. */
  #elsewhere = new Map<string, Elsewhere>();
  /** "group/app" -> what this node last wrote (only changes are written). */
  readonly #pushed = new Map<string, string>();
  #unlisten: (() => Promise<void>) | null = null;
  #stopped = false;
  /** Since when this node has reached the database at every tick (null: the last tick failed). */
  #dbUpSince: number | null = null;

  constructor(
    readonly sql: SQL,
    readonly opts: ClusterOptions,
    readonly host: ClusterHost,
  ) {}

  get node(): string {
    return this.opts.node;
  }

  /** Creates the tables (once, under a lock), registers this node, listens, and opens the groups other nodes hold. */
  async start(): Promise<void> {
    await this.sql.begin(async (tx) => {
      await tx`SELECT pg_advisory_xact_lock(${SCHEMA_LOCK})`;
      await tx`CREATE TABLE IF NOT EXISTS warren_nodes (name text PRIMARY KEY, peer_addr text NOT NULL, seen_at timestamptz NOT NULL)`;
      await tx`CREATE TABLE IF NOT EXISTS warren_leases (grp text PRIMARY KEY, node text NOT NULL, session text NOT NULL, apps text NOT NULL, expires_at timestamptz NOT NULL)`;
      await tx`CREATE TABLE IF NOT EXISTS warren_traffic (node text NOT NULL, grp text NOT NULL, app text NOT NULL, bytes_in bigint NOT NULL, bytes_out bigint NOT NULL, accepted bigint NOT NULL, connections integer NOT NULL, PRIMARY KEY (node, grp, app))`;
    });
    await this.sql`INSERT INTO warren_nodes (name, peer_addr, seen_at) VALUES (${this.node}, ${this.opts.peerAddr}, now())
      ON CONFLICT (name) DO UPDATE SET peer_addr = EXCLUDED.peer_addr, seen_at = now()`;
    // Leases this node held before a restart are stale: its sessions are gone.
    await this.sql`DELETE FROM warren_leases WHERE node = ${this.node}`;
    this.#dbUpSince = performance.now();
    const sub = await this.sql.listen(CHANNEL, (payload: string) => void this.#told(payload));
    this.#unlisten = () => sub.unlisten();
    await this.#resync();
    const tick = Math.max(200, Math.floor(this.opts.heartbeatTimeoutMs / 3));
    this.#timer = setInterval(() => void this.#tick(), tick);
    this.#timer.unref();
    this.#trafficTimer = setInterval(() => void this.syncTraffic(), TRAFFIC_SYNC_MS);
    this.#trafficTimer.unref();
  }

  /** What the other nodes counted for `group`/`app` (as of the last sync, at most TRAFFIC_SYNC_MS old). */
  elsewhere(group: string, app: string): Elsewhere | undefined {
    return this.#elsewhere.get(`${group}/${app}`);
  }

  /** Whether another node serves `group`'s `app` now (the group's lease is theirs and lists it). */
  servedElsewhere(group: string, app: string): boolean {
    const l = this.#leases.get(group);
    return !!l && l.node !== this.node && l.apps.includes(app);
  }

  /** Writes this node's changed counters and reads the others' sums; errors wait for the next round. */
  async syncTraffic(): Promise<void> {
    if (this.#syncing) return; // a round slower than TRAFFIC_SYNC_MS is not overlapped by the next
    this.#syncing = true;
    try {
      for (const [group, app, c] of this.host.counters()) {
        const k = `${group}/${app}`;
        const v = `${c.bytesIn}/${c.bytesOut}/${c.accepted}/${c.connections}`;
        // Apps that never carried anything here have nothing to add: no row.
        if (this.#pushed.get(k) === v || v === "0/0/0/0") continue;
        await this.sql`INSERT INTO warren_traffic (node, grp, app, bytes_in, bytes_out, accepted, connections)
          VALUES (${this.node}, ${group}, ${app}, ${c.bytesIn}, ${c.bytesOut}, ${c.accepted}, ${c.connections})
          ON CONFLICT (node, grp, app) DO UPDATE SET bytes_in = EXCLUDED.bytes_in, bytes_out = EXCLUDED.bytes_out, accepted = EXCLUDED.accepted, connections = EXCLUDED.connections`;
        this.#pushed.set(k, v);
      }
      const rows = await this.sql`SELECT grp, app, sum(bytes_in)::float8 AS i, sum(bytes_out)::float8 AS o, sum(accepted)::float8 AS a, sum(connections)::float8 AS c
        FROM warren_traffic WHERE node <> ${this.node} GROUP BY grp, app`;
      const next = new Map<string, Elsewhere>();
      for (const r of rows) next.set(`${r.grp}/${r.app}`, { bytesIn: r.i, bytesOut: r.o, accepted: r.a, connections: r.c });
      this.#elsewhere = next;
    } catch (err) {
      log.warn("cluster: could not exchange traffic counters; the next round tries again", { error: (err as Error).message });
    } finally {
      this.#syncing = false;
    }
  }

  /** The node holding `group`'s session, or null when it is offline everywhere. */
  nodeOf(group: string): string | null {
    return this.#leases.get(group)?.node ?? null;
  }

  /** A login for `group` is about to be served here: the ports this node opened for another holder are given back first. */
  beforeLogin(group: string): void {
    const r = this.#remote.get(group);
    if (!r) return;
    r.close();
    this.#remote.delete(group);
  }

  /** A session came online here: the lease becomes this node's, and every node is told (an old holder ends its session). */
  async online(s: Session, apps: readonly string[]): Promise<void> {
    const lease: Lease = { node: this.node, session: s.idHex, apps };
    this.#leases.set(s.group.name, lease);
    try {
      await this.sql`INSERT INTO warren_leases (grp, node, session, apps, expires_at)
        VALUES (${s.group.name}, ${this.node}, ${s.idHex}, ${JSON.stringify(apps)}, now() + ${this.opts.heartbeatTimeoutMs / 1000} * interval '1 second')
        ON CONFLICT (grp) DO UPDATE SET node = EXCLUDED.node, session = EXCLUDED.session, apps = EXCLUDED.apps, expires_at = EXCLUDED.expires_at`;
      await this.sql`SELECT pg_notify(${CHANNEL}, ${JSON.stringify({ g: s.group.name })})`;
    } catch (err) {
      log.error("cluster: could not record a session's lease; other nodes do not forward to it until the database answers", { group: s.group.name, error: (err as Error).message });
    }
  }

  /** A session here ended: its lease goes (if it is still its own), and every node closes the group's ports. */
  async ended(s: Session): Promise<void> {
    const mine = this.#leases.get(s.group.name);
    if (mine?.node === this.node && mine.session === s.idHex) this.#leases.delete(s.group.name);
    if (this.#stopped) return;
    try {
      const gone = await this.sql`DELETE FROM warren_leases WHERE grp = ${s.group.name} AND node = ${this.node} AND session = ${s.idHex} RETURNING grp`;
      if (gone.length) await this.sql`SELECT pg_notify(${CHANNEL}, ${JSON.stringify({ g: s.group.name })})`;
    } catch (err) {
      log.warn("cluster: could not remove a session's lease; it expires by itself", { group: s.group.name, error: (err as Error).message });
    }
  }

  /** The registry changed: groups served here for other nodes follow (apps added, changed, removed; a deleted group closes). */
  changed(name: string): void {
    if (!this.host.group(name)) {
      // A deleted group's counters go from the table too (by whichever node hears of it; each deletes its own rows).
      void this.sql`DELETE FROM warren_traffic WHERE grp = ${name} AND node = ${this.node}`.catch(() => {});
    }
    const r = this.#remote.get(name);
    if (!r) return;
    const g = this.host.group(name);
    const lease = this.#leases.get(name);
    if (!g || g.disabled || !lease) {
      r.close();
      this.#remote.delete(name);
      return;
    }
    void r.reconcile(g, lease.apps);
  }

  /** Groups served here for another node, with the apps open. */
  remoteGroups(): { group: string; node: string; apps: string[] }[] {
    return [...this.#remote.values()].map((r) => ({ group: r.groupName, node: r.node, apps: r.open }));
  }

  /** Links to other nodes, and whether each is up. */
  links(): { node: string; up: boolean; streams: number }[] {
    return [...this.#links.values()].map((l) => ({ node: l.remote, up: l.up, streams: l.streams }));
  }

  /** Leaves the cluster: this node's leases go at once (their clients reconnect elsewhere), links close. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#trafficTimer) clearInterval(this.#trafficTimer);
    for (const r of this.#remote.values()) r.close();
    this.#remote.clear();
    for (const l of this.#links.values()) l.stop();
    this.#links.clear();
    try {
      await this.#unlisten?.();
      const gone = await this.sql`DELETE FROM warren_leases WHERE node = ${this.node} RETURNING grp`;
      for (const row of gone) await this.sql`SELECT pg_notify(${CHANNEL}, ${JSON.stringify({ g: row.grp })})`;
    } catch (err) {
      log.warn("cluster: could not remove this node's leases at stop; they expire by themselves", { error: (err as Error).message });
    }
  }

  /** A notification: one group's lease changed; the row itself says how (a payload is only a hint, never trusted for who holds it). */
  async #told(payload: string): Promise<void> {
    let g: string;
    try {
      g = (JSON.parse(payload) as { g: string }).g;
      if (typeof g !== "string") return;
    } catch {
      return log.warn("cluster: malformed notification ignored", { channel: CHANNEL });
    }
    // Tried twice: Bun.SQL 1.4.5 now and then fails a query of a healthy pool ("Expected either hostname or unix").
    for (let attempt = 1; ; attempt++) {
      try {
        const rows = await this.sql`SELECT node, session, apps FROM warren_leases WHERE grp = ${g} AND (expires_at > now() OR ${!this.#trusted()})`;
        return this.#apply(g, rows[0] ? { node: rows[0].node, session: rows[0].session, apps: JSON.parse(rows[0].apps) } : null);
      } catch (err) {
        if (attempt < 2 && !this.#stopped) continue;
        return log.warn("cluster: could not read a lease after a notification; the next tick catches up", { group: g, error: (err as Error).message });
      }
    }
  }

  /** Whether this node has reached the database for a whole heartbeatTimeout: only then does an old expires_at mean a dead node. */
  #trusted(): boolean {
    return this.#dbUpSince !== null && performance.now() - this.#dbUpSince >= this.opts.heartbeatTimeoutMs;
  }

  /** Brings this node in line with the lease of `group` (null: online nowhere). */
  #apply(group: string, lease: Lease | null): void {
    const local = this.host.session(group);
    if (lease && lease.node !== this.node && local && !local.ended) {
      // Another node's login took the group over: this node's session ends, as on one server.
      local.end(ErrorCode.SessionReplaced, `session replaced by a login on node ${lease.node}`);
    }
    if (lease && lease.node === this.node) {
      // This node's own lease: nothing to forward.
      this.#leases.set(group, lease);
      return this.beforeLogin(group);
    }
    if (!lease) {
      // Gone everywhere, unless this node's own session is online (its lease is written again at the next tick).
      if (!(local && !local.ended)) this.#leases.delete(group);
      const r = this.#remote.get(group);
      if (r) {
        r.close();
        this.#remote.delete(group);
      }
      return;
    }
    this.#leases.set(group, lease);
    const g = this.host.group(group);
    if (!g || g.disabled) return;
    let r = this.#remote.get(group);
    if (r && r.node !== lease.node) {
      r.close();
      this.#remote.delete(group);
      r = undefined;
    }
    if (!r) {
      r = new RemoteGroup(g, lease.node, this.#link(lease.node), this.host.settings, (grp, app) => this.host.statsFor(grp, app));
      this.#remote.set(group, r);
    }
    void r.reconcile(g, lease.apps);
  }

  /** The link to `node` (started on first use; its address is read from the nodes table). */
  #link(node: string): PeerLink {
    let l = this.#links.get(node);
    if (l) return l;
    const address = () => {
      const addr = this.#peerAddrs.get(node);
      if (!addr) return null;
      const i = addr.lastIndexOf(":");
      return { host: addr.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(addr.slice(i + 1)) };
    };
    l = new PeerLink(node, address, {
      node: this.node,
      clusterToken: this.opts.clusterToken,
      heartbeatMs: Math.max(200, Math.floor(this.opts.heartbeatTimeoutMs / 3)),
      tls: this.opts.tls,
    });
    this.#links.set(node, l);
    // A node not read yet (it joined after this one's last read) is looked up now, not at the next tick.
    if (!this.#peerAddrs.has(node)) void this.#readNodes().catch(() => {});
    l.start();
    return l;
  }
  readonly #peerAddrs = new Map<string, string>();

  /** Renews this node's leases, removes expired ones (a dead node's), and re-reads every lease. */
  async #tick(): Promise<void> {
    // One at a time: a tick slower than the interval (many leases, a slow database) is not overlapped by the next.
    if (this.#ticking) return;
    this.#ticking = true;
    const now = performance.now();
    try {
      await this.sql`UPDATE warren_nodes SET seen_at = now() WHERE name = ${this.node}`;
      // Every lease of this node renewed by one statement (10,000 one at a time could not keep up with a
      // 3 s heartbeatTimeout); then the exceptions, rare: a row whose session is gone here is removed, and a
      // live session whose row was removed (while the database was away) is written again.
      const live = new Map<string, Lease>();
      for (const [group, lease] of this.#leases) {
        if (lease.node !== this.node) continue;
        const s = this.host.session(group);
        if (s && !s.ended && s.idHex === lease.session) live.set(group, lease);
      }
      const renewed = await this.sql`UPDATE warren_leases SET expires_at = now() + ${this.opts.heartbeatTimeoutMs / 1000} * interval '1 second'
        WHERE node = ${this.node} RETURNING grp, session`;
      const held = new Set<string>();
      for (const row of renewed) {
        // Asked again now, not from the list above: a session may have come online during the UPDATE.
        const s = this.host.session(row.grp);
        if (s && !s.ended && s.idHex === row.session) held.add(row.grp);
        else {
          await this.sql`DELETE FROM warren_leases WHERE grp = ${row.grp} AND node = ${this.node} AND session = ${row.session}`;
          await this.sql`SELECT pg_notify(${CHANNEL}, ${JSON.stringify({ g: row.grp })})`;
        }
      }
      for (const [group, lease] of live) {
        if (held.has(group)) continue;
        const rows = await this.sql`INSERT INTO warren_leases (grp, node, session, apps, expires_at)
          VALUES (${group}, ${this.node}, ${lease.session}, ${JSON.stringify(lease.apps)}, now() + ${this.opts.heartbeatTimeoutMs / 1000} * interval '1 second')
          ON CONFLICT (grp) DO NOTHING RETURNING grp`;
        // Written again after someone removed it: the other nodes are told, not left to their next tick.
        if (rows.length) await this.sql`SELECT pg_notify(${CHANNEL}, ${JSON.stringify({ g: group })})`;
      }
      this.#dbUpSince ??= now;
      // Another node's lease is judged expired only by a node that has itself reached the database for a whole
      // heartbeatTimeout: after an outage every lease looks expired, and the live holders need a tick to renew.
      const expired = this.#trusted() ? await this.sql`DELETE FROM warren_leases WHERE expires_at <= now() RETURNING grp, node` : [];
      for (const row of expired) {
        log.warn("cluster: lease expired: its node stopped renewing it", { group: row.grp, node: row.node });
        await this.sql`SELECT pg_notify(${CHANNEL}, ${JSON.stringify({ g: row.grp })})`;
      }
      await this.#resync();
    } catch (err) {
      this.#dbUpSince = null;
      log.warn("cluster: database unreachable; sessions and streams go on, leases wait", { error: (err as Error).message });
    } finally {
      this.#ticking = false;
    }
  }
  #ticking = false;
  #syncing = false;

  /** Reads every node and lease and applies what differs from what this node believes. */
  async #readNodes(): Promise<void> {
    for (const row of await this.sql`SELECT name, peer_addr FROM warren_nodes`) this.#peerAddrs.set(row.name, row.peer_addr);
  }

  async #resync(): Promise<void> {
    await this.#readNodes();
    // Just after an outage every lease looks expired: until this node has been up for a heartbeatTimeout, the rows stand.
    const rows = await this.sql`SELECT grp, node, session, apps FROM warren_leases WHERE expires_at > now() OR ${!this.#trusted()}`;
    const seen = new Set<string>();
    for (const row of rows) {
      seen.add(row.grp);
      const was = this.#leases.get(row.grp);
      if (was && was.node === row.node && was.session === row.session && this.#remote.has(row.grp) === (row.node !== this.node)) continue;
      this.#apply(row.grp, { node: row.node, session: row.session, apps: JSON.parse(row.apps) });
    }
    for (const group of [...this.#leases.keys()]) if (!seen.has(group)) this.#apply(group, null);
  }
}
