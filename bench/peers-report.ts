/**
 * The first table of BENCHMARKS.md: Warren against the tunnels people use
 * (issue 21), rendered from bench/results/peers.json (`bench/run.ts --peers`).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

// biome-ignore lint/suspicious/noExplicitAny: results JSON
type Any = any;

/** The columns, in order; Warren/rathole is the ratio the issue's targets use. */
const COLUMNS = ["warren", "rathole", "frp", "frp-nomux", "bun-chain", "direct"] as const;
const HEAD: Record<(typeof COLUMNS)[number], string> = {
  warren: "**Warren**",
  rathole: "rathole",
  frp: "frp",
  "frp-nomux": "frp, tcpMux off",
  "bun-chain": "bare Bun chain",
  direct: "direct",
};
/** Loss below which a UDP rate counts as relayed (bench/run.ts's UDP_LOSS_OK). */
const UDP_LOSS_OK_PCT = 0.1;
/** The offered rate whose loss the table shows. */
const UDP_LOSS_AT_MBPS = 500;

const fmt = (v: unknown, digits: number): string =>
  typeof v === "number" && Number.isFinite(v) ? v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "–";

/** bench/results/peers.json, when a peer comparison has been run. */
export function loadPeerResults(file = join(import.meta.dir, "results", "peers.json")): Any | undefined {
  return existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : undefined;
}

/** One figure: its values per path (one or more numbers each), how to print them, and which way is better. */
interface Figure {
  name: string;
  better: "higher" | "lower";
  digits: number;
  get: (path: string) => (number | null | undefined)[];
  /** Text instead of the numbers for a path (a failed or capped measurement). */
  note?: (path: string) => string | null;
}

function figures(sc: Any): Figure[] {
  const bulk = (p: string, streams: number, reverse: boolean) => sc.bulk?.rows?.find((r: Any) => r.path === p && r.streams === streams && r.reverse === reverse && !r.error);
  const lat = (p: string) => sc.latency?.rows?.find((r: Any) => r.path === p && !r.error);
  const setup = (p: string, c: number) => sc.setup?.rows?.find((r: Any) => r.path === p && r.concurrency === c && !r.error);
  const held = (p: string) => sc.many?.rows?.find((r: Any) => r.path === p);
  const udpMax = (p: string) => sc.udp?.iperf?.max?.find((r: Any) => r.path === p);
  const udpAt = (p: string) => sc.udp?.iperf?.rows?.find((r: Any) => r.path === p && r.offeredMbps === UDP_LOSS_AT_MBPS && r.window !== "default" && !r.error);
  const mem = (p: string) => sc.memory?.rows?.find((r: Any) => r.path === p);
  const heldCount = sc.many?.rows?.[0]?.count ?? 9000;
  // The plan's lowest and highest setup concurrency (1 and 50 in the comparison).
  const cs: number[] = [...new Set<number>((sc.setup?.rows ?? []).map((r: Any) => r.concurrency))].sort((a, b) => a - b);
  const [c1, cN] = [cs[0] ?? 1, cs[cs.length - 1] ?? 50];
  const kib = (b: unknown) => (typeof b === "number" ? b / 1024 : null);
  return [
    { name: "iperf3 1 stream / -R / 8 streams, Gbit/s", better: "higher", digits: 2, get: (p) => [bulk(p, 1, false)?.gbps, bulk(p, 1, true)?.gbps, bulk(p, 8, false)?.gbps] },
    { name: "relay CPU s per GB (1 stream)", better: "lower", digits: 2, get: (p) => [bulk(p, 1, false)?.cpuPerGB] },
    { name: "64-byte ping-pong p50 / p99, µs", better: "lower", digits: 0, get: (p) => [lat(p)?.us?.p50, lat(p)?.us?.p99] },
    { name: `new connections/s at concurrency ${c1} / ${cN}`, better: "higher", digits: 0, get: (p) => [setup(p, c1)?.perSecond, setup(p, cN)?.perSecond] },
    { name: `first reply byte p99 at concurrency ${c1} / ${cN}, ms`, better: "lower", digits: 2, get: (p) => [setup(p, c1)?.ttfbUs?.p99 / 1000, setup(p, cN)?.ttfbUs?.p99 / 1000] },
    { name: "RSS of server + client, idle after load, MiB", better: "lower", digits: 1, get: (p) => [mem(p)?.bytes / 2 ** 20] },
    {
      name: `RSS per held connection at ${fmt(heldCount, 0)} (server + client), KiB`,
      better: "lower",
      digits: 1,
      get: (p) => [kib(held(p)?.bytesPerConn)],
      note: (p) => {
        const h = held(p);
        if (!h || p === "direct") return null;
        if (h.error || h.skipped) return `could not hold them: ${String(h.error ?? h.skipped).slice(0, 80)}`;
        return h.alive < h.count ? `${fmt(kib(h.bytesPerConn), 1)} (only ${fmt(h.alive, 0)} of ${fmt(h.count, 0)} alive)` : null;
      },
    },
    {
      name: `UDP: highest offered rate with < ${UDP_LOSS_OK_PCT} % loss, Mbit/s`,
      better: "higher",
      digits: 0,
      get: (p) => [udpMax(p)?.achievedMbps],
      note: (p) => {
        const m = udpMax(p);
        if (!m) return null;
        if (m.maxRateMbps === null) return `none (${m.firstFailingMbps ?? "–"} lost more)`;
        return m.senderLimited ? `≥ ${fmt(m.achievedMbps, 0)} (iperf3's sender limit)` : null;
      },
    },
    {
      name: `UDP: loss at ${UDP_LOSS_AT_MBPS} Mbit/s offered, %`,
      better: "lower",
      digits: 2,
      get: (p) => [udpAt(p)?.lossPct],
      // iperf3 shares the cores with the tunnel: when it could not send the offered rate, say what it sent.
      note: (p) => (udpAt(p)?.senderLimited ? `${fmt(udpAt(p).lossPct, 2)} (iperf3 sent ${fmt(udpAt(p).sentMbps, 0)})` : null),
    },
  ];
}

function cell(f: Figure, p: string): string {
  const n = f.note?.(p);
  if (n) return n;
  const vs = f.get(p);
  return vs.every((v) => typeof v !== "number" || !Number.isFinite(v)) ? "–" : vs.map((v) => fmt(v, f.digits)).join(" / ");
}

function ratio(f: Figure): string {
  const [w, r] = [f.get("warren"), f.get("rathole")];
  // Warren's figure is a lower bound (iperf3's sender limit): so is the ratio.
  const bound = f.note?.("warren")?.startsWith("≥") ? "≥ " : "";
  const parts = w.map((v, i) => (typeof v === "number" && typeof r[i] === "number" && r[i] !== 0 && Number.isFinite(v / r[i]!) ? `${(v / r[i]!).toFixed(2)}×` : "–"));
  return parts.every((x) => x === "–") ? "–" : bound + parts.join(" / ");
}

/** How many runs stand behind each figure, from the results themselves. */
function method(r: Any): string {
  const sc = r.scenarios ?? {};
  const b = sc.bulk ?? {};
  const parts = [
    b.pairRuns ? `bulk: ${b.pairRuns} runs of ${b.pairSeconds} s per path and mode in turning order (bytes and CPU summed; direct one run of ${b.seconds} s)` : null,
    sc.latency?.rounds ? `ping-pong: medians of ${sc.latency.rounds} runs of ${fmt(sc.latency.roundTrips, 0)} round trips` : null,
    sc.setup?.rounds ? `setup: medians of ${sc.setup.rounds} runs of ${sc.setup.seconds} s per concurrency, after ${sc.setup.warmupSeconds} s of unmeasured load` : null,
    sc.memory ? `memory: VmRSS ${sc.memory.idleSeconds} s after the ping-pong and setup runs` : null,
    sc.many?.rows?.length ? `held connections: one run per path, each connection pinged every ${fmt(sc.many.intervalMs / 1000, 0)} s, memory read before and with them open` : null,
    sc.udp?.iperf?.rows ? `UDP: iperf3 -u, ${sc.udp.datagramBytes}-byte datagrams, ${sc.udp.seconds} s per rate (${(sc.udp.iperf.rates ?? []).join(", ")} Mbit/s, then bisection), one sweep` : null,
  ].filter(Boolean);
  return parts.join("; ");
}

/** ", Warren at <commit>" and the runtime files that were being edited in the tree at the time. */
function warrenAt(w: Any): string {
  if (!w?.commit) return "";
  const u: string[] = w.uncommitted ?? [];
  return `, Warren at ${w.commit}${u.length ? ` with uncommitted changes to ${u.join(", ")} (others' work in progress in the shared tree)` : ""}`;
}

/** Lowest and highest run of the repeated figures, per compared path: how far one run strays on this machine. */
function spread(sc: Any, present: readonly string[]): string[] {
  const range = (xs: unknown, scale = 1, digits = 0) => {
    const v = Array.isArray(xs) ? xs.filter((x): x is number => typeof x === "number").map((x) => x / scale) : [];
    return v.length > 1 ? `${fmt(Math.min(...v), digits)}–${fmt(Math.max(...v), digits)}` : "–";
  };
  const bulk1 = (p: string) => sc.bulk?.rows?.find((r: Any) => r.path === p && r.streams === 1 && !r.reverse)?.runGbps;
  const lat = (p: string) => sc.latency?.rows?.find((r: Any) => r.path === p)?.usRuns?.map((x: Any) => x.p99);
  const setup = (p: string, c: number) => sc.setup?.rows?.find((r: Any) => r.path === p && r.concurrency === c);
  const cs: number[] = [...new Set<number>((sc.setup?.rows ?? []).map((r: Any) => r.concurrency))].sort((a, b) => a - b);
  const c1 = cs[0] ?? 1;
  const paths = present.filter((p) => p !== "direct");
  const rows = [
    ["iperf3 1 stream, Gbit/s", ...paths.map((p) => range(bulk1(p), 1, 2))],
    ["ping-pong p99, µs", ...paths.map((p) => range(lat(p)))],
    [`new connections/s at concurrency ${c1}`, ...paths.map((p) => range(setup(p, c1)?.perSecondRuns))],
    [`first reply byte p99 at concurrency ${c1}, ms`, ...paths.map((p) => range(setup(p, c1)?.ttfbUsRuns?.map((x: Any) => x.p99), 1000, 2))],
  ];
  const head = ["spread of single runs (lowest–highest)", ...paths.map((p) => HEAD[p as (typeof COLUMNS)[number]])];
  return [`| ${head.join(" | ")} |`, `|${head.map((_, i) => (i ? "---:" : "---")).join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`), ""];
}

/** The "Warren against the tunnels people use" section. */
export function renderPeers(r: Any | undefined): string {
  if (!r?.scenarios) return "";
  const m = r.machine ?? {};
  const v = m.peers ?? {};
  const present = COLUMNS.filter((p) => figures(r.scenarios).some((f) => cell(f, p) !== "–"));
  const rows = figures(r.scenarios).map((f) => [`${f.name} (${f.better} is better)`, ...present.map((p) => cell(f, p)), ratio(f)]);
  const head = ["figure", ...present.map((p) => HEAD[p]), "Warren / rathole"];
  const lines = [
    "## Warren against the tunnels people use",
    "",
    `Re-run: \`flock /tmp/warren-bench.lock npx bun bench/run.ts --peers\` (about 15 minutes; or a few minutes at a time with \`--scenarios bulk\`, \`latency,setup\`, \`many\` and \`udp\`, each merged into \`bench/results/peers.json\`), then this file is rendered again; \`npx bun bench/run.ts --render\` re-renders it without measuring. rathole and frp are found on \`PATH\` or in \`$WARREN_PEERS_BIN\` (default /work/peers/bin); the run prints how to install them when they are missing, and skips their rows.`,
    "",
    `| ${head.join(" | ")} |`,
    `|${head.map((_, i) => (i ? "---:" : "---")).join("|")}|`,
    ...rows.map((row) => `| ${row.join(" | ")} |`),
    "",
    `Measured ${r.date}${(r.updates ?? []).length ? ` (parts re-run: ${r.updates.map((u: Any) => `${u.scenarios.join(", ")} at ${u.date}${u.warren ? ` (Warren ${u.warren.commit}${u.warren.uncommitted?.length ? ` + ${u.warren.uncommitted.length} uncommitted files` : ""})` : ""}`).join("; ")})` : ""} with \`${r.command}\` on ${m.cpu ?? "?"}, ${m.cores ?? "?"} cores shared with other work (1-min load ${fmt(r.loadBefore, 1)} before the run), Bun ${m.bun ?? "?"}${warrenAt(m.warren)}, rathole ${v.rathole ?? "–"}, frp ${v.frps ?? "–"}${v.frpCommit ? ` (${String(v.frpCommit).slice(0, 12)})` : ""}, iperf3 ${m.iperf3 ?? "–"}. Everything (load generator, target, both tunnel processes) shares the 2 cores on loopback; ${method(r)}. Paths alternate in turning order, so drift falls on all alike; bulk differences under about 10 % are within this machine's noise.`,
    "",
    ...spread(r.scenarios, present),
    "Each tunnel runs as its users run it: rathole 0.5.0 with one token and its default TCP transport (`--server`/`--client` with a service per target, `RUST_LOG=warn`); frp 0.70.1 with token auth and its default transport (tcpMux on: every user connection is a yamux stream on one TCP connection), and frp with `transport.tcpMux = false` on both sides (a TCP work connection per user connection), `log.level = \"warn\"`; Warren as in the next sections (TCP and UDP apps of one config-defined group). UDP forwards take the TCP forward's port number (`type = \"udp\"` services/proxies), as iperf3 -u needs. The bare Bun chain (two `bench/relay.ts` hops, TCP only) is the floor a Bun tunnel can reach; direct is the load generator straight to the target.",
    "",
  ];
  const skipped = Object.entries(r.skipped ?? {});
  if (skipped.length) lines.push(...skipped.map(([p, why]) => `- ${p} skipped: ${why}`), "");
  return lines.join("\n");
}
