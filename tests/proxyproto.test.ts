/** PROXY protocol: the header's bytes, the config key, and a local app that learns the real user's address through the tunnel. */
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import ipaddr from "ipaddr.js";
import { ClientConfigSchema } from "../lib/config/schema.ts";
import { ConfigError, validate } from "../lib/config/load.ts";
import { proxyHeader, type ProxyVersion } from "../protocol.ts";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, waitPort } from "../bench/common.ts";
import { clientConfig, createGroup, onlineClient, randomData, sha256, testServer, TOKEN } from "./helpers.ts";
import { tempDir } from "./procs.ts";

const cleanup: (() => void)[] = [];
afterAll(() => {
  for (const f of cleanup.reverse()) f();
});

const text = (b: Uint8Array) => Buffer.from(b).toString("latin1");
const V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

describe("header bytes", () => {
  test("v1: one line naming TCP4 or TCP6, both addresses and both ports; IPv4-mapped IPv6 is IPv4", () => {
    expect(text(proxyHeader("v1", { ip: "192.0.2.7", port: 40000 }, { ip: "198.51.100.1", port: 6000 }))).toBe("PROXY TCP4 192.0.2.7 198.51.100.1 40000 6000\r\n");
    expect(text(proxyHeader("v1", { ip: "2001:DB8::1", port: 1 }, { ip: "::1", port: 65535 }))).toBe("PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
    expect(text(proxyHeader("v1", { ip: "::ffff:192.0.2.7", port: 5 }, { ip: "198.51.100.1", port: 6 }))).toBe("PROXY TCP4 192.0.2.7 198.51.100.1 5 6\r\n");
  });

  test("v1 writes addresses afresh: RFC 5952 for IPv6, mapped IPv4 in either form as IPv4; leading zeros and zone ids are not addresses", () => {
    const v1 = (ip: string) => text(proxyHeader("v1", { ip, port: 1 }, { ip: ip.includes(".") || ip.startsWith("::ffff") ? "192.0.2.1" : "::1", port: 2 }));
    expect(v1("2001:0DB8:0000:0000:0000:0000:0000:0001")).toBe("PROXY TCP6 2001:db8::1 ::1 1 2\r\n");
    expect(v1("2001:db8:0:1:1:1:1:1")).toBe("PROXY TCP6 2001:db8:0:1:1:1:1:1 ::1 1 2\r\n"); // one zero word is not "::"
    expect(v1("1:0:0:2:0:0:3:4")).toBe("PROXY TCP6 1::2:0:0:3:4 ::1 1 2\r\n"); // of two equal runs, the first
    expect(v1("1:0:0:2:0:0:0:4")).toBe("PROXY TCP6 1:0:0:2::4 ::1 1 2\r\n"); // the longest run
    expect(v1("::")).toBe("PROXY TCP6 :: ::1 1 2\r\n");
    expect(v1("::ffff:c000:0207")).toBe("PROXY TCP4 192.0.2.7 192.0.2.1 1 2\r\n");
    expect(v1("::FFFF:192.0.2.7")).toBe("PROXY TCP4 192.0.2.7 192.0.2.1 1 2\r\n");
    expect(v1("010.0.0.1")).toBe("PROXY UNKNOWN\r\n");
    expect(v1("fe80::1%eth0")).toBe("PROXY UNKNOWN\r\n");
  });

  test("v1 and v2 say 'unknown' for ends of different families or ones that are not addresses", () => {
    for (const [src, dst] of [
      ["192.0.2.7", "::1"],
      ["", "127.0.0.1"],
      ["not-an-ip", "127.0.0.1"],
      ["1.2.3", "127.0.0.1"],
      ["1:2:3:4:5:6:7:8:9", "::1"],
      ["1::2::3", "::1"],
    ]) {
      expect(text(proxyHeader("v1", { ip: src!, port: 1 }, { ip: dst!, port: 2 }))).toBe("PROXY UNKNOWN\r\n");
      expect([...proxyHeader("v2", { ip: src!, port: 1 }, { ip: dst!, port: 2 })]).toEqual([...V2_SIGNATURE, 0x20, 0x00, 0x00, 0x00]);
    }
  });

  test("v2: signature, PROXY command, TCP over IPv4 (12 address bytes) or IPv6 (36), ports in network order", () => {
    expect([...proxyHeader("v2", { ip: "192.0.2.7", port: 0x1234 }, { ip: "198.51.100.1", port: 6000 })]).toEqual([
      ...V2_SIGNATURE, 0x21, 0x11, 0x00, 12, 192, 0, 2, 7, 198, 51, 100, 1, 0x12, 0x34, 6000 >> 8, 6000 & 0xff,
    ]);
    const v6 = proxyHeader("v2", { ip: "2001:db8::1", port: 443 }, { ip: "::ffff:1.2.3.4", port: 80 });
    // A mapped IPv4 end against an IPv6 one: different families, so LOCAL.
    expect([...v6.subarray(12, 16)]).toEqual([0x20, 0x00, 0x00, 0x00]);
    const both6 = proxyHeader("v2", { ip: "2001:db8::1", port: 443 }, { ip: "::1", port: 80 });
    expect([...both6.subarray(12, 16)]).toEqual([0x21, 0x21, 0x00, 36]);
    expect([...both6.subarray(16, 32)]).toEqual(ipaddr.parse("2001:db8::1").toByteArray());
    expect([...both6.subarray(32, 48)]).toEqual(ipaddr.parse("::1").toByteArray());
    expect([...both6.subarray(48)]).toEqual([443 >> 8, 443 & 0xff, 0, 80]);
  });

  test("IPv6 addresses in every written form give the bytes ipaddr.js gives (2,000 seeded random addresses)", () => {
    let x = 12345;
    const rnd = () => ((x = (x * 1103515245 + 12345) >>> 0) >>> 16) & 0xffff;
    for (let i = 0; i < 2000; i++) {
      // Runs of zero words, so that "::" appears in every position.
      const words = Array.from({ length: 8 }, () => (rnd() % 3 === 0 ? 0 : rnd()));
      const addr = ipaddr.fromByteArray(words.flatMap((w) => [w >> 8, w & 0xff])) as ipaddr.IPv6;
      const mapped = addr.isIPv4MappedAddress();
      for (const form of [addr.toString(), addr.toNormalizedString(), addr.toNormalizedString().toUpperCase()]) {
        const h = proxyHeader("v2", { ip: form, port: 1 }, { ip: mapped ? "127.0.0.1" : "::1", port: 2 });
        if (mapped) continue; // rare here; the mapped forms have their own test
        expect([...h.subarray(12, 16)]).toEqual([0x21, 0x21, 0x00, 36]);
        expect([...h.subarray(16, 32)]).toEqual(addr.toByteArray());
        // v1 writes the address afresh, in RFC 5952's form, whatever form it came in.
        expect(text(proxyHeader("v1", { ip: form, port: 1 }, { ip: "::1", port: 2 }))).toBe(`PROXY TCP6 ${addr.toRFC5952String()} ::1 1 2\r\n`);
      }
    }
  });
});

describe("config", () => {
  const base = { serverAddr: "127.0.0.1", group: "g", token: TOKEN };
  test("proxyProtocol is v1 or v2, for TCP apps only; errors name the key", () => {
    const ok = validate(ClientConfigSchema, { ...base, apps: [{ name: "web", localAddr: "127.0.0.1:80", proxyProtocol: "v2" }] }, "client.toml");
    expect(ok.apps[0]!.proxyProtocol).toBe("v2");
    const bad = (app: Record<string, unknown>) => {
      try {
        validate(ClientConfigSchema, { ...base, apps: [app] }, "client.toml");
      } catch (e) {
        return (e as ConfigError).message;
      }
      return "no error";
    };
    expect(bad({ name: "web", localAddr: "127.0.0.1:80", proxyProtocol: "v3" })).toBe('client.toml: apps[0].proxyProtocol: must be "v1" or "v2"');
    expect(bad({ name: "dns", type: "udp", localAddr: "127.0.0.1:53", proxyProtocol: "v1" })).toBe("client.toml: apps[0].proxyProtocol: is for TCP apps only");
  });
});

/** A local app that reads a PROXY header (either version), records both ends, then echoes every byte after it. */
async function proxyEcho(): Promise<{ port: number; seen: { src: string; dst: string }[] }> {
  const seen: { src: string; dst: string }[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      let rest: Buffer | null = null;
      if (buf.subarray(0, 6).toString() === "PROXY ") {
        const end = buf.indexOf("\r\n");
        if (end < 0) return;
        const [, , src, dst, sport, dport] = buf.subarray(0, end).toString().split(" ");
        seen.push({ src: `${src}:${sport}`, dst: `${dst}:${dport}` });
        rest = buf.subarray(end + 2);
      } else if (buf.length >= 16 && V2_SIGNATURE.every((b, i) => buf[i] === b)) {
        const len = buf.readUInt16BE(14);
        if (buf.length < 16 + len) return;
        const six = buf[13] === 0x21;
        const n = six ? 16 : 4;
        const ip = (at: number) => ipaddr.fromByteArray([...buf.subarray(at, at + n)]).toString();
        seen.push({ src: `${ip(16)}:${buf.readUInt16BE(16 + 2 * n)}`, dst: `${ip(16 + n)}:${buf.readUInt16BE(18 + 2 * n)}` });
        rest = buf.subarray(16 + len);
      } else if (buf.length >= 16) {
        seen.push({ src: "no header", dst: "" });
        return void s.destroy();
      } else return;
      s.off("data", onData);
      if (rest.length) s.write(rest);
      s.pipe(s);
    };
    s.on("data", onData);
    s.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  cleanup.push(() => server.close());
  return { port: (server.address() as net.AddressInfo).port, seen };
}

/** Sends `data` from `host` to the public port, half-closes, and returns the local end's port and what came back. */
function userRoundTrip(host: string, port: number, data: Uint8Array): Promise<{ localPort: number; hash: string; received: number }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let localPort = 0;
    const s = net.connect({ host, port, allowHalfOpen: true }, () => {
      localPort = s.localPort!;
      s.end(data);
    });
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("end", () => {
      const got = Buffer.concat(chunks);
      resolve({ localPort, hash: sha256(got), received: got.length });
      s.end();
    });
    s.on("error", reject);
  });
}

describe("through the tunnel", () => {
  for (const [version, bindAddr] of [
    ["v1", "127.0.0.1"],
    ["v2", "127.0.0.1"],
    ["v1", "::1"],
    ["v2", "::1"],
  ] as [ProxyVersion, string][]) {
    test(`${version} on ${bindAddr}: the app reads the user's own address and port and the public port, then every byte, on each of several streams`, async () => {
      const app = await proxyEcho();
      const server = await testServer({ bindAddr });
      cleanup.push(() => server.stop());
      expect(await createGroup(server, "pp", ["web"])).toBe(201);
      const cfg = validate(ClientConfigSchema, { serverAddr: bindAddr, serverPort: server.controlPort, group: "pp", token: TOKEN, logLevel: "warn", apps: [{ name: "web", localAddr: `127.0.0.1:${app.port}`, proxyProtocol: version }] }, "test");
      const online = await onlineClient(cfg);
      cleanup.push(() => online.connector.stop());
      const remotePort = online.apps[0]!.remotePort;
      expect(online.apps[0]!.error).toBe("");
      const fmt = (ip: string, port: number) => `${ip}:${port}`;
      // Sequential streams reuse work connections: each still gets its own header.
      for (let i = 0; i < 3; i++) {
        const data = randomData(300_000 + i, 40 + i);
        const r = await userRoundTrip(bindAddr, remotePort, data);
        expect(r.received).toBe(data.length);
        expect(r.hash).toBe(sha256(data));
        expect(app.seen[i]).toEqual({ src: fmt(bindAddr, r.localPort), dst: fmt(bindAddr, remotePort) });
      }
      expect(app.seen.length).toBe(3);
    });
  }

  test("an app without proxyProtocol gets no header: the user's first bytes are the first it reads", async () => {
    const app = await proxyEcho();
    const server = await testServer();
    cleanup.push(() => server.stop());
    await createGroup(server, "plain", ["web"]);
    const { connector, apps } = await onlineClient(clientConfig(server, "plain", [{ name: "web", localAddr: `127.0.0.1:${app.port}` }]));
    cleanup.push(() => connector.stop());
    const data = randomData(1000, 7);
    const s = net.connect({ host: "127.0.0.1", port: apps[0]!.remotePort });
    s.on("error", () => {});
    const closed = new Promise<void>((r) => s.on("close", () => r()));
    s.write(data);
    await closed; // the app closes a connection without a header
    expect(app.seen).toEqual([{ src: "no header", dst: "" }]);
  });
});

// nginx (Debian's package, which .ci/run installs) is a real reader of the PROXY protocol: what it
// reports as the client's address is what a production app behind Warren would log and check.
const NGINX = Bun.which("nginx") ?? (Bun.file("/usr/sbin/nginx").size > 0 ? "/usr/sbin/nginx" : null);

describe("with nginx as the app", () => {
  const name = "nginx reads both header versions: $proxy_protocol_addr and _port are the user's, the server address and port the public ones";
  test.skipIf(!NGINX)(NGINX ? name : `${name} (skipped: nginx is not installed)`, async () => {
    const dir = tempDir();
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const port = await freePort();
    const port2 = await freePort();
    writeFileSync(
      join(dir, "nginx.conf"),
      [
        "daemon off;",
        "master_process off;",
        "worker_processes 1;",
        `pid ${join(dir, "nginx.pid")};`,
        `error_log ${join(dir, "error.log")} warn;`,
        "events { worker_connections 64; }",
        "http {",
        `  access_log off; client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;`,
        `  server { listen 127.0.0.1:${port} proxy_protocol; listen 127.0.0.1:${port2} proxy_protocol;`,
        '    location / { default_type text/plain; return 200 "$proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr $proxy_protocol_server_port"; } }',
        "}",
      ].join("\n"),
    );
    const nginx = Bun.spawn([NGINX!, "-e", join(dir, "error.log"), "-p", dir, "-c", join(dir, "nginx.conf")], { stdout: "ignore", stderr: "pipe" });
    cleanup.push(() => nginx.kill());
    await waitPort(port, 10_000, "nginx");
    const server = await testServer();
    cleanup.push(() => server.stop());
    expect(await createGroup(server, "ngx", ["one", "two"])).toBe(201);
    const cfg = validate(
      ClientConfigSchema,
      {
        serverAddr: "127.0.0.1",
        serverPort: server.controlPort,
        group: "ngx",
        token: TOKEN,
        logLevel: "warn",
        apps: [
          { name: "one", localAddr: `127.0.0.1:${port}`, proxyProtocol: "v1" },
          { name: "two", localAddr: `127.0.0.1:${port2}`, proxyProtocol: "v2" },
        ],
      },
      "test",
    );
    const { connector, apps } = await onlineClient(cfg);
    cleanup.push(() => connector.stop());
    for (const app of apps) {
      expect(app.error).toBe("");
      // One request per connection, from a socket whose port we know: nginx must name exactly it.
      const answer = await new Promise<{ body: string; localPort: number }>((resolve, reject) => {
        let localPort = 0;
        let got = "";
        const s = net.connect({ host: "127.0.0.1", port: app.remotePort }, () => {
          localPort = s.localPort!;
          s.write("GET / HTTP/1.0\r\nHost: x\r\n\r\n");
        });
        s.on("data", (d: Buffer) => (got += d.toString()));
        s.on("end", () => resolve({ body: got.slice(got.indexOf("\r\n\r\n") + 4), localPort }));
        s.on("error", reject);
      });
      expect(answer.body).toBe(`127.0.0.1 ${answer.localPort} 127.0.0.1 ${app.remotePort}`);
    }
  });
});
