/**
 * UDP through a tunnel, quickly and repeatably (issue 21, part 4): iperf3 -u at
 * fixed offered rates through Warren and rathole, paths alternating within each
 * round, medians of N rounds: loss %, jitter, the kernel's receive-buffer drops
 * (all sockets, and the tunnel's public socket alone) and the tunnel's CPU.
 *
 *   flock /tmp/warren-bench.lock npx bun bench/udp.ts [--rates 50,100,200,300,500,800]
 *     [--len 1200] [--seconds 3] [--rounds 3] [--paths warren,rathole] [--json FILE]
 *
 * `--len 0` lets iperf3 pick its default datagram size. WARREN_BENCH_PROF=dir
 * writes CPU profiles of Warren's processes (bench/paths.ts). rathole is set up
 * here (one TCP and one UDP service on the same port number, as iperf3 -u needs)
 * so that this file does not wait for the bench's peer paths; it is found in
 * WARREN_PEERS_BIN, /work/peers/bin or on PATH.
 */
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { cpuSeconds, freePort, killAllSync, removeTempDirs, run, spawnChild, stopAll, stopChild, tail, tempDir, waitPort, type Child } from "./common.ts";
import { startPath, type Tunnel } from "./paths.ts";

const { values: argv } = parseArgs({
  options: {
    rates: { type: "string", default: "50,100,200,300,500,800" },
    len: { type: "string", default: "1200" },
    seconds: { type: "string", default: "3" },
    rounds: { type: "string", default: "3" },
    paths: { type: "string", default: "warren,rathole" },
    json: { type: "string" },
  },
});
const RATES = argv.rates!.split(",").map(Number);
const LEN = Number(argv.len);
const SECONDS = Number(argv.seconds);
const ROUNDS = Number(argv.rounds);
const PATHS = argv.paths!.split(",");
/** Loss below which a rate counts as carried (issue 21's threshold). */
const LOSS_OK_PCT = 0.1;
/** iperf3's own socket buffers (-w), so that its receiver is not what overflows first (the OS default is 208 KiB). */
const WINDOW = "2M";
/** Neither rathole end says when its UDP service is bound: a moment for it after the TCP one is. */
const UDP_SETTLE_MS = 300;

/** The kernel's UDP counters (/proc/net/snmp). */
function snmp(): Record<string, number> {
  const lines = readFileSync("/proc/net/snmp", "utf8").split("\n").filter((l) => l.startsWith("Udp:"));
  const [keys, vals] = [lines[0]!.split(/\s+/).slice(1), lines[1]!.split(/\s+/).slice(1).map(Number)];
  return Object.fromEntries(keys.map((k, i) => [k, vals[i]!]));
}

/** Receive-buffer drops of the UDP sockets bound to `port` (/proc/net/udp, last column). */
function portDrops(port: number): number {
  let drops = 0;
  for (const line of readFileSync("/proc/net/udp", "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 13 && parseInt(f[1]!.split(":")[1]!, 16) === port) drops += Number(f.at(-1));
  }
  return drops;
}

function peerBin(name: string): string | null {
  for (const dir of [process.env.WARREN_PEERS_BIN, "/work/peers/bin"]) if (dir && existsSync(join(dir, name))) return join(dir, name);
  const r = Bun.spawnSync(["bash", "-c", `command -v ${name}`]);
  return r.exitCode === 0 ? r.stdout.toString().trim() : null;
}

/** rathole as its README configures it (one token, TCP transport), forwarding TCP and UDP of `target`. */
async function rathole(target: number): Promise<Tunnel> {
  const bin = peerBin("rathole");
  if (!bin) throw new Error("rathole not found: `cargo install rathole --version 0.5.0`, or set WARREN_PEERS_BIN");
  const dir = tempDir("warren-bench-udp-rathole-");
  const [control, entry] = [await freePort(), await freePort()];
  const token = JSON.stringify(randomBytes(18).toString("hex"));
  const at = (p: number) => JSON.stringify(`127.0.0.1:${p}`);
  // prettier-ignore
  writeFileSync(join(dir, "server.toml"), [`[server]`, `bind_addr = ${at(control)}`, `default_token = ${token}`,
    `[server.services.t]`, `bind_addr = ${at(entry)}`, `[server.services.u]`, `type = "udp"`, `bind_addr = ${at(entry)}`, ``].join("\n"));
  // prettier-ignore
  writeFileSync(join(dir, "client.toml"), [`[client]`, `remote_addr = ${at(control)}`, `default_token = ${token}`,
    `[client.services.t]`, `local_addr = ${at(target)}`, `[client.services.u]`, `type = "udp"`, `local_addr = ${at(target)}`, ``].join("\n"));
  const env = { RUST_LOG: "warn" };
  const children: Child[] = [];
  try {
    children.push(spawnChild("rathole-server", [bin, "--server", join(dir, "server.toml")], { logFile: join(dir, "server.log"), env }));
    await waitPort(control, 10_000, "rathole server");
    children.push(spawnChild("rathole-client", [bin, "--client", join(dir, "client.toml")], { logFile: join(dir, "client.log"), env }));
    await waitPort(entry, 10_000, "rathole service");
    await Bun.sleep(UDP_SETTLE_MS);
  } catch (err) {
    await Promise.all(children.map((c) => stopChild(c)));
    throw new Error(`${(err as Error).message}\n${tail(join(dir, "server.log"), 8)}\n${tail(join(dir, "client.log"), 8)}`);
  }
  return { path: "rathole" as Tunnel["path"], entry: { iperf: entry }, server: [children[0]!.pid], client: [children[1]!.pid], stop: () => Promise.all(children.map((c) => stopChild(c))).then(() => {}) };
}

interface Row {
  path: string;
  rate: number;
  lossPct: number;
  jitterMs: number;
  datagrams: number;
  /** What iperf3 actually sent, Mbit/s: its sender is CPU-bound here above a few hundred. */
  sentMbps: number;
  rcvbufErrors: number;
  publicDrops: number;
  cpuS: number;
  error?: string;
}

/** One iperf3 -u run through `t`. */
async function once(name: string, t: Tunnel, rate: number): Promise<Row> {
  const port = t.entry.iperf!;
  const args = ["iperf3", "-c", "127.0.0.1", "-p", String(port), "-u", "-b", `${rate}M`, "-t", String(SECONDS), "-w", WINDOW, "-J", ...(LEN > 0 ? ["-l", String(LEN)] : [])];
  // The iperf3 server takes a moment to accept the next test after one ends.
  await Bun.sleep(300);
  const pids = [...t.server, ...t.client];
  const [n0, d0, c0] = [snmp(), portDrops(port), cpuSeconds(pids)];
  const r = await run(args, { timeoutMs: SECONDS * 1000 + 20_000, allowFail: true });
  const [n1, d1, c1] = [snmp(), portDrops(port), cpuSeconds(pids)];
  const base = { path: name, rate, rcvbufErrors: n1.RcvbufErrors! - n0.RcvbufErrors!, publicDrops: d1 - d0, cpuS: c1 - c0 };
  try {
    const out = JSON.parse(r.stdout);
    const sum = out.end.sum;
    const bytes = LEN > 0 ? LEN : out.start.test_start.blksize;
    return { ...base, lossPct: sum.lost_percent, jitterMs: sum.jitter_ms, datagrams: sum.packets, sentMbps: (sum.packets * bytes * 8) / SECONDS / 1e6 };
  } catch {
    await Bun.sleep(1000);
    return { ...base, lossPct: 100, jitterMs: NaN, datagrams: 0, sentMbps: 0, error: (r.stderr || r.stdout).trim().slice(0, 200) };
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const dir = tempDir("warren-bench-udp-");
  const target = await freePort();
  const iperfServer = spawnChild("iperf3-s", ["iperf3", "-s", "-B", "127.0.0.1", "-p", String(target)], { logFile: join(dir, "iperf3.log") });
  await waitPort(target, 5000, "iperf3 -s");
  const tunnels = new Map<string, Tunnel>();
  try {
    for (const p of PATHS) tunnels.set(p, p === "rathole" ? await rathole(target) : await startPath(p as Tunnel["path"], { iperf: target }, { udp: ["iperf"] }));
    const rows: Row[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      for (const rate of RATES) {
        // Alternate which path goes first, so neither always runs on a machine the other just warmed.
        const order = round % 2 ? [...PATHS].reverse() : PATHS;
        for (const p of order) {
          const r = await once(p, tunnels.get(p)!, rate);
          rows.push(r);
          console.log(`round ${round + 1} ${String(rate).padStart(4)}M ${p.padEnd(8)} sent ${r.sentMbps.toFixed(0)} loss ${r.lossPct.toFixed(3)} % jitter ${r.jitterMs.toFixed(3)} ms rcvbuf drops ${r.rcvbufErrors} (public ${r.publicDrops}) cpu ${r.cpuS.toFixed(2)} s${r.error ? ` ERROR ${r.error}` : ""}`);
        }
      }
    }
    console.log(`\nmedians of ${ROUNDS} runs, ${LEN > 0 ? `${LEN}-byte` : "iperf3's default"} datagrams, ${SECONDS} s each`);
    console.log("| offered Mbit/s | " + PATHS.map((p) => `${p} sent Mbit/s / loss % / jitter ms / rcvbuf drops (public) / CPU s`).join(" | ") + " |");
    for (const rate of RATES) {
      const cells = PATHS.map((p) => {
        const mine = rows.filter((r) => r.path === p && r.rate === rate);
        return `${median(mine.map((r) => r.sentMbps)).toFixed(0)} / ${median(mine.map((r) => r.lossPct)).toFixed(3)} / ${median(mine.map((r) => r.jitterMs)).toFixed(3)} / ${median(mine.map((r) => r.rcvbufErrors))} (${median(mine.map((r) => r.publicDrops))}) / ${median(mine.map((r) => r.cpuS)).toFixed(2)}`;
      });
      console.log(`| ${rate} | ${cells.join(" | ")} |`);
    }
    for (const p of PATHS) {
      const ok = RATES.filter((rate) => median(rows.filter((r) => r.path === p && r.rate === rate).map((r) => r.lossPct)) < LOSS_OK_PCT);
      console.log(`${p}: highest offered rate with median loss < ${LOSS_OK_PCT} %: ${ok.length ? `${Math.max(...ok)} Mbit/s` : "none"}`);
    }
    if (argv.json) writeFileSync(argv.json, JSON.stringify({ rates: RATES, len: LEN, seconds: SECONDS, rounds: ROUNDS, rows }, null, 1));
  } finally {
    for (const t of tunnels.values()) await t.stop();
    await stopChild(iperfServer);
    await stopAll();
    removeTempDirs();
  }
}

// An interrupted run leaves no tunnel, iperf3 or temp dir behind.
for (const sig of ["SIGINT", "SIGTERM"] as const)
  process.on(sig, () => {
    killAllSync();
    removeTempDirs();
    process.exit(130);
  });

await main();
