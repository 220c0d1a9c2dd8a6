/** Unit tests of the relay's held headers, stream ends, limits and the shared-timer deadlines, on real loopback sockets. */
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { Deadlines } from "../lib/net/deadlines.ts";
import { randomBytes } from "node:crypto";
import { Endpoint, HIGH_WATER_BYTES, linger, LINGER_MS, MAX_CONTROL_QUEUE_BYTES } from "../lib/net/endpoint.ts";
import { holdUntilNextPoll } from "../lib/net/hold.ts";
import { relayHandler } from "../lib/net/sockets.ts";
import { sha256, until } from "./helpers.ts";

const servers: net.Server[] = [];
afterAll(() => {
  for (const s of servers) s.close();
});

/** A peer that records each chunk it reads (one entry per read) and when its side got a FIN. */
async function recorder(): Promise<{ port: number; chunks: Buffer[]; ended: Promise<void>; connected: Promise<net.Socket> }> {
  const chunks: Buffer[] = [];
  let ended!: () => void;
  let connected!: (s: net.Socket) => void;
  const endedP = new Promise<void>((r) => (ended = r));
  const connectedP = new Promise<net.Socket>((r) => (connected = r));
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    connected(s);
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("end", () => ended());
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as net.AddressInfo).port, chunks, ended: endedP, connected: connectedP };
}

/** Dials `port` with a relay Endpoint; resolves once it is open. */
function dial(port: number): Promise<Endpoint> {
  const ep = new Endpoint();
  return new Promise((resolve, reject) => {
    ep.onOpen = () => resolve(ep);
    ep.onClose = () => reject(new Error("closed before open"));
    Bun.connect<Endpoint>({ hostname: "127.0.0.1", port, data: ep, allowHalfOpen: true, socket: relayHandler() }).catch(reject);
  });
}

const text = (b: Uint8Array) => Buffer.from(b).toString();

describe("held headers", () => {
  test("a held header leaves in the same write as the next chunk: the peer reads both at once", async () => {
    const peer = await recorder();
    const ep = await dial(peer.port);
    await peer.connected;
    ep.hold(new TextEncoder().encode("HEAD|"));
    expect(ep.holding).toBe(true);
    // Held means not sent: after a few loop turns the peer still has nothing.
    await new Promise<void>((r) => setTimeout(r, 30));
    expect(peer.chunks.length).toBe(0);
    ep.write(new TextEncoder().encode("data"), null);
    expect(ep.holding).toBe(false);
    ep.shutdownWhenFlushed();
    await peer.ended;
    expect(peer.chunks.map(text)).toEqual(["HEAD|data"]);
    ep.destroy();
  });

  test("a FIN releases a held header first; a reset drops it", async () => {
    const peer = await recorder();
    const ep = await dial(peer.port);
    ep.hold(new TextEncoder().encode("HEAD"));
    ep.shutdownWhenFlushed();
    await peer.ended;
    expect(Buffer.concat(peer.chunks).toString()).toBe("HEAD");
    ep.destroy();

    const peer2 = await recorder();
    const ep2 = await dial(peer2.port);
    const sock = await peer2.connected;
    const closed = new Promise<void>((r) => sock.on("close", () => r()));
    sock.on("error", () => {});
    ep2.hold(new TextEncoder().encode("NEVER"));
    ep2.reset();
    await closed;
    expect(peer2.chunks.length).toBe(0);
  });

  test("holdUntilNextPoll sends the header by itself when no chunk follows within a loop turn", async () => {
    const peer = await recorder();
    const ep = await dial(peer.port);
    const sock = await peer.connected;
    const got = new Promise<string>((r) => sock.once("data", (d: Buffer) => r(d.toString())));
    holdUntilNextPoll(ep, new TextEncoder().encode("START"));
    expect(ep.holding).toBe(true);
    expect(await got).toBe("START");
    expect(ep.holding).toBe(false);
    ep.destroy();
  });
});

describe("stream ends", () => {
  test("a FIN on a connection that is not piped lets what is queued toward it go out first", async () => {
    const peer = await recorder();
    const ep = await dial(peer.port);
    const sock = await peer.connected;
    sock.pause();
    ep.onData = () => {}; // framed, not piped: a work connection between streams
    const data = randomBytes(16 << 20);
    ep.write(data, null);
    expect(ep.queued).toBeGreaterThan(0); // the peer does not read: most of it waits in our queue
    const closed = new Promise<void>((r) => (ep.onClose = () => r()));
    sock.end(); // the peer's FIN
    sock.resume();
    await closed;
    await peer.ended;
    expect(Buffer.concat(peer.chunks).equals(Buffer.from(data))).toBe(true);
  });

  test("a FIN before the announced number of bytes resets the other side instead of passing a clean end", async () => {
    const from = await recorder();
    const to = await recorder();
    const a = await dial(from.port);
    const b = await dial(to.port);
    const fromSock = await from.connected;
    const toSock = await to.connected;
    const outcome = new Promise<string>((resolve) => {
      toSock.on("end", () => resolve("end"));
      toSock.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    a.pipe(b);
    expect(a.endAfter(100)).toBe(true);
    fromSock.end(Buffer.alloc(50, 7)); // 50 bytes and a FIN: cut short
    expect(await outcome).toBe("ECONNRESET");
  });

  test("endAfter: the end comes with the last announced byte, whether announced before or after the bytes", async () => {
    for (const early of [true, false]) {
      const from = await recorder();
      const to = await recorder();
      const a = await dial(from.port);
      const b = await dial(to.port);
      const fromSock = await from.connected;
      await to.connected;
      let ends = 0;
      a.onEnd = () => {
        ends++;
        b.shutdownWhenFlushed();
      };
      a.pipe(b);
      if (early) expect(a.endAfter(3000)).toBe(true);
      fromSock.write(Buffer.alloc(3000, 1));
      if (!early) {
        await until(() => a.relayed === 3000, 5000, "3000 bytes relayed");
        expect(a.endAfter(2999)).toBe(false); // fewer than already relayed: refused
        expect(a.endAfter(3000)).toBe(true);
      }
      await to.ended;
      expect(ends).toBe(1);
      expect(Buffer.concat(to.chunks).length).toBe(3000);
      a.destroy();
      b.destroy();
      fromSock.destroy();
    }
  });
});

/** Most bytes Bun hands to one `data` callback: a queue may pass its high-water mark by one such chunk. */
const MAX_READ_BYTES = 512 * 1024;

describe("limits", () => {
  test("HIGH_WATER_BYTES: a source is paused once more than that is queued toward a peer that does not read, and resumed when it drains, with every byte delivered", async () => {
    const data = randomBytes(24 << 20); // far more than the loopback socket buffers hold
    const sender = net.createServer((s) => s.end(data));
    servers.push(sender);
    await new Promise<void>((r) => sender.listen(0, "127.0.0.1", r));
    const reader = await recorder();
    const dst = await dial(reader.port);
    const readerSock = await reader.connected;
    readerSock.pause();
    const src = await dial((sender.address() as net.AddressInfo).port);
    src.pipe(dst);
    await until(() => dst.queued > HIGH_WATER_BYTES, 10_000, "the queue toward the stalled reader to fill");
    expect(src.paused).toBe(true);
    expect(dst.queued).toBeLessThanOrEqual(HIGH_WATER_BYTES + MAX_READ_BYTES);
    readerSock.resume();
    await reader.ended;
    const got = Buffer.concat(reader.chunks);
    expect(got.length).toBe(data.length);
    expect(sha256(got)).toBe(sha256(data));
    expect(src.paused).toBe(false);
    dst.destroy();
  });

  test("MAX_CONTROL_QUEUE_BYTES: a peer that lets more control bytes than that pile up is cut off; up to it is kept", () => {
    const ep = new Endpoint(); // no socket yet: every frame queues
    const frame = new Uint8Array(64 * 1024);
    for (let i = 0; i < MAX_CONTROL_QUEUE_BYTES / frame.length; i++) ep.send(frame);
    expect(ep.queued).toBe(MAX_CONTROL_QUEUE_BYTES);
    expect(ep.closed).toBe(false);
    ep.send(new Uint8Array(1));
    expect(ep.closed).toBe(true);
    expect(ep.queued).toBe(0); // dropped with the connection
  });

  test("LINGER_MS: a closing side whose peer takes nothing for that long is reset, its queued bytes dropped", async () => {
    expect(LINGER_MS).toBe(30_000);
    linger.ms = 150; // the default, 30 s, is too long for a unit test
    try {
      const peer = await recorder();
      const ep = await dial(peer.port);
      const sock = await peer.connected;
      sock.pause();
      const error = new Promise<string>((r) => sock.on("error", (e: NodeJS.ErrnoException) => r(e.code ?? e.message)));
      const data = randomBytes(16 << 20);
      ep.write(data, null);
      expect(ep.queued).toBeGreaterThan(0);
      const closed = new Promise<void>((r) => (ep.onClose = () => r()));
      const t0 = performance.now();
      ep.endWhenFlushed();
      await closed;
      // Timers may fire a little early in Bun; never by a tenth of the wait.
      expect(performance.now() - t0).toBeGreaterThanOrEqual(linger.ms * 0.9);
      sock.resume();
      expect(await error).toBe("ECONNRESET");
      expect(Buffer.concat(peer.chunks).length).toBeLessThan(data.length);
    } finally {
      linger.ms = LINGER_MS;
    }
  });

  test("LINGER_MS: a slow peer that keeps taking bytes is not cut, however long the flush takes", async () => {
    linger.ms = 150;
    try {
      const peer = await recorder();
      const ep = await dial(peer.port);
      const sock = await peer.connected;
      let failed = "";
      sock.on("error", (e: NodeJS.ErrnoException) => (failed = e.code ?? e.message));
      const sockClosed = new Promise<void>((r) => sock.on("close", () => r()));
      // The peer reads at most 512 KiB every 25 ms: about 20 MB/s.
      const BUDGET = 512 * 1024;
      let budget = 0;
      sock.pause();
      sock.on("data", (d: Buffer) => {
        budget -= d.length;
        if (budget <= 0) sock.pause();
      });
      let t0 = 0;
      let lastQueued = 0; // when our queue was last seen non-empty, after endWhenFlushed
      const tick = setInterval(() => {
        if (ep.queued > 0) lastQueued = performance.now();
        budget = BUDGET;
        sock.resume();
      }, 25);
      const data = randomBytes(16 << 20);
      ep.write(data, null);
      t0 = performance.now();
      ep.endWhenFlushed();
      await Promise.race([peer.ended, sockClosed]); // a clean end, or a reset (which fails below)
      clearInterval(tick);
      const got = Buffer.concat(peer.chunks);
      expect(failed).toBe("");
      expect(got.length).toBe(data.length);
      expect(sha256(got)).toBe(sha256(data));
      // The flush outlasted the linger: without the refresh on progress it would have been cut.
      expect(lastQueued - t0).toBeGreaterThan(linger.ms * 2);
      sock.destroy();
    } finally {
      linger.ms = LINGER_MS;
    }
  });
});

describe("Deadlines", () => {
  test("items expire in order after the timeout; deleted ones do not; re-adding restarts the wait", async () => {
    const expired: { item: string; at: number }[] = [];
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    const d = new Deadlines<string>(80, (item) => {
      expired.push({ item, at: performance.now() });
      if (expired.length === 3) done();
    });
    const t0 = performance.now();
    d.add("a");
    d.add("b");
    d.add("gone");
    d.add("c");
    d.delete("gone");
    expect(d.size).toBe(3);
    // "a" again, 40 ms later: it now expires after "b" and "c".
    await new Promise<void>((r) => setTimeout(r, 40));
    d.add("a");
    await all;
    expect(expired.map((e) => e.item)).toEqual(["b", "c", "a"]);
    expect(expired[0]!.at - t0).toBeGreaterThanOrEqual(75);
    expect(expired[2]!.at - t0).toBeGreaterThanOrEqual(115);
    expect(d.size).toBe(0);
  });

  test("a callback that throws does not stop the items after it from expiring", async () => {
    const expired: string[] = [];
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    const d = new Deadlines<string>(20, (item) => {
      expired.push(item);
      if (item === "bad") throw new Error("boom");
      if (expired.length === 3) done();
    });
    d.add("bad");
    d.add("x");
    d.add("y");
    await all;
    expect(expired).toEqual(["bad", "x", "y"]);
  });

  test("clear cancels every pending timeout", async () => {
    const expired: number[] = [];
    const d = new Deadlines<number>(20, (n) => expired.push(n));
    for (let i = 0; i < 1000; i++) d.add(i);
    d.clear();
    // A second set with the same timeout proves the time has passed.
    let done!: () => void;
    const later = new Promise<void>((r) => (done = r));
    const probe = new Deadlines<number>(40, () => done());
    probe.add(0);
    await later;
    expect(expired).toEqual([]);
    expect(d.size).toBe(0);
  });
});
