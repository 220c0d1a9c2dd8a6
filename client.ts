/**
 * Warren client: runs beside the private apps of one group and relays their
 * users from the server. Usage: bun run client.ts --config client.toml
 */
import { ClientConfigSchema, type ClientConfig } from "./lib/config/client-schema.ts";
import { ConfigError, loadToml, parseFlags } from "./lib/config/load.ts";
import { EXIT_CONFIG } from "./lib/config/defaults.ts";
import { Connector, readTrustedCa } from "./lib/client/connector.ts";
import { log, setLogLevel } from "./lib/log.ts";
import { hostPort, type AppStatus } from "./protocol.ts";
import { versionLine } from "./lib/version.ts";
import { adminPlace, fetchStatus, formatStatus, serveAdmin } from "./lib/client/admin.ts";
import { collectWhenQuiet } from "./lib/quiet-gc.ts";

/** Keys of client.toml that only a restart applies (a reload applies `apps` and `logLevel`). */
const RESTART_KEYS = ["serverAddr", "serverPort", "group", "token", "apiUrl", "registrationToken", "tls", "heartbeatInterval", "heartbeatTimeout", "udpIdleTimeout", "udpMaxPeers", "udpReceiveBuffer", "adminAddr"] as const;

const HELP = `warren-client: the private side of a Warren tunnel

Usage: warren-client --config FILE
       warren-client status --config FILE [--json]

  -c, --config FILE   client.toml to read (required)
  -h, --help          show this help
  -V, --version       show the version
      --verify        check the config (schema, CA file) and exit: 0 when it is
                      good, 2 with the file and key when not
      --json          with status: print it as JSON

status asks the client running with FILE what it is doing (connected or not,
each app's public address, open streams and traffic, the last error), on the
Unix socket FILE.sock, or on adminAddr when the config sets one.

The client logs in to serverAddr:serverPort as its group, prints the public
endpoint of each app, relays users to each app's localAddr, and reconnects
by itself (exponential backoff with jitter, at most 30 s apart).`;

/** Parses flags and reads the config; exits 2 on any mistake in them. */
export async function loadClientConfig(argv: string[]): Promise<{ config: ClientConfig; file: string; verify?: true; status?: { json: boolean } } | null> {
  let args;
  try {
    args = parseFlags(argv, ["status"]);
  } catch (err) {
    console.error(`warren-client: ${(err as Error).message}\n\n${HELP}`);
    process.exit(EXIT_CONFIG);
  }
  if (args.help) {
    console.log(HELP);
    return null;
  }
  if (args.version) {
    console.log(versionLine("warren-client"));
    return null;
  }
  if (!args.config) {
    console.error(`warren-client: --config FILE is required\n\n${HELP}`);
    process.exit(EXIT_CONFIG);
  }
  return {
    config: await loadToml(ClientConfigSchema, args.config),
    file: args.config,
    verify: args.verify,
    status: args.command === "status" ? { json: !!args.json } : undefined,
  };
}

async function main(): Promise<void> {
  let loaded;
  try {
    loaded = await loadClientConfig(Bun.argv.slice(2));
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`warren-client: config error: ${err.message}`);
      process.exit(EXIT_CONFIG);
    }
    throw err;
  }
  if (!loaded) return;
  const { config, file } = loaded;
  setLogLevel(config.logLevel);
  let trustedCa: string | undefined;
  try {
    trustedCa = await readTrustedCa(config);
  } catch (err) {
    console.error(`warren-client: config error: ${file}: tls.trustedCaFile: cannot read ${config.tls.trustedCaFile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    process.exit(EXIT_CONFIG);
  }
  if (loaded.status) {
    const status = await fetchStatus(adminPlace(file, config.adminAddr));
    if (typeof status === "string") {
      console.error(`warren-client: ${status}`);
      process.exit(1);
    }
    console.log(loaded.status.json ? JSON.stringify(status, null, 2) : formatStatus(status));
    return;
  }
  if (loaded.verify) {
    const apps = config.apps.length;
    console.log(`${file}: OK (group ${config.group}, ${apps} app${apps === 1 ? "" : "s"}, server ${hostPort(config.serverAddr, config.serverPort)})`);
    return;
  }
  const connector = new Connector(config, { trustedCa });
  connector.on("fatal", () => process.exit(1));
  // The public address of each app, on stdout: what the person who started the client needs to know.
  const announce = (apps: readonly AppStatus[]) => {
    for (const a of apps) {
      if (a.error) continue;
      // An HTTP or HTTPS app is reached by name on the server's shared ports.
      const where = a.urls?.length ? a.urls.join(" and ") : a.type === "http" || a.type === "https" ? "no URL (the server did not say)" : hostPort(connector.serverHost, a.remotePort);
      console.log(`warren: app ${a.name} (${a.type}) is reachable at ${where}`);
    }
  };
  connector.on("online", announce);
  connector.on("apps", announce);
  let admin: { stop(): void } | null = null;
  const shutdown = (sig: string) => {
    log.info("shutting down", { signal: sig });
    admin?.stop();
    connector.stop();
    process.exit(0);
  };
  // SIGHUP re-reads client.toml: its apps and logLevel apply at once; other keys need a restart.
  process.on("SIGHUP", () => {
    loadToml(ClientConfigSchema, file).then(
      (next) => {
        const needsRestart = RESTART_KEYS.filter((k) => JSON.stringify(config[k]) !== JSON.stringify(next[k]));
        setLogLevel(next.logLevel);
        connector.reconfigure(next.apps);
        log.info("configuration reloaded", { file, needsRestart: needsRestart.join(", ") || "none" });
      },
      (err: Error) => log.error("reload failed; nothing was changed", { file, error: err.message }),
    );
  });
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  connector.start();
  collectWhenQuiet();
  // The status endpoint; the client runs without it if it cannot be opened (it says why).
  admin = await serveAdmin(connector, adminPlace(file, config.adminAddr)).catch((err: Error) => {
    log.warn("cannot open the admin endpoint; warren-client status will not answer", { error: err.message });
    return null;
  });
}

if (import.meta.main) await main();
