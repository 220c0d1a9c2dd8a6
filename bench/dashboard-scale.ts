/**
 * The dashboard's reads on a big server (issue 17): server.ts (its own process) with `--groups`
 * groups of `--apps` apps registered through POST /api/groups, then timed, `--samples` times each
 * after one unmeasured call: GET /api/overview, GET /api/groups (admin bearer token) and
 * GET /metrics. Also the live feed: the time from GET /api/live to the end of its first overview
 * event (the server builds it at once), and the gaps between events of one open feed (the
 * interval, 1 s, plus the time to build and write one).
 *
 * Two states: `--online` groups with a client (bench/control-driver.ts, the rest offline and never
 * seen), then every group online (all apps counted: the biggest /metrics) unless --no-all-online.
 *
 *   bun bench/dashboard-scale.ts [--groups 1000] [--apps 2] [--online 20] [--samples 30] [--no-all-online]
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { BENCH, BUN, freePort, removeTempDirs, rssBytes, spawnChild, stopAll, stopChild, tempDir, waitPort } from "./common.ts";
import { createGroups, LiveFeed, onlineClients, signIn, startServer, summary, timedGet, type BenchServer } from "./dashboard.ts";

const { values: flags } = parseArgs({
  args: Bun.argv.slice(2),
  options: { groups: { type: "string" }, apps: { type: "string" }, online: { type: "string" }, samples: { type: "string" }, "no-all-online": { type: "boolean" } },
  strict: true,
});
const GROUPS = Math.min(10_000, Number(flags.groups ?? 1000));
const APPS = Math.min(20, Number(flags.apps ?? 2));
const ONLINE = Math.min(GROUPS, Number(flags.online ?? 20));
const SAMPLES = Math.min(1000, Number(flags.samples ?? 30));
const FEED_SAMPLES = Math.min(100, Math.max(3, Math.round(SAMPLES / 3)));
const watchdog = setTimeout(() => {
  console.error("dashboard-scale: watchdog (10 minutes)");
  void stopAll().finally(() => process.exit(3));
}, 10 * 60_000);
const say = (s: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);
const fmt = (s: { p50: number; p99: number; max: number }) => `p50 ${s.p50.toFixed(1)} ms, p99 ${s.p99.toFixed(1)} ms, max ${s.max.toFixed(1)} ms`;

/** Times the three reads and the live feed; prints and returns them. */
async function measure(server: BenchServer, state: string): Promise<Record<string, unknown>> {
  const base = `http://127.0.0.1:${server.apiPort}`;
  const bearer = { authorization: `Bearer ${server.adminToken}` };
  const out: Record<string, unknown> = { state };
  for (const [name, path] of [
    ["overview", "/api/overview"],
    ["groups", "/api/groups"],
    ["metrics", "/metrics"],
  ] as const) {
    const first = await timedGet(base + path, bearer); // unmeasured: JIT, lazy imports (/metrics loads its module on first use)
    if (first.status !== 200) throw new Error(`GET ${path} answered ${first.status}: ${first.body.slice(0, 200)}`);
    const ms: number[] = [];
    let bytes = 0;
    for (let i = 0; i < SAMPLES; i++) {
      const r = await timedGet(base + path, bearer);
      if (r.status !== 200) throw new Error(`GET ${path} answered ${r.status}`);
      ms.push(r.ms);
      bytes = r.bytes;
    }
    const s = summary(ms);
    out[name] = { ...s, bytes, firstMs: first.ms };
    say(`${state}: GET ${path.padEnd(14)} ${fmt(s)} (first call ${first.ms.toFixed(1)} ms), ${(bytes / 1024).toFixed(1)} KiB`);
    if (name === "overview") {
      const o = JSON.parse(first.body) as { totals: { groups: number; groupsOnline: number } };
      if (o.totals.groups !== GROUPS) throw new Error(`overview lists ${o.totals.groups} groups, not ${GROUPS}`);
      out.groupsOnline = o.totals.groupsOnline;
    }
    if (name === "metrics") {
      // The scrape counts the server's descriptors one by one (lib/metrics/prometheus.ts openFds): how many there are matters.
      const m = (await timedGet(base + path, bearer)).body;
      out.openFds = Number(/^warren_process_open_fds (\S+)$/m.exec(m)?.[1]);
      out.metricsLines = m.split("\n").length;
      say(`${state}: /metrics has ${out.metricsLines} lines; the server holds ${out.openFds} descriptors`);
    }
  }
  // The live feed: the first event is written as soon as the feed opens.
  const cookie = await signIn(server.apiPort, server.adminToken);
  const firsts: number[] = [];
  let eventBytes = 0;
  for (let i = 0; i < FEED_SAMPLES; i++) {
    const f = new LiveFeed(`${base}/api/live`, cookie, 10_000);
    for (let k = 0; k < 200 && f.events === 0 && !f.error; k++) await Bun.sleep(5);
    await f.stop();
    if (f.firstMs === null) throw new Error(`the live feed sent no event: ${f.error}`);
    firsts.push(f.firstMs);
    eventBytes = f.firstData!.length;
  }
  const f = new LiveFeed(`${base}/api/live`, cookie, FEED_SAMPLES * 1000 + 5000);
  for (let k = 0; k < (FEED_SAMPLES + 4) * 20 && f.events < FEED_SAMPLES + 1 && !f.error; k++) await Bun.sleep(50);
  await f.stop();
  const gaps = summary(f.gaps.map((g) => g - 1000));
  out.liveFirstEvent = { ...summary(firsts), eventBytes };
  out.liveGapMinus1s = gaps;
  say(`${state}: GET /api/live: first overview event ${fmt(summary(firsts))} (${(eventBytes / 1024).toFixed(1)} KiB); gap between events minus the 1 s interval ${fmt(gaps)} over ${gaps.n} gaps`);
  out.rssBytes = rssBytes(server.pid);
  return out;
}

async function main(): Promise<void> {
  const dir = tempDir("warren-dash-scale-");
  const echoPort = await freePort();
  spawnChild("echo", [BUN, join(BENCH, "echo.ts"), String(echoPort)], { logFile: join(dir, "echo.log") });
  await waitPort(echoPort, 10_000, "echo app");
  const server = await startServer();
  const rss0 = rssBytes(server.pid);
  const c = await createGroups(server.apiPort, server.adminToken, GROUPS, APPS, 25);
  say(`registered ${GROUPS} groups x ${APPS} apps through POST /api/groups (25 at a time) in ${(c.ms / 1000).toFixed(1)} s, slowest request ${c.slowestMs.toFixed(0)} ms; server RSS ${(rss0 / 2 ** 20).toFixed(0)} -> ${(rssBytes(server.pid) / 2 ** 20).toFixed(0)} MiB`);
  const results: Record<string, unknown>[] = [];
  let driver = await onlineClients(server, ONLINE, APPS, echoPort);
  say(`${ONLINE} groups online in ${(driver.ms / 1000).toFixed(1)} s`);
  await Bun.sleep(2000); // pools fill
  results.push(await measure(server, `${ONLINE} online`));
  if (!flags["no-all-online"] && ONLINE < GROUPS) {
    await stopChild(driver.child, 3000);
    await Bun.sleep(1000);
    driver = await onlineClients(server, GROUPS, APPS, echoPort);
    say(`all ${GROUPS} groups online in ${(driver.ms / 1000).toFixed(1)} s`);
    await Bun.sleep(3000);
    results.push(await measure(server, `${GROUPS} online`));
  }
  await stopChild(driver.child, 3000);
  console.log(`RESULT ${JSON.stringify({ groups: GROUPS, apps: APPS, samples: SAMPLES, register: c, results })}`);
}

let code = 0;
try {
  await main();
} catch (err) {
  console.error(`dashboard-scale: ${(err as Error).stack ?? err}`);
  code = 1;
} finally {
  await stopAll();
  removeTempDirs();
  clearTimeout(watchdog);
}
process.exit(code);
