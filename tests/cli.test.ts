/**
 * The command line as a user meets it: `npm run build` executables, `--help`,
 * exit code 2 for a bad config, the admin token generated on first start,
 * `npm start` on defaults, and `npm run demo`. Everything runs as real
 * processes; every process is killed and every temp file removed at the end.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { canBindTcp } from "../lib/ports.ts";
import { PROTOCOL_VERSION } from "../protocol.ts";
import { ADMIN_TOKEN_FILE } from "../server.ts";
import { deadPort, until } from "./helpers.ts";

const ROOT = join(import.meta.dir, "..");
const BUN = process.execPath;
/** Longest a short command (`--help`, a bad config) may run. */
const COMMAND_TIMEOUT_MS = 10_000;
/** Longest a server may take to answer /healthz after it was started. */
const READY_TIMEOUT_MS = 10_000;
/** Time a process has to exit after SIGTERM before it gets SIGKILL. */
const KILL_GRACE_MS = 3_000;

const tmp = mkdtempSync(join(tmpdir(), "warren-cli-"));
const live = new Set<Subprocess>();

afterAll(async () => {
  // SIGTERM first: the demo passes it on to its own children, which SIGKILL would orphan.
  await Promise.all([...live].map((p) => terminate(p)));
  rmSync(tmp, { recursive: true, force: true });
});

/** SIGTERM, then SIGKILL if the process has not exited after KILL_GRACE_MS. */
async function terminate(p: Subprocess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  p.kill("SIGTERM");
  const kill = setTimeout(() => p.kill("SIGKILL"), KILL_GRACE_MS);
  await p.exited;
  clearTimeout(kill);
}

/** Starts a long-running process, remembered so afterAll can kill it. */
function start(cmd: string[], cwd = ROOT): Subprocess<"ignore", "pipe", "pipe"> {
  const p = Bun.spawn(cmd, { cwd, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  live.add(p);
  void p.exited.then(() => live.delete(p));
  return p;
}

/** Waits for a process to exit, terminating it after `ms`; returns its exit code and output. */
async function finish(p: Subprocess<"ignore", "pipe", "pipe">, ms = COMMAND_TIMEOUT_MS): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const kill = setTimeout(() => void terminate(p), ms);
  const [stdout, stderr] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  await p.exited;
  clearTimeout(kill);
  return { code: p.exitCode, stdout, stderr };
}

/** Runs a command to completion. */
function run(cmd: string[], cwd = ROOT, ms = COMMAND_TIMEOUT_MS) {
  return finish(start(cmd, cwd), ms);
}

/** Sends SIGTERM (the server exits 0 on it) and collects the output. */
function stop(p: Subprocess<"ignore", "pipe", "pipe">) {
  p.kill("SIGTERM");
  return finish(p);
}

/** Polls the API's /healthz until it answers, failing early if the process dies. */
async function ready(p: Subprocess, apiPort: number): Promise<void> {
  await until(
    async () => {
      if (p.exitCode !== null) throw new Error(`server exited with code ${p.exitCode} before it was ready`);
      return fetch(`http://127.0.0.1:${apiPort}/healthz`).then((r) => r.ok, () => false);
    },
    READY_TIMEOUT_MS,
    `the API on port ${apiPort}`,
  );
}

function writeConfig(name: string, text: string): string {
  const file = join(tmp, name);
  writeFileSync(file, text);
  return file;
}

describe("compiled executables (npm run build)", () => {
  const server = join(tmp, "warren-server");
  const client = join(tmp, "warren-client");

  beforeAll(async () => {
    // Run the commands of `npm run build` as package.json spells them, with the output in a temp dir instead of dist/.
    const script: string = (await Bun.file(join(ROOT, "package.json")).json()).scripts.build;
    const steps = script.split("&&").map((s) => s.trim().split(/\s+/));
    expect(steps.map((s) => s.slice(0, 3).join(" "))).toEqual(["bun build --compile", "bun build --compile"]);
    for (const step of steps) {
      const argv = [BUN, ...step.slice(1).map((a) => a.replace(/^dist\//, `${tmp}/`))];
      const res = await run(argv, ROOT, 60_000);
      if (res.code !== 0) throw new Error(`${step.join(" ")} failed (${res.code}):\n${res.stderr}`);
    }
    expect(existsSync(server)).toBe(true);
    expect(existsSync(client)).toBe(true);
  }, 120_000);

  test("--help prints usage and exits 0", async () => {
    for (const [bin, usage] of [
      [server, "Usage: warren-server [--config FILE]"],
      [client, "Usage: warren-client --config FILE"],
    ] as const) {
      for (const flag of ["--help", "-h"]) {
        const res = await run([bin, flag]);
        expect(res.code).toBe(0);
        expect(res.stdout).toContain(usage);
      }
    }
  });

  test("--version prints the version and the protocol, and exits 0, from the compiled executables too", async () => {
    const version: string = (await Bun.file(join(ROOT, "package.json")).json()).version;
    for (const [cmd, name] of [
      [[server], "warren-server"],
      [[client], "warren-client"],
      [[BUN, join(ROOT, "server.ts")], "warren-server"],
      [[BUN, join(ROOT, "client.ts")], "warren-client"],
    ] as const) {
      for (const flag of ["--version", "-V"]) {
        const res = await run([...cmd, flag]);
        expect(res.code).toBe(0);
        expect(res.stdout.trim()).toBe(`${name} ${version} (protocol ${PROTOCOL_VERSION})`);
      }
    }
  });

  test("an unknown flag exits 2 with the usage", async () => {
    for (const bin of [server, client]) {
      const res = await run([bin, "--bogus"]);
      expect(res.code).toBe(2);
      expect(res.stderr).toContain("Usage:");
    }
  });

  test("the client without --config exits 2 and says so", async () => {
    const res = await run([client]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain("--config FILE is required");
  });

  test("a bad server config exits 2 naming the file and the key", async () => {
    const bad = writeConfig("bad-server.toml", 'controlPort = "seven thousand"\n');
    const res = await run([server, "--config", bad]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`${bad}: controlPort: must be a number`);

    const unknown = writeConfig("unknown-server.toml", "controlPort = 0\n[[groups]]\nname = \"g\"\ntoken = \"0123456789abcdef\"\nport = 1\n");
    const res2 = await run([server, "--config", unknown]);
    expect(res2.code).toBe(2);
    expect(res2.stderr).toContain(`${unknown}: groups[0].port: unknown key`);
  });

  test("a bad client config exits 2 naming the file and the key", async () => {
    const bad = writeConfig(
      "bad-client.toml",
      'serverAddr = "127.0.0.1"\ngroup = "g"\ntoken = "0123456789abcdef"\n[[apps]]\nname = "ssh"\nlocalAddr = "localhost"\n',
    );
    const res = await run([client, "--config", bad]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`${bad}: apps[0].localAddr: must be host:port`);

    const missing = join(tmp, "no-such-client.toml");
    const res2 = await run([client, "--config", missing]);
    expect(res2.code).toBe(2);
    expect(res2.stderr).toContain(`${missing}: cannot read the file`);
  });

  test("the compiled server serves the API with the token it generated", async () => {
    const apiPort = await deadPort();
    const dataDir = join(tmp, "compiled-data");
    const cfg = writeConfig("compiled.toml", `bindAddr = "127.0.0.1"\ncontrolPort = 0\napiPort = ${apiPort}\ndataDir = ${JSON.stringify(dataDir)}\n`);
    const p = start([server, "--config", cfg], tmp);
    let token = "";
    let out;
    try {
      await ready(p, apiPort);
      token = readFileSync(join(dataDir, ADMIN_TOKEN_FILE), "utf8").trim();
      const res = await fetch(`http://127.0.0.1:${apiPort}/api/groups`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ groups: [] });
    } finally {
      out = await stop(p);
    }
    expect(out.code).toBe(0);
    expect(out.stdout).toContain(token);
  });

  test("the compiled server with [tls] generates its certificate and prints the fingerprint", async () => {
    const apiPort = await deadPort();
    const dataDir = join(tmp, "compiled-tls-data");
    const cfg = writeConfig(
      "compiled-tls.toml",
      `bindAddr = "127.0.0.1"\ncontrolPort = 0\napiPort = ${apiPort}\nadminToken = "admin-token-0123456789"\ndataDir = ${JSON.stringify(dataDir)}\n[tls]\nenabled = true\n`,
    );
    const p = start([server, "--config", cfg], tmp);
    let out;
    try {
      await ready(p, apiPort);
    } finally {
      out = await stop(p);
    }
    expect(out.code).toBe(0);
    expect(out.stdout).toMatch(/SHA-256 fingerprint [0-9a-f]{64}\n/);
    expect(existsSync(join(dataDir, "tls-key.pem"))).toBe(true);
  });
});

describe("server.ts", () => {
  test("generates the admin token on first start, stores it with mode 0600, prints it once", async () => {
    const dataDir = join(tmp, "token-data");
    const apiPort = await deadPort();
    // apiPort is fixed (free a moment ago) so the test can reach the API and prove the printed token is the one that works.
    const cfg = writeConfig("token.toml", `bindAddr = "127.0.0.1"\ncontrolPort = 0\napiPort = ${apiPort}\ndataDir = ${JSON.stringify(dataDir)}\n`);
    const file = join(dataDir, ADMIN_TOKEN_FILE);
    const groups = (token: string) => fetch(`http://127.0.0.1:${apiPort}/api/groups`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.status);

    const first = start([BUN, join(ROOT, "server.ts"), "--config", cfg], tmp);
    let token = "";
    let out;
    try {
      await ready(first, apiPort);
      expect(existsSync(file)).toBe(true);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      token = readFileSync(file, "utf8").trim();
      expect(token.length).toBeGreaterThanOrEqual(16);
      expect(await groups(token)).toBe(200);
      expect(await groups("not-the-admin-token-at-all")).toBe(401);
    } finally {
      out = await stop(first);
    }
    expect(out.code).toBe(0);
    expect(out.stdout.split(token).length - 1).toBe(1);
    expect(out.stdout).toContain(file);
    expect(out.stderr).not.toContain(token);

    const second = start([BUN, join(ROOT, "server.ts"), "--config", cfg], tmp);
    try {
      await ready(second, apiPort);
      expect(await groups(token)).toBe(200);
    } finally {
      out = await stop(second);
    }
    expect(out.code).toBe(0);
    expect(out.stdout + out.stderr).not.toContain(token);
    expect(out.stdout).not.toContain("Generated an admin token");
    expect(readFileSync(file, "utf8").trim()).toBe(token);
  }, 30_000);

  test("npm start passes SIGTERM to the server: it stops cleanly and its ports are free", async () => {
    const [controlPort, apiPort] = [await deadPort(), await deadPort()];
    const cfg = writeConfig("npm-start.toml", `bindAddr = "127.0.0.1"\ncontrolPort = ${controlPort}\napiPort = ${apiPort}\ndataDir = ":memory:"\nadminToken = "admin-token-0123456789"\n`);
    const npm = start(["npm", "start", "--silent", "--", "--config", cfg]);
    await ready(npm, apiPort);
    const out = await stop(npm);
    expect(out.stderr).toContain("shutting down");
    expect(out.stderr).toContain("signal=SIGTERM");
    // No Bun left behind holding the ports.
    await until(() => canBindTcp("127.0.0.1", controlPort) && canBindTcp("127.0.0.1", apiPort), 5000, "the ports to be free");
  }, 30_000);

  // `npm start`: no config file at all. Only when the default ports are free on this machine.
  const defaultsFree = canBindTcp("0.0.0.0", 7000) && canBindTcp("127.0.0.1", 7500);
  if (!defaultsFree) console.log("skipping the embedded-defaults test: ports 7000 or 7500 are in use on this machine, and the test needs exactly those");
  test.skipIf(!defaultsFree)("starts on the embedded defaults with no config file (ports 7000 and 7500, ./data)", async () => {
    const cwd = mkdtempSync(join(tmp, "defaults-"));
    const p = start([BUN, join(ROOT, "server.ts")], cwd);
    let out;
    try {
      await ready(p, 7500);
      const file = join(cwd, "data", ADMIN_TOKEN_FILE);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(canBindTcp("0.0.0.0", 7000)).toBe(false);
    } finally {
      out = await stop(p);
    }
    expect(out.code).toBe(0);
    expect(out.stdout).toContain("Generated an admin token");
  }, 30_000);
});

test("npm run demo sends a request through the tunnel and exits 0", async () => {
  const res = await run([BUN, "run", join(ROOT, "scripts", "demo.ts")], ROOT, 40_000);
  if (res.code !== 0) console.error(res.stdout, res.stderr);
  expect(res.code).toBe(0);
  expect(res.stdout).toContain("HTTP 200");
  expect(res.stdout).toContain("Hello from the private app behind Warren! You asked for /hello");
  expect(res.stdout).toMatch(/"bytesOut": [1-9]/);
}, 45_000);
