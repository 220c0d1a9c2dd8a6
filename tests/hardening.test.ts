/** Defects found in code review, each pinned by a test: oversized logins, late guesses, silent work connections, bursts, UDP reply spoofing, oversized IPv6 datagrams. */
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { Endpoint } from "../lib/net/endpoint.ts";
import { UdpPublic } from "../lib/server/apps/udp.ts";
import { SEQ_WINDOW, SeqWindow } from "../lib/guard.ts";
import { encode, encodeDatagramInto, ErrorCode, FrameType, loginProof, workProof, type DecodeResult } from "../protocol.ts";
import { clientConfig, echoApp, onlineClient, randomData, roundTrip, sha256, testServer, TOKEN, until } from "./helpers.ts";
import { rawChallenged as raw, rawConn, rawSession } from "./wire.ts";

const cleanup: (() => void)[] = [];
const echo = await echoApp();
afterAll(() => {
  for (const f of cleanup.reverse()) f();
  echo.close();
});

const errorCode = (r: DecodeResult | null) => (r?.ok && r.msg.type === FrameType.Error ? r.msg.code : r?.ok ? FrameType[r.msg.type] : "closed");

describe("logins", () => {
  test("a login declaring too many or badly named apps is refused, and the server keeps serving", async () => {
    const server = await testServer();
    cleanup.push(() => server.stop());
    await fetch(`http://127.0.0.1:${server.apiPort}/api/groups`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({ name: "big", token: TOKEN, apps: [{ name: "a" }] }),
    });
    const many = await raw(server.controlPort);
    const apps = Array.from({ length: 600 }, (_, i) => ({ name: `app-${i}-${"x".repeat(40)}`, type: "tcp" as const }));
    many.sock.write(encode({ type: FrameType.Login, group: "big", proof: loginProof(TOKEN, many.nonce, "big"), apps }));
    expect(errorCode(await many.next())).toBe(ErrorCode.MalformedFrame);
    const long = await raw(server.controlPort);
    long.sock.write(encode({ type: FrameType.Login, group: "big", proof: loginProof(TOKEN, long.nonce, "big"), apps: [{ name: "y".repeat(30_000), type: "tcp" }] }));
    expect(errorCode(await long.next())).toBe(ErrorCode.MalformedFrame);
    // Still alive and serving.
    const { connector, apps: ok } = await onlineClient(clientConfig(server, "big", [{ name: "a", localAddr: `127.0.0.1:${echo.port}` }]));
    cleanup.push(() => connector.stop());
    const data = randomData(10_000, 1);
    expect((await roundTrip(ok[0]!.remotePort, data)).hash).toBe(sha256(data));
  });

  test("connections opened before a block cannot go on guessing after it", async () => {
    const server = await testServer({ loginFailureLimit: 3 });
    cleanup.push(() => server.stop());
    await fetch(`http://127.0.0.1:${server.apiPort}/api/groups`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({ name: "g", token: TOKEN, apps: [] }),
    });
    const conns = await Promise.all(Array.from({ length: 6 }, () => raw(server.controlPort, "127.0.0.5")));
    const answers = [];
    for (const c of conns.slice(0, 5)) {
      c.sock.write(encode({ type: FrameType.Login, group: "g", proof: loginProof("wrong-token-wrong-token", c.nonce, "g"), apps: [] }));
      answers.push(errorCode(await c.next()));
    }
    expect(answers).toEqual([ErrorCode.AuthFailed, ErrorCode.AuthFailed, ErrorCode.AuthFailed, ErrorCode.Blocked, ErrorCode.Blocked]);
    const last = conns[5]!;
    last.sock.write(encode({ type: FrameType.Login, group: "g", proof: loginProof(TOKEN, last.nonce, "g"), apps: [] }));
    expect(errorCode(await last.next())).toBe(ErrorCode.Blocked);
  });
});

describe("work connections", () => {
  test("a work connection that never answers StartWork closes its user within userConnTimeout", async () => {
    const server = await testServer({ userConnTimeout: 0.5, poolSize: 1 });
    cleanup.push(() => server.stop());
    const { control, sessionId, port } = await rawSession(server, "mute", "m");
    // One work connection, authenticated, that will never answer.
    const work = rawConn(server.controlPort, encode({ type: FrameType.WorkHello, sessionId, seq: 0, proof: workProof(TOKEN, sessionId, 0) }));
    await until(() => server.hub.session("mute")!.pooled === 1, 3000, "pooled");
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      const u = net.connect({ host: "127.0.0.1", port }, () => u.write("hello"));
      u.on("error", () => {});
      u.on("close", () => resolve());
    });
    const ms = performance.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(400);
    expect(ms).toBeLessThan(3000);
    const start = await work.next();
    expect(start?.ok && start.msg.type).toBe(FrameType.StartWork);
  });

  test("a work hello counts once: a replayed, a too old or a forged one is refused; one in the window is taken", async () => {
    const server = await testServer({ poolSize: 8 });
    cleanup.push(() => server.stop());
    const { control, sessionId } = await rawSession(server, "replay", "r", "127.0.0.7");
    const hello = (seq: number, token = TOKEN) => encode({ type: FrameType.WorkHello, sessionId, seq, proof: workProof(token, sessionId, seq) });
    const session = server.hub.session("replay")!;
    const taken = rawConn(server.controlPort, hello(10_000), "127.0.0.7");
    await until(() => session.pooled === 1, 3000, "first hello pooled");
    // The same bytes again, as a recording would replay them.
    const replayed = rawConn(server.controlPort, hello(10_000), "127.0.0.7");
    expect(errorCode(await replayed.next())).toBe(ErrorCode.AuthFailed);
    const old = rawConn(server.controlPort, hello(10_000 - SEQ_WINDOW), "127.0.0.7");
    expect(errorCode(await old.next())).toBe(ErrorCode.AuthFailed);
    const forged = rawConn(server.controlPort, hello(10_001, "not-the-token-not-the-token"), "127.0.0.7");
    expect(errorCode(await forged.next())).toBe(ErrorCode.AuthFailed);
    // Out of order but inside the window: a legitimate late dial.
    const late = rawConn(server.controlPort, hello(9_000), "127.0.0.7");
    await until(() => session.pooled === 2, 3000, "late hello pooled");
    expect(session.pooled).toBe(2);
    for (const c of [taken, replayed, old, forged, late, control]) c.sock.destroy();
  });

  test("SeqWindow agrees with a plain set of used numbers on 200,000 jittered sequence numbers", () => {
    let seed = 42;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const w = new SeqWindow();
    const used = new Set<number>();
    let top = -1;
    let base = 0;
    let accepted = 0;
    for (let i = 0; i < 200_000; i++) {
      // Mostly increasing, with reordering up to twice the window, repeats, and rare long jumps.
      const r = rand();
      base += r < 0.001 ? Math.floor(rand() * 3 * SEQ_WINDOW) : r < 0.7 ? 1 : 0;
      const seq = Math.max(0, base - Math.floor(rand() * 2 * SEQ_WINDOW * (rand() < 0.1 ? 1 : 0.01)));
      const expected = !used.has(seq) && seq > top - SEQ_WINDOW;
      expect(w.accept(seq)).toBe(expected);
      if (expected) {
        used.add(seq);
        accepted++;
        top = Math.max(top, seq);
      }
    }
    expect(accepted).toBeGreaterThan(100_000);
    // Large sequence numbers (beyond 2^32) behave the same.
    const big = new SeqWindow();
    expect(big.accept(2 ** 40)).toBe(true);
    expect(big.accept(2 ** 40)).toBe(false);
    expect(big.accept(2 ** 40 - 1)).toBe(true);
    expect(big.accept(2 ** 40 - SEQ_WINDOW)).toBe(false);
  });

  test("400 users at once, more than the client dials at a time: every one is served", async () => {
    const server = await testServer();
    cleanup.push(() => server.stop());
    await fetch(`http://127.0.0.1:${server.apiPort}/api/groups`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({ name: "burst", token: TOKEN, apps: [{ name: "e" }] }),
    });
    const { connector, apps } = await onlineClient(clientConfig(server, "burst", [{ name: "e", localAddr: `127.0.0.1:${echo.port}` }]));
    cleanup.push(() => connector.stop());
    const results = await Promise.all(Array.from({ length: 400 }, (_, i) => roundTrip(apps[0]!.remotePort, randomData(1000, i + 1))));
    for (const [i, r] of results.entries()) expect(r.hash).toBe(sha256(randomData(1000, i + 1)));
  }, 30_000);
});

describe("stream ends told on the control connection", () => {
  /** A user that sends `send` and reports how its connection ended and how many bytes it got. */
  function user(port: number, send = "") {
    let got = 0;
    const sock = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true }, () => send && sock.write(send));
    const ended = new Promise<string>((resolve) => {
      sock.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      sock.on("end", () => resolve("end"));
    });
    sock.on("data", (d: Buffer) => (got += d.length));
    return { sock, ended, got: () => got };
  }

  const closed = (sock: net.Socket) => (sock.closed ? Promise.resolve() : new Promise<void>((r) => sock.once("close", () => r())));

  test("a stream-end below the bytes already sent, or a work-free before the user's end, resets that stream; the session serves on", async () => {
    const server = await testServer({ poolSize: 1 });
    cleanup.push(() => server.stop());
    const { control, sessionId, port } = await rawSession(server, "liar", "l");
    const session = server.hub.session("liar")!;
    const work = (seq: number) => rawConn(server.controlPort, encode({ type: FrameType.WorkHello, sessionId, seq, proof: workProof(TOKEN, sessionId, seq) }));
    const ack = encode({ type: FrameType.WorkAck, ok: true, message: "" });

    // 1. The client sends 11 bytes, then claims its direction ended after 5.
    const w0 = work(0);
    await until(() => session.pooled === 1, 3000, "work connection 0 pooled");
    const a = user(port, "ping");
    expect((await w0.next())?.ok).toBe(true); // StartWork
    w0.sock.write(Buffer.concat([ack, Buffer.from("hello world")]));
    await until(() => a.got() === 11, 3000, "the app's 11 bytes at the user");
    control.sock.write(encode({ type: FrameType.StreamEnd, seq: 0, bytes: 5 }));
    expect(await a.ended).toBe("ECONNRESET");
    await closed(w0.sock); // the work connection is cut too

    // 2. The client frees a work connection while its user is still sending.
    const w1 = work(1);
    await until(() => session.pooled === 1, 3000, "work connection 1 pooled");
    const b = user(port, "still talking");
    expect((await w1.next())?.ok).toBe(true);
    w1.sock.write(ack);
    control.sock.write(encode({ type: FrameType.WorkFree, seq: 1 }));
    expect(await b.ended).toBe("ECONNRESET");
    await closed(w1.sock);

    // A stream-end or work-free naming no work connection is ignored: the session lives on and answers.
    control.sock.write(encode({ type: FrameType.StreamEnd, seq: 12345, bytes: 1 }));
    control.sock.write(encode({ type: FrameType.WorkFree, seq: 999 }));
    control.sock.write(encode({ type: FrameType.Ping, seq: 77 }));
    let pong: DecodeResult | null;
    do pong = await control.next();
    while (pong?.ok && pong.msg.type !== FrameType.Pong);
    expect(pong).toEqual({ ok: true, msg: { type: FrameType.Pong, seq: 77 } });
    expect(session.ended).toBe(false);
    for (const c of [control, w0, w1]) c.sock.destroy();
    a.sock.destroy();
    b.sock.destroy();
  });
});

describe("udp", () => {
  const stats = () => ({ connections: 0, bytesIn: 0, bytesOut: 0, denied: 0, overLimit: 0, dropped: 0, accepted: 0, datagramsIn: 0, datagramsOut: 0 });
  const record = { name: "u", remotePort: 0, allowIPs: [], denyIPs: [], maxConnections: 0 };

  test("the server sends replies only to peers that sent to the app", async () => {
    const st = stats();
    const app = await UdpPublic.open("127.0.0.1", record, st, 60_000, {});
    if (typeof app === "string") throw new Error(app);
    cleanup.push(() => app.close());
    const got: string[] = [];
    const victim = await Bun.udpSocket({ hostname: "127.0.0.1", socket: { data: (_s, b) => void got.push(Buffer.from(b).toString()), error() {} } });
    cleanup.push(() => victim.close());
    const work = new Endpoint(); // no socket: what the server forwards stays queued here
    app.attach(work);
    const frame = (text: string) => {
      const buf = new Uint8Array(200);
      return buf.subarray(0, encodeDatagramInto(buf, 0, "127.0.0.1", victim.port, new TextEncoder().encode(text)));
    };
    expect(app.fromClient(frame("unasked"))).toBeNull();
    victim.send("request", app.port, "127.0.0.1");
    await until(() => st.bytesIn === 7, 2000, "the request reaches the app");
    expect(app.fromClient(frame("answer"))).toBeNull();
    await until(() => got.length > 0, 2000, "the answer");
    expect(got).toEqual(["answer"]);
    expect(st.bytesOut).toBe(6);
  });

  test("a datagram over 65,507 bytes (IPv6 allows 65,527) is dropped, not relayed into a protocol error", async () => {
    const st = stats();
    const app = await UdpPublic.open("::1", record, st, 60_000, {});
    if (typeof app === "string") throw new Error(app);
    cleanup.push(() => app.close());
    const work = new Endpoint();
    app.attach(work);
    const peer = await Bun.udpSocket({ hostname: "::1", socket: { data() {}, error() {} } });
    cleanup.push(() => peer.close());
    peer.send(new Uint8Array(65_520), app.port, "::1");
    peer.send(new Uint8Array(100), app.port, "::1");
    await until(() => st.bytesIn > 0, 2000, "the small datagram");
    expect(st.bytesIn).toBe(100);
    expect(st.dropped).toBe(1);
    expect(work.closed).toBe(false);
  });
});
