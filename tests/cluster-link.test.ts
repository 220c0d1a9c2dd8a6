/**
 * Node-to-node forwarding (issue 20), without a database: node A holds a
 * group's session; node B opens the group's TCP app on its own address and
 * carries each user over a link to A (link.ts, peer-port.ts, remote.ts).
 * Byte counts and SHA-256 both ways, half-close, many users at once, and a
 * link lost mid-transfer: the users see resets, never a clean end short.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { freePort } from "../bench/common.ts";
import { PeerLink } from "../lib/cluster/link.ts";
import { PeerPort } from "../lib/cluster/peer-port.ts";
import { RemoteGroup } from "../lib/cluster/remote.ts";
import type { RunningServer } from "../server.ts";
import type { Connector } from "../lib/client/connector.ts";
import { clientConfig, echoApp, onlineClient, randomData, roundTrip, sha256, testServer, TOKEN, until } from "./helpers.ts";

const CLUSTER_TOKEN = "cluster-token-0123456789abcdef";
let a: RunningServer;
let b: RunningServer;
let client: Connector;
let port: PeerPort;
let link: PeerLink;
let remote: RemoteGroup;
let appPort: number;
const echo = await echoApp();

beforeAll(async () => {
  appPort = await freePort();
  const groups = [{ name: "g", token: TOKEN, apps: [{ name: "echo", remotePort: appPort }] }];
  a = await testServer({ bindAddr: "127.0.0.11", groups });
  b = await testServer({ bindAddr: "127.0.0.12", groups });
  client = (await onlineClient(clientConfig(a, "g", [{ name: "echo", localAddr: `127.0.0.1:${echo.port}` }], { serverAddr: "127.0.0.11" }))).connector;
  port = new PeerPort({ node: "a", clusterToken: CLUSTER_TOKEN, guard: a.hub.guard, handshakeTimeoutMs: 1000, heartbeatMs: 1000, acceptForwarded: (u, g, app) => a.hub.acceptForwarded(u, g, app) });
  const peerPort = port.listen("127.0.0.11", 0);
  link = new PeerLink("a", () => ({ host: "127.0.0.11", port: peerPort }), { node: "b", clusterToken: CLUSTER_TOKEN, heartbeatMs: 1000 });
  link.start();
  await link.ready();
  remote = new RemoteGroup(b.hub.registry.get("g")!, "a", link, b.hub, (g, app) => b.hub.statsFor(g, app));
  await remote.reconcile(b.hub.registry.get("g")!, ["echo"]);
  expect(remote.open).toEqual(["echo"]);
});

afterAll(() => {
  remote?.close();
  link?.stop();
  port?.stop();
  client?.stop();
  a?.stop();
  b?.stop();
  echo.close();
});

describe("forwarding", () => {
  test("a user on node B reaches the app through node A: 8 MiB both ways, byte-exact (SHA-256), with half-close", async () => {
    const data = randomData(8 << 20, 5);
    const r = await roundTrip(appPort, data, { host: "127.0.0.12" });
    expect(r.received).toBe(data.length);
    expect(r.hash).toBe(sha256(data));
    // Counted on node B, where the user came in.
    expect(b.hub.statsFor("g", "echo").bytesIn).toBeGreaterThanOrEqual(data.length);
  });

  test("32 users at once through the link, each byte-exact", async () => {
    const runs = Array.from({ length: 32 }, (_, i) => {
      const d = randomData(64 * 1024 + i * 977, 100 + i);
      return roundTrip(appPort, d, { host: "127.0.0.12" }).then((r) => ({ r, want: sha256(d), n: d.length }));
    });
    for (const { r, want, n } of await Promise.all(runs)) {
      expect(r.received).toBe(n);
      expect(r.hash).toBe(want);
    }
  });

  test("the user is listed on the node it reached, with its own address, and can be cut there", async () => {
    const s = net.connect({ port: appPort, host: "127.0.0.12" });
    const closed = new Promise<string>((resolve) => {
      s.on("error", (e: Error & { code?: string }) => resolve(e.code ?? e.message));
      s.on("close", () => resolve("closed"));
    });
    s.write("hi");
    await until(() => b.hub.connections("g").length === 1, 5000, "the user in node B's list");
    const c = b.hub.connections("g")[0]!;
    expect(c.app).toBe("echo");
    expect(c.userAddr).toBe("127.0.0.1");
    expect(b.hub.users.cutOne("g", c.id)).toBe(true);
    expect(await closed).toBe("ECONNRESET");
  });

  test("a wrong cluster token is refused and counted as a failed login", async () => {
    const bad = new PeerLink("a", () => ({ host: "127.0.0.11", port: link.port }), { node: "mallory", clusterToken: "wrong-token-0123456789abcdef", heartbeatMs: 1000 });
    bad.start();
    await until(() => a.hub.guard.tracked > 0, 5000, "the failed proof to be counted");
    expect(bad.up).toBe(false);
    bad.stop();
  });

  test("garbage, a wrong first frame and a silent connection on the peer port are each closed with an error frame; links go on", async () => {
    const peerPort = link.port;
    const answer = (payload: Uint8Array | null) =>
      new Promise<string>((resolve) => {
        const s = net.connect({ port: peerPort, host: "127.0.0.11" }, () => payload && s.write(payload));
        let got = Buffer.alloc(0);
        s.on("data", (d: Buffer) => (got = Buffer.concat([got, d])));
        s.on("close", () => resolve(got.toString("latin1")));
        s.on("error", () => {});
      });
    expect(await answer(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))).toContain("magic");
    // A well-formed frame that is not a hello: refused, naming what was expected.
    const { encode, withMagic, FrameType } = await import("../protocol.ts");
    expect(await answer(withMagic(encode({ type: FrameType.Ping, seq: 1 })))).toContain("expected hello or peer-data first");
    expect(await answer(null)).toContain("handshake not finished in time");
    // The link that was up stays up and carries users.
    expect(link.up).toBe(true);
    const data = randomData(100_000, 3);
    const r = await roundTrip(appPort, data, { host: "127.0.0.12" });
    expect(r.hash).toBe(sha256(data));
  }, 15_000);

  test("the link lost mid-transfer: the user sees a reset, never a clean end after fewer bytes", async () => {
    const outcome = await new Promise<{ received: number; error: string | null; ended: boolean }>((resolve) => {
      let received = 0;
      let ended = false;
      const s = net.connect({ port: appPort, host: "127.0.0.12", allowHalfOpen: true }, () => {
        const chunk = randomData(1 << 20, 9);
        let sent = 0;
        const pump = () => {
          while (sent < 64) {
            sent++;
            if (!s.write(chunk)) return void s.once("drain", pump);
          }
        };
        pump();
      });
      s.on("data", (d: Buffer) => {
        received += d.length;
        // Half-way: node A's side of every link goes away.
        if (received >= 4 << 20 && received - d.length < 4 << 20) port.stop();
      });
      s.on("end", () => (ended = true));
      s.on("error", (e: Error & { code?: string }) => resolve({ received, error: e.code ?? e.message, ended }));
      s.on("close", () => resolve({ received, error: null, ended }));
    });
    expect(outcome.received).toBeLessThan(64 << 20);
    expect(outcome.ended).toBe(false);
    expect(outcome.error).toBe("ECONNRESET");
  });
});
