/** Shared fixtures of the chaos suite: configs, process probes (CPU, fds, RSS), streams with integrity checks, latency. */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { Proc } from "../procs.ts";

const ROOT = join(import.meta.dir, "..", "..");

/** Admin token of every chaos server. */
export const ADMIN = "admin-token-for-chaos-tests";
/** Group token of every chaos group. */
export const TOKEN = "chaos-token-0123456789abcdef";

/** server.toml for a chaos server; `extra` adds keys, `groups` the [[groups]] tables. */
export function serverToml(dir: string, controlPort: number, groups: string, extra: Record<string, number | string> = {}): string {
  const keys = { heartbeatTimeout: 1.5, handshakeTimeout: 2, userConnTimeout: 3, ...extra };
  return `bindAddr = "127.0.0.1"
controlPort = ${controlPort}
apiPort = 0
adminToken = "${ADMIN}"
dataDir = "${dir}/data"
${Object.entries(keys)
  .map(([k, v]) => `${k} = ${typeof v === "string" ? JSON.stringify(v) : v}`)
  .join("\n")}
${groups}`;
}

/** One [[groups]] table with its apps (ports chosen by the server unless given). */
export function groupToml(name: string, apps: (string | { name: string; remotePort: number })[]): string {
  return `[[groups]]
name = "${name}"
token = "${TOKEN}"
${apps.map((a) => (typeof a === "string" ? `[[groups.apps]]\nname = "${a}"\n` : `[[groups.apps]]\nname = "${a.name}"\nremotePort = ${a.remotePort}\n`)).join("")}`;
}

/** client.toml with short heartbeats. */
export function clientToml(serverPort: number, group: string, apps: Record<string, number>, hb = { interval: 0.25, timeout: 1.5 }): string {
  return `serverAddr = "127.0.0.1"
serverPort = ${serverPort}
group = "${group}"
token = "${TOKEN}"
heartbeatInterval = ${hb.interval}
heartbeatTimeout = ${hb.timeout}
${Object.entries(apps)
  .map(([name, port]) => `[[apps]]\nname = "${name}"\nlocalAddr = "127.0.0.1:${port}"\n`)
  .join("\n")}`;
}

/** Starts server.ts (optionally under `ulimit -n nofile`) and waits until it is ready. */
export async function startServer(dir: string, toml: string, opts: { nofile?: number; name?: string } = {}): Promise<{ proc: Proc; apiPort: number }> {
  const file = join(dir, `${opts.name ?? "server"}.toml`);
  writeFileSync(file, toml);
  const argv = [process.execPath, join(ROOT, "server.ts"), "--config", file];
  const cmd = opts.nofile ? ["bash", "-c", `ulimit -n ${opts.nofile} && exec "$@"`, "bash", ...argv] : argv;
  const child = Bun.spawn(cmd, { cwd: dir, stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, WARREN_LOG: "info" } });
  const proc = new Proc(child);
  const m = await proc.waitFor(/warren server ready .*api=http:\/\/[^:]+:(\d+)/);
  return { proc, apiPort: Number(m[1]) };
}

/** Starts client.ts and waits until it prints every app's public port. */
export async function startClient(dir: string, toml: string, apps: string[], name = "client"): Promise<{ proc: Proc; ports: Record<string, number> }> {
  const file = join(dir, `${name}.toml`);
  writeFileSync(file, toml);
  const child = Bun.spawn([process.execPath, join(ROOT, "client.ts"), "--config", file], {
    cwd: dir,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, WARREN_LOG: "info" },
  });
  const proc = new Proc(child);
  return { proc, ports: await appPorts(proc, apps) };
}

/** Waits for the "reachable at" line of each app, from output line `from` on. */
export async function appPorts(proc: Proc, apps: string[], from = 0, ms = 15_000): Promise<Record<string, number>> {
  const ports: Record<string, number> = {};
  for (const app of apps) ports[app] = Number((await proc.waitFor(new RegExp(`app ${app} \\(tcp\\) is reachable at [^ ]+:(\\d+)`), ms, from))[1]);
  return ports;
}

/** GET an admin API path. */
export async function api<T = unknown>(apiPort: number, path: string, init: RequestInit = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(`http://127.0.0.1:${apiPort}${path}`, { ...init, headers: { authorization: `Bearer ${ADMIN}`, ...(init.headers ?? {}) } });
  return { status: res.status, body: (await res.json().catch(() => null)) as T };
}

/** The API's view of a group. */
export interface GroupView {
  name: string;
  online: boolean;
  clientAddr: string | null;
  apps: { name: string; remotePort: number; online: boolean; connections: number }[];
}

/** Groups the API shows online. */
export async function onlineGroups(apiPort: number): Promise<GroupView[]> {
  const { body } = await api<{ groups: GroupView[] }>(apiPort, "/api/groups");
  return body.groups.filter((g) => g.online);
}

/** Clock ticks per second for /proc/PID/stat (USER_HZ, 100 on Linux). */
const CLK_TCK = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

/** CPU seconds (user + system) a process has used so far. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may hold spaces) start at ") ": utime and stime are fields 14 and 15.
  const f = stat.slice(stat.lastIndexOf(") ") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/** Open file descriptors of a process. */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/**
 * TCP connections whose local port is `port` and that their owner still
 * holds open (ESTABLISHED or CLOSE_WAIT), from /proc/net/tcp: on a server's
 * control port these are its control and work connections.
 */
export function tcpConns(port: number): number {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  let n = 0;
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1]?.endsWith(`:${hex}`) && (f[3] === "01" || f[3] === "08")) n++;
  }
  return n;
}

/** Resident memory of a process in bytes. */
export function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

/** Milliseconds since the epoch of a Warren log line (its ISO timestamp). */
export function lineTime(line: string): number {
  return Date.parse(line.slice(0, 24));
}

/**
 * A deterministic endless byte pattern: a random block of a length that is
 * no power of two, repeated. Any lost, duplicated or reordered chunk shifts
 * the phase, so the SHA-256 of what arrives differs from what was sent.
 */
export class Pattern {
  static readonly BLOCK = 4 * 1024 * 1024 + 7;
  static #cache = new Map<number, Pattern>();
  readonly #block: Uint8Array;
  /** The pattern of `seed`, built once per process. */
  static of(seed: number): Pattern {
    let p = Pattern.#cache.get(seed);
    if (!p) Pattern.#cache.set(seed, (p = new Pattern(seed)));
    return p;
  }
  constructor(seed: number) {
    this.#block = new Uint8Array(Pattern.BLOCK);
    let x = seed >>> 0 || 1;
    for (let i = 0; i < Pattern.BLOCK; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      this.#block[i] = x;
    }
  }
  /** `len` bytes of the pattern starting at stream offset `at` (at most one block). */
  slice(at: number, len: number): Uint8Array {
    const i = at % Pattern.BLOCK;
    if (i + len <= Pattern.BLOCK) return this.#block.subarray(i, i + len);
    const out = new Uint8Array(len);
    out.set(this.#block.subarray(i));
    out.set(this.#block.subarray(0, len - (Pattern.BLOCK - i)), Pattern.BLOCK - i);
    return out;
  }
  /** SHA-256 of the first `total` bytes. */
  hash(total: number, chunk = 1 << 20): string {
    const h = createHash("sha256");
    for (let at = 0; at < total; at += chunk) h.update(this.slice(at, Math.min(chunk, total - at)));
    return h.digest("hex");
  }
}

/** Writes `total` bytes of `pattern` to a socket with backpressure, optionally paced to `rate` bytes/s, then half-closes. */
export function feed(s: net.Socket, pattern: Pattern, total: number, rate = 0, chunk = 64 * 1024): Promise<void> {
  return new Promise((resolve, reject) => {
    let at = 0;
    const t0 = performance.now();
    const pump = () => {
      while (at < total) {
        if (rate) {
          const ahead = at / rate - (performance.now() - t0) / 1000;
          if (ahead > 0.005) return void setTimeout(pump, ahead * 1000);
        }
        const c = pattern.slice(at, Math.min(chunk, total - at));
        at += c.length;
        if (!s.write(c)) return void s.once("drain", pump);
      }
      s.end();
      resolve();
    };
    s.once("error", reject);
    pump();
  });
}

/** Reads a socket to its end, hashing, optionally paced to `rate` bytes/s. */
export function drain(s: net.Socket, rate = 0): Promise<{ received: number; hash: string; error: string | null }> {
  return new Promise((resolve) => {
    const h = createHash("sha256");
    let received = 0;
    let error: string | null = null;
    const t0 = performance.now();
    s.on("data", (d: Buffer) => {
      received += d.length;
      h.update(d);
      if (rate) {
        const ahead = received / rate - (performance.now() - t0) / 1000;
        if (ahead > 0.005) {
          s.pause();
          setTimeout(() => s.resume(), ahead * 1000);
        }
      }
    });
    s.on("error", (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.on("close", () => resolve({ received, hash: h.digest("hex"), error }));
  });
}

/** Connects to a loopback port. */
export function connect(port: number, opts: net.NetConnectOpts = { port }): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ ...opts, port, host: "127.0.0.1", allowHalfOpen: true } as net.NetConnectOpts);
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

/** An echo app that counts its open connections. */
export async function countingEcho(): Promise<{ port: number; open: () => number; close(): void }> {
  let open = 0;
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    open++;
    s.on("error", () => {});
    s.on("close", () => open--);
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as net.AddressInfo).port, open: () => open, close: () => server.close() };
}

/** Echo round trip of `total` pattern bytes through `port`; resolves with counts and whether the hash matched. */
export async function echoCheck(port: number, total: number, seed: number): Promise<{ ok: boolean; received: number; error: string | null; ms: number }> {
  const t0 = performance.now();
  const pattern = Pattern.of(seed);
  let s: net.Socket;
  try {
    s = await connect(port);
  } catch (err) {
    return { ok: false, received: 0, error: (err as NodeJS.ErrnoException).code ?? String(err), ms: performance.now() - t0 };
  }
  const got = drain(s);
  feed(s, pattern, total).catch(() => {});
  const r = await got;
  return { ok: r.received === total && r.hash === pattern.hash(total) && !r.error, received: r.received, error: r.error, ms: performance.now() - t0 };
}

/** Round-trip times (ms) of `n` small messages on one stream through an echo app. */
export async function pingPong(port: number, n: number, size = 64): Promise<number[]> {
  const s = await connect(port);
  s.setNoDelay(true);
  const msg = Buffer.alloc(size, 0x61);
  const times: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await new Promise<void>((resolve, reject) => {
        let got = 0;
        const on = (d: Buffer) => {
          got += d.length;
          if (got >= size) {
            s.off("data", on);
            s.off("error", reject); // one listener per ping would pile up on the socket
            resolve();
          }
        };
        s.on("data", on);
        s.once("error", reject);
        s.write(msg);
      });
      times.push(performance.now() - t0);
    }
  } finally {
    s.destroy();
  }
  return times;
}

/** The p-th percentile (0-100) of `xs`. */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}

/** Waits until `cond` holds, polling every `every` ms (for state that has no event, like the API), failing after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string, every = 25): Promise<number> {
  const t0 = performance.now();
  while (!(await cond())) {
    if (performance.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(every);
  }
  return performance.now() - t0;
}

/** Kills every process still running (afterAll). */
export async function killAll(procs: Proc[]): Promise<void> {
  for (const p of procs) if (p.child.exitCode === null && !p.child.killed) await p.kill("SIGKILL");
}
