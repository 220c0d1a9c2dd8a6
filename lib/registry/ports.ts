/**
 * Public ports for apps: an asked-for port is checked against allowPorts (the
 * server's, narrowed by the group's), the server's own ports and every other
 * app; an app asking for port 0 is given a free one from the range, once, and
 * keeps it. Whether a port is free is asked of an injected probe (binding it).
 */
import { PortSet } from "../ports.ts";
import { HTTP_RECORD_KEYS, RegistryError, servedByDomain, type AppInput, type AppRecord, type RegistryErrorCode } from "./types.ts";

/** The ports in play, as a store knows them. */
export interface PortSpace {
  /** The server's allowPorts. */
  readonly allow: PortSet;
  /** The server's own ports (control and API): never given to a TCP app. */
  readonly reserved: ReadonlySet<number>;
  /** Whether a TCP port can be bound now. */
  probe(port: number): boolean;
  /** The group holding "type:port", if any. */
  owner(key: string): string | undefined;
  /** The name of `group`'s app on "type:port", for messages. */
  appAt(group: string, key: string): string | undefined;
}

/** Checks asked-for ports and chooses ports for apps that asked for 0. */
export function resolvePorts(
  space: PortSpace,
  group: string,
  apps: readonly AppInput[],
  previous: readonly AppRecord[],
  maxApps: number,
  groupPorts: string | null,
): { ok: true; apps: AppRecord[] } | { ok: false; error: RegistryError } {
  if (maxApps > 0 && apps.length > maxApps) {
    return { ok: false, error: new RegistryError("too_many_apps", `group "${group}" may have at most ${maxApps} app${maxApps === 1 ? "" : "s"}, not ${apps.length}`, "apps") };
  }
  // A group's own range narrows the server's: a port must be in both.
  const own = groupPorts ? (PortSet.parse(groupPorts) as PortSet) : null;
  const allowed = (p: number) => space.allow.has(p) && (!own || own.has(p));
  const range = own ?? space.allow;
  // "tcp:port" -> owner among the other groups, from the index.
  const taken = {
    has: (key: string) => {
      const g = space.owner(key);
      return g !== undefined && g !== group;
    },
    get: (key: string) => {
      const g = space.owner(key);
      if (g === undefined || g === group) return undefined;
      return `${g}/${space.appAt(g, key) ?? "?"}`;
    },
  };
  const out: AppRecord[] = [];
  const mine = new Set<string>();
  const fail = (code: RegistryErrorCode, i: number, message: string) => ({ ok: false as const, error: new RegistryError(code, message, `apps[${i}].remotePort`) });
  // Explicit ports first, so that a chosen port never lands on one asked for later in the list.
  for (const [i, a] of apps.entries()) {
    if (a.remotePort === 0 || servedByDomain(a.type)) continue;
    const key = `${a.type}:${a.remotePort}`;
    if (!allowed(a.remotePort)) return fail("port_not_allowed", i, `port ${a.remotePort} is outside allowPorts${own ? ` (the server's, narrowed by the group's "${groupPorts}")` : ""}`);
    if (space.reserved.has(a.remotePort) && a.type === "tcp") return fail("port_taken", i, `port ${a.remotePort} is used by the server itself`);
    const owner = taken.get(key);
    if (owner) return fail("port_taken", i, `${a.type} port ${a.remotePort} is taken by ${owner}`);
    if (mine.has(key)) return fail("port_taken", i, `${a.type} port ${a.remotePort} is used twice in this group`);
    mine.add(key);
  }
  for (const [i, a] of apps.entries()) {
    const options = { allowIPs: a.allowIPs ?? [], denyIPs: a.denyIPs ?? [], maxConnections: a.maxConnections ?? 0, ...(a.bandwidthLimit ? { bandwidthLimit: a.bandwidthLimit } : {}), ...httpKeys(a) };
    // Served by domain on the shared ports: no port of its own.
    if (servedByDomain(a.type)) {
      out.push({ name: a.name, type: a.type, remotePort: 0, requestedPort: 0, ...options });
      continue;
    }
    if (a.remotePort !== 0) {
      out.push({ name: a.name, type: a.type, remotePort: a.remotePort, requestedPort: a.remotePort, ...options });
      continue;
    }
    const prev = previous.find((p) => p.name === a.name && p.type === a.type);
    let port: number | null = null;
    if (prev && allowed(prev.remotePort) && !taken.has(`${a.type}:${prev.remotePort}`) && !mine.has(`${a.type}:${prev.remotePort}`)) {
      port = prev.remotePort;
    } else {
      port = range.pick(
        (p) => !allowed(p) || taken.has(`${a.type}:${p}`) || mine.has(`${a.type}:${p}`) || space.reserved.has(p),
        // Only TCP ports can be probed synchronously; a busy UDP port shows up as an error at login.
        (p) => a.type !== "tcp" || space.probe(p),
      );
    }
    if (port === null) return fail("no_free_port", i, "no free port is left in allowPorts");
    mine.add(`${a.type}:${port}`);
    out.push({ name: a.name, type: a.type, remotePort: port, requestedPort: 0, ...options });
  }
  return { ok: true, apps: out };
}

/** The HTTP keys an app was given (none for TCP and UDP apps), copied into its record. */
export function httpKeys(a: Partial<AppRecord>): Partial<AppRecord> {
  const out: Record<string, unknown> = {};
  for (const k of HTTP_RECORD_KEYS) if (a[k] !== undefined) out[k] = a[k];
  return out as Partial<AppRecord>;
}
