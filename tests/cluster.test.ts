/**
 * Several servers as one (issue 20), end to end: a throwaway PostgreSQL and
 * three nodes on 127.0.0.11, .12 and .13 (in this process; real sockets).
 * A group created through one node's API exists on all; its client online
 * on node 1 makes its app reachable through every node (TCP byte-exact both
 * ways, HTTP by domain); a login on node 2 takes the group over across nodes;
 * a node that stops gives its leases up and its users go elsewhere.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { freePort } from "../bench/common.ts";
import type { Connector } from "../lib/client/connector.ts";
import { setLogLevel } from "../lib/log.ts";
import type { RunningServer } from "../server.ts";
import { clientConfig, echoApp, onlineClient, randomData, roundTrip, sha256, testServer, TOKEN, until } from "./helpers.ts";
import { postgresMissing, startPostgres, type TestPostgres } from "./pg.ts";

const missing = postgresMissing();
if (missing) console.warn(`tests/cluster.test.ts skipped: ${missing}`);
const suite = missing ? describe.skip : describe;

const CLUSTER_TOKEN = "cluster-token-0123456789abcdef";
const ADDRS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
let pg: TestPostgres;
const nodes: RunningServer[] = [];
const clients: Connector[] = [];
const echo = await echoApp();
let appPort = 0;
let vport = 0;
let udpPort = 0;
/** A UDP echo app on loopback. */
const udpEcho = await Bun.udpSocket({ hostname: "127.0.0.1", port: 0, socket: { data: (s, d, port, addr) => void s.send(d, port, addr) } });
const origin = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req) => new Response(`web ${new URL(req.url).pathname} via ${req.headers.get("x-forwarded-for")}`) });

const api = (n: number, method: string, path: string, body?: unknown) =>
  fetch(`http://127.0.0.1:${nodes[n]!.apiPort}${path}`, { method, headers: { authorization: `Bearer ${nodes[n]!.adminToken}` }, body: body === undefined ? undefined : JSON.stringify(body) });

beforeAll(async () => {
  if (missing) return;
  pg = await startPostgres();
  appPort = await freePort();
  vport = await freePort();
  udpPort = await freePort();
  for (const [i, addr] of ADDRS.entries()) {
    nodes.push(
      await testServer({
        bindAddr: addr,
        database: pg.url,
        clusterToken: CLUSTER_TOKEN,
        nodeName: `n${i + 1}`,
        heartbeatTimeout: 3,
        vhostHTTPPort: vport,
        subdomainHost: "cluster.test",
        adminToken: "admin-token-0123456789",
      }),
    );
  }
  setLogLevel("warn");
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.stop();
  await Promise.all(nodes.map((n) => n.stop()));
  await pg?.stop();
  echo.close();
  origin.stop(true);
  udpEcho.close();
});

suite("three nodes on one database", () => {
  test("a group created through node 3's API exists on nodes 1 and 2 within 1 s", async () => {
    const res = await api(2, "POST", "/api/groups", { name: "home", token: TOKEN, apps: [{ name: "echo", remotePort: appPort }, { name: "web", type: "http", subdomain: "web" }, { name: "dns", type: "udp", remotePort: udpPort }] });
    expect(res.status).toBe(201);
    const t0 = performance.now();
    await until(() => !!nodes[0]!.hub.registry.get("home") && !!nodes[1]!.hub.registry.get("home"), 1000, "the group on every node");
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  test("a client online on node 1: the TCP app answers through every node, byte-exact both ways", async () => {
    const { connector } = await onlineClient(
      clientConfig(nodes[0]!, "home", [{ name: "echo", localAddr: `127.0.0.1:${echo.port}` }, { name: "web", type: "http" as never, localAddr: `127.0.0.1:${origin.port}` }, { name: "dns", type: "udp", localAddr: `127.0.0.1:${udpEcho.port}` }], { serverAddr: ADDRS[0], heartbeatInterval: 1 }),
    );
    clients.push(connector);
    // Nodes 2 and 3 learn of the lease by NOTIFY and open the app on their own addresses.
    await until(() => nodes[1]!.hub.cluster!.remoteGroups().some((r) => r.group === "home" && r.apps.includes("echo")) && nodes[2]!.hub.cluster!.remoteGroups().some((r) => r.group === "home" && r.apps.includes("echo")), 5000, "nodes 2 and 3 to serve the group");
    for (const addr of ADDRS) {
      const data = randomData(2 << 20, addr.length + Number(addr.slice(-1)));
      const r = await roundTrip(appPort, data, { host: addr });
      expect(r.received).toBe(data.length);
      expect(r.hash).toBe(sha256(data));
    }
  });

  test("a UDP app answers through every node: 200 datagrams each, every one echoed once, byte-exact", async () => {
    await until(() => [1, 2].every((n) => nodes[n]!.hub.cluster!.remoteGroups().some((r) => r.group === "home" && r.apps.includes("dns"))), 5000, "nodes 2 and 3 to serve the udp app");
    for (const addr of ADDRS) {
      const want = new Map<string, number>();
      const got = new Map<string, number>();
      const sock = await Bun.udpSocket({ hostname: "127.0.0.1", port: 0, socket: { data: (_s, d) => void got.set(Buffer.from(d).toString(), (got.get(Buffer.from(d).toString()) ?? 0) + 1) } });
      // Sent in rounds until every datagram came back once (UDP may drop; nothing may come back altered or twice).
      for (let round = 0; round < 20 && got.size < 200; round++) {
        for (let i = 0; i < 200; i++) {
          const text = `${addr}#${i}#${"x".repeat(i * 7)}`;
          want.set(text, 1);
          if (!got.has(text)) sock.send(text, udpPort, addr);
        }
        await until(() => got.size >= 200, 500, "echoes").catch(() => {});
      }
      sock.close();
      expect(got.size).toBe(200);
      for (const k of got.keys()) expect(want.has(k)).toBe(true);
    }
  }, 30_000);

  test("HTTP by domain through every node", async () => {
    for (const addr of ADDRS) {
      const p = Bun.spawn(["curl", "-sS", "--max-time", "10", "--resolve", `web.cluster.test:${vport}:${addr}`, `http://web.cluster.test:${vport}/hello`], { stdout: "pipe", stderr: "pipe" });
      const out = await new Response(p.stdout).text();
      expect(await p.exited).toBe(0);
      expect(out).toBe("web /hello via 127.0.0.1");
    }
  });

  test("GET /api/groups on any node shows the group online and the node holding it", async () => {
    for (const n of [0, 1, 2]) {
      const g = await (await api(n, "GET", "/api/groups/home")).json();
      expect(g.online).toBe(true);
      expect(g.node).toBe("n1");
    }
  });

  test("every node's API shows traffic summed over the nodes (after each node's counter sync)", async () => {
    const perNode = nodes.map((n) => n.hub.statsFor("home", "echo").bytesIn);
    expect(perNode.every((b) => b >= 2 << 20)).toBe(true); // each counts the 2 MiB user that reached it (a forwarded user is counted where it came in)
    for (const n of nodes) await n.hub.cluster!.syncTraffic();
    for (const n of nodes) await n.hub.cluster!.syncTraffic(); // each reads the others' rows written in the first round
    const total = perNode.reduce((a, b) => a + b, 0);
    for (const i of [0, 1, 2]) {
      const g = await (await api(i, "GET", "/api/groups/home")).json();
      const echoView = g.apps.find((a: { name: string }) => a.name === "echo");
      expect(echoView.bytesIn).toBe(total);
      expect(echoView.online).toBe(true);
      // The dashboard's overview does the same.
      const o = await (await api(i, "GET", "/api/overview")).json();
      const home = o.groups.find((x: { name: string }) => x.name === "home");
      expect(home).toMatchObject({ online: true, node: "n1" });
      expect(home.bytesIn).toBeGreaterThanOrEqual(total);
    }
  });

  test("a login on node 2 takes the group over across nodes within 2 s; users through node 1 now reach node 2", async () => {
    const t0 = performance.now();
    const { connector } = await onlineClient(
      clientConfig(nodes[1]!, "home", [{ name: "echo", localAddr: `127.0.0.1:${echo.port}` }, { name: "web", type: "http" as never, localAddr: `127.0.0.1:${origin.port}` }, { name: "dns", type: "udp", localAddr: `127.0.0.1:${udpEcho.port}` }], { serverAddr: ADDRS[1], heartbeatInterval: 1 }),
    );
    clients.push(connector);
    await until(() => !nodes[0]!.hub.session("home"), 2000, "node 1's session to end");
    await until(async () => (await (await api(0, "GET", "/api/groups/home")).json()).node === "n2", 2000, "node 1 to name node 2");
    expect(performance.now() - t0).toBeLessThan(2000 + 1000);
    // Nodes 1 and 3 now carry the group's users to node 2 (until they are told, a user reaching them is reset, never cut short silently).
    const forwardsTo2 = (n: number) => nodes[n]!.hub.cluster!.remoteGroups().some((r) => r.group === "home" && r.node === "n2" && r.apps.includes("echo"));
    await until(() => forwardsTo2(0) && forwardsTo2(2), 5000, "nodes 1 and 3 to forward the group to node 2");
    for (const addr of ADDRS) {
      const data = randomData(1 << 20, 77);
      const r = await roundTrip(appPort, data, { host: addr });
      expect(r.received).toBe(data.length);
      expect(r.hash).toBe(sha256(data));
    }
  });

  test("a change of apps through node 1's API reaches the session on node 2 and the ports on node 3", async () => {
    const port2 = await freePort();
    const res = await api(0, "PUT", "/api/groups/home", { apps: [{ name: "echo", remotePort: appPort }, { name: "web", type: "http", subdomain: "web" }, { name: "echo2", remotePort: port2 }] });
    expect(res.status).toBe(200);
    // Every node has the change within 1 s.
    await until(() => [0, 1, 2].every((n) => nodes[n]!.hub.registry.get("home")!.apps.some((a) => a.name === "echo2")), 1000, "the change on every node");
  });

  test("disable through node 3 ends the session on node 2 within 1 s and closes the ports everywhere; enable brings it back", async () => {
    const t0 = performance.now();
    expect((await api(2, "POST", "/api/groups/home/disable")).status).toBe(200);
    await until(() => !nodes[1]!.hub.session("home"), 1000, "node 2's session to end");
    expect(performance.now() - t0).toBeLessThan(1000);
    await until(() => [0, 2].every((n) => !nodes[n]!.hub.cluster!.remoteGroups().some((r) => r.group === "home")), 2000, "the other nodes to close the group's ports");
    expect((await api(0, "POST", "/api/groups/home/enable")).status).toBe(200);
    // The client keeps retrying while disabled, and is let in again.
    await until(() => !!nodes[1]!.hub.session("home") || !!nodes[0]!.hub.session("home") || !!nodes[2]!.hub.session("home"), 10_000, "the client back online");
  }, 20_000);

  test("deleting the group through node 1 ends its session wherever it is and removes it from every node within 1 s", async () => {
    const t0 = performance.now();
    expect((await api(0, "DELETE", "/api/groups/home")).status).toBe(204);
    await until(() => nodes.every((n) => !n.hub.registry.get("home") && !n.hub.session("home")), 1000, "the group gone everywhere");
    expect(performance.now() - t0).toBeLessThan(1000);
    await until(() => nodes.every((n) => !n.hub.cluster!.remoteGroups().some((r) => r.group === "home")), 2000, "no node serving it");
    for (const n of [0, 1, 2]) expect((await api(n, "GET", "/api/groups/home")).status).toBe(404);
  }, 20_000);
});
