/**
 * The registry's tables in PostgreSQL (postgres.ts): the migrations that make
 * them, how groups and changes are read from them, and what its errors mean.
 * Every name starts with `warren_`, so the registry can share a database with
 * other programs. The schema's version is kept in a table; servers that start
 * at once take turns by an advisory lock, and the first one migrates.
 */
import type { SQL } from "bun";
import type { AppType } from "../../protocol.ts";
import { WarrenError } from "../errors.ts";
import { appFromRow, groupFromRow } from "./plan.ts";
import { RegistryError, type AppRecord, type GroupRecord, type GroupSource } from "./types.ts";

/** The channel every change is announced on (NOTIFY), with a JSON ChangeNote as payload. */
export const CHANNEL = "warren_registry";

/** A change as announced on CHANNEL: which group, and the change's number (warren_registry_state.seq). */
export interface ChangeNote {
  readonly kind: "created" | "updated" | "token" | "deleted";
  readonly name: string;
  readonly version: number;
}

/** Bun's own codes for a connection that failed, closed or timed out, or a query it gave up on. */
const CONNECTION_CODES = new Set(["ERR_POSTGRES_CONNECTION_CLOSED", "ERR_POSTGRES_CONNECTION_REFUSED", "ERR_POSTGRES_CONNECTION_FAILED", "ERR_POSTGRES_CONNECTION_TIMEOUT", "ERR_POSTGRES_IDLE_TIMEOUT", "ERR_POSTGRES_LIFETIME_TIMEOUT", "ERR_POSTGRES_QUERY_CANCELLED"]);

/** Key of the advisory lock that migrations hold: `hashtext` of a fixed name, so it does not depend on a number we picked. */
const MIGRATION_LOCK = "warren_registry_schema";

/**
 * Migrations, oldest first: the schema's version is the number of them
 * applied. Append, never edit one that was released.
 *
 * - Rows hold JSON as text, as sqlite.ts does, so that a record read back is
 *   byte for byte the one written (jsonb would reorder keys, and changes are
 *   detected by comparing JSON: plan.ts, changeOf).
 * - Names are unique ignoring letter case, ports per type (HTTP apps have
 *   port 0 and share the vhost ports): the in-memory checks give the precise
 *   message; these indexes are the last line if two writers ever disagreed.
 * - warren_registry_state.seq numbers every change; a write locks its row, so
 *   writes from all servers take turns. warren_changes says which group each
 *   recent change was, so that a server catching up re-reads only those.
 */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE warren_groups (
    name text PRIMARY KEY,
    token text NOT NULL,
    source text NOT NULL CHECK (source IN ('config', 'api', 'client')),
    created_at bigint NOT NULL,
    limits text NOT NULL DEFAULT '{}',
    disabled boolean NOT NULL DEFAULT false,
    version bigint NOT NULL
  );
  CREATE UNIQUE INDEX warren_groups_name_fold ON warren_groups (lower(name));
  CREATE TABLE warren_apps (
    group_name text NOT NULL REFERENCES warren_groups (name) ON DELETE CASCADE,
    position integer NOT NULL,
    name text NOT NULL,
    type text NOT NULL,
    remote_port integer NOT NULL,
    requested_port integer NOT NULL,
    options text NOT NULL DEFAULT '{}',
    PRIMARY KEY (group_name, name)
  );
  CREATE UNIQUE INDEX warren_apps_port ON warren_apps (type, remote_port) WHERE remote_port <> 0;
  CREATE TABLE warren_registry_state (
    id integer PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL
  );
  INSERT INTO warren_registry_state (id, seq) VALUES (1, 0);
  CREATE TABLE warren_changes (
    seq bigint PRIMARY KEY,
    group_name text NOT NULL,
    kind text NOT NULL
  );`,
];

/** The unique indexes of the schema, by the refusal a violation of each means. */
export const UNIQUE_INDEXES = { warren_groups_pkey: "name_taken", warren_groups_name_fold: "name_taken", warren_apps_port: "port_taken" } as const;

/** Brings the schema up to the latest version; safe when several servers run it at once. Returns the version. */
export async function migrate(sql: SQL): Promise<number> {
  return sql.begin(async (tx) => {
    // Before anything else: two concurrent CREATE TABLE IF NOT EXISTS can still collide (on pg_type), so the
    // lock also covers the creation of the version table. It is released at the end of the transaction.
    await tx`SELECT pg_advisory_xact_lock(hashtext(${MIGRATION_LOCK}))`;
    await tx`CREATE TABLE IF NOT EXISTS warren_schema_version (id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL)`;
    const [row] = (await tx`SELECT version FROM warren_schema_version WHERE id = 1`) as { version: number }[];
    const from = row?.version ?? 0;
    if (from > MIGRATIONS.length) {
      throw new WarrenError("registry_schema_newer", `the registry database has schema version ${from}, newer than this Warren knows (${MIGRATIONS.length}); upgrade this server`);
    }
    for (let v = from; v < MIGRATIONS.length; v++) await tx.unsafe(MIGRATIONS[v]!).simple();
    if (from < MIGRATIONS.length) {
      await tx`INSERT INTO warren_schema_version (id, version) VALUES (1, ${MIGRATIONS.length}) ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version`;
    }
    return MIGRATIONS.length;
  });
}

/** Groups as read from the database at change `seq`: those in `names`, or every group when `names` is null. */
export interface Snapshot {
  readonly seq: number;
  readonly names: readonly string[] | null;
  readonly groups: ReadonlyMap<string, GroupRecord>;
}

/** What changed since change `since` (null: read every group), as of change `seq` (read now when not given). */
export async function fetchChanges(q: SQL, since: number | null, seq?: number): Promise<Snapshot> {
  const now = seq ?? Number(((await q`SELECT seq FROM warren_registry_state WHERE id = 1`) as { seq: string }[])[0]!.seq);
  if (since === now) return { seq: now, names: [], groups: new Map() };
  let names: string[] | null = null;
  if (since !== null && since < now) {
    const logged = (await q`SELECT group_name FROM warren_changes WHERE seq > ${since} AND seq <= ${now}`) as { group_name: string }[];
    // Only when no change in between was pruned; otherwise (or after a database was restored: `since` > `now`) read everything.
    if (logged.length === now - since) names = [...new Set(logged.map((r) => r.group_name))];
  }
  return { seq: now, names, groups: await readGroups(q, names) };
}

/** Groups as stored: those named, or all of them. */
async function readGroups(q: SQL, names: string[] | null): Promise<Map<string, GroupRecord>> {
  const out = new Map<string, GroupRecord>();
  if (names?.length === 0) return out;
  type G = { name: string; token: string; source: GroupSource; created_at: string; limits: string; disabled: boolean };
  type A = { group_name: string; name: string; type: AppType; remote_port: number; requested_port: number; options: string };
  const groups = (names
    ? await q`SELECT name, token, source, created_at, limits, disabled FROM warren_groups WHERE name = ANY(${names})`
    : await q`SELECT name, token, source, created_at, limits, disabled FROM warren_groups`) as G[];
  const apps = (names
    ? await q`SELECT group_name, name, type, remote_port, requested_port, options FROM warren_apps WHERE group_name = ANY(${names}) ORDER BY group_name, position`
    : await q`SELECT group_name, name, type, remote_port, requested_port, options FROM warren_apps ORDER BY group_name, position`) as A[];
  const appsOf = new Map<string, AppRecord[]>(groups.map((g) => [g.name, []]));
  for (const a of apps) appsOf.get(a.group_name)?.push(appFromRow({ name: a.name, type: a.type, remotePort: a.remote_port, requestedPort: a.requested_port, options: a.options }));
  for (const g of groups) out.set(g.name, groupFromRow({ name: g.name, token: g.token, source: g.source, createdAt: Number(g.created_at), limits: g.limits, disabled: g.disabled }, appsOf.get(g.name)!));
  return out;
}

/** Whether `err` means the database could not be reached or did not answer, rather than a mistake in a query. */
export function unreachable(err: unknown): boolean {
  const e = err as { code?: unknown; errno?: unknown };
  if (typeof e.code === "string" && CONNECTION_CODES.has(e.code)) return true;
  // SQLSTATE classes 08 (connection), 53 (too many connections, out of memory or disk), 57 (statement_timeout,
  // shutdown, starting up); 55P03: lock_timeout, another node holding the registry's lock too long.
  return typeof e.errno === "string" && (/^(08|53|57)/.test(e.errno) || e.errno === "55P03");
}

/** A unique violation as the refusal it means (UNIQUE_INDEXES); any other error as it was. */
export function uniqueViolation(what: string, err: unknown): unknown {
  const e = err as { errno?: unknown; constraint?: unknown; detail?: unknown };
  if (e.errno !== "23505") return err;
  const code = UNIQUE_INDEXES[e.constraint as keyof typeof UNIQUE_INDEXES] ?? "name_taken";
  return new RegistryError(code, `could not ${what}: ${typeof e.detail === "string" ? e.detail : "it clashes with a stored group"}`, code === "name_taken" ? "name" : "apps", { cause: err });
}
