/**
 * The request inspector (issue 19): what an inspected HTTP app's exchanges keep (byte for byte, up to
 * inspectBodyBytes), replay through the tunnel, masking, who may read what, the ring's bound and its
 * memory gauge, WebSocket frame counts, the live feed, and bad input. Real sockets on 127.0.0.1: raw
 * TCP users, a Bun.serve origin that records what it gets, and a raw TCP origin whose responses are
 * written byte for byte.
 *
 * Decided and asserted here: for a chunked body (either way), the capture holds the PAYLOAD, chunk
 * framing taken out (BodyReader.onData in lib/http/body.ts feeds the tap), not the wire bytes. That is
 * what lets a captured chunked request be replayed with a Content-Length; `size` is the payload's
 * size too. The user's bytes on the wire are untouched either way (compared with a non-inspected app).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { freePort } from "../bench/common.ts";
import type { Connector } from "../lib/client/connector.ts";
import type { RunningServer } from "../server.ts";
import { Seen as Bodies, openFeed, within } from "./dashboard-helpers.ts";
import { clientConfig, onlineClient, randomData, sha256, testServer, TOKEN, until } from "./helpers.ts";
import { accountedBytes, apiCall, b64, bunOrigin, chunked, inspectBytes, rawHttp, rawOrigin, requestHead, unb64, wsClientFrame, wsFrames, type Canned } from "./inspect-helpers.ts";

const enc = new TextEncoder();
const cat = (...parts: (string | Uint8Array)[]) => Buffer.concat(parts.map((p) => (typeof p === "string" ? enc.encode(p) : p)));
/** Bytes holding every one of the 256 values (shuffled in), then pseudo-random ones: `n` in all. */
function allValues(n: number, seed: number): Uint8Array {
  const out = randomData(n, seed);
  const order = [...Array(256).keys()].sort((a, b) => ((a * 7919 + seed) % 256) - ((b * 7919 + seed) % 256));
  out.set(order, 13);
  return out;
}

const LIMIT = 1024; // inspectBodyBytes of the main server
const PASSWORD = "pw-9f3k2-s3cret";
const SECRET_PASSWORD = "open-pw-7731";

// ---- the raw origin's responses, byte for byte ----
const CL_BODY = allValues(700, 3);
const CHUNK_BODY = allValues(900, 4);
const CLOSE_BODY = allValues(800, 5);
const BIG_CL = randomData(5000, 6);
const BIG_CHUNKED = randomData(300_000, 8);
const SSE_EVENTS = ["event: tick\ndata: 1\n\n", "event: tick\ndata: two\nid: 2\n\n", ": a comment\ndata: {\"n\":3}\n\n"];
const sseBody = enc.encode(SSE_EVENTS.join(""));
const chunkWire = chunked(CHUNK_BODY, [1, 255, 100]);
const bigChunkWire = chunked(BIG_CHUNKED, [1000, 2000, 70_000]);
function answer(method: string, target: string): Canned {
  const path = target.split("?")[0];
  const head = (lines: string) => enc.encode(`HTTP/1.1 ${lines}\r\n\r\n`);
  switch (path) {
    case "/cl": {
      const h = head(`200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${CL_BODY.length}`);
      return { writes: method === "HEAD" ? [h] : [h, CL_BODY] };
    }
    // Chunk-size lines, an extension and a trailer, cut across writes.
    case "/chunked":
      return { writes: [head("200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked"), chunkWire.subarray(0, 3), chunkWire.subarray(3, 400), chunkWire.subarray(400)] };
    case "/sse":
      return {
        writes: [
          head("200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked"),
          ...SSE_EVENTS.map((e) => enc.encode(`${enc.encode(e).length.toString(16)}\r\n${e}\r\n`)),
          enc.encode("0\r\n\r\n"),
        ],
      };
    case "/204":
      return { writes: [head("204 No Content\r\nX-Shape: none")] };
    case "/304":
      return { writes: [head('304 Not Modified\r\nETag: "v1"')] };
    // No Content-Length, no chunking: the body ends with the connection.
    case "/close":
      return { writes: [head("200 OK\r\nContent-Type: application/octet-stream"), CLOSE_BODY.subarray(0, 100), CLOSE_BODY.subarray(100)], close: true };
    case "/bigcl":
      return { writes: [head(`200 OK\r\nContent-Length: ${BIG_CL.length}`), BIG_CL] };
    case "/bigchunked":
      return { writes: [head("200 OK\r\nTransfer-Encoding: chunked"), bigChunkWire] };
    default:
      return { writes: [head("404 Not Found\r\nContent-Length: 0")] };
  }
}

const O = bunOrigin();
const R = rawOrigin(answer);
let s1: RunningServer;
let vport: number;
const connectors: Connector[] = [];
let lone: Connector;
const admin = () => ({ authorization: `Bearer ${s1.adminToken}` });
const api = (method: string, path: string, body?: unknown, auth: Record<string, string> = admin(), srv = s1) => apiCall(srv.apiPort, method, path, auth, body);
const host = (sub: string) => `${sub}.insp.test:${vport}`;
let nonce = 0;
/** A path of its own, so the test can find its capture. */
const unique = (path: string) => `${path}${path.includes("?") ? "&" : "?"}n=${++nonce}`;

/** The detail of the (non-replay) capture of `url`, once its exchange is over. */
async function captureOf(group: string, app: string, url: string, srv = s1): Promise<any> {
  let id = 0;
  await until(
    async () => {
      const r = await api("GET", `/api/groups/${group}/apps/${app}/requests?limit=1000`, undefined, { authorization: `Bearer ${srv.adminToken}` }, srv);
      id = r.json.requests.find((x: any) => x.url === url && x.replayOf === null && x.state !== "open")?.id ?? 0;
      return id > 0;
    },
    5000,
    `the capture of ${url}`,
  );
  const d = await api("GET", `/api/groups/${group}/apps/${app}/requests/${id}`, undefined, { authorization: `Bearer ${srv.adminToken}` }, srv);
  expect(d.status).toBe(200);
  return d.json;
}
const hdr = (headers: [string, string][], name: string) => headers.filter(([k]) => k.toLowerCase() === name).map(([, v]) => v);
const captured = (body: { base64: string }) => unb64(body.base64);

beforeAll(async () => {
  vport = await freePort();
  s1 = await testServer({
    vhostHTTPPort: vport,
    subdomainHost: "insp.test",
    inspectBodyBytes: LIMIT,
    groups: [
      {
        name: "one",
        token: TOKEN,
        apps: [
          { name: "insp", type: "http", subdomain: "insp", inspect: true },
          { name: "plain", type: "http", subdomain: "plain" },
          { name: "rinsp", type: "http", subdomain: "rinsp", inspect: true },
          { name: "rplain", type: "http", subdomain: "rplain" },
          { name: "locked", type: "http", subdomain: "locked", inspect: true, httpUser: "ann", httpPassword: PASSWORD },
          { name: "open", type: "http", subdomain: "open", inspect: true, inspectSecrets: true, httpUser: "bob", httpPassword: SECRET_PASSWORD },
          { name: "off", type: "http", subdomain: "off", inspect: false },
          { name: "tcpapp", type: "tcp" },
        ],
      },
      { name: "two", token: TOKEN, apps: [{ name: "other", type: "http", subdomain: "other", inspect: true }] },
      { name: "lone", token: TOKEN, apps: [{ name: "solo", type: "http", subdomain: "solo", inspect: true }] },
    ],
  });
  const local = (name: string, port: number) => ({ name, type: "http" as never, localAddr: `127.0.0.1:${port}` });
  const [one, two, l] = await Promise.all([
    onlineClient(clientConfig(s1, "one", [local("insp", O.port), local("plain", O.port), local("rinsp", R.port), local("rplain", R.port), local("locked", O.port), local("open", O.port), local("off", O.port), { name: "tcpapp", localAddr: `127.0.0.1:${O.port}` }])),
    onlineClient(clientConfig(s1, "two", [local("other", O.port)])),
    onlineClient(clientConfig(s1, "lone", [local("solo", O.port)])),
  ]);
  connectors.push(one.connector, two.connector, l.connector);
  lone = l.connector;
});

afterAll(() => {
  for (const c of connectors) c.stop();
  s1?.stop();
  O.server.stop(true);
  R.server.stop(true);
});

describe("capture is exact", () => {
  const bodies: { name: string; headers: [string, string][]; body: Uint8Array; chunks?: number[] }[] = [
    { name: "json", headers: [["Content-Type", "application/json"]], body: enc.encode(JSON.stringify({ a: 1, text: "héllo ✓ 日本", list: [true, null, 2.5] })) },
    { name: "form", headers: [["Content-Type", "application/x-www-form-urlencoded"]], body: enc.encode("a=1&b=%20x+y&c=%E2%9C%93&empty=") },
    { name: "binary", headers: [["Content-Type", "application/octet-stream"]], body: allValues(700, 1) },
    { name: "chunked", headers: [["Content-Type", "application/octet-stream"], ["Transfer-Encoding", "chunked"]], body: allValues(900, 2), chunks: [1, 300, 17] },
  ];

  for (const c of bodies) {
    test(`a ${c.name} request body: the app and the capture get it byte for byte; the user gets the same echo with and without capture`, async () => {
      const wire = c.chunks ? chunked(c.body, c.chunks) : c.body;
      const headers: [string, string][] = [...c.headers, ...(c.chunks ? [] : [["Content-Length", String(c.body.length)] as [string, string]])];
      const url = unique(`/echo/${c.name}`);
      const res = await rawHttp(vport, cat(requestHead("POST", url, host("insp"), headers), wire.subarray(0, 5), wire.subarray(5)), "POST");
      expect(res.status).toBe(200);
      expect(res.body.length).toBe(c.body.length);
      expect(sha256(res.body)).toBe(sha256(c.body));
      const got = O.seen.at(-1)!;
      expect(got.path).toBe(url);
      expect(sha256(got.body)).toBe(sha256(c.body));

      const d = await captureOf("one", "insp", url);
      expect(d.method).toBe("POST");
      expect(d.state).toBe("complete");
      expect(d.status).toBe(200);
      expect(d.request.headers).toEqual([["Host", host("insp")], ...headers]);
      // The payload, framing left out (chunked: the wire bytes would be longer and differ).
      const req = captured(d.request.body);
      expect({ size: d.request.body.size, truncated: d.request.body.truncated, kept: req.length }).toEqual({ size: c.body.length, truncated: false, kept: c.body.length });
      expect(sha256(req)).toBe(sha256(c.body));
      if (c.chunks) expect(sha256(req)).not.toBe(sha256(wire));
      const resp = captured(d.response.body);
      expect(resp.length).toBe(c.body.length);
      expect(sha256(resp)).toBe(sha256(c.body));
      expect(d.requestBytes).toBe(c.body.length);
      expect(d.responseBytes).toBe(c.body.length);

      // The same request through a non-inspected app on the same origin: the same bytes back.
      const same = await rawHttp(vport, cat(requestHead("POST", url, host("plain"), headers), wire), "POST");
      expect(sha256(same.wire)).toBe(sha256(res.wire));
      expect(sha256(same.body)).toBe(sha256(c.body));
    });
  }

  const shapes: { name: string; method: string; path: string; status: number; payload: Uint8Array; wire: Uint8Array }[] = [
    { name: "content-length", method: "GET", path: "/cl", status: 200, payload: CL_BODY, wire: CL_BODY },
    { name: "chunked", method: "GET", path: "/chunked", status: 200, payload: CHUNK_BODY, wire: chunkWire },
    { name: "server-sent events", method: "GET", path: "/sse", status: 200, payload: sseBody, wire: cat(...SSE_EVENTS.map((e) => `${enc.encode(e).length.toString(16)}\r\n${e}\r\n`), "0\r\n\r\n") },
    { name: "204", method: "GET", path: "/204", status: 204, payload: new Uint8Array(0), wire: new Uint8Array(0) },
    { name: "HEAD", method: "HEAD", path: "/cl", status: 200, payload: new Uint8Array(0), wire: new Uint8Array(0) },
    { name: "304", method: "GET", path: "/304", status: 304, payload: new Uint8Array(0), wire: new Uint8Array(0) },
    { name: "close-delimited", method: "GET", path: "/close", status: 200, payload: CLOSE_BODY, wire: CLOSE_BODY },
  ];
  for (const s of shapes) {
    test(`a ${s.name} response: the user gets the origin's bytes with and without capture; the capture holds its payload`, async () => {
      const url = unique(s.path);
      const res = await rawHttp(vport, requestHead(s.method, url, host("rinsp")), s.method);
      const same = await rawHttp(vport, requestHead(s.method, url, host("rplain")), s.method);
      for (const r of [res, same]) {
        expect(r.status).toBe(s.status);
        expect(r.wire.length).toBe(s.wire.length);
        expect(sha256(r.wire)).toBe(sha256(s.wire));
        expect(sha256(r.body)).toBe(sha256(s.payload));
      }
      if (s.name === "close-delimited") expect(res.closed).toBe(true);
      if (s.name === "HEAD") expect(res.headers["content-length"]).toBe(String(CL_BODY.length));

      const d = await captureOf("one", "rinsp", url);
      expect(d.method).toBe(s.method);
      expect(d.status).toBe(s.status);
      expect(d.state).toBe("complete");
      expect(d.error).toBeNull();
      const kept = captured(d.response.body);
      expect({ size: d.response.body.size, truncated: d.response.body.truncated, kept: kept.length }).toEqual({ size: s.payload.length, truncated: false, kept: s.payload.length });
      expect(sha256(kept)).toBe(sha256(s.payload));
      expect(d.request.body).toEqual({ size: 0, truncated: false, memoryBytes: 0, base64: "" });
      if (s.name === "server-sent events") expect(hdr(d.response.headers, "content-type")).toEqual(["text/event-stream"]);
      if (s.name === "chunked") expect(hdr(d.response.headers, "transfer-encoding")).toEqual(["chunked"]);
    });
  }

  test("bodies over inspectBodyBytes are cut at 1024 with truncated = true and the full size; the user still gets every byte", async () => {
    // A 5000-byte upload (Content-Length) echoed back: both directions cut.
    const up = randomData(5000, 11);
    const url = unique("/echo/big");
    const res = await rawHttp(vport, cat(requestHead("POST", url, host("insp"), [["Content-Length", "5000"]]), up), "POST");
    expect(sha256(res.body)).toBe(sha256(up));
    let d = await captureOf("one", "insp", url);
    for (const side of [d.request.body, d.response.body]) {
      expect(side.size).toBe(5000);
      expect(side.truncated).toBe(true);
      expect(sha256(captured(side))).toBe(sha256(up.subarray(0, LIMIT)));
    }
    expect(d.requestBytes).toBe(5000);

    // A chunked upload of 3000: size counts the payload, the kept part is its first 1024 bytes.
    const up2 = randomData(3000, 12);
    const url2 = unique("/echo/bigchunked");
    await rawHttp(vport, cat(requestHead("POST", url2, host("insp"), [["Transfer-Encoding", "chunked"]]), chunked(up2, [700, 1])), "POST");
    d = await captureOf("one", "insp", url2);
    expect({ size: d.request.body.size, truncated: d.request.body.truncated }).toEqual({ size: 3000, truncated: true });
    expect(sha256(captured(d.request.body))).toBe(sha256(up2.subarray(0, LIMIT)));

    // Downloads: Content-Length and a 300,000-byte chunked one, byte-exact to the user with and without capture.
    for (const [path, payload] of [["/bigcl", BIG_CL], ["/bigchunked", BIG_CHUNKED]] as const) {
      const u = unique(path);
      const a = await rawHttp(vport, requestHead("GET", u, host("rinsp")));
      const b = await rawHttp(vport, requestHead("GET", u, host("rplain")));
      expect(a.body.length).toBe(payload.length);
      expect(sha256(a.body)).toBe(sha256(payload));
      expect(sha256(a.wire)).toBe(sha256(b.wire));
      const dd = await captureOf("one", "rinsp", u);
      expect({ size: dd.response.body.size, truncated: dd.response.body.truncated, responseBytes: dd.responseBytes }).toEqual({ size: payload.length, truncated: true, responseBytes: payload.length });
      expect(sha256(captured(dd.response.body))).toBe(sha256(payload.subarray(0, LIMIT)));
    }
  });
});

describe("replay", () => {
  test("as captured: same method, path, headers (minus masked ones) and body reach the app; the new exchange has replayOf", async () => {
    const body = enc.encode(JSON.stringify({ order: 42, note: "replay me" }));
    const url = unique("/orders");
    const headers: [string, string][] = [["Content-Type", "application/json"], ["Content-Length", String(body.length)], ["Authorization", "Bearer user-secret"], ["Cookie", "sid=1"], ["X-Custom", "kept"], ["Accept", "*/*"]];
    await rawHttp(vport, cat(requestHead("POST", url, host("insp"), headers), body), "POST");
    const first = O.seen.at(-1)!;
    const orig = await captureOf("one", "insp", url);

    const r = await api("POST", `/api/groups/one/apps/insp/requests/${orig.id}/replay`, {});
    expect(r.status).toBe(201);
    const again = O.seen.at(-1)!;
    expect(again).not.toBe(first);
    expect(again.method).toBe("POST");
    expect(again.path).toBe(url);
    expect(sha256(again.body)).toBe(sha256(body));
    // What the app saw the first time, less what was masked (never kept) and the connection's own header.
    const expected = { ...first.headers };
    delete expected.authorization;
    delete expected.cookie;
    delete expected.connection;
    const seenAgain = { ...again.headers };
    delete seenAgain.connection;
    expect(seenAgain).toEqual(expected);

    expect(r.json.replayOf).toBe(orig.id);
    expect(r.json.id).toBeGreaterThan(orig.id);
    expect(r.json.status).toBe(200);
    expect(r.json.state).toBe("complete");
    expect(sha256(captured(r.json.response.body))).toBe(sha256(body));
    const list = await api("GET", "/api/groups/one/apps/insp/requests?limit=5");
    expect(list.json.requests[0]).toMatchObject({ id: r.json.id, replayOf: orig.id, method: "POST", url, status: 200 });
  });

  test("a captured chunked request replays as its payload with a Content-Length", async () => {
    const body = allValues(600, 21);
    const url = unique("/chunked-replay");
    await rawHttp(vport, cat(requestHead("POST", url, host("insp"), [["Transfer-Encoding", "chunked"]]), chunked(body, [10, 200])), "POST");
    const orig = await captureOf("one", "insp", url);
    const r = await api("POST", `/api/groups/one/apps/insp/requests/${orig.id}/replay`, {});
    expect(r.status).toBe(201);
    const got = O.seen.at(-1)!;
    expect(got.path).toBe(url);
    expect(got.headers["content-length"]).toBe("600");
    expect(got.headers["transfer-encoding"]).toBeUndefined();
    expect(sha256(got.body)).toBe(sha256(body));
  });

  test("an edited replay (method, path, headers, bodyBase64) reaches the app as edited", async () => {
    const url = unique("/to-edit");
    await rawHttp(vport, requestHead("GET", url, host("insp"), [["X-Old", "1"]]));
    const orig = await captureOf("one", "insp", url);
    const body = allValues(400, 22);
    const r = await api("POST", `/api/groups/one/apps/insp/requests/${orig.id}/replay`, {
      method: "PUT",
      path: "/edited/path?x=1&y=%20",
      headers: [["Host", host("insp")], ["X-Edit", "yes"], ["Content-Type", "application/octet-stream"]],
      bodyBase64: b64(body),
    });
    expect(r.status).toBe(201);
    const got = O.seen.at(-1)!;
    expect(got.method).toBe("PUT");
    expect(got.path).toBe("/edited/path?x=1&y=%20");
    expect(got.headers["x-edit"]).toBe("yes");
    expect(got.headers["x-old"]).toBeUndefined();
    expect(got.headers["content-type"]).toBe("application/octet-stream");
    expect(got.headers["content-length"]).toBe("400");
    expect(sha256(got.body)).toBe(sha256(body));
    expect(r.json).toMatchObject({ replayOf: orig.id, method: "PUT", url: "/edited/path?x=1&y=%20", status: 200 });
    expect(sha256(captured(r.json.request.body))).toBe(sha256(body));
    expect(sha256(captured(r.json.response.body))).toBe(sha256(body));
  });

  test("a truncated body cannot be replayed as captured (409) but can with bodyBase64", async () => {
    const body = randomData(3000, 23);
    const url = unique("/cut");
    await rawHttp(vport, cat(requestHead("POST", url, host("insp"), [["Content-Length", "3000"]]), body), "POST");
    const orig = await captureOf("one", "insp", url);
    expect(orig.request.body.truncated).toBe(true);
    const before = O.seen.length;
    const refused = await api("POST", `/api/groups/one/apps/insp/requests/${orig.id}/replay`, {});
    expect(refused.status).toBe(409);
    expect(refused.json.error).toContain("inspectBodyBytes");
    expect(O.seen.length).toBe(before); // nothing went to the app
    const ok = await api("POST", `/api/groups/one/apps/insp/requests/${orig.id}/replay`, { bodyBase64: b64(body) });
    expect(ok.status).toBe(201);
    expect(sha256(O.seen.at(-1)!.body)).toBe(sha256(body));
    expect(ok.json.replayOf).toBe(orig.id);
    expect(ok.json.request.body.size).toBe(3000);
  });

  test("a request whose body never arrived whole cannot be replayed as captured (409), even when it fits the limit", async () => {
    const url = unique("/half");
    const s = net.connect(vport, "127.0.0.1");
    s.on("error", () => {});
    await new Promise<void>((r) => s.once("connect", () => r()));
    s.write(requestHead("POST", url, host("insp"), [["Content-Length", "100"]]) + "0123456789");
    await until(async () => (await api("GET", "/api/groups/one/apps/insp/requests?limit=1000")).json.requests.some((x: any) => x.url === url), 5000, "the capture to begin");
    s.destroy(); // 10 of 100 bytes: the exchange fails
    const orig = await captureOf("one", "insp", url);
    expect(orig.state).toBe("failed");
    expect(orig.request.body.truncated).toBe(false);
    const refused = await api("POST", `/api/groups/one/apps/insp/requests/${orig.id}/replay`, {});
    expect(refused.status).toBe(409);
    expect(refused.json.error).toContain("did not arrive whole");
  });

  test("PUT of an app that keeps its httpUser without sending httpPassword keeps the stored password (the API never shows it)", async () => {
    const admin = { authorization: `Bearer ${s1.adminToken}` };
    const created = await api("POST", "/api/groups", { name: "pwkeep", apps: [{ name: "w", type: "http", subdomain: "pwkeep", httpUser: "ann", httpPassword: "keep-this-pw" }] }, admin);
    expect(created.status).toBe(201);
    const put = await api("PUT", "/api/groups/pwkeep", { apps: [{ name: "w", type: "http", subdomain: "pwkeep", httpUser: "ann", inspect: true }] }, admin);
    expect(put.status).toBe(200);
    expect(s1.hub.registry.get("pwkeep")!.apps[0]!.httpPassword).toBe("keep-this-pw");
    expect(JSON.stringify(put.json)).not.toContain("keep-this-pw");
    // A new user name without a password is still a mistake.
    expect((await api("PUT", "/api/groups/pwkeep", { apps: [{ name: "w", type: "http", subdomain: "pwkeep", httpUser: "bob" }] }, admin)).status).toBe(400);
    expect((await api("DELETE", "/api/groups/pwkeep", undefined, admin)).status).toBe(204);
  });

  test("malformed replay bodies are 400 naming the key", async () => {
    const url = unique("/bad-replay");
    await rawHttp(vport, requestHead("GET", url, host("insp")));
    const orig = await captureOf("one", "insp", url);
    const at = `/api/groups/one/apps/insp/requests/${orig.id}/replay`;
    const cases: [unknown, string][] = [
      [{ method: "GE T" }, "method"],
      [{ method: 7 }, "method"],
      [{ path: "no-slash" }, "path"],
      [{ path: "/a b" }, "path"],
      [{ headers: "x" }, "headers"],
      [{ headers: [["only-name"]] }, "headers"],
      [{ bodyBase64: "not base64!!" }, "bodyBase64"],
      [{ bogus: 1 }, "bogus"],
    ];
    for (const [body, key] of cases) {
      const r = await api("POST", at, body);
      expect({ body, status: r.status }).toEqual({ body, status: 400 });
      expect(r.json.issues.map((i: { path: string }) => i.path).join(" ")).toContain(key);
    }
    const notJson = await api("POST", at, "{oops");
    expect(notJson.status).toBe(400);
    expect(notJson.json.error).toContain("JSON");
    // Passes the schema, refused by the replay itself: its message names the header.
    const badName = await api("POST", at, { headers: [["Host", host("insp")], ["bad name", "v"]] });
    expect(badName.status).toBe(400);
    expect(badName.json.error).toContain('"bad name" is not a header name');
    const noHost = await api("POST", at, { headers: [["X-A", "1"]] });
    expect(noHost.status).toBe(400);
    expect(noHost.json.error).toContain("Host");
  });

  test("replay while the app's client is offline is 409", async () => {
    const url = unique("/lonely");
    expect((await rawHttp(vport, requestHead("GET", url, host("solo")))).status).toBe(200);
    const orig = await captureOf("lone", "solo", url);
    lone.stop();
    await until(() => s1.hub.vhosts?.router.target("lone", "solo") === undefined, 5000, "the lone group to go offline");
    const r = await api("POST", `/api/groups/lone/apps/solo/requests/${orig.id}/replay`, {});
    expect(r.status).toBe(409);
    expect(r.json.error).toContain("offline");
    // What was captured stays readable.
    expect((await api("GET", `/api/groups/lone/apps/solo/requests/${orig.id}`)).status).toBe(200);
  });
});

describe("masking", () => {
  const secretHeaders: [string, string][] = [["Authorization", "Bearer tok-123"], ["Cookie", "a=b; c=d"], ["Proxy-Authorization", "Basic cHJveHk6cHc="], ["X-Plain", "visible"]];

  test("Authorization, Cookie, Proxy-Authorization and Set-Cookie read [masked]; other headers are kept", async () => {
    const url = unique("/setcookie");
    const res = await rawHttp(vport, requestHead("GET", url, host("insp"), secretHeaders));
    expect(res.headers["set-cookie"]).toBe("sid=abc123; HttpOnly"); // the user still gets it
    const d = await captureOf("one", "insp", url);
    expect(hdr(d.request.headers, "authorization")).toEqual(["[masked]"]);
    expect(hdr(d.request.headers, "cookie")).toEqual(["[masked]"]);
    expect(hdr(d.request.headers, "proxy-authorization")).toEqual(["[masked]"]);
    expect(hdr(d.request.headers, "x-plain")).toEqual(["visible"]);
    expect(hdr(d.response.headers, "set-cookie")).toEqual(["[masked]"]);
    const text = JSON.stringify(d);
    for (const s of ["tok-123", "a=b", "cHJveHk6cHc=", "abc123"]) expect(text).not.toContain(s);
  });

  test("the app's httpPassword is masked wherever it appears (Basic auth, URL, other headers, response headers)", async () => {
    const basic = `Basic ${Buffer.from(`ann:${PASSWORD}`).toString("base64")}`;
    const url = unique(`/p?token=${PASSWORD}`);
    const res = await rawHttp(vport, requestHead("GET", url, host("locked"), [["Authorization", basic], ["X-Echo", `say ${PASSWORD} twice ${PASSWORD}`]]));
    expect(res.status).toBe(200);
    expect(res.headers["x-echoed"]).toBe(`say ${PASSWORD} twice ${PASSWORD}`);
    const maskedUrl = url.replace(PASSWORD, "[masked]");
    const d = await captureOf("one", "locked", maskedUrl);
    expect(d.url).toBe(maskedUrl);
    expect(hdr(d.request.headers, "authorization")).toEqual(["[masked]"]);
    expect(hdr(d.request.headers, "x-echo")).toEqual(["say [masked] twice [masked]"]);
    expect(hdr(d.response.headers, "x-echoed")).toEqual(["say [masked] twice [masked]"]);
    const text = JSON.stringify(d);
    expect(text).not.toContain(PASSWORD);
    expect(text).not.toContain(basic.slice(6));
  });

  test("with inspectSecrets = true, every one is kept as sent", async () => {
    const basic = `Basic ${Buffer.from(`bob:${SECRET_PASSWORD}`).toString("base64")}`;
    const url = unique(`/setcookie?token=${SECRET_PASSWORD}`);
    const headers: [string, string][] = [["Authorization", basic], ["Cookie", "a=b; c=d"], ["Proxy-Authorization", "Basic cHJveHk6cHc="], ["X-Echo", SECRET_PASSWORD]];
    expect((await rawHttp(vport, requestHead("GET", url, host("open"), headers))).status).toBe(200);
    const d = await captureOf("one", "open", url);
    expect(d.url).toBe(url);
    expect(d.request.headers).toEqual([["Host", host("open")], ...headers]);
    expect(hdr(d.response.headers, "set-cookie")).toEqual(["sid=abc123; HttpOnly"]);
    expect(hdr(d.response.headers, "x-echoed")).toEqual([SECRET_PASSWORD]);
  });
});

describe("who sees what", () => {
  test("a group's owner sees its own apps' requests only; another group's app is 404; the admin sees all", async () => {
    const mine = unique("/tenant-mine");
    const theirs = unique("/tenant-theirs");
    await rawHttp(vport, requestHead("GET", mine, host("insp")));
    await rawHttp(vport, requestHead("GET", theirs, host("other")));
    const theirCap = await captureOf("two", "other", theirs);

    const login = await fetch(`http://127.0.0.1:${s1.apiPort}/ui/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: TOKEN, group: "one" }), signal: AbortSignal.timeout(10_000) });
    expect(login.status).toBe(200);
    const cookie = login.headers.get("set-cookie")!.split(";")[0]!;
    expect(cookie).toStartWith("warren_session=");
    const csrf = ((await login.json()) as { csrf: string }).csrf;
    const owner = { cookie };

    const list = await api("GET", "/api/groups/one/apps/insp/requests", undefined, owner);
    expect(list.status).toBe(200);
    expect(list.json.inspecting).toBe(true);
    expect(list.json.requests.some((x: any) => x.url === mine)).toBe(true);
    const id = list.json.requests.find((x: any) => x.url === mine).id;
    expect((await api("GET", `/api/groups/one/apps/insp/requests/${id}`, undefined, owner)).status).toBe(200);

    for (const path of ["/api/groups/two/apps/other/requests", `/api/groups/two/apps/other/requests/${theirCap.id}`, "/api/groups/two/apps/other/requests/live", "/api/groups/nosuch/apps/other/requests"]) {
      const r = await api("GET", path, undefined, owner);
      expect({ path, status: r.status }).toEqual({ path, status: 404 });
      expect(JSON.stringify(r.json)).not.toContain(theirs);
    }
    const replay = await api("POST", `/api/groups/two/apps/other/requests/${theirCap.id}/replay`, {}, { ...owner, "x-csrf-token": csrf });
    expect(replay.status).toBe(404);
    const clear = await api("DELETE", "/api/groups/two/apps/other/requests", undefined, { ...owner, "x-csrf-token": csrf });
    expect(clear.status).toBe(404);
    // A change without the CSRF token is refused even on its own group.
    expect((await api("DELETE", "/api/groups/one/apps/off/requests", undefined, owner)).status).toBe(403);
    expect((await api("DELETE", "/api/groups/one/apps/off/requests", undefined, { ...owner, "x-csrf-token": csrf })).status).toBe(204);

    // The admin reads both groups.
    const all = await api("GET", "/api/groups/two/apps/other/requests");
    expect(all.json.requests.some((x: any) => x.url === theirs)).toBe(true);
    expect((await api("GET", "/api/groups/one/apps/insp/requests")).json.requests.some((x: any) => x.url === mine)).toBe(true);
  });

  test("capture off (inspect = false): nothing is kept; the list says inspecting: false and is empty; a detail is 404", async () => {
    const url = unique("/not-kept");
    expect((await rawHttp(vport, requestHead("GET", url, host("off")))).status).toBe(200);
    const list = await api("GET", "/api/groups/one/apps/off/requests");
    expect(list.status).toBe(200);
    expect(list.json).toMatchObject({ inspecting: false, requests: [] });
    expect(list.json.reason).toContain("inspect");
    for (const id of [1, 2, 3]) expect((await api("GET", `/api/groups/one/apps/off/requests/${id}`)).status).toBe(404);
    expect((await api("POST", "/api/groups/one/apps/off/requests/1/replay", {})).status).toBe(409);
    expect((await api("GET", "/api/groups/one/apps/off/requests/live")).status).toBe(409);
  });
});

describe("live feed", () => {
  test("GET …/requests/live delivers a `requests` event with a new request's summary soon after it is made", async () => {
    const seen = new Bodies();
    const feed = await openFeed(`http://127.0.0.1:${s1.apiPort}/api/groups/one/apps/insp/requests/live`, admin(), seen);
    try {
      expect(feed.status).toBe(200);
      expect(feed.headers.get("content-type")).toContain("text/event-stream");
      const url = unique("/live");
      const t0 = performance.now();
      const made = rawHttp(vport, requestHead("GET", url, host("insp")));
      let row: any = null;
      // Events before it (what the ring already holds) are read past; the one that names it must come within 3 s.
      await within(
        (async () => {
          while (!row) {
            const e = await feed.next(3000);
            if (!e) throw new Error("the feed ended");
            expect(e.event).toBe("requests");
            row = (e.data as any[]).find((x) => x.url === url && x.state === "complete") ?? null;
          }
        })(),
        3000,
        "the live event of the new request",
      );
      await made;
      expect(row).toMatchObject({ method: "GET", url, status: 200, replayOf: null, websocket: null });
      expect(typeof row.id).toBe("number");
      expect(performance.now() - t0).toBeLessThan(3000);
    } finally {
      feed.close();
    }
  });
});

describe("WebSocket", () => {
  test("an upgrade records 101, then frames and bytes each way, and no content", async () => {
    const s = net.connect(vport, "127.0.0.1");
    const got: Buffer[] = [];
    let wake: () => void = () => {};
    s.on("data", (d: Buffer) => (got.push(d), wake()));
    s.on("error", () => {});
    const closed = new Promise<void>((r) => s.once("close", () => r()));
    const all = () => Buffer.concat(got);
    const waitFor = (what: string, cond: () => boolean) =>
      within(
        (async () => {
          while (!cond()) await new Promise<void>((r) => (wake = r));
        })(),
        5000,
        what,
      );
    await new Promise((r) => s.once("connect", r));
    const path = unique("/ws");
    s.write(requestHead("GET", path, host("insp"), [["Upgrade", "websocket"], ["Connection", "Upgrade"], ["Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="], ["Sec-WebSocket-Version", "13"]]));
    await waitFor("the 101", () => all().includes("\r\n\r\n"));
    const headEnd = all().indexOf("\r\n\r\n") + 4;
    expect(all().subarray(0, headEnd).toString("latin1")).toStartWith("HTTP/1.1 101");

    const messages = [enc.encode("one"), enc.encode("two ✓"), allValues(300, 31)]; // the last needs a 16-bit length
    let sent = 0;
    for (const [i, m] of messages.entries()) {
      const f = wsClientFrame(i === 2 ? 2 : 1, m);
      sent += f.length;
      s.write(f);
    }
    await waitFor("three echoes", () => wsFrames(all().subarray(headEnd)).frames.length >= 3);
    const echoes = wsFrames(all().subarray(headEnd)).frames;
    expect(echoes.slice(0, 3).map((f) => sha256(f.payload))).toEqual(messages.map(sha256));
    const close = wsClientFrame(8, new Uint8Array([0x03, 0xe8]));
    sent += close.length;
    s.write(close);
    await waitFor("the close frame back", () => wsFrames(all().subarray(headEnd)).frames.some((f) => f.opcode === 8));
    await within(closed, 5000, "the connection's close");
    const after = all().subarray(headEnd);
    const frames = wsFrames(after);
    expect(frames.used).toBe(after.length);

    const d = await captureOf("one", "insp", path);
    // The exchange ends (cleanly) with the connection.
    await until(async () => (await api("GET", `/api/groups/one/apps/insp/requests/${d.id}`)).json.totalMs !== null, 5000, "the WebSocket capture to end");
    expect((await api("GET", `/api/groups/one/apps/insp/requests/${d.id}`)).json.error).toBeNull();
    expect(d.status).toBe(101);
    expect(d.state).toBe("upgraded");
    expect(d.websocket).toEqual({ framesIn: 4, framesOut: frames.frames.length, bytesIn: sent, bytesOut: after.length });
    expect(frames.frames.length).toBeGreaterThanOrEqual(4);
    expect(d.request.body).toEqual({ size: 0, truncated: false, memoryBytes: 0, base64: "" });
    expect(d.response.body).toEqual({ size: 0, truncated: false, memoryBytes: 0, base64: "" });
  });
});

describe("bad input", () => {
  test("unknown group or app 404, a tcp app 409, limit=0 and before=abc 400, POST to the list 405", async () => {
    expect((await api("GET", "/api/groups/nosuch/apps/insp/requests")).status).toBe(404);
    expect((await api("GET", "/api/groups/one/apps/nosuch/requests")).status).toBe(404);
    expect((await api("GET", "/api/groups/one/apps/nosuch/requests/1")).status).toBe(404);
    const tcp = await api("GET", "/api/groups/one/apps/tcpapp/requests");
    expect(tcp.status).toBe(409);
    expect(tcp.json.error).toContain("tcp");
    for (const [q, key] of [["limit=0", "limit"], ["limit=-1", "limit"], ["limit=1.5", "limit"], ["before=abc", "before"]] as const) {
      const r = await api("GET", `/api/groups/one/apps/insp/requests?${q}`);
      expect({ q, status: r.status }).toEqual({ q, status: 400 });
      expect(r.json.issues[0].path).toBe(key);
    }
    const post = await api("POST", "/api/groups/one/apps/insp/requests", {});
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, DELETE");
    expect((await api("GET", "/api/groups/one/apps/insp/requests/999999")).status).toBe(404);
    expect((await api("GET", "/api/groups/one/apps/insp/requests/1/replay")).status).toBe(405);
    expect((await api("GET", "/api/groups/one/apps/insp/requests", undefined, {})).status).toBe(401);
  });
});

describe("memory gauge", () => {
  test("warren_inspect_bytes equals what every inspector of the server keeps (masks, replays, cuts, WebSocket included)", async () => {
    let sum = 0;
    for (const [g, a] of [["one", "insp"], ["one", "rinsp"], ["one", "locked"], ["one", "open"], ["two", "other"], ["lone", "solo"]]) {
      const list = await api("GET", `/api/groups/${g}/apps/${a}/requests?limit=1000`);
      expect(list.json.requests.every((x: any) => x.state !== "open")).toBe(true);
      for (const row of list.json.requests) sum += accountedBytes((await api("GET", `/api/groups/${g}/apps/${a}/requests/${row.id}`)).json);
    }
    expect(sum).toBeGreaterThan(0);
    expect(await inspectBytes(s1.apiPort, s1.adminToken)).toBe(sum);
  });
});

describe("ring, memory and switches (a server with inspectRequests = 5)", () => {
  let s2: RunningServer;
  let v2: number;
  const c2: Connector[] = [];
  const adm = () => ({ authorization: `Bearer ${s2.adminToken}` });
  const api2 = (method: string, path: string, body?: unknown) => apiCall(s2.apiPort, method, path, adm(), body);

  beforeAll(async () => {
    v2 = await freePort();
    s2 = await testServer({ vhostHTTPPort: v2, subdomainHost: "ring.test", inspectRequests: 5, inspectBodyBytes: LIMIT, groups: [{ name: "ring", token: TOKEN, apps: [{ name: "r", type: "http", subdomain: "r", inspect: true }] }] });
    const created = await api2("POST", "/api/groups", { name: "dyn", token: TOKEN, apps: [{ name: "d", type: "http", subdomain: "d", inspect: true }] });
    expect(created.status).toBe(201);
    const local = (name: string) => ({ name, type: "http" as never, localAddr: `127.0.0.1:${O.port}` });
    c2.push((await onlineClient(clientConfig(s2, "ring", [local("r")]))).connector, (await onlineClient(clientConfig(s2, "dyn", [local("d")]))).connector);
  });
  afterAll(() => {
    for (const c of c2) c.stop();
    s2?.stop();
  });

  /** Sum of what every capture kept by `app` accounts for (inspect.ts's own rule), from the details. */
  async function keptSum(group: string, app: string): Promise<number> {
    const list = await api2("GET", `/api/groups/${group}/apps/${app}/requests?limit=1000`);
    let n = 0;
    for (const row of list.json.requests) n += accountedBytes((await api2("GET", `/api/groups/${group}/apps/${app}/requests/${row.id}`)).json);
    return n;
  }

  test("after 12 requests the ring holds the 5 newest (ids 8-12); ?limit=2&before=11 gives 10, 9; the gauge stays bounded, equals the sum, and clear takes it to 0", async () => {
    const gauge: number[] = [];
    for (let i = 1; i <= 12; i++) {
      const body = randomData(200 + i * 50, 40 + i);
      const url = `/ring/${i}`;
      const res = await rawHttp(v2, cat(requestHead("POST", url, `r.ring.test:${v2}`, [["Content-Length", String(body.length)]]), body), "POST");
      expect(sha256(res.body)).toBe(sha256(body));
      await until(async () => (await api2("GET", "/api/groups/ring/apps/r/requests?limit=1")).json.requests[0]?.state === "complete", 5000, `request ${i} complete`);
      gauge.push(await inspectBytes(s2.apiPort, s2.adminToken));
    }
    const list = await api2("GET", "/api/groups/ring/apps/r/requests");
    expect(list.json.limit).toBe(5);
    expect(list.json.requests.map((x: any) => x.id)).toEqual([12, 11, 10, 9, 8]);
    expect(list.json.requests.map((x: any) => x.url)).toEqual(["/ring/12", "/ring/11", "/ring/10", "/ring/9", "/ring/8"]);
    expect((await api2("GET", "/api/groups/ring/apps/r/requests?limit=2&before=11")).json.requests.map((x: any) => x.id)).toEqual([10, 9]);
    expect((await api2("GET", "/api/groups/ring/apps/r/requests?limit=100")).json.requests.length).toBe(5);
    expect((await api2("GET", "/api/groups/ring/apps/r/requests/7")).status).toBe(404);
    expect((await api2("GET", "/api/groups/ring/apps/r/requests/8")).status).toBe(200);

    // Bounded: once the ring is full, never more than 5 of the largest capture (bodies are at most 1024 a side).
    const largest = accountedBytes((await api2("GET", "/api/groups/ring/apps/r/requests/12")).json);
    expect(Math.max(...gauge)).toBeLessThanOrEqual(5 * largest);
    expect(gauge.at(-1)).toBe(await keptSum("ring", "r"));
    expect(gauge.at(-1)).toBeGreaterThan(2 * (600 + 650 + 700 + 750 + 800)); // the bodies of 8-12, both ways, are most of it

    const clear = await api2("DELETE", "/api/groups/ring/apps/r/requests");
    expect(clear.status).toBe(204);
    expect(await inspectBytes(s2.apiPort, s2.adminToken)).toBe(0);
    expect((await api2("GET", "/api/groups/ring/apps/r/requests")).json).toMatchObject({ inspecting: true, requests: [] });
  });

  test("turning inspect off with PUT /api/groups/NAME drops what was captured (warren_inspect_bytes back to 0) and keeps nothing after", async () => {
    for (let i = 0; i < 3; i++) expect((await rawHttp(v2, requestHead("GET", `/dyn/${i}`, `d.ring.test:${v2}`))).status).toBe(200);
    await until(async () => (await api2("GET", "/api/groups/dyn/apps/d/requests")).json.requests.filter((x: any) => x.state === "complete").length === 3, 5000, "3 captures");
    const before = await inspectBytes(s2.apiPort, s2.adminToken);
    expect(before).toBeGreaterThan(0);
    expect(before).toBe(await keptSum("dyn", "d"));

    const put = await api2("PUT", "/api/groups/dyn", { apps: [{ name: "d", type: "http", subdomain: "d", inspect: false }] });
    expect(put.status).toBe(200);
    await until(async () => (await inspectBytes(s2.apiPort, s2.adminToken)) === 0, 5000, "warren_inspect_bytes to go back to 0");
    const list = await api2("GET", "/api/groups/dyn/apps/d/requests");
    expect(list.json).toMatchObject({ inspecting: false, requests: [] });
    expect((await api2("GET", "/api/groups/dyn/apps/d/requests/1")).status).toBe(404);

    // Requests after it are served and not kept.
    expect((await rawHttp(v2, requestHead("GET", "/dyn/after", `d.ring.test:${v2}`))).status).toBe(200);
    expect(await inspectBytes(s2.apiPort, s2.adminToken)).toBe(0);
    expect((await api2("GET", "/api/groups/dyn/apps/d/requests")).json.requests).toEqual([]);
  });

  // BUG (lib/server/http/inspect.ts): a Capture dropped from its Inspector's ring while its exchange is still open
  // (evicted by newer ones, cleared, or its inspector disposed) goes on calling Inspector.grew() for the bytes it
  // keeps afterwards, and Inspector.#drop already ran for it: warren_inspect_bytes (and Inspector.bytes) keep them
  // for good. These two tests fail until that is fixed; each compares against the gauge as it was when it began,
  // so each fails only for its own case.
  /** Starts GET /slow on app r (300 bytes, then the rest on O.release()); resolves once the capture holds the 300. */
  async function slowOpen(): Promise<{ id: number; rest: () => Promise<void> }> {
    const s = net.connect(v2, "127.0.0.1");
    const got: Buffer[] = [];
    s.on("data", (d: Buffer) => got.push(d));
    s.on("error", () => {});
    const url = unique("/slow");
    s.write(requestHead("GET", url, `r.ring.test:${v2}`));
    let id = 0;
    await until(
      async () => {
        const row = (await api2("GET", "/api/groups/ring/apps/r/requests?limit=1")).json.requests[0];
        id = row?.url === url && row.responseBytes >= 300 ? row.id : 0;
        return id > 0;
      },
      5000,
      "the first part of /slow",
    );
    return {
      id,
      rest: async () => {
        O.release();
        await until(() => Buffer.concat(got).toString("latin1").includes("b".repeat(700)), 5000, "the rest of /slow");
        s.destroy();
      },
    };
  }

  test("a capture evicted from the ring while its response is still streaming is no longer counted once it ends", async () => {
    const slow = await slowOpen();
    for (let i = 0; i < 5; i++) expect((await rawHttp(v2, requestHead("GET", unique("/evict"), `r.ring.test:${v2}`))).status).toBe(200);
    expect((await api2("GET", `/api/groups/ring/apps/r/requests/${slow.id}`)).status).toBe(404); // evicted
    await until(async () => (await inspectBytes(s2.apiPort, s2.adminToken)) === (await keptSum("ring", "r")), 5000, "the gauge to equal the ring's sum before the rest");
    await slow.rest();
    // FAILS (the bug above): the gauge is 700 more than what the ring keeps, the evicted capture's late body bytes.
    expect(await inspectBytes(s2.apiPort, s2.adminToken)).toBe(await keptSum("ring", "r"));
  });

  test("a capture dropped (clear) while its response is still streaming leaves nothing counted once it ends", async () => {
    expect((await api2("DELETE", "/api/groups/ring/apps/r/requests")).status).toBe(204);
    const base = await inspectBytes(s2.apiPort, s2.adminToken); // 0 unless an earlier case leaked
    const slow = await slowOpen();
    expect((await api2("DELETE", "/api/groups/ring/apps/r/requests")).status).toBe(204);
    expect(await inspectBytes(s2.apiPort, s2.adminToken)).toBe(base);
    await slow.rest();
    // FAILS (the bug above): 700 more, the cleared capture's late body bytes.
    expect(await inspectBytes(s2.apiPort, s2.adminToken)).toBe(base);
    expect((await api2("GET", "/api/groups/ring/apps/r/requests")).json.requests).toEqual([]);
  });
});

describe("allowInspect = false on the server", () => {
  test("an app with inspect = true keeps nothing: inspecting false, an empty list, a detail 404, the gauge 0", async () => {
    const v3 = await freePort();
    const s3 = await testServer({ vhostHTTPPort: v3, subdomainHost: "no.test", allowInspect: false, groups: [{ name: "no", token: TOKEN, apps: [{ name: "n", type: "http", subdomain: "n", inspect: true }] }] });
    const { connector } = await onlineClient(clientConfig(s3, "no", [{ name: "n", type: "http" as never, localAddr: `127.0.0.1:${O.port}` }]));
    try {
      const body = randomData(500, 50);
      const res = await rawHttp(v3, cat(requestHead("POST", "/x", `n.no.test:${v3}`, [["Content-Length", "500"]]), body), "POST");
      expect(sha256(res.body)).toBe(sha256(body));
      const list = await apiCall(s3.apiPort, "GET", "/api/groups/no/apps/n/requests", { authorization: `Bearer ${s3.adminToken}` });
      expect(list.status).toBe(200);
      expect(list.json).toMatchObject({ inspecting: false, requests: [] });
      expect(list.json.reason).toContain("allowInspect");
      expect((await apiCall(s3.apiPort, "GET", "/api/groups/no/apps/n/requests/1", { authorization: `Bearer ${s3.adminToken}` })).status).toBe(404);
      expect(await inspectBytes(s3.apiPort, s3.adminToken)).toBe(0);
    } finally {
      connector.stop();
      s3.stop();
    }
  });
});

describe("BodyTap and BlockPool: where captured bodies are kept", () => {
  test("bodies are copied into pooled blocks up to the limit, read back byte-exact, counted in whole blocks, and given back on release for the next capture", async () => {
    const { BlockPool, BodyTap, CAPTURE_BLOCK_BYTES: B } = await import("../lib/server/http/capture-body.ts");
    const pool = new BlockPool(8);
    let counted = 0;
    const limit = 3 * B + 100;
    const tap = new BodyTap(limit, pool, (n) => (counted += n));
    const reads = [randomData(700, 1), randomData(B, 2), randomData(5 * B, 3)];
    for (const r of reads) tap.add(r);
    const sent = Buffer.concat(reads);
    expect({ size: tap.size, kept: tap.kept, truncated: tap.truncated, held: tap.held, counted }).toEqual({ size: sent.length, kept: limit, truncated: true, held: 4 * B, counted: 4 * B });
    expect(sha256(tap.bytes())).toBe(sha256(sent.subarray(0, limit)));
    // Readers get a copy of their own: what the relay sent later cannot change it.
    const copy = tap.bytes();
    reads[0]!.fill(0);
    expect(sha256(copy)).toBe(sha256(tap.bytes()));
    // Released: the blocks go back (the pool kept the slab's rest too, up to its limit of 8), nothing more is kept, bytes still count.
    tap.release();
    expect(pool.free).toBe(8);
    tap.add(randomData(10));
    expect({ kept: tap.kept, held: tap.held, bytes: tap.bytes().length, size: tap.size }).toEqual({ kept: 0, held: 0, bytes: 0, size: sent.length + 10 });
    // The next capture reuses them and reads only its own bytes (a block's old contents never show).
    const next = new BodyTap(limit, pool, () => {});
    const body = randomData(B + 5, 4);
    next.add(body);
    expect(sha256(next.bytes())).toBe(sha256(body));
    expect(pool.free).toBe(6);
  });
});
