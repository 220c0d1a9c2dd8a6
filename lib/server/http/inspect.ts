/**
 * The request inspector (issue 19): for an HTTP app with `inspect = true`, the
 * last `inspectRequests` exchanges, each with its heads and up to
 * `inspectBodyBytes` of each body. The proxy (proxy.ts) hands each exchange's
 * bytes to a Capture as they pass: a copy of what fits is kept, nothing is
 * held back or waited for, so capture changes neither what the user and the
 * app see nor their timing and backpressure. Memory only, by design: a
 * restart forgets every capture. Secrets are masked as they are stored.
 */
import type { RequestHead, ResponseHead } from "../../http/head.ts";
import type { AppRecord, GroupRecord } from "../../registry/types.ts";
import { INSPECT_BODY_BYTES, INSPECT_REQUESTS } from "../../config/defaults.ts";
import { WsFrames } from "../../http/websocket.ts";
import { BlockPool, BodyTap } from "./capture-body.ts";
import type { HttpTarget } from "./router.ts";

/** What a masked value reads as. */
export const MASKED = "[masked]";
/** Headers whose values are masked unless the app sets inspectSecrets. */
export const SECRET_HEADERS = new Set(["authorization", "proxy-authorization", "cookie", "set-cookie"]);
const SECRET_LENGTHS = new Set([...SECRET_HEADERS].map((h) => h.length));
/** Lower-cases only a name as long as a secret one: most headers are skipped on their length alone. */
const isSecret = (name: string) => SECRET_LENGTHS.has(name.length) && SECRET_HEADERS.has(name.toLowerCase());

/** Server-wide limits of the inspector (server.toml). */
export interface InspectLimits {
  /** allowInspect: false forbids capture on every app, whatever the app says. */
  readonly allow: boolean;
  /** Exchanges kept per app (inspectRequests). */
  readonly requests: number;
  /** Bytes kept of each body (inspectBodyBytes). */
  readonly bodyBytes: number;
}

export const DEFAULT_INSPECT_LIMITS: InspectLimits = { allow: true, requests: INSPECT_REQUESTS, bodyBytes: INSPECT_BODY_BYTES };

export type CaptureState = "open" | "complete" | "failed" | "upgraded";

/** One exchange: a request, its response, and what happened. */
export class Capture {
  readonly at = new Date();
  readonly #t0 = performance.now();
  readonly request: BodyTap;
  readonly response: BodyTap;
  status: number | null = null;
  reason = "";
  responseHeaders: [string, string][] = [];
  ttfbMs: number | null = null;
  totalMs: number | null = null;
  state: CaptureState = "open";
  error: string | null = null;
  /** After a 101: frames and bytes each way (their content is not kept). */
  ws: { framesIn: number; framesOut: number; bytesIn: number; bytesOut: number } | null = null;
  #wsIn: WsFrames | null = null;
  #wsOut: WsFrames | null = null;
  /** Bumped on every change the live list shows (Inspector.seq at the time). */
  seq = 0;
  /** Left the ring (evicted, cleared) while its exchange may still be passing: what it keeps from now on is not counted. */
  dropped = false;
  /** The request's body arrived whole (a replay of one cut short would send fewer bytes than the user meant). */
  requestEnded = false;
  #lastWsChange = 0;

  constructor(
    readonly owner: Inspector,
    readonly id: number,
    readonly method: string,
    readonly url: string,
    readonly httpVersion: string,
    readonly requestHeaders: [string, string][],
    readonly userAddr: string,
    readonly connection: number,
    readonly replayOf: number | null,
    /** "https" when TLS ended at the server's vhostHTTPSPort; copy-as-curl uses it. */
    readonly scheme: "http" | "https" = "http",
  ) {
    const grow = (n: number) => {
      if (!this.dropped) owner.grew(n);
    };
    this.request = new BodyTap(owner.limits.bodyBytes, owner.pool, grow);
    this.response = new BodyTap(owner.limits.bodyBytes, owner.pool, grow);
  }

  /** Bytes of the request body as they go to the app. */
  requestBytes(chunk: Uint8Array): void {
    if (this.state === "open") this.request.add(chunk);
  }

  /** The final response head (or a 101), as the app sent it. */
  responseHead(head: ResponseHead): void {
    if (this.state !== "open") return;
    this.ttfbMs = performance.now() - this.#t0;
    this.status = head.status;
    this.reason = head.reason;
    this.responseHeaders = this.owner.mask(head.headers);
    if (!this.dropped) this.owner.grew(headBytes(this.responseHeaders));
    if (head.status === 101) {
      this.state = "upgraded";
      this.ws = { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0 };
      this.#wsIn = new WsFrames();
      this.#wsOut = new WsFrames();
    }
    this.owner.changed(this);
  }

  /** Bytes of the response body as they go to the user. */
  responseBytes(chunk: Uint8Array): void {
    if (this.state === "open") this.response.add(chunk);
  }

  /** After an upgrade: bytes from the user (`in`) or the app, counted in frames, not kept. */
  upgraded(fromUser: boolean, chunk: Uint8Array): void {
    const ws = this.ws;
    if (!ws) return;
    if (fromUser) (ws.bytesIn += chunk.length), (ws.framesIn += this.#wsIn!.feed(chunk));
    else (ws.bytesOut += chunk.length), (ws.framesOut += this.#wsOut!.feed(chunk));
    // Live feeds see the counts move, at most once a second (not once per frame).
    const now = performance.now();
    if (now - this.#lastWsChange >= 1000) {
      this.#lastWsChange = now;
      this.owner.changed(this);
    }
  }

  /** The exchange is over: complete, or failed with why (an upgraded one just closes). */
  end(error: string | null = null): void {
    if (this.totalMs !== null) return;
    this.totalMs = performance.now() - this.#t0;
    if (this.state === "open") {
      this.state = error ? "failed" : "complete";
      this.error = error;
    } else if (this.state === "upgraded" && error) this.error = error;
    this.owner.changed(this);
  }

  /** The row of the list. */
  summary() {
    return {
      id: this.id,
      at: this.at.toISOString(),
      method: this.method,
      url: this.url,
      scheme: this.scheme,
      status: this.status,
      state: this.state,
      error: this.error,
      ttfbMs: round(this.ttfbMs),
      totalMs: round(this.totalMs),
      requestBytes: this.request.size,
      responseBytes: this.response.size,
      userAddr: this.userAddr,
      connection: this.connection,
      replayOf: this.replayOf,
      websocket: this.ws ? { ...this.ws } : null,
    };
  }

  /** Everything kept, bodies in base64. */
  detail() {
    // memoryBytes: what the body holds in the ring (whole blocks), counted in warren_inspect_bytes.
    const body = (t: BodyTap) => {
      const base64 = Buffer.from(t.bytes()).toString("base64");
      return { size: t.size, truncated: t.truncated, memoryBytes: t.held, base64 };
    };
    return {
      ...this.summary(),
      httpVersion: this.httpVersion,
      request: { headers: this.requestHeaders, body: body(this.request) },
      response: { reason: this.reason, headers: this.responseHeaders, body: body(this.response) },
    };
  }
}

const hidePassword = (s: string, pw: string) => (s.includes(pw) ? s.split(pw).join(MASKED) : s);
const round = (ms: number | null) => (ms === null ? null : Math.round(ms * 1000) / 1000);
const headBytes = (headers: readonly [string, string][]) => headers.reduce((n, [k, v]) => n + k.length + v.length + 4, 0);

/** The captures of one app: a ring of at most limits.requests, newest last. */
export class Inspector {
  /** The ring: `#count` captures from slot `#start` on, oldest first, ids consecutive (no shifting an array per request). */
  readonly #slots: (Capture | undefined)[];
  #start = 0;
  #count = 0;
  #nextId = 1;
  #bytes = 0;
  /** Bumped on every change: live feeds send what changed since the seq they saw. */
  seq = 0;
  readonly #waiters = new Set<() => void>();

  constructor(
    readonly group: string,
    readonly app: string,
    readonly limits: InspectLimits,
    private readonly total: { bytes: number },
    /** Where bodies are kept (shared by every inspector of the server). */
    readonly pool: BlockPool,
    /** The app's record, kept current by Inspections.prune: its inspectSecrets and httpPassword decide the masking. */
    public record: { readonly inspectSecrets?: boolean; readonly httpPassword?: string } | undefined,
  ) {
    this.#slots = new Array(Math.max(1, limits.requests));
  }

  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#count;
  }

  /** The i-th capture kept, oldest first. */
  #at(i: number): Capture {
    return this.#slots[(this.#start + i) % this.#slots.length]!;
  }

  /** Starts the capture of a request, as the user sent it (masked). */
  begin(head: RequestHead, userAddr: string, connection: number, replayOf: number | null = null, scheme: "http" | "https" = "http"): Capture {
    const headers = this.mask(head.headers);
    const c = new Capture(this, this.#nextId++, head.method, this.maskText(head.target), `HTTP/1.${head.minor}`, headers, userAddr, connection, replayOf, scheme);
    this.grew(headBytes(headers) + c.url.length + c.method.length);
    const cap = this.#slots.length;
    if (this.#count < cap) this.#slots[(this.#start + this.#count++) % cap] = c;
    else {
      const oldest = this.#slots[this.#start]!;
      this.#slots[this.#start] = c;
      this.#start = (this.#start + 1) % cap;
      this.#drop(oldest);
    }
    this.changed(c);
    return c;
  }

  /** Newest first: up to `limit` captures with ids below `before`. */
  list(limit: number, before = Infinity): Capture[] {
    const out: Capture[] = [];
    for (let i = this.#count - 1; i >= 0 && out.length < limit; i--) if (this.#at(i).id < before) out.push(this.#at(i));
    return out;
  }

  get(id: number): Capture | undefined {
    if (this.#count === 0) return undefined;
    const i = id - this.#at(0).id;
    return i >= 0 && i < this.#count ? this.#at(i) : undefined;
  }

  /** Captures changed after `seq`, oldest first. */
  since(seq: number): Capture[] {
    const out: Capture[] = [];
    for (let i = 0; i < this.#count; i++) if (this.#at(i).seq > seq) out.push(this.#at(i));
    return out;
  }

  clear(): void {
    const kept = Array.from({ length: this.#count }, (_, i) => this.#at(i));
    this.#slots.fill(undefined);
    this.#start = this.#count = 0;
    for (const c of kept) this.#drop(c);
    this.changed(null);
  }

  /** Resolves at the next change, or after `ms` (bounded waits for live feeds). */
  next(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#waiters.add(done);
    });
  }

  /** @internal Captures report bytes they keep. */
  grew(n: number): void {
    this.#bytes += n;
    this.total.bytes += n;
  }

  /** @internal A capture changed: it is news for the live feeds. */
  changed(c: Capture | null): void {
    this.seq++;
    if (c) c.seq = this.seq;
    if (this.#waiters.size) for (const w of [...this.#waiters]) w();
  }

  /** Headers with the secret ones masked (and the app's httpPassword wherever it appears), unless the app sets inspectSecrets. */
  mask(headers: readonly [string, string][]): [string, string][] {
    // Copies of the pairs: the relay rewrites its own in place.
    const rec = this.record;
    if (rec?.inspectSecrets) return headers.map(([k, v]) => [k, v]);
    const pw = rec?.httpPassword;
    return headers.map(([k, v]) => [k, isSecret(k) ? MASKED : pw ? hidePassword(v, pw) : v]);
  }

  maskText(s: string): string {
    const rec = this.record;
    return rec?.httpPassword && !rec.inspectSecrets ? hidePassword(s, rec.httpPassword) : s;
  }

  /** Forgets everything (the app stopped being inspected or is gone). */
  dispose(): void {
    this.clear();
  }

  #drop(c: Capture): void {
    c.dropped = true;
    const n = c.request.held + c.response.held + headBytes(c.requestHeaders) + headBytes(c.responseHeaders) + c.url.length + c.method.length;
    // Blocks go back to the pool now, even while the exchange still streams (it counts from now on, keeps nothing).
    c.request.release();
    c.response.release();
    this.#bytes -= n;
    this.total.bytes -= n;
  }
}

/** Every inspected app's captures on one server. */
export class Inspections {
  /** Bytes kept by every inspector (warren_inspect_bytes). */
  readonly total = { bytes: 0 };
  readonly pool = new BlockPool();
  readonly #by = new Map<string, Inspector>();
  /** group -> app -> the app's record, as of the last change (masking reads it). */
  #records = new Map<string, Map<string, AppRecord>>();

  constructor(readonly limits: InspectLimits = DEFAULT_INSPECT_LIMITS) {}

  get bytes(): number {
    return this.total.bytes;
  }

  /** The inspector of a target whose app has inspect on (and the server allows it); null otherwise. */
  of(target: HttpTarget): Inspector | null {
    if (!this.limits.allow || !target.record.inspect) return null;
    return this.get(target.group, target.record.name, true);
  }

  /** The inspector of `group`/`app`, created when asked to and the app has inspect on. */
  get(group: string, app: string, create = false): Inspector | null {
    const key = `${group}/${app}`;
    let ins = this.#by.get(key);
    if (!ins && create) {
      ins = new Inspector(group, app, this.limits, this.total, this.pool, this.#records.get(group)?.get(app));
      this.#by.set(key, ins);
    }
    return ins ?? null;
  }

  /** At start: the records of every group; inspectors of apps that are gone or no longer inspected are dropped. */
  prune(groups: readonly GroupRecord[]): void {
    this.#records = new Map(groups.map((g) => [g.name, new Map(g.apps.map((a) => [a.name, a]))]));
    for (const g of groups) this.#settle(g.name);
  }

  /** After a registry change of group `name` (undefined: deleted): only that group's inspectors are looked at. */
  pruneGroup(name: string, group: GroupRecord | undefined): void {
    if (group) this.#records.set(name, new Map(group.apps.map((a) => [a.name, a])));
    else this.#records.delete(name);
    this.#settle(name);
  }

  /** Gives `name`'s inspectors their app's record, and drops those whose app is gone or no longer inspected, with what they kept. */
  #settle(name: string): void {
    const apps = this.#records.get(name);
    for (const [key, ins] of this.#by) {
      if (ins.group !== name) continue;
      const a = apps?.get(ins.app);
      ins.record = a;
      if (a && a.type === "http" && a.inspect && this.limits.allow) continue;
      ins.dispose();
      this.#by.delete(key);
    }
  }
}
