/**
 * How many online groups one server holds (issue 21, part 5): G groups of one TCP app
 * each log in from one process (bench/control-driver.ts, real Connectors), against the
 * server of each checkout given, under the file limit given (this machine's 20,000 by
 * default). Measures the time until every group is online, the server's open descriptors
 * (/proc/PID/fd) once its pools have settled, the driver's, and what the server refused.
 *
 *   git worktree add -f /tmp/pool-before <commit>; ln -s $PWD/node_modules /tmp/pool-before/node_modules
 *   flock /tmp/warren-bench.lock bun bench/pool-scale.ts --groups 1000,5000 --rounds 3 /tmp/pool-before .
 *
 * With --burst N, once the pools have settled, N users at once connect to each of the first
 * BURST_GROUPS quiet groups in turn (64 bytes each, echoed): what the first users of a quiet
 * group wait for the first byte back, now that it keeps one warm connection instead of poolSize.
 *
 * Prints one line per run, then medians per checkout and group count.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { BUN, freePort, removeTempDirs, spawnChild, stopAll, stopChild, tempDir, waitPort } from "./common.ts";

const { values: flags, positionals } = parseArgs({
  args: Bun.argv.slice(2),
  options: { groups: { type: "string" }, rounds: { type: "string" }, nofile: { type: "string" }, "deadline-ms": { type: "string" }, burst: { type: "string" }, "settle-ms": { type: "string" } },
  allowPositionals: true,
  strict: true,
});
if (!positionals.length) {
  console.error("usage: bun bench/pool-scale.ts [--groups 1000,5000] [--rounds N] [--nofile 20000] [--deadline-ms 60000] [--burst N] [--settle-ms 1500] CHECKOUT...");
  process.exit(2);
}
const GROUPS = (flags.groups ?? "1000,5000").split(",").map(Number);
const ROUNDS = Math.min(10, Number(flags.rounds ?? 3));
const NOFILE = Number(flags.nofile ?? 20_000);
/** Longest wait for every group to log in; a run that does not make it is reported as partial. */
const DEADLINE_MS = Math.min(120_000, Number(flags["deadline-ms"] ?? 60_000));
/** The server's descriptor count is taken once it has not changed for this long (pools filled), or at SETTLE_MAX_MS. */
const SETTLE_STABLE_MS = Math.min(20_000, Number(flags["settle-ms"] ?? 1500));
const SETTLE_MAX_MS = SETTLE_STABLE_MS + 15_000;
const BURST = Math.min(64, Number(flags.burst ?? 0));
/** Quiet groups that each take one burst. */
const BURST_GROUPS = 20;
/** The first app port: group i's app listens on FIRST_PORT + i. */
const FIRST_PORT = 20_000;

const fds = (pid: number): number => {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Run {
  checkout: string;
  groups: number;
  online: number;
  allOnlineMs: number | null;
  serverFds: number;
  driverFds: number;
  /** Log lines of the server: sockets refused at its file limit, and logins refused over MAX_PENDING_HANDSHAKES (each refusal of a handshake is one line). */
  fdLimitLogs: number;
  handshakeLogs: number;
  /** Online groups holding no idle work connection once settled (from /metrics). */
  coldGroups: number;
  /** Per burst: the slowest of its users' first bytes, ms (with --burst). */
  burstMaxMs: number[];
  /** Every user's first byte in the bursts, ms. */
  burstAllMs: number[];
}

/** Milliseconds until the echo of 64 bytes starts to come back, for one user (Bun.connect: node:net adds milliseconds here). */
function firstByte(port: number): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no first byte within 5 s")), 5000);
    const fail = (e: Error) => (clearTimeout(timer), reject(e));
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open: (s) => void s.write(new Uint8Array(64)),
        data(s) {
          clearTimeout(timer);
          resolve(performance.now() - t0);
          s.end();
        },
        connectError: (_s, e) => fail(e),
        error: (_s, e) => fail(e),
      },
    }).catch(fail);
  });
}

async function once(root: string, groups: number): Promise<Run> {
  const dir = tempDir("warren-pool-scale-");
  const [controlPort, apiPort, echoPort] = [await freePort(), await freePort(), await freePort()];
  const tokenPrefix = "pool-scale-token-";
  const lines = [`bindAddr = "127.0.0.1"`, `controlPort = ${controlPort}`, `apiHost = "127.0.0.1"`, `apiPort = ${apiPort}`, `adminToken = "pool-scale-admin-token-0123"`, `dataDir = "${join(dir, "data")}"`, `allowPorts = "20000-29999"`, `logLevel = "warn"`];
  for (let i = 0; i < groups; i++) lines.push(``, `[[groups]]`, `name = "g${String(i).padStart(5, "0")}"`, `token = "${tokenPrefix}${i}"`, `[[groups.apps]]`, `name = "app0"`, `remotePort = ${FIRST_PORT + i}`);
  writeFileSync(join(dir, "server.toml"), lines.join("\n") + "\n");
  // exec keeps one process: its pid is the server's, for /proc/PID/fd.
  const server = spawnChild("server", ["bash", "-c", `ulimit -n ${NOFILE} && exec "$0" "$@"`, BUN, join(root, "server.ts"), "--config", join(dir, "server.toml")], { logFile: join(dir, "server.log") });
  const echo = Bun.listen({ hostname: "127.0.0.1", port: echoPort, socket: { data(s, d) { s.write(d); } } });
  let driver: ReturnType<typeof spawnChild> | null = null;
  try {
    await waitPort(apiPort, 120_000, "warren server");
    const pid = server.pid; // setsid and both shells exec: the same process
    // Another process on the port just picked would answer for a server that failed to bind.
    await Bun.sleep(300);
    if (fds(pid) < 0) throw new Error(`the server exited at start:\n${readFileSync(join(dir, "server.log"), "utf8").slice(-2000)}`);
    const driverLog = join(dir, "driver.log");
    driver = spawnChild("driver", [BUN, join(root, "bench", "control-driver.ts"), JSON.stringify({ port: controlPort, groups, apps: 1, tokenPrefix, localPort: echoPort, deadlineMs: DEADLINE_MS })], { logFile: driverLog });
    let line: RegExpExecArray | null = null;
    for (const end = performance.now() + DEADLINE_MS + 30_000; !line && performance.now() < end; ) {
      await Bun.sleep(100);
      line = /ONLINE (\{.*\})/.exec(readFileSync(driverLog, "utf8"));
    }
    if (!line) throw new Error(`the driver printed no ONLINE line:\n${readFileSync(driverLog, "utf8").slice(-2000)}`);
    const res = JSON.parse(line[1]!) as { online: number; ms: number; partial: boolean };
    // Pools fill after LoginOk: wait until the server's descriptors stop changing.
    let last = fds(pid);
    let stableSince = performance.now();
    for (const end = performance.now() + SETTLE_MAX_MS; performance.now() < end && performance.now() - stableSince < SETTLE_STABLE_MS; ) {
      await Bun.sleep(250);
      const now = fds(pid);
      if (now !== last) [last, stableSince] = [now, performance.now()];
    }
    const metrics = await (await fetch(`http://127.0.0.1:${apiPort}/metrics`, { headers: { authorization: "Bearer pool-scale-admin-token-0123" } })).text();
    const coldGroups = (metrics.match(/^warren_work_pool_idle\{group="[^"]*"\} 0$/gm) ?? []).length;
    const burstMaxMs: number[] = [];
    const burstAllMs: number[] = [];
    for (let g = 0; BURST > 0 && g < Math.min(BURST_GROUPS, groups); g++) {
      const times = await Promise.all(Array.from({ length: BURST }, () => firstByte(FIRST_PORT + g)));
      burstMaxMs.push(Math.max(...times));
      burstAllMs.push(...times);
    }
    const log = readFileSync(join(dir, "server.log"), "utf8");
    if (res.online < groups) console.error(`server log (${root}, ${groups} groups, ${res.online} online):\n${log.slice(-3000)}\ndriver log:\n${readFileSync(driverLog, "utf8").slice(-1500)}`);
    return { checkout: root, groups, online: res.online, allOnlineMs: res.partial ? null : Math.round(res.ms), serverFds: last, driverFds: fds(driver.pid), fdLimitLogs: (log.match(/refusing new connections/g) ?? []).length, handshakeLogs: (log.match(/too many unfinished handshakes/g) ?? []).length, coldGroups, burstMaxMs, burstAllMs };
  } finally {
    if (driver) await stopChild(driver, 3000);
    await stopChild(server);
    echo.stop(true);
  }
}

const runs: Run[] = [];
try {
  for (let round = 0; round < ROUNDS; round++)
    for (const g of GROUPS)
      for (const p of round % 2 ? [...positionals].reverse() : positionals) {
        const r = await once(resolve(p), g);
        runs.push(r);
        const { burstAllMs: _, burstMaxMs, ...shown } = r;
        console.log(`RUN ${JSON.stringify({ ...shown, burstMaxMs: burstMaxMs.map((t) => Math.round(t * 100) / 100) })}`);
      }
} finally {
  await stopAll();
  removeTempDirs();
}
for (const g of GROUPS)
  for (const p of positionals) {
    const rs = runs.filter((r) => r.groups === g && r.checkout === resolve(p));
    const times = rs.map((r) => r.allOnlineMs);
    const all = rs.flatMap((r) => r.burstAllMs).sort((a, b) => a - b);
    const worst = rs.flatMap((r) => r.burstMaxMs);
    const burst = BURST ? `; bursts of ${BURST} users on a quiet group (${worst.length}): first byte p50 ${median(all).toFixed(2)} ms, slowest of a burst median ${median(worst).toFixed(2)} ms, max ${Math.max(...worst).toFixed(2)} ms` : "";
    console.log(
      `${p} ${g} groups x 1 app (nofile ${NOFILE}, ${rs.length} runs): all online ${times.every((t) => t !== null) ? `${(median(times as number[]) / 1000).toFixed(2)} s` : `NOT in ${DEADLINE_MS / 1000} s (online ${rs.map((r) => r.online).join("/")})`}, server fds median ${median(rs.map((r) => r.serverFds))}, groups without an idle work connection ${rs.map((r) => r.coldGroups).join("/")}, driver fds ${median(rs.map((r) => r.driverFds))}, file-limit / handshake-cap log lines ${rs.map((r) => `${r.fdLimitLogs}/${r.handshakeLogs}`).join(", ")}${burst}`,
    );
  }
