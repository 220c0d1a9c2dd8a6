/**
 * Scenarios 2 and 3: the server or the client killed with SIGKILL while
 * streams are moving data.
 */
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";

import { BACKOFF_MAX_MS } from "../../lib/client/connector.ts";
import { deadPort } from "../helpers.ts";
import { tempDir, type Proc } from "../procs.ts";
import {
  api,
  appPorts,
  clientToml,
  connect,
  countingEcho,
  drain,
  echoCheck,
  feed,
  groupToml,
  killAll,
  Pattern,
  serverToml,
  startClient,
  startServer,
  until,
  type GroupView,
} from "./harness.ts";

const procs: Proc[] = [];
const echo = await countingEcho();

afterAll(async () => {
  await killAll(procs);
  echo.close();
});

/** Starts `n` users streaming `total` bytes each through an echo port at `rate` bytes/s; resolves once every one has received `warm` bytes. */
async function streams(port: number, n: number, total: number, rate: number, warm: number) {
  const users = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const s = await connect(port);
      let received = 0;
      const warmed = new Promise<void>((r) => s.on("data", (d: Buffer) => (received += d.length) >= warm && r()));
      const done = drain(s).then((r) => ({ ...r, closedAt: performance.now() }));
      feed(s, Pattern.of(50 + i), total, rate).catch(() => {});
      return { s, warmed, done };
    }),
  );
  await Promise.all(users.map((u) => u.warmed));
  return users;
}

describe("scenario 2: server killed mid-transfer and restarted on the same dataDir", () => {
  test("users are cut at once, the client reconnects by itself within its backoff cap, registry intact, new streams work", async () => {
    const dir = tempDir();
    const ctrl = await deadPort();
    const toml = serverToml(dir, ctrl, groupToml("home", ["echo", "web"]));
    const s1 = await startServer(dir, toml);
    procs.push(s1.proc);
    const created = await api<{ apps: { remotePort: number }[] }>(s1.apiPort, "/api/groups", {
      method: "POST",
      body: JSON.stringify({ name: "extra", token: "extra-token-0123456789", apps: [{ name: "x" }, { name: "y", remotePort: 0 }] }),
    });
    expect(created.status).toBe(201);
    const client = await startClient(dir, clientToml(ctrl, "home", { echo: echo.port, web: echo.port }), ["echo", "web"]);
    procs.push(client.proc);
    const before = (await api<{ groups: GroupView[] }>(s1.apiPort, "/api/groups")).body.groups.map((g) => ({ name: g.name, apps: g.apps.map((a) => [a.name, a.remotePort]) }));

    const users = await streams(client.ports.echo!, 4, 256 << 20, 32 << 20, 1 << 20);
    const mark = client.proc.lines.length;
    const tKill = performance.now();
    await s1.proc.kill("SIGKILL");
    const results = await Promise.all(users.map((u) => u.done));
    const cutMs = Math.max(...results.map((r) => r.closedAt - tKill));
    for (const r of results) expect(r.received).toBeLessThan(256 << 20);
    expect(cutMs).toBeLessThan(1000);
    // The client closes its side to the local app too: nothing is left open there.
    await until(() => echo.open() === 0, 2000, `local app connections to close (open: ${echo.open()})`);

    const s2 = await startServer(dir, toml, { name: "server2" });
    procs.push(s2.proc);
    const tReady = performance.now();
    const ports = await appPorts(client.proc, ["echo", "web"], mark, BACKOFF_MAX_MS + 5000);
    const backMs = performance.now() - tReady;
    const downMs = performance.now() - tKill;
    expect(ports).toEqual(client.ports);
    // Attempts are 0.25, 0.5, 1, 2 ... s apart (jittered): the first one after the restart comes well within the cap.
    expect(backMs).toBeLessThan(BACKOFF_MAX_MS);
    const after = (await api<{ groups: GroupView[] }>(s2.apiPort, "/api/groups")).body.groups.map((g) => ({ name: g.name, apps: g.apps.map((a) => [a.name, a.remotePort]) }));
    expect(after).toEqual(before);
    for (const [i, port] of Object.values(ports).entries()) expect(await echoCheck(port, 4 << 20, 60 + i)).toMatchObject({ ok: true });
    console.log(`server SIGKILL: 4 users cut within ${cutMs.toFixed(0)} ms (${results.map((r) => r.error ?? "FIN").join(",")}); client online ${backMs.toFixed(0)} ms after the restart (${downMs.toFixed(0)} ms after the kill)`);
    await client.proc.kill("SIGTERM");
    await s2.proc.kill("SIGTERM");
  }, 60_000);
});

describe("scenario 3: client killed mid-transfer", () => {
  test("its users are closed promptly, the session drops, a restarted client gets its ports back", async () => {
    const dir = tempDir();
    const ctrl = await deadPort();
    const server = await startServer(dir, serverToml(dir, ctrl, groupToml("home", ["echo"])));
    procs.push(server.proc);
    const ctoml = clientToml(ctrl, "home", { echo: echo.port });
    const c1 = await startClient(dir, ctoml, ["echo"]);
    procs.push(c1.proc);

    const users = await streams(c1.ports.echo!, 4, 256 << 20, 32 << 20, 1 << 20);
    // One more user that stopped reading: the server holds bytes for it that it will never take.
    const stalled = await connect(c1.ports.echo!);
    const stalledDone = drain(stalled).then((r) => ({ ...r, closedAt: performance.now() }));
    stalled.pause();
    feed(stalled, Pattern.of(70), 64 << 20).catch(() => {});
    // The whole path is backed up (the server holds a queue for it) once its writes stop making progress.
    let last = -1;
    let still = 0;
    await until(() => {
      still = stalled.bytesWritten === last ? still + 1 : 0;
      last = stalled.bytesWritten;
      return still >= 3;
    }, 10_000, "the stalled user's path to fill up", 100);

    const tKill = performance.now();
    await c1.proc.kill("SIGKILL");
    const results = await Promise.all(users.map((u) => u.done));
    const cutMs = Math.max(...results.map((r) => r.closedAt - tKill));
    for (const r of results) expect(r.received).toBeLessThan(256 << 20);
    const dropMs = await until(async () => !(await api<GroupView>(server.apiPort, "/api/groups/home")).body.online, 3000, "session dropped");
    const how = results.map((r) => r.error ?? "FIN").join(",");
    console.log(`client SIGKILL: 4 reading users cut within ${cutMs.toFixed(0)} ms (${how}), session dropped within ${dropMs.toFixed(0)} ms`);
    expect(cutMs).toBeLessThan(1000);
    expect(dropMs).toBeLessThan(1000);

    const c2 = await startClient(dir, ctoml, ["echo"], "client2");
    procs.push(c2.proc);
    expect(c2.ports).toEqual(c1.ports);
    expect((await echoCheck(c2.ports.echo!, 4 << 20, 80)).ok).toBe(true);
    // The user that stopped reading still holds the bytes the app sent before the kill (they are not
    // thrown away while it is paused: the server cannot tell a slow reader from a stalled one). Once it
    // reads again it gets them and then the close, promptly: it is not left hanging.
    const tResume = performance.now();
    stalled.resume();
    const stalledCut = await Promise.race([stalledDone.then((r) => r.closedAt - tResume), Bun.sleep(5000).then(() => Infinity)]);
    console.log(`stalled user: closed ${stalledCut.toFixed(0)} ms after it read again`);
    expect(stalledCut).toBeLessThan(5000);
    stalled.destroy();
    await c2.proc.kill("SIGTERM");
    await server.proc.kill("SIGTERM");
  }, 60_000);
});



/** A local app that reads everything, sends `total` pattern bytes on every connection (with backpressure), and records how each connection ended. */
async function sourceAndSink(total: number) {
  const ends: string[] = [];
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    let end: string | null = null;
    s.on("end", () => (end ??= "FIN"));
    s.on("error", (e: NodeJS.ErrnoException) => (end ??= e.code ?? e.message));
    s.on("close", () => ends.push(end ?? "closed"));
    s.resume(); // a sink for uploads
    if (total > 0) feed(s, Pattern.of(90), total).catch(() => {});
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  return { srv, ends };
}

describe("issue 14: a download or upload cut by a kill -9 is never a clean end", () => {
  test("client killed: a user that only downloads and one that only uploads both get a reset, never a short FIN; server killed: the local app's connections are reset", async () => {
    const TOTAL = 200 << 20;
    const down = await sourceAndSink(TOTAL);
    const up = await sourceAndSink(0);
    const dir = tempDir();
    const ctrl = await deadPort();
    const server = await startServer(dir, serverToml(dir, ctrl, groupToml("home", ["down", "up"])));
    procs.push(server.proc);
    const ports = { down: (down.srv.address() as net.AddressInfo).port, up: (up.srv.address() as net.AddressInfo).port };
    const ctoml = clientToml(ctrl, "home", ports);
    const client = await startClient(dir, ctoml, ["down", "up"]);
    procs.push(client.proc);

    /** A downloader paced so the kill lands mid-transfer, and an uploader that never ends. */
    const run = async () => {
      const d = await connect(client.ports.down!);
      const dDone = drain(d, 64 << 20);
      // Half-open sockets: a FIN is an "end" without a close.
      const dEnd = new Promise<string>((r) => {
        d.on("error", (e: NodeJS.ErrnoException) => r(e.code ?? e.message));
        d.on("end", () => r("FIN"));
      });
      const u = await connect(client.ports.up!);
      const uDone = new Promise<string>((r) => {
        u.on("error", (e: NodeJS.ErrnoException) => r(e.code ?? e.message));
        u.on("end", () => r("FIN"));
      });
      feed(u, Pattern.of(91), TOTAL, 64 << 20).catch(() => {});
      await until(() => d.bytesRead > 8 << 20 && u.bytesWritten > 8 << 20, 10_000, "both transfers under way");
      return { d, dDone, dEnd, u, uDone };
    };

    const a = await run();
    await client.proc.kill("SIGKILL");
    const dl = await a.dDone; // closed by the reset
    console.log(`client SIGKILL: downloader got ${(dl.received / 2 ** 20).toFixed(1)} of 200 MiB, then ${dl.error ?? "FIN"}; uploader: ${await a.uDone}`);
    expect(dl.received).toBeLessThan(TOTAL);
    expect(dl.error).toBe("ECONNRESET");
    expect(await a.uDone).toBe("ECONNRESET");

    // Server killed: the kernel closes the users' sockets with a FIN (nothing in userspace can stop that),
    // but the client sees its work connections end without StreamEnd and resets the local app's side.
    const c2 = await startClient(dir, ctoml, ["down", "up"], "client2");
    procs.push(c2.proc);
    const b = await run();
    const before = down.ends.length + up.ends.length;
    await server.proc.kill("SIGKILL");
    await until(() => down.ends.length + up.ends.length >= before + 2, 5000, "the local app's connections to end");
    const appEnds = [down.ends.at(-1), up.ends.at(-1)];
    console.log(`server SIGKILL: local app connections ended ${appEnds.join(", ")}; the downloading user saw ${await b.dEnd} (from the kernel)`);
    expect(appEnds).toEqual(["ECONNRESET", "ECONNRESET"]);
    b.d.destroy();
    b.u.destroy();
    await c2.proc.kill("SIGTERM");
    down.srv.close();
    up.srv.close();
  }, 60_000);
});
