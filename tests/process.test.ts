/** Server and client as separate processes: kills, restarts on the same dataDir, and bounded memory under a slow user. */
import { afterAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import net from "node:net";
import { deadPort, echoApp, randomData, roundTrip, sha256, TOKEN, until } from "./helpers.ts";
import { rssBytes, startClientProc, startServerProc, tempDir, type Proc } from "./procs.ts";

const ADMIN = "admin-token-for-process-tests";
const procs: Proc[] = [];
const echo = await echoApp();

afterAll(async () => {
  for (const p of procs) if (p.child.exitCode === null) await p.kill("SIGKILL");
  echo.close();
});

function serverToml(dir: string, controlPort: number, groups: string): string {
  return `bindAddr = "127.0.0.1"
controlPort = ${controlPort}
apiPort = 0
adminToken = "${ADMIN}"
dataDir = "${dir}/data"
heartbeatTimeout = 1.5
${groups}`;
}

function clientToml(controlPort: number, group: string, apps: Record<string, number>): string {
  return `serverAddr = "127.0.0.1"
serverPort = ${controlPort}
group = "${group}"
token = "${TOKEN}"
heartbeatInterval = 0.5
heartbeatTimeout = 2
${Object.entries(apps)
  .map(([name, port]) => `[[apps]]\nname = "${name}"\nlocalAddr = "127.0.0.1:${port}"\n`)
  .join("\n")}`;
}

const HOME_GROUP = `[[groups]]
name = "home"
token = "${TOKEN}"
[[groups.apps]]
name = "echo"
[[groups.apps]]
name = "web"
`;

async function view(apiPort: number, group: string) {
  const res = await fetch(`http://127.0.0.1:${apiPort}/api/groups/${group}`, { headers: { authorization: `Bearer ${ADMIN}` } });
  return { status: res.status, body: (await res.json()) as { online: boolean; apps: { name: string; remotePort: number }[] } };
}

async function checkEcho(port: number, seed: number) {
  const data = randomData(256 * 1024, seed);
  const res = await roundTrip(port, data);
  expect(res.received).toBe(data.length);
  expect(res.hash).toBe(sha256(data));
}

describe("processes", () => {
  test("client killed with SIGKILL: the session drops at once, and the restarted client gets the same ports", async () => {
    const dir = tempDir();
    const ctrl = await deadPort();
    const { proc: server, apiPort } = await startServerProc(dir, serverToml(dir, ctrl, HOME_GROUP));
    procs.push(server);
    const toml = clientToml(ctrl, "home", { echo: echo.port, web: echo.port });
    const first = await startClientProc(dir, toml, ["echo", "web"]);
    procs.push(first.proc);
    await checkEcho(first.ports.echo!, 1);
    expect((await view(apiPort, "home")).body.online).toBe(true);

    const t0 = performance.now();
    await first.proc.kill("SIGKILL");
    await until(async () => !(await view(apiPort, "home")).body.online, 5000, "session dropped");
    // heartbeatTimeout is 1.5 s; the kernel's FIN usually ends the session much sooner.
    expect(performance.now() - t0).toBeLessThan(1500 + 500);

    const second = await startClientProc(dir, toml, ["echo", "web"]);
    procs.push(second.proc);
    expect(second.ports).toEqual(first.ports);
    await checkEcho(second.ports.web!, 2);
    // SIGTERM is a clean shutdown: exit code 0.
    expect(await second.proc.kill("SIGTERM")).toBe(0);
    expect(await server.kill("SIGTERM")).toBe(0);
    for (const p of [server, first.proc, second.proc]) expect(p.lines.filter((l) => l.includes(TOKEN) || l.includes(ADMIN))).toEqual([]);
  }, 60_000);

  test("server restarted on the same dataDir: registry kept, client reconnects by itself, same ports; config edits applied", async () => {
    const dir = tempDir();
    const ctrl = await deadPort();
    const s1 = await startServerProc(dir, serverToml(dir, ctrl, HOME_GROUP));
    procs.push(s1.proc);
    // A group made through the API, which a restart must not touch.
    const created = await fetch(`http://127.0.0.1:${s1.apiPort}/api/groups`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ name: "extra", apps: [{ name: "x" }] }),
    });
    expect(created.status).toBe(201);
    const extraPort = ((await created.json()) as { apps: { remotePort: number }[] }).apps[0]!.remotePort;
    const client = await startClientProc(dir, clientToml(ctrl, "home", { echo: echo.port, web: echo.port }), ["echo", "web"]);
    procs.push(client.proc);
    await checkEcho(client.ports.echo!, 3);

    await s1.proc.kill("SIGKILL");
    const mark = client.proc.lines.length;
    // The edited file adds an app to "home"; restarting applies it.
    const edited = HOME_GROUP + `[[groups.apps]]\nname = "new"\n`;
    const s2 = await startServerProc(dir, serverToml(dir, ctrl, edited));
    procs.push(s2.proc);
    // The client notices and logs in again by itself, at the same ports.
    for (const app of ["echo", "web"]) {
      const m = await client.proc.waitFor(new RegExp(`app ${app} \\(tcp\\) is reachable at [^ ]+:(\\d+)`), 20_000, mark);
      expect(Number(m[1])).toBe(client.ports[app]!);
    }
    await checkEcho(client.ports.web!, 4);
    const home = await view(s2.apiPort, "home");
    expect(home.body.apps.map((a) => a.name)).toEqual(["echo", "web", "new"]);
    const extra = await view(s2.apiPort, "extra");
    expect(extra.status).toBe(200);
    expect(extra.body.apps[0]!.remotePort).toBe(extraPort);

    // A group removed from the file is removed at the next start; the API's group stays.
    await s2.proc.kill("SIGTERM");
    const s3 = await startServerProc(dir, serverToml(dir, ctrl, ""));
    procs.push(s3.proc);
    expect((await view(s3.apiPort, "home")).status).toBe(404);
    expect((await view(s3.apiPort, "extra")).status).toBe(200);
    await client.proc.kill("SIGTERM");
    await s3.proc.kill("SIGTERM");
  }, 60_000);

  test("a user reading at 1 MiB/s from an app writing 64 MiB: nothing lost, server and client memory bounded", async () => {
    const TOTAL = 64 * 1024 * 1024;
    const RATE = 1024 * 1024; // bytes per second the user reads
    const data = randomData(TOTAL, 42);
    const app = net.createServer((s) => {
      let at = 0;
      const pump = () => {
        while (at < TOTAL) {
          const chunk = data.subarray(at, at + 256 * 1024);
          at += chunk.length;
          if (!s.write(chunk)) return void s.once("drain", pump);
        }
        s.end();
      };
      pump();
    });
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    const dir = tempDir();
    const ctrl = await deadPort();
    const server = await startServerProc(dir, serverToml(dir, ctrl, `[[groups]]\nname = "slow"\ntoken = "${TOKEN}"\n[[groups.apps]]\nname = "feed"\n`));
    procs.push(server.proc);
    const client = await startClientProc(dir, clientToml(ctrl, "slow", { feed: (app.address() as net.AddressInfo).port }), ["feed"]);
    procs.push(client.proc);
    // The baseline is taken once the stream is flowing (buffers allocated, code warmed up).
    const WARM = 4 * 1024 * 1024;
    let base: { server: number; client: number } | null = null;
    const peak = { server: 0, client: 0 };
    const sampler = setInterval(() => {
      if (!base) return;
      peak.server = Math.max(peak.server, rssBytes(server.proc.pid));
      peak.client = Math.max(peak.client, rssBytes(client.proc.pid));
    }, 250);

    const hash = createHash("sha256");
    let received = 0;
    const t0 = performance.now();
    await new Promise<void>((resolve, reject) => {
      const s = net.connect({ host: "127.0.0.1", port: client.ports.feed! });
      s.on("data", (d: Buffer) => {
        received += d.length;
        hash.update(d);
        if (!base && received >= WARM) base = { server: rssBytes(server.proc.pid), client: rssBytes(client.proc.pid) };
        // Pace the reader: pause while ahead of RATE.
        const ahead = received / RATE - (performance.now() - t0) / 1000;
        if (ahead > 0) {
          s.pause();
          setTimeout(() => s.resume(), ahead * 1000);
        }
      });
      s.on("end", () => resolve());
      s.on("error", reject);
    });
    clearInterval(sampler);
    const seconds = (performance.now() - t0) / 1000;
    expect(received).toBe(TOTAL);
    expect(hash.digest("hex")).toBe(sha256(data));
    expect(seconds).toBeGreaterThan(50); // the reader really was slow
    const growth = { server: peak.server - base!.server, client: peak.client - base!.client };
    console.log(`slow user: ${TOTAL} bytes in ${seconds.toFixed(1)} s; RSS base ${JSON.stringify(base)} growth ${JSON.stringify(growth)}`);
    // Unbounded queues would take in the remaining 60 MiB within a second; bounded ones hold
    // at most HIGH_WATER_BYTES plus a chunk per direction, and the rest is allocator and GC slack.
    expect(growth.server).toBeLessThan(32 * 1024 * 1024);
    expect(growth.client).toBeLessThan(32 * 1024 * 1024);
    app.close();
    await client.proc.kill("SIGTERM");
    await server.proc.kill("SIGTERM");
  }, 120_000);
});
