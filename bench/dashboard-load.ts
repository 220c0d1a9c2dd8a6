/**
 * A/B of the relay with and without an open dashboard (issue 17): one Warren server and client
 * (bench/paths.ts) in front of bench/echo.ts and iperf3 -s, with `--groups` more groups
 * registered through the API (they make the overview as big as a real server's; `--online` of them
 * get a client, which gives their apps counters and so rows in /metrics). Each
 * round measures both arms in a rotating order:
 *
 *   off  nothing but the load
 *   on   an admin live feed (POST /ui/login, then GET /api/live with the cookie, as the page's
 *        EventSource) and GET /metrics with the admin bearer token every second, both running
 *        for the whole measurement
 *
 * and in each arm: connection setup (bench/loadgen.ts setup, c=50), latency (64-byte ping-pong)
 * and bulk (iperf3, one stream). Prints medians of the rounds, the median of the rounds' own
 * on/off ratios, and the server's CPU.
 *
 *   bun bench/dashboard-load.ts [--rounds 9] [--seconds 3] [--concurrency 50] [--groups 1000]
 *       [--apps 2] [--online 20] [--feeds 1] [--scrape-ms 1000] [--latency-count 20000] [--warmup 5]
 *       [--no-setup] [--no-latency] [--no-bulk]
 *
 * --feeds 0 or --scrape-ms 0 leave out that half of the dashboard (to tell which one costs).
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { BENCH, BUN, cpuSeconds, freePort, have, removeTempDirs, run, spawnChild, stopAll, tempDir, waitPort } from "./common.ts";
import { createGroups, DashboardLoad, onlineClients, summary } from "./dashboard.ts";
import { startPath } from "./paths.ts";

const { values: flags } = parseArgs({
  args: Bun.argv.slice(2),
  options: {
    rounds: { type: "string" },
    seconds: { type: "string" },
    concurrency: { type: "string" },
    groups: { type: "string" },
    apps: { type: "string" },
    online: { type: "string" },
    feeds: { type: "string" },
    "scrape-ms": { type: "string" },
    "latency-count": { type: "string" },
    warmup: { type: "string" },
    "no-bulk": { type: "boolean" },
    "no-setup": { type: "boolean" },
    "no-latency": { type: "boolean" },
  },
  strict: true,
});
const ROUNDS = Math.min(30, Number(flags.rounds ?? 9));
const SECONDS = Math.min(30, Number(flags.seconds ?? 3));
const C = Math.min(500, Number(flags.concurrency ?? 50));
const GROUPS = Math.min(10_000, Number(flags.groups ?? 1000));
const APPS = Math.min(20, Number(flags.apps ?? 2));
const ONLINE = Math.min(GROUPS, Number(flags.online ?? 20));
const FEEDS = Math.min(60, Number(flags.feeds ?? 1));
const SCRAPE_MS = Number(flags["scrape-ms"] ?? 1000);
const LAT_COUNT = Math.min(100_000, Number(flags["latency-count"] ?? 20_000));
const WARMUP = Math.min(30, Number(flags.warmup ?? 5));
const BULK = !flags["no-bulk"] && have("iperf3");
const SETUP = !flags["no-setup"];
const LATENCY = !flags["no-latency"];
/** The whole run ends here whatever happens. */
const watchdog = setTimeout(() => {
  console.error("dashboard-load: watchdog (15 minutes)");
  void stopAll().finally(() => process.exit(3));
}, 15 * 60_000);

const median = (xs: number[]) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! : NaN);
const say = (s: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);

type Arm = "off" | "on";
interface Rows {
  rate: number[];
  ttfbP50: number[];
  ttfbP99: number[];
  cpuUsPerConn: number[];
  latP50: number[];
  latP99: number[];
  latMax: number[];
  gbps: number[];
  cpuSPerGB: number[];
  serverCpuPct: number[];
}
const rows = (): Rows => ({ rate: [], ttfbP50: [], ttfbP99: [], cpuUsPerConn: [], latP50: [], latP99: [], latMax: [], gbps: [], cpuSPerGB: [], serverCpuPct: [] });
const res: Record<Arm, Rows> = { off: rows(), on: rows() };
const dash = { events: 0, feedBytes: 0, scrapes: 0, scrapeErrors: 0, scrapeMs: [] as number[], errors: [] as string[] };

async function main(): Promise<void> {
  const dir = tempDir("warren-dash-ab-");
  const echoPort = await freePort();
  spawnChild("echo", [BUN, join(BENCH, "echo.ts"), String(echoPort)], { logFile: join(dir, "echo.log") });
  await waitPort(echoPort, 10_000, "echo app");
  const targets: Record<string, number> = { echo: echoPort };
  if (BULK) {
    const p = await freePort();
    spawnChild("iperf3", ["iperf3", "-s", "-B", "127.0.0.1", "-p", String(p)], { logFile: join(dir, "iperf3.log") });
    await waitPort(p, 10_000, "iperf3 server");
    targets.iperf = p;
  }
  const t = await startPath("warren", targets);
  const api = t.api!;
  if (GROUPS > 0) {
    const c = await createGroups(api.port, api.adminToken, GROUPS, APPS);
    say(`registered ${GROUPS} groups x ${APPS} apps through the API in ${(c.ms / 1000).toFixed(1)} s (slowest request ${c.slowestMs.toFixed(0)} ms)`);
  }
  if (ONLINE > 0) {
    // Their clients (bench/control-driver.ts, one process) point every app at the echo app; they carry no traffic.
    const d = await onlineClients({ controlPort: api.controlPort, dir }, ONLINE, APPS, echoPort);
    say(`${ONLINE} of them online in ${(d.ms / 1000).toFixed(1)} s`);
    await Bun.sleep(2000);
  }
  const setup = (ms: number) => run([BUN, join(BENCH, "loadgen.ts"), "setup", JSON.stringify({ port: t.entry.echo, concurrency: C, durationMs: ms, size: 64 })], { timeoutMs: ms + 60_000 });
  say(`warm-up: ${WARMUP} s of setup load`);
  await setup(WARMUP * 1000);
  const tunnel = [...t.server, ...t.client];
  for (let round = 0; round < ROUNDS; round++) {
    const arms: Arm[] = round % 2 === 0 ? ["off", "on"] : ["on", "off"];
    for (const arm of arms) {
      const r = res[arm];
      const load = arm === "on" ? await DashboardLoad.start(api.port, api.adminToken, { feeds: FEEDS, scrapeMs: SCRAPE_MS, maxMs: 120_000 }) : null;
      // The first event and scrape happen at once; the measurement starts after them, in both arms.
      await Bun.sleep(1200);
      const [srv0, wall0] = [cpuSeconds(t.server), performance.now()];
      let cpu0 = cpuSeconds(tunnel);
      let s: any = null;
      if (SETUP) {
        s = JSON.parse((await setup(SECONDS * 1000)).stdout.trim().split("\n").pop()!);
        r.rate.push(s.perSecond);
        r.ttfbP50.push(s.ttfbUs.p50);
        r.ttfbP99.push(s.ttfbUs.p99);
        r.cpuUsPerConn.push(((cpuSeconds(tunnel) - cpu0) / s.connections) * 1e6);
        await Bun.sleep(300);
      }
      let l: any = null;
      if (LATENCY) {
        l = JSON.parse((await run([BUN, join(BENCH, "loadgen.ts"), "latency", JSON.stringify({ port: t.entry.echo, count: LAT_COUNT, warmup: Math.ceil(LAT_COUNT / 10), size: 64 })], { timeoutMs: 120_000 })).stdout.trim().split("\n").pop()!);
        r.latP50.push(l.us.p50);
        r.latP99.push(l.us.p99);
        r.latMax.push(l.us.max);
      }
      if (BULK) {
        cpu0 = cpuSeconds(tunnel);
        const out = await run(["iperf3", "-c", "127.0.0.1", "-p", String(t.entry.iperf), "-t", String(SECONDS), "-J"], { timeoutMs: SECONDS * 1000 + 60_000 });
        const got = JSON.parse(out.stdout).end.sum_received;
        r.gbps.push(got.bits_per_second / 1e9);
        r.cpuSPerGB.push((cpuSeconds(tunnel) - cpu0) / (got.bytes / 1e9));
      }
      r.serverCpuPct.push(((cpuSeconds(t.server) - srv0) / ((performance.now() - wall0) / 1000)) * 100);
      if (load) {
        const d = await load.stop();
        dash.events += d.events;
        dash.feedBytes += d.feedBytes;
        dash.scrapes += d.scrapes;
        dash.scrapeErrors += d.scrapeErrors;
        dash.scrapeMs.push(...d.scrapeMs);
        dash.errors.push(...d.errors);
        if (FEEDS > 0 && d.events === 0) throw new Error(`the live feed got no event: ${d.errors.join("; ")}`);
      }
      say(
        `round ${round + 1} ${arm.padEnd(3)}:${s ? ` setup ${s.perSecond.toFixed(0)} conn/s, first byte p50/p99 ${s.ttfbUs.p50.toFixed(0)}/${s.ttfbUs.p99.toFixed(0)} us;` : ""}${l ? ` latency p50/p99 ${l.us.p50.toFixed(0)}/${l.us.p99.toFixed(0)} us;` : ""}${BULK ? ` bulk ${r.gbps.at(-1)!.toFixed(2)} Gbit/s` : ""}`,
      );
      await Bun.sleep(300);
    }
  }
  await t.stop();
  const sc = summary(dash.scrapeMs);
  console.log("");
  console.log(`relay with and without a dashboard: ${GROUPS} extra groups x ${APPS} apps registered (${ONLINE} online), ${FEEDS} live feed(s), /metrics every ${SCRAPE_MS} ms; ${ROUNDS} rounds, alternating order, medians:`);
  const line = (name: string, get: (r: Rows) => number[], digits = 0) => {
    const [a, b] = [median(get(res.off)), median(get(res.on))];
    // Each round's own ratio too: both arms of a round ran within seconds of each other, so drift on the machine cancels.
    const paired = median(get(res.on).map((x, i) => x / get(res.off)[i]!));
    console.log(`  ${name.padEnd(40)} off ${a.toFixed(digits).padStart(9)}   on ${b.toFixed(digits).padStart(9)}   on/off ${(b / a).toFixed(3)}, per round ${paired.toFixed(3)}   (off ${get(res.off).map((x) => x.toFixed(digits)).join(", ")}; on ${get(res.on).map((x) => x.toFixed(digits)).join(", ")})`);
  };
  if (SETUP) {
    line(`setup c=${C}: conn/s`, (r) => r.rate);
    line("setup first byte p50 (us)", (r) => r.ttfbP50);
    line("setup first byte p99 (us)", (r) => r.ttfbP99);
    line("setup tunnel CPU per conn (us)", (r) => r.cpuUsPerConn);
  }
  if (LATENCY) {
    line("latency p50 (us)", (r) => r.latP50);
    line("latency p99 (us)", (r) => r.latP99);
    // One round trip at a time: a stall of the server's event loop shows as one slow round trip, in the max.
    line("latency max (us)", (r) => r.latMax);
  }
  if (BULK) {
    line("bulk 1 stream (Gbit/s)", (r) => r.gbps, 2);
    line("bulk tunnel CPU (s/GB)", (r) => r.cpuSPerGB, 3);
  }
  line("server CPU over the arm (%)", (r) => r.serverCpuPct, 1);
  console.log(
    `  dashboard: ${dash.events} live events (${(dash.feedBytes / Math.max(1, dash.events) / 1024).toFixed(1)} KiB each), ${dash.scrapes} scrapes (${dash.scrapeErrors} failed; p50 ${sc.p50.toFixed(1)} ms, p99 ${sc.p99.toFixed(1)} ms, max ${sc.max.toFixed(1)} ms)${dash.errors.length ? `; feed errors: ${dash.errors.slice(0, 3).join("; ")}` : ""}`,
  );
}

let code = 0;
try {
  await main();
} catch (err) {
  console.error(`dashboard-load: ${(err as Error).stack ?? err}`);
  code = 1;
} finally {
  await stopAll();
  removeTempDirs();
  clearTimeout(watchdog);
}
process.exit(code);
