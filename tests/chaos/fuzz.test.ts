/**
 * Scenario 5: protocol fuzz against a live server. 10,000 connections send
 * seeded random bytes and mutated valid frames: huge length fields, wrong
 * versions, TLS bytes, wrong types in the middle of a session, work hellos
 * with a stolen or stale session id. The server must never crash, must close
 * every such connection, keep its memory bounded, and keep relaying for a
 * legitimate client. Replay a failure with CHAOS_SEED=<seed>.
 */
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { encode, FrameReader, FrameType, loginProof, MAGIC, MAX_FRAME_BYTES, workProof, type Message } from "../../protocol.ts";
import { deadPort } from "../helpers.ts";
import { tempDir, type Proc } from "../procs.ts";
import { clientToml, countingEcho, echoCheck, groupToml, killAll, rss, serverToml, startClient, startServer, tcpConns, TOKEN, until } from "./harness.ts";

/** Fuzzing connections in all. */
const CONNECTIONS = Number(process.env.CHAOS_FUZZ_CONNECTIONS ?? 10_000);
/** Fuzzing connections at once. */
const CONCURRENCY = 250;
/** Handshake timeout of the server under fuzz, seconds. */
const HANDSHAKE_S = 1;
/** The seed: printed first, and again in any failure. */
const SEED = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const POOL = 2;

const procs: Proc[] = [];
const echo = await countingEcho();

afterAll(async () => {
  await killAll(procs);
  echo.close();
});

/** mulberry32: a small seeded generator, so every case can be replayed. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    bytes: (n: number) => Uint8Array.from({ length: n }, () => Math.floor(next() * 256)),
    pick: <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)]!,
  };
}
type Rng = ReturnType<typeof rng>;

/** One valid frame of every type a client could send (and some only a server sends). */
function validFrames(r: Rng): Uint8Array[] {
  const id = r.bytes(16);
  const msgs: Message[] = [
    { type: FrameType.Challenge, nonce: r.bytes(32) },
    { type: FrameType.Login, group: "fuzz", proof: r.bytes(32), apps: [{ name: "f", type: "tcp" }] },
    { type: FrameType.LoginOk, sessionId: id, apps: [{ name: "f", type: "tcp", remotePort: 1, error: "" }] },
    { type: FrameType.Apps, apps: [] },
    { type: FrameType.Ping, seq: r.int(2 ** 32) },
    { type: FrameType.Pong, seq: r.int(2 ** 32) },
    { type: FrameType.OpenWork, count: r.int(65536) },
    { type: FrameType.WorkHello, sessionId: id, seq: r.int(2 ** 32), proof: r.bytes(32) },
    { type: FrameType.StartWork, app: "f", userAddr: "127.0.0.1:1", publicAddr: "127.0.0.1:6000" },
    { type: FrameType.WorkAck, ok: true, message: "" },
    { type: FrameType.Error, code: 1, message: "x" },
    { type: FrameType.Hello },
  ];
  return msgs.map(encode);
}

/** Flips, overwrites, truncates or extends a frame. */
function mutate(r: Rng, f: Uint8Array): Uint8Array {
  const b = Uint8Array.from(f);
  switch (r.int(5)) {
    case 0:
      for (let k = 1 + r.int(8); k > 0; k--) {
        const at = r.int(b.length);
        b[at] = b[at]! ^ (1 << r.int(8));
      }
      return b;
    case 1: // a huge or slightly-too-large length field
      new DataView(b.buffer).setUint32(1, r.pick([0xffffffff, MAX_FRAME_BYTES + 1, 2 ** 31, r.int(2 ** 32)]));
      return b;
    case 2:
      return b.subarray(0, r.int(b.length));
    case 3: {
      const out = new Uint8Array(b.length + 1 + r.int(64));
      out.set(b);
      out.set(r.bytes(out.length - b.length), b.length);
      return out;
    }
    default: // a length that disagrees with the body
      new DataView(b.buffer).setUint32(1, r.int(b.length + 16));
      return b;
  }
}

const cat = (...parts: Uint8Array[]) => Buffer.concat(parts);

/** A raw connection: collects frames; resolves `closed` with how the server ended it. */
function raw(port: number, from: string) {
  const reader = new FrameReader();
  const frames: Message[] = [];
  let wake: () => void = () => {};
  let closedBy = "";
  const s = net.connect({ port, host: "127.0.0.1", localAddress: from });
  s.on("data", (d: Buffer) => {
    reader.push(d);
    for (let res = reader.next(); res; res = reader.next()) if (res.ok) frames.push(res.msg);
    wake();
  });
  s.on("end", () => (closedBy ||= "fin"));
  s.on("error", (e: NodeJS.ErrnoException) => (closedBy ||= e.code ?? "error"));
  // A connection the server neither finishes nor closes within the handshake timeout (plus slack) is a finding.
  const hung = setTimeout(() => {
    closedBy ||= "HUNG";
    s.destroy();
  }, HANDSHAKE_S * 1000 + 3000);
  const closed = new Promise<string>((resolve) =>
    s.on("close", () => {
      clearTimeout(hung);
      resolve(closedBy || "close");
    }),
  );
  const next = async (type: FrameType, ms = 3000): Promise<Message | null> => {
    const end = performance.now() + ms;
    for (;;) {
      const i = frames.findIndex((f) => f.type === type);
      if (i >= 0) return frames.splice(i, 1)[0]!;
      if (s.destroyed || performance.now() > end) return null;
      await Promise.race([new Promise<void>((r) => (wake = r)), closed, Bun.sleep(end - performance.now())]);
    }
  };
  return { s, next, closed, write: (b: Uint8Array) => !s.destroyed && s.write(b) };
}

/** Logs in as the fuzz group with a valid proof; the session id, or null. */
async function login(port: number, from: string) {
  const c = raw(port, from);
  c.write(cat(MAGIC, encode({ type: FrameType.Hello })));
  const ch = await c.next(FrameType.Challenge);
  if (!ch || ch.type !== FrameType.Challenge) return { c, id: null };
  c.write(encode({ type: FrameType.Login, group: "fuzz", proof: loginProof(TOKEN, ch.nonce, "fuzz"), apps: [{ name: "f", type: "tcp" }] }));
  const ok = await c.next(FrameType.LoginOk);
  return { c, id: ok?.type === FrameType.LoginOk ? ok.sessionId : null };
}

/** Opens a work connection that says hello for `id`, proven with `token`. */
async function workHello(port: number, from: string, id: Uint8Array, token: string) {
  const c = raw(port, from);
  c.write(cat(MAGIC, encode({ type: FrameType.WorkHello, sessionId: id, seq: 0, proof: workProof(token, id, 0) })));
  return c;
}

const CASES = ["random", "magic+random", "mutated", "huge-length", "wrong-first", "bad-magic", "mid-session", "stolen-id", "stale-id", "idle-work-data"] as const;
type Case = (typeof CASES)[number];

/** Runs fuzz case number `i`; resolves with how the connection(s) ended. */
async function fuzzOne(port: number, i: number): Promise<{ kind: Case; ends: string[] }> {
  const r = rng(SEED + i * 7919);
  // The cases that need a login are slower: keep them at about one in ten.
  const kind: Case = r.next() < 0.1 ? r.pick(CASES.slice(6)) : r.pick(CASES.slice(0, 6));
  const frames = validFrames(r);
  // Each case comes from its own loopback address (127.1.x.y), never the legitimate client's 127.0.0.1, so the
  // server's per-address login lockout blocks fuzzers, not the client under test.
  const from = `127.1.${r.int(256)}.${1 + r.int(254)}`;
  switch (kind) {
    case "random":
    case "magic+random":
    case "mutated":
    case "huge-length":
    case "wrong-first":
    case "bad-magic": {
      const c = raw(port, from);
      let bytes: Uint8Array;
      if (kind === "random") bytes = r.bytes(1 + r.int(2048));
      else if (kind === "magic+random") bytes = cat(MAGIC, r.bytes(r.int(2048)));
      else if (kind === "mutated") bytes = cat(MAGIC, mutate(r, r.pick(frames)), ...(r.next() < 0.3 ? [r.pick(frames)] : []));
      else if (kind === "huge-length") bytes = cat(MAGIC, Uint8Array.of(r.int(256), 0xff, 0xff, 0xff, r.int(256)), r.bytes(r.int(256)));
      else if (kind === "wrong-first") bytes = cat(MAGIC, r.pick(frames.filter((_, k) => k !== 1 && k !== 7 && k !== 11)));
      else bytes = r.pick([Uint8Array.of(0x57, 0x52, 0x4e, 2 + r.int(250)), Uint8Array.of(0x16, 0x03, 0x01, 0x02, 0x00), Uint8Array.of(0x15, 0x03, 0x03), new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n")]);
      // Sometimes in pieces, so the parser sees partial headers.
      if (r.next() < 0.3) {
        const cut = r.int(bytes.length);
        c.write(bytes.subarray(0, cut));
        await Bun.sleep(r.int(20));
        c.write(bytes.subarray(cut));
      } else c.write(bytes);
      return { kind, ends: [await c.closed] };
    }
    case "mid-session": {
      const { c, id } = await login(port, from);
      if (!id) return { kind, ends: [await c.closed] };
      c.write(r.next() < 0.5 ? r.pick(frames.filter((_, k) => k !== 4 && k !== 5)) : mutate(r, r.pick(frames)));
      return { kind, ends: [await c.closed] };
    }
    case "stolen-id": {
      // The id of a live session, with a proof made from the wrong token.
      const { c, id } = await login(port, from);
      if (!id) return { kind, ends: [await c.closed] };
      const w = await workHello(port, from, id, "not-the-token-" + r.int(1e9));
      const ends = [await w.closed];
      c.s.destroy();
      return { kind, ends: [...ends, await c.closed] };
    }
    case "stale-id": {
      // A correct proof for a session that has been replaced by a newer login.
      const first = await login(port, from);
      const second = await login(port, from);
      if (!first.id) return { kind, ends: [await first.c.closed] };
      const w = await workHello(port, from, first.id, TOKEN);
      const ends = [await w.closed, await first.c.closed];
      second.c.s.destroy();
      return { kind, ends: [...ends, await second.c.closed] };
    }
    case "idle-work-data": {
      // A valid work connection that sends bytes before any StartWork.
      const { c, id } = await login(port, from);
      if (!id) return { kind, ends: [await c.closed] };
      const w = await workHello(port, from, id, TOKEN);
      w.write(r.bytes(1 + r.int(512)));
      const ends = [await w.closed];
      c.s.destroy();
      return { kind, ends: [...ends, await c.closed] };
    }
  }
}

describe("scenario 5: protocol fuzz against a live server", () => {
  test(`${CONNECTIONS} fuzzing connections: no crash, every one closed, memory bounded, legitimate traffic intact`, async () => {
    console.log(`fuzz seed ${SEED} (replay: CHAOS_SEED=${SEED} bun test tests/chaos/fuzz.test.ts)`);
    const dir = tempDir();
    const ctrl = await deadPort();
    const server = await startServer(dir, serverToml(dir, ctrl, groupToml("home", ["echo"]) + groupToml("fuzz", ["f"]), { handshakeTimeout: HANDSHAKE_S, poolSize: POOL }));
    procs.push(server.proc);
    const client = await startClient(dir, clientToml(ctrl, "home", { echo: echo.port }), ["echo"]);
    procs.push(client.proc);
    try {
      // Warm up, then take the memory baseline.
      for (let i = 0; i < 5; i++) expect((await echoCheck(client.ports.echo!, 1 << 20, i)).ok).toBe(true);
      const base = rss(server.proc.pid);
      let peak = base;

      // Legitimate traffic all along: one checked stream after another.
      let fuzzing = true;
      const legit = { ok: 0, failed: [] as string[] };
      const legitLoop = (async () => {
        for (let i = 0; fuzzing && i < 10_000; i++) {
          const res = await echoCheck(client.ports.echo!, 256 * 1024, 100 + (i % 4));
          if (res.ok) legit.ok++;
          else legit.failed.push(`${res.received} bytes, ${res.error}`);
          peak = Math.max(peak, rss(server.proc.pid));
        }
      })();

      const counts: Record<string, number> = {};
      const ends: Record<string, number> = {};
      let nextCase = 0;
      const t0 = performance.now();
      const worker = async () => {
        while (nextCase < CONNECTIONS) {
          const { kind, ends: e } = await fuzzOne(ctrl, nextCase++);
          counts[kind] = (counts[kind] ?? 0) + 1;
          for (const x of e) ends[x] = (ends[x] ?? 0) + 1;
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      const fuzzMs = performance.now() - t0;
      fuzzing = false;
      await legitLoop;
      peak = Math.max(peak, rss(server.proc.pid));

      console.log(`fuzz: ${CONNECTIONS} cases in ${(fuzzMs / 1000).toFixed(1)} s ${JSON.stringify(counts)}; ends ${JSON.stringify(ends)}`);
      console.log(`fuzz: server RSS ${(base / 2 ** 20).toFixed(0)} MiB -> peak ${(peak / 2 ** 20).toFixed(0)} MiB; legitimate streams ${legit.ok} ok, ${legit.failed.length} failed`);
      expect(server.proc.child.exitCode).toBeNull();
      expect(server.proc.lines.filter((l) => /handler error|uncaught|TypeError|RangeError/i.test(l))).toEqual([]);
      expect(ends.HUNG ?? 0).toBe(0);
      expect(legit.failed).toEqual([]);
      expect(legit.ok).toBeGreaterThan(0);
      // The legitimate session was never disturbed by the fuzz group's antics.
      expect(client.proc.lines.filter((l) => /reconnecting/.test(l))).toEqual([]);
      expect(peak - base).toBeLessThan(96 * 2 ** 20);
      // Every fuzzing connection is gone: the control port holds the legitimate session only.
      // (One stream at a time: a work connection back from a stream may sit beside a refill's.)
      const most = 1 + 2 * POOL;
      await until(() => tcpConns(ctrl) <= most, 5000, `control port back to at most ${most} connections (now ${tcpConns(ctrl)})`);
      expect((await echoCheck(client.ports.echo!, 4 << 20, 7)).ok).toBe(true);
    } catch (err) {
      console.error(`fuzz failed with seed ${SEED}: replay with CHAOS_SEED=${SEED}`);
      throw err;
    }
  }, 120_000);
});
