/**
 * What every registry store decides the same way, whatever keeps its rows
 * (sqlite.ts, postgres.ts): the groups in memory with an index of every app's
 * port and domain, so that port checks stay O(1) with thousands of groups; the
 * plan of a create or an update, checked against that index; which change a
 * new record is; and the JSON that the rows hold. Nothing here does I/O.
 */
import type { AppType } from "../../protocol.ts";
import type { PortSet } from "../ports.ts";
import { appDomains, checkDomains, type DomainSpace } from "./domains.ts";
import { httpKeys, resolvePorts, type PortSpace } from "./ports.ts";
import { RegistryError, servedByDomain, type AppInput, type AppRecord, type GroupLimitsInput, type GroupRecord, type GroupSource, type RegistryChange, type RegistryResult } from "./types.ts";

/** The registry in memory: groups by name, and who holds each port and domain. */
export class RegistryIndex implements PortSpace, DomainSpace {
  readonly #groups = new Map<string, GroupRecord>();
  /** "type:port" -> owning group, for every app. */
  readonly #owners = new Map<string, string>();
  /** Domain -> the group whose apps claim it (domains.ts). */
  readonly #domains = new Map<string, string>();

  constructor(
    /** The server's allowPorts. */
    readonly allow: PortSet,
    /** Whether a TCP port can be bound now (on this machine). */
    readonly probe: (port: number) => boolean,
    /** The server's own ports. */
    readonly reserved: ReadonlySet<number>,
    /** The server's subdomainHost (domains.ts). */
    readonly subdomainHost: string | null,
  ) {}

  /** One group, or undefined. */
  get(name: string): GroupRecord | undefined {
    return this.#groups.get(name);
  }

  /** Every group, in name order. */
  list(): GroupRecord[] {
    return [...this.#groups.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Every group's name, in the order they were put. */
  names(): string[] {
    return [...this.#groups.keys()];
  }

  /** Stores a group (new or replacing one), and re-indexes its ports and domains when its apps changed. */
  put(group: GroupRecord): void {
    const old = this.#groups.get(group.name);
    // Same apps (a new token, source or disabled flag): the index stays as it was, as sqlite.ts always did.
    const reindex = old?.apps !== group.apps;
    if (old && reindex) this.#index(old, false);
    this.#groups.set(group.name, group);
    if (reindex) this.#index(group, true);
  }

  /** Forgets a group; returns what it was. */
  remove(name: string): GroupRecord | undefined {
    const old = this.#groups.get(name);
    if (!old) return undefined;
    this.#index(old, false);
    this.#groups.delete(name);
    return old;
  }

  #index(g: GroupRecord, add: boolean): void {
    for (const a of g.apps) {
      if (servedByDomain(a.type)) {
        for (const d of appDomains(a, this.subdomainHost)) {
          if (add) this.#domains.set(d, g.name);
          else if (this.#domains.get(d) === g.name) this.#domains.delete(d);
        }
        continue;
      }
      const k = `${a.type}:${a.remotePort}`;
      if (add) this.#owners.set(k, g.name);
      else if (this.#owners.get(k) === g.name) this.#owners.delete(k);
    }
  }

  /** The group holding "type:port", if any (PortSpace). */
  owner(key: string): string | undefined {
    return this.#owners.get(key);
  }

  /** The name of `group`'s app on "type:port" (PortSpace). */
  appAt(group: string, key: string): string | undefined {
    return this.#groups.get(group)?.apps.find((a) => `${a.type}:${a.remotePort}` === key)?.name;
  }

  /** The group whose apps claim `domain` (DomainSpace). */
  domainOwner(domain: string): string | undefined {
    return this.#domains.get(domain);
  }

  /** An existing group whose name equals `name` ignoring letter case. */
  lookalike(name: string): string | undefined {
    const folded = name.toLowerCase();
    for (const other of this.#groups.keys()) if (other.toLowerCase() === folded) return other;
    return undefined;
  }

  /** Sets of names that differ only in letter case (older versions allowed them). */
  lookalikes(): string[][] {
    const byFold = new Map<string, string[]>();
    for (const name of this.#groups.keys()) {
      const k = name.toLowerCase();
      byFold.set(k, [...(byFold.get(k) ?? []), name]);
    }
    return [...byFold.values()].filter((names) => names.length > 1);
  }

  /** The group that `create` would store, or why it may not; changes nothing. */
  planCreate(name: string, token: string, source: GroupSource, apps: readonly AppInput[], limits: GroupLimitsInput, now = Date.now()): RegistryResult {
    if (this.#groups.has(name)) return { ok: false, error: new RegistryError("name_taken", `group "${name}" already exists`, "name") };
    const like = this.lookalike(name);
    if (like) return { ok: false, error: new RegistryError("name_taken", `group "${name}" differs from existing group "${like}" only in letter case; choose another name`, "name") };
    const maxApps = limits.maxApps ?? 0;
    const allowPorts = limits.allowPorts ?? null;
    const resolved = resolvePorts(this, name, apps, [], maxApps, allowPorts);
    if (!resolved.ok) return resolved;
    const domainError = checkDomains(this, name, resolved.apps);
    if (domainError) return { ok: false, error: domainError };
    const group: GroupRecord = { name, token, source, createdAt: now, maxApps, allowPorts, bandwidthLimit: limits.bandwidthLimit ?? null, disabled: false, apps: resolved.apps };
    return { ok: true, group };
  }

  /** The group that an update would store (new apps, and token and limits when given; apps that asked for port 0 keep the port they had), or why it may not; changes nothing. */
  planUpdate(name: string, apps: readonly AppInput[], token?: string, limits?: GroupLimitsInput): RegistryResult {
    const old = this.#groups.get(name);
    if (!old) return { ok: false, error: new RegistryError("not_found", `group "${name}" does not exist`) };
    const maxApps = limits ? (limits.maxApps ?? 0) : old.maxApps;
    const allowPorts = limits ? (limits.allowPorts ?? null) : old.allowPorts;
    const resolved = resolvePorts(this, name, apps, old.apps, maxApps, allowPorts);
    if (!resolved.ok) return resolved;
    const domainError = checkDomains(this, name, resolved.apps);
    if (domainError) return { ok: false, error: domainError };
    const bandwidthLimit = limits ? (limits.bandwidthLimit ?? null) : old.bandwidthLimit;
    const group: GroupRecord = { ...old, token: token ?? old.token, maxApps, allowPorts, bandwidthLimit, apps: resolved.apps };
    return { ok: true, group };
  }
}

/** The limits of a `[[groups]]` entry of server.toml. */
export function configLimits(g: GroupLimitsInput): GroupLimitsInput {
  return { maxApps: g.maxApps, allowPorts: g.allowPorts, bandwidthLimit: g.bandwidthLimit };
}

/** A refusal of server.toml's `groups[i]`, its path naming the key. */
export function configError(i: number, error: RegistryError): RegistryError {
  return new RegistryError(error.code, error.message, `groups[${i}]${error.path ? "." + error.path : ""}`, { cause: error });
}

/**
 * What a sync announces for a group that is now `group` and was `existing`:
 * nothing when nothing changed (a reload must not disturb the groups it leaves
 * as they were); a new token as such, since whoever logged in with the old
 * one must be cut off.
 */
export function changeOf(existing: GroupRecord | undefined, group: GroupRecord): RegistryChange | null {
  if (!existing) return { kind: "created", group };
  if (existing.token !== group.token) return { kind: "token", group };
  if (JSON.stringify(existing) !== JSON.stringify(group)) return { kind: "updated", group };
  return null;
}

/** The changes that turn `before` into `after` (either may be missing): a group created again under its old name is a deletion and a creation. */
export function changesBetween(before: GroupRecord | undefined, after: GroupRecord | undefined): RegistryChange[] {
  if (!before && !after) return [];
  if (!after) return [{ kind: "deleted", name: before!.name }];
  if (before && before.createdAt !== after.createdAt) return [{ kind: "deleted", name: before.name }, { kind: "created", group: after }];
  const c = changeOf(before, after);
  return c ? [c] : [];
}

/** A group's limits as its row holds them (JSON). */
export function limitsJson(g: GroupRecord): string {
  return JSON.stringify({ maxApps: g.maxApps, allowPorts: g.allowPorts ?? undefined, bandwidthLimit: g.bandwidthLimit ?? undefined });
}

/** An app's options as its row holds them (JSON). */
export function optionsJson(a: AppRecord): string {
  return JSON.stringify({ allowIPs: a.allowIPs, denyIPs: a.denyIPs, maxConnections: a.maxConnections, bandwidthLimit: a.bandwidthLimit, ...httpKeys(a) });
}

/** A group's row, whatever the database. */
export interface GroupRow {
  readonly name: string;
  readonly token: string;
  readonly source: GroupSource;
  readonly createdAt: number;
  /** limitsJson */
  readonly limits: string;
  readonly disabled: boolean;
}

/** An app's row, whatever the database. */
export interface AppRow {
  readonly name: string;
  readonly type: AppType;
  readonly remotePort: number;
  readonly requestedPort: number;
  /** optionsJson */
  readonly options: string;
}

/** A group as stored, from its row and its apps (in their order). */
export function groupFromRow(g: GroupRow, apps: AppRecord[]): GroupRecord {
  const limits = JSON.parse(g.limits) as GroupLimitsInput;
  return { name: g.name, token: g.token, source: g.source, createdAt: g.createdAt, maxApps: limits.maxApps ?? 0, allowPorts: limits.allowPorts ?? null, bandwidthLimit: limits.bandwidthLimit ?? null, disabled: g.disabled, apps };
}

/** An app as stored, from its row. */
export function appFromRow(a: AppRow): AppRecord {
  const o = JSON.parse(a.options) as Partial<AppRecord>;
  return {
    name: a.name,
    type: a.type,
    remotePort: a.remotePort,
    requestedPort: a.requestedPort,
    allowIPs: o.allowIPs ?? [],
    denyIPs: o.denyIPs ?? [],
    maxConnections: o.maxConnections ?? 0,
    ...(o.bandwidthLimit ? { bandwidthLimit: o.bandwidthLimit } : {}),
    ...httpKeys(o),
  };
}
