/** The registry's records and results: what every store (sqlite.ts, and later others) stores and returns. */
import type * as v from "valibot";
import type { AppType } from "../../protocol.ts";
import type { ServerAppSchema } from "../config/schema.ts";
import { WarrenError } from "../errors.ts";

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
  /** The app's bandwidthLimit ("10MB"), if any. */
  readonly bandwidthLimit?: string;
  // HTTP and HTTPS apps (schema.ts, HttpAppKeys): absent on TCP and UDP apps.
  readonly subdomain?: string;
  readonly customDomains?: readonly string[];
  /** Path prefixes (HTTP apps; absent means ["/"]). */
  readonly locations?: readonly string[];
  readonly hostHeaderRewrite?: string;
  readonly requestHeaders?: { readonly set?: Readonly<Record<string, string>> };
  readonly responseHeaders?: { readonly set?: Readonly<Record<string, string>> };
  readonly httpUser?: string;
  /** A secret: never shown by the API or logged. */
  readonly httpPassword?: string;
  /** The request inspector keeps this app's last requests (inspect.ts). */
  readonly inspect?: boolean;
  /** The inspector keeps secrets unmasked. */
  readonly inspectSecrets?: boolean;
}

/** The keys of an AppRecord that only HTTP and HTTPS apps have: stored as given, compared as a whole. */
export const HTTP_RECORD_KEYS = ["subdomain", "customDomains", "locations", "hostHeaderRewrite", "requestHeaders", "responseHeaders", "httpUser", "httpPassword", "inspect", "inspectSecrets"] as const;

/** Whether an app is served by domain on the shared vhost ports rather than on a port of its own. */
export function servedByDomain(type: AppType): boolean {
  return type === "http" || type === "https";
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
  /** The group's bandwidthLimit ("10MB"), shared by all its apps, or null. */
  readonly bandwidthLimit: string | null;
  /** A disabled group may not log in (its client keeps retrying, and comes back once it is enabled). */
  readonly disabled: boolean;
  readonly apps: readonly AppRecord[];
}

/** Limits of a group, as asked for. */
export interface GroupLimitsInput {
  readonly maxApps?: number;
  readonly allowPorts?: string;
  readonly bandwidthLimit?: string;
}

/** An app as asked for by server.toml or the API: the schema's output, not a second type. */
export type AppInput = Readonly<v.InferOutput<typeof ServerAppSchema>>;

/**
 * Why a registry change was refused. `unavailable` is not a refusal of the
 * request: the store's database (PostgreSQL, postgres.ts) could not be reached
 * or did not answer in time. Stores throw it rather than return it, for the
 * API to answer 503: the caller may try again.
 */
export type RegistryErrorCode = "name_taken" | "port_taken" | "port_not_allowed" | "no_free_port" | "not_found" | "too_many_apps" | "domain_taken" | "no_subdomain_host" | "unavailable";

/** A registry change refused; `path` names the offending field of the request (or of server.toml). */
export class RegistryError extends WarrenError<RegistryErrorCode> {
  override readonly name = "RegistryError";
}

/** Result of a registry change. */
export type RegistryResult = { readonly ok: true; readonly group: GroupRecord } | { readonly ok: false; readonly error: RegistryError };

/** A change to the registry, as a store announces it once it is stored. */
export type RegistryChange =
  | { readonly kind: "created" | "updated"; readonly group: GroupRecord }
  | { readonly kind: "token"; readonly group: GroupRecord }
  | { readonly kind: "deleted"; readonly name: string };
