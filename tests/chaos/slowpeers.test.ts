/**
 * Scenario 7: slow and fast peers. A fast app feeds a slow user and a fast
 * user feeds a slow app, 256 MiB each way at once: every byte arrives
 * (SHA-256 equal) and the relays' memory stays bounded (backpressure, not
 * buffering).
 */
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { deadPort } from "../helpers.ts";
import { tempDir, type Proc } from "../procs.ts";
import { clientToml, connect, drain, feed, groupToml, killAll, Pattern, rss, serverToml, startClient, startServer } from "./harness.ts";

/** Bytes per direction. */
const TOTAL = 256 * 1024 * 1024;
/** Pace of the slow side, bytes per second. */
const SLOW = 32 * 1024 * 1024;
/** Bytes moved before the memory baseline is taken (buffers allocated, code warm). */
const WARM = 16 * 1024 * 1024;
/** Most RSS growth allowed per process: bounded queues hold about HIGH_WATER_BYTES plus a chunk per direction; the rest is GC slack. */
const MAX_GROWTH = 48 * 1024 * 1024;

const procs: Proc[] = [];
const servers: net.Server[] = [];

afterAll(async () => {
  await killAll(procs);
  for (const s of servers) s.close();
});

async function listen(handler: (s: net.Socket) => void): Promise<number> {
  const srv = net.createServer({ allowHalfOpen: true }, handler);
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  return (srv.address() as net.AddressInfo).port;
}

describe("scenario 7: slow and fast peers", () => {
  test("fast app to slow user and fast user to slow app, 256 MiB each: intact, RSS bounded", async () => {
    const down = Pattern.of(701);
    const up = Pattern.of(702);
    const sourcePort = await listen((s) => void feed(s, down, TOTAL).catch(() => {}));
    // The slow app: reads at SLOW and hashes; resolves once its one user has finished.
    let sinkGot = 0;
    let sinkDone!: (r: { received: number; hash: string; error: string | null }) => void;
    const sinkResult = new Promise<{ received: number; hash: string; error: string | null }>((r) => (sinkDone = r));
    const sinkPort = await listen((s) => {
      s.on("data", (d: Buffer) => (sinkGot += d.length));
      s.on("end", () => s.end());
      void drain(s, SLOW).then(sinkDone);
    });

    const dir = tempDir();
    const ctrl = await deadPort();
    const server = await startServer(dir, serverToml(dir, ctrl, groupToml("peers", ["source", "sink"])));
    procs.push(server.proc);
    const client = await startClient(dir, clientToml(ctrl, "peers", { source: sourcePort, sink: sinkPort }), ["source", "sink"]);
    procs.push(client.proc);

    const t0 = performance.now();
    // Slow user reading from the fast app.
    const slowUser = await connect(client.ports.source!);
    let userGot = 0;
    slowUser.on("data", (d: Buffer) => (userGot += d.length));
    const userResult = drain(slowUser, SLOW);
    slowUser.end(); // it has nothing to say: half-close, then read to the end
    // Fast user writing to the slow app.
    const fastUser = await connect(client.ports.sink!);
    fastUser.on("data", () => {});
    const fastDone = feed(fastUser, up, TOTAL);

    let base: { server: number; client: number } | null = null;
    const peak = { server: 0, client: 0 };
    const sample = () => {
      if (!base && userGot >= WARM && sinkGot >= WARM) base = { server: rss(server.proc.pid), client: rss(client.proc.pid) };
      if (!base) return;
      peak.server = Math.max(peak.server, rss(server.proc.pid));
      peak.client = Math.max(peak.client, rss(client.proc.pid));
    };
    const sampler = setInterval(sample, 100);
    const [u, k] = await Promise.all([userResult, sinkResult, fastDone]);
    clearInterval(sampler);
    const seconds = (performance.now() - t0) / 1000;

    expect(u).toEqual({ received: TOTAL, hash: down.hash(TOTAL), error: null });
    expect(k).toEqual({ received: TOTAL, hash: up.hash(TOTAL), error: null });
    expect(seconds).toBeGreaterThan((TOTAL / SLOW) * 0.9); // the slow sides really were slow
    const growth = { server: peak.server - base!.server, client: peak.client - base!.client };
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    console.log(
      `slow/fast peers: 2 x ${mib(TOTAL)} in ${seconds.toFixed(1)} s; RSS base server ${mib(base!.server)} client ${mib(base!.client)}; growth server ${mib(growth.server)} client ${mib(growth.client)}`,
    );
    expect(growth.server).toBeLessThan(MAX_GROWTH);
    expect(growth.client).toBeLessThan(MAX_GROWTH);
  }, 60_000);
});
