/**
 * The registry store on one machine: groups and their apps in bun:sqlite,
 * with every group and an index of every app's port in memory (plan.ts), so
 * that port checks stay O(1) with thousands of groups.
 */
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { privately, tighten, writeNew } from "../files.ts";
import { log } from "../log.ts";
import type { AppType } from "../../protocol.ts";
import type { PortSet } from "../ports.ts";
import type { DomainSpace } from "./domains.ts";
import { appFromRow, changeOf, configError, configLimits, groupFromRow, limitsJson, optionsJson, RegistryIndex } from "./plan.ts";
import type { PortSpace } from "./ports.ts";
import { ChangeFeed, type ChangeListener, type ConfigGroup, type RegistryStore } from "./store.ts";
import type { AppInput, AppRecord, GroupLimitsInput, GroupRecord, GroupSource, RegistryChange, RegistryError, RegistryResult } from "./types.ts";

import { SqliteHistory } from "./sqlite-history.ts";

export type { AppInput, AppRecord, GroupRecord, GroupSource, RegistryError, RegistryResult } from "./types.ts";

/** File name of the registry database inside dataDir. */
export const REGISTRY_FILE = "warren.db";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS groups (
  name TEXT PRIMARY KEY,
  token TEXT NOT NULL,
  source TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  limits TEXT NOT NULL DEFAULT '{}',
  disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS apps (
  group_name TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
  name TEXT NOT NULL,
  type TEXT NOT NULL,
  remote_port INTEGER NOT NULL,
  requested_port INTEGER NOT NULL,
  options TEXT NOT NULL DEFAULT '{}',
  PRIMARY KEY (group_name, name)
);`;

/** The registry in SQLite. */
export class SqliteStore implements RegistryStore, PortSpace, DomainSpace {
  #db: Database;
  readonly #changes = new ChangeFeed();
  /** Every group, and who holds each port and domain. */
  readonly #groups: RegistryIndex;

  /** Opens the registry in `dataDir` (creating the folder 0700 and the file 0600 when missing), or in memory for ":memory:". */
  static async open(dataDir: string, allow: PortSet, probe: (port: number) => boolean, reserved: ReadonlySet<number> = new Set(), subdomainHost: string | null = null): Promise<SqliteStore> {
    if (dataDir !== ":memory:") {
      const path = join(dataDir, REGISTRY_FILE);
      // An empty file is a valid empty SQLite database: writing one creates dataDir without node:fs (lib/files.ts).
      if (!(await Bun.file(path).exists())) await writeNew(path, "", { private: true });
      // Tokens live there: a database that others may read (restored from a backup, say) is made 0600.
      else if (await tighten(path)) log.warn("registry file was readable by others; made it 0600", { file: path });
    }
    return new SqliteStore(dataDir, allow, probe, reserved, subdomainHost);
  }

  /** Opens the registry in an existing `dataDir` (see `open`), or in memory for ":memory:". */
  constructor(
    dataDir: string,
    readonly allow: PortSet,
    readonly probe: (port: number) => boolean,
    readonly reserved: ReadonlySet<number> = new Set(),
    /** The server's subdomainHost (domains.ts). */
    readonly subdomainHost: string | null = null,
  ) {
    this.#groups = new RegistryIndex(allow, probe, reserved, subdomainHost);
    // Tokens live here: the database and its -wal and -shm files are created readable by the owner only.
    this.#db = privately(() => {
      const db = dataDir === ":memory:" ? new Database(":memory:", { strict: true }) : new Database(join(dataDir, REGISTRY_FILE), { create: true, strict: true });
      db.exec("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;");
      db.exec(SCHEMA);
      return db;
    });
    this.#migrate();
    this.#load();
    this.#warnLookalikes();
  }

  /** Adds columns that a registry written by an older version lacks. */
  #migrate(): void {
    const has = (table: string, col: string) => this.#db.query<{ name: string }, []>(`PRAGMA table_info(${table})`).all().some((c) => c.name === col);
    if (!has("groups", "limits")) this.#db.exec("ALTER TABLE groups ADD COLUMN limits TEXT NOT NULL DEFAULT '{}'");
    if (!has("groups", "disabled")) this.#db.exec("ALTER TABLE groups ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0");
    if (!has("apps", "options")) this.#db.exec("ALTER TABLE apps ADD COLUMN options TEXT NOT NULL DEFAULT '{}'");
    // Before HTTP apps, every app had a port of its own and the table said so; HTTP apps all have port 0, so
    // the table is rebuilt without that constraint (the in-memory index checks ports, as it always did).
    const apps = this.#db.query<{ sql: string }, []>("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'apps'").get();
    if (apps && /UNIQUE\s*\(type, remote_port\)/.test(apps.sql)) {
      this.#db.transaction(() => {
        this.#db.exec("ALTER TABLE apps RENAME TO apps_v1");
        this.#db.exec(SCHEMA);
        this.#db.exec("INSERT INTO apps (rowid, group_name, name, type, remote_port, requested_port, options) SELECT rowid, group_name, name, type, remote_port, requested_port, options FROM apps_v1 ORDER BY rowid");
        this.#db.exec("DROP TABLE apps_v1");
      })();
    }
  }

  #load(): void {
    const groups = this.#db.query<{ name: string; token: string; source: GroupSource; created_at: number; limits: string; disabled: number }, []>("SELECT * FROM groups").all();
    const apps = this.#db
      .query<{ group_name: string; name: string; type: AppType; remote_port: number; requested_port: number; options: string }, []>("SELECT * FROM apps ORDER BY rowid")
      .all();
    const appsOf = new Map<string, AppRecord[]>(groups.map((g) => [g.name, []]));
    for (const a of apps) appsOf.get(a.group_name)?.push(appFromRow({ name: a.name, type: a.type, remotePort: a.remote_port, requestedPort: a.requested_port, options: a.options }));
    for (const g of groups) {
      this.#groups.put(groupFromRow({ name: g.name, token: g.token, source: g.source, createdAt: g.created_at, limits: g.limits, disabled: g.disabled === 1 }, appsOf.get(g.name)!));
    }
  }

  /** Older versions allowed names that differ only in letter case: they still load (logins use the exact name), with a warning. */
  #warnLookalikes(): void {
    for (const names of this.#groups.lookalikes()) {
      log.warn("registry holds groups whose names differ only in letter case; new ones like them are refused", { groups: names.join(", ") });
    }
  }

  /** The group whose apps claim `domain` (DomainSpace). */
  domainOwner(domain: string): string | undefined {
    return this.#groups.domainOwner(domain);
  }

  /** Every group, in name order. */
  async list(): Promise<GroupRecord[]> {
    return this.#list();
  }

  #list(): GroupRecord[] {
    return this.#groups.list();
  }

  /** The group holding "type:port", if any (PortSpace). */
  owner(key: string): string | undefined {
    return this.#groups.owner(key);
  }

  /** The name of `group`'s app on "type:port" (PortSpace). */
  appAt(group: string, key: string): string | undefined {
    return this.#groups.appAt(group, key);
  }

  onChange(listener: ChangeListener): void {
    this.#changes.add(listener);
  }

  /** Announces a stored change; resolves once its listeners are done. */
  #announce(change: RegistryChange): Promise<void> {
    return this.#changes.emit(change);
  }

  async create(name: string, token: string, source: GroupSource, apps: readonly AppInput[], limits: GroupLimitsInput = {}): Promise<RegistryResult> {
    const res = this.#create(name, token, source, apps, limits);
    if (res.ok) await this.#announce({ kind: "created", group: res.group });
    return res;
  }

  #create(name: string, token: string, source: GroupSource, apps: readonly AppInput[], limits: GroupLimitsInput): RegistryResult {
    const res = this.#groups.planCreate(name, token, source, apps, limits);
    if (!res.ok) return res;
    const group = res.group;
    this.#db.transaction(() => {
      this.#db.run("INSERT INTO groups (name, token, source, created_at, limits) VALUES (?, ?, ?, ?, ?)", [name, token, source, group.createdAt, limitsJson(group)]);
      this.#insertApps(name, group.apps);
    })();
    this.#groups.put(group);
    return res;
  }

  async update(name: string, apps: readonly AppInput[], limits?: GroupLimitsInput): Promise<RegistryResult> {
    const res = this.#update(name, apps, undefined, limits);
    if (res.ok) await this.#announce({ kind: "updated", group: res.group });
    return res;
  }

  /** Replaces a group's apps (and its token and limits, when given); apps that asked for port 0 keep the port they had. */
  #update(name: string, apps: readonly AppInput[], token?: string, limits?: GroupLimitsInput): RegistryResult {
    const res = this.#groups.planUpdate(name, apps, token, limits);
    if (!res.ok) return res;
    const group = res.group;
    this.#db.transaction(() => {
      this.#db.run("UPDATE groups SET token = ?, limits = ? WHERE name = ?", [group.token, limitsJson(group), name]);
      this.#db.run("DELETE FROM apps WHERE group_name = ?", [name]);
      this.#insertApps(name, group.apps);
    })();
    this.#groups.put(group);
    return res;
  }

  async delete(name: string): Promise<boolean> {
    if (!this.#delete(name)) return false;
    await this.#announce({ kind: "deleted", name });
    return true;
  }

  #delete(name: string): boolean {
    if (!this.#groups.remove(name)) return false;
    this.#db.run("DELETE FROM groups WHERE name = ?", [name]);
    return true;
  }

  /** Makes the `config` groups equal to server.toml's `[[groups]]`; groups from other sources are untouched. Returns one error per group that could not be applied, its path naming the server.toml key. */
  async syncConfig(groups: readonly ConfigGroup[]): Promise<RegistryError[]> {
    const errors: RegistryError[] = [];
    const wanted = new Set(groups.map((g) => g.name));
    for (const g of this.#list()) if (g.source === "config" && !wanted.has(g.name)) await this.delete(g.name);
    for (const [i, g] of groups.entries()) {
      const existing = this.#groups.get(g.name);
      const limits = configLimits(g);
      const res = existing ? this.#update(g.name, g.apps, g.token, limits) : this.#create(g.name, g.token, "config", g.apps, limits);
      if (!res.ok) {
        errors.push(configError(i, res.error));
        continue;
      }
      if (existing && existing.source !== "config") this.#setSource(g.name, "config");
      // Announced only when something changed (plan.ts, changeOf).
      const change = changeOf(existing, this.#groups.get(g.name)!);
      if (change) await this.#announce(change);
    }
    return errors;
  }

  async setToken(name: string, token: string): Promise<boolean> {
    const old = this.#groups.get(name);
    if (!old) return false;
    this.#db.run("UPDATE groups SET token = ? WHERE name = ?", [token, name]);
    const group = { ...old, token };
    this.#groups.put(group);
    await this.#announce({ kind: "token", group });
    return true;
  }

  async setDisabled(name: string, disabled: boolean): Promise<GroupRecord | null> {
    const old = this.#groups.get(name);
    if (!old) return null;
    if (old.disabled === disabled) return old;
    this.#db.run("UPDATE groups SET disabled = ? WHERE name = ?", [disabled ? 1 : 0, name]);
    const group = { ...old, disabled };
    this.#groups.put(group);
    await this.#announce({ kind: "updated", group });
    return group;
  }

  #setSource(name: string, source: GroupSource): void {
    this.#db.run("UPDATE groups SET source = ? WHERE name = ?", [source, name]);
    this.#groups.put({ ...this.#groups.get(name)!, source });
  }

  #insertApps(group: string, apps: readonly AppRecord[]): void {
    const stmt = this.#db.prepare("INSERT INTO apps (group_name, name, type, remote_port, requested_port, options) VALUES (?, ?, ?, ?, ?, ?)");
    for (const a of apps) stmt.run(group, a.name, a.type, a.remotePort, a.requestedPort, optionsJson(a));
  }

  /** The traffic history, kept in the same database file. */
  history(): SqliteHistory {
    return new SqliteHistory(this.#db);
  }

  /** Closes the database. */
  close(): void {
    this.#db.close();
  }
}
