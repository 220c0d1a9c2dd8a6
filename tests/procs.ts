/** Server and client as real processes, for kill, restart and memory tests. */
import type { Subprocess } from "bun";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");

/** A temporary folder for configs and data. */
export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "warren-test-"));
}

/** Resident memory of a process in bytes (Linux /proc). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

/** A child process whose output lines are collected and can be awaited. */
export class Proc {
  readonly lines: string[] = [];
  #waiters: { re: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];
  constructor(readonly child: Subprocess<"ignore", "pipe", "pipe">) {
    this.#read(child.stdout);
    this.#read(child.stderr);
  }

  async #read(stream: ReadableStream<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of stream) {
      buf += dec.decode(chunk, { stream: true });
      let i: number;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.lines.push(line);
        if (process.env.WARREN_TEST_ECHO) console.error(`[${this.child.pid}] ${line}`);
        this.#waiters = this.#waiters.filter((w) => {
          const m = w.re.exec(line);
          if (m) w.resolve(m);
          return !m;
        });
      }
    }
  }

  /** Resolves with the first line (already seen or future) matching `re`; rejects after `ms`. */
  waitFor(re: RegExp, ms = 15_000, from = 0): Promise<RegExpExecArray> {
    for (const line of this.lines.slice(from)) {
      const m = re.exec(line);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      const w = { re, resolve };
      this.#waiters.push(w);
      setTimeout(() => {
        this.#waiters = this.#waiters.filter((x) => x !== w);
        reject(new Error(`no line matching ${re} within ${ms} ms; output:\n${this.lines.slice(-20).join("\n")}`));
      }, ms).unref();
    });
  }

  get pid(): number {
    return this.child.pid;
  }

  /** Sends a signal and waits for the exit. */
  async kill(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    this.child.kill(signal);
    return this.child.exited;
  }
}

/** Starts `server.ts` or `client.ts` with a TOML config written from `toml`. */
export function spawnWarren(role: "server" | "client", dir: string, toml: string, name = role): Proc {
  const file = join(dir, `${name}.toml`);
  writeFileSync(file, toml);
  // WARREN_PROF_DIR=dir writes a CPU profile (markdown) of each process to dir on exit, for profiling the hot paths.
  const prof = process.env.WARREN_PROF_DIR ? ["--cpu-prof-md", `--cpu-prof-dir=${process.env.WARREN_PROF_DIR}`] : [];
  const child = Bun.spawn([process.execPath, ...prof, join(ROOT, `${role}.ts`), "--config", file], {
    cwd: dir,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, WARREN_LOG: "info" },
  });
  return new Proc(child);
}

/** Starts a server and waits for it to be ready; returns its API port too. */
export async function startServerProc(dir: string, toml: string): Promise<{ proc: Proc; apiPort: number }> {
  const proc = spawnWarren("server", dir, toml);
  const m = await proc.waitFor(/warren server ready .*api=http:\/\/[^:]+:(\d+)/);
  return { proc, apiPort: Number(m[1]) };
}

/** Starts a client and waits until it prints every app's public endpoint. */
export async function startClientProc(dir: string, toml: string, apps: string[]): Promise<{ proc: Proc; ports: Record<string, number> }> {
  const proc = spawnWarren("client", dir, toml);
  const ports: Record<string, number> = {};
  for (const app of apps) ports[app] = Number((await proc.waitFor(new RegExp(`app ${app} \\(tcp\\) is reachable at [^ ]+:(\\d+)`)))[1]);
  return { proc, ports };
}
