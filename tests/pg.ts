/**
 * A throwaway PostgreSQL cluster for tests (BUN-NOTES.md, "PostgreSQL from
 * Bun"): initdb into a temporary folder, trust authentication, listening on
 * 127.0.0.1 at a free port with its Unix socket in that folder, so that
 * nothing of the machine's own PostgreSQL is touched. Stopped with
 * `-m immediate` (nothing in it is worth a clean shutdown) and removed.
 */
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../bench/common.ts";

/** A running throwaway cluster. */
export interface TestPostgres {
  /** postgres://warren@127.0.0.1:PORT/postgres */
  readonly url: string;
  /** Stops the server without removing its data: a database that went away. */
  pause(): Promise<void>;
  /** Starts it again on the same port, with the data it had. */
  resume(): Promise<void>;
  /** Stops and starts it: every connection drops. */
  restart(): Promise<void>;
  /** Suspends the server's processes (SIGSTOP): connections stay open and nothing answers, as when a network partition drops packets. */
  freeze(): void;
  /** Lets them run again (SIGCONT). */
  thaw(): void;
  /** Stops the server and removes its folder. */
  stop(): Promise<void>;
}

/** The database superuser initdb creates; also the user the store connects as. */
const PG_USER = "warren";
/** How long pg_ctl may take to start or stop the server (it waits with -w). */
const PG_CTL_TIMEOUT_S = 30;

/** Where the PostgreSQL server programs are, or null: on PATH (/usr/local/bin here), or Debian's versioned folder. */
export function postgresBin(): string | null {
  for (const dir of (process.env.PATH ?? "").split(":")) if (dir && existsSync(join(dir, "initdb")) && existsSync(join(dir, "pg_ctl"))) return dir;
  for (const v of ["17", "16", "15", "14", "13"]) {
    const dir = `/usr/lib/postgresql/${v}/bin`;
    if (existsSync(join(dir, "initdb"))) return dir;
  }
  return null;
}

/** Why PostgreSQL tests cannot run here, or null when they can. */
export function postgresMissing(): string | null {
  return postgresBin() ? null : "PostgreSQL server programs (initdb, pg_ctl) are missing: apt-get install postgresql";
}

/** Runs a PostgreSQL program, as the postgres user when we are root (initdb and postgres refuse to run as root). */
async function pgRun(bin: string, args: string[]): Promise<void> {
  const asRoot = process.getuid?.() === 0;
  const cmd = asRoot ? ["runuser", "-u", "postgres", "--", join(bin, args[0]!), ...args.slice(1)] : [join(bin, args[0]!), ...args.slice(1)];
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", env: { ...process.env, LC_ALL: "C" } });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`${args[0]} exited with ${code}: ${(err || out).trim().slice(-2000)}`);
}

/** The postmaster of the cluster in `data` and its children (the backends), by the pid file PostgreSQL writes. */
function serverPids(data: string): number[] {
  const postmaster = Number(readFileSync(join(data, "postmaster.pid"), "utf8").split("\n")[0]);
  const children = Bun.spawnSync(["pgrep", "-P", String(postmaster)]).stdout.toString().trim().split("\n").filter(Boolean).map(Number);
  return [postmaster, ...children];
}

/** Creates and starts a cluster; throws when the programs are missing (check `postgresMissing()` first to skip). */
export async function startPostgres(): Promise<TestPostgres> {
  const bin = postgresBin();
  if (!bin) throw new Error(postgresMissing()!);
  const dir = mkdtempSync(join(tmpdir(), "warren-pg-"));
  if (process.getuid?.() === 0) chownSync(dir, Number(Bun.spawnSync(["id", "-u", "postgres"]).stdout.toString().trim()), -1);
  const data = join(dir, "data");
  const port = await freePort();
  // `-h` rather than `-c listen_addresses=` (the latter failed to bind here, BUN-NOTES.md); fsync off: the
  // cluster is thrown away, and this makes initdb and every commit fast.
  const opts = `-p ${port} -k ${dir} -h 127.0.0.1 -c fsync=off -c max_connections=100`;
  const ctl = (what: string[]) => pgRun(bin, ["pg_ctl", "-D", data, "-t", String(PG_CTL_TIMEOUT_S), ...what]);
  const start = () => ctl(["-o", opts, "-l", join(dir, "log"), "-w", "start"]);
  const halt = () => ctl(["-m", "immediate", "-w", "stop"]);
  try {
    await pgRun(bin, ["initdb", "-D", data, "-A", "trust", "-U", PG_USER, "--no-sync"]);
    await start();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  let running = true;
  // A test run that ends without its afterAll (an uncaught error) must not leave a server running.
  const onExit = () => {
    if (running) Bun.spawnSync([...(process.getuid?.() === 0 ? ["runuser", "-u", "postgres", "--"] : []), join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "stop"]);
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("exit", onExit);
  let frozen: number[] = [];
  const cluster: TestPostgres = {
    url: `postgres://${PG_USER}@127.0.0.1:${port}/postgres`,
    async pause() {
      if (running) await halt();
      running = false;
    },
    async resume() {
      if (!running) await start();
      running = true;
    },
    async restart() {
      await cluster.pause();
      await cluster.resume();
    },
    freeze() {
      frozen = serverPids(data);
      for (const pid of frozen) process.kill(pid, "SIGSTOP");
    },
    thaw() {
      for (const pid of frozen) process.kill(pid, "SIGCONT");
      frozen = [];
    },
    async stop() {
      cluster.thaw();
      try {
        if (running) await halt();
      } finally {
        running = false;
        process.off("exit", onExit);
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  return cluster;
}
