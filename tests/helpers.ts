/** Test fixtures: in-process server and clients, echo and sink apps, users, hashes. */
import { createHash } from "node:crypto";
import net from "node:net";
import { validate } from "../lib/config/load.ts";
import { ClientConfigSchema, ServerConfigSchema, type ClientConfig, type ServerConfig } from "../lib/config/schema.ts";
import { Connector } from "../lib/client/connector.ts";
import { setLogLevel } from "../lib/log.ts";
import { startServer, type RunningServer } from "../server.ts";
import type { AppStatus } from "../protocol.ts";
import type { TlsMaterial } from "../lib/tls.ts";
import { freePort } from "../bench/common.ts";

/** A token long enough for the schemas. */
export const TOKEN = "test-token-0123456789abcdef";

/** Starts an in-process server on ephemeral ports with an in-memory registry (`tls`: material from loadServerTls). */
export function testServer(overrides: Record<string, unknown> = {}, tls?: TlsMaterial): Promise<RunningServer> {
  const config: ServerConfig = validate(
    ServerConfigSchema,
    { bindAddr: "127.0.0.1", controlPort: 0, apiPort: 0, dataDir: ":memory:", adminToken: "admin-token-0123456789", logLevel: "warn", ...overrides },
    "test",
  );
  setLogLevel(config.logLevel);
  return startServer(config, "test", () => {}, tls);
}

/** Registers group `name` (token TOKEN) with apps of these names through the admin API; returns the HTTP status (201 when created). */
export async function createGroup(server: { apiPort: number; adminToken: string }, name: string, apps: string[]): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${server.apiPort}/api/groups`, {
    method: "POST",
    headers: { authorization: `Bearer ${server.adminToken}` },
    body: JSON.stringify({ name, token: TOKEN, apps: apps.map((a) => ({ name: a })) }),
  });
  await res.body?.cancel();
  return res.status;
}

/** A client config for an in-process server. */
export function clientConfig(server: { controlPort: number }, group: string, apps: { name: string; localAddr: string; type?: "tcp" | "udp"; remotePort?: number }[], extra: Record<string, unknown> = {}): ClientConfig {
  return validate(ClientConfigSchema, { serverAddr: "127.0.0.1", serverPort: server.controlPort, group, token: TOKEN, logLevel: "warn", apps, ...extra }, "test");
}

/** Starts a connector and waits until it is online. */
export async function onlineClient(config: ClientConfig): Promise<{ connector: Connector; apps: readonly AppStatus[] }> {
  const connector = new Connector(config);
  const online = new Promise<readonly AppStatus[]>((resolve) => connector.once("online", resolve));
  connector.start();
  return { connector, apps: await online };
}

/** A TCP echo app (node:net pipes with backpressure). */
export async function echoApp(): Promise<{ port: number; close(): void }> {
  // A reset stream is an error event on the app's socket: handled, as a real app would.
  const server = net.createServer({ allowHalfOpen: true }, (s) => s.on("error", () => {}).pipe(s));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

/** A port on which nothing listens (bound, then closed): the bench harness's free-port helper. */
export const deadPort = freePort;

/** Deterministic pseudo-random bytes (xorshift), so failures can be replayed. */
export function randomData(bytes: number, seed = 1): Uint8Array {
  const out = new Uint8Array(bytes);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < bytes; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x;
    out[i + 1] = x >>> 8;
    out[i + 2] = x >>> 16;
    out[i + 3] = x >>> 24;
  }
  return out;
}

/** SHA-256 as hex. */
export function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

/** Connects as a user, sends `data` in 64 KiB writes, half-closes, and collects the whole reply. */
export function roundTrip(port: number, data: Uint8Array, opts: { halfClose?: boolean; host?: string } = {}): Promise<{ received: number; hash: string }> {
  return new Promise((resolve, reject) => {
    const hash = createHash("sha256");
    let received = 0;
    const s = net.connect({ port, host: opts.host ?? "127.0.0.1", allowHalfOpen: true }, () => {
      let at = 0;
      const pump = () => {
        while (at < data.length) {
          const chunk = data.subarray(at, at + 65536);
          at += chunk.length;
          if (!s.write(chunk)) return void s.once("drain", pump);
        }
        if (opts.halfClose !== false) s.end();
      };
      pump();
    });
    s.on("data", (d: Buffer) => {
      received += d.length;
      hash.update(d);
    });
    s.on("end", () => {
      s.end();
      resolve({ received, hash: hash.digest("hex") });
    });
    s.on("error", reject);
  });
}

/** Resolves when a user connection to `port` is closed by the other side; the time it took in ms. */
export function timeToClose(port: number, send = "hello"): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const s = net.connect({ port, host: "127.0.0.1" }, () => s.write(send));
    s.on("data", () => {});
    s.on("close", () => resolve(performance.now() - t0));
    s.on("error", () => {});
    setTimeout(() => reject(new Error("connection not closed within 10 s")), 10_000).unref();
  });
}

/** Polls `cond` every 20 ms until it holds, failing after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, ms = 10_000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}
