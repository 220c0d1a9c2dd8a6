/**
 * The client's local admin endpoint and `warren-client status`: what the client
 * is doing now, over HTTP on a Unix socket beside its config (owner only), or on
 * `adminAddr` (loopback only) when that is set.
 */
import { hostPort } from "../../protocol.ts";
import { parseHostPort } from "../addr.ts";
import { privately } from "../files.ts";
import { log } from "../log.ts";
import type { Connector } from "./connector.ts";

/** Where the admin endpoint listens: a Unix socket path, or a loopback "host:port". */
export type AdminPlace = { readonly unix: string } | { readonly host: string; readonly port: number };

/** The admin endpoint of a client started with `configFile` (and `adminAddr`, if set). */
export function adminPlace(configFile: string, adminAddr?: string): AdminPlace {
  if (adminAddr) return parseHostPort(adminAddr)!;
  return { unix: `${configFile}.sock` };
}

/** What `status` shows. */
export interface ClientStatus {
  readonly group: string;
  readonly server: string;
  readonly online: boolean;
  readonly onlineSince: string | null;
  readonly apps: readonly {
    name: string;
    type: string;
    localAddr: string;
    publicAddr: string | null;
    error: string | null;
    connections: number;
    bytesToApp: number;
    bytesFromApp: number;
  }[];
  readonly lastError: { at: string; message: string } | null;
}

/** The status of `connector` now. */
export function statusOf(connector: Connector): ClientStatus {
  const serverHost = connector.serverHost;
  return {
    group: connector.config.group,
    server: connector.server,
    online: connector.online,
    onlineSince: connector.onlineSince?.toISOString() ?? null,
    apps: connector.config.apps.map((a) => {
      const st = connector.statuses.find((s) => s.name === a.name);
      const t = a.type !== "udp" ? connector.traffic(a.name) : null;
      const udp = a.type === "udp" ? connector.udpCounters(a.name) : undefined;
      return {
        name: a.name,
        type: a.type,
        localAddr: a.localAddr,
        publicAddr: st && !st.error && connector.online ? (st.urls?.length ? st.urls.join(" ") : hostPort(serverHost, st.remotePort)) : null,
        error: st?.error || null,
        connections: t?.connections ?? udp?.peers ?? 0,
        bytesToApp: t?.bytesOut ?? 0,
        bytesFromApp: t?.bytesIn ?? 0,
      };
    }),
    lastError: connector.lastError ? { at: connector.lastError.at.toISOString(), message: connector.lastError.message } : null,
  };
}

/** Serves GET /status for `connector` at `place`; a socket left by a client that died is replaced. */
export async function serveAdmin(connector: Connector, place: AdminPlace): Promise<{ stop(): void }> {
  const fetch = (req: Request) =>
    new URL(req.url).pathname === "/status" && req.method === "GET" ? Response.json(statusOf(connector)) : Response.json({ error: "only GET /status is served here" }, { status: 404 });
  if ("unix" in place) {
    await Bun.file(place.unix)
      .delete()
      .catch(() => {}); // none there
    // Only the client's own user may ask (the socket is created without rights for group or others).
    const server = privately(() => Bun.serve({ unix: place.unix, fetch }));
    log.info("admin endpoint ready", { socket: place.unix });
    return { stop: () => server.stop(true) };
  }
  const server = Bun.serve({ hostname: place.host, port: place.port, fetch });
  log.info("admin endpoint ready", { addr: hostPort(place.host, place.port) });
  return { stop: () => server.stop(true) };
}

/** Asks a running client for its status; a sentence when none answers. */
export async function fetchStatus(place: AdminPlace): Promise<ClientStatus | string> {
  const where = "unix" in place ? place.unix : hostPort(place.host, place.port);
  try {
    const res = "unix" in place ? await fetch("http://localhost/status", { unix: place.unix }) : await fetch(`http://${hostPort(place.host, place.port)}/status`);
    if (!res.ok) return `the admin endpoint at ${where} answered ${res.status}`;
    return (await res.json()) as ClientStatus;
  } catch (err) {
    return `no client answers at ${where} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): is it running with this config?`;
  }
}

/** `status` for a person. */
export function formatStatus(s: ClientStatus): string {
  const lines = [
    `group ${s.group}, server ${s.server}: ${s.online ? `online since ${s.onlineSince}` : "offline"}`,
    ...s.apps.map(
      (a) =>
        `  ${a.name} (${a.type}) ${a.localAddr} -> ${a.publicAddr ?? (a.error ? `not served: ${a.error}` : "not served yet")}` +
        (a.type !== "udp" ? `; ${a.connections} open, ${a.bytesToApp} B to the app, ${a.bytesFromApp} B from it` : `; ${a.connections} peers`),
    ),
  ];
  if (s.lastError) lines.push(`last error (${s.lastError.at}): ${s.lastError.message}`);
  return lines.join("\n");
}
