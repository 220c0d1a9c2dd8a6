/**
 * One user connection on a vhost port: HTTP/1.1 requests read one at a time,
 * each routed by its own Host header (and path) to an app, its head rewritten
 * (X-Forwarded-*, the app's header rules) and its body streamed through; the
 * app's response parsed only as far as needed to know where it ends, so that
 * the next request on the connection can go to another app. Bodies are never
 * buffered whole: bytes pass as they come, under the relay's backpressure.
 * After a 101 (WebSocket and any other Upgrade), and for HTTPS passthrough,
 * bytes flow untouched both ways ("raw").
 *
 * A stream to an app (upstream.ts) is kept for the connection's next request
 * to the same app, unless the app or the user asked to close; a bodiless
 * request that meets a kept stream the app has just closed is sent once more
 * on a new one. What cannot be completed is reset, never ended cleanly short.
 */
import { BodyReader, requestBody, responseBody } from "../../http/body.ts";
import { header, headEnd, headerTokens, parseRequestHead, requestHeadBytes, ResponseHeadReader, responseHeadBytes } from "../../http/head.ts";
import { log } from "../../log.ts";
import type { Endpoint } from "../../net/endpoint.ts";
import { errorResponse } from "./pages.ts";
import { UserInput } from "./input.ts";
import { rewriteRequest, rewriteResponse } from "./rewrite.ts";
import { routeRequest } from "./route.ts";
import type { HttpTarget, VhostRouter } from "./router.ts";
import { Upstream, type UpstreamOwner } from "./upstream.ts";
import type { Capture, Inspections } from "./inspect.ts";

/** Bytes of pipelined requests read ahead while a response is awaited, before reading the user pauses. */
export const MAX_PIPELINED_BYTES = 64 * 1024;

/** What every connection of one vhost port reads. */
export interface VhostSettings {
  readonly router: VhostRouter;
  /** A request head must be complete this long after its first byte (slowloris). */
  readonly headerTimeoutMs: number;
  /** An idle keep-alive connection (no request begun) is closed after this. */
  readonly idleTimeoutMs: number;
  /** Largest request head; past it, 431. */
  readonly maxHeaderBytes: number;
  /** The request inspector's captures (apps with inspect = true). */
  readonly inspections?: Inspections;
}

/** Numbers user connections for the inspector (which requests came on one connection). */
let connections = 0;

type RequestState = "head" | "body" | "await" | "raw" | "closed";
type ResponseState = "idle" | "head" | "body" | "raw";

/** One HTTP connection from a user (plain, or TLS ended by the server). */
export class HttpConn implements UpstreamOwner {
  /** User bytes read and not yet handled (a head being gathered, or the next pipelined request). */
  readonly #in: UserInput;
  #req: RequestState = "head";
  #resp: ResponseState = "idle";
  #reqBody: BodyReader | null = null;
  #respBody: BodyReader | null = null;
  readonly #respHead = new ResponseHeadReader();
  #up: Upstream | null = null;
  #target: HttpTarget | null = null;
  #upReusable = false;
  #method = "GET";
  #upgrade = false;
  #closeAfter = false;
  #userEnded = false;
  /** Bytes of the current response already given to the user: after one, a failure can only be a reset. */
  #started = false;
  /** The head of a bodiless request sent on a kept stream: sent again once if that stream turns out closed. */
  #retryHead: Uint8Array | null = null;
  #blocked = false;
  #timer: Timer | null = null;
  #timerKind: "idle" | "header" | null = null;
  /** The inspector's record of the current exchange, when its app is inspected. */
  #cap: Capture | null = null;
  readonly #id = ++connections;

  constructor(
    readonly user: Endpoint,
    readonly settings: VhostSettings,
    /** TLS was ended by the server: the app is told X-Forwarded-Proto: https. */
    readonly secure: boolean,
  ) {
    this.#in = new UserInput(settings.maxHeaderBytes + 65536);
    user.onData = (_ep, chunk) => this.#data(chunk);
    user.onClose = (_ep, aborted) => this.#userClosed(aborted);
    this.#arm("idle");
  }

  /** HTTPS passthrough: the TLS bytes (starting with `first`, the ClientHello) go to `target` untouched, both ways. */
  passthrough(target: HttpTarget, first: Uint8Array): void {
    this.#disarm();
    this.#req = "raw";
    this.#resp = "raw";
    this.#open(target);
    this.#up!.send(first);
  }

  /** The user sent FIN. */
  userEnded(): void {
    this.#userEnded = true;
    if (this.#req === "raw") return this.#up?.finish();
    if (this.#req === "head") {
      // A partial head is a request that will never complete; none at all is a user that is done.
      if (this.#in.length > 0) log.debug("vhost: user closed in the middle of a request head", this.#fields());
      return this.#closeUser();
    }
    if (this.#req === "body") {
      log.debug("vhost: user closed in the middle of a request body", this.#fields());
      this.#up?.reset();
      return this.user.reset();
    }
    // "await": the response is still owed; the connection closes after it.
    this.#closeAfter = true;
  }

  // ---- the user's side ----

  #data(chunk: Uint8Array): void {
    if (this.#req === "closed") return;
    if (this.#req === "raw") {
      this.#cap?.upgraded(true, chunk);
      return this.#up?.send(chunk);
    }
    this.#in.append(chunk);
    this.#pump();
  }

  /** Handles buffered input as far as the state allows. */
  #pump(): void {
    while (this.#in.length > 0) {
      if (this.#req === "head") {
        if (!this.#head()) break;
      } else if (this.#req === "body") {
        const body = this.#reqBody!;
        const bytes = this.#in.bytes();
        const n = body.take(bytes, 0);
        if (n > 0) this.#up?.send(bytes.subarray(0, n));
        this.#in.consume(n);
        if (body.error) return this.#badBody(body.error);
        if (body.done) this.#requestSent();
        else if (n === 0) break;
      } else if (this.#req === "raw") {
        this.#cap?.upgraded(true, this.#in.bytes());
        this.#up?.send(this.#in.bytes());
        this.#in.clear();
      } else break; // "await": the next request waits for this response
    }
    this.#reading();
  }

  /** Gathers and handles one request head; false when more bytes are needed (or the connection is done). */
  #head(): boolean {
    const buf = this.#in.bytes();
    const end = headEnd(buf, this.#in.scanFrom);
    const max = this.settings.maxHeaderBytes;
    if (end < 0) {
      if (buf.length > max) {
        this.#refuse(431, `the request head is larger than ${max} bytes`);
        return false;
      }
      this.#in.scanFrom = Math.max(0, buf.length - 3);
      if (this.#timerKind !== "header") this.#arm("header");
      return false;
    }
    this.#in.scanFrom = 0;
    if (end > max) {
      this.#refuse(431, `the request head is larger than ${max} bytes`);
      return false;
    }
    const headBytes = buf.subarray(0, end);
    this.#in.consume(end);
    this.#disarm();
    this.#request(headBytes);
    return this.#req !== "closed";
  }

  /** Routes one request and sends its head to the app. */
  #request(bytes: Uint8Array): void {
    const head = parseRequestHead(bytes);
    if (!("method" in head)) return this.#refuse(head.status, head.reason);
    const routed = routeRequest(head, this.settings.router, this.user.socket?.remoteAddress ?? "", () => this.#fields());
    if ("status" in routed) return this.#refuse(routed.status, routed.message, routed.headers);
    const { target, authority } = routed;
    const body = requestBody(head);
    if ("status" in body) return this.#refuse(body.status, body.reason);
    const tokens = headerTokens(head.headers, "connection");
    this.#method = head.method;
    this.#upgrade = tokens.includes("upgrade") && header(head.headers, "upgrade") !== undefined;
    this.#closeAfter = this.#userEnded || tokens.includes("close") || (head.minor === 0 && !tokens.includes("keep-alive"));
    // Captured as the user sent it, before the rewrite (the inspector masks its secrets).
    this.#cap?.end("the connection went on to another request");
    this.#cap = this.settings.inspections?.of(target)?.begin(head, this.user.socket?.remoteAddress ?? "", this.#id, null, this.secure ? "https" : "http") ?? null;
    const out = requestHeadBytes(rewriteRequest(head, target.record, { authority, secure: this.secure, userAddr: this.user.socket?.remoteAddress ?? "" }));
    target.stats.requests++;
    const reuse = this.#up !== null && this.#target === target && this.#upReusable && !this.#up.closed && !this.#up.appEnded;
    if (!reuse) this.#open(target);
    const up = this.#up!;
    up.requests++;
    up.answered = 0;
    this.#retryHead = reuse && body.kind === "none" && !this.#upgrade ? out : null;
    up.send(out);
    this.#reqBody = new BodyReader(body);
    const cap = this.#cap;
    // The inspector is handed the payload as the reader passes it (chunk framing left out): nothing is held back.
    if (cap) this.#reqBody.onData = (payload) => cap.requestBytes(payload);
    this.#resp = "head";
    this.#respHead.reset();
    this.#started = false;
    if (this.#reqBody.done) this.#requestSent();
    else this.#req = "body";
  }

  /** The request's last byte has gone to the app: the next one waits for its response. */
  #requestSent(): void {
    this.#reqBody = null;
    if (this.#cap) this.#cap.requestEnded = true;
    // A response that ended before its request did (an early 413) leaves the connection unusable: it closes.
    this.#req = this.#resp === "idle" ? "head" : "await";
    if (this.#req === "head") this.#afterResponse();
  }

  #badBody(why: string): void {
    log.debug("vhost: malformed request body", { ...this.#fields(), error: why });
    this.#capEnd(`the request body is malformed (${why})`);
    this.#up?.reset();
    if (this.#started) return this.user.reset();
    this.#refuse(400, `The request body is malformed (${why}).`);
  }

  /** Opens a new stream to `target` for this connection, letting any previous one finish. */
  #open(target: HttpTarget): void {
    this.#release();
    const up = new Upstream(this, this.user.socket!);
    this.#up = up;
    this.#target = target;
    this.#upReusable = true;
    up.ep.attach(up);
    target.open(up.ep);
    up.checkBound();
  }

  /** Lets the current stream go: its request direction ends, and it closes once the app closes its side. */
  #release(): void {
    const up = this.#up;
    if (!up) return;
    this.#up = null;
    this.#target = null;
    up.owner = null;
    if (!up.closed) up.finish();
  }

  /** Answers with one of our own pages and closes: what follows on the connection cannot be trusted. */
  #refuse(status: number, message: string, extra: [string, string][] = []): void {
    if (status >= 500 || status === 408) log.debug("vhost: answered with an error page", { ...this.#fields(), status, reason: message });
    this.#capEnd(`the server answered ${status}: ${message}`);
    this.#disarm();
    this.#req = "closed";
    this.#in.clear();
    this.#release();
    this.user.write(errorResponse(status, message, extra), null);
    this.user.endWhenFlushed();
  }

  #closeUser(): void {
    this.#disarm();
    this.#req = "closed";
    this.#release();
    this.user.endWhenFlushed();
  }

  /**
   * Reading the user goes on unless the app is backed up, or a response is awaited and
   * MAX_PIPELINED_BYTES of the next requests are already read (pausing on every request
   * would cost each one a pause and a resume of the socket).
   */
  #reading(): void {
    if (this.#req === "closed") return;
    if (this.#blocked || (this.#req === "await" && this.#in.length > MAX_PIPELINED_BYTES)) this.user.pause();
    else this.user.resume();
  }

  #userClosed(aborted: boolean): void {
    this.#disarm();
    // Raw bytes (after an upgrade, or passed-through TLS) end like a TCP stream: a clean close is the user's FIN
    // (Bun reports a FIN that follows our own as a close with no end event), and the app is told it by count.
    const busy = this.#req === "raw" ? aborted : this.#req === "body" || this.#resp !== "idle";
    this.#req = "closed";
    this.#capEnd(busy || aborted ? "the user closed the connection before the exchange was complete" : null);
    const up = this.#up;
    if (!up) return;
    this.#up = null;
    up.owner = null;
    // A user gone in the middle of an exchange cuts it; one gone between requests lets the stream end cleanly.
    if (busy || aborted) up.reset();
    else up.finish();
  }

  // ---- the app's side (UpstreamOwner) ----

  fromApp(up: Upstream, data: Uint8Array): void {
    if (up !== this.#up) return;
    this.#fromApp(up, data);
    // A response head held for the body bytes after it leaves now, with them or alone (one send, not two).
    if (this.user.holding) this.user.release();
  }

  #fromApp(up: Upstream, data: Uint8Array): void {
    let off = 0;
    while (off < data.length && up === this.#up) {
      if (this.#resp === "raw") {
        const rest = off ? data.subarray(off) : data;
        this.#cap?.upgraded(false, rest);
        return this.#toUser(rest);
      }
      if (this.#resp === "idle") {
        // Bytes with no request outstanding: the app does not speak HTTP/1.1 as asked; it gets no more requests.
        log.debug("vhost: the app sent bytes with no request outstanding; closing its stream", this.#fields());
        this.#upReusable = false;
        return this.#release();
      }
      if (this.#resp === "head") {
        off = this.#responseHead(data, off);
        continue;
      }
      const body = this.#respBody!;
      const n = body.take(data, off);
      if (n > 0) this.#toUser(data.subarray(off, off + n));
      off += n;
      if (body.error) return this.#appBroke(`its response body is malformed (${body.error})`);
      if (body.done) this.#responseDone();
      else if (n === 0) break;
    }
  }

  /** Gathers and forwards one response head (1xx ones included) starting at `off`; returns the offset after what it used. */
  #responseHead(data: Uint8Array, off: number): number {
    const r = this.#respHead.read(data, off);
    if (r === null) return data.length;
    if (typeof r === "string") {
      this.#appBroke(`its ${r}`);
      return data.length;
    }
    const { head, bytes, next: used } = r;
    this.#retryHead = null;
    if (head.status === 101) {
      if (!this.#upgrade) {
        this.#appBroke("it switched protocols without being asked to");
        return data.length;
      }
      this.#started = true;
      this.#cap?.responseHead(head);
      this.#toUser(bytes);
      this.#resp = "raw";
      this.#req = "raw";
      this.#upReusable = false;
      // Bytes the user sent after the upgrade request are the new protocol's: they go on now.
      queueMicrotask(() => this.#pump());
      return used;
    }
    if (head.status < 200) {
      this.#toUser(bytes); // 100 Continue, 103 Early Hints: passed on; the final response follows
      return used;
    }
    const kind = responseBody(head, this.#method);
    if (typeof kind === "string") {
      this.#appBroke(`its response is framed wrongly (${kind})`);
      return data.length;
    }
    const appCloses = headerTokens(head.headers, "connection").includes("close") || kind.kind === "close";
    if (appCloses) this.#upReusable = false;
    // Close-delimited bodies end only with the connection, and a user that asked to close is obliged.
    if (kind.kind === "close") this.#closeAfter = true;
    this.#started = true;
    this.#cap?.responseHead(head);
    this.user.hold(responseHeadBytes(rewriteResponse(head, this.#target!.record, this.#closeAfter)));
    this.#respBody = new BodyReader(kind);
    const cap = this.#cap;
    if (cap) this.#respBody.onData = (payload) => cap.responseBytes(payload);
    this.#resp = "body";
    if (this.#respBody.done) this.#responseDone();
    return used;
  }

  #responseDone(): void {
    this.#capEnd(null);
    this.#resp = "idle";
    this.#respBody = null;
    if (!this.#upReusable) this.#release();
    // The request's own body may still be coming (the app answered early): the connection cannot be reused then.
    if (this.#req === "body") {
      this.#closeAfter = true;
      this.#up?.reset();
      this.#up = null;
    }
    if (this.#closeAfter) return this.#closeUser();
    if (this.#req === "await") {
      this.#req = "head";
      this.#afterResponse();
    }
  }

  /** Ready for the next request: the idle clock runs, and a pipelined request already read is handled. */
  #afterResponse(): void {
    this.#arm(this.#in.length > 0 ? "header" : "idle");
    queueMicrotask(() => this.#pump());
  }

  appEnded(up: Upstream): void {
    if (up !== this.#up) return;
    if (this.#resp === "raw") return this.user.shutdownWhenFlushed();
    if (this.#resp === "body" && this.#respBody!.eof()) return this.#responseDone();
    if (this.#resp === "idle") {
      // The app closed a kept stream between requests (its keep-alive timeout): the next request opens another.
      this.#upReusable = false;
      return this.#release();
    }
    this.#upstreamFailed("the app closed the connection before its response was complete");
  }

  upstreamClosed(up: Upstream, clean: boolean): void {
    if (up !== this.#up) return;
    this.#up = null;
    this.#target = null;
    if (this.#resp === "raw") {
      this.#capEnd(clean ? null : "the stream to the app was reset");
      return clean ? this.user.endWhenFlushed() : this.user.reset();
    }
    if (this.#resp === "idle" && this.#req !== "body") return;
    this.#upstreamFailed(clean ? "the app closed the connection before its response was complete" : "the stream to the app was reset (the app refused or dropped the connection, or the tunnel went down)");
  }

  blocked(up: Upstream, on: boolean): void {
    if (up !== this.#up || this.#blocked === on) return;
    this.#blocked = on;
    this.#reading();
  }

  /** The stream to the app ended before the exchange did. */
  #upstreamFailed(why: string): void {
    const retry = this.#retryHead;
    const target = this.#target;
    if (retry && target && !this.#started && this.#resp === "head" && (this.#up?.answered ?? 0) === 0) {
      // A kept stream the app had just closed: the request never reached it, and a bodiless request can go again.
      this.#retryHead = null;
      this.#open(target);
      this.#up!.requests++;
      this.#up!.send(retry);
      return;
    }
    log.debug("vhost: exchange with the app failed", { ...this.#fields(), reason: why });
    this.#capEnd(why);
    this.#release();
    if (this.#started) {
      this.#req = "closed";
      return this.user.reset();
    }
    this.#refuse(502, "The app did not answer: it refused the connection, closed it, or the tunnel went down.");
  }

  /** The app broke HTTP: its stream is reset, and the user gets a 502 if nothing of the response went out yet, else a reset. */
  #appBroke(why: string): void {
    log.warn("vhost: the app's response is not valid HTTP/1.1", { ...this.#fields(), reason: why });
    this.#capEnd(`the app's response is not valid HTTP/1.1: ${why}`);
    this.#up?.reset();
    this.#up = null;
    if (this.#started) {
      this.#req = "closed";
      return this.user.reset();
    }
    this.#refuse(502, "The app sent a response that is not valid HTTP.");
  }

  /** Ends the inspector's record of the current exchange (null: it completed). */
  #capEnd(error: string | null): void {
    this.#cap?.end(error);
    this.#cap = null;
  }

  #toUser(bytes: Uint8Array): void {
    // The work connection is the source: it is paused while the user lags (endpoint.ts).
    this.user.write(bytes, this.#up?.ep.peer ?? null);
  }

  // ---- timers ----

  #arm(kind: "idle" | "header"): void {
    this.#timerKind = kind;
    const ms = kind === "idle" ? this.settings.idleTimeoutMs : this.settings.headerTimeoutMs;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#expired(), ms);
  }

  #disarm(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#timerKind = null;
  }

  #expired(): void {
    this.#timer = null;
    if (this.#req !== "head") return;
    if (this.#timerKind === "header") {
      log.debug("vhost: request head not complete in time; closing", { ...this.#fields(), timeoutMs: this.settings.headerTimeoutMs });
      return this.#refuse(408, "The request head did not arrive in time.");
    }
    this.#closeUser();
  }

  #fields(): Record<string, unknown> {
    const s = this.user.socket;
    return { from: s ? `${s.remoteAddress}:${s.remotePort}` : "?", ...(this.#target ? { group: this.#target.group, app: this.#target.record.name } : {}) };
  }
}
