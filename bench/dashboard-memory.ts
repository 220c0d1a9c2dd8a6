/**
 * Does an open dashboard grow the server's memory? (issue 17) server.ts (its own process) with
 * `--groups` groups of `--apps` apps registered through the API and `--online` of them online,
 * then `--feeds` admin live feeds (GET /api/live with a dashboard session's cookie) held open for
 * `--seconds`, read as fast as they come; the server's RSS (VmRSS) every `--every` seconds, and
 * once more `--settle` seconds after the feeds close.
 *
 * The feed's interval (LIVE_INTERVAL_MS, 1 s) is an option of createApi (lib/api/app.ts) that
 * server.ts does not set, so a "fast interval" is had with many feeds instead: N feeds at 1 s
 * build and write N overview events a second, as one feed at 1000/N ms would (MAX_LIVE_FEEDS is 64).
 * With --reopen, every feed is closed and opened again at each sample (tabs reloaded).
 * With --scrape-ms, /metrics is scraped as well.
 *
 *   bun bench/dashboard-memory.ts [--groups 1000] [--apps 2] [--online 20] [--feeds 30]
 *       [--seconds 180] [--every 10] [--settle 10] [--reopen] [--scrape-ms 0]
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { BENCH, BUN, cpuSeconds, freePort, removeTempDirs, rssBytes, spawnChild, stopAll, stopChild, tempDir, waitPort } from "./common.ts";
import { createGroups, LiveFeed, onlineClients, Scraper, signIn, startServer } from "./dashboard.ts";

const { values: flags } = parseArgs({
  args: Bun.argv.slice(2),
  options: {
    groups: { type: "string" },
    apps: { type: "string" },
    online: { type: "string" },
    feeds: { type: "string" },
    seconds: { type: "string" },
    every: { type: "string" },
    settle: { type: "string" },
    reopen: { type: "boolean" },
    "scrape-ms": { type: "string" },
  },
  strict: true,
});
const GROUPS = Math.min(10_000, Number(flags.groups ?? 1000));
const APPS = Math.min(20, Number(flags.apps ?? 2));
const ONLINE = Math.min(GROUPS, Number(flags.online ?? 20));
const FEEDS = Math.min(64, Math.max(1, Number(flags.feeds ?? 30)));
const SECONDS = Math.min(600, Number(flags.seconds ?? 180));
const EVERY = Math.max(1, Number(flags.every ?? 10));
const SETTLE = Math.min(120, Number(flags.settle ?? 10));
const SCRAPE_MS = Number(flags["scrape-ms"] ?? 0);
const watchdog = setTimeout(
  () => {
    console.error("dashboard-memory: watchdog");
    void stopAll().finally(() => process.exit(3));
  },
  (SECONDS + SETTLE + 240) * 1000,
);
const say = (s: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);
const mib = (b: number) => (b / 2 ** 20).toFixed(1);

async function main(): Promise<void> {
  const dir = tempDir("warren-dash-mem-");
  const echoPort = await freePort();
  spawnChild("echo", [BUN, join(BENCH, "echo.ts"), String(echoPort)], { logFile: join(dir, "echo.log") });
  await waitPort(echoPort, 10_000, "echo app");
  const server = await startServer();
  const c = await createGroups(server.apiPort, server.adminToken, GROUPS, APPS, 25);
  say(`registered ${GROUPS} groups x ${APPS} apps in ${(c.ms / 1000).toFixed(1)} s`);
  const driver = ONLINE > 0 ? await onlineClients(server, ONLINE, APPS, echoPort) : null;
  await Bun.sleep(3000);
  const rssIdle = rssBytes(server.pid);
  say(`${ONLINE} groups online; server RSS before any feed ${mib(rssIdle)} MiB`);

  const cookie = await signIn(server.apiPort, server.adminToken);
  const url = `http://127.0.0.1:${server.apiPort}/api/live`;
  const open = () => Array.from({ length: FEEDS }, () => new LiveFeed(url, cookie, (SECONDS + 30) * 1000));
  let feeds = open();
  const scraper = SCRAPE_MS > 0 ? new Scraper(server.apiPort, server.adminToken, SCRAPE_MS, (SECONDS + 30) * 1000) : null;
  let events = 0;
  let bytes = 0;
  const errors: string[] = [];
  const tally = (fs: LiveFeed[]) => {
    for (const f of fs) {
      events += f.events;
      bytes += f.bytes;
      if (f.error) errors.push(f.error);
    }
  };
  const t0 = performance.now();
  const cpu0 = cpuSeconds([server.pid]);
  const samples: { s: number; rss: number; events: number }[] = [{ s: 0, rss: rssBytes(server.pid), events: 0 }];
  say(`${FEEDS} live feed(s) open${scraper ? `, /metrics every ${SCRAPE_MS} ms` : ""}${flags.reopen ? ", reopened at every sample" : ""}; RSS every ${EVERY} s for ${SECONDS} s`);
  for (let i = 1; i <= Math.ceil(SECONDS / EVERY); i++) {
    const at = t0 + i * EVERY * 1000;
    await Bun.sleep(Math.max(0, at - performance.now()));
    if (flags.reopen) {
      await Promise.all(feeds.map((f) => f.stop()));
      tally(feeds);
      feeds = open();
    }
    const seen = events + feeds.reduce((n, f) => n + f.events, 0);
    const rss = rssBytes(server.pid);
    samples.push({ s: (performance.now() - t0) / 1000, rss, events: seen });
    say(`t=${samples.at(-1)!.s.toFixed(0).padStart(3)} s  RSS ${mib(rss)} MiB  events ${seen}`);
  }
  const cpuPct = ((cpuSeconds([server.pid]) - cpu0) / ((performance.now() - t0) / 1000)) * 100;
  await Promise.all(feeds.map((f) => f.stop()));
  tally(feeds);
  await scraper?.stop();
  if (events === 0) throw new Error(`no live event arrived: ${errors.slice(0, 3).join("; ")}`);
  await Bun.sleep(SETTLE * 1000);
  const rssAfter = rssBytes(server.pid);
  // Least-squares slope of RSS over the second half of the samples (the first minute includes heap growth to its working size).
  const half = samples.slice(Math.floor(samples.length / 2));
  const mx = half.reduce((n, p) => n + p.s, 0) / half.length;
  const my = half.reduce((n, p) => n + p.rss, 0) / half.length;
  const slope = half.reduce((n, p) => n + (p.s - mx) * (p.rss - my), 0) / half.reduce((n, p) => n + (p.s - mx) ** 2, 0);
  const rss = samples.map((p) => p.rss);
  const res = {
    groups: GROUPS,
    online: ONLINE,
    feeds: FEEDS,
    seconds: SECONDS,
    reopen: !!flags.reopen,
    scrapeMs: SCRAPE_MS,
    events,
    eventKiB: bytes / events / 1024,
    scrapes: scraper?.ms.length ?? 0,
    feedErrors: errors.length,
    serverCpuPct: cpuPct,
    rssIdleMiB: rssIdle / 2 ** 20,
    rssStartMiB: rss[0]! / 2 ** 20,
    rssEndMiB: rss.at(-1)! / 2 ** 20,
    rssMaxMiB: Math.max(...rss) / 2 ** 20,
    rssMinMiB: Math.min(...rss) / 2 ** 20,
    rssAfterCloseMiB: rssAfter / 2 ** 20,
    secondHalfSlopeMiBPerMin: (slope * 60) / 2 ** 20,
    samplesMiB: rss.map((b) => Math.round((b / 2 ** 20) * 10) / 10),
    // The garbage of the events makes RSS a sawtooth: a leak shows as rising troughs, minute after minute.
    minuteMinMiB: Array.from({ length: Math.ceil(SECONDS / 60) }, (_, m) => samples.filter((p) => p.s > m * 60 && p.s <= (m + 1) * 60 + 1)).map((w) => (w.length ? Math.round((Math.min(...w.map((p) => p.rss)) / 2 ** 20) * 10) / 10 : null)),
  };
  console.log("");
  console.log(
    `${FEEDS} feed(s) for ${SECONDS} s over ${GROUPS} groups (${ONLINE} online): ${events} overview events (${res.eventKiB.toFixed(1)} KiB each), server CPU ${cpuPct.toFixed(1)} %${errors.length ? `, ${errors.length} feed errors (${errors[0]})` : ""}`,
  );
  console.log(
    `  RSS MiB: before feeds ${mib(rssIdle)}, start ${res.rssStartMiB.toFixed(1)}, end ${res.rssEndMiB.toFixed(1)}, min ${res.rssMinMiB.toFixed(1)}, max ${res.rssMaxMiB.toFixed(1)}, ${SETTLE} s after closing ${res.rssAfterCloseMiB.toFixed(1)}; slope over the second half ${res.secondHalfSlopeMiBPerMin.toFixed(2)} MiB/min`,
  );
  console.log(`  samples (MiB, every ${EVERY} s): ${res.samplesMiB.join(", ")}; lowest sample of each minute: ${res.minuteMinMiB.join(", ")}`);
  console.log(`RESULT ${JSON.stringify(res)}`);
  if (driver) await stopChild(driver.child, 3000);
}

let code = 0;
try {
  await main();
} catch (err) {
  console.error(`dashboard-memory: ${(err as Error).stack ?? err}`);
  code = 1;
} finally {
  await stopAll();
  removeTempDirs();
  clearTimeout(watchdog);
}
process.exit(code);
