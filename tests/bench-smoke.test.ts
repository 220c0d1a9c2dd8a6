/**
 * Keeps the benchmark harness from rotting: runs `bench/run.ts --smoke`
 * (tiny sizes, no ssh, no 10,000-connection step, never installs packages;
 * rathole and frp when their binaries are found, see bench/peers.ts)
 * and checks that every scenario produced rows and that every process it
 * started is gone. Performance numbers are never asserted here.
 */
import { expect, test } from "bun:test";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");
const MARKERS = ["bench/relay.ts", "bench/echo.ts", "bench/loadgen.ts", "bench/control-driver.ts", "warren-bench-"];

/** Pids of processes that look like they belong to a bench run. */
function benchProcesses(): Set<number> {
  const out = new Set<number>();
  for (const e of readdirSync("/proc")) {
    const pid = Number(e);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    let cmd = "";
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
    } catch {
      continue;
    }
    if (MARKERS.some((m) => cmd.includes(m)) && !cmd.includes("bench/run.ts")) out.add(pid);
  }
  return out;
}

test(
  "npm run bench -- --smoke measures every scenario and cleans up",
  async () => {
    const before = benchProcesses();
    const benchDirs = () => readdirSync(tmpdir()).filter((d) => d.startsWith("warren-bench-") && !d.endsWith(".json"));
    const dirsBefore = new Set(benchDirs());
    const out = join(tmpdir(), `warren-bench-smoke-test-${process.pid}.json`);
    const proc = Bun.spawn([process.execPath, join(ROOT, "bench", "run.ts"), "--smoke", "--out", out], { cwd: ROOT, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
    const timer = setTimeout(() => proc.kill("SIGKILL"), 80_000);
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    clearTimeout(timer);
    if (code !== 0) console.error(stdout.slice(-4000), stderr.slice(-4000));
    expect(code).toBe(0);
    expect(stdout).toContain(`BENCH-RESULT ${out}`);
    const r = JSON.parse(readFileSync(out, "utf8"));
    rmSync(out, { force: true });

    expect(r.mode).toBe("smoke");
    expect(r.machine.bun).toBe(Bun.version);
    const s = r.scenarios;
    // Bulk needs iperf3, which smoke mode does not install: either it ran through Warren, or it says why not.
    if (s.bulk.skipped) expect(String(s.bulk.skipped)).toContain("iperf3");
    else {
      expect(s.bulk.rows.some((x: any) => x.path === "warren" && x.gbps > 0)).toBe(true);
      // Warren and the bare chain run in alternation, pairRuns times each, summed.
      expect(s.bulk.pairRuns).toBe(2);
      for (const path of ["warren", "bun-chain"]) expect(s.bulk.rows.find((x: any) => x.path === path)?.runs).toBe(s.bulk.pairRuns);
      expect(s.bulk.runs.filter((x: any) => x.path === "warren")).toHaveLength(s.bulk.pairRuns * s.bulk.rows.filter((x: any) => x.path === "warren").length);
    }
    // Warren and the bare chain repeat latency and setup runs in alternation; their rows are medians.
    for (const path of ["warren", "bun-chain"]) {
      expect(s.latency.rows.find((x: any) => x.path === path)?.usRuns).toHaveLength(s.latency.rounds);
      for (const x of s.setup.rows.filter((x: any) => x.path === path)) expect(x.ttfbUsRuns).toHaveLength(s.setup.rounds);
    }
    expect(s.latency.rounds).toBeGreaterThan(1);
    for (const path of ["direct", "warren", "bun-chain"]) {
      const lat = s.latency.rows.find((x: any) => x.path === path);
      expect(lat?.error).toBeUndefined();
      expect(lat.us.n).toBe(s.latency.roundTrips);
      const setups = s.setup.rows.filter((x: any) => x.path === path);
      expect(setups.length).toBe(2);
      for (const x of setups) expect(x.connections).toBeGreaterThan(0);
      const held = s.many.rows.find((x: any) => x.path === path);
      expect(held?.error).toBeUndefined();
      expect(held.alive).toBe(held.count);
    }
    // The peers (rathole, frp, frp with tcpMux off) run when their binaries are found; a machine without them skips their rows and says how to get them.
    for (const path of ["rathole", "frp", "frp-nomux"]) {
      if (r.skipped[path]) {
        console.log(`bench smoke: ${path} skipped: ${r.skipped[path]}`);
        expect(String(r.skipped[path])).toMatch(/not found on PATH or in \$WARREN_PEERS_BIN/);
        continue;
      }
      expect(r.machine.peers[path === "rathole" ? "rathole" : "frps"]).toMatch(/^\d+\.\d+\.\d+$/);
      expect(s.latency.rows.find((x: any) => x.path === path)?.us.n).toBe(s.latency.roundTrips);
      const held = s.many.rows.find((x: any) => x.path === path);
      expect(held?.error).toBeUndefined();
      expect(held.alive).toBe(held.count);
      expect(s.memory.rows.find((x: any) => x.path === path)?.bytes).toBeGreaterThan(0);
      if (!s.udp.iperf.skipped) expect(s.udp.iperf.rows.find((x: any) => x.path === path)?.deliveredMbps).toBeGreaterThan(0);
      expect(s.udp.ping.rows.find((x: any) => x.path === path)?.us.n).toBeGreaterThan(0);
    }
    // UDP: iperf3 -u through Warren (when iperf3 is there) and a Bun UDP ping-pong through every UDP-capable path.
    expect(s.udp.error).toBeUndefined();
    if (s.udp.iperf.skipped) expect(String(s.udp.iperf.skipped)).toContain("iperf3");
    else {
      const u = s.udp.iperf.rows.find((x: any) => x.path === "warren");
      expect(u?.error).toBeUndefined();
      expect(u.deliveredMbps).toBeGreaterThan(0);
      expect(typeof u.lossPct).toBe("number");
    }
    for (const path of ["direct", "warren"]) {
      const ping = s.udp.ping.rows.find((x: any) => x.path === path);
      expect(ping?.error).toBeUndefined();
      expect(ping.us.n).toBe(ping.roundTrips);
      expect(ping.roundTrips).toBeGreaterThan(0);
    }
    // TLS cost: plain and TLS Warren both carried the latency run (and bulk, when iperf3 is there).
    expect(s.tls.error).toBeUndefined();
    for (const path of ["warren", "warren-tls"]) {
      expect(s.tls.latency.find((x: any) => x.path === path)?.us.p50).toBeGreaterThan(0);
      if (!s.tls.bulkSkipped) expect(s.tls.bulk.find((x: any) => x.path === path)?.gbps).toBeGreaterThan(0);
    }
    expect(s.control.error).toBeUndefined();
    expect(s.control.driverOnline).toBe(s.control.groups);
    expect(s.control.apiOnline).toBe(s.control.groups);

    // Every process the run started is gone, and so are its temp dirs.
    await Bun.sleep(200);
    const leaked = [...benchProcesses()].filter((p) => !before.has(p));
    expect(leaked).toEqual([]);
    expect(benchDirs().filter((d) => !dirsBefore.has(d))).toEqual([]);
  },
  90_000,
);
