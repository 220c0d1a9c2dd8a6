/**
 * The registry: groups and their apps, persisted in bun:sqlite and mirrored
 * in memory for lookups at login. An app asking for port 0 is given a free
 * port from `allowPorts` once, and keeps it.
 */
import { Database } from "bun:sqlite";
import { chmodSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { AppType } from "../protocol.ts";
import type { PortSet } from "./ports.ts";

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
}

/** A group as stored. */
export interface GroupRecord {
  readonly name: string;
  readonly token: string;
  readonly source: GroupSource;
  readonly createdAt: number;
  readonly apps: readonly AppRecord[];
}

/** An app as asked for by config, API or a client. */
export interface AppInput {
  readonly name: string;
  readonly type: AppType;
  readonly remotePort: number;
}

/** Why a registry change was refused; `path` names the offending field of the request. */
export interface RegistryError {
  readonly code: "name_taken" | "port_taken" | "port_not_allowed" | "no_free_port" | "not_found";
  readonly message: string;
  readonly path?: string;
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
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS apps (
  group_name TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
  name TEXT NOT NULL,
  type TEXT NOT NULL,
  remote_port INTEGER NOT NULL,
  requested_port INTEGER NOT NULL,
  PRIMARY KEY (group_name, name),
  UNIQUE (type, remote_port)
);`;

/** The group registry. */
export class Registry {
  #db: Database;
  #groups = new Map<string, GroupRecord>();

  /** Opens (creating) the registry in `dataDir`, or in memory for ":memory:". */
  constructor(
    dataDir: string,
    private readonly allow: PortSet,
    private readonly probe: (port: number) => boolean,
    private readonly reserved: ReadonlySet<number> = new Set(),
  ) {
    let path = ":memory:";
    if (dataDir !== ":memory:") {
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      path = join(dataDir, REGISTRY_FILE);
      const fresh = !existsSync(path);
      this.#db = new Database(path, { create: true, strict: true });
      // Tokens live here: only the owner may read the file.
      if (fresh) chmodSync(path, 0o600);
    } else this.#db = new Database(path, { strict: true });
    this.#db.exec("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;");
    this.#db.exec(SCHEMA);
    this.#load();
  }

  #load(): void {
    const groups = this.#db.query<{ name: string; token: string; source: GroupSource; created_at: number }, []>("SELECT * FROM groups").all();
    const apps = this.#db
      .query<{ group_name: string; name: string; type: AppType; remote_port: number; requested_port: number }, []>("SELECT * FROM apps ORDER BY rowid")
      .all();
    for (const g of groups) this.#groups.set(g.name, { name: g.name, token: g.token, source: g.source, createdAt: g.created_at, apps: [] });
    for (const a of apps) {
      const g = this.#groups.get(a.group_name);
      if (g) (g.apps as AppRecord[]).push({ name: a.name, type: a.type, remotePort: a.remote_port, requestedPort: a.requested_port });
    }
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
  create(name: string, token: string, source: GroupSource, apps: readonly AppInput[]): RegistryResult {
    if (this.#groups.has(name)) return { ok: false, error: { code: "name_taken", message: `group "${name}" already exists`, path: "name" } };
    const resolved = this.#resolvePorts(name, apps, []);
    if (!resolved.ok) return resolved;
    const group: GroupRecord = { name, token, source, createdAt: Date.now(), apps: resolved.apps };
    this.#db.transaction(() => {
      this.#db.run("INSERT INTO groups (name, token, source, created_at) VALUES (?, ?, ?, ?)", [name, token, source, group.createdAt]);
      this.#insertApps(name, group.apps);
    })();
    this.#groups.set(name, group);
    return { ok: true, group };
  }

  /** Replaces a group's apps (and its token, when given); apps that asked for port 0 keep the port they had. */
  update(name: string, apps: readonly AppInput[], token?: string): RegistryResult {
    const old = this.#groups.get(name);
    if (!old) return { ok: false, error: { code: "not_found", message: `group "${name}" does not exist` } };
    const resolved = this.#resolvePorts(name, apps, old.apps);
    if (!resolved.ok) return resolved;
    const group: GroupRecord = { ...old, token: token ?? old.token, apps: resolved.apps };
    this.#db.transaction(() => {
      this.#db.run("UPDATE groups SET token = ? WHERE name = ?", [group.token, name]);
      this.#db.run("DELETE FROM apps WHERE group_name = ?", [name]);
      this.#insertApps(name, group.apps);
    })();
    this.#groups.set(name, group);
    return { ok: true, group };
  }

  /** Removes a group; false when it did not exist. */
  delete(name: string): boolean {
    if (!this.#groups.delete(name)) return false;
    this.#db.run("DELETE FROM groups WHERE name = ?", [name]);
    return true;
  }

  /** Makes the `config` groups equal to server.toml's `[[groups]]`; groups from other sources are untouched. Returns one error sentence per group that could not be applied. */
  syncConfig(groups: readonly { name: string; token: string; apps: readonly AppInput[] }[]): string[] {
    const errors: string[] = [];
    const wanted = new Set(groups.map((g) => g.name));
    for (const g of this.list()) if (g.source === "config" && !wanted.has(g.name)) this.delete(g.name);
    for (const [i, g] of groups.entries()) {
      const existing = this.#groups.get(g.name);
      const res = existing ? this.update(g.name, g.apps, g.token) : this.create(g.name, g.token, "config", g.apps);
      if (!res.ok) errors.push(`groups[${i}]${res.error.path ? "." + res.error.path : ""}: ${res.error.message}`);
      else if (existing && existing.source !== "config") this.#setSource(g.name, "config");
    }
    return errors;
  }

  #setSource(name: string, source: GroupSource): void {
    this.#db.run("UPDATE groups SET source = ? WHERE name = ?", [source, name]);
    this.#groups.set(name, { ...this.#groups.get(name)!, source });
  }

  #insertApps(group: string, apps: readonly AppRecord[]): void {
    const stmt = this.#db.prepare("INSERT INTO apps (group_name, name, type, remote_port, requested_port) VALUES (?, ?, ?, ?, ?)");
    for (const a of apps) stmt.run(group, a.name, a.type, a.remotePort, a.requestedPort);
  }

  /** Checks asked-for ports and chooses ports for apps that asked for 0. */
  #resolvePorts(
    group: string,
    apps: readonly AppInput[],
    previous: readonly AppRecord[],
  ): { ok: true; apps: AppRecord[] } | { ok: false; error: RegistryError } {
    const taken = new Map<string, string>(); // "tcp:port" -> owner, for every other group
    for (const g of this.#groups.values()) {
      if (g.name === group) continue;
      for (const a of g.apps) taken.set(`${a.type}:${a.remotePort}`, `${g.name}/${a.name}`);
    }
    const out: AppRecord[] = [];
    const mine = new Set<string>();
    const fail = (code: RegistryError["code"], i: number, message: string) => ({ ok: false as const, error: { code, message, path: `apps[${i}].remotePort` } });
    // Explicit ports first, so that a chosen port never lands on one asked for later in the list.
    for (const [i, a] of apps.entries()) {
      if (a.remotePort === 0) continue;
      const key = `${a.type}:${a.remotePort}`;
      if (!this.allow.has(a.remotePort)) return fail("port_not_allowed", i, `port ${a.remotePort} is outside allowPorts`);
      if (this.reserved.has(a.remotePort) && a.type === "tcp") return fail("port_taken", i, `port ${a.remotePort} is used by the server itself`);
      const owner = taken.get(key);
      if (owner) return fail("port_taken", i, `${a.type} port ${a.remotePort} is taken by ${owner}`);
      if (mine.has(key)) return fail("port_taken", i, `${a.type} port ${a.remotePort} is used twice in this group`);
      mine.add(key);
    }
    for (const [i, a] of apps.entries()) {
      if (a.remotePort !== 0) {
        out.push({ name: a.name, type: a.type, remotePort: a.remotePort, requestedPort: a.remotePort });
        continue;
      }
      const prev = previous.find((p) => p.name === a.name && p.type === a.type);
      let port: number | null = null;
      if (prev && this.allow.has(prev.remotePort) && !taken.has(`${a.type}:${prev.remotePort}`) && !mine.has(`${a.type}:${prev.remotePort}`)) {
        port = prev.remotePort;
      } else {
        port = this.allow.pick(
          (p) => taken.has(`${a.type}:${p}`) || mine.has(`${a.type}:${p}`) || this.reserved.has(p),
          this.probe,
        );
      }
      if (port === null) return fail("no_free_port", i, "no free port is left in allowPorts");
      mine.add(`${a.type}:${port}`);
      out.push({ name: a.name, type: a.type, remotePort: port, requestedPort: 0 });
    }
    return { ok: true, apps: out };
  }

  /** Closes the database. */
  close(): void {
    this.#db.close();
  }
}
