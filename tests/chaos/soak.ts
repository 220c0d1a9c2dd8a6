/**
 * Soak (scenario 8, not in CI): `npm run soak -- --minutes 10`.
 *
 * A server and a client (real processes, the client behind the fault proxy)
 * under mixed churn for the given time: short connections and checked
 * transfers of random sizes from several workers at once, a client restart
 * every 45 s (SIGTERM and SIGKILL in turn), and a black-hole longer than the
 * heartbeat timeout every minute. Every stream is checked (length and
 * SHA-256). A stream that fails with a reset while a fault is in force is
 * "interrupted"; one that fails outside a fault, arrives complete but
 * different, or ends with a clean FIN after fewer bytes (fault or not: to the
 * user's program that looks like success) is "lost": the run exits 1 if
 * anything is lost or the server dies.
 * Prints RSS, open fds and CPU every 10 s, and the RSS slope at the end.
 */
import { parseArgs } from "node:util";
import { deadPort } from "../helpers.ts";
import { tempDir, type Proc } from "../procs.ts";
import { FaultProxy } from "./faultproxy.ts";
import { appPorts, clientToml, countingEcho, cpuSeconds, echoCheck, fdCount, groupToml, onlineGroups, rss, serverToml, startClient, startServer } from "./harness.ts";

const { values } = parseArgs({
  args: Bun.argv.slice(2),
  options: { minutes: { type: "string", default: "10" }, seed: { type: "string" }, workers: { type: "string", default: "6" } },
});
const MINUTES = Number(values.minutes);
const SEED = Number(values.seed ?? Math.floor(Math.random() * 2 ** 31));
const WORKERS = Number(values.workers);
/** A client restart this often, ms. */
const RESTART_EVERY_MS = 45_000;
/** A black-hole this often, ms, and for this long. */
const BLACKHOLE_EVERY_MS = 60_000;
const BLACKHOLE_MS = 3_000;
/** Grace after a fault has healed and the client is back, for streams that straddled it. */
const GRACE_MS = 1_000;
const SAMPLE_MS = 10_000;
const HB = { interval: 0.25, timeout: 1.5 };

let x = SEED >>> 0 || 1;
const rand = () => {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return (x >>> 0) / 2 ** 32;
};

const t0 = performance.now();
const deadline = t0 + MINUTES * 60_000;
const elapsed = () => ((performance.now() - t0) / 1000).toFixed(0).padStart(4) + " s";
console.log(`soak: ${MINUTES} min, seed ${SEED}, ${WORKERS} workers (replay: npm run soak -- --minutes ${MINUTES} --seed ${SEED})`);

const echo = await countingEcho();
const dir = tempDir();
const ctrl = await deadPort();
const server = await startServer(dir, serverToml(dir, ctrl, groupToml("soak", ["echo", "web"]), { heartbeatTimeout: HB.timeout, handshakeTimeout: 2, poolSize: 8 }));
const proxy = await FaultProxy.start({ port: ctrl });
const ctoml = clientToml(proxy.port, "soak", { echo: echo.port, web: echo.port }, HB);
let client: Proc = (await startClient(dir, ctoml, ["echo", "web"], "client")).proc;
const ports = await appPorts(client, ["echo", "web"]);
const procs: Proc[] = [server.proc, client];

/** Fault windows [from, to]; `to` is Infinity while a fault is in force. */
const faults: { kind: string; from: number; to: number }[] = [];
const inFault = (from: number, to: number) => faults.some((f) => f.from <= to && f.to >= from);
const stats = { ok: 0, interrupted: 0, lost: [] as string[], bytes: 0, faults: { restart: 0, blackhole: 0 }, recoveryMs: [] as number[] };

/** Waits until the client is online again after a fault and closes the window. */
async function recovered(f: { to: number }, from: number, proc: Proc): Promise<void> {
  const tStart = performance.now();
  await appPorts(proc, ["echo", "web"], from, 40_000).then((p) => {
    if (p.echo !== ports.echo || p.web !== ports.web) stats.lost.push(`ports changed after a fault: ${JSON.stringify(p)}`);
  });
  stats.recoveryMs.push(performance.now() - tStart);
  f.to = performance.now() + GRACE_MS;
}

async function worker(id: number): Promise<void> {
  for (let i = 0; performance.now() < deadline && i < 1_000_000; i++) {
    const short = rand() < 0.5;
    const size = short ? 1 + Math.floor(rand() * 4096) : 64 * 1024 + Math.floor(rand() * 8 * 1024 * 1024);
    const port = rand() < 0.5 ? ports.echo! : ports.web!;
    const from = performance.now();
    const r = await echoCheck(port, size, id % 8);
    const to = performance.now();
    if (r.ok) {
      stats.ok++;
      stats.bytes += size;
    } else if (r.received < size && !r.error) {
      // A clean end after fewer bytes looks like success to the user's program: a loss, fault or not.
      stats.lost.push(`short clean end: ${r.received}/${size} bytes, then FIN (worker ${id}, stream ${i})`);
    } else if (inFault(from, to)) stats.interrupted++;
    else if (r.received === size && !r.error) stats.lost.push(`corrupt: ${size} bytes arrived but differ (worker ${id}, stream ${i})`);
    else {
      // Let a fault that began just now be recorded before judging.
      await Bun.sleep(50);
      if (inFault(from, performance.now())) stats.interrupted++;
      else stats.lost.push(`failed outside any fault: ${r.received}/${size} bytes, ${r.error ?? "FIN"} (worker ${id}, stream ${i})`);
    }
    // Any failure (even inside a fault) pauses this worker a little, so an outage is not a busy loop of refused connects.
    if (!r.ok) await Bun.sleep(100);
  }
}

async function chaos(): Promise<void> {
  let nextRestart = t0 + RESTART_EVERY_MS;
  let nextHole = t0 + BLACKHOLE_EVERY_MS;
  let kill = false;
  while (performance.now() < deadline - 5_000) {
    const now = performance.now();
    const wait = Math.min(nextRestart, nextHole, deadline - 5_000) - now;
    if (wait > 0) await Bun.sleep(wait);
    if (performance.now() >= deadline - 5_000) break;
    if (performance.now() >= nextHole) {
      const f = { kind: "blackhole", from: performance.now(), to: Infinity };
      faults.push(f);
      const mark = client.lines.length;
      proxy.blackhole();
      await Bun.sleep(BLACKHOLE_MS);
      proxy.pass();
      stats.faults.blackhole++;
      await recovered(f, mark, client);
      console.log(`${elapsed()}  black-hole ${BLACKHOLE_MS} ms: client back ${stats.recoveryMs.at(-1)!.toFixed(0)} ms after healing`);
      nextHole += BLACKHOLE_EVERY_MS;
    } else {
      const f = { kind: "restart", from: performance.now(), to: Infinity };
      faults.push(f);
      kill = !kill;
      await client.kill(kill ? "SIGKILL" : "SIGTERM");
      const next = await startClient(dir, ctoml, [], "client");
      client = next.proc;
      procs.push(client);
      await recovered(f, 0, client);
      stats.faults.restart++;
      console.log(`${elapsed()}  client ${kill ? "SIGKILL" : "SIGTERM"} and restart: online after ${stats.recoveryMs.at(-1)!.toFixed(0)} ms`);
      nextRestart += RESTART_EVERY_MS;
    }
  }
}

const samples: { t: number; rss: number }[] = [];
const sampler = setInterval(async () => {
  const t = (performance.now() - t0) / 60_000;
  const s = { rss: rss(server.proc.pid), fds: fdCount(server.proc.pid), cpu: cpuSeconds(server.proc.pid) };
  samples.push({ t, rss: s.rss });
  const online = await onlineGroups(server.apiPort).catch(() => []);
  console.log(
    `${elapsed()}  server RSS ${(s.rss / 2 ** 20).toFixed(1)} MiB, fds ${s.fds}, CPU ${s.cpu.toFixed(1)} s; client RSS ${(rss(client.pid) / 2 ** 20).toFixed(1)} MiB, fds ${fdCount(client.pid)}; sessions ${online.length}; streams ok ${stats.ok}, interrupted ${stats.interrupted}, lost ${stats.lost.length}`,
  );
}, SAMPLE_MS);

const fds0 = fdCount(server.proc.pid);
await Promise.all([chaos(), ...Array.from({ length: WORKERS }, (_, i) => worker(i))]);
clearInterval(sampler);

/** Least-squares slope of RSS over time, MiB per minute (the first minute is warm-up and left out when there is more). */
function slope(pts: { t: number; rss: number }[]): number {
  const p = pts.length > 12 ? pts.filter((s) => s.t >= 1) : pts;
  if (p.length < 2) return NaN;
  const mt = p.reduce((a, s) => a + s.t, 0) / p.length;
  const mr = p.reduce((a, s) => a + s.rss, 0) / p.length;
  const num = p.reduce((a, s) => a + (s.t - mt) * (s.rss - mr), 0);
  const den = p.reduce((a, s) => a + (s.t - mt) ** 2, 0);
  return num / den / 2 ** 20;
}

const serverAlive = server.proc.child.exitCode === null;
// Let the last streams' sockets close before counting descriptors.
await Bun.sleep(2_000);
const fds1 = serverAlive ? fdCount(server.proc.pid) : -1;
const sessions = serverAlive ? (await onlineGroups(server.apiPort)).length : 0;
const report = {
  minutes: MINUTES,
  seed: SEED,
  streams: { ok: stats.ok, interrupted: stats.interrupted, lost: stats.lost.length },
  mibMoved: Math.round((stats.bytes * 2) / 2 ** 20),
  faults: stats.faults,
  recoveryMs: { max: Math.round(Math.max(0, ...stats.recoveryMs)), mean: Math.round(stats.recoveryMs.reduce((a, b) => a + b, 0) / (stats.recoveryMs.length || 1)) },
  serverRssMiB: { first: +((samples[0]?.rss ?? 0) / 2 ** 20).toFixed(1), last: +((samples.at(-1)?.rss ?? 0) / 2 ** 20).toFixed(1), slopeMiBPerMin: +slope(samples).toFixed(2) },
  serverFds: { start: fds0, end: fds1 },
  sessionsAtEnd: sessions,
  localConnsOpenAtEnd: echo.open(),
  serverAlive,
  serverErrors: server.proc.lines.filter((l) => / ERROR |handler error/.test(l)).length,
};
console.log("soak result " + JSON.stringify(report, null, 2));
for (const l of stats.lost.slice(0, 20)) console.log(`LOST: ${l}`);

for (const p of procs) if (p.child.exitCode === null) await p.kill("SIGTERM");
await proxy.close();
echo.close();
process.exit(stats.lost.length === 0 && serverAlive && sessions === 1 ? 0 : 1);
