/**
 * `npm run demo`: a Warren server, a client and a small private web app, all
 * on loopback, and one HTTP request that goes through the tunnel.
 *
 * The server and the client run as their own processes (`server.ts --config`,
 * `client.ts --config`), exactly as a user would start them. Ports are free
 * loopback ports, the data directory is a temp directory, and every process
 * and file is gone when the demo ends. Exits 0 when the request made it
 * through, 1 otherwise.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { freePort } from "../bench/common.ts";

/** The whole demo must finish within this time, or it fails and cleans up. */
const DEMO_DEADLINE_MS = 20_000;
/** Time a child is given to exit after SIGTERM before it gets SIGKILL. */
const STOP_GRACE_MS = 2_000;
/** The group and app the demo registers. */
const GROUP = "demo";
const APP = "web";

const ROOT = join(import.meta.dir, "..");
const deadline = Date.now() + DEMO_DEADLINE_MS;
const children: Subprocess[] = [];
const dir = mkdtempSync(join(tmpdir(), "warren-demo-"));

/** Last-resort cleanup when the demo is interrupted or overruns. */
function abort(code: number): never {
  for (const c of children) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
  process.exit(code);
}


/** Copies a child's output to ours, each line prefixed with the child's name. */
async function forward(stream: ReadableStream<Uint8Array>, name: string): Promise<void> {
  const decoder = new TextDecoder();
  let rest = "";
  for await (const chunk of stream) {
    rest += decoder.decode(chunk, { stream: true });
    const lines = rest.split("\n");
    rest = lines.pop()!;
    for (const line of lines) console.log(`  ${name} | ${line}`);
  }
  if (rest) console.log(`  ${name} | ${rest}`);
}

/** Starts `bun FILE --config CONFIG` from the project root. */
function spawn(name: string, file: string, config: string): Subprocess<"ignore", "pipe", "pipe"> {
  const child = Bun.spawn([process.execPath, join(ROOT, file), "--config", config], { cwd: ROOT, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  children.push(child);
  void forward(child.stdout, name);
  void forward(child.stderr, name);
  return child;
}

/** Polls `check` every 100 ms until it returns a value; fails at the demo's deadline or when a child has died. */
async function waitFor<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
  while (Date.now() < deadline) {
    for (const c of children) if (c.exitCode !== null) throw new Error(`a process exited with code ${c.exitCode} while waiting for ${what}`);
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    await Bun.sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** SIGTERM, then SIGKILL after a grace period. */
async function stop(child: Subprocess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const kill = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
  await child.exited;
  clearTimeout(kill);
}

interface GroupView {
  online: boolean;
  apps: { name: string; remotePort: number; online: boolean; connections: number; bytesIn: number; bytesOut: number }[];
}

async function main(): Promise<void> {
  const app = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: (req) => new Response(`Hello from the private app behind Warren! You asked for ${new URL(req.url).pathname}\n`),
  });
  try {
    const adminToken = randomBytes(24).toString("base64url");
    const groupToken = randomBytes(24).toString("base64url");
    const [controlPort, apiPort] = [await freePort(), await freePort()];
    const api = `http://127.0.0.1:${apiPort}`;
    const serverToml = join(dir, "server.toml");
    const clientToml = join(dir, "client.toml");
    writeFileSync(
      serverToml,
      `bindAddr = "127.0.0.1"
controlPort = ${controlPort}
apiPort = ${apiPort}
dataDir = ${JSON.stringify(join(dir, "data"))}
adminToken = "${adminToken}"

[[groups]]
name = "${GROUP}"
token = "${groupToken}"
apps = [{ name = "${APP}" }]   # remotePort 0: the server chooses a public port, and keeps it
`,
    );
    writeFileSync(
      clientToml,
      `serverAddr = "127.0.0.1"
serverPort = ${controlPort}
group = "${GROUP}"
token = "${groupToken}"

[[apps]]
name = "${APP}"
localAddr = "127.0.0.1:${app.port}"
`,
    );
    console.log(`Warren demo (temp dir ${dir})`);
    console.log(`\n1. A private web app listens on 127.0.0.1:${app.port}.`);

    console.log(`\n2. Server: control port ${controlPort}, API ${api}, group "${GROUP}" with app "${APP}".`);
    spawn("server", "server.ts", serverToml);
    await waitFor("the server's API", async () => ((await fetch(`${api}/healthz`)).ok ? true : undefined));

    console.log(`\n3. Client: logs in as "${GROUP}" and serves "${APP}" from 127.0.0.1:${app.port}.`);
    spawn("client", "client.ts", clientToml);
    const headers = { authorization: `Bearer ${adminToken}` };
    const view = async () => (await (await fetch(`${api}/api/groups/${GROUP}`, { headers })).json()) as GroupView;
    const online = await waitFor("the client to come online", async () => {
      const g = await view();
      return g.online && g.apps[0]?.online ? g : undefined;
    });
    const publicPort = online.apps[0]!.remotePort;

    const url = `http://127.0.0.1:${publicPort}/hello`;
    console.log(`\n4. A user requests ${url} (the app's public port on the server):`);
    const res = await fetch(url, { headers: { connection: "close" }, signal: AbortSignal.timeout(Math.max(1, deadline - Date.now())) });
    const body = await res.text();
    console.log(`\n   HTTP ${res.status}\n   ${body.trimEnd()}`);
    if (res.status !== 200 || !body.startsWith("Hello from the private app")) throw new Error(`unexpected answer through the tunnel: HTTP ${res.status}`);

    // The counters move as the relay forwards bytes; wait until both directions are counted and the stream has closed.
    const after = await waitFor("the traffic counters", async () => {
      const g = await view();
      const a = g.apps[0];
      return a && a.bytesIn > 0 && a.bytesOut > 0 && a.connections === 0 ? g : undefined;
    });
    console.log(`\n5. The group as the API shows it (GET /api/groups/${GROUP}):\n`);
    console.log(JSON.stringify(after, null, 2).replace(/^/gm, "   "));
    console.log("\nThe request went user -> server -> client -> app and back. Cleaning up.");
  } finally {
    // Client first, so the server's log shows the session ending before the server itself stops.
    for (const child of [...children].reverse()) await stop(child);
    app.stop(true);
    rmSync(dir, { recursive: true, force: true });
  }
}

const watchdog = setTimeout(() => {
  console.error(`demo failed: did not finish within ${DEMO_DEADLINE_MS / 1000} s`);
  abort(1);
}, DEMO_DEADLINE_MS + 2 * STOP_GRACE_MS + 1_000); // past the deadline plus stopping both children

process.on("SIGINT", () => abort(130));
process.on("SIGTERM", () => abort(143));

try {
  await main();
  clearTimeout(watchdog);
  console.log("Demo finished.");
} catch (err) {
  console.error(`\ndemo failed: ${(err as Error).message}`);
  process.exit(1);
}
