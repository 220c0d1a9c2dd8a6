/**
 * The Prometheus text exposition (format 0.0.4) of the server's counters, written
 * from the numbers the relay already keeps: a scrape reads them and costs the
 * data path nothing. Served at GET /metrics (lib/api/app.ts).
 */
import type { AppCounters } from "./counters.ts";

/** What a scrape reads of the server. */
export interface MetricsSource {
  readonly groups: number;
  readonly groupsOnline: number;
  /** Every app with counters: group, app, counters. */
  apps(): Iterable<[group: string, app: string, counters: AppCounters]>;
  /** Idle work connections of each online group. */
  pools(): Iterable<[group: string, idle: number]>;
  readonly socketsOpen: number;
  /** Client logins by result (ok, failed, blocked, disabled, refused). */
  readonly logins: Readonly<Record<string, number>>;
  /** The worst event-loop lag since the previous scrape, in seconds. */
  readonly loopLagSeconds: number;
  /** Bytes the request inspector keeps (heads and bodies of captured exchanges). */
  readonly inspectBytes: number;
}

/** A label value, escaped as the format asks (backslash, quote, newline). */
function label(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** The exposition text. */
export async function exposition(src: MetricsSource): Promise<string> {
  const out: string[] = [];
  const family = (name: string, type: "counter" | "gauge", help: string, rows: [labels: string, value: number][]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of rows) out.push(`${name}${labels ? `{${labels}}` : ""} ${value}`);
  };
  const apps = [...src.apps()].map(([g, a, c]) => ({ l: appLabels(g, a), c }));
  family("warren_groups", "gauge", "Groups in the registry.", [["", src.groups]]);
  family("warren_groups_online", "gauge", "Groups whose client is logged in.", [["", src.groupsOnline]]);
  family("warren_app_bytes_total", "counter", "Bytes relayed for an app's users: in from users, out to them.", apps.flatMap(({ l, c }) => [[`${l},direction="in"`, c.bytesIn], [`${l},direction="out"`, c.bytesOut]] as [string, number][]));
  family("warren_app_connections_total", "counter", "Users accepted (TCP and HTTP: connections, UDP: new peers); kept across restarts.", apps.map(({ l, c }) => [l, c.accepted]));
  family("warren_app_connections_active", "gauge", "Open user connections (UDP: peers heard within udpIdleTimeout; HTTP: streams to the app).", apps.map(({ l, c }) => [l, c.connections]));
  family(
    "warren_connections_refused_total",
    "counter",
    "Users refused, by reason: allowIPs/denyIPs (access), maxConnections, or maxPendingUsers (queue_full).",
    apps.flatMap(({ l, c }) => [[`${l},reason="access"`, c.denied], [`${l},reason="max_connections"`, c.overLimit], [`${l},reason="queue_full"`, c.queueFull]] as [string, number][]),
  );
  family("warren_udp_datagrams_total", "counter", "UDP datagrams relayed: in from peers, out to them.", apps.flatMap(({ l, c }) => [[`${l},direction="in"`, c.datagramsIn], [`${l},direction="out"`, c.datagramsOut]] as [string, number][]));
  family("warren_udp_dropped_total", "counter", "UDP datagrams dropped (too large, no or a backed-up work connection, the kernel's receive buffer full).", apps.map(({ l, c }) => [l, c.dropped]));
  family("warren_udp_kernel_dropped_total", "counter", "UDP datagrams the kernel dropped at the app's public socket (also in warren_udp_dropped_total).", apps.map(({ l, c }) => [l, c.kernelDropped]));
  family("warren_http_requests_total", "counter", "HTTP requests routed to an app.", apps.map(({ l, c }) => [l, c.requests]));
  family("warren_work_pool_idle", "gauge", "Idle work connections of an online group.", [...src.pools()].map(([g, n]) => [`group="${label(g)}"`, n]));
  family("warren_logins_total", "counter", "Client logins on the control port, by result.", Object.entries(src.logins).map(([r, n]) => [`result="${label(r)}"`, n]));
  family("warren_inspect_bytes", "gauge", "Memory the request inspector holds (captured heads, and bodies in whole 4 KiB blocks).", [["", src.inspectBytes]]);
  family("warren_sockets_open", "gauge", "TCP sockets this process holds (users, apps, control and work connections).", [["", src.socketsOpen]]);
  family("warren_process_resident_memory_bytes", "gauge", "Resident memory of the server process.", [["", process.memoryUsage.rss()]]);
  family("warren_process_event_loop_lag_seconds", "gauge", "The worst lag of the server's event loop since the previous scrape (a 500 ms timer's lateness).", [["", src.loopLagSeconds]]);
  family("warren_process_open_fds", "gauge", "Open file descriptors of the server process (Linux).", [["", await openFds()]]);
  return out.join("\n") + "\n";
}

/** How long a count of open descriptors is reused: counting walks /proc/self/fd, one step per descriptor (20 ms at 11,000). */
export const FD_COUNT_TTL_MS = 5_000;
let fdCount = { at: -Infinity, n: -1 };

/** Descriptors in /proc/self/fd (at most FD_COUNT_TTL_MS old); -1 where that cannot be read. Bun's Glob, not node:fs, which would stay in the heap (lib/files.ts). */
async function openFds(): Promise<number> {
  const now = performance.now();
  if (now - fdCount.at < FD_COUNT_TTL_MS) return fdCount.n;
  let n = 0;
  try {
    for await (const _ of new Bun.Glob("*").scan({ cwd: "/proc/self/fd", onlyFiles: false })) n++;
  } catch {
    n = -1;
  }
  fdCount = { at: now, n };
  return n;
}

/** The escaped `group="…",app="…"` of each app, kept between scrapes (a scrape of 1,000 groups escapes 2,000 names otherwise). */
const labelCache = new Map<string, string>();
function appLabels(group: string, app: string): string {
  const key = `${group}\0${app}`;
  let l = labelCache.get(key);
  if (l === undefined) {
    // Bounded: apps come and go; past MAX_LABEL_CACHE entries the cache starts again.
    if (labelCache.size >= MAX_LABEL_CACHE) labelCache.clear();
    l = `group="${label(group)}",app="${label(app)}"`;
    labelCache.set(key, l);
  }
  return l;
}
/** Most cached label strings (one per app). */
export const MAX_LABEL_CACHE = 200_000;
