/**
 * The registry in PostgreSQL, for several servers as one (issue 20): the same
 * groups, ports and refusals as sqlite.ts (plan.ts decides for both), in
 * tables that every server node shares (postgres-schema.ts).
 *
 * Each node keeps every group in memory, as sqlite.ts does, and reads from
 * there. A write is one transaction: it locks the registry's change counter
 * (so that writes from all nodes take turns), reads the changes other nodes
 * committed since this node last looked, checks the request against that
 * up-to-date state, writes, and sends NOTIFY with the change's number. The
 * writer announces its change before the call resolves; the other nodes
 * LISTEN, re-read the groups that changed and announce the differences.
 * Every change has a number, so no node announces one twice (its own NOTIFY
 * included), and a node that missed some notices the gap.
 *
 * What Bun.SQL's `listen` does when its connection drops (Bun 1.4.5; see
 * tests/postgres-store.test.ts): it reconnects by itself, with a backoff that
 * grows to about 30 s while the server is down, runs LISTEN again and calls
 * `onlisten` again. Notifications sent while it was away are lost. So after
 * every `onlisten` but the first, the node re-reads every group and announces
 * the differences; and because the backoff can leave it deaf for up to ~30 s
 * after the database is back, it also polls the change counter (PG_POLL_MS).
 */
import { SQL } from "bun";
import { log } from "../log.ts";
import type { HistoryStore } from "../metrics/history.ts";
import type { PortSet } from "../ports.ts";
import { changeOf, changesBetween, configError, configLimits, limitsJson, optionsJson, RegistryIndex } from "./plan.ts";
import { CHANNEL, fetchChanges, migrate, uniqueViolation, unreachable, type ChangeNote, type Snapshot } from "./postgres-schema.ts";
import { ChangeFeed, type ChangeListener, type ConfigGroup, type RegistryStore } from "./store.ts";
import { RegistryError, type AppInput, type GroupLimitsInput, type GroupRecord, type GroupSource, type RegistryChange, type RegistryResult } from "./types.ts";

/** Longest wait for the database in one operation: an API call waits on it, and should get a 503 rather than hang. */
export const PG_TIMEOUT_MS = 5_000;
/**
 * How often a node asks whether it missed a change: bounds how stale it can be while LISTEN is reconnecting
 * (Bun's backoff reaches ~30 s, and notifications sent meanwhile are lost), at one small read-only transaction
 * per node and second. A change reaches every node within 1 s, as promised, even then.
 */
export const PG_POLL_MS = 1_000;
/** How often a node that lost the database asks again: once it answers, changes made meanwhile reach this node within this, not at the next poll. */
export const PG_RETRY_MS = 500;
/** Connections per node, beside the one for LISTEN: writes take turns anyway, and every node shares the server's max_connections (100 by default). */
export const PG_POOL_MAX = 4;
/** Rows of warren_changes kept: a node further behind than that re-reads every group. */
const CHANGE_LOG_KEEP = 1_000;
/** Apps inserted per statement: 7 parameters each, and PostgreSQL takes at most 65,535 (a group may have 10,000 apps). */
const APPS_PER_INSERT = 1_000;
/** How a PgStore is set up. */
export interface PgStoreOptions {
  /** The server's allowPorts. */
  readonly allow: PortSet;
  /** Whether a TCP port can be bound now, on this node. */
  readonly probe: (port: number) => boolean;
  /** The server's own ports. */
  readonly reserved?: ReadonlySet<number>;
  /** The server's subdomainHost (domains.ts). */
  readonly subdomainHost?: string | null;
  /**
   * Where this node keeps its traffic history, for now its own SQLite file
   * (`SqliteStore.history()`): HistoryStore is synchronous, which a database
   * on another machine cannot be. Shared history is a later step of issue 20.
   */
  readonly history: HistoryStore;
  /** PG_TIMEOUT_MS */
  readonly timeoutMs?: number;
  /** PG_POLL_MS */
  readonly pollMs?: number;
  /** PG_POOL_MAX */
  readonly poolMax?: number;
}

/** One operation's time limit. Once it has passed, the caller has been told the operation failed, so it must not touch the groups in memory any more. */
class Deadline {
  passed = false;
  /** Throws once the time is up. */
  check(): void {
    if (this.passed) throw new Error("the time for this operation is up");
  }
}

/** One write in progress. */
interface Write {
  readonly tx: SQL;
  readonly deadline: Deadline;
  /** The last change number taken. */
  seq: number;
  /** Groups as they were before this write changed them, put back if it fails. */
  readonly undo: [name: string, before: GroupRecord | undefined][];
  /** Its changes, announced once committed. */
  readonly changes: RegistryChange[];
  /**
   * Rows kept for a few multi-row statements at the end (syncConfig): new groups, their apps and the change log,
   * announced by one NOTIFY of the last change (a node that hears it reads every change since its last). Four
   * statements per group, one at a time, could not write a server.toml of 10,000 groups within PG_TIMEOUT_MS.
   */
  batch?: { groups: Record<string, unknown>[]; apps: Record<string, unknown>[]; changes: Record<string, unknown>[]; last: ChangeNote | null };
}

/** Rows per multi-row INSERT of a batch (7 columns a group row: far under PostgreSQL's 65,535 parameters). */
const ROWS_PER_INSERT = 1_000;

/** The registry in PostgreSQL, shared by several server nodes. */
export class PgStore implements RegistryStore {
  readonly #sql: SQL;
  readonly #groups: RegistryIndex;
  readonly #changes = new ChangeFeed();
  readonly #history: HistoryStore;
  readonly #timeoutMs: number;
  /** The number of the last change that the groups in memory (and the announcements so far) include. */
  #seen = 0;
  /** Writes, catch-ups and announcements run one at a time, in order. */
  #queue: Promise<unknown> = Promise.resolve();
  #subscription: SQL.ListenSubscription | null = null;
  #listens = 0;
  #poll: Timer | undefined;
  #retry: Timer | undefined;
  #refreshQueued = false;
  #wantFull = false;
  #reachable = true;
  #closed = false;

  /** Connects to `url` (postgres://user:password@host:port/db), creates or migrates the tables, reads every group and starts listening. */
  static async open(url: string, opts: PgStoreOptions): Promise<PgStore> {
    const timeoutMs = opts.timeoutMs ?? PG_TIMEOUT_MS;
    const sql = new SQL(url, {
      max: opts.poolMax ?? PG_POOL_MAX,
      connectionTimeout: Math.ceil(timeoutMs / 1000),
      // The server ends what the client's timer gave up on: a statement, a wait for the registry's lock, a
      // transaction left open by a node that went away.
      connection: { application_name: "warren", statement_timeout: timeoutMs, lock_timeout: timeoutMs, idle_in_transaction_session_timeout: 2 * timeoutMs },
    });
    const store = new PgStore(sql, opts, timeoutMs);
    try {
      await store.#timed("prepare the registry's tables", () => migrate(sql));
      // LISTEN before the first read: every change is then either in that read or notified after it.
      store.#subscription = await store.#timed("listen for registry changes", () => sql.listen(CHANNEL, (p) => store.#onNotify(p), () => store.#onListen()));
      await store.#serial(async () => void store.#apply(await store.#read(null)));
    } catch (err) {
      await store.close();
      throw err;
    }
    store.#poll = setInterval(() => store.#refresh(false), opts.pollMs ?? PG_POLL_MS);
    store.#poll.unref();
    return store;
  }

  private constructor(sql: SQL, opts: PgStoreOptions, timeoutMs: number) {
    this.#sql = sql;
    this.#groups = new RegistryIndex(opts.allow, opts.probe, opts.reserved ?? new Set(), opts.subdomainHost ?? null);
    this.#history = opts.history;
    this.#timeoutMs = timeoutMs;
  }

  /** The server's allowPorts, as sqlite.ts exposes it (reload.ts checks a new server.toml against these three). */
  get allow(): PortSet {
    return this.#groups.allow;
  }

  /** The server's own ports. */
  get reserved(): ReadonlySet<number> {
    return this.#groups.reserved;
  }

  /** The server's subdomainHost. */
  get subdomainHost(): string | null {
    return this.#groups.subdomainHost;
  }

  /** Every group, in name order, from memory: answers while the database is away. */
  async list(): Promise<GroupRecord[]> {
    return this.#groups.list();
  }

  onChange(listener: ChangeListener): void {
    this.#changes.add(listener);
  }

  async create(name: string, token: string, source: GroupSource, apps: readonly AppInput[], limits: GroupLimitsInput = {}): Promise<RegistryResult> {
    return this.#refusal(
      this.#write(`create group "${name}"`, async (w) => {
        const res = this.#groups.planCreate(name, token, source, apps, limits);
        if (res.ok) await this.#save(w, res.group, "created");
        return res;
      }),
    );
  }

  async update(name: string, apps: readonly AppInput[], limits?: GroupLimitsInput): Promise<RegistryResult> {
    return this.#refusal(
      this.#write(`update group "${name}"`, async (w) => {
        const res = this.#groups.planUpdate(name, apps, undefined, limits);
        if (res.ok) await this.#save(w, res.group, "updated");
        return res;
      }),
    );
  }

  async setToken(name: string, token: string): Promise<boolean> {
    return this.#write(`change the token of group "${name}"`, async (w) => {
      const old = this.#groups.get(name);
      if (old) await this.#save(w, { ...old, token }, "token");
      return !!old;
    });
  }

  async delete(name: string): Promise<boolean> {
    return this.#write(`delete group "${name}"`, async (w) => {
      const found = !!this.#groups.get(name);
      if (found) await this.#drop(w, name);
      return found;
    });
  }

  async setDisabled(name: string, disabled: boolean): Promise<GroupRecord | null> {
    return this.#write(`${disabled ? "disable" : "enable"} group "${name}"`, async (w) => {
      const old = this.#groups.get(name);
      if (!old || old.disabled === disabled) return old ?? null;
      const group = { ...old, disabled };
      await this.#save(w, group, "updated");
      return group;
    });
  }

  /** As sqlite.ts's, in one transaction; a group that would not change is not written (every node runs this at its start). */
  async syncConfig(groups: readonly ConfigGroup[]): Promise<RegistryError[]> {
    return this.#write("apply server.toml's groups", async (w) => {
      w.batch = { groups: [], apps: [], changes: [], last: null };
      const errors: RegistryError[] = [];
      const wanted = new Set(groups.map((g) => g.name));
      for (const g of this.#groups.list()) if (g.source === "config" && !wanted.has(g.name)) await this.#drop(w, g.name);
      for (const [i, g] of groups.entries()) {
        const existing = this.#groups.get(g.name);
        const res = existing ? this.#groups.planUpdate(g.name, g.apps, g.token, configLimits(g)) : this.#groups.planCreate(g.name, g.token, "config", g.apps, configLimits(g));
        if (!res.ok) {
          errors.push(configError(i, res.error));
          continue;
        }
        const group: GroupRecord = { ...res.group, source: "config" };
        const change = changeOf(existing, group);
        if (change && change.kind !== "deleted") await this.#save(w, group, change.kind);
      }
      await this.#flush(w);
      return errors;
    });
  }

  /** The node's own traffic history (PgStoreOptions.history). */
  history(): HistoryStore {
    return this.#history;
  }

  /** Stops listening and polling and closes the connections; writes still running fail. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#poll);
    clearInterval(this.#retry);
    const sub = this.#subscription;
    if (sub) await Promise.race([sub.unlisten().catch(() => {}), Bun.sleep(this.#timeoutMs)]);
    await this.#sql.close({ timeout: 1 }).catch(() => {});
  }

  /** Runs `fn` after everything queued before it. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Runs `fn` within the time limit; a database that cannot be reached, or is too slow, becomes RegistryError `unavailable`. */
  async #timed<T>(what: string, fn: (deadline: Deadline) => Promise<T>): Promise<T> {
    const deadline = new Deadline();
    let timer: Timer | undefined;
    const work = fn(deadline);
    work.catch(() => {}); // it may still fail once nobody waits for it
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        deadline.passed = true;
        reject(new Error(`no answer within ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
    });
    try {
      return await Promise.race([work, late]);
    } catch (err) {
      throw deadline.passed || unreachable(err) ? unavailable(what, err) : uniqueViolation(what, err);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads what changed since change `since` (null: every group), in one snapshot. */
  #read(since: number | null): Promise<Snapshot> {
    return this.#timed("read the registry", () => this.#sql.begin("isolation level repeatable read read only", (tx) => fetchChanges(tx, since)));
  }

  /** Makes the groups in memory those of `snap`; returns the changes that makes, to announce. */
  #apply(snap: Snapshot): RegistryChange[] {
    const names = snap.names ?? [...new Set([...this.#groups.names(), ...snap.groups.keys()])];
    const out: RegistryChange[] = [];
    for (const name of names) {
      const after = snap.groups.get(name);
      out.push(...changesBetween(this.#groups.get(name), after));
      if (after) this.#groups.put(after);
      else this.#groups.remove(name);
    }
    this.#seen = snap.seq;
    return out;
  }

  /** Delivers changes to the listeners, in order. */
  async #announce(changes: readonly RegistryChange[]): Promise<void> {
    for (const c of changes) await this.#changes.emit(c);
  }

  /**
   * One write: `body` plans against the groups as committed by every node
   * (this transaction holds the lock, so they cannot change meanwhile), and
   * stores with #save and #drop. Changes by other nodes found on the way are
   * announced first, then this write's, before the call resolves.
   */
  #write<T>(what: string, body: (w: Write) => Promise<T>): Promise<T> {
    return this.#serial(async () => {
      const state: { w?: Write; found: RegistryChange[] } = { found: [] };
      let out: T;
      try {
        out = await this.#timed(what, (deadline) =>
          this.#sql.begin(async (tx) => {
            const [row] = (await tx`SELECT seq FROM warren_registry_state WHERE id = 1 FOR UPDATE`) as { seq: string }[];
            const seq = Number(row!.seq);
            const snap = await fetchChanges(tx, this.#seen, seq);
            deadline.check();
            state.found = this.#apply(snap);
            const w: Write = (state.w = { tx, deadline, seq, undo: [], changes: [] });
            const res = await body(w);
            if (w.seq > seq) {
              await tx`UPDATE warren_registry_state SET seq = ${w.seq} WHERE id = 1`;
              await tx`DELETE FROM warren_changes WHERE seq <= ${w.seq - CHANGE_LOG_KEEP}`;
            }
            // The last moment to give up: a write whose caller was told it failed must not be committed.
            deadline.check();
            return res;
          }),
        );
      } catch (err) {
        // Not committed (or not known to be: then the next catch-up finds it). Other nodes' changes stay.
        for (const [name, before] of (state.w?.undo ?? []).reverse()) before ? this.#groups.put(before) : this.#groups.remove(name);
        await this.#announce(state.found).catch((e) => log.error("registry listener failed", { error: (e as Error).message }));
        throw err;
      }
      this.#seen = state.w!.seq;
      await this.#announce([...state.found, ...state.w!.changes]);
      return out;
    });
  }

  /** A unique index refused what the checks in memory allowed (the database was changed behind the registry's back): a refusal, as the checks would give. */
  async #refusal(p: Promise<RegistryResult>): Promise<RegistryResult> {
    try {
      return await p;
    } catch (err) {
      if (err instanceof RegistryError && err.code !== "unavailable") return { ok: false, error: err };
      throw err;
    }
  }

  /** Stores `group` within write `w`, to be announced as `kind`. */
  async #save(w: Write, group: GroupRecord, kind: "created" | "updated" | "token"): Promise<void> {
    w.deadline.check();
    const old = this.#groups.get(group.name);
    w.undo.push([group.name, old]);
    // At once, so that the next group of the same write (syncConfig) is checked against this one.
    this.#groups.put(group);
    const seq = ++w.seq;
    const { tx } = w;
    const rows = () => group.apps.map((a, i) => ({ group_name: group.name, position: i, name: a.name, type: a.type, remote_port: a.remotePort, requested_port: a.requestedPort, options: optionsJson(a) }));
    if (!old && w.batch) {
      w.batch.groups.push({ name: group.name, token: group.token, source: group.source, created_at: group.createdAt, limits: limitsJson(group), disabled: group.disabled, version: seq });
      w.batch.apps.push(...rows());
      await this.#note(w, seq, kind, group.name);
      w.changes.push({ kind, group });
      return;
    }
    // A plain INSERT for a new group: a row this node did not know of is then a unique violation, not overwritten.
    if (!old) {
      await tx`INSERT INTO warren_groups (name, token, source, created_at, limits, disabled, version)
        VALUES (${group.name}, ${group.token}, ${group.source}, ${group.createdAt}, ${limitsJson(group)}, ${group.disabled}, ${seq})`;
    } else {
      await tx`UPDATE warren_groups SET token = ${group.token}, source = ${group.source}, limits = ${limitsJson(group)}, disabled = ${group.disabled}, version = ${seq} WHERE name = ${group.name}`;
    }
    if (old?.apps !== group.apps) {
      if (old) await tx`DELETE FROM warren_apps WHERE group_name = ${group.name}`;
      const apps = rows();
      for (let i = 0; i < apps.length; i += APPS_PER_INSERT) await tx`INSERT INTO warren_apps ${tx(apps.slice(i, i + APPS_PER_INSERT))}`;
    }
    await this.#note(w, seq, kind, group.name);
    w.changes.push({ kind, group });
  }

  /** Deletes group `name` within write `w`. */
  async #drop(w: Write, name: string): Promise<void> {
    w.deadline.check();
    w.undo.push([name, this.#groups.get(name)]);
    this.#groups.remove(name);
    const seq = ++w.seq;
    await w.tx`DELETE FROM warren_groups WHERE name = ${name}`;
    await this.#note(w, seq, "deleted", name);
    w.changes.push({ kind: "deleted", name });
  }

  /** Logs change `seq` and announces it to every node: NOTIFY is sent at commit, and not at all on rollback. */
  async #note(w: Write, seq: number, kind: ChangeNote["kind"], name: string): Promise<void> {
    if (w.batch) {
      w.batch.changes.push({ seq, group_name: name, kind });
      w.batch.last = { kind, name, version: seq };
      return;
    }
    await w.tx`INSERT INTO warren_changes (seq, group_name, kind) VALUES (${seq}, ${name}, ${kind})`;
    await w.tx`SELECT pg_notify(${CHANNEL}, ${JSON.stringify({ kind, name, version: seq } satisfies ChangeNote)})`;
  }

  /** Writes a batch's rows (groups before their apps, then the change log) and sends one NOTIFY for all of it. */
  async #flush(w: Write): Promise<void> {
    const b = w.batch;
    if (!b) return;
    w.batch = undefined;
    const { tx } = w;
    for (const [table, rows] of [["warren_groups", b.groups], ["warren_apps", b.apps], ["warren_changes", b.changes]] as const) {
      for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) {
        w.deadline.check();
        await tx`INSERT INTO ${tx(table)} ${tx(rows.slice(i, i + ROWS_PER_INSERT))}`;
      }
    }
    if (b.last) await tx`SELECT pg_notify(${CHANNEL}, ${JSON.stringify(b.last satisfies ChangeNote)})`;
  }

  /** A NOTIFY from any node, this one included: a change already known by its number is ignored. */
  #onNotify(payload: string): void {
    let version = NaN;
    try {
      version = Number((JSON.parse(payload) as ChangeNote).version);
    } catch {}
    if (version <= this.#seen) return;
    this.#refresh(false);
  }

  /** LISTEN acknowledged: at the start, and again after Bun reconnected, when notifications may have been lost. */
  #onListen(): void {
    if (this.#listens++ === 0) return;
    log.info("registry: listening to the database again; re-reading every group");
    this.#refresh(true);
  }

  /** Schedules a catch-up (`full`: a re-read of every group) after what runs now; calls made meanwhile share it. */
  #refresh(full: boolean): void {
    if (this.#closed) return;
    this.#wantFull ||= full;
    if (this.#refreshQueued) return;
    this.#refreshQueued = true;
    void this.#serial(async () => {
      this.#refreshQueued = false;
      const all = this.#wantFull;
      this.#wantFull = false;
      let found: RegistryChange[];
      try {
        found = this.#apply(await this.#read(all ? null : this.#seen));
      } catch (err) {
        this.#wantFull ||= all; // again at the next poll
        this.#health(err);
        return;
      }
      this.#health(null);
      await this.#announce(found).catch((e) => log.error("registry listener failed", { error: (e as Error).message }));
    });
  }

  /** Logs when the database stops or starts answering the background reads, once each way. */
  #health(err: unknown): void {
    if (err && this.#reachable) {
      log.warn("registry database unavailable: groups stay as last read, changes fail until it answers", { error: (err as Error).message });
      // Asked again often while it is away (LISTEN's own reconnect backs off to ~30 s, and the poll is slow).
      if (!this.#closed) {
        this.#retry = setInterval(() => this.#refresh(false), PG_RETRY_MS);
        this.#retry.unref();
      }
    }
    if (!err && !this.#reachable) {
      log.info("registry database answers again");
      clearInterval(this.#retry);
      this.#retry = undefined;
    }
    this.#reachable = !err;
  }
}

/** The error a write gets when the database is away: clear, and retryable. */
function unavailable(what: string, cause: unknown): RegistryError {
  return new RegistryError("unavailable", `could not ${what}: the registry database (PostgreSQL) is unavailable (${(cause as Error)?.message ?? cause}); try again later`, undefined, { cause });
}
