/** Day-two operations (issue 18): what a new user hit, each pinned by a test. */
import { afterAll, describe, expect, test } from "bun:test";
import { Connector } from "../lib/client/connector.ts";
import { setLogSink } from "../lib/log.ts";
import { clientConfig, createGroup, deadPort, echoApp, testServer, until } from "./helpers.ts";

const lines: string[] = [];
setLogSink((l) => lines.push(l));
const echo = await echoApp();
const cleanup: (() => void)[] = [];
afterAll(() => {
  for (const f of cleanup.reverse()) f();
  echo.close();
  setLogSink((l) => process.stderr.write(l + "\n"));
});

/** A connector for `group` at `server`, stopped after the file's tests. */
function client(server: { controlPort: number }, group: string, extra: Record<string, unknown> = {}): Connector {
  const c = new Connector(clientConfig(server, group, [{ name: "a", localAddr: `127.0.0.1:${echo.port}` }], extra));
  cleanup.push(() => c.stop());
  return c;
}

describe("the client says why it cannot reach the server", () => {
  test("connection refused names the address and port", async () => {
    const port = await deadPort();
    lines.length = 0;
    const c = client({ controlPort: port }, "g");
    c.start();
    await until(() => lines.some((l) => l.includes("cannot reach the server")), 5000, "the refusal logged");
    c.stop();
    const line = lines.find((l) => l.includes("cannot reach the server"))!;
    expect(line).toContain(`connection refused by 127.0.0.1:${port}`);
  });
});

describe("a refused login stops the client", () => {
  test("a wrong token: one failed login, a fatal event with a clear message, no retry to lock its address out", async () => {
    const server = await testServer();
    cleanup.push(() => server.stop());
    expect(await createGroup(server, "home", ["a"])).toBe(201);
    lines.length = 0;
    const c = client(server, "home", { token: "a-wrong-token-that-is-long" });
    const fatal = new Promise<string>((r) => c.once("fatal", r));
    c.start();
    expect(await fatal).toBe("authentication failed");
    expect(lines.some((l) => l.includes("the server refused the login (authentication failed): check group and token in client.toml"))).toBe(true);
    // Past the first backoff steps (at most 250 ms, then 500 ms): a retry would have come and failed by now.
    await Bun.sleep(800);
    expect(lines.filter((l) => l.includes("login failed")).length).toBe(1);
    expect(server.hub.guard.blocked("127.0.0.1")).toBe(false);
  });
});

describe("small things a new user hit", () => {
  test("a mistyped key is named with the key it was probably meant to be", async () => {
    const { validate } = await import("../lib/config/load.ts");
    const { ServerConfigSchema, ClientConfigSchema } = await import("../lib/config/schema.ts");
    expect(() => validate(ServerConfigSchema, { controlPrt: 7000 }, "server.toml")).toThrow('server.toml: controlPrt: unknown key (did you mean "controlPort"?)');
    expect(() => validate(ServerConfigSchema, { groups: [{ name: "g", token: "0123456789abcdef", apps: [{ name: "a", remotport: 6000 }] }] }, "server.toml")).toThrow(
      'server.toml: groups[0].apps[0].remotport: unknown key (did you mean "remotePort"?)',
    );
    const client = { serverAddr: "h", group: "g", token: "0123456789abcdef", apps: [{ name: "a", localAddr: "127.0.0.1:22" }] };
    expect(() => validate(ClientConfigSchema, { ...client, tls: { enable: true } }, "client.toml")).toThrow('client.toml: tls.enable: unknown key (did you mean "enabled"?)');
    // Nothing close: no guess.
    expect(() => validate(ServerConfigSchema, { zzz: 1 }, "server.toml")).toThrow(/^server\.toml: zzz: unknown key$/);
  });

  test("PUT on a group from server.toml is 409, like a token change: the next start would put the file's apps back", async () => {
    const server = await testServer({ groups: [{ name: "fromfile", token: "0123456789abcdef", apps: [{ name: "a" }] }] });
    cleanup.push(() => server.stop());
    const res = await fetch(`http://127.0.0.1:${server.apiPort}/api/groups/fromfile`, {
      method: "PUT",
      headers: { authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({ apps: [{ name: "a" }, { name: "b" }] }),
    });
    expect(res.status).toBe(409);
    expect(((await res.json()) as { error: string }).error).toBe('group "fromfile" comes from server.toml: change its apps there and restart the server');
    expect(server.hub.registry.get("fromfile")!.apps.map((a) => a.name)).toEqual(["a"]);
  });

  test("the client prints an IPv6 server address in brackets: reachable at [::1]:PORT", async () => {
    const { startClientProc, startServerProc, tempDir } = await import("./procs.ts");
    const dir = tempDir();
    const ctrl = await deadPort();
    const api = await deadPort();
    const server = await startServerProc(dir, `bindAddr = "::1"\ncontrolPort = ${ctrl}\napiPort = ${api}\ndataDir = "${dir}/data"\nadminToken = "admin-token-0123456789"\n[[groups]]\nname = "v6"\ntoken = "0123456789abcdef"\napps = [{ name = "e" }]\n`);
    cleanup.push(() => void server.proc.kill("SIGKILL"));
    const client = await startClientProc(dir, `serverAddr = "::1"\nserverPort = ${ctrl}\ngroup = "v6"\ntoken = "0123456789abcdef"\n[[apps]]\nname = "e"\nlocalAddr = "127.0.0.1:${echo.port}"\n`, ["e"]);
    cleanup.push(() => void client.proc.kill("SIGKILL"));
    expect(client.proc.lines.some((l) => l === `warren: app e (tcp) is reachable at [::1]:${client.ports.e}`)).toBe(true);
  }, 30_000);

  test("a TLS certificate or key that cannot be read is named, file and key", async () => {
    const { tempDir } = await import("./procs.ts");
    const dir = tempDir();
    const file = `${dir}/server.toml`;
    await Bun.write(file, `controlPort = 0\napiPort = 0\ndataDir = ":memory:"\nadminToken = "admin-token-0123456789"\n[tls]\nenabled = true\ncertFile = "${dir}/missing-cert.pem"\nkeyFile = "${dir}/missing-key.pem"\n`);
    const p = Bun.spawn([process.execPath, `${import.meta.dir}/../server.ts`, "--config", file], { stdout: "pipe", stderr: "pipe" });
    const stderr = await new Response(p.stderr).text();
    expect(await p.exited).toBe(2);
    expect(stderr).toContain(`${file}: tls.certFile: cannot load the TLS certificate and key (${dir}/missing-cert.pem: ENOENT)`);
  });
});

describe("access-list and limit changes apply to the open port", () => {
  test("PUT denyIPs on an online app: new users are refused at once, the established stream goes on, the port is never closed", async () => {
    const { onlineClient, randomData, roundTrip, sha256 } = await import("./helpers.ts");
    const net = await import("node:net");
    const server = await testServer();
    cleanup.push(() => server.stop());
    const admin = (body: unknown) =>
      fetch(`http://127.0.0.1:${server.apiPort}/api/groups/live`, { method: "PUT", headers: { authorization: `Bearer ${server.adminToken}` }, body: JSON.stringify(body) }).then((r) => r.status);
    expect(await createGroup(server, "live", ["e"])).toBe(201);
    const { connector, apps } = await onlineClient(clientConfig(server, "live", [{ name: "e", localAddr: `127.0.0.1:${echo.port}` }]));
    cleanup.push(() => connector.stop());
    const port = apps[0]!.remotePort;
    // An established stream, echoing.
    const s = net.connect({ port, host: "127.0.0.1" });
    s.on("error", () => {});
    let got = 0;
    s.on("data", (d: Buffer) => (got += d.length));
    s.write(randomData(1000, 1));
    await until(() => got === 1000, 5000, "the first echo");
    // Deny everyone on loopback: applied to the open listener (no new bind, no refused connect).
    expect(await admin({ apps: [{ name: "e", remotePort: port, denyIPs: ["127.0.0.0/8"] }] })).toBe(200);
    const refused = await new Promise<string>((resolve) => {
      const u = net.connect({ port, host: "127.0.0.1" }, () => u.write("hello"));
      u.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      u.on("end", () => resolve("FIN"));
    });
    expect(refused).toBe("ECONNRESET");
    const view = await fetch(`http://127.0.0.1:${server.apiPort}/api/groups/live`, { headers: { authorization: `Bearer ${server.adminToken}` } }).then((r) => r.json() as Promise<{ apps: { deniedConnections: number; remotePort: number }[] }>);
    expect(view.apps[0]).toMatchObject({ deniedConnections: 1, remotePort: port });
    // The stream that was already there goes on.
    s.write(randomData(1000, 2));
    await until(() => got === 2000, 5000, "the second echo on the established stream");
    s.destroy();
    // And lifting the rule lets new users in again, on the same port.
    expect(await admin({ apps: [{ name: "e", remotePort: port }] })).toBe(200);
    const data = randomData(50_000, 3);
    expect((await roundTrip(port, data)).hash).toBe(sha256(data));
  });
});

describe("--verify checks a config without starting anything", () => {
  const run = async (role: "server" | "client", file: string) => {
    const p = Bun.spawn([process.execPath, `${import.meta.dir}/../${role}.ts`, "--verify", "--config", file], { stdout: "pipe", stderr: "pipe" });
    const [stdout, stderr] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
    return { code: await p.exited, stdout, stderr };
  };

  test("server: a good file exits 0 with a summary and binds nothing; groups that clash, or a key that is not the certificate's, exit 2 naming the key", async () => {
    const { tempDir } = await import("./procs.ts");
    const { loadServerTls, GENERATED_CERT_FILE, GENERATED_KEY_FILE } = await import("../lib/tls.ts");
    const { canBindTcp } = await import("../lib/ports.ts");
    const dir = tempDir();
    const port = await deadPort();
    const groups = `[[groups]]\nname = "a"\ntoken = "0123456789abcdef"\napps = [{ name = "x", remotePort = 21000 }, { name = "y" }]\n[[groups]]\nname = "b"\ntoken = "0123456789abcdef"\napps = [{ name = "z", remotePort = 21001 }]\n`;
    const good = `${dir}/good.toml`;
    await Bun.write(good, `controlPort = ${port}\ndataDir = "${dir}/never-created"\n${groups}`);
    const ok = await run("server", good);
    expect(ok).toMatchObject({ code: 0, stdout: `${good}: OK (2 groups, 3 apps)\n` });
    expect(canBindTcp("0.0.0.0", port)).toBe(true);
    expect(await Bun.file(`${dir}/never-created/warren.db`).exists()).toBe(false);

    const clash = `${dir}/clash.toml`;
    await Bun.write(clash, groups.replace("remotePort = 21001", "remotePort = 21000"));
    const bad = await run("server", clash);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(`${clash}: groups[1].apps[0].remotePort: tcp port 21000 is taken by a/x`);

    // Two generated pairs: the certificate of one with the key of the other.
    await loadServerTls(`${dir}/one`);
    await loadServerTls(`${dir}/two`);
    const tls = `${dir}/tls.toml`;
    await Bun.write(tls, `[tls]\nenabled = true\ncertFile = "${dir}/one/${GENERATED_CERT_FILE}"\nkeyFile = "${dir}/two/${GENERATED_KEY_FILE}"\n`);
    const mismatch = await run("server", tls);
    expect(mismatch.code).toBe(2);
    expect(mismatch.stderr).toContain(`${tls}: tls.keyFile: ${dir}/two/${GENERATED_KEY_FILE} is not the private key of ${dir}/one/${GENERATED_CERT_FILE}`);
    await Bun.write(tls, `[tls]\nenabled = true\ncertFile = "${dir}/one/${GENERATED_CERT_FILE}"\nkeyFile = "${dir}/one/${GENERATED_KEY_FILE}"\n`);
    expect(await run("server", tls)).toMatchObject({ code: 0, stdout: `${tls}: OK (0 groups, 0 apps, TLS certificate and key match)\n` });
  });

  test("client: a good file exits 0; a bad key exits 2 naming it", async () => {
    const { tempDir } = await import("./procs.ts");
    const dir = tempDir();
    const file = `${dir}/client.toml`;
    await Bun.write(file, `serverAddr = "127.0.0.1"\nserverPort = 1\ngroup = "g"\ntoken = "0123456789abcdef"\n[[apps]]\nname = "a"\nlocalAddr = "127.0.0.1:22"\n`);
    expect(await run("client", file)).toMatchObject({ code: 0, stdout: `${file}: OK (group g, 1 app, server 127.0.0.1:1)\n` });
    await Bun.write(file, `serverAddr = "127.0.0.1"\ngroup = "g"\ntoken = "short"\n[[apps]]\nname = "a"\nlocalAddr = "127.0.0.1:22"\n`);
    const bad = await run("client", file);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(`${file}: token: must be at least 16 characters`);
  });
});

describe("warren-client status", () => {
  test("answers what the running client is doing, for a person and as JSON, on the Unix socket beside its config; says so when no client runs", async () => {
    const { startClientProc, tempDir } = await import("./procs.ts");
    const { randomData, roundTrip, sha256 } = await import("./helpers.ts");
    const server = await testServer();
    cleanup.push(() => server.stop());
    expect(await createGroup(server, "stat", ["e", "gone"])).toBe(201);
    const dir = tempDir();
    const toml = `serverAddr = "127.0.0.1"\nserverPort = ${server.controlPort}\ngroup = "stat"\ntoken = "test-token-0123456789abcdef"\n[[apps]]\nname = "e"\nlocalAddr = "127.0.0.1:${echo.port}"\n[[apps]]\nname = "nope"\nlocalAddr = "127.0.0.1:9"\n`;
    const client = await startClientProc(dir, toml, ["e"]);
    cleanup.push(() => void client.proc.kill("SIGKILL"));
    const file = `${dir}/client.toml`;
    await client.proc.waitFor(/admin endpoint ready/);
    const data = randomData(100_000, 20);
    expect((await roundTrip(client.ports.e!, data)).hash).toBe(sha256(data));
    const status = async (...extra: string[]) => {
      const p = Bun.spawn([process.execPath, `${import.meta.dir}/../client.ts`, "status", "--config", file, ...extra], { stdout: "pipe", stderr: "pipe" });
      const [stdout, stderr] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
      return { code: await p.exited, stdout, stderr };
    };
    const json = await status("--json");
    expect(json.code).toBe(0);
    const s = JSON.parse(json.stdout);
    expect(s).toMatchObject({ group: "stat", server: `127.0.0.1:${server.controlPort}`, online: true, lastError: null });
    expect(s.apps[0]).toMatchObject({ name: "e", type: "tcp", publicAddr: `127.0.0.1:${client.ports.e}`, error: null, bytesToApp: 100_000, bytesFromApp: 100_000 });
    await until(async () => JSON.parse((await status("--json")).stdout).apps[0].connections === 0, 5000, "the finished stream no longer open");
    expect(s.apps[1]).toMatchObject({ name: "nope", publicAddr: null, error: 'unknown app "nope": group "stat" has no such app' });
    const text = await status();
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`group stat, server 127.0.0.1:${server.controlPort}: online since `);
    expect(text.stdout).toContain(`  e (tcp) 127.0.0.1:${echo.port} -> 127.0.0.1:${client.ports.e}; 0 open, 100000 B to the app, 100000 B from it`);
    // Only the client's own user may ask.
    const { statSync } = await import("node:fs");
    expect(statSync(`${file}.sock`).mode & 0o077).toBe(0); // no rights for group or others
    await client.proc.kill("SIGTERM");
    const none = await status();
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(`no client answers at ${file}.sock`);
  }, 30_000);
});
