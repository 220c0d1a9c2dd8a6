/**
 * Process weight (issue 21): resident memory of the Warren server and client
 * processes, idle and 5 s after load, plain and with [tls] on the control port.
 *
 *   flock /tmp/warren-bench.lock bun bench/memory.ts [--rounds 3] [--no-tls] [--bun-flag=--smol] [CHECKOUT...]
 *
 * Each checkout (default: this one) runs its own server.ts and client.ts in
 * front of one echo app. A round starts a fresh pair (Bun itself, no npx
 * parent to count), waits for the client to print its app's public address
 * (nothing asks the server's API, so an API loaded on demand stays unloaded,
 * as on a server nobody watches), waits SETTLE_MS and reads /proc/PID/status
 * of each, then opens LOAD_CONNECTIONS connections at once, echoes LOAD_BYTES through
 * them in all, closes them, waits SETTLE_MS and reads again. Prints medians of
 * VmRSS with its anonymous and file-backed parts (file: pages of the Bun
 * executable, shared between processes) in MiB.
 */
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { BENCH, BUN, freePort, removeTempDirs, spawnChild, stopChild, tail, tempDir, until, waitPort, stopAll } from "./common.ts";

const { values: flags, positionals } = parseArgs({
  args: Bun.argv.slice(2),
  options: { rounds: { type: "string" }, "no-tls": { type: "boolean" }, "bun-flag": { type: "string", multiple: true } },
  allowPositionals: true,
  strict: true,
});
const ROUNDS = Math.max(1, Math.min(9, Number(flags.rounds ?? 3)));
/** Quiet time before each reading: what "idle" means in issue 21. */
const SETTLE_MS = 5_000;
/** The load of issue 21's figure: 300 connections at once, 64 MiB echoed through one app. */
const LOAD_CONNECTIONS = 300;
const LOAD_BYTES = 64 << 20;
const CHUNK_BYTES = 64 << 10;
/** A load that does not finish in this time fails the run rather than hanging it. */
const LOAD_TIMEOUT_MS = 60_000;
/** Flags given to Bun before the script, for both processes (--smol). */
const BUN_FLAGS = flags["bun-flag"] ?? [];

interface Reading {
  rss: number;
  anon: number;
  file: number;
}

/** VmRSS, RssAnon and RssFile of one process, in MiB. */
function readStatus(pid: number): Reading {
  const s = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(s)?.[1] ?? NaN) / 1024;
  return { rss: kb("VmRSS"), anon: kb("RssAnon"), file: kb("RssFile") };
}

/** Opens `LOAD_CONNECTIONS` connections to `port` at once and echoes LOAD_BYTES through them, each its share. */
async function load(port: number): Promise<void> {
  const share = Math.ceil(LOAD_BYTES / LOAD_CONNECTIONS);
  const chunk = new Uint8Array(CHUNK_BYTES).fill(0x61);
  const one = () =>
    new Promise<void>((done, fail) => {
      let sent = 0;
      let got = 0;
      const pump = (s: { write(b: Uint8Array): number }) => {
        for (let i = 0; sent < share && i < 64; i++) {
          const n = s.write(chunk.subarray(0, Math.min(CHUNK_BYTES, share - sent)));
          if (n <= 0) return;
          sent += n;
        }
      };
      Bun.connect({
        hostname: "127.0.0.1",
        port,
        socket: {
          open: pump,
          drain: pump,
          data(s, d) {
            got += d.length;
            if (got >= share) {
              s.end();
              done();
            }
          },
          close: () => (got < share ? fail(new Error(`a load connection closed after ${got} of ${share} bytes`)) : undefined),
          connectError: (_s, err) => fail(err),
        },
      }).catch(fail);
    });
  let timer: Timer | undefined;
  const timeout = new Promise<never>((_, fail) => (timer = setTimeout(() => fail(new Error(`the load did not finish within ${LOAD_TIMEOUT_MS} ms`)), LOAD_TIMEOUT_MS)));
  try {
    await Promise.race([Promise.all(Array.from({ length: LOAD_CONNECTIONS }, one)), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Starts `checkout`'s server and client in front of the echo app; resolves once the app is reachable. */
async function startPair(checkout: string, tls: boolean, echoPort: number) {
  const d = tempDir("warren-memory-pair-");
  const [controlPort, apiPort, publicPort] = [await freePort(), await freePort(), await freePort()];
  const token = randomBytes(18).toString("hex");
  const serverToml = [`bindAddr = "127.0.0.1"`, `controlPort = ${controlPort}`, `apiPort = ${apiPort}`, `adminToken = "${randomBytes(18).toString("hex")}"`, `dataDir = "${join(d, "data")}"`];
  if (tls) serverToml.push(`[tls]`, `enabled = true`);
  serverToml.push(`[[groups]]`, `name = "bench"`, `token = "${token}"`, `[[groups.apps]]`, `name = "echo"`, `remotePort = ${publicPort}`);
  writeFileSync(join(d, "server.toml"), serverToml.join("\n") + "\n");
  const serverLog = join(d, "server.log");
  const server = spawnChild("warren-server", [BUN, ...BUN_FLAGS, join(checkout, "server.ts"), "--config", join(d, "server.toml")], { logFile: serverLog });
  const children = [server];
  const stop = () => Promise.all(children.map((c) => stopChild(c))).then(() => {});
  try {
    let fingerprint = "";
    if (tls) await until(() => !!(fingerprint = /SHA-256 fingerprint ([0-9a-f]{64})/.exec(readFileSync(serverLog, "utf8"))?.[1] ?? ""), 15_000, "the server's TLS fingerprint line");
    else await waitPort(controlPort, 15_000, "the warren server's control port");
    const clientToml = [`serverAddr = "127.0.0.1"`, `serverPort = ${controlPort}`, `group = "bench"`, `token = "${token}"`];
    if (tls) clientToml.push(`[tls]`, `enabled = true`, `serverFingerprint = "${fingerprint}"`);
    clientToml.push(`[[apps]]`, `name = "echo"`, `localAddr = "127.0.0.1:${echoPort}"`);
    writeFileSync(join(d, "client.toml"), clientToml.join("\n") + "\n");
    const clientLog = join(d, "client.log");
    children.push(spawnChild("warren-client", [BUN, ...BUN_FLAGS, join(checkout, "client.ts"), "--config", join(d, "client.toml")], { logFile: clientLog }));
    await until(() => readFileSync(clientLog, "utf8").includes("is reachable at"), 15_000, "the client to announce its app");
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\nserver log:\n${tail(serverLog)}`);
  }
  return { server: server.pid, client: children[1]!.pid, entry: publicPort, stop };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

type Row = { checkout: string; path: string; moment: string; side: string; readings: Reading[] };
const rows = new Map<string, Row>();
function record(checkout: string, path: string, moment: string, side: string, r: Reading): void {
  const key = [checkout, path, moment, side].join("|");
  let row = rows.get(key);
  if (!row) rows.set(key, (row = { checkout, path, moment, side, readings: [] }));
  row.readings.push(r);
}

const checkouts = positionals.length ? positionals : ["."];
const paths = flags["no-tls"] ? (["warren"] as const) : (["warren", "warren-tls"] as const);
const dir = tempDir("warren-memory-");
const echoPort = await freePort();
try {
  spawnChild("echo", [BUN, join(BENCH, "echo.ts"), String(echoPort)], { logFile: join(dir, "echo.log") });
  await waitPort(echoPort, 10_000, "echo app");
  for (let round = 0; round < ROUNDS; round++) {
    for (const checkout of checkouts) {
      for (const path of paths) {
        const t = await startPair(resolve(checkout), path === "warren-tls", echoPort);
        try {
          const { server, client } = t;
          await Bun.sleep(SETTLE_MS);
          record(checkout, path, "idle", "server", readStatus(server));
          record(checkout, path, "idle", "client", readStatus(client));
          await load(t.entry);
          await Bun.sleep(SETTLE_MS);
          record(checkout, path, "after load", "server", readStatus(server));
          record(checkout, path, "after load", "client", readStatus(client));
        } finally {
          await t.stop();
        }
      }
    }
  }
} finally {
  await stopAll();
  removeTempDirs();
}

const f = (x: number) => x.toFixed(1).padStart(6);
console.log(`RSS of the bun processes${BUN_FLAGS.length ? ` (bun ${BUN_FLAGS.join(" ")})` : ""}, MiB (anon + file), medians of ${ROUNDS}; load: ${LOAD_CONNECTIONS} connections, ${LOAD_BYTES >> 20} MiB echoed`);
console.log(`${"checkout".padEnd(24)} ${"path".padEnd(11)} ${"moment".padEnd(10)} ${"side".padEnd(6)}    RSS   anon   file   (RSS of each round)`);
for (const r of rows.values()) {
  const m = (k: keyof Reading) => median(r.readings.map((x) => x[k]));
  console.log(`${r.checkout.slice(-24).padEnd(24)} ${r.path.padEnd(11)} ${r.moment.padEnd(10)} ${r.side.padEnd(6)} ${f(m("rss"))} ${f(m("anon"))} ${f(m("file"))}   (${r.readings.map((x) => x.rss.toFixed(1)).join(", ")})`);
}
