/**
 * A/B of connection setup (or, with --bulk, of bulk throughput) between Warren
 * checkouts and the bare Bun chain, for recording an optimisation's before/after figures.
 *
 *   git worktree add /tmp/warren-before <commit>   (and `npm ci` there, or link node_modules)
 *   bun bench/ab.ts --rounds 9 --concurrency 50 --seconds 3 /tmp/warren-before .
 *   bun bench/ab.ts --bulk --rounds 4 --seconds 5 [--reverse] [--streams 8] /tmp/warren-before .
 *
 * Every checkout runs its own server.ts and client.ts in front of one echo
 * app; the setup load generator (connect, send 64 bytes, read the echo, close)
 * runs against each in turn, rotating the order every round so drift on a
 * shared machine spreads evenly. Prints medians of connections/s, first-byte
 * p50 and p99, the tunnel processes' CPU (user + system) per connection, and
 * TCP segments sent per connection (all of the machine's, from /proc/net/snmp:
 * run it on a quiet machine; the user and app legs count too: 10 per connection
 * on the direct path). With --bulk: iperf3 through each variant in turn, medians of
 * Gbit/s and of the tunnel processes' CPU seconds per GB received.
 */
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { BENCH, BUN, freePort, removeTempDirs, run, spawnChild, stopAll, tempDir, waitPort } from "./common.ts";

const { values: flags, positionals } = parseArgs({
  args: Bun.argv.slice(2),
  options: { rounds: { type: "string" }, concurrency: { type: "string" }, seconds: { type: "string" }, warmup: { type: "string" }, "no-bare": { type: "boolean" }, bulk: { type: "boolean" }, reverse: { type: "boolean" }, streams: { type: "string" } },
  allowPositionals: true,
  strict: true,
});
const ROUNDS = Math.min(50, Number(flags.rounds ?? 9));
const C = Number(flags.concurrency ?? 50);
const SECONDS = Math.min(30, Number(flags.seconds ?? 3));
/** Unmeasured load per variant first: the JIT compiles the setup path in the first seconds under load (FTL, about 0.6 s of CPU per Warren process). */
const WARMUP_SECONDS = Math.min(30, Number(flags.warmup ?? 5));
if (!positionals.length) {
  console.error("usage: bun bench/ab.ts [--rounds N] [--concurrency C] [--seconds S] [--warmup S] [--no-bare] [--bulk [--reverse] [--streams N]] CHECKOUT...");
  process.exit(2);
}

interface Variant {
  name: string;
  root: string;
  path: "warren" | "bun-chain";
}
const variants: Variant[] = positionals.map((p) => ({ name: p, root: resolve(p), path: "warren" }));
if (!flags["no-bare"]) variants.push({ name: "bare Bun chain", root: resolve(join(BENCH, "..")), path: "bun-chain" });

/** CPU seconds (user + system) of a process. */
function cpu(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** TCP segments this machine has sent (Linux). */
function outSegs(): number {
  const rows = readFileSync("/proc/net/snmp", "utf8").split("\n").filter((l) => l.startsWith("Tcp:"));
  const keys = rows[0]!.split(/\s+/);
  return Number(rows[1]!.split(/\s+/)[keys.indexOf("OutSegs")]);
}

type Tunnel = { entry: Record<string, number>; server: number[]; client: number[]; stop(): Promise<void> };

/**
 * Starts every variant in front of `targets` (each checkout with its own bench/paths.ts), gives each
 * one unmeasured `load`, then runs ROUNDS rounds of `measure` in an order that rotates every round, so
 * drift on a shared machine spreads evenly. `measure` gets the variant's entry ports and the tunnel
 * CPU seconds its run used; `pauseMs` separates runs. Stops everything at the end.
 */
async function rotate(targets: Record<string, number>, load: (entry: Record<string, number>) => Promise<unknown>, measure: (v: Variant, entry: Record<string, number>, cpuUsed: () => number) => Promise<void>, pauseMs: number): Promise<void> {
  const tunnels = new Map<Variant, Tunnel>();
  try {
    for (const v of variants) {
      const paths = await import(join(v.root, "bench", "paths.ts"));
      tunnels.set(v, await paths.startPath(v.path, targets));
    }
    for (const v of variants) await load(tunnels.get(v)!.entry); // warm-up (JIT, pools)
    for (let round = 0; round < ROUNDS; round++) {
      const k = round % variants.length;
      for (const v of [...variants.slice(k), ...variants.slice(0, k)]) {
        const t = tunnels.get(v)!;
        const pids = [...t.server, ...t.client];
        const before = pids.reduce((s, p) => s + cpu(p), 0);
        await measure(v, t.entry, () => pids.reduce((s, p) => s + cpu(p), 0) - before);
        await Bun.sleep(pauseMs);
      }
    }
  } finally {
    for (const t of tunnels.values()) await t.stop();
    await stopAll();
    removeTempDirs();
  }
}

const dir = tempDir("warren-ab-");
const port = await freePort();

if (flags.bulk) {
  // iperf3 through every variant: medians of Gbit/s and CPU seconds per GB.
  const streams = Math.min(64, Number(flags.streams ?? 1));
  spawnChild("iperf3", ["iperf3", "-s", "-p", String(port)], { logFile: join(dir, "iperf3.log") });
  await waitPort(port, 10_000, "iperf3 server");
  const res = new Map(variants.map((v) => [v, { gbps: [] as number[], cpuPerGB: [] as number[] }]));
  const iperf = (entry: number, secs: number) =>
    run(["iperf3", "-c", "127.0.0.1", "-p", String(entry), "-t", String(secs), "-P", String(streams), "-J", ...(flags.reverse ? ["-R"] : [])], { timeoutMs: secs * 1000 + 60_000 });
  await rotate(
    { iperf: port },
    (entry) => iperf(entry.iperf!, 1),
    async (v, entry, cpuUsed) => {
      const out = await iperf(entry.iperf!, SECONDS);
      const used = cpuUsed();
      const got = JSON.parse(out.stdout).end.sum_received;
      res.get(v)!.gbps.push(got.bits_per_second / 1e9);
      res.get(v)!.cpuPerGB.push(used / (got.bytes / 1e9));
    },
    500,
  );
  console.log(`bulk ${streams} stream(s)${flags.reverse ? " -R" : ""}, ${ROUNDS} rounds of ${SECONDS} s, medians:`);
  for (const v of variants) {
    const r = res.get(v)!;
    console.log(`${v.name.padEnd(30)} ${median(r.gbps).toFixed(2).padStart(6)} Gbit/s   tunnel CPU ${median(r.cpuPerGB).toFixed(3)} s/GB   (Gbit/s ${r.gbps.map((x) => x.toFixed(2)).join(", ")})`);
  }
} else {
  spawnChild("echo", [BUN, join(BENCH, "echo.ts"), String(port)], { logFile: join(dir, "echo.log") });
  await waitPort(port, 10_000, "echo app");
  const results = new Map(variants.map((v) => [v, { rate: [] as number[], ttfb: [] as number[], p99: [] as number[], cpuUs: [] as number[], segs: [] as number[] }]));
  const load = (entry: number, ms: number) =>
    run([BUN, join(BENCH, "loadgen.ts"), "setup", JSON.stringify({ port: entry, concurrency: C, durationMs: ms, size: 64 })], { timeoutMs: ms + 60_000 });
  await rotate(
    { echo: port },
    (entry) => load(entry.echo!, WARMUP_SECONDS * 1000),
    async (v, entry, cpuUsed) => {
      const segs0 = outSegs();
      const out = await load(entry.echo!, SECONDS * 1000);
      const used = cpuUsed();
      const r = JSON.parse(out.stdout.trim().split("\n").pop()!);
      const res = results.get(v)!;
      res.rate.push(r.perSecond);
      res.ttfb.push(r.ttfbUs.p50);
      res.p99.push(r.ttfbUs.p99);
      res.cpuUs.push((used / r.connections) * 1e6);
      res.segs.push((outSegs() - segs0) / r.connections);
    },
    300, // let TIME_WAIT settle a little
  );
  console.log(`setup c=${C}, ${ROUNDS} rounds of ${SECONDS} s, medians:`);
  for (const v of variants) {
    const r = results.get(v)!;
    console.log(
      `${v.name.padEnd(30)} ${median(r.rate).toFixed(0).padStart(6)} conn/s   first byte p50 ${median(r.ttfb).toFixed(0).padStart(6)} us, p99 ${median(r.p99).toFixed(0).padStart(6)} us   tunnel CPU ${median(r.cpuUs).toFixed(0).padStart(4)} us/conn   ${median(r.segs).toFixed(1)} segments/conn   (rates ${r.rate.map((x) => x.toFixed(0)).join(", ")})`,
    );
  }
}
