/** The client's engine: backoff, login timeout, heartbeats both ways, self-registration, and logs that never show a secret. */
import { afterAll, describe, expect, setSystemTime, test } from "bun:test";
import net from "node:net";
import { backoffDelay, BACKOFF_MAX_MS, Connector } from "../lib/client/connector.ts";
import { setLogSink } from "../lib/log.ts";
import { encode, ErrorCode, FrameReader, FrameType, loginProof, MAGIC, withMagic } from "../protocol.ts";
import { clientConfig, createGroup, echoApp, onlineClient, randomData, roundTrip, sha256, testServer, TOKEN, until } from "./helpers.ts";

const echo = await echoApp();
const cleanup: (() => void)[] = [];
afterAll(() => {
  for (const f of cleanup) f();
  echo.close();
});

/** A fake control port: records connections and lets the test script each one. */
async function fakeServer(onConn: (s: net.Socket, frames: FrameReader) => void) {
  const conns: { at: number; closedAt?: number }[] = [];
  const srv = net.createServer((s) => {
    const rec: { at: number; closedAt?: number } = { at: performance.now() };
    conns.push(rec);
    s.on("close", () => (rec.closedAt = performance.now()));
    s.on("error", () => {});
    s.resume(); // read (and drop) unless the script listens, so that a FIN is seen
    onConn(s, new FrameReader());
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  cleanup.push(() => srv.close());
  return { port: (srv.address() as net.AddressInfo).port, conns };
}

describe("backoff", () => {
  test("delays grow exponentially with jitter and stop at the cap", () => {
    expect(backoffDelay(0, 0)).toBe(125);
    expect(backoffDelay(0, 1)).toBe(250);
    expect(backoffDelay(3, 0)).toBe(1000);
    expect(backoffDelay(3, 1)).toBe(2000);
    for (let a = 0; a < 25; a++) {
      const d = backoffDelay(a);
      expect(d).toBeGreaterThan(0);
      expect(d).toBeLessThanOrEqual(BACKOFF_MAX_MS);
    }
    expect(backoffDelay(20, 0)).toBe(BACKOFF_MAX_MS / 2);
    expect(backoffDelay(20, 1)).toBe(BACKOFF_MAX_MS);
  });
});

describe("liveness", () => {
  test("a login that gets no answer is abandoned at the login timeout and retried", async () => {
    const fake = await fakeServer(() => {}); // accepts, never answers
    const c = new Connector(clientConfig({ controlPort: fake.port }, "g", [{ name: "a", localAddr: `127.0.0.1:${echo.port}` }]), { loginTimeoutMs: 300 });
    cleanup.push(() => c.stop());
    c.start();
    await until(() => fake.conns.length >= 2, 5000, "a second login attempt");
    const first = fake.conns[0]!;
    expect(first.closedAt).toBeDefined();
    expect(first.closedAt! - first.at).toBeGreaterThanOrEqual(250);
    expect(first.closedAt! - first.at).toBeLessThan(2000);
    c.stop();
  });

  test("a client whose server stops answering reconnects after heartbeatTimeout", async () => {
    // Answers the login, then never answers a ping.
    const fake = await fakeServer((s, reader) => {
      const nonce = new Uint8Array(32);
      s.write(withMagic(encode({ type: FrameType.Challenge, nonce })));
      s.on("data", (d: Buffer) => {
        reader.push(d);
        for (let r = reader.next(); r; r = reader.next()) {
          if (r.ok && r.msg.type === FrameType.Login) {
            s.write(encode({ type: FrameType.LoginOk, sessionId: new Uint8Array(16), apps: [{ name: "a", type: "tcp", remotePort: 1, error: "" }] }));
          }
        }
      });
    });
    const c = new Connector(clientConfig({ controlPort: fake.port }, "g", [{ name: "a", localAddr: `127.0.0.1:${echo.port}` }], { heartbeatInterval: 0.1, heartbeatTimeout: 0.5 }));
    cleanup.push(() => c.stop());
    const offline = new Promise<string>((r) => c.once("offline", r));
    c.start();
    await until(() => c.online, 5000, "online");
    const t0 = performance.now();
    await offline;
    const ms = performance.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(400);
    expect(ms).toBeLessThan(2000);
    await until(() => fake.conns.length >= 2, 5000, "reconnect");
    c.stop();
  });

  test("the server drops a silent client at heartbeatTimeout", async () => {
    const server = await testServer({ heartbeatTimeout: 0.5 });
    cleanup.push(() => server.stop());
    await fetch(`http://127.0.0.1:${server.apiPort}/api/groups`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({ name: "quiet", token: TOKEN, apps: [{ name: "a" }] }),
    });
    const reader = new FrameReader();
    const sock = net.connect({ host: "127.0.0.1", port: server.controlPort });
    sock.on("error", () => {});
    let loggedInAt = 0;
    const closed = new Promise<number>((r) => sock.on("close", () => r(performance.now())));
    sock.write(withMagic(encode({ type: FrameType.Hello })));
    sock.on("data", (d: Buffer) => {
      reader.push(d);
      for (let r = reader.next(); r; r = reader.next()) {
        if (r.ok && r.msg.type === FrameType.Challenge) {
          sock.write(encode({ type: FrameType.Login, group: "quiet", proof: loginProof(TOKEN, r.msg.nonce, "quiet"), apps: [{ name: "a", type: "tcp" }] }));
        }
        if (r.ok && r.msg.type === FrameType.LoginOk) loggedInAt = performance.now();
      }
    });
    const ms = (await closed) - loggedInAt;
    expect(loggedInAt).toBeGreaterThan(0);
    expect(ms).toBeGreaterThanOrEqual(450);
    expect(ms).toBeLessThan(1500);
    expect(server.hub.online).toBe(0);
  });

  test("a step of the wall clock (a time sync, a resumed VM) drops no session on either side", async () => {
    const server = await testServer({ heartbeatTimeout: 0.5 });
    cleanup.push(() => server.stop());
    await createGroup(server, "steady", ["a"]);
    const cfg = clientConfig(server, "steady", [{ name: "a", localAddr: `127.0.0.1:${echo.port}` }], { heartbeatInterval: 0.1, heartbeatTimeout: 0.5 });
    const { connector, apps } = await onlineClient(cfg);
    cleanup.push(() => connector.stop());
    let offline = 0;
    connector.on("offline", () => offline++);
    try {
      setSystemTime(new Date(Date.now() + 3_600_000)); // an hour ahead
      // Proving that nothing happens takes a wait: four heartbeat timeouts, many sweeps on both sides.
      await Bun.sleep(2_000);
    } finally {
      setSystemTime();
    }
    expect(offline).toBe(0);
    expect(server.hub.online).toBe(1);
    const data = randomData(50_000, 3);
    expect((await roundTrip(apps[0]!.remotePort, data)).hash).toBe(sha256(data));
  });
});

describe("stopping", () => {
  test("a client that stops (here: replaced by another login) dials no work connection after, and leaves none open", async () => {
    // The fake server asks for 40 work connections and, in the same write, says the session was replaced.
    let control = true;
    const fake = await fakeServer((s, reader) => {
      if (!control) return; // a work connection: hold it open, say nothing
      control = false;
      s.on("data", (d: Buffer) => {
        reader.push(d);
        for (let r = reader.next(); r; r = reader.next()) {
          if (r.ok && r.msg.type === FrameType.Hello) s.write(withMagic(encode({ type: FrameType.Challenge, nonce: new Uint8Array(32) })));
          if (r.ok && r.msg.type === FrameType.Login) {
            s.write(
              Buffer.concat([
                encode({ type: FrameType.LoginOk, sessionId: new Uint8Array(16), apps: [{ name: "a", type: "tcp", remotePort: 1, error: "" }] }),
                encode({ type: FrameType.OpenWork, count: 40 }),
                encode({ type: FrameType.Error, code: ErrorCode.SessionReplaced, message: "replaced" }),
              ]),
            );
          }
        }
      });
    });
    const c = new Connector(clientConfig({ controlPort: fake.port }, "g", [{ name: "a", localAddr: `127.0.0.1:${echo.port}` }]));
    cleanup.push(() => c.stop());
    const fatal = new Promise<string>((r) => c.once("fatal", r));
    c.start();
    expect(await fatal).toBe("replaced");
    // Every connection the client opened is closed by it...
    await until(() => fake.conns.every((x) => x.closedAt !== undefined), 5000, "every connection closed");
    const opened = fake.conns.length;
    // ...and none comes after (dials queued for later loop turns must not start).
    await new Promise<void>((r) => setTimeout(r, 200));
    expect(fake.conns.length).toBe(opened);
    expect(fake.conns.every((x) => x.closedAt !== undefined)).toBe(true);
    expect(opened).toBeLessThan(10);
  });
});

describe("self-registration and secrets", () => {
  test("a client with a registrationToken registers its unknown group, logs in, and no log line shows a secret", async () => {
    const lines: string[] = [];
    setLogSink((l) => lines.push(l));
    const REG = "registration-token-abcdefgh";
    const server = await testServer({ registrationToken: REG, logLevel: "debug" });
    cleanup.push(() => server.stop());
    try {
      const cfg = clientConfig(server, "newcomer", [{ name: "svc", localAddr: `127.0.0.1:${echo.port}` }], {
        apiUrl: `http://127.0.0.1:${server.apiPort}`,
        registrationToken: REG,
      });
      const { connector, apps } = await onlineClient(cfg);
      expect(apps[0]!.error).toBe("");
      const data = randomData(100_000, 9);
      expect((await roundTrip(apps[0]!.remotePort, data)).hash).toBe(sha256(data));
      connector.stop();
      // Known now: a second start meets 409 and logs in all the same, at the same port.
      const again = await onlineClient(cfg);
      expect(again.apps[0]!.remotePort).toBe(apps[0]!.remotePort);
      again.connector.stop();
      // A wrong token is refused and logged, without the token.
      const wrong = new Connector({ ...cfg, token: "a-wrong-token-that-is-long", registrationToken: undefined });
      wrong.start();
      await until(() => lines.some((l) => l.includes("login failed")), 5000, "failed login logged");
      wrong.stop();
    } finally {
      setLogSink((l) => process.stderr.write(l + "\n"));
    }
    expect(lines.length).toBeGreaterThan(3);
    for (const secret of [TOKEN, REG, server.adminToken, "a-wrong-token-that-is-long"]) {
      expect(lines.filter((l) => l.includes(secret))).toEqual([]);
    }
  });
});
