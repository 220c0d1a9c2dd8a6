/** Six findings of an outside review (issue 14, part 2), each pinned by a test that failed before its fix. */
import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { MAX_BODY_BYTES } from "../lib/api/app.ts";
import { ConfigError, validate } from "../lib/config/load.ts";
import { REGISTRATION_MAX_APPS, REGISTRATION_MAX_GROUPS } from "../lib/config/defaults.ts";
import { ServerConfigSchema } from "../lib/config/schema.ts";
import { Connector } from "../lib/client/connector.ts";
import { setLogSink } from "../lib/log.ts";
import { PortSet } from "../lib/ports.ts";
import { SqliteStore } from "../lib/registry/sqlite.ts";
import { loadServerTls } from "../lib/tls.ts";
import { PROTOCOL_VERSION } from "../protocol.ts";
import { clientConfig, echoApp, testServer, TOKEN, until } from "./helpers.ts";
import { tempDir } from "./procs.ts";

const REG = "registration-token-0123456789";
const logs: string[] = [];
setLogSink((l) => logs.push(l));
const cleanup: (() => void)[] = [];
afterAll(() => {
  for (const f of cleanup.reverse()) f();
  setLogSink(() => {});
});

async function post(server: { apiPort: number }, auth: string, body: unknown, path = "/api/groups", method = "POST") {
  const res = await fetch(`http://127.0.0.1:${server.apiPort}${path}`, { method, headers: { authorization: `Bearer ${auth}` }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json().catch(() => null)) as { error?: string; issues?: { path: string; message: string }[] } & Record<string, unknown> };
}

describe("1. groups made with the registration token have server-wide limits", () => {
  test("defaults: at most REGISTRATION_MAX_APPS apps; 403 naming the key; the admin token is not limited", async () => {
    const s = await testServer({ registrationToken: REG });
    cleanup.push(() => s.stop());
    const apps = (n: number) => Array.from({ length: n }, (_, i) => ({ name: `a${i}` }));
    const many = await post(s, REG, { name: "many", apps: apps(REGISTRATION_MAX_APPS + 1) });
    expect(many.status).toBe(403);
    expect(many.json.error).toContain("registrationMaxApps");
    expect(many.json.issues![0]!.path).toBe("apps");
    expect((await post(s, REG, { name: "ten", apps: apps(REGISTRATION_MAX_APPS) })).status).toBe(201);
    // The group keeps the limit: a later PUT (by the admin) with more apps is refused by it.
    expect((await post(s, s.adminToken, { apps: apps(REGISTRATION_MAX_APPS + 1) }, "/api/groups/ten", "PUT")).status).toBe(400);
    // The 1,000 ports of the review's report: only the admin may ask for that.
    expect((await post(s, s.adminToken, { name: "big", apps: apps(1000) })).status).toBe(201);
    // Nor may the registration token lift its own limits.
    const lift = await post(s, REG, { name: "lift", maxApps: 1000, apps: [] });
    expect(lift.status).toBe(403);
    expect(lift.json.error).toContain("only the admin token may set maxApps");
    expect(REGISTRATION_MAX_GROUPS).toBe(100);
  });

  test("registrationMaxGroups and registrationAllowPorts: 403 naming the key", async () => {
    const s = await testServer({ registrationToken: REG, registrationMaxGroups: 2, registrationAllowPorts: "31000-31009" });
    cleanup.push(() => s.stop());
    const outside = await post(s, REG, { name: "r0", apps: [{ name: "x", remotePort: 31010 }] });
    expect(outside.status).toBe(403);
    expect(outside.json.issues).toEqual([{ path: "apps[0].remotePort", message: "port 31010 is outside registrationAllowPorts (31000-31009)" }]);
    const r1 = await post(s, REG, { name: "r1", apps: [{ name: "x" }, { name: "y", remotePort: 31005 }] });
    expect(r1.status).toBe(201);
    const ports = (r1.json.apps as { remotePort: number }[]).map((a) => a.remotePort);
    expect(ports.every((p) => p >= 31000 && p <= 31009)).toBe(true);
    expect((await post(s, REG, { name: "r2", apps: [] })).status).toBe(201);
    const third = await post(s, REG, { name: "r3", apps: [] });
    expect(third.status).toBe(403);
    expect(third.json.error).toContain("registrationMaxGroups");
    // Groups the admin makes do not count.
    expect((await post(s, s.adminToken, { name: "admin-made", apps: [] })).status).toBe(201);
  });

  test("the keys are validated like every other (exit-2 errors name them)", () => {
    const bad = (extra: Record<string, unknown>) => () => validate(ServerConfigSchema, { registrationToken: REG, ...extra }, "server.toml");
    expect(bad({ registrationMaxApps: -1 })).toThrow("server.toml: registrationMaxApps: must be 0 (no limit) or more");
    expect(bad({ registrationAllowPorts: "70000" })).toThrow(ConfigError);
    expect(bad({ registrationMaxGroups: "ten" })).toThrow("registrationMaxGroups");
  });
});

describe("2. look-alike group names", () => {
  test("names equal ignoring case, or with a trailing '.' or '-', are refused beside an existing group", async () => {
    const s = await testServer({ registrationToken: REG });
    cleanup.push(() => s.stop());
    expect((await post(s, REG, { name: "cfg", apps: [] })).status).toBe(201);
    const upper = await post(s, REG, { name: "CFG", apps: [] });
    expect(upper.status).toBe(409);
    expect(upper.json.error).toBe('group "CFG" differs from existing group "cfg" only in letter case; choose another name');
    for (const name of ["cfg.", "cfg-"]) {
      const r = await post(s, s.adminToken, { name, apps: [] });
      expect(r.status).toBe(400);
      expect(r.json.issues![0]).toEqual({ path: "name", message: "must not end with '.' or '-' (it would read as the same name as one without)" });
    }
    expect(() => validate(ServerConfigSchema, { groups: [{ name: "a", token: TOKEN }, { name: "A", token: TOKEN }] }, "server.toml")).toThrow("server.toml: groups: group names must be unique, ignoring letter case");
  });

  test("a registry that already holds such names still loads, with a warning, and its groups work", async () => {
    const dir = tempDir();
    const first = await SqliteStore.open(dir, PortSet.parse("20000-20010") as PortSet, () => true);
    expect((await first.create("cfg", TOKEN, "api", [])).ok).toBe(true);
    first.close();
    // Written as an older version would have: no check then.
    const db = new Database(join(dir, "warren.db"));
    db.run("INSERT INTO groups (name, token, source, created_at) VALUES ('CFG', ?, 'client', 0), ('cfg.', ?, 'client', 0)", [TOKEN, TOKEN]);
    db.close();
    logs.length = 0;
    const again = await SqliteStore.open(dir, PortSet.parse("20000-20010") as PortSet, () => true);
    expect((await again.list()).map((g) => g.name)).toEqual(["cfg", "cfg.", "CFG"].sort((a, b) => a.localeCompare(b)));
    expect(logs.some((l) => l.includes("differ only in letter case") && l.includes("CFG") && l.includes("cfg"))).toBe(true);
    again.close();
  });
});

describe("3. a fingerprint mismatch is reported as that, and only that", () => {
  test("on every retry, no 'does the server have [tls] enabled?' beside it", async () => {
    const dir = tempDir();
    const tls = await loadServerTls(dir);
    const server = await testServer({ tls: { enabled: true }, dataDir: dir }, tls);
    cleanup.push(() => server.stop());
    const echo = await echoApp();
    cleanup.push(() => echo.close());
    const c = new Connector(clientConfig(server, "g", [{ name: "e", localAddr: `127.0.0.1:${echo.port}` }], { tls: { enabled: true, serverFingerprint: "ab".repeat(32) } }));
    cleanup.push(() => c.stop());
    const messages: string[] = [];
    c.on("tlsError", (m: string) => messages.push(m));
    c.start();
    await until(() => messages.filter((m) => m.includes("fingerprint mismatch")).length >= 2, 5000, "two attempts refused");
    c.stop();
    expect(messages.filter((m) => !m.includes("fingerprint mismatch"))).toEqual([]);
  });
});

describe("4. a body over Bun's own limit gets the API's JSON 413", () => {
  test("4 MiB with a length, and 1 MiB chunked without one", async () => {
    const s = await testServer();
    cleanup.push(() => s.stop());
    const url = `http://127.0.0.1:${s.apiPort}/api/groups`;
    const headers = { authorization: `Bearer ${s.adminToken}` };
    const big = await fetch(url, { method: "POST", headers, body: "x".repeat(4 << 20) });
    expect(big.status).toBe(413);
    expect(await big.json()).toEqual({ error: `body larger than ${MAX_BODY_BYTES} bytes` });
    const chunks = new ReadableStream<Uint8Array>({
      start(ctl) {
        for (let i = 0; i < 16; i++) ctl.enqueue(new Uint8Array(64 * 1024).fill(32));
        ctl.close();
      },
    });
    const chunked = await fetch(url, { method: "POST", headers, body: chunks, duplex: "half" } as RequestInit);
    expect(chunked.status).toBe(413);
    expect(await chunked.json()).toEqual({ error: `body larger than ${MAX_BODY_BYTES} bytes` });
  });
});

describe("5. one maxApps schema for server.toml, POST and PUT", () => {
  test("PUT with maxApps 20000 is refused as POST and server.toml refuse it", async () => {
    const s = await testServer();
    cleanup.push(() => s.stop());
    expect((await post(s, s.adminToken, { name: "m", apps: [] })).status).toBe(201);
    const put = await post(s, s.adminToken, { apps: [], maxApps: 20_000 }, "/api/groups/m", "PUT");
    expect(put.status).toBe(400);
    expect(put.json.issues).toEqual([{ path: "maxApps", message: "must be at most 10000" }]);
    const created = await post(s, s.adminToken, { name: "n", apps: [], maxApps: 20_000 });
    expect(created.json.issues).toEqual(put.json.issues);
    expect(() => validate(ServerConfigSchema, { groups: [{ name: "t", token: TOKEN, maxApps: 20_000 }] }, "server.toml")).toThrow("server.toml: groups[0].maxApps: must be at most 10000");
  });
});

describe("6. the README's protocol version is the code's", () => {
  test("every 'protocol version (N)' in README.md names PROTOCOL_VERSION", async () => {
    const readme = await Bun.file(join(import.meta.dir, "..", "README.md")).text();
    const named = [...readme.matchAll(/protocol version \((\d+)\)/g)].map((m) => Number(m[1]));
    expect(named.length).toBeGreaterThan(0);
    expect(named.every((n) => n === PROTOCOL_VERSION)).toBe(true);
  });
});
