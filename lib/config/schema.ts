/**
 * Valibot schemas for server.toml, client.toml and the API's bodies: the one source
 * of truth for keys, defaults and types. Imports no runtime module (defaults.ts holds
 * the defaults the runtime shares).
 */
import * as v from "valibot";
import { parseCidr, parseHostPort } from "../addr.ts";
import { hostPort, NAME_PATTERN } from "../../protocol.ts";
import { PortSet } from "../ports.ts";
import { DEFAULT_ALLOW_PORTS, LOGIN_BLOCK_S, LOGIN_FAILURE_LIMIT, LOGIN_FAILURE_WINDOW_S, REGISTRATION_MAX_APPS, REGISTRATION_MAX_GROUPS, UDP_IDLE_TIMEOUT_S, VHOST_HEADER_TIMEOUT_S, VHOST_IDLE_TIMEOUT_S, VHOST_MAX_HEADER_BYTES, UDP_MAX_PEERS, UDP_RECEIVE_BUFFER_BYTES, INSPECT_REQUESTS, INSPECT_BODY_BYTES } from "./defaults.ts";

/** Bytes of receive buffer to ask for each UDP socket; 0 leaves the system's default. */
const UdpReceiveBuffer = v.optional(v.pipe(v.number("must be a number of bytes"), v.integer("must be an integer"), v.minValue(0, "must be 0 (the system default) or more"), v.maxValue(256 << 20, "must be at most 268435456 (256 MiB)")), UDP_RECEIVE_BUFFER_BYTES);

/** Group and app names as the client and the wire take them: short, printable, safe in logs and URLs. */
export const ExistingNameSchema = v.pipe(
  v.string("must be a string"),
  v.regex(NAME_PATTERN, "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"),
);
/**
 * Names of new groups and apps (server.toml, the API): also not ending in '.' or '-'. Names become
 * DNS labels (subdomains), where "cfg." is the same host as "cfg" and a label may not end in '-'
 * (RFC 1035); to a person both read as the same name. Older registries may hold such names: they
 * still load and log in (ExistingNameSchema).
 */
export const NameSchema = v.pipe(
  ExistingNameSchema,
  v.check((s) => !/[.-]$/.test(s), "must not end with '.' or '-' (it would read as the same name as one without)"),
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
const Seconds = (def: number) => v.optional(v.pipe(v.number("must be a number of seconds"), v.minValue(0.05, "must be at least 0.05 seconds"), v.maxValue(86400, "must be at most 86400 seconds")), def);
const LogLevelSchema = v.optional(v.picklist(["debug", "info", "warn", "error"], 'must be "debug", "info", "warn" or "error"'), "info");
const uniqueNames = (items: { name: string }[]) => new Set(items.map((i) => i.name)).size === items.length;
/** Group names are unique ignoring letter case: "CFG" beside "cfg" is a look-alike. */
const uniqueFolded = (items: { name: string }[]) => new Set(items.map((i) => i.name.toLowerCase())).size === items.length;
const AllowPortsSchema = v.pipe(
  v.string("must be a string"),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    const set = PortSet.parse(dataset.value);
    if (typeof set === "string") {
      addIssue({ message: set });
      return NEVER;
    }
    return set;
  }),
);

/** A port list kept as text (a group's own allowPorts), checked like the server's. */
export const PortSpecSchema = v.pipe(
  v.string("must be a string like 20000-29999,6022"),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const set = PortSet.parse(dataset.value);
    if (typeof set === "string") addIssue({ message: set });
  }),
);
/** An address or CIDR block, IPv4 or IPv6. */
export const CidrSchema = v.pipe(
  v.string("must be a string"),
  v.check((s) => parseCidr(s) !== null, "must be an IP address or a CIDR block like 10.0.0.0/8 or 2001:db8::/32"),
);
/** "512KB", "10MB", "1.5GB" per second (1 KB = 1024 bytes, as frp counts): at least 1 KB/s. */
export const BandwidthSchema = v.pipe(
  v.string('must be a rate like "10MB" or "512KB" (per second)'),
  v.check((s) => (parseBandwidth(s) ?? 0) >= 1024, 'must be a rate like "10MB" or "512KB" (per second), at least 1KB'),
);

/** Bytes per second of a bandwidthLimit ("10MB"); null when malformed. */
export function parseBandwidth(s: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*(KB|MB|GB)$/i.exec(s.trim());
  if (!m) return null;
  return Math.round(Number(m[1]) * 1024 ** ({ kb: 1, mb: 2, gb: 3 } as const)[m[2]!.toLowerCase() as "kb" | "mb" | "gb"]);
}

/** A host name as users type it: dot-separated letters, digits and '-' (LDH labels), kept lower-case, since names compare ignoring case. */
export const DomainSchema = v.pipe(
  v.string("must be a host name like app.example.com"),
  v.toLowerCase(),
  v.check(isDomain, "must be a host name like app.example.com: letters, digits and '-' in dot-separated labels, at most 253 characters"),
);
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
const httpChecks = <T extends HttpKeysOf>(needsDomain = true) =>
  v.rawCheck<T>(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    for (const [key, message] of httpKeysProblems(dataset.value, needsDomain)) {
      addIssue({ message, path: [{ type: "object", origin: "value", input: dataset.value as Record<string, unknown>, key, value: (dataset.value as Record<string, unknown>)[key] }] });
    }
  });

/** A count from 0 (no limit) to `max`. */
const CountSchema = (max: number) => v.pipe(v.number("must be a number"), v.integer("must be an integer"), v.minValue(0, "must be 0 (no limit) or more"), v.maxValue(max, `must be at most ${max}`));
const Count = (max: number, def = 0) => v.optional(CountSchema(max), def);
/** Most apps one group may have: one schema for server.toml, POST and PUT. */
export const MaxAppsSchema = CountSchema(10_000);

/** One app of a group, as the server registers it. */
export const ServerAppSchema = v.pipe(
  v.strictObject({
    name: NameSchema,
    type: v.optional(AppTypeSchema, "tcp"),
    remotePort: v.optional(PortSchema, 0),
    /** Only users from these addresses may connect (empty: everyone not denied). */
    allowIPs: v.optional(v.array(CidrSchema, "must be a list of addresses or CIDR blocks"), []),
    /** Users from these addresses are refused; deny wins over allow. */
    denyIPs: v.optional(v.array(CidrSchema, "must be a list of addresses or CIDR blocks"), []),
    /** Most users at once (UDP: peers); 0 means no limit. */
    maxConnections: Count(1_000_000),
    /** Bytes per second each way for all the app's streams together, frp's spelling ("10MB"); absent: no limit. */
    bandwidthLimit: v.optional(BandwidthSchema),
    ...HttpAppKeys,
  }),
  httpChecks(),
  // UDP has no backpressure: a limit could only drop datagrams, so it is refused rather than ignored.
  v.forward(
    v.check((a) => !(a.type === "udp" && a.bandwidthLimit), "applies to TCP apps only (a UDP app could only be limited by dropping datagrams)"),
    ["bandwidthLimit"],
  ),
);

/** Limits of one group, settable in server.toml and through the API. */
export const GroupLimits = {
  /** Most apps the group may register; 0 means no limit. */
  maxApps: v.optional(MaxAppsSchema, 0),
  /** Narrows the server-wide allowPorts for this group. */
  allowPorts: v.optional(PortSpecSchema),
  /** Bytes per second each way for all the group's apps together ("10MB"); absent: no limit. */
  bandwidthLimit: v.optional(BandwidthSchema),
};

/** Server `[tls]`: TLS on the control port (control and work connections). */
export const ServerTlsSchema = v.pipe(
  v.strictObject({
    enabled: v.optional(v.boolean("must be true or false"), false),
    certFile: v.optional(v.pipe(v.string(), v.nonEmpty("must not be empty"))),
    keyFile: v.optional(v.pipe(v.string(), v.nonEmpty("must not be empty"))),
  }),
  v.check((t) => !t.certFile === !t.keyFile, "certFile and keyFile go together: give both, or neither for a generated certificate"),
);

/** Client `[tls]`. */
export const ClientTlsSchema = v.strictObject({
  enabled: v.optional(v.boolean("must be true or false"), false),
  serverFingerprint: v.optional(
    v.pipe(
      v.string(),
      v.transform(normalizeFingerprint),
      v.regex(/^[0-9a-f]{64}$/, "must be the server certificate's SHA-256 fingerprint: 64 hex digits, colons allowed"),
    ),
  ),
  trustedCaFile: v.optional(v.pipe(v.string(), v.nonEmpty("must not be empty"))),
  serverName: v.optional(v.pipe(v.string(), v.nonEmpty("must not be empty"))),
});

/** Durations are written in seconds; the code reads them once, here, as `…Ms` fields beside them. */
function withMs<T extends Record<K, number>, K extends keyof T & string>(keys: readonly K[]) {
  return v.transform((c: T) => {
    const ms = {} as Record<string, number>;
    for (const k of keys) ms[`${k}Ms`] = c[k] * 1000;
    return { ...c, ...(ms as { [P in K as `${P}Ms`]: number }) };
  });
}

/** A PostgreSQL URL; `${NAME}` references are replaced from the environment (a missing one is an error naming it, never showing the URL). */
const DatabaseUrlSchema = v.pipe(
  v.string("must be a URL like postgres://user:password@host:5432/warren"),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    let missing: string | null = null;
    const url = dataset.value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => {
      const v = process.env[name];
      if (v === undefined) missing ??= name;
      return v ?? "";
    });
    if (missing) {
      addIssue({ message: `refers to the environment variable ${missing}, which is not set` });
      return NEVER;
    }
    if (!/^postgres(ql)?:\/\/[^\s]+$/.test(url)) {
      addIssue({ message: "must be a URL like postgres://user:password@host:5432/warren" });
      return NEVER;
    }
    return url;
  }),
);

/** `server.toml`. */
export const ServerConfigSchema = v.pipe(
  v.strictObject({
    bindAddr: v.optional(v.pipe(v.string(), v.nonEmpty("must not be empty")), "0.0.0.0"),
    controlPort: v.optional(PortSchema, 7000),
    apiHost: v.optional(v.pipe(v.string(), v.nonEmpty("must not be empty")), "127.0.0.1"),
    apiPort: v.optional(PortSchema, 7500),
    adminToken: v.optional(TokenSchema),
    dataDir: v.optional(v.pipe(v.string(), v.nonEmpty("must not be empty")), "./data"),
    allowPorts: v.optional(AllowPortsSchema, DEFAULT_ALLOW_PORTS),
    heartbeatTimeout: Seconds(30),
    userConnTimeout: Seconds(10),
    udpIdleTimeout: Seconds(UDP_IDLE_TIMEOUT_S),
    udpReceiveBuffer: UdpReceiveBuffer,
    handshakeTimeout: Seconds(5),
    poolSize: v.optional(v.pipe(v.number(), v.integer("must be an integer"), v.minValue(0), v.maxValue(256, "must be at most 256")), 8),
    maxPendingUsers: v.optional(v.pipe(v.number(), v.integer("must be an integer"), v.minValue(1), v.maxValue(100_000)), 1024),
    registrationToken: v.optional(TokenSchema),
    /** A token that may only read GET /metrics (for a scraper that should not hold the admin token). */
    metricsToken: v.optional(TokenSchema),
    /** Most groups the registration token may create (0: no limit). */
    registrationMaxGroups: Count(1_000_000, REGISTRATION_MAX_GROUPS),
    /** Most apps in a group created with the registration token (0: no limit). */
    registrationMaxApps: Count(10_000, REGISTRATION_MAX_APPS),
    /** Ports a group created with the registration token may have, within allowPorts (absent: allowPorts). */
    registrationAllowPorts: v.optional(PortSpecSchema),
    tls: v.optional(ServerTlsSchema, { enabled: false }),
    /** The shared port of "http" apps, routed by the Host header (0: off). */
    vhostHTTPPort: v.optional(PortSchema, 0),
    /** The shared port of "https" apps (routed by TLS SNI, passed through) and of "http" apps a certificate covers (TLS ends here); 0: off. */
    vhostHTTPSPort: v.optional(PortSchema, 0),
    /** An app with `subdomain = "x"` answers at "x.<subdomainHost>". */
    subdomainHost: v.optional(DomainSchema),
    /** Certificates the server ends TLS with on vhostHTTPSPort, chosen by SNI. */
    certificates: v.optional(
      v.pipe(
        v.array(
          v.strictObject({
            domains: v.pipe(v.array(DomainPatternSchema, "must be a list of host names"), v.minLength(1, "must list at least one domain")),
            certFile: v.pipe(v.string("must be the path of a PEM certificate"), v.nonEmpty("must not be empty")),
            keyFile: v.pipe(v.string("must be the path of a PEM private key"), v.nonEmpty("must not be empty")),
          }),
        ),
        v.maxLength(1000, "at most 1000 certificates"),
      ),
      [],
    ),
    /** Seconds a vhost connection may take to send a request's head (slowloris). */
    vhostHeaderTimeout: Seconds(VHOST_HEADER_TIMEOUT_S),
    /** Seconds an idle keep-alive connection on a vhost port stays open. */
    vhostIdleTimeout: Seconds(VHOST_IDLE_TIMEOUT_S),
    /** Largest request head (request line and headers) on the vhost ports; larger ones get 431. */
    vhostMaxHeaderBytes: v.optional(v.pipe(v.number("must be a number of bytes"), v.integer("must be an integer"), v.minValue(1024, "must be at least 1024"), v.maxValue(1 << 20, "must be at most 1048576")), VHOST_MAX_HEADER_BYTES),
    /** false forbids the request inspector on every app, whatever the app asks for. */
    allowInspect: v.optional(v.boolean("must be true or false"), true),
    /** Exchanges the inspector keeps per inspected app. */
    inspectRequests: v.optional(v.pipe(v.number("must be a number"), v.integer("must be an integer"), v.minValue(1, "must be at least 1"), v.maxValue(10_000, "must be at most 10000")), INSPECT_REQUESTS),
    /** Bytes of each request and response body the inspector keeps (0: heads only). */
    inspectBodyBytes: v.optional(v.pipe(v.number("must be a number of bytes"), v.integer("must be an integer"), v.minValue(0, "must be 0 or more"), v.maxValue(16 << 20, "must be at most 16777216")), INSPECT_BODY_BYTES),
    /** Serve the HTTP API over TLS too, with the control port's certificate. */
    apiTls: v.optional(v.boolean("must be true or false"), false),
    loginFailureLimit: v.optional(v.pipe(v.number(), v.integer("must be an integer"), v.minValue(1, "must be at least 1")), LOGIN_FAILURE_LIMIT),
    loginFailureWindow: Seconds(LOGIN_FAILURE_WINDOW_S),
    loginBlockTime: Seconds(LOGIN_BLOCK_S),
    logLevel: LogLevelSchema,
    groups: v.optional(
      v.pipe(
        v.array(
          v.strictObject({
            name: NameSchema,
            token: TokenSchema,
            ...GroupLimits,
            apps: v.optional(v.pipe(v.array(ServerAppSchema), v.check((items) => uniqueNames(items), "app names must be unique within a group")), []),
          }),
        ),
        v.check((items) => uniqueFolded(items), "group names must be unique, ignoring letter case"),
      ),
      [],
    ),
    // Several servers as one (issue 20): the registry in PostgreSQL, and how nodes reach each other.
    /** postgres://user:password@host:5432/db; `${NAME}` is replaced by the environment variable NAME. */
    database: v.optional(DatabaseUrlSchema),
    /** A file holding the database URL (a secret kept out of server.toml); instead of `database`. */
    databaseFile: v.optional(v.pipe(v.string("must be the path of a file holding the database URL"), v.nonEmpty("must not be empty"))),
    /** This node's name in the cluster (default: the host name). */
    nodeName: v.optional(NameSchema),
    /** Where other nodes' links arrive (0: any free port; cluster only). */
    peerPort: v.optional(PortSchema, 0),
    /** Where other nodes reach this node's peer port ("host:port"; default bindAddr:peerPort). */
    peerAddr: v.optional(v.pipe(v.string("must be host:port"), v.check((s) => parseHostPort(s) !== null, "must be host:port, like 10.0.0.2:7001"))),
    /** The secret nodes prove to each other (as clients prove their token). */
    clusterToken: v.optional(TokenSchema),
  }),
  withMs(["heartbeatTimeout", "userConnTimeout", "udpIdleTimeout", "handshakeTimeout", "loginFailureWindow", "loginBlockTime", "vhostHeaderTimeout", "vhostIdleTimeout"]),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const c = dataset.value;
    const issue = (key: string, message: string) => addIssue({ message, path: [{ type: "object", origin: "value", input: c as Record<string, unknown>, key, value: (c as Record<string, unknown>)[key] }] });
    if (c.database !== undefined && c.databaseFile !== undefined) issue("databaseFile", "give database or databaseFile, not both");
    const cluster = c.database !== undefined || c.databaseFile !== undefined;
    if (cluster && c.clusterToken === undefined) issue("clusterToken", "is required with database: nodes prove it to each other");
    if (!cluster) for (const k of ["clusterToken", "peerAddr", "nodeName"] as const) if (c[k] !== undefined) issue(k, "applies only with database (several servers as one)");
    if (cluster && c.peerAddr === undefined && /^(0\.0\.0\.0|::|\[::\])$/.test(c.bindAddr)) issue("peerAddr", `is required when bindAddr is "${c.bindAddr}": other nodes need an address they can reach`);
  }),
);

/** A local app of the client. */
export const ClientAppSchema = v.pipe(
  v.strictObject({
    name: ExistingNameSchema,
    type: v.optional(AppTypeSchema, "tcp"),
    localAddr: v.pipe(v.string("must be a string like 127.0.0.1:22"), v.check((s) => parseHostPort(s) !== null, "must be host:port, like 127.0.0.1:22 or [::1]:22")),
    remotePort: v.optional(PortSchema, 0),
    /** A PROXY protocol header (HAProxy's) before the user's bytes, so the app learns the user's address. */
    proxyProtocol: v.optional(v.picklist(["v1", "v2"], 'must be "v1" or "v2"')),
    /** For self-registration (apiUrl and registrationToken): the app's HTTP keys, as server.toml takes them. */
    ...HttpAppKeys,
  }),
  // A client's app names its domain only when the client registers it (the server holds the record otherwise).
  httpChecks(false),
  v.forward(
    v.check((a) => !(a.type === "udp" && a.proxyProtocol), "is for TCP apps only"),
    ["proxyProtocol"],
  ),
);

/** `client.toml`. */
export const ClientConfigSchema = v.pipe(
  v.strictObject({
    serverAddr: v.optional(v.pipe(v.string("must be the server's host name or address"), v.nonEmpty("must not be empty"))),
    serverPort: v.optional(v.pipe(PortSchema, v.minValue(1, "must be 1-65535")), 7000),
    /** Several servers of one cluster ("host:port"), instead of serverAddr/serverPort: on a loss the client tries the next. */
    servers: v.optional(
      v.pipe(
        v.array(v.pipe(v.string("must be host:port"), v.check((s) => parseHostPort(s) !== null && parseHostPort(s)!.port > 0, "must be host:port, like a.example.com:7000")), "must be a list of host:port"),
        v.minLength(1, "must list at least one server"),
        v.maxLength(32, "at most 32 servers"),
      ),
    ),
    apiUrl: v.optional(v.pipe(v.string(), v.url("must be a URL like http://server:7500"))),
    group: ExistingNameSchema,
    token: TokenSchema,
    registrationToken: v.optional(TokenSchema),
    tls: v.optional(ClientTlsSchema, { enabled: false }),
    heartbeatInterval: Seconds(10),
    heartbeatTimeout: Seconds(30),
    udpIdleTimeout: Seconds(UDP_IDLE_TIMEOUT_S),
    udpReceiveBuffer: UdpReceiveBuffer,
    /** The admin endpoint (`warren-client status`) on this loopback address instead of a Unix socket beside the config. */
    adminAddr: v.optional(
      v.pipe(
        v.string("must be a string like 127.0.0.1:7400"),
        v.check((s) => parseHostPort(s) !== null, "must be host:port, like 127.0.0.1:7400"),
        v.check((s) => /^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(parseHostPort(s)?.host ?? ""), "must be a loopback address (127.0.0.0/8, ::1 or localhost): the status is not for other machines"),
      ),
    ),
    udpMaxPeers: v.optional(v.pipe(v.number(), v.integer("must be an integer"), v.minValue(1, "must be at least 1"), v.maxValue(65_536, "must be at most 65536")), UDP_MAX_PEERS),
    logLevel: LogLevelSchema,
    apps: v.pipe(v.array(ClientAppSchema), v.minLength(1, "must list at least one app"), v.check((items) => uniqueNames(items), "app names must be unique")),
  }),
  withMs(["heartbeatInterval", "heartbeatTimeout", "udpIdleTimeout"]),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const c = dataset.value;
    if ((c.serverAddr === undefined) === (c.servers === undefined)) {
      const key = c.servers === undefined ? "serverAddr" : "servers";
      addIssue({ message: c.servers === undefined ? "is required (or servers, a list of host:port)" : "give serverAddr or servers, not both", path: [{ type: "object", origin: "value", input: c as Record<string, unknown>, key, value: (c as Record<string, unknown>)[key] }] });
    }
  }),
  // Every reader of the config may use serverAddr/serverPort: with `servers`, they are its first entry.
  v.transform((c) => {
    const servers = (c.servers ?? [hostPort(c.serverAddr!, c.serverPort)]).map((s) => parseHostPort(s)!);
    return { ...c, serverAddr: servers[0]!.host, serverPort: servers[0]!.port, servers };
  }),
);

/** Validated server configuration. */
export type ServerConfig = v.InferOutput<typeof ServerConfigSchema>;
/** Validated client configuration. */
export type ClientConfig = v.InferOutput<typeof ClientConfigSchema>;
/** A client app as configured. */
export type ClientApp = v.InferOutput<typeof ClientAppSchema>;

/** Lowercase hex without separators: "AB:CD:…" and "abcd…" compare equal. */
export function normalizeFingerprint(s: string): string {
  return s.replace(/:/g, "").trim().toLowerCase();
}

