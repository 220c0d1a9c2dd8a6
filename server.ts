/**
 * Warren server: the control port, one public port per app, and the HTTP API.
 * Usage: bun run server.ts [--config server.toml]
 */
import { join } from "node:path";
import type { Server } from "bun";
import { ConfigError, loadToml, parseFlags, validate } from "./lib/config/load.ts";
import { EXIT_CONFIG } from "./lib/config/defaults.ts";
import { ServerConfigSchema, type ServerConfig } from "./lib/config/schema.ts";
import { readText, writeNew } from "./lib/files.ts";
import { Hub } from "./lib/server/hub.ts";
import { log, setLogLevel } from "./lib/log.ts";
import { canBindTcp } from "./lib/ports.ts";
import { SqliteStore } from "./lib/registry/sqlite.ts";
import { RegistryView } from "./lib/registry/view.ts";
import type { TlsMaterial } from "./lib/tls.ts";
import { generateToken } from "./lib/secrets.ts";
import { hostPort } from "./protocol.ts";
import { versionLine } from "./lib/version.ts";
import { reload as applyReload, type ReloadResult, type ServerStore } from "./lib/server/reload.ts";
import { WarrenError } from "./lib/errors.ts";
import type { EdgeCertificate } from "./lib/server/http/edge.ts";
import { collectWhenQuiet } from "./lib/quiet-gc.ts";

/** File in dataDir that keeps the generated admin token. */
export const ADMIN_TOKEN_FILE = "admin-token";

const HELP = `warren-server: the public side of a Warren tunnel

Usage: warren-server [--config FILE]

  -c, --config FILE   server.toml to read (default: built-in defaults, no file)
  -h, --help          show this help
  -V, --version       show the version
      --verify        check the config (schema, groups and ports, TLS files) and exit:
                      0 when it is good, 2 with the file and key when not

Defaults: control port 7000 on 0.0.0.0, API on 127.0.0.1:7500, data in ./data.
Without adminToken in the config, one is generated on first start, stored in
dataDir/${ADMIN_TOKEN_FILE} (mode 0600) and printed once.`;

/**
 * Bun's own body limit, far above the API's (MAX_BODY_BYTES): Bun answers a body past it with an
 * empty 413, while the API refuses one past its own limit by Content-Length or after reading
 * MAX_BODY_BYTES of it, with a JSON error. Bun does not buffer the body up front, so this costs no memory.
 */
const BUN_BODY_LIMIT_BYTES = 2 ** 40;

/** A running server. */
export interface RunningServer {
  readonly hub: Hub;
  readonly controlPort: number;
  readonly apiPort: number;
  readonly adminToken: string;
  /** Reads the config file again and applies its groups and log level (see lib/server/reload.ts). */
  reload(): Promise<ReloadResult>;
  /** The peer port, in a cluster (0 otherwise). */
  readonly peerPort: number;
  /** Stops everything; in a cluster, resolves once this node's leases are given up (bounded by the database's timeout). */
  stop(): Promise<void>;
}

/** Finds the admin token: configured, stored in dataDir, or generated now (and then printed once). */
async function adminToken(config: ServerConfig, print: (line: string) => void): Promise<string> {
  if (config.adminToken) return config.adminToken;
  const file = join(config.dataDir, ADMIN_TOKEN_FILE);
  const stored = config.dataDir === ":memory:" ? null : (await readText(file))?.trim();
  if (typeof stored === "string") {
    if (stored.length < 16) throw new Error(`${file} holds no usable admin token (fewer than 16 characters): delete it to generate a new one, or set adminToken`);
    return stored;
  }
  const token = generateToken();
  if (config.dataDir !== ":memory:") {
    await writeNew(file, token + "\n", { private: true });
    print(`Generated an admin token, stored in ${file} (mode 0600). It is shown this once:\n\n    ${token}\n`);
  } else print(`Generated an admin token for this run (dataDir is :memory:, nothing is stored):\n\n    ${token}\n`);
  return token;
}

/**
 * Starts a server from a validated config. `file` names the config in errors.
 * With `[tls] enabled`, `tls` is the material from `loadServerTls`.
 */
export async function startServer(config: ServerConfig, file = "server.toml", print: (line: string) => void = console.log, tls?: TlsMaterial): Promise<RunningServer> {
  if (config.tls.enabled && !tls) throw new Error("TLS is enabled but no certificate was loaded");
  const reserved = new Set([config.controlPort, config.apiPort, config.vhostHTTPPort, config.vhostHTTPSPort].filter((p) => p !== 0));
  // Certificates first: a missing or mismatched file is a config error before anything is bound.
  const certificates = config.vhostHTTPSPort ? await loadCertificates(config, file) : [];
  const probe = (port: number) => canBindTcp(config.bindAddr, port);
  const clustered = config.database !== undefined || config.databaseFile !== undefined;
  // In a cluster the registry is PostgreSQL's; this node's SQLite file keeps only its traffic history.
  const local = await SqliteStore.open(config.dataDir, config.allowPorts, probe, reserved, config.subdomainHost ?? null);
  const clusterMod = clustered ? await import("./lib/cluster/start.ts") : null;
  let registry: ServerStore = local;
  let dbUrl = "";
  if (clusterMod) {
    try {
      dbUrl = await clusterMod.databaseUrl(config, file);
      registry = await clusterMod.openPgRegistry(dbUrl, config, local, probe, reserved);
    } catch (err) {
      local.close();
      throw err;
    }
    const close = registry.close.bind(registry);
    registry.close = () => {
      close();
      local.close();
    };
  }
  const errors = await registry.syncConfig(config.groups);
  if (errors.length) {
    registry.close();
    const e = errors[0]!;
    throw new ConfigError(file, e.path!, e.message, { cause: e });
  }
  let token: string;
  try {
    token = await adminToken(config, print);
  } catch (err) {
    registry.close();
    throw err;
  }
  const hub = new Hub(config, registry, await RegistryView.of(registry));
  if (config.vhostHTTPPort || config.vhostHTTPSPort) {
    // Loaded only by servers with vhost ports: the HTTP proxy and node:tls are weight the others need not carry.
    const [{ Vhosts }, { VhostRouter }] = await Promise.all([import("./lib/server/http/edge.ts"), import("./lib/server/http/router.ts")]);
    const router = new VhostRouter(config.subdomainHost ?? null);
    router.rebuild(hub.registry.list());
    const { Inspections } = await import("./lib/server/http/inspect.ts");
    const inspections = new Inspections({ allow: config.allowInspect, requests: config.inspectRequests, bodyBytes: config.inspectBodyBytes });
    inspections.prune(hub.registry.list());
    const settings = { router, headerTimeoutMs: config.vhostHeaderTimeoutMs, idleTimeoutMs: config.vhostIdleTimeoutMs, maxHeaderBytes: config.vhostMaxHeaderBytes, inspections };
    const vhosts = new Vhosts(router, settings, certificates);
    try {
      vhosts.listen(config.bindAddr, config.vhostHTTPPort, config.vhostHTTPSPort, !!config.vhostHTTPPort, !!config.vhostHTTPSPort);
    } catch (err) {
      vhosts.stop();
      registry.close();
      throw new Error(`cannot listen on the vhost ports ${config.vhostHTTPPort} and ${config.vhostHTTPSPort} of ${config.bindAddr} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    hub.vhosts = vhosts;
  }
  let controlPort: number;
  try {
    controlPort = hub.listen(config.controlPort, config.tls.enabled ? tls : undefined);
  } catch (err) {
    hub.vhosts?.stop();
    registry.close();
    throw new Error(`cannot listen on ${hostPort(config.bindAddr, config.controlPort)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let cluster: Awaited<ReturnType<NonNullable<typeof clusterMod>["joinCluster"]>> | null = null;
  if (clusterMod) {
    try {
      cluster = await clusterMod.joinCluster(config, dbUrl, hub, config.tls.enabled && tls ? { cert: tls.cert, key: tls.key } : undefined);
    } catch (err) {
      hub.vhosts?.stop();
      hub.stop();
      registry.close();
      throw err;
    }
  }
  let current = config;
  // One reload at a time: a second SIGHUP while one runs waits for it.
  let reloading: Promise<unknown> = Promise.resolve();
  const reload = (): Promise<ReloadResult> => {
    const run = reloading.then(async () => {
      if (file === "(defaults)") throw new WarrenError("no_config_file", "the server was started without --config: there is no file to reload");
      const next = await loadToml(ServerConfigSchema, file);
      const res = await applyReload(current, next, registry, file);
      current = res.config;
      return res;
    });
    reloading = run.catch(() => {});
    return run;
  };
  // The API (Hono, the dashboard's pages) is loaded by its first request: a server nobody asks
  // for it, or not yet, does not carry it (about 3 MiB; bench/optimisations.md).
  let api: Promise<{ fetch(req: Request, server: Server<undefined>): Response | Promise<Response> }> | null = null;
  const loadApi = () =>
    import("./lib/api/app.ts").then(({ createApi }) =>
      createApi(
        hub,
        { adminToken: token, registrationToken: config.registrationToken, metricsToken: config.metricsToken },
        { maxGroups: config.registrationMaxGroups, maxApps: config.registrationMaxApps, allowPorts: config.registrationAllowPorts },
        reload,
        { secureCookies: !!(config.apiTls && tls) },
      ),
    );
  const fetchApi = (req: Request, server: Server<undefined>) => (api ??= loadApi()).then((a) => a.fetch(req, server));
  let http: ReturnType<typeof Bun.serve>;
  try {
    const apiTls = config.apiTls && tls ? { cert: tls.cert, key: tls.key } : undefined;
    http = Bun.serve({ hostname: config.apiHost, port: config.apiPort, fetch: fetchApi, maxRequestBodySize: BUN_BODY_LIMIT_BYTES, tls: apiTls });
  } catch (err) {
    hub.stop();
    registry.close();
    throw new Error(`cannot serve the API on ${hostPort(config.apiHost, config.apiPort)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (config.tls.enabled && tls) {
    if (tls.generated) print(`warren: generated a self-signed TLS certificate in ${config.dataDir}`);
    print(`warren: TLS on the control port; certificate SHA-256 fingerprint ${tls.fingerprint}`);
  }
  const scheme = config.apiTls && tls ? "https" : "http";
  // Ports bound as 0 are known only now; apps must not be given them.
  reserved.add(controlPort);
  reserved.add(http.port!);
  log.info("warren server ready", {
    control: hostPort(config.bindAddr, controlPort),
    tls: config.tls.enabled,
    api: `${scheme}://${hostPort(config.apiHost, http.port!)}`,
    groups: hub.registry.list().length,
    dataDir: config.dataDir,
    ...(hub.vhosts?.httpPort ? { vhostHTTP: hostPort(config.bindAddr, hub.vhosts.httpPort) } : {}),
    ...(hub.vhosts?.httpsPort ? { vhostHTTPS: hostPort(config.bindAddr, hub.vhosts.httpsPort) } : {}),
  });
  return {
    hub,
    controlPort,
    apiPort: http.port!,
    adminToken: token,
    reload,
    peerPort: cluster?.peerPort ?? 0,
    async stop() {
      // Leases first: other nodes stop forwarding here, and this node's clients may log in elsewhere at once.
      const leaving = cluster?.stop();
      hub.vhosts?.stop();
      hub.stop();
      http.stop(true);
      await leaving?.catch(() => {});
      registry.close();
    },
  };
}

/** Reads `[[certificates]]`: each pair must load and match, or the config error names its key. */
async function loadCertificates(config: ServerConfig, file: string): Promise<EdgeCertificate[]> {
  const { createSecureContext } = await import("node:tls");
  const out: EdgeCertificate[] = [];
  for (const [i, c] of config.certificates.entries()) {
    const cert = await readText(c.certFile).catch(() => null);
    if (typeof cert !== "string") throw new ConfigError(file, `certificates[${i}].certFile`, `cannot read ${c.certFile}`);
    const key = await readText(c.keyFile).catch(() => null);
    if (typeof key !== "string") throw new ConfigError(file, `certificates[${i}].keyFile`, `cannot read ${c.keyFile}`);
    try {
      out.push({ domains: c.domains, context: createSecureContext({ cert, key }) });
    } catch (err) {
      throw new ConfigError(file, `certificates[${i}].keyFile`, `${c.keyFile} and ${c.certFile} do not make a usable pair (${(err as Error).message})`);
    }
  }
  return out;
}

/** Parses flags and the config file; exits 2 on any mistake in them. */
export async function loadServerConfig(argv: string[]): Promise<{ config: ServerConfig; file: string; verify?: true } | null> {
  let args;
  try {
    args = parseFlags(argv);
  } catch (err) {
    console.error(`warren-server: ${(err as Error).message}\n\n${HELP}`);
    process.exit(EXIT_CONFIG);
  }
  if (args.help) {
    console.log(HELP);
    return null;
  }
  if (args.version) {
    console.log(versionLine("warren-server"));
    return null;
  }
  const file = args.config;
  const config = file ? await loadToml(ServerConfigSchema, file) : validate(ServerConfigSchema, {}, "(defaults)");
  return { config, file: file ?? "(defaults)", verify: args.verify };
}

async function main(): Promise<void> {
  let loaded;
  try {
    loaded = await loadServerConfig(Bun.argv.slice(2));
    if (!loaded) return;
    if (loaded.verify) {
      const { verifyServer } = await import("./lib/server/verify.ts");
      console.log(await verifyServer(loaded.config, loaded.file));
      return;
    }
    setLogLevel(loaded.config.logLevel);
    const { tls: t, apiTls } = loaded.config;
    let material: TlsMaterial | undefined;
    if (t.enabled || apiTls) {
      try {
        // Loaded only when needed: a server without TLS has no use for it.
        const { loadServerTls } = await import("./lib/tls.ts");
        material = await loadServerTls(loaded.config.dataDir, t.certFile, t.keyFile);
      } catch (err) {
        // Name the key and the file that failed: the certificate, its key, or the generated pair in dataDir.
        const e = err as NodeJS.ErrnoException;
        const key = !t.certFile ? "dataDir" : e.path === t.keyFile ? "tls.keyFile" : "tls.certFile";
        const path = e.path ? `${e.path}: ` : "";
        throw new ConfigError(loaded.file, key, `cannot load the TLS certificate and key (${path}${e.code ?? e.message})`, { cause: err });
      }
    }
    // Signals are taken before the server starts: one that came between "ready" and a late handler would
    // end the process (SIGHUP's default) instead of reloading it.
    let server: RunningServer | null = null;
    const file = loaded.file;
    const shutdown = (sig: string) => {
      log.info("shutting down", { signal: sig });
      // A cluster node gives up its leases first; a database that does not answer holds the exit back at most 6 s.
      const done = () => process.exit(0);
      setTimeout(done, 6_000).unref();
      Promise.resolve(server?.stop()).then(done, done);
    };
    process.on("SIGINT", () => shutdown("SIGINT"));
    process.on("SIGTERM", () => shutdown("SIGTERM"));
    // SIGHUP re-reads the config file (it used to end the process, and every client with it).
    process.on("SIGHUP", () => {
      if (!server) return log.warn("SIGHUP while the server is starting: nothing to reload yet", { file });
      server.reload().then(
        (r) => log.info("configuration reloaded", { file, needsRestart: r.needsRestart.join(", ") || "none" }),
        (err: Error) => log.error("reload failed", { file, error: err.message }),
      );
    });
    server = await startServer(loaded.config, loaded.file, console.log, material);
    collectWhenQuiet();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`warren-server: config error: ${err.message}`);
      process.exit(EXIT_CONFIG);
    }
    console.error(`warren-server: ${(err as Error).message}`);
    process.exit(1);
  }
}

if (import.meta.main) await main();
