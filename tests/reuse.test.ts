/**
 * Work connections carry stream after stream: each direction's end is told on the control
 * connection (StreamEnd), not with a FIN, and the connection goes back to the pool (WorkFree).
 * Every test checks bytes and SHA-256 at both ends, and that connections really were reused.
 */
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { createHash } from "node:crypto";
import { Connector } from "../lib/client/connector.ts";
import { sockets } from "../lib/net/sockets.ts";
import { EXTRA_IDLE_WORK, IDLE_WORK_TIMEOUT_MS } from "../lib/server/session.ts";
import { POOL_WINDOW_MS, QUIET_POOL } from "../lib/server/pool-demand.ts";
import { clientConfig, echoApp, onlineClient, randomData, roundTrip, sha256, testServer, TOKEN, until } from "./helpers.ts";

const POOL = 2;
const server = await testServer({ poolSize: POOL });
const api = (path: string, init: RequestInit = {}) =>
  fetch(`http://127.0.0.1:${server.apiPort}${path}`, { ...init, headers: { authorization: `Bearer ${server.adminToken}`, ...(init.headers ?? {}) } });
const echo = await echoApp();
const connectors: Connector[] = [];
const closers: (() => void)[] = [];

afterAll(() => {
  for (const c of connectors) c.stop();
  for (const c of closers) c();
  server.stop();
  echo.close();
});

async function online(group: string, localPort: number): Promise<number> {
  const res = await api("/api/groups", { method: "POST", body: JSON.stringify({ name: group, token: TOKEN, apps: [{ name: "a", type: "tcp" }] }) });
  expect(res.status).toBe(201);
  const { connector, apps } = await onlineClient(clientConfig(server, group, [{ name: "a", localAddr: `127.0.0.1:${localPort}` }]));
  connectors.push(connector);
  return apps[0]!.remotePort;
}

/** An app that sends `banner`, half-closes, then reads until the user's FIN and records what it got (and closes then, or once the banner is out when `waitForBanner`). */
async function bannerApp(banner: Uint8Array, waitForBanner = false): Promise<{ port: number; got: { bytes: number; hash: string }[] }> {
  const got: { bytes: number; hash: string }[] = [];
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    const h = createHash("sha256");
    let n = 0;
    s.on("data", (d: Buffer) => {
      n += d.length;
      h.update(d);
    });
    s.on("end", () => {
      got.push({ bytes: n, hash: h.digest("hex") });
      if (!waitForBanner) s.destroy();
    });
    s.on("error", () => {});
    s.end(banner); // the app speaks first, then FIN: its direction ends before the user's
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  closers.push(() => srv.close());
  return { port: (srv.address() as net.AddressInfo).port, got };
}

describe("work connection reuse", () => {
  test("stream after stream on a few work connections: every byte back, SHA-256 equal", async () => {
    const port = await online("serial", echo.port);
    const session = server.hub.session("serial")!;
    const sizes = [0, 1, 63, 64 * 1024, 1 << 20, 3 * (1 << 20) + 7, 5, 256 * 1024 + 1];
    const streams = 48;
    for (let i = 0; i < streams; i++) {
      const data = randomData(sizes[i % sizes.length]!, i);
      const res = await roundTrip(port, data);
      expect(res.received).toBe(data.length);
      expect(res.hash).toBe(sha256(data));
    }
    // One stream at a time: the pool's connections come back and serve again.
    expect(session.counts.workReused).toBeGreaterThanOrEqual(streams - 2 * POOL);
    expect(session.counts.workOpened).toBeLessThanOrEqual(2 * POOL + 2);
  });

  test("16 streams at once, 2 MiB each way, four rounds: intact, and the connections of a round serve the next", async () => {
    const port = await online("parallel", echo.port);
    const session = server.hub.session("parallel")!;
    for (let round = 0; round < 4; round++) {
      const datas = Array.from({ length: 16 }, (_, i) => randomData((2 << 20) + i * 101, round * 100 + i));
      const results = await Promise.all(datas.map((d) => roundTrip(port, d)));
      results.forEach((r, i) => {
        expect(r.received).toBe(datas[i]!.length);
        expect(r.hash).toBe(sha256(datas[i]!));
      });
    }
    expect(session.counts.workReused).toBeGreaterThan(0);
    // 64 streams; without reuse each would have needed its own connection.
    expect(session.counts.workOpened).toBeLessThan(64);
  });

  test("after a spike the idle pool keeps at most poolSize + EXTRA_IDLE_WORK, and trims to the quiet pool once they go unused", async () => {
    const port = await online("spike", echo.port);
    const session = server.hub.session("spike")!;
    const users = POOL + EXTRA_IDLE_WORK + 30;
    const datas = Array.from({ length: users }, (_, i) => randomData(1000 + i, i));
    const results = await Promise.all(datas.map((d) => roundTrip(port, d)));
    results.forEach((r, i) => expect(r.hash).toBe(sha256(datas[i]!)));
    await until(() => session.pooled > POOL, 5000, "connections back in the pool");
    expect(session.pooled).toBeLessThanOrEqual(POOL + EXTRA_IDLE_WORK);
    session.trimIdle(performance.now() - 1); // not idle long enough yet: kept
    expect(session.pooled).toBeGreaterThan(POOL);
    // Quiet since the spike (its starts out of both demand windows): one warm connection is kept.
    session.trimIdle(performance.now() + 2 * POOL_WINDOW_MS + IDLE_WORK_TIMEOUT_MS + 1);
    expect(session.pooled).toBe(QUIET_POOL);
    const again = randomData(1 << 20, 5);
    expect((await roundTrip(port, again)).hash).toBe(sha256(again));
  });

  test("while the server's sockets are over half its file limit, connections back from a spike beyond poolSize are closed", async () => {
    const port = await online("pressed", echo.port);
    const session = server.hub.session("pressed")!;
    const max = sockets.max;
    // Half the cap sits below the sockets a spike of 40 users opens (users, work and app connections, in one process).
    sockets.max = sockets.open + 60;
    try {
      const datas = Array.from({ length: 40 }, (_, i) => randomData(2000 + i, 100 + i));
      const results = await Promise.all(datas.map((d) => roundTrip(port, d)));
      results.forEach((r, i) => expect(r.hash).toBe(sha256(datas[i]!)));
      expect(sockets.open).toBeLessThan(sockets.max);
      await until(() => session.counts.workFreed >= 40, 5000, "every stream freed");
      expect(session.pooled).toBeLessThanOrEqual(POOL);
    } finally {
      sockets.max = max;
    }
    // With descriptors to spare again, the pool works as before.
    const again = randomData(100_000, 9);
    expect((await roundTrip(port, again)).hash).toBe(sha256(again));
  });

  test("an app that speaks first and closes first: the banner arrives whole, the user's bytes after it too, then the next stream", async () => {
    const banner = randomData(300_000, 7);
    const app = await bannerApp(banner);
    const port = await online("banner", app.port);
    const session = server.hub.session("banner")!;
    for (let i = 0; i < 6; i++) {
      const upload = randomData(100_000 + i, 50 + i);
      const res = await new Promise<{ received: number; hash: string }>((resolve, reject) => {
        const h = createHash("sha256");
        let n = 0;
        const s = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
        s.on("data", (d: Buffer) => {
          n += d.length;
          h.update(d);
        });
        // Only after the app's FIN does the user send: the down direction ends first.
        s.on("end", () => s.end(upload, () => resolve({ received: n, hash: h.digest("hex") })));
        s.on("error", reject);
      });
      expect(res.received).toBe(banner.length);
      expect(res.hash).toBe(sha256(banner));
      await until(() => app.got.length === i + 1, 5000, "the app got the user's FIN");
      expect(app.got[i]).toEqual({ bytes: upload.length, hash: sha256(upload) });
    }
    expect(session.counts.workReused).toBeGreaterThan(0);
  });

  test("users that connect and close at once, sending nothing, get a clean end; the connections serve on", async () => {
    const port = await online("empty", echo.port);
    const session = server.hub.session("empty")!;
    for (let i = 0; i < 30; i++) {
      const res = await roundTrip(port, new Uint8Array(0));
      expect(res.received).toBe(0);
    }
    const data = randomData(1 << 20, 3);
    const res = await roundTrip(port, data);
    expect(res.hash).toBe(sha256(data));
    expect(session.counts.workReused).toBeGreaterThanOrEqual(31 - 2 * POOL);
  });

  test("the control connection lost after WorkFree while the user still reads: every byte arrives, then a clean end", async () => {
    // The user reads slowly: when the client has read the app's FIN and freed the connection, most of
    // the stream is still on its way (in the kernel's buffers and the relays' queues). The queued-bytes
    // cases themselves are pinned in tests/relay.test.ts ("stream ends").
    const banner = randomData(32 << 20, 11);
    const app = await bannerApp(banner, true);
    const port = await online("queued", app.port);
    const session = server.hub.session("queued")!;
    const h = createHash("sha256");
    let got = 0;
    const s = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    const ended = new Promise<string>((resolve) => {
      s.on("end", () => resolve("end"));
      s.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    s.on("data", (d: Buffer) => {
      got += d.length;
      h.update(d);
      // At most one chunk per millisecond.
      s.pause();
      setTimeout(() => s.resume(), 1);
    });
    s.end("x");
    await until(() => session.counts.workFreed === 1, 20_000, "the client's WorkFree");
    expect(got).toBeLessThan(banner.length - (1 << 20)); // most of the banner still on its way
    session.end(null, "test"); // as a heartbeat timeout would
    expect(await ended).toBe("end");
    expect(got).toBe(banner.length);
    expect(h.digest("hex")).toBe(sha256(banner));
    await until(() => app.got.length === 1, 5000, "the app got the user's byte and FIN");
    expect(app.got[0]!.bytes).toBe(1);
  }, 30_000);

  test("the control connection lost mid-stream: the stream carries on, but an end that can no longer be counted is a reset, never a FIN", async () => {
    const port = await online("lost", echo.port);
    const first = randomData(200_000, 1);
    const second = randomData(300_000, 2);
    const h = createHash("sha256");
    let got = 0;
    const s = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    const ended = new Promise<string>((r) => {
      s.on("end", () => r("FIN"));
      s.on("error", (e: NodeJS.ErrnoException) => r(e.code ?? e.message));
    });
    s.on("data", (d: Buffer) => {
      got += d.length;
      h.update(d);
    });
    s.write(first);
    await until(() => got === first.length, 5000, "first echo");
    expect(h.copy().digest("hex")).toBe(sha256(first));
    server.hub.session("lost")!.end(null, "test"); // as a heartbeat timeout would
    await until(async () => !(await (await api("/api/groups/lost")).json()).online, 5000, "offline");
    // The user's FIN after the loss: the client can no longer learn its count (a FIN on the work
    // connection proves nothing), so the app would get a reset; the user gets one too.
    s.end(second);
    expect(await ended).toBe("ECONNRESET");
    s.destroy();
    await until(async () => (await (await api("/api/groups/lost")).json()).online, 10_000, "back online");
    const again = randomData(500_000, 9);
    const res = await roundTrip(port, again);
    expect(res.hash).toBe(sha256(again));
  });
});
