/** Transport security and access control: TLS and pinning, lockout, IP lists, limits, and secrets kept out of logs and responses. */
import { afterAll, describe, expect, test } from "bun:test";
import { statSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { join } from "node:path";
import { Connector } from "../lib/client/connector.ts";
import { LOG_BURST, logRate, setLogSink } from "../lib/log.ts";
import { GENERATED_KEY_FILE, loadServerTls } from "../lib/tls.ts";
import { encode, ErrorCode, FrameReader, FrameType, loginProof, MAGIC, withMagic } from "../protocol.ts";
import { clientConfig, echoApp, onlineClient, randomData, roundTrip, sha256, testServer, TOKEN, until } from "./helpers.ts";
import { tempDir } from "./procs.ts";

const logs: string[] = [];
setLogSink((l) => logs.push(l));
// This file counts log lines (one "address blocked" per block): the flood limit, tested in log.test.ts, must not
// hold back lines that earlier files in the same process happened to print too.
logRate.burst = Number.MAX_SAFE_INTEGER;
const responses: string[] = [];
const cleanup: (() => void)[] = [];
const echo = await echoApp();
afterAll(() => {
  for (const f of cleanup.reverse()) f();
  echo.close();
  setLogSink((l) => process.stderr.write(l + "\n"));
  logRate.burst = LOG_BURST;
});

async function api(server: { apiPort: number; adminToken: string }, path: string, init: RequestInit = {}, token = server.adminToken) {
  const res = await fetch(`http://127.0.0.1:${server.apiPort}${path}`, { ...init, headers: { authorization: `Bearer ${token}` } });
  const text = await res.text();
  responses.push(text);
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** A TCP relay that records every byte between client and server (and forwards half-closes). */
async function recordingProxy(target: number) {
  const seen: Buffer[] = [];
  const srv = net.createServer({ allowHalfOpen: true }, (a) => {
    const b = net.connect({ host: "127.0.0.1", port: target, allowHalfOpen: true });
    a.on("data", (d: Buffer) => seen.push(d));
    b.on("data", (d: Buffer) => seen.push(d));
    a.pipe(b);
    b.pipe(a);
    a.on("close", () => b.destroy());
    b.on("close", () => a.destroy());
    a.on("error", () => {});
    b.on("error", () => {});
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  cleanup.push(() => srv.close());
  return { port: (srv.address() as net.AddressInfo).port, captured: () => Buffer.concat(seen) };
}

/** One raw login from a chosen source address; resolves with the server's error code, or "ok". */
function rawLogin(port: number, from: string, group: string, token: string): Promise<ErrorCode | "ok" | "closed"> {
  return new Promise((resolve) => {
    const reader = new FrameReader();
    const s = net.connect({ host: "127.0.0.1", port, localAddress: from });
    s.on("error", () => {});
    s.on("close", () => resolve("closed"));
    s.write(withMagic(encode({ type: FrameType.Hello })));
    s.on("data", (d: Buffer) => {
      reader.push(d);
      for (let r = reader.next(); r; r = reader.next()) {
        if (!r.ok) return resolve("closed");
        if (r.msg.type === FrameType.Challenge) s.write(encode({ type: FrameType.Login, group, proof: loginProof(token, r.msg.nonce, group), apps: [] }));
        else if (r.msg.type === FrameType.Error) return resolve(r.msg.code);
        else if (r.msg.type === FrameType.LoginOk) {
          s.destroy();
          return resolve("ok");
        }
      }
    });
  });
}

/** Connects as a user from `from`; resolves with the bytes echoed back before the close. */
function userFrom(port: number, from: string, send = "ping"): Promise<string> {
  return new Promise((resolve) => {
    let got = "";
    const s = net.connect({ host: "127.0.0.1", port, localAddress: from }, () => s.end(send));
    s.on("data", (d: Buffer) => (got += d.toString()));
    s.on("close", () => resolve(got));
    s.on("error", () => {});
  });
}

describe("TLS", async () => {
  const dir = tempDir();
  // Generated under the usual umask, so that the key's 0600 below is Warren's doing, not the runner's.
  const umask = process.umask(0o022);
  const material = await loadServerTls(dir).finally(() => process.umask(umask));
  const server = await testServer({ tls: { enabled: true } }, material);
  cleanup.push(() => server.stop());
  await api(server, "/api/groups", { method: "POST", body: JSON.stringify({ name: "tls", token: TOKEN, apps: [{ name: "e" }] }) });
  const PLAIN = "PLAINTEXT-MARKER-7f3a";

  test("the generated certificate persists: same fingerprint after a restart, key file mode 0600", async () => {
    expect(material.generated).toBe(true);
    expect(material.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    const again = await loadServerTls(dir);
    expect(again.generated).toBe(false);
    expect(again.fingerprint).toBe(material.fingerprint);
    expect(statSync(join(dir, GENERATED_KEY_FILE)).mode & 0o777).toBe(0o600);
    const lines: string[] = [];
    const s2 = await (await import("../server.ts")).startServer(
      (await import("../lib/config/load.ts")).validate(
        (await import("../lib/config/schema.ts")).ServerConfigSchema,
        { bindAddr: "127.0.0.1", controlPort: 0, apiPort: 0, dataDir: ":memory:", adminToken: "admin-token-0123456789", tls: { enabled: true } },
        "t",
      ),
      "t",
      (l) => lines.push(l),
      again,
    );
    s2.stop();
    expect(lines.some((l) => l.includes(`SHA-256 fingerprint ${material.fingerprint}`))).toBe(true);
  });

  test("end to end with a pinned fingerprint; the wire between client and server shows no plaintext", async () => {
    const proxy = await recordingProxy(server.controlPort);
    const cfg = clientConfig({ controlPort: proxy.port }, "tls", [{ name: "e", localAddr: `127.0.0.1:${echo.port}` }], {
      tls: { enabled: true, serverFingerprint: material.fingerprint.toUpperCase().match(/../g)!.join(":") },
    });
    const { connector, apps } = await onlineClient(cfg);
    cleanup.push(() => connector.stop());
    const data = new TextEncoder().encode(PLAIN.repeat(5000));
    const res = await roundTrip(apps[0]!.remotePort, data);
    expect(res.hash).toBe(sha256(data));
    const wire = proxy.captured();
    expect(wire.length).toBeGreaterThan(data.length * 2);
    expect(wire.includes(PLAIN)).toBe(false);
    expect(wire.includes(Buffer.from(MAGIC))).toBe(false);
    expect(wire.includes("tls")).toBe(false); // not even the group name
  });

  test("the same capture without TLS does show the plaintext (the check above can fail)", async () => {
    const plainServer = await testServer();
    cleanup.push(() => plainServer.stop());
    await api(plainServer, "/api/groups", { method: "POST", body: JSON.stringify({ name: "clear", token: TOKEN, apps: [{ name: "e" }] }) });
    const proxy = await recordingProxy(plainServer.controlPort);
    const { connector, apps } = await onlineClient(clientConfig({ controlPort: proxy.port }, "clear", [{ name: "e", localAddr: `127.0.0.1:${echo.port}` }]));
    cleanup.push(() => connector.stop());
    await roundTrip(apps[0]!.remotePort, new TextEncoder().encode(PLAIN));
    expect(proxy.captured().includes(PLAIN)).toBe(true);
  });

  test("a wrong fingerprint is refused with both fingerprints in the error, before anything is sent", async () => {
    const proxy = await recordingProxy(server.controlPort);
    const wrong = "ab".repeat(32);
    const c = new Connector(clientConfig({ controlPort: proxy.port }, "tls", [{ name: "e", localAddr: `127.0.0.1:${echo.port}` }], { tls: { enabled: true, serverFingerprint: wrong } }));
    cleanup.push(() => c.stop());
    const err = new Promise<string>((r) => c.once("tlsError", r));
    c.start();
    const message = await err;
    c.stop();
    expect(message).toContain(wrong);
    expect(message).toContain(material.fingerprint);
    expect(c.online).toBe(false);
    expect(proxy.captured().includes(Buffer.from(MAGIC))).toBe(false);
  });

  test("a plain client against the TLS server is told the server wants TLS", async () => {
    const c = new Connector(clientConfig(server, "tls", [{ name: "e", localAddr: `127.0.0.1:${echo.port}` }]));
    cleanup.push(() => c.stop());
    const err = new Promise<string>((r) => c.once("tlsError", r));
    c.start();
    expect(await err).toContain("server wants TLS");
    c.stop();
  });

  test("a TLS client against a plain server fails the handshake with a clear message", async () => {
    const plainServer = await testServer();
    cleanup.push(() => plainServer.stop());
    const c = new Connector(clientConfig(plainServer, "x", [{ name: "e", localAddr: `127.0.0.1:${echo.port}` }], { tls: { enabled: true, serverFingerprint: material.fingerprint } }));
    cleanup.push(() => c.stop());
    const err = new Promise<string>((r) => c.once("tlsError", r));
    c.start();
    expect(await err).toContain("TLS handshake with the server failed");
    c.stop();
  });
});

describe("login lockout", () => {
  test("the 11th failed login from 127.0.0.2 within a minute is refused, while a good client from 127.0.0.1 logs in", async () => {
    const server = await testServer();
    cleanup.push(() => server.stop());
    await api(server, "/api/groups", { method: "POST", body: JSON.stringify({ name: "locked", token: TOKEN, apps: [] }) });
    for (let i = 0; i < 10; i++) expect(await rawLogin(server.controlPort, "127.0.0.2", "locked", "wrong-token-wrong-token")).toBe(ErrorCode.AuthFailed);
    expect(await rawLogin(server.controlPort, "127.0.0.2", "locked", "wrong-token-wrong-token")).toBe(ErrorCode.Blocked);
    // Even the right token is refused from the blocked address; other addresses are not affected.
    expect(await rawLogin(server.controlPort, "127.0.0.2", "locked", TOKEN)).toBe(ErrorCode.Blocked);
    expect(await rawLogin(server.controlPort, "127.0.0.1", "locked", TOKEN)).toBe("ok");
    expect(logs.filter((l) => l.includes("address blocked") && l.includes("127.0.0.2")).length).toBe(1);
  });

  test("protocol garbage does not lock an address out", async () => {
    const server = await testServer();
    cleanup.push(() => server.stop());
    await api(server, "/api/groups", { method: "POST", body: JSON.stringify({ name: "g", token: TOKEN, apps: [] }) });
    for (let i = 0; i < 15; i++) {
      await new Promise<void>((r) => {
        const s = net.connect({ host: "127.0.0.1", port: server.controlPort, localAddress: "127.0.0.4" }, () => s.write("garbage garbage"));
        s.on("data", () => {});
        s.on("close", () => r());
        s.on("error", () => {});
      });
    }
    expect(await rawLogin(server.controlPort, "127.0.0.4", "g", TOKEN)).toBe("ok");
  });

  test("wrong API tokens count too: the 11th request from 127.0.0.3 gets 429", async () => {
    const server = await testServer();
    cleanup.push(() => server.stop());
    const get = (token: string) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request({ host: "127.0.0.1", port: server.apiPort, path: "/api/groups", localAddress: "127.0.0.3", headers: { authorization: `Bearer ${token}` } }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        });
        req.on("error", reject);
        req.end();
      });
    for (let i = 0; i < 10; i++) expect(await get("not-the-admin-token")).toBe(401);
    expect(await get("not-the-admin-token")).toBe(429);
    expect(await get(server.adminToken)).toBe(429);
    expect((await api(server, "/api/groups")).status).toBe(200); // from 127.0.0.1
  });
});

describe("access lists and limits", async () => {
  const server = await testServer();
  cleanup.push(() => server.stop());
  const created = await api(server, "/api/groups", {
    method: "POST",
    body: JSON.stringify({
      name: "acl",
      token: TOKEN,
      apps: [
        { name: "only1", allowIPs: ["127.0.0.1/32"] },
        { name: "not3", denyIPs: ["127.0.0.3", "::ffff:127.0.0.3"] },
        { name: "two", maxConnections: 2 },
      ],
    }),
  });
  expect(created.status).toBe(201);
  const { connector, apps } = await onlineClient(
    clientConfig(server, "acl", [
      { name: "only1", localAddr: `127.0.0.1:${echo.port}` },
      { name: "not3", localAddr: `127.0.0.1:${echo.port}` },
      { name: "two", localAddr: `127.0.0.1:${echo.port}` },
    ]),
  );
  cleanup.push(() => connector.stop());
  const port = (name: string) => apps.find((a) => a.name === name)!.remotePort;
  const view = async (name: string) => (await api(server, "/api/groups/acl")).body.apps.find((a: { name: string }) => a.name === name);

  test("allowIPs and denyIPs let users from 127.0.0.1 and 127.0.0.3 in or out as configured, and count refusals", async () => {
    expect(await userFrom(port("only1"), "127.0.0.1")).toBe("ping");
    expect(await userFrom(port("only1"), "127.0.0.3")).toBe("");
    expect(await userFrom(port("not3"), "127.0.0.1")).toBe("ping");
    expect(await userFrom(port("not3"), "127.0.0.3")).toBe("");
    expect((await view("only1")).deniedConnections).toBe(1);
    expect((await view("not3")).deniedConnections).toBe(1);
    expect((await view("only1")).allowIPs).toEqual(["127.0.0.1/32"]);
  });

  test("a PUT that changes an online app's access list applies at once, at the same port", async () => {
    const live = apps.find((a) => a.name === "not3")!;
    expect(await userFrom(live.remotePort, "127.0.0.1")).toBe("ping");
    const res = await api(server, "/api/groups/acl", {
      method: "PUT",
      body: JSON.stringify({
        apps: [
          { name: "only1", allowIPs: ["127.0.0.1/32"], remotePort: port("only1") },
          { name: "not3", denyIPs: ["127.0.0.0/8"], remotePort: live.remotePort },
          { name: "two", maxConnections: 2, remotePort: port("two") },
        ],
      }),
    });
    expect(res.status).toBe(200);
    expect(await userFrom(live.remotePort, "127.0.0.1")).toBe("");
    expect(await userFrom(port("only1"), "127.0.0.1")).toBe("ping");
  });

  test("maxConnections: users over it are closed at once and counted", async () => {
    const held: net.Socket[] = [];
    for (let i = 0; i < 2; i++) {
      const s = net.connect({ host: "127.0.0.1", port: port("two") });
      s.on("error", () => {});
      await new Promise<void>((r) => s.on("data", () => r()).write("x"));
      held.push(s);
    }
    expect(await userFrom(port("two"), "127.0.0.1")).toBe("");
    const v = await view("two");
    expect(v.overLimitConnections).toBe(1);
    expect(v.connections).toBe(2);
    for (const s of held) s.destroy();
    await until(async () => (await view("two")).connections === 0, 3000, "connections closed");
    expect(await userFrom(port("two"), "127.0.0.1")).toBe("ping");
  });

  test("maxApps and a group's allowPorts are enforced with errors that name the field", async () => {
    const tooMany = await api(server, "/api/groups", { method: "POST", body: JSON.stringify({ name: "small", maxApps: 1, apps: [{ name: "a" }, { name: "b" }] }) });
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.issues[0].path).toBe("apps");
    expect(tooMany.body.error).toContain("at most 1 app, not 2");
    const outside = await api(server, "/api/groups", { method: "POST", body: JSON.stringify({ name: "narrow", allowPorts: "21000-21010", apps: [{ name: "a", remotePort: 21050 }] }) });
    expect(outside.status).toBe(400);
    expect(outside.body.issues[0].path).toBe("apps[0].remotePort");
    const inside = await api(server, "/api/groups", { method: "POST", body: JSON.stringify({ name: "narrow", allowPorts: "21000-21010", apps: [{ name: "a" }, { name: "b", type: "udp" }] }) });
    expect(inside.status).toBe(201);
    for (const a of inside.body.apps) expect(a.remotePort).toBeWithin(21000, 21011);
    const grow = await api(server, "/api/groups/narrow", { method: "PUT", body: JSON.stringify({ maxApps: 1, apps: [{ name: "a" }, { name: "c" }] }) });
    expect(grow.status).toBe(400);
    const badSpec = await api(server, "/api/groups", { method: "POST", body: JSON.stringify({ name: "bad", allowPorts: "70000", apps: [] }) });
    expect(badSpec.status).toBe(400);
    expect(badSpec.body.issues[0].path).toBe("allowPorts");
  });
});

describe("limits in server.toml", () => {
  test("maxApps and a group's allowPorts from the config are applied, and a violation names the key", async () => {
    const ok = await testServer({ groups: [{ name: "cfg", token: TOKEN, maxApps: 2, allowPorts: "22000-22005", apps: [{ name: "a" }, { name: "b", allowIPs: ["127.0.0.1"], maxConnections: 3 }] }] });
    cleanup.push(() => ok.stop());
    const g = ok.hub.registry.get("cfg")!;
    expect(g.maxApps).toBe(2);
    for (const a of g.apps) expect(a.remotePort).toBeWithin(22000, 22006);
    expect(g.apps[1]).toMatchObject({ allowIPs: ["127.0.0.1"], maxConnections: 3 });
    await expect(testServer({ groups: [{ name: "cfg", token: TOKEN, maxApps: 1, apps: [{ name: "a" }, { name: "b" }] }] })).rejects.toThrow("groups[0].apps: group \"cfg\" may have at most 1 app, not 2");
    await expect(testServer({ groups: [{ name: "cfg", token: TOKEN, allowPorts: "22000-22005", apps: [{ name: "a", remotePort: 23000 }] }] })).rejects.toThrow("groups[0].apps[0].remotePort");
  });
});

describe("secrets", () => {
  test("no token appears in any log line or API response of this file (except the one creation response)", async () => {
    await until(() => logs.length > 10, 1000, "logs");
    const secrets = [TOKEN, "admin-token-0123456789"];
    for (const s of secrets) expect(logs.filter((l) => l.includes(s))).toEqual([]);
    const leaking = responses.filter((r) => r.includes(TOKEN));
    // Only POST /api/groups 201 bodies may carry the group's token.
    for (const r of leaking) expect(JSON.parse(r)).toHaveProperty("token", TOKEN);
    expect(responses.filter((r) => r.includes("admin-token-0123456789"))).toEqual([]);
  });
});
