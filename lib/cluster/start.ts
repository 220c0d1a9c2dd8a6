/**
 * What a server with `database` does at start (issue 20): its registry in
 * PostgreSQL (its traffic history stays in its own SQLite file), its peer
 * port, and its part in the cluster. Loaded only by such servers: one server
 * on its own needs none of it.
 */
import { hostname } from "node:os";
import { ConfigError } from "../config/load.ts";
import type { ServerConfig } from "../config/schema.ts";
import { readText } from "../files.ts";
import { log } from "../log.ts";
import { hostPort } from "../../protocol.ts";
import { PgStore } from "../registry/postgres.ts";
import type { SqliteStore } from "../registry/sqlite.ts";
import type { Hub } from "../server/hub.ts";
import { Cluster } from "./cluster.ts";
import { PeerPort } from "./peer-port.ts";

/** The database URL: the `database` key, or the first line of `databaseFile` (a ConfigError naming the key when it cannot be read). */
export async function databaseUrl(config: ServerConfig, file: string): Promise<string> {
  if (config.database !== undefined) return config.database;
  const text = await readText(config.databaseFile!).catch(() => null);
  const url = typeof text === "string" ? text.trim() : "";
  if (!url) throw new ConfigError(file, "databaseFile", `cannot read a database URL from ${config.databaseFile}`);
  if (!/^postgres(ql)?:\/\/\S+$/.test(url)) throw new ConfigError(file, "databaseFile", `${config.databaseFile} does not hold a URL like postgres://user:password@host:5432/warren`);
  return url;
}

/** The registry in PostgreSQL; `local` keeps this node's traffic history. */
export function openPgRegistry(url: string, config: ServerConfig, local: SqliteStore, probe: (port: number) => boolean, reserved: ReadonlySet<number>): Promise<PgStore> {
  return PgStore.open(url, { allow: config.allowPorts, probe, reserved, subdomainHost: config.subdomainHost ?? null, history: local.history() });
}

/** This node in the cluster: its peer port bound, its leases and links started. */
export async function joinCluster(config: ServerConfig, url: string, hub: Hub, tls?: { cert: string; key: string }): Promise<{ cluster: Cluster; peerPort: number; stop(): Promise<void> }> {
  const node = config.nodeName ?? hostname().replace(/[^A-Za-z0-9_.-]/g, "-").slice(0, 64);
  const heartbeatMs = Math.max(200, Math.floor(config.heartbeatTimeoutMs / 3));
  const port = new PeerPort({
    node,
    clusterToken: config.clusterToken!,
    guard: hub.guard,
    handshakeTimeoutMs: config.handshakeTimeoutMs,
    heartbeatMs,
    acceptForwarded: (user, group, app) => hub.acceptForwarded(user, group, app),
    acceptForwardedUdp: (ep, group, app, first) => hub.acceptForwardedUdp(ep, group, app, first),
    appType: (group, app) => hub.appType(group, app),
  });
  let bound: number;
  try {
    bound = port.listen(config.bindAddr, config.peerPort, tls);
  } catch (err) {
    port.stop();
    throw new Error(`cannot listen on the peer port ${hostPort(config.bindAddr, config.peerPort)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const peerAddr = config.peerAddr ?? hostPort(config.bindAddr, bound);
  const sql = new Bun.SQL({ url, max: 2, connectionTimeout: 5 });
  // TLS between nodes encrypts; who is at the other end is proved by the cluster token's challenge, not by the certificate.
  const cluster = new Cluster(sql, { node, peerAddr, clusterToken: config.clusterToken!, heartbeatTimeoutMs: config.heartbeatTimeoutMs, tls: tls ? { rejectUnauthorized: false } : undefined }, {
    settings: hub,
    statsFor: (g, a) => hub.statsFor(g, a),
    counters: () => hub.metrics.entries(),
    group: (n) => hub.registry.get(n),
    session: (n) => hub.session(n),
  });
  try {
    await cluster.start();
  } catch (err) {
    port.stop();
    await sql.close().catch(() => {});
    throw new Error(`cannot join the cluster through the database (${(err as Error).message})`);
  }
  hub.cluster = cluster;
  log.info("cluster: node joined", { node, peer: peerAddr });
  return {
    cluster,
    peerPort: bound,
    async stop() {
      await cluster.stop();
      port.stop();
      await sql.close().catch(() => {});
    },
  };
}
