/**
 * Traffic history and totals that survive a restart (issue 17): traffic driven through a tunnel
 * is in the API's totals and in the per-minute series after the server restarts on the same
 * dataDir; writes come in batches; old rows are pruned; bad ranges are refused.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { clientConfig, createGroup, echoApp, onlineClient, randomData, roundTrip, sha256, testServer, until } from "./helpers.ts";
import { tempDir } from "./procs.ts";
import { History, MINUTE_RETENTION_S, HOUR_RETENTION_S, type HistoryStore } from "../lib/metrics/history.ts";
import { Metrics } from "../lib/metrics/counters.ts";
import { SqliteHistory } from "../lib/registry/sqlite-history.ts";

const echo = await echoApp();
afterAll(() => echo.close());

async function api(server: { apiPort: number; adminToken: string }, path: string) {
  const res = await fetch(`http://127.0.0.1:${server.apiPort}${path}`, { headers: { authorization: `Bearer ${server.adminToken}` } });
  return { status: res.status, json: await res.json() };
}

describe("history", () => {
  test("totals and the last hour's series survive a server restart on the same dataDir", async () => {
    const dataDir = tempDir();
    let server = await testServer({ dataDir });
    expect(await createGroup(server, "h", ["e"])).toBe(201);
    let { connector, apps } = await onlineClient(clientConfig(server, "h", [{ name: "e", localAddr: `127.0.0.1:${echo.port}` }]));
    const port = apps[0]!.remotePort;
    const data = randomData(2_000_003, 9);
    for (let i = 0; i < 3; i++) {
      const r = await roundTrip(port, data, { halfClose: true });
      expect(r.hash).toBe(sha256(data));
    }
    await until(async () => (await api(server, "/api/groups/h")).json.apps[0].connections === 0, 5000, "streams closed");
    const before = (await api(server, "/api/groups/h")).json.apps[0];
    expect([before.bytesIn, before.bytesOut, before.connectionsTotal]).toEqual([3 * data.length, 3 * data.length, 3]);
    // Before any flush, the series already shows the traffic (what the counters hold beyond the last batch).
    const live = (await api(server, "/api/groups/h/history?range=1h")).json;
    expect(live.stepSeconds).toBe(60);
    const sum = (h: { apps: { app: string; points: number[][] }[] }, i: number) => h.apps.find((a) => a.app === "e")!.points.reduce((n, p) => n + p[i]!, 0);
    expect([sum(live, 1), sum(live, 2), sum(live, 3)]).toEqual([3 * data.length, 3 * data.length, 3]);
    connector.stop();
    server.stop();

    server = await testServer({ dataDir });
    try {
      const after = (await api(server, "/api/groups/h")).json.apps[0];
      expect([after.bytesIn, after.bytesOut, after.connectionsTotal, after.connections]).toEqual([3 * data.length, 3 * data.length, 3, 0]);
      for (const range of ["1h", "24h", "30d"]) {
        const h = (await api(server, `/api/groups/h/history?range=${range}`)).json;
        expect(h.stepSeconds).toBe(range === "30d" ? 3600 : 60);
        expect([sum(h, 1), sum(h, 2), sum(h, 3)]).toEqual([3 * data.length, 3 * data.length, 3]);
      }
      // More traffic adds to the restored totals, and the series keeps counting.
      ({ connector, apps } = await onlineClient(clientConfig(server, "h", [{ name: "e", localAddr: `127.0.0.1:${echo.port}` }])));
      const r = await roundTrip(apps[0]!.remotePort, data, { halfClose: true });
      expect(r.received).toBe(data.length);
      await until(async () => (await api(server, "/api/groups/h")).json.apps[0].connections === 0, 5000, "stream closed");
      const more = (await api(server, "/api/groups/h")).json.apps[0];
      expect([more.bytesIn, more.connectionsTotal]).toEqual([4 * data.length, 4]);
      expect(sum((await api(server, "/api/groups/h/history?range=1h")).json, 1)).toBe(4 * data.length);
      // Prometheus counts from the restored totals too.
      const text = await (await fetch(`http://127.0.0.1:${server.apiPort}/metrics`, { headers: { authorization: `Bearer ${server.adminToken}` } })).text();
      expect(text).toContain(`warren_app_bytes_total{group="h",app="e",direction="in"} ${4 * data.length}\n`);
      expect(text).toContain(`warren_app_connections_total{group="h",app="e"} 4\n`);
      connector.stop();
    } finally {
      server.stop();
    }
  });

  test("a deleted group's history goes with it; a bad range is a 400 naming the choices", async () => {
    const server = await testServer({ dataDir: tempDir() });
    try {
      expect(await createGroup(server, "gone", ["e"])).toBe(201);
      server.hub.metrics.app("gone", "e").bytesIn = 500;
      server.hub.history.flush();
      expect((await api(server, "/api/groups/gone/history?range=1h")).json.apps[0].points[0][1]).toBe(500);
      const bad = await api(server, "/api/groups/gone/history?range=2w");
      expect(bad.status).toBe(400);
      expect(bad.json.error).toContain("1h, 24h, 30d");
      await fetch(`http://127.0.0.1:${server.apiPort}/api/groups/gone`, { method: "DELETE", headers: { authorization: `Bearer ${server.adminToken}` } });
      expect((await api(server, "/api/groups/gone/history")).status).toBe(404);
      expect(await createGroup(server, "gone", ["e"])).toBe(201);
      expect((await api(server, "/api/groups/gone/history?range=30d")).json.apps).toEqual([]);
      expect((await api(server, "/api/groups/gone")).json.apps[0].bytesIn).toBe(0);
    } finally {
      server.stop();
    }
  });
});

describe("history store", () => {
  /** A store that counts its batches. */
  function counted(): { store: HistoryStore; writes: () => number; db: Database } {
    const db = new Database(":memory:");
    const inner = new SqliteHistory(db);
    let writes = 0;
    const store: HistoryStore = {
      totals: () => inner.totals(),
      write: (n, d, t) => (writes++, inner.write(n, d, t)),
      series: (g, s, st) => inner.series(g, s, st),
      prune: (n) => inner.prune(n),
      forget: (g, a) => inner.forget(g, a),
    };
    return { store, writes: () => writes, db };
  }

  test("one batch per flush whatever the traffic, none when nothing moved; minute and hour rows add up", () => {
    const metrics = new Metrics();
    const { store, writes, db } = counted();
    const h = new History(metrics, store, 3_600_000);
    const t0 = Date.UTC(2026, 11, 5, 10, 0, 0);
    h.flush(t0);
    expect(writes()).toBe(0);
    for (let i = 0; i < 10_000; i++) metrics.app("g", `a${i % 50}`).bytesIn += 10; // 10,000 "packets" on 50 apps
    h.flush(t0 + 1000);
    expect(writes()).toBe(1);
    h.flush(t0 + 2000);
    expect(writes()).toBe(1); // nothing moved
    metrics.app("g", "a0").bytesOut += 7;
    metrics.app("g", "a0").accepted += 1;
    h.flush(t0 + 61_000); // the next minute, the same hour
    expect(writes()).toBe(2);
    const minutes = h.series("g", "1h", t0 + 62_000).apps.find((a) => a.app === "a0")!.points;
    expect(minutes).toEqual([
      [t0 / 1000, 2000, 0, 0],
      [t0 / 1000 + 60, 0, 7, 1],
    ]);
    expect(h.series("g", "30d", t0 + 62_000).apps.find((a) => a.app === "a0")!.points).toEqual([[t0 / 1000, 2000, 7, 1]]);
    expect(db.query("SELECT COUNT(*) AS n FROM traffic_minute").get()).toEqual({ n: 51 });
  });

  test("rows past their retention are pruned: minutes after 24 h, hours after 90 days", () => {
    const { store, db } = counted();
    const now = 2_000_000_000;
    const d = (app: string) => [{ group: "g", app, bytesIn: 1, bytesOut: 1, connections: 1 }];
    store.write(now - HOUR_RETENTION_S - 7200, d("ancient"), []);
    store.write(now - MINUTE_RETENTION_S - 120, d("old"), []);
    store.write(now - 60, d("new"), []);
    store.prune(now);
    const apps = (table: string) => (db.query(`SELECT DISTINCT app FROM ${table} ORDER BY app`).all() as { app: string }[]).map((r) => r.app);
    expect(apps("traffic_minute")).toEqual(["new"]);
    expect(apps("traffic_hour")).toEqual(["new", "old"]);
  });

  test("a failed write is logged and its deltas are written by the next flush", () => {
    const metrics = new Metrics();
    const { store } = counted();
    let fail = true;
    const flaky: HistoryStore = { ...store, write: (n, d, t) => (fail ? (() => { throw new Error("disk full"); })() : store.write(n, d, t)) };
    const h = new History(metrics, flaky, 3_600_000);
    metrics.app("g", "a").bytesIn = 100;
    h.flush(1_000_000_000_000);
    fail = false;
    metrics.app("g", "a").bytesIn = 150;
    h.flush(1_000_000_001_000);
    expect(store.totals()).toEqual([["g", "a", expect.objectContaining({ bytesIn: 150 })]]);
    expect(store.series("g", 0, 60)[0]!.points.reduce((n, p) => n + p[1], 0)).toBe(150);
  });
});
