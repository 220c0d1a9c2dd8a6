/**
 * Bun-native load generator for the latency, connection-setup and
 * many-connection scenarios. Runs as its own process; prints one JSON line.
 *
 *   bun bench/loadgen.ts latency '{"port":1,"count":10000,"warmup":1000,"size":64}'
 *   bun bench/loadgen.ts setup   '{"port":1,"concurrency":50,"durationMs":3000,"maxConns":100000,"size":64}'
 *   bun bench/loadgen.ts hold    '{"port":1,"count":1000,"openConcurrency":200,"intervalMs":5000}'
 *   bun bench/loadgen.ts udplatency '{"port":1,"count":5000,"warmup":500,"size":64,"lossTimeoutMs":200}'
 *
 * `hold` prints `READY {...}` once every connection is open and answered,
 * then pings each connection every intervalMs; on the stdin line `check` it
 * pings all of them once more and prints `CHECK {...}`; on `close` it exits.
 */
import type { Socket } from "bun";

const [mode, json] = [Bun.argv[2], Bun.argv[3] ?? "{}"];
const opts = JSON.parse(json) as Record<string, number> & { port: number };
const HOST = "127.0.0.1";
const now = () => Number(Bun.nanoseconds()) / 1000; // microseconds

function percentiles(values: Float64Array): Record<string, number> {
  const s = values.slice().sort();
  const q = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))] ?? NaN;
  let sum = 0;
  for (const v of s) sum += v;
  return { p50: q(0.5), p90: q(0.9), p95: q(0.95), p99: q(0.99), p999: q(0.999), max: s[s.length - 1] ?? NaN, mean: sum / s.length, n: s.length };
}

async function latency(): Promise<unknown> {
  const { port, count = 10_000, warmup = 1_000, size = 64, timeoutMs = 60_000 } = opts;
  const payload = new Uint8Array(size).fill(0x61);
  const samples = new Float64Array(count);
  return new Promise((resolve, reject) => {
    let i = -warmup;
    let got = 0;
    let t0 = 0;
    const timer = setTimeout(() => reject(new Error(`latency: only ${i} of ${count} round trips within ${timeoutMs} ms`)), timeoutMs);
    Bun.connect({
      hostname: HOST,
      port,
      socket: {
        open(s) {
          s.setNoDelay(true);
          t0 = now();
          s.write(payload);
        },
        data(s, chunk) {
          got += chunk.length;
          if (got < size) return;
          got -= size;
          const t = now();
          if (i >= 0) samples[i] = t - t0;
          i++;
          if (i >= count) {
            clearTimeout(timer);
            s.end();
            return resolve({ roundTrips: count, warmup, size, us: percentiles(samples) });
          }
          t0 = now();
          s.write(payload);
        },
        close() {
          if (i < count) reject(new Error(`latency: connection closed after ${i} round trips`));
        },
        connectError(_s, err) {
          reject(err);
        },
      },
    }).catch(reject);
  });
}

/**
 * UDP ping-pong on one connected socket: one datagram in flight, numbered, so
 * a late reply is not taken for the current one. A datagram not answered within
 * lossTimeoutMs counts as lost and the next one is sent.
 */
async function udpLatency(): Promise<unknown> {
  const { port, count = 5000, warmup = 500, size = 64, lossTimeoutMs = 200, timeoutMs = 120_000 } = opts;
  const payload = new Uint8Array(Math.max(8, size)).fill(0x75);
  const view = new DataView(payload.buffer);
  const samples: number[] = [];
  let seq = 0;
  let lost = 0;
  let late = 0;
  let t0 = 0;
  let timer: Timer | null = null;
  const total = count + warmup;
  return new Promise((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`udplatency: only ${seq} of ${total} datagrams within ${timeoutMs} ms`)), timeoutMs);
    const finish = (sock: { close(): void }) => {
      clearTimeout(deadline);
      if (timer) clearTimeout(timer);
      sock.close();
      resolve({ roundTrips: samples.length, sent: seq, warmup, size: payload.length, lost, late, us: percentiles(Float64Array.from(samples)) });
    };
    let conn: import("bun").udp.ConnectedSocket<"uint8array"> | null = null;
    const send = (sock: import("bun").udp.ConnectedSocket<"uint8array">) => {
      if (seq >= total) return finish(sock);
      seq++;
      view.setUint32(0, seq);
      t0 = now();
      sock.send(payload);
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        if (seq > warmup) lost++;
        send(sock);
      }, lossTimeoutMs);
    };
    Bun.udpSocket({
      binaryType: "uint8array",
      connect: { hostname: HOST, port },
      socket: {
        data(_s, reply) {
          if (!conn || reply.length < 4 || new DataView(reply.buffer, reply.byteOffset, reply.byteLength).getUint32(0) !== seq) return void late++;
          if (seq > warmup) samples.push(now() - t0);
          send(conn);
        },
        error(_s, err) {
          clearTimeout(deadline);
          reject(err ?? new Error("udp socket error"));
        },
      },
    }).then((sock) => send((conn = sock)), reject);
  });
}

async function setup(): Promise<unknown> {
  const { port, concurrency = 1, durationMs = 3000, maxConns = 1_000_000, size = 64 } = opts;
  const payload = new Uint8Array(size).fill(0x62);
  const ttfb: number[] = [];
  let started = 0;
  let done = 0;
  let errors = 0;
  const tStart = performance.now();
  const deadline = tStart + durationMs;
  let lastEnd = tStart;
  const one = () =>
    new Promise<void>((resolve) => {
      started++;
      const t0 = now();
      let got = 0;
      let first = 0;
      let finished = false;
      const finish = (ok: boolean) => {
        if (finished) return;
        finished = true;
        if (ok) {
          done++;
          ttfb.push(first - t0);
        } else errors++;
        resolve();
      };
      Bun.connect({
        hostname: HOST,
        port,
        socket: {
          open(s) {
            s.setNoDelay(true);
            s.write(payload);
          },
          data(s, chunk) {
            if (got === 0) first = now();
            got += chunk.length;
            if (got >= size) s.end();
          },
          close() {
            finish(got >= size);
          },
          connectError() {
            finish(false);
          },
        },
      }).catch(() => finish(false));
    });
  const worker = async () => {
    for (let k = 0; k < 10_000_000 && performance.now() < deadline && started < maxConns; k++) {
      await one();
      lastEnd = performance.now();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (lastEnd - tStart) / 1000;
  return { concurrency, connections: done, errors, seconds: elapsed, perSecond: done / elapsed, ttfbUs: percentiles(Float64Array.from(ttfb)) };
}

interface Held {
  sock: Socket<Held> | null;
  got: number;
  waiting: boolean;
  ok: number;
  misses: number;
  closed: boolean;
  onReply: (() => void) | null;
}

async function hold(): Promise<void> {
  const { port, count = 1000, openConcurrency = 200, intervalMs = 5000, openTimeoutMs = 120_000 } = opts;
  const msg = new TextEncoder().encode("ping-0123456789\n"); // 16 bytes
  const conns: Held[] = [];
  let failed = 0;
  const handler = {
    data(s: Socket<Held>, chunk: Uint8Array) {
      const h = s.data;
      h.got += chunk.length;
      if (h.got >= msg.length) {
        h.got -= msg.length;
        h.waiting = false;
        h.ok++;
        const cb = h.onReply;
        h.onReply = null;
        cb?.();
      }
    },
    close(s: Socket<Held>) {
      s.data.closed = true;
      const cb = s.data.onReply;
      s.data.onReply = null;
      cb?.();
    },
    connectError(s: Socket<Held>) {
      s.data.closed = true;
    },
    open() {},
  };
  const ping = (h: Held, timeoutMs: number) =>
    new Promise<boolean>((resolve) => {
      if (h.closed || !h.sock) return resolve(false);
      if (h.waiting) h.misses++;
      h.waiting = true;
      const timer = setTimeout(() => {
        h.onReply = null;
        resolve(false);
      }, timeoutMs);
      h.onReply = () => {
        clearTimeout(timer);
        resolve(!h.closed);
      };
      h.sock.write(msg);
    });
  const openOne = async () => {
    const h: Held = { sock: null, got: 0, waiting: false, ok: 0, misses: 0, closed: false, onReply: null };
    try {
      h.sock = await Bun.connect<Held>({ hostname: HOST, port, data: h, socket: handler });
    } catch {
      failed++;
      return;
    }
    if (await ping(h, 15_000)) conns.push(h);
    else {
      failed++;
      h.sock?.end();
    }
  };
  const t0 = performance.now();
  const tEnd = t0 + openTimeoutMs;
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(openConcurrency, count) }, async () => {
      while (next < count && performance.now() < tEnd) {
        next++;
        await openOne();
      }
    }),
  );
  const rampMs = performance.now() - t0;
  console.log(`READY ${JSON.stringify({ opened: conns.length, failed, rampMs })}`);

  // Each connection pings once per interval, spread evenly over the interval.
  let ticking = true;
  const tickMs = 50;
  let cursor = 0;
  const perTick = Math.max(1, Math.ceil((conns.length * tickMs) / intervalMs));
  const ticker = setInterval(() => {
    if (!ticking || conns.length === 0) return;
    for (let k = 0; k < perTick; k++) {
      const h = conns[cursor++ % conns.length]!;
      if (!h.closed && !h.waiting) {
        h.waiting = true;
        h.sock!.write(msg);
      } else if (h.waiting) h.misses++;
    }
  }, tickMs);

  for await (const line of console) {
    const cmd = line.trim();
    if (cmd === "check") {
      ticking = false;
      await Bun.sleep(200);
      const tc = performance.now();
      const results = await Promise.all(conns.map((h) => ping(h, 15_000)));
      const alive = results.filter(Boolean).length;
      const misses = conns.reduce((n, h) => n + h.misses, 0);
      const echoes = conns.reduce((n, h) => n + h.ok, 0);
      console.log(`CHECK ${JSON.stringify({ alive, dead: conns.length - alive, misses, echoes, checkMs: performance.now() - tc })}`);
    } else if (cmd === "close" || cmd === "") {
      break;
    }
  }
  clearInterval(ticker);
  for (const h of conns) h.sock?.end();
  await Bun.sleep(100);
  process.exit(0);
}

async function main(): Promise<void> {
  if (mode === "latency") console.log(JSON.stringify(await latency()));
  else if (mode === "setup") console.log(JSON.stringify(await setup()));
  else if (mode === "udplatency") console.log(JSON.stringify(await udpLatency()));
  else if (mode === "hold") return hold();
  else throw new Error(`unknown mode ${mode}`);
  process.exit(0);
}

main().catch((err) => {
  console.error(`loadgen: ${(err as Error).message}`);
  process.exit(1);
});
