/**
 * HTTP apps by domain on the shared vhost port (issue 16): routing per request on
 * keep-alive connections, header rewriting, Basic auth, streaming both ways with
 * SHA-256, and every error page, with curl and raw sockets as the users.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { createHash } from "node:crypto";
import { freePort } from "../bench/common.ts";
import { validate } from "../lib/config/load.ts";
import { ServerConfigSchema } from "../lib/config/schema.ts";
import { clientConfig, onlineClient, randomData, sha256, testServer, TOKEN, until } from "./helpers.ts";
import type { RunningServer } from "../server.ts";
import type { Connector } from "../lib/client/connector.ts";

/** An origin that says who it is and what it got; `/big?n=` streams n bytes; POST answers with the body's SHA-256. */
function origin(name: string) {
  const seen: { path: string; headers: Record<string, string> }[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    maxRequestBodySize: 2 ** 40, // Bun's default (128 MiB) would reset the big upload
    async fetch(req) {
      const url = new URL(req.url);
      seen.push({ path: url.pathname + url.search, headers: Object.fromEntries(req.headers) });
      if (req.method === "POST") {
        const hash = createHash("sha256");
        let n = 0;
        for await (const chunk of req.body!) {
          hash.update(chunk);
          n += chunk.length;
        }
        return new Response(`${name} ${n} ${hash.digest("hex")}`);
      }
      if (url.pathname === "/big") {
        const total = Number(url.searchParams.get("n"));
        const block = randomData(1 << 20, 7);
        let sent = 0;
        // Chunked, produced as the user reads: nothing is held whole.
        return new Response(
          new ReadableStream({
            pull(c) {
              if (sent >= total) return c.close();
              const part = block.subarray(0, Math.min(block.length, total - sent));
              sent += part.length;
              c.enqueue(part);
            },
          }),
        );
      }
      return new Response(`${name} ${url.pathname}`, { headers: { "x-origin": name } });
    },
  });
  return { server, seen, port: server.port! };
}

/** Sends raw bytes on one connection and collects everything until the server closes it (or `until` matches). */
function raw(port: number, payload: string | Uint8Array, done: (text: string) => boolean = () => false, ms = 5000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let text = "";
    const finish = (closed: boolean) => {
      clearTimeout(t);
      s.destroy();
      resolve({ text, closed });
    };
    const t = setTimeout(() => finish(false), ms);
    s.on("data", (d) => {
      text += d.toString("latin1");
      if (done(text)) finish(false);
    });
    s.on("close", () => finish(true));
    s.on("error", () => {});
    s.write(payload);
  });
}

async function curl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn(["curl", "-sS", "--max-time", "60", ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, out, err };
}

let server: RunningServer;
let port: number;
let clients: Connector[] = [];
const a = origin("alpha");
const b = origin("beta");
const v1 = origin("v1");
const refusedPort = await freePort();
const resolve = (host: string) => ["--resolve", `${host}:${port}:127.0.0.1`];

beforeAll(async () => {
  port = await freePort();
  server = await testServer({
    vhostHTTPPort: port,
    subdomainHost: "warren.test",
    vhostHeaderTimeout: 0.5,
    vhostMaxHeaderBytes: 4096,
    groups: [
      {
        name: "one",
        token: TOKEN,
        apps: [
          { name: "alpha", type: "http", subdomain: "alpha", requestHeaders: { set: { "x-from": "warren" } }, responseHeaders: { set: { "x-served-by": "warren" } } },
          { name: "v1", type: "http", customDomains: ["api.example.test"], locations: ["/v1"] },
          { name: "locked", type: "http", subdomain: "locked", httpUser: "ann", httpPassword: "s3cret-pass" },
          { name: "down", type: "http", subdomain: "down" },
          { name: "few", type: "http", subdomain: "few", maxConnections: 1 },
          { name: "wild", type: "http", customDomains: ["*.wild.test"] },
          { name: "rest", type: "http", customDomains: ["api.example.test"] },
        ],
      },
      { name: "two", token: TOKEN, apps: [{ name: "beta", type: "http", customDomains: ["beta.example.test"], hostHeaderRewrite: "beta.internal" }] },
      { name: "three", token: TOKEN, apps: [{ name: "gone", type: "http", subdomain: "gone" }] },
    ],
  });
  const local = (name: string, p: number) => ({ name, type: "http" as never, localAddr: `127.0.0.1:${p}` });
  clients = [
    (await onlineClient(clientConfig(server, "one", [local("alpha", a.port), local("v1", v1.port), local("locked", a.port), local("down", refusedPort), local("few", a.port), local("wild", a.port), local("rest", b.port)]))).connector,
    (await onlineClient(clientConfig(server, "two", [local("beta", b.port)]))).connector,
  ];
});

afterAll(() => {
  for (const c of clients) c.stop();
  server.stop();
  for (const o of [a, b, v1]) o.server.stop(true);
});

describe("routing", () => {
  test("curl reaches each app by its name; the app sees X-Forwarded-*, the header rules apply both ways", async () => {
    const r = await curl([...resolve("alpha.warren.test"), "-i", `http://alpha.warren.test:${port}/hello`]);
    expect(r.out).toContain("alpha /hello");
    expect(r.out.toLowerCase()).toContain("x-served-by: warren");
    const h = a.seen.at(-1)!.headers;
    expect(h["x-forwarded-for"]).toBe("127.0.0.1");
    expect(h["x-forwarded-proto"]).toBe("http");
    expect(h["x-forwarded-host"]).toBe(`alpha.warren.test:${port}`);
    expect(h["x-from"]).toBe("warren");
    expect(h.host).toBe(`alpha.warren.test:${port}`);
  });

  test("two requests on one keep-alive connection with different Host headers reach their own apps", async () => {
    const req = (host: string, path: string) => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
    const r = await raw(port, req("alpha.warren.test", "/first") + req("API.example.test:80", "/v1/x") + req("api.example.test", "/other") + req("x.y.wild.test.", "/w") + req("beta.example.test", "/b"), (t) => t.includes("beta /b"));
    const bodies = [...r.text.matchAll(/\r\n\r\n([a-z0-9]+ \/[a-z0-9/]*)/g)].map((m) => m[1]);
    // Longest location wins (/v1 -> v1, the rest of the domain -> rest); a wildcard, a trailing dot, another group's app.
    expect(bodies).toEqual(["alpha /first", "v1 /v1/x", "beta /other", "alpha /w", "beta /b"]);
    expect(b.seen.at(-1)!.headers.host).toBe("beta.internal");
  });
});

describe("errors", () => {
  test("unknown host: 404 naming it (escaped); offline group: 502; refused local app: 502", async () => {
    const r = await raw(port, "GET / HTTP/1.1\r\nHost: nobody.warren.test\r\n\r\n");
    expect(r.text).toStartWith("HTTP/1.1 404");
    expect(r.text).toContain("nobody.warren.test");
    const odd = await raw(port, "GET / HTTP/1.1\r\nHost: a<b>.test\r\n\r\n");
    expect(odd.text).toStartWith("HTTP/1.1 400");
    expect(odd.text).not.toContain("<b>");
    expect((await raw(port, "GET / HTTP/1.1\r\nHost: gone.warren.test\r\n\r\n")).text).toMatch(/^HTTP\/1.1 502[^]*offline/);
    expect((await raw(port, "GET / HTTP/1.1\r\nHost: down.warren.test\r\n\r\n")).text).toMatch(/^HTTP\/1.1 502[^]*did not answer/);
  });

  test("malformed requests get 400, 431, 501, 505, and the connection closes", async () => {
    expect((await raw(port, "GARBAGE\r\n\r\n")).text).toStartWith("HTTP/1.1 400");
    expect((await raw(port, "GET / HTTP/1.1\r\n\r\n")).text).toStartWith("HTTP/1.1 400"); // no Host
    expect((await raw(port, `GET / HTTP/1.1\r\nHost: alpha.warren.test\r\nX-Big: ${"a".repeat(5000)}\r\n\r\n`)).text).toStartWith("HTTP/1.1 431");
    expect((await raw(port, "GET / HTTP/1.1\r\nHost: alpha.warren.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n")).text).toStartWith("HTTP/1.1 400");
    expect((await raw(port, "CONNECT a:443 HTTP/1.1\r\nHost: alpha.warren.test\r\n\r\n")).text).toStartWith("HTTP/1.1 501");
    expect((await raw(port, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")).text).toStartWith("HTTP/1.1 505");
    expect((await raw(port, "GET / HTTP/1.1\r\nHost: alpha.warren.test\r\nX-Bad: a\x01b\r\n\r\n")).text).toStartWith("HTTP/1.1 400");
    const r = await raw(port, "GET / HTTP/1.1\r\nHost: alpha.warren.test\r\n\r\n", (t) => t.includes("alpha /"));
    expect(r.text).toStartWith("HTTP/1.1 200");
  });

  test("a head sent too slowly gets 408 after vhostHeaderTimeout; an idle connection is closed", async () => {
    const r = await raw(port, "GET / HTTP/1.1\r\nHost: al", () => false, 5000);
    expect(r.closed).toBe(true);
    expect(r.text).toStartWith("HTTP/1.1 408");
  });

  test("Basic auth: 401 without or with wrong credentials, through with them; the app never sees them", async () => {
    const no = await curl([...resolve("locked.warren.test"), "-i", `http://locked.warren.test:${port}/`]);
    expect(no.out).toStartWith("HTTP/1.1 401");
    expect(no.out.toLowerCase()).toContain('www-authenticate: basic realm="warren"');
    expect((await curl([...resolve("locked.warren.test"), "-i", "-u", "ann:wrong", `http://locked.warren.test:${port}/`])).out).toStartWith("HTTP/1.1 401");
    const ok = await curl([...resolve("locked.warren.test"), "-u", "ann:s3cret-pass", `http://locked.warren.test:${port}/in`]);
    expect(ok.out).toBe("alpha /in");
    expect(a.seen.at(-1)!.headers.authorization).toBeUndefined();
  });

  test("maxConnections full: 503 while one connection holds the app", async () => {
    const held = net.connect(port, "127.0.0.1");
    await new Promise((r) => held.once("connect", r));
    held.write("GET / HTTP/1.1\r\nHost: few.warren.test\r\n\r\n");
    await new Promise((r) => held.once("data", r));
    const r = await raw(port, "GET / HTTP/1.1\r\nHost: few.warren.test\r\n\r\n");
    expect(r.text).toStartWith("HTTP/1.1 503");
    held.destroy();
  });

  test("fuzzed heads never take the server down; other apps keep serving", async () => {
    let seed = 99;
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
    const pieces = ["GET", " ", "/", "HTTP/1.1", "\r\n", "Host:", "alpha.warren.test", ":", "\n", "\r", "\x00", "Transfer-Encoding: chunked", "Content-Length: 5", "Connection: upgrade", "\t", "é"];
    const runs = [];
    for (let i = 0; i < 60; i++) {
      let s = "";
      for (let j = 0; j < 1 + (rnd() % 20); j++) s += pieces[rnd() % pieces.length];
      runs.push(raw(port, s + "\r\n\r\n", () => false, 1500));
    }
    await Promise.all(runs);
    expect((await curl([...resolve("alpha.warren.test"), `http://alpha.warren.test:${port}/still`])).out).toBe("alpha /still");
  });

  test("1,000 idle keep-alive connections do not stop a new request", async () => {
    const socks: net.Socket[] = [];
    for (let i = 0; i < 1000; i++) socks.push(net.connect(port, "127.0.0.1").on("error", () => {}));
    await Promise.all(socks.map((s) => new Promise((r) => s.once("connect", r))));
    const ok = await curl([...resolve("alpha.warren.test"), `http://alpha.warren.test:${port}/busy`]);
    expect(ok.out).toBe("alpha /busy");
    for (const s of socks) s.destroy();
  });
});

describe("streaming", () => {
  test("a 256 MiB upload and a 256 MiB chunked download pass byte-exact", async () => {
    const dir = await import("node:fs/promises").then((fs) => fs.mkdtemp("/tmp/warren-vhost-"));
    const file = `${dir}/up.bin`;
    const data = new Uint8Array(256 << 20);
    const block = randomData(1 << 20, 7); // what the origin streams for /big
    for (let i = 0; i < 256; i++) data.set(block, i << 20);
    await Bun.write(file, data);
    const up = await curl([...resolve("alpha.warren.test"), "--data-binary", `@${file}`, "-H", "content-type: application/octet-stream", `http://alpha.warren.test:${port}/up`]);
    expect(up.out + up.err).toBe(`alpha ${data.length} ${sha256(data)}`);
    // The same bytes as a chunked upload: chunk-size lines fall anywhere across reads.
    const chunked = await curl([...resolve("alpha.warren.test"), "-H", "Transfer-Encoding: chunked", "--data-binary", `@${file}`, `http://alpha.warren.test:${port}/up`]);
    expect(chunked.out + chunked.err).toBe(`alpha ${data.length} ${sha256(data)}`);
    const down = await curl([...resolve("alpha.warren.test"), "-o", `${dir}/down.bin`, `http://alpha.warren.test:${port}/big?n=${data.length}`]);
    expect(down.code).toBe(0);
    const got = new Uint8Array(await Bun.file(`${dir}/down.bin`).arrayBuffer());
    expect(got.length).toBe(data.length);
    expect(sha256(got)).toBe(sha256(data));
    await import("node:fs/promises").then((fs) => fs.rm(dir, { recursive: true, force: true }));
  }, 60_000);
});

describe("configuration", () => {
  test("a domain claimed by two groups is a config error naming the key; subdomain without subdomainHost too", async () => {
    const p = await freePort();
    const groups = [
      { name: "x", token: TOKEN, apps: [{ name: "a", type: "http", customDomains: ["same.test"] }] },
      { name: "y", token: TOKEN, apps: [{ name: "b", type: "http", customDomains: ["same.test"] }] },
    ];
    expect(testServer({ vhostHTTPPort: p, groups })).rejects.toThrow("groups[1].apps[0].customDomains: domain same.test is taken by another group");
    expect(testServer({ vhostHTTPPort: p, groups: [{ name: "x", token: TOKEN, apps: [{ name: "a", type: "http", subdomain: "a" }] }] })).rejects.toThrow("groups[0].apps[0].subdomain");
    expect(() => validate(ServerConfigSchema, { groups: [{ name: "x", token: TOKEN, apps: [{ name: "a", type: "http" }] }] }, "s.toml")).toThrow("apps[0].subdomain: an \"http\" app needs subdomain or customDomains");
    expect(() => validate(ServerConfigSchema, { groups: [{ name: "x", token: TOKEN, apps: [{ name: "a", type: "tcp", subdomain: "a" }] }] }, "s.toml")).toThrow("apps[0].subdomain: applies to");
    expect(() => validate(ServerConfigSchema, { groups: [{ name: "x", token: TOKEN, apps: [{ name: "a", type: "https", subdomain: "a", httpUser: "u", httpPassword: "p" }] }] }, "s.toml")).toThrow("apps[0].httpUser: applies to \"http\" apps only");
  });

  test("the API: a domain conflict is 409; app objects show URLs and never the password", async () => {
    const res = await fetch(`http://127.0.0.1:${server.apiPort}/api/groups`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({ name: "thief", apps: [{ name: "t", type: "http", subdomain: "alpha" }] }),
    });
    expect(res.status).toBe(409);
    expect(((await res.json()) as { error: string }).error).toContain("domain alpha.warren.test is taken by another group");
    const one = (await (await fetch(`http://127.0.0.1:${server.apiPort}/api/groups/one`, { headers: { authorization: `Bearer ${server.adminToken}` } })).json()) as { apps: Record<string, unknown>[] };
    const locked = one.apps.find((x) => x.name === "locked")!;
    expect(locked.urls).toEqual([`http://locked.warren.test:${port}/`]);
    expect(locked.basicAuth).toBe(true);
    expect(JSON.stringify(one)).not.toContain("s3cret-pass");
    await until(() => (one.apps.find((x) => x.name === "alpha")!.requests as number) >= 0);
  });
});

describe("PROXY protocol", () => {
  test('proxyProtocol "v1" and "v2" on an http app: the app reads a PROXY header naming the user and the vhost port, then the request', async () => {
    // The local app: raw TCP, records every connection's bytes, answers each complete GET head and keeps the connection.
    const conns: Buffer[] = [];
    const sockets: net.Socket[] = [];
    const app = net.createServer((s) => {
      sockets.push(s);
      const i = conns.push(Buffer.alloc(0)) - 1;
      let answered = 0;
      s.on("error", () => {});
      s.on("data", (d: Buffer) => {
        conns[i] = Buffer.concat([conns[i]!, d]);
        // Answer once per request head (count of "GET "); the v2 signature's own \r\n\r\n is no request.
        const heads = conns[i]!.toString("latin1").split("GET ").length - 1;
        for (; answered < heads && conns[i]!.toString("latin1").endsWith("\r\n\r\n"); answered++) s.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
      });
    });
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    const appPort = (app.address() as net.AddressInfo).port;
    const vport = await freePort();
    const srv = await testServer({
      vhostHTTPPort: vport,
      subdomainHost: "pp.test",
      groups: [{ name: "pp", token: TOKEN, apps: [{ name: "pp1", type: "http", subdomain: "one" }, { name: "pp2", type: "http", subdomain: "two" }] }],
    });
    const local = (name: string, proxyProtocol: "v1" | "v2") => ({ name, type: "http" as never, localAddr: `127.0.0.1:${appPort}`, proxyProtocol });
    const { connector } = await onlineClient(clientConfig(srv, "pp", [local("pp1", "v1"), local("pp2", "v2")]));
    try {
      // One user connection, two requests on it; returns the user's source port.
      const user = (host: string) =>
        new Promise<{ port: number; text: string }>((resolve, reject) => {
          const s = net.connect(vport, "127.0.0.1");
          let text = "";
          let second = false;
          const t = setTimeout(() => (s.destroy(), reject(new Error(`no answers for ${host}: ${JSON.stringify(text)}`))), 5000);
          s.on("error", reject);
          s.once("connect", () => s.write(`GET /first HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
          s.on("data", (d) => {
            text += d.toString("latin1");
            const n = text.split("\r\n\r\nok").length - 1;
            if (n === 1 && !second) {
              second = true;
              s.write(`GET /second HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
            }
            if (n === 2) {
              clearTimeout(t);
              const port = s.localPort!;
              s.destroy();
              resolve({ port, text });
            }
          });
        });

      // v1: one text line, then the request (the app's own Host and X-Forwarded-* as usual).
      const { port: p1, text: t1 } = await user(`one.pp.test:${vport}`);
      expect(t1).toStartWith("HTTP/1.1 200 OK\r\n");
      const v1Header = `PROXY TCP4 127.0.0.1 127.0.0.1 ${p1} ${vport}\r\n`;
      const v1Conns = conns.map((c) => c.toString("latin1"));
      expect(v1Conns.length).toBeGreaterThanOrEqual(1);
      for (const c of v1Conns) {
        expect(c).toStartWith(v1Header + "GET /");
        expect(c.split("PROXY ").length - 1).toBe(1); // once per connection to the app, not per request
      }
      expect(v1Conns[0]).toStartWith(v1Header + "GET /first HTTP/1.1\r\n");
      expect(v1Conns.join("")).toContain("GET /second HTTP/1.1\r\n");
      expect(v1Conns[0]!.toLowerCase()).toContain("\r\nx-forwarded-for: 127.0.0.1\r\n");

      // v2: signature, PROXY command, TCP4, 12 address bytes, both ports in network order, then the request.
      const before = conns.length;
      const { port: p2, text: t2 } = await user(`two.pp.test:${vport}`);
      expect(t2).toStartWith("HTTP/1.1 200 OK\r\n");
      const v2Header = Buffer.from([
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
        0x21, 0x11, 0x00, 12, 127, 0, 0, 1, 127, 0, 0, 1, p2 >> 8, p2 & 0xff, vport >> 8, vport & 0xff,
      ]);
      const v2Conns = conns.slice(before);
      expect(v2Conns.length).toBeGreaterThanOrEqual(1);
      for (const c of v2Conns) {
        expect([...c.subarray(0, v2Header.length)]).toEqual([...v2Header]);
        expect(c.subarray(v2Header.length).toString("latin1")).toStartWith("GET /");
        expect(c.indexOf(v2Header.subarray(0, 12), 1)).toBe(-1);
      }
      expect(v2Conns[0]!.subarray(v2Header.length).toString("latin1")).toStartWith("GET /first HTTP/1.1\r\n");
      expect(Buffer.concat(v2Conns).toString("latin1")).toContain("GET /second HTTP/1.1\r\n");
    } finally {
      connector.stop();
      srv.stop();
      for (const s of sockets) s.destroy();
      app.close();
    }
  });
});
