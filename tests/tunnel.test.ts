/** End-to-end relaying through an in-process server and clients: integrity, half-close, banners, refusals, takeover. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { encode, FrameReader, FrameType, loginProof, MAGIC, ErrorCode, withMagic } from "../protocol.ts";
import { Connector } from "../lib/client/connector.ts";
import {
  clientConfig,
  deadPort,
  echoApp,
  onlineClient,
  randomData,
  roundTrip,
  sha256,
  testServer,
  timeToClose,
  TOKEN,
  until,
} from "./helpers.ts";

const server = await testServer({ userConnTimeout: 1 });
const api = (path: string, init: RequestInit = {}) =>
  fetch(`http://127.0.0.1:${server.apiPort}${path}`, { ...init, headers: { authorization: `Bearer ${server.adminToken}`, ...(init.headers ?? {}) } });
const createGroup = async (name: string, apps: string[]) => {
  const res = await api("/api/groups", { method: "POST", body: JSON.stringify({ name, token: TOKEN, apps: apps.map((a) => ({ name: a, type: "tcp" })) }) });
  expect(res.status).toBe(201);
};
const echo = await echoApp();
const connectors: Connector[] = [];

afterAll(() => {
  for (const c of connectors) c.stop();
  server.stop();
  echo.close();
});

/** Logs in a raw protocol client and returns its control socket and the server's first answer. */
async function rawLogin(group: string, token: string, apps: { name: string; type: "tcp" }[]) {
  const reader = new FrameReader();
  const frames: ReturnType<FrameReader["next"]>[] = [];
  let wake: () => void = () => {};
  const sock = net.connect({ host: "127.0.0.1", port: server.controlPort });
  sock.on("data", (d: Buffer) => {
    reader.push(d);
    for (let r = reader.next(); r; r = reader.next()) frames.push(r);
    wake();
  });
  sock.on("error", () => {});
  const next = async () => {
    while (!frames.length) await new Promise<void>((r) => (wake = r));
    return frames.shift()!;
  };
  sock.write(withMagic(encode({ type: FrameType.Hello })));
  const ch = await next();
  if (!ch?.ok || ch.msg.type !== FrameType.Challenge) throw new Error("no challenge");
  sock.write(encode({ type: FrameType.Login, group, proof: loginProof(token, ch.msg.nonce, group), apps }));
  return { sock, answer: await next(), next };
}

describe("relaying", () => {
  let ports: Record<string, number> = {};
  beforeAll(async () => {
    for (const g of ["g1", "g2", "g3"]) {
      await createGroup(g, ["a", "b", "c"]);
      const { connector, apps } = await onlineClient(clientConfig(server, g, ["a", "b", "c"].map((name) => ({ name, localAddr: `127.0.0.1:${echo.port}` }))));
      connectors.push(connector);
      for (const a of apps) {
        expect(a.error).toBe("");
        ports[`${g}/${a.name}`] = a.remotePort;
      }
    }
  });

  test("3 groups x 3 apps: 30 concurrent streams of 16 MiB each way arrive intact", async () => {
    const keys = Object.keys(ports);
    expect(keys.length).toBe(9);
    const jobs = Array.from({ length: 30 }, (_, i) => {
      const data = randomData(16 * 1024 * 1024, i + 1);
      return roundTrip(ports[keys[i % keys.length]!]!, data).then((r) => ({ r, want: sha256(data), len: data.length }));
    });
    for (const { r, want, len } of await Promise.all(jobs)) {
      expect(r.received).toBe(len);
      expect(r.hash).toBe(want);
    }
    const view = await (await api("/api/groups/g1")).json();
    expect(view.online).toBe(true);
    const a = view.apps.find((x: { name: string }) => x.name === "a");
    // 30 streams over 9 apps: g1/a carried streams 0, 9, 18 and 27.
    expect(a.bytesIn).toBe(4 * 16 * 1024 * 1024);
    expect(a.bytesOut).toBe(4 * 16 * 1024 * 1024);
  }, 120_000);

  test("a local app that speaks first loses no bytes", async () => {
    const banner = randomData(3 * 1024 * 1024 + 17, 99);
    const app = net.createServer((s) => {
      s.write(banner);
      s.pipe(s);
    });
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    await createGroup("banner", ["srv"]);
    const { connector, apps } = await onlineClient(clientConfig(server, "banner", [{ name: "srv", localAddr: `127.0.0.1:${(app.address() as net.AddressInfo).port}` }]));
    connectors.push(connector);
    const tail = randomData(100_000, 7);
    const res = await roundTrip(apps[0]!.remotePort, tail);
    const whole = new Uint8Array(banner.length + tail.length);
    whole.set(banner);
    whole.set(tail, banner.length);
    expect(res.received).toBe(whole.length);
    expect(res.hash).toBe(sha256(whole));
    app.close();
  });

  test("a user who waits for the app to speak first gets its banner at once, and then a conversation", async () => {
    // As with SSH or SMTP: the user sends nothing until the app has spoken.
    const app = net.createServer((s) => {
      s.write("SSH-2.0-warren-test\r\n");
      s.pipe(s);
    });
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    await createGroup("speaks-first", ["ssh"]);
    const { connector, apps } = await onlineClient(clientConfig(server, "speaks-first", [{ name: "ssh", localAddr: `127.0.0.1:${(app.address() as net.AddressInfo).port}` }]));
    connectors.push(connector);
    const user = net.connect({ host: "127.0.0.1", port: apps[0]!.remotePort });
    const t0 = performance.now();
    const banner = await new Promise<string>((resolve) => user.once("data", (d: Buffer) => resolve(d.toString())));
    expect(banner).toBe("SSH-2.0-warren-test\r\n");
    // Well under a second: the frame that starts the stream did not wait for user bytes that never came.
    expect(performance.now() - t0).toBeLessThan(1000);
    const echoed = new Promise<string>((resolve) => user.once("data", (d: Buffer) => resolve(d.toString())));
    user.write("SSH-2.0-user\r\n");
    expect(await echoed).toBe("SSH-2.0-user\r\n");
    user.destroy();
    app.close();
  });

  test("an app that answers after longer than userConnTimeout: the client's acknowledgement does not wait for it", async () => {
    // The server here closes a user whose work connection gives no answer within 1 s; the app takes 1.5 s.
    const app = net.createServer({ allowHalfOpen: true }, (s) => {
      const got: Buffer[] = [];
      s.on("data", (d: Buffer) => got.push(d));
      s.on("end", () => setTimeout(() => s.end(Buffer.concat(got)), 1500));
    });
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    await createGroup("slow-answer", ["slow"]);
    const { connector, apps } = await onlineClient(clientConfig(server, "slow-answer", [{ name: "slow", localAddr: `127.0.0.1:${(app.address() as net.AddressInfo).port}` }]));
    connectors.push(connector);
    const request = randomData(10_000, 44);
    const res = await roundTrip(apps[0]!.remotePort, request);
    expect(res.received).toBe(request.length);
    expect(res.hash).toBe(sha256(request));
    app.close();
  });

  test("an app that accepts and then resets at once: the user gets a reset, not a clean close", async () => {
    const app = net.createServer((s) => s.resetAndDestroy());
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    await createGroup("resets", ["rst"]);
    const { connector, apps } = await onlineClient(clientConfig(server, "resets", [{ name: "rst", localAddr: `127.0.0.1:${(app.address() as net.AddressInfo).port}` }]));
    connectors.push(connector);
    // The user sends nothing: bytes written to an app that has reset make Bun report a clean end instead
    // (its write fails, then `end` and `close` come without an error), which no relay can tell apart.
    const outcome = await new Promise<string>((resolve) => {
      const u = net.connect({ host: "127.0.0.1", port: apps[0]!.remotePort });
      u.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      u.on("end", () => resolve("clean end"));
    });
    expect(outcome).toBe("ECONNRESET");
    app.close();
  });

  test("half-close: a user that shuts its write side still receives the whole reply", async () => {
    // The app reads until FIN, then answers with 8 MiB and closes.
    const reply = randomData(8 * 1024 * 1024, 5);
    let gotFromUser = 0;
    const app = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on("data", (d: Buffer) => (gotFromUser += d.length));
      s.on("end", () => s.end(reply));
    });
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    await createGroup("half", ["h"]);
    const { connector, apps } = await onlineClient(clientConfig(server, "half", [{ name: "h", localAddr: `127.0.0.1:${(app.address() as net.AddressInfo).port}` }]));
    connectors.push(connector);
    const request = randomData(1_000_000, 3);
    const res = await roundTrip(apps[0]!.remotePort, request, { halfClose: true });
    expect(gotFromUser).toBe(request.length);
    expect(res.received).toBe(reply.length);
    expect(res.hash).toBe(sha256(reply));
    app.close();
  });

  test("local app down: the user is closed within 1 s, and the app works once it is back", async () => {
    const port = await deadPort();
    await createGroup("down", ["d"]);
    const { connector, apps } = await onlineClient(clientConfig(server, "down", [{ name: "d", localAddr: `127.0.0.1:${port}` }]));
    connectors.push(connector);
    const ms = await timeToClose(apps[0]!.remotePort);
    expect(ms).toBeLessThan(1000);
    const app = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
    await new Promise<void>((r) => app.listen(port, "127.0.0.1", r));
    const data = randomData(200_000, 11);
    const res = await roundTrip(apps[0]!.remotePort, data);
    expect(res.hash).toBe(sha256(data));
    app.close();
  });
});

describe("refusals", () => {
  test("wrong token and unknown group get the same 'authentication failed'; other groups keep working", async () => {
    await createGroup("victim", ["v"]);
    const wrong = await rawLogin("victim", "not-the-right-token-at-all", [{ name: "v", type: "tcp" }]);
    const unknown = await rawLogin("nobody", TOKEN, [{ name: "v", type: "tcp" }]);
    for (const { answer, sock } of [wrong, unknown]) {
      expect(answer.ok).toBe(true);
      if (!answer.ok || answer.msg.type !== FrameType.Error) throw new Error("expected an error frame");
      expect(answer.msg.code).toBe(ErrorCode.AuthFailed);
      expect(answer.msg.message).toBe("authentication failed");
      await new Promise<void>((r) => (sock.closed ? r() : sock.once("close", () => r())));
    }
    const data = randomData(500_000, 21);
    const view = await (await api("/api/groups/g2")).json();
    const res = await roundTrip(view.apps[0].remotePort, data);
    expect(res.hash).toBe(sha256(data));
  });

  test("an app the group does not have is refused by name; the others are served", async () => {
    await createGroup("partial", ["known"]);
    const { connector, apps } = await onlineClient(
      clientConfig(server, "partial", [
        { name: "known", localAddr: `127.0.0.1:${echo.port}` },
        { name: "stranger", localAddr: `127.0.0.1:${echo.port}` },
      ]),
    );
    connectors.push(connector);
    const known = apps.find((a) => a.name === "known")!;
    const stranger = apps.find((a) => a.name === "stranger")!;
    expect(known.error).toBe("");
    expect(stranger.error).toContain('unknown app "stranger"');
    const data = randomData(100_000, 4);
    expect((await roundTrip(known.remotePort, data)).hash).toBe(sha256(data));
  });

  test("a port that cannot be bound fails that app with a message; the other apps work", async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
    const busy = (blocker.address() as net.AddressInfo).port;
    const res = await api("/api/groups", {
      method: "POST",
      body: JSON.stringify({ name: "busy", token: TOKEN, apps: [{ name: "x", remotePort: busy }, { name: "y" }] }),
    });
    expect(res.status).toBe(201);
    const { connector, apps } = await onlineClient(
      clientConfig(server, "busy", [
        { name: "x", localAddr: `127.0.0.1:${echo.port}` },
        { name: "y", localAddr: `127.0.0.1:${echo.port}` },
      ]),
    );
    connectors.push(connector);
    expect(apps.find((a) => a.name === "x")!.error).toContain(`port ${busy} cannot be bound`);
    const y = apps.find((a) => a.name === "y")!;
    const data = randomData(50_000, 8);
    expect((await roundTrip(y.remotePort, data)).hash).toBe(sha256(data));
    blocker.close();
  });

  test("garbage, a wrong magic, an oversized frame and an unknown type get an error and a close; the server serves on", async () => {
    const inputs = [
      new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
      new Uint8Array([...MAGIC.subarray(0, MAGIC.length - 1), 0x09, 1, 2, 3]),
      new Uint8Array([...MAGIC, FrameType.Login, 0xff, 0xff, 0xff, 0xff]),
      new Uint8Array([...MAGIC, 0x7f, 0, 0, 0, 0]),
      new Uint8Array([...MAGIC, FrameType.Ping, 0, 0, 0, 4, 0, 0, 0, 1]),
    ];
    const expected = [ErrorCode.BadMagic, ErrorCode.VersionMismatch, ErrorCode.FrameTooLarge, ErrorCode.UnknownType, ErrorCode.UnexpectedMessage];
    for (const [i, bytes] of inputs.entries()) {
      const reader = new FrameReader();
      const got: number[] = [];
      await new Promise<void>((resolve) => {
        const s = net.connect({ host: "127.0.0.1", port: server.controlPort }, () => s.write(bytes));
        s.on("data", (d: Buffer) => {
          reader.push(d);
          for (let r = reader.next(); r; r = reader.next()) if (r.ok && r.msg.type === FrameType.Error) got.push(r.msg.code);
        });
        s.on("close", () => resolve());
        s.on("error", () => {});
      });
      expect(got).toEqual([expected[i]!]);
    }
    const data = randomData(100_000, 31);
    const view = await (await api("/api/groups/g3")).json();
    expect((await roundTrip(view.apps[1].remotePort, data)).hash).toBe(sha256(data));
  });

  test("a connection that never finishes its hello is closed at the handshake timeout", async () => {
    const quick = await testServer({ handshakeTimeout: 0.3 });
    try {
      const t0 = performance.now();
      await new Promise<void>((resolve) => {
        const s = net.connect({ host: "127.0.0.1", port: quick.controlPort }, () => s.write(MAGIC.subarray(0, 2)));
        s.on("data", () => {});
        s.on("close", () => resolve());
        s.on("error", () => {});
      });
      const ms = performance.now() - t0;
      expect(ms).toBeGreaterThanOrEqual(250);
      expect(ms).toBeLessThan(3000);
    } finally {
      quick.stop();
    }
  });

  test("a user waits at most userConnTimeout for a work connection", async () => {
    // A raw client that logs in but never opens work connections.
    await createGroup("lazy", ["l"]);
    const { answer, sock } = await rawLogin("lazy", TOKEN, [{ name: "l", type: "tcp" }]);
    if (!answer.ok || answer.msg.type !== FrameType.LoginOk) throw new Error("login failed");
    const ms = await timeToClose(answer.msg.apps[0]!.remotePort);
    expect(ms).toBeGreaterThanOrEqual(900);
    expect(ms).toBeLessThan(3000);
    sock.destroy();
  });
});

describe("sessions", () => {
  test("a second login for an online group takes over its ports without a conflict", async () => {
    await createGroup("twice", ["t"]);
    const first = await onlineClient(clientConfig(server, "twice", [{ name: "t", localAddr: `127.0.0.1:${echo.port}` }]));
    const fatal = new Promise<string>((r) => first.connector.once("fatal", r));
    const second = await onlineClient(clientConfig(server, "twice", [{ name: "t", localAddr: `127.0.0.1:${echo.port}` }]));
    connectors.push(first.connector, second.connector);
    expect(second.apps[0]!.error).toBe("");
    expect(second.apps[0]!.remotePort).toBe(first.apps[0]!.remotePort);
    expect(await fatal).toContain("replaced");
    const data = randomData(300_000, 12);
    expect((await roundTrip(second.apps[0]!.remotePort, data)).hash).toBe(sha256(data));
    const view = await (await api("/api/groups/twice")).json();
    expect(view.online).toBe(true);
  });

  test("established streams survive the loss of the control connection", async () => {
    await createGroup("survive", ["s"]);
    const { connector, apps } = await onlineClient(clientConfig(server, "survive", [{ name: "s", localAddr: `127.0.0.1:${echo.port}` }]));
    connectors.push(connector);
    const port = apps[0]!.remotePort;
    const sock = net.connect({ host: "127.0.0.1", port });
    const first = randomData(10_000, 1);
    const second = randomData(10_000, 2);
    let got = 0;
    const chunks: Buffer[] = [];
    sock.on("data", (d: Buffer) => {
      got += d.length;
      chunks.push(d);
    });
    sock.write(first);
    await until(() => got === first.length, 5000, "first echo");
    // Kick the session from the server side (as a heartbeat timeout would).
    server.hub.session("survive")!.end(null, "test");
    await until(async () => !(await (await api("/api/groups/survive")).json()).online, 5000, "offline");
    sock.write(second);
    await until(() => got === first.length + second.length, 5000, "second echo");
    expect(sha256(Buffer.concat(chunks))).toBe(sha256(Buffer.concat([first, second])));
    sock.destroy();
    // The client reconnects by itself.
    await until(async () => (await (await api("/api/groups/survive")).json()).online, 10_000, "back online");
  });
});
