/**
 * `warren-server --verify`: checks a config the way a start would (the schema, the
 * groups against allowPorts and each other, the TLS files readable and matching)
 * without binding a port or touching dataDir. A problem is a ConfigError naming the key.
 */
import { ConfigError } from "../config/load.ts";
import type { ServerConfig } from "../config/schema.ts";
import { SqliteStore } from "../registry/sqlite.ts";

/** Checks `config` (read from `file`); returns a one-line summary, or throws a ConfigError. */
export async function verifyServer(config: ServerConfig, file: string): Promise<string> {
  const reserved = new Set([config.controlPort, config.apiPort].filter((p) => p !== 0));
  // An empty registry in memory: the file's groups must fit allowPorts, their limits and each other.
  const scratch = new SqliteStore(":memory:", config.allowPorts, () => true, reserved, config.subdomainHost ?? null);
  try {
    const errors = await scratch.syncConfig(config.groups);
    if (errors.length) throw new ConfigError(file, errors[0]!.path!, errors[0]!.message, { cause: errors[0] });
  } finally {
    scratch.close();
  }
  const { certFile, keyFile } = config.tls;
  if (certFile && keyFile) {
    const read = async (key: string, path: string) => {
      try {
        return await Bun.file(path).text();
      } catch (err) {
        throw new ConfigError(file, key, `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err });
      }
    };
    const [cert, key] = [await read("tls.certFile", certFile), await read("tls.keyFile", keyFile)];
    // node:crypto only here: the running server does not load it (lib/secrets.ts says why).
    const { X509Certificate, createPrivateKey } = await import("node:crypto");
    let matches: boolean;
    try {
      matches = new X509Certificate(cert).checkPrivateKey(createPrivateKey(key));
    } catch (err) {
      throw new ConfigError(file, "tls.certFile", `${certFile} and ${keyFile} are not a PEM certificate and private key (${(err as Error).message})`, { cause: err });
    }
    if (!matches) throw new ConfigError(file, "tls.keyFile", `${keyFile} is not the private key of ${certFile}`);
  }
  const apps = config.groups.reduce((n, g) => n + g.apps.length, 0);
  return `${file}: OK (${config.groups.length} group${config.groups.length === 1 ? "" : "s"}, ${apps} app${apps === 1 ? "" : "s"}${certFile ? ", TLS certificate and key match" : ""})`;
}
