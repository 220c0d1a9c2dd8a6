/** UDP apps: boundaries, per-peer replies, idle expiry, the peer cap, a local app that is down, client restarts. */
import { afterAll, describe, expect, test } from "bun:test";
import type { udp } from "bun";
import { DatagramReader, encodeDatagramInto, ErrorCode, MAX_DATAGRAM_BYTES } from "../protocol.ts";
import type { Connector } from "../lib/client/connector.ts";
import { clientConfig, deadPort, onlineClient, randomData, roundTrip, sha256, testServer, TOKEN, until, echoApp } from "./helpers.ts";

type Sock = udp.Socket<"uint8array">;

/** A UDP echo app; `transform` may rewrite each reply. */
async function udpEcho(port = 0, transform: (b: Uint8Array) => Uint8Array = (b) => b): Promise<Sock> {
  return Bun.udpSocket({
    hostname: "127.0.0.1",
    port,
    binaryType: "uint8array",
    socket: {
      data(s, buf, p, addr) {
        s.send(transform(buf), p, addr);
      },
      error() {},
    },
  });
}

/** A public-side peer that records what it receives. */
async function peer(): Promise<{ sock: Sock; got: Uint8Array[]; wake: () => void; waitFor(n: number, ms?: number): Promise<void> }> {
  const got: Uint8Array[] = [];
  let waiter: (() => void) | null = null;
  const sock = await Bun.udpSocket({
    hostname: "127.0.0.1",
    binaryType: "uint8array",
    socket: {
      data(_s, buf) {
        got.push(buf.slice());
        waiter?.();
      },
      error() {},
    },
  });
  return {
    sock,
    got,
    wake: () => waiter?.(),
    async waitFor(n, ms = 3000) {
      const end = Date.now() + ms;
      while (got.length < n) {
        const left = end - Date.now();
        if (left <= 0) throw new Error(`peer ${sock.port}: ${got.length} of ${n} replies after ${ms} ms`);
        await new Promise<void>((r) => {
          waiter = r;
          setTimeout(r, Math.min(left, 50));
        });
        waiter = null;
      }
    },
  };
}

const server = await testServer({ udpIdleTimeout: 0.4 });
const connectors: Connector[] = [];
const sockets: { close(): void }[] = [];
afterAll(() => {
  for (const c of connectors) c.stop();
  for (const s of sockets) s.close();
  server.stop();
});
const api = (path: string, init: RequestInit = {}) => fetch(`http://127.0.0.1:${server.apiPort}${path}`, { ...init, headers: { authorization: `Bearer ${server.adminToken}` } });

async function udpGroup(name: string, localPort: number, extra: Record<string, unknown> = {}, remotePort = 0) {
  const res = await api("/api/groups", { method: "POST", body: JSON.stringify({ name, token: TOKEN, apps: [{ name: "u", type: "udp", remotePort }] }) });
  expect(res.status).toBe(201);
  const c = await onlineClient(clientConfig(server, name, [{ name: "u", type: "udp", localAddr: `127.0.0.1:${localPort}` }], extra));
  connectors.push(c.connector);
  expect(c.apps[0]!.error).toBe("");
  return { ...c, port: c.apps[0]!.remotePort };
}

describe("datagram frames", () => {
  test("frames round-trip, split anywhere; a frame claiming more than 65,507 bytes is a protocol error", () => {
    const buf = new Uint8Array(200_000);
    let at = 0;
    const sent: [string, number, Uint8Array][] = [["127.0.0.1", 5000, randomData(1, 1)], ["::1", 65535, randomData(MAX_DATAGRAM_BYTES, 2)], ["10.0.0.1", 1, new Uint8Array(0)]];
    for (const [a, p, d] of sent) at = encodeDatagramInto(buf, at, a, p, d);
    const got: [string, number, string][] = [];
    const r = new DatagramReader((a, p, d) => got.push([a, p, sha256(d)]));
    for (let i = 0; i < at; i += 777) expect(r.push(buf.subarray(i, Math.min(at, i + 777)))).toBeNull();
    expect(got).toEqual(sent.map(([a, p, d]) => [a, p, sha256(d)]));
    const bad = new Uint8Array([9, ...new TextEncoder().encode("127.0.0.1"), 0, 53, 0xff, 0xe4]); // 65,508 bytes claimed
    const err = new DatagramReader(() => {}).push(bad);
    expect(err?.code).toBe(ErrorCode.MalformedFrame);
    expect(err?.message).toContain("65508");
  });
});

describe("udp apps", () => {
  test("10 peers x 1,000 datagrams of 1-1,400 bytes plus 60,000-byte ones: every reply reaches its sender, byte for byte, none lost", async () => {
    const app = await udpEcho();
    sockets.push(app);
    const { port } = await udpGroup("udp-echo", app.port);
    const peers = await Promise.all(Array.from({ length: 10 }, () => peer()));
    for (const p of peers) sockets.push(p.sock);
    const WINDOW = 8; // datagrams in flight per peer: the pacing
    const sent: Uint8Array[][] = peers.map(() => []);
    const t0 = performance.now();
    await Promise.all(
      peers.map(async (p, i) => {
        for (let k = 0; k < 1000; k++) {
          const d = randomData(1 + ((k * 7919 + i * 104729) % 1400), i * 1000 + k + 1);
          sent[i]!.push(d);
          p.sock.send(d, port, "127.0.0.1");
          if (k >= WINDOW - 1) await p.waitFor(k - WINDOW + 2);
        }
        await p.waitFor(1000);
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    // Large datagrams one at a time across all peers: a 60 KB datagram fills a fair share of a socket buffer.
    for (const [i, p] of peers.entries()) {
      for (let k = 0; k < 3; k++) {
        const d = randomData(60_000, 77 + i * 10 + k);
        sent[i]!.push(d);
        p.sock.send(d, port, "127.0.0.1");
        await p.waitFor(sent[i]!.length);
      }
    }
    for (const [i, p] of peers.entries()) {
      expect(p.got.length).toBe(sent[i]!.length);
      expect(p.got.map(sha256)).toEqual(sent[i]!.map(sha256));
    }
    console.log(`udp: 10,000 datagrams (1-1,400 B, 8 in flight per peer) echoed in ${seconds.toFixed(2)} s = ${Math.round(20_000 / seconds)} datagrams/s relayed both ways, 0 lost`);
    const view = await (await api("/api/groups/udp-echo")).json();
    const total = sent.flat().reduce((n, d) => n + d.length, 0);
    expect(view.apps[0].type).toBe("udp");
    expect(view.apps[0].bytesIn).toBe(total);
    expect(view.apps[0].bytesOut).toBe(total);
    expect(view.apps[0].droppedDatagrams).toBe(0);
  }, 60_000);

  test("idle peers are freed on both sides; the peer cap evicts the least recently seen", async () => {
    const app = await udpEcho();
    sockets.push(app);
    const { connector, port } = await udpGroup("udp-idle", app.port, { udpIdleTimeout: 0.4, udpMaxPeers: 2 });
    const [a, b, c] = await Promise.all([peer(), peer(), peer()]);
    sockets.push(a.sock, b.sock, c.sock);
    a.sock.send(new Uint8Array([1]), port, "127.0.0.1");
    await a.waitFor(1);
    b.sock.send(new Uint8Array([2]), port, "127.0.0.1");
    await b.waitFor(1);
    expect(connector.udpCounters("u")).toMatchObject({ peers: 2, evicted: 0 });
    c.sock.send(new Uint8Array([3]), port, "127.0.0.1");
    await c.waitFor(1);
    expect(connector.udpCounters("u")).toMatchObject({ peers: 2, evicted: 1 });
    // a was evicted; it still gets answers (a new local socket), and b is now the oldest.
    a.sock.send(new Uint8Array([4]), port, "127.0.0.1");
    await a.waitFor(2);
    expect(connector.udpCounters("u")).toMatchObject({ peers: 2, evicted: 2 });
    expect((await (await api("/api/groups/udp-idle")).json()).apps[0].connections).toBe(3);
    await until(() => connector.udpCounters("u")!.peers === 0, 3000, "client peers expire");
    expect(connector.udpCounters("u")!.expired).toBe(2);
    await until(async () => (await (await api("/api/groups/udp-idle")).json()).apps[0].connections === 0, 3000, "server peers expire");
  }, 30_000);

  test("local app down: datagrams are dropped and counted, nothing crashes, and it recovers when the app returns", async () => {
    const localPort = await deadPort();
    const { connector, port } = await udpGroup("udp-down", localPort);
    const p = await peer();
    sockets.push(p.sock);
    for (let i = 0; i < 50; i++) {
      p.sock.send(new Uint8Array([i]), port, "127.0.0.1");
      await Bun.sleep(2); // spaced so that each send meets the ICMP error of the previous one
    }
    await until(() => (connector.udpCounters("u")?.localErrors ?? 0) > 0, 3000, "local errors counted");
    expect(connector.udpCounters("u")!.dropped).toBeGreaterThan(0);
    expect(p.got.length).toBe(0);
    const app = await udpEcho(localPort);
    sockets.push(app);
    p.sock.send(new Uint8Array([42]), port, "127.0.0.1");
    await p.waitFor(1);
    expect([...p.got[0]!]).toEqual([42]);
  }, 30_000);

  test("a DNS-style request/response app works through the tunnel", async () => {
    // Answers each query with its id and a fixed A record (flags: response, no error).
    const dns = await udpEcho(0, (q) => {
      const answer = new Uint8Array([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 9]);
      const r = new Uint8Array(q.length + answer.length);
      r.set(q);
      r[2] = 0x81;
      r[3] = 0x80;
      r[7] = 1; // ANCOUNT = 1
      r.set(answer, q.length);
      return r;
    });
    sockets.push(dns);
    const { port } = await udpGroup("udp-dns", dns.port);
    const p = await peer();
    sockets.push(p.sock);
    const name = [7, ..."example".split("").map((c) => c.charCodeAt(0)), 3, 99, 111, 109, 0];
    for (let id = 1; id <= 20; id++) {
      const query = new Uint8Array([id >> 8, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...name, 0, 1, 0, 1]);
      p.sock.send(query, port, "127.0.0.1");
      await p.waitFor(id);
      const r = p.got[id - 1]!;
      expect((r[0]! << 8) | r[1]!).toBe(id);
      expect(r[3]! & 0x0f).toBe(0);
      expect([...r.subarray(r.length - 4)]).toEqual([127, 0, 0, 9]);
    }
  }, 30_000);

  test("after a client restart the UDP app works again at the same port; TCP and UDP apps share a port number", async () => {
    const app = await udpEcho();
    sockets.push(app);
    const tcpEcho = await echoApp();
    sockets.push(tcpEcho);
    const shared = await deadPort();
    const res = await api("/api/groups", {
      method: "POST",
      body: JSON.stringify({ name: "udp-both", token: TOKEN, apps: [{ name: "dns", type: "udp", remotePort: shared }, { name: "web", type: "tcp", remotePort: shared }] }),
    });
    expect(res.status).toBe(201);
    const cfg = clientConfig(server, "udp-both", [
      { name: "web", localAddr: `127.0.0.1:${tcpEcho.port}` },
      { name: "dns", type: "udp", localAddr: `127.0.0.1:${app.port}` },
    ]);
    const first = await onlineClient(cfg);
    expect(first.apps.map((a) => [a.name, a.remotePort, a.error])).toEqual([["web", shared, ""], ["dns", shared, ""]]);
    const p = await peer();
    sockets.push(p.sock);
    p.sock.send(new Uint8Array([1, 2, 3]), shared, "127.0.0.1");
    await p.waitFor(1);
    const data = randomData(50_000, 3);
    expect((await roundTrip(shared, data)).hash).toBe(sha256(data));
    first.connector.stop();
    await until(async () => !(await (await api("/api/groups/udp-both")).json()).online, 3000, "offline");
    const second = await onlineClient(cfg);
    connectors.push(second.connector);
    expect(second.apps.find((a) => a.name === "dns")!.remotePort).toBe(shared);
    p.sock.send(new Uint8Array([4, 5, 6]), shared, "127.0.0.1");
    await p.waitFor(2);
    expect([...p.got[1]!]).toEqual([4, 5, 6]);
  }, 30_000);
});
