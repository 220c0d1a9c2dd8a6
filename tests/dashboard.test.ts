/**
 * The dashboard's server side (issue 17), without a browser: sign-in and its cookie, CSRF and
 * cross-origin refusals, the owner's (tenant's) view of one group, the lockout, the page's
 * security headers and the live feed. The operations the dashboard calls with a client online
 * are in dashboard-ops.test.ts. Every response body and log line is kept and scanned for secrets.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { testServer, until } from "./helpers.ts";
import { tempDir } from "./procs.ts";
import { Browser, openFeed, Seen, type Feed } from "./dashboard-helpers.ts";
import { loadServerTls } from "../lib/tls.ts";
import { setLogLevel, setLogSink } from "../lib/log.ts";
import { CSP } from "../lib/dashboard/page.ts";
import { MAX_LIVE_FEEDS } from "../lib/api/live.ts";

// Every line at every level is kept: the last test checks that none shows a secret.
const logLines: string[] = [];
setLogSink((l) => logLines.push(l));
beforeEach(() => setLogLevel("debug"));

// A lockout of 127.0.0.1 would block the rest of the file: the wrong tokens below stay far under this.
const server = await testServer({ loginFailureLimit: 20, logLevel: "debug" });
const cleanup: (() => void)[] = [() => server.stop()];
afterAll(() => {
  cleanup.forEach((f) => f());
  setLogSink((l) => console.error(l));
  setLogLevel("info");
});
const base = `http://127.0.0.1:${server.apiPort}`;
const seen = new Seen();
seen.adminToken = server.adminToken;

// Groups of two tenants, alpha and beta; the admin signed in to the dashboard.
const admin = new Browser(base, seen);
let tokenA = "";
beforeAll(async () => {
  expect((await admin.signIn(server.adminToken)).status).toBe(200);
  tokenA = await admin.createGroup("alpha", [{ name: "a1" }]);
  await admin.createGroup("beta", [{ name: "b1" }]);
});

describe("sign-in", () => {
  test("the admin token signs in; the cookie is HttpOnly, SameSite=Strict, with an expiry, and not Secure over plain HTTP", async () => {
    const b = new Browser(base, seen);
    expect((await b.call("GET", "/ui/me")).status).toBe(401);
    const r = await b.signIn(server.adminToken);
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ role: "admin", group: null, csrf: expect.any(String) });
    const cookie = r.headers.get("set-cookie")!;
    expect(cookie).toMatch(/^warren_session=[A-Za-z0-9_-]{20,};/);
    expect(cookie).toContain("HttpOnly");
    expect(cookie).toContain("SameSite=Strict");
    expect(cookie).toContain("Path=/");
    expect(cookie).toMatch(/Max-Age=43200/);
    expect(cookie).not.toContain("Secure");
    expect((await b.call("GET", "/ui/me")).json.role).toBe("admin");
    expect((await b.call("GET", "/api/groups")).status).toBe(200);
    expect((await b.call("POST", "/ui/logout")).status).toBe(204);
    expect((await b.call("GET", "/api/groups")).status).toBe(401);
  }, 10_000);

  test("under apiTls the cookie is Secure", async () => {
    const tls = await loadServerTls(tempDir());
    const s = await testServer({ apiTls: true, logLevel: "debug" }, tls);
    try {
      const res = await fetch(`https://127.0.0.1:${s.apiPort}/ui/login`, { method: "POST", body: JSON.stringify({ token: s.adminToken }), tls: { rejectUnauthorized: false } });
      await res.body?.cancel();
      expect(res.status).toBe(200);
      expect(res.headers.get("set-cookie")).toContain("Secure");
    } finally {
      s.stop();
    }
  }, 10_000);

  test("wrong credentials are a 401 that names no token; malformed bodies a 400; the lockout counts sign-ins (429)", async () => {
    // A server of its own: the lockout it ends in would otherwise block the other tests' address.
    const s = await testServer({ loginFailureLimit: 5, logLevel: "debug" });
    cleanup.push(() => s.stop());
    const origin = `http://127.0.0.1:${s.apiPort}`;
    const b = new Browser(origin, seen);
    const bad = await b.signIn("not-the-admin-token-at-all");
    expect(bad.status).toBe(401);
    expect(bad.json.error).toContain("wrong administrator token");
    expect((await b.call("POST", "/ui/login", { token: 5 })).status).toBe(400);
    expect((await b.call("POST", "/ui/login", { token: "x", extra: 1 })).status).toBe(400);
    expect((await b.call("POST", "/ui/login", new URLSearchParams({ token: s.adminToken }))).status).toBe(400);
    for (let i = 0; i < 5; i++) await b.signIn("wrong-" + i + "-0123456789abcdef", "nobody");
    const locked = await b.signIn(s.adminToken);
    expect(locked.status).toBe(429);
    // Bearer calls to the API share the lockout.
    expect((await fetch(origin + "/api/groups", { headers: { authorization: `Bearer ${s.adminToken}` } })).status).toBe(429);
  }, 10_000);
});

describe("CSRF and cross-origin requests", () => {
  const csrfError = { error: "missing or wrong X-CSRF-Token header (the dashboard sends it; other pages cannot)" };

  test("with a signed-in cookie, a change without the X-CSRF-Token header, with a wrong one, or as a form is 403 and changes nothing; a GET needs none", async () => {
    const b = new Browser(base, seen);
    await b.signIn(server.adminToken);
    const forged = b.withoutCsrf();
    const attempts: [string, string, unknown][] = [
      ["POST", "/api/groups", { name: "csrf1", apps: [] }],
      ["PUT", "/api/groups/beta", { apps: [] }],
      ["DELETE", "/api/groups/beta", undefined],
      ["POST", "/api/groups/beta/token", { token: "csrf-chosen-token-0123456789" }],
    ];
    for (const [method, path, body] of attempts) {
      const none = await forged.call(method, path, body);
      expect({ what: `${method} ${path}`, status: none.status, json: none.json }).toEqual({ what: `${method} ${path}`, status: 403, json: csrfError });
      const wrong = await forged.call(method, path, body, { "x-csrf-token": b.csrf.slice(1) + "x" });
      expect(wrong.status).toBe(403);
      expect(wrong.json).toEqual(csrfError);
    }
    // What a cross-site <form> sends: a urlencoded body and no header. Refused before the body is even read.
    const form = await forged.call("POST", "/api/groups", new URLSearchParams({ name: "csrf2", apps: "" }), { "content-type": "application/x-www-form-urlencoded" });
    expect(form.status).toBe(403);
    expect(form.json).toEqual(csrfError);
    expect(server.hub.registry.get("csrf1")).toBeUndefined();
    expect(server.hub.registry.get("csrf2")).toBeUndefined();
    expect(server.hub.registry.get("beta")!.apps.map((a) => a.name)).toEqual(["b1"]);
    // The forged calls used no sign-in's token: the session still works, and reading needs no CSRF token.
    expect((await forged.call("GET", "/api/groups")).status).toBe(200);
    expect((await forged.call("GET", "/api/groups/beta")).status).toBe(200);
    // With the header it goes through.
    expect((await b.call("POST", "/api/groups", { name: "csrf3", apps: [] })).status).toBe(201);
  }, 10_000);

  test("a change from a page of another origin is 403 naming the origin, even with the CSRF token and on /ui/login; the own origin passes", async () => {
    const b = new Browser(base, seen);
    await b.signIn(server.adminToken);
    const evil = await b.call("POST", "/api/groups", { name: "evil1", apps: [] }, { origin: "http://evil.example" });
    expect(evil.status).toBe(403);
    expect(evil.json).toEqual({ error: "cross-origin request from http://evil.example refused" });
    const opaque = await b.call("DELETE", "/api/groups/beta", undefined, { origin: "null" });
    expect(opaque.status).toBe(403);
    expect(opaque.json.error).toContain("opaque origin");
    // Same host, other port: another origin.
    const port = await b.call("POST", "/api/groups", { name: "evil2", apps: [] }, { origin: `http://127.0.0.1:${server.apiPort + 1}` });
    expect(port.status).toBe(403);
    // A login forged from another site (signing the victim in as the attacker) is refused too.
    const login = await new Browser(base, seen).call("POST", "/ui/login", { token: server.adminToken }, { origin: "http://evil.example" });
    expect(login.status).toBe(403);
    expect(login.headers.get("set-cookie")).toBeNull();
    expect(server.hub.registry.get("evil1")).toBeUndefined();
    expect(server.hub.registry.get("evil2")).toBeUndefined();
    expect(server.hub.registry.get("beta")).toBeDefined();
    // A GET from anywhere changes nothing and is not refused for its origin (the cookie is SameSite=Strict anyway).
    expect((await b.call("GET", "/api/groups", undefined, { origin: "http://evil.example" })).status).toBe(200);
    expect((await b.call("POST", "/api/groups", { name: "own-origin", apps: [] }, { origin: base })).status).toBe(201);
  }, 10_000);

  test("bearer-token calls (curl: no cookie, no Origin) need no CSRF token", async () => {
    const curl = new Browser(base, seen);
    const auth = { authorization: `Bearer ${server.adminToken}` };
    expect((await curl.call("POST", "/api/groups", { name: "curl1", apps: [{ name: "x" }] }, auth)).status).toBe(201);
    expect((await curl.call("PUT", "/api/groups/curl1", { apps: [{ name: "x" }, { name: "y" }] }, auth)).status).toBe(200);
    expect((await curl.call("DELETE", "/api/groups/curl1", undefined, auth)).status).toBe(204);
    // A bearer token decides alone: a cookie riding along adds no rights and needs no CSRF token.
    const owner = new Browser(base, seen);
    await owner.signIn(tokenA, "alpha");
    expect((await owner.withoutCsrf().call("POST", "/api/groups", { name: "curl2", apps: [] }, auth)).status).toBe(201);
  }, 10_000);
});

describe("the owner's view of one group", () => {
  test("an owner sees and changes their own group only; another group's name is a 404 like a name that does not exist", async () => {
    const owner = new Browser(base, seen);
    const r = await owner.signIn(tokenA, "alpha");
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ role: "owner", group: "alpha", csrf: expect.any(String) });
    const list = await owner.call("GET", "/api/groups");
    expect(list.json.groups.map((g: { name: string }) => g.name)).toEqual(["alpha"]);
    expect((await owner.call("GET", "/api/groups/alpha")).json).toMatchObject({ name: "alpha", enabled: true, apps: [{ name: "a1" }] });
    for (const path of ["/events", "/connections", "/history"]) expect((await owner.call("GET", `/api/groups/alpha${path}`)).status).toBe(200);

    const calls: [string, string, unknown?][] = [
      ["GET", ""],
      ["PUT", "", { apps: [{ name: "stolen" }] }],
      ["GET", "/events"],
      ["GET", "/connections"],
      ["GET", "/history"],
      ["POST", "/kick"],
      ["DELETE", "/connections/1"],
      ["POST", "/token", {}],
    ];
    for (const [method, suffix, body] of calls) {
      for (const name of ["beta", "no-such-group"]) {
        const res = await owner.call(method, `/api/groups/${name}${suffix}`, body);
        expect({ call: `${method} ${name}${suffix}`, status: res.status, json: res.json }).toEqual({ call: `${method} ${name}${suffix}`, status: 404, json: { error: `group "${name}" does not exist` } });
      }
    }
    expect(server.hub.registry.get("beta")!.apps.map((a) => a.name)).toEqual(["b1"]);

    // The owner changes their apps (not the limits the administrator sets).
    const put = await owner.call("PUT", "/api/groups/alpha", { apps: [{ name: "a1" }, { name: "a2" }] });
    expect(put.status).toBe(200);
    expect(put.json.apps.map((a: { name: string }) => a.name)).toEqual(["a1", "a2"]);
    const events = (await owner.call("GET", "/api/groups/alpha/events")).json.events;
    expect(events.at(-1)).toMatchObject({ kind: "apps_changed", message: "apps changed by the group's owner (2 now)" });
  }, 10_000);

  test("the administrator's routes are 403 to an owner, with a reason", async () => {
    const owner = new Browser(base, seen);
    await owner.signIn(tokenA, "alpha");
    const adminOnly: [string, string, unknown?][] = [
      ["POST", "/api/groups", { name: "mine", apps: [] }],
      ["POST", "/api/groups/alpha/enable"],
      ["POST", "/api/groups/alpha/disable"],
      ["POST", "/api/groups/beta/disable"],
      ["PUT", "/api/groups/alpha", { apps: [{ name: "a1" }], maxApps: 100 }],
      ["DELETE", "/api/groups/alpha"],
      ["GET", "/api/overview"],
      ["GET", "/metrics"],
      ["POST", "/api/reload"],
    ];
    for (const [method, path, body] of adminOnly) {
      const res = await owner.call(method, path, body);
      expect({ call: `${method} ${path}`, status: res.status }).toEqual({ call: `${method} ${path}`, status: 403 });
      expect(res.json.error).toMatch(/only the administrator/);
    }
    expect(server.hub.registry.get("mine")).toBeUndefined();
    expect(server.hub.registry.get("alpha")).toMatchObject({ disabled: false, maxApps: 0 });
    expect(server.hub.registry.get("beta")).toMatchObject({ disabled: false });
  }, 10_000);

  test("a wrong group token, or the admin token with a group's name, is a 401 naming no token", async () => {
    const b = new Browser(base, seen);
    for (const [token, group] of [["alpha-token-that-is-wrong-0123", "alpha"], [server.adminToken, "alpha"], [tokenA, "beta"]] as const) {
      const r = await b.signIn(token, group);
      expect(r.status).toBe(401);
      expect(r.json).toEqual({ error: "wrong group name or token" });
      expect(r.headers.get("set-cookie")).toBeNull();
    }
    expect(server.hub.guard.blocked("127.0.0.1")).toBe(false);
  }, 10_000);

  test("an owner's token change signs out the group's other sign-ins (and ends their feeds), not the one that asked nor the admin", async () => {
    const oldToken = await admin.createGroup("gamma", [{ name: "c1" }]);
    const [one, two] = [new Browser(base, seen), new Browser(base, seen)];
    expect((await one.signIn(oldToken, "gamma")).status).toBe(200);
    expect((await two.signIn(oldToken, "gamma")).status).toBe(200);
    const feed = await two.feed("?group=gamma");
    expect((await feed.next())?.event).toBe("group");
    try {
      const changed = await one.call("POST", "/api/groups/gamma/token", {});
      expect(changed.status).toBe(200);
      seen.tokens.add(changed.json.token);
      expect(changed.json).toEqual({ name: "gamma", token: expect.any(String) });
      expect(changed.json.token).not.toBe(oldToken);
      expect((await two.call("GET", "/ui/me")).status).toBe(401);
      expect((await two.call("GET", "/api/groups/gamma")).status).toBe(401);
      // The feed ends at its next turn (one interval, 1 s).
      await until(async () => (await feed.next(3000)) === null, 3000, "the signed-out owner's feed to end");
      expect((await one.call("GET", "/ui/me")).json).toMatchObject({ role: "owner", group: "gamma" });
      expect((await admin.call("GET", "/ui/me")).json.role).toBe("admin");
      expect((await new Browser(base, seen).signIn(oldToken, "gamma")).status).toBe(401);
      expect((await new Browser(base, seen).signIn(changed.json.token, "gamma")).status).toBe(200);
    } finally {
      feed.close();
    }
  }, 10_000);
});

describe("the page", () => {
  test("GET / is HTML under the CSP, never cached or framed, with hashed immutable assets, no inline script and no token", async () => {
    const anon = new Browser(base, seen);
    const page = await anon.call("GET", "/");
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toMatch(/^text\/html/);
    expect(page.headers.get("content-security-policy")).toBe(CSP);
    expect(page.headers.get("x-content-type-options")).toBe("nosniff");
    expect(page.headers.get("x-frame-options")).toBe("DENY");
    expect(page.headers.get("cache-control")).toBe("no-store");
    expect(page.headers.get("referrer-policy")).toBe("no-referrer");
    // Signed in, the page is the same bytes: nothing of the session is written into it.
    expect((await admin.call("GET", "/")).text).toBe(page.text);

    const scripts = [...page.text.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)];
    expect(scripts.length).toBe(1);
    expect(scripts[0]![2]!.trim()).toBe("");
    expect(page.text).not.toMatch(/\son[a-z]+\s*=/i); // no inline event handlers either
    expect(page.text).not.toMatch(/javascript:/i);
    const js = /src="(\/assets\/app\.([0-9a-f]{16})\.js)"/.exec(scripts[0]![1]!);
    const css = /<link rel="stylesheet" href="(\/assets\/app\.([0-9a-f]{16})\.css)">/.exec(page.text);
    expect(js).not.toBeNull();
    expect(css).not.toBeNull();
    for (const [m, type] of [[js!, "text/javascript"], [css!, "text/css"]] as const) {
      const asset = await anon.call("GET", m[1]!);
      expect(asset.status).toBe(200);
      expect(asset.headers.get("content-type")).toBe(`${type}; charset=utf-8`);
      expect(asset.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
      expect(asset.headers.get("content-security-policy")).toBe(CSP);
      expect(asset.headers.get("x-content-type-options")).toBe("nosniff");
      // The name is the content's hash: a new build is a new URL.
      expect(new Bun.CryptoHasher("sha256").update(asset.text).digest("hex").slice(0, 16)).toBe(m[2]!);
    }
    for (const path of ["/assets/app.0123456789abcdef.js", "/assets/app.js", "/assets/index.html", `/assets/${js![2]}.css`]) {
      const missing = await anon.call("GET", path);
      expect({ path, status: missing.status }).toEqual({ path, status: 404 });
    }
  }, 10_000);
});

describe("the live feed", () => {
  test("the admin's feed sends the overview once a second: every group in short, with the totals", async () => {
    const feed = await admin.feed();
    try {
      expect(feed.headers.get("content-type")).toMatch(/^text\/event-stream/);
      const first = (await feed.next())!;
      expect(first.event).toBe("overview");
      expect(first.data.totals).toEqual({ groups: first.data.groups.length, groupsOnline: 0, connections: 0, bytesIn: 0, bytesOut: 0 });
      expect(first.data.groups.find((g: { name: string }) => g.name === "beta")).toEqual({
        name: "beta", online: false, enabled: true, clientAddr: null, clientVersion: null, onlineSince: null, apps: 1, connections: 0, bytesIn: 0, bytesOut: 0,
      });
      // A change shows in the next event.
      await admin.createGroup("delta", [{ name: "d1" }, { name: "d2" }]);
      const second = (await feed.next(3000))!;
      expect(second.event).toBe("overview");
      expect(second.data.totals.groups).toBe(first.data.totals.groups + 1);
      expect(second.data.groups.find((g: { name: string }) => g.name === "delta")).toMatchObject({ apps: 2, online: false });
    } finally {
      feed.close();
    }
  }, 10_000);

  test("?group= gives the group's page; an owner gets their own group only (another is 404), and no overview (403)", async () => {
    const all = await admin.feed("?group=alpha");
    try {
      const page = (await all.next())!;
      expect(page.event).toBe("group");
      expect(page.data).toEqual({ group: expect.objectContaining({ name: "alpha", online: false }), connections: [], events: expect.any(Array) });
    } finally {
      all.close();
    }
    expect((await admin.feed("?group=no-such-group")).status).toBe(404);
    expect((await new Browser(base, seen).feed()).status).toBe(401);

    const owner = new Browser(base, seen);
    await owner.signIn(tokenA, "alpha");
    for (const name of ["beta", "no-such-group"]) {
      const other = await owner.feed(`?group=${name}`);
      expect({ status: other.status, json: other.json }).toEqual({ status: 404, json: { error: `group "${name}" does not exist` } });
    }
    const overview = await owner.feed();
    expect(overview.status).toBe(403);
    expect(overview.json.error).toMatch(/only the administrator/);
    const own = await owner.feed("?group=alpha");
    try {
      expect((await own.next())?.data.group.name).toBe("alpha");
    } finally {
      own.close();
    }
  }, 10_000);

  test("signing out ends the feed of that sign-in", async () => {
    const b = new Browser(base, seen);
    await b.signIn(server.adminToken);
    const feed = await b.feed();
    try {
      expect((await feed.next())?.event).toBe("overview");
      expect((await b.call("POST", "/ui/logout")).status).toBe(204);
      // Ends at its next turn: at most one interval (1 s) away, perhaps after one last event.
      await until(async () => (await feed.next(3000)) === null, 3000, "the feed to end");
    } finally {
      feed.close();
    }
  }, 10_000);

  test(`at most MAX_LIVE_FEEDS (${MAX_LIVE_FEEDS}) feeds at once: one more is a 503 naming the limit; a closed one makes room`, async () => {
    // A server of its own, on which no other test has opened (or is still closing) a feed.
    const s = await testServer({ logLevel: "debug" });
    cleanup.push(() => s.stop());
    const url = `http://127.0.0.1:${s.apiPort}/api/live`;
    const auth = { authorization: `Bearer ${s.adminToken}` };
    const feeds: Feed[] = [];
    try {
      for (let i = 0; i < MAX_LIVE_FEEDS; i++) {
        const f = await openFeed(url, auth, seen);
        feeds.push(f);
        expect(f.status).toBe(200);
      }
      // Every one is live.
      for (const f of feeds) expect((await f.next())?.event).toBe("overview");
      const over = await openFeed(url, auth, seen);
      expect(over.status).toBe(503);
      expect(over.json.error).toBe(`${MAX_LIVE_FEEDS} live feeds are open already (MAX_LIVE_FEEDS); close a dashboard tab`);
      // A tab closes: its loop notices at its next turn, and a new feed fits.
      feeds.shift()!.close();
      let again: Feed | undefined;
      await until(async () => {
        again = await openFeed(url, auth, seen);
        return again.status === 200;
      }, 5000, "room for a new feed");
      feeds.push(again!);
      expect((await again!.next())?.event).toBe("overview");
    } finally {
      feeds.forEach((f) => f.close());
    }
  }, 20_000);
});

describe("secrets", () => {
  test("no response body (but the creation and token-change answers) and no log line shows a token or a session id", () => {
    // The scan saw the answers that do hand tokens out, and the sign-ins' log lines.
    expect(seen.bodies.filter((b) => b.once).length).toBeGreaterThanOrEqual(seen.tokens.size);
    expect(seen.bodies.length).toBeGreaterThan(100);
    expect(logLines.some((l) => l.includes("dashboard sign-in") && l.includes("as=administrator"))).toBe(true);
    expect(logLines.some((l) => l.includes("group token changed") && l.includes("group=gamma"))).toBe(true);
    seen.expectNoSecrets(logLines);
  });
});
