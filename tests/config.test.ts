/** Config schemas and the CLIs: defaults, and errors a person can act on (file and key named, exit code 2). */
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import { join, resolve } from "node:path";
import { ClientConfigSchema, ServerConfigSchema } from "../lib/config/schema.ts";
import { ConfigError, loadToml, parseFlags, validate } from "../lib/config/load.ts";
import { EXIT_CONFIG } from "../lib/config/defaults.ts";

const ROOT = resolve(import.meta.dir, "..");
const tmp = fs.mkdtempSync(os.tmpdir() + "/warren-");
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let fileNo = 0;
/** Writes a file in the temp dir and returns its path. */
function write(name: string, text: string): string {
  const file = join(tmp, `${fileNo++}-${name}`);
  fs.writeFileSync(file, text);
  return file;
}

const TOKEN = "group-token-0123456789";
const CLIENT_BASE = `serverAddr = "tunnel.example.com"
group = "home"
token = "${TOKEN}"

[[apps]]
name = "ssh"
localAddr = "127.0.0.1:22"
`;
const GROUPS = `[[groups]]
name = "first"
token = "${TOKEN}"

[[groups.apps]]
name = "ssh"
remotePort = 20022

[[groups]]
name = "second"
token = "${TOKEN}"

[[groups.apps]]
name = "web"

[[groups.apps]]
name = "db"
remotePort = 20543
`;

/** The ConfigError that `run` throws (sync or async), checked to name `file` and `key`. */
async function configError(run: () => unknown, file: string, key: string): Promise<ConfigError> {
  let caught: unknown;
  try {
    await run();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(ConfigError);
  const err = caught as ConfigError;
  expect(err.file).toBe(file);
  expect(err.key).toBe(key);
  expect(err.message.startsWith(key ? `${file}: ${key}: ` : `${file}: `)).toBe(true);
  return err;
}

const serverToml = (text: string, name = "server.toml") => {
  const file = write(name, text);
  return { file, load: () => loadToml(ServerConfigSchema, file) };
};
const clientToml = (text: string) => {
  const file = write("client.toml", text);
  return { file, load: () => loadToml(ClientConfigSchema, file) };
};

describe("server.toml", () => {
  test("defaults", async () => {
    for (const c of [validate(ServerConfigSchema, {}, "x"), await serverToml("# nothing set\n").load()]) {
      expect(c).toMatchObject({
        bindAddr: "0.0.0.0",
        controlPort: 7000,
        apiPort: 7500,
        apiHost: "127.0.0.1",
        dataDir: "./data",
        heartbeatTimeout: 30,
        userConnTimeout: 10,
        logLevel: "info",
        groups: [],
      });
      expect(c.adminToken).toBeUndefined();
      expect(c.registrationToken).toBeUndefined();
      expect(c.allowPorts.has(1024)).toBe(true);
      expect(c.allowPorts.has(65535)).toBe(true);
      expect(c.allowPorts.has(1023)).toBe(false);
    }
  });

  test("a full file parses, with app defaults filled in", async () => {
    const c = await serverToml(`controlPort = 7100\napiPort = 0\nallowPorts = "20000-20999, 6022"\nheartbeatTimeout = 2.5\n\n${GROUPS}`).load();
    expect(c.controlPort).toBe(7100);
    expect(c.apiPort).toBe(0);
    expect(c.heartbeatTimeout).toBe(2.5);
    expect([c.allowPorts.has(6022), c.allowPorts.has(20999), c.allowPorts.has(21000), c.allowPorts.has(6023)]).toEqual([true, true, false, false]);
    expect(c.groups).toMatchObject([
      { name: "first", token: TOKEN, apps: [{ name: "ssh", type: "tcp", remotePort: 20022 }] },
      {
        name: "second",
        token: TOKEN,
        apps: [
          { name: "web", type: "tcp", remotePort: 0 },
          { name: "db", type: "tcp", remotePort: 20543 },
        ],
      },
    ]);
  });

  test("an unknown key is named, at the top and deep inside", async () => {
    const top = serverToml("contolPort = 7000\n");
    // Issue 18: the likely intended key is suggested.
    expect((await configError(top.load, top.file, "contolPort")).message).toBe(`${top.file}: contolPort: unknown key (did you mean "controlPort"?)`);
    const deep = serverToml(GROUPS.replace('name = "web"', 'name = "web"\nlocalAddr = "127.0.0.1:80"'));
    await configError(deep.load, deep.file, "groups[1].apps[0].localAddr");
  });

  test("a bad value is named with its full path", async () => {
    const port = serverToml(GROUPS.replace("remotePort = 20543", "remotePort = 70000"));
    expect((await configError(port.load, port.file, "groups[1].apps[1].remotePort")).message).toContain("0-65535");
    const str = serverToml('controlPort = "7000"\n');
    expect((await configError(str.load, str.file, "controlPort")).message).toContain("must be a number");
    const frac = serverToml("apiPort = 7500.5\n");
    await configError(frac.load, frac.file, "apiPort");
    const hb = serverToml("heartbeatTimeout = 0\n");
    await configError(hb.load, hb.file, "heartbeatTimeout");
    const level = serverToml('logLevel = "verbose"\n');
    await configError(level.load, level.file, "logLevel");
    const type = serverToml(GROUPS.replace('name = "web"', 'name = "web"\ntype = "sctp"'));
    await configError(type.load, type.file, "groups[1].apps[0].type");
    const name = serverToml(GROUPS.replace('name = "second"', 'name = "has space"'));
    await configError(name.load, name.file, "groups[1].name");
  });

  test("a missing or short token is named", async () => {
    const missing = serverToml(GROUPS.replace(`name = "second"\ntoken = "${TOKEN}"`, 'name = "second"'));
    expect((await configError(missing.load, missing.file, "groups[1].token")).message).toContain("is required");
    const short = serverToml(GROUPS.replace(`name = "first"\ntoken = "${TOKEN}"`, 'name = "first"\ntoken = "short"'));
    expect((await configError(short.load, short.file, "groups[0].token")).message).toContain("at least 16");
    const admin = serverToml('adminToken = "tiny"\n');
    await configError(admin.load, admin.file, "adminToken");
  });

  test("a bad allowPorts string is named and explained", async () => {
    for (const spec of ["abc", "30000-20000", "0-100", "20000-", "1-65536", "20000,,20001"]) {
      const f = serverToml(`allowPorts = "${spec}"\n`);
      const err = await configError(f.load, f.file, "allowPorts");
      expect(err.message.length).toBeGreaterThan(`${f.file}: allowPorts: `.length);
    }
    const notString = serverToml("allowPorts = 20000\n");
    await configError(notString.load, notString.file, "allowPorts");
  });

  test("duplicate app names and duplicate group names are refused", async () => {
    const apps = serverToml(GROUPS.replace('name = "db"', 'name = "web"'));
    expect((await configError(apps.load, apps.file, "groups[1].apps")).message).toContain("unique");
    const groups = serverToml(GROUPS.replace('name = "second"', 'name = "first"'));
    expect((await configError(groups.load, groups.file, "groups")).message).toContain("unique");
  });

  test("bad TOML names the file, the line and the key", async () => {
    const simple = serverToml("controlPort = 7000\napiPort = = 7500\n");
    expect((await configError(simple.load, simple.file, "apiPort")).message).toContain("line 2");
    const nested = serverToml(GROUPS.replace("remotePort = 20543", "remotePort = 20543x"));
    expect((await configError(nested.load, nested.file, "groups[1].apps[1].remotePort")).message).toMatch(/invalid TOML on line 18\b/);
    const dup = serverToml("controlPort = 1\ncontrolPort = 2\n");
    await configError(dup.load, dup.file, "controlPort");
    const header = serverToml("controlPort = 1\n[[groups]\n");
    expect((await configError(header.load, header.file, "groups[0]")).message).toContain("invalid TOML on line 2");
    const keyless = serverToml("controlPort = 1\n= 2\n");
    expect((await configError(keyless.load, keyless.file, "")).message.startsWith(`${keyless.file}: invalid TOML on line 2: `)).toBe(true);
  });

  test("an unreadable file is named", async () => {
    const file = join(tmp, "does-not-exist.toml");
    expect((await configError(() => loadToml(ServerConfigSchema, file), file, "")).message).toContain("ENOENT");
  });
});

describe("client.toml", () => {
  test("defaults", async () => {
    const c = await clientToml(CLIENT_BASE).load();
    expect(c).toMatchObject({ serverAddr: "tunnel.example.com", serverPort: 7000, heartbeatInterval: 10, heartbeatTimeout: 30, group: "home", token: TOKEN, logLevel: "info" });
    expect(c.apps).toMatchObject([{ name: "ssh", type: "tcp", localAddr: "127.0.0.1:22", remotePort: 0 }]);
    expect(c.apps).toHaveLength(1);
    expect(c.apiUrl).toBeUndefined();
  });

  test("required keys are named", async () => {
    for (const key of ["serverAddr", "group", "token"]) {
      const f = clientToml(CLIENT_BASE.replace(new RegExp(`^${key} = .*\\n`, "m"), ""));
      expect((await configError(f.load, f.file, key)).message).toContain("is required");
    }
    await configError(() => validate(ClientConfigSchema, { serverAddr: "h", group: "g", token: TOKEN }, "c.toml"), "c.toml", "apps");
    await configError(() => validate(ClientConfigSchema, { serverAddr: "h", group: "g", token: TOKEN, apps: [] }, "c.toml"), "c.toml", "apps");
  });

  test("bad values, unknown keys and duplicate apps are named", async () => {
    const cases: [string, string][] = [
      [CLIENT_BASE.replace('localAddr = "127.0.0.1:22"', 'localAddr = "127.0.0.1"'), "apps[0].localAddr"],
      [CLIENT_BASE.replace('localAddr = "127.0.0.1:22"', 'localAddr = "127.0.0.1:99999"'), "apps[0].localAddr"],
      [CLIENT_BASE + '\n[[apps]]\nname = "web"\nlocalAddr = "[::1]:80"\nremotePort = -1\n', "apps[1].remotePort"],
      [CLIENT_BASE + '\n[[apps]]\nname = "ssh"\nlocalAddr = "127.0.0.1:2222"\n', "apps"],
      ["serverPort = 0\n" + CLIENT_BASE, "serverPort"],
      ['apiUrl = "not a url"\n' + CLIENT_BASE, "apiUrl"],
      ["heartbeatInterval = -1\n" + CLIENT_BASE, "heartbeatInterval"],
      ["serverAdr = \"x\"\n" + CLIENT_BASE, "serverAdr"],
      [CLIENT_BASE + 'remotePort = 2222\nlocal = "x"\n', "apps[0].local"],
    ];
    for (const [text, key] of cases) {
      const f = clientToml(text);
      await configError(f.load, f.file, key);
    }
  });

  test("an IPv6 localAddr is accepted", async () => {
    const c = await clientToml(CLIENT_BASE.replace("127.0.0.1:22", "[::1]:22")).load();
    expect(c.apps[0]!.localAddr).toBe("[::1]:22");
  });
});

/** Runs an entry point to completion. */
async function cli(entry: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn([process.execPath, entry, ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe", env: { ...process.env, WARREN_LOG: "info" } });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

/** Reads `stream` until `needle` shows up; fails after `ms`. */
async function readUntil(stream: ReadableStream<Uint8Array>, needle: string, ms: number): Promise<string> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let timer: Timer | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`"${needle}" not seen within ${ms} ms; got:\n${text}`)), ms);
  });
  try {
    while (!text.includes(needle)) {
      const { value, done } = await Promise.race([reader.read(), timeout]);
      if (done) throw new Error(`stream ended before "${needle}"; got:\n${text}`);
      text += decoder.decode(value, { stream: true });
    }
    return text;
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
}

describe("CLI", () => {
  test("flags: --config, -c, --config= and --help parse; anything else is refused by name", () => {
    expect(parseFlags([])).toEqual({ help: false });
    expect(parseFlags(["--config", "a.toml"])).toEqual({ config: "a.toml", help: false });
    expect(parseFlags(["-c", "b.toml", "-h"])).toEqual({ config: "b.toml", help: true });
    expect(parseFlags(["--config=c d.toml"])).toEqual({ config: "c d.toml", help: false });
    expect(() => parseFlags(["--config"])).toThrow("'--config FILE' needs a value");
    expect(() => parseFlags(["--config="])).toThrow("'--config FILE' needs a value");
    expect(() => parseFlags(["-c", "--help"])).toThrow("'-c FILE' needs a value");
    expect(() => parseFlags(["--frobnicate"])).toThrow("unknown option '--frobnicate'");
    expect(() => parseFlags(["stray.toml"])).toThrow("unexpected argument 'stray.toml'");
  });

  test("server: a bad server.toml exits 2 and names the file and the key", async () => {
    const file = write("server.toml", GROUPS.replace("remotePort = 20543", "remotePort = 70000"));
    const r = await cli("server.ts", ["--config", file]);
    expect(r.code).toBe(EXIT_CONFIG);
    expect(r.stderr).toContain(`${file}: groups[1].apps[1].remotePort:`);
  });

  test("server: bad TOML exits 2 and names the file and the key", async () => {
    const file = write("server.toml", "controlPort = 7000\napiPort = [\n");
    const r = await cli("server.ts", ["-c", file]);
    expect(r.code).toBe(EXIT_CONFIG);
    expect(r.stderr).toContain(`${file}: apiPort: invalid TOML on line 2`);
  });

  test("server: a port outside allowPorts, caught by the registry, exits 2 and names the key", async () => {
    const dataDir = join(tmp, "data-refused");
    const file = write("server.toml", `controlPort = 0\napiPort = 0\ndataDir = "${dataDir}"\nallowPorts = "30000-30010"\n\n${GROUPS}`);
    const r = await cli("server.ts", ["--config", file]);
    expect(r.code).toBe(EXIT_CONFIG);
    expect(r.stderr).toContain(`${file}: groups[0].apps[0].remotePort:`);
    expect(r.stderr).not.toContain("warren server ready");
  });

  test("server: a missing config file exits 2 and names it", async () => {
    const file = join(tmp, "missing-server.toml");
    const r = await cli("server.ts", ["--config", file]);
    expect(r.code).toBe(EXIT_CONFIG);
    expect(r.stderr).toContain(file);
  });

  test("client: a bad client.toml exits 2 and names the file and the key", async () => {
    const file = write("client.toml", CLIENT_BASE.replace('localAddr = "127.0.0.1:22"', 'localAddr = "nowhere"'));
    const r = await cli("client.ts", ["--config", file]);
    expect(r.code).toBe(EXIT_CONFIG);
    expect(r.stderr).toContain(`${file}: apps[0].localAddr:`);
  });

  test("client: a tls.trustedCaFile that cannot be read exits 2 and names the key and the file", async () => {
    const ca = join(tmp, "missing-ca.pem");
    const base = CLIENT_BASE.replace('serverAddr = "tunnel.example.com"', 'serverAddr = "127.0.0.1"\nserverPort = 1');
    const file = write("client-ca.toml", `${base}\n[tls]\nenabled = true\ntrustedCaFile = ${JSON.stringify(ca)}\n`);
    const r = await cli("client.ts", ["--config", file]);
    expect(r.code).toBe(EXIT_CONFIG);
    expect(r.stderr).toContain(`tls.trustedCaFile: cannot read ${ca} (ENOENT)`);
  });

  test("client: no --config exits 2", async () => {
    const r = await cli("client.ts", []);
    expect(r.code).toBe(EXIT_CONFIG);
    expect(r.stderr).toContain("--config");
  });

  test("an unknown flag exits 2 and names it", async () => {
    for (const entry of ["server.ts", "client.ts"]) {
      const r = await cli(entry, ["--frobnicate"]);
      expect(r.code).toBe(EXIT_CONFIG);
      expect(r.stderr).toContain("frobnicate");
      expect(r.stderr).toContain("Usage:");
    }
  });

  test("--help exits 0 and prints usage", async () => {
    for (const [entry, name] of [
      ["server.ts", "warren-server"],
      ["client.ts", "warren-client"],
    ] as const) {
      for (const flag of ["--help", "-h"]) {
        const r = await cli(entry, [flag]);
        expect(r.code).toBe(0);
        expect(r.stdout).toContain(`Usage: ${name}`);
        expect(r.stdout).toContain("--config");
      }
    }
  });

  test("server: a good server.toml starts, serves /healthz, stores its admin token 0600, and stops on SIGTERM", async () => {
    const dataDir = join(tmp, "data-good");
    const file = write("server.toml", `bindAddr = "127.0.0.1"\ncontrolPort = 0\napiPort = 0\ndataDir = "${dataDir}"\nallowPorts = "20000-29999"\n\n${GROUPS}`);
    const proc = Bun.spawn([process.execPath, "server.ts", "--config", file], { cwd: ROOT, stdout: "pipe", stderr: "pipe", env: { ...process.env, WARREN_LOG: "info" } });
    try {
      const stderr = await readUntil(proc.stderr, "warren server ready", 10_000);
      const line = stderr.split("\n").find((l) => l.includes("warren server ready"))!;
      expect(line).toContain("groups=2");
      const api = /api=(http:\/\/127\.0\.0\.1:(\d+))/.exec(line);
      expect(api).not.toBeNull();
      expect(Number(api![2])).toBeGreaterThan(0);
      const res = await fetch(`${api![1]}/healthz`);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ status: "ok" });
      const tokenFile = join(dataDir, "admin-token");
      expect(fs.statSync(tokenFile).mode & 0o777).toBe(0o600);
      const token = fs.readFileSync(tokenFile, "utf8").trim();
      const groups = await fetch(`${api![1]}/api/groups`, { headers: { authorization: `Bearer ${token}` } });
      expect(groups.status).toBe(200);
      expect(((await groups.json()) as { groups: { name: string }[] }).groups.map((g) => g.name)).toEqual(["first", "second"]);
    } finally {
      proc.kill("SIGTERM");
    }
    expect(await proc.exited).toBe(0);
    expect(await new Response(proc.stdout).text()).toContain(fs.readFileSync(join(dataDir, "admin-token"), "utf8").trim());
  });
});
