/**
 * A stream cut short must never look finished (issue 14). A direction ends cleanly (FIN) only
 * after its StreamEnd count has been delivered; a FIN on a work connection proves nothing (a
 * killed peer's kernel sends one), so every fault below must reach the other end as a reset.
 * Both sides are checked against a peer that speaks the wire protocol itself, with a user
 * (or app) that only downloads and one that only uploads; the clean cases check SHA-256.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Connector } from "../lib/client/connector.ts";
import { encode, FrameType, withMagic } from "../protocol.ts";
import { clientConfig, randomData, sha256, testServer, until } from "./helpers.ts";
import { fakeServer, peerApp, rawLogin, rawSession, rawWork, userPeer, type FakeWork, type Peer } from "./wire.ts";

/** Bytes sent before each fault: what the reproduction sent. */
const SENT = 100_000;
const payload = randomData(SENT, 14);
const cleanup: (() => void | Promise<void>)[] = [];
afterAll(async () => {
  for (const f of cleanup.reverse()) await f();
});

/** The end of a peer once it has come. */
async function outcome(p: Peer, what: string): Promise<string> {
  await until(() => p.ended !== null, 5000, what);
  return p.ended!;
}

describe("server side: the user of a stream whose client fails", () => {
  const servers = { plain: testServer({ poolSize: 1 }), hb: testServer({ poolSize: 1, heartbeatTimeout: 0.4 }) };
  afterAll(async () => {
    for (const s of Object.values(servers)) (await s).stop();
  });
  let n = 0;

  type Ctx = Awaited<ReturnType<typeof open>>;
  /** A group logged in over a raw control connection, one work connection pooled, one user on it whose bytes have flowed. */
  async function open(which: keyof typeof servers, direction: "download" | "upload") {
    const server = await servers[which];
    const group = `g${n++}`;
    const login = await rawSession(server, group, "a");
    const session = server.hub.session(group)!;
    const work = rawWork(server.controlPort, login.sessionId, 0);
    await until(() => session.pooled === 1, 3000, "the work connection pooled");
    const user = userPeer(login.port);
    await until(() => work.start !== null, 3000, "StartWork");
    expect(work.start).toMatchObject({ ok: true, msg: { type: FrameType.StartWork, app: "a" } });
    work.sock.write(encode({ type: FrameType.WorkAck, ok: true, message: "" }));
    if (direction === "download") {
      work.sock.write(payload);
      await until(() => user.got === SENT, 3000, "the client's bytes at the user");
    } else {
      user.sock.write(payload);
      await until(() => work.rawBytes === SENT, 3000, "the user's bytes at the client");
    }
    return { server, group, session, ...login, work, user };
  }

  const finAfterLoss = async (c: Ctx) => {
    await until(() => c.session.ended, 3000, "the session ended");
    c.work.sock.end();
  };
  const admin = (c: Ctx, method: string, path: string) =>
    fetch(`http://127.0.0.1:${c.server.apiPort}${path}`, { method, headers: { authorization: `Bearer ${c.server.adminToken}` } }).then((r) => r.body?.cancel());

  const faults: Record<string, { server?: keyof typeof servers; cut: (c: Ctx) => Promise<unknown> }> = {
    "work connection FIN without StreamEnd, control alive": { cut: async (c) => c.work.sock.end() },
    "work connection reset, control alive": { cut: async (c) => c.work.sock.resetAndDestroy() },
    "control FIN, then the work connection's FIN (the order kill -9 gives)": {
      cut: async (c) => {
        c.control.sock.end();
        await finAfterLoss(c);
      },
    },
    "control reset, then work FIN": {
      cut: async (c) => {
        c.control.sock.resetAndDestroy();
        await finAfterLoss(c);
      },
    },
    "heartbeat timeout, then work FIN": { server: "hb", cut: finAfterLoss },
    "takeover by a new login, then the old work connection's FIN": {
      cut: async (c) => {
        const again = await rawLogin(c.server.controlPort, c.group, "a");
        cleanup.push(() => void again.control.sock.destroy());
        await finAfterLoss(c);
      },
    },
    "group deleted (kick)": { cut: (c) => admin(c, "DELETE", `/api/groups/${c.group}`) },
    "token changed": { cut: (c) => admin(c, "POST", `/api/groups/${c.group}/token`) },
    "StreamEnd counting more than arrived, then work FIN": {
      cut: async (c) => {
        c.control.sock.write(encode({ type: FrameType.StreamEnd, seq: 0, bytes: SENT + 1000 }));
        c.work.sock.end();
      },
    },
  };

  for (const [name, fault] of Object.entries(faults)) {
    test(`${name}: a downloading user gets the bytes sent, then a reset`, async () => {
      const c = await open(fault.server ?? "plain", "download");
      await fault.cut(c);
      expect(await outcome(c.user, "the user's end")).toBe("ECONNRESET");
      expect(c.user.got).toBe(SENT);
      expect(sha256(c.user.bytes)).toBe(sha256(payload));
      c.control.sock.destroy();
    });
    test(`${name}: an uploading user gets a reset`, async () => {
      const c = await open(fault.server ?? "plain", "upload");
      await fault.cut(c);
      expect(await outcome(c.user, "the user's end")).toBe("ECONNRESET");
      expect(c.user.got).toBe(0);
      c.control.sock.destroy();
    });
  }

  test("clean: StreamEnd with the exact count, both ways: FINs, byte-exact; a fault afterwards changes nothing", async () => {
    const c = await open("plain", "download");
    c.control.sock.write(encode({ type: FrameType.StreamEnd, seq: 0, bytes: SENT }));
    await until(() => c.user.ended !== null, 3000, "the user's FIN");
    expect(c.user.ended).toBe("FIN");
    expect(sha256(c.user.bytes)).toBe(sha256(payload));
    // The user uploads and ends: the client is told the count of what it received.
    const up = randomData(50_000, 15);
    c.user.sock.end(up);
    let told: unknown = null;
    while (!told) {
      const f = await c.control.next();
      if (!f) break;
      if (f.ok && f.msg.type === FrameType.StreamEnd) told = f.msg;
    }
    expect(told).toEqual({ type: FrameType.StreamEnd, seq: 0, bytes: up.length });
    await until(() => c.work.rawBytes === up.length, 3000, "the upload at the client");
    expect(sha256(Buffer.concat(c.work.raw))).toBe(sha256(up));
    // The client dies now: the finished stream stays finished.
    c.control.sock.end();
    c.work.sock.end();
    await until(() => c.user.closed, 3000, "the user closed");
    expect(c.user.ended).toBe("FIN");
  });
});

describe("client side: the local app's connection when the server fails", () => {
  let n = 0;
  /** A real connector against a fake server; one stream whose bytes have flowed toward the app (upload) or from it (download). */
  async function open(direction: "download" | "upload", extra: Record<string, unknown> = {}) {
    const app = await peerApp(direction === "download" ? payload : undefined);
    const hub = await fakeServer("a");
    const c = new Connector(clientConfig({ controlPort: hub.port }, `c${n++}`, [{ name: "a", localAddr: `127.0.0.1:${app.port}` }], extra));
    cleanup.push(() => c.stop(), () => hub.close(), () => void app.close());
    c.start();
    await until(() => hub.works.length === 1, 3000, "a work connection");
    const work = hub.works[0]!;
    const start = encode({ type: FrameType.StartWork, app: "a", userAddr: "127.0.0.1:40000", publicAddr: "127.0.0.1:6000" });
    // The first frame a server sends on a work connection carries MAGIC.
    work.sock.write(withMagic(start));
    await until(() => work.ack !== null && app.peers.length === 1, 3000, "the WorkAck and the app's connection");
    expect(work.ack).toMatchObject({ ok: true, msg: { type: FrameType.WorkAck, ok: true } });
    const local = app.peers[0]!;
    if (direction === "upload") {
      work.sock.write(payload);
      await until(() => local.got === SENT, 3000, "the user's bytes at the app");
    } else await until(() => work.rawBytes === SENT, 3000, "the app's bytes at the server");
    return { hub, work, local, connector: c };
  }

  const faults: Record<string, { extra?: Record<string, unknown>; cut: (hub: Awaited<ReturnType<typeof fakeServer>>, work: FakeWork) => Promise<void> }> = {
    "work connection FIN without StreamEnd, control alive": { cut: async (_h, w) => void w.sock.end() },
    "work connection reset, control alive": { cut: async (_h, w) => void w.sock.resetAndDestroy() },
    "control FIN, then work FIN (the order a killed server gives)": {
      cut: async (h, w) => {
        h.control!.end();
        w.sock.end();
      },
    },
    "control reset, then work FIN": {
      cut: async (h, w) => {
        h.control!.resetAndDestroy();
        await Bun.sleep(0);
        w.sock.end();
      },
    },
    "heartbeat timeout (the server stops answering), then work FIN": {
      extra: { heartbeatInterval: 0.1, heartbeatTimeout: 0.4 },
      cut: async (h, w) => {
        await until(() => h.controlEnded || !!h.control?.closed, 3000, "the client to give up on the control connection");
        w.sock.end();
      },
    },
    "StreamEnd counting more than arrived, then work FIN": {
      cut: async (h, w) => {
        h.control!.write(encode({ type: FrameType.StreamEnd, seq: w.seq, bytes: SENT + 1000 }));
        w.sock.end();
      },
    },
  };

  for (const [name, fault] of Object.entries(faults)) {
    test(`${name}: the app receiving an upload gets the bytes sent, then a reset`, async () => {
      const { hub, work, local } = await open("upload", fault.extra);
      await fault.cut(hub, work);
      expect(await outcome(local, "the app's end")).toBe("ECONNRESET");
      expect(local.got).toBe(SENT);
      expect(sha256(local.bytes)).toBe(sha256(payload));
    });
    test(`${name}: the app serving a download gets a reset`, async () => {
      const { hub, work, local } = await open("download", fault.extra);
      await fault.cut(hub, work);
      expect(await outcome(local, "the app's end")).toBe("ECONNRESET");
      expect(local.got).toBe(0);
    });
  }

  test("clean: StreamEnd with the exact count: the app gets a FIN, byte-exact, and its own end is counted", async () => {
    const { hub, work, local } = await open("upload");
    hub.control!.write(encode({ type: FrameType.StreamEnd, seq: work.seq, bytes: SENT }));
    expect(await outcome(local, "the app's FIN")).toBe("FIN");
    expect(sha256(local.bytes)).toBe(sha256(payload));
    const down = randomData(70_000, 16);
    local.sock.end(down);
    await until(() => hub.frames.some((f) => f.ok && f.msg.type === FrameType.StreamEnd), 3000, "the client's StreamEnd");
    expect(hub.frames.find((f) => f.ok && f.msg.type === FrameType.StreamEnd)).toEqual({ ok: true, msg: { type: FrameType.StreamEnd, seq: work.seq, bytes: down.length } });
    await until(() => work.rawBytes === down.length, 3000, "the app's bytes at the server");
    expect(sha256(Buffer.concat(work.raw))).toBe(sha256(down));
    // The server dies now: the finished stream stays finished.
    hub.control!.end();
    work.sock.end();
    await until(() => local.closed, 3000, "the app's connection closed");
    expect(local.ended).toBe("FIN");
  });
});
