/**
 * Traffic history in the registry's SQLite database (lib/metrics/history.ts
 * decides what to write and when; this file only how it is stored).
 */
import type { Database } from "bun:sqlite";
import { HOUR_RETENTION_S, MINUTE_RETENTION_S, TOTAL_KEYS, type Delta, type HistoryStore, type Series, type Totals } from "../metrics/history.ts";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS app_totals (
  group_name TEXT NOT NULL,
  app TEXT NOT NULL,
  totals TEXT NOT NULL,
  PRIMARY KEY (group_name, app)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS traffic_minute (
  group_name TEXT NOT NULL, app TEXT NOT NULL, t INTEGER NOT NULL,
  bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL, connections INTEGER NOT NULL,
  PRIMARY KEY (group_name, t, app)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS traffic_hour (
  group_name TEXT NOT NULL, app TEXT NOT NULL, t INTEGER NOT NULL,
  bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL, connections INTEGER NOT NULL,
  PRIMARY KEY (group_name, t, app)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS traffic_minute_t ON traffic_minute (t);
CREATE INDEX IF NOT EXISTS traffic_hour_t ON traffic_hour (t);`;

type Row = { app: string; t: number; bytes_in: number; bytes_out: number; connections: number };

/** History tables beside the registry's. */
export class SqliteHistory implements HistoryStore {
  constructor(readonly db: Database) {
    db.exec(SCHEMA);
  }

  totals(): [string, string, Totals][] {
    const rows = this.db.query<{ group_name: string; app: string; totals: string }, []>("SELECT * FROM app_totals").all();
    return rows.map((r) => {
      const stored = JSON.parse(r.totals) as Partial<Totals>;
      const t = {} as Totals;
      // A total this version does not know yet starts at zero.
      for (const k of TOTAL_KEYS) t[k] = typeof stored[k] === "number" ? stored[k] : 0;
      return [r.group_name, r.app, t];
    });
  }

  write(nowS: number, deltas: readonly Delta[], totals: readonly [string, string, Totals][]): void {
    const add = (table: string) =>
      this.db.prepare(
        `INSERT INTO ${table} (group_name, app, t, bytes_in, bytes_out, connections) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (group_name, t, app) DO UPDATE SET bytes_in = bytes_in + excluded.bytes_in, bytes_out = bytes_out + excluded.bytes_out, connections = connections + excluded.connections`,
      );
    const minute = add("traffic_minute");
    const hour = add("traffic_hour");
    const total = this.db.prepare("INSERT INTO app_totals (group_name, app, totals) VALUES (?, ?, ?) ON CONFLICT (group_name, app) DO UPDATE SET totals = excluded.totals");
    const m = nowS - (nowS % 60);
    const h = nowS - (nowS % 3600);
    this.db.transaction(() => {
      for (const d of deltas) {
        minute.run(d.group, d.app, m, d.bytesIn, d.bytesOut, d.connections);
        hour.run(d.group, d.app, h, d.bytesIn, d.bytesOut, d.connections);
      }
      for (const [g, a, t] of totals) total.run(g, a, JSON.stringify(t));
    })();
  }

  series(group: string, sinceS: number, step: 60 | 3600): Series[] {
    const table = step === 60 ? "traffic_minute" : "traffic_hour";
    const rows = this.db.query<Row, [string, number]>(`SELECT app, t, bytes_in, bytes_out, connections FROM ${table} WHERE group_name = ? AND t >= ? ORDER BY t`).all(group, sinceS);
    const byApp = new Map<string, Series>();
    for (const r of rows) {
      let s = byApp.get(r.app);
      if (!s) byApp.set(r.app, (s = { app: r.app, points: [] }));
      s.points.push([r.t, r.bytes_in, r.bytes_out, r.connections]);
    }
    return [...byApp.values()];
  }

  prune(nowS: number): void {
    this.db.run("DELETE FROM traffic_minute WHERE t < ?", [nowS - MINUTE_RETENTION_S]);
    this.db.run("DELETE FROM traffic_hour WHERE t < ?", [nowS - HOUR_RETENTION_S]);
  }

  forget(group: string, app?: string): void {
    this.db.transaction(() => {
      for (const table of ["app_totals", "traffic_minute", "traffic_hour"]) {
        if (app === undefined) this.db.run(`DELETE FROM ${table} WHERE group_name = ?`, [group]);
        else this.db.run(`DELETE FROM ${table} WHERE group_name = ? AND app = ?`, [group, app]);
      }
    })();
  }
}
