/**
 * The operations the dashboard calls (issue 17), with a real client online: kick, disable and
 * enable, the list of live connections and cutting one, and the group's events (logins, failed
 * logins, refusals). Every response body and log line is kept and scanned for secrets at the end.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import net from "node:net";
import { Connector } from "../lib/client/connector.ts";
import { setLogLevel, setLogSink } from "../lib/log.ts";
import { clientConfig, echoApp, onlineClient, testServer, until } from "./helpers.ts";
import { tempDir } from "./procs.ts";
import { Browser, Seen, within } from "./dashboard-helpers.ts";

const logLines: string[] = [];
setLogSink((l) => logLines.push(l));
beforeEach(() => setLogLevel("debug"));

// A lockout of 127.0.0.1 would stop every client of the file: the one wrong token below stays far under this.
const server = await testServer({ loginFailureLimit: 20, logLevel: "debug" });
const echo = await echoApp();
const cleanup: (() => void)[] = [() => server.stop(), () => echo.close()];
afterAll(() => {
  // Clients first, so that none is left retrying against a stopped server.
  cleanup.reverse().forEach((f) => f());
  setLogSink((l) => console.error(l));
  setLogLevel("info");
});
const base = `http://127.0.0.1:${server.apiPort}`;
const seen = new Seen();
seen.adminToken = server.adminToken;
const admin = new Browser(base, seen);
beforeAll(async () => {
  expect((await admin.signIn(server.adminToken)).status).toBe(200);
});

/** Creates group `name` with these apps and brings a client for it online (each app served by the echo app). */
async function onlineGroup(name: string, apps: Record<string, unknown>[]) {
  const token = await admin.createGroup(name, apps);
  const config = clientConfig(server, name, apps.map((a) => ({ name: a.name as string, localAddr: `127.0.0.1:${echo.port}` })), { token });
  const { connector, apps: statuses } = await within(onlineClient(config), 5000, `the client of ${name} online`);
  cleanup.push(() => connector.stop());
  // Counted from here: how often it went offline and came back.
  const count = { online: 0, offline: 0, offlineReasons: [] as string[] };
  connector.on("online", () => count.online++);
  connector.on("offline", (r) => (count.offline++, count.offlineReasons.push(r)));
  return { token, connector, port: (app: string) => statuses.find((s) => s.name === app)!.remotePort, count };
}

const events = async (name: string) => (await admin.call("GET", `/api/groups/${name}/events`)).json.events as { kind: string; addr?: string; app?: string; reason?: string; message: string; count?: number }[];
const view = async (name: string) => (await admin.call("GET", `/api/groups/${name}`)).json;

/** A user of an app: connected, with what it received and how it ended. */
async function user(port: number) {
  const u = { socket: net.connect({ port, host: "127.0.0.1" }), got: "", closed: false, error: "" };
  u.socket.on("data", (d: Buffer) => (u.got += d.toString()));
  u.socket.on("error", (e: NodeJS.ErrnoException) => (u.error = e.code ?? e.message));
  u.socket.on("close", () => (u.closed = true));
  cleanup.push(() => u.socket.destroy());
  return u;
}

describe("kick", () => {
  test("POST :name/kick ends the session (204): the client goes offline and comes back by itself; the event names who did it", async () => {
    const g = await onlineGroup("kickme", [{ name: "e" }]);
    const before = await view("kickme");
    const clientAddr: string = before.clientAddr; // read first: toMatchObject below puts its matchers into `before`
    expect(before).toMatchObject({ online: true, clientAddr: expect.stringMatching(/^127\.0\.0\.1:\d+$/), clientVersion: expect.stringMatching(/^warren-client /) });
    const kick = await admin.call("POST", "/api/groups/kickme/kick");
    expect(kick.status).toBe(204);
    expect(kick.text).toBe("");
    await until(() => g.count.offline === 1, 5000, "the client to see its session end");
    await until(() => g.count.online === 1, 5000, "the client to log in again by itself");
    expect(g.connector.online).toBe(true);
    const after = await view("kickme");
    expect(after.online).toBe(true);
    expect(after.clientAddr).not.toBe(clientAddr); // a new control connection
    expect(logLines.some((l) => l.includes("server closed the session") && l.includes("code=Kicked"))).toBe(true);
    const kinds = (await events("kickme")).map((e) => e.kind);
    expect(kinds).toEqual(["login", "kicked", "offline", "login"]);
    expect((await events("kickme"))[1]!.message).toBe(`session of ${clientAddr} ended by the administrator`);
  }, 15_000);

  test("kicking a group with no client online is 409; one that does not exist 404", async () => {
    await admin.createGroup("idle", [{ name: "x" }]);
    const offline = await admin.call("POST", "/api/groups/idle/kick");
    expect(offline.status).toBe(409);
    expect(offline.json).toEqual({ error: 'group "idle" is offline: there is no session to end' });
    expect((await admin.call("POST", "/api/groups/no-such-group/kick")).status).toBe(404);
    expect((await admin.call("GET", "/api/groups/idle/kick")).status).toBe(405);
  }, 10_000);
});

describe("disable and enable", () => {
  test("a disabled group's client is refused with GroupDisabled and keeps retrying; enabled, it comes back by itself", async () => {
    const g = await onlineGroup("onoff", [{ name: "e" }]);
    const off = await admin.call("POST", "/api/groups/onoff/disable");
    expect(off.status).toBe(200);
    expect(off.json).toMatchObject({ name: "onoff", enabled: false });
    await until(() => g.count.offline === 1, 5000, "the session to end");
    expect(logLines.some((l) => l.includes("server closed the session") && l.includes("code=GroupDisabled"))).toBe(true);
    // Not a fatal refusal: the client tries again, is refused again (one event, counted), and does not stop.
    await until(async () => (await events("onoff")).some((e) => e.kind === "login_failed" && e.reason === "disabled" && (e.count ?? 1) >= 2), 5000, "two refused logins");
    const refused = (await events("onoff")).find((e) => e.kind === "login_failed")!;
    expect(refused).toMatchObject({ addr: "127.0.0.1", message: "login from 127.0.0.1 refused: the group is disabled on the server" });
    expect(await view("onoff")).toMatchObject({ enabled: false, online: false, clientAddr: null });
    const summary = (await admin.call("GET", "/api/overview")).json.groups.find((s: { name: string }) => s.name === "onoff");
    expect(summary).toMatchObject({ enabled: false, online: false });
    // A correct token is not a failed login: no lockout however long it retries.
    expect(server.hub.guard.blocked("127.0.0.1")).toBe(false);

    const on = await admin.call("POST", "/api/groups/onoff/enable");
    expect(on.status).toBe(200);
    expect(on.json).toMatchObject({ name: "onoff", enabled: true });
    // Its backoff is still short (a few hundred ms to 2 s): it is back without anyone touching it.
    await until(() => g.count.online === 1, 8000, "the client to come back online");
    expect(await view("onoff")).toMatchObject({ enabled: true, online: true });
    const kinds = (await events("onoff")).map((e) => e.kind);
    expect(kinds).toEqual(["login", "offline", "disabled", "login_failed", "enabled", "login"]);
  }, 20_000);
});

describe("live connections", () => {
  test("GET :name/connections lists a user with its address, app, bytes and age; DELETE :name/connections/:id cuts it; an unknown id is 404", async () => {
    const g = await onlineGroup("conns", [{ name: "e" }]);
    const u = await user(g.port("e"));
    u.socket.write("hello dashboard");
    await until(() => u.got === "hello dashboard", 5000, "the echo");
    let list: { id: string; app: string; userAddr: string; bytesIn: number; bytesOut: number; since: string }[] = [];
    await until(async () => {
      list = (await admin.call("GET", "/api/groups/conns/connections")).json.connections;
      return list.length === 1 && list[0]!.bytesIn === 15 && list[0]!.bytesOut === 15;
    }, 5000, "the connection listed with its bytes");
    expect(list[0]).toEqual({ id: expect.stringMatching(/^\d+$/), app: "e", userAddr: "127.0.0.1", bytesIn: 15, bytesOut: 15, since: expect.any(String) });
    const age = Date.now() - Date.parse(list[0]!.since);
    expect(age).toBeGreaterThanOrEqual(0);
    expect(age).toBeLessThan(5000);
    // Also in the group's view and the overview.
    expect((await view("conns")).apps[0]).toMatchObject({ connections: 1 });

    const unknown = await admin.call("DELETE", "/api/groups/conns/connections/999999");
    expect(unknown.status).toBe(404);
    expect(unknown.json).toEqual({ error: 'group "conns" has no live connection 999999' });
    expect(u.closed).toBe(false);

    // The group's owner may cut its own users.
    const owner = new Browser(base, seen);
    expect((await owner.signIn(g.token, "conns")).status).toBe(200);
    const cut = await owner.call("DELETE", `/api/groups/conns/connections/${list[0]!.id}`);
    expect(cut.status).toBe(204);
    await until(() => u.closed, 5000, "the user's socket to close");
    expect(u.error).toBe("ECONNRESET");
    await until(async () => (await admin.call("GET", "/api/groups/conns/connections")).json.connections.length === 0, 5000, "the list to be empty");
    expect((await admin.call("DELETE", `/api/groups/conns/connections/${list[0]!.id}`)).status).toBe(404);
    // The session was not touched.
    expect(g.count.offline).toBe(0);
  }, 15_000);
});

describe("events", () => {
  test("a login and a failed login (wrong token) appear with the source address", async () => {
    const g = await onlineGroup("evt", [{ name: "e" }]);
    const login = (await events("evt")).find((e) => e.kind === "login");
    expect(login).toMatchObject({ addr: "127.0.0.1", message: expect.stringMatching(/^logged in from 127\.0\.0\.1:\d+ \(warren-client .+\)$/) });
    const wrong = new Connector(clientConfig(server, "evt", [{ name: "e", localAddr: `127.0.0.1:${echo.port}` }], { token: "evt-token-that-is-wrong-0123456789" }));
    cleanup.push(() => wrong.stop());
    const fatal = new Promise<string>((r) => wrong.once("fatal", r));
    wrong.start();
    expect(await within(fatal, 5000, "the wrong token refused")).toBe("authentication failed");
    const failed = (await events("evt")).find((e) => e.kind === "login_failed");
    expect(failed).toMatchObject({ addr: "127.0.0.1", reason: "failed", message: "login with a wrong token from 127.0.0.1" });
    // The wrong login did not disturb the group's session.
    expect(g.count.offline).toBe(0);
    expect((await view("evt")).online).toBe(true);
  }, 15_000);

  test("users refused by allowIPs and by maxConnections appear as refused events with the reason within a few seconds", async () => {
    // Users come at once after the apps are bound: their refusals must not be taken for the counters' starting point.
    const g = await onlineGroup("refuse", [{ name: "only10", allowIPs: ["10.0.0.0/8"] }, { name: "one", maxConnections: 1 }]);
    const denied = await user(g.port("only10"));
    denied.socket.write("let me in");
    const first = await user(g.port("one"));
    first.socket.write("first");
    await until(() => first.got === "first", 5000, "the first user of 'one' served");
    const second = await user(g.port("one"));
    second.socket.write("second");
    await until(() => denied.closed && second.closed, 5000, "both refused users closed");
    expect([denied.error, second.error]).toEqual(["ECONNRESET", "ECONNRESET"]);
    expect(first.closed).toBe(false);
    // The hub looks at the refusal counters once a second.
    await until(async () => (await events("refuse")).filter((e) => e.kind === "refused").length === 2, 5000, "two refused events");
    const refused = (await events("refuse")).filter((e) => e.kind === "refused");
    expect(refused).toContainEqual(expect.objectContaining({ app: "only10", reason: "allowIPs/denyIPs", message: "users of only10 refused: allowIPs/denyIPs" }));
    expect(refused).toContainEqual(expect.objectContaining({ app: "one", reason: "maxConnections", message: "users of one refused: maxConnections" }));
    const apps = (await view("refuse")).apps;
    expect(apps.find((a: { name: string }) => a.name === "only10")).toMatchObject({ deniedConnections: 1 });
    expect(apps.find((a: { name: string }) => a.name === "one")).toMatchObject({ overLimitConnections: 1, connections: 1 });
  }, 15_000);

  test("refusals restored from before a restart are not news; a new one right after the restart is an event of its own", async () => {
    const dir = tempDir();
    const apps = [{ name: "only10", allowIPs: ["10.0.0.0/8"] }];
    let s = await testServer({ dataDir: dir, logLevel: "debug" });
    let b = new Browser(`http://127.0.0.1:${s.apiPort}`, seen);
    let c: Connector | undefined;
    /** Brings the group's client online at `s` and has one user refused. */
    const refuseOne = async (token: string) => {
      const online = await within(onlineClient(clientConfig(s, "kept", [{ name: "only10", localAddr: `127.0.0.1:${echo.port}` }], { token })), 5000, "the client online");
      c = online.connector;
      const u = await user(online.apps[0]!.remotePort);
      await until(() => u.closed, 5000, "the user refused");
    };
    const refusedEvents = async () => ((await b.call("GET", "/api/groups/kept/events")).json.events as { kind: string; count?: number }[]).filter((e) => e.kind === "refused");
    try {
      expect((await b.signIn(s.adminToken)).status).toBe(200);
      const token = await b.createGroup("kept", apps);
      await refuseOne(token);
      await until(async () => (await refusedEvents()).length === 1, 5000, "the refusal before the restart");
      c!.stop();
      s.stop();
      s = await testServer({ dataDir: dir, logLevel: "debug" });
      b = new Browser(`http://127.0.0.1:${s.apiPort}`, seen);
      expect((await b.signIn(s.adminToken)).status).toBe(200);
      // The count survived the restart; the events did not (they are kept in memory).
      expect((await b.call("GET", "/api/groups/kept")).json.apps[0].deniedConnections).toBe(1);
      await refuseOne(token);
      await until(async () => (await refusedEvents()).length === 1, 5000, "the refusal after the restart");
      // One refusal: the restored one was not counted in again.
      expect((await refusedEvents())[0]!.count).toBeUndefined();
      expect((await b.call("GET", "/api/groups/kept")).json.apps[0].deniedConnections).toBe(2);
    } finally {
      c?.stop();
      s.stop();
    }
  }, 20_000);
});

describe("secrets", () => {
  test("no response body (but the creation answers) and no log line shows a token or a session id", () => {
    expect(seen.bodies.length).toBeGreaterThan(30);
    expect(logLines.some((l) => l.includes("login failed") && l.includes("group=evt"))).toBe(true);
    seen.expectNoSecrets(logLines);
  });
});
