/**
 * Shared by the dashboard tests (dashboard.test.ts, dashboard-ops.test.ts): a browser-like caller
 * that keeps its cookie and CSRF token, a server-sent-event reader, and a record of every response
 * body, token and session id, scanned at the end for secrets that must never be shown.
 */
import { expect } from "bun:test";

/** What a test file saw: every response body, and the secrets none of them (but the `once` ones) may contain. */
export class Seen {
  /** Every response body, with whether it is one of the two that show a group token once (creation 201, token change 200). */
  readonly bodies: { what: string; text: string; once: boolean }[] = [];
  /** The admin token: in no body at all. */
  adminToken = "";
  /** Every group token of the file: only in the `once` body that hands it out. */
  readonly tokens = new Set<string>();
  /** Every session cookie value handed out: shown in Set-Cookie only, never in a body or a log line. */
  readonly sessions = new Set<string>();
  /** Every CSRF token: in the sign-in answers, never in a log line. */
  readonly csrfs = new Set<string>();

  /** Fails naming each body or log line that shows a secret it may not. */
  expectNoSecrets(logLines: readonly string[]): void {
    const leaks: string[] = [];
    expect(this.adminToken).not.toBe("");
    for (const b of this.bodies) {
      const handedOut = b.once ? (JSON.parse(b.text) as { token: string }).token : null;
      for (const t of [this.adminToken, ...this.tokens]) if (t !== handedOut && b.text.includes(t)) leaks.push(`${b.what} shows token ${t}`);
      for (const s of this.sessions) if (b.text.includes(s)) leaks.push(`${b.what} shows a session id`);
    }
    for (const l of logLines) for (const s of [this.adminToken, ...this.tokens, ...this.sessions, ...this.csrfs]) if (l.includes(s)) leaks.push(`log line shows a secret: ${l}`);
    expect(leaks).toEqual([]);
  }
}

/** A group token of its own for each group, so the scan can tell them apart. */
export function newToken(name: string): string {
  return `${name}-token-${crypto.randomUUID().replaceAll("-", "")}`;
}

/** Rejects when `p` takes longer than `ms`: a deadline, not a wait. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
    }),
  ]);
}

/** An answer of the API. */
export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: any;
}

/** One server-sent event. */
export interface SseEvent {
  event: string;
  data: any;
}

/** An open GET /api/live, or its refusal (`status` other than 200, with `json`). */
export interface Feed {
  status: number;
  headers: Headers;
  json: any;
  /** The next event; null once the server has ended the stream. Fails after `ms`. */
  next(ms?: number): Promise<SseEvent | null>;
  /** Closes the feed from this side (the browser tab goes away). */
  close(): void;
}

/** Opens an event stream at `url` with these headers; every event's data goes into `seen`. */
export async function openFeed(url: string, headers: Record<string, string>, seen: Seen): Promise<Feed> {
  const abort = new AbortController();
  const res = await fetch(url, { headers, signal: abort.signal });
  if (res.status !== 200) {
    const text = await res.text();
    seen.bodies.push({ what: `GET ${url} -> ${res.status}`, text, once: false });
    return { status: res.status, headers: res.headers, json: JSON.parse(text), next: async () => null, close: () => {} };
  }
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let ended = false;
  const next = async (ms = 5000): Promise<SseEvent | null> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const end = buffer.indexOf("\n\n");
      if (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data: string[] = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        const text = data.join("\n");
        seen.bodies.push({ what: `event ${event} of GET ${url}`, text, once: false });
        return { event, data: JSON.parse(text) };
      }
      if (ended) return null;
      const chunk = await within(reader.read(), Math.max(1, deadline - Date.now()), `an event of ${url}`);
      if (chunk.done) ended = true;
      else buffer += decoder.decode(chunk.value, { stream: true });
    }
  };
  return { status: 200, headers: res.headers, json: null, next, close: () => abort.abort() };
}

/** A browser-like caller: keeps its session cookie, sends the CSRF token it was given on every change. */
export class Browser {
  cookie = "";
  csrf = "";
  constructor(
    readonly origin: string,
    readonly seen: Seen,
  ) {}

  /** A request as the dashboard's script makes it; a URLSearchParams body is sent as it is (a form). Never a 500. */
  async call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
    const res = await fetch(this.origin + path, {
      method,
      headers: { ...(this.cookie ? { cookie: this.cookie } : {}), ...(this.csrf && method !== "GET" ? { "x-csrf-token": this.csrf } : {}), "content-type": "application/json", ...headers },
      body: body instanceof URLSearchParams ? body.toString() : body === undefined ? (method === "GET" ? undefined : "{}") : JSON.stringify(body),
    });
    const text = await res.text();
    this.seen.bodies.push({ what: `${method} ${path} -> ${res.status}`, text, once: (method === "POST" && path === "/api/groups" && res.status === 201) || (path.endsWith("/token") && res.status === 200) });
    expect(res.status).not.toBe(500);
    return { status: res.status, headers: res.headers, text, json: text && res.headers.get("content-type")?.includes("json") ? JSON.parse(text) : null };
  }

  /** Signs in with a token (and a group's name, as its owner); keeps the cookie and the CSRF token on success. */
  async signIn(token: string, group?: string): Promise<Reply> {
    const r = await this.call("POST", "/ui/login", group === undefined ? { token } : { token, group });
    if (r.status === 200) {
      this.cookie = r.headers.get("set-cookie")!.split(";")[0]!;
      this.csrf = r.json.csrf;
      this.seen.sessions.add(this.cookie.slice(this.cookie.indexOf("=") + 1));
      this.seen.csrfs.add(this.csrf);
    }
    return r;
  }

  /** The same cookie without the CSRF token: what a page of another site can make this browser send. */
  withoutCsrf(): Browser {
    return Object.assign(new Browser(this.origin, this.seen), { cookie: this.cookie });
  }

  /** GET /api/live (`query`: "?group=x") with this browser's cookie. */
  feed(query = ""): Promise<Feed> {
    return openFeed(`${this.origin}/api/live${query}`, this.cookie ? { cookie: this.cookie } : {}, this.seen);
  }

  /** Creates a group as the admin with a token of its own (recorded); returns the token. */
  async createGroup(name: string, apps: Record<string, unknown>[]): Promise<string> {
    const token = newToken(name);
    this.seen.tokens.add(token);
    const r = await this.call("POST", "/api/groups", { name, token, apps });
    expect(r.status).toBe(201);
    return token;
  }
}
