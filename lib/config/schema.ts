/**
 * Valibot schemas for server.toml and the API's bodies: the one source of truth for
 * keys, defaults and types. Imports no runtime module (defaults.ts holds the defaults
 * the runtime shares). The pieces the client shares are in common.ts, client.toml's
 * schema in client-schema.ts; both are exported from here too.
 */
import * as v from "valibot";
import { parseCidr, parseHostPort } from "../addr.ts";
import { PortSet } from "../ports.ts";
import { DEFAULT_ALLOW_PORTS, LOGIN_BLOCK_S, LOGIN_FAILURE_LIMIT, LOGIN_FAILURE_WINDOW_S, REGISTRATION_MAX_APPS, REGISTRATION_MAX_GROUPS, UDP_IDLE_TIMEOUT_S, VHOST_HEADER_TIMEOUT_S, VHOST_IDLE_TIMEOUT_S, VHOST_MAX_HEADER_BYTES, INSPECT_REQUESTS, INSPECT_BODY_BYTES } from "./defaults.ts";
import { AppTypeSchema, DomainPatternSchema, ExistingNameSchema, HttpAppKeys, httpChecks, isDomain, LogLevelSchema, PortSchema, Seconds, TokenSchema, UdpReceiveBuffer, uniqueNames, withMs } from "./common.ts";

export { AppTypeSchema, DomainPatternSchema, ExistingNameSchema, HttpAppKeys, httpKeysProblems, isDomain, PortSchema, TokenSchema } from "./common.ts";
export * from "./client-schema.ts";

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


/** Validated server configuration. */
export type ServerConfig = v.InferOutput<typeof ServerConfigSchema>;
