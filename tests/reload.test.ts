/**
 * Reloading server.toml in a running server (issue 18): groups and apps added, changed or
 * removed apply at once; nothing else is touched: other groups stay online and their
 * streams carry on byte-exact; keys that need a restart are reported; a bad file changes nothing.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Connector } from "../lib/client/connector.ts";
import { loadToml } from "../lib/config/load.ts";
import { ServerConfigSchema } from "../lib/config/schema.ts";
import { setLogLevel } from "../lib/log.ts";
import { startServer } from "../server.ts";
import { clientConfig, deadPort, echoApp, randomData, sha256, TOKEN, until } from "./helpers.ts";
import { spawnWarren, tempDir } from "./procs.ts";
import { userPeer } from "./wire.ts";

const echo = await echoApp();
const cleanup: (() => void)[] = [];
afterAll(() => {
  for (const f of cleanup.reverse()) f();
  echo.close();
});

const ADMIN = "admin-token-0123456789";
const group = (name: string, apps: string[], extra = "") => `[[groups]]\nname = "${name}"\ntoken = "${TOKEN}"\n${extra}apps = [${apps.map((a) => `{ name = "${a}" }`).join(", ")}]\n`;
const serverFile = (dir: string, body: string, head = "") => {
  const file = join(dir, "server.toml");
  writeFileSync(file, `bindAddr = "127.0.0.1"\ncontrolPort = 0\napiPort = 0\ndataDir = ":memory:"\nadminToken = "${ADMIN}"\nlogLevel = "warn"\n${head}${body}`);
  return file;
};

/** A server started from a file, as `warren-server --config FILE` does. */
async function fromFile(file: string) {
  const config = await loadToml(ServerConfigSchema, file);
  setLogLevel(config.logLevel);
  const server = await startServer(config, file, () => {});
  cleanup.push(() => server.stop());
  return server;
}

/** A user streaming `total` bytes through an echo app, checked at the end. */
function echoStream(port: number, total: number) {
  const data = randomData(total, 18);
  const user = userPeer(port);
  let sent = 0;
  const pump = () => {
    while (sent < total) {
      const chunk = data.subarray(sent, sent + 16 * 1024);
      sent += chunk.length;
      if (!user.sock.write(chunk)) return void user.sock.once("drain", pump);
    }
    user.sock.end();
  };
  user.sock.once("connect", pump);
  return { user, want: sha256(data), total };
}

describe("reload", () => {
  test("groups added, changed and removed apply at once; an unchanged group stays online and its stream arrives byte-exact", async () => {
    const dir = tempDir();
    const file = serverFile(dir, group("a", ["e"]) + group("c", ["e"]));
    const server = await fromFile(file);
    const c = new Connector(clientConfig(server, "a", [{ name: "e", localAddr: `127.0.0.1:${echo.port}` }]));
    cleanup.push(() => c.stop());
    const online = new Promise((r) => c.once("online", r));
    c.start();
    await online;
    const session = server.hub.session("a")!;
    const port = c.statuses[0]!.remotePort;
    // 8 MiB through the echo app, half of it before the reload and half after.
    const s = echoStream(port, 8 << 20);
    await until(() => s.user.got > 4 << 20, 10_000, "half the stream");
    serverFile(dir, group("a", ["e", "f"]) + group("b", ["x"]));
    const res = await server.reload();
    expect(res.needsRestart).toEqual([]);
    expect(server.hub.registry.list().map((g) => `${g.name}:${g.apps.map((a) => a.name).join(",")}`)).toEqual(["a:e,f", "b:x"]);
    await until(() => s.user.ended !== null, 20_000, "the stream's end");
    expect(s.user.ended).toBe("FIN");
    expect(s.user.got).toBe(s.total);
    expect(sha256(s.user.bytes)).toBe(s.want);
    // The same session: no reconnect, the same port.
    expect(server.hub.session("a")).toBe(session);
    expect(session.ended).toBe(false);
    expect(c.statuses[0]!.remotePort).toBe(port);
  }, 30_000);

  test("a file that cannot be applied changes nothing, and names the key; the server keeps serving", async () => {
    const dir = tempDir();
    const file = serverFile(dir, group("a", ["e"], "maxApps = 1\n"));
    const server = await fromFile(file);
    const before = JSON.stringify(server.hub.registry.list());
    // A new group "d" first, then a change to "a" that breaks its own limit: neither may be applied.
    serverFile(dir, group("d", ["x"]) + group("a", ["e", "f"], "maxApps = 1\n"));
    await expect(server.reload()).rejects.toThrow(`${file}: groups[1].apps: group "a" may have at most 1 app, not 2`);
    expect(JSON.stringify(server.hub.registry.list())).toBe(before);
    // Not TOML at all.
    writeFileSync(file, "this is = = not toml\n");
    await expect(server.reload()).rejects.toThrow(file);
    expect(JSON.stringify(server.hub.registry.list())).toBe(before);
  });

  test("keys that need a restart are reported and left as they were", async () => {
    const dir = tempDir();
    const file = serverFile(dir, group("a", ["e"]));
    const server = await fromFile(file);
    writeFileSync(file, `bindAddr = "127.0.0.1"\ncontrolPort = ${await deadPort()}\napiPort = 0\ndataDir = ":memory:"\nadminToken = "${ADMIN}"\nlogLevel = "warn"\npoolSize = 3\n${group("a", ["e"])}`);
    const res = await server.reload();
    expect(res.needsRestart).toEqual(["controlPort", "poolSize"]);
    expect(server.hub.poolSize).toBe(8);
  });

  test("POST /api/reload: the admin's reload answers what needs a restart; the registration token gets 403; a file that cannot be read is 400", async () => {
    const dir = tempDir();
    const file = serverFile(dir, group("a", ["e"]), 'registrationToken = "registration-token-0123456789"\n');
    const server = await fromFile(file);
    const post = (auth: string, port = server.apiPort) => fetch(`http://127.0.0.1:${port}/api/reload`, { method: "POST", headers: { authorization: `Bearer ${auth}` } });
    serverFile(dir, group("a", ["e"]) + group("b", ["x"]), 'registrationToken = "registration-token-0123456789"\n');
    const ok = await post(ADMIN);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ reloaded: true, needsRestart: [] });
    expect(server.hub.registry.get("b")).toBeDefined();
    expect((await post("registration-token-0123456789")).status).toBe(403);
    const { testServer } = await import("./helpers.ts");
    const bare = await testServer();
    cleanup.push(() => bare.stop());
    // testServer's config has no file behind it: its name is "test", which cannot be read.
    const none = await post(bare.adminToken, bare.apiPort);
    expect(none.status).toBe(400);
    expect(((await none.json()) as { error: string }).error).toContain("test: cannot read the file");
  });
});

test("SIGHUP reloads a running server process instead of ending it", async () => {
  const dir = tempDir();
  const ctrl = await deadPort();
  const api = await deadPort();
  const head = `bindAddr = "127.0.0.1"\ncontrolPort = ${ctrl}\napiPort = ${api}\ndataDir = ":memory:"\nadminToken = "${ADMIN}"\n`;
  const proc = spawnWarren("server", dir, head + group("a", ["e"]));
  cleanup.push(() => void proc.kill("SIGKILL"));
  await proc.waitFor(/warren server ready/);
  writeFileSync(join(dir, "server.toml"), head + group("a", ["e"]) + group("b", ["x"]));
  const mark = proc.lines.length;
  process.kill(proc.pid, "SIGHUP");
  await proc.waitFor(/configuration reloaded .*needsRestart=none/, 10_000, mark);
  const res = await fetch(`http://127.0.0.1:${api}/api/groups/b`, { headers: { authorization: `Bearer ${ADMIN}` } });
  expect(res.status).toBe(200);
  expect(proc.child.exitCode).toBeNull();
}, 20_000); // a server process started and reloaded: seconds on two busy cores, not the default 5

test("SIGHUP on the client: an app added and a local address changed apply without a new login; the open stream goes on byte-exact", async () => {
  const { testServer, createGroup } = await import("./helpers.ts");
  const { startClientProc } = await import("./procs.ts");
  const server = await testServer();
  cleanup.push(() => server.stop());
  expect(await createGroup(server, "hup", ["e", "f"])).toBe(201);
  // A second echo app that counts its connections: where e's users go after the reload.
  const net = await import("node:net");
  let otherConns = 0;
  const otherSrv = net.createServer({ allowHalfOpen: true }, (c) => {
    otherConns++;
    c.on("error", () => {}).pipe(c);
  });
  await new Promise<void>((r) => otherSrv.listen(0, "127.0.0.1", r));
  const other = { port: (otherSrv.address() as { port: number }).port };
  cleanup.push(() => void otherSrv.close());
  const dir = tempDir();
  const toml = (apps: string) => `serverAddr = "127.0.0.1"\nserverPort = ${server.controlPort}\ngroup = "hup"\ntoken = "${TOKEN}"\n${apps}`;
  const app = (name: string, port: number) => `[[apps]]\nname = "${name}"\nlocalAddr = "127.0.0.1:${port}"\n`;
  const client = await startClientProc(dir, toml(app("e", echo.port)), ["e"]);
  cleanup.push(() => void client.proc.kill("SIGKILL"));
  const session = server.hub.session("hup")!;
  const port = client.ports.e!;
  const s = echoStream(port, 8 << 20);
  await until(() => s.user.got > 2 << 20, 10_000, "a quarter of the stream");
  // f is added; e now points at another echo app.
  writeFileSync(join(dir, "client.toml"), toml(app("e", other.port) + app("f", echo.port)));
  const mark = client.proc.lines.length;
  process.kill(client.proc.pid, "SIGHUP");
  const f = Number((await client.proc.waitFor(/app f \(tcp\) is reachable at [^ ]+:(\d+)/, 10_000, mark))[1]);
  expect(client.proc.lines.slice(mark).some((l) => /configuration reloaded .*needsRestart=none/.test(l))).toBe(true);
  // The stream that was open goes on to its end, byte-exact, on the same session.
  await until(() => s.user.ended !== null, 20_000, "the stream's end");
  expect([s.user.ended, s.user.got, sha256(s.user.bytes)]).toEqual(["FIN", s.total, s.want]);
  expect(server.hub.session("hup")).toBe(session);
  // f serves, and e's new users reach the other echo app.
  const data = randomData(10_000, 19);
  const { roundTrip } = await import("./helpers.ts");
  expect((await roundTrip(f, data)).hash).toBe(sha256(data));
  expect(otherConns).toBe(0);
  expect((await roundTrip(port, data)).hash).toBe(sha256(data));
  expect(otherConns).toBe(1);
  // f removed again: its public port closes at once, e goes on serving.
  writeFileSync(join(dir, "client.toml"), toml(app("e", other.port)));
  const mark2 = client.proc.lines.length;
  process.kill(client.proc.pid, "SIGHUP");
  await client.proc.waitFor(/configuration reloaded/, 10_000, mark2);
  const refused = async () =>
    new Promise<string>((resolve) => {
      const c = net.connect({ port: f, host: "127.0.0.1" }, () => resolve("connected"));
      c.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
  await until(async () => (await refused()) === "ECONNREFUSED", 5000, "f's port closed");
  expect((await roundTrip(port, data)).hash).toBe(sha256(data));
  expect(server.hub.session("hup")).toBe(session);
}, 40_000);
