/**
 * Cost of the request inspector (issue 19): `npx bun bench/inspect.ts [flags]`.
 *
 * Inspect mode (the default): one Warren server and one Warren client (processes,
 * run from --checkout, default this repository), one vhostHTTPPort, two HTTP apps
 * of one group on the same origin, told apart by Host:
 *
 *   plain.bench.test  app "plain" (inspect off)
 *   insp.bench.test   app "insp"  (inspect = true; inspectRequests and
 *                     inspectBodyBytes left at their defaults, 200 and 64 KiB)
 *
 * The origin is Debian's nginx (one worker): `POST /64k` and `POST /1k` are
 * answered 200 with a fixed body of that size (static files; nginx reads and
 * discards the request body, `error_page 405 =200 $uri`), `GET /small` with
 * 100 bytes. wrk drives keep-alive load (-t2, --connections, default 16):
 *
 *   post64k  POST 64 KiB body, 64 KiB response   (the issue's target)
 *   post1k   POST 1 KiB body, 1 KiB response
 *   get      GET, 100-byte response
 *
 * Every scenario is run for each app in turn, --seconds each, over --rounds
 * rounds (the order of the apps flips every round); rows are medians over the
 * rounds, plus the median of the per-round ratio insp/plain (paired, so slow
 * drift of the machine cancels). CPU seconds of the server and client
 * processes (from /proc) per 10k requests; server RSS (peak, sampled every
 * 250 ms). Both apps live in one server process, so once the inspector's ring
 * is full its memory is in every later row: the RSS before and after the
 * inspector filled is reported separately, with warren_inspect_bytes.
 * After the runs, the inspector's API is read to check it really captured
 * (newest capture: request and response sizes).
 *
 * A/B mode (`--ab DIR1,DIR2,...`): one Warren server+client per checkout (each
 * runs its own server.ts and client.ts; a checkout needs node_modules, e.g. a
 * symlink), each with only the "plain" app (a config every version accepts),
 * all in front of the same origin; the same scenarios, the checkouts in an
 * order rotating every round. For the relay of non-inspected apps before and
 * after the inspector existed:
 *
 *   git worktree add -f /tmp/warren-ins-6f4fb55 6f4fb55
 *   ln -s /work/main/node_modules /tmp/warren-ins-6f4fb55/node_modules
 *   npx bun bench/inspect.ts --ab /tmp/warren-ins-6f4fb55,/tmp/warren-ins-head
 *
 * Flags: --rounds N (4), --seconds S (5), --connections N (16), --warmup S (2,
 * unmeasured, per app or checkout and scenario), --only post64k,post1k,get,
 * --inspect-requests N and --inspect-body-bytes N (the server's inspectRequests and
 * inspectBodyBytes; defaults when absent),
 * --checkout DIR (inspect mode), --ab DIR,DIR[,...], --out FILE (JSON of
 * every run; none by default). Prints Markdown tables. Loopback only; every
 * run is bounded by wrk's duration and a timeout, the whole by a watchdog.
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, release } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { BUN, cpuSeconds, freePort, killAllSync, removeTempDirs, ROOT, rssBytes, run, spawnChild, stopAll, stopChild, tail, tempDir, until, waitPort, type Child } from "./common.ts";

const { values: flags } = parseArgs({
  args: Bun.argv.slice(2),
  options: {
    rounds: { type: "string" },
    seconds: { type: "string" },
    connections: { type: "string" },
    warmup: { type: "string" },
    only: { type: "string" },
    checkout: { type: "string" },
    ab: { type: "string" },
    out: { type: "string" },
    "inspect-requests": { type: "string" },
    "inspect-body-bytes": { type: "string" },
    help: { type: "boolean", short: "h" },
  },
  strict: true,
});
if (flags.help) {
  console.log(readFileSync(import.meta.path, "utf8").split("*/")[0]);
  process.exit(0);
}
/** WARREN_BENCH_PROF=dir writes a CPU profile (markdown) of the Warren server to dir when it exits. */
const PROF = process.env.WARREN_BENCH_PROF ? ["--cpu-prof-md", `--cpu-prof-dir=${process.env.WARREN_BENCH_PROF}`] : [];
const ROUNDS = Math.max(1, Math.min(20, Number(flags.rounds ?? 4) | 0));
const SECONDS = Math.max(1, Math.min(60, Number(flags.seconds ?? 5) | 0));
const CONNS = Math.max(1, Math.min(256, Number(flags.connections ?? 16) | 0));
const WARMUP = Math.max(0, Math.min(30, Number(flags.warmup ?? 2) | 0));

interface Scenario {
  readonly name: string;
  readonly method: "GET" | "POST";
  readonly path: string;
  readonly requestBytes: number;
  readonly responseBytes: number;
  readonly label: string;
}
const SCENARIOS: readonly Scenario[] = [
  { name: "post64k", method: "POST", path: "/64k", requestBytes: 65536, responseBytes: 65536, label: "POST 64 KiB, 64 KiB response" },
  { name: "post1k", method: "POST", path: "/1k", requestBytes: 1024, responseBytes: 1024, label: "POST 1 KiB, 1 KiB response" },
  { name: "get", method: "GET", path: "/small", requestBytes: 0, responseBytes: 100, label: "GET, 100-byte response" },
];
const only = flags.only ? flags.only.split(",").map((s) => s.trim()).filter(Boolean) : SCENARIOS.map((s) => s.name);
for (const n of only) if (!SCENARIOS.some((s) => s.name === n)) throw new Error(`unknown scenario "${n}" (known: ${SCENARIOS.map((s) => s.name).join(", ")})`);
const scenarios = SCENARIOS.filter((s) => only.includes(s.name));

const AB = flags.ab ? flags.ab.split(",").map((s) => resolve(s.trim())).filter(Boolean) : null;
if (AB && AB.length < 2) throw new Error("--ab needs at least two checkouts, comma-separated");
if (AB && flags.checkout) throw new Error("--checkout and --ab do not go together");
const CHECKOUT = resolve(flags.checkout ?? ROOT);
for (const d of AB ?? [CHECKOUT]) if (!existsSync(join(d, "server.ts")) || !existsSync(join(d, "node_modules"))) throw new Error(`${d}: not a Warren checkout with node_modules (server.ts, node_modules)`);

const DOMAIN = "bench.test";
const t0 = Date.now();
const say = (msg: string) => console.log(`[inspect ${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${msg}`);

/** Variants: the apps (inspect mode) or the checkouts (A/B mode). */
const nVariants = AB ? AB.length : 2;
/** Hard stop: generous, but bounded whatever happens. */
const BUDGET_MS = (90 + nVariants * 30 + scenarios.length * nVariants * (WARMUP + 20 + ROUNDS * (SECONDS + 20))) * 1000;
const watchdog = setTimeout(() => {
  console.error(`inspect bench: over the ${Math.round(BUDGET_MS / 1000)} s budget; stopping everything`);
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

async function waitUp(child: Child, port: number, what: string, ms = 15_000): Promise<void> {
  const exited = child.proc.exited.then((code) => {
    throw new Error(`${what} exited with code ${code} before listening on ${port}`);
  });
  await Promise.race([waitPort(port, ms, what), exited]);
}

/** The origin: nginx, one worker; static bodies of 100 B, 1 KiB and 64 KiB, also answered to POST (the request body is read and discarded). */
async function startOrigin(): Promise<{ child: Child; port: number }> {
  const dir = tempDir("warren-bench-insp-origin-");
  mkdirSync(join(dir, "www"));
  mkdirSync(join(dir, "tmp"));
  writeFileSync(join(dir, "www", "small"), "s".repeat(99) + "\n");
  writeFileSync(join(dir, "www", "1k"), Buffer.alloc(1024, "k"));
  writeFileSync(join(dir, "www", "64k"), Buffer.alloc(65536, "r"));
  const port = await freePort();
  // prettier-ignore
  const conf = [
    ...(process.getuid?.() === 0 ? ["user root;"] : []),
    "worker_processes 1;",
    `pid ${join(dir, "origin.pid")};`,
    `error_log ${join(dir, "origin-error.log")} warn;`,
    "events { worker_connections 4096; }",
    "http {",
    "  access_log off;",
    ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((k) => `  ${k}_temp_path ${join(dir, "tmp", k)};`),
    "  default_type application/octet-stream;",
    "  keepalive_requests 1000000;",
    "  client_max_body_size 1m;",
    "  client_body_buffer_size 128k;",
    "  server {",
    `    listen 127.0.0.1:${port} backlog=4096;`,
    `    root ${join(dir, "www")};`,
    // A POST to a static file is a 405; answered instead as a GET of the same file.
    "    error_page 405 =200 $uri;",
    "  }",
    "}",
    "",
  ].join("\n");
  writeFileSync(join(dir, "origin.conf"), conf);
  const child = spawnChild("origin", ["nginx", "-p", dir, "-c", join(dir, "origin.conf"), "-g", "daemon off;"], { logFile: join(dir, "origin.out") });
  try {
    await waitUp(child, port, "origin nginx");
  } catch (err) {
    await stopChild(child);
    throw new Error(`${(err as Error).message}\n${tail(join(dir, "origin.out"))}\n${tail(join(dir, "origin-error.log"))}`);
  }
  return { child, port };
}

interface AppSpec {
  readonly name: string;
  readonly inspect: boolean;
}

interface Warren {
  readonly label: string;
  readonly root: string;
  readonly port: number;
  readonly apiPort: number;
  readonly adminToken: string;
  readonly server: Child;
  readonly client: Child;
  stop(): Promise<void>;
}

/** One Warren server and client from checkout `root`, with `apps` (HTTP, subdomain = name) all in front of `origin`. */
async function startWarren(label: string, root: string, origin: number, apps: readonly AppSpec[]): Promise<Warren> {
  const dir = tempDir("warren-bench-insp-w-");
  const [controlPort, apiPort, vhostPort] = [await freePort(), await freePort(), await freePort()];
  const adminToken = randomBytes(18).toString("hex");
  const token = randomBytes(16).toString("hex");
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
    `subdomainHost = "${DOMAIN}"`,
    // The server's defaults unless asked otherwise (to see what the ring's size and the body limit cost).
    ...(flags["inspect-requests"] ? [`inspectRequests = ${Number(flags["inspect-requests"])}`] : []),
    ...(flags["inspect-body-bytes"] ? [`inspectBodyBytes = ${Number(flags["inspect-body-bytes"])}`] : []),
    ``,
    `[[groups]]`,
    `name = "bench"`,
    `token = "${token}"`,
    ...apps.flatMap((a) => [``, `[[groups.apps]]`, `name = "${a.name}"`, `type = "http"`, `subdomain = "${a.name}"`, ...(a.inspect ? [`inspect = true`] : [])]),
    ``,
  ].join("\n"));
  // prettier-ignore
  writeFileSync(join(dir, "client.toml"), [
    `serverAddr = "127.0.0.1"`,
    `serverPort = ${controlPort}`,
    `group = "bench"`,
    `token = "${token}"`,
    `logLevel = "info"`,
    ...apps.flatMap((a) => [``, `[[apps]]`, `name = "${a.name}"`, `type = "http"`, `localAddr = "127.0.0.1:${origin}"`]),
    ``,
  ].join("\n"));
  const children: Child[] = [];
  try {
    const server = spawnChild(`warren-server ${label}`, [BUN, ...PROF, join(root, "server.ts"), "--config", join(dir, "server.toml")], { logFile: join(dir, "server.log"), cwd: root });
    children.push(server);
    await waitUp(server, apiPort, "warren server API");
    await waitUp(server, vhostPort, "warren vhostHTTPPort", 5000);
    const client = spawnChild(`warren-client ${label}`, [BUN, join(root, "client.ts"), "--config", join(dir, "client.toml")], { logFile: join(dir, "client.log"), cwd: root });
    children.push(client);
    let gone = false;
    client.proc.exited.then(() => (gone = true));
    for (const a of apps) {
      const s = scenarios.find((x) => x.name === "get") ?? SCENARIOS[2]!;
      await until(
        async () => {
          if (gone) throw new Error("the Warren client exited");
          const p = await probe(vhostPort, a.name, s);
          return p.code === 200 && p.bytes === s.responseBytes;
        },
        20_000,
        `Warren to route ${a.name}.${DOMAIN}`,
        200,
      );
    }
    // Let the client fill the server's pool of idle work connections.
    await Bun.sleep(300);
    return { label, root, port: vhostPort, apiPort, adminToken, server, client, stop: () => Promise.all(children.map((c) => stopChild(c))).then(() => {}) };
  } catch (err) {
    await Promise.all(children.map((c) => stopChild(c)));
    throw new Error(`${label}: ${(err as Error).message}\nserver log:\n${tail(join(dir, "server.log"), 8)}\nclient log:\n${tail(join(dir, "client.log"), 8)}`);
  }
}

/** One request of scenario `s` to app `app` with curl: status and response body length. */
async function probe(port: number, app: string, s: Scenario, bodyFile?: string): Promise<{ code: number; bytes: number }> {
  const body = s.method === "POST" ? ["--data-binary", `@${bodyFile}`, "-H", "Content-Type: application/octet-stream"] : [];
  // prettier-ignore
  const r = await run(["curl", "-s", "-o", "/dev/null", "--max-time", "3", "-H", `Host: ${app}.${DOMAIN}`, ...body, "-w", "%{http_code} %{size_download}", `http://127.0.0.1:${port}${s.path}`], { timeoutMs: 5000, allowFail: true });
  const [code, bytes] = r.stdout.trim().split(" ").map(Number);
  return { code: code ?? 0, bytes: bytes ?? 0 };
}

// ---------------------------------------------------------------- measurements

type Row = Record<string, any> & { variant: string; scenario: string };

const UNIT: Record<string, number> = { us: 1e-3, ms: 1, s: 1000, m: 60_000 };
const toMs = (v: string, u: string) => Number(v) * (UNIT[u] ?? NaN);

/** Parses wrk's summary (with --latency). Latencies in ms. */
function parseWrk(out: string) {
  const q = (pct: string) => {
    const m = new RegExp(`^\\s*${pct}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, "m").exec(out);
    return m ? toMs(m[1]!, m[2]!) : NaN;
  };
  const reqs = /^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),/m.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return {
    requests: reqs ? Number(reqs[1]) : NaN,
    rps: Number(/^Requests\/sec:\s+([\d.]+)/m.exec(out)?.[1] ?? NaN),
    p50: q("50"),
    p90: q("90"),
    p99: q("99"),
    socketErrors: sock ? Number(sock[1]) + Number(sock[2]) + Number(sock[3]) + Number(sock[4]) : 0,
    non2xx: non2xx ? Number(non2xx[1]) : 0,
  };
}

/** wrk Lua scripts, one per POST scenario (the body is built once, at load). */
const scripts = new Map<string, string>();
function scriptFor(s: Scenario, dir: string): string | null {
  if (s.method !== "POST") return null;
  let f = scripts.get(s.name);
  if (!f) {
    f = join(dir, `${s.name}.lua`);
    writeFileSync(f, `wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/octet-stream"\nwrk.body = string.rep("b", ${s.requestBytes})\n`);
    scripts.set(s.name, f);
  }
  return f;
}

function wrkArgs(w: Warren, app: string, s: Scenario, seconds: number, dir: string, latency: boolean): string[] {
  const script = scriptFor(s, dir);
  // prettier-ignore
  return ["wrk", "-t2", `-c${CONNS}`, `-d${seconds}s`, ...(latency ? ["--latency"] : []), ...(script ? ["-s", script] : []), "-H", `Host: ${app}.${DOMAIN}`, `http://127.0.0.1:${w.port}${s.path}`];
}

async function measure(w: Warren, app: string, variant: string, s: Scenario, dir: string): Promise<Row> {
  const pids = { server: [w.server.pid], client: [w.client.pid] };
  let rssPeak = rssBytes(w.server.pid);
  const timer = setInterval(() => (rssPeak = Math.max(rssPeak, rssBytes(w.server.pid))), 250);
  const [s0, c0] = [cpuSeconds(pids.server), cpuSeconds(pids.client)];
  const res = await run(wrkArgs(w, app, s, SECONDS, dir, true), { timeoutMs: (SECONDS + 30) * 1000, allowFail: true }).finally(() => clearInterval(timer));
  const [s1, c1] = [cpuSeconds(pids.server), cpuSeconds(pids.client)];
  rssPeak = Math.max(rssPeak, rssBytes(w.server.pid));
  const row: Row = { variant, scenario: s.name };
  if (res.code !== 0) return { ...row, error: `wrk exited ${res.code}: ${(res.stderr || res.stdout).trim().slice(-300)}` };
  const r = parseWrk(res.stdout);
  const per10k = (x: number) => (r.requests > 0 ? (x / r.requests) * 1e4 : NaN);
  Object.assign(row, r, { serverCpuPer10k: per10k(s1 - s0), clientCpuPer10k: per10k(c1 - c0), serverRssMiB: rssPeak / 2 ** 20 });
  if (!(r.requests > 0) || !Number.isFinite(r.rps)) row.error = `wrk gave no result: ${res.stdout.trim().slice(-300)}`;
  else if (r.non2xx > 0) row.error = `${r.non2xx} of ${r.requests} responses were not 2xx/3xx`;
  else if (r.socketErrors > r.requests * 0.001) row.error = `${r.socketErrors} socket errors for ${r.requests} requests`;
  return row;
}

const median = (xs: number[]) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function api(w: Warren, path: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${w.apiPort}${path}`, { headers: { authorization: `Bearer ${w.adminToken}` }, signal: AbortSignal.timeout(5000) });
  return { status: res.status, text: await res.text() };
}

/** warren_inspect_bytes from /metrics (null when absent: a version without the inspector). */
async function inspectBytes(w: Warren): Promise<number | null> {
  try {
    const m = /^warren_inspect_bytes(?:\{[^}]*\})?\s+([\d.e+]+)/m.exec((await api(w, "/metrics")).text);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

const MiB = (b: number | null) => (b === null ? "n/a" : `${(b / 2 ** 20).toFixed(1)} MiB`);
const f0 = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : "n/a");
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "n/a");
const pct = (x: number) => (Number.isFinite(x) ? `${x >= 0 ? "+" : ""}${(x * 100).toFixed(1)} %` : "n/a");
const fmtRow = (r: Row) => (r.error ? `ERROR ${String(r.error).slice(0, 200)}` : `${f0(r.rps)} req/s, p50 ${f2(r.p50)} ms, p99 ${f2(r.p99)} ms, server ${f2(r.serverCpuPer10k)} CPU s/10k, client ${f2(r.clientCpuPer10k)}, server RSS ${r.serverRssMiB.toFixed(0)} MiB`);

async function gitLabel(dir: string): Promise<string> {
  const head = await run(["git", "-C", dir, "rev-parse", "--short", "HEAD"], { timeoutMs: 5000, allowFail: true });
  const dirty = await run(["git", "-C", dir, "status", "--porcelain", "--untracked-files=no"], { timeoutMs: 10_000, allowFail: true });
  return `${head.stdout.trim() || basename(dir)}${dirty.stdout.trim() ? "+uncommitted" : ""}`;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  for (const bin of ["wrk", "curl", "nginx"]) if (!Bun.which(bin)) throw new Error(`${bin} is not installed (apt-get install -y wrk curl nginx)`);
  const dir = tempDir("warren-bench-insp-");
  const bodies = new Map<string, string>();
  for (const s of scenarios)
    if (s.method === "POST") {
      const f = join(dir, `${s.name}.body`);
      writeFileSync(f, randomBytes(s.requestBytes));
      bodies.set(s.name, f);
    }
  const labels = AB ? await Promise.all(AB.map(gitLabel)) : [await gitLabel(CHECKOUT)];
  const results: Record<string, any> = {
    date: new Date().toISOString(),
    command: ["npx bun bench/inspect.ts", ...Bun.argv.slice(2)].join(" "),
    mode: AB ? "ab" : "inspect",
    checkouts: AB ? AB.map((d, i) => ({ dir: d, label: labels[i] })) : [{ dir: CHECKOUT, label: labels[0] }],
    machine: { cpu: /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? cpus()[0]?.model, cores: cpus().length, kernel: release(), bun: Bun.version },
    plan: { rounds: ROUNDS, seconds: SECONDS, connections: CONNS, threads: 2, warmupSeconds: WARMUP, scenarios: scenarios.map((s) => s.name) },
    loadBefore: Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]),
  };
  say(`${AB ? `A/B of ${labels.join(" vs ")}` : `inspect vs plain on ${labels[0]} (${CHECKOUT})`}; ${ROUNDS} rounds of ${SECONDS} s, wrk -t2 -c${CONNS}; scenarios ${scenarios.map((s) => s.name).join(", ")}`);
  const origin = await startOrigin();
  say(`origin nginx on 127.0.0.1:${origin.port}`);

  // Variants: [warren, app, name].
  const warrens: Warren[] = [];
  const variants: { w: Warren; app: string; name: string }[] = [];
  const runs: Row[] = [];
  const memory: Record<string, any> = {};
  try {
    if (AB) {
      for (let i = 0; i < AB.length; i++) {
        const w = await startWarren(labels[i]!, AB[i]!, origin.port, [{ name: "plain", inspect: false }]);
        warrens.push(w);
        variants.push({ w, app: "plain", name: labels[i]! });
        say(`${labels[i]}: up on 127.0.0.1:${w.port} (server pid ${w.server.pid})`);
      }
    } else {
      const w = await startWarren(labels[0]!, CHECKOUT, origin.port, [
        { name: "plain", inspect: false },
        { name: "insp", inspect: true },
      ]);
      warrens.push(w);
      variants.push({ w, app: "plain", name: "plain" }, { w, app: "insp", name: "insp" });
      say(`${labels[0]}: up on 127.0.0.1:${w.port} (server pid ${w.server.pid})`);
    }
    // Every app answers every scenario right (status and size) before anything is measured.
    for (const v of variants)
      for (const s of scenarios) {
        const p = await probe(v.w.port, v.app, s, bodies.get(s.name));
        if (p.code !== 200 || p.bytes !== s.responseBytes) throw new Error(`${v.name}: ${s.method} ${s.path} answered HTTP ${p.code} with ${p.bytes} bytes (expected 200, ${s.responseBytes})`);
      }
    // Unmeasured warm-up (Bun's JIT compiles the hot path in its first seconds under load): the plain
    // variants first, so the server's RSS can be read before the inspector's ring fills.
    for (const v of variants)
      if (v.app === "plain") for (const s of scenarios) await run(wrkArgs(v.w, v.app, s, WARMUP, dir, false), { timeoutMs: (WARMUP + 30) * 1000, allowFail: true });
    await Bun.sleep(500);
    for (const w of warrens) memory[w.label] = { rssAfterPlainWarmupMiB: rssBytes(w.server.pid) / 2 ** 20, inspectBytesAfterPlainWarmup: await inspectBytes(w) };
    for (const v of variants)
      if (v.app !== "plain") for (const s of scenarios) await run(wrkArgs(v.w, v.app, s, WARMUP, dir, false), { timeoutMs: (WARMUP + 30) * 1000, allowFail: true });
    if (!AB) {
      await Bun.sleep(500);
      Object.assign(memory[warrens[0]!.label], { rssAfterInspWarmupMiB: rssBytes(warrens[0]!.server.pid) / 2 ** 20, inspectBytesAfterInspWarmup: await inspectBytes(warrens[0]!) });
    }
    say(`warm-up done; memory ${JSON.stringify(memory)}`);

    for (let round = 0; round < ROUNDS; round++)
      for (const s of scenarios) {
        const k = round % variants.length;
        for (const v of [...variants.slice(k), ...variants.slice(0, k)]) {
          const r: Row = { ...(await measure(v.w, v.app, v.name, s, dir)), round };
          // What the inspector keeps right after the run (its ring full of this scenario's exchanges).
          if (!AB && v.app === "insp") r.inspectBytes = await inspectBytes(v.w);
          runs.push(r);
          say(`round ${round + 1} ${s.name.padEnd(7)} ${v.name.padEnd(18)} ${fmtRow(r)}`);
          await Bun.sleep(300);
        }
      }

    // The inspector really captured: its newest exchange, and the bytes it keeps.
    if (!AB) {
      const w = warrens[0]!;
      const list = await api(w, "/api/groups/bench/apps/insp/requests?limit=3");
      const plain = await api(w, "/api/groups/bench/apps/plain/requests?limit=1");
      let newest: any = null;
      try {
        newest = JSON.parse(list.text);
      } catch {}
      let plainJson: any = null;
      try {
        plainJson = JSON.parse(plain.text);
      } catch {}
      results.check = {
        inspStatus: list.status,
        inspInspecting: newest?.inspecting ?? null,
        inspNewest: newest?.requests?.map((r: any) => ({ id: r.id, method: r.method, url: r.url, status: r.status, state: r.state, requestBytes: r.requestBytes, responseBytes: r.responseBytes })) ?? null,
        plainStatus: plain.status,
        plainInspecting: plainJson?.inspecting ?? null,
        plainCaptures: plainJson?.requests?.length ?? null,
        inspectBytesAtEnd: await inspectBytes(w),
        rssAtEndMiB: rssBytes(w.server.pid) / 2 ** 20,
      };
      say(`inspector check: ${JSON.stringify(results.check)}`);
    }
  } finally {
    await Promise.all(warrens.map((w) => w.stop()));
    await stopChild(origin.child);
  }

  // Summaries: medians per variant and scenario; paired per-round ratios against the first variant.
  const keys = ["rps", "p50", "p90", "p99", "serverCpuPer10k", "clientCpuPer10k", "serverRssMiB", "requests", "inspectBytes"];
  const base = variants[0]!.name;
  const summary: Row[] = [];
  for (const s of scenarios)
    for (const v of variants) {
      const mine = runs.filter((r) => r.scenario === s.name && r.variant === v.name);
      const ok = mine.filter((r) => !r.error);
      const row: Row = { variant: v.name, scenario: s.name, runs: mine.length, ok: ok.length };
      for (const k of keys) row[k] = median(ok.map((r) => r[k]));
      row.rpsAll = ok.map((r) => Math.round(r.rps));
      if (mine.length > ok.length) row.errors = mine.filter((r) => r.error).map((r) => String(r.error).slice(0, 200));
      if (v.name !== base) {
        // Paired by round: (this variant / the base) - 1, then the median (and the range) over rounds.
        const ratios = (k: string) =>
          [...Array(ROUNDS).keys()]
            .map((round) => {
              const a = ok.find((r) => r.round === round);
              const b = runs.find((r) => !r.error && r.round === round && r.scenario === s.name && r.variant === base);
              return a && b ? a[k] / b[k] - 1 : NaN;
            })
            .filter(Number.isFinite);
        const rr = ratios("rps");
        row.vsBase = { rps: median(rr), rpsMin: Math.min(...rr), rpsMax: Math.max(...rr), p99: median(ratios("p99")), serverCpuPer10k: median(ratios("serverCpuPer10k")) };
      }
      summary.push(row);
    }
  Object.assign(results, { memory, summary, runs, seconds: (Date.now() - t0) / 1000 });
  if (flags.out) {
    mkdirSync(dirname(resolve(flags.out)), { recursive: true });
    writeFileSync(flags.out, JSON.stringify(results, null, 2) + "\n");
    say(`wrote ${flags.out}`);
  }
  console.log("\n" + render(results, base));
}

function render(results: Record<string, any>, base: string): string {
  const out: string[] = [];
  out.push(`${results.mode === "ab" ? "A/B of the plain relay" : "Inspector cost"}: ${results.checkouts.map((c: any) => `${c.label} (${c.dir})`).join(", ")}; ${results.plan.rounds} rounds × ${results.plan.seconds} s per row, wrk -t2 -c${results.plan.connections}, keep-alive; medians; Δ = median over rounds of the paired ratio against ${base} (range in brackets).`, "");
  const ab = results.mode === "ab";
  out.push(`| scenario | variant | req/s | Δ req/s (range) | p50 ms | p99 ms | Δ p99 | server CPU s/10k req | Δ server CPU | client CPU s/10k req | server RSS MiB (peak) |${ab ? "" : " inspector keeps after the run |"} req/s per round |`);
  out.push(`| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |${ab ? "" : " ---: |"} --- |`);
  for (const r of results.summary as Row[]) {
    const d = r.vsBase;
    const s = SCENARIOS.find((x) => x.name === r.scenario)!;
    // prettier-ignore
    out.push(`| ${s.label} | ${r.variant}${r.ok < r.runs ? ` (${r.runs - r.ok} failed)` : ""} | ${f0(r.rps)} | ${d ? `${pct(d.rps)} (${pct(d.rpsMin)} … ${pct(d.rpsMax)})` : "—"} | ${f2(r.p50)} | ${f2(r.p99)} | ${d ? pct(d.p99) : "—"} | ${f2(r.serverCpuPer10k)} | ${d ? pct(d.serverCpuPer10k) : "—"} | ${f2(r.clientCpuPer10k)} | ${f0(r.serverRssMiB)} |${ab ? "" : ` ${MiB(Number.isFinite(r.inspectBytes) ? r.inspectBytes : null)} |`} ${r.rpsAll.join(", ")} |`);
  }
  out.push("");
  for (const [label, m] of Object.entries(results.memory as Record<string, any>)) {
    const parts = [`server RSS after the plain warm-up ${m.rssAfterPlainWarmupMiB.toFixed(1)} MiB (warren_inspect_bytes ${MiB(m.inspectBytesAfterPlainWarmup)})`];
    if (m.rssAfterInspWarmupMiB !== undefined) parts.push(`after the insp warm-up ${m.rssAfterInspWarmupMiB.toFixed(1)} MiB (warren_inspect_bytes ${MiB(m.inspectBytesAfterInspWarmup)})`);
    out.push(`- ${label}: ${parts.join("; ")}`);
  }
  if (results.check) {
    const c = results.check;
    out.push(`- at the end: server RSS ${c.rssAtEndMiB.toFixed(1)} MiB, warren_inspect_bytes ${MiB(c.inspectBytesAtEnd)}; insp newest captures ${JSON.stringify(c.inspNewest)}; plain inspecting=${c.plainInspecting} with ${c.plainCaptures} captures`);
  }
  out.push(`- machine: ${results.machine.cpu}, ${results.machine.cores} cores, Linux ${results.machine.kernel}, Bun ${results.machine.bun}; load before ${results.loadBefore}; took ${results.seconds.toFixed(0)} s`);
  return out.join("\n");
}

let code = 0;
try {
  await main();
} catch (err) {
  console.error(`inspect bench: ${(err as Error).stack ?? err}`);
  code = 1;
} finally {
  await stopAll();
  removeTempDirs();
  clearTimeout(watchdog);
}
say(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
process.exit(code);
