/**
 * Where a /metrics scrape's time goes, in-process: lib/metrics/prometheus.ts's `exposition` over a
 * made-up source of `--groups` online groups with `--apps` apps each (every app counted, a pool
 * per group), with `--fds` extra descriptors held open (listening loopback sockets), as a server
 * with 1,000 groups online holds about 11,000 (control and pooled work connections, app ports).
 * Prints the time of a whole exposition, of its descriptor count alone (Bun.Glob over
 * /proc/self/fd, as the server does) and the longest gap of a 1 ms timer during expositions
 * (the event loop is not free meanwhile).
 *
 *   bash -c 'ulimit -n 20000; npx bun bench/metrics-cost.ts --groups 1000 --apps 2 --fds 11000'
 */
import { readdirSync } from "node:fs";
import net from "node:net";
import { parseArgs } from "node:util";
import { exposition, type MetricsSource } from "../lib/metrics/prometheus.ts";
import type { AppCounters } from "../lib/metrics/counters.ts";
import { summary } from "./dashboard.ts";

const { values: flags } = parseArgs({ args: Bun.argv.slice(2), options: { groups: { type: "string" }, apps: { type: "string" }, fds: { type: "string" }, runs: { type: "string" } }, strict: true });
const GROUPS = Math.min(100_000, Number(flags.groups ?? 1000));
const APPS = Math.min(100, Number(flags.apps ?? 2));
const FDS = Math.min(60_000, Number(flags.fds ?? 11_000));
const RUNS = Math.min(1000, Number(flags.runs ?? 50));

const counters = (): AppCounters => ({ connections: 1, bytesIn: 123_456_789, bytesOut: 987_654_321, denied: 0, overLimit: 0, dropped: 0, queueFull: 0, kernelDropped: 0, requests: 0, accepted: 4242, datagramsIn: 0, datagramsOut: 0 });
const apps: [string, string, AppCounters][] = [];
for (let g = 0; g < GROUPS; g++) for (let a = 0; a < APPS; a++) apps.push([`g${String(g).padStart(5, "0")}`, `app${a}`, counters()]);
// Fields beyond these (if MetricsSource gains some) read as undefined: rows of "undefined" cost the same.
const src = {
  groups: GROUPS,
  groupsOnline: GROUPS,
  apps: () => apps,
  pools: function* () {
    for (let g = 0; g < GROUPS; g++) yield [`g${String(g).padStart(5, "0")}`, 8] as [string, number];
  },
  socketsOpen: FDS,
  logins: { ok: GROUPS },
  loopLagSeconds: 0,
} as unknown as MetricsSource;

const servers: net.Server[] = [];
for (let i = 0; i < FDS; i++) {
  const s = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      s.once("error", reject);
      s.listen(0, "127.0.0.1", resolve);
    });
  } catch (err) {
    console.error(`metrics-cost: could open ${i} of ${FDS} sockets (${(err as Error).message}); raise ulimit -n`);
    break;
  }
  servers.push(s);
}
const fds = readdirSync("/proc/self/fd").length;
let text = "";
for (let i = 0; i < 10; i++) text = await exposition(src); // warm-up (JIT)
const whole: number[] = [];
let longestGap = 0;
// CPU time too: on a shared machine the wall times include waiting for a core.
let cpu0 = process.cpuUsage();
for (let i = 0; i < RUNS; i++) {
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    longestGap = Math.max(longestGap, now - last);
    last = now;
  }, 1);
  const t = performance.now();
  await exposition(src);
  whole.push(performance.now() - t);
  clearInterval(timer);
  await Bun.sleep(5);
}
const cpuWhole = process.cpuUsage(cpu0);
const count: number[] = [];
cpu0 = process.cpuUsage();
for (let i = 0; i < RUNS; i++) {
  const t = performance.now();
  let n = 0;
  for await (const _ of new Bun.Glob("*").scan({ cwd: "/proc/self/fd", onlyFiles: false })) n++;
  count.push(performance.now() - t);
}
const cpuCount = process.cpuUsage(cpu0);
const cpuMs = (u: NodeJS.CpuUsage) => ((u.user + u.system) / 1000 / RUNS).toFixed(1);
const readdir: number[] = [];
for (let i = 0; i < RUNS; i++) {
  const t = performance.now();
  readdirSync("/proc/self/fd");
  readdir.push(performance.now() - t);
}
const f = (s: { p50: number; p99: number }) => `p50 ${s.p50.toFixed(1)} ms, p99 ${s.p99.toFixed(1)} ms`;
console.log(`${GROUPS} groups x ${APPS} apps, ${fds} descriptors open: exposition ${(text.length / 1024).toFixed(0)} KiB, ${text.split("\n").length} lines`);
console.log(`  whole exposition            ${f(summary(whole))}, CPU ${cpuMs(cpuWhole)} ms each (with the 1 ms timer and a 5 ms pause); longest gap of a 1 ms timer meanwhile ${longestGap.toFixed(1)} ms`);
console.log(`  counting descriptors alone  ${f(summary(count))}, CPU ${cpuMs(cpuCount)} ms each (Bun.Glob over /proc/self/fd, as openFds does)`);
console.log(`  readdirSync, for comparison ${f(summary(readdir))}`);
for (const s of servers) s.close();
process.exit(0);
