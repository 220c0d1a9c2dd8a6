/**
 * Cluster benchmark (issue 20, "several servers as one"): real server nodes
 * (server.ts with `database`), a throwaway PostgreSQL (tests/pg.ts) and real
 * clients, all as separate processes on loopback; nodes on 127.0.0.11, .12, .13.
 *
 *   npx bun bench/cluster.ts [--scenario forward|failover|scale] [--quick]
 *                            [--groups N] [--apps N] [--hb SECONDS] [--create seed|toml|api]
 *                            [--keep] [--log-level info]
 *                            [--failover-mode kill|stop|both] [--failover-groups N] [--probe-in-flight N]
 *                            [--out FILE.json]
 *
 * forward   user -> node B -> node A (holder) -> client -> app, against
 *           user -> node A -> client -> app, and against node A behind one bare
 *           Bun relay (bench/relay.ts: the cost of "one more hop" done minimally),
 *           in alternation: iperf3 1 stream both ways, 64-byte ping-pong,
 *           new connections/s at concurrency 1 and 50 (bench/loadgen.ts, made to
 *           dial the nodes' addresses by the preload bench/cluster-host.ts), then
 *           1,000 held connections direct and forwarded (loadgen hold).
 * failover  200 groups (one TCP app each, server.toml) online on node 1 through
 *           200 Connectors in one client process (bench/cluster-clients.ts,
 *           servers = [n1, n2, n3], heartbeatInterval 0.5 s, heartbeatTimeout 3 s on
 *           both sides); node 1 is killed (kill -9), and in a second run frozen
 *           (SIGSTOP: a host that goes silent); per group: time until its client is
 *           online elsewhere and its port answers an echo through node 2 (and node 3).
 * scale     10,000 groups x 5 HTTP apps (subdomains, no ports; poolSize 1). --create
 *           seed (default): one group through the API, 9,999 copies of its rows in
 *           SQL, then the nodes start; toml: all in server.toml; api: POST per group.
 *           Three client processes (each a third of the groups, its own node first
 *           in `servers`): time until all online, lease rows, PostgreSQL CPU and
 *           transactions, node CPU and RSS, HTTP through every node, idle load.
 * --keep    copies the last scenario's node and client logs to /tmp/warren-cluster-logs-*.
 *
 * Results: a JSON file (--out, default /tmp/warren-cluster-<time>.json) and the
 * log lines; bench/cluster-results.md is the write-up of one run.
 *
 * Every wait is bounded; a watchdog kills everything past the budget.
 */
import type { SQL } from "bun";
import { cpSync, mkdirSync, readFileSync, writeFileSync, readdirSync } from "node:fs";
import net from "node:net";
import { tmpdir, cpus, release } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { startPostgres, type TestPostgres } from "../tests/pg.ts";
import { BENCH, BUN, cpuSeconds, killAllSync, quantile, removeTempDirs, ROOT, rssBytes, run, spawnChild, stopAll, stopChild, tail, tempDir, treeMemory, until, waitPort, type Child } from "./common.ts";

const SCENARIOS = ["forward", "failover", "scale"] as const;
type Scenario = (typeof SCENARIOS)[number];

const { values: flags } = parseArgs({
  args: Bun.argv.slice(2),
  options: {
    scenario: { type: "string" },
    quick: { type: "boolean" },
    groups: { type: "string" },
    apps: { type: "string" },
    hb: { type: "string" },
    "failover-mode": { type: "string" },
    "failover-groups": { type: "string" },
    create: { type: "string" },
    "probe-in-flight": { type: "string" },
    keep: { type: "boolean" },
    "log-level": { type: "string" },
    out: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
  strict: true,
});
if (flags.help) {
  console.log(readFileSync(import.meta.path, "utf8").split("*/")[0]);
  process.exit(0);
}
const quick = !!flags.quick;
const which: Scenario[] = flags.scenario ? (flags.scenario.split(",").map((s) => s.trim()) as Scenario[]) : [...SCENARIOS];
for (const s of which) if (!SCENARIOS.includes(s)) throw new Error(`unknown scenario "${s}" (known: ${SCENARIOS.join(", ")})`);

const t0 = Date.now();
const say = (msg: string) => console.log(`[cluster ${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${msg}`);

/** Each scenario aims at under ~5 minutes; the watchdog allows 7 per scenario before killing everything. */
const BUDGET_MS = which.length * 7 * 60_000;
const watchdog = setTimeout(() => {
  console.error(`cluster bench: over the ${BUDGET_MS / 1000} s budget; stopping everything`);
  killAllSync();
  process.exit(3);
}, BUDGET_MS);
watchdog.unref();
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    killAllSync();
    process.exit(130);
  });
}
process.on("exit", () => killAllSync());

const ADDRS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
const CLUSTER_TOKEN = "bench-cluster-token-0123456789abcdef";
const ADMIN = "bench-admin-token-0123456789abcdef";

// ---------------------------------------------------------------- helpers

const median = (xs: number[]) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! : NaN);
const rotated = <T>(items: T[], k: number): T[] => {
  const i = k % Math.max(1, items.length);
  return [...items.slice(i), ...items.slice(0, i)];
};
const mib = (b: number) => b / 2 ** 20;

/** A port free on every one of `hosts` a moment ago (the same number everywhere). */
async function freePortOn(hosts: string[], range?: [number, number]): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = range ? range[0] + Math.floor(Math.random() * (range[1] - range[0] + 1)) : await ephemeral(hosts[0]!);
    if (await bindableAll(hosts, port)) return port;
  }
  throw new Error(`no port free on ${hosts.join(", ")}`);
}

async function ephemeral(host: string): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve, reject) => {
    s.once("error", reject);
    s.listen(0, host, resolve);
  });
  const { port } = s.address() as net.AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function bindableAll(hosts: string[], port: number): Promise<boolean> {
  for (const h of hosts) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once("error", () => resolve(false));
      s.listen({ port, host: h, exclusive: true }, () => s.close(() => resolve(true)));
    });
    if (!ok) return false;
  }
  return true;
}

/** `count` distinct ports in `range`, each free on every host. */
async function portBlock(hosts: string[], count: number, range: [number, number]): Promise<number[]> {
  const out: number[] = [];
  for (let p = range[0]; p <= range[1] && out.length < count; p++) if (await bindableAll(hosts, p)) out.push(p);
  if (out.length < count) throw new Error(`only ${out.length} of ${count} ports free in ${range[0]}-${range[1]}`);
  return out;
}

/** Waits until host:port accepts a TCP connection. */
async function waitHostPort(host: string, port: number, ms: number, what: string): Promise<void> {
  await until(
    () =>
      new Promise<boolean>((resolve) => {
        const s = net.connect({ port, host }, () => {
          s.destroy();
          resolve(true);
        });
        s.on("error", () => resolve(false));
      }),
    ms,
    what,
  );
}

/** One connect + 16-byte echo through host:port; true when the echo came back within `timeoutMs`. */
function echoOnce(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const payload = new TextEncoder().encode("probe-0123456789");
    let got = 0;
    let done = false;
    let sock: { terminate(): void; end(): void } | null = null;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        if (ok) sock?.end();
        else sock?.terminate();
      } catch {}
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    Bun.connect({
      hostname: host,
      port,
      socket: {
        open(s) {
          s.write(payload);
        },
        data(_s, chunk) {
          got += chunk.length;
          if (got >= payload.length) finish(true);
        },
        close() {
          finish(false);
        },
        error() {
          finish(false);
        },
        connectError() {
          finish(false);
        },
      },
    }).then(
      (s) => {
        sock = s;
        if (done) s.terminate();
      },
      () => finish(false),
    );
  });
}

/** One HTTP GET through a vhost port with a Host header (raw socket: fetch would set Host itself); the status code or 0. */
function httpGet(host: string, port: number, hostHeader: string, timeoutMs: number): Promise<{ status: number; ms: number }> {
  const t = performance.now();
  return new Promise((resolve) => {
    let buf = "";
    let done = false;
    let sock: { terminate(): void } | null = null;
    const finish = (status: number) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        sock?.terminate();
      } catch {}
      resolve({ status, ms: performance.now() - t });
    };
    const timer = setTimeout(() => finish(0), timeoutMs);
    Bun.connect({
      hostname: host,
      port,
      socket: {
        open(s) {
          s.write(`GET /probe HTTP/1.1\r\nHost: ${hostHeader}\r\nConnection: close\r\n\r\n`);
        },
        data(_s, chunk) {
          buf += new TextDecoder().decode(chunk);
          const m = /^HTTP\/1\.[01] (\d{3})/.exec(buf);
          if (m && buf.includes("\r\n\r\n")) finish(Number(m[1]));
        },
        close() {
          const m = /^HTTP\/1\.[01] (\d{3})/.exec(buf);
          finish(m ? Number(m[1]) : 0);
        },
        error() {
          finish(0);
        },
        connectError() {
          finish(0);
        },
      },
    }).then(
      (s) => {
        sock = s;
        if (done) s.terminate();
      },
      () => finish(0),
    );
  });
}

/** The postmaster of the throwaway PostgreSQL (its children are the backends): found by its -p PORT argument. */
function postmasterPid(url: string): number {
  const port = new URL(url).port;
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const args = readFileSync(`/proc/${e}/cmdline`, "utf8").split("\0");
      if (/postgres$/.test(args[0] ?? "") && args.includes("-p") && args[args.indexOf("-p") + 1] === port) return Number(e);
    } catch {}
  }
  throw new Error(`no postmaster found for port ${port}`);
}

/** Memory of PostgreSQL: PSS summed over the postmaster and its backends (shared buffers counted once). */
function pgMemory(pid: number): number {
  return treeMemory(pid).bytes;
}

interface NodeProc {
  readonly name: string;
  readonly addr: string;
  readonly controlPort: number;
  readonly apiPort: number;
  readonly peerPort: number;
  readonly vhostPort: number;
  readonly child: Child;
  readonly log: string;
}

interface NodeOpts {
  db: string;
  heartbeatTimeout: number;
  groupsToml?: string;
  allowPorts?: string;
  poolSize?: number;
  vhost?: { subdomainHost: string };
  logLevel?: string;
}

async function startNode(dir: string, i: number, o: NodeOpts): Promise<NodeProc> {
  const addr = ADDRS[i]!;
  const name = `n${i + 1}`;
  const [controlPort, peerPort, apiPort] = [await freePortOn([addr]), await freePortOn([addr]), await freePortOn(["127.0.0.1"])];
  const vhostPort = o.vhost ? await freePortOn([addr]) : 0;
  const toml = [
    `bindAddr = "${addr}"`,
    `controlPort = ${controlPort}`,
    `apiHost = "127.0.0.1"`,
    `apiPort = ${apiPort}`,
    `adminToken = "${ADMIN}"`,
    `dataDir = "${join(dir, `data-${name}`)}"`,
    `logLevel = "${o.logLevel ?? "warn"}"`,
    `heartbeatTimeout = ${o.heartbeatTimeout}`,
    `database = "${o.db}"`,
    `clusterToken = "${CLUSTER_TOKEN}"`,
    `nodeName = "${name}"`,
    `peerPort = ${peerPort}`,
    ...(o.allowPorts ? [`allowPorts = "${o.allowPorts}"`] : []),
    ...(o.poolSize !== undefined ? [`poolSize = ${o.poolSize}`] : []),
    ...(o.vhost ? [`vhostHTTPPort = ${vhostPort}`, `subdomainHost = "${o.vhost.subdomainHost}"`] : []),
    o.groupsToml ?? "",
  ].join("\n");
  const file = join(dir, `server-${name}.toml`);
  writeFileSync(file, toml + "\n");
  const log = join(dir, `server-${name}.log`);
  const child = spawnChild(`warren-${name}`, [BUN, join(ROOT, "server.ts"), "--config", file], { logFile: log });
  try {
    // A node that exits (a config error) fails at once rather than at the deadline.
    const exited = child.proc.exited.then((code) => {
      throw new Error(`node ${name} exited with code ${code}`);
    });
    exited.catch(() => {});
    await Promise.race([waitPort(apiPort, 120_000, `node ${name}'s API`), exited]);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${tail(log)}`);
  }
  const node = { name, addr, controlPort, apiPort, peerPort, vhostPort, child, log };
  started.push(node);
  return node;
}
/** Every node started in this scenario: their logs are shown when it fails. */
const started: NodeProc[] = [];

async function api(n: NodeProc, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`http://127.0.0.1:${n.apiPort}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
}

/** Lines of a log file matching `re` (counted). */
function countLines(file: string, re: RegExp): number {
  try {
    return readFileSync(file, "utf8").split("\n").filter((l) => re.test(l)).length;
  } catch {
    return 0;
  }
}

async function loadgen(host: string, mode: "latency" | "setup", args: Record<string, number>, timeoutMs: number): Promise<Record<string, any>> {
  const script = `ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`;
  const res = await run(["env", `WARREN_BENCH_HOST=${host}`, "bash", "-c", script, "bash", BUN, "--preload", join(BENCH, "cluster-host.ts"), join(BENCH, "loadgen.ts"), mode, JSON.stringify(args)], { timeoutMs });
  return JSON.parse(res.stdout.trim().split("\n").pop()!);
}

async function iperf3(host: string, port: number, seconds: number, reverse: boolean): Promise<{ gbps: number; bytes: number } | { error: string }> {
  const args = ["iperf3", "-c", host, "-p", String(port), "-t", String(seconds), "-J", "-P", "1", ...(reverse ? ["-R"] : [])];
  await Bun.sleep(300);
  let res = await run(args, { timeoutMs: seconds * 1000 + 30_000, allowFail: true });
  if (res.code !== 0 && /busy/.test(res.stdout + res.stderr)) {
    await Bun.sleep(1500);
    res = await run(args, { timeoutMs: seconds * 1000 + 30_000, allowFail: true });
  }
  try {
    const out = JSON.parse(res.stdout);
    const sum = out.end?.sum_received;
    if (res.code === 0 && sum) return { gbps: sum.bits_per_second / 1e9, bytes: sum.bytes };
    await Bun.sleep(1000);
    return { error: String(out.error ?? `iperf3 exited ${res.code}`) };
  } catch {
    await Bun.sleep(1000);
    return { error: res.stderr.trim() || `iperf3 exited ${res.code}` };
  }
}

/** A client-driver process (bench/cluster-clients.ts) and its log. */
interface Driver {
  child: Child;
  log: string;
}
function startDriver(dir: string, name: string, opts: Record<string, unknown>): Driver {
  const log = join(dir, `${name}.log`);
  return { child: spawnChild(name, [BUN, join(BENCH, "cluster-clients.ts"), JSON.stringify(opts)], { logFile: log }), log };
}
function driverLines(d: Driver): string[] {
  try {
    return readFileSync(d.log, "utf8").split("\n");
  } catch {
    return [];
  }
}
function lastProgress(d: Driver): { ms: number; online: number; everOnline: number; fatal: number; servers: Record<string, number> } | null {
  const lines = driverLines(d).filter((l) => l.startsWith("PROGRESS "));
  return lines.length ? JSON.parse(lines[lines.length - 1]!.slice(9)) : null;
}
function allLine(d: Driver): { ms: number } | null {
  const l = driverLines(d).find((x) => x.startsWith("ALL "));
  return l ? JSON.parse(l.slice(4)) : null;
}

async function withPostgres<T>(fn: (pg: TestPostgres, sql: SQL, pgPid: number) => Promise<T>): Promise<T> {
  const pg = await startPostgres();
  const sql = new Bun.SQL({ url: pg.url, max: 1, connectionTimeout: 5 });
  try {
    return await fn(pg, sql, postmasterPid(pg.url));
  } finally {
    await sql.close({ timeout: 1 }).catch(() => {});
    await stopAll();
    await pg.stop();
  }
}

// ---------------------------------------------------------------- forward

interface FwdPath {
  name: "direct" | "forwarded" | "hop";
  label: string;
  host: string;
  echo: number;
  iperf: number;
}

async function scenarioForward(): Promise<Record<string, unknown>> {
  const plan = quick
    ? { iperfRounds: 1, iperfSeconds: 2, latRounds: 2, latCount: 3000, setupRounds: 1, setupSeconds: 1, warmSeconds: 1, holdCount: 500 }
    : { iperfRounds: 3, iperfSeconds: 3, latRounds: 5, latCount: 10_000, setupRounds: 3, setupSeconds: 2.5, warmSeconds: 3, holdCount: 1000 };
  return withPostgres(async (pg, sql, pgPid) => {
    const dir = tempDir("warren-cluster-fwd-");
    const echoPort = await freePortOn(["127.0.0.1"]);
    const iperfPort = await freePortOn(["127.0.0.1"]);
    const echo = spawnChild("echo", [BUN, join(BENCH, "echo.ts"), String(echoPort)], { logFile: join(dir, "echo.log") });
    const iperfd = spawnChild("iperf3-server", ["iperf3", "-s", "-B", "127.0.0.1", "-p", String(iperfPort)], { logFile: join(dir, "iperf3.log") });
    await waitPort(echoPort, 10_000, "echo app");
    await waitPort(iperfPort, 10_000, "iperf3 server");
    const [pubEcho, pubIperf] = [await freePortOn(ADDRS.slice(0, 2)), await freePortOn(ADDRS.slice(0, 2))];
    const token = "bench-group-token-0123456789";
    const groups = [``, `[[groups]]`, `name = "bench"`, `token = "${token}"`, ``, `[[groups.apps]]`, `name = "echo"`, `remotePort = ${pubEcho}`, ``, `[[groups.apps]]`, `name = "iperf"`, `remotePort = ${pubIperf}`].join("\n");
    const nodeOpts: NodeOpts = { db: pg.url, heartbeatTimeout: 3, groupsToml: groups, logLevel: "info" };
    const a = await startNode(dir, 0, nodeOpts);
    const b = await startNode(dir, 1, nodeOpts);
    say(`forward: nodes n1 (${a.addr}) and n2 (${b.addr}) up, PostgreSQL ${pg.url}`);
    const clientToml = [
      `servers = ["${a.addr}:${a.controlPort}"]`,
      `group = "bench"`,
      `token = "${token}"`,
      `logLevel = "info"`,
      ``,
      `[[apps]]`,
      `name = "echo"`,
      `localAddr = "127.0.0.1:${echoPort}"`,
      ``,
      `[[apps]]`,
      `name = "iperf"`,
      `localAddr = "127.0.0.1:${iperfPort}"`,
    ].join("\n");
    writeFileSync(join(dir, "client.toml"), clientToml + "\n");
    const client = spawnChild("warren-client", [BUN, join(ROOT, "client.ts"), "--config", join(dir, "client.toml")], { logFile: join(dir, "client.log") });
    const viewOn = async (n: NodeProc) => (await (await api(n, "GET", "/api/groups/bench")).json()) as { online: boolean; node: string; apps: { online: boolean }[] };
    await until(async () => (await viewOn(a).catch(() => null))?.node === "n1", 20_000, "the client online on n1");
    await until(
      async () => {
        const v = await viewOn(b).catch(() => null);
        return !!v && v.node === "n1" && v.apps.every((x) => x.online);
      },
      10_000,
      "n2 to serve the group for n1",
    );
    for (const p of [pubEcho, pubIperf]) {
      await waitHostPort(a.addr, p, 10_000, `n1's port ${p}`);
      await waitHostPort(b.addr, p, 10_000, `n2's port ${p}`);
    }
    // One bare Bun relay in front of node 1: what one extra loopback hop costs when done minimally.
    const [hopEcho, hopIperf] = [await freePortOn(["127.0.0.1"]), await freePortOn(["127.0.0.1"])];
    const relay = spawnChild("bun-relay-hop", [BUN, "--preload", join(BENCH, "cluster-host.ts"), join(BENCH, "relay.ts"), `${hopEcho}:${pubEcho}`, `${hopIperf}:${pubIperf}`], {
      logFile: join(dir, "relay.log"),
      env: { WARREN_BENCH_HOST: a.addr },
    });
    await waitPort(hopEcho, 10_000, "relay hop");
    await waitPort(hopIperf, 10_000, "relay hop");
    const paths: FwdPath[] = [
      { name: "direct", label: "direct: user -> n1 (holder) -> client -> app", host: a.addr, echo: pubEcho, iperf: pubIperf },
      { name: "forwarded", label: "forwarded: user -> n2 -> n1 (holder) -> client -> app", host: b.addr, echo: pubEcho, iperf: pubIperf },
      { name: "hop", label: "reference: user -> bare Bun relay -> n1 -> client -> app", host: "127.0.0.1", echo: hopEcho, iperf: hopIperf },
    ];
    const procs = { n1: a.child.pid, n2: b.child.pid, client: client.pid, relay: relay.pid };
    const cpu = () => Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuSeconds([pid])])) as Record<keyof typeof procs, number>;
    const cpuDelta = (c0: Record<string, number>) => {
      const c1 = cpu();
      return Object.fromEntries(Object.keys(c0).map((k) => [k, c1[k as keyof typeof procs] - c0[k]!]));
    };
    const pg0 = cpuSeconds([pgPid]);

    // Warm-up: the JIT compiles each path's hot code under its first load.
    for (const p of paths) {
      await loadgen(p.host, "setup", { port: p.echo, concurrency: 50, durationMs: plan.warmSeconds * 1000, size: 64 }, 60_000).catch((e) => say(`warm-up ${p.name}: ${(e as Error).message}`));
      await iperf3(p.host, p.iperf, 1, false);
    }
    const linkCheck = await viewOn(b);
    say(`forward: warmed up; n2 sees the group on ${linkCheck.node}`);

    // Bulk.
    const bulk: Record<string, unknown>[] = [];
    for (let r = 0; r < plan.iperfRounds; r++)
      for (const reverse of [false, true])
        for (const p of rotated(paths, r + (reverse ? 1 : 0))) {
          const c0 = cpu();
          const res = await iperf3(p.host, p.iperf, plan.iperfSeconds, reverse);
          const d = cpuDelta(c0);
          const row = { path: p.name, round: r, reverse, ...res, cpu: d };
          bulk.push(row);
          say(`bulk ${reverse ? "-R" : "  "} ${p.name.padEnd(9)} ${"error" in res ? `error ${res.error}` : `${res.gbps.toFixed(2)} Gbit/s`}  CPU n1 ${d.n1!.toFixed(2)} n2 ${d.n2!.toFixed(2)} client ${d.client!.toFixed(2)} relay ${d.relay!.toFixed(2)}`);
        }

    // Latency: 64-byte ping-pong; the app without any tunnel once per round too (the bare loopback round trip).
    const lat: Record<string, unknown>[] = [];
    const latPaths = [...paths, { name: "app" as const, label: "no tunnel: user -> app", host: "127.0.0.1", echo: echoPort, iperf: 0 }];
    for (let r = 0; r < plan.latRounds; r++)
      for (const p of rotated(latPaths, r)) {
        try {
          const res = await loadgen(p.host, "latency", { port: p.echo, count: plan.latCount, warmup: Math.ceil(plan.latCount / 10), size: 64 }, 120_000);
          lat.push({ path: p.name, round: r, us: res.us });
          say(`latency ${p.name.padEnd(9)} p50 ${res.us.p50.toFixed(0)} us  p99 ${res.us.p99.toFixed(0)} us`);
        } catch (err) {
          lat.push({ path: p.name, round: r, error: (err as Error).message });
          say(`latency ${p.name}: ${(err as Error).message}`);
        }
      }

    // Connection setup: connect, 64 bytes, echo, close.
    const setup: Record<string, unknown>[] = [];
    let k = 0;
    for (const c of [1, 50])
      for (let r = 0; r < plan.setupRounds; r++)
        for (const p of rotated(paths, k++)) {
          const c0 = cpu();
          try {
            const res = await loadgen(p.host, "setup", { port: p.echo, concurrency: c, durationMs: plan.setupSeconds * 1000, size: 64 }, 60_000);
            const d = cpuDelta(c0);
            setup.push({ path: p.name, concurrency: c, round: r, perSecond: res.perSecond, connections: res.connections, errors: res.errors, ttfbUs: res.ttfbUs, cpu: d });
            say(`setup c=${String(c).padEnd(2)} ${p.name.padEnd(9)} ${res.perSecond.toFixed(0)} conn/s  first byte p50 ${res.ttfbUs.p50.toFixed(0)} us p99 ${res.ttfbUs.p99.toFixed(0)} us  errors ${res.errors}`);
          } catch (err) {
            setup.push({ path: p.name, concurrency: c, round: r, error: (err as Error).message });
            say(`setup ${p.name}: ${(err as Error).message}`);
          }
          await Bun.sleep(500);
        }

    // Many users at once (bench/loadgen.ts hold: each connection opened, echoed once, then held and
    // pinged): how many concurrent users a node carries for another over one link, against direct.
    const held: Record<string, unknown>[] = [];
    for (const p of paths.filter((x) => x.name !== "hop")) {
      const log = join(dir, `hold-${p.name}.log`);
      const count = plan.holdCount;
      const gen = spawnChild(`hold-${p.name}`, [BUN, "--preload", join(BENCH, "cluster-host.ts"), join(BENCH, "loadgen.ts"), "hold", JSON.stringify({ port: p.echo, count, openConcurrency: 200, intervalMs: 5000, openTimeoutMs: 60_000 })], {
        logFile: log,
        stdin: "pipe",
        env: { WARREN_BENCH_HOST: p.host },
      });
      try {
        const line = (re: RegExp) => readFileSync(log, "utf8").match(re)?.[1] ?? null;
        await until(() => line(/READY (\{.*\})/) !== null, 120_000, `${count} held connections through ${p.name}`, 200);
        const ready = JSON.parse(line(/READY (\{.*\})/)!) as { opened: number; failed: number; rampMs: number };
        const stdin = gen.proc.stdin as import("bun").FileSink;
        stdin.write("check\n");
        stdin.flush();
        await until(() => line(/CHECK (\{.*\})/) !== null, 60_000, "the liveness check", 200);
        const check = JSON.parse(line(/CHECK (\{.*\})/)!) as { alive: number; dead: number };
        held.push({ path: p.name, count, opened: ready.opened, failed: ready.failed, rampMs: ready.rampMs, alive: check.alive });
        say(`held ${p.name.padEnd(9)} ${ready.opened}/${count} opened (${ready.failed} failed), ${check.alive} alive at the check`);
        stdin.write("close\n");
        stdin.flush();
        await Promise.race([gen.proc.exited, Bun.sleep(3000)]);
      } catch (err) {
        held.push({ path: p.name, count, error: (err as Error).message });
        say(`held ${p.name}: ${(err as Error).message}`);
      } finally {
        await stopChild(gen);
      }
      await Bun.sleep(1000);
    }
    const refusals = { n1: countLines(a.log, /a link may hold at most/), n2: countLines(b.log, /refused a user/) };
    const pgCpu = cpuSeconds([pgPid]) - pg0;
    const streamsAfter = (await viewOn(b)).node;
    await stopChild(client);
    await stopChild(relay);
    await stopChild(iperfd);
    await stopChild(echo);
    const warnings = { n1: countLines(a.log, /level=(warn|error)|\bWARN|\bERROR/i), n2: countLines(b.log, /level=(warn|error)|\bWARN|\bERROR/i) };
    return summarizeForward({ plan, paths, bulk, lat, setup, held, refusals, pgCpu, holderAtEnd: streamsAfter, warnings, logs: { n1: tail(a.log, 5), n2: tail(b.log, 5) } });
  });
}

function summarizeForward(r: { plan: Record<string, number>; paths: FwdPath[]; bulk: any[]; lat: any[]; setup: any[]; held: unknown[]; refusals: Record<string, number>; pgCpu: number; holderAtEnd: string; warnings: Record<string, number>; logs: Record<string, string> }): Record<string, unknown> {
  const names = ["direct", "forwarded", "hop"];
  const bulk: Record<string, any> = {};
  for (const reverse of [false, true]) {
    const key = reverse ? "reverse" : "forward";
    bulk[key] = {};
    for (const n of names) {
      const runs = r.bulk.filter((x) => x.path === n && x.reverse === reverse && !x.error);
      const cpuPerGB = runs.map((x) => (x.cpu.n1 + x.cpu.n2 + x.cpu.client + x.cpu.relay) / (x.bytes / 1e9));
      bulk[key][n] = { gbps: median(runs.map((x) => x.gbps)), runs: runs.map((x) => x.gbps), cpuPerGB: median(cpuPerGB), errors: r.bulk.filter((x) => x.path === n && x.reverse === reverse && x.error).length };
    }
    // Paired ratios: each round's forwarded ÷ that round's direct.
    const ratios: number[] = [];
    for (let round = 0; round < r.plan.iperfRounds!; round++) {
      const f = r.bulk.find((x) => x.path === "forwarded" && x.reverse === reverse && x.round === round && !x.error);
      const d = r.bulk.find((x) => x.path === "direct" && x.reverse === reverse && x.round === round && !x.error);
      if (f && d) ratios.push(f.gbps / d.gbps);
    }
    bulk[key].ratio = median(ratios);
    bulk[key].ratios = ratios;
  }
  const lat: Record<string, any> = {};
  for (const n of [...names, "app"]) {
    const runs = r.lat.filter((x) => x.path === n && !x.error);
    lat[n] = { p50: median(runs.map((x) => x.us.p50)), p99: median(runs.map((x) => x.us.p99)), p999: median(runs.map((x) => x.us.p999)), mean: median(runs.map((x) => x.us.mean)), p50Runs: runs.map((x) => Math.round(x.us.p50)), p99Runs: runs.map((x) => Math.round(x.us.p99)) };
  }
  const setup: Record<string, any> = {};
  for (const c of [1, 50]) {
    setup[c] = {};
    for (const n of names) {
      const runs = r.setup.filter((x) => x.path === n && x.concurrency === c && !x.error);
      setup[c][n] = {
        perSecond: median(runs.map((x) => x.perSecond)),
        perSecondRuns: runs.map((x) => Math.round(x.perSecond)),
        ttfbP50: median(runs.map((x) => x.ttfbUs.p50)),
        ttfbP99: median(runs.map((x) => x.ttfbUs.p99)),
        errors: runs.reduce((s, x) => s + x.errors, 0),
        cpuPerConnUs: median(runs.map((x) => ((x.cpu.n1 + x.cpu.n2 + x.cpu.client + x.cpu.relay) / x.connections) * 1e6)),
      };
    }
  }
  return { plan: r.plan, paths: r.paths.map((p) => ({ name: p.name, label: p.label })), bulk, latency: lat, setup, held: r.held, linkRefusals: r.refusals, postgresCpuSeconds: r.pgCpu, holderAtEnd: r.holderAtEnd, warningLines: r.warnings, runs: { bulk: r.bulk, latency: r.lat, setup: r.setup } };
}

// ---------------------------------------------------------------- failover

async function scenarioFailover(mode: "kill" | "stop"): Promise<Record<string, unknown>> {
  const G = Number(flags["failover-groups"] ?? (quick ? 50 : 200));
  const HB = 3;
  return withPostgres(async (pg, sql, pgPid) => {
    const dir = tempDir("warren-cluster-fo-");
    const echoPort = await freePortOn(["127.0.0.1"]);
    const echo = spawnChild("echo", [BUN, join(BENCH, "echo.ts"), String(echoPort)], { logFile: join(dir, "echo.log") });
    await waitPort(echoPort, 10_000, "echo app");
    const ports = await portBlock(ADDRS, G, [21000, 29999]);
    const name = (i: number) => `g${String(i).padStart(5, "0")}`;
    const groups = ports.flatMap((p, i) => [``, `[[groups]]`, `name = "${name(i)}"`, `token = "fo-token-0123456789-${i}"`, `[[groups.apps]]`, `name = "echo"`, `remotePort = ${p}`]).join("\n");
    const nodeOpts: NodeOpts = { db: pg.url, heartbeatTimeout: HB, groupsToml: groups, allowPorts: "20000-29999", logLevel: "info" };
    // Node 1 writes the groups to the registry; the others find them there.
    const n1 = await startNode(dir, 0, nodeOpts);
    const [n2, n3] = await Promise.all([startNode(dir, 1, nodeOpts), startNode(dir, 2, nodeOpts)]);
    const nodes = [n1, n2, n3];
    say(`failover (${mode}): 3 nodes up with ${G} groups`);
    const servers = nodes.map((n) => `${n.addr}:${n.controlPort}`);
    const driver = startDriver(dir, "clients", {
      servers,
      prefix: "g",
      tokenPrefix: "fo-token-0123456789-",
      from: 0,
      count: G,
      apps: [{ name: "echo", localAddr: `127.0.0.1:${echoPort}` }],
      heartbeatInterval: 0.5,
      heartbeatTimeout: HB,
      events: true,
    });
    await until(() => !!allLine(driver), 60_000, `all ${G} clients online`, 200);
    await until(() => (lastProgress(driver)?.servers[servers[0]!] ?? 0) === G, 10_000, `all ${G} clients on n1`, 200);
    // Every group answers through n2 and n3 (forwarded to n1) before the failure.
    const t1 = performance.now();
    let ok = 0;
    for (const [i, p] of ports.entries()) {
      for (const n of [n2, n3]) {
        await until(() => echoOnce(n.addr, p, 2000), 20_000, `${name(i)} through ${n.name} before the failure`, 100);
        ok++;
      }
    }
    say(`failover: all ${G} groups online on n1 and answering through n2 and n3 (${ok} probes, ${((performance.now() - t1) / 1000).toFixed(1)} s)`);
    await Bun.sleep(3000); // pools filled, links idle
    const leasesBefore = await sql`SELECT node, count(*)::int AS n FROM warren_leases GROUP BY node ORDER BY node`;
    const linesBefore = driverLines(driver).length;

    // The failure.
    const tFail = Date.now();
    process.kill(n1.child.pid, mode === "kill" ? "SIGKILL" : "SIGSTOP");
    say(`failover: node n1 ${mode === "kill" ? "killed (SIGKILL)" : "frozen (SIGSTOP)"}`);

    // Probes: per group and node, a new connect + echo every 200 ms (at most --probe-in-flight, default 5, in flight, 1 s each) until one answers.
    const PROBE_EVERY_MS = 200;
    const PROBE_TIMEOUT_MS = 1000;
    const PROBE_DEADLINE_MS = 60_000;
    const PROBE_IN_FLIGHT = Number(flags["probe-in-flight"] ?? 5);
    const answered: Record<string, (number | null)[]> = { n2: new Array(G).fill(null), n3: new Array(G).fill(null) };
    const probeLoop = async (n: NodeProc, i: number) => {
      let inFlight = 0;
      const deadline = tFail + PROBE_DEADLINE_MS;
      for (let k = 0; k < PROBE_DEADLINE_MS / PROBE_EVERY_MS + 10 && answered[n.name]![i] === null && Date.now() < deadline; k++) {
        if (inFlight < PROBE_IN_FLIGHT) {
          inFlight++;
          void echoOnce(n.addr, ports[i]!, PROBE_TIMEOUT_MS).then((good) => {
            inFlight--;
            if (good && answered[n.name]![i] === null) answered[n.name]![i] = Date.now() - tFail;
          });
        }
        await Bun.sleep(PROBE_EVERY_MS);
      }
    };
    await Promise.all([n2, n3].flatMap((n) => ports.map((_, i) => probeLoop(n, i))));
    await Bun.sleep(PROBE_TIMEOUT_MS);

    // The clients' view: the first login after the failure, and where.
    const relogin: (null | { ms: number; server: string })[] = new Array(G).fill(null);
    const offlineAt: (null | number)[] = new Array(G).fill(null);
    for (const line of driverLines(driver).slice(linesBefore - 1)) {
      const m = /^EVENT (online|offline) g(\d{5}) (\S+)(?: (\S+))?/.exec(line);
      if (!m) continue;
      const i = Number(m[2]);
      if (m[1] === "online") {
        const at = Number(m[4]);
        if (at >= tFail && !relogin[i]) relogin[i] = { ms: at - tFail, server: m[3]! };
      } else {
        const at = Number(m[3]);
        if (at >= tFail && offlineAt[i] === null) offlineAt[i] = at - tFail;
      }
    }
    const leasesAfter = await sql`SELECT node, count(*)::int AS n FROM warren_leases GROUP BY node ORDER BY node`;
    if (mode === "stop") {
      process.kill(n1.child.pid, "SIGKILL");
    }
    const pgCpu = cpuSeconds([pgPid]);
    const stats = (xs: (number | null)[]) => {
      const got = xs.filter((x): x is number => x !== null).sort((a, b) => a - b);
      return { n: got.length, missing: xs.length - got.length, p50: quantile(got, 0.5), p99: quantile(got, 0.99), max: got[got.length - 1] ?? NaN, min: got[0] ?? NaN };
    };
    // Per group: online elsewhere AND answering through n2 (the later of the two).
    const both = ports.map((_, i) => (relogin[i] && answered.n2![i] !== null ? Math.max(relogin[i]!.ms, answered.n2![i]!) : null));
    const landed: Record<string, number> = {};
    for (const r of relogin) if (r) landed[r.server] = (landed[r.server] ?? 0) + 1;
    const res = {
      mode,
      groups: G,
      heartbeatTimeoutS: HB,
      clientHeartbeatIntervalS: 0.5,
      clientHeartbeatTimeoutS: HB,
      probe: { everyMs: PROBE_EVERY_MS, timeoutMs: PROBE_TIMEOUT_MS, deadlineMs: PROBE_DEADLINE_MS, inFlight: PROBE_IN_FLIGHT },
      clientOffline: stats(offlineAt),
      clientOnlineElsewhere: stats(relogin.map((r) => r?.ms ?? null)),
      answersViaN2: stats(answered.n2!),
      answersViaN3: stats(answered.n3!),
      onlineAndAnswersViaN2: stats(both),
      landedOn: Object.fromEntries(Object.entries(landed).map(([s, c]) => [nodes.find((n) => `${n.addr}:${n.controlPort}` === s)?.name ?? s, c])),
      leasesBefore: Object.fromEntries(leasesBefore.map((r: any) => [r.node, r.n])),
      leasesAfter: Object.fromEntries(leasesAfter.map((r: any) => [r.node, r.n])),
      targetMs: (HB + 5) * 1000,
      postgresCpuSecondsTotal: pgCpu,
      logCounts: Object.fromEntries(
        [n2, n3].map((n) => [n.name, { leaseExpired: countLines(n.log, /lease expired/), linkDown: countLines(n.log, /link down/), usersReset: countLines(n.log, /users reset/), refusedByHolder: countLines(n.log, /refused a user/) }]),
      ),
    };
    say(
      `failover (${mode}): client online elsewhere p50 ${res.clientOnlineElsewhere.p50} ms p99 ${res.clientOnlineElsewhere.p99} ms; answers via n2 p50 ${res.answersViaN2.p50} p99 ${res.answersViaN2.p99} max ${res.answersViaN2.max} ms (missing ${res.answersViaN2.missing}); via n3 p99 ${res.answersViaN3.p99} ms; landed ${JSON.stringify(res.landedOn)}`,
    );
    await stopChild(driver.child, 3000);
    await stopChild(echo);
    return res;
  });
}

// ---------------------------------------------------------------- scale

async function scenarioScale(): Promise<Record<string, unknown>> {
  const wanted = Number(flags.groups ?? (quick ? 300 : 10_000));
  let G = wanted;
  const A = Number(flags.apps ?? 5);
  const HB = Number(flags.hb ?? 30);
  const method = (flags.create ?? "seed") as "seed" | "toml" | "api";
  return withPostgres(async (pg, sql, pgPid) => {
    const dir = tempDir("warren-cluster-scale-");
    const origin = await freePortOn(["127.0.0.1"]);
    const sub = "scale.test";
    const nodeOpts: NodeOpts = { db: pg.url, heartbeatTimeout: HB, poolSize: 1, vhost: { subdomainHost: sub }, logLevel: flags["log-level"] ?? "warn" };
    const name = (i: number) => `g${String(i).padStart(5, "0")}`;
    const pgStat = async () => {
      const [db] = await sql`SELECT xact_commit::float8 AS x FROM pg_stat_database WHERE datname = current_database()`;
      return { cpu: cpuSeconds([pgPid]), xacts: Number(db.x), at: performance.now() };
    };
    const phase = (s0: { cpu: number; xacts: number; at: number }, s1: { cpu: number; xacts: number; at: number }) => ({ seconds: (s1.at - s0.at) / 1000, pgCpuSeconds: s1.cpu - s0.cpu, pgCpuPct: ((s1.cpu - s0.cpu) / ((s1.at - s0.at) / 1000)) * 100, transactions: s1.xacts - s0.xacts, transactionsPerSecond: (s1.xacts - s0.xacts) / ((s1.at - s0.at) / 1000) });
    const nodes: NodeProc[] = [];
    const nodeCpu = () => nodes.map((n) => cpuSeconds([n.child.pid]));
    const appsOf = (i: number) => Array.from({ length: A }, (_, k) => ({ name: `w${k}`, type: "http", subdomain: `${name(i)}-w${k}` }));
    let created = 0;
    let errors = 0;
    let firstError = "";
    const createMs: number[] = [];
    let createSeconds = 0;
    let n0 = [0, 0, 0];
    const c0 = await pgStat();
    const tCreate = performance.now();
    let startSeconds: number[] = [];
    if (method === "toml") {
      // 1. The groups in server.toml (the same file content on every node): node 1 writes them in one
      // transaction at its start; nodes 2 and 3 find them unchanged and only read them.
      say(`scale: writing ${G} groups x ${A} http apps into server.toml`);
      const lines: string[] = [];
      for (let i = 0; i < G; i++) {
        lines.push(``, `[[groups]]`, `name = "${name(i)}"`, `token = "sc-token-0123456789-${i}"`);
        for (const a of appsOf(i)) lines.push(`[[groups.apps]]`, `name = "${a.name}"`, `type = "http"`, `subdomain = "${a.subdomain}"`);
      }
      const groupsToml = lines.join("\n");
      const t = performance.now();
      nodes.push(await startNode(dir, 0, { ...nodeOpts, groupsToml }));
      const t1 = performance.now();
      nodes.push(...(await Promise.all([1, 2].map((i) => startNode(dir, i, { ...nodeOpts, groupsToml })))));
      startSeconds = [(t1 - t) / 1000, (performance.now() - t1) / 1000];
      createSeconds = (t1 - t) / 1000;
      created = G;
      say(`scale: node 1 wrote ${G} groups and started in ${startSeconds[0]!.toFixed(1)} s; nodes 2 and 3 read them and started in ${startSeconds[1]!.toFixed(1)} s`);
    } else if (method === "seed") {
      // 1. One group through node 1's API (the template: rows exactly as Warren writes them), then
      // G-1 copies of its rows in one SQL transaction, then the three nodes start on that database
      // (each reads every group at its start). Neither server.toml nor the API can register 10,000
      // groups here in minutes (see bench/cluster-results.md); logins and leases are what is measured.
      const first = await startNode(dir, 0, nodeOpts);
      const r = await api(first, "POST", "/api/groups", { name: name(0), token: `sc-token-0123456789-0`, apps: appsOf(0) });
      if (r.status !== 201) throw new Error(`template group: ${r.status} ${await r.text()}`);
      await stopChild(first.child, 10_000);
      const t = performance.now();
      const tpl = name(0);
      await sql.begin(async (tx) => {
        await tx`INSERT INTO warren_groups (name, token, source, created_at, limits, disabled, version)
          SELECT 'g' || lpad(i::text, 5, '0'), 'sc-token-0123456789-' || i, g.source, g.created_at, g.limits, g.disabled, g.version
          FROM warren_groups g, generate_series(1, ${G - 1}) AS i WHERE g.name = ${tpl}`;
        await tx`INSERT INTO warren_apps (group_name, position, name, type, remote_port, requested_port, options)
          SELECT 'g' || lpad(i::text, 5, '0'), a.position, a.name, a.type, a.remote_port, a.requested_port, replace(a.options, ${tpl + "-"}, 'g' || lpad(i::text, 5, '0') || '-')
          FROM warren_apps a, generate_series(1, ${G - 1}) AS i WHERE a.group_name = ${tpl}`;
        await tx`UPDATE warren_registry_state SET seq = seq + 1 WHERE id = 1`;
      });
      const seeded = (performance.now() - t) / 1000;
      const t0s = performance.now();
      nodes.push(await startNode(dir, 0, nodeOpts));
      const t1 = performance.now();
      nodes.push(...(await Promise.all([1, 2].map((i) => startNode(dir, i, nodeOpts)))));
      startSeconds = [(t1 - t0s) / 1000, (performance.now() - t1) / 1000];
      createSeconds = seeded;
      created = G;
      say(`scale: ${G} groups x ${A} http apps seeded in SQL in ${seeded.toFixed(1)} s; node 1 read them and started in ${startSeconds[0]!.toFixed(1)} s, nodes 2 and 3 in ${startSeconds[1]!.toFixed(1)} s`);
    } else {
      for (let i = 0; i < 3; i++) nodes.push(await startNode(dir, i, nodeOpts));
      say(`scale: 3 nodes up (heartbeatTimeout ${HB} s, poolSize 1); creating ${G} groups x ${A} http apps through the API`);
      // 1. Create the groups through the three APIs at once (a few requests in flight on each).
      n0 = nodeCpu();
      let next = 0;
      const CREATE_DEADLINE = performance.now() + 240_000;
      const t = performance.now();
      await Promise.all(
        Array.from({ length: 12 }, async (_, w) => {
          const n = nodes[w % 3]!;
          while (next < G && performance.now() < CREATE_DEADLINE) {
            const i = next++;
            const t = performance.now();
            const res = await api(n, "POST", "/api/groups", { name: name(i), token: `sc-token-0123456789-${i}`, apps: appsOf(i) }).catch((e) => e as Error);
            createMs.push(performance.now() - t);
            if (createMs.length % 1000 === 0) say(`scale: ${createMs.length} groups created (${((performance.now() - tCreate) / 1000).toFixed(1)} s)`);
            if (res instanceof Error || res.status !== 201) {
              errors++;
              firstError ||= res instanceof Error ? res.message : `${res.status} ${await res.text()}`;
            }
          }
        }),
      );
      createSeconds = (performance.now() - t) / 1000;
      created = next - errors;
      // Past the deadline, the rest of the scenario runs with the groups created so far.
      if (next < G) {
        say(`scale: creation deadline reached: ${next} of ${G} groups asked for`);
        G = next;
      }
      createMs.sort((a, b) => a - b);
      say(`scale: ${created} groups created in ${createSeconds.toFixed(1)} s (${(created / createSeconds).toFixed(0)}/s, POST p50 ${quantile(createMs, 0.5).toFixed(1)} ms p99 ${quantile(createMs, 0.99).toFixed(1)} ms, ${errors} errors${firstError ? `: ${firstError.slice(0, 200)}` : ""})`);
    }
    // Every node has the last group (changes are applied in order).
    await until(async () => (await Promise.all(nodes.map((n) => api(n, "GET", `/api/groups/${name(G - 1)}`).then((r) => r.status, () => 0)))).every((s) => s === 200), 60_000, "every node to have every group", 250);
    const registrySeconds = (performance.now() - tCreate) / 1000;
    const c1 = await pgStat();
    const n1 = nodeCpu();
    const rssRegistered = nodes.map((n) => rssBytes(n.child.pid));

    // 2. Logins: three client processes, each a third of the groups, each with its own node first.
    const per = Math.ceil(G / 3);
    const drivers: Driver[] = [];
    const tLogin = performance.now();
    for (let k = 0; k < 3; k++) {
      const from = k * per;
      const count = Math.min(per, G - from);
      drivers.push(
        startDriver(dir, `clients-${k}`, {
          servers: rotated(nodes, k).map((n) => `${n.addr}:${n.controlPort}`),
          prefix: "g",
          tokenPrefix: "sc-token-0123456789-",
          from,
          count,
          apps: Array.from({ length: A }, (_, a) => ({ name: `w${a}`, type: "http", localAddr: `127.0.0.1:${origin}` })),
          ...(k === 0 ? { origin } : {}),
          // Pings well within the server's heartbeatTimeout (the defaults, 10 s and 30 s, for heartbeatTimeout = 30).
          heartbeatInterval: Math.min(10, HB / 3),
          heartbeatTimeout: HB,
          events: false,
        }),
      );
    }
    let leaseRows = 0;
    let allLeasesMs: number | null = null;
    let driversAllMs: number | null = null;
    const samples: { s: number; leases: number; online: number }[] = [];
    await until(
      async () => {
        leaseRows = Number((await sql`SELECT count(*)::int AS n FROM warren_leases`)[0].n);
        const online = drivers.reduce((s, d) => s + (lastProgress(d)?.everOnline ?? 0), 0);
        samples.push({ s: (performance.now() - tLogin) / 1000, leases: leaseRows, online });
        if (allLeasesMs === null && leaseRows >= G) allLeasesMs = performance.now() - tLogin;
        if (driversAllMs === null && drivers.every((d) => !!allLine(d))) driversAllMs = performance.now() - tLogin;
        return allLeasesMs !== null && driversAllMs !== null;
      },
      120_000,
      `all ${G} groups online (leases in the database and LoginOk in the clients)`,
      500,
    ).catch((e) => say(`scale: ${(e as Error).message}`));
    const c2 = await pgStat();
    const n2cpu = nodeCpu();
    const perDriverAll = drivers.map((d) => allLine(d)?.ms ?? null);
    say(`scale: clients all online after ${driversAllMs === null ? "NOT ALL" : ((driversAllMs as number) / 1000).toFixed(1) + " s"}; ${leaseRows} lease rows after ${allLeasesMs === null ? "-" : ((allLeasesMs as number) / 1000).toFixed(1) + " s"}`);

    // 3. Every node serves the groups held elsewhere: remote routes opened (sampled by HTTP through each node).
    await Bun.sleep(3000);
    const sample: Record<string, { ok: number; of: number; p50Ms: number; statuses: Record<string, number> }> = {};
    for (const n of nodes) {
      const ms: number[] = [];
      const statuses: Record<string, number> = {};
      let okN = 0;
      const picks = Array.from({ length: 40 }, (_, j) => Math.floor(((j + 0.5) / 40) * G));
      for (const i of picks) {
        const r = await httpGet(n.addr, n.vhostPort, `${name(i)}-w${i % A}.${sub}`, 5000);
        statuses[r.status] = (statuses[r.status] ?? 0) + 1;
        if (r.status === 200) {
          okN++;
          ms.push(r.ms);
        }
      }
      ms.sort((a, b) => a - b);
      sample[n.name] = { ok: okN, of: picks.length, p50Ms: quantile(ms, 0.5), statuses };
    }
    say(`scale: HTTP through each node to groups held anywhere: ${nodes.map((n) => `${n.name} ${sample[n.name]!.ok}/${sample[n.name]!.of}`).join(", ")}`);

    // 4. Idle: everything online, no users. The first window holds each node's first write of every
    // app's counters (warren_traffic, every 10 s, only changed rows after the first); the second is the
    // steady state (heartbeats, lease renewals every heartbeatTimeout/3, re-reads of every lease).
    const tableStat = async (table: string) => {
      const [r] = await sql`SELECT (n_tup_ins + n_tup_upd)::float8 AS w FROM pg_stat_user_tables WHERE relname = ${table}`;
      return Number(r?.w ?? 0);
    };
    const window = async (seconds: number) => {
      const s0 = await pgStat();
      const [w0, d0] = [nodeCpu(), drivers.map((d) => cpuSeconds([d.child.pid]))];
      const [l0, t0] = [await tableStat("warren_leases"), await tableStat("warren_traffic")];
      await Bun.sleep(seconds * 1000);
      // Statistics reach pg_stat_user_tables within about a second of each transaction.
      const s1 = await pgStat();
      const [w1, d1] = [nodeCpu(), drivers.map((d) => cpuSeconds([d.child.pid]))];
      const [l1, t1] = [await tableStat("warren_leases"), await tableStat("warren_traffic")];
      return {
        windowSeconds: seconds,
        ...phase(s0, s1),
        leaseRowWritesPerSecond: (l1 - l0) / seconds,
        trafficRowWritesPerSecond: (t1 - t0) / seconds,
        nodeCpuPct: w1.map((x, i) => ((x - w0[i]!) / seconds) * 100),
        clientCpuPct: d1.map((x, i) => ((x - d0[i]!) / seconds) * 100),
      };
    };
    const rssAtOnline = nodes.map((n) => mib(rssBytes(n.child.pid)));
    const first = await window(quick ? 6 : 15);
    // Each node writes every app's counters once (idle ones too), one statement per row: wait until
    // that first round is over (bounded), so that the steady window shows the steady state.
    const tSettle = performance.now();
    const rowsAtSettleStart = Number((await sql`SELECT count(*)::int AS n FROM warren_traffic`)[0].n);
    const writesAtSettleStart = await tableStat("warren_traffic");
    const wantTrafficRows = 3 * G * A;
    let trafficRows = rowsAtSettleStart;
    let lastWrites = writesAtSettleStart;
    let settled = false;
    for (let k = 0; k < 60 && performance.now() - tSettle < (quick || allLeasesMs === null ? 30_000 : 150_000); k++) {
      await Bun.sleep(5000);
      trafficRows = Number((await sql`SELECT count(*)::int AS n FROM warren_traffic`)[0].n);
      const w = await tableStat("warren_traffic");
      const rate = (w - lastWrites) / 5;
      lastWrites = w;
      say(`scale: warren_traffic ${trafficRows} of ${wantTrafficRows} rows, ${rate.toFixed(0)} row writes/s`);
      if (trafficRows >= wantTrafficRows && rate < 50) {
        settled = true;
        break;
      }
    }
    const rssAtSettle = nodes.map((n) => mib(rssBytes(n.child.pid)));
    const trafficSettle = { settled, seconds: (performance.now() - tSettle) / 1000, rows: trafficRows, rowsExpected: wantTrafficRows, rowWrites: lastWrites - writesAtSettleStart, rowsAtStart: rowsAtSettleStart };
    const WINDOW = quick ? 10 : 30;
    const steady = { ...(await window(WINDOW)), onlineInClients: drivers.map((d) => lastProgress(d)?.online ?? null) };
    const byNode = await sql`SELECT node, count(*)::int AS n FROM warren_leases GROUP BY node ORDER BY node`;
    const tableRows = await sql`SELECT (SELECT count(*) FROM warren_groups)::int AS groups, (SELECT count(*) FROM warren_apps)::int AS apps, (SELECT count(*) FROM warren_leases)::int AS leases, (SELECT count(*) FROM warren_traffic)::int AS traffic, (SELECT count(*) FROM warren_nodes)::int AS nodes`;
    const rssOnline = nodes.map((n) => rssBytes(n.child.pid));
    const rssDrivers = drivers.map((d) => rssBytes(d.child.pid));
    const res = {
      groupsWanted: wanted,
      groups: G,
      appsPerGroup: A,
      appType: "http (subdomain)",
      heartbeatTimeoutS: HB,
      clientHeartbeatIntervalS: Math.min(10, HB / 3),
      poolSize: 1,
      create: { method, nodeStartSeconds: startSeconds, untilEveryNodeHasEverySeconds: registrySeconds, created, errors, firstError: firstError || null, requestsSeconds: createSeconds, perSecond: created / createSeconds, postP50Ms: quantile(createMs, 0.5), postP99Ms: quantile(createMs, 0.99), ...phase(c0, c1), nodeCpuSeconds: n1.map((x, i) => x - n0[i]!) },
      login: {
        clientsAllOnlineMs: driversAllMs,
        perDriverAllOnlineMs: perDriverAll,
        allLeasesMs,
        leaseRows,
        ...phase(c1, c2),
        nodeCpuSeconds: n2cpu.map((x, i) => x - n1[i]!),
        progress: samples.filter((_, i) => i % 4 === 0 || i === samples.length - 1),
        refusedHandshakes: nodes.map((n) => countLines(n.log, /too many unfinished handshakes/)),
      },
      httpSample: sample,
      afterOnline: first,
      trafficSettle,
      steady,
      leasesByNode: Object.fromEntries(byNode.map((r: any) => [r.node, r.n])),
      tableRows: tableRows[0],
      rss: { registeredMiB: rssRegistered.map(mib), atOnlineMiB: rssAtOnline, afterTrafficSettleMiB: rssAtSettle, endMiB: rssOnline.map(mib), clientsMiB: rssDrivers.map(mib), postgresPssMiB: mib(pgMemory(pgPid)) },
      logCounts: Object.fromEntries(nodes.map((n) => [n.name, { leaseExpired: countLines(n.log, /lease expired/), dbUnreachable: countLines(n.log, /database unreachable/), replaced: countLines(n.log, /session replaced/), blocked: countLines(n.log, /address blocked|code=Blocked/), workRefused: countLines(n.log, /work connection refused/), hbDropped: countLines(n.log, /heartbeat timeout; dropping session/), warnOrError: countLines(n.log, /level=(warn|error)|\bWARN|\bERROR/i) }])),
      logTails: Object.fromEntries(nodes.map((n) => [n.name, tail(n.log, 4)])),
    };
    say(
      `scale: steady ${WINDOW} s: PostgreSQL CPU ${res.steady.pgCpuPct.toFixed(1)} %, ${res.steady.transactionsPerSecond.toFixed(0)} transactions/s, ${res.steady.leaseRowWritesPerSecond.toFixed(0)} lease writes/s, ${res.steady.trafficRowWritesPerSecond.toFixed(0)} traffic writes/s (first ${first.windowSeconds} s after online: PostgreSQL CPU ${first.pgCpuPct.toFixed(1)} %, ${first.trafficRowWritesPerSecond.toFixed(0)} traffic writes/s); nodes CPU ${res.steady.nodeCpuPct.map((x) => x.toFixed(1)).join(" / ")} %; RSS ${res.rss.endMiB.map((x) => x.toFixed(0)).join(" / ")} MiB; leases ${JSON.stringify(res.leasesByNode)}`,
    );
    for (const d of drivers) await stopChild(d.child, 5000);
    return res;
  });
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    command: `npx bun bench/cluster.ts ${Bun.argv.slice(2).join(" ")}`.trim(),
    machine: { cpu: cpus()[0]?.model, cores: cpus().length, kernel: release(), bun: Bun.version, loadavgBefore: readFileSync("/proc/loadavg", "utf8").trim() },
  };
  const out = flags.out ?? join(tmpdir(), `warren-cluster-${Date.now()}.json`);
  const save = () => writeFileSync(out, JSON.stringify(results, null, 2) + "\n");
  for (const s of which) {
    const start = Date.now();
    started.length = 0;
    try {
      if (s === "forward") results.forward = await scenarioForward();
      if (s === "failover") {
        const modes = (flags["failover-mode"] ?? "both") === "both" ? (["kill", "stop"] as const) : [flags["failover-mode"] as "kill" | "stop"];
        const r: Record<string, unknown> = {};
        for (const m of modes) r[m] = await scenarioFailover(m);
        results.failover = r;
      }
      if (s === "scale") results.scale = await scenarioScale();
    } catch (err) {
      say(`${s} failed: ${(err as Error).stack ?? err}`);
      for (const n of started) say(`${n.name} (pid ${n.child.pid}, ${n.child.proc.exitCode === null ? "running" : `exited ${n.child.proc.exitCode}`}) log:\n${tail(n.log, 12)}`);
      results[s] = { error: (err as Error).message };
    }
    (results as Record<string, any>)[`${s}Seconds`] = (Date.now() - start) / 1000;
    say(`${s}: ${((Date.now() - start) / 1000).toFixed(0)} s`);
    save();
  }
  results.loadavgAfter = readFileSync("/proc/loadavg", "utf8").trim();
  save();
  say(`wrote ${out}`);
}

let code = 0;
try {
  await main();
} catch (err) {
  console.error(`cluster bench: ${(err as Error).stack ?? err}`);
  code = 1;
} finally {
  await stopAll();
  if (flags.keep && started.length) {
    // The temp dirs go at exit: the logs of the last scenario are copied out first.
    const from = dirname(started[0]!.log);
    const to = join(tmpdir(), `warren-cluster-logs-${Date.now()}`);
    mkdirSync(to, { recursive: true });
    for (const f of readdirSync(from)) if (f.endsWith(".log") || f.endsWith(".toml")) cpSync(join(from, f), join(to, f));
    say(`kept the logs in ${to}`);
  }
  removeTempDirs();
  clearTimeout(watchdog);
}
say(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
process.exit(code);
