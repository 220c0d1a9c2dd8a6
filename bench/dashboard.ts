/**
 * A dashboard as the server sees it, for bench/dashboard-load.ts, bench/dashboard-scale.ts and
 * bench/dashboard-memory.ts: a Warren server with many groups registered through the API, an
 * admin's live feed (GET /api/live after POST /ui/login, as the page's EventSource does), and a
 * Prometheus scraper (GET /metrics with the admin bearer token). Loopback only; every loop is
 * bounded by a count and a deadline.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BENCH, BUN, freePort, quantile, spawnChild, tail, tempDir, until, waitPort, type Child } from "./common.ts";

export const ADMIN_TOKEN = "bench-admin-token-0123456789";
export const GROUP_TOKEN_PREFIX = "bench-group-token-";

/** The name bench/control-driver.ts gives group `i`. */
export const groupName = (i: number): string => `g${String(i).padStart(5, "0")}`;

/** A Warren server started from a temp config, no groups in the file. */
export interface BenchServer {
  readonly child: Child;
  readonly pid: number;
  readonly apiPort: number;
  readonly controlPort: number;
  readonly adminToken: string;
  readonly dir: string;
  readonly log: string;
}

/** Starts server.ts (its own process) on loopback ports; `extra` lines go into server.toml. */
export async function startServer(extra: string[] = []): Promise<BenchServer> {
  const dir = tempDir("warren-bench-dash-");
  const [controlPort, apiPort] = [await freePort(), await freePort()];
  writeFileSync(
    join(dir, "server.toml"),
    [
      `bindAddr = "127.0.0.1"`,
      `controlPort = ${controlPort}`,
      `apiHost = "127.0.0.1"`,
      `apiPort = ${apiPort}`,
      `adminToken = "${ADMIN_TOKEN}"`,
      `dataDir = "${join(dir, "data")}"`,
      // Below the ephemeral range (32768-60999), so no outgoing connection can sit on an app port.
      `allowPorts = "20000-29999"`,
      `logLevel = "info"`,
      ...extra,
    ].join("\n") + "\n",
  );
  const log = join(dir, "server.log");
  const child = spawnChild("warren-server-dashboard", [BUN, ...(process.env.WARREN_BENCH_PROF ? ["--cpu-prof-md", `--cpu-prof-dir=${process.env.WARREN_BENCH_PROF}`] : []), join(BENCH, "..", "server.ts"), "--config", join(dir, "server.toml")], { logFile: log });
  try {
    await waitPort(apiPort, 30_000, "warren server API");
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${tail(log)}`);
  }
  return { child, pid: child.pid, apiPort, controlPort, adminToken: ADMIN_TOKEN, dir, log };
}

/**
 * Registers groups g00000… through POST /api/groups (admin token: no registration limits), `apps`
 * apps each (app0, app1, …, ports picked by the server), token GROUP_TOKEN_PREFIX + i, `parallel`
 * requests at a time. Returns the wall time and the slowest request.
 */
export async function createGroups(apiPort: number, adminToken: string, count: number, apps: number, parallel = 25, deadlineMs = 120_000): Promise<{ ms: number; slowestMs: number }> {
  const t0 = performance.now();
  let next = 0;
  let slowest = 0;
  const end = Date.now() + deadlineMs;
  const worker = async () => {
    for (let guard = 0; guard < count && next < count; guard++) {
      if (Date.now() > end) throw new Error(`registering ${count} groups took longer than ${deadlineMs} ms (${next} started)`);
      const i = next++;
      const t = performance.now();
      const res = await fetch(`http://127.0.0.1:${apiPort}/api/groups`, {
        method: "POST",
        headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
        body: JSON.stringify({ name: groupName(i), token: `${GROUP_TOKEN_PREFIX}${i}`, apps: Array.from({ length: apps }, (_, k) => ({ name: `app${k}` })) }),
      });
      const text = await res.text();
      if (res.status !== 201) throw new Error(`POST /api/groups ${groupName(i)} answered ${res.status}: ${text.slice(0, 300)}`);
      slowest = Math.max(slowest, performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, worker));
  return { ms: performance.now() - t0, slowestMs: slowest };
}

/** Starts bench/control-driver.ts: the first `groups` groups log in with `apps` apps each pointing at `localPort`; resolves once all are online. */
export async function onlineClients(server: { controlPort: number; dir: string; log?: string }, groups: number, apps: number, localPort: number, deadlineMs = 90_000): Promise<{ child: Child; ms: number }> {
  const log = join(server.dir, `driver-${groups}-${Date.now()}.log`);
  const t0 = performance.now();
  const child = spawnChild("control-driver", [BUN, join(BENCH, "control-driver.ts"), JSON.stringify({ port: server.controlPort, groups, apps, tokenPrefix: GROUP_TOKEN_PREFIX, localPort, deadlineMs })], { logFile: log });
  let line: RegExpExecArray | null = null;
  await until(() => !!(line = /ONLINE (\{.*\})/.exec(existsSync(log) ? readFileSync(log, "utf8") : "")), deadlineMs + 10_000, "the control driver", 100);
  const r = JSON.parse(line![1]!) as { online: number; partial: boolean };
  if (r.partial) throw new Error(`only ${r.online} of ${groups} groups came online\n${server.log ? tail(server.log) : ""}`);
  return { child, ms: performance.now() - t0 };
}

/** A dashboard session's cookie: POST /ui/login with the admin token, as the page's sign-in form does. */
export async function signIn(apiPort: number, adminToken: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${apiPort}/ui/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: adminToken }) });
  const cookie = res.headers.get("set-cookie");
  await res.text();
  if (res.status !== 200 || !cookie) throw new Error(`POST /ui/login answered ${res.status} without a cookie`);
  return cookie.split(";")[0]!;
}

/** One timed GET: milliseconds to the last byte, and the body's size. */
export async function timedGet(url: string, headers: Record<string, string>): Promise<{ ms: number; bytes: number; status: number; body: string }> {
  const t = performance.now();
  const res = await fetch(url, { headers });
  const body = await res.text();
  return { ms: performance.now() - t, bytes: Buffer.byteLength(body), status: res.status, body };
}

/** p50, p99 and max of a list of milliseconds. */
export function summary(ms: number[]): { n: number; p50: number; p99: number; max: number } {
  const s = [...ms].sort((a, b) => a - b);
  return { n: s.length, p50: quantile(s, 0.5), p99: quantile(s, 0.99), max: s[s.length - 1] ?? NaN };
}

/**
 * One open live feed (GET /api/live with the session cookie), read as fast as it comes. Counts
 * events and bytes and keeps the gaps between events; ends on `stop()`, when the server ends
 * it, or at `maxMs`.
 */
export class LiveFeed {
  events = 0;
  bytes = 0;
  /** Milliseconds between consecutive events (the server writes one, then sleeps its interval). */
  readonly gaps: number[] = [];
  /** Milliseconds from the request to the end of the first event. */
  firstMs: number | null = null;
  /** The first event's data, for checks. */
  firstData: string | null = null;
  error: string | null = null;
  readonly done: Promise<void>;
  readonly #abort = new AbortController();
  #timer: Timer;

  constructor(url: string, cookie: string, maxMs: number) {
    this.#timer = setTimeout(() => this.#abort.abort(), maxMs);
    this.done = this.#read(url, cookie).catch((err) => {
      if (!this.#abort.signal.aborted) this.error = (err as Error).message;
    });
  }

  async #read(url: string, cookie: string): Promise<void> {
    const t0 = performance.now();
    const res = await fetch(url, { headers: { cookie, accept: "text/event-stream" }, signal: this.#abort.signal });
    if (res.status !== 200) throw new Error(`GET /api/live answered ${res.status}: ${(await res.text()).slice(0, 200)}`);
    const decoder = new TextDecoder();
    let buf = "";
    let last = 0;
    // Bounded by maxMs (the abort) and by the server closing the stream.
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      this.bytes += chunk.length;
      buf += decoder.decode(chunk, { stream: true });
      for (let end = buf.indexOf("\n\n"); end !== -1; end = buf.indexOf("\n\n")) {
        const event = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const now = performance.now();
        if (this.events === 0) {
          this.firstMs = now - t0;
          this.firstData = event
            .split("\n")
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).trimStart())
            .join("\n");
        } else this.gaps.push(now - last);
        last = now;
        this.events++;
      }
    }
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    clearTimeout(this.#timer);
    await this.done;
  }
}

/** GET /metrics with a bearer token every `everyMs`, one at a time, until `stop()` or `maxMs`. */
export class Scraper {
  readonly ms: number[] = [];
  bytes = 0;
  errors = 0;
  #stopped = false;
  readonly done: Promise<void>;

  constructor(apiPort: number, token: string, everyMs: number, maxMs: number) {
    this.done = this.#loop(apiPort, token, everyMs, maxMs);
  }

  async #loop(apiPort: number, token: string, everyMs: number, maxMs: number): Promise<void> {
    const end = performance.now() + maxMs;
    for (let i = 0; i < 1_000_000 && !this.#stopped && performance.now() < end; i++) {
      const t = performance.now();
      try {
        const r = await timedGet(`http://127.0.0.1:${apiPort}/metrics`, { authorization: `Bearer ${token}` });
        if (r.status !== 200) this.errors++;
        this.ms.push(r.ms);
        this.bytes = r.bytes;
      } catch {
        this.errors++;
      }
      const wait = everyMs - (performance.now() - t);
      // Short naps, so stop() is not held up by a whole interval.
      for (let slept = 0; slept < wait && !this.#stopped; slept += 50) await Bun.sleep(Math.min(50, wait - slept));
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.done;
  }
}

/** The background load of an open dashboard: `feeds` admin live feeds and a /metrics scrape every `scrapeMs` (0: none). */
export class DashboardLoad {
  readonly feeds: LiveFeed[];
  readonly scraper: Scraper | null;

  private constructor(feeds: LiveFeed[], scraper: Scraper | null) {
    this.feeds = feeds;
    this.scraper = scraper;
  }

  static async start(apiPort: number, adminToken: string, opts: { feeds: number; scrapeMs: number; maxMs: number }): Promise<DashboardLoad> {
    const cookie = await signIn(apiPort, adminToken);
    const feeds = Array.from({ length: opts.feeds }, () => new LiveFeed(`http://127.0.0.1:${apiPort}/api/live`, cookie, opts.maxMs));
    const scraper = opts.scrapeMs > 0 ? new Scraper(apiPort, adminToken, opts.scrapeMs, opts.maxMs) : null;
    return new DashboardLoad(feeds, scraper);
  }

  /** Stops everything; returns what the dashboard saw. */
  async stop(): Promise<{ events: number; feedBytes: number; scrapes: number; scrapeErrors: number; scrapeMs: number[]; errors: string[] }> {
    await Promise.all([...this.feeds.map((f) => f.stop()), this.scraper?.stop()]);
    return {
      events: this.feeds.reduce((n, f) => n + f.events, 0),
      feedBytes: this.feeds.reduce((n, f) => n + f.bytes, 0),
      scrapes: this.scraper?.ms.length ?? 0,
      scrapeErrors: this.scraper?.errors ?? 0,
      scrapeMs: this.scraper?.ms ?? [],
      errors: this.feeds.map((f) => f.error).filter((e): e is string => e !== null),
    };
  }
}
