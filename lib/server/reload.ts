/**
 * Reloading server.toml in a running server (SIGHUP, POST /api/reload): the
 * groups of the file and the log level are applied; keys that only a restart
 * can change are reported and left as they were. A file that cannot be applied
 * whole changes nothing.
 */
import type { ServerConfig } from "../config/schema.ts";
import { WarrenError } from "../errors.ts";
import { setLogLevel } from "../log.ts";
import { SqliteStore } from "../registry/sqlite.ts";
import type { RegistryStore } from "../registry/store.ts";
import type { PortSet } from "../ports.ts";

/** A server's registry (SQLite, or PostgreSQL in a cluster) with the settings a reload checks the file's groups against. */
export type ServerStore = RegistryStore & { readonly allow: PortSet; readonly reserved: ReadonlySet<number>; readonly subdomainHost: string | null };
import { ConfigError } from "../config/load.ts";

/** Keys the running server cannot change: what it listens on, where it keeps its data, its TLS material, and what its parts were built with. */
export const RESTART_KEYS = [
  "bindAddr",
  "controlPort",
  "apiHost",
  "apiPort",
  "apiTls",
  "tls",
  "dataDir",
  "adminToken",
  "allowPorts",
  "heartbeatTimeout",
  "userConnTimeout",
  "udpIdleTimeout",
  "udpReceiveBuffer",
  "handshakeTimeout",
  "poolSize",
  "maxPendingUsers",
  "loginFailureLimit",
  "loginFailureWindow",
  "loginBlockTime",
  "registrationToken",
  "metricsToken",
  "registrationMaxGroups",
  "registrationMaxApps",
  "registrationAllowPorts",
  "vhostHTTPPort",
  "vhostHTTPSPort",
  "subdomainHost",
  "certificates",
  "vhostHeaderTimeout",
  "vhostIdleTimeout",
  "vhostMaxHeaderBytes",
  "allowInspect",
  "inspectRequests",
  "inspectBodyBytes",
] as const satisfies readonly (keyof ServerConfig)[];

/** What a reload did. */
export interface ReloadResult {
  /** Keys that changed in the file but need a restart; they were left as they were. */
  readonly needsRestart: string[];
  /** The configuration now in force: the file's, with the restart keys as they were. */
  readonly config: ServerConfig;
}

/**
 * Applies `next` (read from `file`) to a server running `current` on `store`. Throws a
 * ConfigError naming the key when the file's groups cannot be applied; then nothing changed.
 */
export async function reload(current: ServerConfig, next: ServerConfig, store: ServerStore, file: string): Promise<ReloadResult> {
  const needsRestart: string[] = RESTART_KEYS.filter((k) => JSON.stringify(current[k]) !== JSON.stringify(next[k]));
  // Tried first on a scratch copy of the registry, so that a group that cannot be applied leaves every group as it was.
  const scratch = new SqliteStore(":memory:", store.allow, () => true, store.reserved, store.subdomainHost);
  try {
    for (const g of await store.list()) {
      const apps = g.apps.map((a) => ({ name: a.name, type: a.type, remotePort: a.remotePort, allowIPs: [...a.allowIPs], denyIPs: [...a.denyIPs], maxConnections: a.maxConnections }));
      await scratch.create(g.name, g.token, g.source, apps, { maxApps: g.maxApps, allowPorts: g.allowPorts ?? undefined, bandwidthLimit: g.bandwidthLimit ?? undefined });
    }
    const errors = await scratch.syncConfig(next.groups);
    if (errors.length) throw new ConfigError(file, errors[0]!.path!, errors[0]!.message, { cause: errors[0] });
  } finally {
    scratch.close();
  }
  const errors = await store.syncConfig(next.groups);
  // Not expected after the scratch run (a port taken meanwhile by another program, say): say so plainly.
  if (errors.length) throw new WarrenError("reload_partial", `${file}: ${errors[0]!.path}: ${errors[0]!.message} (the groups before it were applied)`, errors[0]!.path, { cause: errors[0] });
  setLogLevel(next.logLevel);
  const config = { ...next };
  // The restart keys stay as they were, with the durations derived from them.
  for (const k of needsRestart) for (const key of [k, `${k}Ms`]) if (key in current) (config as Record<string, unknown>)[key] = (current as Record<string, unknown>)[key];
  return { needsRestart, config };
}
