/** The reverse proxy's parsers: HTTP heads, body framing (with smuggling cases), the chunked reader split every way, and real ClientHellos for SNI. */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import tls from "node:tls";
import { type BodyKind, BodyReader, MAX_CHUNK_LINE_BYTES, requestBody, responseBody } from "../lib/http/body.ts";
import { type Header, header, headEnd, headerList, headerTokens, MAX_HEAD_BYTES, MAX_HEADERS, parseRequestHead, parseResponseHead, type RequestHead, requestHeadBytes, type ResponseHead, responseHeadBytes, setHeader } from "../lib/http/head.ts";
import { MAX_CLIENT_HELLO_BYTES, MAX_CLIENT_HELLO_WIRE_BYTES, readClientHello, tlsAlert } from "../lib/http/sni.ts";

const bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const text = (b: Uint8Array) => String.fromCharCode(...b);
/** A request head from its lines, CRLF-terminated, with the blank line. */
const reqHead = (...lines: string[]) => bytes(lines.join("\r\n") + "\r\n\r\n");
const parseReq = (...lines: string[]) => parseRequestHead(reqHead(...lines));
const parseRes = (...lines: string[]) => parseResponseHead(reqHead(...lines));
const statusOf = (r: RequestHead | { status: number }) => ("method" in r ? 200 : r.status);

describe("headEnd", () => {
  test("finds CRLF CRLF, LF LF and mixed ends; -1 when incomplete", () => {
    expect(headEnd(bytes("GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY"), 0)).toBe(27);
    expect(headEnd(bytes("GET / HTTP/1.1\nHost: a\n\nBODY"), 0)).toBe(24);
    expect(headEnd(bytes("GET / HTTP/1.1\r\nHost: a\n\r\n"), 0)).toBe(26);
    expect(headEnd(bytes("GET / HTTP/1.1\r\nHost: a\r\n\r"), 0)).toBe(-1);
    expect(headEnd(bytes("GET / HTTP/1.1\r\nHost: a\r\n"), 0)).toBe(-1);
    expect(headEnd(new Uint8Array(0), -3)).toBe(-1);
  });
  test("resuming from the previous length minus 3 finds the same end at every split", () => {
    const buf = bytes("GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\nrest");
    const end = headEnd(buf, 0);
    for (let cut = 0; cut < buf.length; cut++) {
      const first = headEnd(buf.subarray(0, cut), 0);
      expect(first === -1 ? headEnd(buf, cut - 3) : first).toBe(end);
    }
  });
});

describe("parseRequestHead", () => {
  test("parses a request and writes it back byte for byte", () => {
    const raw = reqHead("POST /a?b=c HTTP/1.1", "Host: App.example.test", "X-Empty:", "Accept: */*", "X-Bin: caf\xe9 \x80\xff");
    const h = parseRequestHead(raw) as RequestHead;
    expect(h).toEqual({ method: "POST", target: "/a?b=c", minor: 1, headers: [["Host", "App.example.test"], ["X-Empty", ""], ["Accept", "*/*"], ["X-Bin", "caf\xe9 \x80\xff"]] });
    expect(requestHeadBytes(h)).toEqual(raw);
    expect(requestHeadBytes(parseReq("GET * HTTP/1.0") as RequestHead)).toEqual(reqHead("GET * HTTP/1.0"));
  });
  test("property: any well-formed CRLF head round-trips byte for byte", () => {
    const token = fc.stringMatching(/^[-!#$%&'*+.^_`|~0-9A-Za-z]{1,12}$/);
    const vchar = "\\x21-\\x7e\\x80-\\xff";
    const target = fc.stringMatching(new RegExp(`^[${vchar}]{1,30}$`));
    const value = fc.stringMatching(new RegExp(`^([${vchar}]([ \\t${vchar}]{0,20}[${vchar}])?)?$`));
    fc.assert(fc.property(token, target, fc.constantFrom("0", "1"), fc.array(fc.tuple(token, value), { maxLength: 10 }), (method, t, minor, hs) => {
      const raw = reqHead(`${method} ${t} HTTP/1.${minor}`, ...hs.map(([n, v]) => (v === "" ? `${n}:` : `${n}: ${v}`)));
      expect(requestHeadBytes(parseRequestHead(raw) as RequestHead)).toEqual(raw);
    }));
  });
  test("trims OWS around values and accepts LF-only line ends", () => {
    expect(parseReq("GET / HTTP/1.1", "A:  b c \t") as RequestHead).toMatchObject({ headers: [["A", "b c"]] });
    expect(parseRequestHead(bytes("GET / HTTP/1.1\nA: b\n\n"))).toMatchObject({ headers: [["A", "b"]] });
  });
  test.each([
    ["GET / HTTP/1.2", 505], ["GET / HTTP/2.0", 505], ["PRI * HTTP/2.0", 505], ["GET / HTTP/0.9", 505],
    ["GET  / HTTP/1.1", 400], ["GET / HTTP/1.1 ", 400], [" GET / HTTP/1.1", 400], ["GET /  HTTP/1.1", 400],
    ["GET / http/1.1", 400], ["GET / HTTP/1.10", 400], ["GET /", 400], ["GET", 400], ["", 400],
    ["G@T / HTTP/1.1", 400], ["GET /a\tb HTTP/1.1", 400], ["GET /a\x7f HTTP/1.1", 400], ["GET / HTTP/1.1\r", 400],
    ["GET\t/ HTTP/1.1", 400], ["get / HTTP/1.1", 200],
  ])("request line %j → %d", (line, status) => {
    expect(statusOf(parseReq(line))).toBe(status);
  });
  test.each([
    ["Host : a", "header name contains a space"], ["Host\t: a", "header name contains a space"],
    [": a", "empty header name"], ["Ho(st: a", "invalid character in header name"], ["H\xe9: a", "invalid character in header name"],
    ["NoColon", "header line without a colon"], [" folded", "obsolete line folding in header"], ["\tfolded", "obsolete line folding in header"],
    ["A: b\x00c", "control character in header value"], ["A: b\rc", "control character in header value"],
    ["A: b\x1bc", "control character in header value"], ["A: b\x7f", "control character in header value"],
  ])("header line %j → 400 %s", (line, reason) => {
    expect(parseReq("GET / HTTP/1.1", line)).toEqual({ status: 400, reason });
  });
  test("HTAB and obs-text are allowed in values", () => {
    expect(parseReq("GET / HTTP/1.1", "A: b\tc\xa0")).toMatchObject({ headers: [["A", "b\tc\xa0"]] });
  });
  test(`more than ${MAX_HEADERS} header lines → 431; a head over MAX_HEAD_BYTES → 431`, () => {
    const lines = Array.from({ length: MAX_HEADERS }, (_, i) => `X-${i}: v`);
    expect(statusOf(parseReq("GET / HTTP/1.1", ...lines))).toBe(200);
    expect(statusOf(parseReq("GET / HTTP/1.1", ...lines, "X: v"))).toBe(431);
    expect(statusOf(parseReq("GET / HTTP/1.1", `X: ${"v".repeat(MAX_HEAD_BYTES)}`))).toBe(431);
  });
  test("an unterminated head or bytes after it → 400", () => {
    expect(statusOf(parseRequestHead(bytes("GET / HTTP/1.1\r\nA: b\r\n")))).toBe(400);
    expect(statusOf(parseRequestHead(bytes("GET / HTTP/1.1\r\n\r\nX")))).toBe(400);
  });
  test("never throws on random bytes", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (b) => {
      parseRequestHead(b);
      parseResponseHead(b);
      headEnd(b, 0);
    }));
  });
});

describe("parseResponseHead", () => {
  test("parses status lines, with empty reasons and a missing SP, and round-trips", () => {
    const raw = reqHead("HTTP/1.1 404 Not Found", "Content-Length: 0");
    const h = parseResponseHead(raw) as ResponseHead;
    expect(h).toEqual({ minor: 1, status: 404, reason: "Not Found", headers: [["Content-Length", "0"]] });
    expect(responseHeadBytes(h)).toEqual(raw);
    expect(parseRes("HTTP/1.0 200 ")).toMatchObject({ minor: 0, status: 200, reason: "" });
    expect(parseRes("HTTP/1.1 204")).toMatchObject({ status: 204, reason: "" });
    expect(parseRes("HTTP/1.1 999 x")).toMatchObject({ status: 999 });
  });
  test.each(["HTTP/1.1 099 x", "HTTP/1.1 20 OK", "HTTP/1.1 2000 OK", "HTTP/1.1 abc OK", "HTTP/2 200 OK", "HTTP/1.1  200 OK", "HTTP/1.1 200 O\x01K", "ICY 200 OK", "HTTP/3.0 200 OK"])(
    "%j is refused",
    (line) => expect(typeof parseRes(line)).toBe("string"),
  );
  test("header rules apply to responses too", () => {
    expect(parseRes("HTTP/1.1 200 OK", "Bad : x")).toBe("header name contains a space");
  });
});

describe("header helpers", () => {
  const hs: Header[] = [["Connection", "keep-alive, Upgrade"], ["Host", "a"], ["connection", " close,,"], ["Via", "1.1 x"]];
  test("header, headerList, headerTokens compare names case-insensitively", () => {
    expect(header(hs, "HOST")).toBe("a");
    expect(header(hs, "missing")).toBeUndefined();
    expect(headerList(hs, "Connection")).toBe("keep-alive, Upgrade,  close,,");
    expect(headerList(hs, "missing")).toBeUndefined();
    expect(headerTokens(hs, "CONNECTION")).toEqual(["keep-alive", "upgrade", "close"]);
  });
  test("setHeader replaces every line in place, appends, removes, and refuses injection", () => {
    const h = hs.map((x) => [...x] as Header);
    setHeader(h, "CONNECTION", "close");
    expect(h).toEqual([["CONNECTION", "close"], ["Host", "a"], ["Via", "1.1 x"]]);
    setHeader(h, "X-Forwarded-For", "10.0.0.1");
    expect(h.at(-1)).toEqual(["X-Forwarded-For", "10.0.0.1"]);
    setHeader(h, "host", null);
    expect(h.map((x) => x[0])).toEqual(["CONNECTION", "Via", "X-Forwarded-For"]);
    expect(() => setHeader(h, "X", "a\r\nEvil: 1")).toThrow();
    expect(() => setHeader(h, "X Y", "a")).toThrow();
  });
});

describe("body framing", () => {
  const req = (minor: 0 | 1, ...lines: string[]) => requestBody(parseReq(`POST / HTTP/1.${minor}`, ...lines) as RequestHead);
  test.each<[string[], BodyKind | number]>([
    [[], { kind: "none" }],
    [["Content-Length: 12"], { kind: "length", length: 12 }],
    [["Content-Length: 0"], { kind: "length", length: 0 }],
    [["Content-Length: 5", "content-length: 5"], { kind: "length", length: 5 }],
    [["Content-Length: 5, 5"], { kind: "length", length: 5 }],
    [["Transfer-Encoding: chunked"], { kind: "chunked" }],
    [["Transfer-Encoding: gzip, Chunked"], { kind: "chunked" }],
    [["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"], { kind: "chunked" }],
    [["Transfer-Encoding: chunked", "Content-Length: 5"], 400],
    [["Content-Length: 1, 2"], 400],
    [["Content-Length: 1", "Content-Length: 2"], 400],
    [["Content-Length: -1"], 400], [["Content-Length: +1"], 400], [["Content-Length: 0x10"], 400], [["Content-Length: 1 2"], 400],
    [["Content-Length:"], 400], [["Content-Length: 5,"], 400], [["Content-Length: 99999999999999999999"], 400],
    [["Transfer-Encoding: gzip"], 400], [["Transfer-Encoding: chunked, identity"], 400], [["Transfer-Encoding:"], 400],
    [["Transfer-Encoding: chunked, chunked"], 400], [["Transfer-Encoding: chunked;x=1"], 400],
    [["Transfer-Encoding: foo, chunked"], 501], [["Transfer-Encoding: identity, chunked"], 501],
  ])("request with %j → %j", (lines, want) => {
    const got = req(1, ...lines);
    if (typeof want === "number") expect((got as { status: number }).status).toBe(want);
    else expect(got).toEqual(want);
  });
  test("Transfer-Encoding in an HTTP/1.0 request → 400", () => {
    expect(req(0, "Transfer-Encoding: chunked")).toMatchObject({ status: 400 });
    expect(req(0, "Content-Length: 3")).toEqual({ kind: "length", length: 3 });
  });
  const res = (status: number, method: string, ...lines: string[]) => responseBody(parseRes(`HTTP/1.1 ${status} X`, ...lines) as ResponseHead, method);
  test.each<[number, string, string[], BodyKind | "error"]>([
    [200, "HEAD", ["Content-Length: 10"], { kind: "none" }], [100, "GET", [], { kind: "none" }], [101, "GET", [], { kind: "none" }],
    [204, "GET", ["Content-Length: 3"], { kind: "none" }], [304, "GET", ["Transfer-Encoding: chunked"], { kind: "none" }],
    [200, "GET", ["Transfer-Encoding: gzip, chunked"], { kind: "chunked" }], [200, "GET", ["Transfer-Encoding: gzip"], { kind: "close" }],
    [200, "GET", ["Content-Length: 7"], { kind: "length", length: 7 }], [200, "GET", [], { kind: "close" }], [404, "POST", [], { kind: "close" }],
    [200, "CONNECT", ["Content-Length: 7"], { kind: "close" }], [407, "CONNECT", ["Content-Length: 7"], { kind: "length", length: 7 }],
    [200, "GET", ["Content-Length: 1, 2"], "error"], [200, "GET", ["Content-Length: x"], "error"],
    [200, "GET", ["Transfer-Encoding: chunked", "Content-Length: 2"], "error"],
  ])("%d response to %s with %j → %j", (status, method, lines, want) => {
    const got = res(status, method, ...lines);
    if (want === "error") expect(typeof got).toBe("string");
    else expect(got).toEqual(want);
  });
});

/** Feeds `pieces` one after another (each through a view that starts before it, to use `offset`), as a proxy would. */
function feed(kind: BodyKind, buf: Uint8Array, cuts: number[], maxTrailer?: number) {
  const r = new BodyReader(kind, maxTrailer);
  let consumed = 0;
  let prev = 0;
  for (const cut of [...cuts, buf.length]) {
    if (r.done || r.error) break;
    const n = r.take(buf.subarray(0, cut), prev);
    expect(n).toBeGreaterThanOrEqual(0);
    expect(n).toBeLessThanOrEqual(cut - prev);
    consumed += n;
    if (n < cut - prev && !r.done && !r.error) throw new Error("a reader stopped early without reason");
    prev = cut;
  }
  return { consumed, done: r.done, error: r.error, data: r.dataBytes, eof: r.eof() };
}
const CHUNKED: BodyKind = { kind: "chunked" };
const wholeAndSplit = (kind: BodyKind, buf: Uint8Array) => {
  const whole = feed(kind, buf, []);
  for (let cut = 0; cut <= buf.length; cut++) expect(feed(kind, buf, [cut])).toEqual(whole);
  expect(feed(kind, buf, Array.from({ length: buf.length }, (_, i) => i))).toEqual(whole);
  return whole;
};

describe("BodyReader", () => {
  test("none, length and close bodies", () => {
    expect(feed({ kind: "none" }, bytes("next"), [])).toMatchObject({ consumed: 0, done: true, eof: true });
    expect(wholeAndSplit({ kind: "length", length: 5 }, bytes("hello next"))).toMatchObject({ consumed: 5, done: true, data: 5 });
    expect(feed({ kind: "length", length: 0 }, bytes("x"), [])).toMatchObject({ consumed: 0, done: true });
    expect(feed({ kind: "length", length: 9 }, bytes("short"), [])).toMatchObject({ consumed: 5, done: false, eof: false });
    expect(wholeAndSplit({ kind: "close" }, bytes("all of it"))).toMatchObject({ consumed: 9, done: false, data: 9, eof: true });
  });
  test("chunked with extensions and trailers, split at every point and byte by byte", () => {
    const body = "5;name=value;x\r\nhello\r\n1A\r\n" + "z".repeat(26) + "\r\n000 ;e\r\nExpires: never\r\nX-T:\t1\r\n\r\n";
    expect(wholeAndSplit(CHUNKED, bytes(body + "GET / HTTP/1.1\r\n"))).toEqual({ consumed: body.length, done: true, error: null, data: 31, eof: true });
    expect(wholeAndSplit(CHUNKED, bytes("0\r\n\r\n"))).toMatchObject({ consumed: 5, done: true, data: 0 });
  });
  test.each([
    ["x\r\n", "bad chunk size"], ["\r\n", "bad chunk size"], [";a\r\n", "bad chunk size"], ["-1\r\n", "bad chunk size"],
    ["5\nhello\r\n", "bad chunk size"], ["5\r\rhello", "chunk size line not ended by CRLF"], ["5 \r\nhello", "bad chunk extension"],
    ["5;a\nb\r\n", "control character in chunk extension"], ["5\r\nhelloX\r\n", "missing CRLF after chunk data"],
    ["5\r\nhello\n0\r\n\r\n", "missing CRLF after chunk data"], ["5\r\nhello\r0", "missing CRLF after chunk data"],
    ["20000000000000\r\n", "chunk size too large"], ["0\r\nBad Trailer: x\r\n\r\n", "malformed trailer name"],
    ["0\r\n folded\r\n\r\n", "malformed trailer line"], ["0\r\nA: b\x00\r\n\r\n", "control character in trailer"],
    ["0\r\nA: b\n\r\n", "control character in trailer"], ["0\r\nA: b\rX", "trailer line not ended by CRLF"], ["0\r\n\rX", "chunked body not ended by CRLF"],
  ])("malformed chunked %j → %s", (input, error) => {
    expect(wholeAndSplit(CHUNKED, bytes(input + "tail"))).toMatchObject({ error, done: false, eof: false });
  });
  test(`a size line over ${MAX_CHUNK_LINE_BYTES} bytes is refused at the byte that crosses the limit`, () => {
    const ok = `1;${"e".repeat(MAX_CHUNK_LINE_BYTES - 5)}\r\nx\r\n0\r\n\r\n`;
    expect(feed(CHUNKED, bytes(ok), [])).toMatchObject({ done: true, consumed: ok.length });
    for (const long of [`1;${"e".repeat(MAX_CHUNK_LINE_BYTES)}\r\n`, `${"0".repeat(MAX_CHUNK_LINE_BYTES)}1\r\n`]) {
      const want = { error: "chunk size line too long", consumed: MAX_CHUNK_LINE_BYTES, done: false, data: 0, eof: false };
      expect(feed(CHUNKED, bytes(long), [])).toEqual(want);
      expect(feed(CHUNKED, bytes(long), Array.from({ length: long.length }, (_, i) => i))).toEqual(want);
    }
  });
  test("a chunk size up to 2^53-1 is accepted, a truncated body is not done", () => {
    expect(feed(CHUNKED, bytes("1fffffffffffff\r\nabc"), [])).toMatchObject({ error: null, consumed: 19, data: 3, eof: false });
  });
  test("trailers are bounded by maxTrailerBytes", () => {
    const input = bytes("0\r\nA: 12345678\r\n\r\n");
    expect(feed(CHUNKED, input, [], 15)).toMatchObject({ done: true, error: null });
    expect(feed(CHUNKED, input, [], 14)).toMatchObject({ done: false, error: "trailers too long" });
  });

  const chunkList = fc.array(fc.record({ data: fc.uint8Array({ maxLength: 40 }), ext: fc.constantFrom("", ";a", ";a=b", ' ;q="x y"') }), { maxLength: 6 });
  const trailers = fc.array(fc.constantFrom("X: y", "Expires: 0", "E:"), { maxLength: 3 });
  const encode = (chunks: { data: Uint8Array; ext: string }[], trail: string[], tail: Uint8Array) => {
    let s = "";
    for (const c of chunks) if (c.data.length) s += `${c.data.length.toString(16)}${c.ext}\r\n${text(c.data)}\r\n`;
    s += `0\r\n${trail.map((t) => t + "\r\n").join("")}\r\n`;
    return { body: s.length, buf: bytes(s + text(tail)) };
  };
  /** Up to 8 split points of a buffer, as fractions of its length (sorted, so they work for any length). */
  const fractions = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 8 }).map((a) => a.sort((x, y) => x - y));
  const cutsAt = (f: number[], n: number) => f.map((x) => Math.floor(x * n));
  test("property: any split of a chunked body gives the same count, end and data bytes; the next message is untouched", () => {
    fc.assert(fc.property(chunkList, trailers, fc.uint8Array({ maxLength: 10 }), fractions, (chunks, trail, tail, f) => {
      const { body, buf } = encode(chunks, trail, tail);
      const data = chunks.reduce((n, c) => n + c.data.length, 0);
      const cuts = cutsAt(f, buf.length);
      expect(feed(CHUNKED, buf, cuts)).toEqual({ consumed: body, done: true, error: null, data, eof: true });
      expect(feed(CHUNKED, buf, Array.from({ length: buf.length }, (_, i) => i))).toMatchObject({ consumed: body, data });
    }));
  });
  test("property: a corrupted chunked body gives the same result however it is split", () => {
    fc.assert(fc.property(chunkList, trailers, fc.nat(), fc.integer({ min: 0, max: 255 }), fractions, (chunks, trail, at, byte, f) => {
      const { buf } = encode(chunks, trail, new Uint8Array(0));
      buf[at % buf.length] = byte;
      const cuts = cutsAt(f, buf.length);
      expect(feed(CHUNKED, buf, cuts)).toEqual(feed(CHUNKED, buf, []));
    }));
  });
});

// ClientHello builders, for the cases a real client never sends.
const u16 = (n: number) => [(n >> 8) & 255, n & 255];
const vec16 = (b: number[]) => [...u16(b.length), ...b];
const ascii = (s: string) => [...bytes(s)];
const sniExt = (...names: string[]) => [0, 0, ...vec16(vec16(names.flatMap((n) => [0, ...vec16(ascii(n))])))];
const alpnExt = (...protos: string[]) => [0, 16, ...vec16(vec16(protos.flatMap((p) => [p.length, ...ascii(p)])))];
const helloMsg = (exts: number[] | null, pad = 0) => {
  const body = [3, 3, ...new Array(32).fill(7), 0, ...vec16([0x13, 1]), 1, 0, ...(exts ? vec16([...exts, ...(pad ? [0, 21, ...vec16(new Array(pad).fill(0))] : [])]) : [])];
  return [1, body.length >> 16, (body.length >> 8) & 255, body.length & 255, ...body];
};
const records = (msg: number[], sizes: number[] = [msg.length]) => {
  const out: number[] = [];
  for (let at = 0, i = 0; at < msg.length; i++) {
    const n = Math.min(sizes[i] ?? msg.length, msg.length - at);
    out.push(0x16, 3, 1, ...u16(n), ...msg.slice(at, at + n));
    at += n;
  }
  return new Uint8Array(out);
};

/** The bytes a real node:tls client sends first, as a raw TCP server on loopback sees them. */
async function captureHello(options: tls.ConnectionOptions): Promise<{ hello: Uint8Array; alertSeen: Promise<string> }> {
  let buf = new Uint8Array(0);
  const { promise, resolve } = Promise.withResolvers<Uint8Array>();
  const server = Bun.listen<undefined>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      data(s, d) {
        const next = new Uint8Array(buf.length + d.length);
        next.set(buf);
        next.set(d, buf.length);
        buf = next;
        if (readClientHello(buf) === null) return;
        s.write(tlsAlert(112));
        s.end();
        resolve(buf);
      },
    },
  });
  const client = tls.connect({ host: "127.0.0.1", port: server.port, rejectUnauthorized: false, ...options });
  const alertSeen = new Promise<string>((ok) => client.on("error", (e: NodeJS.ErrnoException) => ok(e.code ?? e.message)));
  const hello = await promise;
  alertSeen.finally(() => server.stop(true));
  return { hello, alertSeen };
}

describe("readClientHello", () => {
  test("reads server name and ALPN from a real client's hello, byte by byte and across records", async () => {
    const { hello, alertSeen } = await captureHello({ servername: "App.Example.test", ALPNProtocols: ["h2", "http/1.1"] });
    expect(readClientHello(hello)).toEqual({ serverName: "app.example.test", alpn: ["h2", "http/1.1"] });
    for (let n = 0; n < hello.length; n++) expect(readClientHello(hello.subarray(0, n))).toBeNull();
    const msg = [...hello.subarray(5)];
    const split = records(msg, [1, 2, 3, 100]);
    for (let n = 0; n < split.length; n++) expect(readClientHello(split.subarray(0, n))).toBeNull();
    expect(readClientHello(split)).toEqual({ serverName: "app.example.test", alpn: ["h2", "http/1.1"] });
    expect(await alertSeen).toBe("ERR_SSL_TLSV1_ALERT_UNRECOGNIZED_NAME");
  });
  test("a client connecting to an IP sends no server name", async () => {
    const { hello } = await captureHello({});
    expect(readClientHello(hello)).toEqual({ serverName: null, alpn: [] });
  });
  test.each([
    ["MyHost-1.example", "myhost-1.example"], ["a", "a"], ["127.0.0.1", "127.0.0.1"], [`${"a".repeat(63)}.b`, `${"a".repeat(63)}.b`],
  ])("server name %j → %j", (name, want) => {
    expect(readClientHello(records(helloMsg(sniExt(name))))).toEqual({ serverName: want, alpn: [] });
  });
  test.each(["bad_name.test", "-a.test", "a-.test", "a..b", "a.test.", ".a", "", "a b", `${"a".repeat(64)}.b`, `${"a.".repeat(127)}ab`, "caf\xe9"])(
    "invalid server name %j is an error",
    (name) => expect(readClientHello(records(helloMsg(sniExt(name))))).toBeTypeOf("string"),
  );
  test("refuses malformed hellos", () => {
    const errs: Uint8Array[] = [
      bytes("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), bytes("\x16garbage"), new Uint8Array([0x16, 3, 1, 0, 0]),
      new Uint8Array([0x16, 3, 1, 0x40, 1]), records([2, 0, 0, 0]), records(helloMsg([...sniExt("a"), ...sniExt("b")])),
      records(helloMsg(sniExt("a", "b"))), records(helloMsg([...alpnExt("h2"), ...alpnExt("h2")])), records(helloMsg(alpnExt(""))),
      records([...helloMsg([]), 0]), records(helloMsg([0, 0, 0, 9, 1])), new Uint8Array([...records(helloMsg([]), [3]).subarray(0, 8), 0x17, 3, 3, 0, 1, 0]),
      records([1, 0, 0, 3, 3, 3, 7]), records([1, 0x00, 0x40, 0x01, ...new Array(20).fill(0)]),
    ];
    for (const e of errs) expect(readClientHello(e)).toBeTypeOf("string");
  });
  test(`a hello up to ${MAX_CLIENT_HELLO_BYTES} bytes is read; a larger one is refused before it is buffered`, () => {
    const big = helloMsg(alpnExt("h2"), MAX_CLIENT_HELLO_BYTES - helloMsg(alpnExt("h2")).length - 4);
    expect(big.length).toBe(MAX_CLIENT_HELLO_BYTES);
    expect(readClientHello(records(big, [10000]))).toEqual({ serverName: null, alpn: ["h2"] });
    const over = records([...big, 0], [10000]);
    over.set([0, 0x40, 1], 6); // handshake length one more
    expect(readClientHello(over.subarray(0, 20))).toBe("ClientHello too large");
    expect(readClientHello(records(helloMsg(null)))).toEqual({ serverName: null, alpn: [] });
  });
  test("never throws on random bytes, and answers by MAX_CLIENT_HELLO_WIRE_BYTES", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), (b, tlsLike) => {
      if (tlsLike && b.length > 2) b.set([0x16, 3], 0);
      readClientHello(b);
    }));
    const slow = records(helloMsg(sniExt("a"), 200), new Array(300).fill(1));
    expect(readClientHello(slow.subarray(0, MAX_CLIENT_HELLO_WIRE_BYTES))).toBeTypeOf("string");
    expect(tlsAlert(40)).toEqual(new Uint8Array([0x15, 3, 1, 0, 2, 2, 40]));
  });
});
