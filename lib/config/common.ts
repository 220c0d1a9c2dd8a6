/**
 * Valibot schemas shared by server.toml, client.toml and the API: names, tokens, ports,
 * durations and the keys of HTTP apps. Split from schema.ts so that the client loads
 * only what client.toml needs (client-schema.ts), not the server's schema
 * (bench/optimisations.md, issue 21). Imports no runtime module. schema.ts re-exports
 * the public ones; Seconds, withMs, httpChecks and the like are for the schemas only.
 */
import * as v from "valibot";
import { UDP_RECEIVE_BUFFER_BYTES } from "./defaults.ts";
import { NAME_PATTERN } from "../../protocol.ts";

/** Bytes of receive buffer to ask for each UDP socket; 0 leaves the system's default. */
export const UdpReceiveBuffer = v.optional(v.pipe(v.number("must be a number of bytes"), v.integer("must be an integer"), v.minValue(0, "must be 0 (the system default) or more"), v.maxValue(256 << 20, "must be at most 268435456 (256 MiB)")), UDP_RECEIVE_BUFFER_BYTES);

/** Group and app names as the client and the wire take them: short, printable, safe in logs and URLs. */
export const ExistingNameSchema = v.pipe(
  v.string("must be a string"),
  v.regex(NAME_PATTERN, "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"),
);
/** A group token: long enough that guessing it is hopeless. */
export const TokenSchema = v.pipe(v.string("must be a string"), v.minLength(16, "must be at least 16 characters"), v.maxLength(256, "must be at most 256 characters"));
/**
 * An app's kind: "tcp" and "udp" get a public port each (TCP and UDP ports are separate, so "dns"
 * on UDP 5353 and "web" on TCP 5353 coexist); "http" and "https" share the server's vhost ports
 * and are told apart by domain (Host header, TLS SNI).
 */
export const AppTypeSchema = v.picklist(["tcp", "udp", "http", "https"], 'must be "tcp", "udp", "http" or "https"');
/** A TCP port, 0 meaning "choose one". */
export const PortSchema = v.pipe(v.number("must be a number"), v.integer("must be an integer"), v.minValue(0, "must be 0-65535"), v.maxValue(65535, "must be 0-65535"));
/** A duration in seconds (0.05 s to a day), `def` when absent. */
export const Seconds = (def: number) => v.optional(v.pipe(v.number("must be a number of seconds"), v.minValue(0.05, "must be at least 0.05 seconds"), v.maxValue(86400, "must be at most 86400 seconds")), def);
/** How much the process logs. */
export const LogLevelSchema = v.optional(v.picklist(["debug", "info", "warn", "error"], 'must be "debug", "info", "warn" or "error"'), "info");
/** Whether no two items share a name. */
export const uniqueNames = (items: { name: string }[]) => new Set(items.map((i) => i.name)).size === items.length;
/** A domain or a wildcard over its subdomains ("*.example.com"). */
export const DomainPatternSchema = v.pipe(
  v.string("must be a host name like app.example.com or *.example.com"),
  v.toLowerCase(),
  v.check((s) => isDomain(s.startsWith("*.") ? s.slice(2) : s), "must be a host name like app.example.com, or *.example.com for every name under it"),
);
/** Whether `s` is a DNS host name (LDH labels of 1-63 characters, at most 253 in all; no trailing dot). */
export function isDomain(s: string): boolean {
  return s.length <= 253 && s.split(".").every((l) => /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i.test(l));
}
/** A path prefix an HTTP app answers under; matched as a plain prefix, as frp and nginx do. */
const LocationSchema = v.pipe(
  v.string("must be a path like /api"),
  v.regex(/^\/[\x21-\x7e]{0,255}$/, "must be a path starting with '/', without spaces or control characters, at most 256 characters"),
);
/** A header name (RFC 9110 token) and a value without control characters: what the proxy may write into a request or response head. */
const HeaderTableSchema = v.strictObject({
  set: v.optional(
    v.pipe(
      v.record(
        v.pipe(v.string(), v.regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/, "header names are letters, digits and !#$%&'*+.^_`|~- (at most 64)")),
        v.pipe(v.string("must be a string"), v.regex(/^[\x20-\x7e\t]{0,1024}$/, "header values are printable ASCII (at most 1024 characters)")),
      ),
      v.check((t) => Object.keys(t).length <= 32, "at most 32 headers"),
    ),
  ),
});

/** Keys of HTTP and HTTPS apps, the same in server.toml, the API and (for self-registration) client.toml. */
export const HttpAppKeys = {
  /** Served at `<subdomain>.<subdomainHost>`. */
  subdomain: v.optional(v.pipe(v.string("must be a string"), v.toLowerCase(), v.check((s) => isDomain(s) && s.length <= 63, "must be letters, digits and '-' (dot-separated labels allowed), like grafana"))),
  /** Domains of the app's own ("app.example.com", "*.example.com"). */
  customDomains: v.optional(v.pipe(v.array(DomainPatternSchema, "must be a list of host names"), v.maxLength(32, "at most 32 domains"), v.check((d) => new Set(d).size === d.length, "lists a domain twice"))),
  /** Path prefixes this app answers under on its domains (HTTP only; default ["/"]). */
  locations: v.optional(v.pipe(v.array(LocationSchema, "must be a list of paths"), v.minLength(1, "must list at least one path"), v.maxLength(32, "at most 32 locations"), v.check((d) => new Set(d).size === d.length, "lists a path twice"))),
  /** The Host header the app sees instead of the one the user sent. */
  hostHeaderRewrite: v.optional(v.pipe(v.string("must be a string"), v.regex(/^[A-Za-z0-9.:[\]-]{1,255}$/, "must be a host name, optionally with :port"))),
  requestHeaders: v.optional(HeaderTableSchema),
  responseHeaders: v.optional(HeaderTableSchema),
  /** HTTP Basic authentication at the server, before anything reaches the app. */
  httpUser: v.optional(v.pipe(v.string("must be a string"), v.regex(/^[^:\x00-\x1f\x7f]{1,128}$/, "must be 1-128 characters without ':' or control characters"))),
  httpPassword: v.optional(v.pipe(v.string("must be a string"), v.regex(/^[^\x00-\x1f\x7f]{1,128}$/, "must be 1-128 characters without control characters"))),
  /** Keep the last requests in the server's memory for the inspector (off by default: they are other people's requests). */
  inspect: v.optional(v.boolean("must be true or false")),
  /** Keep Authorization, Cookie, Set-Cookie and the httpPassword unmasked in the inspector. */
  inspectSecrets: v.optional(v.boolean("must be true or false")),
};

const HTTP_ONLY = ["locations", "hostHeaderRewrite", "requestHeaders", "responseHeaders", "httpUser", "httpPassword", "inspect", "inspectSecrets"] as const;
type HttpKeysOf = { type: string; remotePort?: number } & { [K in keyof typeof HttpAppKeys]?: unknown };
/** What is wrong in how an app's keys fit its type, as [key, message] pairs. */
export function httpKeysProblems(a: HttpKeysOf, needsDomain = true): [string, string][] {
  const out: [string, string][] = [];
  const web = a.type === "http" || a.type === "https";
  if (needsDomain && web && a.subdomain === undefined && !(a.customDomains as unknown[] | undefined)?.length) out.push(["subdomain", `an "${a.type}" app needs subdomain or customDomains: the domain users reach it at`]);
  if (web && a.remotePort) out.push(["remotePort", `is not used by "http" and "https" apps: they are served on the server's vhostHTTPPort and vhostHTTPSPort, by domain`]);
  for (const k of ["subdomain", "customDomains"] as const) if (!web && a[k] !== undefined) out.push([k, `applies to "http" and "https" apps only`]);
  for (const k of HTTP_ONLY) if (a.type !== "http" && a[k] !== undefined) out.push([k, `applies to "http" apps only${a.type === "https" ? " (an \"https\" app's TLS passes through the server unread)" : ""}`]);
  if ((a.httpUser === undefined) !== (a.httpPassword === undefined)) out.push([a.httpUser === undefined ? "httpUser" : "httpPassword", "httpUser and httpPassword go together"]);
  return out;
}
/** The checks that tie an app's keys to its type, each issue naming the key at fault. */
export const httpChecks = <T extends HttpKeysOf>(needsDomain = true) =>
  v.rawCheck<T>(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    for (const [key, message] of httpKeysProblems(dataset.value, needsDomain)) {
      addIssue({ message, path: [{ type: "object", origin: "value", input: dataset.value as Record<string, unknown>, key, value: (dataset.value as Record<string, unknown>)[key] }] });
    }
  });


/** Durations are written in seconds; the code reads them once, here, as `…Ms` fields beside them. */
export function withMs<T extends Record<K, number>, K extends keyof T & string>(keys: readonly K[]) {
  return v.transform((c: T) => {
    const ms = {} as Record<string, number>;
    for (const k of keys) ms[`${k}Ms`] = c[k] * 1000;
    return { ...c, ...(ms as { [P in K as `${P}Ms`]: number }) };
  });
}

