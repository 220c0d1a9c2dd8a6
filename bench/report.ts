/** Renders bench results (the JSON that bench/run.ts writes) as BENCHMARKS.md. */
import { existsSync, readFileSync } from "node:fs";
import { renderPeers } from "./peers-report.ts";
import { join } from "node:path";

/** Hand-written record of optimisations (before/after), limits and dead ends, appended to every rendering. */
const NOTES_FILE = join(import.meta.dir, "optimisations.md");
/** Hand-written record of what the dashboard and /metrics cost (bench/dashboard-*.ts), appended after the notes. */
const DASHBOARD_FILE = join(import.meta.dir, "dashboard-cost.md");

type Any = Record<string, any>;

const PATHS = ["direct", "warren", "bun-chain", "socat", "ssh", "rathole", "frp", "frp-nomux"] as const;
const PEER_LABEL: Record<string, string> = { rathole: "rathole", frp: "frp", "frp-nomux": "frp, tcpMux off" };
const LABEL: Record<string, string> = { direct: "direct", warren: "**Warren**", "bun-chain": "bare Bun chain", socat: "socat chain", ssh: "ssh -R", ...PEER_LABEL };
const BASES = ["direct", "bun-chain", "socat", "ssh"] as const;
const PLAIN: Record<string, string> = { direct: "direct", "bun-chain": "bare Bun chain", socat: "socat chain", ssh: "ssh -R", ...PEER_LABEL };
const PATH_TEXT: Record<string, string> = { ...PLAIN, warren: "Warren", "warren-tls": "Warren + TLS" };

const num = (v: unknown, digits = 0): string => (typeof v === "number" && Number.isFinite(v) ? v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "–");
const mib = (b: unknown): string => (typeof b === "number" ? num(b / 2 ** 20, 1) : "–");
const ratio = (a: unknown, b: unknown): string => (typeof a === "number" && typeof b === "number" && b !== 0 && Number.isFinite(a / b) ? `${(a / b).toFixed(2)}×` : "–");

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(" | ")} |`, `|${head.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
}

/** A "Warren ÷ baseline" table: one row per metric, one column per baseline. */
function versus(metrics: { name: string; get: (path: string) => unknown; better: "higher" | "lower" }[]): string {
  const rows = metrics.map((m) => [m.name + (m.better === "higher" ? " (higher is better)" : " (lower is better)"), ...BASES.map((b) => ratio(m.get("warren"), m.get(b)))]);
  return table(["Warren ÷", ...BASES.map((b) => PLAIN[b]!)], rows);
}

function bulk(s: Any): string {
  if (!s) return "";
  if (s.skipped || s.error) return `## 1. Bulk TCP (iperf3)\n\nNot measured: ${s.skipped ?? s.error}\n`;
  const rows: Any[] = s.rows;
  const configs = [...new Map(rows.map((r) => [`${r.streams}/${r.reverse}`, r])).values()].map((r) => ({ streams: r.streams, reverse: r.reverse }));
  const find = (p: string, c: Any) => rows.find((r) => r.path === p && r.streams === c.streams && r.reverse === c.reverse);
  const cname = (c: Any) => `${c.streams} stream${c.streams > 1 ? "s" : ""}${c.reverse ? " -R" : ""}`;
  const present = PATHS.filter((p) => rows.some((r) => r.path === p));
  const gbps = table(
    ["path", ...configs.map((c) => `${cname(c)} Gbit/s (× direct)`)],
    present.map((p) => [LABEL[p]!, ...configs.map((c) => {
      const r = find(p, c);
      if (!r) return "–";
      if (r.error) return `error`;
      return `${num(r.gbps, 2)} (${ratio(r.gbps, find("direct", c)?.gbps)})`;
    })]),
  );
  const cpu = table(
    ["path", ...configs.map((c) => `${cname(c)}: CPU s (server + client), CPU s per GB`)],
    present.filter((p) => p !== "direct").map((p) => [LABEL[p]!, ...configs.map((c) => {
      const r = find(p, c);
      if (!r || r.error) return "–";
      return `${num(r.cpuTotal, 2)} (${num(r.cpuServer, 2)} + ${num(r.cpuClient, 2)}), ${num(r.cpuPerGB, 3)}`;
    })]),
  );
  const vs = versus(
    configs.flatMap((c) => [
      { name: `${cname(c)} throughput`, get: (p: string) => find(p, c)?.gbps, better: "higher" as const },
      { name: `${cname(c)} CPU per GB`, get: (p: string) => find(p, c)?.cpuPerGB, better: "lower" as const },
    ]),
  );
  const errs = rows.filter((r) => r.error).map((r) => `- ${PLAIN[r.path] ?? r.path}, ${cname(r)}: ${String(r.error).slice(0, 300)}`);
  return [
    `## 1. Bulk TCP (iperf3, ${s.seconds} s per run)`,
    "",
    "Throughput as iperf3's receiver reports it. `-R` sends from the target app toward the user." +
      (s.pairSeconds
        ? ` Warren and the bare Bun chain, whose ratio the targets compare, run ${s.pairRuns ?? 2} times for ${s.pairSeconds} s each, in the order ${(s.pairRuns ?? 2) >= 4 ? "A B B A B A A B" : "A B B A"} (which goes first alternates), and their runs are summed: drift on the shared machine falls on both alike.`
        : ""),
    "",
    gbps,
    "",
    "CPU seconds used by the tunnel processes during each run (utime + stime, children included, from /proc/PID/stat), and per GB moved:",
    "",
    cpu,
    "",
    vs,
    ...(errs.length ? ["", "Errors:", "", ...errs] : []),
    "",
  ].join("\n");
}

function latency(s: Any): string {
  if (!s) return "";
  if (s.error) return `## 2. Latency\n\nNot measured: ${s.error}\n`;
  const rows: Any[] = s.rows;
  const get = (p: string) => rows.find((r) => r.path === p);
  const present = PATHS.filter((p) => get(p));
  const t = table(
    ["path", "p50 µs", "p99 µs", "p99.9 µs", "mean µs", "p50 × direct", "p99 × direct"],
    present.map((p) => {
      const r = get(p)!;
      if (r.error) return [LABEL[p]!, "error", "", "", "", "", ""];
      const each = (r.usRuns?.length ?? 0) > 1 ? ` (${r.usRuns.map((x: Any) => num(x.p99)).join(", ")})` : "";
      return [LABEL[p]!, num(r.us.p50), num(r.us.p99) + each, num(r.us.p999), num(r.us.mean), ratio(r.us.p50, get("direct")?.us?.p50), ratio(r.us.p99, get("direct")?.us?.p99)];
    }),
  );
  const vs = versus([
    { name: "p50", get: (p) => get(p)?.us?.p50, better: "lower" },
    { name: "p99", get: (p) => get(p)?.us?.p99, better: "lower" },
    { name: "p99.9", get: (p) => get(p)?.us?.p999, better: "lower" },
  ]);
  const rounds =
    (s.rounds ?? 1) > 1
      ? [`Warren and the bare Bun chain ran ${s.rounds} times each, in alternation with each other and the other paths; their rows show the median of each quantile (p99 of every run in brackets). The other paths ran once.`, ""]
      : [];
  return [`## 2. Latency (64-byte ping-pong on one connection, ${num(s.roundTrips)} round trips after ${num(s.warmup)} warm-up)`, "", ...rounds, t, "", vs, ""].join("\n");
}

function setup(s: Any): string {
  if (!s) return "";
  if (s.error) return `## 3. Connection setup\n\nNot measured: ${s.error}\n`;
  const rows: Any[] = s.rows;
  const conc = [...new Set(rows.map((r) => r.concurrency))] as number[];
  const get = (p: string, c: number) => rows.find((r) => r.path === p && r.concurrency === c);
  const present = PATHS.filter((p) => rows.some((r) => r.path === p));
  const t = table(
    ["path", "concurrency", "connections/s", "× direct", "first reply byte p50 µs", "p99 µs", "errors", "tunnel CPU s"],
    conc.flatMap((c) =>
      present.map((p) => {
        const r = get(p, c);
        if (!r || r.error) return [LABEL[p]!, String(c), "error", "", "", "", "", ""];
        const each = (r.perSecondRuns?.length ?? 0) > 1 ? ` (${r.perSecondRuns.map((x: number) => num(x)).join(", ")})` : "";
        return [LABEL[p]!, String(c), num(r.perSecond) + each, ratio(r.perSecond, get("direct", c)?.perSecond), num(r.ttfbUs.p50), num(r.ttfbUs.p99), num(r.errors), p === "direct" ? "–" : num(r.cpuTotal, 2)];
      }),
    ),
  );
  const vs = versus(
    conc.flatMap((c) => [
      { name: `c=${c} connections/s`, get: (p: string) => get(p, c)?.perSecond, better: "higher" as const },
      { name: `c=${c} first byte p50`, get: (p: string) => get(p, c)?.ttfbUs?.p50, better: "lower" as const },
      { name: `c=${c} first byte p99`, get: (p: string) => get(p, c)?.ttfbUs?.p99, better: "lower" as const },
    ]),
  );
  return [
    `## 3. Connection setup (new connection per request: connect, send 64 bytes, read the echo, close; ${s.seconds} s per run)`,
    "",
    ...(s.warmupSeconds ? [`Before the measured runs, Warren and the bare Bun chain got ${s.warmupSeconds} s of the same load at the highest concurrency (the other paths ${Math.min(1, s.warmupSeconds)} s), not measured: Bun's JIT compiles a path's hot code during its first seconds under load (for Warren about 0.6 s of CPU per process), a cost a long-running tunnel pays once.`, ""] : []),
    ...((s.rounds ?? 1) > 1
      ? [`Warren and the bare Bun chain ran ${s.rounds} times each at every concurrency, in alternation with each other and the other paths; their rows show the median of each figure (connections/s of every run in brackets). The other paths ran once.`, ""]
      : []),
    t,
    "",
    vs,
    "",
  ].join("\n");
}

function many(s: Any): string {
  if (!s) return "";
  if (s.error) return `## 4. Many connections\n\nNot measured: ${s.error}\n`;
  const rows: Any[] = s.rows;
  const counts = [...new Set(rows.map((r) => r.count))] as number[];
  const get = (p: string, n: number) => rows.find((r) => r.path === p && r.count === n);
  const present = PATHS.filter((p) => rows.some((r) => r.path === p));
  const t = table(
    ["path", "connections", "alive at check", "ramp s", "server MiB (idle → held)", "client MiB (idle → held)", "KiB per connection", "CPU % while held (server + client)"],
    counts.flatMap((n) =>
      present.map((p) => {
        const r = get(p, n);
        if (!r) return [LABEL[p]!, num(n), "–", "", "", "", "", ""];
        if (r.skipped) return [LABEL[p]!, num(n), `skipped: ${r.skipped}`, "", "", "", "", ""];
        if (r.error) return [LABEL[p]!, num(n), `error: ${String(r.error).slice(0, 120)}`, "", "", "", "", ""];
        if (p === "direct") return [LABEL[p]!, num(n), `${num(r.alive)} / ${num(r.opened)}`, num(r.rampSeconds, 1), "–", "–", "–", "–"];
        const pss = r.memKind.includes("pss") ? " (PSS)" : "";
        return [
          LABEL[p]!,
          num(n),
          `${num(r.alive)} / ${num(r.opened)}`,
          num(r.rampSeconds, 1),
          `${mib(r.serverBytesIdle)} → ${mib(r.serverBytes)}${pss}`,
          `${mib(r.clientBytesIdle)} → ${mib(r.clientBytes)}${pss}`,
          num(r.bytesPerConn / 1024, 1),
          `${num(r.cpuServerPct + r.cpuClientPct, 1)} (${num(r.cpuServerPct, 1)} + ${num(r.cpuClientPct, 1)})`,
        ];
      }),
    ),
  );
  const vs = versus(
    counts.flatMap((n) => [
      { name: `${num(n)} conns: server + client memory held`, get: (p: string) => (get(p, n)?.serverBytes ?? NaN) + (get(p, n)?.clientBytes ?? NaN), better: "lower" as const },
      { name: `${num(n)} conns: bytes per connection`, get: (p: string) => get(p, n)?.bytesPerConn, better: "lower" as const },
      { name: `${num(n)} conns: CPU while held`, get: (p: string) => (get(p, n)?.cpuServerPct ?? NaN) + (get(p, n)?.cpuClientPct ?? NaN), better: "lower" as const },
    ]),
  );
  return [
    `## 4. Many connections (each echoes 16 bytes every ${s.intervalMs / 1000} s; CPU over a ${s.windowSeconds} s window; all checked alive at the end)`,
    "",
    "Memory is VmRSS of the process (for forked socat/sshd trees: the sum of PSS, so shared pages count once). KiB per connection = (held − idle) ÷ connections, server and client together. The direct path has no tunnel processes; its row shows the load generator and echo app cope. socat forks one process per connection and each fork uses less than one clock tick in the window, so its CPU here reads near 0 (the 10 ms granularity of /proc/PID/stat): treat the socat CPU figure in this table as a lower bound.",
    "",
    t,
    "",
    vs,
    "",
  ].join("\n");
}

function udp(s: Any): string {
  if (!s) return "";
  const head = "## 5. UDP";
  if (s.error) return `${head}\n\nNot measured: ${String(s.error).split("\n")[0]}\n`;
  if (s.warren && !s.iperf) return `${head}\n\n- Warren: ${s.warren}.\n- Others: ${s.others}.\n`;
  const out: string[] = [
    `${head} (iperf3 -u, ${num(s.datagramBytes)}-byte datagrams, ${s.seconds} s per run; Bun UDP ping-pong)`,
    "",
    `Warren forwards a UDP app on the same public port number as a TCP app of the same group (TCP and UDP ports are separate namespaces), both pointing at \`iperf3 -s\`: iperf3 needs its TCP control connection and its UDP datagrams to reach the same port. Every run passes \`-b\` (a fixed offered rate) and \`-w ${s.window}\` (so iperf3's own receive socket is not the first thing to overflow; the OS default is 208 KiB, and with it even the direct path loses datagrams above a few hundred Mbit/s: see the "default buffers" rows). Warren's sockets keep the OS defaults. Loss and jitter are iperf3's receiver figures; datagrams/s = delivered datagrams ÷ receiver seconds; "kernel rcvbuf drops" is the rise of RcvbufErrors in /proc/net/snmp during the run (datagrams the kernel dropped because a socket's receive buffer was full, any socket of the run), and in brackets the part dropped at Warren's public UDP socket on the server (its \`drops\` column in /proc/net/udp; not shown for socat, whose per-peer forked sockets may close before they are read). The socat chain is two \`socat -T 60 UDP-LISTEN:…,fork,reuseaddr UDP:…\` in series, beside the TCP pair for iperf3's control connection.`,
    "",
  ];
  const skippedOthers = Object.entries(s.others ?? {}).map(([p, why]) => `${PLAIN[p] ?? p}: not measured (${why})`);
  const ip = s.iperf;
  if (ip?.skipped) out.push(`iperf3 runs not measured: ${ip.skipped}`, "");
  else if (ip) {
    const rows: Any[] = ip.rows;
    const order = [...PATHS, "warren-tls"];
    const key = (r: Any) => order.indexOf(r.path) * 2 + (r.window === "default" ? 1 : 0);
    const label = (r: Any) => `${LABEL[r.path] ?? r.path}${r.window === "default" ? " (iperf3 default buffers)" : ""}`;
    const direct = (rate: number) => rows.find((r) => r.path === "direct" && r.window !== "default" && r.offeredMbps === rate);
    out.push(
      "Fixed offered rates:",
      "",
      table(
        ["path", "offered Mbit/s", "sent Mbit/s", "delivered Mbit/s (× direct)", "loss %", "kernel rcvbuf drops (at Warren's public socket)", "jitter ms", "datagrams/s delivered", "tunnel CPU s (server + client)", "CPU s per GB"],
        (ip.rates as number[]).flatMap((rate) =>
          rows
            .filter((r) => r.offeredMbps === rate)
            .sort((a, b) => key(a) - key(b))
            .map((r) => {
              if (r.error) return [label(r), num(rate), `error: ${String(r.error).slice(0, 100)}`, "", "", "", "", "", "", ""];
              const tunnel = r.path !== "direct";
              return [label(r), num(rate), num(r.sentMbps), `${num(r.deliveredMbps)} (${ratio(r.deliveredMbps, direct(rate)?.deliveredMbps)})`, num(r.lossPct, 3), `${num(r.rcvbufErrors)}${typeof r.entryDrops === "number" ? ` (${num(r.entryDrops)})` : ""}`, num(r.jitterMs, 3), num(r.datagramsPerSecond), tunnel ? `${num(r.cpuTotal, 2)} (${num(r.cpuServer, 2)} + ${num(r.cpuClient, 2)})` : "–", tunnel ? num(r.cpuPerGB, 2) : "–"];
            }),
        ),
      ),
      "",
    );
    const max: Any[] = ip.max ?? [];
    if (max.length) {
      const d = max.find((m) => m.path === "direct");
      const probes = (p: string) =>
        (ip.probes as Any[])
          .filter((r) => r.path === p)
          .map((r) => (r.error ? `${num(r.offeredMbps)} (error)` : `${num(r.offeredMbps)} (${num(r.lossPct, 3)} %)`))
          .join(", ");
      out.push(
        `Highest offered rate with loss under ${s.lossThresholdPct} %: a bisection between the best passing and the first failing rate above, one run per probe, paths in alternation (a single run per probe: treat the result as ±1 step):`,
        "",
        table(
          ["path", "max rate Mbit/s", "datagrams/s (rate ÷ 9,600 bit)", "datagrams/s counted by the receiver", "loss % at that rate", "first rate that lost more", "max rate × direct", "probes Mbit/s (loss)"],
          max.map((m) => [
            LABEL[m.path] ?? m.path,
            m.maxRateMbps === null ? "none" : m.senderLimited ? `≥ ${num(m.achievedMbps)} (iperf3's sender limit at -b ${num(m.maxRateMbps)}M)` : num(m.achievedMbps ?? m.maxRateMbps),
            num(m.datagramsPerSecondNominal),
            num(m.datagramsPerSecond),
            num(m.lossPct, 3),
            m.firstFailingMbps === null ? "none found" : num(m.firstFailingMbps),
            ratio(m.achievedMbps ?? m.maxRateMbps, d?.achievedMbps ?? d?.maxRateMbps),
            probes(m.path) || "–",
          ]),
        ),
        "",
      );
    }
  }
  const ping = s.ping;
  if (ping) {
    const rows: Any[] = ping.rows;
    const d = rows.find((r) => r.path === "direct");
    out.push(
      `UDP ping-pong (\`bench/loadgen.ts udplatency\`: one ${ping.size}-byte datagram in flight on a connected Bun socket, ${num(ping.roundTrips)} round trips after ${num(ping.warmup)} warm-up, a datagram unanswered after ${ping.lossTimeoutMs} ms counts as lost; \`bench/echo.ts\` echoes UDP on the same port):`,
      "",
      table(
        ["path", "p50 µs", "p99 µs", "p99.9 µs", "mean µs", "lost", "p50 × direct", "p99 × direct"],
        PATHS.flatMap((p) => rows.filter((r) => r.path === p))
          .map((r) => (r.error ? [LABEL[r.path]!, `error: ${String(r.error).slice(0, 100)}`, "", "", "", "", "", ""] : [LABEL[r.path]!, num(r.us.p50), num(r.us.p99), num(r.us.p999), num(r.us.mean), num(r.lost), ratio(r.us.p50, d?.us?.p50), ratio(r.us.p99, d?.us?.p99)])),
      ),
      "",
    );
  }
  if (skippedOthers.length) out.push(...skippedOthers.map((x) => `- ${x}`), "");
  return out.join("\n");
}

function tls(s: Any): string {
  if (!s) return "";
  const head = "## 6. Cost of TLS (Warren plain vs Warren with `[tls] enabled = true`, same run)";
  if (s.error) return `${head}\n\nNot measured: ${String(s.error).split("\n")[0]}\n`;
  const b = (p: string, n: number) => (s.bulk as Any[]).find((r) => r.path === p && r.streams === n);
  const l = (p: string) => (s.latency as Any[]).find((r) => r.path === p);
  const streams: number[] = s.bulkSkipped ? [] : s.streams;
  const sname = (n: number) => `${n} stream${n > 1 ? "s" : ""}`;
  const head2 = ["path", ...streams.flatMap((n) => [`${sname(n)} Gbit/s`, `${sname(n)} CPU s per GiB (server + client)`]), "latency p50 µs", "p99 µs", "p99.9 µs"];
  const row = (p: string) => [
    p === "warren" ? "**Warren** (plain TCP)" : "**Warren + TLS**",
    ...streams.flatMap((n) => {
      const r = b(p, n);
      return r ? [num(r.gbps, 2), `${num(r.cpuPerGiB, 2)} (${num(r.cpuServer, 1)} + ${num(r.cpuClient, 1)} s for ${num(r.bytes / 2 ** 30, 1)} GiB)`] : ["–", "–"];
    }),
    num(l(p)?.us?.p50),
    num(l(p)?.us?.p99),
    num(l(p)?.us?.p999),
  ];
  const ratios = ["TLS ÷ plain", ...streams.flatMap((n) => [ratio(b("warren-tls", n)?.gbps, b("warren", n)?.gbps), ratio(b("warren-tls", n)?.cpuPerGiB, b("warren", n)?.cpuPerGiB)]), ratio(l("warren-tls")?.us?.p50, l("warren")?.us?.p50), ratio(l("warren-tls")?.us?.p99, l("warren")?.us?.p99), ratio(l("warren-tls")?.us?.p999, l("warren")?.us?.p999)];
  const errs = [...(s.bulkRuns ?? []), ...(s.latencyRuns ?? [])].filter((r: Any) => r.error).map((r: Any) => `- ${PATH_TEXT[r.path] ?? r.path}, round ${r.round + 1}${r.streams ? `, ${sname(r.streams)}` : ", latency"}: ${String(r.error).slice(0, 300)}`);
  return [
    head,
    "",
    `Two Warren instances forward the same iperf3 server and echo app; the TLS one has \`[tls] enabled = true\` in server.toml (a self-signed certificate generated in dataDir; the harness reads the SHA-256 fingerprint the server prints at start) and \`[tls] enabled = true\`, \`serverFingerprint = …\` in client.toml, so the control and every work connection between server and client are TLS. The user's side and the app's side stay plain TCP. ${s.rounds} round${s.rounds > 1 ? "s" : ""} of: iperf3 ${streams.map(sname).join(" and ")} for ${s.seconds} s, then ${num(s.latencyRoundTrips)} 64-byte round trips (10 % more as warm-up), plain and TLS in alternation (order swapped each round). Gbit/s and CPU s per GiB are totals over the rounds; latency quantiles are the mean of the rounds'. CPU: the server and client processes (GiB = 2^30 bytes).`,
    "",
    table(head2, [row("warren"), row("warren-tls"), ratios]),
    ...(s.bulkSkipped ? ["", `Bulk not measured: ${s.bulkSkipped}`] : []),
    ...(errs.length ? ["", "Errors:", "", ...errs] : []),
    "",
  ].join("\n");
}

function control(s: Any): string {
  if (!s) return "";
  if (s.error) return `## 7. Control plane\n\nNot measured: ${String(s.error).split("\n")[0]}\n`;
  const t = table(
    ["metric", "value"],
    [
      ["groups × apps (from server.toml, ports chosen from allowPorts 20000-29999)", `${num(s.groups)} × ${num(s.appsPerGroup)} = ${num(s.groups * s.appsPerGroup)} public ports`],
      ["server start until the API answers (registry sync of every group)", `${num(s.serverReadyMs / 1000, 2)} s`],
      ["all clients online (driver sees LoginOk for every group)", s.allOnlineMs === null ? `not all: ${num(s.driverOnline)} online` : `${num(s.allOnlineMs / 1000, 2)} s`],
      ["all groups and apps online in GET /api/groups", s.apiAllOnlineMs === null ? `not all: ${num(s.apiOnline)}` : `${num(s.apiAllOnlineMs / 1000, 2)} s`],
      ["server RSS, registered but offline", `${mib(s.rssRegisteredBytes)} MiB`],
      ["server RSS, all online (pools filled)", `${mib(s.rssOnlineBytes)} MiB`],
      ["server CPU while all online and idle (heartbeats)", `${num(s.idleCpuPct, 1)} %`],
      [`GET /api/groups (${num(s.apiGroups.bytes / 1024)} KiB), ${s.apiGroups.samples} sequential requests`, `p50 ${num(s.apiGroups.p50Ms, 1)} ms, p99 ${num(s.apiGroups.p99Ms, 1)} ms`],
      ["handshakes refused as overload (MAX_PENDING_HANDSHAKES)", num(s.refusedHandshakes)],
    ],
  );
  return [
    "## 7. Control plane (Warren only)",
    "",
    "One Bun process runs one real `Connector` (lib/client/connector.ts) per group, all started at once (each logs in, declares 5 apps and fills the default pool of 8 work connections).",
    "",
    t,
    "",
  ].join("\n");
}

/** The results of bench/http.ts, when it has been run (bench/results/http.json). */
export function loadHttpResults(file = join(import.meta.dir, "results", "http.json")): Any | undefined {
  return existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : undefined;
}

const HTTP_PATHS = ["direct", "warren", "nginx", "frp"] as const;
const HTTP_LABEL: Record<string, string> = { direct: "direct", warren: "**Warren** vhost", nginx: "nginx reverse proxy", frp: "frp vhost" };

/** Section 8: the HTTP virtual-host benchmark (bench/http.ts). */
export function renderHttp(h: Any): string {
  const head = "## 8. HTTP virtual hosts";
  if (!h) return "";
  const m = h.machine ?? {};
  const plan = h.plan ?? {};
  const rowsOf = (k: string): Any[] => h[k] ?? [];
  const get = (k: string, p: string) => rowsOf(k).find((r) => r.path === p);
  const present = HTTP_PATHS.filter((p) => ["keepalive", "close", "big"].some((k) => get(k, p)));
  const eachRps = (k: string, p: string) => {
    const rs = (h.runs ?? []).filter((r: Any) => r.path === p && r.mode === k && !r.error);
    return rs.length > 1 ? ` (${rs.map((r: Any) => num(r.rps)).join(", ")})` : "";
  };
  const errCell = (r: Any) => `error: ${String(r.error).split("\n")[0]!.slice(0, 120)}`;
  const small = (k: string) =>
    table(
      ["path", "requests/s (each round)", "× direct", "p50 ms", "p99 ms", "non-2xx / socket errors", "proxy CPU s per 10k requests (server + client)", "origin CPU s per 10k"],
      present.map((p) => {
        const r = get(k, p);
        if (!r) return [HTTP_LABEL[p]!, "–", "", "", "", "", "", ""];
        if (r.error) return [HTTP_LABEL[p]!, errCell(r), "", "", "", "", "", ""];
        const errs = (r.connectErrors ?? 0) + (r.readErrors ?? 0) + (r.writeErrors ?? 0) + (r.timeouts ?? 0);
        // nginx is one process tree (no client side): its total alone.
        const cpu = typeof r.cpuPer10k !== "number" ? "–" : p === "nginx" ? num(r.cpuPer10k, 2) : `${num(r.cpuPer10k, 2)} (${num((r.cpuServer / r.requests) * 1e4, 2)} + ${num((r.cpuClient / r.requests) * 1e4, 2)})`;
        return [HTTP_LABEL[p]!, num(r.rps) + eachRps(k, p), ratio(r.rps, get(k, "direct")?.rps), num(r.p50, 2), num(r.p99, 2), `${num(r.non2xx)} / ${num(errs)}`, cpu, num(r.originCpuPer10k, 2)];
      }),
    );
  const big = table(
    ["path", "MiB/s", "seconds", "bytes received", "proxy CPU s per GiB (server + client)", "peak memory MiB (server / client)"],
    present.map((p) => {
      const r = get("big", p);
      if (!r) return [HTTP_LABEL[p]!, "–", "", "", "", ""];
      if (r.error) return [HTTP_LABEL[p]!, errCell(r), "", "", "", ""];
      const cpu = typeof r.cpuPerGiB !== "number" ? "–" : p === "nginx" ? num(r.cpuPerGiB, 2) : `${num(r.cpuPerGiB, 2)} (${num(r.cpuServer, 2)} + ${num(r.cpuClient, 2)} s)`;
      return [HTTP_LABEL[p]!, num(r.mibPerSecond), num(r.seconds, 2), num(r.bytes), cpu, r.peakRssServer == null ? "–" : `${mib(r.peakRssServer)} / ${r.peakRssClient == null ? "–" : mib(r.peakRssClient)}`];
    }),
  );
  const vsPaths = ["nginx", "frp"].filter((p) => present.includes(p as any));
  const metrics: [string, (p: string) => unknown][] = [
    ["keep-alive requests/s (higher is better)", (p) => get("keepalive", p)?.rps],
    ["keep-alive p99 (lower is better)", (p) => get("keepalive", p)?.p99],
    ["keep-alive CPU per request (lower is better)", (p) => get("keepalive", p)?.cpuPer10k],
    ["new connection requests/s (higher is better)", (p) => get("close", p)?.rps],
    ["new connection p99 (lower is better)", (p) => get("close", p)?.p99],
    ["new connection CPU per request (lower is better)", (p) => get("close", p)?.cpuPer10k],
    ["1 GiB download MiB/s (higher is better)", (p) => get("big", p)?.mibPerSecond],
    ["1 GiB download CPU per GiB (lower is better)", (p) => get("big", p)?.cpuPerGiB],
  ];
  const ok = (k: string, p: string) => !!get(k, p) && !get(k, p)!.error;
  const vs =
    vsPaths.length && ["keepalive", "close", "big"].some((k) => ok(k, "warren"))
      ? table(["Warren ÷", ...vsPaths.map((p) => HTTP_LABEL[p]!)], metrics.map(([name, f]) => [name, ...vsPaths.map((p) => ratio(f("warren"), f(p)))]))
      : "";
  const notes = [
    ...Object.entries(h.failed ?? {}).map(([p, why]) => `- ${HTTP_LABEL[p] ?? p} could not start: ${String(why).split("\n").slice(0, 3).join(" / ").slice(0, 400)}`),
    ...Object.entries(h.skipped ?? {}).map(([p, why]) => `- ${HTTP_LABEL[p] ?? p} skipped: ${why}`),
    ...(present.includes("frp")
      ? ["- frp with its defaults: frps's reverse proxy keeps at most 5 idle connections per host to frpc (`MaxIdleConnsPerHost: 5` in frp's pkg/util/vhost/http.go), so at c=50 most requests open a new work stream and frpc a new connection to the app (hence its higher origin CPU); under this load frpc also logs many `work connection pool is full, discarding` errors."]
      : []),
    ...["keepalive", "close", "big"].flatMap((k) => rowsOf(k).filter((r) => r.failedRuns?.length).map((r) => `- ${HTTP_LABEL[r.path] ?? r.path}, ${k}: ${r.failedRuns.length} of ${r.runs} runs failed (${String(r.failedRuns[0]).slice(0, 200)})`)),
  ];
  const frpVer = m.frp ? `frp ${m.frp}${m.frpCommit ? ` (commit ${String(m.frpCommit).slice(0, 12)})` : ""}` : "frp –";
  return [
    `${head} (wrk -t2 -c${plan.connections}, ${plan.seconds} s per run, ${plan.rounds} round${plan.rounds > 1 ? "s" : ""}${plan.bigBytes ? "; one 1 GiB download per round" : ""})`,
    "",
    `Generated by \`${h.command}\` (${num(h.seconds)} s) on ${h.date}; raw numbers in \`bench/results/http.json\`. Tools: wrk ${m.wrk ?? "–"}, nginx ${m.nginx ?? "–"}, curl ${m.curl ?? "–"}, ${frpVer}, Bun ${m.bun ?? "–"}.${typeof h.loadBefore === "number" && h.loadBefore > (m.cores ?? 2) / 2 ? ` **The machine was busy when the run began (load average ${h.loadBefore.toFixed(1)}).**` : ""}`,
    "",
    `The app is Debian's nginx (its own config in a temp dir, one worker, access log off) serving a ${num(plan.smallBytes)}-byte \`GET /small\` and a 1 GiB sparse file as \`GET /big\`. Every request carries \`Host: ${plan.host}\`. Paths: **direct** (wrk to the app); **Warren** (\`server.ts\` with \`vhostHTTPPort\`, \`subdomainHost = "bench.test"\` and an app \`type = "http"\`, \`subdomain = "web"\`; \`client.ts\` pointing the app at the origin); **nginx** as a reverse proxy (a second nginx, \`worker_processes auto\`, a \`server_name\` vhost beside a 404 default server, \`proxy_pass\` to an upstream with \`keepalive 64\`, \`proxy_http_version 1.1\`, \`Connection ""\`, X-Forwarded-For/Proto set, \`proxy_max_temp_file_size 0\`, keepalive_requests raised to 100,000 on both sides, access log off); **frp** (\`frps\` with \`vhostHTTPPort\`, \`subdomainHost = "bench.test"\`, token auth, default transport with tcpMux; \`frpc\` with a \`type = "http"\`, \`subdomain = "web"\` proxy; built with \`CGO_ENABLED=0 go build -tags frps,noweb\` / \`frpc,noweb\`).`,
    "",
    `Each round runs every path in a rotating order: keep-alive GETs, then GETs with a new connection each, then the download; rows show the median of the rounds (requests/s of each round in brackets). Before the first round each path got ${plan.warmupSeconds} s of unmeasured keep-alive load (JIT warm-up). "New connection per request" is wrk with \`-H 'Connection: close'\`: the entry closes after each response and wrk connects again, so requests/s includes connection setup, but wrk's latency clock starts when the request is written, after the TCP connect to the entry port (the proxy's own upstream setup is inside it). CPU: utime + stime of the proxy processes' trees (/proc/PID/stat, 10 ms ticks) over the run, per 10,000 completed requests; the origin's own CPU per 10k is shown too (it rises when a proxy does not reuse upstream connections). Everything shares the 2 cores with wrk and the origin.`,
    "",
    "Small GET, keep-alive:",
    "",
    small("keepalive"),
    "",
    "Small GET, new connection per request:",
    "",
    small("close"),
    "",
    ...(plan.bigBytes ? ["1 GiB download (curl to /dev/null; bytes counted; memory: peak RSS, PSS summed for nginx's worker tree, sampled every 250 ms):", "", big, ""] : []),
    ...(vs ? [vs, ""] : []),
    ...(notes.length ? [...notes, ""] : []),
  ].join("\n");
}

/** Where Warren is worse than the bare Bun chain by more than 10 %. */
function shortfalls(r: Any): string[] {
  const out: string[] = [];
  const sc = r.scenarios ?? {};
  const check = (what: string, w: unknown, b: unknown, better: "higher" | "lower") => {
    if (typeof w !== "number" || typeof b !== "number" || !b) return;
    const x = w / b;
    if (better === "higher" && x < 0.9) out.push(`${what}: ${(x * 100).toFixed(0)} % of the bare Bun chain (${(100 - x * 100).toFixed(0)} % lower)`);
    if (better === "lower" && x > 1.1) out.push(`${what}: ${x.toFixed(2)}× the bare Bun chain`);
  };
  for (const row of sc.bulk?.rows ?? []) {
    if (row.path !== "warren") continue;
    const b = sc.bulk.rows.find((x: Any) => x.path === "bun-chain" && x.streams === row.streams && x.reverse === row.reverse);
    const name = `bulk ${row.streams} stream${row.streams > 1 ? "s" : ""}${row.reverse ? " -R" : ""}`;
    check(`${name} throughput`, row.gbps, b?.gbps, "higher");
    check(`${name} CPU per GB`, row.cpuPerGB, b?.cpuPerGB, "lower");
  }
  const lw = sc.latency?.rows?.find((x: Any) => x.path === "warren");
  const lb = sc.latency?.rows?.find((x: Any) => x.path === "bun-chain");
  for (const q of ["p50", "p99", "p999"]) check(`latency ${q.replace("p999", "p99.9")}`, lw?.us?.[q], lb?.us?.[q], "lower");
  for (const row of sc.setup?.rows ?? []) {
    if (row.path !== "warren") continue;
    const b = sc.setup.rows.find((x: Any) => x.path === "bun-chain" && x.concurrency === row.concurrency);
    check(`setup c=${row.concurrency} connections/s`, row.perSecond, b?.perSecond, "higher");
    check(`setup c=${row.concurrency} first byte p50`, row.ttfbUs?.p50, b?.ttfbUs?.p50, "lower");
    check(`setup c=${row.concurrency} first byte p99`, row.ttfbUs?.p99, b?.ttfbUs?.p99, "lower");
  }
  for (const row of sc.many?.rows ?? []) {
    if (row.path !== "warren" || row.error) continue;
    const b = sc.many.rows.find((x: Any) => x.path === "bun-chain" && x.count === row.count);
    check(`${num(row.count)} connections: memory held (server + client)`, row.serverBytes + row.clientBytes, b ? b.serverBytes + b.clientBytes : undefined, "lower");
    check(`${num(row.count)} connections: bytes per connection`, row.bytesPerConn, b?.bytesPerConn, "lower");
  }
  return out;
}

/** How Warren's and the bare chain's rows of a scenario were taken: one run each, or medians of `rounds`. */
const runsOf = (rounds: number | undefined) => ((rounds ?? 1) > 1 ? `medians of ${rounds} runs of Warren and of the bare Bun chain` : "one run each");

/** The "make it fast" targets of the benchmark issue, each with this run's figure and whether it is met. */
function targets(r: Any): string {
  const sc = r.scenarios ?? {};
  const rows: string[][] = [];
  const add = (what: string, goal: string, value: number | undefined, ok: (v: number) => boolean, show: (v: number) => string) =>
    rows.push([what, goal, value === undefined || !Number.isFinite(value) ? "–" : show(value), value === undefined || !Number.isFinite(value) ? "not measured" : ok(value) ? "met" : "**missed**"]);
  const pct = (v: number) => `${(v * 100).toFixed(0)} %`;
  const times = (v: number) => `${v.toFixed(2)}×`;
  for (const cfg of sc.bulk?.rows?.filter((x: Any) => x.path === "warren") ?? []) {
    const name = `bulk ${cfg.streams} stream${cfg.streams > 1 ? "s" : ""}${cfg.reverse ? " -R" : ""}`;
    const of = (p: string) => sc.bulk.rows.find((x: Any) => x.path === p && x.streams === cfg.streams && x.reverse === cfg.reverse);
    add(`${name}: throughput ÷ bare Bun chain`, "≥ 95 %", cfg.gbps / of("bun-chain")?.gbps, (v) => v >= 0.95, pct);
    add(`${name}: throughput ÷ socat chain`, "≥ 100 %", cfg.gbps / of("socat")?.gbps, (v) => v >= 1, pct);
    add(`${name}: throughput ÷ ssh -R`, "≥ 2.5×", cfg.gbps / of("ssh")?.gbps, (v) => v >= 2.5, times);
    add(`${name}: CPU per GB ÷ bare Bun chain`, "≤ 1.10×", cfg.cpuPerGB / of("bun-chain")?.cpuPerGB, (v) => v <= 1.1, times);
  }
  const lw = sc.latency?.rows?.find((x: Any) => x.path === "warren");
  const lb = sc.latency?.rows?.find((x: Any) => x.path === "bun-chain");
  for (const q of ["p50", "p99"]) add(`latency ${q} ÷ bare Bun chain`, "≤ 1.10×", lw?.us?.[q] / lb?.us?.[q], (v) => v <= 1.1, times);
  for (const row of sc.setup?.rows?.filter((x: Any) => x.path === "warren") ?? []) {
    const b = sc.setup.rows.find((x: Any) => x.path === "bun-chain" && x.concurrency === row.concurrency);
    for (const q of ["p50", "p99"]) add(`setup c=${row.concurrency}: first reply byte ${q} ÷ bare Bun chain`, "≤ 1.20×", row.ttfbUs?.[q] / b?.ttfbUs?.[q], (v) => v <= 1.2, times);
  }
  const held = (sc.many?.rows ?? []).filter((x: Any) => x.path === "warren" && !x.error).sort((a: Any, b: Any) => b.count - a.count)[0];
  if (held) {
    const kib = (idle: number, full: number) => (full - idle) / held.count / 1024;
    add(`RSS per held connection at ${num(held.count)}: server`, "≤ 5 KiB", kib(held.serverBytesIdle, held.serverBytes), (v) => v <= 5, (v) => `${v.toFixed(1)} KiB`);
    add(`RSS per held connection at ${num(held.count)}: client`, "≤ 5 KiB", kib(held.clientBytesIdle, held.clientBytes), (v) => v <= 5, (v) => `${v.toFixed(1)} KiB`);
  }
  if (!rows.length) return "";
  return [
    "## Targets of the benchmark issue, in this run",
    "",
    `Bulk: Warren and the bare Bun chain in alternation, ${sc.bulk?.pairRuns ?? 2} runs each per configuration (section 1); a single-stream ratio still moves by a few per cent from run to run on this shared 2-core machine. Latency: ${runsOf(sc.latency?.rounds)}. Connection setup: ${runsOf(sc.setup?.rounds)} (see section 3 and the last section).`,
    "",
    table(["target", "goal", "this run", ""], rows),
    "",
  ].join("\n");
}

/** `http`: the results of bench/http.ts, rendered as section 8 when given. */
export { loadPeerResults } from "./peers-report.ts";

/** BENCHMARKS.md: the peer comparison first (when `peers` is given), then the sections of the full run `r`. */
export function renderMarkdown(r: Any, http?: Any, peers?: Any): string {
  const m = r.machine ?? {};
  const sc = r.scenarios ?? {};
  const short = shortfalls(r);
  const lines = [
    "# Warren benchmarks",
    "",
    "Generated by `bench/run.ts`; do not edit by hand (re-run the command below).",
    "",
    renderPeers(peers),
    ...(peers?.scenarios ? ["## The full benchmark", ""] : []),
    table(
      ["", ""],
      [
        ["command", `\`${r.command}\` (mode ${r.mode}, ${num(r.seconds)} s)`],
        ["date", r.date],
        ...(r.updates ?? []).map((u: Any) => [`updated: ${u.scenarios.join(", ")}`, `\`${u.command}\` (${num(u.seconds)} s), ${u.date}`]),
        ["machine", `${m.cpu}, ${m.cores} cores, ${num(m.memoryGiB, 1)} GiB, Linux ${m.kernel}`],
        ["Bun", m.bun],
        ["tools", `iperf3 ${m.iperf3 ?? "–"}, socat ${m.socat ?? "–"}, ${m.openssh ?? "OpenSSH –"}${r.ssh?.cipher ? ` (cipher ${r.ssh.cipher})` : ""}`],
        ["open files per process", `${num(m.nofile)} (hard limit)`],
      ],
    ),
    "",
    "Everything runs on loopback on the same 2-core machine: the load generator, the target app and both tunnel processes compete for the two cores, so absolute numbers are far below what separate hosts would show; the ratios are the point. Other work on the machine adds noise; paths are measured in alternation (rotating order) to spread it.",
    "",
    "## Paths",
    "",
    "- **direct**: load generator straight to the target app.",
    "- **Warren**: `server.ts` and `client.ts` as separate processes, started from temp config files (controlPort/apiPort on free loopback ports, dataDir in a temp dir, a config-defined group whose apps point at the target); traffic enters at the app's public port.",
    "- **bare Bun chain**: two minimal Bun relays in series (`bench/relay.ts`: `Bun.listen`/`Bun.connect`, backpressure with pause/resume, half-close, nothing else).",
    "- **socat chain**: two `socat -b 131072 TCP-LISTEN:…,fork,reuseaddr,backlog=4096 TCP:…` in series (backlog raised from socat's default 5 so that 50 concurrent connects are not dropped).",
    "- **ssh -R**: `sshd -D -e -f` on a loopback port with a temp sshd_config and throwaway keys; `ssh -N -R` from the \"private\" side; default cipher.",
    "- **Warren + TLS** (section 6 only): Warren as above with `[tls]` enabled on both sides (self-signed certificate, pinned fingerprint).",
    "",
    "Load: iperf3 for bulk and UDP; `bench/loadgen.ts` (Bun, its own process) for latency, setup, held connections and UDP ping-pong; `bench/echo.ts` (Bun) as the target app. Run a subset with `npm run bench -- --scenarios udp,tls` (in full mode it replaces just those sections of the last full results and re-renders this file).",
    "",
  ];
  // Only the load before the run tells of other work: during it, this run's own processes load the machine.
  if (typeof r.loadBefore === "number" && r.loadBefore > (m.cores ?? 2) / 2)
    lines.push(
      `> **The machine was busy with other work when the run began (1-min load average ${r.loadBefore.toFixed(1)} on ${m.cores ?? 2} cores).** Figures are depressed and noisier than on a quiet machine; compare paths within a table rather than across runs.`,
      "",
    );
  lines.push(targets(r));
  if (short.length) lines.push("## Where Warren falls short of the bare Bun chain (more than 10 %)", "", ...short.map((s) => `- ${s}`), "");
  lines.push(bulk(sc.bulk), latency(sc.latency), setup(sc.setup), many(sc.many));
  lines.push(udp(sc.udp), tls(sc.tls), control(sc.control));
  if (http) lines.push(renderHttp(http));
  const notes: string[] = [...(r.notes ?? [])];
  for (const [p, why] of Object.entries(r.skipped ?? {})) notes.push(`${PLAIN[p] ?? p} skipped: ${why}`);
  if (notes.length) lines.push("## Notes", "", ...notes.map((n) => `- ${n}`), "");
  if (existsSync(NOTES_FILE)) lines.push(readFileSync(NOTES_FILE, "utf8").trim(), "");
  // Hand-written sections of the platform issues, appended as they are (a file's own "# " title becomes a "## " section).
  for (const file of [DASHBOARD_FILE, join(import.meta.dir, "inspect-results.md"), join(import.meta.dir, "cluster-results.md")]) {
    if (!existsSync(file)) continue;
    let text = readFileSync(file, "utf8").trim();
    if (text.startsWith("# ")) text = text.replace(/^(#+) /gm, "#$1 ");
    lines.push(text, "");
  }
  lines.push(
    "## Method",
    "",
    "- CPU: utime + stime + cutime + cstime of every process in each tunnel's process tree, read from `/proc/PID/stat` before and after a run.",
    "- Memory: `VmRSS` from `/proc/PID/status` (PSS from `smaps_rollup` summed over forked trees).",
    "- Every child runs in its own session under `bash -c 'ulimit -n …; exec …'` and is stopped (SIGTERM, then SIGKILL to the group and every descendant) when its scenario ends; a watchdog ends the whole run if it overruns.",
    "- Raw numbers: `bench/results/latest.json`.",
    "",
  );
  return lines.filter((l) => l !== undefined).join("\n");
}
