/**
 * The registry: groups and their apps, persisted in bun:sqlite and mirrored
 * in memory for lookups at login. An app asking for port 0 is given a free
 * port from `allowPorts` once, and keeps it.
 */
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { privately, tighten, writeNew } from "./files.ts";
import { log } from "./log.ts";
import type { AppType } from "../protocol.ts";
import { PortSet } from "./ports.ts";
import { WarrenError } from "./errors.ts";

/** Where a group came from: `config` groups are synced with server.toml at every start. */
export type GroupSource = "config" | "api" | "client";

/** An app as stored. */
export interface AppRecord {
  readonly name: string;
  readonly type: AppType;
  /** The public port the app is served on. */
  readonly remotePort: number;
  /** The port that was asked for; 0 when the registry chose `remotePort`. */
  readonly requestedPort: number;
  readonly allowIPs: readonly string[];
  readonly denyIPs: readonly string[];
  /** Most users at once; 0 means no limit. */
  readonly maxConnections: number;
}

/** A group as stored. */
export interface GroupRecord {
  readonly name: string;
  readonly token: string;
  readonly source: GroupSource;
  readonly createdAt: number;
  /** Most apps; 0 means no limit. */
  readonly maxApps: number;
  /** The group's own port range within the server's, or null. */
  readonly allowPorts: string | null;
  readonly apps: readonly AppRecord[];
}

/** Limits of a group, as asked for. */
export interface GroupLimitsInput {
  readonly maxApps?: number;
  readonly allowPorts?: string;
}

/** An app as asked for by config, API or a client. */
export interface AppInput {
  readonly name: string;
  readonly type: AppType;
  readonly remotePort: number;
  readonly allowIPs?: readonly string[];
  readonly denyIPs?: readonly string[];
  readonly maxConnections?: number;
}

/** Why a registry change was refused. */
export type RegistryErrorCode = "name_taken" | "port_taken" | "port_not_allowed" | "no_free_port" | "not_found" | "too_many_apps";

/** A registry change refused; `path` names the offending field of the request (or of server.toml). */
export class RegistryError extends WarrenError<RegistryErrorCode> {
  override readonly name = "RegistryError";
}

/** Result of a registry change. */
export type RegistryResult = { readonly ok: true; readonly group: GroupRecord } | { readonly ok: false; readonly error: RegistryError };

/** File name of the registry database inside dataDir. */
export const REGISTRY_FILE = "warren.db";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS groups (
  name TEXT PRIMARY KEY,
  token TEXT NOT NULL,
  source TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  limits TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS apps (
  group_name TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
  name TEXT NOT NULL,
  type TEXT NOT NULL,
  remote_port INTEGER NOT NULL,
  requested_port INTEGER NOT NULL,
  options TEXT NOT NULL DEFAULT '{}',
  PRIMARY KEY (group_name, name),
  UNIQUE (type, remote_port)
);`;

function limitsJson(g: GroupRecord): string {
  return JSON.stringify({ maxApps: g.maxApps, allowPorts: g.allowPorts ?? undefined });
}

/** The group registry. */
export class Registry {
  #db: Database;
  #groups = new Map<string, GroupRecord>();
  /** "type:port" -> owning group, for every app: port checks stay O(1) with thousands of groups. */
  #owners = new Map<string, string>();

  /** Opens the registry in `dataDir` (creating the folder 0700 and the file 0600 when missing), or in memory for ":memory:". */
  static async open(dataDir: string, allow: PortSet, probe: (port: number) => boolean, reserved: ReadonlySet<number> = new Set()): Promise<Registry> {
    if (dataDir !== ":memory:") {
      const path = join(dataDir, REGISTRY_FILE);
      // An empty file is a valid empty SQLite database: writing one creates dataDir without node:fs (lib/files.ts).
      if (!(await Bun.file(path).exists())) await writeNew(path, "", { private: true });
      // Tokens live there: a database that others may read (restored from a backup, say) is made 0600.
      else if (await tighten(path)) log.warn("registry file was readable by others; made it 0600", { file: path });
    }
    return new Registry(dataDir, allow, probe, reserved);
  }

  /** Opens the registry in an existing `dataDir` (see `open`), or in memory for ":memory:". */
  constructor(
    dataDir: string,
    private readonly allow: PortSet,
    private readonly probe: (port: number) => boolean,
    private readonly reserved: ReadonlySet<number> = new Set(),
  ) {
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
    if (!has("apps", "options")) this.#db.exec("ALTER TABLE apps ADD COLUMN options TEXT NOT NULL DEFAULT '{}'");
  }

  #load(): void {
    const groups = this.#db.query<{ name: string; token: string; source: GroupSource; created_at: number; limits: string }, []>("SELECT * FROM groups").all();
    const apps = this.#db
      .query<{ group_name: string; name: string; type: AppType; remote_port: number; requested_port: number; options: string }, []>("SELECT * FROM apps ORDER BY rowid")
      .all();
    for (const g of groups) {
      const limits = JSON.parse(g.limits) as GroupLimitsInput;
      this.#groups.set(g.name, { name: g.name, token: g.token, source: g.source, createdAt: g.created_at, maxApps: limits.maxApps ?? 0, allowPorts: limits.allowPorts ?? null, apps: [] });
    }
    for (const a of apps) {
      const g = this.#groups.get(a.group_name);
      const o = JSON.parse(a.options) as Partial<AppRecord>;
      if (g) this.#owners.set(`${a.type}:${a.remote_port}`, g.name);
      if (g) {
        (g.apps as AppRecord[]).push({
          name: a.name,
          type: a.type,
          remotePort: a.remote_port,
          requestedPort: a.requested_port,
          allowIPs: o.allowIPs ?? [],
          denyIPs: o.denyIPs ?? [],
          maxConnections: o.maxConnections ?? 0,
        });
      }
    }
  }

  /** Older versions allowed names that differ only in letter case: they still load (logins use the exact name), with a warning. */
  #warnLookalikes(): void {
    const byFold = new Map<string, string[]>();
    for (const name of this.#groups.keys()) {
      const k = name.toLowerCase();
      byFold.set(k, [...(byFold.get(k) ?? []), name]);
    }
    for (const names of byFold.values()) {
      if (names.length > 1) log.warn("registry holds groups whose names differ only in letter case; new ones like them are refused", { groups: names.join(", ") });
    }
  }

  #index(g: GroupRecord, add: boolean): void {
    for (const a of g.apps) {
      const k = `${a.type}:${a.remotePort}`;
      if (add) this.#owners.set(k, g.name);
      else if (this.#owners.get(k) === g.name) this.#owners.delete(k);
    }
  }

  /** An existing group whose name equals `name` ignoring letter case. */
  #lookalike(name: string): string | undefined {
    const folded = name.toLowerCase();
    for (const other of this.#groups.keys()) if (other.toLowerCase() === folded) return other;
    return undefined;
  }

  /** Groups created by `source`. */
  countBy(source: GroupSource): number {
    let n = 0;
    for (const g of this.#groups.values()) if (g.source === source) n++;
    return n;
  }

  /** Every group, in name order. */
  list(): GroupRecord[] {
    return [...this.#groups.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** One group, or undefined. */
  get(name: string): GroupRecord | undefined {
    return this.#groups.get(name);
  }

  /** Registers a new group; fails when the name or a port is taken. */
  create(name: string, token: string, source: GroupSource, apps: readonly AppInput[], limits: GroupLimitsInput = {}): RegistryResult {
    if (this.#groups.has(name)) return { ok: false, error: new RegistryError("name_taken", `group "${name}" already exists`, "name") };
    const like = this.#lookalike(name);
    if (like) return { ok: false, error: new RegistryError("name_taken", `group "${name}" differs from existing group "${like}" only in letter case; choose another name`, "name") };
    const maxApps = limits.maxApps ?? 0;
    const allowPorts = limits.allowPorts ?? null;
    const resolved = this.#resolvePorts(name, apps, [], maxApps, allowPorts);
    if (!resolved.ok) return resolved;
    const group: GroupRecord = { name, token, source, createdAt: Date.now(), maxApps, allowPorts, apps: resolved.apps };
    this.#db.transaction(() => {
      this.#db.run("INSERT INTO groups (name, token, source, created_at, limits) VALUES (?, ?, ?, ?, ?)", [name, token, source, group.createdAt, limitsJson(group)]);
      this.#insertApps(name, group.apps);
    })();
    this.#groups.set(name, group);
    this.#index(group, true);
    return { ok: true, group };
  }

  /** Replaces a group's apps (and its token and limits, when given); apps that asked for port 0 keep the port they had. */
  update(name: string, apps: readonly AppInput[], token?: string, limits?: GroupLimitsInput): RegistryResult {
    const old = this.#groups.get(name);
    if (!old) return { ok: false, error: new RegistryError("not_found", `group "${name}" does not exist`) };
    const maxApps = limits ? (limits.maxApps ?? 0) : old.maxApps;
    const allowPorts = limits ? (limits.allowPorts ?? null) : old.allowPorts;
    const resolved = this.#resolvePorts(name, apps, old.apps, maxApps, allowPorts);
    if (!resolved.ok) return resolved;
    const group: GroupRecord = { ...old, token: token ?? old.token, maxApps, allowPorts, apps: resolved.apps };
    this.#db.transaction(() => {
      this.#db.run("UPDATE groups SET token = ?, limits = ? WHERE name = ?", [group.token, limitsJson(group), name]);
      this.#db.run("DELETE FROM apps WHERE group_name = ?", [name]);
      this.#insertApps(name, group.apps);
    })();
    this.#index(old, false);
    this.#groups.set(name, group);
    this.#index(group, true);
    return { ok: true, group };
  }

  /** Removes a group; false when it did not exist. */
  delete(name: string): boolean {
    const old = this.#groups.get(name);
    if (!old) return false;
    this.#index(old, false);
    this.#groups.delete(name);
    this.#db.run("DELETE FROM groups WHERE name = ?", [name]);
    return true;
  }

  /** Makes the `config` groups equal to server.toml's `[[groups]]`; groups from other sources are untouched. Returns one error per group that could not be applied, its path naming the server.toml key. */
  syncConfig(groups: readonly ({ name: string; token: string; apps: readonly AppInput[] } & GroupLimitsInput)[]): RegistryError[] {
    const errors: RegistryError[] = [];
    const wanted = new Set(groups.map((g) => g.name));
    for (const g of this.list()) if (g.source === "config" && !wanted.has(g.name)) this.delete(g.name);
    for (const [i, g] of groups.entries()) {
      const existing = this.#groups.get(g.name);
      const limits = { maxApps: g.maxApps, allowPorts: g.allowPorts };
      const res = existing ? this.update(g.name, g.apps, g.token, limits) : this.create(g.name, g.token, "config", g.apps, limits);
      if (!res.ok) errors.push(new RegistryError(res.error.code, res.error.message, `groups[${i}]${res.error.path ? "." + res.error.path : ""}`, { cause: res.error }));
      else if (existing && existing.source !== "config") this.#setSource(g.name, "config");
    }
    return errors;
  }

  /** Replaces a group's token; false when there is no such group. */
  setToken(name: string, token: string): boolean {
    const old = this.#groups.get(name);
    if (!old) return false;
    this.#db.run("UPDATE groups SET token = ? WHERE name = ?", [token, name]);
    this.#groups.set(name, { ...old, token });
    return true;
  }

  #setSource(name: string, source: GroupSource): void {
    this.#db.run("UPDATE groups SET source = ? WHERE name = ?", [source, name]);
    this.#groups.set(name, { ...this.#groups.get(name)!, source });
  }

  #insertApps(group: string, apps: readonly AppRecord[]): void {
    const stmt = this.#db.prepare("INSERT INTO apps (group_name, name, type, remote_port, requested_port, options) VALUES (?, ?, ?, ?, ?, ?)");
    for (const a of apps) {
      const options = JSON.stringify({ allowIPs: a.allowIPs, denyIPs: a.denyIPs, maxConnections: a.maxConnections });
      stmt.run(group, a.name, a.type, a.remotePort, a.requestedPort, options);
    }
  }

  /** Checks asked-for ports and chooses ports for apps that asked for 0. */
  #resolvePorts(
    group: string,
    apps: readonly AppInput[],
    previous: readonly AppRecord[],
    maxApps: number,
    groupPorts: string | null,
  ): { ok: true; apps: AppRecord[] } | { ok: false; error: RegistryError } {
    if (maxApps > 0 && apps.length > maxApps) {
      return { ok: false, error: new RegistryError("too_many_apps", `group "${group}" may have at most ${maxApps} apps, not ${apps.length}`, "apps") };
    }
    // A group's own range narrows the server's: a port must be in both.
    const own = groupPorts ? (PortSet.parse(groupPorts) as PortSet) : null;
    const allowed = (p: number) => this.allow.has(p) && (!own || own.has(p));
    const range = own ?? this.allow;
    // "tcp:port" -> owner among the other groups, from the index.
    const taken = {
      has: (key: string) => {
        const g = this.#owners.get(key);
        return g !== undefined && g !== group;
      },
      get: (key: string) => {
        const g = this.#owners.get(key);
        if (g === undefined || g === group) return undefined;
        const app = this.#groups.get(g)?.apps.find((a) => `${a.type}:${a.remotePort}` === key);
        return `${g}/${app?.name ?? "?"}`;
      },
    };
    const out: AppRecord[] = [];
    const mine = new Set<string>();
    const fail = (code: RegistryErrorCode, i: number, message: string) => ({ ok: false as const, error: new RegistryError(code, message, `apps[${i}].remotePort`) });
    // Explicit ports first, so that a chosen port never lands on one asked for later in the list.
    for (const [i, a] of apps.entries()) {
      if (a.remotePort === 0) continue;
      const key = `${a.type}:${a.remotePort}`;
      if (!allowed(a.remotePort)) return fail("port_not_allowed", i, `port ${a.remotePort} is outside allowPorts${own ? ` (the server's, narrowed by the group's "${groupPorts}")` : ""}`);
      if (this.reserved.has(a.remotePort) && a.type === "tcp") return fail("port_taken", i, `port ${a.remotePort} is used by the server itself`);
      const owner = taken.get(key);
      if (owner) return fail("port_taken", i, `${a.type} port ${a.remotePort} is taken by ${owner}`);
      if (mine.has(key)) return fail("port_taken", i, `${a.type} port ${a.remotePort} is used twice in this group`);
      mine.add(key);
    }
    for (const [i, a] of apps.entries()) {
      const options = { allowIPs: a.allowIPs ?? [], denyIPs: a.denyIPs ?? [], maxConnections: a.maxConnections ?? 0 };
      if (a.remotePort !== 0) {
        out.push({ name: a.name, type: a.type, remotePort: a.remotePort, requestedPort: a.remotePort, ...options });
        continue;
      }
      const prev = previous.find((p) => p.name === a.name && p.type === a.type);
      let port: number | null = null;
      if (prev && allowed(prev.remotePort) && !taken.has(`${a.type}:${prev.remotePort}`) && !mine.has(`${a.type}:${prev.remotePort}`)) {
        port = prev.remotePort;
      } else {
        port = range.pick(
          (p) => !allowed(p) || taken.has(`${a.type}:${p}`) || mine.has(`${a.type}:${p}`) || this.reserved.has(p),
          // Only TCP ports can be probed synchronously; a busy UDP port shows up as an error at login.
          (p) => a.type !== "tcp" || this.probe(p),
        );
      }
      if (port === null) return fail("no_free_port", i, "no free port is left in allowPorts");
      mine.add(`${a.type}:${port}`);
      out.push({ name: a.name, type: a.type, remotePort: port, requestedPort: 0, ...options });
    }
    return { ok: true, apps: out };
  }

  /** Closes the database. */
  close(): void {
    this.#db.close();
  }
}
