/**
 * Shared plumbing of the benchmark harness: child processes that are always
 * cleaned up, /proc readers (CPU time, RSS, PSS), free loopback ports, waits
 * with deadlines, and percentiles.
 */
import type { Subprocess } from "bun";
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const ROOT = join(import.meta.dir, "..");
export const BENCH = import.meta.dir;
/** The Bun that runs the harness also runs every Bun child. */
export const BUN = process.execPath;
/** File descriptors asked for each child; the hard limit of the container may be lower (then the hard limit is used). */
export const WANT_NOFILE = 65536;
/** Clock ticks per second for /proc/PID/stat (USER_HZ, 100 on Linux). */
const TICKS = 100;

/** Every temp dir made by the harness, removed at exit. */
const dirs: string[] = [];
export function tempDir(prefix = "warren-bench-"): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** A child started by the harness: its own process group, output to a log file. */
export interface Child {
  readonly name: string;
  readonly pid: number;
  readonly proc: Subprocess;
  readonly log: string;
  stopped: boolean;
}

const children = new Set<Child>();

/** The hard limit on open files that children can reach (read once). */
let hardNofile: number | null = null;
export function nofileLimit(): number {
  if (hardNofile === null) {
    const r = Bun.spawnSync(["bash", "-c", "ulimit -Hn"]);
    const s = r.stdout.toString().trim();
    hardNofile = s === "unlimited" ? WANT_NOFILE : Math.min(WANT_NOFILE, Number(s) || 1024);
  }
  return hardNofile;
}

/**
 * Starts `cmd` in a new session (so the whole tree can be signalled), with the
 * open-files limit raised as far as allowed, stdout+stderr to `logFile`.
 */
export function spawnChild(name: string, cmd: string[], opts: { logFile: string; env?: Record<string, string | undefined>; stdin?: "pipe" | "ignore"; cwd?: string }): Child {
  const fd = openSync(opts.logFile, "a");
  const script = `ulimit -n ${WANT_NOFILE} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`;
  const proc = Bun.spawn(["setsid", "bash", "-c", script, "bash", ...cmd], {
    stdin: opts.stdin ?? "ignore",
    stdout: fd,
    stderr: fd,
    cwd: opts.cwd ?? ROOT,
    env: { ...process.env, ...opts.env },
  });
  closeSync(fd);
  const child: Child = { name, pid: proc.pid, proc, log: opts.logFile, stopped: false };
  children.add(child);
  return child;
}

/** Signals a child's process group and every descendant found under it. */
function signalTree(child: Child, sig: NodeJS.Signals): void {
  const pids = [child.pid, ...descendants(child.pid)];
  try {
    process.kill(-child.pid, sig);
  } catch {}
  for (const p of pids) {
    try {
      process.kill(p, sig);
    } catch {}
  }
}

/** Stops a child: SIGTERM, then SIGKILL after `graceMs`. Waits for it to exit. */
export async function stopChild(child: Child, graceMs = 2000): Promise<void> {
  if (child.stopped) return;
  child.stopped = true;
  const tree = [child.pid, ...descendants(child.pid)];
  signalTree(child, "SIGTERM");
  const exited = await Promise.race([child.proc.exited.then(() => true), Bun.sleep(graceMs).then(() => false)]);
  if (!exited) signalTree(child, "SIGKILL");
  await Promise.race([child.proc.exited, Bun.sleep(1000)]);
  // Forked workers (socat, sshd) may outlive the leader for a moment.
  for (const p of tree) {
    try {
      process.kill(p, "SIGKILL");
    } catch {}
  }
  children.delete(child);
}

/** Stops every child still running (in parallel). */
export async function stopAll(): Promise<void> {
  await Promise.all([...children].map((c) => stopChild(c)));
}

/** Last-resort synchronous cleanup: SIGKILL to every child tree, remove temp dirs. */
export function killAllSync(): void {
  for (const c of children) signalTree(c, "SIGKILL");
  children.clear();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** Removes the temp dirs (after the children are gone). */
export function removeTempDirs(): void {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** The number of children still tracked (tests check it is 0 at the end). */
export function liveChildren(): number {
  return children.size;
}

function readStat(pid: number): { ppid: number; ticks: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name may hold spaces: fields start after the last ')'.
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    // f[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17 -> f[11..14]
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) };
  } catch {
    return null;
  }
}

/** Every live descendant of `pid` (walks /proc once). */
export function descendants(pid: number): number[] {
  const kids = new Map<number, number[]>();
  for (const e of readdirSync("/proc")) {
    const p = Number(e);
    if (!Number.isInteger(p) || p <= 0) continue;
    const st = readStat(p);
    if (!st) continue;
    let list = kids.get(st.ppid);
    if (!list) kids.set(st.ppid, (list = []));
    list.push(p);
  }
  const out: number[] = [];
  const stack = [pid];
  for (let guard = 0; stack.length && guard < 1_000_000; guard++) {
    for (const k of kids.get(stack.pop()!) ?? []) {
      out.push(k);
      stack.push(k);
    }
  }
  return out;
}

/**
 * CPU seconds used so far by the trees under `pids`: utime+stime of every
 * live process plus cutime+cstime (children already reaped), so forked
 * workers that came and went are counted too.
 */
export function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const root of pids) for (const p of [root, ...descendants(root)]) ticks += readStat(p)?.ticks ?? 0;
  return ticks / TICKS;
}

function statusKb(pid: number, key: string, file = "status"): number {
  try {
    const m = new RegExp(`${key}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/${file}`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Resident memory in bytes of one process (VmRSS). */
export function rssBytes(pid: number): number {
  return statusKb(pid, "VmRSS") * 1024;
}

/**
 * Memory of a process tree in bytes: VmRSS for a single process; the sum of
 * PSS (proportional set size) when the tree has forked workers (socat, sshd),
 * so shared pages are not counted once per fork.
 */
export function treeMemory(root: number): { bytes: number; processes: number; kind: "rss" | "pss" } {
  const tree = [root, ...descendants(root)];
  if (tree.length === 1) return { bytes: rssBytes(root), processes: 1, kind: "rss" };
  let kb = 0;
  for (const p of tree) kb += statusKb(p, "Pss", "smaps_rollup");
  return { bytes: kb * 1024, processes: tree.length, kind: "pss" };
}

/** A loopback port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Resolves once a TCP connect to 127.0.0.1:port succeeds; throws after `ms`. */
export async function waitPort(port: number, ms = 10_000, what = `port ${port}`): Promise<void> {
  const end = Date.now() + ms;
  for (let i = 0; i < 10_000; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ port, host: "127.0.0.1" }, () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) break;
    await Bun.sleep(50);
  }
  throw new Error(`${what} did not accept connections within ${ms} ms`);
}

/** Polls `cond` until it holds; throws after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string, everyMs = 50): Promise<void> {
  const end = Date.now() + ms;
  for (let i = 0; i < 1_000_000; i++) {
    if (await cond()) return;
    if (Date.now() > end) break;
    await Bun.sleep(everyMs);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/** The q-quantile (0..1) of sorted numbers, nearest rank. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

/** Last lines of a log file, for error messages. */
export function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

/** Runs a command to completion with a deadline; returns stdout, throws with stderr on failure. */
export async function run(cmd: string[], opts: { timeoutMs: number; cwd?: string; allowFail?: boolean }): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", stdin: "ignore", cwd: opts.cwd ?? ROOT });
  const timer = setTimeout(() => p.kill("SIGKILL"), opts.timeoutMs);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  if (code !== 0 && !opts.allowFail) throw new Error(`${cmd.join(" ")} exited ${code}: ${stderr.trim().slice(-2000)}`);
  return { code, stdout, stderr };
}

/** Whether an executable is on PATH (or at an absolute path). */
export function have(bin: string): boolean {
  return Bun.which(bin) !== null || (bin.startsWith("/") && Bun.file(bin).size > 0);
}
