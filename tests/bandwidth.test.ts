/**
 * bandwidthLimit (issue 18): an app's streams together move at most the limit each way,
 * by pausing reads (never by dropping bytes): one stream and 16 sharing the limit, both
 * directions, byte-exact, over 10 s (BANDWIDTH_SECONDS to change it: the last chunk read
 * before the end is not paid back, so shorter spans overshoot by up to a chunk).
 */
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { clientConfig, onlineClient, randomData, sha256, testServer, TOKEN } from "./helpers.ts";

const LIMIT = 2 * 1024 * 1024; // "2MB"
const SECONDS = Number(process.env.BANDWIDTH_SECONDS ?? 10);
const cleanup: (() => void)[] = [];
afterAll(() => {
  for (const f of cleanup.reverse()) f();
});

/** A local app that sends `bytes` pattern bytes on each connection, then ends; and counts what it is sent. */
async function sourceApp(bytes: number) {
  const data = randomData(bytes, 30);
  const received = { n: 0 };
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on("error", () => {});
    s.on("data", (d: Buffer) => (received.n += d.length));
    s.on("end", () => s.end());
    s.write(data, () => s.end());
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  cleanup.push(() => void srv.close());
  return { port: (srv.address() as net.AddressInfo).port, data, received };
}

/** Downloads everything one connection sends; resolves with the bytes and the time taken. */
function download(port: number): Promise<{ bytes: Buffer; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const chunks: Buffer[] = [];
    const s = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("end", () => {
      s.end();
      resolve({ bytes: Buffer.concat(chunks), ms: performance.now() - t0 });
    });
    s.on("error", reject);
  });
}

async function limitedApp(name: string, localPort: number, bandwidthLimit?: string) {
  const server = await testServer();
  cleanup.push(() => server.stop());
  const res = await fetch(`http://127.0.0.1:${server.apiPort}/api/groups`, {
    method: "POST",
    headers: { authorization: `Bearer ${server.adminToken}` },
    body: JSON.stringify({ name, token: TOKEN, apps: [{ name: "a", ...(bandwidthLimit ? { bandwidthLimit } : {}) }] }),
  });
  expect(res.status).toBe(201);
  const { connector, apps } = await onlineClient(clientConfig(server, name, [{ name: "a", localAddr: `127.0.0.1:${localPort}` }]));
  cleanup.push(() => connector.stop());
  return apps[0]!.remotePort;
}

const within5 = (bytes: number, ms: number) => {
  const rate = bytes / (ms / 1000);
  return Math.abs(rate - LIMIT) / LIMIT;
};

describe("bandwidthLimit", () => {
  test(`one download at "2MB": 2 MiB/s within 5 % over ${SECONDS} s, byte-exact`, async () => {
    const app = await sourceApp(LIMIT * SECONDS);
    const port = await limitedApp("bw1", app.port, "2MB");
    const got = await download(port);
    expect(sha256(got.bytes)).toBe(sha256(app.data));
    console.log(`bandwidth: 1 stream, ${(got.bytes.length / 2 ** 20).toFixed(1)} MiB in ${(got.ms / 1000).toFixed(2)} s = ${(got.bytes.length / 2 ** 20 / (got.ms / 1000)).toFixed(3)} MiB/s (limit 2)`);
    expect(within5(got.bytes.length, got.ms)).toBeLessThan(0.05);
  }, 30_000);

  test(`16 downloads sharing "2MB": 2 MiB/s together within 5 %, each byte-exact`, async () => {
    const each = Math.floor((LIMIT * SECONDS) / 16);
    const app = await sourceApp(each);
    const port = await limitedApp("bw16", app.port, "2MB");
    const t0 = performance.now();
    const all = await Promise.all(Array.from({ length: 16 }, () => download(port)));
    const ms = performance.now() - t0;
    for (const r of all) expect(sha256(r.bytes)).toBe(sha256(app.data));
    console.log(`bandwidth: 16 streams, ${((each * 16) / 2 ** 20).toFixed(1)} MiB in ${(ms / 1000).toFixed(2)} s = ${((each * 16) / 2 ** 20 / (ms / 1000)).toFixed(3)} MiB/s (limit 2)`);
    expect(within5(each * 16, ms)).toBeLessThan(0.05);
  }, 30_000);

  test(`a group's "2MB" is shared by its apps: two apps without a limit of their own, 2 MiB/s together`, async () => {
    const half = Math.floor((LIMIT * SECONDS) / 2);
    const app = await sourceApp(half);
    const server = await testServer();
    cleanup.push(() => server.stop());
    const res = await fetch(`http://127.0.0.1:${server.apiPort}/api/groups`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({ name: "bwg", token: TOKEN, bandwidthLimit: "2MB", apps: [{ name: "a" }, { name: "b" }] }),
    });
    expect(res.status).toBe(201);
    expect(((await res.json()) as { bandwidthLimit: string }).bandwidthLimit).toBe("2MB");
    const local = `127.0.0.1:${app.port}`;
    const { connector, apps } = await onlineClient(clientConfig(server, "bwg", [{ name: "a", localAddr: local }, { name: "b", localAddr: local }]));
    cleanup.push(() => connector.stop());
    const t0 = performance.now();
    const [a, b] = await Promise.all(apps.map((x) => download(x.remotePort)));
    const ms = performance.now() - t0;
    expect([sha256(a!.bytes), sha256(b!.bytes)]).toEqual([sha256(app.data), sha256(app.data)]);
    console.log(`bandwidth: group limit, 2 apps, ${((half * 2) / 2 ** 20).toFixed(1)} MiB in ${(ms / 1000).toFixed(2)} s (limit 2 MiB/s)`);
    expect(within5(half * 2, ms)).toBeLessThan(0.05);
  }, 30_000);

  test(`an upload at "2MB" is limited too, and arrives whole`, async () => {
    const app = await sourceApp(0);
    const port = await limitedApp("bwup", app.port, "2MB");
    const data = randomData(LIMIT * SECONDS, 31);
    const t0 = performance.now();
    const s = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true }, () => s.end(data));
    s.on("data", () => {});
    s.on("error", () => {});
    const { until } = await import("./helpers.ts");
    await until(() => app.received.n === data.length, (SECONDS + 10) * 1000, "the whole upload at the app");
    const ms = performance.now() - t0;
    s.destroy();
    expect(app.received.n).toBe(data.length);
    console.log(`bandwidth: 1 upload, ${(data.length / 2 ** 20).toFixed(1)} MiB in ${(ms / 1000).toFixed(2)} s (limit 2 MiB/s)`);
    expect(within5(data.length, ms)).toBeLessThan(0.05);
  }, 30_000);

  test("without a limit the same download is not slowed", async () => {
    const app = await sourceApp(LIMIT * SECONDS);
    const port = await limitedApp("bwnone", app.port);
    const got = await download(port);
    expect(sha256(got.bytes)).toBe(sha256(app.data));
    expect(got.bytes.length / (got.ms / 1000)).toBeGreaterThan(LIMIT * 4);
  });

  test("a malformed bandwidthLimit is a 400 naming the key", async () => {
    const server = await testServer();
    cleanup.push(() => server.stop());
    const res = await fetch(`http://127.0.0.1:${server.apiPort}/api/groups`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({ name: "bad", token: TOKEN, apps: [{ name: "a", bandwidthLimit: "fast" }] }),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { issues: { path: string }[] }).issues[0]!.path).toBe("apps[0].bandwidthLimit");
    // On a UDP app a limit could only drop datagrams: refused, not ignored.
    const udp = await fetch(`http://127.0.0.1:${server.apiPort}/api/groups`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({ name: "badudp", token: TOKEN, apps: [{ name: "u", type: "udp", bandwidthLimit: "1MB" }] }),
    });
    expect(udp.status).toBe(400);
    expect(((await udp.json()) as { issues: { path: string; message: string }[] }).issues[0]).toEqual({
      path: "apps[0].bandwidthLimit",
      message: "applies to TCP apps only (a UDP app could only be limited by dropping datagrams)",
    });
  });
});
