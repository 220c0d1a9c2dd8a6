/**
 * Fixtures of inspect.test.ts (the request inspector, issue 19): a raw HTTP/1.1 user that reads a
 * response's exact bytes (head, body as it came on the wire, body decoded), two origins (a Bun.serve
 * one that records every request it gets and echoes bodies, and a raw TCP one whose responses are
 * written byte for byte, chunk framing included), WebSocket frames, and API and /metrics calls.
 */
import net from "node:net";
import { within } from "./dashboard-helpers.ts";
import { CAPTURE_BLOCK_BYTES } from "../lib/server/http/capture-body.ts";

// ---- a raw HTTP/1.1 user ----

/** One response as the user got it. */
export interface RawResponse {
  status: number;
  /** The head as received (status line and headers, up to and with the blank line). */
  head: string;
  /** Header names lower-cased; the last value of a repeated one. */
  headers: Record<string, string>;
  /** The body's bytes exactly as they came (chunk framing included). */
  wire: Uint8Array;
  /** The body's payload (chunk framing taken out). */
  body: Uint8Array;
  /** The server closed the connection after the response. */
  closed: boolean;
}

const enc = new TextEncoder();
const bytesOf = (s: string | Uint8Array) => (typeof s === "string" ? enc.encode(s) : s);

function indexOfCrlfCrlf(b: Uint8Array, from = 0): number {
  for (let i = from; i + 3 < b.length; i++) if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  return -1;
}

function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) (out.set(p, off), (off += p.length));
  return out;
}

/** Decodes a complete chunked body; null when `wire` does not hold all of it yet. Returns the payload and the wire bytes it used. */
export function dechunk(wire: Uint8Array): { body: Uint8Array; used: number } | null {
  const parts: Uint8Array[] = [];
  let i = 0;
  const text = (a: number, b: number) => Buffer.from(wire.subarray(a, b)).toString("latin1");
  for (;;) {
    const eol = Buffer.from(wire.subarray(i)).indexOf("\r\n");
    if (eol < 0) return null;
    const size = parseInt(text(i, i + eol).split(";")[0]!.trim(), 16);
    if (!Number.isFinite(size)) throw new Error(`bad chunk size line ${JSON.stringify(text(i, i + eol))}`);
    i += eol + 2;
    if (size === 0) {
      // Trailers (maybe none), then the blank line.
      for (;;) {
        const e = Buffer.from(wire.subarray(i)).indexOf("\r\n");
        if (e < 0) return null;
        i += e + 2;
        if (e === 0) return { body: concatBytes(parts), used: i };
      }
    }
    if (wire.length < i + size + 2) return null;
    parts.push(wire.slice(i, i + size));
    i += size + 2;
  }
}

/** Parses one response from `buf` (the request's method decides whether it has a body); null while incomplete. */
function parseResponse(buf: Uint8Array, method: string, closed: boolean): RawResponse | null {
  let at = 0;
  for (;;) {
    const end = indexOfCrlfCrlf(buf, at);
    if (end < 0) return null;
    const head = Buffer.from(buf.subarray(at, end + 4)).toString("latin1");
    const status = Number(head.slice(9, 12));
    const headers: Record<string, string> = {};
    for (const line of head.split("\r\n").slice(1)) {
      const c = line.indexOf(":");
      if (c > 0) headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
    }
    const rest = buf.subarray(end + 4);
    if (status >= 100 && status < 200 && status !== 101) {
      at = end + 4; // an interim response: the final one follows
      continue;
    }
    const base = { status, head, headers, closed };
    if (method === "HEAD" || status === 101 || status === 204 || status === 304) return { ...base, wire: new Uint8Array(0), body: new Uint8Array(0) };
    if (headers["transfer-encoding"]?.toLowerCase().includes("chunked")) {
      const d = dechunk(rest);
      return d ? { ...base, wire: rest.slice(0, d.used), body: d.body } : null;
    }
    if (headers["content-length"] !== undefined) {
      const n = Number(headers["content-length"]);
      return rest.length >= n ? { ...base, wire: rest.slice(0, n), body: rest.slice(0, n) } : null;
    }
    return closed ? { ...base, wire: rest.slice(), body: rest.slice() } : null; // close-delimited
  }
}

/**
 * Sends `request` (a whole request, head and body, as bytes or text, or several writes) on a new
 * connection and returns the response once it is complete (close-delimited ones: at the close).
 * Fails after `ms`.
 */
export function rawHttp(port: number, request: string | Uint8Array | (string | Uint8Array)[], method = "GET", ms = 10_000): Promise<RawResponse> {
  return within(
    new Promise<RawResponse>((resolve, reject) => {
      const s = net.connect(port, "127.0.0.1");
      const got: Uint8Array[] = [];
      let done = false;
      const check = (closed: boolean) => {
        if (done) return;
        const r = parseResponse(concatBytes(got), method, closed);
        if (r) {
          done = true;
          s.destroy();
          resolve(r);
        } else if (closed) {
          done = true;
          reject(new Error(`connection closed before a complete response: ${JSON.stringify(Buffer.from(concatBytes(got)).toString("latin1").slice(0, 300))}`));
        }
      };
      s.on("data", (d: Buffer) => {
        got.push(new Uint8Array(d));
        check(false);
      });
      s.on("close", () => check(true));
      s.on("error", () => {});
      s.once("connect", () => {
        for (const part of Array.isArray(request) ? request : [request]) s.write(bytesOf(part));
      });
    }),
    ms,
    `the response to ${method}`,
  );
}

/** A request head as text: `headers` in order; `Host` first. */
export function requestHead(method: string, path: string, host: string, headers: [string, string][] = []): string {
  return `${method} ${path} HTTP/1.1\r\nHost: ${host}\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n`;
}

/** A body in chunked framing, cut at these sizes (the rest in one last chunk), with a chunk extension on the first and a trailer. */
export function chunked(body: Uint8Array, sizes: number[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let at = 0;
  for (const [i, n] of [...sizes, body.length].entries()) {
    const part = body.subarray(at, Math.min(body.length, at + n));
    at += part.length;
    if (part.length === 0) continue;
    parts.push(enc.encode(`${part.length.toString(16)}${i === 0 ? ";ext=one" : ""}\r\n`), part, enc.encode("\r\n"));
  }
  parts.push(enc.encode("0\r\nX-Trailer: end\r\n\r\n"));
  return concatBytes(parts);
}

// ---- origins ----

/** What an origin got: one request. */
export interface Seen {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Uint8Array;
}

/**
 * The Bun.serve origin: records every request; a request with a body gets it back (content-length,
 * `x-echoed` repeats `x-echo`); /setcookie answers with a Set-Cookie; /slow sends one part, then the
 * rest once `release()` is called; /ws upgrades and echoes each message; anything else "ok <path>".
 */
export function bunOrigin() {
  const seen: Seen[] = [];
  let release: () => void = () => {};
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req, srv) {
      const url = new URL(req.url);
      const body = new Uint8Array(await req.arrayBuffer());
      seen.push({ method: req.method, path: url.pathname + url.search, headers: Object.fromEntries(req.headers), body });
      if (url.pathname === "/ws" && srv.upgrade(req)) return undefined;
      const extra: Record<string, string> = {};
      if (req.headers.get("x-echo")) extra["x-echoed"] = req.headers.get("x-echo")!;
      if (url.pathname === "/setcookie") return new Response("cookie set", { headers: { "set-cookie": "sid=abc123; HttpOnly", ...extra } });
      if (url.pathname === "/slow") {
        const gate = new Promise<void>((r) => (release = r));
        const first = new Uint8Array(300).fill(0x61);
        const second = new Uint8Array(700).fill(0x62);
        return new Response(
          new ReadableStream({
            async start(c) {
              c.enqueue(first);
              await gate;
              c.enqueue(second);
              c.close();
            },
          }),
          { headers: { "content-length": "1000" } },
        );
      }
      if (body.length > 0) return new Response(body, { headers: { "content-type": req.headers.get("content-type") ?? "application/octet-stream", ...extra } });
      return new Response(`ok ${url.pathname}${url.search}`, { headers: extra });
    },
    websocket: {
      message(ws, msg) {
        ws.send(msg);
      },
    },
  });
  return { server, seen, port: server.port!, release: () => release() };
}

/** A response of the raw origin: written as these writes, then the connection ends if `close`. */
export interface Canned {
  writes: Uint8Array[];
  close?: boolean;
}

/**
 * A raw TCP origin (Bun.listen): reads bodiless request heads, one after another on a connection,
 * and answers each with the bytes `answer(method, path)` gives, exactly as given.
 */
export function rawOrigin(answer: (method: string, path: string) => Canned) {
  const requests: string[] = [];
  type State = { buf: Uint8Array; out: Uint8Array[]; closing: boolean };
  // Bun's socket.write may take part of a chunk: the rest waits for drain, then the end if asked.
  const flush = (s: import("bun").Socket<State>) => {
    while (s.data.out.length) {
      const next = s.data.out[0]!;
      const n = s.write(next);
      if (n < next.length) {
        s.data.out[0] = next.subarray(Math.max(0, n));
        return;
      }
      s.data.out.shift();
    }
    if (s.data.closing) s.end();
  };
  const server = Bun.listen<State>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.data = { buf: new Uint8Array(0), out: [], closing: false };
      },
      data(s, chunk) {
        s.data.buf = concatBytes([s.data.buf, chunk]);
        for (;;) {
          const end = indexOfCrlfCrlf(s.data.buf);
          if (end < 0) break;
          const head = Buffer.from(s.data.buf.subarray(0, end)).toString("latin1");
          s.data.buf = s.data.buf.slice(end + 4);
          requests.push(head);
          const [method, path] = head.split(" ") as [string, string];
          const c = answer(method, path);
          s.data.out.push(...c.writes);
          if (c.close) {
            s.data.closing = true;
            break;
          }
        }
        flush(s);
      },
      drain(s) {
        flush(s);
      },
      error() {},
    },
  });
  return { server, requests, port: server.port };
}

// ---- WebSocket frames (RFC 6455) ----

/** A client frame (masked, as a client must send it). */
export function wsClientFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const mask = crypto.getRandomValues(new Uint8Array(4));
  const len = payload.length;
  const head = len < 126 ? [0x80 | opcode, 0x80 | len] : [0x80 | opcode, 0x80 | 126, len >> 8, len & 0xff];
  const out = new Uint8Array(head.length + 4 + len);
  out.set(head);
  out.set(mask, head.length);
  for (let i = 0; i < len; i++) out[head.length + 4 + i] = payload[i]! ^ mask[i & 3]!;
  return out;
}

/** Complete frames at the start of `buf` (server frames: unmasked): each one's opcode and payload, and the bytes they used. */
export function wsFrames(buf: Uint8Array): { frames: { opcode: number; payload: Uint8Array }[]; used: number } {
  const frames: { opcode: number; payload: Uint8Array }[] = [];
  let i = 0;
  for (;;) {
    if (buf.length < i + 2) break;
    let len = buf[i + 1]! & 0x7f;
    let at = i + 2;
    if (len === 126) {
      if (buf.length < at + 2) break;
      len = (buf[at]! << 8) | buf[at + 1]!;
      at += 2;
    } else if (len === 127) throw new Error("no 64-bit frames in these tests");
    const masked = (buf[i + 1]! & 0x80) !== 0;
    if (masked) at += 4;
    if (buf.length < at + len) break;
    frames.push({ opcode: buf[i]! & 0x0f, payload: buf.slice(at, at + len) });
    i = at + len;
  }
  return { frames, used: i };
}

// ---- the API ----

/** An answer of the API: status, headers, parsed JSON when there is some. */
export interface ApiReply {
  status: number;
  headers: Headers;
  json: any;
}

/** Calls the API at `apiPort` with these headers (auth: a bearer token or a cookie and CSRF token). */
export async function apiCall(apiPort: number, method: string, path: string, auth: Record<string, string>, body?: unknown): Promise<ApiReply> {
  const res = await fetch(`http://127.0.0.1:${apiPort}${path}`, {
    method,
    headers: { ...auth, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text && res.headers.get("content-type")?.includes("json") ? JSON.parse(text) : null };
}

/** warren_inspect_bytes from GET /metrics. */
export async function inspectBytes(apiPort: number, adminToken: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${apiPort}/metrics`, { headers: { authorization: `Bearer ${adminToken}` }, signal: AbortSignal.timeout(10_000) });
  const m = /^warren_inspect_bytes (\d+)$/m.exec(await res.text());
  if (!m) throw new Error("no warren_inspect_bytes in /metrics");
  return Number(m[1]);
}

/** The bytes inspect.ts accounts for one capture (its detail): heads (name + value + 4 each), url, method, and the kept bodies. */
export function accountedBytes(d: any): number {
  const heads = (h: [string, string][]) => h.reduce((n, [k, v]) => n + k.length + v.length + 4, 0);
  // The memory a body holds: whole blocks of the capture store (CAPTURE_BLOCK_BYTES), none for an empty body.
  const kept = (b: { base64: string; memoryBytes: number }) => {
    const n = Buffer.from(b.base64, "base64").length;
    if (b.memoryBytes !== Math.ceil(n / CAPTURE_BLOCK_BYTES) * CAPTURE_BLOCK_BYTES) throw new Error(`memoryBytes ${b.memoryBytes} for ${n} kept bytes`);
    return b.memoryBytes;
  };
  return heads(d.request.headers) + heads(d.response.headers) + d.url.length + d.method.length + kept(d.request.body) + kept(d.response.body);
}

export const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");
export const unb64 = (s: string) => new Uint8Array(Buffer.from(s, "base64"));
