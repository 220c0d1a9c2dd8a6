/**
 * GET /metrics (issue 17, first part): the Prometheus text exposition of the counters the relay
 * keeps. Values rise by exactly the bytes and connections driven through a tunnel; every line
 * follows the text format; only the admin token may read it.
 */
import { afterAll, expect, test } from "bun:test";
import { clientConfig, createGroup, echoApp, onlineClient, randomData, roundTrip, sha256, testServer, until } from "./helpers.ts";

const METRICS = "metrics-token-0123456789";
const server = await testServer({ metricsToken: METRICS });
const echo = await echoApp();
const cleanup: (() => void)[] = [() => server.stop(), () => echo.close()];
afterAll(() => cleanup.forEach((f) => f()));

async function scrape(token = server.adminToken): Promise<{ status: number; type: string | null; text: string }> {
  const res = await fetch(`http://127.0.0.1:${server.apiPort}/metrics`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.status, type: res.headers.get("content-type"), text: await res.text() };
}

/** Checks every line against the text format (0.0.4) and returns the samples by "name{labels}". */
function parse(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  const typed = new Set<string>();
  expect(text.endsWith("\n")).toBe(true);
  for (const line of text.slice(0, -1).split("\n")) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      if (meta[1] === "TYPE") {
        expect(["counter", "gauge"]).toContain(meta[3]!);
        expect(typed.has(meta[2]!)).toBe(false); // one TYPE per family
        typed.add(meta[2]!);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (-?[0-9.e+]+)$/.exec(line);
    expect(m, `not a sample line: ${line}`).not.toBeNull();
    expect(typed.has(m![1]!), `a sample before its TYPE: ${line}`).toBe(true);
    samples.set(m![1]! + (m![2] ?? ""), Number(m![3]));
  }
  return samples;
}

test("GET /metrics: only the admin token; the text format; bytes and connections rise by exactly what went through", async () => {
  expect((await scrape("")).status).toBe(401);
  expect((await scrape("wrong-token-0123456789")).status).toBe(401);
  // The metrics token reads /metrics and nothing else.
  expect((await scrape(METRICS)).status).toBe(200);
  const api = (method: string, path: string) => fetch(`http://127.0.0.1:${server.apiPort}${path}`, { method, headers: { authorization: `Bearer ${METRICS}` }, body: method === "POST" ? JSON.stringify({ name: "x" }) : undefined });
  expect((await api("GET", "/api/groups")).status).toBe(403);
  expect((await api("POST", "/api/groups")).status).toBe(403);
  expect((await api("POST", "/api/reload")).status).toBe(403);
  expect(await createGroup(server, "m", ["e"])).toBe(201);
  const { connector, apps } = await onlineClient(clientConfig(server, "m", [{ name: "e", localAddr: `127.0.0.1:${echo.port}` }]));
  cleanup.unshift(() => connector.stop());
  const before = await scrape();
  expect(before.status).toBe(200);
  expect(before.type).toStartWith("text/plain; version=0.0.4");
  const s0 = parse(before.text);
  expect(s0.get("warren_groups_online")).toBe(1);
  const key = (name: string, extra = "") => `${name}{group="m",app="e"${extra}}`;
  const in0 = s0.get(key("warren_app_bytes_total", ',direction="in"')) ?? 0;
  const out0 = s0.get(key("warren_app_bytes_total", ',direction="out"')) ?? 0;
  const data = randomData(3_000_001, 5);
  const r = await roundTrip(apps[0]!.remotePort, data, { halfClose: true });
  expect(r.received).toBe(data.length);
  expect(r.hash).toBe(sha256(data));
  await until(async () => parse((await scrape()).text).get(key("warren_app_connections_active")) === 0, 5000, "the stream closed");
  const s1 = parse((await scrape()).text);
  expect(s1.get(key("warren_app_bytes_total", ',direction="in"'))! - in0).toBe(data.length);
  expect(s1.get(key("warren_app_bytes_total", ',direction="out"'))! - out0).toBe(data.length);
  expect(s1.get(key("warren_connections_refused_total", ',reason="access"'))).toBe(0);
  // One connection accepted, one client login.
  expect(s1.get(key("warren_app_connections_total"))! - (s0.get(key("warren_app_connections_total")) ?? 0)).toBe(1);
  expect(s1.get(`warren_logins_total{result="ok"}`)).toBe(1);
  expect(s1.get(`warren_logins_total{result="failed"}`)).toBe(0);
  expect(s1.get(key("warren_udp_datagrams_total", ',direction="in"'))).toBe(0);
  expect(s1.get("warren_process_event_loop_lag_seconds")).toBeGreaterThanOrEqual(0);
  expect(s1.get("warren_process_event_loop_lag_seconds")).toBeLessThan(60);
  expect(s1.get(`warren_work_pool_idle{group="m"}`)).toBeGreaterThanOrEqual(0);
  expect(s1.get("warren_process_resident_memory_bytes")).toBeGreaterThan(1 << 20);
  expect(s1.get("warren_process_open_fds")).toBeGreaterThan(3);
  expect(s1.get("warren_sockets_open")).toBeGreaterThan(0);
});
