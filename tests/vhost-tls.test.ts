/**
 * The HTTPS vhost port (issue 16): TLS ended at the server with a configured
 * certificate (X-Forwarded-Proto: https, 20 MB up and 50 MB down byte-exact),
 * unknown or missing SNI refused before any certificate is shown, SNI
 * passthrough to an app holding its own certificate, WebSocket through both
 * ports (a raw RFC 6455 client, close frames included), an upgraded
 * connection the app half-closes first, and server-sent events arriving as
 * the app sends them. curl and openssl as the users.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import type { Server } from "bun";
import { freePort } from "../bench/common.ts";
import type { Connector } from "../lib/client/connector.ts";
import type { RunningServer } from "../server.ts";
import { clientConfig, onlineClient, randomData, sha256, testServer, TOKEN, until } from "./helpers.ts";

/** Runs a program (async: the server is in this process), bounded by `ms`; stdin is /dev/null. */
async function run(cmd: string[], ms = 20_000): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill(), ms);
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  const code = await p.exited;
  clearTimeout(timer);
  return { code, out, err };
}

/** curl with a bound on its run time. */
const curl = (args: string[]) => run(["curl", "-sS", "--max-time", "20", ...args], 25_000);

/** A self-signed certificate and its key, written into `dir`. */
async function selfSigned(dir: string, name: string, cn: string, san: string): Promise<{ cert: string; key: string }> {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  const r = await run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", `/CN=${cn}`, "-addext", `subjectAltName=${san}`, "-keyout", key, "-out", cert]);
  if (r.code !== 0) throw new Error(`openssl req failed: ${r.err}`);
  return { cert, key };
}

/** Resolves after `ms`, or rejects naming `what` when `p` has not settled by then. */
function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Waits (bounded) until the server counts no open connection to `app`: nothing of a finished exchange lingers. */
async function settled(app: string): Promise<void> {
  const open = async () => {
    const res = await fetch(`http://127.0.0.1:${server.apiPort}/api/groups/g`, { headers: { authorization: `Bearer ${server.adminToken}` } });
    const body = (await res.json()) as { apps: { name: string; connections: number }[] };
    return body.apps.find((a) => a.name === app)!.connections;
  };
  await until(async () => (await open()) === 0, 3000, `app ${app}'s connections to go back to 0`);
}

// ---- The origin behind the "http" app: echo, upload hash, download, WebSocket echo, SSE.

const BLOCK = randomData(1 << 20, 11); // what /big streams, block after block
const seen: { method: string; path: string; proto: string | null; host: string | null }[] = [];
/** SSE bookkeeping: set by the origin as it sends. */
const sse = { sent: 0, lastSent: false, done: Promise.withResolvers<void>() };

const web: Server<undefined> = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  async fetch(req, srv) {
    const url = new URL(req.url);
    seen.push({ method: req.method, path: url.pathname, proto: req.headers.get("x-forwarded-proto"), host: req.headers.get("host") });
    if (url.pathname === "/ws") {
      if (srv.upgrade(req)) return undefined as never;
      return new Response("upgrade expected", { status: 400 });
    }
    if (url.pathname === "/big") {
      const total = Number(url.searchParams.get("n"));
      let sent = 0;
      return new Response(
        new ReadableStream({
          pull(c) {
            if (sent >= total) return c.close();
            const part = BLOCK.subarray(0, Math.min(BLOCK.length, total - sent));
            sent += part.length;
            c.enqueue(part);
          },
        }),
        { headers: { "content-type": "application/octet-stream" } },
      );
    }
    if (url.pathname === "/sse") {
      let n = 0;
      return new Response(
        new ReadableStream({
          async pull(c) {
            if (n > 0) await Bun.sleep(100); // the app's own pace: one event every 100 ms
            if (n === 5) {
              c.close();
              sse.done.resolve();
              return;
            }
            c.enqueue(new TextEncoder().encode(`data: ${n}\n\n`));
            n++;
            sse.sent = n;
            if (n === 5) sse.lastSent = true;
          },
        }),
        { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } },
      );
    }
    const hash = createHash("sha256");
    let bytes = 0;
    if (req.body)
      for await (const chunk of req.body) {
        hash.update(chunk);
        bytes += chunk.length;
      }
    return new Response(`${req.method} ${url.pathname} proto=${req.headers.get("x-forwarded-proto")} bytes=${bytes} sha256=${hash.digest("hex")}\n`);
  },
  websocket: {
    maxPayloadLength: 1 << 20,
    message(ws, msg) {
      ws.send(msg);
    },
  },
});

/** An app that answers an Upgrade with 101 and "bye", then half-closes; it records what it reads after the head and how the user ended. */
const halfClosed = Promise.withResolvers<{ bytes: string; how: string }>();
const halfApp = net.createServer({ allowHalfOpen: true }, (s) => {
  let buf = "";
  let upgraded = false;
  s.on("data", (d: Buffer) => {
    buf += d.toString("latin1");
    if (upgraded || !buf.includes("\r\n\r\n")) return;
    upgraded = true;
    buf = buf.slice(buf.indexOf("\r\n\r\n") + 4);
    s.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-test\r\nConnection: Upgrade\r\n\r\nbye");
    s.end(); // done talking, still listening
  });
  s.on("end", () => {
    halfClosed.resolve({ bytes: buf, how: "end" });
    s.end();
  });
  s.on("error", (e) => halfClosed.resolve({ bytes: buf, how: `error: ${e.message}` }));
});
await new Promise<void>((r) => halfApp.listen(0, "127.0.0.1", r));

// ---- Shared fixtures: certificates, the server, the client, the TLS origin of the "https" app.

let dir: string;
let edge: { cert: string; key: string }; // *.warren.test, warren.test: the server's
let own: { cert: string; key: string }; // secure.example.test: the passthrough app's
let secureOrigin: Server<undefined>;
let server: RunningServer;
let connector: Connector;
let httpPort: number;
let httpsPort: number;

const at = (host: string, port: number) => ["--resolve", `${host}:${port}:127.0.0.1`];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "warren-vhost-tls-"));
  [edge, own] = await Promise.all([
    selfSigned(dir, "edge", "warren.test", "DNS:*.warren.test,DNS:warren.test"),
    selfSigned(dir, "own", "secure.example.test", "DNS:secure.example.test"),
  ]);
  secureOrigin = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: Bun.file(own.cert), key: Bun.file(own.key) },
    fetch: (req) => new Response(`secure origin ${new URL(req.url).pathname} proto=${req.headers.get("x-forwarded-proto")}\n`),
  });
  httpPort = await freePort();
  httpsPort = await freePort();
  server = await testServer({
    vhostHTTPPort: httpPort,
    vhostHTTPSPort: httpsPort,
    subdomainHost: "warren.test",
    certificates: [{ domains: ["*.warren.test", "warren.test"], certFile: edge.cert, keyFile: edge.key }],
    groups: [
      {
        name: "g",
        token: TOKEN,
        apps: [
          { name: "web", type: "http", subdomain: "web" },
          { name: "secure", type: "https", customDomains: ["secure.example.test"] },
          { name: "half", type: "http", subdomain: "half" },
        ],
      },
    ],
  });
  const apps = [
    { name: "web", type: "http" as never, localAddr: `127.0.0.1:${web.port}` },
    { name: "secure", type: "https" as never, localAddr: `127.0.0.1:${secureOrigin.port}` },
    { name: "half", type: "http" as never, localAddr: `127.0.0.1:${(halfApp.address() as net.AddressInfo).port}` },
  ];
  connector = (await bounded(onlineClient(clientConfig(server, "g", apps)), 10_000, "client online")).connector;
});

afterAll(async () => {
  connector?.stop();
  server?.stop();
  web.stop(true);
  secureOrigin?.stop(true);
  halfApp.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("TLS ended at the server", () => {
  test("curl with the server's CA gets 200; the app sees X-Forwarded-Proto: https", async () => {
    const r = await curl([...at("web.warren.test", httpsPort), "--cacert", edge.cert, "-i", `https://web.warren.test:${httpsPort}/hello`]);
    expect(r.err).toBe("");
    expect(r.out).toStartWith("HTTP/1.1 200");
    expect(r.out).toContain(`GET /hello proto=https bytes=0 sha256=${sha256(new Uint8Array(0))}`);
    expect(seen.at(-1)).toEqual({ method: "GET", path: "/hello", proto: "https", host: `web.warren.test:${httpsPort}` });
    // The same app on the plain port says http.
    const plain = await curl([...at("web.warren.test", httpPort), `http://web.warren.test:${httpPort}/plain`]);
    expect(plain.out).toStartWith("GET /plain proto=http ");
  });

  test("a 20 MB POST arrives with the right SHA-256", async () => {
    const body = randomBytes(20 << 20);
    const file = join(dir, "up.bin");
    await Bun.write(file, body);
    const r = await curl([...at("web.warren.test", httpsPort), "--cacert", edge.cert, "--data-binary", `@${file}`, "-H", "content-type: application/octet-stream", `https://web.warren.test:${httpsPort}/up`]);
    expect(r.err).toBe("");
    expect(r.out).toBe(`POST /up proto=https bytes=${body.length} sha256=${sha256(body)}\n`);
  }, 30_000);

  test("a 50 MB download through TLS arrives byte-exact", async () => {
    const n = 50 << 20;
    const want = createHash("sha256");
    for (let i = 0; i < n; i += BLOCK.length) want.update(BLOCK.subarray(0, Math.min(BLOCK.length, n - i)));
    const p = Bun.spawn(["curl", "-sS", "--max-time", "20", ...at("web.warren.test", httpsPort), "--cacert", edge.cert, `https://web.warren.test:${httpsPort}/big?n=${n}`], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const got = createHash("sha256");
    let bytes = 0;
    const errText = new Response(p.stderr).text();
    for await (const chunk of p.stdout) {
      got.update(chunk);
      bytes += chunk.length;
    }
    expect(await p.exited).toBe(0);
    expect(await errText).toBe("");
    expect(bytes).toBe(n);
    expect(got.digest("hex")).toBe(want.digest("hex"));
  }, 30_000);
});

describe("refused handshakes", () => {
  test("an unknown SNI fails the handshake and no certificate is shown", async () => {
    const r = await curl([...at("other.example.test", httpsPort), "--cacert", edge.cert, `https://other.example.test:${httpsPort}/`]);
    expect(r.code).not.toBe(0);
    expect(r.out).toBe("");
    const s = await run(["openssl", "s_client", "-connect", `127.0.0.1:${httpsPort}`, "-servername", "other.example.test"], 10_000);
    expect(s.code).not.toBe(0);
    expect(s.out + s.err).not.toContain("BEGIN CERTIFICATE");
    expect(s.out + s.err).toMatch(/unrecognized name|alert/i);
  });

  test("no SNI at all (connecting by IP) is refused too", async () => {
    const r = await curl(["--cacert", edge.cert, `https://127.0.0.1:${httpsPort}/`]);
    expect(r.code).not.toBe(0);
    expect(r.out).toBe("");
    const s = await run(["openssl", "s_client", "-connect", `127.0.0.1:${httpsPort}`, "-noservername"], 10_000);
    expect(s.code).not.toBe(0);
    expect(s.out + s.err).not.toContain("BEGIN CERTIFICATE");
    // The server still serves afterwards.
    const ok = await curl([...at("web.warren.test", httpsPort), "--cacert", edge.cert, `https://web.warren.test:${httpsPort}/after`]);
    expect(ok.out).toStartWith("GET /after proto=https ");
  });
});

describe("SNI passthrough", () => {
  test("an https app presents its own certificate; the server never ends its TLS", async () => {
    // Only the origin's CA: success proves the origin's certificate was presented.
    const r = await curl([...at("secure.example.test", httpsPort), "--cacert", own.cert, `https://secure.example.test:${httpsPort}/inside`]);
    expect(r.err).toBe("");
    // No X-Forwarded-Proto: the request went to the app untouched, as the user's TLS carried it.
    expect(r.out).toBe("secure origin /inside proto=null\n");
    // With the server's CA only, the handshake fails: not the server's certificate.
    const wrong = await curl([...at("secure.example.test", httpsPort), "--cacert", edge.cert, `https://secure.example.test:${httpsPort}/`]);
    expect(wrong.code).not.toBe(0);
    const s = await run(["openssl", "s_client", "-connect", `127.0.0.1:${httpsPort}`, "-servername", "secure.example.test"], 10_000);
    expect(s.out).toContain("BEGIN CERTIFICATE");
    expect(s.out).toMatch(/subject=CN\s*=\s*secure\.example\.test/);
    expect(s.out).not.toMatch(/subject=CN\s*=\s*warren\.test/);
  });
});

// ---- A minimal RFC 6455 client over a node:net or node:tls socket.

interface Frame {
  opcode: number;
  payload: Buffer;
}

class RawWebSocket {
  #buf: Buffer = Buffer.alloc(0);
  #frames: Frame[] = [];
  #waiters: ((f: Frame | null) => void)[] = [];
  #partial: { opcode: number; parts: Buffer[] } | null = null;
  closed = false;

  private constructor(readonly sock: net.Socket) {}

  /** Opens the socket, does the upgrade handshake, and returns the client once 101 has come. */
  static async open(sock: net.Socket, host: string, path: string): Promise<RawWebSocket> {
    const key = randomBytes(16).toString("base64");
    const accept = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
    sock.on("error", () => {});
    const head = await bounded(
      new Promise<{ head: string; rest: Buffer }>((resolve, reject) => {
        let got = Buffer.alloc(0);
        const onData = (d: Buffer) => {
          got = Buffer.concat([got, d]);
          const end = got.indexOf("\r\n\r\n");
          if (end < 0) return;
          sock.off("data", onData);
          sock.off("close", onClose);
          resolve({ head: got.subarray(0, end).toString("latin1"), rest: got.subarray(end + 4) });
        };
        const onClose = () => reject(new Error(`closed during the upgrade: ${got.toString("latin1")}`));
        sock.on("data", onData);
        sock.on("close", onClose);
        sock.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
      }),
      5000,
      "WebSocket upgrade",
    );
    if (!head.head.startsWith("HTTP/1.1 101")) throw new Error(`upgrade refused: ${head.head}`);
    if (!head.head.toLowerCase().includes(`sec-websocket-accept: ${accept.toLowerCase()}`)) throw new Error(`bad Sec-WebSocket-Accept: ${head.head}`);
    const ws = new RawWebSocket(sock);
    sock.on("data", (d: Buffer) => ws.#feed(d));
    sock.on("close", () => {
      ws.closed = true;
      for (const w of ws.#waiters.splice(0)) w(null);
    });
    if (head.rest.length) ws.#feed(head.rest);
    return ws;
  }

  /** Sends one masked frame (FIN set). */
  send(opcode: number, payload: Uint8Array): void {
    const len = payload.length;
    const hdr = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
    hdr[0] = 0x80 | opcode;
    if (len < 126) hdr[1] = 0x80 | len;
    else if (len < 65536) {
      hdr[1] = 0x80 | 126;
      hdr.writeUInt16BE(len, 2);
    } else {
      hdr[1] = 0x80 | 127;
      hdr.writeBigUInt64BE(BigInt(len), 2);
    }
    const mask = randomBytes(4);
    const body = Buffer.alloc(len);
    for (let i = 0; i < len; i++) body[i] = payload[i]! ^ mask[i & 3]!;
    this.sock.write(Buffer.concat([hdr, mask, body]));
  }

  /** The next whole message or control frame; null once the socket has closed. */
  next(ms = 5000): Promise<Frame | null> {
    const f = this.#frames.shift();
    if (f) return Promise.resolve(f);
    if (this.closed) return Promise.resolve(null);
    return bounded(new Promise<Frame | null>((r) => this.#waiters.push(r)), ms, "a WebSocket frame");
  }

  #feed(d: Buffer): void {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, d]) : d;
    for (;;) {
      const b = this.#buf;
      if (b.length < 2) return;
      const fin = (b[0]! & 0x80) !== 0;
      const opcode = b[0]! & 0x0f;
      const masked = (b[1]! & 0x80) !== 0;
      let len = b[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      if (masked) throw new Error("the server masked a frame");
      if (b.length < off + len) return;
      const payload = Buffer.from(b.subarray(off, off + len));
      this.#buf = b.subarray(off + len);
      if (opcode >= 8) this.#deliver({ opcode, payload });
      else if (opcode === 0) {
        this.#partial!.parts.push(payload);
        if (fin) {
          this.#deliver({ opcode: this.#partial!.opcode, payload: Buffer.concat(this.#partial!.parts) });
          this.#partial = null;
        }
      } else if (fin) this.#deliver({ opcode, payload });
      else this.#partial = { opcode, parts: [payload] };
    }
  }

  #deliver(f: Frame): void {
    const w = this.#waiters.shift();
    if (w) w(f);
    else this.#frames.push(f);
  }
}

/** 100 messages of sizes up to 200 KB, text and binary, pipelined, all echoed exactly; then a 1000 close comes back. */
async function echoHundred(ws: RawWebSocket): Promise<void> {
  const sent: { opcode: number; payload: Buffer }[] = [];
  for (let i = 0; i < 100; i++) {
    const size = i === 0 ? 0 : i === 99 ? 200_000 : Math.floor((i * 2_017) % 200_000);
    const opcode = i % 2 ? 2 : 1;
    const payload = opcode === 1 ? Buffer.from(`m${i}:`.padEnd(size, String.fromCharCode(97 + (i % 26)))) : Buffer.from(randomData(size, i + 1));
    sent.push({ opcode, payload });
    ws.send(opcode, payload);
  }
  for (const [i, want] of sent.entries()) {
    const got = await ws.next();
    expect(got, `message ${i}`).not.toBeNull();
    expect(got!.opcode, `message ${i} opcode`).toBe(want.opcode);
    expect(got!.payload.length, `message ${i} length`).toBe(want.payload.length);
    expect(got!.payload.equals(want.payload), `message ${i} bytes`).toBe(true);
  }
  const code = Buffer.alloc(2);
  code.writeUInt16BE(1000);
  ws.send(8, Buffer.concat([code, Buffer.from("bye")]));
  const close = await ws.next();
  expect(close).not.toBeNull();
  expect(close!.opcode).toBe(8);
  expect(close!.payload.readUInt16BE(0)).toBe(1000);
  // The origin closes the connection after the close handshake; the vhost passes that on.
  await bounded(new Promise<void>((r) => (ws.closed ? r() : ws.sock.once("close", () => r()))), 5000, "the connection to close after the close frames");
}

describe("WebSocket", () => {
  test("through the HTTP port: 100 messages echo exactly, close 1000 comes back", async () => {
    const sock = net.connect(httpPort, "127.0.0.1");
    await bounded(new Promise((r) => sock.once("connect", r)), 5000, "connect");
    const ws = await RawWebSocket.open(sock, `web.warren.test:${httpPort}`, "/ws");
    await echoHundred(ws);
    expect(seen.at(-1)).toMatchObject({ path: "/ws", proto: "http" });
    await settled("web");
  }, 20_000);

  test("through the HTTPS port (TLS ended at the server): the same", async () => {
    const sock = tls.connect({ host: "127.0.0.1", port: httpsPort, servername: "web.warren.test", ca: await Bun.file(edge.cert).text() });
    await bounded(new Promise((r) => sock.once("secureConnect", r)), 5000, "TLS handshake");
    const ws = await RawWebSocket.open(sock, `web.warren.test:${httpsPort}`, "/ws");
    await echoHundred(ws);
    expect(seen.at(-1)).toMatchObject({ path: "/ws", proto: "https" });
    await settled("web");
  }, 20_000);
});

describe("upgraded connections end cleanly", () => {
  test("an app that half-closes after the upgrade still gets the user's last bytes and a clean FIN", async () => {
    const sock = net.connect({ port: httpPort, host: "127.0.0.1", allowHalfOpen: true });
    sock.on("error", () => {});
    let text = "";
    await bounded(
      new Promise<void>((resolve) => {
        sock.on("data", (d: Buffer) => (text += d.toString("latin1")));
        sock.on("end", () => resolve());
        sock.write("GET /up HTTP/1.1\r\nHost: half.warren.test\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\n");
      }),
      5000,
      "the app's bytes and its FIN",
    );
    expect(text).toStartWith("HTTP/1.1 101");
    expect(text).toEndWith("\r\n\r\nbye");
    // The app has ended its side; the user answers, then ends its own.
    sock.end("last words");
    const r = await bounded(halfClosed.promise, 5000, "the app to see the user's end");
    expect(r).toEqual({ bytes: "last words", how: "end" });
    sock.destroy();
  });
});

describe("server-sent events", () => {
  /** Reads /sse on `sock`; resolves with whether the first event came before the origin sent its last, and the whole body. */
  async function readSse(sock: net.Socket, host: string): Promise<{ firstBeforeLast: boolean; sentAtFirst: number; text: string }> {
    sse.sent = 0;
    sse.lastSent = false;
    sse.done = Promise.withResolvers<void>();
    let firstBeforeLast: boolean | null = null;
    let sentAtFirst = -1;
    let text = "";
    sock.on("error", () => {});
    await bounded(
      new Promise<void>((resolve, reject) => {
        sock.on("data", (d: Buffer) => {
          text += d.toString("latin1");
          if (firstBeforeLast === null && text.includes("data: 0\n\n")) {
            firstBeforeLast = !sse.lastSent;
            sentAtFirst = sse.sent;
          }
          // The whole response: the last event and the chunked body's end.
          if (text.includes("data: 4\n\n") && text.endsWith("\r\n0\r\n\r\n")) resolve();
        });
        sock.on("close", () => reject(new Error(`closed before the response ended: ${JSON.stringify(text)}`)));
        sock.write(`GET /sse HTTP/1.1\r\nHost: ${host}\r\nAccept: text/event-stream\r\n\r\n`);
      }),
      5000,
      "the event stream",
    );
    sock.end();
    await bounded(sse.done.promise, 1000, "the origin to finish");
    return { firstBeforeLast: firstBeforeLast!, sentAtFirst, text };
  }

  test("the first event reaches the user through the HTTP port before the origin sends the last", async () => {
    const sock = net.connect(httpPort, "127.0.0.1");
    const r = await readSse(sock, "web.warren.test");
    expect(r.text).toStartWith("HTTP/1.1 200");
    expect(r.text.toLowerCase()).toContain("content-type: text/event-stream");
    expect(r.firstBeforeLast).toBe(true);
    expect(r.sentAtFirst).toBeLessThan(5);
    for (let i = 0; i < 5; i++) expect(r.text).toContain(`data: ${i}\n\n`);
    await settled("web");
  }, 10_000);

  test("and through the HTTPS port", async () => {
    const sock = tls.connect({ host: "127.0.0.1", port: httpsPort, servername: "web.warren.test", ca: await Bun.file(edge.cert).text() });
    await bounded(new Promise((r) => sock.once("secureConnect", r)), 5000, "TLS handshake");
    const r = await readSse(sock, "web.warren.test");
    expect(r.text).toStartWith("HTTP/1.1 200");
    expect(r.firstBeforeLast).toBe(true);
    expect(r.sentAtFirst).toBeLessThan(5);
    for (let i = 0; i < 5; i++) expect(r.text).toContain(`data: ${i}\n\n`);
    await settled("web");
  }, 10_000);
});
