/**
 * The request inspector's routes (issue 19), under /api/groups/:name/apps/:app/requests:
 * the list (newest first), one exchange, replay, clear, and a live feed of
 * what changed. Same rules as the rest of the API: the admin, or the group's
 * owner for its own group (another group is a 404).
 */
import { Hono, type Context } from "hono";
import { streamSSE } from "hono/streaming";
import * as v from "valibot";
import type { Hub } from "../server/hub.ts";
import type { Inspector } from "../server/http/inspect.ts";
import { log } from "../log.ts";
import type { ApiEnv, Auth } from "./auth.ts";
import { clientIp } from "./auth.ts";
import { parseBody } from "./body.ts";
import { HttpError } from "./errors.ts";

/** Most inspector live feeds open at once (dashboard tabs); one more gets a 503. */
export const MAX_INSPECT_FEEDS = 32;
/** Rows a list call returns when it does not say (`?limit=`). */
export const DEFAULT_LIST_LIMIT = 50;
/** A live feed with nothing new sends a comment this often, so proxies keep it open and a gone reader is noticed. */
const FEED_KEEPALIVE_MS = 15_000;

/** Body of POST …/requests/:id/replay: what to change; absent fields are as captured. */
export const ReplayBody = v.strictObject({
  method: v.optional(v.pipe(v.string("must be a string"), v.regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/, "must be an HTTP method"))),
  path: v.optional(v.pipe(v.string("must be a string"), v.regex(/^\/[\x21-\x7e]{0,8191}$/, "must start with '/' and hold no spaces or control characters"))),
  headers: v.optional(v.pipe(v.array(v.tuple([v.string("must be a string"), v.string("must be a string")], "must be [name, value]"), "must be a list of [name, value] pairs"), v.maxLength(128, "at most 128 headers"))),
  /** The body in base64 (binary-safe); absent: the captured one. */
  bodyBase64: v.optional(v.pipe(v.string("must be a string"), v.base64("must be base64"))),
});

/** Builds the inspector routes over a hub. */
export function inspectRoutes(hub: Hub, auth: Auth): Hono<ApiEnv> {
  const r = new Hono<ApiEnv>();
  let feeds = 0;

  /** The app's inspector, or why there is none; 404 for a group or app that does not exist. */
  function find(c: Context<ApiEnv>): { ins: Inspector | null; why: string | null } {
    const name = c.req.param("name")!;
    const appName = c.req.param("app")!;
    const g = hub.registry.get(name);
    if (!g) throw new HttpError(404, { error: `group "${name}" does not exist` });
    const app = g.apps.find((a) => a.name === appName);
    if (!app) throw new HttpError(404, { error: `group "${g.name}" has no app "${appName.slice(0, 64)}"` });
    if (app.type !== "http") throw new HttpError(409, { error: `app "${app.name}" is a ${app.type} app: only http apps are inspected (https passes through unread)` });
    const inspections = hub.vhosts?.settings.inspections;
    if (!inspections) return { ins: null, why: "the server has no vhost ports" };
    if (!inspections.limits.allow) return { ins: null, why: "the server forbids the inspector (allowInspect = false)" };
    if (!app.inspect) return { ins: null, why: `the app does not set inspect = true` };
    return { ins: inspections.get(g.name, app.name, true), why: null };
  }

  const captureOf = (c: Context<ApiEnv>, ins: Inspector | null) => {
    const id = Number(c.req.param("id"));
    const cap = Number.isSafeInteger(id) ? ins?.get(id) : undefined;
    if (!cap) throw new HttpError(404, { error: `no captured request ${String(c.req.param("id")).slice(0, 20)} (the inspector keeps the last ${hub.vhosts?.settings.inspections?.limits.requests ?? 0})` });
    return cap;
  };

  const base = "/:name/apps/:app/requests";

  r.get(base, auth.requireGroup, function list(c) {
    const { ins, why } = find(c);
    const max = ins?.limits.requests ?? 0;
    const limit = c.req.query("limit") === undefined ? DEFAULT_LIST_LIMIT : Number(c.req.query("limit"));
    const before = c.req.query("before") === undefined ? Infinity : Number(c.req.query("before"));
    if (!Number.isInteger(limit) || limit < 1) throw new HttpError(400, { error: "limit must be a whole number of 1 or more", issues: [{ path: "limit", message: "must be a whole number of 1 or more" }] });
    if (before !== Infinity && !Number.isInteger(before)) throw new HttpError(400, { error: "before must be a request id", issues: [{ path: "before", message: "must be a request id" }] });
    return c.json({ inspecting: ins !== null, reason: why, limit: max, requests: ins ? ins.list(Math.min(limit, max), before).map((x) => x.summary()) : [] });
  });

  r.delete(base, auth.requireGroup, function clear(c) {
    const { ins } = find(c);
    ins?.clear();
    return c.body(null, 204);
  });

  r.get(`${base}/live`, auth.requireGroup, function live(c) {
    const { ins, why } = find(c);
    if (!ins) throw new HttpError(409, { error: `nothing is captured: ${why}` });
    if (feeds >= MAX_INSPECT_FEEDS) throw new HttpError(503, { error: `${MAX_INSPECT_FEEDS} inspector feeds are open already (MAX_INSPECT_FEEDS); close a tab` });
    feeds++;
    return streamSSE(c, async (stream) => {
      let aborted = false;
      stream.onAbort(() => void (aborted = true));
      // Each turn sends what changed since the last one, then waits for the next change: a reader
      // that stops reading holds back its own loop, and nothing queues beyond the ring itself.
      let seen = 0;
      try {
        while (!aborted && hub.vhosts?.settings.inspections?.get(ins.group, ins.app) === ins) {
          if (ins.seq > seen) {
            const changed = ins.since(seen);
            seen = ins.seq;
            await stream.writeSSE({ event: "requests", data: JSON.stringify(changed.map((x) => x.summary())) });
          } else await stream.write(": keepalive\n\n");
          if (ins.seq === seen) await ins.next(FEED_KEEPALIVE_MS);
        }
      } finally {
        feeds--;
      }
    });
  });

  r.get(`${base}/:id{[0-9]+}`, auth.requireGroup, function detail(c) {
    const { ins } = find(c);
    return c.json(captureOf(c, ins).detail());
  });

  r.post(`${base}/:id{[0-9]+}/replay`, auth.requireGroup, async function replayRequest(c) {
    const { ins, why } = find(c);
    if (!ins) throw new HttpError(409, { error: `nothing is captured: ${why}` });
    const original = captureOf(c, ins);
    const body = await parseBody(c, ReplayBody, {});
    const target = hub.vhosts?.router.target(ins.group, ins.app);
    if (!target) throw new HttpError(409, { error: `the tunnel of app "${ins.app}" is offline: its client is not connected` });
    const { replay, ReplayError } = await import("../server/http/replay.ts");
    try {
      const cap = await replay(ins, target, original, { method: body.method, path: body.path, headers: body.headers, body: body.bodyBase64 === undefined ? undefined : Buffer.from(body.bodyBase64, "base64") }, clientIp(c) || "127.0.0.1");
      log.info("inspector: request replayed", { group: ins.group, app: ins.app, of: original.id, as: cap.id, status: cap.status ?? "none", by: c.get("role") });
      return c.json(cap.detail(), 201);
    } catch (err) {
      if (err instanceof ReplayError) throw new HttpError(err.status, { error: err.message });
      throw err;
    }
  });

  const notAllowed = (allow: string) =>
    function methodNotAllowed(c: { req: { method: string } }): never {
      throw new HttpError(405, { error: `${c.req.method} is not allowed here; use ${allow}` }, { Allow: allow });
    };
  r.all(base, notAllowed("GET, DELETE"));
  r.all(`${base}/live`, notAllowed("GET"));
  r.all(`${base}/:id{[0-9]+}`, notAllowed("GET"));
  r.all(`${base}/:id{[0-9]+}/replay`, notAllowed("POST"));
  return r;
}
