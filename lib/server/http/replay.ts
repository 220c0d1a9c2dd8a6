/**
 * Replay of a captured request (the inspector, issue 19): the request, as
 * captured or as edited, goes once more through the tunnel to the local app,
 * on a stream of its own (an Upstream, as a user's request would), and the
 * app's response is captured beside the original. It skips the edge's checks
 * (allowIPs, Basic auth): it is the operator's, not a user's. Masked headers
 * are not sent (their values were never kept); a body cut at inspectBodyBytes
 * cannot be replayed as captured.
 */
import { BodyReader, responseBody } from "../../http/body.ts";
import { header, isBadValueChar, isToken, requestHeadBytes, ResponseHeadReader, setHeader, type Header, type RequestHead } from "../../http/head.ts";
import type { Transport } from "../../net/transport.ts";
import { MASKED, type Capture, type Inspector } from "./inspect.ts";
import { rewriteRequest } from "./rewrite.ts";
import type { HttpTarget } from "./router.ts";
import { Upstream, type UpstreamOwner } from "./upstream.ts";

/** A replay that has no complete response by then is reset and recorded as failed. */
export const REPLAY_TIMEOUT_MS = 30_000;

/** What the caller may change; absent fields are as captured. */
export interface ReplayEdits {
  readonly method?: string;
  readonly path?: string;
  readonly headers?: readonly Header[];
  /** The body, whole; absent: the captured one. */
  readonly body?: Uint8Array;
}

/** A request that cannot be replayed, and why (the API's 400 or 409). */
export class ReplayError extends Error {
  constructor(
    readonly status: 400 | 409,
    message: string,
  ) {
    super(message);
  }
}

/** Headers that belong to one connection or one framing: the replay sets its own. */
const FRAMING = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "content-length", "te", "trailer", "upgrade"]);

/** Builds the request a replay sends (throws ReplayError when it cannot be built). */
export function replayRequest(cap: Capture, edits: ReplayEdits): { head: RequestHead; body: Uint8Array } {
  const method = edits.method ?? cap.method;
  if (!isToken(method) || method.length > 32) throw new ReplayError(400, `method "${method.slice(0, 32)}" is not an HTTP method`);
  if (method === "CONNECT") throw new ReplayError(400, "CONNECT cannot be replayed");
  const path = edits.path ?? cap.url;
  if (!/^\/[\x21-\x7e]{0,8191}$/.test(path)) throw new ReplayError(400, "path must start with '/' and hold no spaces or control characters");
  if (edits.body === undefined && cap.request.truncated) {
    throw new ReplayError(409, `the captured body was cut at ${cap.request.kept} of ${cap.request.size} bytes (inspectBodyBytes): send the body to replay it`);
  }
  if (edits.body === undefined && !cap.requestEnded) {
    throw new ReplayError(409, `the captured request's body did not arrive whole (${cap.request.size} bytes came): send the body to replay it`);
  }
  const body = edits.body ?? cap.request.bytes();
  const headers: Header[] = [];
  for (const [k, v] of edits.headers ?? cap.requestHeaders) {
    if (!isToken(k)) throw new ReplayError(400, `"${k.slice(0, 64)}" is not a header name`);
    if ([...v].some((ch) => isBadValueChar(ch.charCodeAt(0)))) throw new ReplayError(400, `the value of header ${k} holds a control character`);
    if (FRAMING.has(k.toLowerCase())) continue;
    // A masked value was never kept: sending "[masked]" would only confuse the app.
    if (edits.headers === undefined && v === MASKED) continue;
    headers.push([k, v]);
  }
  if (!header(headers, "host")) throw new ReplayError(400, "the request has no Host header");
  if (body.length > 0 || !["GET", "HEAD", "DELETE", "OPTIONS"].includes(method)) setHeader(headers, "content-length", String(body.length));
  setHeader(headers, "connection", "close");
  return { head: { method, target: path, minor: 1, headers }, body };
}

/** The operator's end of the replay stream: where StartWork says the user is. */
function caller(addr: string): Transport {
  const none = () => {};
  return { write: () => -1, pause: none, resume: none, shutdown: none, end: none, terminate: none, remoteAddress: addr, remotePort: 0, localAddress: "", localPort: 0 };
}

/** Sends the request to the app through `target`; resolves with the new capture once its exchange ended (complete or failed). */
export function replay(ins: Inspector, target: HttpTarget, original: Capture, edits: ReplayEdits, callerAddr: string, timeoutMs = REPLAY_TIMEOUT_MS): Promise<Capture> {
  const { head, body } = replayRequest(original, edits);
  const cap = ins.begin(head, callerAddr, 0, original.id, original.scheme);
  cap.requestEnded = true;
  const authority = header(head.headers, "host")!;
  const out = requestHeadBytes(rewriteRequest({ ...head, headers: head.headers.map(([k, v]) => [k, v]) }, target.record, { authority, secure: false, userAddr: callerAddr }));
  return new Promise<Capture>((resolve) => {
    const heads = new ResponseHeadReader();
    let reader: BodyReader | null = null;
    let finished = false;
    const done = (error: string | null) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      cap.end(error);
      up.owner = null;
      if (error) up.reset();
      else up.finish();
      resolve(cap);
    };
    const owner: UpstreamOwner = {
      fromApp(_up, data) {
        let off = 0;
        while (off < data.length && !finished) {
          if (!reader) {
            const r = heads.read(data, off);
            if (r === null) return;
            if (typeof r === "string") return done(`the app's ${r}`);
            off = r.next;
            const h = r.head;
            if (h.status < 200) continue; // 100 Continue, 103: the final response follows
            if (h.status === 101) return done("the app switched protocols, which a replay did not ask for");
            cap.responseHead(h);
            const kind = responseBody(h, head.method);
            if (typeof kind === "string") return done(`the app's response is framed wrongly (${kind})`);
            reader = new BodyReader(kind);
            reader.onData = (payload) => cap.responseBytes(payload);
            if (reader.done) return done(null);
            continue;
          }
          const n = reader.take(data, off);
          off += n;
          if (reader.error) return done(`the app's response body is malformed (${reader.error})`);
          if (reader.done) return done(null);
          if (n === 0) break;
        }
      },
      appEnded() {
        if (reader?.eof()) return done(null);
        done("the app closed the connection before its response was complete");
      },
      upstreamClosed(_up, clean) {
        done(clean ? "the app closed the connection before its response was complete" : "the stream to the app was reset (the app refused or dropped the connection, or the tunnel went down)");
      },
      blocked() {},
    };
    const up = new Upstream(owner, caller(callerAddr));
    const timer = setTimeout(() => done(`no complete response within ${timeoutMs / 1000} s`), timeoutMs);
    up.ep.attach(up);
    target.open(up.ep);
    up.checkBound();
    up.send(out);
    if (body.length) {
      up.send(body);
      cap.requestBytes(body);
    }
  });
}

