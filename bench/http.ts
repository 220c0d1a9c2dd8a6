/**
 * HTTP virtual-host benchmark (issue 16): `npx bun bench/http.ts [flags]`.
 *
 * One origin (Debian's nginx with its own config in a temp dir, one worker,
 * serving a 100-byte `GET /small` and a 1 GiB sparse `GET /big`), reached
 * through four paths, all on loopback, in the same run and in alternation
 * (rotating order each round; rows are medians of the rounds):
 *
 *   direct  wrk -> origin
 *   warren  wrk -> Warren server vhostHTTPPort (Host: web.bench.test) -> tunnel -> Warren client -> origin
 *   nginx   wrk -> nginx reverse proxy (proxy_pass, upstream keepalive) -> origin
 *   frp     wrk -> frps vhostHTTPPort (subdomainHost bench.test, token auth, default tcpMux) -> frpc -> origin
 *
 * Each round measures, for every path: small GETs with keep-alive
 * (`wrk -t2 -c50 --latency`), small GETs with a new connection per request
 * (the same with `-H 'Connection: close'`: the origin or proxy closes after
 * each response and wrk reconnects), and one 1 GiB download (curl, byte count
 * checked). CPU seconds of the proxy processes (their whole process trees,
 * from /proc) are taken around every run.
 *
 * frps/frpc are looked up on PATH, then in $WARREN_PEERS_BIN (default
 * /work/peers/bin); when missing, the frp rows are skipped with build
 * instructions. A path that cannot start (for example Warren before its
 * vhost support works) is reported as failed and the others go on.
 *
 * Flags: --rounds N (3), --duration S (5, seconds per wrk run), --only a,b
 * (subset of direct,warren,nginx,frp), --no-big (skip the 1 GiB download),
 * --connections N (50), --out FILE (default bench/results/http.json).
 * Writes the JSON, prints the Markdown section; `npx bun bench/run.ts --render`
 * puts that section into BENCHMARKS.md.
 */
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, ftruncateSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, release } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { BENCH, BUN, cpuSeconds, freePort, killAllSync, removeTempDirs, ROOT, run, spawnChild, stopAll, stopChild, tail, tempDir, treeMemory, until, waitPort, type Child } from "./common.ts";
import { findPeerBin, PEER_INSTALL } from "./peers.ts";
import { renderHttp } from "./report.ts";

type HttpPath = "direct" | "warren" | "nginx" | "frp";
const ALL: readonly HttpPath[] = ["direct", "warren", "nginx", "frp"];
const HOST = "web.bench.test";
const SMALL_BYTES = 100;
const BIG_BYTES = 2 ** 30;
/** How to build frp when it is missing (bench/peers.ts keeps the lines for every peer). */
const FRP_BUILD = PEER_INSTALL.frp;

const { values: flags } = parseArgs({
  args: Bun.argv.slice(2),
  options: {
    rounds: { type: "string" },
    duration: { type: "string" },
    only: { type: "string" },
    "no-big": { type: "boolean" },
    connections: { type: "string" },
    out: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
  strict: true,
});
if (flags.help) {
  console.log(readFileSync(import.meta.path, "utf8").split("*/")[0]);
  process.exit(0);
}
const ROUNDS = Math.max(1, Math.min(50, Number(flags.rounds ?? 3) | 0));
const DURATION = Math.max(1, Math.min(120, Number(flags.duration ?? 5) | 0));
const CONNS = Math.max(1, Math.min(1000, Number(flags.connections ?? 50) | 0));
const BIG = !flags["no-big"];
const WARMUP = Math.min(2, DURATION);
const only = flags.only ? flags.only.split(",").map((s) => s.trim()).filter(Boolean) : [...ALL];
for (const p of only) if (!ALL.includes(p as HttpPath)) throw new Error(`unknown path "${p}" (known: ${ALL.join(", ")})`);
const paths = ALL.filter((p) => only.includes(p));

const t0 = Date.now();
const say = (msg: string) => console.log(`[http ${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${msg}`);

/** Hard stop: generous, but bounded whatever happens. */
const BUDGET_MS = (120 + ROUNDS * paths.length * (2 * (DURATION + 35) + (BIG ? 130 : 0)) + paths.length * (WARMUP + 60)) * 1000;
const watchdog = setTimeout(() => {
  console.error(`http bench: over the ${Math.round(BUDGET_MS / 1000)} s budget; stopping everything`);
  killAllSync();
  process.exit(3);
}, BUDGET_MS);
watchdog.unref();
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const)
  process.on(sig, () => {
    killAllSync();
    process.exit(130);
  });
process.on("exit", () => killAllSync());

// ---------------------------------------------------------------- processes

interface Entry {
  readonly path: HttpPath;
  /** Port that wrk and curl hit on 127.0.0.1 (with Host: web.bench.test). */
  readonly port: number;
  /** Root pids of the public-side and private-side proxy processes (trees measured). */
  readonly server: number[];
  readonly client: number[];
  stop(): Promise<void>;
}

/** Resolves once `port` accepts; fails at once when `child` exits first. */
async function waitUp(child: Child, port: number, what: string, ms = 15_000): Promise<void> {
  const exited = child.proc.exited.then((code) => {
    throw new Error(`${what} exited with code ${code} before listening on ${port}`);
  });
  await Promise.race([waitPort(port, ms, what), exited]);
}

const findBin = findPeerBin;

const nginxTemp = (dir: string) => ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((k) => `  ${k}_temp_path ${join(dir, "tmp", k)};`);
/** Running as root, nginx's workers would switch to `nobody`, who cannot read the 0700 temp dir. */
const nginxUser = () => (process.getuid?.() === 0 ? ["user root;"] : []);

async function startNginx(name: string, dir: string, conf: string, port: number): Promise<Child> {
  mkdirSync(join(dir, "tmp"), { recursive: true });
  writeFileSync(join(dir, `${name}.conf`), conf);
  const child = spawnChild(name, ["nginx", "-p", dir, "-c", join(dir, `${name}.conf`), "-g", "daemon off;"], { logFile: join(dir, `${name}.out`) });
  try {
    await waitUp(child, port, name);
  } catch (err) {
    await stopChild(child);
    throw new Error(`${(err as Error).message}\n${tail(join(dir, `${name}.out`))}\n${tail(join(dir, `${name}-error.log`))}`);
  }
  return child;
}

/** The origin: nginx, one worker, static files (the big one sparse: no disk is read). */
async function startOrigin(): Promise<{ child: Child; port: number }> {
  const dir = tempDir("warren-bench-http-origin-");
  mkdirSync(join(dir, "www"));
  writeFileSync(join(dir, "www", "small"), "x".repeat(SMALL_BYTES - 1) + "\n");
  const fd = openSync(join(dir, "www", "big"), "w");
  ftruncateSync(fd, BIG_BYTES);
  closeSync(fd);
  const port = await freePort();
  const conf = [
    ...nginxUser(),
    "worker_processes 1;",
    `pid ${join(dir, "origin.pid")};`,
    `error_log ${join(dir, "origin-error.log")} warn;`,
    "events { worker_connections 4096; }",
    "http {",
    "  access_log off;",
    ...nginxTemp(dir),
    "  default_type application/octet-stream;",
    "  sendfile on;",
    "  tcp_nopush on;",
    "  keepalive_requests 100000;",
    "  server {",
    `    listen 127.0.0.1:${port} backlog=4096;`,
    `    root ${join(dir, "www")};`,
    "  }",
    "}",
    "",
  ].join("\n");
  return { child: await startNginx("origin", dir, conf, port), port };
}

async function direct(origin: number): Promise<Entry> {
  return { path: "direct", port: origin, server: [], client: [], stop: async () => {} };
}

/** nginx as a careful operator runs it in front of an app: HTTP/1.1 upstream with keepalive, no spooling to disk, Host routing (unknown hosts 404). */
async function nginxProxy(origin: number): Promise<Entry> {
  const dir = tempDir("warren-bench-http-nginx-");
  const port = await freePort();
  const conf = [
    ...nginxUser(),
    "worker_processes auto;",
    `pid ${join(dir, "proxy.pid")};`,
    `error_log ${join(dir, "proxy-error.log")} warn;`,
    "events { worker_connections 4096; }",
    "http {",
    "  access_log off;",
    ...nginxTemp(dir),
    "  keepalive_requests 100000;",
    "  upstream app {",
    `    server 127.0.0.1:${origin};`,
    "    keepalive 64;",
    "    keepalive_requests 100000;",
    "  }",
    "  server {",
    `    listen 127.0.0.1:${port} default_server backlog=4096;`,
    "    return 404;",
    "  }",
    "  server {",
    `    listen 127.0.0.1:${port};`,
    `    server_name ${HOST};`,
    "    location / {",
    "      proxy_pass http://app;",
    "      proxy_http_version 1.1;",
    '      proxy_set_header Connection "";',
    "      proxy_set_header Host $host;",
    "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    "      proxy_set_header X-Forwarded-Proto $scheme;",
    "      proxy_max_temp_file_size 0;",
    "    }",
    "  }",
    "}",
    "",
  ].join("\n");
  const child = await startNginx("proxy", dir, conf, port);
  return { path: "nginx", port, server: [child.pid], client: [], stop: () => stopChild(child) };
}

async function warren(origin: number): Promise<Entry> {
  const dir = tempDir("warren-bench-http-w-");
  const [controlPort, apiPort, vhostPort] = [await freePort(), await freePort(), await freePort()];
  const adminToken = randomBytes(18).toString("hex");
  const token = randomBytes(16).toString("hex"); // 32 characters
  // prettier-ignore
  writeFileSync(join(dir, "server.toml"), [
    `bindAddr = "127.0.0.1"`,
    `controlPort = ${controlPort}`,
    `apiHost = "127.0.0.1"`,
    `apiPort = ${apiPort}`,
    `adminToken = "${adminToken}"`,
    `dataDir = "${join(dir, "data")}"`,
    `logLevel = "info"`,
    `vhostHTTPPort = ${vhostPort}`,
    `subdomainHost = "bench.test"`,
    ``,
    `[[groups]]`,
    `name = "bench"`,
    `token = "${token}"`,
    ``,
    `[[groups.apps]]`,
    `name = "web"`,
    `type = "http"`,
    `subdomain = "web"`,
    ``,
  ].join("\n"));
  // prettier-ignore
  writeFileSync(join(dir, "client.toml"), [
    `serverAddr = "127.0.0.1"`,
    `serverPort = ${controlPort}`,
    `group = "bench"`,
    `token = "${token}"`,
    `logLevel = "info"`,
    ``,
    `[[apps]]`,
    `name = "web"`,
    `type = "http"`,
    `localAddr = "127.0.0.1:${origin}"`,
    ``,
  ].join("\n"));
  const children: Child[] = [];
  try {
    const server = spawnChild("warren-server", [BUN, join(ROOT, "server.ts"), "--config", join(dir, "server.toml")], { logFile: join(dir, "server.log") });
    children.push(server);
    await waitUp(server, apiPort, "warren server API");
    await waitUp(server, vhostPort, "warren vhostHTTPPort", 5000);
    const client = spawnChild("warren-client", [BUN, join(ROOT, "client.ts"), "--config", join(dir, "client.toml")], { logFile: join(dir, "client.log") });
    children.push(client);
    await ready(vhostPort, "Warren's vhost to route web.bench.test", client);
    // Let the client fill the server's pool of idle work connections.
    await Bun.sleep(300);
    return { path: "warren", port: vhostPort, server: [server.pid], client: [client.pid], stop: () => Promise.all(children.map((c) => stopChild(c))).then(() => {}) };
  } catch (err) {
    await Promise.all(children.map((c) => stopChild(c)));
    throw new Error(`${(err as Error).message}\nserver log:\n${tail(join(dir, "server.log"), 8)}\nclient log:\n${tail(join(dir, "client.log"), 8)}`);
  }
}

/** frp as its docs configure an HTTP vhost: token auth, default transport (tcpMux on), subdomain under subdomainHost. */
async function frp(origin: number): Promise<Entry> {
  const frps = findBin("frps");
  const frpc = findBin("frpc");
  if (!frps || !frpc) throw new Error(FRP_BUILD);
  const dir = tempDir("warren-bench-http-frp-");
  const [bindPort, vhostPort] = [await freePort(), await freePort()];
  const token = randomBytes(16).toString("hex");
  // prettier-ignore
  writeFileSync(join(dir, "frps.toml"), [
    `bindAddr = "127.0.0.1"`,
    `bindPort = ${bindPort}`,
    `vhostHTTPPort = ${vhostPort}`,
    `subdomainHost = "bench.test"`,
    `auth.method = "token"`,
    `auth.token = "${token}"`,
    `log.to = "console"`,
    `log.level = "warn"`,
    ``,
  ].join("\n"));
  // prettier-ignore
  writeFileSync(join(dir, "frpc.toml"), [
    `serverAddr = "127.0.0.1"`,
    `serverPort = ${bindPort}`,
    `loginFailExit = true`,
    `auth.method = "token"`,
    `auth.token = "${token}"`,
    `log.to = "console"`,
    `log.level = "warn"`,
    ``,
    `[[proxies]]`,
    `name = "web"`,
    `type = "http"`,
    `localIP = "127.0.0.1"`,
    `localPort = ${origin}`,
    `subdomain = "web"`,
    ``,
  ].join("\n"));
  const children: Child[] = [];
  try {
    const server = spawnChild("frps", [frps, "-c", join(dir, "frps.toml")], { logFile: join(dir, "frps.log") });
    children.push(server);
    await waitUp(server, vhostPort, "frps vhostHTTPPort");
    const client = spawnChild("frpc", [frpc, "-c", join(dir, "frpc.toml")], { logFile: join(dir, "frpc.log") });
    children.push(client);
    await ready(vhostPort, "frps to route web.bench.test", client);
    return { path: "frp", port: vhostPort, server: [server.pid], client: [client.pid], stop: () => Promise.all(children.map((c) => stopChild(c))).then(() => {}) };
  } catch (err) {
    await Promise.all(children.map((c) => stopChild(c)));
    throw new Error(`${(err as Error).message}\nfrps log:\n${tail(join(dir, "frps.log"), 8)}\nfrpc log:\n${tail(join(dir, "frpc.log"), 8)}`);
  }
}

/** One small GET through `port` with the bench Host: status and body length. */
async function probe(port: number): Promise<{ code: number; bytes: number }> {
  const r = await run(["curl", "-s", "-o", "/dev/null", "--max-time", "3", "-H", `Host: ${HOST}`, "-w", "%{http_code} %{size_download}", `http://127.0.0.1:${port}/small`], { timeoutMs: 5000, allowFail: true });
  const [code, bytes] = r.stdout.trim().split(" ").map(Number);
  return { code: code ?? 0, bytes: bytes ?? 0 };
}

/** Polls until GET /small answers 200 with the right size; fails early if `child` exits. */
async function ready(port: number, what: string, child: Child): Promise<void> {
  let last = { code: 0, bytes: 0 };
  let gone = false;
  child.proc.exited.then(() => (gone = true));
  await until(
    async () => {
      if (gone) throw new Error(`${child.name} exited while waiting for ${what}`);
      last = await probe(port);
      return last.code === 200 && last.bytes === SMALL_BYTES;
    },
    20_000,
    `${what} (last answer: HTTP ${last.code}, ${last.bytes} bytes)`,
    200,
  ).catch((err) => {
    throw new Error(`${(err as Error).message.replace(/\(last answer.*\)/, "")}(last answer: HTTP ${last.code}, ${last.bytes} bytes)`);
  });
}

function startPath(p: HttpPath, origin: number): Promise<Entry> {
  switch (p) {
    case "direct":
      return direct(origin);
    case "warren":
      return warren(origin);
    case "nginx":
      return nginxProxy(origin);
    case "frp":
      return frp(origin);
  }
}

// ---------------------------------------------------------------- measurements

type Row = Record<string, any> & { path: HttpPath };

const UNIT: Record<string, number> = { us: 1e-3, ms: 1, s: 1000, m: 60_000 };
const ms = (v: string, u: string) => Number(v) * (UNIT[u] ?? NaN);

/** Parses wrk's summary (with --latency). Latencies in ms. */
function parseWrk(out: string) {
  const q = (pct: string) => {
    const m = new RegExp(`^\\s*${pct}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, "m").exec(out);
    return m ? ms(m[1]!, m[2]!) : NaN;
  };
  const reqs = /^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),/m.exec(out);
  const lat = /^\s*Latency\s+([\d.]+)(us|ms|s|m)\s+([\d.]+)(us|ms|s|m)\s+([\d.]+)(us|ms|s|m)/m.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return {
    requests: reqs ? Number(reqs[1]) : NaN,
    seconds: reqs ? ms(reqs[2]!, reqs[3]!) / 1000 : NaN,
    rps: Number(/^Requests\/sec:\s+([\d.]+)/m.exec(out)?.[1] ?? NaN),
    p50: q("50"),
    p75: q("75"),
    p90: q("90"),
    p99: q("99"),
    mean: lat ? ms(lat[1]!, lat[2]!) : NaN,
    max: lat ? ms(lat[5]!, lat[6]!) : NaN,
    connectErrors: sock ? Number(sock[1]) : 0,
    readErrors: sock ? Number(sock[2]) : 0,
    writeErrors: sock ? Number(sock[3]) : 0,
    timeouts: sock ? Number(sock[4]) : 0,
    non2xx: non2xx ? Number(non2xx[1]) : 0,
  };
}

const cpuOf = (e: Entry) => ({ server: cpuSeconds(e.server), client: cpuSeconds(e.client) });

async function wrk(e: Entry, origin: Child, close: boolean, seconds: number): Promise<Row> {
  // prettier-ignore
  const args = ["wrk", "-t2", `-c${CONNS}`, `-d${seconds}s`, "--latency", "-H", `Host: ${HOST}`, ...(close ? ["-H", "Connection: close"] : []), `http://127.0.0.1:${e.port}/small`];
  const [c0, o0] = [cpuOf(e), cpuSeconds([origin.pid])];
  const res = await run(args, { timeoutMs: (seconds + 30) * 1000, allowFail: true });
  const [c1, o1] = [cpuOf(e), cpuSeconds([origin.pid])];
  const row: Row = { path: e.path, mode: close ? "close" : "keepalive" };
  if (res.code !== 0) return { ...row, error: `wrk exited ${res.code}: ${(res.stderr || res.stdout).trim().slice(-300)}` };
  const w = parseWrk(res.stdout);
  Object.assign(row, w);
  const [cpuServer, cpuClient] = [c1.server - c0.server, c1.client - c0.client];
  const per10k = (x: number) => (w.requests > 0 ? (x / w.requests) * 1e4 : NaN);
  Object.assign(row, { cpuServer, cpuClient, cpuPer10k: e.server.length + e.client.length ? per10k(cpuServer + cpuClient) : null, originCpuPer10k: per10k(o1 - o0) });
  const errors = w.connectErrors + w.readErrors + w.writeErrors + w.timeouts;
  if (!(w.requests > 0) || !Number.isFinite(w.rps)) row.error = `wrk gave no result: ${res.stdout.trim().slice(-300)}`;
  else if (w.non2xx > w.requests * 0.01) row.error = `${w.non2xx} of ${w.requests} responses were not 2xx/3xx`;
  else if (errors > w.requests * 0.01) row.error = `${errors} socket errors for ${w.requests} requests`;
  return row;
}

async function big(e: Entry): Promise<Row> {
  const [c0] = [cpuOf(e)];
  let [rssServer, rssClient] = [0, 0];
  const sample = () => {
    for (const p of e.server) rssServer = Math.max(rssServer, treeMemory(p).bytes);
    for (const p of e.client) rssClient = Math.max(rssClient, treeMemory(p).bytes);
  };
  sample();
  const timer = setInterval(sample, 250);
  // prettier-ignore
  const res = await run(["curl", "-s", "-o", "/dev/null", "--max-time", "120", "-H", `Host: ${HOST}`, "-w", "%{http_code} %{size_download} %{time_total} %{time_starttransfer}", `http://127.0.0.1:${e.port}/big`], { timeoutMs: 130_000, allowFail: true }).finally(() => clearInterval(timer));
  const c1 = cpuOf(e);
  const [code, bytes, total, ttfb] = res.stdout.trim().split(" ").map(Number) as [number, number, number, number];
  const row: Row = { path: e.path, mode: "big", code, bytes, seconds: total, ttfbMs: ttfb * 1000 };
  const [cpuServer, cpuClient] = [c1.server - c0.server, c1.client - c0.client];
  Object.assign(row, { mibPerSecond: bytes / 2 ** 20 / total, cpuServer, cpuClient, cpuPerGiB: e.server.length + e.client.length ? (cpuServer + cpuClient) / (bytes / 2 ** 30) : null, peakRssServer: e.server.length ? rssServer : null, peakRssClient: e.client.length ? rssClient : null });
  if (res.code !== 0 || code !== 200 || bytes !== BIG_BYTES) row.error = `curl exit ${res.code}, HTTP ${code}, ${bytes} of ${BIG_BYTES} bytes${res.stderr ? `: ${res.stderr.trim().slice(-200)}` : ""}`;
  return row;
}

const median = (xs: number[]) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
};

/** One row per path and mode: the median of each figure over the rounds that did not fail. */
function summarise(runs: Row[], mode: string, keys: string[]): Row[] {
  const out: Row[] = [];
  for (const p of paths) {
    const mine = runs.filter((r) => r.path === p && r.mode === mode);
    if (!mine.length) continue;
    const ok = mine.filter((r) => !r.error);
    const row: Row = { path: p, mode, runs: mine.length, ok: ok.length };
    if (!ok.length) row.error = String(mine[mine.length - 1]!.error);
    else {
      for (const k of keys) row[k] = ok.some((r) => typeof r[k] === "number") ? median(ok.map((r) => r[k])) : null;
      if (mine.length > ok.length) row.failedRuns = mine.filter((r) => r.error).map((r) => String(r.error).slice(0, 200));
    }
    out.push(row);
  }
  return out;
}

const rotated = <T>(xs: T[], k: number) => [...xs.slice(k % Math.max(1, xs.length)), ...xs.slice(0, k % Math.max(1, xs.length))];

async function version(cmd: string[], re: RegExp): Promise<string | null> {
  try {
    const r = await run(cmd, { timeoutMs: 5000, allowFail: true });
    return re.exec(r.stdout + r.stderr)?.[1] ?? null;
  } catch {
    return null;
  }
}

async function main(): Promise<void> {
  for (const bin of ["wrk", "curl", "nginx"]) if (!Bun.which(bin)) throw new Error(`${bin} is not installed (apt-get install -y wrk curl nginx)`);
  say(`paths ${paths.join(", ")}; ${ROUNDS} rounds, wrk ${DURATION} s at c=${CONNS}${BIG ? ", 1 GiB download" : ""}`);
  const frps = findBin("frps");
  const failed: Record<string, string> = {};
  const skipped: Record<string, string> = {};
  if (paths.includes("frp") && (!frps || !findBin("frpc"))) {
    skipped.frp = "frps/frpc not found (see the build commands the script prints)";
    console.log(FRP_BUILD);
  }
  const commitFile = frps ? join(dirname(frps), "frp.commit") : null;
  const cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? cpus()[0]?.model ?? "unknown";
  const results: Record<string, any> = {
    date: new Date().toISOString(),
    command: ["npx bun bench/http.ts", ...Bun.argv.slice(2)].join(" "),
    machine: {
      cpu: cpuModel,
      cores: cpus().length,
      kernel: release(),
      bun: Bun.version,
      wrk: await version(["wrk", "-v"], /^wrk (\S+)/m),
      nginx: await version(["nginx", "-v"], /nginx\/(\S+)/),
      curl: await version(["curl", "--version"], /^curl (\S+)/m),
      frp: frps ? await version([frps, "--version"], /^(\S+)/) : null,
      frpCommit: commitFile && existsSync(commitFile) ? readFileSync(commitFile, "utf8").trim() : null,
    },
    plan: { rounds: ROUNDS, seconds: DURATION, connections: CONNS, threads: 2, warmupSeconds: WARMUP, smallBytes: SMALL_BYTES, bigBytes: BIG ? BIG_BYTES : null, host: HOST },
    loadBefore: Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]),
  };
  const origin = await startOrigin();
  say(`origin nginx on 127.0.0.1:${origin.port}`);
  const entries = new Map<HttpPath, Entry>();
  for (const p of paths) {
    if (skipped[p]) continue;
    try {
      const e = await startPath(p, origin.port);
      const check = await probe(e.port);
      if (check.code !== 200 || check.bytes !== SMALL_BYTES) throw new Error(`GET /small answered HTTP ${check.code} with ${check.bytes} bytes`);
      entries.set(p, e);
      say(`${p}: up on 127.0.0.1:${e.port}`);
    } catch (err) {
      const msg = (err as Error).message;
      failed[p] = msg.split("\n").slice(0, 12).join("\n");
      say(`${p}: FAILED to start: ${msg.split("\n")[0]}`);
      console.log(msg.split("\n").slice(1, 20).map((l) => `    ${l}`).join("\n"));
    }
  }
  const runs: Row[] = [];
  try {
    // An unmeasured warm-up per path: Bun's JIT compiles the hot code in its first seconds under load.
    for (const e of entries.values()) await run(["wrk", "-t2", `-c${CONNS}`, `-d${WARMUP}s`, "-H", `Host: ${HOST}`, `http://127.0.0.1:${e.port}/small`], { timeoutMs: (WARMUP + 30) * 1000, allowFail: true });
    // The first read of the sparse 1 GiB file fills the page cache with zero pages: not for the first path measured to pay.
    if (BIG) await run(["curl", "-s", "-o", "/dev/null", "--max-time", "120", `http://127.0.0.1:${origin.port}/big`], { timeoutMs: 130_000, allowFail: true });
    const live = [...entries.keys()];
    const fmt = (r: Row) => (r.error ? `ERROR ${String(r.error).slice(0, 160)}` : `${Math.round(r.rps)} req/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms${r.cpuPer10k != null ? `, ${r.cpuPer10k.toFixed(2)} CPU s/10k` : ""}`);
    for (let round = 0; round < ROUNDS; round++) {
      for (const close of [false, true])
        for (const p of rotated(live, round)) {
          const r: Row = { ...(await wrk(entries.get(p)!, origin.child, close, DURATION)), round };
          runs.push(r);
          say(`round ${round + 1} ${close ? "close    " : "keepalive"} ${p.padEnd(6)} ${fmt(r)}`);
          await Bun.sleep(close ? 1000 : 300);
        }
      if (BIG)
        for (const p of rotated(live, round)) {
          const r: Row = { ...(await big(entries.get(p)!)), round };
          runs.push(r);
          say(`round ${round + 1} 1 GiB     ${p.padEnd(6)} ${r.error ? `ERROR ${r.error}` : `${r.mibPerSecond.toFixed(0)} MiB/s in ${r.seconds.toFixed(2)} s${r.cpuPerGiB != null ? `, ${r.cpuPerGiB.toFixed(2)} CPU s/GiB` : ""}`}`);
          await Bun.sleep(300);
        }
    }
  } finally {
    await Promise.all([...entries.values()].map((e) => e.stop()));
    await stopChild(origin.child);
  }
  const wrkKeys = ["rps", "requests", "p50", "p75", "p90", "p99", "mean", "max", "cpuServer", "cpuClient", "cpuPer10k", "originCpuPer10k", "non2xx", "connectErrors", "readErrors", "writeErrors", "timeouts"];
  Object.assign(results, {
    paths,
    failed,
    skipped,
    keepalive: summarise(runs, "keepalive", wrkKeys),
    close: summarise(runs, "close", wrkKeys),
    big: summarise(runs, "big", ["mibPerSecond", "seconds", "bytes", "ttfbMs", "cpuServer", "cpuClient", "cpuPerGiB", "peakRssServer", "peakRssClient"]),
    runs,
    seconds: (Date.now() - t0) / 1000,
  });
  // Failed paths get an error row so the tables show them.
  for (const [p, why] of Object.entries(failed)) for (const k of ["keepalive", "close", ...(BIG ? ["big"] : [])]) results[k].push({ path: p, mode: k, error: `could not start: ${why.split("\n")[0]}` });
  const outFile = flags.out ?? join(BENCH, "results", "http.json");
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, JSON.stringify(results, null, 2) + "\n");
  console.log("\n" + renderHttp(results));
  say(`wrote ${outFile}${flags.out ? "" : "; `npx bun bench/run.ts --render` puts it into BENCHMARKS.md"}`);
  const bad = Object.keys(failed).length + [...results.keepalive, ...results.close, ...results.big].filter((r: Row) => r.error).length;
  if (bad) say(`${Object.keys(failed).length} path(s) failed to start, ${[...results.keepalive, ...results.close, ...results.big].filter((r: Row) => r.error && !failed[r.path]).length} row(s) failed: see above`);
}

let code = 0;
try {
  await main();
} catch (err) {
  console.error(`http bench: ${(err as Error).stack ?? err}`);
  code = 1;
} finally {
  await stopAll();
  removeTempDirs();
  clearTimeout(watchdog);
}
say(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
process.exit(code);
