/** The HTTP API over real sockets: auth, validation, conflicts, live changes to online sessions, persistence. */
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import { join } from "node:path";
import { createApi, MAX_BODY_BYTES } from "../lib/api/app.ts";
import { setLogSink } from "../lib/log.ts";
import { REGISTRY_FILE } from "../lib/registry/sqlite.ts";
import type { AppStatus } from "../protocol.ts";
import type { RunningServer } from "../server.ts";
import { clientConfig, echoApp, onlineClient, randomData, roundTrip, sha256, testServer, TOKEN } from "./helpers.ts";

// Keep the log quiet, and keep it: the last test checks that no group token was ever logged.
const logLines: string[] = [];
setLogSink((line) => logLines.push(line));
afterAll(() => setLogSink((line) => process.stderr.write(line + "\n")));

/** Ports for apps: outside Linux's ephemeral range, so an app never collides with a client socket. */
const ALLOW = "20000-29999";
const inAllow = (p: number) => p >= 20000 && p <= 29999;
const REG_TOKEN = "registration-token-0123456789";

/** Every group token any request or response carried. */
const groupTokens = new Set<string>([TOKEN]);
let responsesChecked = 0;

interface Reply {
  status: number;
  text: string;
  json: any;
  headers: Headers;
}

/**
 * One API call over a real socket. Checks on every response: never a 500,
 * JSON unless 204, and no group token in the body except the one a POST 201
 * hands back to its creator.
 */
async function call(server: RunningServer, method: string, path: string, opts: { auth?: string | null; body?: unknown; raw?: string } = {}): Promise<Reply> {
  const headers: Record<string, string> = {};
  const auth = opts.auth === undefined ? server.adminToken : opts.auth;
  if (auth !== null) headers.authorization = auth.includes(" ") ? auth : `Bearer ${auth}`;
  const body = opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
  if (body !== undefined) headers["content-type"] = "application/json";
  const token = (opts.body as { token?: unknown } | undefined)?.token;
  if (typeof token === "string" && token.length >= 8) groupTokens.add(token);

  const res = await fetch(`http://127.0.0.1:${server.apiPort}${path}`, { method, headers, body });
  const text = await res.text();
  expect(res.status).not.toBe(500);
  const json = res.status === 204 ? null : JSON.parse(text);
  if (res.status !== 204) expect(res.headers.get("content-type") ?? "").toContain("application/json");
  // A creation, and a token change, are the responses that hand a group token back.
  const created = method === "POST" && (res.status === 201 || (res.status === 200 && path.endsWith("/token")));
  if (created) {
    expect(typeof json.token).toBe("string");
    groupTokens.add(json.token);
  }
  for (const t of groupTokens) {
    if (created && t === json.token) continue;
    if (text.includes(t)) throw new Error(`${method} ${path} -> ${res.status} leaks a group token: ${text}`);
  }
  responsesChecked++;
  return { status: res.status, text, json, headers: res.headers };
}

/** Rejects when `p` takes longer than `ms`: a deadline, not a wait. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
    }),
  ]);
}

/** Connects to a port: "connected", or the error code (ECONNREFUSED when nothing listens). */
function probe(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1" });
    s.on("connect", () => {
      s.destroy();
      resolve("connected");
    });
    s.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

const portOf = (reply: Reply, app: string): number => reply.json.apps.find((a: { name: string }) => a.name === app)?.remotePort;

const server = await testServer({ allowPorts: ALLOW });
afterAll(() => server.stop());

describe("health and auth", () => {
  test("GET /healthz is 200 {status: ok} without auth", async () => {
    for (const auth of [null, "wrong-token-0123456789"]) {
      const r = await call(server, "GET", "/healthz", { auth });
      expect(r.status).toBe(200);
      expect(r.json).toEqual({ status: "ok" });
    }
  });

  test("wrong tokens over HTTP block the caller's address, and only that address", async () => {
    const server = await testServer({ allowPorts: ALLOW, loginFailureLimit: 3 });
    try {
      for (let i = 0; i < 3; i++) expect((await call(server, "GET", "/api/groups", { auth: `Bearer wrong-token-${i}` })).status).toBe(401);
      // The address is read from Bun's server: the guard holds 127.0.0.1, not an empty string.
      expect(server.hub.guard.blocked("127.0.0.1")).toBe(true);
      expect(server.hub.guard.blocked("")).toBe(false);
      const r = await call(server, "GET", "/api/groups", { auth: `Bearer ${server.adminToken}` });
      expect(r.status).toBe(429);
      expect(r.json.error).toContain("too many failed logins");
    } finally {
      server.stop();
    }
  });

  test("every group route needs the admin token: none, wrong or malformed is 401", async () => {
    // A server of its own: so many wrong tokens would otherwise trip the lockout for every later test.
    const server = await testServer({ allowPorts: ALLOW, loginFailureLimit: 1000 });
    try {
      await call(server, "POST", "/api/groups", { body: { name: "guarded", apps: [] } });
      const routes: [string, string, unknown?][] = [
        ["GET", "/api/groups"],
        ["GET", "/api/groups/guarded"],
        ["POST", "/api/groups", { name: "intruder", apps: [] }],
        ["PUT", "/api/groups/guarded", { apps: [{ name: "x" }] }],
        ["DELETE", "/api/groups/guarded"],
      ];
      const auths = [null, "wrong-token-0123456789", `Basic ${server.adminToken}`, `Bearer ${server.adminToken}x`, `Bearer ${server.adminToken.slice(0, -1)}`, "Bearer"];
      for (const [method, path, body] of routes) {
        for (const auth of auths) {
          const r = await call(server, method, path, { auth, body });
          expect(`${method} ${path} ${auth} -> ${r.status}`).toBe(`${method} ${path} ${auth} -> 401`);
          expect(r.headers.get("www-authenticate")).toBe("Bearer");
          expect(typeof r.json.error).toBe("string");
        }
      }
      // Nothing happened.
      expect((await call(server, "GET", "/api/groups/intruder")).status).toBe(404);
      const g = await call(server, "GET", "/api/groups/guarded");
      expect(g.status).toBe(200);
      expect(g.json.apps).toEqual([]);
    } finally {
      server.stop();
    }
  });

  test("a registration token may create groups, and nothing else", async () => {
    const s = await testServer({ registrationToken: REG_TOKEN, allowPorts: ALLOW });
    try {
      const created = await call(s, "POST", "/api/groups", { auth: REG_TOKEN, body: { name: "selfreg", apps: [{ name: "ssh" }] } });
      expect(created.status).toBe(201);
      expect(created.json.token.length).toBeGreaterThanOrEqual(16);
      expect(inAllow(portOf(created, "ssh"))).toBe(true);
      for (const [method, path, body] of [
        ["GET", "/api/groups", undefined],
        ["GET", "/api/groups/selfreg", undefined],
        ["PUT", "/api/groups/selfreg", { apps: [] }],
        ["DELETE", "/api/groups/selfreg", undefined],
      ] as const) {
        // Known, but not allowed to: 403 (issue 18; it was 401, which says "who are you?").
        expect((await call(s, method, path, { auth: REG_TOKEN, body })).status).toBe(403);
      }
      const after = await call(s, "GET", "/api/groups/selfreg");
      expect(after.status).toBe(200);
      expect(after.json.apps.map((a: { name: string }) => a.name)).toEqual(["ssh"]);
      // The registration token is not an admin token, and the admin token still works.
      expect((await call(s, "POST", "/api/groups", { auth: "registration-token-0123456780", body: { name: "x", apps: [] } })).status).toBe(401);
      expect((await call(s, "DELETE", "/api/groups/selfreg")).status).toBe(204);
    } finally {
      s.stop();
    }
  });
});

describe("create", () => {
  test("POST 201: a token is generated when absent, ports are assigned within allowPorts", async () => {
    const a = await call(server, "POST", "/api/groups", { body: { name: "alpha", apps: [{ name: "ssh" }, { name: "web", type: "tcp", remotePort: 0 }, { name: "db", remotePort: 21234 }] } });
    expect(a.status).toBe(201);
    expect(a.json).toMatchObject({ name: "alpha", online: false, clientAddr: null, onlineSince: null });
    expect(a.json.token).toMatch(/^[A-Za-z0-9_-]{16,256}$/);
    expect(a.json.apps.map((x: { name: string; type: string }) => `${x.name}/${x.type}`)).toEqual(["ssh/tcp", "web/tcp", "db/tcp"]);
    const ports = a.json.apps.map((x: { remotePort: number }) => x.remotePort);
    expect(ports[2]).toBe(21234);
    for (const p of ports) expect(inAllow(p)).toBe(true);
    expect(new Set(ports).size).toBe(3);

    const b = await call(server, "POST", "/api/groups", { body: { name: "alpha2", apps: [] } });
    expect(b.status).toBe(201);
    expect(b.json.token).not.toBe(a.json.token);

    const given = await call(server, "POST", "/api/groups", { body: { name: "alpha3", token: "my-own-token-0123456789", apps: [] } });
    expect(given.status).toBe(201);
    expect(given.json.token).toBe("my-own-token-0123456789");

    const got = await call(server, "GET", "/api/groups/alpha");
    expect(got.json.token).toBeUndefined();
    expect(got.json.apps.map((x: { remotePort: number }) => x.remotePort)).toEqual(ports);
  });

  test("malformed JSON is 400", async () => {
    for (const raw of ["{", "", "not json", '{"name": "x",}', "{'name': 'x'}"]) {
      const r = await call(server, "POST", "/api/groups", { raw });
      expect(r.status).toBe(400);
      expect(r.json.error).toContain("JSON");
    }
    await call(server, "POST", "/api/groups", { body: { name: "jsonput", apps: [] } });
    const put = await call(server, "PUT", "/api/groups/jsonput", { raw: "[" });
    expect(put.status).toBe(400);
    expect(put.json.error).toContain("JSON");
  });

  test("a bad field is 400 with issues[].path naming it", async () => {
    const cases: [unknown, string][] = [
      [{ name: "bad name!", apps: [] }, "name"],
      [{ name: "", apps: [] }, "name"],
      [{ name: 42, apps: [] }, "name"],
      [{ name: "ok1", apps: [{ name: "a", remotePort: 70000 }] }, "apps[0].remotePort"],
      [{ name: "ok1", apps: [{ name: "a" }, { name: "b", remotePort: 1.5 }] }, "apps[1].remotePort"],
      [{ name: "ok1", apps: [{ name: "a" }, { name: "b", type: "sctp" }] }, "apps[1].type"],
      [{ name: "ok1", apps: [{ name: "a", localAddr: "127.0.0.1:22" }] }, "apps[0].localAddr"],
      [{ name: "ok1", apps: [{ remotePort: 0 }] }, "apps[0].name"],
      [{ name: "ok1" }, "apps"],
      [{ name: "ok1", apps: {} }, "apps"],
      [{ name: "ok1", apps: [{ name: "a" }, { name: "a" }] }, "apps"],
      [{ name: "ok1", apps: [], token: "short" }, "token"],
      [{ name: "ok1", apps: [], admin: true }, "admin"],
      [[], "name"], // an array is an object to valibot: its keys are missing
      [null, "(body)"],
    ];
    for (const [body, path] of cases) {
      const r = await call(server, "POST", "/api/groups", { body });
      expect(`${JSON.stringify(body)} -> ${r.status}`).toBe(`${JSON.stringify(body)} -> 400`);
      expect(r.json.issues.map((i: { path: string }) => i.path)).toContain(path);
      for (const i of r.json.issues) expect(typeof i.message).toBe("string");
    }
    expect((await call(server, "GET", "/api/groups/ok1")).status).toBe(404);

    await call(server, "POST", "/api/groups", { body: { name: "badput", apps: [{ name: "a" }] } });
    const put = await call(server, "PUT", "/api/groups/badput", { body: { apps: [{ name: "a", remotePort: -1 }] } });
    expect(put.status).toBe(400);
    expect(put.json.issues[0].path).toBe("apps[0].remotePort");
    const extra = await call(server, "PUT", "/api/groups/badput", { body: { apps: [], name: "renamed" } });
    expect(extra.status).toBe(400);
    expect(extra.json.issues[0]).toEqual({ path: "name", message: "unknown key" });
  });

  test("a body over MAX_BODY_BYTES (counted in bytes, not characters) is 413", async () => {
    // Just over the limit in bytes, but well under it in characters.
    const wide = JSON.stringify({ name: "huge", apps: [], pad: "ü".repeat(MAX_BODY_BYTES / 2) });
    const narrow = JSON.stringify({ name: "huge", apps: [], pad: "a".repeat(MAX_BODY_BYTES / 2) });
    expect(wide.length).toBeLessThan(MAX_BODY_BYTES);
    const headers = { authorization: `Bearer ${server.adminToken}`, "content-type": "application/json" };
    const over = await fetch(`http://127.0.0.1:${server.apiPort}/api/groups`, { method: "POST", headers, body: wide });
    expect(over.status).toBe(413);
    await over.arrayBuffer();
    // Under the limit: parsed, and refused for the unknown key instead.
    expect((await call(server, "POST", "/api/groups", { raw: narrow })).json.issues[0].path).toBe("pad");
    // The API checks the limit itself too, for callers that do not go through Bun.serve.
    const app = createApi(server.hub, { adminToken: server.adminToken });
    const inProcess = await app.request("/api/groups", { method: "POST", headers, body: wide });
    expect(inProcess.status).toBe(413);
    expect(((await inProcess.json()) as { error: string }).error).toContain(String(MAX_BODY_BYTES));
    expect((await call(server, "GET", "/api/groups/huge")).status).toBe(404);
  });

  test("a port outside allowPorts is 400 naming apps[i].remotePort", async () => {
    const s = await testServer({ allowPorts: "20000-20100" });
    try {
      const out = await call(s, "POST", "/api/groups", { body: { name: "narrow", apps: [{ name: "a" }, { name: "b", remotePort: 30000 }] } });
      expect(out.status).toBe(400);
      expect(out.json.issues).toEqual([{ path: "apps[1].remotePort", message: expect.stringContaining("30000") }]);
      expect((await call(s, "GET", "/api/groups/narrow")).status).toBe(404);

      const ok = await call(s, "POST", "/api/groups", { body: { name: "narrow", apps: [{ name: "a" }, { name: "b", remotePort: 20100 }] } });
      expect(ok.status).toBe(201);
      expect(portOf(ok, "a")).toBeGreaterThanOrEqual(20000);
      expect(portOf(ok, "a")).toBeLessThanOrEqual(20100);
      const put = await call(s, "PUT", "/api/groups/narrow", { body: { apps: [{ name: "a", remotePort: 19999 }] } });
      expect(put.status).toBe(400);
      expect(put.json.issues[0].path).toBe("apps[0].remotePort");
    } finally {
      s.stop();
    }
  });

  test("a duplicate name is 409; a port taken by another group is 409", async () => {
    const first = await call(server, "POST", "/api/groups", { body: { name: "owner", apps: [{ name: "x", remotePort: 22001 }, { name: "y" }] } });
    expect(first.status).toBe(201);
    const dup = await call(server, "POST", "/api/groups", { body: { name: "owner", token: "other-token-0123456789", apps: [] } });
    expect(dup.status).toBe(409);
    expect(dup.json.issues[0].path).toBe("name");

    const taken = await call(server, "POST", "/api/groups", { body: { name: "thief", apps: [{ name: "z" }, { name: "w", remotePort: 22001 }] } });
    expect(taken.status).toBe(409);
    expect(taken.json.issues[0].path).toBe("apps[1].remotePort");
    expect(taken.json.error).toContain("owner/x");
    const takenAuto = await call(server, "POST", "/api/groups", { body: { name: "thief", apps: [{ name: "w", remotePort: portOf(first, "y") }] } });
    expect(takenAuto.status).toBe(409);
    const twice = await call(server, "POST", "/api/groups", { body: { name: "thief", apps: [{ name: "a", remotePort: 22002 }, { name: "b", remotePort: 22002 }] } });
    expect(twice.status).toBe(409);
    expect(twice.json.issues[0].path).toBe("apps[1].remotePort");
    expect((await call(server, "GET", "/api/groups/thief")).status).toBe(404);

    await call(server, "POST", "/api/groups", { body: { name: "neighbour", apps: [{ name: "n", remotePort: 22003 }] } });
    const put = await call(server, "PUT", "/api/groups/neighbour", { body: { apps: [{ name: "n", remotePort: 22001 }] } });
    expect(put.status).toBe(409);
    expect(put.json.issues[0].path).toBe("apps[0].remotePort");
    expect(portOf(await call(server, "GET", "/api/groups/neighbour"), "n")).toBe(22003);
  });
});

describe("read, update, delete", () => {
  test("GET /api/groups and /api/groups/:name have the documented shapes; unknown is 404", async () => {
    const s = await testServer({ allowPorts: ALLOW });
    try {
      expect((await call(s, "GET", "/api/groups")).json).toEqual({ groups: [] });
      await call(s, "POST", "/api/groups", { body: { name: "zeta", apps: [{ name: "a" }] } });
      await call(s, "POST", "/api/groups", { body: { name: "eta", apps: [] } });
      const list = await call(s, "GET", "/api/groups");
      expect(list.status).toBe(200);
      expect(Object.keys(list.json)).toEqual(["groups"]);
      expect(list.json.groups.map((g: { name: string }) => g.name)).toEqual(["eta", "zeta"]);
      const one = await call(s, "GET", "/api/groups/zeta");
      expect(one.status).toBe(200);
      expect(one.json).toEqual(list.json.groups[1]);
      expect(Object.keys(one.json)).toEqual(expect.arrayContaining(["apps", "clientAddr", "name", "online", "onlineSince"]));
      expect(Object.keys(one.json)).not.toContain("token");
      expect(one.json).toMatchObject({ name: "zeta", online: false, clientAddr: null, onlineSince: null });
      expect(one.json.apps).toHaveLength(1);
      expect(one.json.apps[0]).toMatchObject({ name: "a", type: "tcp", remotePort: expect.any(Number), connections: 0, bytesIn: 0, bytesOut: 0 });
      for (const [method, body] of [
        ["GET", undefined],
        ["PUT", { apps: [] }],
        ["DELETE", undefined],
      ] as const) {
        const r = await call(s, method, "/api/groups/nope", { body });
        expect(r.status).toBe(404);
        expect(r.json.error).toContain("nope");
      }
    } finally {
      s.stop();
    }
  });

  test("PUT replaces the apps; an app with remotePort 0 keeps its port while it stays listed", async () => {
    const c = await call(server, "POST", "/api/groups", { body: { name: "beta", apps: [{ name: "a" }, { name: "b" }, { name: "c" }] } });
    const put = await call(server, "PUT", "/api/groups/beta", { body: { apps: [{ name: "b" }, { name: "d" }, { name: "c", remotePort: 23456 }] } });
    expect(put.status).toBe(200);
    expect(put.json.apps.map((a: { name: string }) => a.name)).toEqual(["b", "d", "c"]);
    expect(portOf(put, "b")).toBe(portOf(c, "b"));
    expect(portOf(put, "c")).toBe(23456);
    expect(inAllow(portOf(put, "d"))).toBe(true);
    expect(new Set(put.json.apps.map((a: { remotePort: number }) => a.remotePort)).size).toBe(3);
    // Put back to auto: c gets a port again; b still keeps its own.
    const again = await call(server, "PUT", "/api/groups/beta", { body: { apps: [{ name: "b", remotePort: 0 }, { name: "c" }] } });
    expect(portOf(again, "b")).toBe(portOf(c, "b"));
    expect(inAllow(portOf(again, "c"))).toBe(true);
    expect((await call(server, "GET", "/api/groups/beta")).json).toEqual(again.json);
    const empty = await call(server, "PUT", "/api/groups/beta", { body: { apps: [] } });
    expect(empty.json.apps).toEqual([]);
  });

  test("DELETE is 204 with no body, then 404", async () => {
    await call(server, "POST", "/api/groups", { body: { name: "doomed", apps: [{ name: "a" }] } });
    const del = await call(server, "DELETE", "/api/groups/doomed");
    expect(del.status).toBe(204);
    expect(del.text).toBe("");
    expect((await call(server, "GET", "/api/groups/doomed")).status).toBe(404);
    expect((await call(server, "DELETE", "/api/groups/doomed")).status).toBe(404);
    const list = await call(server, "GET", "/api/groups");
    expect(list.json.groups.map((g: { name: string }) => g.name)).not.toContain("doomed");
    // The name is free again.
    expect((await call(server, "POST", "/api/groups", { body: { name: "doomed", apps: [] } })).status).toBe(201);
  });

  test("an unknown route is a JSON 404, never a 500", async () => {
    // (GET / is the dashboard's page: tests/dashboard.test.ts.)
    const routes: [string, string][] = [
      ["POST", "/"],
      ["GET", "/api"],
      ["GET", "/api/groups/"],
      ["GET", "/api/groups/a/b"],
      ["POST", "/healthz"],
      ["GET", "/api/groups/%ZZ"],
      ["GET", "/api/groups/%E0%A4%A"],
      ["GET", "/../../etc/passwd"],
    ];
    for (const [method, path] of routes) {
      for (const auth of [null, server.adminToken]) {
        const r = await call(server, method, path, { auth });
        expect(`${method} ${path} -> ${r.status}`).toBe(`${method} ${path} -> ${auth === null && path.startsWith("/api/groups/%") ? 401 : 404}`);
        expect(typeof r.json.error).toBe("string");
      }
    }
    // A known path with a method it does not take is 405, with the methods it does (issue 18).
    const wrongMethods: [string, string, string][] = [
      ["PATCH", "/api/groups/alpha", "GET, PUT, DELETE"],
      ["DELETE", "/api/groups", "GET, POST"],
      ["PUT", "/api/groups", "GET, POST"],
      ["OPTIONS", "/api/groups", "GET, POST"],
      ["GET", "/api/groups/alpha/token", "POST"],
    ];
    for (const [method, path, allow] of wrongMethods) {
      const res = await fetch(`http://127.0.0.1:${server.apiPort}${path}`, { method, headers: { authorization: `Bearer ${server.adminToken}` } });
      expect(`${method} ${path} -> ${res.status} ${res.headers.get("allow")}`).toBe(`${method} ${path} -> 405 ${allow}`);
      expect(((await res.json()) as { error: string }).error).toBe(`${method} is not allowed here; use ${allow}`);
    }
  });
});

describe("changes reach online sessions at once", () => {
  test("PUT adding an app the client declared opens it; removing one closes its listener", async () => {
    const echo = await echoApp();
    const created = await call(server, "POST", "/api/groups", { body: { name: "live", token: TOKEN, apps: [{ name: "a" }] } });
    const aPort = portOf(created, "a");
    const local = `127.0.0.1:${echo.port}`;
    const { connector, apps } = await within(
      onlineClient(clientConfig(server, "live", [
        { name: "a", localAddr: local },
        { name: "b", localAddr: local },
      ])),
      10_000,
      "login",
    );
    try {
      expect(apps.find((x) => x.name === "a")).toMatchObject({ remotePort: aPort, error: "" });
      expect(apps.find((x) => x.name === "b")!.error).toContain("unknown app");
      const online = await call(server, "GET", "/api/groups/live");
      expect(online.json).toMatchObject({ online: true, clientAddr: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
      expect(Date.parse(online.json.onlineSince)).toBeGreaterThan(Date.now() - 60_000);
      expect(online.json.apps[0]).toMatchObject({ name: "a", online: true });

      const data = randomData(512 * 1024, 7);
      expect((await within(roundTrip(aPort, data), 10_000, "round trip through a")).hash).toBe(sha256(data));

      // Add b: the server opens it and tells the client.
      const told = new Promise<readonly AppStatus[]>((r) => connector.once("apps", r));
      const put = await call(server, "PUT", "/api/groups/live", { body: { apps: [{ name: "a" }, { name: "b" }] } });
      expect(put.status).toBe(200);
      expect(portOf(put, "a")).toBe(aPort);
      const bPort = portOf(put, "b");
      expect(put.json.apps.find((x: { name: string }) => x.name === "b")).toMatchObject({ online: true, error: null });
      expect((await within(told, 5_000, "apps update")).find((x) => x.name === "b")).toEqual({ name: "b", type: "tcp", remotePort: bPort, error: "" });
      const viaB = await within(roundTrip(bPort, data), 10_000, "round trip through b");
      expect(viaB).toEqual({ received: data.length, hash: sha256(data) });
      const stats = (await call(server, "GET", "/api/groups/live")).json.apps.find((x: { name: string }) => x.name === "b");
      expect([stats.bytesIn, stats.bytesOut]).toEqual([data.length, data.length]);

      // Remove a: its listener closes at once; b goes on.
      const told2 = new Promise<readonly AppStatus[]>((r) => connector.once("apps", r));
      const put2 = await call(server, "PUT", "/api/groups/live", { body: { apps: [{ name: "b" }] } });
      expect(put2.json.apps.map((x: { name: string }) => x.name)).toEqual(["b"]);
      expect(await probe(aPort)).toBe("ECONNREFUSED");
      expect((await within(told2, 5_000, "apps update")).find((x) => x.name === "a")!.error).toContain("unknown app");
      expect((await within(roundTrip(bPort, data), 10_000, "round trip through b")).hash).toBe(sha256(data));
      expect(server.hub.session("live")).toBeDefined();
    } finally {
      connector.stop();
      echo.close();
    }
  });

  test("DELETE kicks the online session and cuts a stream in the middle of a transfer", async () => {
    const echo = await echoApp();
    const created = await call(server, "POST", "/api/groups", { body: { name: "kicked", token: TOKEN, apps: [{ name: "a" }] } });
    const port = portOf(created, "a");
    const { connector } = await within(onlineClient(clientConfig(server, "kicked", [{ name: "a", localAddr: `127.0.0.1:${echo.port}` }])), 10_000, "login");
    try {
      // A user that keeps sending as long as echoes come back: a transfer that never finishes by itself.
      const chunk = randomData(64 * 1024, 3);
      let received = 0;
      let resolveFlowing: () => void;
      const flowing = new Promise<void>((r) => (resolveFlowing = r));
      const user = net.connect({ port, host: "127.0.0.1" }, () => user.write(chunk));
      user.on("data", (d: Buffer) => {
        received += d.length;
        if (received >= 4 * chunk.length) resolveFlowing();
        if (!user.destroyed) user.write(chunk);
      });
      user.on("error", () => {});
      const closed = new Promise<void>((r) => user.on("close", () => r()));
      await within(flowing, 10_000, "echo through the tunnel");
      expect((await call(server, "GET", "/api/groups/kicked")).json.apps[0].connections).toBe(1);

      const offline = new Promise<string>((r) => connector.once("offline", r));
      const del = await call(server, "DELETE", "/api/groups/kicked");
      expect(del.status).toBe(204);
      await within(closed, 5_000, "the user's stream being cut");
      await within(offline, 5_000, "the client going offline");
      expect(server.hub.session("kicked")).toBeUndefined();
      expect(await probe(port)).toBe("ECONNREFUSED");
      expect((await call(server, "GET", "/api/groups/kicked")).status).toBe(404);
    } finally {
      connector.stop();
      echo.close();
    }
  });

  test("POST /api/groups/:name/token: a new token (generated, or given) cuts the session and its streams; the old one fails, the new one logs in", async () => {
    const echo = await echoApp();
    const created = await call(server, "POST", "/api/groups", { body: { name: "rotated", token: TOKEN, apps: [{ name: "a" }] } });
    const port = portOf(created, "a");
    const { connector } = await within(onlineClient(clientConfig(server, "rotated", [{ name: "a", localAddr: `127.0.0.1:${echo.port}` }])), 10_000, "login");
    try {
      const user = net.connect({ port, host: "127.0.0.1" });
      user.on("error", () => {});
      const echoed = new Promise<void>((r) => user.once("data", () => r()));
      user.write("hello");
      await within(echoed, 5_000, "an echo");
      const closed = new Promise<void>((r) => user.on("close", () => r()));
      // The client stops for good: retrying with the old token would only lock its address out.
      const fatal = new Promise<string>((r) => connector.once("fatal", r));

      const rotated = await call(server, "POST", "/api/groups/rotated/token", { raw: "" }); // no body: one is generated
      expect(rotated.status).toBe(200);
      expect(Object.keys(rotated.json).sort()).toEqual(["name", "token"]);
      const fresh = rotated.json.token as string;
      expect(fresh).toMatch(/^[A-Za-z0-9_-]{32}$/);
      await within(closed, 5_000, "the user's stream being cut");
      expect(await within(fatal, 5_000, "the client stopping")).toBe("the group's token was changed by the administrator");
      expect(logLines.some((l) => l.includes("the group's token was changed on the server; put the new token in client.toml"))).toBe(true);
      expect(connector.online).toBe(false);
      // The app and its counters stay; only the token changed.
      const view = await call(server, "GET", "/api/groups/rotated");
      expect(view.json.apps[0]).toMatchObject({ name: "a", remotePort: port, bytesIn: 5, bytesOut: 5 });
      expect(server.hub.registry.get("rotated")!.token).toBe(fresh);

      const again = await within(onlineClient({ ...clientConfig(server, "rotated", [{ name: "a", localAddr: `127.0.0.1:${echo.port}` }]), token: fresh }), 10_000, "login with the new token");
      const data = randomData(100_000, 5);
      expect((await roundTrip(port, data)).hash).toBe(sha256(data));
      again.connector.stop();

      // A given token; one too short is a 400 that names the key.
      const given = "a-new-group-token-given-by-the-admin";
      expect((await call(server, "POST", "/api/groups/rotated/token", { body: { token: given } })).json).toEqual({ name: "rotated", token: given });
      const short = await call(server, "POST", "/api/groups/rotated/token", { body: { token: "short" } });
      expect(short.status).toBe(400);
      expect(short.json.issues[0].path).toBe("token");
      expect((await call(server, "POST", "/api/groups/rotated/token", { body: { token: given, extra: 1 } })).status).toBe(400);
      expect((await call(server, "POST", "/api/groups/nobody/token", { raw: "" })).status).toBe(404);
      expect((await call(server, "POST", "/api/groups/rotated/token", { raw: "", auth: null })).status).toBe(401);
    } finally {
      connector.stop();
      echo.close();
    }
  });

  test("a group deleted while a PUT or a token change is still sending its body is 404, and the registry stays whole", async () => {
    for (const [method, path, payload] of [
      ["POST", "/api/groups/racing/token", JSON.stringify({ token: "a-token-sent-slowly-0123456789" })],
      ["PUT", "/api/groups/racing", JSON.stringify({ apps: [{ name: "b" }], maxApps: 3 })],
    ] as const) {
      expect((await call(server, "POST", "/api/groups", { body: { name: "racing", token: TOKEN, apps: [{ name: "a" }] } })).status).toBe(201);
      groupTokens.add("a-token-sent-slowly-0123456789");
      // Headers and half the body now; the rest once the group is gone.
      const sock = net.connect({ port: server.apiPort, host: "127.0.0.1" });
      let answer = "";
      sock.on("data", (d: Buffer) => (answer += d.toString()));
      const done = new Promise<void>((r) => sock.on("close", () => r()));
      await new Promise<void>((r) => sock.once("connect", () => r()));
      const half = Math.floor(payload.length / 2);
      sock.write(`${method} ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${server.adminToken}\r\nContent-Type: application/json\r\nContent-Length: ${payload.length}\r\nConnection: close\r\n\r\n${payload.slice(0, half)}`);
      expect((await call(server, "DELETE", "/api/groups/racing")).status).toBe(204);
      sock.write(payload.slice(half));
      await within(done, 5_000, "the answer");
      expect(answer).toStartWith("HTTP/1.1 404");
      expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4))).toEqual({ error: 'group "racing" does not exist' });
      expect(answer).not.toContain("a-token-sent-slowly");
      expect(server.hub.registry.get("racing")).toBeUndefined();
      expect((await call(server, "GET", "/api/groups")).status).toBe(200);
    }
  });

  test("a group from server.toml keeps its token: changing it through the API is 409", async () => {
    const s = await testServer({ allowPorts: ALLOW, groups: [{ name: "fromconfig", token: TOKEN, apps: [{ name: "a" }] }] });
    try {
      const res = await call(s, "POST", "/api/groups/fromconfig/token", { raw: "" });
      expect(res.status).toBe(409);
      expect(res.json.error).toBe('group "fromconfig" comes from server.toml: change its token there and restart the server');
      expect(s.hub.registry.get("fromconfig")!.token).toBe(TOKEN);
    } finally {
      s.stop();
    }
  });
});

describe("persistence", () => {
  test("groups, tokens and ports survive a restart; a missing dataDir is created 0700, the database files 0600", async () => {
    const CHANGED = "a-changed-token-kept-on-disk-0123";
    const parent = fs.mkdtempSync(os.tmpdir() + "/warren-");
    const dataDir = join(parent, "data", "registry");
    const echo = await echoApp();
    // The usual umask: a stricter one in the runner would hide a file that was not made private.
    const umask = process.umask(0o022);
    try {
      const first = await testServer({ dataDir, allowPorts: ALLOW });
      let created: Reply;
      try {
        created = await call(first, "POST", "/api/groups", { body: { name: "kept", token: TOKEN, apps: [{ name: "a" }, { name: "b", remotePort: 24680 }] } });
        expect(created.status).toBe(201);
        await call(first, "POST", "/api/groups", { body: { name: "also", apps: [] } });
        // A changed token is stored too: "also" logs in with it after the restart, not with its first one.
        expect((await call(first, "POST", "/api/groups/also/token", { body: { token: CHANGED } })).status).toBe(200);
      } finally {
        first.stop();
      }
      expect(fs.statSync(join(dataDir, REGISTRY_FILE)).mode & 0o777).toBe(0o600);
      for (const d of [join(parent, "data"), dataDir]) expect((fs.statSync(d).mode & 0o777).toString(8)).toBe("700");
      for (const f of fs.readdirSync(dataDir)) expect(`${f} ${(fs.statSync(join(dataDir, f)).mode & 0o777).toString(8)}`).toBe(`${f} 600`);
      // A database that others may read (restored from a backup, say) is made 0600 at the next start.
      fs.chmodSync(join(dataDir, REGISTRY_FILE), 0o644);

      const second = await testServer({ dataDir, allowPorts: ALLOW });
      expect(fs.statSync(join(dataDir, REGISTRY_FILE)).mode & 0o777).toBe(0o600);
      try {
        const list = await call(second, "GET", "/api/groups");
        expect(list.json.groups.map((g: { name: string }) => g.name)).toEqual(["also", "kept"]);
        const kept = await call(second, "GET", "/api/groups/kept");
        expect(kept.json.apps.map((a: { name: string; remotePort: number }) => [a.name, a.remotePort])).toEqual([
          ["a", portOf(created, "a")],
          ["b", 24680],
        ]);
        expect(second.hub.registry.get("also")!.token).toBe(CHANGED);
        // The stored token still logs in, and the app is served on its old port.
        const { connector, apps } = await within(onlineClient(clientConfig(second, "kept", [{ name: "a", localAddr: `127.0.0.1:${echo.port}` }])), 10_000, "login after restart");
        try {
          expect(apps).toEqual([{ name: "a", type: "tcp", remotePort: portOf(created, "a"), error: "" }]);
          const data = randomData(100_000, 11);
          expect((await within(roundTrip(portOf(created, "a"), data), 10_000, "round trip")).hash).toBe(sha256(data));
        } finally {
          connector.stop();
        }
      } finally {
        second.stop();
      }
    } finally {
      process.umask(umask);
      echo.close();
      fs.rmSync(parent, { recursive: true, force: true });
    }
  });
});

test("no response carried a group token except its own POST 201, and no log line carried any", () => {
  expect(responsesChecked).toBeGreaterThan(100);
  expect(groupTokens.size).toBeGreaterThan(10);
  for (const line of logLines) for (const t of groupTokens) if (line.includes(t)) throw new Error(`log line leaks a group token: ${line}`);
});
