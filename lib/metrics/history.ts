/**
 * Traffic history and totals that survive a restart. Every `flushMs` the
 * counters the relay keeps (counters.ts) are compared with the last sample and
 * the differences go to the store in one batch: per app per minute (kept 24 h),
 * per hour (kept 90 days) and the running totals. Nothing is written per packet
 * or per connection; a crash loses at most one interval.
 */
import { log } from "../log.ts";
import type { AppCounters, Metrics } from "./counters.ts";

/** Default time between two batches written to the store. */
export const HISTORY_FLUSH_MS = 10_000;
/** How long per-minute rows are kept. */
export const MINUTE_RETENTION_S = 24 * 3600;
/** How long per-hour rows are kept. */
export const HOUR_RETENTION_S = 90 * 24 * 3600;

/** The counters that are stored as totals and restored at start (live gauges such as `connections` are not). */
export const TOTAL_KEYS = ["bytesIn", "bytesOut", "accepted", "denied", "overLimit", "queueFull", "dropped", "kernelDropped", "requests", "datagramsIn", "datagramsOut"] as const;
export type TotalKey = (typeof TOTAL_KEYS)[number];
export type Totals = Record<TotalKey, number>;

/** One app's traffic in one step: bytes in from users, out to them, connections accepted. */
export interface Delta {
  readonly group: string;
  readonly app: string;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly connections: number;
}

/** The ranges GET /api/groups/:name/history serves, with the table and step each reads. */
export const RANGES = {
  "1h": { seconds: 3600, step: 60 },
  "24h": { seconds: 24 * 3600, step: 60 },
  "30d": { seconds: 30 * 24 * 3600, step: 3600 },
  "90d": { seconds: 90 * 24 * 3600, step: 3600 },
} as const;
export type HistoryRange = keyof typeof RANGES;

/** One app's series: [unix seconds at the start of the step, bytes in, bytes out, connections]; steps without traffic are left out. */
export interface Series {
  readonly app: string;
  readonly points: [t: number, bytesIn: number, bytesOut: number, connections: number][];
}

/** Where history is kept (sqlite-history.ts; later PostgreSQL). Synchronous: SQLite answers in microseconds. */
export interface HistoryStore {
  /** Every stored total, as [group, app, totals]. */
  totals(): [group: string, app: string, totals: Totals][];
  /** Writes one batch in one transaction: the deltas added into their minute and hour rows, and the new totals. */
  write(nowS: number, deltas: readonly Delta[], totals: readonly [string, string, Totals][]): void;
  /** The series of every app of `group` from `sinceS`, at `step` seconds (60: minute rows, 3600: hour rows). */
  series(group: string, sinceS: number, step: 60 | 3600): Series[];
  /** Deletes rows older than the retention. */
  prune(nowS: number): void;
  /** Forgets an app's history and totals, or a whole group's. */
  forget(group: string, app?: string): void;
}

const key = (group: string, app: string) => `${group}/${app}`;

/** Samples `metrics` into `store`. */
export class History {
  /** What was last written, per app: the base the next deltas are taken from. */
  readonly #written = new Map<string, Totals>();
  #timer: Timer | null = null;
  #lastPrune = 0;

  constructor(
    readonly metrics: Metrics,
    readonly store: HistoryStore,
    readonly flushMs = HISTORY_FLUSH_MS,
  ) {}

  /** Puts the stored totals back into the counters of the apps that still exist, forgets the others, and starts the timer. */
  start(exists: (group: string, app: string) => boolean): void {
    for (const [group, app, totals] of this.store.totals()) {
      if (!exists(group, app)) {
        this.store.forget(group, app);
        continue;
      }
      const c = this.metrics.app(group, app);
      for (const k of TOTAL_KEYS) c[k] += totals[k];
      this.#written.set(key(group, app), { ...totals });
    }
    this.#timer = setInterval(() => this.flush(), this.flushMs);
    this.#timer.unref();
  }

  /** Writes what changed since the last flush; errors are logged, and the deltas stay for the next try. */
  flush(now = Date.now()): void {
    const nowS = Math.floor(now / 1000);
    const deltas: Delta[] = [];
    const totals: [string, string, Totals][] = [];
    const next = new Map<string, Totals>();
    for (const [group, app, c] of this.metrics.entries()) {
      const k = key(group, app);
      const was = this.#written.get(k);
      if (was && TOTAL_KEYS.every((t) => c[t] === was[t])) continue;
      const t = snapshot(c);
      const d = { group, app, bytesIn: t.bytesIn - (was?.bytesIn ?? 0), bytesOut: t.bytesOut - (was?.bytesOut ?? 0), connections: t.accepted - (was?.accepted ?? 0) };
      if (d.bytesIn || d.bytesOut || d.connections) deltas.push(d);
      totals.push([group, app, t]);
      next.set(k, t);
    }
    try {
      if (deltas.length || totals.length) this.store.write(nowS, deltas, totals);
      for (const [k, t] of next) this.#written.set(k, t);
      if (nowS - this.#lastPrune >= 3600) {
        this.store.prune(nowS);
        this.#lastPrune = nowS;
      }
    } catch (err) {
      log.error("could not write traffic history", { error: (err as Error).message, apps: totals.length });
    }
  }

  /** The series of `group` over `range`, with what the counters hold beyond the last flush added to the current step. */
  series(group: string, range: HistoryRange, now = Date.now()): { range: HistoryRange; stepSeconds: number; apps: Series[] } {
    const { seconds, step } = RANGES[range];
    const nowS = Math.floor(now / 1000);
    const since = Math.floor((nowS - seconds) / step) * step + step;
    const apps = this.store.series(group, since, step);
    const current = Math.floor(nowS / step) * step;
    for (const app of this.metrics.appsOf(group)) {
      const c = this.metrics.peek(group, app)!;
      const was = this.#written.get(key(group, app));
      const d = [c.bytesIn - (was?.bytesIn ?? 0), c.bytesOut - (was?.bytesOut ?? 0), c.accepted - (was?.accepted ?? 0)] as const;
      if (!d[0] && !d[1] && !d[2]) continue;
      let s = apps.find((a) => a.app === app);
      if (!s) apps.push((s = { app, points: [] }));
      const last = s.points.at(-1);
      if (last && last[0] === current) (last[1] += d[0]), (last[2] += d[1]), (last[3] += d[2]);
      else s.points.push([current, d[0], d[1], d[2]]);
    }
    return { range, stepSeconds: step, apps: apps.sort((a, b) => a.app.localeCompare(b.app)) };
  }

  /** Forgets an app's (or a group's) history: it was removed. */
  forget(group: string, app?: string): void {
    if (app !== undefined) this.#written.delete(key(group, app));
    else for (const k of [...this.#written.keys()]) if (k.startsWith(`${group}/`)) this.#written.delete(k);
    try {
      this.store.forget(group, app);
    } catch (err) {
      log.error("could not delete traffic history", { group, app, error: (err as Error).message });
    }
  }

  /** Writes the last batch and stops the timer. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.flush();
  }
}

function snapshot(c: AppCounters): Totals {
  const t = {} as Totals;
  for (const k of TOTAL_KEYS) t[k] = c[k];
  return t;
}
