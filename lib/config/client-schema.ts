/**
 * Valibot schema of client.toml: the one source of truth for its keys, defaults and
 * types. The client process loads this and common.ts only, not the server's schema.
 */
import * as v from "valibot";
import { parseHostPort } from "../addr.ts";
import { hostPort } from "../../protocol.ts";
import { UDP_IDLE_TIMEOUT_S, UDP_MAX_PEERS } from "./defaults.ts";
import { AppTypeSchema, ExistingNameSchema, HttpAppKeys, httpChecks, LogLevelSchema, PortSchema, Seconds, TokenSchema, UdpReceiveBuffer, uniqueNames, withMs } from "./common.ts";

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


/** Validated client configuration. */
export type ClientConfig = v.InferOutput<typeof ClientConfigSchema>;
/** A client app as configured. */
export type ClientApp = v.InferOutput<typeof ClientAppSchema>;

/** Lowercase hex without separators: "AB:CD:…" and "abcd…" compare equal. */
export function normalizeFingerprint(s: string): string {
  return s.replace(/:/g, "").trim().toLowerCase();
}
