/**
 * The PostgreSQL registry store (lib/registry/postgres.ts) on a throwaway
 * cluster (tests/pg.ts): the same answers as the SQLite store for the same
 * calls, and several stores (one per server node) on one database: changes
 * announced across them, racing writes, concurrent migrations, and a database
 * that stops, hangs and comes back.
 */
import { afterAll, afterEach, beforeAll, describe, expect, spyOn, test } from "bun:test";
import { Database } from "bun:sqlite";
import { SQL } from "bun";
import * as v from "valibot";
import { ServerAppSchema } from "../lib/config/schema.ts";
import { setLogLevel, setLogSink } from "../lib/log.ts";
import { PortSet } from "../lib/ports.ts";
import { MIGRATIONS } from "../lib/registry/postgres-schema.ts";
import { PgStore, type PgStoreOptions } from "../lib/registry/postgres.ts";
import { SqliteHistory } from "../lib/registry/sqlite-history.ts";
import { SqliteStore } from "../lib/registry/sqlite.ts";
import type { RegistryStore } from "../lib/registry/store.ts";
import { RegistryError, type AppInput, type RegistryChange } from "../lib/registry/types.ts";
import { postgresMissing, startPostgres, type TestPostgres } from "./pg.ts";
import { TOKEN, until } from "./helpers.ts";

const missing = postgresMissing();
if (missing) console.warn(`tests/postgres-store.test.ts skipped: ${missing}`);
const suite = missing ? describe.skip : describe;

const ALLOW = PortSet.parse("20000-20019") as PortSet;
/** The stores' time limit here: short, so that the tests of a database that does not answer stay short. */
const TIMEOUT_MS = 1_500;
const logs: string[] = [];

let pg: TestPostgres;
let admin: SQL;
const stores: PgStore[] = [];
beforeAll(async () => {
  // Here, not at import: Bun runs every test file in one process, and another file may have changed both.
  setLogSink((l) => logs.push(l));
  setLogLevel("info");
  if (missing) return;
  pg = await startPostgres();
  admin = new SQL(pg.url, { max: 1 });
}, 60_000);
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
});
afterAll(async () => {
  await admin?.close();
  await pg?.stop();
  setLogSink(() => {});
});

let databases = 0;
/** A new, empty database on the cluster: its URL. */
async function freshDb(): Promise<string> {
  const name = `registry_${++databases}`;
  await admin.unsafe(`CREATE DATABASE ${name}`);
  return pg.url.replace(/\/[^/]*$/, `/${name}`);
}

/** A PgStore on `url`, closed after the test. */
async function pgStore(url: string, opts: Partial<PgStoreOptions> = {}): Promise<PgStore> {
  const s = await PgStore.open(url, { allow: ALLOW, probe: () => true, reserved: new Set([20010]), subdomainHost: "example.com", history: new SqliteHistory(new Database(":memory:")), timeoutMs: TIMEOUT_MS, ...opts });
  stores.push(s);
  return s;
}

/** Apps as the API's schema gives them (defaults filled in). */
const apps = (list: Record<string, unknown>[]): AppInput[] => list.map((a) => v.parse(ServerAppSchema, a));

/** Records every change a store announces. */
function recorder(store: RegistryStore): RegistryChange[] {
  const seen: RegistryChange[] = [];
  store.onChange((c) => void seen.push(c));
  return seen;
}

/** What a change says, in a line. */
const line = (c: RegistryChange) => (c.kind === "deleted" ? `deleted ${c.name}` : `${c.kind} ${c.group.name}`);

/** A fixed-seed generator for Math.random: both stores then pick the same "random" free ports. */
function seeded(seed: number): () => number {
  return () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
}

/** The same calls, on any store: every answer and every announcement in order, without creation times. */
async function script(store: RegistryStore): Promise<unknown> {
  const out: unknown[] = [];
  store.onChange((c) => void out.push(["announced", c]));
  const call = async (what: string, p: Promise<unknown>) => void out.push([what, await p]);
  await call("create", store.create("alpha", TOKEN, "api", apps([{ name: "ssh" }, { name: "web", remotePort: 0 }, { name: "db", remotePort: 20005 }])));
  await call("same name", store.create("alpha", TOKEN, "api", []));
  await call("same name but case", store.create("ALPHA", TOKEN, "api", []));
  await call("port of another", store.create("thief", TOKEN, "api", apps([{ name: "z" }, { name: "w", remotePort: 20005 }])));
  await call("port twice", store.create("twice", TOKEN, "api", apps([{ name: "a", remotePort: 20006 }, { name: "b", remotePort: 20006 }])));
  await call("outside allowPorts", store.create("out", TOKEN, "api", apps([{ name: "a", remotePort: 30000 }])));
  await call("the server's port", store.create("srv", TOKEN, "api", apps([{ name: "a", remotePort: 20010 }])));
  await call("maxApps", store.create("small", TOKEN, "client", apps([{ name: "a" }, { name: "b" }]), { maxApps: 1 }));
  await call("no free port", store.create("full", TOKEN, "api", apps([{ name: "a" }, { name: "b" }, { name: "c" }]), { allowPorts: "20008-20009" }));
  await call("udp beside tcp", store.create("udp", TOKEN, "client", apps([{ name: "u", type: "udp", remotePort: 20005 }]), { maxApps: 3, bandwidthLimit: "1MB" }));
  const web = { name: "site", type: "http", subdomain: "x", locations: ["/api"], requestHeaders: { set: { b: "2", a: "1" } }, httpUser: "u", httpPassword: "p" };
  await call("http apps", store.create("web1", TOKEN, "api", apps([web, { name: "tls", type: "https", customDomains: ["A.example.org"] }])));
  await call("domain of another", store.create("web2", TOKEN, "api", apps([{ name: "s", type: "http", customDomains: ["a.example.org"] }])));
  await call("update keeps ports", store.update("alpha", apps([{ name: "ssh" }, { name: "db" }, { name: "new" }])));
  await call("update missing", store.update("nope", []));
  await call("update over maxApps", store.update("alpha", apps([{ name: "ssh" }, { name: "db" }]), { maxApps: 1 }));
  await call("update limits", store.update("udp", apps([{ name: "u", type: "udp" }]), { maxApps: 2 }));
  await call("token", store.setToken("alpha", "another-token-0123456789"));
  await call("token missing", store.setToken("nope", "another-token-0123456789"));
  await call("disable", store.setDisabled("alpha", true));
  await call("disable again", store.setDisabled("alpha", true));
  await call("disable missing", store.setDisabled("nope", true));
  await call("delete", store.delete("udp"));
  await call("delete again", store.delete("udp"));
  const cfg = (token: string) => ({ name: "cfg", token, apps: apps([{ name: "a" }]), maxApps: 0 });
  const bad = { name: "bad", token: TOKEN, apps: apps([{ name: "x", remotePort: 30000 }]) };
  await call("sync", store.syncConfig([cfg(TOKEN), bad]));
  await call("sync unchanged", store.syncConfig([cfg(TOKEN), bad]));
  await call("sync takes over a group, new token", store.syncConfig([cfg("changed-token-0123456789"), { name: "alpha", token: TOKEN, apps: apps([{ name: "ssh" }]) }]));
  await call("sync empty", store.syncConfig([]));
  await call("list", store.list());
  return JSON.parse(JSON.stringify(out, (k, val) => (k === "createdAt" ? 0 : val instanceof RegistryError ? { code: val.code, message: val.message, path: val.path } : val)));
}

suite("the same answers as the SQLite store", () => {
  test("every call of a script: results, refusals (code, message, path) and announcements", async () => {
    const random = spyOn(Math, "random");
    try {
      random.mockImplementation(seeded(7));
      const sqlite = new SqliteStore(":memory:", ALLOW, () => true, new Set([20010]), "example.com");
      const expected = await script(sqlite);
      sqlite.close();
      random.mockImplementation(seeded(7));
      const got = await script(await pgStore(await freshDb()));
      expect(got).toEqual(expected);
      // The script does meet the refusals it is about.
      const codes = (expected as [string, unknown][]).flatMap(([, r]) => [r, ...(Array.isArray(r) ? r : [])]).map((r) => (r as { error?: { code: string } })?.error?.code ?? (r as { code?: string })?.code).filter(Boolean);
      expect(codes).toEqual(["name_taken", "name_taken", "port_taken", "port_taken", "port_not_allowed", "port_taken", "too_many_apps", "no_free_port", "domain_taken", "not_found", "too_many_apps", "port_not_allowed", "port_not_allowed"]);
    } finally {
      random.mockRestore();
    }
  });

  test("a store opened again reads back exactly what was written; history() is the one given", async () => {
    const url = await freshDb();
    const first = await pgStore(url);
    await first.create("g", TOKEN, "client", apps([{ name: "a", allowIPs: ["10.0.0.0/8"], maxConnections: 5, bandwidthLimit: "2MB" }, { name: "w", type: "http", subdomain: "w", requestHeaders: { set: { z: "1", a: "2" } } }]), { maxApps: 4, allowPorts: "20000-20004" });
    await first.setDisabled("g", true);
    const history = new SqliteHistory(new Database(":memory:"));
    const again = await pgStore(url, { history });
    expect(await again.list()).toEqual(await first.list());
    expect(again.history()).toBe(history);
  });

  test("a row written behind the store's back: the unique indexes refuse, as the checks would", async () => {
    const url = await freshDb();
    const store = await pgStore(url);
    const db = new SQL(url, { max: 1 });
    try {
      await db`INSERT INTO warren_groups (name, token, source, created_at, version) VALUES ('ghost', ${TOKEN}, 'api', 0, 0)`;
      await db`INSERT INTO warren_apps (group_name, position, name, type, remote_port, requested_port) VALUES ('ghost', 0, 'a', 'tcp', 20007, 20007)`;
      const same = await store.create("Ghost", TOKEN, "api", []);
      expect(same.ok ? null : same.error.code).toBe("name_taken");
      const port = await store.create("other", TOKEN, "api", apps([{ name: "a", remotePort: 20007 }]));
      expect(port.ok ? null : [port.error.code, port.error.message]).toEqual(["port_taken", expect.stringContaining("20007")]);
      // Nothing of either is left half-done, here or in memory.
      expect((await store.list()).map((g) => g.name)).toEqual([]);
      expect(await db`SELECT name FROM warren_groups ORDER BY name`).toEqual([{ name: "ghost" }]);
    } finally {
      await db.close();
    }
  });
});

suite("several servers on one database", () => {
  test("a change through one store is announced by the other within 1 s, once; the writer announces before its call resolves", async () => {
    const url = await freshDb();
    const a = await pgStore(url);
    const b = await pgStore(url);
    const byA = recorder(a);
    const byB = recorder(b);
    const steps: [string, PgStore, (s: PgStore) => Promise<unknown>][] = [
      ["created g", a, (s) => s.create("g", TOKEN, "api", apps([{ name: "x" }]))],
      ["updated g", a, (s) => s.update("g", apps([{ name: "x" }, { name: "y", type: "udp" }]))],
      ["token g", a, (s) => s.setToken("g", "new-token-0123456789abcd")],
      ["updated g", a, (s) => s.setDisabled("g", true)],
      ["created h", b, (s) => s.create("h", TOKEN, "client", [])],
      ["deleted g", a, (s) => s.delete("g")],
    ];
    for (const [i, [want, writer, run]] of steps.entries()) {
      const started = performance.now();
      await run(writer);
      expect((writer === a ? byA : byB).length).toBe(i + 1);
      await until(() => byA.length > i && byB.length > i, 1_000, `"${want}" announced by both stores`);
      expect(performance.now() - started).toBeLessThan(1_000);
    }
    await Bun.sleep(300); // each store's own NOTIFY has come back by now: nothing is announced twice
    expect(byA.map(line)).toEqual(steps.map(([want]) => want));
    expect(byB.map(line)).toEqual(steps.map(([want]) => want));
    expect(byB.find((c) => c.kind === "token")).toMatchObject({ group: { token: "new-token-0123456789abcd" } });
    expect(await b.list()).toEqual(await a.list());
  });

  test("racing writes: of two creates of one name (or a look-alike) exactly one wins; of two claims to one port, one; the other gets SQLite's refusal", async () => {
    const url = await freshDb();
    const a = await pgStore(url);
    const b = await pgStore(url);
    for (let round = 0; round < 5; round++) {
      const [x, y] = await Promise.all([a.create(`same${round}`, TOKEN, "api", []), b.create(round % 2 ? `SAME${round}` : `same${round}`, TOKEN, "api", [])]);
      expect([x.ok, y.ok].filter(Boolean)).toHaveLength(1);
      const lost = (x.ok ? y : x) as { ok: false; error: RegistryError };
      expect(lost.error.code).toBe("name_taken");
      expect(lost.error.path).toBe("name");
      expect(lost.error.message).toMatch(/^group "(same|SAME)\d" (already exists|differs from existing group "(same|SAME)\d" only in letter case; choose another name)$/);

      const port = 20000 + round;
      const [p, q] = await Promise.all([a.create(`pa${round}`, TOKEN, "api", apps([{ name: "one", remotePort: port }])), b.create(`pb${round}`, TOKEN, "api", apps([{ name: "two", remotePort: port }]))]);
      expect([p.ok, q.ok].filter(Boolean)).toHaveLength(1);
      const refused = (p.ok ? q : p) as { ok: false; error: RegistryError };
      expect([refused.error.code, refused.error.path, refused.error.message]).toEqual(["port_taken", "apps[0].remotePort", `tcp port ${port} is taken by ${p.ok ? `pa${round}/one` : `pb${round}/two`}`]);
    }
    // Ports chosen at once by two stores never collide either.
    const auto = await Promise.all([0, 1, 2, 3].map((i) => (i % 2 ? a : b).create(`auto${i}`, TOKEN, "api", apps([{ name: "p" }]))));
    const ports = auto.map((r) => (r.ok ? r.group.apps[0]!.remotePort : -1));
    expect(new Set(ports).size).toBe(4);
    await until(async () => JSON.stringify(await a.list()) === JSON.stringify(await b.list()), 1_000, "both stores to hold the same groups");
  });

  test("three servers that open a new database at once: one migrates, all work", async () => {
    const url = await freshDb();
    const [a, b, c] = await Promise.all([pgStore(url), pgStore(url), pgStore(url)]);
    const db = new SQL(url, { max: 1 });
    try {
      expect(await db`SELECT version FROM warren_schema_version`).toEqual([{ version: MIGRATIONS.length }]);
    } finally {
      await db.close();
    }
    const seen = recorder(c!);
    expect((await a!.create("g", TOKEN, "api", [])).ok).toBe(true);
    expect((await b!.create("G", TOKEN, "api", [])).ok).toBe(false);
    await until(() => seen.length === 1, 1_000, "the third store to announce the group");
  });
});

suite("a large server.toml", () => {
  test("3,000 config groups are written in one write within the time limit (rows batched, one NOTIFY), and another node announces every one; a second sync removes, changes and adds", async () => {
    const url = await freshDb();
    // The stores' time limit is TIMEOUT_MS (1.5 s): four statements per group, one at a time, did not fit it.
    const a = await pgStore(url);
    const b = await pgStore(url, { pollMs: 3_600_000 }); // only NOTIFY tells it
    const seen = recorder(b);
    const N = 3_000;
    const cfg = (i: number, sub = `g${i}`) => ({ name: `g${i}`, token: TOKEN, apps: apps([{ name: "web", type: "http", subdomain: sub }]) });
    const started = performance.now();
    expect(await a.syncConfig(Array.from({ length: N }, (_, i) => cfg(i)))).toEqual([]);
    console.log(`syncConfig of ${N} new groups: ${(performance.now() - started).toFixed(0)} ms`);
    await until(() => seen.length === N, 5_000, `b to announce ${N} groups (has ${seen.length})`);
    expect(new Set(seen.map(line)).size).toBe(N);
    expect(await b.list()).toEqual(await a.list());
    // Again: the first half gone, 100 changed (a new subdomain), 500 new.
    const next = [...Array.from({ length: N / 2 }, (_, i) => N / 2 + i).map((i) => (i < N / 2 + 100 ? cfg(i, `new${i}`) : cfg(i))), ...Array.from({ length: 500 }, (_, i) => cfg(N + i))];
    seen.length = 0;
    expect(await a.syncConfig(next)).toEqual([]);
    await until(() => seen.length === N / 2 + 100 + 500, 5_000, `b to announce the second sync (has ${seen.length})`);
    expect(seen.filter((c) => c.kind === "deleted").length).toBe(N / 2);
    expect(seen.filter((c) => c.kind === "updated").length).toBe(100);
    expect(seen.filter((c) => c.kind === "created").length).toBe(500);
    expect((await b.list()).length).toBe(N / 2 + 500);
    expect(await b.list()).toEqual(await a.list());
    // A third node starting now reads the same registry.
    const c = await pgStore(url);
    expect(await c.list()).toEqual(await a.list());
  }, 40_000);
});

suite("a database that goes away", () => {
  test("stopped: writes fail at once with `unavailable`, reads answer from memory; started again: a change missed meanwhile is announced", async () => {
    const url = await freshDb();
    const a = await pgStore(url);
    // No polling: only the re-LISTEN after Bun reconnects can tell b of what it missed.
    const b = await pgStore(url, { pollMs: 3_600_000 });
    await a.create("kept", TOKEN, "api", apps([{ name: "x" }]));
    await until(async () => (await b.list()).length === 1, 1_000, "b to hold the group");
    const seen = recorder(b);
    logs.length = 0;
    await pg.pause();
    try {
      for (const write of [() => a.create("new", TOKEN, "api", []), () => a.delete("kept"), () => b.setToken("kept", "another-token-0123456789")]) {
        const started = performance.now();
        const err = await write().then(() => null, (e: unknown) => e);
        expect(err).toBeInstanceOf(RegistryError);
        expect((err as RegistryError).code).toBe("unavailable");
        expect((err as RegistryError).message).toMatch(/^could not .*: the registry database \(PostgreSQL\) is unavailable \(.+\); try again later$/);
        expect(performance.now() - started).toBeLessThan(TIMEOUT_MS + 500);
      }
      expect((await a.list()).map((g) => g.name)).toEqual(["kept"]);
      expect((await b.list()).map((g) => g.name)).toEqual(["kept"]);
    } finally {
      await pg.resume();
    }
    // a writes as soon as the database answers, before b's LISTEN is back (Bun retries it with a backoff).
    await until(async () => (await a.create("while-away", TOKEN, "api", []).catch(() => ({ ok: false }))).ok, 10_000, "a write to succeed again");
    await until(() => seen.some((c) => c.kind === "created" && c.group.name === "while-away"), 20_000, "b to announce the group created while it was not listening");
    expect(seen.map(line)).toEqual(["created while-away"]);
    expect(logs.some((l) => l.includes("listening to the database again"))).toBe(true);
    expect(await b.list()).toEqual(await a.list());
  }, 40_000);

  test("a LISTEN connection that is cut: Bun listens again, and what was sent meanwhile is announced", async () => {
    const url = await freshDb();
    const a = await pgStore(url, { pollMs: 3_600_000 });
    const b = await pgStore(url, { pollMs: 3_600_000 });
    const seen = recorder(b);
    const db = new SQL(url, { max: 1 });
    try {
      logs.length = 0;
      await db`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'`;
      // At once: Bun has not listened again yet, so this NOTIFY is lost to b.
      await a.create("during", TOKEN, "api", []);
      await until(() => seen.length === 1, 5_000, "b to announce the group");
      expect(seen.map(line)).toEqual(["created during"]);
      await until(() => logs.filter((l) => l.includes("listening to the database again")).length === 2, 5_000, "both stores to listen again");
      await a.update("during", apps([{ name: "after" }]));
      await until(() => seen.length === 2, 1_000, "b to announce the next change as usual");
    } finally {
      await db.close();
    }
  }, 20_000);

  test("a database that hangs: a write fails with `unavailable` at the time limit and is not committed later; polling catches up after", async () => {
    const url = await freshDb();
    const a = await pgStore(url);
    const b = await pgStore(url, { pollMs: 300 });
    await a.create("before", TOKEN, "api", []);
    await until(async () => (await b.list()).length === 1, 1_000, "b to hold the group");
    const seen = recorder(b);
    pg.freeze();
    let err: unknown;
    const started = performance.now();
    try {
      err = await a.create("hung", TOKEN, "api", []).then(() => null, (e: unknown) => e);
      expect(performance.now() - started).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
      expect(performance.now() - started).toBeLessThan(TIMEOUT_MS + 1_000);
      expect((await a.list()).map((g) => g.name)).toEqual(["before"]);
    } finally {
      pg.thaw();
    }
    expect((err as RegistryError).code).toBe("unavailable");
    expect((err as RegistryError).message).toContain(`no answer within ${TIMEOUT_MS} ms`);
    // The transaction it started goes on once the database runs again, and rolls back.
    await Bun.sleep(1_000);
    const db = new SQL(url, { max: 1 });
    try {
      expect(await db`SELECT name FROM warren_groups ORDER BY name`).toEqual([{ name: "before" }]);
    } finally {
      await db.close();
    }
    expect((await a.create("hung", TOKEN, "api", [])).ok).toBe(true);
    await until(() => seen.length === 1, 2_000, "b to announce it");
    expect(seen.map(line)).toEqual(["created hung"]);
  }, 30_000);

  test("close() ends listening and the pool: no connection of the store is left", async () => {
    const url = await freshDb();
    const store = await pgStore(url);
    await store.create("g", TOKEN, "api", []);
    const count = async () => Number((await admin`SELECT count(*) AS n FROM pg_stat_activity WHERE datname = ${url.slice(url.lastIndexOf("/") + 1)} AND application_name = 'warren'`)[0].n);
    expect(await count()).toBeGreaterThan(0);
    await store.close();
    await until(async () => (await count()) === 0, 2_000, "the store's connections to close");
  });
});
