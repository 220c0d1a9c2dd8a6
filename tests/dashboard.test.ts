/**
 * The dashboard's server side (issue 17), without a browser: sign-in and its cookie, CSRF and
 * cross-origin refusals, the owner's (tenant's) view of one group, the lockout, the page's
 * security headers, the live feed, and the operations the dashboard calls (kick, disable and
 * enable, list and cut connections, events). Every response body is kept and scanned for tokens.
 */
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { clientConfig, echoApp, onlineClient, TOKEN, testServer, until } from "./helpers.ts";
import { tempDir } from "./procs.ts";
import { loadServerTls } from "../lib/tls.ts";
import { CSP } from "../lib/dashboard/page.ts";
import { MAX_LIVE_FEEDS } from "../lib/api/live.ts";

const server = await testServer({ loginFailureLimit: 5 });
const echo = await echoApp();
const cleanup: (() => void)[] = [() => server.stop(), () => echo.close()];
afterAll(() => cleanup.forEach((f) => f()));
const base = `http://127.0.0.1:${server.apiPort}`;

/** Every response body of this file, with whether it was one of the two that may show a token once. */
const bodies: { text: string; once: boolean }[] = [];

/** A browser-like caller: keeps its session cookie, sends the CSRF token it was given. */
class Browser {
  cookie = "";
  csrf = "";
  constructor(readonly origin = base) {}

  async call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
    const res = await fetch(this.origin + path, {
      method,
      headers: { ...(this.cookie ? { cookie: this.cookie } : {}), ...(this.csrf && method !== "GET" ? { "x-csrf-token": this.csrf } : {}), "content-type": "application/json", ...headers },
      body: body === undefined ? (method === "GET" ? undefined : "{}") : JSON.stringify(body),
    });
    const text = await res.text();
    bodies.push({ text, once: (method === "POST" && path === "/api/groups" && res.status === 201) || (path.endsWith("/token") && res.status === 200) });
    return { status: res.status, headers: res.headers, text, json: text && res.headers.get("content-type")?.includes("json") ? JSON.parse(text) : null };
  }

  async signIn(token: string, group?: string) {
    const r = await this.call("POST", "/ui/login", group === undefined ? { token } : { token, group });
    if (r.status === 200) {
      this.cookie = r.headers.get("set-cookie")!.split(";")[0]!;
      this.csrf = r.json.csrf;
    }
    return r;
  }
}

describe("sign-in", () => {
  test("the admin token signs in; the cookie is HttpOnly, SameSite=Strict, with an expiry, and not Secure over plain HTTP", async () => {
    const b = new Browser();
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
  });

  test("under apiTls the cookie is Secure", async () => {
    const tls = await loadServerTls(tempDir());
    const s = await testServer({ apiTls: true }, tls);
    try {
      const res = await fetch(`https://127.0.0.1:${s.apiPort}/ui/login`, { method: "POST", body: JSON.stringify({ token: s.adminToken }), tls: { rejectUnauthorized: false } });
      await res.body?.cancel();
      expect(res.status).toBe(200);
      expect(res.headers.get("set-cookie")).toContain("Secure");
    } finally {
      s.stop();
    }
  });

  test("wrong credentials are a 401 that names no token; malformed bodies a 400; the lockout counts sign-ins (429)", async () => {
    // A server of its own: the lockout it ends in would otherwise block the other tests' address.
    const s = await testServer({ loginFailureLimit: 5 });
    cleanup.push(() => s.stop());
    const origin = `http://127.0.0.1:${s.apiPort}`;
    const b = new Browser(origin);
    const bad = await b.signIn("not-the-admin-token-at-all");
    expect(bad.status).toBe(401);
    expect(bad.json.error).toContain("wrong administrator token");
    expect((await b.call("POST", "/ui/login", { token: 5 })).status).toBe(400);
    expect((await b.call("POST", "/ui/login", { token: "x", extra: 1 })).status).toBe(400);
    const raw = await fetch(origin + "/ui/login", { method: "POST", body: "{not json" });
    expect(raw.status).toBe(400);
    for (let i = 0; i < 5; i++) await b.signIn("wrong-" + i + "-0123456789abcdef", "nobody");
    const locked = await b.signIn(s.adminToken);
    expect(locked.status).toBe(429);
    // Bearer calls to the API share the lockout.
    expect((await fetch(origin + "/api/groups", { headers: { authorization: `Bearer ${s.adminToken}` } })).status).toBe(429);
  });
});
