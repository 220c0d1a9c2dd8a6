/** UDP limits: the work-connection backlog, the batch without a work connection, datagrams held per new peer, the drop log's rate, maxConnections. */
import { afterEach, describe, expect, setSystemTime, test } from "bun:test";
import type { udp } from "bun";
import { datagramFrameBytes, DatagramReader, encodeDatagramInto } from "../protocol.ts";
import { setLogLevel, setLogSink } from "../lib/log.ts";
import { Endpoint } from "../lib/net/endpoint.ts";
import { relayHandler } from "../lib/net/sockets.ts";
import { DatagramBatcher, DROP_LOG_INTERVAL_MS, dropLog, UDP_BATCH_BYTES, UDP_MAX_QUEUED_BYTES, UDP_PENDING_PER_PEER } from "../lib/net/datagrams.ts";
import { UdpLocal } from "../lib/client/udp.ts";
import { UdpPublic } from "../lib/server/apps/udp.ts";
import { randomData, sha256, until } from "./helpers.ts";

type Sock = udp.Socket<"uint8array">;
type Frame = { address: string; port: number; payload: Uint8Array };

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const fn of cleanup.splice(0).reverse()) fn();
});

/** Collects items and wakes waiters as each arrives, so tests wait for the event instead of sleeping. */
class Inbox<T> {
  readonly items: T[] = [];
  #waiters: (() => void)[] = [];
  push(item: T): void {
    this.items.push(item);
    for (const w of this.#waiters.splice(0)) w();
  }
  /** Resolves once `n` items have arrived; fails after `ms` (performance.now: a test may freeze Date). */
  atLeast(n: number, what: string, ms = 2000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${what}: ${this.items.length} of ${n} after ${ms} ms`)), ms);
      const check = (): void => {
        if (this.items.length < n) return void this.#waiters.push(check);
        clearTimeout(timer);
        resolve();
      };
      check();
    });
  }
}

/** A UDP socket on 127.0.0.1 that records what it receives, with the error handler Bun needs (BUN-NOTES.md). */
async function udpSock(): Promise<{ sock: Sock; got: Inbox<{ payload: Uint8Array; port: number }> }> {
  const got = new Inbox<{ payload: Uint8Array; port: number }>();
  const sock = await Bun.udpSocket({
    hostname: "127.0.0.1",
    binaryType: "uint8array",
    socket: {
      data: (_s, payload, port) => got.push({ payload: payload.slice(), port }),
      error() {},
    },
  });
  cleanup.push(() => sock.close());
  return { sock, got };
}

/** A work connection over real TCP on loopback: the near end is a relay Endpoint, the far end parses the datagram frames it carries. */
async function workLink(): Promise<{ ep: Endpoint; frames: Inbox<Frame>; errors: string[] }> {
  const frames = new Inbox<Frame>();
  const errors: string[] = [];
  const reader = new DatagramReader((address, port, payload) => frames.push({ address, port, payload: new Uint8Array(payload) }));
  const listener = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      data(_s, chunk) {
        const err = reader.push(chunk);
        if (err) errors.push(err.message);
      },
      error(_s, err) {
        errors.push(err.message);
      },
    },
  });
  const ep = new Endpoint();
  const opened = new Promise<void>((resolve) => (ep.onOpen = () => resolve()));
  await Bun.connect<Endpoint>({ hostname: "127.0.0.1", port: listener.port, data: ep, socket: relayHandler() });
  await opened;
  cleanup.push(() => {
    ep.destroy();
    listener.stop(true);
  });
  return { ep, frames, errors };
}

/** One datagram frame, as the other side of a work connection sends it. */
function frameOf(address: string, port: number, payload: Uint8Array): Uint8Array {
  const buf = new Uint8Array(datagramFrameBytes(address, payload));
  encodeDatagramInto(buf, 0, address, port, payload);
  return buf;
}

function udpStats() {
  return { connections: 0, bytesIn: 0, bytesOut: 0, denied: 0, overLimit: 0, dropped: 0, accepted: 0, datagramsIn: 0, datagramsOut: 0 };
}

async function openPublic(maxConnections: number, stats: ReturnType<typeof udpStats>): Promise<UdpPublic> {
  const app = await UdpPublic.open("127.0.0.1", { name: "u", remotePort: 0, allowIPs: [], denyIPs: [], maxConnections }, stats, 60_000, { app: "u" });
  if (typeof app === "string") throw new Error(app);
  cleanup.push(() => app.close());
  return app;
}

const nextTurn = () => new Promise<void>((r) => setImmediate(r));

describe("UDP_MAX_QUEUED_BYTES", () => {
  test("a burst toward a work connection that takes no bytes is accepted until the backlog passes the limit, then refused; the backlog stays within the limit plus one batch", async () => {
    const work = new Endpoint(); // no socket: every write stays queued, like a work connection whose peer stopped reading
    cleanup.push(() => work.destroy());
    const batcher = new DatagramBatcher(() => work);
    const payload = randomData(1000, 7);
    const frame = datagramFrameBytes("127.0.0.1", payload);
    // The first datagram is written at once, then whole batches of `perBatch` frames as the buffer fills.
    // The flush that lifts the backlog past the limit was triggered by a datagram that starts the next
    // batch; the one after it is the first refused.
    const perBatch = Math.floor(UDP_BATCH_BYTES / frame);
    const flushes = Math.floor((UDP_MAX_QUEUED_BYTES - frame) / (perBatch * frame)) + 1;
    const expected = 1 + flushes * perBatch + 1;
    const attempts = expected + 500;
    let accepted = 0;
    let lastAccepted = -1;
    let most = 0;
    for (let i = 0; i < attempts; i++) {
      if (batcher.add("127.0.0.1", 1024 + i, payload)) {
        accepted++;
        lastAccepted = i;
      }
      most = Math.max(most, work.queued);
    }
    expect(accepted).toBe(expected);
    expect(lastAccepted).toBe(expected - 1); // once refused, nothing more of the burst gets in
    expect(attempts - accepted).toBe(500);
    expect(most).toBeGreaterThan(UDP_MAX_QUEUED_BYTES);
    await nextTurn(); // the batcher's end-of-turn flush
    // Every accepted datagram sits in the backlog exactly once, and the backlog stayed bounded.
    expect(work.queued).toBe(accepted * frame);
    expect(work.queued).toBeLessThanOrEqual(UDP_MAX_QUEUED_BYTES + UDP_BATCH_BYTES);
    expect(batcher.add("127.0.0.1", 1, payload)).toBe(false); // still backed up on the next turn
  });

  test("client: replies from the local app beyond the backlog limit are dropped and counted, one per datagram", async () => {
    const app = await udpSock();
    const work = new Endpoint(); // no socket: what the client sends toward the server stays queued
    cleanup.push(() => work.destroy());
    const local = new UdpLocal(work, { name: "backlog", host: "127.0.0.1", port: app.sock.port }, 60_000, 16);
    cleanup.push(() => local.close());
    expect(local.push(frameOf("203.0.113.5", 7000, new Uint8Array([1])))).toBeNull();
    await app.got.atLeast(1, "the first datagram at the local app");
    const peerPort = app.got.items[0]!.port; // the client's local socket for 203.0.113.5:7000
    const reply = randomData(60_000, 3);
    const frame = datagramFrameBytes("203.0.113.5", reply);
    const accepted = Math.floor(UDP_MAX_QUEUED_BYTES / frame) + 1; // refused once the backlog is past the limit
    const sent = accepted + 3;
    const handled = () => work.queued / frame + local.counters.dropped;
    for (let i = 1; i <= sent; i++) {
      app.sock.send(reply, peerPort, "127.0.0.1");
      // One at a time, so that each datagram is its own event-loop turn and the count does not depend on batching.
      await until(() => handled() === i, 2000, `reply ${i} queued or dropped`);
    }
    expect(work.queued).toBe(accepted * frame);
    expect(local.counters.dropped).toBe(3);
    expect(local.counters.localErrors).toBe(0);
  });
});

describe("UDP_BATCH_BYTES", () => {
  test("server without a work connection: one batch is held, to the byte; datagrams beyond it are dropped and counted; the held ones arrive intact once a work connection comes", async () => {
    const stats = udpStats();
    const app = await openPublic(0, stats);
    const peer = await udpSock();
    const big = [1, 2, 3, 4, 5, 6].map((seed) => randomData(60_000, seed));
    const bigFrame = datagramFrameBytes("127.0.0.1", big[0]!);
    const fits = Math.floor(UDP_BATCH_BYTES / bigFrame); // 4 with the defaults
    // A datagram whose frame fills the batch exactly: the cap is inclusive.
    const fill = randomData(UDP_BATCH_BYTES - fits * bigFrame - datagramFrameBytes("127.0.0.1", new Uint8Array(0)), 9);
    const sends = [...big.slice(0, fits + 2), fill, new Uint8Array([7])];
    const held = [...big.slice(0, fits), fill];
    let seen = 0;
    for (const d of sends) {
      peer.sock.send(d, app.port, "127.0.0.1");
      // One at a time: wait until the app has taken this datagram (counted in, or dropped).
      await until(() => stats.bytesIn + app.dropped !== seen, 2000, "the datagram reaches the app");
      seen = stats.bytesIn + app.dropped;
    }
    expect(app.dropped).toBe(3); // two of 60,000 bytes past the batch, and one byte past the exact fill
    expect(held.reduce((n, d) => n + datagramFrameBytes("127.0.0.1", d), 0)).toBe(UDP_BATCH_BYTES);

    const link = await workLink();
    app.attach(link.ep);
    await link.frames.atLeast(held.length, "the held batch");
    const after = new Uint8Array([42]);
    peer.sock.send(after, app.port, "127.0.0.1");
    await link.frames.atLeast(held.length + 1, "a datagram after the work connection came");
    const want = [...held, after].map((d) => ["127.0.0.1", peer.sock.port, sha256(d)]);
    expect(link.frames.items.map((f) => [f.address, f.port, sha256(f.payload)])).toEqual(want);
    expect(link.errors).toEqual([]);
    expect(app.dropped).toBe(3);
  });
});

describe("UDP_PENDING_PER_PEER", () => {
  test("client: datagrams for a new peer are held while its local socket opens, up to the limit; the rest are dropped and counted; the local app gets exactly the held ones, in order", async () => {
    const app = await udpSock();
    const work = new Endpoint();
    cleanup.push(() => work.destroy());
    const local = new UdpLocal(work, { name: "pending", host: "127.0.0.1", port: app.sock.port }, 60_000, 16);
    cleanup.push(() => local.close());
    const extra = 10;
    const payloads = Array.from({ length: UDP_PENDING_PER_PEER + extra }, (_, i) => new Uint8Array([i >> 8, i & 0xff, 0xab, i % 7]));
    // One chunk, handled synchronously: the peer's socket cannot have opened (Bun.udpSocket is a Promise) before the last frame.
    const chunk = new Uint8Array(payloads.reduce((n, p) => n + datagramFrameBytes("198.51.100.7", p), 0));
    let at = 0;
    for (const p of payloads) at = encodeDatagramInto(chunk, at, "198.51.100.7", 4000, p);
    expect(local.push(chunk)).toBeNull();
    expect(local.counters).toMatchObject({ peers: 1, dropped: extra });
    await app.got.atLeast(1, "the held datagrams");
    // The socket is open now, so this one is sent at once, behind the held ones on the same socket pair:
    // when it arrives, anything else the client sent has arrived too, and no sleep is needed to prove it.
    const sentinel = new Uint8Array([0xff, 0xff]);
    expect(local.push(frameOf("198.51.100.7", 4000, sentinel))).toBeNull();
    await app.got.atLeast(UDP_PENDING_PER_PEER + 1, "the held datagrams and the sentinel");
    const want = [...payloads.slice(0, UDP_PENDING_PER_PEER), sentinel].map((p) => [...p]);
    expect(app.got.items.map((g) => [...g.payload])).toEqual(want);
    expect(new Set(app.got.items.map((g) => g.port)).size).toBe(1); // one local socket for the peer
    expect(local.counters).toMatchObject({ peers: 1, dropped: extra, localErrors: 0 });
  });
});

describe("DROP_LOG_INTERVAL_MS", () => {
  test("drops within the interval give one log line; the next line, once the interval has passed, carries the count since the last", async () => {
    const app = await udpSock();
    const work = new Endpoint();
    cleanup.push(() => work.destroy());
    const lines: string[] = [];
    // Every test server sets "warn"; an earlier test file in this process may have set another level.
    setLogLevel("warn");
    setLogSink((line) => lines.push(line));
    const t0 = Date.now();
    setSystemTime(new Date(t0)); // Date is frozen (timers are not): the interval is crossed by moving the clock
    cleanup.push(() => {
      setSystemTime();
      setLogSink((line) => console.error(line)); // the default sink (lib/log.ts)
    });
    const local = new UdpLocal(work, { name: "droplog", host: "127.0.0.1", port: app.sock.port }, 60_000, 16);
    cleanup.push(() => local.close());
    const ours = () => lines.filter((l) => l.includes("udp datagrams dropped") && l.includes("app=droplog"));
    const counts = () => ours().map((l) => Number(/ count=(\d+)$/.exec(l)?.[1]));
    const burst = (n: number, from: number) => {
      // Datagrams for a peer whose socket is still opening: past UDP_PENDING_PER_PEER each one is a drop, synchronously.
      for (let i = 0; i < n; i++) expect(local.push(frameOf("192.0.2.9", 53, new Uint8Array([from + i])))).toBeNull();
    };
    burst(UDP_PENDING_PER_PEER + 100, 0);
    expect(local.counters.dropped).toBe(100);
    expect(ours()).toHaveLength(1);
    expect(ours()[0]).toMatch(/WARN\s+udp datagrams dropped app=droplog reason="local socket not ready" count=1$/);
    setSystemTime(new Date(t0 + DROP_LOG_INTERVAL_MS - 1));
    burst(1, 200);
    expect(counts()).toEqual([1]);
    setSystemTime(new Date(t0 + DROP_LOG_INTERVAL_MS));
    burst(1, 201);
    // 99 held back after the first line, one just before the interval ended, and this one.
    expect(counts()).toEqual([1, 101]);
    expect(local.counters.dropped).toBe(102);
  });

  test("drops that stop after a line are still reported, once the interval has ended", async () => {
    const app = await udpSock();
    const work = new Endpoint();
    cleanup.push(() => work.destroy());
    setLogLevel("warn");
    let tail!: (line: string) => void;
    const tailLine = new Promise<string>((r) => (tail = r));
    const lines: string[] = [];
    setLogSink((line) => {
      if (!line.includes("app=droptail")) return;
      lines.push(line);
      if (lines.length === 2) tail(line);
    });
    dropLog.intervalMs = 100; // the default, 5 s, is a real-time wait
    cleanup.push(() => {
      dropLog.intervalMs = DROP_LOG_INTERVAL_MS;
      setLogSink((line) => console.error(line));
    });
    const local = new UdpLocal(work, { name: "droptail", host: "127.0.0.1", port: app.sock.port }, 60_000, 16);
    cleanup.push(() => local.close());
    const t0 = performance.now();
    for (let i = 0; i < UDP_PENDING_PER_PEER + 6; i++) expect(local.push(frameOf("192.0.2.10", 53, new Uint8Array([i])))).toBeNull();
    expect(lines).toHaveLength(1); // the first drop, at once; the other five wait for the interval's end
    expect(await tailLine).toMatch(/reason="local socket not ready" count=5$/);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(90);
  });
});

describe("maxConnections", () => {
  test("a UDP app with maxConnections 1 refuses a second public peer and counts each of its datagrams in overLimit, while the first peer keeps working both ways", async () => {
    const stats = udpStats();
    const app = await openPublic(1, stats);
    const link = await workLink();
    app.attach(link.ep);
    const [a, b] = await Promise.all([udpSock(), udpSock()]);
    a.sock.send(new Uint8Array([1]), app.port, "127.0.0.1");
    await link.frames.atLeast(1, "a's first datagram");
    b.sock.send(new Uint8Array([2]), app.port, "127.0.0.1");
    b.sock.send(new Uint8Array([3]), app.port, "127.0.0.1");
    // Sent after b's on loopback, so it reaches the public socket after them: once it is relayed, b's
    // datagrams have been handled too (no sleep needed to show that they were not relayed).
    a.sock.send(new Uint8Array([4]), app.port, "127.0.0.1");
    await link.frames.atLeast(2, "a's second datagram");
    expect(link.frames.items.map((f) => [f.address, f.port, [...f.payload]])).toEqual([
      ["127.0.0.1", a.sock.port, [1]],
      ["127.0.0.1", a.sock.port, [4]],
    ]);
    expect(stats).toMatchObject({ connections: 1, overLimit: 2, denied: 0, bytesIn: 2 });
    // A reply from the client still reaches a.
    expect(app.fromClient(frameOf("127.0.0.1", a.sock.port, new Uint8Array([9, 9])))).toBeNull();
    await a.got.atLeast(1, "the reply to a");
    expect([...a.got.items[0]!.payload]).toEqual([9, 9]);
    expect(app.dropped).toBe(0);
    expect(link.errors).toEqual([]);
  });
});
